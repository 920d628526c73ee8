"""An A/B experiment spec: one key table (defaults, checks, ``yolo-vfl ab help``), the arms, the validated ``ABSpec``.

A spec (YAML, ``experiments/ab_*.yaml``; without one the arms are ``protocol.DEFAULT_ARMS``)::

    name: embedded
    seeds: [0, 1, 2]
    device: cpu       # [0, 1]: two arms side by side, one per GPU; ["0,1", "2,3"]: two DDP slots
    train: {model: yolov8n.yaml, imgsz: 128, epochs: 12}   # shared Ultralytics arguments; no data: the embedded set
    arms: {bce: {}, vfl: {loss: vfl}, qfl_cls1: {loss: qfl, cls: 1.0}}   # a loss-named arm needs no loss:
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
#: ``imgsz`` on the embedded dataset, unless set (other datasets: Ultralytics' 640).
EMBEDDED_IMGSZ = 128
#: Ultralytics arguments the runner sets itself.
RUNNER_OWNED = ("project", "name", "exist_ok", "resume", "mode", "seed", "task")
#: Arguments that must be identical for every arm (set them under ``train:``).
SHARED_ONLY = ("data", "model", "epochs", "imgsz", "deterministic", "device", "time", "fraction", "split", "val")
#: What to write when a spec file has no arms.
ARMS_EXAMPLE = "arms: {bce: {}, vfl: {loss: vfl, vfl_gamma: 1.5}}"
Check = Callable[[Any, str], Any]


def suggest(word: Any, choices: Sequence[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(str(word), choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _rule(ok: Callable[[Any], bool], want: str, cast: Callable = lambda v: v, choices: Sequence = ()) -> Check:
    """A check returning ``cast(value)``; it refuses a value failing ``ok`` as ``Invalid <label>=<value>: <want>``."""

    def check(value: Any, label: str) -> Any:
        if not ok(value):
            raise UserError(f"Invalid {label}={value!r}: {want}.{suggest(str(value).lower(), choices)}")
        return cast(value)

    return check


def _number(low: float, high: float | None = None, *, open_high: bool = False, integer: bool = False) -> Check:
    """A number (an integer with ``integer``) in ``[low, high]`` (``[low, high)`` with ``open_high``)."""
    rng = f">= {low:g}" if high is None else f"in [{low:g}, {high:g}{')' if open_high else ']'}"

    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)) or not v >= low:
            return False
        return high is None or (v < high if open_high else v <= high)

    return _rule(ok, f"{'an integer' if integer else 'a number'} {rng}", int if integer else float)


def _choice(*choices: str) -> Check:
    """One of ``choices``, in any case."""
    return _rule(
        lambda v: str(v).lower() in choices, " or ".join(map(repr, choices)), lambda v: str(v).lower(), choices
    )


_bool = _rule(lambda v: isinstance(v, bool), "true or false")
_text = _rule(lambda v: True, "", lambda v: None if v in (None, "") else str(v))  # optional text
_mapping = _rule(
    lambda v: v in (None, "") or isinstance(v, Mapping), "a mapping", lambda v: None if v in (None, "") else dict(v)
)
_ultralytics = _rule(lambda v: True, "")  # a train argument as given: Ultralytics checks it


def _as_list(value: Any) -> list[Any]:
    """A list, tuple or one value as a list; text as its comma-separated items (``a,b`` or ``[a, b]``)."""
    if isinstance(value, str):
        return [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    return list(value) if isinstance(value, (list, tuple)) else [] if value is None else [value]


def _name(value: str, label: str, allowed: str = "_.-") -> str:
    """A name that can name a directory: letters, digits and ``allowed``."""
    if not value or not all(c.isalnum() or c in allowed for c in value):
        chars = ", ".join(f"'{c}'" for c in allowed)
        raise UserError(f"Invalid {label} {value!r}: use letters, digits and {chars} (it names directories).")
    return value


def _seeds(value: Any, label: str) -> list[int]:
    """Distinct non-negative integers, at least one."""
    seeds = [int(s) if isinstance(s, str) and s.lstrip("-").isdigit() else s for s in _as_list(value)]
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise UserError(f"Invalid {label}={value!r}: give non-negative integers, e.g. seeds=[0,1,2].")
    if not seeds:
        raise UserError(f"{label} is empty: give at least one seed, e.g. seeds=[0,1,2].")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{label}={value!r} repeats a seed.")
    return seeds


def _devices(value: Any, label: str) -> list[str | None]:
    """Device slots: ``0,1`` / ``[0, 1]`` -> ``["0", "1"]``; ``["0,1", "2,3"]`` -> two 2-GPU (DDP) slots."""
    if not isinstance(value, (list, tuple)):
        return [s for s in str("" if value is None else value).replace(" ", "").strip("'\"").split(",") if s] or [None]
    slots = [",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v).replace(" ", "") for v in value]
    if not all(slots):
        raise UserError(f"Invalid {label}={value!r}: empty device slot.")
    return slots or [None]


@dataclass(frozen=True)
class Key:
    """One key the runner reads: its default, its check (``check(value, label) -> value``) and its help."""

    name: str
    default: Any
    check: Check
    help: str


#: Top-level runner keys (also ``key=value`` on the command line).
RUNNER_KEYS: tuple[Key, ...] = (
    Key("name", None, lambda v, label: _text(v, label) and _name(str(v), label), "experiment name"),
    Key("out", None, _text, "experiment directory (default runs/ab/<name>)"),
    Key("baseline", protocol.BASELINE, lambda v, label: str(v), "arm every other arm is compared with"),
    Key("seeds", list(protocol.DEFAULT_SEEDS), _seeds, "seeds; every arm trains once per seed"),
    Key("device", None, _devices, 'device slots: 0,1 runs two at a time; ["0,1"] one DDP run on two GPUs'),
    Key("backend", "local", _choice("local", "ray"), "local process pool or ray"),
    Key("keep_going", False, _bool, "after a failed run, keep starting the others"),
    Key("decide", "grid", _choice("grid", "sequential"), "grid: every arm x seed; sequential: stop arms once decided"),
    Key("margin", protocol.MARGIN, _number(1e-6, 1), "decide=sequential: equivalence margin on mAP50-95"),
)
#: Sections addressed as ``<section>.<key>=value``; ``train`` (Ultralytics arguments) and the arms are the others.
SECTION_KEYS: dict[str, tuple[Key, ...]] = {
    "ray": (
        Key("address", None, _text, "Ray cluster address (default: a local Ray instance)"),
        Key("num_cpus", 1.0, _number(0), "CPUs per run"),
        Key("num_gpus", 0.0, _number(0), "GPUs per run"),
        Key("runtime_env", None, _mapping, "Ray runtime environment"),
    ),
    "ranking": (
        Key("enabled", True, _bool, "record the final model's detections and measure ranking quality"),
        Key("conf", protocol.CONF, _number(0, 1, open_high=True), "confidence threshold of the recording pass"),
        Key("iou", protocol.NMS_IOU, _number(0, 1), "NMS IoU of the recording pass"),
        Key("max_det", protocol.MAX_DET, _number(1, integer=True), "detections kept per image"),
        Key("max_points", protocol.MAX_POINTS, _number(1, integer=True), "points kept for the ranking plot"),
    ),
}
#: Shared Ultralytics train arguments every spec gets unless set (Ultralytics checks them); others keep its defaults.
TRAIN_KEYS: tuple[Key, ...] = (
    Key("model", DEFAULT_MODEL, _ultralytics, "start model of every arm (a .yaml trains from scratch, offline)"),
    Key("data", None, _ultralytics, f"dataset YAML (default: the {EMBEDDED} synthetic dataset, generated once)"),
    Key("epochs", 12, _ultralytics, "epochs of every run"),
    Key("batch", 16, _ultralytics, "batch size"),
)
_RUNNER = {k.name: k for k in RUNNER_KEYS}
_MAPPINGS = ("train", "pretrain", *SECTION_KEYS)
SPEC_KEYS = (*_RUNNER, *_MAPPINGS, "arms")
#: The spec used without a spec file (every other key at its default).
DEFAULT_SPEC: dict[str, Any] = {"arms": list(protocol.DEFAULT_ARMS)}


def _known(given: Mapping[str, Any], valid: Sequence[str], what: str, prefix: str = "") -> None:
    """Refuse a key of ``given`` not in ``valid`` (``what``: the message's name for it)."""
    for key in given:
        if key not in valid:
            raise UserError(f"Unknown {what} '{prefix}{key}'.{suggest(key, valid)} Valid: {', '.join(valid)}.")


def _checked(keys: Sequence[Key], given: Mapping[str, Any], section: str = "") -> dict[str, Any]:
    """Every key of ``keys``, checked: ``given``'s value, or the default where it gives none; unknown keys refused."""
    prefix = f"{section}." if section else ""
    _known(given, [k.name for k in keys], "key", prefix)
    values = {k.name: copy.deepcopy(k.default if given.get(k.name) is None else given[k.name]) for k in keys}
    return {k.name: k.check(values[k.name], prefix + k.name) for k in keys}


def keys_help() -> str:
    """One line per runner, section, train and arm key with its default (``yolo-vfl ab help``)."""
    import textwrap

    from ..criterion import SETTING_KEYS, ClsLossSettings
    from ..losses import list_losses
    from ..pretrain import PretrainSpec

    keys = [(k.name, k) for k in RUNNER_KEYS] + [(f"{s}.{k.name}", k) for s, ks in SECTION_KEYS.items() for k in ks]
    keys += [(f"train.{k.name}= or {k.name}", k) for k in TRAIN_KEYS]
    lines = [f"  {n}=  {k.help}" + ("" if k.default is None else f" (default {k.default!r})") for n, k in keys]
    defaults = ClsLossSettings.from_args({}).to_args()
    settings = [f"{k} ({defaults[k]!r})" if k in defaults else f"{k} (the criterion's own)" for k in SETTING_KEYS[1:]]
    pretrain = [f"{k} ({v!r})" for k, v in PretrainSpec().to_dict().items() if k != "train_args"]
    lines += [
        f"  train.imgsz= or imgsz=  image size (default {EMBEDDED_IMGSZ} on the {EMBEDDED} dataset, else 640)",
        "  pretrain.<key>=  fine-tune every arm from the project-made pretrained checkpoint: " + ", ".join(pretrain),
        f"  <arm>.loss=  {', '.join(s.name for s in list_losses())} (default: the arm's name)",
        f"  <arm>.<setting>=  {', '.join(settings)}",
        f"  <arm>.<Ultralytics argument>=  e.g. <arm>.cls=1.0 (not {', '.join(SHARED_ONLY)}: shared by all arms)",
        f"  without a spec file: arms {', '.join(protocol.DEFAULT_ARMS)}, every other key at its default",
    ]
    return "\n".join(textwrap.fill(text, 118, subsequent_indent=" " * 6) for text in lines)


@dataclass
class Arm:
    """One arm: its name (runs are ``<name>-s<seed>``), loss, and ``overrides`` (loss settings, Ultralytics args)."""

    name: str
    loss: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def loss_settings(self) -> Any:
        """The validated ``ClsLossSettings`` of this arm."""
        from ..criterion import SETTING_KEYS, ClsLossSettings

        ours = {k: v for k, v in self.overrides.items() if k in SETTING_KEYS}
        return ClsLossSettings.from_args({"loss": self.loss, **ours})

    def ultralytics_overrides(self) -> dict[str, Any]:
        """The per-arm Ultralytics train arguments."""
        from ..criterion import SETTING_KEYS

        return {k: v for k, v in self.overrides.items() if k not in SETTING_KEYS}


@dataclass
class ABSpec:
    """A validated A/B experiment (``spec_from_dict``): the values of ``RUNNER_KEYS`` and ``SECTION_KEYS``, and more.

    The arms in report order, the shared ``train`` arguments (``data`` None: the embedded dataset), the
    ``PretrainSpec`` every arm fine-tunes from (None: ``train.model``).
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
    decide: str
    margin: float
    pretrain: Any = None

    @property
    def arm_names(self) -> list[str]:
        """Arm names in order."""
        return [a.name for a in self.arms]

    @property
    def data_token(self) -> str:
        """The dataset as the spec names it (``embedded`` for the generated one)."""
        return EMBEDDED if self.train.get("data") is None else str(self.train["data"])

    def out_dir(self) -> Path:
        """The experiment directory."""
        return Path(self.out or Path("runs") / "ab" / self.name).expanduser()

    def to_dict(self) -> dict[str, Any]:
        """The spec as a YAML-ready dict (the same form ``spec_from_dict`` reads)."""
        d: dict[str, Any] = {k: copy.deepcopy(getattr(self, k)) for k in _RUNNER if k != "out"}
        d["ray"] = {k: v for k, v in self.ray.items() if v is not None} if self.backend == "ray" else None
        d["ranking"] = dict(self.ranking)
        d["pretrain"] = None if self.pretrain is None else self.pretrain.to_dict()
        d |= {"out": self.out or None, "train": dict(self.train)}
        d["arms"] = {a.name: {"loss": a.loss, **a.overrides} for a in self.arms}
        return {k: v for k, v in d.items() if v is not None}


def _parse_arms(value: Any) -> list[Arm]:
    """The arms of an ``arms:`` mapping (name -> body), or of a list of names / ``{name: ..., loss: ...}`` mappings."""
    from ..losses import list_losses

    if not isinstance(value, (Mapping, list, tuple, str)):
        raise UserError(f"Invalid arms={value!r}: give a mapping name -> {{loss: ..., overrides}}.")
    items = list(value.items()) if isinstance(value, Mapping) else []
    for entry in [] if isinstance(value, Mapping) else _as_list(value):
        if not isinstance(entry, str) and not (isinstance(entry, Mapping) and "name" in entry):
            raise UserError(f"Invalid arm {entry!r}: give a name, or a mapping with name: and loss:.")
        items.append((entry, {}) if isinstance(entry, str) else (entry["name"], entry))
    losses, arms = [s.name for s in list_losses()], []
    for name, body in items:
        name = _name(str(name), "arm name", "_-")  # no '.': <arm>.<key>=value addresses it
        if name in _MAPPINGS:
            raise UserError(f"Arm name {name!r} is reserved (sections: {', '.join(_MAPPINGS)}).")
        if body is not None and not isinstance(body, Mapping):
            raise UserError(f"Invalid arm {name}: {body!r}: a mapping of its loss and overrides, e.g. {{loss: vfl}}.")
        body = {k: v for k, v in (body or {}).items() if k != "name"}
        loss = body.pop("loss", None)
        if loss is None and name.lower() not in losses:
            raise UserError(f"Arm {name!r} needs loss=: one of {', '.join(losses)} (only a loss-named arm has one).")
        arms.append(Arm(name, str(name if loss is None else loss).lower(), body))
    return arms


def _check_train_keys(train: Mapping[str, Any], where: str = "") -> None:
    """Refuse loss settings, runner-owned and unknown keys among Ultralytics arguments (``where``: ' in train')."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from ..criterion import SETTING_KEYS

    for key, value in train.items():
        if key in SETTING_KEYS:
            raise UserError(
                f"'{key}'{where} is a loss setting: set it per arm, as <arm>.{key}={value} on the command line "
                f"(e.g. vfl.{key}={value}) or in the spec (arms: {{vfl: {{loss: vfl, {key}: {value}}}}})."
            )
        if key in RUNNER_OWNED:
            raise UserError(f"'{key}'{where} is set by the A/B runner{' (by seeds:)' * (key == 'seed')}; remove it.")
        if key not in DEFAULT_CFG_DICT:
            valid = [*(k for k in DEFAULT_CFG_DICT if k not in RUNNER_OWNED), *SETTING_KEYS, *SPEC_KEYS]
            valid += [f"{s}.{k.name}" for s, keys in SECTION_KEYS.items() for k in keys]
            raise UserError(f"Unknown argument '{key}'{where}.{suggest(key, valid)} See 'yolo-vfl ab help'.")
    if train.get("deterministic") is False:
        raise UserError("deterministic=False: the A/B runner trains every run in deterministic mode; remove it.")
    if train.get("time") not in (None, 0):
        raise UserError("time= would train the arms for different numbers of epochs; use epochs= instead.")


def _apply_overrides(overrides: Mapping[str, Any], raw: dict[str, Any], arms: list[Arm]) -> list[Arm]:
    """Apply ``key=value`` overrides to ``raw`` and the arms in place; returns the arms, or the ``arms=`` selection.

    The selection names spec arms or plain losses; a ``device`` left under ``train`` moves to the top level.
    """
    by_name, selected = {a.name: a for a in arms}, None
    for key, value in overrides.items():
        legacy = key.startswith("ray_") and key[4:] in ("address", "num_cpus", "num_gpus")  # the first spelling
        section, dot, sub = ("ray", ".", key[4:]) if legacy else key.partition(".")
        if dot and section in by_name and sub == "loss":
            by_name[section].loss = str(value).lower()
        elif dot and section in by_name:
            by_name[section].overrides[sub] = value
        elif dot and section in _MAPPINGS:
            raw[section][sub] = value
        elif dot:
            raise UserError(
                f"Unknown section '{section}' in '{key}'.{suggest(section, [*_MAPPINGS, *by_name])} "
                f"Sections: {', '.join(_MAPPINGS)} and the arms ({', '.join(by_name)})."
            )
        elif key == "arms":
            selected = [str(a) for a in _as_list(value)]
        elif key in _RUNNER:
            raw[key] = value
            if key == "device":
                raw["train"].pop("device", None)
        elif key != "dry_run":  # dry_run is the caller's
            _check_train_keys({key: value})
            raw["train"][key] = value
    if "device" in raw["train"]:  # accepted there too, as in an Ultralytics command
        if raw.get("device") is not None:
            raise UserError("device is given both at the top level and under train:; keep one.")
        raw["device"] = raw["train"].pop("device")
    if selected is None:
        return arms
    return [a for name in selected for a in ([by_name[name]] if name in by_name else _parse_arms([name]))]


def _pretrain(values: dict[str, Any], train: Mapping[str, Any]) -> Any:
    """The ``PretrainSpec`` of ``pretrain:`` and its ``pretrain.<key>=`` overrides."""
    from ..pretrain import PretrainSpec

    if "model" in train:
        raise UserError(
            f"train.model={train['model']!r} and pretrain: both name the start model (pretrain.model=); keep one."
        )
    try:
        return PretrainSpec.from_dict(values)
    except (TypeError, ValueError) as e:
        raise UserError(f"pretrain: {e}") from e


def _check_arm(arm: Arm, train: Mapping[str, Any]) -> None:
    """An arm's settings merged with the shared ones, validated as its run would (``ClsLossSettings``, ``get_cfg``)."""
    from ultralytics.cfg import get_cfg

    from ..checks import first_line
    from ..trainer import _check_gains

    for key in arm.overrides:
        if key in SHARED_ONLY:
            raise UserError(f"Arm '{arm.name}' sets '{key}': every arm trains with the same {key}; set it in train:.")
    _check_train_keys(arm.ultralytics_overrides(), f" in arm '{arm.name}'")
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
    """The validated ``ABSpec`` of a spec mapping and ``key=value`` overrides.

    Args:
        raw: the spec (``SPEC_KEYS``); it must name its arms, or the overrides must (``arms=``).
        overrides: runner keys, ``<section>.<key>`` (``ray.num_gpus``, ``train.epochs``, ``<arm>.cls``), ``arms=``
            (a subset, or plain losses), any Ultralytics train argument (all arms).
        source: the spec file, named by errors and giving the default ``name``.

    Returns:
        The spec, every value checked and every default filled in.

    Raises:
        UserError: one line naming the bad value and the valid ones.
    """
    if not isinstance(raw, Mapping):
        raise UserError(f"A spec must be a mapping of {', '.join(SPEC_KEYS)}; got {type(raw).__name__}.")
    _known(raw, SPEC_KEYS, "spec key")
    raw = copy.deepcopy(dict(raw))
    given_pretrain = raw.get("pretrain") is not None
    for name in _MAPPINGS:
        if not isinstance(raw.get(name) or {}, Mapping):
            raise UserError(f"Invalid {name}: {raw[name]!r}: a mapping of {name} keys (see 'yolo-vfl ab help').")
        raw[name] = dict(raw.get(name) or {})
    arms = _apply_overrides(overrides or {}, raw, _parse_arms(raw.get("arms") or {}))
    train = raw["train"]
    pretrain = _pretrain(raw["pretrain"], train) if given_pretrain or raw["pretrain"] else None
    if not arms:
        where = f"Spec file '{source}'" if source else "The spec"
        raise UserError(f"{where} has no arms: write e.g. '{ARMS_EXAMPLE}', or give arms=bce,vfl.")
    if len(set(names := [a.name for a in arms])) != len(names):
        raise UserError(f"arms={names}: an arm is named twice.")
    values = _checked(RUNNER_KEYS, {k: raw.get(k) for k in _RUNNER})
    values["name"] = values["name"] or _name(Path(source).stem if source else "ab", "name")
    if values["backend"] == "ray" and len(values["device"]) > 1:
        raise UserError("backend=ray places runs itself: request GPUs per run with ray.num_gpus= instead of devices.")
    sections = {name: _checked(keys, raw[name], name) for name, keys in SECTION_KEYS.items()}
    if values["baseline"] not in names:
        raise UserError(f"The baseline arm '{values['baseline']}' is not among the arms ({', '.join(names)}).")
    _check_train_keys(train, " in train")
    train = {**{k.name: k.default for k in TRAIN_KEYS}, **train}
    train["data"] = None if train["data"] in ("", EMBEDDED) else train["data"]
    if train["data"] is None:
        train.setdefault("imgsz", EMBEDDED_IMGSZ)
    for arm in arms:
        _check_arm(arm, train)
    return ABSpec(arms=arms, train=train, pretrain=pretrain, **values, **sections)


def load_spec(path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None) -> ABSpec:
    """The spec of a YAML file (None: ``DEFAULT_SPEC``) with ``key=value`` overrides (see ``spec_from_dict``).

    Raises:
        UserError: the file is missing, not YAML or empty, or the spec is invalid.
    """
    import yaml

    if path is None:
        return spec_from_dict(DEFAULT_SPEC, overrides)
    if not (p := Path(path).expanduser()).is_file():
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
