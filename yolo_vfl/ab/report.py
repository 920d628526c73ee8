"""The text of the A/B report: ``summary.md`` / ``summary.csv`` and ``diagnosis.md`` / ``diagnosis.csv``.

Pure functions of the results table (no torch, Ultralytics or matplotlib): the runs' final values pivoted wide with
polars, one row per arm of ``<metric>_mean``, ``<metric>_std`` ..., paired differences from ``stats``; each markdown
table is a section of ``_TEXT``'s prose, the table and ``_LEGEND``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import polars as pl

from .evaluation import FP_KINDS, KINDS
from .protocol import BASELINE, LEVEL, LOSS_KEYS, METRICS, OPERATING_CONF, PRIMARY_METRIC, ULTRALYTICS_KEYS
from .results import FINAL_METRICS, RANK_KEYS, MissingMetricError, RunResult, check_metrics, final_values, table_of
from .stats import PairedDifference, paired_difference, verdict

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
#: The fixed operating point of the diagnosis, as its metric names spell it (``tp@0.25``).
_OP = f"{OPERATING_CONF:g}"
#: The operating points of the diagnosis: key in the metric names, heading.
_POINTS = {_OP: f"at conf ≥ {_OP}", "eq": "at equal recall", "f1": "at each run's F1-optimal threshold"}
#: The per-run metrics of the diagnosis' Runs table.
_RUN_METRICS = (*(f"{k}@{_OP}" for k in ("tp", "fp", *FP_KINDS, "missed")), "threshold@f1", "ap50", "ultralytics/mAP50")
_DIAG_METRICS = (
    "n_images", "n_gt", "ap50", "ap50_tp_only", f"tp_iou@{_OP}", "tp_iou@f1", "threshold@f1", "recall@f1", "recall_max",
    *(f"{k}@{p}" for p in (_OP, "f1") for k in (*KINDS, "fp", "missed", "precision")),
    *(f"score_{k}" for k in KINDS), *(f"ap50_{c}_{k}" for k in FP_KINDS for c in ("cost", "without")), *_RUN_METRICS,
)  # fmt: skip
_LEGEND = "`-`: not measured or undefined; `(n=1)`: one seed, no std; n/a: no value or interval, why in the cell."
#: The prose of the report's sections; ``{p}``: the primary metric, ``{b}``: baseline, ``{level}``, ``{k}``: epochs.
_TEXT = {
    "accuracy": "Final validation of each run's `best.pt`; mean ± sample std over seeds.",
    "diff": "Paired by seed (arm − {b}), mean and {level}% Student-t interval; better or worse only when the interval "
    "of {p} excludes zero (it needs ≥ 2 paired seeds).",
    "convergence": "Gain of {p} over each run's last {k} epochs (`curves.png`): still rising is not converged. "
    "Resolution: the half-width of the paired {level}% interval. Last two columns: paired differences {k} epochs "
    "before the end and at the end.",
    "ranking": "Correlation of each detection's confidence with its IoU to the best same-class ground truth (GFL, "
    'arXiv 2006.04388); "IoU>0": detections overlapping one. `ranking.png`.',
    "times": "Epoch times summed; wall time with validation. `cls_loss` is each arm's own loss: not comparable.",
    "detections": "- Detections of each run's `best.pt` as Ultralytics validation scores them ({} val images, {} "
    "ground-truth boxes; {}; {}).\n- In descending confidence: **tp** (IoU ≥ 0.5, unmatched same-class "
    "GT), **duplicate** (same-class GT already matched), **wrong_class** (IoU ≥ 0.5, other class), **localization** "
    "(best IoU in [0.1, 0.5)), **background**.\n- Counts per run, mean ± sample std over seeds. Baseline arm: `{}`.",
    "scale": "Scores differ in scale across losses; at equal recall every arm has found the same number of objects.",
    "eq": "Each run's highest threshold reaching recall {:.2f}.",
    "f1": "The threshold with the highest F1, all classes pooled.",
    "scores": "Mean score per kind; mean TP IoU. AP50 as Ultralytics' `compute_ap`; cost of a FP kind: the AP50 gained "
    "without it (TIDE); TP only: every FP removed.",
}


def arm_order(found: Iterable[str], order: Sequence[str] | None = None, baseline: str = BASELINE) -> list[str]:
    """The arms in report order: ``order``, the baseline, then as found (each once)."""
    found = list(dict.fromkeys(found))
    names = [a for a in (order or []) if a in found]
    return names + sorted((a for a in found if a not in names), key=lambda a: a != baseline)  # stable


# ------------------------------------------------------------------------------------------------ summary rows
def _convergence(table: pl.DataFrame) -> pl.DataFrame:
    """Per run with 2+ finite values of the primary metric per epoch: its gain over the last ``CONVERGENCE_EPOCHS``.

    From the latest epoch that far back (else the first) to the last: gain, relative gain, epochs, both values.
    """
    is_curve = pl.col("epoch").is_not_null() & (pl.col("metric") == ULTRALYTICS_KEYS[_P]) & pl.col("value").is_finite()
    e1 = pl.col("epoch").last()
    early = pl.col("epoch") <= e1 - CONVERGENCE_EPOCHS
    e0, v0 = (pl.col(c).filter(early).last().fill_null(pl.col(c).first()) for c in ("epoch", "value"))
    curve = table.filter(is_curve).sort("epoch")
    ends = curve.group_by("run").agg(curve_earlier=v0, curve_last=pl.col("value").last(), gain_epochs=e1 - e0)
    start, gain = pl.col("curve_earlier"), pl.col("curve_last") - pl.col("curve_earlier")
    return ends.filter(pl.col("gain_epochs") > 0).with_columns(
        gain.alias(_GAIN), pl.when(start > 0).then(gain / start).alias(f"{_GAIN}_rel")
    )


def _arm_stats(runs: pl.DataFrame, arms: Sequence[str]) -> pl.DataFrame:
    """One row per arm of ``arms``: ``n_seeds``, ``seeds`` and ``<column>_mean`` / ``<column>_std`` over its runs."""
    values = [c for c in runs.columns if c not in ("run", "arm", "seed")]
    stats = runs.group_by("arm").agg(
        pl.col("seed").n_unique().alias("n_seeds"),
        pl.col("seed").unique().sort().alias("seeds"),
        *(getattr(pl.col(c), s)().alias(f"{c}_{s}") for c in values for s in ("mean", "std")),
    )
    return pl.DataFrame({"arm": arms}).join(stats, on="arm", maintain_order="left")


def _paired(runs: pl.DataFrame, arm: str, baseline: str, key: str, level: float) -> PairedDifference:
    """``key`` of ``arm``'s runs minus the baseline's, paired by seed."""
    of = {a: runs.filter(pl.col("arm") == a).select("seed", key).rows() for a in (arm, baseline)}
    return paired_difference(dict(of[arm]), dict(of[baseline]), level)


def _diff_columns(name: str, d: PairedDifference | None) -> dict[str, Any]:
    return {name: d and d.mean, f"{name}_lo": d and d.lo, f"{name}_hi": d and d.hi}


def _arm_row(stats: Mapping[str, Any], runs: pl.DataFrame, baseline: str, level: float) -> dict[str, Any]:
    """One arm's ``summary.csv`` columns from its ``_arm_stats`` row, paired by seed with the baseline's runs."""
    arm, diffs = stats["arm"], {}

    def ms(*keys: str) -> dict[str, Any]:
        return {f"{k}_{s}": stats[f"{k}_{s}"] for k in keys for s in ("mean", "std")}

    def paired(key: str) -> PairedDifference | None:
        return None if arm == baseline else _paired(runs, arm, baseline, key, level)

    row: dict[str, Any] = {
        "arm": arm,
        "loss": arm,
        "overrides": "",
        "n_seeds": stats["n_seeds"],
        "seeds": stats["seeds"],
    }
    for m in METRICS:
        d = diffs[m] = paired(m)
        row |= ms(m) | _diff_columns(f"{m}_diff", d) | {f"{m}_n_pairs": d.n if d else 0}
        row[f"{m}_verdict"] = verdict(d) if d else "baseline"
    row |= {"verdict": row[f"{_P}_verdict"]} | ms("train_time_s", "wall_time_s", "epochs_done", *LOSS_KEYS)
    row |= ms(*(f"rank_{k}" for k in RANK_KEYS)) | {"warning": ""} | ms(_GAIN, f"{_GAIN}_rel")
    row["gain_epochs"] = runs.filter(pl.col("arm") == arm)["gain_epochs"].min()
    row[f"{_P}_diff_halfwidth"] = diffs[_P] and diffs[_P].half_width
    for when in ("earlier", "last"):
        row |= _diff_columns(f"{_P}_curve_diff_{when}", paired(f"curve_{when}"))
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
    runs = final_values(table, FINAL_METRICS).join(_convergence(table), on="run", how="left")
    runs = runs.rename(lambda c: c.replace("rank/", "rank_"))
    labels = {r.arm: (r.loss, _pairs(r.overrides, "=", " ")) for r in sorted(results, key=lambda r: -r.seed)}
    rows = []
    for stats in _arm_stats(runs, arm_order(table["arm"], order, baseline)).iter_rows(named=True):
        row = _arm_row(stats, runs, baseline, level)
        row["loss"], row["overrides"] = labels.get(row["arm"], (row["arm"], ""))
        rows.append(row)
    warnings = (*experiment_warnings(rows, baseline), *filter(None, [source_warning(results)]))
    return [r | {"warning": "; ".join(warnings), "warnings": warnings} for r in rows]


def experiment_warnings(rows: Sequence[Mapping[str, Any]], baseline: str = BASELINE) -> list[str]:
    """Plain-text warnings: ``nothing learned`` (alone), else ``baseline ... near 0`` and ``not converged``."""
    means = {r["arm"]: r[f"{_P}_mean"] for r in rows if r[f"{_P}_mean"] is not None}
    if means and max(means.values()) < NOTHING_LEARNED:
        top = max(means, key=means.__getitem__)
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
        k = b["gain_epochs"]
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
    out = [f"  {r['arm']:<14} {_P} {_fmt(r[f'{_P}_mean']):<6}  {r['verdict']}" for r in rows]
    return out + [f"  Warning: {w}." for w in (rows[0]["warnings"] if rows else ())]


# ------------------------------------------------------------------------------------------------ cells and tables
def _fmt(v: Any, digits: int | None = 4, none: str = "-") -> str:
    """A float with ``digits`` decimals (None: as text), other values as text; ``none`` for None and NaN/inf."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return f"{v:.{digits}f}" if isinstance(v, float) and digits is not None else str(v)


