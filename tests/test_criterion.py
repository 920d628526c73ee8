"""The criterion seams: fg-masked one-hot labels, formula values on assigner targets, BCE parity, all heads."""

from __future__ import annotations

import collections
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel, OBBModel, PoseModel, SegmentationModel
from ultralytics.utils.loss import v8DetectionLoss

from yolo_vfl.criterion import (
    ClsLossSettings,
    VFLDetectionLoss,
    find_detection_losses,
    foreground_labels,
    install_cls_loss,
    installed_loss,
    normalize_setting,
    predicted_iou,
)
from yolo_vfl.losses import UnknownLossError

IMGSZ = 64
NC = 3


def make_model(cfg: str = "yolov8n.yaml", cls=DetectionModel) -> torch.nn.Module:
    torch.manual_seed(0)
    model = cls(cfg, nc=NC, verbose=False)
    model.args = get_cfg()  # gains box 7.5, cls 0.5, dfl 1.5
    model.train()
    return model


def make_batch(empty: bool = False) -> dict[str, torch.Tensor]:
    """Three images; image 1 has no objects (all images empty with ``empty=True``)."""
    torch.manual_seed(1)
    if empty:
        return {
            "img": torch.rand(3, 3, IMGSZ, IMGSZ),
            "batch_idx": torch.zeros(0),
            "cls": torch.zeros(0, 1),
            "bboxes": torch.zeros(0, 4),
        }
    return {
        "img": torch.rand(3, 3, IMGSZ, IMGSZ),
        "batch_idx": torch.tensor([0.0, 0.0, 2.0, 2.0, 2.0]),
        "cls": torch.tensor([[2.0], [0.0], [1.0], [1.0], [2.0]]),  # image 0's GT #0 is class 2
        "bboxes": torch.tensor(
            [
                [0.30, 0.30, 0.40, 0.40],
                [0.70, 0.65, 0.30, 0.45],
                [0.25, 0.70, 0.35, 0.30],
                [0.60, 0.30, 0.50, 0.40],
                [0.80, 0.80, 0.25, 0.25],
            ]
        ),
    }


def cls_item(out) -> float:
    """The cls_loss item of a criterion output (a dict in 8.4, a tensor (box, cls, dfl) in 8.3)."""
    items = out[1]
    return float(items["cls_loss"] if isinstance(items, dict) else items[1])


class Recorder:
    """Wraps a callable and keeps its last inputs and output."""

    def __init__(self, fn):
        self.fn, self.args, self.out = fn, None, None

    def __call__(self, *args, **kwargs):
        self.args = args
        self.out = self.fn(*args, **kwargs)
        return self.out


class LossSpy(torch.nn.Module):
    """Stands in for a ClsLoss and records (logits, targets, labels)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.spec, self.name, self.seen = inner, inner.spec, inner.name, None

    def forward(self, logits, targets, labels=None):
        self.seen = (logits.detach().clone(), targets.detach().clone(), None if labels is None else labels.clone())
        return self.inner(logits, targets, labels)


def spied_criterion(model, **settings):
    crit = VFLDetectionLoss(model, **settings)
    assigner = Recorder(crit.assigner.assigner)
    crit.assigner.assigner = assigner
    spy = LossSpy(crit.bce.cls_loss)
    crit.bce.cls_loss = spy
    return crit, assigner, spy


def test_foreground_labels_ignore_background_anchors():
    """Background anchors (which carry GT #0's class) get no positive label; fg anchors get their class."""
    target_labels = torch.tensor([[2, 2, 0, 2], [1, 1, 1, 1]])  # background anchors hold GT #0's class
    fg_mask = torch.tensor([[False, True, True, False], [False, False, False, False]])
    labels = foreground_labels(target_labels, fg_mask, nc=3)
    expected = torch.zeros(2, 4, 3, dtype=torch.bool)
    expected[0, 1, 2] = True
    expected[0, 2, 0] = True
    assert torch.equal(labels, expected)


def test_foreground_labels_no_gt_in_batch():
    """With no GT in the batch (float labels filled with nc, float fg_mask) every entry is negative."""
    labels = foreground_labels(torch.full((2, 5), 3.0), torch.zeros(2, 5), nc=3)
    assert labels.shape == (2, 5, 3) and not labels.any()


@pytest.mark.parametrize("loss", ["vfl", "qfl", "focal", "bce", "mal", "iabce"])
def test_cls_loss_equals_formula_on_assigner_targets(loss):
    """cls_loss item == gain * sum(formula(x, q)) / max(sum q, 1) on TAL's targets, with an image without objects."""
    model = make_model()
    crit, assigner, spy = spied_criterion(model, loss=loss)
    out = crit(model(make_batch()["img"]), make_batch())
    x, q, labels = spy.seen
    target_labels, fg_mask = assigner.out[0], assigner.out[3].bool()
    assert fg_mask[1].sum() == 0 and fg_mask[0].any() and fg_mask[2].any()

    x, q = x.double(), q.double()
    p = x.sigmoid()
    bce = -(q * F.logsigmoid(x) + (1 - q) * F.logsigmoid(-x))
    pos = torch.zeros_like(q, dtype=torch.bool)
    b, a = fg_mask.nonzero(as_tuple=True)
    pos[b, a, target_labels[b, a].long()] = True
    bce0 = F.softplus(x)  # BCE(x, 0)
    if loss in ("vfl", "mal", "iabce"):
        assert torch.equal(labels, pos)
    if loss == "vfl":
        elementwise = torch.where(pos, q * bce, 0.75 * p.pow(2.0) * bce)
    elif loss == "mal":  # DEIM defaults: gamma 1.5, no alpha; positives at full weight with target q^1.5
        t = q.pow(1.5)
        elementwise = torch.where(pos, -(t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x)), p.pow(1.5) * bce0)
    elif loss == "iabce":  # RF-DETR defaults: alpha 0.25, gamma 2; target max(p^0.25 q^0.75, 0.01)
        t = (p.pow(0.25) * q.pow(0.75)).clamp(min=0.01)
        elementwise = torch.where(pos, -(t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x)), p.pow(2.0) * bce0)
    elif loss == "qfl":
        elementwise = (q - p).abs().pow(2.0) * bce
    elif loss == "focal":
        p_t = p * q + (1 - p) * (1 - q)
        elementwise = (0.25 * q + 0.75 * (1 - q)) * (1 - p_t).pow(2.0) * bce
    else:
        elementwise = bce
    expected = elementwise.sum() / q.sum().clamp(min=1) * model.args.cls
    assert math.isclose(cls_item(out), float(expected), rel_tol=1e-5)


