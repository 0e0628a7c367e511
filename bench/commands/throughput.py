"""``python -m bench throughput``: the step-throughput matrix and the regression gate.

What a case is, how the matrix is planned and how the cases are measured (round-robin repeats,
FLOPs and MFU): bench/cases.py. The regression gate of ``--baseline``: bench/gate.py.

Before the first case the run measures the device's ceilings (sc_fast.ceilings: dense matmul
TFLOP/s at each precision its model cases use, and memory bandwidth; cached per device and torch
version) and records them in env.json, with the datasheet's peaks for the GPUs the project names.

Every timed step is kept in throughput_steps.csv beside throughput.csv (``StepTimeRow``), so a
later run can test whether it differs from this one beyond noise. ``--trace`` profiles each case
after its timing (sc_fast.profile: profile.csv, profile_ops.csv, a trace per case). SIGTERM or
Ctrl-C (exit 130) keeps what was measured; ``--resume RUN_DIR`` measures the cases without a row
into the same folder, with the plan its env.json recorded (cases, settings, baseline, ceilings), on
the same device model and world size.

Exit codes: 0 every planned case ran or was skipped and no case regressed; 1 a case errored, or
``--baseline`` was given and a case regressed; 2 bad flags, config, data or baseline folder (a
baseline from another device or with another case set is refused before anything is measured or
written).
"""

import argparse
from pathlib import Path

from rich.console import Console

from bench.common import config_flags, device_flags, fraction_below_one, non_negative_int, positive_int
from bench.matrix import MatrixRequest, measure_matrix

HELP = "step-throughput cases and regression gate"
PARENTS = (config_flags, device_flags)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--case", action="append", help="measure only this case (repeatable); the baseline (for "
                   "ratio_to_baseline) only when named too; without --case: the matrix, baseline first")
    p.add_argument("--steps", type=positive_int, help="timed steps per repeat")
    p.add_argument("--batch-size", type=positive_int, help="every case at this (global) batch size instead of its own")
    p.add_argument("--warmup", type=non_negative_int, help="untimed steps before timing")
    p.add_argument("--repeats", type=positive_int, help="timed repeats per case (interleaved across the cases); "
                   "medians are compared")
    p.add_argument("--baseline", metavar="RUN_DIR", help="an earlier throughput run to compare with")
    p.add_argument("--max-regression", type=fraction_below_one, default=0.05, metavar="FRAC",
                   help="exit 1 when a case is slower than the baseline by more than this fraction")
    p.add_argument("--trace", nargs="?", const=5, type=positive_int, metavar="STEPS",
                   help="after the timing, profile STEPS more steps of each case (default 5): host vs kernel time "
                        "per step, kernel count, top kernels (profile.csv, profile_ops.csv) and a "
                        "Chrome/Perfetto trace per case (trace_<case>.json.gz)")
    p.add_argument("--resume", metavar="RUN_DIR", help="measure the cases an interrupted run has no row for, "
                   "into its folder (cases and settings from its env.json)")
    p.add_argument("--json", action="store_true")


def main(args: argparse.Namespace, console: Console) -> int:
    req = MatrixRequest(config=args.config, cases=tuple(args.case or ()), steps=args.steps, batch_size=args.batch_size,
                        warmup=args.warmup, repeats=args.repeats, trace=args.trace,
                        baseline=Path(args.baseline) if args.baseline else None,
                        max_regression=args.max_regression, device=args.device, data=args.data, out=Path(args.out),
                        resume=Path(args.resume) if args.resume else None)
    return measure_matrix(req, console, as_json=args.json).code
