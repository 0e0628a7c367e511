"""What every command shares: exit codes, the usage error, flag checks, shared flags, the
device, the output folder and the data set.

Flags are checked by argparse ``type=`` functions, so a bad value is a one-line usage error
(exit 2) before any work starts; the parsers built from ``Parser`` raise ``UsageError`` instead
of printing argparse's two-line usage and exiting.
"""

import argparse
import math
import os
import socket
import tomllib
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.config import Config
from bench.results import cpu_label, new_run_dir
from sc_fast import distributed
from sc_fast.data import Cifar10, load, locate
from sc_fast.distributed import World
from sc_fast.env import device_slug
from sc_fast.pipeline import PipelineUnavailable, resolve_pipeline

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad input found before any work: exit 2 with this one line."""


class JobError(Exception):
    """A data-parallel job that cannot go on (a rank failed); exit 1 with this one line."""


@dataclass(frozen=True)
class Outcome:
    """What a job (a run, a throughput matrix, a range test) ends with: its folder and exit code."""

    run_dir: Path
    code: int


@dataclass(frozen=True)
class Where:
    """This process's device and its place in the job (one rank of a torchrun job, or alone)."""

    device: torch.device
    world: World


def error_text(e: BaseException) -> str:
    """One line for a CSV cell: the exception and where it came from (a trial or case that
    failed is recorded and the run goes on)."""
    last = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
    where = f" at {Path(last[0].filename).name}:{last[0].lineno}" if last else ""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{where}"[:500]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one-line UsageErrors (docs/reference.md, "Exit codes":
    exit 2, one line)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


# ---- argparse type= checks ------------------------------------------------------------------------

def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def accuracy(text: str) -> float:
    """A target accuracy: (0, 1]."""
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def fraction_below_one(text: str) -> float:
    """A regression limit: [0, 1)."""
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def key_value(text: str) -> tuple[str, Any]:
    """'max_lr=0.8' -> ('max_lr', 0.8): the value read as a TOML value (numbers, booleans, lists),
    else as a string; what it may be is checked against bench.toml's rules by config.with_sets."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value.strip()


# ---- flags several commands take ------------------------------------------------------------------

def config_flags() -> argparse.ArgumentParser:
    p = Parser(add_help=False)
    p.add_argument("--config", default=None, help="bench.toml to read (default: the repo's)")
    return p


def device_flags() -> argparse.ArgumentParser:
    """--device, --data and --out: the commands that train or measure and write a run folder."""
    p = Parser(add_help=False)
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--data", default=None, help="folder holding cifar-10-batches-py")
    p.add_argument("--out", default="results", help="parent folder of the new run folder")
    return p


# ---- device, output folder, data ------------------------------------------------------------------

def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA GPU is visible to PyTorch "
                             f"(torch {torch.__version__}, CUDA build {torch.version.cuda})")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def join_world(device: torch.device) -> tuple[torch.device, World]:
    """(this rank's device, the world): under torchrun joins the process group (NCCL on CUDA, one
    GPU per local rank; gloo on CPU); a plain `python -m bench` stays a single process."""
    world = distributed.init(device.type)
    if device.type == "cuda" and world.size > 1:
        device = torch.device("cuda", world.local_rank)
    return device, world


def device_name(fp: dict[str, Any], device: torch.device) -> str:
    """What throughput depends on: the GPU model on CUDA, the CPU model otherwise (env.json's
    ``device_name``; the regression gate, ``ab`` and ``history`` compare runs with equal names)."""
    if device.type == "cuda":
        return fp["gpus"][device.index or 0]["name"]
    return cpu_label(fp)  # with the ISA: one model name covers AVX2 and AVX512-BF16 parts


def world_record(where: Where) -> dict[str, Any]:
    """env.json's world: ranks, nodes, backend and every rank's host and device (a collective)."""
    w = where.world
    ranks = distributed.gather(f"{socket.gethostname()}:{where.device}")
    return {"world_size": w.size, "nodes": w.nodes, "backend": w.backend, "ranks": ranks}


def check_writable(out: Path, flag: str = "--out") -> None:
    """UsageError naming ``flag`` unless folder ``out`` can be made (or exists) and written in;
    creates nothing. The command makes the missing folders when it writes."""
    probe = out.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{flag} {out}: not writable ({probe} is not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {out}: not writable (no write permission in {probe})")


def recorded_config(env: dict[str, Any]) -> str | None:
    """The config file a run folder's env.json says it ran with, if it is still there; None: the
    default's. What ``--resume`` loads unless ``--config`` names another."""
    recorded = env.get("config") if isinstance(env.get("config"), dict) else {}
    path = recorded.get("path")
    return path if path and Path(str(path)).is_file() else None


def new_folder(out: Path, folder: Path | None, device: torch.device) -> Path:
    """A job's new folder: exactly ``folder`` (a suite part, named by its role), else a new run folder
    under ``out``; UsageError when it cannot be made (or ``folder`` exists)."""
    if folder is None:
        return make_run_dir(out, device)
    try:
        folder.mkdir(parents=True)
    except OSError as e:
        raise UsageError(f"{folder}: cannot make the run folder ({e.strerror or e})") from None
    return folder


def make_run_dir(out: Path, device: torch.device) -> Path:
    try:
        return new_run_dir(out, device_slug(device))
    except OSError as e:
        raise UsageError(f"--out {out}: not writable ({e.strerror or e})") from None


def locate_data(cfg: Config, data_root: str | None) -> Path:
    """--data, then [data].root, then $SC_FAST_DATA and the user cache (sc_fast.data.locate)."""
    return locate(data_root or cfg.data.root or None, download=cfg.data.download)


def load_data(cfg: Config, data_root: str | None) -> Cifar10:
    return load(locate_data(cfg, data_root))


def choose_pipeline(requested: str, source: str, device: torch.device) -> tuple[str, str | None]:
    """(pipeline, notice or None); a pipeline asked for by name that cannot run is a usage error
    naming where it was asked for (``source``: a flag or a config key)."""
    try:
        return resolve_pipeline(requested, device)
    except PipelineUnavailable as e:
        raise UsageError(f"{source} {requested}: {e}") from None
