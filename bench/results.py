"""Result rows and run folders.

Rows are frozen dataclasses with units in their field names; they are written as CSV with the
columns in field order. Every file is written whole to a temporary file and renamed into place,
so a kill at any moment leaves either the old file or the new one, never half of one.

``RunFolder`` owns a run folder's env.json: its kind (which command wrote it), its state
(running, complete, failed, interrupted) and the "is this a folder of kind X" check.
"""

import csv
import io
import json
import math
import os
import re
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class RunError(Exception):
    """A folder that is not a run, or a run whose files are damaged; str() says which."""


@dataclass(frozen=True)
class TrialRow:
    run_id: str
    trial: str
    schedule: str
    seed: int
    device: str
    pipeline: str
    precision: str
    channels_last: bool
    compile: str
    batch_size: int
    max_steps: int
    target_acc: float
    status: str  # reached | not_reached | diverged | error
    time_to_target_s: float | None
    steps_to_target: int | None
    epochs_to_target: float | None
    wall_to_target_s: float | None
    best_test_acc: float
    final_test_acc: float
    train_time_s: float
    compile_time_s: float
    eval_time_s: float
    train_imgs_per_s: float
    steps_run: int
    error: str
    # Columns added after runs were committed: a trials.csv without them reads as these defaults.
    world_size: int = 1  # ranks that trained it together (torchrun); 1 for a single process
    resumed: int = 0  # restarts from a checkpoint (0: one uninterrupted piece); older files lack it
    checkpoint_time_s: float | None = None  # wall seconds writing checkpoints, off the training clock
    float32_precision: str = ""  # ieee | tf32: the math of float32 convolutions and matmuls (empty: not recorded)


@dataclass(frozen=True)
class CurveRow:
    run_id: str
    trial: str
    seed: int
    step: int
    epoch: float
    lr: float
    momentum: float
    train_loss: float
    test_loss: float
    test_acc: float
    train_time_s: float
    wall_time_s: float


@dataclass(frozen=True)
class LrFindRow:
    """One step of an LR range test (lr_find.csv): the four columns docs/reference.md ("Results")
    lists first. ``ramp`` tells the exponential (fastai) test from the linear (paper) one; test_*
    only on the linear test's evaluation steps, empty elsewhere."""

    step: int
    lr: float
    loss: float
    smoothed_loss: float
    ramp: str  # exponential | linear
    test_loss: float | None
    test_acc: float | None


@dataclass(frozen=True)
class ThroughputRow:
    """One throughput case (throughput.csv): the columns docs/reference.md ("Results") lists first.
    Metrics are empty unless ``status`` is ok; baseline_imgs_per_s and delta (img/s vs the baseline
    run's, -0.05 = 5% slower) only when the run was compared with ``--baseline``."""

    run_id: str
    case: str
    device: str
    pipeline: str  # synthetic | torch | dali | torchvision
    precision: str
    channels_last: bool
    compile: str
    batch_size: int
    steps: int  # timed steps per repeat
    imgs_per_s: float | None  # median over repeats
    step_ms_median: float | None  # over every timed step of every repeat
    step_ms_p10: float | None
    step_ms_p90: float | None
    ratio_to_baseline: float | None  # imgs_per_s / the baseline case's, same run
    model: bool  # false: the input pipeline alone, no training step
    warmup: int
    repeats: int
    warmup_s: float | None  # warm-up and compilation, off the clock
    peak_mem_mib: float | None  # CUDA: max allocated; CPU: process peak RSS during the case
    status: str  # ok | error | skipped
    error: str  # why it errored or was skipped
    baseline_imgs_per_s: float | None
    delta: float | None
    # Columns added after runs were committed (older files read as these defaults). Under torchrun
    # imgs_per_s is the job's (global batch / the slowest rank's time) and batch_size the global batch.
    world_size: int = 1
    imgs_per_s_per_device: float | None = None
    scaling_efficiency: float | None = None  # vs a --baseline run of another world size: per-device img/s ratio
    float32_precision: str = ""  # ieee | tf32: the math of float32 convolutions and matmuls (empty: not recorded)
    # A model case's cost per image (sc_fast.flops, counted once off the clock) and what it achieved:
    gflop_per_img: float | None = None  # forward + backward model FLOPs (convolutions and matmuls)
    mbytes_per_img: float | None = None  # eager estimate of bytes moved (every op's inputs and outputs), 1e6 bytes
    flop_per_byte: float | None = None  # arithmetic intensity on that estimate
    tflops: float | None = None  # achieved model TFLOP/s of one device (imgs_per_s_per_device x gflop_per_img)
    mfu: float | None = None  # tflops over the run's measured matmul ceiling at the case's precision


