"""Read a YOLO dataset's label files before training and find the ones Ultralytics would drop, with line numbers.

Ultralytics pairs ``images/.../x.jpg`` with ``labels/.../x.txt`` (``img2label_paths``) and, in ``verify_image_label``,
drops an image whose label file it cannot use: a row with the wrong number of values, a value that is not a number,
a class id that is negative, not an integer or not below ``nc``, a normalized coordinate above 1.01 or below -0.01, a
negative width or height, or box rows mixed with polygon rows. It only says so in a log line per image, after the
run directory exists, and fails with ``No valid images found`` when it dropped them all.

This module applies the same rules to the text of the label files, without decoding images, and reports the first
bad line of each file: :func:`label_problem` for one file, :func:`scan_labels` for the images of a split. It rejects
exactly what Ultralytics rejects (a polygon is judged by its bounding box, as Ultralytics does), not more: an image
without a label file, or with an empty one, is a background image; duplicate rows are fine (Ultralytics removes them).
The rules are Ultralytics 8.4's. Ultralytics 8.3 keeps non-integer class ids and sizes down to -0.01, which are
refused here too (a class 2.5 is a broken label whatever the version), and drops a label file that starts with a
byte-order mark, which is read here as 8.4 reads it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LabelProblem", "LabelRules", "LabelScan", "label_problem", "scan_labels"]

#: Ultralytics' tolerance for normalized coordinates: up to 1.01, down to -0.01 (with non-negative width and height).
HIGH, LOW = 1.01, -0.01


@dataclass(frozen=True)
class LabelRules:
    """What a label row may hold: the class count and the row layout Ultralytics expects.

    Attributes:
        nc: Number of classes; class ids must be integers in ``[0, nc)``.
        single_cls: Training with ``single_cls=True`` (Ultralytics then accepts any class id >= 0).
        kpt_shape: The data YAML's ``kpt_shape`` ``(keypoints, values per keypoint)``, or None.
        keypoint: True: pose training, every row must be ``class x y w h`` plus the keypoints (needs ``kpt_shape``).
            False: rows are boxes (5 values) or polygons (a class and x y pairs); pose rows of ``kpt_shape`` keep
            their box. None: the task is not known, a file is a problem only when it is one both ways.
    """

    nc: int
    single_cls: bool = False
    kpt_shape: tuple[int, int] | None = None
    keypoint: bool | None = False

    @classmethod
    def from_data(cls, info: dict[str, Any], *, single_cls: bool = False, task: str | None = None) -> LabelRules:
        """The rules for a dataset dict of Ultralytics' ``check_det_dataset`` and a training task (None: not known)."""
        nc = info.get("bg_class_idx") or len(info["names"])  # what Ultralytics' YOLODataset passes
        kpt = info.get("kpt_shape")
        kpt_shape = (int(kpt[0]), int(kpt[1])) if isinstance(kpt, (list, tuple)) and len(kpt) == 2 else None
        keypoint = None if task is None else task == "pose" and kpt_shape is not None
        return cls(int(nc), bool(single_cls), kpt_shape, keypoint)

    @property
    def pose_width(self) -> int:
        """Values in a pose row, ``5 + keypoints * values per keypoint`` (0 without ``kpt_shape``)."""
        return 5 + self.kpt_shape[0] * self.kpt_shape[1] if self.kpt_shape else 0

    def class_range(self) -> str:
        """The valid class ids in words, e.g. ``integers 0-7 (nc 8)``."""
        return "integers >= 0 (single_cls)" if self.single_cls else f"integers 0-{self.nc - 1} (nc {self.nc})"


@dataclass(frozen=True)
class LabelProblem:
    """Why Ultralytics would drop an image: the first bad line of its label file.

    Attributes:
        file: The label file.
        line: 1-based line number, 0 when the file as a whole cannot be read.
        reason: What is wrong, with the valid range: ``class 9 is out of range; valid class ids: integers 0-7 (nc 8)``.
    """

    file: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}{f' line {self.line}' if self.line else ''}: {self.reason}"


