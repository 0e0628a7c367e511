"""Data parallelism under torchrun, on CPU with gloo and 2 processes (what CI can run): the ranks'
slices of a global batch, an uneven split, a 2-rank run end to end, and an interrupted 2-rank run
that resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.build import check_ranks
from bench.cases import Settings, plan_cases
from bench.common import UsageError
from bench.config import load
from helpers import BASE_CASE, bench_dict, dump_toml
from sc_fast.data import Cifar10
from sc_fast.distributed import World
from sc_fast.pipeline import PipelineSpec, make_pipeline

REPO = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
SMALL = {"batch_size": 16, "eval_batch_size": 50, "train_images": 128, "eval_images": 100}


@pytest.mark.parametrize("kind", ["torch", "dali"])
def test_rank_slices_are_disjoint_and_make_the_single_process_batch(cifar: Cifar10, kind: str) -> None:
    spec = PipelineSpec(batch_size=64, eval_batch_size=30, train_images=256, eval_images=90, seed=3)
    whole = list(make_pipeline(kind, cifar, spec, CPU).train_batches(1))
    parts = [list(make_pipeline(kind, cifar, PipelineSpec(**{**spec.__dict__, "rank": r, "world_size": 2}), CPU)
                  .train_batches(1)) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == len(whole) == 4  # steps per epoch follow the global batch
    for step, (x, y) in enumerate(whole):
        (x0, y0), (x1, y1) = parts[0][step], parts[1][step]
        assert len(y0) == len(y1) == 32
        torch.testing.assert_close(torch.cat([x0, x1]), x, rtol=0, atol=0)  # same images, same augmentation
        assert torch.equal(torch.cat([y0, y1]), y)
    shards = [torch.cat([y for _, y in make_pipeline(kind, cifar, PipelineSpec(
        **{**spec.__dict__, "rank": r, "world_size": 2}), CPU).eval_batches()]) for r in (0, 1)]
    full = torch.cat([y for _, y in make_pipeline(kind, cifar, spec, CPU).eval_batches()])
    assert torch.equal(torch.cat(shards), full)  # the test set, each image once


def test_what_a_torchrun_job_refuses_is_one_check_for_run_and_throughput() -> None:
    three = World(rank=0, size=3, local_rank=0, nodes=1, backend="gloo")
    two = World(rank=0, size=2, local_rank=0, nodes=1, backend="gloo")
    with pytest.raises(UsageError, match="trial '1cycle': batch_size 256 does not split evenly over 3 ranks"):
        check_ranks(three, [("trial '1cycle'", 256, "off")])
    check_ranks(two, [("trial '1cycle'", 256, "off")])
    with pytest.raises(UsageError, match="case 'cuda-graph': compile 'cuda-graph' is single-process"):
        check_ranks(two, [("case 'cuda-graph'", 512, "cuda-graph")])
    check_ranks(World.single(), [("case 'cuda-graph'", 511, "cuda-graph")])  # one process: nothing to split
    # the throughput matrix skips such a case under torchrun with the same reason instead of refusing the run
    cfg = load()
    graph = next(c for c in plan_cases(cfg, cfg.devices["cuda"], ["cuda-graph"], Settings(20, 5, 3))
                 if c.name == "cuda-graph")
    assert "single-process" in (graph.skip_reason(torch.device("cuda"), 2) or "")
    assert graph.skip_reason(torch.device("cuda"), 1) is None
    with pytest.raises(ValueError, match="does not split evenly"):
        PipelineSpec(batch_size=10, world_size=3)


@pytest.mark.parametrize(("argv", "code"), [(["schedule", "1cycle", "--steps", "3"], 0),
                                            (["compare", "no-such-folder"], 2)])
def test_the_cli_destroys_the_process_group_on_its_way_out(argv: list[str], code: int,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Under torchrun a command runs in a process group (a one-rank gloo group stands in for it):
    the CLI destroys it when the command ends, also when it fails (left to the interpreter's exit,
    NCCL warns that it was never destroyed and may leak its communicators)."""
    import torch.distributed as dist

    from bench import cli
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        assert cli.main(argv) == code
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert cli.main(argv) == code  # and without a process group there is nothing to destroy


def write_config(path: Path, steps: int) -> Path:
    cfg = bench_dict(warmup_steps=1, root="")
    cfg["trials"]["tiny"] = {"schedule": "onecycle", "steps": steps, "eval_every": 4, "min_lr": 0.01,
                             "max_lr": 0.1, **SMALL}
    cfg["trials"]["tiny-multi"] = {"schedule": "multistep", "steps": steps, "eval_every": 4, "lr": 0.05,
                                   "milestones": [2], **SMALL}
    cfg["profiles"]["tiny"] = {"trials": ["tiny", "tiny-multi"], "seeds": 2, "target": 0.99,
                               "stop_at_target": False}
    path.write_text(dump_toml(cfg))
    return path


