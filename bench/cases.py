"""Throughput cases: the matrix from bench.toml, and measuring it round-robin.

Cases come from bench.toml ``[throughput.cases.*]``; keys a case omits take the device's
``[devices.<type>]`` defaults. Without ``--case`` every case with ``matrix = true`` (the default)
is planned, the baseline first (``ratio_to_baseline`` divides by it); with ``--case`` only those
named (the baseline too only when named). A case marked for another device type, or that cannot
run here, is recorded as skipped with the reason; a case that fails (compile error, OOM) as an
error, and the rest go on.

Repeats are interleaved across cases: the first round builds, warms up and times one repeat of
every case; each later round times one more repeat of every case, in alternating order (A B C,
C B A, ...). Whatever drifts over a run (clocks, thermals, other jobs on a shared machine) then
lands on every case alike instead of on whichever case came first or last. The folder's CSVs are
rewritten after every case of the first round and after every round, so a kill keeps what was
measured; a case cut off before its first repeat has a ``timed_out`` row, a case cut off later
keeps its finished repeats.

Each model case also gets its cost, counted once per (precision, memory format) off the clock
(sc_fast.flops): model GFLOP per image and the eager estimate of bytes per image; with the run's
measured ceilings (sc_fast.ceilings) its achieved TFLOP/s and MFU.
"""

import gc
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from rich.console import Console

from bench import build, report
from bench.common import JobError, UsageError, Where, error_text
from bench.config import CaseSpec, Config, ConfigError, DeviceSettings
from bench.results import (ProfileOpRow, ProfileRow, StepTimeRow, ThroughputRow, read_rows, run_id, step_times,
                           write_rows)
from sc_fast import distributed
from sc_fast.ceilings import Ceilings, achieved_tflops, mfu
from sc_fast.data import Cifar10
from sc_fast.flops import StepCost, train_step_cost
from sc_fast.pipeline import PipelineUnavailable, make_pipeline
from sc_fast.profile import profile_steps
from sc_fast.throughput import (Measurement, Work, measurement, peak_memory_mib, reset_peak_memory, synthetic_batch,
                                training_step, warm_up)
from sc_fast.timing import time_steps
from sc_fast.train import batch_stream, float32_math, set_float32_math

TIMED_OUT = "timed_out"  # a case's status when a signal (a time limit) ended it before its first repeat
COST_BATCH = 32  # images per rank the FLOP and byte count runs on: per-image cost, off the clock


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


@dataclass(frozen=True)
class Forced:
    """Flags that override every case: --steps and --batch-size (None: the case's own)."""

    steps: int | None = None
    batch_size: int | None = None


# ---- the case matrix --------------------------------------------------------------------------

def resolve_case(name: str, spec: CaseSpec, defaults: DeviceSettings, steps: int, forced: Forced,
                 path: Path) -> Case:
    """What the case leaves out (None) from the device defaults; --steps beats the case's steps, which
    beat the run's; --batch-size beats the case's batch size."""
    if not spec.model and spec.pipeline == "synthetic":
        raise ConfigError(f"{path}: throughput.cases.{name}: model = false measures a pipeline; pipeline must "
                          "not be synthetic")
    pick = lambda own, default: default if own is None else own  # noqa: E731
    return Case(name=name, description=spec.description, batch_size=forced.batch_size or spec.batch_size,
                precision=pick(spec.precision, defaults.precision),
                channels_last=pick(spec.channels_last, defaults.channels_last),
                compile=pick(spec.compile, defaults.compile) if spec.model else "off",
                pipeline=spec.pipeline, model=spec.model, device=spec.device,
                steps=forced.steps or pick(spec.steps, steps), matrix=spec.matrix)


