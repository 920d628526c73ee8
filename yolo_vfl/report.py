"""The A/B report: statistics over per-run result dicts, ``summary.csv``, ``summary.md``, ``curves.png``, ranking plot.

Everything here is a pure function of the result dicts that ``yolo_vfl.experiment`` writes as ``result.json`` per
run (arm x seed), except ``ranking_quality``, which runs a trained model on the validation images.

Statistics:

* per arm and metric: mean and sample standard deviation over seeds (undefined for one seed);
* per arm and metric, against the baseline arm: the paired difference ``arm - baseline`` seed by seed (same seed =
  same initialization and data order), its mean and a two-sided Student-t interval over the seeds
  (``mean +- t(0.975, n - 1) * sd / sqrt(n)``). The verdict is ``better`` or ``worse`` only when that interval
  excludes zero, otherwise ``no clear difference``; with one paired seed the interval is undefined and the verdict is
  ``no clear difference (1 seed)``. The primary metric for the headline verdict is mAP50-95.
* a warning (``summarize``'s ``warning`` column, at the top of ``summary.md``) when every arm's mean mAP50-95 is
  below ``NOTHING_LEARNED`` (nothing was learned, the comparison says nothing) or the baseline's is (a difference then
  says that the other arm learned something, not that its loss is better).
* ranking quality (GFL paper, arXiv 2006.04388): every detection of the final model on the val images is matched to
  the ground-truth box of the same class with the highest IoU (IoU 0 when there is none); the Pearson and Spearman
  correlations between confidence and that IoU say how well the score ranks localization quality.

The Student-t quantile is computed here (regularized incomplete beta + bisection), so no SciPy is needed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "METRICS",
    "PRIMARY_METRIC",
    "LOSS_KEYS",
    "NOTHING_LEARNED",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "t_cdf",
    "t_ppf",
    "mean_std",
    "paired_difference",
    "verdict",
    "experiment_warnings",
    "rankdata",
    "pearson",
    "spearman",
    "box_iou",
    "match_detections",
    "correlations",
    "ranking_quality",
    "summarize",
    "summary_csv_text",
    "summary_markdown",
    "plot_curves",
    "plot_ranking",
    "load_results",
    "write_report",
]

#: Accuracy metrics of the final validation, in report order.
METRICS: tuple[str, ...] = ("mAP50", "mAP50-95", "precision", "recall")
#: The metric whose paired difference gives the headline verdict.
PRIMARY_METRIC = "mAP50-95"
#: Final-epoch losses shown in the report (``results.csv`` columns).
LOSS_KEYS: tuple[str, ...] = ("train/box_loss", "train/cls_loss", "train/dfl_loss")
#: Correlations of the ranking measurement (``correlations``).
_RANK_KEYS: tuple[str, ...] = ("pearson_matched", "spearman_matched", "pearson", "spearman")
#: Mean mAP50-95 below which an arm counts as having learned (nearly) nothing.
NOTHING_LEARNED = 0.01


# ------------------------------------------------------------------------------------------------ atomic file writes
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp gives 0600)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory and ``os.replace``.

    Readers see the old file or the new one, never a partial one, whenever the process is killed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """``atomic_write_bytes`` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """``atomic_write_bytes`` for JSON (indented, NaN written as ``null``)."""
    return atomic_write_text(path, json.dumps(_json_safe(data), indent=2) + "\n")


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars by Python numbers, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------------- Student t
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_bt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    bt = math.exp(log_bt)
    if x < (a + 1.0) / (a + b + 2.0):
        return bt * _betacf(a, b, x) / a
    return 1.0 - bt * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Cumulative distribution function of Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t: the ``t`` with ``t_cdf(t, df) == p`` (bisection to 1e-12).

    Example: ``t_ppf(0.975, 2)`` is 4.3027, ``t_ppf(0.975, 1e9)`` is 1.9600.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 2.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------------------------------------------- statistics
