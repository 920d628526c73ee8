"""yolo_vfl.ab.results: the long results table (one row per run, epoch or final, metric) and ``RunResult``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from yolo_vfl.ab import regenerate_report
from yolo_vfl.ab.report import summarize
from yolo_vfl.ab.results import (
    FINAL_METRICS,
    SCHEMA,
    TABLE_FILE,
    MissingMetricError,
    RunResult,
    check_metrics,
    epoch_table,
    final_values,
    read_table,
    table_of,
)

GOLDEN = Path(__file__).resolve().parent / "golden" / "ab_experiment"


def run(arm: str, seed: int, value: float) -> RunResult:
    """A hand-made run with a 3-epoch mAP50-95 curve ending at ``value``."""
    curve = {"epoch": [1, 2, 3], "mAP50-95": [value / 3, value / 2, value]}
    d = {"arm": arm, "seed": seed, "run": f"{arm}-s{seed}", "metrics": {"mAP50-95": value}, "curve": curve}
    return RunResult.from_dict(d)


def test_table_is_long_with_one_row_per_final_metric():
    """Every final metric has one row per run (epoch null), its value empty where the run has none."""
    table = table_of([run("bce", 0, 0.3), run("vfl", 1, 0.4)])
    assert dict(table.schema) == SCHEMA
    final = table.filter(pl.col("epoch").is_null())
    assert final.height == 2 * len(FINAL_METRICS)
    assert table.filter(pl.col("epoch").is_not_null())["epoch"].to_list() == [1, 2, 3] * 2  # mAP50-95 only
    wide = final_values(table, ["mAP50-95", "mAP50"])
    assert wide.sort("run").rows() == [("bce-s0", "bce", 0, 0.3, None), ("vfl-s1", "vfl", 1, 0.4, None)]


def test_missing_metric_raises_naming_metric_and_run():
    """A metric without a row for a run is an error that names both (and a close match), never a '-'."""
    table = table_of([run("bce", 0, 0.3), run("vfl", 0, 0.4)])
    table = table.filter(~((pl.col("run") == "vfl-s0") & (pl.col("metric") == "recall")))
    with pytest.raises(MissingMetricError, match=r"'recall' missing from run vfl-s0") as e:
        summarize([run("bce", 0, 0.3), run("vfl", 0, 0.4)], table=table)
    assert e.value.metric == "recall" and e.value.run == "vfl-s0" and isinstance(e.value, KeyError)
    with pytest.raises(MissingMetricError, match=r"'mAP50-59'.*similar: mAP50-95"):
        check_metrics(table, ["mAP50-59"])


def test_epoch_table_keeps_the_last_of_a_rerun_epoch(tmp_path):
    """results.csv in long form: stripped names, every column, a re-run epoch (after a resume) keeps its last row."""
    path = tmp_path / "results.csv"
    path.write_text("  epoch, time,metrics/mAP50-95(B)\n1,10,0.1\n2,20,0.2\n2,5,0.25\n")
    long = epoch_table(path)
    assert long.sort("metric", "epoch").rows() == [
        (1, "metrics/mAP50-95(B)", 0.1),
        (2, "metrics/mAP50-95(B)", 0.25),
        (1, "time", 10.0),
        (2, "time", 5.0),
    ]
    assert epoch_table(tmp_path / "none.csv").height == 0


def test_report_writes_each_runs_table_loadable_in_one_line(tmp_path):
    """`ab report` writes runs/*/results_long.csv; one read_csv of the glob gives every run's rows, per epoch and final.

    The ranking columns are recomputed from the records: a frozen value in result.json is not what the table holds.
    """
    out = tmp_path / "exp"
    shutil.copytree(GOLDEN, out)
    result_json = out / "runs" / "bce-s0" / "result.json"
    frozen = json.loads(result_json.read_text())
    true_pearson = frozen["ranking"]["pearson"]
    frozen["ranking"]["pearson"] = 0.999
    result_json.write_text(json.dumps(frozen))
    regenerate_report(out)
    table = pl.read_csv(out / "runs" / "*" / TABLE_FILE, schema=SCHEMA)
    assert table.equals(read_table(sorted(out.glob(f"runs/*/{TABLE_FILE}"))))
    assert sorted(table["run"].unique()) == sorted(p.parent.name for p in out.glob("runs/*/result.json"))
    per_epoch = table.filter(pl.col("epoch").is_not_null() & (pl.col("metric") == "metrics/mAP50-95(B)"))
    assert per_epoch.group_by("run").len()["len"].to_list() == [10] * 8
    pearson = table.filter((pl.col("run") == "bce-s0") & (pl.col("metric") == "rank/pearson"))["value"].item()
    assert pearson == pytest.approx(true_pearson, abs=1e-12) and pearson != 0.999