def test_background_anchors_are_not_positives_of_gt0_class():
    """The seed-002 recipe would make every background anchor of an image a positive of its GT #0 class; not here."""
    model = make_model()
    crit, assigner, spy = spied_criterion(model, loss="vfl")
    crit(model(make_batch()["img"]), make_batch())
    labels = spy.seen[2]
    target_labels, fg_mask = assigner.out[0], assigner.out[3].bool()
    background = ~fg_mask[0]
    assert background.any()
    assert (target_labels[0][background] == 2).all()  # image 0's GT #0 is class 2 ...
    assert not labels[0][background].any()  # ... yet its background anchors are negatives for every class
    assert int(labels.sum()) == int(fg_mask.sum())  # exactly one positive class per foreground anchor
    recipe = F.one_hot(target_labels.long(), NC)  # the recipe's labels: one positive per anchor, fg or not
    assert int(recipe.sum()) == target_labels.numel() > int(labels.sum())


def test_vfl_negative_weight_reaches_background_entries():
    """Background entries get the negative weight alpha p^gamma (not 0 as in the recipe): the loss grows with p."""
    model = make_model()
    crit, _, spy = spied_criterion(model, loss="vfl")
    crit(model(make_batch()["img"]), make_batch())
    x, q, labels = spy.seen
    element = crit.bce.cls_loss.inner(x, q, labels)
    negatives = ~labels
    p = x.sigmoid()
    bce0 = F.binary_cross_entropy_with_logits(x, torch.zeros_like(x), reduction="none")  # q = 0 on negatives
    expected = 0.75 * p[negatives] ** 2 * bce0[negatives]
    assert torch.allclose(element[negatives], expected, rtol=1e-2, atol=0)  # float32 BCE of tiny values
    assert element[negatives].sum() > 0


def test_whole_batch_without_objects():
    """A batch with no GT at all gives finite losses and no positive (8.0-8.3 return float target_labels)."""
    model = make_model()
    crit, _, spy = spied_criterion(model, loss="vfl")
    out = crit(model(make_batch(empty=True)["img"]), make_batch(empty=True))
    assert torch.isfinite(out[0]).all()
    assert not spy.seen[2].any()


def test_bce_parity_with_stock_ultralytics():
    """loss='bce' reproduces stock v8DetectionLoss exactly: total loss, items and gradients."""
    batch = make_batch()
    results = []
    for make in (lambda m: v8DetectionLoss(m), lambda m: VFLDetectionLoss(m, loss="bce")):
        model = make_model()
        out = make(model)(model(batch["img"]), batch)
        out[0].sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        items = out[1]
        items = torch.stack(list(items.values())) if isinstance(items, dict) else items
        results.append((out[0].detach(), items, grads))
    (l0, i0, g0), (l1, i1, g1) = results
    assert torch.equal(l0, l1) and torch.equal(i0, i1)
    assert torch.allclose(g0, g1, rtol=0, atol=1e-7)


def test_bce_parity_with_class_weights():
    """With Ultralytics 8.4 class weights (cls_pw) the weights still multiply our elementwise loss."""
    batch = make_batch()
    items = []
    for make in (lambda m: v8DetectionLoss(m), lambda m: VFLDetectionLoss(m, loss="bce")):
        model = make_model()
        model.class_weights = torch.tensor([0.5, 2.0, 1.0])
        crit = make(model)
        if getattr(crit, "class_weights", None) is None:
            pytest.skip("this Ultralytics version has no class weights in v8DetectionLoss")
        items.append(cls_item(crit(model(batch["img"]), batch)))
    assert items[0] == items[1]


