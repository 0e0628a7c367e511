"""The time-to-target job (``bench run``, and the suite's ``run`` part): trials x seeds, each a fresh model.

Read top to bottom: ``run_trials`` plans a new run (profile, trials, seeds, target, device,
pipeline) or reloads an interrupted one (``resume``), then ``Executor`` runs the (trial, seed)
pairs that have no row yet, seed by seed, each built by ``bench.build`` and trained by
``sc_fast.train.train_trial``.

A run folder holds ``env.json`` (environment, resolved config, the plan, the run's state) and
``trials.csv``/``curves.csv``, rewritten atomically after every trial, and while a trial runs its
checkpoint (``bench.checkpoints``). Resuming reads the plan back and runs only the (trial, seed)
pairs without a row; a trial that was cut off goes on from its checkpoint (from scratch without a
usable one).
"""

import contextlib
import functools
import json
import math
import signal
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bench import build, report
from bench import config as config_mod
from bench.checkpoints import Checkpoints, Refused, machine
from bench.common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, JobError, Outcome, UsageError, Where,
                          check_writable, choose_pipeline, device_name, error_text, join_world, locate_data,
                          new_folder, recorded_config, resolve_device, world_record)
from bench.config import Config, DeviceSettings, TrialSpec, resolved_dict
from bench.results import CurveRow, RunError, RunFolder, TrialRow, read_rows, run_id, write_rows
from sc_fast import distributed
from sc_fast.data import Cifar10, load
from sc_fast.distributed import World
from sc_fast.env import fingerprint, start_record
from sc_fast.pipeline import make_pipeline
from sc_fast.train import EvalPoint, Hooks, TrialOutcome, TrialState, float32_math, train_trial


@dataclass(frozen=True)
class TrialsRequest:
    """What a time-to-target run is asked: `bench run`'s flags, or the suite's run part."""

    config: str | None = None  # bench.toml to read; None: the repo's (a resumed run: the one it recorded)
    profile: str = "auto"
    trials: tuple[str, ...] = ()  # empty: the profile's
    seeds: tuple[int, ...] = ()  # empty: the profile's count, 0..N-1
    target: float | None = None  # None: the profile's
    device: str = "auto"
    pipeline: str | None = None  # None: [data].pipeline
    data: str | None = None
    out: Path = Path("results")  # the parent of a new run folder ...
    folder: Path | None = None  # ... or exactly this one (a suite part)
    sets: tuple[tuple[str, Any], ...] = ()  # `--set KEY=VALUE`
    resume: Path | None = None  # an interrupted run folder to finish instead


@dataclass(frozen=True)
class Plan:
    """Everything a run needs besides the data; stored in env.json so --resume can rebuild it."""

    profile: str
    trials: tuple[TrialSpec, ...]
    seeds: tuple[int, ...]
    target: float
    stop_at_target: bool
    device: str
    pipeline: str
    settings: DeviceSettings
    world_size: int = 1  # ranks under torchrun; each trial's batch_size is the global batch

    def pairs(self) -> list[tuple[TrialSpec, int]]:
        """Seed by seed, every trial of a seed before the next seed: a run cut short (a time limit)
        still has every schedule, with as many seeds as fitted."""
        return [(t, s) for s in self.seeds for t in self.trials]

    def to_json(self) -> dict[str, Any]:
        return {"profile": self.profile, "trials": [asdict(t) for t in self.trials],
                "seeds": list(self.seeds), "target": self.target, "stop_at_target": self.stop_at_target,
                "device": self.device, "pipeline": self.pipeline, "settings": asdict(self.settings),
                "world_size": self.world_size}

    @staticmethod
    def from_json(d: dict[str, Any]) -> "Plan":
        trials = tuple(TrialSpec.from_json(t) for t in d["trials"])
        return Plan(profile=d["profile"], trials=trials, seeds=tuple(d["seeds"]), target=d["target"],
                    stop_at_target=d["stop_at_target"], device=d["device"], pipeline=d["pipeline"],
                    settings=DeviceSettings(**d["settings"]), world_size=d.get("world_size", 1))


def write_env(run_dir: Path, cfg: Config | None, plan: Plan, state: str, extra: dict[str, Any] | None = None,
              world: World = World.single()) -> None:
    """env.json with the plan and the run's state; rank 0 alone writes."""
    if not world.is_main:
        return
    folder = RunFolder(run_dir)
    first = {} if folder.env_path.exists() else {"env": fingerprint(), "config": resolved_dict(cfg)}
    folder.update_env(**first, run_id=folder.run_id, kind="run", plan=plan.to_json(), state=state, **(extra or {}))


