"""Deterministic synthetic YOLO-format detection dataset (look-alike shapes on cluttered backgrounds) from a seed.

The dataset is meant to be small enough that ``yolov8n`` learns it on a couple of CPU cores in minutes at
``imgsz`` 128-192, yet hard enough that the classification branch matters:

* eight classes in look-alike groups: ``circle`` / ``octagon`` (curve vs eight flat sides), ``square`` /
  ``rounded_square`` (sharp vs rounded corners), ``pentagon`` / ``hexagon`` (five vs six sides) and ``triangle`` /
  ``star`` (a fat five-pointed star is close to a pentagon, a small triangle to a star's tip);
* colour is drawn independently of the class, objects are filled, outlined in another colour or hollow, with random
  rotation, a mild aspect-ratio squash (circles become ellipse-ish), scale variation and slight vertex jitter;
* backgrounds are textured (smooth colour gradients, noise, sometimes stripes) and cluttered with unlabelled
  distractors: lines, arcs, irregular blobs (some translucent), partial outlines of the shape classes and specks;
* objects overlap (each keeps at least 65% of its pixels visible), 0-6 objects per image, about 10% of the images
  have none.

Layout (the Ultralytics standard)::

    DIR/data.yaml            path: <absolute DIR>, train: images/train, val: images/val, names: {0: circle, ...}
    DIR/dataset.json         generator version, parameters, per-class counts, content fingerprint (written last)
    DIR/images/{train,val}/NNNNNN.png
    DIR/labels/{train,val}/NNNNNN.txt   one "cls cx cy w h" line per object (normalized, 6 decimals); empty if none

Image ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` and written as PNG, so the same parameters always
give byte-identical labels and identical pixels. A dataset is written into a temporary sibling directory and renamed
into place once complete (``dataset.json`` is written last), so an interrupted run never leaves a half dataset. A
dataset is reused only when ``dataset.json`` records the same parameters and every image and label file it lists is
there (images non-empty); otherwise it is generated again and swapped in atomically.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import difflib
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, Union

import cv2
import numpy as np
import yaml

from .errors import InvalidSettingError, InvalidTypeError
from .fileio import remove_path as _remove

__all__ = [
    "CLASS_NAMES",
    "EMBEDDED_NAMES",
    "GENERATOR_VERSION",
    "GLYPH_NAMES",
    "DIGIT_NAMES",
    "QUICK_NAMES",
    "VARIANTS",
    "cache_dir",
    "class_names",
    "embedded_dataset",
    "generate_dataset",
    "resolve_embedded",
]

CLASS_NAMES: tuple[str, ...] = (
    "circle",
    "octagon",
    "square",
    "rounded_square",
    "pentagon",
    "hexagon",
    "triangle",
    "star",
)
"""Class names of the default ``shapes`` variant, index = class id."""

GLYPH_NAMES: tuple[str, ...] = ("cross", "tee", "ell", "arrow", "diamond", "crescent")
"""Class names of the ``glyphs`` variant, index = class id."""

DIGIT_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))
"""Class names of the ``digits`` variant (the digit drawn), index = class id."""

QUICK_NAMES: tuple[str, ...] = ("circle", "square", "triangle")
"""Class names of the ``quick`` variant (three shapes of the default classes, no look-alike pair), index = class id."""

GENERATOR_VERSION = 1
"""Bumped whenever the generated content changes (part of the cache directory name and of ``dataset.json``)."""

META_FILE = "dataset.json"
"""The completion marker: written last, a dataset directory without it is not a dataset."""

_GENERATOR = "yolo_vfl.data"
_STALE_S = 3600.0  # leftover temporary directories older than this are removed
MAX_IMAGES = 1_000_000
"""The most images one dataset may have (``n``): a million 192-pixel images take ~70 GB and hours to write."""
_BYTES_PER_PIXEL = 2.0  # these noisy PNGs: ~1.9 bytes per pixel at 192 and 640 pixels
_BYTES_PER_FILE = 4096  # a label file (and the image's last block) takes a filesystem block
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<host>[A-Za-z0-9_]+)-)?(?P<pid>\d+)-[0-9a-f]{8}$")
_MIN_VISIBLE = 0.65  # an occluded object keeps at least this fraction of its pixels ...
_MIN_EXTENT = 0.8  # ... and at least this fraction of its box width and height
_MAX_IOU = 0.5  # boxes of two objects never overlap more than this
# Fast lossless PNG: these noisy images barely compress, so skip the LZ77 match search (Huffman only) and use the
# SUB filter where this OpenCV can choose it (4.11+); ~2x faster than the default settings for a similar size.
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
if hasattr(cv2, "IMWRITE_PNG_FILTER"):
    _PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT


class _Variant(NamedTuple):
    """How one dataset variant is made: its classes and its object statistics."""

    names: tuple[str, ...]
    empty_p: float  # probability that an image has no objects
    max_objects: int  # objects per image: 1..max_objects (when not empty)
    min_diameter: float  # smallest object diameter (circumscribed circle), fraction of the image side ...
    max_diameter: float  # ... and the largest
    text: bool = False  # objects are characters drawn with a font (their names), not polygons
    clutter: bool = True  # textured background, unlabelled distractors and occluding lines; else a plain gradient


_VARIANTS: dict[str, _Variant] = {
    # eight closed outlines in look-alike pairs, 0-6 objects of 8-40% of the image side, 10% empty images
    "shapes": _Variant(CLASS_NAMES, empty_p=0.1, max_objects=6, min_diameter=0.08, max_diameter=0.4),
    # six glyphs built from bars (cross / tee / ell differ in their number of arms, an arrow's head resembles a
    # tee's bar end-on, a diamond a squashed arrow head, a crescent a bent bar); more and smaller objects
    # (0-9 of 6-30% of the side), 5% empty images
    "glyphs": _Variant(GLYPH_NAMES, empty_p=0.05, max_objects=9, min_diameter=0.06, max_diameter=0.3),
    # ten digits drawn with OpenCV's Hershey fonts (four faces, upright or italic, stroke width and a rotation of
    # +-20 degrees drawn at random: made by a font renderer, not from polygons), 0-7 objects whose height is 12-35%
    # of the side, partial outlines of the shapes and stray letters as clutter, 5% empty images
    "digits": _Variant(DIGIT_NAMES, empty_p=0.05, max_objects=7, min_diameter=0.12, max_diameter=0.35, text=True),
    # the first-run demo: three clearly different shapes, 1-3 large objects (30-60% of the side), 3% empty images,
    # on a plain smooth gradient without distractors (an easy problem that a few minutes of CPU training learns)
    "quick": _Variant(QUICK_NAMES, empty_p=0.03, max_objects=3, min_diameter=0.3, max_diameter=0.6, clutter=False),
}
VARIANTS: tuple[str, ...] = tuple(_VARIANTS)
"""Dataset variants: ``shapes`` (the default, the embedded dataset), ``glyphs`` and ``digits`` (made differently)."""

EMBEDDED_NAMES: dict[str, tuple[str, int]] = {
    "embedded": ("shapes", 0),
    "embedded-glyphs": ("glyphs", 1),
    "embedded-digits": ("digits", 2),
    "embedded-quick": ("quick", 3),
}
"""``data=`` names of the generated datasets: name -> (variant, generator seed)."""

_EMBEDDED_SIZES: dict[str, tuple[int, int]] = {"embedded-quick": (200, 96)}
"""``(n, imgsz)`` of the generated datasets in :data:`EMBEDDED_NAMES` that are not 600 images of 192 px."""

PathLike = Union[str, "os.PathLike[str]"]
LOGGER = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------- paths
def cache_dir() -> Path:
    """Directory for generated datasets: ``$YOLO_VFL_CACHE``, else ``$XDG_CACHE_HOME/yolo_vfl``, else ``~/.cache``.

    Returns:
        The cache directory (not created).
    """
    env = os.environ.get("YOLO_VFL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "yolo_vfl"
    return Path.home() / ".cache" / "yolo_vfl"


def embedded_dataset(*, n: int = 600, seed: int = 0, imgsz: int = 192, variant: str = "shapes") -> Path:
    """The embedded dataset, generated into :func:`cache_dir` on first use and reused afterwards.

    The directory is ``cache_dir()/{variant}-n{n}-s{seed}-i{imgsz}-v{GENERATOR_VERSION}``. Concurrent first uses by
    several processes are safe: each generates into its own temporary directory, the first rename wins and the
    others use the winner's dataset.

    Args:
        n: Number of images (train + val).
        seed: Seed of the generator.
        imgsz: Image side in pixels.
        variant: One of :data:`VARIANTS`.

    Returns:
        Path of the dataset's ``data.yaml``.
    """
    _check_int("n", n, 1)
    _check_int("seed", seed, 0)
    _check_int("imgsz", imgsz, 32, 4096)
    _check_variant(variant)
    out = cache_dir() / f"{variant}-n{int(n)}-s{int(seed)}-i{int(imgsz)}-v{GENERATOR_VERSION}"
    return generate_dataset(out, n=n, seed=seed, imgsz=imgsz, variant=variant)


def resolve_embedded(data: Any) -> Path | None:
    """The data.yaml of a generated dataset named in :data:`EMBEDDED_NAMES` (generated on first use), else None.

    Args:
        data: A ``data=`` value: ``"embedded"`` (the default dataset), ``"embedded-glyphs"`` (the second one), or
            anything else (a path, None), for which None is returned.

    Returns:
        Path of the dataset's ``data.yaml``, or None when ``data`` is not one of the names.
    """
    if not isinstance(data, str) or data not in EMBEDDED_NAMES:
        return None
    variant, seed = EMBEDDED_NAMES[data]
    n, imgsz = _EMBEDDED_SIZES.get(data, (600, 192))
    return embedded_dataset(n=n, seed=seed, imgsz=imgsz, variant=variant)


def class_names(variant: str = "shapes") -> tuple[str, ...]:
    """The class names of a dataset variant, index = class id.

    Raises:
        ValueError: ``variant`` is not one of :data:`VARIANTS`.
    """
    _check_variant(variant)
    return _VARIANTS[variant].names


# ---------------------------------------------------------------------------------------------- argument checks
def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """Raise TypeError unless ``value`` is an int (not bool), ValueError unless ``low <= value <= high``."""
    valid = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidTypeError(f"{name} must be {valid}, got {value!r} ({type(value).__name__})")
    if value < low or (high is not None and value > high):
        raise InvalidSettingError(f"{name} must be {valid}, got {value!r}")


def _check_variant(variant: Any) -> None:
    """Raise ValueError naming the valid variants unless ``variant`` is one of them."""
    if not isinstance(variant, str) or variant not in _VARIANTS:
        close = difflib.get_close_matches(variant, VARIANTS, n=1, cutoff=0.6) if isinstance(variant, str) else []
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise InvalidSettingError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}.{hint}")


def _check_args(n: Any, seed: Any, imgsz: Any, val_fraction: Any, overwrite: Any, variant: Any = "shapes") -> None:
    """Validate the parameters of :func:`generate_dataset`; raise naming the bad value and what is valid."""
    _check_variant(variant)
    _check_int("n", n, 1)
    if n > MAX_IMAGES:
        raise InvalidSettingError(f"n={n} is more images than a generated dataset may have ({MAX_IMAGES:,}).")
    _check_int("seed", seed, 0)
    _check_int("imgsz", imgsz, 32, 4096)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float, np.integer, np.floating)):
        raise InvalidTypeError(
            f"val_fraction must be a number with 0 <= val_fraction < 1, got {val_fraction!r} "
            f"({type(val_fraction).__name__})"
        )
    if not (math.isfinite(val_fraction) and 0 <= val_fraction < 1):
        raise InvalidSettingError(f"val_fraction must satisfy 0 <= val_fraction < 1, got {val_fraction!r}")
    if not isinstance(overwrite, (bool, np.bool_)):
        raise InvalidTypeError(f"overwrite must be True or False, got {overwrite!r} ({type(overwrite).__name__})")


# ------------------------------------------------------------------------------------------------------ drawing
def _regular(k: int, rng: np.random.Generator, jitter: float = 0.04) -> np.ndarray:
    """A regular k-gon of circumradius ~1 with slightly jittered vertex radii and angles."""
    t = np.arange(k) * (2 * np.pi / k) + rng.uniform(-jitter, jitter, k) * (np.pi / k)
    r = 1.0 + rng.uniform(-jitter, jitter, k)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _unit_shape(name: str, rng: np.random.Generator) -> np.ndarray:
    """Polygon (N, 2) of the class called ``name``, centred at 0 with extent ~[-1, 1]."""
    if name in GLYPH_NAMES:
        return _glyph(name, rng)
    if name == "circle":
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if name == "octagon":
        return _regular(8, rng, 0.02)
    if name in ("square", "rounded_square"):
        h = 0.75
        if name == "square":
            return np.array([[-h, -h], [h, -h], [h, h], [-h, h]]) * rng.uniform(0.97, 1.03, (4, 2))
        rr = h * rng.uniform(0.3, 0.55)
        pts = []
        for (cx, cy), a0 in zip(
            ((h - rr, h - rr), (-h + rr, h - rr), (-h + rr, -h + rr), (h - rr, -h + rr)),
            (0.0, 0.5 * np.pi, np.pi, 1.5 * np.pi),
        ):
            t = a0 + np.linspace(0, 0.5 * np.pi, 7)
            pts.append(np.stack([cx + rr * np.cos(t), cy + rr * np.sin(t)], 1))
        return np.concatenate(pts)
    if name == "pentagon":
        return _regular(5, rng)
    if name == "hexagon":
        return _regular(6, rng)
    if name == "triangle":
        return _regular(3, rng)
    # star: five points, a fat inner radius so that it stays close to a pentagon
    t = np.arange(10) * (np.pi / 5)
    r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.45, 0.62))
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _glyph(name: str, rng: np.random.Generator) -> np.ndarray:
    """Polygon (N, 2) of a ``glyphs`` class, centred on its box, extent ~[-1, 1]; bar half-width ``a``."""
    a = rng.uniform(0.2, 0.3)
    if name == "cross":  # four arms
        pts = [(-a, 1), (a, 1), (a, a), (1, a), (1, -a), (a, -a), (a, -1), (-a, -1), (-a, -a), (-1, -a), (-1, a)]
        pts.append((-a, a))
    elif name == "tee":  # three arms: a full-width bar on a stem
        b = 1 - 2 * a
        pts = [(-1, 1), (1, 1), (1, b), (a, b), (a, -1), (-a, -1), (-a, b), (-1, b)]
    elif name == "ell":  # two arms
        b = -1 + 2 * a
        pts = [(-1, 1), (-1 + 2 * a, 1), (-1 + 2 * a, b), (1, b), (1, -1), (-1, -1)]
    elif name == "arrow":  # a thinner shaft and a triangular head
        w, h, x = 0.6 * a, rng.uniform(0.5, 0.7), rng.uniform(0.0, 0.3)
        pts = [(-1, -w), (x, -w), (x, -h), (1, 0), (x, h), (x, w), (-1, w)]
    elif name == "diamond":  # a rhombus, narrower than it is tall
        r = rng.uniform(0.45, 0.65)
        pts = [(0, 1), (r, 0), (0, -1), (-r, 0)]
    else:  # crescent: a disc minus an offset disc
        d, r2 = rng.uniform(0.35, 0.5), rng.uniform(0.75, 0.85)
        x = (1 + d * d - r2 * r2) / (2 * d)  # where the two circles cross: (x, +-y)
        y = math.sqrt(1 - x * x)
        t_out = np.linspace(math.atan2(y, x), 2 * np.pi - math.atan2(y, x), 40)
        t_in = math.atan2(y, x - d)
        t_in = np.linspace(2 * np.pi - t_in, t_in, 30)
        outer = np.stack([np.cos(t_out), np.sin(t_out)], 1)
        inner = np.stack([d + r2 * np.cos(t_in), r2 * np.sin(t_in)], 1)
        poly = np.concatenate([outer, inner])
        return poly - (poly.min(0) + poly.max(0)) / 2
    return np.asarray(pts, np.float64) * rng.uniform(0.97, 1.03, (len(pts), 2))


def _transform(pts: np.ndarray, rng: np.random.Generator, radius: float) -> np.ndarray:
    """Squash (aspect jitter, independent of the class), rotate and scale a unit polygon."""
    a = math.exp(rng.uniform(-0.12, 0.12))
    pts = pts * np.array([a, 1 / a])
    th = rng.uniform(0, 2 * np.pi)
    c, s = math.cos(th), math.sin(th)
    return pts @ np.array([[c, s], [-s, c]]) * radius


def _fixed(pts: np.ndarray) -> np.ndarray:
    """Float pixel coordinates to cv2 fixed-point int32 (``shift=_SHIFT``)."""
    return np.round(pts * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random BGR colour."""
    c = rng.integers(0, 256, 3)
    return int(c[0]), int(c[1]), int(c[2])


