"""Learning-rate and momentum schedules as pure functions of the step.

Every schedule is a frozen dataclass with ``lr(step)`` and ``momentum(step)``: no hidden counters,
so a schedule can be printed, plotted, resumed or tested at any step without running it.
Steps count from 0; ``lr(step)`` is the rate used *for* that step.
Piecewise-linear pieces compose from one pure helper, ``_lin``, in the spirit of fastai's schedule.py.
"""

import math
from dataclasses import dataclass, field


class ScheduleError(ValueError):
    """A schedule built with values that cannot describe a schedule."""


def _lin(start: float, end: float, frac: float) -> float:
    return start + (end - start) * frac


def _positive(**values: float) -> None:
    for name, v in values.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ScheduleError(f"{name} must be a positive number, got {v!r}")


def _momentum_ok(**values: float) -> None:
    for name, v in values.items():
        if not (isinstance(v, (int, float)) and 0 <= v < 1):
            raise ScheduleError(f"{name} must be in [0, 1), got {v!r}")


@dataclass(frozen=True)
class Constant:
    base_lr: float
    base_momentum: float = 0.9

    def __post_init__(self) -> None:
        _positive(base_lr=self.base_lr)
        _momentum_ok(momentum=self.base_momentum)

    def lr(self, step: int) -> float:
        return self.base_lr

    def momentum(self, step: int) -> float:
        return self.base_momentum


@dataclass(frozen=True)
class Triangular:
    """Smith's triangular CLR: min -> max over ``stepsize`` steps, back to min, repeated."""

    min_lr: float
    max_lr: float
    stepsize: int
    base_momentum: float = 0.9

    def __post_init__(self) -> None:
        _positive(min_lr=self.min_lr, max_lr=self.max_lr, stepsize=self.stepsize)
        _momentum_ok(momentum=self.base_momentum)
        if self.max_lr <= self.min_lr:
            raise ScheduleError(f"max_lr ({self.max_lr}) must be above min_lr ({self.min_lr})")

    def lr(self, step: int) -> float:
        pos = (step % (2 * self.stepsize)) / self.stepsize  # 0..2 within one cycle
        return _lin(self.min_lr, self.max_lr, 1 - abs(pos - 1))

    def momentum(self, step: int) -> float:
        return self.base_momentum


@dataclass(frozen=True)
class MultiStep:
    """Piecewise constant: ``base_lr`` times ``gamma`` for each milestone passed, after an optional
    linear warm-up: ``warmup`` steps rising to ``base_lr`` (Goyal et al. 2017; He et al. started
    ResNet-110 at a tenth of its LR for the same reason: at a large LR from random weights a
    ResNet-56 can sit at chance for an epoch or more)."""

    base_lr: float
    milestones: tuple[int, ...]
    gamma: float = 0.1
    base_momentum: float = 0.9
    warmup: int = 0

    def __post_init__(self) -> None:
        _positive(base_lr=self.base_lr, gamma=self.gamma)
        _momentum_ok(momentum=self.base_momentum)
        ms = tuple(self.milestones)
        if any(not isinstance(m, int) or m <= 0 for m in ms):
            raise ScheduleError(f"milestones must be positive integers, got {list(ms)}")
        if list(ms) != sorted(set(ms)):
            raise ScheduleError(f"milestones must be strictly increasing, got {list(ms)}")
        if not isinstance(self.warmup, int) or self.warmup < 0 or (ms and self.warmup > ms[0]):
            raise ScheduleError(f"warmup must be a whole number of steps from 0 to the first milestone, "
                                f"got {self.warmup!r}")
        object.__setattr__(self, "milestones", ms)

    def lr(self, step: int) -> float:
        if step < self.warmup:  # step 0 runs at base_lr / warmup, never at 0
            return _lin(0.0, self.base_lr, (step + 1) / self.warmup)
        return self.base_lr * self.gamma ** sum(step >= m for m in self.milestones)

    def momentum(self, step: int) -> float:
        return self.base_momentum


