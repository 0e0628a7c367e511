"""The data pipelines: augmentation statistics, parity between torch and DALI, determinism.

Statistical checks run on synthetic "coded" images whose pixels name their own row, column and
image, so every augmented output can be traced back to its source image, crop offset and flip.
All seeds are fixed: the statistical bounds are wide (about 5 sigma) and cannot flake.
"""

import subprocess
import sys
from collections.abc import Callable
from functools import cache

import numpy as np
import pytest
import torch

from sc_fast import pipeline as pl
from sc_fast.data import MEAN, STD, Cifar10
from sc_fast.pipeline import (
    PAD,
    DaliPipeline,
    PipelineSpec,
    PipelineUnavailable,
    TorchPipeline,
    TorchvisionPipeline,
    dali_builds,
    epoch_draws,
    make_pipeline,
    resolve_pipeline,
)
from sc_fast.train import batch_stream

CPU = torch.device("cpu")
PIPELINES = {"torch": TorchPipeline, "dali": DaliPipeline}
Factory = Callable[[Cifar10, PipelineSpec], pl.Pipeline]


def build(kind: str) -> Factory:
    return lambda data, spec: PIPELINES[kind](data, spec, CPU)


def coded(n: int) -> Cifar10:
    """n <= 255 images whose channels are (row + 1, column + 1, image + 1): zero padding stays
    distinguishable from image pixels. Labels are image % 10; the test set is the first half."""
    assert n <= 255
    x = np.zeros((n, 32, 32, 3), np.uint8)
    x[..., 0] = np.arange(1, 33)[:, None]
    x[..., 1] = np.arange(1, 33)[None, :]
    x[..., 2] = np.arange(1, n + 1)[:, None, None]
    y = np.arange(n, dtype=np.int64) % 10
    return Cifar10(x, y, x[:n // 2].copy(), y[:n // 2].copy())


def to_uint8_hwc(x: torch.Tensor) -> np.ndarray:
    """Undo the normalization of an fp32 NCHW batch."""
    hwc = x.float().permute(0, 2, 3, 1).numpy().astype(np.float64)
    return np.rint(hwc * np.array(STD) + np.array(MEAN)).astype(np.int64)


def expected_crops(images: np.ndarray, src: np.ndarray, dy: np.ndarray, dx: np.ndarray,
                   flip: np.ndarray) -> np.ndarray:
    """Reference augmentation in numpy: crop (dy, dx) of the 4-padded image, then mirror."""
    padded = np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
    a = np.arange(32)
    rows = dy[:, None] + a
    cols = dx[:, None] + np.where(flip[:, None], 31 - a, a)
    return padded[src[:, None, None], rows[:, :, None], cols[:, None, :]]


def decode(x: torch.Tensor, data: Cifar10) -> tuple[np.ndarray, ...]:
    """(source image, dy, dx, flip) of each augmented coded image, in padded coordinates (a
    centred, unaugmented image is dy = dx = 4). Asserts each output *is* that crop."""
    u = to_uint8_hwc(x)
    centre, right = u[:, 16, 16], u[:, 16, 17]  # always inside the image, whatever the crop
    src = centre[:, 2] - 1
    flip = right[:, 1] < centre[:, 1]
    dy = centre[:, 0] - 1 - 12  # output row 16 is padded row dy + 16, image row dy + 12
    dx = centre[:, 1] - 1 - np.where(flip, 11, 12)
    assert (0 <= dy).all() and (dy <= 2 * PAD).all() and (0 <= dx).all() and (dx <= 2 * PAD).all()
    np.testing.assert_array_equal(u, expected_crops(data.train_images, src, dy, dx, flip))
    return src, dy, dx, flip


def train_epochs(factory: Factory, data: Cifar10, spec: PipelineSpec, epochs: range) -> list:
    p = factory(data, spec)
    return [b for e in epochs for b in p.train_batches(e)]


@cache  # the offset and flip tests share the traced samples
def decoded_epochs(kind: str, augment: str, epochs: int = 32) -> tuple[np.ndarray, ...]:
    """250 coded images, batches of 125, ``epochs`` epochs: 8,000 traced samples."""
    data = coded(250)
    spec = PipelineSpec(batch_size=125, augment=augment, seed=7)
    batches = train_epochs(build(kind), data, spec, range(epochs))
    parts = []
    for x, y in batches:
        src, dy, dx, flip = decode(x, data)
        np.testing.assert_array_equal(y.numpy(), data.train_labels[src])  # label follows image
        parts.append((src, dy, dx, flip))
    return tuple(np.concatenate(c) for c in zip(*parts))


@pytest.mark.parametrize("kind", PIPELINES)
def test_crop_offsets_are_uniform_over_81_positions(kind: str) -> None:
    src, dy, dx, _ = decoded_epochs(kind, "crop_flip")
    n = len(src)
    counts = np.bincount(dy * 9 + dx, minlength=81)
    chi2 = ((counts - n / 81) ** 2 / (n / 81)).sum()
    # chi2 with 80 dof: mean 80, sd 12.6. Rounding a continuous crop position would halve the
    # edge offsets' odds and give chi2 ~ 0.11 n = 900 here.
    assert counts.min() > 0 and chi2 < 80 + 6 * 12.6, (chi2, counts.reshape(9, 9))
    # Every image once per epoch: 32 epochs -> 32 times each.
    assert np.bincount(src, minlength=250).tolist() == [32] * 250


@pytest.mark.parametrize("kind", PIPELINES)
def test_flip_rate_is_one_half(kind: str) -> None:
    _, _, _, flip = decoded_epochs(kind, "crop_flip")
    n = len(flip)
    assert abs(flip.sum() - n / 2) < 5 * np.sqrt(n / 4)  # binomial, 5 sigma


@pytest.mark.parametrize("kind", PIPELINES)
def test_flip_only_and_no_augmentation(kind: str) -> None:
    _, dy, dx, flip = decoded_epochs(kind, "flip", epochs=8)
    assert (dy == PAD).all() and (dx == PAD).all()  # never cropped
    assert abs(flip.sum() - len(flip) / 2) < 5 * np.sqrt(len(flip) / 4)
    _, dy, dx, flip = decoded_epochs(kind, "none", epochs=2)
    assert (dy == PAD).all() and (dx == PAD).all() and not flip.any()


def test_dali_equals_torch_on_cpu() -> None:
    """Same draws (``epoch_draws`` on the host) -> the same batches, value for value."""
    data = coded(250)
    for augment in pl.AUGMENTS:
        spec = PipelineSpec(batch_size=100, augment=augment, seed=3)
        for (tx, ty), (dx, dy) in zip(train_epochs(build("torch"), data, spec, range(2)),
                                      train_epochs(build("dali"), data, spec, range(2)), strict=True):
            torch.testing.assert_close(dx, tx, rtol=0, atol=1e-5)
            assert torch.equal(dy, ty)


@pytest.mark.parametrize("kind", PIPELINES)
def test_real_batches_match_numpy_reference(kind: str, cifar: Cifar10) -> None:
    """Images and labels of real data, against crop/flip/normalize written out in numpy."""
    spec = PipelineSpec(batch_size=512, seed=11, train_images=2048)
    p = build(kind)(cifar, spec)
    perm, offsets, flips = (t.numpy() for t in epoch_draws(2048, spec, 4, CPU))
    for i, (x, y) in enumerate(p.train_batches(4)):
        src = perm[i * 512:(i + 1) * 512]
        crops = expected_crops(cifar.train_images, src, offsets[src, 0], offsets[src, 1], flips[src])
        want = (crops - np.array(MEAN)) / np.array(STD)
        np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), want, atol=1e-5)
        np.testing.assert_array_equal(y.numpy(), cifar.train_labels[src])
    assert i == 3


