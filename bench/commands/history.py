"""``python -m bench history [RESULTS_DIR]``: img/s per case across commits, one device at a time.

Reads every throughput run folder under RESULTS_DIR (recursively; other kinds and damaged folders
are passed over with a note), keeps those of one device (``--device``: env.json's device_name or
a part of it; default the device of the newest run) and pools the runs of each commit (a run made
with uncommitted changes is its own point, ``<sha>+dirty``). Points are ordered by the commit's
date (``git log`` in the repository holding RESULTS_DIR), or by the run's time when git does not
know the commit.

Each point's samples are the per-repeat img/s of its runs when they kept raw step times
(throughput_steps.csv), else each run's median img/s. The noise band is
``bench.stats.noise_band`` of the per-repeat img/s, or, for runs without raw samples, the
p10-p90 step times turned into img/s. A change beyond noise (``bench.stats.changes_beyond_noise``:
significant and above 2%) needs at least 2 samples on both points, so runs without raw samples
never mark one.

Where runs recorded them (throughput rows since issue 26), each point also shows the achieved
model TFLOP/s and MFU of one device: the median over the point's runs; '-' for older runs.
"""

import argparse
import statistics
import subprocess
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from rich.console import Console

from bench.common import EXIT_OK, UsageError, check_writable
from bench.report import print_wide
from bench.report_history import HistoryPoint, history_table, plot_history
from bench.results import RunError, RunFolder, StepTimeRow, ThroughputRow
from bench.runs import RunRecord, read_run
from bench.stats import changes_beyond_noise, noise_band

HELP = "img/s per case across the commits of the throughput runs under a folder"
PARENTS = ()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results_dir", nargs="?", default="results", metavar="RESULTS_DIR",
                   help="folder searched recursively for throughput runs (default results/)")
    p.add_argument("--device", metavar="NAME", help="env.json's device_name or a part of it, e.g. 'CPU AMD EPYC' "
                   "(default: the device of the newest run)")
    p.add_argument("--case", action="append", help="only this case (repeatable)")
    p.add_argument("--plot", metavar="FILE", help="also draw the history as a PNG")


# ---- reading the runs -----------------------------------------------------------------------------

def read_throughput_run(path: Path) -> RunRecord | None:
    """The throughput run in ``path`` with its raw step times; None for another kind or one stopped
    before its first row. RunError when damaged."""
    if RunFolder.open(path).kind != "throughput" or not (path / "throughput.csv").exists():
        return None
    return read_run(path, with_steps=True)


def find_runs(root: Path, console: Console) -> list[RunRecord]:
    if not root.is_dir():
        raise UsageError(f"RESULTS_DIR {root}: no such folder")
    runs = []
    for env_path in sorted(root.rglob("env.json")):
        try:
            run = read_throughput_run(env_path.parent)
        except RunError as e:
            console.print(f"[yellow]note: passed over {e}[/yellow]")
            continue
        if run is not None:
            runs.append(run)
    if not runs:
        raise UsageError(f"RESULTS_DIR {root}: no throughput runs in it")
    return runs


def pick_device(runs: list[RunRecord], requested: str | None) -> str:
    """The one device_name ``requested`` names (equal, else contained, case-insensitive); the
    newest run's without it."""
    names = sorted({r.device_name for r in runs})
    if requested is None:
        return max(runs, key=lambda r: r.started).device_name
    exact = [n for n in names if n.lower() == requested.lower()]
    found = exact or [n for n in names if requested.lower() in n.lower()]
    if len(found) != 1:
        why = "matches none" if not found else f"matches several ({'; '.join(found)})"
        raise UsageError(f"--device {requested}: {why} of the devices measured: {'; '.join(names)}")
    return found[0]


