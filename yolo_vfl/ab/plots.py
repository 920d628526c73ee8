"""The figures of the A/B report, and ``write_report`` / ``write_diagnosis``, which write a report's files atomically.

Matplotlib on its Agg canvas (no pyplot), imported when a figure is drawn. Each ``plot_*`` writes its PNG to ``path``
and returns it; ``order`` is the arm order (default: ``baseline`` first, then as found).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import polars as pl

from ..fileio import atomic_write_bytes, atomic_write_text
from . import report
from .evaluation import HIST_BINS, KINDS
from .protocol import BASELINE, LEVEL, OPERATING_CONF, PRIMARY_METRIC, ULTRALYTICS_KEYS
from .report import arm_order
from .results import RANK_KEYS, RunResult, table_of

__all__ = ["COLORS", "plot_curves", "plot_ranking", "plot_fp_scores", "plot_pr_curves", "write_report"]
__all__ += ["write_diagnosis"]

#: Plot colours per detection kind.
COLORS = dict(zip(KINDS, ("tab:green", "tab:orange", "tab:purple", "tab:blue", "tab:red")))
_Path = Union[str, os.PathLike[str]]
_Order = Optional[Sequence[str]]
_OP = f"{OPERATING_CONF:g}"


def _figure(width: float, height: float, rows: int = 1, cols: int = 1, panels: int | None = None) -> tuple[Any, list]:
    """A Figure on the Agg canvas (no pyplot) of ``width`` x ``height`` per cell, and its first ``panels`` axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols, height * rows), dpi=100)
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(rows * cols if panels is None else panels)]


