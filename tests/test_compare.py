"""`python -m bench compare`: run folders side by side from their result files alone. The folders
are written here with bench.results' own writers (as a run on another GPU would have), so the
numbers, and so the ratios, are known exactly."""

import json
from pathlib import Path

import pytest

from bench import cli
from bench.results import CurveRow, ThroughputRow, TrialRow, atomic_write_json, write_rows


def throughput_run(path: Path, device_name: str, rates: dict[str, float | None], batch_size: int = 512,
                   peak_tflops: float | None = None) -> Path:
    """A throughput folder with one row per case; None: the case was skipped. ``peak_tflops``: the
    run recorded TFLOP/s and MFU (0.4 GFLOP/img against this ceiling); without it, a run from
    before they were recorded."""
    path.mkdir(parents=True)

    def achieved(rate: float | None) -> dict[str, float | None]:
        if peak_tflops is None or rate is None:
            return {}
        return {"gflop_per_img": 0.4, "tflops": rate * 0.4e-3, "mfu": rate * 0.4e-3 / peak_tflops}
    rows = [ThroughputRow(
        run_id=path.name, case=case, device="cuda:0", pipeline="synthetic", precision="bf16", channels_last=True,
        compile="off", batch_size=batch_size, steps=20, imgs_per_s=rate, step_ms_median=512e3 / rate if rate else None,
        step_ms_p10=None, step_ms_p90=None, ratio_to_baseline=None, model=True, warmup=5, repeats=3,
        warmup_s=1.0, peak_mem_mib=900.0, status="ok" if rate else "skipped", error="" if rate else "meant for cuda",
        baseline_imgs_per_s=None, delta=None, **achieved(rate)) for case, rate in rates.items()]
    write_rows(path / "throughput.csv", rows, ThroughputRow)
    atomic_write_json(path / "env.json", {
        "kind": "throughput", "device_name": device_name, "settings": {"steps": 20, "warmup": 5, "repeats": 3},
        "env": {"gpu": device_name, "cpu": "x", "torch": "2.11", "git": {"commit": "abcdef1234567", "dirty": False}}})
    return path


def trial_run(path: Path, gpu: str, times: dict[str, list[float | None]], target: float = 0.85) -> Path:
    """A `bench run` folder: per trial, one row per seed; None: the seed did not reach the target."""
    path.mkdir(parents=True)
    rows = [TrialRow(
        run_id=path.name, trial=trial, schedule="onecycle", seed=seed, device="cuda:0", pipeline="dali",
        precision="bf16", channels_last=True, compile="default", batch_size=512, max_steps=970, target_acc=target,
        status="reached" if t else "not_reached", time_to_target_s=t, steps_to_target=900 if t else None,
        epochs_to_target=9.3 if t else None, wall_to_target_s=t * 1.2 if t else None, best_test_acc=0.9,
        final_test_acc=0.9, train_time_s=t or 100.0, compile_time_s=20.0, eval_time_s=3.0,
        train_imgs_per_s=5000.0, steps_run=970, error="")
        for trial, ts in times.items() for seed, t in enumerate(ts)]
    write_rows(path / "trials.csv", rows, TrialRow)
    atomic_write_json(path / "env.json", {
        "kind": "run", "state": "complete",
        "plan": {"profile": "full", "target": 0.85, "pipeline": "dali", "device": "cuda:0",
                 "settings": {"precision": "bf16"}},
        "env": {"gpu": gpu, "cpu": "x", "torch": "2.11", "git": {"commit": "1234567abcdef", "dirty": True}}})
    return path


