"""The pretrained starting point: spec validation, fingerprint, build / reuse / restart, lock, plain checkpoint, CLI."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from yolo_vfl import data as data_mod
from yolo_vfl import pretrain
from yolo_vfl.fileio import file_lock
from yolo_vfl.pretrain import PretrainResult, PretrainSpec, cli_pretrain, pretrained_checkpoint

TINY = {"n": 15, "imgsz": 32, "epochs": 1, "batch": 4, "workers": 0}


class Interrupt(Exception):
    """Raised by a callback to stop a build like a killed process, after the epoch's last.pt is written."""


def epochs_of(results_csv: Path) -> list[int]:
    with open(results_csv) as f:
        return [int(float(row["epoch"])) for row in csv.DictReader(f, skipinitialspace=True)]


# ------------------------------------------------------------------------------------------------------ the spec
@pytest.mark.parametrize(
    "mapping, error, message",
    [
        ({"epoch": 3}, ValueError, r"Unknown pretrain key 'epoch'\. Valid keys: model, .*Did you mean 'epochs'\?"),
        ({"variant": "shape"}, ValueError, r"Invalid PretrainSpec variant='shape': valid variants are shapes, glyphs"),
        ({"model": "yolov8n.pt"}, ValueError, r"Invalid PretrainSpec model='yolov8n\.pt': valid values are model YAML"),
        ({"model": 3}, TypeError, r"PretrainSpec model must be a model YAML name or path, got 3"),
        ({"n": 1}, ValueError, r"Invalid PretrainSpec n=1: valid values are ints >= 2"),
        ({"n": 12.0}, TypeError, r"PretrainSpec n must be an int, got 12\.0 \(float\)"),
        ({"seed": True}, TypeError, r"PretrainSpec seed must be an int, got True \(bool\)"),
        ({"imgsz": 100}, ValueError, r"Invalid PretrainSpec imgsz=100: .*between 32 and 4096 and a multiple of 32"),
        ({"epochs": 0}, ValueError, r"Invalid PretrainSpec epochs=0"),
        ({"batch": -1}, ValueError, r"Invalid PretrainSpec batch=-1"),
        ({"workers": -1}, ValueError, r"Invalid PretrainSpec workers=-1"),
        ({"deterministic": 1}, TypeError, r"PretrainSpec deterministic must be a bool"),
        ({"train_args": [1, 2]}, TypeError, r"PretrainSpec train_args must be a mapping"),
        ({"train_args": {"mosiac": 0.5}}, ValueError, r"train argument 'mosiac'.*Did you mean 'mosaic'\?"),
        ({"train_args": {"epochs": 2}}, ValueError, r"train_args cannot set 'epochs'"),
        ({"train_args": {"lr0": "fast"}}, TypeError, r"Invalid PretrainSpec train_args: 'lr0=fast' is of invalid type"),
        ({"train_args": {"lr0": {"a": 1}}}, TypeError, r"train_args lr0=\{'a': 1\} \(dict\) must be a str"),
    ],
)
def test_invalid_specs_fail_with_one_line_errors(mapping, error, message):
    """Bad keys and values raise a typed one-line error naming the value (and the valid choices) on construction."""
    with pytest.raises(error, match=message) as info:
        PretrainSpec.from_dict(mapping)
    assert "\n" not in str(info.value)


def test_from_dict_round_trip_and_defaults():
    """Missing keys take the defaults; to_dict/from_dict round-trips; train_args are normalized to sorted pairs."""
    default = PretrainSpec()
    assert PretrainSpec.from_dict(None) == PretrainSpec.from_dict({}) == default
    assert (default.model, default.variant, default.n, default.seed, default.imgsz) == (
        "yolov8n.yaml",
        "shapes",
        3200,
        100,
        160,
    )
    spec = PretrainSpec.from_dict({"n": 40, "train_args": {"lr0": 0.02, "close_mosaic": 0, "optimizer": "SGD"}})
    assert spec.train_args == (
        ("close_mosaic", 0),
        ("lr0", 0.02),
        ("nbs", 16),
        ("optimizer", "SGD"),
        ("warmup_epochs", 1),
    )
    assert PretrainSpec.from_dict(spec.to_dict()) == spec
    assert json.loads(json.dumps(spec.to_dict())) == spec.to_dict()
    hash(spec)  # frozen and hashable
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.n = 3  # type: ignore[misc]
    args = spec.train_overrides()
    assert args["epochs"] == spec.epochs and args["seed"] == spec.train_seed and args["optimizer"] == "SGD"
    assert "loss" not in args  # stock BCE: no yolo-vfl setting ever reaches the trainer


