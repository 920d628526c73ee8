"""yolo_vfl.ab.stats: Student t, means, paired differences and their intervals, verdicts, correlations (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from yolo_vfl.ab.stats import (
    PairedDifference,
    correlations,
    finite,
    mean_std,
    paired_difference,
    pearson,
    rankdata,
    spearman,
    t_cdf,
    t_ppf,
    verdict,
)


def test_t_quantiles():
    """Student-t quantiles match the tables (two-sided 95%: df 1, 2, 4, 9, 30, large)."""
    for df, q in [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423), (1e9, 1.9600)]:
        assert t_ppf(0.975, df) == pytest.approx(q, abs=1e-4)
    assert t_ppf(0.025, 4) == pytest.approx(-2.7764, abs=1e-4)
    assert t_ppf(0.5, 3) == 0.0


def test_t_cdf_by_hand_and_errors():
    """df=1 is the Cauchy distribution: cdf(t) = 1/2 + atan(t)/pi; symmetric; bad arguments are refused."""
    for t in (-3.0, -0.5, 0.0, 1.0, 7.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-10)
    assert t_cdf(math.inf, 5) == 1.0 and t_cdf(-math.inf, 5) == 0.0
    assert t_cdf(t_ppf(0.9, 7), 7) == pytest.approx(0.9, abs=1e-10)
    with pytest.raises(ValueError):
        t_cdf(1.0, 0)
    with pytest.raises(ValueError):
        t_ppf(1.0, 3)


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


def test_rankdata_ties_and_spearman_by_hand():
    """Ties get average ranks; Spearman is Pearson of the ranks; monotone data gives 1."""
    np.testing.assert_allclose(rankdata([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    assert rankdata([]).size == 0
    x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    assert spearman(x, y) == pytest.approx(1 - 6 * (1 + 1 + 1 + 1) / (5 * 24))  # no ties: 1 - 6 sum d^2/(n(n^2-1))
    assert spearman([1, 2, 3], [1, 8, 27]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None and spearman([1], [2]) is None
    with pytest.raises(ValueError, match="differ in length"):
        pearson([1, 2], [1, 2, 3])


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
