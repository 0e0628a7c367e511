"""Bad input (issue 5): every bad config, flag or config file exits 2 with exactly one line on
stderr naming the file and the key, no traceback, and no run folder.

Each case mutates a small, valid copy of bench.toml (tiny CPU trials added) and runs
``bench.cli.main`` in-process: config errors are found before any data or model work, so the whole
file runs in seconds. The unmodified copy is checked to be valid, so every failure below is caused
by its mutation alone.
"""

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import cli
from bench import config as config_mod
from helpers import assert_one_line, bench_dict, dump_toml

REPO = Path(__file__).resolve().parent.parent
BENCH_TOML = REPO / "bench.toml"
Mutation = Callable[[dict[str, Any]], None]


# ---- a tiny valid config -----------------------------------------------------------------------

def tiny_dict() -> dict[str, Any]:
    """bench.toml plus tiny CPU trials (seconds each) and a `tiny` profile."""
    cfg = bench_dict(root="")
    small = {"batch_size": 8, "eval_batch_size": 50, "train_images": 64, "eval_images": 50}
    cfg["trials"].update({
        "tiny": {"schedule": "onecycle", "steps": 4, "eval_every": 2, "min_lr": 0.01, "max_lr": 0.1, **small},
        "tiny-boom": {"schedule": "constant", "steps": 4, "eval_every": 2, "lr": 1e6, **small},
        "tiny-multi": {"schedule": "multistep", "steps": 6, "eval_every": 2, "lr": 0.05, "milestones": [2, 4],
                       **small},
        "tiny-clr": {"schedule": "clr", "steps": 4, "eval_every": 2, "min_lr": 0.01, "max_lr": 0.1,
                     "stepsize": 2, **small},
    })
    cfg["profiles"]["tiny"] = {"trials": ["tiny"], "seeds": 1, "target": 0.99, "stop_at_target": False,
                               "device": "cpu"}
    return cfg


def write_config(path: Path, mutate: Mutation | None = None) -> Path:
    cfg = tiny_dict()
    if mutate:
        mutate(cfg)
    path.write_text(dump_toml(cfg))
    return path


# ---- running the CLI in-process ------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _restore_sigterm() -> Iterator[None]:
    """cli.main installs a SIGTERM handler; put pytest's back."""
    old = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, old)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def assert_usage_error(capsys: pytest.CaptureFixture[str], out: Path, argv: list[Any], *needles: str) -> str:
    rc, err = run_cli(capsys, *argv)
    assert rc == 2, err
    line = assert_one_line(err, *needles)
    assert not out.exists(), f"{out} was created: {list(out.rglob('*'))}"
    return line


# ---- the base config is valid --------------------------------------------------------------------

def test_tiny_config_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "bench.toml")
    cfg = config_mod.load(path)
    assert {"tiny", "tiny-boom", "tiny-multi", "tiny-clr"} <= set(cfg.trials)
    for name in ("tiny", "tiny-multi", "tiny-clr"):
        rc, err = run_cli(capsys, "schedule", name, "--config", path, "--csv")
        assert rc == 0 and err == ""


# ---- config mutations: (id, mutation, strings the one line must contain) ---------------------------

def _set(*keys: str, value: Any) -> Mutation:
    def mutate(cfg: dict[str, Any]) -> None:
        table = cfg
        for k in keys[:-1]:
            table = table.setdefault(k, {})
        table[keys[-1]] = value
    return mutate


def _delete(*keys: str) -> Mutation:
    def mutate(cfg: dict[str, Any]) -> None:
        table = cfg
        for k in keys[:-1]:
            table = table[k]
        del table[keys[-1]]
    return mutate


UNKNOWN_KEYS = [
    ("top", _set("bogus", value=1), "'bogus'"),
    ("defaults", _set("defaults", "bogus", value=1), "defaults.bogus"),
    ("trial", _set("trials", "tiny", "bogus", value=1), "trials.tiny.bogus"),
    ("trial-other-schedule-key", _set("trials", "tiny", "stepsize", value=2), "trials.tiny.stepsize"),
    ("profile", _set("profiles", "tiny", "bogus", value=1), "profiles.tiny.bogus"),
    ("profile-override", _set("profiles", "tiny", "override", value={"bogus": 1}), "profiles.tiny.override.bogus"),
    ("profile-override-schedule-key", _set("profiles", "tiny", "override", value={"max_lr": 1.0}),
     "profiles.tiny.override.max_lr"),
    ("profiles-auto", _set("profiles", "auto", "bogus", value="cpu"), "profiles.auto.bogus"),
    ("devices-kind", _set("devices", "tpu", value={"precision": "fp32", "channels_last": True, "compile": "off"}),
     "devices.tpu"),
    ("devices-key", _set("devices", "cpu", "bogus", value=1), "devices.cpu.bogus"),
    ("data", _set("data", "bogus", value=1), "data.bogus"),
    ("throughput", _set("throughput", "bogus", value=1), "throughput.bogus"),
    ("throughput-case", _set("throughput", "cases", "baseline", "bogus", value=1),
     "throughput.cases.baseline.bogus"),
    ("lr_find", _set("lr_find", "bogus", value=1), "lr_find.bogus"),
]

