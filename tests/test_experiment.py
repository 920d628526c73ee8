"""The A/B runner and report: spec validation, statistics, ranking correlation, end-to-end runs, resumability, Ray."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import IMGSZ

from yolo_vfl.cli import CLIError
from yolo_vfl.experiment import (
    ABSpec,
    _data_token,
    _resolve_data,
    cli_ab,
    inspect_run,
    load_spec,
    make_jobs,
    planned_state,
    read_results_csv,
    run_ab,
    run_one,
    spec_from_dict,
)
from yolo_vfl.report import (
    box_iou,
    correlations,
    match_detections,
    mean_std,
    paired_difference,
    pearson,
    rankdata,
    spearman,
    summarize,
    summary_markdown,
    t_ppf,
    verdict,
    write_report,
)

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def tiny_spec(data: Path, out: Path, arms=("bce", "vfl"), seeds=(0,), epochs: int = 1, **extra) -> ABSpec:
    """A spec that trains in seconds: 64 px, 16 images, batch 4, no workers, CPU."""
    raw = {
        "name": "tiny",
        "out": str(out),
        "seeds": list(seeds),
        "device": "cpu",
        "ranking": {"max_points": 300},
        "train": {
            "model": "yolov8n.yaml",
            "data": str(data),
            "imgsz": IMGSZ,
            "epochs": epochs,
            "batch": 4,
            "workers": 0,
            "plots": False,
            "verbose": False,
        },
        "arms": {a: {} for a in arms},
    }
    raw.update(extra)
    return spec_from_dict(raw)


def result(arm: str, seed: int, map5095: float, map50: float = 0.5, p: float = 0.6, r: float = 0.4, **kw) -> dict:
    """A hand-made result dict as run_one writes it."""
    return {
        "run": f"{arm}-s{seed}",
        "arm": arm,
        "seed": seed,
        "loss": arm,
        "overrides": {},
        "metrics": {"mAP50": map50, "mAP50-95": map5095, "precision": p, "recall": r},
        "final_losses": {"train/box_loss": 1.0, "train/cls_loss": 2.0, "train/dfl_loss": 1.5},
        "curve": {"epoch": [1, 2, 3], "mAP50-95": [map5095 / 3, map5095 / 2, map5095]},
        "train_time_s": 60.0,
        "wall_time_s": 70.0,
        "epochs_done": 3,
        "ranking": {"pearson": 0.5, "spearman": 0.4, "points": {"conf": [0.1, 0.9], "iou": [0.2, 0.8]}},
        "versions": {"ultralytics": "8.4.190", "torch": "2.14.1"},
        **kw,
    }


# ----------------------------------------------------------------------------------------------- spec and validation
@pytest.mark.parametrize(
    "name", ["ab_embedded", "ab_coco128_gpu", "ab_cls_gain_sweep", "ab_vfl_study", "ab_glyphs", "ab_long"]
)
def test_ready_specs_load(name):
    """The specs in experiments/ validate; every arm's loss is a registered one and bce is the baseline."""
    spec = load_spec(EXPERIMENTS / f"{name}.yaml")
    assert spec.baseline == "bce" and "bce" in spec.arm_names
    assert spec.seeds == [0, 1, 2]
    assert {a.loss for a in spec.arms} <= {"bce", "vfl", "qfl"}


def test_embedded_spec_uses_embedded_data_and_coco_spec_gpu():
    """ab_embedded trains yolov8n.yaml on the embedded data on CPU; the coco128 spec uses GPU 0 at 640 px."""
    emb = load_spec(EXPERIMENTS / "ab_embedded.yaml")
    assert emb.train["data"] is None and emb.train["model"] == "yolov8n.yaml" and emb.device == ["cpu"]
    coco = load_spec(EXPERIMENTS / "ab_coco128_gpu.yaml")
    assert coco.train["data"] == "coco128.yaml" and coco.train["imgsz"] == 640 and coco.device == ["0"]
    sweep = load_spec(EXPERIMENTS / "ab_cls_gain_sweep.yaml")
    gains = {(a.loss, a.overrides.get("cls")) for a in sweep.arms}
    assert {("vfl", 0.5), ("vfl", 4.0), ("qfl", 1.0), ("bce", 0.5)} <= gains


