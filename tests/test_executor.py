"""The run lifecycle: a finished run is returned, an interrupted one starts from zero, one process trains a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolo_vfl.executor import RunBusyError, execute, final_weights, set_aside
from yolo_vfl.fileio import file_lock, publish_dir, remove_path


def _run(tmp_path: Path, *, aside: Path | None = None, wait: bool = False) -> tuple[list[str], list[str]]:
    """Execute a run whose build writes ``work/done``; returns (builds, log lines)."""
    work, built, logs = tmp_path / "work", [], []

    def build() -> str:
        assert not work.exists()  # always a fresh start
        work.mkdir()
        (work / "done").write_text("ok")
        built.append("built")
        return "new"

    def finished() -> str | None:
        return "old" if (work / "done").is_file() else None

    execute("r", work, tmp_path / ".r.lock", finished, build, log=logs.append, wait=wait, aside=aside)
    return built, logs


def test_finished_run_is_not_built_again(tmp_path):
    """A run whose finished check passes is returned without building."""
    assert _run(tmp_path)[0] == ["built"]
    assert _run(tmp_path)[0] == []


def test_interrupted_run_is_set_aside_and_restarts_from_zero(tmp_path):
    """A work directory without the finished marker is moved aside (or removed) and the run built from scratch."""
    (tmp_path / "work" / "weights").mkdir(parents=True)
    built, logs = _run(tmp_path, aside=tmp_path / "aside")
    assert built == ["built"] and "restarts from zero" in logs[0]
    assert [p.name.split(".")[0] for p in (tmp_path / "aside").iterdir()] == ["work"]
    remove_path(tmp_path / "work" / "done")
    assert _run(tmp_path)[0] == ["built"] and len(list((tmp_path / "aside").iterdir())) == 1  # removed: no aside


def test_held_lock_refuses_or_waits(tmp_path):
    """Another holder of the run's lock: RunBusyError, nothing touched (test_pretrain covers waiting for it)."""
    with file_lock(tmp_path / ".r.lock"), pytest.raises(RunBusyError, match="another process"):
        _run(tmp_path)
    assert not (tmp_path / "work").exists()


def test_set_aside_keeps_every_attempt_and_publish_replaces(tmp_path):
    """Two attempts set aside in the same second get distinct names; publish_dir replaces a directory whole."""
    aside = tmp_path / "aside"
    for _ in range(2):
        (tmp_path / "w").mkdir()
        set_aside(tmp_path / "w", aside)
    assert len(list(aside.iterdir())) == 2
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a").write_text("new")
    publish_dir(tmp_path / "new", aside)
    assert [p.name for p in aside.iterdir()] == ["a"] and not (tmp_path / "new").exists()


def test_final_weights_prefers_best(tmp_path):
    """best.pt, else last.pt; neither is an error naming the folder."""
    with pytest.raises(FileNotFoundError, match="weights"):
        final_weights(tmp_path)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "last.pt").write_bytes(b"")
    assert final_weights(tmp_path).name == "last.pt"
    (tmp_path / "weights" / "best.pt").write_bytes(b"")
    assert final_weights(tmp_path).name == "best.pt"
