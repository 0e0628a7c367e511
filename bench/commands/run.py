"""``python -m bench run``: the time-to-target job, trials x seeds, each a fresh model.

The flags become a ``bench.trials.TrialsRequest``; ``bench.trials.run_trials`` plans and executes
it (or finishes an interrupted run with ``--resume``). A run folder holds env.json (environment,
resolved config, the plan, the run's state), trials.csv and curves.csv, and while a trial runs its
checkpoint: docs/reference.md ("bench run").
"""

import argparse
from pathlib import Path

from rich.console import Console

from bench.common import accuracy, config_flags, device_flags, key_value, non_negative_int, positive_int
from bench.trials import TrialsRequest, run_trials

HELP = "time-to-target trials"
PARENTS = (config_flags, device_flags)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="auto")
    p.add_argument("--trial", action="append", help="run only this trial (repeatable)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=positive_int, help="number of seeds (0..N-1)")
    seeds.add_argument("--seed", type=non_negative_int, action="append",
                       help="run this seed (repeatable), e.g. one more seed of a setting already run")
    p.add_argument("--target", type=accuracy, help="target test accuracy, in (0, 1]")
    p.add_argument("--pipeline", choices=("auto", "dali", "torch"), default=None)
    p.add_argument("--resume", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.add_argument("--set", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="override a trial setting for this run (repeatable), e.g. --set steps=2535 --set max_lr=0.8")


def main(args: argparse.Namespace, console: Console) -> int:
    req = TrialsRequest(config=args.config, profile=args.profile, trials=tuple(args.trial or ()),
                        seeds=tuple(args.seed or range(args.seeds or 0)), target=args.target, device=args.device,
                        pipeline=args.pipeline, data=args.data, out=Path(args.out), sets=tuple(args.set),
                        resume=Path(args.resume) if args.resume else None)
    return run_trials(req, console, as_json=args.json).code
