"""The ``yolo-vfl`` command: Ultralytics-style ``key=value`` CLI for training with VFL/QFL, offline-friendly.

Modes::

    yolo-vfl train [data=coco128.yaml] [model=yolov8n.pt] loss=vfl [vfl_gamma=2.0 ...] [any Ultralytics train arg]
    yolo-vfl val|predict|export ...      handed to Ultralytics (our checkpoints are plain Ultralytics)
    yolo-vfl data out=DIR [n=600 seed=0 imgsz=192]
    yolo-vfl losses | version | help

``main(argv)`` runs in-process and returns the exit code; errors print one clear line (no traceback unless
``verbose=True`` is given or ``YOLO_VFL_DEBUG=1`` is set) and return 2.
"""

from __future__ import annotations

import ast
import difflib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .losses import list_losses

MODES = ("train", "ab", "val", "predict", "export", "data", "losses", "version", "help")
ULTRALYTICS_MODES = ("val", "predict", "export")
DEFAULT_MODEL_WITH_DATA = "yolov8n.pt"
DEFAULT_MODEL_OFFLINE = "yolov8n.yaml"
DATA_KEYS = {"out": None, "n": 600, "seed": 0, "imgsz": 192, "variant": "shapes", "overwrite": False}

HELP = """\
yolo-vfl: train Ultralytics YOLO with Varifocal / Quality Focal classification losses.

Usage:
  yolo-vfl train [key=value ...]    train; every Ultralytics train argument passes through
      loss=bce|focal|vfl|qfl        classification loss (default bce)
      vfl_alpha vfl_gamma vfl_iou_weighted qfl_beta fl_alpha fl_gamma   loss hyperparameters
      without data=: trains yolov8n.yaml on the embedded synthetic dataset (works offline);
      data=embedded-glyphs: the second, differently made generated dataset
      with data= and no model=: model=yolov8n.pt, as in Ultralytics
  yolo-vfl ab [spec.yaml] [key=value ...]   A/B experiment: arms x seeds, report with paired 95% intervals
  yolo-vfl ab report out=DIR        rewrite the report of an experiment directory
  yolo-vfl ab diagnose out=DIR      false positives by kind and score distributions per arm
  yolo-vfl val|predict|export ...   hand over to Ultralytics (checkpoints are plain Ultralytics)
  yolo-vfl data out=DIR [n=600 seed=0 imgsz=192 variant=shapes|glyphs]   write a generated dataset to DIR
  yolo-vfl losses                   list the losses: formula, defaults, paper
  yolo-vfl version                  versions of yolo-vfl, ultralytics and torch
  yolo-vfl help                     this text (also -h, --help)

Examples:
  yolo-vfl train loss=vfl epochs=5
  yolo-vfl train data=coco128.yaml model=yolov8n.pt loss=qfl qfl_beta=2.0 epochs=100 imgsz=640
  yolo-vfl val model=runs/detect/train/weights/best.pt data=coco128.yaml
"""


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def parse_value(text: str) -> Any:
    """Parse a CLI value safely (no eval): None, booleans, numbers and Python literals; anything else stays a string.

    Args:
        text: the text after ``=``.

    Returns:
        The parsed value.
    """
    lowered = text.lower()
    if lowered == "none":
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    return value if isinstance(value, (int, float, list, tuple, dict)) else text


