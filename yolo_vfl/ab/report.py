"""The text of the A/B report: ``summary.md`` / ``summary.csv`` and ``diagnosis.md`` / ``diagnosis.csv``.

Pure functions (no torch, Ultralytics or matplotlib). Every ``-``, ``n/a`` and ``(n=1)`` in a table has a legend line.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl

from .evaluation import FP_KINDS, KINDS
from .protocol import BASELINE, LEVEL, LOSS_KEYS, METRICS, OPERATING_CONF, PRIMARY_METRIC, ULTRALYTICS_KEYS
from .results import (
    FINAL_METRICS,
    RANK_KEYS,
    Curve,
    MissingMetricError,
    RunResult,
    check_metrics,
    final_values,
    table_of,
)
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
    "curve_gain",
    "summarize",
    "experiment_warnings",
    "source_warning",
    "resolution",
    "verdict_lines",
    "summary_csv_text",
    "summary_markdown",
    "common_recall",
    "diagnosis_stats",
    "diagnosis_runs",
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
def arm_order(found: Iterable[str], order: Sequence[str] | None = None, baseline: str = BASELINE) -> list[str]:
    """The arms in report order: ``order``, the baseline, then as found (each once)."""
    found = list(dict.fromkeys(found))
    names = [a for a in (order or []) if a in found]
    return names + sorted((a for a in found if a not in names), key=lambda a: a != baseline)  # stable


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
    baseline: str = BASELINE,
    order: Sequence[str] | None = None,
    level: float = LEVEL,
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


def experiment_warnings(rows: Sequence[ArmRow], baseline: str = BASELINE) -> list[str]:
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
        f"- Baseline arm: `{meta.get('baseline', BASELINE)}`; every arm x seed trains with the same data, epochs, "
        "image size and seed (Ultralytics deterministic mode)."
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
        f"Gain of {PRIMARY_METRIC} over each run's last {k} epochs (`curves.png`; a shorter run: from its first "
        "epoch), absolute and relative, mean ± std over seeds: a run still rising has not converged. The baseline "
        f"counts as not converged below {CONVERGED_MIN:g} or rising more than {CONVERGED_RISE:.0%}. Resolution: the "
        f"half-width of the paired {level}% interval against `{baseline}`; a smaller difference cannot be told from "
        f"zero. The last two columns: the paired difference to `{baseline}` {k} epochs before the end and at the "
        "last epoch; when they agree, the gap did not move while training went on.\n",
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
        "Each detection of the final model on the val images is matched to the same-class ground truth with the "
        "highest IoU (0 if none); a higher correlation of confidence and IoU ranks localization quality better (GFL, "
        'arXiv 2006.04388). Mean ± std over seeds; "IoU>0": only detections that overlap a same-class ground truth. '
        "Scatter plots: `ranking.png`.\n",
        *_table(
            "arm | Pearson | Spearman | Pearson (IoU>0) | Spearman (IoU>0)",
            [[r.arm, *(_stat(r.ranking[k], 3) for k in RANK_KEYS)] for r in rows],
            "`-`: not measured: no ranking in the runs' records or result.json, or the correlation is undefined "
            "(fewer than 2 detections, or a constant confidence or IoU).",
            _N1_NOTE,
        ),
        "\n## Training time and final losses\n",
        "Training time: Ultralytics' epoch times summed over the run's segments; wall time: the last attempt's, with "
        "final validation and ranking; means over seeds. `cls_loss` is each arm's own loss: not comparable across "
        "losses.\n",
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
    baseline, level = meta.get("baseline", BASELINE), int(round(100 * meta.get("level", LEVEL)))
    out = _header(rows, results, meta) + _accuracy(rows, baseline, level)
    out += _convergence_section(rows, baseline, level) + _ranking_and_times(rows) + _runs_section(rows)
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ diagnosis
#: The fixed operating point of the diagnosis, as its metric names spell it (``tp@0.25``).
_OP = f"{OPERATING_CONF:g}"
#: The operating points of the diagnosis tables: key in the metric names, heading.
_POINTS = {_OP: f"at conf ≥ {_OP}", "eq": "at equal recall", "f1": "at each run's F1-optimal threshold"}
_POINT_METRICS = (*KINDS, "fp", "missed", "precision")
#: The per-run metrics of the diagnosis' Runs table.
_RUN_METRICS = (*(f"{k}@{_OP}" for k in ("tp", "fp", *FP_KINDS, "missed")), "threshold@f1", "ap50", "ultralytics/mAP50")
_DIAG_METRICS = (
    "n_images", "n_gt", "ap50", "ap50_tp_only", f"tp_iou@{_OP}", "tp_iou@f1", "threshold@f1", "recall@f1", "recall_max",
    *(f"{k}@{p}" for p in (_OP, "f1") for k in _POINT_METRICS), *(f"score_{k}" for k in KINDS),
    *(f"ap50_{c}_{k}" for k in FP_KINDS for c in ("cost", "without")), *_RUN_METRICS,
)  # fmt: skip


def common_recall(table: pl.DataFrame, baseline: str = BASELINE) -> float | None:
    """The baseline runs' (else all runs') mean recall at their F1-optimal thresholds, the level the arms share.

    Rounded down to the 0.01 grid and capped at the highest level every run reaches (``recall_max``); None below 0.01.
    """
    runs = final_values(table, ("recall@f1", "recall_max"))
    base = runs.filter(pl.col("arm") == baseline)
    mean = (base if base.height else runs)["recall@f1"].mean()
    if mean is None:
        return None
    level = min(math.floor(mean * 100 + 1e-9) / 100, runs["recall_max"].min())
    return round(level, 2) if level >= 0.01 else None


def diagnosis_stats(
    table: pl.DataFrame, baseline: str = BASELINE, order: Sequence[str] | None = None, recall: float | None = None
) -> pl.DataFrame:
    """One row per arm (the ``diagnosis.csv`` columns): ``<metric>_mean`` / ``<metric>_std`` over seeds.

    ``table``: the runs' diagnosis rows (``evaluation.diagnose``); the recall grid enters only at ``recall`` (default
    ``common_recall``), as the operating point ``eq``.

    Raises:
        MissingMetricError: a run without a row for a metric of the report.
    """
    check_metrics(table, _DIAG_METRICS)
    recall = common_recall(table, baseline) if recall is None else recall
    final = table.filter(pl.col("epoch").is_null() & ~pl.col("metric").is_in([*FINAL_METRICS, "recall_max"]))
    grid = pl.col("metric").str.contains("@recall") | pl.col("metric").str.starts_with("ultralytics/")
    eq = final.filter(pl.col("metric").str.ends_with(f"@recall{recall:.2f}") if recall else pl.lit(False))
    rows = pl.concat([final.filter(~grid), eq.with_columns(pl.col("metric").str.replace("@recall.*", "@eq"))])
    stats = rows.group_by("arm", "metric", maintain_order=True).agg(
        mean=pl.col("value").mean(), std=pl.col("value").std()
    )
    long = stats.unpivot(index=["arm", "metric"], variable_name="stat").with_columns(
        column=pl.col("metric") + "_" + pl.col("stat")
    )
    wide = long.pivot(on="column", index="arm", values="value", maintain_order=True)
    seeds = final.group_by("arm").agg(n_seeds=pl.col("seed").n_unique(), seeds=pl.col("seed").unique().sort())
    arms = pl.DataFrame({"arm": arm_order(final["arm"].unique(maintain_order=True), order, baseline)})
    columns = [f"{m}_{s}" for m in rows["metric"].unique(maintain_order=True) for s in ("mean", "std")]
    out = arms.join(seeds, on="arm", how="left", maintain_order="left").join(wide, on="arm", maintain_order="left")
    return out.with_columns(eq_recall=pl.lit(recall, pl.Float64)).select(
        "arm", "n_seeds", "seeds", "eq_recall", *columns
    )


def _diag(row: Mapping[str, Any], key: str) -> MeanStd:
    """``<key>_mean`` / ``<key>_std`` of a ``diagnosis_stats`` row (MissingMetricError: not a column)."""
    if f"{key}_mean" not in row:
        raise MissingMetricError(key, None, (k.rsplit("_", 1)[0] for k in row))
    return MeanStd(row[f"{key}_mean"], row[f"{key}_std"])


def _growth_text(row: Mapping[str, Any], base: Mapping[str, Any], t: str) -> str:
    """``FPs per run a → b (precision p → q); by kind ...: **kind** grows most`` at operating point ``t``."""
    deltas = {k: (_diag(row, f"{k}@{t}").mean or 0.0) - (_diag(base, f"{k}@{t}").mean or 0.0) for k in FP_KINDS}
    by_kind = ", ".join(f"{k} {d:+.1f}" for k, d in sorted(deltas.items(), key=lambda kv: -kv[1]))
    top = max(deltas, key=lambda k: deltas[k])
    fp, p = (
        " → ".join(_fmt(_diag(r, f"{key}@{t}").mean, n, "n/a") for r in (base, row))
        for key, n in (("fp", 1), ("precision", 3))
    )
    grows = f"**{top}** grows most" if deltas[top] > 0 else "no FP kind grows"
    return f"FPs per run {fp} (precision {p}); by kind {by_kind}: {grows}"


def _ap50_text(runs: pl.DataFrame, arm: str, baseline: str, level: float) -> str:
    """The AP50 gap to the baseline paired by seed, and how it changes with each FP kind removed from both arms.

    Removing a kind narrows the gap when it brings the paired mean gap closer to zero, whichever arm is ahead.
    """

    def gap(metric: str) -> PairedDifference:
        of = {a: _by_seed(runs.filter(pl.col("arm") == a), metric) for a in (arm, baseline)}
        return paired_difference(of[arm], of[baseline], level)

    g = gap("ap50")
    if g.mean is None:
        return "AP50: no seed with a value in both arms"
    text = f"AP50 gap paired by seed {_diff_text(g)}"
    gaps = {k: d.mean for k in FP_KINDS if (d := gap(f"ap50_without_{k}")).mean is not None}
    if not gaps:
        return text
    text += "; with one FP kind removed from both arms: " + ", ".join(f"{k} {v:+.4f}" for k, v in gaps.items())
    best = min(gaps, key=lambda k: abs(gaps[k]))
    if abs(gaps[best]) < abs(g.mean):
        return text + f": removing **{best}** narrows it most (|gap| smaller by {abs(g.mean) - abs(gaps[best]):.4f})"
    return text + ": removing no single kind narrows it"


def findings(stats: pl.DataFrame, runs: pl.DataFrame, baseline: str = BASELINE, level: float = LEVEL) -> list[str]:
    """One markdown bullet body per non-baseline arm: which FP kind grows most against the baseline and its AP50 gap.

    ``stats``: ``diagnosis_stats``; ``runs``: per run its ``_RUN_METRICS`` and ``ap50_without_<kind>`` values.
    """
    rows = {r["arm"]: r for r in stats.iter_rows(named=True)}
    if baseline not in rows:
        return [f"No baseline arm `{baseline}` among the diagnosed runs: no comparison."]
    base, out = rows[baseline], []
    recall = base["eq_recall"]
    for arm, row in rows.items():
        if arm == baseline:
            continue
        tps = _fmt(base.get("tp@eq_mean"), 0)
        views = {"eq": f"at equal recall {recall:.2f} (≈{tps} TPs per run)" if recall else None, "f1": _POINTS["f1"]}
        views[_OP] = _POINTS[_OP]
        parts = [f"{label}: {_growth_text(row, base, t)}" for t, label in views.items() if label]
        parts.append(_ap50_text(runs, arm, baseline, level))
        out.append(f"`{arm}` vs `{baseline}`:\n" + "\n".join(f"  - {p}" for p in parts))
    return out


def diagnosis_csv_text(stats: pl.DataFrame) -> str:
    """``diagnosis.csv``: one line per arm, every column of ``diagnosis_stats``."""
    return _csv(list(stats.iter_rows(named=True)))


_DASH_NOTE = "`-`: not measured: no value in any run of this arm (the operating point was not reached, no detection "
_DASH_NOTE += "of that kind, or no ground truth for AP50)."


def _kind_table(stats: pl.DataFrame, t: str) -> list[str]:
    threshold = t != _OP
    body = [
        [r["arm"], r["n_seeds"], *([_stat(_diag(r, f"threshold@{t}"), 3)] if threshold else [])]
        + [_stat(_diag(r, f"{k}@{t}"), 1) for k in (*KINDS, "fp", "missed")]
        + [_stat(_diag(r, f"precision@{t}"), 3)]
        for r in stats.iter_rows(named=True)
    ]
    head = " | ".join(["arm", "seeds", *(["threshold"] if threshold else []), "TP", *FP_KINDS, "FP", "missed GT"])
    return _table(head + " | precision", body, _DASH_NOTE, _N1_NOTE)


def _tp_score(row: Mapping[str, Any]) -> str:
    """The arm's mean TP score, or why there is none."""
    score = _diag(row, "score_tp").mean
    return "n/a (no true positives)" if score is None else f"{score:.3f}"


