"""The statistics of the A/B report: means, paired differences with Student-t intervals, verdicts, correlations.

A paired difference is ``arm - baseline`` seed by seed; its interval is ``mean +- t((1 + level) / 2, n - 1) * sd /
sqrt(n)`` (``scipy.stats.t``) and the ``verdict`` is better or worse only when it excludes zero. Ranking quality (GFL,
arXiv 2006.04388): Pearson and Spearman correlation of confidence and IoU (``scipy.stats``; None where undefined).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats

__all__ = ["finite", "mean_std", "PairedDifference", "paired_difference", "verdict", "correlations"]


def _is_finite(v: Any) -> bool:
    """True for a finite number that is not a bool."""
    try:
        return not isinstance(v, bool) and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def finite(values: Iterable[Any]) -> list[float]:
    """The finite numbers among ``values`` as floats (None, NaN, inf, bools and non-numbers dropped)."""
    return [float(v) for v in values if _is_finite(v)]


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """``(mean, sample std with ddof=1)`` of the finite values; ``(None, None)`` without one, std None for one."""
    vals = finite(values)
    return (float(np.mean(vals)) if vals else None), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


@dataclass(frozen=True)
class PairedDifference:
    """``arm - baseline`` over the ``n`` paired ``seeds`` (``diffs`` per seed) with its t-interval at ``level``.

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
    """``values[seed] - baseline[seed]`` over the seeds with a finite value on both sides, with its t-interval.

    Raises:
        ValueError: ``level`` not in (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    seeds = tuple(sorted(s for s in values if s in baseline and _is_finite(values[s]) and _is_finite(baseline[s])))
    diffs = tuple(float(values[s]) - float(baseline[s]) for s in seeds)
    mean, std = mean_std(diffs)
    if mean is None or std is None:
        return PairedDifference(len(diffs), seeds, diffs, mean, std, None, None, level)
    half = float(scipy.stats.t.ppf(0.5 + level / 2.0, len(diffs) - 1)) * std / math.sqrt(len(diffs))
    return PairedDifference(len(diffs), seeds, diffs, mean, std, mean - half, mean + half, level)


def verdict(diff: PairedDifference) -> str:
    """``better`` / ``worse`` when the interval excludes zero, else ``no clear difference`` (and why)."""
    if diff.n == 0:
        return "n/a (no paired baseline run)"
    if diff.lo is None or diff.hi is None:
        return "no clear difference (1 seed)"
    return "better" if diff.lo > 0 else "worse" if diff.hi < 0 else "no clear difference"


def _correlation(name: str, x: np.ndarray, y: np.ndarray) -> float | None:
    """``scipy.stats.<name>(x, y)``'s statistic; None for under 2 points, a non-finite value or a constant."""
    if x.size < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()) or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(getattr(scipy.stats, name)(x, y)[0])


def correlations(conf: Sequence[float] | np.ndarray, iou: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Pearson and Spearman correlation of (N,) confidences ``conf`` and IoUs ``iou``, also over IoU > 0.

    Returns:
        ``n``, ``pearson``, ``spearman``, ``n_matched``, ``pearson_matched``, ``spearman_matched`` (IoU > 0) and
        ``mean_iou`` (None: undefined).

    Raises:
        ValueError: ``conf`` and ``iou`` differ in length.
    """
    conf, iou = np.asarray(conf, dtype=np.float64).ravel(), np.asarray(iou, dtype=np.float64).ravel()
    if conf.size != iou.size:
        raise ValueError(f"conf and iou differ in length: {conf.size} != {iou.size}")
    out: dict[str, Any] = {}
    for suffix, keep in (("", np.ones(conf.size, dtype=bool)), ("_matched", iou > 0)):
        out[f"n{suffix}"] = int(keep.sum())
        out |= {f"{name}{suffix}": _correlation(f"{name}r", conf[keep], iou[keep]) for name in ("pearson", "spearman")}
    return out | {"mean_iou": float(iou.mean()) if iou.size else None}
