"""ResNet-56 as in the paper's prototxt: size, structure, zero-concat shortcut, no device/dtype choices."""

import pytest
import torch
from torch import nn

from sc_fast.model import BasicBlock, ResNetCifar, resnet56


@pytest.fixture(scope="module")
def model() -> ResNetCifar:
    torch.manual_seed(0)
    return resnet56().eval()


def _conv(cin: int, cout: int) -> int:
    return 9 * cin * cout + cout  # 3x3 weights + bias (the prototxt's convs have biases)


def test_parameter_count(model: ResNetCifar) -> None:
    # Zero-concat shortcuts have no parameters, and a downsampling block's convs run at the
    # *previous* width, so this is a bit under the usual 0.85 M of projection-shortcut ResNet-56.
    stem = _conv(3, 16) + 2 * 16                                    # conv + BN:        480
    stage1 = 9 * 2 * (_conv(16, 16) + 2 * 16)                       # 9 blocks:      42,336
    stage2 = 2 * (_conv(16, 16) + 32) + 8 * 2 * (_conv(32, 32) + 64)  # 1 down + 8:   153,696
    stage3 = 2 * (_conv(32, 32) + 64) + 8 * 2 * (_conv(64, 64) + 128)  # 1 down + 8:  611,520
    head = 64 * 10 + 10                                             # fc:               650
    total = sum(p.numel() for p in model.parameters())
    assert total == stem + stage1 + stage2 + stage3 + head == 808_682
    assert sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()) == 3_872


def test_structure(model: ResNetCifar) -> None:
    stem = model.stem[0]
    assert isinstance(stem, nn.Conv2d)
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride) == (3, 16, (3, 3), (1, 1))
    blocks = list(model.blocks)
    assert len(blocks) == 27 and all(isinstance(b, BasicBlock) for b in blocks)  # 3 stages x 9
    assert [i for i, b in enumerate(blocks) if b.downsample] == [9, 18]  # first block of stages 2, 3
    widths = [b.conv1.in_channels for b in blocks]
    assert widths == [16] * 9 + [16] + [32] * 8 + [32] + [64] * 8
    assert blocks[9].conv1.stride == (2, 2) and blocks[9].conv1.out_channels == 16  # keeps its width
    assert all(b.conv1.stride == (1, 1) for i, b in enumerate(blocks) if i not in (9, 18))
    assert (model.fc.in_features, model.fc.out_features) == (64, 10)


def test_init_is_msra_with_zero_biases(model: ResNetCifar) -> None:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 55  # + the fc layer: 56 weighted layers
    assert all(c.bias is not None and not c.bias.any() for c in convs)
    w = model.blocks[20].conv1.weight  # 64x64x3x3: 36,864 samples
    assert w.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)  # He: sqrt(2 / fan_in)


@pytest.mark.parametrize("channels_last", [False, True])
def test_output_shape(model: ResNetCifar, channels_last: bool) -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 3, 32, 32)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        out = model(x)
        ref = model(x.contiguous())
    assert out.shape == (3, 10)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)  # the layout changes nothing


def test_downsampling_blocks_concat_zero_channels(model: ResNetCifar) -> None:
    seen: dict[int, torch.Tensor] = {}
    hooks = [model.blocks[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out))
             for i in (8, 9, 18, 26)]
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert seen[8].shape == (2, 16, 32, 32)
    assert seen[9].shape == (2, 32, 16, 16)
    assert seen[18].shape == (2, 64, 8, 8)
    assert seen[26].shape == (2, 64, 8, 8)
    # The new half is exactly zero as it enters the next block; the kept half carries signal.
    assert torch.equal(seen[9][:, 16:], torch.zeros_like(seen[9][:, 16:]))
    assert torch.equal(seen[18][:, 32:], torch.zeros_like(seen[18][:, 32:]))
    assert seen[9][:, :16].abs().sum() > 0 and seen[18][:, :32].abs().sum() > 0


def test_no_dtype_or_device_choices() -> None:
    torch.manual_seed(0)
    m = resnet56().double().eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (2, 10)
    # The meta device holds no data: a hard-coded device or dtype anywhere in forward would fail.
    meta = resnet56().to("meta")
    out = meta(torch.empty(4, 3, 32, 32, device="meta"))
    assert out.device.type == "meta" and out.shape == (4, 10)


def test_init_is_deterministic_given_the_seed() -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return resnet56().state_dict()
    a, b, c = weights(3), weights(3), weights(4)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.conv1.weight"], c["blocks.0.conv1.weight"])


def test_bn_momentum_is_passed_to_every_bn() -> None:
    m = resnet56(bn_momentum=0.05)  # the paper's Caffe moving_average_fraction 0.95
    assert {b.momentum for b in m.modules() if isinstance(b, nn.BatchNorm2d)} == {0.05}
