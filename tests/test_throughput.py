"""`python -m bench throughput` end to end (in process, through bench.cli.main) on tiny cases, and
the regression gate: its verdicts as pure functions of recorded rows and step times (a planted
slowdown is a regression only when significant; without raw step times it falls back to medians),
the CLI path against baselines no re-measurement can match, and a baseline that is not comparable
refused with exit 2 before anything is measured or written.

Nothing here asserts how fast this machine is: timing is checked on recorded numbers and with a
substituted clock."""

import csv
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from rich.console import Console

from bench import cases as bench_cases
from bench import cli
from bench import config as config_mod
from bench.cases import Settings, plan_cases
from bench.gate import Baseline, Gate, apply_gate, check_comparable, gate_line, load_baseline
from bench.config import DeviceSettings
from bench.results import ProfileRow, StepTimeRow, ThroughputRow, read_rows, step_times, write_rows
from helpers import BASE_CASE
from sc_fast import throughput as sc_throughput
from sc_fast.hardware import probe
from sc_fast.throughput import Measurement, measure

REPO = Path(__file__).resolve().parent.parent
# Copied from docs/reference.md ("Results"): the test pins the contract, not bench/results.py.
SPEC_COLUMNS = ["run_id", "case", "device", "pipeline", "precision", "channels_last", "compile", "batch_size",
                "steps", "imgs_per_s", "step_ms_median", "step_ms_p10", "step_ms_p90", "ratio_to_baseline"]

SYNTHETIC_CASES = BASE_CASE + """
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
    assert {"env.json", "throughput.csv", "throughput_steps.csv", "summary.md"} <= {p.name for p in run.iterdir()}
    assert not list(run.glob("profile*")) and not list(run.glob("trace_*"))  # only --trace profiles
    with open(run / "throughput.csv", newline="") as f:
        header = next(csv.reader(f))
    assert set(SPEC_COLUMNS) <= set(header)
    assert header[:len(SPEC_COLUMNS)] == SPEC_COLUMNS
    env = json.loads((run / "env.json").read_text())
    assert env["kind"] == "throughput" and env["state"] == "complete"
    assert env["settings"] == {"steps": 3, "warmup": 1, "repeats": 3, "trace": 0}
    # the model name and the ISA: one "AMD EPYC" covers AVX2 and AVX512-BF16 parts, ~10x apart in bf16
    isa = env["env"]["cpu_isa"]
    assert isa and env["device_name"] == f"CPU {env['env']['cpu']} ({isa})"
    assert len(env["config"]["sha256"]) == 64 and "commit" in env["env"]["git"]
    # how busy the machine was when the run started (a load, never a timing to assert on)
    load = env["env"]["load_avg_1m"]
    assert isinstance(load, float) and load >= 0


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
        assert r.peak_mem_mib > 50 and r.warmup_s > 0 and r.repeats == 3 and r.steps == 3
    assert gpu.status == "skipped" and "cuda" in gpu.error and gpu.imgs_per_s is None


def test_model_cases_have_their_cost_and_the_run_its_ceilings(normal: tuple[Path, Path]) -> None:
    """Every model case: GFLOP per image (ResNet-56: 0.72), the eager byte estimate, TFLOP/s and MFU
    against the ceilings measured in the same run (env.json, summary.md, roofline.png)."""
    _, run = normal
    rows = {r.case: r for r in read_rows(run / "throughput.csv", ThroughputRow)}
    env = json.loads((run / "env.json").read_text())
    measured = env["ceilings"]["measured"]
    assert env["ceilings"]["datasheet"] is None  # no datasheet for a CPU
    assert set(measured["matmul_tflops"]) == {r.precision for r in rows.values() if r.status == "ok"}
    assert measured["bandwidth_gb_s"] > 0 and measured["device_name"] == env["device_name"]
    for r in (rows["base"], rows["cl"]):
        assert r.gflop_per_img == pytest.approx(0.7237, rel=1e-3)
        assert r.mbytes_per_img > 1 and r.flop_per_byte == pytest.approx(r.gflop_per_img * 1e3 / r.mbytes_per_img)
        assert r.tflops == pytest.approx(r.imgs_per_s * r.gflop_per_img / 1e3)
        assert r.mfu == pytest.approx(r.tflops / measured["matmul_tflops"][r.precision])
    assert rows["gpu-only"].gflop_per_img is None
    summary = (run / "summary.md").read_text()
    assert "## Ceilings" in summary and "MFU" in summary and (run / "roofline.png").read_bytes()[:4] == b"\x89PNG"


def test_repeats_are_interleaved_round_robin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each round times one repeat of every case, the order alternating (a b, b a, a b), so a drift
    over the run lands on every case alike; the baseline runs only when --case names it."""
    import bench.cases
    order: list[int] = []
    real = bench.cases.time_steps

    def spy(work: object, steps: int, device: torch.device) -> list[float]:
        order.append(steps)
        return real(work, steps, device)

    monkeypatch.setattr(bench.cases, "time_steps", spy)
    cases = BASE_CASE.format(batch=4) + "\n[throughput.cases.cl]\nbatch_size = 4\nsteps = 2\n"
    config = write_config(tmp_path / "bench.toml", cases, steps=1, warmup=0, repeats=3)
    assert throughput(config, tmp_path / "runs", "--case", "base", "--case", "cl") == 0
    assert order == [1, 2, 2, 1, 1, 2]  # base has 1 step a repeat, cl 2
    order.clear()
    assert throughput(config, tmp_path / "only", "--case", "cl") == 0
    (row,) = read_rows(only_run(tmp_path / "only") / "throughput.csv", ThroughputRow)
    assert row.case == "cl" and row.ratio_to_baseline is None and order == [2, 2, 2]  # no baseline asked for