def _save_figure(fig: Any, path: _Path) -> Path:
    """Lay ``fig`` out tightly and save it as PNG atomically (tight bounding box: keeps a legend outside the axes)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def _epoch_band(ax: Any, table: pl.DataFrame, metric: str, arms: Sequence[str], legend: bool = False) -> None:
    """Draw ``metric`` (Ultralytics' name) per epoch for each arm on ``ax``: the mean over seeds, a ± 1 std band.

    The first arm (the baseline) is thick black; more than 11 arms use tab20 with alternating dashes; ``legend``:
    inside for up to 6 arms, else outside on the right. Epoch ticks are whole numbers; runs of fewer than 5 epochs
    draw each arm a little to the side of the epoch, so arms with equal values stay visible.
    """
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    n, name = len(arms), metric.removeprefix("metrics/").removesuffix("(B)")
    palette = colormaps["tab10" if n <= 11 else "tab20"].colors
    seeds = dict(table.group_by("arm").agg(pl.col("run").n_unique()).iter_rows())
    rows = table.filter((pl.col("metric") == metric) & pl.col("epoch").is_not_null() & pl.col("value").is_not_null())
    band = rows.group_by("arm", "epoch").agg(m=pl.col("value").mean(), s=pl.col("value").std().fill_null(0.0))
    ticks = sorted(band["epoch"].unique().to_list())
    for i, arm in enumerate(arms):
        if not (b := band.filter(pl.col("arm") == arm).sort("epoch")).height:
            continue
        epochs, mean, std = b["epoch"].to_numpy(), b["m"].to_numpy(), b["s"].to_numpy()
        if len(ticks) < 5:  # a short run: dodge the arms sideways so equal values stay visible
            epochs = epochs + 0.12 * (i - (n - 1) / 2) / max(1, n - 1)
        color, lw, zorder = ("black", 2.2, 3) if i == 0 else (palette[(i - 1) % len(palette)], 1.3, 2)
        ls = "-" if i == 0 or n <= 11 or i % 2 else "--"
        label = f"{arm} ({seeds[arm]} seed{'s' if seeds[arm] != 1 else ''})"
        marker = "o" if len(epochs) < 15 else None
        (line,) = ax.plot(epochs, mean, marker=marker, ms=3, color=color, lw=lw, ls=ls, zorder=zorder, label=label)
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2 if n <= 4 else 0.08, lw=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if 0 < len(ticks) < 5:  # a short run: every epoch a tick, half an epoch of room on each side
        ax.set_xticks(ticks)
        ax.set_xlim(ticks[0] - 0.5, ticks[-1] + 0.5)
    ax.set(xlabel="epoch", ylabel=name)
    ax.set_title(f"{name} per epoch (mean ± 1 std over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        outside = {} if n <= 6 else {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}
        ax.legend(fontsize=8 if n <= 6 else 7, **outside)


def plot_curves(
    table: pl.DataFrame, path: _Path, metric: str = PRIMARY_METRIC, order: _Order = None, baseline: str = BASELINE
) -> Path:
    """``curves.png``: ``metric`` (``mAP50-95`` or ``mAP50``) per epoch per arm, mean over seeds, ± 1 std band."""
    fig, (ax,) = _figure(7.5, 4.5)
    _epoch_band(ax, table, ULTRALYTICS_KEYS[metric], arm_order(table["arm"], order, baseline), legend=True)
    return _save_figure(fig, path)


def plot_ranking(
    table: pl.DataFrame,
    path: _Path,
    points: Mapping[str, Mapping[str, Sequence[float]] | None] | None = None,
    order: _Order = None,
    baseline: str = BASELINE,
) -> Path:
    """``ranking.png``: one confidence-vs-IoU scatter per arm (all seeds), titled with the mean correlations.

    ``points``: per run, ``ranking_quality``'s ``conf`` and ``iou``. Titles lead with the correlations over IoU > 0
    (the README's claim), then over all detections; IoU 0 points are grey; an ``n/a`` is explained under the figure.
    """
    arms, points = arm_order(table["arm"], order, baseline), points or {}
    final = table.filter(pl.col("epoch").is_null() & pl.col("metric").str.starts_with("rank/"))
    means = {(a, m): v for a, m, v in final.group_by("arm", "metric").agg(pl.col("value").mean()).iter_rows()}
    runs = dict(table.group_by("arm").agg(pl.col("run").unique(maintain_order=True)).iter_rows())
    cols = min(max(1, len(arms)), 3)
    fig, axes = _figure(4.2, 3.8, math.ceil(max(1, len(arms)) / cols), cols, len(arms))
    undefined = False
    for ax, arm in zip(axes, arms):
        pts = [points.get(r) or {} for r in runs[arm]]
        x = np.asarray([v for p in pts for v in p.get("iou", [])], dtype=np.float64)
        y = np.asarray([v for p in pts for v in p.get("conf", [])], dtype=np.float64)
        hit = x > 0
        if not (y >= OPERATING_CONF).any():  # nothing confident yet: a cloud at confidence 0 says nothing
            ax.text(0.5, 0.5, f"too early to rank:\nno detection reaches\nconfidence {_OP}", ha="center", va="center")
        ax.scatter(x[~hit], y[~hit], s=3, alpha=0.25, lw=0, color="gray", label="IoU 0")
        ax.scatter(x[hit], y[hit], s=3, alpha=0.25, lw=0, color="tab:blue", label="IoU>0")
        corr = {k: "n/a" if (m := means.get((arm, f"rank/{k}"))) is None else f"{m:.3f}" for k in RANK_KEYS}
        undefined = undefined or "n/a" in corr.values()
        title = f"{arm}: IoU>0 Pearson {corr['pearson_matched']}, Spearman {corr['spearman_matched']}\n"
        ax.set_title(title + f"all detections: Pearson {corr['pearson']}, Spearman {corr['spearman']}", fontsize=9)
        ax.set(xlabel="IoU with best same-class GT", ylabel="confidence", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        if ax is axes[0] and x.size:
            ax.legend(fontsize=7, loc="upper left", markerscale=3)
    if undefined:
        note = "n/a: not measured, or undefined (fewer than 2 detections, or a constant confidence or IoU)"
        fig.text(0.01, -0.01, note, fontsize=8, va="top")
    return _save_figure(fig, path)


def _bars(ax: Any, stats: pl.DataFrame, t: str, title: str) -> None:
    """Stacked bars of TP and the FP kinds per arm at operating point ``t`` (mean per run), precision on top."""
    x = np.arange(stats.height)
    bottom = np.zeros(stats.height)
    for k in KINDS:
        v = stats[f"{k}@{t}_mean"].fill_null(0.0).to_numpy()
        ax.bar(x, v, bottom=bottom, color=COLORS[k], label=k, width=0.7)
        bottom += v
    for i, prec in enumerate(stats[f"precision@{t}_mean"]):
        if prec is not None:
            ax.text(x[i], bottom[i], f"P {prec:.3f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, stats["arm"].to_list(), rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="detections per run")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.08)


def plot_fp_scores(stats: pl.DataFrame, detections: pl.DataFrame, path: _Path) -> Path:
    """``fp_scores.png``: detections by kind per arm, and the score histograms of TP and each FP kind per arm.

    ``stats``: ``report.diagnosis_stats``; ``detections``: ``evaluation.detection_kinds`` with ``run`` and ``arm``.
    Top row: stacked bars at equal recall, F1-optimal threshold and ``OPERATING_CONF``; then per arm the score
    histograms (mean count per run, log scale; dashed: ``OPERATING_CONF``, dotted: mean F1-optimal threshold).
    """
    fig, axes = _figure(5.0, 3.6, 1 + math.ceil(max(1, stats.height) / 3), 3, 3 + stats.height)
    recall = stats["eq_recall"][0]
    titles = {"eq": f"at equal recall {recall:.2f} (same TPs)" if recall else None}
    titles |= {"f1": "at each run's F1-optimal threshold", _OP: f"at conf ≥ {_OP}"}
    for ax, (t, title) in zip(axes, titles.items()):
        if title:
            _bars(ax, stats, t, f"TP and FP kinds {title}")
    axes[1].legend(fontsize=7)
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    hists = {}
    for arm in stats["arm"]:
        d = detections.filter(pl.col("arm") == arm)
        n_runs = max(1, d["run"].n_unique())
        for k in KINDS:
            hists[arm, k] = np.histogram(d.filter(pl.col("kind") == k)["conf"].clip(0.0, 1.0), bins=edges)[0] / n_runs
    ymax = max([1.0, *(h.max() for h in hists.values())])
    xmax = max([0.0, *(edges[1:][h > 0].max() for h in hists.values() if h.any())])
    for ax, row in zip(axes[3:], stats.iter_rows(named=True)):
        for k in KINDS:
            if hists[row["arm"], k].any():
                ax.stairs(hists[row["arm"], k], edges, color=COLORS[k], lw=2.2 if k == "tp" else 1.3, label=k)
        ax.axvline(OPERATING_CONF, color="gray", ls="--", lw=0.8)
        if row["threshold@f1_mean"] is not None:
            ax.axvline(row["threshold@f1_mean"], color="black", ls=":", lw=1.2)
        ax.set_yscale("log")
        ax.set(ylim=(0.3, ymax * 1.5), xlim=(0, min(1.0, max(0.3, xmax + 0.05))), ylabel="detections per run")
        ap = "" if row["ap50_mean"] is None else f", AP50 {row['ap50_mean']:.3f}"
        ax.set_title(f"{row['arm']} ({row['n_seeds']} seed{'s' if row['n_seeds'] != 1 else ''}{ap})", fontsize=9)
        ax.set_xlabel(f"confidence (dashed {OPERATING_CONF:g}, dotted F1-optimal)", fontsize=8)
        ax.grid(alpha=0.3)
    if len(axes) > 3 and axes[3].get_legend_handles_labels()[0]:
        axes[3].legend(fontsize=7)
    return _save_figure(fig, path)


def plot_pr_curves(table: pl.DataFrame, path: _Path, order: _Order = None, baseline: str = BASELINE) -> Path:
    """``pr_curves.png``: validation precision and recall per epoch per arm, mean over seeds with a ± 1 std band."""
    arms = arm_order(table["arm"], order, baseline)
    fig, axes = _figure(6.5, 4.8, 1, 2)
    for ax, metric in zip(axes, ("precision", "recall")):  # legend right of the second
        _epoch_band(ax, table, ULTRALYTICS_KEYS[metric], arms, legend=metric == "recall")
    return _save_figure(fig, path)


# ------------------------------------------------------------------------------------------------ report files
def write_report(
    out_dir: _Path,
    results: Sequence[RunResult],
    meta: Mapping[str, Any] | None = None,
    table: pl.DataFrame | None = None,
    points: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary.md``, ``curves.png`` and ``ranking.png`` into ``out_dir`` (atomically).

    ``meta``: as ``report.summary_markdown``'s, plus ``arms`` (order); ``versions`` default to the runs' (``a / b``
    where they differ). ``table``: default ``table_of(results)``; ``points``: per run, its ranking scatter points.

    Raises:
        ValueError: no finished run. MissingMetricError: a run of ``table`` lacks a metric of the report.
    """
    out, results, meta = Path(out_dir), list(results), dict(meta or {})
    if not results:
        raise ValueError(f"No finished runs (runs/*/result.json) in {out}: nothing to report")
    seen: dict[str, dict[str, None]] = {}
    for k, v in (kv for r in results for kv in (r.versions or {}).items()):
        seen.setdefault(k, {})[str(v)] = None
    meta["versions"] = meta.get("versions") or {k: " / ".join(v) for k, v in seen.items()}
    baseline, order = meta.get("baseline", BASELINE), meta.get("arms")
    table = table_of(results) if table is None else table
    rows = report.summarize(results, baseline=baseline, order=order, level=meta.get("level", LEVEL), table=table)
    return {
        "summary.csv": atomic_write_text(out / "summary.csv", report.summary_csv_text(rows, meta)),
        "summary.md": atomic_write_text(out / "summary.md", report.summary_markdown(rows, table, meta)),
        "curves.png": plot_curves(table, out / "curves.png", order=order, baseline=baseline),
        "ranking.png": plot_ranking(table, out / "ranking.png", points, order=order, baseline=baseline),
    }


def write_diagnosis(dest: _Path, table: pl.DataFrame, detections: pl.DataFrame, meta: Mapping) -> dict[str, Path]:
    """Write ``diagnosis.csv``, ``diagnosis.md``, ``fp_scores.png`` and ``pr_curves.png`` into ``dest`` (atomically).

    ``table``: results table with the diagnosis rows; ``detections``: as ``plot_fp_scores``; ``meta``: as
    ``report.diagnosis_markdown``'s, plus ``arms`` (order). Returns the written paths by name.

    Raises:
        MissingMetricError: a run without a row for a metric of the report.
    """
    out, baseline, order = Path(dest), meta["baseline"], meta.get("arms")
    stats, runs = report.diagnosis_stats(table, baseline, order), report.diagnosis_runs(table, baseline, order)
    return {
        "diagnosis.csv": atomic_write_text(out / "diagnosis.csv", report.diagnosis_csv_text(stats)),
        "diagnosis.md": atomic_write_text(out / "diagnosis.md", report.diagnosis_markdown(stats, runs, meta)),
        "fp_scores.png": plot_fp_scores(stats, detections, out / "fp_scores.png"),
        "pr_curves.png": plot_pr_curves(table, out / "pr_curves.png", order=order, baseline=baseline),
    }
