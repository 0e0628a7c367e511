"""``python -m bench lr-find``: the LR range test (fastai's exponential, the paper's linear, or both).

Batch size, weight decay, label smoothing, BN momentum and augmentation come from the
``[lr_find].trial`` trial; precision and memory format from ``[devices.*]``. Writes
``<out>/<run_id>/`` with env.json (kind "lr_find"), lr_find.csv, summary.md and lr_find.png.
``render`` re-reads those files, so ``python -m bench report RUN_DIR`` redraws a finished run.
"""

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on benchmark machines
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from bench import config as config_mod  # noqa: E402
from bench.cli import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError, check_writable, load_data,  # noqa: E402
                       make_run_dir, resolve_device)
from bench.config import Config, ConfigError, TrialSpec, resolved_dict  # noqa: E402
from bench.results import (LrFindRow, atomic_write, atomic_write_json, atomic_write_text, read_json,  # noqa: E402
                           read_rows, write_rows)
from bench.runner import DTYPES  # noqa: E402
from sc_fast import lr_find  # noqa: E402
from sc_fast.env import fingerprint  # noqa: E402
from sc_fast.model import resnet56  # noqa: E402
from sc_fast.pipeline import Pipeline, PipelineSpec, make_pipeline, resolve_pipeline  # noqa: E402
from sc_fast.train import TrainConfig  # noqa: E402

# Used for keys [lr_find] leaves out; bench.toml sets them all.
DEFAULTS: dict[str, Any] = {
    "start_lr": 1e-4, "end_lr": 10.0, "steps": 100, "smoothing": 0.98, "diverge_factor": 4.0,
    "linear_end_lr": 3.0, "linear_steps": 1000, "eval_every": 50, "eval_images": 2000,
}
SEED = 0


@dataclass(frozen=True)
class LrFindPlan:
    mode: str  # exponential | linear | both
    trial: TrialSpec
    exponential: lr_find.ExponentialSettings
    linear: lr_find.LinearSettings
    eval_images: int
    device: str
    pipeline: str
    precision: str
    channels_last: bool

    @property
    def ramps(self) -> list[str]:
        return list(lr_find.RAMPS) if self.mode == "both" else [self.mode]

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "trial": self.trial.name, "batch_size": self.trial.batch_size,
                "weight_decay": self.trial.weight_decay, "augment": self.trial.augment,
                "label_smoothing": self.trial.label_smoothing, "bn_momentum": self.trial.bn_momentum,
                "train_images": self.trial.train_images, "eval_images": self.eval_images, "seed": SEED,
                "device": self.device, "pipeline": self.pipeline, "precision": self.precision,
                "channels_last": self.channels_last, "exponential": asdict(self.exponential),
                "linear": asdict(self.linear)}


# ---- settings ------------------------------------------------------------------------------------

def _check_flags(args: argparse.Namespace) -> None:
    flags = {"--min-lr": args.min_lr, "--max-lr": args.max_lr}
    for flag, v in flags.items():
        if v is not None and not (math.isfinite(v) and v > 0):
            raise UsageError(f"{flag} must be a positive number, got {v}")
    if args.mode == "linear" and any(v is not None for v in (args.min_lr, args.max_lr, args.steps)):
        # The linear ramp starts at 0 by definition; its end and length are config keys.
        raise UsageError("--min-lr/--max-lr/--steps set the exponential ramp; with --mode linear set "
                         "[lr_find].linear_end_lr and linear_steps in the config instead")


def plan_from(cfg: Config, args: argparse.Namespace, device: torch.device, pipeline: str) -> LrFindPlan:
    _check_flags(args)
    s = {**DEFAULTS, **cfg.lr_find}
    start = s["start_lr"] if args.min_lr is None else args.min_lr
    end = s["end_lr"] if args.max_lr is None else args.max_lr
    if start >= end:
        raise UsageError(f"exponential ramp: start LR {start:g} (--min-lr or lr_find.start_lr in {cfg.path}) "
                         f"must be below end LR {end:g} (--max-lr or lr_find.end_lr)")
    name = args.trial or cfg.lr_find.get("trial", next(iter(cfg.trials)))
    if name not in cfg.trials:
        raise UsageError(f"--trial: {cfg.path} has no trial {name!r} (known: {', '.join(cfg.trials)})")
    trial = cfg.trials[name]
    dev = cfg.devices[device.type]
    return LrFindPlan(
        mode=args.mode, trial=trial,
        exponential=lr_find.ExponentialSettings(start_lr=start, end_lr=end, steps=args.steps or s["steps"],
                                                smoothing=s["smoothing"], diverge_factor=s["diverge_factor"]),
        linear=lr_find.LinearSettings(end_lr=s["linear_end_lr"], steps=s["linear_steps"],
                                      eval_every=s["eval_every"], smoothing=s["smoothing"]),
        eval_images=s["eval_images"], device=str(device), pipeline=pipeline, precision=dev.precision,
        channels_last=dev.channels_last)