def _mean(row: Mapping[str, Any], key: str) -> Any:
    """``<key>_mean`` of a row (MissingMetricError: not a column)."""
    if f"{key}_mean" not in row:
        raise MissingMetricError(key, None, (k.rsplit("_", 1)[0] for k in row))
    return row[f"{key}_mean"]


def _stat(row: Mapping[str, Any], key: str, spec: str = ".4f") -> str:
    """``mean ± std`` of ``key`` in a row (``spec``: format spec); ``(n=1)`` without a std; ``-`` without a mean."""
    mean, std = _mean(row, key), row[f"{key}_std"]
    if mean is None or not math.isfinite(mean):
        return "-"
    return f"{mean:{spec}} (n=1)" if std is None or not math.isfinite(std) else f"{mean:{spec}} ± {std:{spec[-3:]}}"


def _diff_text(mean: float | None, lo: float | None, hi: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:+.4f} (n=1, no interval)" if lo is None or hi is None else f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"


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


def _csv(frame: pl.DataFrame) -> str:
    """``frame`` as CSV: floats with 6 decimals, lists space-separated, empty cells for None, NaN and ``""``."""
    lists = pl.col(pl.List(pl.Int64)).cast(pl.List(pl.String)).list.join(" ")
    text = pl.col(pl.String).replace("", None)
    return frame.with_columns(lists, text, pl.col(pl.Float64).fill_nan(None)).write_csv(float_precision=6)


