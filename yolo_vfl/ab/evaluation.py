"""Pure functions of a run's records (``yolo_vfl.ab.records``): false positives by kind, AP50 costs, ranking quality.

Everything here is numpy on ``Records``; no IoU is recomputed (``det_gt_iou`` holds Ultralytics' IoUs of the
validation pass). Only the AP imports Ultralytics (``compute_ap``), so the rest of the module imports without torch.

``classify`` processes each image's detections COCO-style, in descending confidence order (ties: record order):

* ``tp``: IoU >= 0.5 (``protocol.IOU_MATCH``) with a same-class ground truth that no higher-scored detection has
  matched yet (the one with the highest IoU among those);
* ``duplicate``: IoU >= 0.5 with a same-class ground truth, but all of those are already matched;
* ``wrong_class``: not the above, and IoU >= 0.5 with a ground truth of another class;
* ``localization``: not the above, and 0.1 (``protocol.IOU_BACKGROUND``) <= best IoU with any ground truth < 0.5;
* ``background``: best IoU with any ground truth < 0.1.

The matching is greedy in confidence order, so the detections above any threshold are classified as if the lower
ones did not exist: the counts at ``conf >= t`` all follow from one classification at the validation threshold.
The AP50 cost of each false-positive kind is TIDE-style (arXiv 2008.08115); ranking quality as in GFL (2006.04388).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from . import protocol
from .records import Records
from .stats import correlations

__all__ = ["KINDS", "FP_KINDS", "THRESHOLDS", "HIST_BINS", "RECALL_LEVELS", "classify", "best_same_class_iou"]
__all__ += ["ranking_quality", "average_precision", "map50", "summarize_detections", "detection_kinds", "diagnose"]

#: Detection kinds, true positives first.
KINDS: tuple[str, ...] = ("tp", "duplicate", "wrong_class", "localization", "background")
#: The false-positive kinds.
FP_KINDS: tuple[str, ...] = KINDS[1:]
#: Fixed confidence thresholds at which counts are reported (plus each run's F1-optimal one, key ``f1``).
THRESHOLDS: tuple[float, ...] = (protocol.OPERATING_CONF, 0.5)
#: Bins of the score histograms (equal width on [0, 1]).
HIST_BINS = 50
#: Recall levels at which counts are reported (``recall_grid``).
RECALL_LEVELS: tuple[float, ...] = tuple(round(i / 100, 2) for i in range(1, 101))
_TP, _DUPLICATE, _WRONG_CLASS, _LOCALIZATION, _BACKGROUND = range(len(KINDS))


def classify(
    records: Records,
    iou_match: float = protocol.IOU_MATCH,
    iou_background: float = protocol.IOU_BACKGROUND,
) -> dict[str, np.ndarray]:
    """Classify every detection as ``tp`` or a false-positive kind (module docstring; IoU ties: first in ``gt``).

    Args:
        records: the run's records.
        iou_match: IoU for a match (TP, duplicate, wrong class).
        iou_background: best IoU below which a false positive is background.

    Returns:
        dict, in record order: ``kind`` (N,) int64 indices into ``KINDS``; ``iou`` (N,) float64, the IoU with the
        matched ground truth for a TP and the best IoU with any ground truth of the image otherwise (0 without
        one); ``gt`` (N,) int64, the matched ground truth's index into ``records.gt_*`` (-1 when not a TP).
    """
    n = records.n_det
    kind = np.full(n, _BACKGROUND, dtype=np.int64)
    best = np.zeros(n)
    gt_index = np.full(n, -1, dtype=np.int64)
    if n == 0 or records.n_gt == 0:
        return {"kind": kind, "iou": best, "gt": gt_index}
    cols = records.gt_columns()
    iou_all = records.det_gt_iou.astype(np.float64)
    conf = records.det_conf.astype(np.float64)
    det_order = np.argsort(records.det_image, kind="stable")
    bounds = np.flatnonzero(np.diff(records.det_image[det_order])) + 1
    for dets in np.split(det_order, bounds):
        m = int((cols[dets[0]] >= 0).sum())
        if m == 0:
            continue
        gts = cols[dets[0], :m]
        iou = iou_all[dets, :m]
        same = records.det_cls[dets][:, None] == records.gt_cls[gts][None, :]
        matched = np.zeros(m, dtype=bool)
        for r in np.argsort(-conf[dets], kind="stable"):
            i, row = dets[r], iou[r]
            on_same = same[r] & (row >= iou_match)
            free = on_same & ~matched
            if free.any():
                j = int(np.argmax(np.where(free, row, -1.0)))
                matched[j] = True
                kind[i], best[i], gt_index[i] = _TP, row[j], gts[j]
                continue
            best[i] = max(float(row.max()), 0.0)
            if on_same.any():
                kind[i] = _DUPLICATE
            elif (~same[r] & (row >= iou_match)).any():
                kind[i] = _WRONG_CLASS
            elif best[i] >= iou_background:
                kind[i] = _LOCALIZATION
    return {"kind": kind, "iou": best, "gt": gt_index}


def best_same_class_iou(records: Records) -> np.ndarray:
    """(N,) float64: each detection's highest IoU with a same-class ground truth of its image (0 when none).

    Several detections may take the same ground truth: this measures how well each score ranks its own localization
    quality, not detection accuracy.
    """
    if records.n_det == 0 or records.n_gt == 0:
        return np.zeros(records.n_det)
    cols = records.gt_columns()
    same = (cols >= 0) & (records.det_cls[:, None] == records.gt_cls[np.where(cols >= 0, cols, 0)])
    return np.where(same, records.det_gt_iou.astype(np.float64), 0.0).max(axis=1).clip(min=0.0)


def ranking_quality(records: Records, max_points: int = protocol.MAX_POINTS, seed: int = 0) -> dict[str, Any]:
    """Score-vs-IoU ranking quality of the recorded detections (IoU: ``best_same_class_iou``).

    Returns:
        ``correlations(...)`` over all detections plus ``n_images``, ``n_gt``, ``conf_threshold`` (the validation's
        ``conf``) and ``points``: ``{"conf": [...], "iou": [...]}`` rounded to 5 digits, for the scatter plot: at
        most ``max_points``, a random subset drawn with ``seed``, in record order.
    """
    conf = records.det_conf.astype(np.float64)
    iou = best_same_class_iou(records)
    out = correlations(conf, iou)
    idx = np.arange(conf.size)
    if idx.size > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_points, replace=False))
    out.update(
        n_images=records.n_images,
        n_gt=records.n_gt,
        conf_threshold=records.params.get("conf"),
        points={"conf": [round(float(v), 5) for v in conf[idx]], "iou": [round(float(v), 5) for v in iou[idx]]},
    )
    return out


def average_precision(tp: np.ndarray, n_gt: int) -> float:
    """AP of detections sorted by descending score (``tp`` flags), by Ultralytics' ``compute_ap`` (101 points).

    Returns:
        the AP; 0 without detections (as Ultralytics' ``ap_per_class``), NaN without ground truth. The value is the
        installed Ultralytics' own: 8.4 ends the precision envelope at the highest recall reached (2 GT, one found
        first: 0.495), 8.3 ran it on linearly to recall 1 (0.75); a perfect ranking scores 0.995.
    """
    if n_gt <= 0:
        return math.nan
    tp = np.asarray(tp, dtype=np.float64).reshape(-1)
    if tp.size == 0:
        return 0.0
    from ultralytics.utils.metrics import compute_ap

    ctp = np.cumsum(tp)
    return float(compute_ap(ctp / n_gt, ctp / np.arange(1, tp.size + 1))[0])


def map50(scores: np.ndarray, kinds: np.ndarray, cls: np.ndarray, gt_counts: Mapping[int, int]) -> float:
    """AP50 (TPs from ``classify``) averaged over the classes with ground truth, as Ultralytics; NaN without any."""
    aps = []
    for c, n in gt_counts.items():
        if n > 0:
            sel = cls == c
            order = np.argsort(-scores[sel], kind="stable")
            aps.append(average_precision((kinds[sel][order] == _TP).astype(np.float64), n))
    return float(np.mean(aps)) if aps else math.nan


def _point(counts: Sequence[int | None], n_gt: int, at: str) -> list[tuple[str, float | None]]:
    """The rows of one operating point ``at``: count per kind, ``fp``, ``missed``, ``precision``, ``recall``."""
    n = sum(counts) if None not in counts else None
    tp = counts[_TP]
    rows = [(f"{k}@{at}", c) for k, c in zip(KINDS, counts)]
    if n is None or tp is None:
        return rows + [(f"{k}@{at}", None) for k in ("fp", "missed", "precision", "recall")]
    rows += [(f"fp@{at}", n - tp), (f"missed@{at}", n_gt - tp)]
    return rows + [(f"precision@{at}", tp / n if n else None), (f"recall@{at}", tp / n_gt if n_gt else None)]


def _f1_threshold(scores: np.ndarray, kinds: np.ndarray, n_gt: int) -> float | None:
    """Confidence threshold with the highest F1, detections and ground truths pooled over classes."""
    if scores.size == 0 or n_gt == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    f1 = 2 * np.cumsum(kinds[order] == _TP) / (np.arange(1, s.size + 1) + n_gt)  # 2PR / (P + R)
    f1 = np.where(np.r_[s[1:] != s[:-1], True], f1, -1.0)  # a threshold keeps all detections with equal score
    return float(s[int(np.argmax(f1))])


def _recall_grid(scores: np.ndarray, kinds: np.ndarray, n_gt: int) -> list[tuple[str, float | None]]:
    """Per ``RECALL_LEVELS`` level ``r``: the highest threshold reaching it and the counts there (``@recall<r>``)."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    cum = np.cumsum(kinds[order][:, None] == np.arange(len(KINDS))[None, :], axis=0)
    rows: list[tuple[str, float | None]] = []
    reached = 0.0
    for r in RECALL_LEVELS:
        need = math.ceil(r * n_gt - 1e-9)
        threshold, counts = None, [None] * len(KINDS)
        if n_gt and s.size and need <= cum[-1, _TP]:
            i = int(np.searchsorted(cum[:, _TP], need))  # the detection that brings the need-th TP
            last = int(np.searchsorted(-s, -s[i], side="right")) - 1  # keep all detections with the same score
            threshold, counts, reached = float(s[i]), cum[last].tolist(), r
        rows += [(f"threshold@recall{r:.2f}", threshold), *_point(counts, n_gt, f"recall{r:.2f}")]
    return [("recall_max", reached), *rows]


