"""The one inference pass per finished run: every detection and ground-truth box of Ultralytics' validation.

``record_detections`` records what Ultralytics' own validator scores, image by image, with their IoUs (``box_iou``) and
the pass's metrics; ``Records.save`` writes ``detections.npz`` (a compressed ``.npz`` of the array fields and ``meta``,
a JSON string: ``version`` = ``RECORDS_VERSION``, ``names``, ``n_images``, ``params``, ``metrics``, ``versions``,
``image_files``); ``load_records`` reads it without torch or Ultralytics.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import versions
from ..fileio import atomic_write_bytes, json_safe
from . import protocol

__all__ = ["RECORDS_VERSION", "Records", "RecordsFormatError", "record_detections", "load_records"]

#: Format version of ``detections.npz``; a file of another version is refused by ``load_records``.
RECORDS_VERSION = 1
#: Tasks whose validators score axis-aligned boxes (segment and pose: their box part).
BOX_TASKS: tuple[str, ...] = ("detect", "segment", "pose")

_ARRAYS = ("det_boxes", "det_conf", "det_cls", "det_image", "gt_boxes", "gt_cls", "gt_image", "det_gt_iou")
_ARRAYS += ("orig_shapes", "input_shapes")
_FLOATS = ("det_boxes", "det_conf", "gt_boxes")


class RecordsFormatError(ValueError):
    """A ``detections.npz`` that cannot be read: unknown version, missing or inconsistent arrays."""


@dataclass(frozen=True, eq=False)
class Records:
    """Every detection and ground-truth box of one validation pass (numpy only; arrays are read-only).

    Attributes:
        det_boxes, det_conf, det_cls, det_image: (N, 4) xyxy in the validator's (letterboxed) input pixels, (N,)
            confidences, (N,) classes, (N,) image index (validation order).
        gt_boxes, gt_cls, gt_image: (M, 4), (M,), (M,) the ground truth, alike.
        det_gt_iou: (N, K) float32 IoU of each detection with the j-th ground truth of its own image (``gt`` order);
            -1 where the image has fewer; K = max(1, most ground truths in one image).
        names, n_images: class names by index; images validated (also those without boxes).
        params, metrics, versions: the pass's arguments (JSON values), box metrics and package versions.
        image_files, orig_shapes, input_shapes: (n_images,) paths (or empty), (n_images, 2) int (height, width) on
            disk and as validated (zeros when unknown).
    """

    det_boxes: np.ndarray
    det_conf: np.ndarray
    det_cls: np.ndarray
    det_image: np.ndarray
    gt_boxes: np.ndarray
    gt_cls: np.ndarray
    gt_image: np.ndarray
    det_gt_iou: np.ndarray
    names: Mapping[int, str]
    n_images: int
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    image_files: tuple[str, ...] = ()
    orig_shapes: np.ndarray | None = None
    input_shapes: np.ndarray | None = None

    def __post_init__(self) -> None:
        n_images, n, m = int(self.n_images), np.size(self.det_conf), np.size(self.gt_cls)
        shape = {"det_boxes": (n, 4), "gt_boxes": (m, 4), "gt_cls": (m,), "gt_image": (m,)}
        shape |= {"orig_shapes": (n_images, 2), "input_shapes": (n_images, 2)}
        for key in _ARRAYS:
            a = np.asarray(np.zeros((n_images, 2)) if (v := getattr(self, key)) is None else v)
            dtype = np.float32 if key == "det_gt_iou" else np.int64
            if key in _FLOATS:
                dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.float64
            a = np.ascontiguousarray(a if key == "det_gt_iou" else a.reshape(shape.get(key, (n,))), dtype=dtype)
            a.setflags(write=False)
            object.__setattr__(self, key, a)
        for key in ("det_image", "gt_image"):
            if (idx := getattr(self, key)).size and not 0 <= idx.min() <= idx.max() < n_images:
                raise ValueError(f"{key} must lie in [0, n_images={n_images}), got {idx.min()} ... {idx.max()}")
        k = max(1, np.bincount(self.gt_image, minlength=1).max())
        if (iou := self.det_gt_iou).ndim != 2 or iou.shape[0] != n or iou.shape[1] < k:
            raise ValueError(f"det_gt_iou must be (N={n}, K>={k}, the most GT boxes of one image), got {iou.shape}")
        meta = {"n_images": n_images, "image_files": tuple(map(str, self.image_files)), "params": dict(self.params)}
        meta |= {"names": {int(k): str(v) for k, v in dict(self.names).items()}}
        meta |= {"metrics": {str(k): float(v) for k, v in dict(self.metrics).items()}}
        for key, value in (meta | {"versions": {str(k): str(v) for k, v in dict(self.versions).items()}}).items():
            object.__setattr__(self, key, value)

    @property
    def n_det(self) -> int:
        """Number of detections N."""
        return int(self.det_conf.size)

    @property
    def n_gt(self) -> int:
        """Number of ground-truth boxes M."""
        return int(self.gt_cls.size)

    def gt_counts(self) -> dict[int, int]:
        """Ground-truth boxes per class (classes without ground truth absent)."""
        cls, counts = np.unique(self.gt_cls, return_counts=True)
        return {int(c): int(k) for c, k in zip(cls, counts)}

    def gt_columns(self) -> np.ndarray:
        """(N, K) int64: the index into ``gt_*`` of each column of ``det_gt_iou`` (-1 for the padding)."""
        n, k = self.det_gt_iou.shape
        if self.n_gt == 0:
            return np.full((n, k), -1, dtype=np.int64)
        counts = np.bincount(self.gt_image, minlength=self.n_images)
        starts = np.cumsum(counts) - counts
        order = np.argsort(self.gt_image, kind="stable")
        col = np.arange(k)[None, :]
        valid = col < counts[self.det_image][:, None]
        pos = np.where(valid, starts[self.det_image][:, None] + col, 0)
        return np.where(valid, order[pos], -1).astype(np.int64)

    def to_bytes(self) -> bytes:
        """The ``detections.npz`` content (compressed npz; metadata as a JSON string array ``meta``)."""
        meta = {
            "version": RECORDS_VERSION,
            "names": {str(k): v for k, v in self.names.items()},
            "n_images": self.n_images,
            "params": self.params,
            "metrics": self.metrics,
            "versions": self.versions,
            "image_files": list(self.image_files),
        }
        buf = io.BytesIO()
        arrays = {k: getattr(self, k) for k in _ARRAYS}
        np.savez_compressed(buf, meta=np.array([json.dumps(json_safe(meta), sort_keys=True)]), **arrays)
        return buf.getvalue()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the records to ``path`` (``detections.npz``) atomically; returns the path."""
        return atomic_write_bytes(path, self.to_bytes())


