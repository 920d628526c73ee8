"""patches/: the cls_loss diff applies to a pristine Ultralytics 8.4.190 and gives yolo_vfl's classification losses.

The installed Ultralytics is copied to a temporary directory and patched there (never in place); the patched copy runs
in a subprocess with ``PYTHONPATH`` pointing at it, on the same model weights and batch as this process, which computes
the same losses with ``yolo_vfl``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest
import torch
import ultralytics
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel, OBBModel

from yolo_vfl.criterion import ClsLossSettings, VFLDetectionLoss, install_cls_loss

TARGET = "8.4.190"
PATCH = Path(__file__).resolve().parents[1] / "patches" / f"ultralytics-{TARGET}-cls-loss.diff"
PATCHED_FILES = ("ultralytics/cfg/default.yaml", "ultralytics/cfg/__init__.py", "ultralytics/utils/loss.py")

IMGSZ = 64
NC = 3

# (model, loss, hyperparameters as Ultralytics settings, class weights): every loss at its defaults and with one
# non-default setting (for bce: class weights, the only thing that can change it), OBB and an end-to-end head.
CASES = [
    ("yolov8n.yaml", "bce", {}, None),
    ("yolov8n.yaml", "bce", {}, [0.5, 2.0, 1.0]),
    ("yolov8n.yaml", "focal", {}, None),
    ("yolov8n.yaml", "focal", {"fl_alpha": 0.6, "fl_gamma": 1.5}, None),
    ("yolov8n.yaml", "focal", {"fl_alpha": -1.0}, None),
    ("yolov8n.yaml", "vfl", {}, None),
    ("yolov8n.yaml", "vfl", {"vfl_alpha": 0.5, "vfl_gamma": 1.0}, None),
    ("yolov8n.yaml", "vfl", {"vfl_iou_weighted": False}, None),
    ("yolov8n.yaml", "vfl", {}, [0.5, 2.0, 1.0]),
    ("yolov8n.yaml", "qfl", {}, None),
    ("yolov8n.yaml", "qfl", {"qfl_beta": 1.5}, None),
    ("yolov8n-obb.yaml", "bce", {}, None),
    ("yolov8n-obb.yaml", "vfl", {}, None),
    ("yolov8n-obb.yaml", "qfl", {"qfl_beta": 1.5}, None),
    ("yolo26n.yaml", "vfl", {}, None),
]
MODELS = sorted({c[0] for c in CASES})


def _skip_reason() -> str | None:
    if ultralytics.__version__ != TARGET:
        return (
            f"{PATCH.name} targets Ultralytics {TARGET}; the installed Ultralytics is {ultralytics.__version__}, "
            "so the diff would not apply"
        )
    if not shutil.which("patch") and not shutil.which("git"):
        return "neither `patch` nor `git` is installed, so the diff cannot be applied"
    try:
        records = {str(f): f.hash for f in importlib.metadata.distribution("ultralytics").files or ()}
    except importlib.metadata.PackageNotFoundError:
        records = {}
    root = Path(ultralytics.__file__).parent.parent
    for name in PATCHED_FILES:
        rec = records.get(name)
        if rec is None:
            return f"cannot verify that the installed {name} is pristine (no record in the wheel's RECORD)"
        digest = urlsafe_b64encode(hashlib.new(rec.mode, (root / name).read_bytes()).digest()).rstrip(b"=").decode()
        if digest != rec.value:
            return f"the installed {name} differs from the Ultralytics {TARGET} wheel (already patched or edited?)"
    return None


_SKIP = _skip_reason()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=str(_SKIP))


def make_batch(obb: bool = False) -> dict[str, torch.Tensor]:
    """The batch of tests/test_criterion.py: three images, image 1 without objects; OBB boxes get angles."""
    torch.manual_seed(1)
    bboxes = torch.tensor(
        [
            [0.30, 0.30, 0.40, 0.40],
            [0.70, 0.65, 0.30, 0.45],
            [0.25, 0.70, 0.35, 0.30],
            [0.60, 0.30, 0.50, 0.40],
            [0.80, 0.80, 0.25, 0.25],
        ]
    )
    batch = {
        "img": torch.rand(3, 3, IMGSZ, IMGSZ),
        "batch_idx": torch.tensor([0.0, 0.0, 2.0, 2.0, 2.0]),
        "cls": torch.tensor([[2.0], [0.0], [1.0], [1.0], [2.0]]),
        "bboxes": bboxes,
    }
    if obb:
        batch["bboxes"] = torch.cat([bboxes, torch.tensor([[0.0], [0.3], [-0.5], [1.0], [0.2]])], 1)
    return batch


def build(cfg: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = OBBModel if "-obb" in cfg else DetectionModel
    return cls(cfg, nc=NC, verbose=False)


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a small shared machine, 2 threads of tiny ops were ~10x slower than 1 under load."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def patched(tmp_path_factory) -> Path:
    """A copy of the installed Ultralytics with the diff applied: the directory that contains ``ultralytics/``."""
    root = tmp_path_factory.mktemp("patched")
    src = Path(ultralytics.__file__).parent
    shutil.copytree(src, root / "ultralytics")  # with __pycache__: unchanged modules need no recompiling
    tool = ["patch", "-p1", "--forward", "--batch", "-i", str(PATCH)] if shutil.which("patch") else None
    proc = run(tool or ["git", "apply", "-v", str(PATCH)], root)
    assert proc.returncode == 0, f"applying {PATCH.name} failed:\n{proc.stdout}\n{proc.stderr}"
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Initial weights of each model and the batches, saved for both processes."""
    d = tmp_path_factory.mktemp("inputs")
    for cfg in MODELS:
        torch.save(build(cfg).state_dict(), d / f"{cfg}.pt")
    torch.save({"det": make_batch(), "obb": make_batch(obb=True)}, d / "batches.pt")
    return d