def summarize_detections(
    scores: np.ndarray,
    kinds: np.ndarray,
    cls: np.ndarray,
    ious: np.ndarray,
    gt_counts: Mapping[int, int],
    thresholds: Sequence[float] = THRESHOLDS,
) -> pl.DataFrame:
    """The diagnosis numbers of classified detections (all images of a run pooled), one row per ``metric``.

    ``scores``, ``kinds`` (indices into ``KINDS``), ``cls`` and ``ious`` hold one value per detection, as ``classify``
    gives them; ``gt_counts``: ground-truth boxes per class. Metrics: ``n_det``, ``n_gt``, ``tp``, ``ap50``,
    ``ap50_tp_only`` (every FP removed: the recall ceiling), ``ap50_without_<kind>`` and ``ap50_cost_<kind>``
    per FP kind (TIDE), ``score_<kind>`` (mean score); per operating point ``P`` (each of ``thresholds`` as ``0.25``,
    the F1-optimal ``f1``, each ``RECALL_LEVELS`` level as ``recall0.72``) ``<kind>@P``, ``fp@P``, ``missed@P``,
    ``precision@P``, ``recall@P``, ``threshold@P`` (not for fixed thresholds) and ``tp_iou@P`` (not for recall levels);
    ``recall_max``: the highest level reached. ``value``: null where undefined.
    """
    scores, ious = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (scores, ious))
    kinds, cls = (np.asarray(a, dtype=np.int64).reshape(-1) for a in (kinds, cls))
    gt_counts = {int(c): int(n) for c, n in gt_counts.items()}
    n_gt, tp = sum(gt_counts.values()), kinds == _TP
    t_f1 = _f1_threshold(scores, kinds, n_gt)
    rows: list[tuple[str, Any]] = [("n_det", scores.size), ("n_gt", n_gt), ("tp", int(tp.sum()))]
    ap = map50(scores, kinds, cls, gt_counts)
    rows += [("ap50", ap), ("ap50_tp_only", map50(scores[tp], kinds[tp], cls[tp], gt_counts))]
    for i, k in enumerate(FP_KINDS, 1):
        keep = kinds != i
        without = map50(scores[keep], kinds[keep], cls[keep], gt_counts)
        rows += [(f"ap50_without_{k}", without), (f"ap50_cost_{k}", without - ap)]
    rows += [
        (f"score_{k}", float(scores[kinds == i].mean()) if (kinds == i).any() else None) for i, k in enumerate(KINDS)
    ]
    for at, t in [*((f"{t:g}", t) for t in thresholds), ("f1", t_f1)]:
        kept = scores >= (math.inf if t is None else t)
        counts = [int((kinds[kept] == i).sum()) for i in range(len(KINDS))]
        rows += _point(counts, n_gt, at) + [
            (f"tp_iou@{at}", float(ious[tp & kept].mean()) if (tp & kept).any() else None)
        ]
    rows.append(("threshold@f1", t_f1))
    rows += _recall_grid(scores, kinds, n_gt)
    return pl.DataFrame(rows, schema={"metric": pl.Utf8, "value": pl.Float64}, orient="row").with_columns(
        pl.col("value").fill_nan(None)
    )


