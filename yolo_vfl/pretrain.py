"""A pretrained starting point made here: stock-BCE YOLO trained on a large generated dataset, cached by fingerprint.

The stand-in for COCO weights in experiments that fine-tune instead of training from scratch. The default
:class:`PretrainSpec` trains ``yolov8n.yaml`` with plain Ultralytics (stock BCE, no yolo-vfl loss) on 3,200 generated
``shapes`` images (seed 100, 160 px, 12 epochs, AdamW lr0 0.002, an optimizer step per batch): classes different
from the A/B target datasets (``glyphs``, ``digits``). Measured (fingerprint ``962ce1c1d0a4271a``, Ultralytics 8.4,
2 CPU cores): mAP50-95 0.4642 on its own val split after 856 s of training (sha256 ``444e5eec356b``); two fresh
machines built it with the same metrics to every digit and the same fine-tuning results. An earlier build of the same
spec reached 0.4859, for a reason not established.

Layout under ``cache_dir()/pretrained``::

    <fingerprint>/best.pt          the checkpoint (a plain Ultralytics checkpoint: loads, predicts, fine-tunes)
    <fingerprint>/pretrain.json    metadata: spec, metrics, training time and segments, versions, dataset
    <fingerprint>/results.csv      Ultralytics' per-epoch log of the build (and args.yaml)
    .building-<fingerprint>/       the build in progress (Ultralytics run in ``train/``, ``build.json``)
    .<fingerprint>.lock            the cross-process build lock (fcntl)

A build is published by renaming a fully written directory into place, so ``<fingerprint>/`` is either absent or
complete. An interrupted build (its ``.building-<fingerprint>/train/weights/last.pt``) is resumed by the next call.
Only one process builds a fingerprint at a time; the others wait for the lock and then reuse the result.

Command line: ``yolo-vfl pretrain [key=value ...]`` (keys: the :class:`PretrainSpec` fields, ``device``
and, as a shortcut for ``train_args``, any other Ultralytics train argument).
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from . import data as _data
from .checks import versions
from .errors import InvalidSettingError, InvalidTypeError
from .fileio import atomic_write_json, sha256_file

__all__ = ["PretrainResult", "PretrainSpec", "cli_pretrain", "pretrain_dir", "pretrained_checkpoint"]

META_FILE = "pretrain.json"
"""Metadata of a published checkpoint (written inside the directory before it is renamed into place)."""
BUILD_FILE = "build.json"
"""State of a build in progress: fingerprint, spec and the training segments so far."""
CHECKPOINT = "best.pt"

# Train arguments the spec or the builder controls; they cannot be set through ``train_args``.
_RESERVED = frozenset(
    {
        "model",
        "data",
        "epochs",
        "imgsz",
        "batch",
        "seed",
        "deterministic",
        "workers",
        "project",
        "name",
        "exist_ok",
        "resume",
        "device",
        "mode",
        "task",
        "trainer",
        "cfg",
        "save",
        "save_dir",
        "pretrained",
        "time",
    }
)
_BASE_TRAIN_ARGS: dict[str, Any] = {"plots": False}  # overridable by train_args; does not change the weights
DEFAULT_TRAIN_ARGS: dict[str, Any] = {"optimizer": "AdamW", "lr0": 0.002, "nbs": 16, "warmup_epochs": 1}
"""The default recipe, under any ``train_args`` given (a given key wins; ``optimizer=auto nbs=64 warmup_epochs=3``
gives Ultralytics' own choice back). Ultralytics' ``optimizer=auto`` picks AdamW lr0 0.000833 for a run this short and
``nbs=64`` makes only every 4th batch of 16 an optimizer step: that build reached mAP50-95 0.157 in 12 epochs."""


# ------------------------------------------------------------------------------------------------------ validation
def _suggest(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


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
    if not pairs:
        return
    from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg

    valid = sorted(set(DEFAULT_CFG_DICT) - _RESERVED)
    for key, _ in pairs:
        if key in _RESERVED:
            raise InvalidSettingError(
                f"PretrainSpec train_args cannot set {key!r}: it is a PretrainSpec field, the device argument or "
                "managed by the builder."
            )
        if key not in DEFAULT_CFG_DICT:
            raise InvalidSettingError(
                f"Unknown Ultralytics train argument {key!r} in PretrainSpec train_args.{_suggest(key, valid)}"
            )
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in pairs}
    try:
        get_cfg(DEFAULT_CFG_DICT, overrides)
    except (TypeError, ValueError, SyntaxError) as e:
        msg = " ".join(str(e).split())
        raise (InvalidTypeError if isinstance(e, TypeError) else InvalidSettingError)(
            f"Invalid PretrainSpec train_args: {msg}"
        ) from None


# ------------------------------------------------------------------------------------------------------------ spec
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
            raise InvalidSettingError(
                f"Invalid PretrainSpec variant={self.variant!r}: valid variants are {', '.join(_data.VARIANTS)}."
            )
        _check_int("n", self.n, 2)
        _check_int("seed", self.seed, 0)
        _check_int("imgsz", self.imgsz, 32, 4096, multiple=32)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch", self.batch, 1)
        _check_int("train_seed", self.train_seed, 0)
        _check_int("workers", self.workers, 0)
        if not isinstance(self.deterministic, bool):
            raise InvalidTypeError(
                f"PretrainSpec deterministic must be a bool (true or false), got {self.deterministic!r} "
                f"({type(self.deterministic).__name__})"
            )
        ta = self.train_args
        if ta is None:
            ta = ()
        if isinstance(ta, Mapping):
            items = list(ta.items())
        elif isinstance(ta, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in ta):
            items = [tuple(p) for p in ta]
        else:
            raise InvalidTypeError(
                f"PretrainSpec train_args must be a mapping of Ultralytics train arguments, got {ta!r}"
            )
        for k, _ in items:
            if not isinstance(k, str):
                raise InvalidTypeError(f"PretrainSpec train_args keys must be str, got {k!r}")
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise InvalidSettingError(f"PretrainSpec train_args has a repeated key: {sorted(keys)}")
        pairs = tuple(sorted((k, _plain(v, k)) for k, v in {**DEFAULT_TRAIN_ARGS, **dict(items)}.items()))
        _check_train_args(pairs)
        object.__setattr__(self, "train_args", pairs)

    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """Names of the spec's fields (the keys :meth:`from_dict` accepts)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, mapping: Optional[Mapping[str, Any]]) -> PretrainSpec:
        """A spec from a mapping (e.g. the ``pretrain:`` section of an A/B spec YAML); missing keys take defaults.

        Args:
            mapping: Field name -> value; ``train_args`` a mapping. None or empty gives the default spec.

        Returns:
            The validated spec.

        Raises:
            TypeError: ``mapping`` is not a mapping, or a value has the wrong type.
            ValueError: An unknown key (with a close-match suggestion) or an invalid value.
        """
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, Mapping):
            raise InvalidTypeError(f"A pretrain spec must be a mapping of {', '.join(cls.fields())}, got {mapping!r}")
        names = list(cls.fields())
        for key in mapping:
            if key not in names:
                raise InvalidSettingError(
                    f"Unknown pretrain key {key!r}. Valid keys: {', '.join(names)}.{_suggest(str(key), names)}"
                )
        return cls(**dict(mapping))

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-able dict (``train_args`` as a dict, lists for tuples); ``from_dict`` inverts it."""
        out = {f: getattr(self, f) for f in self.fields()}
        out["train_args"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.train_args}
        return out

    def fingerprint(self) -> str:
        """Short hex sha256 of the spec, the dataset generator version and Ultralytics' major.minor version.

        Returns:
            16 hex digits; any change of a field, of ``GENERATOR_VERSION`` or of the Ultralytics minor version
            gives another fingerprint (another checkpoint).
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
        args: dict[str, Any] = dict(_BASE_TRAIN_ARGS)
        args.update({k: list(v) if isinstance(v, tuple) else v for k, v in self.train_args})
        args.update(
            epochs=self.epochs,
            imgsz=self.imgsz,
            batch=self.batch,
            seed=self.train_seed,
            deterministic=self.deterministic,
            workers=self.workers,
        )
        return args


