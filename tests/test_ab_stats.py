"""yolo_vfl.ab.stats: means, paired differences and their Student-t intervals, verdicts, correlations (no model)."""

from __future__ import annotations

import math
import statistics
import warnings

import numpy as np
import pytest

from yolo_vfl.ab.stats import PairedDifference, correlations, finite, mean_std, paired_difference, verdict


def pearson(x: list[float], y: list[float]) -> float | None:
    """``correlations``' Pearson correlation over all points."""
    return correlations(x, y)["pearson"]


def spearman(x: list[float], y: list[float]) -> float | None:
    """``correlations``' Spearman correlation over all points."""
    return correlations(x, y)["spearman"]


def _half_width_in_se(diffs: list[float], level: float = 0.95) -> float:
    """The interval's half-width of ``diffs`` (arm minus a zero baseline) in standard errors: the t quantile used."""
    d = paired_difference(dict(enumerate(diffs)), dict.fromkeys(range(len(diffs)), 0.0), level=level)
    return d.half_width / (statistics.stdev(diffs) / math.sqrt(len(diffs)))


@pytest.mark.parametrize(
    "n, level, table",
    [(2, 0.95, 12.7062), (3, 0.95, 4.3027), (5, 0.95, 2.7764), (10, 0.95, 2.2622), (31, 0.95, 2.0423)]
    + [(2, 0.90, 6.3138), (10, 0.90, 1.8331), (5, 0.99, 4.6041)],
)
def test_interval_uses_table_t_quantiles(n, level, table):
    """The half-width is t((1 + level) / 2, n - 1) standard errors, t from printed tables (df = n - 1)."""
    diffs = [math.sin(i) for i in range(n)]  # any non-constant numbers
    assert _half_width_in_se(diffs, level) == pytest.approx(table, abs=1e-4)


def test_interval_df1_is_cauchy_and_level_is_checked():
    """df=1 is the Cauchy distribution: t(p, 1) = tan(pi (p - 1/2)); diffs -1, 1 have sd/sqrt(2) = 1.

    So the half-width is tan(pi level / 2): 1 at level 0.5, tan(0.4 pi) = 3.0777 at 0.8. A level outside (0, 1) is
    refused.
    """
    for level in (0.5, 0.8, 0.95):
        d = paired_difference({0: -1.0, 1: 1.0}, {0: 0.0, 1: 0.0}, level=level)
        assert d.half_width == pytest.approx(math.tan(math.pi * level / 2), rel=1e-10) and d.mean == 0.0
    for level in (0.0, 1.0, 95):
        with pytest.raises(ValueError, match="level"):
            paired_difference({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.0}, level=level)


def test_mean_std_one_value_has_no_std():
    """The sample std is undefined with one seed (None), ddof=1 otherwise; None and NaN are not measured."""
    assert mean_std([0.4]) == (0.4, None)
    m, s = mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0)
    assert mean_std([]) == (None, None)
    assert mean_std([None, math.nan, 2.0, 4.0]) == (3.0, pytest.approx(math.sqrt(2.0)))
    assert finite([1, None, math.inf, "x", True, np.float32(0.5)]) == [1.0, 0.5]


def test_paired_difference_interval_by_hand():
    """Paired differences seed by seed; the interval is mean +- t(0.975, n-1) sd / sqrt(n).

    diffs 0.05, 0.06, 0.055: mean 0.055, sd 0.005, half-width 4.302653 * 0.005 / sqrt(3) = 0.012421.
    """
    arm = {0: 0.50, 1: 0.52, 2: 0.505}
    base = {0: 0.45, 1: 0.46, 2: 0.45, 3: 0.9}  # seed 3 has no partner: ignored
    d = paired_difference(arm, base)
    diffs = [0.05, 0.06, 0.055]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)
    assert isinstance(d, PairedDifference)
    assert d.n == 3 and d.seeds == (0, 1, 2) and d.diffs == pytest.approx(diffs)
    assert d.mean == pytest.approx(mean) and d.std == pytest.approx(sd)
    assert d.lo == pytest.approx(mean - half) and d.hi == pytest.approx(mean + half)
    assert d.half_width == pytest.approx(half) and half == pytest.approx(0.012421, abs=1e-6)
    assert d.lo > 0 and verdict(d) == "better" and d.level == 0.95


