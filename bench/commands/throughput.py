"""``python -m bench throughput``: the step-throughput matrix and the regression gate.

Cases come from bench.toml ``[throughput.cases.*]``; keys a case omits take the device's
``[devices.<type>]`` defaults. Without ``--case`` every case is planned (``default_cases``
narrows that); the baseline case is always measured, first, because ``ratio_to_baseline``
divides by it. A case marked for another device type, or whose pipeline cannot run here, is
recorded as skipped with the reason; a case that fails (compile error, OOM) is recorded as an
error and the rest go on.

Every timed step is kept in throughput_steps.csv beside throughput.csv (``StepTimeRow``), so a
later run can test whether it differs from this one beyond noise. ``--trace`` profiles each case
after its timing (sc_fast.profile: profile.csv, profile_ops.csv, a trace per case).

The files are rewritten after every case, so SIGTERM or Ctrl-C (exit 130) keeps the finished cases;
``--resume RUN_DIR`` measures the rest into the same folder, with the plan its env.json recorded
(cases, settings, baseline), on the same device model and world size.

The gate (``--baseline``): where both runs kept raw step times, a case regressed when
``bench.stats.verdict`` says so for its per-step times (``compare_samples`` with
``higher_is_better=False``): slower than the baseline by more than ``--max-regression`` of
throughput, AND Mann-Whitney p < 0.05, AND the bootstrap interval wholly on the slower side.
Per-step times rather than per-repeat img/s, because there are only ``repeats`` (3 by default)
per-repeat rates per side, and with 3 vs 3 the smallest two-sided Mann-Whitney p is 0.1: the
gate could never fire. Per-step times give steps x repeats samples a side (12 on the CPU, 60 on a
GPU by default), where p can reach 1e-6. Steps of one repeat are not independent draws (a
background job slows several in a row), so p is optimistic; the limit on the size still has to
be met, and runs measured hours apart share no machine state at all: on a noisy machine
``bench ab`` (interleaved) is the tool for a decision. Against a baseline without raw step times
the gate falls back to comparing median img/s with the limit alone, and says so.

Exit codes: 0 every planned case ran or was skipped and no case regressed; 1 a case errored, or
``--baseline`` was given and a case regressed (above); 2 bad flags, config, data or baseline
folder (a baseline from another device or with another case set is refused before anything is
measured or written).
"""

import argparse
import gc
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from bench import build, report
from bench import config as config_mod
from bench.common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, JobError, UsageError, Where, check_writable,
                          config_flags, device_flags, device_name, error_text, fraction_below_one, join_world,
                          locate_data, make_run_dir, non_negative_int, positive_int, recorded_config,
                          resolve_device, world_record)
from bench.config import Config, ConfigError, DeviceSettings, resolved_dict
from bench.results import (ProfileOpRow, ProfileRow, RunError, RunFolder, StepTimeRow, ThroughputRow, read_rows,
                           step_times, write_rows)
from bench.stats import NO_CHANGE, REGRESSION, Comparison, compare_samples, verdict
from sc_fast import distributed
from sc_fast.data import Cifar10, load
from sc_fast.distributed import World
from sc_fast.env import fingerprint
from sc_fast.pipeline import PipelineUnavailable, make_pipeline
from sc_fast.profile import profile_steps
from sc_fast.throughput import Measurement, Work, measure, reset_peak_memory, synthetic_batch, training_step
from sc_fast.train import batch_stream, float32_math, set_float32_math