@dataclass(frozen=True)
class PretrainResult:
    """A pretrained checkpoint and what is known about it.

    Attributes:
        path: The checkpoint, ``cache_dir()/pretrained/<fingerprint>/best.pt``.
        fingerprint: :meth:`PretrainSpec.fingerprint`.
        spec: The spec it was built from.
        metrics: ``mAP50``, ``mAP50-95``, ``precision``, ``recall`` of the checkpoint on its own val split.
        train_time_s: Training time in seconds (all segments of the build, including the final validation).
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


# ---------------------------------------------------------------------------------------------------------- helpers
def _ultralytics_version() -> str:
    try:
        from importlib.metadata import version

        return version("ultralytics")
    except Exception:  # noqa: BLE001 - not installed as a distribution: ask the module
        import ultralytics

        return str(ultralytics.__version__)


def _ultralytics_minor() -> str:
    return ".".join(_ultralytics_version().split(".")[:2])


def pretrain_dir() -> Path:
    """Where pretrained checkpoints live: ``cache_dir()/pretrained`` (not created)."""
    return _data.cache_dir() / "pretrained"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, obj: Any) -> None:

    atomic_write_json(path, obj)


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _build_lock(path: Path, log: Callable[[str], None]) -> Iterator[None]:
    """Exclusive cross-process lock on ``path`` (fcntl.flock; blocks, saying so once). No-op where fcntl is absent."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            log(f"pretrain: another process (pid {holder}) is building this checkpoint; waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _load_ckpt(path: Path) -> Optional[dict[str, Any]]:
    """A checkpoint dict, or None when it cannot be read."""
    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - truncated, corrupt or foreign: unusable
        return None
    return ckpt if isinstance(ckpt, dict) and (ckpt.get("model") is not None or ckpt.get("ema") is not None) else None


