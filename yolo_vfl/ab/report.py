"""The text of the A/B report: ``summary.md`` / ``summary.csv`` and ``diagnosis.md`` / ``diagnosis.csv``.

Pure functions (no torch, Ultralytics or matplotlib). Every ``-``, ``n/a`` and ``(n=1)`` in a table has a legend line.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
import polars as pl

from .evaluation import FP_KINDS, KINDS, tally
from .protocol import LOSS_KEYS, METRICS, PRIMARY_METRIC, ULTRALYTICS_KEYS
from .results import FINAL_METRICS, RANK_KEYS, Curve, RunResult, final_values, table_of
from .stats import PairedDifference, finite, mean_std, paired_difference, verdict

__all__ = [
    "NOTHING_LEARNED",
    "CONVERGED_MIN",
    "CONVERGED_RISE",
    "CONVERGENCE_EPOCHS",
    "RANK_KEYS",
    "MeanStd",
    "MetricRow",
    "Convergence",
    "ArmRow",
    "arm_order",
    "group_by_arm",
    "curve_gain",
    "summarize",
    "experiment_warnings",
    "source_warning",
    "resolution",
    "verdict_lines",
    "summary_csv_text",
    "summary_markdown",
    "at_recall",
    "common_recall",
    "aggregate",
    "findings",
    "diagnosis_csv_text",
    "diagnosis_markdown",
]

#: Mean mAP50-95 below which an arm counts as having learned (nearly) nothing.
NOTHING_LEARNED = 0.01
#: Final mAP50-95 of the baseline below which the training counts as not converged.
CONVERGED_MIN = 0.10
#: Relative rise of the baseline's mAP50-95 over its last ``CONVERGENCE_EPOCHS`` epochs above which it still rises.
CONVERGED_RISE = 0.03
#: Epochs at the end of the curves over which the convergence gain is measured.
CONVERGENCE_EPOCHS = 3

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------ typed rows
@dataclass(frozen=True)
class MeanStd:
    """Mean, sample std (ddof=1; None below 2 values) and count of the finite values over seeds."""

    mean: float | None = None
    std: float | None = None
    n: int = 0

    @classmethod
    def of(cls, values: Iterable[Any]) -> MeanStd:
        """From values (None and NaN left out)."""
        vals = finite(values)
        return cls(*mean_std(vals), len(vals))


@dataclass(frozen=True)
class MetricRow:
    """One metric of an arm: ``value`` over seeds, ``diff`` to the baseline (None for it) and its ``verdict``."""

    value: MeanStd
    diff: PairedDifference | None
    verdict: str


@dataclass(frozen=True)
class Convergence:
    """An arm's gain at the end of training (``curve_gain`` per seed): absolute, relative, epochs spanned (fewest).

    ``earlier`` / ``last``: the paired differences to the baseline of the curves' values at the epoch the gain is
    measured from and at the last epoch (None for the baseline): whether the gap still moved at the end.
    """

    gain: MeanStd = field(default_factory=MeanStd)
    gain_rel: MeanStd = field(default_factory=MeanStd)
    epochs: int | None = None
    earlier: PairedDifference | None = None
    last: PairedDifference | None = None


@dataclass(frozen=True)
class ArmRow:
    """One arm of the summary (``summarize``); ``warnings``: the experiment's (the same in every row)."""

    arm: str
    loss: str
    overrides: str
    seeds: tuple[int, ...]
    is_baseline: bool
    metrics: dict[str, MetricRow]  # per METRICS name
    epochs_done: MeanStd
    train_time_s: MeanStd
    wall_time_s: MeanStd
    final_losses: dict[str, MeanStd]  # per LOSS_KEYS
    ranking: dict[str, MeanStd]  # per RANK_KEYS
    convergence: Convergence
    warnings: tuple[str, ...] = ()
    runs: tuple[Mapping[str, Any], ...] = ()  # per run: run, arm, seed and its FINAL_METRICS values

    n_seeds = property(lambda self: len(self.seeds))
    primary = property(lambda self: self.metrics[PRIMARY_METRIC])  # the PRIMARY_METRIC row
    verdict = property(lambda self: self.primary.verdict)  # the headline verdict
    warning = property(lambda self: "; ".join(self.warnings))  # the CSV column

    def csv_columns(self) -> dict[str, Any]:
        """The ``summary.csv`` columns of this row, in order (the first runner's, then the convergence ones)."""
        c: dict[str, Any] = {"arm": self.arm, "loss": self.loss, "overrides": self.overrides}
        c.update(n_seeds=self.n_seeds, seeds=list(self.seeds))
        for m in METRICS:
            row, d = self.metrics[m], self.metrics[m].diff
            c[f"{m}_mean"], c[f"{m}_std"] = row.value.mean, row.value.std
            c[f"{m}_diff"], c[f"{m}_diff_lo"], c[f"{m}_diff_hi"] = (d.mean, d.lo, d.hi) if d else (None, None, None)
            c[f"{m}_n_pairs"], c[f"{m}_verdict"] = (d.n if d else 0), row.verdict
        c["verdict"] = self.verdict
        gain = f"{PRIMARY_METRIC}_gain_last{CONVERGENCE_EPOCHS}"
        stats = [(k, getattr(self, k)) for k in ("train_time_s", "wall_time_s", "epochs_done")]
        stats += [*self.final_losses.items(), *((f"rank_{k}", self.ranking[k]) for k in RANK_KEYS), ("warning", None)]
        stats += [(gain, self.convergence.gain), (f"{gain}_rel", self.convergence.gain_rel)]
        for key, s in stats:
            c.update({key: self.warning} if s is None else {f"{key}_mean": s.mean, f"{key}_std": s.std})
        c["gain_epochs"] = self.convergence.epochs
        c[f"{PRIMARY_METRIC}_diff_halfwidth"] = self.primary.diff.half_width if self.primary.diff else None
        for when in ("earlier", "last"):
            d = getattr(self.convergence, when)
            for key, value in (("", "mean"), ("_lo", "lo"), ("_hi", "hi")):
                c[f"{PRIMARY_METRIC}_curve_diff_{when}{key}"] = getattr(d, value) if d else None
        return c