def channel_moments(batches: list) -> np.ndarray:
    """(2, 3): per-channel mean and std over all pixels of the batches."""
    x = torch.cat([b for b, _ in batches]).double()
    return np.stack([x.mean((0, 2, 3)).numpy(), x.std((0, 2, 3)).numpy()])


def expected_crop_moments(images: np.ndarray) -> np.ndarray:
    """Per-channel mean and std of normalized random crops with all 81 offsets equally likely
    (flips do not change them): each padded pixel weighted by how many crops cover it."""
    z = (np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0))) - np.array(MEAN)) / np.array(STD)
    cover = np.array([sum(d <= h < d + 32 for d in range(2 * PAD + 1)) for h in range(32 + 2 * PAD)])
    w = (cover[:, None] * cover[None, :] / 81 / 1024)[None, :, :, None] / len(images)
    mean = (w * z).sum((0, 1, 2))
    return np.stack([mean, np.sqrt((w * z * z).sum((0, 1, 2)) - mean ** 2)])


def test_channel_statistics_match_between_pipelines(cifar: Cifar10) -> None:
    # Different seeds: the pipelines agree in distribution, not by sharing draws.
    n = 4096
    moments = {kind: channel_moments(train_epochs(build(kind), cifar, PipelineSpec(
        batch_size=512, seed=seed, train_images=n), range(1))) for seed, kind in enumerate(PIPELINES)}
    expected = expected_crop_moments(cifar.train_images[:n])
    np.testing.assert_allclose(moments["dali"], moments["torch"], atol=0.01)
    for m in moments.values():
        np.testing.assert_allclose(m, expected, atol=0.01)
    # Without augmentation the training-set statistics normalize to about 0 and 1.
    plain = channel_moments(train_epochs(build("dali"), cifar, PipelineSpec(
        batch_size=512, augment="none", train_images=n), range(1)))
    np.testing.assert_allclose(plain, [[0, 0, 0], [1, 1, 1]], atol=0.1)


