"""yolo_vfl.ab.report and yolo_vfl.ab.plots on hand-built results and diagnoses (no model).

Summary rows, markdown, CSV (columns of the first runner), warnings (nothing learned, baseline near 0, not converged),
resolution, verdict lines, the legend under every table, the figures, the diagnosis text.
"""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import polars as pl
import pytest

from yolo_vfl.ab.evaluation import FP_KINDS, KINDS, summarize_detections
from yolo_vfl.ab.report import (
    _ap50_text,
    arm_order,
    common_recall,
    diagnosis_markdown,
    diagnosis_runs,
    diagnosis_stats,
    findings,
    resolution,
    source_warning,
    summarize,
    summary_csv_text,
    summary_markdown,
    verdict_lines,
)
from yolo_vfl.ab.results import SCHEMA, MissingMetricError, RunResult, final_rows, table_of
from yolo_vfl.checks import source_hash

NOT_CONVERGED = "not converged: conclusions are about an early stage of training"


def result(arm: str, seed: int, map5095: float, curve: list[float] | None = None, **kw) -> RunResult:
    """A hand-made run (as ``result.json`` holds it, read by ``RunResult.from_dict``), mAP50 twice mAP50-95.

    The default curve rises to ``map5095`` at epoch 3 and stays there for epochs 4-6 (converged: no gain over the
    last 3 epochs). Keyword arguments replace keys of the JSON form.
    """
    values = curve if curve is not None else [map5095 / 3, map5095 / 2, map5095, map5095, map5095, map5095]
    d = {
        "run": f"{arm}-s{seed}",
        "arm": arm,
        "seed": seed,
        "loss": arm,
        "overrides": {},
        "metrics": {"mAP50": 2 * map5095, "mAP50-95": map5095, "precision": 0.3, "recall": 0.2},
        "final_losses": {"train/box_loss": 1.0, "train/cls_loss": 2.0, "train/dfl_loss": 1.5},
        "curve": {"epoch": list(range(1, len(values) + 1)), "mAP50-95": values},
        "train_time_s": 60.0,
        "wall_time_s": 70.0,
        "epochs_done": len(values),
        "ranking": {
            "pearson": 0.11,
            "spearman": 0.12,
            "pearson_matched": 0.61,
            "spearman_matched": 0.62,
            "n_matched": 1,
            "points": {"conf": [0.1, 0.9], "iou": [0.0, 0.8]},
        },
        "versions": {"ultralytics": "8.4.190", "torch": "2.14.1"},
    }
    d.update(kw)
    return RunResult.from_dict(d)


def table_rows(md: str, heading: str) -> list[str]:
    """The table lines (header and separator excluded) of the section that starts with ``heading``."""
    section = md.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return lines[2:]


def epoch_table(curves: list[dict]) -> pl.DataFrame:
    """The results table (per-epoch precision and recall) of hand-made ``{arm, seed, curve}`` runs."""
    keys = {"precision": "metrics/precision(B)", "recall": "metrics/recall(B)"}
    rows = [
        (f"{c['arm']}-s{c['seed']}", c["arm"], c["seed"], e, keys[k], v)
        for c in curves
        for k in keys
        for e, v in zip(c["curve"]["epoch"], c["curve"][k])
    ]
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


# ----------------------------------------------------------------------------------------------- summary rows
def test_summarize_rows_and_markdown():
    """summarize: baseline first, means/stds, paired CI vs baseline, verdict from mAP50-95; markdown shows them.

    vfl 0.50, 0.52, 0.505 (mean 0.508333, std 0.010408) against bce 0.45, 0.46, 0.45: diffs 0.05, 0.06, 0.055.
    """
    results = [result("vfl", s, v) for s, v in [(0, 0.50), (1, 0.52), (2, 0.505)]]
    results += [result("bce", s, v) for s, v in [(0, 0.45), (1, 0.46), (2, 0.45)]]
    results += [result("qfl", 0, 0.30)]
    rows = summarize(results, baseline="bce")
    assert all(isinstance(r, dict) for r in rows)
    assert [r["arm"] for r in rows] == ["bce", "vfl", "qfl"]
    bce, vfl, qfl = rows
    assert bce["verdict"] == "baseline" and bce["mAP50-95_diff"] is None
    assert vfl["mAP50-95_mean"] == pytest.approx(0.50833333) and vfl["n_seeds"] == 3 and vfl["seeds"] == [0, 1, 2]
    assert vfl["mAP50-95_diff"] == pytest.approx(0.055) and vfl["verdict"] == "better"
    # mAP50 is twice mAP50-95: diffs 0.10, 0.12, 0.11, interval excludes 0
    assert vfl["mAP50_verdict"] == "better"
    assert vfl["precision_verdict"] == "no clear difference"  # identical everywhere: interval [0, 0]
    assert qfl["mAP50-95_std"] is None and qfl["verdict"] == "no clear difference (1 seed)"
    assert vfl["train_time_s_mean"] == 60.0 and vfl["train/cls_loss_mean"] == 2.0
    assert vfl["rank_pearson_matched_mean"] == pytest.approx(0.61) and vfl["epochs_done_mean"] == 6
    md = summary_markdown(rows, table_of(results), {"name": "t", "baseline": "bce", "commands": ["yolo-vfl ab x.yaml"]})
    assert "**better**" in md and "no clear difference (1 seed)" in md and "`yolo-vfl ab x.yaml`" in md
    assert "0.5083 ± 0.0104" in md