def _table(title: str, head: str, body: Iterable[Sequence[Any]], *text: str) -> list[str]:
    """A section: ``## title``, each ``text`` a paragraph, a markdown table (``head``: ``a | b``), then ``_LEGEND``."""
    rows = [f"| {' | '.join(map(str, row))} |" for row in body]
    head_lines = [f"| {head} |", "|" + " --- |" * (head.count(" | ") + 1)]
    return [f"\n## {title}\n", *(f"{t}\n" for t in text), *head_lines, *rows, "", _LEGEND]


# ------------------------------------------------------------------------------------------------ summary.md
def summary_csv_text(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None = None) -> str:
    """``summary.csv``: one line per arm, ``summarize``'s columns plus ``versions`` and ``command``."""
    meta = meta or {}
    extra = {"versions": _pairs(meta.get("versions")), "command": " ; ".join(meta.get("commands") or [])}
    return _csv(pl.DataFrame([{k: v for k, v in r.items() if k != "warnings"} | extra for r in rows]))


def _header(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> list[str]:
    """The title, the warnings, the experiment's settings, start model and missing runs."""
    out = [f"# A/B experiment: {meta.get('name', 'ab')}", "", *(f"{w}\n" for w in _warnings(rows))]
    out += [f"- Command: `{cmd}`" for cmd in meta.get("commands") or []]
    out += [f"- Versions: {_pairs(meta['versions'])}"] if meta.get("versions") else []
    pre = meta.get("pretrain")
    shown = {**meta, "train": {k: v for k, v in (meta.get("train") or {}).items() if k != "model"}} if pre else meta
    for key, label in (("data", "Data"), ("train", "Shared training arguments"), ("seeds", "Seeds")):
        if (value := shown.get(key)) not in (None, "", {}):  # with pretrain: the start model is its own line
            out.append(f"- {label}: `{_pairs(value, '=', ' ') if isinstance(value, Mapping) else value}`")
    out.append(f"- Baseline arm: `{meta.get('baseline', BASELINE)}`; every arm x seed trains alike (deterministic).")
    if isinstance(pre, Mapping):
        m, sha = pre.get("metrics") or {}, f"weights sha256 `{str(pre['sha256'])[:12]}`; " if pre.get("sha256") else ""
        built = f" `{model}`" if (model := (pre.get("spec") or {}).get("model")) else ""
        out.append(
            f"- Start model: the project-made pretrained{built} checkpoint `{pre.get('fingerprint')}` (stock BCE; {sha}"
            f"mAP50-95 {_fmt(m.get('mAP50-95'), none='n/a')}, mAP50 {_fmt(m.get('mAP50'), none='n/a')} on its own "
            f"val split; built in {_duration(pre.get('train_time_s'))}): every arm fine-tunes it."
        )
    return out + ([f"- **Missing runs (not finished)**: {', '.join(meta['missing'])}."] if meta.get("missing") else [])


def _warnings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"> **Warning: {w}.**" for w in (rows[0]["warnings"] if rows else ())]