def test_glyphs_spec_trains_on_the_second_generated_dataset():
    """ab_glyphs names data: embedded-glyphs; the runs train on the generated glyphs dataset, not on a file so named."""
    spec = load_spec(EXPERIMENTS / "ab_glyphs.yaml")
    assert spec.train["data"] == "embedded-glyphs"
    data = Path(_resolve_data(spec))
    assert data.name == "data.yaml" and data.parent.name.startswith("glyphs-n600-s1-") and data.exists()
    assert _data_token(spec) == "embedded-glyphs"
    emb = load_spec(EXPERIMENTS / "ab_embedded.yaml")
    assert Path(_resolve_data(emb)).parent.name.startswith("shapes-n600-s0-")


def test_overrides_seeds_arms_devices_and_per_arm_keys():
    """CLI-style overrides: seeds, a subset of arms, shared train args, <arm>.<key>, device slots, ray keys."""
    spec = load_spec(
        EXPERIMENTS / "ab_embedded.yaml",
        {
            "seeds": [3, 4],
            "arms": "bce,vfl",
            "epochs": 3,
            "vfl.cls": 1.0,
            "vfl.vfl_gamma": 1.5,
            "device": (0, 1),
            "out": "/tmp/x",
            "name": "mine",
            "ray.num_gpus": 1,
        },
    )
    assert spec.seeds == [3, 4] and spec.arm_names == ["bce", "vfl"] and spec.train["epochs"] == 3
    assert spec.arms[1].overrides == {"cls": 1.0, "vfl_gamma": 1.5}
    assert spec.device == ["0", "1"] and spec.out == "/tmp/x" and spec.name == "mine" and spec.ray_num_gpus == 1
    assert load_spec(None, {"device": "0,1"}).device == ["0", "1"]
    assert load_spec(None, {"device": ["0,1", "2,3"]}).device == ["0,1", "2,3"]  # two DDP slots
    assert load_spec(None, {"arms": "bce,qfl"}).arm_names == ["bce", "qfl"]  # plain losses need no spec entry
    default = load_spec(None)
    assert default.arm_names == ["bce", "vfl", "qfl"] and default.train["data"] is None


@pytest.mark.parametrize(
    "raw, overrides, match",
    [
        ({"seed": [0]}, {}, "Unknown spec key 'seed'. Did you mean 'seeds'"),
        ({"train": {"epoch": 3}}, {}, "Unknown argument 'epoch' in train. Did you mean 'epochs'"),
        ({}, {"epoch": 3}, "Unknown argument 'epoch'. Did you mean 'epochs'"),
        ({"arms": {"bce": {}, "x": {"loss": "vfll"}}}, {}, "Arm 'x'.*vfll"),
        ({"arms": {"bce": {"vfl_gamma": 1.0}}}, {}, "has no effect with loss='bce'"),
        ({"arms": {"bce": {}, "vfl": {"epochs": 5}}}, {}, "every arm trains with the same epochs"),
        ({"arms": {"vfl": {}, "qfl": {}}}, {}, "baseline arm 'bce' is not among the arms"),
        ({}, {"vfl_gamma": 1.0}, r"<arm>.vfl_gamma=1.0"),
        ({"train": {"seed": 1}}, {}, "set by the A/B runner"),
        ({"arms": {"bce": {}, "mine": {}}}, {}, "Arm 'mine' needs loss="),
        ({"train": {"time": 0.5}}, {}, "use epochs= instead"),
        ({"train": {"deterministic": False}}, {}, "deterministic mode"),
        ({"train": {"vfl_alpha": 0.5}}, {}, "is a loss setting"),
        ({"seeds": []}, {}, "seeds is empty"),
        ({"seeds": [0, 0]}, {}, "repeats a seed"),
        ({"backend": "slurm"}, {}, "'local' or 'ray'"),
        ({"arms": {"bce": {}, "v.1": {"loss": "vfl"}}}, {}, "Invalid arm name 'v.1'"),
        ({"arms": {"bce": {}, "vfl": {"lr0": "fast"}}}, {}, "Arm 'vfl'"),
        ({}, {"nosuch.cls": 1.0}, "Unknown section 'nosuch'"),
        ({"ranking": {"conff": 0.1}}, {}, "Did you mean 'conf'"),
    ],
)
def test_spec_validation_errors(raw, overrides, match):
    """Invalid specs fail before any training with one clear message (and a close-match suggestion)."""
    base = {"arms": {"bce": {}, "vfl": {}}}
    with pytest.raises(CLIError, match=match):
        spec_from_dict({**base, **raw}, overrides)


