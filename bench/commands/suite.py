"""``python -m bench suite``: the throughput matrix, the time-to-target profile and the LR range test
of a device, into one folder with one summary (bench/suite.py; docs/reference.md, "bench suite")."""

import argparse
from pathlib import Path

from rich.console import Console

from bench.common import config_flags, device_flags
from bench.suite import SuiteRequest, run_suite

HELP = "throughput matrix + time-to-target profile + LR range test, one folder, one summary"
PARENTS = (config_flags, device_flags)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a short version of each part")
    p.add_argument("--resume", metavar="SUITE_DIR", help="finish an interrupted suite")


def main(args: argparse.Namespace, console: Console) -> int:
    req = SuiteRequest(config=args.config, device=args.device, data=args.data, out=Path(args.out), quick=args.quick,
                       resume=Path(args.resume) if args.resume else None)
    return run_suite(req, console).code
