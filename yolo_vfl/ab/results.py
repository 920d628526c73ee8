"""The result of one A/B run: ``result.json`` (``RunResult``, provenance) and the long results table (the numbers).

The results table is the contract between running and reporting, one row per observation: ``run`` (``<arm>-s<seed>``),
``arm``, ``seed``, ``epoch`` (1-based; null for final values), ``metric`` and ``value`` (null: not measured or
undefined); per epoch every column of Ultralytics' ``results.csv``, final ``FINAL_METRICS``. Each run writes
``runs/<run>/results_long.csv``; an experiment loads in one line: ``pl.read_csv("runs/ab/NAME/runs/*/results_long.csv",
schema=results.SCHEMA)``. A metric that a report needs and a run lacks (no row) raises ``MissingMetricError``.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import polars as pl

from ..fileio import atomic_write_text
from .protocol import LOSS_KEYS, METRICS

__all__ = ["Curve", "RunResult", "TABLE_FILE", "SCHEMA", "RANK_KEYS", "FINAL_METRICS", "MissingMetricError"]
__all__ += ["check_metrics", "epoch_table", "run_table", "table_of", "final_rows", "write_table", "read_table"]
__all__ += ["final_values"]
_EPOCH_SCHEMA = {"epoch": pl.Int64, "metric": pl.Utf8, "value": pl.Float64}

#: The results table of a run, in its directory.
TABLE_FILE = "results_long.csv"
#: Its columns and types.
SCHEMA = {"run": pl.Utf8, "arm": pl.Utf8, "seed": pl.Int64, "epoch": pl.Int64, "metric": pl.Utf8, "value": pl.Float64}
#: Correlations of the ranking measurement, in report order (``rank/<key>`` in the table).
RANK_KEYS: tuple[str, ...] = ("pearson", "spearman", "pearson_matched", "spearman_matched")
#: Run-level numbers of ``result.json`` in the table (final rows).
RUN_KEYS: tuple[str, ...] = ("train_time_s", "wall_time_s", "epochs_done", "restarts")
#: Every final metric a run's table holds (a row each, its value possibly empty).
FINAL_METRICS: tuple[str, ...] = (*METRICS, *LOSS_KEYS, *(f"rank/{k}" for k in RANK_KEYS), *RUN_KEYS)
_CURVE_KEYS = {"map50_95": "mAP50-95", "map50": "mAP50"}  # Curve field -> result.json key


def _num(value: Any) -> float:
    """A float, NaN for a missing or non-numeric value (JSON ``null``)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


