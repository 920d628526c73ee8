"""An A/B experiment spec: the schema (one table), its arms, and the validated ``ABSpec``.

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

Every key the runner reads is a row of ``RUNNER_KEYS``, of a section in ``SECTION_KEYS`` or of ``TRAIN_KEYS``
(default, check, help); the defaults, ``to_dict``, the CLI's key list and ``yolo-vfl ab help`` are built from the
tables. A spec file must name its arms; without a spec file the arms are ``protocol.DEFAULT_ARMS``.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from . import protocol

__all__ = ["Arm", "ABSpec", "Key", "RUNNER_KEYS", "SECTION_KEYS", "TRAIN_KEYS", "DEFAULT_MODEL", "EMBEDDED"]
__all__ += ["spec_from_dict", "load_spec", "keys_help"]

DEFAULT_MODEL = "yolov8n.yaml"
EMBEDDED = "embedded"
#: Ultralytics arguments the runner sets itself.
RUNNER_OWNED = ("project", "name", "exist_ok", "resume", "mode", "seed", "task")
#: Arguments that must be identical for every arm (set them under ``train:``).
SHARED_ONLY = ("data", "model", "epochs", "imgsz", "deterministic", "device", "time", "fraction", "split", "val")


def suggest(word: str, choices: Sequence[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


# ----------------------------------------------------------------------------------------------------- value checks
def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    return [value]


def _bool(value: Any, label: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"Invalid {label}={value!r}: true or false.")
    return value


def _number(low: float, high: float | None = None, *, open_high: bool = False) -> Callable[[Any, str], float]:
    def check(value: Any, label: str) -> float:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and value >= low
        if not ok or (high is not None and not (value < high if open_high else value <= high)):
            rng = f">= {low:g}" if high is None else f"in [{low:g}, {high:g}{')' if open_high else ']'}"
            raise UserError(f"Invalid {label}={value!r}: a number {rng}.")
        return float(value)

    return check


def _positive_int(value: Any, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"Invalid {label}={value!r}: an integer >= 1.")
    return value


def _optional_str(value: Any, label: str) -> str | None:
    return None if value in (None, "") else str(value)


def _optional_mapping(value: Any, label: str) -> dict[str, Any] | None:
    if value in (None, ""):
        return None
    if not isinstance(value, Mapping):
        raise UserError(f"Invalid {label}={value!r}: a mapping.")
    return dict(value)


def _name(value: Any, label: str, allowed: str = "_.-") -> str:
    if not isinstance(value, str) or not value or any(not (c.isalnum() or c in allowed) for c in value):
        chars = ", ".join(f"'{c}'" for c in allowed)
        raise UserError(f"Invalid {label} {value!r}: use letters, digits and {chars} (it names directories).")
    return value


def _seeds(value: Any, label: str) -> list[int]:
    out = []
    for s in _as_list(value):
        if isinstance(s, str) and s.lstrip("-").isdigit():
            s = int(s)
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise UserError(f"Invalid {label}={value!r}: give non-negative integers, e.g. seeds=[0,1,2].")
        out.append(s)
    if not out:
        raise UserError(f"{label} is empty: give at least one seed, e.g. seeds=[0,1,2].")
    if len(set(out)) != len(out):
        raise UserError(f"{label}={value!r} repeats a seed.")
    return out


def _devices(value: Any, label: str) -> list[str | None]:
    """Device slots: ``0,1`` / ``[0, 1]`` -> ``["0", "1"]``; ``["0,1", "2,3"]`` -> two 2-GPU (DDP) slots."""
    if value is None or value == "":
        return [None]
    if isinstance(value, (list, tuple)):
        slots = [
            ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v).replace(" ", "") for v in value
        ]
    else:
        slots = [s for s in str(value).replace(" ", "").strip("'\"").split(",") if s]
    if any(not s for s in slots):
        raise UserError(f"Invalid {label}={value!r}: empty device slot.")
    return slots or [None]


def _choice(*choices: str) -> Callable[[Any, str], str]:
    def check(value: Any, label: str) -> str:
        v = str(value).lower()
        if v not in choices:
            raise UserError(f"Invalid {label}={value!r}: {' or '.join(repr(c) for c in choices)}.{suggest(v, choices)}")
        return v

    return check


# ----------------------------------------------------------------------------------------------------- the schema
@dataclass(frozen=True)
class Key:
    """One key the runner reads: its default, its check (``check(value, label) -> value``) and its help."""

    name: str
    default: Any
    check: Callable[[Any, str], Any]
    help: str


def _as_given(value: Any, label: str) -> Any:
    return value  # an Ultralytics argument: checked by get_cfg with the arm's own


#: Top-level runner keys (also ``key=value`` on the command line).
RUNNER_KEYS: tuple[Key, ...] = (
    Key("name", None, lambda v, label: None if v in (None, "") else _name(str(v), label), "experiment name"),
    Key("out", None, _optional_str, "experiment directory (default runs/ab/<name>)"),
    Key("baseline", protocol.BASELINE, lambda v, label: str(v), "arm every other arm is compared with"),
    Key("seeds", list(protocol.DEFAULT_SEEDS), _seeds, "seeds; every arm trains once per seed"),
    Key("device", None, _devices, 'device slots: 0,1 runs two at a time; ["0,1"] one DDP run on two GPUs'),
    Key("backend", "local", _choice("local", "ray"), "local process pool or ray"),
    Key("keep_going", False, _bool, "after a failed run, keep starting the others"),
    Key("decide", "grid", _choice("grid", "sequential"), "grid: every arm x seed; sequential: stop arms once decided"),
    Key("margin", 0.005, _number(1e-6, 1), "decide=sequential: equivalence margin on mAP50-95"),
)
#: Sections addressed as ``<section>.<key>=value``; ``train`` (Ultralytics arguments) and the arms are the others.
SECTION_KEYS: dict[str, tuple[Key, ...]] = {
    "ray": (
        Key("address", None, _optional_str, "Ray cluster address (default: a local Ray instance)"),
        Key("num_cpus", 1.0, _number(0), "CPUs per run"),
        Key("num_gpus", 0.0, _number(0), "GPUs per run"),
        Key("runtime_env", None, _optional_mapping, "Ray runtime environment"),
    ),
    "ranking": (
        Key("enabled", True, _bool, "record the final model's detections and measure ranking quality"),
        Key("conf", protocol.CONF, _number(0, 1, open_high=True), "confidence threshold of the recording pass"),
        Key("iou", protocol.NMS_IOU, _number(0, 1), "NMS IoU of the recording pass"),
        Key("max_det", protocol.MAX_DET, _positive_int, "detections kept per image"),
        Key("max_points", protocol.MAX_POINTS, _positive_int, "points kept for the ranking plot"),
    ),
}
#: Shared Ultralytics train arguments every spec gets unless ``train:`` (or ``key=value``) sets them; any other
#: Ultralytics argument keeps Ultralytics' default.
TRAIN_KEYS: tuple[Key, ...] = (
    Key("model", DEFAULT_MODEL, _as_given, "start model of every arm (a .yaml trains from scratch, offline)"),
    Key("data", None, _as_given, f"dataset YAML (default: the {EMBEDDED} synthetic dataset, generated once)"),
    Key("epochs", 12, _as_given, "epochs of every run"),
    Key("batch", 16, _as_given, "batch size"),
)
#: ``imgsz`` on the embedded dataset, unless set (other datasets: Ultralytics' 640).
EMBEDDED_IMGSZ = 128
_RUNNER = {k.name: k for k in RUNNER_KEYS}
SPEC_KEYS = (*_RUNNER, *SECTION_KEYS, "pretrain", "train", "arms")
#: The spec used without a spec file (every other key at its default).
DEFAULT_SPEC: dict[str, Any] = {"arms": list(protocol.DEFAULT_ARMS)}
#: What to write when a spec file has no arms.
ARMS_EXAMPLE = "arms: {bce: {}, vfl: {loss: vfl, vfl_gamma: 1.5}}"


def _defaults(keys: Sequence[Key]) -> dict[str, Any]:
    return {k.name: copy.deepcopy(k.default) for k in keys}


def _arm_keys_help() -> str:
    """The per-arm keys: the losses, their settings with defaults, and the Ultralytics arguments an arm may set."""
    from ..criterion import SETTING_KEYS, ClsLossSettings
    from ..losses import list_losses

    defaults = ClsLossSettings.from_args({}).to_args()
    settings = [f"{k} ({defaults[k]!r})" if k in defaults else f"{k} (the criterion's own)" for k in SETTING_KEYS[1:]]
    return (
        f"  <arm>.loss=  {', '.join(s.name for s in list_losses())} (default: the arm's name)\n"
        f"  <arm>.<setting>=  {', '.join(settings)}\n"
        f"  <arm>.<Ultralytics argument>=  e.g. <arm>.cls=1.0 (not {', '.join(SHARED_ONLY)}: shared by all arms)"
    )


def _key_line(name: str, key: Key) -> str:
    return f"  {name}=  {key.help}" + ("" if key.default is None else f" (default {key.default!r})")


def keys_help() -> str:
    """One line per runner, section, train and arm key with its default (``yolo-vfl ab help``)."""
    import textwrap

    from ..pretrain import PretrainSpec

    lines = [_key_line(k.name, k) for k in RUNNER_KEYS]
    lines += [_key_line(f"{section}.{k.name}", k) for section, keys in SECTION_KEYS.items() for k in keys]
    lines += [_key_line(f"train.{k.name}= or {k.name}", k) for k in TRAIN_KEYS]
    lines.append(f"  train.imgsz= or imgsz=  image size (default {EMBEDDED_IMGSZ} on the {EMBEDDED} dataset, else 640)")
    lines.append(
        "  pretrain.<key>=  fine-tune every arm from the project-made pretrained checkpoint: "
        + ", ".join(f"{k} ({v!r})" for k, v in PretrainSpec().to_dict().items() if k != "train_args")
    )
    lines += [*_arm_keys_help().splitlines()]
    lines.append(f"  without a spec file: arms {', '.join(protocol.DEFAULT_ARMS)}, every other key at its default")
    return "\n".join(textwrap.fill(line, 118, subsequent_indent=" " * 6) for line in lines)


# ----------------------------------------------------------------------------------------------------- arms and spec
@dataclass
class Arm:
    """One arm: its directory-safe name (runs are ``<name>-s<seed>``), its loss and its ``overrides``.

    ``overrides`` holds loss settings (``vfl_gamma``) and Ultralytics train arguments (``cls``, ``lr0`` ...), applied
    on top of the shared ``train`` arguments.
    """

    name: str
    loss: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def _overrides(self, loss_settings: bool) -> dict[str, Any]:
        from ..criterion import SETTING_KEYS

        return {k: v for k, v in self.overrides.items() if (k in SETTING_KEYS) == loss_settings}

    def loss_settings(self) -> Any:
        """The validated ``ClsLossSettings`` of this arm."""
        from ..criterion import ClsLossSettings

        return ClsLossSettings.from_args({"loss": self.loss, **self._overrides(True)})

    def ultralytics_overrides(self) -> dict[str, Any]:
        """The per-arm Ultralytics train arguments."""
        return self._overrides(False)


@dataclass
class ABSpec:
    """A validated A/B experiment: the runner keys of ``RUNNER_KEYS``, the sections of ``SECTION_KEYS``, and these.

    Every field is set by ``spec_from_dict`` (the defaults live in the tables, once).

    Attributes:
        arms: the arms, in report order.
        train: shared Ultralytics train arguments, incl. ``model`` and ``data`` (None: the embedded dataset).
        device: device slots, one run per slot at a time (``[None]``: Ultralytics' default device).
        pretrain: a ``yolo_vfl.pretrain.PretrainSpec``: every arm fine-tunes from the project-made checkpoint it
            names (built once, cached). None: ``train.model``.
        source: the spec file, if any.
    """

    name: str
    arms: list[Arm]
    seeds: list[int]
    train: dict[str, Any]
    baseline: str
    device: list[str | None]
    backend: str
    keep_going: bool
    ray: dict[str, Any]
    ranking: dict[str, Any]
    out: str | None
    pretrain: Any = None
    source: str | None = None
    decide: str = "grid"
    margin: float = 0.005

    @property
    def arm_names(self) -> list[str]:
        """Arm names in order."""
        return [a.name for a in self.arms]

    @property
    def data_token(self) -> str:
        """The dataset as the spec names it (``embedded`` for the generated one)."""
        data = self.train.get("data")
        return EMBEDDED if data is None else str(data)

    def out_dir(self) -> Path:
        """The experiment directory."""
        return Path(self.out or Path("runs") / "ab" / self.name).expanduser()

    def to_dict(self) -> dict[str, Any]:
        """The spec as a YAML-ready dict (the same form ``spec_from_dict`` reads)."""
        d: dict[str, Any] = {k.name: getattr(self, k.name) for k in RUNNER_KEYS if k.name != "out"}
        d["seeds"], d["device"] = list(self.seeds), list(self.device)
        if self.backend == "ray":
            d["ray"] = {k: v for k, v in self.ray.items() if v is not None}
        d["ranking"] = dict(self.ranking)
        if self.pretrain is not None:
            d["pretrain"] = self.pretrain.to_dict()
        if self.out:
            d["out"] = self.out
        d["train"] = dict(self.train)
        d["arms"] = {a.name: {"loss": a.loss, **a.overrides} for a in self.arms}
        return d


def _arm_items(value: Any) -> list[tuple[Any, Any]]:
    """``(name, body)`` pairs of an ``arms:`` mapping, or of a list of names / ``{name: ..., loss: ...}`` mappings."""
    if isinstance(value, Mapping):
        return list(value.items())
    if not isinstance(value, (list, tuple, str)):
        raise UserError(f"Invalid arms={value!r}: give a mapping name -> {{loss: ..., overrides}}.")
    items = []
    for entry in _as_list(value):
        if isinstance(entry, str):
            items.append((entry, {}))
        elif isinstance(entry, Mapping) and "name" in entry:
            items.append((entry["name"], {k: v for k, v in entry.items() if k != "name"}))
        else:
            raise UserError(f"Invalid arm {entry!r}: give a name, or a mapping with name: and loss:.")
    return items


def _parse_arms(value: Any) -> list[Arm]:
    from ..losses import list_losses

    losses = [s.name for s in list_losses()]
    arms = []
    for name, body in _arm_items(value):
        name = _name(str(name), "arm name", "_-")  # no '.': <arm>.<key>=value addresses it
        if name in (*SECTION_KEYS, "train"):
            raise UserError(f"Arm name {name!r} is reserved (sections: train, {', '.join(SECTION_KEYS)}).")
        if body is not None and not isinstance(body, Mapping):
            raise UserError(f"Invalid arm {name}: {body!r}: a mapping of its loss and overrides, e.g. {{loss: vfl}}.")
        body = dict(body or {})
        loss = body.pop("loss", None)
        if loss is None and name.lower() not in losses:
            raise UserError(
                f"Arm {name!r} needs loss=: one of {', '.join(losses)} (only arms named after a loss default to it)."
            )
        arms.append(Arm(name, str(loss if loss is not None else name).lower(), body))
    return arms


def _check_train_keys(train: Mapping[str, Any], where: str) -> None:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from ..criterion import SETTING_KEYS

    for key in train:
        if key in SETTING_KEYS:
            raise UserError(
                f"'{key}' in {where} is a loss setting: set it per arm (arms: {{vfl: {{loss: vfl, {key}: ...}}}}, "
                f"or <arm>.{key}=... on the command line)."
            )
        if key in RUNNER_OWNED:
            hint = " (the seeds: key sets it)" if key == "seed" else ""
            raise UserError(f"'{key}' in {where} is set by the A/B runner{hint}; remove it.")
        if key not in DEFAULT_CFG_DICT:
            valid = [*(k for k in DEFAULT_CFG_DICT if k not in RUNNER_OWNED), *SETTING_KEYS, *SPEC_KEYS]
            raise UserError(f"Unknown argument '{key}' in {where}.{suggest(key, valid)}")
    if train.get("deterministic") is False:
        raise UserError("deterministic=False: the A/B runner trains every run in deterministic mode; remove it.")
    if train.get("time") not in (None, 0):
        raise UserError(
            "time= stops training after a wall-clock budget, so arms would train different numbers of epochs; "
            "use epochs= instead."
        )


def _section(name: str, given: Any) -> dict[str, Any]:
    """A section's values: defaults from the table, then ``given``, unknown keys refused."""
    values = _defaults(SECTION_KEYS[name])
    if given is not None and not isinstance(given, Mapping):
        raise UserError(f"Invalid {name}: {given!r}: a mapping of {', '.join(values)}.")
    for key in given or {}:
        if key not in values:
            raise UserError(f"Unknown {name} key '{key}'.{suggest(key, list(values))} Valid: {', '.join(values)}.")
    return {**values, **dict(given or {})}


def _unknown_key(key: str, value: Any) -> UserError:
    """The error for a ``key=value`` override the runner does not read (with a close match)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from ..criterion import SETTING_KEYS

    if key in SETTING_KEYS:
        return UserError(f"'{key}' is a loss setting of an arm: write <arm>.{key}={value} (e.g. vfl.{key}={value}).")
    valid = [*_RUNNER, "arms", "dry_run", *(k for k in DEFAULT_CFG_DICT if k not in RUNNER_OWNED)]
    valid += [f"{s}.{k.name}" for s, keys in SECTION_KEYS.items() for k in keys]
    hint = " (the seeds= key sets it)" if key == "seed" else ""
    return UserError(f"Unknown argument '{key}'{hint}.{suggest(key, valid)} See 'yolo-vfl ab help'.")


def _apply_dotted(key: str, value: Any, targets: dict[str, dict[str, Any]], arms: list[Arm]) -> None:
    """Apply ``<section>.<key>=value`` or ``<arm>.<key>=value`` in place."""
    section, _, sub = key.partition(".")
    arm_by_name = {a.name: a for a in arms}
    if section in SECTION_KEYS and sub not in targets[section]:
        valid = list(targets[section])
        raise UserError(f"Unknown key '{key}'.{suggest(sub, valid)} Valid: {section}.{f', {section}.'.join(valid)}.")
    if section in targets:
        targets[section][sub] = value
    elif section in arm_by_name and sub == "loss":
        arm_by_name[section].loss = str(value).lower()
    elif section in arm_by_name:
        arm_by_name[section].overrides[sub] = value
    else:
        raise UserError(
            f"Unknown section '{section}' in '{key}'.{suggest(section, [*targets, *arm_by_name])} "
            f"Sections: train, pretrain, {', '.join(SECTION_KEYS)} and the arms ({', '.join(arm_by_name)})."
        )


def _apply_overrides(
    overrides: Mapping[str, Any], top: dict[str, Any], targets: dict[str, dict[str, Any]], arms: list[Arm]
) -> list[str] | None:
    """Apply ``key=value`` overrides in place (``targets``: train, pretrain, sections); returns the ``arms=`` choice."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    selected = None
    for key, value in overrides.items():
        if "." in key:
            _apply_dotted(key, value, targets, arms)
        elif key == "arms":
            selected = [str(a) for a in _as_list(value)]
        elif key in _RUNNER or key == "dry_run":  # dry_run is the caller's (stored, never read)
            if key == "device":
                targets["train"].pop("device", None)
            top[key] = value
        elif key in ("ray_address", "ray_num_cpus", "ray_num_gpus"):  # the first runner's spelling
            targets["ray"][key[4:]] = value
        elif key in DEFAULT_CFG_DICT and key not in RUNNER_OWNED:
            targets["train"][key] = value
        else:
            raise _unknown_key(key, value)
    return selected


def _select_arms(arms: list[Arm], selected: list[str] | None, source: str | None) -> list[Arm]:
    """The arms to run: the spec's, or the ``arms=`` subset (spec arms by name, or plain losses); never none."""
    if selected is not None:
        by_name = {a.name: a for a in arms}
        arms = [a for name in selected for a in ([by_name[name]] if name in by_name else _parse_arms([name]))]
    if not arms:
        where = f"Spec file '{source}'" if source else "The spec"
        raise UserError(
            f"{where} has no arms: write e.g. '{ARMS_EXAMPLE}' (an arm named after a loss needs no loss:), or give "
            "arms=bce,vfl."
        )
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise UserError(f"arms={names}: an arm is named twice.")
    return arms


def _pretrain(given: Any, values: dict[str, Any], train: Mapping[str, Any]) -> Any:
    """The ``PretrainSpec`` of ``pretrain:`` and its ``pretrain.<key>=`` overrides (None: neither given)."""
    if given is None and not values:
        return None
    from ..pretrain import PretrainSpec

    if "model" in train:
        raise UserError(
            f"train.model={train['model']!r} and pretrain: both name the starting model: pretrain: fine-tunes "
            "every arm from its own checkpoint (set its architecture with pretrain.model=); keep one."
        )
    try:
        return PretrainSpec.from_dict(values)
    except (TypeError, ValueError) as e:
        raise UserError(f"pretrain: {e}") from e


def _runner_values(top: Mapping[str, Any], source: str | None) -> dict[str, Any]:
    """The runner keys, checked (defaults from the table); the name defaults to the spec file's stem."""
    values = {k.name: k.check(k.default if top[k.name] is None else top[k.name], k.name) for k in RUNNER_KEYS}
    values["name"] = values["name"] or _name(Path(source).stem if source else "ab", "name")
    if values["backend"] == "ray" and len(values["device"]) > 1:
        raise UserError(
            "backend=ray places runs itself: request GPUs per run with ray.num_gpus= instead of several devices."
        )
    return values


def _complete_train(train: dict[str, Any]) -> dict[str, Any]:
    """``train`` checked, with the defaults of ``TRAIN_KEYS`` (and the embedded dataset's ``imgsz``) filled in."""
    _check_train_keys(train, "train")
    train = {**_defaults(TRAIN_KEYS), **train}
    if train["data"] in ("", EMBEDDED):
        train["data"] = None
    if train["data"] is None:
        train.setdefault("imgsz", EMBEDDED_IMGSZ)
    return train


def _check_arm(arm: Arm, train: Mapping[str, Any]) -> None:
    """An arm's settings merged with the shared ones, validated as its run would validate them before training.

    Loss settings by ``ClsLossSettings`` (with ``cls_warmup`` < ``epochs``), Ultralytics arguments by ``get_cfg``,
    loss gains by the trainer's check (none negative).
    """
    from ultralytics.cfg import get_cfg

    from ..checks import first_line
    from ..trainer import _check_gains

    for key in arm.overrides:
        if key in SHARED_ONLY:
            raise UserError(
                f"Arm '{arm.name}' sets '{key}': every arm trains with the same {key}; set it under train:."
            )
    _check_train_keys(arm.ultralytics_overrides(), f"arm '{arm.name}'")
    merged = {k: v for k, v in {**train, **arm.ultralytics_overrides()}.items() if k not in ("model", "data")}
    try:
        settings = arm.loss_settings()
        cfg = get_cfg(overrides=merged)
        settings.check_epochs(cfg.epochs)
        _check_gains(cfg)
    except (ValueError, TypeError, KeyError, SyntaxError) as e:
        raise UserError(f"Arm '{arm.name}': {first_line(e)}") from e


def spec_from_dict(
    raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, source: str | None = None
) -> ABSpec:
    """Build and validate an ``ABSpec`` from a spec mapping and CLI-style overrides.

    Args:
        raw: the spec (YAML) mapping; it must name its arms (``DEFAULT_SPEC`` is the spec without a file).
        overrides: ``key=value`` overrides: runner keys, ``<section>.<key>`` (``ray.num_gpus``, ``train.epochs``,
            ``<arm>.cls``), ``arms=`` (a subset, or plain losses) and any Ultralytics train argument (all arms).
        source: the spec file (for the record).

    Raises:
        UserError: unknown keys (with a close-match suggestion), bad values, no arms, arms whose settings merged with
            the shared ones do not validate (losses, ``cls_warmup`` >= ``epochs``, negative gains).
    """
    if not isinstance(raw, Mapping):
        raise UserError(f"A spec must be a mapping of {', '.join(SPEC_KEYS)}; got {type(raw).__name__}.")
    raw = copy.deepcopy(dict(raw))
    for key in raw:
        if key not in SPEC_KEYS:
            raise UserError(f"Unknown spec key '{key}'.{suggest(key, SPEC_KEYS)} Valid: {', '.join(SPEC_KEYS)}.")
    train = dict(raw.get("train") or {})
    arms = _parse_arms(raw.get("arms") or {})
    sections = {name: _section(name, raw.get(name)) for name in SECTION_KEYS}
    top = {k.name: raw.get(k.name) for k in RUNNER_KEYS}
    if "device" in train:  # accepted there too, as in an Ultralytics command
        if top["device"] is not None:
            raise UserError("device is given both at the top level and under train:; keep one.")
        top["device"] = train.pop("device")
    given_pretrain = raw.get("pretrain")
    if given_pretrain is not None and not isinstance(given_pretrain, Mapping):
        raise UserError(f"Invalid pretrain: {given_pretrain!r}: a mapping of pretrain keys ({{}} for the defaults).")
    pretrain_raw = dict(given_pretrain or {})
    selected = _apply_overrides(overrides or {}, top, {"train": train, "pretrain": pretrain_raw, **sections}, arms)
    pretrain = _pretrain(given_pretrain, pretrain_raw, train)
    arms = _select_arms(arms, selected, source)
    values = _runner_values(top, source)
    for name, keys in SECTION_KEYS.items():
        for k in keys:
            sections[name][k.name] = k.check(sections[name][k.name], f"{name}.{k.name}")
    if values["baseline"] not in (names := [a.name for a in arms]):
        raise UserError(
            f"The baseline arm '{values['baseline']}' is not among the arms ({', '.join(names)}): add it, or set "
            "baseline= to one of them."
        )
    train = _complete_train(train)
    for arm in arms:
        _check_arm(arm, train)
    return ABSpec(arms=arms, train=train, source=source, pretrain=pretrain, **values, **sections)


def load_spec(path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None) -> ABSpec:
    """Read a spec YAML (None: ``DEFAULT_SPEC``, the embedded dataset) and apply ``key=value`` overrides.

    Raises:
        UserError: a missing, unreadable or empty file, or a spec that does not validate (before any training).
    """
    import yaml

    if path is None:
        return spec_from_dict(DEFAULT_SPEC, overrides)
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"Spec file '{path}' not found.")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"Spec file '{path}' is not valid YAML: {str(e).splitlines()[0]}") from e
    if raw is None:
        raise UserError(
            f"Spec file '{path}' is empty: write at least its arms, e.g. '{ARMS_EXAMPLE}' (see experiments/*.yaml), "
            f"or run 'yolo-vfl ab' without a spec file for the default arms ({', '.join(protocol.DEFAULT_ARMS)})."
        )
    return spec_from_dict(raw, overrides, source=str(p))