def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1) of the finite values; std is None for fewer than 2 values."""
    vals = _finite(values)
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def paired_difference(values: Mapping[Any, Any], baseline: Mapping[Any, Any], level: float = 0.95) -> dict[str, Any]:
    """Paired difference ``values[seed] - baseline[seed]`` over the seeds both have, with a Student-t interval.

    Args:
        values: metric by seed for the arm.
        baseline: metric by seed for the baseline arm.
        level: confidence level of the two-sided interval.

    Returns:
        dict with ``n`` (paired seeds), ``seeds``, ``diffs``, ``mean``, ``std`` (ddof=1), ``lo``, ``hi`` (None when
        ``n < 2``: one pair gives no interval) and ``level``.
    """
    seeds = sorted(s for s in values if s in baseline and values[s] is not None and baseline[s] is not None)
    diffs = [float(values[s]) - float(baseline[s]) for s in seeds]
    mean, std = mean_std(diffs)
    lo = hi = None
    if len(diffs) >= 2 and std is not None:
        half = t_ppf(0.5 + level / 2.0, len(diffs) - 1) * std / math.sqrt(len(diffs))
        lo, hi = mean - half, mean + half
    return {
        "n": len(diffs),
        "seeds": seeds,
        "diffs": diffs,
        "mean": mean,
        "std": std,
        "lo": lo,
        "hi": hi,
        "level": level,
    }


def verdict(diff: Mapping[str, Any]) -> str:
    """``better`` / ``worse`` when the interval of a ``paired_difference`` excludes zero, else no clear difference."""
    n = diff.get("n", 0)
    if n == 0:
        return "n/a (no paired baseline run)"
    if n == 1 or diff.get("lo") is None:
        return "no clear difference (1 seed)"
    if diff["lo"] > 0:
        return "better"
    if diff["hi"] < 0:
        return "worse"
    return "no clear difference"


def experiment_warnings(rows: Sequence[Mapping[str, Any]], baseline: str = "bce") -> list[str]:
    """What makes the comparison of ``summarize`` rows say little: nothing learned, or a baseline near zero.

    Args:
        rows: ``summarize`` rows (``arm`` and ``<PRIMARY_METRIC>_mean``).
        baseline: the baseline arm.

    Returns:
        plain-text warnings (empty when the arms learned something): ``nothing learned: ...`` when every arm's mean
        mAP50-95 is below ``NOTHING_LEARNED``, else ``baseline ... near 0: ...`` when the baseline's is.
    """
    key = f"{PRIMARY_METRIC}_mean"
    means = {r["arm"]: r.get(key) for r in rows if r.get(key) is not None}
    if not means:
        return []
    if all(v < NOTHING_LEARNED for v in means.values()):
        top = max(means, key=lambda a: means[a])
        return [
            f"nothing learned: every arm's {PRIMARY_METRIC} is below {NOTHING_LEARNED:g} (highest: {top} "
            f"{means[top]:.4f}); the comparison says nothing (train longer, or check the data and labels)"
        ]
    base = means.get(baseline)
    if base is not None and base < NOTHING_LEARNED:
        return [
            f"baseline `{baseline}` near 0: its mean {PRIMARY_METRIC} {base:.4f} is below {NOTHING_LEARNED:g}, so a "
            "difference says that the other arm learned something, not that its loss is better"
        ]
    return []


# ---------------------------------------------------------------------------------------------------- ranking
def rankdata(x: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, ties get the average of their ranks (as ``scipy.stats.rankdata``)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    if n == 0:
        return np.zeros(0)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # start index of each run of equal values
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], n]
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(n)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    """Pearson correlation; None with fewer than 2 points or a constant variable."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"x and y differ in length: {x.size} != {y.size}")
    if x.size < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    if denom == 0.0:
        return None
    return float(np.clip((dx * dy).sum() / denom, -1.0, 1.0))


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    """Spearman rank correlation (Pearson of the tie-averaged ranks); None where Pearson is undefined."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"x and y differ in length: {x.size} != {y.size}")
    return pearson(rankdata(x), rankdata(y))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (N, M) of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_detections(
    det_boxes: np.ndarray, det_cls: np.ndarray, gt_boxes: np.ndarray, gt_cls: np.ndarray
) -> np.ndarray:
    """IoU of each detection with the ground-truth box of the same class that overlaps it most (0 if none).

    Several detections may match the same ground truth: this measures how well each score ranks its own
    localization quality, not detection accuracy.

    Args:
        det_boxes: (N, 4) xyxy detections.
        det_cls: (N,) their classes.
        gt_boxes: (M, 4) xyxy ground-truth boxes.
        gt_cls: (M,) their classes.

    Returns:
        (N,) float array of IoUs in [0, 1].
    """
    det_cls = np.asarray(det_cls).reshape(-1)
    gt_cls = np.asarray(gt_cls).reshape(-1)
    out = np.zeros(det_cls.size)
    if det_cls.size == 0 or gt_cls.size == 0:
        return out
    iou = box_iou(det_boxes, gt_boxes)
    iou = np.where(det_cls[:, None].astype(np.int64) == gt_cls[None, :].astype(np.int64), iou, 0.0)
    return iou.max(axis=1)


def correlations(conf: Sequence[float] | np.ndarray, iou: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Pearson and Spearman between confidence and IoU over all points and over those with IoU > 0.

    Returns:
        dict with ``n``, ``pearson``, ``spearman``, ``n_matched``, ``pearson_matched``, ``spearman_matched`` and
        ``mean_iou`` (None where undefined).
    """
    conf = np.asarray(conf, dtype=np.float64).ravel()
    iou = np.asarray(iou, dtype=np.float64).ravel()
    m = iou > 0
    return {
        "n": int(conf.size),
        "pearson": pearson(conf, iou),
        "spearman": spearman(conf, iou),
        "n_matched": int(m.sum()),
        "pearson_matched": pearson(conf[m], iou[m]),
        "spearman_matched": spearman(conf[m], iou[m]),
        "mean_iou": float(iou.mean()) if iou.size else None,
    }


