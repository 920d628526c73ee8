"""Checks that run before any training: the model and the dataset exist (or can be downloaded) and can be used.

Shared by ``yolo-vfl train`` and the A/B runner; every failure is a ``UserError`` that names the bad value.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:
    from .criterion import ClsLossSettings
    from .labels import LabelRules

__all__ = ["check_model", "check_data", "is_offline", "first_line", "versions", "source_hash", "load_checkpoint_dict"]
__all__ += ["check_resumable"]

LOGGER = logging.getLogger(__name__)


def source_hash(root: Path | None = None) -> str:
    """The first 12 hex digits of a SHA-256 over the ``*.py`` files under ``root`` (default: this package).

    Each file counts with its path relative to ``root`` and its bytes, in sorted order.

    Two runs with the same hash ran the same yolo_vfl code; an edit of the working tree changes it even when
    ``__version__`` stays the same.
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def versions(**extra: str) -> dict[str, str]:
    """yolo_vfl (version and ``source_hash``), Ultralytics, torch and Python versions, then ``extra``."""
    import platform

    import torch
    import ultralytics

    from . import __version__

    base = {"yolo_vfl": __version__, "yolo_vfl_source": source_hash(), "ultralytics": ultralytics.__version__}
    return {**base, "torch": torch.__version__, "python": platform.python_version(), **extra}


def is_offline() -> bool:
    """Whether downloads are off: ``YOLO_OFFLINE`` set, or Ultralytics found no network."""
    from ultralytics.utils import ONLINE

    return os.environ.get("YOLO_OFFLINE", "") not in ("", "0") or not ONLINE


def check_model(model: str) -> None:
    """Fail before training when the model file is missing and cannot be downloaded.

    Raises:
        UserError: naming the model and what to use instead.
    """
    path = Path(model).expanduser()
    if path.exists():
        if path.suffix == ".pt":
            load_checkpoint_dict(path)
        return
    if path.suffix in (".yaml", ".yml"):
        from ultralytics.nn.tasks import yaml_model_load  # resolves scaled names: yolov8n.yaml -> yolov8.yaml

        try:
            yaml_model_load(model)
        except (FileNotFoundError, AssertionError) as e:
            raise UserError(
                f"Model file '{model}' not found (neither a local file nor an Ultralytics model YAML)."
            ) from e
        return
    if path.suffix != ".pt":
        raise UserError(f"Model '{model}' not found: expected a local .pt checkpoint or a model .yaml.")
    if len(path.parts) > 1:
        raise UserError(f"Model file '{model}' not found.")
    if is_offline():
        raise UserError(
            f"Pretrained weights '{model}' are not on this machine and cannot be downloaded (offline). Use "
            f"model={path.stem}.yaml to train from scratch, or model=/path/to/{path.name} for a local copy."
        )


def check_data(data: str, *, single_cls: bool = False, task: str | None = None) -> None:
    """Fail before training (before a run directory exists) when the dataset is missing or unusable.

    Missing and not downloadable (a near miss of a generated dataset's name gets a suggestion), a local data YAML
    that Ultralytics rejects (says why), a split whose images cannot be read at all (Ultralytics would skip them one
    by one and fail after creating the run), or a split whose labels Ultralytics would mostly drop (bad rows, class
    ids outside ``[0, nc)``, coordinates outside [0, 1]) or that has no labels directory. Label files are read once,
    images are not decoded; a few images with bad labels only get a warning with their count.

    Args:
        data: A data YAML path, a dataset directory or an Ultralytics dataset name.
        single_cls: Whether training uses ``single_cls=True`` (any class id >= 0 is then valid).
        task: The training task (``pose`` checks the keypoint columns); None or another task: box or polygon rows.

    Raises:
        UserError: naming the dataset and what is wrong with it (for labels: the first bad file, line and range).
    """
    from .labels import LabelRules

    info = _dataset_info(data)
    rules = LabelRules.from_data(info, single_cls=single_cls, task=task)
    for split in ("train", "val"):
        if info.get(split):
            images = sorted(set(_image_files(info[split])))
            _check_images(data, split, info[split], images)
            _check_labels(data, split, images, rules)


def _dataset_info(data: str) -> dict[str, Any]:
    """Ultralytics' ``check_det_dataset`` of ``data`` (downloads only when online), its errors as ``UserError``."""
    from ultralytics.data.utils import check_det_dataset

    offline = is_offline()
    try:
        return check_det_dataset(data, autodownload=not offline)
    except Exception as e:  # Ultralytics raises FileNotFoundError, SyntaxError, TypeError, errors while downloading
        raise _dataset_error(data, e, offline) from e


