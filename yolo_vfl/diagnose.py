"""Diagnosis of an A/B experiment: where do the false positives come from, and which kind costs the points?

The detections are those Ultralytics validation scores for a run's final model (``best.pt``) on the val split (its
validator, dataloader and multi-label NMS, so the numbers match the reported mAP, precision and recall). Each image's
detections are classified COCO-style, in descending confidence order:

* ``tp``: IoU >= 0.5 with a ground-truth box of the same class that no higher-scored detection has matched yet (the
  one with the highest IoU among those);
* ``duplicate``: IoU >= 0.5 with a same-class ground truth, but all of those are already matched;
* ``wrong_class``: not the above, and IoU >= 0.5 with a ground truth of another class;
* ``localization``: not the above, and 0.1 <= best IoU with any ground truth < 0.5;
* ``background``: best IoU with any ground truth < 0.1.

Because the matching is greedy in confidence order, the detections above any threshold are classified exactly as if
the lower-scored ones did not exist: counts at ``conf >= t`` and the ground truths missed at ``t`` (those without a
true positive scored ``>= t``) all follow from one classification at the lowest threshold.

Arms trained with different losses put their scores on different scales, so counts at a fixed threshold (0.25, 0.5)
compare different operating points. Two views do not depend on the scale: the counts at each run's F1-optimal
threshold (about where Ultralytics reports precision and recall), and the counts at an **equal recall** (the
threshold at which each run has found the same number of true positives; the false positives that outrank them, by
kind, are what costs the precision there).

Per run (``diagnose_run``): counts per kind (all detections, at conf 0.25 and 0.5, at the F1-optimal threshold, and on
a grid of recall levels), mean score per kind, score histograms, missed ground truths, and AP50 together with the AP50
each false-positive kind costs (TIDE-style, arXiv 2008.08115: the AP50 gained when the detections of that kind are
removed; removing false positives never changes which detections are true positives).

Per experiment (``diagnose_experiment``, ``yolo-vfl ab diagnose out=DIR``): ``diagnosis.md``, ``diagnosis.csv``,
``fp_scores.png`` (detections by kind and score distributions, per arm) and ``pr_curves.png`` (precision and recall
per epoch, from each run's ``results.csv``), aggregated per arm (mean and sample std over seeds).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .report import (
    _figure,
    _fmt,
    _get,
    _group,
    _pm,
    _save_figure,
    _table,
    atomic_write_json,
    atomic_write_text,
    box_iou,
    load_results,
    mean_std,
    plot_epoch_band,
)

__all__ = [
    "KINDS",
    "FP_KINDS",
    "THRESHOLDS",
    "classify_detections",
    "summarize_detections",
    "diagnose_run",
    "common_recall",
    "aggregate",
    "findings",
    "diagnosis_csv_text",
    "diagnosis_markdown",
    "plot_fp_scores",
    "plot_pr_curves",
    "diagnose_experiment",
]

#: Detection kinds, true positives first.
KINDS: tuple[str, ...] = ("tp", "duplicate", "wrong_class", "localization", "background")
#: The false-positive kinds.
FP_KINDS: tuple[str, ...] = KINDS[1:]
#: Fixed confidence thresholds at which counts are reported (plus each run's F1-optimal one, key ``f1``).
THRESHOLDS: tuple[float, ...] = (0.25, 0.5)
#: IoU from which a detection counts as on a ground-truth box.
IOU_MATCH = 0.5
#: IoU below which a detection counts as on background.
IOU_BACKGROUND = 0.1
#: Bins of the stored score histograms (equal width on [0, 1]).
HIST_BINS = 50
#: Recall levels at which counts are stored per run (``recall_grid``).
RECALL_LEVELS: tuple[float, ...] = tuple(round(i / 100, 2) for i in range(1, 101))
#: Format version of ``diagnosis.json``; a cached file of another version is recomputed.
DIAG_VERSION = 2
#: Plot colours per kind.
COLORS = {
    "tp": "tab:green",
    "duplicate": "tab:orange",
    "wrong_class": "tab:purple",
    "localization": "tab:blue",
    "background": "tab:red",
}
_TP = 0


# ------------------------------------------------------------------------------------------------ classification
def classify_detections(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_cls: np.ndarray,
    gt_boxes: np.ndarray,
    gt_cls: np.ndarray,
    iou_match: float = IOU_MATCH,
    iou_background: float = IOU_BACKGROUND,
) -> dict[str, np.ndarray]:
    """Classify the detections of one image as ``tp`` or a false-positive kind (see the module docstring).

    Detections are processed in descending score (ties: input order); a true positive takes the unmatched same-class
    ground truth with the highest IoU (>= ``iou_match``), as in COCO evaluation.

    Args:
        det_boxes: (N, 4) xyxy detections.
        det_scores: (N,) their confidences.
        det_cls: (N,) their classes.
        gt_boxes: (M, 4) xyxy ground-truth boxes.
        gt_cls: (M,) their classes.
        iou_match: IoU for a match (TP, duplicate, wrong class).
        iou_background: best IoU below which a detection is background.

    Returns:
        dict, in input order: ``kind`` (N,) indices into ``KINDS``, ``iou`` (N,) the IoU with the matched ground truth
        for a TP and the best IoU with any ground truth otherwise, ``gt`` (N,) the matched ground-truth index (-1 when
        not a TP).
    """
    det_scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    det_cls = np.asarray(det_cls).reshape(-1).astype(np.int64)
    gt_cls = np.asarray(gt_cls).reshape(-1).astype(np.int64)
    n, m = det_scores.size, gt_cls.size
    kind = np.full(n, KINDS.index("background"), dtype=np.int64)
    best = np.zeros(n)
    gt_index = np.full(n, -1, dtype=np.int64)
    if n == 0 or m == 0:
        return {"kind": kind, "iou": best, "gt": gt_index}
    iou = box_iou(det_boxes, gt_boxes)
    same = det_cls[:, None] == gt_cls[None, :]
    matched = np.zeros(m, dtype=bool)
    for i in np.argsort(-det_scores, kind="stable"):
        row = iou[i]
        on_same = same[i] & (row >= iou_match)
        free = on_same & ~matched
        if free.any():
            j = int(np.argmax(np.where(free, row, -1.0)))
            matched[j] = True
            kind[i], best[i], gt_index[i] = _TP, row[j], j
            continue
        best[i] = row.max()
        if on_same.any():
            kind[i] = KINDS.index("duplicate")
        elif ((~same[i]) & (row >= iou_match)).any():
            kind[i] = KINDS.index("wrong_class")
        elif best[i] >= iou_background:
            kind[i] = KINDS.index("localization")
    return {"kind": kind, "iou": best, "gt": gt_index}


def _ap(tp: np.ndarray, n_gt: int) -> float:
    """Average precision of detections sorted by descending score (``tp`` flags), as Ultralytics' ``compute_ap``."""
    if n_gt == 0:
        return math.nan
    if tp.size == 0:
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, tp.size + 1)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    y = np.interp(x, mrec, mpre)
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))  # trapezoid, as Ultralytics' compute_ap


