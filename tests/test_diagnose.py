"""The diagnosis: classification of detections, summaries, aggregation, report files, CLI, one tiny end-to-end run."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import IMGSZ, train_tiny

from yolo_vfl.cli import CLIError
from yolo_vfl.diagnose import (
    FP_KINDS,
    KINDS,
    aggregate,
    classify_detections,
    common_recall,
    diagnose_experiment,
    diagnosis_csv_text,
    diagnosis_markdown,
    findings,
    plot_fp_scores,
    plot_pr_curves,
    summarize_detections,
)
from yolo_vfl.experiment import cli_ab

GT_BOXES = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], dtype=float)
GT_CLS = np.array([0, 0, 1])


def names(result):
    return [KINDS[k] for k in result["kind"]]


def test_each_kind():
    """TP, duplicate, wrong class, localization (IoU in [0.1, 0.5)) and background (IoU < 0.1) on hand-made boxes."""
    det = np.array(
        [
            [0, 0, 10, 10],  # tp on gt 0
            [0, 0, 10, 9],  # duplicate of gt 0 (IoU 0.9)
            [40, 0, 50, 10],  # class 0 on the class-1 gt: wrong class
            [20, 0, 27, 10],  # IoU 0.7 with gt 1 but scored lowest: tp (gt 1 still free)
            [0, 0, 10, 3],  # IoU 0.3 with gt 0: localization
            [100, 100, 110, 110],  # nowhere: background
        ],
        dtype=float,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.6, 0.5])
    cls = np.array([0, 0, 0, 0, 0, 0])
    r = classify_detections(det, scores, cls, GT_BOXES, GT_CLS)
    assert names(r) == ["tp", "duplicate", "wrong_class", "tp", "localization", "background"]
    assert r["gt"].tolist() == [0, -1, -1, 1, -1, -1]
    assert r["iou"][0] == pytest.approx(1.0) and r["iou"][3] == pytest.approx(0.7)
    assert r["iou"][4] == pytest.approx(0.3) and r["iou"][5] == 0.0


def test_confidence_order_decides_tp_and_duplicate():
    """The higher-scored of two detections on one ground truth is the TP, whatever the input order."""
    det = np.array([[0, 0, 10, 8], [0, 0, 10, 10]], dtype=float)  # the better box is scored higher, listed second
    r = classify_detections(det, np.array([0.3, 0.9]), np.array([0, 0]), GT_BOXES[:1], GT_CLS[:1])
    assert names(r) == ["duplicate", "tp"]
    r = classify_detections(det, np.array([0.9, 0.3]), np.array([0, 0]), GT_BOXES[:1], GT_CLS[:1])
    assert names(r) == ["tp", "duplicate"]


def test_tp_takes_the_best_unmatched_ground_truth():
    """COCO: a detection whose best ground truth is taken matches the next free one above 0.5, not a duplicate."""
    gt = np.array([[0, 0, 10, 10], [1, 0, 11, 10]], dtype=float)  # two overlapping same-class objects (IoU 0.82)
    det = np.array([[0, 0, 10, 10], [0.5, 0, 10.5, 10]], dtype=float)
    r = classify_detections(det, np.array([0.9, 0.8]), np.array([0, 0]), gt, np.array([0, 0]))
    assert names(r) == ["tp", "tp"] and r["gt"].tolist() == [0, 1]
    # the same detections on a single object: the second one is a duplicate
    r = classify_detections(det, np.array([0.9, 0.8]), np.array([0, 0]), gt[:1], np.array([0]))
    assert names(r) == ["tp", "duplicate"]


def test_duplicate_before_wrong_class_and_thresholds():
    """Duplicate beats wrong class; IoU exactly 0.5 matches, exactly 0.1 is localization; no GT means background."""
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    det = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    r = classify_detections(det, np.array([0.9, 0.8]), np.array([0, 0]), gt, np.array([0, 1]))
    assert names(r) == ["tp", "duplicate"]
    half = np.array([[0, 0, 10, 5], [0, 0, 10, 1]], dtype=float)  # IoU 0.5 and 0.1 with gt 0
    r = classify_detections(half, np.array([0.9, 0.8]), np.array([0, 0]), gt[:1], np.array([0]))
    assert names(r) == ["tp", "localization"]
    r = classify_detections(half, np.array([0.9, 0.8]), np.array([0, 0]), np.zeros((0, 4)), np.zeros(0))
    assert names(r) == ["background", "background"]
    empty = classify_detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0), gt, np.array([0, 1]))
    assert empty["kind"].size == 0


def test_threshold_prefix_is_classified_alone():
    """The detections above a threshold are classified exactly as without the lower-scored ones (greedy order)."""
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 80, (12, 2))
    gt = np.concatenate([gt, gt + rng.uniform(5, 20, (12, 2))], 1)
    gt_cls = rng.integers(0, 3, 12)
    det = gt[rng.integers(0, 12, 60)] + rng.normal(0, 3, (60, 4))
    scores, cls = rng.uniform(0, 1, 60), rng.integers(0, 3, 60)
    full = classify_detections(det, scores, cls, gt, gt_cls)
    keep = scores >= 0.5
    part = classify_detections(det[keep], scores[keep], cls[keep], gt, gt_cls)
    assert full["kind"][keep].tolist() == part["kind"].tolist()
    assert set(names(full)) >= {"tp", "duplicate", "wrong_class"}


def test_summarize_counts_thresholds_and_ap():
    """Counts per threshold, missed GT, F1 threshold, recall grid, histograms and AP50 costs on a hand-made run."""
    # kinds by descending score: bg 0.9, tp 0.8, tp 0.6, wrong 0.4, tp 0.3, loc 0.2, dup 0.1 (classes: all 0)
    scores = np.array([0.9, 0.8, 0.6, 0.4, 0.3, 0.2, 0.1])
    kinds = np.array([4, 0, 0, 2, 0, 3, 1])
    s = summarize_detections(scores, kinds, np.zeros(7, int), np.full(7, 0.7), {0: 4})
    assert s["n_gt"] == 4 and s["n_det"] == 7
    assert s["counts"] == {"tp": 3, "duplicate": 1, "wrong_class": 1, "localization": 1, "background": 1}
    at = s["at"]["0.25"]
    assert at["counts"]["tp"] == 3 and at["fp"] == 2 and at["missed_gt"] == 1 and at["precision"] == pytest.approx(0.6)
    assert s["at"]["0.5"]["counts"] == {"tp": 2, "duplicate": 0, "wrong_class": 0, "localization": 0, "background": 1}
    # F1: top 3 -> P 2/3 R 1/2 (0.571); top 5 -> P 3/5 R 3/4 (0.667, best); all 7 -> P 3/7 R 3/4 (0.545)
    assert s["at"]["f1"]["threshold"] == pytest.approx(0.3) and s["at"]["f1"]["f1"] == pytest.approx(2 / 3)
    assert s["mean_score"]["tp"] == pytest.approx((0.8 + 0.6 + 0.3) / 3) and s["tp_mean_iou"]["all"] == pytest.approx(
        0.7
    )
    grid = s["recall_grid"]
    i = grid["recall"].index(0.5)  # 2 TPs: reached at score 0.6, with the background detection above
    assert grid["threshold"][i] == pytest.approx(0.6) and grid["counts"]["background"][i] == 1
    assert grid["threshold"][grid["recall"].index(0.76)] is None  # 4th TP never found
    assert sum(sum(s["hist"][k]) for k in KINDS) == 7 and len(s["hist"]["edges"]) == len(s["hist"]["tp"]) + 1
    # AP50: the background detection above every TP costs the most; the duplicate below them all next to nothing
    # (only through the 101-point grid hitting recall 0.75 exactly, as in Ultralytics' compute_ap)
    assert 0 <= s["ap50_cost"]["duplicate"] < 0.01
    assert s["ap50_cost"]["background"] > s["ap50_cost"]["wrong_class"] > 0
    # precision 1 up to recall 3/4, then Ultralytics' linear interpolation down to (recall 1, precision 0)
    assert s["ap50_tp_only"] == pytest.approx(0.75 + 0.125, abs=0.01)


def test_perfect_detections_ap_is_one():
    """Every ground truth found and nothing else: AP50 0.995 (Ultralytics' interpolation), no FP, nothing missed."""
    s = summarize_detections(np.array([0.9, 0.8]), np.array([0, 0]), np.array([0, 1]), np.ones(2), {0: 1, 1: 1})
    assert s["ap50"] == pytest.approx(0.995) and s["at"]["f1"]["fp"] == 0 and s["at"]["0.25"]["missed_gt"] == 0


def fake_run(arm: str, seed: int, extra_bg: int, rng_seed: int = 0) -> dict:
    """A hand-made run: 20 GT, TPs scored high, wrong-class FPs, ``extra_bg`` background FPs at mid scores."""
    rng = np.random.default_rng(rng_seed + seed)
    scores = np.r_[rng.uniform(0.5, 1.0, 15), rng.uniform(0.3, 0.9, 10), rng.uniform(0.4, 0.8, extra_bg)]
    kinds = np.r_[np.zeros(15, int), np.full(10, 2), np.full(extra_bg, 4)]
    d = summarize_detections(scores, kinds, np.zeros(scores.size, int), np.full(scores.size, 0.8), {0: 20})
    d.update(arm=arm, seed=seed, run=f"{arm}-s{seed}", n_images=5, params={"imgsz": 64, "conf": 0.001})
    return d


def test_aggregate_and_findings():
    """Per-arm mean and std over seeds; the statement names the FP kind that grows against the baseline."""
    runs = [fake_run("vfl", s, 30) for s in (0, 1)] + [fake_run("bce", s, 2) for s in (0, 1, 2)]
    rows = aggregate(runs, baseline="bce")
    assert [r["arm"] for r in rows] == ["bce", "vfl"] and rows[0]["n_seeds"] == 3 and rows[1]["seeds"] == [0, 1]
    bce_bg = [r["at"]["0.25"]["counts"]["background"] for r in runs if r["arm"] == "bce"]
    assert rows[0]["background@0.25_mean"] == pytest.approx(np.mean(bce_bg))
    assert rows[0]["background@0.25_std"] == pytest.approx(np.std(bce_bg, ddof=1))
    assert rows[1]["wrong_class@0.25_mean"] == pytest.approx(10.0) and rows[1]["wrong_class@0.25_std"] == 0.0
    recall = common_recall(runs, "bce")
    assert recall is not None and rows[0]["eq_recall"] == recall
    assert rows[0]["tp@eq_mean"] == rows[1]["tp@eq_mean"] == math.ceil(recall * 20 - 1e-9)  # equal recall: same TPs
    assert rows[1]["background@eq_mean"] > rows[0]["background@eq_mean"]
    text = findings(rows, "bce")
    assert len(text) == 1 and text[0].startswith("`vfl` vs `bce`")
    assert "**background** grows most" in text[0] and "equal recall" in text[0]
    assert findings(rows, "qfl")[0].startswith("No baseline arm")


def test_report_files_from_hand_made_runs(tmp_path):
    """diagnosis.md / .csv text and both plots from hand-made dicts (no model)."""
    runs = [fake_run("bce", s, 2) for s in (0, 1)] + [fake_run("qfl", s, 25) for s in (0, 1)]
    rows = aggregate(runs, baseline="bce")
    md = diagnosis_markdown(rows, runs, {"name": "t", "baseline": "bce", "missing": ["qfl-s2"]})
    for part in ("## Findings", "## Detections at conf ≥ 0.25", "equal recall", "F1-optimal", "qfl-s2", "fp_scores"):
        assert part in md, part
    table = list(csv.DictReader(diagnosis_csv_text(rows).splitlines()))
    assert [r["arm"] for r in table] == ["bce", "qfl"] and float(table[1]["background@0.25_mean"]) > 0
    plot_fp_scores(runs, tmp_path / "fp.png", baseline="bce")
    curves = [
        {"arm": a, "seed": s, "curve": {"epoch": [1, 2, 3], "precision": [0.1, 0.2, 0.3], "recall": [0.2, 0.3, None]}}
        for a in ("bce", "qfl")
        for s in (0, 1)
    ]
    plot_pr_curves(curves, tmp_path / "pr.png")
    for f in ("fp.png", "pr.png"):
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_without_true_positives_has_no_blank_values():
    """A model that found nothing (no TP: e.g. one epoch from scratch) gave 'Mean TP score per arm: bce , vfl .'."""
    runs = []
    for arm in ("bce", "vfl"):
        scores = np.array([0.2, 0.1, 0.05])
        d = summarize_detections(scores, np.full(3, 4), np.zeros(3, int), np.zeros(3), {0: 5})
        d.update(arm=arm, seed=0, run=f"{arm}-s0", n_images=2, params={"imgsz": 64, "conf": 0.001})
        runs.append(d)
    legacy = {"arm": "qfl", "seed": 0, "run": "qfl-s0"}  # a diagnosis without counts (an old or broken cache)
    rows = aggregate([*runs, legacy], baseline="bce")
    md = diagnosis_markdown(rows, [*runs, legacy], {"name": "t", "baseline": "bce"})
    line = next(s for s in md.splitlines() if s.startswith("Mean TP score per arm"))
    head = line.split(" Losses")[0]
    assert "bce n/a (no true positives)" in head and " ," not in head and not head.endswith(" .")
    for text in md.splitlines():
        if text.startswith("|"):
            assert "" not in [c.strip() for c in text.strip("|").split("|")], text  # no blank table cell
    assert "None" not in md and "nan" not in md


def test_pr_curves_have_integer_epoch_ticks(tmp_path, monkeypatch):
    """pr_curves.png: whole-number epoch ticks (3 epochs gave 1.00, 1.25, ...)."""
    import yolo_vfl.diagnose as diagnose

    figures = []
    save = diagnose._save_figure
    monkeypatch.setattr(diagnose, "_save_figure", lambda fig, path: figures.append(fig) or save(fig, path))
    curve = {"epoch": [1, 2, 3], "precision": [0.1, 0.2, 0.3], "recall": [0.1] * 3}
    curves = [{"arm": "bce", "seed": 0, "curve": curve}]
    plot_pr_curves(curves, tmp_path / "pr.png")
    for ax in figures[0].axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks)


