"""The synthetic dataset generator: layout, label format, determinism, atomic writes, reuse and argument checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yolo_vfl import data as D
from yolo_vfl.data import CLASS_NAMES, GENERATOR_VERSION, cache_dir, embedded_dataset, generate_dataset

SMALL = dict(n=12, seed=0, imgsz=64)


def read_labels(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "labels").rglob("*.txt"))}


def read_pixels(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(root.rglob("*.png"))}


def fail_after(k: int, exc: type[BaseException] = RuntimeError):
    """A replacement image writer that writes ``k`` images, then raises ``exc``."""
    calls = {"n": 0}
    real = D._write_image

    def writer(path, img):
        calls["n"] += 1
        if calls["n"] > k:
            raise exc("simulated interruption")
        real(path, img)

    return writer


def leftovers(parent: Path, name: str) -> list[Path]:
    return sorted(parent.glob(f".{name}.*"))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_VFL_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def ds192(tmp_path_factory) -> Path:
    """A 40-image dataset at the default image size (data.yaml path)."""
    return generate_dataset(tmp_path_factory.mktemp("d192") / "shapes", n=40, seed=1)


def test_layout_and_yaml(ds192):
    """Images/labels per split with matching stems, 80/20 split, data.yaml and dataset.json as documented."""
    root = ds192.parent
    assert ds192.name == "data.yaml" and ds192.is_absolute()
    cfg = yaml.safe_load(ds192.read_text())
    assert cfg["path"] == str(root) and cfg["train"] == "images/train" and cfg["val"] == "images/val"
    assert cfg["names"] == dict(enumerate(CLASS_NAMES))
    for split, count in (("train", 32), ("val", 8)):
        imgs = sorted(p.stem for p in (root / "images" / split).glob("*.png"))
        labs = sorted(p.stem for p in (root / "labels" / split).glob("*.txt"))
        assert len(imgs) == count and imgs == labs
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["generator_version"] == GENERATOR_VERSION
    assert (meta["n"], meta["seed"], meta["imgsz"], meta["n_train"], meta["n_val"]) == (40, 1, 192, 32, 8)
    assert meta["fingerprint"].startswith("sha256:") and len(meta["fingerprint"]) == 7 + 64
    assert sum(meta["instances"].values()) == sum(len(t.splitlines()) for t in read_labels(root).values())
    assert not leftovers(root.parent, root.name)


def test_label_format_and_box_sizes(ds192):
    """Every label line is 'cls cx cy w h' with 6 decimals, class in range, box inside the image and >= ~10 px."""
    root = ds192.parent
    n_boxes = 0
    for path in (root / "labels").rglob("*.txt"):
        text = path.read_text()
        assert text == "" or text.endswith("\n")
        img = cv2.imread(str(root / "images" / path.parent.name / f"{path.stem}.png"))
        assert img.shape == (192, 192, 3) and img.dtype == np.uint8
        for line in text.splitlines():
            fields = line.split(" ")
            assert len(fields) == 5 and all(len(f.split(".")[1]) == 6 for f in fields[1:])
            c, (cx, cy, w, h) = int(fields[0]), map(float, fields[1:])
            assert 0 <= c < len(CLASS_NAMES)
            assert 0 < cx <= 1 and 0 < cy <= 1 and 0 < w <= 1 and 0 < h <= 1
            assert cx - w / 2 >= -1e-6 and cy - h / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6 and cy + h / 2 <= 1 + 1e-6
            assert min(w, h) * 192 >= 9.5
            n_boxes += 1
    assert n_boxes >= 40


def test_class_names():
    """At least six distinct, non-empty class names, including the look-alike pairs."""
    assert len(CLASS_NAMES) >= 6 and len(set(CLASS_NAMES)) == len(CLASS_NAMES) and all(CLASS_NAMES)
    for a, b in (("circle", "octagon"), ("square", "rounded_square"), ("pentagon", "hexagon")):
        assert a in CLASS_NAMES and b in CLASS_NAMES


def test_same_seed_is_identical(tmp_path):
    """Same seed and parameters give byte-identical labels, identical pixels and the same fingerprint."""
    a = generate_dataset(tmp_path / "a", **SMALL).parent
    b = generate_dataset(tmp_path / "b", **SMALL).parent
    assert read_labels(a) == read_labels(b)
    pa, pb = read_pixels(a), read_pixels(b)
    assert pa.keys() == pb.keys() and len(pa) == 12 and all(np.array_equal(pa[k], pb[k]) for k in pa)
    fa = json.loads((a / "dataset.json").read_text())["fingerprint"]
    assert fa == json.loads((b / "dataset.json").read_text())["fingerprint"]


def test_different_seed_differs(tmp_path):
    """Another seed gives other labels, other pixels and another fingerprint."""
    a = generate_dataset(tmp_path / "a", **SMALL).parent
    b = generate_dataset(tmp_path / "b", **{**SMALL, "seed": 1}).parent
    assert read_labels(a) != read_labels(b)
    pa, pb = read_pixels(a), read_pixels(b)
    assert not any(np.array_equal(pa[k], pb[k]) for k in pa)
    assert (a / "dataset.json").read_text() != (b / "dataset.json").read_text()


def test_empty_images_clutter_and_all_classes(tmp_path):
    """With n=60 some images (~10%) have no objects but still have clutter, and every class occurs."""
    root = generate_dataset(tmp_path / "d", n=60, seed=0, imgsz=96).parent
    labels = read_labels(root)
    empty = [k for k, v in labels.items() if v == b""]
    assert 1 <= len(empty) <= 15
    for k in empty:  # a textured, cluttered background, not a flat colour
        img = cv2.imread(str(root / k.replace("labels", "images").replace(".txt", ".png")))
        assert img.std() > 5
    classes = {int(line.split()[0]) for v in labels.values() for line in v.decode().splitlines()}
    assert classes == set(range(len(CLASS_NAMES)))
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["empty_images"] == len(empty) and all(v > 0 for v in meta["instances"].values())


def test_split_sizes():
    """Val is never empty for n >= 2 (and val_fraction > 0), train is never empty."""
    assert D._split_sizes(600, 0.2) == (480, 120)
    assert D._split_sizes(2, 0.2) == (1, 1)
    assert D._split_sizes(3, 0.9) == (1, 2)
    assert D._split_sizes(1, 0.2) == (1, 0)
    assert D._split_sizes(10, 0.0) == (10, 0)


def test_no_val_split_points_val_at_train(tmp_path):
    """val_fraction=0 (or n=1) writes no val split and data.yaml's val points at the train images."""
    root = generate_dataset(tmp_path / "d", n=3, imgsz=64, val_fraction=0).parent
    assert yaml.safe_load((root / "data.yaml").read_text())["val"] == "images/train"
    assert not (root / "images" / "val").exists() and len(list((root / "images" / "train").iterdir())) == 3


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch, exc):
    """An error or Ctrl-C mid-way leaves neither out_dir nor a temp dir; a later call then succeeds."""
    out = tmp_path / "sub" / "shapes"
    monkeypatch.setattr(D, "_write_image", fail_after(3, exc))
    with pytest.raises(exc, match="simulated interruption"):
        generate_dataset(out, n=20, imgsz=64)
    assert not out.exists() and not leftovers(out.parent, out.name)
    monkeypatch.undo()
    monkeypatch.setenv("YOLO_VFL_CACHE", str(tmp_path / "cache"))
    y = generate_dataset(out, n=20, imgsz=64)
    assert y == out / "data.yaml" and (out / "dataset.json").exists() and len(list(out.rglob("*.png"))) == 20


