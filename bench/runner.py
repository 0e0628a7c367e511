"""The time-to-target job: trials x seeds, each a fresh model, results written as they finish.

A run folder holds ``env.json`` (environment, resolved config, the plan, the run's state) and
``trials.csv``/``curves.csv``, rewritten atomically after every trial. Resuming reads the plan back
and runs only the (trial, seed) pairs without a row; a trial that was cut off starts from scratch.
"""

import contextlib
import math
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bench.config import Config, DeviceSettings, TrialSpec, resolved_dict
from bench.results import CurveRow, RunError, TrialRow, atomic_write_json, read_json, read_rows, write_rows
from sc_fast.data import Cifar10
from sc_fast.env import fingerprint
from sc_fast.model import resnet56
from sc_fast.pipeline import PipelineSpec, make_pipeline
from sc_fast.train import EvalPoint, TrainConfig, TrialOutcome, train_trial

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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

    def pairs(self) -> list[tuple[TrialSpec, int]]:
        return [(t, s) for t in self.trials for s in self.seeds]

    def to_json(self) -> dict[str, Any]:
        return {"profile": self.profile, "trials": [asdict(t) for t in self.trials],
                "seeds": list(self.seeds), "target": self.target, "stop_at_target": self.stop_at_target,
                "device": self.device, "pipeline": self.pipeline, "settings": asdict(self.settings)}

    @staticmethod
    def from_json(d: dict[str, Any]) -> "Plan":
        trials = tuple(TrialSpec.from_json(t) for t in d["trials"])
        return Plan(profile=d["profile"], trials=trials, seeds=tuple(d["seeds"]), target=d["target"],
                    stop_at_target=d["stop_at_target"], device=d["device"], pipeline=d["pipeline"],
                    settings=DeviceSettings(**d["settings"]))


def write_env(run_dir: Path, cfg: Config | None, plan: Plan, state: str, extra: dict[str, Any] | None = None) -> None:
    env_path = run_dir / "env.json"
    env = read_json(env_path) if env_path.exists() else {"env": fingerprint(), "config": resolved_dict(cfg)}
    env.update({"run_id": run_dir.name, "kind": "run", "plan": plan.to_json(), "state": state, **(extra or {})})
    atomic_write_json(env_path, env)


def load_plan(run_dir: Path) -> Plan:
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: not a run folder (no such folder)")
    if not (run_dir / "env.json").is_file():
        raise RunError(f"{run_dir}: not a run folder (no env.json)")
    env = read_json(run_dir / "env.json")
    if env.get("kind") != "run" or "plan" not in env:
        raise RunError(f"{run_dir}: not a `bench run` folder (env.json has no plan)")
    try:
        return Plan.from_json(env["plan"])
    except (KeyError, TypeError) as e:
        raise RunError(f"{run_dir}/env.json: damaged plan ({e})") from None


def _train_config(spec: TrialSpec, plan: Plan) -> TrainConfig:
    s = plan.settings
    return TrainConfig(max_steps=spec.steps, eval_every=spec.eval_every, weight_decay=spec.weight_decay,
                       nesterov=spec.nesterov, label_smoothing=spec.label_smoothing, precision=s.precision,
                       compile=s.compile, warmup_steps=s.warmup_steps, target_acc=plan.target,
                       stop_at_target=plan.stop_at_target)


def run_trial(spec: TrialSpec, seed: int, plan: Plan, data: Cifar10,
              on_step: Callable[[int], None], on_eval: Callable[[EvalPoint], None]) -> TrialOutcome:
    device = torch.device(plan.device)
    torch.manual_seed(seed)  # the seed fixes the initial weights; the pipeline's shuffles use it too
    model = resnet56(bn_momentum=spec.bn_momentum).to(device)
    if plan.settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    pspec = PipelineSpec(batch_size=spec.batch_size, eval_batch_size=spec.eval_batch_size, augment=spec.augment,
                         dtype=DTYPES[plan.settings.precision], channels_last=plan.settings.channels_last,
                         seed=seed, train_images=spec.train_images, eval_images=spec.eval_images)
    pipeline = make_pipeline(plan.pipeline, data, pspec, device)
    return train_trial(model, pipeline, spec.build_schedule(), _train_config(spec, plan), device,
                       on_eval=on_eval, on_step=on_step)


