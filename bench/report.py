"""Rows -> tables, summary.md and plots, for every kind of run folder. The only place results
become DataFrames (with ``bench.commands.compare``'s joins, which start from ``frame``).

Everything here reads the run folder's files, so ``python -m bench report RUN_DIR`` re-renders a
finished run exactly as the run itself did. Range tests render in ``bench.report_lr_find``.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on benchmark machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench import report_lr_find  # noqa: E402
from bench.config import TrialSpec  # noqa: E402
from bench.report_roofline import RooflinePoint, plot_roofline  # noqa: E402
from bench.results import (AbRow, CurveRow, LrFindRow, ProfileOpRow, ProfileRow, RunError, RunFolder,  # noqa: E402
                           ThroughputRow, TrialRow, atomic_write, atomic_write_text, columns, cpu_label, read_json,
                           read_rows)
from sc_fast.ceilings import Ceilings  # noqa: E402


def frame(rows: list[Any], cls: type) -> pd.DataFrame:
    return pd.DataFrame([[getattr(r, c) for c in columns(cls)] for r in rows], columns=columns(cls))


def trial_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """One line per trial: reach rate and medians over seeds (time/steps over reached seeds only)."""
    def per_trial(g: pd.DataFrame) -> pd.Series:
        hit = g[g.status == "reached"]
        return pd.Series({
            "schedule": g.schedule.iloc[0],
            "target_acc": g.target_acc.iloc[0],
            "reached": f"{len(hit)}/{len(g)}",
            "time_to_target_s": hit.time_to_target_s.astype(float).median() if len(hit) else float("nan"),
            "steps_to_target": hit.steps_to_target.astype(float).median() if len(hit) else float("nan"),
            "epochs_to_target": hit.epochs_to_target.astype(float).median() if len(hit) else float("nan"),
            "best_test_acc": g.best_test_acc.max(),
            "train_imgs_per_s": g.train_imgs_per_s.median(),
            "compile_time_s": g.compile_time_s.median(),
        })
    order = list(dict.fromkeys(trials.trial))
    return trials.groupby("trial", sort=False).apply(per_trial, include_groups=False).loc[order]


def _fmt(v: Any, digits: int = 1, pct: bool = False) -> str:
    """A table cell: numbers rounded (or as signed percentages), missing values as '-'."""
    if _missing(v):
        return "-"
    if isinstance(v, float):
        return f"{v:+.1%}" if pct else f"{v:,.{digits}f}"
    return str(v)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and bool(pd.isna(v)))


# ---- cell formats: one rule per column name or unit suffix ----------------------------------------

def _count(v: Any) -> str:
    # a column with an empty cell reads as floats (300.0); a median over an even number of seeds
    # may fall between two steps, and then shows its half rather than hiding it
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"


def _seconds(v: Any) -> str:
    return f"{v:,.1f}"


def _percent(v: Any) -> str:
    return f"{v:.2%}"


def _epochs(v: Any) -> str:
    return f"{v:,.2f}"


# Whole numbers, even where an empty cell (a target not reached) made the column float.
COUNT_COLUMNS = frozenset({"seed", "batch_size", "max_steps", "steps_to_target", "steps_run", "steps",
                           "world_size", "resumed", "rounds", "warmup", "repeats", "rank"})
# (suffix, format), first match wins: rates end in _per_s too, so they come before seconds
SUFFIX_FORMATS = (("_per_s", _seconds), ("_s", _seconds), ("_acc", _percent), ("epochs_to_target", _epochs))


def column_format(column: str) -> Callable[[Any], str] | None:
    """The format of ``column``'s numbers in every table (summary.md and the console), from its
    name: counts as integers, seconds and rates to 0.1, accuracies in percent; None: by value."""
    if column in COUNT_COLUMNS:
        return _count
    return next((f for suffix, f in SUFFIX_FORMATS if column.endswith(suffix)), None)


def cell(column: str, v: Any, digits: int = 4) -> str:
    """One table cell of ``column``: '-' when empty (a target not reached, a skipped case),
    strings as they are (a '|' escaped, it would end the Markdown cell), numbers by
    ``column_format``; other numbers: integers as such, floats to ``digits`` decimals."""
    if _missing(v):
        return "-"
    if isinstance(v, str):
        return v.replace("|", "\\|")
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    fmt = column_format(column)
    if fmt is not None:
        return fmt(v)
    return _count(v) if isinstance(v, (int, np.integer)) else f"{v:,.{digits}f}"


def formatted(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """``df`` as the strings its tables show (``cell`` per column); the index becomes a column."""
    df = df.reset_index() if df.index.name else df
    return pd.DataFrame({c: [cell(str(c), v, digits) for v in df[c]] for c in df.columns}, index=df.index)


def _cells(df: pd.DataFrame, column: str) -> pd.Series:
    """``df[column]`` as its table shows it (for tables that rename or join columns)."""
    return df[column].map(lambda v: cell(column, v))


def _with_unit(column: str, row: Any, unit: str) -> str:
    text = cell(column, getattr(row, column))
    return text if text == "-" else f"{text} {unit}"


def summary_table(summary: pd.DataFrame, title: str) -> Table:
    t = Table(title=title)
    shown = {"time_to_target_s": "median time-to-target (s)", "steps_to_target": "median steps",
             "best_test_acc": "best acc", "train_imgs_per_s": "img/s"}
    for col in ("trial", "reached", *shown.values()):
        t.add_column(col, justify="left" if col == "trial" else "right")
    text = formatted(summary)
    for r in text.itertuples(index=False):
        t.add_row(r.trial, r.reached, *(getattr(r, c) for c in shown))
    return t


def markdown(df: pd.DataFrame, digits: int = 4) -> str:
    """A plain Markdown table (no tabulate dependency), cells formatted by ``cell``."""
    text = formatted(df, digits)
    head = "| " + " | ".join(map(str, text.columns)) + " |"
    rule = "|" + "|".join("---" for _ in text.columns) + "|"
    body = ["| " + " | ".join(row) + " |" for row in text.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def schedule_lines(s: pd.DataFrame, schedule: Any) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per-step LR and momentum from the trial's schedule (the curve rows hold them only at evaluation
    points, which draws a 1cycle as a few straight segments); training seconds for each step are
    interpolated between evaluations, from (0 steps, 0 s)."""
    steps = np.arange(int(s.step.max()) + 1)
    secs = np.interp(steps, np.r_[0, s.step.to_numpy(float)], np.r_[0.0, s.train_time_s.to_numpy(float)])
    return {"lr": (steps, secs, np.array([schedule.lr(int(i)) for i in steps])),
            "momentum": (steps, secs, np.array([schedule.momentum(int(i)) for i in steps]))}