def load_plan(run_dir: Path) -> Plan:
    env = RunFolder.open(run_dir).env()
    if env.get("kind") != "run" or "plan" not in env:
        raise RunError(f"{run_dir}: not a `bench run` folder (env.json has no plan)")
    try:
        return Plan.from_json(env["plan"])
    except (KeyError, TypeError) as e:
        raise RunError(f"{run_dir}/env.json: damaged plan ({e})") from None


def checkpoints(run_dir: Path, cfg: Config | None, plan: Plan) -> Checkpoints:
    """The run's checkpoints, fingerprinted with this config, plan, code and device."""
    shared = {"config_sha256": cfg.sha256 if cfg else None, "device": plan.device, "pipeline": plan.pipeline,
              "settings": asdict(plan.settings), "target": plan.target, "stop_at_target": plan.stop_at_target}
    return Checkpoints(run_dir, {**shared, **machine(torch.device(plan.device))})


def resume_point(ckpts: Checkpoints, spec: TrialSpec, seed: int,
                 console: Console) -> tuple[TrialState | None, int]:
    """(state to go on from or None, restarts so far) for a trial about to run; a checkpoint that
    cannot be used gets one line and the trial starts from scratch."""
    try:
        found = ckpts.load(spec, seed)
    except Refused as e:
        console.print(str(e), style="yellow", markup=False, highlight=False, soft_wrap=True)
        return None, 0
    if found is None:
        return None, 0
    state, restarts = found
    console.print(f"{spec.name} seed {seed}: going on from its checkpoint at step {state.step} "
                  f"(restart {restarts + 1})", soft_wrap=True)
    return state, restarts + 1


def trial_row(run_id: str, spec: TrialSpec, seed: int, plan: Plan, outcome: TrialOutcome | None,
              error: str = "", resumed: int = 0) -> TrialRow:
    s, o = plan.settings, outcome
    hit = o.reached_at if o else None
    nan = float("nan")
    return TrialRow(
        run_id=run_id, trial=spec.name, schedule=spec.schedule, seed=seed, device=plan.device,
        pipeline=plan.pipeline, precision=s.precision, channels_last=s.channels_last, compile=s.compile,
        batch_size=spec.batch_size, max_steps=spec.steps, target_acc=plan.target,
        status=o.status if o else "error",
        time_to_target_s=hit.train_time_s if hit else None, steps_to_target=hit.step if hit else None,
        epochs_to_target=hit.epoch if hit else None,
        wall_to_target_s=hit.wall_time_s if hit and not resumed else None,  # a resumed wall clock has gaps
        best_test_acc=o.best_test_acc if o else nan, final_test_acc=o.final_test_acc if o else nan,
        train_time_s=o.train_time_s if o else nan, compile_time_s=o.compile_time_s if o else nan,
        eval_time_s=o.eval_time_s if o else nan,
        train_imgs_per_s=o.train_images / o.train_time_s if o and o.train_time_s > 0 else nan,
        steps_run=o.steps_run if o else 0, error=error, world_size=plan.world_size, resumed=resumed,
        checkpoint_time_s=o.checkpoint_time_s if o else None, float32_precision=float32_math(s.precision))


def curve_rows(run_id: str, spec: TrialSpec, seed: int, outcome: TrialOutcome) -> list[CurveRow]:
    return [CurveRow(run_id=run_id, trial=spec.name, seed=seed, step=p.step, epoch=p.epoch, lr=p.lr,
                     momentum=p.momentum, train_loss=p.train_loss, test_loss=p.test_loss, test_acc=p.test_acc,
                     train_time_s=p.train_time_s, wall_time_s=p.wall_time_s) for p in outcome.curve]


def existing(run_dir: Path) -> tuple[list[TrialRow], list[CurveRow]]:
    """The rows on disk (RunError if a file is damaged). Curves of a trial without a row belong to
    a cut-off attempt and are dropped: a resumed trial's curve comes from its checkpoint."""
    trials_csv, curves_csv = run_dir / "trials.csv", run_dir / "curves.csv"
    rows = read_rows(trials_csv, TrialRow, missing_ok=True)
    curves = read_rows(curves_csv, CurveRow, missing_ok=True)
    done = [(r.trial, r.seed) for r in rows]
    for key in done:
        if done.count(key) > 1:
            raise RunError(f"{trials_csv}: damaged (two rows for trial {key[0]!r} seed {key[1]})")
    return rows, [c for c in curves if (c.trial, c.seed) in set(done)]


