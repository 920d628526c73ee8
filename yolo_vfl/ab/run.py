"""Running one job: train it (fresh, restarted or resumed), record its final model once, write its result.

Each job runs in its own process (``python -m yolo_vfl.ab.run JOB.json``, output in ``out/logs/<run>.log``), so that a
crash or Ultralytics' global state cannot leak between runs. The state of a run directory decides what happens:

* ``done``: ``result.json`` exists; nothing to do.
* ``fresh``: no directory; train.
* ``trained``: training finished before the runner was killed; only the evaluation runs.
* ``resume``: an interrupted, usable ``last.pt`` with the same settings. By default the run restarts from zero
  (Ultralytics' resume does not restore the data order and augmentation state, so a resumed run's numbers differ
  from an uninterrupted run's); with ``resume_interrupted`` it continues from ``last.pt``.
* ``restart``: anything else (no checkpoint, an unusable one, other settings); the directory is moved to
  ``out/aside/`` and the run starts again.

Every training segment is recorded in ``segments.json`` before it starts (how many ``results.csv`` rows existed),
so the training time and the number of segments never depend on the timing of the epochs.

The evaluation is one pass of Ultralytics' validator over ``best.pt`` (``records``): its metrics are the run's
final metrics, and its detections (``detections.npz``) give the ranking quality now and the diagnosis later. The run's
numbers go to its long results table ``results_long.csv`` (``yolo_vfl.ab.results``), its provenance to
``result.json``, written last.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..checks import versions
from ..fileio import atomic_write_json, file_lock, read_json
from . import protocol
from .jobs import Job, fingerprint, fingerprint_diff, same_fingerprint
from .results import TABLE_FILE, Curve, RunResult, epoch_table, run_table, write_table

__all__ = ["inspect_run", "planned_state", "read_results_csv", "train_time", "run_one", "main", "EXIT_BUSY"]

EXIT_BUSY = 75  # another process holds the run's lock
#: What a run's result copies from its job.
_JOB_FIELDS = ("run", "arm", "seed", "loss", "overrides", "settings", "model", "data", "train", "fingerprint", "device")

Log = Callable[[str], None]


# ------------------------------------------------------------------------------------------------ run directory
def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _csv_rows(path: Path) -> list[dict[str, str]]:
    """The raw rows of a ``results.csv`` in file order (stripped keys), re-run epochs included."""
    import csv

    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k.strip(): v for k, v in raw.items() if k is not None} for raw in csv.DictReader(f)]


def read_results_csv(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """Rows of an Ultralytics ``results.csv`` (stripped keys, floats), one per epoch; a re-run epoch keeps its last."""
    rows: dict[int, dict[str, float]] = {}
    order: list[dict[str, float]] = []
    for raw in _csv_rows(Path(path)):
        row = {k: _float(v) for k, v in raw.items()}
        order.append(row)
        if "epoch" in row and math.isfinite(row["epoch"]):
            rows[int(row["epoch"])] = row
    return [rows[e] for e in sorted(rows)] if rows else order


def _record_segment(run_dir: Path, how: str, first_epoch: int) -> None:
    """Append a training segment (``fresh``/``resume``, ``results.csv`` rows before it) to ``segments.json``."""
    path = run_dir / protocol.SEGMENTS_FILE
    segments = []
    if how == "resume":  # a run trained before this record existed had one segment so far
        first = {"how": "fresh", "first_epoch": 1, "csv_rows_before": 0}
        segments = (read_json(path) or {}).get("segments") or [first]
    segments.append(
        {
            "how": how,
            "first_epoch": first_epoch,
            "csv_rows_before": len(_csv_rows(run_dir / "results.csv")) if how == "resume" else 0,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    atomic_write_json(path, {"segments": segments})


def train_time(run_dir: str | os.PathLike[str]) -> tuple[float | None, int]:
    """Training time in seconds and the number of training segments (1 + resumes) of a run directory.

    Ultralytics' ``time`` column restarts at 0 on resume: each segment of ``segments.json`` adds its last time (a
    run without that record, from an older runner, is one segment).
    """
    run_dir = Path(run_dir)
    times = [_float(row.get("time")) for row in _csv_rows(run_dir / "results.csv")]
    if not any(math.isfinite(t) for t in times):
        return None, 0
    segments = (read_json(run_dir / protocol.SEGMENTS_FILE) or {}).get("segments") or [{"csv_rows_before": 0}]
    starts = sorted({min(max(int(s.get("csv_rows_before", 0)), 0), len(times)) for s in segments} | {0})
    total = 0.0
    for a, b in zip(starts, [*starts[1:], len(times)]):
        seg = [t for t in times[a:b] if math.isfinite(t)]
        total += seg[-1] if seg else 0.0
    return total, len(segments)


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    """A checkpoint dict, or None when it cannot be read (truncated, corrupt, wrong format)."""
    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - any failure means the file is unusable
        return None
    if not isinstance(ckpt, dict) or (ckpt.get("model") is None and ckpt.get("ema") is None):
        return None
    return ckpt


def _saved_fingerprint(job: Job) -> dict[str, Any] | None:
    """The fingerprint of the settings a run directory was trained with (from its args.yaml)."""
    import yaml

    from ..criterion import SETTING_KEYS

    try:
        args = yaml.safe_load((job.run_dir / "args.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(args, dict):
        return None
    settings = {k: args[k] for k in SETTING_KEYS if k in args}
    train = {k: args.get(k) for k in job.train}
    return fingerprint(train, settings, job.model, job.fingerprint["data"])


def inspect_run(job: Job) -> tuple[str, str]:
    """The state of a run directory, ``(state, reason)``: ``done``, ``fresh``, ``trained``, ``resume``, ``restart``."""
    run_dir = job.run_dir
    if job.result.is_file():
        return "done", "result.json exists"
    if not run_dir.exists():
        return "fresh", "new run"
    last = run_dir / "weights" / "last.pt"
    if not last.is_file():
        return "restart", "the run directory has no weights/last.pt (interrupted before its first epoch ended)"
    saved = _saved_fingerprint(job)
    if saved is None:
        return "restart", "args.yaml is missing or unreadable"
    if not same_fingerprint(saved, job.fingerprint):
        return "restart", f"it was started with other settings ({fingerprint_diff(saved, job.fingerprint)})"
    ckpt = _load_checkpoint(last)
    if ckpt is None:
        return "restart", "weights/last.pt is unusable (truncated or corrupt)"
    epoch = ckpt.get("epoch", -1)
    epochs = int((ckpt.get("train_args") or {}).get("epochs", job.train.get("epochs", 100)) or 0)
    if epoch == -1 or epoch + 1 >= epochs:
        return "trained", "training had finished"
    return "resume", f"interrupted after epoch {epoch + 1} of {epochs}"


def planned_state(job: Job) -> tuple[str, str]:
    """What the runner will do: ``inspect_run``'s state, ``resume`` turned ``restart`` unless ``resume_interrupted``."""
    state, reason = inspect_run(job)
    if state == "resume" and not job.resume_interrupted:
        return "restart", f"{reason}; restarts from zero to stay reproducible (resume_interrupted=true resumes)"
    return state, reason


