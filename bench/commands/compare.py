"""``python -m bench compare RUN_DIR...``: runs from different GPUs or commits side by side.

Reads result files only (env.json plus trials.csv or throughput.csv), so runs made elsewhere can
be copied in and compared. ``run`` folders: per trial, reach rate and median time-to-target per
run, and the time ratio against the first run (below 1: faster), as a row per trial and run
beyond WIDE_RUNS runs. ``throughput`` folders: img/s per case per run and the ratio against the
first run (above 1: faster), then the achieved TFLOP/s and MFU per run when any of them recorded
those ('-' for the runs from before). Folders of both kinds may be mixed; each kind gets its own
table and its own first run. Anything else, or a damaged folder, is a RunError (exit 2).
``--plot FILE`` draws the run folders' test-accuracy curves on one figure: schedules run in
separate folders (one per session on a CPU) seen together.
"""

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from bench.common import EXIT_OK, UsageError, check_writable
from bench.config import TrialSpec
from bench.report import cell, frame, plot_accuracy, print_wide, suite_parts, trial_summary
from bench.results import CurveRow, RunError, RunFolder, read_rows
from bench.runs import ROWS, RunRecord, read_run

HELP = "put runs from different GPUs or commits side by side"
PARENTS = ()
# more `run` folders than this: the time-to-target table gets a row per trial and run instead of
# three columns per run (eleven runs side by side are 45 columns, every cell an ellipsis)
WIDE_RUNS = 3
SETUP = ("pipeline", "precision", "channels_last", "compile", "batch_size", "model")
# what a throughput run achieved beside its img/s (bench/results.py ThroughputRow; older runs lack them)
ACHIEVED = {"tflops": "TFLOP/s", "mfu": "MFU"}


@dataclass(frozen=True)
class ComparedRun:
    label: str  # "#1", "#2", ... in the order given
    run: RunRecord
    rows: pd.DataFrame  # the run's trials.csv or throughput.csv


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--plot", metavar="FILE", type=Path,
                   help="also draw test accuracy against steps and training seconds for the run folders "
                        "(the seeds of one setting thin, their median thick)")
    p.add_argument("--caption", metavar="TEXT", help="a note under the --plot figure, e.g. numbers to read it against")


def read_compared(path: Path, label: str) -> ComparedRun:
    kind = RunFolder.open(path).kind
    if kind not in ROWS:
        raise RunError(f"{path}: a {kind!r} run; compare takes `run`, `throughput` and `suite` folders")
    run = read_run(path)
    return ComparedRun(label, run, frame(list(run.rows), ROWS[kind][1]))


def legend(runs: list[ComparedRun]) -> Table:
    t = Table(title="runs compared")
    for col in ("#", "run", "kind", "device", "commit", "torch", "settings"):
        t.add_column(col)
    for r in runs:
        run = r.run
        commit = (run.commit or "?")[:10] + (" (dirty)" if run.dirty else "")
        t.add_row(r.label, run.path.name, run.kind, run.device_name, commit, str(run.env.get("env", {}).get("torch")),
                  _settings(run))
    return t


def _settings(run: RunRecord) -> str:
    if run.kind == "throughput":
        s = run.env.get("settings", {})
        return f"{s.get('repeats')} repeats, {s.get('warmup')} warm-up"
    p = run.env.get("plan", {})
    return (f"profile {p.get('profile')}, target {p.get('target')}, {p.get('pipeline')}, "
            f"{p.get('settings', {}).get('precision')}")


# ---- the joins ----------------------------------------------------------------------------------

def trials_side_by_side(runs: list[ComparedRun]) -> pd.DataFrame:
    """Index trial; per run: reached (k/n), median time and steps to target, time ratio vs the first run."""
    parts, cols = [], ["reached", "time_to_target_s", "steps_to_target"]
    for r in runs:
        s = trial_summary(r.rows) if len(r.rows) else pd.DataFrame(columns=cols)
        parts.append(s[cols].add_suffix(f" {r.label}"))
    wide = pd.concat(parts, axis=1, join="outer")  # a trial missing from a run: NaN there
    first = wide[f"time_to_target_s {runs[0].label}"].astype(float)
    for r in runs[1:]:
        wide[f"time {r.label}/{runs[0].label}"] = wide[f"time_to_target_s {r.label}"].astype(float) / first
    # times to different accuracy targets do not compare
    targets = pd.concat([r.rows[["trial", "target_acc"]] for r in runs]).groupby("trial").target_acc.nunique()
    wide["note"] = ["target differs" if targets.get(t, 1) > 1 else "" for t in wide.index]
    return wide


