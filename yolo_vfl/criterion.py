"""Put a registered classification loss into Ultralytics' YOLO criteria without copying their code.

Every Ultralytics detection-family criterion (``v8DetectionLoss`` and its segment, pose, OBB and YOLO26 subclasses,
and the two branches of the end-to-end ``E2ELoss`` / ``E2EDetectLoss``) computes, in 8.0 through 8.4::

    target_labels, target_bboxes, target_scores, fg_mask, ... = self.assigner(...)
    loss[cls] = self.bce(pred_scores, target_scores).sum() / target_scores_sum   # 8.4: times class_weights first

Those two instance attributes are the stable seams. ``install_cls_loss`` wraps ``assigner`` to remember the
assigner's ``target_labels`` and ``fg_mask`` of the current call, and replaces ``bce`` with a module that returns
the chosen elementwise loss. Ultralytics keeps everything else: box and DFL terms, normalization by
``target_scores_sum``, class weights, loss gains, loss names.

VFL needs the positive mask of each (anchor, class) entry: the one-hot of ``target_labels`` restricted to foreground
anchors. Background anchors carry the class of their image's GT #0 in ``target_labels`` and must not become
positives (the bug of the recipe in ultralytics issue #3604); here they are negatives for every class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from ultralytics.utils.loss import v8DetectionLoss

from .errors import InvalidSettingError, InvalidTypeError
from .losses import ClsLoss, _check_nonnegative, get_loss_spec, list_losses

__all__ = [
    "SETTING_KEYS",
    "TAL_KEYS",
    "ClsLossSettings",
    "VFLDetectionLoss",
    "install_cls_loss",
    "find_detection_losses",
    "check_branches",
]

#: Quality targets: TAL's normalized alignment metric (Ultralytics' ``target_scores``) or the IoU of the predicted box.
CLS_TARGETS = ("tal", "iou")

#: Weight of the non-target classes of foreground anchors: the loss's own negative weight (VFL: alpha p^gamma) or
#: BCE's full weight, as BCE pushes them down.
FG_NEGATIVES = ("loss", "bce")

#: Which branches of an end-to-end head (YOLO26, YOLOv10: ``one2many`` and ``one2one``) get the loss: both, or only
#: the one-to-one branch, whose top scores are the detections without NMS (the DETR analogue; one-to-many keeps BCE).
CLS_BRANCHES = ("both", "one2one")

#: Task-aligned assigner settings (``topk``, ``alpha``, ``beta`` of Ultralytics' ``TaskAlignedAssigner``; YOLOv8
#: uses 10, 0.5, 6.0, YOLOv6 and PP-YOLOE 13, 1.0, 6.0). Unset: the criterion's own values.
TAL_KEYS = ("tal_topk", "tal_alpha", "tal_beta")

#: Trainer / CLI settings owned by yolo_vfl: ``loss``, every registered hyperparameter (``vfl_alpha`` ...), the
#: quality target, the weight of foreground negatives, the BCE warm-up and the assigner settings.
SETTING_KEYS: tuple[str, ...] = (
    "loss",
    *(p.arg for spec in list_losses() for p in spec.params),
    "cls_target",
    "cls_fg_negatives",
    "cls_warmup",
    "cls_branches",
    *TAL_KEYS,
)


@dataclass(frozen=True)
class ClsLossSettings:
    """The classification-loss settings of a training run, validated.

    Attributes:
        loss: registry name (``bce``, ``focal``, ``vfl``, ``qfl``, ``mal``, ``iabce``).
        values: every hyperparameter setting of every loss, by setting name (``vfl_alpha``), defaults filled in,
            so that ``args.yaml`` records the complete configuration.
        target: quality target ``q`` of the positives: ``"tal"`` (Ultralytics' ``target_scores``: TAL's alignment
            metric normalized so each GT's best anchor gets that GT's max IoU) or ``"iou"`` (IoU of the decoded
            predicted box with its assigned GT box, detached, as in VarifocalNet and GFL).
        warmup: number of first epochs trained with BCE before switching to ``loss`` (YOLOv6-style warm-up).
        fg_negatives: ``"loss"`` (the loss's own weight for every negative entry) or ``"bce"`` (the other classes of
            a foreground anchor keep BCE's full weight, so a confident wrong class there is pushed down as hard as
            BCE does; background anchors keep the loss's weight).
        branches: ``"both"`` (every detection loss of the criterion) or ``"one2one"`` (only an end-to-end head's
            one-to-one branch; its one-to-many branch keeps stock BCE). ``"one2one"`` is refused on heads without it.
        tal: the assigner settings given (``{"tal_topk": 13, "tal_alpha": 1.0}``); the others keep the criterion's
            own values. They apply to the one-to-many assigners (an end-to-end head's ``one2one`` branch keeps its
            own) and during a BCE warm-up too: they choose the positives, whatever the loss.
    """

    loss: str = "bce"
    values: dict[str, Any] = field(default_factory=dict)
    target: str = "tal"
    warmup: int = 0
    fg_negatives: str = "loss"
    tal: dict[str, Any] = field(default_factory=dict)
    branches: str = "both"

    @classmethod
    def from_args(cls, args: Mapping[str, Any] | Any) -> ClsLossSettings:
        """Validate the settings found in a mapping or namespace (keys not in ``SETTING_KEYS`` are ignored).

        A key that is absent gets its default; a key that is present must hold a valid value: ``None`` and ``""`` (what
        the CLI makes of ``key=``) are errors, not defaults, and a bool is not an epoch count.

        Raises:
            UnknownLossError: unknown ``loss`` (the message lists the valid ones).
            TypeError / ValueError: a bad value, a hyperparameter of another loss set away from its default, or
                ``cls_warmup`` with ``loss=bce`` (either would silently do nothing).
        """
        if not isinstance(args, Mapping):
            args = vars(args)
        spec = get_loss_spec(_check_loss(args["loss"]) if "loss" in args else "bce")
        values: dict[str, Any] = {}
        for other in list_losses():
            for p in other.params:
                if p.arg not in args:
                    values[p.arg] = p.default
                    continue
                value = p.check(p.arg, args[p.arg])
                if other is not spec and value != p.default:
                    raise InvalidSettingError(
                        f"{p.arg}={args[p.arg]!r} has no effect with loss={spec.name!r}; it applies to "
                        f"loss={other.name!r}. Remove it or set loss={other.name}."
                    )
                values[p.arg] = value
        own = {key: check(args[key]) if key in args else default for key, (default, check) in _OWN_SETTINGS.items()}
        if own["cls_warmup"] and spec.name == "bce":
            others = ", ".join(s.name for s in list_losses() if s.name != "bce")
            raise InvalidSettingError(
                f"cls_warmup={own['cls_warmup']} has no effect with loss='bce': it is the number of first epochs "
                f"trained with BCE before switching to another loss ({others}). Remove it or set one of those losses."
            )
        tal = {key: _TAL_CHECKS[key](key, args[key]) for key in TAL_KEYS if key in args}
        return cls(
            spec.name, values, own["cls_target"], own["cls_warmup"], own["cls_fg_negatives"], tal, own["cls_branches"]
        )

    def check_epochs(self, epochs: int) -> None:
        """Check that the BCE warm-up leaves epochs for the chosen loss (called before training and on resume).

        Args:
            epochs (int): total epochs of the run (Ultralytics' ``epochs``).

        Raises:
            ValueError: ``cls_warmup >= epochs``: the whole run would train BCE while the logs, ``args.yaml`` and the
                checkpoints say ``loss=vfl``.
        """
        if self.warmup and self.warmup >= epochs:
            raise InvalidSettingError(
                f"Invalid cls_warmup={self.warmup} for epochs={epochs} with loss={self.loss!r}: valid values are 0 to "
                f"{epochs - 1} (the first cls_warmup epochs train BCE; {self.loss} must train at least one epoch)"
            )

    def to_args(self) -> dict[str, Any]:
        """All settings as trainer arguments: ``{"loss": "vfl", "vfl_alpha": 0.75, ..., "cls_target": "tal"}``.

        The assigner settings appear only when given (absent: the criterion's own values).
        """
        return {
            "loss": self.loss,
            **self.values,
            "cls_target": self.target,
            "cls_fg_negatives": self.fg_negatives,
            "cls_warmup": self.warmup,
            "cls_branches": self.branches,
            **self.tal,
        }

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The chosen loss's hyperparameters by function keyword (``{"alpha": 0.75, ...}``)."""
        spec = get_loss_spec(self.loss)
        return {p.name: self.values.get(p.arg, p.default) for p in spec.params}

    def build(self) -> ClsLoss:
        """A fresh ``ClsLoss`` module for these settings."""
        return ClsLoss(self.loss, **self.hyperparameters)

    def describe(self) -> str:
        """One line for logs: ``loss=vfl vfl_alpha=0.75 vfl_gamma=2.0 vfl_iou_weighted=True``."""
        spec = get_loss_spec(self.loss)
        parts = [f"loss={self.loss}", *(f"{p.arg}={self.values.get(p.arg, p.default)}" for p in spec.params)]
        parts += [f"cls_target={self.target}", f"cls_fg_negatives={self.fg_negatives}"]
        parts += [f"cls_warmup={self.warmup}"] if self.warmup else []
        parts += [f"cls_branches={self.branches}"] if self.branches != "both" else []
        parts += [f"{k}={v}" for k, v in self.tal.items()]
        return " ".join(parts)


def _check_loss(value: Any) -> str:
    """Canonical loss name (``"VFL"`` -> ``"vfl"``); raises UnknownLossError with the valid names."""
    return get_loss_spec(value.lower() if isinstance(value, str) else value).name


def _choice(key: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise InvalidSettingError(f"Invalid {key}={value!r}: valid values are {', '.join(map(repr, choices))}")
        return value

    return check


def _check_warmup(value: Any) -> int:
    """``cls_warmup``: an int >= 0 (a bool, ``None`` or float is a TypeError)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(
            f"cls_warmup must be an integer number of epochs >= 0, got {value!r} ({type(value).__name__})"
        )
    if value < 0:
        raise InvalidSettingError(f"Invalid cls_warmup={value}: valid values are integers >= 0 (epochs of BCE first)")
    return value


def _check_topk(key: str, value: Any) -> int:
    """``tal_topk``: an int >= 1 (candidate anchors per ground truth)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(
            f"{key} must be an integer >= 1 (anchors per ground truth), got {value!r} ({type(value).__name__})"
        )
    if value < 1:
        raise InvalidSettingError(f"Invalid {key}={value}: valid values are integers >= 1 (YOLOv8 uses 10, YOLOv6 13)")
    return value


_TAL_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "tal_topk": _check_topk,
    "tal_alpha": _check_nonnegative,  # exponents of score and IoU in the alignment metric, as the losses' own
    "tal_beta": _check_nonnegative,
}

#: The settings that are not loss hyperparameters: ``key: (default, validator)``.
_OWN_SETTINGS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "cls_target": ("tal", _choice("cls_target", CLS_TARGETS)),
    "cls_fg_negatives": ("loss", _choice("cls_fg_negatives", FG_NEGATIVES)),
    "cls_warmup": (0, _check_warmup),
    "cls_branches": ("both", _choice("cls_branches", CLS_BRANCHES)),
}


def normalize_setting(key: str, value: Any) -> Any:
    """Validate one setting on its own and return its canonical value (``"VFL"`` -> ``"vfl"``, ``1`` -> ``1.0``).

    Raises:
        KeyError: ``key`` is not one of ``SETTING_KEYS``.
        UnknownLossError / TypeError / ValueError: a bad value, as in ``ClsLossSettings.from_args``.
    """
    if key == "loss":
        return _check_loss(value)
    if key in _OWN_SETTINGS:
        return _OWN_SETTINGS[key][1](value)
    if key in _TAL_CHECKS:
        return _TAL_CHECKS[key](key, value)
    for spec in list_losses():
        for p in spec.params:
            if p.arg == key:
                return p.check(p.arg, value)
    raise KeyError(key)


class _AssignerTap:
    """Calls the wrapped assigner and remembers what the classification term needs from the last call.

    ``last`` holds ``(target_labels, fg_mask, pred_bboxes, target_bboxes, target_scores)``: references to tensors the
    criterion computes anyway, nothing is copied. ``target_scores`` is kept in the assigner's float32: under AMP the
    criterion hands ``bce`` a copy cast to the logits' half precision.

    Attribute access falls through to the wrapped assigner, so code reading ``assigner.topk`` keeps working.
    """

    def __init__(self, assigner: Any) -> None:
        self.assigner = assigner
        self.last: tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.assigner(*args, **kwargs)
        pred_bboxes = args[1] if len(args) > 1 else kwargs.get("pd_bboxes")
        # target_labels (B, A), fg_mask (B, A), pred_bboxes (B, A, 4|5) in pixels, target_bboxes (B, A, 4|5),
        # target_scores (B, A, nc)
        self.last = (out[0], out[3], pred_bboxes, out[1], out[2])
        return out

    def __getattr__(self, name: str) -> Any:
        if name == "assigner":  # not yet set (e.g. during unpickling): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.assigner, name)


def predicted_iou(pred_bboxes: Tensor, target_bboxes: Tensor, fg_mask: Tensor) -> Tensor:
    """IoU of each foreground anchor's predicted box with its assigned GT box (0 on background), detached.

    Args:
        pred_bboxes (Tensor[B, A, 4 | 5]): decoded predicted boxes, xyxy pixels (or xywhr for OBB).
        target_bboxes (Tensor[B, A, 4 | 5]): assigned GT boxes in the same format.
        fg_mask (Tensor[B, A]): foreground anchors.

    Returns:
        Tensor[B, A] float32 in [0, 1], computed without a host sync (every anchor's IoU, masked).
    """
    from ultralytics.utils.metrics import bbox_iou, probiou

    # Every anchor, then zeroed off the foreground: selecting the foreground first (``x[fg]``, ``if fg.any()``) would
    # read the mask on the host and stall the device every training step.
    fg = fg_mask.bool()
    dim = pred_bboxes.shape[-1]
    pd, gt = pred_bboxes.detach().float().reshape(-1, dim), target_bboxes.detach().float().reshape(-1, dim)
    value = probiou(pd, gt) if dim == 5 else bbox_iou(pd, gt, xywh=False)  # (B * A, 1): probiou takes (N, 5) only
    return torch.where(fg, value.view(fg.shape).clamp(0.0, 1.0), 0.0)  # a background box's NaN -> 0 too


def foreground_labels(target_labels: Tensor, fg_mask: Tensor, nc: int) -> Tensor:
    """One-hot positive mask of the assigned class on foreground anchors only.

    Args:
        target_labels (Tensor[B, A]): class of the GT assigned to each anchor. Background anchors hold the class of
            their image's GT #0; with no GT in the batch it is a float tensor filled with ``nc``.
        fg_mask (Tensor[B, A]): foreground anchors (bool in 8.4, float in 8.0-8.3).
        nc (int): number of classes.

    Returns:
        Tensor[B, A, nc] bool: True at (anchor, assigned class) for foreground anchors, False everywhere else.
    """
    fg = fg_mask.bool()
    labels = torch.zeros((*fg.shape, nc), dtype=torch.bool, device=fg.device)
    index = target_labels.long().clamp(0, nc - 1).unsqueeze(-1)  # not in place: may be the assigner's
    return labels.scatter_(-1, index, fg.unsqueeze(-1))


class ClsLossTap(nn.Module):
    """Replacement for a criterion's ``bce``: ``forward(pred_scores, target_scores)`` returns the chosen loss.

    Args:
        cls_loss (ClsLoss): the elementwise loss.
        tap (_AssignerTap): the criterion's wrapped assigner, source of the positive mask.
        nc (int): number of classes.
        target (str): ``"tal"`` (use Ultralytics' target_scores) or ``"iou"`` (IoU of the predicted box).
        fg_negatives (str): ``"loss"`` or ``"bce"`` (BCE for the non-target classes of foreground anchors).
    """

    def __init__(
        self, cls_loss: ClsLoss, tap: _AssignerTap, nc: int, target: str = "tal", fg_negatives: str = "loss"
    ) -> None:
        super().__init__()
        self.cls_loss = cls_loss
        self.tap = tap
        self.nc = nc
        self.target = target
        self.fg_negatives = fg_negatives

    def forward(self, pred_scores: Tensor, target_scores: Tensor) -> Tensor:
        """Elementwise classification loss.

        Args:
            pred_scores (Tensor[B, A, nc]): logits (any float dtype; computed in float32 with autocast off).
            target_scores (Tensor[B, A, nc]): TAL quality targets, zero off the assigned class and on background.

        Returns:
            Tensor[B, A, nc] float32; Ultralytics sums it and divides by ``target_scores_sum``.
        """
        if self.tap.last is None:
            raise RuntimeError(
                "yolo_vfl: the classification loss was called before the assigner in this criterion call; this "
                "Ultralytics version computes its loss in an unexpected order. Please report it."
            )
        target_labels, fg_mask, pred_bboxes, target_bboxes, tal_scores = self.tap.last
        self.tap.last = None  # each assigner call serves exactly one loss call
        if tal_scores.shape == target_scores.shape:
            target_scores = tal_scores  # full precision under AMP (same values otherwise)
        labels = None
        if self.cls_loss.spec.uses_labels or self.target == "iou":
            labels = foreground_labels(target_labels, fg_mask, self.nc)
            if labels.shape != pred_scores.shape:
                raise RuntimeError(
                    f"yolo_vfl: labels {tuple(labels.shape)} do not match pred_scores {tuple(pred_scores.shape)}"
                )
        if self.target == "iou":
            target_scores = labels * predicted_iou(pred_bboxes, target_bboxes, fg_mask).unsqueeze(-1)
        loss = self.cls_loss(pred_scores, target_scores, labels)
        if self.fg_negatives == "bce" and self.cls_loss.name != "bce":
            if labels is None:
                labels = foreground_labels(target_labels, fg_mask, self.nc)
            with torch.autocast(pred_scores.device.type, enabled=False):
                bce = F.binary_cross_entropy_with_logits(  # every entry: selecting the fg anchors would sync
                    pred_scores.float(), target_scores.float(), reduction="none"
                )
            fg_negative = fg_mask.bool().unsqueeze(-1) & ~labels  # (B, A, nc): other classes of fg anchors
            loss = torch.where(fg_negative, bce, loss)
        return loss

    def extra_repr(self) -> str:
        """Number of classes, quality target and foreground-negative weighting."""
        return f"nc={self.nc}, target={self.target!r}, fg_negatives={self.fg_negatives!r}"


def find_detection_losses(criterion: Any) -> list[v8DetectionLoss]:
    """The ``v8DetectionLoss`` instances inside a criterion: itself, or its branches (E2E, TVP).

    Args:
        criterion: a model's ``criterion`` object.

    Returns:
        list of the detection losses whose classification term computes the loss.
    """
    return [det for _, det in _named_detection_losses(criterion)]


def _named_detection_losses(criterion: Any) -> list[tuple[str, v8DetectionLoss]]:
    """``(attribute name, loss)`` of each detection loss in a criterion (``""`` for the criterion itself)."""
    if isinstance(criterion, v8DetectionLoss):
        return [("", criterion)]
    found: list[tuple[str, v8DetectionLoss]] = []
    for name, value in vars(criterion).items():
        if isinstance(value, v8DetectionLoss) and all(value is not f for _, f in found):
            found.append((name, value))
    return found


def _set_assigner(assigner: Any, tal: Mapping[str, Any]) -> None:
    """Set ``topk`` / ``alpha`` / ``beta`` of a TaskAlignedAssigner; a ``topk2`` that followed ``topk`` follows it."""
    if "tal_topk" in tal:
        if getattr(assigner, "topk2", None) == assigner.topk:
            assigner.topk2 = tal["tal_topk"]
        assigner.topk = tal["tal_topk"]
    for key, attr in (("tal_alpha", "alpha"), ("tal_beta", "beta")):
        if key in tal:
            setattr(assigner, attr, tal[key])


def install_cls_loss(criterion: Any, settings: ClsLossSettings | ClsLoss) -> int:
    """Make a criterion use a registered classification loss (in place, idempotent).

    Args:
        criterion: an Ultralytics detection-family criterion (``model.criterion``).
        settings: the loss settings, or a ready ``ClsLoss``.

    Returns:
        int: the number of detection losses patched (2 for end-to-end heads).

    Raises:
        InvalidTypeError: the criterion contains no ``v8DetectionLoss`` (e.g. classification or RT-DETR models).
        InvalidSettingError: ``cls_branches=one2one`` on a criterion without a one-to-one branch.
    """
    named = _named_detection_losses(criterion)
    if not named:
        raise InvalidTypeError(
            f"yolo_vfl supports detect, segment, pose and OBB YOLO models; criterion {type(criterion).__name__} has "
            "no v8DetectionLoss to patch"
        )
    targets = [det for name, det in named if _gets_loss(name, settings, named)]
    for det in targets:
        cls_loss = settings if isinstance(settings, ClsLoss) else settings.build()
        target = "tal" if isinstance(settings, ClsLoss) else settings.target
        fg_negatives = "loss" if isinstance(settings, ClsLoss) else settings.fg_negatives
        tap = det.assigner if isinstance(det.assigner, _AssignerTap) else _AssignerTap(det.assigner)
        det.assigner = tap
        det.bce = ClsLossTap(cls_loss, tap, det.nc, target, fg_negatives)
    tal = {} if isinstance(settings, ClsLoss) else settings.tal
    for name, det in named:
        if tal and name != "one2one":
            _set_assigner(det.assigner.assigner, tal)
    return len(targets)


def _gets_loss(name: str, settings: ClsLossSettings | ClsLoss, named: list[tuple[str, Any]]) -> bool:
    """Whether the detection loss ``name`` of a criterion gets the loss under ``settings.branches``.

    Raises:
        InvalidSettingError: ``cls_branches=one2one`` on a criterion without a ``one2one`` branch.
    """
    if isinstance(settings, ClsLoss) or settings.branches == "both":
        return True
    if all(n != "one2one" for n, _ in named):
        raise _no_one2one_error()
    return name == "one2one"


def _no_one2one_error() -> InvalidSettingError:
    return InvalidSettingError(
        "Invalid cls_branches='one2one': this model's head has no one-to-one branch (an end-to-end head such as "
        "YOLO26's or YOLOv10's has one); valid here: 'both'"
    )


def check_branches(settings: ClsLossSettings, model: nn.Module) -> None:
    """Refuse ``cls_branches=one2one`` before training when ``model``'s head has no one-to-one branch.

    Args:
        settings: the run's loss settings.
        model: an Ultralytics model (``DetectionModel``; its last module is the head).

    Raises:
        InvalidSettingError: the head is not end-to-end (no ``one2one`` branch to train alone).
    """
    head = model.model[-1] if hasattr(model, "model") and len(model.model) else None
    end_to_end = getattr(head, "end2end", False) or getattr(head, "one2one_cv2", None) is not None
    if settings.branches == "one2one" and not end_to_end:
        raise _no_one2one_error()


def installed_loss(criterion: Any) -> str | None:
    """Name of the loss installed in a criterion (``None`` for stock Ultralytics BCE)."""
    names = {getattr(d.bce, "cls_loss", None) and d.bce.cls_loss.name for d in find_detection_losses(criterion)}
    return names.pop() if len(names) == 1 else None


class VFLDetectionLoss(v8DetectionLoss):
    """``v8DetectionLoss`` whose classification term is a registered loss (VFL by default).

    Box and DFL losses, the ``target_scores_sum`` normalization, class weights, gains and loss names are
    Ultralytics'. ``loss="bce"`` gives exactly the stock numbers.

    Args:
        model (DetectionModel): de-paralleled model with ``args`` (gains) set, as for ``v8DetectionLoss``.
        loss (str): registry name: ``bce``, ``focal``, ``vfl``, ``qfl``, ``mal``, ``iabce``.
        **kwargs: the loss's hyperparameters as settings (``vfl_alpha=0.75``) or function keywords
            (``alpha=0.75``), and ``v8DetectionLoss`` keywords (``tal_topk``).
    """

    def __init__(self, model: nn.Module, loss: str = "vfl", **kwargs: Any) -> None:
        spec = get_loss_spec(loss)
        by_name = {p.name: p.arg for p in spec.params}
        settings = {"loss": loss}
        base_kwargs = {}
        for key, value in kwargs.items():
            if key in by_name:
                settings[by_name[key]] = value
            elif key in SETTING_KEYS:
                settings[key] = value
            else:
                base_kwargs[key] = value
        _check_base_kwargs(spec.name, base_kwargs)
        if "cls_warmup" in settings:
            raise InvalidTypeError("cls_warmup is a trainer setting (epochs of BCE first); a loss object has no epochs")
        self.cls_loss_settings = ClsLossSettings.from_args(settings)
        super().__init__(model, **base_kwargs)
        install_cls_loss(self, self.cls_loss_settings)


def _check_base_kwargs(loss: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse keywords that neither the loss nor ``v8DetectionLoss`` takes, naming both lists.

    Raises:
        InvalidTypeError: the first unknown keyword, the loss's own keywords and the criterion's.
    """
    import inspect

    base = [k for k in inspect.signature(v8DetectionLoss.__init__).parameters if k not in ("self", "model")]
    unknown = [k for k in kwargs if k not in base]
    if unknown:
        own = [p.name for p in get_loss_spec(loss).params] or ["none"]
        raise InvalidTypeError(
            f"VFLDetectionLoss(loss={loss!r}) got an unknown keyword {unknown[0]!r}; {loss}'s own keywords: "
            f"{', '.join(own)}; v8DetectionLoss keywords: {', '.join(base)}; settings: {', '.join(SETTING_KEYS)}"
        )