def parse_args(tokens: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` tokens into a dict (a bare token is an error that names it)."""
    args: dict[str, Any] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise CLIError(f"Argument '{token}' is not of the form key=value (e.g. epochs=10).")
        key = key.strip().replace("-", "_")
        if key in args:
            raise CLIError(f"Argument '{key}' is given twice.")
        args[key] = parse_value(value.strip())
    return args


def _wants_traceback(args: dict[str, Any]) -> bool:
    return args.get("verbose") is True or os.environ.get("YOLO_VFL_DEBUG", "") not in ("", "0")


# ----------------------------------------------------------------------------------------------------------------------
# Modes


def _cmd_losses() -> int:
    print(f"{'loss':<6} {'formula':<48} {'defaults':<44} reference")
    for spec in list_losses():
        defaults = ", ".join(f"{p.arg}={p.default}" for p in spec.params) or "-"
        print(f"{spec.name:<6} {spec.formula:<48} {defaults:<44} {spec.reference}")
    return 0


def _cmd_version() -> int:
    import torch
    import ultralytics

    from . import __version__

    print(f"yolo-vfl {__version__}  ultralytics {ultralytics.__version__}  torch {torch.__version__}")
    return 0


def _cmd_data(args: dict[str, Any]) -> int:
    from .data import generate_dataset

    unknown = [k for k in args if k not in DATA_KEYS]
    if unknown:
        raise CLIError(
            f"Unknown argument '{unknown[0]}' for 'yolo-vfl data'.{_suggest(unknown[0], list(DATA_KEYS))} "
            f"Valid: {', '.join(DATA_KEYS)}."
        )
    if args.get("out") in (None, ""):
        raise CLIError("'yolo-vfl data' needs out=DIR, the directory to write the dataset to.")
    kwargs = {k: args.get(k, v) for k, v in DATA_KEYS.items() if k != "out"}
    yaml_path = generate_dataset(Path(str(args["out"])).expanduser(), **kwargs)
    print(f"Dataset written: {yaml_path}")
    return 0


def _is_offline() -> bool:
    from ultralytics.utils import ONLINE

    return os.environ.get("YOLO_OFFLINE", "") not in ("", "0") or not ONLINE


def _check_model(model: str) -> None:
    """Fail before training when the model file is missing and cannot be downloaded."""
    path = Path(model).expanduser()
    if path.exists():
        return
    if path.suffix in (".yaml", ".yml"):
        from ultralytics.nn.tasks import yaml_model_load  # resolves scaled names: yolov8n.yaml -> yolov8.yaml

        try:
            yaml_model_load(model)
        except (FileNotFoundError, AssertionError) as e:
            raise CLIError(
                f"Model file '{model}' not found (neither a local file nor an Ultralytics model YAML)."
            ) from e
        return
    if path.suffix != ".pt":
        raise CLIError(f"Model '{model}' not found: expected a local .pt checkpoint or a model .yaml.")
    if len(path.parts) > 1:
        raise CLIError(f"Model file '{model}' not found.")
    if _is_offline():
        raise CLIError(
            f"Pretrained weights '{model}' are not on this machine and cannot be downloaded (offline). Use "
            f"model={path.stem}.yaml to train from scratch, or model=/path/to/{path.name} for a local copy."
        )


def _check_data(data: str) -> None:
    """Fail before training when the dataset is missing and cannot be downloaded."""
    from ultralytics.data.utils import check_det_dataset

    offline = _is_offline()
    try:
        check_det_dataset(data, autodownload=not offline)
    except Exception as e:  # Ultralytics raises FileNotFoundError, or ConnectionError and others while downloading
        if offline:
            reason = _first_line(e).rstrip(".")
            raise CLIError(
                f"Dataset '{data}' is not on this machine and cannot be downloaded (offline): {reason}. "
                "Run 'yolo-vfl train' without data= to use the embedded dataset, or point data= to a local YAML."
            ) from e
        raise CLIError(f"Dataset '{data}' could not be prepared: {_first_line(e)}") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _cmd_train(args: dict[str, Any]) -> int:
    from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg

    from .criterion import SETTING_KEYS, ClsLossSettings
    from .data import EMBEDDED_NAMES

    ours = {k: v for k, v in args.items() if k in SETTING_KEYS}
    theirs = {k: v for k, v in args.items() if k not in SETTING_KEYS}
    for key in theirs:
        if key not in DEFAULT_CFG_DICT or key == "mode":
            valid = [*SETTING_KEYS, *DEFAULT_CFG_DICT]
            raise CLIError(f"Unknown argument '{key}'.{_suggest(key, valid)} See 'yolo-vfl help' and 'yolo help'.")
    ClsLossSettings.from_args(ours)  # loss name and hyperparameters, before any work
    get_cfg(overrides={k: v for k, v in theirs.items() if k != "model"})  # Ultralytics' own type and range checks

    resume = theirs.get("resume")
    if resume:  # the checkpoint knows its data, model and loss settings
        if isinstance(resume, str) and "model" not in theirs:
            theirs["model"] = resume
        if "model" not in theirs:
            raise CLIError("resume=True needs model=path/to/last.pt (or resume=path/to/last.pt).")
    elif theirs.get("data") in (None, ""):
        from .data import embedded_dataset

        theirs.setdefault("model", DEFAULT_MODEL_OFFLINE)
        theirs.setdefault("imgsz", 192)  # the embedded dataset's image size
        theirs["data"] = str(embedded_dataset())
        print(f"yolo-vfl: no data= given: training on the embedded synthetic dataset {theirs['data']}")
    elif isinstance(theirs["data"], str) and theirs["data"] in EMBEDDED_NAMES:
        from .data import resolve_embedded

        theirs.setdefault("model", DEFAULT_MODEL_OFFLINE)
        theirs.setdefault("imgsz", 192)
        name, theirs["data"] = theirs["data"], str(resolve_embedded(theirs["data"]))
        print(f"yolo-vfl: data={name}: training on the generated dataset {theirs['data']}")
    else:
        theirs.setdefault("model", DEFAULT_MODEL_WITH_DATA)
        _check_data(str(theirs["data"]))
    if resume:
        theirs["resume"] = True
    model_name = str(theirs.pop("model"))
    _check_model(model_name)

    from ultralytics import YOLO

    from .trainer import VFLDetectionTrainer

    model = YOLO(model_name)
    model.train(trainer=VFLDetectionTrainer, **theirs, **ours)
    return 0


def _cmd_ultralytics(mode: str, args: dict[str, Any], tokens: Sequence[str]) -> int:
    from .criterion import SETTING_KEYS

    ours = [k for k in args if k in SETTING_KEYS]
    if ours:
        raise CLIError(
            f"'{ours[0]}' only applies to 'yolo-vfl train': {mode} runs plain Ultralytics on plain checkpoints."
        )
    model = args.get("model")
    if isinstance(model, str) and model.endswith(".pt"):
        _check_model(model)
    from ultralytics.cfg import entrypoint

    saved = sys.argv
    sys.argv = ["yolo", mode, *tokens]
    try:
        entrypoint()
    finally:
        sys.argv = saved
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        int: exit code (0 success, 2 user error).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("help", "-h", "--help"):
        print(HELP)
        return 0
    mode, tokens = argv[0], argv[1:]
    args: dict[str, Any] = {}
    try:
        if mode not in MODES:
            raise CLIError(f"Unknown mode '{mode}'.{_suggest(mode, MODES)} Valid modes: {', '.join(MODES)}.")
        if mode != "ab":  # ab takes an optional spec path and a 'report' sub-form before its key=value pairs
            args = parse_args(tokens)
        if mode in ("losses", "version") and args:
            raise CLIError(f"'yolo-vfl {mode}' takes no arguments.")
        if mode == "losses":
            return _cmd_losses()
        if mode == "version":
            return _cmd_version()
        if mode == "data":
            return _cmd_data(args)
        if mode == "train":
            return _cmd_train(args)
        if mode == "ab":
            from .experiment import cli_ab

            return cli_ab(tokens)
        return _cmd_ultralytics(mode, args, tokens)
    except KeyboardInterrupt:
        print("yolo-vfl: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, KeyError, SyntaxError, FileNotFoundError, FileExistsError) as e:
        if _wants_traceback(args):
            raise
        print(f"yolo-vfl: error: {_first_line(e) if not isinstance(e, CLIError) else e}", file=sys.stderr)
        return 2


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())


__all__ = ["main", "entrypoint", "parse_args", "parse_value", "CLIError", "MODES"]
