"""The yolo-vfl CLI: parsing, dispatch, every user error with its message, and one console-script run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from yolo_vfl.cli import main, parse_args, parse_value


def run(capfd, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capfd.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "text, value",
    [
        ("10", 10),
        ("0.5", 0.5),
        ("True", True),
        ("false", False),
        ("none", None),
        ("[0, 1]", [0, 1]),
        ("yolov8n.yaml", "yolov8n.yaml"),
        ("0,1", (0, 1)),
        ("__import__('os')", "__import__('os')"),
        ("cpu", "cpu"),
    ],
)
def test_parse_value_is_safe_and_typed(text, value):
    """Values become None/bool/int/float/literals; code is never evaluated and stays a string."""
    assert parse_value(text) == value


def test_parse_args_errors():
    """Bare tokens and duplicate keys are errors naming the token."""
    assert parse_args(["epochs=3", "loss=vfl"]) == {"epochs": 3, "loss": "vfl"}
    with pytest.raises(Exception, match="'epochs' is not of the form key=value"):
        parse_args(["epochs"])
    with pytest.raises(Exception, match="'loss' is given twice"):
        parse_args(["loss=vfl", "loss=qfl"])


@pytest.mark.parametrize("argv", [[], ["help"], ["-h"], ["--help"]])
def test_help(argv, capfd):
    """No arguments, help, -h and --help print the usage and exit 0."""
    code, out, _ = run(capfd, *argv)
    assert code == 0 and "yolo-vfl train" in out and "loss=bce|focal|vfl|qfl" in out


def test_version_and_losses(capfd):
    """Version prints the three versions; losses prints every registry entry with defaults and paper."""
    code, out, _ = run(capfd, "version")
    assert code == 0 and "yolo-vfl" in out and "ultralytics" in out and "torch" in out
    code, out, _ = run(capfd, "losses")
    assert code == 0
    for text in ("bce", "focal", "vfl", "qfl", "vfl_alpha=0.75", "qfl_beta=2.0", "arXiv:2008.13367"):
        assert text in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["trian"], "Unknown mode 'trian'. Did you mean 'train'?"),
        (["train", "epoch=3"], "Unknown argument 'epoch'. Did you mean 'epochs'?"),
        (["train", "loss=vlf"], "Unknown loss 'vlf'. Valid losses: bce, focal, vfl, qfl. Did you mean 'vfl'?"),
        (["train", "loss=vfl", "vfl_alpha=1.5"], "Invalid vfl_alpha=1.5: valid values are between 0.0 and 1.0"),
        (["train", "loss=qfl", "qfl_beta=-1"], "Invalid qfl_beta=-1.0: valid values are >= 0.0"),
        (["train", "lr0=abc"], "lr0"),
        (["train", "epochs"], "'epochs' is not of the form key=value"),
        (["train", "data=missing/nowhere.yaml", "model=yolov8n.yaml"], "Dataset 'missing/nowhere.yaml'"),
        (["train", "data=coco128.yaml", "model=yolov8n.yaml"], "cannot be downloaded (offline)"),
        (["train", "data=[1,2]", "model=yolov8n.yaml"], "Dataset '[1, 2]' is not on this machine"),
        (["train", "model=missing/model.pt"], "Model file 'missing/model.pt' not found"),
        (["train", "model=nosuchmodel.yaml"], "Model file 'nosuchmodel.yaml' not found"),
        (["train", "model=yolov8n.pt"], "Pretrained weights 'yolov8n.pt' are not on this machine"),
        (["val", "model=yolov8n.pt"], "model=yolov8n.yaml to train from scratch"),
        (["val", "loss=vfl"], "'loss' only applies to 'yolo-vfl train'"),
        (["data"], "needs out=DIR"),
        (["data", "out=x", "seeds=1"], "Unknown argument 'seeds' for 'yolo-vfl data'. Did you mean 'seed'?"),
        (["data", "out=x", "variant=glyph"], "variant must be one of shapes, glyphs, got 'glyph'"),
        (["version", "x=1"], "takes no arguments"),
        (["train", "resume=True"], "resume=True needs model=path/to/last.pt"),
        (["train", "resume=missing/last.pt"], "Model file 'missing/last.pt' not found"),
    ],
)
def test_user_errors_are_one_clear_line(argv, message, capfd, tmp_path, monkeypatch):
    """Every user error exits 2 with one line naming the problem, and no traceback."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capfd, *argv)
    assert code == 2, (out, err)
    assert message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_verbose_true_shows_the_traceback(capfd):
    """verbose=True re-raises the error for a traceback."""
    with pytest.raises(Exception, match="Unknown loss"):
        main(["train", "loss=vlf", "verbose=True"])


def test_data_mode_writes_dataset(tmp_path, capfd):
    """yolo-vfl data out=DIR writes a YOLO dataset with data.yaml."""
    code, out, _ = run(capfd, "data", f"out={tmp_path / 'ds'}", "n=6", "imgsz=64", "seed=3")
    assert code == 0 and (tmp_path / "ds" / "data.yaml").exists() and "data.yaml" in out


def test_data_mode_glyphs_variant(tmp_path, capfd):
    """yolo-vfl data variant=glyphs writes the second, differently made dataset (its own class names)."""
    code, _, _ = run(capfd, "data", f"out={tmp_path / 'g'}", "n=6", "imgsz=64", "variant=glyphs")
    assert code == 0
    names = yaml.safe_load((tmp_path / "g" / "data.yaml").read_text())["names"]
    assert list(names.values()) == ["cross", "tee", "ell", "arrow", "diamond", "crescent"]


def test_train_data_embedded_glyphs_is_resolved(tmp_path, capfd, monkeypatch):
    """data=embedded-glyphs trains on the generated glyphs dataset (offline), not on a file called so."""
    import ultralytics

    seen = {}

    def fake_train(self, **kwargs):
        seen.update(kwargs)

    monkeypatch.setattr(ultralytics.YOLO, "train", fake_train)
    code, out, err = run(capfd, "train", "data=embedded-glyphs", "epochs=1")
    assert code == 0, err
    data = Path(seen["data"])
    assert data.parent.name.startswith("glyphs-n600-s1-") and data.exists()
    assert seen["imgsz"] == 192 and "data=embedded-glyphs" in out


@pytest.mark.slow
def test_console_script_trains_on_embedded_dataset(tmp_path):
    """The installed console script trains on the embedded dataset end to end (tiny size) and exits 0."""
    exe = shutil.which("yolo-vfl", path=os.path.dirname(sys.executable)) or shutil.which("yolo-vfl")
    assert exe, "console script yolo-vfl is not installed"
    out = subprocess.run(
        [
            exe,
            "train",
            "loss=vfl",
            "epochs=1",
            "imgsz=64",
            "batch=8",
            "workers=0",
            "fraction=0.05",
            "plots=False",
            f"project={tmp_path}",
            "name=cli",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "YOLO_VFL_CACHE": str(tmp_path / "cache")},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp_path / "cli" / "weights" / "last.pt").exists()
    assert "loss=vfl" in (tmp_path / "cli" / "args.yaml").read_text().replace(": ", "=")
