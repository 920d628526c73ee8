"""The A/B protocol constants: Ultralytics' own defaults where they claim to be, and consistent with each other."""

from __future__ import annotations

from yolo_vfl.ab import protocol


def test_validation_thresholds_are_ultralytics_defaults(tmp_path):
    """CONF, NMS_IOU and MAX_DET are what a plain Ultralytics detection validator uses; OPERATING_CONF predict's."""
    from ultralytics.cfg import get_cfg
    from ultralytics.models.yolo.detect import DetectionPredictor, DetectionValidator

    cfg = get_cfg()
    assert (cfg.iou, cfg.max_det) == (protocol.NMS_IOU, protocol.MAX_DET)
    validator = DetectionValidator(save_dir=tmp_path, args={"task": "detect"})
    assert validator.args.conf == protocol.CONF
    assert DetectionPredictor(overrides={"save": False}).args.conf == protocol.OPERATING_CONF


def test_metric_names_are_ultralytics_box_keys():
    """Every reported metric maps to one of the box metrics Ultralytics writes to results.csv, in its report order."""
    from ultralytics.utils.metrics import DetMetrics

    keys = DetMetrics().keys
    assert set(protocol.ULTRALYTICS_KEYS) == set(protocol.METRICS)
    assert set(protocol.ULTRALYTICS_KEYS.values()) == set(keys)
    assert protocol.PRIMARY_METRIC in protocol.METRICS


def test_defaults_agree():
    """The baseline is one of the default arms; levels and thresholds lie in their ranges."""
    arms = protocol.DEFAULT_ARMS
    assert protocol.BASELINE == arms[0] and len(set(arms)) == len(arms)
    assert 0 < protocol.LEVEL < 1 and 0 < protocol.MARGIN < 0.1
    assert 0 < protocol.IOU_BACKGROUND < protocol.IOU_MATCH < 1 and 0 < protocol.CONF < protocol.OPERATING_CONF < 1
    assert protocol.RESULT_FILE.endswith(".json") and protocol.RECORDS_FILE.endswith(".npz")
