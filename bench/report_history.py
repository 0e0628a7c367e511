"""``bench history``'s table and plot: img/s per case per commit with each point's noise band and
the changes beyond noise marked. The points come from ``bench.commands.history``."""

import textwrap
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on benchmark machines
import matplotlib.pyplot as plt  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.results import atomic_write  # noqa: E402


@dataclass(frozen=True)
class HistoryPoint:
    """One case at one commit: every throughput run of that commit on the device pooled."""

    case: str
    commit: str  # short sha, "+dirty" when the runs had uncommitted changes; "?" + run id when unknown
    date: datetime  # the commit's date, or the first run's time when git does not know the commit
    dated_by: str  # commit | run
    runs: int
    imgs_per_s: float  # median of the samples
    band_low: float  # noise band (img/s)
    band_high: float
    band_from: str  # "repeats": noise_band of per-repeat img/s; "p10-p90 steps": no raw samples kept
    samples: tuple[float, ...]  # per-repeat img/s where raw step times exist, else each run's median
    changed: bool  # differs from the previous commit beyond noise (bench.stats.changes_beyond_noise)
    # achieved model TFLOP/s of one device and MFU, median over the runs; None: no run recorded them
    tflops: float | None = None
    mfu: float | None = None


def _num(v: float) -> str:
    return f"{v:,.0f}" if v >= 1000 else f"{v:,.1f}"


def _achieved(p: HistoryPoint) -> list[str]:
    """The TFLOP/s and MFU cells, as summary.md shows them; '-' for a point whose runs lack them."""
    return ["-" if p.tflops is None else f"{p.tflops:,.3f}", "-" if p.mfu is None else f"{p.mfu:.1%}"]


def history_table(points: list[HistoryPoint], title: str) -> Table:
    """One row per point; TFLOP/s and MFU columns only when some point's runs recorded them."""
    achieved = any(p.tflops is not None or p.mfu is not None for p in points)
    t = Table(title=title)
    for col in ("case", "commit", "date", "runs", "img/s", "noise band", "band from", "samples",
                *(("TFLOP/s", "MFU") if achieved else ()), "change"):
        t.add_column(col, justify="left" if col in ("case", "commit", "band from", "change") else "right")
    prev: dict[str, HistoryPoint] = {}
    for p in points:
        before = prev.get(p.case)
        change = f"{p.imgs_per_s / before.imgs_per_s - 1:+.1%}" if before else ""
        change += " BEYOND NOISE" if p.changed else ""
        t.add_row(p.case, p.commit, p.date.strftime("%Y-%m-%d %H:%M") + ("" if p.dated_by == "commit" else " (run)"),
                  str(p.runs), _num(p.imgs_per_s), f"{_num(p.band_low)}-{_num(p.band_high)}", p.band_from,
                  str(len(p.samples)), *(_achieved(p) if achieved else ()), change)
        prev[p.case] = p
    return t


def plot_history(points: list[HistoryPoint], title: str, path: Path) -> None:
    """One panel per case, commits in date order on a shared axis; error bars are the noise bands,
    red rings mark changes beyond noise."""
    commits = list(dict.fromkeys(p.commit for p in points))
    labels = {p.commit: f"{p.commit}\n{p.date:%Y-%m-%d}" for p in points}
    cases = list(dict.fromkeys(p.case for p in points))
    fig, axes = plt.subplots(len(cases), 1, figsize=(max(6, 1.4 * len(commits) + 3), 2.4 * len(cases) + 0.8),
                             squeeze=False, sharex=True, layout="constrained")
    for ax, case in zip(axes[:, 0], cases, strict=True):
        ps = [p for p in points if p.case == case]
        xs = [commits.index(p.commit) for p in ps]
        ys = [p.imgs_per_s for p in ps]
        err = [[y - p.band_low for y, p in zip(ys, ps, strict=True)],
               [p.band_high - y for y, p in zip(ys, ps, strict=True)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4)
        changed = [(x, y) for x, y, p in zip(xs, ys, ps, strict=True) if p.changed]
        if changed:
            ax.scatter(*zip(*changed), s=160, facecolors="none", edgecolors="red", linewidths=2,
                       label="change beyond noise", zorder=3)
            ax.legend(loc="best", fontsize=8)
        ax.set_ylabel(f"{case}\nimg/s")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xticks(range(len(commits)), [labels[c] for c in commits], fontsize=8)
    axes[-1, 0].set_xlim(-0.5, len(commits) - 0.5)
    fig.suptitle("\n".join(textwrap.wrap(title, 100)), fontsize=9)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