def pending(run_dir: Path, plan: Plan) -> list[tuple[TrialSpec, int]]:
    """The plan's (trial, seed) pairs without a row yet; reads (and so checks) the result files."""
    done = {(r.trial, r.seed) for r in existing(run_dir)[0]}
    return [(t, s) for t, s in plan.pairs() if (t.name, s) not in done]


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT/SIGTERM arriving inside the block take effect when it ends: a finished trial's curves
    and row are written together, never one without the other."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, handler in old.items():
        if handler is not None:  # None: installed outside Python, left alone
            signal.signal(s, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for s, handler in old.items():
            if handler is not None:
                signal.signal(s, handler)
        if caught:
            signal.raise_signal(caught[0])



# ---- executing a plan --------------------------------------------------------------------------------

BARS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn())


@dataclass
class Executor:
    """Runs a plan's (trial, seed) pairs that have no row yet (a cut-off one from its checkpoint),
    writing each row and curve as it finishes. KeyboardInterrupt propagates after the finished
    trials are on disk; the cut-off trial's last checkpoint stays. ``cfg``: the config read now,
    whose sha256 checkpoints must match. Under torchrun every rank runs every trial (each resuming
    from the same checkpoint); rank 0 writes."""

    run_dir: Path
    plan: Plan
    data: Cifar10
    where: Where
    console: Console
    cfg: Config | None = None
    rows: list[TrialRow] = field(default_factory=list)
    curves: list[CurveRow] = field(default_factory=list)

    def run(self) -> list[TrialRow]:
        self.rows, self.curves = existing(self.run_dir)
        done = {(r.trial, r.seed) for r in self.rows}
        ckpts = checkpoints(self.run_dir, self.cfg, self.plan)
        if self.where.world.is_main:
            for tmp in self.run_dir.glob(".*.tmp"):  # left by a process killed mid-write
                tmp.unlink(missing_ok=True)
            ckpts.clean(done)
        with Progress(*BARS, console=self.console, transient=False) as bars:
            overall = bars.add_task("run", total=len(self.plan.pairs()), completed=len(done), info="")
            for spec, seed in [(t, s) for t, s in self.plan.pairs() if (t.name, s) not in done]:
                task = bars.add_task(f"  {spec.name} seed {seed}", total=spec.steps, info="")
                row = self._trial(spec, seed, ckpts, bars, task)
                bars.update(task, info=_status_text(row))
                bars.advance(overall)
        return self.rows

    def _trial(self, spec: TrialSpec, seed: int, ckpts: Checkpoints, bars: Progress, task: Any) -> TrialRow:
        """One (trial, seed): trained, its row and curve written; a failure inside it is its row's."""
        resume, restarts = resume_point(ckpts, spec, seed, self.console)
        save = functools.partial(ckpts.save, spec, seed, restarts=restarts)  # rank 0 alone writes checkpoints
        hooks = Hooks(on_eval=self._progress_line(bars, task, f"{spec.name} seed {seed}"),
                      on_step=lambda n: bars.update(task, completed=n),
                      on_checkpoint=save if self.where.world.is_main else None)
        curve: list[CurveRow] = []
        try:
            outcome = self._train(spec, seed, hooks, resume)
            row = trial_row(run_id(self.run_dir), spec, seed, self.plan, outcome, resumed=restarts)
            curve = curve_rows(run_id(self.run_dir), spec, seed, outcome)
        except Exception as e:  # OOM, compile failure, anything inside one trial: record, go on
            if self.where.world.size > 1:  # the ranks' collectives are out of step now: end the job
                raise JobError(f"rank {self.where.world.rank}: trial {spec.name} seed {seed}: {error_text(e)} "
                               "(a rank may have died; the job stops)") from e
            row = trial_row(run_id(self.run_dir), spec, seed, self.plan, None, error=error_text(e), resumed=restarts)
            self.console.print(f"[red]trial {spec.name} seed {seed} failed: {row.error}[/red]")
        finally:
            if torch.cuda.is_available():  # an OOM'd trial must not starve the next
                torch.cuda.empty_cache()
        self._record(row, curve, ckpts)
        return row

    def _train(self, spec: TrialSpec, seed: int, hooks: Hooks, resume: TrialState | None) -> TrialOutcome:
        device, world, settings = self.where.device, self.where.world, self.plan.settings
        torch.manual_seed(seed)  # the seed fixes the initial weights; the pipeline's shuffles use it too
        model = build.replicate(build.model(spec, settings, device), spec, world, device)
        pipeline = make_pipeline(self.plan.pipeline, self.data, build.pipeline_spec(spec, settings, seed, world=world),
                                 device)
        cfg = build.train_config(spec, settings, target_acc=self.plan.target, stop_at_target=self.plan.stop_at_target)
        return train_trial(model, pipeline, spec.build_schedule(), cfg, device, hooks, resume)

    def _progress_line(self, bars: Progress, task: Any, name: str) -> Any:
        def on_eval(p: EvalPoint) -> None:
            info = f"acc {p.test_acc:.3f} loss {p.train_loss:.3f}"
            bars.update(task, info=info)
            if not self.console.is_terminal:  # logs and CI: a line per evaluation instead of live bars
                self.console.print(f"{name}: step {p.step} epoch {p.epoch:.2f} {info} "
                                   f"train {p.train_time_s:.1f} s wall {p.wall_time_s:.1f} s")
        return on_eval

    def _record(self, row: TrialRow, curve: list[CurveRow], ckpts: Checkpoints) -> None:
        # curves first: a kill -9 between the two writes leaves curves without a row, dropped on resume
        with signals_held():
            self.rows.append(row)
            self.curves += curve
            if self.where.world.is_main:
                write_rows(self.run_dir / "curves.csv", self.curves, CurveRow)
                write_rows(self.run_dir / "trials.csv", self.rows, TrialRow)
                ckpts.remove(row.trial, row.seed)