def test_a_case_failing_in_a_later_round_keeps_its_repeats_and_the_rest_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.cases
    real, calls = bench.cases.time_steps, []

    def flaky(work: object, steps: int, device: torch.device) -> list[float]:
        calls.append(steps)
        if steps == 2 and calls.count(2) == 2:  # cl (2 steps a repeat) fails in the second round
            raise torch.OutOfMemoryError("simulated")
        return real(work, steps, device)

    monkeypatch.setattr(bench.cases, "time_steps", flaky)
    cases = BASE_CASE.format(batch=4) + "\n[throughput.cases.cl]\nbatch_size = 4\nsteps = 2\n"
    config = write_config(tmp_path / "bench.toml", cases, steps=1, warmup=0, repeats=3)
    assert throughput(config, tmp_path / "runs", "--case", "base", "--case", "cl") == 1  # a case errored
    base, cl = read_rows(only_run(tmp_path / "runs") / "throughput.csv", ThroughputRow)
    assert (base.status, base.repeats) == ("ok", 3)
    assert (cl.status, cl.repeats) == ("error", 1) and "OutOfMemoryError" in cl.error and cl.imgs_per_s > 0


def test_raw_step_times_are_kept_and_agree_with_the_row(normal: tuple[Path, Path]) -> None:
    """throughput_steps.csv: every timed step of every measured case; the row's numbers are
    functions of them (recorded numbers only: nothing here depends on the machine's speed)."""
    _, run = normal
    rows = {r.case: r for r in read_rows(run / "throughput.csv", ThroughputRow)}
    steps = step_times(run)
    assert steps is not None and set(steps) == {"base", "cl"}  # the skipped case has none
    for case, ts in steps.items():
        r = rows[case]
        assert [(t.repeat, t.step) for t in ts] == [(i, j) for i in range(3) for j in range(3)]
        per_repeat = [r.batch_size * 3 / sum(t.step_s for t in ts if t.repeat == i) for i in range(3)]
        assert r.imgs_per_s == pytest.approx(statistics.median(per_repeat))
        assert r.step_ms_median == pytest.approx(statistics.median(t.step_s for t in ts) * 1e3)


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
    b = load_baseline(run)
    gated, gate = apply_gate(rows, b, 0.0, b.steps)
    assert gate.raw and gate.regressed == [] and set(gate.verdicts) == {"base", "cl"}
    assert all(c.p_value == 1.0 and c.ratio == 1.0 for c in gate.comparisons.values())
    assert [r.delta for r in gated if r.status == "ok"] == [0.0, 0.0]


