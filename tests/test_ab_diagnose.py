"""``yolo-vfl ab diagnose``: its user errors, and a tiny trained experiment diagnosed end to end from its records.

The numbers of a diagnosis are tested on hand-built records in ``tests/test_evaluation.py``, its text and figures on
hand-made diagnoses in ``tests/test_ab_report.py``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
from conftest import IMGSZ, train_tiny

from yolo_vfl.ab import diagnose_experiment
from yolo_vfl.ab.evaluation import FP_KINDS, KINDS, diagnose
from yolo_vfl.ab.protocol import RECORDS_FILE
from yolo_vfl.ab.records import load_records
from yolo_vfl.cli import CLIError, cli_ab, main
from yolo_vfl.errors import UserError


def test_cli_errors(tmp_path, capsys):
    """Missing directory, no finished runs, unknown argument, missing out=, unknown arm, no weights: clear errors."""
    with pytest.raises(UserError, match="not found"):
        cli_ab(["diagnose", f"out={tmp_path / 'nope'}"])
    (tmp_path / "runs" / "bce-s0").mkdir(parents=True)
    with pytest.raises(UserError, match="No finished runs"):
        cli_ab(["diagnose", f"out={tmp_path}"])
    with pytest.raises(CLIError, match="Unknown argument 'dst'.*Did you mean 'dest'"):
        cli_ab(["diagnose", f"out={tmp_path}", "dst=x"])
    with pytest.raises(CLIError, match="needs out="):
        cli_ab(["diagnose"])
    (tmp_path / "runs" / "bce-s0" / "result.json").write_text(json.dumps({"run": "bce-s0", "arm": "bce", "seed": 0}))
    with pytest.raises(UserError, match="No finished runs of arm.*vfl.*Arms with finished runs: bce"):
        cli_ab(["diagnose", f"out={tmp_path}", "arms=bce,vfl"])
    with pytest.raises(UserError, match="bce-s0: no weights/best.pt or weights/last.pt"):
        cli_ab(["diagnose", f"out={tmp_path}"])
    capsys.readouterr()
    assert main(["ab", "diagnose", f"out={tmp_path}", "arms=vfl"]) == 2  # a user error: one line, exit code 2
    assert "No finished runs of arm" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_experiment(det_data, tmp_path_factory):
    """An experiment directory with one tiny trained model, used as bce-s0 and as qfl-s0 (trained once), no records."""
    out = tmp_path_factory.mktemp("diag") / "exp"
    train_tiny("yolov8n.yaml", det_data, out / "runs", name="bce-s0", loss="bce")
    shutil.copytree(out / "runs" / "bce-s0", out / "runs" / "qfl-s0")
    for run in ("bce-s0", "qfl-s0"):
        arm = run.split("-")[0]
        (out / "runs" / run / "result.json").write_text(json.dumps({"run": run, "arm": arm, "seed": 0}))
    # qfl-s0's args.yaml is unreadable: its data and imgsz come from result.json instead
    (out / "runs" / "qfl-s0" / "args.yaml").write_text("data: [unclosed\n")
    result = {"run": "qfl-s0", "arm": "qfl", "seed": 0, "data": str(det_data), "train": {"imgsz": IMGSZ}}
    (out / "runs" / "qfl-s0" / "result.json").write_text(json.dumps(result))
    (out / "experiment.json").write_text(
        json.dumps({"name": "tiny", "baseline": "bce", "arms": ["bce", "qfl"], "runs": ["bce-s0", "qfl-s0", "qfl-s1"]})
    )
    return out


@pytest.mark.slow
def test_end_to_end_tiny_model(tiny_experiment, det_data, tmp_path, capsys):
    """'yolo-vfl ab diagnose' on a tiny trained model: records made once per run, the four files, records reused."""
    out = tiny_experiment
    assert main(["ab", "diagnose", f"out={out}", "device=cpu"]) == 0
    printed = capsys.readouterr().out
    assert "diagnosis written" in printed
    assert printed.count("recording the detections") == 2  # no detections.npz yet (not run by the runner): made now
    for name in ("diagnosis.md", "diagnosis.csv", "fp_scores.png", "pr_curves.png"):
        assert (out / name).stat().st_size > 0, name
    cache = out / "runs" / "bce-s0" / RECORDS_FILE
    records = load_records(cache)
    assert records.n_images > 0 and records.n_gt > 0
    assert records.params["imgsz"] == IMGSZ and records.params["conf"] == 0.001
    assert load_records(out / "runs" / "qfl-s0" / RECORDS_FILE).params["data"] == str(det_data)
    d = dict(diagnose(records).iter_rows())
    assert d["tp"] <= d["n_det"] == records.n_det and d["n_gt"] == records.n_gt
    assert d["missed@0.25"] == d["n_gt"] - d["tp@0.25"]
    assert all(f"ap50_cost_{k}" in d for k in FP_KINDS) and all(f"score_{k}" in d for k in KINDS)
    assert abs(d["ap50"] - d["ultralytics/mAP50"]) < 0.05  # same detections as Ultralytics validation
    rows = list(csv.DictReader(open(out / "diagnosis.csv")))
    assert [r["arm"] for r in rows] == ["bce", "qfl"] and float(rows[0]["n_det_mean"]) == d["n_det"]
    md = (out / "diagnosis.md").read_text()
    assert "qfl-s1" in md and "| bce | 1 |" in md  # the unfinished run is named

    # second call into another dest: the records are reused (unchanged), nothing recorded
    mtime = cache.stat().st_mtime_ns
    lines: list[str] = []
    paths = diagnose_experiment(out, dest=tmp_path / "d", arms=["bce"], device="cpu", log=lines.append)
    assert cache.stat().st_mtime_ns == mtime and lines == []
    assert sorted(p.name for p in paths.values()) == sorted(os.listdir(tmp_path / "d"))
    assert [r["arm"] for r in csv.DictReader(open(tmp_path / "d" / "diagnosis.csv"))] == ["bce"]

    # force=True records again; cache_dir= puts the new records there and leaves the run's own untouched
    qfl_cache = out / "runs" / "qfl-s0" / RECORDS_FILE
    qfl_mtime = qfl_cache.stat().st_mtime_ns
    lines.clear()
    diagnose_experiment(
        out, dest=tmp_path / "e", arms=["qfl"], device="cpu", cache_dir=tmp_path / "c", force=True, log=lines.append
    )
    assert len(lines) == 1 and lines[0].startswith("qfl-s0: recording the detections of ")
    assert load_records(tmp_path / "c" / "qfl-s0" / RECORDS_FILE).n_det == load_records(qfl_cache).n_det
    assert qfl_cache.stat().st_mtime_ns == qfl_mtime and (tmp_path / "e" / "diagnosis.md").is_file()

    # records of other thresholds are not reused: recorded again with the asked ones
    lines.clear()
    diagnose_experiment(out, dest=tmp_path / "f", arms=["bce"], conf=0.01, device="cpu", log=lines.append)
    assert len(lines) == 1 and "recording" in lines[0] and load_records(cache).params["conf"] == 0.01


@pytest.mark.slow
def test_cache_dir_reuses_the_runs_own_records(det_data, tmp_path):
    """cache_dir= is where new records go: a run that already has detections.npz is not recorded again."""
    from conftest import train_tiny

    from yolo_vfl.ab import diagnose_experiment

    out = tmp_path / "exp"
    train_tiny("yolov8n.yaml", det_data, out / "runs", name="bce-s0", loss="bce")
    (out / "runs" / "bce-s0" / "result.json").write_text(json.dumps({"run": "bce-s0", "arm": "bce", "seed": 0}))
    diagnose_experiment(out, device="cpu")  # writes runs/bce-s0/detections.npz
    lines: list[str] = []
    diagnose_experiment(out, dest=tmp_path / "d", device="cpu", cache_dir=tmp_path / "c", log=lines.append)
    assert lines == [] and not (tmp_path / "c").exists()