def _diagnosis_header(stats: pl.DataFrame, meta: Mapping[str, Any]) -> list[str]:
    """The title and how the detections were made and classified."""
    p, first = meta.get("params") or {}, next(stats.iter_rows(named=True))
    na = "n/a (not recorded)"
    out = [f"# Diagnosis: {meta.get('name', 'ab')}", ""]
    out += [f"- {label}: `{meta[k]}`" for k, label in (("out", "Experiment"), ("command", "Command")) if meta.get(k)]
    out += [
        f"- Detections of each run's `best.pt` as Ultralytics validation scores them (val split, "
        f"{_fmt(first['n_images_mean'], 0, na)} images, {_fmt(first['n_gt_mean'], 0, na)} ground-truth boxes; "
        f"imgsz {_fmt(p.get('imgsz'), None, na)}, conf ≥ {_fmt(p.get('conf'), None, na)}, NMS IoU "
        f"{_fmt(p.get('iou'), None, na)}, max_det {_fmt(p.get('max_det'), None, na)}, multi-label NMS: a box can carry "
        "several classes).",
        "- Each image's detections, in descending confidence: **tp** (IoU ≥ 0.5 with an unmatched same-class ground "
        "truth), **duplicate** (IoU ≥ 0.5 with a same-class ground truth already matched), **wrong_class** (IoU ≥ 0.5 "
        "with a ground truth of another class), **localization** (best IoU with any ground truth in [0.1, 0.5)), "
        "**background** (best IoU < 0.1). Missed GT = ground truths without a TP at that threshold.",
        f"- Counts are per run (all val images), mean ± sample std over seeds. Baseline arm: `{meta['baseline']}`.",
    ]
    return out + ([f"- Not diagnosed (no finished run): {', '.join(meta['missing'])}."] if meta.get("missing") else [])


