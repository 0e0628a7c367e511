"""One timed training trial: warm up off the clock, reset, train to a step budget or a target.

Read top to bottom: ``train_trial`` builds the step, warms it up (compilation happens here),
restores the initial weights, then runs the timed loop. The training clock runs only while
training steps run; it stops, device-synchronized, at every evaluation point and restarts after.
Inside the timed loop nothing waits for the device except at evaluation points (marked).

A trial can be cut into pieces: at evaluation points, while the clock is paused, it hands its
state (``TrialState``) to ``on_checkpoint``; ``train_trial(resume=state)`` goes on from there with
the same data stream, and its clocks and curve continue the saved ones.
"""

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sc_fast import distributed
from sc_fast.optim import GraphSafeSGD
from sc_fast.pipeline import Pipeline
from sc_fast.schedules import Schedule
from sc_fast.timing import Stopwatch, synchronize

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# torch.compile's modes, plus "cuda-graph": the whole step (forward, backward, update) captured as
# one CUDA graph without torch.compile (see _graphed_step).
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "cuda-graph")


def input_dtype(precision: str) -> torch.dtype:
    """The dtype batches arrive in: the autocast dtype, fp32 when there is no autocast."""
    return PRECISIONS[precision] or torch.float32


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int
    eval_every: int  # steps between evaluations; the last step is always evaluated
    weight_decay: float = 5e-4
    nesterov: bool = False
    label_smoothing: float = 0.0
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 adds a grad scaler)
    compile: str = "off"  # one of COMPILE_MODES
    warmup_steps: int = 3  # off the clock; compiles the step, then state is reset
    target_acc: float | None = None
    stop_at_target: bool = False
    checkpoint_every: int = 1  # evaluations between on_checkpoint calls; 0 = never
    fine_eval_from: int = 0  # evaluate at this step and every fine_eval_every after it; 0 = never
    fine_eval_every: int = 25


def is_eval_step(step: int, cfg: TrainConfig) -> bool:
    """Whether step ``step`` (1-based, counted after it ran) ends with an evaluation: every
    ``eval_every`` steps; from ``fine_eval_from`` on, that step and every ``fine_eval_every`` after
    it instead; and the last step."""
    if step >= cfg.max_steps:
        return True
    if 0 < cfg.fine_eval_from <= step:
        return (step - cfg.fine_eval_from) % cfg.fine_eval_every == 0
    return step % cfg.eval_every == 0


@dataclass(frozen=True)
class EvalPoint:
    step: int
    epoch: float
    lr: float
    momentum: float
    train_loss: float  # mean over the steps since the previous evaluation
    test_loss: float
    test_acc: float
    train_time_s: float  # training clock at this point
    wall_time_s: float  # wall clock since the first timed step, evaluations included


@dataclass(frozen=True)
class TrialOutcome:
    status: str  # reached | not_reached | diverged
    steps_run: int
    train_time_s: float
    compile_time_s: float
    eval_time_s: float
    train_images: int
    best_test_acc: float
    final_test_acc: float
    curve: tuple[EvalPoint, ...]
    reached_at: EvalPoint | None  # the first evaluation at or above target


@dataclass(frozen=True)
class TrialState:
    """A trial at an evaluation point: everything it needs to go on from there.

    ``model``, ``optimizer`` and ``scaler`` are state dicts; handed to ``on_checkpoint`` they are
    the live tensors (BN running statistics and momentum buffers included): save or copy them
    before returning."""

    step: int
    train_time_s: float  # training clock so far
    wall_time_s: float  # wall clock of the last evaluation (the pieces' gaps left out)
    compile_time_s: float  # warm-up and compilation, summed over the pieces so far
    eval_time_s: float
    status: str  # not_reached | reached
    curve: tuple[EvalPoint, ...]
    reached_at: EvalPoint | None
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]  # the fp16 grad scaler's; empty without one


START = TrialState(step=0, train_time_s=0.0, wall_time_s=0.0, compile_time_s=0.0, eval_time_s=0.0,
                   status="not_reached", curve=(), reached_at=None, model={}, optimizer={}, scaler={})




Optimizer = torch.optim.SGD | GraphSafeSGD


def build_optimizer(model: nn.Module, schedule: Schedule, cfg: TrainConfig) -> Optimizer:
    if cfg.compile == "cuda-graph":  # LR and momentum must be device tensors a replay reads
        optimizer = GraphSafeSGD(model.parameters(), cfg.weight_decay, cfg.nesterov, next(model.parameters()).device)
        optimizer.set_hyperparams(schedule.lr(0), schedule.momentum(0))
        return optimizer
    # CUDA: the fused kernel updates every parameter in a few launches and takes the grad scaler's
    # scale and found_inf as device tensors, so fp16 steps never wait for the host (with foreach,
    # GradScaler.step reads found_inf with .item() every step). Elsewhere foreach: one launch per
    # op for the whole parameter list instead of one per tensor.
    fused = next(model.parameters()).is_cuda
    return torch.optim.SGD(model.parameters(), lr=schedule.lr(0), momentum=schedule.momentum(0),
                           weight_decay=cfg.weight_decay, nesterov=cfg.nesterov,
                           foreach=not fused, fused=fused or None)


