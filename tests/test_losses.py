"""The loss library: hand-derived values, degenerate cases, the YOLOv5 QFL table, fused == autograd, numerics, errors.

Expected numbers are computed in this file with ``math`` from the published formulas (notation of
``yolo_vfl.losses``: ``x`` logit, ``p = sigmoid(x)``, ``q`` target, ``BCE(p, q) = -(q ln p + (1 - q) ln(1 - p))``),
or with torch's own ``binary_cross_entropy_with_logits`` / torchvision's focal loss: never with the helpers of the
code under test.
"""

from __future__ import annotations

import ast
import inspect
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import yolo_vfl.losses as losses_module
from yolo_vfl.losses import (
    ClsLoss,
    UnknownLossError,
    binary_cross_entropy,
    get_cls_loss,
    get_loss_spec,
    iou_aware_bce_loss,
    list_losses,
    matchability_aware_loss,
    quality_focal_loss,
    sigmoid_focal_loss,
    varifocal_loss,
)

FUNCTIONS = {
    "bce": binary_cross_entropy,
    "focal": sigmoid_focal_loss,
    "vfl": varifocal_loss,
    "qfl": quality_focal_loss,
    "mal": matchability_aware_loss,
    "iabce": iou_aware_bce_loss,
}
WITH_IMPL = ("vfl", "qfl", "mal", "iabce")
HAND_DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}
PS = (0.2, 0.5, 0.9)  # probabilities with readable logits


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def bce(p: float, q: float) -> float:
    """BCE(p, q) by hand; 0 * log(0) counts as 0."""
    return -((q * math.log(p) if q else 0.0) + ((1 - q) * math.log(1 - p) if q != 1 else 0.0))


def t(values, dtype=torch.float32, grad=False) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, requires_grad=grad)


def call(name: str, x, q, impl: str = "fused", **hp):
    """Call loss ``name`` with an impl where it has one (bce and focal have a single implementation)."""
    if name in WITH_IMPL:
        hp["impl"] = impl
    return FUNCTIONS[name](x, q, **hp)


