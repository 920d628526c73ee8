"""An A/B experiment from spec to report (``run_ab``), and ``ab report``, ``ab plan``, ``ab diagnose`` on its directory.

The runner can be killed at any moment and started again with the same command: runs with a ``result.json`` of the
same settings are kept, the others train again from zero; decide=sequential re-derives its rounds from the
``result.json`` files. Everything a refused command would need is checked before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import InvalidSettingError, UserError
from ..executor import final_weights
from ..fileio import atomic_write_json, atomic_write_text, file_lock, read_json
from . import protocol, sequential
from .backends import Failure, Progress, run_jobs
from .jobs import Job, fingerprint_diff, make_jobs, resolve_data, start_model
from .results import TABLE_FILE, RunResult, epoch_table, final_rows, run_table, write_table
from .spec import DEFAULT_MODEL, ABSpec

__all__ = ["ABRunError", "run_ab", "regenerate_report", "diagnose_experiment", "load_results", "check_devices", "plan"]
__all__ += ["sequential_plan"]

Log = Callable[[str], None]


class ABRunError(RuntimeError):
    """Some runs failed; ``failed`` lists ``(run, message, log path)``. The report was written for the others."""

    def __init__(self, message: str, failed: list[Failure]) -> None:
        super().__init__(message)
        self.failed = failed


def load_results(out_dir: str | os.PathLike[str]) -> list[RunResult]:
    """Every finished run under ``out_dir/runs/*/`` (unreadable or foreign ``result.json`` files are skipped)."""
    results = []
    for d in filter(None, map(read_json, sorted(Path(out_dir).glob(f"runs/*/{protocol.RESULT_FILE}")))):
        with contextlib.suppress(ValueError):
            results.append(RunResult.from_dict(d))
    return results


def _meta(out: Path) -> dict[str, Any]:
    """``experiment.json`` as the report reads it (without spec and history), ``pretrain.json`` as ``pretrain``."""
    meta = {k: v for k, v in (read_json(out / "experiment.json") or {}).items() if k not in ("spec", "history")}
    pre = read_json(out / "pretrain.json")
    return meta if pre is None else {**meta, "pretrain": pre}


def _experiment(
    out_dir: str | os.PathLike[str], what: str, arms: Sequence[str] | None = None
) -> tuple[Path, dict[str, Any], list[RunResult]]:
    """The directory (resolved), its ``_meta``, the finished runs of ``arms``; a UserError if none (nothing to what)."""
    out = Path(out_dir).expanduser().resolve()
    if not out.is_dir():
        raise UserError(f"Experiment directory '{out_dir}' not found.")
    if not (results := load_results(out)):
        raise UserError(f"No finished runs (runs/*/result.json) in {out}: nothing to {what}.")
    have = sorted({r.arm for r in results})
    if unknown := [a for a in arms or () if a not in have]:
        raise UserError(
            f"No finished runs of arm(s) {', '.join(unknown)} in {out}. Arms with finished runs: {', '.join(have)}."
        )
    return out, _meta(out), [r for r in results if not arms or r.arm in arms]


def _missing(runs: Sequence[str], results: Sequence[RunResult]) -> list[str]:
    """The ``runs`` without a finished result."""
    return [run for run in runs if run not in {r.run for r in results}]


def plan(jobs: list[Job], out: Path) -> tuple[list[Job], list[Job]]:
    """``(done, todo)``: runs with a ``result.json`` of the same settings, and the rest.

    Raises:
        UserError: a finished run was trained with other settings (results would be mixed).
    """
    done = [job for job in jobs if job.state() == "done"]
    for job in done:
        if diff := fingerprint_diff((read_json(job.result) or {}).get("fingerprint"), job.fingerprint):
            raise UserError(
                f"Run {job.run} in {out} finished with other settings ({diff}). Use another out= directory, or "
                f"remove {job.run_dir} to retrain it."
            )
    return done, [job for job in jobs if job not in done]


def check_devices(slots: Sequence[str | None]) -> None:
    """Every device of every slot exists on this machine (``cpu``, ``mps``, ``0``, ``cuda:1``, ``0,1``).

    Raises:
        UserError: a CUDA or MPS device this machine does not have (names the device and what is available).
    """
    import torch

    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    have = ["cpu", *map(str, range(n_cuda)), *(["mps"] if torch.backends.mps.is_available() else [])]
    for slot in slots:
        for dev in str(slot or "").lower().split(","):
            name = "0" if dev.strip() == "cuda" else dev.strip().removeprefix("cuda:")
            if name in ("", *have):
                continue
            if name != "mps" and not name.isdigit():
                raise UserError(f"Invalid device={slot!r}: unknown device '{dev}'. Valid here: {', '.join(have)}.")
            what = f"only {n_cuda} GPU(s)" if n_cuda else f"CUDA is not available (torch {torch.__version__})"
            what = "MPS is not available" if name == "mps" else what
            raise UserError(f"Invalid device={slot!r}: {what} on this machine. Valid here: {', '.join(have)}.")


