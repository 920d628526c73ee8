"""The text of the A/B report: ``summary.md`` / ``summary.csv`` and ``diagnosis.md`` / ``diagnosis.csv``.

Pure functions of the results table (no torch, Ultralytics or matplotlib): statistics from ``stats`` and polars
group-bys, one row per arm of ``<metric>_mean``, ``<metric>_std`` ...; every table ends with ``_LEGEND``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import polars as pl

from .evaluation import FP_KINDS, KINDS
from .protocol import BASELINE, LEVEL, LOSS_KEYS, METRICS, OPERATING_CONF, PRIMARY_METRIC, ULTRALYTICS_KEYS
from .results import FINAL_METRICS, RANK_KEYS, MissingMetricError, RunResult, check_metrics, final_values, table_of
from .stats import finite, mean_std, paired_difference, verdict

__all__ = ["NOTHING_LEARNED", "CONVERGED_MIN", "CONVERGED_RISE", "CONVERGENCE_EPOCHS", "arm_order"]
__all__ += ["summarize", "experiment_warnings", "source_warning", "resolution", "verdict_lines", "summary_csv_text"]
__all__ += ["summary_markdown", "common_recall", "diagnosis_stats", "diagnosis_runs", "findings"]
__all__ += ["diagnosis_csv_text", "diagnosis_markdown"]

#: Mean mAP50-95 below which an arm counts as having learned (nearly) nothing.
NOTHING_LEARNED = 0.01
#: Final mAP50-95 of the baseline below which the training counts as not converged.
CONVERGED_MIN = 0.10
#: Relative rise of the baseline's mAP50-95 over its last ``CONVERGENCE_EPOCHS`` epochs above which it still rises.
CONVERGED_RISE = 0.03
#: Epochs at the end of the curves over which the convergence gain is measured.
CONVERGENCE_EPOCHS = 3
_P = PRIMARY_METRIC
_GAIN = f"{_P}_gain_last{CONVERGENCE_EPOCHS}"
_LEGEND = "`-`: not measured or undefined; `(n=1)`: one seed, no std; n/a: no value or interval, why in the cell."
_NO_INTERVAL = "n=1, no interval"
_Window = tuple[tuple[int, float], tuple[int, float]]


def arm_order(found: Iterable[str], order: Sequence[str] | None = None, baseline: str = BASELINE) -> list[str]:
    """The arms in report order: ``order``, the baseline, then as found (each once)."""
    found = list(dict.fromkeys(found))
    names = [a for a in (order or []) if a in found]
    return names + sorted((a for a in found if a not in names), key=lambda a: a != baseline)  # stable


# ------------------------------------------------------------------------------------------------ convergence
def _gain(window: _Window | None) -> tuple[float | None, float | None, int | None]:
    if window is None:
        return None, None, None
    (e0, v0), (e_last, v_last) = window
    return v_last - v0, ((v_last - v0) / v0 if v0 > 0 else None), e_last - e0


def _window(epoch: Sequence[int], values: Sequence[Any], epochs: int) -> _Window | None:
    """``((epoch, value) the gain is measured from, (last epoch, value))``; None below 2 finite values."""
    pts = sorted((int(e), float(v)) for e, v in zip(epoch, values) if finite([v]))
    if len(pts) < 2:
        return None
    earlier = [p for p in pts if p[0] <= pts[-1][0] - epochs]
    return (earlier[-1] if earlier else pts[0]), pts[-1]


def _windows(table: pl.DataFrame) -> dict[str, _Window | None]:
    """Each run's convergence window of the primary metric's per-epoch curve."""
    curve = table.filter(pl.col("epoch").is_not_null() & (pl.col("metric") == ULTRALYTICS_KEYS[_P]))
    by_run = curve.group_by("run").agg(pl.col("epoch"), pl.col("value"))
    out: dict[str, _Window | None] = dict.fromkeys(table["run"].unique().to_list())
    return out | {r: _window(e, v, CONVERGENCE_EPOCHS) for r, e, v in by_run.iter_rows()}


# ------------------------------------------------------------------------------------------------ summary rows
def _by_seed(runs: pl.DataFrame, column: str) -> dict[int, Any]:
    return dict(zip(runs["seed"], runs[column]))


def _diff_columns(key: str, d: Any) -> dict[str, Any]:
    return {key: d and d.mean, f"{key}_lo": d and d.lo, f"{key}_hi": d and d.hi}


def _arm_row(arm: str, runs: pl.DataFrame, base: pl.DataFrame | None, stats: Mapping, windows: Mapping, level: float):
    """One arm's ``summary.csv`` columns (``base``: the baseline's runs; None for the baseline itself)."""

    def ms(key: str) -> dict[str, Any]:
        col = key.replace("rank/", "rank_")
        return dict(zip((f"{col}_mean", f"{col}_std"), stats.get((arm, key), (None, None))))

    def paired(of: Any) -> Any:
        return None if base is None else paired_difference(of(runs), of(base), level)

    row: dict[str, Any] = {"arm": arm, "loss": arm, "overrides": "", "n_seeds": runs.height}
    row["seeds"], diffs = runs["seed"].to_list(), {}
    for m in METRICS:
        d = diffs[m] = paired(lambda rs, m=m: _by_seed(rs, m))
        row |= ms(m) | _diff_columns(f"{m}_diff", d) | {f"{m}_n_pairs": d.n if d else 0}
        row[f"{m}_verdict"] = verdict(d) if d else "baseline"
    row["verdict"] = row[f"{_P}_verdict"]
    for k in ("train_time_s", "wall_time_s", "epochs_done", *LOSS_KEYS, *(f"rank/{k}" for k in RANK_KEYS)):
        row |= ms(k)
    gains = [_gain(windows[r]) for r in runs["run"]]
    row["warning"] = ""
    for key, i in ((_GAIN, 0), (f"{_GAIN}_rel", 1)):
        row |= dict(zip((f"{key}_mean", f"{key}_std"), mean_std(g[i] for g in gains)))
    row["gain_epochs"] = min((g[2] for g in gains if g[2] is not None), default=None)
    row[f"{_P}_diff_halfwidth"] = diffs[_P] and diffs[_P].half_width
    for when, end in (("earlier", 0), ("last", 1)):
        d = paired(lambda rs, e=end: {s: w[e][1] if (w := windows[r]) else None for r, s in zip(rs["run"], rs["seed"])})
        row |= _diff_columns(f"{_P}_curve_diff_{when}", d)
    return row


def summarize(
    results: Iterable[RunResult],
    baseline: str = BASELINE,
    order: Sequence[str] | None = None,
    level: float = LEVEL,
    table: pl.DataFrame | None = None,
) -> list[dict[str, Any]]:
    """One row per arm (``arm_order``): its ``summary.csv`` columns, and ``warnings`` (the experiment's, every row).

    ``table``: the results table (default ``table_of(results)``); ``results`` give the labels and code versions.

    Raises:
        MissingMetricError: a run of ``table`` without a row for one of ``FINAL_METRICS``.
    """
    results = list(results)
    table = table_of(results) if table is None else table
    final = final_values(table, FINAL_METRICS).sort("seed")
    agg = table.filter(pl.col("epoch").is_null()).group_by("arm", "metric")
    stats = agg.agg(pl.col("value").mean(), pl.when(pl.col("value").count() > 1).then(pl.col("value").std()).alias("s"))
    stats = {(a, k): (m, s) for a, k, m, s in stats.iter_rows()}
    windows, base = _windows(table), final.filter(pl.col("arm") == baseline)
    labels = {r.arm: (r.loss, _pairs(r.overrides, "=", " ")) for r in sorted(results, key=lambda r: -r.seed)}
    rows = []
    for arm in arm_order(table["arm"].unique(maintain_order=True), order, baseline):
        runs = final.filter(pl.col("arm") == arm)
        row = _arm_row(arm, runs, None if arm == baseline else base, stats, windows, level)
        row["loss"], row["overrides"] = labels.get(arm, (arm, ""))
        rows.append(row)
    warnings = (*experiment_warnings(rows, baseline), *filter(None, [source_warning(results)]))
    return [r | {"warning": "; ".join(warnings), "warnings": warnings} for r in rows]


def experiment_warnings(rows: Sequence[Mapping[str, Any]], baseline: str = BASELINE) -> list[str]:
    """Plain-text warnings: ``nothing learned`` (alone), else ``baseline ... near 0`` and ``not converged``."""
    means = {r["arm"]: r[f"{_P}_mean"] for r in rows if r[f"{_P}_mean"] is not None}
    if means and all(v < NOTHING_LEARNED for v in means.values()):
        top = max(means, key=lambda a: means[a])
        return [
            f"nothing learned: every arm's {_P} is below {NOTHING_LEARNED:g} (highest: {top} {means[top]:.4f}); the "
            "comparison says nothing (train longer, or check the data)"
        ]
    out, reasons, base = [], [], means.get(baseline)
    if base is not None and base < NOTHING_LEARNED:
        out.append(
            f"baseline `{baseline}` near 0: its {_P} {base:.4f} is below {NOTHING_LEARNED:g}, so a difference "
            "says only that the other arm learned something"
        )
    elif base is not None and base < CONVERGED_MIN:
        reasons.append(f"its mean {_P} {base:.4f} is below {CONVERGED_MIN:g}")
    b = next((r for r in rows if r["arm"] == baseline), {})
    if (rise := b.get(f"{_GAIN}_rel_mean")) is not None and rise > CONVERGED_RISE:
        k = b.get("gain_epochs")
        reasons.append(
            f"it still rose {rise:+.1%} over its last {k} epoch{'s' * (k != 1)}, more than {CONVERGED_RISE:.0%}"
        )
    why = "; ".join(reasons)
    return out + [f"not converged: conclusions are about an early stage of training; `{baseline}`: {why}"] * bool(why)


def source_warning(results: Sequence[RunResult]) -> str | None:
    """A warning when the runs ran different yolo_vfl code (``versions["yolo_vfl_source"]``; unrecorded: ignored)."""
    by_source: dict[str, list[str]] = {}
    for r in results:
        if source := (r.versions or {}).get("yolo_vfl_source"):
            by_source.setdefault(str(source), []).append(r.run)
    if len(by_source) < 2:
        return None
    parts = "; ".join(
        f"{h}: {len(rs)} run{'s' * (len(rs) != 1)} ({', '.join(rs[:3])}{', ...' * (len(rs) > 3)})"
        for h, rs in by_source.items()
    )
    return (
        f"code changed during the experiment: the runs ran {len(by_source)} different yolo_vfl sources ({parts}); a "
        "difference may come from the code (delete the older runs to retrain them)"
    )


def resolution(rows: Sequence[Mapping[str, Any]], level: float = LEVEL) -> str | None:
    """The smallest resolvable difference of the primary metric (the paired half-widths), as text; None: no arm."""
    pairs = [(r[f"{_P}_n_pairs"], r[f"{_P}_diff_halfwidth"]) for r in rows if r["verdict"] != "baseline"]
    pairs = [(n, w) for n, w in pairs if n > 0]
    if not (widths := [w for _, w in pairs if w is not None]):
        return f"with 1 paired seed there is no interval: no difference of {_P} can be resolved" if pairs else None
    ns = sorted({n for n, w in pairs if w is not None})
    lo, hi = f"{min(widths):.4f}", f"{max(widths):.4f}"
    text = (
        f"with {ns[0]}{f'-{ns[-1]}' if len(ns) > 1 else ''} paired seeds the paired {round(100 * level)}% intervals of "
        f"{_P} are {f'±{lo}' if lo == hi else f'±{lo} to ±{hi}'}: differences smaller than that cannot be seen"
    )
    return text + (" (arms with 1 paired seed have no interval)" if len(widths) < len(pairs) else "")


def verdict_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the runner prints: ``  vfl            mAP50-95 0.4523  better`` per arm, then each warning."""
    out = [f"  {r['arm']:<14} {_P} {_fmt(r[f'{_P}_mean']) or '-':<6}  {r['verdict']}" for r in rows]
    return out + [f"  Warning: {w}." for w in (rows[0]["warnings"] if rows else ())]


# ------------------------------------------------------------------------------------------------ cells and tables
def _fmt(v: Any, digits: int | None = 4, none: str = "") -> str:
    """A float with ``digits`` decimals (None: as text), other values as text; ``none`` for None and NaN/inf."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return f"{v:.{digits}f}" if isinstance(v, float) and digits is not None else str(v)


def _mean(row: Mapping[str, Any], key: str) -> Any:
    """``<key>_mean`` of a row (MissingMetricError: not a column)."""
    if f"{key}_mean" not in row:
        raise MissingMetricError(key, None, (k.rsplit("_", 1)[0] for k in row))
    return row[f"{key}_mean"]


def _stat(row: Mapping[str, Any], key: str, digits: int = 4, signed: bool = False, percent: bool = False) -> str:
    """``mean ± std`` of ``key`` in a row; one value (no std) as itself with ``(n=1)``; ``-`` when there is none."""
    mean, std = _mean(row, key), row[f"{key}_std"]
    if mean is None or not math.isfinite(mean):
        return "-"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    text = f"{mean * scale:{'+' if signed else ''}.{digits}f}{unit}"
    return f"{text} (n=1)" if std is None or not math.isfinite(std) else f"{text} ± {std * scale:.{digits}f}{unit}"


def _diff_text(mean: float | None, lo: float | None, hi: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:+.4f} ({_NO_INTERVAL})" if lo is None or hi is None else f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def _diff(row: Mapping[str, Any], key: str) -> str:
    """The paired difference ``key`` of a summary row, ``(baseline)`` for the baseline."""
    return "(baseline)" if row["verdict"] == "baseline" else _diff_text(row[key], row[f"{key}_lo"], row[f"{key}_hi"])


def _duration(seconds: Any) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _pairs(d: Mapping[str, Any] | None, sep: str = " ", join: str = ", ") -> str:
    """``k v, k v`` (or ``k=v k=v``) of a mapping; empty for None."""
    return join.join(f"{k}{sep}{v}" for k, v in (d or {}).items())


def _csv(rows: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None) -> str:
    """Every key of the rows (first-seen order) but ``warnings``, then the ``extra`` columns (same in every line)."""
    header = [*dict.fromkeys(k for row in rows for k in row if k != "warnings"), *(extra or {})]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        values = [{**row, **(extra or {})}.get(c) for c in header]
        writer.writerow([" ".join(map(str, v)) if isinstance(v, (list, tuple)) else _fmt(v, 6) for v in values])
    return buf.getvalue()


def _table(head: str, body: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table (``head``: ``a | b``), then the fixed legend of the cell markers."""
    rows = [f"| {' | '.join(str(c) for c in row)} |" for row in body]
    return [f"| {head} |", "|" + " --- |" * (head.count(" | ") + 1), *rows, "", _LEGEND]


# ------------------------------------------------------------------------------------------------ summary.md
def summary_csv_text(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None = None) -> str:
    """``summary.csv``: one line per arm, ``summarize``'s columns plus ``versions`` and ``command``."""
    meta = meta or {}
    return _csv(rows, {"versions": _pairs(meta.get("versions")), "command": " ; ".join(meta.get("commands") or [])})


def _warnings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"> **Warning: {w}.**\n" for w in (rows[0]["warnings"] if rows else ())]