def test_missing_spec_file_and_bad_yaml(tmp_path):
    """A missing spec file or broken YAML is a user error naming the file."""
    with pytest.raises(CLIError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("arms: [bce\n")
    with pytest.raises(CLIError, match="not valid YAML"):
        load_spec(bad)


def test_jobs_share_data_epochs_imgsz_and_seed(tmp_path):
    """Every arm x seed gets identical data, model, epochs, imgsz; seed and deterministic set; per-arm overrides."""
    spec = spec_from_dict(
        {
            "seeds": [0, 1],
            "train": {"data": "d.yaml", "epochs": 4, "imgsz": 96},
            "arms": {"bce": {}, "vfl": {"cls": 2.0, "vfl_gamma": 1.0}},
        }
    )
    jobs = make_jobs(spec, tmp_path, data="d.yaml")
    assert [j["run"] for j in jobs] == ["bce-s0", "vfl-s0", "bce-s1", "vfl-s1"]
    for j in jobs:
        assert (j["data"], j["model"], j["train"]["epochs"], j["train"]["imgsz"]) == ("d.yaml", "yolov8n.yaml", 4, 96)
        assert j["train"]["seed"] == j["seed"] and j["train"]["deterministic"] is True
        assert j["run_dir"] == str(tmp_path.resolve() / "runs" / j["run"])
    vfl = jobs[1]
    assert vfl["train"]["cls"] == 2.0 and vfl["settings"]["loss"] == "vfl" and vfl["settings"]["vfl_gamma"] == 1.0
    assert "cls" not in jobs[0]["train"] and jobs[0]["settings"]["loss"] == "bce"
    assert jobs[0]["fingerprint"] != jobs[2]["fingerprint"]  # the seed is part of what was trained


def test_cli_ab_user_errors(tmp_path, capsys):
    """cli_ab: help, a missing spec, report without out=, an unknown key."""
    assert cli_ab(["help"]) == 0 and "yolo-vfl ab report out=DIR" in capsys.readouterr().out
    with pytest.raises(CLIError, match="not found"):
        cli_ab([str(tmp_path / "missing.yaml")])
    with pytest.raises(CLIError, match="needs out=DIR"):
        cli_ab(["report"])
    with pytest.raises(CLIError, match="Did you mean 'seeds'"):
        cli_ab(["seedz=[0]"])
    with pytest.raises(CLIError, match="No finished runs"):
        cli_ab(["report", f"out={tmp_path}"])


def test_dry_run_plans_without_training(det_data, tmp_path, capsys):
    """dry_run lists the runs to do and trains nothing."""
    spec = tiny_spec(det_data, tmp_path / "ab")
    run_ab(spec, dry_run=True)
    out = capsys.readouterr().out
    assert "2 runs" in out and "to run: bce-s0, vfl-s0" in out
    assert not (tmp_path / "ab").exists()  # no spec.yaml, experiment.json or lock either


@pytest.mark.parametrize(
    "change, match",
    [
        ({"device": "cuda:0"}, r"Invalid device='cuda:0': CUDA is not available"),
        ({"device": [[0, 7]]}, r"Invalid device=.0,7.: CUDA is not available"),
        ({"device": "tpu"}, r"unknown device 'tpu'"),
        ({"train": {"data": "missing.yaml"}}, "missing.yaml"),
        ({"train": {"model": "missing_weights.pt"}}, "missing_weights.pt"),
    ],
)
def test_refused_run_creates_nothing(det_data, tmp_path, change, match):
    """A device this machine lacks, missing data or missing weights: refused before anything is written."""
    import torch

    if "device" in change and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    spec = tiny_spec(det_data, tmp_path / "ab")
    raw = spec.to_dict()
    raw["train"].update(change.pop("train", {}))
    raw.update(change)
    with pytest.raises(CLIError, match=match):
        run_ab(spec_from_dict(raw), command="refused")
    assert not (tmp_path / "ab").exists()


# ----------------------------------------------------------------------------------------------- statistics
def test_t_quantiles():
    """Student-t quantiles match the tables (two-sided 95%: df 1, 2, 4, 9, 30, large)."""
    for df, q in [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423), (1e9, 1.9600)]:
        assert t_ppf(0.975, df) == pytest.approx(q, abs=1e-4)
    assert t_ppf(0.025, 4) == pytest.approx(-2.7764, abs=1e-4)