def plan_cases(cfg: Config, defaults: DeviceSettings, requested: list[str] | None, s: Settings,
               forced: Forced = Forced()) -> list[Case]:
    """The cases to run: the matrix (the baseline first), or the cases named; unknown names are a
    usage error. Every case is resolved, picked or not: a bad case fails every run."""
    base = cfg.throughput.baseline_case
    if base not in cfg.cases:
        raise ConfigError(f"{cfg.path}: throughput.baseline_case names unknown case {base!r}")
    for n in requested or []:
        if n not in cfg.cases:
            raise UsageError(f"--case {n}: unknown case (known: {', '.join(cfg.cases)})")
    cases = {n: resolve_case(n, spec, defaults, s.steps, forced, cfg.path) for n, spec in cfg.cases.items()}
    if not cases[base].model or cases[base].device:
        raise ConfigError(f"{cfg.path}: throughput.baseline_case {base!r} must train (model = true) on any device")
    if requested:  # what was asked for: the baseline only where a ratio was asked for too
        return [cases[n] for n in dict.fromkeys(requested)]
    names = cfg.throughput.default_cases or [n for n, c in cases.items() if c.matrix]
    return [cases[base]] + [cases[n] for n in dict.fromkeys(names) if n != base]


def settings(cfg: Config, steps: int | None, warmup: int | None, repeats: int | None, trace: int | None,
             device_type: str) -> Settings:
    """Flags over bench.toml; on the CPU the cpu_* keys replace steps, warmup and repeats."""
    tp, cpu = cfg.throughput, device_type == "cpu"
    return Settings(steps=steps or (tp.cpu_steps if cpu else tp.steps),
                    warmup=(tp.cpu_warmup if cpu else tp.warmup) if warmup is None else warmup,
                    repeats=repeats or (tp.cpu_repeats if cpu else tp.repeats), trace=trace or 0)


# ---- one case: its step, its row --------------------------------------------------------------

def device_settings(case: Case) -> DeviceSettings:
    return DeviceSettings(precision=case.precision, channels_last=case.channels_last, compile=case.compile,
                          warmup_steps=0)


def build_work(case: Case, where: Where, data: Cifar10 | None) -> Work:
    """One step of the case as a closure: train on the fixed batch, train on the pipeline's next
    batch, or only draw the pipeline's next batch. Under torchrun each rank steps its slice of the
    global batch as one DDP replica."""
    device, world, settings = where.device, where.world, device_settings(case)
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


def case_cost(case: Case, device: torch.device) -> StepCost:
    """FLOPs and bytes per image of the case's training step, on a fresh eager model (its weights
    do not matter) and a small synthetic batch: off the clock, never inside a timed step."""
    x, y = synthetic_batch(COST_BATCH, case.precision, case.channels_last, device, seed=1)
    return train_step_cost(build.model(None, device_settings(case), device), x, y, case.precision)


@dataclass(frozen=True)
class Cost:
    """What a row records of a case's cost: per image, and against the run's ceilings."""

    step: StepCost | None
    ceilings: Ceilings | None

    def columns(self, case: Case, imgs_per_s_per_device: float | None) -> dict[str, float | None]:
        if self.step is None:
            return {}
        tflops = achieved_tflops(imgs_per_s_per_device, self.step.flop_per_img) if imgs_per_s_per_device else None
        return {"gflop_per_img": self.step.gflop_per_img, "mbytes_per_img": self.step.bytes_per_img / 1e6,
                "flop_per_byte": self.step.intensity_flop_per_byte, "tflops": tflops,
                "mfu": mfu(tflops, self.ceilings, case.precision) if tflops and self.ceilings else None}


NO_COST = Cost(None, None)


def case_row(run: "Run", case: Case, m: Measurement | None, status: str, error: str = "",
             cost: Cost = NO_COST) -> ThroughputRow:
    where, s = run.where, run.settings
    per_device = m.imgs_per_s / where.world.size if m else None
    return ThroughputRow(
        run_id=run_id(run.run_dir), case=case.name, device=str(where.device), world_size=where.world.size,
        imgs_per_s_per_device=per_device, pipeline=case.pipeline, precision=case.precision,
        channels_last=case.channels_last, compile=case.compile, batch_size=case.batch_size, steps=case.steps,
        imgs_per_s=m.imgs_per_s if m else None, step_ms_median=m.step_ms(50) if m else None,
        step_ms_p10=m.step_ms(10) if m else None, step_ms_p90=m.step_ms(90) if m else None,
        ratio_to_baseline=None, model=case.model, warmup=s.warmup, repeats=len(m.repeat_s) if m else s.repeats,
        warmup_s=m.warmup_s if m else None, peak_mem_mib=m.peak_mem_mib if m else None,
        status=status, error=error, baseline_imgs_per_s=None, delta=None,
        float32_precision=float32_math(case.precision), **cost.columns(case, per_device))