def torchrun(*args: str) -> list[str]:
    # --standalone: a rendezvous on a free local port, so parallel test runs do not collide
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "bench", *args]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def rows_of(run_dir: Path) -> list[list[str]]:
    lines = (run_dir / "trials.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [[dict(zip(header, line.split(",")))[k] for k in ("trial", "seed", "world_size", "status")]
            for line in lines[1:]]


def test_two_ranks_end_to_end(tmp_path: Path) -> None:
    config, out = write_config(tmp_path / "bench.toml", steps=8), tmp_path / "out"
    p = subprocess.run(torchrun("run", "--config", str(config), "--profile", "tiny", "--device", "cpu",
                                "--out", str(out)), cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    (run_dir,) = out.iterdir()  # one folder: rank 0 alone writes
    assert rows_of(run_dir) == [["tiny", "0", "2", "not_reached"], ["tiny-multi", "0", "2", "not_reached"],  # seed
                                ["tiny", "1", "2", "not_reached"], ["tiny-multi", "1", "2", "not_reached"]]  # by seed
    world = json.loads((run_dir / "env.json").read_text())["world"]
    assert world["world_size"] == 2 and world["backend"] == "gloo" and len(world["ranks"]) == 2
    assert p.stdout.count("run folder:") == 1  # rank 0 alone prints


def test_interrupted_two_rank_run_resumes(tmp_path: Path) -> None:
    config, out = write_config(tmp_path / "bench.toml", steps=60), tmp_path / "out"
    proc = subprocess.Popen(torchrun("run", "--config", str(config), "--profile", "tiny", "--device", "cpu",
                                     "--out", str(out)), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.glob("*/trials.csv")):  # the first trial has its row
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"no trial finished: {proc.stderr.read() if proc.stderr else ''}")
    os.killpg(proc.pid, signal.SIGTERM)  # Ctrl-C or a scheduler's SIGTERM reaches every process
    proc.wait(timeout=120)
    (run_dir,) = out.iterdir()
    assert json.loads((run_dir / "env.json").read_text())["state"] == "interrupted"
    done = rows_of(run_dir)
    assert 1 <= len(done) < 4
    p = subprocess.run(torchrun("run", "--resume", str(run_dir)), cwd=REPO, env=env(), capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = rows_of(run_dir)
    assert rows[:len(done)] == done and len(rows) == 4
    assert sorted((r[0], r[1]) for r in rows) == [("tiny", "0"), ("tiny", "1"), ("tiny-multi", "0"),
                                                  ("tiny-multi", "1")]
    assert all(r[2] == "2" for r in rows)


THROUGHPUT_CASES = """
[throughput]
cpu_steps = 2
cpu_warmup = 1
cpu_repeats = 2
baseline_case = "base"
""" + BASE_CASE.format(batch=8) + """
[throughput.cases.torch-fed]
batch_size = 8
precision = "fp32"
pipeline = "torch"
"""


def test_throughput_under_torchrun_and_scaling_against_one_process(tmp_path: Path) -> None:
    text = (REPO / "bench.toml").read_text()
    config = tmp_path / "bench.toml"
    config.write_text(text[:text.index("\n[throughput]\n")] + THROUGHPUT_CASES)
    one = subprocess.run([sys.executable, "-m", "bench", "throughput", "--config", str(config), "--device", "cpu",
                          "--out", str(tmp_path / "one")], cwd=REPO, env=env(), capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    (base_run,) = (tmp_path / "one").iterdir()
    two = subprocess.run(torchrun("throughput", "--config", str(config), "--device", "cpu", "--out",
                                  str(tmp_path / "two"), "--baseline", str(base_run)),
                         cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    (run_dir,) = (tmp_path / "two").iterdir()  # rank 0 alone writes
    lines = (run_dir / "throughput.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert [r["case"] for r in rows] == ["base", "torch-fed"]
    for r in rows:
        assert r["status"] == "ok" and r["world_size"] == "2" and r["batch_size"] == "8"
        assert float(r["imgs_per_s_per_device"]) == pytest.approx(float(r["imgs_per_s"]) / 2)
        assert float(r["scaling_efficiency"]) > 0  # its value depends on the machine: only that it is there
    assert "scaling efficiency" in two.stdout
    assert json.loads((run_dir / "env.json").read_text())["world"]["world_size"] == 2