def test_leftover_temp_dirs_are_ignored_and_old_ones_removed(tmp_path):
    """A stale temp dir (>1 h) is removed, a fresh one (maybe another process's) is kept, neither is used."""
    old, fresh = tmp_path / ".shapes.tmp-1-dead", tmp_path / ".shapes.tmp-2-live"
    for d in (old, fresh):
        (d / "images" / "train").mkdir(parents=True)
        (d / "data.yaml").write_text("path: nowhere\n")
    past = time.time() - 7200
    os.utime(old, (past, past))
    y = generate_dataset(tmp_path / "shapes", **SMALL)
    assert y.exists() and not old.exists() and fresh.exists()


def test_incomplete_dataset_is_not_a_dataset(tmp_path):
    """A directory with data.yaml but no dataset.json marker counts as 'not a dataset'."""
    out = tmp_path / "shapes"
    generate_dataset(out, **SMALL)
    (out / "dataset.json").unlink()
    with pytest.raises(FileExistsError, match="not a complete yolo_vfl dataset"):
        generate_dataset(out, **SMALL)
    assert generate_dataset(out, **SMALL, overwrite=True) == out / "data.yaml"
    assert (out / "dataset.json").exists()


def test_existing_dataset_is_reused(tmp_path, monkeypatch):
    """A second call with the same parameters returns the existing dataset without writing anything."""
    out = tmp_path / "shapes"
    y = generate_dataset(out, **SMALL)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    monkeypatch.setattr(D, "_write_image", fail_after(0))
    assert generate_dataset(out, **SMALL) == y
    assert generate_dataset(str(out), **SMALL, overwrite=True) == y  # same parameters: nothing to overwrite
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_moved_dataset_is_reused_with_updated_path(tmp_path, monkeypatch):
    """A dataset moved elsewhere is reused there and its data.yaml path points at the new place."""
    generate_dataset(tmp_path / "a", **SMALL)
    (tmp_path / "a").rename(tmp_path / "b")
    monkeypatch.setattr(D, "_write_image", fail_after(0))
    y = generate_dataset(tmp_path / "b", **SMALL)
    assert yaml.safe_load(y.read_text())["path"] == str(tmp_path / "b")
    assert y.read_text().startswith("# Synthetic shapes")