def test_arm_order_explicit_then_baseline_then_as_found():
    """Explicit order first, then the baseline, then as found, each arm once."""
    found = ["qfl", "vfl", "bce", "vfl"]
    assert arm_order(found, baseline="bce") == ["bce", "qfl", "vfl"]
    assert arm_order(found, order=["vfl"], baseline="bce") == ["vfl", "bce", "qfl"]
    assert arm_order(["x", "bce"]) == ["bce", "x"]


def test_missing_values_are_not_measured():
    """A metric absent from result.json (NaN in RunResult) is left out of the mean and shown as '-', never 'nan'."""
    bare = result("vfl", 1, 0.3, metrics={"mAP50-95": 0.3}, ranking=None, final_losses={})
    results = [result("bce", 0, 0.3), result("bce", 1, 0.3), result("vfl", 0, 0.32), bare]
    rows = summarize(results, baseline="bce")
    vfl = rows[1]
    assert vfl["precision_std"] is None and vfl["precision_n_pairs"] == 1
    assert vfl["mAP50-95_n_pairs"] == 2 and vfl["rank_pearson_std"] is None
    md = summary_markdown(rows, table_of(results), {"name": "t"})
    assert "nan" not in md.lower().replace("mean", "") and "None" not in md
    assert any(line.startswith("| vfl-s1 |") and "| - |" in line for line in md.splitlines())


# ----------------------------------------------------------------------------------------------- CSV
OLD_COLUMNS = (
    "arm,loss,overrides,n_seeds,seeds,mAP50_mean,mAP50_std,mAP50_diff,mAP50_diff_lo,mAP50_diff_hi,mAP50_n_pairs,"
    "mAP50_verdict,mAP50-95_mean,mAP50-95_std,mAP50-95_diff,mAP50-95_diff_lo,mAP50-95_diff_hi,mAP50-95_n_pairs,"
    "mAP50-95_verdict,precision_mean,precision_std,precision_diff,precision_diff_lo,precision_diff_hi,"
    "precision_n_pairs,precision_verdict,recall_mean,recall_std,recall_diff,recall_diff_lo,recall_diff_hi,"
    "recall_n_pairs,recall_verdict,verdict,train_time_s_mean,train_time_s_std,wall_time_s_mean,wall_time_s_std,"
    "epochs_done_mean,epochs_done_std,train/box_loss_mean,train/box_loss_std,train/cls_loss_mean,train/cls_loss_std,"
    "train/dfl_loss_mean,train/dfl_loss_std,rank_pearson_mean,rank_pearson_std,rank_spearman_mean,rank_spearman_std,"
    "rank_pearson_matched_mean,rank_pearson_matched_std,rank_spearman_matched_mean,rank_spearman_matched_std,warning"
).split(",")
NEW_COLUMNS = [
    "mAP50-95_gain_last3_mean",
    "mAP50-95_gain_last3_std",
    "mAP50-95_gain_last3_rel_mean",
    "mAP50-95_gain_last3_rel_std",
    "gain_epochs",
    "mAP50-95_diff_halfwidth",
    *(f"mAP50-95_curve_diff_{when}{end}" for when in ("earlier", "last") for end in ("", "_lo", "_hi")),
]