def _half_width(row: Mapping[str, Any]) -> str:
    if row["verdict"] == "baseline":
        return "(baseline)"
    if (w := row[f"{_P}_diff_halfwidth"]) is None:
        return "n/a (1 paired seed)" if row[f"{_P}_n_pairs"] == 1 else "n/a (no paired seed)"
    return f"±{w:.4f}"


def summary_markdown(
    rows: Sequence[Mapping[str, Any]], table: pl.DataFrame, meta: Mapping[str, Any] | None = None
) -> str:
    """``summary.md`` from ``summarize`` rows and the results table (the Runs table).

    ``meta``: ``name``, ``baseline``, ``commands``, ``versions``, ``data``, ``train``, ``seeds``, ``pretrain``,
    ``missing``, ``level``.
    """
    meta = meta or {}
    baseline, level = meta.get("baseline", BASELINE), int(round(100 * meta.get("level", LEVEL)))
    return "\n".join(_header(rows, meta) + _summary_tables(rows, table, baseline, level))


def _summary_tables(rows: Sequence[Mapping[str, Any]], table: pl.DataFrame, b: str, level: int) -> list[str]:
    """The sections of ``summary.md`` after its header: one table each."""
    k, res = CONVERGENCE_EPOCHS, resolution(rows, level / 100)
    accuracy = [
        [r["arm"], r["loss"] or "-", r["overrides"] or "(none)", r["n_seeds"], *(_stat(r, m) for m in METRICS)]
        for r in rows
    ]
    diffs = [
        [r["arm"], "(baseline)" if r["verdict"] == "baseline" else r[f"{_P}_n_pairs"], _diff(r, f"{_P}_diff")]
        + [f"**{r['verdict']}**", _diff(r, "mAP50_diff"), r["mAP50_verdict"], _diff(r, "precision_diff")]
        + [_diff(r, "recall_diff")]
        for r in rows
    ]
    conv = [
        [r["arm"], _stat(r, _P), _fmt(r["gain_epochs"]), _stat(r, _GAIN, "+.4f"), _stat(r, f"{_GAIN}_rel", "+.1%")]
        + [_half_width(r), *(_diff(r, f"{_P}_curve_diff_{when}") for when in ("earlier", "last"))]
        for r in rows
    ]
    rank = [[r["arm"], *(_stat(r, f"rank_{k}", ".3f") for k in RANK_KEYS)] for r in rows]
    times = [
        [r["arm"], _fmt(r["epochs_done_mean"], 1), _duration(r["train_time_s_mean"])]
        + [_duration(r["wall_time_s_mean"]), *(_stat(r, k) for k in LOSS_KEYS)]
        for r in rows
    ]
    final = final_values(table, (*METRICS, "train_time_s", "rank/pearson", "rank/spearman")).sort("seed")
    runs = [
        [x["run"], x["arm"], x["seed"], *(_fmt(x[m]) for m in METRICS), _duration(x["train_time_s"])]
        + [_fmt(x[f"rank/{k}"], 3) for k in ("pearson", "spearman")]
        for r in rows
        for x in final.filter(pl.col("arm") == r["arm"]).iter_rows(named=True)
    ]
    heads = {
        "diff": f"arm | pairs | Δ{_P} [{level}% CI] | verdict | ΔmAP50 [{level}% CI] | verdict (mAP50) | Δprecision "
        "[CI] | Δrecall [CI]",
        "conv": f"arm | final {_P} | epochs spanned | gain | relative gain | ± {level}% CI vs {b} | Δ vs {b}, {k} "
        f"epochs earlier [CI] | Δ vs {b}, last epoch [CI]",
        "rank": "arm | Pearson | Spearman | Pearson (IoU>0) | Spearman (IoU>0)",
        "times": "arm | epochs | train time | wall time | box_loss | cls_loss | dfl_loss",
    }
    res = [f"**Resolution: {res}.**"] if res else []
    return [
        *_table("Accuracy", "arm | loss | overrides | seeds | " + " | ".join(METRICS), accuracy, _TEXT["accuracy"]),
        *_table(
            f"Difference to `{b}`", heads["diff"], diffs, *_warnings(rows), _TEXT["diff"].format(p=_P, b=b, level=level)
        ),
        *_table(
            "Convergence and resolution", heads["conv"], conv, _TEXT["convergence"].format(p=_P, level=level, k=k), *res
        ),
        *_table("Ranking quality (confidence vs IoU)", heads["rank"], rank, _TEXT["ranking"]),
        *_table("Training time and final losses", heads["times"], times, _TEXT["times"]),
        *_table("Runs", f"run | arm | seed | {' | '.join(METRICS)} | train time | Pearson | Spearman", runs),
        "\n## Curves\n\n![mAP50-95 per epoch](curves.png)\n\n![confidence vs IoU](ranking.png)\n",
    ]