def test_install_is_idempotent_and_replaceable():
    """Installing twice does not stack wrappers; a second install switches the loss."""
    model = make_model()
    crit = v8DetectionLoss(model)
    assert installed_loss(crit) is None
    install_cls_loss(crit, ClsLossSettings.from_args({"loss": "vfl"}))
    tap = crit.assigner
    install_cls_loss(crit, ClsLossSettings.from_args({"loss": "qfl"}))
    assert crit.assigner is tap and installed_loss(crit) == "qfl"
    assert crit.assigner.topk == tap.assigner.topk  # attributes fall through to the wrapped assigner


def test_cls_loss_before_assigner_raises():
    """Calling the patched bce without an assigner call raises instead of using stale labels."""
    crit = VFLDetectionLoss(make_model(), loss="vfl")
    with pytest.raises(RuntimeError, match="before the assigner"):
        crit.bce(torch.zeros(1, 2, NC), torch.zeros(1, 2, NC))


@pytest.mark.parametrize(
    "cfg, cls",
    [
        ("yolov8n-seg.yaml", SegmentationModel),
        ("yolov8n-pose.yaml", PoseModel),
        ("yolov8n-obb.yaml", OBBModel),
        ("yolo26n.yaml", DetectionModel),
        ("yolo26n-seg.yaml", SegmentationModel),
        ("yolo26n-pose.yaml", PoseModel),
        ("yolov10n.yaml", DetectionModel),
    ],
)
def test_every_detection_family_criterion_is_patched(cfg, cls):
    """Seg, pose, OBB and end-to-end criteria (both branches) get the chosen loss via the same seams."""
    try:
        model = make_model(cfg, cls)
    except (FileNotFoundError, KeyError, AttributeError) as e:  # YOLO26 configs exist in 8.4 only
        pytest.skip(f"{cfg} not available in this Ultralytics version: {e}")
    crit = model.init_criterion()
    n = install_cls_loss(crit, ClsLossSettings.from_args({"loss": "vfl"}))
    end_to_end = getattr(model.model[-1], "one2one_cv2", None) is not None or getattr(model.model[-1], "end2end", False)
    assert n == (2 if end_to_end else 1)
    assert installed_loss(crit) == "vfl"
    assert all(isinstance(d.assigner.assigner, torch.nn.Module) for d in find_detection_losses(crit))


def test_unsupported_criterion_raises():
    """A criterion without v8DetectionLoss (e.g. classification) is refused with a clear TypeError."""

    class Other:
        pass

    with pytest.raises(TypeError, match="supports detect, segment, pose and OBB"):
        install_cls_loss(Other(), ClsLossSettings())


def test_settings_validation_messages():
    """Settings errors name the bad value and the valid choices."""
    with pytest.raises(UnknownLossError, match=r"Unknown loss 'vlf'.*bce, focal, vfl, qfl.*'vfl'"):
        ClsLossSettings.from_args({"loss": "vlf"})
    with pytest.raises(ValueError, match="vfl_alpha=1.5"):
        ClsLossSettings.from_args({"loss": "vfl", "vfl_alpha": 1.5})
    with pytest.raises(ValueError, match="qfl_beta=-1"):
        ClsLossSettings.from_args({"loss": "qfl", "qfl_beta": -1})
    with pytest.raises(ValueError, match="vfl_gamma=3.0 has no effect with loss='qfl'"):
        ClsLossSettings.from_args({"loss": "qfl", "vfl_gamma": 3.0})
    with pytest.raises(TypeError, match="vfl_iou_weighted"):
        ClsLossSettings.from_args({"loss": "vfl", "vfl_iou_weighted": "yes"})
    s = ClsLossSettings.from_args({"loss": "VFL", "vfl_gamma": 1})
    assert s.loss == "vfl" and s.hyperparameters == {"alpha": 0.75, "gamma": 1.0, "iou_weighted": True}


def test_predicted_iou_hand_made_boxes():
    """IoU target: [0,0,10,10] vs [5,0,15,10] is 50/150; identical boxes 1; disjoint 0; background anchors 0."""
    pred = torch.tensor([[[0.0, 0, 10, 10], [2, 2, 6, 6], [0, 0, 4, 4], [0, 0, 10, 10]]])
    gt = torch.tensor([[[5.0, 0, 15, 10], [2, 2, 6, 6], [10, 10, 14, 14], [0, 0, 10, 10]]])
    fg = torch.tensor([[True, True, True, False]])
    iou = predicted_iou(pred, gt, fg)
    assert torch.allclose(iou, torch.tensor([[1 / 3, 1.0, 0.0, 0.0]]), atol=1e-6)


@pytest.mark.parametrize("dim", [4, 5])
def test_predicted_iou_equals_iou_of_the_selected_anchors(dim):
    """Every anchor's IoU, masked, is bit for bit the foreground anchors' IoU alone; background NaN boxes give 0."""
    from ultralytics.utils.metrics import bbox_iou, probiou

    g = torch.Generator().manual_seed(0)
    xy, wh = torch.rand(2, 7, 2, generator=g) * 50, torch.rand(2, 7, 2, generator=g) * 20 + 1
    pred = torch.cat([xy, xy + wh], -1) if dim == 4 else torch.cat([xy, wh, torch.rand(2, 7, 1, generator=g)], -1)
    gt = pred + torch.randn(pred.shape, generator=g)
    fg = torch.rand(2, 7, generator=g) > 0.5
    pred[~fg] = float("nan")  # a background anchor's box is never read into the result
    iou = predicted_iou(pred, gt, fg)
    selected = probiou(pred[fg], gt[fg]) if dim == 5 else bbox_iou(pred[fg], gt[fg], xywh=False)
    assert torch.equal(iou[fg], selected.view(-1).clamp(0, 1)) and not iou[~fg].any()