def _contrasting(rng: np.random.Generator, ref: np.ndarray, min_dist: float = 90.0) -> tuple[int, int, int]:
    """A random colour at least ``min_dist`` (RGB Euclidean) away from ``ref``, or the farthest of a few tries."""
    best, best_d = (0, 0, 0), -1.0
    for _ in range(12):
        c = _colour(rng)
        d = float(np.linalg.norm(np.asarray(c, np.float64) - ref))
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _smooth_field(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Standard normal noise on a ``cells`` x ``cells`` grid, upsampled (bicubic) to ``size`` x ``size``."""
    small = rng.standard_normal((cells, cells, channels)).astype(np.float32)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC).reshape(size, size, channels)


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel x and y coordinate arrays (float32, size x size)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx, yy


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """A textured float32 BGR background: two-colour smooth gradient, colour noise and sometimes stripes."""
    c1, c2 = rng.uniform(0, 255, (2, 1, 1, 3))
    cells = int(rng.integers(2, 5))
    m = 1 / (1 + np.exp(-1.5 * rng.standard_normal((cells, cells, 1))))  # smooth two-colour mix, on a coarse grid
    img = cv2.resize((c1 * (1 - m) + c2 * m).astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
    img += _smooth_field(rng, s, int(rng.integers(8, 25)), 3) * np.float32(rng.uniform(4, 16))
    if rng.random() < 0.35:
        xx, yy = _grid(s)
        th, period = rng.uniform(0, np.pi), rng.uniform(5, 20) * s / 192
        k = 2 * np.pi / period
        phase = np.float32(rng.uniform(0, 2 * np.pi))
        wave = np.sin(xx * np.float32(k * math.cos(th)) + yy * np.float32(k * math.sin(th)) + phase)
        img += (wave * np.float32(rng.uniform(6, 20)))[..., None]
    return img


def _blob(rng: np.random.Generator, radius: float) -> np.ndarray:
    """An irregular closed blob (random Fourier radius), clearly not one of the shape classes."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3):
        r += rng.uniform(0.15, 0.3) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    for k in range(4, 9):
        r += rng.uniform(0.0, 0.08) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.25, None)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1) * radius


