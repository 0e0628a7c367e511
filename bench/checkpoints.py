"""Mid-trial checkpoints of ``bench run``: a trial's state at an evaluation point, so that a trial
cut off (a kill, a machine's time limit) goes on where it stopped with ``--resume``.

``<run>/checkpoints/<trial>-seed<seed>.pt``, one per unfinished (trial, seed): replaced at
evaluation points while the training clock is paused (temporary file, fsync, rename, so a kill
mid-write leaves the previous one), removed once the trial's row is written. The file holds plain
dicts, lists, numbers and tensors (``torch.load(weights_only=True)``) and a fingerprint of what it
belongs to: the config's sha256, the resolved trial, the seed, the device and its name, pipeline,
execution settings, target, torch version and git commit. A checkpoint whose fingerprint differs
from the run going on, or that does not load, is refused with one line naming the file and why,
and the trial starts from scratch.
"""

import os
import re
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from bench.common import device_name
from bench.config import TrialSpec
from bench.results import atomic_write
from sc_fast.env import fingerprint
from sc_fast.train import EvalPoint, TrialState

FORMAT = 1
FOLDER = "checkpoints"


class Refused(Exception):
    """A checkpoint that cannot be resumed from; str() is one line naming the file and why."""


def machine(device: torch.device) -> dict[str, Any]:
    """The code and hardware a measurement depends on: pieces run with other code, another torch
    or another device model would stitch two different measurements together. The device is named
    as env.json names it (bench.common.device_name): a CPU with its ISA, since one model name
    covers parts with and without AVX512-BF16."""
    env = fingerprint()
    return {"git_commit": env["git"]["commit"], "torch": str(env["torch"]), "device_name": device_name(env, device)}


@dataclass(frozen=True)
class Checkpoints:
    """The checkpoints of one run folder, as this process (its config, plan, code, device) sees them."""

    run_dir: Path
    identity: dict[str, Any]  # the fingerprint's keys shared by every trial of the run

    def path(self, trial: str, seed: int) -> Path:
        return self.run_dir / FOLDER / f"{trial.replace(os.sep, '_')}-seed{seed}.pt"

    def fingerprint(self, spec: TrialSpec, seed: int) -> dict[str, Any]:
        # through torch's own (weights_only) types and back: tuples become lists on both sides
        return _plain({**self.identity, "trial": asdict(spec), "seed": seed})

    def save(self, spec: TrialSpec, seed: int, state: TrialState, restarts: int) -> None:
        """Replaces the trial's checkpoint atomically. ``restarts``: the pieces before this one."""
        payload = {"format": FORMAT, "fingerprint": self.fingerprint(spec, seed), "restarts": restarts,
                   **{f.name: getattr(state, f.name) for f in fields(state)},  # no deep copy of tensors
                   "curve": [asdict(p) for p in state.curve],
                   "reached_at": state.reached_at.step if state.reached_at else None}
        path = self.path(spec.name, seed)
        path.parent.mkdir(exist_ok=True)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())  # the rename must never publish a file the disk does not hold
        atomic_write(path, write)

    def load(self, spec: TrialSpec, seed: int) -> tuple[TrialState, int] | None:
        """(state, restarts so far) from the trial's checkpoint; None without one; Refused when it
        does not load or belongs to another config, trial, device, code version."""
        path = self.path(spec.name, seed)
        if not path.exists():
            return None
        tail = f"trial {spec.name} seed {seed} starts from scratch"
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            differ = _differences(saved["fingerprint"], self.fingerprint(spec, seed))
            loaded = None if differ else _from_file(saved)
        except Exception as e:  # noqa: BLE001  truncated, garbage, another format: whatever it raises
            raise Refused(f"{path}: checkpoint unreadable ({_reason(e)}); {tail}") from None
        if differ:
            raise Refused(f"{path}: checkpoint of another setting ({'; '.join(differ)}); {tail}")
        return loaded

    def remove(self, trial: str, seed: int) -> None:
        """The trial's checkpoint, once its row is written; the folder too when it is left empty."""
        self.path(trial, seed).unlink(missing_ok=True)
        try:
            (self.run_dir / FOLDER).rmdir()
        except OSError:  # absent, or other trials' checkpoints still in it
            pass

    def clean(self, done: set[tuple[str, int]]) -> None:
        """Temporary files of a process killed mid-write, and checkpoints of finished trials (a kill
        between a row and its checkpoint's removal)."""
        for tmp in (self.run_dir / FOLDER).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        for trial, seed in done:
            self.remove(trial, seed)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return str(obj) if isinstance(obj, str) else obj  # str subclasses (TorchVersion) do not load back


def _reason(e: Exception) -> str:
    """'Type: first sentence of the message', without terminal escapes, at most 150 characters."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
    first = lines[0].split(". ")[0] if lines else ""
    return f"{type(e).__name__}: {first[:150]}" if first else type(e).__name__


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 16 else text[:12] + "..."


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs, one short phrase per key: 'git_commit 0123456789ab... (now 89abcdef0123...)'."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            names = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            out.append(f"{key} {', '.join(names)} differ{'s' if len(names) == 1 else ''}")
        else:
            out.append(f"{key} {_short(a)} (now {_short(b)})")
    return out


def _from_file(saved: dict[str, Any]) -> tuple[TrialState, int]:
    curve = tuple(EvalPoint(**p) for p in saved["curve"])
    reached = saved["reached_at"]
    values = {f.name: saved[f.name] if f.default is MISSING else saved.get(f.name, f.default)  # newer fields
              for f in fields(TrialState)}
    state = TrialState(**{**values, "curve": curve,
                          "reached_at": None if reached is None else next(p for p in curve if p.step == reached)})
    return state, int(saved["restarts"])
