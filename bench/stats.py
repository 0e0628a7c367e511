"""Statistics behind a throughput A/B verdict, as pure functions of recorded samples.

No I/O, no clocks, no torch: every function takes the samples a run already recorded (per-repeat
img/s, per-step seconds, ...) and returns numbers. Everything is deterministic (the bootstrap is
seeded), so the same samples always give the same verdict.

What the numbers mean (``compare_samples`` -> ``Comparison``):

- ``ratio``: median(new) / median(base), in the samples' own unit. For img/s a ratio of 0.7 is
  slower; for seconds per step a ratio of 1.3 is slower.
- ``ci_low``, ``ci_high``: the ``confidence`` (default 95%) percentile bootstrap interval of that
  ratio. Each side is resampled independently (with replacement, its own size), the median ratio
  is recomputed ``n_boot`` times, and the interval is the central ``confidence`` share of those
  ratios. The generator is seeded (``seed``), so the interval is reproducible. A numpy bootstrap
  is used rather than ``scipy.stats.bootstrap`` because that one refuses one-sample sides (the
  config allows ``repeats = 1``) and renamed its seeding argument across releases.
- ``p_value``: two-sided Mann-Whitney U (``scipy.stats.mannwhitneyu``, ``method="auto"``): the
  chance of seeing rank sums at least this lopsided if both sides came from one distribution. It
  assumes nothing about the noise's shape, and an outlier repeat (a neighbour's job on a shared
  GPU) moves it by one rank only. With few samples it cannot get small: the exact test's smallest
  two-sided p is 1/3 for 2 vs 2, 0.1 for 3 vs 3, 0.029 for 4 vs 4 and 0.0022 for 6 vs 6, so with
  distinct values below 4 samples per side nothing is significant at alpha = 0.05. Tied values
  make scipy switch to the normal approximation, which can go lower (3 identical values against 3
  other identical values gave 0.047): measured floats rarely tie, coarse GPU event times can.
  When every sample on both sides is the same value, p is 1.0 (no evidence of any difference).
- ``slowdown``: the fraction of throughput that ``new`` lost against ``base`` (positive = slower,
  negative = faster), the same meaning in both orientations. With higher-is-better samples (img/s)
  it is ``1 - ratio``; with lower-is-better samples (seconds) it is ``1 - 1/ratio``, because
  throughput is the reciprocal of time: steps that take 1.3x as long deliver 1/1.3 = 77% of the
  throughput, a 23% slowdown. ``slowdown_low``, ``slowdown_high`` are the bootstrap interval mapped
  through the same function (a percentile interval maps exactly through a monotone function).

``verdict`` turns a ``Comparison`` into "regression", "improvement" or "no change" (its docstring
has the rules). ``noise_band`` and ``changes_beyond_noise`` serve ``bench history``: the spread of
one commit's samples, and which consecutive commits differ beyond it.

All samples must be finite and positive (img/s and seconds both are); anything else, and empty
sample lists, raise ``ValueError`` rather than dividing by zero or returning NaN.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

REGRESSION = "regression"
IMPROVEMENT = "improvement"
NO_CHANGE = "no change"


@dataclass(frozen=True)
class Comparison:
    """``new`` against ``base``; see the module docstring for what each number means."""

    ratio: float  # median(new) / median(base)
    ci_low: float  # bootstrap percentile interval of ratio
    ci_high: float
    p_value: float  # two-sided Mann-Whitney U
    n_base: int
    n_new: int
    higher_is_better: bool  # True for img/s, False for seconds
    confidence: float  # of the interval

    @property
    def slowdown(self) -> float:
        """Fraction of throughput lost (positive = slower, negative = faster)."""
        return _slowdown(self.ratio, self.higher_is_better)

    @property
    def slowdown_low(self) -> float:
        """Lower end of the slowdown's interval."""
        return min(self._slowdown_ends())

    @property
    def slowdown_high(self) -> float:
        """Upper end of the slowdown's interval."""
        return max(self._slowdown_ends())

    def _slowdown_ends(self) -> tuple[float, float]:
        return _slowdown(self.ci_low, self.higher_is_better), _slowdown(self.ci_high, self.higher_is_better)


def _slowdown(ratio: float, higher_is_better: bool) -> float:
    throughput_ratio = ratio if higher_is_better else 1.0 / ratio
    return 1.0 - throughput_ratio


def _samples(values: Sequence[float], name: str) -> np.ndarray:
    """``values`` as a float array; ValueError when empty, non-finite or not positive."""
    a = np.asarray(values, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name}: need a non-empty flat list of samples, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: samples must be finite, got {a.tolist()}")
    if np.any(a <= 0):
        raise ValueError(f"{name}: samples must be positive (img/s or seconds), got {a.tolist()}")
    return a


def _check_fraction(value: float, name: str) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")


