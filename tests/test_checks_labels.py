"""The pre-training dataset check: local data YAML errors name the real problem; unreadable images say so."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from yolo_vfl.checks import check_data
from yolo_vfl.errors import UserError


def copy_data(det_data: Path, dest: Path) -> Path:
    """A copy of the generated dataset at ``dest`` (its YAML pointing at the copy): path of the copy's data.yaml."""
    shutil.copytree(det_data.parent, dest)
    cfg = yaml.safe_load((dest / "data.yaml").read_text())
    cfg["path"] = str(dest)
    (dest / "data.yaml").write_text(yaml.safe_dump(cfg))
    return dest / "data.yaml"


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
    with pytest.raises(UserError, match=r"\(a local data YAML\) cannot be used: .*YAML") as e:
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
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "images" / split / f"{i}.jpg").write_bytes(b"not an image at all" * 10)
            (tmp_path / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data = tmp_path / "bad.yaml"
    data.write_text(
        yaml.safe_dump({"path": str(tmp_path), "train": "images/train", "val": "images/val", "names": ["a"]})
    )
    with pytest.raises(UserError) as info:
        check_data(str(data))
    assert "0.jpg: not an image file that can be read (Pillow cannot identify it)" in str(info.value)
    assert "pi_heif" not in str(info.value)