CURVE_PANELS = (("lr", "learning rate"), ("momentum", "momentum"), ("train_loss", "train loss"),
                ("test_acc", "test accuracy"))
# a seed's first evaluation at or above the target: a dot in the seed's colour, edged to stand out on its line
CROSSING = {"marker": "o", "markersize": 7, "markeredgecolor": "black", "markeredgewidth": 0.8,
            "linestyle": "none", "zorder": 3}


def crossing(curve: pd.DataFrame, target: float | None, row: Any = None) -> pd.DataFrame:
    """The evaluation point (a row of one seed's ``curve``) where the seed first reached
    ``target``; empty when it did not. With the seed's trial row it is the step the row records,
    so figure and tables agree; without one (a seed cut short, another run's curve) the first
    test accuracy at or above ``target``."""
    curve = curve.sort_values("step")
    if row is not None:
        steps = row.steps_to_target
        return curve.iloc[:0] if _missing(steps) else curve[curve.step == steps].head(1)
    return curve.iloc[:0] if target is None else curve[curve.test_acc >= target].head(1)


def mark_crossing(axes: Any, hit: pd.DataFrame, colour: str, label: str | None = None) -> None:
    """``hit`` (from ``crossing``) on an accuracy panel against steps and one against seconds."""
    if not len(hit):  # an empty line would still take a legend entry
        return
    for ax, x in zip(axes, ("step", "train_time_s"), strict=True):
        ax.plot(hit[x], hit.test_acc, color=colour, label=label, **CROSSING)


def draw_target(ax: Any, target: float) -> None:
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target * 100:g}%")


