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


def _diagnosis(path: Path, *rows: str) -> None:
    kinds = ",".join(f"{k}@eq_mean" for k in ("wrong_class", "background", "localization", "duplicate"))
    path.write_text("\n".join([f"arm,eq_recall,fp@eq_mean,{kinds}", *rows]) + "\n")


def test_rounds_merge_each_arm_from_its_first_report_against_that_report_s_baseline(ft, tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    r1 = _summary(
        tmp_path / "r1" / "summary.csv",
        "bce,bce,,5,0.7,0.006,,,,baseline",
        "vfl,vfl,,5,0.65,0.01,-0.05,-0.06,-0.04,worse",
    )
    r2 = _summary(
        tmp_path / "r2" / "summary.csv",
        "bce,bce,,5,0.7,0.006,,,,baseline",
        "vfl,vfl,,5,0.6,0.01,-0.1,-0.11,-0.09,worse",
        "bce_iou,bce,cls_target=iou,5,0.71,0.005,0.01,0.002,0.018,better",
    )
    _diagnosis(tmp_path / "r1" / "diagnosis.csv", "bce,0.76,43.0,10,20,8,5", "vfl,0.76,58.0,20,22,10,6")
    _diagnosis(tmp_path / "r2" / "diagnosis.csv", "bce,0.78,50.0,12,24,9,5", "bce_iou,0.78,45.0,10,22,8,5")
    doc = tmp_path / "doc.md"
    doc.write_text(f"{ft.START}\n{ft.END}\n")
    assert ft.main([f"digits={r1},{r2}", "--write", str(doc)]) == 0  # the CLI reads both rounds and their diagnoses
    accuracy, fps = doc.read_text().split("\n\n")
    lines = accuracy.splitlines()
    assert "| `bce_iou` | -5.0 at recall 0.78 (" in fps
    rows = {line.split(" | ")[0]: line for line in lines if line.startswith("| `")}
    assert rows["| `bce`"].endswith("| 0.7000 ± 0.0060 |")  # the same baseline twice: written once
    assert rows["| `vfl`"].endswith("| -0.0500 [-0.0600, -0.0400] worse |")  # round 1's row, not round 2's
    assert rows["| `bce_iou`"] == "| `bce_iou` | bce | cls_target=iou | +0.0100 [+0.0020, +0.0180] better (round 2) |"
    fp = ft.fp_table({"digits": [ft.read_csv(p.with_name("diagnosis.csv")) for p in (r1, r2)]}, {"digits": "bce"})
    fp_rows = {line.split(" | ")[0]: line for line in fp.splitlines() if line.startswith("| `")}
    assert fp_rows["| `bce`"] == "| `bce` | 43.0 FPs at recall 0.76 (round 2: 50.0 FPs at recall 0.78) |"
    assert (
        fp_rows["| `vfl`"]
        == "| `vfl` | +15.0 (wrong_class +10.0, background +2.0, localization +2.0, duplicate +1.0) |"
    )
    kinds = "wrong_class -2.0, background -2.0, localization -1.0, duplicate +0.0"
    assert fp_rows["| `bce_iou`"] == f"| `bce_iou` | -5.0 at recall 0.78 ({kinds}) (round 2) |"


def test_a_later_round_s_different_baseline_is_shown_and_mixed_diagnoses_are_refused(ft, tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    r1 = _summary(tmp_path / "r1" / "summary.csv", "bce,bce,,5,0.7,0.006,,,,baseline")
    r2 = _summary(tmp_path / "r2" / "summary.csv", "bce,bce,,5,0.71,0.004,,,,baseline")
    row = ft.table({"digits": [ft.read_csv(r1), ft.read_csv(r2)]}).splitlines()[2]
    assert row == "| `bce` | bce | (none) | 0.7000 ± 0.0060 (round 2: 0.7100 ± 0.0040) |"
    r3 = _summary(tmp_path / "r3.csv", "bce,bce,,5,0.7,0.006,,,,baseline")  # round 3 reproduces round 1: not shown
    r4 = _summary(tmp_path / "r4.csv", "bce,bce,,5,0.69,0.005,,,,baseline")
    row = ft.table({"digits": [ft.read_csv(p) for p in (r1, r2, r3, r4)]}).splitlines()[2]
    assert row == "| `bce` | bce | (none) | 0.7000 ± 0.0060 (round 2: 0.7100 ± 0.0040) (round 4: 0.6900 ± 0.0050) |"
    r5 = _summary(tmp_path / "r5.csv", "bce,bce,,5,0.71,0.004,,,,baseline")  # round 5 reproduces round 2: one cell
    row = ft.table({"digits": [ft.read_csv(p) for p in (r1, r2, r3, r4, r5)]}).splitlines()[2]
    assert row == "| `bce` | bce | (none) | 0.7000 ± 0.0060 (rounds 2, 5: 0.7100 ± 0.0040) (round 4: 0.6900 ± 0.0050) |"
    _diagnosis(tmp_path / "r1" / "diagnosis.csv", "bce,0.76,43.0,10,20,8,5")
    with pytest.raises(SystemExit, match="some of its reports have a diagnosis.csv"):
        ft.main([f"digits={r1},{r2}"])
    with pytest.raises(SystemExit, match="existing files"):
        ft.main([f"digits={r1},{tmp_path / 'missing.csv'}"])