def _metrics(rd: Mapping[str, Any]) -> dict[str, Optional[float]]:
    out: dict[str, Optional[float]] = {}
    for name in ("mAP50", "mAP50-95", "precision", "recall"):
        v = rd.get(f"metrics/{name}(B)")
        out[name] = float(v) if v is not None and math.isfinite(float(v)) else None
    return out


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


def _published(final: Path, fp: str) -> Optional[dict[str, Any]]:
    """The metadata of a complete published checkpoint directory with this fingerprint, else None."""
    meta = _read_json(final / META_FILE)
    if meta is None or meta.get("fingerprint") != fp or not (final / CHECKPOINT).is_file():
        return None
    try:
        PretrainSpec.from_dict(meta.get("spec"))
    except (TypeError, ValueError):
        return None
    return meta


# ------------------------------------------------------------------------------------------------------------ build
class _Segments:
    """The training segments of a build (``fresh``, then ``resume`` ...), kept in ``build.json`` as they progress."""

    def __init__(self, path: Path, base: dict[str, Any]) -> None:
        self.path = path
        self.state = base
        self.t0 = 0.0

    def start(self, how: str, first_epoch: int) -> None:
        self.t0 = time.monotonic()
        self.state.setdefault("segments", []).append(
            {"how": how, "first_epoch": first_epoch, "last_epoch": first_epoch - 1, "started_at": _now(), "seconds": 0}
        )
        _write_json(self.path, self.state)

    def update(self, last_epoch: Optional[int] = None, done: bool = False) -> None:
        seg = self.state["segments"][-1]
        seg["seconds"] = round(time.monotonic() - self.t0, 3)
        if last_epoch is not None:
            seg["last_epoch"] = max(seg["last_epoch"], last_epoch)
        if done:
            seg["finished_at"] = _now()
        _write_json(self.path, self.state)

    def on_fit_epoch_end(self, trainer: Any) -> None:
        """Ultralytics callback: the epoch just finished (its last.pt is saved) and the elapsed time."""
        self.update(min(int(trainer.epoch) + 1, int(trainer.epochs)))

    @property
    def total_seconds(self) -> float:
        return float(sum(s.get("seconds") or 0 for s in self.state.get("segments", [])))


