"""Benchmark forward + backward of the classification losses against BCE, as YOLOv8 calls them.

Every row runs on the same kind of tensors: logits ``x`` of shape ``(B, A, C)`` (default ``(16, 8400, 80)``, YOLOv8
at 640 px, batch 16), drawn around ``-4 +- 2`` so that ``sigmoid(x)`` is small as after Ultralytics' bias init, and
targets ``q`` that are 0 except for about 0.1 % positives with ``q`` in ``(0, 1]``. One timed step is
``loss(x, q)`` (elementwise, ``reduction="none"``) then ``.sum().backward()``, exactly what the Ultralytics criterion
does; the BCE row is ``F.binary_cross_entropy_with_logits(x, q, reduction="none").sum().backward()``.

Each row runs in a fresh process (``multiprocessing`` spawn), so that its peak memory is its own:

* CPU: the rise of ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` during the first full-size forward + backward, above
  the level after the inputs were allocated. Where Linux allows it (``/proc/self/clear_refs``), the high-water mark
  is reset right before the measured step, so a bigger earlier peak (``torch.compile``) cannot hide it.
* CUDA: ``torch.cuda.max_memory_allocated()`` during that step minus the memory allocated before it.

The time is the median of ``--repeats`` steps after ``--warmup`` steps. ``compiled`` rows compile on a small shape
first (dynamic shapes) and report that time separately.

Targets (from the issue): the default (fused) VFL and QFL at most 3x BCE's time and at most BCE's peak memory plus
two ``(B, A, C)`` float32 tensors; the compiled path at most 1.0x BCE's time, with gradients equal to eager.

Usage::

    python experiments/bench_losses.py                       # full table, (16, 8400, 80)
    python experiments/bench_losses.py --shape 4 8400 80 --repeats 5 --no-compile
    python experiments/bench_losses.py --check               # compiled == fused (value and grad), small shape
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

ROWS = [
    ("bce", "torch"),
    ("focal", "autograd"),
    ("vfl", "fused"),
    ("vfl", "autograd"),
    ("vfl", "compiled"),
    ("qfl", "fused"),
    ("qfl", "autograd"),
    ("qfl", "compiled"),
]


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_inputs(shape: tuple[int, ...], pos_frac: float, device: str, seed: int):
    """Logits ~ N(-4, 2) and sparse soft targets, built without full-size temporaries (keeps the RSS baseline true)."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.empty(shape).normal_(-4.0, 2.0, generator=g)
    q = torch.zeros(shape)
    n_pos = max(1, round(pos_frac * q.numel())) if q.numel() else 0
    idx = torch.randint(q.numel(), (n_pos,), generator=g)
    q.view(-1)[idx] = 1.0 - torch.rand(n_pos, generator=g)  # (0, 1]
    return x.to(device).requires_grad_(), q.to(device)


