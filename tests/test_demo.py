"""The first-run demo dataset ``data=embedded-quick`` (variant ``quick``): generated, loadable, resolvable."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yolo_vfl import data as D
from yolo_vfl.cli import _generated_imgsz


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_VFL_CACHE", str(tmp_path / "cache"))


def _objects(root: Path) -> list[list[float]]:
    lines = [line for p in (root / "labels").rglob("*.txt") for line in p.read_text().splitlines()]
    return [[float(v) for v in line.split()] for line in lines]


def test_quick_classes_are_distinct_shapes():
    """Three of the default shapes and none of their look-alike partners (octagon, rounded_square, star)."""
    assert D.class_names("quick") == D.QUICK_NAMES == ("circle", "square", "triangle")
    assert set(D.QUICK_NAMES) < set(D.CLASS_NAMES) and "quick" in D.VARIANTS


def test_quick_variant_generates_few_large_objects(tmp_path):
    """1-3 large objects per image (30-60% of the side), few empty images, every class occurs."""
    root = D.generate_dataset(tmp_path / "q", n=60, seed=3, imgsz=96, variant="quick").parent
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["variant"] == "quick" and meta["names"] == list(D.QUICK_NAMES)
    assert all(meta["instances"][c] > 0 for c in D.QUICK_NAMES) and meta["empty_images"] <= 6
    per_image = [len(p.read_text().splitlines()) for p in (root / "labels").rglob("*.txt")]
    assert max(per_image) <= 3
    sides = [max(w, h) for _, _, _, w, h in _objects(root)]
    assert min(sides) > 0.15 and sum(sides) / len(sides) > 0.3


def test_quick_images_have_no_clutter():
    """The quick variant draws a plain gradient, no distractors: an empty image has no edges, a cluttered one has."""
    assert not D._VARIANTS["quick"].clutter and D._VARIANTS["shapes"].clutter
    empty = D._Variant(D.QUICK_NAMES, empty_p=1.0, max_objects=3, min_diameter=0.3, max_diameter=0.6, clutter=False)

    def edges(variant: D._Variant, i: int) -> float:  # fraction of pixels 30 levels off a blur of the image
        img = D._render(np.random.default_rng([7, i]), 96, variant)[0].astype(np.float32)
        return float((np.abs(img - cv2.GaussianBlur(img, (0, 0), 2)).max(2) > 30).mean())

    assert all(edges(empty, i) == 0 for i in range(20))
    assert all(edges(empty._replace(clutter=True), i) > 0.005 for i in range(20))


def test_embedded_quick_resolves_and_loads_in_ultralytics(tmp_path):
    """data=embedded-quick is a 200-image, 96 px dataset in the cache that Ultralytics' check_det_dataset accepts."""
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    assert D.EMBEDDED_NAMES["embedded-quick"] == ("quick", 3)
    y = D.resolve_embedded("embedded-quick")
    assert y == tmp_path / "cache" / f"quick-n200-s3-i96-v{D.GENERATOR_VERSION}" / "data.yaml"
    assert D.resolve_embedded("embedded-quick") == y  # generated once, reused
    meta = json.loads((y.parent / "dataset.json").read_text())
    assert (meta["n_train"], meta["n_val"], meta["imgsz"]) == (160, 40, 96)
    assert yaml.safe_load(y.read_text())["names"] == dict(enumerate(D.QUICK_NAMES))
    assert _generated_imgsz(str(y)) == 96 and _generated_imgsz(str(tmp_path / "nowhere.yaml")) == 192  # train's imgsz
    data = check_det_dataset(str(y))
    assert data["nc"] == 3 and data["names"] == dict(enumerate(D.QUICK_NAMES))
    ds = YOLODataset(img_path=data["val"], imgsz=96, data=data, task="detect", augment=False)
    assert len(ds.labels) == 40
    n_val_objects = sum(len(p.read_text().splitlines()) for p in (y.parent / "labels" / "val").glob("*.txt"))
    assert sum(len(lab["cls"]) for lab in ds.labels) == n_val_objects