def test_csv_keeps_the_columns_and_values_of_the_first_runner():
    """summary.csv: today's columns in today's order and format (then the convergence ones, versions, command).

    The expected values are those the first runner's report wrote for the same runs (bce and vfl at 0.3, 2 seeds).
    """
    rows = summarize([result(a, s, 0.3) for a in ("bce", "vfl") for s in (0, 1)], baseline="bce")
    text = summary_csv_text(rows, {"versions": {"u": "1"}, "commands": ["c"]})
    header, bce, vfl = list(csv.reader(text.splitlines()))
    assert header == [*OLD_COLUMNS, *NEW_COLUMNS, "versions", "command"]
    n = len(OLD_COLUMNS)
    assert ",".join(bce[:n]) == (
        "bce,bce,,2,0 1,0.600000,0.000000,,,,0,baseline,0.300000,0.000000,,,,0,baseline,0.300000,0.000000,,,,0,"
        "baseline,0.200000,0.000000,,,,0,baseline,baseline,60.000000,0.000000,70.000000,0.000000,6.000000,0.000000,"
        "1.000000,0.000000,2.000000,0.000000,1.500000,0.000000,0.110000,0.000000,0.120000,0.000000,0.610000,0.000000,"
        "0.620000,0.000000,"
    )
    assert (
        vfl[OLD_COLUMNS.index("mAP50-95_verdict")] == "no clear difference" and vfl[OLD_COLUMNS.index("n_seeds")] == "2"
    )
    assert bce[n:] == ["0.000000", "0.000000", "0.000000", "0.000000", "3", "", *[""] * 6, "u 1", "c"]
    assert vfl[n + 5] == "0.000000"  # identical values: a zero-width interval


# ----------------------------------------------------------------------------------------------- warnings
def test_nothing_learned_warns_in_markdown_and_csv():
    """Every arm's mAP50-95 below 0.01: 'no clear difference' comes with a loud warning in summary.md and .csv."""
    results = [result(a, s, 0.001 + 0.0005 * s) for a in ("bce", "vfl") for s in (0, 1)]
    rows = summarize(results, baseline="bce")
    assert rows[1]["verdict"] == "no clear difference"  # the statistical verdict itself is unchanged
    assert len(rows[0]["warnings"]) == 1  # nothing learned says it all (no 'not converged' on top)
    md = summary_markdown(rows, table_of(results), {"name": "t", "baseline": "bce"})
    assert "nothing learned" in md.lower() and "below 0.01" in md
    warning_line = next(line for line in md.splitlines() if "nothing learned" in line.lower())
    assert warning_line.startswith("> **Warning")
    assert md.index(warning_line) < md.index("## Accuracy")  # at the top, before any table
    table = list(csv.DictReader(summary_csv_text(rows).splitlines()))
    assert all("nothing learned" in r["warning"] for r in table)


def test_baseline_near_zero_warns():
    """A baseline that learned nearly nothing makes a 'better' verdict say little: summary.md says so."""
    results = [result("bce", s, 0.002 + 0.001 * s) for s in (0, 1, 2)]
    results += [result("vfl", s, 0.2 + 0.01 * s) for s in (0, 1, 2)]
    rows = summarize(results, baseline="bce")
    assert rows[1]["verdict"] == "better"
    md = summary_markdown(rows, table_of(results), {"name": "t", "baseline": "bce"})
    assert "nothing learned" not in md.lower()
    assert re.search(r"baseline `bce`.*mAP50-95 .*below 0\.01", md)
    assert "near 0" in rows[1]["warning"] and "near 0" in rows[0]["warning"]
    assert NOT_CONVERGED not in rows[0]["warning"]  # flat curve; 'below 0.1' is not repeated for a baseline near 0


def test_healthy_experiment_has_no_warning():
    """Normal, converged values: no warning line, and an empty warning column."""
    results = [result(a, s, 0.3 + 0.01 * s) for a in ("bce", "vfl") for s in (0, 1)]
    rows = summarize(results, baseline="bce")
    md = summary_markdown(rows, table_of(results), {"name": "t", "baseline": "bce"})
    assert "Warning" not in md
    assert all(r["warning"] == "" and r["warnings"] == () for r in rows)


def test_source_hash_follows_the_code_not_the_place(tmp_path):
    """Same files elsewhere: same hash; one changed byte, a new file or a renamed file: another hash."""
    for name in ("a", "b"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "m.py").write_text("x = 1\n")
        (tmp_path / name / "sub" / "n.py").write_text("y = 2\n")
        (tmp_path / name / "notes.txt").write_text(name)  # not code: not counted
    a, b = tmp_path / "a", tmp_path / "b"
    first = source_hash(a)
    assert re.fullmatch(r"[0-9a-f]{12}", first) and source_hash(b) == first
    (b / "m.py").write_text("x = 2\n")
    assert source_hash(b) != first
    (b / "m.py").write_text("x = 1\n")
    (b / "sub" / "n.py").rename(b / "sub" / "o.py")
    assert source_hash(b) != first
    (b / "sub" / "o.py").rename(b / "sub" / "n.py")
    (b / "extra.py").write_text("")
    assert source_hash(b) != first
    assert re.fullmatch(r"[0-9a-f]{12}", source_hash())  # the installed package