# ------------------------------------------------------------------------------------------------ grouping
def _arm_seed(item: Any) -> tuple[str, int]:
    arm, seed = (item["arm"], item["seed"]) if isinstance(item, Mapping) else (item.arm, item.seed)
    return str(arm), int(seed)


def arm_order(found: Iterable[str], order: Sequence[str] | None = None, baseline: str = "bce") -> list[str]:
    """The arms in report order: ``order``, the baseline, then as found (each once)."""
    found = list(dict.fromkeys(found))
    names = [a for a in (order or []) if a in found]
    return names + sorted((a for a in found if a not in names), key=lambda a: a != baseline)  # stable


def group_by_arm(items: Iterable[T], order: Sequence[str] | None = None, baseline: str = "bce") -> dict[str, list[T]]:
    """Items (``RunResult`` or ``arm``/``seed`` mappings) by arm (``arm_order``), each arm's by seed."""
    by_arm: dict[str, list[T]] = {}
    for item in items:
        by_arm.setdefault(_arm_seed(item)[0], []).append(item)
    return {a: sorted(by_arm[a], key=lambda x: _arm_seed(x)[1]) for a in arm_order(by_arm, order, baseline)}


def get_path(d: Any, *keys: str) -> Any:
    """``d[k0][k1]...``, None where a level is missing or not a mapping."""
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


# ------------------------------------------------------------------------------------------------ summary
_CURVE_FIELDS = {"mAP50-95": "map50_95", "mAP50": "map50"}
_Window = tuple[tuple[int, float], tuple[int, float]]


def curve_gain(
    curve: Curve, metric: str = PRIMARY_METRIC, epochs: int = CONVERGENCE_EPOCHS
) -> tuple[float | None, float | None, int | None]:
    """``(absolute gain, relative gain, epochs spanned)`` of ``metric`` over the curve's last ``epochs`` epochs.

    The last value against the latest one at least ``epochs`` before it (else the first): 0.2, 0.3, 0.4, 0.44 at
    epochs 1-4 give ``(0.24, 1.2, 3)``. Relative: None for an earlier value <= 0; all None below 2 values.
    """
    return _gain(_window(curve.epoch, getattr(curve, _CURVE_FIELDS[metric]), epochs))


def _gain(window: _Window | None) -> tuple[float | None, float | None, int | None]:
    if window is None:
        return None, None, None
    (e0, v0), (e_last, v_last) = window
    gain = v_last - v0
    return gain, (gain / v0 if v0 > 0 else None), e_last - e0


def _window(epoch: Sequence[int], values: Sequence[Any], epochs: int) -> _Window | None:
    """``((epoch, value) the gain is measured from, (last epoch, value))`` of a curve; None below 2 values."""
    pts = sorted((int(e), float(v)) for e, v in zip(epoch, values) if finite([v]))
    if len(pts) < 2:
        return None
    earlier = [p for p in pts if p[0] <= pts[-1][0] - epochs]
    return (earlier[-1] if earlier else pts[0]), pts[-1]


def _windows(table: pl.DataFrame) -> dict[str, _Window | None]:
    """Each run's convergence window of the primary metric's per-epoch curve (None: fewer than 2 epochs)."""
    curve = table.filter(pl.col("epoch").is_not_null() & (pl.col("metric") == ULTRALYTICS_KEYS[PRIMARY_METRIC]))
    by_run = curve.group_by("run").agg(pl.col("epoch"), pl.col("value"))
    out: dict[str, _Window | None] = dict.fromkeys(table["run"].unique().to_list())
    return out | {r: _window(e, v, CONVERGENCE_EPOCHS) for r, e, v in by_run.iter_rows()}


def _arm_stats(table: pl.DataFrame, metrics: Sequence[str]) -> dict[tuple[str, str], MeanStd]:
    """``(arm, metric) -> MeanStd`` of the final values over seeds (empty values left out)."""
    final = table.filter(pl.col("epoch").is_null() & pl.col("metric").is_in(list(metrics)))
    stats = final.group_by("arm", "metric").agg(
        m=pl.col("value").mean(), s=pl.col("value").std(), n=pl.col("value").count()
    )
    return {(a, k): MeanStd(m, s if n > 1 else None, n) for a, k, m, s, n in stats.iter_rows()}


def _by_seed(runs: pl.DataFrame, column: str) -> dict[int, Any]:
    return dict(zip(runs["seed"], runs[column]))


def _convergence(
    runs: pl.DataFrame, windows: Mapping[str, _Window | None], base: pl.DataFrame | None, level: float
) -> Convergence:
    """An arm's gains; against the baseline's runs ``base`` also its paired curve differences (start and end)."""
    gains = [_gain(windows[r]) for r in runs["run"]]
    spans = [g[2] for g in gains if g[2] is not None]

    def ends(rs: pl.DataFrame, end: int) -> dict[int, float | None]:
        return {s: w[end][1] if (w := windows[r]) else None for r, s in zip(rs["run"], rs["seed"])}

    diffs = [paired_difference(ends(runs, e), ends(base, e), level) for e in (0, 1)] if base is not None else []
    return Convergence(
        MeanStd.of(g[0] for g in gains), MeanStd.of(g[1] for g in gains), min(spans, default=None), *diffs
    )


def _arm_row(
    arm: str, runs: pl.DataFrame, base: pl.DataFrame, is_base: bool, stats: Mapping, windows: Mapping, level: float
) -> ArmRow:
    """One arm's ``ArmRow`` from its runs' final values (``final_values``) and the baseline's (``base``)."""
    metrics = {}
    for m in METRICS:
        d = None if is_base else paired_difference(_by_seed(runs, m), _by_seed(base, m), level)
        metrics[m] = MetricRow(stats.get((arm, m), MeanStd()), d, "baseline" if is_base else verdict(d))
    return ArmRow(
        arm=arm,
        loss="",
        overrides="",
        seeds=tuple(runs["seed"]),
        is_baseline=is_base,
        metrics=metrics,
        **{k: stats.get((arm, k), MeanStd()) for k in ("epochs_done", "train_time_s", "wall_time_s")},
        final_losses={k: stats.get((arm, k), MeanStd()) for k in LOSS_KEYS},
        ranking={k: stats.get((arm, f"rank/{k}"), MeanStd()) for k in RANK_KEYS},
        convergence=_convergence(runs, windows, None if is_base else base, level),
        runs=tuple(runs.iter_rows(named=True)),
    )