def test_parameter_mismatch_raises_unless_overwrite(tmp_path):
    """Another n/seed/imgsz/val_fraction at an existing dataset raises FileExistsError; overwrite=True replaces."""
    out = tmp_path / "shapes"
    generate_dataset(out, **SMALL)
    for change in ({"seed": 1}, {"n": 13}, {"imgsz": 96}, {"val_fraction": 0.5}):
        with pytest.raises(FileExistsError, match=f"{out}.*different parameters.*overwrite=True"):
            generate_dataset(out, **{**SMALL, **change})
    generate_dataset(out, **{**SMALL, "seed": 5}, overwrite=True)
    assert json.loads((out / "dataset.json").read_text())["seed"] == 5
    assert not leftovers(tmp_path, "shapes")


def test_non_dataset_target(tmp_path):
    """A non-empty foreign directory or a file raises FileExistsError naming it; an empty directory is filled."""
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=str(foreign)):
        generate_dataset(foreign, **SMALL)
    assert (foreign / "notes.txt").read_text() == "mine"
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(FileExistsError, match=str(afile)):
        generate_dataset(afile, **SMALL)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert generate_dataset(empty, **SMALL) == empty / "data.yaml"


def test_overwrite_refuses_cwd(tmp_path, monkeypatch):
    """overwrite=True never deletes a directory that contains the working directory."""
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("keep")
    monkeypatch.chdir(tmp_path / "x")
    with pytest.raises(ValueError, match="Refusing to overwrite"):
        generate_dataset(tmp_path, **SMALL, overwrite=True)
    assert (tmp_path / "x" / "f").read_text() == "keep"


def test_race_with_another_process(tmp_path, monkeypatch):
    """If an identical dataset appears at out_dir while generating, it is used and the temp dir is removed."""
    out = tmp_path / "shapes"
    real = D._write_dataset

    def racing(root, final, params):
        real(root, final, params)
        shutil.copytree(root, out)  # the other process renamed its (identical) dataset into place first

    monkeypatch.setattr(D, "_write_dataset", racing)
    assert generate_dataset(out, **SMALL) == out / "data.yaml"
    assert (out / "dataset.json").exists() and not leftovers(tmp_path, "shapes")


