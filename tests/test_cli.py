"""The yolo-vfl CLI: parsing, dispatch, every user error with its message, and one console-script run."""

from __future__ import annotations

import os
import re
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
        (
            ["train", "loss=vlf"],
            "Unknown loss 'vlf'. Valid losses: bce, focal, vfl, qfl, mal, iabce. Did you mean 'vfl'?",
        ),
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
        (["data", "out=x", "variant=glyph"], "variant must be one of shapes, glyphs, digits, quick, got 'glyph'"),
        (["version", "x=1"], "takes no arguments"),
        (["train", "resume=True"], "resume=True needs model=path/to/last.pt"),
        (["train", "resume=missing/last.pt"], "Model file 'missing/last.pt' not found"),
        (["train", "loss=vfl", "cls_target=foo"], "Invalid cls_target='foo': valid values are 'tal', 'iou'"),
        (["train", "loss=vfl", "cls_fg_negatives=xyz"], "Invalid cls_fg_negatives='xyz': valid values are 'loss'"),
        (["train", "tal_topk=0"], "Invalid tal_topk=0: valid values are integers >= 1"),
        (["train", "tal_topk=2.5"], "tal_topk must be an integer >= 1"),
        (["train", "loss=vfl", "cls_warmup=-1"], "Invalid cls_warmup=-1: valid values are integers >= 0"),
        (["train", "loss=vfl", "cls_warmup=1.5"], "cls_warmup must be an integer number of epochs"),
        (["train", "loss=vfl", "cls_warmup=True"], "cls_warmup must be an integer number of epochs"),
        (["train", "loss=vfl", "cls_warmup=5", "epochs=5"], "Invalid cls_warmup=5 for epochs=5"),
        (["data", "out=x", "n=-3"], "n must be"),
        (["train", "loss=vfl", "cls_branches=one2one"], "Invalid cls_branches='one2one': this model's head has no"),
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
    last = out.stdout.strip().splitlines()[-1]  # the summary from the real trainer's attributes
    assert last.startswith("yolo-vfl: trained with loss=vfl vfl_alpha=0.75 vfl_gamma=2.0"), last
    assert f"best.pt: {tmp_path / 'cli' / 'weights' / 'best.pt'}" in last and "mAP50-95 " in last, last


# ----------------------------------------------------------------------------------------------------------------------
# Issue 13: suggestions, broken datasets, user errors vs bugs, the end-of-training summary


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "data=embedded-glyph"], "Did you mean 'embedded-glyphs'?"),
        (["train", "data=embeded"], "Did you mean 'embedded'?"),
        (["mode=val"], "The mode is a bare word, not mode=val: yolo-vfl val key=value ..."),
        (["epochs=3"], "'epochs=3' is not a mode: the first word is the mode (yolo-vfl train epochs=3 ...)"),
        (["train", "mode=val"], "'mode' is not an argument: the mode is the first word (yolo-vfl val ...)"),
        (["data", "out=x", "variant=glyph"], "Did you mean 'glyphs'?"),
    ],
)
def test_suggestions_point_at_the_fix(argv, message, capfd, tmp_path, monkeypatch):
    """Near-miss names get the right suggestion; a key=value in the mode's place says how the mode is written."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capfd, *argv)
    assert code == 2, (out, err)
    assert message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_ultralytics_modes_get_the_arguments_in_process(capfd, tmp_path, monkeypatch):
    """main(["val", ...]) hands its own arguments to Ultralytics (not the process's argv), so a typo is caught."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capfd, "val", "model=yolov8n.yaml", "epoch=3")
    assert code == 2, (out[-500:], err)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", err)  # Ultralytics 8.3 colours the key
    assert "'epoch' is not a valid YOLO argument" in plain and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["mode=val"], ["train", "mode=val"], ["train", "mod=val"], ["train", "modle=x.pt"]])