def _dataset_error(data: str, e: Exception, offline: bool) -> UserError:
    """The one-line ``UserError`` for an exception of ``check_det_dataset(data)``.

    A local YAML (or directory) gets what Ultralytics says is wrong with it, unless its images are missing and its
    ``download:`` would fetch them (then: offline). Only a dataset that is not on this machine gets the offline message.
    """
    from .data import EMBEDDED_NAMES

    local = Path(data).expanduser()
    reason = _their_reason(data, e)
    if local.exists() and not (offline and isinstance(e, FileNotFoundError) and _downloads(local)):
        what = "directory" if local.is_dir() else "data YAML"
        return UserError(f"Dataset '{data}' (a local {what}) cannot be used: {reason}.")
    close = difflib.get_close_matches(data, list(EMBEDDED_NAMES), n=1, cutoff=0.75)
    if close and not Path(data).suffix:
        return UserError(
            f"Dataset '{data}' not found. Did you mean '{close[0]}'? Generated datasets: "
            f"{', '.join(EMBEDDED_NAMES)}; or give the path of a data YAML."
        )
    if offline:
        return UserError(
            f"Dataset '{data}' is not on this machine and cannot be downloaded (offline): {reason}. "
            "Run 'yolo-vfl train' without data= to use the embedded dataset, or point data= to a local YAML."
        )
    return UserError(f"Dataset '{data}' could not be prepared: {reason}.")


def _their_reason(data: str, e: BaseException) -> str:
    """Ultralytics' message for ``data``: first line, without emoji and without the dataset name it starts with."""
    reason = first_line(e).replace("\u274c", "").strip().rstrip(".")
    for prefix in (f"Dataset '{data}' ", data, f"'{data}' "):
        reason = reason.removeprefix(prefix).strip()
    return reason or type(e).__name__


def _downloads(path: Path) -> bool:
    """Whether the data YAML ``path`` has a ``download:`` entry (Ultralytics fetches missing images with it)."""
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text(errors="replace")) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(cfg, dict) and bool(cfg.get("download"))


def _image_files(source: Any) -> Iterator[str]:
    """The image files of a dataset split, lazily and in no particular order.

    Args:
        source: a directory (searched recursively), a .txt list of files, an image file, or a list of these.

    Yields:
        Paths of image files as strings (by extension; not opened): thousands of ``Path`` objects cost more time
        than reading the label files.
    """
    from ultralytics.data.utils import IMG_FORMATS

    for item in source if isinstance(source, (list, tuple)) else [source]:
        path = Path(str(item)).expanduser()
        if path.is_dir():
            for root, _, files in os.walk(path):
                yield from (os.path.join(root, f) for f in files if f.rpartition(".")[2].lower() in IMG_FORMATS)
        elif path.suffix == ".txt" and path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                line = line.strip()
                if line and line.rpartition(".")[2].lower() in IMG_FORMATS:
                    f = Path(line)
                    yield str(f if f.is_absolute() else path.parent / line.removeprefix("./"))
        elif path.suffix[1:].lower() in IMG_FORMATS:
            yield str(path)


def _pil_open(path: Path) -> Callable[[Path], Any]:
    """Pillow's own ``Image.open`` for ``path``, not Ultralytics' replacement (except for HEIF and AVIF files).

    Importing Ultralytics replaces ``PIL.Image.open`` with a function that, for any file Pillow cannot identify, tries
    to install and import ``pi_heif`` and opens the file again: a broken ``.jpg`` then fails with ``No module named
    'pi_heif'`` (after a pip attempt) instead of saying that it is no image.
    """
    from PIL import Image
    from ultralytics.utils import patches

    if path.suffix.lower() in getattr(patches, "PIL_FALLBACK_SUFFIXES", (".avif", ".heic", ".heif")):
        return Image.open
    return getattr(patches, "_image_open", Image.open)


def _unreadable(path: Path) -> str | None:
    """Why the image file ``path`` cannot be used (header checked, pixels not decoded), or None when it can."""
    from PIL import Image

    try:
        with _pil_open(path)(path) as im:
            im.verify()
            width, height = im.size
    except Image.UnidentifiedImageError:
        return "not an image file that can be read (Pillow cannot identify it)"
    except ImportError as e:  # a HEIF file without pi_heif
        return f"cannot be read without the module {e.name or first_line(e)}"
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad file; all mean 'unreadable'
        return f"cannot be read: {first_line(e)}"
    return None if width > 1 and height > 1 else f"image size {width}x{height}"


def _check_images(data: str, split: str, source: Any, images: Sequence[str]) -> None:
    """Raise UserError when the ``split`` of ``data`` has no image that can be read (stops at the first good one).

    Args:
        data: The dataset, as the user named it.
        split: ``train`` or ``val``.
        source: The split's entry in the dataset dict (named when it holds no image).
        images: The split's image files, sorted.
    """
    first_bad = None
    for path in images:
        why = _unreadable(Path(path))
        if why is None:
            return
        first_bad = first_bad or (path, why)
    if first_bad is None:
        raise UserError(f"Dataset '{data}': no images found for the {split} split ({source}).")
    raise UserError(
        f"Dataset '{data}': none of the {len(images)} {split} images can be read (e.g. {first_bad[0]}: "
        f"{first_bad[1]}). Replace the broken image files or point the YAML at other images."
    )


