"""The ``yolo-vfl`` command: Ultralytics-style ``key=value`` CLI for training with VFL/QFL, offline-friendly.

Modes::

    yolo-vfl train [data=coco128.yaml] [model=yolov8n.pt] loss=vfl [vfl_gamma=2.0 ...] [any Ultralytics train arg]
    yolo-vfl val|predict|export ...      handed to Ultralytics (our checkpoints are plain Ultralytics)
    yolo-vfl data out=DIR [n=600 seed=0 imgsz=192]
    yolo-vfl losses | version | help

``main(argv)`` runs in-process and returns the exit code. User errors (see :func:`is_user_error`: the package's typed
``UserError`` for bad arguments and unknown names, the system's verdict on missing or unwritable files) print one line
(no traceback unless ``verbose=True`` is given or ``YOLO_VFL_DEBUG=1`` is set) and return 2; any other exception is a
bug and propagates with its traceback.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import errno
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .checks import check_data, check_model, check_resumable, first_line
from .errors import UserError

MODES = ("train", "ab", "pretrain", "val", "predict", "export", "data", "losses", "version", "help")
ULTRALYTICS_MODES = ("val", "predict", "export")
DEFAULT_MODEL_WITH_DATA = "yolov8n.pt"
DEFAULT_MODEL_OFFLINE = "yolov8n.yaml"
DATA_KEYS = {"out": None, "n": 600, "seed": 0, "imgsz": 192, "variant": "shapes", "overwrite": False}

#: The loss registry (name -> its trainer settings), the other trainer settings and the generated datasets (name ->
#: variant) as ``yolo-vfl help`` lists them without importing torch, Ultralytics or OpenCV; tests/test_cli.py checks
#: them against ``losses.list_losses()``, ``criterion.SETTING_KEYS`` and ``data.EMBEDDED_NAMES``.
HELP_LOSSES: dict[str, tuple[str, ...]] = {
    "bce": (),
    "focal": ("fl_alpha", "fl_gamma"),
    "vfl": ("vfl_alpha", "vfl_gamma", "vfl_iou_weighted"),
    "qfl": ("qfl_beta",),
    "mal": ("mal_alpha", "mal_gamma"),
    "iabce": ("iabce_alpha", "iabce_gamma"),
}
HELP_SETTINGS = ("cls_target", "cls_fg_negatives", "cls_warmup", "cls_branches", "tal_topk", "tal_alpha", "tal_beta")
HELP_DATASETS = {
    "embedded": "shapes",
    "embedded-glyphs": "glyphs",
    "embedded-digits": "digits",
    "embedded-quick": "quick",
}

HELP = """\
yolo-vfl: train Ultralytics YOLO with IoU-aware classification losses (Varifocal, Quality Focal, ...).

Usage:
  yolo-vfl train [key=value ...]    train; every Ultralytics train argument passes through
      loss={losses}   classification loss (default bce; 'yolo-vfl losses': formulas, defaults)
      loss hyperparameters: {params}
      also: {settings}
      without data=: trains yolov8n.yaml on the embedded synthetic dataset (works offline);
      data={datasets}: the generated datasets (variants {variants})
      with data= and no model=: model=yolov8n.pt, as in Ultralytics
  yolo-vfl ab [spec.yaml] [key=value ...]   A/B experiment: arms x seeds, report with paired 95% intervals
  yolo-vfl ab report out=DIR        rewrite the report of an experiment directory
  yolo-vfl ab diagnose out=DIR      false positives by kind and score distributions per arm
  yolo-vfl pretrain [key=value ...] build (once, cached) the project-made pretrained checkpoint: stock-BCE yolov8n
                                    on 3,200 generated shapes images; A/B specs fine-tune from it with pretrain:
  yolo-vfl val|predict|export ...   hand over to Ultralytics (checkpoints are plain Ultralytics)
  yolo-vfl data out=DIR [n=600 seed=0 imgsz=192 variant={variants}]   write a generated dataset
  yolo-vfl losses                   list the losses: formula, defaults, paper
  yolo-vfl version                  versions of yolo-vfl, ultralytics and torch
  yolo-vfl help                     this text (also -h, --help)

