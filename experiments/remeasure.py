"""Re-measure finished A/B runs: record each run's model again and compare with what its ``result.json`` says.

The A/B's recording pass (``yolo_vfl.ab.records.record_detections``) validates a run's final model once and writes the
metrics into ``result.json``. This script repeats that pass with the current code and the run's own arguments (image
size, twice training's batch, ``nms``, ``single_cls``, ``classes``; ``conf``, ``iou`` and ``max_det`` of the
experiment's ``spec.yaml`` ``ranking:`` section, else the protocol's) and prints both, for example to check that a
fix to the validation (Ultralytics' NMS time limit, found in issue 24) leaves a committed result unchanged. Exit
status 1 when a metric differs by more than ``--tol`` (default 1e-6)::

    python experiments/remeasure.py runs/ab/ab_finetune_digits_sequential/runs/vfl-s0 [RUN_DIR ...]

``--nms default`` measures with Ultralytics' default ``nms`` instead of the run's: for an end-to-end head (YOLO26)
trained and validated with ``nms: false`` (its one-to-one branch), the one-to-many branch through NMS, which
Ultralytics 8.4 validates and predicts by default. It then prints each arm's paired difference against
``--baseline`` (mean and 95% t-interval over the seeds both have; descriptive: the seeds are whatever the experiment
trained) and ``--csv`` writes every value. It needs the runs' weights, which are not committed::

    python experiments/remeasure.py --nms default --csv nms_branch.csv runs/ab/ab_finetune_digits_yolo26/runs/*
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from yolo_vfl.ab import protocol
from yolo_vfl.ab.records import record_detections
from yolo_vfl.ab.stats import mean_std, paired_difference, verdict


def remeasure(run_dir: Path, nms: str = "run") -> tuple[dict[str, Any], dict[str, float]]:
    """The run's ``result.json`` and the metrics of a new recording pass of the same model.

    Args:
        run_dir: a finished A/B run (``result.json``, ``weights/<metrics_model>``) in an experiment directory.
        nms: ``"run"`` (the run's own ``nms``) or ``"default"`` (Ultralytics' default: NMS on the one-to-many branch).

    Returns:
        ``(result, now)``: the parsed ``result.json`` and ``{metric: value}`` over ``protocol.METRICS``.
    """
    result = json.loads((run_dir / "result.json").read_text())
    spec_file = run_dir.parents[1] / "spec.yaml"
    ranking = (yaml.safe_load(spec_file.read_text()) or {}).get("ranking") or {} if spec_file.exists() else {}
    train = result["train"]
    val = {k: train[k] for k in ("single_cls", "classes") + (("nms",) if nms == "run" else ()) if k in train}
    val |= {k: ranking[k] for k in ("conf", "iou", "max_det") if ranking.get(k) is not None}
    weights = run_dir / "weights" / result.get("metrics_model", "best.pt")
    batch = train.get("batch", 16)
    batch = 2 * batch if type(batch) is int and batch > 0 else 16
    records = record_detections(weights, result["data"], imgsz=train.get("imgsz", 640), batch=batch, workers=0, **val)
    return result, {m: records.metrics[m] for m in protocol.METRICS}


def _paired_lines(rows: list[dict[str, Any]], baseline: str, metric: str = protocol.PRIMARY_METRIC) -> list[str]:
    """A markdown table: each arm's ``metric`` (as now measured) paired by seed against ``baseline``."""
    by_arm: dict[str, dict[int, float]] = {}
    for r in rows:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = r[f"now/{metric}"]
    if baseline not in by_arm:
        return [f"no run of the baseline arm {baseline!r}: no paired differences"]
    out = [f"| arm | seeds | {metric} mean | paired diff vs {baseline} [95%] | verdict |", "|---" * 5 + "|"]
    for arm, values in by_arm.items():
        d = paired_difference(values, by_arm[baseline])
        mean = mean_std(values.values())[0]
        diff = "-" if arm == baseline or d.mean is None else f"{d.mean:+.4f}"
        diff += f" [{d.lo:+.4f}, {d.hi:+.4f}]" if arm != baseline and d.lo is not None else ""
        out.append(f"| {arm} | {len(values)} | {mean:.4f} | {diff} | {'-' if arm == baseline else verdict(d)} |")
    return out


def main(argv: list[str] | None = None) -> int:
    """Print each run's recorded and re-measured metrics; 1 when any differs by more than ``--tol`` (``--nms run``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished A/B run directories")
    parser.add_argument("--tol", type=float, default=1e-6, help="largest accepted difference per metric")
    parser.add_argument("--nms", choices=("run", "default"), default="run", help="the run's nms, or Ultralytics'")
    parser.add_argument("--baseline", default=protocol.BASELINE, help="arm the paired differences are against")
    parser.add_argument("--csv", type=Path, help="write run, arm, seed and each metric recorded and now")
    args = parser.parse_args(argv)
    rows, differs = [], False
    for run in sorted(r for r in args.runs if (r / "result.json").exists()):
        result, now = remeasure(run, args.nms)
        recorded = {m: result["metrics"][m] for m in protocol.METRICS}
        worst = max(abs(now[m] - recorded[m]) for m in protocol.METRICS)
        differs |= worst > args.tol
        rows.append({"run": run.name, "arm": result["arm"], "seed": result["seed"]})
        rows[-1] |= {f"{k}/{m}": v[m] for k, v in (("recorded", recorded), ("now", now)) for m in protocol.METRICS}
        print(f"{run.name}: " + ", ".join(f"{m} {recorded[m]:.4f} -> {now[m]:.4f}" for m in protocol.METRICS))
        print(f"{run.name}: largest difference {worst:.2e} ({'differs' if worst > args.tol else 'same'})")
    if args.csv and rows:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.nms == "default":
        print("\n".join(["", "Measured with Ultralytics' default nms (one-to-many branch through NMS):", ""]))
        print("\n".join(_paired_lines(rows, args.baseline)))
        return 0
    return int(differs)


if __name__ == "__main__":
    sys.exit(main())
