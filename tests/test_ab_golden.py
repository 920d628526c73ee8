"""Golden numbers of the A/B report: the same runs must give the same numbers, whatever builds the report.

Regenerate deliberately (then review ``git diff tests/golden``):
``YOLO_VFL_UPDATE_GOLDEN=1 pytest tests/test_ab_golden.py`` rewrites ``tests/golden/ab_report_numbers.json`` from the
committed runs; ``YOLO_VFL_UPDATE_GOLDEN=inputs`` first rebuilds the runs themselves (``write_experiment``).

``tests/golden/ab_experiment`` is a finished experiment as the runner lays it out (``experiment.json``, and per run
``runs/<arm>-s<seed>/`` with ``result.json``, Ultralytics' ``results.csv`` and ``detections.npz``), made once by
``write_experiment`` from fixed synthetic detections (no training): arms bce, vfl, qfl x seeds 0-2, ``qfl-s2``
unfinished, ``vfl-s1``'s clock restarted once. The test copies it, runs ``regenerate_report`` and
``diagnose_experiment`` on the copy and compares every number of ``summary.csv``, ``diagnosis.csv`` (keyed by arm and
column) and of each table of ``summary.md`` and ``diagnosis.md`` (keyed by section heading, row label and column
header) with the golden file, as printed. Prose, warnings, findings and figures are not compared: a rewrite may reword
or reorder them.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yolo_vfl.ab import diagnose_experiment, regenerate_report

GOLDEN = Path(__file__).resolve().parent / "golden"
EXPERIMENT = GOLDEN / "ab_experiment"
NUMBERS = GOLDEN / "ab_report_numbers.json"
UPDATE = os.environ.get("YOLO_VFL_UPDATE_GOLDEN", "").strip().lower()
REPORT_FILES = ("summary.csv", "summary.md", "diagnosis.csv", "diagnosis.md")


# ---------------------------------------------------------------------------------------------- number extraction
#: A printed number: signed decimal or percentage, or a duration (``12m05s``, ``1h02m``); not part of a word.
_NUMBER = re.compile(r"(?<![\w.])[+-]?(?:\d+h\d{2}m|\d+m\d{2}s|\d+(?:\.\d+)?%?)(?![\w.])")
#: A parenthesised remark with words (``(n=1)``, ``(baseline)``, ``(1 paired seed)``): a marker, not a value.
_REMARK = re.compile(r"\([^()]*[A-Za-z][^()]*\)")


def cell_numbers(cell: str) -> str:
    """The numbers printed in a markdown cell, space-separated (``0.5083 ± 0.0104 (n=3)`` -> ``0.5083 0.0104``)."""
    return " ".join(_NUMBER.findall(_REMARK.sub(" ", cell)))


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _label(cell: str) -> str:
    return cell.replace("*", "").replace("`", "").strip()


def markdown_numbers(text: str) -> dict[str, dict[str, dict[str, str]]]:
    """``{section heading: {row label: {column header: numbers}}}`` of every table in a markdown report.

    The heading is the last ``#`` line above the table (``#2``, ``#3`` appended for further tables under it), the row
    label the first cell, the numbers those of ``cell_numbers``; cells without a number are left out.
    """
    out: dict[str, dict[str, dict[str, str]]] = {}
    heading, lines = "", text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("#"):
            heading = _label(lines[i].lstrip("#"))
        if not lines[i].startswith("|"):
            i += 1
            continue
        block = []
        while i < len(lines) and lines[i].startswith("|"):
            block.append(_cells(lines[i]))
            i += 1
        key = heading
        k = 2
        while key in out:
            key, k = f"{heading} #{k}", k + 1
        header = [_label(c) for c in block[0]]
        assert len(set(header)) == len(header), f"{heading}: repeated column header in {header}"
        table: dict[str, dict[str, str]] = {}
        for row in block[2:]:  # [1] is the --- separator
            assert len(row) == len(header), f"{heading}: row {row} does not match the header {header}"
            label = _label(row[0])
            assert label not in table, f"{heading}: row label {label!r} repeated"
            table[label] = {h: n for h, c in zip(header[1:], row[1:]) if (n := cell_numbers(c))}
        out[key] = table
    return out


def _numeric(cell: str) -> bool:
    try:
        return bool([float(t) for t in cell.split()])
    except ValueError:
        return False


def csv_numbers(text: str) -> dict[str, dict[str, str]]:
    """``{first column (the arm): {column: cell}}`` of a report CSV, the cells that hold only numbers (``0 1 2``)."""
    reader = csv.reader(text.splitlines())
    header = next(reader)
    assert len(set(header)) == len(header), f"repeated CSV column in {header}"
    out: dict[str, dict[str, str]] = {}
    for row in reader:
        assert row[0] not in out, f"row {row[0]!r} repeated"
        out[row[0]] = {h: c for h, c in zip(header[1:], row[1:]) if _numeric(c)}
    return out


def report_numbers(report_dir: Path) -> dict[str, Any]:
    """The numbers of the four report files of ``report_dir``, by file."""
    return {
        name: (csv_numbers if name.endswith(".csv") else markdown_numbers)((report_dir / name).read_text())
        for name in REPORT_FILES
    }


def flatten(d: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """``(key path, value)`` of every leaf of nested mappings."""
    for k, v in d.items():
        if isinstance(v, Mapping):
            yield from flatten(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def differences(golden: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """One line per number that changed, disappeared or appeared (keys joined by ' › ')."""
    a, b = dict(flatten(golden)), dict(flatten(now))
    out = [f"changed  {' › '.join(k)}: golden {a[k]!r}, now {b[k]!r}" for k in a if k in b and a[k] != b[k]]
    out += [f"missing  {' › '.join(k)}: golden {a[k]!r}" for k in a if k not in b]
    return out + [f"new      {' › '.join(k)}: now {b[k]!r}" for k in b if k not in a]


# ---------------------------------------------------------------------------------------------- the experiment
NAMES = {0: "circle", 1: "square", 2: "triangle"}
N_IMAGES, IMGSZ, EPOCHS = 16, 64, 10
DATA = "datasets/shapes/data.yaml"
#: Per arm: share of objects found, how strongly the score follows the IoU, background FPs per image, their score.
ARMS = {"bce": (0.80, 0.3, 1.5, 0.12), "vfl": (0.86, 1.2, 2.5, 0.22), "qfl": (0.82, 0.9, 1.8, 0.15)}
SEEDS = (0, 1, 2)
UNFINISHED = ("qfl-s2",)
RESUMED = {"vfl-s1": 4}  # interrupted after epoch 4
#: Start of the classification loss per arm (each loss has its own scale).
CLS_LOSS = {"bce": 1.9, "vfl": 1.3, "qfl": 0.8}
VERSIONS = {"yolo_vfl": "0.9.0", "yolo_vfl_source": "5c1d0e7a2b94", "ultralytics": "8.4.190", "torch": "2.8.0"}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of xyxy boxes."""
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(1), (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _box(center: np.ndarray, wh: np.ndarray) -> np.ndarray:
    x0y0 = np.clip(center - wh / 2, 0, IMGSZ - 2)
    return np.r_[x0y0, np.maximum(np.clip(center + wh / 2, 0, IMGSZ), x0y0 + 2)]


def _ground_truth() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The validation set, the same for every run: boxes, classes, images (0-4 objects per image)."""
    rng = np.random.default_rng(2024)
    boxes, cls, image = [], [], []
    for img in range(N_IMAGES):
        for _ in range(int(rng.integers(0, 5))):
            boxes.append(_box(rng.uniform(10, 54, 2), rng.uniform(8, 24, 2)))
            cls.append(int(rng.integers(0, len(NAMES))))
            image.append(img)
    return np.array(boxes, np.float32), np.array(cls, np.int64), np.array(image, np.int64)


def _records(arm: str, seed: int, run_dir: Path) -> Any:
    """One run's recording pass: detections around the ground truth (TPs, duplicates, wrong class, loose boxes, FPs)."""
    from yolo_vfl.ab.evaluation import classify, diagnose
    from yolo_vfl.ab.records import Records

    found, slope, n_bg, bg_score = ARMS[arm]
    rng = np.random.default_rng([list(ARMS).index(arm), seed])
    gt_boxes, gt_cls, gt_image = _ground_truth()
    dets: list[tuple[int, np.ndarray, int, float]] = []  # image, box, class, score before the IoU term

    def near(box: np.ndarray, spread: float) -> np.ndarray:
        wh = box[2:] - box[:2]
        return _box((box[:2] + box[2:]) / 2 + rng.normal(0, spread, 2) * wh, wh * np.exp(rng.normal(0, spread, 2)))

    for img in range(N_IMAGES):
        for j in np.flatnonzero(gt_image == img):
            box, c = gt_boxes[j], int(gt_cls[j])
            if rng.random() < found:
                dets.append((img, near(box, rng.uniform(0.02, 0.15)), c, 0.55))
            if rng.random() < 0.25:
                dets.append((img, near(box, 0.12), c, 0.25))
            if rng.random() < 0.12:
                dets.append((img, near(box, 0.05), (c + 1 + int(rng.integers(0, 2))) % len(NAMES), 0.15))
            if rng.random() < 0.2:
                wh = box[2:] - box[:2]
                dets.append((img, _box((box[:2] + box[2:]) / 2 + 0.6 * wh * rng.choice([-1, 1], 2), wh), c, 0.1))
        for _ in range(int(rng.poisson(n_bg))):
            box = _box(rng.uniform(6, 58, 2), rng.uniform(6, 20, 2))
            dets.append((img, box, int(rng.integers(0, len(NAMES))), bg_score))
    rows = []
    for img, box, c, base in dets:
        own = gt_boxes[(gt_image == img) & (gt_cls == c)]
        iou = float(_iou(box[None].astype(np.float32), own).max()) if len(own) else 0.0
        rows.append((img, box, c, float(np.clip(base + slope * (iou - 0.5) * 0.5 + rng.normal(0, 0.1), 0.002, 0.98))))
    rows.sort(key=lambda r: (r[0], -r[3]))  # validation order, each image's detections by descending score
    k = int(np.bincount(gt_image, minlength=N_IMAGES).max())
    det_gt_iou = np.full((len(rows), k), -1.0, np.float32)
    for i, (img, box, _, _) in enumerate(rows):
        own = gt_boxes[gt_image == img]
        if len(own):
            det_gt_iou[i, : len(own)] = _iou(box[None].astype(np.float32), own)[0]
    arrays = dict(
        det_boxes=np.array([r[1] for r in rows], np.float32),
        det_conf=np.array([r[3] for r in rows], np.float32),
        det_cls=np.array([r[2] for r in rows], np.int64),
        det_image=np.array([r[0] for r in rows], np.int64),
        gt_boxes=gt_boxes,
        gt_cls=gt_cls,
        gt_image=gt_image,
        det_gt_iou=det_gt_iou,
        names=NAMES,
        n_images=N_IMAGES,
        params={"weights": str(run_dir / "weights" / "best.pt"), "data": DATA, "imgsz": IMGSZ, "conf": 0.001}
        | {"iou": 0.7, "max_det": 300, "task": "detect"},
        versions={**{k: v for k, v in VERSIONS.items() if k != "yolo_vfl_source"}, "numpy": "2.3.1"},
        orig_shapes=np.full((N_IMAGES, 2), IMGSZ),
        input_shapes=np.full((N_IMAGES, 2), IMGSZ),
    )
    d = dict(diagnose(Records(**arrays)).iter_rows())  # what Ultralytics' validation would report, roughly
    c = classify(Records(**arrays))
    tp_iou = float(c["iou"][c["kind"] == 0].mean()) if (c["kind"] == 0).any() else 0.0
    metrics = {"precision": d["precision@f1"], "recall": d["recall@f1"], "mAP50": d["ap50"]}
    metrics["mAP50-95"] = d["ap50"] * (tp_iou - 0.35) / 0.6
    return Records(**arrays, metrics=metrics)


def _results_csv(arm: str, seed: int, metrics: Mapping[str, float], resumed_after: int | None) -> str:
    """Ultralytics' ``results.csv``: 10 epochs rising to the final metrics; time restarts at a resume."""
    rng = np.random.default_rng([10 + list(ARMS).index(arm), seed])
    cols = ["epoch", "time", "train/box_loss", "train/cls_loss", "train/dfl_loss"]
    cols += [f"metrics/{m}(B)" for m in ("precision", "recall", "mAP50", "mAP50-95")]
    cols += ["val/box_loss", "val/cls_loss", "val/dfl_loss", "lr/pg0", "lr/pg1", "lr/pg2"]
    lines, t = [",".join(cols)], 0.0
    for e in range(1, EPOCHS + 1):
        t = (0.0 if e - 1 == resumed_after else t) + 11.5 + rng.normal(0, 0.4)
        rise = (1 - math.exp(-e / 2)) / (1 - math.exp(-EPOCHS / 2))
        fit = [v * (rise if e == EPOCHS else rise * (1 + rng.normal(0, 0.02))) for v in metrics.values()]
        fall = math.exp(-e / 4)
        losses = [1.2 + 0.5 * fall, CLS_LOSS[arm] * (0.6 + 0.4 * fall), 1.05 + 0.2 * fall]
        val = [v * (1.05 + rng.normal(0, 0.01)) for v in losses]
        lr = 0.01 * (1 - 0.9 * (e - 1) / EPOCHS)
        values = [e, t, *(v + rng.normal(0, 0.01) for v in losses), *fit, *val, lr, lr, lr]
        lines.append(",".join(f"{v:.6g}" for v in values))
    return "\n".join(lines) + "\n"


def write_experiment(out: Path) -> None:
    """Write the golden experiment into ``out`` (deterministic; ``YOLO_VFL_UPDATE_GOLDEN=inputs`` calls it)."""
    from yolo_vfl.ab.evaluation import ranking_quality
    from yolo_vfl.ab.results import Curve, RunResult
    from yolo_vfl.ab.run import read_results_csv
    from yolo_vfl.fileio import atomic_write_json

    shutil.rmtree(out, ignore_errors=True)
    runs = [f"{a}-s{s}" for s in SEEDS for a in ARMS]
    train = {"epochs": EPOCHS, "imgsz": IMGSZ, "batch": 16, "workers": 0, "deterministic": True}
    atomic_write_json(
        out / "experiment.json",
        {"name": "golden", "baseline": "bce", "arms": list(ARMS), "seeds": list(SEEDS), "data": DATA, "train": train}
        | {"commands": ["yolo-vfl ab golden.yaml"], "runs": runs},
    )
    for run in runs:
        if run in UNFINISHED:
            continue
        arm, seed = run.rsplit("-s", 1)[0], int(run.rsplit("-s", 1)[1])
        run_dir = out / "runs" / run
        records = _records(arm, seed, run_dir.relative_to(out.parent))
        records.save(run_dir / "detections.npz")
        metrics = {m: records.metrics[m] for m in ("precision", "recall", "mAP50", "mAP50-95")}
        (run_dir / "results.csv").write_text(_results_csv(arm, seed, metrics, RESUMED.get(run)))
        rows = read_results_csv(run_dir / "results.csv")
        times = [r["time"] for r in rows]
        seconds = times[-1] + (times[RESUMED[run] - 1] if run in RESUMED else 0.0)  # the clock restarted at the resume
        settings = {"loss": arm}
        result = RunResult(
            run=run,
            arm=arm,
            seed=seed,
            loss=arm,
            metrics=metrics,
            metrics_source="yolo-vfl ab recording pass (Ultralytics validator)",
            metrics_model="best.pt",
            ranking=ranking_quality(records, seed=seed),
            final_losses={k: v for k, v in rows[-1].items() if k.startswith(("train/", "val/")) and "loss" in k},
            curve=Curve(
                tuple(int(r["epoch"]) for r in rows),
                tuple(r["metrics/mAP50-95(B)"] for r in rows),
                tuple(r["metrics/mAP50(B)"] for r in rows),
            ),
            epochs_done=len(rows),
            train_time_s=seconds,
            settings=settings,
            model="yolov8n.yaml",
            data=DATA,
            train=train,
            fingerprint={**train, **settings, "model": "yolov8n.yaml", "data": DATA},
            records="detections.npz",
            wall_time_s=(seconds or 0.0) + 20.0 + 3.0 * seed,
            device="cpu",
            host="golden",
            versions=VERSIONS,
            finished_at=f"2025-06-01T12:{seed:02d}:00+00:00",
        )
        atomic_write_json(run_dir / "result.json", result.to_dict())


# ---------------------------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[str, Any]:
    """Today's report of a copy of the golden experiment: its numbers by file (golden file written on update)."""
    if UPDATE == "inputs":
        write_experiment(EXPERIMENT)
    out = tmp_path_factory.mktemp("golden") / "exp"
    shutil.copytree(EXPERIMENT, out)
    regenerate_report(out)
    for result in out.glob("runs/*/result.json"):
        # diagnose_experiment wants weights (it records runs without detections.npz); older than the records: reused
        weights = result.parent / "weights" / "best.pt"
        weights.parent.mkdir()
        weights.write_bytes(b"")
        os.utime(weights, (0, 0))
    diagnose_experiment(out, log=lambda msg: pytest.fail(f"diagnose_experiment recorded a run: {msg}"))
    numbers = report_numbers(out)
    if UPDATE:
        about = "The numbers of the A/B report of tests/golden/ab_experiment; see tests/test_ab_golden.py"
        head = {"_about": about, "_ultralytics": _ultralytics_version()}
        NUMBERS.write_text(json.dumps({**head, **numbers}, indent=1, ensure_ascii=False) + "\n")
    return numbers


def _ultralytics_version() -> str:
    import ultralytics

    return ultralytics.__version__


@pytest.mark.parametrize("name", REPORT_FILES)
def test_report_numbers_match_the_golden_file(report, name):
    """Every number of the report file, keyed by table, row and column, is the golden one as printed; none new."""
    if UPDATE:
        pytest.skip(f"YOLO_VFL_UPDATE_GOLDEN={UPDATE}: {NUMBERS} rewritten; review its diff")
    golden = json.loads(NUMBERS.read_text())
    diffs = differences(golden[name], report[name])
    if diffs and golden.get("_ultralytics") != _ultralytics_version():  # AP50s are Ultralytics' compute_ap's
        diffs.append(f"(golden made with Ultralytics {golden.get('_ultralytics')}, here {_ultralytics_version()})")
    assert not diffs, f"{name}: {len(diffs)} number(s) differ from {NUMBERS.name}:\n" + "\n".join(diffs[:40])


def test_golden_file_covers_every_table(report):
    """The golden file holds the tables of both markdown reports (each with numbers) and every arm of both CSVs."""
    golden = json.loads(NUMBERS.read_text())
    for name in ("summary.csv", "diagnosis.csv"):
        assert sorted(golden[name]) == ["bce", "qfl", "vfl"], name
    assert {"Accuracy", "Difference to bce", "Convergence and resolution", "Runs"} <= set(golden["summary.md"])
    assert {"Detections at conf ≥ 0.25", "Scores and AP50 cost per kind", "Runs"} <= set(golden["diagnosis.md"])
    for name in ("summary.md", "diagnosis.md"):
        for heading, table in golden[name].items():
            assert any(table.values()), f"{name} › {heading}: a table without numbers"
    assert len(golden["summary.md"]["Runs"]) == 8  # 3 arms x 3 seeds, qfl-s2 unfinished


def test_extraction_ignores_order_and_wording():
    """Rows and columns reordered, prose and remarks reworded: the same numbers under the same keys."""
    old = (
        "# A/B experiment: x\n\nSome prose 1.0.\n\n## Accuracy\n\nText.\n\n| arm | seeds | mAP50 |\n"
        "| --- | --- | --- |\n| bce | 3 | 0.5000 ± 0.0100 |\n| vfl | 1 | 0.6000 (n=1) |\n\n"
        "## Runs\n\n| run | train time | Δ [CI] |\n"
        "| --- | --- | --- |\n| **bce-s0** | 12m05s | +0.0100 [-0.0200, +0.0300] |\n"
    )
    new = (
        "# A/B: x\n\n## Runs\n\nOther prose 2.0.\n\n| run | Δ [CI] | train time |\n|---|---|---|\n"
        "| bce-s0 | +0.0100 [-0.0200, +0.0300] | 12m05s |\n\n## Accuracy\n\n| arm | mAP50 | seeds |\n|---|---|---|\n"
        "| vfl | 0.6000 (one seed) | 1 |\n| bce | 0.5000 ± 0.0100 | 3 |\n"
    )
    assert differences(markdown_numbers(old), markdown_numbers(new)) == []
    assert markdown_numbers(old)["Accuracy"]["bce"] == {"seeds": "3", "mAP50": "0.5000 0.0100"}
    assert markdown_numbers(old)["Runs"]["bce-s0"] == {"train time": "12m05s", "Δ [CI]": "+0.0100 -0.0200 +0.0300"}
    changed = new.replace("0.6000", "0.6001")
    assert differences(markdown_numbers(old), markdown_numbers(changed)) == [
        "changed  Accuracy › vfl › mAP50: golden '0.6000', now '0.6001'"
    ]
    assert csv_numbers("arm,seeds,x,verdict,y\nbce,0 1 2,0.500000,better,\n") == {
        "bce": {"seeds": "0 1 2", "x": "0.500000"}
    }