def _status_text(row: TrialRow) -> str:
    if row.status == "reached":
        return f"reached in {row.time_to_target_s:.1f} s, {row.steps_to_target} steps"
    acc = "" if math.isnan(row.best_test_acc) else f", best {row.best_test_acc:.3f}"
    return f"{row.status}{acc}"


# ---- planning: a new run, or an interrupted one reopened -----------------------------------------------

@dataclass(frozen=True)
class Prepared:
    """A run about to execute: its folder, config, plan, data and what env.json adds."""

    run_dir: Path
    cfg: Config
    plan: Plan
    data: Cifar10
    extra: dict[str, Any]


def _announce_profile(req: TrialsRequest, profile: config_mod.Profile, device: torch.device,
                      console: Console) -> None:
    if req.profile == "auto" and device.type == "cpu":
        console.print(f"[yellow]No CUDA GPU: running the CPU profile {profile.name!r}: "
                      f"{profile.description}[/yellow]")
    elif profile.device and profile.device != device.type:
        console.print(f"[yellow]profile {profile.name!r} is sized for {profile.device}; "
                      f"running on {device.type}[/yellow]")


def plan_run(req: TrialsRequest, cfg: Config, where: Where, console: Console) -> Plan:
    """The plan of a new run; a bad profile, trial, --set, pipeline or rank split fails here."""
    device = where.device
    profile = cfg.profile(req.profile, device.type)
    _announce_profile(req, profile, device, console)
    trials = [config_mod.with_sets(t, list(req.sets)) for t in cfg.resolve(profile, list(req.trials) or None)]
    if req.sets:
        console.print("overrides: " + ", ".join(f"{k}={v!r}" for k, v in req.sets))
    source = "--pipeline" if req.pipeline else f"{cfg.path}: data.pipeline"
    pipeline, notice = choose_pipeline(req.pipeline or cfg.data.pipeline, source, device)
    if notice:
        console.print(f"[yellow]{notice}[/yellow]")
    settings, line = build.device_settings(cfg, device, images=min(t.steps * t.batch_size for t in trials))
    console.print(line)
    build.check_ranks(where.world, [(f"trial {t.name!r}", t.batch_size, settings.compile) for t in trials])
    seeds = tuple(dict.fromkeys(req.seeds or range(profile.seeds)))
    return Plan(profile=profile.name, trials=tuple(trials), seeds=seeds,
                target=profile.target if req.target is None else req.target, stop_at_target=profile.stop_at_target,
                device=str(device), pipeline=pipeline, settings=settings, world_size=where.world.size)