def _preflight(spec: ABSpec, data: str) -> None:
    """Model (loadable, of a detection-family task), labels (read once), devices: a UserError naming what is wrong."""
    from ultralytics import YOLO
    from ultralytics.utils import DEFAULT_CFG_DICT

    from ..checks import check_data, check_model
    from ..criterion import ClsLossSettings, check_branches
    from ..trainer import TASK_TRAINERS, check_validated_branch

    model = str(spec.pretrain.model if spec.pretrain is not None else spec.train.get("model", DEFAULT_MODEL))
    check_model(model)  # a missing model or a file that is no checkpoint: named
    if (net := YOLO(model)).task not in TASK_TRAINERS:
        raise UserError(
            f"Invalid model={model!r}: its task is {net.task!r}; the A/B runner trains tasks "
            f"{', '.join(TASK_TRAINERS)} (their criteria have the classification branch the losses replace)."
        )
    for arm in (a for a in spec.arms if a.overrides.get("cls_branches") == "one2one"):  # needs an end-to-end head
        try:
            settings = ClsLossSettings(loss=arm.loss, branches="one2one")
            check_branches(settings, net.model)
            check_validated_branch(settings, {**spec.train, **arm.overrides}.get("nms", DEFAULT_CFG_DICT.get("nms")))
        except UserError as e:
            raise InvalidSettingError(f"Arm {arm.name!r}: {e} (model={model})") from e
    if spec.train.get("data") is not None:  # class ids >= nc are fine only with single_cls
        check_data(data, single_cls=all({**spec.train, **arm.overrides}.get("single_cls") for arm in spec.arms))
    check_devices(spec.device)


def _pretrained(spec: ABSpec, log: Log) -> dict[str, Any]:
    """Build (or find) the pretrained checkpoint of ``pretrain:``; its record (``pretrain.json``)."""
    from ..pretrain import pretrained_checkpoint

    device = next((d for d in spec.device if d is not None), None)
    res = pretrained_checkpoint(spec.pretrain, device=device, log=lambda msg: log(f"yolo-vfl ab: {msg}"))
    rec = {k: getattr(res, k) for k in ("fingerprint", "sha256", "metrics", "train_time_s", "built_now", "versions")}
    return {**rec, "path": str(res.path), "spec": res.spec.to_dict()}


def _same_start(out: Path, pre: dict[str, Any]) -> None:
    """Refuse to add runs to finished ones that fine-tuned other weights under the same fingerprint.

    Two builds of one spec (on other machines) have differed: compared by sha256 where both records have one, else by
    the checkpoint's metrics.
    """
    old = read_json(out / "pretrain.json")
    if old is None or not load_results(out):
        return
    keys = ("sha256",) if old.get("sha256") and pre.get("sha256") else ("fingerprint", "metrics")
    if all(old.get(k) == pre.get(k) for k in keys):
        return

    def what(rec: dict[str, Any]) -> str:
        m = (rec.get("metrics") or {}).get("mAP50-95")
        sha = str(rec.get("sha256") or "not recorded")[:12]
        return f"`{rec.get('fingerprint')}` (sha256 {sha}, mAP50-95 {'n/a' if m is None else f'{float(m):.4f}'})"

    raise UserError(
        f"The finished runs in {out} fine-tuned the pretrained checkpoint {what(old)}, but the cache now holds "
        f"{what(pre)} at {pre['path']} (rebuilt on another machine?). New runs would not be paired with the "
        "finished ones: give a new out= (and name=) to run the experiment again from the current checkpoint, or "
        f"put the earlier checkpoint back in the cache. 'yolo-vfl ab report out={out}' rewrites the report of the "
        "finished runs without training."
    )