def summarize(
    results: Iterable[RunResult],
    baseline: str = "bce",
    order: Sequence[str] | None = None,
    level: float = 0.95,
    table: pl.DataFrame | None = None,
) -> list[ArmRow]:
    """One ``ArmRow`` per arm (``arm_order``) from the results table (default: ``table_of(results)``).

    ``results`` give the labels (loss, overrides) and the code versions; ``level``: confidence level of the intervals.

    Raises:
        MissingMetricError: a run of ``table`` without a row for one of ``FINAL_METRICS``.
    """
    results = list(results)
    table = table_of(results) if table is None else table
    final = final_values(table, FINAL_METRICS).sort("seed")
    stats, windows = _arm_stats(table, FINAL_METRICS), _windows(table)
    base = final.filter(pl.col("arm") == baseline)
    labels = {r.arm: (r.loss, _pairs(r.overrides, "=", " ")) for r in sorted(results, key=lambda r: -r.seed)}
    rows = []
    for arm in arm_order(table["arm"].unique(maintain_order=True), order, baseline):
        row = _arm_row(arm, final.filter(pl.col("arm") == arm), base, arm == baseline, stats, windows, level)
        loss, overrides = labels.get(arm, (arm, ""))
        rows.append(replace(row, loss=loss, overrides=overrides))
    source = source_warning(results)
    warnings = (*experiment_warnings(rows, baseline), *([source] if source else []))
    return [replace(r, warnings=warnings) for r in rows]


def experiment_warnings(rows: Sequence[ArmRow], baseline: str = "bce") -> list[str]:
    """Plain-text warnings: ``nothing learned`` (alone), else ``baseline ... near 0`` and ``not converged``."""
    means = {r.arm: r.primary.value.mean for r in rows if r.primary.value.mean is not None}
    if not means:
        return []
    if all(v < NOTHING_LEARNED for v in means.values()):
        top = max(means, key=lambda a: means[a])
        return [
            f"nothing learned: every arm's {PRIMARY_METRIC} is below {NOTHING_LEARNED:g} (highest: {top} "
            f"{means[top]:.4f}); the comparison says nothing (train longer, or check the data and labels)"
        ]
    out, reasons = [], []
    base = means.get(baseline)
    if base is not None and base < NOTHING_LEARNED:
        out.append(
            f"baseline `{baseline}` near 0: its mean {PRIMARY_METRIC} {base:.4f} is below {NOTHING_LEARNED:g}, so a "
            "difference says that the other arm learned something, not that its loss is better"
        )
    elif base is not None and base < CONVERGED_MIN:
        reasons.append(f"its mean {PRIMARY_METRIC} {base:.4f} is below {CONVERGED_MIN:g}")
    conv = next((r.convergence for r in rows if r.arm == baseline), Convergence())
    rise = conv.gain_rel.mean
    if rise is not None and rise > CONVERGED_RISE:
        reasons.append(
            f"it still rose {rise:+.1%} over its last {conv.epochs} epoch{'s' if conv.epochs != 1 else ''}, more "
            f"than {CONVERGED_RISE:.0%}"
        )
    if reasons:
        out.append(
            f"not converged: conclusions are about an early stage of training; baseline `{baseline}`: "
            + "; ".join(reasons)
            + " (train longer)"
        )
    return out


def source_warning(results: Sequence[RunResult]) -> str | None:
    """A warning when the runs ran different yolo_vfl code (``versions["yolo_vfl_source"]``); None: one or unknown.

    Runs from before the source was recorded have no hash and are not counted.
    """
    by_source: dict[str, list[str]] = {}
    for r in results:
        source = (r.versions or {}).get("yolo_vfl_source")
        if source:
            by_source.setdefault(str(source), []).append(r.run or f"{r.arm}-s{r.seed}")
    if len(by_source) < 2:
        return None
    parts = [
        f"{h}: {len(runs)} run{'s' if len(runs) != 1 else ''} ({', '.join(runs[:3])}{', ...' if len(runs) > 3 else ''})"
        for h, runs in by_source.items()
    ]
    return (
        f"code changed during the experiment: the runs ran {len(by_source)} different yolo_vfl sources "
        f"({'; '.join(parts)}); a difference between arms may come from the code, not the loss (delete the runs "
        "of the older source to retrain them)"
    )


def resolution(rows: Sequence[ArmRow]) -> str | None:
    """The smallest resolvable difference of the primary metric (the paired half-widths), as text; None: no arm."""
    diffs = [r.primary.diff for r in rows if not r.is_baseline and r.primary.diff is not None]
    diffs = [d for d in diffs if d.n > 0]
    if not diffs:
        return None
    widths = [d.half_width for d in diffs if d.half_width is not None]
    if not widths:
        return (
            f"with 1 paired seed there is no interval: no difference of {PRIMARY_METRIC} can be resolved (the paired "
            "interval needs ≥ 2 paired seeds)"
        )
    ns = sorted({d.n for d in diffs if d.half_width is not None})
    n_text = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    lo, hi = f"{min(widths):.4f}", f"{max(widths):.4f}"
    span = f"±{lo}" if lo == hi else f"±{lo} to ±{hi}"
    text = (
        f"with {n_text} paired seeds the paired {int(round(100 * diffs[0].level))}% intervals of {PRIMARY_METRIC} are "
        f"{span}: differences smaller than that cannot be seen"
    )
    return text + (" (arms with 1 paired seed have no interval)" if len(widths) < len(diffs) else "")


def verdict_lines(rows: Sequence[ArmRow]) -> list[str]:
    """What the runner prints: ``  vfl            mAP50-95 0.4523  better`` per arm, then each warning."""
    out = [f"  {r.arm:<14} {PRIMARY_METRIC} {_fmt(r.primary.value.mean) or '-':<6}  {r.verdict}" for r in rows]
    return out + [f"  Warning: {w}." for w in (rows[0].warnings if rows else ())]


