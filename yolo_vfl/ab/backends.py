"""Where jobs run: one subprocess per device slot, or Ray tasks, behind one submit/wait/cancel/close interface.

Every job runs in its own process (``python -m yolo_vfl.ab.run JOB.json``); on Linux a killed runner takes its runs
with it (``PR_SET_PDEATHSIG``). ``run_jobs``, the one loop above the backends, fills the free slots, reports progress
and an ETA, and starts no run after a failure unless ``keep_going``.
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
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import atomic_write_json, read_json
from .jobs import Job
from .run import EXIT_BUSY
from .spec import ABSpec

__all__ = ["Progress", "LocalBackend", "RayBackend", "run_jobs"]

#: ``(run, why, log path)`` of a failed run.
Failure = tuple[str, str, str]
#: What a backend's ``wait`` returns: the job, its result (None: failed) and why it failed.
Outcome = tuple[Job, "dict[str, Any] | None", str]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the run gets SIGTERM when the runner dies (a killed runner leaves no orphan training)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _child_env(extra: Mapping[str, str] | None = None, drop: Sequence[str] = ()) -> dict[str, str]:
    """This process's environment with the repository root on ``PYTHONPATH``, ``extra`` set and ``drop`` unset."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    path = [str(Path(__file__).resolve().parents[2]), *filter(None, [env.get("PYTHONPATH")])]
    return {"PYTHONUNBUFFERED": "1", **env, "PYTHONPATH": os.pathsep.join(path), **(extra or {})}


class LocalBackend:
    """One subprocess per device slot (``env``: the children's environment, default ``_child_env()``)."""

    def __init__(self, devices: Sequence[str | None], env: Mapping[str, str] | None = None) -> None:
        self.devices, self.slots, self.env = list(devices), len(devices), dict(env or _child_env())
        self.running: dict[int, tuple[subprocess.Popen, Job]] = {}

    def submit(self, job: Job) -> str:
        """Start ``job`` (its output appended to its log) on a free device slot; returns where it runs."""
        slot = min(set(range(self.slots)) - set(self.running))
        job = replace(job, device=self.devices[slot])
        atomic_write_json(path := Path(job.out_dir) / "jobs" / f"{job.run}.json", asdict(job))
        job.log.parent.mkdir(parents=True, exist_ok=True)
        linux = {"preexec_fn": _die_with_parent} if sys.platform.startswith("linux") else {}
        with open(job.log, "ab") as log:  # the child keeps its own copy of the file descriptor
            log.write(f"\n===== {datetime.now():%Y-%m-%dT%H:%M:%S} {job.run} on {job.device} =====\n".encode())
            log.flush()
            cmd = [sys.executable, "-m", "yolo_vfl.ab.run", str(path)]
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env, **linux
            )
        self.running[slot] = (proc, job)
        return f"device {job.device or 'default'}"

    def wait(self) -> Outcome:
        """Block until a run ends: its ``result.json``, or why it failed (with the end of its log)."""
        while not (ended := [slot for slot, (proc, _) in self.running.items() if proc.poll() is not None]):
            time.sleep(0.5)
        proc, job = self.running.pop(ended[0])
        if (rc := proc.returncode) == 0 and (result := read_json(job.result)) is not None:
            return job, result, ""
        text = job.log.read_bytes()[-20000:].decode(errors="replace").replace("\r", "\n") if job.log.is_file() else ""
        tail = "\n".join("    " + ln for ln in [ln for ln in text.splitlines() if ln.strip()][-15:])
        why = "another process holds its lock" if rc == EXIT_BUSY else f"exit code {rc}"
        return job, None, f"{job.run} failed ({why}); log {job.log}:\n{tail}"

    def cancel(self, timeout: float = 15.0) -> None:
        """Stop every running job: SIGINT (Ultralytics and torch stop cleanly), SIGKILL after ``timeout`` seconds."""
        for proc, _ in self.running.values():
            proc.send_signal(signal.SIGINT)  # nothing for an ended one
        deadline = time.time() + timeout
        for proc, _ in self.running.values():
            try:
                proc.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        """Nothing to release."""


