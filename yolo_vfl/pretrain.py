"""A pretrained starting point made here: stock-BCE YOLO trained on a large generated dataset, cached by fingerprint.

The stand-in for COCO weights in experiments that fine-tune instead of training from scratch. The default
:class:`PretrainSpec` trains ``yolov8n.yaml`` with plain Ultralytics (stock BCE) on 3,200 generated ``shapes`` images
(seed 100, 160 px, 12 epochs, AdamW lr0 0.002, an optimizer step per batch), classes unlike the A/B target datasets'.
Measured (fingerprint ``962ce1c1d0a4271a``, Ultralytics 8.4, 2 CPU cores): mAP50-95 0.4642 on its own val split after
856 s (sha256 ``444e5eec356b``), the same to every digit on two fresh machines; an earlier build of the same spec
reached 0.4859, for a reason not established.

Layout under ``cache_dir()/pretrained``: ``<fingerprint>/`` holds ``best.pt`` (a plain Ultralytics checkpoint),
``pretrain.json`` (spec, metrics, training time, versions, dataset), ``results.csv`` and ``args.yaml``;
``.building-<fingerprint>/`` is the build in progress and ``.<fingerprint>.lock`` its lock. The build follows the run
lifecycle of :mod:`yolo_vfl.executor`: one process builds a fingerprint at a time (the others wait, then reuse it), an
interrupted build starts again from zero, and a fully written directory is renamed into place.

Command line: ``yolo-vfl pretrain [key=value ...]`` (the :class:`PretrainSpec` fields, ``device`` and any other
Ultralytics train argument, a shortcut for ``train_args``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import platform
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from . import data as _data
from .checks import versions
from .errors import InvalidSettingError, InvalidTypeError
from .executor import execute, final_weights, train
from .fileio import atomic_write_json, publish_dir, read_json, remove_path, sha256_file

__all__ = ["PretrainResult", "PretrainSpec", "cli_pretrain", "pretrain_dir", "pretrained_checkpoint"]

META_FILE = "pretrain.json"
"""Metadata of a published checkpoint (written inside the directory before it is renamed into place)."""
CHECKPOINT = "best.pt"
Log = Callable[[str], None]

# Train arguments the spec or the builder controls; they cannot be set through ``train_args``.
_RESERVED = frozenset(
    "model data epochs imgsz batch seed deterministic workers project name exist_ok resume device mode task trainer "
    "cfg save save_dir pretrained time".split()
)
_BASE_TRAIN_ARGS: dict[str, Any] = {"plots": False}  # overridable by train_args; does not change the weights
#: The default recipe under any ``train_args`` given. Ultralytics' own (``optimizer=auto nbs=64 warmup_epochs=3``: AdamW
#: lr0 0.000833, an optimizer step every 4th batch of 16) reached mAP50-95 0.157 in 12 epochs.
DEFAULT_TRAIN_ARGS: dict[str, Any] = {"optimizer": "AdamW", "lr0": 0.002, "nbs": 16, "warmup_epochs": 1}


def _suggest(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _as_dict(pairs: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """Sorted ``(key, value)`` pairs as train arguments (lists for tuples)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in pairs}


def _check_int(name: str, value: Any, lo: int, hi: Optional[int] = None, multiple: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"PretrainSpec {name} must be an int, got {value!r} ({type(value).__name__})")
    if value < lo or (hi is not None and value > hi) or value % multiple:
        rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        mult = f" and a multiple of {multiple}" if multiple > 1 else ""
        raise InvalidSettingError(f"Invalid PretrainSpec {name}={value!r}: valid values are ints {rng}{mult}.")