def test_iou_target_reaches_the_loss():
    """cls_target=iou: the loss sees q = one-hot(fg label) * IoU(predicted box, assigned GT box), detached."""
    from ultralytics.utils.metrics import bbox_iou

    model = make_model()
    crit, assigner, spy = spied_criterion(model, loss="qfl", cls_target="iou")
    crit(model(make_batch()["img"]), make_batch())
    _, q, labels = spy.seen
    pd, (target_labels, target_bboxes, _, fg_mask, _) = assigner.args[1], assigner.out
    fg = fg_mask.bool()
    expected = torch.zeros_like(q)
    b, a = fg.nonzero(as_tuple=True)
    iou = bbox_iou(pd[fg], target_bboxes[fg], xywh=False).view(-1).clamp(0, 1)
    expected[b, a, target_labels[b, a].long()] = iou
    assert torch.allclose(q, expected, atol=1e-6)
    assert (q > 0).sum() > 0 and not q.requires_grad


@pytest.mark.parametrize("target", ["tal", "iou"])
@pytest.mark.parametrize("loss", ["mal", "iabce"])
def test_mal_and_iabce_train_a_step(loss, target):
    """loss=mal / loss=iabce (either quality target) train one SGD step: finite loss and gradients, moved weights."""
    model = make_model()
    crit = VFLDetectionLoss(model, loss=loss, cls_target=target)
    assert installed_loss(crit) == loss
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [w.detach().clone() for w in model.parameters()]
    batch = make_batch()
    out = crit(model(batch["img"]), batch)
    assert torch.isfinite(out[0]).all() and math.isfinite(cls_item(out)) and cls_item(out) > 0
    out[0].sum().backward()
    grads = [w.grad for w in model.parameters() if w.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    opt.step()
    assert any(not torch.equal(w0, w.detach()) for w0, w in zip(before, model.parameters()))
    out2 = crit(model(batch["img"]), batch)
    assert torch.isfinite(out2[0]).all()


def test_mal_and_iabce_settings():
    """mal_alpha, mal_gamma, iabce_alpha, iabce_gamma map to the losses' keywords and validate with the valid range."""
    s = ClsLossSettings.from_args({"loss": "mal", "mal_gamma": 2})
    assert s.hyperparameters == {"alpha": 1.0, "gamma": 2.0} and s.build().hyperparameters == s.hyperparameters
    assert s.to_args()["mal_gamma"] == 2.0 and s.to_args()["iabce_alpha"] == 0.25  # every default recorded
    assert "mal_alpha=1.0 mal_gamma=2.0" in s.describe()
    s = ClsLossSettings.from_args({"loss": "IABCE", "iabce_alpha": 0.5})
    assert s.loss == "iabce" and s.hyperparameters == {"alpha": 0.5, "gamma": 2.0}
    assert normalize_setting("iabce_alpha", 0) == 0.0 and normalize_setting("mal_alpha", 1) == 1.0
    for settings, error, message in [
        ({"loss": "mal", "mal_gamma": -1}, ValueError, r"Invalid mal_gamma=-1\.0: valid values are >= 0\.0"),
        (
            {"loss": "mal", "mal_alpha": 1.5},
            ValueError,
            r"Invalid mal_alpha=1\.5: valid values are between 0\.0 and 1\.0",
        ),
        (
            {"loss": "iabce", "iabce_alpha": 2},
            ValueError,
            r"Invalid iabce_alpha=2\.0: valid values are between 0\.0 and 1",
        ),
        ({"loss": "iabce", "iabce_gamma": -0.5}, ValueError, r"Invalid iabce_gamma=-0\.5: valid values are >= 0\.0"),
        ({"loss": "iabce", "iabce_gamma": None}, TypeError, r"iabce_gamma must be a real number, got None"),
        ({"loss": "vfl", "mal_gamma": 2.0}, ValueError, r"mal_gamma=2\.0 has no effect with loss='vfl'.*loss='mal'"),
        ({"loss": "mal", "iabce_alpha": 0.5}, ValueError, r"iabce_alpha=0\.5 has no effect with loss='mal'"),
    ]:
        with pytest.raises(error, match=message):
            ClsLossSettings.from_args(settings)
    with pytest.raises(ValueError, match=r"Invalid mal_gamma=-1\.0"):
        normalize_setting("mal_gamma", -1)
    with pytest.raises(ValueError, match=r"cls_warmup=2 has no effect with loss='bce'.*mal, iabce"):
        ClsLossSettings.from_args({"loss": "bce", "cls_warmup": 2})
    with pytest.raises(UnknownLossError, match=r"Valid losses: bce, focal, vfl, qfl, mal, iabce\."):
        ClsLossSettings.from_args({"loss": "mall"})


def test_cls_target_and_warmup_validation():
    """cls_target and cls_warmup errors name the value and the valid choices."""
    with pytest.raises(ValueError, match=r"Invalid cls_target='giou': valid values are 'tal', 'iou'"):
        ClsLossSettings.from_args({"loss": "vfl", "cls_target": "giou"})
    with pytest.raises(ValueError, match=r"Invalid cls_warmup=-1"):
        ClsLossSettings.from_args({"loss": "vfl", "cls_warmup": -1})
    with pytest.raises(TypeError, match="cls_warmup is a trainer setting"):
        VFLDetectionLoss(make_model(), loss="vfl", cls_warmup=2)


@pytest.mark.parametrize(
    "settings, error, message",
    [
        ({"loss": "vfl", "cls_warmup": False}, TypeError, r"cls_warmup must be an integer.*False \(bool\)"),
        ({"loss": "vfl", "cls_warmup": True}, TypeError, r"cls_warmup must be an integer.*True \(bool\)"),
        ({"loss": "vfl", "cls_warmup": None}, TypeError, r"cls_warmup must be an integer.*None"),
        ({"loss": "vfl", "cls_warmup": 2.0}, TypeError, r"cls_warmup must be an integer.*2\.0 \(float\)"),
        ({"loss": "vfl", "cls_target": ""}, ValueError, r"Invalid cls_target='': valid values are 'tal', 'iou'"),
        ({"loss": "vfl", "cls_target": None}, ValueError, r"Invalid cls_target=None: valid values are 'tal', 'iou'"),
        ({"loss": "vfl", "cls_fg_negatives": ""}, ValueError, r"Invalid cls_fg_negatives='': valid values are"),
        ({"loss": "vfl", "cls_fg_negatives": None}, ValueError, r"Invalid cls_fg_negatives=None"),
        ({"loss": None}, UnknownLossError, r"Unknown loss None\. Valid losses: bce, focal, vfl, qfl"),
        ({"loss": ""}, UnknownLossError, r"Unknown loss ''\. Valid losses"),
        ({"loss": "vfl", "vfl_alpha": None}, TypeError, r"vfl_alpha must be a real number, got None"),
        ({"loss": "vfl", "vfl_iou_weighted": None}, TypeError, r"vfl_iou_weighted must be True or False, got None"),
        ({"loss": "bce", "cls_warmup": 2}, ValueError, r"cls_warmup=2 has no effect with loss='bce'"),
    ],
)
def test_settings_types_are_strict(settings, error, message):
    """A bool is not an epoch count; empty / None values (``key=`` on the CLI) are errors; BCE warm-up with BCE too."""
    with pytest.raises(error, match=message):
        ClsLossSettings.from_args(settings)
    key = next(k for k in settings if k != "loss") if len(settings) > 1 else "loss"
    if settings.get("loss") != "bce":  # a single setting on its own is checked the same way
        with pytest.raises(error, match=message):
            normalize_setting(key, settings[key])


def test_single_settings_normalize_on_their_own():
    """normalize_setting checks one setting without the others (cls_warmup=3 alone is not 'warm-up with BCE')."""
    assert normalize_setting("cls_warmup", 3) == 3
    assert normalize_setting("cls_target", "iou") == "iou"
    assert normalize_setting("loss", "VFL") == "vfl"
    assert normalize_setting("vfl_gamma", 1) == 1.0
    assert ClsLossSettings.from_args({"loss": "bce", "cls_warmup": 0}).warmup == 0
    with pytest.raises(KeyError):
        normalize_setting("nope", 1)


def test_warmup_must_be_shorter_than_training():
    """cls_warmup >= epochs would train BCE the whole run under a loss=vfl label: refused, naming the valid range."""
    settings = ClsLossSettings.from_args({"loss": "vfl", "cls_warmup": 3})
    settings.check_epochs(4)
    with pytest.raises(ValueError, match=r"Invalid cls_warmup=3 for epochs=3 with loss='vfl': valid values are 0 to 2"):
        settings.check_epochs(3)
    ClsLossSettings.from_args({"loss": "vfl"}).check_epochs(1)


#: ATen ops that make the host wait for the device: reading a value (``.item()``, ``bool(t)``, ``if t.any():``) or
#: producing an output whose size depends on the data (``nonzero``, ``masked_select``, ``unique`` ...).
SYNC_OPS = frozenset(
    {
        "_local_scalar_dense",
        "item",
        "is_nonzero",
        "equal",
        "nonzero",
        "masked_select",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
        "bincount",
        "repeat_interleave",
    }
)
#: Indexing ops that sync when an index is a boolean mask (``x[mask]``, ``x[mask] = v``: a ``nonzero`` inside the
#: kernel, which the dispatch mode does not see on its own).
MASK_INDEX_OPS = frozenset({"index", "index_put", "index_put_", "_index_put_impl_"})


def _has_mask(indices) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


class SyncCounter(TorchDispatchMode):
    """Counts, by op name, the host syncs of everything run under it (forward and backward alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNC_OPS:
            self.counts[name] += 1
        elif name in MASK_INDEX_OPS and len(args) > 1 and _has_mask(args[1]):
            self.counts[f"{name}[bool mask]"] += 1
        return func(*args, **(kwargs or {}))


def _if_any(mask: torch.Tensor) -> None:
    if mask.any():  # the pattern of the issue: a Python branch on a tensor
        pass


def _write_through_mask(x: torch.Tensor, mask: torch.Tensor) -> None:
    x.detach().clone()[mask] = 0.0


@pytest.mark.parametrize(
    "sync",
    [
        lambda x, m: x.sum().item(),
        lambda x, m: bool(m.any()),
        lambda x, m: _if_any(m),
        lambda x, m: x[m].sum().backward(),
        lambda x, m: _write_through_mask(x, m),
        lambda x, m: x.detach().index_put((m,), torch.tensor(0.0)),
        lambda x, m: m.nonzero(),
        lambda x, m: torch.where(m),
        lambda x, m: x.detach().masked_select(m),
    ],
    ids=["item", "bool", "if-any", "mask-read", "mask-write", "index_put", "nonzero", "where-1-arg", "masked_select"],
)
def test_sync_counter_sees_every_kind_of_sync(sync):
    """The counter catches each way of syncing (value reads, bool(), boolean-mask reads and writes)."""
    x, mask = torch.arange(6.0, requires_grad=True), torch.tensor([True, False] * 3)
    with SyncCounter() as counter:
        sync(x, mask)
    assert sum(counter.counts.values()) >= 1


def test_sync_counter_ignores_dense_masked_ops():
    """torch.where, masked_fill, scatter and their backward over full tensors read nothing on the host."""
    x, mask = torch.arange(6.0, requires_grad=True), torch.tensor([True, False] * 3)
    with SyncCounter() as counter:
        y = torch.where(mask, x * 2, 0.0).masked_fill(~mask, 1.0)
        z = torch.zeros(6, 2).scatter(-1, mask.long().unsqueeze(-1), 1.0)
        (y.sum() + z.sum()).backward()
    assert not counter.counts, counter.counts


def make_obb_batch(empty: bool = False) -> dict[str, torch.Tensor]:
    """``make_batch`` with rotated boxes (xywh normalized, angle in radians)."""
    batch = make_batch(empty)
    angles = torch.linspace(0.0, 1.2, len(batch["bboxes"])).unsqueeze(-1)
    batch["bboxes"] = torch.cat([batch["bboxes"], angles], -1)
    return batch


def _leaves(preds):
    """The model's outputs as fresh leaf tensors, so that the backward stops at the criterion.

    The network's own forward and backward have no syncs to find, and cost seconds under a Python dispatch mode.
    """
    if isinstance(preds, torch.Tensor):
        return preds.detach().requires_grad_(preds.is_floating_point())
    if isinstance(preds, dict):
        return {k: _leaves(v) for k, v in preds.items()}
    return type(preds)(_leaves(v) for v in preds)


def count_syncs(crit, preds, batch) -> collections.Counter[str]:
    """Host syncs of one criterion forward + backward on fresh leaf copies of ``preds``."""
    preds = _leaves(preds)
    with SyncCounter() as counter:
        loss, _ = crit(preds, batch)
        loss.sum().backward()
    assert math.isfinite(float(loss.detach().sum()))
    return counter.counts


@functools.cache
def _sync_setup(kind: str, empty: bool):
    """``(model, batch, preds)`` shared by the sync-count cases: the network's forward runs once per batch."""
    model = make_model("yolov8n-obb.yaml", OBBModel) if kind == "obb" else make_model()
    batch = make_obb_batch(empty) if kind == "obb" else make_batch(empty)
    with torch.no_grad():
        preds = model(batch["img"])
    return model, batch, preds


@functools.cache
def stock_syncs(kind: str, empty: bool) -> collections.Counter[str]:
    """Host syncs of stock Ultralytics (its BCE, its box and DFL terms): the baseline our losses must not exceed."""
    model, batch, preds = _sync_setup(kind, empty)
    return count_syncs(model.init_criterion(), preds, batch)


SYNC_CASES = [
    *(
        ("detect", loss, target, fg_negatives, empty)
        for loss in ("bce", "focal", "vfl", "qfl", "mal", "iabce")
        for target in ("tal", "iou")
        for fg_negatives in ("loss", "bce")
        for empty in (False, True)
    ),
    *(
        ("obb", loss, "iou", fg_negatives, empty)
        for loss in ("vfl", "qfl")
        for fg_negatives in ("loss", "bce")
        for empty in (False, True)
    ),
]


@pytest.mark.parametrize(
    "kind, loss, target, fg_negatives, empty",
    SYNC_CASES,
    ids=[f"{k}-{loss}-{t}-fgneg_{f}-{'empty' if e else 'objects'}" for k, loss, t, f, e in SYNC_CASES],
)
def test_criterion_adds_no_host_sync_over_stock_bce(kind, loss, target, fg_negatives, empty):
    """Forward + backward of the criterion syncs exactly as often as stock BCE's, on every path, fg or not.

    Counted with a dispatch mode (``.item()``, ``bool(t)``, ``nonzero``, boolean-mask indexing ...), so a sync in any
    op, Python branch or backward kernel counts, wherever it comes from. OBB: the probiou target, two losses.
    """
    model, batch, preds = _sync_setup(kind, empty)
    crit = model.init_criterion()
    install_cls_loss(
        crit, ClsLossSettings.from_args({"loss": loss, "cls_target": target, "cls_fg_negatives": fg_negatives})
    )
    assert count_syncs(crit, preds, batch) == stock_syncs(kind, empty)


def test_targets_stay_float32_under_autocast():
    """Under AMP the loss gets the assigner's float32 target_scores, not the half-precision copy, and returns fp32."""
    model = make_model()
    crit, assigner, spy = spied_criterion(model, loss="vfl")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = crit(model(make_batch()["img"]), make_batch())
    x, q, _ = spy.seen
    assert x.dtype == torch.bfloat16  # the logits come in half precision ...
    assert q.dtype == torch.float32 and torch.equal(q, assigner.out[2])  # ... the targets do not
    assert torch.isfinite(out[0]).all()


def test_fg_negatives_bce_variant_weights():
    """cls_fg_negatives=bce: non-target classes of fg anchors get BCE(x, 0); target q*BCE; background a p^g BCE."""
    from yolo_vfl.criterion import ClsLossTap, _AssignerTap

    settings = ClsLossSettings.from_args({"loss": "vfl", "cls_fg_negatives": "bce"})
    tap = _AssignerTap(assigner=None)
    crit = ClsLossTap(settings.build(), tap, nc=3, fg_negatives=settings.fg_negatives)
    x = torch.tensor([[[1.0, -1.0, 2.0], [0.5, 0.0, -2.0]]], requires_grad=True)  # anchor 0 fg (class 2), 1 bg
    q = torch.tensor([[[0.0, 0.0, 0.8], [0.0, 0.0, 0.0]]])
    tap.last = (torch.tensor([[2, 2]]), torch.tensor([[True, False]]), None, None, q)
    loss = crit(x, q)
    xd, p = x.detach().double(), x.detach().double().sigmoid()
    bce0 = F.softplus(xd)  # BCE(x, 0)
    bce_q = F.softplus(xd) - q.double() * xd  # BCE(x, q)
    expected = torch.stack(
        [
            torch.stack([bce0[0, 0, 0], bce0[0, 0, 1], 0.8 * bce_q[0, 0, 2]]),  # fg anchor: full BCE for classes 0, 1
            0.75 * p[0, 1] ** 2 * bce0[0, 1],  # background anchor: VFL's alpha p^gamma
        ]
    ).unsqueeze(0)
    assert torch.allclose(loss.double(), expected, rtol=1e-5)
    loss.sum().backward()  # the variant keeps the graph
    assert torch.isfinite(x.grad).all()
    plain = ClsLossTap(settings.build(), tap, nc=3)  # default: VFL's weight on every negative
    tap.last = (torch.tensor([[2, 2]]), torch.tensor([[True, False]]), None, None, q)
    assert plain(x, q)[0, 0, 0] < loss[0, 0, 0]
    with pytest.raises(ValueError, match=r"Invalid cls_fg_negatives='full'"):
        ClsLossSettings.from_args({"loss": "vfl", "cls_fg_negatives": "full"})


def _items(items):
    """Loss items as one tensor (8.4 returns a dict of them)."""
    return torch.stack(list(items.values())) if isinstance(items, dict) else items


def _assigner_state(det):
    a = det.assigner.assigner
    return (a.topk, getattr(a, "topk2", a.topk), a.alpha, a.beta)


def test_tal_settings_reach_the_assigner_and_change_the_loss():
    """tal_topk / tal_alpha / tal_beta set the one-to-many assigner; the loss equals a stock criterion built so."""
    from ultralytics.utils.tal import TaskAlignedAssigner

    model, batch = make_model(), make_batch()
    preds = model(batch["img"])
    stock = v8DetectionLoss(model)
    default = stock.assigner.topk, stock.assigner.alpha, stock.assigner.beta
    patched = v8DetectionLoss(model)
    settings = ClsLossSettings.from_args({"loss": "bce", "tal_topk": 13, "tal_alpha": 1})
    install_cls_loss(patched, settings)
    assert _assigner_state(patched) == (13, 13, 1.0, default[2])
    assert settings.to_args()["tal_topk"] == 13 and "tal_beta" not in settings.to_args()
    assert settings.describe().endswith("tal_topk=13 tal_alpha=1.0")
    ref = v8DetectionLoss(model)
    ref.assigner = TaskAlignedAssigner(topk=13, num_classes=NC, alpha=1.0, beta=default[2])
    got, want, base = (_items(c(preds, batch)[1]) for c in (patched, ref, stock))
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, base)  # the settings do something
    plain = ClsLossSettings.from_args({"loss": "vfl"})
    assert not any(k.startswith("tal_") for k in plain.to_args())  # unset: the criterion's own values, not recorded
    install_cls_loss(crit := v8DetectionLoss(model), plain)
    assert _assigner_state(crit)[:1] + _assigner_state(crit)[2:] == default


