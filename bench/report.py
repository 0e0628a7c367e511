"""Rows -> tables, summary.md and plots, for every kind of run folder. The only place results
become DataFrames (with ``bench.commands.compare``'s joins, which start from ``frame``).

Everything here reads the run folder's files, so ``python -m bench report RUN_DIR`` re-renders a
finished run exactly as the run itself did. Range tests render in ``bench.report_lr_find``.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on benchmark machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench import report_lr_find  # noqa: E402
from bench.config import TrialSpec  # noqa: E402
from bench.results import (AbRow, CurveRow, LrFindRow, ProfileOpRow, ProfileRow, RunError, RunFolder,  # noqa: E402
                           ThroughputRow, TrialRow, atomic_write, atomic_write_text, columns, cpu_label, read_json,
                           read_rows)


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
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:+.1%}" if pct else f"{v:,.{digits}f}"
    return str(v)


def summary_table(summary: pd.DataFrame, title: str) -> Table:
    t = Table(title=title)
    for col in ("trial", "reached", "median time-to-target (s)", "median steps", "best acc", "img/s"):
        t.add_column(col, justify="left" if col == "trial" else "right")
    for name, r in summary.iterrows():
        t.add_row(str(name), r.reached, _fmt(r.time_to_target_s), _fmt(r.steps_to_target, 0),
                  _fmt(r.best_test_acc, 4), _fmt(r.train_imgs_per_s, 0))
    return t


def markdown(df: pd.DataFrame, digits: int = 4) -> str:
    """A plain Markdown table (no tabulate dependency)."""
    df = df.reset_index() if df.index.name else df
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v, digits) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def schedule_lines(s: pd.DataFrame, schedule: Any) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per-step LR and momentum from the trial's schedule (the curve rows hold them only at evaluation
    points, which draws a 1cycle as a few straight segments); training seconds for each step are
    interpolated between evaluations, from (0 steps, 0 s)."""
    steps = np.arange(int(s.step.max()) + 1)
    secs = np.interp(steps, np.r_[0, s.step.to_numpy(float)], np.r_[0.0, s.train_time_s.to_numpy(float)])
    return {"lr": (steps, secs, np.array([schedule.lr(int(i)) for i in steps])),
            "momentum": (steps, secs, np.array([schedule.momentum(int(i)) for i in steps]))}


def plot_curves(curves: pd.DataFrame, path: Path, schedules: dict[str, Any] | None = None) -> None:
    """LR, momentum, training loss and test accuracy against steps (top) and training seconds
    (bottom); one colour per trial, one line per seed. LR and momentum are drawn per step when the
    trial's schedule is given (``schedules``: trial name -> schedule), else at evaluation points."""
    panels = [("lr", "learning rate"), ("momentum", "momentum"), ("train_loss", "train loss"),
              ("test_acc", "test accuracy")]
    fig, axes = plt.subplots(2, 4, figsize=(18, 8), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (trial, g) in enumerate(curves.groupby("trial", sort=False)):
        for j, (seed, s) in enumerate(g.groupby("seed")):
            dense = schedule_lines(s, schedules[trial]) if schedules and trial in schedules else {}
            for col, (y, _) in enumerate(panels):
                by_step, by_time, ys = dense.get(y, (s.step, s.train_time_s, s[y]))
                for row, xs in enumerate((by_step, by_time)):
                    axes[row][col].plot(xs, ys, color=colours[i % len(colours)], alpha=0.85,
                                        label=trial if j == 0 else None)
    for row, xlabel in enumerate(("step", "training seconds")):
        for col, (_, ylabel) in enumerate(panels):
            ax = axes[row][col]
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
    axes[0][3].legend()
    axes[0][2].set_yscale("log")
    axes[1][2].set_yscale("log")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def plot_accuracy(curves: dict[str, pd.DataFrame], target: float | None, path: Path, title: str) -> None:
    """Test accuracy against steps (left) and training seconds (right), one line per label (a trial
    of a run, one seed), for schedules run in different folders; where a line first reaches
    ``target`` a dot marks the step, which is the number to compare."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), squeeze=False, layout="constrained")
    for label, c in curves.items():
        c = c.sort_values("step")
        hit = c[c.test_acc >= target].head(1) if target else c.iloc[:0]
        for ax, x in zip(axes[0], ("step", "train_time_s"), strict=True):
            (line,) = ax.plot(c[x], c.test_acc, alpha=0.85,
                              label=label + (f": {int(hit.step.iloc[0]):,} steps" if len(hit) else ""))
            ax.plot(hit[x], hit.test_acc, "o", color=line.get_color())
    for ax, xlabel in zip(axes[0], ("step", "training seconds"), strict=True):
        if target:
            ax.axhline(target, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower right")
    fig.suptitle(title, fontsize=9)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


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
             f"target {plan.get('target')}")
    if console is not None and len(summary):
        print_wide(console, summary_table(summary, title))
    elif console is not None:
        console.print(f"{title}\nno trial has finished (state: {env.get('state')})")
    if len(curves):
        plot_curves(curves, run_dir / "curves.png", plan_schedules(env))
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
        "setup": setup, "batch": df.batch_size.astype(str), "steps": df.steps.astype(str),
        "img/s": df.imgs_per_s.map(_fmt), "x base": df.ratio_to_baseline.map(lambda v: _fmt(v, 2)),
        "step ms": df.step_ms_median.map(_fmt),
        "p10-p90 ms": [f"{_fmt(a)}-{_fmt(b)}" if a is not None and not pd.isna(a) else "-"
                       for a, b in zip(df.step_ms_p10, df.step_ms_p90, strict=True)],
        "warm-up s": df.warmup_s.map(_fmt), "peak MiB": df.peak_mem_mib.map(lambda v: _fmt(v, 0)),
        "status": df.status,
    })
    if (df.world_size > 1).any():  # torchrun: img/s is the job's
        out["ranks"] = df.world_size.astype(str)
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
    lines += [markdown(shown), "", *notes, "", *profile_lines(run_dir),
              "## Environment", "", "```json", _env_text(env), "```", ""]
    atomic_write_text(run_dir / "summary.md", "\n".join(lines))
    return df


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
    shown = pd.DataFrame({"case": p.case, "steps": p.steps.astype(str), "step ms": p.step_ms.map(_fmt),
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
        rows.append(("best img/s", f"{best.imgs_per_s:,.0f}", f"case {best.case}, batch {best.batch_size}"))
        rows += _profile_headline(s.parts["throughput"], best.case)
    for name, r in (trial_summary(s.trials).iterrows() if len(s.trials) else []):
        rows.append((f"time to {r.target_acc:.0%}: {name}", _fmt(r.time_to_target_s) + " s",
                     f"reached {r.reached}, median {_fmt(r.steps_to_target, 0)} steps"))
    if len(s.trials):
        rows.append(("compile time (median)", _fmt(s.trials.compile_time_s.median()) + " s",
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
        "case": df.case, "rounds": df.rounds.astype(str), "REV img/s": df.imgs_per_s_rev.map(_fmt),
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
