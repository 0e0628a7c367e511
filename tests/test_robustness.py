"""Robustness (issue 5): interrupted runs resume, faults inside a trial are recorded, damaged data
and run folders get one clear line.

Real runs use tiny CPU trials (4-12 steps of batch 8 on a fake 80-image CIFAR-10) so each takes
seconds; signals go to real ``python -m bench`` subprocesses, and the follow-up ``run --resume``
calls ``bench.cli.main`` in-process (same code, no second start-up of torch). Waits poll the run
folder with generous timeouts instead of sleeping for fixed times.
"""

import json
import math
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import sc_fast.train
from bench import cli
from bench.results import CurveRow, TrialRow, atomic_write_text, read_rows, write_rows
from helpers import assert_one_line, bench_dict, dump_toml

REPO = Path(__file__).resolve().parent.parent
BENCH_TOML = REPO / "bench.toml"
TIMEOUT_S = 120
PNG_END = b"IEND\xaeB`\x82"

# name -> (steps, eval_every): the tiny trials every config below carries
TINY = {"tiny": (4, 2), "tiny-long": (12, 4), "tiny-boom": (4, 2), "tiny-oom": (5, 5)}
PROFILES = {
    "two": ["tiny", "tiny-long"],  # signalled during the second trial
    "many": ["tiny"],  # x 3 seeds: several whole-file writes to kill around
    "faults": ["tiny-boom", "tiny-oom", "tiny"],
    "tiny": ["tiny"],
}
SEEDS = {"many": 3, "tiny": 2}


# ---- fixtures: fake data, tiny config -------------------------------------------------------------