def test_tal_settings_leave_the_one_to_one_branch_alone():
    """An end-to-end head's one2one branch keeps its own assignment (top-1); one2many gets the settings."""
    try:
        model = make_model("yolo26n.yaml")
    except (FileNotFoundError, KeyError, AttributeError) as e:  # YOLO26 configs exist in 8.4 only
        pytest.skip(f"yolo26n.yaml not available in this Ultralytics version: {e}")
    crit = model.init_criterion()
    if not hasattr(crit, "one2one"):
        pytest.skip(f"{type(crit).__name__} has no one2one branch in this Ultralytics version")
    o2o = crit.one2one.assigner
    before = (o2o.topk, getattr(o2o, "topk2", o2o.topk), o2o.alpha, o2o.beta)
    install_cls_loss(crit, ClsLossSettings.from_args({"loss": "vfl", "tal_topk": 13, "tal_beta": 4}))
    assert _assigner_state(crit.one2one) == before
    assert _assigner_state(crit.one2many)[0] == 13 and _assigner_state(crit.one2many)[3] == 4.0


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"tal_topk": 0}, ValueError, r"Invalid tal_topk=0: valid values are integers >= 1"),
        ({"tal_topk": True}, TypeError, r"tal_topk must be an integer >= 1.*True \(bool\)"),
        ({"tal_topk": 12.5}, TypeError, r"tal_topk must be an integer"),
        ({"tal_alpha": -1}, ValueError, r"Invalid tal_alpha=-1.0: valid values are >= 0.0"),
        ({"tal_beta": float("inf")}, ValueError, r"tal_beta must be finite, got inf"),
        ({"tal_alpha": None}, TypeError, r"tal_alpha must be a real number, got None"),
        ({"tal_beta": ""}, TypeError, r"tal_beta must be a real number"),
    ],
)
def test_tal_settings_validation(settings, error, message):
    """Bad assigner settings are refused with the value and the valid range, alone and within the settings."""
    with pytest.raises(error, match=message):
        ClsLossSettings.from_args({"loss": "vfl", **settings})
    key, value = next(iter(settings.items()))
    with pytest.raises(error, match=message):
        normalize_setting(key, value)


