"""The timed training loop on the CPU: warm-up reset, evaluation points, clocks, stopping, divergence,
and the schedule reaching the optimizer. A small ResNet (n=1, narrow) on synthetic images keeps it fast;
the loop is what is under test, not the network."""

import copy
import time
import math

import numpy as np
import pytest
import torch
from torch import nn

import sc_fast.train as train_mod
from sc_fast.data import Cifar10
from sc_fast.model import ResNetCifar
from sc_fast.pipeline import PipelineSpec, TorchPipeline
from sc_fast.schedules import Constant, OneCycle, Schedule
from sc_fast.train import Hooks, TrainConfig, TrialOutcome, TrialState, train_trial

CPU = torch.device("cpu")
SPEC = PipelineSpec(batch_size=16, eval_batch_size=32, train_images=64, eval_images=64)  # 4 steps/epoch


@pytest.fixture(scope="module")
def data() -> Cifar10:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (128, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 128).astype(np.int64)
    return Cifar10(images[:64], labels[:64], images[64:], labels[64:])


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ResNetCifar(blocks_per_stage=1, widths=(8, 16, 32))


def run(data: Cifar10, schedule: Schedule, cfg: TrainConfig, model: nn.Module | None = None,
        **kw: object) -> TrialOutcome:
    resume = kw.pop("resume", None)
    return train_trial(model or small_model(), TorchPipeline(data, SPEC, CPU), schedule, cfg, CPU, Hooks(**kw),
                       resume)


def cfg(**kw: object) -> TrainConfig:
    return TrainConfig(**{"max_steps": 7, "eval_every": 3, "warmup_steps": 0, "checkpoint_interval_s": 0, **kw})


def curve_values(o: TrialOutcome) -> list[tuple[float, ...]]:
    return [(p.step, p.lr, p.momentum, p.train_loss, p.test_loss, p.test_acc) for p in o.curve]


def test_warmup_never_trains_the_measured_model(data: Cifar10) -> None:
    # Pipeline batches depend only on (seed, epoch) and the warm-up state is reset, so the measured
    # run is the same with or without warm-up steps (momentum buffers included).
    sched = OneCycle(0.05, 0.5, 7)
    cold = run(data, sched, cfg(warmup_steps=0))
    warm = run(data, sched, cfg(warmup_steps=3))
    assert warm.compile_time_s > 0
    assert curve_values(warm) == curve_values(cold)


