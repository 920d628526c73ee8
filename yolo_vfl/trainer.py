"""Ultralytics trainers that train with a registered classification loss (``loss=vfl``) and stay plain Ultralytics.

Usage::

    from ultralytics import YOLO
    from yolo_vfl import VFLDetectionTrainer

    YOLO("yolov8n.yaml").train(trainer=VFLDetectionTrainer, data="my.yaml", loss="vfl", vfl_gamma=2.0)

``VFLDetectionTrainer`` picks the segment, pose or OBB variant from the model's task. The settings (``loss``,
``vfl_alpha``, ``vfl_gamma``, ``vfl_iou_weighted``, ``qfl_beta``, ``fl_alpha``, ``fl_gamma``) are validated before any
work, live in ``trainer.args`` (so ``args.yaml``, checkpoints, resume and the rebuilt DDP workers carry them) and are
hidden from Ultralytics' key check, which rejects keys it does not know. Ultralytics' final ``strip_optimizer`` drops
unknown keys from the checkpoints' ``train_args``: ``final_eval`` puts the settings back into ``last.pt`` and
``best.pt``. Plain Ultralytics resume of such a checkpoint then stops with Ultralytics' SyntaxError for unknown keys
before the first batch, instead of training BCE.

The model stays a plain Ultralytics model: the loss is installed into ``model.criterion`` of the training model and of
the EMA model (which the validator uses for val losses) after ``_setup_train``, and taken off around every checkpoint
save, so ``last.pt`` and ``best.pt`` load where ``yolo_vfl`` is not installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from ultralytics.cfg import get_cfg
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.obb import OBBTrainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.utils import DEFAULT_CFG, DEFAULT_CFG_DICT, LOGGER, RANK, YAML

from .criterion import SETTING_KEYS, ClsLossSettings, install_cls_loss, normalize_setting
from .errors import InvalidSettingError, UserError
from .fileio import atomic_write_bytes

__all__ = [
    "VFLDetectionTrainer",
    "VFLSegmentationTrainer",
    "VFLPoseTrainer",
    "VFLOBBTrainer",
    "TASK_TRAINERS",
    "trainer_for_task",
    "RECORD_KEY",
    "GAIN_KEYS",
    "resume_conflicts",
    "conflict_error",
    "skip_final_validation",
    "untimed_nms",
    "check_validated_branch",
    "untimed",
]

#: The checkpoint record written next to the settings in ``train_args``: how many epochs had trained with ``loss``
#: (after the ``cls_warmup`` BCE epochs) when the checkpoint was saved. 0 with ``loss != "bce"``: BCE only.
RECORD_KEY = "cls_loss_epochs"

#: Ultralytics' loss gains; a negative gain would train the model to increase that loss.
GAIN_KEYS = ("box", "cls", "dfl", "pose", "kobj")


def _unwrap(model: Any) -> Any:
    return model.module if hasattr(model, "module") else model


def _cls_warmup_callback(trainer: Any) -> None:
    """``on_train_epoch_start``: BCE during the first ``cls_warmup`` epochs, then the configured loss."""
    trainer.install_cls_loss(trainer.epoch)


def _time_check_callback(trainer: Any) -> None:
    """``on_fit_epoch_end``: warn once when ``time=`` leaves no epoch for the chosen loss after the BCE warm-up."""
    settings = trainer.cls_loss_settings
    if trainer.args.time and trainer.epochs <= settings.warmup and not getattr(trainer, "_warned_no_switch", False):
        trainer._warned_no_switch = True
        LOGGER.warning(
            f"yolo_vfl: time={trainer.args.time} h allows about {trainer.epochs} epochs, but the first "
            f"cls_warmup={settings.warmup} train BCE: this run will train BCE only, never loss={settings.loss}. "
            f"Give more time or a smaller cls_warmup."
        )


def _check_epochs(settings: ClsLossSettings, args: Any) -> None:
    """``cls_warmup < epochs``; with ``time=`` Ultralytics recomputes ``epochs`` while training.

    With ``time=``, the number of epochs is not known before training: the trainer then records how many epochs
    trained with the chosen loss (:data:`RECORD_KEY`) and says so when none did.
    """
    if not getattr(args, "time", None):
        settings.check_epochs(args.epochs)


def check_validated_branch(settings: ClsLossSettings, nms: Any) -> None:
    """Refuse ``cls_branches=one2one`` unless validation scores the one-to-one branch (``nms=False``).

    Ultralytics 8.4 validates an end-to-end head's one-to-many branch with NMS unless ``nms=False``; with the loss on
    the one-to-one branch only, that branch trains with stock BCE, so mAP and ``best.pt`` would describe BCE.

    Raises:
        InvalidSettingError: naming ``nms`` and the valid choices.
    """
    if settings.branches == "one2one" and nms is not False:
        raise InvalidSettingError(
            f"Invalid nms={nms!r} with cls_branches='one2one': validation would score the one-to-many branch through "
            f"NMS, and that branch trains with stock BCE here, so mAP and best.pt would describe BCE, not "
            f"loss={settings.loss}. Valid: nms=False (validate the one-to-one branch, NMS-free), or cls_branches='both'"
        )


def _check_gains(args: Any) -> None:
    """Refuse negative loss gains (``cls=-1``), which would train the model to increase that loss.

    Raises:
        InvalidSettingError: naming the gain and the valid range.
    """
    for key in GAIN_KEYS:
        value = getattr(args, key, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not value >= 0:
            raise InvalidSettingError(
                f"Invalid {key}={value}: loss gains must be >= 0 (Ultralytics' default is "
                f"{DEFAULT_CFG_DICT.get(key)}); a negative gain trains the model to increase "
                f"that loss."
            )


def resume_conflicts(saved: dict[str, Any], given: dict[str, Any]) -> tuple[ClsLossSettings, list[str]]:
    """The checkpoint's loss settings, and the settings given with ``resume=True`` that disagree with them.

    Args:
        saved: the checkpoint's ``train_args`` (keys other than ``SETTING_KEYS`` are ignored; none: stock BCE).
        given: the settings passed with ``resume=True``.

    Returns:
        ``(settings, conflicts)``: the validated saved settings and ``"key=value (checkpoint: value)"`` per conflict.
    """
    settings = ClsLossSettings.from_args({k: v for k, v in saved.items() if k in SETTING_KEYS})
    current = settings.to_args()
    conflicts = [
        f"{k}={v!r} (checkpoint: {current.get(k, 'unset')!r})"
        for k, v in given.items()
        if normalize_setting(k, v) != current.get(k)
    ]
    return settings, conflicts


def conflict_error(conflicts: list[str]) -> UserError:
    """The error for loss settings given with ``resume=True`` that differ from the checkpoint's."""
    return InvalidSettingError(
        f"Cannot change the classification loss on resume: {', '.join(conflicts)}. Resume without these settings to "
        "continue with the checkpoint's, or start a new training run."
    )


