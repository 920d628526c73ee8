"""Every validator raises a typed user error that is also the built-in type Python callers catch."""

from __future__ import annotations

import math

import pytest
import torch

from yolo_vfl.criterion import ClsLossSettings, VFLDetectionLoss
from yolo_vfl.data import generate_dataset
from yolo_vfl.errors import InvalidSettingError, InvalidTypeError, UserError
from yolo_vfl.losses import UnknownLossError, get_cls_loss, varifocal_loss

BAD = [
    ("cls_target", lambda: ClsLossSettings.from_args({"loss": "vfl", "cls_target": "foo"}), InvalidSettingError),
    ("fg_negatives", lambda: ClsLossSettings.from_args({"loss": "vfl", "cls_fg_negatives": 1}), InvalidSettingError),
    ("tal_topk 0", lambda: ClsLossSettings.from_args({"tal_topk": 0}), InvalidSettingError),
    ("tal_topk float", lambda: ClsLossSettings.from_args({"tal_topk": 2.5}), InvalidTypeError),
    ("warmup bool", lambda: ClsLossSettings.from_args({"loss": "vfl", "cls_warmup": True}), InvalidTypeError),
    ("warmup bce", lambda: ClsLossSettings.from_args({"cls_warmup": 2}), InvalidSettingError),
    ("warmup epochs", lambda: ClsLossSettings.from_args({"loss": "qfl", "cls_warmup": 3}).check_epochs(3), ValueError),
    ("other loss key", lambda: ClsLossSettings.from_args({"loss": "qfl", "vfl_gamma": 1.0}), InvalidSettingError),
    ("unknown loss", lambda: ClsLossSettings.from_args({"loss": "vlf"}), UnknownLossError),
    ("loss kwarg", lambda: get_cls_loss("vfl", beta=1.0), InvalidTypeError),
    ("nan logits", lambda: varifocal_loss(torch.full((1, 2), math.nan), torch.zeros(1, 2)), InvalidSettingError),
    ("data n", lambda: generate_dataset("x", n=0), InvalidSettingError),
    ("data variant", lambda: generate_dataset("x", variant="glyph"), InvalidSettingError),
    ("data imgsz type", lambda: generate_dataset("x", imgsz="big"), InvalidTypeError),
]


@pytest.mark.parametrize("call, error", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_validators_raise_typed_user_errors(call, error):
    """Each bad input raises a UserError that is also the documented built-in ValueError or TypeError."""
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, UserError)
    assert isinstance(info.value, (ValueError, TypeError))


def test_detection_loss_names_its_own_keywords():
    """VFLDetectionLoss(model, loss='vfl', beta=1) names vfl's keywords instead of v8DetectionLoss's TypeError."""
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import DEFAULT_CFG

    model = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    model.args = DEFAULT_CFG
    with pytest.raises(InvalidTypeError, match=r"unknown keyword 'beta'; vfl's own keywords: alpha, gamma, iou_weig"):
        VFLDetectionLoss(model, loss="vfl", beta=1)
    assert VFLDetectionLoss(model, loss="qfl", beta=1.0).cls_loss_settings.values["qfl_beta"] == 1.0


def test_classify_model_is_refused_when_the_task_is_not_given(tmp_path):
    """A classify model given without task= is refused by its task, not with a 'stride' AttributeError."""
    from yolo_vfl import VFLDetectionTrainer

    with pytest.raises(InvalidSettingError, match=r"got task 'classify'"):
        VFLDetectionTrainer(overrides={"model": "yolov8n-cls.yaml", "loss": "vfl", "project": str(tmp_path)})
    assert not any(tmp_path.iterdir())


def _not_checkpoints(tmp_path):
    import torch

    made = {}
    for name, write in {
        "dict.pt": lambda p: torch.save({"weights": [1, 2]}, p),
        "tensor.pt": lambda p: torch.save(torch.zeros(3), p),
        "text.pt": lambda p: p.write_text("not a checkpoint\n"),
        "empty.pt": lambda p: p.write_bytes(b""),
    }.items():
        write(tmp_path / name)
        made[name] = tmp_path / name
    return made


@pytest.mark.parametrize(
    "name, message",
    [
        ("dict.pt", "is not an Ultralytics checkpoint: it holds a dict with keys ['weights']"),
        ("tensor.pt", "is not an Ultralytics checkpoint: it holds Tensor"),
        ("text.pt", "is not a readable PyTorch checkpoint"),
        ("empty.pt", "is an empty file"),
    ],
)
def test_a_pt_that_is_not_a_checkpoint_is_one_line(name, message, tmp_path, capfd, monkeypatch):
    """model=<a .pt that is no Ultralytics checkpoint> exits 2 with one line naming the file, before any run dir."""
    from yolo_vfl.cli import main

    path = _not_checkpoints(tmp_path)[name]
    monkeypatch.chdir(tmp_path)
    assert main(["train", f"model={path}", "epochs=1"]) == 2
    err = capfd.readouterr().err
    assert message in err and str(path) in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()