def _plain(value: Any, key: str) -> Any:
    """A train-argument value as a hashable, JSON-able plain value (lists become tuples)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidSettingError(f"Invalid PretrainSpec train_args {key}={value!r}: must be finite.")
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v, key) for v in value)
    raise InvalidTypeError(
        f"PretrainSpec train_args {key}={value!r} ({type(value).__name__}) must be a str, number, bool, None or a list"
    )


def _check_train_args(pairs: tuple[tuple[str, Any], ...]) -> None:
    """Keys are Ultralytics train arguments not controlled by the spec; values pass Ultralytics' own type checks."""
    from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg

    valid = sorted(set(DEFAULT_CFG_DICT) - _RESERVED)
    for key, _ in pairs:
        if key in _RESERVED:
            why = "it is a PretrainSpec field, the device argument or managed by the builder"
            raise InvalidSettingError(f"PretrainSpec train_args cannot set {key!r}: {why}.")
        if key not in DEFAULT_CFG_DICT:
            hint = _suggest(key, valid)
            raise InvalidSettingError(f"Unknown Ultralytics train argument {key!r} in PretrainSpec train_args.{hint}")
    try:
        get_cfg(DEFAULT_CFG_DICT, _as_dict(pairs))
    except (TypeError, ValueError, SyntaxError) as e:
        error = InvalidTypeError if isinstance(e, TypeError) else InvalidSettingError
        raise error(f"Invalid PretrainSpec train_args: {' '.join(str(e).split())}") from None


def _train_arg_pairs(given: Any) -> tuple[tuple[str, Any], ...]:
    """``train_args`` (a mapping or ``(key, value)`` pairs) over the default recipe: sorted plain pairs, checked."""
    given = () if given is None else given
    if isinstance(given, Mapping):
        items = list(given.items())
    elif isinstance(given, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in given):
        items = [tuple(p) for p in given]
    else:
        raise InvalidTypeError(
            f"PretrainSpec train_args must be a mapping of Ultralytics train arguments, got {given!r}"
        )
    keys = [k for k, _ in items]
    if bad := [k for k in keys if not isinstance(k, str)]:
        raise InvalidTypeError(f"PretrainSpec train_args keys must be str, got {bad[0]!r}")
    if len(set(keys)) != len(keys):
        raise InvalidSettingError(f"PretrainSpec train_args has a repeated key: {sorted(keys)}")
    pairs = tuple(sorted((k, _plain(v, k)) for k, v in {**DEFAULT_TRAIN_ARGS, **dict(items)}.items()))
    _check_train_args(pairs)
    return pairs


