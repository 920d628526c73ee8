"""An A/B experiment from spec to report: check, plan, run the missing runs, write the report.

The runner can be killed at any moment and started again with the same command: runs with a ``result.json`` are kept
(after checking they were trained with the same settings), the others run again (see ``yolo_vfl.ab.run`` for what
happens to an interrupted one). Everything a refused command would need is checked before anything is written.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import atomic_write_json, atomic_write_text, file_lock, read_json
from . import protocol
from .backends import Failure, Progress, run_jobs
from .jobs import Job, fingerprint_diff, make_jobs, resolve_data, same_fingerprint, start_model
from .results import RunResult
from .spec import DEFAULT_MODEL, ABSpec

__all__ = ["ABRunError", "run_ab", "regenerate_report", "load_results", "check_devices", "plan"]

Log = Callable[[str], None]


class ABRunError(RuntimeError):
    """Some runs failed; ``failed`` lists ``(run, message, log path)``. The report was written for the others."""

    def __init__(self, message: str, failed: list[Failure]) -> None:
        super().__init__(message)
        self.failed = failed


def load_results(out_dir: str | os.PathLike[str]) -> list[RunResult]:
    """Every finished run under ``out_dir/runs/*/`` (unreadable or foreign ``result.json`` files are skipped)."""
    results = []
    for f in sorted(Path(out_dir).glob(f"runs/*/{protocol.RESULT_FILE}")):
        d = read_json(f)
        if d is None:
            continue
        try:
            results.append(RunResult.from_dict(d))
        except ValueError:
            continue
    return results


def plan(jobs: list[Job], out: Path) -> tuple[list[Job], list[Job]]:
    """``(done, todo)``: runs with a ``result.json`` of the same settings, and the rest.

    Raises:
        UserError: a finished run was trained with other settings (results would be mixed).
    """
    done, todo = [], []
    for job in jobs:
        existing = read_json(job.result)
        if existing is None:
            todo.append(job)
            continue
        if not same_fingerprint(existing.get("fingerprint"), job.fingerprint):
            raise UserError(
                f"Run {job.run} in {out} finished with other settings "
                f"({fingerprint_diff(existing.get('fingerprint') or {}, job.fingerprint)}). Use another out= "
                f"directory, or remove {job.run_dir} to retrain it."
            )
        done.append(job)
    return done, todo


def check_devices(slots: Sequence[str | None]) -> None:
    """Every device of every slot exists on this machine (``cpu``, ``mps``, ``0``, ``cuda:1``, ``0,1``).

    Raises:
        UserError: a CUDA or MPS device this machine does not have (names the device and what is available).
    """
    import torch

    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    have = ["cpu", *(str(i) for i in range(n_cuda))]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        have.append("mps")
    for slot in slots:
        for dev in ("" if slot is None else str(slot)).lower().split(","):
            name = "0" if dev.strip() == "cuda" else dev.strip().removeprefix("cuda:")
            if name in ("", "cpu") or name in have:
                continue
            if name == "mps":
                what = "MPS is not available"
            elif name.isdigit():
                what = f"CUDA is not available (torch {torch.__version__})" if not n_cuda else f"only {n_cuda} GPU(s)"
            else:
                raise UserError(f"Invalid device={slot!r}: unknown device '{dev}'. Valid here: {', '.join(have)}.")
            raise UserError(f"Invalid device={slot!r}: {what} on this machine. Valid here: {', '.join(have)}.")


def _preflight(spec: ABSpec, data: str) -> None:
    """Model, dataset and devices available (or the model/data downloadable), before anything is written."""
    from ..checks import check_data, check_model

    check_model(str(spec.pretrain.model if spec.pretrain is not None else spec.train.get("model", DEFAULT_MODEL)))
    if spec.train.get("data") is not None:
        check_data(data)
    check_devices(spec.device)


def _pretrained(spec: ABSpec, log: Log) -> dict[str, Any] | None:
    """Build (or find) the pretrained checkpoint of ``pretrain:``; its record for the report (None: no pretrain)."""
    if spec.pretrain is None:
        return None
    from ..pretrain import pretrained_checkpoint

    device = next((d for d in spec.device if d is not None), None)
    res = pretrained_checkpoint(spec.pretrain, device=device, log=lambda msg: log(f"yolo-vfl ab: pretrain: {msg}"))
    if str(res.path) != start_model(spec):
        raise RuntimeError(f"pretrained checkpoint at {res.path}, expected {start_model(spec)}")
    return {
        "fingerprint": res.fingerprint,
        "path": str(res.path),
        "metrics": dict(res.metrics),
        "train_time_s": res.train_time_s,
        "built_now": res.built_now,
        "spec": res.spec.to_dict(),
        "versions": dict(res.versions),
    }


