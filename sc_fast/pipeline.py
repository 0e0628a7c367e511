"""Data pipelines: CIFAR-10 in device memory -> augmented, normalized batches.

Two pipelines with one interface: ``TorchPipeline`` (batched tensor ops on the training
device) and ``DaliPipeline`` (NVIDIA DALI; GPU operators on CUDA, CPU operators without one).
This is the only module that imports DALI, and only when a DALI pipeline is built.

Both give ``(images, labels)`` with images normalized, in the requested dtype, NCHW-shaped and
(when asked) channels_last in memory. Training batches are reshuffled every epoch from
``(seed, epoch)`` alone, so an epoch's batches do not depend on what ran before; the last
partial training batch is dropped; evaluation covers every test image, in order.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from sc_fast.data import MEAN, STD, Cifar10

AUGMENTS = ("crop_flip", "flip", "none")
PAD = 4  # the He et al. recipe: pad 4, random 32x32 crop -> 9 x 9 equally likely offsets
Batch = tuple[torch.Tensor, torch.Tensor]


class PipelineUnavailable(RuntimeError):
    """The requested pipeline cannot run here (DALI missing, no GPU for it, ...)."""


@dataclass(frozen=True)
class PipelineSpec:
    batch_size: int
    eval_batch_size: int = 1000
    augment: str = "crop_flip"
    dtype: torch.dtype = torch.float32
    channels_last: bool = True
    seed: int = 0
    train_images: int = 0  # 0 = the whole training set; fewer for quick runs
    eval_images: int = 0  # 0 = all 10,000 test images

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {self.augment!r}")
        if self.batch_size <= 0 or self.eval_batch_size <= 0:
            raise ValueError("batch sizes must be positive")


class Pipeline(Protocol):
    name: str
    batch_size: int
    steps_per_epoch: int

    def train_batches(self, epoch: int) -> Iterator[Batch]: ...

    def eval_batches(self) -> Iterator[Batch]: ...


def epoch_seed(seed: int, epoch: int) -> int:
    """One RNG seed per (seed, epoch): resuming or skipping epochs never shifts the stream."""
    return (seed * 1_000_003 + epoch) % (2**63)


def _subset(images: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    return (images[:n], labels[:n]) if n else (images, labels)


def steps_per_epoch(data: Cifar10, spec: PipelineSpec) -> int:
    n = spec.train_images or len(data.train_labels)
    if n < spec.batch_size:
        raise ValueError(f"batch_size {spec.batch_size} exceeds the {n} training images")
    return n // spec.batch_size


class TorchPipeline:
    """Augmentation as batched tensor indexing on the training device.

    The training set lives on the device once, uint8 NHWC, pre-padded by 4 pixels. A batch is
    one gather: each image's crop rows and (possibly mirrored) crop columns index straight into
    the padded set, so crop + flip cost one read of the output. NHWC memory permuted to NCHW
    shape *is* channels_last, so no layout copy follows.
    """

    name = "torch"

    def __init__(self, data: Cifar10, spec: PipelineSpec, device: torch.device) -> None:
        self.spec, self.device, self.batch_size = spec, device, spec.batch_size
        self.steps_per_epoch = steps_per_epoch(data, spec)
        train_x, train_y = _subset(data.train_images, data.train_labels, spec.train_images)
        test_x, test_y = _subset(data.test_images, data.test_labels, spec.eval_images)
        self.pad = PAD if spec.augment == "crop_flip" else 0
        x = torch.from_numpy(train_x).to(device)
        if self.pad:
            x = torch.nn.functional.pad(x, (0, 0, self.pad, self.pad, self.pad, self.pad))
        self.train_x, self.train_y = x, torch.from_numpy(train_y).to(device)
        self.test_x, self.test_y = torch.from_numpy(test_x).to(device), torch.from_numpy(test_y).to(device)
        self.mean = torch.tensor(MEAN, device=device)
        self.inv_std = 1 / torch.tensor(STD, device=device)
        self.arange = torch.arange(32, device=device)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x.float() - self.mean) * self.inv_std).to(self.spec.dtype)
        x = x.permute(0, 3, 1, 2)  # NHWC memory, NCHW shape: channels_last for free
        return x if self.spec.channels_last else x.contiguous()

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        g = torch.Generator(device=self.device).manual_seed(epoch_seed(self.spec.seed, epoch))
        n, b = len(self.train_y), self.spec.batch_size
        # All randomness of the epoch drawn up front, on the device: no host round trips.
        perm = torch.randperm(n, device=self.device, generator=g)
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), device=self.device, generator=g)
        flips = torch.rand(n, device=self.device, generator=g) < 0.5
        if self.spec.augment == "none":
            flips = torch.zeros_like(flips)
        for i in range(self.steps_per_epoch):
            idx = perm[i * b:(i + 1) * b]
            dy, dx, flip = offsets[idx, 0, None], offsets[idx, 1, None], flips[idx, None]
            rows = dy + self.arange
            cols = dx + torch.where(flip, 31 - self.arange, self.arange)
            x = self.train_x[idx[:, None, None], rows[:, :, None], cols[:, None, :]]
            yield self._normalize(x), self.train_y[idx]

    def eval_batches(self) -> Iterator[Batch]:
        b = self.spec.eval_batch_size
        for i in range(0, len(self.test_y), b):
            yield self._normalize(self.test_x[i:i + b]), self.test_y[i:i + b]


def make_pipeline(kind: str, data: Cifar10, spec: PipelineSpec, device: torch.device) -> Pipeline:
    """``kind`` is 'torch' or 'dali'; 'auto' is resolved by ``resolve_pipeline`` first."""
    if kind == "torch":
        return TorchPipeline(data, spec, device)
    if kind == "dali":
        return DaliPipeline(data, spec, device)
    raise ValueError(f"unknown pipeline {kind!r}")


def dali_available() -> str | None:
    """None if DALI imports here, else the reason it does not."""
    try:
        import nvidia.dali  # noqa: F401
    except Exception as e:  # ImportError, or a broken install raising anything
        return f"NVIDIA DALI does not import ({type(e).__name__}: {e})"
    return None


def resolve_pipeline(requested: str, device: torch.device) -> tuple[str, str | None]:
    """(pipeline to use, notice for the user or None). Raises PipelineUnavailable for 'dali'."""
    reason = dali_available()
    if requested == "dali":
        if reason:
            raise PipelineUnavailable(reason)
        return "dali", None
    if requested == "torch":
        return "torch", None
    if device.type != "cuda":
        return "torch", None
    if reason:
        return "torch", f"pipeline auto: using torch ({reason})"
    return "dali", None


class DaliPipeline:
    """Placeholder replaced by the DALI implementation (issue 7)."""

    name = "dali"

    def __init__(self, data: Cifar10, spec: PipelineSpec, device: torch.device) -> None:
        raise PipelineUnavailable("the DALI pipeline is not built yet")