Examples:
  yolo-vfl train loss=vfl epochs=5
  yolo-vfl train data=coco128.yaml model=yolov8n.pt loss=qfl qfl_beta=2.0 epochs=100 imgsz=640
  yolo-vfl val model=runs/detect/train/weights/best.pt data=coco128.yaml
"""


def help_text() -> str:
    """``yolo-vfl help``: the usage, with the losses, settings and datasets of the tables above."""
    import textwrap

    variants = "|".join(dict.fromkeys(HELP_DATASETS.values()))
    return HELP.format(
        losses="|".join(HELP_LOSSES),
        params=textwrap.fill(" ".join(p for ps in HELP_LOSSES.values() for p in ps), 90, subsequent_indent=" " * 8),
        settings=" ".join(HELP_SETTINGS),
        datasets="|".join(HELP_DATASETS),
        variants=variants,
    )


class CLIError(UserError):
    """A user error: printed as one line, exit code 2."""


def is_user_error(e: BaseException) -> bool:
    """Whether ``e`` is a user error (one line, exit 2) rather than a bug (traceback), by its type alone.

    User errors: this package's :class:`~yolo_vfl.errors.UserError` (every validator raises one: ``CLIError``,
    ``InvalidSettingError``, ``InvalidTypeError``, ``UnknownLossError``); Ultralytics' ``SyntaxError`` for unknown or
    misaligned keys (raised with a message, unlike a real syntax error, which has a line number); and the operating
    system's verdict on a path, the disk or a download: ``FileNotFoundError``, ``FileExistsError``, ``PermissionError``,
    ``ConnectionError``, a full disk or a read-only filesystem.

    Args:
        e: the exception.

    Returns:
        True for a user error.
    """
    if isinstance(e, (UserError, FileNotFoundError, FileExistsError, PermissionError, ConnectionError)):
        return True
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT)
    return isinstance(e, SyntaxError) and e.lineno is None and e.filename is None


@contextlib.contextmanager
def _validating(prefix: str = "") -> Iterator[None]:
    """Turn the TypeError / ValueError / KeyError / SyntaxError of a call that validates user input into a CLIError.

    Only wrap calls whose job is to check what the user gave (``get_cfg`` of the overrides, the dataset generator's
    argument checks), never training.
    """
    try:
        yield
    except CLIError:
        raise
    except (TypeError, ValueError, KeyError, SyntaxError) as e:
        raise CLIError(f"{prefix}{first_line(e)}") from e


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _mode_key_error(value: Any) -> CLIError:
    """The error for ``mode=...`` given as an argument: the mode is the first, bare word."""
    if isinstance(value, str) and value in MODES:
        return CLIError(
            f"'mode' is not an argument: the mode is the first word (yolo-vfl {value} ...); "
            f"write 'yolo-vfl {value} key=value ...'."
        )
    hint = _suggest(value, MODES) if isinstance(value, str) else ""
    return CLIError(
        f"'mode' is not an argument: the mode is the first word (yolo-vfl train ...).{hint} "
        f"Valid modes: {', '.join(MODES)}."
    )


def _unknown_mode_error(mode: str) -> CLIError:
    """The error for a first word that is not a mode: a typo, ``mode=val``, or a key=value without a mode."""
    key, sep, value = mode.partition("=")
    valid = f"Valid modes: {', '.join(MODES)}."
    if sep and key.strip().replace("-", "_") == "mode":
        value = value.strip()
        if value in MODES:
            return CLIError(f"The mode is a bare word, not {mode}: yolo-vfl {value} key=value ...")
        return CLIError(
            f"The mode is a bare word, not {mode} (yolo-vfl MODE key=value ...).{_suggest(value, MODES)} {valid}"
        )
    if sep:
        return CLIError(f"'{mode}' is not a mode: the first word is the mode (yolo-vfl train {mode} ...). {valid}")
    return CLIError(f"Unknown mode '{mode}'.{_suggest(mode, MODES)} {valid}")


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


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns, each as wide as its widest cell (the last column unpadded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]).rstrip() for row in rows)


def _cmd_losses() -> int:
    from .losses import list_losses

    rows = [("loss", "formula", "defaults", "reference")]
    for spec in list_losses():
        defaults = ", ".join(f"{p.arg}={p.default}" for p in spec.params) or "-"
        rows.append((spec.name, spec.formula, defaults, spec.reference))
    print(_table(rows))
    return 0


def _cmd_version() -> int:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    print(f"yolo-vfl {__version__}  ultralytics {installed('ultralytics')}  torch {installed('torch')}")
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
    out = Path(str(args["out"])).expanduser()
    if out.is_file() and kwargs["overwrite"] is not True:
        raise CLIError(f"out={out} is a file: give a directory (new, empty, or a dataset 'yolo-vfl data' wrote).")
    inside = next((p for p in out.parents if p.exists() or p.is_symlink()), None)
    if inside is not None and not inside.is_dir():
        raise CLIError(f"out={out} is inside '{inside}', a file: give a directory path.")
    yaml_path = generate_dataset(out, **kwargs)
    print(f"Dataset written: {yaml_path}")
    return 0


def _generated_imgsz(data_yaml: str) -> int:
    """The image size a generated dataset was made at (its ``dataset.json``), 192 where that cannot be read."""
    import json

    try:
        return int(json.loads((Path(data_yaml).parent / "dataset.json").read_text())["imgsz"])
    except (OSError, ValueError, KeyError, TypeError):
        return 192


def _cmd_train(args: dict[str, Any]) -> int:
    from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg

    from .criterion import SETTING_KEYS, ClsLossSettings
    from .data import EMBEDDED_NAMES

    ours = {k: v for k, v in args.items() if k in SETTING_KEYS}
    theirs = {k: v for k, v in args.items() if k not in SETTING_KEYS}
    for key in theirs:
        if key == "mode":
            raise _mode_key_error(theirs[key])
        if key not in DEFAULT_CFG_DICT:
            valid = [*SETTING_KEYS, *(k for k in DEFAULT_CFG_DICT if k != "mode")]
            raise CLIError(f"Unknown argument '{key}'.{_suggest(key, valid)} See 'yolo-vfl help' and 'yolo help'.")
    settings = ClsLossSettings.from_args(ours)  # loss name and hyperparameters, before any work
    with _validating():  # Ultralytics' own type and range checks of the overrides
        get_cfg(overrides={k: v for k, v in theirs.items() if k != "model"})

    resume = theirs.get("resume")
    if resume:  # the checkpoint knows its data, model and loss settings
        if isinstance(resume, str) and "model" not in theirs:
            theirs["model"] = resume
        if "model" not in theirs:
            raise CLIError("resume=True needs model=path/to/last.pt (or resume=path/to/last.pt).")
        check_resumable(str(theirs["model"]), ours)  # Ultralytics would start a new run on a finished checkpoint
    elif theirs.get("data") in (None, ""):
        from .data import embedded_dataset

        theirs.setdefault("model", DEFAULT_MODEL_OFFLINE)
        theirs.setdefault("imgsz", 192)  # the embedded dataset's image size
        theirs["data"] = str(embedded_dataset())
        print(f"yolo-vfl: no data= given: training on the embedded synthetic dataset {theirs['data']}")
    elif isinstance(theirs["data"], str) and theirs["data"] in EMBEDDED_NAMES:
        from .data import resolve_embedded

        theirs.setdefault("model", DEFAULT_MODEL_OFFLINE)
        name, theirs["data"] = theirs["data"], str(resolve_embedded(theirs["data"]))
        theirs.setdefault("imgsz", _generated_imgsz(theirs["data"]))  # embedded-quick: 96, the others 192
        print(f"yolo-vfl: data={name}: training on the generated dataset {theirs['data']}")
    else:
        theirs.setdefault("model", DEFAULT_MODEL_WITH_DATA)
        check_data(str(theirs["data"]))
    if resume:
        theirs["resume"] = True
    model_name = str(theirs.pop("model"))
    check_model(model_name)

    from ultralytics import YOLO

    from .criterion import check_branches
    from .trainer import VFLDetectionTrainer

    model = YOLO(model_name)
    if not resume:
        check_branches(settings, model.model)  # cls_branches=one2one needs an end-to-end head, before any run dir
    model.train(trainer=VFLDetectionTrainer, **theirs, **ours)
    print(_train_summary(model, settings))
    return 0


def _train_summary(model: Any, settings: Any) -> str:
    """One line after training: the loss in force with its hyperparameters, best.pt and the final val metrics.

    Args:
        model: the ``YOLO`` object that trained (its ``trainer`` holds the settings, ``best`` and ``metrics``).
        settings: the ``ClsLossSettings`` validated from the command line (used when the trainer has none).

    Returns:
        The line, e.g. ``yolo-vfl: trained with loss=vfl vfl_alpha=0.75 ...; best.pt: ...; mAP50 0.41, ...``.
    """
    trainer = getattr(model, "trainer", None)
    settings = getattr(trainer, "cls_loss_settings", None) or settings  # on resume: the checkpoint's settings
    never = getattr(trainer, "never_switched", lambda which: False)
    if never("last"):
        ended = "the run ended within the BCE warm-up"
        parts = [f"yolo-vfl: trained with BCE only: {settings.describe()} never took over ({ended})"]
    else:
        parts = [f"yolo-vfl: trained with {settings.describe()}"]
    best = getattr(trainer, "best", None)
    if best is not None:
        parts.append(f"best.pt: {best}" if Path(best).name == "best.pt" else f"weights: {best}")
        if never("best") and not never("last"):
            parts[-1] += " (saved during the BCE warm-up: trained BCE only)"
    metrics = getattr(trainer, "metrics", None)
    if isinstance(metrics, dict):
        shown = [
            f"{key.split('/', 1)[-1].removesuffix('(B)')} {float(value):.3f}"
            for key, value in metrics.items()
            if key.startswith("metrics/mAP50") and isinstance(value, (int, float))
        ]
        if shown:
            validated = "best.pt" if best is not None and Path(best).is_file() else "last epoch"
            parts.append(", ".join(shown) + f" ({validated}, val split)")
    return "; ".join(parts)


def _cmd_ultralytics(mode: str, args: dict[str, Any], tokens: Sequence[str]) -> int:
    from .criterion import SETTING_KEYS

    ours = [k for k in args if k in SETTING_KEYS]
    if ours:
        raise CLIError(
            f"'{ours[0]}' only applies to 'yolo-vfl train': {mode} runs plain Ultralytics on plain checkpoints."
        )
    if "mode" in args:
        raise _mode_key_error(args["mode"])
    model = args.get("model")
    if isinstance(model, str) and model.endswith(".pt"):
        check_model(model)
    from .data import EMBEDDED_NAMES, resolve_embedded

    data = args.get("data")
    if isinstance(data, str) and data in EMBEDDED_NAMES:  # a generated dataset, as for train (made on first use)
        path = str(resolve_embedded(data))
        tokens = [f"data={path}" if t.partition("=")[0].strip().replace("-", "_") == "data" else t for t in tokens]
        print(f"yolo-vfl: data={data}: the generated dataset {path}")
    elif mode == "val" and data not in (None, ""):
        check_data(str(data))  # before Ultralytics makes a run directory
    from ultralytics.cfg import entrypoint

    # Ultralytics reads its arguments from ARGV, bound to the sys.argv list at import: change that list in place
    saved = sys.argv[:]
    sys.argv[:] = ["yolo", mode, *tokens]
    try:
        entrypoint()
    finally:
        sys.argv[:] = saved
    return 0


# ----------------------------------------------------------------------------------------------------------- ab
AB_HELP = """\
yolo-vfl ab: A/B experiment: does VFL or QFL beat BCE on this data, and with which settings?