def _ray_task(job: Job, num_gpus: float) -> dict[str, Any]:  # pragma: no cover - runs in a Ray worker
    """The Ray task: run one job in its own subprocess on the node Ray placed it on; returns its result."""
    import ray

    if num_gpus > 0:  # Ray's physical GPU ids as the device, CUDA_VISIBLE_DEVICES dropped (Ultralytics 8.3 and 8.4)
        ids = ",".join(str(i) for i in ray.get_gpu_ids()) or None
        local = LocalBackend([ids], _child_env({"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, ["CUDA_VISIBLE_DEVICES"]))
    else:
        local = LocalBackend(["cpu"])
    local.submit(job)
    try:
        _, result, error = local.wait()
    except BaseException:
        local.cancel()
        raise
    if result is None:
        raise RuntimeError(error)
    return result


class RayBackend:
    """Ray tasks with the spec's resource request, as many at once as the cluster has room for.

    Raises:
        UserError: Ray is not installed.
    """

    def __init__(self, spec: ABSpec) -> None:
        try:
            import ray
        except ImportError as e:
            raise UserError("backend=ray needs Ray: pip install 'yolo-vfl[ray]' (or pip install ray).") from e
        self.ray, self.started_here = ray, not ray.is_initialized()
        if self.started_here:
            runtime_env = {"runtime_env": spec.ray["runtime_env"]} if spec.ray["runtime_env"] else {}
            ray.init(address=spec.ray["address"] or None, **runtime_env)
        self.cpus, self.gpus = spec.ray["num_cpus"], spec.ray["num_gpus"]
        res = ray.cluster_resources()
        slots = res.get("GPU", 0) // self.gpus if self.gpus > 0 else res.get("CPU", 1) // max(self.cpus, 1e-9)
        self.slots = max(1, int(slots))
        self.remote = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)(_ray_task)
        self.refs: dict[Any, Job] = {}

    def submit(self, job: Job) -> str:
        """Queue ``job`` as a Ray task; returns its resource request."""
        self.refs[self.remote.remote(job, self.gpus)] = job
        return f"ray (num_cpus={self.cpus:g}, num_gpus={self.gpus:g})"

    def wait(self) -> Outcome:
        """Block until a task ends; a result from a node without this filesystem is written here."""
        done, _ = self.ray.wait(list(self.refs), num_returns=1)
        job = self.refs.pop(done[0])
        try:
            result = self.ray.get(done[0])
        except Exception as e:  # noqa: BLE001 - a failed task is reported, the others go on
            return job, None, str(e) or type(e).__name__
        if not job.result.is_file():
            atomic_write_json(job.result, result)
        return job, result, ""

    def cancel(self) -> None:
        """Cancel every queued or running task."""
        for ref in self.refs:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)

    def close(self) -> None:
        """Shut Ray down if this backend started it."""
        if self.started_here:
            self.ray.shutdown()


def _duration(seconds: float | None) -> str:
    """``45s``, ``2m30s``, ``1h02m``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """Counts runs and estimates the time left from the durations of the runs finished so far.

    Args:
        total: runs of the experiment; done: finished before; slots: runs side by side; log: line printer.
    """

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
        running = sum(max(avg - (time.time() - t), 0.0) for t in self.started.values())
        pending = self.total - self.done - len(self.started)
        return (pending * avg + running) / min(self.slots, max(1, pending + len(self.started)))

    def finish(self, run: str, result: Mapping[str, Any] | None, error: str = "") -> None:
        """A run ended: with its result, or failed with ``error`` (the end of its log)."""
        took = time.time() - self.started.pop(run)
        running = ", ".join(self.started) or "-"
        if result is None:
            self.log(f"[{self.done}/{self.total}] {run} FAILED after {_duration(took)}; running: {running}\n{error}")
            return
        self.done += 1
        self.durations.append(took)
        m = (result.get("metrics") or {}).get("mAP50-95")
        score = f"mAP50-95 {m:.3f}" if isinstance(m, (int, float)) and math.isfinite(m) else "mAP50-95 n/a"
        eta = f"ETA {_duration(0 if self.done == self.total else self.eta())}"
        self.log(f"[{self.done}/{self.total}] {run} done in {_duration(took)} ({score}); running: {running}; {eta}")


def run_jobs(jobs: list[Job], spec: ABSpec, progress: Progress) -> list[Failure]:
    """Run the jobs on the spec's backend (``backend``, ``device`` slots, ``keep_going``).

    Returns:
        The failed runs (the others have their ``result.json``).
    """
    backend = RayBackend(spec) if spec.backend == "ray" else LocalBackend(spec.device)
    pending, failed, running = deque(jobs), [], 0
    progress.slots = backend.slots
    try:
        while pending or running:
            while pending and running < backend.slots and (spec.keep_going or not failed):
                job = pending.popleft()
                progress.start(job.run, backend.submit(job), job.log)
                running += 1
            if not running:
                break
            job, result, error = backend.wait()
            running -= 1
            if result is None:
                failed.append((job.run, error.splitlines()[0], str(job.log)))
            progress.finish(job.run, result, f"  {error}")
    except BaseException:
        backend.cancel()
        raise
    finally:
        backend.close()
    if pending:
        progress.log(f"not started after the failure: {', '.join(j.run for j in pending)} (keep_going=true runs them)")
    return failed
