"""experiments/loss_anatomy.py: the gradient split per entry kind, against hand-derived gradients."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import IMGSZ, load_experiment_script, train_tiny


@pytest.fixture(scope="module")
def la():
    return load_experiment_script("loss_anatomy")


def hand_record():
    """One image, 3 anchors x 2 classes: anchor 0 foreground of class 1 (q = 0.5), anchors 1 and 2 background."""
    logits = torch.tensor([[[0.0, 1.0], [-1.0, 2.0], [-3.0, -4.0]]])
    scores = torch.tensor([[[0.0, 0.5], [0.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[[False, True], [False, False], [False, False]]])
    fg = torch.tensor([[True, False, False]])
    target_labels = torch.tensor([[1, 0, 0]])
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0]] * 3])
    last = (target_labels, fg, boxes, boxes, scores)
    return logits, scores, labels, fg, last


def test_parse_setting(la):
    assert la.parse_setting("vfl:vfl_alpha=1.0,vfl_gamma=0") == {"loss": "vfl", "vfl_alpha": 1.0, "vfl_gamma": 0}
    assert la.parse_setting("bce") == {"loss": "bce"}
    with pytest.raises(SystemExit, match="not key=value"):
        la.parse_setting("vfl:vfl_alpha")


def test_gradient_split_matches_hand_derivation(la):
    """Per-kind gradient sums equal hand-derived values.

    BCE's |dL/dx| is |sigmoid(x) - q| / sum(q); VFL (alpha a, gamma g) on a negative is the derivative of
    -a p^g log(1 - p); with alpha 1, gamma 0 VFL's negatives equal BCE's exactly and its positive is q times BCE's.
    """
    rec = hand_record()
    logits = rec[0][0]
    rows = la.anatomy([rec], [{"loss": "bce"}, {"loss": "vfl"}, {"loss": "vfl", "vfl_alpha": 1.0, "vfl_gamma": 0.0}], 2)
    p = logits.sigmoid()
    norm = max(0.5, 1.0)  # Ultralytics divides by max(target_scores.sum(), 1)
    bce_pos = float((p[0, 1] - 0.5).abs()) / norm
    bce_fg_other = float(p[0, 0]) / norm
    bce_bg = float(p[1:].sum()) / norm
    assert rows[0]["grad"]["positive"] == pytest.approx(bce_pos, rel=1e-5)
    assert rows[0]["grad"]["fg_other"] == pytest.approx(bce_fg_other, rel=1e-5)
    assert rows[0]["grad"]["background"] == pytest.approx(bce_bg, rel=1e-5)

    def vfl_neg(x: float, a: float = 0.75, g: float = 2.0) -> float:
        pp = 1 / (1 + math.exp(-x))  # d/dx [-a p^g log(1 - p)] = a p^g (g (1 - p) (-log(1 - p)) + p)
        return a * pp**g * (g * (1 - pp) * -math.log(1 - pp) + pp)

    vfl_bg = sum(vfl_neg(float(x)) for x in logits[1:].flatten()) / norm
    assert rows[1]["grad"]["background"] == pytest.approx(vfl_bg, rel=1e-4)
    assert rows[1]["grad"]["fg_other"] == pytest.approx(vfl_neg(0.0) / norm, rel=1e-4)
    assert rows[1]["grad"]["positive"] == pytest.approx(0.5 * bce_pos, rel=1e-5)  # weight q on the positive
    assert rows[2]["grad"]["background"] == pytest.approx(bce_bg, rel=1e-5)
    assert rows[2]["grad"]["fg_other"] == pytest.approx(bce_fg_other, rel=1e-5)
    assert rows[2]["grad"]["positive"] == pytest.approx(0.5 * bce_pos, rel=1e-5)
    assert sum(rows[1]["share"].values()) == pytest.approx(1.0)
    # "hot" background entries score > 0.05: logits -1 and 2 of anchor 1 (not -3, -4 of anchor 2)
    assert rows[0]["hot_background_n"] == 2
    assert rows[0]["hot_background_mean"] == pytest.approx(float(p[1].sum()) / norm / 2, rel=1e-5)
    stats = la.target_stats([rec])
    assert stats["positives"] == 1 and stats["q_median"] == pytest.approx(0.5)
    assert stats["iou_median"] == pytest.approx(1.0)  # the predicted box equals its GT box
    assert stats["background_entries"] == 4 and stats["background_above_0.05"] == pytest.approx(0.5)
    table = la.markdown(rows, stats)
    assert "| `loss=bce` | 1.000 | 1.000 | 1.0000 |" in table


@pytest.mark.slow
def test_script_runs_on_a_checkpoint(la, det_data, tmp_path, capsys):
    """End to end on a tiny trained checkpoint: the criterion's own targets are recorded, BCE is the base row."""
    train_tiny("yolov8n.yaml", det_data, tmp_path, epochs=1)
    weights = tmp_path / "run" / "weights" / "last.pt"
    out = tmp_path / "a.json"
    args = ["--weights", str(weights), "--data", str(det_data), "--imgsz", str(IMGSZ), "--batch", "4"]
    assert la.main([*args, "--batches", "2", "--settings", "bce", "qfl:qfl_beta=0.0", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| `loss=bce` | 1.000 | 1.000 | 1.0000 |" in text
    assert "| `loss=qfl qfl_beta=0.0` | 1.000 | 1.000 | 1.0000 |" in text  # QFL with beta 0 is BCE
    with pytest.raises(SystemExit, match="is not a file"):
        la.main(["--weights", str(tmp_path / "missing.pt")])