def test_mean_std_one_value_has_no_std():
    """The sample std is undefined with one seed (None), ddof=1 otherwise."""
    assert mean_std([0.4]) == (0.4, None)
    m, s = mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0)
    assert mean_std([]) == (None, None)


def test_paired_difference_interval_by_hand():
    """Paired differences seed by seed; the interval is mean +- t(0.975, n-1) sd / sqrt(n)."""
    arm = {0: 0.50, 1: 0.52, 2: 0.505}
    base = {0: 0.45, 1: 0.46, 2: 0.45, 3: 0.9}  # seed 3 has no partner: ignored
    d = paired_difference(arm, base)
    diffs = [0.05, 0.06, 0.055]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)
    assert d["n"] == 3 and d["seeds"] == [0, 1, 2]
    assert d["mean"] == pytest.approx(mean) and d["std"] == pytest.approx(sd)
    assert d["lo"] == pytest.approx(mean - half) and d["hi"] == pytest.approx(mean + half)
    assert d["lo"] > 0 and verdict(d) == "better"


def test_verdict_rules():
    """better/worse only when the interval excludes zero; one seed or a straddling interval: no clear difference."""
    assert verdict(paired_difference({0: 0.3, 1: 0.31}, {0: 0.4, 1: 0.40})) == "worse"
    assert verdict(paired_difference({0: 0.5, 1: 0.3}, {0: 0.4, 1: 0.4})) == "no clear difference"
    one = paired_difference({0: 0.9}, {0: 0.1})
    assert one["lo"] is None and verdict(one) == "no clear difference (1 seed)"
    assert verdict(paired_difference({0: 0.9}, {1: 0.1})) == "n/a (no paired baseline run)"
    assert verdict(paired_difference({0: 0.4, 1: 0.4}, {0: 0.4, 1: 0.4})) == "no clear difference"


