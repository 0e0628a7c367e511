"""`python -m bench throughput` end to end (in process, through bench.cli.main) on tiny cases, and
the regression gate: a run against its own baseline passes, a planted slowdown fails, a baseline
that is not comparable is refused with exit 2 before anything is measured or written."""

import csv
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench import cli
from bench.commands import throughput as bench_throughput
from bench.results import ThroughputRow, read_rows
from bench.commands.throughput import apply_gate, load_baseline
from sc_fast.hardware import probe
from sc_fast.throughput import Measurement, measure

REPO = Path(__file__).resolve().parent.parent
# Copied from SPEC.md ("Results"): the test pins the contract, not bench/results.py.
SPEC_COLUMNS = ["run_id", "case", "device", "pipeline", "precision", "channels_last", "compile", "batch_size",
                "steps", "imgs_per_s", "step_ms_median", "step_ms_p10", "step_ms_p90", "ratio_to_baseline"]

SYNTHETIC_CASES = """
[throughput.cases.base]
batch_size = {batch}
precision = "fp32"
channels_last = false
compile = "off"
pipeline = "synthetic"

[throughput.cases.cl]
batch_size = {batch}
channels_last = true

[throughput.cases.gpu-only]
batch_size = {batch}
compile = "max-autotune"
device = "cuda"
"""


def write_config(path: Path, cases: str, steps: int = 3, warmup: int = 1, repeats: int = 3) -> Path:
    """The repo's bench.toml with its [throughput] part replaced: trials, devices and profiles
    stay the real ones, the cases are tiny."""
    text = (REPO / "bench.toml").read_text()
    head = text[:text.index("\n[throughput]\n")]
    path.write_text(f"{head}\n[throughput]\nsteps = {steps}\nwarmup = {warmup}\nrepeats = {repeats}\n"
                    f"cpu_steps = {steps}\ncpu_warmup = {warmup}\ncpu_repeats = {repeats}\n"
                    f'baseline_case = "base"\n{cases}')
    return path


def throughput(config: Path, out: Path, *flags: str) -> int:
    return cli.main(["throughput", "--config", str(config), "--out", str(out), "--device", "cpu", *flags])


def only_run(out: Path) -> Path:
    (run,) = [d for d in out.iterdir() if d.is_dir()]
    return run