def _branch_items(crit, preds, batch) -> dict[str, torch.Tensor]:
    """Each branch's loss items (box, cls, dfl), computed by the branch's own loss on its own predictions."""
    out = {}
    for name in ("one2many", "one2one"):
        det = getattr(crit, name)
        items = (det.loss if hasattr(det, "loss") else det)(preds[name], batch)[1]  # 8.4: {name: item}
        out[name] = torch.stack(list(items.values())) if isinstance(items, dict) else items.detach().clone()
    return out


@pytest.mark.parametrize("cfg", ["yolo26n.yaml", "yolov10n.yaml"])
def test_cls_branches_change_exactly_the_branches_they_name(cfg):
    """cls_branches=both changes both branches' cls loss; one2one changes only one2one's (one2many stays stock BCE)."""
    try:
        model = make_model(cfg)
    except (FileNotFoundError, KeyError, AttributeError) as e:
        pytest.skip(f"{cfg} not available in this Ultralytics version: {e}")
    batch = make_batch()
    preds = model(batch["img"])
    results = {}
    for branches in (None, "both", "one2one"):
        crit = model.init_criterion()
        if branches is not None:
            n = install_cls_loss(crit, ClsLossSettings.from_args({"loss": "vfl", "cls_branches": branches}))
            assert n == (2 if branches == "both" else 1)
        results[branches] = _branch_items(crit, preds, batch)
    stock, both, o2o = results[None], results["both"], results["one2one"]
    for name in ("one2many", "one2one"):  # box and DFL never change
        torch.testing.assert_close(both[name][[0, 2]], stock[name][[0, 2]])
        torch.testing.assert_close(o2o[name][[0, 2]], stock[name][[0, 2]])
    assert not torch.allclose(both["one2many"][1], stock["one2many"][1])
    assert not torch.allclose(both["one2one"][1], stock["one2one"][1])
    torch.testing.assert_close(o2o["one2many"], stock["one2many"])  # untouched: stock BCE
    torch.testing.assert_close(o2o["one2one"][1], both["one2one"][1])  # the same VFL as with both


def test_cls_branches_one2one_is_refused_on_a_head_without_it():
    """cls_branches=one2one on yolov8n (no one-to-one branch) is an InvalidSettingError naming the valid value."""
    from yolo_vfl.criterion import check_branches
    from yolo_vfl.errors import InvalidSettingError

    settings = ClsLossSettings.from_args({"loss": "vfl", "cls_branches": "one2one"})
    model = make_model()
    with pytest.raises(InvalidSettingError, match=r"cls_branches='one2one'.*no one-to-one branch.*valid here: 'both'"):
        check_branches(settings, model)
    with pytest.raises(InvalidSettingError, match=r"no one-to-one branch"):
        install_cls_loss(model.init_criterion(), settings)
    with pytest.raises(InvalidSettingError, match=r"Invalid cls_branches='o2o': valid values are 'both', 'one2one'"):
        ClsLossSettings.from_args({"loss": "vfl", "cls_branches": "o2o"})
    assert settings.to_args()["cls_branches"] == "one2one" and "cls_branches=one2one" in settings.describe()
