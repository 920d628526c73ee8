"""The A/B runner and report: spec validation, statistics, ranking correlation, end-to-end runs, resumability, Ray."""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from conftest import IMGSZ

from yolo_vfl.ab import (
    ABSpec,
    RunResult,
    load_spec,
    make_jobs,
    run_ab,
    run_one,
    spec_from_dict,
)
from yolo_vfl.ab.jobs import resolve_data
from yolo_vfl.ab.results import TABLE_FILE, read_table
from yolo_vfl.checks import source_hash
from yolo_vfl.cli import cli_ab
from yolo_vfl.errors import UserError as CLIError

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


@pytest.mark.parametrize("model", ["", "_yolo26"])
@pytest.mark.parametrize("target", ["digits", "glyphs"])
def test_finetune_specs_and_their_30_epoch_copies(target, model):
    """The fine-tuning specs (issue 12): 5 seeds, the default pretrained start, BCE baseline, their target's data.

    Each ``_e30`` copy is its 15-epoch spec at 30 epochs: the same shared training arguments but ``epochs``, the
    same pretraining, and every arm defined exactly as in the 15-epoch spec.
    """
    base = load_spec(EXPERIMENTS / f"ab_finetune_{target}{model}.yaml")
    long = load_spec(EXPERIMENTS / f"ab_finetune_{target}{model}_e30.yaml")
    for spec in (base, long):
        assert spec.baseline == "bce" and spec.seeds == [0, 1, 2, 3, 4] and spec.pretrain is not None
        assert spec.train["data"] == f"embedded-{target}" and spec.name == Path(spec.out).name
    assert base.train["epochs"] == 15 and long.train["epochs"] == 30
    assert {**long.train, "epochs": 15} == base.train and long.pretrain == base.pretrain
    arms = {a.name: a for a in base.arms}
    assert all(a == arms[a.name] for a in long.arms), [a.name for a in long.arms if a != arms.get(a.name)]


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
    data = Path(resolve_data(spec))
    assert data.name == "data.yaml" and data.parent.name.startswith("glyphs-n600-s1-") and data.exists()
    assert spec.data_token == "embedded-glyphs"
    emb = load_spec(EXPERIMENTS / "ab_embedded.yaml")
    assert Path(resolve_data(emb)).parent.name.startswith("shapes-n600-s0-")


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
    assert spec.device == ["0", "1"] and spec.out == "/tmp/x" and spec.name == "mine" and spec.ray["num_gpus"] == 1
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
        res = RunResult.from_dict(json.loads((out / "runs" / run / "result.json").read_text()))
        assert set(res.metrics) == {"mAP50", "mAP50-95", "precision", "recall"}
        assert all(math.isfinite(v) for v in res.metrics.values())
        assert res.curve.epoch == (1,) and res.epochs_done == 1 and res.train_time_s > 0
        assert {"train/box_loss", "train/cls_loss", "train/dfl_loss"} <= set(res.final_losses)
        assert res.versions["ultralytics"] and res.versions["torch"]
        assert res.versions["yolo_vfl_source"] == source_hash()  # the code the run started with
        assert res.ranking["n_images"] > 0 and "points" in res.ranking
        args = yaml.safe_load((out / "runs" / run / "args.yaml").read_text())
        assert args["seed"] == 0 and args["deterministic"] is True and args["loss"] == run.split("-")[0]
        assert args["imgsz"] == IMGSZ and args["epochs"] == 1
        table = read_table(out / "runs" / run / TABLE_FILE)  # the run's long results table
        assert table.filter(pl.col("epoch") == 1).height >= 10  # every column of results.csv
        assert (
            table.filter(pl.col("epoch").is_null() & (pl.col("metric") == "mAP50-95"))["value"].item()
            == (res.metrics["mAP50-95"])
        )
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["arm"] for r in rows] == ["bce", "vfl"]
    assert rows[1]["verdict"] == "no clear difference (1 seed)"
    assert rows[0]["command"] == "yolo-vfl ab tiny.yaml" and "ultralytics" in rows[0]["versions"]
    md = (out / "summary.md").read_text()
    assert "yolo-vfl ab tiny.yaml" in md and "Ranking quality" in md
    progress = "\n".join(lines)
    assert "[1/2] bce-s0 done in" in progress and "running: -; ETA" in progress and "[2/2] vfl-s0 done in" in progress
    assert "yolo_vfl: classification loss loss=vfl" in (out / "logs" / "vfl-s0.log").read_text()
    for run in ("bce-s0", "vfl-s0"):  # Ultralytics' final evaluation stripped best.pt and kept the loss settings
        best = torch.load(out / "runs" / run / "weights" / "best.pt", map_location="cpu", weights_only=False)
        assert best["optimizer"] is None and best["train_args"]["loss"] == run.split("-")[0]  # stripped, settings kept