@dataclass(frozen=True)
class PretrainSpec:
    """What to pretrain: model, generated dataset, training settings. Validated on construction.

    Attributes:
        model: Ultralytics model YAML (a name such as ``yolov8n.yaml`` or a path); never a ``.pt`` (no downloads).
            Its task must be ``detect``.
        variant: Dataset generator variant, one of :data:`yolo_vfl.data.VARIANTS`.
        n: Images generated (train + val, 20% val), >= 2.
        seed: Seed of the dataset generator (choose one the A/B target datasets do not use).
        imgsz: Image side of the dataset and of training, a multiple of 32 in [32, 4096].
        epochs: Training epochs, >= 1.
        batch: Batch size, >= 1.
        train_seed: Ultralytics' ``seed`` train argument.
        deterministic: Ultralytics' ``deterministic`` train argument.
        workers: Dataloader workers, >= 0 (part of the fingerprint: each worker has its own augmentation stream).
        train_args: Further Ultralytics train arguments (``lr0``, ``optimizer``, ``close_mosaic``, ...), given as a
            mapping, merged over :data:`DEFAULT_TRAIN_ARGS` and stored as sorted ``(key, value)`` pairs.
    """

    model: str = "yolov8n.yaml"
    variant: str = "shapes"
    n: int = 3200
    seed: int = 100
    imgsz: int = 160
    epochs: int = 12
    batch: int = 16
    train_seed: int = 0
    deterministic: bool = True
    workers: int = 2
    train_args: Any = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidTypeError(f"PretrainSpec model must be a model YAML name or path, got {self.model!r}")
        if not self.model.lower().endswith((".yaml", ".yml")):
            raise InvalidSettingError(
                f"Invalid PretrainSpec model={self.model!r}: valid values are model YAMLs (e.g. 'yolov8n.yaml', "
                "'yolo11n.yaml'); a .pt would be a download and is never used here."
            )
        if not isinstance(self.variant, str) or self.variant not in _data.VARIANTS:
            valid = ", ".join(_data.VARIANTS)
            raise InvalidSettingError(f"Invalid PretrainSpec variant={self.variant!r}: valid variants are {valid}.")
        for name, low in (("n", 2), ("seed", 0), ("epochs", 1), ("batch", 1), ("train_seed", 0), ("workers", 0)):
            _check_int(name, getattr(self, name), low)
        _check_int("imgsz", self.imgsz, 32, 4096, multiple=32)
        if not isinstance(self.deterministic, bool):
            got = f"{self.deterministic!r} ({type(self.deterministic).__name__})"
            raise InvalidTypeError(f"PretrainSpec deterministic must be a bool (true or false), got {got}")
        object.__setattr__(self, "train_args", _train_arg_pairs(self.train_args))

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """Names of the spec's fields (the keys :meth:`from_dict` accepts)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, mapping: Optional[Mapping[str, Any]]) -> PretrainSpec:
        """A validated spec from a mapping (the ``pretrain:`` section of an A/B spec); missing keys take defaults.

        Raises:
            TypeError: ``mapping`` is not a mapping (None: the default spec), or a value has the wrong type.
            ValueError: An unknown key (with a close-match suggestion) or an invalid value.
        """
        mapping, names = {} if mapping is None else mapping, list(cls.fields())
        if not isinstance(mapping, Mapping):
            raise InvalidTypeError(f"A pretrain spec must be a mapping of {', '.join(names)}, got {mapping!r}")
        for key in [k for k in mapping if k not in names][:1]:
            hint = _suggest(str(key), names)
            raise InvalidSettingError(f"Unknown pretrain key {key!r}. Valid keys: {', '.join(names)}.{hint}")
        return cls(**dict(mapping))

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-able dict (``train_args`` as a dict, lists for tuples); ``from_dict`` inverts it."""
        return {**{f: getattr(self, f) for f in self.fields()}, "train_args": _as_dict(self.train_args)}

    def fingerprint(self) -> str:
        """16 hex digits of the sha256 of the spec, the dataset generator version and Ultralytics' major.minor version.

        Any change of a field, of ``GENERATOR_VERSION`` or of the Ultralytics minor version gives another checkpoint.
        """
        payload = {
            "spec": self.to_dict(),
            "generator_version": _data.GENERATOR_VERSION,
            "ultralytics": _ultralytics_minor(),
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def train_overrides(self) -> dict[str, Any]:
        """The Ultralytics train arguments of a fresh build (without data, project, name and device)."""
        own = {"epochs": self.epochs, "imgsz": self.imgsz, "batch": self.batch, "seed": self.train_seed}
        own |= {"deterministic": self.deterministic, "workers": self.workers}
        return {**_BASE_TRAIN_ARGS, **_as_dict(self.train_args), **own}


@dataclass(frozen=True)
class PretrainResult:
    """A pretrained checkpoint and what is known about it.

    Attributes:
        path: The checkpoint, ``cache_dir()/pretrained/<fingerprint>/best.pt``.
        fingerprint: :meth:`PretrainSpec.fingerprint`.
        spec: The spec it was built from.
        metrics: ``mAP50``, ``mAP50-95``, ``precision``, ``recall`` of the checkpoint on its own val split.
        train_time_s: Training time in seconds (including the final validation).
        versions: yolo_vfl, ultralytics, torch, python and the dataset generator version of the build.
        built_now: True when this call trained (or finished) it, False when it came from the cache.
        sha256: Hex sha256 of the checkpoint file. One fingerprint has named two different sets of weights (two
            builds of the same spec on different machines), so the weights, not the spec, identify a start model.
        meta: The full metadata (``pretrain.json``).
    """

    path: Path
    fingerprint: str
    spec: PretrainSpec
    metrics: dict[str, Optional[float]]
    train_time_s: float
    versions: dict[str, Any]
    built_now: bool
    sha256: str = ""
    meta: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def _ultralytics_minor() -> str:
    """Ultralytics' major.minor version."""
    from importlib.metadata import version

    return ".".join(version("ultralytics").split(".")[:2])


def pretrain_dir() -> Path:
    """Where pretrained checkpoints live: ``cache_dir()/pretrained`` (not created)."""
    return _data.cache_dir() / "pretrained"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _metrics(rd: Mapping[str, Any]) -> dict[str, Optional[float]]:
    values = {
        name: float(rd.get(f"metrics/{name}(B)", math.nan)) for name in ("mAP50", "mAP50-95", "precision", "recall")
    }
    return {name: v if math.isfinite(v) else None for name, v in values.items()}


def _result_from_meta(final: Path, meta: Mapping[str, Any], built_now: bool) -> PretrainResult:
    return PretrainResult(
        path=final / CHECKPOINT,
        fingerprint=str(meta["fingerprint"]),
        spec=PretrainSpec.from_dict(meta["spec"]),
        metrics=dict(meta.get("metrics") or {}),
        train_time_s=float(meta.get("train_time_s") or 0.0),
        versions=dict(meta.get("versions") or {}),
        built_now=built_now,
        sha256=str(meta.get("checkpoint_sha256") or sha256_file(final / CHECKPOINT)),  # older caches: hash it now
        meta=dict(meta),
    )


def _check_task(spec: PretrainSpec) -> None:
    """The model YAML exists and is a detection model, before any data or training."""
    from ultralytics import YOLO

    if (task := YOLO(spec.model).task) != "detect":
        raise InvalidSettingError(
            f"Invalid PretrainSpec model={spec.model!r}: its task is {task!r}; valid task: detect."
        )


def _build(spec: PretrainSpec, fp: str, root: Path, device: Any, callbacks: Mapping[str, Any], log: Log) -> dict:
    """Train the checkpoint of ``spec`` in ``root/.building-<fp>`` and publish it as ``root/fp``; returns its metadata.

    The caller holds the lock. Ultralytics' final validation of ``best.pt`` gives the metrics (one pass).
    """
    _check_task(spec)
    created, t = _now(), time.monotonic()
    data_yaml = _data.embedded_dataset(n=spec.n, seed=spec.seed, imgsz=spec.imgsz, variant=spec.variant)
    data_s, t = time.monotonic() - t, time.monotonic()
    log(f"pretrain: dataset {data_yaml.parent} ready ({data_s:.0f} s)")
    building = root / f".building-{fp}"
    log(f"pretrain: training {spec.model} on {data_yaml} for {spec.epochs} epochs (stock BCE) in {building}")
    args = {"data": str(data_yaml), **spec.train_overrides(), **({} if device is None else {"device": device})}
    metrics = _metrics(train(spec.model, building, args, callbacks=callbacks).metrics or {})
    best, dataset = final_weights(building), read_json(data_yaml.parent / _data.META_FILE) or {}
    meta = {"fingerprint": fp, "spec": spec.to_dict(), "checkpoint": CHECKPOINT, "checkpoint_from": best.name}
    meta.update(checkpoint_sha256=sha256_file(best), metrics=metrics, epochs=spec.epochs)
    meta.update(metrics_source="ultralytics final validation", train={"model": spec.model, **spec.train_overrides()})
    meta["data"] = {"yaml": str(data_yaml), **{k: dataset.get(k) for k in ("fingerprint", "n_train", "n_val", "names")}}
    meta.update(versions=versions(generator_version=_data.GENERATOR_VERSION), published_at=_now(), host=platform.node())
    meta.update(train_time_s=round(time.monotonic() - t, 3), data_time_s=round(data_s, 3), created_at=created)
    meta.update(device=None if device is None else str(device))
    tmp = root / f".{fp}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        shutil.copy2(best, tmp / CHECKPOINT)
        for extra in ("results.csv", "args.yaml"):
            if (building / extra).is_file():
                shutil.copy2(building / extra, tmp / extra)
        atomic_write_json(tmp / META_FILE, meta)
        publish_dir(tmp, root / fp)
    finally:
        remove_path(tmp)
    remove_path(building)
    return meta


def pretrained_checkpoint(
    spec: Optional[PretrainSpec] = None,
    *,
    device: Any = None,
    log: Log = print,
    callbacks: Optional[Mapping[str, Callable[[Any], None]]] = None,
) -> PretrainResult:
    """The pretrained checkpoint of ``spec``: from the cache, else built now (see the module's layout and lifecycle).

    The build generates the spec's dataset (:func:`yolo_vfl.data.embedded_dataset`), trains ``YOLO(spec.model)``
    with stock Ultralytics (BCE), validates ``best.pt`` on the val split (Ultralytics' final validation) and
    publishes it with ``pretrain.json``.

    Args:
        spec: What to pretrain; None for the default :class:`PretrainSpec`.
        device: Ultralytics ``device`` for training and validation (None: Ultralytics' choice). Not part of the
            fingerprint; recorded in the metadata.
        log: Called with one-line progress messages.
        callbacks: Extra Ultralytics callbacks (event -> function) added to the model before training.

    Returns:
        The :class:`PretrainResult`; ``built_now`` says whether this call trained.

    Raises:
        ValueError: The model YAML is not a detection model.
        FileNotFoundError: The model YAML does not exist.
    """
    spec = spec or PretrainSpec()
    fp = spec.fingerprint()
    root = pretrain_dir()
    final = root / fp

    def finished() -> Optional[PretrainResult]:  # a complete published directory of this fingerprint
        meta = read_json(final / META_FILE)
        if meta is None or meta.get("fingerprint") != fp or not (final / CHECKPOINT).is_file():
            return None
        return _result_from_meta(final, meta, built_now=False)

    def build() -> PretrainResult:
        return _result_from_meta(final, _build(spec, fp, root, device, dict(callbacks or {}), log), built_now=True)

    lock = root / f".{fp}.lock"
    result = execute(f"pretrain: checkpoint {fp}", root / f".building-{fp}", lock, finished, build, log=log, wait=True)
    if result.built_now:
        log(f"pretrain: published {result.path} (mAP50-95 {_fmt(result.metrics.get('mAP50-95'))})")
    else:
        log(f"pretrain: using cached checkpoint {result.path}")
    return result


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.4f}"