@dataclass(frozen=True)
class StepTimeRow:
    """One timed step of a throughput case (throughput_steps.csv, beside throughput.csv): the raw
    samples a later comparison tests for significance. ``repeat`` and ``step`` count from 0."""

    case: str
    repeat: int
    step: int
    step_s: float


@dataclass(frozen=True)
class ProfileRow:
    """One throughput case profiled with ``--trace`` (profile.csv): sc_fast.profile's clocks.
    kernel_ms, kernels_per_step and device_busy only where the device recorded kernels (CUDA)."""

    case: str
    steps: int  # profiled steps (the clocks ran over as many unprofiled ones first)
    step_ms: float | None  # wall per step, device-synchronized, profiler off
    issue_ms: float | None  # host time to queue one step, no sync, profiler off
    kernel_ms: float | None  # summed kernel time per step
    kernels_per_step: float | None
    device_busy: float | None  # kernel_ms / step_ms
    trace: str  # the Chrome/Perfetto trace beside this file ("" on ranks but 0)
    error: str  # why profiling failed (the case's timing stands); numbers empty then


@dataclass(frozen=True)
class ProfileOpRow:
    """One of a profiled case's top kernels (or host operators without a GPU), profile_ops.csv."""

    case: str
    rank: int  # 1 = the most time
    kind: str  # kernel | host op
    name: str
    calls_per_step: float
    ms_per_step: float  # self time per step
    share: float  # of the case's kernel (or host operator) time


@dataclass(frozen=True)
class AbRow:
    """One case of ``bench ab`` (ab.csv): median img/s over rounds per side, ratio = tree / rev
    with its bootstrap interval, the Mann-Whitney p-value and bench.stats' verdict. Numbers are
    empty when the case was skipped or errored (``verdict`` says which)."""

    case: str
    rounds: int  # rounds with a sample on both sides
    imgs_per_s_rev: float | None
    imgs_per_s_tree: float | None
    ratio: float | None  # median(tree) / median(rev): below 1 the working tree is slower
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    verdict: str  # regression | improvement | no change | skipped | error


@dataclass(frozen=True)
class AbSampleRow:
    """One case measured by one child process of ``bench ab`` (ab_samples.csv)."""

    round: int  # from 0
    side: str  # rev | tree
    first: bool  # this side ran first in its round
    case: str
    imgs_per_s: float | None  # the child's one repeat
    status: str  # ok | error | skipped
    error: str