HELP = "step-throughput cases and regression gate"
TIMED_OUT = "timed_out"  # a case's status when a signal (a time limit) ended it mid-measurement
PARENTS = (config_flags, device_flags)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--case", action="append", help="measure only this case (repeatable); the baseline always runs")
    p.add_argument("--steps", type=positive_int, help="timed steps per repeat")
    p.add_argument("--batch-size", type=positive_int, help="every case at this (global) batch size instead of its own")
    p.add_argument("--warmup", type=non_negative_int, help="untimed steps before timing")
    p.add_argument("--repeats", type=positive_int, help="timed repeats per case; medians are compared")
    p.add_argument("--baseline", metavar="RUN_DIR", help="an earlier throughput run to compare with")
    p.add_argument("--max-regression", type=fraction_below_one, default=0.05, metavar="FRAC",
                   help="exit 1 when a case is slower than the baseline by more than this fraction")
    p.add_argument("--trace", nargs="?", const=5, type=positive_int, metavar="STEPS",
                   help="after each case's timing, profile STEPS more steps (default 5): host vs kernel time "
                        "per step, kernel count, top kernels (profile.csv, profile_ops.csv) and a "
                        "Chrome/Perfetto trace per case (trace_<case>.json.gz)")
    p.add_argument("--resume", metavar="RUN_DIR", help="measure the cases an interrupted run has no row for, "
                   "into its folder (cases and settings from its env.json)")
    p.add_argument("--json", action="store_true")


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    batch_size: int
    precision: str
    channels_last: bool
    compile: str
    pipeline: str  # synthetic | torch | dali | torchvision
    model: bool  # false: the pipeline alone
    device: str | None  # the device type it is meant for; None: any
    steps: int  # timed steps per repeat
    matrix: bool = True  # false: measured only when --case names it (older env.json files lack it)

    def skip_reason(self, device: torch.device, world_size: int = 1) -> str | None:
        """Why the matrix skips this case here, or None (named by --case, a rank problem is refused)."""
        if self.device and self.device != device.type:
            return f"meant for {self.device} only (bench.toml throughput.cases.{self.name}.device)"
        if world_size > 1 and self.pipeline == "torchvision":
            return "the torchvision reference loader is single-process"
        return build.rank_problem(world_size, self.batch_size, self.compile)


@dataclass(frozen=True)
class Settings:
    steps: int
    warmup: int
    repeats: int
    trace: int = 0  # steps to profile after each case's timing; 0 = no profile


# ---- the case matrix --------------------------------------------------------------------------

@dataclass(frozen=True)
class Forced:
    """Flags that override every case: --steps and --batch-size (None: the case's own)."""

    steps: int | None = None
    batch_size: int | None = None


def resolve_case(name: str, raw: dict[str, Any], defaults: DeviceSettings, steps: int,
                 forced: Forced, path: Path) -> Case:
    """Omitted keys from the device defaults; --steps beats the case's steps, which beat the run's;
    --batch-size beats the case's batch size."""
    where = f"{path}: throughput.cases.{name}"
    if "batch_size" not in raw:
        raise ConfigError(f"{where}: missing key batch_size")
    pipeline, model = raw.get("pipeline", "synthetic"), raw.get("model", True)
    if not model and pipeline == "synthetic":
        raise ConfigError(f"{where}: model = false measures a pipeline; pipeline must not be synthetic")
    return Case(name=name, description=raw.get("description", ""), batch_size=forced.batch_size or raw["batch_size"],
                precision=raw.get("precision", defaults.precision),
                channels_last=raw.get("channels_last", defaults.channels_last),
                compile=raw.get("compile", defaults.compile) if model else "off",
                pipeline=pipeline, model=model, device=raw.get("device"),
                steps=forced.steps or raw.get("steps", steps), matrix=raw.get("matrix", True))


def plan_cases(cfg: Config, defaults: DeviceSettings, requested: list[str] | None, s: Settings,
               forced: Forced = Forced()) -> list[Case]:
    """The cases to run, baseline first; unknown names are a usage error."""
    base = cfg.throughput.get("baseline_case", "baseline")
    if base not in cfg.cases:
        raise ConfigError(f"{cfg.path}: throughput.baseline_case names unknown case {base!r}")
    for n in requested or []:
        if n not in cfg.cases:
            raise UsageError(f"--case {n}: unknown case (known: {', '.join(cfg.cases)})")
    # every case is resolved, picked or not: a bad case fails every run, not only the one naming it
    cases = {n: resolve_case(n, dict(raw), defaults, s.steps, forced, cfg.path)
             for n, raw in cfg.cases.items()}
    if not cases[base].model or cases[base].device:
        raise ConfigError(f"{cfg.path}: throughput.baseline_case {base!r} must train (model = true) on any device")
    names = requested or cfg.throughput.get("default_cases") or [n for n, c in cases.items() if c.matrix]
    return [cases[base]] + [cases[n] for n in dict.fromkeys(names) if n != base]


