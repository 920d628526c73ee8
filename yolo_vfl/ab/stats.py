"""The statistics of the A/B report, each written once: Student t, means, paired differences, verdicts, correlations.

Pure numpy and ``math`` (no SciPy, no torch). Per arm and metric: mean and sample std over seeds (``mean_std``).
Against the baseline arm: the paired difference ``arm - baseline`` seed by seed (same seed = same initialization and
data order), its mean and two-sided Student-t interval ``mean +- t(0.975, n - 1) * sd / sqrt(n)``
(``paired_difference``); the ``verdict`` is ``better`` or ``worse`` only when the interval excludes zero. Its
half-width is the smallest difference the experiment can resolve. Ranking quality (GFL paper, arXiv 2006.04388):
Pearson and Spearman between confidence and IoU (``correlations``). The Student-t distribution is computed here
(regularized incomplete beta by a continued fraction; the quantile by bisection).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["t_cdf", "t_ppf", "finite", "mean_std", "PairedDifference", "paired_difference", "verdict", "rankdata"]
__all__ += ["pearson", "spearman", "correlations"]

_TINY = 1e-300


# ---------------------------------------------------------------------------------------------------- Student t
def _nonzero(v: float) -> float:
    return v if abs(v) > _TINY else _TINY


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 / _nonzero(1.0 - qab * x / qap)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        even = m * (b - m) * x / ((qam + m2) * (a + m2))
        odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        for aa in (even, odd):
            d = 1.0 / _nonzero(1.0 + aa * d)
            c = _nonzero(1.0 + aa / c)
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    bt = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return bt * _betacf(a, b, x) / a
    return 1.0 - bt * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom (ValueError when ``df <= 0``)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t: the ``t`` with ``t_cdf(t, df) == p`` (bisection to 1e-12; ``t_ppf(0.975, 2)`` 4.3027).

    ValueError when ``p`` is outside (0, 1) or ``df <= 0``.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 2.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------------------------------------------- means
def _is_finite(v: Any) -> bool:
    if v is None or isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def finite(values: Iterable[Any]) -> list[float]:
    """The finite numbers among ``values`` as floats (None, NaN, inf and non-numbers dropped)."""
    return [float(v) for v in values if _is_finite(v)]


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """``(mean, sample std with ddof=1)`` of the finite values; ``(None, None)`` without one, std None for one."""
    vals = finite(values)
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


@dataclass(frozen=True)
class PairedDifference:
    """The paired difference ``arm - baseline`` over the seeds both have, with its Student-t interval.

    Attributes:
        n: paired seeds.
        seeds: those seeds, ascending.
        diffs: ``arm[seed] - baseline[seed]`` per seed.
        mean: mean difference (None without a pair).
        std: sample std of the differences (None for fewer than 2 pairs).
        lo: lower end of the interval (None for fewer than 2 pairs).
        hi: upper end.
        level: confidence level of the interval.
    """

    n: int
    seeds: tuple[int, ...]
    diffs: tuple[float, ...]
    mean: float | None
    std: float | None
    lo: float | None
    hi: float | None
    level: float = 0.95

    @property
    def half_width(self) -> float | None:
        """Half the interval's width: differences smaller than this cannot be told from zero (None: no interval)."""
        if self.lo is None or self.hi is None:
            return None
        return (self.hi - self.lo) / 2.0


def paired_difference(values: Mapping[int, Any], baseline: Mapping[int, Any], level: float = 0.95) -> PairedDifference:
    """Paired difference ``values[seed] - baseline[seed]`` over the seeds both have a finite value for.

    Args:
        values: metric by seed for the arm (None or NaN: not measured, that seed is left out).
        baseline: metric by seed for the baseline arm.
        level: confidence level of the two-sided interval ``mean +- t((1 + level) / 2, n - 1) * std / sqrt(n)``.
    """
    seeds = tuple(sorted(s for s in values if s in baseline and _is_finite(values[s]) and _is_finite(baseline[s])))
    diffs = tuple(float(values[s]) - float(baseline[s]) for s in seeds)
    mean, std = mean_std(diffs)
    lo = hi = None
    if mean is not None and std is not None:
        half = t_ppf(0.5 + level / 2.0, len(diffs) - 1) * std / math.sqrt(len(diffs))
        lo, hi = mean - half, mean + half
    return PairedDifference(len(diffs), seeds, diffs, mean, std, lo, hi, level)


def verdict(diff: PairedDifference) -> str:
    """``better`` / ``worse`` when the interval excludes zero, else ``no clear difference``.

    Without an interval: ``no clear difference (1 seed)``, or ``n/a (no paired baseline run)`` without a pair.
    """
    if diff.n == 0:
        return "n/a (no paired baseline run)"
    if diff.lo is None or diff.hi is None:
        return "no clear difference (1 seed)"
    if diff.lo > 0:
        return "better"
    return "worse" if diff.hi < 0 else "no clear difference"


# ---------------------------------------------------------------------------------------------------- correlations
def rankdata(x: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x`` (flattened); ties get the average of their ranks (as ``scipy.stats.rankdata``)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        return np.zeros(0)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # start index of each run of equal values
    ends = np.r_[starts[1:], x.size]
    ranks = np.empty(x.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # mean of ranks start+1 .. end
    return ranks


def _pair(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"x and y differ in length: {x.size} != {y.size}")
    return x, y


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    """Pearson correlation of (N,) ``x`` and ``y``; None with fewer than 2 points or a constant variable.

    ValueError when ``x`` and ``y`` differ in length (also ``spearman``).
    """
    x, y = _pair(x, y)
    if x.size < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return None if denom == 0.0 else float(np.clip((dx * dy).sum() / denom, -1.0, 1.0))


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    """Spearman rank correlation (Pearson of the tie-averaged ranks); None where Pearson is undefined."""
    x, y = _pair(x, y)
    return pearson(rankdata(x), rankdata(y))


def correlations(conf: Sequence[float] | np.ndarray, iou: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Pearson and Spearman between confidence (N,) and IoU (N,), over all points and over those with IoU > 0.

    Keys ``n``, ``pearson``, ``spearman``, ``n_matched``, ``pearson_matched``, ``spearman_matched``, ``mean_iou``.
    """
    conf, iou = _pair(conf, iou)
    m = iou > 0
    return {
        "n": int(conf.size),
        "pearson": pearson(conf, iou),
        "spearman": spearman(conf, iou),
        "n_matched": int(m.sum()),
        "pearson_matched": pearson(conf[m], iou[m]),
        "spearman_matched": spearman(conf[m], iou[m]),
        "mean_iou": float(iou.mean()) if iou.size else None,
    }
