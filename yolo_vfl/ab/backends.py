"""Where jobs run: a pool of local subprocesses (one per device slot) or Ray tasks, with progress and an ETA.

Every job runs in its own process (``python -m yolo_vfl.ab.run JOB.json``); a killed runner takes its runs with it
(Linux: ``PR_SET_PDEATHSIG``), and the same command started again resumes the experiment.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import atomic_write_json, read_json
from .jobs import Job
from .run import EXIT_BUSY
from .spec import ABSpec

__all__ = ["Progress", "execute_job", "run_jobs"]

#: ``(run, why, log path)`` of a failed run.
Failure = tuple[str, str, str]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: end the run when the runner dies (a killed runner leaves no orphan training)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def _child_env(extra: Mapping[str, str] | None = None, drop: Sequence[str] = ()) -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    for k in drop:
        env.pop(k, None)
    env.update(extra or {})
    return env


def _spawn(job: Job, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start ``python -m yolo_vfl.ab.run JOB.json`` with its output appended to the run's log."""
    job_path = Path(job.out_dir) / "jobs" / f"{job.run}.json"
    atomic_write_json(job_path, job.to_dict())
    Path(job.log).parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "ab") as logf:  # the child keeps its own copy of the file descriptor
        stamp = datetime.now().isoformat(timespec="seconds")
        logf.write(f"\n===== {stamp} {job.run} on device {job.device} =====\n".encode())
        logf.flush()
        return subprocess.Popen(
            [sys.executable, "-m", "yolo_vfl.ab.run", str(job_path)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env or _child_env()),
            **({"preexec_fn": _die_with_parent} if sys.platform.startswith("linux") else {}),
        )


def _log_tail(path: str | os.PathLike[str], lines: int = 15) -> str:
    try:
        text = Path(path).read_bytes()[-20000:].decode(errors="replace").replace("\r", "\n")
    except OSError:
        return ""
    kept = [ln for ln in text.splitlines() if ln.strip()][-lines:]
    return "\n".join("    " + ln for ln in kept)


