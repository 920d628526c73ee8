"""Faults during training lose nothing: a failed checkpoint write keeps the previous checkpoint whole."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from conftest import IMGSZ

import yolo_vfl.fileio
from yolo_vfl.cli import main

pytestmark = pytest.mark.slow


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(det_data, tmp_path, capfd, monkeypatch):
    """ENOSPC while epoch 2's last.pt is written: one line, exit 2, epoch 1's last.pt intact, no temporary file."""
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        name = Path(f"/proc/self/fd/{fd}").resolve().name
        if name.startswith(".last.pt.") and (tmp_path / "run" / "weights" / "last.pt").exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(yolo_vfl.fileio.os, "fsync", full_disk)
    argv = ["train", f"data={det_data}", "model=yolov8n.yaml", "loss=vfl", "epochs=3", f"imgsz={IMGSZ}", "batch=4"]
    code = main([*argv, "workers=0", f"project={tmp_path}", "name=run", "plots=False"])
    err = capfd.readouterr().err
    assert code == 2 and "No space left on device" in err and err.strip().count("\n") == 0, err
    weights = tmp_path / "run" / "weights"
    ckpt = torch.load(weights / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 0 and ckpt["optimizer"] is not None  # epoch 1's checkpoint, resumable
    assert sorted(p.name for p in weights.iterdir()) == ["best.pt", "last.pt"]