def make_step(model: nn.Module, optimizer: Optimizer, cfg: TrainConfig,
              device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training step; returns the loss as a device tensor (no sync)."""
    if cfg.compile == "cuda-graph":
        return _graphed_step(model, optimizer, cfg, device)  # type: ignore[arg-type]
    dtype = PRECISIONS[cfg.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    mode = None if cfg.compile == "default" else cfg.compile
    forward = model if cfg.compile == "off" else torch.compile(model, mode=mode)

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(forward(x), y, label_smoothing=cfg.label_smoothing)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    # Evaluation reuses the compiled model; a data-parallel replica evaluates its own module, since
    # DDP's forward may broadcast buffers (a collective) and the ranks' shards differ in batches.
    step.forward = model.module if isinstance(model, DistributedDataParallel) else forward  # type: ignore[attr-defined]
    step.scaler = scaler  # type: ignore[attr-defined]  # checkpoints save and restore its scale
    return step


def _graphed_step(model: nn.Module, optimizer: GraphSafeSGD, cfg: TrainConfig,
                  device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Forward, backward and the SGD update captured as one CUDA graph at the first call (warm-up,
    off the clock) and replayed every step after: one graph launch instead of ~750 kernel launches,
    so the GPU no longer waits on Python. Batches are copied into the captured input tensors; LR
    and momentum are device tensors the host fills before each replay (GraphSafeSGD), so 1cycle
    stays exact with one capture. bf16 or fp32 only (no grad scaler: its skip-step is host logic).
    The capture recipe is PyTorch's "whole network capture": warm up on a side stream, then capture.
    """
    dtype = PRECISIONS[cfg.precision]
    static: dict[str, torch.Tensor] = {}
    graphs: list[torch.cuda.CUDAGraph] = []

    def body() -> torch.Tensor:
        optimizer.zero_grad()  # in place: the graph owns the grad tensors
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None,
                            cache_enabled=False):  # the autocast cache must not outlive a capture
            loss = F.cross_entropy(model(static["x"]), static["y"], label_smoothing=cfg.label_smoothing)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def capture(x: torch.Tensor, y: torch.Tensor) -> torch.cuda.CUDAGraph:
        static["x"], static["y"] = x.clone(), y.clone()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):  # lazy init, cuDNN autotuning and allocator growth happen before capture
                body()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static["loss"] = body()
        return graph

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not graphs:
            graphs.append(capture(x, y))
        static["x"].copy_(x)
        static["y"].copy_(y)
        graphs[0].replay()
        return static["loss"].clone()  # the next replay overwrites static["loss"]

    step.forward = model  # type: ignore[attr-defined]  # evaluation runs eagerly
    return step


def reset_optimizer(optimizer: Optimizer) -> None:
    """Momentum buffers back to their start (after warm-up)."""
    if isinstance(optimizer, GraphSafeSGD):
        optimizer.reset()  # in place: a captured graph keeps pointing at them
    else:
        optimizer.state.clear()


def set_hyperparams(optimizer: Optimizer, schedule: Schedule, step: int) -> None:
    if isinstance(optimizer, GraphSafeSGD):
        optimizer.set_hyperparams(schedule.lr(step), schedule.momentum(step))  # queued fills, no sync
        return
    # Python floats into the param groups: no device work, no sync.
    for group in optimizer.param_groups:
        group["lr"] = schedule.lr(step)
        group["momentum"] = schedule.momentum(step)


