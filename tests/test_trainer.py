"""The trainer contracts: every loss trains, settings validated and recorded, plain checkpoints, resume, DDP rebuild."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import IMGSZ, train_tiny

from yolo_vfl import VFLDetectionTrainer
from yolo_vfl.criterion import installed_loss
from yolo_vfl.losses import UnknownLossError
from yolo_vfl.trainer import VFLOBBTrainer, VFLPoseTrainer, VFLSegmentationTrainer, trainer_for_task

pytestmark = pytest.mark.slow


def read_results(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "results.csv") as f:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def assert_finite_losses(run_dir: Path) -> None:
    rows = read_results(run_dir)
    assert rows
    for row in rows:
        for key in ("train/box_loss", "train/cls_loss", "val/cls_loss"):
            assert math.isfinite(row[key]), (key, row)


@pytest.mark.parametrize("loss", ["bce", "focal", "vfl", "qfl"])
def test_each_loss_trains_an_epoch(loss, det_data, tmp_path):
    """Each loss trains an epoch with finite losses; model and EMA criteria use it; args.yaml records it."""
    model = train_tiny("yolov8n.yaml", det_data, tmp_path, loss=loss)
    trainer = model.trainer
    assert installed_loss(trainer.model.criterion) == loss
    assert installed_loss(trainer.ema.ema.criterion) == loss  # the validator's val losses use the same loss
    assert_finite_losses(trainer.save_dir)
    args = yaml.safe_load((trainer.save_dir / "args.yaml").read_text())
    assert args["loss"] == loss and args["vfl_alpha"] == 0.75 and args["qfl_beta"] == 2.0
    for weights in ("best.pt", "last.pt"):  # the final checkpoints record the loss too, not train_args['loss'] None
        assert_settings_recorded(trainer.save_dir / "weights" / weights, loss=loss, vfl_alpha=0.75, cls_warmup=0)


@pytest.mark.parametrize(
    "cfg, task, cls",
    [
        ("yolov8n-seg.yaml", "segment", VFLSegmentationTrainer),
        ("yolov8n-pose.yaml", "pose", VFLPoseTrainer),
        ("yolov8n-obb.yaml", "obb", VFLOBBTrainer),
        ("yolo26n.yaml", "detect", VFLDetectionTrainer),
    ],
)
def test_tasks_and_end_to_end_heads_train(cfg, task, cls, task_data, tmp_path):
    """VFLDetectionTrainer picks the segment/pose/OBB trainer from the model; YOLO26 trains both branches with VFL."""
    from ultralytics.utils import ROOT

    if not list((ROOT / "cfg" / "models").rglob(cfg.replace("n.yaml", ".yaml").replace("n-", "-"))):
        pytest.skip(f"{cfg} is not in this Ultralytics version")
    model = train_tiny(cfg, task_data(task), tmp_path, loss="vfl")
    trainer = model.trainer
    assert type(trainer) is cls
    assert installed_loss(trainer.model.criterion) == "vfl"
    assert installed_loss(trainer.ema.ema.criterion) == "vfl"
    assert_finite_losses(trainer.save_dir)


def test_trainer_for_task_rejects_classify():
    """Tasks without a detection criterion are refused with the list of supported tasks."""
    with pytest.raises(ValueError, match="detect, segment, pose, obb; got task 'classify'"):
        trainer_for_task("classify")


def test_explicit_trainer_task_mismatch(det_data, tmp_path):
    """A segmentation trainer given a detection model fails before training with a clear message."""
    from ultralytics import YOLO

    with pytest.raises(ValueError, match="trains task 'segment' but the model's task is 'detect'"):
        YOLO("yolov8n.yaml").train(trainer=VFLSegmentationTrainer, data=str(det_data), project=str(tmp_path))


@pytest.mark.parametrize(
    "settings, error, message",
    [
        (
            {"loss": "vlf"},
            UnknownLossError,
            r"Unknown loss 'vlf'\. Valid losses: bce, focal, vfl, qfl, mal, iabce\. Did you mean",
        ),
        ({"loss": "vfl", "vfl_alpha": 2.0}, ValueError, r"Invalid vfl_alpha=2\.0: valid values are between 0\.0 and"),
        ({"loss": "qfl", "qfl_beta": -0.5}, ValueError, r"Invalid qfl_beta=-0\.5"),
        ({"loss": "focal", "fl_gamma": "x"}, TypeError, r"fl_gamma must be a real number"),
        ({"loss": "bce", "vfl_gamma": 1.0}, ValueError, r"vfl_gamma=1\.0 has no effect with loss='bce'"),
        (
            {"loss": "vfl", "cls_warmup": 2, "epochs": 2},
            ValueError,
            r"Invalid cls_warmup=2 for epochs=2 with loss='vfl",
        ),
        ({"loss": "qfl", "cls_warmup": 100}, ValueError, r"Invalid cls_warmup=100 for epochs=100.*0 to 99"),  # default
        ({"loss": "bce", "cls_warmup": 1}, ValueError, r"cls_warmup=1 has no effect with loss='bce'"),
        ({"loss": "vfl", "cls_warmup": False}, TypeError, r"cls_warmup must be an integer.*False \(bool\)"),
        ({"loss": "vfl", "cls_target": ""}, ValueError, r"Invalid cls_target='': valid values are 'tal', 'iou'"),
        ({"loss": "vfl", "cls_target": None}, ValueError, r"Invalid cls_target=None"),
        (
            {"loss": "vfl", "cls_branches": "one2one", "nms": True},
            ValueError,
            r"Invalid nms=True with cls_branches='one2one'.*describe BCE.*Valid: nms=False",
        ),
    ],
)
def test_bad_settings_fail_before_training(settings, error, message, det_data, tmp_path):
    """Bad settings raise a typed error naming the value before any run directory is created."""
    from ultralytics import YOLO

    with pytest.raises(error, match=message):
        YOLO("yolov8n.yaml").train(
            trainer=VFLDetectionTrainer, data=str(det_data), project=str(tmp_path), name="bad", **settings
        )
    assert not (tmp_path / "bad").exists()


def test_import_does_not_teach_plain_ultralytics_our_keys(det_data, tmp_path):
    """After importing yolo_vfl, plain Ultralytics still rejects loss=vfl instead of silently training BCE."""
    from ultralytics import YOLO

    import yolo_vfl.trainer  # noqa: F401

    with pytest.raises(SyntaxError, match="loss"):
        YOLO("yolov8n.yaml").train(data=str(det_data), project=str(tmp_path), loss="vfl", epochs=1)


VANILLA = f"""
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "yolo_vfl" or name.startswith("yolo_vfl."):
            raise ModuleNotFoundError("yolo_vfl is blocked in this process")