def grad_of(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(loss.sum(), x)
    return g


def random_inputs(shape=(3, 40, 6), dtype=torch.float64, seed=0, pos_frac=0.3, scale=3.0):
    """Logits ~ N(0, scale) and targets that are 0 except for ``pos_frac`` positives with q in (0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=dtype) * scale).requires_grad_()
    pos = torch.rand(shape, generator=g) < pos_frac
    q = torch.where(pos, 1 - torch.rand(shape, generator=g, dtype=dtype), torch.zeros((), dtype=dtype))
    return x, q


# ----------------------------------------------------------------------------------------------------------------------
# Values derived by hand from the published formulas


@pytest.mark.parametrize("dtype", HAND_DTYPES)
def test_bce_hand_values(dtype):
    """BCE(x, q) = -(q ln p + (1 - q) ln(1 - p)) for hard and soft targets."""
    cases = [(p, q) for p in PS for q in (0.0, 0.3, 1.0)]
    out = binary_cross_entropy(t([logit(p) for p, _ in cases], dtype), t([q for _, q in cases], dtype))
    assert out.dtype == dtype
    # e.g. p = 0.2, q = 0.3: -(0.3 ln 0.2 + 0.7 ln 0.8) = 0.63903...
    torch.testing.assert_close(out, t([bce(p, q) for p, q in cases], dtype), **TOL[dtype])


@pytest.mark.parametrize("dtype", HAND_DTYPES)
@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 2.0), (0.5, 1.5), (0.25, 0.0)])
def test_focal_hand_values(dtype, alpha, gamma):
    """Focal = alpha_t (1 - p_t)^gamma BCE with p_t, alpha_t interpolated in q (torchvision); alpha < 0 disables it."""
    cases = [(p, q) for p in PS for q in (0.0, 0.3, 1.0)]
    expected = []
    for p, q in cases:
        p_t = p * q + (1 - p) * (1 - q)  # q = 1: p; q = 0: 1 - p
        a_t = alpha * q + (1 - alpha) * (1 - q) if alpha >= 0 else 1.0
        expected.append(a_t * (1 - p_t) ** gamma * bce(p, q))
    # e.g. p = 0.9, q = 0, alpha 0.25, gamma 2: 0.75 * 0.9^2 * -ln(0.1) = 1.39886...
    out = sigmoid_focal_loss(
        t([logit(p) for p, _ in cases], dtype), t([q for _, q in cases], dtype), alpha=alpha, gamma=gamma
    )
    torch.testing.assert_close(out, t(expected, dtype), **TOL[dtype])


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.0)])
def test_focal_matches_torchvision(alpha, gamma):
    """sigmoid_focal_loss equals torchvision.ops.sigmoid_focal_loss (value and gradient), soft targets included."""
    tv = pytest.importorskip("torchvision.ops")
    x, q = random_inputs(dtype=torch.float64, pos_frac=0.5)
    ours = sigmoid_focal_loss(x, q, alpha=alpha, gamma=gamma)
    ref = tv.sigmoid_focal_loss(x, q, alpha=alpha, gamma=gamma, reduction="none")
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(grad_of(ours, x), grad_of(ref, x))


@pytest.mark.parametrize("impl", ["fused", "autograd"])
@pytest.mark.parametrize("dtype", HAND_DTYPES)
@pytest.mark.parametrize("iou_weighted", [True, False])
def test_vfl_hand_values(impl, dtype, iou_weighted):
    """VFL: positives q BCE(p, q) (or 1 BCE with iou_weighted=False), negatives alpha p^gamma BCE(p, 0)."""
    alpha, gamma = 0.75, 2.0
    w = (lambda q: q) if iou_weighted else (lambda q: 1.0)
    # positives from q > 0 (labels=None): e.g. p = 0.9, q = 0.7: 0.7 * -(0.7 ln 0.9 + 0.3 ln 0.1) = 0.53518...
    # negatives: e.g. p = 0.2: 0.75 * 0.2^2 * -ln(0.8) = 0.0066943...
    cases = [(p, q) for p in PS for q in (0.0, 0.7, 1.0)]
    expected = [w(q) * bce(p, q) if q > 0 else alpha * p**gamma * bce(p, 0.0) for p, q in cases]
    x, q = t([logit(p) for p, _ in cases], dtype), t([q for _, q in cases], dtype)
    out = varifocal_loss(x, q, iou_weighted=iou_weighted, impl=impl)
    torch.testing.assert_close(out, t(expected, dtype), **TOL[dtype])


@pytest.mark.parametrize("impl", ["fused", "autograd"])
@pytest.mark.parametrize("dtype", HAND_DTYPES)
def test_vfl_explicit_labels_and_hyperparameters(impl, dtype):
    """With labels, a positive with q == 0 gets weight q = 0 (not alpha p^gamma); non-default alpha, gamma apply."""
    alpha, gamma, p = 0.5, 1.5, 0.9
    x = t([logit(p)] * 4, dtype)
    q = t([0.0, 0.0, 0.6, 0.4], dtype)
    labels = torch.tensor([1, 0, 1, 0])  # 0/1 ints are accepted as well as bool
    expected = [
        0.0 * bce(p, 0.0),  # positive, q = 0: weight q = 0
        alpha * p**gamma * bce(p, 0.0),  # negative: 0.5 * 0.9^1.5 * -ln(0.1) = 0.98302...
        0.6 * bce(p, 0.6),  # positive: q BCE(p, q)
        alpha * p**gamma * bce(p, 0.4),  # a negative label with q > 0: alpha p^gamma BCE(x, q), as documented
    ]
    out = varifocal_loss(x, q, labels, alpha=alpha, gamma=gamma, impl=impl)
    torch.testing.assert_close(out, t(expected, dtype), **TOL[dtype])
    out = varifocal_loss(x, q, labels.bool(), alpha=alpha, gamma=gamma, iou_weighted=False, impl=impl)
    expected[0], expected[2] = bce(p, 0.0), bce(p, 0.6)  # iou_weighted=False: positives weighted by 1
    torch.testing.assert_close(out, t(expected, dtype), **TOL[dtype])


@pytest.mark.parametrize("impl", ["fused", "autograd"])
@pytest.mark.parametrize("dtype", HAND_DTYPES)
@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("beta", [2.0, 1.5])
def test_qfl_hand_values(impl, dtype, alpha, beta):
    """QFL = |q - p|^beta BCE(p, q), times q alpha + (1 - q)(1 - alpha) when alpha is set (YOLOv5)."""
    cases = [(p, q) for p in PS for q in (0.0, 0.4, 1.0)]
    expected = []
    for p, q in cases:
        c = 1.0 if alpha is None else q * alpha + (1 - q) * (1 - alpha)
        expected.append(c * abs(q - p) ** beta * bce(p, q))
    # e.g. p = 0.9, q = 0.4, beta 2, no alpha: 0.25 * -(0.4 ln 0.9 + 0.6 ln 0.1) = 0.35593...
    x, q = t([logit(p) for p, _ in cases], dtype), t([q for _, q in cases], dtype)
    out = quality_focal_loss(x, q, beta=beta, alpha=alpha, impl=impl)
    torch.testing.assert_close(out, t(expected, dtype), **TOL[dtype])


@pytest.mark.parametrize("impl", ["fused", "autograd"])
@pytest.mark.parametrize("dtype", HAND_DTYPES)
@pytest.mark.parametrize("alpha, gamma", [(1.0, 1.5), (0.75, 2.0), (0.5, 0.5)])
def test_mal_hand_values(impl, dtype, alpha, gamma):
    """MAL (DEIM): positives BCE(p, q^gamma) at weight 1, negatives alpha p^gamma BCE(p, 0).

    Defaults (alpha 1, gamma 1.5), e.g. p = 0.2, q = 0.6: target 0.6^1.5 = 0.46476, loss
    -(0.46476 ln 0.2 + 0.53524 ln 0.8) = 0.74800 + 0.11944 = 0.86743; negative p = 0.9: 0.9^1.5 * -ln(0.1) = 1.96598.
    """
    cases = [(p, q) for p in PS for q in (0.0, 0.6, 1.0)]
    expected = [bce(p, q**gamma) if q > 0 else alpha * p**gamma * bce(p, 0.0) for p, q in cases]
    x, q = t([logit(p) for p, _ in cases], dtype), t([q for _, q in cases], dtype)
    out = matchability_aware_loss(x, q, alpha=alpha, gamma=gamma, impl=impl)
    torch.testing.assert_close(out, t(expected, dtype), **TOL[dtype])
    if (alpha, gamma) == (1.0, 1.5):
        torch.testing.assert_close(out[1], t(0.8674349481412401, dtype), **TOL[dtype])  # p = 0.2, q = 0.6 above
        torch.testing.assert_close(out[6], t(1.9659816180571865, dtype), **TOL[dtype])  # p = 0.9, q = 0 above


@pytest.mark.parametrize("impl", ["fused", "autograd"])
@pytest.mark.parametrize("dtype", HAND_DTYPES)
def test_mal_explicit_labels_and_detached_weight(impl, dtype):
    """With labels a positive with q == 0 gets BCE(p, 0) at weight 1; a negative with q > 0 keeps target 0.

    The negative weight is detached (DEIM's ``pred_score = sigmoid(logits).detach()``), so its gradient is
    alpha p^gamma * dBCE(x, 0)/dx = alpha p^gamma p: 0.9^1.5 * 0.9 = 0.9^2.5 = 0.76843 at p = 0.9, alpha 1, gamma 1.5;
    a positive's is p - q^gamma: 0.2 - 0.6^1.5 = -0.26476.
    """
    alpha, gamma = 1.0, 1.5
    x = t([logit(0.9), logit(0.9), logit(0.2), logit(0.9)], dtype, grad=True)
    q = t([0.0, 0.4, 0.6, 0.0], dtype)
    labels = torch.tensor([1, 0, 1, 0])
    expected = [
        bce(0.9, 0.0),
        alpha * 0.9**gamma * bce(0.9, 0.0),
        bce(0.2, 0.6**gamma),
        alpha * 0.9**gamma * bce(0.9, 0.0),
    ]
    out = matchability_aware_loss(x, q, labels, alpha=alpha, gamma=gamma, impl=impl)
    torch.testing.assert_close(out, t(expected, dtype), **TOL[dtype])
    expected_grad = [0.9 - 0.0, 0.9**2.5, 0.2 - 0.6**1.5, 0.9**2.5]
    torch.testing.assert_close(grad_of(out, x), t(expected_grad, dtype), **TOL[dtype])
    torch.testing.assert_close(expected_grad[1], 0.7684334714209159, rtol=1e-12, atol=0)


def iabce_target(p: float, q: float, alpha: float) -> float:
    """RF-DETR's positive target by hand: max(p^alpha q^(1 - alpha), 0.01) (0^0 = 1)."""
    return max(p**alpha * (q ** (1 - alpha) if alpha < 1 else 1.0), 0.01)


@pytest.mark.parametrize("impl", ["fused", "autograd"])
@pytest.mark.parametrize("dtype", HAND_DTYPES)
@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.5, 1.5), (0.0, 2.0), (1.0, 0.5)])
def test_iabce_hand_values(impl, dtype, alpha, gamma):
    """IA-BCE (LW-DETR / RF-DETR): positives BCE(p, t), t = max(p^alpha q^(1-alpha), 0.01); negatives p^gamma BCE(p, 0).

    Defaults (alpha 0.25, gamma 2), e.g. p = 0.2, q = 0.6: t = 0.2^0.25 * 0.6^0.75 = 0.66874 * 0.68173 = 0.45590,
    loss -(0.45590 ln 0.2 + 0.54410 ln 0.8) = 0.73374 + 0.12141 = 0.85516; negative p = 0.9: 0.81 * -ln(0.1) = 1.86509.
    """
    cases = [(p, q) for p in PS for q in (0.0, 0.6, 1.0)]
    expected = [bce(p, iabce_target(p, q, alpha)) if q > 0 else p**gamma * bce(p, 0.0) for p, q in cases]
    x, q = t([logit(p) for p, _ in cases], dtype), t([q for _, q in cases], dtype)
    out = iou_aware_bce_loss(x, q, alpha=alpha, gamma=gamma, impl=impl)
    torch.testing.assert_close(out, t(expected, dtype), **TOL[dtype])
    if (alpha, gamma) == (0.25, 2.0):
        torch.testing.assert_close(out[1], t(0.8551571071520907, dtype), **TOL[dtype])  # p = 0.2, q = 0.6 above
        torch.testing.assert_close(out[6], t(1.8650939253251773, dtype), **TOL[dtype])  # p = 0.9, q = 0 above