def trials_one_per_row(runs: list[ComparedRun]) -> pd.DataFrame:
    """trials_side_by_side with a row per trial and run (index trial; a run without the trial has
    no row): the same numbers, readable for many runs."""
    wide, first = trials_side_by_side(runs), runs[0].label
    columns = ["trial", "run", "reached", "time_to_target_s", "steps_to_target", f"time /{first}", "note"]
    rows = []
    for trial, w in wide.iterrows():
        for r in runs:
            if pd.isna(w[f"reached {r.label}"]):
                continue
            rows.append([trial, r.label, w[f"reached {r.label}"], w[f"time_to_target_s {r.label}"],
                         w[f"steps_to_target {r.label}"], w.get(f"time {r.label}/{first}", float("nan")), w["note"]])
    return pd.DataFrame(rows, columns=columns).set_index("trial")


def throughput_side_by_side(runs: list[ComparedRun]) -> pd.DataFrame:
    """Index case; per run: median img/s (ok cases only), ratio vs the first run; then per run the
    achieved TFLOP/s and MFU when any of the runs recorded them (NaN for a run that did not)."""
    achieved = [c for c in ACHIEVED if any(r.rows[c].notna().any() for r in runs)]
    parts = []
    for r in runs:
        ok = r.rows[r.rows.status == "ok"].set_index("case")
        parts.append(ok[["imgs_per_s", *achieved]].astype(float).add_suffix(f" {r.label}"))
    order = list(dict.fromkeys(c for r in runs for c in r.rows.case))  # cases in the order measured
    joined = pd.concat(parts, axis=1, join="outer").reindex(order)
    wide = joined[[f"imgs_per_s {r.label}" for r in runs]].copy()
    first = wide[f"imgs_per_s {runs[0].label}"]
    for r in runs[1:]:
        wide[f"{r.label} vs {runs[0].label}"] = wide[f"imgs_per_s {r.label}"] / first
    for c in achieved:
        for r in runs:
            wide[f"{c} {r.label}"] = joined[f"{c} {r.label}"]
    # same case name, other settings (another bench.toml): the ratio compares different work
    setup = pd.concat([r.rows.set_index("case")[list(SETUP)] for r in runs])
    differs = setup.groupby(level=0).nunique().gt(1).any(axis=1)
    wide["note"] = ["setup differs" if differs.get(c, False) else "" for c in wide.index]
    return wide


# ---- rendering -----------------------------------------------------------------------------------

def _cell(v: Any, ratio: bool, column: str = "") -> str:
    if isinstance(v, str):
        return v
    if v is None or pd.isna(v):
        return "-"
    if column.startswith("steps_to_target"):  # a count, as in summary.md (a median may end in .5)
        return cell("steps_to_target", v)
    if column.startswith("tflops "):  # as in summary.md: a CPU achieves a fraction of one
        return f"{v:,.3f}"
    if column.startswith("mfu "):
        return f"{v:.1%}"
    return f"{v:.2f}" if ratio else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.1f}"


def table_of(wide: pd.DataFrame, title: str, key: str) -> Table:
    t = Table(title=title)
    t.add_column(key)
    ratios = [" vs " in c or "/" in c for c in wide.columns]
    for col in wide.columns:
        name = col.replace("time_to_target_s", "median s").replace("steps_to_target", "steps")
        for field, shown in ACHIEVED.items():
            name = name.replace(f"{field} ", f"{shown} ")
        t.add_column(name.replace("imgs_per_s", "img/s"), justify="right")
    for name, row in wide.iterrows():
        t.add_row(str(name), *(_cell(v, r, c) for v, r, c in zip(row, ratios, wide.columns, strict=True)))
    return t


def expand(path: Path) -> list[Path]:
    """A suite folder stands for its time-to-target and throughput parts; any other folder for itself."""
    if RunFolder.open(path).kind != "suite":
        return [path]
    parts = suite_parts(path)
    return [parts[p] for p in ("run", "throughput") if p in parts]


