"""The suite job (``bench suite``): everything a device owner runs to benchmark a device, into one
folder with one summary. This is what turns an hour on someone's GPU into a shareable result.

Three parts, in order, each an ordinary run folder of its kind named by its role inside the suite
folder, made by calling the job functions themselves:

1. ``throughput/``: the whole case matrix (bench.matrix), each case profiled after its timing for
   ``[suite].<device>_trace`` steps;
2. ``run/``: the time-to-target profile (bench.trials), ``[suite].<device>_profile`` or, unset,
   what ``[profiles.auto]`` runs there;
3. ``lr-find/``: the LR range test (bench.range_test).

``quick`` runs a short version of each: ``[suite].quick_repeats`` throughput repeats, one seed per
trial (``quick_seeds``), every ramp of the range test bounded to ``quick_lr_find_steps``.

The suite's env.json (kind "suite") records each part's folder and state. SIGTERM or Ctrl-C ends
the part in flight the way that job ends (files kept); ``resume`` skips the parts that completed,
goes on with an interrupted ``run`` or ``throughput`` part (finished trials and cases are kept: on
a machine that allows 10-minute commands, a compile-heavy case matrix finishes over several) and
redoes an interrupted range test (minutes at most).
"""

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import config as config_mod
from bench import report
from bench.common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Outcome, check_writable, make_run_dir,
                          resolve_device)
from bench.matrix import MatrixRequest, measure_matrix
from bench.range_test import RangeRequest, run_range_test
from bench.results import RunError, RunFolder
from bench.trials import TrialsRequest, run_trials
from sc_fast.env import fingerprint

PARTS = ("throughput", "run", "lr-find")


@dataclass(frozen=True)
class SuiteRequest:
    config: str | None = None
    device: str = "auto"
    data: str | None = None
    out: Path = Path("results")
    quick: bool = False
    resume: Path | None = None


def part_requests(cfg: config_mod.Config, device_type: str, quick: bool, suite: Path,
                  base: SuiteRequest) -> dict[str, Any]:
    """Each part's request: its folder named by its role, its settings from [suite]."""
    s, where = cfg.suite, {"config": str(cfg.path), "device": base.device, "data": base.data}
    trace = getattr(s, f"{device_type}_trace")
    profile = getattr(s, f"{device_type}_profile") or getattr(cfg.auto, device_type)
    return {
        "throughput": MatrixRequest(**where, folder=suite / "throughput", trace=trace or None,
                                    repeats=s.quick_repeats if quick else None),
        "run": TrialsRequest(**where, folder=suite / "run", profile=profile,
                             seeds=tuple(range(s.quick_seeds)) if quick else ()),
        "lr-find": RangeRequest(**where, folder=suite / "lr-find", steps=s.quick_lr_find_steps if quick else None),
    }


def run_part(name: str, req: Any, folder: RunFolder, env: dict[str, Any], console: Console) -> int:
    """One part, resumed where it can be, its folder and state recorded in the suite's env.json."""
    part, path = env["parts"][name], folder.path / name
    resumable = name in ("run", "throughput") and (path / "env.json").exists()
    if path.exists() and not resumable:  # a range test cut off: redone from the start
        shutil.rmtree(path)
    if resumable:  # the plan comes from the part's folder: only where to read and run
        req = type(req)(config=req.config, device=req.device, data=req.data, resume=path)
    console.rule(f"suite part: {name}" + (" (resumed)" if resumable else ""))
    job = {"throughput": measure_matrix, "run": run_trials, "lr-find": run_range_test}[name]
    outcome: Outcome = job(req, console)
    part.update(folder=name, exit=outcome.code,
                state={EXIT_OK: "complete", EXIT_INTERRUPTED: "interrupted"}.get(outcome.code, "failed"))
    folder.write_env(env)
    return outcome.code


def _start(req: SuiteRequest) -> tuple[RunFolder, dict[str, Any]]:
    cfg = config_mod.load(req.config)
    device = resolve_device(req.device)
    check_writable(req.out)
    folder = RunFolder(make_run_dir(req.out, device))
    env = {"run_id": folder.run_id, "kind": "suite", "state": "running", "quick": req.quick,
           "device": device.type, "data": req.data, "config_path": str(cfg.path), "env": fingerprint(),
           "parts": {name: {"state": "pending"} for name in PARTS}}
    folder.write_env(env)
    return folder, env


def _reopen(req: SuiteRequest) -> tuple[RunFolder, dict[str, Any]]:
    folder = RunFolder.open(Path(req.resume))
    env = folder.env()
    if env.get("kind") != "suite" or not isinstance(env.get("parts"), dict):
        raise RunError(f"{folder.path}: not a `bench suite` folder (env.json kind {env.get('kind')!r})")
    if any(p.get("folder") not in (None, name) for name, p in env["parts"].items()):
        raise RunError(f"{folder.path}: a suite from before parts were named by role; run a new one")
    return folder, env


def run_suite(req: SuiteRequest, console: Console) -> Outcome:
    folder, env = _reopen(req) if req.resume else _start(req)
    console.print(f"suite folder: {folder.path}")
    cfg = config_mod.load(req.config or env["config_path"])
    base = SuiteRequest(config=str(cfg.path), device=env["device"], data=req.data or env.get("data"))
    requests = part_requests(cfg, env["device"], env["quick"], folder.path, base)
    for name, part in env["parts"].items():
        if part["state"] in ("complete", "failed"):  # failed: a case or trial errored, recorded as such
            continue
        if run_part(name, requests[name], folder, env, console) == EXIT_INTERRUPTED:
            folder.set_state("interrupted")
            console.print(f"[yellow]suite interrupted in part {name}; continue with: "
                          f"python -m bench suite --resume {folder.path}[/yellow]")
            return Outcome(folder.path, EXIT_INTERRUPTED)
    failed = any(p["state"] == "failed" for p in env["parts"].values())
    folder.set_state("failed" if failed else "complete")
    report.render_suite(folder.path, console)
    return Outcome(folder.path, EXIT_FAILED if failed else EXIT_OK)