def _train(
    spec: PretrainSpec,
    data_yaml: Path,
    building: Path,
    segments: _Segments,
    device: Any,
    callbacks: Mapping[str, Callable[[Any], None]],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Train (fresh, resumed, or nothing when an earlier segment finished); returns Ultralytics' final metrics."""
    from ultralytics import YOLO

    run = building / "train"
    last = run / "weights" / "last.pt"
    ckpt = _load_ckpt(last) if last.is_file() else None
    if ckpt is not None and int(ckpt.get("epoch", -1)) == -1 and (run / "weights" / CHECKPOINT).is_file():
        log(f"pretrain: training in {run} had finished; validating {CHECKPOINT}")
        return {}
    extra: dict[str, Any] = {} if device is None else {"device": device}

    def prepared(model: Any) -> Any:
        model.add_callback("on_fit_epoch_end", segments.on_fit_epoch_end)
        for event, fn in callbacks.items():
            model.add_callback(event, fn)
        return model

    if ckpt is not None:
        started = {"flag": False}

        def mark(_trainer: Any) -> None:
            started["flag"] = True

        first = int(ckpt.get("epoch", -1)) + 2
        del ckpt
        model = prepared(YOLO(str(last)))
        model.add_callback("on_train_start", mark)
        log(f"pretrain: resuming {last} at epoch {first}/{spec.epochs}")
        segments.start("resume", first)
        try:
            model.train(resume=True, workers=spec.workers, **extra)
            segments.update(done=True)
            return dict(getattr(model.trainer, "metrics", None) or {})
        except Exception as e:  # noqa: BLE001 - a resume that could not start restarts cleanly
            segments.update()
            if started["flag"]:
                raise
            log(f"pretrain: resume failed before training ({type(e).__name__}: {str(e).strip()[:200]}); restarting")
            segments.state["segments"][-1]["failed"] = True
        except BaseException:
            segments.update()
            raise
        _remove(run)
    elif run.exists():
        _remove(run)  # no usable last.pt: start over
    model = prepared(YOLO(spec.model))
    log(f"pretrain: training {spec.model} on {data_yaml} for {spec.epochs} epochs (stock BCE) in {run}")
    segments.start("fresh", 1)
    try:
        model.train(
            data=str(data_yaml), project=str(building), name=run.name, exist_ok=True, **spec.train_overrides(), **extra
        )
    except BaseException:
        segments.update()
        raise
    segments.update(done=True)
    return dict(getattr(model.trainer, "metrics", None) or {})


def _validate(spec: PretrainSpec, weights: Path, data_yaml: Path, building: Path, device: Any) -> dict[str, Any]:
    """Metrics of ``weights`` on the dataset's val split (when the trainer's final validation is not available)."""
    from ultralytics import YOLO

    metrics = YOLO(str(weights)).val(
        data=str(data_yaml),
        imgsz=spec.imgsz,
        batch=spec.batch * 2,
        device=device,
        split="val",
        plots=False,
        verbose=False,
        workers=spec.workers,
        project=str(building),
        name="val",
        exist_ok=True,
    )
    return dict(metrics.results_dict)


def _publish(tmp: Path, final: Path) -> None:
    """Rename the complete ``tmp`` to ``final`` (replacing an incomplete leftover there)."""
    if final.exists() or final.is_symlink():
        old = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
        _remove(old)
    os.replace(tmp, final)


def _build(
    spec: PretrainSpec,
    fp: str,
    root: Path,
    device: Any,
    callbacks: Mapping[str, Callable[[Any], None]],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Build the checkpoint of ``spec`` into ``root/fp`` (the caller holds the lock); returns its metadata."""
    from ultralytics import YOLO

    task = YOLO(spec.model).task  # the YAML exists and is a detection model, before any data or training
    if task != "detect":
        raise InvalidSettingError(
            f"Invalid PretrainSpec model={spec.model!r}: its task is {task!r}; valid task: detect."
        )
    building = root / f".building-{fp}"
    state = _read_json(building / BUILD_FILE)
    if state is None or state.get("fingerprint") != fp:
        if building.exists():
            log(f"pretrain: discarding {building} (no build state for fingerprint {fp})")
            _remove(building)
        state = {"fingerprint": fp, "spec": spec.to_dict(), "created_at": _now(), "segments": []}
    building.mkdir(parents=True, exist_ok=True)
    _write_json(building / BUILD_FILE, state)
    segments = _Segments(building / BUILD_FILE, state)

    t = time.monotonic()
    data_yaml = _data.embedded_dataset(n=spec.n, seed=spec.seed, imgsz=spec.imgsz, variant=spec.variant)
    data_s = time.monotonic() - t
    log(f"pretrain: dataset {data_yaml.parent} ready ({data_s:.0f} s)")
    final_rd = _train(spec, data_yaml, building, segments, device, callbacks, log)

    run = building / "train"
    best = run / "weights" / CHECKPOINT
    if not best.is_file():
        best = run / "weights" / "last.pt"
    if not best.is_file():
        raise RuntimeError(f"pretrain: training finished but {run / 'weights'} holds no checkpoint")
    if "metrics/mAP50-95(B)" in final_rd:
        source = "ultralytics final validation"
    else:
        final_rd, source = _validate(spec, best, data_yaml, building, device), "yolo-vfl pretrain validation"
    dataset = _read_json(data_yaml.parent / _data.META_FILE) or {}
    segs = state.get("segments", [])
    meta = {
        "fingerprint": fp,
        "spec": spec.to_dict(),
        "checkpoint": CHECKPOINT,
        "checkpoint_from": best.name,
        "checkpoint_sha256": sha256_file(best),
        "metrics": _metrics(final_rd),
        "metrics_source": source,
        "train_time_s": round(segments.total_seconds, 3),
        "data_time_s": round(data_s, 3),
        "segments": segs,
        "resumed": sum(1 for s in segs if s.get("how") == "resume" and not s.get("failed")),
        "epochs": spec.epochs,
        "device": None if device is None else str(device),
        "data": {
            "yaml": str(data_yaml),
            "fingerprint": dataset.get("fingerprint"),
            "n_train": dataset.get("n_train"),
            "n_val": dataset.get("n_val"),
            "names": dataset.get("names"),
        },
        "train": {"model": spec.model, **spec.train_overrides()},
        "versions": versions(generator_version=_data.GENERATOR_VERSION),
        "created_at": state.get("created_at"),
        "published_at": _now(),
        "host": platform.node(),
    }
    tmp = root / f".{fp}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        shutil.copy2(best, tmp / CHECKPOINT)
        for extra in ("results.csv", "args.yaml"):
            if (run / extra).is_file():
                shutil.copy2(run / extra, tmp / extra)
        _write_json(tmp / META_FILE, meta)
        _publish(tmp, root / fp)
    finally:
        if tmp.exists():
            _remove(tmp)
    _remove(building)
    return meta


def pretrained_checkpoint(
    spec: Optional[PretrainSpec] = None,
    *,
    device: Any = None,
    log: Callable[[str], None] = print,
    callbacks: Optional[Mapping[str, Callable[[Any], None]]] = None,
) -> PretrainResult:
    """The pretrained checkpoint of ``spec``: from the cache, else built (or an interrupted build resumed) now.

    The build generates the spec's dataset (:func:`yolo_vfl.data.embedded_dataset`), trains ``YOLO(spec.model)``
    with stock Ultralytics (BCE) in ``cache_dir()/pretrained/.building-<fingerprint>/train``, validates the best
    checkpoint on the val split and publishes ``best.pt`` with ``pretrain.json`` by renaming a complete directory
    into place. A build interrupted after an epoch resumes from its ``last.pt`` on the next call. A process that
    finds another one building the same fingerprint waits for it and reuses its checkpoint.

    Args:
        spec: What to pretrain; None for the default :class:`PretrainSpec`.
        device: Ultralytics ``device`` for training and validation (None: Ultralytics' choice). Not part of the
            fingerprint; recorded in the metadata.
        log: Called with one-line progress messages.
        callbacks: Extra Ultralytics callbacks (event -> function) added to the model of each training segment.

    Returns:
        The :class:`PretrainResult`; ``built_now`` says whether this call trained.

    Raises:
        TypeError: ``spec`` is not a PretrainSpec.
        ValueError: The model YAML is not a detection model.
        FileNotFoundError: The model YAML does not exist.
    """
    if spec is None:
        spec = PretrainSpec()
    if not isinstance(spec, PretrainSpec):
        raise InvalidTypeError(f"spec must be a PretrainSpec (see PretrainSpec.from_dict), got {type(spec).__name__}")
    fp = spec.fingerprint()
    root = pretrain_dir()
    final = root / fp
    meta = _published(final, fp)
    if meta is not None:
        log(f"pretrain: using cached checkpoint {final / CHECKPOINT}")
        return _result_from_meta(final, meta, built_now=False)
    root.mkdir(parents=True, exist_ok=True)
    with _build_lock(root / f".{fp}.lock", log):
        meta = _published(final, fp)  # built by the process we waited for
        if meta is not None:
            log(f"pretrain: using checkpoint {final / CHECKPOINT} built by another process")
            return _result_from_meta(final, meta, built_now=False)
        meta = _build(spec, fp, root, device, dict(callbacks or {}), log)
    result = _result_from_meta(final, meta, built_now=True)
    log(f"pretrain: published {result.path} (mAP50-95 {_fmt(result.metrics.get('mAP50-95'))})")
    return result


# ------------------------------------------------------------------------------------------------------------- CLI
def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.4f}"


def cli_pretrain(args: Mapping[str, Any]) -> int:
    """``yolo-vfl pretrain key=value ...``: build or reuse the pretrained checkpoint and print what it is.

    Args:
        args: Parsed ``key=value`` pairs: :class:`PretrainSpec` fields, ``device``, and any other Ultralytics train
            argument (collected into ``train_args``).

    Returns:
        0 on success.

    Raises:
        InvalidSettingError: an unknown key or an invalid value (a ``UserError``: one line on the CLI).
    """
    if not isinstance(args, Mapping):
        raise InvalidTypeError(f"cli_pretrain expects a mapping of key=value arguments, got {type(args).__name__}")
    args = dict(args)
    device = args.pop("device", None)
    names = set(PretrainSpec.fields())
    spec_args = {k: v for k, v in args.items() if k in names}
    extra = {k: v for k, v in args.items() if k not in names}
    if extra:
        from ultralytics.cfg import DEFAULT_CFG_DICT

        for key in extra:
            if key not in DEFAULT_CFG_DICT or key in _RESERVED:
                valid = sorted(names | {"device"}) + sorted(set(DEFAULT_CFG_DICT) - _RESERVED)
                raise InvalidSettingError(
                    f"Unknown pretrain key {key!r}. Valid keys: {', '.join(sorted(names | {'device'}))} or an "
                    f"Ultralytics train argument.{_suggest(str(key), valid)}"
                )
        spec_args["train_args"] = {**dict(spec_args.get("train_args") or {}), **extra}
    try:
        spec = PretrainSpec.from_dict(spec_args)
    except (TypeError, ValueError) as e:  # the spec's own validation: a user error, one line on the CLI
        raise InvalidSettingError(str(e)) from e
    result = pretrained_checkpoint(spec, device=device)
    print(f"checkpoint:  {result.path}")
    print(f"fingerprint: {result.fingerprint}")
    print(f"sha256:      {result.sha256}")
    print(f"mAP50-95:    {_fmt(result.metrics.get('mAP50-95'))}  (mAP50 {_fmt(result.metrics.get('mAP50'))})")
    print(f"train time:  {result.train_time_s:.0f} s{'' if result.built_now else ' (cached)'}")
    return 0