def columns(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return v


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` fills a temporary file beside ``path``, which is then renamed onto it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the rename must never publish a file the disk does not hold
    atomic_write(path, write)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_rows(path: Path, rows: list[Any], cls: type) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns(cls))
    for r in rows:
        w.writerow([_cell(getattr(r, c)) for c in columns(cls)])
    atomic_write_text(path, buf.getvalue())


def _parse(value: str, annotation: Any) -> Any:
    text = str(annotation)
    if value == "":
        return None if "None" in text else ("" if annotation is str else None)
    if annotation is bool:
        return value == "True"
    if annotation is int or text.startswith("int"):
        return int(value)
    if annotation is float or text.startswith("float"):
        return float(value)
    return value


def read_rows(path: Path, cls: type[T], missing_ok: bool = False) -> list[T]:
    """Rows of a CSV written by ``write_rows``; RunError names the file and row if damaged.
    ``missing_ok``: a file not written yet (a run stopped before its first row) holds no rows.
    A column with a default (added after older files were written) may be absent: the default."""
    if missing_ok and not path.exists():
        return []
    try:
        with open(path, newline="") as f:
            text = f.read()
        if not text.endswith("\n"):  # write_rows ends every file with a line end
            raise RunError(f"{path}: {'empty' if not text else 'truncated (its last line is incomplete)'}")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        required = {fl.name for fl in fields(cls) if fl.default is MISSING}
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise RunError(f"{path}: missing columns {', '.join(sorted(missing))}")
        rows = []
        for row in reader:
            if None in row or None in row.values():
                raise RunError(f"{path}: damaged (line {reader.line_num} does not have "
                               f"{len(reader.fieldnames or [])} fields)")
            rows.append(cls(**{fl.name: _parse(row[fl.name], fl.type) for fl in fields(cls) if fl.name in row}))
        return rows
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror or e})") from None
    except (ValueError, TypeError, csv.Error) as e:
        raise RunError(f"{path}: damaged ({e})") from None


def step_times(path: Path) -> dict[str, list[StepTimeRow]] | None:
    """throughput_steps.csv of a run folder by case, in order; None when the run kept no raw
    step times (runs from before they were written)."""
    if not (path / "throughput_steps.csv").exists():
        return None
    by_case: dict[str, list[StepTimeRow]] = {}
    for r in read_rows(path / "throughput_steps.csv", StepTimeRow):
        by_case.setdefault(r.case, []).append(r)
    return by_case


PART_ROLES = ("throughput", "run", "lr-find")  # a suite's parts, each a run folder named by its role


def run_id(run_dir: Path) -> str:
    """A run folder's id: its name, or for a suite's part (``<suite>/run``) the suite's id and the role,
    so that ids stay unique across a results tree holding several suites."""
    return f"{run_dir.parent.name}-{run_dir.name}" if run_dir.name in PART_ROLES else run_dir.name


def new_run_dir(out: Path, slug: str, now: datetime | None = None) -> Path:
    """``<out>/<run_id>/``, created exclusively: never another run's folder. The run id is
    ``<UTC time to the millisecond>Z-<4 random hex digits>-<slug>``, e.g.
    ``20261124T054355.482Z-3f9a-cpu``: names sort by start time, and the random tag keeps apart runs
    started in the same millisecond into different ``--out`` folders (which no mkdir here can
    see; two such runs once shared an id). ``now``: the start time (default: the clock)."""
    out.mkdir(parents=True, exist_ok=True)
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    stamp = f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z"
    for _ in range(1000):
        d = out / f"{stamp}-{secrets.token_hex(2)}-{slug}"
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise RunError(f"{out}: could not create a new run folder")


# new_run_dir's ids, and the older ``<UTC second>Z-<slug>[-N]`` ones of the committed runs
RUN_ID_TIME = re.compile(r"(\d{8}T\d{6})(?:\.(\d{3}))?Z-")


def run_started(run_id: str) -> datetime | None:
    """When a run started (UTC), read from its id; None for a name that is not a run id."""
    m = RUN_ID_TIME.match(run_id)
    if m is None:
        return None
    second = datetime.strptime(m[1], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
    return second + timedelta(milliseconds=int(m[2] or 0))


def read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: damaged JSON ({e})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: damaged (a JSON {type(obj).__name__}, not an object)")
    return obj


STATES = ("running", "complete", "failed", "interrupted")


@dataclass(frozen=True)
class RunFolder:
    """``<out>/<run_id>/`` as written by one command; env.json says which (``kind``)."""

    path: Path

    @property
    def env_path(self) -> Path:
        return self.path / "env.json"

    @property
    def run_id(self) -> str:
        return run_id(self.path)

    @staticmethod
    def open(path: Path, label: str = "") -> "RunFolder":
        """An existing folder with a readable env.json (RunError naming it otherwise); ``label``
        prefixes messages with the flag that named it, e.g. ``--baseline ``."""
        if not path.is_dir():
            raise RunError(f"{label}{path}: not a run folder (no such folder)")
        if not (path / "env.json").is_file():
            raise RunError(f"{label}{path}: not a run folder (no env.json)")
        folder = RunFolder(path)
        folder.env()  # damaged JSON fails here, before anything else reads it
        return folder

    def env(self) -> dict[str, Any]:
        return read_json(self.env_path)

    @property
    def kind(self) -> str | None:
        return self.env().get("kind")

    def write_env(self, env: dict[str, Any]) -> None:
        atomic_write_json(self.env_path, env)

    def update_env(self, **fields: Any) -> dict[str, Any]:
        """Merges ``fields`` into env.json (created if absent); returns the new contents."""
        env = self.env() if self.env_path.exists() else {}
        env.update(fields)
        self.write_env(env)
        return env

    def set_state(self, state: str) -> None:
        assert state in STATES, state
        self.update_env(state=state)


def cpu_label(hw: dict[str, Any]) -> str:
    """"CPU <model> (<ISA>)" from env.json's machine block; runs from before the ISA was recorded
    have the model alone."""
    return f"CPU {hw.get('cpu')}" + (f" ({hw['cpu_isa']})" if hw.get("cpu_isa") else "")
