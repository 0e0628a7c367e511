"""``python -m bench schedule NAME``: a trial's LR and momentum schedule, without training."""

import argparse
import sys
from pathlib import Path

from rich.console import Console

from bench import config as config_mod
from bench.common import EXIT_OK, UsageError, config_flags, positive_int
from bench.report import plot_schedule

HELP = "print a trial's schedule"
PARENTS = (config_flags,)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("--steps", type=positive_int)
    p.add_argument("--csv", action="store_true", help="step,lr,momentum for every step")
    p.add_argument("--plot", metavar="FILE")


def main(args: argparse.Namespace, console: Console) -> int:
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
        for i in sorted({0, steps // 4, steps // 2, (3 * steps) // 4, steps - 1}):
            console.print(f"  step {i:>7}: lr {sched.lr(i):.6g}  momentum {sched.momentum(i):.4g}")
    if args.plot:
        plot_schedule(args.name, sched, steps, Path(args.plot))
    return EXIT_OK
