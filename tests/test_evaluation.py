"""Evaluation of hand-built records: classification by kind, greedy order, ranking correlations, AP, diagnosis."""

from __future__ import annotations

import math

import numpy as np
import pytest

from yolo_vfl import diagnose as old
from yolo_vfl.ab import evaluation as ev
from yolo_vfl.ab.records import Records
from yolo_vfl.report import box_iou, match_detections


def build(images: list[dict], names: dict[int, str] | None = None, gt_order: list[int] | None = None) -> Records:
    """Records from per-image dicts (``det``, ``conf``, ``cls``, ``gt``, ``gt_cls``, optional ``iou``).

    ``iou`` (n, m) defaults to the numpy ``box_iou`` of the boxes; ``gt_order`` permutes the global GT order (the
    per-image column order stays the image's own order).
    """
    det, conf, cls, det_img, gt, gt_cls, gt_img, ious = [], [], [], [], [], [], [], []
    k = max([1, *(len(im.get("gt_cls", [])) for im in images)])
    for i, im in enumerate(images):
        d = np.asarray(im.get("det", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
        g = np.asarray(im.get("gt", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
        iou = np.asarray(im["iou"], dtype=np.float64).reshape(len(d), len(g)) if "iou" in im else box_iou(d, g)
        pad = np.full((len(d), k), -1.0)
        pad[:, : len(g)] = iou
        det.append(d)
        conf.append(np.asarray(im.get("conf", []), dtype=np.float64))
        cls.append(np.asarray(im.get("cls", []), dtype=np.int64))
        det_img.append(np.full(len(d), i))
        gt.append(g)
        gt_cls.append(np.asarray(im.get("gt_cls", []), dtype=np.int64))
        gt_img.append(np.full(len(g), i))
        ious.append(pad)
    g_boxes, g_cls, g_img = np.concatenate(gt), np.concatenate(gt_cls), np.concatenate(gt_img)
    if gt_order is not None:
        g_boxes, g_cls, g_img = g_boxes[gt_order], g_cls[gt_order], g_img[gt_order]
    return Records(
        det_boxes=np.concatenate(det),
        det_conf=np.concatenate(conf),
        det_cls=np.concatenate(cls),
        det_image=np.concatenate(det_img),
        gt_boxes=g_boxes,
        gt_cls=g_cls,
        gt_image=g_img,
        det_gt_iou=np.concatenate(ious).astype(np.float32),
        names=names or {0: "a", 1: "b"},
        n_images=len(images),
        params={"weights": "w.pt", "data": "d.yaml", "imgsz": 64, "conf": 0.001, "iou": 0.7, "max_det": 300},
        metrics={"precision": 0.5, "recall": 0.5, "mAP50": 0.5, "mAP50-95": 0.3},
    )


def kinds(result: dict) -> list[str]:
    return [ev.KINDS[k] for k in result["kind"]]


#: Image 0 of the each-kind case: GT 0 [0,0,10,10] class 0, GT 1 [20,0,30,10] class 0, GT 2 [40,0,50,10] class 1.
EACH_KIND = {
    "det": [[0, 0, 10, 10], [0, 0, 10, 9], [40, 0, 50, 10], [20, 0, 27, 10], [0, 0, 10, 3], [100, 100, 110, 110]],
    "conf": [0.9, 0.8, 0.7, 0.1, 0.6, 0.5],
    "cls": [0, 0, 0, 0, 0, 0],
    "gt": [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]],
    "gt_cls": [0, 0, 1],
    # IoU = intersection / union of the 10 x 10 GT with each box (all inside it or disjoint): 1, 90/100, 1 (GT 2),
    # 70/100 (GT 1), 30/100, 0.
    "iou": [[1, 0, 0], [0.9, 0, 0], [0, 0, 1], [0, 0.7, 0], [0.3, 0, 0], [0, 0, 0]],
}


def test_each_kind():
    """TP, duplicate (0.9 on a taken GT), wrong class (1.0 on the class-1 GT), late TP, localization 0.3, background."""
    c = ev.classify(build([EACH_KIND]))
    assert kinds(c) == ["tp", "duplicate", "wrong_class", "tp", "localization", "background"]
    assert c["gt"].tolist() == [0, -1, -1, 1, -1, -1]
    assert c["iou"] == pytest.approx([1.0, 0.9, 1.0, 0.7, 0.3, 0.0])


def test_matched_gt_is_global_index():
    """On a second image whose GT comes first in gt order, the matched gt index is the global one (0, then 1 ... 3)."""
    second = {"det": [[0, 0, 10, 10]], "conf": [0.3], "cls": [1], "gt": [[0, 0, 10, 10]], "gt_cls": [1]}
    # global order: image 1's GT (index 3 when appended) first, then image 0's three GTs
    r = build([EACH_KIND, second], gt_order=[3, 0, 1, 2])
    c = ev.classify(r)
    assert kinds(c) == ["tp", "duplicate", "wrong_class", "tp", "localization", "background", "tp"]
    assert c["gt"].tolist() == [1, -1, -1, 2, -1, -1, 0]
    assert r.gt_cls[c["gt"][[0, 3, 6]]].tolist() == [0, 0, 1]


def test_greedy_confidence_order():
    """The higher score takes the GT even at lower IoU (0.6 TP, then 0.9 duplicate); a TP takes its best free GT.

    Image 0: one GT; det A (conf 0.9, IoU 0.6) and det B (conf 0.8, IoU 0.9): A is TP, B duplicate. Image 1: GTs
    g0, g1 of class 0; det C (conf 0.9) has IoU 0.6 with g0 and 0.8 with g1, det D (conf 0.5) 0.7 and 0.55: C takes
    g1 (its best), D takes g0. Image 2: equal scores keep record order: the first of two identical boxes is TP.
    """
    r = build(
        [
            {
                "det": np.zeros((2, 4)),
                "conf": [0.9, 0.8],
                "cls": [0, 0],
                "gt": np.zeros((1, 4)),
                "gt_cls": [0],
                "iou": [[0.6], [0.9]],
            },
            {
                "det": np.zeros((2, 4)),
                "conf": [0.5, 0.9],
                "cls": [0, 0],
                "gt": np.zeros((2, 4)),
                "gt_cls": [0, 0],
                "iou": [[0.7, 0.55], [0.6, 0.8]],
            },
            {
                "det": [[0, 0, 5, 5], [0, 0, 5, 5]],
                "conf": [0.4, 0.4],
                "cls": [0, 0],
                "gt": [[0, 0, 5, 5]],
                "gt_cls": [0],
            },
        ]
    )
    c = ev.classify(r)
    assert kinds(c) == ["tp", "duplicate", "tp", "tp", "tp", "duplicate"]
    assert c["gt"].tolist() == [0, -1, 1, 2, 3, -1]
    assert c["iou"] == pytest.approx([0.6, 0.9, 0.7, 0.8, 1.0, 1.0])


def test_thresholds_follow_arguments():
    """iou_match and iou_background move the boundaries: IoU 0.3 is a TP at iou_match 0.25, background at 0.4."""
    r = build(
        [{"det": np.zeros((1, 4)), "conf": [0.5], "cls": [0], "gt": np.zeros((1, 4)), "gt_cls": [0], "iou": [[0.3]]}]
    )
    assert kinds(ev.classify(r, iou_match=0.25)) == ["tp"]
    assert kinds(ev.classify(r)) == ["localization"]
    assert kinds(ev.classify(r, iou_background=0.4)) == ["background"]


def test_same_as_old_classification_on_random_boxes():
    """On random boxes, classify gives diagnose.classify_detections' kinds and IoUs (IoU as float32)."""
    rng = np.random.default_rng(0)
    images, expect = [], []
    for _ in range(5):
        xy = rng.uniform(0, 50, (12, 2))
        g = np.c_[xy, xy + rng.uniform(5, 20, (12, 2))]
        d = np.repeat(g, 3, axis=0) + rng.normal(0, 3, (36, 4))
        d[:, 2:] = np.maximum(d[:, 2:], d[:, :2] + 1)
        im = {
            "det": d,
            "conf": rng.uniform(0, 1, 36),
            "cls": rng.integers(0, 2, 36),
            "gt": g,
            "gt_cls": rng.integers(0, 2, 12),
        }
        images.append(im)
        expect.append(old.classify_detections(im["det"], im["conf"], im["cls"], im["gt"], im["gt_cls"]))
    c = ev.classify(build(images))
    assert c["kind"].tolist() == np.concatenate([e["kind"] for e in expect]).tolist()
    assert c["iou"] == pytest.approx(np.concatenate([e["iou"] for e in expect]), abs=1e-6)
    assert set(kinds(c)) == set(ev.KINDS)


def test_no_gt_no_detections():
    """An image without GT makes its detections background; no detections gives empty arrays."""
    r = build([{"det": [[0, 0, 5, 5]], "conf": [0.5], "cls": [0]}, {"gt": [[0, 0, 5, 5]], "gt_cls": [0]}])
    c = ev.classify(r)
    assert kinds(c) == ["background"] and c["gt"].tolist() == [-1] and c["iou"].tolist() == [0.0]
    empty = build([{"gt": [[0, 0, 5, 5]], "gt_cls": [0]}])
    assert ev.classify(empty)["kind"].size == 0
    d = ev.diagnose(empty)
    assert d["n_det"] == 0 and d["n_gt"] == 1 and d["ap50"] == 0.0 and d["at"]["f1"]["threshold"] is None


# ------------------------------------------------------------------------------------------------ ranking quality
RANKING = [
    {
        "det": np.zeros((3, 4)),
        "conf": [0.9, 0.5, 0.1],
        "cls": [0, 0, 0],
        "gt": np.zeros((2, 4)),
        "gt_cls": [0, 1],
        # det 0: 0.8 with the class-0 GT; det 1: 0.6 (and 0.7 with the class-1 GT, which does not count);
        # det 2: only the class-1 GT (0.9): best same-class IoU 0
        "iou": [[0.8, 0.1], [0.6, 0.7], [0.0, 0.9]],
    },
    {"gt": np.zeros((1, 4)), "gt_cls": [0]},  # an image without detections: its GT counts in n_gt
]


def test_ranking_by_hand():
    """Confidences (0.9, 0.5, 0.1) vs IoUs (0.8, 0.6, 0): Pearson sqrt(12/13), Spearman 1, matched pair: both 1.

    dx = (0.4, 0, -0.4), dy = (1/3, 2/15, -7/15): sum dx dy = 0.32, sum dx^2 = 0.32, sum dy^2 = 78/225, so
    r = 0.32 / sqrt(0.32 * 78 / 225) = sqrt(72 / 78). Mean IoU 1.4 / 3.
    """
    q = ev.ranking_quality(build(RANKING))
    assert q["n"] == 3 and q["n_matched"] == 2 and q["n_images"] == 2 and q["n_gt"] == 3
    assert q["pearson"] == pytest.approx(math.sqrt(12 / 13))
    assert q["spearman"] == pytest.approx(1.0)
    assert q["pearson_matched"] == pytest.approx(1.0) and q["spearman_matched"] == pytest.approx(1.0)
    assert q["mean_iou"] == pytest.approx(1.4 / 3)
    assert q["conf_threshold"] == 0.001
    assert q["points"] == {"conf": [0.9, 0.5, 0.1], "iou": [0.8, 0.6, 0.0]}


def test_ranking_keys_and_subsample():
    """The keys of report.ranking_quality; max_points keeps a seeded subset in record order."""
    q = ev.ranking_quality(build(RANKING), max_points=2, seed=1)
    assert set(q) == {
        "n",
        "pearson",
        "spearman",
        "n_matched",
        "pearson_matched",
        "spearman_matched",
        "mean_iou",
        "n_images",
        "n_gt",
        "conf_threshold",
        "points",
    }
    assert len(q["points"]["conf"]) == 2 and q["points"]["conf"] == sorted(q["points"]["conf"], reverse=True)
    assert q["n"] == 3  # the correlations still use all detections
    assert ev.ranking_quality(build(RANKING), max_points=2, seed=1) == q


def test_ranking_iou_as_report_match_detections():
    """The per-detection IoU is report.match_detections' (best same-class IoU, 0 if none) on random boxes."""
    rng = np.random.default_rng(1)
    images, expect = [], []
    for n_gt in (0, 3, 7):
        xy = rng.uniform(0, 50, (20, 2))
        d = np.c_[xy, xy + rng.uniform(5, 20, (20, 2))]
        xy = rng.uniform(0, 50, (n_gt, 2))
        g = np.c_[xy, xy + rng.uniform(5, 20, (n_gt, 2))]
        im = {
            "det": d,
            "conf": rng.uniform(0, 1, 20),
            "cls": rng.integers(0, 3, 20),
            "gt": g,
            "gt_cls": rng.integers(0, 3, n_gt),
        }
        images.append(im)
        expect.append(match_detections(im["det"], im["cls"], im["gt"], im["gt_cls"]))
    assert ev.best_same_class_iou(build(images)) == pytest.approx(np.concatenate(expect), abs=1e-6)


# ------------------------------------------------------------------------------------------------ AP
TWO_GT_ONE_TP = [
    {
        "det": [[0, 0, 10, 10], [30, 30, 40, 40]],
        "conf": [0.9, 0.5],
        "cls": [0, 0],
        "gt": [[0, 0, 10, 10], [60, 60, 70, 70]],
        "gt_cls": [0, 0],
    }
]


def test_ap_is_ultralytics_compute_ap():
    """2 GT, a TP (0.9) then a background FP (0.5): AP50 is compute_ap(recall (.5, .5), precision (1, .5)).

    Ultralytics 8.4 ends the precision envelope at the highest recall (0.5): the 101-point trapezoid gives 0.49 over
    x = 0 ... 0.49 plus 0.005 for the step at 0.5, i.e. 0.495. 8.3 runs the envelope linearly from precision 0.5 at
    recall 0.5 to 0 at recall 1: 0.5 + 0.125 less 0.0025 for the step = 0.6225 (the old diagnose._ap).
    """
    import ultralytics
    from ultralytics.utils.metrics import compute_ap

    d = ev.diagnose(build(TWO_GT_ONE_TP))
    expect = float(compute_ap(np.array([0.5, 0.5]), np.array([1.0, 0.5]))[0])
    assert d["ap50"] == pytest.approx(expect, abs=1e-12)
    major_minor = tuple(int(v) for v in ultralytics.__version__.split(".")[:2])
    assert d["ap50"] == pytest.approx(0.495 if major_minor >= (8, 4) else 0.6225, abs=1e-9)
    assert d["ap50_tp_only"] == pytest.approx(float(compute_ap(np.array([0.5]), np.array([1.0]))[0]), abs=1e-12)
    assert d["ap50_cost"]["background"] == pytest.approx(d["ap50_tp_only"] - d["ap50"])


def test_average_precision_edges():
    """No detections: AP 0 (as ap_per_class); no GT: NaN; all GT found first: Ultralytics' top AP; GT classes only.

    Ultralytics' 101-point trapezoid reads precision 0 at recall 1 exactly (the sentinel), so a perfect ranking
    scores 0.995, not 1.
    """
    assert ev.average_precision(np.zeros(0), 3) == 0.0
    assert math.isnan(ev.average_precision(np.ones(2), 0))
    perfect = ev.average_precision(np.ones(1), 1)
    assert perfect == pytest.approx(0.995, abs=0.005)
    assert ev.average_precision(np.array([1.0, 1.0, 0.0]), 2) == pytest.approx(perfect)
    scores, kinds_, cls = np.array([0.9, 0.8]), np.array([0, 4]), np.array([0, 1])
    assert ev.map50(scores, kinds_, cls, {0: 1}) == pytest.approx(perfect)  # class 1 has no GT: not averaged
    assert ev.map50(scores, kinds_, cls, {0: 1, 2: 1}) == pytest.approx(perfect / 2)  # class 2: GT, no detection


# ------------------------------------------------------------------------------------------------ diagnosis
def assert_close(a, b, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]")
    elif a is None or b is None:
        assert a is b, where
    else:
        assert a == pytest.approx(b, abs=1e-6), where


def key_tree(value):
    if isinstance(value, dict):
        return {k: key_tree(v) for k, v in value.items()}
    return None


def old_summary(images: list[dict]) -> dict:
    """diagnose.summarize_detections on the old per-image classification of the same boxes."""
    scores, kinds_, classes, ious, gt_counts = [], [], [], [], {}
    for im in images:
        for c in im.get("gt_cls", []):
            gt_counts[int(c)] = gt_counts.get(int(c), 0) + 1
        if "det" not in im:
            continue
        c = old.classify_detections(
            im["det"], im["conf"], im["cls"], np.reshape(im.get("gt", []), (-1, 4)), im.get("gt_cls", [])
        )
        scores.append(np.asarray(im["conf"], dtype=np.float64))
        kinds_.append(c["kind"])
        classes.append(np.asarray(im["cls"]))
        ious.append(c["iou"])
    return old.summarize_detections(
        np.concatenate(scores), np.concatenate(kinds_), np.concatenate(classes), np.concatenate(ious), gt_counts
    )


def test_diagnose_structure_as_diagnose_run():
    """diagnose() has diagnose_run's keys at every level, and its values except the AP ones (new AP)."""
    images = [EACH_KIND, *TWO_GT_ONE_TP]
    d = ev.diagnose(build(images))
    ref = old_summary(images)
    ref.update(
        version=old.DIAG_VERSION,
        n_images=2,
        params=old._params("w.pt", "d.yaml", 64, 0.001, 0.7, 300),
        ultralytics={"precision": 0, "recall": 0, "mAP50": 0, "mAP50-95": 0},
    )
    tree, ref_tree = key_tree(d), key_tree(ref)
    params = tree.pop("params")
    assert set(params) >= set(ref_tree.pop("params")) - {"model"}
    assert tree == ref_tree
    ap_keys = {"ap50", "ap50_without", "ap50_cost", "ap50_tp_only"}
    for key in set(ref) - ap_keys - {"version", "params", "ultralytics"}:
        assert_close(d[key], ref[key], key)
    assert d["version"] == ev.DIAG_VERSION and d["n_images"] == 2
    assert d["ultralytics"] == {"precision": 0.5, "recall": 0.5, "mAP50": 0.5, "mAP50-95": 0.3}
    assert d["params"]["iou_match"] == 0.5 and d["params"]["thresholds"] == [0.25, 0.5]


def test_diagnose_counts_by_hand():
    """Each-kind image: 2 TP of 3 GT overall; at conf 0.25 the late TP (0.1) is out: 1 TP, 4 FP, 2 missed."""
    d = ev.diagnose(build([EACH_KIND]))
    assert d["counts"] == {"tp": 2, "duplicate": 1, "wrong_class": 1, "localization": 1, "background": 1}
    at = d["at"]["0.25"]
    assert at["counts"]["tp"] == 1 and at["fp"] == 4 and at["missed_gt"] == 2
    assert at["precision"] == pytest.approx(0.2) and at["recall"] == pytest.approx(1 / 3)
    assert d["at"]["0.5"]["counts"] == {"tp": 1, "duplicate": 1, "wrong_class": 1, "localization": 1, "background": 1}
    assert d["at"]["f1"]["threshold"] == pytest.approx(0.9)  # 1 TP of 1: F1 = 2 / (1 + 3) = 0.5, the best
    assert d["mean_score"]["tp"] == pytest.approx(0.5)


def test_diagnose_feeds_old_report_code():
    """The aggregate, findings and markdown code of yolo_vfl.diagnose consume diagnose() output."""
    runs = []
    for arm, images in (("bce", [EACH_KIND]), ("qfl", [EACH_KIND, *TWO_GT_ONE_TP])):
        d = ev.diagnose(build(images))
        d.update(run=f"{arm}-s0", arm=arm, seed=0)
        runs.append(d)
    recall = old.common_recall(runs, "bce")
    rows = old.aggregate(runs, baseline="bce", order=["bce", "qfl"], recall=recall)
    md = old.diagnosis_markdown(rows, runs, {"name": "t", "baseline": "bce", "out": "x", "missing": [], "command": "c"})
    assert "qfl" in md and "bce" in md
    assert old.diagnosis_csv_text(rows).count("\n") >= 3
