"""Schedules against their formulas at the boundary steps, their checks, and `bench schedule`."""

import csv
import dataclasses
import io
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from bench import config as config_mod
from sc_fast.schedules import (Constant, ExponentialRamp, LinearRamp, MultiStep, OneCycle, Schedule,
                               ScheduleError, Triangular)

REPO = Path(__file__).resolve().parent.parent
def approx(v: float) -> object:
    return pytest.approx(v, rel=1e-12, abs=1e-15)


# ---- triangular CLR ------------------------------------------------------------------------------

def test_triangular_boundaries() -> None:
    s = Triangular(min_lr=0.1, max_lr=3.0, stepsize=5000)  # the paper's Figure 1A
    assert s.lr(0) == approx(0.1)
    assert s.lr(5000) == approx(3.0)
    assert s.lr(10000) == approx(0.1)
    assert s.lr(2500) == approx(1.55)  # halfway up
    assert s.lr(7500) == approx(1.55)  # halfway down
    assert s.lr(1) == approx(0.1 + 2.9 / 5000)
    assert s.lr(4999) < s.lr(5000) > s.lr(5001)
    assert s.momentum(0) == s.momentum(5000) == s.momentum(9999) == 0.9


@pytest.mark.parametrize("step", [0, 1, 1234, 4999, 5000, 7777, 9999])
def test_triangular_is_periodic(step: int) -> None:
    s = Triangular(0.1, 3.0, 5000)
    assert s.lr(step + 10000) == approx(s.lr(step))
    assert s.lr(step + 30000) == approx(s.lr(step))


# ---- multistep -----------------------------------------------------------------------------------

def test_multistep_milestones() -> None:
    s = MultiStep(base_lr=0.35, milestones=(50000, 70000), gamma=0.1)
    assert s.lr(0) == approx(0.35)
    assert s.lr(49999) == approx(0.35)
    assert s.lr(50000) == approx(0.35 * 0.1)
    assert s.lr(69999) == approx(0.35 * 0.1)
    assert s.lr(70000) == approx(0.35 * 0.1 ** 2)
    assert s.lr(79999) == approx(0.35 * 0.1 ** 2)
    assert s.momentum(0) == s.momentum(79999) == 0.9


def test_multistep_gamma_powers() -> None:
    s = MultiStep(1.0, (10, 20, 30), gamma=0.5)
    assert [s.lr(i) for i in (9, 10, 19, 20, 29, 30)] == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125]


def test_multistep_warmup_rises_linearly_to_the_lr() -> None:
    s = MultiStep(0.2, (10, 20), warmup=4)
    assert [s.lr(i) for i in range(6)] == approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])  # never 0
    assert s.lr(10) == approx(0.02) and MultiStep(0.2, (10,)).lr(0) == 0.2  # default: no warm-up


# ---- 1cycle --------------------------------------------------------------------------------------

# total 100, cycle_frac 0.8: half-cycle h = 40 steps, the cycle ends at step 80, annihilation 80..99.
ONE = {"min_lr": 0.08, "max_lr": 0.8, "total_steps": 100, "cycle_frac": 0.8, "final_lr": 0.0008}


def test_onecycle_boundaries() -> None:
    s = OneCycle(**ONE)
    assert s.lr(0) == approx(0.08)
    assert s.lr(20) == approx(0.44)  # midpoint of the rise
    assert s.lr(40) == approx(0.8)  # peak at cycle_frac * total / 2
    assert s.lr(60) == approx(0.44)
    assert s.lr(80) == approx(0.08)  # back to min_lr at cycle_frac * total
    assert s.lr(99) == approx(0.0008)  # the last step runs at final_lr
    assert max(range(100), key=s.lr) == 40
    assert all(s.lr(i) > s.lr(i + 1) for i in range(80, 99))  # annihilation decreases monotonically
    assert s.lr(500) == approx(0.0008)  # past the end: stays at final_lr


def test_onecycle_momentum_cycles_inversely() -> None:
    s = OneCycle(**ONE)
    assert s.momentum(0) == approx(0.95)
    assert s.momentum(20) == approx(0.90)
    assert s.momentum(40) == approx(0.85)  # lowest where the LR peaks
    assert s.momentum(80) == approx(0.95)
    assert all(s.momentum(i) == approx(0.95) for i in range(80, 100))  # annihilation


