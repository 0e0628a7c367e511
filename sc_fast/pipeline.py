"""Data pipelines: CIFAR-10 in device memory -> augmented, normalized batches.

Three pipelines with one interface:

- ``TorchPipeline``: batched tensor ops on the training device.
- ``DaliPipeline``: NVIDIA DALI; GPU operators on CUDA, CPU operators without one. This is the
  only module that imports DALI, and only when a DALI pipeline is built.
- ``TorchvisionPipeline``: the textbook torchvision ``DataLoader`` recipe, kept only as the
  reference point of loader-throughput comparisons.

All give ``(images, labels)`` with images normalized, in the requested dtype, NCHW-shaped and
(when asked) channels_last in memory. Training batches are reshuffled every epoch from
``(seed, epoch)`` alone, so an epoch's batches do not depend on what ran before; the last
partial training batch is dropped; evaluation covers every test image, in order.
``train_batches(epoch, start)`` begins at batch ``start`` of the epoch without computing the
batches before it: a trial resumed from a checkpoint continues the stream exactly.
"""

import os
from collections.abc import Callable, Iterator
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
    # Data parallelism: batch_size is the global batch; this rank trains on its equal slice of
    # every global batch and evaluates its share of the test set (sc_fast.distributed).
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {self.augment!r}")
        if self.batch_size <= 0 or self.eval_batch_size <= 0:
            raise ValueError("batch sizes must be positive")
        if self.batch_size % self.world_size or not 0 <= self.rank < self.world_size:
            raise ValueError(f"batch_size {self.batch_size} does not split evenly over {self.world_size} ranks")

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.world_size


def rank_slice(global_batch: torch.Tensor | np.ndarray, spec: PipelineSpec) -> torch.Tensor | np.ndarray:
    """This rank's equal part of a global batch's image indices: the ranks' parts are disjoint and
    together are the single-process batch, so what the job trains on does not depend on the ranks."""
    b = spec.local_batch_size
    return global_batch[spec.rank * b:(spec.rank + 1) * b]


def eval_shard(images: np.ndarray, labels: np.ndarray, spec: PipelineSpec) -> tuple[np.ndarray, np.ndarray]:
    """This rank's contiguous share of the test set; the shares cover it once (counts are summed)."""
    n = len(labels)
    lo, hi = n * spec.rank // spec.world_size, n * (spec.rank + 1) // spec.world_size
    return images[lo:hi], labels[lo:hi]


class Pipeline(Protocol):
    name: str
    spec: PipelineSpec
    batch_size: int
    steps_per_epoch: int

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[Batch]: ...

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


def _crop_pad(augment: str) -> int:
    return PAD if augment == "crop_flip" else 0


def _padded(x: torch.Tensor, pad: int) -> torch.Tensor:
    """uint8 NHWC images with ``pad`` zero pixels on each side (zero before normalization)."""
    return torch.nn.functional.pad(x, (0, 0, pad, pad, pad, pad)) if pad else x