def test_diff_applies_to_pristine_release_with_both_tools(tmp_path):
    """`patch -p1 --dry-run` and `git apply --check` accept the diff inside a pristine copy of the package dir."""
    root = Path(ultralytics.__file__).parent.parent
    for name in PATCHED_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, tmp_path / name)
    checked = 0
    if shutil.which("patch"):
        proc = run(["patch", "-p1", "--dry-run", "--batch", "-i", str(PATCH)], tmp_path)
        assert proc.returncode == 0 and "FAILED" not in proc.stdout and "fuzz" not in proc.stdout, proc.stdout
        checked += 1
    if shutil.which("git"):
        proc = run(["git", "apply", "--check", "-v", str(PATCH)], tmp_path)
        assert proc.returncode == 0, proc.stderr
        checked += 1
    assert checked


def test_diff_only_adds_lines_except_minimal_replacements():
    """The diff removes only the four lines the feature has to replace, and each comes back changed minimally.

    They are the assigner unpacking that drops ``target_labels`` and the BCE call, in detect and OBB. Context lines are
    Ultralytics' own: the application without fuzz above (`git apply` accepts none) proves it.
    """
    text = PATCH.read_text()
    files = re.findall(r"^\+\+\+ b/(\S+)", text, flags=re.M)
    assert files == list(PATCHED_FILES)
    assert re.findall(r"^--- a/(\S+)", text, flags=re.M) == files
    removed = [line[1:].strip() for line in text.splitlines() if line.startswith("-") and not line.startswith("---")]
    assert removed == [
        "_, target_bboxes, target_scores, fg_mask, target_gt_idx = self.assigner(",
        "bce_loss = self.bce(pred_scores, target_scores.to(dtype))  # (bs, num_anchors, nc)",
        "_, target_bboxes, target_scores, fg_mask, _ = self.assigner(",
        "bce_loss = self.bce(pred_scores, target_scores.to(dtype))  # BCE",
    ]
    added = [line[1:] for line in text.splitlines() if line.startswith("+") and not line.startswith("+++")]
    for line in removed:  # each replaced line survives, changed only where the feature needs it
        assert any(line in a or line.replace("_, target_bboxes", "target_labels, target_bboxes") in a for a in added)


SCRIPT = r"""
import json, sys
from pathlib import Path

import torch
import ultralytics
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel, OBBModel
from ultralytics.utils import IterableSimpleNamespace
from ultralytics.utils.loss import DetectionClsLoss

torch.set_num_threads(1)
patched_root, inputs = Path(sys.argv[1]), Path(sys.argv[2])
cases = json.loads(sys.argv[3])
assert Path(ultralytics.__file__).resolve().is_relative_to(patched_root.resolve()), ultralytics.__file__
batches = torch.load(inputs / "batches.pt")


models = {}


def prepare(cfg):  # the model with the saved weights and its training-mode predictions, once per model
    if cfg not in models:
        model = (OBBModel if "-obb" in cfg else DetectionModel)(cfg, nc=3, verbose=False)
        model.load_state_dict(torch.load(inputs / f"{cfg}.pt"))
        model.train()
        batch = batches["obb" if "-obb" in cfg else "det"]
        with torch.no_grad():
            models[cfg] = model, model(batch["img"]), batch
    return models[cfg]


def items(cfg, args, class_weights=None):
    model, preds, batch = prepare(cfg)
    model.args = args
    model.class_weights = None if class_weights is None else torch.tensor(class_weights)
    crit = model.init_criterion()
    out = crit(preds, batch)
    return crit, {k: float(v) for k, v in out[1].items()}


out = {"cases": [], "errors": {}}
for cfg, loss, hp, class_weights in cases:
    out["cases"].append(items(cfg, get_cfg(overrides={"cls_loss": loss, **hp}), class_weights)[1])

# Arguments saved before the settings existed (no cls_loss keys): BCE, and the same numbers as cls_loss=bce
old = {k: v for k, v in vars(get_cfg()).items() if k not in ("cls_loss", "fl_alpha", "fl_gamma", "vfl_alpha",
                                                             "vfl_gamma", "vfl_iou_weighted", "qfl_beta")}
crit, out["old_args"] = items("yolov8n.yaml", IterableSimpleNamespace(**old))
assert crit.cls_loss.name == "bce"
out["bce"] = items("yolov8n.yaml", get_cfg(overrides={"cls_loss": "bce"}))[1]

# Elementwise VFL: background anchors (they carry their image's GT #0 class) are negatives of every class; an image
# labelled like a batch without GT (labels == nc) has no positive; bfloat16 logits give a float32 loss
x = torch.linspace(-3, 3, 24).view(2, 4, 3).bfloat16()
q = torch.zeros(2, 4, 3)
q[0, 1, 2], q[0, 2, 0] = 0.8, 0.6
target_labels = torch.tensor([[2, 2, 0, 2], [3, 3, 3, 3]])
fg_mask = torch.tensor([[False, True, True, False], [False, False, False, False]])
loss = DetectionClsLoss("vfl")(x, q, target_labels, fg_mask)
pos = q > 0
bce = torch.nn.functional.binary_cross_entropy_with_logits(x.float(), q, reduction="none")
expected = torch.where(pos, q * bce, 0.75 * x.float().sigmoid() ** 2 * bce)
out["elementwise_vfl"] = {"dtype": str(loss.dtype), "max_abs_err": float((loss - expected).abs().max())}

# Validation: unknown names and out-of-range values are refused with clear errors
for name, call in {
    "unknown": lambda: items("yolov8n.yaml", get_cfg(overrides={"cls_loss": "vlf"})),
    "vfl_alpha": lambda: get_cfg(overrides={"vfl_alpha": 1.5}),
    "vfl_iou_weighted": lambda: get_cfg(overrides={"vfl_iou_weighted": "yes"}),
    "qfl_beta": lambda: DetectionClsLoss("qfl", qfl_beta=-1.0),
}.items():
    try:
        call()
        out["errors"][name] = None
    except (TypeError, ValueError) as e:
        out["errors"][name] = f"{type(e).__name__}: {e}"
print("RESULT " + json.dumps(out))
"""