# settings that change when a trial is evaluated or saved, not what it trains: runs differing only
# in these are seeds of one schedule
NOT_TRAINING = {"name", "eval_every", "fine_eval_from", "fine_eval_every", "eval_batch_size", "eval_images",
                "checkpoint_every", "checkpoint_interval_s"}


def training_settings(env: dict[str, Any], trial: str) -> dict[str, Any]:
    """What ``trial`` trained with in a run (its resolved settings in env.json's plan), less the
    settings of when it was evaluated or saved; {} for a run whose env.json has no plan."""
    stored = next((t for t in (env.get("plan") or {}).get("trials", []) if t.get("name") == trial), None)
    try:  # a plan from before a setting existed reads it as its default, as the run trained with it
        spec = asdict(TrialSpec.from_json(stored)) if stored else {}
    except (KeyError, TypeError):
        spec = dict(stored or {})
    flat = {k: v for k, v in spec.items() if k not in NOT_TRAINING and k != "schedule_args"}
    return {**flat, **{k: v for k, v in spec.get("schedule_args", [])}}


def _labels(keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """A label per (trial, settings): the trial's name, and where one name ran with other settings,
    the settings that differ."""
    out = {}
    for trial, sig in keys:
        mine, others = json.loads(sig), [json.loads(s) for t, s in keys if t == trial and s != sig]
        diff = sorted(k for k in mine if any(o.get(k) != mine[k] for o in others))
        out[(trial, sig)] = trial + (f" ({', '.join(f'{k}={mine[k]}' for k in diff)})" if diff else "")
    return out


def accuracy_curves(runs: list[ComparedRun]) -> dict[str, dict[str, pd.DataFrame]]:
    """schedule as trained -> "seed N (#k)" -> that seed's evaluation points, from each run's
    curves.csv: the seeds of one setting pooled across run folders."""
    groups: dict[tuple[str, str], dict[str, pd.DataFrame]] = {}
    for r in runs:
        curves = frame(read_rows(r.run.path / "curves.csv", CurveRow, missing_ok=True), CurveRow)
        for (trial, seed), c in curves.groupby(["trial", "seed"], sort=False):
            sig = json.dumps(training_settings(r.run.env, trial), sort_keys=True, default=str)
            groups.setdefault((trial, sig), {})[f"seed {seed} ({r.label})"] = c
    labels = _labels(list(groups))
    return {labels[k]: seeds for k, seeds in groups.items()}


def plot_runs(runs: list[ComparedRun], path: Path, caption: str = "") -> None:
    targets = {float(t) for r in runs for t in r.rows.target_acc}
    target = targets.pop() if len(targets) == 1 else None  # no common target: no line, no dots
    devices = ", ".join(dict.fromkeys(r.run.device_name for r in runs))
    plot_accuracy(accuracy_curves(runs), target, path, f"test accuracy; {devices}", caption)


def main(args: argparse.Namespace, console: Console) -> int:
    if args.plot:
        check_writable(args.plot.parent, "--plot folder")
    paths = [p for d in args.run_dirs for p in expand(Path(d))]
    runs = [read_compared(p, f"#{i}") for i, p in enumerate(paths, 1)]  # all checked first
    trials = [r for r in runs if r.run.kind == "run"]
    if args.plot and not trials:
        raise UsageError("--plot draws test accuracy: give it `run` or `suite` folders")
    print_wide(console, legend(runs))
    if trials:
        joined = trials_side_by_side(trials) if len(trials) <= WIDE_RUNS else trials_one_per_row(trials)
        print_wide(console, table_of(joined, "time to target: reached seeds and median seconds and steps; "
                                     f"a time ratio below 1 is faster than {trials[0].label}", "trial"))
        if args.plot:
            args.plot.parent.mkdir(parents=True, exist_ok=True)
            plot_runs(trials, args.plot, args.caption or "")
            console.print(f"plot: {args.plot}")
    tps = [r for r in runs if r.run.kind == "throughput"]
    if tps:
        wide = throughput_side_by_side(tps)
        achieved = any(c.split()[0] in ACHIEVED for c in wide.columns)
        print_wide(console, table_of(wide, f"throughput: median img/s; a ratio above 1 is faster than {tps[0].label}"
                                     + ("; TFLOP/s and MFU of one device, against its run's measured matmul ceiling"
                                        if achieved else ""), "case"))
    return EXIT_OK
