"""The pre-training dataset check: label files Ultralytics would drop, missing labels, local data YAML errors."""

from __future__ import annotations

import logging
import random
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml
from test_cli import _corrupt_dataset

from yolo_vfl.checks import check_data
from yolo_vfl.cli import main
from yolo_vfl.errors import UserError
from yolo_vfl.labels import LabelRules, label_problem, scan_labels

NC_RANGE = "valid class ids: integers 0-7 (nc 8)"
COORD_RANGE = "normalized coordinates must be within [0, 1]"


def copy_data(det_data: Path, dest: Path) -> Path:
    """A copy of the generated dataset at ``dest`` (its YAML pointing at the copy): path of the copy's data.yaml."""
    shutil.copytree(det_data.parent, dest)
    cfg = yaml.safe_load((dest / "data.yaml").read_text())
    cfg["path"] = str(dest)
    (dest / "data.yaml").write_text(yaml.safe_dump(cfg))
    return dest / "data.yaml"


def label_files(data: Path, split: str = "train") -> list[Path]:
    return sorted((data.parent / "labels" / split).glob("*.txt"))


def corrupt(data: Path, text: str, count: int | None = None, split: str = "train") -> list[Path]:
    """Write ``text`` into the first ``count`` (default: all) label files of ``split``; returns those files."""
    files = label_files(data, split)[:count]
    for f in files:
        f.write_text(text)
    return files


# ------------------------------------------------------------------------------------------ label files: refused
@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("0 0.5 0.5 0.2\n", 1, "4 values, expected 5 (class x y w h"),
        ("0 0.5 0.5 0.2 0.2 0.7\n", 1, "6 values, expected 5"),
        ("0 0.5 0.5 0.2 0.2\n\n1 0.5 zero 0.2 0.2\n", 3, "'zero' is not a number"),
        ("-1 0.5 0.5 0.2 0.2\n", 1, f"class -1 is negative; {NC_RANGE}"),
        ("0 0.5 0.5 0.2 0.2\n9 0.5 0.5 0.2 0.2\n", 2, f"class 9 is out of range; {NC_RANGE}"),
        ("8 0.5 0.5 0.2 0.2\n", 1, f"class 8 is out of range; {NC_RANGE}"),
        ("2.5 0.5 0.5 0.2 0.2\n", 1, f"class 2.5 is not an integer; {NC_RANGE}"),
        ("1 1.5 0.5 0.2 0.2\n", 1, f"coordinate 1.5 is above 1; {COORD_RANGE}"),
        ("1 0.5 -0.2 0.2 0.2\n", 1, f"coordinate -0.2 is below 0; {COORD_RANGE}"),
        ("1 0.1 0.1 0.9 0.1 0.9 0.9\n2 0.5 0.5 0.2 0.2\n", 2, "a box row (5 values) in a file of polygon rows"),
        ("1 0.1 0.1 0.9 0.1 0.9 1.9\n", 1, f"value of the polygon's box (x y w h) 1.8 is above 1; {COORD_RANGE}"),
    ],
)
def test_bad_labels_are_refused_naming_file_line_and_range(det_data, tmp_path, text, line, reason):
    """Labels Ultralytics would drop in every train image: refused, naming the first file, its line and the range."""
    data = copy_data(det_data, tmp_path / "bad")
    files = corrupt(data, text)
    with pytest.raises(UserError) as info:
        check_data(str(data))
    msg = str(info.value)
    assert f"Ultralytics would drop {len(files)} of the {len(files)} train images for bad labels" in msg
    assert f"the first: {files[0]} line {line}: {reason}" in msg
    assert "\n" not in msg


