"""Environment fingerprint: what a result needs beside it to be compared across GPUs and commits."""

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from sc_fast.hardware import cpu_isa
from sc_fast.pipeline import dali_build


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(repo: Path) -> dict[str, Any]:
    def run(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    commit = run("rev-parse", "HEAD")
    if commit is None:  # a copy of the tree without its .git (a lent GPU machine): the commit it was copied from
        return {"commit": os.environ.get("SC_FAST_GIT_COMMIT") or None, "dirty": None, "from": "SC_FAST_GIT_COMMIT"}
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _gpus() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                    "capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count})
    return out


def _driver() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10, check=True).stdout.split("\n")[0].strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _load() -> float | None:
    """The machine's 1-minute load average when the record is made (runnable processes, this one
    included once it computes); None where the OS has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def fingerprint(repo: Path | None = None) -> dict[str, Any]:
    gpus = _gpus()
    return {
        "gpu": gpus[0]["name"] if gpus else None,
        "gpu_count": len(gpus),
        "gpus": gpus,
        "driver": _driver() if gpus else None,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "dali": _version("nvidia-dali-cuda120") or _version("nvidia-dali-cuda130"),
        "dali_build": dali_build(),  # DALI's own CUDA build, beside torch's "cuda"
        "cpu": cpu_model(),
        "cpu_isa": cpu_isa(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": _load(),  # other jobs on the machine: beside one, a 2-core CPU measured 3x slower
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git": _git(repo or Path(__file__).resolve().parent.parent),
        "command": sys.argv,
    }


def start_record() -> dict[str, Any]:
    """What can change between the pieces of one run (its first start and each ``--resume``): when
    it started, the torch threads and the load beside it, and the command. ``fingerprint`` is the
    first start's alone; a piece with two threads after one with one trains at another speed."""
    return {"utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch_threads": torch.get_num_threads(), "load_avg_1m": _load(), "command": sys.argv}


def device_slug(device: torch.device) -> str:
    """Short, filename-safe device name for run ids: 'nvidia-h100-80gb-hbm3', 'cpu'."""
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device)
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


if __name__ == "__main__":
    print(json.dumps(fingerprint(), indent=2))
