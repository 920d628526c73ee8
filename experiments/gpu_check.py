"""One prepared CUDA / AMP check of every classification loss, to run whenever a CUDA machine is at hand (< 5 min).

Parts (``--parts``, all by default), each printing a Markdown table:

* ``values``: every loss (fused and autograd, ``--compiled`` adds torch.compile) on a fixed batch, float32 on the
  device and under AMP (float16 autocast on CUDA, bfloat16 on CPU), value and gradient against the autograd formula
  in float64 on the CPU. The AMP reference uses the logits rounded to the half dtype, so only the loss's own error
  is measured.
* ``syncs`` (CUDA only): host syncs of a yolov8n criterion forward + backward, counted by CUDA itself
  (``torch.cuda.set_sync_debug_mode("warn")``), for every loss, ``cls_target`` tal / iou and ``cls_fg_negatives``
  loss / bce, against stock Ultralytics BCE on the same batch. Ours must add none.
* ``train``: one epoch per loss with AMP (yolov8n from the yaml, 64 generated images at 64 px), plus VFL with
  ``cls_target=iou cls_fg_negatives=bce``: AMP really on, the loss installed, every loss in results.csv finite.
* ``bench``: forward + backward time (median, paired step by step with BCE in the same process) and peak CUDA memory
  above the inputs, per loss and implementation, at ``--shape`` (default YOLOv8 at 640 px, batch 16). Inputs and the
  timed step come from ``bench_losses.py``.

On a machine without CUDA it says so and exits 0. ``--device cpu --dry`` runs ``values`` (float32 and bfloat16 vs
float64) and a tiny ``bench`` on the CPU, so the code is exercised where no GPU is lent. Exit status 1 when a check
fails.

Usage::

    python experiments/gpu_check.py                      # CUDA: all parts
    python experiments/gpu_check.py --parts values syncs  # the quick ones
    python experiments/gpu_check.py --device cpu --dry    # the value/gradient check and a tiny bench, on the CPU
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_losses.py, next to this script

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_losses import cpu_model, make_inputs, step  # noqa: E402

LOSSES = ("bce", "focal", "vfl", "qfl", "mal", "iabce")
PARTS = ("values", "syncs", "train", "bench")
NO_CUDA = "gpu_check: no CUDA device on this machine"

#: Tolerances (rtol, atol) of value and gradient against float64, by compute dtype of the logits.
TOLERANCES = {torch.float32: (1e-4, 2e-6), torch.float16: (2e-3, 1e-6), torch.bfloat16: (1e-2, 1e-6)}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _impls(name: str, compiled: bool) -> list[str]:
    """The implementations worth checking: BCE and focal have only the autograd formula."""
    from yolo_vfl.losses import get_loss_spec

    if get_loss_spec(name).elementwise.forward is None:
        return ["autograd"]
    return ["fused", "autograd", *(["compiled"] if compiled else [])]


def fixed_batch(shape: tuple[int, int, int] = (2, 600, 80), seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Logits, targets and labels on the CPU (float32): bench_losses' inputs, extreme logits, labels with q = 0.

    Returns:
        x (Tensor[B, A, C]) float32 logits, ``N(-4, 2)`` plus -60 ... 60 in the first entries; q (Tensor[B, A, C])
        soft targets, 2 % positive; labels (Tensor[B, A, C]) bool, ``q > 0`` plus a few positives with ``q = 0``
        (an IoU target of 0, as ``cls_target=iou`` can give).
    """
    x, q = make_inputs(shape, 0.02, "cpu", seed)
    x = x.detach().clone()
    extremes = torch.tensor([-60.0, -30.0, -17.0, -5.0, 0.0, 5.0, 17.0, 30.0, 60.0])
    x.view(-1)[: len(extremes)] = extremes
    q.view(-1)[len(extremes) : 2 * len(extremes)] = 1.0
    x.view(-1)[len(extremes) : 2 * len(extremes)] = extremes
    g = torch.Generator().manual_seed(seed + 1)
    labels = (q > 0) | (torch.rand(q.shape, generator=g) < 0.002)
    return x, q, labels