def _record_experiment(spec: ABSpec, out: Path, command: str) -> dict[str, Any]:
    """Write ``experiment.json`` (spec, commands so far) and ``spec.yaml`` (the resolved spec) atomically."""
    import yaml

    history = list((read_json(out / "experiment.json") or {}).get("history") or [])
    history.append(
        {
            "command": command,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(),
        }
    )
    commands = list(dict.fromkeys(h["command"] for h in history))
    meta = {
        "name": spec.name,
        "baseline": spec.baseline,
        "arms": spec.arm_names,
        "seeds": spec.seeds,
        "data": spec.data_token,
        "train": {k: v for k, v in spec.train.items() if k != "data"},
        "commands": commands,
        "runs": [f"{a}-s{s}" for s in spec.seeds for a in spec.arm_names],
    }
    atomic_write_json(out / "experiment.json", {**meta, "spec": spec.to_dict(), "history": history})
    atomic_write_text(out / "spec.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
    return meta


def _write_report(out: Path, results: list[RunResult], meta: dict[str, Any], log: Log) -> dict[str, Path]:
    from ..report import write_report

    paths = write_report(out, [r.to_dict() for r in results], meta)
    log(f"yolo-vfl ab: report: {paths['summary.md']}")
    return paths


def run_ab(
    spec: ABSpec,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    command: str | None = None,
    log: Log | None = None,
    dry_run: bool = False,
) -> Path:
    """Run every arm x seed that has no ``result.json`` yet, then write the report.

    Args:
        spec: the experiment (``load_spec``).
        out_dir: experiment directory (default ``spec.out`` or ``runs/ab/<name>``).
        command: the command line to record (default: ``sys.argv``).
        log: progress printer (default ``print``).
        dry_run: only print the plan (runs to do, to skip, to restart or resume); writes nothing.

    Returns:
        the experiment directory (with ``summary.csv``, ``summary.md``, ``curves.png``, ``ranking.png``).

    Raises:
        UserError: invalid settings, missing model, data or device, finished runs trained with other settings, or
            another runner working on the same directory; raised before anything is written.
        ABRunError: some runs failed (the report is written for the finished ones).
    """
    from .run import planned_state

    log = log or (lambda msg: print(msg, flush=True))
    out = Path(out_dir or spec.out_dir()).expanduser().resolve()
    command = command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    data = resolve_data(spec)
    jobs = make_jobs(spec, out, data)
    done, todo = plan(jobs, out)
    if todo:
        _preflight(spec, data)
    log(f"yolo-vfl ab: {spec.name}: {len(spec.arms)} arms x {len(spec.seeds)} seeds = {len(jobs)} runs in {out}")
    if done:
        log(f"  finished, kept: {', '.join(j.run for j in done)}")
    for job in todo:
        state, reason = planned_state(job)
        if state != "fresh":
            log(f"  {job.run}: {state} ({reason})")
    if spec.pretrain is not None:
        state = "cached" if Path(start_model(spec)).is_file() else "built before the first run"
        log(f"  pretrained checkpoint {spec.pretrain.fingerprint()}: {state}")
    if dry_run:
        log(f"  to run: {', '.join(j.run for j in todo) or 'nothing'}")
        return out
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / ".ab.lock") as locked:
        if not locked:
            raise UserError(f"Another 'yolo-vfl ab' is running on {out} (lock {out / '.ab.lock'}).")
        done, todo = plan(jobs, out)  # again under the lock: another runner may have finished some
        meta = _record_experiment(spec, out, command)
        failed: list[Failure] = []
        if spec.pretrain is not None:
            meta["pretrain"] = _pretrained(spec, log)
            atomic_write_json(out / "pretrain.json", meta["pretrain"])
        if todo:
            progress = Progress(len(jobs), len(done), len(spec.device), log)
            try:
                failed = run_jobs(todo, spec, progress)
            except KeyboardInterrupt:
                log("yolo-vfl ab: interrupted; finished runs are kept. Run the same command again to resume.")
                raise
        results = load_results(out)
        have = {r.run for r in results}
        results = [r for r in results if r.run in {j.run for j in jobs}]
        meta["missing"] = [j.run for j in jobs if j.run not in have]
        meta["level"] = 0.95
        if results:
            _write_report(out, results, meta, log)
            for line in _verdict_lines(out):
                log(line)
        if failed:
            raise ABRunError(
                f"{len(failed)} run(s) failed: {', '.join(r for r, _, _ in failed)}. Logs: {out / 'logs'}. Fix the "
                "cause and run the same command again: finished runs are kept.",
                failed,
            )
    return out


def _verdict_lines(out: Path) -> list[str]:
    """One line per arm from ``summary.csv``: mAP50-95 and the verdict."""
    import csv

    try:
        with open(out / "summary.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return []
    return [f"  {r['arm']:<14} mAP50-95 {r.get('mAP50-95_mean', '')[:6]:<6}  {r.get('verdict', '')}" for r in rows]


def regenerate_report(out_dir: str | os.PathLike[str], baseline: str | None = None) -> dict[str, Path]:
    """Rewrite the report of an experiment directory from its ``result.json`` files."""
    out = Path(out_dir).expanduser().resolve()
    if not out.is_dir():
        raise UserError(f"Experiment directory '{out_dir}' not found.")
    meta = {k: v for k, v in (read_json(out / "experiment.json") or {}).items() if k not in ("spec", "history")}
    if (out / "pretrain.json").is_file():
        meta["pretrain"] = read_json(out / "pretrain.json")
    if baseline:
        meta["baseline"] = baseline
    results = load_results(out)
    if not results:
        raise UserError(f"No finished runs (runs/*/result.json) in {out}: nothing to report.")
    have = {r.run for r in results}
    meta["missing"] = [r for r in meta.get("runs") or [] if r not in have]
    return _write_report(out, results, meta, lambda msg: None)