def _val_images(data: Mapping[str, Any]) -> list[Path]:
    """Image files of the dataset's val split (a directory, an image list .txt, or a list of them)."""
    from ultralytics.data.utils import IMG_FORMATS

    val = data.get("val") or data.get("test")
    if not val:
        raise ValueError("the dataset has no 'val' split to measure ranking quality on")
    files: list[Path] = []
    for entry in val if isinstance(val, (list, tuple)) else [val]:
        p = Path(str(entry))
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix[1:].lower() in IMG_FORMATS)
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                line = line.strip()
                if line:
                    f = Path(line)
                    files.append(f if f.is_absolute() else (p.parent / line).resolve())
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"val images not found: {p}")
    return files


def _read_gt(label_file: Path, w: int, h: int, keypoints: bool) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth classes and xyxy pixel boxes of one YOLO label file (boxes, polygons or pose rows)."""
    classes, boxes = [], []
    if label_file.is_file():
        for line in label_file.read_text().splitlines():
            v = line.split()
            if len(v) < 5:
                continue
            c, nums = int(float(v[0])), [float(t) for t in v[1:]]
            if len(nums) == 4 or keypoints:
                cx, cy, bw, bh = nums[:4]
                x0, y0, x1, y1 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
            else:  # polygon: its bounding box
                xs, ys = nums[0::2], nums[1::2]
                x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
            classes.append(c)
            boxes.append([x0 * w, y0 * h, x1 * w, y1 * h])
    return np.asarray(classes, dtype=np.int64), np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def ranking_quality(
    model_path: str | os.PathLike[str],
    data_yaml: str | os.PathLike[str],
    imgsz: int = 640,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    device: Any = None,
    batch: int = 16,
    max_points: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Score-vs-IoU ranking quality of a trained detector on the val images of a dataset.

    Runs Ultralytics predict (``conf``, NMS ``iou``, ``max_det`` as in validation), matches each detection to the
    ground-truth box of the same class with the highest IoU (0 if none) and correlates confidence with that IoU.

    Args:
        model_path: checkpoint (``best.pt``).
        data_yaml: dataset YAML (its ``val`` split is used).
        imgsz: predict image size (the training imgsz).
        conf: confidence threshold (0.001: Ultralytics' validation default, so every scored detection counts).
        iou: NMS IoU threshold.
        max_det: detections kept per image.
        device: predict device (None: Ultralytics' default).
        batch: predict batch size.
        max_points: at most this many (confidence, IoU) points are returned for the scatter plot (a random subset
            drawn with ``seed``); the correlations use all detections.
        seed: seed of that subset.

    Returns:
        ``correlations(...)`` plus ``n_images``, ``n_gt``, ``conf_threshold`` and ``points``:
        ``{"conf": [...], "iou": [...]}``.
    """
    from ultralytics import YOLO
    from ultralytics.data.utils import check_det_dataset, img2label_paths

    data = check_det_dataset(str(data_yaml))
    files = _val_images(data)
    keypoints = "kpt_shape" in data
    model = YOLO(str(model_path))
    if model.task == "obb":
        raise ValueError("ranking quality is measured on axis-aligned boxes; OBB models are not supported")
    label_files = img2label_paths([str(f) for f in files])
    all_conf, all_iou, n_gt = [], [], 0
    for start in range(0, len(files), 256):  # bounded memory, predict's own batching inside
        chunk = [str(f) for f in files[start : start + 256]]
        results = model.predict(
            source=chunk,
            imgsz=imgsz,
            conf=conf,
            iou=iou,
            max_det=max_det,
            device=device,
            batch=batch,
            verbose=False,
            stream=True,
            save=False,
        )
        for k, r in enumerate(results):
            h, w = r.orig_shape[:2]
            gt_cls, gt_boxes = _read_gt(Path(label_files[start + k]), w, h, keypoints)
            n_gt += gt_cls.size
            if r.boxes is None or len(r.boxes) == 0:
                continue
            boxes = r.boxes.xyxy.cpu().numpy()
            cls = r.boxes.cls.cpu().numpy().astype(np.int64)
            scores = r.boxes.conf.cpu().numpy()
            all_iou.append(match_detections(boxes, cls, gt_boxes, gt_cls))
            all_conf.append(scores)
    conf_arr = np.concatenate(all_conf) if all_conf else np.zeros(0)
    iou_arr = np.concatenate(all_iou) if all_iou else np.zeros(0)
    out = correlations(conf_arr, iou_arr)
    idx = np.arange(conf_arr.size)
    if idx.size > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_points, replace=False))
    out.update(
        n_images=len(files),
        n_gt=int(n_gt),
        conf_threshold=conf,
        points={"conf": [round(float(v), 5) for v in conf_arr[idx]], "iou": [round(float(v), 5) for v in iou_arr[idx]]},
    )
    return out


