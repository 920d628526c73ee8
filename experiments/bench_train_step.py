"""Benchmark: time of a full yolov8n training step (forward, loss, backward) with each classification loss vs BCE.

Usage::

    python experiments/bench_train_step.py                     # yolov8n, 80 classes, batch 8, imgsz 320, CPU
    python experiments/bench_train_step.py --imgsz 640 --batch 16 --device cuda

All losses are timed in the same process on the same model and batch, round-robin (so that drift of the machine
hits every loss alike); the table gives the median step time and the ratio to stock Ultralytics BCE. ``bce (ours)``
is yolo-vfl's BCE through the same seams as VFL/QFL: its ratio is the cost of the integration itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch


def make_batch(batch: int, imgsz: int, objects: int, nc: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Random images with ``objects`` boxes each (normalized xywh), as Ultralytics' dataloader delivers them."""
    g = torch.Generator().manual_seed(0)
    n = batch * objects
    wh = torch.rand(n, 2, generator=g) * 0.3 + 0.05
    xy = torch.rand(n, 2, generator=g) * (1 - wh) + wh / 2
    return {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=g).to(device),
        "batch_idx": torch.arange(batch).repeat_interleave(objects).float().to(device),
        "cls": torch.randint(0, nc, (n, 1), generator=g).float().to(device),
        "bboxes": torch.cat([xy, wh], 1).to(device),
    }


def main() -> None:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolov8n.yaml")
    parser.add_argument("--nc", type=int, default=80)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--objects", type=int, default=6, help="objects per image")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--losses", default="bce,focal,vfl,qfl")
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")

    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.loss import v8DetectionLoss

    from yolo_vfl.criterion import VFLDetectionLoss

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = DetectionModel(args.model, nc=args.nc, verbose=False).to(device)
    model.args = get_cfg()
    model.train()
    batch = make_batch(args.batch, args.imgsz, args.objects, args.nc, device)
    criteria = {"bce (stock)": v8DetectionLoss(model)}
    for name in args.losses.split(","):
        criteria[f"{name} (ours)"] = VFLDetectionLoss(model, loss=name)

    def step(criterion) -> float:
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = criterion(model(batch["img"]), batch)[0]
        loss.sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for criterion in criteria.values():  # warm-up
        step(criterion)
    times: dict[str, list[float]] = {name: [] for name in criteria}
    for _ in range(args.repeats):
        for name, criterion in criteria.items():
            times[name].append(step(criterion))

    import ultralytics

    print(
        f"yolov8n training step: model {args.model}, nc {args.nc}, batch {args.batch}, imgsz {args.imgsz}, "
        f"{args.objects} objects/image, device {device}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), "
        f"ultralytics {ultralytics.__version__}, {platform.processor() or platform.machine()}, "
        f"median of {args.repeats} round-robin repeats"
    )
    base = statistics.median(times["bce (stock)"])
    print("\n| loss | median step (ms) | ratio to stock BCE |\n| --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1000:.1f} | {median / base:.3f} |")


if __name__ == "__main__":
    main()
