"""Shared fixtures: offline Ultralytics settings, tiny generated datasets for every task, a tiny-training helper."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Before anything imports ultralytics: no network, and a settings directory of our own (CI sets its own per env).
# Under pytest-xdist (-n auto, at most 4 workers) each worker gets its own settings directory and one torch thread.
os.environ.setdefault("YOLO_OFFLINE", "1")
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
for _key, _prefix in (("YOLO_CONFIG_DIR", "yolo_vfl_cfg_"), ("YOLO_VFL_CACHE", "yolo_vfl_cache_")):
    if not os.environ.get(_key):  # made only when the caller has not set one, and removed when the tests end
        os.environ[_key] = tempfile.mkdtemp(prefix=_prefix)
        atexit.register(shutil.rmtree, os.environ[_key], ignore_errors=True)
    elif _WORKER and _key == "YOLO_CONFIG_DIR":  # the caller's, one subdirectory per worker
        os.environ[_key] = os.path.join(os.environ[_key], _WORKER)
        os.makedirs(os.environ[_key], exist_ok=True)
if _WORKER:  # one torch thread per worker (the workers already use every core), also in the tests' subprocesses
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import logging  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

# Ultralytics' log handler keeps the sys.stdout of import time, which pytest's capture closes between tests; without
# this, logging prints "--- Logging error ---" tracebacks into the captured stderr of later tests.
logging.raiseExceptions = False

IMGSZ = 64


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that share a module-scoped fixture form one xdist group: the fixture is built once, on one worker."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        scopes = {d.scope for fixture in (defs.name2fixturedefs.values() if defs else ()) for d in fixture}
        if "module" in scopes:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


KPT = 5  # keypoints per object in the generated pose data


def _convert_labels(src: Path, dst: Path, task: str) -> None:
    """Rewrite YOLO detection labels (cls cx cy w h) as segment polygons, pose keypoints or OBB corners."""
    for split in ("train", "val"):
        (dst / "labels" / split).mkdir(parents=True, exist_ok=True)
        (dst / "images" / split).mkdir(parents=True, exist_ok=True)
        for img in sorted((src / "images" / split).iterdir()):
            (dst / "images" / split / img.name).symlink_to(img)
        for lab in sorted((src / "labels" / split).glob("*.txt")):
            out = []
            for line in lab.read_text().split("\n"):
                if not line.strip():
                    continue
                c, cx, cy, w, h = (float(v) for v in line.split())
                x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
                corners = [x0, y0, x1, y0, x1, y1, x0, y1]
                if task == "segment" or task == "obb":
                    out.append(" ".join([str(int(c))] + [f"{v:.6f}" for v in corners]))
                else:  # pose: box then KPT keypoints (x, y, visible) on a diagonal inside the box
                    kpts = []
                    for k in range(KPT):
                        t = (k + 1) / (KPT + 1)
                        kpts += [x0 + t * w, y0 + t * h, 2.0]
                    out.append(" ".join([str(int(c))] + [f"{v:.6f}" for v in (cx, cy, w, h, *kpts)]))
            (dst / "labels" / split / lab.name).write_text("\n".join(out))


@pytest.fixture(scope="session")
def det_data(tmp_path_factory) -> Path:
    """A tiny embedded-generator detection dataset (16 images at 64 px): path of its data.yaml."""
    from yolo_vfl.data import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("data") / "shapes", n=16, seed=0, imgsz=IMGSZ)


@pytest.fixture(scope="session")
def task_data(det_data, tmp_path_factory):
    """``task_data(task)``: data.yaml of the tiny dataset converted for detect, segment, pose or obb."""
    made: dict[str, Path] = {"detect": det_data}

    def get(task: str) -> Path:
        if task not in made:
            src = det_data.parent
            dst = tmp_path_factory.mktemp(f"data-{task}")
            _convert_labels(src, dst, task)
            cfg = yaml.safe_load(det_data.read_text())
            cfg["path"] = str(dst)
            if task == "pose":
                cfg["kpt_shape"] = [KPT, 3]
                cfg["flip_idx"] = list(range(KPT))
            (dst / "data.yaml").write_text(yaml.safe_dump(cfg))
            made[task] = dst / "data.yaml"
        return made[task]

    return get


def load_experiment_script(name: str):
    """An ``experiments/<name>.py`` script imported as a module (the scripts are not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_tiny(model_cfg, data, project: Path, name: str = "run", **kwargs):
    """Train a tiny model with VFLDetectionTrainer (1 epoch at 64 px on CPU unless overridden); returns the YOLO."""
    from ultralytics import YOLO

    from yolo_vfl import VFLDetectionTrainer

    args = dict(
        data=str(data),
        epochs=1,
        imgsz=IMGSZ,
        batch=4,
        workers=0,
        device="cpu",
        project=str(project),
        name=name,
        exist_ok=True,
        plots=False,
        verbose=False,
        seed=0,
    )
    args.update(kwargs)
    model = YOLO(model_cfg)
    model.train(trainer=VFLDetectionTrainer, **args)
    return model
