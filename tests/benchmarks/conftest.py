"""pytest-benchmark set-up: the machine description saved with every benchmark run, and the
fixtures the benchmarks share.

The default suite runs with --benchmark-disable (pyproject addopts): each benchmark body runs once
as a plain test. Timed runs: see tests/benchmarks/test_bench_step.py's docstring.
"""

from typing import Any

import numpy as np
import pytest
import torch

from bench import build
from bench import config as config_mod
from bench.config import DeviceSettings
from sc_fast.data import Cifar10
from sc_fast.env import fingerprint

# what a saved benchmark needs beside it to be compared across machines (commit_info has git)
MACHINE_KEYS = ("gpu", "gpu_count", "gpus", "driver", "cuda", "cudnn", "torch", "torchvision", "dali",
                "cpu", "cpu_count", "torch_threads", "load_avg_1m")


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    fp = fingerprint()
    machine_info.update({k: fp[k] for k in MACHINE_KEYS})


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


@pytest.fixture(scope="session")
def defaults(device: torch.device) -> DeviceSettings:
    """bench.toml's [devices.<type>], "auto" resolved: what training on this device uses."""
    return build.device_settings(config_mod.load(), device)[0]


@pytest.fixture(scope="session")
def images() -> Cifar10:
    """CIFAR-10-shaped random uint8 images: a pipeline's cost per batch does not depend on the
    pixel values, and the benchmarks then need no data set."""
    rng = np.random.default_rng(0)
    return Cifar10(rng.integers(0, 256, (2048, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 2048),
                   rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 256))
