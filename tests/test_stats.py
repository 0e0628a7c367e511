"""bench.stats: A/B verdicts and history change detection on planted, seeded samples."""

import dataclasses
import math

import numpy as np
import pytest

from bench.stats import Comparison, changes_beyond_noise, compare_samples, noise_band, verdict

pytestmark = pytest.mark.filterwarnings("error")  # no warning may leak out of the statistics


def noisy(center: float, n: int, rel_noise: float, seed: int) -> list[float]:
    """``n`` samples around ``center`` with relative gaussian noise, reproducible."""
    rng = np.random.default_rng(seed)
    return (center * (1.0 + rel_noise * rng.standard_normal(n))).tolist()


def imgs_per_s_ab(slowdown: float, n: int = 12, rel_noise: float = 0.05) -> tuple[list[float], list[float]]:
    return noisy(1000.0, n, rel_noise, seed=1), noisy(1000.0 * (1.0 - slowdown), n, rel_noise, seed=2)


# --- compare_samples + verdict -------------------------------------------------------------------


@pytest.mark.parametrize("higher_is_better", [True, False], ids=["img/s", "seconds"])
def test_planted_30pct_slowdown_is_a_regression(higher_is_better: bool) -> None:
    base, new = imgs_per_s_ab(0.30)
    if not higher_is_better:  # the same runs recorded as seconds per image
        base, new = [1.0 / x for x in base], [1.0 / x for x in new]
    c = compare_samples(base, new, higher_is_better=higher_is_better)
    assert verdict(c, max_regression=0.05) == "regression"
    assert c.p_value < 0.01
    assert not c.ci_low <= 1.0 <= c.ci_high
    assert c.slowdown == pytest.approx(0.30, abs=0.04)
    assert 0.0 < c.slowdown_low <= c.slowdown <= c.slowdown_high
    assert (c.n_base, c.n_new) == (12, 12)


def test_slowdown_means_the_same_in_both_orientations() -> None:
    base, new = imgs_per_s_ab(0.30, n=11)  # odd n: median(1/x) == 1/median(x) exactly
    fast = compare_samples(base, new, higher_is_better=True)
    slow = compare_samples([1 / x for x in base], [1 / x for x in new], higher_is_better=False)
    assert slow.ratio == pytest.approx(1.0 / fast.ratio)
    assert slow.slowdown == pytest.approx(fast.slowdown)
    assert slow.p_value == pytest.approx(fast.p_value)


def test_steps_taking_1_3x_as_long_lose_23pct_of_throughput() -> None:
    base = noisy(0.010, 12, 0.01, seed=3)
    c = compare_samples(base, [1.3 * t for t in base], higher_is_better=False)
    assert c.ratio == pytest.approx(1.3)
    assert c.slowdown == pytest.approx(1.0 - 1.0 / 1.3)  # not 0.3


@pytest.mark.parametrize("seed", [10, 20, 30])
def test_same_distribution_is_no_change(seed: int) -> None:
    c = compare_samples(noisy(1000.0, 12, 0.05, seed), noisy(1000.0, 12, 0.05, seed + 1), higher_is_better=True)
    assert verdict(c, max_regression=0.05) == "no change"
    assert c.ci_low <= 1.0 <= c.ci_high


def test_small_significant_slowdown_within_the_limit_is_no_change() -> None:
    base, new = imgs_per_s_ab(0.03, rel_noise=0.005)
    c = compare_samples(base, new, higher_is_better=True)
    assert c.p_value < 0.01 and c.slowdown_low > 0  # significant...
    assert verdict(c, max_regression=0.05) == "no change"  # ...but within the limit
    assert verdict(c, max_regression=0.02) == "regression"


def test_big_slowdown_from_two_samples_per_side_is_not_significant() -> None:
    c = compare_samples([1000.0, 1010.0], [500.0, 505.0], higher_is_better=True)
    assert c.slowdown == pytest.approx(0.5, abs=0.01)
    assert c.p_value == pytest.approx(1 / 3)  # exact test: the most extreme 2 vs 2 split
    assert verdict(c, max_regression=0.05) == "no change"


def test_four_samples_per_side_can_be_a_regression() -> None:
    c = compare_samples([1000.0, 1010.0, 990.0, 1005.0], [500.0, 505.0, 495.0, 502.0], higher_is_better=True)
    assert c.p_value == pytest.approx(2 / 70)  # exact test: the most extreme 4 vs 4 split
    assert verdict(c, max_regression=0.05) == "regression"


def test_significant_speedup_is_an_improvement() -> None:
    base, new = imgs_per_s_ab(-0.20)
    c = compare_samples(base, new, higher_is_better=True)
    assert c.slowdown < 0 and c.slowdown_high < 0
    assert verdict(c, max_regression=0.05) == "improvement"


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    base, new = imgs_per_s_ab(0.10)
    first = compare_samples(base, new, higher_is_better=True, seed=7)
    assert compare_samples(base, new, higher_is_better=True, seed=7) == first
    other = compare_samples(base, new, higher_is_better=True, seed=8)
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)
    assert other.ratio == first.ratio and other.p_value == first.p_value