# ---------------------------------------------------------------------------------------------------- summary
def _group(results: Iterable[Mapping[str, Any]], order: Sequence[str] | None, baseline: str) -> dict[str, list]:
    by_arm: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        by_arm.setdefault(r["arm"], []).append(r)
    names = [a for a in (order or []) if a in by_arm]
    rest = [a for a in by_arm if a not in names]
    if baseline in rest:
        rest.remove(baseline)
        rest.insert(0, baseline)
    return {a: sorted(by_arm[a], key=lambda r: r["seed"]) for a in names + rest}


def _get(r: Mapping[str, Any], *keys: str) -> Any:
    v: Any = r
    for k in keys:
        if not isinstance(v, Mapping) or k not in v:
            return None
        v = v[k]
    return v


def summarize(
    results: Iterable[Mapping[str, Any]],
    baseline: str = "bce",
    order: Sequence[str] | None = None,
    level: float = 0.95,
) -> list[dict[str, Any]]:
    """One row per arm: metric means/stds, paired differences to the baseline, verdicts, times, losses, ranking.

    Args:
        results: per-run result dicts (``arm``, ``seed``, ``loss``, ``metrics`` {mAP50, mAP50-95, precision,
            recall}, and optionally ``overrides``, ``final_losses``, ``train_time_s``, ``wall_time_s``, ``ranking``).
        baseline: the arm every other arm is compared with.
        order: arm order (default: baseline first, then as found).
        level: confidence level of the intervals.

    Returns:
        list of flat dicts. Keys per metric ``m``: ``m_mean``, ``m_std``, ``m_diff``, ``m_diff_lo``, ``m_diff_hi``,
        ``m_n_pairs``, ``m_verdict``; ``verdict`` is the primary metric's; ``warning``: the
        ``experiment_warnings`` joined with ``"; "`` (the same in every row, empty when there is none).
    """
    groups = _group(results, order, baseline)
    base_runs = groups.get(baseline, [])
    rows = []
    for arm, runs in groups.items():
        row: dict[str, Any] = {
            "arm": arm,
            "loss": runs[0].get("loss"),
            "overrides": _overrides_text(runs[0].get("overrides") or {}),
            "n_seeds": len(runs),
            "seeds": [r["seed"] for r in runs],
        }
        for m in METRICS:
            row[f"{m}_mean"], row[f"{m}_std"] = mean_std(_get(r, "metrics", m) for r in runs)
            if arm == baseline:
                d = {"n": 0, "mean": None, "lo": None, "hi": None}
                v = "baseline"
            else:
                d = paired_difference(
                    {r["seed"]: _get(r, "metrics", m) for r in runs},
                    {r["seed"]: _get(r, "metrics", m) for r in base_runs},
                    level,
                )
                v = verdict(d)
            row[f"{m}_diff"], row[f"{m}_diff_lo"], row[f"{m}_diff_hi"] = d["mean"], d["lo"], d["hi"]
            row[f"{m}_n_pairs"], row[f"{m}_verdict"] = d["n"], v
        row["verdict"] = row[f"{PRIMARY_METRIC}_verdict"]
        for key in ("train_time_s", "wall_time_s", "epochs_done"):
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(r.get(key) for r in runs)
        for key in LOSS_KEYS:
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(_get(r, "final_losses", key) for r in runs)
        for key in ("pearson", "spearman", "pearson_matched", "spearman_matched"):
            row[f"rank_{key}_mean"], row[f"rank_{key}_std"] = mean_std(_get(r, "ranking", key) for r in runs)
        rows.append(row)
    warning = "; ".join(experiment_warnings(rows, baseline))
    for row in rows:
        row["warning"] = warning
    return rows


