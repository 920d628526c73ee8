"""Elementwise classification losses on logits (BCE, focal, VFL, QFL, DEIM's MAL, RF-DETR's IA-BCE) and their registry.

Everything here is pure PyTorch and knows nothing of Ultralytics: logits ``x`` and soft targets ``q`` in ``[0, 1]``
go in, the elementwise loss (same shape) comes out. Normalization (Ultralytics divides the summed loss by
``target_scores_sum``) belongs to the caller, so that every loss of an A/B comparison shares it.

Notation: ``x`` logit, ``p = sigmoid(x)``, ``q`` target quality (0 for negatives),
``BCE(x, q) = -(q log p + (1 - q) log(1 - p))``.

Input contract: the public functions (``varifocal_loss`` ...) refuse non-finite logits, targets outside ``[0, 1]``
(NaN included) and labels other than 0/1 with a ``ValueError``; ``ClsLoss``, the training path, checks only types and
shapes (no host sync), so there a NaN or inf logit gives a NaN loss, as with torch's own BCE.

Numerics: every loss casts its inputs to float32 (float64 stays float64) and runs with autocast disabled, whatever
the input dtype, and returns float32 (float64 for float64 inputs). The modulating weights (``p ** gamma``,
``|q - p| ** beta``) are *not* detached: gradients flow through them, as in the reference implementations (mmdet
``varifocal_loss`` / ``quality_focal_loss``, VarifocalNet, GFocal, YOLOv6). RT-DETR detaches them; we follow the
papers' code, and so do MAL and IA-BCE: DEIM's ``loss_labels_mal`` detaches its negative weight ``p ** gamma``, and
RF-DETR's IA-BCE detaches its positive target ``p ** alpha * q ** (1 - alpha)`` but not its negative weight.

Three implementations compute the same numbers:

* ``impl="fused"`` (default): a ``torch.autograd.Function`` running each loss's hand-derived backward, saving only
  its inputs (plus the positive mask for VFL, MAL and IA-BCE), so memory stays near BCE's and time about 2x BCE's
  instead of ~3.5x for plain autograd (CPU, (16, 8400, 80), measured for VFL and QFL; ``experiments/bench_losses.py``).
* ``impl="autograd"``: the formula written with ordinary tensor ops; autograd differentiates everything. Used as the
  reference in tests, and automatically whenever ``targets`` requires grad (the fused backward treats targets as
  constants).
* ``impl="compiled"``: the fused forward and backward through ``torch.compile`` with dynamic shapes, one kernel
  each (opt-in; compiles on first call); with targets requiring grad, ``torch.compile`` of the autograd formula.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InvalidSettingError, InvalidTypeError, UserError

__all__ = [
    "REDUCTIONS",
    "IMPLEMENTATIONS",
    "UnknownLossError",
    "HyperParam",
    "LossSpec",
    "ClsLoss",
    "binary_cross_entropy",
    "sigmoid_focal_loss",
    "varifocal_loss",
    "quality_focal_loss",
    "matchability_aware_loss",
    "iou_aware_bce_loss",
    "list_losses",
    "get_loss_spec",
    "get_cls_loss",
]

REDUCTIONS = ("none", "mean", "sum")
IMPLEMENTATIONS = ("fused", "autograd", "compiled")


class UnknownLossError(UserError, KeyError, ValueError):
    """Raised for a loss name that is not in the registry; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


# ----------------------------------------------------------------------------------------------------------------------
# Validation of user input (typed errors, never asserts)


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidSettingError(f"{name} must be finite, got {value}")
    return value


def _check_unit(name: str, value: Any) -> float:
    value = _check_number(name, value)
    if not 0.0 <= value <= 1.0:
        raise InvalidSettingError(f"Invalid {name}={value}: valid values are between 0.0 and 1.0")
    return value


def _check_nonnegative(name: str, value: Any) -> float:
    value = _check_number(name, value)
    if value < 0.0:
        raise InvalidSettingError(f"Invalid {name}={value}: valid values are >= 0.0")
    return value


def _check_focal_alpha(name: str, value: Any) -> float:
    value = _check_number(name, value)
    if value > 1.0:
        raise InvalidSettingError(
            f"Invalid {name}={value}: valid values are between 0.0 and 1.0, or negative to disable it"
        )
    return value