def write_fake_cifar(parent: Path, per_file: int = 16, test: int = 50,
                     damage: Callable[[str, dict[str, Any]], None] | None = None) -> Path:
    """``parent/cifar-10-batches-py`` in the official pickle schema: 5 x ``per_file`` training images
    and ``test`` test images. ``damage(name, batch)`` may alter a batch before it is written."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        n = test if name == "test_batch" else per_file
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, 10, n)]}
        if damage:
            damage(name, batch)
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return folder


def write_config(path: Path, data_root: Path) -> Path:
    """bench.toml plus the tiny trials and profiles above, reading data from ``data_root``."""
    cfg = bench_dict(root=str(data_root), pipeline="torch")
    small = {"batch_size": 8, "eval_batch_size": 50, "train_images": 64, "eval_images": 50}
    for name, (steps, every) in TINY.items():
        sched = ({"schedule": "constant", "lr": 1e6} if name == "tiny-boom"
                 else {"schedule": "onecycle", "min_lr": 0.01, "max_lr": 0.1})
        cfg["trials"][name] = {**sched, "steps": steps, "eval_every": every, **small}
    for name, trials in PROFILES.items():
        cfg["profiles"][name] = {"trials": trials, "seeds": SEEDS.get(name, 1), "target": 0.99,
                                 "stop_at_target": False, "device": "cpu"}
    path.write_text(dump_toml(cfg))
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    parent = tmp_path_factory.mktemp("cifar")
    write_fake_cifar(parent)
    return parent


@pytest.fixture
def config(tmp_path: Path, data_root: Path) -> Path:
    return write_config(tmp_path / "bench.toml", data_root)


@pytest.fixture(autouse=True)
def _no_other_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only the data a test names is found: $SC_FAST_DATA and the user cache point at empty folders,
    for in-process calls and subprocesses alike. cli.main's SIGTERM handler is undone afterwards."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("SC_FAST_DATA", str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(empty))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    old = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, old)


# ---- helpers: subprocesses, run folders, checks --------------------------------------------------

def start(argv: list[Any], log: Path) -> subprocess.Popen[bytes]:
    """``python -m bench ARGV`` with stdout/stderr to ``log``.out/.err. SIGINT is reset to the
    default in the child: a shell's background job would otherwise inherit it ignored."""
    return subprocess.Popen([sys.executable, "-m", "bench", *map(str, argv)], cwd=REPO,
                            stdout=open(f"{log}.out", "wb"), stderr=open(f"{log}.err", "wb"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def run_main(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def wait_until(check: Callable[[], Any], proc: subprocess.Popen[bytes], log: Path, what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} before {what}: {Path(f'{log}.err').read_text()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no {what} within {TIMEOUT_S} s")


def run_dir_in(out: Path) -> Path | None:
    dirs = [d for d in out.iterdir() if d.is_dir()] if out.is_dir() else []
    assert len(dirs) <= 1, dirs
    return dirs[0] if dirs else None


def rows_of(run_dir: Path | None) -> list[TrialRow]:
    return read_rows(run_dir / "trials.csv", TrialRow) if run_dir and (run_dir / "trials.csv").exists() else []


def env_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "env.json").read_text())


def pairs_of(rows: list[Any]) -> list[tuple[str, int]]:
    return [(r.trial, r.seed) for r in rows]


def planned(profile: str) -> list[tuple[str, int]]:
    return [(t, s) for t in PROFILES[profile] for s in range(SEEDS.get(profile, 1))]


def assert_whole_files(run_dir: Path) -> None:
    """Every result file present parses whole: no truncated CSV, JSON, PNG or checkpoint."""
    for path in run_dir.iterdir():
        if path.name.startswith("."):
            continue  # a temporary file left by SIGKILL is never read
        if path.name == "checkpoints":  # a cut-off trial's state
            for ckpt in path.glob("[!.]*"):
                assert isinstance(torch.load(ckpt, map_location="cpu", weights_only=True), dict), ckpt
            continue
        data = path.read_bytes()
        if path.suffix in (".csv", ".json", ".md"):
            assert data.endswith(b"\n"), f"{path} does not end with a line end"
        if path.name == "trials.csv":
            read_rows(path, TrialRow)
        elif path.name == "curves.csv":
            read_rows(path, CurveRow)
        elif path.suffix == ".json":
            assert isinstance(json.loads(data), dict)
        elif path.suffix == ".png":
            assert data.endswith(PNG_END), f"{path} is truncated"


def assert_clean_curves(run_dir: Path) -> None:
    """One series per (trial, seed) with a row, contiguous, steps strictly increasing from the first
    evaluation: a trial cut off and rerun was never stitched onto its first attempt."""
    rows, curves = rows_of(run_dir), read_rows(run_dir / "curves.csv", CurveRow)
    keys = pairs_of(curves)
    order = list(dict.fromkeys(keys))
    assert keys == [k for k in order for _ in range(keys.count(k))], "a series is split in two"
    with_curve = {(r.trial, r.seed): r for r in rows if r.status != "error"}
    assert set(order) == set(with_curve)
    for key, row in with_curve.items():
        steps = [c.step for c in curves if (c.trial, c.seed) == key]
        every = TINY[row.trial][1]
        expected = list(range(every, row.steps_run + 1, every))
        if row.steps_run % every:
            expected.append(row.steps_run)
        assert steps == expected, f"{key}: steps {steps}, expected {expected}"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- 1. interruption -------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_keeps_finished_trials_and_resume_runs_the_rest(
        tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str], sig: signal.Signals) -> None:
    out, log = tmp_path / "out", tmp_path / "run"
    proc = start(["run", "--config", config, "--profile", "two", "--out", out], log)
    run_dir = wait_until(lambda: rows_of(run_dir_in(out)) and run_dir_in(out), proc, log, "the first row")
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 130, Path(f"{log}.err").read_text()

    assert env_of(run_dir)["state"] == "interrupted"
    assert_whole_files(run_dir)
    before = rows_of(run_dir)
    assert pairs_of(before) == [("tiny", 0)]  # tiny-long (seconds) was cut off
    assert_clean_curves(run_dir)
    # As if a kill -9 had also landed between a tiny-long attempt's curves write and its row write:
    # a partial series without a row, which resume must drop rather than continue.
    curves = read_rows(run_dir / "curves.csv", CurveRow)
    orphan = [CurveRow(run_dir.name, "tiny-long", 0, step, step / 8, 0.05, 0.9, 2.0, 2.0, 0.1, step / 10, step / 5)
              for step in (4, 8)]
    write_rows(run_dir / "curves.csv", curves + orphan, CurveRow)

    # Resume without --config or --data: the run folder knows both. tiny-long goes on from its
    # checkpoint, or starts from scratch if it was cut before its first evaluation.
    rc, _, err = run_main(capsys, "run", "--resume", run_dir)
    assert rc == 0, err
    after = rows_of(run_dir)
    assert after[:1] == before, "a finished row was rewritten"
    assert sorted(pairs_of(after)) == sorted(planned("two")), "every (trial, seed) exactly once"
    assert all(r.steps_run == r.max_steps for r in after)
    assert_clean_curves(run_dir)
    assert_whole_files(run_dir)
    assert env_of(run_dir)["state"] == "complete"
    # each piece's threads and load are recorded, the first start's and the resume's, in order
    starts = env_of(run_dir)["starts"]
    assert len(starts) == 2 and starts[0]["command"][1:2] == ["run"]  # the resume ran in-process here
    assert all(isinstance(s["torch_threads"], int) and s["torch_threads"] >= 1 for s in starts)
    assert starts[0]["utc"] <= starts[1]["utc"]

    # A complete run: nothing to do, exit 0, results untouched.
    trials_csv, env_json = (run_dir / "trials.csv").read_bytes(), (run_dir / "env.json").read_bytes()
    rc, stdout, err = run_main(capsys, "run", "--resume", run_dir)
    assert rc == 0, err
    assert "nothing to do" in stdout
    assert (run_dir / "trials.csv").read_bytes() == trials_csv
    assert (run_dir / "env.json").read_bytes() == env_json


def test_sigkill_at_any_moment_leaves_only_whole_files(
        tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One run killed -9 twice: as the first trial's files appear, then (resumed) a random moment
    after its next row. Every file left parses, finished rows survive each kill unchanged, and a
    last --resume completes the plan with every (trial, seed) once."""
    out = tmp_path / "out"
    proc = start(["run", "--config", config, "--profile", "many", "--out", out], tmp_path / "kill0")
    run_dir = wait_until(lambda: (d := run_dir_in(out)) and (d / "curves.csv").exists() and d, proc,
                         tmp_path / "kill0", "curves.csv")
    proc.kill()
    proc.wait(timeout=60)
    assert_whole_files(run_dir)
    kept = rows_of(run_dir)

    proc = start(["run", "--resume", run_dir], tmp_path / "kill1")
    wait_until(lambda: len(rows_of(run_dir)) > len(kept), proc, tmp_path / "kill1", "a new row")
    time.sleep(random.Random(20240805).uniform(0.0, 0.5))
    proc.kill()
    proc.wait(timeout=60)
    assert_whole_files(run_dir)
    rows = rows_of(run_dir)
    assert rows[:len(kept)] == kept and len(set(pairs_of(rows))) == len(rows)

    rc, _, err = run_main(capsys, "run", "--resume", run_dir)
    assert rc == 0, err
    assert rows_of(run_dir)[:len(rows)] == rows
    assert sorted(pairs_of(rows_of(run_dir))) == sorted(planned("many"))
    assert_clean_curves(run_dir)
    assert_whole_files(run_dir)
    assert not list(run_dir.glob(".*.tmp")), "resume leaves no temporary files behind"


def test_interrupted_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal landing inside a write (here: raised from fsync) leaves the previous file whole."""
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / "trials.csv"
    path.write_text("old,whole\n1,2\n")

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt("signal 15")

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "new,half\n" * 1000)
    assert path.read_text() == "old,whole\n1,2\n"
    assert [p.name for p in folder.iterdir()] == ["trials.csv"]


def test_sigterm_during_result_write_waits_for_whole_trial(
        tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM arriving while a finished trial's curves are written: its curves and row both land,
    then the run stops (130) and --resume runs only the other seed."""
    import bench.trials as runner

    real_write, sent = runner.write_rows, []

    def write_then_signal(path: Path, rows: list[Any], cls: type) -> None:
        if not sent:
            sent.append(path.name)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler would run here, mid-write, if it were not deferred
        real_write(path, rows, cls)

    monkeypatch.setattr(runner, "write_rows", write_then_signal)
    out = tmp_path / "out"
    rc, _, err = run_main(capsys, "run", "--config", config, "--profile", "tiny", "--out", out)
    assert rc == 130, err
    run_dir = run_dir_in(out)
    assert sent == ["curves.csv"]
    assert pairs_of(rows_of(run_dir)) == [("tiny", 0)]
    assert_clean_curves(run_dir)
    assert env_of(run_dir)["state"] == "interrupted"
    monkeypatch.setattr(runner, "write_rows", real_write)
    rc, _, err = run_main(capsys, "run", "--resume", run_dir)
    assert rc == 0, err
    assert pairs_of(rows_of(run_dir)) == [("tiny", 0), ("tiny", 1)]
    assert_clean_curves(run_dir)


# ---- 2. faults inside a trial --------------------------------------------------------------------

def test_diverged_and_failed_trials_are_recorded_and_the_run_goes_on(
        tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    real_make_step = sc_fast.train.make_step

    def make_step(model: torch.nn.Module, optimizer: Any, cfg: Any, device: torch.device) -> Any:
        if cfg.max_steps == TINY["tiny-oom"][0]:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real_make_step(model, optimizer, cfg, device)

    monkeypatch.setattr(sc_fast.train, "make_step", make_step)
    out = tmp_path / "out"
    rc, _, err = run_main(capsys, "run", "--config", config, "--profile", "faults", "--out", out)
    assert rc == 1, err
    run_dir = run_dir_in(out)
    rows = {r.trial: r for r in rows_of(run_dir)}
    assert list(rows) == ["tiny-boom", "tiny-oom", "tiny"]
    boom, oom, ok = rows["tiny-boom"], rows["tiny-oom"], rows["tiny"]
    assert boom.status == "diverged" and boom.error == ""
    assert oom.status == "error"
    assert "OutOfMemoryError" in oom.error and "simulated" in oom.error and "\n" not in oom.error
    assert ok.status == "not_reached" and ok.steps_run == TINY["tiny"][0]
    for r in rows.values():
        assert r.time_to_target_s is None and r.steps_to_target is None and r.wall_to_target_s is None
    curves = read_rows(run_dir / "curves.csv", CurveRow)
    boom_curve = [c for c in curves if c.trial == "tiny-boom"]
    assert boom_curve and not math.isfinite(boom_curve[-1].test_loss + boom_curve[-1].train_loss)
    assert_clean_curves(run_dir)
    assert env_of(run_dir)["state"] == "failed"


# ---- 3. damaged data -----------------------------------------------------------------------------

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _set_labels(name: str, value: int) -> Callable[[str, dict[str, Any]], None]:
    def damage(batch_name: str, batch: dict[str, Any]) -> None:
        if batch_name == name:
            batch["labels"][3] = value
    return damage


def _reshape(name: str) -> Callable[[str, dict[str, Any]], None]:
    def damage(batch_name: str, batch: dict[str, Any]) -> None:
        if batch_name == name:
            batch["data"] = batch["data"][:, :3000]
    return damage


def _drop_label(name: str) -> Callable[[str, dict[str, Any]], None]:
    def damage(batch_name: str, batch: dict[str, Any]) -> None:
        if batch_name == name:
            batch["labels"].pop()
    return damage


@pytest.mark.parametrize("damage,bad_file,needle", [
    pytest.param(None, "data_batch_3", "data_batch_3", id="truncated-pickle"),
    pytest.param(_reshape("test_batch"), "test_batch", "shape", id="wrong-shape"),
    pytest.param(_set_labels("data_batch_2", 10), "data_batch_2", "labels", id="label-10"),
    pytest.param(_set_labels("test_batch", -1), "test_batch", "labels", id="label-negative"),
    pytest.param(_drop_label("data_batch_5"), "data_batch_5", "labels", id="label-count"),
])
def test_damaged_data_exits_2_naming_the_file(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str],
                                              damage: Any, bad_file: str, needle: str) -> None:
    folder = write_fake_cifar(tmp_path / "bad", damage=damage)
    if damage is None:
        _truncate(folder / bad_file)
    out = tmp_path / "out"
    rc, _, err = run_main(capsys, "run", "--config", config, "--profile", "tiny", "--data", tmp_path / "bad",
                          "--out", out)
    assert rc == 2
    assert_one_line(err, str(folder / bad_file), needle)
    assert not out.exists()


def test_missing_data_offline_exits_2_saying_where_it_looked(
        tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nowhere, out = tmp_path / "nowhere", tmp_path / "out"
    nowhere.mkdir()
    rc, _, err = run_main(capsys, "run", "--config", config, "--profile", "tiny", "--data", nowhere, "--out", out)
    assert rc == 2
    assert_one_line(err, str(nowhere), "SC_FAST_DATA")
    assert not out.exists()


# ---- 3. damaged or foreign run folders -----------------------------------------------------------

@pytest.fixture(scope="module")
def done_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A complete run of the `tiny` profile (2 seeds), made once; tests damage copies of it."""
    tmp = tmp_path_factory.mktemp("done")
    config = write_config(tmp / "bench.toml", data_root)
    old = signal.getsignal(signal.SIGTERM)
    try:
        assert cli.main(["run", "--config", str(config), "--profile", "tiny", "--out", str(tmp / "out")]) == 0
    finally:
        signal.signal(signal.SIGTERM, old)
    run_dir = run_dir_in(tmp / "out")
    assert run_dir is not None
    return run_dir


def _cut_end(name: str, n: int) -> Callable[[Path], Path]:
    def damage(run: Path) -> Path:
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[:-n])
        return run / name
    return damage


def _replace(name: str, text: str) -> Callable[[Path], Path]:
    def damage(run: Path) -> Path:
        (run / name).write_text(text)
        return run / name
    return damage


def _short_last_row(run: Path) -> Path:
    """The last row loses its last two fields but keeps its line end."""
    path = run / "trials.csv"
    path.write_bytes(path.read_bytes().rstrip(b"\r\n").rsplit(b",", 2)[0] + b"\r\n")
    return path


def _duplicate_last_row(run: Path) -> Path:
    path = run / "trials.csv"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines + lines[-1:]))
    return path


