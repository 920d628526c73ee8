"""The result of one A/B run: ``result.json`` (``RunResult``, provenance) and the long results table (the numbers).

The results table is the contract between running and reporting: one row per observation, columns

* ``run`` (str, ``<arm>-s<seed>``), ``arm`` (str), ``seed`` (int);
* ``epoch`` (int): the 1-based epoch of a per-epoch value, empty (null) for the run's final values;
* ``metric`` (str): per epoch, every column of Ultralytics' ``results.csv`` under its own name
  (``metrics/mAP50-95(B)``, ``train/cls_loss``, ``time``, ``lr/pg0`` ...); final: ``mAP50``, ``mAP50-95``,
  ``precision``, ``recall`` (the recording pass), the last epoch's losses (``train/box_loss`` ...), ranking quality
  from the records (``rank/pearson``, ``rank/spearman``, ``rank/pearson_matched``, ``rank/spearman_matched``) and
  ``train_time_s``, ``wall_time_s``, ``epochs_done``, ``segments``, ``restarts``;
* ``value`` (float): empty (null) where the run has no value (not measured, or undefined).

The runner writes it per run as ``runs/<run>/results_long.csv`` (``TABLE_FILE``) next to ``detections.npz``; ``yolo-vfl
ab report`` rewrites it from the run's files. A whole experiment loads in one line::

    pl.read_csv("runs/ab/NAME/runs/*/results_long.csv", schema=results.SCHEMA)  # or schema_overrides=

(pandas: ``pd.concat(map(pd.read_csv, glob.glob("runs/ab/NAME/runs/*/results_long.csv")))``). A metric that a report
needs and a run lacks (no row) raises ``MissingMetricError``; an empty value is shown as ``-``.
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
from .protocol import LOSS_KEYS, METRICS, RECORDS_FILE

__all__ = ["Curve", "RunResult", "TABLE_FILE", "SCHEMA", "RANK_KEYS", "FINAL_METRICS", "MissingMetricError"]
__all__ += [
    "check_metrics",
    "epoch_table",
    "run_table",
    "table_of",
    "final_rows",
    "run_ranking",
    "run_dir_table",
    "write_table",
    "read_table",
    "final_values",
]

#: The results table of a run, in its directory.
TABLE_FILE = "results_long.csv"
#: Its columns and types.
SCHEMA = {"run": pl.Utf8, "arm": pl.Utf8, "seed": pl.Int64, "epoch": pl.Int64, "metric": pl.Utf8, "value": pl.Float64}
#: Correlations of the ranking measurement, in report order (``rank/<key>`` in the table).
RANK_KEYS: tuple[str, ...] = ("pearson", "spearman", "pearson_matched", "spearman_matched")
#: Run-level numbers of ``result.json`` in the table (final rows).
RUN_KEYS: tuple[str, ...] = ("train_time_s", "wall_time_s", "epochs_done", "segments", "restarts")
#: Every final metric a run's table holds (a row each, its value possibly empty).
FINAL_METRICS: tuple[str, ...] = (*METRICS, *LOSS_KEYS, *(f"rank/{k}" for k in RANK_KEYS), *RUN_KEYS)

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


# ---------------------------------------------------------------------------------------------- the results table
class MissingMetricError(KeyError):
    """A metric that a report needs has no row in the results table (for a run); names both, with close matches."""

    def __init__(self, metric: str, run: str | None, known: Iterable[str] = ()) -> None:
        self.metric, self.run = metric, run
        close = difflib.get_close_matches(metric, sorted(set(known)), n=3)
        where = f"run {run}" if run else "the results table"
        hint = f"; similar: {', '.join(close)}" if close else ""
        super().__init__(f"metric {metric!r} missing from {where}{hint}")

    def __str__(self) -> str:
        return str(self.args[0])


def check_metrics(table: pl.DataFrame, metrics: Iterable[str], final: bool = True) -> None:
    """Every run of ``table`` has a row for each of ``metrics`` (final rows, or per-epoch rows with ``final=False``).

    Raises:
        MissingMetricError: the first metric missing, with the run that lacks it.
    """
    rows = table.filter(pl.col("epoch").is_null() if final else pl.col("epoch").is_not_null())
    have = rows.select("run", "metric").unique()
    want = table.select("run").unique().join(pl.DataFrame({"metric": list(metrics)}), how="cross")
    missing = want.join(have, on=["run", "metric"], how="anti").sort("metric", "run")
    if missing.height:
        metric, run = missing.row(0)[1], missing.row(0)[0]
        raise MissingMetricError(metric, run, have["metric"].to_list())


def _value(v: Any) -> float | None:
    v = _num(v)
    return v if math.isfinite(v) else None


def _frame(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def epoch_table(path: str | os.PathLike[str]) -> pl.DataFrame:
    """Ultralytics' ``results.csv`` in long form: ``epoch``, ``metric``, ``value`` (a re-run epoch keeps its last row).

    Column names are stripped (older Ultralytics padded them); a missing file gives an empty table.
    """
    empty = pl.DataFrame(schema={"epoch": pl.Int64, "metric": pl.Utf8, "value": pl.Float64})
    if not Path(path).is_file():
        return empty
    wide = pl.read_csv(path, infer_schema=False)
    wide = wide.rename({c: c.strip() for c in wide.columns}).with_columns(pl.all().str.strip_chars().cast(pl.Float64))
    if "epoch" not in wide.columns or wide.height == 0:
        return empty
    wide = wide.filter(pl.col("epoch").is_finite()).unique("epoch", keep="last", maintain_order=True).sort("epoch")
    long = wide.with_columns(pl.col("epoch").cast(pl.Int64)).unpivot(index="epoch", variable_name="metric")
    return long.with_columns(pl.col("value").fill_nan(None))


def run_table(
    result: RunResult, epochs: pl.DataFrame | None = None, ranking: Mapping[str, Any] | None = None
) -> pl.DataFrame:
    """The results table of one run: ``epochs`` (``epoch_table``; default: the result's curve) and its final values.

    ``ranking``: the ranking quality to use (default: the result's); the final losses are the last epoch's when
    ``epochs`` has them, else the result's.
    """
    if epochs is None:
        curve = {"metrics/mAP50-95(B)": result.curve.map50_95, "metrics/mAP50(B)": result.curve.map50}
        epochs = pl.DataFrame(
            [(e, k, _value(v)) for k, vs in curve.items() for e, v in zip(result.curve.epoch, vs)],
            schema={"epoch": pl.Int64, "metric": pl.Utf8, "value": pl.Float64},
            orient="row",
        )
    last = epochs.filter(pl.col("epoch") == pl.col("epoch").max())
    losses = {**result.final_losses, **dict(zip(last["metric"], last["value"]))}
    ranking = result.ranking if ranking is None else ranking
    final = {m: result.metric(m) for m in METRICS} | {k: losses.get(k) for k in LOSS_KEYS}
    final |= {f"rank/{k}": (ranking or {}).get(k) for k in RANK_KEYS}
    final |= {k: getattr(result, k) for k in RUN_KEYS} | {"epochs_done": result.epochs_done or None}
    ids = (result.run or f"{result.arm}-s{result.seed}", result.arm, result.seed)
    rows = [(*ids, e, m, v) for e, m, v in epochs.iter_rows()] + [(*ids, None, m, _value(v)) for m, v in final.items()]
    return _frame(rows)


def final_rows(result: RunResult, values: pl.DataFrame) -> pl.DataFrame:
    """Final rows of ``result``'s run from a ``metric`` / ``value`` frame (``evaluation.diagnose``)."""
    ids = {"run": result.run, "arm": result.arm, "seed": result.seed, "epoch": None}
    return values.select(**{k: pl.lit(v, SCHEMA[k]) for k, v in ids.items()}, metric="metric", value="value")


def table_of(results: Iterable[RunResult]) -> pl.DataFrame:
    """The results table of runs known only by their ``RunResult`` (epochs from their curves)."""
    return pl.concat([run_table(r) for r in results] or [_frame([])])


def run_ranking(run_dir: str | os.PathLike[str], result: RunResult) -> dict[str, Any] | None:
    """A run's ranking quality, computed from its ``detections.npz`` where it is there, else ``result.json``'s."""
    from .evaluation import ranking_quality
    from .records import RecordsFormatError, load_records

    path = Path(run_dir) / RECORDS_FILE
    try:
        return ranking_quality(load_records(path), seed=result.seed)
    except (FileNotFoundError, RecordsFormatError):
        return result.ranking


def run_dir_table(
    run_dir: str | os.PathLike[str], result: RunResult, ranking: Mapping[str, Any] | None
) -> pl.DataFrame:
    """A run directory's results table: ``result``, its ``results.csv`` and ``ranking`` (``run_ranking``)."""
    return run_table(result, epoch_table(Path(run_dir) / "results.csv"), ranking)


def write_table(table: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a results table as CSV atomically (empty cells for null epochs and values)."""
    return atomic_write_text(path, table.write_csv())


def read_table(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> pl.DataFrame:
    """Read results tables (a path, a glob, or a list of them), concatenated, with ``SCHEMA``'s types."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    return pl.concat([pl.read_csv(p, schema=SCHEMA) for p in paths] or [_frame([])])


def final_values(table: pl.DataFrame, metrics: Sequence[str]) -> pl.DataFrame:
    """One row per run (``run``, ``arm``, ``seed``) with a column per metric of its final values.

    Raises:
        MissingMetricError: a run without a row for one of ``metrics``.
    """
    check_metrics(table, metrics)
    final = table.filter(pl.col("epoch").is_null() & pl.col("metric").is_in(list(metrics)))
    wide = final.pivot(on="metric", index=["run", "arm", "seed"], values="value", aggregate_function="last")
    return wide.select("run", "arm", "seed", *metrics)
