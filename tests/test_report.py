"""Report helpers that are pure functions of rows: the per-step schedule lines in curves.png."""

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.config import TrialSpec
from bench.report import plan_schedules, plot_curves, schedule_lines
from sc_fast.schedules import OneCycle

PNG = b"\x89PNG\r\n\x1a\n"
SPEC = TrialSpec(name="oc", schedule="onecycle", schedule_args=(("min_lr", 0.1), ("max_lr", 1.0)), steps=40,
                 batch_size=8, eval_batch_size=8, eval_every=10, weight_decay=5e-4, nesterov=False,
                 label_smoothing=0.0, bn_momentum=0.1, augment="crop_flip", train_images=0, eval_images=0)


def _curves() -> pd.DataFrame:
    # evaluation points only, as curves.csv holds them: steps 10..40, 2 s per 10 steps
    steps = np.array([10, 20, 30, 40])
    return pd.DataFrame({"trial": "oc", "seed": 0, "step": steps, "train_time_s": steps / 5.0,
                         "lr": 0.0, "momentum": 0.0, "train_loss": 1.0, "test_acc": 0.5})


def test_schedule_lines_are_per_step_and_follow_the_schedule() -> None:
    schedule = OneCycle(min_lr=0.1, max_lr=1.0, total_steps=40)
    lines = schedule_lines(_curves(), schedule)
    steps, secs, lrs = lines["lr"]
    assert list(steps) == list(range(41))
    assert lrs[18] == pytest.approx(schedule.lr(18))  # the peak, between evaluation points
    assert lines["momentum"][2][18] == pytest.approx(schedule.momentum(18))
    # seconds are interpolated between evaluations, from (step 0, 0 s)
    assert secs[0] == 0.0 and secs[10] == pytest.approx(2.0) and secs[15] == pytest.approx(3.0)


def test_plan_schedules_rebuild_the_trials_from_env_json() -> None:
    env = json.loads(json.dumps({"plan": {"trials": [asdict(SPEC)]}}))  # the round trip env.json makes
    assert plan_schedules(env) == {"oc": SPEC.build_schedule()}
    assert plan_schedules({"plan": {"trials": [{"name": "broken"}]}}) == {}
    assert plan_schedules({}) == {}


def test_plot_curves_with_and_without_schedules(tmp_path: Path) -> None:
    for name, schedules in (("dense.png", {"oc": SPEC.build_schedule()}), ("coarse.png", None)):
        plot_curves(_curves(), tmp_path / name, schedules)
        assert (tmp_path / name).read_bytes()[:8] == PNG