def test_summarize_rows_and_markdown():
    """summarize: baseline first, means/stds, paired CI vs baseline, verdict from mAP50-95; markdown shows them."""
    results = [result("vfl", s, v) for s, v in [(0, 0.50), (1, 0.52), (2, 0.505)]]
    results += [result("bce", s, v) for s, v in [(0, 0.45), (1, 0.46), (2, 0.45)]]
    results += [result("qfl", 0, 0.30)]
    rows = summarize(results, baseline="bce")
    assert [r["arm"] for r in rows] == ["bce", "vfl", "qfl"]
    bce, vfl, qfl = rows
    assert bce["verdict"] == "baseline" and bce["mAP50-95_diff"] is None
    assert vfl["mAP50-95_mean"] == pytest.approx(0.50833333) and vfl["n_seeds"] == 3
    assert vfl["mAP50-95_diff"] == pytest.approx(0.055) and vfl["verdict"] == "better"
    assert vfl["mAP50_verdict"] == "no clear difference"  # identical mAP50 everywhere: interval [0, 0]
    assert qfl["mAP50-95_std"] is None and qfl["verdict"] == "no clear difference (1 seed)"
    md = summary_markdown(rows, results, {"name": "t", "baseline": "bce", "commands": ["yolo-vfl ab x.yaml"]})
    assert "**better**" in md and "no clear difference (1 seed)" in md and "`yolo-vfl ab x.yaml`" in md
    assert "0.5083 ± 0.0104" in md