def _header(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> list[str]:
    """The title, the warnings, the experiment's settings, start model and missing runs."""
    out = [f"# A/B experiment: {meta.get('name', 'ab')}", "", *_warnings(rows)]
    out += [f"- Command: `{cmd}`" for cmd in meta.get("commands") or []]
    out += [f"- Versions: {_pairs(meta['versions'])}"] if meta.get("versions") else []
    for key, label in (("data", "Data"), ("train", "Shared training arguments"), ("seeds", "Seeds")):
        if (value := meta.get(key)) not in (None, "", {}):
            out.append(f"- {label}: `{_pairs(value, '=', ' ') if isinstance(value, Mapping) else value}`")
    out.append(f"- Baseline arm: `{meta.get('baseline', BASELINE)}`; every arm x seed trains alike (deterministic).")
    if isinstance(pre := meta.get("pretrain"), Mapping):
        m, sha = pre.get("metrics") or {}, f"weights sha256 `{str(pre['sha256'])[:12]}`; " if pre.get("sha256") else ""
        out.append(
            f"- Start model: the project-made pretrained checkpoint `{pre.get('fingerprint')}` (stock BCE; {sha}"
            f"mAP50-95 {_fmt(m.get('mAP50-95')) or 'n/a'}, mAP50 {_fmt(m.get('mAP50')) or 'n/a'} on its own val split; "
            f"built in {_duration(pre.get('train_time_s'))}): every arm fine-tunes it."
        )
    return out + ([f"- **Missing runs (not finished)**: {', '.join(meta['missing'])}."] if meta.get("missing") else [])


def _accuracy(rows: Sequence[Mapping[str, Any]], baseline: str, level: int) -> list[str]:
    """The accuracy table and the paired differences to the baseline."""
    accuracy = [[r["arm"], r["loss"] or "-", r["overrides"] or "(none)", r["n_seeds"]] for r in rows]
    diffs = [
        [r["arm"], r[f"{_P}_n_pairs"] if r["verdict"] != "baseline" else "(baseline)", _diff(r, f"{_P}_diff")]
        + [f"**{r['verdict']}**", _diff(r, "mAP50_diff"), r["mAP50_verdict"]]
        + [_diff(r, f"{m}_diff") for m in ("precision", "recall")]
        for r in rows
    ]
    head = f"arm | pairs | Δ{_P} [{level}% CI] | verdict | ΔmAP50 [{level}% CI] | verdict (mAP50) "
    return [
        "\n## Accuracy\n",
        "Final validation of each run's `best.pt`; mean ± sample std over seeds.\n",
        *_table(
            "arm | loss | overrides | seeds | " + " | ".join(METRICS),
            [a + [_stat(r, m) for m in METRICS] for a, r in zip(accuracy, rows)],
        ),
        f"\n## Difference to `{baseline}`\n",
        *_warnings(rows),
        f"Paired by seed (arm − {baseline}), mean and {level}% Student-t interval; better or worse only when the "
        f"interval of {_P} excludes zero (it needs ≥ 2 paired seeds).\n",
        *_table(head + "| Δprecision [CI] | Δrecall [CI]", diffs),
    ]


def _half_width(row: Mapping[str, Any]) -> str:
    if row["verdict"] == "baseline":
        return "(baseline)"
    if (w := row[f"{_P}_diff_halfwidth"]) is None:
        return "n/a (1 paired seed)" if row[f"{_P}_n_pairs"] == 1 else "n/a (no paired seed)"
    return f"±{w:.4f}"


def _convergence_section(rows: Sequence[Mapping[str, Any]], baseline: str, level: int) -> list[str]:
    """Gains over the last epochs, resolution, and the paired curve differences."""
    conv = [
        [r["arm"], _stat(r, _P), _fmt(r["gain_epochs"], none="-"), _stat(r, _GAIN, signed=True)]
        + [_stat(r, f"{_GAIN}_rel", 1, signed=True, percent=True), _half_width(r)]
        + [_diff(r, f"{_P}_curve_diff_{when}") for when in ("earlier", "last")]
        for r in rows
    ]
    res, k, vs = resolution(rows, level / 100), CONVERGENCE_EPOCHS, f"Δ vs {baseline}"
    return [
        "\n## Convergence and resolution\n",
        f"Gain of {_P} over each run's last {k} epochs (`curves.png`): still rising is not converged. Resolution: the "
        f"half-width of the paired {level}% interval. Last two columns: paired differences {k} epochs before the end "
        "and at the end.\n",
        *([f"**Resolution: {res}.**\n"] if res else []),
        *_table(
            f"arm | final {_P} | epochs spanned | gain | relative gain | ± {level}% CI vs {baseline} "
            f"| {vs}, {k} epochs earlier [CI] | {vs}, last epoch [CI]",
            conv,
        ),
    ]


def _ranking_and_times(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Ranking quality, training time and final losses per arm."""
    times = [
        [r["arm"], _fmt(r["epochs_done_mean"], 1) or "-", _duration(r["train_time_s_mean"])]
        + [_duration(r["wall_time_s_mean"]), *(_stat(r, k) for k in LOSS_KEYS)]
        for r in rows
    ]
    rank = [[r["arm"], *(_stat(r, f"rank_{k}", 3) for k in RANK_KEYS)] for r in rows]
    return [
        "\n## Ranking quality (confidence vs IoU)\n",
        "Correlation of each detection's confidence with its IoU to the best same-class ground truth (GFL, arXiv "
        '2006.04388); "IoU>0": detections overlapping one. `ranking.png`.\n',
        *_table("arm | Pearson | Spearman | Pearson (IoU>0) | Spearman (IoU>0)", rank),
        "\n## Training time and final losses\n",
        "Epoch times summed; wall time with validation. `cls_loss` is each arm's own loss: not comparable.\n",
        *_table("arm | epochs | train time | wall time | box_loss | cls_loss | dfl_loss", times),
    ]


def _runs_section(rows: Sequence[Mapping[str, Any]], table: pl.DataFrame) -> list[str]:
    """One line per run: its final metrics, training time and correlations."""
    final = final_values(table, (*METRICS, "train_time_s", "rank/pearson", "rank/spearman")).sort("seed")
    runs = [
        [x["run"], x["arm"], x["seed"], *(_fmt(x[m], 4, "-") for m in METRICS), _duration(x["train_time_s"])]
        + [_fmt(x[f"rank/{k}"], 3, "-") for k in ("pearson", "spearman")]
        for r in rows
        for x in final.filter(pl.col("arm") == r["arm"]).iter_rows(named=True)
    ]
    return [
        "\n## Runs\n",
        *_table(f"run | arm | seed | {' | '.join(METRICS)} | train time | Pearson | Spearman", runs),
        "\n## Curves\n\n![mAP50-95 per epoch](curves.png)\n\n![confidence vs IoU](ranking.png)\n",
    ]


def summary_markdown(
    rows: Sequence[Mapping[str, Any]], table: pl.DataFrame, meta: Mapping[str, Any] | None = None
) -> str:
    """``summary.md`` from ``summarize`` rows and the results table (the Runs table).

    ``meta``: ``name``, ``baseline``, ``commands``, ``versions``, ``data``, ``train``, ``seeds``, ``pretrain``,
    ``missing``, ``level``.
    """
    meta = meta or {}
    baseline, level = meta.get("baseline", BASELINE), int(round(100 * meta.get("level", LEVEL)))
    out = _header(rows, meta) + _accuracy(rows, baseline, level) + _convergence_section(rows, baseline, level)
    return "\n".join(out + _ranking_and_times(rows) + _runs_section(rows, table))


# ------------------------------------------------------------------------------------------------ diagnosis
#: The fixed operating point of the diagnosis, as its metric names spell it (``tp@0.25``).
_OP = f"{OPERATING_CONF:g}"
#: The operating points of the diagnosis tables: key in the metric names, heading.
_POINTS = {_OP: f"at conf ≥ {_OP}", "eq": "at equal recall", "f1": "at each run's F1-optimal threshold"}
#: The per-run metrics of the diagnosis' Runs table.
_RUN_METRICS = (*(f"{k}@{_OP}" for k in ("tp", "fp", *FP_KINDS, "missed")), "threshold@f1", "ap50", "ultralytics/mAP50")
_DIAG_METRICS = (
    "n_images", "n_gt", "ap50", "ap50_tp_only", f"tp_iou@{_OP}", "tp_iou@f1", "threshold@f1", "recall@f1", "recall_max",
    *(f"{k}@{p}" for p in (_OP, "f1") for k in (*KINDS, "fp", "missed", "precision")),
    *(f"score_{k}" for k in KINDS), *(f"ap50_{c}_{k}" for k in FP_KINDS for c in ("cost", "without")), *_RUN_METRICS,
)  # fmt: skip


def common_recall(table: pl.DataFrame, baseline: str = BASELINE) -> float | None:
    """The baseline runs' (else all runs') mean ``recall@f1``, floored to 0.01 and capped at every run's ``recall_max``.

    None below 0.01.
    """
    runs = final_values(table, ("recall@f1", "recall_max"))
    base = runs.filter(pl.col("arm") == baseline)
    if (mean := (base if base.height else runs)["recall@f1"].mean()) is None:
        return None
    level = min(math.floor(mean * 100 + 1e-9) / 100, runs["recall_max"].min())
    return round(level, 2) if level >= 0.01 else None


def diagnosis_stats(
    table: pl.DataFrame, baseline: str = BASELINE, order: Sequence[str] | None = None, recall: float | None = None
) -> pl.DataFrame:
    """One row per arm (the ``diagnosis.csv`` columns): ``<metric>_mean`` / ``<metric>_std`` over seeds.

    The recall grid enters only at ``recall`` (default ``common_recall``), as the operating point ``eq``.

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
    long = stats.unpivot(index=["arm", "metric"], variable_name="stat")
    wide = long.with_columns(column=pl.col("metric") + "_" + pl.col("stat")).pivot(
        on="column", index="arm", values="value", maintain_order=True
    )
    seeds = final.group_by("arm").agg(n_seeds=pl.col("seed").n_unique(), seeds=pl.col("seed").unique().sort())
    arms = pl.DataFrame({"arm": arm_order(final["arm"].unique(maintain_order=True), order, baseline)})
    columns = [f"{m}_{s}" for m in rows["metric"].unique(maintain_order=True) for s in ("mean", "std")]
    out = arms.join(seeds, on="arm", how="left", maintain_order="left").join(wide, on="arm", maintain_order="left")
    return out.with_columns(eq_recall=pl.lit(recall, pl.Float64)).select(
        "arm", "n_seeds", "seeds", "eq_recall", *columns
    )


def _growth_text(row: Mapping[str, Any], base: Mapping[str, Any], t: str) -> str:
    """``FPs per run a → b (precision p → q); by kind ...: **kind** grows most`` at operating point ``t``."""
    deltas = {k: (_mean(row, f"{k}@{t}") or 0.0) - (_mean(base, f"{k}@{t}") or 0.0) for k in FP_KINDS}
    by_kind = ", ".join(f"{k} {d:+.1f}" for k, d in sorted(deltas.items(), key=lambda kv: -kv[1]))
    top = max(deltas, key=lambda k: deltas[k])
    fp, p = (
        " → ".join(_fmt(_mean(r, f"{k}@{t}"), n, "n/a") for r in (base, row)) for k, n in (("fp", 1), ("precision", 3))
    )
    grows = f"**{top}** grows most" if deltas[top] > 0 else "no FP kind grows"
    return f"FPs per run {fp} (precision {p}); by kind {by_kind}: {grows}"


def _ap50_text(runs: pl.DataFrame, arm: str, baseline: str, level: float) -> str:
    """The AP50 gap to the baseline paired by seed, and which FP kind, removed from both arms, narrows it most."""

    def gap(metric: str) -> Any:
        of = {a: _by_seed(runs.filter(pl.col("arm") == a), metric) for a in (arm, baseline)}
        return paired_difference(of[arm], of[baseline], level)

    if (g := gap("ap50")).mean is None:
        return "AP50: no seed with a value in both arms"
    text = f"AP50 gap paired by seed {_diff_text(g.mean, g.lo, g.hi)}"
    if not (gaps := {k: d.mean for k in FP_KINDS if (d := gap(f"ap50_without_{k}")).mean is not None}):
        return text
    text += "; with one FP kind removed from both arms: " + ", ".join(f"{k} {v:+.4f}" for k, v in gaps.items())
    best = min(gaps, key=lambda k: abs(gaps[k]))
    if abs(gaps[best]) < abs(g.mean):
        return text + f": removing **{best}** narrows it most (|gap| smaller by {abs(g.mean) - abs(gaps[best]):.4f})"
    return text + ": removing no single kind narrows it"


def findings(stats: pl.DataFrame, runs: pl.DataFrame, baseline: str = BASELINE, level: float = LEVEL) -> list[str]:
    """Per non-baseline arm, a markdown bullet body: the FP kind that grows most, and its AP50 gap.

    ``stats``: ``diagnosis_stats``; ``runs``: ``diagnosis_runs``.
    """
    rows = {r["arm"]: r for r in stats.iter_rows(named=True)}
    if baseline not in rows:
        return [f"No baseline arm `{baseline}` among the diagnosed runs: no comparison."]
    base, recall, out = rows[baseline], rows[baseline]["eq_recall"], []
    views = {"eq": f"at equal recall {recall:.2f} (≈{_fmt(base.get('tp@eq_mean'), 0)} TPs per run)" if recall else None}
    views |= {"f1": _POINTS["f1"], _OP: _POINTS[_OP]}
    for arm, row in rows.items():
        if arm != baseline:
            parts = [f"{label}: {_growth_text(row, base, t)}" for t, label in views.items() if label]
            parts.append(_ap50_text(runs, arm, baseline, level))
            out.append(f"`{arm}` vs `{baseline}`:\n" + "\n".join(f"  - {p}" for p in parts))
    return out


def diagnosis_csv_text(stats: pl.DataFrame) -> str:
    """``diagnosis.csv``: one line per arm, every column of ``diagnosis_stats``."""
    return _csv(list(stats.iter_rows(named=True)))


def _kind_table(stats: pl.DataFrame, t: str) -> list[str]:
    """TP and FP counts per kind and the precision at operating point ``t``, per arm."""
    th = t != _OP
    body = [
        [r["arm"], r["n_seeds"], *([_stat(r, f"threshold@{t}", 3)] if th else [])]
        + [*(_stat(r, f"{k}@{t}", 1) for k in (*KINDS, "fp", "missed")), _stat(r, f"precision@{t}", 3)]
        for r in stats.iter_rows(named=True)
    ]
    head = " | ".join(["arm", "seeds", *(["threshold"] if th else []), "TP", *FP_KINDS, "FP", "missed GT"])
    return _table(head + " | precision", body)


def _diagnosis_header(stats: pl.DataFrame, meta: Mapping[str, Any]) -> list[str]:
    """The title and how the detections were made and classified."""
    p, first = meta.get("params") or {}, next(stats.iter_rows(named=True))
    na = "n/a (not recorded)"
    nms = ", ".join(f"{k} {_fmt(p.get(k), None, na)}" for k in ("imgsz", "conf", "iou", "max_det"))
    out = [f"# Diagnosis: {meta.get('name', 'ab')}", ""]
    out += [f"- {label}: `{meta[k]}`" for k, label in (("out", "Experiment"), ("command", "Command")) if meta.get(k)]
    n = (_fmt(first[f"{k}_mean"], 0, na) for k in ("n_images", "n_gt"))
    out += [
        "- Detections of each run's `best.pt` as Ultralytics validation scores them ({} val images, {} ground-truth "
        "boxes; {}; multi-label NMS).".format(*n, nms),
        "- In descending confidence: **tp** (IoU ≥ 0.5, unmatched same-class GT), **duplicate** (same-class GT "
        "already matched), **wrong_class** (IoU ≥ 0.5, other class), **localization** (best IoU in [0.1, 0.5)), "
        "**background**.",
        f"- Counts per run, mean ± sample std over seeds. Baseline arm: `{meta['baseline']}`.",
    ]
    return out + ([f"- Not diagnosed (no finished run): {', '.join(meta['missing'])}."] if meta.get("missing") else [])


def _scores_section(stats: pl.DataFrame) -> list[str]:
    """Scores, TP IoUs and AP50 costs per kind, per arm."""
    keys = [*(f"score_{k}" for k in KINDS), f"tp_iou@{_OP}", "tp_iou@f1"]
    keys4 = ["ap50", *(f"ap50_cost_{k}" for k in FP_KINDS), "ap50_tp_only"]
    body = [
        [r["arm"], *(_stat(r, k, 3) for k in keys), *(_stat(r, k) for k in keys4)] for r in stats.iter_rows(named=True)
    ]
    head = " | ".join(["arm", *(f"score {'TP' if k == 'tp' else k}" for k in KINDS), f"TP IoU@{_OP}", "TP IoU@F1"])
    head += " | AP50 | " + " | ".join(f"cost {k}" for k in FP_KINDS) + " | AP50 TP only"
    return [
        "\n## Scores and AP50 cost per kind\n",
        "Mean score per kind; mean TP IoU. AP50 as Ultralytics' `compute_ap`; cost of a FP kind: the AP50 gained "
        "without it (TIDE); TP only: every FP removed.\n",
        *_table(head, body),
    ]


def _diagnosis_runs(runs: pl.DataFrame) -> list[str]:
    """One line per run: its counts at ``OPERATING_CONF``, F1 threshold and AP50s."""
    digits = {"threshold@f1": 3, "ap50": 4, "ultralytics/mAP50": 4}

    def cell(v: float | None, m: str) -> str:
        return _fmt(v if m in digits or v is None else int(v), digits.get(m), "-")

    body = [[r["run"], r["arm"], r["seed"], *(cell(r[m], m) for m in _RUN_METRICS)] for r in runs.iter_rows(named=True)]
    head = f"run | arm | seed | TP@{_OP} | FP@{_OP} | {' | '.join(FP_KINDS)} | missed@{_OP} | F1 threshold | AP50"
    return ["\n## Runs\n", *_table(head + " | Ultralytics mAP50", body)]


def diagnosis_markdown(stats: pl.DataFrame, runs: pl.DataFrame, meta: Mapping[str, Any]) -> str:
    """``diagnosis.md`` from ``diagnosis_stats`` and ``diagnosis_runs``.

    ``meta``: ``name``, ``baseline``, ``level``, ``params`` (of the recording pass), ``out``, ``command``, ``missing``.
    """
    baseline, recall = meta["baseline"], stats["eq_recall"][0]
    out = [*_diagnosis_header(stats, meta), "\n## Findings\n"]
    out += [f"- {s}" for s in findings(stats, runs, baseline, meta.get("level", LEVEL))] if stats.height > 1 else []
    out += [] if stats.height > 1 else ["- Only one arm: no comparison."]
    tp = {r["arm"]: _mean(r, "score_tp") for r in stats.iter_rows(named=True)}
    scale = ", ".join(f"{a} {'n/a (no true positives)' if s is None else f'{s:.3f}'}" for a, s in tp.items())
    out += [
        f"\nMean TP score per arm: {scale}. Scores differ in scale across losses; at equal recall every arm has found "
        "the same number of objects.\n",
        f"## Detections {_POINTS[_OP]}\n",
        *_kind_table(stats, _OP),
        f"\n## Detections at equal recall ({_fmt(recall, 2, 'n/a')})\n",
        *(["No recall level that every run reaches."] if recall is None else []),
        *(
            []
            if recall is None
            else [f"Each run's highest threshold reaching recall {recall:.2f}.\n", *_kind_table(stats, "eq")]
        ),
        "\n## Detections at each run's F1-optimal threshold\n",
        "The threshold with the highest F1, all classes pooled.\n",
        *_kind_table(stats, "f1"),
        *_scores_section(stats),
        *_diagnosis_runs(runs),
        "\n## Plots\n\n![FP kinds and scores](fp_scores.png)\n\n![precision and recall per epoch](pr_curves.png)\n",
    ]
    return "\n".join(out)


def diagnosis_runs(table: pl.DataFrame, baseline: str = BASELINE, order: Sequence[str] | None = None) -> pl.DataFrame:
    """One row per run (arm order, then seed) with its ``_RUN_METRICS`` and ``ap50_without_<kind>`` values."""
    runs = final_values(table, (*_RUN_METRICS, *(f"ap50_without_{k}" for k in FP_KINDS)))
    position = {a: i for i, a in enumerate(arm_order(runs["arm"].unique(maintain_order=True), order, baseline))}
    return runs.sort(pl.col("arm").replace_strict(position, return_dtype=pl.Int64), "seed")
