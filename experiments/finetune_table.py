"""The fine-tuning study's cross-target table: one row per arm, the paired difference to the baseline per target.

Reads the ``summary.csv`` that ``yolo-vfl ab`` wrote for each target and prints a markdown table; ``--write FILE``
replaces the table between ``<!-- finetune-table -->`` and ``<!-- /finetune-table -->`` in each file given::

    python experiments/finetune_table.py \
        digits=experiments/results/ab_finetune_digits/summary.csv \
        glyphs=experiments/results/ab_finetune_glyphs/summary.csv \
        --write README.md --write experiments/README.md

An arm missing from a target's summary is written ``not run``. Where a ``diagnosis.csv`` (``yolo-vfl ab diagnose``)
lies next to a ``summary.csv``, a second table gives each arm's false positives at equal recall against the
baseline's, by kind. Every number is a cell of a ``summary.csv`` or ``diagnosis.csv``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

START, END = "<!-- finetune-table -->", "<!-- /finetune-table -->"
METRIC = "mAP50-95"


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    """The rows of a ``summary.csv`` or ``diagnosis.csv`` by arm, in file order."""
    with open(path, newline="") as f:
        return {row["arm"]: row for row in csv.DictReader(f)}


def baseline_arm(rows: dict[str, dict[str, str]], metric: str = METRIC) -> str:
    """The arm a summary compares with (its verdict column says ``baseline``)."""
    return next(arm for arm, row in rows.items() if row[f"{metric}_verdict"] == "baseline")


def _num(row: dict[str, str], key: str) -> float | None:
    value = row.get(key, "")
    return float(value) if value not in ("", None) else None


def cell(row: dict[str, str] | None, metric: str = METRIC) -> str:
    """``mean ± std`` for the baseline, ``Δ [lo, hi] verdict (n)`` for an arm, ``not run`` when absent."""
    if row is None:
        return "not run"
    n = int(row["n_seeds"])
    if row[f"{metric}_verdict"] == "baseline":
        mean, std = _num(row, f"{metric}_mean"), _num(row, f"{metric}_std")
        return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f} (n={n})"
    d, lo, hi = (_num(row, f"{metric}_diff{s}") for s in ("", "_lo", "_hi"))
    if d is None:
        return "n/a"
    interval = f" [{lo:+.4f}, {hi:+.4f}]" if lo is not None and hi is not None else ""
    seeds = "" if n >= 5 else f" (n={n})"
    return f"{d:+.4f}{interval} {row[f'{metric}_verdict']}{seeds}"


FP_KINDS = ("wrong_class", "background", "localization", "duplicate")


def fp_cell(row: dict[str, str] | None, base: dict[str, str] | None) -> str:
    """``fp a (wrong_class +x, background +y, ...)``: an arm's FPs per run at equal recall and the change by kind."""
    if row is None or base is None or _num(row, "fp@eq_mean") is None:
        return "not run" if row is None else "n/a"
    if row is base:
        return f"{_num(row, 'fp@eq_mean'):.1f} FPs at recall {_num(row, 'eq_recall'):.2f}"
    deltas = [(k, _num(row, f"{k}@eq_mean"), _num(base, f"{k}@eq_mean")) for k in FP_KINDS]
    kinds = ", ".join(f"{k} {a - b:+.1f}" for k, a, b in deltas if a is not None and b is not None)
    return f"{_num(row, 'fp@eq_mean') - _num(base, 'fp@eq_mean'):+.1f} ({kinds})"


def fp_table(diagnoses: dict[str, dict[str, dict[str, str]]], baselines: dict[str, str]) -> str:
    """Markdown: per arm and target, the FPs per run at equal recall (baseline) or their change by kind (others)."""
    arms = list(dict.fromkeys(arm for rows in diagnoses.values() for arm in rows))
    head = f"| arm | {' | '.join(f'{t}: FPs per run at equal recall, Δ vs {baselines[t]}' for t in diagnoses)} |"
    lines = [head, "| " + " | ".join(["---"] * (1 + len(diagnoses))) + " |"]
    for arm in arms:
        cells = [fp_cell(rows.get(arm), rows.get(baselines[t])) for t, rows in diagnoses.items()]
        lines.append(f"| `{arm}` | {' | '.join(cells)} |")
    return "\n".join(lines)


def table(summaries: dict[str, dict[str, dict[str, str]]], metric: str = METRIC) -> str:
    """Markdown: one row per arm (first-seen order over the targets), one column per target."""
    arms: dict[str, dict[str, str]] = {}
    for rows in summaries.values():
        for arm, row in rows.items():
            arms.setdefault(arm, row)
    baselines = {t: baseline_arm(rows, metric) for t, rows in summaries.items()}
    titles = [f"{t}: {metric} ({b}) / Δ vs {b} [95% CI]" for t, b in baselines.items()]
    head = f"| arm | loss | overrides | {' | '.join(titles)} |"
    lines = [head, "| " + " | ".join(["---"] * (3 + len(summaries))) + " |"]
    for arm, first in arms.items():
        cells = [cell(rows.get(arm), metric) for rows in summaries.values()]
        lines.append(f"| `{arm}` | {first['loss']} | {first['overrides'] or '(none)'} | {' | '.join(cells)} |")
    return "\n".join(lines)


def write_between_markers(path: Path, text: str) -> None:
    """Replace what lies between the table markers of ``path`` with ``text``."""
    doc = path.read_text()
    if START not in doc or END not in doc:
        raise SystemExit(f"{path}: no {START} ... {END} markers")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    """Print (and optionally write) the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("targets", nargs="+", help="name=path/to/summary.csv, one per target, in column order")
    p.add_argument("--metric", default=METRIC, choices=["mAP50-95", "mAP50"])
    p.add_argument("--write", action="append", default=[], type=Path, help="file with the table markers")
    args = p.parse_args(argv)
    summaries, diagnoses = {}, {}
    for item in args.targets:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"invalid target {item!r}: give name=path/to/summary.csv (an existing file)")
        summaries[name] = read_csv(Path(path))
        diagnosis = Path(path).with_name("diagnosis.csv")
        if diagnosis.is_file():
            diagnoses[name] = read_csv(diagnosis)
    text = table(summaries, args.metric)
    if diagnoses:
        text += "\n\n" + fp_table(diagnoses, {t: baseline_arm(summaries[t], args.metric) for t in diagnoses})
    for path in args.write:
        write_between_markers(path, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