@pytest.mark.slow
def test_report_regenerates_from_results(ab_done, capsys, tmp_path):
    """'yolo-vfl ab report out=DIR' rewrites the report from result.json files alone."""
    _, out, _ = ab_done
    (out / "summary.md").unlink()
    before = (out / "summary.csv").read_text()
    assert cli_ab(["report", f"out={out}"]) == 0
    assert (out / "summary.md").exists() and (out / "summary.csv").read_text() == before
    # a committed experiment keeps no detections.npz: the ranking comes from result.json, the report is the same
    copy = tmp_path / "committed"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.npz", "weights"))
    assert cli_ab(["report", f"out={copy}"]) == 0
    assert (copy / "summary.csv").read_text() == before
    table = read_table(copy / "runs" / "vfl-s0" / TABLE_FILE)
    assert table.filter(pl.col("metric") == "rank/spearman")["value"].is_not_null().all()


@pytest.mark.slow
def test_rerun_skips_finished_and_restarts_an_interrupted_run(ab_done, det_data):
    """Finished runs are skipped (result.json untouched); a run without result.json is moved aside and redone."""
    spec, out, _ = ab_done
    bce_result = out / "runs" / "bce-s0" / "result.json"
    vfl_dir = out / "runs" / "vfl-s0"
    mtime = bce_result.stat().st_mtime_ns
    (vfl_dir / "result.json").unlink()  # killed after training, before the result was written
    assert make_jobs(spec, out, str(det_data))[1].state() == "restart"
    time.sleep(0.01)
    run_ab(spec, command="again")
    assert bce_result.stat().st_mtime_ns == mtime
    res = RunResult.from_dict(json.loads((vfl_dir / "result.json").read_text()))
    assert res.run == "vfl-s0" and res.epochs_done == 1 and res.restarts == 1
    assert res.metrics_source.startswith("yolo-vfl ab recording pass") and (vfl_dir / "detections.npz").is_file()
    assert list((out / "aside").glob("vfl-s0.*"))
    assert "restarts from zero" in (out / "logs" / "vfl-s0.log").read_text()
    exp = json.loads((out / "experiment.json").read_text())
    assert exp["commands"][-1] == "again" and len(exp["history"]) >= 2


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
    """Start a job's run with the runner, killed by an Ultralytics callback after its first epoch (last.pt saved)."""
    from ultralytics.utils.callbacks.base import default_callbacks  # what get_default_callbacks() copies

    def stop(trainer):
        raise _Interrupt

    with pytest.MonkeyPatch.context() as patch, pytest.raises(_Interrupt):
        # every YOLO model copies the default callbacks: the runner's model gets this one too
        patch.setitem(default_callbacks, "on_fit_epoch_end", [*default_callbacks["on_fit_epoch_end"], stop])
        run_one(job, log=lambda msg: None)


@pytest.mark.slow
def test_interrupted_run_restarts_and_matches_an_uninterrupted_run(det_data, tmp_path, monkeypatch):
    """An interrupted run restarts from zero: its result equals the uninterrupted run's, bit for bit.

    Each run is validated once after training (Ultralytics' final validation of best.pt is skipped).
    """
    from ultralytics.models.yolo.detect import DetectionValidator

    calls, validate = [], DetectionValidator.__call__

    def spy(self, trainer=None, model=None):
        calls.append("epoch" if trainer is not None else type(model).__name__)  # final_eval passes best.pt's path
        return validate(self, trainer=trainer, model=model)

    monkeypatch.setattr(DetectionValidator, "__call__", spy)
    ref_out, out = tmp_path / "ref", tmp_path / "exp"
    ref_job = make_jobs(
        tiny_spec(det_data, ref_out, arms=("vfl",), epochs=2, ranking={"enabled": False}, baseline="vfl"), ref_out
    )[0]
    job = make_jobs(tiny_spec(det_data, out, arms=("vfl",), epochs=2, ranking={"enabled": False}, baseline="vfl"), out)[
        0
    ]
    ref = run_one(ref_job, log=lambda msg: None)
    assert calls == ["epoch", "epoch", "DetectionModel"]  # two epochs, then the run's one validation pass
    assert ref.metrics_source == "yolo-vfl ab validation" and ref.ranking is None and ref.records is None
    _train_interrupted(job)
    assert (job.run_dir / "weights" / "last.pt").is_file() and job.state() == "restart"
    res = run_one(job, log=lambda msg: None)
    assert res.restarts == 1
    assert res.final_losses == ref.final_losses and res.metrics == ref.metrics
    assert res.curve == ref.curve
    assert len(list((out / "aside").glob("vfl-s0.*"))) == 1