# ------------------------------------------------------------------------------------------------ formatting
def _fmt(v: Any, digits: int | None = 4, none: str = "") -> str:
    """A float with ``digits`` decimals (None: as text), other values as text; ``none`` for None and NaN/inf."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return f"{v:.{digits}f}" if isinstance(v, float) and digits is not None else str(v)


def _pairs(d: Mapping[str, Any] | None, sep: str = " ", join: str = ", ") -> str:
    """``k v, k v`` (or ``k=v k=v``) of a mapping; empty for None."""
    return join.join(f"{k}{sep}{v}" for k, v in (d or {}).items())


def _csv(rows: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None) -> str:
    """Every key of the rows (first-seen order), then the ``extra`` columns (the same in every line)."""
    header = [*dict.fromkeys(k for row in rows for k in row), *(extra or {})]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        values = [{**row, **(extra or {})}.get(c) for c in header]
        writer.writerow([" ".join(map(str, v)) if isinstance(v, (list, tuple)) else _fmt(v, 6) for v in values])
    return buf.getvalue()


def summary_csv_text(rows: Sequence[ArmRow], meta: Mapping[str, Any] | None = None) -> str:
    """``summary.csv``: one line per arm, ``ArmRow.csv_columns`` plus ``versions`` and ``command``."""
    meta = meta or {}
    extra = {"versions": _pairs(meta.get("versions")), "command": " ; ".join(meta.get("commands") or [])}
    return _csv([r.csv_columns() for r in rows], extra)


def _stat(s: MeanStd, digits: int = 4, signed: bool = False, percent: bool = False) -> str:
    """``mean ± std``; one value (std undefined) is shown as itself with ``(n=1)``; ``-`` when there is none."""
    if s.mean is None or not math.isfinite(s.mean):
        return "-"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    sign = "+" if signed else ""
    text = f"{s.mean * scale:{sign}.{digits}f}{unit}"
    if s.std is None or not math.isfinite(s.std):
        return f"{text} (n=1)"
    return f"{text} ± {s.std * scale:.{digits}f}{unit}"


#: What a cell of ``_diff_text`` with one paired seed means.
_NO_INTERVAL = "n=1, no interval"


def _diff_text(d: PairedDifference | None) -> str:
    if d is None:
        return "(baseline)"
    if d.mean is None:
        return "-"
    if d.lo is None or d.hi is None:
        return f"{d.mean:+.4f} ({_NO_INTERVAL})"
    return f"{d.mean:+.4f} [{d.lo:+.4f}, {d.hi:+.4f}]"


def _duration(seconds: Any) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _table(head: str, body: Iterable[Sequence[Any]], *notes: str) -> list[str]:
    """A markdown table (``head``: ``a | b``; cells per row), then each note whose marker a cell is or contains.

    A note starts with its marker and a colon (```-`:``, ``n/a:``, ```(n=1)`:``); ``-`` must be the whole cell.
    """
    lines = [[str(c) for c in row] for row in body]
    cells = {c.strip() for row in lines for c in row}
    legend = []
    for text in notes:
        mark = text.split(":", 1)[0].strip("`")
        if any(c == mark or (len(mark) > 1 and mark in c) for c in cells):
            legend += ["", text]
    return [f"| {head} |", "|" + " --- |" * (head.count(" | ") + 1), *(f"| {' | '.join(r)} |" for r in lines), *legend]


_N1_NOTE = "`(n=1)`: one seed: that seed's value, not a mean; no standard deviation."


def _half_width(d: PairedDifference | None) -> str:
    if d is None:
        return "(baseline)"
    if d.half_width is None:
        return "n/a (1 paired seed)" if d.n == 1 else "n/a (no paired seed)"
    return f"±{d.half_width:.4f}"


def _header(rows: Sequence[ArmRow], results: Sequence[RunResult], meta: Mapping[str, Any]) -> list[str]:
    """The title, the warnings and the experiment's settings, start model, resumed and missing runs."""
    out = [f"# A/B experiment: {meta.get('name', 'ab')}", "", *_warnings(rows)]
    out += [f"- Command: `{cmd}`" for cmd in meta.get("commands") or []]
    out += [f"- Versions: {_pairs(meta['versions'])}"] if meta.get("versions") else []
    for key, label in (("data", "Data"), ("train", "Shared training arguments"), ("seeds", "Seeds")):
        value = meta.get(key)
        if value not in (None, "", {}):
            out.append(f"- {label}: `{_pairs(value, '=', ' ') if isinstance(value, Mapping) else value}`")
    out.append(
        f"- Baseline arm: `{meta.get('baseline', 'bce')}`; every arm x seed trains with the same data, epochs, image "
        "size and seed (Ultralytics deterministic mode)."
    )
    pre = meta.get("pretrain")
    if isinstance(pre, Mapping):
        m = pre.get("metrics") or {}
        out.append(
            f"- Start model: the project-made pretrained checkpoint `{pre.get('fingerprint')}` (stock BCE; "
            + (f"weights sha256 `{str(pre['sha256'])[:12]}`; " if pre.get("sha256") else "")
            + "mAP50-95 "
            f"{_fmt(m.get('mAP50-95')) or 'n/a'}, mAP50 {_fmt(m.get('mAP50')) or 'n/a'} on its own val split; built "
            f"in {_duration(pre.get('train_time_s'))}; `yolo-vfl pretrain`): every arm fine-tunes it."
        )
    resumed = sorted(r.run for r in results if r.resumed)
    if resumed:
        out.append(
            f"- **Resumed runs** (continued from last.pt after an interruption, so not bit-identical to an "
            f"uninterrupted run): {', '.join(resumed)}."
        )
    if meta.get("missing"):
        out.append(
            f"- **Missing runs (not finished)**: {', '.join(meta['missing'])}; the statistics below use the finished "
            "ones."
        )
    return out


def _warnings(rows: Sequence[ArmRow]) -> list[str]:
    return [f"> **Warning: {w}.**\n" for w in (rows[0].warnings if rows else ())]


