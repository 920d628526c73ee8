"""The one run lifecycle of everything that trains (A/B runs, the pretrained-checkpoint build).

A finished run (its own check: a ``result.json``, a published checkpoint) is never trained again. Anything else starts
from zero: an interrupted run's directory is set aside first, never resumed (Ultralytics' resume does not restore the
data order and augmentation state). One process trains a run at a time (a lock file per run); the build publishes
its result atomically (``yolo_vfl.fileio``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from .fileio import file_lock, remove_path

__all__ = ["RunBusyError", "execute", "set_aside", "train", "final_weights"]

T = TypeVar("T")


class RunBusyError(RuntimeError):
    """Another process holds the run's lock (it is training this run now)."""


def set_aside(path: Path, aside: Path | None) -> str:
    """Move ``path`` into the folder ``aside`` as ``<name>.<time>[.k]`` (removed when ``aside`` is None); says where."""
    if aside is None:
        remove_path(path)
        return f"removed {path}"
    aside.mkdir(parents=True, exist_ok=True)
    stamp = f"{path.name}.{datetime.now():%Y%m%d-%H%M%S}"
    target, k = aside / stamp, 0
    while target.exists():
        target, k = aside / f"{stamp}.{k + 1}", k + 1
    shutil.move(str(path), str(target))
    return f"moved {path} to {target}"


def execute(
    name: str,
    work: Path,
    lock: Path,
    finished: Callable[[], T | None],
    build: Callable[[], T],
    *,
    log: Callable[[str], None],
    wait: bool = False,
    aside: Path | None = None,
) -> T:
    """Run ``build`` once under the run's lock, from a fresh ``work`` directory, unless the run has finished.

    Args:
        name: the run's name in messages.
        work: the directory the run trains in; one left by an interrupted run is set aside first.
        lock: the run's lock file.
        finished: the finished run's result, or None (checked before and again under the lock).
        build: trains and publishes the run (what ``finished`` will find); returns its result.
        log: one-line progress messages.
        wait: wait for another process holding the lock (then take its result), instead of raising.
        aside: where an interrupted run's directory goes (None: removed).

    Returns:
        The finished run's result, or ``build``'s.

    Raises:
        RunBusyError: another process holds the lock and ``wait`` is False.
    """
    if (found := finished()) is not None:
        return found
    on_wait = lambda pid: log(f"{name}: another process (pid {pid}) is training it; waiting for it")  # noqa: E731
    with file_lock(lock, wait=wait, on_wait=on_wait) as locked:
        if not locked:
            raise RunBusyError(f"{name} is being trained by another process (lock {lock})")
        if (found := finished()) is not None:  # the process waited for may have finished it
            return found
        if work.exists() or work.is_symlink():
            log(f"{name}: interrupted earlier, restarts from zero ({set_aside(work, aside)})")
        return build()


def train(
    model: str,
    work: Path,
    args: Mapping[str, Any],
    *,
    trainer: Any = None,
    callbacks: Mapping[str, Callable] | None = None,
) -> Any:
    """Train ``YOLO(model)`` from scratch into the directory ``work`` (Ultralytics' project/name).

    Args:
        model: model YAML or checkpoint.
        work: the run directory (Ultralytics ``save_dir``).
        args: Ultralytics train arguments (with ``data``; any loss settings of ``trainer``).
        trainer: the trainer class (default: Ultralytics' own for the task).
        callbacks: Ultralytics callbacks (event -> function) added to the model.

    Returns:
        The Ultralytics trainer (``metrics``, ``save_dir``).
    """
    from ultralytics import YOLO

    yolo = YOLO(model)
    for event, fn in (callbacks or {}).items():
        yolo.add_callback(event, fn)
    yolo.train(
        **({"trainer": trainer} if trainer else {}), **args, project=str(work.parent), name=work.name, exist_ok=True
    )
    return yolo.trainer


def final_weights(work: str | os.PathLike[str]) -> Path:
    """The run's final model: ``weights/best.pt``, else ``weights/last.pt``.

    Raises:
        FileNotFoundError: the run directory holds neither.
    """
    found = [Path(work) / "weights" / n for n in ("best.pt", "last.pt") if (Path(work) / "weights" / n).is_file()]
    if not found:
        raise FileNotFoundError(f"{Path(work) / 'weights'} holds no best.pt or last.pt: training saved no checkpoint")
    return found[0]
