"""Report helpers that are pure functions of rows: the per-step schedule lines in curves.png, the
formats of summary.md's numbers, the target and crossings on the accuracy panels."""

import json
from dataclasses import asdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench import cli
from bench.config import TrialSpec
from bench.report import (accuracy_figure, crossing, curves_figure, frame, markdown, median_curve, plan_schedules,
                          plot_curves, schedule_lines, trial_summary)
from bench.results import CurveRow, TrialRow, atomic_write_json, read_rows, write_rows
from sc_fast.schedules import OneCycle

PNG = b"\x89PNG\r\n\x1a\n"
SPEC = TrialSpec(name="oc", schedule="onecycle", schedule_args=(("min_lr", 0.1), ("max_lr", 1.0)), steps=40,
                 batch_size=8, eval_batch_size=8, eval_every=10, weight_decay=5e-4, nesterov=False,
                 label_smoothing=0.0, bn_momentum=0.1, augment="crop_flip", train_images=0, eval_images=0)


def _curves() -> pd.DataFrame:
    # evaluation points only, as curves.csv holds them: steps 10..40, 2 s per 10 steps
    steps = np.array([10, 20, 30, 40])
    return pd.DataFrame({"trial": "oc", "seed": 0, "step": steps, "train_time_s": steps / 5.0,
                         "lr": 0.0, "momentum": 0.0, "train_loss": 1.0, "test_acc": 0.5})


def test_schedule_lines_are_per_step_and_follow_the_schedule() -> None:
    schedule = OneCycle(min_lr=0.1, max_lr=1.0, total_steps=40)
    lines = schedule_lines(_curves(), schedule)
    steps, secs, lrs = lines["lr"]
    assert list(steps) == list(range(41))
    assert lrs[18] == pytest.approx(schedule.lr(18))  # the peak, between evaluation points
    assert lines["momentum"][2][18] == pytest.approx(schedule.momentum(18))
    # seconds are interpolated between evaluations, from (step 0, 0 s)
    assert secs[0] == 0.0 and secs[10] == pytest.approx(2.0) and secs[15] == pytest.approx(3.0)


def test_plan_schedules_rebuild_the_trials_from_env_json() -> None:
    env = json.loads(json.dumps({"plan": {"trials": [asdict(SPEC)]}}))  # the round trip env.json makes
    assert plan_schedules(env) == {"oc": SPEC.build_schedule()}
    assert plan_schedules({"plan": {"trials": [{"name": "broken"}]}}) == {}
    assert plan_schedules({}) == {}


def test_plot_curves_with_and_without_schedules(tmp_path: Path) -> None:
    for name, schedules in (("dense.png", {"oc": SPEC.build_schedule()}), ("coarse.png", None)):
        plot_curves(_curves(), tmp_path / name, schedules)
        assert (tmp_path / name).read_bytes()[:8] == PNG


# ---- what a user reads first: summary.md's numbers and the accuracy panels of curves.png ----------

def _trial(trial: str, seed: int, steps: int | None, time_s: float | None, best: float) -> TrialRow:
    return TrialRow(
        run_id="r", trial=trial, schedule="onecycle", seed=seed, device="cpu", pipeline="torch", precision="fp32",
        channels_last=True, compile="off", batch_size=256, max_steps=1200, target_acc=0.5,
        status="reached" if steps else "not_reached", time_to_target_s=time_s, steps_to_target=steps,
        epochs_to_target=steps / 195 if steps else None, wall_to_target_s=time_s and time_s + 54.3026,
        best_test_acc=best, final_test_acc=best, train_time_s=486.6683, compile_time_s=22.6565,
        eval_time_s=54.3009, train_imgs_per_s=157.8077, steps_run=1200, error="")