def test_runs_of_different_code_are_flagged():
    """Two recorded sources: a warning naming both with their runs; one source or unrecorded ones: none."""
    old = [result(a, s, 0.3, versions={"yolo_vfl_source": "aaaaaaaaaaaa"}) for a in ("bce", "vfl") for s in (0, 1)]
    new = [result("qfl", s, 0.3, versions={"yolo_vfl_source": "bbbbbbbbbbbb"}) for s in (0, 1)]
    unrecorded = [result("mal", s, 0.3, versions={"ultralytics": "8.4.190"}) for s in (0, 1)]
    assert source_warning(old) is None and source_warning(old + unrecorded) is None
    text = source_warning(old + new + unrecorded)
    assert text.startswith("code changed during the experiment: the runs ran 2 different yolo_vfl sources")
    assert (
        "aaaaaaaaaaaa: 4 runs (bce-s0, bce-s1, vfl-s0, ...)" in text and "bbbbbbbbbbbb: 2 runs (qfl-s0, qfl-s1)" in text
    )
    rows = summarize(old + new, baseline="bce")
    assert all(source_warning(old + new) in r["warnings"] for r in rows)
    md = summary_markdown(rows, table_of(old + new), {"name": "t", "baseline": "bce"})
    assert "> **Warning: code changed during the experiment" in md
    assert any("code changed" in line for line in verdict_lines(rows))


# ----------------------------------------------------------------------------------------------- convergence
def test_convergence_gain_by_hand():
    """The last epoch with a value against the latest one at least 3 epochs before it.

    * 0.10, 0.20, 0.30, 0.36, 0.40 (epochs 1-5): epoch 5 vs epoch 2: gain 0.20, relative 0.20 / 0.20 = 1.0, 3 epochs.
    * 3 epochs 0.1, 0.2, 0.3: no epoch 0, so epoch 3 vs epoch 1: gain 0.2, relative 2.0, 2 epochs.
    * NaN at epoch 2 of the first curve: epoch 5 vs epoch 1 (the latest with a value <= 2): 0.30, 3.0, 4 epochs.
    * earlier value 0: no relative gain; one value: nothing.
    """

    def gain(curve: list[float]) -> tuple:
        bce = summarize([result("bce", 0, 0.3, curve)], baseline="bce")[0]
        return bce["mAP50-95_gain_last3_mean"], bce["mAP50-95_gain_last3_rel_mean"], bce["gain_epochs"]

    assert gain([0.10, 0.20, 0.30, 0.36, 0.40]) == pytest.approx((0.20, 1.0, 3))
    assert gain([0.1, 0.2, 0.3]) == pytest.approx((0.2, 2.0, 2))
    assert gain([0.10, math.nan, 0.30, 0.36, 0.40]) == pytest.approx((0.30, 3.0, 4))
    assert gain([0.0, 0.1, 0.2, 0.3]) == pytest.approx((0.3, None, 3))
    assert gain([0.3]) == (None, None, None) and gain([]) == (None, None, None)


def rising(final: float, rise: float) -> list[float]:
    """10 epochs ending at ``final``, ``final / (1 + rise)`` at epoch 7: relative gain ``rise`` over the last 3."""
    start = final / (1 + rise)
    return [start * e / 7 for e in range(1, 8)] + [start + (final - start) * k / 3 for k in (1, 2, 3)]