def _scores_section(stats: pl.DataFrame) -> list[str]:
    """Scores, TP IoUs and AP50 costs per kind, per arm."""
    keys = [*(f"score_{k}" for k in KINDS), f"tp_iou@{_OP}", "tp_iou@f1"]
    keys4 = ["ap50", *(f"ap50_cost_{k}" for k in FP_KINDS), "ap50_tp_only"]
    body = [
        [r["arm"], *(_stat(_diag(r, k), 3) for k in keys), *(_stat(_diag(r, k), 4) for k in keys4)]
        for r in stats.iter_rows(named=True)
    ]
    head = " | ".join(["arm", *(f"score {'TP' if k == 'tp' else k}" for k in KINDS), f"TP IoU@{_OP}", "TP IoU@F1"])
    head += " | AP50 | " + " | ".join(f"cost {k}" for k in FP_KINDS) + " | AP50 TP only"
    return [
        "\n## Scores and AP50 cost per kind\n",
        f"Mean score of each kind; mean IoU of the TPs at conf ≥ {_OP} and at the F1-optimal threshold. AP50 uses the "
        "greedy matching above (Ultralytics' `compute_ap`, mean over classes). Cost of a FP kind: the AP50 gained if "
        "its detections were removed (TIDE). TP only: AP50 with every FP removed, the ceiling that missed objects "
        "leave.\n",
        *_table(head, body, _DASH_NOTE, _N1_NOTE),
    ]