def _curve(trial: str, seed: int, accs: list[float]) -> list[CurveRow]:
    # evaluations every 300 steps, 486.6683 s of training per 300 steps
    return [CurveRow(run_id="r", trial=trial, seed=seed, step=300 * i, epoch=300 * i / 195, lr=0.1, momentum=0.9,
                     train_loss=1.0, test_loss=1.0, test_acc=a, train_time_s=486.6683 * i, wall_time_s=541.0 * i)
            for i, a in enumerate(accs, 1)]


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    """A finished `bench run` folder written with bench.results' writers: "oc" reached 50% at its
    first evaluation (step 300), "ms" never did (its empty cells make the steps column float)."""
    run = tmp_path / "20261124T082157Z-cpu"
    run.mkdir()
    write_rows(run / "trials.csv", [_trial("oc", 0, 300, 486.6683, 0.5601), _trial("ms", 0, None, None, 0.2743)],
               TrialRow)
    write_rows(run / "curves.csv", _curve("oc", 0, [0.5012, 0.5601]) + _curve("ms", 0, [0.19, 0.2743]), CurveRow)
    atomic_write_json(run / "env.json", {"kind": "run", "state": "complete", "env": {"cpu": "X"},
                                         "plan": {"profile": "cpu", "target": 0.5, "pipeline": "torch",
                                                  "settings": {"precision": "fp32"}}})
    return run


def _table_rows(summary: str, heading: str = "") -> list[dict[str, str]]:
    """The first Markdown table after ``heading``, as one dict per row."""
    lines = summary[summary.index(heading):].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    table = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        table.append([c.strip() for c in ln.strip().strip("|").split("|")])
    return [dict(zip(table[0], row, strict=True)) for row in table[2:]]