def cli_pretrain(args: Mapping[str, Any]) -> int:
    """``yolo-vfl pretrain key=value ...``: build or reuse the pretrained checkpoint, print what it is, return 0.

    ``args``: :class:`PretrainSpec` fields, ``device``, and other Ultralytics train arguments (into ``train_args``).

    Raises:
        InvalidSettingError: an unknown key or an invalid value (a ``UserError``: one line on the CLI).
    """
    from ultralytics.cfg import DEFAULT_CFG_DICT

    args, names = dict(args), sorted({*PretrainSpec.fields(), "device"})
    device = args.pop("device", None)
    spec_args = {k: v for k, v in args.items() if k in names}
    extra = {k: v for k, v in args.items() if k not in names}
    valid = set(DEFAULT_CFG_DICT) - _RESERVED
    for key in set(extra) - valid:
        hint = _suggest(str(key), names + sorted(valid))
        raise InvalidSettingError(
            f"Unknown pretrain key {key!r}. Valid keys: {', '.join(names)} or an Ultralytics train argument.{hint}"
        )
    if extra:
        spec_args["train_args"] = {**dict(spec_args.get("train_args") or {}), **extra}
    try:
        spec = PretrainSpec.from_dict(spec_args)
    except (TypeError, ValueError) as e:  # the spec's own validation: a user error, one line on the CLI
        raise InvalidSettingError(str(e)) from e
    res = pretrained_checkpoint(spec, device=device)
    print(f"checkpoint:  {res.path}\nfingerprint: {res.fingerprint}\nsha256:      {res.sha256}")
    print(f"mAP50-95:    {_fmt(res.metrics.get('mAP50-95'))}  (mAP50 {_fmt(res.metrics.get('mAP50'))})")
    print(f"train time:  {res.train_time_s:.0f} s{'' if res.built_now else ' (cached)'}")
    return 0
