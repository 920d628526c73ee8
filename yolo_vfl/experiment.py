"""The A/B experiment runner: does VFL or QFL beat BCE on this data, and with which settings?

A spec (YAML, see ``experiments/ab_*.yaml``) names the arms (a loss plus optional per-arm overrides such as the
``cls`` gain or ``vfl_gamma``), the seeds and the shared Ultralytics training arguments::

    name: embedded
    seeds: [0, 1, 2]
    baseline: bce                  # the arm every other arm is compared with (default bce)
    device: cpu                    # one slot; [0, 1] runs two arms side by side, one per GPU; ["0,1", "2,3"]: DDP runs
    backend: local                 # or ray (pip install yolo-vfl[ray]); ray: {address: auto, num_cpus: 4, num_gpus: 1}
    train:                         # shared Ultralytics train arguments; no data: -> the embedded synthetic dataset
      model: yolov8n.yaml
      imgsz: 128
      epochs: 12
    arms:
      bce: {}                      # loss defaults to the arm name when that is a loss
      vfl: {loss: vfl}
      qfl_cls1: {loss: qfl, cls: 1.0}

Every arm x seed is a separate Ultralytics run (``out/runs/<arm>-s<seed>``) with ``seed=<seed>``,
``deterministic=True`` and identical data, model, epochs and image size, executed in its own subprocess
(``python -m yolo_vfl.experiment run-one JOB.json``; output in ``out/logs/<run>.log``), so that a crash or
Ultralytics' global state cannot leak between runs. When a run has finished, its ``result.json`` (final validation
metrics, final losses, per-epoch curve, training time, ranking quality, versions) is written atomically.

Resuming: the runner can be killed at any moment and started again with the same command. Runs with a
``result.json`` are kept and skipped (after checking they were trained with the same settings); a run with an
interrupted ``weights/last.pt`` resumes (``resume=True``); a run whose checkpoint is unusable, or whose directory has
no checkpoint or other settings, is moved to ``out/aside/`` and restarted cleanly; a run whose training had finished
before the kill is only evaluated. At the end the report (``yolo_vfl.report``) is written; ``yolo-vfl ab report
out=DIR`` rewrites it from the ``result.json`` files.

Several devices: ``device=0,1`` keeps one run per device going (a pool of local subprocesses, one slot per device).
Beyond one machine: ``backend=ray`` submits every arm x seed as a Ray task with the spec's resource request to an
existing cluster (``ray.address``), or to a local Ray instance when no address is given.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .report import atomic_write_json, atomic_write_text, load_results, write_report

__all__ = [
    "Arm",
    "ABSpec",
    "ABRunError",
    "load_spec",
    "spec_from_dict",
    "make_jobs",
    "inspect_run",
    "planned_state",
    "read_results_csv",
    "run_ab",
    "execute_job",
    "run_one",
    "regenerate_report",
    "cli_ab",
    "main",
]

#: Top-level keys of a spec file.
SPEC_KEYS = (
    "name",
    "out",
    "baseline",
    "seeds",
    "device",
    "backend",
    "ray",
    "ranking",
    "keep_going",
    "resume_interrupted",
    "train",
    "arms",
)
#: Keys of the ``ray:`` section.
RAY_KEYS = ("address", "num_cpus", "num_gpus", "runtime_env")
#: Keys of the ``ranking:`` section.
RANKING_KEYS = ("enabled", "conf", "iou", "max_det", "max_points")
RANKING_DEFAULTS = {"enabled": True, "conf": 0.001, "iou": 0.7, "max_det": 300, "max_points": 2000}
#: Runner keys accepted as ``key=value`` on the command line (besides shared train args and ``<section>.<key>``).
CLI_RUNNER_KEYS = (
    "name",
    "out",
    "baseline",
    "seeds",
    "arms",
    "device",
    "backend",
    "keep_going",
    "resume_interrupted",
    "dry_run",
)
#: Sections addressable as ``<section>.<key>=value`` on the command line; they cannot be arm names.
SECTIONS = ("train", "ray", "ranking")
#: Ultralytics arguments the runner sets itself.
RUNNER_OWNED = ("project", "name", "exist_ok", "resume", "mode", "seed", "task")
#: Arguments that must be identical for every arm (set them under ``train:``).
SHARED_ONLY = ("data", "model", "epochs", "imgsz", "deterministic", "device", "time", "fraction", "split", "val")
#: Arguments that do not change what is trained: ignored when checking a finished or partial run's settings.
NON_SEMANTIC = (
    "device",
    "workers",
    "verbose",
    "plots",
    "save_period",
    "cache",
    "project",
    "name",
    "exist_ok",
    "resume",
    "model",
    "data",
    "save_dir",
    "mode",
    "val",
    "save",
)
DEFAULT_MODEL = "yolov8n.yaml"
EMBEDDED = "embedded"
EXIT_BUSY = 75  # run-one: another process holds the run's lock

DEFAULT_SPEC: dict[str, Any] = {
    "name": "ab",
    "seeds": [0, 1, 2],
    "baseline": "bce",
    "train": {"model": DEFAULT_MODEL, "imgsz": 128, "epochs": 12, "batch": 16},
    "arms": {"bce": {}, "vfl": {}, "qfl": {}},
}


class ABRunError(RuntimeError):
    """Some runs failed; ``failed`` lists ``(run, message, log path)``. The report was written for the others."""

    def __init__(self, message: str, failed: list[tuple[str, str, str]]) -> None:
        super().__init__(message)
        self.failed = failed


def _user_error(message: str) -> Exception:
    from .cli import CLIError

    return CLIError(message)


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


# ----------------------------------------------------------------------------------------------------------- spec
@dataclass
class Arm:
    """One arm of the experiment.

    Attributes:
        name: arm name (directory-safe; runs are ``<name>-s<seed>``).
        loss: classification loss (``bce``, ``focal``, ``vfl``, ``qfl``).
        overrides: per-arm settings: loss hyperparameters (``vfl_gamma``) and Ultralytics train arguments (``cls``,
            ``lr0`` ...), applied on top of the shared ``train`` arguments.
    """

    name: str
    loss: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def loss_settings(self) -> Any:
        """The validated ``ClsLossSettings`` of this arm."""
        from .criterion import SETTING_KEYS, ClsLossSettings

        return ClsLossSettings.from_args(
            {"loss": self.loss, **{k: v for k, v in self.overrides.items() if k in SETTING_KEYS}}
        )

    def ultralytics_overrides(self) -> dict[str, Any]:
        """The per-arm Ultralytics train arguments."""
        from .criterion import SETTING_KEYS

        return {k: v for k, v in self.overrides.items() if k not in SETTING_KEYS}


@dataclass
class ABSpec:
    """A validated A/B experiment (see the module docstring for the YAML form).

    Attributes:
        name: experiment name (default output directory ``runs/ab/<name>``).
        arms: the arms, in report order.
        seeds: the seeds; every arm trains once per seed.
        train: shared Ultralytics train arguments, incl. ``model`` and ``data`` (None: the embedded dataset).
        baseline: arm every other arm is compared with.
        device: device slots: one run per slot at a time (``[None]``: Ultralytics' default device).
        backend: ``local`` or ``ray``.
        ray_address: Ray cluster address (None: start a local Ray instance).
        ray_num_cpus, ray_num_gpus: resource request of every Ray task.
        ray_runtime_env: optional Ray runtime environment (passed to ``ray.init``).
        ranking: ranking-quality settings (``enabled``, ``conf``, ``iou``, ``max_det``, ``max_points``).
        out: output directory (None: ``runs/ab/<name>``).
        keep_going: after a failed run, keep starting the remaining runs (default: stop starting new ones).
        resume_interrupted: continue an interrupted run from its ``last.pt`` (faster, but the run's numbers then
            differ from an uninterrupted run's: Ultralytics' resume does not restore the data order and augmentation
            state). Default False: an interrupted run restarts from zero, so every run of a comparison is
            reproducible.
        source: the spec file, if any.
    """

    name: str
    arms: list[Arm]
    seeds: list[int]
    train: dict[str, Any]
    baseline: str = "bce"
    device: list[str | None] = field(default_factory=lambda: [None])
    backend: str = "local"
    ray_address: str | None = None
    ray_num_cpus: float = 1.0
    ray_num_gpus: float = 0.0
    ray_runtime_env: dict[str, Any] | None = None
    ranking: dict[str, Any] = field(default_factory=lambda: dict(RANKING_DEFAULTS))
    out: str | None = None
    keep_going: bool = False
    resume_interrupted: bool = False
    source: str | None = None

    @property
    def arm_names(self) -> list[str]:
        """Arm names in order."""
        return [a.name for a in self.arms]

    def out_dir(self) -> Path:
        """The experiment directory."""
        return Path(self.out or Path("runs") / "ab" / self.name).expanduser()

    def to_dict(self) -> dict[str, Any]:
        """The spec as a YAML-ready dict (the same form ``spec_from_dict`` reads)."""
        d: dict[str, Any] = {
            "name": self.name,
            "baseline": self.baseline,
            "seeds": list(self.seeds),
            "device": [d for d in self.device],
            "backend": self.backend,
        }
        if self.backend == "ray":
            d["ray"] = {"address": self.ray_address, "num_cpus": self.ray_num_cpus, "num_gpus": self.ray_num_gpus}
            if self.ray_runtime_env:
                d["ray"]["runtime_env"] = self.ray_runtime_env
        d["ranking"] = dict(self.ranking)
        d["keep_going"] = self.keep_going
        d["resume_interrupted"] = self.resume_interrupted
        if self.out:
            d["out"] = self.out
        d["train"] = dict(self.train)
        d["arms"] = {a.name: {"loss": a.loss, **a.overrides} for a in self.arms}
        return d


def _as_list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [value]


def _parse_seeds(value: Any) -> list[int]:
    seeds = _as_list(value, "seeds")
    out = []
    for s in seeds:
        if isinstance(s, str) and s.lstrip("-").isdigit():
            s = int(s)
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise _user_error(f"Invalid seeds={value!r}: give non-negative integers, e.g. seeds=[0,1,2].")
        out.append(s)
    if not out:
        raise _user_error("seeds is empty: give at least one seed, e.g. seeds=[0,1,2].")
    if len(set(out)) != len(out):
        raise _user_error(f"seeds={value!r} repeats a seed.")
    return out


def _parse_device(value: Any) -> list[str | None]:
    """Device slots: ``0,1`` / ``[0, 1]`` -> ``["0", "1"]``; ``["0,1", "2,3"]`` -> two 2-GPU (DDP) slots."""
    if value is None or value == "":
        return [None]
    if isinstance(value, (list, tuple)):
        slots = []
        for v in value:
            if isinstance(v, (list, tuple)):
                slots.append(",".join(str(x) for x in v))
            else:
                slots.append(str(v).replace(" ", ""))
    else:
        slots = [s for s in str(value).replace(" ", "").strip("'\"").split(",") if s]
    if not slots:
        return [None]
    for s in slots:
        if not s:
            raise _user_error(f"Invalid device={value!r}: empty device slot.")
    return slots


def _check_name(name: Any, what: str, allowed: str = "_.-") -> str:
    if not isinstance(name, str) or not name or any(not (c.isalnum() or c in allowed) for c in name):
        chars = ", ".join(f"'{c}'" for c in allowed)
        raise _user_error(f"Invalid {what} {name!r}: use letters, digits and {chars} (it names directories).")
    return name


def _parse_arms(value: Any) -> list[Arm]:
    from .losses import list_losses

    losses = [s.name for s in list_losses()]
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = []
        for entry in value:
            if isinstance(entry, str):
                items.append((entry, {}))
            elif isinstance(entry, Mapping) and "name" in entry:
                items.append((entry["name"], {k: v for k, v in entry.items() if k != "name"}))
            else:
                raise _user_error(f"Invalid arm {entry!r}: give a name, or a mapping with name: and loss:.")
    elif isinstance(value, str):
        items = [(v.strip(), {}) for v in value.split(",") if v.strip()]
    else:
        raise _user_error(f"Invalid arms={value!r}: give a mapping name -> {{loss: ..., overrides}}.")
    arms = []
    for name, body in items:
        name = _check_name(str(name), "arm name", "_-")  # no '.': <arm>.<key>=value addresses it
        if name in SECTIONS:
            raise _user_error(f"Arm name {name!r} is reserved (sections: {', '.join(SECTIONS)}).")
        body = dict(body or {})
        loss = body.pop("loss", None)
        if loss is None:
            if name.lower() not in losses:
                raise _user_error(
                    f"Arm {name!r} needs loss=: one of {', '.join(losses)} (only arms named after a loss default "
                    "to it)."
                )
            loss = name.lower()
        arms.append(Arm(name, str(loss).lower(), body))
    if not arms:
        raise _user_error("No arms: give at least two, e.g. arms: {bce: {}, vfl: {}}.")
    if len({a.name for a in arms}) != len(arms):
        raise _user_error("Arm names must be unique.")
    return arms


def _check_train_keys(train: Mapping[str, Any], where: str, allowed_extra: Sequence[str] = ()) -> None:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from .criterion import SETTING_KEYS

    for key in train:
        if key in allowed_extra:
            continue
        if key in SETTING_KEYS:
            raise _user_error(
                f"'{key}' in {where} is a loss setting: set it per arm (arms: {{vfl: {{loss: vfl, {key}: ...}}}}, "
                f"or <arm>.{key}=... on the command line)."
            )
        if key in RUNNER_OWNED:
            hint = " (the seeds: key sets it)" if key == "seed" else ""
            raise _user_error(f"'{key}' in {where} is set by the A/B runner{hint}; remove it.")
        if key not in DEFAULT_CFG_DICT:
            valid = [*(k for k in DEFAULT_CFG_DICT if k not in RUNNER_OWNED), *SETTING_KEYS, *SPEC_KEYS]
            raise _user_error(f"Unknown argument '{key}' in {where}.{_suggest(key, valid)}")
    if train.get("deterministic") is False:
        raise _user_error("deterministic=False: the A/B runner trains every run in deterministic mode; remove it.")
    if train.get("time") not in (None, 0):
        raise _user_error(
            "time= stops training after a wall-clock budget, so arms would train different numbers of epochs; "
            "use epochs= instead."
        )


def spec_from_dict(
    raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, source: str | None = None
) -> ABSpec:
    """Build and validate an ``ABSpec`` from a spec mapping and CLI-style overrides.

    Args:
        raw: the spec (YAML) mapping.
        overrides: ``key=value`` overrides: runner keys (``seeds``, ``arms``, ``out``, ``name``, ``device``,
            ``baseline``, ``backend``, ``keep_going``), ``<section>.<key>`` (``ray.num_gpus``, ``ranking.conf``,
            ``train.epochs``, ``<arm>.cls``) and any Ultralytics train argument (shared by all arms).
        source: the spec file (for the record).

    Returns:
        the validated spec.

    Raises:
        CLIError: unknown keys (with a close-match suggestion), bad values, arms or losses that do not validate.
    """
    from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg

    if not isinstance(raw, Mapping):
        raise _user_error(f"A spec must be a mapping of {', '.join(SPEC_KEYS)}; got {type(raw).__name__}.")
    raw = copy.deepcopy(dict(raw))
    for key in raw:
        if key not in SPEC_KEYS:
            raise _user_error(f"Unknown spec key '{key}'.{_suggest(key, SPEC_KEYS)} Valid: {', '.join(SPEC_KEYS)}.")
    train = dict(raw.get("train") or {})
    arms = _parse_arms(raw.get("arms") or DEFAULT_SPEC["arms"])
    ray_cfg = dict(raw.get("ray") or {})
    ranking = {**RANKING_DEFAULTS, **dict(raw.get("ranking") or {})}
    for key in ray_cfg:
        if key not in RAY_KEYS:
            raise _user_error(f"Unknown ray key '{key}'.{_suggest(key, RAY_KEYS)} Valid: {', '.join(RAY_KEYS)}.")
    for key in ranking:
        if key not in RANKING_KEYS:
            raise _user_error(
                f"Unknown ranking key '{key}'.{_suggest(key, RANKING_KEYS)} Valid: {', '.join(RANKING_KEYS)}."
            )
    top = {
        k: raw.get(k)
        for k in ("name", "out", "baseline", "seeds", "device", "backend", "keep_going", "resume_interrupted")
    }
    if "device" in train:  # accepted there too, as in an Ultralytics command
        if top["device"] is not None:
            raise _user_error("device is given both at the top level and under train:; keep one.")
        top["device"] = train.pop("device")

    arm_by_name = {a.name: a for a in arms}
    selected: list[str] | None = None
    from .criterion import SETTING_KEYS

    for key, value in (overrides or {}).items():
        section, dot, sub = key.partition(".")
        if dot:
            if section == "train":
                train[sub] = value
            elif section == "ray":
                if sub not in RAY_KEYS:
                    raise _user_error(
                        f"Unknown key '{key}'.{_suggest(sub, RAY_KEYS)} Valid: ray.{', ray.'.join(RAY_KEYS)}."
                    )
                ray_cfg[sub] = value
            elif section == "ranking":
                if sub not in RANKING_KEYS:
                    raise _user_error(f"Unknown key '{key}'.{_suggest(sub, RANKING_KEYS)}")
                ranking[sub] = value
            elif section in arm_by_name:
                if sub == "loss":
                    arm_by_name[section].loss = str(value).lower()
                else:
                    arm_by_name[section].overrides[sub] = value
            else:
                raise _user_error(
                    f"Unknown section '{section}' in '{key}'.{_suggest(section, [*SECTIONS, *arm_by_name])} "
                    f"Sections: {', '.join(SECTIONS)} and the arms ({', '.join(arm_by_name)})."
                )
        elif key == "arms":
            selected = [str(a) for a in _as_list(value, "arms")]
        elif key == "dry_run":
            continue  # handled by the caller
        elif key in top:
            if key == "device":
                train.pop("device", None)
            top[key] = value
        elif key in ("ray_address", "ray_num_cpus", "ray_num_gpus"):
            ray_cfg[key[4:]] = value
        elif key in SETTING_KEYS:
            raise _user_error(
                f"'{key}' is a loss setting of an arm: write <arm>.{key}={value} (e.g. vfl.{key}={value})."
            )
        elif key in DEFAULT_CFG_DICT and key not in RUNNER_OWNED:
            train[key] = value
        else:
            valid = [
                *CLI_RUNNER_KEYS,
                *(k for k in DEFAULT_CFG_DICT if k not in RUNNER_OWNED),
                "ray.address",
                "ray.num_cpus",
                "ray.num_gpus",
                "ranking.conf",
            ]
            hint = " (the seeds= key sets it)" if key == "seed" else ""
            raise _user_error(f"Unknown argument '{key}'{hint}.{_suggest(key, valid)} See 'yolo-vfl ab help'.")

    if selected is not None:  # a subset of the spec's arms, or plain losses
        new = []
        for name in selected:
            if name in arm_by_name:
                new.append(arm_by_name[name])
            else:
                new += _parse_arms([name])
        arms = new

    name = _check_name(str(top["name"] or (Path(source).stem if source else "ab")), "name")
    seeds = _parse_seeds(top["seeds"] if top["seeds"] is not None else DEFAULT_SPEC["seeds"])
    baseline = str(top["baseline"] or "bce")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise _user_error(f"arms={names}: an arm is named twice.")
    if baseline not in names:
        raise _user_error(
            f"The baseline arm '{baseline}' is not among the arms ({', '.join(names)}): add it, or set baseline= "
            "to one of them."
        )
    backend = str(top["backend"] or "local").lower()
    if backend not in ("local", "ray"):
        raise _user_error(f"Invalid backend={top['backend']!r}: 'local' or 'ray'.{_suggest(backend, ['local', 'ray'])}")
    device = _parse_device(top["device"])
    if backend == "ray" and len(device) > 1:
        raise _user_error(
            "backend=ray places runs itself: request GPUs per run with ray.num_gpus= instead of several devices."
        )
    flags = {}
    for key in ("keep_going", "resume_interrupted"):
        flags[key] = False if top[key] is None else top[key]
        if not isinstance(flags[key], bool):
            raise _user_error(f"Invalid {key}={top[key]!r}: true or false.")

    # shared train arguments
    _check_train_keys(train, "train")
    train.setdefault("model", DEFAULT_MODEL)
    train.setdefault("data", None)
    if train.get("data") in ("", EMBEDDED):
        train["data"] = None
    if train.get("data") is None:
        train.setdefault("imgsz", DEFAULT_SPEC["train"]["imgsz"])
    # arms: loss settings validated by ClsLossSettings, Ultralytics arguments by get_cfg
    for arm in arms:
        for key in arm.overrides:
            if key in SHARED_ONLY:
                raise _user_error(
                    f"Arm '{arm.name}' sets '{key}': every arm trains with the same {key}; set it under train:."
                )
        _check_train_keys(arm.ultralytics_overrides(), f"arm '{arm.name}'")
        try:
            arm.loss_settings()
        except (ValueError, TypeError, KeyError) as e:
            raise _user_error(f"Arm '{arm.name}': {e}") from e
        merged = {**train, **arm.ultralytics_overrides()}
        try:
            get_cfg(overrides={k: v for k, v in merged.items() if k not in ("model", "data")})
        except (TypeError, ValueError, SyntaxError) as e:
            raise _user_error(f"Arm '{arm.name}': {str(e).strip().splitlines()[0]}") from e

    # ranking and ray settings
    if not isinstance(ranking["enabled"], bool):
        raise _user_error(f"Invalid ranking.enabled={ranking['enabled']!r}: true or false.")
    conf = ranking["conf"]
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 <= conf < 1:
        raise _user_error(f"Invalid ranking.conf={conf!r}: a confidence threshold in [0, 1).")
    for key in ("num_cpus", "num_gpus"):
        v = ray_cfg.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise _user_error(f"Invalid ray.{key}={v!r}: a number >= 0.")
    return ABSpec(
        name=name,
        arms=arms,
        seeds=seeds,
        train=train,
        baseline=baseline,
        device=device,
        backend=backend,
        ray_address=(str(ray_cfg["address"]) if ray_cfg.get("address") else None),
        ray_num_cpus=float(ray_cfg["num_cpus"]) if ray_cfg.get("num_cpus") is not None else 1.0,
        ray_num_gpus=float(ray_cfg["num_gpus"]) if ray_cfg.get("num_gpus") is not None else 0.0,
        ray_runtime_env=ray_cfg.get("runtime_env"),
        ranking=ranking,
        out=str(top["out"]) if top["out"] else None,
        keep_going=flags["keep_going"],
        resume_interrupted=flags["resume_interrupted"],
        source=source,
    )


def load_spec(path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None) -> ABSpec:
    """Read a spec YAML (None: the default spec, the embedded dataset) and apply ``key=value`` overrides.

    Raises:
        CLIError: a missing or unreadable file, or a spec that does not validate (before any training).
    """
    import yaml

    if path is None:
        return spec_from_dict(DEFAULT_SPEC, overrides)
    p = Path(path).expanduser()
    if not p.is_file():
        raise _user_error(f"Spec file '{path}' not found.")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise _user_error(f"Spec file '{path}' is not valid YAML: {str(e).splitlines()[0]}") from e
    return spec_from_dict(raw, overrides, source=str(p))


# ----------------------------------------------------------------------------------------------------------- jobs
def _data_token(spec: ABSpec) -> str:
    data = spec.train.get("data")
    return EMBEDDED if data is None else str(data)


def _resolve_data(spec: ABSpec) -> str:
    """The dataset YAML every run trains on (the embedded dataset is generated once, cached)."""
    data = spec.train.get("data")
    if data is None:
        from .data import embedded_dataset

        return str(embedded_dataset())
    from .data import resolve_embedded

    generated = resolve_embedded(data)  # data: embedded-glyphs, the second generated dataset
    return str(generated if generated is not None else data)


def _fingerprint(train: Mapping[str, Any], settings: Mapping[str, Any], model: str, data: str) -> dict[str, Any]:
    """What defines a run's training: compared before reusing a finished or partial run."""
    fp = {k: v for k, v in train.items() if k not in NON_SEMANTIC}
    fp.update(settings)
    fp["model"] = str(model)
    fp["data"] = data
    return json.loads(json.dumps(fp, sort_keys=True, default=str))


def make_jobs(spec: ABSpec, out_dir: str | os.PathLike[str], data: str | None = None) -> list[dict[str, Any]]:
    """Every arm x seed as a JSON-ready job dict (seed-major order, so that early results pair up across arms).

    Args:
        spec: the experiment.
        out_dir: the experiment directory.
        data: the resolved dataset YAML (default: resolved from the spec; the embedded dataset is generated).
    """
    out = Path(out_dir).resolve()
    data = data if data is not None else _resolve_data(spec)
    jobs = []
    for seed in spec.seeds:
        for arm in spec.arms:
            run = f"{arm.name}-s{seed}"
            train = {k: v for k, v in spec.train.items() if k not in ("model", "data")}
            train.update(arm.ultralytics_overrides())
            train.update(seed=seed, deterministic=True)
            settings = arm.loss_settings().to_args()
            jobs.append(
                {
                    "run": run,
                    "arm": arm.name,
                    "seed": seed,
                    "loss": arm.loss,
                    "overrides": dict(arm.overrides),
                    "model": str(spec.train.get("model", DEFAULT_MODEL)),
                    "data": data,
                    "train": train,
                    "settings": settings,
                    "fingerprint": _fingerprint(
                        train, settings, spec.train.get("model", DEFAULT_MODEL), _data_token(spec)
                    ),
                    "out_dir": str(out),
                    "run_dir": str(out / "runs" / run),
                    "result": str(out / "runs" / run / "result.json"),
                    "log": str(out / "logs" / f"{run}.log"),
                    "ranking": dict(spec.ranking),
                    "device": spec.device[0],
                    "resume_interrupted": spec.resume_interrupted,
                }
            )
    return jobs


def _read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _normalized(fp: Mapping[str, Any]) -> dict[str, Any]:
    """A fingerprint with its loss settings completed by their defaults.

    A run recorded before a setting existed (e.g. ``cls_fg_negatives``) trained with that setting's default, so it
    must compare equal to a job that states the default explicitly.
    """
    from .criterion import SETTING_KEYS, ClsLossSettings

    out = dict(fp)
    try:
        out.update(ClsLossSettings.from_args({k: v for k, v in fp.items() if k in SETTING_KEYS}).to_args())
    except (KeyError, TypeError, ValueError):
        pass  # invalid recorded settings: compare as recorded (they will differ)
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def _same_fingerprint(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    return a is not None and _normalized(a) == _normalized(b)


def _fingerprint_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    a, b = _normalized(a), _normalized(b)
    keys = sorted(set(a) | set(b))
    diffs = [f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in keys if a.get(k) != b.get(k)]
    return ", ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else "")


# ----------------------------------------------------------------------------------------------------------- one run
def _versions() -> dict[str, str]:
    import torch
    import ultralytics

    from . import __version__

    return {
        "yolo_vfl": __version__,
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def read_results_csv(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """Rows of an Ultralytics ``results.csv`` (stripped keys, floats), one per epoch; a re-run epoch keeps its last."""
    rows: dict[int, dict[str, float]] = {}
    order: list[dict[str, float]] = []
    for raw in _csv_rows(Path(path)):
        row = {}
        for k, v in raw.items():
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                row[k] = math.nan
        order.append(row)
        if "epoch" in row and math.isfinite(row["epoch"]):
            rows[int(row["epoch"])] = row
    return [rows[e] for e in sorted(rows)] if rows else order


SEGMENTS_FILE = "segments.json"


def _csv_rows(path: Path) -> list[dict[str, str]]:
    """The raw rows of a ``results.csv`` in file order (stripped keys), re-run epochs included."""
    import csv

    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k.strip(): v for k, v in raw.items() if k is not None} for raw in csv.DictReader(f)]


def _record_segment(run_dir: Path, how: str, first_epoch: int) -> None:
    """Append one training segment (``fresh`` or ``resume``) to the run's ``segments.json`` before it trains.

    The record holds how many rows ``results.csv`` had when the segment started, so the rows (and the training
    time) of each segment are known without guessing from the ``time`` column.
    """
    path = run_dir / SEGMENTS_FILE
    segments = []
    if how == "resume":  # a run trained before this record existed had one segment so far
        first = {"how": "fresh", "first_epoch": 1, "csv_rows_before": 0}
        segments = (_read_json(path) or {}).get("segments") or [first]
    segments.append(
        {
            "how": how,
            "first_epoch": first_epoch,
            "csv_rows_before": len(_csv_rows(run_dir / "results.csv")) if how == "resume" else 0,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"segments": segments})


def _train_time(run_dir: str | os.PathLike[str]) -> tuple[float | None, int]:
    """Training time in seconds and the number of training segments (1 + resumes) of a run directory.

    Ultralytics' ``time`` column restarts at 0 on resume; the segments come from the runner's ``segments.json``
    (rows of ``results.csv`` before each resume), so a resumed epoch slower than the ones before it still counts.
    A run without that record (trained by an older runner) is one segment.
    """
    run_dir = Path(run_dir)
    rows = _csv_rows(run_dir / "results.csv")
    times = []
    for row in rows:
        try:
            times.append(float(row["time"]))
        except (KeyError, TypeError, ValueError):
            times.append(math.nan)
    if not any(math.isfinite(t) for t in times):
        return None, 0
    segments = (_read_json(run_dir / SEGMENTS_FILE) or {}).get("segments") or [{"csv_rows_before": 0}]
    starts = sorted({min(max(int(s.get("csv_rows_before", 0)), 0), len(times)) for s in segments} | {0})
    total = 0.0
    for a, b in zip(starts, [*starts[1:], len(times)]):
        seg = [t for t in times[a:b] if math.isfinite(t)]
        total += seg[-1] if seg else 0.0
    return total, len(segments)


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    """A checkpoint dict, or None when it cannot be read (truncated, corrupt, wrong format)."""
    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - any failure means the file is unusable
        return None
    if not isinstance(ckpt, dict) or (ckpt.get("model") is None and ckpt.get("ema") is None):
        return None
    return ckpt


def _saved_fingerprint(run_dir: Path, job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fingerprint of the settings a run directory was trained with (from its args.yaml)."""
    import yaml

    args_file = run_dir / "args.yaml"
    try:
        args = yaml.safe_load(args_file.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(args, dict):
        return None
    from .criterion import SETTING_KEYS

    settings = {k: args[k] for k in SETTING_KEYS if k in args}
    train = {k: args.get(k) for k in job["train"]}
    return _fingerprint(train, settings, job["model"], job["fingerprint"]["data"])


def inspect_run(job: Mapping[str, Any]) -> tuple[str, str]:
    """The state of a run directory: ``(state, reason)``.

    States: ``done`` (result.json), ``fresh`` (no directory), ``trained`` (training finished, not yet evaluated),
    ``resume`` (an interrupted, usable last.pt with the same settings), ``restart`` (anything else).
    """
    run_dir = Path(job["run_dir"])
    if Path(job["result"]).is_file():
        return "done", "result.json exists"
    if not run_dir.exists():
        return "fresh", "new run"
    last = run_dir / "weights" / "last.pt"
    if not last.is_file():
        return "restart", "the run directory has no weights/last.pt (interrupted before its first epoch ended)"
    saved = _saved_fingerprint(run_dir, job)
    if saved is None:
        return "restart", "args.yaml is missing or unreadable"
    if not _same_fingerprint(saved, job["fingerprint"]):
        return "restart", f"it was started with other settings ({_fingerprint_diff(saved, job['fingerprint'])})"
    ckpt = _load_checkpoint(last)
    if ckpt is None:
        return "restart", "weights/last.pt is unusable (truncated or corrupt)"
    epoch = ckpt.get("epoch", -1)
    epochs = int((ckpt.get("train_args") or {}).get("epochs", job["train"].get("epochs", 100)) or 0)
    if epoch == -1 or epoch + 1 >= epochs:
        return "trained", "training had finished"
    return "resume", f"interrupted after epoch {epoch + 1} of {epochs}"


def planned_state(job: Mapping[str, Any]) -> tuple[str, str]:
    """What the runner will do with a run: ``inspect_run``'s state, except that an interrupted run restarts.

    An interrupted run restarts from zero unless the job allows resuming (``resume_interrupted``): Ultralytics'
    resume does not restore the data order, so a resumed run's numbers differ from an uninterrupted run's.
    """
    state, reason = inspect_run(job)
    if state == "resume" and not job.get("resume_interrupted", False):
        return "restart", f"{reason}; restarts from zero to stay reproducible (resume_interrupted=true resumes)"
    return state, reason


def _move_aside(run_dir: Path, out_dir: Path) -> Path:
    aside = out_dir / "aside"
    aside.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = aside / f"{run_dir.name}.{stamp}"
    k = 1
    while target.exists():
        target = aside / f"{run_dir.name}.{stamp}.{k}"
        k += 1
    shutil.move(str(run_dir), str(target))
    return target


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive advisory lock on ``path`` while in the block; yields False when another process has it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _train(job: Mapping[str, Any], state: str, log: Callable[[str], None]) -> tuple[str, dict[str, Any] | None]:
    """Train (fresh or resumed) the run.

    Returns:
        ``(how, metrics)``: ``resume`` or ``fresh`` (also after a failed resume), and the metrics of Ultralytics'
        final validation (of ``best.pt``), as ``trainer.metrics``.
    """
    from ultralytics import YOLO

    from .trainer import VFLDetectionTrainer

    run_dir = Path(job["run_dir"])
    device = job.get("device")
    if state == "resume":
        started = {"flag": False}

        def mark(_trainer: Any) -> None:
            started["flag"] = True

        model = YOLO(str(run_dir / "weights" / "last.pt"))
        model.add_callback("on_train_start", mark)
        ckpt_epoch = int((_load_checkpoint(run_dir / "weights" / "last.pt") or {}).get("epoch", -1))
        extra = {"device": device} if device is not None else {}
        if "workers" in job["train"]:
            extra["workers"] = job["train"]["workers"]
        try:
            log(f"resuming {run_dir / 'weights' / 'last.pt'}")
            _record_segment(run_dir, "resume", ckpt_epoch + 2)
            model.train(trainer=VFLDetectionTrainer, resume=True, **extra)
            return "resume", dict(getattr(model.trainer, "metrics", None) or {})
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - a resume that could not start restarts cleanly
            if started["flag"]:
                raise
            log(f"resume failed before training started ({type(e).__name__}: {str(e).strip()[:300]}); restarting")
        state = "restart"
    if state == "restart" and run_dir.exists():
        target = _move_aside(run_dir, Path(job["out_dir"]))
        log(f"moved the partial run to {target}")
    args = dict(job["train"])
    if device is not None:
        args["device"] = device
    model = YOLO(job["model"])
    _record_segment(run_dir, "fresh", 1)
    model.train(
        trainer=VFLDetectionTrainer,
        data=job["data"],
        project=str(run_dir.parent),
        name=run_dir.name,
        exist_ok=True,
        **args,
        **job["settings"],
    )
    return "fresh", dict(getattr(model.trainer, "metrics", None) or {})


def _evaluate(
    job: Mapping[str, Any], log: Callable[[str], None], final: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Final validation metrics of best.pt (last.pt if none) and the ranking-quality measurement.

    ``final``: Ultralytics' final validation of the training just done (``trainer.metrics``); without it (a run whose
    training had finished before the runner was killed) best.pt is validated here with the same data and image size.
    """
    from ultralytics import YOLO

    from .report import ranking_quality

    run_dir = Path(job["run_dir"])
    weights = run_dir / "weights" / "best.pt"
    if not weights.is_file():
        weights = run_dir / "weights" / "last.pt"
    train = job["train"]
    imgsz = train.get("imgsz", 640)
    batch = train.get("batch", 16)
    val_batch = batch * 2 if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0 else 16
    device = job.get("device")
    kwargs = {k: train[k] for k in ("single_cls", "classes", "iou", "max_det", "workers") if k in train}
    if final and "metrics/mAP50-95(B)" in final:
        rd, source = dict(final), "ultralytics final validation"
    else:
        log(f"final validation of {weights}")
        metrics = YOLO(str(weights)).val(
            data=job["data"],
            imgsz=imgsz,
            batch=val_batch,
            device=device,
            split="val",
            plots=False,
            verbose=False,
            project=str(run_dir),
            name="final_val",
            exist_ok=True,
            **kwargs,
        )
        rd, source = metrics.results_dict, "yolo-vfl ab validation"
    out: dict[str, Any] = {
        "metrics": {
            "mAP50": float(rd.get("metrics/mAP50(B)", math.nan)),
            "mAP50-95": float(rd.get("metrics/mAP50-95(B)", math.nan)),
            "precision": float(rd.get("metrics/precision(B)", math.nan)),
            "recall": float(rd.get("metrics/recall(B)", math.nan)),
        },
        "metrics_model": weights.name,
        "metrics_source": source,
    }
    rk = job.get("ranking") or RANKING_DEFAULTS
    out["ranking"] = None
    if rk.get("enabled", True):
        try:
            log("ranking quality (confidence vs IoU)")
            out["ranking"] = ranking_quality(
                weights,
                job["data"],
                imgsz=imgsz,
                conf=rk.get("conf", 0.001),
                iou=rk.get("iou", 0.7),
                max_det=rk.get("max_det", 300),
                device=device,
                max_points=rk.get("max_points", 2000),
                seed=job["seed"],
            )
        except (ValueError, FileNotFoundError) as e:
            log(f"ranking quality not measured: {e}")
            out["ranking"] = None
    return out


def run_one(job: Mapping[str, Any], log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (or resume, or only evaluate) one arm x seed and write its ``result.json`` atomically.

    This runs inside the run's own process (``python -m yolo_vfl.experiment run-one JOB.json``).

    Returns:
        the result dict (as written to ``result.json``).
    """
    log = log or (lambda msg: print(f"yolo-vfl ab: {msg}", flush=True))
    result_path = Path(job["result"])
    existing = _read_json(result_path)
    if existing is not None:
        return existing
    t0 = time.time()
    state, reason = planned_state(job)
    log(f"{job['run']}: {state} ({reason})")
    final = None
    if state != "trained":
        _, final = _train(job, state, log)
    run_dir = Path(job["run_dir"])
    rows = read_results_csv(run_dir / "results.csv")
    train_time, segments = _train_time(run_dir)
    resumed = segments > 1
    evaluation = _evaluate(job, log, final)
    last = rows[-1] if rows else {}
    result = {
        "run": job["run"],
        "arm": job["arm"],
        "seed": job["seed"],
        "loss": job["loss"],
        "overrides": job["overrides"],
        "settings": job["settings"],
        "model": job["model"],
        "data": job["data"],
        "train": job["train"],
        "fingerprint": job["fingerprint"],
        **evaluation,
        "final_losses": {k: v for k, v in last.items() if k.startswith(("train/", "val/")) and "loss" in k},
        "curve": {
            "epoch": [int(r["epoch"]) for r in rows if "epoch" in r],
            "mAP50-95": [r.get("metrics/mAP50-95(B)") for r in rows],
            "mAP50": [r.get("metrics/mAP50(B)") for r in rows],
        },
        "epochs_done": len(rows),
        "train_time_s": train_time,
        "segments": segments,
        "resumed": resumed,
        "restarts": len(list((Path(job["out_dir"]) / "aside").glob(f"{job['run']}.*"))),
        "wall_time_s": time.time() - t0,
        "device": job.get("device"),
        "host": platform.node(),
        "versions": _versions(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(result_path, result)
    return _read_json(result_path) or result


def _run_one_main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    lock = Path(job["run_dir"]).parent / f".{job['run']}.lock"
    with _file_lock(lock) as locked:
        if not locked:
            print(f"yolo-vfl ab: {job['run']} is being trained by another process (lock {lock})", flush=True)
            return EXIT_BUSY
        run_one(job)
    return 0


# ----------------------------------------------------------------------------------------------------------- runner
def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: end the run when the runner dies (a killed runner leaves no orphan training)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def _child_env(extra: Mapping[str, str] | None = None, drop: Sequence[str] = ()) -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    for k in drop:
        env.pop(k, None)
    env.update(extra or {})
    return env


def _spawn(job: dict[str, Any], env: Mapping[str, str] | None = None) -> tuple[subprocess.Popen, Any]:
    """Start ``python -m yolo_vfl.experiment run-one JOB.json`` with its output appended to the run's log."""
    out = Path(job["out_dir"])
    job_path = out / "jobs" / f"{job['run']}.json"
    atomic_write_json(job_path, job)
    log_path = Path(job["log"])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logf = open(log_path, "ab")  # noqa: SIM115 - closed by the caller when the process ends
    stamp = datetime.now().isoformat(timespec="seconds")
    logf.write(f"\n===== {stamp} {job['run']} on device {job.get('device')} =====\n".encode())
    logf.flush()
    kwargs: dict[str, Any] = {}
    if sys.platform.startswith("linux"):
        kwargs["preexec_fn"] = _die_with_parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "yolo_vfl.experiment", "run-one", str(job_path)],
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env or _child_env()),
        **kwargs,
    )
    return proc, logf


def _log_tail(path: str | os.PathLike[str], lines: int = 15) -> str:
    try:
        text = Path(path).read_bytes()[-20000:].decode(errors="replace").replace("\r", "\n")
    except OSError:
        return ""
    kept = [ln for ln in text.splitlines() if ln.strip()][-lines:]
    return "\n".join("    " + ln for ln in kept)


def execute_job(job: dict[str, Any], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run one job in its own subprocess and wait; returns its result dict.

    Raises:
        RuntimeError: the run failed (the message has the end of its log).
    """
    proc, logf = _spawn(job, env)
    try:
        rc = proc.wait()
    except BaseException:
        _terminate([proc])
        raise
    finally:
        logf.close()
    result = _read_json(job["result"])
    if rc != 0 or result is None:
        raise RuntimeError(f"{job['run']} failed (exit code {rc}); log {job['log']}:\n{_log_tail(job['log'])}")
    return result


def _terminate(procs: Sequence[subprocess.Popen], timeout: float = 15.0) -> None:
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(OSError):
                p.send_signal(signal.SIGINT)  # Ultralytics/torch stop cleanly on KeyboardInterrupt
    deadline = time.time() + timeout
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.0, deadline - time.time()))
        if p.poll() is None:
            with contextlib.suppress(OSError):
                p.kill()
            p.wait()


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class _Progress:
    """Counts runs and estimates the time left from the durations of the runs finished so far."""

    def __init__(self, total: int, done: int, slots: int, log: Callable[[str], None]) -> None:
        self.total, self.done, self.slots, self.log = total, done, max(1, slots), log
        self.durations: list[float] = []
        self.started: dict[str, float] = {}

    def start(self, run: str, where: str, log_path: str) -> None:
        self.started[run] = time.time()
        self.log(f"[{self.done}/{self.total}] starting {run} on {where} (log: {log_path})")

    def eta(self) -> float | None:
        if not self.durations:
            return None
        avg = sum(self.durations) / len(self.durations)
        now = time.time()
        running = sum(max(avg - (now - t), 0.0) for t in self.started.values())
        pending = self.total - self.done - len(self.started)
        return (pending * avg + running) / min(self.slots, max(1, pending + len(self.started)))

    def finish(self, run: str, result: Mapping[str, Any] | None, error: str | None = None) -> None:
        t0 = self.started.pop(run, None)
        took = time.time() - t0 if t0 is not None else None
        running = ", ".join(self.started) or "-"
        if error is None:
            self.done += 1
            if took is not None:
                self.durations.append(took)
            m = ((result or {}).get("metrics") or {}).get("mAP50-95")
            score = f"mAP50-95 {m:.3f}" if isinstance(m, (int, float)) and math.isfinite(m) else "mAP50-95 n/a"
            left = self.total - self.done
            eta = "ETA 0s" if left == 0 else f"ETA {_fmt_duration(self.eta())}"
            self.log(
                f"[{self.done}/{self.total}] {run} done in {_fmt_duration(took)} ({score}); running: {running}; {eta}"
            )
        else:
            self.log(
                f"[{self.done}/{self.total}] {run} FAILED after {_fmt_duration(took)}; running: {running}\n{error}"
            )


def _run_local(jobs: list[dict[str, Any]], spec: ABSpec, progress: _Progress) -> list[tuple[str, str, str]]:
    """A pool of local subprocesses, one per device slot."""
    pending = deque(jobs)
    free = list(range(len(spec.device)))
    running: dict[int, tuple[subprocess.Popen, Any, dict[str, Any]]] = {}
    failed: list[tuple[str, str, str]] = []
    env = _child_env()
    try:
        while pending or running:
            while pending and free and (spec.keep_going or not failed):
                slot = free.pop(0)
                job = dict(pending.popleft())
                job["device"] = spec.device[slot]
                proc, logf = _spawn(job, env)
                running[slot] = (proc, logf, job)
                progress.start(job["run"], f"device {job['device'] or 'default'}", job["log"])
            if not running:
                break
            time.sleep(0.5)
            for slot, (proc, logf, job) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                logf.close()
                del running[slot]
                free.append(slot)
                free.sort()
                result = _read_json(job["result"])
                if rc == 0 and result is not None:
                    progress.finish(job["run"], result)
                else:
                    why = "another process holds its lock" if rc == EXIT_BUSY else f"exit code {rc}"
                    msg = f"  {job['run']} failed ({why}); log {job['log']}:\n{_log_tail(job['log'])}"
                    failed.append((job["run"], why, job["log"]))
                    progress.finish(job["run"], None, msg)
    except BaseException:
        _terminate([p for p, _, _ in running.values()])
        for _, logf, _ in running.values():
            logf.close()
        raise
    if pending:
        progress.log(
            f"not started after the failure: {', '.join(j['run'] for j in pending)} (keep_going=true runs them anyway)"
        )
    return failed


def _ray_task(job: dict[str, Any], num_gpus: float) -> dict[str, Any]:  # pragma: no cover - runs in a Ray worker
    """The Ray task: run one job in its own subprocess on the node Ray placed it on."""
    import ray

    drop: list[str] = []
    extra: dict[str, str] = {}
    if num_gpus > 0:
        ids = [str(i) for i in ray.get_gpu_ids()]
        job["device"] = ",".join(ids) if ids else None
        drop = ["CUDA_VISIBLE_DEVICES"]  # pass Ray's physical GPU ids as the device (Ultralytics 8.3 and 8.4 alike)
        extra = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    else:
        job["device"] = "cpu"
    result = execute_job(job, _child_env(extra, drop))
    return result


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise _user_error("backend=ray needs Ray: pip install 'yolo-vfl[ray]' (or pip install ray).") from e
    return ray


def _run_ray(jobs: list[dict[str, Any]], spec: ABSpec, progress: _Progress) -> list[tuple[str, str, str]]:
    """Every job as a Ray task with the spec's resource request; progress as they complete (``ray.wait``)."""
    ray = _import_ray()
    started_here = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"address": spec.ray_address or None}
        if spec.ray_runtime_env:
            kwargs["runtime_env"] = spec.ray_runtime_env
        ray.init(**kwargs)
        started_here = True
    try:
        resources = ray.cluster_resources()
        if spec.ray_num_gpus > 0:
            slots = int(resources.get("GPU", 0) // spec.ray_num_gpus)
        else:
            slots = int(resources.get("CPU", 1) // max(spec.ray_num_cpus, 1e-9))
        progress.slots = max(1, slots)
        remote = ray.remote(num_cpus=spec.ray_num_cpus, num_gpus=spec.ray_num_gpus, max_retries=0)(_ray_task)
        refs: dict[Any, dict[str, Any]] = {}
        for job in jobs:
            refs[remote.remote(dict(job), spec.ray_num_gpus)] = job
            progress.start(
                job["run"], f"ray (num_cpus={spec.ray_num_cpus:g}, num_gpus={spec.ray_num_gpus:g})", job["log"]
            )
        failed: list[tuple[str, str, str]] = []
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                job = refs.pop(done[0])
                try:
                    result = ray.get(done[0])
                except Exception as e:  # noqa: BLE001 - a failed task is reported, the others go on
                    failed.append((job["run"], str(e).splitlines()[0] if str(e) else type(e).__name__, job["log"]))
                    progress.finish(job["run"], None, f"  {e}")
                    if not spec.keep_going:
                        for ref in refs:
                            ray.cancel(ref, force=True)
                        for other in refs.values():
                            progress.finish(other["run"], None, "  cancelled after the failure")
                        refs.clear()
                    continue
                if not Path(job["result"]).is_file():  # the node that ran it may not share this filesystem
                    atomic_write_json(job["result"], result)
                progress.finish(job["run"], result)
        except BaseException:
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        return failed
    finally:
        if started_here:
            ray.shutdown()


def _experiment_meta(spec: ABSpec, out: Path, commands: list[str] | None = None) -> dict[str, Any]:
    return {
        "name": spec.name,
        "baseline": spec.baseline,
        "arms": spec.arm_names,
        "seeds": spec.seeds,
        "data": _data_token(spec),
        "train": {k: v for k, v in spec.train.items() if k != "data"},
        "commands": commands or [],
        "runs": [f"{a}-s{s}" for s in spec.seeds for a in spec.arm_names],
    }


def _record_experiment(spec: ABSpec, out: Path, command: str) -> dict[str, Any]:
    """Write ``experiment.json`` (spec, commands so far) and ``spec.yaml`` (the resolved spec) atomically."""
    import yaml

    previous = _read_json(out / "experiment.json") or {}
    history = list(previous.get("history") or [])
    history.append(
        {
            "command": command,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(),
        }
    )
    commands = []
    for h in history:
        if h["command"] not in commands:
            commands.append(h["command"])
    meta = _experiment_meta(spec, out, commands)
    atomic_write_json(out / "experiment.json", {**meta, "spec": spec.to_dict(), "history": history})
    atomic_write_text(out / "spec.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
    return meta


def _split_finished(jobs: list[dict[str, Any]], out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(done, todo)``: runs with a ``result.json`` of the same settings, and the rest.

    Raises:
        CLIError: a finished run was trained with other settings (results would be mixed).
    """
    done, todo = [], []
    for job in jobs:
        existing = _read_json(job["result"])
        if existing is None:
            todo.append(job)
            continue
        if not _same_fingerprint(existing.get("fingerprint"), job["fingerprint"]):
            raise _user_error(
                f"Run {job['run']} in {out} finished with other settings "
                f"({_fingerprint_diff(existing.get('fingerprint') or {}, job['fingerprint'])}). Use another out= "
                f"directory, or remove {Path(job['run_dir'])} to retrain it."
            )
        done.append(job)
    return done, todo


def check_devices(slots: Sequence[str | None]) -> None:
    """Every device of every slot exists on this machine (``cpu``, ``mps``, ``0``, ``cuda:1``, ``0,1``).

    Raises:
        CLIError: a CUDA or MPS device this machine does not have (names the device and what is available).
    """
    import torch

    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    have = ["cpu", *(str(i) for i in range(n_cuda))]
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if mps:
        have.append("mps")
    for slot in slots:
        for dev in ("" if slot is None else str(slot)).lower().split(","):
            name = dev.strip().removeprefix("cuda:") if dev.strip() != "cuda" else "0"
            if name in ("", "cpu") or name in have:
                continue
            if name == "mps" or name.isdigit():
                what = (
                    "MPS is not available"
                    if name == "mps"
                    else (
                        f"CUDA is not available (torch {torch.__version__})"
                        if not n_cuda
                        else f"only {n_cuda} CUDA GPU(s)"
                    )
                )
                raise _user_error(f"Invalid device={slot!r}: {what} on this machine. Valid here: {', '.join(have)}.")
            raise _user_error(f"Invalid device={slot!r}: unknown device '{dev}'. Valid here: {', '.join(have)}.")


def _preflight(spec: ABSpec, data: str) -> None:
    """Model, dataset and devices available (or the model/data downloadable), before anything is written."""
    from .cli import _check_data, _check_model

    model = str(spec.train.get("model", DEFAULT_MODEL))
    if Path(model).suffix in (".yaml", ".yml") and not Path(model).expanduser().exists():
        from ultralytics.nn.tasks import yaml_model_load

        try:  # resolves scale names: yolov8n.yaml -> yolov8.yaml with scale n
            yaml_model_load(model)
        except Exception as e:  # noqa: BLE001 - FileNotFoundError, or AssertionError in some versions
            raise _user_error(f"Model '{model}' not found (neither a local file nor an Ultralytics model YAML).") from e
    else:
        _check_model(model)
    if spec.train.get("data") is not None:
        _check_data(data)
    check_devices(spec.device)


def run_ab(
    spec: ABSpec,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
    dry_run: bool = False,
) -> Path:
    """Run every arm x seed that has no ``result.json`` yet, then write the report.

    Args:
        spec: the experiment (``load_spec``).
        out_dir: experiment directory (default ``spec.out`` or ``runs/ab/<name>``).
        command: the command line to record (default: ``sys.argv``).
        log: progress printer (default ``print``).
        dry_run: only print the plan (runs to do, to skip, to resume).

    Returns:
        the experiment directory (with ``summary.csv``, ``summary.md``, ``curves.png``, ``ranking.png``).

    Raises:
        CLIError: invalid settings, missing model or data, finished runs trained with other settings, or another
            runner working on the same directory.
        ABRunError: some runs failed (the report is written for the finished ones).
    """
    log = log or (lambda msg: print(msg, flush=True))
    out = Path(out_dir or spec.out_dir()).expanduser().resolve()
    command = command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    data = _resolve_data(spec)
    jobs = make_jobs(spec, out, data)
    done, todo = _split_finished(jobs, out)  # checked before anything is written: a refused run creates nothing
    if todo:
        _preflight(spec, data)
    log(f"yolo-vfl ab: {spec.name}: {len(spec.arms)} arms x {len(spec.seeds)} seeds = {len(jobs)} runs in {out}")
    if done:
        log(f"  finished, kept: {', '.join(j['run'] for j in done)}")
    for job in todo:
        state, reason = planned_state(job)
        if state != "fresh":
            log(f"  {job['run']}: {state} ({reason})")
    if dry_run:
        log(f"  to run: {', '.join(j['run'] for j in todo) or 'nothing'}")
        return out
    out.mkdir(parents=True, exist_ok=True)
    with _file_lock(out / ".ab.lock") as locked:
        if not locked:
            raise _user_error(f"Another 'yolo-vfl ab' is running on {out} (lock {out / '.ab.lock'}).")
        done, todo = _split_finished(jobs, out)  # again under the lock: another runner may have finished some
        meta = _record_experiment(spec, out, command)
        failed: list[tuple[str, str, str]] = []
        if todo:
            progress = _Progress(len(jobs), len(done), len(spec.device), log)
            try:
                failed = (_run_ray if spec.backend == "ray" else _run_local)(todo, spec, progress)
            except KeyboardInterrupt:
                log("yolo-vfl ab: interrupted; finished runs are kept. Run the same command again to resume.")
                raise
        results = [r for r in (_read_json(j["result"]) for j in jobs) if r is not None]
        meta["missing"] = [j["run"] for j in jobs if not Path(j["result"]).is_file()]
        meta["level"] = 0.95
        if results:
            paths = write_report(out, results, meta)
            log(f"yolo-vfl ab: report: {paths['summary.md']}")
            _print_verdicts(out, log)
        if failed:
            names = ", ".join(r for r, _, _ in failed)
            raise ABRunError(
                f"{len(failed)} run(s) failed: {names}. Logs: {out / 'logs'}. Fix the cause and run the "
                "same command again: finished runs are kept.",
                failed,
            )
    return out


def _print_verdicts(out: Path, log: Callable[[str], None]) -> None:
    import csv

    with contextlib.suppress(OSError):
        with open(out / "summary.csv", newline="") as f:
            for row in csv.DictReader(f):
                log(f"  {row['arm']:<14} mAP50-95 {row.get('mAP50-95_mean', '')[:6]:<6}  {row.get('verdict', '')}")


def regenerate_report(out_dir: str | os.PathLike[str], baseline: str | None = None) -> dict[str, Path]:
    """Rewrite the report of an experiment directory from its ``result.json`` files."""
    out = Path(out_dir).expanduser().resolve()
    if not out.is_dir():
        raise _user_error(f"Experiment directory '{out_dir}' not found.")
    meta = _read_json(out / "experiment.json") or {}
    meta = {k: v for k, v in meta.items() if k not in ("spec", "history")}
    if baseline:
        meta["baseline"] = baseline
    results = load_results(out)
    if not results:
        raise _user_error(f"No finished runs (runs/*/result.json) in {out}: nothing to report.")
    expected = meta.get("runs") or []
    have = {r.get("run") for r in results}
    meta["missing"] = [r for r in expected if r not in have]
    return write_report(out, results, meta)


# ----------------------------------------------------------------------------------------------------------- CLI
AB_HELP = """\
yolo-vfl ab: A/B experiment: does VFL or QFL beat BCE on this data, and with which settings?

Usage:
  yolo-vfl ab [spec.yaml] [key=value ...]   run every arm x seed (finished runs are kept and skipped), then report
  yolo-vfl ab report out=DIR                rewrite summary.csv/.md, curves.png, ranking.png from DIR's results
  yolo-vfl ab diagnose out=DIR [dest=DIR] [arms=a,b]   false positives by kind (background, wrong class, duplicate,
                                            localization) per arm: diagnosis.md/.csv, fp_scores.png, pr_curves.png

Keys:
  name=  out=DIR  seeds=[0,1,2]  arms=bce,vfl  baseline=bce  device=0,1  backend=local|ray  keep_going=true
  dry_run=true    (show the plan only)
  ray.address=  ray.num_cpus=  ray.num_gpus=   ranking.conf=0.001  ranking.enabled=false
  <arm>.<key>=value   per-arm override, e.g. vfl.cls=1.0 vfl.vfl_gamma=1.5
  any Ultralytics train argument (epochs=, imgsz=, batch=, data=, model= ...) is shared by all arms
  without a spec: arms bce, vfl, qfl; seeds 0,1,2; yolov8n.yaml on the embedded dataset
  diagnose: baseline=  conf=0.001  iou=0.7  max_det=300  device=  batch=16  workers=0  force=true (recompute)
            cache_dir=DIR (per-run diagnosis.json there instead of in each run directory)

Examples:
  yolo-vfl ab experiments/ab_embedded.yaml
  yolo-vfl ab experiments/ab_embedded.yaml seeds=[0] epochs=2 out=runs/ab/smoke
  yolo-vfl ab experiments/ab_coco128_gpu.yaml device=0,1
  yolo-vfl ab report out=runs/ab/ab_embedded
  yolo-vfl ab diagnose out=runs/ab/ab_embedded arms=bce,vfl,qfl
"""


DIAGNOSE_KEYS = (
    "out",
    "dest",
    "arms",
    "baseline",
    "conf",
    "iou",
    "max_det",
    "device",
    "batch",
    "workers",
    "cache_dir",
    "force",
)


def _cli_diagnose(tokens: Sequence[str]) -> int:
    """``yolo-vfl ab diagnose out=DIR [dest=DIR] [arms=a,b] ...`` (``yolo_vfl.diagnose.diagnose_experiment``)."""
    from .cli import parse_args
    from .diagnose import diagnose_experiment

    args = parse_args(tokens)
    unknown = [k for k in args if k not in DIAGNOSE_KEYS]
    if unknown:
        raise _user_error(
            f"Unknown argument '{unknown[0]}' for 'yolo-vfl ab diagnose'."
            f"{_suggest(unknown[0], DIAGNOSE_KEYS)} Valid: {', '.join(DIAGNOSE_KEYS)}."
        )
    if args.get("out") in (None, ""):
        raise _user_error("'yolo-vfl ab diagnose' needs out=DIR (the experiment directory).")
    arms = [str(a).strip("[]'\" ") for a in _as_list(args.get("arms"), "arms")]
    kwargs = {k: args[k] for k in DIAGNOSE_KEYS[4:] if k in args}
    if "device" in kwargs and kwargs["device"] is not None:
        kwargs["device"] = str(kwargs["device"])
    paths = diagnose_experiment(
        str(args["out"]),
        dest=None if args.get("dest") in (None, "") else str(args["dest"]),
        arms=[a for a in arms if a] or None,
        baseline=args.get("baseline"),
        log=lambda msg: print(f"yolo-vfl ab diagnose: {msg}", flush=True),
        **kwargs,
    )
    print(f"yolo-vfl ab: diagnosis written: {paths['diagnosis.md']}")
    return 0


def cli_ab(tokens: Sequence[str]) -> int:
    """``yolo-vfl ab [spec.yaml] [key=value ...]``, ``yolo-vfl ab report out=DIR`` and ``yolo-vfl ab diagnose out=DIR``.

    Returns:
        0 on success, 1 when some runs failed (the report is written for the others).

    Raises:
        CLIError: user errors (bad spec, unknown key, missing files).
    """
    from .cli import parse_args

    tokens = list(tokens)
    if tokens and tokens[0] in ("help", "-h", "--help"):
        print(AB_HELP)
        return 0
    if tokens and tokens[0] == "report":
        rest = tokens[1:]
        spec_path = rest.pop(0) if rest and "=" not in rest[0] else None
        args = parse_args(rest)
        unknown = [k for k in args if k not in ("out", "baseline")]
        if unknown:
            raise _user_error(
                f"Unknown argument '{unknown[0]}' for 'yolo-vfl ab report'."
                f"{_suggest(unknown[0], ['out', 'baseline'])} Valid: out, baseline."
            )
        if args.get("out") in (None, ""):
            if spec_path is None:
                raise _user_error("'yolo-vfl ab report' needs out=DIR (the experiment directory) or a spec file.")
            out = load_spec(spec_path).out_dir()
        else:
            out = Path(str(args["out"]))
        paths = regenerate_report(out, args.get("baseline"))
        print(f"yolo-vfl ab: report written: {paths['summary.md']}")
        return 0
    if tokens and tokens[0] == "diagnose":
        return _cli_diagnose(tokens[1:])
    spec_path = None
    if tokens and "=" not in tokens[0]:
        spec_path, tokens = tokens[0], tokens[1:]
    args = parse_args(tokens)
    dry_run = bool(args.get("dry_run", False))
    spec = load_spec(spec_path, args)
    command = shlex.join(["yolo-vfl", "ab", *([spec_path] if spec_path else []), *tokens])
    try:
        run_ab(spec, command=command, dry_run=dry_run)
    except ABRunError as e:
        print(f"yolo-vfl ab: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m yolo_vfl.experiment run-one JOB.json`` (one run), or the ``yolo-vfl ab`` arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run-one"]:
        if len(argv) != 2:
            print("usage: python -m yolo_vfl.experiment run-one JOB.json", file=sys.stderr)
            return 2
        return _run_one_main(argv[1])
    from .cli import CLIError

    try:
        return cli_ab(argv)
    except KeyboardInterrupt:
        return 130
    except (CLIError, ValueError, TypeError, FileNotFoundError) as e:
        print(f"yolo-vfl ab: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
