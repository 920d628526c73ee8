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
_ARRAYS = ("det_boxes", "det_conf", "det_cls", "det_image", "gt_boxes", "gt_cls", "gt_image", "det_gt_iou")
_ARRAYS += ("orig_shapes", "input_shapes")
_META = ("names", "n_images", "params", "metrics", "versions", "image_files")


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

    Raises:
        ValueError: arrays of inconsistent lengths, image indices out of range, too few ``det_gt_iou`` columns.
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
            if key in ("det_boxes", "det_conf", "gt_boxes"):  # floats keep their precision
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
        counts = np.bincount(self.gt_image, minlength=self.n_images)
        col = np.arange(self.det_gt_iou.shape[1])[None, :]
        valid = col < counts[self.det_image][:, None]
        pos = np.where(valid, (np.cumsum(counts) - counts)[self.det_image][:, None] + col, 0)
        return np.where(valid, np.argsort(self.gt_image, kind="stable")[pos] if self.n_gt else -1, -1)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the records to ``path`` (``detections.npz``) atomically.

        Returns:
            The path written.
        """
        meta = json_safe({k: getattr(self, k) for k in _META} | {"version": RECORDS_VERSION})
        buf = io.BytesIO()
        np.savez_compressed(
            buf, meta=np.array([json.dumps(meta, sort_keys=True)]), **{k: getattr(self, k) for k in _ARRAYS}
        )
        return atomic_write_bytes(path, buf.getvalue())


def load_records(path: str | os.PathLike[str]) -> Records:
    """Read a ``detections.npz`` (numpy only).

    Raises:
        FileNotFoundError: no such file.
        RecordsFormatError: not a records file, another version, missing or inconsistent arrays.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(str(arrays["meta"].reshape(-1)[0])) if "meta" in arrays else None
    except FileNotFoundError:
        raise
    except (OSError, ValueError, IndexError) as e:
        raise RecordsFormatError(f"{path}: unreadable detections file ({type(e).__name__}: {e})") from e
    if meta is None:
        raise RecordsFormatError(f"{path}: not a detections file (no 'meta' entry)")
    if (version := meta.get("version") if isinstance(meta, dict) else None) != RECORDS_VERSION:
        raise RecordsFormatError(
            f"{path}: detections format version {version!r}, this yolo_vfl reads version {RECORDS_VERSION}; "
            "re-record the run (delete the file and evaluate again)"
        )
    if missing := [k for k in _ARRAYS if k not in arrays]:
        raise RecordsFormatError(f"{path}: missing arrays {', '.join(missing)}")
    try:
        meta["names"] = {int(k): v for k, v in meta["names"].items()}
        return Records(**{k: arrays[k] for k in _ARRAYS}, **{k: meta[k] for k in _META})
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise RecordsFormatError(f"{path}: inconsistent detections file ({e!r})") from e


# ---------------------------------------------------------------------------------------------- recording
def _recording_validator(base: type, sink: list[dict[str, Any]]) -> type:
    """A subclass of the task's validator ``base`` that appends each image's boxes to ``sink``.

    Ultralytics 8.3 (late) and 8.4 call ``_process_batch(preds, batch)`` once per image with the post-NMS predictions
    and the prepared ground truth, both in input-image pixels; ``self.seen`` counts the images so far.
    """
    from ultralytics.utils.metrics import box_iou

    class RecordingValidator(base):  # type: ignore[misc, valid-type]
        """The task's validator, recording each image's detections, ground truth and their IoUs."""

        def _process_batch(self, preds: dict[str, Any], batch: dict[str, Any]) -> Any:
            det, gt, image = preds["bboxes"][:, :4], batch["bboxes"][:, :4], self.seen - 1
            iou = box_iou(det, gt) if len(det) and len(gt) else det.new_zeros((len(det), len(gt)))
            arrays = {"det_boxes": det, "det_conf": preds["conf"], "det_cls": preds["cls"], "det_gt_iou": iou}
            arrays |= {"gt_boxes": gt, "gt_cls": batch["cls"]}
            entry = {k: v.detach().float().cpu().numpy() for k, v in arrays.items()}
            entry |= {"det_image": np.full(len(det), image), "gt_image": np.full(len(gt), image), "image": image}
            shapes = {"orig_shapes": batch.get("ori_shape", (0, 0)), "input_shapes": batch.get("imgsz", (0, 0))}
            sink.append(entry | {k: [v[:2]] for k, v in shapes.items()} | {"im_file": str(batch.get("im_file", ""))})
            return super()._process_batch(preds, batch)

    RecordingValidator.__name__ = RecordingValidator.__qualname__ = f"Recording{base.__name__}"
    return RecordingValidator