def _move_aside(job: Job) -> Path:
    aside = Path(job.out_dir) / "aside"
    aside.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = aside / f"{job.run}.{stamp}"
    k = 1
    while target.exists():
        target = aside / f"{job.run}.{stamp}.{k}"
        k += 1
    shutil.move(str(job.run_dir), str(target))
    return target


# ------------------------------------------------------------------------------------------------ train, evaluate
def _train(job: Job, state: str, log: Log) -> dict[str, Any] | None:
    """Train the run (``fresh``, ``restart`` or ``resume``); returns Ultralytics' final validation metrics."""
    from ultralytics import YOLO

    from ..trainer import VFLDetectionTrainer

    run_dir, last = job.run_dir, job.run_dir / "weights" / "last.pt"
    device = {"device": job.device} if job.device is not None else {}
    if state == "resume":
        started: list[bool] = []
        model = YOLO(str(last))
        model.add_callback("on_train_start", lambda _trainer: started.append(True))
        workers = {k: job.train[k] for k in ("workers",) if k in job.train}
        try:
            log(f"resuming {last}")
            _record_segment(run_dir, "resume", int((_load_checkpoint(last) or {}).get("epoch", -1)) + 2)
            model.train(trainer=VFLDetectionTrainer, resume=True, **device, **workers)
            return dict(getattr(model.trainer, "metrics", None) or {})
        except Exception as e:  # noqa: BLE001 - a resume that could not start restarts cleanly
            if started:
                raise
            log(f"resume failed before training started ({type(e).__name__}: {str(e).strip()[:300]}); restarting")
        state = "restart"
    if state == "restart" and run_dir.exists():
        log(f"moved the partial run to {_move_aside(job)}")
    args = {**job.train, **device}
    model = YOLO(job.model)
    _record_segment(run_dir, "fresh", 1)
    model.train(
        trainer=VFLDetectionTrainer,
        data=job.data,
        project=str(run_dir.parent),
        name=run_dir.name,
        exist_ok=True,
        **args,
        **job.settings,
    )
    return dict(getattr(model.trainer, "metrics", None) or {})


def _validation_args(job: Job) -> dict[str, Any]:
    """Image size, batch, device and the train arguments that change validation, as the trainer validates."""
    batch = job.train.get("batch", 16)
    kwargs = {k: job.train[k] for k in ("single_cls", "classes", "workers") if k in job.train}
    return {
        "imgsz": job.train.get("imgsz", 640),
        "batch": batch * 2 if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0 else 16,
        "device": job.device,
        **kwargs,
    }