Usage:
  yolo-vfl ab [spec.yaml] [key=value ...]   run every arm x seed (finished runs are kept and skipped), then report
  yolo-vfl ab report out=DIR                rewrite summary.csv/.md, curves.png, ranking.png from DIR's results
  yolo-vfl ab diagnose out=DIR [dest=DIR] [arms=a,b]   false positives by kind (background, wrong class, duplicate,
                                            localization) per arm: diagnosis.md/.csv, fp_scores.png, pr_curves.png

Runner keys (spec file or key=value):
{keys}
  arms=bce,vfl   a subset of the spec's arms, or plain losses
  dry_run=true   show the plan only (writes nothing)
  any other Ultralytics train argument (lr0=, optimizer=, workers= ...) is shared by all arms
  diagnose: {diagnose}
            force=true records again; cache_dir=DIR puts new detection records there, not in each run directory

Examples:
  yolo-vfl ab experiments/ab_embedded.yaml
  yolo-vfl ab experiments/ab_embedded.yaml seeds=[0] epochs=2 out=runs/ab/smoke
  yolo-vfl ab experiments/ab_finetune_glyphs.yaml     # fine-tune from the project-made pretrained checkpoint
  yolo-vfl ab experiments/ab_coco128_gpu.yaml device=0,1
  yolo-vfl ab report out=runs/ab/ab_embedded
  yolo-vfl ab diagnose out=runs/ab/ab_embedded arms=bce,vfl,qfl