def test_still_rising_baseline_is_not_converged():
    """The baseline ends at 0.30 and rose 20% over its last 3 epochs (0.25 at epoch 7): 'not converged' in md and csv.

    Seed 0 rises 20%, seed 1 10% (0.30 / 1.1 = 0.272727 at epoch 7): mean relative gain 15.0%, std 7.1%; absolute
    gains 0.05 and 0.027273: mean 0.038636.
    """
    results = [result("bce", 0, 0.30, rising(0.30, 0.20)), result("bce", 1, 0.30, rising(0.30, 0.10))]
    results += [result("vfl", s, 0.31, rising(0.31, 0.02)) for s in (0, 1)]
    rows = summarize(results, baseline="bce")
    bce, vfl = rows
    assert bce["mAP50-95_gain_last3_rel_mean"] == pytest.approx(0.15) and bce["gain_epochs"] == 3
    assert bce["mAP50-95_gain_last3_mean"] == pytest.approx((0.05 + 0.30 - 0.30 / 1.1) / 2)
    assert vfl["mAP50-95_gain_last3_rel_mean"] == pytest.approx(0.02)
    assert len(bce["warnings"]) == 1 and bce["warnings"][0].startswith(NOT_CONVERGED)
    assert "+15.0%" in bce["warning"] and "below" not in bce["warning"]  # 0.30 >= 0.10: only the rise
    md = summary_markdown(rows, table_of(results), {"name": "t", "baseline": "bce"})
    assert md.index(NOT_CONVERGED) < md.index("## Accuracy")
    conv = table_rows(md, "## Convergence and resolution")
    assert conv[0].startswith("| bce | 0.3000 ± 0.0000 | 3 | +0.0386 ± ") and "+15.0% ± 7.1%" in conv[0]
    assert "(baseline)" in conv[0] and "+2.0% ± 0.0%" in conv[1]
    table = list(csv.DictReader(summary_csv_text(rows).splitlines()))
    assert float(table[0]["mAP50-95_gain_last3_rel_mean"]) == pytest.approx(0.15)
    assert float(table[0]["mAP50-95_gain_last3_mean"]) == pytest.approx(0.038636, abs=1e-6)
    assert table[0]["gain_epochs"] == "3" and NOT_CONVERGED in table[1]["warning"]


def test_curve_differences_show_whether_the_gap_moved_at_the_end():
    """The paired arm - baseline difference of the curves 3 epochs before the end and at the last epoch.

    bce ends at 0.30 rising 20% (0.25 at epoch 7), vfl at 0.27 rising 8% (0.25 at epoch 7), both seeds alike: the
    difference is 0.00 at epoch 7 and -0.03 at epoch 10 (the gap opened at the end); the baseline has none.
    """
    results = [result("bce", s, 0.30, rising(0.30, 0.20)) for s in (0, 1)]
    results += [result("vfl", s, 0.27, rising(0.27, 0.08)) for s in (0, 1)]
    bce, vfl = summarize(results, baseline="bce")
    assert bce["mAP50-95_curve_diff_earlier"] is None and bce["mAP50-95_curve_diff_last"] is None
    assert vfl["mAP50-95_curve_diff_earlier"] == pytest.approx(0.0, abs=1e-12)
    assert vfl["mAP50-95_curve_diff_last"] == pytest.approx(-0.03)
    md = summary_markdown([bce, vfl], table_of(results), {"name": "t", "baseline": "bce"})
    conv = table_rows(md, "## Convergence and resolution")
    assert conv[0].endswith("| (baseline) | (baseline) | (baseline) |")
    assert conv[1].endswith("| +0.0000 [+0.0000, +0.0000] | -0.0300 [-0.0300, -0.0300] |"), conv[1]
    table = list(csv.DictReader(summary_csv_text([bce, vfl]).splitlines()))
    assert table[0]["mAP50-95_curve_diff_last"] == "" and float(table[1]["mAP50-95_curve_diff_last"]) == -0.03
    one = summarize([result("bce", 0, 0.3, rising(0.3, 0.2)), result("vfl", 0, 0.3, rising(0.3, 0.2))])
    assert (
        one[1]["mAP50-95_curve_diff_last"] is not None and one[1]["mAP50-95_curve_diff_last_lo"] is None
    )  # one pair: no interval


def test_low_baseline_is_not_converged_and_small_rise_is_fine():
    """A flat baseline at 0.05 (< 0.10) is not converged; at 0.30 rising 2% (< 3%) it is."""
    low = [result("bce", s, 0.05) for s in (0, 1)] + [result("vfl", s, 0.06) for s in (0, 1)]
    warning = summarize(low, baseline="bce")[0]["warning"]
    assert warning.startswith(NOT_CONVERGED) and "0.0500 is below 0.1" in warning and "rose" not in warning
    fine = [result(a, s, 0.30, rising(0.30, 0.02)) for a in ("bce", "vfl") for s in (0, 1)]
    assert summarize(fine, baseline="bce")[0]["warnings"] == ()
    # only the baseline counts: another arm still rising does not make the experiment 'not converged'
    other = [result("bce", s, 0.30) for s in (0, 1)] + [result("vfl", s, 0.30, rising(0.30, 0.5)) for s in (0, 1)]
    assert summarize(other, baseline="bce")[0]["warnings"] == ()