def test_cli_errors(tmp_path):
    """Missing directory, no finished runs, unknown argument, missing out=, unknown arm: clear CLIErrors."""
    with pytest.raises(CLIError, match="not found"):
        cli_ab(["diagnose", f"out={tmp_path / 'nope'}"])
    (tmp_path / "runs" / "bce-s0").mkdir(parents=True)
    with pytest.raises(CLIError, match="No finished runs"):
        cli_ab(["diagnose", f"out={tmp_path}"])
    with pytest.raises(CLIError, match="Unknown argument 'dst'.*Did you mean 'dest'"):
        cli_ab(["diagnose", f"out={tmp_path}", "dst=x"])
    with pytest.raises(CLIError, match="needs out="):
        cli_ab(["diagnose"])
    (tmp_path / "runs" / "bce-s0" / "result.json").write_text(json.dumps({"run": "bce-s0", "arm": "bce", "seed": 0}))
    with pytest.raises(CLIError, match="No finished runs of arm.*vfl.*Arms with finished runs: bce"):
        cli_ab(["diagnose", f"out={tmp_path}", "arms=bce,vfl"])


@pytest.fixture(scope="module")
def tiny_experiment(det_data, tmp_path_factory):
    """An experiment directory with one tiny trained model, used as bce-s0 and as qfl-s0 (trained once)."""
    out = tmp_path_factory.mktemp("diag") / "exp"
    train_tiny("yolov8n.yaml", det_data, out / "runs", name="bce-s0", loss="bce")
    shutil.copytree(out / "runs" / "bce-s0", out / "runs" / "qfl-s0")
    for run in ("bce-s0", "qfl-s0"):
        arm = run.split("-")[0]
        (out / "runs" / run / "result.json").write_text(json.dumps({"run": run, "arm": arm, "seed": 0}))
    (out / "experiment.json").write_text(
        json.dumps({"name": "tiny", "baseline": "bce", "arms": ["bce", "qfl"], "runs": ["bce-s0", "qfl-s0", "qfl-s1"]})
    )
    return out