_prepared: dict[str, tuple] = {}


def yolo_vfl_items(cfg: str, loss: str, hp: dict, class_weights, inputs: Path) -> dict[str, float]:
    """The same case with stock Ultralytics and yolo_vfl's criterion seams (same weights, predictions computed once)."""
    if cfg not in _prepared:
        model = build(cfg)
        model.load_state_dict(torch.load(inputs / f"{cfg}.pt"))
        model.train()
        batch = torch.load(inputs / "batches.pt")["obb" if "-obb" in cfg else "det"]
        with torch.no_grad():
            _prepared[cfg] = model, model(batch["img"]), batch
    model, preds, batch = _prepared[cfg]
    model.args = get_cfg()
    model.class_weights = None if class_weights is None else torch.tensor(class_weights)
    if cfg == "yolov8n.yaml":
        crit = VFLDetectionLoss(model, loss=loss, **hp)  # Ultralytics settings (vfl_alpha=...) as keywords
    else:  # OBB and end-to-end criteria: the same seams, installed on the model's own criterion
        crit = model.init_criterion()
        install_cls_loss(crit, ClsLossSettings.from_args({"loss": loss, **hp}))
    out = crit(preds, batch)
    return {k: float(v) for k, v in out[1].items()}


def test_patched_ultralytics_matches_yolo_vfl(patched, inputs):
    """For each loss and setting, patched Ultralytics' cls_loss equals yolo_vfl's (rel 1e-5); other items unchanged."""
    env = {**os.environ, "PYTHONPATH": str(patched), "YOLO_OFFLINE": "1"}
    env["YOLO_CONFIG_DIR"] = str(patched.parent / "yolo_cfg")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(patched), str(inputs), json.dumps(CASES)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"patched subprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    result = json.loads(lines[-1][len("RESULT ") :])

    for case, theirs in zip(CASES, result["cases"]):
        ours = yolo_vfl_items(*case, inputs)
        assert theirs.keys() == ours.keys(), case
        for key in ours:
            assert math.isclose(theirs[key], ours[key], rel_tol=1e-5, abs_tol=1e-9), (case, key, theirs, ours)

    # The non-default settings changed the loss (a setting that silently did nothing would still "match")
    cls = {(c[0], c[1], json.dumps(c[2]), str(c[3])): r["cls_loss"] for c, r in zip(CASES, result["cases"])}
    values = [v for k, v in cls.items() if k[0] == "yolov8n.yaml"]
    assert len(set(values)) == len(values), cls

    assert result["old_args"] == result["bce"]
    assert result["elementwise_vfl"]["dtype"] == "torch.float32"
    assert result["elementwise_vfl"]["max_abs_err"] < 1e-6
    errors = result["errors"]
    assert errors["unknown"] == "ValueError: Invalid cls_loss='vlf'. Valid cls_loss values are bce, focal, vfl, qfl."
    assert str(errors["vfl_alpha"]).startswith("ValueError") and "vfl_alpha=1.5" in str(errors["vfl_alpha"])
    assert str(errors["vfl_iou_weighted"]).startswith("TypeError")
    assert str(errors["qfl_beta"]).startswith("ValueError") and "qfl_beta=-1.0" in str(errors["qfl_beta"])