# ------------------------------------------------------------------------------------------------ diagnosis
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
    stats = _arm_stats(
        rows.pivot(on="metric", index=["run", "arm", "seed"], values="value"), arm_order(final["arm"], order, baseline)
    )
    return stats.select(
        "arm", "n_seeds", "seeds", pl.lit(recall, pl.Float64).alias("eq_recall"), pl.exclude("^arm|n_seeds|seeds$")
    )


def _growth_text(row: Mapping[str, Any], base: Mapping[str, Any], t: str) -> str:
    """``FPs per run a → b (precision p → q); by kind ...: **kind** grows most`` at operating point ``t``."""
    deltas = {k: (_mean(row, f"{k}@{t}") or 0.0) - (_mean(base, f"{k}@{t}") or 0.0) for k in FP_KINDS}
    by_kind = ", ".join(f"{k} {d:+.1f}" for k, d in sorted(deltas.items(), key=lambda kv: -kv[1]))
    top = max(deltas, key=deltas.__getitem__)
    fp, p = (
        " → ".join(_fmt(_mean(r, f"{k}@{t}"), n, "n/a") for r in (base, row)) for k, n in (("fp", 1), ("precision", 3))
    )
    grows = f"**{top}** grows most" if deltas[top] > 0 else "no FP kind grows"
    return f"FPs per run {fp} (precision {p}); by kind {by_kind}: {grows}"


