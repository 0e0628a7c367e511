"""One timed training trial: warm up off the clock, reset, train to a step budget or a target.

Read top to bottom: ``train_trial`` builds the step, warms it up (compilation happens here),
restores the initial weights, then runs the timed loop. The training clock runs only while
training steps run; it stops, device-synchronized, at every evaluation point and restarts after.
Inside the timed loop nothing waits for the device except at evaluation points (marked).

Evaluation is coarse (every ``eval_every`` steps) but steps-to-target is exact to
``fine_eval_every`` steps: while the target is not reached, the loop keeps a copy of the weights
every ``fine_eval_every`` steps since the last evaluation (device-to-device copies, no sync) and a
clock mark. When an evaluation first reaches the target, those copies are evaluated in order and
the first one at or above it is the crossing (its training clock read from its mark). So the
decision is made at the resolution of dense evaluation while only the window that decides it is
evaluated densely. (A crossing that falls back below the target before the next evaluation is not
seen, as with any evaluation schedule sparser than every step.)

A trial can be cut into pieces: at evaluation points, while the clock is paused, it hands its
state (``TrialState``) to ``on_checkpoint``, at most once every ``checkpoint_interval_s`` seconds
of wall clock; ``train_trial(resume=state)`` goes on from there with the same data stream, and its
clocks and curve continue the saved ones.
"""

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sc_fast import distributed
from sc_fast.optim import GraphSafeSGD
from sc_fast.pipeline import Pipeline
from sc_fast.schedules import Schedule
from sc_fast.timing import Mark, Stopwatch, synchronize

# The autocast dtype of each precision; None: no autocast. "fp32" is IEEE float32 throughout (no
# TF32 in cuDNN convolutions or cuBLAS matmuls, which torch allows for convolutions by default);
# "tf32" is float32 tensors with TF32 tensor-core math (set_float32_math).
PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# torch.compile's modes, plus "cuda-graph": the whole step (forward, backward, update) captured as
# one CUDA graph without torch.compile (see _graphed_step).
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "cuda-graph")


def input_dtype(precision: str) -> torch.dtype:
    """The dtype batches arrive in: the autocast dtype, fp32 when there is no autocast."""
    return PRECISIONS[precision] or torch.float32


def float32_math(precision: str) -> str:
    """The math float32 convolutions and matmuls use under ``precision``, as rows record it: "tf32"
    for precision tf32, else "ieee" (bf16/fp16 autocast leaves float32 only to small ops)."""
    return "tf32" if precision == "tf32" else "ieee"


def set_float32_math(precision: str) -> str:
    """Process-wide, on CUDA: float32 convolutions and matmuls as ``float32_math(precision)`` says
    (torch's own default allows TF32 in cuDNN convolutions). Set before a case or trial builds its
    step; returns the mode."""
    mode = float32_math(precision)
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9; mixing it with allow_tf32 is an error there
        matmul.fp32_precision = mode
        conv.fp32_precision = mode
    else:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
    return mode


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int
    eval_every: int  # steps between evaluations; the last step is always evaluated
    weight_decay: float = 1e-4  # the paper's; 5e-4 underfit the CPU reference (results/README.md)
    nesterov: bool = False
    label_smoothing: float = 0.0
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 adds a grad scaler)
    compile: str = "off"  # one of COMPILE_MODES
    warmup_steps: int = 3  # off the clock; compiles the step, then state is reset
    target_acc: float | None = None
    stop_at_target: bool = False
    checkpoint_every: int = 1  # evaluations between on_checkpoint calls; 0 = never
    checkpoint_interval_s: float = 60.0  # ... and at most one per this many seconds of wall clock
    fine_eval_from: int = 0  # evaluate at this step and every fine_eval_every after it; 0 = never
    fine_eval_every: int = 25  # also the resolution of steps-to-target between coarse evaluations


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
    checkpoint_time_s: float  # wall seconds spent writing checkpoints (off the training clock)
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
    checkpoint_time_s: float = 0.0  # newer than the first checkpoints: older files lack it


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


def _autocast(device: torch.device, dtype: torch.dtype | None, **kw: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None, **kw)