@pytest.mark.slow
def test_sequential_end_to_end_writes_its_decisions(det_data, tmp_path, capsys):
    """'yolo-vfl ab spec.yaml decide=sequential': rounds of real tiny runs, summary.md's 'Sequential decisions'."""
    out = tmp_path / "seq"
    spec_file = tmp_path / "seq.yaml"
    raw = tiny_spec(det_data, out, seeds=(0, 1, 2), ranking={"enabled": False}).to_dict()
    spec_file.write_text(yaml.safe_dump(raw))
    assert cli_ab([str(spec_file), "decide=sequential", "margin=0.01"]) == 0
    assert "runs at most (decide=sequential)" in capsys.readouterr().out
    finished = sorted(p.parent.name for p in out.glob("runs/*/result.json"))
    assert finished[:2] == ["bce-s0", "bce-s1"] and len(finished) in (4, 6)
    assert finished == sorted(
        [f"bce-s{k}" for k in range(len(finished) // 2)] + [f"vfl-s{k}" for k in range(len(finished) // 2)]
    )
    section = (out / "summary.md").read_text().split("## Sequential decisions")[1]
    assert "intervals at 97.5% = 1 - 0.05/2 looks" in section
    assert f"| vfl | {len(finished) // 2} | " in section
    assert f"Runs trained: {len(finished)} of the full grid's 6 (2 arms x 3 seeds)." in section
    assert json.loads((out / "experiment.json").read_text())["sequential"]["max_seeds"] == 3
    (out / "summary.md").unlink()
    assert cli_ab(["report", f"out={out}"]) == 0 and "## Sequential decisions" in (out / "summary.md").read_text()


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
    res = RunResult.from_dict(json.loads((out / "runs" / "bce-s0" / "result.json").read_text()))
    assert res.device == "cpu" and res.epochs_done == 1
    assert (out / "summary.md").exists()


@pytest.mark.slow
def test_end_to_end_head_validates_the_one_to_one_branch(det_data, tmp_path, capsys):
    """yolo26n with ``nms: false``: each run's validation and recording pass score the one-to-one branch, NMS-free.

    The recording pass used to drop ``nms`` and score the one-to-many branch through NMS (Ultralytics 8.4's default),
    the branch an arm with ``cls_branches: one2one`` trains with BCE.
    """
    from ultralytics.nn.tasks import yaml_model_load

    from yolo_vfl.ab.records import load_records

    try:
        yaml_model_load("yolo26n.yaml")
    except (FileNotFoundError, AssertionError) as e:  # YOLO26 configs exist in 8.4 only
        pytest.skip(f"yolo26n.yaml not available in this Ultralytics version: {e}")
    out = tmp_path / "e2e"
    raw = tiny_spec(det_data, out).to_dict()
    raw["train"] |= {"model": "yolo26n.yaml", "nms": False}
    raw["arms"] = {"bce": {"loss": "bce"}, "vfl_o2o": {"loss": "vfl", "cls_branches": "one2one"}}
    run_ab(spec_from_dict(raw), command="e2e")
    for run in ("bce-s0", "vfl_o2o-s0"):
        assert yaml.safe_load((out / "runs" / run / "args.yaml").read_text())["nms"] is False
        rec = load_records(out / "runs" / run / "detections.npz")
        assert rec.params["nms"] is False
        assert max(np.bincount(rec.det_image, minlength=rec.n_images)) <= rec.params["max_det"]
    assert cli_ab(["diagnose", f"out={out}"]) == 0
    assert "one-to-one branch, no NMS" in (out / "diagnosis.md").read_text()


@pytest.mark.slow
def test_remeasure_script_repeats_the_recorded_metrics(ab_done, capsys):
    """experiments/remeasure.py records a finished run again: the same metrics (exit 0); a changed one: exit 1."""
    from conftest import load_experiment_script

    _, out, _ = ab_done
    script = load_experiment_script("remeasure")
    run = out / "runs" / "vfl-s0"
    assert script.main([str(run)]) == 0, capsys.readouterr().out
    assert "vfl-s0: largest difference 0.00e+00 (same)" in capsys.readouterr().out
    saved = (run / "result.json").read_text()
    result = json.loads(saved)
    result["metrics"]["mAP50"] += 0.01
    try:
        (run / "result.json").write_text(json.dumps(result))
        assert script.main([str(run)]) == 1
        assert "largest difference 1.00e-02 (differs)" in capsys.readouterr().out
    finally:
        (run / "result.json").write_text(saved)
    table = out / "remeasured.csv"  # Ultralytics' default nms (the runs' own here): a paired table against bce
    assert script.main(["--nms", "default", "--csv", str(table), str(out / "runs" / "bce-s0"), str(run)]) == 0
    printed = capsys.readouterr().out
    assert "| bce | 1 | " in printed and "| vfl | 1 | " in printed and "no clear difference (1 seed)" in printed
    rows = list(csv.DictReader(open(table)))
    assert [r["run"] for r in rows] == ["bce-s0", "vfl-s0"] and rows[1]["now/mAP50-95"] == rows[1]["recorded/mAP50-95"]