def test_resolution_by_hand():
    """The half-widths of the paired 95% intervals: the smallest differences the run can see.

    vfl - bce by seed: 0.05, 0.06, 0.055 (sd 0.005): 4.302653 * 0.005 / sqrt(3) = 0.0124;
    qfl - bce: 0.01, 0.03, 0.02 (sd 0.01): 0.0248.
    """
    base = [0.45, 0.46, 0.45]
    results = [result("bce", s, v) for s, v in enumerate(base)]
    results += [result("vfl", s, v + d) for s, (v, d) in enumerate(zip(base, (0.05, 0.06, 0.055)))]
    results += [result("qfl", s, v + d) for s, (v, d) in enumerate(zip(base, (0.01, 0.03, 0.02)))]
    rows = summarize(results, baseline="bce")
    assert rows[1]["mAP50-95_diff_halfwidth"] == pytest.approx(4.302652729911275 * 0.005 / math.sqrt(3))
    text = resolution(rows)
    assert text == (
        "with 3 paired seeds the paired 95% intervals of mAP50-95 are ±0.0124 to ±0.0248: differences smaller than "
        "that cannot be seen"
    )
    md = summary_markdown(rows, table_of(results), {"name": "t", "baseline": "bce"})
    assert f"**Resolution: {text}.**" in md
    conv = table_rows(md, "## Convergence and resolution")
    assert "| ±0.0124 | +0.0550 [" in conv[1] and "| ±0.0248 | " in conv[2]
    table = list(csv.DictReader(summary_csv_text(rows).splitlines()))
    assert float(table[1]["mAP50-95_diff_halfwidth"]) == pytest.approx(0.012421, abs=1e-6)
    assert table[0]["mAP50-95_diff_halfwidth"] == ""


def test_resolution_with_one_seed_and_without_comparison():
    """One paired seed: no interval, no difference can be resolved; only the baseline: nothing to say."""
    rows = summarize([result("bce", 0, 0.3), result("vfl", 0, 0.31)], baseline="bce")
    assert "1 paired seed there is no interval" in resolution(rows)
    assert resolution(summarize([result("bce", 0, 0.3)], baseline="bce")) is None


# ----------------------------------------------------------------------------------------------- printed lines
def test_verdict_lines_name_arm_metric_verdict_and_warning():
    """What 'yolo-vfl ab' prints: one line per arm, then the warning."""
    results = [result("vfl", s, v) for s, v in [(0, 0.50), (1, 0.52), (2, 0.505)]]
    results += [result("bce", s, v) for s, v in [(0, 0.45), (1, 0.46), (2, 0.45)]]
    lines = verdict_lines(summarize(results, baseline="bce"))
    assert lines == ["  bce            mAP50-95 0.4533  baseline", "  vfl            mAP50-95 0.5083  better"]
    low = [result(a, 0, 0.0) for a in ("bce", "vfl")]
    lines = verdict_lines(summarize(low, baseline="bce"))
    assert len(lines) == 3 and lines[2].startswith("  Warning: nothing learned")
    assert verdict_lines([]) == []


# ----------------------------------------------------------------------------------------------- one seed, legends
def test_single_seed_shows_value_with_n1_and_no_interval():
    """One seed: the value with 'n=1', no ± and no interval; the difference table says why there is none."""
    results = [result("bce", 0, 0.0406), result("vfl", 0, 0.0500)]
    rows = summarize(results, baseline="bce")
    md = summary_markdown(rows, table_of(results), {"name": "t", "baseline": "bce"})
    assert "nan" not in md
    accuracy = table_rows(md, "## Accuracy")
    assert all("±" not in line for line in accuracy)
    assert "0.0406 (n=1)" in accuracy[0]
    diff = table_rows(md, "## Difference to")[1]
    assert "+0.0094" in diff and "[" not in diff  # no interval brackets
    assert "needs ≥ 2 paired seeds" in md