def _empty_folder(run: Path) -> Path:
    for p in run.iterdir():
        p.unlink()
    return run


def _not_a_folder(run: Path) -> Path:
    shutil.rmtree(run)
    return run


DAMAGES = {
    "empty-folder": _empty_folder,
    "no-such-folder": _not_a_folder,
    "env-garbage": _replace("env.json", "{this is not json\n"),
    "env-not-an-object": _replace("env.json", "[1, 2, 3]\n"),
    "env-empty": _replace("env.json", ""),
    "trials-truncated-mid-row": _cut_end("trials.csv", 10),
    "trials-truncated-mid-header": lambda run: _replace("trials.csv", (run / "trials.csv").read_text()[:40])(run),
    "trials-short-row": _short_last_row,
    "trials-garbage": _replace("trials.csv", "hello,world\n1,2\n"),
    "trials-duplicate-row": _duplicate_last_row,
    "curves-truncated": _cut_end("curves.csv", 12),
}
# Commands that must reject a damage; the rest do not read what it touches (compare works from
# trials.csv and env.json; only resume cares that a (trial, seed) has one row).
REJECTED_BY = {"curves-truncated": ("report", "resume"), "trials-duplicate-row": ("resume",)}


@pytest.mark.parametrize("command", ["report", "compare", "resume"])
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_run_folder_exits_2_naming_what_is_wrong(
        tmp_path: Path, done_run: Path, capsys: pytest.CaptureFixture[str], command: str, damage: str) -> None:
    if command not in REJECTED_BY.get(damage, (command,)):
        pytest.skip(f"{command} does not read what {damage} damages")
    run = tmp_path / done_run.name
    shutil.copytree(done_run, run)
    named = DAMAGES[damage](run)
    parent = snapshot(tmp_path)
    argv = {"report": ["report", run], "compare": ["compare", done_run, run],
            "resume": ["run", "--resume", run]}[command]
    rc, _, err = run_main(capsys, *argv)
    assert rc == 2, err
    assert_one_line(err, str(named))
    assert snapshot(tmp_path) == parent, "a damaged run folder was written to"