WRONG_TYPES = [
    ("str-for-int", _set("defaults", "batch_size", value="512"), "defaults.batch_size"),
    ("bool-for-int", _set("trials", "tiny", "steps", value=True), "trials.tiny.steps"),
    ("float-for-list", _set("trials", "tiny-multi", "milestones", value=1.5), "trials.tiny-multi.milestones"),
    ("floats-in-list", _set("trials", "tiny-multi", "milestones", value=[2.0, 4.0]), "trials.tiny-multi.milestones"),
    ("str-for-float", _set("trials", "tiny", "max_lr", value="0.1"), "trials.tiny.max_lr"),
    ("nan-lr", _set("trials", "tiny-boom", "lr", value=float("nan")), "trials.tiny-boom.lr"),
    ("float-for-int-seeds", _set("profiles", "tiny", "seeds", value=1.5), "profiles.tiny.seeds"),
    ("str-for-list", _set("profiles", "tiny", "trials", value="tiny"), "profiles.tiny.trials"),
    ("str-for-target", _set("profiles", "tiny", "target", value="0.5"), "profiles.tiny.target"),
    ("int-for-bool", _set("devices", "cpu", "channels_last", value=1), "devices.cpu.channels_last"),
    ("str-for-bool", _set("data", "download", value="yes"), "data.download"),
    ("float-for-int-lr-find", _set("lr_find", "steps", value=10.0), "lr_find.steps"),
    ("str-for-int-case", _set("throughput", "cases", "baseline", "batch_size", value="big"),
     "throughput.cases.baseline.batch_size"),
    ("override-type", _set("profiles", "tiny", "override", value={"steps": "4"}), "profiles.tiny.override.steps"),
    ("trial-not-a-table", _set("trials", "tiny-clr", value=3), "trials.tiny-clr"),
]