def test_paired_difference_level_and_missing_values():
    """A 90% interval uses t(0.95, n-1); a seed with a missing (None or NaN) value on either side is left out."""
    d = paired_difference({0: 0.5, 1: 0.6, 2: math.nan, 3: None}, {0: 0.4, 1: 0.4, 2: 0.4, 3: 0.4}, level=0.9)
    # diffs 0.1, 0.2: mean 0.15, sd 0.0707107, half = t(0.95, 1) 6.313752 * 0.0707107 / sqrt(2) = 0.315688
    assert d.n == 2 and d.seeds == (0, 1)
    assert d.half_width == pytest.approx(6.313751514675 * math.sqrt(0.005) / math.sqrt(2))
    one = paired_difference({0: 0.9}, {0: 0.1})
    assert one.n == 1 and one.mean == pytest.approx(0.8) and one.lo is None and one.half_width is None


def test_verdict_rules():
    """better/worse only when the interval excludes zero; one seed or a straddling interval: no clear difference."""
    assert verdict(paired_difference({0: 0.3, 1: 0.31}, {0: 0.4, 1: 0.40})) == "worse"
    assert verdict(paired_difference({0: 0.5, 1: 0.3}, {0: 0.4, 1: 0.4})) == "no clear difference"
    one = paired_difference({0: 0.9}, {0: 0.1})
    assert one.lo is None and verdict(one) == "no clear difference (1 seed)"
    assert verdict(paired_difference({0: 0.9}, {1: 0.1})) == "n/a (no paired baseline run)"
    assert verdict(paired_difference({0: 0.4, 1: 0.4}, {0: 0.4, 1: 0.4})) == "no clear difference"


def test_spearman_with_ties_and_pearson_by_hand():
    """Spearman is Pearson of the tie-averaged ranks; monotone data gives 1.

    x = (10, 20, 20, 5) ranks (2, 3.5, 3.5, 1); y = (1, 2, 3, 4). Centered: dx = (-0.5, 1, 1, -1.5),
    dy = (-1.5, -0.5, 0.5, 1.5): sum dx dy = -1.5, sum dx^2 = 4.5, sum dy^2 = 5, r = -1.5 / sqrt(22.5) = -sqrt(0.1).
    """
    assert spearman([10, 20, 20, 5], [1, 2, 3, 4]) == pytest.approx(-math.sqrt(0.1))
    x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    assert spearman(x, y) == pytest.approx(1 - 6 * (1 + 1 + 1 + 1) / (5 * 24))  # no ties: 1 - 6 sum d^2/(n(n^2-1))
    assert spearman([1, 2, 3], [1, 8, 27]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # (1, 2, 3) vs (1, 3, 2): dx = (-1, 0, 1), dy = (-1, 1, 0): r = 1 / sqrt(2 * 2) = 0.5
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="differ in length"):
        pearson([1, 2], [1, 2, 3])


def test_undefined_correlations_are_none_without_warnings():
    """Fewer than 2 points, a constant variable or a NaN/inf give None, not NaN, an error or a SciPy warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for f in (pearson, spearman):
            assert f([1, 1, 1], [1, 2, 3]) is None and f([1, 2, 3], [5, 5, 5]) is None
            assert f([1], [2]) is None and f([], []) is None
            assert f([1, 2, math.nan], [1, 2, 3]) is None and f([1, 2, 3], [1, math.inf, 3]) is None
            assert f([1, 2], [2, 1]) == pytest.approx(-1.0)  # two points: defined


def test_correlations_all_and_matched_points():
    """Pearson/Spearman over all points and over those with IoU > 0."""
    conf = [0.9, 0.8, 0.3, 0.2, 0.1]
    iou = [0.9, 0.7, 0.5, 0.0, 0.0]
    c = correlations(conf, iou)
    assert c["n"] == 5 and c["n_matched"] == 3
    assert c["spearman_matched"] == pytest.approx(1.0)
    assert c["pearson"] == pytest.approx(float(np.corrcoef(conf, iou)[0, 1]))
    assert c["mean_iou"] == pytest.approx(2.1 / 5)
    empty = correlations([], [])
    assert empty["pearson"] is None and empty["mean_iou"] is None and empty["n"] == 0
