"""One job in its own process: train it from zero (``yolo_vfl.executor``), validate it once, write its result.

``python -m yolo_vfl.ab.run JOB.json`` (output in ``out/logs/<run>.log``): a crash or Ultralytics' global state cannot
leak between runs. Training skips Ultralytics' final validation; the run's one validation pass of ``best.pt`` follows:
with ranking on, the recording pass (``records``: metrics, ``detections.npz``, ranking quality), else a plain
Ultralytics validation. Then ``results_long.csv`` and, last (it marks the run finished), ``result.json``.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..checks import versions
from ..executor import RunBusyError, execute, final_weights, train
from ..fileio import atomic_write_json, read_json
from . import protocol
from .jobs import Job
from .results import TABLE_FILE, Curve, RunResult, epoch_table, run_table, write_table

__all__ = ["read_results_csv", "run_one", "main", "EXIT_BUSY"]

EXIT_BUSY = 75  # another process holds the run's lock
#: What a run's result copies from its job.
_JOB_FIELDS = ("run", "arm", "seed", "loss", "overrides", "settings", "model", "data", "train", "fingerprint", "device")
Log = Callable[[str], None]


def read_results_csv(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """Rows of an Ultralytics ``results.csv`` (via ``epoch_table``: stripped keys, floats, a re-run epoch's last)."""
    epochs = epoch_table(path)
    return (
        epochs.pivot(on="metric", index="epoch", values="value").fill_null(math.nan).to_dicts() if epochs.height else []
    )


def _evaluate(job: Job, weights: Path, log: Log) -> dict[str, Any]:
    """The run's one validation pass of its final model: metrics, and with ranking on, records and ranking quality.

    It validates as the trainer would: twice training's batch, training's image size, device, data and ``nms``
    (``nms: false``: an end-to-end head's one-to-one branch) arguments.
    """
    batch, rk = job.train.get("batch", 16), job.ranking or {}
    kept = {k: job.train[k] for k in ("imgsz", "single_cls", "classes", "workers", "nms") if k in job.train}
    val = {"imgsz": 640, "batch": batch * 2 if type(batch) is int and batch > 0 else 16, "device": job.device, **kept}
    if not rk.get("enabled", True):
        from ultralytics import YOLO

        from ..trainer import untimed_nms

        log(f"validating {weights}")
        val |= {"split": "val", "plots": False, "verbose": False, "project": str(job.run_dir), "name": "final_val"}
        with untimed_nms():  # metrics must not depend on machine load
            rd = YOLO(str(weights)).val(data=job.data, exist_ok=True, **val).results_dict
        metrics = {m: float(rd.get(k, math.nan)) for m, k in protocol.ULTRALYTICS_KEYS.items()}
        return {"metrics": metrics, "metrics_source": "yolo-vfl ab validation", "metrics_model": weights.name}
    from .evaluation import ranking_quality
    from .records import record_detections

    conf, iou, max_det = rk.get("conf", protocol.CONF), rk.get("iou", protocol.NMS_IOU), rk.get("max_det")
    log(f"recording the detections of {weights} (conf {conf}, NMS IoU {iou}, max_det {max_det})")
    records = record_detections(weights, job.data, conf=conf, iou=iou, max_det=max_det or protocol.MAX_DET, **val)
    records.save(job.run_dir / protocol.RECORDS_FILE)
    return {
        "metrics": {m: float(records.metrics.get(m, math.nan)) for m in protocol.METRICS},
        "metrics_source": "yolo-vfl ab recording pass (Ultralytics validator)",
        "metrics_model": weights.name,
        "records": protocol.RECORDS_FILE,
        "ranking": ranking_quality(records, max_points=rk.get("max_points", protocol.MAX_POINTS), seed=job.seed),
    }


def _write_result(job: Job, evaluation: dict[str, Any], t0: float, started_with: dict[str, Any]) -> RunResult:
    """The run's ``results_long.csv``, then its ``result.json`` (last: it marks the run finished)."""
    rows = read_results_csv(job.run_dir / "results.csv")
    curves = (tuple(r.get(protocol.ULTRALYTICS_KEYS[m], math.nan) for r in rows) for m in ("mAP50-95", "mAP50"))
    result = RunResult(
        **{k: getattr(job, k) for k in _JOB_FIELDS},
        **evaluation,
        final_losses={k: v for k, v in (rows or [{}])[-1].items() if k.startswith(("train/", "val/")) and "loss" in k},
        curve=Curve(tuple(int(r["epoch"]) for r in rows if "epoch" in r), *curves),
        epochs_done=len(rows),
        train_time_s=next((r["time"] for r in reversed(rows) if math.isfinite(r.get("time", math.nan))), None),
        restarts=len(list((Path(job.out_dir) / "aside").glob(f"{job.run}.*"))),
        wall_time_s=time.time() - t0,
        host=platform.node(),
        versions=started_with,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    write_table(run_table(result, epoch_table(job.run_dir / "results.csv")), job.run_dir / TABLE_FILE)
    atomic_write_json(job.result, result.to_dict())
    return result


def run_one(job: Job, log: Log | None = None) -> RunResult:
    """Train one arm x seed from zero under its lock, validate it once and write its ``result.json`` atomically.

    Returns:
        the run's result (an existing ``result.json`` is returned as it is).

    Raises:
        RunBusyError: another process holds the run's lock.
    """
    from ..trainer import VFLDetectionTrainer, skip_final_validation

    log = log or (lambda msg: print(f"yolo-vfl ab: {msg}", flush=True))
    t0, started_with = time.time(), versions()  # the code this run starts with (an edit later does not count)

    def finished() -> RunResult | None:
        existing = read_json(job.result)
        return None if existing is None else RunResult.from_dict(existing)

    def build() -> RunResult:
        log(f"{job.run}: training {job.model} on {job.data}")
        args = {"data": job.data, **job.train, **({} if job.device is None else {"device": job.device}), **job.settings}
        skip = {"on_pretrain_routine_start": skip_final_validation}  # the pass below is the run's one validation
        train(job.model, job.run_dir, args, trainer=VFLDetectionTrainer, callbacks=skip)
        return _write_result(job, _evaluate(job, final_weights(job.run_dir), log), t0, started_with)

    lock, aside = job.run_dir.parent / f".{job.run}.lock", Path(job.out_dir) / "aside"
    return execute(job.run, job.run_dir, lock, finished, build, log=log, aside=aside)


def main(argv: list[str]) -> int:
    """``python -m yolo_vfl.ab.run JOB.json``: run one job under its lock (exit 75 when another process holds it)."""
    try:
        run_one(Job(**read_json(argv[0])))
    except RunBusyError as e:
        print(f"yolo-vfl ab: {e}", flush=True)
        return EXIT_BUSY
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
