"""Every arm x seed as a job: shared settings, the run's state, and the fingerprint that keeps finished runs."""

from __future__ import annotations

from yolo_vfl.ab import make_jobs, spec_from_dict
from yolo_vfl.ab.jobs import fingerprint_diff


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
    assert [j.run for j in jobs] == ["bce-s0", "vfl-s0", "bce-s1", "vfl-s1"]
    for j in jobs:
        assert (j.data, j.model, j.train["epochs"], j.train["imgsz"]) == ("d.yaml", "yolov8n.yaml", 4, 96)
        assert j.train["seed"] == j.seed and j.train["deterministic"] is True
        assert j.run_dir == (tmp_path.resolve() / "runs" / j.run)
    vfl = jobs[1]
    assert vfl.train["cls"] == 2.0 and vfl.settings["loss"] == "vfl" and vfl.settings["vfl_gamma"] == 1.0
    assert "cls" not in jobs[0].train and jobs[0].settings["loss"] == "bce"
    assert jobs[0].fingerprint != jobs[2].fingerprint  # the seed is part of what was trained


def test_state_fresh_restart_done(tmp_path):
    """No directory: fresh; a directory without result.json: restart from zero; result.json: done."""
    spec = spec_from_dict({"train": {"data": "d.yaml", "epochs": 1}, "arms": {"bce": {}}, "device": "cpu"})
    job = make_jobs(spec, tmp_path, data="d.yaml")[0]
    assert job.state() == "fresh"
    (job.run_dir / "weights").mkdir(parents=True)
    assert job.state() == "restart"
    job.result.write_text("{}")
    assert job.state() == "done"


def test_fingerprint_ignores_settings_added_later_at_their_default():
    """A run recorded before a setting existed equals a job stating that setting's default, not another value."""
    old = {"loss": "vfl", "vfl_alpha": 0.75, "epochs": 12, "model": "yolov8n.yaml", "data": "embedded"}
    new = {**old, "cls_fg_negatives": "loss", "cls_target": "tal", "cls_warmup": 0, "qfl_beta": 2.0}
    assert fingerprint_diff(old, new) == ""
    assert fingerprint_diff(old, {**new, "cls_fg_negatives": "bce"}) == "cls_fg_negatives: 'loss' -> 'bce'"
    assert fingerprint_diff({**old, "epochs": 10}, new) == "epochs: 10 -> 12"
    assert fingerprint_diff(None, new)  # no record: never the same
