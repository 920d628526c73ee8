"""The evaluation protocol of the A/B runner, written once: every layer takes its thresholds and names from here."""

from __future__ import annotations

#: Ultralytics' validation defaults: confidence (mAP integrates over all scores), NMS IoU, detections per image.
CONF = 0.001
NMS_IOU = 0.7
MAX_DET = 300
#: IoU at which a detection matches a ground-truth box (true positive, duplicate, wrong class).
IOU_MATCH = 0.5
#: Best IoU with any ground truth below which a false positive is background.
IOU_BACKGROUND = 0.1
#: Correlation points kept per run for the ranking plot (a deterministic subsample).
MAX_POINTS = 2000

#: Accuracy metrics of the final validation, in report order; the primary one gives the headline verdict.
METRICS: tuple[str, ...] = ("mAP50", "mAP50-95", "precision", "recall")
PRIMARY_METRIC = "mAP50-95"
#: Final-epoch losses shown in the report (``results.csv`` columns).
LOSS_KEYS: tuple[str, ...] = ("train/box_loss", "train/cls_loss", "train/dfl_loss")
#: Ultralytics' names of the box metrics in ``results_dict`` / ``results.csv``.
ULTRALYTICS_KEYS = {m: f"metrics/{m}(B)" for m in METRICS}
#: Names of the files a run directory holds, besides Ultralytics' own.
RESULT_FILE = "result.json"
RECORDS_FILE = "detections.npz"

#: Without a spec's own: the baseline arm (every other arm is compared with it), the arms and the seeds.
BASELINE = "bce"
DEFAULT_ARMS: tuple[str, ...] = ("bce", "vfl", "qfl")
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
#: The deployment-style confidence threshold at which detections are counted (Ultralytics' predict default).
OPERATING_CONF = 0.25
#: Confidence level of the paired intervals in the report.
LEVEL = 0.95
#: Equivalence margin on the primary metric: decide=sequential's default and the report's planning answer.
MARGIN = 0.005