def _ap50_text(runs: pl.DataFrame, arm: str, baseline: str, level: float) -> str:
    """The AP50 gap to the baseline paired by seed, and which FP kind, removed from both arms, narrows it most."""
    if (g := _paired(runs, arm, baseline, "ap50", level)).mean is None:
        return "AP50: no seed with a value in both arms"
    text = f"AP50 gap paired by seed {_diff_text(g.mean, g.lo, g.hi)}"
    without = {k: _paired(runs, arm, baseline, f"ap50_without_{k}", level).mean for k in FP_KINDS}
    if not (gaps := {k: v for k, v in without.items() if v is not None}):
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
    base, recall = rows[baseline], rows[baseline]["eq_recall"]
    views = {"eq": f"at equal recall {recall:.2f} (≈{_fmt(base.get('tp@eq_mean'), 0)} TPs per run)" if recall else None}
    views |= {"f1": _POINTS["f1"], _OP: _POINTS[_OP]}
    return [
        f"`{arm}` vs `{baseline}`:\n"
        + "\n".join(f"  - {label}: {_growth_text(row, base, t)}" for t, label in views.items() if label)
        + f"\n  - {_ap50_text(runs, arm, baseline, level)}"
        for arm, row in rows.items()
        if arm != baseline
    ]


def diagnosis_csv_text(stats: pl.DataFrame) -> str:
    """``diagnosis.csv``: one line per arm, every column of ``diagnosis_stats``."""
    return _csv(stats)


def _diagnosis_header(stats: pl.DataFrame, runs: pl.DataFrame, meta: Mapping[str, Any]) -> list[str]:
    """The title, how the detections were made and classified, and the findings."""
    rows, na, params = list(stats.iter_rows(named=True)), "n/a (not recorded)", meta.get("params") or {}
    nms = ", ".join(f"{k} {_fmt(params.get(k), None, na)}" for k in ("imgsz", "conf", "iou", "max_det"))
    n = (_fmt(rows[0][f"{k}_mean"], 0, na) for k in ("n_images", "n_gt"))
    out = [f"# Diagnosis: {meta.get('name', 'ab')}", ""]
    out += [f"- {label}: `{meta[k]}`" for k, label in (("out", "Experiment"), ("command", "Command")) if meta.get(k)]
    how = "one-to-one branch, no NMS" if params.get("nms") is False else "multi-label NMS"
    out += [_TEXT["detections"].format(*n, nms, how, meta["baseline"])]
    out += [f"- Not diagnosed (no finished run): {', '.join(meta['missing'])}."] if meta.get("missing") else []
    level, one = meta.get("level", LEVEL), ["Only one arm: no comparison."]
    found = findings(stats, runs, meta["baseline"], level) if len(rows) > 1 else one
    scale = ", ".join(f"{r['arm']} {_fmt(_mean(r, 'score_tp'), 3, 'n/a (no true positives)')}" for r in rows)
    return out + ["\n## Findings\n", *(f"- {s}" for s in found), f"\nMean TP score per arm: {scale}. {_TEXT['scale']}"]