def test_race_with_different_dataset_raises(tmp_path, monkeypatch):
    """If a dataset with other parameters appears at out_dir meanwhile, FileExistsError and no temp dir remains."""
    out = tmp_path / "shapes"
    real = D._write_dataset

    def racing(root, final, params):
        real(root, final, params)
        real_gen = {**params, "seed": params["seed"] + 1}
        out.mkdir()
        real(out, out, real_gen)

    monkeypatch.setattr(D, "_write_dataset", racing)
    with pytest.raises(FileExistsError, match="different parameters"):
        generate_dataset(out, **SMALL)
    assert json.loads((out / "dataset.json").read_text())["seed"] == 1 and not leftovers(tmp_path, "shapes")


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        ({"n": 0}, ValueError, "n must be an int >= 1, got 0"),
        ({"n": 2.5}, TypeError, "n must be an int >= 1, got 2.5"),
        ({"n": True}, TypeError, "n must be an int >= 1, got True"),
        ({"n": "10"}, TypeError, "n must be an int >= 1, got '10'"),
        ({"seed": -1}, ValueError, "seed must be an int >= 0, got -1"),
        ({"seed": 1.0}, TypeError, "seed must be an int >= 0, got 1.0"),
        ({"imgsz": 16}, ValueError, r"imgsz must be an int in \[32, 4096\], got 16"),
        ({"imgsz": "192"}, TypeError, "imgsz must be an int"),
        ({"val_fraction": 1.0}, ValueError, "val_fraction must satisfy 0 <= val_fraction < 1, got 1.0"),
        ({"val_fraction": -0.1}, ValueError, "got -0.1"),
        ({"val_fraction": float("nan")}, ValueError, "got nan"),
        ({"val_fraction": "0.2"}, TypeError, "val_fraction must be a number"),
        ({"overwrite": "yes"}, TypeError, "overwrite must be True or False, got 'yes'"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, exc, message):
    """Bad arguments raise TypeError/ValueError naming the value and what is valid, before writing anything."""
    with pytest.raises(exc, match=message):
        generate_dataset(tmp_path / "shapes", **{**SMALL, **kwargs})
    assert not any(tmp_path.iterdir())


def test_bad_out_dir_type():
    """out_dir must be a str or path."""
    with pytest.raises(TypeError, match="out_dir must be a str or path, got 3"):
        generate_dataset(3)


def test_numpy_ints_accepted(tmp_path):
    """Numpy integers are valid n / seed / imgsz."""
    y = generate_dataset(tmp_path / "s", n=np.int64(3), seed=np.int32(2), imgsz=np.int64(64))
    assert json.loads((y.parent / "dataset.json").read_text())["n"] == 3


def test_cache_dir_precedence(tmp_path, monkeypatch):
    """$YOLO_VFL_CACHE, else $XDG_CACHE_HOME/yolo_vfl, else ~/.cache/yolo_vfl."""
    monkeypatch.setenv("YOLO_VFL_CACHE", str(tmp_path / "c1"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "c1"
    monkeypatch.delenv("YOLO_VFL_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "yolo_vfl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "yolo_vfl"


def test_embedded_dataset_generated_once(tmp_path, monkeypatch):
    """embedded_dataset writes into cache_dir() under a name with its parameters and reuses it afterwards."""
    y = embedded_dataset(n=12, seed=3, imgsz=64)
    assert y == tmp_path / "cache" / f"shapes-n12-s3-i64-v{GENERATOR_VERSION}" / "data.yaml" and y.exists()
    mtime = (y.parent / "dataset.json").stat().st_mtime_ns
    monkeypatch.setattr(D, "_write_image", fail_after(0))
    assert embedded_dataset(n=12, seed=3, imgsz=64) == y
    assert (y.parent / "dataset.json").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="imgsz"):
        embedded_dataset(imgsz=8)


def test_module_imports_without_torch_or_ultralytics():
    """Importing yolo_vfl.data (and the package, which loads lazily) imports neither torch nor ultralytics."""
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(D.__file__).parents[1])!r})\n"
        "import yolo_vfl.data as m\n"
        "assert len(m.CLASS_NAMES) >= 6\n"
        "print(sorted(k for k in ('torch', 'ultralytics') if k in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_ultralytics_loads_dataset(tmp_path):
    """Ultralytics' check_det_dataset accepts data.yaml (offline) and its YOLODataset reads every label."""
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    y = generate_dataset(tmp_path / "shapes", n=12, seed=0, imgsz=64)
    data = check_det_dataset(str(y))
    assert data["nc"] == len(CLASS_NAMES) and data["names"] == dict(enumerate(CLASS_NAMES))
    assert Path(data["train"]) == y.parent / "images" / "train" and Path(data["val"]) == y.parent / "images" / "val"
    ds = YOLODataset(img_path=data["val"], imgsz=64, data=data, task="detect", augment=False)
    assert len(ds.labels) == 2
    n_lines = sum(len(p.read_text().splitlines()) for p in (y.parent / "labels" / "val").glob("*.txt"))
    assert sum(len(lab["cls"]) for lab in ds.labels) == n_lines