def _record_experiment(spec: ABSpec, out: Path, command: str) -> None:
    """Write ``experiment.json`` (spec, rule, commands so far) and ``spec.yaml`` (the resolved spec) atomically."""
    import yaml

    history = list((read_json(out / "experiment.json") or {}).get("history") or [])
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    history.append({"command": command, "started_at": now, "host": platform.node()})
    meta = {"name": spec.name, "baseline": spec.baseline, "arms": spec.arm_names, "seeds": spec.seeds}
    meta |= {"data": spec.data_token, "train": {k: v for k, v in spec.train.items() if k != "data"}}
    meta |= {"commands": list(dict.fromkeys(h["command"] for h in history))}
    meta |= {"runs": [f"{a}-s{s}" for s in spec.seeds for a in spec.arm_names]}
    if spec.decide == "sequential":
        meta["sequential"] = asdict(sequential.spec_rule(spec))
    atomic_write_json(out / "experiment.json", {**meta, "spec": spec.to_dict(), "history": history})
    atomic_write_text(out / "spec.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))


def _tables(out: Path, results: Sequence[RunResult]) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The results table (each run's ``results_long.csv`` rewritten), ranking points by run.

    The ranking is measured on the run's ``detections.npz``; without it (a committed experiment keeps no detections),
    it is the one ``result.json`` recorded.
    """
    from .evaluation import ranking_quality
    from .records import load_records

    tables, points = [], {}
    for r in results:
        run_dir = out / "runs" / r.run
        records = run_dir / protocol.RECORDS_FILE
        ranking = ranking_quality(load_records(records), seed=r.seed) if records.is_file() else r.ranking or {}
        tables.append(run_table(r, epoch_table(run_dir / "results.csv"), ranking))
        write_table(tables[-1], run_dir / TABLE_FILE)
        points[r.run] = ranking.get("points")
    return pl.concat(tables), points


def _write_report(out: Path, results: list[RunResult], meta: dict[str, Any], log: Log) -> dict[str, Path]:
    """Write the report of ``results`` (``meta``: ``_meta``'s), with the sequential decisions; log the verdicts."""
    from .plots import write_report
    from .report import summarize, verdict_lines

    meta = {**meta, "missing": _missing(meta.get("runs") or [], results), "level": meta.get("level", protocol.LEVEL)}
    table, points = _tables(out, results)
    paths = write_report(out, results, meta, table, points)
    log(f"yolo-vfl ab: report: {paths['summary.md']}")
    summary = summarize(results, meta.get("baseline", protocol.BASELINE), meta.get("arms"), meta["level"], table)
    for line in verdict_lines(summary):
        log(line)
    rule = sequential.recorded_rule(meta)
    text = sequential.section(results, meta, rule) if rule else ""
    if plan := sequential.plan_section(results, meta, rule.margin if rule else protocol.MARGIN):
        text = f"{text}\n{plan}" if text else plan
    if text:
        atomic_write_text(paths["summary.md"], paths["summary.md"].read_text().rstrip("\n") + "\n\n" + text)
        log(text.rstrip("\n"))
    return paths


def _todo(spec: ABSpec, jobs: list[Job], out: Path) -> list[Job]:
    """The runs to train next: every unfinished one (grid), or the next round's (its open arms and the baseline).

    A UserError for another sequential rule than experiment.json's, or a round finished without a finite difference.
    """
    todo = plan(jobs, out)[1]
    if spec.decide == "grid":
        return todo
    rule = sequential.spec_rule(spec)
    sequential.recorded_rule(read_json(out / "experiment.json") or {}, rule)  # another rule is refused
    diffs = sequential.paired_diffs(load_results(out), spec.arm_names, spec.baseline, spec.seeds)
    if (nxt := sequential.next_round(diffs, rule)) is None:
        return []
    seed, arms = spec.seeds[nxt[0]], [spec.baseline, *nxt[1]]
    if todo := [j for j in todo if j.seed == seed and j.arm in arms]:
        return todo
    raise UserError(
        f"The runs of seed {seed} ({', '.join(arms)}) are finished but give no finite mAP50-95 difference: "
        f"remove the run directories under {out / 'runs'} to train them again."
    )


def _checked_plan(spec: ABSpec, out: Path, log: Log) -> tuple[list[Job], list[Job]]:
    """Check all a run needs (``out``, model, data, devices), log the plan, write nothing; ``(jobs, todo)``."""
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        what = "is a file" if existing == out else f"is inside '{existing}', a file"
        raise UserError(f"out={out} {what}: give a directory (created if missing).")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"out={out} is not writable ('{existing}' is read-only to this user): give another out=.")
    jobs = make_jobs(spec, out, data := resolve_data(spec))
    if todo := _todo(spec, jobs, out):
        _preflight(spec, data)
    runs = f"{len(jobs)} runs" + (" at most (decide=sequential)" if spec.decide == "sequential" else "")
    log(f"yolo-vfl ab: {spec.name}: {len(spec.arms)} arms x {len(spec.seeds)} seeds = {runs} in {out}")
    if done := [j.run for j in jobs if j.state() == "done"]:
        log(f"  finished, kept: {', '.join(done)}")
    for job in todo:
        if job.state() == "restart":
            log(f"  {job.run}: restart (interrupted earlier, no result.json; restarts from zero)")
    if spec.pretrain is not None:
        state = "cached" if Path(start_model(spec)).is_file() else "built before the first run"
        log(f"  pretrained checkpoint {spec.pretrain.fingerprint()}: {state}")
    return jobs, todo


def run_ab(
    spec: ABSpec,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    command: str | None = None,
    log: Log | None = None,
    dry_run: bool = False,
) -> Path:
    """Run every arm x seed that has no ``result.json`` yet (decide=sequential: in rounds), write the report.

    Args:
        spec: the experiment (``load_spec``).
        out_dir: experiment directory (default ``spec.out`` or ``runs/ab/<name>``).
        command: the command line to record (default: ``sys.argv``).
        log: progress printer (default ``print``).
        dry_run: only print the plan (runs to do, to keep, to restart); writes nothing.

    Returns:
        The experiment directory.

    Raises:
        UserError: invalid settings, an unwritable out=, a missing or non-detection model, missing data or device,
            finished runs trained with other settings or another sequential rule, another runner on the directory:
            before anything is written.
        ABRunError: some runs failed (the report is written for the finished ones).
    """
    log = log or (lambda msg: print(msg, flush=True))
    out = Path(out_dir or spec.out_dir()).expanduser().resolve()
    jobs, todo = _checked_plan(spec, out, log)
    if dry_run:
        log(f"  to run: {', '.join(j.run for j in todo) or 'nothing'}")
        return out
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / ".ab.lock") as locked:
        if not locked:
            raise UserError(f"Another 'yolo-vfl ab' is running on {out} (lock {out / '.ab.lock'}).")
        if spec.pretrain is not None:
            _same_start(out, pre := _pretrained(spec, log))
            atomic_write_json(out / "pretrain.json", pre)
        _record_experiment(spec, out, command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]))
        todo, failed = _todo(spec, jobs, out), []  # again under the lock: another runner may have finished some
        progress = Progress(len(jobs), len(plan(jobs, out)[0]), len(spec.device), log)
        try:
            while todo and not failed:  # sequential: a round's runs side by side on the device slots
                failed = run_jobs(todo, spec, progress)
                todo = _todo(spec, jobs, out) if spec.decide == "sequential" else []
        except KeyboardInterrupt:
            log("yolo-vfl ab: interrupted; finished runs are kept. Run the same command again to resume.")
            raise
        if results := [r for r in load_results(out) if r.run in {j.run for j in jobs}]:
            _write_report(out, results, _meta(out), log)
    if failed:
        raise ABRunError(
            f"{len(failed)} run(s) failed: {', '.join(r for r, _, _ in failed)}. Logs: {out / 'logs'}. Fix the cause "
            "and run the same command again: finished runs are kept.",
            failed,
        )
    return out