class TrainStep:
    """One training step, eager or torch.compile'd: forward under autocast, loss, backward, update.
    Calling it returns the loss as a device tensor (no sync).

    ``forward`` is what evaluation runs: the compiled model, or a data-parallel replica's own
    module (DDP's forward may broadcast buffers, a collective, and the ranks' shards differ in
    batches). ``scaler`` is the fp16 grad scaler (disabled otherwise), whose scale checkpoints keep."""

    def __init__(self, model: nn.Module, optimizer: Optimizer, cfg: TrainConfig, device: torch.device) -> None:
        self.optimizer, self.cfg, self.device = optimizer, cfg, device
        self.dtype = PRECISIONS[cfg.precision]
        self.scaler: torch.amp.GradScaler | None = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
        mode = None if cfg.compile == "default" else cfg.compile
        self.model = model if cfg.compile == "off" else torch.compile(model, mode=mode)
        self.forward = model.module if isinstance(model, DistributedDataParallel) else self.model

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with _autocast(self.device, self.dtype):
            loss = F.cross_entropy(self.model(x), y, label_smoothing=self.cfg.label_smoothing)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


class GraphedStep:
    """Forward, backward and the SGD update captured as one CUDA graph at the first call (warm-up,
    off the clock) and replayed every step after: one graph launch instead of ~750 kernel launches,
    so the GPU no longer waits on Python. Batches are copied into the captured input tensors; LR
    and momentum are device tensors the host fills before each replay (GraphSafeSGD), so 1cycle
    stays exact with one capture. bf16 or fp32 only (no grad scaler: its skip-step is host logic).
    The capture recipe is PyTorch's "whole network capture": warm up on a side stream, then capture.
    Evaluation runs the model eagerly."""

    scaler = None

    def __init__(self, model: nn.Module, optimizer: GraphSafeSGD, cfg: TrainConfig, device: torch.device) -> None:
        self.model = self.forward = model
        self.optimizer, self.cfg, self.device = optimizer, cfg, device
        self.dtype = PRECISIONS[cfg.precision]
        self.static: dict[str, torch.Tensor] = {}
        self.graph: torch.cuda.CUDAGraph | None = None

    def _body(self) -> torch.Tensor:
        self.optimizer.zero_grad()  # in place: the graph owns the grad tensors
        with _autocast(self.device, self.dtype, cache_enabled=False):  # the cache must not outlive a capture
            loss = F.cross_entropy(self.model(self.static["x"]), self.static["y"],
                                   label_smoothing=self.cfg.label_smoothing)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> torch.cuda.CUDAGraph:
        self.static["x"], self.static["y"] = x.clone(), y.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):  # lazy init, cuDNN autotuning and allocator growth happen before capture
                self._body()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static["loss"] = self._body()
        return graph

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.graph is None:
            self.graph = self._capture(x, y)
        self.static["x"].copy_(x)
        self.static["y"].copy_(y)
        self.graph.replay()
        return self.static["loss"].clone()  # the next replay overwrites static["loss"]


Step = TrainStep | GraphedStep


def make_step(model: nn.Module, optimizer: Optimizer, cfg: TrainConfig, device: torch.device) -> Step:
    """The training step for ``cfg.compile``: one captured CUDA graph, or eager/torch.compile."""
    if cfg.compile == "cuda-graph":
        assert isinstance(optimizer, GraphSafeSGD), "a captured step needs GraphSafeSGD (build_optimizer)"
        return GraphedStep(model, optimizer, cfg, device)
    return TrainStep(model, optimizer, cfg, device)


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


def _warm_up(step_fn: Step, model: nn.Module, pipeline: Pipeline, cfg: TrainConfig, device: torch.device) -> float:
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


