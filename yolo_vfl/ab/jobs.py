"""Every arm x seed of a spec as a ``Job``, and the fingerprint that decides whether a finished run can be kept."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from . import protocol
from .spec import DEFAULT_MODEL, ABSpec

__all__ = ["Job", "make_jobs", "start_model", "resolve_data", "NON_SEMANTIC"]
__all__ += ["fingerprint", "same_fingerprint", "fingerprint_diff"]

#: Arguments that do not change what is trained: ignored when checking a finished or partial run's settings.
NON_SEMANTIC = ("device", "workers", "verbose", "plots", "save_period", "cache", "project", "name", "exist_ok")
NON_SEMANTIC += ("resume", "model", "data", "save_dir", "mode", "val", "save")


@dataclass(frozen=True)
class Job:
    """One arm x seed: what to train, where, and how to evaluate it (JSON-ready: it crosses process boundaries).

    Attributes:
        run: ``<arm>-s<seed>``.
        overrides: the arm's own settings (loss hyperparameters and Ultralytics arguments).
        model, data: the start model (YAML or checkpoint) and the resolved dataset YAML.
        train: Ultralytics train arguments of this run (shared ones, the arm's, ``seed``, ``deterministic``).
        settings: the validated loss settings (``ClsLossSettings.to_args()``).
        fingerprint: what defines the training (compared before a finished or partial run is reused).
        device: the device slot (None: Ultralytics' default).
    """

    run: str
    arm: str
    seed: int
    loss: str
    overrides: dict[str, Any]
    model: str
    data: str
    train: dict[str, Any]
    settings: dict[str, Any]
    fingerprint: dict[str, Any]
    out_dir: str
    ranking: dict[str, Any] = field(default_factory=dict)
    device: str | None = None

    @property
    def run_dir(self) -> Path:
        """The run's Ultralytics directory (``out/runs/<run>``)."""
        return Path(self.out_dir) / "runs" / self.run

    @property
    def result(self) -> Path:
        """The run's ``result.json``."""
        return self.run_dir / protocol.RESULT_FILE

    @property
    def log(self) -> Path:
        """The run's log (``out/logs/<run>.log``)."""
        return Path(self.out_dir) / "logs" / f"{self.run}.log"

    def on(self, device: str | None) -> Job:
        """This job on another device slot."""
        return replace(self, device=device)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``from_dict`` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        """From ``to_dict``'s form (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def resolve_data(spec: ABSpec) -> str:
    """The dataset YAML every run trains on (a generated dataset is generated once, cached)."""
    from ..data import embedded_dataset, resolve_embedded

    data = spec.train.get("data")
    if data is None:
        return str(embedded_dataset())
    generated = resolve_embedded(data)  # data: embedded-glyphs, the second generated dataset
    return str(generated if generated is not None else data)


def _json(d: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, sort_keys=True, default=str))


def fingerprint(train: Mapping[str, Any], settings: Mapping[str, Any], model: str, data: str) -> dict[str, Any]:
    """What defines a run's training: its semantic train arguments, loss settings, model and dataset name."""
    semantic = {k: v for k, v in train.items() if k not in NON_SEMANTIC}
    return _json({**semantic, **settings, "model": str(model), "data": data})


def _normalized(fp: Mapping[str, Any]) -> dict[str, Any]:
    """A fingerprint with its loss settings completed by their defaults (a run from before a setting used it)."""
    from ..criterion import SETTING_KEYS, ClsLossSettings

    out = dict(fp)
    try:
        out.update(ClsLossSettings.from_args({k: v for k, v in fp.items() if k in SETTING_KEYS}).to_args())
    except (KeyError, TypeError, ValueError):
        pass  # invalid recorded settings: compare as recorded (they will differ)
    return _json(out)


def same_fingerprint(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    """Whether two fingerprints describe the same training (None: no record, never the same)."""
    return a is not None and _normalized(a) == _normalized(b)


def fingerprint_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """The differing keys of two fingerprints, ``key: old -> new`` (at most six)."""
    a, b = _normalized(a), _normalized(b)
    keys = sorted(set(a) | set(b))
    diffs = [f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in keys if a.get(k) != b.get(k)]
    return ", ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else "")


def start_model(spec: ABSpec) -> str:
    """The model every arm starts from: ``train.model``, or the checkpoint ``pretrain:`` names (maybe not built yet)."""
    if spec.pretrain is None:
        return str(spec.train.get("model", DEFAULT_MODEL))
    from ..pretrain import CHECKPOINT, pretrain_dir

    return str(pretrain_dir() / spec.pretrain.fingerprint() / CHECKPOINT)


def make_jobs(spec: ABSpec, out_dir: str | os.PathLike[str], data: str | None = None) -> list[Job]:
    """Every arm x seed as a ``Job``, seed-major (early results pair up across arms); ``data`` default: resolved."""
    out = Path(out_dir).resolve()
    data = data if data is not None else resolve_data(spec)
    model = start_model(spec)
    shared = {k: v for k, v in spec.train.items() if k not in ("model", "data")}
    jobs = []
    for seed in spec.seeds:
        for arm in spec.arms:
            train = {**shared, **arm.ultralytics_overrides(), "seed": seed, "deterministic": True}
            settings = arm.loss_settings().to_args()
            jobs.append(
                Job(
                    run=f"{arm.name}-s{seed}",
                    arm=arm.name,
                    seed=seed,
                    loss=arm.loss,
                    overrides=dict(arm.overrides),
                    model=model,
                    data=data,
                    train=train,
                    settings=settings,
                    fingerprint=fingerprint(train, settings, model, spec.data_token),
                    out_dir=str(out),
                    ranking=dict(spec.ranking),
                    device=spec.device[0],
                )
            )
    return jobs