def execute_job(job: Job, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run one job in its own subprocess and wait; returns its result dict.

    Raises:
        RuntimeError: the run failed (the message has the end of its log).
    """
    proc = _spawn(job, env)
    try:
        rc = proc.wait()
    except BaseException:
        _terminate([proc])
        raise
    result = read_json(job.result)
    if rc != 0 or result is None:
        raise RuntimeError(f"{job.run} failed (exit code {rc}); log {job.log}:\n{_log_tail(job.log)}")
    return result


def _terminate(procs: Sequence[subprocess.Popen], timeout: float = 15.0) -> None:
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(OSError):
                p.send_signal(signal.SIGINT)  # Ultralytics/torch stop cleanly on KeyboardInterrupt
    deadline = time.time() + timeout
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.0, deadline - time.time()))
        if p.poll() is None:
            with contextlib.suppress(OSError):
                p.kill()
            p.wait()


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Progress:
    """Counts runs and estimates the time left from the durations of the runs finished so far."""

    def __init__(self, total: int, done: int, slots: int, log: Callable[[str], None]) -> None:
        self.total, self.done, self.slots, self.log = total, done, max(1, slots), log
        self.durations: list[float] = []
        self.started: dict[str, float] = {}

    def start(self, run: str, where: str, log_path: str | os.PathLike[str]) -> None:
        """A run started (on a device slot, or as a Ray task)."""
        self.started[run] = time.time()
        self.log(f"[{self.done}/{self.total}] starting {run} on {where} (log: {log_path})")

    def eta(self) -> float | None:
        """Seconds left, from the mean duration of the finished runs (None before the first one)."""
        if not self.durations:
            return None
        avg = sum(self.durations) / len(self.durations)
        now = time.time()
        running = sum(max(avg - (now - t), 0.0) for t in self.started.values())
        pending = self.total - self.done - len(self.started)
        return (pending * avg + running) / min(self.slots, max(1, pending + len(self.started)))

    def finish(self, run: str, result: Mapping[str, Any] | None, error: str | None = None) -> None:
        """A run ended: with its result, or failed with ``error`` (the end of its log)."""
        t0 = self.started.pop(run, None)
        took = time.time() - t0 if t0 is not None else None
        running = ", ".join(self.started) or "-"
        if error is None:
            self.done += 1
            if took is not None:
                self.durations.append(took)
            m = ((result or {}).get("metrics") or {}).get("mAP50-95")
            score = f"mAP50-95 {m:.3f}" if isinstance(m, (int, float)) and math.isfinite(m) else "mAP50-95 n/a"
            eta = "ETA 0s" if self.done == self.total else f"ETA {_fmt_duration(self.eta())}"
            self.log(
                f"[{self.done}/{self.total}] {run} done in {_fmt_duration(took)} ({score}); running: {running}; {eta}"
            )
        else:
            self.log(
                f"[{self.done}/{self.total}] {run} FAILED after {_fmt_duration(took)}; running: {running}\n{error}"
            )


def _run_local(jobs: list[Job], spec: ABSpec, progress: Progress) -> list[Failure]:
    """A pool of local subprocesses, one per device slot."""
    pending = deque(jobs)
    free = list(range(len(spec.device)))
    running: dict[int, tuple[subprocess.Popen, Job]] = {}
    failed: list[Failure] = []
    env = _child_env()
    try:
        while pending or running:
            while pending and free and (spec.keep_going or not failed):
                slot = free.pop(0)
                job = pending.popleft().on(spec.device[slot])
                running[slot] = (_spawn(job, env), job)
                progress.start(job.run, f"device {job.device or 'default'}", job.log)
            if not running:
                break
            time.sleep(0.5)
            for slot, (proc, job) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del running[slot]
                free = sorted([*free, slot])
                result = read_json(job.result)
                if rc == 0 and result is not None:
                    progress.finish(job.run, result)
                else:
                    why = "another process holds its lock" if rc == EXIT_BUSY else f"exit code {rc}"
                    failed.append((job.run, why, str(job.log)))
                    progress.finish(job.run, None, f"  {job.run} failed ({why}); log {job.log}:\n{_log_tail(job.log)}")
    except BaseException:
        _terminate([p for p, _ in running.values()])
        raise
    if pending:
        progress.log(
            f"not started after the failure: {', '.join(j.run for j in pending)} (keep_going=true runs them anyway)"
        )
    return failed


def _ray_task(job: Job, num_gpus: float) -> dict[str, Any]:  # pragma: no cover - runs in a Ray worker
    """The Ray task: run one job in its own subprocess on the node Ray placed it on."""
    import ray

    if num_gpus <= 0:
        return execute_job(job.on("cpu"), _child_env())
    ids = ",".join(str(i) for i in ray.get_gpu_ids())
    # Ray's physical GPU ids as the device, CUDA_VISIBLE_DEVICES dropped (Ultralytics 8.3 and 8.4 alike)
    return execute_job(job.on(ids or None), _child_env({"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, ["CUDA_VISIBLE_DEVICES"]))


def _run_ray(jobs: list[Job], spec: ABSpec, progress: Progress) -> list[Failure]:
    """Every job as a Ray task with the spec's resource request; progress as they complete (``ray.wait``)."""
    try:
        import ray
    except ImportError as e:
        raise UserError("backend=ray needs Ray: pip install 'yolo-vfl[ray]' (or pip install ray).") from e
    started_here = not ray.is_initialized()
    if started_here:
        runtime_env = {"runtime_env": spec.ray["runtime_env"]} if spec.ray["runtime_env"] else {}
        ray.init(address=spec.ray["address"] or None, **runtime_env)
    refs: dict[Any, Job] = {}
    failed: list[Failure] = []
    try:
        cpus, gpus = spec.ray["num_cpus"], spec.ray["num_gpus"]
        resources = ray.cluster_resources()
        slots = resources.get("GPU", 0) // gpus if gpus > 0 else resources.get("CPU", 1) // max(cpus, 1e-9)
        progress.slots = max(1, int(slots))
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_ray_task)
        for job in jobs:
            refs[remote.remote(job, gpus)] = job
            progress.start(job.run, f"ray (num_cpus={cpus:g}, num_gpus={gpus:g})", job.log)
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            job = refs.pop(done[0])
            try:
                result = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - a failed task is reported, the others go on
                failed.append((job.run, str(e).splitlines()[0] if str(e) else type(e).__name__, str(job.log)))
                progress.finish(job.run, None, f"  {e}")
                if not spec.keep_going:
                    for ref in refs:
                        ray.cancel(ref, force=True)
                    for other in refs.values():
                        progress.finish(other.run, None, "  cancelled after the failure")
                    refs.clear()
                continue
            if not Path(job.result).is_file():  # the node that ran it may not share this filesystem
                atomic_write_json(job.result, result)
            progress.finish(job.run, result)
        return failed
    except BaseException:
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


def run_jobs(jobs: list[Job], spec: ABSpec, progress: Progress) -> list[Failure]:
    """Run the jobs on the spec's backend; returns the failed runs (the others have their ``result.json``)."""
    return (_run_ray if spec.backend == "ray" else _run_local)(jobs, spec, progress)
