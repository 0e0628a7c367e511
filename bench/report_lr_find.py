"""Rendering of `bench lr-find` folders: the suggestions table, summary.md and lr_find.png.

Suggestions are recomputed from lr_find.csv with sc_fast.lr_find's pure functions, so
``python -m bench report RUN_DIR`` redraws a finished range test exactly as the run did.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on benchmark machines
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.results import LrFindRow, atomic_write, atomic_write_text, read_json, read_rows  # noqa: E402
from sc_fast import lr_find  # noqa: E402

@dataclass(frozen=True)
class Found:
    ramp: str
    suggestion: lr_find.Suggestion
    at: LrFindRow  # the curve point the suggestion was read from


def suggestions(rows: list[LrFindRow], env: dict[str, Any]) -> list[Found]:
    """Recomputed from the CSV rows (pure functions), so a re-render gives the same answer."""
    exp = [r for r in rows if r.ramp == "exponential"]
    evals = [r for r in rows if r.ramp == "linear" and r.test_acc is not None]
    planned = env.get("ramps", {}).get("exponential", {}).get("planned_steps", len(exp))
    found = [Found("exponential", s, exp[s.index])
             for s in lr_find.fastai_suggestions([r.lr for r in exp], [r.smoothed_loss for r in exp], planned)]
    found += [Found("linear", s, evals[s.index])
              for s in lr_find.paper_suggestions([r.lr for r in evals], [r.test_acc for r in evals],  # type: ignore[misc]
                                                 [r.test_loss for r in evals])]  # type: ignore[misc]
    return found


NOTES = {
    "valley": "fastai's default: inside the longest descent of the smoothed loss",
    "steep": "steepest descent of the smoothed loss against log LR",
    "minimum/10": "a tenth of the LR at the smoothed-loss minimum",
    "accuracy plateau end": "the paper's rule: largest LR before test accuracy falls off its plateau",
    "test-loss rise": "the paper's rule read on test loss: largest LR before it starts to rise",
}


def render(run_dir: Path, console: Console | None) -> list[Found]:
    env = read_json(run_dir / "env.json")
    rows = read_rows(run_dir / "lr_find.csv", LrFindRow, missing_ok=True)
    found = suggestions(rows, env)
    if console is not None:
        console.print(_table(found, run_dir.name))
    if rows:
        plot(rows, found, run_dir / "lr_find.png")
    atomic_write_text(run_dir / "summary.md", summary_md(run_dir, env, rows, found))
    return found


def _table(found: list[Found], title: str) -> Table:
    """Narrow on purpose (logs are 80 columns): what each method means is in summary.md."""
    t = Table(title=f"{title}: suggested learning rates")
    for col in ("ramp", "method", "suggested LR", "read at step"):
        t.add_column(col, justify="right" if col in ("suggested LR", "read at step") else "left")
    for f in found:
        t.add_row(f.ramp, f.suggestion.method, f"{f.suggestion.lr:.4g}", str(f.at.step))
    return t


def _ramp_text(ramp: str, info: dict[str, Any], lf: dict[str, Any]) -> str:
    if "error" in info:
        return f"- {ramp}: failed: {info['error']}"
    s = lf.get(ramp, {})
    span = (f"{s.get('start_lr', 0):g} -> {s.get('end_lr'):g} exponentially" if ramp == "exponential"
            else f"0 -> {s.get('end_lr'):g} linearly, test every {s.get('eval_every')} steps on "
                 f"{lf.get('eval_images') or 10000} images")
    return (f"- {ramp}: LR {span} over {info.get('planned_steps')} steps; ran {info.get('steps_run')} "
            f"steps, {info.get('stop_reason')}")


def summary_md(run_dir: Path, env: dict[str, Any], rows: list[LrFindRow], found: list[Found]) -> str:
    lf = env.get("lr_find", {})
    hw = env.get("env", {})
    lines = [f"# LR range test {run_dir.name}", "",
             f"Trial `{lf.get('trial')}`: batch {lf.get('batch_size')}, weight decay {lf.get('weight_decay')}, "
             f"augment {lf.get('augment')}; {lf.get('device')} ({hw.get('gpu') or hw.get('cpu')}), "
             f"{lf.get('precision')}, {lf.get('pipeline')} pipeline, seed {lf.get('seed')}.", "",
             f"State: {env.get('state')}", ""]
    lines += [_ramp_text(r, i, lf) for r, i in env.get("ramps", {}).items()] + [""]
    lines += ["## Suggestions", "", "| ramp | method | suggested LR | read at step | LR there | meaning |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {f.ramp} | {f.suggestion.method} | {f.suggestion.lr:.4g} | {f.at.step} | {f.at.lr:.4g} | "
              f"{NOTES.get(f.suggestion.method, '')} |" for f in found]
    if not found:
        lines.append("| - | no finite curve to read | - | - | - | - |")
    lines += ["", "fastai's suggestions read the smoothed training loss of the exponential ramp, skipping "
              "its first tenth and last 5 points; the paper's read the linear ramp's test accuracy "
              "(smoothed over 3 evaluations) and test loss.", ""]
    if rows:
        lines += ["![LR range test](lr_find.png)", ""]
    return "\n".join(lines)


def plot(rows: list[LrFindRow], found: list[Found], path: Path) -> None:
    ramps = [r for r in lr_find.RAMPS if any(row.ramp == r for row in rows)]
    fig, axes = plt.subplots(1, len(ramps), figsize=(7 * len(ramps), 4.5), squeeze=False)
    for ax, ramp in zip(axes[0], ramps):
        mine = [f for f in found if f.ramp == ramp]
        curve = [r for r in rows if r.ramp == ramp]
        (_plot_exponential if ramp == "exponential" else _plot_linear)(ax, curve, mine)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _plot_exponential(ax: Any, rows: list[LrFindRow], found: list[Found]) -> None:
    lrs = [r.lr for r in rows]
    ax.plot(lrs, [r.loss for r in rows], color="tab:blue", alpha=0.3, label="loss")
    ax.plot(lrs, [r.smoothed_loss for r in rows], color="tab:blue", label="smoothed loss")
    colours = ["tab:red", "tab:green", "tab:purple"]
    for f, c in zip(found, colours):
        ax.plot(f.at.lr, f.at.smoothed_loss, "o", color=c, label=f"{f.suggestion.method}: {f.suggestion.lr:.3g}")
    smooth = [r.smoothed_loss for r in rows if _finite(r.smoothed_loss)]
    if smooth:  # the explosion at the end would flatten the interesting part
        lo, hi = min(smooth), max(smooth)
        ax.set_ylim(lo - 0.05 * (hi - lo) - 1e-3, hi + 0.05 * (hi - lo) + 1e-3)
    ax.set_xscale("log")
    ax.set(title="exponential ramp (fastai)", xlabel="learning rate (log)", ylabel="training loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def _plot_linear(ax: Any, rows: list[LrFindRow], found: list[Found]) -> None:
    evals = [r for r in rows if r.test_acc is not None]
    if not evals:
        ax.plot([r.lr for r in rows], [r.smoothed_loss for r in rows], label="smoothed training loss")
        ax.set(title="linear ramp (paper): no evaluation reached", xlabel="learning rate", ylabel="training loss")
        return
    ax.plot([r.lr for r in evals], [r.test_acc for r in evals], "o-", color="tab:blue", label="test accuracy")
    ax.set(title="linear ramp (paper)", xlabel="learning rate", ylabel="test accuracy")
    twin = ax.twinx()
    twin.plot([r.lr for r in evals], [r.test_loss for r in evals], "s--", color="tab:orange", alpha=0.7,
              label="test loss")
    twin.set_ylabel("test loss")
    if all(_finite(r.test_loss) and r.test_loss > 0 for r in evals):
        twin.set_yscale("log")  # at large LRs test loss can jump by orders of magnitude
    for f, style in zip(found, ("-", ":")):
        ax.axvline(f.suggestion.lr, color="tab:red", linestyle=style,
                   label=f"{f.suggestion.method}: {f.suggestion.lr:.3g}")
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="best", fontsize=8)