def _accuracy(rows: Sequence[ArmRow], baseline: str, level: int) -> list[str]:
    """The accuracy table and the paired differences to the baseline."""
    accuracy = [
        [r.arm, r.loss or "-", r.overrides or "(none)", r.n_seeds, *(_stat(r.metrics[m].value) for m in METRICS)]
        for r in rows
    ]
    diffs = []
    for r in rows:
        pairs = r.primary.diff.n if r.primary.diff is not None else "(baseline)"
        map50 = [_diff_text(r.metrics["mAP50"].diff), r.metrics["mAP50"].verdict]
        rest = [_diff_text(r.metrics[m].diff) for m in ("precision", "recall")]
        diffs.append([r.arm, pairs, _diff_text(r.primary.diff), f"**{r.verdict}**", *map50, *rest])
    return [
        "\n## Accuracy\n",
        "Final validation of each run's `best.pt` on the val split; mean ± sample std over seeds (one seed: its value, "
        "marked `(n=1)`).\n",
        *_table(
            "arm | loss | overrides | seeds | mAP50 | mAP50-95 | precision | recall",
            accuracy,
            "`-`: not measured: no value in any run of this arm.",
            _N1_NOTE,
        ),
        f"\n## Difference to `{baseline}`\n",
        *_warnings(rows),
        f"Paired by seed (arm − {baseline}, same seed), mean and {level}% Student-t interval over the seeds. "
        f"The verdict says better or worse only when the interval excludes zero; it is decided on {PRIMARY_METRIC}.\n",
        *_table(
            f"arm | pairs | Δ{PRIMARY_METRIC} [{level}% CI] | verdict | ΔmAP50 [{level}% CI] | verdict (mAP50) "
            "| Δprecision [CI] | Δrecall [CI]",
            diffs,
            f"`{_NO_INTERVAL}`: one paired seed; the paired interval needs ≥ 2 paired seeds (a t-interval from one "
            "difference is undefined), so the verdict cannot be better or worse.",
            f"`-`: no paired value: no seed with this metric in both this arm and `{baseline}`.",
            f"n/a: the reason is in the cell (no seed that both this arm and `{baseline}` finished).",
        ),
    ]


def _convergence_section(rows: Sequence[ArmRow], baseline: str, level: int) -> list[str]:
    """Gains over the last epochs, resolution, and the paired curve differences."""
    conv = []
    for r in rows:
        c = r.convergence
        gains = [_stat(c.gain, signed=True), _stat(c.gain_rel, 1, signed=True, percent=True)]
        row = [r.arm, _stat(r.primary.value), _fmt(c.epochs, none="-"), *gains, _half_width(r.primary.diff)]
        conv.append([*row, _diff_text(c.earlier), _diff_text(c.last)])
    res, k = resolution(rows), CONVERGENCE_EPOCHS
    return [
        "\n## Convergence and resolution\n",
        f"Gain of {PRIMARY_METRIC} over each run's last {k} epochs (`curves.png`: the last epoch with a value against "
        f"the one {k} epochs before it, or the first epoch of a shorter run), absolute and relative to the earlier "
        "value, mean ± std over seeds. A run whose metric still rises has not converged: a difference between arms "
        f"then describes an early stage of training. The baseline counts as not converged when its final "
        f"{PRIMARY_METRIC} is below {CONVERGED_MIN:g} or it still rises more than {CONVERGED_RISE:.0%}. Resolution: "
        f"the half-width of each arm's paired {level}% interval against `{baseline}` (arm − {baseline}, by seed); "
        "a smaller difference cannot be told from zero. The last two columns: the paired difference to "
        f"`{baseline}` on the curves {k} epochs before the end (the epoch each gain is measured from) and at their "
        "last epoch; when the two agree, the gap between the arms did not move while training went on.\n",
        *([f"**Resolution: {res}.**\n"] if res else []),
        *_table(
            f"arm | final {PRIMARY_METRIC} | epochs spanned | gain | relative gain | ± {level}% CI vs {baseline} "
            f"| Δ vs {baseline}, {k} epochs earlier [CI] | Δ vs {baseline}, last epoch [CI]",
            conv,
            "`-`: not measured: no seed of the arm has a curve with 2 epochs or more (relative gain: the earlier value "
            "is 0), or no final value.",
            "n/a: no paired interval; the reason is in the cell (an interval needs ≥ 2 seeds that both this arm and "
            f"`{baseline}` finished).",
            _N1_NOTE,
        ),
    ]


def _ranking_and_times(rows: Sequence[ArmRow]) -> list[str]:
    """Ranking quality, training time and final losses per arm."""
    times = [
        [r.arm, _fmt(r.epochs_done.mean, 1) or "-", _duration(r.train_time_s.mean), _duration(r.wall_time_s.mean)]
        + [_stat(r.final_losses[k]) for k in LOSS_KEYS]
        for r in rows
    ]
    return [
        "\n## Ranking quality (confidence vs IoU)\n",
        "Each detection of the final model on the val images (confidence ≥ the threshold used by validation) is "
        "matched to the ground-truth box of the same class with the highest IoU (0 if none). Higher correlation = "
        "scores rank localization quality better (GFL, arXiv 2006.04388). Mean ± std over seeds; "
        '"IoU>0" uses only detections that overlap a same-class ground truth (the ranking of localization quality '
        "among real detections; the all-detections columns mix in the background ones at IoU 0). Scatter plots: "
        "`ranking.png` (titles: IoU>0 first, all detections below).\n",
        *_table(
            "arm | Pearson | Spearman | Pearson (IoU>0) | Spearman (IoU>0)",
            [[r.arm, *(_stat(r.ranking[k], 3) for k in RANK_KEYS)] for r in rows],
            "`-`: not measured: no ranking in the runs' records or result.json, or the correlation is undefined "
            "(fewer than 2 detections, or a constant confidence or IoU).",
            _N1_NOTE,
        ),
        "\n## Training time and final losses\n",
        "Training time is Ultralytics' epoch time summed over the run's training segments (resumed runs included); "
        "wall time is the last attempt's time including final validation and the ranking measurement; both are "
        "means over seeds. `cls_loss` is each arm's own classification loss (BCE, VFL, QFL ...): its values are not "
        "comparable across losses.\n",
        *_table(
            "arm | epochs | train time | wall time | box_loss | cls_loss | dfl_loss",
            times,
            "`-`: not recorded in any run of this arm (result.json or results.csv).",
            _N1_NOTE,
        ),
    ]


