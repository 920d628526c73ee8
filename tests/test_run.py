"""One A/B run: its results.csv reading and its lock (no training here)."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from yolo_vfl.ab import make_jobs, read_results_csv, spec_from_dict
from yolo_vfl.ab.run import EXIT_BUSY, main
from yolo_vfl.fileio import file_lock


@pytest.fixture
def job(tmp_path):
    spec = spec_from_dict({"train": {"data": "d.yaml", "epochs": 1}, "arms": {"bce": {}}, "device": "cpu"})
    return make_jobs(spec, tmp_path, data="d.yaml")[0]


def test_results_csv_keeps_last_row_per_epoch(tmp_path):
    """A re-run epoch keeps its last row; keys are stripped."""
    f = tmp_path / "results.csv"
    f.write_text("epoch, time, metrics/mAP50-95(B)\n1,10,0.1\n2,20,0.2\n2,5,0.25\n3,12,0.3\n")
    rows = read_results_csv(f)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[1]["metrics/mAP50-95(B)"] == 0.25


def test_busy_run_exits_75_and_touches_nothing(job, tmp_path, capsys):
    """A second process on a run whose lock is held exits 75 (the runner reports it) without training."""
    path = tmp_path / "job.json"
    path.write_text(json.dumps(asdict(job)))
    with file_lock(job.run_dir.parent / f".{job.run}.lock"):
        assert main([str(path)]) == EXIT_BUSY
    assert "being trained by another process" in capsys.readouterr().out and not job.run_dir.exists()
