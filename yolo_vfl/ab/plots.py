"""The figures of the A/B report, and the functions that write a report's files (text and figures) atomically.

Matplotlib on its Agg canvas (no pyplot, the global backend is left alone), imported when a figure is drawn:

* ``curves.png`` (``plot_curves``): mAP50-95 per epoch per arm, mean over seeds with a ± 1 std band;
* ``ranking.png`` (``plot_ranking``): confidence vs IoU per arm, titled with the correlations;
* ``fp_scores.png`` (``plot_fp_scores``): detections by kind per arm and the score histograms per kind;
* ``pr_curves.png`` (``plot_pr_curves``): precision and recall per epoch per arm.

``write_report`` writes ``summary.md``, ``summary.csv``, ``curves.png`` and ``ranking.png``; ``write_diagnosis``
writes ``diagnosis.md``, ``diagnosis.csv``, ``fp_scores.png`` and ``pr_curves.png``.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write_bytes, atomic_write_text
from .evaluation import HIST_BINS, KINDS
from .protocol import PRIMARY_METRIC
from .report import (
    aggregate,
    at_recall,
    common_recall,
    diagnosis_csv_text,
    diagnosis_markdown,
    get_path,
    group_by_arm,
    summarize,
    summary_csv_text,
    summary_markdown,
)
from .results import Curve, RunResult
from .stats import mean_std

__all__ = [
    "COLORS",
    "Series",
    "plot_epoch_band",
    "plot_curves",
    "plot_ranking",
    "plot_fp_scores",
    "plot_pr_curves",
    "write_report",
    "write_diagnosis",
]

#: Plot colours per detection kind.
COLORS = {
    "tp": "tab:green",
    "duplicate": "tab:orange",
    "wrong_class": "tab:purple",
    "localization": "tab:blue",
    "background": "tab:red",
}
#: One run's per-epoch values: ``(epochs, values)`` (None or NaN: no value at that epoch).
Series = tuple[Sequence[int], Sequence[Any]]

_CURVE_FIELDS = {"mAP50-95": "map50_95", "mAP50": "map50"}
_RANK_KEYS = ("pearson_matched", "spearman_matched", "pearson", "spearman")


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot, no change of the global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save ``fig`` as PNG atomically (tight bounding box: keeps a legend placed outside the axes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def plot_epoch_band(
    ax: Any,
    groups: Mapping[str, Sequence[Series]],
    metric: str,
    title_size: float | None = None,
    legend: bool = False,
) -> None:
    """Draw a metric per epoch for each arm on ``ax``: the mean over seeds with a ± 1 std band.

    The first arm (the baseline, see ``report.group_by_arm``) is drawn in thick black. Up to 11 arms use the tab10
    colours, more use tab20 with alternating dashes, and the bands fade as arms are added so that a 16-arm study stays
    readable. Epoch ticks are whole numbers.

    Args:
        ax: a matplotlib Axes.
        groups: arm name -> one ``(epochs, values)`` series per seed.
        metric: the y label and title.
        title_size: font size of the title (matplotlib's default when None).
        legend: draw the legend: inside the axes for up to 6 arms, outside on the right for more.
    """
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    n = len(groups)
    palette = colormaps["tab10" if n <= 11 else "tab20"].colors
    band_alpha = 0.2 if n <= 4 else 0.08
    for i, (arm, runs) in enumerate(groups.items()):
        per_epoch: dict[int, list[float]] = {}
        for epochs, values in runs:
            for e, v in zip(epochs, values):
                if v is not None and math.isfinite(v):
                    per_epoch.setdefault(int(e), []).append(float(v))
        if not per_epoch:
            continue
        epochs = sorted(per_epoch)
        mean = np.array([np.mean(per_epoch[e]) for e in epochs])
        std = np.array([np.std(per_epoch[e], ddof=1) if len(per_epoch[e]) > 1 else 0.0 for e in epochs])
        base = i == 0
        (line,) = ax.plot(
            epochs,
            mean,
            marker="o" if len(epochs) < 15 else None,
            ms=3,
            color="black" if base else palette[(i - 1) % len(palette)],
            lw=2.2 if base else 1.3,
            ls="-" if base or n <= 11 or i % 2 else "--",
            zorder=3 if base else 2,
            label=f"{arm} ({len(runs)} seed{'s' if len(runs) != 1 else ''})",
        )
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=band_alpha, lw=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch (mean ± 1 std over seeds)", fontsize=title_size)
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        if n <= 6:
            ax.legend(fontsize=8)
        else:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _curve_series(curve: Curve, metric: str) -> Series:
    return curve.epoch, getattr(curve, _CURVE_FIELDS[metric])


def plot_curves(
    results: Sequence[RunResult],
    path: str | os.PathLike[str],
    metric: str = PRIMARY_METRIC,
    order: Sequence[str] | None = None,
    baseline: str = "bce",
) -> Path:
    """``curves.png``: ``metric`` (``mAP50-95`` or ``mAP50``) per epoch per arm, mean over seeds, ± 1 std band.

    Args:
        results: the runs (their ``curve``).
        path: the PNG to write (atomically).
        metric: the curve to plot.
        order: arm order (default: baseline first, then as found).
        baseline: the arm drawn in thick black.

    Returns:
        ``path``.
    """
    groups = {
        arm: [_curve_series(r.curve, metric) for r in runs]
        for arm, runs in group_by_arm(results, order, baseline).items()
    }
    fig = _figure(7.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    plot_epoch_band(ax, groups, metric, legend=True)
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_ranking(
    results: Sequence[RunResult],
    path: str | os.PathLike[str],
    order: Sequence[str] | None = None,
    baseline: str = "bce",
) -> Path:
    """``ranking.png``: one confidence-vs-IoU scatter per arm (all seeds), titled with the mean correlations.

    Each title leads with the Pearson and Spearman correlations over the detections with IoU > 0 (those that overlap
    a same-class ground truth: the ranking of localization quality that the README's claim is about), and gives the
    all-detections ones (IoU 0 included) on its second line. The IoU 0 points are drawn in grey; an ``n/a`` in a title
    is explained under the figure.

    Args:
        results: the runs (their ``ranking``: correlations and ``points``).
        path: the PNG to write (atomically).
        order: arm order (default: baseline first, then as found).
        baseline: the first arm.

    Returns:
        ``path``.
    """
    groups = group_by_arm(results, order, baseline)
    n = max(1, len(groups))
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig = _figure(4.2 * cols, 3.8 * rows)
    undefined = False
    for i, (arm, runs) in enumerate(groups.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        xs: list[float] = []
        ys: list[float] = []
        for r in runs:
            pts = get_path(r.ranking, "points") or {}
            xs += pts.get("iou", [])
            ys += pts.get("conf", [])
        x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        hit = x > 0
        ax.scatter(x[~hit], y[~hit], s=3, alpha=0.25, lw=0, color="gray", label="IoU 0")
        ax.scatter(x[hit], y[hit], s=3, alpha=0.25, lw=0, color="tab:blue", label="IoU>0")
        corr = {}
        for k in _RANK_KEYS:
            mean, _ = mean_std(get_path(r.ranking, k) for r in runs)
            corr[k] = f"{mean:.3f}" if mean is not None else "n/a"
        undefined = undefined or "n/a" in corr.values()
        ax.set_title(
            f"{arm}: IoU>0 Pearson {corr['pearson_matched']}, Spearman {corr['spearman_matched']}\n"
            f"all detections: Pearson {corr['pearson']}, Spearman {corr['spearman']}",
            fontsize=9,
        )
        ax.set_xlabel("IoU with best same-class GT")
        ax.set_ylabel("confidence")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if i == 0 and x.size:
            ax.legend(fontsize=7, loc="upper left", markerscale=3)
    fig.tight_layout()
    if undefined:
        fig.text(
            0.01,
            -0.01,
            "n/a: not measured, or undefined (fewer than 2 detections, or a constant confidence or IoU)",
            fontsize=8,
            va="top",
        )
    return _save_figure(fig, path)


def _bars(
    ax: Any, groups: Mapping[str, Sequence[Mapping[str, Any]]], at: Callable[[Mapping[str, Any]], Any], title: str
) -> None:
    """Stacked bars of TP and the FP kinds per arm (mean per run), precision on top."""
    arms = list(groups)
    x = np.arange(len(arms))
    bottom = np.zeros(len(arms))
    for k in KINDS:
        v = []
        for a in arms:
            vals = [c for c in (get_path(at(r), "counts", k) for r in groups[a]) if c is not None]
            v.append(float(np.mean(vals)) if vals else 0.0)
        ax.bar(x, v, bottom=bottom, color=COLORS[k], label=k, width=0.7)
        bottom += np.asarray(v)
    for i, a in enumerate(arms):
        prec = [p for p in (get_path(at(r), "precision") for r in groups[a]) if p is not None]
        if prec:
            ax.text(x[i], bottom[i], f"P {np.mean(prec):.3f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(arms, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("detections per run")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.08)


def plot_fp_scores(
    diagnoses: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    order: Sequence[str] | None = None,
    baseline: str = "bce",
    recall: float | None = None,
) -> Path:
    """``fp_scores.png``: detections by kind per arm, and the score histograms of TP and each FP kind per arm.

    Top row: stacked bars of TP and the FP kinds per arm (mean per run, precision on top) at equal recall
    (``recall``, default ``report.common_recall``), at each run's F1-optimal threshold and at conf ≥ 0.25. Below, one
    panel per arm: the score histograms of TP and each FP kind (mean count per run, log scale; dashed: 0.25, dotted:
    mean F1-optimal threshold).

    Args:
        diagnoses: per-run diagnosis dicts with ``arm`` and ``seed``.
        path: the PNG to write (atomically).
        order: arm order (default: baseline first, then as found).
        baseline: the first arm, and the one whose recall sets the equal-recall level.
        recall: the equal-recall level.

    Returns:
        ``path``.
    """
    groups = group_by_arm(diagnoses, order, baseline)
    arms = list(groups)
    if recall is None:
        recall = common_recall(diagnoses, baseline)
    cols = 3
    rows = 1 + (max(1, len(arms)) + cols - 1) // cols
    fig = _figure(5.0 * cols, 3.6 * rows)
    eq_title = f"at equal recall {recall:.2f} (same TPs)" if recall is not None else "at equal recall (n/a)"
    views: tuple[tuple[Callable[[Mapping[str, Any]], Any], str], ...] = (
        (lambda r: at_recall(r, recall), eq_title),
        (lambda r: get_path(r, "at", "f1"), "at each run's F1-optimal threshold"),
        (lambda r: get_path(r, "at", "0.25"), "at conf ≥ 0.25"),
    )
    for p, (at, title) in enumerate(views):
        ax = fig.add_subplot(rows, cols, p + 1)
        _bars(ax, groups, at, f"TP and FP kinds {title}")
        if p == 0:
            ax.legend(fontsize=7)

    hists: dict[str, dict[str, np.ndarray]] = {}
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    ymax, xmax = 1.0, 0.0
    for a in arms:
        hists[a] = {}
        for r in groups[a]:
            if get_path(r, "hist", "edges"):
                edges = np.asarray(r["hist"]["edges"], dtype=np.float64)
        for k in KINDS:
            hs = [np.asarray(get_path(r, "hist", k) or [], dtype=np.float64) for r in groups[a]]
            hs = [h for h in hs if h.size == edges.size - 1]
            if hs:
                h = np.mean(hs, axis=0)
                hists[a][k] = h
                ymax = max(ymax, float(h.max()))
                if h.any():
                    xmax = max(xmax, float(edges[1:][h > 0].max()))
    xmax = min(1.0, max(0.3, xmax + 0.05))
    for i, a in enumerate(arms):
        ax = fig.add_subplot(rows, cols, cols + i + 1)
        for k in KINDS:
            h = hists[a].get(k)
            if h is None or not h.any():
                continue
            ax.stairs(h, edges, color=COLORS[k], lw=2.2 if k == "tp" else 1.3, label=k)
        ax.axvline(0.25, color="gray", ls="--", lw=0.8)
        thr = [v for v in (get_path(r, "at", "f1", "threshold") for r in groups[a]) if v is not None]
        if thr:
            ax.axvline(float(np.mean(thr)), color="black", ls=":", lw=1.2)
        ax.set_yscale("log")
        ax.set_ylim(0.3, ymax * 1.5)
        ax.set_xlim(0, xmax)
        n = len(groups[a])
        ap = [r.get("ap50") for r in groups[a] if r.get("ap50") is not None]
        ap_text = f", AP50 {np.mean(ap):.3f}" if ap else ""
        ax.set_title(f"{a} ({n} seed{'s' if n != 1 else ''}{ap_text})", fontsize=9)
        ax.set_xlabel("confidence (dashed 0.25, dotted F1-optimal)", fontsize=8)
        ax.set_ylabel("detections per run")
        ax.grid(alpha=0.3)
        if i == 0 and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_pr_curves(
    curves: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    order: Sequence[str] | None = None,
    baseline: str = "bce",
) -> Path:
    """``pr_curves.png``: validation precision and recall per epoch per arm, mean over seeds with a ± 1 std band.

    Args:
        curves: one entry per run: ``arm``, ``seed`` and ``curve``: ``{"epoch": [...], "precision": [...],
            "recall": [...]}`` (from its ``results.csv``).
        path: the PNG to write (atomically).
        order: arm order (default: baseline first, then as found).
        baseline: the arm drawn in thick black.

    Returns:
        ``path``.
    """
    grouped = group_by_arm(curves, order, baseline)
    fig = _figure(13.0, 4.8)
    for i, metric in enumerate(("precision", "recall")):
        groups = {
            arm: [((get_path(r, "curve", "epoch") or []), (get_path(r, "curve", metric) or [])) for r in runs]
            for arm, runs in grouped.items()
        }
        ax = fig.add_subplot(1, 2, i + 1)
        plot_epoch_band(ax, groups, metric, title_size=10, legend=i == 1)  # legend right of the second panel
    fig.tight_layout()
    return _save_figure(fig, path)


# ------------------------------------------------------------------------------------------------ report files
def _versions(results: Sequence[RunResult]) -> dict[str, str]:
    """Each package's versions over the runs, ``a / b`` when they differ."""
    seen: dict[str, list[str]] = {}
    for r in results:
        for k, v in (r.versions or {}).items():
            if str(v) not in seen.setdefault(k, []):
                seen[k].append(str(v))
    return {k: " / ".join(v) for k, v in seen.items()}


def write_report(
    out_dir: str | os.PathLike[str],
    results: Sequence[RunResult],
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary.md``, ``curves.png`` and ``ranking.png`` into ``out_dir`` (atomically).

    Args:
        out_dir: the experiment directory.
        results: the finished runs.
        meta: ``name``, ``baseline``, ``arms`` (order), ``commands``, ``versions`` (default: the runs'), ``data``,
            ``train``, ``seeds``, ``missing``, ``level``.

    Returns:
        the written paths by name.

    Raises:
        ValueError: no finished run to report on.
    """
    out = Path(out_dir)
    results = list(results)
    if not results:
        raise ValueError(f"No finished runs (runs/*/result.json) in {out}: nothing to report")
    meta = dict(meta or {})
    if not meta.get("versions"):
        meta["versions"] = _versions(results)
    baseline = meta.get("baseline", "bce")
    order = meta.get("arms")
    rows = summarize(results, baseline=baseline, order=order, level=meta.get("level", 0.95))
    return {
        "summary.csv": atomic_write_text(out / "summary.csv", summary_csv_text(rows, meta)),
        "summary.md": atomic_write_text(out / "summary.md", summary_markdown(rows, results, meta)),
        "curves.png": plot_curves(results, out / "curves.png", order=order, baseline=baseline),
        "ranking.png": plot_ranking(results, out / "ranking.png", order=order, baseline=baseline),
    }


def write_diagnosis(
    dest: str | os.PathLike[str],
    diagnoses: Sequence[Mapping[str, Any]],
    curves: Sequence[Mapping[str, Any]],
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``diagnosis.csv``, ``diagnosis.md``, ``fp_scores.png`` and ``pr_curves.png`` into ``dest`` (atomically).

    Args:
        dest: the directory.
        diagnoses: per-run diagnosis dicts with ``arm``, ``seed`` and ``run``.
        curves: per-run precision/recall curves (``plot_pr_curves``).
        meta: ``name``, ``baseline``, ``arms`` (order), ``out``, ``command``, ``missing``.

    Returns:
        the written paths by name.
    """
    out = Path(dest)
    meta = dict(meta or {})
    baseline = meta.get("baseline", "bce")
    order = meta.get("arms")
    recall = common_recall(diagnoses, baseline)
    rows = aggregate(diagnoses, baseline=baseline, order=order, recall=recall)
    return {
        "diagnosis.csv": atomic_write_text(out / "diagnosis.csv", diagnosis_csv_text(rows)),
        "diagnosis.md": atomic_write_text(out / "diagnosis.md", diagnosis_markdown(rows, diagnoses, meta)),
        "fp_scores.png": plot_fp_scores(
            diagnoses, out / "fp_scores.png", order=order, baseline=baseline, recall=recall
        ),
        "pr_curves.png": plot_pr_curves(curves, out / "pr_curves.png", order=order, baseline=baseline),
    }