sys.meta_path.insert(0, Block())
from ultralytics import YOLO

data, project, image = sys.argv[1], sys.argv[2], sys.argv[3]
for w in sys.argv[4:]:
    model = YOLO(w)
    model.predict(image, imgsz={IMGSZ}, verbose=False)
    metrics = model.val(data=data, imgsz={IMGSZ}, batch=4, workers=0, plots=False, verbose=False, project=project)
    print("VAL", w, metrics.box.map)
model = YOLO(sys.argv[4])
model.train(data=data, epochs=1, imgsz={IMGSZ}, batch=4, workers=0, device="cpu", project=project, name="finetune",
            plots=False, verbose=False)
try:
    import yolo_vfl  # noqa: F401
except ModuleNotFoundError:
    print("VANILLA OK")
"""


def run_vanilla(det_data: Path, project: Path, weights: list[Path]) -> str:
    image = next((det_data.parent / "images" / "val").iterdir())
    out = subprocess.run(
        [sys.executable, "-c", VANILLA, str(det_data), str(project), str(image), *map(str, weights)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def assert_settings_recorded(weights: Path, **expected) -> None:
    """The checkpoint's train_args carry every loss setting (defaults filled in) with the expected values.

    The assigner settings (``tal_*``) are recorded only when given: unset, they are the criterion's own.
    """
    from yolo_vfl.criterion import SETTING_KEYS, TAL_KEYS

    train_args = torch.load(weights, map_location="cpu", weights_only=False)["train_args"]
    keys = {k for k in SETTING_KEYS if k not in TAL_KEYS or k in expected}
    assert keys <= set(train_args), sorted(keys - set(train_args))
    assert {k: train_args[k] for k in expected} == expected
    assert train_args["cls_target"] == "tal" and train_args["cls_fg_negatives"] == "loss"


class Interrupt(Exception):
    """Raised by a callback to stop training like a killed job, after the epoch's checkpoint is written."""


