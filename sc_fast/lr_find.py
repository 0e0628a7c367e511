"""The LR range test, two ways, and the learning rates it suggests.

- fastai's (``exponential_test``): the LR grows exponentially from ``start_lr`` to ``end_lr``;
  the training loss of every step is recorded with a debiased EMA of it, and the test stops once
  the smoothed loss exceeds ``diverge_factor`` x its minimum or the loss is not finite. The
  suggestions (``valley``, ``steep``, ``minimum``) read the smoothed loss against the LR.
- the paper's (``linear_test``, Smith & Topin section 3): the LR rises linearly from 0 to
  ``end_lr`` while test loss and accuracy are measured every ``eval_every`` steps. For ResNet-56
  accuracy climbs, plateaus and only falls at very large LRs; the largest usable LR is where it
  stops rising (``accuracy_plateau_end``).

Each test trains its own freshly built, seeded model with sc_fast.train's step and optimizer and
throws it away: nothing it trains reaches a later trial, and the global RNG is left as it was.
The suggestion functions are pure: lists of numbers in, an index and an LR out.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from sc_fast.pipeline import Pipeline
from sc_fast.schedules import ExponentialRamp, LinearRamp, Schedule
from sc_fast.train import TrainConfig, batch_stream, build_optimizer, evaluate, make_step, set_hyperparams

RAMPS = ("exponential", "linear")


# ---- the tests ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExponentialSettings:
    """fastai's ramp (the harness reads its values from bench.toml's [lr_find], where their defaults are)."""

    start_lr: float
    end_lr: float
    steps: int
    smoothing: float  # EMA beta (fastai's AvgSmoothLoss)
    diverge_factor: float  # stop once smoothed loss > this x its minimum
    momentum: float = 0.9


@dataclass(frozen=True)
class LinearSettings:
    end_lr: float
    steps: int
    eval_every: int
    smoothing: float  # only for the recorded smoothed loss: the linear test never stops early
    momentum: float = 0.9


@dataclass(frozen=True)
class RangeSetup:
    """What a range test trains: a fresh model from ``make_model()`` (on ``device``), on
    ``pipeline``'s batches, with sc_fast.train's step and optimizer under ``cfg``."""

    make_model: Callable[[], nn.Module]
    pipeline: Pipeline
    cfg: TrainConfig
    device: torch.device
    seed: int = 0
    read_every: int = 8  # losses are read this many steps at a time: one host sync per chunk
    on_step: Callable[[int], None] | None = None  # after each step is queued (no sync): progress


@dataclass(frozen=True)
class RangePoint:
    """One training step. ``lr`` is the rate used for the step and ``loss`` that step's batch loss
    (computed before the update, as fastai records it). Test metrics are measured after the
    update, on evaluation steps of the linear test only."""

    step: int  # from 0
    lr: float
    loss: float
    smoothed_loss: float
    test_loss: float | None = None
    test_acc: float | None = None


@dataclass(frozen=True)
class RangeTest:
    ramp: str  # exponential | linear
    planned_steps: int
    stop_reason: str  # completed | diverged | non-finite loss
    points: tuple[RangePoint, ...]

    @property
    def lrs(self) -> list[float]:
        return [p.lr for p in self.points]

    @property
    def smoothed(self) -> list[float]:
        return [p.smoothed_loss for p in self.points]

    def evals(self) -> list[RangePoint]:
        return [p for p in self.points if p.test_acc is not None]


class _Smoother:
    """Debiased EMA: the bias correction makes early values the running mean, not ~0."""

    def __init__(self, beta: float) -> None:
        self.beta, self.avg, self.n = beta, 0.0, 0

    def __call__(self, loss: float) -> float:
        self.n += 1
        self.avg = self.beta * self.avg + (1 - self.beta) * loss
        return self.avg / (1 - self.beta ** self.n)


class _StopRule:
    """fastai's: stop at a non-finite loss, or once smoothed loss > factor x best so far."""

    def __init__(self, factor: float | None) -> None:
        self.factor, self.best = factor, math.inf

    def __call__(self, loss: float, smoothed: float) -> str | None:
        if not (math.isfinite(loss) and math.isfinite(smoothed)):
            return "non-finite loss"
        self.best = min(self.best, smoothed)
        if self.factor is not None and smoothed > self.factor * self.best:
            return "diverged"
        return None


@dataclass(frozen=True)
class _Ramp:
    name: str  # exponential | linear
    schedule: Schedule
    steps: int
    smoothing: float
    stop: "_StopRule"
    eval_every: int | None  # test evaluations (the linear test); None: none


def exponential_test(setup: RangeSetup, settings: ExponentialSettings) -> RangeTest:
    """fastai's range test."""
    schedule = ExponentialRamp(settings.start_lr, settings.end_lr, settings.steps, settings.momentum)
    return _range_test(setup, _Ramp("exponential", schedule, settings.steps, settings.smoothing,
                                     _StopRule(settings.diverge_factor), None))