@pytest.mark.parametrize("impl", ["fused", "autograd"])
@pytest.mark.parametrize("dtype", HAND_DTYPES)
def test_iabce_explicit_labels_floor_and_gradient(impl, dtype):
    """With labels a positive with q == 0 gets the floor target 0.01; a negative with q > 0 keeps target 0.

    Gradients: a positive's is p - t (t from a detached p, as RF-DETR's ``.detach()``): at p = 0.2, q = 0.6,
    0.2 - 0.45590 = -0.25590; at p = 0.9, q = 0: 0.9 - 0.01 = 0.89. A negative's weight p^2 is not detached:
    d/dx p^2 BCE(x, 0) = p^2 (2 (1 - p) BCE(x, 0) + p) = 0.81 (0.2 ln 10 + 0.9) = 1.10202 at p = 0.9.
    """
    alpha, gamma = 0.25, 2.0
    x = t([logit(0.9), logit(0.9), logit(0.2)], dtype, grad=True)
    q = t([0.0, 0.4, 0.6], dtype)
    labels = torch.tensor([True, False, True])
    t_pos = iabce_target(0.2, 0.6, alpha)
    expected = [bce(0.9, 0.01), 0.81 * bce(0.9, 0.0), bce(0.2, t_pos)]
    out = iou_aware_bce_loss(x, q, labels, alpha=alpha, gamma=gamma, impl=impl)
    torch.testing.assert_close(out, t(expected, dtype), **TOL[dtype])
    expected_grad = [0.9 - 0.01, 0.81 * (2 * 0.1 * bce(0.9, 0.0) + 0.9), 0.2 - t_pos]
    torch.testing.assert_close(grad_of(out, x), t(expected_grad, dtype), **TOL[dtype])
    torch.testing.assert_close(expected_grad[1], 1.1020187850650356, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------------------------------------------
# Degenerate cases reduce to BCE, in value and gradient


DEGENERATE = [
    ("qfl", {"beta": 0.0}, False),  # |q - p|^0 = 1
    ("vfl", {"gamma": 0.0, "alpha": 1.0, "iou_weighted": False}, True),  # weight 1 everywhere (binary targets)
    ("focal", {"gamma": 0.0, "alpha": -1.0}, False),  # (1 - p_t)^0 = 1, no alpha_t
    ("mal", {"gamma": 0.0, "alpha": 1.0}, True),  # target q^0 = 1 on positives, weight p^0 = 1 (binary targets)
]


@pytest.mark.parametrize("impl", ["fused", "autograd"])
@pytest.mark.parametrize("dtype", HAND_DTYPES)
@pytest.mark.parametrize("name, hp, binary", DEGENERATE, ids=[d[0] for d in DEGENERATE])
def test_degenerate_cases_equal_bce(name, hp, binary, dtype, impl):
    """QFL beta=0, VFL gamma=0 alpha=1 iou_weighted=False (binary q), focal gamma=0 alpha<0 equal BCE and its grad."""
    x, q = random_inputs(dtype=dtype, pos_frac=0.5)
    if binary:
        q = (q > 0).to(dtype)
    x = torch.cat([x.detach().flatten(), t([-100.0, 100.0, -30.0, 30.0], dtype)]).requires_grad_()
    q = torch.cat([q.flatten(), t([0.0, 1.0, 1.0, 0.0], dtype)])
    ours = call(name, x, q, impl, **hp)
    ref = F.binary_cross_entropy_with_logits(x, q, reduction="none")
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(grad_of(ours, x), grad_of(ref, x))


@pytest.mark.parametrize("impl", ["fused", "autograd"])
@pytest.mark.parametrize("dtype", HAND_DTYPES)
def test_degenerate_soft_targets(dtype, impl):
    """MAL gamma=1 alpha=0 is BCE(x, q) on positives and 0 on negatives; IA-BCE alpha=0 gamma=0 is BCE(x, max(q, 0.01)).

    Neither loss is plain BCE with the soft target q: MAL's gamma=0 makes the target q^0 = 1 (hard), and with gamma=1
    its negatives keep the weight alpha p; IA-BCE floors the positive target at 0.01.
    """
    x, q = random_inputs(dtype=dtype, pos_frac=0.5)
    x = torch.cat([x.detach().flatten(), t([-100.0, 100.0, -30.0, 30.0], dtype)]).requires_grad_()
    q = torch.cat([q.flatten(), t([0.0, 1.0, 1.0, 0.003], dtype)])
    pos = q > 0
    bce_q = F.binary_cross_entropy_with_logits(x, q, reduction="none")
    for ours, ref in (
        (matchability_aware_loss(x, q, gamma=1.0, alpha=0.0, impl=impl), torch.where(pos, bce_q, 0.0)),
        (
            iou_aware_bce_loss(x, q, alpha=0.0, gamma=0.0, impl=impl),
            F.binary_cross_entropy_with_logits(x, torch.where(pos, q.clamp(min=0.01), 0.0), reduction="none"),
        ),
    ):
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(grad_of(ours, x), grad_of(ref, x))


# ----------------------------------------------------------------------------------------------------------------------
# YOLOv5 pull request #1482 (seed 003): QFocalLoss (alpha 0.25, gamma 1.5) and FocalLoss tables

# Two tables from the pull request: the first post, and the final one (row 3 changed to q = 0.5 at p = 0.5).
SEED_TABLES = {
    "first": dict(
        targets=[[0.6225, 0.0, 0.0], [0.9, 0.0, 0.0], [1.0, 0.0, 0.0]],
        pred_prob=[[0.6225, 0.2689, 0.1192], [0.7773, 0.5000, 0.2227], [0.8176, 0.8808, 0.1978]],
        focal=[[0.0937, 0.0328, 0.0039], [0.0166, 0.1838, 0.0199], [0.0039, 1.3186, 0.0145]],
        qfocal=[
            [7.5373e-08, 3.2768e-02, 3.9179e-03],
            [4.8601e-03, 1.8380e-01, 1.9857e-02],
            [3.9233e-03, 1.3186, 1.4545e-02],
        ],
        logits=[[0.5, -1.0, -2.0], [1.25, 0.0, -1.25], [1.5, 2.0, -1.4]],
    ),
    "final": dict(
        targets=[[0.6225, 0.0, 0.0], [0.9, 0.0, 0.0], [0.5, 1.0, 0.0]],
        pred_prob=[[0.6225, 0.2689, 0.1192], [0.7773, 0.5000, 0.2227], [0.5000, 0.8808, 0.1978]],
        bce=[[0.6628, 0.3133, 0.1269], [0.3769, 0.6931, 0.2519], [0.6931, 0.1269, 0.2204]],
        focal=[[0.0937, 0.0328, 0.0039], [0.0166, 0.1838, 0.0199], [0.1225, 0.0013, 0.0145]],
        qfocal=[
            [7.5373e-08, 3.2768e-02, 3.9179e-03],
            [4.8601e-03, 1.8380e-01, 1.9857e-02],
            [0.0, 1.3060e-03, 1.4545e-02],
        ],
        logits=[[0.5, -1.0, -2.0], [1.25, 0.0, -1.25], [0.0, 2.0, -1.4]],
    ),
}


def _seed_losses(x: torch.Tensor, q: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "qfocal": quality_focal_loss(x, q, alpha=0.25, beta=1.5),
        "focal": sigmoid_focal_loss(x, q, alpha=0.25, gamma=1.5),  # YOLOv5 FocalLoss defaults
        "bce": binary_cross_entropy(x, q),
    }


@pytest.mark.parametrize("table", SEED_TABLES)
def test_seed_003_table_from_pred_prob(table):
    """The PR #1482 tables are reproduced from logits = logit(pred_prob), to the 4 decimals printed."""
    tab = SEED_TABLES[table]
    p = torch.tensor(tab["pred_prob"], dtype=torch.float64)
    x = torch.log(p / (1 - p))
    out = _seed_losses(x, torch.tensor(tab["targets"], dtype=torch.float64))
    for key in ("qfocal", "focal", "bce"):
        if key in tab:
            # half a unit of the 4th decimal for the printing, plus as much for pred_prob itself being rounded
            torch.testing.assert_close(out[key], torch.tensor(tab[key], dtype=torch.float64), rtol=0, atol=1e-4)


@pytest.mark.parametrize("table", SEED_TABLES)
def test_seed_003_table_exact_logits(table):
    """From the logits the PR used (sigmoid rounds to pred_prob) each QFL entry matches to 5 digits, 7.5373e-08 too."""
    tab = SEED_TABLES[table]
    x = torch.tensor(tab["logits"])  # float32, as in YOLOv5
    torch.testing.assert_close(x.sigmoid(), torch.tensor(tab["pred_prob"]), rtol=0, atol=5e-5)
    out = _seed_losses(x, torch.tensor(tab["targets"]))
    expected = torch.tensor(tab["qfocal"])
    # Printed with 5 significant digits. Entry [0, 0] is |0.6225 - sigmoid(0.5)|^1.5 with |d| = 4.1e-5 computed in
    # float32 (ulp 6e-8 near 0.62): its relative rounding error is up to 1.5 * 3e-8 / 4.1e-5 = 1.1e-3.
    rtol = torch.full_like(expected, 1e-4)
    rtol[0, 0] = 2e-3
    assert ((out["qfocal"] - expected).abs() <= rtol * expected.abs() + 1e-7).all(), out["qfocal"]
    torch.testing.assert_close(out["focal"], torch.tensor(tab["focal"]), rtol=0, atol=5e-5)


# ----------------------------------------------------------------------------------------------------------------------
# Properties of the losses


@pytest.mark.parametrize("impl", ["fused", "autograd"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("q", [0.1, 0.37, 0.5, 0.8])
def test_qfl_minimum_at_p_equals_q(q, beta, impl):
    """Over p, QFL(p, q) is minimal at p = q: the scan's argmin is q, the gradient is < 0 below q and > 0 above."""
    p = torch.linspace(0.001, 0.999, 9981, dtype=torch.float64)  # step 1e-4
    x = torch.log(p / (1 - p)).requires_grad_()
    loss = quality_focal_loss(x, torch.full_like(p, q), beta=beta, impl=impl)
    assert abs(p[loss.argmin()].item() - q) <= 1e-4
    g = grad_of(loss, x)
    assert (g[p < q - 1e-3] < 0).all() and (g[p > q + 1e-3] > 0).all()


@pytest.mark.parametrize("impl", ["fused", "autograd"])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("dtype", HAND_DTYPES)
def test_vfl_easy_negative_costs_nothing(impl, gamma, dtype):
    """A negative with p -> 0 (logit -100) gets VFL ~0 and a finite, ~0 gradient."""
    x = t([-100.0, -1e4], dtype, grad=True)
    loss = varifocal_loss(x, torch.zeros_like(x), gamma=gamma, impl=impl)
    assert (loss.abs() < 1e-30).all()  # 0.75 * p^gamma * BCE(p, 0) with p = e^-100 = 3.7e-44
    g = grad_of(loss, x)
    assert torch.isfinite(g).all() and (g.abs() < 1e-30).all()


HP_GRID = [0.0, 0.5, 1.0, 1.5, 2.0]


@pytest.mark.parametrize("dtype", HAND_DTYPES)
@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize("iou_weighted", [True, False])
@pytest.mark.parametrize("gamma", HP_GRID)
def test_vfl_fused_equals_autograd(gamma, iou_weighted, with_labels, dtype):
    """Fused VFL equals the autograd formula in value and gradient over gamma, alpha, iou_weighted and labels."""
    x, q = random_inputs(dtype=dtype, seed=int(10 * gamma))
    labels = (torch.rand(q.shape, generator=torch.Generator().manual_seed(1)) < 0.3) if with_labels else None
    for alpha in (0.75, 0.25, 1.0):
        hp = dict(alpha=alpha, gamma=gamma, iou_weighted=iou_weighted)
        fused = varifocal_loss(x, q, labels, **hp)
        ref = varifocal_loss(x, q, labels, impl="autograd", **hp)
        torch.testing.assert_close(fused, ref)
        torch.testing.assert_close(grad_of(fused, x), grad_of(ref, x))


@pytest.mark.parametrize("dtype", HAND_DTYPES)
@pytest.mark.parametrize("alpha", [None, 0.25, 1.0])
@pytest.mark.parametrize("beta", HP_GRID + [3.0])
def test_qfl_fused_equals_autograd(beta, alpha, dtype):
    """Fused QFL equals the autograd formula in value and gradient over beta and alpha (None, YOLOv5's 0.25, 1)."""
    x, q = random_inputs(dtype=dtype, seed=int(10 * beta), pos_frac=0.5)
    fused = quality_focal_loss(x, q, beta=beta, alpha=alpha)
    ref = quality_focal_loss(x, q, beta=beta, alpha=alpha, impl="autograd")
    torch.testing.assert_close(fused, ref)
    torch.testing.assert_close(grad_of(fused, x), grad_of(ref, x))


@pytest.mark.parametrize("dtype", HAND_DTYPES)
@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize("gamma", HP_GRID)
@pytest.mark.parametrize("name", ["mal", "iabce"])
def test_mal_iabce_fused_equals_autograd(name, gamma, with_labels, dtype):
    """Fused MAL and IA-BCE equal their autograd formulas in value and gradient over alpha, gamma and labels."""
    x, q = random_inputs(dtype=dtype, seed=int(10 * gamma))
    labels = (torch.rand(q.shape, generator=torch.Generator().manual_seed(1)) < 0.3) if with_labels else None
    for alpha in (0.0, 0.25, 0.75, 1.0):
        hp = dict(alpha=alpha, gamma=gamma)
        fused = FUNCTIONS[name](x, q, labels, **hp)
        ref = FUNCTIONS[name](x, q, labels, impl="autograd", **hp)
        torch.testing.assert_close(fused, ref)
        torch.testing.assert_close(grad_of(fused, x), grad_of(ref, x))


@pytest.mark.parametrize("name", ["vfl", "qfl", "mal", "iabce"])
def test_targets_requiring_grad_use_autograd(name):
    """When targets require grad the loss differentiates w.r.t. them too (autograd path), with the same x-gradient."""
    x, q = random_inputs()
    q.requires_grad_()
    loss = call(name, x, q)
    loss.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    gx, gq = x.grad.clone(), q.grad.clone()
    x.grad = q.grad = None
    call(name, x, q, impl="autograd").sum().backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gq, q.grad)
    torch.testing.assert_close(gx, grad_of(call(name, x, q.detach()), x))  # == the fused gradient


def _away_from_cusp(seed: int):
    """Float64 logits and targets with |p - q| >= 0.2 (QFL is not differentiable at p == q for beta < 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64) * 2
    p = x.sigmoid()
    off = 0.2 + 0.2 * torch.rand(4, 5, generator=g, dtype=torch.float64)
    q = torch.where(p > 0.5, p - off, p + off)
    q[0] = 0.0  # some negatives
    return x.requires_grad_(), q


@pytest.mark.parametrize("hp", [dict(gamma=2.0), dict(gamma=0.5, alpha=0.3), dict(gamma=1.5, iou_weighted=False)])
def test_gradcheck_fused_vfl(hp):
    """torch.autograd.gradcheck passes for the fused VFL in float64."""
    x, q = _away_from_cusp(0)
    assert torch.autograd.gradcheck(lambda x: varifocal_loss(x, q, **hp), (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("hp", [dict(beta=2.0), dict(beta=0.5), dict(beta=1.0), dict(beta=1.5, alpha=0.25)])
def test_gradcheck_fused_qfl(hp):
    """torch.autograd.gradcheck passes for the fused QFL in float64, away from p == q."""
    x, q = _away_from_cusp(1)
    assert torch.autograd.gradcheck(lambda x: quality_focal_loss(x, q, **hp), (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


GRADCHECK_DETACHED = [
    # The references detach part of each formula (MAL: the negative weight p^gamma; IA-BCE: the positive target
    # p^alpha q^(1-alpha)), which finite differences do not: gradcheck holds where the detached part is constant in x.
    ("mal", "all", dict(gamma=1.5)),  # positives only: weight 1, target q^gamma
    ("mal", "all", dict(gamma=0.5, alpha=0.3)),
    ("mal", "mixed", dict(gamma=0.0, alpha=0.4)),  # negative weight alpha p^0 = alpha
    ("iabce", "none", dict()),  # negatives only: p^gamma BCE(x, 0), not detached
    ("iabce", "none", dict(gamma=0.5)),
    ("iabce", "mixed", dict(alpha=0.0, gamma=2.0)),  # target max(q, 0.01)
    ("iabce", "mixed", dict(alpha=0.0, gamma=1.5)),
]


@pytest.mark.parametrize(
    "name, positives, hp", GRADCHECK_DETACHED, ids=[f"{g[0]}-{g[1]}-{g[2]}" for g in GRADCHECK_DETACHED]
)
def test_gradcheck_fused_mal_iabce(name, positives, hp):
    """torch.autograd.gradcheck passes for the fused MAL and IA-BCE in float64 wherever their detached part is fixed."""
    x, q = _away_from_cusp(2)
    q = q.clamp(min=0.05)  # q > 0 everywhere: positives are chosen by labels
    g = torch.Generator().manual_seed(3)
    labels = {
        "all": torch.ones(q.shape, dtype=torch.bool),
        "none": torch.zeros(q.shape, dtype=torch.bool),
        "mixed": torch.rand(q.shape, generator=g) < 0.5,
    }[positives]
    fn = FUNCTIONS[name]
    assert torch.autograd.gradcheck(lambda x: fn(x, q, labels, **hp), (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


# ----------------------------------------------------------------------------------------------------------------------
# Numerics: extreme logits, low precision, autocast, empty tensors, reductions

ALL_IMPLS = [
    ("bce", "fused"),
    ("focal", "fused"),
    ("vfl", "fused"),
    ("vfl", "autograd"),
    ("qfl", "fused"),
    ("qfl", "autograd"),
    ("mal", "fused"),
    ("mal", "autograd"),
    ("iabce", "fused"),
    ("iabce", "autograd"),
]
SMALL_EXPONENT = {
    "focal": {"gamma": 0.5},
    "vfl": {"gamma": 0.5},
    "qfl": {"beta": 0.5},
    "bce": {},
    "mal": {"gamma": 0.5},
    "iabce": {"gamma": 0.5, "alpha": 0.5},
}


@pytest.mark.parametrize("small_exponent", [False, True])
@pytest.mark.parametrize("dtype", HAND_DTYPES)
@pytest.mark.parametrize("name, impl", ALL_IMPLS)
def test_extreme_logits_finite(name, impl, dtype, small_exponent):
    """Logits of +-100 and +-1e4 give finite losses and gradients (also with gamma, beta = 0.5 where p underflows)."""
    xs = [-1e4, -100.0, 0.0, 100.0, 1e4]
    x = t(xs * 3, dtype, grad=True)
    q = t([0.0] * 5 + [1.0] * 5 + [0.5] * 5, dtype)
    loss = call(name, x, q, impl, **(SMALL_EXPONENT[name] if small_exponent else {}))
    assert torch.isfinite(loss).all(), loss
    g = grad_of(loss, x)
    assert torch.isfinite(g).all(), g
    # the confidently wrong cases cost about |x|: BCE(1e4, 0) = 1e4; the confidently right ones about 0
    assert loss[4] > 0 and loss[0].abs() < 1e-30 and loss[9].abs() < 1e-30


@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name, impl", ALL_IMPLS)
def test_low_precision_inputs(name, impl, low):
    """float16 / bfloat16 inputs: finite float32 output equal to the float32 result on the same rounded inputs."""
    x32, q32 = random_inputs(dtype=torch.float32, pos_frac=0.5)
    x = x32.detach().to(low).requires_grad_()
    q = q32.to(low)
    loss = call(name, x, q, impl)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    g = grad_of(loss, x)
    assert g.dtype == low and torch.isfinite(g).all()
    xr = x.detach().float().requires_grad_()  # the same rounded values, in float32
    ref = call(name, xr, q.float(), impl)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(g, grad_of(ref, xr).to(low))


@pytest.mark.parametrize("name, impl", ALL_IMPLS)
def test_autocast_gives_float32(name, impl):
    """Under CPU bfloat16 autocast (as in AMP training) the loss is still computed and returned in float32."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 5)
    feats = torch.randn(6, 8)
    _, q = random_inputs((6, 5), dtype=torch.float32, pos_frac=0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(feats)
        assert logits.dtype == torch.bfloat16  # autocast is really on
        loss = call(name, logits, q, impl)
        loss32 = call(name, logits.detach().float(), q, impl)
    assert loss.dtype == torch.float32 and loss32.dtype == torch.float32
    torch.testing.assert_close(loss, loss32)
    loss.sum().backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize("name, impl", ALL_IMPLS)
def test_inference_mode(name, impl):
    """Under torch.inference_mode (Ultralytics' validator computes val losses so) the values are unchanged."""
    x, q = random_inputs(dtype=torch.float32)
    expected = call(name, x, q, impl)
    with torch.inference_mode():
        out = call(name, x.detach(), q, impl)
    torch.testing.assert_close(out, expected.detach())


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("shape", [(0, 80), (2, 0, 3)])
@pytest.mark.parametrize("name, impl", ALL_IMPLS)
def test_empty_tensors(name, impl, shape, reduction):
    """Empty inputs work for every reduction: 'mean' is 0 (not NaN), 'sum' is 0, and backward runs."""
    x = torch.zeros(shape, requires_grad=True)
    loss = call(name, x, torch.zeros(shape), impl, reduction=reduction)
    if reduction == "none":
        assert loss.shape == shape and loss.dtype == torch.float32
    else:
        assert loss.shape == () and loss.item() == 0.0
    loss.sum().backward()
    assert x.grad is not None and x.grad.shape == shape


@pytest.mark.parametrize("name, impl", ALL_IMPLS)
def test_reductions_consistent(name, impl):
    """reduction='sum' and 'mean' equal the sum and mean of reduction='none', gradients included."""
    x, q = random_inputs(dtype=torch.float64)
    none = call(name, x, q, impl, reduction="none")
    assert none.shape == x.shape
    for reduction, reduce in (("sum", torch.sum), ("mean", torch.mean)):
        out = call(name, x, q, impl, reduction=reduction)
        ref = reduce(call(name, x, q, impl, reduction="none"))
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(grad_of(out, x), grad_of(ref, x))


# ----------------------------------------------------------------------------------------------------------------------
# Bad input raises typed errors that name the value

X2, Q2 = torch.zeros(2, 3), torch.zeros(2, 3)
BAD_CALLS = [
    ("wrong shape", lambda: varifocal_loss(X2, torch.zeros(3, 2)), ValueError, r"same shape.*\(2, 3\).*\(3, 2\)"),
    ("wrong shape qfl", lambda: quality_focal_loss(X2, torch.zeros(2)), ValueError, r"\(2, 3\) and \(2,\)"),
    ("target > 1", lambda: binary_cross_entropy(X2, torch.full((2, 3), 1.5)), ValueError, r"\[0, 1\].*1\.5"),
    ("target < 0", lambda: sigmoid_focal_loss(X2, torch.full((2, 3), -0.25)), ValueError, r"-0\.25"),
    ("target NaN", lambda: quality_focal_loss(X2, torch.full((2, 3), math.nan)), ValueError, r"nan"),
    ("logit NaN vfl", lambda: varifocal_loss(torch.full((2, 3), math.nan), Q2), ValueError, r"finite.*first: nan"),
    ("logit inf qfl", lambda: quality_focal_loss(torch.full((2, 3), math.inf), Q2), ValueError, r"6 non-finite.*inf"),
    ("logit -inf bce", lambda: binary_cross_entropy(X2.clone().fill_(-math.inf), Q2), ValueError, r"first: -inf"),
    ("labels 2", lambda: varifocal_loss(X2, Q2, torch.full((2, 3), 2)), ValueError, r"labels.*0 and 1"),
    ("labels shape", lambda: varifocal_loss(X2, Q2, torch.zeros(3, dtype=torch.bool)), ValueError, r"\(3,\)"),
    ("int logits", lambda: binary_cross_entropy(torch.zeros(2, 3, dtype=torch.long), Q2), TypeError, r"int64"),
    ("list logits", lambda: varifocal_loss([0.0], Q2), TypeError, r"list"),
    ("vfl alpha", lambda: varifocal_loss(X2, Q2, alpha=1.5), ValueError, r"alpha=1\.5"),
    ("vfl alpha <0", lambda: varifocal_loss(X2, Q2, alpha=-0.1), ValueError, r"alpha=-0\.1"),
    ("qfl alpha", lambda: quality_focal_loss(X2, Q2, alpha=2.0), ValueError, r"alpha=2\.0"),
    ("focal alpha", lambda: sigmoid_focal_loss(X2, Q2, alpha=1.2), ValueError, r"alpha=1\.2"),
    ("vfl gamma", lambda: varifocal_loss(X2, Q2, gamma=-1.0), ValueError, r"gamma=-1\.0"),
    ("focal gamma", lambda: sigmoid_focal_loss(X2, Q2, gamma=-2), ValueError, r"gamma=-2\.0"),
    ("qfl beta", lambda: quality_focal_loss(X2, Q2, beta=-0.5), ValueError, r"beta=-0\.5"),
    ("mal alpha", lambda: matchability_aware_loss(X2, Q2, alpha=1.5), ValueError, r"alpha=1\.5.*between 0\.0 and 1"),
    ("mal gamma", lambda: matchability_aware_loss(X2, Q2, gamma=-1), ValueError, r"gamma=-1\.0.*>= 0\.0"),
    ("iabce alpha", lambda: iou_aware_bce_loss(X2, Q2, alpha=-0.1), ValueError, r"alpha=-0\.1.*between 0\.0 and 1"),
    ("iabce gamma", lambda: iou_aware_bce_loss(X2, Q2, gamma="2"), TypeError, r"'2'"),
    ("iabce labels", lambda: iou_aware_bce_loss(X2, Q2, torch.full((2, 3), 2)), ValueError, r"labels.*0 and 1"),
    ("gamma inf", lambda: varifocal_loss(X2, Q2, gamma=math.inf), ValueError, r"inf"),
    ("gamma str", lambda: varifocal_loss(X2, Q2, gamma="2"), TypeError, r"'2'"),
    ("gamma bool", lambda: quality_focal_loss(X2, Q2, beta=True), TypeError, r"True"),
    ("iou_weighted 1", lambda: varifocal_loss(X2, Q2, iou_weighted=1), TypeError, r"iou_weighted.*1"),
    ("iou_weighted str", lambda: get_cls_loss("vfl", iou_weighted="yes"), TypeError, r"'yes'"),
    ("reduction", lambda: varifocal_loss(X2, Q2, reduction="avg"), ValueError, r"'avg'"),
    ("reduction bce", lambda: binary_cross_entropy(X2, Q2, reduction=None), ValueError, r"None"),
    ("impl", lambda: quality_focal_loss(X2, Q2, impl="cuda"), ValueError, r"'cuda'"),
    ("unknown loss", lambda: get_cls_loss("vlf"), UnknownLossError, r"'vlf'.*Did you mean 'vfl'"),
    ("unknown loss spec", lambda: get_loss_spec("qfocal"), UnknownLossError, r"'qfocal'.*bce, focal, vfl, qfl"),
    ("unknown kw", lambda: get_cls_loss("vfl", gama=2.0), TypeError, r"'gama'.*alpha, gamma, iou_weighted"),
    ("kw of other loss", lambda: get_cls_loss("qfl", gamma=2.0), TypeError, r"'gamma'.*beta"),
    ("kw for bce", lambda: get_cls_loss("bce", alpha=0.5), TypeError, r"'alpha'"),
    ("registry alpha", lambda: get_cls_loss("vfl", alpha=7), ValueError, r"alpha=7\.0"),
]


@pytest.mark.parametrize("call_, error, match", [b[1:] for b in BAD_CALLS], ids=[b[0] for b in BAD_CALLS])
def test_bad_input_raises_typed_error(call_, error, match):
    """Each invalid input raises the documented exception type, with the offending value in the message."""
    with pytest.raises(error, match=match):
        call_()


def test_unknown_loss_error_is_key_and_value_error():
    """UnknownLossError is caught as KeyError and as ValueError, and prints without KeyError's quotes."""
    with pytest.raises(KeyError):
        get_cls_loss("nope")
    with pytest.raises(ValueError) as info:
        get_cls_loss("nope")
    assert str(info.value).startswith("Unknown loss 'nope'")


def test_no_assert_statements_in_losses():
    """losses.py validates without assert statements, so `python -O` keeps every check."""
    source = Path(losses_module.__file__).read_text()
    asserts = [n.lineno for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Assert)]
    assert not asserts, f"assert statements at lines {asserts}"
    assert not [line for line in source.splitlines() if line.strip().startswith("assert ")]


def test_checks_survive_python_O():
    """Under `python -O` (asserts stripped) a target outside [0, 1] still raises ValueError."""
    code = (
        "import torch\nfrom yolo_vfl.losses import varifocal_loss\n"
        "assert False, 'not optimized'\n"  # skipped under -O: proves the flag is on
        "try:\n    varifocal_loss(torch.zeros(2), torch.tensor([0.5, 2.0]))\n"
        "except ValueError as e:\n    print('raised', e)\n"
    )
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "raised targets must lie in [0, 1]" in out.stdout


# ----------------------------------------------------------------------------------------------------------------------
# Registry


def test_registry_names_and_defaults():
    """list_losses() is bce, focal, vfl, qfl, mal, iabce; defaults as documented (MAL 1/1.5, IA-BCE 0.25/2)."""
    assert [s.name for s in list_losses()] == ["bce", "focal", "vfl", "qfl", "mal", "iabce"]
    assert get_loss_spec("mal").defaults == {"alpha": 1.0, "gamma": 1.5}
    assert get_loss_spec("iabce").defaults == {"alpha": 0.25, "gamma": 2.0}
    assert [p.arg for s in list_losses()[4:] for p in s.params] == [
        "mal_alpha",
        "mal_gamma",
        "iabce_alpha",
        "iabce_gamma",
    ]
    assert get_loss_spec("mal").uses_labels and get_loss_spec("iabce").uses_labels
    assert "2412.04234" in get_loss_spec("mal").reference and "RF-DETR" in get_loss_spec("iabce").reference
    assert get_loss_spec("bce").defaults == {}
    assert get_loss_spec("focal").defaults == {"alpha": 0.25, "gamma": 2.0}
    assert get_loss_spec("vfl").defaults == {"alpha": 0.75, "gamma": 2.0, "iou_weighted": True}
    assert get_loss_spec("qfl").defaults == {"beta": 2.0}
    for spec in list_losses():  # the registry defaults are the functions' keyword defaults
        params = inspect.signature(spec.function).parameters
        assert {k: params[k].default for k in spec.defaults} == spec.defaults
        assert spec.uses_labels == ("labels" in params)


@pytest.mark.parametrize(
    "name, hp",
    [
        ("bce", {}),
        ("focal", {"alpha": 0.5, "gamma": 1.0}),
        ("vfl", {"alpha": 0.5, "gamma": 1.5}),
        ("qfl", {"beta": 1.5}),
        ("mal", {"alpha": 0.5, "gamma": 2.0}),
        ("iabce", {"alpha": 0.5, "gamma": 1.0}),
    ],
)
@pytest.mark.parametrize("impl", ["fused", "autograd"])
def test_module_equals_function(name, hp, impl):
    """get_cls_loss(name, **hp)(x, q) equals the loss function called with the same hyperparameters."""
    x, q = random_inputs(dtype=torch.float64)
    module = get_cls_loss(name, impl=impl, **hp)
    assert (
        isinstance(module, ClsLoss)
        and module.name == name
        and module.hyperparameters
        == {
            **get_loss_spec(name).defaults,
            **hp,
        }
    )
    out = module(x, q)
    ref = call(name, x, q, impl, **hp)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad_of(out, x), grad_of(ref, x))
    assert name in repr(module)


def test_module_passes_labels_to_vfl():
    """ClsLoss('vfl') forwards labels (a positive with q == 0 gets weight 0); other losses ignore labels."""
    x = t([logit(0.9), logit(0.9)])
    q = t([0.0, 0.0])
    labels = torch.tensor([True, False])
    out = get_cls_loss("vfl")(x, q, labels)
    torch.testing.assert_close(out, t([0.0, 0.75 * 0.9**2 * bce(0.9, 0.0)]))
    torch.testing.assert_close(get_cls_loss("qfl")(x, q, labels), get_cls_loss("qfl")(x, q))
    # MAL and IA-BCE use labels too: the positive with q == 0 gets target 0^1.5 = 0 / the floor 0.01 at weight 1
    torch.testing.assert_close(get_cls_loss("mal")(x, q, labels), t([bce(0.9, 0.0), 0.9**1.5 * bce(0.9, 0.0)]))
    torch.testing.assert_close(get_cls_loss("iabce")(x, q, labels), t([bce(0.9, 0.01), 0.9**2 * bce(0.9, 0.0)]))


@pytest.mark.parametrize("name, impl", ALL_IMPLS)
def test_module_makes_no_host_sync(name, impl, monkeypatch):
    """ClsLoss (the training path) never reads a tensor value on the host: no .item(), aminmax or bool() per call."""
    x, q = random_inputs((2, 50, 4), dtype=torch.float32)
    labels = q > 0
    module = get_cls_loss(name, impl=impl)  # hyperparameters validated here, once

    def sync(*_a, **_k):
        raise AssertionError("host sync in the training path")

    for target, attr in (
        (torch.Tensor, "item"),
        (torch.Tensor, "tolist"),
        (torch, "aminmax"),
        (torch.Tensor, "aminmax"),
    ):
        monkeypatch.setattr(target, attr, sync)
    monkeypatch.setattr(torch.Tensor, "__bool__", sync)
    loss = module(x, q, labels)
    loss.sum().backward()
    monkeypatch.undo()
    torch.testing.assert_close(loss, call(name, x.detach(), q, impl))


def test_module_still_checks_shapes_and_types():
    """Without the value checks, ClsLoss still rejects a shape mismatch or a non-tensor (cheap, no host sync)."""
    module = get_cls_loss("vfl")
    with pytest.raises(ValueError, match=r"same shape.*\(2, 3\).*\(3, 2\)"):
        module(X2, torch.zeros(3, 2))
    with pytest.raises(TypeError, match="list"):
        module([0.0], Q2)
    with pytest.raises(ValueError, match=r"labels must have the shape"):
        module(X2, Q2, torch.zeros(3, dtype=torch.bool))


def test_each_range_and_default_written_once():
    """The functions validate through the registry's HyperParam entries: same checks, same defaults, same messages."""
    for spec in list_losses():
        params = inspect.signature(spec.function).parameters
        for p in spec.params:
            assert params[p.name].default == p.default
            with pytest.raises((TypeError, ValueError), match=rf"{p.name}"):
                call(spec.name, X2, Q2, **{p.name: "bad"})
    source = Path(losses_module.__file__).read_text()
    for check in ('_check_unit("alpha"', '_check_nonnegative("gamma"', '_check_nonnegative("beta"'):
        assert check not in source  # no second copy of a range in a loss body


# ----------------------------------------------------------------------------------------------------------------------
# torch.compile


@pytest.mark.compile
def test_compiled_equals_fused():
    """impl='compiled' gives the fused value and gradient (VFL, QFL, MAL, IA-BCE); a new batch size does not fail."""
    for fn, hp in (
        (varifocal_loss, {}),
        (quality_focal_loss, {"beta": 1.5, "alpha": 0.25}),
        (matchability_aware_loss, {}),
        (iou_aware_bce_loss, {}),
    ):
        for batch in (3, 5):  # the second shape runs the dynamic-shape graph (no recompile, no failure)
            x, q = random_inputs((batch, 64, 8), dtype=torch.float32, seed=batch)
            compiled = fn(x, q, impl="compiled", **hp)
            fused = fn(x, q, **hp)
            torch.testing.assert_close(compiled, fused)
            torch.testing.assert_close(grad_of(compiled, x), grad_of(fused, x))
    # and the compiled kernels really are whole graphs (a graph break would silently fall back to slow eager pieces)
    x, q = random_inputs((3, 64, 8), dtype=torch.float32)
    g = torch.ones(()).expand(x.shape)  # the expanded gradient that .sum() passes to the backward
    kernels = [
        (losses_module._vfl_forward, (x, q, None, 0.75, 2.0, True)),
        (losses_module._vfl_backward, (g, x, q, None, 0.75, 2.0, True)),
        (losses_module._qfl_forward, (x, q, 1.5, 0.25)),
        (losses_module._qfl_backward, (g, x, q, 1.5, 0.25)),
        (losses_module._mal_forward, (x, q, None, 1.0, 1.5)),
        (losses_module._mal_backward, (g, x, q, None, 1.0, 1.5)),
        (losses_module._iabce_forward, (x, q, None, 0.25, 2.0)),
        (losses_module._iabce_backward, (g, x, q, None, 0.25, 2.0)),
    ]
    with torch.no_grad():
        for fn, args in kernels:
            explained = torch._dynamo.explain(fn)(*args)
            assert explained.graph_break_count == 0, (fn.__name__, explained.break_reasons)


@pytest.mark.parametrize("name", ["vfl", "qfl", "bce"])
def test_training_path_propagates_non_finite_logits(name):
    """ClsLoss (no host sync) lets a NaN logit give a NaN loss at that entry only, like torch's BCEWithLogitsLoss."""
    x = torch.zeros(2, 3)
    x[0, 1] = math.nan
    q = torch.zeros(2, 3)
    labels = torch.zeros(2, 3, dtype=torch.bool)
    out = get_cls_loss(name)(x, q, labels)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(x, q, reduction="none")
    assert torch.isnan(out[0, 1]) and torch.isnan(ref[0, 1])
    assert torch.isfinite(out).sum() == 5