def _read_record(path: Path) -> int | None:
    """The :data:`RECORD_KEY` of a checkpoint's ``train_args`` (tensors memory-mapped, not read), or None."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - an old-format or unreadable file has no record
        return None
    value = (ckpt.get("train_args") or {}).get(RECORD_KEY) if isinstance(ckpt, dict) else None
    return value if isinstance(value, int) else None


class _AtomicPath(type(Path())):
    """A path whose ``write_bytes`` goes through a temporary file and a rename (``fileio.atomic_write_bytes``).

    Ultralytics writes ``last.pt`` / ``best.pt`` with ``Path.write_bytes``: a kill or a full disk during that write
    leaves a truncated checkpoint that neither resume nor loading accepts. Written through this, the previous file
    stays whole until the new one is complete.
    """

    def write_bytes(self, data: bytes) -> int:  # noqa: D102 - see the class docstring
        atomic_write_bytes(self, data)
        return len(data)


def _record_settings(path: Path, settings: dict[str, Any]) -> None:
    """Put the loss settings back into a checkpoint's ``train_args`` (atomically), if they are missing.

    Ultralytics' final ``strip_optimizer`` keeps only the keys it knows in ``train_args``.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    train_args = ckpt.get("train_args")
    if not isinstance(train_args, dict) or all(train_args.get(k, object()) == v for k, v in settings.items()):
        return
    ckpt["train_args"] = {**train_args, **settings}
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    atomic_write_bytes(path, buffer.getvalue())


class _FinalValidationSkipped(Exception):
    """Raised by the stand-in validator of ``final_eval``: Ultralytics has stripped the checkpoints by then."""


