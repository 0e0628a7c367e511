"""`python -m bench run` / `report` end to end, as subprocesses: the run folder has every file and
column docs/reference.md ("Results") promises. Runs on the CPU with a tiny profile appended to a
copy of bench.toml."""

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import config as config_mod

REPO = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"

# Copied from docs/reference.md ("Results"), not from bench/results.py: the test pins the contract.
TRIAL_COLUMNS = """run_id, trial, schedule, seed, device, pipeline, precision, channels_last, compile,
  batch_size, max_steps, target_acc, status, time_to_target_s, steps_to_target,
  epochs_to_target, wall_to_target_s, best_test_acc, final_test_acc, train_time_s,
  compile_time_s, eval_time_s, train_imgs_per_s, world_size, resumed""".replace("\n", " ").replace(" ", "").split(",")
CURVE_COLUMNS = """run_id, trial, seed, step, epoch, lr, momentum, train_loss, test_loss, test_acc,
  train_time_s, wall_time_s""".replace("\n", " ").replace(" ", "").split(",")
STATUSES = {"reached", "not_reached", "diverged", "error"}
TO_TARGET = ("time_to_target_s", "steps_to_target", "epochs_to_target", "wall_to_target_s")
# env.json: GPU/CPU name and count, driver, CUDA, cuDNN, torch, torchvision, DALI, Python, git, command.
ENV_KEYS = ("gpu", "gpu_count", "cpu", "cpu_count", "driver", "cuda", "cudnn", "torch", "torchvision",
            "dali", "python", "git", "command")

TINY_PROFILE = """
[profiles.tiny]
description = "tests/test_e2e.py: two trials of 6 steps"
trials = ["1cycle", "multistep"]
seeds = 1
target = 0.01
stop_at_target = false

[profiles.tiny.override]
steps = 6
batch_size = 16
eval_every = 3
eval_batch_size = 200
eval_images = 200
train_images = 512
"""


def data_env() -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("SC_FAST_DATA"):
        default = REPO.parent / "shared" / "data"  # this project's machines and CI
        if not default.is_dir():
            pytest.skip("no offline CIFAR-10 copy: set SC_FAST_DATA")
        env["SC_FAST_DATA"] = str(default)
    return env


def bench(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, env=data_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def check_trials(run_dir: Path, n: int) -> list[dict[str, str]]:
    header, rows = read_csv(run_dir / "trials.csv")
    assert [c for c in TRIAL_COLUMNS if c not in header] == []
    assert len(rows) == n
    for r in rows:
        assert r["status"] in STATUSES, r
        if r["status"] == "reached":
            assert all(r[c] != "" for c in TO_TARGET), r
            assert float(r["time_to_target_s"]) <= float(r["wall_to_target_s"])
        else:
            assert all(r[c] == "" for c in TO_TARGET), r  # empty unless reached
    return rows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """One tiny run with --json: (process, run folder, config file)."""
    tmp = tmp_path_factory.mktemp("e2e")
    config = tmp / "bench.toml"
    config.write_text((REPO / "bench.toml").read_text() + TINY_PROFILE)
    proc = bench("run", "--config", str(config), "--profile", "tiny", "--device", "cpu",
                 "--out", str(tmp / "out"), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp / "out").iterdir())
    assert len(runs) == 1
    return proc, runs[0], config


def test_json_on_stdout(tiny: tuple[subprocess.CompletedProcess[str], Path, Path]) -> None:
    proc, run_dir, _ = tiny
    out = json.loads(proc.stdout)  # stdout holds the JSON and nothing else
    assert Path(out["run_dir"]) == run_dir
    assert set(out["summary"]) == {"1cycle", "multistep"}


def test_run_folder_files(tiny: tuple[subprocess.CompletedProcess[str], Path, Path]) -> None:
    _, run_dir, _ = tiny
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{4}-cpu", run_dir.name)  # UTC time, random tag, device slug
    for name in ("env.json", "trials.csv", "curves.csv", "summary.md"):
        assert (run_dir / name).is_file(), name
    pngs = list(run_dir.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == PNG for p in pngs)
    assert not list(run_dir.glob(".*.tmp"))  # atomic writes leave no temporaries behind
    summary = (run_dir / "summary.md").read_text()
    assert "1cycle" in summary and "multistep" in summary