def loss_fn(name: str, impl: str):
    """The callable ``f(x, q) -> elementwise loss`` of one table row."""
    import torch.nn.functional as F

    from yolo_vfl.losses import quality_focal_loss, sigmoid_focal_loss, varifocal_loss

    if name == "bce":
        return lambda x, q: F.binary_cross_entropy_with_logits(x, q, reduction="none")
    if name == "focal":
        return sigmoid_focal_loss
    if name == "vfl":
        return lambda x, q: varifocal_loss(x, q, impl=impl)
    if name == "qfl":
        return lambda x, q: quality_focal_loss(x, q, impl=impl)
    raise ValueError(f"unknown row {name!r}")


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_cpu_peak() -> bool:
    """Reset the RSS high-water mark (Linux >= 4.0; also resets ru_maxrss); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # Linux reports KiB, macOS bytes


def step(fn, x, q) -> None:
    """One timed unit: elementwise loss, then ``.sum().backward()``."""
    x.grad = None
    fn(x, q).sum().backward()


def measure(name: str, impl: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one row in this (fresh) process: compile, peak memory of the first full-size step, then timings."""
    import torch

    if args["threads"]:
        torch.set_num_threads(args["threads"])
    device = args["device"]
    fn = loss_fn(name, impl)
    out: dict[str, Any] = {"name": name, "impl": impl, "compile_s": None}

    # Load kernels, thread pools and (compiled rows) compile on a small shape, so the measured step is the loss alone.
    xs, qs = make_inputs((2, 64, args["shape"][-1]), 0.05, device, args["seed"] + 1)
    t0 = time.perf_counter()
    step(fn, xs, qs)
    _sync(device)
    if impl == "compiled":
        out["compile_s"] = time.perf_counter() - t0
    del xs, qs

    x, q = make_inputs(tuple(args["shape"]), args["pos_frac"], device, args["seed"])
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(fn, x, q)
        _sync(device)
        out["peak_bytes"] = torch.cuda.max_memory_allocated() - before
    else:
        out["peak_reset"] = _reset_cpu_peak()
        before = _maxrss_bytes()
        step(fn, x, q)
        out["peak_bytes"] = _maxrss_bytes() - before

    # Timing, paired with BCE in this same process: the two alternate step by step (in alternating order), so that a
    # busy machine slows both alike and their ratio stays meaningful.
    # The CPU time of the process (user + system, all threads) is recorded too: with one thread it counts the work
    # done, not the time spent waiting for a core that another process holds.
    bce = loss_fn("bce", "torch")
    acc: dict[str, list[float]] = {"times_ms": [], "bce_times_ms": [], "cpu_ms": [], "bce_cpu_ms": []}
    for i in range(args["warmup"] + args["repeats"]):
        order = ((fn, ""), (bce, "bce_")) if i % 2 else ((bce, "bce_"), (fn, ""))
        for f, prefix in order:
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            step(f, x, q)
            _sync(device)
            if i >= args["warmup"]:
                acc[f"{prefix}times_ms"].append((time.perf_counter() - t0) * 1e3)
                acc[f"{prefix}cpu_ms"].append((time.process_time() - c0) * 1e3)
    out.update(acc)

    if impl in ("autograd", "compiled") and name in ("vfl", "qfl"):  # gradient agreement with the default (fused)
        step(fn, x, q)
        grad, x.grad = x.grad, None
        step(loss_fn(name, "fused"), x, q)
        out["max_grad_diff"] = (grad - x.grad).abs().max().item()
    return out


def _worker(name: str, impl: str, args: dict[str, Any], queue) -> None:
    cache = None
    if impl == "compiled" and not args["warm_cache"]:  # a cold compile: inductor must not reuse an earlier run's code
        cache = tempfile.mkdtemp(prefix="bench_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # before torch is imported in this fresh process
    try:
        queue.put(measure(name, impl, args))
    except Exception as e:  # reported in the table, the other rows still run
        queue.put({"name": name, "impl": impl, "error": f"{type(e).__name__}: {e}"})
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)