def _metrics(results_dict: Mapping[str, Any]) -> dict[str, float]:
    return {m: float(results_dict.get(k, math.nan)) for m, k in protocol.ULTRALYTICS_KEYS.items()}


def _evaluate(job: Job, log: Log, final: Mapping[str, Any] | None) -> dict[str, Any]:
    """Final metrics, ranking quality and the records of the final model (``best.pt``, ``last.pt`` if none).

    With ranking enabled, one recording pass of Ultralytics' validator gives the metrics and the detections. Without
    it, the metrics are Ultralytics' final validation of the training just done (``final``), or a validation here.
    """
    from .evaluation import ranking_quality
    from .records import record_detections

    weights = job.run_dir / "weights" / "best.pt"
    if not weights.is_file():
        weights = job.run_dir / "weights" / "last.pt"
    rk = job.ranking or {}
    out: dict[str, Any] = {"metrics_model": weights.name, "ranking": None, "records": None}
    if rk.get("enabled", True):
        conf, iou, max_det = rk.get("conf", protocol.CONF), rk.get("iou", protocol.NMS_IOU), rk.get("max_det")
        log(f"recording the detections of {weights} (conf {conf}, NMS IoU {iou}, max_det {max_det})")
        records = record_detections(
            weights, job.data, conf=conf, iou=iou, max_det=max_det or protocol.MAX_DET, **_validation_args(job)
        )
        records.save(job.run_dir / protocol.RECORDS_FILE)
        out.update(records=protocol.RECORDS_FILE, metrics_source="yolo-vfl ab recording pass (Ultralytics validator)")
        out["metrics"] = {m: float(records.metrics.get(m, math.nan)) for m in protocol.METRICS}
        out["ranking"] = ranking_quality(records, max_points=rk.get("max_points", protocol.MAX_POINTS), seed=job.seed)
        return out
    if final and protocol.ULTRALYTICS_KEYS["mAP50-95"] in final:
        out.update(metrics=_metrics(final), metrics_source="ultralytics final validation")
        return out
    from ultralytics import YOLO

    log(f"final validation of {weights}")
    metrics = YOLO(str(weights)).val(
        data=job.data,
        split="val",
        plots=False,
        verbose=False,
        project=str(job.run_dir),
        name="final_val",
        exist_ok=True,
        **_validation_args(job),
    )
    out.update(metrics=_metrics(metrics.results_dict), metrics_source="yolo-vfl ab validation")
    return out


def run_one(job: Job, log: Log | None = None) -> RunResult:
    """Train (or resume, or only evaluate) one arm x seed and write its ``result.json`` atomically.

    Returns:
        the run's result (as written to ``result.json``; an existing one is returned as it is).
    """
    log = log or (lambda msg: print(f"yolo-vfl ab: {msg}", flush=True))
    existing = read_json(job.result)
    if existing is not None:
        return RunResult.from_dict(existing)
    t0, started_with = time.time(), versions()  # the code this run starts with (an edit later does not count)
    state, reason = planned_state(job)
    log(f"{job.run}: {state} ({reason})")
    final = _train(job, state, log) if state != "trained" else None
    rows = read_results_csv(job.run_dir / "results.csv")
    seconds, segments = train_time(job.run_dir)
    evaluation = _evaluate(job, log, final)
    last = rows[-1] if rows else {}
    result = RunResult(
        **{k: getattr(job, k) for k in _JOB_FIELDS},
        **evaluation,
        final_losses={k: v for k, v in last.items() if k.startswith(("train/", "val/")) and "loss" in k},
        curve=Curve(
            tuple(int(r["epoch"]) for r in rows if "epoch" in r),
            *(tuple(r.get(protocol.ULTRALYTICS_KEYS[m], math.nan) for r in rows) for m in ("mAP50-95", "mAP50")),
        ),
        epochs_done=len(rows),
        train_time_s=seconds,
        segments=segments,
        resumed=segments > 1,
        restarts=len(list((Path(job.out_dir) / "aside").glob(f"{job.run}.*"))),
        wall_time_s=time.time() - t0,
        host=platform.node(),
        versions=started_with,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    write_table(run_table(result, epoch_table(job.run_dir / "results.csv")), job.run_dir / TABLE_FILE)
    atomic_write_json(job.result, result.to_dict())  # last: result.json marks the run finished
    return RunResult.from_dict(read_json(job.result) or result.to_dict())


def main(argv: list[str] | None = None) -> int:
    """``python -m yolo_vfl.ab.run JOB.json``: run one job under its lock (exit 75 when another process holds it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m yolo_vfl.ab.run JOB.json", file=sys.stderr)
        return 2
    job = Job.from_dict(read_json(argv[0]) or {})
    lock = job.run_dir.parent / f".{job.run}.lock"
    with file_lock(lock) as locked:
        if not locked:
            print(f"yolo-vfl ab: {job.run} is being trained by another process (lock {lock})", flush=True)
            return EXIT_BUSY
        run_one(job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
