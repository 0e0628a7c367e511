"""The throughput job (``bench throughput``, and the suite's ``throughput`` part): a case matrix
measured into a run folder, then the regression gate against a baseline run when one is given.

What a case is, how the matrix is planned and how the cases are measured (round-robin repeats,
FLOPs and MFU): bench/cases.py. The regression gate: bench/gate.py.

Before the first case the run measures the device's ceilings (sc_fast.ceilings: dense matmul
TFLOP/s at each precision its model cases use, and memory bandwidth; cached per device and torch
version) and records them in env.json, with the datasheet's peaks for the GPUs the project names.
Every timed step is kept in throughput_steps.csv; ``trace`` profiles each case after its timing.
SIGTERM or Ctrl-C keeps what was measured; ``resume`` measures the cases without a row into the same
folder, with the plan its env.json recorded, on the same device model and world size.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import build, compile_gain, report
from bench import config as config_mod
from bench.cases import NOTHING_YET, Case, Forced, Measuring, Tally, Run, Settings, plan_cases, settings
from bench.common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Outcome, UsageError, Where, check_writable,
                          device_name, join_world, locate_data, new_folder, recorded_config, resolve_device,
                          world_record)
from bench.config import resolved_dict
from bench.gate import (Baseline, apply_gate, baseline_world, check_comparable, gate_env, gate_line, gate_test_text,
                        load_baseline, with_scaling)
from bench.results import RunError, RunFolder, ThroughputRow, run_id, write_rows
from sc_fast import ceilings as ceilings_mod
from sc_fast import distributed
from sc_fast.ceilings import Ceilings
from sc_fast.data import default_cache, load
from sc_fast.distributed import World
from sc_fast.env import fingerprint
from sc_fast.train import float32_math


@dataclass(frozen=True)
class MatrixRequest:
    """What a throughput run is asked: `bench throughput`'s flags, or the suite's throughput part."""

    config: str | None = None
    cases: tuple[str, ...] = ()  # empty: the matrix (baseline first)
    steps: int | None = None  # None: [throughput]'s, per device type
    batch_size: int | None = None  # every case at this global batch size
    warmup: int | None = None
    repeats: int | None = None
    trace: int | None = None  # profile each case this many steps after its timing
    baseline: Path | None = None  # an earlier run to gate against
    max_regression: float = 0.05
    device: str = "auto"
    data: str | None = None
    out: Path = Path("results")  # the parent of a new run folder ...
    folder: Path | None = None  # ... or exactly this one (a suite part)
    resume: Path | None = None  # an interrupted run folder to finish instead


def save_env(run_dir: Path, env: dict[str, Any], state: str, world: World = World.single()) -> None:
    env["state"] = state
    if world.is_main:
        RunFolder(run_dir).write_env(env)


@dataclass(frozen=True)
class Job:
    """A throughput run about to measure: a new one, or an interrupted one reopened."""

    run: Run
    env: dict[str, Any]
    todo: list[Case]
    done: Tally
    baseline: Baseline | None
    max_regression: float


def measure_matrix(req: MatrixRequest, console: Console, as_json: bool = False) -> Outcome:
    """The throughput job: a new case matrix (or ``req.resume``'s) measured to its end or to a signal."""
    job = _reopen(req, console) if req.resume else _new(req, console)
    run_dir, world = job.run.run_dir, job.run.where.world
    console = console if world.is_main else Console(quiet=True)  # rank 0 alone prints
    save_env(run_dir, job.env, "running", world)
    try:
        progress = Measuring(job.run, job.todo, job.done, console).measure()
    except KeyboardInterrupt:
        save_env(run_dir, job.env, "interrupted", world)
        console.print(f"[yellow]interrupted: what was measured is in {run_dir}; measure the cases without a row "
                      f"with: python -m bench throughput --resume {run_dir}[/yellow]")
        return Outcome(run_dir, EXIT_INTERRUPTED)
    if not world.is_main:
        return Outcome(run_dir, EXIT_OK)
    return Outcome(run_dir, finish(job, progress, as_json, console))


def measure_ceilings(cases: list[Case], where: Where, name: str) -> Ceilings | None:
    """The device's ceilings at the precisions of the model cases this run measures (cached per device
    and torch version, so a run pays for them once); None when no model case runs here."""
    precisions = sorted({c.precision for c in cases if c.model and not c.skip_reason(where.device, where.world.size)})
    if not precisions:
        return None
    plan = ceilings_mod.default_plan(where.device)
    return ceilings_mod.cached(where.device, name, precisions, default_cache() / "ceilings", plan)


def ceilings_env(c: Ceilings | None) -> dict[str, Any] | None:
    """env.json's ``ceilings``: what was measured, and the datasheet's peaks where the device has one."""
    if c is None:
        return None
    sheet = ceilings_mod.datasheet(c.device_name)
    return {"measured": c.to_json(), "datasheet": asdict(sheet) if sheet else None}


def _needs_data(cases: list[Case], where: Where) -> bool:
    return any(c.pipeline != "synthetic" and not c.skip_reason(where.device, where.world.size) for c in cases)


def _new(req: MatrixRequest, console: Console) -> Job:
    """Everything that can be wrong with the flags, config, baseline, --out or data fails before the
    run folder exists."""
    cfg = config_mod.load(req.config)
    device, world = join_world(resolve_device(req.device))
    where = Where(device, world)
    console = console if world.is_main else Console(quiet=True)
    s = settings(cfg, req.steps, req.warmup, req.repeats, req.trace, device.type)
    defaults, line = build.device_settings(cfg, device)
    cases = plan_cases(cfg, defaults, req.cases, s, Forced(req.steps, req.batch_size))
    build.check_ranks(world, [(f"case {c.name!r}", c.batch_size, c.compile) for c in cases
                              if c.name in (req.cases or []) and (not c.device or c.device == device.type)])
    fp = fingerprint()
    name = device_name(fp, device)
    baseline = load_baseline(Path(req.baseline)) if req.baseline else None
    if baseline:
        check_comparable(baseline, name, cases, console)
    check_writable(req.folder.parent if req.folder else req.out)
    data_dir = locate_data(cfg, req.data) if _needs_data(cases, where) else None
    data = load(data_dir) if data_dir else None  # before the run folder: errors write nothing
    console.print(line)
    ceilings = measure_ceilings(cases, where, name) if world.is_main else None  # rank 0 writes the rows
    run_dir = Path(str(distributed.broadcast(str(new_folder(req.out, req.folder, device)) if world.is_main else None)))
    env = {"run_id": run_id(run_dir), "kind": "throughput", "device": str(device), "device_name": name,
           "settings": asdict(s), "defaults": asdict(defaults), "cases": [asdict(c) for c in cases], "env": fp,
           "config": resolved_dict(cfg), "world": world_record(where), "data_dir": str(data_dir or ""),
           "baseline": None if not baseline else {"path": str(baseline.path), "run_id": baseline.path.name,
                                                  "max_regression": req.max_regression},
           "float32_precision": {c.name: float32_math(c.precision) for c in cases},  # set per case
           "ceilings": ceilings_env(ceilings)}
    build.prepare(device, defaults.precision)
    _announce(console, run_dir, name, where, s, len(cases), ceilings)
    run = Run(run_dir, where, s, data, ceilings, cfg.throughput.baseline_case)
    return Job(run, env, cases, NOTHING_YET, baseline, req.max_regression)


def _announce(console: Console, run_dir: Path, name: str, where: Where, s: Settings, n: int,
              ceilings: Ceilings | None) -> None:
    ranks = f" on {where.world.size} ranks (img/s: the job's, batch: global)" if where.world.size > 1 else ""
    console.print(f"run folder: {run_dir}\n{name}{ranks}: {n} cases, each {s.warmup} warm-up steps, then "
                  f"{s.repeats} repeats of {s.steps} timed steps (unless the case sets its own), round-robin")
    if ceilings:
        peaks = ", ".join(f"{p} {t:,.3g}" for p, t in ceilings.matmul_tflops.items())
        console.print(f"ceilings: matmul TFLOP/s {peaks} (n={ceilings.matmul_n}); memory "
                      f"{ceilings.bandwidth_gb_s:,.1f} GB/s")


PLAN_FLAGS = {"cases": "--case", "steps": "--steps", "batch_size": "--batch-size", "warmup": "--warmup",
              "repeats": "--repeats", "trace": "--trace", "baseline": "--baseline"}


def _reopen(req: MatrixRequest, console: Console) -> Job:
    """An interrupted run from its env.json (cases, settings, device, baseline, ceilings) and files: the
    cases without a row are measured, on the same device model and world size, or refused."""
    given = [flag for f, flag in PLAN_FLAGS.items() if getattr(req, f)]
    if given:
        raise UsageError(f"--resume measures the cases its folder planned; drop {', '.join(given)}")
    folder = RunFolder.open(Path(req.resume), label="--resume ")
    env = folder.env()
    if env.get("kind") != "throughput" or not isinstance(env.get("cases"), list):
        raise RunError(f"--resume {folder.path}: not a throughput run (env.json kind {env.get('kind')!r})")
    device, world = join_world(resolve_device(str(env["device"]).split(":")[0]))
    where = Where(device, world)
    name, planned_world = device_name(fingerprint(), device), (env.get("world") or {}).get("world_size", 1)
    if name != env["device_name"] or world.size != planned_world:
        raise UsageError(f"--resume {folder.path}: measured on {planned_world} x {env['device_name']!r}; this is "
                         f"{world.size} x {name!r}: resume it on the same device and world size")
    cases = [Case(**c) for c in env["cases"]]
    done = Tally.read(folder.path)
    todo = [c for c in cases if c.name not in {r.case for r in done.rows}]
    cfg = config_mod.load(req.config or recorded_config(env))
    data = load(locate_data(cfg, req.data or env.get("data_dir") or None)) if _needs_data(todo, where) else None
    b = env.get("baseline") or {}
    build.prepare(device, "fp32")  # each case sets its own float32 math
    if world.is_main:
        console.print(f"resuming {folder.path}: {len(todo)} of {len(cases)} cases to measure")
    measured = (env.get("ceilings") or {}).get("measured")
    run = Run(folder.path, where, Settings(**env["settings"]), data, Ceilings.from_json(measured) if measured else None,
              cfg.throughput.baseline_case)
    return Job(run, env, todo, done, load_baseline(Path(b["path"])) if b else None,
               b.get("max_regression", req.max_regression))


def finish(job: Job, progress: Tally, as_json: bool, console: Console) -> int:
    """Gate, final files, table and exit code."""
    run_dir, env, rows, steps, baseline = job.run.run_dir, job.env, progress.rows, progress.steps, job.baseline
    limit = job.max_regression
    regressed: list[str] = []
    scaling = baseline is not None and baseline_world(baseline) != rows[0].world_size
    if baseline and scaling:  # 1 GPU against N: an efficiency, not a regression
        rows, baseline = with_scaling(rows, baseline), None
        write_rows(run_dir / "throughput.csv", rows, ThroughputRow)
        env["baseline"]["scaling"] = {r.case: r.scaling_efficiency for r in rows}
    if baseline:
        rows, gate = apply_gate(rows, baseline, limit, steps)
        regressed = gate.regressed
        env["baseline"].update(gate_env(gate, gate_test_text(rows, gate, baseline)))
        write_rows(run_dir / "throughput.csv", rows, ThroughputRow)
    errored = [r.case for r in rows if r.status == "error"]
    gain = compile_gain.record(rows, env["device_name"], env["run_id"])  # what `compile = "auto"` follows on a CPU
    if gain:
        env["compile_gain"] = asdict(gain)
    save_env(run_dir, env, "failed" if errored else "complete")
    report.render_throughput(run_dir, None if as_json else console)
    if baseline:
        console.print(gate_line(rows, gate, baseline, limit))
    if errored:
        console.print(f"[red]{len(errored)} case(s) errored: {', '.join(errored)}[/red]")
    if scaling:
        console.print("scaling efficiency (per-device img/s against the baseline's): " + ", ".join(
            f"{r.case} {r.scaling_efficiency:.2f}" for r in rows if r.scaling_efficiency is not None))
    if as_json:
        print(json.dumps({"run_dir": str(run_dir), "rows": [asdict(r) for r in rows],
                          "regressed": regressed, "errored": errored}))
    return EXIT_FAILED if errored or regressed else EXIT_OK