def _distractors(
    img: np.ndarray, rng: np.random.Generator, s: int, rmin: float, rmax: float, names: tuple[str, ...]
) -> None:
    """Draw unlabelled clutter in place: lines, arcs, blobs, partial outlines of the classes ``names`` and specks."""
    scale = s / 192
    count = int(rng.integers(2, 4 + round(6 * scale)))
    thick_max = max(2, round(3 * scale))
    for kind in rng.choice(5, size=count, p=[0.3, 0.2, 0.25, 0.15, 0.1]):
        colour = _colour(rng)
        if kind == 0:  # straight line
            p = _fixed(rng.uniform(-0.1 * s, 1.1 * s, (2, 2)))
            cv2.line(
                img, tuple(p[0, 0]), tuple(p[1, 0]), colour, int(rng.integers(1, thick_max + 1)), cv2.LINE_AA, _SHIFT
            )
        elif kind == 1:  # arc
            centre = tuple(int(v) for v in _fixed(rng.uniform(0, s, 2))[0, 0])
            axes = tuple(int(v) for v in _fixed(rng.uniform(rmin, 1.5 * rmax, 2))[0, 0])
            start = rng.uniform(0, 360)
            cv2.ellipse(
                img,
                centre,
                axes,
                rng.uniform(0, 360),
                start,
                start + rng.uniform(40, 220),
                colour,
                int(rng.integers(1, thick_max + 1)),
                cv2.LINE_AA,
                _SHIFT,
            )
        elif kind == 2:  # irregular blob, opaque or translucent
            pts = _blob(rng, math.exp(rng.uniform(math.log(rmin), math.log(rmax)))) + rng.uniform(0, s, 2)
            if rng.random() < 0.5:
                cv2.fillPoly(img, [_fixed(pts)], colour, cv2.LINE_AA, _SHIFT)
            else:
                layer = img.copy()
                cv2.fillPoly(layer, [_fixed(pts)], colour, cv2.LINE_AA, _SHIFT)
                alpha = rng.uniform(0.3, 0.7)
                cv2.addWeighted(layer, alpha, img, 1 - alpha, 0, dst=img)
        elif kind == 3:  # partial outline of a shape class (an open polyline over at most ~55% of the perimeter)
            poly = _transform(
                _unit_shape(names[int(rng.integers(len(names)))], rng),
                rng,
                math.exp(rng.uniform(math.log(rmin), math.log(rmax))),
            )
            poly = poly + rng.uniform(0, s, 2)
            k = len(poly)
            start, length = int(rng.integers(k)), max(2, int(round(k * rng.uniform(0.25, 0.55))))
            part = poly[(start + np.arange(length + 1)) % k]
            cv2.polylines(img, [_fixed(part)], False, colour, int(rng.integers(1, thick_max + 1)), cv2.LINE_AA, _SHIFT)
        else:  # specks
            for c in rng.uniform(0, s, (int(rng.integers(4, 16)), 2)):
                r = max(1, int(round(rng.uniform(0.5, 1.8) * scale)))
                cv2.circle(img, (int(c[0]), int(c[1])), r, colour, -1, cv2.LINE_AA)


