"""Mid-trial checkpoints (issue 15): a trial cut off by SIGKILL goes on from its last checkpoint
with ``run --resume`` and ends with the curve of an uninterrupted run; a checkpoint that does not
load or belongs to another config is refused with one line and the trial starts from scratch; a
kill in the middle of writing a checkpoint leaves the previous one usable; SIGTERM (``timeout``)
keeps the last checkpoint.

Every run is a real ``python -m bench`` subprocess with one thread, so runs compare bit for bit
across processes: ResNet-56 on a small learnable fake CIFAR-10, 24 steps of batch 32 over 512
training images (16 steps per epoch: a resumed stream crosses an epoch boundary), evaluated every
4 steps on 200 test images, a checkpoint at every evaluation. Target 0.01: reached at the first
evaluation, so the reached point travels through the checkpoint too.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.results import CurveRow, TrialRow, read_rows
from helpers import bench_dict, dump_toml
from test_robustness import env_of, run_dir_in, rows_of, wait_until, write_fake_cifar

REPO = Path(__file__).resolve().parent.parent
STEPS, EVERY = 24, 4
TRIAL = "ckpt"
KILL_MID_WRITE = """
import io, os, signal, sys, torch
from bench import cli
real, calls = torch.save, []
def save(obj, f, *args, **kwargs):  # the second checkpoint: half of it written, then SIGKILL
    calls.append(1)
    if len(calls) < 2:
        return real(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    real(obj, buf)
    half = buf.getvalue()[:len(buf.getvalue()) // 2]
    out = f if hasattr(f, "write") else open(f, "wb")
    out.write(half)
    out.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = save
sys.exit(cli.main(sys.argv[1:]))
"""


def learnable(name: str, batch: dict[str, Any]) -> None:
    """Noise with a bright band in the red channel whose rows name the label: accuracy moves
    between evaluations."""
    data = batch["data"] // 4
    for i, label in enumerate(batch["labels"]):
        data[i, label * 96:(label + 1) * 96] = 255  # red rows 3 * label .. 3 * label + 2
    batch["data"] = data


def write_config(path: Path, data_root: Path) -> Path:
    cfg = bench_dict(warmup_steps=1, root=str(data_root), pipeline="torch")
    cfg["trials"][TRIAL] = {"schedule": "onecycle", "min_lr": 0.02, "max_lr": 0.2, "steps": STEPS,
                            "eval_every": EVERY, "batch_size": 32, "eval_batch_size": 100, "train_images": 512,
                            "eval_images": 200}
    cfg["profiles"][TRIAL] = {"trials": [TRIAL], "seeds": 1, "target": 0.01, "stop_at_target": False,
                              "device": "cpu"}
    path.write_text(dump_toml(cfg))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, a folder for runs): made once; the config reads a fake data set beside it."""
    tmp = tmp_path_factory.mktemp("ckpt")
    write_fake_cifar(tmp / "data", per_file=103, test=200, damage=learnable)
    return write_config(tmp / "bench.toml", tmp / "data"), tmp


def child_env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "SC_FAST_DATA": str(tmp / "empty"),
            "XDG_CACHE_HOME": str(tmp / "empty")}


def start(tmp: Path, log: Path, *argv: Any, code: str | None = None) -> subprocess.Popen[bytes]:
    head = ["-c", code] if code else ["-m", "bench"]
    return subprocess.Popen([sys.executable, *head, *map(str, argv)], cwd=REPO, env=child_env(tmp),
                            stdout=open(f"{log}.out", "wb"), stderr=open(f"{log}.err", "wb"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(tmp: Path, log: Path, *argv: Any, code: str | None = None) -> tuple[int, str]:
    proc = start(tmp, log, *argv, code=code)
    rc = proc.wait(timeout=600)
    return rc, Path(f"{log}.out").read_text() + Path(f"{log}.err").read_text()


def checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / f"{TRIAL}-seed0.pt"


def curve(run_dir: Path) -> list[CurveRow]:
    return read_rows(run_dir / "curves.csv", CurveRow)


def cut_after_checkpoint(tmp: Path, config: Path, out: Path, sig: int) -> tuple[Path, int]:
    """A run signalled as soon as its first checkpoint is on disk: (its run folder, exit code)."""
    log = out.with_suffix(".log")
    proc = start(tmp, log, "run", "--config", config, "--profile", TRIAL, "--out", out)
    run_dir = wait_until(lambda: (d := run_dir_in(out)) and checkpoint(d).exists() and d, proc, log,
                         "the first checkpoint")
    proc.send_signal(sig)
    return run_dir, proc.wait(timeout=120)


@pytest.fixture(scope="module")
def reference(setup: tuple[Path, Path]) -> tuple[TrialRow, list[CurveRow]]:
    """The trial run uninterrupted: its row and curve."""
    config, tmp = setup
    rc, text = finish(tmp, tmp / "reference", "run", "--config", config, "--profile", TRIAL, "--out",
                      tmp / "reference")
    assert rc == 0, text[-3000:]
    run_dir = run_dir_in(tmp / "reference")
    (row,) = rows_of(run_dir)
    assert not checkpoint(run_dir).parent.exists(), "a finished run keeps no checkpoint"
    return row, curve(run_dir)


@pytest.fixture(scope="module")
def killed(setup: tuple[Path, Path]) -> Path:
    """A run SIGKILLed after a checkpoint, before its trial finished (tests resume copies of it)."""
    config, tmp = setup
    run_dir, rc = cut_after_checkpoint(tmp, config, tmp / "killed", signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert rows_of(run_dir) == [] and checkpoint(run_dir).is_file()
    return run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))


def assert_same_curve(got: list[CurveRow], want: list[CurveRow]) -> None:
    assert [c.step for c in got] == [c.step for c in want] == list(range(EVERY, STEPS + 1, EVERY))
    assert [c.test_acc for c in got] == [c.test_acc for c in want]
    for g, w in zip(got, want, strict=True):
        assert (g.lr, g.momentum, g.epoch) == (w.lr, w.momentum, w.epoch)
        assert abs(g.train_loss - w.train_loss) < 1e-4 and abs(g.test_loss - w.test_loss) < 1e-4
    times = [c.train_time_s for c in got]
    assert times == sorted(times) and times[0] > 0


def test_sigkilled_trial_resumes_with_the_uninterrupted_curve(
        setup: tuple[Path, Path], reference: tuple[TrialRow, list[CurveRow]], killed: Path, tmp_path: Path) -> None:
    _, tmp = setup
    run_dir = copy_of(killed, tmp_path)
    rc, text = finish(tmp, tmp_path / "resume", "run", "--resume", run_dir)
    assert rc == 0, text[-3000:]
    assert "going on from its checkpoint at step" in text
    (row,) = rows_of(run_dir)
    ref_row, ref_curve = reference
    assert row.resumed == 1 and ref_row.resumed == 0
    assert (row.status, row.steps_run, row.steps_to_target) == (ref_row.status, STEPS, ref_row.steps_to_target)
    assert row.best_test_acc == ref_row.best_test_acc and row.final_test_acc == ref_row.final_test_acc
    assert row.time_to_target_s is not None and row.wall_to_target_s is None  # a resumed wall clock has a gap
    assert ref_row.wall_to_target_s is not None
    assert_same_curve(curve(run_dir), ref_curve)
    assert not checkpoint(run_dir).parent.exists(), "the checkpoint goes once the row is written"
    assert env_of(run_dir)["state"] == "complete"


def _truncate(run_dir: Path, config: Path, tmp: Path) -> tuple[Path, str]:
    data = checkpoint(run_dir).read_bytes()
    checkpoint(run_dir).write_bytes(data[:len(data) // 2])
    return config, "unreadable"


def _other_config(run_dir: Path, config: Path, tmp: Path) -> tuple[Path, str]:
    other = tmp / "other.toml"
    other.write_text(config.read_text() + "# edited after the checkpoint was written\n")
    return other, "config_sha256"


@pytest.mark.parametrize("damage", [_truncate, _other_config], ids=["truncated", "other-config"])
def test_unusable_checkpoint_is_refused_and_the_trial_starts_from_scratch(
        setup: tuple[Path, Path], reference: tuple[TrialRow, list[CurveRow]], killed: Path, tmp_path: Path,
        damage: Any) -> None:
    config, tmp = setup
    run_dir = copy_of(killed, tmp_path)
    use_config, why = damage(run_dir, config, tmp_path)
    rc, text = finish(tmp, tmp_path / "resume", "run", "--resume", run_dir, "--config", use_config)
    assert rc == 0, text[-3000:]
    named = [line for line in text.splitlines() if str(checkpoint(run_dir)) in line]
    assert len(named) == 1, text
    assert why in named[0] and "starts from scratch" in named[0]
    assert "going on from" not in text
    (row,) = rows_of(run_dir)
    assert row.resumed == 0 and row.steps_run == STEPS and row.wall_to_target_s is not None
    assert_same_curve(curve(run_dir), reference[1])  # from scratch, same seed: the same trial
    assert not checkpoint(run_dir).parent.exists()


def test_kill_while_writing_a_checkpoint_leaves_the_previous_one(
        setup: tuple[Path, Path], reference: tuple[TrialRow, list[CurveRow]], tmp_path: Path) -> None:
    config, tmp = setup
    out = tmp_path / "out"
    rc, text = finish(tmp, tmp_path / "kill", "run", "--config", config, "--profile", TRIAL, "--out", out,
                      code=KILL_MID_WRITE)
    assert rc == -signal.SIGKILL, text[-3000:]
    run_dir = run_dir_in(out)
    folder = checkpoint(run_dir).parent
    whole = checkpoint(run_dir).stat().st_size
    assert any(p != checkpoint(run_dir) and 0 < p.stat().st_size < whole for p in folder.iterdir()), \
        "the half-written checkpoint is on disk"
    rc, text = finish(tmp, tmp_path / "resume", "run", "--resume", run_dir)
    assert rc == 0, text[-3000:]
    assert f"going on from its checkpoint at step {EVERY} " in text  # the first one, whole
    (row,) = rows_of(run_dir)
    assert row.resumed == 1
    assert_same_curve(curve(run_dir), reference[1])
    assert not folder.exists(), "no half-written file is left behind"


def test_sigterm_keeps_the_last_checkpoint(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """`timeout` sends SIGTERM: exit 130, state interrupted, the checkpoint whole on disk."""
    config, tmp = setup
    run_dir, rc = cut_after_checkpoint(tmp, config, tmp_path / "out", signal.SIGTERM)
    assert rc == 130
    log = Path(f"{(tmp_path / 'out').with_suffix('.log')}.out").read_text()
    assert "--resume" in log
    assert env_of(run_dir)["state"] == "interrupted"
    assert rows_of(run_dir) == []
    saved = torch.load(checkpoint(run_dir), map_location="cpu", weights_only=True)
    assert isinstance(saved, dict)


def test_a_checkpoint_names_its_device_as_env_json_does() -> None:
    """One name for a device everywhere (bench.common.device_name): a CPU with its ISA, so a trial
    checkpointed on an AVX2-only part is not resumed on one with AVX512-BF16 of the same model name."""
    from bench.checkpoints import machine
    from bench.common import device_name
    from sc_fast.env import fingerprint

    cpu, fp = torch.device("cpu"), fingerprint()
    name = machine(cpu)["device_name"]
    assert name == device_name(fp, cpu) and name.startswith(f"CPU {fp['cpu']}")
    if fp.get("cpu_isa"):
        assert name.endswith(f"({fp['cpu_isa']})")
