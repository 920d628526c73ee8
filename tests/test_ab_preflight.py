"""The A/B preflight: model task, dataset, devices and ``out=`` checked before anything is written."""

from __future__ import annotations

import os

import pytest
from conftest import IMGSZ

from yolo_vfl.ab import run_ab, spec_from_dict
from yolo_vfl.cli import main
from yolo_vfl.errors import UserError


def _spec(data, out, **train):
    raw = {
        "name": "pf",
        "out": str(out),
        "seeds": [0],
        "device": "cpu",
        "train": {"data": str(data), "imgsz": IMGSZ, "epochs": 1, "batch": 4, "workers": 0, **train},
        "arms": {"bce": {}, "vfl": {}},
    }
    return spec_from_dict(raw)


def test_classify_model_is_refused_before_anything_is_written(det_data, tmp_path):
    """A classify model has no detection classification branch: refused, naming the task and the valid ones."""
    out = tmp_path / "ab"
    with pytest.raises(UserError, match=r"Invalid model='yolov8n-cls.yaml': its task is 'classify'.*detect, segment"):
        run_ab(_spec(det_data, out, model="yolov8n-cls.yaml"), command="refused")
    assert not out.exists()


def test_out_naming_a_file_is_refused(det_data, tmp_path):
    """``out=`` naming a file (or a path inside one): a one-line error naming it, nothing written."""
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(UserError, match=r"out=.*file\.txt is a file: give a directory"):
        run_ab(_spec(det_data, f), command="refused", dry_run=True)
    with pytest.raises(UserError, match=r"is inside '.*file\.txt', a file"):
        run_ab(_spec(det_data, f / "sub"), command="refused")
    assert f.read_text() == "x"


def test_read_only_out_is_refused(det_data, tmp_path, monkeypatch):
    """``out=`` on a read-only filesystem (os.access says no, as it does for EROFS even as root) is refused."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro) else real(p, mode))
    with pytest.raises(UserError, match=r"out=.*ro/ab is not writable \('.*ro' is read-only"):
        run_ab(_spec(det_data, ro / "ab"), command="refused")
    assert list(ro.iterdir()) == []


def test_labels_are_read_once_through_the_hook(det_data, tmp_path, monkeypatch):
    """The preflight reads the dataset once (the label reader's hook), for every arm together."""
    import yolo_vfl.checks

    calls = []
    monkeypatch.setattr(yolo_vfl.checks, "check_data", lambda data, **kw: calls.append((data, kw)))
    run_ab(_spec(det_data, tmp_path / "ab"), command="dry", dry_run=True)
    assert calls == [(str(det_data), {"single_cls": False})]


def test_cli_prints_a_bad_arm_as_one_line_with_exit_2(tmp_path, capsys):
    """``yolo-vfl ab spec.yaml vfl.cls_warmup=1`` with epochs 1: exit 2, one line naming the arm and the values."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"out: {tmp_path / 'ab'}\ntrain: {{epochs: 1}}\narms: {{bce: {{}}, vfl: {{}}}}\n")
    assert main(["ab", str(spec), "vfl.cls_warmup=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Arm 'vfl': Invalid cls_warmup=1 for epochs=1" in err
    assert not (tmp_path / "ab").exists()