def test_weights_at_the_first_timed_step_are_the_initial_ones(data: Cifar10,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    first: list[tuple[dict[str, torch.Tensor], int]] = []
    real = train_mod.set_hyperparams

    def spy(optimizer: torch.optim.Optimizer, schedule: Schedule, step: int) -> None:
        if step == 0:  # called just before the first timed step, after the warm-up
            first.append(({k: v.clone() for k, v in model.state_dict().items()}, len(optimizer.state)))
        real(optimizer, schedule, step)

    monkeypatch.setattr(train_mod, "set_hyperparams", spy)
    run(data, Constant(0.1), cfg(warmup_steps=2, max_steps=1, eval_every=1), model=model)
    (state, n_opt_state), = first
    assert all(torch.equal(state[k], initial[k]) for k in initial)  # BN running stats included
    assert n_opt_state == 0  # no momentum buffers left over from the warm-up
    assert not torch.equal(model.state_dict()["fc.weight"], initial["fc.weight"])  # and it did train


def test_evaluation_points_and_clocks(data: Cifar10) -> None:
    o = run(data, OneCycle(0.05, 0.5, 7), cfg(max_steps=7, eval_every=3))
    assert [p.step for p in o.curve] == [3, 6, 7]  # every eval_every, and the last step
    assert [p.epoch for p in o.curve] == [0.75, 1.5, 1.75]  # 4 steps per epoch: crosses an epoch
    assert o.steps_run == 7 and o.train_images == 7 * 16
    assert o.status == "not_reached" and o.reached_at is None  # no target
    times = [p.train_time_s for p in o.curve]
    assert times[0] > 0 and times == sorted(times)
    assert all(p.wall_time_s >= p.train_time_s for p in o.curve)  # wall includes evaluation
    assert o.train_time_s == times[-1] and o.eval_time_s > 0
    assert o.final_test_acc == o.curve[-1].test_acc
    assert o.best_test_acc == max(p.test_acc for p in o.curve)
    assert all(0 <= p.test_acc <= 1 and math.isfinite(p.train_loss) for p in o.curve)


def test_fine_evaluations_from_a_step_on(data: Cifar10) -> None:
    o = run(data, Constant(0.05), cfg(max_steps=11, eval_every=4, fine_eval_from=5, fine_eval_every=2))
    assert [p.step for p in o.curve] == [4, 5, 7, 9, 11]  # sparse before step 5, then it and every 2nd after


def test_stop_at_target_stops_at_the_first_eval_reaching_it(data: Cifar10) -> None:
    # 64 random-label test images: any classifier gets at least one right in practice; 0.01 < 1/64.
    o = run(data, Constant(0.05), cfg(max_steps=9, eval_every=3, target_acc=0.01, stop_at_target=True))
    assert o.status == "reached"
    assert [p.step for p in o.curve] == [3] and o.steps_run == 3
    assert o.reached_at == o.curve[0]


def test_target_without_stopping_records_the_first_hit(data: Cifar10) -> None:
    o = run(data, Constant(0.05), cfg(max_steps=6, eval_every=3, target_acc=0.01, stop_at_target=False))
    assert o.status == "reached" and [p.step for p in o.curve] == [3, 6]
    assert o.reached_at == o.curve[0]


def test_resumed_from_a_checkpoint_the_trial_ends_as_if_never_stopped(data: Cifar10) -> None:
    # 11 steps, an evaluation every 2: checkpoints at steps 2..10 (not at the last, which ends the
    # trial). Going on from the one at step 6 (mid-epoch 1, after a reached target) gives the
    # uninterrupted curve: same data stream, weights, BN statistics and momentum buffers.
    states: list[TrialState] = []
    sched = OneCycle(0.05, 0.5, 11)
    c = cfg(max_steps=11, eval_every=2, target_acc=0.01, warmup_steps=1)
    whole = run(data, sched, c, on_checkpoint=lambda s: states.append(copy.deepcopy(s)))
    assert [s.step for s in states] == [2, 4, 6, 8, 10]
    at6 = states[2]
    assert [p.step for p in at6.curve] == [2, 4, 6] and at6.curve == whole.curve[:3]
    assert at6.status == "reached" and at6.reached_at == whole.reached_at
    pieces = run(data, sched, c, model=small_model(seed=1), resume=at6)  # other initial weights: overwritten
    assert curve_values(pieces) == curve_values(whole)
    assert pieces.curve[:3] == whole.curve[:3] and pieces.reached_at == whole.reached_at
    assert pieces.status == whole.status and pieces.steps_run == 11
    assert pieces.train_time_s > at6.train_time_s and pieces.compile_time_s > at6.compile_time_s
    times = [p.train_time_s for p in pieces.curve]
    assert times == sorted(times)
    # checkpoint_every counts evaluations; 0 turns checkpoints off
    every3: list[int] = []
    run(data, sched, cfg(max_steps=11, eval_every=2, checkpoint_every=3), on_checkpoint=lambda s: every3.append(s.step))
    off: list[int] = []
    run(data, sched, cfg(max_steps=11, eval_every=2, checkpoint_every=0), on_checkpoint=lambda s: off.append(s.step))
    assert every3 == [6] and off == []


def test_huge_lr_diverges(data: Cifar10) -> None:
    o = run(data, Constant(1e6), cfg(max_steps=30, eval_every=3))
    assert o.status == "diverged"
    last = o.curve[-1]
    assert not (math.isfinite(last.train_loss) and math.isfinite(last.test_loss))
    assert o.steps_run < 30 and o.steps_run == last.step  # stopped at the first non-finite evaluation


def test_schedule_values_reach_the_optimizer(data: Cifar10, monkeypatch: pytest.MonkeyPatch) -> None:
    sched = OneCycle(0.011, 0.55, 8, cycle_frac=0.75, final_lr=0.0011)  # lr and momentum vary every step
    seen: list[tuple[float, float]] = []
    real_build = train_mod.build_optimizer

    def build(*args: object) -> torch.optim.Optimizer:
        opt = real_build(*args)
        step = opt.step

        def recording_step(*a: object, **k: object) -> object:
            assert len({(g["lr"], g["momentum"]) for g in opt.param_groups}) == 1
            seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
            return step(*a, **k)

        opt.step = recording_step  # type: ignore[method-assign]
        return opt

    monkeypatch.setattr(train_mod, "build_optimizer", build)
    o = run(data, sched, cfg(max_steps=8, eval_every=4))
    assert seen == [(sched.lr(i), sched.momentum(i)) for i in range(8)]
    assert len(set(seen)) == 7  # recognisable: only steps 0 and 6 share a value (min_lr, 0.95)
    # An evaluation point reports the values of the step just taken.
    assert [(p.lr, p.momentum) for p in o.curve] == [seen[3], seen[7]]


# ---- steps-to-target exact to fine_eval_every between coarse evaluations -------------------------------

@pytest.fixture(scope="module")
def learnable() -> Cifar10:
    """Test images = training images: test accuracy climbs as the model memorizes them, so a target
    is crossed at a step the test can predict from a densely evaluated run."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 64).astype(np.int64)
    return Cifar10(images, labels, images, labels)


def test_a_crossing_between_coarse_evaluations_is_found_at_fine_resolution(learnable: Cifar10) -> None:
    sched, steps, coarse = Constant(0.05), 24, 6
    dense = run(learnable, sched, cfg(max_steps=steps, eval_every=1))
    acc = {p.step: p.test_acc for p in dense.curve}
    # a target first crossed strictly inside a coarse window whose end is also at or above it
    cases = [(t, k) for t in sorted(set(acc.values()))
             for k in [next(s for s in range(1, steps + 1) if acc[s] >= t)]
             if k % coarse and acc[min(steps, -(-k // coarse) * coarse)] >= t]
    assert cases, f"no target crossed mid-window in {acc}"
    target, k = cases[len(cases) // 2]
    o = run(learnable, sched, cfg(max_steps=steps, eval_every=coarse, fine_eval_every=1, target_acc=target))
    assert o.status == "reached" and o.reached_at is not None and o.reached_at.step == k
    assert o.reached_at.test_acc == acc[k]  # the weights of step k, as the dense run saw them
    window_end = -(-k // coarse) * coarse
    steps_seen = [p.step for p in o.curve]
    # coarse points, plus the window's points up to the crossing, in step order
    assert steps_seen == sorted(steps_seen) and set(range(window_end - coarse + 1, k + 1)) <= set(steps_seen)
    assert not set(range(k + 1, window_end)) & set(steps_seen)  # nothing after the crossing is evaluated
    times = [p.train_time_s for p in o.curve]
    assert times == sorted(times) and all(p.wall_time_s >= p.train_time_s for p in o.curve)
    assert o.reached_at.train_time_s < next(p.train_time_s for p in o.curve if p.step == window_end)
    losses = {p.step: p.train_loss for p in dense.curve}  # each point's loss: the steps since the one before
    for before, p in zip(o.curve, o.curve[1:]):
        if p.step > window_end - coarse:
            want = sum(losses[s] for s in range(before.step + 1, p.step + 1)) / (p.step - before.step)
            assert p.train_loss == pytest.approx(want, rel=1e-5), p.step
    stopped = run(learnable, sched, cfg(max_steps=steps, eval_every=coarse, fine_eval_every=1, target_acc=target,
                                        stop_at_target=True))
    assert stopped.reached_at.step == k and stopped.steps_run == window_end  # it trained to the coarse point


def test_without_a_target_or_once_reached_nothing_is_back_filled(learnable: Cifar10) -> None:
    o = run(learnable, Constant(0.05), cfg(max_steps=12, eval_every=6, fine_eval_every=1))
    assert [p.step for p in o.curve] == [6, 12]


def test_checkpoints_at_most_once_per_interval_and_their_time_is_counted(data: Cifar10) -> None:
    sched = OneCycle(0.05, 0.5, 11)
    every: list[int] = []
    o = run(data, sched, cfg(max_steps=11, eval_every=2), on_checkpoint=lambda s: every.append(s.step))
    assert every == [2, 4, 6, 8, 10] and o.checkpoint_time_s >= 0
    spaced: list[int] = []
    run(data, sched, cfg(max_steps=11, eval_every=2, checkpoint_interval_s=3600),
        on_checkpoint=lambda s: spaced.append(s.step))
    assert spaced == []  # the trial is far shorter than the interval

    def slow(state: TrialState) -> None:
        time.sleep(0.05)
    timed = run(data, sched, cfg(max_steps=11, eval_every=2), on_checkpoint=slow)
    assert timed.checkpoint_time_s >= 5 * 0.05
    assert timed.curve[-1].wall_time_s >= timed.train_time_s + timed.checkpoint_time_s  # in the wall clock only
