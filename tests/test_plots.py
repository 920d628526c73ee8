"""yolo_vfl.ab.plots: the figures and the report files they are written with, on hand-made runs (no model)."""

from __future__ import annotations

import csv

import polars as pl
import pytest
from test_ab_report import epoch_table, experiment, fake_run, result

from yolo_vfl.ab import plots
from yolo_vfl.ab.plots import plot_curves, plot_fp_scores, plot_pr_curves, plot_ranking, write_diagnosis, write_report
from yolo_vfl.ab.report import diagnosis_csv_text, diagnosis_markdown, diagnosis_runs, diagnosis_stats
from yolo_vfl.ab.results import RunResult, table_of

PNG = b"\x89PNG\r\n\x1a\n"


def captured_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Make plots._save_figure keep each figure (and still write the file)."""
    figures: list = []
    save = plots._save_figure

    def keep(fig, path):
        figures.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save_figure", keep)
    return figures


def points(results: list[RunResult]) -> dict:
    """The ranking scatter points of hand-made runs, by run."""
    return {r.run: (r.ranking or {}).get("points") for r in results}


def integer_ticks(ax) -> bool:
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    return bool(ticks) and all(float(t).is_integer() for t in ticks)


def test_write_report_files(tmp_path):
    """write_report writes summary.csv/.md, curves.png and ranking.png; the CSV has versions and the command."""
    results = [result(a, s, 0.4 + 0.01 * s + (0.02 if a == "vfl" else 0)) for a in ("bce", "vfl") for s in (0, 1)]
    paths = write_report(tmp_path, results, {"name": "t", "baseline": "bce", "commands": ["yolo-vfl ab"]})
    assert sorted(paths) == ["curves.png", "ranking.png", "summary.csv", "summary.md"]
    for name in ("summary.csv", "summary.md", "curves.png", "ranking.png"):
        assert paths[name].stat().st_size > 0
    assert paths["curves.png"].read_bytes()[:8] == PNG and paths["ranking.png"].read_bytes()[:8] == PNG
    rows = list(csv.DictReader(open(paths["summary.csv"])))
    assert [r["arm"] for r in rows] == ["bce", "vfl"]
    assert rows[1]["verdict"] == "better" and float(rows[1]["mAP50-95_diff"]) == pytest.approx(0.02)
    assert "ultralytics 8.4.190" in rows[0]["versions"] and rows[0]["command"] == "yolo-vfl ab"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files
    with pytest.raises(ValueError, match="nothing to report"):
        write_report(tmp_path, [], {})


def test_written_csv_carries_the_warning(tmp_path):
    """write_report: the warning is in summary.csv, next to the verdict that 'yolo-vfl ab' prints."""
    results = [result(a, 0, 0.0) for a in ("bce", "vfl")]
    write_report(tmp_path, results, {"name": "t", "baseline": "bce"})
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert "nothing learned" in rows[1]["warning"]
    assert "nothing learned" in (tmp_path / "summary.md").read_text().lower()


def test_ranking_titles_show_the_iou_gt0_correlation(tmp_path, monkeypatch):
    """ranking.png: each title leads with the IoU>0 correlation (the README's claim), then the all-detections one."""
    figures = captured_figures(monkeypatch)
    results = [result(a, s, 0.3) for a in ("bce", "vfl") for s in (0, 1)]
    plot_ranking(table_of(results), tmp_path / "ranking.png", points(results))
    titles = [ax.get_title() for ax in figures[0].axes]
    assert len(titles) == 2
    for t in titles:
        assert "IoU>0" in t and "0.610" in t and "0.620" in t  # Pearson / Spearman over matched detections
        assert "all detections" in t and "0.110" in t
        assert t.index("0.610") < t.index("0.110")  # the IoU>0 one first


def test_ranking_without_measurement_explains_na(tmp_path, monkeypatch):
    """A run without ranking: 'n/a' in its title and the note under the figure."""
    figures = captured_figures(monkeypatch)
    results = [result("bce", 0, 0.3), result("vfl", 0, 0.3, ranking=None)]
    plot_ranking(table_of(results), tmp_path / "r.png", points(results))
    assert "n/a" in figures[0].axes[1].get_title()
    assert any(t.get_text().startswith("n/a: not measured") for t in figures[0].texts)


def test_epoch_curves_have_integer_ticks_and_baseline_in_black(tmp_path, monkeypatch):
    """curves.png: whole-number epoch ticks (3 epochs gave 1.00, 1.25, ...); the baseline is the thick black line."""
    figures = captured_figures(monkeypatch)
    plot_curves(table_of([result(a, 0, 0.3, [0.1, 0.2, 0.3]) for a in ("vfl", "bce")]), tmp_path / "curves.png")
    ax = figures[0].axes[0]
    assert integer_ticks(ax)
    first = ax.get_lines()[0]
    assert first.get_label() == "bce (1 seed)" and first.get_color() == "black" and first.get_linewidth() > 2


def test_many_arms_stay_readable(tmp_path, monkeypatch):
    """16 arms: tab20 colours with alternating dashes and the legend outside the axes."""
    figures = captured_figures(monkeypatch)
    results = [result("bce", 0, 0.3)] + [result(f"a{i}", 0, 0.3 + 0.001 * i) for i in range(15)]
    plot_curves(table_of(results), tmp_path / "curves.png")
    ax = figures[0].axes[0]
    styles = {line.get_linestyle() for line in ax.get_lines()}
    assert styles == {"-", "--"} and ax.get_legend().get_bbox_to_anchor() is not None
    assert len(ax.get_legend().get_texts()) == 16


def test_pr_curves_have_integer_epoch_ticks(tmp_path, monkeypatch):
    """pr_curves.png: whole-number epoch ticks (3 epochs gave 1.00, 1.25, ...)."""
    figures = captured_figures(monkeypatch)
    curve = {"epoch": [1, 2, 3], "precision": [0.1, 0.2, 0.3], "recall": [0.1] * 3}
    plot_pr_curves(epoch_table([{"arm": "bce", "seed": 0, "curve": curve}]), tmp_path / "pr.png")
    assert all(integer_ticks(ax) for ax in figures[0].axes)


def test_diagnosis_files_from_hand_made_runs(tmp_path):
    """diagnosis.md / .csv text and both plots from hand-made runs (no model), written by write_diagnosis."""
    table, detections = experiment(*(fake_run("bce", s, 2) for s in (0, 1)), *(fake_run("qfl", s, 25) for s in (0, 1)))
    stats = diagnosis_stats(table, baseline="bce")
    meta = {"name": "t", "baseline": "bce", "missing": ["qfl-s2"]}
    md = diagnosis_markdown(stats, diagnosis_runs(table, "bce"), meta)
    for part in ("## Findings", "## Detections at conf ≥ 0.25", "equal recall", "F1-optimal", "qfl-s2", "fp_scores"):
        assert part in md, part
    rows = list(csv.DictReader(diagnosis_csv_text(stats).splitlines()))
    assert [r["arm"] for r in rows] == ["bce", "qfl"] and float(rows[1]["background@0.25_mean"]) > 0
    assert rows[0]["seeds"] == "0 1"
    curves = [
        {"arm": a, "seed": s, "curve": {"epoch": [1, 2, 3], "precision": [0.1, 0.2, 0.3], "recall": [0.2, 0.3, None]}}
        for a in ("bce", "qfl")
        for s in (0, 1)
    ]
    paths = write_diagnosis(
        tmp_path / "d", pl.concat([table, epoch_table(curves)]), detections, meta | {"arms": ["qfl", "bce"]}
    )
    assert sorted(paths) == ["diagnosis.csv", "diagnosis.md", "fp_scores.png", "pr_curves.png"]
    assert [r["arm"] for r in csv.DictReader(open(paths["diagnosis.csv"]))] == ["qfl", "bce"]
    for f in ("fp_scores.png", "pr_curves.png"):
        assert paths[f].read_bytes()[:8] == PNG
    plot_fp_scores(stats, detections, tmp_path / "fp.png")
    assert (tmp_path / "fp.png").read_bytes()[:8] == PNG
    assert not list((tmp_path / "d").glob(".*.tmp"))


def test_one_epoch_smoke_run_keeps_every_arm_visible(tmp_path, monkeypatch):
    """seeds=[0] epochs=1: three arms with one equal value each are drawn side by side, with markers, integer ticks."""
    figures = captured_figures(monkeypatch)
    plot_curves(table_of([result(a, 0, 0.0, [0.0]) for a in ("bce", "vfl", "qfl")]), tmp_path / "curves.png")
    ax = figures[0].axes[0]
    xs = [tuple(line.get_xdata()) for line in ax.get_lines()]
    assert len(xs) == 3 and len(set(xs)) == 3  # not hidden under each other
    assert all(line.get_marker() == "o" for line in ax.get_lines())
    assert integer_ticks(ax) and [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]] == [1.0]


def test_ranking_too_early_says_so(tmp_path, monkeypatch):
    """Every detection below the operating confidence: the panel says 'too early to rank' instead of a flat cloud."""
    figures = captured_figures(monkeypatch)
    results = [result(a, 0, 0.0) for a in ("bce", "vfl")]
    low = {r.run: {"iou": [0.0, 0.1, 0.3], "conf": [0.001, 0.002, 0.01]} for r in results}
    plot_ranking(table_of(results), tmp_path / "ranking.png", low)
    for ax in figures[0].axes:
        assert any("too early to rank" in t.get_text() for t in ax.texts)
    figures.clear()
    plot_ranking(table_of(results), tmp_path / "ranking.png", points([result("bce", 0, 0.3), result("vfl", 0, 0.3)]))
    assert not any("too early" in t.get_text() for ax in figures[0].axes for t in ax.texts)