def _runs_section(rows: Sequence[ArmRow]) -> list[str]:
    """One line per run: its final metrics, training time, segments and correlations."""
    runs = [
        [x["run"], x["arm"], x["seed"], *(_fmt(x[m], 4, "-") for m in METRICS), _duration(x["train_time_s"])]
        + ["-" if x["segments"] is None else int(x["segments"])]
        + [_fmt(x[f"rank/{k}"], 3, "-") for k in ("pearson", "spearman")]
        for r in rows
        for x in r.runs
    ]
    return [
        "\n## Runs\n",
        *_table(
            "run | arm | seed | mAP50 | mAP50-95 | precision | recall | train time | segments | Pearson | Spearman",
            runs,
            "`-`: not measured in that run (or the correlation is undefined).",
        ),
        "\n## Curves\n\n![mAP50-95 per epoch](curves.png)\n\n![confidence vs IoU](ranking.png)\n",
    ]


def summary_markdown(
    rows: Sequence[ArmRow], results: Sequence[RunResult], meta: Mapping[str, Any] | None = None
) -> str:
    """``summary.md`` from ``summarize`` rows (numbers) and the runs (which were resumed).

    ``meta``: ``name``, ``baseline``, ``commands``, ``versions``, ``data``, ``train``, ``seeds``, ``pretrain``,
    ``missing``, ``level``.
    """
    meta = meta or {}
    baseline, level = meta.get("baseline", "bce"), int(round(100 * meta.get("level", 0.95)))
    out = _header(rows, results, meta) + _accuracy(rows, baseline, level)
    out += _convergence_section(rows, baseline, level) + _ranking_and_times(rows) + _runs_section(rows)
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ diagnosis
def _set_stat(row: dict[str, Any], key: str, values: Iterable[Any]) -> None:
    row[f"{key}_mean"], row[f"{key}_std"] = mean_std(values)


def _max_recall(d: Mapping[str, Any]) -> float:
    """The highest grid recall level a run reaches (0 when none)."""
    grid = d.get("recall_grid") or {}
    reached = [r for r, t in zip(grid.get("recall", []), grid.get("threshold", [])) if t is not None]
    return max(reached, default=0.0)


def common_recall(diagnoses: Sequence[Mapping[str, Any]], baseline: str = "bce") -> float | None:
    """The baseline runs' (else all runs') mean recall at their F1-optimal thresholds, the level the arms share.

    Rounded down to the 0.01 grid and capped at the highest level every run reaches; None when below 0.01.
    """
    runs = [d for d in diagnoses if d.get("arm") == baseline] or list(diagnoses)
    mean, _ = mean_std(get_path(d, "at", "f1", "recall") for d in runs)
    if mean is None or not diagnoses:
        return None
    level = min(math.floor(mean * 100 + 1e-9) / 100, min(_max_recall(d) for d in diagnoses))
    return round(level, 2) if level >= 0.01 else None


def at_recall(d: Mapping[str, Any], recall: float | None) -> dict[str, Any] | None:
    """A run's counts at a ``recall_grid`` level, in the form of its ``at`` entries (None: unreached or absent)."""
    grid = d.get("recall_grid") or {}
    levels = grid.get("recall") or []
    if recall is None or not levels:
        return None
    i = int(np.argmin(np.abs(np.asarray(levels) - recall)))
    if abs(levels[i] - recall) > 1e-6 or grid["threshold"][i] is None:
        return None
    counts = {k: grid["counts"][k][i] for k in KINDS}
    return {**tally(counts, d.get("n_gt") or 0), "threshold": grid["threshold"][i]}


def aggregate(
    diagnoses: Sequence[Mapping[str, Any]],
    baseline: str = "bce",
    order: Sequence[str] | None = None,
    recall: float | None = None,
) -> list[dict[str, Any]]:
    """One flat row per arm (the ``diagnosis.csv`` columns): ``<key>_mean`` / ``<key>_std`` over seeds.

    Keys: counts, AP50s, per operating point ``T`` (``0.25``, ``0.5``, ``f1``, ``eq``: equal ``recall``, default
    ``common_recall``) ``<kind>@T``, ``fp@T``, ``missed@T``, ``precision@T``, ``recall@T``, ``tp_iou@T``; thresholds,
    scores per kind, AP50 costs per FP kind.
    """
    if recall is None:
        recall = common_recall(diagnoses, baseline)
    rows = []
    for arm, runs in group_by_arm(diagnoses, order, baseline).items():
        row: dict[str, Any] = {"arm": arm, "n_seeds": len(runs), "seeds": [r["seed"] for r in runs]}
        row["eq_recall"] = recall
        for key in ("n_gt", "n_images", "n_det", "ap50", "ap50_tp_only"):
            _set_stat(row, key, [r.get(key) for r in runs])
        _set_stat(row, "tp", [get_path(r, "counts", "tp") for r in runs])
        ats = {t: [get_path(r, "at", t) for r in runs] for t in [k for k in (runs[0].get("at") or {}) if k != "f1"]}
        ats["f1"] = [get_path(r, "at", "f1") for r in runs]
        ats["eq"] = [at_recall(r, recall) for r in runs]
        for t, values in ats.items():
            for k in KINDS:
                _set_stat(row, f"{k}@{t}", [get_path(v, "counts", k) for v in values])
            for k in ("fp", "missed_gt", "precision", "recall"):
                _set_stat(row, f"{k.replace('_gt', '')}@{t}", [get_path(v, k) for v in values])
            if t != "eq":
                _set_stat(row, f"tp_iou@{t}", [get_path(r, "tp_mean_iou", t) for r in runs])
        for t in ("f1", "eq"):
            _set_stat(row, f"threshold@{t}", [get_path(v, "threshold") for v in ats[t]])
        for k in KINDS:
            _set_stat(row, f"score_{k}", [get_path(r, "mean_score", k) for r in runs])
        for k in FP_KINDS:
            _set_stat(row, f"ap50_cost_{k}", [get_path(r, "ap50_cost", k) for r in runs])
            _set_stat(row, f"ap50_without_{k}", [get_path(r, "ap50_without", k) for r in runs])
        rows.append(row)
    return rows


