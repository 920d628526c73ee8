"""The one run lifecycle of everything that trains: lock, finished check, fresh start, training, publish.

An A/B run and the pretrained-checkpoint build both go through it. A run is finished when its own check says so (a
``result.json``, a published checkpoint) and is then never trained again. Anything else starts from zero: the
directory of an interrupted run is moved aside (or removed) first, never resumed, since Ultralytics' resume does not
restore the data order and augmentation state (a resumed run's numbers would differ from an uninterrupted run's).
Only one process trains a run at a time (a lock file per run).
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
Log = Callable[[str], None]


class RunBusyError(RuntimeError):
    """Another process holds the run's lock (it is training this run now)."""


def set_aside(path: Path, aside: Path | None) -> str:
    """Move ``path`` into the folder ``aside`` as ``<name>.<time>`` (removed when ``aside`` is None); says where."""
    if aside is None:
        remove_path(path)
        return f"removed {path}"
    aside.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target, k = aside / f"{path.name}.{stamp}", 1
    while target.exists():
        target, k = aside / f"{path.name}.{stamp}.{k}", k + 1
    shutil.move(str(path), str(target))
    return f"moved {path} to {target}"


def execute(
    name: str,
    work: Path,
    lock: Path,
    finished: Callable[[], T | None],
    build: Callable[[], T],
    *,
    log: Log,
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

    Raises:
        RunBusyError: another process holds the lock and ``wait`` is False.
    """
    found = finished()
    if found is not None:
        return found

    def waiting(pid: str) -> None:
        log(f"{name}: another process (pid {pid}) is training it; waiting for it")

    with file_lock(lock, wait=wait, on_wait=waiting) as locked:
        if not locked:
            raise RunBusyError(f"{name} is being trained by another process (lock {lock})")
        found = finished()  # the process waited for may have finished it
        if found is not None:
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
    callbacks: Mapping[str, Callable[[Any], None]] | None = None,
) -> Any:
    """Train ``YOLO(model)`` from scratch into the directory ``work`` (Ultralytics' project/name); returns the trainer.

    Args:
        model: model YAML or checkpoint.
        work: the run directory (Ultralytics ``save_dir``).
        args: Ultralytics train arguments (with ``data``; any loss settings of ``trainer``).
        trainer: the trainer class (default: Ultralytics' own for the task).
        callbacks: Ultralytics callbacks (event -> function) added to the model.
    """
    from ultralytics import YOLO

    yolo = YOLO(model)
    for event, fn in (callbacks or {}).items():
        yolo.add_callback(event, fn)
    given = {"trainer": trainer} if trainer is not None else {}
    yolo.train(**given, **args, project=str(work.parent), name=work.name, exist_ok=True)
    return yolo.trainer


def final_weights(work: str | os.PathLike[str]) -> Path:
    """The run's final model: ``weights/best.pt``, else ``weights/last.pt``.

    Raises:
        FileNotFoundError: the run directory holds neither.
    """
    weights = Path(work) / "weights"
    for name in ("best.pt", "last.pt"):
        if (weights / name).is_file():
            return weights / name
    raise FileNotFoundError(f"{weights} holds no best.pt or last.pt: training saved no checkpoint")