def test_every_na_and_dash_is_explained():
    """Each table that shows n/a, `-` or `(n=1)` is followed by the legend saying what they mean; no blank cells."""
    bare = result("qfl", 0, 0.2, ranking=None, final_losses={}, curve={"epoch": [1], "mAP50-95": [0.2]})
    bare = RunResult.from_dict({**bare.to_dict(), "metrics": {"mAP50": 0.4, "mAP50-95": 0.2, "precision": None}})
    results = [result("bce", s, 0.2 + 0.01 * s) for s in (0, 1)] + [result("vfl", 0, 0.25), bare]
    rows = summarize(results, baseline="bce")
    md = summary_markdown(rows, table_of(results), {"name": "t", "baseline": "bce"})
    sections = md.split("\n## ")[1:]
    assert any(s.startswith("Convergence") for s in sections)
    for section in sections:
        cells = [c.strip() for line in section.splitlines() if line.startswith("|") for c in line.strip("|").split("|")]
        assert "" not in cells, section.splitlines()[0]  # no blank cell
        legend = "\n".join(line for line in section.splitlines() if not line.startswith("|"))
        if any(c == "-" or c.startswith("-:") for c in cells):
            assert "`-`:" in legend, section.splitlines()[0]
        if any("n/a" in c for c in cells):
            assert "n/a:" in legend or "n/a (" in " ".join(cells), section.splitlines()[0]
        if any(c.endswith("(n=1)") for c in cells):
            assert "`(n=1)`:" in legend, section.splitlines()[0]


# ----------------------------------------------------------------------------------------------- diagnosis
def fake_run(arm: str, seed: int, extra_bg: int, tp_scores: tuple[float, float] = (0.5, 1.0)) -> tuple:
    """A hand-made run: 20 GT, TPs scored high, wrong-class FPs, ``extra_bg`` background FPs at mid scores.

    Returns its diagnosis rows (``final_rows``) and its detections (``detection_kinds`` with run and arm).
    """
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.uniform(*tp_scores, 15), rng.uniform(0.3, 0.9, 10), rng.uniform(0.4, 0.8, extra_bg)]
    kinds = np.r_[np.zeros(15, int), np.full(10, 2), np.full(extra_bg, 4)]
    values = summarize_detections(scores, kinds, np.zeros(scores.size, int), np.full(scores.size, 0.8), {0: 20})
    values = pl.concat([values, pl.DataFrame({"metric": ["n_images", "ultralytics/mAP50"], "value": [5.0, None]})])
    run = RunResult(f"{arm}-s{seed}", arm, seed, arm, {})
    detections = pl.DataFrame({"conf": scores, "kind": np.asarray(KINDS)[kinds]}).with_columns(
        run=pl.lit(run.run), arm=pl.lit(arm)
    )
    return final_rows(run, values), detections