def epoch_draws(n: int, spec: PipelineSpec, epoch: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All randomness of one epoch, from (seed, epoch) alone: (permutation of the n training
    images, per-image crop offsets (n, 2) as (dy, dx) in 0..2*pad, per-image flip flags).

    Drawn up front on ``device`` (no host round trips per step). The torch and DALI pipelines
    share this, in this order, so on the same generator device they agree image for image.
    """
    g = torch.Generator(device=device).manual_seed(epoch_seed(spec.seed, epoch))
    perm = torch.randperm(n, device=device, generator=g)
    offsets = torch.randint(0, 2 * _crop_pad(spec.augment) + 1, (n, 2), device=device, generator=g)
    flips = torch.rand(n, device=device, generator=g) < 0.5
    if spec.augment == "none":
        flips = torch.zeros_like(flips)
    return perm, offsets, flips


class TorchPipeline:
    """Augmentation as one batched gather on the training device.

    The training set lives on the device as uint8 NHWC, pre-padded by 4 pixels and, when flips
    are on, stored a second time mirrored. Every row of a crop is then 32 pixels = 96 contiguous
    bytes of one stored image, flipped or not: the mirror of the crop at column offset dx is the
    plain crop of the mirrored image at offset 2*pad - dx. So a whole batch (crop + flip) is one
    ``index_select`` of 96-byte rows from an overlapping ``unfold`` view of the set. On 2 CPU
    cores that is ~15x faster than indexing every pixel, and it spends memory (a second copy of
    the padded set, 240 MB for CIFAR-10) instead of a flip pass per batch. NHWC memory permuted
    to NCHW shape *is* channels_last, so no layout copy follows.
    """

    name = "torch"

    def __init__(self, data: Cifar10, spec: PipelineSpec, device: torch.device) -> None:
        self.spec, self.device, self.batch_size = spec, device, spec.batch_size
        self.steps_per_epoch = steps_per_epoch(data, spec)
        train_x, train_y = _subset(data.train_images, data.train_labels, spec.train_images)
        test_x, test_y = eval_shard(*_subset(data.test_images, data.test_labels, spec.eval_images), spec)
        self.pad = _crop_pad(spec.augment)
        x = _padded(torch.from_numpy(train_x).to(device), self.pad)
        self.n, self.side = len(x), x.shape[1]
        if spec.augment != "none":
            x = torch.cat([x, x.flip(2)])  # image i mirrored is image n + i
        # rows[p]: the 32 pixels starting at pixel p of the flattened set (a view, no copy).
        self.rows = x.view(-1).unfold(0, 32 * 3, 3)
        self.train_y = torch.from_numpy(train_y).to(device)
        self.test_x, self.test_y = torch.from_numpy(test_x).to(device), torch.from_numpy(test_y).to(device)
        self.mean_image = torch.tensor(MEAN, device=device).repeat(32 * 32)  # HWC order
        self.inv_std_image = (1 / torch.tensor(STD, device=device)).repeat(32 * 32)
        self.arange = torch.arange(32, device=device)

    def _crops(self, idx: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 32, 32, 3): the crops of images ``idx``, mirrored where ``flips`` says."""
        dy, dx, flip = offsets[idx, 0], offsets[idx, 1], flips[idx]
        image = idx + self.n * flip
        dx = torch.where(flip, 2 * self.pad - dx, dx)
        crop_rows = (image * self.side + dy)[:, None] + self.arange  # image row of each crop row
        starts = crop_rows * self.side + dx[:, None]  # first pixel of each crop row
        return self.rows.index_select(0, starts.view(-1)).view(-1, 32, 32, 3)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        # (x - mean) * inv_std in fp32, as one allocation and two in-place passes over whole
        # images against mean/std tiled to image size: a per-channel (size-3) broadcast leaves
        # 3-element inner loops that do not vectorize (~10x slower on CPU), and every further
        # fresh 6 MB output costs page faults. Same values as (x.float() - mean) * inv_std.
        b = len(x)
        x = x.float().view(b, -1).sub_(self.mean_image).mul_(self.inv_std_image)
        x = x.to(self.spec.dtype).view(b, 32, 32, 3)
        x = x.permute(0, 3, 1, 2)  # NHWC memory, NCHW shape: channels_last for free
        return x if self.spec.channels_last else x.contiguous()

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        perm, offsets, flips = epoch_draws(len(self.train_y), self.spec, epoch, self.device)
        b = self.batch_size
        for i in range(start, self.steps_per_epoch):
            idx = rank_slice(perm[i * b:(i + 1) * b], spec=self.spec)
            yield self._normalize(self._crops(idx, offsets, flips)), self.train_y[idx]

    def eval_batches(self) -> Iterator[Batch]:
        b = self.spec.eval_batch_size
        for i in range(0, len(self.test_y), b):
            yield self._normalize(self.test_x[i:i + b]), self.test_y[i:i + b]


class _ImageDataset(torch.utils.data.Dataset):
    """In-memory uint8 HWC images as PIL images through ``transform``, like torchvision's CIFAR10."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: object) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


class _EpochShuffle(torch.utils.data.Sampler[int]):
    """A fresh permutation per epoch from (seed, epoch), drawn in the main process. (A DataLoader
    ``generator`` re-seeded per epoch would not do: with persistent workers, the first epoch
    also draws the workers' base seed from it and later epochs do not.)"""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch, self.skip = n, seed, 0, 0  # skip: leading indices left out

    def __len__(self) -> int:
        return self.n - self.skip

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=g)[self.skip:].tolist())