def _restore(model: nn.Module, optimizer: Optimizer, step_fn: Step,
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
    if resume.scaler and step_fn.scaler is not None:
        step_fn.scaler.load_state_dict(resume.scaler)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state (BN statistics included), made on the device: queued, no sync."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class _Snapshot:
    """The model after ``step``, between two evaluations: evaluated only if the next evaluation is
    the first to reach the target (then the crossing lies in between)."""

    step: int
    weights: dict[str, torch.Tensor]
    loss_sum: torch.Tensor  # the training losses summed since the last evaluation (a device copy)
    mark: Mark  # the training clock at the end of the step (read after the clock stops)


@dataclass(frozen=True)
class Hooks:
    """``on_step(step)`` runs on the host after each step is queued (no sync): progress display.
    ``on_eval(point)`` after each evaluation. ``on_checkpoint(state)`` at evaluation points the
    trial goes on from, every ``checkpoint_every``-th one and at most once per
    ``checkpoint_interval_s``, while the training clock is paused."""

    on_eval: Callable[[EvalPoint], None] | None = None
    on_step: Callable[[int], None] | None = None
    on_checkpoint: Callable[[TrialState], None] | None = None


@dataclass
class _Window:
    """What happened since the last evaluation (the mutable part of a running trial)."""

    start: int  # the step of the last evaluation (or where the piece began)
    train_s: float  # training clock when this segment of it started
    wall_s: float  # wall clock then
    snapshots: list[_Snapshot] = field(default_factory=list)


class _Trial:
    """The timed loop of one trial piece; state lives here, read top to bottom in ``run``."""

    def __init__(self, model: nn.Module, pipeline: Pipeline, schedule: Schedule, cfg: TrainConfig,
                 device: torch.device, hooks: Hooks, prior: TrialState) -> None:
        self.model, self.pipeline, self.schedule, self.cfg, self.device = model, pipeline, schedule, cfg, device
        self.hooks, self.prior = hooks, prior
        self.optimizer = build_optimizer(model, schedule, cfg)
        self.step_fn = make_step(model, self.optimizer, cfg, device)
        self.clock = Stopwatch(device)
        self.curve, self.status, self.reached_at = list(prior.curve), prior.status, prior.reached_at
        self.compile_s, self.eval_s = prior.compile_time_s, prior.eval_time_s
        self.checkpoint_s = prior.checkpoint_time_s
        self.loss_sum = torch.zeros((), device=device)
        self.evaluations = 0
        self.wall0 = self.last_checkpoint = 0.0
        self.window = _Window(prior.step, prior.train_time_s, prior.wall_time_s)

    def run(self) -> TrialOutcome:
        initial = copy.deepcopy(self.model.state_dict()) if self.prior is START else None
        self.compile_s += _warm_up(self.step_fn, self.model, self.pipeline, self.cfg, self.device)
        _restore(self.model, self.optimizer, self.step_fn, initial, None if self.prior is START else self.prior)
        self.last_checkpoint = time.perf_counter()
        self.wall0 = self.last_checkpoint - self.prior.wall_time_s  # a resumed wall clock leaves the gap out
        step = self.prior.step
        self._start_clock()  # ---- the training clock starts here ----
        for step, (x, y) in enumerate(batch_stream(self.pipeline, self.cfg.max_steps, step), start=step + 1):
            set_hyperparams(self.optimizer, self.schedule, step - 1)
            self.loss_sum += self.step_fn(x, y)
            if self.hooks.on_step:
                self.hooks.on_step(step)
            if not is_eval_step(step, self.cfg):
                self._maybe_snapshot(step)
                continue
            self.clock.stop()  # ---- clock paused (sync point) ----
            if not self._at_evaluation(step):
                break
            self._start_clock()  # ---- clock resumes ----
        return self._outcome(step)

    def _start_clock(self) -> None:
        self.clock.start()
        self.window.train_s = self.prior.train_time_s + self.clock.total_s
        self.window.wall_s = time.perf_counter() - self.wall0

    def _maybe_snapshot(self, step: int) -> None:
        """Keeps the model every fine_eval_every steps since the last evaluation while the target is
        unreached: queued device copies, no sync (a few MB a copy for ResNet-56)."""
        if self.cfg.target_acc is None or self.reached_at is not None:
            return
        if (step - self.window.start) % self.cfg.fine_eval_every == 0:
            mark = self.clock.mark()  # the step's end, before the copies (which are on the clock, but tiny)
            self.window.snapshots.append(_Snapshot(step, _weights(self.model), self.loss_sum.clone(), mark))

    def _measure(self, step: int, loss_since: float, steps_since: int, train_s: float, wall_s: float) -> EvalPoint:
        """Evaluates the model as it is now; ``loss_since``: the summed training loss of the
        ``steps_since`` steps since the previous evaluation point."""
        t0 = time.perf_counter()
        test_loss, test_acc = evaluate(self.step_fn.forward, self.model, self.pipeline, self.cfg, self.device)
        self.eval_s += time.perf_counter() - t0
        train_loss = loss_since / steps_since / distributed.size()  # data parallel: mean over equal local batches
        return EvalPoint(step, step / self.pipeline.steps_per_epoch, self.schedule.lr(step - 1),
                         self.schedule.momentum(step - 1), train_loss, test_loss, test_acc, train_s, wall_s)

    def _at_evaluation(self, step: int) -> bool:
        """The evaluation after ``step`` (clock stopped): the point, any crossing inside the window
        before it, the checkpoint. False when the trial ends here."""
        distributed.sum_(self.loss_sum)  # data parallel: summed over ranks
        total = self.loss_sum.item()  # sync point (already synced by the clock's stop)
        train_s = self.prior.train_time_s + self.clock.total_s
        point = self._measure(step, total, step - self.window.start, train_s, time.perf_counter() - self.wall0)
        target, snaps = self.cfg.target_acc, self.window.snapshots
        first_hit = self.reached_at is None and target is not None and point.test_acc >= target
        points: list[EvalPoint] = []
        if first_hit and snaps:
            losses = torch.stack([s.loss_sum for s in snaps])
            distributed.sum_(losses)  # data parallel: summed over ranks, as the coarse point's
            sums = losses.tolist()  # sync point (at an evaluation)
            points = self._backfill(target, sums)
            last = len(points) - 1  # the coarse point's loss covers only the steps after the last back-filled one
            point = replace(point, train_loss=(total - sums[last]) / (step - snaps[last].step) / distributed.size())
        for p in (*points, point):
            self._record(p)
        self.loss_sum.zero_()
        self.window = _Window(step, train_s, point.wall_time_s)
        if not (math.isfinite(point.train_loss) and math.isfinite(point.test_loss)):
            self.status = self.status if self.reached_at else "diverged"
            return False
        if self.reached_at is not None and self.cfg.stop_at_target:
            return False
        if step < self.cfg.max_steps:
            self._maybe_checkpoint(step, point)
        return True

    def _record(self, p: EvalPoint) -> None:
        self.curve.append(p)
        if self.hooks.on_eval:
            self.hooks.on_eval(p)
        finite = math.isfinite(p.train_loss) and math.isfinite(p.test_loss)  # else the trial diverged here
        if self.reached_at is None and self.cfg.target_acc is not None and finite and p.test_acc >= self.cfg.target_acc:
            self.status, self.reached_at = "reached", p

    def _backfill(self, target: float, loss_sums: list[float]) -> list[EvalPoint]:
        """The window's snapshots, evaluated in order up to the first at or above ``target``
        (``loss_sums``: their summed training losses); the model is put back as it was after."""
        live, points, prev = _weights(self.model), [], (self.window.start, 0.0)
        for snap, loss in zip(self.window.snapshots, loss_sums):
            self.model.load_state_dict(snap.weights)  # in place: a compiled or captured step stays valid
            since = self.clock.since_start(snap.mark)
            points.append(self._measure(snap.step, loss - prev[1], snap.step - prev[0], self.window.train_s + since,
                                        self.window.wall_s + since))
            prev = (snap.step, loss)
            if points[-1].test_acc >= target:
                break
        self.model.load_state_dict(live)
        return points

    def _maybe_checkpoint(self, step: int, point: EvalPoint) -> None:
        self.evaluations += 1
        due = self.cfg.checkpoint_every and self.evaluations % self.cfg.checkpoint_every == 0
        if not (self.hooks.on_checkpoint and due):
            return
        t0 = time.perf_counter()
        if t0 - self.last_checkpoint < self.cfg.checkpoint_interval_s:
            return
        scaler = self.step_fn.scaler.state_dict() if self.step_fn.scaler is not None else {}
        self.hooks.on_checkpoint(TrialState(
            step, point.train_time_s, point.wall_time_s, self.compile_s, self.eval_s, self.status, tuple(self.curve),
            self.reached_at, self.model.state_dict(), self.optimizer.state_dict(), scaler, self.checkpoint_s))
        self.last_checkpoint = time.perf_counter()
        self.checkpoint_s += self.last_checkpoint - t0

    def _outcome(self, step: int) -> TrialOutcome:
        accs = [p.test_acc for p in self.curve if math.isfinite(p.test_acc)]
        return TrialOutcome(
            status=self.status, steps_run=step, train_time_s=self.prior.train_time_s + self.clock.total_s,
            compile_time_s=self.compile_s, eval_time_s=self.eval_s, checkpoint_time_s=self.checkpoint_s,
            train_images=step * self.pipeline.batch_size, best_test_acc=max(accs, default=float("nan")),
            final_test_acc=self.curve[-1].test_acc if self.curve else float("nan"), curve=tuple(self.curve),
            reached_at=self.reached_at)


def train_trial(model: nn.Module, pipeline: Pipeline, schedule: Schedule, cfg: TrainConfig, device: torch.device,
                hooks: Hooks = Hooks(), resume: TrialState | None = None) -> TrialOutcome:
    """Warm-up and compilation off the clock, the initial weights restored (or ``resume``'s state:
    go on from a checkpoint), then the timed loop to ``cfg.max_steps`` or the target (``hooks``
    says when its callbacks run)."""
    model.train()
    return _Trial(model, pipeline, schedule, cfg, device, hooks, resume or START).run()