def _new(req: TrialsRequest, where: Where, console: Console) -> Prepared:
    """Everything that can be wrong with the request, the config, the destination or the data fails
    before the run folder exists."""
    cfg = config_mod.load(req.config)
    plan = plan_run(req, cfg, where, console)
    check_writable(req.folder.parent if req.folder else req.out)  # before the data: a bad --out costs nothing
    data_dir = locate_data(cfg, req.data)
    data = load(data_dir)  # before the run folder: a data error writes nothing
    run_dir = new_folder(req.out, req.folder, where.device) if where.world.is_main else None
    return Prepared(Path(str(distributed.broadcast(str(run_dir)))), cfg, plan, data,
                    {"data_dir": str(data_dir), "overrides": dict(req.sets),
                     "device_name": device_name(fingerprint(), where.device), "starts": [start_record()]})


def _reopen(req: TrialsRequest, where: Where, console: Console) -> Prepared | None:
    """An interrupted run, or None when every trial has its row. The folder is checked whole before
    anything is loaded or written: a damaged run stays as it was."""
    run_dir = Path(req.resume)
    plan = load_plan(run_dir)
    todo = pending(run_dir, plan)
    if not todo:
        console.print(f"{run_dir}: every trial has its row; nothing to do")
        return None
    if plan.world_size != where.world.size:
        raise UsageError(f"{run_dir}: ran on {plan.world_size} rank(s); resume it with as many "
                         f"(this job has {where.world.size})")
    if plan.pipeline == "dali":
        choose_pipeline("dali", f"{run_dir}: pipeline", where.device)
    # The folder records the config file and the data folder it ran with; the request overrides them.
    env = RunFolder(run_dir).env()
    cfg = config_mod.load(req.config or recorded_config(env))
    data = load(locate_data(cfg, req.data or env.get("data_dir")))
    console.print(f"resuming {run_dir}: {len(todo)} of {len(plan.pairs())} trials to run")
    # env.json's machine block is the first start's; each piece adds its own threads and load
    return Prepared(run_dir, cfg, plan, data, {"starts": [*env.get("starts", []), start_record()]})


def _where(req: TrialsRequest) -> Where:
    """This process's device, after joining torchrun's process group when there is one."""
    requested = load_plan(Path(req.resume)).device.split(":")[0] if req.resume else req.device
    device, world = join_world(resolve_device(requested))
    return Where(device, world)


def run_trials(req: TrialsRequest, console: Console, as_json: bool = False) -> Outcome:
    """The time-to-target job: a new run (or ``req.resume``'s) executed to its end or to a signal."""
    where = _where(req)
    console = console if where.world.is_main else Console(quiet=True)  # rank 0 alone prints
    p = _reopen(req, where, console) if req.resume else _new(req, where, console)
    if p is None:
        return Outcome(Path(req.resume), EXIT_OK)
    console.print(f"run folder: {p.run_dir}" + (f" ({where.world.size} ranks)" if where.world.size > 1 else ""))
    extra = {**p.extra, "world": world_record(where)}
    try:
        extra["float32_precision"] = build.prepare(where.device, p.plan.settings.precision)
        write_env(p.run_dir, p.cfg, p.plan, "running", extra, where.world)
        rows = Executor(p.run_dir, p.plan, p.data, where, console, p.cfg).run()
    except KeyboardInterrupt:
        write_env(p.run_dir, p.cfg, p.plan, "interrupted", world=where.world)
        console.print(f"[yellow]interrupted: finished trials and the cut-off trial's last checkpoint are in "
                      f"{p.run_dir}; continue with: python -m bench run --resume {p.run_dir}[/yellow]")
        return Outcome(p.run_dir, EXIT_INTERRUPTED)
    code = EXIT_FAILED if any(r.status == "error" for r in rows) else EXIT_OK
    write_env(p.run_dir, p.cfg, p.plan, "failed" if code else "complete", world=where.world)
    if where.world.is_main:
        summary = report.render_run(p.run_dir, None if as_json else console)
        if as_json:
            print(json.dumps({"run_dir": str(p.run_dir), "summary": json.loads(summary.to_json(orient="index"))}))
    return Outcome(p.run_dir, code)