class TorchvisionPipeline:
    """Reference only: the standard per-image recipe a user would write, for loader comparisons.

    ``DataLoader`` worker processes run RandomCrop(32, padding=4), RandomHorizontalFlip,
    ToTensor and Normalize per PIL image. The shuffle order follows (seed, epoch); the per-image
    augmentation draws happen in the workers and are not reproducible.
    """

    name = "torchvision"

    def __init__(self, data: Cifar10, spec: PipelineSpec, device: torch.device) -> None:
        from torchvision import transforms as T

        if spec.world_size > 1:
            raise ValueError("the torchvision reference pipeline is single-process (loader benchmarks only)")
        self.spec, self.device, self.batch_size = spec, device, spec.batch_size
        self.steps_per_epoch = steps_per_epoch(data, spec)
        normalize = [T.ToTensor(), T.Normalize([m / 255 for m in MEAN], [s / 255 for s in STD])]
        augment = {"crop_flip": [T.RandomCrop(32, padding=PAD), T.RandomHorizontalFlip()],
                   "flip": [T.RandomHorizontalFlip()], "none": []}[spec.augment]
        train = _ImageDataset(*_subset(data.train_images, data.train_labels, spec.train_images),
                              T.Compose(augment + normalize))
        test = _ImageDataset(*_subset(data.test_images, data.test_labels, spec.eval_images),
                             T.Compose(normalize))
        self.shuffle = _EpochShuffle(len(train), spec.seed)
        loader = {"num_workers": os.cpu_count() or 2, "pin_memory": device.type == "cuda"}
        self.train = torch.utils.data.DataLoader(train, spec.batch_size, sampler=self.shuffle, drop_last=True,
                                                 persistent_workers=True, **loader)
        self.test = torch.utils.data.DataLoader(test, spec.eval_batch_size, **loader)

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        layout = torch.channels_last if self.spec.channels_last else torch.contiguous_format
        x = x.to(self.device, non_blocking=True).to(self.spec.dtype, memory_format=layout)
        return x, y.to(self.device, non_blocking=True)

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        self.shuffle.epoch, self.shuffle.skip = epoch, start * self.batch_size
        for x, y in self.train:
            yield self._to_device(x, y)

    def eval_batches(self) -> Iterator[Batch]:
        for x, y in self.test:
            yield self._to_device(x, y)


def make_pipeline(kind: str, data: Cifar10, spec: PipelineSpec, device: torch.device) -> Pipeline:
    """``kind`` is 'torch', 'dali' or 'torchvision'; 'auto' is resolved by ``resolve_pipeline`` first."""
    if kind == "torch":
        return TorchPipeline(data, spec, device)
    if kind == "dali":
        return DaliPipeline(data, spec, device)
    if kind == "torchvision":
        return TorchvisionPipeline(data, spec, device)
    raise ValueError(f"unknown pipeline {kind!r}")


def dali_available() -> str | None:
    """None if DALI imports here, else the reason it does not."""
    try:
        import nvidia.dali  # noqa: F401
    except Exception as e:  # noqa: BLE001  ImportError, or a broken install raising anything
        return f"NVIDIA DALI does not import ({type(e).__name__}: {e})"
    return None


def dali_build() -> dict[str, object] | None:
    """DALI's version and the CUDA it was built for (beside torch's CUDA in env.json: a wheel for
    another CUDA major than the driver's is a classic cause of a GPU pipeline that will not build);
    None when DALI does not import."""
    if dali_available():
        return None
    import nvidia.dali as dali

    return {"version": dali.__version__, "cuda_build": getattr(dali, "__cuda_version__", None)}


def dali_builds(device: torch.device) -> str | None:
    """None if DALI imports here and its graph builds on ``device``, else the reason it does not
    (a CPU-only DALI wheel, a driver mismatch, an operator this version lacks, ...)."""
    reason = dali_available()
    if reason:
        return reason
    try:
        _dali_graph(8, "crop_flip", PipelineSpec(batch_size=8), device)
    except Exception as e:  # noqa: BLE001  whatever DALI raises, the answer is "not here"
        return f"the DALI pipeline does not build on {device} ({type(e).__name__}: {str(e).splitlines()[0]})"
    return None


