"""``python -m bench lr-find``: the LR range test (fastai's exponential, the paper's linear, or both).

The flags become a ``bench.range_test.RangeRequest``; ``bench.range_test.run_range_test`` runs it:
docs/reference.md ("bench lr-find").
"""

import argparse
from pathlib import Path

from rich.console import Console

from bench.common import config_flags, device_flags, positive_float, positive_int
from bench.range_test import RangeRequest, run_range_test

HELP = "LR range test (paper's linear and fastai's exponential)"
PARENTS = (config_flags, device_flags)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-lr", type=positive_float, help="start of the exponential ramp")
    p.add_argument("--max-lr", type=positive_float, help="end of the exponential ramp")
    p.add_argument("--steps", type=positive_int, help="bound every ramp to this many steps")
    p.add_argument("--trial", help="take batch size, weight decay and augmentation from this trial "
                   "(default: [lr_find].trial)")
    p.add_argument("--mode", choices=("exponential", "linear", "both"), default="both")


def main(args: argparse.Namespace, console: Console) -> int:
    req = RangeRequest(config=args.config, mode=args.mode, min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps,
                       trial=args.trial, device=args.device, data=args.data, out=Path(args.out))
    return run_range_test(req, console).code