@dataclass(frozen=True)
class LabelScan:
    """The label files of a split's images.

    Attributes:
        images: Number of images.
        labelled: Images with a label file (the others are background images).
        problems: One per image Ultralytics would drop for its labels, in sorted image order.
        label_dirs: The directories where the label files are looked for (sorted), e.g. ``[.../labels/train]``.
        expected: The label file of the first image (where a label for it would have to be).
    """

    images: int
    labelled: int
    problems: tuple[LabelProblem, ...]
    label_dirs: tuple[Path, ...]
    expected: Path | None

    @property
    def dropped(self) -> int:
        """Images Ultralytics would drop for their labels."""
        return len(self.problems)


def scan_labels(images: Sequence[str | os.PathLike[str]], rules: LabelRules) -> LabelScan:
    """Read the label file of every image once and collect the images Ultralytics would drop.

    Args:
        images: Image file paths of one split (any order; not opened).
        rules: Class count and row layout.

    Returns:
        The counts, the problems in sorted image order and where the labels are looked for.
    """
    from ultralytics.data.utils import img2label_paths

    files = img2label_paths(sorted(os.fspath(p) for p in images))  # strings: Path objects cost more than the reading
    problems, labelled = [], 0
    for file in files:
        if not os.path.isfile(file):
            continue
        labelled += 1
        problem = label_problem(file, rules)
        if problem is not None:
            problems.append(problem)
    dirs = tuple(Path(d) for d in sorted({os.path.dirname(f) for f in files}))
    return LabelScan(len(files), labelled, tuple(problems), dirs, Path(files[0]) if files else None)