def test_onecycle_default_final_lr() -> None:
    s = OneCycle(min_lr=0.1, max_lr=1.0, total_steps=50)
    assert s.lr(49) == approx(0.1 / 1000)


def _torch_onecycle(total: int, min_lr: float, max_lr: float, cycle_frac: float, final_lr: float
                    ) -> tuple[list[float], list[float]]:
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=min_lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=max_lr, total_steps=total, pct_start=cycle_frac / 2, anneal_strategy="linear",
        three_phase=True, div_factor=max_lr / min_lr, final_div_factor=min_lr / final_lr,
        base_momentum=0.85, max_momentum=0.95)
    lrs, moms = [], []
    for i in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        if i < total - 1:
            sched.step()
    return lrs, moms


def test_onecycle_matches_torch_onecyclelr() -> None:
    """Same schedule as OneCycleLR(three_phase=True, anneal_strategy='linear'), one convention apart.

    OneCycleLR puts a phase's end at ``pct_start * total - 1`` (and the second at ``2 * pct_start *
    total - 2``): each phase spans one interval fewer, so its peak is at step h - 1 and its trough at
    2h - 2, where ours are at h and 2h (h = cycle_frac * total / 2). Both start at min_lr with
    momentum 0.95 and run the last step at final_lr; in between they differ by at most about two
    steps' worth of slope. This is documented, not hidden: the assertions below pin both conventions.
    """
    s = OneCycle(**ONE)
    t_lr, t_mom = _torch_onecycle(100, 0.08, 0.8, 0.8, 0.0008)
    ours_lr = [s.lr(i) for i in range(100)]
    ours_mom = [s.momentum(i) for i in range(100)]
    # Where the conventions coincide: first and last steps, and the extreme values themselves.
    assert t_lr[0] == approx(ours_lr[0]) and t_mom[0] == approx(ours_mom[0])
    assert t_lr[99] == approx(ours_lr[99]) and t_mom[99] == approx(ours_mom[99])
    assert max(t_lr) == approx(max(ours_lr)) == approx(0.8)
    assert min(t_mom) == approx(min(ours_mom)) == approx(0.85)
    # The off-by-one: torch peaks one step earlier and is back at min_lr two steps earlier.
    assert t_lr.index(max(t_lr)) == 39 and ours_lr.index(max(ours_lr)) == 40
    assert t_lr[78] == approx(0.08) and ours_lr[80] == approx(0.08)
    slope = (0.8 - 0.08) / 40
    assert max(abs(a - b) for a, b in zip(t_lr, ours_lr)) == pytest.approx(2 * slope)  # at the trough
    assert max(abs(a - b) for a, b in zip(t_mom, ours_mom)) <= 2 * (0.95 - 0.85) / 40 + 1e-12


# ---- constant and ramps --------------------------------------------------------------------------

def test_constant() -> None:
    s = Constant(0.3, 0.8)
    assert {s.lr(i) for i in (0, 1, 10**6)} == {0.3}
    assert {s.momentum(i) for i in (0, 1, 10**6)} == {0.8}


def test_linear_ramp_endpoints() -> None:
    s = LinearRamp(0.0, 3.0, 5001)  # the paper's range test: 0 -> 3
    assert s.lr(0) == 0.0
    assert s.lr(2500) == approx(1.5)
    assert s.lr(5000) == approx(3.0)  # the last step reaches end_lr
    assert s.lr(9999) == approx(3.0)


def test_exponential_ramp_endpoints() -> None:
    s = ExponentialRamp(1e-4, 10.0, 101)
    assert s.lr(0) == approx(1e-4)
    assert s.lr(50) == pytest.approx((1e-4 * 10.0) ** 0.5, rel=1e-9)  # geometric midpoint
    assert s.lr(100) == pytest.approx(10.0, rel=1e-12)
    assert s.lr(1) / s.lr(0) == pytest.approx(s.lr(100) / s.lr(99), rel=1e-9)  # constant factor


# ---- validation ----------------------------------------------------------------------------------