def _map50(scores: np.ndarray, kinds: np.ndarray, cls: np.ndarray, gt_counts: Mapping[int, int]) -> float:
    """AP50 averaged over the classes that have ground truth (as Ultralytics)."""
    aps = []
    for c, n in gt_counts.items():
        if n <= 0:
            continue
        sel = cls == c
        order = np.argsort(-scores[sel], kind="stable")
        aps.append(_ap((kinds[sel][order] == _TP).astype(np.float64), n))
    return float(np.mean(aps)) if aps else math.nan


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _tally(counts: dict[str, int], n_gt: int) -> dict[str, Any]:
    """Counts per kind plus FP, missed GT, precision and recall (None where undefined)."""
    n = sum(counts.values())
    return {
        "counts": counts,
        "fp": n - counts["tp"],
        "missed_gt": n_gt - counts["tp"],
        "precision": counts["tp"] / n if n else None,
        "recall": counts["tp"] / n_gt if n_gt else None,
    }


def _at(scores: np.ndarray, kinds: np.ndarray, n_gt: int, t: float) -> dict[str, Any]:
    sel = scores >= t
    return _tally({k: int((kinds[sel] == i).sum()) for i, k in enumerate(KINDS)}, n_gt)


def _f1_threshold(scores: np.ndarray, kinds: np.ndarray, n_gt: int) -> float | None:
    """Confidence threshold with the highest F1, detections and ground truths pooled over classes."""
    if scores.size == 0 or n_gt == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    ctp = np.cumsum(kinds[order] == _TP)
    k = np.arange(1, s.size + 1)
    f1 = 2 * ctp / (k + n_gt)  # 2PR / (P + R) with P = ctp / k, R = ctp / n_gt
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # a threshold keeps all detections with equal score
    f1 = np.where(last_of_tie, f1, -1.0)
    return float(s[int(np.argmax(f1))])