def test_env_json(tiny: tuple[subprocess.CompletedProcess[str], Path, Path]) -> None:
    import torch
    _, run_dir, config = tiny
    doc = json.loads((run_dir / "env.json").read_text())
    env = doc["env"]
    assert [k for k in ENV_KEYS if k not in env] == []
    assert env["gpu_count"] == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert env["torch"] == torch.__version__
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert re.fullmatch(r"[0-9a-f]{40}", env["git"]["commit"]) and isinstance(env["git"]["dirty"], bool)
    assert "run" in env["command"] and "tiny" in env["command"]  # the command line
    # The resolved config and the hash of the file it came from.
    assert doc["config"]["sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert set(doc["config"]["trials"]) >= {"1cycle", "multistep"}
    assert doc["run_id"] == run_dir.name and doc["state"] == "complete"


def test_a_tree_copied_without_git_records_the_commit_it_is_told(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A lent GPU machine gets the working tree without .git: SC_FAST_GIT_COMMIT names the commit
    (dirty unknown); without it the commit is unknown rather than guessed."""
    from sc_fast.env import fingerprint

    monkeypatch.setenv("SC_FAST_GIT_COMMIT", "0123456789abcdef0123456789abcdef01234567")
    git = fingerprint(repo=tmp_path)["git"]
    assert git["commit"] == "0123456789abcdef0123456789abcdef01234567" and git["dirty"] is None
    monkeypatch.delenv("SC_FAST_GIT_COMMIT")
    assert fingerprint(repo=tmp_path)["git"]["commit"] is None


def test_trials_csv(tiny: tuple[subprocess.CompletedProcess[str], Path, Path]) -> None:
    _, run_dir, _ = tiny
    rows = check_trials(run_dir, 2)
    assert [r["trial"] for r in rows] == ["1cycle", "multistep"]
    for r in rows:
        assert (r["device"], r["pipeline"], r["batch_size"], r["max_steps"]) == ("cpu", "torch", "16", "6")
        assert r["run_id"] == run_dir.name and r["target_acc"] == "0.01"
        assert float(r["train_time_s"]) > 0 and float(r["train_imgs_per_s"]) > 0
        assert r["resumed"] == "0"  # one uninterrupted piece
    # Any accuracy reaches 0.01 on 200 balanced test images: the reached path is exercised.
    assert {r["status"] for r in rows} == {"reached"}
    assert {r["steps_to_target"] for r in rows} == {"3"}  # the first evaluation


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the kernel reports them: an oracle independent of torch's probes."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    return {f for line in cpuinfo.read_text().splitlines() if line.startswith("flags") for f in line.split()[2:]}


def test_auto_precision_follows_the_cpu(tiny: tuple[subprocess.CompletedProcess[str], Path, Path]) -> None:
    """bench.toml's `precision = "auto"` on a CPU: bf16 only where the CPU computes it natively
    (AVX512-BF16 or AMX), fp32 where bf16 is emulated (AVX2: ~10x slower). What the user sees: the
    start-up line, and the precision every row records."""
    proc, run_dir, _ = tiny
    native = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    want = "bf16" if native else "fp32"
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("cpu execution:")]
    assert line.startswith(f"cpu execution: precision {want} (auto: CPU bf16 instructions: "), line
    assert ("none)" in line) == (not native), line
    assert {r["precision"] for r in check_trials(run_dir, 2)} == {want}


def test_curves_csv(tiny: tuple[subprocess.CompletedProcess[str], Path, Path]) -> None:
    _, run_dir, config = tiny
    header, rows = read_csv(run_dir / "curves.csv")
    assert [c for c in CURVE_COLUMNS if c not in header] == []
    assert [(r["trial"], r["step"]) for r in rows] == [("1cycle", "3"), ("1cycle", "6"),
                                                        ("multistep", "3"), ("multistep", "6")]
    for r in rows:
        assert float(r["wall_time_s"]) >= float(r["train_time_s"]) > 0
        assert 0 <= float(r["test_acc"]) <= 1
    # each point records the LR of the step it follows (the multistep trial is still warming up here)
    schedule = config_mod.load(config).trials["multistep"].build_schedule()
    assert [float(r["lr"]) for r in rows if r["trial"] == "multistep"] == [schedule.lr(2), schedule.lr(5)]


def test_report_rerenders_the_run(tiny: tuple[subprocess.CompletedProcess[str], Path, Path]) -> None:
    _, run_dir, _ = tiny
    summary = run_dir / "summary.md"
    original = summary.read_text()
    summary.write_text("stale\n")
    (run_dir / "curves.png").unlink()
    proc = bench("report", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert summary.read_text() == original  # the same run renders the same summary
    assert (run_dir / "curves.png").read_bytes()[:8] == PNG


def test_smoke_profile(tmp_path: Path) -> None:
    # The user-facing installation check, exactly as the README has users run it.
    proc = bench("run", "--profile", "smoke", "--out", str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    rows = check_trials(run_dir, 3)
    assert [r["trial"] for r in rows] == ["1cycle", "clr", "multistep"]
    assert all(r["status"] != "error" and r["max_steps"] == "20" for r in rows)
    _, curves = read_csv(run_dir / "curves.csv")
    assert len(curves) == 3 * 2  # evaluations at steps 10 and 20
