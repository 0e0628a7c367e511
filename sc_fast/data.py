"""CIFAR-10: find it, download it if allowed, load and check it.

Lookup order (docs/reference.md, "Data"): an explicit root, then ``$SC_FAST_DATA``, then the user
cache folder. A root may be the ``cifar-10-batches-py`` folder itself or a folder that holds it.
Arrays come back as uint8 NHWC on the host; pipelines move them to the training device.
"""

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
NUM_CLASSES = 10
# Per-channel statistics of the CIFAR-10 training set, on the 0..255 scale.
MEAN = (125.31, 122.95, 113.87)
STD = (62.99, 62.09, 66.70)


class DataError(Exception):
    """The data set is missing or damaged; the message names the path."""


@dataclass(frozen=True)
class Cifar10:
    train_images: np.ndarray  # (50000, 32, 32, 3) uint8, NHWC
    train_labels: np.ndarray  # (50000,) int64
    test_images: np.ndarray
    test_labels: np.ndarray


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sc_fast"


def candidate_roots(root: str | Path | None, env: dict[str, str]) -> list[Path]:
    roots = [Path(root)] if root else []
    if env.get("SC_FAST_DATA"):
        roots.append(Path(env["SC_FAST_DATA"]))
    roots.append(default_cache())
    return roots


def _as_batches_dir(root: Path) -> Path | None:
    for d in (root, root / FOLDER):
        if (d / TEST_FILE).is_file() and (d / TRAIN_FILES[0]).is_file():
            return d
    return None


def locate(root: str | Path | None = None, download: bool = True,
           env: dict[str, str] | None = None) -> Path:
    """The ``cifar-10-batches-py`` folder, downloading into the first candidate if allowed."""
    roots = candidate_roots(root, dict(os.environ) if env is None else env)
    for r in roots:
        found = _as_batches_dir(r)
        if found:
            return found
    target = roots[0]
    looked = ", ".join(str(r) for r in roots)
    if not download:
        raise DataError(f"CIFAR-10 not found (looked in {looked}); set SC_FAST_DATA or [data].root "
                        f"to a folder holding {FOLDER}/, or allow downloads")
    try:
        from torchvision.datasets.utils import download_and_extract_archive
        download_and_extract_archive(URL, download_root=str(target), md5=ARCHIVE_MD5)
    except Exception as e:  # network down, disk full, bad md5: all mean "no data here"
        raise DataError(f"CIFAR-10 not found (looked in {looked}) and the download to {target} "
                        f"failed ({type(e).__name__}: {e}); set SC_FAST_DATA to a folder holding "
                        f"{FOLDER}/") from None
    found = _as_batches_dir(target)
    if not found:
        raise DataError(f"downloaded archive did not contain {FOLDER}/ under {target}")
    return found


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d["labels"], dtype=np.int64)
    except Exception as e:
        raise DataError(f"{path}: cannot read CIFAR-10 batch ({type(e).__name__}: {e})") from None
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' has shape {data.shape}, expected (N, 3072)")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels outside 0..{NUM_CLASSES - 1}")
    # Rows are channel-major (3x32x32); NHWC keeps a batch channels_last after a permute.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def load(batches_dir: str | Path) -> Cifar10:
    d = Path(batches_dir)
    train = [_read_batch(d / name) for name in TRAIN_FILES]
    test_x, test_y = _read_batch(d / TEST_FILE)
    return Cifar10(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                   test_x, test_y)
