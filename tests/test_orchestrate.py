"""run_ab: the preflight (model task, data, devices, ``out=``) before anything is written, dry_run, the start model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import IMGSZ

from yolo_vfl.ab import run_ab, spec_from_dict
from yolo_vfl.ab.orchestrate import load_results
from yolo_vfl.ab.sequential import plan_section
from yolo_vfl.cli import main
from yolo_vfl.errors import UserError


def _spec(data, out, **train):
    raw = {
        "name": "pf",
        "out": str(out),
        "seeds": [0],
        "device": "cpu",
        "train": {"data": str(data), "imgsz": IMGSZ, "epochs": 1, "batch": 4, "workers": 0, **train},
        "arms": {"bce": {}, "vfl": {}},
    }
    return spec_from_dict(raw)


def test_classify_model_is_refused_before_anything_is_written(det_data, tmp_path):
    """A classify model has no detection classification branch: refused, naming the task and the valid ones."""
    out = tmp_path / "ab"
    with pytest.raises(UserError, match=r"Invalid model='yolov8n-cls.yaml': its task is 'classify'.*detect, segment"):
        run_ab(_spec(det_data, out, model="yolov8n-cls.yaml"), command="refused")
    assert not out.exists()


def test_out_naming_a_file_is_refused(det_data, tmp_path):
    """``out=`` naming a file (or a path inside one): a one-line error naming it, nothing written."""
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(UserError, match=r"out=.*file\.txt is a file: give a directory"):
        run_ab(_spec(det_data, f), command="refused", dry_run=True)
    with pytest.raises(UserError, match=r"is inside '.*file\.txt', a file"):
        run_ab(_spec(det_data, f / "sub"), command="refused")
    assert f.read_text() == "x"


def test_read_only_out_is_refused(det_data, tmp_path, monkeypatch):
    """``out=`` on a read-only filesystem (os.access says no, as it does for EROFS even as root) is refused."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro) else real(p, mode))
    with pytest.raises(UserError, match=r"out=.*ro/ab is not writable \('.*ro' is read-only"):
        run_ab(_spec(det_data, ro / "ab"), command="refused")
    assert list(ro.iterdir()) == []


def test_labels_are_read_once_through_the_hook(det_data, tmp_path, monkeypatch):
    """The preflight reads the dataset once (the label reader's hook), for every arm together."""
    import yolo_vfl.checks

    calls = []
    monkeypatch.setattr(yolo_vfl.checks, "check_data", lambda data, **kw: calls.append((data, kw)))
    run_ab(_spec(det_data, tmp_path / "ab"), command="dry", dry_run=True)
    assert calls == [(str(det_data), {"single_cls": False})]


