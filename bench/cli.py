"""``python -m bench``: the command line. Exit codes (SPEC): 0 done; 1 a trial errored or a
throughput regression exceeded its limit; 2 usage, config or data error (one line, no traceback,
nothing written); 130 interrupted (finished work kept; ``--resume`` goes on).
"""

import argparse
import importlib
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from rich.console import Console

from bench import config as config_mod
from bench.config import ConfigError
from bench.results import RunError, new_run_dir, read_json
from sc_fast.data import Cifar10, DataError, load, locate
from sc_fast.env import device_slug
from sc_fast.pipeline import PipelineUnavailable, resolve_pipeline
from sc_fast.schedules import ScheduleError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad input found before any work: exit 2 with this one line."""


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA GPU is visible to PyTorch "
                             f"(torch {torch.__version__}, CUDA build {torch.version.cuda})")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_writable(out: Path) -> None:
    """UsageError unless a run folder can be made under ``out``; creates nothing."""
    probe = out.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--out {out}: not writable ({probe} is not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: not writable (no write permission in {probe})")


def make_run_dir(out: Path, device: torch.device) -> Path:
    try:
        return new_run_dir(out, device_slug(device))
    except OSError as e:
        raise UsageError(f"--out {out}: not writable ({e.strerror or e})") from None


def locate_data(cfg: config_mod.Config, data_root: str | None) -> Path:
    return locate(data_root or cfg.data.root or None, download=cfg.data.download)


def load_data(cfg: config_mod.Config, data_root: str | None):  # -> Cifar10
    return load(locate_data(cfg, data_root))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# ---- commands --------------------------------------------------------------------------------------

def _pipeline(requested: str, source: str, device: torch.device) -> tuple[str, str | None]:
    try:
        return resolve_pipeline(requested, device)
    except PipelineUnavailable as e:
        raise UsageError(f"{source} {requested}: {e}") from None


def _resume(args: argparse.Namespace, console: Console) -> tuple[Path, config_mod.Config, Any, Cifar10] | None:
    """(run folder, config, plan, data) to go on with, or None when every trial has its row. The
    folder is checked whole before anything is loaded or written: a damaged run stays as it was."""
    from bench import runner

    run_dir = Path(args.resume)
    plan = runner.load_plan(run_dir)
    todo = runner.pending(run_dir, plan)
    if not todo:
        console.print(f"{run_dir}: every trial has its row; nothing to do")
        return None
    device = resolve_device(plan.device.split(":")[0])
    if plan.pipeline == "dali":
        _pipeline("dali", f"{run_dir}: pipeline", device)
    # The folder records the config file and the data folder it ran with; flags override them.
    env = read_json(run_dir / "env.json")
    recorded = env.get("config") if isinstance(env.get("config"), dict) else {}
    config_path = args.config or (recorded.get("path") if Path(str(recorded.get("path"))).is_file() else None)
    cfg = config_mod.load(config_path)
    data = load(locate_data(cfg, args.data or env.get("data_dir")))
    console.print(f"resuming {run_dir}: {len(todo)} of {len(plan.pairs())} trials to run")
    return run_dir, cfg, plan, data


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from bench import report, runner

    if args.resume:
        resumed = _resume(args, console)
        if resumed is None:
            return EXIT_OK
        run_dir, cfg, plan, data = resumed
        data_dir = None
    else:
        cfg = config_mod.load(args.config)
        device = resolve_device(args.device)
        profile = cfg.profile(args.profile, device.type)
        if args.profile == "auto" and device.type == "cpu":
            console.print(f"[yellow]No CUDA GPU: running the CPU profile {profile.name!r}: "
                          f"{profile.description}[/yellow]")
        elif profile.device and profile.device != device.type:
            console.print(f"[yellow]profile {profile.name!r} is sized for {profile.device}; "
                          f"running on {device.type}[/yellow]")
        trials = cfg.resolve(profile, args.trial)
        target = profile.target if args.target is None else args.target
        if not 0 < target <= 1:
            raise UsageError(f"--target must be in (0, 1], got {target}")
        seeds = args.seeds or profile.seeds
        pipeline, notice = _pipeline(args.pipeline or cfg.data.pipeline,
                                     "--pipeline" if args.pipeline else f"{cfg.path}: data.pipeline", device)
        if notice:
            console.print(f"[yellow]{notice}[/yellow]")
        plan = runner.Plan(profile=profile.name, trials=tuple(trials), seeds=tuple(range(seeds)), target=target,
                           stop_at_target=profile.stop_at_target, device=str(device), pipeline=pipeline,
                           settings=cfg.devices[device.type])
        out = Path(args.out)
        check_writable(out)  # before the data: a bad --out costs nothing
        data_dir = locate_data(cfg, args.data)
        data = load(data_dir)  # before the run folder: a data error writes nothing
        run_dir = make_run_dir(out, device)
    console.print(f"run folder: {run_dir}")
    runner.write_env(run_dir, cfg, plan, "running", {"data_dir": str(data_dir)} if data_dir else None)
    try:
        rows = runner.execute(run_dir, plan, data, console)
    except KeyboardInterrupt:
        runner.write_env(run_dir, cfg, plan, "interrupted")
        console.print(f"[yellow]interrupted: finished trials are in {run_dir}; "
                      f"continue with: python -m bench run --resume {run_dir}[/yellow]")
        return EXIT_INTERRUPTED
    failed = any(r.status == "error" for r in rows)
    runner.write_env(run_dir, cfg, plan, "failed" if failed else "complete")
    summary = report.render_run(run_dir, None if args.json else console)
    if args.json:
        print(json.dumps({"run_dir": str(run_dir), "summary": json.loads(summary.to_json(orient="index"))}))
    return EXIT_FAILED if failed else EXIT_OK


def cmd_schedule(args: argparse.Namespace, console: Console) -> int:
    cfg = config_mod.load(args.config)
    if args.name not in cfg.trials:
        raise UsageError(f"{cfg.path}: unknown trial {args.name!r} (known: {', '.join(cfg.trials)})")
    spec = cfg.trials[args.name]
    steps = args.steps or spec.steps
    sched = spec.build_schedule()
    if args.csv:
        sys.stdout.write("step,lr,momentum\n")
        sys.stdout.writelines(f"{i},{sched.lr(i)!r},{sched.momentum(i)!r}\n" for i in range(steps))
    else:
        console.print(f"{args.name}: {sched}")
        marks = sorted({0, steps // 4, steps // 2, (3 * steps) // 4, steps - 1})
        for i in marks:
            console.print(f"  step {i:>7}: lr {sched.lr(i):.6g}  momentum {sched.momentum(i):.4g}")
    if args.plot:
        from bench.report import plot_schedule
        plot_schedule(args.name, sched, steps, Path(args.plot))
    return EXIT_OK


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from bench import report
    for d in args.run_dirs:
        report.render_any(Path(d), console)
    return EXIT_OK


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace, Console], int]:
    """Imports a command's module only when it runs: `--help` and `run` stay quick."""
    def call(args: argparse.Namespace, console: Console) -> int:
        return getattr(importlib.import_module(module), name)(args, console)
    return call


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="sc_fast: ResNet-56 on CIFAR-10, "
                                "time-to-accuracy and step throughput (super-convergence as a GPU benchmark)")
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=None, help="bench.toml to read (default: the repo's)")

    run = sub.add_parser("run", parents=[common], help="time-to-target trials")
    run.add_argument("--profile", default="auto")
    run.add_argument("--trial", action="append", help="run only this trial (repeatable)")
    run.add_argument("--seeds", type=int, help="number of seeds (0..N-1)")
    run.add_argument("--target", type=float, help="target test accuracy, in (0, 1]")
    run.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    run.add_argument("--pipeline", choices=("auto", "dali", "torch"), default=None)
    run.add_argument("--data", default=None, help="folder holding cifar-10-batches-py")
    run.add_argument("--out", default="results")
    run.add_argument("--resume", metavar="RUN_DIR")
    run.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    run.set_defaults(func=cmd_run)

    sch = sub.add_parser("schedule", parents=[common], help="print a trial's schedule")
    sch.add_argument("name")
    sch.add_argument("--steps", type=int)
    sch.add_argument("--csv", action="store_true", help="step,lr,momentum for every step")
    sch.add_argument("--plot", metavar="FILE")
    sch.set_defaults(func=cmd_schedule)

    tp = sub.add_parser("throughput", parents=[common], help="step-throughput cases and regression gate")
    tp.add_argument("--case", action="append", help="measure only this case (repeatable); the baseline always runs")
    tp.add_argument("--steps", type=int, help="timed steps per repeat")
    tp.add_argument("--warmup", type=int, help="untimed steps before timing")
    tp.add_argument("--repeats", type=int, help="timed repeats per case; medians are compared")
    tp.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    tp.add_argument("--data", default=None, help="folder holding cifar-10-batches-py")
    tp.add_argument("--out", default="results")
    tp.add_argument("--baseline", metavar="RUN_DIR", help="an earlier throughput run to compare with")
    tp.add_argument("--max-regression", type=float, default=0.05, metavar="FRAC",
                    help="exit 1 when a case is slower than the baseline by more than this fraction")
    tp.add_argument("--json", action="store_true")
    tp.set_defaults(func=_lazy("bench.throughput", "cmd_throughput"))

    lf = sub.add_parser("lr-find", parents=[common], help="LR range test (paper's linear and fastai's exponential)")
    lf.add_argument("--min-lr", type=float, help="start of the exponential ramp")
    lf.add_argument("--max-lr", type=float, help="end of the exponential ramp")
    lf.add_argument("--steps", type=int, help="steps of the exponential ramp")
    lf.add_argument("--trial", help="take batch size, weight decay and augmentation from this trial "
                    "(default: [lr_find].trial)")
    lf.add_argument("--mode", choices=("exponential", "linear", "both"), default="both")
    lf.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    lf.add_argument("--data", default=None, help="folder holding cifar-10-batches-py")
    lf.add_argument("--out", default="results")
    lf.set_defaults(func=_lazy("bench.lrfind", "cmd_lr_find"))

    cmp = sub.add_parser("compare", help="put runs from different GPUs or commits side by side")
    cmp.add_argument("run_dirs", nargs="+")
    cmp.set_defaults(func=_lazy("bench.compare", "cmd_compare"))

    rep = sub.add_parser("report", help="re-render tables and plots of run folders")
    rep.add_argument("run_dirs", nargs="+")
    rep.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "seeds", None) is not None and args.seeds <= 0:
        print(f"python -m bench: --seeds must be positive, got {args.seeds}", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "steps", None) is not None and args.steps <= 0:
        print(f"python -m bench: --steps must be positive, got {args.steps}", file=sys.stderr)
        return EXIT_USAGE
    # Both signals end a run the same way (exit 130, finished trials kept). SIGINT is set
    # explicitly because a job started with `&` from a script inherits it ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    console = Console(stderr=bool(getattr(args, "json", False) or getattr(args, "csv", False)))
    try:
        return args.func(args, console)
    except (ConfigError, DataError, RunError, UsageError, PipelineUnavailable, ScheduleError) as e:
        print(f"python -m bench: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("python -m bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `... --csv | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