def experiment(*runs: tuple) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The diagnosis table and the detections of ``fake_run`` runs."""
    return pl.concat([r[0] for r in runs]), pl.concat([r[1] for r in runs])


def test_diagnosis_stats_and_findings():
    """Per-arm mean and std over seeds; the statement names the FP kind that grows against the baseline."""
    table, _ = experiment(*(fake_run("vfl", s, 30) for s in (0, 1)), *(fake_run("bce", s, 2) for s in (0, 1, 2)))
    stats = diagnosis_stats(table, baseline="bce")
    rows = list(stats.iter_rows(named=True))
    assert [r["arm"] for r in rows] == ["bce", "vfl"] and rows[0]["n_seeds"] == 3 and rows[1]["seeds"] == [0, 1]
    bce_bg = table.filter((pl.col("arm") == "bce") & (pl.col("metric") == "background@0.25"))["value"]
    assert rows[0]["background@0.25_mean"] == pytest.approx(bce_bg.mean())
    assert rows[0]["background@0.25_std"] == pytest.approx(np.std(bce_bg.to_numpy(), ddof=1))
    assert rows[1]["wrong_class@0.25_mean"] == pytest.approx(10.0) and rows[1]["wrong_class@0.25_std"] == 0.0
    recall = common_recall(table, "bce")
    assert recall is not None and rows[0]["eq_recall"] == recall
    assert rows[0]["tp@eq_mean"] == rows[1]["tp@eq_mean"] == math.ceil(recall * 20 - 1e-9)  # equal recall: same TPs
    assert rows[1]["background@eq_mean"] > rows[0]["background@eq_mean"]
    text = findings(stats, diagnosis_runs(table, "bce"), "bce")
    assert len(text) == 1 and text[0].startswith("`vfl` vs `bce`")
    assert "**background** grows most" in text[0] and "equal recall" in text[0] and "paired by seed" in text[0]
    assert findings(stats, diagnosis_runs(table), "qfl")[0].startswith("No baseline arm")


@pytest.mark.parametrize("sign", [1, -1])
def test_ap50_finding_names_the_kind_that_narrows_the_gap_for_either_sign(sign):
    """AP50 gap +-0.1 (paired by seed); without background it is +-0.05, without duplicate +-0.15 (wider).

    Removing background narrows the gap whether the arm is ahead of the baseline or behind it; before, an arm ahead
    was told that removing the kind that widens its lead narrows it most.
    """
    base = {"ap50": 0.5, **{f"ap50_without_{k}": 0.5 for k in FP_KINDS}}
    arm = {**{k: v + sign * 0.1 for k, v in base.items()}, "ap50_without_background": 0.5 + sign * 0.05}
    arm["ap50_without_duplicate"] = 0.5 + sign * 0.15
    runs = pl.DataFrame([{"arm": a, "seed": s, **v} for a, v in (("bce", base), ("vfl", arm)) for s in (0, 1)])
    text = _ap50_text(runs, "vfl", "bce", 0.95)
    assert f"{sign * 0.1:+.4f}" in text and "removing **background** narrows it most" in text
    wider = runs.with_columns(
        pl.when(pl.col("arm") == "vfl").then(0.5 + sign * 0.2).otherwise(0.5).alias(f"ap50_without_{k}")
        for k in FP_KINDS
    )
    assert "removing no single kind narrows it" in _ap50_text(wider, "vfl", "bce", 0.95)


def test_diagnosis_without_true_positives_has_no_blank_values():
    """A model that found nothing (no TP: e.g. one epoch from scratch) gave 'Mean TP score per arm: bce , vfl .'."""
    runs = []
    for arm in ("bce", "vfl"):
        values = summarize_detections(np.array([0.2, 0.1, 0.05]), np.full(3, 4), np.zeros(3, int), np.zeros(3), {0: 5})
        values = pl.concat([values, pl.DataFrame({"metric": ["n_images", "ultralytics/mAP50"], "value": [2.0, None]})])
        runs.append(final_rows(RunResult(f"{arm}-s0", arm, 0, arm, {}), values))
    table = pl.concat(runs)
    md = diagnosis_markdown(
        diagnosis_stats(table, "bce"), diagnosis_runs(table, "bce"), {"name": "t", "baseline": "bce"}
    )
    line = next(s for s in md.splitlines() if s.startswith("Mean TP score per arm"))
    head = line.split(" Losses")[0]
    assert "bce n/a (no true positives)" in head and " ," not in head and not head.endswith(" .")
    for text in md.splitlines():
        if text.startswith("|"):
            assert "" not in [c.strip() for c in text.strip("|").split("|")], text  # no blank table cell
    assert "None" not in md and "nan" not in md
    assert "n/a (not recorded)" in md  # the unrecorded NMS IoU and max_det


def test_a_run_without_a_diagnosis_metric_is_named():
    """A run whose diagnosis lacks a metric (an old or broken cache) is a MissingMetricError naming both, not a '-'."""
    table, _ = experiment(fake_run("bce", 0, 2), fake_run("vfl", 0, 2))
    broken = table.filter((pl.col("run") != "vfl-s0") | (pl.col("metric") != "score_tp"))
    with pytest.raises(MissingMetricError, match="'score_tp' missing from run vfl-s0"):
        diagnosis_stats(broken, "bce")


def test_markdown_names_the_pretrained_start():
    """The summary names the pretrained start (fingerprint, weights, own mAP, build time)."""
    results = [result("bce", 0, 0.40), result("vfl", 0, 0.38)]
    meta = {
        "name": "ft",
        "baseline": "bce",
        "pretrain": {
            "fingerprint": "c34e3690d919792a",
            "sha256": "0123456789abcdef" * 4,
            "metrics": {"mAP50-95": 0.3671, "mAP50": 0.52},
            "train_time_s": 960,
            "spec": {"model": "yolo26n.yaml"},
        },
        "train": {"model": "yolov8n.yaml", "epochs": 15},  # the spec's default model: not what the runs start from
    }
    md = summary_markdown(summarize(results, baseline="bce"), table_of(results), meta)
    assert "`c34e3690d919792a`" in md and "mAP50-95 0.3671" in md and "16m00s" in md
    assert "(stock BCE; weights sha256 `0123456789ab`; mAP50-95 0.3671," in md  # the weights, not only the spec
    assert "- Start model: the project-made pretrained `yolo26n.yaml` checkpoint `c34e3690d919792a`" in md
    assert "- Shared training arguments: `epochs=15`" in md and "yolov8n" not in md