def test_summary_md_shows_counts_as_integers_seconds_to_a_tenth_and_accuracies_in_percent(
        run_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", str(run_folder)]) == 0
    summary = (run_folder / "summary.md").read_text()
    assert summary.startswith("# 20261124T082157Z-cpu: profile cpu on X (torch pipeline, fp32), target 50%")
    oc, ms = _table_rows(summary, "## Time to target")
    assert (oc["steps_to_target"], oc["time_to_target_s"], oc["target_acc"], oc["best_test_acc"]) == (
        "300", "486.7", "50.00%", "56.01%")
    assert (oc["epochs_to_target"], oc["train_imgs_per_s"], oc["compile_time_s"]) == ("1.54", "157.8", "22.7")
    # not reached: empty cells, never "nan"
    assert (ms["steps_to_target"], ms["time_to_target_s"], ms["best_test_acc"]) == ("-", "-", "27.43%")
    oc_row, ms_row = _table_rows(summary, "## Trials")
    assert (oc_row["seed"], oc_row["batch_size"], oc_row["max_steps"], oc_row["steps_to_target"]) == (
        "0", "256", "1,200", "300")
    assert (oc_row["wall_to_target_s"], oc_row["final_test_acc"], ms_row["steps_to_target"]) == ("541.0", "56.01%", "-")
    assert "nan" not in summary.lower() and "300.0" not in summary and "0.5601" not in summary
    # the console table reads the same
    out = capsys.readouterr().out
    assert "│ oc    │     1/1 │                     486.7 │          300 │   56.01% │ 157.8 │" in out


def test_a_median_between_two_steps_shows_its_half(tmp_path: Path) -> None:
    rows = frame([_trial("oc", 0, 300, 480.0, 0.56), _trial("oc", 1, 301, 490.0, 0.57)], TrialRow)
    (oc,) = _table_rows(markdown(trial_summary(rows)))
    assert (oc["steps_to_target"], oc["time_to_target_s"]) == ("300.5", "485.0")


def _accuracy_panels(fig: Figure) -> tuple[Axes, Axes]:
    (by_step, by_time) = (ax for ax in fig.axes if ax.get_ylabel() == "test accuracy")
    return by_step, by_time


def _target_lines(ax: Axes) -> list[float]:
    """y of every line across the whole panel (axhline: x from 0 to 1 in axes coordinates)."""
    return [float(ln.get_ydata()[0]) for ln in ax.get_lines()
            if list(ln.get_xdata()) == [0, 1] and len(set(ln.get_ydata())) == 1]


def _markers(ax: Axes) -> list[tuple[float, float, str]]:
    return [(float(ln.get_xdata()[0]), float(ln.get_ydata()[0]), ln.get_color()) for ln in ax.get_lines()
            if ln.get_marker() == "o" and ln.get_linestyle() == "None"]


def test_curves_figure_draws_the_target_and_marks_each_first_crossing(run_folder: Path) -> None:
    trials = frame(read_rows(run_folder / "trials.csv", TrialRow), TrialRow)
    curves = frame(read_rows(run_folder / "curves.csv", CurveRow), CurveRow)
    fig = curves_figure(curves, trials=trials)
    try:
        by_step, by_time = _accuracy_panels(fig)
        oc_colour = next(ln.get_color() for ln in by_step.get_lines() if ln.get_label().startswith("oc "))
        for ax, x in ((by_step, 300.0), (by_time, 486.6683)):
            assert _target_lines(ax) == [0.5]
            # "oc" first reached 50% at its first evaluation; "ms" never did: no marker for it
            assert _markers(ax) == [(pytest.approx(x), 0.5012, oc_colour)]
        labels = fig.legends[0].get_texts()
        assert [t.get_text() for t in labels] == ["oc (1/1 reached, median 300 steps)", "ms (0/1 reached)",
                                                  "target 50%", "first evaluation at target"]
    finally:
        plt.close(fig)


def test_without_trial_rows_the_crossing_is_read_from_the_curve() -> None:
    # a seed cut short before its trial row was written: the plan's target, the curve's first point at it
    curves = frame(_curve("oc", 0, [0.3, 0.62, 0.7]), CurveRow)
    fig = curves_figure(curves, target=0.6)
    try:
        by_step, _ = _accuracy_panels(fig)
        assert _target_lines(by_step) == [0.6]
        assert [(x, y) for x, y, _ in _markers(by_step)] == [(600.0, 0.62)]
    finally:
        plt.close(fig)
    assert len(crossing(curves, None)) == 0 and len(crossing(curves, 0.9)) == 0


def test_compare_figure_marks_crossings_the_same_way() -> None:
    curves = {"oc": {"seed 0 (#1)": frame(_curve("oc", 0, [0.3, 0.62]), CurveRow)},
              "ms": {"seed 0 (#2)": frame(_curve("ms", 0, [0.3, 0.4]), CurveRow)}}
    fig = accuracy_figure(curves, 0.6, "t")
    try:
        for ax, x in zip(fig.axes, (600.0, 2 * 486.6683), strict=True):
            assert _target_lines(ax) == [0.6]
            assert [(x_, y) for x_, y, _ in _markers(ax)] == [(pytest.approx(x), 0.62)]
        labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert labels[:2] == ["oc: 1/1 reached, median 600 steps", "ms: 0/1 reached, best 40.0%"]
    finally:
        plt.close(fig)


def test_seeds_of_a_schedule_draw_thin_and_their_median_thick() -> None:
    """Three seeds of one schedule: three thin lines, one thick median line, the reach in the legend,
    the caption under the panels."""
    seeds = {f"seed {k} (#1)": frame(_curve("oc", k, accs), CurveRow)
             for k, accs in enumerate(([0.3, 0.5, 0.7], [0.2, 0.62, 0.8], [0.4, 0.65, 0.9]))}
    grid, median = median_curve(seeds, "step")
    assert list(grid) == [300.0, 600.0, 900.0] and list(median) == pytest.approx([0.3, 0.62, 0.8])
    fig = accuracy_figure({"oc": seeds}, 0.6, "t", caption="paper: 8,700 iterations")
    try:
        by_step = fig.axes[0]
        widths = sorted(line.get_linewidth() for line in by_step.get_lines() if len(line.get_xdata()) == 3)
        assert widths == [0.9, 0.9, 0.9, 2.5]
        assert by_step.get_legend().get_texts()[0].get_text() == "oc: 3/3 reached, median 600 steps (600-900)"
        assert fig.get_supxlabel() == "paper: 8,700 iterations"
    finally:
        plt.close(fig)
