"""Every arm x seed of a spec as a ``Job``, its state, and the fingerprint that decides if a finished run is kept."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import protocol
from .spec import DEFAULT_MODEL, ABSpec

__all__ = ["Job", "make_jobs", "start_model", "resolve_data", "fingerprint_diff"]

#: Train arguments that do not change what is trained (left out of the fingerprint).
NON_SEMANTIC = frozenset("device workers verbose plots save_period cache project name exist_ok resume".split())
NON_SEMANTIC |= {"model", "data", "save_dir", "mode", "val", "save"}


@dataclass(frozen=True)
class Job:
    """One arm x seed (``run``: ``<arm>-s<seed>``), JSON-ready: ``asdict`` crosses process boundaries, ``Job(**d)``.

    Attributes:
        overrides: the arm's own settings; ``settings``: its validated loss settings (``ClsLossSettings.to_args()``).
        model, data: the start model (YAML or checkpoint) and the resolved dataset YAML.
        train: Ultralytics train arguments of this run (shared ones, the arm's, ``seed``, ``deterministic``).
        fingerprint: what defines the training (compared before a finished run is kept).
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
        """The run's ``result.json`` (it marks the run finished)."""
        return self.run_dir / protocol.RESULT_FILE

    @property
    def log(self) -> Path:
        """The run's log (``out/logs/<run>.log``)."""
        return Path(self.out_dir) / "logs" / f"{self.run}.log"

    def state(self) -> str:
        """``done`` (a ``result.json``), ``restart`` (an interrupted run, trained again from zero) or ``fresh``."""
        return "done" if self.result.is_file() else "restart" if self.run_dir.exists() else "fresh"


def resolve_data(spec: ABSpec) -> str:
    """The dataset YAML every run trains on (a generated dataset, ``embedded`` or ``embedded-glyphs``: made once)."""
    from ..data import embedded_dataset, resolve_embedded

    data = spec.train.get("data")
    return str(embedded_dataset() if data is None else resolve_embedded(data) or data)


def _json(d: Mapping[str, Any]) -> dict[str, Any]:
    """``d`` as it reads back from JSON (sorted keys, non-JSON values as text)."""
    return json.loads(json.dumps(d, sort_keys=True, default=str))


def fingerprint_diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """How two fingerprints differ, ``key: old -> new`` (at most six; empty: the same training).

    Loss settings are completed by their defaults first (a run recorded before a setting existed); invalid recorded
    settings are compared as recorded (they differ).
    """
    from ..criterion import SETTING_KEYS, ClsLossSettings

    def normalized(fp: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return _json({**fp, **ClsLossSettings.from_args({k: fp[k] for k in fp if k in SETTING_KEYS}).to_args()})
        except (KeyError, TypeError, ValueError):
            return _json(fp)

    a, b = normalized(old or {}), normalized(new)
    diffs = [f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in sorted(a | b) if a.get(k) != b.get(k)]
    return ", ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else "")


def start_model(spec: ABSpec) -> str:
    """The model every arm starts from: ``train.model``, or the checkpoint ``pretrain:`` names (maybe not built yet)."""
    if spec.pretrain is None:
        return str(spec.train.get("model", DEFAULT_MODEL))
    from ..pretrain import CHECKPOINT, pretrain_dir

    return str(pretrain_dir() / spec.pretrain.fingerprint() / CHECKPOINT)


def make_jobs(spec: ABSpec, out_dir: str | os.PathLike[str], data: str | None = None) -> list[Job]:
    """Every arm x seed as a ``Job``, seed-major (early results pair up across arms); ``data`` default: resolved."""
    out, data, model = str(Path(out_dir).resolve()), data or resolve_data(spec), start_model(spec)
    shared = {k: v for k, v in spec.train.items() if k not in ("model", "data")}
    jobs = []
    for seed in spec.seeds:
        for arm in spec.arms:
            train = {**shared, **arm.ultralytics_overrides(), "seed": seed, "deterministic": True}
            settings = arm.loss_settings().to_args()
            semantic = {k: v for k, v in train.items() if k not in NON_SEMANTIC}  # what defines the training
            fp = _json({**semantic, **settings, "model": model, "data": spec.data_token})
            what = (dict(arm.overrides), model, data, train, settings, fp, out, dict(spec.ranking), spec.device[0])
            jobs.append(Job(f"{arm.name}-s{seed}", arm.name, seed, arm.loss, *what))
    return jobs
