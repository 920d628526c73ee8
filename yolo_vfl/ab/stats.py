"""The statistics of the A/B report, each written once: means, paired differences, verdicts, correlations.

numpy and SciPy (Virtanen et al., "SciPy 1.0", Nature Methods 17, 261-272, 2020); no torch. Per arm and metric: mean
and sample std over seeds (``mean_std``). Against the baseline arm: the paired difference ``arm - baseline`` seed by
seed (same seed = same initialization and data order), its mean and two-sided Student-t interval
``mean +- t(0.975, n - 1) * sd / sqrt(n)`` with the quantile from ``scipy.stats.t.ppf`` (``paired_difference``); the
``verdict`` is ``better`` or ``worse`` only when the interval excludes zero. Its half-width is the smallest difference
the experiment can resolve. Ranking quality (GFL paper, arXiv 2006.04388): Pearson and Spearman between confidence and
IoU (``correlations``, by ``scipy.stats.pearsonr`` and ``spearmanr``; None where undefined).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import scipy.stats

__all__ = ["finite", "mean_std", "PairedDifference", "paired_difference", "verdict", "pearson", "spearman"]
__all__ += ["correlations"]


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
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


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
        level: confidence level of the two-sided interval ``mean +- t((1 + level) / 2, n - 1) * std / sqrt(n)``
            (ValueError unless in (0, 1)).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    seeds = tuple(sorted(s for s in values if s in baseline and _is_finite(values[s]) and _is_finite(baseline[s])))
    diffs = tuple(float(values[s]) - float(baseline[s]) for s in seeds)
    mean, std = mean_std(diffs)
    lo = hi = None
    if mean is not None and std is not None:
        half = float(scipy.stats.t.ppf(0.5 + level / 2.0, len(diffs) - 1)) * std / math.sqrt(len(diffs))
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
_Array = Union[Sequence[float], np.ndarray]


def _pair(x: _Array, y: _Array) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"x and y differ in length: {x.size} != {y.size}")
    return x, y


def _correlation(fn: Callable[..., Any], x: _Array, y: _Array) -> float | None:
    """``fn(x, y)[0]`` for a SciPy correlation ``fn``; None where undefined (SciPy would warn and give NaN, or raise).

    Undefined: fewer than 2 points, a non-finite value, or a constant variable.
    """
    x, y = _pair(x, y)
    if x.size < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()) or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(fn(x, y)[0])


def pearson(x: _Array, y: _Array) -> float | None:
    """Pearson correlation of (N,) ``x``, ``y`` (``scipy.stats.pearsonr``); None: < 2 points, a NaN/inf, a constant.

    ValueError when ``x`` and ``y`` differ in length (also ``spearman``).
    """
    return _correlation(scipy.stats.pearsonr, x, y)


def spearman(x: _Array, y: _Array) -> float | None:
    """Spearman rank correlation (``scipy.stats.spearmanr``: Pearson of the tie-averaged ranks); None as ``pearson``."""
    return _correlation(scipy.stats.spearmanr, x, y)


def correlations(conf: _Array, iou: _Array) -> dict[str, Any]:
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
