"""The LR range test job (``bench lr-find``, and the suite's ``lr-find`` part): fastai's exponential
ramp, the paper's linear one, or both (sc_fast.lr_find), into a run folder.

Batch size, weight decay, label smoothing, BN momentum and augmentation come from the
``[lr_find].trial`` trial (or the request's); precision and memory format from ``[devices.*]``.
``steps`` bounds every ramp to that many steps (the linear ramp keeps its number of evaluations);
without a GPU and without ``steps``, ``[lr_find].cpu_steps`` bounds them, and the run says how long
the full test would take here. Writes env.json (kind "lr_find"), lr_find.csv, summary.md and
lr_find.png (rendered by ``bench.report_lr_find``).
"""

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import build, report_lr_find
from bench import config as config_mod
from bench.common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Outcome, UsageError, check_writable,
                          choose_pipeline, error_text, load_data, new_folder, resolve_device)
from bench.config import Config, ConfigError, TrialSpec, resolved_dict
from bench.results import LrFindRow, RunFolder, write_rows
from sc_fast import lr_find
from sc_fast.env import fingerprint
from sc_fast.pipeline import Pipeline, make_pipeline
from sc_fast.train import TrainConfig

SEED = 0


@dataclass(frozen=True)
class RangeRequest:
    """What a range test is asked: `bench lr-find`'s flags, or the suite's lr-find part."""

    config: str | None = None
    mode: str = "both"  # exponential | linear | both
    min_lr: float | None = None  # the exponential ramp's ends; None: [lr_find]'s
    max_lr: float | None = None
    steps: int | None = None  # bound every ramp to this many steps
    trial: str | None = None  # None: [lr_find].trial
    device: str = "auto"
    data: str | None = None
    out: Path = Path("results")  # the parent of a new run folder ...
    folder: Path | None = None  # ... or exactly this one (a suite part)


@dataclass(frozen=True)
class LrFindPlan:
    mode: str  # exponential | linear | both
    trial: TrialSpec
    exponential: lr_find.ExponentialSettings
    linear: lr_find.LinearSettings
    full_steps: dict[str, int]  # ramp -> its configured length, before a bound
    eval_images: int
    device: str
    pipeline: str
    settings: config_mod.DeviceSettings

    @property
    def ramps(self) -> list[str]:
        return list(lr_find.RAMPS) if self.mode == "both" else [self.mode]

    def steps(self, ramp: str) -> int:
        return self.exponential.steps if ramp == "exponential" else self.linear.steps

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "trial": self.trial.name, "batch_size": self.trial.batch_size,
                "weight_decay": self.trial.weight_decay, "augment": self.trial.augment,
                "label_smoothing": self.trial.label_smoothing, "bn_momentum": self.trial.bn_momentum,
                "train_images": self.trial.train_images, "eval_images": self.eval_images, "seed": SEED,
                "device": self.device, "pipeline": self.pipeline, "precision": self.settings.precision,
                "channels_last": self.settings.channels_last, "exponential": asdict(self.exponential),
                "linear": asdict(self.linear), "full_steps": self.full_steps}


# ---- settings ------------------------------------------------------------------------------------