def load_records(path: str | os.PathLike[str]) -> Records:
    """Read a ``detections.npz`` (numpy only).

    Raises:
        FileNotFoundError: no such file. RecordsFormatError: not a records file, another version, inconsistent arrays.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "meta" not in npz.files:
                raise RecordsFormatError(f"{path}: not a detections file (no 'meta' entry)")
            meta = json.loads(str(npz["meta"].reshape(-1)[0]))
            version = meta.get("version") if isinstance(meta, dict) else None
            if version != RECORDS_VERSION:
                raise RecordsFormatError(
                    f"{path}: detections format version {version!r}, this yolo_vfl reads version {RECORDS_VERSION}; "
                    "re-record the run (delete the file and evaluate again)"
                )
            if missing := [k for k in _ARRAYS if k not in npz.files]:
                raise RecordsFormatError(f"{path}: missing arrays {', '.join(missing)}")
            arrays = {k: npz[k] for k in _ARRAYS}
    except (FileNotFoundError, RecordsFormatError):
        raise
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise RecordsFormatError(f"{path}: unreadable detections file ({type(e).__name__}: {e})") from e
    try:
        return Records(
            **arrays,
            names={int(k): v for k, v in (meta.get("names") or {}).items()},
            n_images=int(meta["n_images"]),
            image_files=tuple(meta.get("image_files") or ()),
            **{key: meta.get(key) or {} for key in ("params", "metrics", "versions")},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise RecordsFormatError(f"{path}: inconsistent detections file ({e})") from e


# ---------------------------------------------------------------------------------------------- recording
def _numpy(t: Any, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    return t.detach().cpu().numpy().astype(dtype).reshape(shape)


def _recording_validator(base: type, sink: list[dict[str, Any]]) -> type:
    """A subclass of the task's validator ``base`` that appends each image's boxes to ``sink``.

    Ultralytics 8.3 (late) and 8.4 call ``_process_batch(preds, batch)`` once per image with the post-NMS predictions
    and the prepared ground truth, both in input-image pixels; ``self.seen`` counts the images so far.
    """
    from ultralytics.utils.metrics import box_iou

    class RecordingValidator(base):  # type: ignore[misc, valid-type]
        """The task's validator, recording each image's detections, ground truth and their IoUs."""

        def _process_batch(self, preds: dict[str, Any], batch: dict[str, Any]) -> Any:
            pred_boxes, gt_boxes = preds["bboxes"], batch["bboxes"]
            n, m = int(pred_boxes.shape[0]), int(gt_boxes.shape[0])
            iou = box_iou(pred_boxes[:, :4], gt_boxes[:, :4]) if n and m else None
            sink.append(
                {
                    "image": self.seen - 1,
                    "det_boxes": _numpy(pred_boxes[:, :4], np.float32, (n, 4)),
                    "det_conf": _numpy(preds["conf"], np.float32, (n,)),
                    "det_cls": _numpy(preds["cls"], np.int64, (n,)),
                    "gt_boxes": _numpy(gt_boxes[:, :4], np.float32, (m, 4)),
                    "gt_cls": _numpy(batch["cls"], np.int64, (m,)),
                    "iou": np.zeros((n, m), np.float32) if iou is None else _numpy(iou, np.float32, (n, m)),
                    "im_file": str(batch.get("im_file", "")),
                    "orig_shape": tuple(int(v) for v in batch.get("ori_shape", (0, 0)))[:2],
                    "input_shape": tuple(int(v) for v in batch.get("imgsz", (0, 0)))[:2],
                }
            )
            return super()._process_batch(preds, batch)

    RecordingValidator.__name__ = RecordingValidator.__qualname__ = f"Recording{base.__name__}"
    return RecordingValidator


def _assemble(sink: Sequence[dict[str, Any]], **meta: Any) -> Records:
    """Records from the per-image entries of ``_recording_validator`` (in validation order)."""
    sink = sorted(sink, key=lambda e: e["image"])
    images = [e["image"] for e in sink]
    if images != list(range(len(sink))):
        raise RuntimeError(f"the validator reported images {images[:10]} ...; expected each image once, in order")
    k = max([1, *(e["gt_cls"].size for e in sink)])
    ious = [np.pad(e["iou"], ((0, 0), (0, k - e["iou"].shape[1])), constant_values=-1.0) for e in sink]

    def cat(key: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        return np.concatenate([e[key] for e in sink]).astype(dtype) if sink else np.zeros(shape, dtype=dtype)

    def image_index(key: str) -> np.ndarray:
        return np.repeat(np.arange(len(sink)), [e[key].size for e in sink]).astype(np.int64)

    return Records(
        det_boxes=cat("det_boxes", np.float32, (0, 4)),
        det_conf=cat("det_conf", np.float32, (0,)),
        det_cls=cat("det_cls", np.int64, (0,)),
        det_image=image_index("det_conf"),
        gt_boxes=cat("gt_boxes", np.float32, (0, 4)),
        gt_cls=cat("gt_cls", np.int64, (0,)),
        gt_image=image_index("gt_cls"),
        det_gt_iou=np.concatenate(ious) if ious else np.zeros((0, k), dtype=np.float32),
        n_images=len(sink),
        image_files=tuple(e["im_file"] for e in sink) if all(e["im_file"] for e in sink) else (),
        orig_shapes=np.asarray([e["orig_shape"] for e in sink], dtype=np.int64).reshape(-1, 2),
        input_shapes=np.asarray([e["input_shape"] for e in sink], dtype=np.int64).reshape(-1, 2),
        **meta,
    )


def record_detections(
    weights: str | os.PathLike[str],
    data_yaml: str | os.PathLike[str],
    *,
    imgsz: int | Sequence[int],
    batch: int = 16,
    device: Any = None,
    workers: int = 0,
    conf: float = protocol.CONF,
    iou: float = protocol.NMS_IOU,
    max_det: int = protocol.MAX_DET,
    **val_args: Any,
) -> Records:
    """Validate ``weights`` with Ultralytics' own validator and record every detection it scores.

    The detections are the validation's (dataloader, letterboxing, multi-label NMS with ``conf``, ``iou``,
    ``max_det``), so the recorded ``metrics`` describe the same detections. ``data_yaml``: its ``val`` split unless
    ``split=`` is given; ``**val_args``: ``model.val``'s other arguments. ``params`` holds the arguments and ``task``.

    Raises:
        ValueError: an OBB model (rotated boxes) or a task without boxes (classify).
    """
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    model = YOLO(str(weights))
    task = model.task
    if task not in BOX_TASKS:
        what = "an OBB model (rotated boxes)" if task == "obb" else f"task {task!r} has no boxes"
        raise ValueError(f"{weights}: {what}; only detect, segment and pose models are recorded")
    sink: list[dict[str, Any]] = []
    validator = _recording_validator(model.task_map[task]["validator"], sink)
    shared = {"imgsz": imgsz, "conf": conf, "iou": iou, "max_det": max_det}
    extra = {k: v if isinstance(v, (bool, int, float, str, type(None))) else str(v) for k, v in val_args.items()}
    params = {"weights": str(weights), "data": str(data_yaml), **shared, "task": task, **extra}
    level = LOGGER.level
    LOGGER.setLevel(max(level, 30))  # WARNING: no validation table in the middle of the caller's output
    try:
        with tempfile.TemporaryDirectory(prefix="yolo_vfl_records_") as tmp:
            args = {"split": "val", "plots": False, "save_json": False, "verbose": False, "exist_ok": True}
            args |= {"project": tmp, "name": "val", "batch": batch, "device": device, "workers": workers, **val_args}
            metrics = model.val(validator=validator, data=str(data_yaml), **shared, **args)
    finally:
        LOGGER.setLevel(level)
    rd = getattr(metrics, "results_dict", {}) or {}
    return _assemble(
        sink,
        names=dict(getattr(model, "names", None) or {}),
        params=json.loads(json.dumps(json_safe(params))),
        metrics={m: float(rd[key]) for m, key in protocol.ULTRALYTICS_KEYS.items() if key in rd},
        versions=versions(numpy=np.__version__),
    )
