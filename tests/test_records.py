"""The records of one validation pass: what Ultralytics' validator scored, saved and loaded without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import IMGSZ, train_tiny

from yolo_vfl.ab import protocol
from yolo_vfl.ab.records import RECORDS_VERSION, Records, RecordsFormatError, load_records, record_detections

ROOT = Path(__file__).resolve().parents[1]
VAL_ARGS = dict(imgsz=IMGSZ, batch=4, device="cpu", workers=0)


def small_records(**kw) -> Records:
    """Two images: image 0 with 2 GT and 2 detections, image 1 with 1 detection and no GT (K = 2)."""
    args = dict(
        det_boxes=np.array([[0, 0, 10, 10], [5, 5, 15, 15], [1, 1, 2, 2]], dtype=np.float32),
        det_conf=np.array([0.9, 0.4, 0.2], dtype=np.float32),
        det_cls=np.array([0, 1, 0]),
        det_image=np.array([0, 0, 1]),
        gt_boxes=np.array([[0, 0, 10, 10], [5, 5, 15, 15]], dtype=np.float32),
        gt_cls=np.array([0, 1]),
        gt_image=np.array([0, 0]),
        det_gt_iou=np.array([[1.0, 25 / 175], [25 / 175, 1.0], [-1, -1]], dtype=np.float32),
        names={0: "a", 1: "b"},
        n_images=2,
        params={"weights": "w.pt", "data": "d.yaml", "imgsz": 64, "conf": 0.001, "iou": 0.7, "max_det": 300},
        metrics={"mAP50": 0.5, "mAP50-95": 0.25, "precision": 0.5, "recall": 1.0},
        versions={"ultralytics": "x"},
    )
    args.update(kw)
    return Records(**args)


def assert_same(a: Records, b: Records) -> None:
    for key in (
        "det_boxes",
        "det_conf",
        "det_cls",
        "det_image",
        "gt_boxes",
        "gt_cls",
        "gt_image",
        "det_gt_iou",
        "orig_shapes",
        "input_shapes",
    ):
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), key
    for key in ("names", "n_images", "params", "metrics", "versions", "image_files"):
        assert getattr(a, key) == getattr(b, key), key


# ------------------------------------------------------------------------------------------------ no model
def test_round_trip_bit_identical(tmp_path):
    """Saving then loading gives the same arrays (dtype, shape, bytes) and metadata."""
    r = small_records()
    path = r.save(tmp_path / protocol.RECORDS_FILE)
    assert path.name == "detections.npz"
    assert_same(r, load_records(path))
    assert_same(r, load_records(load_records(path).save(tmp_path / "again.npz")))


def test_arrays_read_only():
    """Records are immutable: fields cannot be reassigned and arrays cannot be written."""
    r = small_records()
    with pytest.raises(ValueError):
        r.det_conf[0] = 0.0
    with pytest.raises(AttributeError):
        r.n_images = 3  # type: ignore[misc]


def test_gt_columns():
    """The gt_columns of a det_gt_iou column is to its global GT index, -1 for padding, also with unsorted GT."""
    assert small_records().gt_columns().tolist() == [[0, 1], [0, 1], [-1, -1]]
    r = small_records(
        gt_boxes=np.zeros((3, 4)),
        gt_cls=np.array([0, 1, 0]),
        gt_image=np.array([1, 0, 0]),
        det_gt_iou=np.zeros((3, 2), dtype=np.float32),
    )
    assert r.gt_columns().tolist() == [[1, 2], [1, 2], [0, -1]]
    assert r.gt_counts() == {0: 2, 1: 1}


def test_inconsistent_arrays_rejected():
    """An image with more GT than det_gt_iou columns, or an image index out of range, is a ValueError."""
    with pytest.raises(ValueError, match="det_gt_iou must be"):
        small_records(det_gt_iou=np.zeros((3, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="det_image"):
        small_records(det_image=np.array([0, 0, 2]))


def test_unknown_version_clear_error(tmp_path):
    """A file of another format version is refused with a message naming both versions."""
    path = small_records().save(tmp_path / "detections.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["meta"][0]))
    meta["version"] = RECORDS_VERSION + 1
    arrays["meta"] = np.array([json.dumps(meta)])
    np.savez_compressed(path, **arrays)
    with pytest.raises(RecordsFormatError, match=f"version {RECORDS_VERSION + 1}.*version {RECORDS_VERSION}"):
        load_records(path)
    np.savez_compressed(path, x=np.zeros(2))
    with pytest.raises(RecordsFormatError, match="not a detections file"):
        load_records(path)
    path.write_bytes(b"garbage")
    with pytest.raises(RecordsFormatError, match="unreadable"):
        load_records(path)
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "missing.npz")


def test_load_without_torch(tmp_path):
    """load_records and the evaluation run in a process where torch and ultralytics cannot be imported.

    ``yolo_vfl/__init__.py`` imports the (torch) loss library, so the package is stubbed to its path: what is checked
    is that ``yolo_vfl.ab.records`` / ``evaluation`` and everything they import need neither.
    """
    path = small_records().save(tmp_path / "detections.npz")
    code = (
        "import sys, types\n"
        "class Block:\n"  # torch and ultralytics look absent (SciPy and polars probe with find_spec)
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'ultralytics'): raise ModuleNotFoundError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"pkg = types.ModuleType('yolo_vfl'); pkg.__path__ = [{str(ROOT / 'yolo_vfl')!r}]\n"
        "sys.modules['yolo_vfl'] = pkg\n"
        "from yolo_vfl.ab.records import load_records\n"
        "from yolo_vfl.ab import evaluation\n"
        f"r = load_records({str(path)!r})\n"
        "c = evaluation.classify(r)\n"
        "q = evaluation.ranking_quality(r)\n"
        "print(r.n_det, [evaluation.KINDS[k] for k in c['kind']], q['n'])\n"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "['tp',", "'tp',", "'background']", "3"]


def test_obb_rejected():
    """An OBB model is refused before any validation (axis-aligned boxes only)."""
    with pytest.raises(ValueError, match="OBB"):
        record_detections("yolov8n-obb.yaml", "unused.yaml", imgsz=IMGSZ)


# ------------------------------------------------------------------------------------------------ with a model
@pytest.fixture(scope="module")
def tiny_weights(det_data, tmp_path_factory) -> Path:
    """best.pt of a tiny detector trained 1 epoch at 64 px."""
    project = tmp_path_factory.mktemp("records")
    train_tiny("yolov8n.yaml", det_data, project, name="run")
    return project / "run" / "weights" / "best.pt"


@pytest.fixture(scope="module")
def recorded(tiny_weights, det_data) -> Records:
    return record_detections(tiny_weights, det_data, **VAL_ARGS)


@pytest.mark.slow
def test_metrics_equal_plain_val(recorded, tiny_weights, det_data, tmp_path):
    """The recorded metrics are those of YOLO(weights).val(...) with the same arguments."""
    from ultralytics import YOLO

    rd = (
        YOLO(str(tiny_weights))
        .val(data=str(det_data), plots=False, verbose=False, project=str(tmp_path), name="v", **VAL_ARGS)
        .results_dict
    )
    assert set(recorded.metrics) == set(protocol.METRICS)
    for m, key in protocol.ULTRALYTICS_KEYS.items():
        assert recorded.metrics[m] == pytest.approx(float(rd[key]), abs=1e-12), m


def _with_good_predictions(validator_cls):
    """``update_metrics`` of ``validator_cls`` patched to prepend jittered GT boxes to the model's predictions.

    A 1-epoch model scores no true positive (all metrics 0); the jittered boxes (1.5 px noise, every 4th with the
    next class) give non-zero metrics, seen identically by the plain and the recording validator.
    """
    import torch

    orig = validator_cls.update_metrics

    def update_metrics(self, preds, batch):
        new = []
        for si, p in enumerate(preds):
            gt = self._prepare_batch(si, batch)
            n = int(gt["cls"].shape[0])
            gen = torch.Generator().manual_seed(1000 * int(self.seen) + si)
            cls = gt["cls"].float().clone()
            cls[::4] = (cls[::4] + 1) % len(self.names)
            new.append(
                {
                    "bboxes": torch.cat([gt["bboxes"] + 1.5 * torch.randn((n, 4), generator=gen), p["bboxes"]]),
                    "conf": torch.cat([0.5 + 0.5 * torch.rand(n, generator=gen), p["conf"]]),
                    "cls": torch.cat([cls, p["cls"]]),
                    **(
                        {"extra": torch.cat([p["extra"][:0].new_zeros((n, p["extra"].shape[1])), p["extra"]])}
                        if "extra" in p
                        else {}
                    ),
                }
            )
        return orig(self, new, batch)

    return update_metrics


@pytest.mark.slow
def test_metrics_equal_plain_val_nonzero(tiny_weights, det_data, tmp_path):
    """With non-trivial predictions, recorded metrics equal plain val's and the records' AP50 is close to mAP50."""
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect import DetectionValidator

    from yolo_vfl.ab.evaluation import diagnose

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DetectionValidator, "update_metrics", _with_good_predictions(DetectionValidator))
        rec = record_detections(tiny_weights, det_data, **VAL_ARGS)
        rd = (
            YOLO(str(tiny_weights))
            .val(data=str(det_data), plots=False, verbose=False, project=str(tmp_path), name="v", **VAL_ARGS)
            .results_dict
        )
    assert rec.metrics["mAP50"] > 0.3 and rec.metrics["recall"] > 0.3
    for m, key in protocol.ULTRALYTICS_KEYS.items():
        assert rec.metrics[m] == pytest.approx(float(rd[key]), abs=1e-12), m
    ap50 = dict(diagnose(rec).iter_rows())["ap50"]
    print(f"records AP50 {ap50:.4f}, Ultralytics mAP50 {rec.metrics['mAP50']:.4f}")
    assert ap50 == pytest.approx(rec.metrics["mAP50"], abs=0.1)


@pytest.mark.slow
def test_recorded_content(recorded, tiny_weights, det_data):
    """Every val image once, detections above conf, GT counts of the label files, params and versions."""
    val_images = sorted(str(f) for f in (det_data.parent / "images" / "val").iterdir())
    assert recorded.n_images == len(val_images) > 0 and sorted(recorded.image_files) == val_images
    assert recorded.n_det > 0
    assert recorded.det_conf.min() >= protocol.CONF
    assert np.bincount(recorded.det_image, minlength=recorded.n_images).max() <= protocol.MAX_DET
    labels = [Path(f.replace("/images/", "/labels/")).with_suffix(".txt") for f in recorded.image_files]
    n_lines = [len([x for x in p.read_text().splitlines() if x.strip()]) for p in labels]
    assert np.bincount(recorded.gt_image, minlength=recorded.n_images).tolist() == n_lines
    assert recorded.det_gt_iou.shape == (recorded.n_det, max(1, max(n_lines)))
    assert recorded.params["weights"] == str(tiny_weights) and recorded.params["task"] == "detect"
    assert recorded.params["imgsz"] == IMGSZ and recorded.params["conf"] == protocol.CONF
    assert set(recorded.versions) >= {"ultralytics", "torch", "numpy", "yolo_vfl"}
    assert (recorded.input_shapes > 0).all() and (recorded.orig_shapes > 0).all()


@pytest.mark.slow
def test_iou_is_ultralytics_box_iou(recorded):
    """det_gt_iou equals Ultralytics' box_iou recomputed for detections of each image; padding is -1."""
    import torch
    from ultralytics.utils.metrics import box_iou

    cols = recorded.gt_columns()
    for i in range(recorded.n_images):
        d = np.flatnonzero(recorded.det_image == i)[:5]
        g = np.flatnonzero(recorded.gt_image == i)
        if not d.size:
            continue
        expect = box_iou(torch.from_numpy(recorded.det_boxes[d]), torch.from_numpy(recorded.gt_boxes[g])).numpy()
        assert np.array_equal(recorded.det_gt_iou[d, : g.size], expect)
        assert (recorded.det_gt_iou[d, g.size :] == -1).all()
        assert (cols[d, : g.size] == g).all()


@pytest.mark.slow
def test_saved_records_round_trip(recorded, tmp_path):
    """Recorded records survive save/load bit-identically."""
    assert_same(recorded, load_records(recorded.save(tmp_path / "detections.npz")))


@pytest.mark.slow
@pytest.mark.parametrize("task,cfg", [("segment", "yolov8n-seg.yaml"), ("pose", "yolov8n-pose.yaml")])
def test_segment_and_pose_box_part(task, cfg, task_data, tmp_path):
    """Segment and pose models: their boxes are recorded, with the box (B) metrics of the same pass."""
    from ultralytics import YOLO

    data = task_data(task)
    train_tiny(cfg, data, tmp_path, name="run")
    weights = tmp_path / "run" / "weights" / "best.pt"
    rec = record_detections(weights, data, **VAL_ARGS)
    assert rec.params["task"] == task and rec.n_det > 0 and rec.n_gt > 0
    rd = YOLO(str(weights)).val(data=str(data), plots=False, verbose=False, project=str(tmp_path), **VAL_ARGS)
    for m, key in protocol.ULTRALYTICS_KEYS.items():
        assert rec.metrics[m] == pytest.approx(float(rd.results_dict[key]), abs=1e-12), m