def test_wider_confidence_gives_a_wider_interval() -> None:
    base, new = imgs_per_s_ab(0.10)
    narrow = compare_samples(base, new, higher_is_better=True, confidence=0.5)
    wide = compare_samples(base, new, higher_is_better=True, confidence=0.99)
    assert wide.ci_low <= narrow.ci_low <= narrow.ci_high <= wide.ci_high


def test_comparison_is_frozen() -> None:
    c = compare_samples([1.0, 2.0], [1.0, 2.0], higher_is_better=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.ratio = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_identical_samples_give_p_1_and_a_point_interval(higher_is_better: bool) -> None:
    c = compare_samples([5.0] * 4, [5.0] * 4, higher_is_better=higher_is_better)
    assert c.p_value == 1.0
    assert c.ratio == c.ci_low == c.ci_high == 1.0
    assert c.slowdown == c.slowdown_low == c.slowdown_high == 0.0
    assert verdict(c, max_regression=0.0) == "no change"


def test_one_sample_per_side_is_never_a_regression() -> None:
    c = compare_samples([1000.0], [100.0], higher_is_better=True)
    assert c.p_value == 1.0 and not math.isnan(c.ci_low)
    assert verdict(c, max_regression=0.05) == "no change"


@pytest.mark.parametrize(
    ("base", "new", "match"),
    [
        ([], [1.0], "base"),
        ([1.0], [], "new"),
        ([1000.0, 0.0, 990.0], [900.0, 910.0], "positive"),
        ([0.0, 0.0], [1.0, 2.0], "positive"),
        ([1.0, -2.0], [1.0, 2.0], "positive"),
        ([1.0, float("nan")], [1.0, 2.0], "finite"),
        ([1.0, 2.0], [1.0, float("inf")], "finite"),
    ],
)
def test_bad_samples_raise(base: list[float], new: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compare_samples(base, new, higher_is_better=True)


@pytest.mark.parametrize("kwargs", [{"confidence": 1.0}, {"confidence": 0.0}, {"n_boot": 0}])
def test_bad_bootstrap_settings_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        compare_samples([1.0, 2.0], [1.0, 2.0], higher_is_better=True, **kwargs)


def test_bad_verdict_settings_raise() -> None:
    c = Comparison(1.0, 1.0, 1.0, 1.0, 2, 2, higher_is_better=True, confidence=0.95)
    with pytest.raises(ValueError):
        verdict(c, max_regression=-0.1)
    with pytest.raises(ValueError):
        verdict(c, max_regression=0.05, alpha=0.0)


# --- noise_band + changes_beyond_noise -----------------------------------------------------------


def test_noise_band_is_the_10th_to_90th_percentile() -> None:
    samples = [float(x) for x in range(1, 12)]  # 1..11
    assert noise_band(samples) == pytest.approx((2.0, 10.0))
    assert noise_band([3.0]) == (3.0, 3.0)
    with pytest.raises(ValueError):
        noise_band([])


def test_planted_step_is_marked_and_noise_is_not() -> None:
    points = [noisy(1000.0, 8, 0.02, seed=s) for s in range(3)]
    points += [noisy(700.0, 8, 0.02, seed=s) for s in range(3, 6)]
    assert changes_beyond_noise(points) == [False, False, False, True, False, False]


def test_pure_noise_marks_nothing() -> None:
    points = [noisy(1000.0, 8, 0.03, seed=s) for s in range(100, 110)]
    assert changes_beyond_noise(points) == [False] * 10


def test_significant_change_below_min_change_is_not_marked() -> None:
    points = [noisy(1000.0, 12, 0.001, seed=1), noisy(990.0, 12, 0.001, seed=2)]  # 1%, clearly significant
    assert changes_beyond_noise(points, min_change=0.02) == [False, False]
    assert changes_beyond_noise(points, min_change=0.005) == [False, True]


def test_points_with_fewer_than_two_samples_are_not_marked() -> None:
    big, small = noisy(1000.0, 8, 0.01, seed=1), noisy(500.0, 8, 0.01, seed=2)
    assert changes_beyond_noise([big, [500.0], small, [1000.0]]) == [False, False, False, False]
    assert changes_beyond_noise([big, small]) == [False, True]
    assert changes_beyond_noise([big]) == [False]
    assert changes_beyond_noise([]) == []


def test_changes_beyond_noise_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"points\[1\]"):
        changes_beyond_noise([[1.0, 2.0], []])
    with pytest.raises(ValueError, match="positive"):
        changes_beyond_noise([[1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(ValueError):
        changes_beyond_noise([[1.0, 2.0]], alpha=1.5)