def curves_figure(curves: pd.DataFrame, schedules: dict[str, Any] | None = None,
                  trials: pd.DataFrame | None = None, target: float | None = None) -> Figure:
    """LR, momentum, training loss and test accuracy against steps (top) and training seconds
    (bottom); one colour per trial, one line per seed. LR and momentum are drawn per step when the
    trial's schedule is given (``schedules``: trial name -> schedule), else at evaluation points.
    The accuracy panels draw the target (each trial's in ``trials``, else ``target``) and mark
    each seed's first evaluation at it (``crossing``); the legend gives each trial's reach rate and
    median steps, as the summary table does."""
    fig, axes = plt.subplots(2, 4, figsize=(18, 8.5), squeeze=False, layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    has_rows = trials is not None and len(trials) > 0
    rows = {(r.trial, r.seed): r for r in trials.itertuples(index=False)} if has_rows else {}
    targets = dict(trials.groupby("trial", sort=False).target_acc.first()) if has_rows else {}
    labels = _trial_labels(trials) if has_rows else {}
    marked = False
    for i, (trial, g) in enumerate(curves.groupby("trial", sort=False)):
        colour = colours[i % len(colours)]
        for j, (seed, s) in enumerate(g.groupby("seed")):
            dense = schedule_lines(s, schedules[trial]) if schedules and trial in schedules else {}
            for col, (y, _) in enumerate(CURVE_PANELS):
                by_step, by_time, ys = dense.get(y, (s.step, s.train_time_s, s[y]))
                for row, xs in enumerate((by_step, by_time)):
                    axes[row][col].plot(xs, ys, color=colour, alpha=0.85,
                                        label=labels.get(trial, trial) if j == 0 else None)
            hit = crossing(s, targets.get(trial, target), rows.get((trial, seed)))
            mark_crossing(axes[:, 3], hit, colour)
            marked = marked or len(hit) > 0
    for t in sorted(set(targets.values()) or ({target} - {None})):
        for ax in axes[:, 3]:
            draw_target(ax, t)
    _finish_curve_axes(fig, axes, marked)
    return fig


def _trial_labels(trials: pd.DataFrame) -> dict[str, str]:
    """trial -> its legend entry: reach rate and median steps to target."""
    def label(name: str, r: pd.Series) -> str:
        steps = "" if _missing(r.steps_to_target) else f", median {cell('steps_to_target', r.steps_to_target)} steps"
        return f"{name} ({r.reached} reached{steps})"
    return {name: label(name, r) for name, r in trial_summary(trials).iterrows()}


def _finish_curve_axes(fig: Figure, axes: Any, marked: bool) -> None:
    """Axis labels, grids, log loss scale; the legend above the panels (inside one it would hide
    curves or crossings), where a grey dot stands for the crossing markers when any was drawn."""
    for row, xlabel in enumerate(("step", "training seconds")):
        for col, (_, ylabel) in enumerate(CURVE_PANELS):
            axes[row][col].set(xlabel=xlabel, ylabel=ylabel)
            axes[row][col].grid(alpha=0.3)
    handles, labels = axes[0][3].get_legend_handles_labels()
    if marked:
        handles.append(Line2D([], [], color="lightgrey", **CROSSING))
        labels.append("first evaluation at target")
    fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 5), frameon=False)
    axes[0][2].set_yscale("log")
    axes[1][2].set_yscale("log")


def plot_curves(curves: pd.DataFrame, path: Path, schedules: dict[str, Any] | None = None,
                trials: pd.DataFrame | None = None, target: float | None = None) -> None:
    """``curves_figure`` as a PNG at ``path``."""
    save_figure(curves_figure(curves, schedules, trials, target), path)


