"""The CLI entry of ``python -m bench``: builds the parser from the command modules and maps what
they raise to exit codes. Nothing in bench/ imports this module (docs/reference.md, "Layout").

Exit codes (docs/reference.md, "Exit codes"): 0 done; 1 a trial errored or a throughput regression
exceeded its limit; 2 usage, config or data error (one line, no traceback, nothing written); 130
interrupted (finished work kept; ``--resume`` goes on).
"""

import argparse
import os
import signal
import sys
from types import FrameType, ModuleType

from rich.console import Console

from bench.commands import ab, compare, history, lr_find, report, run, schedule, suite, throughput
from bench.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, JobError, Parser, UsageError
from bench.config import ConfigError
from bench.results import RunError
from sc_fast import distributed
from sc_fast.data import DataError
from sc_fast.pipeline import PipelineUnavailable
from sc_fast.schedules import ScheduleError

# name -> module, in the order `--help` lists them
COMMANDS: dict[str, ModuleType] = {
    "run": run, "throughput": throughput, "suite": suite, "lr-find": lr_find, "schedule": schedule,
    "report": report, "compare": compare, "ab": ab, "history": history,
}
# Bad input found before any work: one line on stderr, exit 2.
USAGE_ERRORS = (ConfigError, DataError, RunError, UsageError, PipelineUnavailable, ScheduleError)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m bench", description="sc_fast: ResNet-56 on CIFAR-10, time-to-accuracy and "
               "step throughput (super-convergence as a GPU benchmark)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, module in COMMANDS.items():
        cmd = sub.add_parser(name, parents=[make() for make in module.PARENTS], help=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(main=module.main)
    return p


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(f"python -m bench: {e}", file=sys.stderr)
        return EXIT_USAGE
    # Both signals end a run the same way (exit 130, finished work kept). SIGINT is set
    # explicitly because a job started with `&` from a script inherits it ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    # --json and --csv keep stdout for the machine-readable output alone
    console = Console(stderr=bool(getattr(args, "json", False) or getattr(args, "csv", False)))
    try:
        return args.main(args, console)
    except USAGE_ERRORS as e:
        print(f"python -m bench: {e}", file=sys.stderr)
        return EXIT_USAGE
    except JobError as e:
        print(f"python -m bench: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("python -m bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `... --csv | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        # Under torchrun the command joined a process group (bench.common.join_world); it is left
        # here, once, on every way out: left to the interpreter's exit, NCCL warns that it was
        # never destroyed and may leak its communicators. A no-op without a process group.
        distributed.shutdown()