def test_interrupted_run_loads_vanilla_and_resumes_with_same_loss(det_data, tmp_path):
    """An interrupted last.pt loads/predicts/validates/fine-tunes without yolo_vfl; resume keeps the loss."""
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")

    def stop(trainer):
        if trainer.epoch == 0:
            raise Interrupt

    model.add_callback("on_fit_epoch_end", stop)  # runs after save_model of epoch 1
    with pytest.raises(Interrupt):
        model.train(
            trainer=VFLDetectionTrainer,
            data=str(det_data),
            epochs=3,
            imgsz=IMGSZ,
            batch=4,
            workers=0,
            device="cpu",
            project=str(tmp_path),
            name="run",
            plots=False,
            loss="qfl",
            qfl_beta=1.5,
        )
    last = tmp_path / "run" / "weights" / "last.pt"
    assert last.exists()
    assert_settings_recorded(last, loss="qfl", qfl_beta=1.5)
    assert "VANILLA OK" in run_vanilla(det_data, tmp_path / "vanilla", [last])

    # plain Ultralytics resume (no yolo-vfl trainer) fails before training, with Ultralytics' unknown-key error
    before = last.read_bytes()
    ansi = r"(\x1b\[[0-9;]*m)*"  # Ultralytics 8.3 colours the key
    with pytest.raises(SyntaxError, match=rf"'{ansi}(loss|qfl_beta|cls_warmup|cls_target){ansi}' is not a valid"):
        YOLO(last).train(resume=True, workers=0)
    assert last.read_bytes() == before and [int(r["epoch"]) for r in read_results(tmp_path / "run")] == [1]

    # a checkpoint whose warm-up covers the whole run is refused on resume too
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    ckpt["train_args"]["cls_warmup"] = 3
    bad = tmp_path / "bad_warmup.pt"
    torch.save(ckpt, bad)
    with pytest.raises(ValueError, match=r"Invalid cls_warmup=3 for epochs=3 with loss='qfl': valid values are 0 to 2"):
        YOLO(bad).train(trainer=VFLDetectionTrainer, resume=True, workers=0)

    with pytest.raises(ValueError, match="Cannot change the classification loss on resume: loss='vfl'"):
        YOLO(last).train(trainer=VFLDetectionTrainer, resume=True, loss="vfl")

    resumed = YOLO(last)
    resumed.train(trainer=VFLDetectionTrainer, resume=True, workers=0)
    trainer = resumed.trainer
    assert trainer.cls_loss_settings.loss == "qfl" and trainer.args.qfl_beta == 1.5
    assert installed_loss(trainer.model.criterion) == "qfl"
    assert [int(r["epoch"]) for r in read_results(tmp_path / "run")] == [1, 2, 3]
    best = tmp_path / "run" / "weights" / "best.pt"
    for final in (last, best):  # Ultralytics' final strip_optimizer drops unknown train_args keys: put back
        assert_settings_recorded(final, loss="qfl", qfl_beta=1.5)
    assert "VANILLA OK" in run_vanilla(det_data, tmp_path / "vanilla2", [last, best])


DDP_PROBE = """
print("DDP_PROBE", json.dumps({"cls": type(trainer).__name__, "module": type(trainer).__module__,
      "settings": trainer.cls_loss_settings.to_args()}))
"""