BAD_VALUES = [
    ("zero-max-lr", _set("trials", "tiny", "max_lr", value=0.0), "trials.tiny.max_lr"),
    ("negative-min-lr", _set("trials", "tiny", "min_lr", value=-0.1), "trials.tiny.min_lr"),
    ("zero-lr", _set("trials", "tiny-boom", "lr", value=0), "trials.tiny-boom.lr"),
    ("negative-final-lr", _set("trials", "tiny", "final_lr", value=-1e-4), "trials.tiny.final_lr"),
    ("max-lr-below-min", _set("trials", "tiny", "max_lr", value=0.005), "trials.tiny"),
    ("zero-batch", _set("trials", "tiny", "batch_size", value=0), "trials.tiny.batch_size"),
    ("negative-eval-batch", _set("defaults", "eval_batch_size", value=-8), "defaults.eval_batch_size"),
    ("negative-checkpoint-every", _set("defaults", "checkpoint_every", value=-1), "defaults.checkpoint_every"),
    ("zero-steps", _set("trials", "tiny", "steps", value=0), "trials.tiny.steps"),
    ("negative-steps", _set("trials", "tiny", "steps", value=-3), "trials.tiny.steps"),
    ("zero-stepsize", _set("trials", "tiny-clr", "stepsize", value=0), "trials.tiny-clr.stepsize"),
    ("negative-stepsize", _set("trials", "tiny-clr", "stepsize", value=-2), "trials.tiny-clr.stepsize"),
    ("zero-gamma", _set("trials", "tiny-multi", "gamma", value=0.0), "trials.tiny-multi.gamma"),
    ("momentum-one", _set("trials", "tiny-clr", "momentum", value=1.0), "trials.tiny-clr.momentum"),
    ("zero-eval-every", _set("trials", "tiny", "eval_every", value=0), "trials.tiny.eval_every"),
    ("eval-every-past-steps", _set("trials", "tiny", "eval_every", value=100), "trials.tiny.eval_every"),
    ("unsorted-milestones", _set("trials", "tiny-multi", "milestones", value=[4, 2]), "trials.tiny-multi"),
    ("duplicate-milestones", _set("trials", "tiny-multi", "milestones", value=[2, 2]), "trials.tiny-multi"),
    ("milestone-past-steps", _set("trials", "tiny-multi", "milestones", value=[2, 6]), "trials.tiny-multi.milestones"),
    ("zero-milestone", _set("trials", "tiny-multi", "milestones", value=[0, 2]), "trials.tiny-multi"),
    ("negative-milestone", _set("trials", "tiny-multi", "milestones", value=[-1, 2]), "trials.tiny-multi"),
    ("target-zero", _set("profiles", "tiny", "target", value=0.0), "profiles.tiny.target"),
    ("target-above-one", _set("profiles", "tiny", "target", value=1.5), "profiles.tiny.target"),
    ("target-negative", _set("profiles", "tiny", "target", value=-0.5), "profiles.tiny.target"),
    ("zero-seeds", _set("profiles", "tiny", "seeds", value=0), "profiles.tiny.seeds"),
    ("override-zero-steps", _set("profiles", "tiny", "override", value={"steps": 0}), "profiles.tiny.override.steps"),
    ("override-zero-batch", _set("profiles", "tiny", "override", value={"batch_size": 0}),
     "profiles.tiny.override.batch_size"),
    ("bad-precision", _set("devices", "cpu", "precision", value="fp8"), "devices.cpu.precision"),
    ("bad-compile", _set("devices", "cpu", "compile", value="fast"), "devices.cpu.compile"),
    ("bad-data-pipeline", _set("data", "pipeline", value="cudnn"), "data.pipeline"),
    ("bad-augment", _set("trials", "tiny", "augment", value="mixup"), "trials.tiny.augment"),
    ("negative-train-images", _set("trials", "tiny", "train_images", value=-1), "trials.tiny.train_images"),
    ("unknown-schedule-kind", _set("trials", "tiny", "schedule", value="cosine"), "trials.tiny.schedule"),
    ("missing-schedule-kind", _delete("trials", "tiny", "schedule"), "trials.tiny.schedule"),
    ("missing-schedule-arg", _delete("trials", "tiny", "max_lr"), "trials.tiny.max_lr"),
    ("missing-stepsize", _delete("trials", "tiny-clr", "stepsize"), "trials.tiny-clr.stepsize"),
    ("profile-unknown-trial", _set("profiles", "tiny", "trials", value=["nope"]), "profiles.tiny.trials"),
    ("auto-unknown-profile", _set("profiles", "auto", "cpu", value="nope"), "profiles.auto.cpu"),
    ("lr-find-unknown-trial", _set("lr_find", "trial", value="nope"), "lr_find.trial"),
    ("lr-find-zero-lr", _set("lr_find", "start_lr", value=0.0), "lr_find.start_lr"),
    ("throughput-unknown-case", _set("throughput", "default_cases", value=["nope"]), "throughput.default_cases"),
    ("throughput-zero-steps", _set("throughput", "steps", value=0), "throughput.steps"),
    ("case-zero-batch", _set("throughput", "cases", "baseline", "batch_size", value=0),
     "throughput.cases.baseline.batch_size"),
]


@pytest.mark.parametrize("mutate,key",
                         [pytest.param(m, k, id=i) for i, m, k in UNKNOWN_KEYS + WRONG_TYPES + BAD_VALUES])
def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                mutate: Mutation, key: str) -> None:
    path = write_config(tmp_path / "bench.toml", mutate)
    out = tmp_path / "out"
    assert_usage_error(capsys, out, ["run", "--config", path, "--profile", "tiny", "--out", out], str(path), key)


def test_every_command_reads_the_config_strictly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`schedule` fails on the same bad key as `run` (the config is checked whole, whatever reads it)."""
    path = write_config(tmp_path / "bench.toml", _set("lr_find", "bogus", value=1))
    rc, err = run_cli(capsys, "schedule", "tiny", "--config", path)
    assert rc == 2
    assert_one_line(err, str(path), "lr_find.bogus")


# ---- config files that cannot be read --------------------------------------------------------------

def test_toml_syntax_error_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "bench.toml")
    path.write_text(path.read_text() + "\n[trials.broken\nsteps = 3\n")
    out = tmp_path / "out"
    line = assert_usage_error(capsys, out, ["run", "--config", path, "--out", out], str(path), "TOML")
    assert "line" in line


def test_empty_config_names_missing_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every setting has a default, but trials and profiles are the config's own: none, one line."""
    path = tmp_path / "bench.toml"
    path.write_text("")
    out = tmp_path / "out"
    assert_usage_error(capsys, out, ["run", "--config", path, "--out", out], str(path), "profiles.auto")


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out = tmp_path / "nope.toml", tmp_path / "out"
    assert_usage_error(capsys, out, ["run", "--config", path, "--out", out], str(path))


def test_config_path_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out = tmp_path / "configs", tmp_path / "out"
    path.mkdir()
    assert_usage_error(capsys, out, ["run", "--config", path, "--out", out], str(path))