def detection_kinds(records: Records, iou_match: float = protocol.IOU_MATCH) -> pl.DataFrame:
    """Each detection's ``conf`` and ``kind`` (``classify``'s, by name): what the score histograms are drawn from."""
    kind = classify(records, iou_match=iou_match)["kind"]
    return pl.DataFrame({"conf": records.det_conf.astype(np.float64), "kind": np.asarray(KINDS)[kind]})


def diagnose(
    records: Records,
    iou_match: float = protocol.IOU_MATCH,
    iou_background: float = protocol.IOU_BACKGROUND,
    thresholds: Sequence[float] = THRESHOLDS,
) -> pl.DataFrame:
    """The false-positive diagnosis of one run: ``classify`` then ``summarize_detections``, all images pooled.

    Adds ``n_images`` and ``ultralytics/<metric>`` (the validation's own precision, recall, mAP50, mAP50-95 of the
    same pass).
    """
    c = classify(records, iou_match=iou_match, iou_background=iou_background)
    out = summarize_detections(records.det_conf, c["kind"], records.det_cls, c["iou"], records.gt_counts(), thresholds)
    extra = [("n_images", float(records.n_images))] + [(f"ultralytics/{k}", v) for k, v in records.metrics.items()]
    return pl.concat([out, pl.DataFrame(extra, schema=out.schema, orient="row")])