def _check_optional_unit(name: str, value: Any) -> float | None:
    return None if value is None else _check_unit(name, value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidSettingError(f"Invalid {name}={value!r}: valid values are {', '.join(map(repr, choices))}")
    return value


def _check_inputs(logits: Any, targets: Any, labels: Any = None, *, values: bool = True) -> None:
    """Check types and shapes of a loss call and, with ``values``, finite logits, the target range and 0/1 labels.

    The value checks read tensor contents on the host (a device sync on GPU): the public functions do them, the
    training path (``ClsLoss``) does not. Types and shapes are metadata and always checked. On the training path a
    NaN or inf logit propagates to a NaN loss, as in ``torch.nn.BCEWithLogitsLoss`` (Ultralytics' NaN recovery and
    AMP's gradient scaler act on it there).

    Raises:
        TypeError / ValueError: naming the bad input.
    """
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise InvalidTypeError(
            f"logits and targets must be torch.Tensor, got {type(logits).__name__} and {type(targets).__name__}"
        )
    if not logits.is_floating_point():
        raise InvalidTypeError(f"logits must be a floating point tensor, got dtype {logits.dtype}")
    if logits.shape != targets.shape:
        raise InvalidSettingError(
            f"logits and targets must have the same shape, got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    if labels is not None:
        if not isinstance(labels, Tensor):
            raise InvalidTypeError(f"labels must be a torch.Tensor or None, got {type(labels).__name__}")
        if labels.shape != logits.shape:
            raise InvalidSettingError(
                f"labels must have the shape of logits {tuple(logits.shape)}, got {tuple(labels.shape)}"
            )
    if not values:
        return
    if logits.numel() and not bool(torch.isfinite(logits.detach()).all()):
        bad = logits.detach()[~torch.isfinite(logits.detach())]
        raise InvalidSettingError(
            f"logits must be finite, got {bad.numel()} non-finite value(s) (first: {bad.flatten()[0].item()}); "
            "a NaN or inf logit makes every loss NaN"
        )
    if targets.numel():
        lo, hi = torch.aminmax(targets.detach().float())
        lo, hi = lo.item(), hi.item()
        if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
            raise InvalidSettingError(f"targets must lie in [0, 1], got values in [{lo:g}, {hi:g}]")
    if labels is not None and labels.dtype != torch.bool and labels.numel():
        if not bool(((labels == 0) | (labels == 1)).all()):
            raise InvalidSettingError("labels must be boolean or contain only 0 and 1")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean() if loss.numel() else loss.sum() * 0.0  # empty mean: 0 with a graph, not NaN


def _float32(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Cast to float32; float64 stays float64 (for gradcheck), half and bfloat16 go up to float32."""
    return tuple(t.to(torch.promote_types(t.dtype, torch.float32)) for t in tensors)


# ----------------------------------------------------------------------------------------------------------------------
# Hyperparameters: each one's default and range (its validator) are written here, once. The functions' keyword
# defaults, their validation and the registry all use these entries.


@dataclass(frozen=True)
class HyperParam:
    """One hyperparameter of a registered loss.

    Attributes:
        name: keyword of the loss function (``alpha``).
        arg: trainer / CLI setting that carries it (``vfl_alpha``); ``None`` for a function keyword that is not a
            trainer setting (QFL's YOLOv5 ``alpha``).
        default: default value, and where it comes from in ``help``.
        check: validator ``(name, value) -> value`` raising TypeError / ValueError.
        help: one line for ``yolo-vfl losses`` and docs.
    """

    name: str
    arg: str | None
    default: Any
    check: Callable[[str, Any], Any]
    help: str


_FL_ALPHA = HyperParam("alpha", "fl_alpha", 0.25, _check_focal_alpha, "positive weight; < 0 disables (RetinaNet 0.25)")
_FL_GAMMA = HyperParam("gamma", "fl_gamma", 2.0, _check_nonnegative, "focusing exponent (RetinaNet 2.0)")
_VFL_ALPHA = HyperParam("alpha", "vfl_alpha", 0.75, _check_unit, "weight of negatives (VarifocalNet 0.75)")
_VFL_GAMMA = HyperParam("gamma", "vfl_gamma", 2.0, _check_nonnegative, "focusing exponent on negatives (2.0)")
_VFL_IOU_WEIGHTED = HyperParam("iou_weighted", "vfl_iou_weighted", True, _check_bool, "weight positives by q or by 1")
_QFL_BETA = HyperParam("beta", "qfl_beta", 2.0, _check_nonnegative, "modulating exponent (GFL 2.0)")
_QFL_ALPHA = HyperParam("alpha", None, None, _check_optional_unit, "YOLOv5 QFocalLoss balance factor (off in GFL)")

_MAL_ALPHA = HyperParam("alpha", "mal_alpha", 1.0, _check_unit, "weight of negatives (DEIM mal_alpha: None = 1)")
_MAL_GAMMA = HyperParam("gamma", "mal_gamma", 1.5, _check_nonnegative, "target q^gamma, negatives p^gamma (DEIM 1.5)")
_IABCE_ALPHA = HyperParam("alpha", "iabce_alpha", 0.25, _check_unit, "target p^alpha q^(1-alpha) (RF-DETR 0.25)")
_IABCE_GAMMA = HyperParam("gamma", "iabce_gamma", 2.0, _check_nonnegative, "negative weight p^gamma (RF-DETR 2)")

#: IA-BCE's floor of the positive target: RF-DETR clamps ``p^alpha q^(1-alpha)`` to at least 0.01 (not a setting).
IABCE_MIN_TARGET = 0.01

# ----------------------------------------------------------------------------------------------------------------------
# Reference formulas (plain autograd). These are the maths; the fused functions below must agree with them.


def _pow(base: Tensor, exponent: float) -> Tensor:
    """``base ** exponent`` (``base >= 0``) with gradient 0, not NaN, where ``base == 0`` and ``0 < exponent < 1``.

    ``Tensor.pow`` differentiates to ``exponent * 0 ** (exponent - 1) = inf`` there, and the chain rule turns that
    into ``inf * 0 = NaN`` (for instance ``|q - p| ** 0.5`` at ``p == q``, or ``p ** 0.5`` once ``sigmoid`` underflows
    to 0 at a logit of -1e4). The fused backward uses 0 at those points; this keeps the autograd path equal to it.
    """
    if not 0.0 < exponent < 1.0:
        return base.pow(exponent)  # finite gradient at 0 for exponent 0 and exponent >= 1
    nonzero = base > 0
    return torch.where(nonzero, torch.where(nonzero, base, 1.0).pow(exponent), 0.0)


def _positives(q: Tensor, labels: Tensor | None) -> Tensor:
    """The positive mask: ``labels`` as bool, or ``q > 0`` without labels."""
    return (q > 0) if labels is None else labels.bool()


def _vfl_autograd(
    x: Tensor, q: Tensor, labels: Tensor | None, alpha: float, gamma: float, iou_weighted: bool
) -> Tensor:
    w_pos = q if iou_weighted else torch.ones_like(q)
    w_neg = alpha * _pow(x.sigmoid(), gamma)  # alpha p^gamma, with a finite gradient where p underflows to 0
    weight = torch.where(_positives(q, labels), w_pos, w_neg)
    return F.binary_cross_entropy_with_logits(x, q, reduction="none") * weight


def _qfl_autograd(x: Tensor, q: Tensor, beta: float, alpha: float | None) -> Tensor:
    weight = _pow((q - x.sigmoid()).abs(), beta)
    if alpha is not None:
        weight = weight * (q * alpha + (1 - q) * (1 - alpha))
    return F.binary_cross_entropy_with_logits(x, q, reduction="none") * weight


def _mal_autograd(x: Tensor, q: Tensor, labels: Tensor | None, alpha: float, gamma: float) -> Tensor:
    pos = _positives(q, labels)
    target = torch.where(pos, _pow(q, gamma), 0.0)  # q^gamma on positives, 0 on negatives whatever q
    weight = torch.where(pos, 1.0, alpha * x.detach().sigmoid().pow(gamma))  # detached, as in DEIM
    return F.binary_cross_entropy_with_logits(x, target, reduction="none") * weight


def _iabce_autograd(x: Tensor, q: Tensor, labels: Tensor | None, alpha: float, gamma: float) -> Tensor:
    pos = _positives(q, labels)
    t = (_pow(x.detach().sigmoid(), alpha) * _pow(q, 1.0 - alpha)).clamp_min(IABCE_MIN_TARGET)  # p detached
    target = torch.where(pos, t, 0.0)
    weight = torch.where(pos, 1.0, _pow(x.sigmoid(), gamma))  # not detached, as in RF-DETR
    return F.binary_cross_entropy_with_logits(x, target, reduction="none") * weight


def _focal_autograd(x: Tensor, q: Tensor, alpha: float, gamma: float) -> Tensor:
    p = x.sigmoid()
    p_t = p * q + (1 - p) * (1 - q)
    loss = F.binary_cross_entropy_with_logits(x, q, reduction="none") * _pow(1 - p_t, gamma)
    if alpha >= 0:
        loss = loss * (alpha * q + (1 - alpha) * (1 - q))
    return loss


# ----------------------------------------------------------------------------------------------------------------------
# Fused autograd Functions: forward without a graph, backward derived by hand from the formulas, saving only inputs.
#
# Written for memory and speed on (B, A, C) tensors, where every fresh full-size tensor costs page faults on CPU: the
# forward and the backward each allocate two full-size tensors (one of them the result) and otherwise work in place.
# BCE is computed as (x - q x) - log sigmoid(x), the form torch's binary_cross_entropy_with_logits uses, and log
# sigmoid as softplus(x, beta=-1) = -log(1 + exp(-x)), which needs no extra buffer (F.logsigmoid allocates one on CPU).
# impl="compiled" runs the same forward and backward functions through torch.compile: one kernel each.

_FAST_POW = (0.0, 0.5, 1.0, 2.0, 3.0, -0.5, -1.0, -2.0)  # exponents with a vectorized special case in torch.pow


def _pow_(t: Tensor, exponent: float) -> Tensor:
    """In place ``t **= exponent`` for ``t >= 0``; other exponents as ``exp(exponent * log t)`` (10x faster on CPU)."""
    if exponent in _FAST_POW:
        return t.pow_(exponent)
    return t.log_().mul_(exponent).exp_()  # t == 0: log -> -inf, exp -> 0 (exponent > 0) or inf (exponent < 0)


def _bce_and_logsigmoid(x: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """``(BCE(x, q), log sigmoid(x))``, two new tensors, stable for any finite logit."""
    log_p = F.softplus(x, beta=-1.0)  # log sigmoid(x) = -softplus(-x)
    bce = torch.addcmul(x, q, x, value=-1.0).sub_(log_p)  # (1 - q) x - log sigmoid(x)
    return bce, log_p


def _bce_of_target_(t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """In place ``t = BCE(x, t) = (1 - t) x - log sigmoid(x)``; returns it and a new tensor ``log sigmoid(x)``."""
    log_p = F.softplus(x, beta=-1.0)
    return t.mul_(x).neg_().add_(x).sub_(log_p), log_p


def _set_positive_weight_(weight: Tensor, q: Tensor, pos: Tensor, iou_weighted: bool) -> Tensor:
    """In place: ``weight = q`` (``iou_weighted``) or 1 where ``pos``."""
    return torch.where(pos, q, weight, out=weight) if iou_weighted else weight.masked_fill_(pos, 1.0)


def _mul_alpha_factor_(t: Tensor, q: Tensor, alpha: float | None) -> Tensor:
    """In place ``t *= q alpha + (1 - q)(1 - alpha)`` (YOLOv5's QFocalLoss factor) without a temporary."""
    if alpha is None:
        return t
    if alpha == 1.0:
        return t.mul_(q)
    # t (1 - a) + (2a - 1) q t = t (1 - a) + ((2a - 1) / (1 - a)) q (t (1 - a))
    return t.mul_(1.0 - alpha).addcmul_(t, q, value=(2.0 * alpha - 1.0) / (1.0 - alpha))


def _vfl_forward(x: Tensor, q: Tensor, labels: Tensor | None, alpha: float, gamma: float, iou_weighted: bool) -> Tensor:
    """VFL values: ``BCE(x, q)`` times ``q`` (or 1) on positives and ``a p^g`` on negatives."""
    pos = _positives(q, labels)
    loss, weight = _bce_and_logsigmoid(x, q)
    weight.mul_(gamma).exp_().mul_(alpha)  # a p^g = a exp(g log p)
    _set_positive_weight_(weight, q, pos, iou_weighted)
    return loss.mul_(weight)


def _vfl_backward(
    grad_out: Tensor, x: Tensor, q: Tensor, labels: Tensor | None, alpha: float, gamma: float, iou_weighted: bool
) -> Tensor:
    """VFL gradient w.r.t. the logits: ``weight * (g (1 - p) B [negatives only] + p - q) * grad_out``.

    Negative: ``L = a p^g B`` with ``B = BCE(x, q)``, ``dB/dx = p - q``, ``dp/dx = p (1 - p)``, so
    ``dL/dx = a p^g (g (1 - p) B + p - q)``. Positive: the weight ``q`` (or 1) is constant, ``dL/dx = w (p - q)``.
    """
    pos = _positives(q, labels)
    grad, p = _bce_and_logsigmoid(x, q)
    torch.sigmoid(x, out=p)
    grad.masked_fill_(pos, 0.0).mul_(gamma)  # g B on negatives, 0 on positives
    grad.addcmul_(grad, p, value=-1.0).add_(p).sub_(q)  # g (1 - p) B + p - q
    _pow_(p, gamma).mul_(alpha)
    _set_positive_weight_(p, q, pos, iou_weighted)  # the forward's weight
    return grad.mul_(p).mul_(grad_out)


def _qfl_forward(x: Tensor, q: Tensor, beta: float, alpha: float | None) -> Tensor:
    """QFL values: ``|p - q|^b BCE(x, q)``, times the YOLOv5 alpha factor when ``alpha`` is set."""
    loss, weight = _bce_and_logsigmoid(x, q)
    _pow_(torch.sigmoid(x, out=weight).sub_(q).abs_(), beta)  # |p - q|^b
    _mul_alpha_factor_(weight, q, alpha)
    return loss.mul_(weight)


def _qfl_backward(grad_out: Tensor, x: Tensor, q: Tensor, beta: float, alpha: float | None) -> Tensor:
    """QFL gradient w.r.t. the logits: ``c sign(d) |d|^(b-1) (b p (1 - p) B + d^2) * grad_out``, 0 where ``d == 0``.

    With ``d = p - q`` and ``L = c |d|^b B`` (``c`` the optional YOLOv5 alpha factor, constant in ``x``):
    ``dL/dx = c (b |d|^(b-1) sign(d) p (1 - p) B + |d|^b d)``.
    """
    grad, d = _bce_and_logsigmoid(x, q)
    p = torch.sigmoid(x, out=d)
    grad.mul_(p).addcmul_(grad, p, value=-1.0).mul_(beta)  # b p (1 - p) B
    d = p.sub_(q)
    grad.addcmul_(d, d)  # b p (1 - p) B + d^2
    if beta == 2.0:  # the default: sign(d) |d|^(b-1) = d
        grad.mul_(d)
    elif beta == 1.0:
        grad.mul_(d.sign_())
    else:
        grad.mul_(d)
        ad = d.abs_().clamp_min_(torch.finfo(d.dtype).tiny)  # |d| >= tiny: no 0 / 0, no overflow below
        grad.div_(ad)  # sign(d) (b p (1 - p) B + d^2); 0 where d == 0
        grad.mul_(_pow_(ad, beta - 1.0))  # |d|^(b-1) <= 1 / tiny
    _mul_alpha_factor_(grad, q, alpha)
    return grad.mul_(grad_out)


def _mal_forward(x: Tensor, q: Tensor, labels: Tensor | None, alpha: float, gamma: float) -> Tensor:
    """MAL values: ``BCE(x, q^g)`` on positives, ``a p^g BCE(x, 0)`` on negatives."""
    pos = _positives(q, labels)
    target = _pow_(q.clone(), gamma).mul_(pos)  # t = q^g on positives, 0 on negatives (also for g = 0)
    loss, weight = _bce_of_target_(target, x)
    weight.mul_(gamma).exp_().mul_(alpha).masked_fill_(pos, 1.0)  # a p^g on negatives, 1 on positives
    return loss.mul_(weight)


def _mal_backward(grad_out: Tensor, x: Tensor, q: Tensor, labels: Tensor | None, alpha: float, gamma: float) -> Tensor:
    """MAL gradient w.r.t. the logits: ``weight * (p - t) * grad_out`` (DEIM detaches the weight ``a p^g``)."""
    pos = _positives(q, labels)
    grad = _pow_(q.clone(), gamma).mul_(pos)  # t
    p = torch.sigmoid(x)
    grad.sub_(p).neg_()  # p - t
    _pow_(p, gamma).mul_(alpha).masked_fill_(pos, 1.0)  # the forward's weight
    return grad.mul_(p).mul_(grad_out)


def _iabce_target(p: Tensor, q: Tensor, pos: Tensor, alpha: float) -> Tensor:
    """New tensor: ``max(p^a q^(1-a), 0.01)`` on positives, 0 on negatives."""
    t = _pow_(p.clone(), alpha).mul_(_pow_(q.clone(), 1.0 - alpha))
    return t.clamp_min_(IABCE_MIN_TARGET).mul_(pos)


def _iabce_forward(x: Tensor, q: Tensor, labels: Tensor | None, alpha: float, gamma: float) -> Tensor:
    """IA-BCE values: ``BCE(x, t)`` on positives, ``p^g BCE(x, 0)`` on negatives."""
    pos = _positives(q, labels)
    loss, weight = _bce_of_target_(_iabce_target(torch.sigmoid(x), q, pos, alpha), x)
    weight.mul_(gamma).exp_().masked_fill_(pos, 1.0)  # p^g on negatives, 1 on positives
    return loss.mul_(weight)


def _iabce_backward(
    grad_out: Tensor, x: Tensor, q: Tensor, labels: Tensor | None, alpha: float, gamma: float
) -> Tensor:
    """IA-BCE gradient w.r.t. the logits: ``weight * (g (1 - p) B [negatives only] + p - t) * grad_out``.

    Positive: ``t`` comes from a detached ``p`` (RF-DETR), so ``dL/dx = p - t``. Negative: ``L = p^g B`` with
    ``B = BCE(x, 0)``, ``dB/dx = p`` and the weight not detached: ``dL/dx = p^g (g (1 - p) B + p)``.
    """
    pos = _positives(q, labels)
    p = torch.sigmoid(x)
    grad = F.softplus(x)  # B = BCE(x, 0)
    grad.masked_fill_(pos, 0.0).mul_(gamma)  # g B on negatives, 0 on positives
    grad.addcmul_(grad, p, value=-1.0).add_(p)  # g (1 - p) B + p
    grad.sub_(_iabce_target(p, q, pos, alpha))  # ... - t (t = 0 on negatives)
    _pow_(p, gamma).masked_fill_(pos, 1.0)  # the forward's weight
    return grad.mul_(p).mul_(grad_out)


_COMPILED: dict[str, Callable] = {}


def _compiled(name: str, fn: Callable) -> Callable:
    """``torch.compile`` of ``fn`` with dynamic shapes, built once per process."""
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(fn, dynamic=True)
    return _COMPILED[name]


def _kernel(fn: Callable, compiled: bool) -> Callable:
    return _compiled(fn.__name__, fn) if compiled else fn


class _FusedFunction(torch.autograd.Function):
    """A loss's fused forward kernel with its hand-derived backward w.r.t. the logits (targets and labels constant).

    ``apply(x, q, loss, compiled, *args)``: ``loss`` is the ``_Elementwise`` holding the kernels, ``args`` the
    kernels' arguments after ``(x, q)``: the positive mask first for losses that use labels, then the hyperparameters.
    """

    @staticmethod
    def forward(ctx, x: Tensor, q: Tensor, loss: _Elementwise, compiled: bool, *args: Any) -> Tensor:
        n_masks = int(loss.uses_labels)
        if loss.uses_labels and not compiled:  # eager: build the mask once for both passes (compiled: inline)
            args = (_positives(q, args[0]), *args[1:])
        ctx.save_for_backward(x, q, *args[:n_masks])
        ctx.hyp = (loss.backward, compiled, args[n_masks:])
        return _kernel(loss.forward, compiled)(x, q, *args)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        backward, compiled, hyperparameters = ctx.hyp
        grad = _kernel(backward, compiled)(grad_out, *ctx.saved_tensors, *hyperparameters)
        return grad, *[None] * (len(ctx.needs_input_grad) - 1)


@dataclass(frozen=True)
class _Elementwise:
    """A loss's elementwise kernel ``f(x, q, labels, impl, **hyperparameters)``, without input validation.

    Dispatches to the fused Function (eager or compiled) or to the autograd formula ``reference`` (``impl="autograd"``,
    a gradient w.r.t. the targets, or a loss without fused kernels). ``reference`` and the kernels take
    ``(x, q, [labels,] *hyperparameters)``, hyperparameters in the order of ``params``.
    """

    name: str
    reference: Callable[..., Tensor]
    params: tuple[HyperParam, ...]
    uses_labels: bool = False
    forward: Callable[..., Tensor] | None = None
    backward: Callable[..., Tensor] | None = None

    def __call__(self, x: Tensor, q: Tensor, labels: Tensor | None, impl: str, **hyperparameters: Any) -> Tensor:
        labels_arg = (labels,) if self.uses_labels else ()
        args = (*labels_arg, *(hyperparameters.get(p.name, p.default) for p in self.params))
        if self.forward is None or impl == "autograd" or (q.requires_grad and impl == "fused"):
            return self.reference(x, q, *args)
        if q.requires_grad:  # compiled, with a gradient w.r.t. the targets: compile the autograd formula instead
            return _compiled(self.name, self.reference)(x, q, *args)
        return _FusedFunction.apply(x, q, self, impl == "compiled", *args)


def _bce_autograd(x: Tensor, q: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(x, q, reduction="none")


_bce_elementwise = _Elementwise("bce", _bce_autograd, ())
_focal_elementwise = _Elementwise("focal", _focal_autograd, (_FL_ALPHA, _FL_GAMMA))
_vfl_elementwise = _Elementwise(
    "vfl", _vfl_autograd, (_VFL_ALPHA, _VFL_GAMMA, _VFL_IOU_WEIGHTED), True, _vfl_forward, _vfl_backward
)
_qfl_elementwise = _Elementwise("qfl", _qfl_autograd, (_QFL_BETA, _QFL_ALPHA), False, _qfl_forward, _qfl_backward)
_mal_elementwise = _Elementwise("mal", _mal_autograd, (_MAL_ALPHA, _MAL_GAMMA), True, _mal_forward, _mal_backward)
_iabce_elementwise = _Elementwise(
    "iabce", _iabce_autograd, (_IABCE_ALPHA, _IABCE_GAMMA), True, _iabce_forward, _iabce_backward
)


def _compute(
    elementwise: _Elementwise,
    logits: Tensor,
    targets: Tensor,
    labels: Tensor | None,
    hyperparameters: dict[str, Any],
    reduction: str,
    impl: str,
) -> Tensor:
    """Float32 with autocast off, the elementwise kernel, the reduction (inputs and hyperparameters already valid).

    Returns:
        Tensor[...] float32 (float64 for float64 inputs), or a scalar when reduced.
    """
    with torch.autocast(logits.device.type, enabled=False):
        x, q = _float32(logits, targets)
        return _reduce(elementwise(x, q, labels, impl, **hyperparameters), reduction)


def _loss(
    elementwise: _Elementwise,
    logits: Tensor,
    targets: Tensor,
    labels: Tensor | None,
    hyperparameters: dict[str, Any],
    reduction: str,
    impl: str,
) -> Tensor:
    """The public functions' one wrapper: validate everything (values included), then ``_compute``."""
    hyperparameters = {p.name: p.check(p.name, hyperparameters[p.name]) for p in elementwise.params}
    reduction = _check_choice("reduction", reduction, REDUCTIONS)
    impl = _check_choice("impl", impl, IMPLEMENTATIONS)
    _check_inputs(logits, targets, labels)
    return _compute(elementwise, logits, targets, labels, hyperparameters, reduction, impl)


# ----------------------------------------------------------------------------------------------------------------------
# Public functions


def binary_cross_entropy(logits: Tensor, targets: Tensor, *, reduction: str = "none") -> Tensor:
    r"""Binary cross-entropy on logits, in float32: the loss stock YOLOv8 uses for classification.

    .. math:: \mathrm{BCE}(x, q) = -\left(q \log \sigma(x) + (1 - q) \log(1 - \sigma(x))\right)

    Args:
        logits (Tensor[...]): raw scores ``x``, any floating dtype.
        targets (Tensor[...]): soft targets ``q`` in ``[0, 1]``, same shape.
        reduction (str): ``"none"`` (elementwise), ``"mean"`` or ``"sum"``.

    Returns:
        Tensor[...] float32 elementwise loss, or a scalar when reduced.
    """
    return _loss(_bce_elementwise, logits, targets, None, {}, reduction, "fused")


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    alpha: float = _FL_ALPHA.default,
    gamma: float = _FL_GAMMA.default,
    reduction: str = "none",
) -> Tensor:
    r"""Sigmoid focal loss (RetinaNet), with the same semantics as ``torchvision.ops.sigmoid_focal_loss``.

    .. math:: \mathrm{FL} = \alpha_t (1 - p_t)^\gamma \mathrm{BCE}(x, q), \quad
              p_t = p q + (1 - p)(1 - q), \quad \alpha_t = \alpha q + (1 - \alpha)(1 - q)

    Meant for binary targets; soft targets are accepted and interpolate ``p_t`` and ``alpha_t`` linearly.

    Args:
        logits (Tensor[...]): raw scores ``x``.
        targets (Tensor[...]): targets ``q`` in ``[0, 1]``, same shape.
        alpha (float): weight of positives in ``[0, 1]``; a negative value disables the alpha factor.
            Default 0.25 (Lin et al.).
        gamma (float): focusing parameter ``>= 0``. Default 2.0. ``gamma=0, alpha<0`` is BCE.
        reduction (str): ``"none"``, ``"mean"`` or ``"sum"``.

    Returns:
        Tensor[...] float32 elementwise loss, or a scalar when reduced.

    Reference:
        Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, arXiv:1708.02002.
    """
    hyperparameters = {"alpha": alpha, "gamma": gamma}
    return _loss(_focal_elementwise, logits, targets, None, hyperparameters, reduction, "fused")


def varifocal_loss(
    logits: Tensor,
    targets: Tensor,
    labels: Tensor | None = None,
    *,
    alpha: float = _VFL_ALPHA.default,
    gamma: float = _VFL_GAMMA.default,
    iou_weighted: bool = _VFL_IOU_WEIGHTED.default,
    reduction: str = "none",
    impl: str = "fused",
) -> Tensor:
    r"""Varifocal loss (VarifocalNet), elementwise on logits.

    .. math::
        \mathrm{VFL}(x, q) = \begin{cases}
            q \, \mathrm{BCE}(x, q) & \text{positive (label 1)} \\
            \alpha \, p^\gamma \, \mathrm{BCE}(x, q) & \text{negative}
        \end{cases}

    Positives are weighted by their target quality ``q`` (by 1 with ``iou_weighted=False``), so high-quality
    examples dominate; negatives are down-weighted by ``alpha p^gamma``, so easy background (``p -> 0``) costs
    nothing. The weights are not detached (as in mmdet, VarifocalNet and YOLOv6).

    Args:
        logits (Tensor[...]): raw scores ``x``, e.g. ``(B, A, C)`` for batch, anchors, classes.
        targets (Tensor[...]): IoU-aware target ``q`` in ``[0, 1]`` (0 for negatives), same shape.
        labels (Tensor[...] | None): bool or 0/1 positive mask, same shape. ``None``: ``targets > 0``. Pass it when
            a positive may have ``q == 0`` (it then gets weight 0, not the negative weight).
        alpha (float): negative weight in ``[0, 1]``. Default 0.75 (VarifocalNet, mmdet).
        gamma (float): focusing exponent on negatives, ``>= 0``. Default 2.0.
        iou_weighted (bool): weight positives by ``q`` (True) or by 1 (False, mmdet option).
        reduction (str): ``"none"``, ``"mean"`` or ``"sum"``.
        impl (str): ``"fused"`` (hand-derived backward), ``"autograd"`` or ``"compiled"`` (``torch.compile``).

    Returns:
        Tensor[...] float32 elementwise loss, or a scalar when reduced.

    Reference:
        Zhang et al., "VarifocalNet: An IoU-aware Dense Object Detector", CVPR 2021, arXiv:2008.13367.
    """
    hyperparameters = {"alpha": alpha, "gamma": gamma, "iou_weighted": iou_weighted}
    return _loss(_vfl_elementwise, logits, targets, labels, hyperparameters, reduction, impl)


def quality_focal_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    beta: float = _QFL_BETA.default,
    alpha: float | None = _QFL_ALPHA.default,
    reduction: str = "none",
    impl: str = "fused",
) -> Tensor:
    r"""Quality focal loss (Generalized Focal Loss), elementwise on logits.

    .. math:: \mathrm{QFL}(x, q) = |q - p|^\beta \, \mathrm{BCE}(x, q)

    Its minimum over ``p`` sits at ``p = q``: the score learns to equal the localization quality. With ``alpha``
    set, each element is also multiplied by ``q alpha + (1 - q)(1 - alpha)``, as YOLOv5's ``QFocalLoss`` does
    (pull request #1482 used ``alpha=0.25, beta=1.5``). The weight is not detached (as in mmdet and GFocal).

    Args:
        logits (Tensor[...]): raw scores ``x``, e.g. ``(B, A, C)``.
        targets (Tensor[...]): quality target ``q`` in ``[0, 1]``, same shape.
        beta (float): modulating exponent ``>= 0``. Default 2.0 (GFL paper). ``beta=0`` is BCE.
        alpha (float | None): optional YOLOv5-style balance factor in ``[0, 1]``. Default None (off, as in GFL).
        reduction (str): ``"none"``, ``"mean"`` or ``"sum"``.
        impl (str): ``"fused"`` (hand-derived backward), ``"autograd"`` or ``"compiled"`` (``torch.compile``).

    Returns:
        Tensor[...] float32 elementwise loss, or a scalar when reduced.

    Reference:
        Li et al., "Generalized Focal Loss", NeurIPS 2020, arXiv:2006.04388.
    """
    hyperparameters = {"beta": beta, "alpha": alpha}
    return _loss(_qfl_elementwise, logits, targets, None, hyperparameters, reduction, impl)


def matchability_aware_loss(
    logits: Tensor,
    targets: Tensor,
    labels: Tensor | None = None,
    *,
    alpha: float = _MAL_ALPHA.default,
    gamma: float = _MAL_GAMMA.default,
    reduction: str = "none",
    impl: str = "fused",
) -> Tensor:
    r"""Matchability-Aware Loss (DEIM), elementwise on logits.

    .. math::
        \mathrm{MAL}(x, q) = \begin{cases}
            \mathrm{BCE}(x, q^\gamma) = -(q^\gamma \log p + (1 - q^\gamma) \log(1 - p)) & \text{positive} \\
            \alpha \, p^\gamma \, \mathrm{BCE}(x, 0) = -\alpha \, p^\gamma \log(1 - p) & \text{negative}
        \end{cases}

    Unlike VFL, positives keep full weight (1, not ``q``) and the quality enters through the soft target
    ``q^gamma``, so a low-quality match (``q`` small) still gets a large loss when it scores high. As in DEIM's
    ``loss_labels_mal`` the negative weight ``alpha p^gamma`` is computed from a detached ``p`` (no gradient through
    the weight), and negatives have target 0 whatever ``targets`` holds there. ``gamma=0, alpha=1`` is BCE with the
    hard targets ``labels``.

    Args:
        logits (Tensor[...]): raw scores ``x``, e.g. ``(B, A, C)``.
        targets (Tensor[...]): quality ``q`` in ``[0, 1]`` of the positives (DEIM: the IoU of the matched box).
        labels (Tensor[...] | None): bool or 0/1 positive mask, same shape. ``None``: ``targets > 0``. Pass it when
            a positive may have ``q == 0`` (it then gets target ``0^gamma`` at weight 1).
        alpha (float): weight of negatives in ``[0, 1]``. Default 1.0: DEIM's ``mal_alpha=None`` (its configs leave
            it unset; a set ``mal_alpha`` multiplies ``p^gamma`` as here).
        gamma (float): exponent ``>= 0`` of the positive target and of the negative weight. Default 1.5 (DEIM's
            ``configs/base/deim.yml``; its criterion's keyword default is 2.0).
        reduction (str): ``"none"``, ``"mean"`` or ``"sum"``.
        impl (str): ``"fused"`` (hand-derived backward), ``"autograd"`` or ``"compiled"`` (``torch.compile``).

    Returns:
        Tensor[...] float32 elementwise loss, or a scalar when reduced.

    Reference:
        Huang et al., "DEIM: DETR with Improved Matching for Fast Convergence", CVPR 2025, arXiv:2412.04234;
        github.com/ShihuaHuang95/DEIM ``engine/deim/deim_criterion.py`` ``DEIMCriterion.loss_labels_mal``.
    """
    hyperparameters = {"alpha": alpha, "gamma": gamma}
    return _loss(_mal_elementwise, logits, targets, labels, hyperparameters, reduction, impl)


def iou_aware_bce_loss(
    logits: Tensor,
    targets: Tensor,
    labels: Tensor | None = None,
    *,
    alpha: float = _IABCE_ALPHA.default,
    gamma: float = _IABCE_GAMMA.default,
    reduction: str = "none",
    impl: str = "fused",
) -> Tensor:
    r"""IoU-aware BCE (LW-DETR, RF-DETR), elementwise on logits.

    .. math::
        \mathrm{IABCE}(x, q) = \begin{cases}
            \mathrm{BCE}(x, t), \quad t = \max(p^\alpha q^{1 - \alpha}, 0.01) & \text{positive} \\
            p^\gamma \, \mathrm{BCE}(x, 0) & \text{negative}
        \end{cases}

    Positives keep full weight and learn towards ``t``, a geometric blend of the current score and the quality
    ``q``; RF-DETR computes ``t`` from a detached ``p`` and clamps it to at least 0.01 (``IABCE_MIN_TARGET``), so
    ``dL/dx = p - t`` there. The negative weight ``p^gamma`` is not detached (as in RF-DETR). Negatives have target
    0 whatever ``targets`` holds there. ``alpha=0, gamma=0`` is BCE with target ``max(q, 0.01)`` on positives.

    Args:
        logits (Tensor[...]): raw scores ``x``, e.g. ``(B, A, C)``.
        targets (Tensor[...]): quality ``q`` in ``[0, 1]`` of the positives (RF-DETR: the IoU of the matched box).
        labels (Tensor[...] | None): bool or 0/1 positive mask, same shape. ``None``: ``targets > 0``. Pass it when
            a positive may have ``q == 0`` (its target is then the floor 0.01, for ``alpha < 1``).
        alpha (float): blend in ``[0, 1]``: 0 is the target ``q``, 1 the score itself. Default 0.25 (RF-DETR passes
            its ``focal_alpha``, default 0.25; LW-DETR's paper gives 0.25).
        gamma (float): focusing exponent ``>= 0`` on negatives. Default 2.0 (hard-coded ``gamma = 2`` in RF-DETR).
        reduction (str): ``"none"``, ``"mean"`` or ``"sum"``.
        impl (str): ``"fused"`` (hand-derived backward), ``"autograd"`` or ``"compiled"`` (``torch.compile``).

    Returns:
        Tensor[...] float32 elementwise loss, or a scalar when reduced.

    Reference:
        Chen et al., "LW-DETR: A Transformer Replacement to YOLO for Real-Time Detection", arXiv:2406.03459 (IA-BCE);
        Roboflow RF-DETR, github.com/roboflow/rf-detr ``rfdetr/models/lwdetr.py`` ``SetCriterion.loss_labels``
        (``ia_bce_loss=True``, the default of its configs).
    """
    hyperparameters = {"alpha": alpha, "gamma": gamma}
    return _loss(_iabce_elementwise, logits, targets, labels, hyperparameters, reduction, impl)


# ----------------------------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class LossSpec:
    """A registered classification loss: its function, hyperparameters and documentation.

    Attributes:
        name: registry name (``vfl``).
        function: elementwise loss ``f(logits, targets, [labels,] **hyperparameters)``.
        params: the hyperparameters.
        formula: one-line formula for tables.
        reference: the paper.
        uses_labels: whether ``function`` takes the positive mask as third argument.
        elementwise: the kernel ``f(x, q, labels, impl, **hyperparameters)`` behind ``function``, without input
            validation: ``ClsLoss`` calls it on the training path.
    """

    name: str
    function: Callable[..., Tensor]
    params: tuple[HyperParam, ...]
    formula: str
    reference: str
    uses_labels: bool = False
    elementwise: Callable[..., Tensor] | None = field(default=None, repr=False, compare=False)
    defaults: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", {p.name: p.default for p in self.params})

    def validate(self, **hyperparameters: Any) -> dict[str, Any]:
        """Return the full, validated hyperparameters: defaults overridden by ``hyperparameters``.

        Raises:
            TypeError: an unknown keyword, or a value of the wrong type.
            ValueError: a value out of range.
        """
        known = {p.name: p for p in self.params}
        unknown = sorted(set(hyperparameters) - set(known))
        if unknown:
            valid = ", ".join(known) or "none"
            raise InvalidTypeError(f"loss {self.name!r} got unknown hyperparameter(s) {unknown}; valid: {valid}")
        out = dict(self.defaults)
        for key, value in hyperparameters.items():
            out[key] = known[key].check(known[key].arg, value)
        return out


_REGISTRY: dict[str, LossSpec] = {}


def _register(function: Callable[..., Tensor], elementwise: _Elementwise, formula: str, reference: str) -> None:
    params = tuple(p for p in elementwise.params if p.arg is not None)  # not QFL's alpha, a function keyword only
    name, uses_labels = elementwise.name, elementwise.uses_labels
    _REGISTRY[name] = LossSpec(name, function, params, formula, reference, uses_labels, elementwise)


_register(binary_cross_entropy, _bce_elementwise, "-(q log p + (1-q) log(1-p))", "stock YOLOv8 classification loss")
_register(
    sigmoid_focal_loss,
    _focal_elementwise,
    "alpha_t (1-p_t)^gamma BCE(x, q)",
    "Lin et al. 2017, Focal Loss (arXiv:1708.02002)",
)
_register(
    varifocal_loss,
    _vfl_elementwise,
    "pos: q BCE(x, q); neg: alpha p^gamma BCE(x, 0)",
    "Zhang et al. 2021, VarifocalNet (arXiv:2008.13367)",
)
_register(
    quality_focal_loss,
    _qfl_elementwise,
    "|q - p|^beta BCE(x, q)",
    "Li et al. 2020, Generalized Focal Loss (arXiv:2006.04388)",
)
_register(
    matchability_aware_loss,
    _mal_elementwise,
    "pos: BCE(x,q^gamma); neg: alpha p^gamma BCE(x,0)",
    "Huang et al. 2025, DEIM (arXiv:2412.04234)",
)
_register(
    iou_aware_bce_loss,
    _iabce_elementwise,
    "pos: BCE(x, p^alpha q^(1-alpha)); neg: p^gamma BCE(x, 0)",
    "LW-DETR/RF-DETR IA-BCE (arXiv:2406.03459)",
)


def list_losses() -> list[LossSpec]:
    """Return the registered losses, in registration order (bce, focal, vfl, qfl, mal, iabce)."""
    return list(_REGISTRY.values())


def get_loss_spec(name: Any) -> LossSpec:
    """Return the registry entry of ``name``.

    Raises:
        UnknownLossError: ``name`` is not registered; the message lists the valid names and a close match.
    """
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    valid = ", ".join(_REGISTRY)
    close = difflib.get_close_matches(str(name).lower(), list(_REGISTRY), n=1, cutoff=0.4)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownLossError(f"Unknown loss {name!r}. Valid losses: {valid}.{hint}")


class ClsLoss(nn.Module):
    """A registered loss with validated hyperparameters: ``forward(logits, targets, labels=None)``.

    The training path: hyperparameters are validated once, here; ``forward`` checks only types and shapes (no
    target-range check, which would read the tensor on the host and sync the device every step).

    Args:
        name (str): registry name (see ``list_losses()``).
        impl (str): implementation for VFL, QFL, MAL and IA-BCE (``"fused"``, ``"autograd"``, ``"compiled"``).
        **hyperparameters: the loss's keywords (``alpha=0.75``), validated at construction.
    """

    def __init__(self, name: str, *, impl: str = "fused", **hyperparameters: Any) -> None:
        super().__init__()
        self.spec = get_loss_spec(name)
        self.hyperparameters = self.spec.validate(**hyperparameters)
        self.impl = _check_choice("impl", impl, IMPLEMENTATIONS)

    @property
    def name(self) -> str:
        """Registry name of the loss."""
        return self.spec.name

    def forward(self, logits: Tensor, targets: Tensor, labels: Tensor | None = None) -> Tensor:
        """Elementwise loss, without a host sync.

        Args:
            logits (Tensor[...]): raw scores, e.g. ``(B, A, C)``.
            targets (Tensor[...]): soft targets in ``[0, 1]``, same shape (not checked here: the caller's contract).
            labels (Tensor[...] | None): positive mask (used by losses with ``uses_labels``; others ignore it).

        Returns:
            Tensor[...] float32 elementwise loss.
        """
        labels = labels if self.spec.uses_labels else None
        _check_inputs(logits, targets, labels, values=False)
        return _compute(self.spec.elementwise, logits, targets, labels, self.hyperparameters, "none", self.impl)

    def extra_repr(self) -> str:
        """Name and hyperparameters, shown by ``print(module)``."""
        hp = ", ".join(f"{k}={v}" for k, v in self.hyperparameters.items())
        return f"{self.name!r}" + (f", {hp}" if hp else "")


def get_cls_loss(name: str, *, impl: str = "fused", **hyperparameters: Any) -> ClsLoss:
    """Build a registered loss by name: ``get_cls_loss("vfl", alpha=0.75, gamma=2.0)``.

    Raises:
        UnknownLossError: unknown ``name`` (the message lists valid names).
        TypeError / ValueError: an unknown hyperparameter or an invalid value.
    """
    return ClsLoss(name, impl=impl, **hyperparameters)
