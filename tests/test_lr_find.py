"""LR range test: suggestion rules on synthetic curves, the stop rule on a real (tiny) run, and
`python -m bench lr-find` end to end with tiny settings."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench import cli
from sc_fast import lr_find
from sc_fast.data import Cifar10, DataError, locate
from sc_fast.lr_find import (ExponentialSettings, LinearSettings, RangeSetup, accuracy_plateau_end, fastai_suggestions,
                             loss_turning_point, minimum, steep, valley)
from sc_fast.pipeline import PipelineSpec, TorchPipeline
from sc_fast.train import TrainConfig

LRS = list(np.logspace(-4, 1, 101))


# ---- suggestion rules on synthetic curves ---------------------------------------------------------

def test_valley_on_u_shaped_loss_is_inside_the_descent() -> None:
    losses = [(math.log10(lr) + 1) ** 2 + 0.5 for lr in LRS]  # minimum at lr = 0.1
    bottom = int(np.argmin(losses))
    s = valley(LRS, losses)
    assert s is not None and 0 < s.index < bottom
    assert LRS[0] < s.lr < LRS[bottom]
    assert losses[s.index] > losses[bottom]  # still descending there


def test_decreasing_then_exploding_curve() -> None:
    # flat at 2.3, falls to 0.5 by lr 0.3, then explodes
    def loss(lr: float) -> float:
        x = math.log10(lr)
        if x < -3:
            return 2.3
        if lr <= 0.3:
            return 2.3 - 1.8 * (x + 3) / (math.log10(0.3) + 3)
        return 0.5 * math.exp(8 * (x - math.log10(0.3)))
    losses = [loss(lr) for lr in LRS]
    for rule in (valley, steep, minimum):
        s = rule(LRS, losses)
        assert s is not None and 1e-3 <= s.lr <= 0.3, rule.__name__
    assert minimum(LRS, losses).lr == pytest.approx(LRS[int(np.argmin(losses))] / 10)


def test_flat_curve_gives_an_lr_in_range_without_error() -> None:
    flat = [2.3] * len(LRS)
    for rule in (valley, steep, minimum):
        s = rule(LRS, flat)
        assert s is not None and 0 <= s.index < len(LRS) and math.isfinite(s.lr)
    assert fastai_suggestions(LRS, flat, planned_steps=len(LRS))


def test_nan_tail_is_cut_off() -> None:
    losses = [(math.log10(lr) + 1) ** 2 + 0.5 for lr in LRS]
    with_nan = losses[:80] + [math.nan, math.inf] + [math.nan] * 19
    for rule in (valley, steep, minimum):
        assert rule(LRS, with_nan) == rule(LRS[:80], losses[:80])
    for s in fastai_suggestions(LRS, with_nan, planned_steps=len(LRS)):
        assert s.index < 80 and math.isfinite(s.lr)
    assert valley(LRS, [math.nan] * 5) is None


def test_fastai_window_skips_first_tenth_and_last_five() -> None:
    losses = [(math.log10(lr) + 1) ** 2 + 0.5 for lr in LRS]
    for s in fastai_suggestions(LRS, losses, planned_steps=len(LRS)):
        assert len(LRS) // 10 <= s.index < len(LRS) - 5
    # too short for the window: read the whole curve
    assert fastai_suggestions(LRS[:4], losses[:4], planned_steps=4)


def test_paper_rule_picks_the_end_of_the_plateau_not_after_the_fall() -> None:
    lrs = list(np.linspace(0, 3, 61))  # evaluations every 0.05
    wiggle = [0.004, -0.004]

    def acc(i: int, lr: float) -> float:
        if lr <= 1.0:
            return 0.1 + 0.7 * lr  # climbs
        if lr <= 2.5:
            return 0.8 + wiggle[i % 2]  # plateaus (noisy)
        return 0.8 - 1.2 * (lr - 2.5)  # falls to 0.2 at lr 3
    accs = [acc(i, lr) for i, lr in enumerate(lrs)]
    s = accuracy_plateau_end(lrs, accs)
    assert s is not None and 2.3 <= s.lr <= 2.55
    assert accs[s.index] >= 0.75
    # a run that diverged during the fall: the NaNs end the curve, the answer stays
    diverged = accs[:54] + [math.nan] * 7
    assert accuracy_plateau_end(lrs, diverged).lr == s.lr
    # the loss reading: test loss (a mirror image here) starts to rise at the end of the plateau
    assert 2.3 <= loss_turning_point(lrs, [1.0 - a for a in accs]).lr <= 2.55


def test_paper_rule_on_a_curve_that_only_climbs_takes_the_last_point() -> None:
    lrs = list(np.linspace(0, 3, 31))
    assert accuracy_plateau_end(lrs, [0.1 + 0.2 * lr for lr in lrs]).index == 30


# ---- the range test on a tiny model and synthetic data -------------------------------------------

def _tiny_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


@pytest.fixture(scope="module")
def tiny_pipeline() -> TorchPipeline:
    rng = np.random.default_rng(0)
    images = lambda n: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # noqa: E731
    labels = lambda n: rng.integers(0, 10, n).astype(np.int64)  # noqa: E731
    data = Cifar10(images(256), labels(256), images(64), labels(64))
    return TorchPipeline(data, PipelineSpec(batch_size=16, eval_batch_size=64), torch.device("cpu"))


CPU = torch.device("cpu")
CFG = TrainConfig(max_steps=200, eval_every=5)


def test_exponential_test_stops_at_divergence_and_keeps_its_curve(tiny_pipeline: TorchPipeline) -> None:
    settings = ExponentialSettings(start_lr=1e-3, end_lr=1e4, steps=200, smoothing=0.98, diverge_factor=4.0)
    test = lr_find.exponential_test(RangeSetup(_tiny_model, tiny_pipeline, CFG, CPU), settings)
    assert test.stop_reason in ("diverged", "non-finite loss")
    assert 1 < len(test.points) < settings.steps
    assert [p.step for p in test.points] == list(range(len(test.points)))
    assert all(a.lr < b.lr for a, b in zip(test.points, test.points[1:]))
    last, best = test.points[-1].smoothed_loss, min(test.smoothed[:-1])
    assert not math.isfinite(last) or last > settings.diverge_factor * best
    # The recorded smoothed loss is fastai's debiased EMA: it starts at the first loss (not near 0, as a
    # plain EMA from 0 would) and stays a weighted mean of the losses so far.
    first = test.points[0]
    assert first.smoothed_loss == pytest.approx(first.loss)
    for i, p in enumerate(test.points[:-1]):
        seen = [q.loss for q in test.points[:i + 1]]
        assert min(seen) - 1e-6 <= p.smoothed_loss <= max(seen) + 1e-6
    assert fastai_suggestions(test.lrs, test.smoothed, settings.steps)


def test_range_test_is_deterministic_leaks_nothing_and_chunked_reads_change_nothing(
        tiny_pipeline: TorchPipeline) -> None:
    settings = ExponentialSettings(start_lr=1e-3, end_lr=1e4, steps=200, smoothing=0.98, diverge_factor=4.0)
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    reference = _tiny_model().state_dict()
    torch.set_rng_state(rng_before)
    per_step = lr_find.exponential_test(RangeSetup(_tiny_model, tiny_pipeline, CFG, CPU, read_every=1), settings)
    chunked = lr_find.exponential_test(RangeSetup(_tiny_model, tiny_pipeline, CFG, CPU, read_every=7), settings)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the test's seeding stayed inside it
    after = _tiny_model().state_dict()  # what a trial built next would get
    assert all(torch.equal(after[k], reference[k]) for k in reference)
    assert per_step == chunked  # same curve, same stop point


def test_linear_test_evaluates_on_schedule(tiny_pipeline: TorchPipeline) -> None:
    settings = LinearSettings(end_lr=0.5, steps=12, eval_every=5, smoothing=0.98)
    test = lr_find.linear_test(RangeSetup(_tiny_model, tiny_pipeline, CFG, CPU), settings)
    assert test.stop_reason == "completed" and len(test.points) == 12
    assert test.points[0].lr == 0.0 and test.points[-1].lr == pytest.approx(0.5)
    assert [p.step for p in test.evals()] == [4, 9, 11]
    assert all(0 <= p.test_acc <= 1 and p.test_loss > 0 for p in test.evals())


# ---- python -m bench lr-find ------------------------------------------------------------------------

CONFIG = """
[data]
download = false
[devices.cuda]
precision = "bf16"
channels_last = true
compile = "off"
[devices.cpu]
precision = "fp32"
channels_last = true
compile = "off"
[trials.tiny]
schedule = "constant"
lr = 0.1
steps = 10
batch_size = 16
eval_batch_size = 100
eval_every = 5
weight_decay = 5e-4
nesterov = false
label_smoothing = 0.0
bn_momentum = 0.1
augment = "crop_flip"
train_images = 512
eval_images = 100
[profiles.auto]
cuda = "p"
cpu = "p"
[profiles.p]
trials = ["tiny"]
target = 0.5
[lr_find]
trial = "tiny"
start_lr = 1e-3
end_lr = 10.0
steps = 10
smoothing = 0.98
diverge_factor = 4.0
linear_end_lr = 1.0
linear_steps = 10
eval_every = 5
eval_images = 100
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    p = tmp_path / "bench.toml"
    p.write_text(CONFIG)
    return p