def step_rows(case: str, m: Measurement | None) -> list[StepTimeRow]:
    """The measurement's raw step times as throughput_steps.csv rows (none for a case not measured)."""
    if m is None:
        return []
    per_repeat = len(m.step_s) // len(m.repeat_s)
    return [StepTimeRow(case=case, repeat=i // per_repeat, step=i % per_repeat, step_s=t)
            for i, t in enumerate(m.step_s)]


def profile_case(work: Work, case: Case, where: Where, steps: int,
                 trace_dir: Path | None) -> tuple[ProfileRow, list[ProfileOpRow]]:
    """sc_fast.profile on the measured (warmed-up) step. A profiler failure (no CUPTI, ...) is the
    profile row's error; the case's timing stands."""
    trace = trace_dir / f"trace_{case.name}.json.gz" if trace_dir and where.world.is_main else None
    try:
        p = profile_steps(work, steps, where.device, trace)
    except Exception as e:  # noqa: BLE001  the measurement is still good
        if where.world.size > 1:
            raise JobError(f"rank {where.world.rank}: case {case.name}: profiling: {error_text(e)}") from e
        return ProfileRow(case.name, steps, None, None, None, None, None, "", error_text(e)), []
    row = ProfileRow(case.name, p.steps, p.step_ms, p.issue_ms, p.kernel_ms, p.kernels_per_step, p.device_busy,
                     trace.name if trace else "", "")
    ops = [ProfileOpRow(case.name, i, t.kind, t.name, t.calls_per_step, t.ms_per_step, t.share)
           for i, t in enumerate(p.top, 1)]
    return row, ops


def with_ratios(rows: list[ThroughputRow], baseline_case: str) -> list[ThroughputRow]:
    """ratio_to_baseline against the baseline case's row, where the run measured it."""
    base = next((r.imgs_per_s for r in rows if r.case == baseline_case and r.status == "ok"), None)
    return [replace(r, ratio_to_baseline=r.imgs_per_s / base if base and r.imgs_per_s is not None else None)
            for r in rows]


# ---- what a run folder holds ----------------------------------------------------------------------

StepTimes = dict[str, list[StepTimeRow]]  # case -> its timed steps


@dataclass(frozen=True)
class Tally:
    """What a run folder holds so far: the cases' rows, step times and profiles."""

    rows: list[ThroughputRow]
    steps: StepTimes
    profiles: list[ProfileRow]
    ops: list[ProfileOpRow]

    @staticmethod
    def read(run_dir: Path) -> "Tally":
        """From the folder's files (a case has its row once it was measured; none yet: empty)."""
        return Tally(read_rows(run_dir / "throughput.csv", ThroughputRow, missing_ok=True),
                        step_times(run_dir) or {},
                        read_rows(run_dir / "profile.csv", ProfileRow, missing_ok=True),
                        read_rows(run_dir / "profile_ops.csv", ProfileOpRow, missing_ok=True))

    def write(self, run_dir: Path, traced: bool) -> None:
        write_rows(run_dir / "throughput.csv", self.rows, ThroughputRow)
        write_rows(run_dir / "throughput_steps.csv", [r for rs in self.steps.values() for r in rs], StepTimeRow)
        if traced:
            write_rows(run_dir / "profile.csv", self.profiles, ProfileRow)
            write_rows(run_dir / "profile_ops.csv", self.ops, ProfileOpRow)


NOTHING_YET = Tally([], {}, [], [])


# ---- measuring: round-robin over the cases ------------------------------------------------------

@dataclass
class Live:
    """A case across the rounds: its step, and what it has measured so far."""

    case: Case
    work: Work | None = None
    warmup_s: float = 0.0
    peak_mib: float = 0.0
    step_s: list[list[float]] = field(default_factory=list)  # this rank's step times, per repeat
    repeat_s: list[float] = field(default_factory=list)  # the job's seconds per repeat (slowest rank)
    cost: Cost = NO_COST
    final: ThroughputRow | None = None  # skipped, errored or cut off before measuring: its row as it stands
    profile: tuple[ProfileRow, list[ProfileOpRow]] | None = None

    def measured(self) -> Measurement | None:
        if not self.repeat_s:
            return None
        m = measurement(self.case.batch_size, self.step_s, self.warmup_s, self.peak_mib)
        return replace(m, repeat_s=tuple(self.repeat_s))


@dataclass(frozen=True)
class Run:
    """One throughput run's context: where it writes, runs and what it measures with."""

    run_dir: Path
    where: Where
    settings: Settings
    data: Cifar10 | None
    ceilings: Ceilings | None
    baseline_case: str


class Measuring:
    """The round-robin measurement of ``cases`` after those ``done`` (module docstring). Under
    torchrun every rank measures every case in the same order (the repeats' times are collectives);
    rank 0 writes."""

    def __init__(self, run: Run, cases: list[Case], done: Tally, console: Console) -> None:
        self.run, self.done, self.console = run, done, console
        self.lives = [Live(c) for c in cases]
        self.costs: dict[tuple[str, bool], StepCost] = {}

    def measure(self) -> Tally:
        for r in range(self.run.settings.repeats):
            order = self.lives if r % 2 == 0 else self.lives[::-1]
            for live in order:
                self._guarded(live, first=r == 0)
            if r:
                self.console.print(f"    round {r + 1}/{self.run.settings.repeats}: " + ", ".join(
                    f"{v.case.name} {v.measured().imgs_per_s:,.1f}" for v in self.lives if v.repeat_s))
            self._write()
        if self.run.settings.trace:
            for live in (v for v in self.lives if v.work is not None and v.repeat_s):
                self._profile(live)
        self._release()
        return self.tally()

    def _profile(self, live: Live) -> None:
        """--trace: the case's measured step under the profiler, in the case's own float32 math (the
        last repeat was another case's: a tf32 case would be traced in IEEE math), written at once so
        a time limit in the middle of the traces keeps those done."""
        set_float32_math(live.case.precision)
        live.profile = profile_case(live.work, live.case, self.run.where, self.run.settings.trace, self.run.run_dir)
        self.console.print(f"    {live.case.name}: {report.profile_text(*live.profile)}")
        self._write()

    def _guarded(self, live: Live, first: bool) -> None:
        """One case's turn in a round; a signal inside it leaves the folder saying what happened."""
        if live.final is not None:
            return
        t0 = time.perf_counter()
        try:
            self._start(live) if first else self._repeat(live)
        except KeyboardInterrupt:  # SIGTERM (a time limit) or Ctrl-C: say so in the case's row
            if not live.repeat_s:
                live.final = self._row(live, TIMED_OUT, f"cut off by a signal after {time.perf_counter() - t0:.0f} s "
                                                        "before its first repeat; --resume does not retry it")
            self._write()
            raise
        except Exception as e:  # a later repeat failed (OOM, ...): the row says so, its repeats so far stand
            if self.run.where.world.size > 1:
                raise JobError(f"rank {self.run.where.world.rank}: case {live.case.name}: {error_text(e)}") from e
            live.final, live.work = self._row(live, "error", error_text(e)), None

    def _start(self, live: Live) -> None:
        """The first round: build, warm up, time one repeat, count the cost. A failure is the row's."""
        case, where, s = live.case, self.run.where, self.run.settings
        n = len(self.done.rows) + self.lives.index(live) + 1
        self.console.print(f"[{n}/{len(self.done.rows) + len(self.lives)}] {describe(case)}")
        skip = case.skip_reason(where.device, where.world.size)
        if skip:
            live.final = self._row(live, "skipped", skip)
            self.console.print(f"    [yellow]skipped: {skip}[/]")
            return
        try:
            reset_peak_memory(where.device)  # before the model and pipeline exist: their memory counts
            set_float32_math(case.precision)  # process-wide: IEEE float32 unless the case is tf32
            live.work = build_work(case, where, self.run.data)
            live.warmup_s = warm_up(live.work, s.warmup, where.device)
            self._repeat(live)
            live.peak_mib = peak_memory_mib(where.device)
        except PipelineUnavailable as e:  # DALI missing here: not this code's failure
            live.final, live.work = self._row(live, "skipped", str(e)), None
        except Exception as e:  # OOM, compile failure, ...: recorded, the next case runs
            if where.world.size > 1:
                raise JobError(f"rank {where.world.rank}: case {case.name}: {error_text(e)}") from e
            live.final, live.work = self._row(live, "error", error_text(e)), None
        live.cost = self._cost(case) if case.model and live.final is None else NO_COST
        self.console.print(f"    {row_text(self._current(live))}")
        self._write()

    def _repeat(self, live: Live) -> None:
        set_float32_math(live.case.precision)  # another case may have set it in between
        times = time_steps(live.work, live.case.steps, self.run.where.device)
        live.step_s.append(times)
        # data parallel: a repeat takes as long as the slowest rank took, so img/s is the job's
        live.repeat_s.append(distributed.max_(sum(times)) if self.run.where.world.size > 1 else sum(times))

    def _cost(self, case: Case) -> Cost:
        """The case's FLOPs and bytes (counted once per precision and memory format), off the clock; a
        failure to count leaves the columns empty, never the measurement."""
        key = (case.precision, case.channels_last)
        try:
            if key not in self.costs:
                self.costs[key] = case_cost(case, self.run.where.device)
        except Exception as e:  # noqa: BLE001  the timing above stands
            self.console.print(f"    [yellow]FLOPs not counted: {error_text(e)}[/yellow]")
            return NO_COST
        return Cost(self.costs[key], self.run.ceilings)

    def _row(self, live: Live, status: str, error: str = "") -> ThroughputRow:
        return case_row(self.run, live.case, live.measured(), status, error, live.cost)

    def _current(self, live: Live) -> ThroughputRow:
        return live.final or self._row(live, "ok")

    def tally(self) -> Tally:
        started = [v for v in self.lives if v.final or v.repeat_s]
        rows = with_ratios(self.done.rows + [self._current(v) for v in started], self.run.baseline_case)
        steps = {**self.done.steps, **{v.case.name: step_rows(v.case.name, v.measured()) for v in started}}
        profiled = [v.profile for v in started if v.profile]
        return Tally(rows, steps, self.done.profiles + [p for p, _ in profiled],
                     self.done.ops + [o for _, ops in profiled for o in ops])

    def _write(self) -> None:
        if self.run.where.world.is_main:
            self.tally().write(self.run.run_dir, bool(self.run.settings.trace))

    def _release(self) -> None:
        """Frees what the cases built, so nothing of this run starves or slows what comes next."""
        for live in self.lives:
            live.work = None
        if any(v.case.compile != "off" for v in self.lives):
            torch._dynamo.reset()  # compiled graphs and recompile counters
        gc.collect()
        if self.run.where.device.type == "cuda":
            torch.cuda.empty_cache()


def describe(case: Case) -> str:
    return (f"{case.name}: {case.pipeline}, {case.precision}, {'channels_last' if case.channels_last else 'NCHW'}, "
            f"compile {case.compile}, batch {case.batch_size}, {case.steps} steps"
            f"{'' if case.model else ', pipeline only'}")


def row_text(r: ThroughputRow) -> str:
    if r.status != "ok":
        return f"[{'yellow' if r.status == 'skipped' else 'red'}]{r.status}: {r.error}[/]"
    cost = f", {r.tflops:,.3g} TFLOP/s" + (f", MFU {r.mfu:.1%}" if r.mfu is not None else "") if r.tflops else ""
    return (f"{r.imgs_per_s:,.1f} img/s (first repeat), step {r.step_ms_median:,.1f} ms, "
            f"warm-up {r.warmup_s:.1f} s{cost}")

