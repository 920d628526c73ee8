"""The statistics of the A/B report, each written once: means, paired differences, verdicts, correlations.

numpy and SciPy (Virtanen et al., Nature Methods 17, 261-272, 2020). Against the baseline arm: the paired difference
``arm - baseline`` seed by seed, its mean and Student-t interval ``mean +- t((1 + level) / 2, n - 1) * sd / sqrt(n)``
(``scipy.stats.t.ppf``); the ``verdict`` is better or worse only when the interval excludes zero. Ranking quality (GFL,
arXiv 2006.04388): Pearson and Spearman between confidence and IoU (``scipy.stats``; None where undefined).
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
_Array = Union[Sequence[float], np.ndarray]


def _is_finite(v: Any) -> bool:
    try:
        return not isinstance(v, bool) and v is not None and math.isfinite(float(v))
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
    """``arm - baseline`` over the ``n`` paired ``seeds`` (``diffs`` per seed) with its interval at ``level``.

    ``mean`` is None without a pair; ``std``, ``lo`` and ``hi`` are None below 2 pairs.
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
        """Half the interval: the smallest difference that can be told from zero (None: no interval)."""
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2.0


def paired_difference(values: Mapping[int, Any], baseline: Mapping[int, Any], level: float = 0.95) -> PairedDifference:
    """``values[seed] - baseline[seed]`` over the seeds both have a finite value for, with its t-interval.

    Raises:
        ValueError: ``level`` not in (0, 1).
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
    """``better`` / ``worse`` when the interval excludes zero, else ``no clear difference`` (and why)."""
    if diff.n == 0:
        return "n/a (no paired baseline run)"
    if diff.lo is None or diff.hi is None:
        return "no clear difference (1 seed)"
    return "better" if diff.lo > 0 else "worse" if diff.hi < 0 else "no clear difference"


def _correlation(fn: Callable[..., Any], x: _Array, y: _Array) -> float | None:
    """``fn(x, y)[0]``; None for fewer than 2 points, a non-finite value or a constant (ValueError: lengths differ)."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"x and y differ in length: {x.size} != {y.size}")
    if x.size < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()) or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(fn(x, y)[0])


def pearson(x: _Array, y: _Array) -> float | None:
    """Pearson correlation of (N,) ``x`` and ``y`` (``scipy.stats.pearsonr``; None where undefined)."""
    return _correlation(scipy.stats.pearsonr, x, y)


def spearman(x: _Array, y: _Array) -> float | None:
    """Spearman rank correlation (``scipy.stats.spearmanr``; None where undefined)."""
    return _correlation(scipy.stats.spearmanr, x, y)


def correlations(conf: _Array, iou: _Array) -> dict[str, Any]:
    """``n``, ``pearson``, ``spearman``, and over IoU > 0 ``n_matched``, ``*_matched``; ``mean_iou``."""
    conf, iou = np.asarray(conf, dtype=np.float64).ravel(), np.asarray(iou, dtype=np.float64).ravel()
    out = {"n": int(conf.size), "pearson": pearson(conf, iou), "spearman": spearman(conf, iou)}
    m = iou > 0
    return out | {
        "n_matched": int(m.sum()),
        "pearson_matched": pearson(conf[m], iou[m]),
        "spearman_matched": spearman(conf[m], iou[m]),
        "mean_iou": float(iou.mean()) if iou.size else None,
    }