def commit_dates(repo: Path, commits: set[str]) -> dict[str, datetime]:
    """Commit -> committer date, for the commits git knows in the repository holding ``repo``."""
    dates = {}
    for sha in commits:
        try:
            out = subprocess.run(["git", "log", "-1", "--format=%cI", sha, "--"], cwd=repo, capture_output=True,
                                 text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            return dates  # no git here: every point is dated by its run
        if out.returncode == 0 and out.stdout.strip():
            dates[sha] = datetime.fromisoformat(out.stdout.strip())
    return dates


# ---- the points (pure) ------------------------------------------------------------------------------

def repeat_rates(row: ThroughputRow, steps: list[StepTimeRow]) -> list[float]:
    """Per-repeat img/s from the raw step times: batch x steps / the repeat's seconds."""
    by_repeat: dict[int, list[float]] = {}
    for s in steps:
        by_repeat.setdefault(s.repeat, []).append(s.step_s)
    return [row.batch_size * len(ts) / sum(ts) for ts in by_repeat.values()]


def run_samples(run: RunRecord, row: ThroughputRow) -> tuple[list[float], tuple[float, float] | None]:
    """(samples, band from p10-p90 step times or None when raw samples exist) of one case of one run."""
    raw = (run.steps or {}).get(row.case)
    if raw:
        return repeat_rates(row, raw), None
    assert row.imgs_per_s is not None
    if row.step_ms_p10 and row.step_ms_p90:
        return [row.imgs_per_s], (row.batch_size * 1e3 / row.step_ms_p90, row.batch_size * 1e3 / row.step_ms_p10)
    return [row.imgs_per_s], (row.imgs_per_s, row.imgs_per_s)


def commit_key(run: RunRecord) -> str:
    if run.commit is None:
        return f"?{run.path.name}"
    return run.commit[:10] + ("+dirty" if run.dirty else "")


def achieved(case: str, runs: list[RunRecord]) -> tuple[float | None, float | None]:
    """(TFLOP/s, MFU) of one case pooled over runs: the median of the runs that recorded them; None
    where none did (runs from before throughput rows had them)."""
    rows = [r for run in runs for r in run.rows if r.case == case and r.status == "ok"]
    tflops = [r.tflops for r in rows if r.tflops is not None]
    mfu = [r.mfu for r in rows if r.mfu is not None]
    return (statistics.median(tflops) if tflops else None, statistics.median(mfu) if mfu else None)


def make_point(case: str, key: str, runs: list[RunRecord], dates: dict[str, datetime]) -> HistoryPoint | None:
    """One case at one commit, pooling its runs; None when no run measured the case."""
    samples: list[float] = []
    bands: list[tuple[float, float]] = []
    raw = False  # some run kept raw step times: the band is noise_band of the samples
    for run in runs:
        for row in (r for r in run.rows if r.case == case and r.status == "ok" and r.imgs_per_s):
            got, band = run_samples(run, row)
            samples += got
            bands += [band] if band else []
            raw = raw or band is None
    if not samples:
        return None
    low, high = noise_band(samples) if raw else (min(b[0] for b in bands), max(b[1] for b in bands))
    sha = runs[0].commit
    date = dates.get(sha or "") or min(r.started for r in runs)
    tflops, mfu = achieved(case, runs)
    return HistoryPoint(case=case, commit=key, date=date, dated_by="commit" if sha in dates else "run",
                        runs=len(runs), imgs_per_s=statistics.median(samples), band_low=low, band_high=high,
                        band_from="repeats" if raw else "p10-p90 steps", samples=tuple(samples), changed=False,
                        tflops=tflops, mfu=mfu)


def history_points(runs: list[RunRecord], dates: dict[str, datetime],
                   cases: list[str] | None) -> list[HistoryPoint]:
    """Points by case (in the order measured), each case's commits in date order, changes marked."""
    by_commit: dict[str, list[RunRecord]] = {}
    for run in sorted(runs, key=lambda r: r.started):
        by_commit.setdefault(commit_key(run), []).append(run)
    names = cases or list(dict.fromkeys(r.case for run in runs for r in run.rows))
    out = []
    for case in names:
        ps = [p for key, rs in by_commit.items() if (p := make_point(case, key, rs, dates))]
        ps.sort(key=lambda p: p.date)
        flags = changes_beyond_noise([p.samples for p in ps])
        out += [replace(p, changed=f) for p, f in zip(ps, flags, strict=True)]
    return out


# ---- the command ----------------------------------------------------------------------------------

def main(args: argparse.Namespace, console: Console) -> int:
    if args.plot:
        check_writable(Path(args.plot).parent, "--plot folder")
    root = Path(args.results_dir)
    runs = find_runs(root, console)
    device = pick_device(runs, args.device)
    mine = [r for r in runs if r.device_name == device]
    known = list(dict.fromkeys(r.case for run in mine for r in run.rows))
    for c in args.case or []:
        if c not in known:
            raise UsageError(f"--case {c}: no run on {device} measured it (measured: {', '.join(known)})")
    points = history_points(mine, commit_dates(root, {r.commit for r in mine if r.commit}), args.case)
    others = sorted({r.device_name for r in runs} - {device})
    title = (f"throughput history on {device}: {len(mine)} runs, {len({p.commit for p in points})} commits "
             f"under {root}" + (f" (other devices: {'; '.join(others)})" if others else ""))
    print_wide(console, history_table(points, title))
    if not any(len(p.samples) > 1 for p in points):
        console.print("note: no run kept raw step times: bands are p10-p90 step times, no change can be tested")
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot_history(points, title, Path(args.plot))
        console.print(f"plot: {args.plot}")
    return EXIT_OK