def test_most_images_bad_is_refused_and_a_few_only_warned(det_data, tmp_path, caplog):
    """Over half of a split dropped: refused; a few: a warning with the count and the first bad line, no error."""
    n = len(label_files(det_data))
    few = copy_data(det_data, tmp_path / "few")
    corrupt(few, "9 0.5 0.5 0.2 0.2\n", count=2)
    with caplog.at_level(logging.WARNING):
        check_data(str(few))
    assert f"Ultralytics will drop 2 of the {n} train images for bad labels" in caplog.text
    assert f"line 1: class 9 is out of range; {NC_RANGE}" in caplog.text

    most = copy_data(det_data, tmp_path / "most")
    corrupt(most, "9 0.5 0.5 0.2 0.2\n", count=n // 2 + 1)
    with pytest.raises(UserError, match=f"would drop {n // 2 + 1} of the {n} train images"):
        check_data(str(most))


def test_bad_val_labels_are_refused_too(det_data, tmp_path):
    """The val split is read as well (Ultralytics fails on it after a training epoch otherwise)."""
    data = copy_data(det_data, tmp_path / "val")
    corrupt(data, "3 0.5 0.5 0.2 0.2 extra\n", split="val")
    with pytest.raises(UserError, match="val images for bad labels.*6 values, expected 5"):
        check_data(str(data))


def test_missing_labels_directory_is_refused(det_data, tmp_path):
    """No labels directory and so no label for any image of a split: refused, naming where labels are looked for."""
    data = copy_data(det_data, tmp_path / "nolabels")
    shutil.rmtree(data.parent / "labels")
    with pytest.raises(UserError) as info:
        check_data(str(data))
    msg = str(info.value)
    assert f"no labels for the train split: {data.parent / 'labels' / 'train'} does not exist" in msg
    assert "labels/.../x.txt" in msg and "\n" not in msg


def test_background_images_pass(det_data, tmp_path, caplog):
    """Images without a label file, or with an empty one, are background images: no error, no warning."""
    data = copy_data(det_data, tmp_path / "background")
    files = label_files(data)
    for f in files[: len(files) * 2 // 3]:
        f.unlink()
    files[-1].write_text("\n  \n")
    with caplog.at_level(logging.WARNING):
        check_data(str(data))
    assert "drop" not in caplog.text


def test_labels_directory_without_any_label_warns(det_data, tmp_path, caplog):
    """A labels directory that holds no label for any image of the split: a warning (all background), not an error."""
    data = copy_data(det_data, tmp_path / "empty")
    for f in label_files(data):
        f.unlink()
    with caplog.at_level(logging.WARNING):
        check_data(str(data))
    assert "none of the" in caplog.text and "train images has a label file" in caplog.text


def test_valid_labels_of_every_task_pass(task_data, det_data, tmp_path):
    """Boxes, polygons (segment, OBB), pose rows (as boxes, or with task=pose) and single_cls out-of-range classes."""
    for task in ("detect", "segment", "obb", "pose"):
        check_data(str(task_data(task)))
    check_data(str(task_data("pose")), task="pose")
    data = copy_data(det_data, tmp_path / "single")
    corrupt(data, "9 0.5 0.5 0.2 0.2\n")
    check_data(str(data), single_cls=True)
    with pytest.raises(UserError, match="class 9 is out of range"):
        check_data(str(data))


def test_pose_task_checks_the_keypoint_columns(task_data, tmp_path):
    """With task=pose, a box-only row is malformed and keypoints must be normalized; detect keeps only the box."""
    src = task_data("pose").parent
    data = tmp_path / "pose"
    shutil.copytree(src, data, symlinks=True)
    cfg = yaml.safe_load((src / "data.yaml").read_text())
    cfg["path"] = str(data)
    (data / "data.yaml").write_text(yaml.safe_dump(cfg))
    for f in sorted((data / "labels" / "train").glob("*.txt")):
        f.write_text("0 0.5 0.5 0.2 0.2" + " 1.5 0.5 2" * 5 + "\n")
    check_data(str(data / "data.yaml"))  # detect on pose data: the box is used, the keypoints are dropped
    with pytest.raises(UserError, match=re.escape(f"line 1: keypoint coordinate 1.5 is above 1; {COORD_RANGE}")):
        check_data(str(data / "data.yaml"), task="pose")
    for f in sorted((data / "labels" / "train").glob("*.txt")):
        f.write_text("0 0.5 0.5 0.2 0.2\n")
    check_data(str(data / "data.yaml"))
    with pytest.raises(UserError, match=re.escape("line 1: 5 values, expected 20 (class x y w h and 5 keypoints)")):
        check_data(str(data / "data.yaml"), task="pose")


# ------------------------------------------------------------------------ the same verdict as Ultralytics, per file
def _cases(seed: int = 0, count: int = 300) -> list[str]:
    """Label texts: handpicked edge cases, then random rows of numbers near the limits, words and odd lengths."""
    cases = [
        "",
        "\n\n",
        "\ufeff0 0.5 0.5 0.2 0.2",
        "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2",
        "7 1.01 0.5 0.2 0.2",
        "7 1.0101 0.5 0.2 0.2",
        "0 -0.01 0.5 0.2 0.2",
        "0 -0.0101 0.5 0.2 0.2",
        "0 0.5 0.5 -0.005 0.2",
        "0 nan 0.5 0.2 0.2",
        "inf 0.5 0.5 0.2 0.2",
        "1_0 0.5 0.5 0.2 0.2",
        "1 0.5 0.5",
        "1 0.5",
        "1",
        "1 0.1 0.1 0.9 0.1 0.9 0.9 0.1",
        "1 0.1 0.1 0.9 0.1 0.9 0.9\n1 0.5 0.5",
        "1 -0.5 0.1 0.6 0.1 0.6 0.9",
        "1 0.1 0.1 0.9 0.1 0.9 0.9\n1 0.1 0.1 0.9 0.1 0.9 0.9",
    ]
    rng = random.Random(seed)
    values = ["0", "1", "7", "8", "-1", "2.5", "0.5", "0.3", "1.0", "1.005", "1.02", "-0.005", "-0.02", "x", "nan"]
    for _ in range(count):
        width = rng.choice([1, 3, 4, 5, 5, 5, 6, 7, 8, 9, 11])
        rows = [" ".join(rng.choice(values) for _ in range(width)) for _ in range(rng.randint(1, 3))]
        cases.append("\n".join(rows))
    return cases


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # Ultralytics' own inf % 1
@pytest.mark.parametrize(
    "kpt_shape, keypoint, single_cls",
    [
        (None, False, False),
        (None, False, True),
        ((2, 3), False, False),
        ((2, 3), True, False),
        ((2, 2), True, False),
        ((2, 3), None, False),
    ],
)
def test_label_verdict_matches_ultralytics(tmp_path, kpt_shape, keypoint, single_cls):
    """label_problem refuses exactly the label files Ultralytics' verify_image_label drops (not more, not fewer).

    keypoint None (the task is not known): refused only when Ultralytics drops the file for a box task and for pose.
    """
    import ultralytics
    from PIL import Image
    from ultralytics.data.utils import verify_image_label

    if tuple(int(v) for v in ultralytics.__version__.split(".")[:2]) < (8, 4):
        pytest.skip(
            "the reader follows Ultralytics 8.4's verify_image_label; 8.3 also keeps non-integer class ids and sizes "
            "down to -0.01 (the reader refuses them, as 8.4 does) and drops files that start with a BOM (kept here)"
        )

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    image, label = tmp_path / "images" / "a.png", tmp_path / "labels" / "a.txt"
    Image.new("RGB", (16, 16)).save(image)
    rules = LabelRules(8, single_cls, kpt_shape, keypoint)
    nkpt, ndim = kpt_shape or (0, 0)
    rng = random.Random(1)
    pose_rows = [
        " ".join([str(rng.randint(0, 8)), *(f"{rng.uniform(-0.02, 1.02):.3f}" for _ in range(4 + nkpt * ndim))])
        for _ in range(100 if kpt_shape else 0)
    ]
    wrong = []
    for text in _cases() + pose_rows:
        label.write_text(text, encoding="utf-8")
        dropped = all(
            verify_image_label((str(image), str(label), "", pose, 8, nkpt, ndim, single_cls))[8] == 1
            for pose in ([False, True] if keypoint is None else [keypoint])
        )
        if dropped != (label_problem(label, rules) is not None):
            wrong.append((text, dropped))
    assert wrong == []


def test_unreadable_label_file(tmp_path):
    """A label file that is not UTF-8: the whole file, line 0 (not printed)."""
    f = tmp_path / "a.txt"
    f.write_bytes(b"0 0.5 0.5 0.2 0.2\n\xff\xfe\n")
    problem = label_problem(f, LabelRules(8))
    assert problem is not None and problem.line == 0 and str(problem).startswith(f"{f}: not UTF-8 text")


def test_scan_of_3200_label_files_is_fast(tmp_path):
    """Reading 3,200 label files (4 rows each) takes well under a second; images are not opened."""
    (tmp_path / "labels").mkdir()
    images = [tmp_path / "images" / f"{i:06d}.jpg" for i in range(3200)]
    for p in images:
        (tmp_path / "labels" / f"{p.stem}.txt").write_text("3 0.5 0.5 0.2 0.2\n" * 4)
    start = time.perf_counter()
    scan = scan_labels(images, LabelRules(8))
    assert time.perf_counter() - start < 2.0  # about 0.2 s on a busy 2-core machine
    assert (scan.images, scan.labelled, scan.dropped) == (3200, 3200, 0)


# ------------------------------------------------------------------------------------ the data YAML and the images
def test_local_yaml_errors_say_what_is_wrong_not_offline(det_data, tmp_path):
    """nc/names mismatch, missing images, bad YAML: Ultralytics' reason, not 'cannot be downloaded (offline)'."""
    data = copy_data(det_data, tmp_path / "nc3")
    data.write_text(data.read_text() + "nc: 3\n")
    with pytest.raises(UserError) as info:
        check_data(str(data))
    assert str(info.value) == (
        f"Dataset '{data}' (a local data YAML) cannot be used: 'names' length 8 and 'nc: 3' must match."
    )

    missing = copy_data(det_data, tmp_path / "noval")
    shutil.rmtree(missing.parent / "images" / "val")
    with pytest.raises(UserError, match=r"\(a local data YAML\) cannot be used: images not found, missing path") as e:
        check_data(str(missing))
    assert "offline" not in str(e.value)

    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [\n")
    with pytest.raises(UserError, match=r"\(a local data YAML\) cannot be used: .*(YAML|parsing)") as e:
        check_data(str(broken))
    assert "offline" not in str(e.value)


def test_local_yaml_with_a_download_is_offline(det_data, tmp_path):
    """A local YAML whose images are missing but which names a download: that one cannot be downloaded offline."""
    data = copy_data(det_data, tmp_path / "dl")
    shutil.rmtree(data.parent / "images")
    data.write_text(data.read_text() + "download: https://example.com/shapes.zip\n")
    with pytest.raises(UserError, match="cannot be downloaded \\(offline\\)"):
        check_data(str(data))


def test_unreadable_images_are_not_blamed_on_pi_heif(tmp_path):
    """A file with an image suffix that is no image: 'Pillow cannot identify it', not "No module named 'pi_heif'"."""
    data = _corrupt_dataset(tmp_path)
    with pytest.raises(UserError) as info:
        check_data(str(data))
    assert "0.jpg: not an image file that can be read (Pillow cannot identify it)" in str(info.value)
    assert "pi_heif" not in str(info.value)


# ---------------------------------------------------------------------------------------- the two callers: no run
@pytest.mark.parametrize(
    "case, says",
    [
        ("class 9", f"class 9 is out of range; {NC_RANGE}"),
        ("no labels", "no labels for the train split"),
        ("nc 3", "'names' length 8 and 'nc: 3' must match"),
    ],
)
def test_cli_train_refuses_bad_data_before_any_run_dir(det_data, tmp_path, monkeypatch, capfd, case, says):
    """`yolo-vfl train` on a broken dataset: one line, exit code 2, no run directory."""
    monkeypatch.chdir(tmp_path)
    data = copy_data(det_data, tmp_path / "bad")
    if case == "class 9":
        corrupt(data, "9 0.5 0.5 0.2 0.2\n")
    elif case == "no labels":
        shutil.rmtree(data.parent / "labels")
    else:
        data.write_text(data.read_text() + "nc: 3\n")
    project = tmp_path / "runs"
    argv = ["train", f"data={data}", "model=yolov8n.yaml", "epochs=1", "imgsz=32", "workers=0", f"project={project}"]
    code = main(argv)
    err = capfd.readouterr().err
    assert code == 2, err
    assert f"Dataset '{data}'" in err and says in err and "offline" not in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not project.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_ab_preflight_reads_the_labels_with_single_cls(det_data, tmp_path):
    """The A/B runner refuses the broken dataset before writing anything, and passes its single_cls to the check."""
    from yolo_vfl.ab import run_ab, spec_from_dict

    data = copy_data(det_data, tmp_path / "bad")
    corrupt(data, "9 0.5 0.5 0.2 0.2\n")
    raw = {
        "name": "tiny",
        "out": str(tmp_path / "ab"),
        "seeds": [0],
        "device": "cpu",
        "train": {"model": "yolov8n.yaml", "data": str(data), "imgsz": 32, "epochs": 1, "workers": 0},
        "arms": {"bce": {}},
    }
    with pytest.raises(UserError, match="class 9 is out of range"):
        run_ab(spec_from_dict(raw), command="refused")
    assert not (tmp_path / "ab").exists()
    raw["train"]["single_cls"] = True
    run_ab(spec_from_dict(raw), dry_run=True)  # the preflight passes; the dry run writes nothing
    assert not (tmp_path / "ab").exists()