def run_row(name: str, impl: str, args: dict[str, Any]) -> dict[str, Any]:
    """Measure one row in a fresh spawned process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(name, impl, args, queue))
    proc.start()
    try:
        result = queue.get(timeout=args["timeout"])
    except Exception:
        result = {"name": name, "impl": impl, "error": f"no result (exit code {proc.exitcode})"}
    proc.join(timeout=30)
    if proc.is_alive():
        proc.terminate()
    return result


def check(shape: tuple[int, ...], device: str) -> None:
    """Assert that impl="compiled" gives the fused value and gradient for VFL and QFL, also at a second batch size."""
    import torch

    from yolo_vfl.losses import quality_focal_loss, varifocal_loss

    for fn, hp in ((varifocal_loss, {}), (quality_focal_loss, {}), (quality_focal_loss, {"alpha": 0.25, "beta": 1.5})):
        for batch in (shape[0], shape[0] + 3):  # the second batch size must not fail (dynamic shapes)
            x, q = make_inputs((batch, *shape[1:]), 0.05, device, seed=batch)
            grads, values = [], []
            for impl in ("fused", "compiled"):
                x.grad = None
                loss = fn(x, q, impl=impl, **hp)
                loss.sum().backward()
                values.append(loss.detach())
                grads.append(x.grad)
            torch.testing.assert_close(values[1], values[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)
            diff = (grads[1] - grads[0]).abs().max().item()
            print(f"check {fn.__name__} {hp or ''} shape {tuple(x.shape)}: compiled == fused (max |dgrad| {diff:.2e})")
    print("check passed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[16, 8400, 80], metavar=("B", "A", "C"))
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per row (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--pos-frac", type=float, default=0.001, help="fraction of positive targets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--rows", nargs="*", help="only these rows, e.g. bce vfl:fused qfl")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    parser.add_argument(
        "--warm-cache", action="store_true", help="let compiled rows reuse inductor's on-disk cache (default: cold)"
    )
    parser.add_argument("--check", action="store_true", help="only assert compiled == fused (value, grad), small shape")
    parser.add_argument("--check-shape", type=int, nargs=3, default=[2, 500, 80], metavar=("B", "A", "C"))
    a = parser.parse_args(argv)

    import torch

    if a.check:
        check(tuple(a.check_shape), a.device)
        return 0

    rows = [r for r in ROWS if not (a.no_compile and r[1] == "compiled")]
    if a.rows:
        rows = [r for r in rows if r[0] in a.rows or f"{r[0]}:{r[1]}" in a.rows]
        if ("bce", "torch") not in rows:
            rows.insert(0, ("bce", "torch"))
    args = {
        k: getattr(a, k)
        for k in ("shape", "repeats", "warmup", "threads", "device", "pos_frac", "seed", "timeout", "warm_cache")
    }

    threads = a.threads or torch.get_num_threads()
    B, A, C = a.shape
    tensor_mib = B * A * C * 4 / 2**20
    print(f"torch {torch.__version__}, python {platform.python_version()}, device {a.device}, threads {threads}")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores); load average {os.getloadavg()[0]:.2f}")
    print(f"shape {tuple(a.shape)}, one float32 tensor = {tensor_mib:.1f} MiB; positives {a.pos_frac:.2%}")
    print(f"median of {a.repeats} steps after {a.warmup} warm-up steps; each row in a fresh process\n", flush=True)

    results = []
    for name, impl in rows:
        r = run_row(name, impl, args)
        results.append(r)
        status = r.get("error") or f"{statistics.median(r['times_ms']):.1f} ms"
        print(f"  measured {name} {impl}: {status}", file=sys.stderr, flush=True)

    bce_row = next(r for r in results if r["name"] == "bce")
    bce_mib = bce_row.get("peak_bytes", float("nan")) / 2**20
    mem_budget = bce_mib + 2 * tensor_mib
    print(
        "| loss | impl | median ms | BCE median ms, same process | ratio to BCE | CPU-time ratio to BCE | time target "
        "| peak extra MiB | memory target | compile s | max abs grad diff vs fused |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: |")
    noisy = False
    for r in results:
        if "error" in r:
            print(f"| {r['name']} | {r['impl']} | error: {r['error']} | | | | | | | | |")
            continue
        t, tb = r["times_ms"], r["bce_times_ms"]
        med, med_bce = statistics.median(t), statistics.median(tb)
        noisy |= any((max(v) - min(v)) / statistics.median(v) > 0.25 for v in (t, tb))
        ratio = med / med_bce
        cpu_ratio = statistics.median(r["cpu_ms"]) / statistics.median(r["bce_cpu_ms"])
        mib = r["peak_bytes"] / 2**20
        time_target = mem_target = ""
        if r["impl"] == "fused":
            time_target = f"<= 3x: {'ok' if ratio <= 3 else 'MISSED'}"
            mem_target = f"<= {mem_budget:.0f}: {'ok' if mib <= mem_budget else 'MISSED'}"
        elif r["impl"] == "compiled":
            time_target = f"<= 1x: {'ok' if ratio <= 1 else 'MISSED'}"
        comp = f"{r['compile_s']:.1f}" if r.get("compile_s") is not None else ""
        diff = f"{r['max_grad_diff']:.1e}" if "max_grad_diff" in r else ""
        print(
            f"| {r['name']} | {r['impl']} | {med:.1f} | {med_bce:.1f} | {ratio:.2f} | {cpu_ratio:.2f} | {time_target} "
            f"| {mib:.0f} | {mem_target} | {comp} | {diff} |"
        )
    print(
        f"\nratio: median wall time / median wall time of BCE, measured alternately in the same process (the time "
        f"targets use it); CPU-time ratio: the same with process CPU time, which a busy machine disturbs less when "
        f"--threads 1; peak extra memory: "
        f"{'CUDA max_memory_allocated' if a.device.startswith('cuda') else 'rise of ru_maxrss'} during the first "
        f"full-size step above the level after the inputs were allocated (BCE + 2 tensors = {mem_budget:.0f} MiB)"
    )
    if not all(r.get("peak_reset", True) for r in results):
        print("\nnote: could not reset the RSS high-water mark; peaks after compile may be underestimated")
    if noisy:
        print(
            "\nnote: some steps varied > 25 %: the machine looks busy; trust the paired ratios (CPU-time ratio with "
            "--threads 1) more than the milliseconds"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