def test_cli_lr_find_end_to_end(config_file: Path, tmp_path: Path) -> None:
    try:
        locate(None, download=False)
    except DataError as e:
        pytest.skip(f"CIFAR-10 not available offline: {e}")
    out = tmp_path / "runs"
    assert cli.main(["lr-find", "--config", str(config_file), "--device", "cpu", "--out", str(out)]) == 0
    (run_dir,) = out.iterdir()
    with open(run_dir / "lr_find.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    assert header[:4] == ["step", "lr", "loss", "smoothed_loss"]
    assert {"ramp", "test_loss", "test_acc"} <= set(header)
    linear = [r for r in rows if r["ramp"] == "linear"]
    assert len(linear) == 10 and [r["step"] for r in linear if r["test_acc"]] == ["4", "9"]
    assert 0 < len([r for r in rows if r["ramp"] == "exponential"]) <= 10
    summary = (run_dir / "summary.md").read_text()
    assert "valley" in summary and "accuracy plateau end" in summary
    suggested = summary.split("| exponential | valley | ")[1].split(" |")[0]
    assert 1e-3 <= float(suggested) <= 10
    assert (run_dir / "lr_find.png").stat().st_size > 1000
    env = (run_dir / "env.json").read_text()
    assert '"kind": "lr_find"' in env and '"state": "complete"' in env
    # `bench report` re-renders the same summary from the files
    assert cli.main(["report", str(run_dir)]) == 0
    assert (run_dir / "summary.md").read_text() == summary


@pytest.mark.parametrize("flags", [["--min-lr", "1", "--max-lr", "0.1"], ["--mode", "linear", "--min-lr", "0.01"],
                                   ["--max-lr", "-1"], ["--trial", "no-such-trial"]])
def test_cli_usage_errors_write_nothing(config_file: Path, tmp_path: Path, flags: list[str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    assert cli.main(["lr-find", "--config", str(config_file), "--device", "cpu", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m bench:") and "\n" not in err
    assert not out.exists() or not any(out.iterdir())