def test_report_of_a_run_stopped_before_its_first_trial(
        tmp_path: Path, done_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Killed during the first trial: env.json exists, trials.csv and curves.csv do not yet.
    run = tmp_path / done_run.name
    shutil.copytree(done_run, run)
    (run / "trials.csv").unlink()
    (run / "curves.csv").unlink()
    rc, out, err = run_main(capsys, "report", run)
    assert rc == 0, err
    assert "no trial has finished" in out
    assert "## Trials" not in (run / "summary.md").read_text()


# ---- 4. environment ------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_gpu(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc, _, err = run_main(capsys, "run", "--config", config, "--profile", "tiny", "--device", "cuda", "--out", out)
    assert rc == 2
    assert_one_line(err, "--device cuda")
    assert not out.exists()


def test_pipeline_dali_without_dali(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`import nvidia.dali` fails (as on a machine without DALI): --pipeline dali is refused up front."""
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # makes the import raise ImportError
    out = tmp_path / "out"
    rc, _, err = run_main(capsys, "run", "--config", config, "--profile", "tiny", "--pipeline", "dali",
                          "--out", out)
    assert rc == 2
    assert_one_line(err, "--pipeline dali", "DALI")
    assert not out.exists()


def test_unwritable_out_fails_before_any_work(tmp_path: Path, config: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """--out under a regular file: exit 2 naming --out, before the data is even looked for."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    out = blocker / "out"
    rc, _, err = run_main(capsys, "run", "--config", config, "--profile", "tiny", "--data", tmp_path / "nowhere",
                          "--out", out)
    assert rc == 2
    assert_one_line(err, "--out", str(out))
    assert blocker.read_text() == "not a folder\n"