def test_mode_is_never_suggested_as_a_key(argv, capfd, tmp_path, monkeypatch):
    """'mode' is not a train argument, so no message suggests it as one."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capfd, *argv)
    assert code == 2 and "Did you mean 'mode'" not in err


def _corrupt_dataset(root: Path) -> Path:
    """A YOLO dataset whose every image is unreadable (labels are fine)."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(3):
            (root / "images" / split / f"{i}.jpg").write_bytes(b"not an image at all" * 10)
            (root / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    cfg = {"path": str(root), "train": "images/train", "val": "images/val", "names": {0: "a"}}
    (root / "bad.yaml").write_text(yaml.safe_dump(cfg))
    return root / "bad.yaml"


def test_all_corrupt_dataset_is_one_line_before_any_run_dir(tmp_path, capfd, monkeypatch):
    """Every image unreadable: one line naming the dataset and a bad image, exit 2, no run directory written."""
    monkeypatch.chdir(tmp_path)
    data = _corrupt_dataset(tmp_path / "bad")
    argv = [
        "train",
        f"data={data}",
        "model=yolov8n.yaml",
        "epochs=1",
        "imgsz=32",
        "workers=0",
        f"project={tmp_path}/runs",
    ]
    code, out, err = run(capfd, *argv)
    assert code == 2, (out, err)
    assert f"Dataset '{data}'" in err and "none of the 3 train images can be read" in err and "0.jpg: " in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_partly_corrupt_dataset_passes_the_check(tmp_path, det_data):
    """One readable image per split is enough for the check (Ultralytics skips the corrupt ones itself)."""
    from yolo_vfl.checks import check_data

    check_data(str(det_data))  # the generated dataset: fine
    data = _corrupt_dataset(tmp_path / "mixed")
    shutil.copy(next((det_data.parent / "images" / "train").glob("*.png")), data.parent / "images" / "train")
    shutil.copy(next((det_data.parent / "images" / "val").glob("*.png")), data.parent / "images" / "val")
    check_data(str(data))


@pytest.mark.parametrize("exc", [TypeError("bug"), KeyError("bug"), ValueError("bug"), AttributeError("bug")])
def test_a_bug_during_training_keeps_its_traceback(exc, monkeypatch, capfd):
    """An exception that is not a user error propagates from main() (traceback, exit 1), even a TypeError."""
    import ultralytics

    def broken_train(self, **kwargs):
        raise exc

    monkeypatch.setattr(ultralytics.YOLO, "train", broken_train)
    with pytest.raises(type(exc), match="bug"):
        main(["train", "epochs=1"])


@pytest.mark.parametrize(
    "exc, message",
    [
        (SyntaxError("'foo' is not a valid YOLO argument."), "'foo' is not a valid YOLO argument."),
        (FileNotFoundError("Dataset 'x.yaml' images not found"), "Dataset 'x.yaml' images not found"),
    ],
)
def test_user_errors_during_training_stay_one_line(exc, message, monkeypatch, capfd):
    """Ultralytics' SyntaxError for unknown keys and FileNotFoundError for missing files are user errors (exit 2)."""
    import ultralytics

    def failing_train(self, **kwargs):
        raise exc

    monkeypatch.setattr(ultralytics.YOLO, "train", failing_train)
    code, _, err = run(capfd, "train", "epochs=1")
    assert code == 2 and message in err and err.count("\n") == 1


def test_trainer_validation_errors_stay_one_line(monkeypatch, capfd):
    """A ValueError raised by the trainer's own validation (a loss change on resume) is a user error."""
    from types import SimpleNamespace

    import ultralytics

    from yolo_vfl.trainer import VFLDetectionTrainer

    def refusing_train(self, **kwargs):
        VFLDetectionTrainer._resume_settings(SimpleNamespace(args=SimpleNamespace(loss="vfl")), {"loss": "qfl"})

    monkeypatch.setattr(ultralytics.YOLO, "train", refusing_train)
    code, _, err = run(capfd, "train", "epochs=1")
    assert code == 2 and "Cannot change the classification loss on resume" in err and err.count("\n") == 1


def test_a_bug_exits_nonzero_not_2_with_traceback(tmp_path):
    """Through the console-script entry point, a bug in training exits 1 with a traceback, not 2 with one line."""
    script = (
        "import sys, ultralytics\n"
        "def broken(self, **kw):\n"
        "    raise TypeError('bug in training')\n"
        "ultralytics.YOLO.train = broken\n"
        "from yolo_vfl.cli import entrypoint\n"
        "sys.argv = ['yolo-vfl', 'train', 'epochs=1']\n"
        "entrypoint()\n"
    )
    env = {**os.environ, "YOLO_VFL_CACHE": str(tmp_path / "cache")}
    env.pop("YOLO_VFL_DEBUG", None)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert out.returncode not in (0, 2), out.stderr[-2000:]
    assert "Traceback" in out.stderr and "TypeError: bug in training" in out.stderr


def test_train_prints_the_loss_in_force_at_the_end(monkeypatch, capfd, tmp_path):
    """After training the CLI prints the loss and its hyperparameters, best.pt and the final mAP."""
    import ultralytics

    from yolo_vfl.criterion import ClsLossSettings

    def fake_train(self, **kwargs):
        self.trainer = type(
            "T",
            (),
            {
                "cls_loss_settings": ClsLossSettings.from_args({"loss": "vfl"}),
                "best": tmp_path / "weights" / "best.pt",
                "metrics": {"metrics/mAP50(B)": 0.41234, "metrics/mAP50-95(B)": 0.21234},
            },
        )()

    monkeypatch.setattr(ultralytics.YOLO, "train", fake_train)
    code, out, err = run(capfd, "train", "loss=vfl", "epochs=1")
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert "trained with loss=vfl vfl_alpha=0.75 vfl_gamma=2.0" in last
    assert f"best.pt: {tmp_path / 'weights' / 'best.pt'}" in last and "mAP50 0.412" in last and "mAP50-95 0.212" in last


def test_help_lists_the_registry_settings_and_datasets(capfd):
    """``yolo-vfl help`` lists every loss, trainer setting and generated dataset: its tables are the registry's."""
    from yolo_vfl import cli
    from yolo_vfl.criterion import SETTING_KEYS
    from yolo_vfl.data import EMBEDDED_NAMES, VARIANTS
    from yolo_vfl.losses import list_losses

    assert cli.HELP_LOSSES == {s.name: tuple(p.arg for p in s.params) for s in list_losses()}
    assert ("loss", *(p for ps in cli.HELP_LOSSES.values() for p in ps), *cli.HELP_SETTINGS) == SETTING_KEYS
    assert cli.HELP_DATASETS == {k: v[0] for k, v in EMBEDDED_NAMES.items()}
    assert set(VARIANTS) == set(cli.HELP_DATASETS.values())
    code, out, _ = run(capfd, "help")
    assert code == 0 and f"loss={'|'.join(s.name for s in list_losses())} " in out
    assert all(re.search(rf"\b{k}\b", out) for k in SETTING_KEYS) and f"data={'|'.join(EMBEDDED_NAMES)}:" in out


@pytest.mark.parametrize("mode", ["help", "version"])
def test_help_and_version_import_neither_torch_nor_ultralytics(mode):
    """``help`` and ``version`` answer without importing torch or Ultralytics (seconds otherwise)."""
    heavy = "{'torch', 'ultralytics', 'cv2'}"
    code = f"import sys; from yolo_vfl.cli import main; main([{mode!r}]); print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]", out


def test_losses_columns_align(capfd):
    """``yolo-vfl losses``: every column starts at the same place on every row, however long the cells."""
    from yolo_vfl.losses import list_losses

    code, out, _ = run(capfd, "losses")
    header, *rows = out.splitlines()
    starts = [header.index(h) for h in ("formula", "defaults", "reference")]
    assert code == 0 and len(rows) == len(list_losses())
    for line, spec in zip(rows, list_losses()):
        defaults = ", ".join(f"{p.arg}={p.default}" for p in spec.params) or "-"
        for start, cell in zip(starts, (spec.formula, defaults, spec.reference)):
            assert line[start:].startswith(cell + (" " if cell != spec.reference else "")) and line[start - 1] == " "


def test_val_resolves_generated_dataset_names(capfd, tmp_path, monkeypatch, det_data):
    """``val data=embedded`` hands Ultralytics the generated dataset's YAML, as ``train data=embedded`` does."""
    import ultralytics.cfg

    import yolo_vfl.data

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(yolo_vfl.data, "resolve_embedded", lambda name: det_data if name == "embedded" else None)
    seen = []
    monkeypatch.setattr(ultralytics.cfg, "entrypoint", lambda: seen.append(list(sys.argv)))
    code, out, _ = run(capfd, "val", "model=yolov8n.yaml", "data=embedded", "imgsz=64")
    assert code == 0 and seen == [["yolo", "val", "model=yolov8n.yaml", f"data={det_data}", "imgsz=64"]]


def test_val_with_missing_data_creates_no_run_directory(capfd, tmp_path, monkeypatch):
    """``val data=missing.yaml``: one line naming the dataset, exit 2, and no empty runs/detect/val."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capfd, "val", "model=yolov8n.yaml", "data=missing.yaml")
    assert code == 2 and "missing.yaml" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_data_out_naming_a_file_says_what_to_give(capfd, tmp_path):
    """``data out=FILE`` or ``out=FILE/sub``: one line naming the path and asking for a directory; the file is kept."""
    f = tmp_path / "file.txt"
    f.write_text("x")
    code, _, err = run(capfd, "data", f"out={f}", "n=2")
    assert code == 2 and f"out={f} is a file: give a directory" in err
    code, _, err = run(capfd, "data", f"out={f / 'sub'}", "n=2")
    assert code == 2 and f"is inside '{f}', a file: give a directory" in err and "Errno" not in err
    assert f.read_text() == "x" and sorted(tmp_path.iterdir()) == [f]