class _Canvas(NamedTuple):
    """An image being drawn and its objects so far (all updated in place).

    Attributes:
        img: The (s, s, 3) uint8 image.
        owner: (s, s) int16: which object owns each pixel (the last one drawn there), -1 for none.
        boxes: ``(cls, x0, y0, x1, y1)`` pixel boxes of the objects drawn.
        areas: Their visible pixel areas.
    """

    img: np.ndarray
    owner: np.ndarray
    boxes: list[tuple[int, float, float, float, float]]
    areas: list[int]


def _draw_object(
    canvas: _Canvas, rng: np.random.Generator, cls: int, placed: tuple[np.ndarray, np.ndarray, float]
) -> bool:
    """Draw a placed object (filled, filled with an outline, or hollow) unless it would hide another one.

    Args:
        canvas: The image and its objects; the new one is appended when drawn.
        rng: The image's random generator.
        cls: Class index.
        placed: ``(poly, centre, radius)``: the (K, 2) polygon around the origin, its centre and circumscribed radius.

    Returns:
        True when drawn (``boxes`` and ``areas`` grew by one), False when nothing was drawn.
    """
    poly, centre, radius = placed
    img, owner, boxes, areas = canvas
    s = img.shape[0]
    pts = poly + centre
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    style = rng.random()  # < 0.5 filled, < 0.8 filled + outline, else hollow
    # strokes are drawn on a polygon shrunk by half their width, so that they stay inside the labelled box
    thick = max(2, int(round(radius * rng.uniform(0.15, 0.3)))) if style >= 0.8 else 0
    edge_w = max(1, round(radius / 12)) if 0.5 <= style < 0.8 else 0
    shape = _fixed(pts)
    stroke = _fixed(poly * (1 - max(thick, edge_w) / (2 * radius)) + centre)
    mask = np.zeros((s, s), np.uint8)
    if thick:
        cv2.polylines(mask, [stroke], True, 1, thick, cv2.LINE_8, _SHIFT)
    else:
        cv2.fillPoly(mask, [shape], 1, cv2.LINE_8, _SHIFT)
    m = mask.astype(bool)
    if not m.any() or not _still_visible(owner, m, boxes, areas):
        return False
    ix0, iy0, ix1, iy1 = (int(v) for v in (x0, y0, math.ceil(x1) + 1, math.ceil(y1) + 1))
    colour = _contrasting(rng, img[max(iy0, 0) : iy1, max(ix0, 0) : ix1].reshape(-1, 3).mean(0))
    if thick:
        cv2.polylines(img, [stroke], True, colour, thick, cv2.LINE_AA, _SHIFT)
    else:
        cv2.fillPoly(img, [shape], colour, cv2.LINE_AA, _SHIFT)
        if edge_w:
            edge = _contrasting(rng, np.asarray(colour, np.float64), 60.0)
            cv2.polylines(img, [stroke], True, edge, edge_w, cv2.LINE_AA, _SHIFT)
    owner[m] = len(boxes)
    boxes.append((cls, float(x0), float(y0), float(x1), float(y1)))
    areas.append(int(m.sum()))
    return True


