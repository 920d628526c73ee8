"""The project's user-error types (bottom layer: imports nothing from ``yolo_vfl``).

A *user error* is a problem with what the user asked for (an unknown loss, a bad value, a missing file), detected by
validation code: the command line prints it as one line and exits 2. Every other exception is a bug, or a failure
nobody validated, and keeps its traceback.

Every validator raises :class:`InvalidSettingError` (a bad value; also a ``ValueError``) or :class:`InvalidTypeError`
(a value of the wrong type; also a ``TypeError``), or :class:`UserError` for anything else the user must fix (a missing
file, a finished checkpoint). Python callers catch the built-in type they expect; the CLI tells a user error from a
bug by the type alone. Do not raise them from deep inside computations.
"""

from __future__ import annotations

__all__ = ["InvalidSettingError", "InvalidTypeError", "UserError"]


class UserError(Exception):
    """A problem with the user's input or environment, found by validation: one line, exit code 2 on the CLI."""


class InvalidSettingError(UserError, ValueError):
    """A setting with an invalid value; also a ``ValueError`` for callers that catch that."""


class InvalidTypeError(UserError, TypeError):
    """A setting or argument of the wrong type; also a ``TypeError`` for callers that catch that."""