def _assemble(sink: Sequence[dict[str, Any]], **meta: Any) -> Records:
    """Records from the per-image entries of ``_recording_validator``."""
    if not sink or [e["image"] for e in sink] != list(range(len(sink))):
        raise RuntimeError(f"the validator reported images {[e['image'] for e in sink][:10]} ...; expected each once")
    k = max([1, *(e["gt_cls"].size for e in sink)])
    for e in sink:
        e["det_gt_iou"] = np.pad(e["det_gt_iou"], ((0, 0), (0, k - e["gt_cls"].size)), constant_values=-1.0)
    files = tuple(e["im_file"] for e in sink)
    arrays = {key: np.concatenate([e[key] for e in sink]) for key in _ARRAYS}
    return Records(**arrays, n_images=len(sink), image_files=files if all(files) else (), **meta)


def record_detections(
    weights: str | os.PathLike[str], data_yaml: str | os.PathLike[str], *, imgsz: int | Sequence[int], **val_args: Any
) -> Records:
    """Validate ``weights`` with Ultralytics' own validator and record every detection it scores.

    The detections are the validation's (dataloader, letterboxing, multi-label NMS with ``conf``, ``iou``,
    ``max_det``), so the recorded ``metrics`` describe the same detections. ``data_yaml``: its ``val`` split unless
    ``split=`` is given; ``**val_args``: ``model.val``'s other arguments (defaults: ``batch`` 16, ``workers`` 0,
    ``conf``, ``iou`` and ``max_det`` of ``protocol``).

    Returns:
        The records; ``params`` holds the arguments (but ``batch``, ``device``, ``workers``) and ``task``.

    Raises:
        ValueError: an OBB model (rotated boxes) or a task without boxes (classify).
    """
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    from ..trainer import untimed_nms

    model = YOLO(str(weights))
    if (task := model.task) not in ("detect", "segment", "pose"):  # segment and pose: their box part
        what = "an OBB model (rotated boxes)" if task == "obb" else f"task {task!r} has no boxes"
        raise ValueError(f"{weights}: {what}; only detect, segment and pose models are recorded")
    val_args = {"conf": protocol.CONF, "iou": protocol.NMS_IOU, "max_det": protocol.MAX_DET, **val_args}
    params = {"weights": str(weights), "data": str(data_yaml), "imgsz": imgsz, "task": task, **val_args}
    for key in ("batch", "device", "workers"):
        params.pop(key, None)
    sink: list[dict[str, Any]] = []
    level = LOGGER.level
    LOGGER.setLevel(max(level, 30))  # WARNING: no validation table in the middle of the caller's output
    try:
        with tempfile.TemporaryDirectory(prefix="yolo_vfl_records_") as tmp:
            args = {"split": "val", "plots": False, "save_json": False, "verbose": False, "exist_ok": True}
            args |= {"project": tmp, "name": "val", "batch": 16, "workers": 0, **val_args}
            validator = _recording_validator(model.task_map[task]["validator"], sink)
            with untimed_nms():  # metrics must not depend on machine load
                rd = model.val(validator=validator, data=str(data_yaml), imgsz=imgsz, **args).results_dict
    finally:
        LOGGER.setLevel(level)
    return _assemble(
        sink,
        names=dict(model.names),
        params=json.loads(json.dumps(json_safe(params), default=str)),  # JSON values
        metrics={m: float(rd[key]) for m, key in protocol.ULTRALYTICS_KEYS.items()},
        versions=versions(numpy=np.__version__),
    )
