"""Pure numpy functions of a run's ``Records``: false positives by kind, AP50 costs, ranking quality.

``classify`` takes each image's detections in descending confidence (COCO-style; no IoU recomputed): ``tp`` (IoU >=
``IOU_MATCH`` with a still unmatched same-class ground truth, the highest-IoU one), ``duplicate`` (such a ground truth,
all matched), ``wrong_class`` (IoU >= ``IOU_MATCH`` with another class), ``localization`` (best IoU in
[``IOU_BACKGROUND``, ``IOU_MATCH``)), ``background``. Greedy in confidence order, so the counts at any ``conf >= t``
follow from one classification. AP50 costs per FP kind as TIDE (arXiv 2008.08115); ranking quality as GFL
(2006.04388). Only the AP imports Ultralytics (``compute_ap``).
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

    Returns:
        in record order: ``kind`` (N,) int64 indices into ``KINDS``; ``iou`` (N,) the matched ground truth's IoU for
        a TP, else the best IoU with any ground truth (0 without one); ``gt`` (N,) the TP's ground truth (else -1).
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
    """(N,) each detection's highest IoU with a same-class ground truth of its image (0: none; shared GTs allowed)."""
    if records.n_det == 0 or records.n_gt == 0:
        return np.zeros(records.n_det)
    cols = records.gt_columns()
    same = (cols >= 0) & (records.det_cls[:, None] == records.gt_cls[np.where(cols >= 0, cols, 0)])
    return np.where(same, records.det_gt_iou.astype(np.float64), 0.0).max(axis=1).clip(min=0.0)


def ranking_quality(records: Records, max_points: int = protocol.MAX_POINTS, seed: int = 0) -> dict[str, Any]:
    """Score-vs-IoU ``correlations`` (IoU: ``best_same_class_iou``) with ``n_images``, ``n_gt``, ``conf_threshold``.

    ``points``: ``{"conf": [...], "iou": [...]}`` (5 digits) for the scatter plot, at most ``max_points`` drawn with
    ``seed``, in record order.
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
    """AP of detections sorted by descending score (``tp`` flags) by the installed Ultralytics' ``compute_ap``.

    0 without detections, NaN without ground truth (2 GT, one found first: 0.495 in 8.4, 0.75 in 8.3).
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
    """The diagnosis numbers of classified detections (a run's images pooled): ``metric``, ``value`` (null: undefined).

    Per detection ``scores``, ``kinds``, ``cls``, ``ious`` (``classify``'s); ``gt_counts``: ground truths per class.
    Metrics: ``n_det``, ``n_gt``, ``tp``, ``ap50``, ``ap50_tp_only``, ``ap50_without_<kind>``, ``ap50_cost_<kind>``,
    ``score_<kind>``; per operating point ``P`` (``0.25``, ``f1``, ``recall0.72`` ...) ``<kind>@P``, ``fp@P``,
    ``missed@P``, ``precision@P``, ``recall@P``, ``threshold@P`` and ``tp_iou@P``; ``recall_max``.
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
    """One run's diagnosis: ``classify``, ``summarize_detections``, ``n_images`` and the pass's ``ultralytics/*``."""
    c = classify(records, iou_match=iou_match, iou_background=iou_background)
    out = summarize_detections(records.det_conf, c["kind"], records.det_cls, c["iou"], records.gt_counts(), thresholds)
    extra = [("n_images", float(records.n_images))] + [(f"ultralytics/{k}", v) for k, v in records.metrics.items()]
    return pl.concat([out, pl.DataFrame(extra, schema=out.schema, orient="row")])