def bounded(linear: lr_find.LinearSettings, steps: int) -> lr_find.LinearSettings:
    """The linear ramp over ``steps`` steps with as many evaluations as the full ramp has (the
    test reads its answer off the evaluations, so fewer steps must not mean fewer points)."""
    if steps >= linear.steps:
        return linear
    evals = max(1, linear.steps // linear.eval_every)
    return replace(linear, steps=steps, eval_every=max(1, steps // evals))


def _step_bound(req: RangeRequest, device: torch.device, s: config_mod.LrFindSettings) -> int | None:
    """--steps, else on a CPU [lr_find].cpu_steps (the full test is ~an hour there), else none."""
    if req.steps:
        return req.steps
    return s.cpu_steps if device.type == "cpu" else None


def plan_from(cfg: Config, req: RangeRequest, device: torch.device, pipeline: str,
              settings: config_mod.DeviceSettings) -> LrFindPlan:
    if req.mode == "linear" and (req.min_lr is not None or req.max_lr is not None):
        # The linear ramp starts at 0 by definition; its end is a config key.
        raise UsageError("--min-lr/--max-lr set the exponential ramp; with --mode linear set "
                         "[lr_find].linear_end_lr in the config instead")
    s = cfg.lr_find
    start = s.start_lr if req.min_lr is None else req.min_lr
    end = s.end_lr if req.max_lr is None else req.max_lr
    if start >= end:
        raise UsageError(f"exponential ramp: start LR {start:g} (--min-lr or lr_find.start_lr in {cfg.path}) "
                         f"must be below end LR {end:g} (--max-lr or lr_find.end_lr)")
    name = req.trial or s.trial
    if name not in cfg.trials:
        raise UsageError(f"--trial: {cfg.path} has no trial {name!r} (known: {', '.join(cfg.trials)})")
    bound = _step_bound(req, device, s)
    linear = lr_find.LinearSettings(end_lr=s.linear_end_lr, steps=s.linear_steps, eval_every=s.eval_every,
                                    smoothing=s.smoothing)
    return LrFindPlan(
        mode=req.mode, trial=cfg.trials[name],
        exponential=lr_find.ExponentialSettings(start_lr=start, end_lr=end, steps=min(s.steps, bound or s.steps),
                                                smoothing=s.smoothing, diverge_factor=s.diverge_factor),
        linear=bounded(linear, bound) if bound else linear,
        full_steps={"exponential": s.steps, "linear": s.linear_steps},
        eval_images=s.eval_images, device=str(device), pipeline=pipeline, settings=settings)


def _train_config(plan: LrFindPlan) -> TrainConfig:
    # compile off: a range test of ~100 steps would spend longer compiling than training, and
    # compilation does not change what the curve says.
    return build.train_config(plan.trial, plan.settings, max_steps=max(plan.exponential.steps, plan.linear.steps),
                              eval_every=plan.linear.eval_every, compile="off", warmup_steps=0)


def _pipeline(plan: LrFindPlan, data: Any, device: torch.device) -> Pipeline:
    spec = build.pipeline_spec(plan.trial, plan.settings, SEED, eval_images=plan.eval_images)
    try:
        return make_pipeline(plan.pipeline, data, spec, device)
    except ValueError as e:  # e.g. a batch larger than the training subset
        raise ConfigError(f"lr_find.trial {plan.trial.name!r}: {e}") from None


def _model_factory(plan: LrFindPlan, device: torch.device):  # -> Callable[[], nn.Module]
    return lambda: build.model(plan.trial, plan.settings, device)


# ---- the job -------------------------------------------------------------------------------------

def run_range_test(req: RangeRequest, console: Console) -> Outcome:
    """The range-test job: every ramp the request's mode names, into a new run folder."""
    cfg = config_mod.load(req.config)
    device = resolve_device(req.device)
    kind, notice = choose_pipeline(cfg.data.pipeline, f"{cfg.path}: data.pipeline", device)
    settings, line = build.device_settings(cfg, device)
    plan = plan_from(cfg, req, device, kind, settings)
    check_writable(req.folder.parent if req.folder else req.out)
    data = load_data(cfg, req.data)
    pipeline = _pipeline(plan, data, device)  # before the run folder: a bad pipeline writes nothing
    if notice:
        console.print(f"[yellow]{notice}[/yellow]")
    console.print(line)
    _announce_bound(plan, req, console)
    float32 = build.prepare(device, settings.precision)
    folder = RunFolder(new_folder(req.out, req.folder, device))
    console.print(f"run folder: {folder.path}")
    env = {"run_id": folder.run_id, "kind": "lr_find", "state": "running", "env": fingerprint(),
           "config": resolved_dict(cfg), "lr_find": plan.to_json(), "ramps": {}, "float32_precision": float32}
    folder.write_env(env)
    tests: list[lr_find.RangeTest] = []
    try:
        for ramp in plan.ramps:
            t0 = time.perf_counter()
            result = _run_ramp(ramp, plan, pipeline, device, console)
            env["ramps"][ramp] = _ramp_record(ramp, result, time.perf_counter() - t0, plan)
            if not isinstance(result, str):
                tests.append(result)
                write_rows(folder.path / "lr_find.csv", rows_of(tests), LrFindRow)
            folder.write_env(env)
    except KeyboardInterrupt:
        folder.set_state("interrupted")
        console.print(f"[yellow]interrupted: finished ramps are in {folder.path}[/yellow]")
        return Outcome(folder.path, EXIT_INTERRUPTED)
    failed = any("error" in r for r in env["ramps"].values())
    folder.set_state("failed" if failed else "complete")
    report_lr_find.render(folder.path, console)
    _full_estimate(env["ramps"], plan, console)
    return Outcome(folder.path, EXIT_FAILED if failed else EXIT_OK)


def _announce_bound(plan: LrFindPlan, req: RangeRequest, console: Console) -> None:
    cut = [r for r in plan.ramps if plan.steps(r) < plan.full_steps[r]]
    if cut:
        why = "--steps" if req.steps else "no GPU: [lr_find].cpu_steps"
        console.print(f"[yellow]{why}: " + ", ".join(f"{r} ramp {plan.steps(r)} of {plan.full_steps[r]} steps"
                                                     for r in cut) + "[/yellow]")


def _ramp_record(ramp: str, result: "lr_find.RangeTest | str", seconds: float, plan: LrFindPlan) -> dict[str, Any]:
    if isinstance(result, str):
        return {"error": result}
    return {"planned_steps": result.planned_steps, "steps_run": len(result.points),
            "stop_reason": result.stop_reason, "seconds": seconds, "full_steps": plan.full_steps[ramp]}


def _full_estimate(ramps: dict[str, dict[str, Any]], plan: LrFindPlan, console: Console) -> None:
    """How long the unbounded test would take here, from the rate the bounded one ran at (a linear
    ramp keeps its evaluation count when bounded, so its estimate includes them roughly)."""
    cut = {r: i for r, i in ramps.items() if "seconds" in i and i["planned_steps"] < i["full_steps"]}
    if not cut:
        return
    total = sum(i["seconds"] / max(1, i["steps_run"]) * i["full_steps"] for i in cut.values())
    ramps_text = ", ".join(f"{r} {i['full_steps']} steps" for r, i in cut.items())
    console.print(f"the full range test ({ramps_text}) would take about {total / 60:.0f} min on {plan.device} "
                  "at this run's rate")


def _run_ramp(ramp: str, plan: LrFindPlan, pipeline: Pipeline, device: torch.device,
              console: Console) -> lr_find.RangeTest | str:
    """One range test with a progress bar; an error inside it comes back as its one-line text."""
    steps = plan.steps(ramp)
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*cols, console=console, transient=False) as progress:
        task = progress.add_task(f"{ramp} ramp", total=steps)
        every, t0 = max(1, steps // 10), time.perf_counter()

        def on_step(n: int) -> None:
            progress.update(task, completed=n)
            if not console.is_terminal and (n % every == 0 or n == steps):  # logs: a line per 10%
                console.print(f"{ramp} ramp: step {n}/{steps}, {time.perf_counter() - t0:.0f} s")
        setup = lr_find.RangeSetup(_model_factory(plan, device), pipeline, _train_config(plan), device, seed=SEED,
                                   on_step=on_step)
        try:
            if ramp == "exponential":
                return lr_find.exponential_test(setup, plan.exponential)
            return lr_find.linear_test(setup, plan.linear)
        except Exception as e:  # OOM and the like: recorded, the other ramp still runs
            text = error_text(e)
            console.print(f"[red]{ramp} ramp failed: {text}[/red]")
            return text
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def rows_of(tests: list[lr_find.RangeTest]) -> list[LrFindRow]:
    return [LrFindRow(step=p.step, lr=p.lr, loss=p.loss, smoothed_loss=p.smoothed_loss, ramp=t.ramp,
                      test_loss=p.test_loss, test_acc=p.test_acc) for t in tests for p in t.points]