@pytest.fixture(scope="module")
def normal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, run folder) of one normal run at batch 16: the baseline the gate tests use."""
    tmp = tmp_path_factory.mktemp("normal")
    config = write_config(tmp / "bench.toml", SYNTHETIC_CASES.format(batch=16))
    assert throughput(config, tmp / "runs") == 0
    return config, only_run(tmp / "runs")


def test_run_folder_has_spec_files_and_columns(normal: tuple[Path, Path]) -> None:
    _, run = normal
    assert {"env.json", "throughput.csv", "summary.md"} <= {p.name for p in run.iterdir()}
    with open(run / "throughput.csv", newline="") as f:
        header = next(csv.reader(f))
    assert set(SPEC_COLUMNS) <= set(header)
    assert header[:len(SPEC_COLUMNS)] == SPEC_COLUMNS
    env = json.loads((run / "env.json").read_text())
    assert env["kind"] == "throughput" and env["state"] == "complete"
    assert env["settings"] == {"steps": 3, "warmup": 1, "repeats": 3}
    assert env["device_name"].startswith("CPU ")
    assert len(env["config"]["sha256"]) == 64 and "commit" in env["env"]["git"]


def test_rows_measure_every_case_that_fits_the_device(normal: tuple[Path, Path]) -> None:
    _, run = normal
    rows = {r.case: r for r in read_rows(run / "throughput.csv", ThroughputRow)}
    assert list(rows) == ["base", "cl", "gpu-only"]  # the matrix, baseline first
    base, cl, gpu = rows["base"], rows["cl"], rows["gpu-only"]
    assert base.status == cl.status == "ok" and base.ratio_to_baseline == 1.0
    assert (base.channels_last, cl.channels_last) == (False, True)
    native_bf16 = probe(torch.device("cpu")).native_bf16
    assert cl.precision == ("bf16" if native_bf16 else "fp32") and cl.compile == "off"  # [devices.cpu], auto
    assert cl.ratio_to_baseline == pytest.approx(cl.imgs_per_s / base.imgs_per_s)
    for r in (base, cl):
        assert r.step_ms_p10 <= r.step_ms_median <= r.step_ms_p90
        # img/s is a median of per-repeat rates; it must agree with the per-step times
        assert 0.5 < r.imgs_per_s * r.step_ms_median / 1e3 / r.batch_size < 2
        assert r.peak_mem_mib > 50 and r.warmup_s > 0 and r.repeats == 3 and r.steps == 3
    assert gpu.status == "skipped" and "cuda" in gpu.error and gpu.imgs_per_s is None


def test_report_rerenders_a_throughput_run(normal: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, run = normal
    (run / "summary.md").unlink()
    assert cli.main(["report", str(run)]) == 0
    assert "gpu-only" in capsys.readouterr().out
    summary = (run / "summary.md").read_text()
    assert "| base |" in summary and "meant for cuda only" in summary


def test_a_run_compared_with_itself_has_no_regression(normal: tuple[Path, Path]) -> None:
    _, run = normal
    rows = read_rows(run / "throughput.csv", ThroughputRow)
    gated, regressed = apply_gate(rows, load_baseline(run), 0.0)
    assert regressed == []
    assert [r.delta for r in gated if r.status == "ok"] == [0.0, 0.0]


def test_same_measurements_against_the_baseline_exit_0(normal: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI path of the gate with the baseline's own numbers: exit 0 whatever else loads the
    machine (a re-measurement on a shared 2-core machine can be several times slower)."""
    config, base_run = normal
    measured = {r.case: r for r in read_rows(base_run / "throughput.csv", ThroughputRow)}
    monkeypatch.setattr(bench_throughput, "run_case",
                        lambda run_id, case, *_: replace(measured[case.name], run_id=run_id))
    assert throughput(config, tmp_path, "--baseline", str(base_run), "--max-regression", "0.05", "--json") == 0
    captured = capsys.readouterr()  # --json: the JSON alone on stdout, messages on stderr
    result = json.loads(captured.out)
    assert result["regressed"] == [] and result["errored"] == [] and len(result["rows"]) == 3
    assert "no regression beyond 5%" in captured.err and "3 repeats" in captured.err
    rows = {r.case: r for r in read_rows(only_run(tmp_path) / "throughput.csv", ThroughputRow)}
    before = {r.case: r for r in read_rows(base_run / "throughput.csv", ThroughputRow)}
    assert rows["base"].baseline_imgs_per_s == before["base"].imgs_per_s
    assert rows["cl"].delta == 0.0 and rows["cl"].imgs_per_s == before["cl"].imgs_per_s
    assert rows["gpu-only"].delta is None