@pytest.mark.slow
def test_end_to_end_tiny_model(tiny_experiment, tmp_path, capsys):
    """'yolo-vfl ab diagnose' on a tiny trained model: diagnosis.json per run, the four files, caches reused."""
    out = tiny_experiment
    assert cli_ab(["diagnose", f"out={out}", "device=cpu"]) == 0
    assert "diagnosis written" in capsys.readouterr().out
    for name in ("diagnosis.md", "diagnosis.csv", "fp_scores.png", "pr_curves.png"):
        assert (out / name).stat().st_size > 0, name
    cache = out / "runs" / "bce-s0" / "diagnosis.json"
    d = json.loads(cache.read_text())
    assert d["n_images"] > 0 and d["n_gt"] > 0 and d["params"]["imgsz"] == IMGSZ
    assert sum(d["counts"].values()) == d["n_det"] and set(d["counts"]) == set(KINDS)
    assert d["at"]["0.25"]["missed_gt"] == d["n_gt"] - d["at"]["0.25"]["counts"]["tp"]
    assert set(d["ap50_cost"]) == set(FP_KINDS) and "mAP50" in d["ultralytics"]
    assert abs(d["ap50"] - d["ultralytics"]["mAP50"]) < 0.05  # same detections as Ultralytics validation
    md = (out / "diagnosis.md").read_text()
    assert "qfl-s1" in md and "| bce | 1 |" in md  # the unfinished run is named
    # second call into another dest: caches reused (unchanged), nothing recomputed
    mtime = cache.stat().st_mtime_ns
    lines: list[str] = []
    paths = diagnose_experiment(out, dest=tmp_path / "d", arms=["bce"], device="cpu", log=lines.append)
    assert cache.stat().st_mtime_ns == mtime and lines == [f"bce-s0: cached {cache}"]
    assert sorted(p.name for p in paths.values()) == sorted(os.listdir(tmp_path / "d"))
    rows = list(csv.DictReader(open(tmp_path / "d" / "diagnosis.csv")))
    assert [r["arm"] for r in rows] == ["bce"]
    # a separate cache directory leaves the experiment directory untouched
    diagnose_experiment(out, dest=tmp_path / "e", arms=["qfl"], device="cpu", cache_dir=tmp_path / "c", force=True)
    assert (tmp_path / "c" / "qfl-s0" / "diagnosis.json").is_file()
    assert Path(tmp_path / "e" / "diagnosis.md").is_file()
