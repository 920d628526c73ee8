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

__all__ = ["KINDS", "FP_KINDS", "HIST_BINS", "classify", "ranking_quality", "summarize_detections"]
__all__ += ["detection_kinds", "diagnose"]

#: Detection kinds, true positives first.
KINDS: tuple[str, ...] = ("tp", "duplicate", "wrong_class", "localization", "background")
#: The false-positive kinds.
FP_KINDS: tuple[str, ...] = KINDS[1:]
#: Fixed confidence thresholds at which counts are reported (plus each run's F1-optimal one, key ``f1``).
THRESHOLDS: tuple[float, ...] = (protocol.OPERATING_CONF, 0.5)
#: Bins of the score histograms (equal width on [0, 1]).
HIST_BINS = 50
#: Recall levels at which counts are reported (``<kind>@recall0.72`` ...).
RECALL_LEVELS: tuple[float, ...] = tuple(round(i / 100, 2) for i in range(1, 101))
_TP, _DUPLICATE, _WRONG_CLASS, _LOCALIZATION, _BACKGROUND = range(len(KINDS))
_POINT = (*KINDS, "fp", "missed", "precision", "recall")


def classify(
    records: Records, iou_match: float = protocol.IOU_MATCH, iou_background: float = protocol.IOU_BACKGROUND
) -> dict[str, np.ndarray]:
    """Classify every detection as ``tp`` or a false-positive kind (module docstring; IoU ties: first in ``gt``).

    Returns:
        In record order: ``kind`` (N,) int64 indices into ``KINDS``; ``iou`` (N,) the matched ground truth's IoU for
        a TP, else the best IoU with any ground truth (0 without one); ``gt`` (N,) the TP's ground truth (else -1).
    """
    n = records.n_det
    kind, best, gt_index = np.full(n, _BACKGROUND), np.zeros(n), np.full(n, -1)
    cols, iou_all = records.gt_columns(), records.det_gt_iou.astype(np.float64)
    order = np.lexsort((-records.det_conf.astype(np.float64), records.det_image))  # by image, then confidence
    for dets in np.split(order, np.flatnonzero(np.diff(records.det_image[order])) + 1) if n else []:
        if not (gts := cols[dets[0]][cols[dets[0]] >= 0]).size:
            continue
        same = records.det_cls[dets][:, None] == records.gt_cls[gts][None, :]
        matched = np.zeros(gts.size, dtype=bool)
        for i, row, on_same in zip(dets, iou_all[dets, : gts.size], same):
            hit = on_same & (row >= iou_match)
            if (free := hit & ~matched).any():
                j = int(np.argmax(np.where(free, row, -1.0)))
                matched[j] = True
                kind[i], best[i], gt_index[i] = _TP, row[j], gts[j]
                continue
            best[i] = max(float(row.max()), 0.0)
            if hit.any():
                kind[i] = _DUPLICATE
            elif (row >= iou_match).any():
                kind[i] = _WRONG_CLASS
            elif best[i] >= iou_background:
                kind[i] = _LOCALIZATION
    return {"kind": kind, "iou": best, "gt": gt_index}


def _best_same_class_iou(records: Records) -> np.ndarray:
    """(N,) each detection's highest IoU with a same-class ground truth of its image (0: none; shared GTs allowed)."""
    if records.n_gt == 0:
        return np.zeros(records.n_det)
    cols = records.gt_columns()
    same = (cols >= 0) & (records.det_cls[:, None] == records.gt_cls[np.where(cols >= 0, cols, 0)])
    return np.where(same, records.det_gt_iou.astype(np.float64), 0.0).max(axis=1, initial=0.0)


def ranking_quality(records: Records, max_points: int = protocol.MAX_POINTS, seed: int = 0) -> dict[str, Any]:
    """Score-vs-IoU ``stats.correlations`` of a run; the IoU: each detection's best with a same-class ground truth.

    Returns:
        ``correlations``' keys, ``n_images``, ``n_gt``, ``conf_threshold`` and ``points``: ``{"conf": [...], "iou":
        [...]}`` (5 digits) for the scatter plot, at most ``max_points`` drawn with ``seed``, in record order.
    """
    conf, iou = records.det_conf.astype(np.float64), _best_same_class_iou(records)
    idx = np.arange(conf.size)
    if idx.size > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_points, replace=False))
    points = {"conf": [round(float(v), 5) for v in conf[idx]], "iou": [round(float(v), 5) for v in iou[idx]]}
    extra = {"n_images": records.n_images, "n_gt": records.n_gt, "conf_threshold": records.params.get("conf")}
    return correlations(conf, iou) | extra | {"points": points}


def _map50(scores: np.ndarray, tp: np.ndarray, cls: np.ndarray, gt_counts: Mapping[int, int]) -> float:
    """AP50 by the installed Ultralytics' ``compute_ap`` averaged over the classes with ground truth (NaN: none)."""
    from ultralytics.utils.metrics import compute_ap

    aps = []
    for c, n_gt in gt_counts.items():
        hits = np.cumsum(tp[cls == c][np.argsort(-scores[cls == c], kind="stable")])
        aps.append(float(compute_ap(hits / n_gt, hits / np.arange(1, hits.size + 1))[0]) if hits.size else 0.0)
    return float(np.mean(aps)) if aps else math.nan


