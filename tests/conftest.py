"""Shared fixtures."""

from collections.abc import Iterator

import pytest
import torch

from sc_fast.data import Cifar10, DataError, load, locate


@pytest.fixture(scope="session")
def cifar() -> Cifar10:
    """The real CIFAR-10, loaded once per session from ``$SC_FAST_DATA`` (or the user cache);
    tests that need it skip only when no copy is there (never downloads)."""
    try:
        root = locate(download=False)
    except DataError as e:
        pytest.skip(str(e))
    return load(root)


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tests' caches (measured ceilings, ...) in a folder of their own, for the commands they run
    in-process and the subprocesses they start alike: never the user's ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture
def restores_fp32_precision() -> Iterator[None]:
    """For tests that set or read torch's float32 math (``fp32_precision``, torch >= 2.9): a
    process-wide setting, put back after the test whatever it did; skipped on older torch."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip("torch < 2.9: no fp32_precision")
    saved = matmul.fp32_precision, conv.fp32_precision
    yield
    matmul.fp32_precision, conv.fp32_precision = saved
