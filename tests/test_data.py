"""CIFAR-10 loading: the pickle layout, the lookup order, offline failures, and the real copy."""

import pickle
from pathlib import Path

import numpy as np
import pytest

from sc_fast import data as data_mod
from sc_fast.data import FOLDER, Cifar10, DataError, load, locate

PER_BATCH = 4  # images per tiny batch


def write_archive(parent: Path, seed: int = 0) -> tuple[Path, dict[str, dict]]:
    """``parent/cifar-10-batches-py`` with 5 tiny training batches and a test batch, in the official
    pickle schema (channel-major uint8 rows of 3072, labels as a list). Returns (folder, batches)."""
    rng = np.random.default_rng(seed)
    folder = parent / FOLDER
    folder.mkdir(parents=True)
    batches = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        d = {"batch_label": f"batch {i}", "data": rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8),
             "labels": [int(v) for v in rng.integers(0, 10, PER_BATCH)],
             "filenames": [f"img_{i}_{j}.png" for j in range(PER_BATCH)]}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)  # protocol 2, like the official Python 2 pickles
        batches[name] = d
    return folder, batches


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user cache redirected into tmp_path: the real ~/.cache never takes part."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "sc_fast"


def test_load_tiny_archive(tmp_path: Path) -> None:
    folder, batches = write_archive(tmp_path)
    d = load(folder)
    assert d.train_images.shape == (5 * PER_BATCH, 32, 32, 3) and d.train_images.dtype == np.uint8
    assert d.test_images.shape == (PER_BATCH, 32, 32, 3)
    assert d.train_labels.dtype == np.int64
    # Training batches are concatenated in order 1..5.
    assert d.train_labels.tolist() == [y for k in range(1, 6) for y in batches[f"data_batch_{k}"]["labels"]]
    assert d.test_labels.tolist() == batches["test_batch"]["labels"]


@pytest.mark.parametrize(("c", "h", "w"), [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0), (2, 31, 31), (2, 5, 7)])
def test_nhwc_layout(tmp_path: Path, c: int, h: int, w: int) -> None:
    folder, batches = write_archive(tmp_path)
    d = load(folder)
    # A row is channel-major: 1024 red values (row by row), then green, then blue.
    flat = c * 1024 + h * 32 + w
    for n in range(PER_BATCH):
        assert d.test_images[n, h, w, c] == batches["test_batch"]["data"][n, flat]
        assert d.train_images[PER_BATCH + n, h, w, c] == batches["data_batch_2"]["data"][n, flat]


def test_lookup_order(tmp_path: Path, cache: Path) -> None:
    explicit, _ = write_archive(tmp_path / "explicit")
    env_dir, _ = write_archive(tmp_path / "env")
    cached, _ = write_archive(cache)
    env = {"SC_FAST_DATA": str(tmp_path / "env")}
    assert locate(tmp_path / "explicit", download=False, env=env) == explicit
    assert locate(None, download=False, env=env) == env_dir
    assert locate(None, download=False, env={}) == cached
    # An explicit root without the data falls through to the next place, in order.
    assert locate(tmp_path / "nothing-here", download=False, env=env) == env_dir


def test_root_may_be_the_batches_folder_or_its_parent(tmp_path: Path, cache: Path) -> None:
    folder, _ = write_archive(tmp_path)
    assert locate(tmp_path, download=False, env={}) == folder
    assert locate(folder, download=False, env={}) == folder
    assert locate(None, download=False, env={"SC_FAST_DATA": str(folder)}) == folder


def test_absent_offline_names_where_it_looked(tmp_path: Path, cache: Path) -> None:
    root, env_dir = tmp_path / "root", tmp_path / "env"
    with pytest.raises(DataError) as e:
        locate(root, download=False, env={"SC_FAST_DATA": str(env_dir)})
    msg = str(e.value)
    for path in (root, env_dir, cache):
        assert str(path) in msg
    assert "SC_FAST_DATA" in msg  # and how to point it at a copy


def test_download_without_network_is_a_data_error(tmp_path: Path, cache: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.utils as tv_utils
    calls = []

    def no_network(url: str, download_root: str, md5: str | None = None, **kw: object) -> None:
        calls.append((url, download_root, md5))
        raise OSError("Network is unreachable")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", no_network)
    with pytest.raises(DataError) as e:
        locate(tmp_path / "root", download=True, env={})
    assert "Network is unreachable" in str(e.value) and str(tmp_path / "root") in str(e.value)
    # It tried the official archive, into the first place it looks, with the md5 checked.
    assert calls == [(data_mod.URL, str(tmp_path / "root"), data_mod.ARCHIVE_MD5)]


def test_damaged_batch_names_the_file(tmp_path: Path) -> None:
    folder, _ = write_archive(tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        load(folder)


def test_real_copy(cifar: Cifar10) -> None:
    d = cifar  # conftest: $SC_FAST_DATA (../shared/data in CI), loaded once per session
    assert d.train_images.shape == (50_000, 32, 32, 3) and d.train_images.dtype == np.uint8
    assert d.test_images.shape == (10_000, 32, 32, 3)
    assert d.train_labels.shape == (50_000,) and d.test_labels.shape == (10_000,)
    assert np.bincount(d.train_labels, minlength=10).tolist() == [5_000] * 10
    assert np.bincount(d.test_labels, minlength=10).tolist() == [1_000] * 10
    assert set(np.unique(d.train_labels).tolist()) == set(range(10))
    # Images, not noise or zeros: per-channel means near CIFAR-10's (the copy is JPEG-decoded).
    means = d.train_images[:5000].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(means, data_mod.MEAN, atol=5)