def trial_row(run_id: str, spec: TrialSpec, seed: int, plan: Plan, outcome: TrialOutcome | None,
              error: str = "") -> TrialRow:
    s, o = plan.settings, outcome
    hit = o.reached_at if o else None
    nan = float("nan")
    return TrialRow(
        run_id=run_id, trial=spec.name, schedule=spec.schedule, seed=seed, device=plan.device,
        pipeline=plan.pipeline, precision=s.precision, channels_last=s.channels_last, compile=s.compile,
        batch_size=spec.batch_size, max_steps=spec.steps, target_acc=plan.target,
        status=o.status if o else "error",
        time_to_target_s=hit.train_time_s if hit else None, steps_to_target=hit.step if hit else None,
        epochs_to_target=hit.epoch if hit else None, wall_to_target_s=hit.wall_time_s if hit else None,
        best_test_acc=o.best_test_acc if o else nan, final_test_acc=o.final_test_acc if o else nan,
        train_time_s=o.train_time_s if o else nan, compile_time_s=o.compile_time_s if o else nan,
        eval_time_s=o.eval_time_s if o else nan,
        train_imgs_per_s=o.train_images / o.train_time_s if o and o.train_time_s > 0 else nan,
        steps_run=o.steps_run if o else 0, error=error)


def curve_rows(run_id: str, spec: TrialSpec, seed: int, outcome: TrialOutcome) -> list[CurveRow]:
    return [CurveRow(run_id=run_id, trial=spec.name, seed=seed, step=p.step, epoch=p.epoch, lr=p.lr,
                     momentum=p.momentum, train_loss=p.train_loss, test_loss=p.test_loss, test_acc=p.test_acc,
                     train_time_s=p.train_time_s, wall_time_s=p.wall_time_s) for p in outcome.curve]


def _error_text(e: BaseException) -> str:
    """One line for the CSV: the exception and where it came from."""
    last = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
    where = f" at {Path(last[0].filename).name}:{last[0].lineno}" if last else ""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{where}"[:500]


def existing(run_dir: Path) -> tuple[list[TrialRow], list[CurveRow]]:
    """The rows on disk (RunError if a file is damaged). Curves of a trial without a row belong to
    a cut-off attempt and are dropped: a rerun starts from scratch, never stitched."""
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
def signals_deferred() -> Iterator[None]:
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


def execute(run_dir: Path, plan: Plan, data: Cifar10, console: Console) -> list[TrialRow]:
    """Runs the plan's missing trials; returns all rows. KeyboardInterrupt propagates after the
    finished trials are on disk."""
    run_id = run_dir.name
    trials_csv, curves_csv = run_dir / "trials.csv", run_dir / "curves.csv"
    rows, curves = existing(run_dir)
    done = {(r.trial, r.seed) for r in rows}
    todo = [(t, s) for t, s in plan.pairs() if (t.name, s) not in done]
    for tmp in run_dir.glob(".*.tmp"):  # left by a process killed mid-write
        tmp.unlink(missing_ok=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("run", total=len(plan.pairs()), completed=len(done), info="")
        for spec, seed in todo:
            task = progress.add_task(f"  {spec.name} seed {seed}", total=spec.steps, info="")

            def on_eval(p: EvalPoint, task: int = task, name: str = f"{spec.name} seed {seed}") -> None:
                info = f"acc {p.test_acc:.3f} loss {p.train_loss:.3f}"
                progress.update(task, info=info)
                if not console.is_terminal:  # logs and CI: a line per evaluation instead of live bars
                    console.print(f"{name}: step {p.step} epoch {p.epoch:.2f} {info} "
                                  f"train {p.train_time_s:.1f} s wall {p.wall_time_s:.1f} s")

            try:
                outcome = run_trial(spec, seed, plan, data, lambda n, task=task: progress.update(task, completed=n),
                                    on_eval)
                row = trial_row(run_id, spec, seed, plan, outcome)
                curves += curve_rows(run_id, spec, seed, outcome)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # OOM, compile failure, anything inside one trial: record, go on
                row = trial_row(run_id, spec, seed, plan, None, error=_error_text(e))
                console.print(f"[red]trial {spec.name} seed {seed} failed: {row.error}[/red]")
            finally:
                if torch.cuda.is_available():  # an OOM'd trial must not starve the next
                    torch.cuda.empty_cache()
            # curves first: a kill -9 between the two writes leaves curves without a row, dropped on resume
            with signals_deferred():
                rows.append(row)
                write_rows(curves_csv, curves, CurveRow)
                write_rows(trials_csv, rows, TrialRow)
            progress.update(task, info=_status_text(row))
            progress.advance(overall)
    return rows


def _status_text(row: TrialRow) -> str:
    if row.status == "reached":
        return f"reached in {row.time_to_target_s:.1f} s, {row.steps_to_target} steps"
    acc = "" if math.isnan(row.best_test_acc) else f", best {row.best_test_acc:.3f}"
    return f"{row.status}{acc}"
