"""The loop above the backends: slots filled, failures reported, no new run after a failure unless keep_going."""

from __future__ import annotations

import pytest

from yolo_vfl.ab import backends, make_jobs, spec_from_dict
from yolo_vfl.ab.backends import Progress, run_jobs


class FakeBackend:
    """Two slots; runs whose arm is ``bad`` fail; records what was started and how many ran at once."""

    def __init__(self, devices):
        self.slots, self.running, self.started, self.most = 2, [], [], 0

    def submit(self, job):
        self.running.append(job)
        self.started.append(job.run)
        self.most = max(self.most, len(self.running))
        return "fake"

    def wait(self):
        job = self.running.pop(0)
        if job.arm == "bad":
            return job, None, f"{job.run} failed (exit code 1)\n    Traceback"
        return job, {"metrics": {"mAP50-95": 0.5}}, ""

    def cancel(self):
        self.running.clear()

    def close(self):
        FakeBackend.closed = True


@pytest.mark.parametrize("keep_going", [False, True])
def test_run_jobs_fills_slots_and_stops_after_a_failure(tmp_path, monkeypatch, keep_going):
    """Two at a time; after a failure nothing new starts (keep_going: everything runs); the backend is closed."""
    made = []
    monkeypatch.setattr(backends, "LocalBackend", lambda devices: made.append(FakeBackend(devices)) or made[-1])
    arms = {"bce": {}, "bad": {"loss": "bce"}, "vfl": {}}
    spec = spec_from_dict({"arms": arms, "seeds": [0, 1], "keep_going": keep_going, "train": {"data": "d.yaml"}})
    jobs = make_jobs(spec, tmp_path, data="d.yaml")
    lines: list[str] = []
    failed = run_jobs(jobs, spec, Progress(len(jobs), 0, 1, lines.append))
    fake = made[0]
    assert fake.most == 2 and FakeBackend.closed
    if keep_going:
        assert fake.started == [j.run for j in jobs] and [f[0] for f in failed] == ["bad-s0", "bad-s1"]
    else:
        assert fake.started == ["bce-s0", "bad-s0", "vfl-s0"] and failed == [
            ("bad-s0", "bad-s0 failed (exit code 1)", str(jobs[1].log))
        ]
        assert "not started after the failure: bce-s1, bad-s1, vfl-s1" in lines[-1]
    assert any("bce-s0 done in" in ln and "mAP50-95 0.500" in ln for ln in lines)
    assert any("bad-s0 FAILED" in ln for ln in lines)


def test_progress_eta_from_finished_runs(monkeypatch):
    """No ETA before a run finished; then the mean duration times the runs left, over the slots."""
    now = [0.0]
    monkeypatch.setattr(backends.time, "time", lambda: now[0])
    lines: list[str] = []
    progress = Progress(4, 0, 2, lines.append)
    assert progress.eta() is None
    progress.start("a", "x", "a.log")
    now[0] = 100.0
    progress.finish("a", {"metrics": {"mAP50-95": 0.25}})
    assert progress.eta() == pytest.approx(150.0) and "ETA 2m30s" in lines[-1]