def _detections(stats: pl.DataFrame, t: str) -> list[str]:
    """The section of TP and FP counts per kind and the precision at operating point ``t``, per arm."""
    recall, th = stats["eq_recall"][0], [f"threshold@{t}"] if t != _OP else []
    title = f"Detections {_POINTS[t]}" + (f" ({_fmt(recall, 2, 'n/a')})" if t == "eq" else "")
    if t == "eq" and recall is None:
        return [f"\n## {title}\n", "No recall level that every run reaches."]
    keys = [*th, *(f"{k}@{t}" for k in (*KINDS, "fp", "missed")), f"precision@{t}"]
    specs = [".3f" if k.startswith(("threshold", "precision")) else ".1f" for k in keys]
    body = [[r["arm"], r["n_seeds"], *map(_stat, [r] * len(keys), keys, specs)] for r in stats.iter_rows(named=True)]
    head = ["arm", "seeds", *(["threshold"] if th else []), "TP", *FP_KINDS, "FP", "missed GT", "precision"]
    return _table(title, " | ".join(head), body, *([_TEXT[t].format(recall)] if t in _TEXT else []))


def diagnosis_markdown(stats: pl.DataFrame, runs: pl.DataFrame, meta: Mapping[str, Any]) -> str:
    """``diagnosis.md`` from ``diagnosis_stats`` and ``diagnosis_runs``.

    ``meta``: ``name``, ``baseline``, ``level``, ``params`` (of the recording pass), ``out``, ``command``, ``missing``.
    """
    scores = [*(f"score_{k}" for k in KINDS), f"tp_iou@{_OP}", "tp_iou@f1"]
    ap50 = ["ap50", *(f"ap50_cost_{k}" for k in FP_KINDS), "ap50_tp_only"]
    rows = list(stats.iter_rows(named=True))
    body = [[r["arm"], *(_stat(r, k, ".3f") for k in scores), *(_stat(r, k) for k in ap50)] for r in rows]
    head = " | ".join(["arm", *(f"score {'TP' if k == 'tp' else k}" for k in KINDS), f"TP IoU@{_OP}", "TP IoU@F1"])
    head += " | AP50 | " + " | ".join(f"cost {k}" for k in FP_KINDS) + " | AP50 TP only"
    digits = {"threshold@f1": 3, "ap50": 4, "ultralytics/mAP50": 4}
    per_run = [
        [
            r["run"],
            r["arm"],
            r["seed"],
            *(_fmt(r[m] if m in digits or r[m] is None else int(r[m]), digits.get(m)) for m in _RUN_METRICS),
        ]
        for r in runs.iter_rows(named=True)
    ]
    run_head = f"run | arm | seed | TP@{_OP} | FP@{_OP} | {' | '.join(FP_KINDS)} | missed@{_OP} | F1 threshold | AP50"
    out = [
        *_diagnosis_header(stats, runs, meta),
        *(line for t in _POINTS for line in _detections(stats, t)),
        *_table("Scores and AP50 cost per kind", head, body, _TEXT["scores"]),
        *_table("Runs", run_head + " | Ultralytics mAP50", per_run),
        "\n## Plots\n\n![FP kinds and scores](fp_scores.png)\n\n![precision and recall per epoch](pr_curves.png)\n",
    ]
    return "\n".join(out)


def diagnosis_runs(table: pl.DataFrame, baseline: str = BASELINE, order: Sequence[str] | None = None) -> pl.DataFrame:
    """One row per run (arm order, then seed) with its ``_RUN_METRICS`` and ``ap50_without_<kind>`` values."""
    runs = final_values(table, (*_RUN_METRICS, *(f"ap50_without_{k}" for k in FP_KINDS)))
    position = {a: i for i, a in enumerate(arm_order(runs["arm"], order, baseline))}
    return runs.sort(pl.col("arm").replace_strict(position, return_dtype=pl.Int64), "seed")