class _SkippedValidator:
    """Stands in for the validator during ``final_eval`` when ``final_validation`` is off."""

    def __init__(self) -> None:
        self.args = SimpleNamespace()  # Ultralytics sets plots and compile on it before the call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _FinalValidationSkipped


def skip_final_validation(trainer: Any) -> None:
    """Ultralytics callback (``on_pretrain_routine_start``): no final validation of ``best.pt`` after training.

    For a caller that validates ``best.pt`` itself once (the A/B runner's recording pass scores and records it), so
    each run is validated once. The checkpoints are still stripped and carry the loss settings.
    """
    trainer.final_validation = False


@contextlib.contextmanager
def untimed_nms() -> Iterator[None]:
    """Ultralytics' NMS without its time limit while the block runs.

    ``ultralytics.utils.nms.non_max_suppression`` stops after ``2 + 0.05 * batch`` seconds and leaves the batch's
    remaining images without boxes, with a warning only. On a loaded CPU with many low scores (VFL early in training,
    at ``conf`` 0.001) validation then scores those images as empty: mAP, ``best.pt`` and the A/B's verdicts would
    depend on machine load. The validators of Ultralytics 8.3 and 8.4 call it through the module, so the patch holds.
    """
    from ultralytics.utils import nms

    timed = nms.non_max_suppression
    nms.non_max_suppression = functools.partial(timed, max_time_img=math.inf)
    try:
        yield
    finally:
        nms.non_max_suppression = timed


def untimed(validator: Any) -> Any:
    """``validator`` (an Ultralytics validator instance) with its ``postprocess`` run under :func:`untimed_nms`."""
    postprocess = validator.postprocess

    @functools.wraps(postprocess)
    def untimed_postprocess(*args: Any, **kwargs: Any) -> Any:
        with untimed_nms():
            return postprocess(*args, **kwargs)

    validator.postprocess = untimed_postprocess
    return validator