def _deltas(row: Mapping[str, Any], base: Mapping[str, Any], fmt: str) -> dict[str, float]:
    """``row - base`` of the ``<fmt(k)>_mean`` column per FP kind ``k`` where both have it."""
    pairs = {k: (row.get(fmt.format(k=k) + "_mean"), base.get(fmt.format(k=k) + "_mean")) for k in FP_KINDS}
    return {k: a - b for k, (a, b) in pairs.items() if a is not None and b is not None}


def _growth_text(row: Mapping[str, Any], base: Mapping[str, Any], t: str) -> str | None:
    """``FPs a → b per run (precision p → q); by kind: ... → **kind** grows most`` at operating point ``t``."""
    deltas = _deltas(row, base, "{k}@" + t)
    if not deltas:
        return None
    by_kind = ", ".join(f"{k} {d:+.1f}" for k, d in sorted(deltas.items(), key=lambda kv: -kv[1]))
    top = max(deltas, key=lambda k: deltas[k])
    fp_b, fp_a = base.get(f"fp@{t}_mean"), row.get(f"fp@{t}_mean")
    p_b, p_a = base.get(f"precision@{t}_mean"), row.get(f"precision@{t}_mean")
    head = f"FPs per run {fp_b:.1f} → {fp_a:.1f}" if fp_b is not None and fp_a is not None else "FPs per run"
    if p_b is not None and p_a is not None:
        head += f" (precision {p_b:.3f} → {p_a:.3f})"
    grows = f"**{top}** grows most" if deltas[top] > 0 else "no FP kind grows"
    return f"{head}; by kind {by_kind}: {grows}"


def _ap50_text(row: Mapping[str, Any], base: Mapping[str, Any]) -> str | None:
    """``AP50 a → b (gap g)`` and the gap with each FP kind removed from both arms."""
    ap, bap = row.get("ap50_mean"), base.get("ap50_mean")
    if ap is None or bap is None:
        return None
    text = f"AP50 {bap:.4f} → {ap:.4f} (gap {ap - bap:+.4f})"
    gaps = _deltas(row, base, "ap50_without_{k}")
    if not gaps:
        return text
    best = max(gaps, key=lambda k: gaps[k])
    by_kind = ", ".join(f"{k} {g:+.4f}" for k, g in gaps.items())
    text += f"; with one FP kind removed from both arms the gap would be {by_kind}"
    if gaps[best] > ap - bap:
        return text + f": removing **{best}** narrows it most (by {gaps[best] - (ap - bap):.4f})"
    return text + ": removing no single kind narrows it"


def findings(rows: Sequence[Mapping[str, Any]], baseline: str = "bce") -> list[str]:
    """One markdown bullet body per non-baseline arm: which FP kind grows most against the baseline and its AP50 cost.

    At equal recall, each arm's F1-optimal threshold and conf >= 0.25; the AP50 gap with one FP kind removed.
    """
    base = next((r for r in rows if r["arm"] == baseline), None)
    if base is None:
        return [f"No baseline arm `{baseline}` among the diagnosed runs: no comparison."]
    out = []
    for row in rows:
        if row["arm"] == baseline:
            continue
        recall = row.get("eq_recall")
        views = [
            ("eq", f"at equal recall {recall:.2f} (≈{_fmt(base.get('tp@eq_mean'), 0)} TPs per run)" if recall else ""),
            ("f1", "at each arm's F1-optimal threshold"),
            ("0.25", "at conf ≥ 0.25"),
        ]
        parts = [f"{label}: {text}" for t, label in views if label and (text := _growth_text(row, base, t))]
        ap50 = _ap50_text(row, base)
        parts += [ap50] if ap50 else []
        if not parts:
            parts.append("n/a: no value to compare (the arm's or the baseline's diagnosis lacks the counts and AP50)")
        out.append(f"`{row['arm']}` vs `{baseline}`:\n" + "\n".join(f"  - {p}" for p in parts))
    return out


def diagnosis_csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """``diagnosis.csv``: one line per arm, every column of ``aggregate``."""
    return _csv(rows)


def _count(row: Mapping[str, Any], key: str, digits: int = 1) -> str:
    """``_stat`` of ``<key>_mean`` / ``<key>_std`` of an ``aggregate`` row."""
    return _stat(MeanStd(row.get(f"{key}_mean"), row.get(f"{key}_std")), digits)


def _kind_table(rows: Sequence[Mapping[str, Any]], t: str, threshold: bool) -> list[str]:
    body = [
        [r["arm"], r["n_seeds"], *([_count(r, f"threshold@{t}", 3)] if threshold else [])]
        + [_count(r, f"{k}@{t}") for k in (*KINDS, "fp", "missed")]
        + [_count(r, f"precision@{t}", 3)]
        for r in rows
    ]
    return _table(
        f"arm | seeds | {'threshold | ' if threshold else ''}TP | duplicate | wrong_class | localization | background "
        "| FP | missed GT | precision",
        body,
        "`-`: not measured: no run of the arm has this value (the operating point was not reached, e.g. no detection "
        "at that threshold for precision, or no ground truth for AP50, or the run's diagnosis lacks it).",
        _N1_NOTE,
    )


def _tp_score(row: Mapping[str, Any]) -> str:
    """The arm's mean TP score, or why there is none."""
    if row.get("score_tp_mean") is not None:
        return _fmt(row["score_tp_mean"], 3)
    return "n/a (no true positives)" if row.get("tp_mean") == 0 else "n/a (not measured)"