# ---- the gate on recorded rows and step times (pure) ---------------------------------------------

def recorded(case: str, step_s: list[list[float]], batch: int = 16) -> tuple[ThroughputRow, list[StepTimeRow]]:
    """A throughput row and its raw steps as a run records them, from made-up step times per repeat."""
    per_repeat = [batch * len(r) / sum(r) for r in step_s]
    flat = [t for r in step_s for t in r]
    row = ThroughputRow(run_id="r", case=case, device="cpu", pipeline="synthetic", precision="fp32",
                        channels_last=False, compile="off", batch_size=batch, steps=len(step_s[0]),
                        imgs_per_s=statistics.median(per_repeat), step_ms_median=statistics.median(flat) * 1e3,
                        step_ms_p10=min(flat) * 1e3, step_ms_p90=max(flat) * 1e3, ratio_to_baseline=None, model=True,
                        warmup=1, repeats=len(step_s), warmup_s=0.1, peak_mem_mib=100.0, status="ok", error="",
                        baseline_imgs_per_s=None, delta=None)
    steps = [StepTimeRow(case, i, j, t) for i, r in enumerate(step_s) for j, t in enumerate(r)]
    return row, steps


def noisy(center: float, n_repeats: int = 3, n_steps: int = 4) -> list[list[float]]:
    """Step times spread +-10% around ``center``, the same pattern every time."""
    wobble = [0.9, 1.05, 0.95, 1.1, 1.0, 0.92, 1.08, 0.97, 1.03, 0.94, 1.06, 1.0]
    return [[center * wobble[(i * n_steps + j) % 12] for j in range(n_steps)] for i in range(n_repeats)]


def gate_of(old: dict[str, list[list[float]]], new: dict[str, list[list[float]]], limit: float,
            raw: bool = True) -> tuple[list[ThroughputRow], Gate, Baseline]:
    b_rec, n_rec = {c: recorded(c, s) for c, s in old.items()}, {c: recorded(c, s) for c, s in new.items()}
    b = Baseline(Path("results/base-run"), {}, {c: r for c, (r, _) in b_rec.items()},
                 {c: st for c, (_, st) in b_rec.items()} if raw else None)
    rows, gate = apply_gate([r for r, _ in n_rec.values()], b, limit, {c: st for c, (_, st) in n_rec.items()})
    return rows, gate, b


def test_gate_a_significant_planted_slowdown_is_a_regression() -> None:
    """30% slower in every step (12 vs 12 steps): beyond the 5% limit and significant."""
    rows, gate, b = gate_of({"a": noisy(0.1), "b": noisy(0.1)}, {"a": noisy(0.13), "b": noisy(0.1)}, 0.05)
    assert gate.raw and gate.verdicts == {"a": "regression", "b": "no change"} and gate.regressed == ["a"]
    c = gate.comparisons["a"]
    assert c.ratio == pytest.approx(1.3) and c.slowdown == pytest.approx(1 - 1 / 1.3) and c.p_value < 0.001
    assert gate.comparisons["b"].p_value == 1.0
    line = gate_line(rows, gate, b, 0.05)
    assert line.startswith("[red]regression: 1 of 2 cases") and "a -23.1% (p " in line
    assert "Mann-Whitney U on per-step times" in line and "12 steps here vs 12 in the baseline" in line


def test_gate_a_slowdown_within_the_noise_is_not_a_regression() -> None:
    """Steps spread +-30% on both sides, medians 9% apart: the median comparison alone would call
    it a regression; the steps overlap, so it is not significant and not a regression."""
    w = [0.7, 1.2, 0.9, 1.3, 1.0, 0.8, 1.25, 0.95, 1.1, 0.75, 1.15, 1.05]
    old = [[0.1 * w[i * 4 + j] for j in range(4)] for i in range(3)]
    new = [[0.109 * w[(i * 4 + j + 6) % 12] for j in range(4)] for i in range(3)]
    rows, gate, b = gate_of({"a": old}, {"a": new}, 0.05)
    assert rows[0].delta < -0.05  # the median comparison alone would call it a regression
    assert gate.verdicts == {"a": "no change"} and gate.comparisons["a"].p_value > 0.05
    line = gate_line(rows, gate, b, 0.05)
    assert line.startswith("[green]no regression beyond 5% in 1 cases") and "but not significant: a " in line