def label_problem(file: str | os.PathLike[str], rules: LabelRules) -> LabelProblem | None:
    """The first reason why Ultralytics would drop the image of the label file ``file``, or None when it is usable.

    Args:
        file: A YOLO label file: one row per object, ``class x y w h`` (normalized), a polygon ``class x1 y1 x2 y2
            ...`` or, with ``rules.kpt_shape``, a pose row.
        rules: Class count and row layout.

    Returns:
        The file, the line and the reason; None for a usable file (an empty file is a background image).
    """
    try:
        with open(file, encoding="utf-8-sig") as f:  # as Ultralytics reads it: universal newlines, optional BOM
            text = f.read()
    except UnicodeDecodeError as e:
        return LabelProblem(Path(file), 0, f"not UTF-8 text ({e.reason} at byte {e.start})")
    except OSError as e:
        return LabelProblem(Path(file), 0, f"cannot be read ({e.strerror or type(e).__name__})")
    rows = [(i, line.split()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if rules.keypoint is None and rules.kpt_shape:  # task unknown: dropped only when dropped as boxes and as poses
        bad = _rows_problem(rows, replace(rules, keypoint=False))
        bad = bad and _rows_problem(rows, replace(rules, keypoint=True)) and bad
    else:
        bad = _rows_problem(rows, rules)
    return None if bad is None else LabelProblem(Path(file), *bad)


def _rows_problem(rows: list[tuple[int, list[str]]], rules: LabelRules) -> tuple[int, str] | None:
    """``(line, reason)`` of the first row that makes Ultralytics drop the file of ``rows`` (line, tokens); or None."""
    if rules.kpt_shape and not rules.keypoint:  # pose rows in a box task: Ultralytics keeps the box
        rows = [(i, r[:5] if len(r) == rules.pose_width else r) for i, r in rows]
    if not rows:
        return None
    polygons = not rules.keypoint and any(len(r) > 6 for _, r in rows)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf and inf % 1 give nan, which the checks reject
        checked = _polygon_rows(rows) if polygons else _uniform_rows(rows, rules)
        if isinstance(checked, tuple):
            return checked
        bad = _bad_row(checked, rules, polygons)
    return None if bad is None else (rows[bad[0]][0], bad[1])


def _numbers(tokens: list[str]) -> np.ndarray | str:
    """``tokens`` as float32 (as Ultralytics parses them), or the reason why not (the first token that is no number)."""
    try:
        return np.array(tokens, dtype=np.float32)
    except ValueError:
        for token in tokens:
            try:
                np.float32(token)
            except ValueError:
                break
        else:  # pragma: no cover - the row failed, so one token does
            token = " ".join(tokens)
        return f"{token!r} is not a number"


def _uniform_rows(rows: list[tuple[int, list[str]]], rules: LabelRules) -> np.ndarray | tuple[int, str]:
    """Box (or pose) rows as an (N, width) float32 array, or ``(line, reason)`` for the first malformed row."""
    width = rules.pose_width if rules.keypoint else 5
    layout = f"class x y w h and {rules.kpt_shape[0]} keypoints" if rules.keypoint else "class x y w h"
    polygon = "" if rules.keypoint else ", or a polygon: a class and x y pairs"
    for line, tokens in rows:
        if len(tokens) != width:
            return line, f"{len(tokens)} values, expected {width} ({layout}{polygon})"
    values = _numbers([token for _, tokens in rows for token in tokens])  # one call for the file: faster
    if isinstance(values, str):
        return next((line, why) for line, tokens in rows if isinstance(why := _numbers(tokens), str))
    return values.reshape(len(rows), width)


def _polygon_rows(rows: list[tuple[int, list[str]]]) -> np.ndarray | tuple[int, str]:
    """Polygon rows as (N, 5) float32 ``class x y w h`` of their bounding boxes, or ``(line, reason)``."""
    from ultralytics.utils.ops import segments2boxes

    classes, segments = [], []
    for line, tokens in rows:
        if len(tokens) == 5:
            return line, "a box row (5 values) in a file of polygon rows: Ultralytics drops files that mix them"
        if len(tokens) < 3 or len(tokens) % 2 == 0:
            return line, f"{len(tokens)} value(s): a polygon row is a class and one or more x y pairs"
        values = _numbers(tokens)
        if isinstance(values, str):
            return line, values
        classes.append(values[0])
        segments.append(values[1:].reshape(-1, 2))
    boxes = segments2boxes(segments).astype(np.float32)
    return np.concatenate([np.array(classes, dtype=np.float32)[:, None], boxes], axis=1)


def _bad_row(values: np.ndarray, rules: LabelRules, polygons: bool) -> tuple[int, str] | None:
    """The index of the first row of ``values`` (N, width) that Ultralytics rejects and why; None when all pass."""
    n = len(values)
    cls, rest = values[:, 0], values[:, 1:]
    if rules.keypoint:  # Ultralytics bounds the keypoints' x y from above, not the box
        coords, what = values[:, 5:].reshape(n, -1, rules.kpt_shape[1])[:, :, :2].reshape(n, -1), "keypoint coordinate"
    else:
        coords, what = rest, "value of the polygon's box (x y w h)" if polygons else "coordinate"
    if (
        cls.min() >= 0
        and (rules.single_cls or cls.max() < rules.nc)
        and not (cls % 1).any()
        and coords.max() <= HIGH
        and rest.min() >= LOW
        and values[:, 3:5].min() >= 0
    ):  # the usual case, in fewer steps: all rows pass the checks below (a nan fails one of these)
        return None
    classes = f"valid class ids: {rules.class_range()}"
    checks = (
        (np.isnan(values).any(1), lambda i: "'nan' is not a number"),
        (~(cls >= 0), lambda i: f"class {cls[i]:g} is negative; {classes}"),
        (cls % 1 != 0, lambda i: f"class {cls[i]:g} is not an integer; {classes}"),
        (~(cls < rules.nc) & (not rules.single_cls), lambda i: f"class {cls[i]:g} is out of range; {classes}"),
        (~(coords <= HIGH).all(1), lambda i: f"{what} {coords[i].max():g} is above 1; {_COORDS}"),
        (
            ~(rest >= LOW).all(1),
            lambda i: f"{'value' if rules.keypoint else what} {rest[i].min():g} is below 0; {_COORDS}",
        ),
        (~(values[:, 3:5] >= 0).all(1), lambda i: f"width or height {values[i, 3:5].min():g} is negative; {_COORDS}"),
    )
    bad = np.logical_or.reduce([mask for mask, _ in checks])
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    return i, next(reason(i) for mask, reason in checks if mask[i])


#: The valid coordinate range, as the error messages say it.
_COORDS = f"normalized coordinates must be within [0, 1] (Ultralytics accepts {LOW} to {HIGH})"