def regenerate_report(out_dir: str | os.PathLike[str], baseline: str | None = None) -> dict[str, Path]:
    """``yolo-vfl ab report``: rewrite an experiment's report, and each run's results table, from the runs' files.

    Args:
        out_dir: the experiment directory.
        baseline: the arm to compare with (default: experiment.json's).

    Returns:
        The written paths by name.

    Raises:
        UserError: no such directory, or no finished runs.
    """
    out, meta, results = _experiment(out_dir, "report")
    return _write_report(out, results, {**meta, **({"baseline": baseline} if baseline else {})}, lambda msg: None)


def sequential_plan(out_dir: str | os.PathLike[str], margin: float) -> list[str]:
    """``yolo-vfl ab plan``: per arm the seeds that resolve ``margin`` (``sequential.plan_seeds``), and a total.

    Args:
        out_dir: a pilot experiment (>= 2 seeds per arm, paired with the baseline).
        margin: the equivalence margin on mAP50-95.

    Returns:
        The lines to print.

    Raises:
        UserError: no experiment or finished runs, or an arm with fewer than 2 paired seeds.
    """
    _, meta, results = _experiment(out_dir, "plan from")
    baseline = meta.get("baseline", protocol.BASELINE)
    diffs = sequential.pilot(results, meta.get("arms") or sorted({r.arm for r in results}), baseline)
    if short := [f"{a} ({d.n})" for a, d in diffs.items() if d.std is None] or ([] if diffs else ["none"]):
        raise UserError(f"The pilot needs >= 2 seeds paired with {baseline} per arm; paired seeds: {', '.join(short)}.")
    return sequential.plan_lines(diffs, baseline, margin)