def _overrides_text(overrides: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in overrides.items())


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _versions_text(versions: Mapping[str, Any] | None) -> str:
    if not versions:
        return ""
    return ", ".join(f"{k} {v}" for k, v in versions.items())


def summary_csv_text(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None = None) -> str:
    """``summary.csv``: one line per arm, every column of ``summarize`` plus versions and the command."""
    meta = meta or {}
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    extra = {"versions": _versions_text(meta.get("versions")), "command": " ; ".join(meta.get("commands") or [])}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*cols, *extra])
    for row in rows:
        values = []
        for c in cols:
            v = row.get(c)
            values.append(" ".join(map(str, v)) if isinstance(v, (list, tuple)) else _fmt(v, 6))
        writer.writerow([*values, *extra.values()])
    return buf.getvalue()


def _pm(mean: Any, std: Any, digits: int = 4) -> str:
    """``mean ± std``; one value (std undefined) is shown as itself with ``(n=1)``; ``-`` when there is none."""
    if mean is None or not math.isfinite(mean):
        return "-"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f} (n=1)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


#: What a cell of ``_diff_text`` with one paired seed means.
_NO_INTERVAL = "n=1, no interval"


def _diff_text(row: Mapping[str, Any], m: str) -> str:
    d = row.get(f"{m}_diff")
    if row.get(f"{m}_verdict") == "baseline":
        return "(baseline)"
    if d is None:
        return "-"
    lo, hi = row.get(f"{m}_diff_lo"), row.get(f"{m}_diff_hi")
    if lo is None or hi is None:
        return f"{d:+.4f} ({_NO_INTERVAL})"
    return f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _cells(lines: Sequence[str]) -> list[str]:
    """The stripped cells of the table body ``lines`` (rows starting with ``|``)."""
    return [c.strip() for line in lines if line.startswith("|") for c in line.strip().strip("|").split("|")]


def _legend(lines: Sequence[str], notes: Sequence[tuple[Callable[[str], bool], str]]) -> list[str]:
    """Legend lines under a table: each ``(test, text)`` whose test matches one of the body's cells."""
    cells = _cells(lines)
    out = []
    for test, text in notes:
        if any(test(c) for c in cells):
            out += ["", text]  # a paragraph each
    return out


def _dash(c: str) -> bool:
    return c == "-"


def _n1(c: str) -> bool:
    return c.endswith("(n=1)")


def _table(head: str, body: Sequence[str], notes: Sequence[tuple[Callable[[str], bool], str]]) -> list[str]:
    """A markdown table (header, separator, body) followed by the legend of the markers its cells use."""
    return [head, "|" + " --- |" * head.count(" | ") + " --- |", *body, *_legend(body, notes)]


_N1_NOTE = (_n1, "`(n=1)`: one seed: that seed's value, not a mean; no standard deviation.")


