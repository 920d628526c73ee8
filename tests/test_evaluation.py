"""Evaluation of hand-built records: classification by kind, greedy order, ranking correlations, AP, diagnosis."""

from __future__ import annotations

import csv
import math

import numpy as np
import polars as pl
import pytest

from yolo_vfl.ab import evaluation as ev
from yolo_vfl.ab.records import Records
from yolo_vfl.ab.report import common_recall, diagnosis_csv_text, diagnosis_markdown, diagnosis_runs, diagnosis_stats
from yolo_vfl.ab.results import MissingMetricError, RunResult, final_rows


def box_iou(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(n, m) IoU by Ultralytics' ``box_iou`` (torch), the function whose IoUs the records hold."""
    import torch
    from ultralytics.utils.metrics import box_iou as ultralytics_box_iou

    return ultralytics_box_iou(torch.as_tensor(d, dtype=torch.float32), torch.as_tensor(g, dtype=torch.float32)).numpy()


def build(images: list[dict], names: dict[int, str] | None = None, gt_order: list[int] | None = None) -> Records:
    """Records from per-image dicts (``det``, ``conf``, ``cls``, ``gt``, ``gt_cls``, optional ``iou``).

    ``iou`` (n, m) defaults to Ultralytics' ``box_iou`` of the boxes; ``gt_order`` permutes the global GT order (the
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


def random_images(seed: int, n_images: int = 4, n_gt: int = 10, per_gt: int = 3) -> list[dict]:
    """Random images: ``per_gt`` noisy detections around each GT box, random classes (2) and confidences."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_images):
        xy = rng.uniform(0, 50, (n_gt, 2))
        g = np.c_[xy, xy + rng.uniform(5, 20, (n_gt, 2))]
        d = np.repeat(g, per_gt, axis=0) + rng.normal(0, 3, (n_gt * per_gt, 4))
        d[:, 2:] = np.maximum(d[:, 2:], d[:, :2] + 1)
        n = len(d)
        images.append(
            {
                "det": d,
                "conf": rng.uniform(0, 1, n),
                "cls": rng.integers(0, 2, n),
                "gt": g,
                "gt_cls": rng.integers(0, 2, n_gt),
            }
        )
    return images


def test_higher_score_is_tp_whatever_the_record_order():
    """Two boxes on one GT (IoU 0.8 and 1): the higher-scored one is the TP, listed first or second."""
    im = {"det": [[0, 0, 10, 8], [0, 0, 10, 10]], "cls": [0, 0], "gt": [[0, 0, 10, 10]], "gt_cls": [0]}
    c = ev.classify(build([{**im, "conf": [0.3, 0.9]}]))
    assert kinds(c) == ["duplicate", "tp"] and c["gt"].tolist() == [-1, 0]
    assert c["iou"] == pytest.approx([0.8, 1.0], abs=1e-6)
    assert kinds(ev.classify(build([{**im, "conf": [0.9, 0.3]}]))) == ["tp", "duplicate"]


def test_tp_takes_the_next_free_ground_truth():
    """COCO: a detection whose best GT is taken matches the next free one above 0.5 instead of being a duplicate.

    GTs g0 [0,0,10,10], g1 [1,0,11,10] (IoU 90/110); det 0 = g0 (IoU 1 and 90/110), det 1 [0.5,0,10.5,10] (IoU 95/105
    with both). Det 0 takes g0, det 1 g1 (0.905). With g0 alone det 1 is a duplicate.
    """
    det = [[0, 0, 10, 10], [0.5, 0, 10.5, 10]]
    two = {"det": det, "conf": [0.9, 0.8], "cls": [0, 0], "gt": [[0, 0, 10, 10], [1, 0, 11, 10]], "gt_cls": [0, 0]}
    c = ev.classify(build([two]))
    assert kinds(c) == ["tp", "tp"] and c["gt"].tolist() == [0, 1]
    assert c["iou"] == pytest.approx([1.0, 95 / 105], abs=1e-6)
    one = {**two, "gt": [[0, 0, 10, 10]], "gt_cls": [0]}
    assert kinds(ev.classify(build([one]))) == ["tp", "duplicate"]


def test_duplicate_before_wrong_class_and_boundaries():
    """Duplicate beats wrong class; IoU exactly 0.5 matches, exactly 0.1 is localization, just below is background."""
    same_box = {
        "det": [[0, 0, 10, 10], [0, 0, 10, 10]],
        "conf": [0.9, 0.8],
        "cls": [0, 0],
        "gt": [[0, 0, 10, 10], [0, 0, 10, 10]],
        "gt_cls": [0, 1],
    }
    assert kinds(ev.classify(build([same_box]))) == ["tp", "duplicate"]
    edges = {
        "det": np.zeros((3, 4)),
        "conf": [0.9, 0.8, 0.7],
        "cls": [0, 0, 0],
        "gt": np.zeros((1, 4)),
        "gt_cls": [0],
        "iou": [[0.5], [0.1], [0.0999]],
    }
    assert kinds(ev.classify(build([edges]))) == ["tp", "localization", "background"]


def test_threshold_prefix_is_classified_alone():
    """The detections above a threshold are classified exactly as without the lower-scored ones (greedy order)."""
    images = random_images(0)
    full = ev.classify(build(images))
    part_images = [
        {**im, **{k: np.asarray(im[k])[np.asarray(im["conf"]) >= 0.5] for k in ("det", "conf", "cls")}} for im in images
    ]
    keep = np.concatenate([np.asarray(im["conf"]) >= 0.5 for im in images])
    part = ev.classify(build(part_images))
    assert full["kind"][keep].tolist() == part["kind"].tolist()
    assert full["iou"][keep] == pytest.approx(part["iou"])
    assert set(kinds(full)) == set(ev.KINDS)  # the random boxes give every kind


def test_record_order_does_not_matter():
    """Shuffling the detections of each image (distinct confidences) shuffles the classification the same way."""
    images = random_images(1)
    c = ev.classify(build(images))
    rng = np.random.default_rng(2)
    perms = [rng.permutation(len(im["conf"])) for im in images]
    shuffled = [{**im, **{k: np.asarray(im[k])[p] for k in ("det", "conf", "cls")}} for im, p in zip(images, perms)]
    s = ev.classify(build(shuffled))
    offsets = np.cumsum([0, *(len(im["conf"]) for im in images[:-1])])
    order = np.concatenate([o + p for o, p in zip(offsets, perms)])
    assert s["kind"].tolist() == c["kind"][order].tolist() and s["gt"].tolist() == c["gt"][order].tolist()
    assert s["iou"] == pytest.approx(c["iou"][order])
    assert (c["kind"] == 0).sum() == len(set(c["gt"][c["gt"] >= 0].tolist()))  # each GT matched at most once


def test_no_gt_no_detections():
    """An image without GT makes its detections background; no detections gives empty arrays."""
    r = build([{"det": [[0, 0, 5, 5]], "conf": [0.5], "cls": [0]}, {"gt": [[0, 0, 5, 5]], "gt_cls": [0]}])
    c = ev.classify(r)
    assert kinds(c) == ["background"] and c["gt"].tolist() == [-1] and c["iou"].tolist() == [0.0]
    empty = build([{"gt": [[0, 0, 5, 5]], "gt_cls": [0]}])
    assert ev.classify(empty)["kind"].size == 0
    d = values(ev.diagnose(empty))
    assert d["n_det"] == 0 and d["n_gt"] == 1 and d["ap50"] == 0.0 and d["threshold@f1"] is None


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
    """The keys of ranking_quality (those of the ranking in result.json); max_points keeps a seeded subset in order."""
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


def test_best_same_class_iou_by_hand():
    """Best IoU with a GT of the same class of the same image; several detections may take one GT; 0 without one.

    Image 0: g0 [0,0,10,10] class 0, g1 [5,0,15,10] class 1. a = g0 (1), b [0,0,10,5] class 0 (50/100 with g0),
    c = g1's box but class 0 (g0: 50/150; the IoU 1 with the class-1 g1 does not count), d = g1 class 1 (1), e class 2
    (no GT of its class: 0). Image 1 (one GT, so a padding column): f [0,0,2,4] on g2 [0,0,4,4] (8/16), g far away (0).
    Image 2: no GT (0).
    """
    images = [
        {
            "det": [[0, 0, 10, 10], [0, 0, 10, 5], [5, 0, 15, 10], [5, 0, 15, 10], [0, 0, 10, 10]],
            "conf": [0.9, 0.8, 0.7, 0.6, 0.5],
            "cls": [0, 0, 0, 1, 2],
            "gt": [[0, 0, 10, 10], [5, 0, 15, 10]],
            "gt_cls": [0, 1],
        },
        {
            "det": [[0, 0, 2, 4], [50, 50, 60, 60]],
            "conf": [0.4, 0.3],
            "cls": [0, 0],
            "gt": [[0, 0, 4, 4]],
            "gt_cls": [0],
        },
        {"det": [[0, 0, 4, 4]], "conf": [0.2], "cls": [0]},
    ]
    r = build(images, names={0: "a", 1: "b", 2: "c"})
    q = ev.ranking_quality(r)
    assert q["points"]["iou"] == pytest.approx([1.0, 0.5, 1 / 3, 1.0, 0.0, 0.5, 0.0, 0.0], abs=1e-5)
    assert q["n"] == 8 and q["n_matched"] == 5 and q["n_gt"] == 3 and q["n_images"] == 3
    assert ev.ranking_quality(build([{"gt": [[0, 0, 4, 4]], "gt_cls": [0]}]))["points"]["iou"] == []
    no_gt = ev.ranking_quality(build([{"det": [[0, 0, 4, 4]], "conf": [0.2], "cls": [0]}]))
    assert no_gt["points"]["iou"] == [0.0] and no_gt["n_matched"] == 0


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

    d = values(ev.diagnose(build(TWO_GT_ONE_TP)))
    expect = float(compute_ap(np.array([0.5, 0.5]), np.array([1.0, 0.5]))[0])
    assert d["ap50"] == pytest.approx(expect, abs=1e-12)
    major_minor = tuple(int(v) for v in ultralytics.__version__.split(".")[:2])
    assert d["ap50"] == pytest.approx(0.495 if major_minor >= (8, 4) else 0.6225, abs=1e-9)
    assert d["ap50_tp_only"] == pytest.approx(float(compute_ap(np.array([0.5]), np.array([1.0]))[0]), abs=1e-12)
    assert d["ap50_cost_background"] == pytest.approx(d["ap50_tp_only"] - d["ap50"])


def test_average_precision_edges():
    """No detections: AP 0 (as ap_per_class); no GT: NaN; all GT found first: Ultralytics' top AP; GT classes only.

    Ultralytics' 101-point trapezoid reads precision 0 at recall 1 exactly (the sentinel), so a perfect ranking
    scores 0.995, not 1.
    """

    def ap50(scores: list[float], kinds_: list[int], cls: list[int], gt_counts: dict[int, int]) -> float | None:
        frame = ev.summarize_detections(
            np.array(scores), np.array(kinds_), np.array(cls), np.ones(len(scores)), gt_counts
        )
        return values(frame)["ap50"]

    assert ap50([], [], [], {0: 3}) == 0.0
    assert ap50([0.9, 0.8], [0, 0], [0, 0], {}) is None and ap50([0.9], [0], [0], {0: 0}) is None  # NaN: no GT
    perfect = ap50([0.9], [0], [0], {0: 1})
    assert perfect == pytest.approx(0.995, abs=0.005)
    assert ap50([0.9, 0.8, 0.7], [0, 0, 4], [0, 0, 0], {0: 2}) == pytest.approx(perfect)
    assert ap50([0.9, 0.8], [0, 4], [0, 1], {0: 1}) == pytest.approx(perfect)  # class 1 has no GT: not averaged
    assert ap50([0.9, 0.8], [0, 4], [0, 1], {0: 1, 2: 1}) == pytest.approx(perfect / 2)  # class 2: GT, no detection


# ------------------------------------------------------------------------------------------------ diagnosis
def values(frame) -> dict:
    """A ``metric`` / ``value`` frame as ``{metric: value}``."""
    return dict(frame.iter_rows())


def test_summarize_detections_by_hand():
    """Counts per threshold, missed GT, F1 threshold, recall grid and AP50 costs of a hand-made run.

    Kinds by descending score: background 0.9, tp 0.8, tp 0.6, wrong 0.4, tp 0.3, localization 0.2, duplicate 0.1
    (class 0, 4 GT). F1 over the top k: k=3 P 2/3 R 1/2 (0.571), k=5 P 3/5 R 3/4 (0.667, best), k=7 P 3/7 R 3/4.
    """
    from ultralytics.utils.metrics import compute_ap

    scores = np.array([0.9, 0.8, 0.6, 0.4, 0.3, 0.2, 0.1])
    kinds_ = np.array([4, 0, 0, 2, 0, 3, 1])
    s = values(ev.summarize_detections(scores, kinds_, np.zeros(7, int), np.full(7, 0.7), {0: 4}))
    assert s["n_gt"] == 4 and s["n_det"] == 7 and s["tp"] == 3
    assert (
        s["tp@0.25"] == 3 and s["fp@0.25"] == 2 and s["missed@0.25"] == 1 and s["precision@0.25"] == pytest.approx(0.6)
    )
    assert [s[f"{k}@0.5"] for k in ev.KINDS] == [2, 0, 0, 0, 1]
    assert s["threshold@f1"] == pytest.approx(0.3) and s["recall@f1"] == pytest.approx(0.75)
    assert s["score_tp"] == pytest.approx((0.8 + 0.6 + 0.3) / 3) and s["tp_iou@f1"] == pytest.approx(0.7)
    # 2 TPs: reached at score 0.6, with the background detection above; the 4th TP is never found
    assert s["threshold@recall0.50"] == pytest.approx(0.6) and s["background@recall0.50"] == 1
    assert s["threshold@recall0.76"] is None and s["recall_max"] == 0.75
    # AP50: the background detection above every TP costs the most; the duplicate below them all next to nothing
    assert 0 <= s["ap50_cost_duplicate"] < 0.01
    assert s["ap50_cost_background"] > s["ap50_cost_wrong_class"] > 0
    # all FPs removed: precision 1 at recall 1/4, 1/2, 3/4 (8.4: the envelope ends at 3/4: 0.745)
    assert s["ap50_tp_only"] == pytest.approx(float(compute_ap(np.array([0.25, 0.5, 0.75]), np.ones(3))[0]))
    perfect = values(
        ev.summarize_detections(np.array([0.9, 0.8]), np.zeros(2, int), np.array([0, 1]), np.ones(2), {0: 1, 1: 1})
    )
    assert perfect["ap50"] == pytest.approx(0.995) and perfect["fp@f1"] == 0
    assert perfect["missed@0.25"] == 0 and perfect["recall@f1"] == 1.0


def test_diagnose_values_by_hand():
    """The diagnosis of the each-kind image plus the one-TP image: its values derived by hand.

    8 detections, 5 GT (4 of class 0, 1 of class 1; all detections class 0). In descending score (ties: record
    order): tp 0.9 (image 0), tp 0.9 (image 1), duplicate 0.8, wrong class 0.7, localization 0.6, background 0.5
    (image 0), background 0.5 (image 1), tp 0.1. F1 over the top k (ties kept together): k=2 4/7 is the best.
    """
    from ultralytics.utils.metrics import compute_ap

    frame = ev.diagnose(build([EACH_KIND, *TWO_GT_ONE_TP]))
    assert frame.columns == ["metric", "value"] and frame["metric"].is_unique().all()
    d = values(frame)
    assert d["n_det"] == 8 and d["n_gt"] == 5 and d["n_images"] == 2 and d["tp"] == 3
    for t in ("0.25", "0.5"):  # nothing scores between 0.25 and 0.5: the same detections
        assert [d[f"{k}@{t}"] for k in ev.KINDS] == [2, 1, 1, 1, 2]
        assert d[f"fp@{t}"] == 5 and d[f"missed@{t}"] == 3
        assert d[f"precision@{t}"] == pytest.approx(2 / 7) and d[f"recall@{t}"] == pytest.approx(0.4)
    assert d["threshold@f1"] == pytest.approx(0.9) and d["tp@f1"] == 2 and d["fp@f1"] == 0
    assert d["missed@f1"] == 3 and d["precision@f1"] == 1.0
    mean_score = {"tp": 1.9 / 3, "duplicate": 0.8, "wrong_class": 0.7, "localization": 0.6, "background": 0.5}
    assert {k: d[f"score_{k}"] for k in ev.KINDS} == pytest.approx(mean_score)
    assert d["tp_iou@0.25"] == d["tp_iou@f1"] == pytest.approx(1.0, abs=1e-6)
    for level, threshold, counts in [
        (0.2, 0.9, [2, 0, 0, 0, 0]),
        (0.4, 0.9, [2, 0, 0, 0, 0]),
        (0.6, 0.1, [3, 1, 1, 1, 2]),
    ]:
        assert d[f"threshold@recall{level:.2f}"] == pytest.approx(threshold)
        assert [d[f"{k}@recall{level:.2f}"] for k in ev.KINDS] == counts
    assert d["threshold@recall0.41"] == pytest.approx(0.1)  # 3 TPs needed
    assert d["threshold@recall0.61"] is None and d["tp@recall0.61"] is None and d["recall_max"] == 0.6
    # AP50: class 0's TP flags in score order 1 1 0 0 0 0 0 1 (4 GT); class 1 has GT and no detection: AP 0
    ctp = np.cumsum([1, 1, 0, 0, 0, 0, 0, 1])
    ap0 = float(compute_ap(ctp / 4, ctp / np.arange(1, 9))[0])
    assert d["ap50"] == pytest.approx(ap0 / 2, abs=1e-12)
    assert d["ap50_tp_only"] == pytest.approx(float(compute_ap(np.array([0.25, 0.5, 0.75]), np.ones(3))[0]) / 2)
    for k in ev.FP_KINDS:
        assert d[f"ap50_cost_{k}"] == pytest.approx(d[f"ap50_without_{k}"] - d["ap50"])
    assert d["ap50_cost_background"] > 0 and d["ap50_cost_duplicate"] > 0
    assert {m: d[f"ultralytics/{m}"] for m in ("precision", "recall", "mAP50", "mAP50-95")} == {
        "precision": 0.5, "recall": 0.5, "mAP50": 0.5, "mAP50-95": 0.3
    }  # fmt: skip


def test_diagnose_counts_by_hand():
    """Each-kind image: 2 TP of 3 GT overall; at conf 0.25 the late TP (0.1) is out: 1 TP, 4 FP, 2 missed."""
    d = values(ev.diagnose(build([EACH_KIND])))
    assert d["tp"] == 2
    assert d["tp@0.25"] == 1 and d["fp@0.25"] == 4 and d["missed@0.25"] == 2
    assert d["precision@0.25"] == pytest.approx(0.2) and d["recall@0.25"] == pytest.approx(1 / 3)
    assert [d[f"{k}@0.5"] for k in ev.KINDS] == [1, 1, 1, 1, 1]
    assert d["threshold@f1"] == pytest.approx(0.9)  # 1 TP of 1: F1 = 2 / (1 + 3) = 0.5, the best
    assert d["score_tp"] == pytest.approx(0.5)


def test_detection_kinds_are_classify_by_name():
    """``detection_kinds``: each detection's confidence and kind name, in record order."""
    records = build([EACH_KIND])
    frame = ev.detection_kinds(records)
    assert frame["kind"].to_list() == kinds(ev.classify(records))
    assert frame["conf"].to_list() == pytest.approx(EACH_KIND["conf"])


def test_diagnose_feeds_the_diagnosis_report():
    """report.diagnosis_stats, common_recall, diagnosis_markdown and diagnosis_csv_text consume diagnose() rows.

    bce: the each-kind image (1 TP at conf 0.25); qfl: plus the one-TP image (2 TPs at 0.25).
    """
    table = pl.concat(
        [
            final_rows(RunResult(f"{arm}-s0", arm, 0, arm, {}), ev.diagnose(build(images)))
            for arm, images in (("bce", [EACH_KIND]), ("qfl", [EACH_KIND, *TWO_GT_ONE_TP]))
        ]
    )
    recall = common_recall(table, "bce")
    assert recall == pytest.approx(0.33)  # bce's F1-optimal recall 1/3, rounded down to the grid
    stats = diagnosis_stats(table, baseline="bce", order=["bce", "qfl"])
    rows = list(stats.iter_rows(named=True))
    assert [r["arm"] for r in rows] == ["bce", "qfl"] and rows[0]["eq_recall"] == recall
    assert rows[0]["tp@0.25_mean"] == 1 and rows[1]["tp@0.25_mean"] == 2 and rows[1]["background@0.25_mean"] == 2
    meta = {"name": "t", "baseline": "bce", "out": "x", "missing": [], "command": "c"}
    md = diagnosis_markdown(stats, diagnosis_runs(table, "bce"), meta)
    assert "`qfl`" in md and "| bce |" in md and "None" not in md and "nan" not in md
    csv_rows = list(csv.DictReader(diagnosis_csv_text(stats).splitlines()))
    assert [r["arm"] for r in csv_rows] == ["bce", "qfl"] and float(csv_rows[1]["tp@0.25_mean"]) == 2
    with pytest.raises(MissingMetricError, match="'ap50'.*bce-s0"):
        diagnosis_stats(table.filter((pl.col("metric") != "ap50") | (pl.col("arm") != "bce")))
