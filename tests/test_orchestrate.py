"""run_ab: the preflight (model task, data, devices, ``out=``) before anything is written, dry_run, the start model."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def test_dry_run_plans_without_training(det_data, tmp_path, capsys):
    """dry_run lists the runs to do and trains nothing."""
    spec = _spec(det_data, tmp_path / "ab")
    run_ab(spec, dry_run=True)
    out = capsys.readouterr().out
    assert "2 runs" in out and "to run: bce-s0, vfl-s0" in out
    assert not (tmp_path / "ab").exists()  # no spec.yaml, experiment.json or lock either


@pytest.mark.parametrize(
    "change, match",
    [
        ({"device": "cuda:0"}, r"Invalid device='cuda:0': CUDA is not available"),
        ({"device": [[0, 7]]}, r"Invalid device=.0,7.: CUDA is not available"),
        ({"device": "tpu"}, r"unknown device 'tpu'"),
        ({"train": {"data": "missing.yaml"}}, "missing.yaml"),
        ({"train": {"model": "missing_weights.pt"}}, "missing_weights.pt"),
    ],
)
def test_refused_run_creates_nothing(det_data, tmp_path, change, match):
    """A device this machine lacks, missing data or missing weights: refused before anything is written."""
    import torch

    if "device" in change and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    spec = _spec(det_data, tmp_path / "ab")
    raw = spec.to_dict()
    raw["train"].update(change.pop("train", {}))
    raw.update(change)
    with pytest.raises(UserError, match=match):
        run_ab(spec_from_dict(raw), command="refused")
    assert not (tmp_path / "ab").exists()


# ------------------------------------------------------------------------------- the pretrained start of an experiment
def _finished_run(out: Path, run: str) -> None:
    """A minimal finished run (``runs/<run>/result.json``) as the runner writes it."""
    from test_ab_report import result as made

    arm, seed = run.rsplit("-s", 1)
    d = out / "runs" / run
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(made(arm, int(seed), 0.5).to_dict()))


def _start(sha: str | None, map5095: float = 0.4642) -> dict:
    rec = {"fingerprint": "962ce1c1d0a4271a", "metrics": {"mAP50-95": map5095}, "path": "/cache/best.pt"}
    return rec if sha is None else {**rec, "sha256": sha}


@pytest.mark.parametrize(
    "old, new, refused",
    [
        (_start("a" * 64), _start("a" * 64), False),
        (_start("a" * 64), _start("b" * 64), True),  # same fingerprint and mAP, other weights
        (_start(None, 0.4859), _start("b" * 64, 0.4642), True),  # an older record without sha256: by its metrics
        (_start(None), _start("b" * 64), False),
    ],
)
def test_rebuilt_pretrained_checkpoint_refuses_to_mix_with_finished_runs(
    det_data, tmp_path, monkeypatch, old, new, refused
):
    """Finished runs that fine-tuned other weights under the same fingerprint: refused before anything is written."""
    from yolo_vfl.ab import orchestrate

    out = tmp_path / "ab"
    _finished_run(out, "other-s0")
    (out / "pretrain.json").write_text(json.dumps(old))
    pretrain = {"n": 15, "imgsz": 32, "epochs": 1, "batch": 4, "workers": 0}
    plain = _spec(det_data, out).to_dict()
    train = {k: v for k, v in plain["train"].items() if k != "model"}
    raw = {**plain, "train": train, "arms": {"bce": {}}, "pretrain": pretrain}
    spec = spec_from_dict(raw)
    monkeypatch.setattr(orchestrate, "_pretrained", lambda spec, log: dict(new))
    trained: list[str] = []
    monkeypatch.setattr(orchestrate, "run_jobs", lambda todo, spec, progress: trained.extend(j.run for j in todo) or [])
    monkeypatch.setattr(orchestrate, "_preflight", lambda spec, data: None)
    if refused:
        match = (
            r"finished runs in .* fine-tuned the pretrained checkpoint `962ce1c1d0a4271a` "
            r"\(sha256 .*, mAP50-95 0\.\d{4}\), but the cache now holds .*new out=.*'yolo-vfl ab report out=.*ab'"
        )
        with pytest.raises(UserError, match=match):
            run_ab(spec, command="refused")
        assert not trained and not (out / "experiment.json").exists()
        assert json.loads((out / "pretrain.json").read_text()) == old
    else:
        run_ab(spec, command="accepted")
        assert trained == ["bce-s0"] and json.loads((out / "pretrain.json").read_text()) == new
    # an experiment without finished runs takes the current checkpoint whatever the record says
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "pretrain.json").write_text(json.dumps(old))
    run_ab(spec_from_dict({**raw, "out": str(empty)}), command="fresh")
    assert trained[-1] == "bce-s0" and json.loads((empty / "pretrain.json").read_text()) == new
