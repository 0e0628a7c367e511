"""Benchmarks: one training step, and one batch of each input pipeline.

Timed, saved and compared with pytest-benchmark:

    pytest tests/benchmarks --benchmark-enable --benchmark-autosave
    pytest tests/benchmarks --benchmark-enable --benchmark-compare --benchmark-compare-fail=median:5%

Each call ends with a device sync (``.item()`` or ``synchronize``): on a GPU, a call that only
queued work would time the launch, not the work.
"""

import math
from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from bench import build
from bench.config import DeviceSettings
from sc_fast.data import Cifar10
from sc_fast.pipeline import Batch, PipelineSpec, PipelineUnavailable, make_pipeline
from sc_fast.throughput import synthetic_batch, training_step
from sc_fast.timing import synchronize
from sc_fast.train import batch_stream, input_dtype


def train_batch(device: torch.device) -> int:
    return 512 if device.type == "cuda" else 32  # small on the CPU: ~1 s a step at 32 on 2 cores


def test_train_step(benchmark: BenchmarkFixture, device: torch.device, defaults: DeviceSettings) -> None:
    """The project's training step (sc_fast.train.make_step), eager, in the device's precision and
    layout, on one fixed batch already on the device."""
    batch = train_batch(device)
    eager = replace(defaults, compile="off")
    step = training_step(build.model(None, eager, device), build.train_config(None, eager), device)
    x, y = synthetic_batch(batch, defaults.precision, defaults.channels_last, device)
    step(x, y)  # first call: allocations, cuDNN algorithm search
    benchmark.extra_info.update(images_per_call=batch, precision=defaults.precision,
                                channels_last=defaults.channels_last)
    loss = benchmark(lambda: step(x, y).item())
    assert math.isfinite(loss)


@pytest.fixture(params=["torch", "dali", "torchvision"])
def batches(request: pytest.FixtureRequest, images: Cifar10, device: torch.device) -> Iterator[Iterator[Batch]]:
    spec = PipelineSpec(batch_size=512, dtype=input_dtype("fp32"), channels_last=True)
    try:
        pipeline = make_pipeline(request.param, images, spec, device)
    except PipelineUnavailable as e:  # DALI not importable on this machine
        pytest.skip(str(e))
    stream = batch_stream(pipeline)
    next(stream)  # first batch: worker start-up, graph build
    yield stream


def test_pipeline_batch(benchmark: BenchmarkFixture, batches: Iterator[Batch], device: torch.device) -> None:
    """One augmented, normalized training batch of 512 from the pipeline, on the device."""
    def one() -> Batch:
        x, y = next(batches)
        synchronize(device)
        return x, y

    benchmark.extra_info["images_per_call"] = 512
    x, y = benchmark(one)
    assert x.shape == (512, 3, 32, 32) and x.dtype == torch.float32 and x.device.type == device.type
    assert x.is_contiguous(memory_format=torch.channels_last) and y.shape == (512,)
    assert abs(x.float().mean().item()) < 1.0  # normalized, not raw 0..255 pixels