def _diagnosis_runs(runs: pl.DataFrame) -> list[str]:
    """One line per run: its counts at ``OPERATING_CONF``, F1 threshold and AP50s."""
    digits = {"threshold@f1": 3, "ap50": 4, "ultralytics/mAP50": 4}
    body = [
        [
            r["run"],
            r["arm"],
            r["seed"],
            *(_fmt(r[m] if m in digits else _int(r[m]), digits.get(m), "-") for m in _RUN_METRICS),
        ]
        for r in runs.iter_rows(named=True)
    ]
    head = f"run | arm | seed | TP@{_OP} | FP@{_OP} | " + " | ".join(FP_KINDS)
    head += f" | missed@{_OP} | F1 threshold | AP50 | Ultralytics mAP50"
    return ["\n## Runs\n", *_table(head, body, "`-`: not measured in that run (no detection or no ground truth).")]


def _int(v: float | None) -> int | None:
    return None if v is None else int(v)


def diagnosis_markdown(stats: pl.DataFrame, runs: pl.DataFrame, meta: Mapping[str, Any]) -> str:
    """``diagnosis.md`` from ``diagnosis_stats`` and the per-run values (``diagnosis_runs``).

    ``meta``: ``name``, ``baseline``, ``level``, ``params`` (of the recording pass), ``out``, ``command``, ``missing``.
    """
    baseline, recall = meta["baseline"], stats["eq_recall"][0]
    out = [*_diagnosis_header(stats, meta), "\n## Findings\n"]
    if stats.height > 1:
        out += [f"- {s}" for s in findings(stats, runs, baseline, meta.get("level", LEVEL))]
    else:
        out.append("- Only one arm: no comparison.")
    scale = ", ".join(f"{r['arm']} {_tp_score(r)}" for r in stats.iter_rows(named=True))
    out += [
        f"\nMean TP score per arm: {scale}. Losses put scores on different scales, so counts at a fixed threshold "
        "compare different operating points; at equal recall every arm has found the same number of objects.\n",
        f"## Detections {_POINTS[_OP]}\n",
        *_kind_table(stats, _OP),
        f"\n## Detections at equal recall ({_fmt(recall, 2, 'n/a')})\n",
    ]
    if recall is None:
        out.append("No recall level that every run reaches.")
    else:
        out.append(
            f"Each run's highest threshold at which its recall (all classes pooled) reaches {recall:.2f}, the "
            f"`{baseline}` runs' mean recall at their F1-optimal thresholds (capped at what every run reaches).\n"
        )
        out += _kind_table(stats, "eq")
    out += [
        "\n## Detections at each run's F1-optimal threshold\n",
        "The threshold with the highest F1, all classes pooled (Ultralytics maximizes the F1 averaged over classes, "
        "so its numbers differ a little).\n",
        *_kind_table(stats, "f1"),
        *_scores_section(stats),
        *_diagnosis_runs(runs),
        "\n## Plots\n\n![FP kinds and score distributions](fp_scores.png)\n\n"
        "![precision and recall per epoch](pr_curves.png)\n",
    ]
    return "\n".join(out)


def diagnosis_runs(table: pl.DataFrame, baseline: str = BASELINE, order: Sequence[str] | None = None) -> pl.DataFrame:
    """One row per run (arm order, then seed) with its ``_RUN_METRICS`` and ``ap50_without_<kind>`` values."""
    runs = final_values(table, (*_RUN_METRICS, *(f"ap50_without_{k}" for k in FP_KINDS)))
    position = {a: i for i, a in enumerate(arm_order(runs["arm"].unique(maintain_order=True), order, baseline))}
    return runs.sort(pl.col("arm").replace_strict(position, return_dtype=pl.Int64), "seed")