def linear_test(setup: RangeSetup, settings: LinearSettings) -> RangeTest:
    """The paper's range test: LR 0 -> ``end_lr`` linearly, test metrics every ``eval_every`` steps
    and at the last step. It runs to the end (the fall of accuracy is the point) unless the loss
    stops being finite, after which nothing more can be learned."""
    schedule = LinearRamp(0.0, settings.end_lr, settings.steps, settings.momentum)
    return _range_test(setup, _Ramp("linear", schedule, settings.steps, settings.smoothing, _StopRule(None),
                                    settings.eval_every))


def _range_test(setup: RangeSetup, ramp: _Ramp) -> RangeTest:
    # fork_rng: seeding for the throwaway model must not change what later trials draw.
    with torch.random.fork_rng(devices=[setup.device] if setup.device.type == "cuda" else []):
        torch.manual_seed(setup.seed)
        points, reason = _Drive(setup, ramp).run()  # the weights never leave it
    return RangeTest(ramp=ramp.name, planned_steps=ramp.steps, stop_reason=reason, points=tuple(points))


class _Drive:
    """The training loop of both tests, on a model built here and thrown away after. Losses stay on the
    device and are read ``read_every`` steps at a time (one host sync per chunk). The stop rule is
    then applied step by step, so the curve and the stop point are exactly those of a per-step check;
    the up to ``read_every - 1`` steps queued past a stop only ever touched the throwaway model."""

    def __init__(self, setup: RangeSetup, ramp: _Ramp) -> None:
        self.setup, self.ramp = setup, ramp
        self.model = setup.make_model()
        self.model.train()
        self.optimizer = build_optimizer(self.model, ramp.schedule, setup.cfg)
        self.step_fn = make_step(self.model, self.optimizer, setup.cfg, setup.device)
        self.smooth = _Smoother(ramp.smoothing)
        self.points: list[RangePoint] = []

    def run(self) -> tuple[list[RangePoint], str]:
        pending: list[torch.Tensor] = []
        steps, every, read_every = self.ramp.steps, self.ramp.eval_every, max(1, self.setup.read_every)
        for i, (x, y) in enumerate(batch_stream(self.setup.pipeline, steps)):
            set_hyperparams(self.optimizer, self.ramp.schedule, i)
            pending.append(self.step_fn(x, y))
            if self.setup.on_step:
                self.setup.on_step(i + 1)
            at_eval = every is not None and ((i + 1) % every == 0 or i == steps - 1)
            if len(pending) < read_every and not at_eval and i < steps - 1:
                continue
            reason = self._read(pending, first=i + 1 - len(pending))
            pending.clear()
            if reason:
                return self.points, reason
            if at_eval:
                test_loss, test_acc = evaluate(self.step_fn.forward, self.model, self.setup.pipeline, self.setup.cfg,
                                               self.setup.device)
                self.points[-1] = replace(self.points[-1], test_loss=test_loss, test_acc=test_acc)
        return self.points, "completed"

    def _read(self, pending: list[torch.Tensor], first: int) -> str | None:
        """The chunk's losses as points, the stop rule applied to each; the reason it stopped, if it did."""
        losses = torch.stack(pending).float().tolist()  # sync point: one host read per chunk
        for j, loss in enumerate(losses, start=first):
            smoothed = self.smooth(loss)
            self.points.append(RangePoint(j, self.ramp.schedule.lr(j), loss, smoothed))
            reason = self.ramp.stop(loss, smoothed)
            if reason:
                return reason
        return None


# ---- suggestions: pure functions of the curve -------------------------------------------------------

@dataclass(frozen=True)
class Suggestion:
    method: str
    lr: float  # the suggested learning rate
    index: int  # the curve point it was read from (to mark on a plot); lr may differ (minimum: /10)


def finite_prefix(*series: Sequence[float]) -> int:
    """Length of the leading run where every series is finite: a curve ends at its first NaN/inf."""
    n = min(len(s) for s in series)
    for i in range(n):
        if not all(math.isfinite(s[i]) for s in series):
            return i
    return n


def valley(lrs: Sequence[float], losses: Sequence[float]) -> Suggestion | None:
    """fastai's default: a point in the longest valley of the loss curve.

    The valley ends at the point with the longest strictly decreasing subsequence ending there
    (the first such point on ties) and is taken to span that many points back. The pick is a
    third plus a sixth of the way down it (fastai's arithmetic: about halfway; fastai's docs say
    "roughly 2/3"), where the loss is still falling fast but well before the minimum. Unlike
    fastai, a valley that starts at the first point is clamped there instead of indexing -1.
    """
    n = finite_prefix(lrs, losses)
    if n == 0:
        return None
    y = np.asarray(losses[:n], dtype=float)
    lds = np.ones(n, dtype=int)  # longest decreasing subsequence ending at i
    for i in range(1, n):
        higher = y[:i] > y[i]
        if higher.any():
            lds[i] = lds[:i][higher].max() + 1
    end = int(np.argmax(lds))
    start = max(0, end - int(lds[end]))
    third = (end - start) / 3
    idx = min(end, start + int(third) + int(third / 2))
    return Suggestion("valley", float(lrs[idx]), idx)