def test_write_report_files(tmp_path):
    """write_report writes summary.csv/.md, curves.png and ranking.png; the CSV has versions and the command."""
    results = [result(a, s, 0.4 + 0.01 * s + (0.02 if a == "vfl" else 0)) for a in ("bce", "vfl") for s in (0, 1)]
    paths = write_report(tmp_path, results, {"name": "t", "baseline": "bce", "commands": ["yolo-vfl ab"]})
    for name in ("summary.csv", "summary.md", "curves.png", "ranking.png"):
        assert paths[name].stat().st_size > 0
    assert paths["curves.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(paths["summary.csv"])))
    assert [r["arm"] for r in rows] == ["bce", "vfl"]
    assert rows[1]["verdict"] == "better" and float(rows[1]["mAP50-95_diff"]) == pytest.approx(0.02)
    assert "ultralytics 8.4.190" in rows[0]["versions"] and rows[0]["command"] == "yolo-vfl ab"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


# ----------------------------------------------------------------------------------------------- ranking helpers
def test_rankdata_ties_and_spearman_by_hand():
    """Ties get average ranks; Spearman is Pearson of the ranks; monotone data gives 1."""
    np.testing.assert_allclose(rankdata([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    assert spearman(x, y) == pytest.approx(1 - 6 * (1 + 1 + 1 + 1) / (5 * 24))  # no ties: 1 - 6 sum d^2/(n(n^2-1))
    assert spearman([1, 2, 3], [1, 8, 27]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None and spearman([1], [2]) is None


def test_match_detections_same_class_best_iou():
    """Each detection takes the highest IoU among same-class GT boxes; other classes or no GT give 0."""
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=float)
    gt_cls = np.array([0, 1])
    det = np.array([[0, 0, 10, 5], [20, 20, 30, 30], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=float)
    det_cls = np.array([0, 1, 1, 0])
    np.testing.assert_allclose(match_detections(det, det_cls, gt, gt_cls), [0.5, 1.0, 0.0, 0.0])
    assert match_detections(det, det_cls, np.zeros((0, 4)), np.zeros(0)).tolist() == [0, 0, 0, 0]
    assert box_iou(gt, gt)[0, 1] == 0 and box_iou(gt, gt)[1, 1] == 1


def test_correlations_all_and_matched_points():
    """Pearson/Spearman over all points and over those with IoU > 0."""
    conf = [0.9, 0.8, 0.3, 0.2, 0.1]
    iou = [0.9, 0.7, 0.5, 0.0, 0.0]
    c = correlations(conf, iou)
    assert c["n"] == 5 and c["n_matched"] == 3
    assert c["spearman_matched"] == pytest.approx(1.0)
    assert c["pearson"] == pytest.approx(float(np.corrcoef(conf, iou)[0, 1]))
    assert correlations([], [])["pearson"] is None


def test_results_csv_keeps_last_row_per_epoch(tmp_path):
    """A re-run epoch (resume after a kill) keeps its last row; keys are stripped."""
    f = tmp_path / "results.csv"
    f.write_text("epoch, time, metrics/mAP50-95(B)\n1,10,0.1\n2,20,0.2\n2,5,0.25\n3,12,0.3\n")
    rows = read_results_csv(f)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[1]["metrics/mAP50-95(B)"] == 0.25


# ----------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def ab_done(det_data, tmp_path_factory):
    """A finished tiny experiment: bce and vfl, seed 0, one epoch (module-scoped: trained once)."""
    out = tmp_path_factory.mktemp("ab") / "exp"
    spec = tiny_spec(det_data, out)
    lines: list[str] = []
    run_ab(spec, command="yolo-vfl ab tiny.yaml", log=lines.append)
    return spec, out, lines


@pytest.mark.slow
def test_end_to_end_two_arms(ab_done):
    """2 arms x 1 seed: result.json per run, summary.csv/.md, curves.png, ranking.png, versions and command."""
    spec, out, lines = ab_done
    for name in ("summary.csv", "summary.md", "curves.png", "ranking.png", "experiment.json", "spec.yaml"):
        assert (out / name).stat().st_size > 0, name
    for run in ("bce-s0", "vfl-s0"):
        res = json.loads((out / "runs" / run / "result.json").read_text())
        assert set(res["metrics"]) == {"mAP50", "mAP50-95", "precision", "recall"}
        assert all(math.isfinite(v) for v in res["metrics"].values())
        assert res["curve"]["epoch"] == [1] and res["epochs_done"] == 1 and res["train_time_s"] > 0
        assert {"train/box_loss", "train/cls_loss", "train/dfl_loss"} <= set(res["final_losses"])
        assert res["versions"]["ultralytics"] and res["versions"]["torch"]
        assert res["ranking"]["n_images"] > 0 and "points" in res["ranking"]
        args = yaml.safe_load((out / "runs" / run / "args.yaml").read_text())
        assert args["seed"] == 0 and args["deterministic"] is True and args["loss"] == run.split("-")[0]
        assert args["imgsz"] == IMGSZ and args["epochs"] == 1
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["arm"] for r in rows] == ["bce", "vfl"]
    assert rows[1]["verdict"] == "no clear difference (1 seed)"
    assert rows[0]["command"] == "yolo-vfl ab tiny.yaml" and "ultralytics" in rows[0]["versions"]
    md = (out / "summary.md").read_text()
    assert "yolo-vfl ab tiny.yaml" in md and "Ranking quality" in md
    progress = "\n".join(lines)
    assert "[1/2] bce-s0 done in" in progress and "running: -; ETA" in progress and "[2/2] vfl-s0 done in" in progress
    assert "yolo_vfl: classification loss loss=vfl" in (out / "logs" / "vfl-s0.log").read_text()


@pytest.mark.slow
def test_report_regenerates_from_results(ab_done, capsys):
    """'yolo-vfl ab report out=DIR' rewrites the report from result.json files alone."""
    _, out, _ = ab_done
    (out / "summary.md").unlink()
    before = (out / "summary.csv").read_text()
    assert cli_ab(["report", f"out={out}"]) == 0
    assert (out / "summary.md").exists() and (out / "summary.csv").read_text() == before


@pytest.mark.slow
def test_rerun_skips_finished_and_restarts_unusable_checkpoint(ab_done, det_data):
    """Finished runs are skipped (result.json untouched); a run with a corrupt last.pt is moved aside and redone."""
    spec, out, _ = ab_done
    bce_result = out / "runs" / "bce-s0" / "result.json"
    vfl_dir = out / "runs" / "vfl-s0"
    mtime = bce_result.stat().st_mtime_ns
    (vfl_dir / "result.json").unlink()
    (vfl_dir / "weights" / "last.pt").write_bytes(b"truncated checkpoint")  # killed while saving
    job = make_jobs(spec, out, str(det_data))[1]
    assert inspect_run(job)[0] == "restart"
    time.sleep(0.01)
    run_ab(spec, command="again")
    assert bce_result.stat().st_mtime_ns == mtime
    res = json.loads((vfl_dir / "result.json").read_text())
    assert res["run"] == "vfl-s0" and res["epochs_done"] == 1 and not res["resumed"]
    assert list((out / "aside").glob("vfl-s0.*"))
    assert "unusable" in (out / "logs" / "vfl-s0.log").read_text()
    exp = json.loads((out / "experiment.json").read_text())
    assert exp["commands"][-1] == "again" and len(exp["history"]) >= 2


@pytest.mark.slow
def test_finished_training_without_result_is_only_evaluated(ab_done, det_data):
    """Killed after training but before result.json: the run is evaluated, not retrained."""
    spec, out, _ = ab_done
    run_dir = out / "runs" / "bce-s0"
    (run_dir / "result.json").unlink()
    csv_mtime = (run_dir / "results.csv").stat().st_mtime_ns
    best_mtime = (run_dir / "weights" / "best.pt").stat().st_mtime_ns
    job = make_jobs(spec, out, str(det_data))[0]
    assert inspect_run(job) == ("trained", "training had finished")
    res = run_one(job, log=lambda msg: None)  # what the run's subprocess does (in-process here: faster)
    assert (run_dir / "result.json").exists() and res["metrics_source"] == "yolo-vfl ab validation"
    assert (run_dir / "results.csv").stat().st_mtime_ns == csv_mtime
    assert (run_dir / "weights" / "best.pt").stat().st_mtime_ns == best_mtime
    assert res["epochs_done"] == 1 and res["ranking"]["n_images"] > 0


@pytest.mark.slow
def test_changed_settings_refuse_to_mix_results(ab_done):
    """Re-running into a directory whose finished runs used other settings is refused before any training."""
    spec, out, _ = ab_done
    changed = spec_from_dict({**spec.to_dict(), "train": {**spec.train, "lr0": 0.02}})
    with pytest.raises(CLIError, match=r"finished with other settings \(lr0"):
        run_ab(changed)


class _Interrupt(Exception):
    pass


def _train_interrupted(job) -> None:
    """Train a job's run as the runner does, killed after its first epoch (last.pt of epoch 1 saved)."""
    from ultralytics import YOLO

    from yolo_vfl import VFLDetectionTrainer

    model = YOLO(job["model"])

    def stop(trainer):
        raise _Interrupt

    model.add_callback("on_fit_epoch_end", stop)  # after last.pt of epoch 1 was saved
    run_dir = Path(job["run_dir"])
    with pytest.raises(_Interrupt):
        model.train(
            trainer=VFLDetectionTrainer,
            data=job["data"],
            project=str(run_dir.parent),
            name=run_dir.name,
            exist_ok=True,
            device="cpu",
            **job["train"],
            **job["settings"],
        )


@pytest.mark.slow
def test_interrupted_run_restarts_and_matches_an_uninterrupted_run(det_data, tmp_path):
    """By default an interrupted run restarts from zero: its result equals the uninterrupted run's, bit for bit."""
    ref_out, out = tmp_path / "ref", tmp_path / "exp"
    ref_job = make_jobs(
        tiny_spec(det_data, ref_out, arms=("vfl",), epochs=2, ranking={"enabled": False}, baseline="vfl"), ref_out
    )[0]
    job = make_jobs(tiny_spec(det_data, out, arms=("vfl",), epochs=2, ranking={"enabled": False}, baseline="vfl"), out)[
        0
    ]
    ref = run_one(ref_job, log=lambda msg: None)
    _train_interrupted(job)
    assert inspect_run(job)[0] == "resume" and planned_state(job)[0] == "restart"
    res = run_one(job, log=lambda msg: None)
    assert res["resumed"] is False and res["segments"] == 1 and res["restarts"] == 1
    assert res["final_losses"] == ref["final_losses"] and res["metrics"] == ref["metrics"]
    assert res["curve"] == ref["curve"]
    assert len(list((out / "aside").glob("vfl-s0.*"))) == 1


@pytest.mark.slow
def test_interrupted_run_resumes_when_allowed(det_data, tmp_path):
    """resume_interrupted=true continues from last.pt: two training segments, epochs 1 and 2, both timed."""
    out = tmp_path / "exp"
    spec = tiny_spec(det_data, out, arms=("bce",), epochs=2, ranking={"enabled": False}, resume_interrupted=True)
    job = make_jobs(spec, out, str(det_data))[0]
    _train_interrupted(job)
    assert planned_state(job)[0] == "resume"
    run_one(job, log=lambda msg: None)  # what the run's subprocess does (in-process here: faster)
    run_dir = Path(job["run_dir"])
    res = json.loads((run_dir / "result.json").read_text())
    assert res["resumed"] is True and res["segments"] == 2 and res["curve"]["epoch"] == [1, 2]
    assert res["restarts"] == 0 and res["ranking"] is None and res["metrics_source"] == "ultralytics final validation"
    times = [float(r["time"]) for r in csv.DictReader(open(run_dir / "results.csv"))]
    assert res["train_time_s"] == pytest.approx(sum(times))  # each segment's clock restarts at 0
    assert not (out / "aside").exists()


def test_train_time_counts_a_resumed_epoch_slower_than_the_ones_before(tmp_path):
    """Segments come from the runner's record, not from the time column going down (a slow resumed epoch counts)."""
    from yolo_vfl.experiment import _train_time

    (tmp_path / "results.csv").write_text("epoch,time\n1,5.0\n2,9.0\n3,30.0\n")
    segments = [{"how": "fresh", "csv_rows_before": 0}, {"how": "resume", "csv_rows_before": 2}]
    (tmp_path / "segments.json").write_text(json.dumps({"segments": segments}))
    assert _train_time(tmp_path) == (pytest.approx(39.0), 2)
    (tmp_path / "segments.json").unlink()  # an older runner's run: one segment
    assert _train_time(tmp_path) == (pytest.approx(30.0), 1)


@pytest.mark.slow
@pytest.mark.ray
def test_ray_backend_local_instance(det_data, tmp_path):
    """backend=ray runs each arm x seed as a Ray task on a local Ray instance (CPU) and writes the report."""
    ray = pytest.importorskip("ray")
    out = tmp_path / "exp"
    spec = tiny_spec(det_data, out, arms=("bce",), backend="ray", ray={"num_cpus": 1}, ranking={"enabled": False})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # workers inherit YOLO_* from this process
    try:
        run_ab(spec, command="ray")
    finally:
        ray.shutdown()
    res = json.loads((out / "runs" / "bce-s0" / "result.json").read_text())
    assert res["device"] == "cpu" and res["epochs_done"] == 1
    assert (out / "summary.md").exists()


def test_fingerprint_ignores_settings_added_later_at_their_default():
    """A run recorded before a setting existed equals a job stating that setting's default, not another value."""
    from yolo_vfl.experiment import _same_fingerprint

    old = {"loss": "vfl", "vfl_alpha": 0.75, "epochs": 12, "model": "yolov8n.yaml", "data": "embedded"}
    new = {**old, "cls_fg_negatives": "loss", "cls_target": "tal", "cls_warmup": 0, "qfl_beta": 2.0}
    assert _same_fingerprint(old, new)
    assert not _same_fingerprint(old, {**new, "cls_fg_negatives": "bce"})
    assert not _same_fingerprint({**old, "epochs": 10}, new)
    assert not _same_fingerprint(None, new)