def test_eval_batches_identical_in_order_with_partial_last(cifar: Cifar10) -> None:
    spec = PipelineSpec(batch_size=256, eval_batch_size=1000, eval_images=2500, train_images=512)
    torch_b, dali_b = (list(build(kind)(cifar, spec).eval_batches()) for kind in PIPELINES)
    assert [len(y) for _, y in dali_b] == [len(y) for _, y in torch_b] == [1000, 1000, 500]
    for (tx, ty), (dx, dy) in zip(torch_b, dali_b, strict=True):
        torch.testing.assert_close(dx, tx, rtol=0, atol=1e-5)
        assert torch.equal(dy, ty)
    x = torch.cat([b for b, _ in dali_b]).permute(0, 2, 3, 1).numpy()
    want = (cifar.test_images[:2500] - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(x, want, atol=1e-5)
    assert torch.cat([y for _, y in dali_b]).tolist() == cifar.test_labels[:2500].tolist()


@pytest.mark.parametrize("kind", PIPELINES)
def test_epochs_are_functions_of_seed_and_epoch(kind: str) -> None:
    data = coded(250)
    spec = PipelineSpec(batch_size=100, seed=5)
    p = build(kind)(data, spec)
    first = list(p.train_batches(1))
    # An abandoned epoch and an evaluation in between change nothing (warm-up does both).
    next(p.train_batches(0))
    list(p.eval_batches())
    again = list(p.train_batches(1))
    other = build(kind)(data, spec)
    fresh = list(other.train_batches(1))
    for (a, ay), (b, by), (c, cy) in zip(first, again, fresh, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(ay, by) and torch.equal(ay, cy)
    assert not torch.equal(first[0][1], next(p.train_batches(2))[1])  # another epoch differs
    reseeded = build(kind)(data, PipelineSpec(batch_size=100, seed=6))
    assert not torch.equal(first[0][1], next(reseeded.train_batches(1))[1])


@pytest.mark.parametrize("kind", PIPELINES)
def test_batch_stream_from_a_step_is_the_tail_of_the_stream(kind: str) -> None:
    """Resuming at step k (mid-epoch, at an epoch boundary, in a later epoch) yields exactly the
    batches the whole stream has from k on, and no more than max_steps in all."""
    data = coded(250)
    p = build(kind)(data, PipelineSpec(batch_size=60, seed=3))  # 4 steps per epoch
    whole = list(batch_stream(p, 11))
    for start in (0, 1, 4, 6, 11):
        tail = list(batch_stream(p, 11, start_step=start))
        assert len(tail) == 11 - start
        for (x, y), (wx, wy) in zip(tail, whole[start:], strict=True):
            assert torch.equal(x, wx) and torch.equal(y, wy)


def test_torchvision_batches_from_a_start_follow_the_shuffle() -> None:
    # Its augmentation draws happen in worker processes (not reproducible); the order is.
    data = coded(250)
    p = make_pipeline("torchvision", data, PipelineSpec(batch_size=60, seed=3), CPU)
    whole = [y for _, y in batch_stream(p, 7)]
    tail = [y for _, y in batch_stream(p, 7, start_step=2)]
    assert len(tail) == 5 and all(torch.equal(a, b) for a, b in zip(tail, whole[2:], strict=True))


@pytest.mark.parametrize("kind", PIPELINES)
def test_last_partial_batch_dropped(kind: str) -> None:
    data = coded(250)
    p = build(kind)(data, PipelineSpec(batch_size=60))
    batches = list(p.train_batches(0))
    assert p.steps_per_epoch == 4 and [len(y) for _, y in batches] == [60] * 4
    src = np.concatenate([decode(x, data)[0] for x, _ in batches])
    assert len(set(src.tolist())) == 240  # no image twice in an epoch


@pytest.mark.parametrize("kind", PIPELINES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [True, False])
def test_dtype_and_layout(kind: str, dtype: torch.dtype, channels_last: bool) -> None:
    data = coded(250)
    spec = PipelineSpec(batch_size=64, eval_batch_size=100, dtype=dtype, channels_last=channels_last)
    p = build(kind)(data, spec)
    fp32 = build(kind)(data, PipelineSpec(batch_size=64, eval_batch_size=100))
    for (x, y), (ref, _) in ((next(p.train_batches(0)), next(fp32.train_batches(0))),
                             (next(p.eval_batches()), next(fp32.eval_batches()))):
        assert x.shape == (len(y), 3, 32, 32) and x.dtype == dtype and x.device == CPU
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert x.is_contiguous(memory_format=layout)
        assert y.dtype == torch.int64 and y.device == CPU
        torch.testing.assert_close(x.float(), ref, rtol=0, atol=0.02)  # same values, rounded


def test_dali_import_is_lazy() -> None:
    code = ("import sys, sc_fast.pipeline; "
            "assert 'nvidia.dali' not in sys.modules and 'torchvision' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dali_unavailable_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    data = coded(250)
    spec = PipelineSpec(batch_size=100)
    monkeypatch.setattr(pl, "dali_available", lambda: "NVIDIA DALI does not import (test)")
    with pytest.raises(PipelineUnavailable, match="does not import"):
        make_pipeline("dali", data, spec, CPU)
    monkeypatch.undo()

    def broken(*args: object) -> None:
        raise RuntimeError("no such operator")

    monkeypatch.setattr(pl, "_dali_graph", broken)
    with pytest.raises(PipelineUnavailable, match="no such operator"):
        make_pipeline("dali", data, spec, CPU)


def test_torchvision_reference_pipeline(cifar: Cifar10) -> None:
    spec = PipelineSpec(batch_size=128, eval_batch_size=300, train_images=512, eval_images=400)
    p = make_pipeline("torchvision", cifar, spec, CPU)
    assert isinstance(p, TorchvisionPipeline) and p.steps_per_epoch == 4
    batches = list(p.train_batches(0))
    assert len(batches) == 4
    x, y = batches[0]
    assert x.shape == (128, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    assert y.dtype == torch.int64
    # The shuffle follows (seed, epoch); the labels are the subset's, each image once.
    labels = torch.cat([b for _, b in batches]).sort().values
    assert labels.tolist() == sorted(cifar.train_labels[:512].tolist())
    assert torch.equal(torch.cat([b for _, b in p.train_batches(0)]), torch.cat([b for _, b in batches]))
    # Evaluation: the same normalization as the torch pipeline, up to float rounding.
    ref = list(TorchPipeline(cifar, spec, CPU).eval_batches())
    got = list(p.eval_batches())
    assert [len(b) for _, b in got] == [300, 100]
    for (gx, gy), (rx, ry) in zip(got, ref, strict=True):
        torch.testing.assert_close(gx, rx, rtol=0, atol=1e-5)
        assert torch.equal(gy, ry)


def test_auto_builds_dali_before_choosing_it() -> None:
    """--pipeline auto on CUDA takes DALI only when its graph builds there; otherwise torch with a
    one-line notice. Asked for by name, a DALI that does not build is a usage error (exit 2)."""
    cuda = torch.device("cuda", 0)
    broken = lambda d: f"the DALI pipeline does not build on {d} (RuntimeError: no such operator)"  # noqa: E731
    kind, notice = resolve_pipeline("auto", cuda, check=broken)
    assert kind == "torch" and "no such operator" in notice and "\n" not in notice
    with pytest.raises(PipelineUnavailable, match="no such operator"):
        resolve_pipeline("dali", cuda, check=broken)
    assert resolve_pipeline("auto", cuda, check=lambda d: None) == ("dali", None)
    assert resolve_pipeline("auto", CPU, check=broken) == ("torch", None)  # CPU: torch, no DALI tried
    assert resolve_pipeline("torch", cuda, check=broken) == ("torch", None)


def test_dali_builds_here_on_cpu() -> None:
    """The real check on this machine: DALI's CPU operators build (CI has no GPU)."""
    assert dali_builds(CPU) is None