@torch.no_grad()
def evaluate(forward: Callable, model: nn.Module, pipeline: Pipeline, cfg: TrainConfig,
             device: torch.device) -> tuple[float, float]:
    """(test loss, test accuracy) over the pipeline's evaluation set."""
    model.eval()
    distributed.sync_buffers(model)  # data parallel: every shard is evaluated by rank 0's model
    dtype = PRECISIONS[cfg.precision]
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = torch.zeros((), device=device, dtype=torch.long)
    for x, y in pipeline.eval_batches():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = forward(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        n += len(y)
    model.train()
    distributed.sum_(loss_sum, correct, n)  # data parallel: each rank evaluated its shard
    # Sync point: one host read for the whole evaluation.
    loss, right, count = torch.stack([loss_sum.double(), correct.double(), n.double()]).tolist()
    return loss / count, right / count


def _warm_up(step_fn: Callable, model: nn.Module, pipeline: Pipeline, cfg: TrainConfig,
             device: torch.device) -> float:
    """Runs the step (and one evaluation) so compilation and autotuning happen off the clock."""
    t0 = time.perf_counter()
    batches = pipeline.train_batches(0)
    for _ in range(cfg.warmup_steps):
        x, y = next(batches)
        step_fn(x, y)
    if cfg.warmup_steps:
        evaluate(step_fn.forward, model, pipeline, cfg, device)
    synchronize(device)
    return time.perf_counter() - t0


def batch_stream(pipeline: Pipeline, max_steps: int | None = None,
                 start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches across epoch boundaries: ``max_steps`` of them, or endless. From
    ``start_step`` on: the tail of the same stream, the batches before it never computed."""
    first, skip = divmod(start_step, pipeline.steps_per_epoch)
    # ``start`` passed only where it is needed: a pipeline without it still streams from step 0
    stream = itertools.chain.from_iterable(pipeline.train_batches(epoch, skip) if epoch == first and skip
                                           else pipeline.train_batches(epoch) for epoch in itertools.count(first))
    return itertools.islice(stream, None if max_steps is None else max(max_steps - start_step, 0))


def _restore(model: nn.Module, optimizer: Optimizer, step_fn: Callable,
             initial: dict[str, torch.Tensor] | None, resume: TrialState | None) -> None:
    """After warm-up: the initial weights and no optimizer state, or the checkpoint's. Warm-up must
    never train the measured model. load_state_dict copies in place, so the compiled graph stays
    valid."""
    if resume is None:
        model.load_state_dict(initial)
        reset_optimizer(optimizer)  # in place where a captured graph points at the buffers
        return
    model.load_state_dict(resume.model)
    optimizer.load_state_dict(resume.optimizer)
    if resume.scaler:
        step_fn.scaler.load_state_dict(resume.scaler)


def _scaler_state(step_fn: Callable) -> dict[str, Any]:
    scaler = getattr(step_fn, "scaler", None)
    return scaler.state_dict() if scaler is not None else {}


def train_trial(model: nn.Module, pipeline: Pipeline, schedule: Schedule, cfg: TrainConfig,
                device: torch.device, on_eval: Callable[[EvalPoint], None] | None = None,
                on_step: Callable[[int], None] | None = None, resume: TrialState | None = None,
                on_checkpoint: Callable[[TrialState], None] | None = None) -> TrialOutcome:
    """``on_step(step)`` runs on the host after each step is queued (no sync): progress display.
    ``on_checkpoint(state)`` runs at every ``cfg.checkpoint_every``-th evaluation the trial goes on
    from, while the training clock is paused. ``resume``: go on from such a state; warm-up and
    compilation run again (off the clock), then the state's weights replace the initial ones."""
    model.train()
    initial = copy.deepcopy(model.state_dict()) if resume is None else None
    optimizer = build_optimizer(model, schedule, cfg)
    step_fn = make_step(model, optimizer, cfg, device)
    compile_time_s = _warm_up(step_fn, model, pipeline, cfg, device)
    _restore(model, optimizer, step_fn, initial, resume)

    prior = resume or START
    clock, curve = Stopwatch(device), list(prior.curve)
    compile_time_s += prior.compile_time_s
    eval_time_s, loss_sum, since_eval = prior.eval_time_s, torch.zeros((), device=device), 0
    status, reached_at, step = prior.status, prior.reached_at, prior.step
    wall0 = time.perf_counter() - prior.wall_time_s
    clock.start()  # ---- the training clock starts here ----
    for step, (x, y) in enumerate(batch_stream(pipeline, cfg.max_steps, prior.step), start=prior.step + 1):
        set_hyperparams(optimizer, schedule, step - 1)
        loss_sum += step_fn(x, y)
        since_eval += 1
        if on_step:
            on_step(step)
        if not is_eval_step(step, cfg):
            continue
        train_time_s = prior.train_time_s + clock.stop()  # ---- clock paused (sync point) ----
        t_eval = time.perf_counter()
        distributed.sum_(loss_sum)  # data parallel: the mean over ranks of equal local batches
        train_loss = loss_sum.item() / since_eval / distributed.size()  # sync point (already synced by stop())
        test_loss, test_acc = evaluate(step_fn.forward, model, pipeline, cfg, device)
        eval_time_s += time.perf_counter() - t_eval
        point = EvalPoint(step, step / pipeline.steps_per_epoch, schedule.lr(step - 1),
                          schedule.momentum(step - 1), train_loss, test_loss, test_acc,
                          train_time_s, time.perf_counter() - wall0)
        curve.append(point)
        if on_eval:
            on_eval(point)
        loss_sum.zero_()
        since_eval = 0
        if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
            status = status if reached_at else "diverged"
            break
        if reached_at is None and cfg.target_acc is not None and test_acc >= cfg.target_acc:
            status, reached_at = "reached", point
            if cfg.stop_at_target:
                break
        if step < cfg.max_steps:
            if on_checkpoint and cfg.checkpoint_every and len(curve) % cfg.checkpoint_every == 0:
                on_checkpoint(TrialState(step, train_time_s, point.wall_time_s, compile_time_s, eval_time_s,
                                         status, tuple(curve), reached_at, model.state_dict(),
                                         optimizer.state_dict(), _scaler_state(step_fn)))
            clock.start()  # ---- clock resumes ----

    accs = [p.test_acc for p in curve if math.isfinite(p.test_acc)]
    return TrialOutcome(status=status, steps_run=step, train_time_s=prior.train_time_s + clock.total_s,
                        compile_time_s=compile_time_s, eval_time_s=eval_time_s,
                        train_images=step * pipeline.batch_size,
                        best_test_acc=max(accs, default=float("nan")),
                        final_test_acc=curve[-1].test_acc if curve else float("nan"),
                        curve=tuple(curve), reached_at=reached_at)
