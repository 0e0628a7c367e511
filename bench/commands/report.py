"""``python -m bench report RUN_DIR...``: re-render the tables, summary.md and plots of run folders
of any kind from their files."""

import argparse
from pathlib import Path

from rich.console import Console

from bench.common import EXIT_OK
from bench.report import render_any

HELP = "re-render tables and plots of run folders"
PARENTS = ()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+")


def main(args: argparse.Namespace, console: Console) -> int:
    for d in args.run_dirs:
        render_any(Path(d), console)
    return EXIT_OK