def _value_and_grad(loss, x: torch.Tensor, q: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().clone().requires_grad_()
    value = loss(x, q, labels)
    value.sum().backward()
    return value.detach(), x.grad


def _error(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> tuple[float, float, bool]:
    """Max absolute error, max error in units of the tolerance (<= 1 passes), and whether it passes."""
    actual = actual.detach().cpu().double()
    diff = (actual - expected).abs()
    nan = torch.isnan(actual) != torch.isnan(expected)
    ratio = diff / (atol + rtol * expected.abs())
    worst = float(ratio.nan_to_num(nan=math.inf).max()) if ratio.numel() else 0.0
    return float(diff.nan_to_num(nan=math.inf).max()), worst, worst <= 1.0 and not bool(nan.any())


def check_values(device: str, compiled: bool = False) -> int:
    """Value and gradient of every loss on ``device`` (float32 and AMP) against CPU float64; returns failures."""
    from yolo_vfl.losses import ClsLoss

    amp_dtype = torch.float16 if device.startswith("cuda") else torch.bfloat16
    x, q, labels = fixed_batch()
    print(f"## values: {tuple(x.shape)} fixed batch on {device} vs autograd formula in float64 on the CPU\n")
    print("| loss | impl | dtype | max abs err value | value err / tol | max abs err grad | grad err / tol | ok |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- |")
    failures = 0
    for name in LOSSES:
        reference = ClsLoss(name, impl="autograd")
        for impl in _impls(name, compiled):
            loss = ClsLoss(name, impl=impl)
            for dtype in (torch.float32, amp_dtype):
                xr = x.to(dtype).double()  # the logits the device sees, exactly
                ref_value, ref_grad = _value_and_grad(reference, xr, q.double(), labels)
                with torch.autocast(device.split(":")[0], dtype=amp_dtype, enabled=dtype != torch.float32):
                    value, grad = _value_and_grad(loss, x.to(device, dtype), q.to(device), labels.to(device))
                rtol, atol = TOLERANCES[dtype]
                v_abs, v_ratio, v_ok = _error(value, ref_value, rtol, atol)
                g_abs, g_ratio, g_ok = _error(grad, ref_grad, rtol, atol)
                ok = v_ok and g_ok and value.dtype == torch.float32 and grad.dtype == dtype
                failures += not ok
                print(
                    f"| {name} | {impl} | {str(dtype).removeprefix('torch.')} | {v_abs:.2e} | {v_ratio:.3f} "
                    f"| {g_abs:.2e} | {g_ratio:.3f} | {'ok' if ok else 'FAIL'} |"
                )
    tol = ", ".join(f"{str(k).removeprefix('torch.')} rtol {r:g} atol {a:g}" for k, (r, a) in TOLERANCES.items())
    print(f"\ntolerances: {tol}; the loss must come out float32, the gradient in the logits' dtype")
    print(f"values: {'all ok' if not failures else f'{failures} FAILED'}\n", flush=True)
    return failures


def _tiny_detection_setup(device: str):
    """A yolov8n (3 classes) with Ultralytics' gains and a 64 px batch of 3 images, one without objects."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False).to(device)
    model.args = get_cfg()
    model.train()
    batch = {
        "img": torch.rand(3, 3, 64, 64, device=device),
        "batch_idx": torch.tensor([0.0, 0.0, 2.0, 2.0, 2.0], device=device),
        "cls": torch.tensor([[2.0], [0.0], [1.0], [1.0], [2.0]], device=device),
        "bboxes": torch.tensor(
            [[0.3, 0.3, 0.4, 0.4], [0.7, 0.65, 0.3, 0.45], [0.25, 0.7, 0.35, 0.3], [0.6, 0.3, 0.5, 0.4], [0.8] * 4],
            device=device,
        ),
    }
    return model, batch


def _leaves(preds: Any) -> Any:
    """The model's outputs as fresh leaf tensors (the backward stops at the criterion)."""
    if isinstance(preds, torch.Tensor):
        return preds.detach().requires_grad_(preds.is_floating_point())
    if isinstance(preds, dict):
        return {k: _leaves(v) for k, v in preds.items()}
    return type(preds)(_leaves(v) for v in preds)


def _cuda_syncs(criterion, preds: Any, batch: dict[str, torch.Tensor]) -> int:
    """Syncs CUDA reports during one criterion forward + backward."""
    preds = _leaves(preds)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            loss, _ = criterion(preds, batch)
            loss.sum().backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def check_syncs(device: str) -> int:
    """Host syncs of every loss path against stock BCE, counted by CUDA; returns the paths that add syncs."""
    from yolo_vfl.criterion import ClsLossSettings, install_cls_loss

    model, batch = _tiny_detection_setup(device)
    empty = {**batch, "batch_idx": batch["batch_idx"][:0], "cls": batch["cls"][:0], "bboxes": batch["bboxes"][:0]}
    print("## syncs: yolov8n criterion forward + backward, syncs CUDA reports (set_sync_debug_mode), vs stock BCE\n")
    print("| loss | cls_target | cls_fg_negatives | syncs, objects (stock) | syncs, no objects (stock) | ok |")
    print("| --- | --- | --- | --- | --- | --- |")
    failures = 0
    with torch.no_grad():
        preds = {key: model(b["img"]) for key, b in (("objects", batch), ("empty", empty))}
    stock = {
        key: _cuda_syncs(model.init_criterion(), preds[key], b) for key, b in (("objects", batch), ("empty", empty))
    }
    for name in LOSSES:
        for target in ("tal", "iou"):
            for fg_negatives in ("loss", "bce"):
                settings = ClsLossSettings.from_args(
                    {"loss": name, "cls_target": target, "cls_fg_negatives": fg_negatives}
                )
                counts = {}
                for key, b in (("objects", batch), ("empty", empty)):
                    criterion = model.init_criterion()
                    install_cls_loss(criterion, settings)
                    counts[key] = _cuda_syncs(criterion, preds[key], b)
                ok = counts == stock
                failures += not ok
                print(
                    f"| {name} | {target} | {fg_negatives} | {counts['objects']} ({stock['objects']}) "
                    f"| {counts['empty']} ({stock['empty']}) | {'ok' if ok else 'FAIL'} |"
                )
    print(
        f"\nsyncs: {'none added on any path' if not failures else f'{failures} paths add syncs: FAILED'}\n", flush=True
    )
    return failures


TRAIN_RUNS = [*({"loss": name} for name in LOSSES), {"loss": "vfl", "cls_target": "iou", "cls_fg_negatives": "bce"}]


def _train_one(settings: dict[str, Any], name: str, data: Path, device: int | str, out: Path) -> int:
    """Train one epoch and print its row; 1 if it failed (an exception, AMP not as expected, a non-finite loss)."""
    from ultralytics import YOLO

    from yolo_vfl import VFLDetectionTrainer
    from yolo_vfl.ab.run import read_results_csv
    from yolo_vfl.criterion import installed_loss

    label = " ".join(f"{k}={v}" for k, v in settings.items())
    t0 = time.perf_counter()
    try:
        model = YOLO("yolov8n.yaml")
        model.train(
            trainer=VFLDetectionTrainer,
            data=str(data),
            epochs=1,
            imgsz=64,
            batch=16,
            amp=True,
            device=device,
            workers=2,
            project=str(out / "runs"),
            name=name,
            exist_ok=True,
            plots=False,
            verbose=False,
            seed=0,
            **settings,
        )
    except Exception as e:  # one broken loss must not hide the others
        print(f"| {label} | | | | | | | | FAIL: {type(e).__name__}: {str(e)[:200]} |", flush=True)
        return 1
    seconds = time.perf_counter() - t0
    trainer = model.trainer
    amp = bool(trainer.amp)
    installed = installed_loss(trainer.model.criterion)
    rows = read_results_csv(trainer.save_dir / "results.csv")
    row = rows[-1] if rows else {}
    values = [row.get(k, math.nan) for k in ("train/box_loss", "train/cls_loss", "train/dfl_loss", "val/cls_loss")]
    ok = amp == (device != "cpu") and installed == settings["loss"] and all(math.isfinite(v) for v in values)
    cells = " | ".join(f"{v:.4g}" for v in values)
    print(f"| {label} | {amp} | {installed} | {seconds:.1f} | {cells} | {'ok' if ok else 'FAIL'} |", flush=True)
    return 0 if ok else 1


def check_training(device: str, out: Path, images: int = 64) -> int:
    """One AMP epoch per loss on a generated dataset; returns the runs that failed.

    On the CPU (``--device cpu --dry --parts train``, minutes) Ultralytics trains without AMP, and that is expected.
    """
    import ultralytics.engine.trainer as engine
    from ultralytics.utils import LOGGER

    from yolo_vfl.data import generate_dataset

    data = generate_dataset(out / "data", n=images, imgsz=64)
    cuda = device.startswith("cuda")
    train_device = (int(device.split(":")[1]) if ":" in device else 0) if cuda else "cpu"
    print(f"## train: one epoch per loss, AMP, yolov8n.yaml, {images} generated images at 64 px, batch 16\n")
    print("| settings | AMP | loss installed | epoch s | train/box | train/cls | train/dfl | val/cls | ok |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |", flush=True)
    # Ultralytics' AMP check downloads yolo26n.pt; these machines are offline, and AMP is what is being checked: on
    # for CUDA (the check's own answer on a working GPU), off for the CPU (its answer there).
    check_amp, level = engine.check_amp, LOGGER.level
    engine.check_amp = lambda model: next(model.parameters()).device.type == "cuda"
    LOGGER.setLevel(logging.WARNING)  # keep the table readable
    try:
        failures = sum(
            _train_one(settings, f"run{i}", data, train_device, out) for i, settings in enumerate(TRAIN_RUNS)
        )
    finally:
        engine.check_amp = check_amp
        LOGGER.setLevel(level)
    print(f"\ntrain: {'all ok' if not failures else f'{failures} FAILED'}\n", flush=True)
    return failures


def _bench_rows(compiled: bool) -> list[tuple[str, str]]:
    return [(name, impl) for name in LOSSES for impl in _impls(name, compiled)]


def bench(device: str, shape: tuple[int, int, int], repeats: int, warmup: int, compiled: bool) -> int:
    """Forward + backward time and peak memory of each loss against BCE, in this process; returns 0."""
    from yolo_vfl.losses import ClsLoss

    cuda = device.startswith("cuda")
    tensor_mib = math.prod(shape) * 4 / 2**20
    print(f"## bench: forward + backward at {shape} float32 on {device} (one tensor {tensor_mib:.1f} MiB)\n")
    print("| loss | impl | median ms | BCE median ms, paired | ratio to BCE | peak extra MiB | peak / BCE's |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    x, q = make_inputs(shape, 0.001, device, seed=0)
    bce = lambda x, q: F.binary_cross_entropy_with_logits(x, q, reduction="none")  # noqa: E731 (stock YOLOv8)

    def peak(fn) -> float:
        if not cuda:
            return math.nan  # the RSS high-water mark needs a fresh process: bench_losses.py measures it on CPU
        _sync(device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(fn, x, q)
        _sync(device)
        return (torch.cuda.max_memory_allocated() - before) / 2**20

    bce_peak = peak(bce)
    for name, impl in _bench_rows(compiled):
        module = ClsLoss(name, impl=impl)
        fn = lambda x, q, module=module: module(x, q)  # noqa: E731
        step(fn, x, q)  # kernels loaded (compiled: compiled) before timing
        mib = peak(fn)
        times: dict[str, list[float]] = {"loss": [], "bce": []}
        for i in range(warmup + repeats):
            for key, f in (("loss", fn), ("bce", bce)) if i % 2 else (("bce", bce), ("loss", fn)):
                _sync(device)
                t0 = time.perf_counter()
                step(f, x, q)
                _sync(device)
                if i >= warmup:
                    times[key].append((time.perf_counter() - t0) * 1e3)
        med, med_bce = statistics.median(times["loss"]), statistics.median(times["bce"])
        print(
            f"| {name} | {impl} | {med:.2f} | {med_bce:.2f} | {med / med_bce:.2f} | {mib:.0f} "
            f"| {mib / bce_peak if bce_peak else math.nan:.2f} |",
            flush=True,
        )
    print(
        f"\nmedian of {repeats} steps after {warmup}, each paired with a BCE step (alternating order); peak extra: "
        + ("CUDA max_memory_allocated during one step above the inputs" if cuda else "not measured on CPU")
        + (f"; BCE's own: {bce_peak:.0f} MiB" if cuda else "")
        + "\n",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda[:i] (default), or cpu with --dry")
    parser.add_argument("--dry", action="store_true", help="small sizes; parts values and bench unless --parts")
    parser.add_argument("--parts", nargs="+", choices=PARTS, help="default: all on CUDA, values and bench with --dry")
    parser.add_argument("--compiled", action="store_true", help="also check and time impl=compiled (slow to compile)")
    parser.add_argument("--shape", type=int, nargs=3, default=[16, 8400, 80], metavar=("B", "A", "C"))
    parser.add_argument("--repeats", type=int, default=20, help="timed bench steps per row (median reported)")
    parser.add_argument("--images", type=int, default=64, help="generated images for the training part")
    parser.add_argument("--out", type=Path, default=None, help="where training writes (default: a temporary dir)")
    a = parser.parse_args(argv)

    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print(
            f"{NO_CUDA} (torch {torch.__version__}, built with CUDA {torch.version.cuda}, "
            f"torch.cuda.is_available() is False): nothing checked. Run it on a CUDA machine, or "
            "`--device cpu --dry` for the value/gradient check on the CPU."
        )
        return 0
    if not cuda and not a.dry:
        parser.error("--device cpu is only for --dry (the CPU has no AMP to check; bench_losses.py times the CPU)")
    os.environ.setdefault("YOLO_OFFLINE", "1")  # nothing downloads: the device machines are offline

    import ultralytics

    parts = a.parts or (["values", "bench"] if a.dry else list(PARTS))
    if "syncs" in parts and not cuda:
        parser.error("--parts syncs needs CUDA: it counts the syncs CUDA reports (tests/test_criterion.py counts ops)")
    where = torch.cuda.get_device_name(a.device) if cuda else f"CPU {cpu_model()}"
    print(
        f"gpu_check: {where}; torch {torch.__version__} (CUDA {torch.version.cuda}), ultralytics "
        f"{ultralytics.__version__}, python {platform.python_version()}; parts: {' '.join(parts)}\n",
        flush=True,
    )
    started = time.perf_counter()
    failures = 0
    if "values" in parts:
        failures += check_values(a.device, a.compiled)
    if "syncs" in parts:
        failures += check_syncs(a.device)
    if "train" in parts:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
            failures += check_training(a.device, a.out or Path(tmp), a.images)
    if "bench" in parts:
        shape = (2, 256, 8) if a.dry else tuple(a.shape)
        failures += bench(a.device, shape, 2 if a.dry else a.repeats, 1 if a.dry else 3, a.compiled)
    verdict = "all checks passed" if not failures else f"{failures} check(s) FAILED"
    print(f"gpu_check: {verdict} in {time.perf_counter() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
