"""Shared fixtures."""

import pytest

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
