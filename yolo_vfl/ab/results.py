"""The typed result of one A/B run, as ``result.json`` holds it (the JSON form is unchanged since the first runner)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .protocol import METRICS

__all__ = ["Curve", "RunResult"]

#: Curve field -> its ``result.json`` key.
_CURVE_KEYS = {"map50_95": "mAP50-95", "map50": "mAP50"}


def _num(value: Any) -> float:
    """A float, NaN for a missing or non-numeric value (JSON ``null``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


@dataclass(frozen=True)
class Curve:
    """Per-epoch validation metrics of a run (``results.csv``), one entry per epoch.

    Attributes:
        epoch: (E,) 1-based epochs.
        map50_95, map50: (E,) mAP50-95 and mAP50 per epoch (NaN where Ultralytics wrote none).
    """

    epoch: tuple[int, ...] = ()
    map50_95: tuple[float, ...] = ()
    map50: tuple[float, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Curve:
        """From ``result.json``'s ``curve`` (keys ``epoch``, ``mAP50-95``, ``mAP50``)."""
        d = d or {}
        values = {f: tuple(_num(v) for v in d.get(k) or ()) for f, k in _CURVE_KEYS.items()}
        return cls(tuple(int(e) for e in d.get("epoch") or ()), **values)

    def to_dict(self) -> dict[str, Any]:
        """The ``result.json`` form."""
        return {"epoch": list(self.epoch), **{k: list(getattr(self, f)) for f, k in _CURVE_KEYS.items()}}


@dataclass(frozen=True)
class RunResult:
    """One finished arm x seed.

    Attributes:
        run, arm, seed, loss: ``<arm>-s<seed>``, the arm's name, the training seed, the arm's classification loss.
        metrics: final validation metrics (``mAP50``, ``mAP50-95``, ``precision``, ``recall``; NaN if missing).
        metrics_source, metrics_model: the validation that gave them (the recording pass, or Ultralytics' final one)
            and the checkpoint validated (``best.pt``, or ``last.pt`` when there is no best).
        ranking: confidence-vs-IoU correlations of the final model's detections (None: not measured).
        final_losses: last epoch's ``train/*`` and ``val/*`` losses.
        curve: per-epoch mAP.
        epochs_done: epochs in ``results.csv``.
        train_time_s: training time over all segments (None: unknown).
        segments, resumed: training segments (1 + resumes); continued from a checkpoint after an interruption (so not
            bit-identical to an uninterrupted run).
        restarts: earlier attempts moved aside (interrupted, unusable or with other settings) before this one.
        overrides, settings, model, data, train, fingerprint: what was trained.
        records: detections file of the recording pass, relative to the run directory (None: none recorded).
        wall_time_s, device, host, versions, finished_at: provenance.
        extra: keys of ``result.json`` this version does not know (kept on rewrite).
    """

    run: str
    arm: str
    seed: int
    loss: str
    metrics: dict[str, float]
    metrics_source: str = ""
    metrics_model: str = ""
    ranking: dict[str, Any] | None = None
    final_losses: dict[str, float] = field(default_factory=dict)
    curve: Curve = field(default_factory=Curve)
    epochs_done: int = 0
    train_time_s: float | None = None
    segments: int = 1
    resumed: bool = False
    restarts: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    data: str = ""
    train: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    records: str | None = None
    wall_time_s: float | None = None
    device: str | None = None
    host: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    finished_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str) -> float:
        """A final metric by its report name (``mAP50-95``), NaN when missing."""
        return _num(self.metrics.get(name))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunResult:
        """From a ``result.json`` mapping (any runner version: missing or null keys take their defaults).

        Raises:
            ValueError: ``run``, ``arm`` or ``seed`` missing.
        """
        missing = [k for k in ("run", "arm", "seed") if k not in d]
        if missing:
            raise ValueError(f"not a run result: no {', '.join(missing)}")
        names = {f.name for f in fields(cls)} - {"extra"}
        kw: dict[str, Any] = {k: d[k] for k in names if k in d and d[k] is not None}
        kw["seed"] = int(d["seed"])
        kw["loss"] = str(d.get("loss") or d["arm"])
        kw["metrics"] = {m: _num((d.get("metrics") or {}).get(m)) for m in METRICS}
        kw["final_losses"] = {str(k): _num(v) for k, v in (d.get("final_losses") or {}).items()}
        kw["curve"] = Curve.from_dict(d.get("curve"))
        return cls(**kw, extra={k: v for k, v in d.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        """The ``result.json`` form (``curve`` with its report keys; unknown keys kept)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **d, "curve": self.curve.to_dict()}