def test_ddp_worker_rebuild_keeps_settings(det_data, tmp_path):
    """The script Ultralytics generates for DDP workers rebuilds our trainer with the same loss settings."""
    from ultralytics.utils.dist import generate_ddp_file

    trainer = VFLDetectionTrainer(
        overrides=dict(
            model="yolov8n.yaml",
            data=str(det_data),
            imgsz=IMGSZ,
            project=str(tmp_path),
            name="ddp",
            loss="vfl",
            vfl_alpha=0.6,
            vfl_gamma=1.0,
            vfl_iou_weighted=False,
        )
    )
    path = Path(generate_ddp_file(trainer))
    try:
        script = path.read_text()
        lines = script.splitlines()
        train_line = next(i for i, line in enumerate(lines) if line.strip().endswith("trainer.train()"))
        indent = lines[train_line][: len(lines[train_line]) - len(lines[train_line].lstrip())]
        probe = textwrap.indent("import json\n" + DDP_PROBE.strip(), indent).splitlines()
        lines[train_line : train_line + 1] = probe
        probe_file = tmp_path / "ddp_probe.py"
        probe_file.write_text("\n".join(lines))
        out = subprocess.run([sys.executable, str(probe_file)], capture_output=True, text=True, timeout=300)
    finally:
        path.unlink(missing_ok=True)
        path.with_suffix(".pt").unlink(missing_ok=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("DDP_PROBE"))
    got = json.loads(line.split(" ", 1)[1])
    assert got["cls"] == "VFLDetectionTrainer" and got["module"] == "yolo_vfl.trainer"
    assert got["settings"] == trainer.cls_loss_settings.to_args()
    assert got["settings"]["vfl_alpha"] == 0.6 and got["settings"]["vfl_iou_weighted"] is False


def test_bce_warmup_then_switch(det_data, tmp_path):
    """cls_warmup=1: epoch 1 trains with stock BCE, epoch 2 with VFL, on the training and the EMA model.

    The assigner setting (tal_topk=13) holds in both epochs: it chooses the positives whatever the loss.
    """
    from ultralytics import YOLO

    seen, topk = [], set()
    model = YOLO("yolov8n.yaml")
    model.add_callback(
        "on_train_batch_end",
        lambda t: seen.append((t.epoch, installed_loss(t.model.criterion), installed_loss(t.ema.ema.criterion))),
    )
    model.add_callback("on_train_batch_end", lambda t: topk.add((t.epoch, t.model.criterion.assigner.topk)))
    model.train(
        trainer=VFLDetectionTrainer,
        data=str(det_data),
        epochs=2,
        imgsz=IMGSZ,
        batch=8,
        workers=0,
        device="cpu",
        project=str(tmp_path),
        name="warm",
        plots=False,
        loss="vfl",
        cls_warmup=1,
        tal_topk=13,
        val=False,
    )
    assert {(e, m, ema) for e, m, ema in seen} == {(0, "bce", "bce"), (1, "vfl", "vfl")}
    assert topk == {(0, 13), (1, 13)}
    args = yaml.safe_load((tmp_path / "warm" / "args.yaml").read_text())
    assert args["cls_warmup"] == 1 and args["cls_target"] == "tal"
    assert_settings_recorded(tmp_path / "warm" / "weights" / "last.pt", loss="vfl", cls_warmup=1, tal_topk=13)


def test_end_to_end_head_with_the_loss_on_one2one_only(det_data, tmp_path):
    """yolo26n with cls_branches=one2one trains; one2many keeps stock BCE; args.yaml and the checkpoints record it.

    ``nms=False`` (required with one2one): validation scores the one-to-one branch, the one the loss trains.
    """
    try:
        model = train_tiny("yolo26n.yaml", det_data, tmp_path, loss="vfl", cls_branches="one2one", nms=False)
    except (FileNotFoundError, KeyError, AttributeError) as e:  # YOLO26 configs exist in 8.4 only
        pytest.skip(f"yolo26n.yaml not available in this Ultralytics version: {e}")
    crit = model.trainer.model.criterion
    assert isinstance(crit.one2many.bce, torch.nn.BCEWithLogitsLoss)
    assert crit.one2one.bce.cls_loss.name == "vfl"
    assert model.trainer.validator.end2end is True  # the one-to-one branch, NMS-free
    args = yaml.safe_load((model.trainer.save_dir / "args.yaml").read_text())
    assert args["cls_branches"] == "one2one"
    assert_settings_recorded(model.trainer.last, loss="vfl", cls_branches="one2one")