@dataclass(frozen=True)
class Curve:
    """Per-epoch ``epoch`` (E,), ``map50_95`` (E,) and ``map50`` (E,) of a run (NaN where Ultralytics wrote none)."""

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
    """One finished arm x seed, as ``result.json`` holds it.

    Attributes:
        run, arm, seed, loss: ``<arm>-s<seed>``, the arm, the training seed, the arm's classification loss.
        metrics: final ``METRICS`` (NaN if missing); ``metrics_source``, ``metrics_model``: the pass and checkpoint.
        ranking: confidence-vs-IoU correlations (``evaluation.ranking_quality``; None: not measured).
        final_losses, curve, epochs_done: last epoch's losses, per-epoch mAP, epochs in ``results.csv``.
        train_time_s, wall_time_s: Ultralytics' epoch times summed, and the attempt's wall time (None: unknown).
        restarts: earlier attempts moved aside before this one.
        overrides, settings, model, data, train, fingerprint, records, device, host, versions, finished_at: provenance.
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

    def metric(self, name: str) -> float:
        """A final metric by its report name (``mAP50-95``), NaN when missing."""
        return _num(self.metrics.get(name))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunResult:
        """From a ``result.json`` mapping (null keys take their defaults, unknown keys are ignored).

        Raises:
            ValueError: ``run``, ``arm`` or ``seed`` missing.
        """
        if missing := [k for k in ("run", "arm", "seed") if k not in d]:
            raise ValueError(f"not a run result: no {', '.join(missing)}")
        kw: dict[str, Any] = {f.name: d[f.name] for f in fields(cls) if d.get(f.name) is not None}
        kw |= {"seed": int(d["seed"]), "loss": str(d.get("loss") or d["arm"]), "curve": Curve.from_dict(d.get("curve"))}
        kw["metrics"] = {m: _num((d.get("metrics") or {}).get(m)) for m in METRICS}
        kw["final_losses"] = {str(k): _num(v) for k, v in (d.get("final_losses") or {}).items()}
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """The ``result.json`` form."""
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "curve": self.curve.to_dict()}


# ---------------------------------------------------------------------------------------------- the results table
class MissingMetricError(KeyError):
    """A metric that a report needs has no row in the results table (for a run); names both, with close matches."""

    def __init__(self, metric: str, run: str | None, known: Iterable[str] = ()) -> None:
        self.metric, self.run = metric, run
        close = difflib.get_close_matches(metric, sorted(set(known)), n=3)
        hint = f"; similar: {', '.join(close)}" if close else ""
        super().__init__(f"metric {metric!r} missing from {f'run {run}' if run else 'the results table'}{hint}")

    def __str__(self) -> str:
        return str(self.args[0])


def check_metrics(table: pl.DataFrame, metrics: Iterable[str]) -> None:
    """Every run of ``table`` has a final row for each of ``metrics`` (MissingMetricError: the first missing)."""
    have = table.filter(pl.col("epoch").is_null()).select("run", "metric").unique()
    want = table.select("run").unique().join(pl.DataFrame({"metric": list(metrics)}), how="cross")
    missing = want.join(have, on=["run", "metric"], how="anti").sort("metric", "run")
    if missing.height:
        raise MissingMetricError(missing["metric"][0], missing["run"][0], have["metric"].to_list())


def _frame(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row").with_columns(pl.col("value").fill_nan(None))


def epoch_table(path: str | os.PathLike[str]) -> pl.DataFrame:
    """Ultralytics' ``results.csv`` in long form (``epoch``, ``metric``, ``value``; names stripped, empty if missing).

    A re-run epoch (after a resume) keeps its last row.
    """
    wide = pl.read_csv(path, infer_schema=False) if Path(path).is_file() else pl.DataFrame()
    wide = wide.select(pl.all().str.strip_chars().cast(pl.Float64).name.map(str.strip))
    if "epoch" not in wide.columns or wide.height == 0:
        return pl.DataFrame(schema=_EPOCH_SCHEMA)
    wide = wide.filter(pl.col("epoch").is_finite()).unique("epoch", keep="last", maintain_order=True).sort("epoch")
    long = wide.with_columns(pl.col("epoch").cast(pl.Int64)).unpivot(index="epoch", variable_name="metric")
    return long.with_columns(pl.col("value").fill_nan(None))


def run_table(
    result: RunResult, epochs: pl.DataFrame | None = None, ranking: Mapping[str, Any] | None = None
) -> pl.DataFrame:
    """One run's results table: ``epochs`` (``epoch_table``; default: the result's curve) and its final values.

    ``ranking``: default the result's; the final losses are the last epoch's where ``epochs`` has them.
    """
    if epochs is None:
        curve = {"metrics/mAP50-95(B)": result.curve.map50_95, "metrics/mAP50(B)": result.curve.map50}
        rows = [(e, k, v) for k, vs in curve.items() for e, v in zip(result.curve.epoch, vs)]
        epochs = pl.DataFrame(rows, schema=_EPOCH_SCHEMA, orient="row")
    last = epochs.filter(pl.col("epoch") == pl.col("epoch").max())
    losses = {**result.final_losses, **dict(zip(last["metric"], last["value"]))}
    ranking = (result.ranking if ranking is None else ranking) or {}
    final = {m: result.metric(m) for m in METRICS} | {k: losses.get(k) for k in LOSS_KEYS}
    final |= {f"rank/{k}": ranking.get(k) for k in RANK_KEYS} | {k: getattr(result, k) for k in RUN_KEYS}
    final["epochs_done"] = result.epochs_done or None
    ids = (result.run, result.arm, result.seed)
    return _frame([(*ids, *row) for row in epochs.iter_rows()] + [(*ids, None, m, v) for m, v in final.items()])


def final_rows(result: RunResult, values: pl.DataFrame) -> pl.DataFrame:
    """Final rows of ``result``'s run from a ``metric`` / ``value`` frame (``evaluation.diagnose``)."""
    ids = {"run": result.run, "arm": result.arm, "seed": result.seed, "epoch": None}
    return values.select(**{k: pl.lit(v, SCHEMA[k]) for k, v in ids.items()}, metric="metric", value="value")


def table_of(results: Iterable[RunResult]) -> pl.DataFrame:
    """The results table of runs known only by their ``RunResult`` (epochs from their curves)."""
    return pl.concat([run_table(r) for r in results] or [_frame([])])


def write_table(table: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a results table as CSV atomically (empty cells for null epochs and values)."""
    return atomic_write_text(path, table.write_csv())


def read_table(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> pl.DataFrame:
    """Read results tables (a path, a glob, or a list of them), concatenated, with ``SCHEMA``'s types."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    return pl.concat([pl.read_csv(p, schema=SCHEMA) for p in paths] or [_frame([])])


def final_values(table: pl.DataFrame, metrics: Sequence[str]) -> pl.DataFrame:
    """One row per run (``run``, ``arm``, ``seed``), a column per metric of its final values (MissingMetricError)."""
    check_metrics(table, metrics)
    final = table.filter(pl.col("epoch").is_null() & pl.col("metric").is_in(list(metrics)))
    wide = final.pivot(on="metric", index=["run", "arm", "seed"], values="value", aggregate_function="last")
    return wide.select("run", "arm", "seed", *metrics)
