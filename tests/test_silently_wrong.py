"""Runs that would train something else than they say: refused before training, or said when they end.

Said in the log, the final line and the checkpoint's record (issue 25, "silently wrong").
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import IMGSZ, train_tiny

from yolo_vfl.cli import main
from yolo_vfl.errors import InvalidSettingError, UserError
from yolo_vfl.trainer import RECORD_KEY

pytestmark = pytest.mark.slow


def run(capfd, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


def train_args(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["train_args"]


def test_time_budget_inside_the_warmup_says_bce_only(det_data, tmp_path, capfd, caplog):
    """time= ending the run within cls_warmup: the final line, the log and both checkpoints say BCE only."""
    argv = ["train", f"data={det_data}", "model=yolov8n.yaml", "loss=vfl", "cls_warmup=2", "epochs=10"]
    argv += ["time=0.000001", f"imgsz={IMGSZ}", "batch=4", "workers=0", f"project={tmp_path}", "name=run"]
    code, out, err = run(capfd, *argv)
    assert code == 0, err
    last_line = out.strip().splitlines()[-1]
    assert last_line.startswith("yolo-vfl: trained with BCE only: loss=vfl"), last_line
    assert "never took over" in last_line
    assert "time=1e-06 h allows about 1 epochs, but the first cls_warmup=2 train BCE" in caplog.text
    assert "this run trained BCE only: loss=vfl never took over" in caplog.text
    for name in ("last.pt", "best.pt"):
        args = train_args(tmp_path / "run" / "weights" / name)
        assert args[RECORD_KEY] == 0 and args["loss"] == "vfl" and args["cls_warmup"] == 2


def test_warmup_that_switches_records_the_epochs_of_the_loss(det_data, tmp_path):
    """cls_warmup=1 of 3 epochs: last.pt records 2 epochs of VFL; the trainer does not report BCE only."""
    model = train_tiny("yolov8n.yaml", det_data, tmp_path, loss="vfl", cls_warmup=1, epochs=3)
    trainer = model.trainer
    assert train_args(trainer.last)[RECORD_KEY] == 2
    assert trainer.cls_loss_record["last"] == 2 and not trainer.never_switched("last")
    best = train_args(trainer.best)[RECORD_KEY]
    assert best == trainer.cls_loss_record["best"] and trainer.never_switched("best") == (best == 0)


@pytest.fixture(scope="module")
def finished_run(det_data, tmp_path_factory) -> Path:
    """last.pt of a finished one-epoch QFL run."""
    project = tmp_path_factory.mktemp("finished")
    return train_tiny("yolov8n.yaml", det_data, project, loss="qfl").trainer.last


def test_resume_of_a_finished_run_is_refused_before_training(finished_run, tmp_path, capfd, monkeypatch):
    """resume=True on a finished last.pt exits 2 in one line instead of starting a new run on coco8."""
    monkeypatch.chdir(tmp_path)
    before = finished_run.read_bytes()
    code, out, err = run(capfd, "train", "resume=True", f"model={finished_run}", "loss=qfl")
    assert code == 2, (out, err)
    assert "is a finished run's checkpoint" in err and "without resume=True" in err
    assert not (tmp_path / "runs").exists() and finished_run.read_bytes() == before


def test_resume_with_another_loss_is_refused_before_training(finished_run, tmp_path, capfd, monkeypatch):
    """Resume with loss=vfl of an unfinished QFL checkpoint names both losses, before any run directory."""
    ckpt = torch.load(finished_run, map_location="cpu", weights_only=False)
    ckpt.update(epoch=0, optimizer={"state": {}})
    ckpt["train_args"]["epochs"] = 3
    unfinished = tmp_path / "last.pt"
    torch.save(ckpt, unfinished)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capfd, "train", "resume=True", f"model={unfinished}", "loss=vfl")
    assert code == 2, (out, err)
    assert "Cannot change the classification loss on resume: loss='vfl' (checkpoint: 'qfl')" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("gain", ["cls=-1", "box=-0.5", "dfl=-2"])
def test_negative_loss_gains_are_refused(gain, capfd, tmp_path, monkeypatch):
    """A negative box/cls/dfl gain is a one-line error naming it, before any run directory."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capfd, "train", "epochs=1", gain)
    assert code == 2, (out, err)
    key = gain.split("=")[0]
    assert f"Invalid {key}=" in err and "loss gains must be >= 0" in err
    assert not (tmp_path / "runs").exists()


def test_negative_gain_is_refused_through_the_python_api(det_data, tmp_path):
    """The trainer itself refuses cls=-1 (an InvalidSettingError, also a ValueError) before any run directory."""
    with pytest.raises(InvalidSettingError, match=r"Invalid cls=-1"):
        train_tiny("yolov8n.yaml", det_data, tmp_path, name="neg", cls=-1.0)
    assert not (tmp_path / "neg").exists()
    assert issubclass(InvalidSettingError, (UserError, ValueError))


# ------------------------------------------------------------------------------------ NMS time limit (load)
def _slow_clock(monkeypatch) -> None:
    """Ultralytics' NMS sees 1000 s pass between its clock reads: its time limit hits after the first image."""
    import itertools
    from types import SimpleNamespace

    from ultralytics.utils import nms

    ticks = itertools.count(0.0, 1000.0)
    monkeypatch.setattr(nms, "time", SimpleNamespace(time=lambda: next(ticks)))


def _raw_predictions(nc: int, bs: int = 3, n: int = 64) -> torch.Tensor:
    """(bs, 4 + nc, n) raw head output: xywh boxes in a 64 px image and class scores in [0.1, 1)."""
    gen = torch.Generator().manual_seed(0)
    xywh = torch.cat([8 + 48 * torch.rand(bs, 2, n, generator=gen), 4 + 12 * torch.rand(bs, 2, n, generator=gen)], 1)
    return torch.cat([xywh, 0.1 + 0.9 * torch.rand(bs, nc, n, generator=gen)], 1)


def test_validation_nms_has_no_time_limit(det_data, tmp_path, monkeypatch):
    """A slow NMS keeps every image's boxes in the trainer's validator and in the A/B's recording pass.

    Ultralytics' NMS quits after ``2 + 0.05 * batch`` s and leaves the batch's other images empty (a warning only), so
    on a loaded CPU mAP, best.pt and verdicts depended on load. The test first shows that plain NMS loses them.
    """
    from ultralytics.utils import nms

    from yolo_vfl.ab.records import record_detections

    model = train_tiny("yolov8n.yaml", det_data, tmp_path, loss="vfl")
    preds = _raw_predictions(len(model.names))
    reference = record_detections(model.trainer.best, det_data, imgsz=IMGSZ, batch=4)
    _slow_clock(monkeypatch)
    assert [len(x) for x in nms.non_max_suppression(preds.clone(), 0.001, 0.7)][1:] == [0, 0]  # the premise
    outputs = model.trainer.validator.postprocess(preds.clone())
    assert all(len(o["bboxes"]) for o in outputs), [len(o["bboxes"]) for o in outputs]
    slow = record_detections(model.trainer.best, det_data, imgsz=IMGSZ, batch=4)
    assert len(slow.det_conf) == len(reference.det_conf) > 0
    assert slow.metrics == reference.metrics