# ----------------------------------------------------------------------------------------- the glyphs variant
def _objects(root: Path) -> list[list[float]]:
    return [[float(x) for x in line.split()] for v in read_labels(root).values() for line in v.decode().splitlines()]


def test_shapes_output_unchanged_by_variants(tmp_path):
    """The default variant is byte-for-byte generator v1: adding variants must not move the embedded dataset.

    Golden fingerprint (labels and pixel hashes) of ``n=40, seed=0, imgsz=64`` recorded before variants existed; if
    the generator's output changes on purpose, GENERATOR_VERSION must be bumped (cached datasets are then remade).
    """
    root = generate_dataset(tmp_path / "d", n=40, seed=0, imgsz=64).parent
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["variant"] == "shapes" and meta["names"] == list(CLASS_NAMES)
    assert meta["fingerprint"] == "sha256:b8ee234e7caf7a8cadbdaef360c9276903d2391d7828794410e4dbeaae34fc08"


def test_glyphs_variant_is_differently_made(tmp_path):
    """glyphs: its own six class names, every class occurs, more and smaller objects per image than shapes."""
    g = generate_dataset(tmp_path / "g", n=60, seed=1, imgsz=96, variant="glyphs").parent
    s = generate_dataset(tmp_path / "s", n=60, seed=1, imgsz=96).parent
    cfg = yaml.safe_load((g / "data.yaml").read_text())
    assert cfg["names"] == dict(enumerate(D.GLYPH_NAMES)) == dict(enumerate(D.class_names("glyphs")))
    assert not set(D.GLYPH_NAMES) & set(CLASS_NAMES)
    go, so = _objects(g), _objects(s)
    assert {int(o[0]) for o in go} == set(range(len(D.GLYPH_NAMES)))
    assert all(0 < o[3] <= 1 and 0 < o[4] <= 1 for o in go)
    assert len(go) > 1.2 * len(so)  # up to 9 objects per image instead of 6
    assert np.median([o[3] * o[4] for o in go]) < np.median([o[3] * o[4] for o in so])  # smaller objects
    meta = json.loads((g / "dataset.json").read_text())
    assert meta["variant"] == "glyphs" and sum(meta["instances"].values()) == len(go)
    assert read_labels(g) != read_labels(s)
    again = generate_dataset(tmp_path / "g2", n=60, seed=1, imgsz=96, variant="glyphs").parent
    assert read_labels(again) == read_labels(g)  # deterministic too