def resolve_pipeline(requested: str, device: torch.device,
                     check: Callable[[torch.device], str | None] = dali_builds) -> tuple[str, str | None]:
    """(pipeline to use, notice for the user or None). 'auto' takes DALI on CUDA when ``check``
    finds it imports and builds there, else torch with a notice; 'dali' asked for by name and
    unavailable raises PipelineUnavailable with the reason."""
    if requested == "torch" or (requested == "auto" and device.type != "cuda"):
        return "torch", None
    reason = check(device)
    if requested == "dali":
        if reason:
            raise PipelineUnavailable(reason)
        return "dali", None
    if reason:
        return "torch", f"pipeline auto: using torch ({reason})"
    return "dali", None


def _dali_graph(max_batch: int, augment: str, spec: PipelineSpec, device: torch.device) -> object:
    """A built DALI pipeline: fed uint8 HWC images (plus per-image crop positions and flips when
    ``augment`` asks), returning them cropped, mirrored and normalized by one fused operator."""
    from nvidia.dali import fn, types
    from nvidia.dali.pipeline import Pipeline as DaliGraph

    gpu = device.type == "cuda"
    device_id = (device.index if device.index is not None else torch.cuda.current_device()) if gpu else None
    # prefetch_queue_depth=1: each batch is fed and run in one call (Pipeline.run), so nothing is
    # left in flight when an epoch is abandoned (warm-up) or interleaved with evaluation.
    # exec_dynamic (the 2.x default, pinned here): outputs are reference-counted, never recycled
    # under a live DLPack view, so handing them to torch without a copy is safe.
    graph = DaliGraph(batch_size=max_batch, num_threads=os.cpu_count() or 2, device_id=device_id,
                      prefetch_queue_depth=1, exec_dynamic=True)
    with graph:
        # On CPU the run is synchronous, so DALI may read the fed array in place (no_copy); on GPU
        # it copies on torch's stream, so the caching allocator can safely reuse the source.
        images = fn.external_source(name="images", device="gpu" if gpu else "cpu", batch=True,
                                    layout="HWC", dtype=types.UINT8, no_copy=not gpu)
        # Per-image arguments are host inputs in DALI, on either device.
        args: dict[str, object] = {}
        if augment == "crop_flip":
            args["crop"] = (32, 32)
            args["crop_pos_x"] = fn.external_source(name="crop_x", batch=True, dtype=types.FLOAT)
            args["crop_pos_y"] = fn.external_source(name="crop_y", batch=True, dtype=types.FLOAT)
        if augment != "none":
            args["mirror"] = fn.external_source(name="mirror", batch=True, dtype=types.INT32)
        out = fn.crop_mirror_normalize(
            images, mean=list(MEAN), std=list(STD),
            dtype=types.FLOAT16 if spec.dtype == torch.float16 else types.FLOAT,
            output_layout="HWC" if spec.channels_last else "CHW", **args)
        graph.set_outputs(out)
    graph.build()
    return graph