def settings(cfg: Config, args: argparse.Namespace, device_type: str) -> Settings:
    """Flags over bench.toml; on the CPU the cpu_* keys replace steps, warmup and repeats."""
    tp = cfg.throughput
    pick = (lambda k, d: tp.get(f"cpu_{k}", tp.get(k, d))) if device_type == "cpu" else (lambda k, d: tp.get(k, d))
    return Settings(steps=args.steps or pick("steps", 20),
                    warmup=pick("warmup", 5) if args.warmup is None else args.warmup,
                    repeats=args.repeats or pick("repeats", 3), trace=args.trace or 0)


# ---- one case ----------------------------------------------------------------------------------

def build_work(case: Case, where: Where, data: Cifar10 | None) -> Work:
    """One step of the case as a closure: train on the fixed batch, train on the pipeline's next
    batch, or only draw the pipeline's next batch. Under torchrun each rank steps its slice of the
    global batch as one DDP replica."""
    device, world = where.device, where.world
    settings = DeviceSettings(precision=case.precision, channels_last=case.channels_last, compile=case.compile,
                              warmup_steps=0)
    set_float32_math(case.precision)  # process-wide: IEEE float32 unless the case is tf32
    model = build.replicate(build.model(None, settings, device), None, world, device)
    step = training_step(model, build.train_config(None, settings), device) if case.model else None
    if case.pipeline == "synthetic":
        x, y = synthetic_batch(case.batch_size // world.size, case.precision, case.channels_last, device)
        return lambda: step(x, y)
    assert data is not None, "pipeline cases need the data set"
    spec = build.pipeline_spec(None, settings, batch_size=case.batch_size, world=world)
    batches = batch_stream(make_pipeline(case.pipeline, data, spec, device))
    if step is None:
        return lambda: next(batches)
    return lambda: step(*next(batches))


def case_row(run_id: str, case: Case, where: Where, s: Settings, m: Measurement | None,
             status: str, error: str = "") -> ThroughputRow:
    per_device = m.imgs_per_s / where.world.size if m else None
    return ThroughputRow(
        run_id=run_id, case=case.name, device=str(where.device), world_size=where.world.size,
        imgs_per_s_per_device=per_device, pipeline=case.pipeline, precision=case.precision,
        channels_last=case.channels_last, compile=case.compile, batch_size=case.batch_size, steps=case.steps,
        imgs_per_s=m.imgs_per_s if m else None, step_ms_median=m.step_ms(50) if m else None,
        step_ms_p10=m.step_ms(10) if m else None, step_ms_p90=m.step_ms(90) if m else None,
        ratio_to_baseline=None, model=case.model, warmup=s.warmup, repeats=s.repeats,
        warmup_s=m.warmup_s if m else None, peak_mem_mib=m.peak_mem_mib if m else None,
        status=status, error=error, baseline_imgs_per_s=None, delta=None,
        float32_precision=float32_math(case.precision))


def step_rows(case: str, m: Measurement | None) -> list[StepTimeRow]:
    """The measurement's raw step times as throughput_steps.csv rows (none for a case not measured)."""
    if m is None:
        return []
    per_repeat = len(m.step_s) // len(m.repeat_s)
    return [StepTimeRow(case=case, repeat=i // per_repeat, step=i % per_repeat, step_s=t)
            for i, t in enumerate(m.step_s)]


def job_measurement(m: Measurement, world: World) -> Measurement:
    """Under torchrun: each repeat takes as long as the slowest rank took (a collective), so img/s
    is the job's (Measurement's batch_size is the global batch)."""
    if world.size == 1:
        return m
    return replace(m, repeat_s=tuple(distributed.max_(r) for r in m.repeat_s))


Measured = tuple[ThroughputRow, Measurement | None, ProfileRow | None, list[ProfileOpRow]]


def run_case(run_id: str, case: Case, where: Where, s: Settings, data: Cifar10 | None,
             trace_dir: Path | None = None) -> Measured:
    """Measures one case, then profiles it when ``s.trace`` asks (traces written into
    ``trace_dir``, rank 0's only). Any failure inside it becomes the row's status, never the run's
    end (under torchrun it ends the job: the ranks' collectives are out of step)."""
    device = where.device
    skip = case.skip_reason(device, where.world.size)
    if skip:
        return case_row(run_id, case, where, s, None, "skipped", skip), None, None, []
    try:
        reset_peak_memory(device)  # before the model and pipeline exist: their memory counts
        work = build_work(case, where, data)
        m = measure(work, case.batch_size, case.steps, s.warmup, s.repeats, device)
        m = job_measurement(m, where.world)
        row = case_row(run_id, case, where, s, m, "ok")
    except PipelineUnavailable as e:  # DALI missing here: not this code's failure
        return case_row(run_id, case, where, s, None, "skipped", str(e)), None, None, []
    except Exception as e:  # OOM, compile failure, ...: recorded, the next case runs
        if where.world.size > 1:
            raise JobError(f"rank {where.world.rank}: case {case.name}: {error_text(e)}") from e
        return case_row(run_id, case, where, s, None, "error", error_text(e)), None, None, []
    if not s.trace:
        return row, m, None, []
    return (row, m, *profile_case(work, case, where, s.trace, trace_dir))


def profile_case(work: Work, case: Case, where: Where, steps: int,
                 trace_dir: Path | None) -> tuple[ProfileRow, list[ProfileOpRow]]:
    """sc_fast.profile on the measured (warmed-up) step. A profiler failure (no CUPTI, ...) is the
    profile row's error; the case's timing stands."""
    trace = trace_dir / f"trace_{case.name}.json.gz" if trace_dir and where.world.is_main else None
    try:
        p = profile_steps(work, steps, where.device, trace)
    except Exception as e:  # noqa: BLE001  the measurement above is still good
        if where.world.size > 1:
            raise JobError(f"rank {where.world.rank}: case {case.name}: profiling: {error_text(e)}") from e
        return ProfileRow(case.name, steps, None, None, None, None, None, "", error_text(e)), []
    row = ProfileRow(case.name, p.steps, p.step_ms, p.issue_ms, p.kernel_ms, p.kernels_per_step, p.device_busy,
                     trace.name if trace else "", "")
    ops = [ProfileOpRow(case.name, i, t.kind, t.name, t.calls_per_step, t.ms_per_step, t.share)
           for i, t in enumerate(p.top, 1)]
    return row, ops


def release(case: Case, device: torch.device) -> None:
    """Frees what the last case built, so it cannot starve or slow the next."""
    if case.compile != "off":
        torch._dynamo.reset()  # compiled graphs and recompile counters of the last case
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def with_ratios(rows: list[ThroughputRow]) -> list[ThroughputRow]:
    """ratio_to_baseline against rows[0], the baseline case."""
    base = rows[0].imgs_per_s if rows and rows[0].status == "ok" else None
    return [replace(r, ratio_to_baseline=r.imgs_per_s / base if base and r.imgs_per_s is not None else None)
            for r in rows]


# ---- the regression gate ------------------------------------------------------------------------

StepTimes = dict[str, list[StepTimeRow]]  # case -> its timed steps


@dataclass(frozen=True)
class Baseline:
    path: Path
    env: dict[str, Any]
    rows: dict[str, ThroughputRow]
    steps: StepTimes | None  # None: the baseline kept no raw step times


def baseline_world(b: Baseline) -> int:
    return next(iter(b.rows.values())).world_size


def load_baseline(path: Path) -> Baseline:
    env = RunFolder.open(path, label="--baseline ").env()
    if env.get("kind") != "throughput" or "device_name" not in env:
        raise RunError(f"--baseline {path}: not a throughput run (env.json kind {env.get('kind')!r})")
    rows = read_rows(path / "throughput.csv", ThroughputRow)
    if not rows:
        raise RunError(f"--baseline {path}/throughput.csv: no cases")
    return Baseline(path, env, {r.case: r for r in rows}, step_times(path))


def check_comparable(b: Baseline, name: str, cases: list[Case], console: Console) -> None:
    """Refuses (RunError, exit 2) another device or case set; notes changed case settings."""
    if b.env["device_name"] != name:
        raise RunError(f"--baseline {b.path}: measured on {b.env['device_name']!r}, this run is on {name!r}; "
                       "compare runs from the same device")
    planned = [c.name for c in cases]
    if set(planned) != set(b.rows):
        missing, extra = sorted(set(b.rows) - set(planned)), sorted(set(planned) - set(b.rows))
        raise RunError(f"--baseline {b.path}: case sets differ (only in the baseline: {', '.join(missing) or '-'}; "
                       f"only in this run: {', '.join(extra) or '-'}); pass the same --case flags")
    keys = ("pipeline", "precision", "channels_last", "compile", "batch_size", "model")
    for c in cases:
        old = b.rows[c.name]
        changed = [f"{k} {getattr(old, k)} -> {getattr(c, k)}" for k in keys if getattr(old, k) != getattr(c, k)]
        if changed:
            console.print(f"[yellow]note: case {c.name} differs from the baseline's: {', '.join(changed)}[/yellow]")


@dataclass(frozen=True)
class Gate:
    """The gate's outcome for the cases measured in both runs."""

    raw: bool  # tested on both runs' raw step times; False: medians against the limit alone
    verdicts: dict[str, str]  # case -> regression | improvement | no change
    comparisons: dict[str, Comparison]  # case -> the step-time comparison behind its verdict (raw only)

    @property
    def regressed(self) -> list[str]:
        return [c for c, v in self.verdicts.items() if v == REGRESSION]


def case_gate(delta: float, old: list[StepTimeRow] | None, new: list[StepTimeRow] | None,
              limit: float) -> tuple[str, Comparison | None]:
    """One case's verdict: on the per-step times when both runs have them (size and significance,
    module docstring), else the median img/s delta against the limit alone."""
    if old and new:
        c = compare_samples([r.step_s for r in old], [r.step_s for r in new], higher_is_better=False)
        return verdict(c, limit), c
    return (REGRESSION if delta < -limit else NO_CHANGE), None


def apply_gate(rows: list[ThroughputRow], b: Baseline, limit: float,
               steps: StepTimes | None) -> tuple[list[ThroughputRow], Gate]:
    """Rows with baseline img/s and delta filled in, and the verdict of every case both runs measured.
    ``steps``: this run's raw step times (None: compare medians only)."""
    raw = steps is not None and b.steps is not None
    out, verdicts, comparisons = [], {}, {}
    for r in rows:
        old = b.rows[r.case].imgs_per_s if b.rows[r.case].status == "ok" else None
        delta = r.imgs_per_s / old - 1 if old and r.imgs_per_s is not None else None
        out.append(replace(r, baseline_imgs_per_s=old, delta=delta))
        if delta is None:
            continue
        verdicts[r.case], c = case_gate(delta, (b.steps or {}).get(r.case) if raw else None,
                                        (steps or {}).get(r.case) if raw else None, limit)
        if c is not None:
            comparisons[r.case] = c
    return out, Gate(raw, verdicts, comparisons)


def gate_test_text(rows: list[ThroughputRow], gate: Gate, b: Baseline) -> str:
    """Which test the verdicts come from, for the verdict line and env.json."""
    if gate.raw:
        c = next(iter(gate.comparisons.values()), None)
        n = f", {c.n_new} steps here vs {c.n_base} in the baseline" if c else ""
        return f"Mann-Whitney U on per-step times, p < 0.05, and the limit{n}"
    b_row = next(iter(b.rows.values()))
    return (f"medians only, no significance test: {b.path.name if b.steps is None else 'this run'} kept no raw "
            f"step times (medians of {rows[0].repeats} repeats here, of {b_row.repeats} in the baseline)")


def _case_text(r: ThroughputRow, gate: Gate) -> str:
    c = gate.comparisons.get(r.case)
    return f"{r.case} {r.delta:+.1%}" + (f" (p {c.p_value:.2g})" if c else "")


def gate_line(rows: list[ThroughputRow], gate: Gate, b: Baseline, limit: float) -> str:
    test = f"test: {gate_test_text(rows, gate, b)}"
    compared = len(gate.verdicts)
    unsure = [r for r in rows if r.case in gate.comparisons and gate.verdicts[r.case] != REGRESSION
              and r.delta is not None and r.delta < -limit]
    unsure_text = (f"; slower by more than {limit:.0%} but not significant: "
                   f"{', '.join(_case_text(r, gate) for r in unsure)}" if unsure else "")
    if gate.regressed:
        worst = ", ".join(_case_text(r, gate) for r in rows if r.case in gate.regressed)
        return (f"[red]regression: {len(gate.regressed)} of {compared} cases slower than {b.path.name} by more "
                f"than {limit:.0%}: {worst}{unsure_text}. {test}[/red]")
    return (f"[green]no regression beyond {limit:.0%} in {compared} cases against {b.path.name}{unsure_text}. "
            f"{test}[/green]")


# ---- the command ------------------------------------------------------------------------------

def write_env(run_dir: Path, env: dict[str, Any], state: str, world: World = World.single()) -> None:
    env["state"] = state
    if world.is_main:
        RunFolder(run_dir).write_env(env)


@dataclass(frozen=True)
class Progress:
    """What a run folder holds so far: the finished cases' rows, step times and profiles."""

    rows: list[ThroughputRow]
    steps: StepTimes
    profiles: list[ProfileRow]
    ops: list[ProfileOpRow]

    @staticmethod
    def read(run_dir: Path) -> "Progress":
        """From the folder's files (a case has its row once it finished; none yet: empty)."""
        return Progress(read_rows(run_dir / "throughput.csv", ThroughputRow, missing_ok=True),
                        step_times(run_dir) or {},
                        read_rows(run_dir / "profile.csv", ProfileRow, missing_ok=True),
                        read_rows(run_dir / "profile_ops.csv", ProfileOpRow, missing_ok=True))

    def write(self, run_dir: Path, traced: bool) -> None:
        write_rows(run_dir / "throughput.csv", self.rows, ThroughputRow)
        write_rows(run_dir / "throughput_steps.csv", [r for rs in self.steps.values() for r in rs], StepTimeRow)
        if traced:
            write_rows(run_dir / "profile.csv", self.profiles, ProfileRow)
            write_rows(run_dir / "profile_ops.csv", self.ops, ProfileOpRow)


NOTHING_YET = Progress([], {}, [], [])


def measure_all(run_dir: Path, cases: list[Case], where: Where, s: Settings, data: Cifar10 | None,
                console: Console, done: Progress = NOTHING_YET) -> Progress:
    """Runs the cases in order after those ``done``, rewriting the folder's CSVs after each (a kill
    keeps what finished); under torchrun every rank measures, rank 0 writes."""
    total = len(done.rows) + len(cases)
    for i, case in enumerate(cases, len(done.rows) + 1):
        console.print(f"[{i}/{total}] {case.name}: {case.pipeline}, {case.precision}, "
                      f"{'channels_last' if case.channels_last else 'NCHW'}, compile {case.compile}, "
                      f"batch {case.batch_size}, {case.steps} steps{'' if case.model else ', pipeline only'}")
        t0 = time.perf_counter()
        try:
            row, m, profiled, top = run_case(run_dir.name, case, where, s, data, run_dir)
        except KeyboardInterrupt:  # SIGTERM (a time limit) or Ctrl-C inside the case: say so in its row
            cut = case_row(run_dir.name, case, where, s, None, TIMED_OUT,
                           f"cut off by a signal after {time.perf_counter() - t0:.0f} s; --resume does not retry it")
            if where.world.is_main:
                cut_off = Progress(with_ratios(done.rows + [cut]), done.steps, done.profiles, done.ops)
                cut_off.write(run_dir, bool(s.trace))
            raise
        release(case, where.device)
        done = Progress(with_ratios(done.rows + [row]), {**done.steps, case.name: step_rows(case.name, m)},
                        done.profiles + ([profiled] if profiled else []), done.ops + top)
        if where.world.is_main:
            done.write(run_dir, bool(s.trace))
        console.print(f"    {_row_text(row)}")
        if profiled:
            console.print(f"    {report.profile_text(profiled, top)}")
    return done


def _row_text(r: ThroughputRow) -> str:
    if r.status != "ok":
        return f"[{'yellow' if r.status == 'skipped' else 'red'}]{r.status}: {r.error}[/]"
    return (f"{r.imgs_per_s:,.1f} img/s (median of {r.repeats} repeats), step {r.step_ms_median:,.1f} ms "
            f"median, warm-up {r.warmup_s:.1f} s")


@dataclass(frozen=True)
class Job:
    """A throughput run about to measure: a new one, or an interrupted one reopened."""

    run_dir: Path
    env: dict[str, Any]
    where: Where
    settings: Settings
    todo: list[Case]
    done: Progress
    data: Cifar10 | None
    baseline: Baseline | None
    max_regression: float


def main(args: argparse.Namespace, console: Console) -> int:
    job = _reopen(args, console) if args.resume else _new(args, console)
    console = console if job.where.world.is_main else Console(quiet=True)  # rank 0 alone prints
    write_env(job.run_dir, job.env, "running", job.where.world)
    try:
        progress = measure_all(job.run_dir, job.todo, job.where, job.settings, job.data, console, job.done)
    except KeyboardInterrupt:
        write_env(job.run_dir, job.env, "interrupted", job.where.world)
        console.print(f"[yellow]interrupted: finished cases are in {job.run_dir}; measure the rest with: "
                      f"python -m bench throughput --resume {job.run_dir}[/yellow]")
        return EXIT_INTERRUPTED
    if not job.where.world.is_main:
        return EXIT_OK
    return finish(job, progress, args.json, console)


def _needs_data(cases: list[Case], where: Where) -> bool:
    return any(c.pipeline != "synthetic" and not c.skip_reason(where.device, where.world.size) for c in cases)


def _new(args: argparse.Namespace, console: Console) -> Job:
    """Everything that can be wrong with the flags, config, baseline, --out or data fails before the
    run folder exists."""
    cfg = config_mod.load(args.config)
    device, world = join_world(resolve_device(args.device))
    where = Where(device, world)
    console = console if world.is_main else Console(quiet=True)
    s = settings(cfg, args, device.type)
    defaults, line = build.device_settings(cfg, device)
    cases = plan_cases(cfg, defaults, args.case, s, Forced(args.steps, args.batch_size))
    build.check_ranks(world, [(f"case {c.name!r}", c.batch_size, c.compile) for c in cases
                              if c.name in (args.case or []) and (not c.device or c.device == device.type)])
    fp = fingerprint()
    name = device_name(fp, device)
    baseline = load_baseline(Path(args.baseline)) if args.baseline else None
    if baseline:
        check_comparable(baseline, name, cases, console)
    out = Path(args.out)
    check_writable(out)
    data_dir = locate_data(cfg, args.data) if _needs_data(cases, where) else None
    data = load(data_dir) if data_dir else None  # before the run folder: errors write nothing
    run_dir = Path(str(distributed.broadcast(str(make_run_dir(out, device)) if world.is_main else None)))
    env = {"run_id": run_dir.name, "kind": "throughput", "device": str(device), "device_name": name,
           "settings": asdict(s), "defaults": asdict(defaults), "cases": [asdict(c) for c in cases], "env": fp,
           "config": resolved_dict(cfg), "world": world_record(where), "data_dir": str(data_dir or ""),
           "baseline": None if not baseline else {"path": str(baseline.path), "run_id": baseline.path.name,
                                                  "max_regression": args.max_regression},
           "float32_precision": {c.name: float32_math(c.precision) for c in cases}}  # set per case
    build.prepare(device, defaults.precision)
    ranks = f" on {world.size} ranks (img/s: the job's, batch: global)" if world.size > 1 else ""
    console.print(f"{line}\nrun folder: {run_dir}\n{name}{ranks}: {len(cases)} cases, each {s.warmup} warm-up "
                  f"steps, then {s.repeats} repeats of {s.steps} timed steps (unless the case sets its own)")
    return Job(run_dir, env, where, s, cases, NOTHING_YET, data, baseline, args.max_regression)


PLAN_FLAGS = ("case", "steps", "batch_size", "warmup", "repeats", "trace", "baseline")


def _reopen(args: argparse.Namespace, console: Console) -> Job:
    """An interrupted run from its env.json (cases, settings, device, baseline) and files: the cases
    without a row are measured, on the same device model and world size, or refused."""
    given = [f"--{f}" for f in PLAN_FLAGS if getattr(args, f) is not None]
    if given:
        raise UsageError(f"--resume measures the cases its folder planned; drop {', '.join(given)}")
    folder = RunFolder.open(Path(args.resume), label="--resume ")
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
    done = Progress.read(folder.path)
    todo = [c for c in cases if c.name not in {r.case for r in done.rows}]
    cfg = config_mod.load(args.config or recorded_config(env))
    data = load(locate_data(cfg, args.data or env.get("data_dir") or None)) if _needs_data(todo, where) else None
    b = env.get("baseline") or {}
    build.prepare(device, "fp32")  # each case sets its own float32 math (build_work)
    if world.is_main:
        console.print(f"resuming {folder.path}: {len(todo)} of {len(cases)} cases to measure")
    return Job(folder.path, env, where, Settings(**env["settings"]), todo, done, data,
               load_baseline(Path(b["path"])) if b else None, b.get("max_regression", args.max_regression))


def with_scaling(rows: list[ThroughputRow], b: Baseline) -> list[ThroughputRow]:
    """Scaling efficiency against a baseline of another world size: per-device img/s here over per-
    device img/s there (1.0: perfect scaling)."""
    out = []
    for r in rows:
        old = b.rows[r.case] if r.case in b.rows else None
        old_per_device = old.imgs_per_s / old.world_size if old and old.status == "ok" and old.imgs_per_s else None
        eff = r.imgs_per_s_per_device / old_per_device if old_per_device and r.imgs_per_s_per_device else None
        out.append(replace(r, baseline_imgs_per_s=old.imgs_per_s if old else None, scaling_efficiency=eff))
    return out


def gate_env(gate: Gate, test: str) -> dict[str, Any]:
    """What env.json's ``baseline`` records of the gate: the test and each case's verdict."""
    return {"test": test, "raw_step_times": gate.raw,
            "verdicts": {case: {"verdict": v, "p_value": gate.comparisons[case].p_value if case in gate.comparisons
                                else None} for case, v in gate.verdicts.items()}}


def finish(job: Job, progress: Progress, as_json: bool, console: Console) -> int:
    """Gate, final files, table and exit code."""
    run_dir, env, rows, steps, baseline = job.run_dir, job.env, progress.rows, progress.steps, job.baseline
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
    write_env(run_dir, env, "failed" if errored else "complete")
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