def save_figure(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


Seeds = dict[str, pd.DataFrame]  # a seed's label -> its evaluation points (curves.csv rows)


def median_curve(seeds: Seeds, x: str) -> tuple[np.ndarray, np.ndarray]:
    """The median over seeds of test accuracy against ``x``, on the union of their evaluation points
    where every seed has data (each seed interpolated linearly between its evaluations)."""
    curves = [c.sort_values(x) for c in seeds.values()]
    lo, hi = max(c[x].iloc[0] for c in curves), min(c[x].iloc[-1] for c in curves)
    grid = np.unique(np.concatenate([c[x].to_numpy(float) for c in curves]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    return grid, np.median([np.interp(grid, c[x].to_numpy(float), c.test_acc.to_numpy(float)) for c in curves], axis=0)


def _group_label(name: str, seeds: Seeds, target: float | None) -> str:
    steps = [crossing(c, target).step.iloc[0] for c in seeds.values() if len(crossing(c, target))]
    if target is None:
        return f"{name} ({len(seeds)} seed{'s' * (len(seeds) > 1)})"
    if not steps:  # say so, with how close it came: a schedule that ended 0.1 points short is a result
        best = max(c.test_acc.max() for c in seeds.values())
        return f"{name}: 0/{len(seeds)} reached, best {best:.1%}"
    reach = f"{len(steps)}/{len(seeds)} reached, median {cell('steps_to_target', np.median(steps))} steps"
    return f"{name}: {reach}" + (f" ({min(steps):,}-{max(steps):,})" if len(steps) > 1 else "")


def accuracy_figure(groups: dict[str, Seeds], target: float | None, title: str, caption: str = "") -> Figure:
    """Test accuracy against steps (left) and training seconds (right), one colour per group (a
    schedule as run, across run folders): every seed a thin line, dotted where it first reaches
    ``target`` (the step is the number to compare), the median over the seeds thick. ``caption``:
    a note under the panels (numbers to read the figure against, e.g. the paper's)."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5 if caption else 5), squeeze=False, layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, seeds) in enumerate(groups.items()):
        colour = colours[i % len(colours)]
        for c in seeds.values():
            c = c.sort_values("step")
            for ax, x in zip(axes[0], ("step", "train_time_s"), strict=True):
                ax.plot(c[x], c.test_acc, color=colour, alpha=0.45 if len(seeds) > 1 else 0.9, linewidth=0.9)
            mark_crossing(axes[0], crossing(c, target), colour)
        for ax, x in zip(axes[0], ("step", "train_time_s"), strict=True):
            if len(seeds) > 1:
                ax.plot(*median_curve(seeds, x), color=colour, linewidth=2.5)
            ax.plot([], [], color=colour, linewidth=2.5, label=_group_label(name, seeds, target))
    for ax, xlabel in zip(axes[0], ("step", "training seconds"), strict=True):
        if target:
            draw_target(ax, target)
        ax.set(xlabel=xlabel, ylabel="test accuracy", ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title + ("; thin: seeds, thick: their median" if any(len(g) > 1 for g in groups.values()) else ""),
                 fontsize=9)
    if caption:
        fig.supxlabel(caption, fontsize=8, wrap=True)
    return fig


def plot_accuracy(groups: dict[str, Seeds], target: float | None, path: Path, title: str, caption: str = "") -> None:
    """``accuracy_figure`` as a PNG at ``path``."""
    save_figure(accuracy_figure(groups, target, title, caption), path)


def plan_schedules(env: dict[str, Any]) -> dict[str, Any]:
    """trial name -> schedule, rebuilt from the plan stored in env.json ({} when it cannot be)."""
    try:
        return {t["name"]: TrialSpec.from_json(t).build_schedule() for t in env.get("plan", {}).get("trials", [])}
    except (AttributeError, KeyError, TypeError, ValueError):  # an older or hand-edited env.json: eval points
        return {}


def render_run(run_dir: Path, console: Console | None) -> pd.DataFrame:
    """summary.md and curves.png for a `bench run` folder; prints the table. Returns the summary."""
    env = read_json(run_dir / "env.json")
    # a run stopped before its first trial finished has no trials.csv yet: render it as such
    trials = frame(read_rows(run_dir / "trials.csv", TrialRow, missing_ok=True), TrialRow)
    curves = frame(read_rows(run_dir / "curves.csv", CurveRow, missing_ok=True), CurveRow)
    summary = trial_summary(trials) if len(trials) else pd.DataFrame()
    plan = env.get("plan", {})
    hw = env.get("env", {})
    title = (f"{run_dir.name}: profile {plan.get('profile')} on {hw.get('gpu') or hw.get('cpu')} "
             f"({plan.get('pipeline')} pipeline, {plan.get('settings', {}).get('precision')}), "
             f"target {_target_text(plan.get('target'))}")
    if console is not None and len(summary):
        print_wide(console, summary_table(summary, title))
    elif console is not None:
        console.print(f"{title}\nno trial has finished (state: {env.get('state')})")
    if len(curves):
        plot_curves(curves, run_dir / "curves.png", plan_schedules(env), trials if len(trials) else None,
                    plan.get("target"))
    lines = [f"# {title}", "", f"State: {env.get('state')}", ""]
    if env.get("overrides"):  # `run --set`: the trials differ from bench.toml's by these
        lines += ["Overrides (`--set`): " + ", ".join(f"`{k}={v}`" for k, v in env["overrides"].items()), ""]
    if len(summary):
        lines += ["## Time to target (medians over seeds that reached it)", "", markdown(summary), ""]
    if len(trials):
        lines += ["## Trials", "", markdown(trials.drop(columns=["run_id"])), ""]
    if len(curves):
        lines += ["![curves](curves.png)", ""]
    lines += ["## Environment", "", "```json", _env_text(env), "```", ""]
    atomic_write_text(run_dir / "summary.md", "\n".join(lines))
    return summary


def _target_text(target: Any) -> str:
    return f"{target * 100:g}%" if isinstance(target, (int, float)) else str(target)


def _env_text(env: dict[str, Any]) -> str:
    return json.dumps(env.get("env", {}), indent=2, default=str)


def plot_schedule(name: str, schedule: Any, steps: int, path: Path) -> None:
    xs = range(steps)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
    a.plot(xs, [schedule.lr(i) for i in xs])
    b.plot(xs, [schedule.momentum(i) for i in xs], color="tab:orange")
    a.set(title=f"{name}: learning rate", xlabel="step")
    b.set(title=f"{name}: momentum", xlabel="step")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def _regressed(case: str, delta: Any, limit: float | None, verdicts: dict[str, Any] | None) -> bool:
    """The gate's verdict recorded in env.json; runs from before verdicts were recorded: delta < -limit."""
    if verdicts is not None:
        return verdicts.get(case, {}).get("verdict") == "regression"
    return limit is not None and delta is not None and not pd.isna(delta) and delta < -limit


def throughput_display(df: pd.DataFrame, limit: float | None,
                       verdicts: dict[str, Any] | None = None) -> pd.DataFrame:
    """throughput.csv as the strings shown in the table and summary.md; ``verdicts``: env.json's
    baseline.verdicts (case -> verdict and p-value) when the gate recorded them."""
    setup = [" ".join([p, "CL" if cl else "NCHW"] + ([] if c == "off" else [f"compile:{c}"]))
             for p, cl, c in zip(df.precision, df.channels_last, df.compile, strict=True)]
    out = pd.DataFrame({
        "case": df.case, "pipeline": df.pipeline.where(df.model, df.pipeline + " alone"),
        "setup": setup, "batch": _cells(df, "batch_size"), "steps": _cells(df, "steps"),
        "img/s": _cells(df, "imgs_per_s"), "x base": df.ratio_to_baseline.map(lambda v: _fmt(v, 2)),
        "step ms": df.step_ms_median.map(_fmt),
        "p10-p90 ms": [f"{_fmt(a)}-{_fmt(b)}" if a is not None and not pd.isna(a) else "-"
                       for a, b in zip(df.step_ms_p10, df.step_ms_p90, strict=True)],
        "warm-up s": _cells(df, "warmup_s"), "peak MiB": df.peak_mem_mib.map(lambda v: _fmt(v, 0)),
        "status": df.status,
    })
    if df.gflop_per_img.notna().any():  # the cost and how close to the machine (bench/cases.py)
        out["GFLOP/img"] = df.gflop_per_img.map(lambda v: _fmt(v, 3))
        out["FLOP/B"] = df.flop_per_byte.map(lambda v: _fmt(v, 1))
        out["TFLOP/s"] = df.tflops.map(lambda v: _fmt(v, 3))
        out["MFU"] = df.mfu.map(lambda v: "-" if v is None or pd.isna(v) else f"{v:.1%}")
    if (df.world_size > 1).any():  # torchrun: img/s is the job's
        out["ranks"] = _cells(df, "world_size")
        out["img/s per device"] = df.imgs_per_s_per_device.map(_fmt)
    if df.scaling_efficiency.notna().any():
        out["baseline img/s"] = df.baseline_imgs_per_s.map(_fmt)
        out["scaling eff."] = df.scaling_efficiency.map(lambda v: _fmt(v, 2))
        return out
    if df.baseline_imgs_per_s.notna().any():
        out["baseline img/s"] = df.baseline_imgs_per_s.map(_fmt)
        out["delta"] = [_fmt(d, pct=True) + (" REGRESSION" if _regressed(c, d, limit, verdicts) else "")
                        for c, d in zip(df.case, df.delta, strict=True)]
        if verdicts and any(v.get("p_value") is not None for v in verdicts.values()):
            ps = [(verdicts.get(c) or {}).get("p_value") for c in df.case]
            out["p"] = ["-" if v is None else f"{v:.2g}" for v in ps]
    return out


def print_wide(console: Console, table: Table) -> None:
    """Logs and CI are not terminals and get 80 columns: widen the console for this table only,
    so its columns keep their text instead of ellipses."""
    narrow = console.width
    if not console.is_terminal:
        console.width = max(narrow, 200)
    try:
        console.print(table)
    finally:
        console.width = narrow


def render_throughput(run_dir: Path, console: Console | None) -> pd.DataFrame:
    """summary.md and the table of a `bench throughput` folder. Returns throughput.csv's frame."""
    env = read_json(run_dir / "env.json")
    df = frame(read_rows(run_dir / "throughput.csv", ThroughputRow), ThroughputRow)
    s, base = env.get("settings", {}), env.get("baseline") or {}
    limit = base.get("max_regression")
    title = (f"{run_dir.name}: throughput on {env.get('device_name')}; img/s = median of {s.get('repeats')} "
             f"repeats of `steps` timed steps, after {s.get('warmup')} warm-up steps")
    shown = throughput_display(df, limit, base.get("verdicts"))
    if console is not None:
        table = Table(title=title)
        for col in shown.columns:
            table.add_column(col, justify="left" if col in ("case", "pipeline", "setup", "status") else "right")
        for row in shown.itertuples(index=False):
            table.add_row(*row)
        print_wide(console, table)
    notes = [f"- {r.case}: {r.status}: {r.error}" for r in df.itertuples() if r.status != "ok"]
    lines = [f"# {title}", "", f"State: {env.get('state')}", ""]
    if base:
        test = base.get("test", "medians only")
        lines += [f"Compared with baseline run `{base.get('run_id')}`; a case slower by more than "
                  f"{limit:.0%} is a regression (test: {test}).", ""]
    lines += [markdown(shown), "", *notes, "", *ceiling_lines(run_dir, env, df), *profile_lines(run_dir),
              "## Environment", "", "```json", _env_text(env), "```", ""]
    atomic_write_text(run_dir / "summary.md", "\n".join(lines))
    return df


def ceiling_lines(run_dir: Path, env: dict[str, Any], df: pd.DataFrame) -> list[str]:
    """summary.md's ceilings section, and roofline.png: every measured case against the device's
    measured matmul and memory roofs (nothing for runs from before ceilings were measured)."""
    measured = (env.get("ceilings") or {}).get("measured")
    if not measured:
        return []
    c, sheet = Ceilings.from_json(measured), (env.get("ceilings") or {}).get("datasheet")
    rows = [(f"matmul {p}", f"{t:,.3g} TFLOP/s", f"{sheet['matmul_tflops'].get(p, '-')}" if sheet else "-")
            for p, t in c.matmul_tflops.items()]
    rows.append(("memory (copy, read + write)", f"{c.bandwidth_gb_s:,.1f} GB/s",
                 f"{sheet['bandwidth_gb_s']:,.0f}" if sheet else "-"))
    head = f"datasheet ({sheet['name']})" if sheet else "datasheet"
    table = pd.DataFrame(rows, columns=["ceiling", "measured", head])
    points = [RooflinePoint(r.case, r.precision, r.flop_per_byte, r.tflops) for r in df.itertuples()
              if r.status == "ok" and r.tflops is not None and not pd.isna(r.tflops)]
    if points:
        plot_roofline(points, c, run_dir / "roofline.png", f"{run_dir.name}: {c.device_name}")
    return ["## Ceilings", "", f"Measured in this run (matmul n = {c.matmul_n:,}, median of repeats; copy of "
            f"{c.copy_bytes / 2**20:,.0f} MiB). MFU = a case's model TFLOP/s over the matmul ceiling at its "
            "precision. FLOP/B uses the eager estimate of bytes moved (every op's inputs and outputs).", "",
            markdown(table), "", *(["![roofline](roofline.png)", ""] if points else [])]


# ---- step profiles (`bench throughput --trace`) -------------------------------------------------

def profile_text(p: ProfileRow, top: list[ProfileOpRow], n: int = 3) -> str:
    """One console line: the clocks, the kernel count and the first ``n`` entries of the top list."""
    if p.error:
        return f"[yellow]profile failed: {p.error}[/yellow]"
    text = f"profile: step {p.step_ms:,.1f} ms, host issues it in {p.issue_ms:,.1f} ms"
    if p.kernel_ms is not None:
        text += (f", kernels {p.kernel_ms:,.1f} ms ({p.device_busy:.0%} of the step), "
                 f"{p.kernels_per_step:,.0f} kernels/step")
    if top:
        text += f"; top {top[0].kind}s: " + ", ".join(f"{o.name[:48]} {o.share:.0%}" for o in top[:n])
    return text + (f"; trace {p.trace}" if p.trace else "")


def profile_lines(run_dir: Path, n: int = 10) -> list[str]:
    """summary.md's step-profile section: the clocks of every profiled case, then each case's
    top ``n`` entries; nothing for a run without --trace."""
    if not (run_dir / "profile.csv").exists():
        return []
    p = frame(read_rows(run_dir / "profile.csv", ProfileRow), ProfileRow)
    ops = frame(read_rows(run_dir / "profile_ops.csv", ProfileOpRow, missing_ok=True), ProfileOpRow)
    shown = pd.DataFrame({"case": p.case, "steps": _cells(p, "steps"), "step ms": p.step_ms.map(_fmt),
                          "issue ms": p.issue_ms.map(_fmt), "kernel ms": p.kernel_ms.map(_fmt),
                          "kernels/step": p.kernels_per_step.map(lambda v: _fmt(v, 0)),
                          "device busy": p.device_busy.map(_pct), "trace": p.trace})
    if p.error.astype(bool).any():
        shown["error"] = p.error
    lines = ["## Step profile (`--trace`)", "",
             "Per step: wall time (synchronized), host time to issue it (no sync), summed kernel time and "
             "kernel count (CUDA), device busy = kernel / step time. The first two with the profiler off, "
             "the others from as many steps under it.", "", markdown(shown), ""]
    for case, top in ops.groupby("case", sort=False):
        top = top.head(n)
        lines += [f"Top {len(top)} of `{case}` by self time per step:", "", markdown(pd.DataFrame({
            "kind": top.kind, "name": top.name, "calls/step": top.calls_per_step.map(lambda v: _fmt(v, 0)),
            "ms/step": top.ms_per_step.map(lambda v: _fmt(v, 3)), "share": top.share.map(_pct)})), ""]
    return lines


def _pct(v: Any) -> str:
    return "-" if v is None or pd.isna(v) else f"{v:.0%}"


# ---- suite folders: one headline over the parts ------------------------------------------------------

def suite_parts(suite_dir: Path) -> dict[str, Path]:
    """part name -> its run folder, for the parts that made one."""
    parts = RunFolder.open(suite_dir).env().get("parts", {})
    return {name: suite_dir / p["folder"] for name, p in parts.items()
            if p.get("folder") and (suite_dir / p["folder"] / "env.json").is_file()}


@dataclass(frozen=True)
class SuiteFiles:
    """A suite folder's env.json and its parts' result files, read once for the headline and the tables."""

    env: dict[str, Any]
    parts: dict[str, Path]
    throughput: pd.DataFrame  # the throughput part's rows (empty without one)
    trials: pd.DataFrame  # the time-to-target part's rows (empty without one)

    @staticmethod
    def read(suite_dir: Path) -> "SuiteFiles":
        parts = suite_parts(suite_dir)

        def rows(part: str, name: str, cls: type) -> pd.DataFrame:
            found = read_rows(parts[part] / name, cls, missing_ok=True) if part in parts else []
            return frame(found, cls)
        return SuiteFiles(RunFolder.open(suite_dir).env(), parts, rows("throughput", "throughput.csv", ThroughputRow),
                          rows("run", "trials.csv", TrialRow))


def suite_headline(s: SuiteFiles) -> pd.DataFrame:
    """One row per headline figure: device, best img/s, time-to-target per trial (median over the
    seeds that reached it, with the reach rate), compile time, the range test's suggestion."""
    hw = s.env.get("env", {})
    rows = [("device", hw.get("gpu") or cpu_label(hw), "")]
    ok = s.throughput[(s.throughput.status == "ok") & s.throughput.model.astype(bool)] if len(s.throughput) else []
    if len(ok):
        best = ok.loc[ok.imgs_per_s.astype(float).idxmax()]
        rows.append(("best img/s", f"{best.imgs_per_s:,.0f}",
                     f"case {best.case}, batch {cell('batch_size', best.batch_size)}"))
        if "mfu" in ok and not pd.isna(best.mfu):  # how close to the machine (older suites lack it)
            rows.append(("MFU of that case", f"{best.mfu:.1%}", f"{best.tflops:,.3g} TFLOP/s of model math "
                         f"({best.gflop_per_img:.3f} GFLOP/img) over the measured {best.precision} matmul ceiling"))
        rows += _profile_headline(s.parts["throughput"], best.case)
    for name, r in (trial_summary(s.trials).iterrows() if len(s.trials) else []):
        rows.append((f"time to {_target_text(r.target_acc)}: {name}", _with_unit("time_to_target_s", r, "s"),
                     f"reached {r.reached}, median {cell('steps_to_target', r.steps_to_target)} steps"))
    if len(s.trials):
        rows.append(("compile time (median)", cell("compile_time_s", s.trials.compile_time_s.median()) + " s",
                     "warm-up, off the clock"))
    if "lr-find" in s.parts:
        lf_env = read_json(s.parts["lr-find"] / "env.json")
        lf_rows = read_rows(s.parts["lr-find"] / "lr_find.csv", LrFindRow, missing_ok=True)
        for f in report_lr_find.suggestions(lf_rows, lf_env)[:1]:
            rows.append(("suggested max LR", f"{f.suggestion.lr:.3g}", f"{f.ramp} ramp, {f.suggestion.method}"))
    return pd.DataFrame(rows, columns=["figure", "value", "note"])


def _profile_headline(throughput_dir: Path, case: str) -> list[tuple[str, str, str]]:
    """The headline's step-profile row for ``case`` (the fastest), when the part was traced."""
    found = [p for p in read_rows(throughput_dir / "profile.csv", ProfileRow, missing_ok=True)
             if p.case == case and not p.error]
    if not found:
        return []
    p = found[0]
    clocks = f"host issues a step in {p.issue_ms:,.2f} of its {p.step_ms:,.2f} ms"
    if p.kernel_ms is None:
        return [("step profile", clocks, f"case {case}; no kernel times without a GPU")]
    return [("step profile", f"GPU busy {p.device_busy:.0%} of the step",
             f"case {case}: {p.kernels_per_step:,.0f} kernels, {p.kernel_ms:,.2f} ms of kernels; {clocks}")]


def render_suite(suite_dir: Path, console: Console | None) -> pd.DataFrame:
    """summary.md of a `bench suite` folder: the headline, then each part's own table."""
    s = SuiteFiles.read(suite_dir)
    env, parts, head = s.env, s.parts, suite_headline(s)
    title = f"{suite_dir.name}: suite{' (quick)' if env.get('quick') else ''}, state {env.get('state')}"
    if console is not None:
        table = Table(title=title)
        for col in head.columns:
            table.add_column(col)
        for row in head.itertuples(index=False):
            table.add_row(*map(str, row))
        print_wide(console, table)
    lines = [f"# {title}", "", markdown(head), ""]
    if "throughput" in parts:
        lines += [f"## Throughput (`{parts['throughput'].name}`)", "", markdown(throughput_display(s.throughput, None)),
                  ""]
        if (parts["throughput"] / "profile.csv").exists():
            lines += [f"Step profiles and top kernels per case: `{parts['throughput'].name}/summary.md`.", ""]
    if len(s.trials):
        lines += [f"## Time to target (`{parts['run'].name}`)", "", markdown(trial_summary(s.trials)), "",
                  f"![curves]({parts['run'].name}/curves.png)", ""]
    if "lr-find" in parts:
        lines += [f"## LR range test: see `{parts['lr-find'].name}/summary.md`", ""]
    lines += ["## Parts", "", "```json", json.dumps(env.get("parts", {}), indent=2), "```", "",
              "## Environment", "", "```json", _env_text(env), "```", ""]
    atomic_write_text(suite_dir / "summary.md", "\n".join(lines))
    return head


def ab_display(df: pd.DataFrame) -> pd.DataFrame:
    """ab.csv as the strings shown in the table and summary.md."""
    return pd.DataFrame({
        "case": df.case, "rounds": _cells(df, "rounds"), "REV img/s": df.imgs_per_s_rev.map(_fmt),
        "tree img/s": df.imgs_per_s_tree.map(_fmt), "tree/REV": df.ratio.map(lambda v: _fmt(v, 3)),
        "95% CI": [f"{_fmt(a, 3)}-{_fmt(b, 3)}" if a is not None and not pd.isna(a) else "-"
                   for a, b in zip(df.ci_low, df.ci_high, strict=True)],
        "p": ["-" if v is None or pd.isna(v) else f"{v:.2g}" for v in df.p_value],
        "verdict": [v.upper() if v == "regression" else v for v in df.verdict],
    })


def ab_title(run_dir: Path, env: dict[str, Any]) -> str:
    rev, tree, s = env.get("rev", {}), env.get("tree", {}), env.get("settings", {})
    return (f"{run_dir.name}: working tree {(tree.get('commit') or '?')[:10]}{' (dirty)' if tree.get('dirty') else ''}"
            f" against {rev.get('spec')} = {(rev.get('commit') or '?')[:10]} on {env.get('device_name')}; "
            f"{s.get('rounds')} interleaved rounds of one child per side, img/s of one repeat each")


def render_ab(run_dir: Path, console: Console | None) -> pd.DataFrame:
    """summary.md and the table of a `bench ab` folder. Returns ab.csv's frame."""
    env = read_json(run_dir / "env.json")
    df = frame(read_rows(run_dir / "ab.csv", AbRow, missing_ok=True), AbRow)
    title, shown = ab_title(run_dir, env), ab_display(df)
    if console is not None:
        table = Table(title=title)
        for col in shown.columns:
            table.add_column(col, justify="left" if col in ("case", "verdict") else "right")
        for row in shown.itertuples(index=False):
            table.add_row(*row)
        print_wide(console, table)
    limit = env.get("settings", {}).get("max_regression")
    lines = [f"# {title}", "", f"State: {env.get('state')}", "",
             f"Ratio = median tree img/s / median REV img/s over the rounds (below 1: the working tree is slower), "
             f"95% bootstrap interval, two-sided Mann-Whitney p. A regression is slower by more than "
             f"{f'{limit:.0%}' if limit is not None else '?'} and significant (p < 0.05, interval below 1). "
             "Every child's sample: ab_samples.csv.", "", markdown(shown), "",
             "## Environment", "", "```json", _env_text(env), "```", ""]
    atomic_write_text(run_dir / "summary.md", "\n".join(lines))
    return df


# the kind recorded in env.json -> its renderer
RENDERERS = {"run": render_run, "lr_find": report_lr_find.render, "throughput": render_throughput,
             "suite": render_suite, "ab": render_ab}


def render_any(run_dir: Path, console: Console) -> None:
    kind = RunFolder.open(run_dir).kind
    if kind not in RENDERERS:
        raise RunError(f"{run_dir}/env.json: unknown run kind {kind!r}")
    RENDERERS[kind](run_dir, console)
