"""yolo-vfl: train Ultralytics YOLO with Varifocal / Quality Focal classification losses instead of BCE.

The loss library (``yolo_vfl.losses``) is plain PyTorch and imports eagerly; the Ultralytics integration
(criterion, trainers) imports Ultralytics and is loaded on first attribute access.
"""

from __future__ import annotations

from typing import Any

from .losses import (
    ClsLoss,
    UnknownLossError,
    binary_cross_entropy,
    get_cls_loss,
    list_losses,
    quality_focal_loss,
    sigmoid_focal_loss,
    varifocal_loss,
)

__version__ = "0.1.0"

_LAZY = {
    "VFLDetectionLoss": "criterion",
    "install_cls_loss": "criterion",
    "ClsLossSettings": "criterion",
    "VFLDetectionTrainer": "trainer",
    "VFLSegmentationTrainer": "trainer",
    "VFLPoseTrainer": "trainer",
    "VFLOBBTrainer": "trainer",
    "trainer_for_task": "trainer",
}

__all__ = [
    "__version__",
    "ClsLoss",
    "UnknownLossError",
    "binary_cross_entropy",
    "get_cls_loss",
    "list_losses",
    "quality_focal_loss",
    "sigmoid_focal_loss",
    "varifocal_loss",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
