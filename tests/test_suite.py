"""`python -m bench suite`: three parts into one folder with one summary, resumable after SIGTERM,
re-rendered by `report` and lined up by `compare`. Tiny trials and cases on the real data (seconds)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import bench_dict, dump_toml

REPO = Path(__file__).resolve().parent.parent
SMALL = {"batch_size": 8, "eval_batch_size": 50, "train_images": 64, "eval_images": 50}


def write_config(path: Path, steps: int = 6) -> Path:
    """bench.toml with tiny CPU trials, tiny throughput cases and a suite that uses them."""
    cfg = bench_dict(root="")
    cfg["trials"]["tiny"] = {"schedule": "onecycle", "steps": steps, "eval_every": 2, "min_lr": 0.01,
                             "max_lr": 0.1, **SMALL}
    cfg["trials"]["tiny-clr"] = {"schedule": "clr", "steps": steps, "eval_every": 2, "min_lr": 0.01,
                                 "max_lr": 0.1, "stepsize": 3, **SMALL}
    cfg["profiles"]["tiny"] = {"trials": ["tiny", "tiny-clr"], "seeds": 2, "target": 0.1, "stop_at_target": False}
    cfg.setdefault("suite", {}).update(cpu_profile="tiny", quick_lr_find_steps=10, cpu_trace=1)
    cfg.setdefault("lr_find", {}).update(trial="tiny", eval_images=50)
    cfg["throughput"].update(cpu_steps=2, cpu_warmup=1, cpu_repeats=2,
                             default_cases=["default", "torch-fed", "loader-torch"])
    for case in cfg["throughput"]["cases"].values():
        case["batch_size"] = 8
    path.write_text(dump_toml(cfg))
    return path


def bench(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def env_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "env.json").read_text())


def only_folder(out: Path) -> Path:
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder


def test_quick_suite_end_to_end(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bench.toml")
    p = bench("suite", "--config", str(config), "--device", "cpu", "--quick", "--out", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr[-3000:]
    suite = only_folder(tmp_path / "out")
    env = env_of(suite)
    assert env["kind"] == "suite" and env["state"] == "complete" and env["quick"] is True
    assert [env["parts"][n]["state"] for n in ("throughput", "run", "lr-find")] == ["complete"] * 3
    # each part a run folder of its kind, named by its role
    assert {n: env_of(suite / n)["kind"] for n in ("throughput", "run", "lr-find")} == \
        {"throughput": "throughput", "run": "run", "lr-find": "lr_find"}
    assert [env["parts"][n]["folder"] for n in ("throughput", "run", "lr-find")] == ["throughput", "run", "lr-find"]
    run = env_of(suite / "run")
    assert run["plan"]["seeds"] == [0]  # --quick: one seed
    assert run["run_id"] == f"{suite.name}-run"  # unique across a results tree of several suites
    throughput = suite / "throughput"  # [suite].cpu_trace = 1: profiled
    assert env_of(throughput)["settings"]["trace"] == 1
    assert (throughput / "profile.csv").read_text().count("\n") == 1 + 4  # base + the 3 default cases
    summary = (suite / "summary.md").read_text()
    for figure in ("| device |", "| best img/s |", "| MFU of that case |", "time to 10%: tiny |",
                   "time to 10%: tiny-clr |", "compile time", "suggested max LR", "## Throughput", "## Time to target",
                   "| step profile | host issues a step in", "Step profiles and top kernels per case"):
        assert figure in summary, figure
    assert bench("report", str(suite)).returncode == 0
    assert (suite / "summary.md").read_text() == summary  # re-rendered from the files alone
    p = bench("compare", str(suite), str(suite))
    assert p.returncode == 0, p.stderr
    assert "tiny-clr" in p.stdout and "torch-fed" in p.stdout


def test_sigterm_then_resume_finishes_the_suite(tmp_path: Path) -> None:
    """SIGTERM while the time-to-target part runs: exit 130, state interrupted; --resume keeps the
    throughput part, resumes the same run folder and runs the range test."""
    config = write_config(tmp_path / "bench.toml", steps=400)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bench", "suite", "--config", str(config), "--device", "cpu", "--quick",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        runs = [p for p in out.glob("*/*/curves.csv")] if out.exists() else []
        if runs:  # the run part has finished its first trial: it is mid-part now
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"the run part never started: {proc.stderr.read() if proc.stderr else ''}")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130, proc.stderr.read() if proc.stderr else ""
    suite = only_folder(out)
    env_json = env_of(suite)
    assert env_json["state"] == "interrupted"
    parts = env_json["parts"]
    assert (parts["throughput"]["state"], parts["run"]["state"], parts["lr-find"]["state"]) == \
        ("complete", "interrupted", "pending")
    throughput_folder, run_folder = parts["throughput"]["folder"], parts["run"]["folder"]
    p = bench("suite", "--resume", str(suite))
    assert p.returncode == 0, p.stderr[-3000:]
    parts = env_of(suite)["parts"]
    assert [parts[n]["state"] for n in ("throughput", "run", "lr-find")] == ["complete"] * 3
    assert parts["throughput"]["folder"] == throughput_folder and parts["run"]["folder"] == run_folder
    trials = (suite / run_folder / "trials.csv").read_text().splitlines()
    assert len(trials) == 1 + 2  # header + both trials of the one quick seed


def test_sigterm_in_the_throughput_part_then_resume_keeps_its_finished_cases(tmp_path: Path) -> None:
    """SIGTERM while the case matrix runs: --resume goes on in the same throughput folder with the
    cases that have no row (a compile-heavy matrix can outlast one 10-minute command), then runs
    the other parts."""
    config = write_config(tmp_path / "bench.toml")
    text = config.read_text().replace("[throughput.cases.default]\n", "[throughput.cases.default]\nsteps = 400\n")
    config.write_text(text)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench", "suite", "--config", str(config), "--device", "cpu", "--quick",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("*/*/throughput.csv")):  # the baseline case has its first repeat; `default` runs
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the throughput part never wrote a row: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130, proc.stderr.read() if proc.stderr else ""
    suite = only_folder(out)
    part = env_of(suite)["parts"]["throughput"]
    assert part["state"] == "interrupted"
    first = (suite / part["folder"] / "throughput.csv").read_text().splitlines()
    assert len(first) >= 2  # header, the baseline case and whichever case the signal cut (timed_out or partial)
    p = bench("suite", "--resume", str(suite))
    assert p.returncode == 0, p.stderr[-3000:]
    parts = env_of(suite)["parts"]
    assert [parts[n]["state"] for n in ("throughput", "run", "lr-find")] == ["complete"] * 3
    assert parts["throughput"]["folder"] == part["folder"]
    rows = (suite / part["folder"] / "throughput.csv").read_text().splitlines()
    assert rows[:len(first)] == first and len(rows) == 1 + 4  # rows kept as they were, the other cases added