def test_default_recipe_is_merged_under_given_train_args():
    """The default build trains AdamW lr0 0.002 with an optimizer step per batch (nbs 16) and one warm-up epoch.

    Ultralytics' own choice for a run this short (optimizer=auto: AdamW lr0 0.000833, nbs 64: a step every 4th batch,
    3 warm-up epochs) reached only mAP50-95 0.157; a given key wins over the recipe, the others stay.
    """
    args = PretrainSpec().train_overrides()
    assert (args["optimizer"], args["lr0"], args["nbs"], args["warmup_epochs"]) == ("AdamW", 0.002, 16, 1)
    stock = PretrainSpec(train_args={"optimizer": "auto", "nbs": 64, "warmup_epochs": 3}).train_overrides()
    assert (stock["optimizer"], stock["nbs"], stock["warmup_epochs"], stock["lr0"]) == ("auto", 64, 3, 0.002)
    assert PretrainSpec(train_args={"lr0": 0.002}) == PretrainSpec()  # the recipe's own value: the same spec
    with pytest.raises(ValueError, match=r"repeated key"):
        PretrainSpec(train_args=[("lr0", 0.1), ("lr0", 0.2)])


def test_fingerprint_stable_and_sensitive_to_every_field(monkeypatch):
    """Same spec, same fingerprint; changing any field, the generator version or Ultralytics' minor changes it."""
    base = PretrainSpec()
    fp = base.fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert PretrainSpec().fingerprint() == fp == PretrainSpec.from_dict(base.to_dict()).fingerprint()
    changed = {
        "model": "yolo11n.yaml",
        "variant": "glyphs",
        "n": 3201,
        "seed": 101,
        "imgsz": 192,
        "epochs": 13,
        "batch": 8,
        "train_seed": 1,
        "deterministic": False,
        "workers": 0,
        "train_args": {"lr0": 0.02},
    }
    assert set(changed) == set(PretrainSpec.fields())
    seen = {fp}
    for key, value in changed.items():
        other = dataclasses.replace(base, **{key: value}).fingerprint()
        assert other not in seen, key
        seen.add(other)
    monkeypatch.setattr(data_mod, "GENERATOR_VERSION", data_mod.GENERATOR_VERSION + 1)
    assert base.fingerprint() not in seen
    monkeypatch.undo()
    monkeypatch.setattr(pretrain, "_ultralytics_minor", lambda: "9.9")
    assert base.fingerprint() not in seen


# --------------------------------------------------------------------------------------- lock, reuse, CLI (no training)
def _fake_publish(spec: PretrainSpec) -> Path:
    final = pretrain.pretrain_dir() / spec.fingerprint()
    final.mkdir(parents=True)
    (final / "best.pt").write_bytes(b"not a real checkpoint")
    meta = {
        "fingerprint": spec.fingerprint(),
        "spec": spec.to_dict(),
        "metrics": {"mAP50": 0.5, "mAP50-95": 0.3},
        "train_time_s": 12.5,
        "versions": {"ultralytics": "x"},
    }
    (final / "pretrain.json").write_text(json.dumps(meta))
    return final


def test_second_process_waits_for_the_lock_then_reuses(tmp_path, monkeypatch):
    """While another holder has the build lock a caller waits; once the checkpoint is published it reuses it."""
    monkeypatch.setenv("YOLO_VFL_CACHE", str(tmp_path / "cache"))
    spec = PretrainSpec.from_dict(TINY)
    built = []
    monkeypatch.setattr(pretrain, "_build", lambda *a, **k: built.append(a) or {})
    logs: list[str] = []
    waiting = threading.Event()
    out: dict[str, PretrainResult] = {}

    def log(msg: str) -> None:
        logs.append(msg)
        if "waiting" in msg:
            waiting.set()

    lock = pretrain.pretrain_dir() / f".{spec.fingerprint()}.lock"
    with file_lock(lock):
        worker = threading.Thread(target=lambda: out.setdefault("r", pretrained_checkpoint(spec, log=log)))
        worker.start()
        assert waiting.wait(30), logs
        assert f"pid {os.getpid()}" in logs[0]
        final = _fake_publish(spec)
    worker.join(30)
    result = out["r"]
    assert not built
    assert result.built_now is False and result.path == final / "best.pt"
    assert result.metrics["mAP50-95"] == 0.3 and result.train_time_s == 12.5 and result.spec == spec
    # a record without checkpoint_sha256 (caches published before it was recorded): the file is hashed on load
    assert result.sha256 == hashlib.sha256(b"not a real checkpoint").hexdigest()
    assert "using cached checkpoint" in logs[-1]