def _diagnosis_header(
    rows: Sequence[Mapping[str, Any]], diagnoses: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]
) -> list[str]:
    """The title and how the detections were made and classified."""
    baseline = meta.get("baseline", "bce")
    p = (diagnoses[0].get("params") if diagnoses else None) or {}
    first = rows[0] if rows else {}
    na = "n/a (not recorded)"
    out = [f"# Diagnosis: {meta.get('name', 'ab')}", ""]
    out += [
        f"- {label}: `{meta[key]}`" for key, label in (("out", "Experiment"), ("command", "Command")) if meta.get(key)
    ]
    out += [
        f"- Detections of each run's `best.pt` as Ultralytics validation scores them (val split, "
        f"{_fmt(first.get('n_images_mean'), 0, na)} images, {_fmt(first.get('n_gt_mean'), 0, na)} ground-truth boxes; "
        f"imgsz {_fmt(p.get('imgsz'), None, na)}, conf ≥ {_fmt(p.get('conf'), None, na)}, NMS IoU "
        f"{_fmt(p.get('iou'), None, na)}, max_det {_fmt(p.get('max_det'), None, na)}, multi-label NMS: a box can carry "
        "several classes).",
        "- Each image's detections, in descending confidence: **tp** (IoU ≥ 0.5 with an unmatched same-class ground "
        "truth), **duplicate** (IoU ≥ 0.5 with a same-class ground truth already matched), **wrong_class** (IoU ≥ 0.5 "
        "with a ground truth of another class), **localization** (best IoU with any ground truth in [0.1, 0.5)), "
        "**background** (best IoU < 0.1). Missed GT = ground truths without a TP at that threshold.",
        "- Counts are per run (all val images), mean ± sample std over seeds.",
        f"- Baseline arm: `{baseline}`.",
    ]
    if meta.get("missing"):
        out.append(f"- Not diagnosed (no finished run): {', '.join(meta['missing'])}.")
    return out


def _scores_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Scores, TP IoUs and AP50 costs per kind, per arm."""
    scores = [
        [r["arm"], *(_count(r, f"score_{k}", 3) for k in KINDS), _count(r, "tp_iou@0.25", 3), _count(r, "tp_iou@f1", 3)]
        + [_count(r, key, 4) for key in ("ap50", *(f"ap50_cost_{k}" for k in FP_KINDS), "ap50_tp_only")]
        for r in rows
    ]
    return [
        "\n## Scores and AP50 cost per kind\n",
        "Mean score of each kind over all detections; mean IoU of the TPs at conf ≥ 0.25 and at the F1-optimal "
        "threshold. AP50 here uses the greedy matching above (101-point interpolation, mean over classes; close to "
        "Ultralytics' mAP50). Cost of a FP kind: the AP50 gained if its detections were removed (TIDE-style). "
        "TP only: AP50 with every FP removed, the ceiling that missed objects leave.\n",
        *_table(
            "arm | score TP | score duplicate | score wrong_class | score localization | score background "
            "| TP IoU@0.25 | TP IoU@F1 | AP50 | cost duplicate | cost wrong_class | cost localization "
            "| cost background | AP50 TP only",
            scores,
            "`-`: not measured: no detection of that kind (score, TP IoU), no ground truth (AP50 and costs), or the "
            "run's diagnosis lacks the value.",
            _N1_NOTE,
        ),
    ]


def _diagnosis_runs(rows: Sequence[Mapping[str, Any]], diagnoses: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per run: its counts at conf ≥ 0.25, F1 threshold and AP50s."""
    position = {r["arm"]: i for i, r in enumerate(rows)}
    runs = []
    for d in sorted(diagnoses, key=lambda x: (position.get(x["arm"], 1e9), x["seed"])):
        at = get_path(d, "at", "0.25") or {}
        counts = at.get("counts") or {}
        cells = [counts.get("tp"), at.get("fp"), *(counts.get(k) for k in FP_KINDS), at.get("missed_gt")]
        cells += [
            _fmt(get_path(d, "at", "f1", "threshold"), 3, "-"),
            d.get("ap50"),
            get_path(d, "ultralytics", "mAP50"),
        ]
        runs.append([d.get("run") or "-", d["arm"], d["seed"], *(_fmt(c, 4, "-") for c in cells)])
    return [
        "\n## Runs\n",
        *_table(
            "run | arm | seed | TP@0.25 | FP@0.25 | duplicate | wrong_class | localization | background | missed@0.25 "
            "| F1 threshold | AP50 | Ultralytics mAP50",
            runs,
            "`-`: not measured in that run (no F1 threshold without detections or ground truth, no AP50 without "
            "ground truth, or the run's diagnosis lacks the value).",
        ),
    ]


def diagnosis_markdown(
    rows: Sequence[Mapping[str, Any]], diagnoses: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None = None
) -> str:
    """``diagnosis.md`` from ``aggregate`` rows and the diagnoses; ``meta``: name, baseline, out, command, missing."""
    meta = meta or {}
    baseline = meta.get("baseline", "bce")
    first = rows[0] if rows else {}
    out = _diagnosis_header(rows, diagnoses, meta)
    out.append("\n## Findings\n")
    out += [f"- {s}" for s in findings(rows, baseline)] if len(rows) > 1 else ["- Only one arm: no comparison."]
    scale = ", ".join(f"{r['arm']} {_tp_score(r)}" for r in rows)
    out += [
        f"\nMean TP score per arm: {scale}. Losses put scores on different scales, so counts at a fixed threshold "
        "compare different operating points; at equal recall every arm has found the same number of objects, and "
        "the false positives that outrank them are what costs the precision.\n",
        "## Detections at conf ≥ 0.25\n",
        *_kind_table(rows, "0.25", False),
    ]
    recall = first.get("eq_recall")
    out.append(f"\n## Detections at equal recall ({_fmt(recall, 2) or 'n/a'})\n")
    if recall is None:
        out.append("No recall level that every run reaches.")
    else:
        out += [
            f"Each run's highest threshold at which its recall (all classes pooled) reaches {recall:.2f}, the "
            f"`{baseline}` runs' mean recall at their F1-optimal thresholds (capped at what every run reaches).\n",
            *_kind_table(rows, "eq", True),
        ]
    out += [
        "\n## Detections at each run's F1-optimal threshold\n",
        "The threshold with the highest F1, all classes pooled (Ultralytics reports precision and recall at the "
        "threshold that maximizes the F1 averaged over classes, so its numbers differ a little).\n",
        *_kind_table(rows, "f1", True),
        *_scores_section(rows),
        *_diagnosis_runs(rows, diagnoses),
        "\n## Plots\n\n![FP kinds and score distributions](fp_scores.png)\n\n"
        "![precision and recall per epoch](pr_curves.png)\n\n"
        "mAP50-95 per epoch and the score-IoU correlation are in the experiment report (`curves.png`, `ranking.png`, "
        "`summary.md`).\n",
    ]
    return "\n".join(out)
