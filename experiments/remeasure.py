"""Re-measure finished A/B runs: record each run's model again and compare with what its ``result.json`` says.

The A/B's recording pass (``yolo_vfl.ab.records.record_detections``) validates a run's final model once and writes the
metrics into ``result.json``. This script repeats that pass with the current code and the run's own arguments (image
size, twice training's batch, ``nms``, ``single_cls``, ``classes``; ``conf``, ``iou`` and ``max_det`` of the
experiment's ``spec.yaml`` ``ranking:`` section, else the protocol's) and
prints both, for example to check that a fix to the validation (Ultralytics' NMS time limit, found in issue 24) leaves a
committed result unchanged. It needs the run's weights, which are not committed::

    python experiments/remeasure.py runs/ab/ab_finetune_digits_sequential/runs/vfl-s0 [RUN_DIR ...]

Exit status 1 when a metric differs by more than ``--tol`` (default 1e-6).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from yolo_vfl.ab import protocol
from yolo_vfl.ab.records import record_detections


def remeasure(run_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """The metrics ``run_dir/result.json`` recorded and those of a new recording pass of the same model.

    Args:
        run_dir: a finished A/B run (``result.json``, ``weights/<metrics_model>``) in an experiment directory.

    Returns:
        ``(recorded, now)``, each ``{metric: value}`` over ``protocol.METRICS``.
    """
    result = json.loads((run_dir / "result.json").read_text())
    spec_file = run_dir.parents[1] / "spec.yaml"
    ranking = (yaml.safe_load(spec_file.read_text()) or {}).get("ranking") or {} if spec_file.exists() else {}
    train = result["train"]
    batch = train.get("batch", 16)
    val = {k: train[k] for k in ("single_cls", "classes", "nms") if k in train}
    val |= {k: ranking[k] for k in ("conf", "iou", "max_det") if ranking.get(k) is not None}
    weights = run_dir / "weights" / result.get("metrics_model", "best.pt")
    batch = 2 * batch if type(batch) is int and batch > 0 else 16
    records = record_detections(weights, result["data"], imgsz=train.get("imgsz", 640), batch=batch, workers=0, **val)
    return {m: result["metrics"][m] for m in protocol.METRICS}, {m: records.metrics[m] for m in protocol.METRICS}


def main(argv: list[str] | None = None) -> int:
    """Print each run's recorded and re-measured metrics; 1 when any differs by more than ``--tol``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished A/B run directories")
    parser.add_argument("--tol", type=float, default=1e-6, help="largest accepted difference per metric")
    args = parser.parse_args(argv)
    differs = False
    for run in args.runs:
        recorded, now = remeasure(run)
        worst = max(abs(now[m] - recorded[m]) for m in protocol.METRICS)
        differs |= worst > args.tol
        print(f"{run.name}: " + ", ".join(f"{m} {recorded[m]:.4f} -> {now[m]:.4f}" for m in protocol.METRICS))
        print(f"{run.name}: largest difference {worst:.2e} ({'differs' if worst > args.tol else 'same'})")
    return int(differs)


if __name__ == "__main__":
    sys.exit(main())