def test_gate_without_raw_samples_falls_back_to_medians_and_says_so() -> None:
    rows, gate, b = gate_of({"a": noisy(0.1)}, {"a": noisy(0.13)}, 0.05, raw=False)
    assert not gate.raw and gate.regressed == ["a"] and gate.comparisons == {}
    line = gate_line(rows, gate, b, 0.05)
    assert "medians only, no significance test: base-run kept no raw step times" in line
    assert "medians of 3 repeats here, of 3 in the baseline" in line
    rows, gate, b = gate_of({"a": noisy(0.1)}, {"a": noisy(0.102)}, 0.05, raw=False)
    assert gate.regressed == [] and gate.verdicts == {"a": "no change"}


def test_gate_a_faster_run_is_an_improvement_not_a_regression() -> None:
    _, gate, _ = gate_of({"a": noisy(0.1)}, {"a": noisy(0.05)}, 0.0)
    assert gate.verdicts == {"a": "improvement"} and gate.regressed == []


def test_changed_case_settings_are_noted(normal: tuple[Path, Path]) -> None:
    config, base_run = normal
    b = load_baseline(base_run)
    b = replace(b, rows={**b.rows, "cl": replace(b.rows["cl"], batch_size=1)})
    cases = plan_cases(config_mod.load(config), DeviceSettings(**b.env["defaults"]), None,  # as the run resolved them
                       Settings(steps=3, warmup=1, repeats=3))
    out = io.StringIO()
    check_comparable(b, b.env["device_name"], cases, Console(file=out, width=200))
    assert "case cl differs from the baseline's: batch_size 1 -> 16" in out.getvalue()


# ---- the gate through the CLI, against baselines no re-measurement can match ---------------------

def doctored(base_run: Path, dest: Path, speed: float, raw: bool = True) -> Path:
    """A copy of ``base_run`` claiming ``speed`` times its img/s (step times / speed): at 1e6 or
    1e-6 no machine, loaded or idle, can measure the same."""
    copy = Path(shutil.copytree(base_run, dest))
    rows = read_rows(copy / "throughput.csv", ThroughputRow)
    fast = [replace(r, imgs_per_s=r.imgs_per_s * speed, step_ms_median=r.step_ms_median / speed,
                    step_ms_p10=r.step_ms_p10 / speed, step_ms_p90=r.step_ms_p90 / speed)
            if r.status == "ok" else r for r in rows]
    write_rows(copy / "throughput.csv", fast, ThroughputRow)
    steps = [replace(t, step_s=t.step_s / speed) for ts in (step_times(copy) or {}).values() for t in ts]
    write_rows(copy / "throughput_steps.csv", steps, StepTimeRow)
    if not raw:
        (copy / "throughput_steps.csv").unlink()
    return copy