def test_config_path_through_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config the OS cannot open (ENOTDIR: a path through a regular file; refused to root too, unlike a
    chmod 0 file): exit 2 naming it, nothing written."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    path, out = blocker / "bench.toml", tmp_path / "out"
    line = assert_usage_error(capsys, out, ["run", "--config", path, "--out", out], str(path))
    assert "cannot read config" in line


# ---- bad flags ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["0", "1.01", "-0.5", "nan", "inf"])
def test_target_outside_unit_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str) -> None:
    path, out = write_config(tmp_path / "bench.toml"), tmp_path / "out"
    assert_usage_error(capsys, out, ["run", "--config", path, "--profile", "tiny", "--target", target,
                                     "--out", out], "--target")


def test_unknown_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out = write_config(tmp_path / "bench.toml"), tmp_path / "out"
    assert_usage_error(capsys, out, ["run", "--config", path, "--profile", "nope", "--out", out],
                       str(path), "'nope'")


def test_unknown_trial_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out = write_config(tmp_path / "bench.toml"), tmp_path / "out"
    assert_usage_error(capsys, out, ["run", "--config", path, "--profile", "tiny", "--trial", "tiny",
                                     "--trial", "nope", "--out", out], str(path), "'nope'")


@pytest.mark.parametrize("flag", ["--seeds=0", "--seeds=-2"])
def test_non_positive_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str) -> None:
    path, out = write_config(tmp_path / "bench.toml"), tmp_path / "out"
    assert_usage_error(capsys, out, ["run", "--config", path, "--profile", "tiny", flag, "--out", out], "--seeds")


def test_schedule_of_unknown_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "bench.toml")
    rc, err = run_cli(capsys, "schedule", "nope", "--config", path)
    assert rc == 2
    assert_one_line(err, str(path), "'nope'")


def test_unknown_throughput_case(tmp_path: Path) -> None:
    """A real `python -m bench throughput` subprocess: exit 2, one line, nothing written."""
    path, out = write_config(tmp_path / "bench.toml"), tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "bench", "throughput", "--config", str(path), "--case", "nope",
                        "--device", "cpu", "--out", str(out)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert_one_line(p.stderr, "--case", "nope")
    assert not out.exists()


# ---- run --set ---------------------------------------------------------------------------------------

def test_set_overrides_a_trial_and_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out = write_config(tmp_path / "bench.toml"), tmp_path / "out"
    rc, err = run_cli(capsys, "run", "--config", path, "--profile", "tiny", "--out", out,
                      "--set", "steps=6", "--set", "max_lr=0.2", "--set", "eval_every=3",
                      "--set", "fine_eval_from=4", "--set", "fine_eval_every=1")
    assert rc == 0, err
    (run_dir,) = out.iterdir()
    env = json.loads((run_dir / "env.json").read_text())
    assert env["overrides"] == {"steps": 6, "max_lr": 0.2, "eval_every": 3, "fine_eval_from": 4, "fine_eval_every": 1}
    steps = [line.split(",")[3] for line in (run_dir / "curves.csv").read_text().splitlines()[1:]]
    assert steps == ["3", "4", "5", "6"]  # every 3 steps, then every step from step 4
    (trial,) = env["plan"]["trials"]
    assert trial["steps"] == 6 and dict(trial["schedule_args"])["max_lr"] == 0.2
    assert "`max_lr=0.2`" in (run_dir / "summary.md").read_text()


def test_seed_runs_the_seeds_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out = write_config(tmp_path / "bench.toml"), tmp_path / "out"
    rc, err = run_cli(capsys, "run", "--config", path, "--profile", "tiny", "--out", out, "--seed", "3")
    assert rc == 0, err
    (run_dir,) = out.iterdir()
    assert json.loads((run_dir / "env.json").read_text())["plan"]["seeds"] == [3]
    assert [line.split(",")[2] for line in (run_dir / "curves.csv").read_text().splitlines()[1:]] == ["3"] * 2
    assert_usage_error(capsys, tmp_path / "out2", ["run", "--config", path, "--profile", "tiny", "--out",
                                                   tmp_path / "out2", "--seed", "1", "--seeds", "2"], "--seed")


@pytest.mark.parametrize("flag, needle", [("nope=1", "--set nope"), ("max_lr=-1", "--set max_lr=-1"),
                                          ("steps=1.5", "--set steps=1.5"), ("max_lr", "--set"),
                                          ("fine_eval_every=0", "--set fine_eval_every=0"),
                                          ("max_lr=0.001", "max_lr")])
def test_bad_set_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, needle: str) -> None:
    path, out = write_config(tmp_path / "bench.toml"), tmp_path / "out"
    assert_usage_error(capsys, out, ["run", "--config", path, "--profile", "tiny", "--out", out, "--set", flag],
                       needle)