def _mann_whitney_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value; 1.0 when all of ``a`` and ``b`` are one value."""
    if np.all(a == a[0]) and np.all(b == a[0]):
        return 1.0
    from scipy.stats import mannwhitneyu  # here: importing scipy.stats costs every `python -m bench` ~1 s

    return float(mannwhitneyu(a, b, alternative="two-sided", method="auto").pvalue)


def _bootstrap_medians(a: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    return np.median(a[idx], axis=1)


def _bootstrap_ratio_ci(
    base: np.ndarray, new: np.ndarray, confidence: float, n_boot: int, seed: int
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    ratios = _bootstrap_medians(new, n_boot, rng) / _bootstrap_medians(base, n_boot, rng)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return float(low), float(high)


def compare_samples(
    base: Sequence[float],
    new: Sequence[float],
    *,
    higher_is_better: bool,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare ``new`` samples with ``base`` samples (both img/s, or both seconds).

    Raises ValueError for empty or non-positive samples, ``confidence`` outside (0, 1) or
    ``n_boot`` < 1. One sample per side is accepted: the interval then collapses (to a point
    for 1 vs 1) and p is large, so such a comparison never counts as a regression.
    """
    b, n = _samples(base, "base"), _samples(new, "new")
    _check_fraction(confidence, "confidence")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    low, high = _bootstrap_ratio_ci(b, n, confidence, n_boot, seed)
    return Comparison(
        ratio=float(np.median(n) / np.median(b)),
        ci_low=low,
        ci_high=high,
        p_value=_mann_whitney_p(b, n),
        n_base=int(b.size),
        n_new=int(n.size),
        higher_is_better=higher_is_better,
        confidence=confidence,
    )


def verdict(c: Comparison, max_regression: float, alpha: float = 0.05) -> str:
    """"regression", "improvement" or "no change" for one comparison.

    - "regression": all three of (1) ``c.slowdown > max_regression`` (the point estimate: slower
      by more than the allowed fraction of throughput), (2) ``c.p_value < alpha`` and (3)
      ``c.slowdown_low > 0`` (the whole interval is on the slower side, i.e. it excludes
      no change). A large slowdown that is not significant, and a significant one within the
      limit, are both "no change": a regression needs both the size and the significance.
    - "improvement": ``c.slowdown < 0``, ``c.p_value < alpha`` and ``c.slowdown_high < 0``
      (faster, significantly, whole interval on the faster side), whatever the size.
    - "no change": everything else.

    ``max_regression`` is a fraction of throughput (0.05 = 5% fewer img/s), ``alpha`` in (0, 1).
    """
    if max_regression < 0:
        raise ValueError(f"max_regression must be >= 0, got {max_regression}")
    _check_fraction(alpha, "alpha")
    significant = c.p_value < alpha
    if significant and c.slowdown > max_regression and c.slowdown_low > 0:
        return REGRESSION
    if significant and c.slowdown < 0 and c.slowdown_high < 0:
        return IMPROVEMENT
    return NO_CHANGE


def noise_band(samples: Sequence[float]) -> tuple[float, float]:
    """The 10th and 90th percentiles of one commit's samples (linear interpolation).

    This describes the machine's run-to-run spread: where most single repeats of this commit land.
    It is chosen over the bootstrap interval of the median because it needs no seed, does not
    shrink as samples are added (the noise does not shrink either), and one outlier repeat does
    not widen it the way min-max would (with fewer than about 10 samples it still moves toward
    min-max). Whether two commits really differ is ``changes_beyond_noise``'s job, not the band's.
    One sample gives a zero-width band. Raises ValueError for empty or non-positive samples.
    """
    a = _samples(samples, "samples")
    low, high = np.percentile(a, [10.0, 90.0])
    return float(low), float(high)


def _changed(prev: np.ndarray, cur: np.ndarray, alpha: float, min_change: float) -> bool:
    if prev.size < 2 or cur.size < 2:
        return False
    relative = abs(float(np.median(cur) / np.median(prev)) - 1.0)
    return relative > min_change and _mann_whitney_p(prev, cur) < alpha


def changes_beyond_noise(
    points: Sequence[Sequence[float]], alpha: float = 0.05, min_change: float = 0.02
) -> list[bool]:
    """For consecutive commits' sample sets (oldest first), which commit changed the numbers.

    Entry i (i >= 1) is True when point i differs from point i-1 both significantly (two-sided
    Mann-Whitney p < alpha) and by more than ``min_change`` in median (``|median_i /
    median_{i-1} - 1| > min_change``, either direction). Entry 0 is always False (nothing before
    it). When point i or point i-1 has fewer than 2 samples the entry is False: one sample says
    nothing about noise, so no change can be told (below 4 samples per side Mann-Whitney cannot
    reach p < 0.05 anyway). Empty sample sets, non-positive samples, ``alpha`` outside (0, 1) or a
    negative ``min_change`` raise ValueError.
    """
    _check_fraction(alpha, "alpha")
    if min_change < 0:
        raise ValueError(f"min_change must be >= 0, got {min_change}")
    arrays = [_samples(p, f"points[{i}]") for i, p in enumerate(points)]
    flags = [_changed(prev, cur, alpha, min_change) for prev, cur in zip(arrays, arrays[1:])]
    return [False] * min(len(arrays), 1) + flags