def test_incomplete_published_directory_is_not_used(tmp_path, monkeypatch):
    """A published directory without its metadata (or with another fingerprint) is rebuilt, not returned."""
    monkeypatch.setenv("YOLO_VFL_CACHE", str(tmp_path / "cache"))
    spec = PretrainSpec.from_dict(TINY)
    final = _fake_publish(spec)
    (final / "pretrain.json").write_text(json.dumps({"fingerprint": "0" * 16}))
    calls = []

    def fake_build(spec_, fp, root, *a, **k):
        calls.append(fp)
        raise RuntimeError("would build")

    monkeypatch.setattr(pretrain, "_build", fake_build)
    with pytest.raises(RuntimeError, match="would build"):
        pretrained_checkpoint(spec, log=lambda m: None)
    assert calls == [spec.fingerprint()]


def test_cli_pretrain_prints_result_and_routes_keys(tmp_path, monkeypatch, capsys):
    """cli_pretrain builds the spec from its keys (Ultralytics train args into train_args), passes device, prints."""
    seen = {}

    def fake(spec, *, device=None, log=print):
        seen.update(spec=spec, device=device)
        return PretrainResult(
            tmp_path / "best.pt", spec.fingerprint(), spec, {"mAP50-95": 0.367}, 960.0, {}, True, sha256="ab" * 32
        )

    monkeypatch.setattr(pretrain, "pretrained_checkpoint", fake)
    assert cli_pretrain({"n": 40, "imgsz": 64, "device": "cpu", "lr0": 0.02}) == 0
    spec = seen["spec"]
    assert (spec.n, spec.imgsz, dict(spec.train_args)["lr0"], seen["device"]) == (40, 64, 0.02, "cpu")
    out = capsys.readouterr().out
    assert str(tmp_path / "best.pt") in out and spec.fingerprint() in out and "0.3670" in out and "960 s" in out
    assert f"sha256:      {'ab' * 32}" in out
    with pytest.raises(ValueError, match=r"Unknown pretrain key 'epoch'.*Did you mean 'epochs'\?"):
        cli_pretrain({"epoch": 2})
    from yolo_vfl.cli import main

    assert main(["pretrain", "imgsz=100"]) == 2
    assert "Invalid PretrainSpec imgsz=100" in capsys.readouterr().err
    assert main(["pretrain", "n"]) == 2