def test_planted_slowdown_exits_1(normal: tuple[Path, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Batch 1 instead of 16: per-step overhead dominates and img/s collapses."""
    _, base_run = normal
    slow = write_config(tmp_path / "slow.toml", SYNTHETIC_CASES.format(batch=1))
    assert throughput(slow, tmp_path / "runs", "--baseline", str(base_run), "--max-regression", "0.4") == 1
    out = capsys.readouterr().out
    assert "regression:" in out and "batch_size 16 -> 1" in out
    rows = read_rows(only_run(tmp_path / "runs") / "throughput.csv", ThroughputRow)
    assert all(r.delta < -0.4 for r in rows if r.status == "ok")
    assert "REGRESSION" in (only_run(tmp_path / "runs") / "summary.md").read_text()


def refused(config: Path, out: Path, baseline: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    """Runs against ``baseline``, expects exit 2 with one line and no run folder; returns the line."""
    assert throughput(config, out, "--baseline", str(baseline), *flags) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())
    return err


def test_baseline_that_is_not_a_throughput_run_exits_2(normal: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = normal
    (tmp_path / "empty").mkdir()
    assert "no env.json" in refused(config, tmp_path / "o1", tmp_path / "empty", capsys)
    trial_run = tmp_path / "trial-run"
    trial_run.mkdir()
    (trial_run / "env.json").write_text(json.dumps({"kind": "run", "plan": {}}))
    assert "not a throughput run" in refused(config, tmp_path / "o2", trial_run, capsys)


def test_damaged_baseline_exits_2(normal: tuple[Path, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    config, base_run = normal
    copy = shutil.copytree(base_run, tmp_path / "copy")
    (copy / "throughput.csv").write_text("run_id,case\nx,base\n")
    assert "missing columns" in refused(config, tmp_path / "o", copy, capsys)


def test_mismatched_case_set_exits_2(normal: tuple[Path, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    config, base_run = normal
    err = refused(config, tmp_path / "o", base_run, capsys, "--case", "cl")
    assert "case sets differ" in err and "gpu-only" in err


def test_baseline_from_another_device_exits_2(normal: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config, base_run = normal
    copy = shutil.copytree(base_run, tmp_path / "h100")
    env = json.loads((copy / "env.json").read_text())
    env["device_name"] = "NVIDIA H100 80GB HBM3"
    (copy / "env.json").write_text(json.dumps(env))
    assert "NVIDIA H100" in refused(config, tmp_path / "o", copy, capsys)


@pytest.mark.parametrize("flags, words", [
    (["--case", "nope"], "unknown case"),
    (["--max-regression", "1.5"], "--max-regression"),
    (["--repeats", "0"], "--repeats"),
])
def test_bad_flags_exit_2(normal: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          flags: list[str], words: str) -> None:
    config, _ = normal
    assert throughput(config, tmp_path / "o", *flags) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


PIPELINE_CASES = """
[throughput.cases.base]
batch_size = 8
precision = "fp32"
channels_last = false
compile = "off"
pipeline = "synthetic"

[throughput.cases.torch-fed]
batch_size = 8
pipeline = "torch"

[throughput.cases.loader-torch]
batch_size = 64
precision = "fp32"
pipeline = "torch"
model = false
steps = 5

[throughput.cases.loader-dali]
batch_size = 64
precision = "fp32"
pipeline = "dali"
model = false

[throughput.cases.loader-torchvision]
batch_size = 64
precision = "fp32"
pipeline = "torchvision"
model = false

[throughput.cases.too-big]
batch_size = 100000
pipeline = "torch"
model = false
"""


def test_pipeline_cases_and_a_failing_case(tmp_path: Path, cifar: object) -> None:
    """Pipeline-fed and loader-only cases on the real data set; a case that cannot run (batch
    larger than the training set) is recorded as an error, the others go on, and the exit is 1."""
    config = write_config(tmp_path / "bench.toml", PIPELINE_CASES, steps=2, warmup=1, repeats=2)
    assert throughput(config, tmp_path / "runs") == 1
    run = only_run(tmp_path / "runs")
    rows = {r.case: r for r in read_rows(run / "throughput.csv", ThroughputRow)}
    assert rows["too-big"].status == "error" and "exceeds" in rows["too-big"].error
    assert json.loads((run / "env.json").read_text())["state"] == "failed"
    for name in ("torch-fed", "loader-torch", "loader-dali", "loader-torchvision"):
        r = rows[name]
        assert r.status in ("ok", "skipped"), (name, r.error)  # skipped: DALI does not import here
        if r.status == "ok":
            assert r.imgs_per_s > 0 and r.ratio_to_baseline > 0
    assert rows["loader-torch"].status == "ok" and rows["loader-torch"].steps == 5
    assert rows["loader-torch"].model is False and rows["torch-fed"].model is True


def test_measure_times_every_step_after_the_warm_up() -> None:
    calls: list[float] = []

    def work() -> None:  # a step of known length
        calls.append(time.perf_counter())
        time.sleep(0.01)

    m = measure(work, batch_size=8, steps=4, warmup=2, repeats=3, device=torch.device("cpu"))
    assert len(calls) == 2 + 3 * 4 and len(m.step_s) == 12 and len(m.repeat_s) == 3
    assert min(m.step_s) >= 0.0095 and m.warmup_s >= 0.019
    assert m.repeat_s == pytest.approx([sum(m.step_s[i:i + 4]) for i in (0, 4, 8)])
    assert m.imgs_per_s <= 8 / 0.0095 and m.step_ms(10) <= m.step_ms(50) <= m.step_ms(90)


def test_one_slow_repeat_does_not_move_the_median() -> None:
    m = Measurement(batch_size=10, step_s=(0.1,) * 4 + (1.0,) * 4 + (0.1,) * 4, repeat_s=(0.4, 4.0, 0.4),
                    warmup_s=0.0, peak_mem_mib=0.0)
    assert m.imgs_per_s == pytest.approx(100.0)  # 10 images x 4 steps / 0.4 s
    assert m.step_ms(50) == pytest.approx(100.0)
