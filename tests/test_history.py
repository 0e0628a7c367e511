"""`python -m bench history`: the committed throughput runs drawn (they predate raw step times: the
bands fall back to p10-p90 step times), and on made-up run folders: commits pooled and ordered,
changes beyond noise marked only where the per-repeat samples show them, one device at a time."""

import json
from pathlib import Path

import pytest

from bench import cli
from bench.commands.history import find_runs, history_points, pick_device
from bench.common import UsageError
from bench.results import StepTimeRow, ThroughputRow, write_rows

REPO = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


def test_history_of_the_committed_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the first committed CPU runs, named before device names carried the ISA ("CPU AMD EPYC", exactly)
    plot = tmp_path / "history.png"
    assert cli.main(["history", str(REPO / "results"), "--device", "CPU AMD EPYC", "--plot", str(plot)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "throughput history on CPU AMD EPYC:" in out and "baseline" in out and "p10-p90 steps" in out
    assert "4299cdf1c5+dirty" in out  # results/20261124T060548Z-cpu
    assert plot.read_bytes()[:8] == PNG
    # without --device: the newest committed run's device, and the others named
    assert cli.main(["history", str(REPO / "results")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(other devices: " in out and "4299cdf1c5" not in out


def fake_run(root: Path, run_id: str, commit: str, per_repeat_s: list[float] | None, device: str = "CPU X",
             batch: int = 10, steps: int = 4, achieved: tuple[float, float] | None = None) -> None:
    """A throughput run folder with one case; ``per_repeat_s``: seconds per step of each repeat
    (written as raw step times), or None for a run from before raw step times were kept;
    ``achieved``: the (TFLOP/s, MFU) the row recorded, None for a run from before rows had them."""
    d = root / run_id
    d.mkdir(parents=True)
    (d / "env.json").write_text(json.dumps({"kind": "throughput", "device_name": device,
                                            "env": {"git": {"commit": commit, "dirty": False}}}))
    secs = per_repeat_s or [0.1]
    rates = sorted(batch / s for s in secs)
    row = ThroughputRow(run_id=run_id, case="base", device="cpu", pipeline="synthetic", precision="fp32",
                        channels_last=False, compile="off", batch_size=batch, steps=steps,
                        imgs_per_s=rates[len(rates) // 2], step_ms_median=1e3 * batch / rates[len(rates) // 2],
                        step_ms_p10=80.0, step_ms_p90=125.0, ratio_to_baseline=1.0, model=True, warmup=1,
                        repeats=len(secs), warmup_s=0.1, peak_mem_mib=1.0, status="ok", error="",
                        baseline_imgs_per_s=None, delta=None, tflops=achieved[0] if achieved else None,
                        mfu=achieved[1] if achieved else None)
    write_rows(d / "throughput.csv", [row], ThroughputRow)
    if per_repeat_s is not None:
        write_rows(d / "throughput_steps.csv", [StepTimeRow("base", i, j, s) for i, s in enumerate(per_repeat_s)
                                                for j in range(steps)], StepTimeRow)


# Commits git does not know: every point is dated by its run's time.
OLD, SAME, SLOWER, LEGACY = "a" * 40, "b" * 40, "c" * 40, "d" * 40
STEADY = [0.100, 0.102, 0.098, 0.101, 0.099, 0.1005]


def history_dir(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    fake_run(root, "20260101T000000Z-cpu", LEGACY, None)  # no raw samples
    fake_run(root, "20260102T000000Z-cpu", OLD, STEADY)
    fake_run(root / "nested", "20260103T000000Z-cpu", SAME, [s * 1.005 for s in STEADY])
    fake_run(root, "20260104T000000Z-cpu", SLOWER, [s * 1.3 for s in STEADY])
    fake_run(root, "20260105T000000Z-cpu", SLOWER, [s * 1.31 for s in STEADY])  # same commit: pooled
    fake_run(root, "20251231T000000Z-cpu", OLD, STEADY, device="NVIDIA H100 80GB HBM3")  # another device
    (root / "not-a-run").mkdir()
    (root / "damaged").mkdir()
    (root / "damaged" / "env.json").write_text("{")
    return root


def test_points_are_ordered_pooled_and_changes_marked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console
    runs = find_runs(history_dir(tmp_path), Console())
    assert "passed over" in capsys.readouterr().out  # the damaged folder, with a note
    device = pick_device(runs, None)
    assert device == "CPU X"  # the newest run's
    points = history_points([r for r in runs if r.device_name == device], {}, None)
    assert [p.commit for p in points] == [c[:10] for c in (LEGACY, OLD, SAME, SLOWER)]
    assert [p.changed for p in points] == [False, False, False, True]
    assert [p.runs for p in points] == [1, 1, 1, 2] and len(points[3].samples) == 12
    assert points[3].imgs_per_s == pytest.approx(10 / 0.1 / 1.305, rel=0.01)
    legacy, old = points[0], points[1]
    assert legacy.band_from == "p10-p90 steps" and (legacy.band_low, legacy.band_high) == (80.0, 125.0)
    assert old.band_from == "repeats" and old.band_low < old.imgs_per_s < old.band_high
    assert all(p.dated_by == "run" for p in points)


def test_tflops_and_mfu_where_the_runs_recorded_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = history_dir(tmp_path)
    assert cli.main(["history", str(root)]) == 0
    out = capsys.readouterr().out
    assert "TFLOP/s" not in out and "MFU" not in out  # no run recorded them: no columns
    newer = "e" * 40
    fake_run(root, "20260106T000000.250Z-1a2b-cpu", newer, STEADY, achieved=(0.125, 0.25))
    fake_run(root, "20260106T000000.750Z-3c4d-cpu", newer, STEADY, achieved=(0.135, 0.35))  # pooled: medians
    assert cli.main(["history", str(root)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(("┃ case", "│ base"))]
    cells = [[c.strip() for c in ln.strip("┃│").replace("┃", "│").split("│")] for ln in lines]
    header = cells[0]
    assert header[-3:] == ["TFLOP/s", "MFU", "change"]
    by_commit = {row[header.index("commit")]: row for row in cells[1:]}
    assert by_commit[newer[:10]][header.index("TFLOP/s")] == "0.130"
    assert by_commit[newer[:10]][header.index("MFU")] == "30.0%"
    assert by_commit[newer[:10]][header.index("runs")] == "2"
    assert [by_commit[c[:10]][header.index("MFU")] for c in (LEGACY, OLD, SLOWER)] == ["-", "-", "-"]  # older runs


def test_device_selection(tmp_path: Path) -> None:
    from rich.console import Console
    runs = find_runs(history_dir(tmp_path), Console())
    assert pick_device(runs, "h100") == "NVIDIA H100 80GB HBM3"
    assert pick_device(runs, "cpu x") == "CPU X"
    with pytest.raises(UsageError, match="matches none"):
        pick_device(runs, "A100")


def test_history_command_on_made_up_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = history_dir(tmp_path)
    assert cli.main(["history", str(root), "--case", "base", "--plot", str(tmp_path / "h.png")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "BEYOND NOISE" in out and "(other devices: NVIDIA H100 80GB HBM3)" in out
    assert (tmp_path / "h.png").read_bytes()[:8] == PNG
    assert cli.main(["history", str(root), "--device", "H100"]) == 0
    assert "throughput history on NVIDIA H100" in " ".join(capsys.readouterr().out.split())
    assert cli.main(["history", str(root), "--case", "nope"]) == 2
    assert "--case nope" in capsys.readouterr().err
    assert cli.main(["history", str(tmp_path / "missing")]) == 2