def _save_yaml_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write a YAML file through a temporary file in the same directory and an atomic rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        YAML.save(Path(tmp), data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class VFLDetectionTrainer(DetectionTrainer):
    """``DetectionTrainer`` with a choice of classification loss; dispatches to the model's task.

    Args:
        cfg: Ultralytics default configuration (as for every trainer).
        overrides (dict): Ultralytics train arguments plus ``loss`` and the loss hyperparameters.
        _callbacks: Ultralytics callbacks.

    Raises:
        UnknownLossError: unknown ``loss`` (the message lists the valid losses).
        TypeError / ValueError: an invalid hyperparameter, a hyperparameter of another loss, ``cls_warmup >= epochs``
            (also on resume), an unsupported task, or a resume that asks for different loss settings than the
            checkpoint was trained with.
    """

    task_name = "detect"
    #: Whether ``final_eval`` validates ``best.pt`` (off: :func:`skip_final_validation`).
    final_validation: bool = True

    def __new__(cls, cfg: Any = DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: Any = None):
        """Pick the trainer class of the model's task (``overrides["task"]``) when called as VFLDetectionTrainer."""
        if cls is VFLDetectionTrainer:
            cls = trainer_for_task(_task_of(cfg, overrides or {}))
        return super().__new__(cls)

    def __init__(self, cfg: Any = DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: Any = None):
        overrides = dict(overrides or {})
        given = {k: overrides.pop(k) for k in list(overrides) if k in SETTING_KEYS}
        settings = ClsLossSettings.from_args(given)  # raises before any Ultralytics work
        task = overrides.get("task")
        if task is not None and task != self.task_name:
            raise InvalidSettingError(
                f"{type(self).__name__} trains task {self.task_name!r} but the model's task is {task!r}; use "
                f"yolo_vfl.trainer_for_task({task!r}) or VFLDetectionTrainer, which picks it from the model"
            )
        # epochs before any run directory exists; only Ultralytics' own keys (8.3 passes its HUB 'session' here,
        # which BaseTrainer pops itself; unknown keys are refused by BaseTrainer's own get_cfg below)
        preview = get_cfg(cfg, {k: v for k, v in overrides.items() if k in DEFAULT_CFG_DICT})
        if not preview.resume:
            _check_epochs(settings, preview)
            _check_gains(preview)
            check_validated_branch(settings, preview.nms)
        super().__init__(cfg, overrides, _callbacks)
        if self.resume:
            settings = self._resume_settings(given)
            _check_epochs(settings, self.args)
            check_validated_branch(settings, self.args.nms)
        self.cls_loss_settings = settings
        #: :data:`RECORD_KEY` of ``last.pt`` and ``best.pt`` after the final evaluation (``{"best": 0, ...}``).
        self.cls_loss_record: dict[str, int] = {}
        for key, value in settings.to_args().items():
            setattr(self.args, key, value)
        if settings.warmup:
            self.add_callback("on_train_epoch_start", _cls_warmup_callback)
            self.add_callback("on_fit_epoch_end", _time_check_callback)
        if RANK in {-1, 0}:
            LOGGER.info(f"yolo_vfl: classification loss {settings.describe()}")
            if (self.save_dir / "args.yaml").exists():
                _save_yaml_atomic(self.save_dir / "args.yaml", vars(self.args))  # record our settings too

    def _resume_settings(self, given: dict[str, Any]) -> ClsLossSettings:
        """The checkpoint's settings; settings passed with ``resume=True`` must agree with them."""
        saved = {k: getattr(self.args, k) for k in SETTING_KEYS if hasattr(self.args, k)}
        settings, conflicts = resume_conflicts(saved, given)  # a plain Ultralytics checkpoint has none: BCE
        if conflicts:
            raise conflict_error(conflicts)
        for key in (*SETTING_KEYS, RECORD_KEY):  # get_cfg(ckpt_args) kept them; settings are re-set validated
            if hasattr(self.args, key):
                delattr(self.args, key)
        return settings

    @contextlib.contextmanager
    def _plain_args(self) -> Iterator[None]:
        """Hide our settings from ``self.args`` (Ultralytics' validator re-checks args against its defaults)."""
        stash = {k: getattr(self.args, k) for k in (*SETTING_KEYS, RECORD_KEY) if hasattr(self.args, k)}
        for key in stash:
            delattr(self.args, key)
        try:
            yield
        finally:
            for key, value in stash.items():
                setattr(self.args, key, value)

    def _models(self) -> list[Any]:
        models = [_unwrap(self.model)]
        ema = getattr(getattr(self, "ema", None), "ema", None)
        if ema is not None:
            models.append(ema)
        return models

    @contextlib.contextmanager
    def _criteria_detached(self) -> Iterator[None]:
        """Take the criterion off the training and EMA models, so that checkpoints pickle plain Ultralytics."""
        models = [m for m in self._models() if hasattr(m, "criterion")]
        stash = [m.criterion for m in models]
        for m in models:
            m.criterion = None
        try:
            yield
        finally:
            for m, criterion in zip(models, stash):
                m.criterion = criterion

    def settings_for_epoch(self, epoch: int) -> ClsLossSettings:
        """The loss settings in force at a (0-based) epoch: stock BCE during the ``cls_warmup`` epochs."""
        settings = self.cls_loss_settings
        if epoch < settings.warmup:
            return dataclasses.replace(settings, loss="bce", target="tal", fg_negatives="loss")
        return settings

    def install_cls_loss(self, epoch: int | None = None) -> None:
        """Install the loss of ``epoch`` (default: the start epoch) into the training and EMA models' criteria."""
        epoch = getattr(self, "start_epoch", 0) if epoch is None else epoch
        settings = self.settings_for_epoch(epoch)
        for model in self._models():
            if getattr(model, "criterion", None) is None:
                model.criterion = model.init_criterion()
            install_cls_loss(model.criterion, settings)

    def get_validator(self):
        """Ultralytics' validator, built from args without our settings, its NMS without time limit."""
        with self._plain_args():
            return untimed(super().get_validator())

    def _setup_train(self, *args: Any, **kwargs: Any) -> None:
        """Ultralytics' set-up (model, EMA, optimizer, resume), then install the loss."""
        super()._setup_train(*args, **kwargs)
        self.install_cls_loss()

    @property
    def cls_loss_epochs(self) -> int:
        """Epochs trained with the chosen loss so far (the current one included): those after the BCE warm-up."""
        return max(0, getattr(self, "epoch", -1) + 1 - self.cls_loss_settings.warmup)

    def never_switched(self, which: str = "last") -> bool:
        """Whether ``which`` checkpoint (``"last"`` or ``"best"``) trained BCE only although ``loss`` is not BCE."""
        return self.cls_loss_settings.loss != "bce" and self.cls_loss_record.get(which) == 0

    def final_eval(self, *args: Any, **kwargs: Any) -> Any:
        """Ultralytics' final evaluation, then the loss settings back into the stripped ``last.pt`` / ``best.pt``.

        With ``final_validation`` off, Ultralytics strips the checkpoints and a stand-in validator ends the call
        before it validates ``best.pt`` (``self.metrics`` stays the last epoch's).
        """
        paths = {"last": self.last, "best": self.best}
        if RANK in {-1, 0}:  # read before Ultralytics strips the unknown keys of train_args
            self.cls_loss_record = {k: n for k, p in paths.items() if p.exists() and (n := _read_record(p)) is not None}
        validator = self.validator
        if not self.final_validation and validator is not None:
            self.validator = _SkippedValidator()
        try:
            return super().final_eval(*args, **kwargs)
        except _FinalValidationSkipped:
            return None
        finally:
            self.validator = validator
            if RANK in {-1, 0}:
                for which, path in paths.items():
                    if path.exists():
                        record = {RECORD_KEY: self.cls_loss_record[which]} if which in self.cls_loss_record else {}
                        _record_settings(path, {**self.cls_loss_settings.to_args(), **record})
                self._warn_never_switched()

    def _warn_never_switched(self) -> None:
        settings = self.cls_loss_settings
        if self.never_switched("last"):
            LOGGER.warning(
                f"yolo_vfl: this run trained BCE only: loss={settings.loss} never took over, because it ended after "
                f"{self.epoch + 1} epochs and the first cls_warmup={settings.warmup} train BCE. The checkpoints "
                f"record {RECORD_KEY}=0."
            )
        elif self.never_switched("best"):
            LOGGER.warning(
                f"yolo_vfl: best.pt was saved during the BCE warm-up (cls_warmup={settings.warmup}): it trained BCE "
                f"only ({RECORD_KEY}=0); last.pt trained loss={settings.loss} for {self.cls_loss_record['last']} "
                "epochs."
            )

    def save_model(self, *args: Any, **kwargs: Any) -> Any:
        """Save checkpoints atomically, with the criteria detached (plain Ultralytics pickles) and the record set."""
        setattr(self.args, RECORD_KEY, self.cls_loss_epochs)
        paths = self.wdir, self.last, self.best
        self.wdir, self.last, self.best = (_AtomicPath(p) for p in paths)  # atomic checkpoint writes
        try:
            with self._criteria_detached():
                return super().save_model(*args, **kwargs)
        finally:
            self.wdir, self.last, self.best = paths


class VFLSegmentationTrainer(VFLDetectionTrainer, SegmentationTrainer):
    """``SegmentationTrainer`` with a choice of classification loss."""

    task_name = "segment"


class VFLPoseTrainer(VFLDetectionTrainer, PoseTrainer):
    """``PoseTrainer`` with a choice of classification loss."""

    task_name = "pose"


class VFLOBBTrainer(VFLDetectionTrainer, OBBTrainer):
    """``OBBTrainer`` with a choice of classification loss."""

    task_name = "obb"


TASK_TRAINERS: dict[str, type[VFLDetectionTrainer]] = {
    "detect": VFLDetectionTrainer,
    "segment": VFLSegmentationTrainer,
    "pose": VFLPoseTrainer,
    "obb": VFLOBBTrainer,
}


def _task_of(cfg: Any, overrides: dict[str, Any]) -> str:
    """The task of the run: given, else guessed from the model (a ``-cls`` model is ``classify``), else cfg's."""
    model = overrides.get("model")
    if not overrides.get("task") and isinstance(model, (str, Path)):
        from ultralytics.nn.tasks import guess_model_task

        return guess_model_task(str(model))
    return overrides.get("task") or getattr(cfg, "task", None) or "detect"


def trainer_for_task(task: str) -> type[VFLDetectionTrainer]:
    """The trainer class for an Ultralytics task.

    Raises:
        ValueError: a task without a detection-style classification loss (e.g. ``classify``).
    """
    if task not in TASK_TRAINERS:
        raise InvalidSettingError(f"yolo_vfl trains tasks {', '.join(TASK_TRAINERS)}; got task {task!r}")
    return TASK_TRAINERS[task]