def _place_object(
    canvas: _Canvas, rng: np.random.Generator, cls: int, name: str, radius_range: tuple[float, float]
) -> bool:
    """One attempt to draw an object of class ``cls`` on ``canvas``; False when it did not fit (nothing drawn).

    Args:
        canvas: The image and its objects; the new one is appended when drawn.
        rng: The image's random generator (the draws happen in the generator's fixed order).
        cls: Class index.
        name: Class name (its unit shape).
        radius_range: Smallest and largest circumscribed radius in pixels.
    """
    boxes, s = canvas.boxes, canvas.img.shape[0]
    rmin, rmax = radius_range
    radius = math.exp(rng.uniform(math.log(rmin), math.log(rmax)))
    poly = _transform(_unit_shape(name, rng), rng, radius)
    lo, hi = poly.min(0), poly.max(0)
    if np.any(hi - lo > s - 2):
        return False
    if boxes and rng.random() < 0.35:  # next to an existing object, to make overlaps common
        o = boxes[int(rng.integers(len(boxes)))]
        oc = np.array([(o[1] + o[3]) / 2, (o[2] + o[4]) / 2])
        d = rng.uniform(0.5, 0.9) * (radius + max(o[3] - o[1], o[4] - o[2]) / 2)
        a = rng.uniform(0, 2 * np.pi)
        centre = np.clip(oc + d * np.array([math.cos(a), math.sin(a)]), 1 - lo, s - 1 - hi)
    else:
        centre = rng.uniform(1 - lo, s - 1 - hi)
    pts = poly + centre
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    if any(_iou((x0, y0, x1, y1), b[1:]) > _MAX_IOU for b in boxes):
        return False
    return _draw_object(canvas, rng, cls, (poly, centre, radius))


def _render(
    rng: np.random.Generator, s: int, variant: _Variant = _VARIANTS["shapes"]
) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """Draw one image and its objects.

    Args:
        rng: The image's own random generator.
        s: Image side in pixels.
        variant: The dataset variant (classes and object statistics).

    Returns:
        The uint8 BGR image (s, s, 3) and a list of ``(cls, x0, y0, x1, y1)`` pixel boxes.
    """
    if variant.text:
        return _render_text(rng, s, variant)
    names = variant.names
    dmin, dmax = max(6.0, variant.min_diameter * s), variant.max_diameter * s  # diameter of the circumscribed circle
    rmin, rmax = dmin / 2, dmax / 2
    if variant.clutter:
        img = _background(rng, s)
        _distractors(img, rng, s, rmin, rmax, names)
    else:  # plain: a smooth two-colour gradient
        c1, c2 = rng.uniform(0, 255, (2, 1, 1, 3))
        m = rng.uniform(0, 1, (2, 2, 1))
        img = cv2.resize((c1 * (1 - m) + c2 * m).astype(np.float32), (s, s), interpolation=cv2.INTER_LINEAR)

    n_obj = 0 if rng.random() < variant.empty_p else int(rng.integers(1, variant.max_objects + 1))
    canvas = _Canvas(img, np.full((s, s), -1, np.int16), [], [])
    for _ in range(n_obj):
        cls = int(rng.integers(len(names)))
        for _attempt in range(20):
            if _place_object(canvas, rng, cls, names[cls], (rmin, rmax)):
                break

    return _finish(img, rng, variant.clutter), canvas.boxes


def _finish(img: np.ndarray, rng: np.random.Generator, lines: bool = True) -> np.ndarray:
    """Occluding lines (if ``lines``), blur, global contrast/brightness and pixel noise over a float image; uint8."""
    s = img.shape[0]
    if lines and rng.random() < 0.35:  # thin occluding lines across everything
        for _ in range(int(rng.integers(1, 3))):
            p = _fixed(rng.uniform(0, s, (2, 2)))
            cv2.line(img, tuple(p[0, 0]), tuple(p[1, 0]), _colour(rng), 1, cv2.LINE_AA, _SHIFT)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 0.9))
    # global contrast and brightness, plus uniform pixel noise (std 2-7) from random bytes (cheaper than normals)
    contrast, brightness, k = rng.uniform(0.8, 1.15), rng.uniform(-20, 20), rng.uniform(2, 7) * math.sqrt(12) / 256
    noise = np.frombuffer(rng.bytes(img.size), np.uint8).reshape(img.shape).astype(np.float32)
    img = cv2.addWeighted(img, contrast, noise, k, brightness - 127.5 * k + 0.5)  # + 0.5: round on truncation
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)


