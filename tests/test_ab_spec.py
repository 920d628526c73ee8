"""The A/B spec schema: one table gives defaults, validation and help; every refusal is one line before any run."""

from __future__ import annotations

import re

import pytest

from yolo_vfl.ab import keys_help, load_spec, protocol, spec_from_dict
from yolo_vfl.ab import spec as schema
from yolo_vfl.criterion import SETTING_KEYS
from yolo_vfl.errors import UserError
from yolo_vfl.losses import list_losses

TWO_ARMS = {"arms": {"bce": {}, "vfl": {}}}


@pytest.mark.parametrize(
    "raw, overrides, match",
    [
        ({"train": {"epochs": 1}}, {"vfl.cls_warmup": 1}, r"Arm 'vfl': Invalid cls_warmup=1 for epochs=1"),
        ({"train": {"epochs": 3}, "arms": {"bce": {}, "vfl": {"cls_warmup": 5}}}, {}, r"cls_warmup=5 for epochs=3"),
        ({}, {"vfl.cls": -1.0}, r"Arm 'vfl': Invalid cls=-1.0: loss gains must be >= 0"),
        ({"train": {"box": -2.0}}, {}, r"Arm 'bce': Invalid box=-2.0"),
        ({}, {"vfl.loss": "vfll"}, r"Arm 'vfl'.*vfll"),
        ({}, {"vfl.tal_topk": 0}, r"Arm 'vfl': Invalid tal_topk=0"),
        ({"arms": {"bce": {}, "vfl": 3}}, {}, r"Invalid arm vfl: 3: a mapping"),
    ],
)
def test_arm_settings_merged_with_shared_ones_are_checked_at_load(raw, overrides, match):
    """An arm whose settings fail with the shared ones (cls_warmup >= epochs, a negative gain) is refused at load."""
    with pytest.raises(UserError, match=match) as info:
        spec_from_dict({**TWO_ARMS, **raw}, overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text, match",
    [
        ("", r"Spec file '.*' is empty: write at least its arms, e\.g\. 'arms: \{bce"),
        ("# only a comment\n", r"is empty"),
        ("arms: {}\n", r"Spec file '.*' has no arms: write e\.g\. 'arms: \{bce"),
        ("seeds: [0]\n", r"has no arms"),
        ("arms:\n", r"has no arms"),
    ],
)
def test_empty_or_armless_spec_file_says_what_to_write(tmp_path, text, match):
    """An empty spec file, ``arms: {}`` or no ``arms:`` is an error naming the file and showing an arms: line."""
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=match):
        load_spec(path)


def test_armless_spec_file_takes_arms_from_the_command_line(tmp_path):
    """``arms=bce,vfl`` gives the arms a spec file leaves out."""
    path = tmp_path / "spec.yaml"
    path.write_text("seeds: [0]\n")
    assert load_spec(path, {"arms": "bce,vfl"}).arm_names == ["bce", "vfl"]


def test_no_spec_file_keeps_the_default_arms_and_a_spec_file_the_same_defaults(tmp_path):
    """Without a spec file: arms bce, vfl, qfl; a spec file naming only arms gets the same train defaults."""
    default = load_spec(None)
    assert default.arm_names == list(protocol.DEFAULT_ARMS) and default.baseline == protocol.BASELINE
    assert default.seeds == list(protocol.DEFAULT_SEEDS)
    path = tmp_path / "spec.yaml"
    path.write_text("arms: {bce: {}, vfl: {}}\n")
    spec = load_spec(path)
    assert spec.train == default.train and spec.train["epochs"] == 12 and spec.train["imgsz"] == 128


def test_help_is_generated_from_the_tables():
    """``yolo-vfl ab help`` lists every runner, section and train key with its default, every loss and setting."""
    text = keys_help()
    for key in schema.RUNNER_KEYS:
        assert f"  {key.name}=  " in text and (key.default is None or f"(default {key.default!r})" in text)
    for section, keys in schema.SECTION_KEYS.items():
        assert all(f"  {section}.{k.name}=  " in text for k in keys)
    assert all(f"train.{k.name}=" in text for k in schema.TRAIN_KEYS)
    for name in [s.name for s in list_losses()] + list(SETTING_KEYS):
        assert re.search(rf"\b{name}\b", text), name
    assert {"mal", "iabce", "tal_topk", "tal_alpha", "tal_beta"} <= set(re.findall(r"\w+", text))


def test_every_key_in_the_help_is_accepted_at_its_default():
    """Each runner and section key of the help, given on the command line at its default, loads."""
    for key in schema.RUNNER_KEYS:
        if key.default is not None:
            spec = load_spec(None, {key.name: key.default})
            assert getattr(spec, key.name) == key.default
    for section, keys in schema.SECTION_KEYS.items():
        for k in keys:
            if k.default is not None:
                assert getattr(load_spec(None, {f"{section}.{k.name}": k.default}), section)[k.name] == k.default


def test_cli_ab_help_lists_the_tables_and_the_diagnose_defaults(capsys):
    """``yolo-vfl ab help``: the generated key list, and diagnose's defaults as its signature has them."""
    from yolo_vfl.cli import main

    assert main(["ab", "help"]) == 0
    text = capsys.readouterr().out
    assert keys_help() in text and "{" not in text.replace("{bce", "")
    assert f"conf={protocol.CONF}  iou={protocol.NMS_IOU}  max_det={protocol.MAX_DET}" in text