def test_non_detect_model_and_missing_yaml_fail_before_any_work(tmp_path, monkeypatch):
    """A segmentation YAML or a YAML that does not exist fails before data generation or training."""
    monkeypatch.setenv("YOLO_VFL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data_mod, "embedded_dataset", lambda **k: pytest.fail("generated data"))
    with pytest.raises(ValueError, match=r"model='yolov8n-seg\.yaml': its task is 'segment'; valid task: detect"):
        pretrained_checkpoint(PretrainSpec(model="yolov8n-seg.yaml", **TINY), log=lambda m: None)
    with pytest.raises(FileNotFoundError):
        pretrained_checkpoint(PretrainSpec(model="no-such-model.yaml", **TINY), log=lambda m: None)


# ---------------------------------------------------------------------------------------------------- real builds
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny real build (15 images at 32 px, 1 epoch) in a cache of its own: (result, cache dir, logs)."""
    cache = tmp_path_factory.mktemp("pretrain-cache")
    logs: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YOLO_VFL_CACHE", str(cache))
        result = pretrained_checkpoint(PretrainSpec.from_dict(TINY), device="cpu", log=logs.append)
    return result, cache, logs


@pytest.mark.slow
def test_build_then_reuse_without_training(built, monkeypatch):
    """The first call trains and publishes best.pt + metadata; the second returns the same path without training."""
    from ultralytics.engine.model import Model

    result, cache, _ = built
    spec = PretrainSpec.from_dict(TINY)
    assert result.built_now is True and result.fingerprint == spec.fingerprint() and result.spec == spec
    assert result.path == cache / "pretrained" / spec.fingerprint() / "best.pt" and result.path.is_file()
    meta = json.loads((result.path.parent / "pretrain.json").read_text())
    assert set(meta["metrics"]) == {"mAP50", "mAP50-95", "precision", "recall"}
    assert 0.0 <= meta["metrics"]["mAP50-95"] <= meta["metrics"]["mAP50"] <= 1.0
    assert meta["metrics_source"] == "ultralytics final validation"
    assert meta["checkpoint_sha256"] == result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert meta["train_time_s"] > 0 and result.train_time_s == meta["train_time_s"]
    assert meta["versions"]["generator_version"] == data_mod.GENERATOR_VERSION
    assert meta["data"]["n_train"] + meta["data"]["n_val"] == 15
    assert epochs_of(result.path.parent / "results.csv") == [1]
    assert not list((cache / "pretrained").glob(".building-*")) and not list((cache / "pretrained").glob(".*tmp-*"))

    monkeypatch.setenv("YOLO_VFL_CACHE", str(cache))
    monkeypatch.setattr(Model, "train", lambda *a, **k: pytest.fail("retrained a cached checkpoint"))
    again = pretrained_checkpoint(spec, log=lambda m: None)
    assert again.built_now is False and again.path == result.path and again.metrics == result.metrics
    assert again == dataclasses.replace(result, built_now=False)


@pytest.mark.slow
def test_checkpoint_is_plain_ultralytics_and_fine_tunes(built, tmp_path):
    """best.pt references no yolo_vfl class, loads and predicts without yolo_vfl, and fine-tunes on other data."""
    from ultralytics import YOLO

    result, _, _ = built
    images = Path(result.meta["data"]["yaml"]).parent / "images" / "val"
    probe = (
        "import sys; sys.modules['yolo_vfl'] = None\n"  # importing yolo_vfl now fails
        "from ultralytics import YOLO\n"
        f"m = YOLO({str(result.path)!r}); r = m.predict({str(images)!r}, imgsz=32, device='cpu', verbose=False)\n"
        "print('PLAIN OK', m.task, len(m.names), len(r))\n"
    )
    env = dict(os.environ, YOLO_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert "PLAIN OK detect 8" in proc.stdout, proc.stdout + proc.stderr

    glyphs = data_mod.generate_dataset(tmp_path / "glyphs", n=12, seed=7, imgsz=32, variant="glyphs")
    model = YOLO(str(result.path))
    tiny = {"epochs": 1, "imgsz": 32, "batch": 4, "workers": 0, "device": "cpu", "plots": False, "verbose": False}
    model.train(data=str(glyphs), project=str(tmp_path), name="ft", **tiny)
    assert (tmp_path / "ft" / "weights" / "best.pt").is_file()
    assert len(model.trainer.model.names) == 6  # the head was rebuilt for the six glyph classes


@pytest.mark.slow
def test_interrupted_build_restarts_from_zero(tmp_path, monkeypatch):
    """A build stopped after epoch 1 of 2 leaves its directory; the next call removes it and trains epochs 1 and 2."""
    monkeypatch.setenv("YOLO_VFL_CACHE", str(tmp_path / "cache"))
    spec = PretrainSpec.from_dict({**TINY, "epochs": 2, "seed": 3})
    fp = spec.fingerprint()

    def stop(trainer):
        if trainer.epoch == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        pretrained_checkpoint(spec, device="cpu", log=lambda m: None, callbacks={"on_fit_epoch_end": stop})
    building = pretrain.pretrain_dir() / f".building-{fp}"
    assert (building / "weights" / "last.pt").is_file() and not (pretrain.pretrain_dir() / fp).exists()

    logs: list[str] = []
    result = pretrained_checkpoint(spec, device="cpu", log=logs.append)
    assert result.built_now is True and any("restarts from zero" in m for m in logs), logs
    assert epochs_of(result.path.parent / "results.csv") == [1, 2]
    assert result.meta["train_time_s"] > 0 and result.meta["metrics"]["mAP50-95"] is not None
    assert not building.exists()