def summarize_detections(
    scores: np.ndarray,
    kinds: np.ndarray,
    cls: np.ndarray,
    ious: np.ndarray,
    gt_counts: Mapping[int, int],
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict[str, Any]:
    """Counts, scores, missed ground truths and AP50 costs of classified detections (all images of a run pooled).

    Args:
        scores: (N,) confidences.
        kinds: (N,) indices into ``KINDS`` (``classify_detections``).
        cls: (N,) predicted classes.
        ious: (N,) the ``iou`` of ``classify_detections``.
        gt_counts: ground-truth boxes per class.
        thresholds: confidence thresholds for the ``at`` counts (the F1-optimal one is added as ``f1``).

    Returns:
        dict with ``n_det``, ``n_gt``, ``counts`` (per kind, all detections), ``at`` (per threshold ``"0.25"`` ...
        and ``"f1"``: ``counts``, ``fp``, ``missed_gt``, ``precision``, ``recall``; ``f1`` also ``threshold``),
        ``mean_score`` and ``median_score`` per kind, ``tp_mean_iou`` (all, and per threshold), ``hist``
        (``edges`` and counts per kind), ``recall_grid`` (``recall`` levels 0.01 ... 1, and per level the
        ``threshold`` and ``counts`` per kind at the highest threshold reaching it, None where unreached), ``ap50``,
        ``ap50_without`` and ``ap50_cost`` per FP kind, and ``ap50_tp_only`` (all false positives removed: the
        recall ceiling).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    kinds = np.asarray(kinds, dtype=np.int64).reshape(-1)
    cls = np.asarray(cls, dtype=np.int64).reshape(-1)
    ious = np.asarray(ious, dtype=np.float64).reshape(-1)
    gt_counts = {int(c): int(n) for c, n in gt_counts.items()}
    n_gt = sum(gt_counts.values())
    out: dict[str, Any] = {
        "n_det": int(scores.size),
        "n_gt": n_gt,
        "counts": {k: int((kinds == i).sum()) for i, k in enumerate(KINDS)},
        "at": {},
    }
    for t in thresholds:
        out["at"][f"{t:g}"] = _at(scores, kinds, n_gt, t)
    t_f1 = _f1_threshold(scores, kinds, n_gt)
    f1 = _at(scores, kinds, n_gt, t_f1) if t_f1 is not None else _at(scores, kinds, n_gt, math.inf)
    p, r = f1["precision"] or 0.0, f1["recall"] or 0.0
    f1.update(threshold=t_f1, f1=2 * p * r / (p + r) if p + r > 0 else 0.0)
    out["at"]["f1"] = f1
    out["mean_score"] = {k: _mean(scores[kinds == i]) for i, k in enumerate(KINDS)}
    out["median_score"] = {
        k: float(np.median(scores[kinds == i])) if (kinds == i).any() else None for i, k in enumerate(KINDS)
    }
    tp = kinds == _TP
    out["tp_mean_iou"] = {"all": _mean(ious[tp])}
    for key, t in [*((f"{t:g}", t) for t in thresholds), ("f1", t_f1)]:
        out["tp_mean_iou"][key] = _mean(ious[tp & (scores >= t)]) if t is not None else None
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    out["hist"] = {"edges": [round(float(e), 6) for e in edges]}
    for i, k in enumerate(KINDS):
        out["hist"][k] = np.histogram(np.clip(scores[kinds == i], 0.0, 1.0), bins=edges)[0].tolist()
    out["recall_grid"] = _recall_grid(scores, kinds, n_gt)
    ap = _map50(scores, kinds, cls, gt_counts)
    out["ap50"] = ap
    out["ap50_without"], out["ap50_cost"] = {}, {}
    for k in FP_KINDS:
        keep = kinds != KINDS.index(k)
        without = _map50(scores[keep], kinds[keep], cls[keep], gt_counts)
        out["ap50_without"][k] = without
        out["ap50_cost"][k] = without - ap
    out["ap50_tp_only"] = _map50(scores[tp], kinds[tp], cls[tp], gt_counts)
    return out


def _recall_grid(scores: np.ndarray, kinds: np.ndarray, n_gt: int) -> dict[str, Any]:
    """Counts per kind at the highest threshold that reaches each recall level (None where it is not reached)."""
    grid: dict[str, Any] = {"recall": list(RECALL_LEVELS), "threshold": [], "counts": {k: [] for k in KINDS}}
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    onehot = kinds[order][:, None] == np.arange(len(KINDS))[None, :]
    cum = np.cumsum(onehot, axis=0)
    ctp = cum[:, _TP] if s.size else np.zeros(0, dtype=np.int64)
    for r in RECALL_LEVELS:
        need = math.ceil(r * n_gt - 1e-9)
        if n_gt == 0 or s.size == 0 or need > ctp[-1]:
            grid["threshold"].append(None)
            for k in KINDS:
                grid["counts"][k].append(None)
            continue
        i = int(np.searchsorted(ctp, need))  # the detection that brings the need-th TP
        last = int(np.searchsorted(-s, -s[i], side="right")) - 1  # keep all detections with the same score
        grid["threshold"].append(float(s[i]))
        for j, k in enumerate(KINDS):
            grid["counts"][k].append(int(cum[last, j]))
    return grid


# ------------------------------------------------------------------------------------------------ one run
def diagnose_run(
    model_path: str | os.PathLike[str],
    data_yaml: str | os.PathLike[str],
    imgsz: int = 640,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    device: Any = None,
    batch: int = 16,
    workers: int = 0,
) -> dict[str, Any]:
    """Classify every detection of a trained detector on the val images and summarize by kind.

    The detections are those Ultralytics validation scores (its own validator, dataloader and multi-label NMS with
    ``conf``, ``iou``, ``max_det``): a box may carry several classes, each a detection of its own, exactly as in the
    mAP, precision and recall that Ultralytics reports. ``predict`` keeps one class per box and would diagnose other
    detections. Each image's detections are classified (``classify_detections``) and all images pooled
    (``summarize_detections``).

    Args:
        model_path: checkpoint (``best.pt``).
        data_yaml: dataset YAML (its ``val`` split is used).
        imgsz: image size (the training imgsz).
        conf: confidence threshold (0.001: Ultralytics' validation default).
        iou: NMS IoU threshold.
        max_det: detections kept per image.
        device: device (None: Ultralytics' default).
        batch: validation batch size.
        workers: dataloader workers.

    Returns:
        ``summarize_detections(...)`` plus ``params`` (the arguments above, paths as strings), ``n_images``,
        ``version`` and ``ultralytics`` (the validation's own precision, recall, mAP50, mAP50-95 on the same run).

    Raises:
        ValueError: an OBB model.
    """
    import tempfile

    from ultralytics import YOLO

    model = YOLO(str(model_path))
    if model.task == "obb":
        raise ValueError("the diagnosis classifies axis-aligned boxes; OBB models are not supported")
    records: list[tuple[np.ndarray, ...]] = []
    base = model.task_map[model.task]["validator"]

    class _Recorder(base):  # type: ignore[misc, valid-type]
        """The task's validator, recording each image's detections and ground truth (input-image pixels)."""

        def _process_batch(self, preds: dict[str, Any], batch: dict[str, Any]) -> dict[str, np.ndarray]:
            records.append(
                (
                    preds["bboxes"].detach().cpu().numpy().reshape(-1, 4).astype(np.float64),
                    preds["conf"].detach().cpu().numpy().reshape(-1).astype(np.float64),
                    preds["cls"].detach().cpu().numpy().reshape(-1).astype(np.int64),
                    batch["bboxes"].detach().cpu().numpy().reshape(-1, 4).astype(np.float64),
                    batch["cls"].detach().cpu().numpy().reshape(-1).astype(np.int64),
                )
            )
            return super()._process_batch(preds, batch)

    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(max(level, 30))  # WARNING: no per-run validation table in the middle of the diagnosis output
    try:
        with tempfile.TemporaryDirectory(prefix="yolo_vfl_diag_") as tmp:
            metrics = model.val(
                validator=_Recorder,
                data=str(data_yaml),
                imgsz=imgsz,
                conf=conf,
                iou=iou,
                max_det=max_det,
                device=device,
                batch=batch,
                workers=workers,
                split="val",
                plots=False,
                save_json=False,
                verbose=False,
                project=tmp,
                name="val",
                exist_ok=True,
            )
    finally:
        LOGGER.setLevel(level)
    scores, kinds, classes, ious = [], [], [], []
    gt_counts: dict[int, int] = {}
    for boxes, score, cls, gt_boxes, gt_cls in records:
        for c in gt_cls.tolist():
            gt_counts[c] = gt_counts.get(c, 0) + 1
        c = classify_detections(boxes, score, cls, gt_boxes, gt_cls)
        scores.append(score)
        kinds.append(c["kind"])
        classes.append(cls)
        ious.append(c["iou"])

    def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    out = summarize_detections(
        cat(scores, np.float64), cat(kinds, np.int64), cat(classes, np.int64), cat(ious, np.float64), gt_counts
    )
    rd = getattr(metrics, "results_dict", {}) or {}
    out.update(
        version=DIAG_VERSION,
        n_images=len(records),
        params=_params(model_path, data_yaml, imgsz, conf, iou, max_det),
        ultralytics={
            k: float(rd[f"metrics/{k}(B)"])
            for k in ("precision", "recall", "mAP50", "mAP50-95")
            if f"metrics/{k}(B)" in rd
        },
    )
    return out


def _params(model_path: Any, data_yaml: Any, imgsz: Any, conf: float, iou: float, max_det: int) -> dict[str, Any]:
    return {
        "model": str(model_path),
        "data": str(data_yaml),
        "imgsz": imgsz,
        "conf": conf,
        "iou": iou,
        "max_det": max_det,
        "iou_match": IOU_MATCH,
        "iou_background": IOU_BACKGROUND,
        "thresholds": list(THRESHOLDS),
    }


# ------------------------------------------------------------------------------------------------ aggregation
def _stat(row: dict[str, Any], key: str, values: Sequence[Any]) -> None:
    row[f"{key}_mean"], row[f"{key}_std"] = mean_std(values)


def _max_recall(d: Mapping[str, Any]) -> float:
    """The highest grid recall level a run reaches (0 when none)."""
    grid = d.get("recall_grid") or {}
    reached = [r for r, t in zip(grid.get("recall", []), grid.get("threshold", [])) if t is not None]
    return max(reached, default=0.0)


def common_recall(diagnoses: Sequence[Mapping[str, Any]], baseline: str = "bce") -> float | None:
    """The recall level at which the arms are compared: the baseline's recall at its F1-optimal threshold.

    The baseline runs' mean recall at their F1-optimal thresholds (all runs' when no baseline run is given), rounded
    down to the 0.01 grid and capped at the highest level every run reaches; None when that is below 0.01.
    """
    runs = [d for d in diagnoses if d.get("arm") == baseline] or list(diagnoses)
    recalls = [_get(d, "at", "f1", "recall") for d in runs]
    mean, _ = mean_std(recalls)
    if mean is None or not diagnoses:
        return None
    level = min(math.floor(mean * 100 + 1e-9) / 100, min(_max_recall(d) for d in diagnoses))
    return round(level, 2) if level >= 0.01 else None


def _at_recall(d: Mapping[str, Any], recall: float | None) -> dict[str, Any] | None:
    """``at``-style counts of a run at a grid recall level (None when unreached or absent)."""
    grid = d.get("recall_grid") or {}
    levels = grid.get("recall") or []
    if recall is None or not levels:
        return None
    i = int(np.argmin(np.abs(np.asarray(levels) - recall)))
    if abs(levels[i] - recall) > 1e-6 or grid["threshold"][i] is None:
        return None
    counts = {k: grid["counts"][k][i] for k in KINDS}
    return {**_tally(counts, d.get("n_gt") or 0), "threshold": grid["threshold"][i]}


def aggregate(
    diagnoses: Sequence[Mapping[str, Any]],
    baseline: str = "bce",
    order: Sequence[str] | None = None,
    recall: float | None = None,
) -> list[dict[str, Any]]:
    """One flat row per arm: mean and sample std over seeds of every count, score and AP50 cost.

    Args:
        diagnoses: per-run ``diagnose_run`` dicts with ``arm`` and ``seed`` (and ``run``) added.
        baseline: listed first; its F1-optimal recall is the default equal-recall level.
        order: arm order (default: baseline first, then as found).
        recall: the equal-recall level (default: ``common_recall(diagnoses, baseline)``).

    Returns:
        list of dicts with ``arm``, ``n_seeds``, ``seeds``, ``eq_recall`` (the level) and ``<key>_mean`` /
        ``<key>_std`` for: ``n_gt``, ``n_images``, ``n_det``, ``tp`` (all detections), ``ap50``, ``ap50_tp_only``;
        per operating point ``T`` (``0.25``, ``0.5``, ``f1``, ``eq``: the equal recall) ``<kind>@T``, ``fp@T``,
        ``missed@T``,
        ``precision@T``, ``recall@T``; ``tp_iou@T`` (not for ``eq``); ``threshold@f1``, ``threshold@eq``; per kind
        ``score_<kind>``; per FP kind ``ap50_cost_<kind>`` and ``ap50_without_<kind>``.
    """
    if recall is None:
        recall = common_recall(diagnoses, baseline)
    rows = []
    for arm, runs in _group(diagnoses, order, baseline).items():
        row: dict[str, Any] = {
            "arm": arm,
            "n_seeds": len(runs),
            "seeds": [r["seed"] for r in runs],
            "eq_recall": recall,
        }
        for key in ("n_gt", "n_images", "n_det", "ap50", "ap50_tp_only"):
            _stat(row, key, [r.get(key) for r in runs])
        _stat(row, "tp", [_get(r, "counts", "tp") for r in runs])
        ats = {t: [_get(r, "at", t) for r in runs] for t in [k for k in (runs[0].get("at") or {}) if k != "f1"]}
        ats["f1"] = [_get(r, "at", "f1") for r in runs]
        ats["eq"] = [_at_recall(r, recall) for r in runs]
        for t, values in ats.items():
            for k in KINDS:
                _stat(row, f"{k}@{t}", [_get(v, "counts", k) if v else None for v in values])
            for k in ("fp", "missed_gt", "precision", "recall"):
                _stat(row, f"{k.replace('_gt', '')}@{t}", [v.get(k) if v else None for v in values])
            if t != "eq":
                _stat(row, f"tp_iou@{t}", [_get(r, "tp_mean_iou", t) for r in runs])
        for t in ("f1", "eq"):
            _stat(row, f"threshold@{t}", [v.get("threshold") if v else None for v in ats[t]])
        for k in KINDS:
            _stat(row, f"score_{k}", [_get(r, "mean_score", k) for r in runs])
        for k in FP_KINDS:
            _stat(row, f"ap50_cost_{k}", [_get(r, "ap50_cost", k) for r in runs])
            _stat(row, f"ap50_without_{k}", [_get(r, "ap50_without", k) for r in runs])
        rows.append(row)
    return rows


def _deltas(row: Mapping[str, Any], base: Mapping[str, Any], fmt: str) -> dict[str, float]:
    out = {}
    for k in FP_KINDS:
        a, b = row.get(fmt.format(k=k) + "_mean"), base.get(fmt.format(k=k) + "_mean")
        if a is not None and b is not None:
            out[k] = a - b
    return out


def _growth_text(row: Mapping[str, Any], base: Mapping[str, Any], t: str) -> str | None:
    """``FPs a → b per run (precision p → q); by kind: ... → **kind** grows most`` at operating point ``t``."""
    deltas = _deltas(row, base, "{k}@" + t)
    if not deltas:
        return None
    by_kind = ", ".join(f"{k} {d:+.1f}" for k, d in sorted(deltas.items(), key=lambda kv: -kv[1]))
    top = max(deltas, key=lambda k: deltas[k])
    fp_b, fp_a = base.get(f"fp@{t}_mean"), row.get(f"fp@{t}_mean")
    p_b, p_a = base.get(f"precision@{t}_mean"), row.get(f"precision@{t}_mean")
    head = f"FPs per run {fp_b:.1f} → {fp_a:.1f}" if fp_b is not None and fp_a is not None else "FPs per run"
    if p_b is not None and p_a is not None:
        head += f" (precision {p_b:.3f} → {p_a:.3f})"
    verdict = f"**{top}** grows most" if deltas[top] > 0 else "no FP kind grows"
    return f"{head}; by kind {by_kind}: {verdict}"


def findings(rows: Sequence[Mapping[str, Any]], baseline: str = "bce") -> list[str]:
    """Short statements per non-baseline arm: which FP kind grows most against the baseline, and what AP50 it costs.

    Views, in order: equal recall (the baseline's F1-optimal recall: same number of TPs, so the extra FPs are what
    costs the precision), each arm's F1-optimal threshold, conf >= 0.25 (scores on different scales make this one the
    least comparable), and the AP50 gap to the baseline with one FP kind removed from both arms (the kind whose
    removal narrows the gap most is the one that costs the points).

    Returns:
        one markdown bullet body per arm (sub-bullets joined with newlines).
    """
    base = next((r for r in rows if r["arm"] == baseline), None)
    if base is None:
        return [f"No baseline arm `{baseline}` among the diagnosed runs: no comparison."]
    out = []
    for row in rows:
        if row["arm"] == baseline:
            continue
        parts = []
        recall = row.get("eq_recall")
        views = [
            ("eq", f"at equal recall {recall:.2f} (≈{_fmt(base.get('tp@eq_mean'), 0)} TPs per run)" if recall else ""),
            ("f1", "at each arm's F1-optimal threshold"),
            ("0.25", "at conf ≥ 0.25"),
        ]
        for t, label in views:
            text = _growth_text(row, base, t) if label else None
            if text:
                parts.append(f"{label}: {text}")
        ap, bap = row.get("ap50_mean"), base.get("ap50_mean")
        if ap is not None and bap is not None:
            gaps = {}
            for k in FP_KINDS:
                a, b = row.get(f"ap50_without_{k}_mean"), base.get(f"ap50_without_{k}_mean")
                if a is not None and b is not None:
                    gaps[k] = a - b
            text = f"AP50 {bap:.4f} → {ap:.4f} (gap {ap - bap:+.4f})"
            if gaps:
                best = max(gaps, key=lambda k: gaps[k])
                text += (
                    "; with one FP kind removed from both arms the gap would be "
                    + ", ".join(f"{k} {g:+.4f}" for k, g in gaps.items())
                    + (
                        f": removing **{best}** narrows it most (by {gaps[best] - (ap - bap):.4f})"
                        if gaps[best] > ap - bap
                        else ": removing no single kind narrows it"
                    )
                )
            parts.append(text)
        if not parts:
            parts.append("n/a: no value to compare (the arm's or the baseline's diagnosis lacks the counts and AP50)")
        out.append(f"`{row['arm']}` vs `{baseline}`:\n" + "\n".join(f"  - {p}" for p in parts))
    return out


# ------------------------------------------------------------------------------------------------ report files
def diagnosis_csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """``diagnosis.csv``: one line per arm, every column of ``aggregate``."""
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        values = []
        for c in cols:
            v = row.get(c)
            values.append(" ".join(map(str, v)) if isinstance(v, (list, tuple)) else _fmt(v, 6))
        writer.writerow(values)
    return buf.getvalue()


def _count(row: Mapping[str, Any], key: str, digits: int = 1) -> str:
    return _pm(row.get(f"{key}_mean"), row.get(f"{key}_std"), digits)


_HEAD = "| arm | seeds | {extra}TP | duplicate | wrong_class | localization | background | FP | missed GT | precision |"


#: Legend lines for the markers of the diagnosis tables.
_NOTES = (
    (
        lambda c: c == "-",
        "`-`: not measured: no run of the arm has this value (the operating point was not reached, e.g. no detection "
        "at that threshold for precision, or no ground truth for AP50, or the run's diagnosis lacks it).",
    ),
    (lambda c: c.endswith("(n=1)"), "`(n=1)`: one seed: that seed's value, not a mean; no standard deviation."),
)


def _kind_table(rows: Sequence[Mapping[str, Any]], t: str, threshold: bool) -> list[str]:
    head = _HEAD.format(extra="threshold | " if threshold else "")
    body = []
    for r in rows:
        body.append(
            f"| {r['arm']} | {r['n_seeds']} | "
            + (f"{_count(r, f'threshold@{t}', 3)} | " if threshold else "")
            + " | ".join(_count(r, f"{k}@{t}") for k in KINDS)
            + f" | {_count(r, f'fp@{t}')} | {_count(r, f'missed@{t}')} | {_count(r, f'precision@{t}', 3)} |"
        )
    return _table(head, body, _NOTES)


def _value(v: Any, digits: int | None = None, reason: str = "not recorded") -> str:
    """``v`` formatted (``digits`` decimals for a float), or ``n/a (reason)`` when it is None or not finite."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return f"n/a ({reason})"
    return _fmt(v, digits) if digits is not None else str(v)


def _cell(v: Any, digits: int = 4) -> str:
    """A runs-table cell: ``v`` (floats with ``digits`` decimals), ``-`` when None or not finite."""
    return _fmt(v, digits) or "-"


def _tp_score(row: Mapping[str, Any]) -> str:
    """The arm's mean TP score, or why there is none."""
    if row.get("score_tp_mean") is not None:
        return _fmt(row["score_tp_mean"], 3)
    return "n/a (no true positives)" if row.get("tp_mean") == 0 else "n/a (not measured)"


def diagnosis_markdown(
    rows: Sequence[Mapping[str, Any]],
    diagnoses: Sequence[Mapping[str, Any]],
    meta: Mapping[str, Any] | None = None,
) -> str:
    """``diagnosis.md``: findings, FP kinds per arm (conf 0.25, equal recall, F1 threshold), scores, AP50, runs."""
    meta = meta or {}
    baseline = meta.get("baseline", "bce")
    p = (diagnoses[0].get("params") if diagnoses else None) or {}
    n_gt = rows[0].get("n_gt_mean") if rows else None
    out = [f"# Diagnosis: {meta.get('name', 'ab')}", ""]
    if meta.get("out"):
        out.append(f"- Experiment: `{meta['out']}`")
    if meta.get("command"):
        out.append(f"- Command: `{meta['command']}`")
    out += [
        f"- Detections of each run's `best.pt` as Ultralytics validation scores them (val split, "
        f"{_value(rows[0].get('n_images_mean') if rows else None, 0)} images, {_value(n_gt, 0)} ground-truth boxes; "
        f"imgsz {_value(p.get('imgsz'))}, conf ≥ {_value(p.get('conf'))}, NMS IoU {_value(p.get('iou'))}, "
        f"max_det {_value(p.get('max_det'))}, multi-label NMS: a box can carry several classes).",
        "- Each image's detections, in descending confidence: **tp** (IoU ≥ 0.5 with an unmatched same-class ground "
        "truth), **duplicate** (IoU ≥ 0.5 with a same-class ground truth already matched), **wrong_class** (IoU ≥ 0.5 "
        "with a ground truth of another class), **localization** (best IoU with any ground truth in [0.1, 0.5)), "
        "**background** (best IoU < 0.1). Missed GT = ground truths without a TP at that threshold.",
        "- Counts are per run (all val images), mean ± sample std over seeds.",
        f"- Baseline arm: `{baseline}`.",
    ]
    if meta.get("missing"):
        out.append(f"- Not diagnosed (no finished run): {', '.join(meta['missing'])}.")
    scale = ", ".join(f"{r['arm']} {_tp_score(r)}" for r in rows)
    out += ["", "## Findings", ""]
    out += [f"- {s}" for s in findings(rows, baseline)] if len(rows) > 1 else ["- Only one arm: no comparison."]
    out += [
        "",
        f"Mean TP score per arm: {scale}. Losses put scores on different scales, so counts at a fixed threshold "
        "compare different operating points; at equal recall every arm has found the same number of objects, and "
        "the false positives that outrank them are what costs the precision.",
        "",
        "## Detections at conf ≥ 0.25",
        "",
        *_kind_table(rows, "0.25", False),
    ]
    recall = rows[0].get("eq_recall") if rows else None
    out += ["", f"## Detections at equal recall ({_fmt(recall, 2) or 'n/a'})", ""]
    if recall is None:
        out.append("No recall level that every run reaches.")
    else:
        out += [
            f"Each run's highest threshold at which its recall (all classes pooled) reaches {recall:.2f}, the "
            f"`{baseline}` runs' mean recall at their F1-optimal thresholds (capped at what every run reaches).",
            "",
            *_kind_table(rows, "eq", True),
        ]
    out += [
        "",
        "## Detections at each run's F1-optimal threshold",
        "",
        "The threshold with the highest F1, all classes pooled (Ultralytics reports precision and recall at the "
        "threshold that maximizes the F1 averaged over classes, so its numbers differ a little).",
        "",
        *_kind_table(rows, "f1", True),
        "",
        "## Scores and AP50 cost per kind",
        "",
        "Mean score of each kind over all detections; mean IoU of the TPs at conf ≥ 0.25 and at the F1-optimal "
        "threshold. AP50 here uses the greedy matching above (101-point interpolation, mean over classes; close to "
        "Ultralytics' mAP50). Cost of a FP kind: the AP50 gained if its detections were removed (TIDE-style). "
        "TP only: AP50 with every FP removed, the ceiling that missed objects leave.",
        "",
        *_table(
            "| arm | score TP | score duplicate | score wrong_class | score localization | score background "
            "| TP IoU@0.25 | TP IoU@F1 | AP50 | cost duplicate | cost wrong_class | cost localization "
            "| cost background | AP50 TP only |",
            [
                f"| {r['arm']} | "
                + " | ".join(_count(r, f"score_{k}", 3) for k in KINDS)
                + f" | {_count(r, 'tp_iou@0.25', 3)} | {_count(r, 'tp_iou@f1', 3)} | {_count(r, 'ap50', 4)} | "
                + " | ".join(_count(r, f"ap50_cost_{k}", 4) for k in FP_KINDS)
                + f" | {_count(r, 'ap50_tp_only', 4)} |"
                for r in rows
            ],
            (
                (
                    lambda c: c == "-",
                    "`-`: not measured: no detection of that kind (score, TP IoU), no ground truth (AP50 and costs), "
                    "or the run's diagnosis lacks the value.",
                ),
                _NOTES[1],
            ),
        ),
    ]
    out += [
        "",
        "## Runs",
        "",
    ]
    arm_order = {r["arm"]: i for i, r in enumerate(rows)}
    body = []
    for d in sorted(diagnoses, key=lambda x: (arm_order.get(x["arm"], 1e9), x["seed"])):
        at = _get(d, "at", "0.25") or {}
        counts = at.get("counts") or {}
        body.append(
            f"| {d.get('run') or '-'} | {d['arm']} | {d['seed']} | {_cell(counts.get('tp'))} | {_cell(at.get('fp'))} | "
            + " | ".join(_cell(counts.get(k)) for k in FP_KINDS)
            + f" | {_cell(at.get('missed_gt'))} | {_cell(_get(d, 'at', 'f1', 'threshold'), 3)} "
            f"| {_cell(d.get('ap50'))} "
            f"| {_cell(_get(d, 'ultralytics', 'mAP50'))} |"
        )
    out += _table(
        "| run | arm | seed | TP@0.25 | FP@0.25 | duplicate | wrong_class | localization | background | missed@0.25 "
        "| F1 threshold | AP50 | Ultralytics mAP50 |",
        body,
        (
            (
                lambda c: c == "-",
                "`-`: not measured in that run (no F1 threshold without detections or ground truth, no AP50 without "
                "ground truth, or the run's diagnosis lacks the value).",
            ),
        ),
    )
    out += [
        "",
        "## Plots",
        "",
        "![FP kinds and score distributions](fp_scores.png)",
        "",
        "![precision and recall per epoch](pr_curves.png)",
        "",
        "mAP50-95 per epoch and the score-IoU correlation are in the experiment report (`curves.png`, `ranking.png`, "
        "`summary.md`).",
        "",
    ]
    return "\n".join(out)


def _bars(ax: Any, groups: Mapping[str, Sequence[Mapping[str, Any]]], at: Callable[[Mapping], Any], title: str) -> None:
    """Stacked bars of TP and the FP kinds per arm (mean per run), precision on top."""
    arms = list(groups)
    x = np.arange(len(arms))
    bottom = np.zeros(len(arms))
    for k in KINDS:
        v = []
        for a in arms:
            vals = [_get(at(r), "counts", k) for r in groups[a]]
            vals = [c for c in vals if c is not None]
            v.append(float(np.mean(vals)) if vals else 0.0)
        ax.bar(x, v, bottom=bottom, color=COLORS[k], label=k, width=0.7)
        bottom += np.asarray(v)
    for i, a in enumerate(arms):
        prec = [_get(at(r), "precision") for r in groups[a]]
        prec = [v for v in prec if v is not None]
        if prec:
            ax.text(x[i], bottom[i], f"P {np.mean(prec):.3f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(arms, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("detections per run")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.08)


def plot_fp_scores(
    diagnoses: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    order: Sequence[str] | None = None,
    baseline: str = "bce",
    recall: float | None = None,
) -> Path:
    """``fp_scores.png``: detections by kind per arm, and the score histograms of TP and each FP kind per arm.

    Top row: stacked bars of TP and the FP kinds per arm (mean per run, precision on top) at equal recall
    (``recall``, default ``common_recall``), at each run's F1-optimal threshold and at conf ≥ 0.25. Below, one panel
    per arm: the score histograms of TP and each FP kind (mean count per run, log scale; dashed: 0.25, dotted: mean
    F1-optimal threshold).
    """
    groups = _group(diagnoses, order, baseline)
    arms = list(groups)
    if recall is None:
        recall = common_recall(diagnoses, baseline)
    cols = 3
    rows = 1 + (max(1, len(arms)) + cols - 1) // cols
    fig = _figure(5.0 * cols, 3.6 * rows)
    eq_title = f"at equal recall {recall:.2f} (same TPs)" if recall is not None else "at equal recall (n/a)"
    views = (
        (lambda r: _at_recall(r, recall), eq_title),
        (lambda r: _get(r, "at", "f1"), "at each run's F1-optimal threshold"),
        (lambda r: _get(r, "at", "0.25"), "at conf ≥ 0.25"),
    )
    for p, (at, title) in enumerate(views):
        ax = fig.add_subplot(rows, cols, p + 1)
        _bars(ax, groups, at, f"TP and FP kinds {title}")
        if p == 0:
            ax.legend(fontsize=7)

    hists: dict[str, dict[str, np.ndarray]] = {}
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    ymax, xmax = 1.0, 0.0
    for a in arms:
        hists[a] = {}
        for r in groups[a]:
            if _get(r, "hist", "edges"):
                edges = np.asarray(r["hist"]["edges"], dtype=np.float64)
        for k in KINDS:
            hs = [np.asarray(_get(r, "hist", k) or [], dtype=np.float64) for r in groups[a]]
            hs = [h for h in hs if h.size == edges.size - 1]
            if hs:
                h = np.mean(hs, axis=0)
                hists[a][k] = h
                ymax = max(ymax, float(h.max()))
                if h.any():
                    xmax = max(xmax, float(edges[1:][h > 0].max()))
    xmax = min(1.0, max(0.3, xmax + 0.05))
    for i, a in enumerate(arms):
        ax = fig.add_subplot(rows, cols, cols + i + 1)
        for k in KINDS:
            h = hists[a].get(k)
            if h is None or not h.any():
                continue
            ax.stairs(h, edges, color=COLORS[k], lw=2.2 if k == "tp" else 1.3, label=k)
        ax.axvline(0.25, color="gray", ls="--", lw=0.8)
        thr = [_get(r, "at", "f1", "threshold") for r in groups[a]]
        thr = [v for v in thr if v is not None]
        if thr:
            ax.axvline(float(np.mean(thr)), color="black", ls=":", lw=1.2)
        ax.set_yscale("log")
        ax.set_ylim(0.3, ymax * 1.5)
        ax.set_xlim(0, xmax)
        n = len(groups[a])
        ap = [r.get("ap50") for r in groups[a] if r.get("ap50") is not None]
        ap_text = f", AP50 {np.mean(ap):.3f}" if ap else ""
        ax.set_title(f"{a} ({n} seed{'s' if n != 1 else ''}{ap_text})", fontsize=9)
        ax.set_xlabel("confidence (dashed 0.25, dotted F1-optimal)", fontsize=8)
        ax.set_ylabel("detections per run")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_pr_curves(
    curves: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    order: Sequence[str] | None = None,
    baseline: str = "bce",
) -> Path:
    """``pr_curves.png``: validation precision and recall per epoch for each arm, mean over seeds with a ± 1 std band.

    Each entry needs ``arm``, ``seed`` and ``curve``: ``{"epoch": [...], "precision": [...], "recall": [...]}``.
    """
    groups = _group(curves, order, baseline)
    fig = _figure(13.0, 4.8)
    for i, metric in enumerate(("precision", "recall")):
        ax = fig.add_subplot(1, 2, i + 1)
        plot_epoch_band(ax, groups, metric, title_size=10, legend=i == 1)  # legend right of the second panel
    fig.tight_layout()
    return _save_figure(fig, path)


# ------------------------------------------------------------------------------------------------ experiment
def _user_error(message: str) -> Exception:
    from .cli import CLIError

    return CLIError(message)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _run_inputs(run_dir: Path, result: Mapping[str, Any]) -> tuple[Path, str, int]:
    """best.pt (last.pt if none), dataset YAML and imgsz of a run (args.yaml first, then result.json)."""
    import yaml

    weights = run_dir / "weights" / "best.pt"
    if not weights.is_file():
        weights = run_dir / "weights" / "last.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"{run_dir.name}: no weights/best.pt or weights/last.pt")
    args: dict[str, Any] = {}
    try:
        args = yaml.safe_load((run_dir / "args.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        pass
    data = args.get("data") or result.get("data")
    if not data:
        raise FileNotFoundError(f"{run_dir.name}: no dataset in args.yaml or result.json")
    imgsz = args.get("imgsz") or _get(result, "train", "imgsz") or 640
    return weights, str(data), imgsz


def _curve(run_dir: Path) -> dict[str, list]:
    from .experiment import read_results_csv

    rows = read_results_csv(run_dir / "results.csv")
    return {
        "epoch": [int(r["epoch"]) for r in rows if "epoch" in r],
        "precision": [r.get("metrics/precision(B)") for r in rows],
        "recall": [r.get("metrics/recall(B)") for r in rows],
    }


def diagnose_experiment(
    out_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str] | None = None,
    arms: Sequence[str] | None = None,
    baseline: str | None = None,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    device: Any = None,
    batch: int = 16,
    workers: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Diagnose the finished runs of an experiment: ``diagnosis.md/.csv``, ``fp_scores.png``, ``pr_curves.png``.

    Each run's ``diagnose_run`` output is cached as ``<run_dir>/diagnosis.json`` (or
    ``<cache_dir>/<run>/diagnosis.json``) and reused when it is newer than the run's weights and was made with the
    same settings.

    Args:
        out_dir: the experiment directory (``runs/<arm>-s<seed>/result.json`` marks a finished run).
        dest: where the report files go (default ``out_dir``).
        arms: only these arms (default: all with finished runs).
        baseline: the arm to compare with (default: experiment.json's, else ``bce``).
        conf: predict confidence threshold.
        iou: NMS IoU threshold.
        max_det: detections kept per image.
        device: device (None: Ultralytics' default).
        batch: validation batch size.
        workers: dataloader workers.
        cache_dir: where the per-run caches go (default: each run's directory).
        force: recompute cached runs.
        log: progress printer (default: silent).

    Returns:
        the written paths by name.

    Raises:
        CLIError: missing directory, no finished runs, unknown arms.
    """
    log = log or (lambda msg: None)
    out = Path(out_dir).expanduser().resolve()
    if not out.is_dir():
        raise _user_error(f"Experiment directory '{out_dir}' not found.")
    dest_dir = Path(dest).expanduser().resolve() if dest else out
    meta = _read_json(out / "experiment.json") or {}
    baseline = baseline or meta.get("baseline") or "bce"
    results = load_results(out)
    if not results:
        raise _user_error(f"No finished runs (runs/*/result.json) in {out}: nothing to diagnose.")
    have = sorted({r["arm"] for r in results})
    if arms:
        unknown = [a for a in arms if a not in have]
        if unknown:
            raise _user_error(
                f"No finished runs of arm(s) {', '.join(unknown)} in {out}. Arms with finished runs: {', '.join(have)}."
            )
        results = [r for r in results if r["arm"] in arms]
    order = list(arms) if arms else meta.get("arms")
    diagnoses, curves = [], []
    for res in results:
        run = res.get("run") or f"{res['arm']}-s{res['seed']}"
        run_dir = out / "runs" / run
        weights, data, imgsz = _run_inputs(run_dir, res)
        cache = (Path(cache_dir).expanduser().resolve() / run if cache_dir else run_dir) / "diagnosis.json"
        params = _params(weights, data, imgsz, conf, iou, max_det)
        cached = None if force else _read_json(cache)
        fresh = (
            cached is not None
            and cached.get("version") == DIAG_VERSION
            and cached.get("params") == json.loads(json.dumps(params))
            and cache.stat().st_mtime > weights.stat().st_mtime
        )
        if fresh:
            log(f"{run}: cached {cache}")
            d = cached
        else:
            log(f"{run}: validating {weights} and classifying its detections")
            d = diagnose_run(
                weights, data, imgsz, conf=conf, iou=iou, max_det=max_det, device=device, batch=batch, workers=workers
            )
            d.update(run=run, arm=res["arm"], seed=res["seed"])
            atomic_write_json(cache, d)
            d = _read_json(cache) or d
        d.update(run=run, arm=res["arm"], seed=res["seed"])
        diagnoses.append(d)
        curves.append({"run": run, "arm": res["arm"], "seed": res["seed"], "curve": _curve(run_dir)})
    recall = common_recall(diagnoses, baseline)
    rows = aggregate(diagnoses, baseline=baseline, order=order, recall=recall)
    expected = [r for r in meta.get("runs") or [] if not arms or r.rsplit("-s", 1)[0] in arms]
    md_meta = {
        "name": meta.get("name", out.name),
        "baseline": baseline,
        "out": str(out),
        "missing": [r for r in expected if r not in {d["run"] for d in diagnoses}],
        "command": " ".join(
            ["yolo-vfl ab diagnose", f"out={out}"]
            + ([f"dest={dest_dir}"] if dest_dir != out else [])
            + ([f"arms={','.join(arms)}"] if arms else [])
        ),
    }
    return {
        "diagnosis.csv": atomic_write_text(dest_dir / "diagnosis.csv", diagnosis_csv_text(rows)),
        "diagnosis.md": atomic_write_text(dest_dir / "diagnosis.md", diagnosis_markdown(rows, diagnoses, md_meta)),
        "fp_scores.png": plot_fp_scores(
            diagnoses, dest_dir / "fp_scores.png", order=order, baseline=baseline, recall=recall
        ),
        "pr_curves.png": plot_pr_curves(curves, dest_dir / "pr_curves.png", order=order, baseline=baseline),
    }