"""
DIAGNOSE_KEYS = ("out", "dest", "arms", "baseline", "conf", "iou", "max_det", "device", "batch", "workers")
DIAGNOSE_KEYS += ("cache_dir", "force")


def _ab_help() -> str:
    """``yolo-vfl ab help``: the keys from the spec tables, the diagnose defaults from its signature."""
    import inspect

    from .ab import diagnose_experiment, keys_help

    params = inspect.signature(diagnose_experiment).parameters
    diagnose = "  ".join(f"{k}={'' if params[k].default is None else params[k].default}" for k in DIAGNOSE_KEYS[3:-1])
    return AB_HELP.format(keys=keys_help(), diagnose=diagnose)


def _only(args: dict[str, Any], valid: Sequence[str], command: str) -> None:
    """Refuse keys of ``args`` outside ``valid`` (with a close-match suggestion)."""
    for key in args:
        if key not in valid:
            raise CLIError(
                f"Unknown argument '{key}' for '{command}'.{_suggest(key, valid)} Valid: {', '.join(valid)}."
            )


def _ab_report(tokens: list[str]) -> int:
    from .ab import load_spec, regenerate_report

    spec_path = tokens.pop(0) if tokens and "=" not in tokens[0] else None
    args = parse_args(tokens)
    _only(args, ("out", "baseline"), "yolo-vfl ab report")
    if args.get("out") in (None, ""):
        if spec_path is None:
            raise CLIError("'yolo-vfl ab report' needs out=DIR (the experiment directory) or a spec file.")
        out = load_spec(spec_path).out_dir()
    else:
        out = Path(str(args["out"]))
    paths = regenerate_report(out, args.get("baseline"))
    print(f"yolo-vfl ab: report written: {paths['summary.md']}")
    return 0


def _ab_diagnose(tokens: list[str]) -> int:
    from .ab import diagnose_experiment

    args = parse_args(tokens)
    _only(args, DIAGNOSE_KEYS, "yolo-vfl ab diagnose")
    if args.get("out") in (None, ""):
        raise CLIError("'yolo-vfl ab diagnose' needs out=DIR (the experiment directory).")
    arms = args.get("arms")
    arms = [str(a).strip("[]'\" ") for a in (arms if isinstance(arms, (list, tuple)) else str(arms or "").split(","))]
    kwargs = {k: args[k] for k in DIAGNOSE_KEYS[4:] if k in args}
    if kwargs.get("device") is not None:
        kwargs["device"] = str(kwargs["device"])
    paths = diagnose_experiment(
        str(args["out"]),
        dest=None if args.get("dest") in (None, "") else str(args["dest"]),
        arms=[a for a in arms if a] or None,
        baseline=args.get("baseline"),
        log=lambda msg: print(f"yolo-vfl ab diagnose: {msg}", flush=True),
        **kwargs,
    )
    print(f"yolo-vfl ab: diagnosis written: {paths['diagnosis.md']}")
    return 0


def _ab_plan(tokens: list[str]) -> int:
    from .ab.orchestrate import sequential_plan
    from .ab.spec import RUNNER_KEYS

    args = parse_args(tokens)
    _only(args, ("out", "margin"), "yolo-vfl ab plan")
    if args.get("out") in (None, ""):
        raise CLIError("'yolo-vfl ab plan' needs out=DIR (a pilot experiment with >= 2 seeds).")
    margin_key = next(k for k in RUNNER_KEYS if k.name == "margin")
    margin = margin_key.check(args.get("margin", margin_key.default), "margin")
    print("\n".join(sequential_plan(str(args["out"]), margin)))
    return 0


def cli_ab(tokens: Sequence[str]) -> int:
    """``yolo-vfl ab [spec.yaml] [key=value ...]``, ``ab report out=DIR``, ``ab diagnose out=DIR``, ``ab plan out=DIR``.

    Returns:
        0 on success, 1 when some runs failed (the report is written for the others).

    Raises:
        UserError: bad spec, unknown key, missing files or devices (before anything is written).
    """
    from .ab import ABRunError, load_spec, run_ab

    tokens = list(tokens)
    if tokens and tokens[0] in ("help", "-h", "--help"):
        print(_ab_help())
        return 0
    if tokens and tokens[0] == "report":
        return _ab_report(tokens[1:])
    if tokens and tokens[0] == "diagnose":
        return _ab_diagnose(tokens[1:])
    if tokens and tokens[0] == "plan":
        return _ab_plan(tokens[1:])
    spec_path = tokens.pop(0) if tokens and "=" not in tokens[0] else None
    args = parse_args(tokens)
    dry_run = args.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise CLIError(f"Invalid dry_run={dry_run!r}: true or false.")
    spec = load_spec(spec_path, args)
    command = shlex.join(["yolo-vfl", "ab", *([spec_path] if spec_path else []), *tokens])
    try:
        run_ab(spec, command=command, dry_run=dry_run)
    except ABRunError as e:
        print(f"yolo-vfl ab: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_pretrain(args: dict[str, Any]) -> int:
    from .pretrain import cli_pretrain

    return cli_pretrain(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        int: exit code (0 success, 2 user error, 130 interrupted).

    Raises:
        Exception: anything that is not a user error (:func:`is_user_error`), with its traceback: a bug.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("help", "-h", "--help"):
        print(help_text())
        return 0
    mode, tokens = argv[0], argv[1:]
    args: dict[str, Any] = {}
    try:
        if mode not in MODES:
            raise _unknown_mode_error(mode)
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
            return cli_ab(tokens)
        if mode == "pretrain":
            return _cmd_pretrain(args)
        return _cmd_ultralytics(mode, args, tokens)
    except KeyboardInterrupt:
        print("yolo-vfl: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a user error becomes one line; anything else (a bug) is re-raised
        if not is_user_error(e) or _wants_traceback(args):
            raise
        print(f"yolo-vfl: error: {first_line(e) if not isinstance(e, CLIError) else e}", file=sys.stderr)
        return 2


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())


__all__ = ["main", "entrypoint", "cli_ab", "parse_args", "parse_value", "is_user_error", "CLIError", "MODES"]

if __name__ == "__main__":
    entrypoint()
