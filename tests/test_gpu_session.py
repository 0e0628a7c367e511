"""tools/gpu-session.sh, the two-call plan of a lent GPU, run here without a GPU: a step whose time
budget runs out mid-command still hands back, in $OUT, everything that finished."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def session(step: str, out: Path, tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # its python3 is this interpreter
    full = {**os.environ, "PATH": path, "OUT": str(out), "OMP_NUM_THREADS": "1", "HOME": str(tmp),
            "XDG_CACHE_HOME": str(tmp / "cache"), "SESSION_TMP": str(tmp / "session"), **env}
    return subprocess.run(["bash", "tools/gpu-session.sh", step], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=600)


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as t:
        return {m.name.removeprefix("./"): t.extractfile(m).read() for m in t.getmembers() if m.isfile()}


def test_a_budget_cut_mid_case_returns_what_finished(tmp_path: Path) -> None:
    """`first` with a 60 s budget and a stand-in case far longer than that: the machine check is
    in $OUT, and so is the throughput folder, interrupted, its cut-off case marked timed_out."""
    out = tmp_path / "out"
    out.mkdir()
    p = session("first", out, tmp_path, GPU_SESSION_BUDGET_S="60", GPU_SESSION_CPU_STEPS="100000")
    assert p.returncode == 124, p.stdout[-3000:] + p.stderr[-3000:]  # timeout's code: the budget ran out
    files = sorted(f.name for f in out.iterdir())
    assert "results.tgz" in files and len(files) <= 8
    assert all(f.stat().st_size < 16 * 2**20 for f in out.iterdir())
    got = members(out / "results.tgz")
    assert "torch" in got["check.txt"].decode()  # the machine check finished before the cut
    (env_name,) = [n for n in got if n.endswith("env.json")]
    assert json.loads(got[env_name])["state"] == "interrupted"
    rows = got[env_name.replace("env.json", "throughput.csv")].decode().splitlines()
    header = rows[0].split(",")
    assert [dict(zip(header, r.split(",")))["status"] for r in rows[1:]] == ["timed_out"]
    assert "timed_out" in p.stdout.splitlines()[-1]  # the short table comes last


def test_unknown_step_is_refused(tmp_path: Path) -> None:
    p = session("nope", tmp_path, tmp_path)
    assert p.returncode == 2 and "usage" in p.stderr


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="prints the device calls for this clone's commit")
def test_commands_prints_both_calls_with_this_commit(tmp_path: Path) -> None:
    p = session("commands", tmp_path, tmp_path)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert p.returncode == 0
    assert [ln.split(":")[0] for ln in p.stdout.splitlines() if ln.startswith("call")] == ["call 1", "call 2"]
    assert p.stdout.count(f"SC_FAST_GIT_COMMIT={commit}") == 2 and ".stage/data1" in p.stdout
