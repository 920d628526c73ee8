"""Where each classification loss puts its gradient, on the predictions of a trained checkpoint.

Issue 8 asks which mechanism costs VFL/QFL their points against BCE. ``yolo-vfl ab diagnose`` answers from the
outputs (which false positives grow); this script answers from the loss: it runs a trained model over dataset images
in eval mode, lets Ultralytics' own criterion assign targets (TAL), records the classification logits and targets
of every batch, and then computes, for each loss setting, the gradient of the normalized classification loss
(``sum / target_scores_sum``, as Ultralytics trains it) with respect to the logits. The gradient is split over three
kinds of entries of the (anchors x classes) score map:

* **positive**: the assigned class of a foreground anchor (target q > 0 is pulled up);
* **fg other class**: the other classes of a foreground anchor (pushed down: wrong-class detections);
* **background**: every class of a background anchor (pushed down: background detections).

Reported per setting: the summed |gradient| of each kind relative to BCE's on the same predictions, the share of
each kind in the setting's own total, and the mean gradient on background entries whose score is already above 0.05
(the range where a false positive survives a confidence threshold) relative to BCE's.

    python experiments/loss_anatomy.py --weights runs/ab/ab_embedded/runs/bce-s0/weights/best.pt

With ``--data`` left out it uses the embedded dataset's train split (the images the runs train on).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import torch

DEFAULT_SETTINGS = (
    "bce",
    "vfl",
    "vfl:vfl_alpha=1.0,vfl_gamma=1.0",
    "vfl:vfl_alpha=1.0,vfl_gamma=0.5",
    "vfl:vfl_alpha=1.0,vfl_gamma=0.0",
    "qfl",
    "qfl:qfl_beta=1.0",
    "qfl:qfl_beta=0.5",
)


def parse_setting(text: str) -> dict[str, Any]:
    """``"vfl:vfl_alpha=1.0,vfl_gamma=0.5"`` -> ``{"loss": "vfl", "vfl_alpha": 1.0, "vfl_gamma": 0.5}``."""
    from yolo_vfl.cli import parse_value

    loss, _, rest = text.partition(":")
    args: dict[str, Any] = {"loss": loss.strip()}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"loss_anatomy: setting {text!r}: {item!r} is not key=value")
        args[key.strip()] = parse_value(value.strip())
    return args


def record_batches(weights: str, data: str, imgsz: int, batch: int, batches: int, split: str) -> list[tuple]:
    """Run the model over ``batches`` batches and record what the classification term sees.

    Returns:
        One tuple per batch: ``(logits (B, A, nc), target_scores (B, A, nc), labels (B, A, nc) bool,
        fg_mask (B, A) bool, tap_record)``, where ``tap_record`` is the assigner output the criterion stored.
    """
    from ultralytics import YOLO
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import DEFAULT_CFG_DICT, LOGGER, IterableSimpleNamespace
    from ultralytics.utils.loss import v8DetectionLoss

    from yolo_vfl.criterion import ClsLossSettings, foreground_labels, install_cls_loss

    model = YOLO(weights).model.float().eval()
    hyp = {k: v for k, v in dict(getattr(model, "args", {}) or {}).items() if k in DEFAULT_CFG_DICT}
    model.args = IterableSimpleNamespace(**{**DEFAULT_CFG_DICT, **hyp})
    criterion = v8DetectionLoss(model)
    install_cls_loss(criterion, ClsLossSettings.from_args({"loss": "bce"}))
    cls_tap = criterion.bce
    nc = criterion.nc
    records: list[tuple] = []

    def recorder(pred_scores: torch.Tensor, target_scores: torch.Tensor) -> torch.Tensor:
        target_labels, fg_mask, pred_bboxes, target_bboxes, tal_scores = cls_tap.tap.last
        labels = foreground_labels(target_labels, fg_mask, nc)
        records.append(
            (
                pred_scores.detach().float().clone(),
                tal_scores.detach().float().clone(),
                labels.clone(),
                fg_mask.bool().clone(),
                tuple(t.detach().clone() for t in (target_labels, fg_mask, pred_bboxes, target_bboxes, tal_scores)),
            )
        )
        return type(cls_tap).forward(cls_tap, pred_scores, target_scores)

    cls_tap.forward = recorder  # the instance attribute is what nn.Module.__call__ runs

    LOGGER.setLevel(logging.WARNING)  # keep the report on stdout clean of dataset-scan lines
    info = check_det_dataset(data)
    cfg = get_cfg(overrides={"imgsz": imgsz, "data": data, "fraction": 1.0})
    dataset = build_yolo_dataset(cfg, info[split], batch, info, mode="val", rect=False, stride=int(model.stride.max()))
    loader = build_dataloader(dataset, batch, 0, shuffle=False)
    with torch.no_grad():
        for i, b in enumerate(loader):
            if i >= batches:
                break
            b["img"] = b["img"].float() / 255
            preds = model(b["img"])
            criterion(preds, b)
    if not records:
        raise SystemExit(f"loss_anatomy: no batches from {data} ({split})")
    return records


def anatomy(records: list[tuple], settings: list[dict[str, Any]], nc: int) -> list[dict[str, Any]]:
    """Gradient anatomy of each setting on the recorded batches (see the module docstring)."""
    from yolo_vfl.criterion import ClsLossSettings, ClsLossTap, _AssignerTap

    rows = []
    for args in settings:
        s = ClsLossSettings.from_args(args)
        tap = _AssignerTap(None)
        module = ClsLossTap(s.build(), tap, nc, target=s.target, fg_negatives=s.fg_negatives)
        sums = {"positive": 0.0, "fg_other": 0.0, "background": 0.0}
        hot_sum, hot_n, loss_total = 0.0, 0, 0.0
        for logits, scores, labels, fg, last in records:
            x = logits.clone().requires_grad_(True)
            tap.last = last
            loss = module(x, scores).sum() / scores.sum().clamp(min=1.0)
            (g,) = torch.autograd.grad(loss, x)
            g = g.abs()
            bg = ~fg.unsqueeze(-1).expand_as(labels)
            fg_other = fg.unsqueeze(-1) & ~labels
            sums["positive"] += float(g[labels].sum())
            sums["fg_other"] += float(g[fg_other].sum())
            sums["background"] += float(g[bg].sum())
            hot = bg & (logits.sigmoid() > 0.05)
            hot_sum += float(g[hot].sum())
            hot_n += int(hot.sum())
            loss_total += float(loss.detach())
        total = sum(sums.values())
        rows.append(
            {
                "setting": s.describe().replace(" cls_target=tal cls_fg_negatives=loss", ""),
                "args": args,
                "loss": loss_total / len(records),
                "grad": sums,
                "total": total,
                "share": {k: v / total if total else math.nan for k, v in sums.items()},
                "hot_background_mean": hot_sum / hot_n if hot_n else math.nan,
                "hot_background_n": hot_n,
            }
        )
    return rows


def target_stats(records: list[tuple]) -> dict[str, float]:
    """Distribution of the quality targets on the positives, and the background score levels.

    The targets: TAL's q (what Ultralytics trains against) and the IoU of the predicted box with its GT box (what
    VarifocalNet and GFL train against, ``cls_target=iou``).
    """
    from yolo_vfl.criterion import predicted_iou

    q = torch.cat([scores[labels] for _, scores, labels, _, _ in records])
    iou = torch.cat([predicted_iou(last[2], last[3], fg)[fg] for _, _, _, fg, last in records])
    ious = torch.quantile(iou, torch.tensor([0.1, 0.5, 0.9])).tolist() if iou.numel() else [math.nan] * 3
    p_bg = torch.cat([logits.sigmoid()[~fg].flatten() for logits, _, _, fg, _ in records])
    qs = torch.quantile(q, torch.tensor([0.1, 0.5, 0.9])).tolist() if q.numel() else [math.nan] * 3
    return {
        "positives": int(q.numel()),
        "q_p10": qs[0],
        "q_median": qs[1],
        "q_p90": qs[2],
        "iou_p10": ious[0],
        "iou_median": ious[1],
        "iou_p90": ious[2],
        "background_entries": int(p_bg.numel()),
        "background_score_mean": float(p_bg.mean()) if p_bg.numel() else math.nan,
        "background_above_0.05": float((p_bg > 0.05).float().mean()) if p_bg.numel() else math.nan,
    }


def markdown(rows: list[dict[str, Any]], stats: dict[str, float]) -> str:
    """The report as a Markdown table (gradients relative to the first row, BCE)."""
    base = rows[0]
    lines = [
        f"Positives: {stats['positives']}, TAL target q: p10 {stats['q_p10']:.3f}, median {stats['q_median']:.3f}, "
        f"p90 {stats['q_p90']:.3f}; IoU of their predicted boxes: p10 {stats['iou_p10']:.3f}, median "
        f"{stats['iou_median']:.3f}, p90 {stats['iou_p90']:.3f}. Background entries: {stats['background_entries']}, "
        f"mean score {stats['background_score_mean']:.4f}, share above 0.05: {stats['background_above_0.05']:.4f}.",
        "",
        f"|gradient| summed per kind, relative to `{base['setting']}` on the same predictions; share = the kind's part "
        "of the setting's own total; hot background = mean |gradient| on background entries scoring > 0.05.",
        "",
        "| setting | positive | fg other class | background | share pos / fg-other / bg | hot background |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        rel = {k: r["grad"][k] / base["grad"][k] if base["grad"][k] else math.nan for k in r["grad"]}
        hot = r["hot_background_mean"] / base["hot_background_mean"] if base["hot_background_mean"] else math.nan
        share = " / ".join(f"{r['share'][k]:.2f}" for k in ("positive", "fg_other", "background"))
        lines.append(
            f"| `{r['setting']}` | {rel['positive']:.3f} | {rel['fg_other']:.3f} | {rel['background']:.4f} | {share} "
            f"| {hot:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True, help="a trained detection checkpoint (best.pt / last.pt)")
    ap.add_argument("--data", default=None, help="dataset YAML or embedded name (default: embedded)")
    ap.add_argument("--split", default="train", choices=("train", "val"))
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=10, help="number of batches to record")
    ap.add_argument("--settings", nargs="*", default=list(DEFAULT_SETTINGS), help="loss[:key=value,...]; first = base")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    a = ap.parse_args(argv)
    if not Path(a.weights).is_file():
        raise SystemExit(f"loss_anatomy: --weights {a.weights!r} is not a file")
    from yolo_vfl.data import resolve_embedded

    data = str(resolve_embedded(a.data or "embedded") or a.data)  # embedded names as in `yolo-vfl train data=...`
    settings = [parse_setting(t) for t in a.settings]
    torch.manual_seed(0)
    records = record_batches(a.weights, data, a.imgsz, a.batch, a.batches, a.split)
    nc = records[0][0].shape[-1]
    rows = anatomy(records, settings, nc)
    stats = target_stats(records)
    print(f"# loss anatomy: {a.weights} on {data} ({a.split}, {len(records)} batches of {a.batch}, imgsz {a.imgsz})\n")
    print(markdown(rows, stats))
    if a.json:
        report = {"weights": a.weights, "data": data, "stats": stats, "rows": rows}
        Path(a.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