def test_digits_variant_boxes_hold_the_ink(tmp_path):
    """digits: ten classes named 0-9, every class occurs; each box is tight on drawn ink; deterministic."""
    import cv2

    d = generate_dataset(tmp_path / "d", n=80, seed=2, imgsz=96, variant="digits").parent
    cfg = yaml.safe_load((d / "data.yaml").read_text())
    assert cfg["names"] == dict(enumerate(D.DIGIT_NAMES)) == {i: str(i) for i in range(10)}
    objs = _objects(d)
    assert {int(o[0]) for o in objs} == set(range(10))
    assert all(0 < o[3] <= 1 and 0 < o[4] <= 1 for o in objs)
    heights = [o[4] for o in objs]
    assert 0.08 < min(heights) and max(heights) < 0.45  # 12-35% of the side, rotation adds a little
    lab = sorted((d / "labels" / "train").glob("*.txt"))[0]
    img = cv2.imread(str(d / "images" / "train" / f"{lab.stem}.png"))
    assert img.shape == (96, 96, 3)
    assert json.loads((d / "dataset.json").read_text())["variant"] == "digits"
    again = generate_dataset(tmp_path / "d2", n=80, seed=2, imgsz=96, variant="digits").parent
    assert read_labels(again) == read_labels(d)


@pytest.mark.parametrize("name", D.GLYPH_NAMES)
def test_glyph_polygons(name):
    """Each glyph is a simple polygon centred on its box, extent ~[-1, 1], with a sizeable area."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        pts = D._unit_shape(name, rng)
        lo, hi = pts.min(0), pts.max(0)
        assert np.allclose((lo + hi) / 2, 0, atol=0.06) and np.all(hi - lo > 0.5) and np.all(hi - lo < 2.2)
        x, y = pts[:, 0], pts[:, 1]
        area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
        assert 0.3 < area < 3.2


def test_dataset_without_variant_is_shapes(tmp_path, monkeypatch):
    """A dataset.json written before variants existed is a shapes dataset: reused, and not taken for glyphs."""
    y = generate_dataset(tmp_path / "d", **SMALL)
    meta = json.loads((y.parent / "dataset.json").read_text())
    del meta["variant"]
    (y.parent / "dataset.json").write_text(json.dumps(meta))
    monkeypatch.setattr(D, "_write_image", fail_after(0))
    assert generate_dataset(tmp_path / "d", **SMALL) == y
    with pytest.raises(FileExistsError, match="different parameters"):
        generate_dataset(tmp_path / "d", **SMALL, variant="glyphs")


@pytest.mark.parametrize("variant", ["glyph", "", None, 1])
def test_bad_variant(tmp_path, variant):
    """An unknown variant names the bad value and the valid ones, before anything is written."""
    with pytest.raises(ValueError, match=r"variant must be one of shapes, glyphs, digits, quick, got"):
        generate_dataset(tmp_path / "d", **SMALL, variant=variant)
    with pytest.raises(ValueError, match="variant must be one of"):
        embedded_dataset(n=12, variant=variant)
    assert not (tmp_path / "d").exists()


def test_resolve_embedded(tmp_path):
    """data=embedded / embedded-glyphs / embedded-digits name the generated datasets; anything else is not resolved."""
    assert D.EMBEDDED_NAMES == {
        "embedded": ("shapes", 0),
        "embedded-glyphs": ("glyphs", 1),
        "embedded-digits": ("digits", 2),
        "embedded-quick": ("quick", 3),
    }
    for value in (None, "", "coco128.yaml", "embedded.yaml", str(tmp_path), 3):
        assert D.resolve_embedded(value) is None
    y = D.resolve_embedded("embedded-glyphs")
    assert y == tmp_path / "cache" / f"glyphs-n600-s1-i192-v{GENERATOR_VERSION}" / "data.yaml"
    assert json.loads((y.parent / "dataset.json").read_text())["variant"] == "glyphs"


@pytest.mark.parametrize(
    "damage",
    [
        lambda root: (root / "images" / "train" / "000003.png").unlink(),
        lambda root: (root / "labels" / "val" / "000011.txt").unlink(),
        lambda root: (root / "images" / "val" / "000010.png").write_bytes(b""),
        lambda root: shutil.rmtree(root / "images" / "val"),
    ],
    ids=["train-image-deleted", "val-label-deleted", "image-emptied", "split-deleted"],
)
def test_incomplete_dataset_is_regenerated(tmp_path, damage):
    """A dataset with its marker but missing/emptied files is not trusted: it is regenerated in place, atomically."""
    out = tmp_path / "shapes"
    generate_dataset(out, **SMALL)
    labels, pixels = read_labels(out), read_pixels(out)
    damage(out)
    assert generate_dataset(out, **SMALL) == out / "data.yaml"
    assert read_labels(out) == labels
    assert read_pixels(out).keys() == pixels.keys()
    assert all(np.array_equal(read_pixels(out)[k], v) for k, v in pixels.items())
    assert not leftovers(tmp_path, "shapes")


def test_cached_embedded_dataset_with_deleted_images_is_regenerated(tmp_path):
    """The cache reuse checks the files, not only dataset.json: deleted images come back."""
    y = embedded_dataset(n=12, seed=3, imgsz=64)
    for p in list((y.parent / "images" / "train").glob("*.png"))[:4]:
        p.unlink()
    assert embedded_dataset(n=12, seed=3, imgsz=64) == y
    meta = json.loads((y.parent / "dataset.json").read_text())
    assert len(list((y.parent / "images" / "train").glob("*.png"))) == meta["n_train"] == 10
    assert len(list((y.parent / "labels" / "train").glob("*.txt"))) == 10


def test_regeneration_of_incomplete_dataset_is_atomic(tmp_path, monkeypatch):
    """An interrupted regeneration leaves the incomplete dataset as it was (no half-written mix, no temp dirs)."""
    out = tmp_path / "shapes"
    generate_dataset(out, **SMALL)
    (out / "images" / "train" / "000000.png").unlink()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    monkeypatch.setattr(D, "_write_image", fail_after(3))
    with pytest.raises(RuntimeError, match="simulated"):
        generate_dataset(out, **SMALL)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not leftovers(tmp_path, "shapes")


def test_bad_variant_suggests_the_close_one(tmp_path):
    """variant=glyph suggests glyphs."""
    with pytest.raises(ValueError, match="Did you mean 'glyphs'"):
        generate_dataset(tmp_path / "d", **SMALL, variant="glyph")


def test_too_many_images_or_too_little_space_is_refused_before_writing(tmp_path, monkeypatch):
    """``n`` above ``MAX_IMAGES`` is refused naming the limit; a dataset that cannot fit the disk names sizes."""
    with pytest.raises(ValueError, match=r"n=100000000 is more images than a generated dataset may have \(1,000,000\)"):
        generate_dataset(tmp_path / "big", n=100_000_000, imgsz=64)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(D.shutil, "disk_usage", lambda p: usage._replace(free=10**6))
    with pytest.raises(ValueError, match=r"n=1000 images of 192x192 need about 0\.\d GB, but .* has 0\.0 GB free"):
        generate_dataset(tmp_path / "sub" / "big", n=1000, imgsz=192)
    assert not any(tmp_path.iterdir())


def test_temp_dirs_of_dead_processes_are_removed(tmp_path):
    """A SIGKILLed generation's temp dir (its pid gone here) is removed by the next run; a live process's is kept."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = D._host()
    gone = tmp_path / f".other.tmp-{host}-{int(dead.stdout)}-0123abcd"
    live = tmp_path / f".other.tmp-{host}-{os.getppid()}-0123abcd"
    elsewhere = tmp_path / f".other.tmp-{host}x-{int(dead.stdout)}-0123abcd"  # another machine's: kept
    for d in (gone, live, elsewhere):
        (d / "images").mkdir(parents=True)
    generate_dataset(tmp_path / "shapes", **SMALL)
    assert not gone.exists() and live.exists() and elsewhere.exists()


def test_sigterm_during_generation_removes_the_temp_dir(tmp_path):
    """SIGTERM mid-way (as a job scheduler sends) removes the temporary directory as Ctrl-C does."""
    import signal

    code = f"from yolo_vfl.data import generate_dataset; generate_dataset({str(tmp_path / 'ds')!r}, n=5000, imgsz=256)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while not list(tmp_path.glob(".ds.tmp-*/images/train/*.png")) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
