"""experiments/gpu_check.py: says so and exits 0 without CUDA; its value/gradient check and bench run on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_experiment_script

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    return load_experiment_script("gpu_check")


def test_without_cuda_it_says_so_and_exits_0():
    """No CUDA device (hidden here even on a GPU machine): one line saying so, exit status 0, nothing run."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(SCRIPT.parents[1])}
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("gpu_check: no CUDA device on this machine"), out.stdout
    assert "--device cpu --dry" in out.stdout and "|" not in out.stdout


def test_dry_run_on_cpu_checks_values_and_benches(gc, capsys):
    """--device cpu --dry: every loss and impl within tolerance of float64 (float32, bfloat16), a bench row each."""
    assert gc.main(["--device", "cpu", "--dry"]) == 0
    out = capsys.readouterr().out
    assert "values: all ok" in out and "gpu_check: all checks passed" in out
    for name, impl in gc._bench_rows(compiled=False):
        assert f"| {name} | {impl} | float32 |" in out and f"| {name} | {impl} | bfloat16 |" in out
        assert out.count(f"| {name} | {impl} |") == 3  # two value rows, one bench row
    assert "FAIL" not in out


@pytest.mark.parametrize("skew, rows", [(1.001, ("float32",)), (1.02, ("float32", "bfloat16"))])
def test_value_check_catches_a_skewed_kernel(gc, monkeypatch, capsys, skew, rows):
    """The check is not vacuous: a fused kernel 0.1 % off fails the float32 rows, 2 % off the bfloat16 rows too."""
    from yolo_vfl.losses import ClsLoss

    forward = ClsLoss.forward

    def skewed(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        return out * skew if self.impl == "fused" else out

    monkeypatch.setattr(ClsLoss, "forward", skewed)
    failures = gc.check_values("cpu")
    out = capsys.readouterr().out
    fused = [name for name in gc.LOSSES if "fused" in gc._impls(name, False)]
    rows_failed = [line.split("|")[1:4] for line in out.splitlines() if line.endswith("FAIL |")]
    failed = {tuple(cell.strip() for cell in cells) for cells in rows_failed}
    assert failed == {(name, "fused", dtype) for name in fused for dtype in rows}
    assert failures == len(failed)


def test_cpu_needs_dry_and_syncs_need_cuda(gc):
    """Full runs and the CUDA sync count are refused on the CPU (argparse error, exit status 2)."""
    for argv in (["--device", "cpu"], ["--device", "cpu", "--dry", "--parts", "syncs"]):
        with pytest.raises(SystemExit) as e:
            gc.main(argv)
        assert e.value.code == 2