BAD: list[tuple[Callable[[], object], str]] = [
    (lambda: Triangular(1.0, 1.0, 10), "max_lr"),
    (lambda: Triangular(2.0, 1.0, 10), "max_lr"),
    (lambda: Triangular(-0.1, 1.0, 10), "min_lr"),
    (lambda: Triangular(0.1, 1.0, 0), "stepsize"),
    (lambda: Triangular(0.1, 1.0, 10, base_momentum=1.0), "momentum"),
    (lambda: Constant(-1.0), "base_lr"),
    (lambda: Constant(0.0), "base_lr"),
    (lambda: Constant(float("nan")), "base_lr"),
    (lambda: MultiStep(0.1, (20, 10)), "milestones"),
    (lambda: MultiStep(0.1, (10, 10)), "milestones"),
    (lambda: MultiStep(0.1, (0, 10)), "milestones"),
    (lambda: MultiStep(0.1, (10,), gamma=-0.1), "gamma"),
    (lambda: MultiStep(0.1, (10,), warmup=11), "warmup"),
    (lambda: MultiStep(0.1, (10,), warmup=-1), "warmup"),
    (lambda: OneCycle(0.1, 0.05, 100), "max_lr"),
    (lambda: OneCycle(0.1, 1.0, 0), "total_steps"),
    (lambda: OneCycle(0.1, 1.0, 100, cycle_frac=0.0), "cycle_frac"),
    (lambda: OneCycle(0.1, 1.0, 100, cycle_frac=1.5), "cycle_frac"),
    (lambda: OneCycle(0.1, 1.0, 100, final_lr=0.2), "final_lr"),
    (lambda: OneCycle(0.1, 1.0, 100, final_lr=-1e-3), "final_lr"),
    (lambda: OneCycle(0.1, 1.0, 100, max_momentum=0.8, min_momentum=0.9), "min_momentum"),
    (lambda: LinearRamp(-1.0, 3.0, 10), "start_lr"),
    (lambda: LinearRamp(0.0, 3.0, 0), "total_steps"),
    (lambda: ExponentialRamp(1.0, 0.1, 10), "start_lr"),
]


@pytest.mark.parametrize(("build", "name"), BAD, ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD)])
def test_invalid_values_raise_naming_the_value(build: Callable[[], object], name: str) -> None:
    with pytest.raises(ScheduleError, match=name):
        build()


SCHEDULES: list[Schedule] = [
    Constant(0.1), Triangular(0.1, 3.0, 7), MultiStep(0.4, (5, 9)), OneCycle(**ONE),
    LinearRamp(0.0, 3.0, 20), ExponentialRamp(1e-4, 10.0, 20),
]


@pytest.mark.parametrize("s", SCHEDULES, ids=lambda s: type(s).__name__)
def test_schedules_are_frozen(s: Schedule) -> None:
    field = dataclasses.fields(s)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(s, field, 123.0)


@pytest.mark.parametrize("s", SCHEDULES, ids=lambda s: type(s).__name__)
def test_schedules_are_pure(s: Schedule) -> None:
    steps = list(range(120))
    forward = {i: (s.lr(i), s.momentum(i)) for i in steps}
    shuffled = steps[:]
    random.Random(0).shuffle(shuffled)
    # No hidden counters: asking in another order (or twice) gives the same values.
    assert {i: (s.lr(i), s.momentum(i)) for i in shuffled} == forward
    assert {i: (s.lr(i), s.momentum(i)) for i in reversed(steps)} == forward


# ---- `python -m bench schedule` ------------------------------------------------------------------

def _bench(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


def test_cli_schedule_csv_matches_config() -> None:
    proc = _bench("schedule", "1cycle", "--csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert rows[0] == ["step", "lr", "momentum"]
    spec = config_mod.load(REPO / "bench.toml").trials["1cycle"]
    sched = spec.build_schedule()
    assert len(rows) - 1 == spec.steps
    for i, (step, lr, mom) in enumerate(rows[1:]):
        # repr() round-trips floats, so the printed values are the schedule's exactly
        assert (int(step), float(lr), float(mom)) == (i, sched.lr(i), sched.momentum(i))
    assert float(rows[-1][1]) == approx(dict(spec.schedule_args)["final_lr"])  # annihilation ends on the last step


def test_cli_schedule_plot(tmp_path: Path) -> None:
    png = tmp_path / "clr.png"
    proc = _bench("schedule", "clr", "--steps", "100", "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "clr" in proc.stdout

