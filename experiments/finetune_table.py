"""The fine-tuning study's cross-target table: one row per arm, the paired difference to the baseline per target.

Reads the ``summary.csv`` that ``yolo-vfl ab`` wrote for each target and prints a markdown table; ``--write FILE``
replaces the table between ``<!-- finetune-table -->`` and ``<!-- /finetune-table -->`` in each file given::

    python experiments/finetune_table.py \
        digits=experiments/results/ab_finetune_digits/summary.csv \
        glyphs=experiments/results/ab_finetune_glyphs/summary.csv \
        --write experiments/README.md

A target may name several reports, comma-separated (``digits=round1/summary.csv,round2/summary.csv``): later
rounds that re-ran the baseline with the same seeds and added arms. Each arm's row comes from the first report that
has it, and its difference is the one paired against that report's own baseline. A cell from a later round names
it, and the baseline cell adds a later round's baseline where its value differs. An arm missing from every report of
a target is written ``not run``.

Where a ``diagnosis.csv`` (``yolo-vfl ab diagnose``) lies next to a ``summary.csv``, a second table gives each arm's
false positives at equal recall against its report's baseline, by kind (a later round's recall level is named in
its cells). Every number is a cell of a ``summary.csv`` or ``diagnosis.csv``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Callable, Optional

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


def fp_cell(row: dict[str, str] | None, base: dict[str, str] | None, recall: float | None = None) -> str:
    """``fp a (wrong_class +x, background +y, ...)``: an arm's FPs per run at equal recall and the change by kind.

    ``recall``: the recall level of the table's first report; a cell measured at another level names its own.
    """
    if row is None or base is None or _num(row, "fp@eq_mean") is None:
        return "not run" if row is None else "n/a"
    own = _num(row, "eq_recall")
    if row is base:
        return f"{_num(row, 'fp@eq_mean'):.1f} FPs at recall {own:.2f}"
    deltas = [(k, _num(row, f"{k}@eq_mean"), _num(base, f"{k}@eq_mean")) for k in FP_KINDS]
    kinds = ", ".join(f"{k} {a - b:+.1f}" for k, a, b in deltas if a is not None and b is not None)
    at = "" if recall is None or own is None or round(own, 2) == round(recall, 2) else f" at recall {own:.2f}"
    return f"{_num(row, 'fp@eq_mean') - _num(base, 'fp@eq_mean'):+.1f}{at} ({kinds})"


Rounds = list[dict[str, dict[str, str]]]  # one target's reports (summary or diagnosis rows by arm), in round order


def _rounds(value: dict[str, dict[str, str]] | Rounds) -> Rounds:
    return value if isinstance(value, list) else [value]


def _find(rounds: Rounds, arm: str) -> tuple[int, dict[str, str]] | None:
    """The first report (its index and row) that has ``arm``."""
    return next(((i, rows[arm]) for i, rows in enumerate(rounds) if arm in rows), None)


def _arms(targets: dict[str, Rounds]) -> list[str]:
    return list(dict.fromkeys(arm for rounds in targets.values() for rows in rounds for arm in rows))


Render = Callable[[dict[str, str], Optional[dict[str, str]], Optional[dict[str, str]]], str]


def _cells(targets: dict[str, Rounds], bases: dict[str, list[str]], arm: str, render: Render) -> list[str]:
    """One cell per target: ``render(row, its report's baseline row, the first report's baseline row)``.

    The row comes from the first report that has ``arm``; a cell from a later report says ``(round N)``, and a
    baseline cell adds each later round's baseline that renders differently, as ``(round N: ...)``, or
    ``(rounds N, M: ...)`` for later rounds whose baselines render the same.
    """
    cells = []
    for t, rounds in targets.items():
        found = _find(rounds, arm)
        if found is None:
            cells.append("not run")
            continue
        i, row = found
        names = bases[t]
        base = rounds[i].get(names[i])
        text = render(row, base, rounds[0].get(names[0]))
        if row is base:
            later = [(j, r[names[j]]) for j, r in enumerate(rounds) if j > i and names[j] in r]
            groups: dict[str, list[str]] = {}  # a later baseline that differs from the first, by rendering
            for j, b in later:
                if (c := render(b, b, b)) != text:
                    groups.setdefault(c, []).append(str(j + 1))
            text += "".join(f" (round{'s' * (len(js) > 1)} {', '.join(js)}: {c})" for c, js in groups.items())
        elif i > 0:
            text += f" (round {i + 1})"
        cells.append(text)
    return cells


def fp_table(diagnoses: dict[str, dict[str, dict[str, str]] | Rounds], baselines: dict[str, str | list[str]]) -> str:
    """Markdown: per arm and target, the FPs per run at equal recall (baseline) or their change by kind (others).

    Each arm is compared with its own report's baseline; a later round's baseline that differs is added to the
    baseline cell.
    """
    targets = {t: _rounds(d) for t, d in diagnoses.items()}
    bases = {t: [b] * len(targets[t]) if isinstance(b, str) else b for t, b in baselines.items()}
    head = f"| arm | {' | '.join(f'{t}: FPs per run at equal recall, Δ vs {bases[t][0]}' for t in targets)} |"
    lines = [head, "| " + " | ".join(["---"] * (1 + len(targets))) + " |"]

    def render(row: dict[str, str], base: dict[str, str] | None, first: dict[str, str] | None) -> str:
        return fp_cell(row, base, _num(first, "eq_recall") if first is not None else None)

    for arm in _arms(targets):
        lines.append(f"| `{arm}` | {' | '.join(_cells(targets, bases, arm, render))} |")
    return "\n".join(lines)


def table(summaries: dict[str, dict[str, dict[str, str]] | Rounds], metric: str = METRIC) -> str:
    """Markdown: one row per arm (first-seen order over the targets and rounds), one column per target."""
    targets = {t: _rounds(s) for t, s in summaries.items()}
    bases = {t: [baseline_arm(rows, metric) for rows in rounds] for t, rounds in targets.items()}
    titles = [f"{t}: {metric} ({b[0]}) / Δ vs {b[0]} [95% CI]" for t, b in bases.items()]
    head = f"| arm | loss | overrides | {' | '.join(titles)} |"
    lines = [head, "| " + " | ".join(["---"] * (3 + len(targets))) + " |"]
    for arm in _arms(targets):
        first = next(found[1] for rounds in targets.values() if (found := _find(rounds, arm)) is not None)
        cells = _cells(targets, bases, arm, lambda row, *_: cell(row, metric))
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
    p.add_argument(
        "targets",
        nargs="+",
        help="name=path/to/summary.csv[,path/to/round2/summary.csv ...], one per target, in column order",
    )
    p.add_argument("--metric", default=METRIC, choices=["mAP50-95", "mAP50"])
    p.add_argument("--write", action="append", default=[], type=Path, help="file with the table markers")
    args = p.parse_args(argv)
    summaries: dict[str, Rounds] = {}
    diagnoses: dict[str, Rounds] = {}
    for item in args.targets:
        name, sep, paths = item.partition("=")
        files = [Path(x) for x in paths.split(",")] if sep else []
        if not files or not all(f.is_file() for f in files):
            raise SystemExit(f"invalid target {item!r}: give name=path/to/summary.csv[,...] (existing files)")
        summaries[name] = [read_csv(f) for f in files]
        found = [f.with_name("diagnosis.csv") for f in files]
        if all(d.is_file() for d in found):
            diagnoses[name] = [read_csv(d) for d in found]
        elif any(d.is_file() for d in found):
            raise SystemExit(f"target {name!r}: some of its reports have a diagnosis.csv and some not: {paths}")
    text = table(summaries, args.metric)
    if diagnoses:
        bases = {t: [baseline_arm(rows, args.metric) for rows in summaries[t]] for t in diagnoses}
        text += "\n\n" + fp_table(diagnoses, bases)
    for path in args.write:
        write_between_markers(path, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