def test_cli_prints_a_bad_arm_as_one_line_with_exit_2(tmp_path, capsys):
    """``yolo-vfl ab spec.yaml vfl.cls_warmup=1`` with epochs 1: exit 2, one line naming the arm and the values."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"out: {tmp_path / 'ab'}\ntrain: {{epochs: 1}}\narms: {{bce: {{}}, vfl: {{}}}}\n")
    assert main(["ab", str(spec), "vfl.cls_warmup=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Arm 'vfl': Invalid cls_warmup=1 for epochs=1" in err
    assert not (tmp_path / "ab").exists()


def test_dry_run_plans_without_training(det_data, tmp_path, capsys):
    """dry_run lists the runs to do and trains nothing."""
    spec = _spec(det_data, tmp_path / "ab")
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
    spec = _spec(det_data, tmp_path / "ab")
    raw = spec.to_dict()
    raw["train"].update(change.pop("train", {}))
    raw.update(change)
    with pytest.raises(UserError, match=match):
        run_ab(spec_from_dict(raw), command="refused")
    assert not (tmp_path / "ab").exists()


# ------------------------------------------------------------------------------- the pretrained start of an experiment
def _finished_run(out: Path, run: str) -> None:
    """A minimal finished run (``runs/<run>/result.json``) as the runner writes it."""
    from test_ab_report import result as made

    arm, seed = run.rsplit("-s", 1)
    d = out / "runs" / run
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(made(arm, int(seed), 0.5).to_dict()))


def _start(sha: str | None, map5095: float = 0.4642) -> dict:
    rec = {"fingerprint": "962ce1c1d0a4271a", "metrics": {"mAP50-95": map5095}, "path": "/cache/best.pt"}
    return rec if sha is None else {**rec, "sha256": sha}


@pytest.mark.parametrize(
    "old, new, refused",
    [
        (_start("a" * 64), _start("a" * 64), False),
        (_start("a" * 64), _start("b" * 64), True),  # same fingerprint and mAP, other weights
        (_start(None, 0.4859), _start("b" * 64, 0.4642), True),  # an older record without sha256: by its metrics
        (_start(None), _start("b" * 64), False),
    ],
)
def test_rebuilt_pretrained_checkpoint_refuses_to_mix_with_finished_runs(
    det_data, tmp_path, monkeypatch, old, new, refused
):
    """Finished runs that fine-tuned other weights under the same fingerprint: refused before anything is written."""
    from yolo_vfl.ab import orchestrate

    out = tmp_path / "ab"
    _finished_run(out, "other-s0")
    (out / "pretrain.json").write_text(json.dumps(old))
    pretrain = {"n": 15, "imgsz": 32, "epochs": 1, "batch": 4, "workers": 0}
    plain = _spec(det_data, out).to_dict()
    train = {k: v for k, v in plain["train"].items() if k != "model"}
    raw = {**plain, "train": train, "arms": {"bce": {}}, "pretrain": pretrain}
    spec = spec_from_dict(raw)
    monkeypatch.setattr(orchestrate, "_pretrained", lambda spec, log: dict(new))
    trained: list[str] = []
    monkeypatch.setattr(orchestrate, "run_jobs", lambda todo, spec, progress: trained.extend(j.run for j in todo) or [])
    monkeypatch.setattr(orchestrate, "_preflight", lambda spec, data: None)
    if refused:
        match = (
            r"finished runs in .* fine-tuned the pretrained checkpoint `962ce1c1d0a4271a` "
            r"\(sha256 .*, mAP50-95 0\.\d{4}\), but the cache now holds .*new out=.*'yolo-vfl ab report out=.*ab'"
        )
        with pytest.raises(UserError, match=match):
            run_ab(spec, command="refused")
        assert not trained and not (out / "experiment.json").exists()
        assert json.loads((out / "pretrain.json").read_text()) == old
    else:
        run_ab(spec, command="accepted")
        assert trained == ["bce-s0"] and json.loads((out / "pretrain.json").read_text()) == new
    # an experiment without finished runs takes the current checkpoint whatever the record says
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "pretrain.json").write_text(json.dumps(old))
    run_ab(spec_from_dict({**raw, "out": str(empty)}), command="fresh")
    assert trained[-1] == "bce-s0" and json.loads((empty / "pretrain.json").read_text()) == new


# ------------------------------------------------------------------------------- decide=sequential: rounds on fake runs
#: Fake mAP50-95 per arm and seed index: ``worse`` is clearly below bce, ``gain`` a little above (decided at 5 seeds).
BCE = [0.500, 0.510, 0.495, 0.505, 0.500]
FAKE = {
    "bce": BCE,
    "worse": [b + d for b, d in zip(BCE, [-0.05, -0.049, -0.051, -0.049, -0.051])],
    "gain": [b + d for b, d in zip(BCE, [0.008, 0.003, 0.009, 0.004, 0.008])],
}


def _seq_spec(data, out, **extra):
    raw = _spec(data, out).to_dict()
    raw.update(seeds=[0, 1, 2, 3, 4], arms={"bce": {}, "worse": {"loss": "vfl"}, "gain": {"loss": "qfl"}})
    return spec_from_dict({**raw, "decide": "sequential", "margin": 0.005, **extra})


def _fake_runs(monkeypatch, rounds: list[list[str]], kill_after: int | None = None):
    """run_jobs replaced: each job gets a ``result.json`` with its FAKE mAP50-95 (``kill_after`` runs, then Ctrl-C)."""
    from test_ab_report import result as made

    from yolo_vfl.ab import orchestrate

    def run_jobs(todo, spec, progress):
        rounds.append([j.run for j in todo])
        for job in todo:
            if kill_after is not None and sum(map(len, rounds)) - len(todo) + todo.index(job) >= kill_after:
                raise KeyboardInterrupt
            job.run_dir.mkdir(parents=True, exist_ok=True)
            res = made(job.arm, job.seed, FAKE[job.arm][spec.seeds.index(job.seed)])
            job.result.write_text(json.dumps({**res.to_dict(), "fingerprint": job.fingerprint}))
        return []

    monkeypatch.setattr(orchestrate, "run_jobs", run_jobs)
    monkeypatch.setattr(orchestrate, "_preflight", lambda spec, data: None)
    monkeypatch.setattr(orchestrate, "_tables", lambda out, results: (None, {}))
    monkeypatch.setattr("yolo_vfl.ab.plots.write_report", lambda out, *a: {"summary.md": _touch(out / "summary.md")})
    monkeypatch.setattr("yolo_vfl.ab.report.summarize", lambda *a: None)
    monkeypatch.setattr("yolo_vfl.ab.report.verdict_lines", lambda s: [])


def _touch(path: Path) -> Path:
    path.write_text("# summary\n")
    return path


def test_sequential_rounds_stop_the_worse_arm_and_keep_the_baseline_while_any_arm_is_open(
    det_data, tmp_path, monkeypatch
):
    """Seed k for every open arm and the baseline per round; the clear loser stops at 2-3 seeds, the tie goes on."""
    rounds: list[list[str]] = []
    _fake_runs(monkeypatch, rounds)
    out = tmp_path / "ab"
    run_ab(_seq_spec(det_data, out), command="seq")
    assert rounds[:2] == [["bce-s0", "worse-s0", "gain-s0"], ["bce-s1", "worse-s1", "gain-s1"]]
    stop = next(i for i, r in enumerate(rounds) if "worse" not in " ".join(r))
    assert stop in (2, 3) and rounds[stop:] == [[f"bce-s{k}", f"gain-s{k}"] for k in range(stop, 5)]
    ran = [run for r in rounds for run in r]
    assert len(ran) == len(set(ran)) == 15 - (5 - stop)
    meta = json.loads((out / "experiment.json").read_text())
    assert meta["sequential"] == {"margin": 0.005, "alpha": 0.05, "min_seeds": 2, "max_seeds": 5} | {
        "pooled": False,
        "futility": 0.1,
    }
    assert meta["spec"]["decide"] == "sequential" and meta["spec"]["margin"] == 0.005
    md = (out / "summary.md").read_text()
    assert "## Sequential decisions" in md and f"| worse | {stop} | worse (interval below 0) | -0.0495 [" in md
    assert "| gain | 5 | better (interval above 0) | +0.0064 [+0.0012, +0.0116] |" in md
    assert f"Runs trained: {len(ran)} of the full grid's 15 (3 arms x 5 seeds)" in md
    assert "intervals at 98.8% = 1 - 0.05/4 looks" in md
    (out / "summary.md").unlink()  # 'yolo-vfl ab report' writes it again with the recorded rule
    assert main(["ab", "report", f"out={out}"]) == 0 and (out / "summary.md").read_text() == md


def test_sequential_resume_after_a_kill_mid_round_trains_nothing_twice(det_data, tmp_path, monkeypatch):
    """Killed after 4 runs (mid round 2), run again: the same runs and decisions as an uninterrupted experiment."""
    full: list[list[str]] = []
    _fake_runs(monkeypatch, full)
    run_ab(_seq_spec(det_data, tmp_path / "full"), command="seq")
    killed: list[list[str]] = []
    _fake_runs(monkeypatch, killed, kill_after=4)
    out = tmp_path / "ab"
    with pytest.raises(KeyboardInterrupt):
        run_ab(_seq_spec(det_data, out), command="seq")
    resumed: list[list[str]] = []
    _fake_runs(monkeypatch, resumed)
    run_ab(_seq_spec(det_data, out), command="seq")
    assert resumed[0] == ["worse-s1", "gain-s1"]  # bce-s1 finished before the kill
    trained = sorted(p.parent.name for p in out.glob("runs/*/result.json"))
    assert trained == sorted(run for r in full for run in r)
    section = (out / "summary.md").read_text().split("## Sequential decisions")[1]
    assert section == (tmp_path / "full" / "summary.md").read_text().split("## Sequential decisions")[1]


def test_sequential_refuses_another_rule_and_bad_settings(det_data, tmp_path, monkeypatch):
    """A different margin or seeds on a sequential experiment is refused naming both rules; < 2 seeds, bad margin."""
    rounds: list[list[str]] = []
    _fake_runs(monkeypatch, rounds)
    out = tmp_path / "ab"
    run_ab(_seq_spec(det_data, out), command="seq")
    before = (out / "experiment.json").read_text()
    with pytest.raises(
        UserError, match=r"rule was .*'margin': 0.005.*this command's is .*'margin': 0.01.*margin 0.005 -> 0.01"
    ):
        run_ab(_seq_spec(det_data, out, margin=0.01), command="other")
    with pytest.raises(UserError, match=r"max_seeds 5 -> 4"):
        run_ab(_seq_spec(det_data, out, seeds=[0, 1, 2, 3]), command="other")
    assert (out / "experiment.json").read_text() == before
    with pytest.raises(UserError, match=r"decide=sequential needs at least 2 seeds"):
        run_ab(_seq_spec(det_data, tmp_path / "one", seeds=[0]), command="one", dry_run=True)
    for bad in (0, -1, float("inf"), "x"):
        with pytest.raises(UserError, match=r"Invalid margin="):
            _seq_spec(det_data, tmp_path / "bad", margin=bad)
    with pytest.raises(UserError, match=r"Invalid decide='seq': 'grid' or 'sequential'"):
        _seq_spec(det_data, tmp_path / "bad", decide="seq")
    assert not (tmp_path / "one").exists()


def test_plan_command_on_a_fixed_pilot(tmp_path, capsys):
    """'yolo-vfl ab plan out=DIR margin=': seeds per arm from the pilot's paired sds, a total; < 2 seeds refused."""
    from test_ab_report import result as made

    out = tmp_path / "pilot"
    pilot = {"bce": [0.50, 0.51, 0.49], "vfl": [0.46, 0.475, 0.445], "qfl": [0.501, 0.512, 0.4915]}
    for arm, values in pilot.items():
        for seed, v in enumerate(values):
            (out / "runs" / f"{arm}-s{seed}").mkdir(parents=True)
            (out / "runs" / f"{arm}-s{seed}" / "result.json").write_text(json.dumps(made(arm, seed, v).to_dict()))
    (out / "experiment.json").write_text(json.dumps({"baseline": "bce", "arms": ["bce", "vfl", "qfl"]}))
    assert main(["ab", "plan", f"out={out}", "margin=0.005"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # vfl: diffs -0.04, -0.035, -0.045 (sd 0.005): t(1 - 0.05 / (2 (N - 1)), N - 1) <= sqrt(N) from N = 13 on
    assert lines == [
        "vfl: paired sd 0.0050 over 3 seeds -> 13 seeds",
        "qfl: paired sd 0.0005 over 3 seeds -> 2 seeds",
        "total: 28 runs, bce included, to resolve ±0.005",
    ]
    # the report's planning answer is the same, at the experiment's margin (the recorded rule's, else the default)
    meta = json.loads((out / "experiment.json").read_text())
    section = plan_section(load_results(out), meta, 0.005).splitlines()
    assert section[0] == "## Planning" and section[-3:] == [f"- {line}" for line in lines]
    for seed in (1, 2):
        (out / "runs" / f"vfl-s{seed}" / "result.json").unlink()
    assert main(["ab", "plan", f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs >= 2 seeds paired with bce per arm; paired seeds: vfl (1)" in err
    assert main(["ab", "plan", f"out={out}", "margin=0"]) == 2
    assert plan_section(load_results(out), meta, 0.005) == ""  # an arm with 1 paired seed: no planning answer


def test_one2one_arm_needs_an_end_to_end_head(det_data, tmp_path):
    """An arm with cls_branches=one2one on yolov8n (no one-to-one branch) is refused before anything is written."""
    from yolo_vfl.ab import spec_from_dict

    raw = {
        "name": "o2o",
        "out": str(tmp_path / "ab"),
        "seeds": [0],
        "device": "cpu",
        "train": {"data": str(det_data), "imgsz": IMGSZ, "epochs": 1, "batch": 4, "workers": 0},
        "arms": {"bce": {}, "vfl_o2o": {"loss": "vfl", "cls_branches": "one2one"}},
    }
    with pytest.raises(UserError, match=r"Arm 'vfl_o2o': Invalid cls_branches='one2one'.*no one-to-one branch"):
        run_ab(spec_from_dict(raw), command="refused", dry_run=True)
    assert not (tmp_path / "ab").exists()
    from ultralytics.nn.tasks import yaml_model_load

    try:
        yaml_model_load("yolo26n.yaml")
    except (FileNotFoundError, AssertionError) as e:  # YOLO26 configs exist in 8.4 only
        pytest.skip(f"yolo26n.yaml not available in this Ultralytics version: {e}")
    raw["train"]["model"] = "yolo26n.yaml"  # an end-to-end head, validated through NMS: the one-to-many branch (BCE)
    with pytest.raises(UserError, match=r"Arm 'vfl_o2o': Invalid nms=None with cls_branches='one2one'.*nms=False"):
        run_ab(spec_from_dict(raw), command="refused", dry_run=True)
    assert not (tmp_path / "ab").exists()
    raw["train"]["nms"] = False
    run_ab(spec_from_dict(raw), command="dry", dry_run=True)  # the one-to-one branch validated: accepted