@dataclass(frozen=True)
class OneCycle:
    """Smith's 1cycle: min -> max -> min over ``cycle_frac`` of the steps, then annihilation.

    The two halves of the cycle are equal and linear; the remaining steps anneal linearly from
    ``min_lr`` to ``final_lr`` (orders of magnitude lower). Momentum cycles inversely,
    ``max_momentum`` -> ``min_momentum`` -> ``max_momentum``, and stays at the maximum
    during annihilation. PyTorch's OneCycleLR(three_phase=True, anneal_strategy='linear').
    """

    min_lr: float
    max_lr: float
    total_steps: int
    cycle_frac: float = 0.9
    final_lr: float | None = None  # default: min_lr / 1000
    max_momentum: float = 0.95
    min_momentum: float = 0.85
    _final: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _positive(min_lr=self.min_lr, max_lr=self.max_lr, total_steps=self.total_steps)
        _momentum_ok(max_momentum=self.max_momentum, min_momentum=self.min_momentum)
        if self.max_lr <= self.min_lr:
            raise ScheduleError(f"max_lr ({self.max_lr}) must be above min_lr ({self.min_lr})")
        if not 0 < self.cycle_frac <= 1:
            raise ScheduleError(f"cycle_frac must be in (0, 1], got {self.cycle_frac!r}")
        if self.min_momentum > self.max_momentum:
            raise ScheduleError("min_momentum must not exceed max_momentum")
        final = self.min_lr / 1000 if self.final_lr is None else self.final_lr
        _positive(final_lr=final)
        if final > self.min_lr:
            raise ScheduleError(f"final_lr ({final}) must not exceed min_lr ({self.min_lr})")
        object.__setattr__(self, "_final", final)

    @property
    def half_steps(self) -> float:
        return self.total_steps * self.cycle_frac / 2

    def _phase(self, step: int) -> tuple[int, float]:
        """(phase, fraction through it): 0 rising, 1 falling, 2 annihilating."""
        h = self.half_steps
        if step < h:
            return 0, step / h
        if step < 2 * h:
            return 1, (step - h) / h
        tail = self.total_steps - 1 - 2 * h  # the last step (total_steps - 1) runs at final_lr
        return 2, min(1.0, (step - 2 * h) / tail) if tail > 0 else 1.0

    def lr(self, step: int) -> float:
        phase, f = self._phase(step)
        if phase == 0:
            return _lin(self.min_lr, self.max_lr, f)
        if phase == 1:
            return _lin(self.max_lr, self.min_lr, f)
        return _lin(self.min_lr, self._final, f)

    def momentum(self, step: int) -> float:
        phase, f = self._phase(step)
        if phase == 0:
            return _lin(self.max_momentum, self.min_momentum, f)
        if phase == 1:
            return _lin(self.min_momentum, self.max_momentum, f)
        return self.max_momentum


@dataclass(frozen=True)
class LinearRamp:
    """The paper's LR range test: LR raised linearly from ``start_lr`` to ``end_lr``."""

    start_lr: float
    end_lr: float
    total_steps: int
    base_momentum: float = 0.9

    def __post_init__(self) -> None:
        _positive(end_lr=self.end_lr, total_steps=self.total_steps)
        if self.start_lr < 0 or self.start_lr >= self.end_lr:
            raise ScheduleError(f"need 0 <= start_lr < end_lr, got {self.start_lr}, {self.end_lr}")

    def lr(self, step: int) -> float:
        return _lin(self.start_lr, self.end_lr, min(1.0, step / max(1, self.total_steps - 1)))

    def momentum(self, step: int) -> float:
        return self.base_momentum


@dataclass(frozen=True)
class ExponentialRamp:
    """fastai's LR finder ramp: LR multiplied by a constant factor each step."""

    start_lr: float
    end_lr: float
    total_steps: int
    base_momentum: float = 0.9

    def __post_init__(self) -> None:
        _positive(start_lr=self.start_lr, end_lr=self.end_lr, total_steps=self.total_steps)
        if self.start_lr >= self.end_lr:
            raise ScheduleError(f"start_lr ({self.start_lr}) must be below end_lr ({self.end_lr})")

    def lr(self, step: int) -> float:
        f = min(1.0, step / max(1, self.total_steps - 1))
        return self.start_lr * (self.end_lr / self.start_lr) ** f

    def momentum(self, step: int) -> float:
        return self.base_momentum


Schedule = Constant | Triangular | MultiStep | OneCycle | LinearRamp | ExponentialRamp

# The schedule kinds a trial may name, and the other names a config file may use for them.
KINDS: dict[str, type] = {"constant": Constant, "clr": Triangular, "multistep": MultiStep, "onecycle": OneCycle}
ALIASES: dict[str, str] = {"1cycle": "onecycle", "triangular": "clr"}


def canonical_kind(name: str) -> str:
    """The KINDS key ``name`` stands for (itself when it is one, or unknown)."""
    return ALIASES.get(name, name)