def _point(counts: np.ndarray | None, n_gt: int, at: str) -> list[tuple[str, float | None]]:
    """The rows of operating point ``at``: count per kind, ``fp``, ``missed``, ``precision``, ``recall``."""
    if counts is None:
        return [(f"{k}@{at}", None) for k in _POINT]
    n, tp = int(counts.sum()), int(counts[_TP])
    values = [*counts.tolist(), n - tp, n_gt - tp, tp / n if n else None, tp / n_gt if n_gt else None]
    return [(f"{k}@{at}", v) for k, v in zip(_POINT, values)]


def summarize_detections(
    scores: np.ndarray,
    kinds: np.ndarray,
    cls: np.ndarray,
    ious: np.ndarray,
    gt_counts: Mapping[int, int],
    thresholds: Sequence[float] = THRESHOLDS,
) -> pl.DataFrame:
    """The diagnosis numbers of classified detections (a run's images pooled).

    (N,) ``scores``, ``kinds``, ``cls``, ``ious``: each detection's confidence, ``classify``'s kind, class and
    ``classify``'s IoU; ``gt_counts``: ground-truth boxes per class; ``thresholds``: fixed confidence thresholds.

    Returns:
        ``metric``, ``value`` (null: undefined): ``n_det``, ``n_gt``, ``tp``, ``ap50``, ``ap50_tp_only``,
        ``ap50_without_<kind>``, ``ap50_cost_<kind>``, ``score_<kind>``; per operating point ``P`` (``0.25``, ``f1``,
        ``recall0.72`` ...) ``<kind>@P``, ``fp@P``, ``missed@P``, ``precision@P``, ``recall@P``, ``threshold@P``
        (F1 and recall points), ``tp_iou@P`` (thresholds and F1); ``recall_max``.
    """
    scores, ious = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (scores, ious))
    kinds, cls = (np.asarray(a, dtype=np.int64).reshape(-1) for a in (kinds, cls))
    gt_counts = {int(c): int(n) for c, n in gt_counts.items() if n > 0}
    n_gt, tp = sum(gt_counts.values()), kinds == _TP
    order = np.argsort(-scores, kind="stable")
    s, onehot = scores[order], kinds[order][:, None] == np.arange(len(KINDS))
    cum = np.cumsum(np.vstack([np.zeros((1, len(KINDS)), dtype=bool), onehot]), axis=0)  # row k: counts of the top k
    t_f1 = None
    if s.size and n_gt:  # the F1-optimal threshold, keeping all detections of equal score
        f1 = np.where(np.r_[s[1:] != s[:-1], True], 2 * cum[1:, _TP] / (np.arange(1, s.size + 1) + n_gt), -1.0)
        t_f1 = float(s[int(np.argmax(f1))])
    ap = _map50(scores, tp, cls, gt_counts)
    rows: list[tuple[str, Any]] = [("n_det", s.size), ("n_gt", n_gt), ("tp", int(tp.sum())), ("ap50", ap)]
    rows.append(("ap50_tp_only", _map50(scores[tp], tp[tp], cls[tp], gt_counts)))
    for i, k in enumerate(FP_KINDS, 1):
        without = _map50(scores[kinds != i], tp[kinds != i], cls[kinds != i], gt_counts)
        rows += [(f"ap50_without_{k}", without), (f"ap50_cost_{k}", without - ap)]
    rows += [(f"score_{k}", scores[kinds == i].mean() if (kinds == i).any() else None) for i, k in enumerate(KINDS)]
    for name, t in [*((f"{t:g}", t) for t in thresholds), ("f1", math.inf if t_f1 is None else t_f1)]:
        kept = tp & (scores >= t)
        rows += _point(cum[np.searchsorted(-s, -t, side="right")], n_gt, name)
        rows.append((f"tp_iou@{name}", ious[kept].mean() if kept.any() else None))
    grid, reached = [], 0.0
    for r in RECALL_LEVELS:  # the highest threshold reaching recall r, and the counts there
        need, t, counts = math.ceil(r * n_gt - 1e-9), None, None
        if n_gt and need <= cum[-1, _TP]:
            t = float(s[np.searchsorted(cum[1:, _TP], need)])  # the score of the need-th TP
            counts, reached = cum[np.searchsorted(-s, -t, side="right")], r
        grid += [(f"threshold@recall{r:.2f}", t), *_point(counts, n_gt, f"recall{r:.2f}")]
    rows += [("threshold@f1", t_f1), ("recall_max", reached), *grid]
    frame = pl.DataFrame(rows, schema={"metric": pl.Utf8, "value": pl.Float64}, orient="row")
    return frame.with_columns(pl.col("value").fill_nan(None))


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
    """One run's diagnosis: ``summarize_detections`` of ``classify``, ``n_images`` and the pass's ``ultralytics/*``.

    Returns:
        ``metric``, ``value`` (null: undefined).
    """
    c = classify(records, iou_match=iou_match, iou_background=iou_background)
    out = summarize_detections(records.det_conf, c["kind"], records.det_cls, c["iou"], records.gt_counts(), thresholds)
    extra = [("n_images", float(records.n_images))] + [(f"ultralytics/{k}", v) for k, v in records.metrics.items()]
    return pl.concat([out, pl.DataFrame(extra, schema=out.schema, orient="row")])
