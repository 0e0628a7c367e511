"""ResNet-56 for CIFAR-10, as in Smith & Topin's Appendix A (architectures/Resnet56Cifar.prototxt).

Only the network: no device, dtype or memory-format choices are made here.

- stem: 3x3 conv (stride 1) to 16 channels, BN, ReLU
- three stages of 9 basic blocks (conv-BN-ReLU-conv-BN, add, ReLU) at 16, 32 and 64 channels
- a downsampling block keeps its input width with a stride-2 first conv; its shortcut is a
  3x3/2 average pool, and zero channels are concatenated after the add+ReLU to double the width
  (parameter-free, like He et al.'s option A)
- head: global average pool, fully connected to 10 classes; convs have biases, MSRA init
"""

import torch
import torch.nn.functional as F
from torch import nn


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=True)


class BasicBlock(nn.Module):
    def __init__(self, channels: int, downsample: bool, bn_momentum: float) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.downsample = downsample
        self.conv1 = _conv3x3(channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels, momentum=bn_momentum)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels, momentum=bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = F.avg_pool2d(x, 3, stride=2, padding=1) if self.downsample else x
        out = F.relu(out + shortcut)
        if self.downsample:
            # Double the width with zero channels: the prototxt's Concat with a zero blob.
            out = torch.cat([out, torch.zeros_like(out)], dim=1)
        return out


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs; n=9 gives ResNet-56."""

    def __init__(self, blocks_per_stage: int = 9, widths: tuple[int, ...] = (16, 32, 64),
                 num_classes: int = 10, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv3x3(3, widths[0]), nn.BatchNorm2d(widths[0], momentum=bn_momentum),
                                  nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            for j in range(blocks_per_stage):
                if i > 0 and j == 0:
                    # The downsampling block runs at the previous stage's width, then doubles it.
                    assert width == 2 * widths[i - 1], "zero-concat shortcut doubles the width"
                    layers.append(BasicBlock(widths[i - 1], True, bn_momentum))
                else:
                    layers.append(BasicBlock(width, False, bn_momentum))
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(widths[-1], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")  # Caffe "msra"
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def resnet56(num_classes: int = 10, bn_momentum: float = 0.1) -> ResNetCifar:
    return ResNetCifar(9, (16, 32, 64), num_classes, bn_momentum)