def summary_markdown(
    rows: Sequence[Mapping[str, Any]],
    results: Sequence[Mapping[str, Any]],
    meta: Mapping[str, Any] | None = None,
) -> str:
    """``summary.md``: settings, accuracy, paired differences with verdicts, ranking quality, time, losses, runs.

    Warnings (``experiment_warnings``) come first; every ``-``, ``n/a`` and ``(n=1)`` in a table is explained in a
    legend line under it.
    """
    meta = meta or {}
    baseline = meta.get("baseline", "bce")
    level = int(round(100 * meta.get("level", 0.95)))
    out: list[str] = [f"# A/B experiment: {meta.get('name', 'ab')}", ""]
    warnings = experiment_warnings(rows, baseline)
    for w in warnings:
        out += [f"> **Warning: {w}.**", ""]
    for cmd in meta.get("commands") or []:
        out.append(f"- Command: `{cmd}`")
    if meta.get("versions"):
        out.append(f"- Versions: {_versions_text(meta['versions'])}")
    for key, label in (("data", "Data"), ("train", "Shared training arguments"), ("seeds", "Seeds")):
        if meta.get(key) not in (None, "", {}):
            value = meta[key]
            if isinstance(value, Mapping):
                value = " ".join(f"{k}={v}" for k, v in value.items())
            out.append(f"- {label}: `{value}`")
    out.append(
        f"- Baseline arm: `{baseline}`; every arm x seed trains with the same data, epochs, image size and seed "
        "(Ultralytics deterministic mode)."
    )
    missing = meta.get("missing") or []
    if missing:
        out.append(
            f"- **Missing runs (not finished)**: {', '.join(missing)}; the statistics below use the finished ones."
        )
    not_measured = (_dash, "`-`: not measured: no value in any run of this arm.")
    out += [
        "",
        "## Accuracy",
        "",
        "Final validation of each run's `best.pt` on the val split; mean ± sample std over seeds (one seed: its value, "
        "marked `(n=1)`).",
        "",
        *_table(
            "| arm | loss | overrides | seeds | mAP50 | mAP50-95 | precision | recall |",
            [
                f"| {r['arm']} | {r['loss'] or '-'} | {r['overrides'] or '(none)'} | {r['n_seeds']} | "
                + " | ".join(_pm(r[f"{m}_mean"], r[f"{m}_std"]) for m in METRICS)
                + " |"
                for r in rows
            ],
            [not_measured, _N1_NOTE],
        ),
        "",
        f"## Difference to `{baseline}`",
        "",
    ]
    out += [f"> **Warning: {w}.**\n" for w in warnings]
    out += [
        f"Paired by seed (arm − {baseline}, same seed), mean and {level}% Student-t interval over the seeds. "
        f"The verdict says better or worse only when the interval excludes zero; it is decided on {PRIMARY_METRIC}.",
        "",
        *_table(
            f"| arm | pairs | Δ{PRIMARY_METRIC} [{level}% CI] | verdict | ΔmAP50 [{level}% CI] | verdict (mAP50) "
            "| Δprecision [CI] | Δrecall [CI] |",
            [
                f"| {r['arm']} | {r[f'{PRIMARY_METRIC}_n_pairs'] if r['verdict'] != 'baseline' else '(baseline)'} | "
                f"{_diff_text(r, PRIMARY_METRIC)} | **{r['verdict']}** | {_diff_text(r, 'mAP50')} | "
                f"{r['mAP50_verdict']} | {_diff_text(r, 'precision')} | {_diff_text(r, 'recall')} |"
                for r in rows
            ],
            [
                (
                    lambda c: _NO_INTERVAL in c,
                    f"`{_NO_INTERVAL}`: one paired seed; the paired interval needs ≥ 2 paired seeds (a t-interval "
                    "from one difference is undefined), so the verdict cannot be better or worse.",
                ),
                (_dash, f"`-`: no paired value: no seed with this metric in both this arm and `{baseline}`."),
                (
                    lambda c: c.startswith("n/a ("),
                    f"n/a: the reason is in the cell (no seed that both this arm and `{baseline}` finished).",
                ),
            ],
        ),
        "",
        "## Ranking quality (confidence vs IoU)",
        "",
        "Each detection of the final model on the val images (confidence ≥ the threshold used by validation) is "
        "matched to the ground-truth box of the same class with the highest IoU (0 if none). Higher correlation = "
        "scores rank localization quality better (GFL, arXiv 2006.04388). Mean ± std over seeds; "
        '"IoU>0" uses only detections that overlap a same-class ground truth (the ranking of localization quality '
        "among real detections; the all-detections columns mix in the background ones at IoU 0). Scatter plots: "
        "`ranking.png` (titles: IoU>0 first, all detections below).",
        "",
        *_table(
            "| arm | Pearson | Spearman | Pearson (IoU>0) | Spearman (IoU>0) |",
            [
                f"| {r['arm']} | "
                + " | ".join(
                    _pm(r[f"rank_{k}_mean"], r[f"rank_{k}_std"], 3)
                    for k in ("pearson", "spearman", "pearson_matched", "spearman_matched")
                )
                + " |"
                for r in rows
            ],
            [
                (
                    _dash,
                    "`-`: not measured: no ranking in the runs' result.json, or the correlation is undefined (fewer "
                    "than 2 detections, or a constant confidence or IoU).",
                ),
                _N1_NOTE,
            ],
        ),
        "",
        "## Training time and final losses",
        "",
        "Training time is Ultralytics' epoch time summed over the run's training segments (resumed runs included); "
        "wall time is the last attempt's time including final validation and the ranking measurement; both are "
        "means over seeds. `cls_loss` is each arm's own classification loss (BCE, VFL, QFL ...): its values are not "
        "comparable across losses.",
        "",
        *_table(
            "| arm | epochs | train time | wall time | box_loss | cls_loss | dfl_loss |",
            [
                f"| {r['arm']} | {_fmt(r['epochs_done_mean'], 1) or '-'} | {_duration(r['train_time_s_mean'])} | "
                f"{_duration(r['wall_time_s_mean'])} | "
                + " | ".join(_pm(r[f"{k}_mean"], r[f"{k}_std"], 4) for k in LOSS_KEYS)
                + " |"
                for r in rows
            ],
            [(_dash, "`-`: not recorded in any run of this arm (result.json or results.csv)."), _N1_NOTE],
        ),
        "",
        "## Runs",
        "",
    ]
    order = {r["arm"]: i for i, r in enumerate(rows)}
    body = []
    for res in sorted(results, key=lambda x: (order.get(x["arm"], 1e9), x["seed"])):
        body.append(
            f"| {res.get('run') or '-'} | {res['arm']} | {res['seed']} | "
            + " | ".join(_fmt(_get(res, "metrics", m)) or "-" for m in METRICS)
            + f" | {_duration(res.get('train_time_s'))} | {res.get('segments', 1)} | "
            f"{_fmt(_get(res, 'ranking', 'pearson'), 3) or '-'} | {_fmt(_get(res, 'ranking', 'spearman'), 3) or '-'} |"
        )
    out += _table(
        "| run | arm | seed | mAP50 | mAP50-95 | precision | recall | train time | segments | Pearson | Spearman |",
        body,
        [(_dash, "`-`: not measured in that run (or the correlation is undefined).")],
    )
    out += ["", "## Curves", "", "![mAP50-95 per epoch](curves.png)", "", "![confidence vs IoU](ranking.png)", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------- plots
def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot, no change of the global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")  # keeps a legend placed outside the axes
    return atomic_write_bytes(path, buf.getvalue())


def plot_epoch_band(
    ax: Any,
    groups: Mapping[str, Sequence[Mapping[str, Any]]],
    metric: str,
    title_size: float | None = None,
    legend: bool = False,
) -> None:
    """Draw ``metric`` per epoch for each arm on ``ax``: the mean over seeds with a ± 1 std band.

    The first arm (the baseline, see ``_group``) is drawn in thick black. Up to 10 arms use the tab10 colours, more
    use tab20 with alternating dashes, and the bands fade as arms are added so that a 16-arm study stays readable.

    Args:
        ax: a matplotlib Axes.
        groups: arm name -> its runs, each with ``curve``: ``{"epoch": [...], metric: [...]}``.
        metric: the curve key to plot.
        title_size: font size of the title (matplotlib's default when None).
        legend: draw the legend: inside the axes for up to 6 arms, outside on the right for more.
    """
    from matplotlib import colormaps

    n = len(groups)
    palette = colormaps["tab10" if n <= 11 else "tab20"].colors
    band_alpha = 0.2 if n <= 4 else 0.08
    for i, (arm, runs) in enumerate(groups.items()):
        per_epoch: dict[int, list[float]] = {}
        for r in runs:
            curve = r.get("curve") or {}
            for e, v in zip(curve.get("epoch", []), curve.get(metric, [])):
                if v is not None and math.isfinite(v):
                    per_epoch.setdefault(int(e), []).append(float(v))
        if not per_epoch:
            continue
        epochs = sorted(per_epoch)
        mean = np.array([np.mean(per_epoch[e]) for e in epochs])
        std = np.array([np.std(per_epoch[e], ddof=1) if len(per_epoch[e]) > 1 else 0.0 for e in epochs])
        base = i == 0
        (line,) = ax.plot(
            epochs,
            mean,
            marker="o" if len(epochs) < 15 else None,
            ms=3,
            color="black" if base else palette[(i - 1) % len(palette)],
            lw=2.2 if base else 1.3,
            ls="-" if base or n <= 11 or i % 2 else "--",
            zorder=3 if base else 2,
            label=f"{arm} ({len(runs)} seed{'s' if len(runs) != 1 else ''})",
        )
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=band_alpha, lw=0)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch (mean ± 1 std over seeds)", fontsize=title_size)
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        if n <= 6:
            ax.legend(fontsize=8)
        else:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def plot_curves(
    results: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    metric: str = "mAP50-95",
    order: Sequence[str] | None = None,
    baseline: str = "bce",
) -> Path:
    """``curves.png``: ``metric`` per epoch for each arm, mean over seeds with a ± 1 std band.

    Each result needs ``curve``: ``{"epoch": [...], metric: [...]}``.
    """
    fig = _figure(7.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    plot_epoch_band(ax, _group(results, order, baseline), metric, legend=True)
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_ranking(
    results: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    order: Sequence[str] | None = None,
    baseline: str = "bce",
) -> Path:
    """``ranking.png``: one confidence-vs-IoU scatter per arm (all seeds), titled with the mean correlations.

    Each title leads with the Pearson and Spearman correlations over the detections with IoU > 0 (those that overlap
    a same-class ground truth: the ranking of localization quality that the README's claim is about), and gives
    the all-detections ones (IoU 0 included) on its second line. The IoU 0 points are drawn in grey.
    """
    groups = _group(results, order, baseline)
    n = max(1, len(groups))
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig = _figure(4.2 * cols, 3.8 * rows)
    undefined = False
    for i, (arm, runs) in enumerate(groups.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        xs, ys = [], []
        for r in runs:
            pts = _get(r, "ranking", "points") or {}
            xs += pts.get("iou", [])
            ys += pts.get("conf", [])
        x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        hit = x > 0
        ax.scatter(x[~hit], y[~hit], s=3, alpha=0.25, lw=0, color="gray", label="IoU 0")
        ax.scatter(x[hit], y[hit], s=3, alpha=0.25, lw=0, color="tab:blue", label="IoU>0")
        corr = {k: _fmt(mean_std(_get(r, "ranking", k) for r in runs)[0], 3) or "n/a" for k in _RANK_KEYS}
        undefined = undefined or "n/a" in corr.values()
        ax.set_title(
            f"{arm}: IoU>0 Pearson {corr['pearson_matched']}, Spearman {corr['spearman_matched']}\n"
            f"all detections: Pearson {corr['pearson']}, Spearman {corr['spearman']}",
            fontsize=9,
        )
        ax.set_xlabel("IoU with best same-class GT")
        ax.set_ylabel("confidence")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if i == 0 and x.size:
            ax.legend(fontsize=7, loc="upper left", markerscale=3)
    fig.tight_layout()
    if undefined:
        fig.text(
            0.01,
            -0.01,
            "n/a: not measured, or undefined (fewer than 2 detections, or a constant confidence or IoU)",
            fontsize=8,
            va="top",
        )
    return _save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------- files
def load_results(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every finished run's ``result.json`` under ``out_dir/runs/*/`` (unreadable files are skipped)."""
    results = []
    for f in sorted(Path(out_dir).glob("runs/*/result.json")):
        try:
            results.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return results


def write_report(
    out_dir: str | os.PathLike[str],
    results: Sequence[Mapping[str, Any]] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary.md``, ``curves.png`` and ``ranking.png`` into ``out_dir`` (atomically).

    Args:
        out_dir: the experiment directory.
        results: per-run result dicts (default: ``load_results(out_dir)``).
        meta: ``name``, ``baseline``, ``arms`` (order), ``commands``, ``versions`` (default: the runs'), ``data``,
            ``train``, ``seeds``, ``missing``, ``level``.

    Returns:
        the written paths by name.

    Raises:
        ValueError: no finished run to report on.
    """
    out_dir = Path(out_dir)
    results = list(load_results(out_dir) if results is None else results)
    if not results:
        raise ValueError(f"No finished runs (runs/*/result.json) in {out_dir}: nothing to report")
    meta = dict(meta or {})
    if not meta.get("versions"):
        seen: dict[str, list[str]] = {}
        for r in results:
            for k, v in (r.get("versions") or {}).items():
                if str(v) not in seen.setdefault(k, []):
                    seen[k].append(str(v))
        meta["versions"] = {k: " / ".join(v) for k, v in seen.items()}
    baseline = meta.get("baseline", "bce")
    order = meta.get("arms")
    rows = summarize(results, baseline=baseline, order=order, level=meta.get("level", 0.95))
    paths = {
        "summary.csv": atomic_write_text(out_dir / "summary.csv", summary_csv_text(rows, meta)),
        "summary.md": atomic_write_text(out_dir / "summary.md", summary_markdown(rows, results, meta)),
        "curves.png": plot_curves(results, out_dir / "curves.png", order=order, baseline=baseline),
        "ranking.png": plot_ranking(results, out_dir / "ranking.png", order=order, baseline=baseline),
    }
    return paths