def _train_config(plan: LrFindPlan) -> TrainConfig:
    t = plan.trial
    # compile off: a range test of ~100 steps would spend longer compiling than training, and
    # compilation does not change what the curve says.
    return TrainConfig(max_steps=max(plan.exponential.steps, plan.linear.steps), eval_every=plan.linear.eval_every,
                       weight_decay=t.weight_decay, nesterov=t.nesterov, label_smoothing=t.label_smoothing,
                       precision=plan.precision, compile="off", warmup_steps=0)


def _pipeline(plan: LrFindPlan, data: Any, device: torch.device) -> Pipeline:
    t = plan.trial
    spec = PipelineSpec(batch_size=t.batch_size, eval_batch_size=t.eval_batch_size, augment=t.augment,
                        dtype=DTYPES[plan.precision], channels_last=plan.channels_last, seed=SEED,
                        train_images=t.train_images, eval_images=plan.eval_images)
    try:
        return make_pipeline(plan.pipeline, data, spec, device)
    except ValueError as e:  # e.g. a batch larger than the training subset
        raise ConfigError(f"lr_find.trial {t.name!r}: {e}") from None


def _model_factory(plan: LrFindPlan, device: torch.device):  # -> Callable[[], nn.Module]
    def build() -> torch.nn.Module:
        model = resnet56(bn_momentum=plan.trial.bn_momentum).to(device)
        return model.to(memory_format=torch.channels_last) if plan.channels_last else model
    return build


# ---- the command ---------------------------------------------------------------------------------

def cmd_lr_find(args: argparse.Namespace, console: Console) -> int:
    cfg = config_mod.load(args.config)
    device = resolve_device(args.device)
    kind, notice = resolve_pipeline(cfg.data.pipeline, device)
    plan = plan_from(cfg, args, device, kind)
    out = Path(args.out)
    check_writable(out)
    data = load_data(cfg, args.data)
    pipeline = _pipeline(plan, data, device)  # before the run folder: a bad pipeline writes nothing
    if notice:
        console.print(f"[yellow]{notice}[/yellow]")
    run_dir = make_run_dir(out, device)
    console.print(f"run folder: {run_dir}")
    env = {"run_id": run_dir.name, "kind": "lr_find", "state": "running", "env": fingerprint(),
           "config": resolved_dict(cfg), "lr_find": plan.to_json(), "ramps": {}}
    atomic_write_json(run_dir / "env.json", env)
    tests: list[lr_find.RangeTest] = []
    failed = False
    try:
        for ramp in plan.ramps:
            result = _run_ramp(ramp, plan, pipeline, device, console)
            if isinstance(result, str):
                env["ramps"][ramp] = {"error": result}
                failed = True
                continue
            tests.append(result)
            env["ramps"][ramp] = {"planned_steps": result.planned_steps, "steps_run": len(result.points),
                                  "stop_reason": result.stop_reason}
            write_rows(run_dir / "lr_find.csv", rows_of(tests), LrFindRow)
            atomic_write_json(run_dir / "env.json", env)
    except KeyboardInterrupt:
        env["state"] = "interrupted"
        atomic_write_json(run_dir / "env.json", env)
        console.print(f"[yellow]interrupted: finished ramps are in {run_dir}[/yellow]")
        return EXIT_INTERRUPTED
    env["state"] = "failed" if failed else "complete"
    atomic_write_json(run_dir / "env.json", env)
    render(run_dir, console)
    return EXIT_FAILED if failed else EXIT_OK


def _run_ramp(ramp: str, plan: LrFindPlan, pipeline: Pipeline, device: torch.device,
              console: Console) -> lr_find.RangeTest | str:
    """One range test with a progress bar; an error inside it comes back as its one-line text."""
    steps = plan.exponential.steps if ramp == "exponential" else plan.linear.steps
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*cols, console=console, transient=False) as progress:
        task = progress.add_task(f"{ramp} ramp", total=steps)
        every, t0 = max(1, steps // 10), time.perf_counter()

        def on_step(n: int) -> None:
            progress.update(task, completed=n)
            if not console.is_terminal and (n % every == 0 or n == steps):  # logs: a line per 10%
                console.print(f"{ramp} ramp: step {n}/{steps}, {time.perf_counter() - t0:.0f} s")
        try:
            if ramp == "exponential":
                return lr_find.exponential_test(_model_factory(plan, device), pipeline, _train_config(plan), device,
                                                plan.exponential, seed=SEED, on_step=on_step)
            return lr_find.linear_test(_model_factory(plan, device), pipeline, _train_config(plan), device,
                                       plan.linear, seed=SEED, on_step=on_step)
        except Exception as e:  # OOM and the like: recorded, the other ramp still runs
            text = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
            console.print(f"[red]{ramp} ramp failed: {text}[/red]")
            return text
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def rows_of(tests: list[lr_find.RangeTest]) -> list[LrFindRow]:
    return [LrFindRow(step=p.step, lr=p.lr, loss=p.loss, smoothed_loss=p.smoothed_loss, ramp=t.ramp,
                      test_loss=p.test_loss, test_acc=p.test_acc) for t in tests for p in t.points]


# ---- rendering: summary.md, lr_find.png, the rich table ---------------------------------------------

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