def steep(lrs: Sequence[float], losses: Sequence[float]) -> Suggestion | None:
    """fastai's ``steep``: the LR where the loss falls fastest against log LR."""
    n = finite_prefix(lrs, losses)
    if n < 2:
        return None
    x, y = np.log(np.asarray(lrs[:n], dtype=float)), np.asarray(losses[:n], dtype=float)
    dx = np.diff(x)
    grads = np.where(dx > 0, np.diff(y) / np.where(dx > 0, dx, 1), np.inf)
    idx = int(np.argmin(grads))
    return Suggestion("steep", float(lrs[idx]), idx)


def minimum(lrs: Sequence[float], losses: Sequence[float]) -> Suggestion | None:
    """fastai's ``minimum``: a tenth of the LR at the lowest loss (the minimum is already too high)."""
    n = finite_prefix(lrs, losses)
    if n == 0:
        return None
    idx = int(np.argmin(np.asarray(losses[:n], dtype=float)))
    return Suggestion("minimum/10", float(lrs[idx]) / 10, idx)


def suggestion_window(n: int, planned_steps: int, skip_end: int = 5) -> tuple[int, int]:
    """fastai reads suggestions from ``[planned_steps // 10 : -skip_end]``: the first tenth is
    still dominated by the initial loss and the last points are the explosion. Falls back to the
    whole curve when that leaves fewer than 2 points (very short tests)."""
    lo, hi = planned_steps // 10, n - skip_end
    return (lo, hi) if hi - lo >= 2 else (0, n)


def fastai_suggestions(lrs: Sequence[float], smoothed: Sequence[float], planned_steps: int,
                       methods: tuple[Callable[..., Suggestion | None], ...] = (valley, steep, minimum),
                       ) -> list[Suggestion]:
    """The suggestions of ``methods`` on the smoothed loss of an exponential test, as fastai's
    ``lr_find`` computes them (window above, curve cut at its first non-finite value); indices
    refer to the full curve."""
    n = finite_prefix(lrs, smoothed)
    lo, hi = suggestion_window(n, planned_steps)
    out = []
    for method in methods:
        s = method(lrs[lo:hi], smoothed[lo:hi])
        if s is not None:
            out.append(replace(s, index=s.index + lo))
    return out


def _moving_average(y: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average; the window shrinks at the ends instead of padding."""
    half = window // 2
    return np.array([y[max(0, i - half):i + half + 1].mean() for i in range(len(y))])


def _plateau_end(lrs: Sequence[float], values: Sequence[float], window: int, tol_frac: float,
                 min_tol: float) -> int | None:
    """Index where a higher-is-better curve leaves its top plateau (see accuracy_plateau_end)."""
    n = finite_prefix(lrs, values)
    if n == 0:
        return None
    v = _moving_average(np.asarray(values[:n], dtype=float), max(1, window))
    peak = int(np.argmax(v))
    tol = max(min_tol, tol_frac * (v[peak] - v[:peak + 1].min()))
    end = peak
    while end + 1 < n and v[end + 1] >= v[peak] - tol:
        end += 1
    return end


def accuracy_plateau_end(lrs: Sequence[float], accs: Sequence[float], window: int = 3,
                         tol_frac: float = 0.05, min_tol: float = 0.01) -> Suggestion | None:
    """The paper's rule for the maximum LR: where test accuracy stops rising.

    Accuracy is smoothed (centred moving average over ``window`` evaluations: one evaluation on
    a few thousand images is noisy to about a percent). From the smoothed peak we walk right
    while accuracy stays within ``tol`` of the peak, tol = max(``min_tol``, ``tol_frac`` x the
    rise to the peak): the LR at the end of that plateau, before the fall. A non-finite value
    ends the curve (a diverged model has no accuracy to keep).
    """
    end = _plateau_end(lrs, accs, window, tol_frac, min_tol)
    return None if end is None else Suggestion("accuracy plateau end", float(lrs[end]), end)


def loss_turning_point(lrs: Sequence[float], test_losses: Sequence[float], window: int = 3,
                       tol_frac: float = 0.05, min_tol: float = 0.01) -> Suggestion | None:
    """The loss reading of the paper's rule: the LR after which test loss starts to rise (the end
    of its low plateau, by the same smoothing and tolerance as ``accuracy_plateau_end``)."""
    end = _plateau_end(lrs, [-v for v in test_losses], window, tol_frac, min_tol)
    return None if end is None else Suggestion("test-loss rise", float(lrs[end]), end)


def paper_suggestions(lrs: Sequence[float], test_accs: Sequence[float],
                      test_losses: Sequence[float]) -> list[Suggestion]:
    """The linear test's suggestions from its evaluation points (LR, accuracy, loss)."""
    out = [accuracy_plateau_end(lrs, test_accs), loss_turning_point(lrs, test_losses)]
    return [s for s in out if s is not None]