def _records(
    run_dir: Path, result: RunResult, settings: dict[str, Any], force: bool, record_dir: Path | None, log: Log
) -> Any:
    """The run's ``detections.npz`` if of these thresholds and newer than the weights, else recorded now.

    A new recording uses the data and imgsz of args.yaml (else result.json) and goes next to it, or into ``record_dir``.
    """
    import yaml

    from .records import RecordsFormatError, load_records, record_detections

    try:
        weights = final_weights(run_dir)
    except FileNotFoundError as e:
        raise UserError(f"{run_dir.name}: no weights/best.pt or weights/last.pt to record detections from.") from e
    path = (record_dir / run_dir.name if record_dir else run_dir) / protocol.RECORDS_FILE
    for found in dict.fromkeys([run_dir / protocol.RECORDS_FILE, path]):  # the runner's records, then earlier ones
        if force or not found.is_file() or found.stat().st_mtime < weights.stat().st_mtime:
            continue
        try:
            records = load_records(found)
        except RecordsFormatError as e:
            log(f"{run_dir.name}: {found} unusable ({e}); recording again")
            continue
        if all(records.params.get(k) == settings[k] for k in ("conf", "iou", "max_det")):
            return records
    try:  # a missing or unreadable args.yaml: result.json says the same
        args = yaml.safe_load((run_dir / "args.yaml").read_text())
    except (OSError, yaml.YAMLError):
        args = {}
    if not (data := (args or {}).get("data") or result.data):
        raise UserError(f"{run_dir.name}: no dataset in args.yaml or result.json.")
    log(f"{run_dir.name}: recording the detections of {weights}")
    imgsz = (args or {}).get("imgsz") or result.train.get("imgsz") or 640
    records = record_detections(weights, str(data), imgsz=imgsz, **settings)
    records.save(path)
    return records


def diagnose_experiment(
    out_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str] | None = None,
    arms: Sequence[str] | None = None,
    baseline: str | None = None,
    *,
    conf: float = protocol.CONF,
    iou: float = protocol.NMS_IOU,
    max_det: int = protocol.MAX_DET,
    device: Any = None,
    batch: int = 16,
    workers: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    log: Log | None = None,
) -> dict[str, Path]:
    """``yolo-vfl ab diagnose``: ``diagnosis.md/.csv``, ``fp_scores.png``, ``pr_curves.png`` of the finished runs.

    The detections are each run's records (``detections.npz``, from the runner's recording pass); a run without them,
    or with records of other thresholds, is recorded once now with ``conf``, ``iou``, ``max_det``, ``device``,
    ``batch``, ``workers`` into ``cache_dir`` (default: each run's directory; ``force``: record again anyway).
    ``dest``: where the report goes (default ``out_dir``); ``arms``: only these (default all with finished runs);
    ``baseline``: default experiment.json's; ``log``: one line per recording.

    Returns:
        The written paths by name.

    Raises:
        UserError: missing directory, no finished runs, unknown arms, a run without weights or dataset to record.
        MissingMetricError: a run whose diagnosis lacks a metric of the report.
    """
    from .evaluation import detection_kinds, diagnose
    from .plots import write_diagnosis

    out, meta, results = _experiment(out_dir, "diagnose", arms)
    dest_dir = Path(dest).expanduser().resolve() if dest else out
    settings = {"conf": conf, "iou": iou, "max_det": max_det, "device": device, "batch": batch, "workers": workers}
    record_dir = Path(cache_dir).expanduser().resolve() if cache_dir else None
    tables, detections, params = [], [], {}
    for res in results:
        run_dir = out / "runs" / res.run
        records = _records(run_dir, res, settings, force, record_dir, log or (lambda msg: None))
        params = params or records.params
        tables += [run_table(res, epoch_table(run_dir / "results.csv")), final_rows(res, diagnose(records))]
        detections.append(detection_kinds(records).with_columns(run=pl.lit(res.run), arm=pl.lit(res.arm)))
    expected = [r for r in meta.get("runs") or [] if not arms or r.rsplit("-s", 1)[0] in arms]
    command = ["yolo-vfl ab diagnose", f"out={out}"]
    command += ([f"dest={dest_dir}"] if dest_dir != out else []) + ([f"arms={','.join(arms)}"] if arms else [])
    about = {"name": meta.get("name", out.name), "baseline": baseline or meta.get("baseline") or protocol.BASELINE}
    about |= {"arms": list(arms) if arms else meta.get("arms"), "out": str(out), "params": params}
    about |= {"missing": _missing(expected, results), "command": " ".join(command), "level": protocol.LEVEL}
    return write_diagnosis(dest_dir, pl.concat(tables), pl.concat(detections), about)