def compare(capsys: pytest.CaptureFixture[str], *dirs: Path) -> tuple[int, str, str]:
    code = cli.main(["compare", *map(str, dirs)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def row_of(out: str, name: str) -> list[str]:
    """The cells of the table line that starts with ``name``."""
    line = next(ln for ln in out.splitlines() if ln.strip("│ ").startswith(name + " "))
    return [c.strip() for c in line.strip().strip("│").split("│")]


def test_throughput_runs_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = throughput_run(tmp_path / "a100", "NVIDIA A100-SXM4-80GB", {"baseline": 10000.0, "default": 20000.0})
    b = throughput_run(tmp_path / "h100", "NVIDIA H100 80GB HBM3",
                       {"baseline": 25000.0, "default": 50000.0, "compile-default": None})
    code, out, _ = compare(capsys, a, b)
    assert code == 0
    assert "NVIDIA A100-SXM4-80GB" in out and "NVIDIA H100 80GB HBM3" in out and "abcdef1234" in out
    assert row_of(out, "baseline") == ["baseline", "10,000", "25,000", "2.50", ""]
    assert row_of(out, "default") == ["default", "20,000", "50,000", "2.50", ""]
    assert row_of(out, "compile-default") == ["compile-default", "-", "-", "-", ""]  # skipped: no number


def test_achieved_tflops_and_mfu_beside_img_s(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = throughput_run(tmp_path / "old", "NVIDIA H100 80GB HBM3", {"baseline": 10000.0, "default": 20000.0})
    new = throughput_run(tmp_path / "new", "NVIDIA H100 80GB HBM3", {"baseline": 12000.0, "default": 30000.0},
                         peak_tflops=400.0)
    code, out, _ = compare(capsys, old, new)
    assert code == 0
    header = next(ln for ln in out.splitlines() if ln.startswith("┃ case "))
    assert [c.strip() for c in header.strip("┃").split("┃")] == [
        "case", "img/s #1", "img/s #2", "#2 vs #1", "TFLOP/s #1", "TFLOP/s #2", "MFU #1", "MFU #2", "note"]
    # 30,000 img/s x 0.4 GFLOP/img = 12 TFLOP/s, 3% of 400; the older run recorded neither: '-'
    assert row_of(out, "default") == ["default", "20,000", "30,000", "1.50", "-", "12.000", "-", "3.0%", ""]
    assert row_of(out, "baseline") == ["baseline", "10,000", "12,000", "1.20", "-", "4.800", "-", "1.2%", ""]

    # no run recorded them: the columns are not there
    code, out, _ = compare(capsys, old, old)
    assert code == 0 and "TFLOP/s" not in out and "MFU" not in out


def test_a_case_measured_with_other_settings_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = throughput_run(tmp_path / "a", "GPU", {"baseline": 1000.0}, batch_size=512)
    b = throughput_run(tmp_path / "b", "GPU", {"baseline": 100.0}, batch_size=16)
    code, out, _ = compare(capsys, a, b)
    assert code == 0 and row_of(out, "baseline") == ["baseline", "1,000", "100.0", "0.10", "setup differs"]


def test_trial_runs_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = trial_run(tmp_path / "a", "NVIDIA A100", {"1cycle": [100.0, 120.0, None], "clr": [300.0]})
    b = trial_run(tmp_path / "b", "NVIDIA H100", {"1cycle": [50.0, 55.0, 60.0], "clr": [None]})
    code, out, _ = compare(capsys, a, b)
    assert code == 0
    # reach rate, median time and steps per run; the time ratio against the first run
    assert row_of(out, "1cycle") == ["1cycle", "2/3", "110.0", "900", "3/3", "55.0", "900", "0.50", ""]
    assert row_of(out, "clr") == ["clr", "1/1", "300.0", "900", "0/1", "-", "-", "-", ""]

    c = trial_run(tmp_path / "c", "NVIDIA H100", {"1cycle": [30.0]}, target=0.5)
    code, out, _ = compare(capsys, a, c)
    assert code == 0 and row_of(out, "1cycle")[-1] == "target differs"


def test_many_runs_get_a_row_per_trial_and_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # seeds of one schedule per folder, as CPU sessions make them: side by side they would be 3
    # columns per run, so beyond three runs each (trial, run) is a row and absent pairs have none
    runs = [trial_run(tmp_path / "a", "CPU", {"1cycle": [100.0, 120.0]}),
            trial_run(tmp_path / "b", "CPU", {"clr": [300.0]}),
            trial_run(tmp_path / "c", "CPU", {"1cycle": [50.0]}),
            trial_run(tmp_path / "d", "CPU", {"clr": [None]})]
    code, out, _ = compare(capsys, *runs)
    assert code == 0 and "median s #2" not in out
    cells = ([c.strip() for c in ln.strip().strip("│").split("│")] for ln in out.splitlines())
    assert [r for r in cells if r[0] in ("1cycle", "clr")] == [
        ["1cycle", "#1", "2/2", "110.0", "900", "-", ""],
        ["1cycle", "#3", "1/1", "50.0", "900", "0.45", ""],
        ["clr", "#2", "1/1", "300.0", "900", "-", ""],
        ["clr", "#4", "0/1", "-", "-", "-", ""]]


def with_curve(run: Path, trial: str, accs: list[float]) -> Path:
    write_rows(run / "curves.csv", [CurveRow(
        run_id=run.name, trial=trial, seed=0, step=100 * i, epoch=i / 2, lr=0.1, momentum=0.9, train_loss=1.0,
        test_loss=1.0, test_acc=a, train_time_s=10.0 * i, wall_time_s=11.0 * i) for i, a in enumerate(accs, 1)],
        CurveRow)
    return run


def test_plot_draws_schedules_from_separate_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = with_curve(trial_run(tmp_path / "a", "CPU", {"1cycle": [100.0]}), "1cycle", [0.5, 0.86])
    b = with_curve(trial_run(tmp_path / "b", "CPU", {"multistep": [None]}), "multistep", [0.4, 0.6, 0.7])
    code = cli.main(["compare", str(a), str(b), "--plot", str(tmp_path / "acc.png")])
    assert code == 0 and (tmp_path / "acc.png").read_bytes()[:4] == b"\x89PNG"
    assert "plot:" in capsys.readouterr().out

    # a missing folder is made; a "folder" that is a file is a usage error before anything is printed
    assert cli.main(["compare", str(a), "--plot", str(tmp_path / "new" / "acc.png")]) == 0
    assert (tmp_path / "new" / "acc.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    (tmp_path / "file").write_text("not a folder")
    code, out, err = compare(capsys, a, "--plot", tmp_path / "file" / "acc.png")
    assert code == 2 and "--plot folder" in err and out == ""

    t = throughput_run(tmp_path / "t", "GPU", {"baseline": 1000.0})
    code, _, err = compare(capsys, t, "--plot", tmp_path / "t.png")
    assert code == 2 and "--plot" in err and not (tmp_path / "t.png").exists()


def test_a_cpu_is_named_with_its_isa_whether_or_not_the_run_recorded_a_device_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = trial_run(tmp_path / "r", "", {"1cycle": [100.0]})
    env = json.loads((run / "env.json").read_text())
    env["plan"]["device"] = "cpu"
    env["env"] = {**env["env"], "gpu": None, "cpu": "AMD EPYC", "cpu_isa": "AVX512-BF16"}
    atomic_write_json(run / "env.json", env)  # `bench run` does not record device_name: it is worked out
    tp = throughput_run(tmp_path / "t", "CPU AMD EPYC (AVX512-BF16)", {"baseline": 300.0})
    code, out, _ = compare(capsys, run, tp)
    assert code == 0 and row_of(out, "#1")[3] == row_of(out, "#2")[3] == "CPU AMD EPYC (AVX512-BF16)"


def test_mixed_kinds_get_a_table_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = throughput_run(tmp_path / "t", "GPU", {"baseline": 1000.0})
    r = trial_run(tmp_path / "r", "GPU", {"1cycle": [100.0]})
    code, out, _ = compare(capsys, t, r)
    assert code == 0 and "median s #2" in out and "img/s #1" in out


def test_bad_folders_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = throughput_run(tmp_path / "good", "GPU", {"baseline": 1000.0})
    (tmp_path / "empty").mkdir()
    code, out, err = compare(capsys, good, tmp_path / "empty")
    assert code == 2 and "no env.json" in err and out == ""  # checked before anything is printed

    damaged = throughput_run(tmp_path / "damaged", "GPU", {"baseline": 1000.0})
    (damaged / "throughput.csv").write_text("run_id,case,imgs_per_s\nx,baseline,12\n")
    code, _, err = compare(capsys, good, damaged)
    assert code == 2 and "missing columns" in err

    other = tmp_path / "lr"
    other.mkdir()
    (other / "env.json").write_text(json.dumps({"kind": "lr_find"}))
    code, _, err = compare(capsys, other)
    assert code == 2 and "'lr_find'" in err and len(err.strip().splitlines()) == 1
