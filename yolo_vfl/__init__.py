"""yolo-vfl: train Ultralytics YOLO with Varifocal / Quality Focal classification losses instead of BCE.

Every public name is loaded on first attribute access: the loss library (``yolo_vfl.losses``) is plain PyTorch, the
integration (criterion, trainers) imports Ultralytics, and the report layer of the A/B stack (``yolo_vfl.ab.report``)
imports neither, so importing the package itself costs nothing.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ClsLoss": "losses",
    "UnknownLossError": "losses",
    "binary_cross_entropy": "losses",
    "get_cls_loss": "losses",
    "list_losses": "losses",
    "quality_focal_loss": "losses",
    "sigmoid_focal_loss": "losses",
    "varifocal_loss": "losses",
    "VFLDetectionLoss": "criterion",
    "install_cls_loss": "criterion",
    "ClsLossSettings": "criterion",
    "VFLDetectionTrainer": "trainer",
    "VFLSegmentationTrainer": "trainer",
    "VFLPoseTrainer": "trainer",
    "VFLOBBTrainer": "trainer",
    "trainer_for_task": "trainer",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """The public names, imported from their module on first access."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
