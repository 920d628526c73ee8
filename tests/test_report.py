"""Edge cases of the A/B report: nothing learned, one seed, n/a legends, ranking.png titles, integer epoch ticks."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from yolo_vfl import report
from yolo_vfl.report import plot_curves, plot_ranking, summarize, summary_csv_text, summary_markdown, write_report


def result(arm: str, seed: int, map5095: float, **kw) -> dict:
    """A hand-made result dict as ``run_one`` writes it (mAP50 twice mAP50-95)."""
    return {
        "run": f"{arm}-s{seed}",
        "arm": arm,
        "seed": seed,
        "loss": arm,
        "overrides": {},
        "metrics": {"mAP50": 2 * map5095, "mAP50-95": map5095, "precision": 0.3, "recall": 0.2},
        "final_losses": {"train/box_loss": 1.0, "train/cls_loss": 2.0, "train/dfl_loss": 1.5},
        "curve": {"epoch": [1, 2, 3], "mAP50-95": [map5095 / 3, map5095 / 2, map5095]},
        "train_time_s": 60.0,
        "wall_time_s": 70.0,
        "epochs_done": 3,
        "ranking": {
            "pearson": 0.11,
            "spearman": 0.12,
            "pearson_matched": 0.61,
            "spearman_matched": 0.62,
            "n_matched": 1,
            "points": {"conf": [0.1, 0.9], "iou": [0.0, 0.8]},
        },
        **kw,
    }


def table_rows(md: str, heading: str) -> list[str]:
    """The table lines (header and separator excluded) of the section that starts with ``heading``."""
    section = md.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return lines[2:]


def captured_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Make report._save_figure keep each figure (and still write the file)."""
    figures: list = []
    save = report._save_figure

    def keep(fig, path):
        figures.append(fig)
        return save(fig, path)

    monkeypatch.setattr(report, "_save_figure", keep)
    return figures


# ----------------------------------------------------------------------------------------------- nothing learned
def test_nothing_learned_warns_in_markdown_and_csv():
    """Every arm's mAP50-95 below 0.01: 'no clear difference' comes with a loud warning in summary.md and .csv."""
    results = [result(a, s, 0.001 + 0.0005 * s) for a in ("bce", "vfl") for s in (0, 1)]
    rows = summarize(results, baseline="bce")
    assert rows[1]["verdict"] == "no clear difference"  # the statistical verdict itself is unchanged
    md = summary_markdown(rows, results, {"name": "t", "baseline": "bce"})
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
    md = summary_markdown(rows, results, {"name": "t", "baseline": "bce"})
    assert "nothing learned" not in md.lower()
    assert re.search(r"baseline `bce`.*mAP50-95 .*below 0\.01", md)
    assert "near 0" in rows[1]["warning"] and "near 0" in rows[0]["warning"]


def test_healthy_experiment_has_no_warning():
    """Normal values: no warning line, and an empty warning column."""
    results = [result(a, s, 0.3 + 0.01 * s) for a in ("bce", "vfl") for s in (0, 1)]
    rows = summarize(results, baseline="bce")
    md = summary_markdown(rows, results, {"name": "t", "baseline": "bce"})
    assert "Warning" not in md
    assert all(r["warning"] == "" for r in rows)


def test_written_csv_carries_the_warning(tmp_path):
    """write_report: the warning is in summary.csv, next to the verdict that 'yolo-vfl ab' prints."""
    results = [result(a, 0, 0.0) for a in ("bce", "vfl")]
    write_report(tmp_path, results, {"name": "t", "baseline": "bce"})
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert "nothing learned" in rows[1]["warning"]
    assert "nothing learned" in (tmp_path / "summary.md").read_text().lower()


# ----------------------------------------------------------------------------------------------- one seed
def test_single_seed_shows_value_with_n1_and_no_interval():
    """One seed: the value with 'n=1', no ± and no interval; the difference table says why there is none."""
    results = [result("bce", 0, 0.0406), result("vfl", 0, 0.0500)]
    rows = summarize(results, baseline="bce")
    md = summary_markdown(rows, results, {"name": "t", "baseline": "bce"})
    assert "nan" not in md
    accuracy = table_rows(md, "## Accuracy")
    assert all("±" not in line for line in accuracy)
    assert "0.0406 (n=1)" in accuracy[0]
    diff = table_rows(md, "## Difference to")[1]
    assert "+0.0094" in diff and "[" not in diff  # no interval brackets
    assert "needs ≥ 2 paired seeds" in md


# ----------------------------------------------------------------------------------------------- n/a and '-' legends
def test_every_na_and_dash_is_explained():
    """Each table that shows n/a or '-' is followed by a legend line saying what it means there; no blank cells."""
    bare = result("qfl", 0, 0.2)
    del bare["ranking"], bare["final_losses"]
    bare["metrics"]["precision"] = None
    results = [result("bce", s, 0.2 + 0.01 * s) for s in (0, 1)] + [result("vfl", 0, 0.25), bare]
    rows = summarize(results, baseline="bce")
    md = summary_markdown(rows, results, {"name": "t", "baseline": "bce"})
    sections = md.split("\n## ")[1:]
    for section in sections:
        cells = [c.strip() for line in section.splitlines() if line.startswith("|") for c in line.strip("|").split("|")]
        assert "" not in cells, section.splitlines()[0]  # no blank cell
        legend = "\n".join(line for line in section.splitlines() if not line.startswith("|"))
        if any(c == "-" or c.startswith("-:") for c in cells):
            assert "`-`:" in legend, section.splitlines()[0]
        if any("n/a" in c for c in cells):
            assert "n/a:" in legend or "n/a (" in " ".join(cells), section.splitlines()[0]


# ----------------------------------------------------------------------------------------------- plots
def test_ranking_titles_show_the_iou_gt0_correlation(tmp_path, monkeypatch):
    """ranking.png: each title leads with the IoU>0 correlation (the README's claim), then the all-detections one."""
    figures = captured_figures(monkeypatch)
    results = [result(a, s, 0.3) for a in ("bce", "vfl") for s in (0, 1)]
    plot_ranking(results, tmp_path / "ranking.png")
    titles = [ax.get_title() for ax in figures[0].axes]
    assert len(titles) == 2
    for t in titles:
        assert "IoU>0" in t and "0.610" in t and "0.620" in t  # Pearson / Spearman over matched detections
        assert "all detections" in t and "0.110" in t
        assert t.index("0.610") < t.index("0.110")  # the IoU>0 one first


def test_epoch_curves_have_integer_ticks(tmp_path, monkeypatch):
    """curves.png: epochs are whole numbers, so are the x ticks (3 epochs gave 1.00, 1.25, ...)."""
    figures = captured_figures(monkeypatch)
    plot_curves([result(a, 0, 0.3) for a in ("bce", "vfl")], tmp_path / "curves.png")
    ax = figures[0].axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_report_layer_does_not_import_torch():
    """The report module stays importable without torch (a pure function of result dicts)."""
    source = Path(report.__file__).read_text()
    assert not re.search(r"^\s*(import torch|from torch)", source, re.M)