def _check_labels(data: str, split: str, images: Sequence[str], rules: LabelRules) -> None:
    """Raise UserError when Ultralytics would drop most images of ``split`` for their labels, or find no labels.

    A few dropped images, or labels directories without a label for any image, only get a warning.

    Args:
        data: The dataset, as the user named it.
        split: ``train`` or ``val``.
        images: The split's image files.
        rules: Class count and row layout of the dataset.
    """
    from .labels import scan_labels

    scan = scan_labels(images, rules)
    more = len(scan.label_dirs) - 1
    where = f"{scan.label_dirs[0]}" + (f" and {more} more directories" if more else "")
    if not scan.labelled and not any(d.is_dir() for d in scan.label_dirs):
        raise UserError(
            f"Dataset '{data}': no labels for the {split} split: {where} {'do' if more else 'does'} not exist "
            f"(Ultralytics reads the labels of images/.../x.jpg from labels/.../x.txt; e.g. {scan.expected})."
        )
    if not scan.labelled:
        LOGGER.warning(
            f"yolo_vfl: dataset '{data}': none of the {scan.images} {split} images has a label file in {where} "
            f"(e.g. {scan.expected}): all are background images"
        )
    elif scan.dropped * 2 > scan.images:
        raise UserError(
            f"Dataset '{data}': Ultralytics would drop {scan.dropped} of the {scan.images} {split} images for bad "
            f"labels; the first: {scan.problems[0]}."
        )
    elif scan.dropped:
        LOGGER.warning(
            f"yolo_vfl: dataset '{data}': Ultralytics will drop {scan.dropped} of the {scan.images} {split} images "
            f"for bad labels; the first: {scan.problems[0]}"
        )


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def load_checkpoint_dict(path: str | Path) -> dict[str, Any]:
    """Load an Ultralytics checkpoint file, refusing anything else with a clear message.

    Args:
        path: a ``.pt`` file written by Ultralytics (``last.pt``, ``best.pt``, ``yolov8n.pt``).

    Returns:
        The checkpoint dict (``model`` or ``ema`` holds the model, ``train_args`` the training arguments).

    Raises:
        UserError: the file is missing, empty, not a PyTorch file, or a PyTorch file without an Ultralytics model
            (a saved tensor, a state dict).
    """
    import torch

    if not Path(path).expanduser().is_file():
        raise UserError(f"Model file '{path}' not found.")
    path = Path(path).expanduser()
    if path.stat().st_size == 0:
        raise UserError(f"Checkpoint '{path}' is an empty file (an interrupted save?).")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a file that is not a checkpoint
        raise UserError(f"'{path}' is not a readable PyTorch checkpoint: {first_line(e)}") from e
    model = ckpt.get("ema") or ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(model, torch.nn.Module):
        what = f"a dict with keys {sorted(map(str, ckpt))[:6]}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UserError(
            f"'{path}' is not an Ultralytics checkpoint: it holds {what}, not a model under 'model' or 'ema'."
        )
    return ckpt


def check_resumable(path: str | Path, given: dict[str, Any]) -> ClsLossSettings:
    """Check, before any training, that ``path`` is an unfinished run's checkpoint whose loss ``given`` agrees with.

    Ultralytics turns ``resume=True`` on a finished checkpoint into a *new* run on its default dataset, with a
    warning; this refuses it instead.

    Args:
        path: the checkpoint to resume (``last.pt``).
        given: the loss settings passed with ``resume=True`` (``{"loss": "qfl"}``).

    Returns:
        The checkpoint's loss settings.

    Raises:
        UserError: not a training checkpoint, a finished run, or a loss setting that differs from the checkpoint's.
    """
    from .trainer import conflict_error, resume_conflicts

    ckpt = load_checkpoint_dict(path)
    train_args = ckpt.get("train_args") if isinstance(ckpt.get("train_args"), dict) else {}
    epoch, epochs = ckpt.get("epoch", -1), train_args.get("epochs")
    if not isinstance(epoch, int) or epoch < 0 or ckpt.get("optimizer") is None:
        raise UserError(
            f"Cannot resume '{path}': it is a finished run's checkpoint (no epoch or optimizer state). To train it "
            f"further, start a new run from it: model={path} without resume=True."
        )
    if isinstance(epochs, int) and epoch + 1 >= epochs:
        raise UserError(f"Cannot resume '{path}': its run trained all {epochs} epochs; start a new run from it.")
    settings, conflicts = resume_conflicts(train_args, given)
    if conflicts:
        raise conflict_error(conflicts)
    return settings
