"""Result rows and run folders.

Rows are frozen dataclasses with units in their field names; they are written as CSV with the
columns in field order. Every file is written whole to a temporary file and renamed into place,
so a kill at any moment leaves either the old file or the new one, never half of one.
"""

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, fields
from datetime import datetime, timezone
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


def columns(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return v


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def read_rows(path: Path, cls: type[T]) -> list[T]:
    """Rows of a CSV written by ``write_rows``; RunError names the file and row if damaged."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = set(columns(cls)) - set(reader.fieldnames or [])
            if missing:
                raise RunError(f"{path}: missing columns {', '.join(sorted(missing))}")
            return [cls(**{fl.name: _parse(row[fl.name], fl.type) for fl in fields(cls)})
                    for row in reader]
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror or e})") from None
    except (ValueError, TypeError, csv.Error) as e:
        raise RunError(f"{path}: damaged ({e})") from None


def new_run_dir(out: Path, slug: str) -> Path:
    """``<out>/<UTC time>-<slug>``, created exclusively: never another run's folder."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for i in range(1000):
        d = out / (f"{stamp}-{slug}" + (f"-{i}" if i else ""))
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise RunError(f"{out}: could not create a new run folder")


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: damaged JSON ({e})") from None