def test_a_slower_run_than_the_baseline_exits_1(normal: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    config, base_run = normal
    fast = doctored(base_run, tmp_path / "fast-baseline", 1e6)
    assert throughput(config, tmp_path / "runs", "--baseline", str(fast), "--max-regression", "0.4", "--json") == 1
    captured = capsys.readouterr()  # --json: the JSON alone on stdout, messages on stderr
    assert json.loads(captured.out)["regressed"] == ["base", "cl"]
    err = " ".join(captured.err.split())  # the console wraps long lines
    assert "regression: 2 of 2 cases" in err and "Mann-Whitney U on per-step times" in err
    run = only_run(tmp_path / "runs")
    env = json.loads((run / "env.json").read_text())["baseline"]
    assert env["raw_step_times"] and env["verdicts"]["cl"]["verdict"] == "regression"
    assert env["verdicts"]["cl"]["p_value"] < 0.001  # 9 vs 9 steps, fully separated
    rows = {r.case: r for r in read_rows(run / "throughput.csv", ThroughputRow)}
    assert rows["cl"].delta < -0.99 and rows["gpu-only"].delta is None
    assert "REGRESSION" in (run / "summary.md").read_text()


def test_a_faster_run_against_medians_only_exits_0(normal: tuple[Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config, base_run = normal
    slow = doctored(base_run, tmp_path / "slow-baseline", 1e-6, raw=False)
    assert throughput(config, tmp_path / "runs", "--baseline", str(slow), "--max-regression", "0.05") == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "no regression beyond 5% in 2 cases" in out and "medians only, no significance test" in out
    summary = (only_run(tmp_path / "runs") / "summary.md").read_text()
    assert "REGRESSION" not in summary and "medians only" in summary


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


PIPELINE_CASES = BASE_CASE.format(batch=8) + """
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


def test_measure_times_every_step_after_the_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A substituted clock: each call to ``work`` advances it by a known amount."""
    clock = [100.0]
    monkeypatch.setattr(sc_throughput.time, "perf_counter", lambda: clock[0])
    lengths = iter([1.0, 2.0] + [0.1, 0.2, 0.3, 0.4] * 2 + [0.4, 0.4, 0.4, 0.4])  # warm-up, then 3 repeats

    def work() -> None:
        clock[0] += next(lengths)

    m = measure(work, batch_size=8, steps=4, warmup=2, repeats=3, device=torch.device("cpu"))
    assert m.warmup_s == pytest.approx(3.0)
    assert m.step_s == pytest.approx((0.1, 0.2, 0.3, 0.4) * 2 + (0.4,) * 4)
    assert m.repeat_s == pytest.approx((1.0, 1.0, 1.6))
    assert m.imgs_per_s == pytest.approx(32.0)  # median of 32, 32, 20 img/s
    assert m.step_ms(50) == pytest.approx(350.0) and m.step_ms(10) == pytest.approx(110.0)


def test_measurement_arithmetic() -> None:
    m = Measurement(batch_size=8, step_s=(0.1, 0.2, 0.3, 0.2, 0.2, 0.2), repeat_s=(0.6, 0.6), warmup_s=0.0,
                    peak_mem_mib=0.0)
    assert m.imgs_per_s == pytest.approx(40.0)  # 8 images x 3 steps / 0.6 s
    assert m.step_ms(50) == pytest.approx(200.0)
    assert m.step_ms(10) == pytest.approx(150.0) and m.step_ms(90) == pytest.approx(250.0)


def test_one_slow_repeat_does_not_move_the_median() -> None:
    m = Measurement(batch_size=10, step_s=(0.1,) * 4 + (1.0,) * 4 + (0.1,) * 4, repeat_s=(0.4, 4.0, 0.4),
                    warmup_s=0.0, peak_mem_mib=0.0)
    assert m.imgs_per_s == pytest.approx(100.0)  # 10 images x 4 steps / 0.4 s
    assert m.step_ms(50) == pytest.approx(100.0)


# ---- --resume: an interrupted case matrix goes on in its folder ----------------------------------

RESUME_CASES = BASE_CASE + """
[throughput.cases.slow]
batch_size = {batch}
channels_last = true
steps = 400

[throughput.cases.cl]
batch_size = {batch}
channels_last = true
"""


def test_sigterm_then_resume_measures_only_the_missing_cases(tmp_path: Path) -> None:
    """SIGTERM during the second case: exit 130, the first case's row kept, the cut-off case's row
    says timed_out, state interrupted. --resume measures the case without a row into the same folder,
    keeps the first two rows as they were (a timed-out case is not retried: it would be cut off again)
    and completes; the profiles of --trace continue alike."""
    config = write_config(tmp_path / "bench.toml", RESUME_CASES.format(batch=4), steps=2, warmup=1, repeats=2)
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "bench", "throughput", "--config", str(config), "--device", "cpu",
           "--out", str(out), "--trace", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("*/throughput.csv")):  # the base case has its first repeat
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the first case never finished: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the 400-step case
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130, proc.stderr.read() if proc.stderr else ""
    run = only_run(out)
    first = read_rows(run / "throughput.csv", ThroughputRow)
    assert [(r.case, r.status) for r in first] == [("base", "ok"), ("slow", "timed_out")]
    assert "cut off by a signal" in first[1].error and first[1].imgs_per_s is None
    assert json.loads((run / "env.json").read_text())["state"] == "interrupted"

    assert cli.main(["throughput", "--resume", str(run)]) == 0
    rows = read_rows(run / "throughput.csv", ThroughputRow)
    assert [r.case for r in rows] == ["base", "slow", "cl"] and only_run(out) == run
    assert rows[0].imgs_per_s == first[0].imgs_per_s  # kept, not measured again
    assert rows[2].ratio_to_baseline == pytest.approx(rows[2].imgs_per_s / rows[0].imgs_per_s)
    steps = step_times(run)
    # the cut came in the first round: base kept its one repeat, cl (resumed) measured both of its own
    assert rows[1] == first[1] and [len(steps.get(c, [])) for c in ("base", "slow", "cl")] == [2, 0, 2 * 2]
    assert (rows[0].repeats, rows[2].repeats) == (1, 2)
    assert [p.case for p in read_rows(run / "profile.csv", ProfileRow)] == ["cl"]  # base was cut before the traces
    assert json.loads((run / "env.json").read_text())["state"] == "complete"
    assert cli.main(["throughput", "--resume", str(run)]) == 0  # nothing left: finishes again, measures nothing
    assert read_rows(run / "throughput.csv", ThroughputRow) == rows


TF32_CASES = BASE_CASE + """
[throughput.cases.t32]
batch_size = {batch}
precision = "tf32"
channels_last = false
"""


def test_traces_run_in_their_case_s_float32_math_and_are_kept_as_each_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restores_fp32_precision: None) -> None:
    """--trace after three alternating rounds (base t32, t32 base, base t32): the last repeat left the
    tf32 case's math in force, yet the IEEE baseline is traced in IEEE math. A signal while the
    second case is traced (a time limit) ends the run with 130 and keeps the first case's profile."""
    matmul, seen = torch.backends.cuda.matmul, []

    def profile_steps(*args: object, **kw: object) -> object:
        seen.append(matmul.fp32_precision)
        if len(seen) == 2:
            raise KeyboardInterrupt("signal 15")
        return real(*args, **kw)

    real = bench_cases.profile_steps
    monkeypatch.setattr(bench_cases, "profile_steps", profile_steps)
    config = write_config(tmp_path / "bench.toml", TF32_CASES.format(batch=4), steps=1, warmup=1, repeats=3)
    assert throughput(config, tmp_path / "runs", "--trace", "1") == 130
    assert seen == ["ieee", "tf32"]
    run = only_run(tmp_path / "runs")
    assert [p.case for p in read_rows(run / "profile.csv", ProfileRow)] == ["base"]


def test_resume_refuses_plan_flags_other_folders_and_other_devices(normal: tuple[Path, Path], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The plan comes from the folder: flags that would change it, a folder of another kind and a
    run from another device are refused with exit 2, nothing written."""
    _, run = normal
    before = (run / "throughput.csv").read_text()
    assert cli.main(["throughput", "--resume", str(run), "--case", "cl", "--steps", "3"]) == 2
    assert "drop --case, --steps" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "env.json").write_text(json.dumps({"kind": "run"}))
    assert cli.main(["throughput", "--resume", str(other)]) == 2
    assert "not a throughput run" in capsys.readouterr().err
    moved = shutil.copytree(run, tmp_path / "moved")
    env = json.loads((moved / "env.json").read_text())
    (moved / "env.json").write_text(json.dumps({**env, "device_name": "NVIDIA H100 80GB HBM3"}))
    assert cli.main(["throughput", "--resume", str(moved)]) == 2
    assert "same device" in capsys.readouterr().err
    assert (run / "throughput.csv").read_text() == before
