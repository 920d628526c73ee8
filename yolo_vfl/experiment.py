"""The first runner's module name, kept for existing imports: the A/B stack lives in ``yolo_vfl.ab``."""

from __future__ import annotations

from .ab import *  # noqa: F403 - the public names of the A/B stack
from .ab import __all__  # noqa: F401
