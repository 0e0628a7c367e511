"""Finished run folders read back: what ``bench compare`` and ``bench history`` both read (env.json
and the result rows), and the device, commit and start time of a run, worked out one way for both.

Only result files are read, so runs made on other machines can be copied in and read here.
"""

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bench.common import device_name
from bench.results import RunError, RunFolder, StepTimeRow, ThroughputRow, TrialRow, read_rows, run_started, step_times

# the kinds read back, and their rows: kind -> (file, row class)
ROWS: dict[str, tuple[str, type]] = {"run": ("trials.csv", TrialRow), "throughput": ("throughput.csv", ThroughputRow)}


@dataclass(frozen=True)
class RunRecord:
    """A `run` or `throughput` folder as its files recorded it."""

    path: Path
    kind: str  # run | throughput
    env: dict[str, Any]  # env.json
    rows: tuple[Any, ...]  # TrialRow (run) or ThroughputRow (throughput), in file order
    steps: dict[str, list[StepTimeRow]] | None  # throughput_steps.csv by case; None: not kept or not read
    started: datetime  # UTC: its run id's time, else env.json's modification time

    @property
    def device_name(self) -> str:
        return recorded_device_name(self.env)

    @property
    def commit(self) -> str | None:
        return self.env.get("env", {}).get("git", {}).get("commit")

    @property
    def dirty(self) -> bool:
        return bool(self.env.get("env", {}).get("git", {}).get("dirty"))


def recorded_device_name(env: dict[str, Any]) -> str:
    """The device a run measured, named as ``bench.common.device_name`` names it (a CPU with its
    ISA): env.json's ``device_name`` where the command recorded it (throughput, ab), else worked
    out from the machine and the plan's device it recorded; '?' when neither says."""
    if env.get("device_name"):
        return str(env["device_name"])
    planned = str(env.get("plan", {}).get("device") or "cpu")
    device = torch.device(planned) if planned.startswith("cuda") else torch.device("cpu")
    try:
        return device_name(env.get("env", {}), device)
    except (KeyError, IndexError, TypeError):  # a GPU run from before env.json listed the GPUs
        return str(env.get("env", {}).get("gpu") or "?")


def read_run(path: Path, with_steps: bool = False) -> RunRecord:
    """The `run` or `throughput` folder at ``path``; RunError naming it when it is another kind or
    its files are damaged. ``with_steps``: also a throughput run's raw step times."""
    env = RunFolder.open(path).env()
    kind = env.get("kind")
    if kind not in ROWS:
        raise RunError(f"{path}: a {kind!r} run, not a `run` or `throughput` folder")
    name, cls = ROWS[kind]
    started = run_started(path.name) or datetime.fromtimestamp((path / "env.json").stat().st_mtime, timezone.utc)
    return RunRecord(path=path, kind=kind, env=env, rows=tuple(read_rows(path / name, cls)),
                     steps=step_times(path) if with_steps and kind == "throughput" else None, started=started)