def _char_alpha(ch: str, rng: np.random.Generator, height: float) -> np.ndarray:
    """Coverage (h, w) float32 in [0, 1] of the character ``ch``, about ``height`` px tall, cropped to its ink.

    A Hershey font face (upright or italic), a stroke width of 6-16% of the height and a rotation of +-20 degrees,
    all drawn from ``rng``.
    """
    font = _FONTS[int(rng.integers(len(_FONTS)))] | (cv2.FONT_ITALIC if rng.random() < 0.3 else 0)
    (w, h), _ = cv2.getTextSize(ch, font, 1.0, 1)
    scale = height / max(h, 1)
    thick = max(1, int(round(height * rng.uniform(0.06, 0.16))))
    side = int(math.ceil(2.2 * max(height, w * scale))) + 2 * thick + 4
    canvas = np.zeros((side, side), np.uint8)
    org = (int((side - w * scale) / 2), int((side + h * scale) / 2))
    cv2.putText(canvas, ch, org, font, scale, 255, thick, cv2.LINE_AA)
    rot = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-20, 20), 1.0)
    canvas = cv2.warpAffine(canvas, rot, (side, side), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(canvas > 64)
    if ys.size == 0:
        return np.zeros((0, 0), np.float32)
    return canvas[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32) / 255


def _render_text(
    rng: np.random.Generator, s: int, variant: _Variant
) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """Draw one image of a ``text`` variant (its classes are characters) and its objects (see ``_render``)."""
    names = variant.names
    hmin, hmax = max(8.0, variant.min_diameter * s), variant.max_diameter * s
    img = _background(rng, s)
    _distractors(img, rng, s, hmin / 2, hmax / 2, CLASS_NAMES)
    for _ in range(int(rng.integers(0, 3))):  # stray letters: text that is not a digit
        alpha = _char_alpha(chr(int(rng.choice([65, 69, 72, 75, 77, 88, 120, 43]))), rng, rng.uniform(hmin, hmax))
        ph, pw = alpha.shape
        if 0 < ph < s and 0 < pw < s:
            y, x = int(rng.integers(0, s - ph)), int(rng.integers(0, s - pw))
            a = alpha[..., None]
            img[y : y + ph, x : x + pw] = img[y : y + ph, x : x + pw] * (1 - a) + np.float32(_colour(rng)) * a
    n_obj = 0 if rng.random() < variant.empty_p else int(rng.integers(1, variant.max_objects + 1))
    owner = np.full((s, s), -1, np.int16)
    boxes: list[tuple[int, float, float, float, float]] = []
    areas: list[int] = []
    for _ in range(n_obj):
        cls = int(rng.integers(len(names)))
        for _attempt in range(20):
            alpha = _char_alpha(names[cls], rng, math.exp(rng.uniform(math.log(hmin), math.log(hmax))))
            ph, pw = alpha.shape
            if ph == 0 or ph > s - 2 or pw > s - 2:
                continue
            y0, x0 = int(rng.integers(1, s - ph)), int(rng.integers(1, s - pw))
            box = (float(x0), float(y0), float(x0 + pw), float(y0 + ph))
            if any(_iou(box, b[1:]) > _MAX_IOU for b in boxes):
                continue
            m = np.zeros((s, s), bool)
            m[y0 : y0 + ph, x0 : x0 + pw] = alpha > 0.5
            if not m.any() or not _still_visible(owner, m, boxes, areas):
                continue
            region = img[y0 : y0 + ph, x0 : x0 + pw]
            colour = _contrasting(rng, region.reshape(-1, 3).mean(0))
            a = alpha[..., None]
            img[y0 : y0 + ph, x0 : x0 + pw] = region * (1 - a) + np.float32(colour) * a
            owner[m] = len(boxes)
            boxes.append((cls, *box))
            areas.append(int(m.sum()))
            break
    return _finish(img, rng), boxes


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two ``(x0, y0, x1, y1)`` boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _still_visible(owner: np.ndarray, new: np.ndarray, boxes: list, areas: list[int]) -> bool:
    """Whether every existing object stays recognisable once ``new`` is drawn over it."""
    hit = np.unique(owner[new])
    for j in hit[hit >= 0]:
        vis = (owner == j) & ~new
        if vis.sum() < _MIN_VISIBLE * areas[j]:
            return False
        _, x0, y0, x1, y1 = boxes[j]
        cols, rows = np.flatnonzero(vis.any(0)), np.flatnonzero(vis.any(1))
        if cols[-1] - cols[0] + 1 < _MIN_EXTENT * (x1 - x0) or rows[-1] - rows[0] + 1 < _MIN_EXTENT * (y1 - y0):
            return False
    return True


def _label_text(boxes: list[tuple[int, float, float, float, float]], s: int) -> str:
    """YOLO label lines ``cls cx cy w h`` (normalized, 6 decimals) for pixel boxes, clipped to the image."""
    lines = []
    for cls, x0, y0, x1, y1 in boxes:
        x0, y0, x1, y1 = (min(max(v, 0.0), float(s)) for v in (x0, y0, x1, y1))
        lines.append(f"{cls} {(x0 + x1) / 2 / s:.6f} {(y0 + y1) / 2 / s:.6f} {(x1 - x0) / s:.6f} {(y1 - y0) / s:.6f}")
    return "".join(line + "\n" for line in lines)


def _write_image(path: Path, img: np.ndarray) -> None:
    """Write ``img`` (uint8 BGR) losslessly as PNG."""
    ok, buf = cv2.imencode(".png", img, _PNG_PARAMS)
    if not ok:
        raise OSError(f"could not encode PNG for {path}")
    path.write_bytes(buf.tobytes())


# --------------------------------------------------------------------------------------------------- the dataset
def _split_sizes(n: int, val_fraction: float) -> tuple[int, int]:
    """Train and val image counts: val is never empty when ``n >= 2`` and ``val_fraction > 0``."""
    if val_fraction <= 0 or n < 2:
        return n, 0
    n_val = min(max(int(round(n * val_fraction)), 1), n - 1)
    return n - n_val, n_val


def _params(n: int, seed: int, imgsz: int, val_fraction: float, variant: str = "shapes") -> dict[str, Any]:
    """The parameters recorded in ``dataset.json`` that identify a dataset."""
    return {
        "generator": _GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "variant": variant,
        "n": int(n),
        "seed": int(seed),
        "imgsz": int(imgsz),
        "val_fraction": float(val_fraction),
    }


def _read_meta(d: Path) -> dict[str, Any] | None:
    """``dataset.json`` of a complete dataset directory, or None when ``d`` is not one."""
    try:
        if not (d / "data.yaml").is_file():
            return None
        meta = json.loads((d / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == _GENERATOR else None


def _missing_files(d: Path, meta: dict[str, Any]) -> str | None:
    """What is missing from the dataset at ``d`` that ``meta`` describes, or None when every file is there.

    Every image ``NNNNNN.png`` must exist and be non-empty and every label file ``NNNNNN.txt`` must exist (it is
    empty for an image without objects), for the ``n_train`` / ``n_val`` images ``dataset.json`` records.
    """
    try:
        n_train, n_val = int(meta["n_train"]), int(meta["n_val"])
    except (KeyError, TypeError, ValueError):
        return f"{META_FILE} records no split sizes"
    for split, first, count in (("train", 0, n_train), ("val", n_train, n_val)):
        bad_images = bad_labels = 0
        for i in range(first, first + count):
            try:
                bad_images += (d / "images" / split / f"{i:06d}.png").stat().st_size == 0
            except OSError:
                bad_images += 1
            bad_labels += not (d / "labels" / split / f"{i:06d}.txt").is_file()
        if bad_images or bad_labels:
            return f"{bad_images} of {count} {split} images and {bad_labels} of {count} {split} labels missing or empty"
    return None


def _same_params(meta: dict[str, Any], params: dict[str, Any]) -> bool:
    """Whether a dataset's meta records exactly these parameters (datasets without ``variant`` are ``shapes``)."""
    return all(meta.get(k, "shapes" if k == "variant" else None) == v for k, v in params.items())


def _yaml_text(path: Path, val_dir: str, params: dict[str, Any]) -> str:
    """The data.yaml content."""
    cfg = {
        "path": str(path),
        "train": "images/train",
        "val": val_dir,
        "names": dict(enumerate(class_names(params["variant"]))),
    }
    head = (
        f"# Synthetic {params['variant']} detection dataset written by {_GENERATOR} (generator v{GENERATOR_VERSION}, "
        f"n={params['n']}, seed={params['seed']}, imgsz={params['imgsz']}); see {META_FILE}.\n"
    )
    return head + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


def _fix_yaml_path(out: Path) -> None:
    """Point ``path:`` in data.yaml at ``out`` again if the dataset directory was moved."""
    yaml_path = out / "data.yaml"
    try:
        text = yaml_path.read_text()
        cfg = yaml.safe_load(text)
        if isinstance(cfg, dict) and cfg.get("path") != str(out):
            cfg["path"] = str(out)
            head = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
            tmp = out / f".data.yaml.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.write_text(head + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
            os.replace(tmp, yaml_path)
    except OSError:  # read-only location: leave it, the caller still gets the path
        pass


def _make_image(root: Path, split: str, i: int, seed: int, s: int, variant: str) -> tuple[bytes, list[int]]:
    """Render image ``i`` of ``variant``, write its PNG and label file under ``root``.

    Returns:
        The image's fingerprint record (name, label text and pixel hash) and its class ids.
    """
    img, boxes = _render(np.random.default_rng([seed, i]), s, _VARIANTS[variant])
    text = _label_text(boxes, s)
    name = f"{i:06d}"
    _write_image(root / "images" / split / f"{name}.png", img)
    (root / "labels" / split / f"{name}.txt").write_bytes(text.encode())
    pixels = hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()
    return f"{split}/{name}\n{text}{pixels}\n".encode(), [b[0] for b in boxes]


def _write_dataset(root: Path, final: Path, params: dict[str, Any]) -> None:
    """Generate the whole dataset into ``root`` (a temporary directory), ``META_FILE`` last.

    Images are independent (image ``i`` has its own generator), so a few threads render and encode them: OpenCV and
    large numpy operations release the GIL. Results are consumed in order, so the output does not depend on timing.

    Args:
        root: Directory to write into (exists, empty).
        final: Where the dataset will live after the rename (recorded in data.yaml's ``path``).
        params: The parameters from :func:`_params`.
    """
    n, seed, s = params["n"], params["seed"], params["imgsz"]
    n_train, n_val = _split_sizes(n, params["val_fraction"])
    for split in ["train"] + (["val"] if n_val else []):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    digest = hashlib.sha256()
    names = class_names(params["variant"])
    counts = [0] * len(names)
    empty = 0
    workers = max(1, min(4, os.cpu_count() or 1, n))
    pending: collections.deque[concurrent.futures.Future] = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="yolo_vfl_data") as pool:
        try:
            for i in range(n + 2 * workers):
                if i < n:  # keep at most ~2 images per thread in flight, so an error stops the run quickly
                    split = "train" if i < n_train else "val"
                    pending.append(pool.submit(_make_image, root, split, i, seed, s, params["variant"]))
                if len(pending) > 2 * workers or (i >= n and pending):
                    record, classes = pending.popleft().result()
                    digest.update(record)
                    for c in classes:
                        counts[c] += 1
                    empty += not classes
        except BaseException:
            for f in pending:
                f.cancel()
            raise
    (root / "data.yaml").write_text(_yaml_text(final, "images/val" if n_val else "images/train", params))
    meta = {
        **params,
        "n_train": n_train,
        "n_val": n_val,
        "names": list(names),
        "instances": dict(zip(names, counts)),
        "empty_images": empty,
        "fingerprint": "sha256:" + digest.hexdigest(),
    }
    (root / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")  # the completion marker, last


def _host() -> str:
    """This machine's name as it appears in temporary directory names (letters, digits, '_')."""
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process, or no permission to ask: assume alive
    return True


def _clean_stale(parent: Path, name: str) -> None:
    """Remove what interrupted runs left in ``parent``.

    Temporary / replaced siblings of ``parent/name`` older than an hour, and the temporary directory of any dataset
    whose process (on this machine) is gone: a ``SIGKILL`` or a power loss gives no chance to clean up.
    """
    now, host = time.time(), _host()
    for p in parent.glob(".*-*"):
        m, same = _TMP_RE.match(p.name), p.name.startswith((f".{name}.tmp-", f".{name}.old-"))
        try:
            ours = m is not None and (same or m["kind"] == "tmp") and m["host"] == host
            dead = ours and not _pid_alive(int(m["pid"]))
            if dead or (same and now - p.stat().st_mtime > _STALE_S):
                _remove(p)
        except OSError:
            pass


def _check_space(out: Path, n: int, imgsz: int) -> None:
    """Refuse a dataset that cannot fit on the disk of ``out`` (estimated from ``n`` and ``imgsz``)."""
    need = int(n * (_BYTES_PER_PIXEL * imgsz * imgsz + 2 * _BYTES_PER_FILE))
    free = shutil.disk_usage(next(p for p in (out, *out.parents) if p.exists())).free
    if need > free:
        gb = 1e9
        raise InvalidSettingError(
            f"n={n} images of {imgsz}x{imgsz} need about {need / gb:.1f} GB, but {out.parent} has {free / gb:.1f} GB "
            f"free: give a smaller n or imgsz, or another out directory."
        )


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """While generating, SIGTERM raises SystemExit, so ``finally`` removes the temporary directory as for Ctrl-C.

    Only in the main thread and when no SIGTERM handler is set.
    """
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _guard_overwrite(out: Path) -> None:
    """Refuse to replace the filesystem root, the home directory or a directory containing the working directory."""
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve() or resolved in (cwd, *cwd.parents):
        raise InvalidSettingError(
            f"Refusing to overwrite {out}: it is the root, the home directory or contains the cwd."
        )


def _check_existing(out: Path, params: dict[str, Any], overwrite: bool) -> tuple[Path | None, bool]:
    """Handle whatever is at ``out`` already.

    Returns:
        ``(data.yaml, False)`` for a complete dataset with the same parameters (reuse it); ``(None, replace)`` when a
        new one is to be generated, with ``replace`` True when what is at ``out`` may be replaced: ``overwrite``, or
        a dataset with the same parameters whose files are incomplete (images or labels deleted).

    Raises:
        FileExistsError: ``out`` holds something else and ``overwrite`` is False.
    """
    if not (out.exists() or out.is_symlink()):
        return None, overwrite
    meta = _read_meta(out) if out.is_dir() else None
    if meta is not None and _same_params(meta, params):
        missing = _missing_files(out, meta)
        if missing is None:
            _fix_yaml_path(out)
            return out / "data.yaml", False
        LOGGER.warning(f"yolo_vfl: the dataset in {out} is incomplete ({missing}); generating it again")
        _guard_overwrite(out)
        return None, True
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        return None, overwrite  # an empty directory: fill it
    if overwrite:
        _guard_overwrite(out)
        return None, True
    if meta is not None:
        theirs = ", ".join(f"{k}={meta.get(k)!r}" for k in params if k != "generator")
        raise FileExistsError(
            f"{out} already holds a dataset made with different parameters ({theirs}); pass overwrite=True to "
            "replace it, or choose another directory."
        )
    raise FileExistsError(
        f"{out} exists and is not a complete yolo_vfl dataset (no data.yaml and {META_FILE}); pass overwrite=True "
        "to replace it, or choose another directory."
    )


def _complete_same(out: Path, params: dict[str, Any]) -> bool:
    """Whether ``out`` holds a complete dataset with these parameters."""
    meta = _read_meta(out) if out.is_dir() else None
    return meta is not None and _same_params(meta, params) and _missing_files(out, meta) is None


def _publish(tmp: Path, out: Path, params: dict[str, Any], overwrite: bool) -> Path:
    """Rename the finished ``tmp`` to ``out``; if another process got there first, use its dataset.

    With ``overwrite`` (also used to replace an incomplete dataset) whatever is at ``out`` is moved aside, ``tmp``
    renamed into place and the old one removed, so ``out`` is always either the old or the new dataset.
    """
    for _ in range(5):
        if out.is_dir() and not out.is_symlink():
            try:
                out.rmdir()  # only succeeds when empty (os.replace cannot replace a directory on every OS)
            except OSError:
                pass
        try:
            os.rename(tmp, out)
            return out / "data.yaml"
        except OSError:
            if not (out.exists() or out.is_symlink()):
                raise
        # something is at out: another process's dataset, or what we are replacing
        if _complete_same(out, params):
            _remove(tmp)
            _fix_yaml_path(out)
            return out / "data.yaml"
        if not overwrite:
            _remove(tmp)
            _check_existing(out, params, overwrite)  # raises FileExistsError naming out
            raise FileExistsError(f"{out} appeared while the dataset was being generated.")
        old = out.parent / f".{out.name}.old-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            if not out.exists():
                os.rename(old, out)  # put the previous dataset back and try again
            else:
                _remove(old)
            continue
        _remove(old)
        return out / "data.yaml"
    _remove(tmp)
    raise FileExistsError(f"Could not move the generated dataset into {out}: it keeps being replaced.")


def generate_dataset(
    out_dir: PathLike,
    *,
    n: int = 600,
    seed: int = 0,
    imgsz: int = 192,
    val_fraction: float = 0.2,
    overwrite: bool = False,
    variant: str = "shapes",
) -> Path:
    """Write the synthetic shapes detection dataset to ``out_dir`` (atomically) and return its data.yaml.

    The first ``n - round(n * val_fraction)`` images form the train split, the rest the val split (never empty when
    ``n >= 2`` and ``val_fraction > 0``; with no val images, data.yaml's ``val`` points at the train images).

    Args:
        out_dir: Dataset directory. It must not exist, be empty, or hold a dataset from this function: with the
            same parameters that dataset is returned as is (nothing is regenerated), unless some of its image or
            label files are missing or empty: then it is generated again and replaced atomically.
        n: Number of images, >= 1.
        seed: Seed, an int >= 0. Same parameters give identical files; another seed gives other images.
        imgsz: Image side in pixels, in [32, 4096].
        val_fraction: Fraction of the images in the val split, 0 <= val_fraction < 1.
        overwrite: Replace whatever is at ``out_dir`` (another dataset, or anything else) instead of raising.
        variant: ``shapes`` (eight look-alike outlines, the embedded dataset) or ``glyphs`` (six bar glyphs, more
            and smaller objects per image): see :data:`VARIANTS`.

    Returns:
        Path of ``out_dir/data.yaml``.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: An argument is out of range.
        FileExistsError: ``out_dir`` holds something else (or a dataset with other parameters) and ``overwrite``
            is False.
    """
    if not isinstance(out_dir, (str, os.PathLike)):
        raise InvalidTypeError(f"out_dir must be a str or path, got {out_dir!r} ({type(out_dir).__name__})")
    _check_args(n, seed, imgsz, val_fraction, overwrite, variant)
    out = Path(os.path.abspath(os.path.expanduser(os.fspath(out_dir))))
    params = _params(n, seed, imgsz, val_fraction, variant)
    found, replace = _check_existing(out, params, bool(overwrite))
    if found is not None:
        return found
    _check_space(out, n, imgsz)
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out.parent, out.name)
    tmp = out.parent / f".{out.name}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with _terminate_cleanly():
        tmp.mkdir()
        try:
            _write_dataset(tmp, out, params)
            return _publish(tmp, out, params, replace)
        finally:
            if tmp.exists():
                _remove(tmp)