class DaliPipeline:
    """Augmentation by NVIDIA DALI: one fused crop_mirror_normalize per batch.

    The images sit on the training device as uint8 NHWC (pre-padded by 4 for crop_flip); each
    step gathers the batch with torch and feeds it to DALI through ``external_source`` together
    with per-image crop positions and flip flags. Those come from ``epoch_draws`` (torch, host),
    not from DALI's random operators: DALI seeds its generators once when the graph is built and
    advances them with every batch, so an epoch would depend on everything that ran before it
    (warm-up, abandoned epochs). Fed draws keep each epoch a function of (seed, epoch) alone,
    and on CPU make the batches equal to TorchPipeline's.

    API choice: the graph is run directly (``Pipeline.run`` with the inputs, outputs taken
    zero-copy via DLPack), not through ``DALIGenericIterator``. The iterator wants a source
    callback that ends each epoch with StopIteration, and it prefetches across epoch boundaries:
    that fits neither epochs addressed by number nor evaluation in the middle of an epoch. It was
    also slower on this project's 2-core CPU machine (batch 512, fp32, crop_flip, same load):
    direct run ~90k img/s, DALIGenericIterator ~75k, DALI 2.x dynamic mode (``ndd``) ~83k.
    On CUDA, ``run`` gets torch's current stream: outputs are ordered on it, no host sync.
    On CPU, DALI's cost per image grows with the batch (one core: ~11 us at 128, ~14 us at 512,
    ~31 us at 2048), so the torch pipeline is the one to use there.
    """

    name = "dali"

    def __init__(self, data: Cifar10, spec: PipelineSpec, device: torch.device) -> None:
        reason = dali_available()
        if reason:
            raise PipelineUnavailable(reason)
        self.spec, self.device, self.batch_size = spec, device, spec.batch_size
        self.steps_per_epoch = steps_per_epoch(data, spec)
        train_x, train_y = _subset(data.train_images, data.train_labels, spec.train_images)
        test_x, test_y = eval_shard(*_subset(data.test_images, data.test_labels, spec.eval_images), spec)
        self.pad = _crop_pad(spec.augment)
        self.train_x = _padded(torch.from_numpy(train_x).to(device), self.pad)
        self.train_y = torch.from_numpy(train_y).to(device)
        self.test_x, self.test_y = torch.from_numpy(test_x).to(device), torch.from_numpy(test_y).to(device)
        try:
            self.train_graph = _dali_graph(spec.local_batch_size, spec.augment, spec, device)
            self.eval_graph = _dali_graph(spec.eval_batch_size, "none", spec, device)
        except Exception as e:  # no GPU build, driver mismatch, unsupported argument, ...
            raise PipelineUnavailable(f"the DALI pipeline does not build on {device} "
                                      f"({type(e).__name__}: {e})") from e

    def _feedable(self, x: torch.Tensor) -> object:
        # DALI 2.4 asks torch for the current CUDA stream whenever it is fed a torch tensor, which
        # fails on a machine without CUDA: host tensors go in as (zero-copy) numpy arrays.
        return x if x.is_cuda else x.numpy()

    def _run(self, graph: object, inputs: dict[str, object]) -> torch.Tensor:
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        (out,) = graph.run(stream, **inputs)
        x = torch.from_dlpack(out.as_tensor())  # zero-copy: the view keeps DALI's buffer alive
        if self.spec.dtype == torch.bfloat16:
            x = x.to(torch.bfloat16)  # DALI has no bf16 output: one cast on the torch side
        # HWC memory viewed as NCHW is channels_last; without it DALI already wrote CHW.
        return x.permute(0, 3, 1, 2) if self.spec.channels_last else x

    def _augment_inputs(self, host_idx: np.ndarray, crop_pos: np.ndarray,
                        mirror: np.ndarray) -> dict[str, np.ndarray]:
        inputs = {}
        if self.spec.augment == "crop_flip":
            inputs["crop_x"], inputs["crop_y"] = crop_pos[host_idx, 1], crop_pos[host_idx, 0]
        if self.spec.augment != "none":
            inputs["mirror"] = mirror[host_idx]
        return inputs

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        host = torch.device("cpu")  # the per-image arguments are host inputs in DALI anyway
        perm, offsets, flips = epoch_draws(len(self.train_y), self.spec, epoch, host)
        # DALI puts a 32-wide window into the 40-wide image at round(pos * 8): pos = offset / 8
        # lands on every integer offset exactly, so the 81 offsets stay equally likely.
        crop_pos = (offsets.float() / max(2 * self.pad, 1)).numpy()
        mirror = flips.int().numpy()
        host_perm = perm.numpy()
        if self.device.type == "cuda":
            # Pinned memory makes the copy asynchronous on torch's stream: a pageable copy would
            # block the host inside the training clock once per epoch.
            perm = perm.pin_memory().to(self.device, non_blocking=True)
        b = self.batch_size
        for i in range(start, self.steps_per_epoch):
            idx = rank_slice(perm[i * b:(i + 1) * b], self.spec)
            host_idx = rank_slice(host_perm[i * b:(i + 1) * b], self.spec)
            inputs = {"images": self._feedable(self.train_x.index_select(0, idx)),
                      **self._augment_inputs(host_idx, crop_pos, mirror)}
            yield self._run(self.train_graph, inputs), self.train_y[idx]

    def eval_batches(self) -> Iterator[Batch]:
        # The graph's batch size is a maximum: the last, smaller batch goes through as it is.
        b = self.spec.eval_batch_size
        for i in range(0, len(self.test_y), b):
            x = self._feedable(self.test_x[i:i + b])
            yield self._run(self.eval_graph, {"images": x}), self.test_y[i:i + b]
