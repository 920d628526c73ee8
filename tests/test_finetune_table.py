"""experiments/finetune_table.py: the cross-target table is the cells of the targets' summary.csv files."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_experiment_script

COLUMNS = "arm,loss,overrides,n_seeds,mAP50-95_mean,mAP50-95_std,mAP50-95_diff,mAP50-95_diff_lo,mAP50-95_diff_hi,"
COLUMNS += "mAP50-95_verdict"


@pytest.fixture(scope="module")
def ft():
    return load_experiment_script("finetune_table")


def _summary(path: Path, *rows: str) -> Path:
    path.write_text("\n".join([COLUMNS, *rows]) + "\n")
    return path


def test_rows_per_arm_and_missing_arms(ft, tmp_path):
    a = _summary(
        tmp_path / "a.csv",
        "bce,bce,,5,0.7,0.006,,,,baseline",
        "vfl,vfl,vfl_gamma=1.0,5,0.65,0.01,-0.05,-0.06,-0.04,worse",
    )
    b = _summary(tmp_path / "b.csv", "bce,bce,,3,0.35,,,,,baseline", "qfl,qfl,,2,0.36,0.01,0.01,-0.002,0.022,no clear")
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{ft.START}\nold\n{ft.END}\nafter\n")
    assert ft.main([f"digits={a}", f"glyphs={b}", "--write", str(doc)]) == 0
    lines = doc.read_text().splitlines()
    assert lines[0] == "before" and lines[-1] == "after" and "old" not in lines
    rows = {line.split(" | ")[0]: line for line in lines if line.startswith("| `")}
    assert rows["| `bce`"].endswith("| 0.7000 ± 0.0060 | 0.3500 (n=3) |")
    assert rows["| `vfl`"] == "| `vfl` | vfl | vfl_gamma=1.0 | -0.0500 [-0.0600, -0.0400] worse | not run |"
    assert rows["| `qfl`"].endswith("| not run | +0.0100 [-0.0020, +0.0220] no clear (n=2) |")


def test_bad_target_and_missing_markers(ft, tmp_path):
    with pytest.raises(SystemExit, match="name=path"):
        ft.main([str(tmp_path / "nope.csv")])
    a = _summary(tmp_path / "a.csv", "bce,bce,,5,0.7,0.006,,,,baseline")
    doc = tmp_path / "doc.md"
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        ft.main([f"digits={a}", "--write", str(doc)])


def test_fp_table_from_the_diagnosis_next_to_the_summary(ft, tmp_path):
    a = _summary(
        tmp_path / "summary.csv", "bce,bce,,5,0.7,0.006,,,,baseline", "vfl,vfl,,5,0.65,0.01,-0.05,-0.06,-0.04,worse"
    )
    kinds = ",".join(f"{k}@eq_mean" for k in ft.FP_KINDS)
    (tmp_path / "diagnosis.csv").write_text(
        f"arm,eq_recall,fp@eq_mean,{kinds}\nbce,0.76,43.0,10,20,8,5\nvfl,0.76,158.4,98.2,39.6,12.8,7.8\n"
    )
    lines = ft.table({"digits": ft.read_csv(a)}).splitlines()
    assert len(lines) == 4  # the accuracy table alone
    text = ft.fp_table({"digits": ft.read_csv(tmp_path / "diagnosis.csv")}, {"digits": "bce"})
    rows = text.splitlines()[2:]
    assert rows[0] == "| `bce` | 43.0 FPs at recall 0.76 |"
    assert rows[1] == "| `vfl` | +115.4 (wrong_class +88.2, background +19.6, localization +4.8, duplicate +2.8) |"


def test_main_appends_the_fp_table_when_a_diagnosis_exists(ft, tmp_path, capsys):
    a = _summary(tmp_path / "summary.csv", "bce,bce,,5,0.7,0.006,,,,baseline")
    ft.main([f"digits={a}"])
    assert "equal recall" not in capsys.readouterr().out
    (tmp_path / "diagnosis.csv").write_text("arm,eq_recall,fp@eq_mean\nbce,0.5,12.0\n")
    ft.main([f"digits={a}"])
    assert "| `bce` | 12.0 FPs at recall 0.50 |" in capsys.readouterr().out


def test_the_header_names_each_target_s_own_baseline(ft, tmp_path):
    a = _summary(
        tmp_path / "a.csv", "bce_cls1,bce,cls=1.0,5,0.68,0.004,,,,baseline", "vfl,vfl,,5,0.69,0.01,0.01,0.0,0.02,better"
    )
    head = ft.table({"digits": ft.read_csv(a)}).splitlines()[0]
    assert head == "| arm | loss | overrides | digits: mAP50-95 (bce_cls1) / Δ vs bce_cls1 [95% CI] |"
