"""The values ``eval_config`` builds: the keys of main_linear.py / main_knn.py as the README's key
tables document them (assembled afresh from the owners' parts), the reworded schema errors
(whole messages), the default results folder names and the probe's ``LinearProbeConfig``.

In-process, no data, no Hydra composition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import pytest
from omegaconf import OmegaConf

from solo_multiview.config.keys import markdown_table
from solo_multiview.config.schema import ConfigError, assemble, describe, parse, section, setting
from solo_multiview.eval.eval_config import (
    _head_parts,
    _knn_parts,
    _linear_parts,
    _reworded,
    _siblings,
    _solo_learn_parts,
    default_results_name,
    parse_eval_cfg,
    schema_for,
    train_set_label,
)
from solo_multiview.eval.linear import LinearProbeConfig
from solo_multiview.eval.run_linear import probe_config
from tests.helpers import ROOT

CKPT = {"pretrained_feature_extractor": "/some/run"}

# the top-level keys of each entry point, as the README's tables list them (sorted)
SHARED_TOP = ["accelerator", "auto_resume", "backbone", "checkpoint", "data", "device", "devices",
              "name", "precision", "pretrain_method", "pretrained_args",
              "pretrained_feature_extractor", "results", "seed", "strategy", "sync_batchnorm",
              "train_set", "wandb"]
LINEAR_TOP = sorted(SHARED_TOP + ["max_epochs", "optimizer", "probe"])
KNN_TOP = sorted(SHARED_TOP + ["knn"])
LONG_TAIL_KEYS = ["class_order", "fraction", "fraction_seed", "imbalance_ratio", "index_file",
                  "n_max", "profile", "seed", "selection", "split_file"]


def readme_table(kind: str) -> str:
    """The README's markdown table under ``**main_<kind>.py**``."""
    text = (ROOT / "README.md").read_text()
    block = text.split(f"**main_{kind}.py**\n", 1)[1].strip()
    rows = block.split("\n\n", 1)[0].splitlines()
    return "\n".join(row for row in rows if row.startswith("|"))


def error_of(cfg: dict, kind: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_eval_cfg({**CKPT, **cfg}, kind)
    return str(info.value)


# --------------------------------------------------------------------------- declared keys
def test_linear_parts_declare_the_readme_keys():
    root = assemble("Linear", [*_head_parts(), *_linear_parts(), *_solo_learn_parts()])
    assert markdown_table(describe(root)) == readme_table("linear")


def test_knn_parts_declare_the_readme_keys():
    root = assemble("Knn", [*_head_parts(), *_knn_parts(), *_solo_learn_parts()])
    assert markdown_table(describe(root)) == readme_table("knn")


def test_parts_defaults_fill_a_fresh_config():
    root = assemble("Knn", [*_head_parts(), *_knn_parts(), *_solo_learn_parts()])
    cfg = parse(root, dict(CKPT))
    assert OmegaConf.to_container(cfg.backbone) == {"name": None}
    assert OmegaConf.to_container(cfg.knn) == {"k": 200, "temperature": 0.1}
    assert OmegaConf.to_container(cfg.checkpoint) == {"enabled": None, "dir": None,
                                                      "frequency": None}
    assert OmegaConf.to_container(cfg.auto_resume) == {"enabled": None}
    assert OmegaConf.to_container(cfg.wandb) == {"enabled": None, "entity": None,
                                                 "project": None, "offline": None}
    linear = parse(assemble("Linear", [*_head_parts(), *_linear_parts(),
                                       *_solo_learn_parts()]), dict(CKPT))
    assert linear.max_epochs == 100 and linear.optimizer.name == "sgd"
    assert linear.probe.mode == "features" and linear.probe.augmentation.crop == "pad"


# --------------------------------------------------------------------------- reworded errors
def test_unknown_top_level_key_lists_the_top_level_keys():
    assert error_of({"bogus": 1}, "linear") == (
        f"bogus: unknown key for main_linear.py (allowed at the top level: {LINEAR_TOP})")


def test_unknown_key_of_a_small_root_keeps_the_schema_keys_list():
    assert error_of({"bogus": 1}, "knn") == (
        f"bogus: unknown key for main_knn.py; the keys here are {KNN_TOP} (allowed at the top "
        f"level: {KNN_TOP})")


def test_unknown_nested_key_lists_the_keys_of_its_own_node():
    assert error_of({"data": {"long_tail": {"ratio": 3}}}, "linear") == (
        "data.long_tail.ratio: unknown key for main_linear.py; did you mean 'fraction'? "
        f"(allowed under data.long_tail: {LONG_TAIL_KEYS})")


def test_siblings_of_a_key_are_the_keys_of_its_node():
    root = schema_for("knn")
    assert _siblings(root, "knn.bogus") == ["k", "temperature"]
    assert _siblings(root, "data.long_tail.x") == LONG_TAIL_KEYS
    assert _siblings(root, "bogus") == KNN_TOP
    assert _siblings(root, "wandb.x") == ["enabled", "entity", "offline", "project"]


@pytest.mark.parametrize("cfg, expected", [
    ({"probe": {"mode": "zzz"}}, "probe.mode: unknown value 'zzz'; choose one of ['features', "
                                 "'augmented']"),
    ({"probe": {"mode": "augmentd"}}, "probe.mode: unknown value 'augmentd'; choose one of "
                                      "['features', 'augmented']; did you mean 'augmented'?"),
    ({"data": {"dataset": "cifar"}}, "data.dataset: unknown value 'cifar'; choose one of "
                                     "['cifar10', 'cifar100', 'image_list', 'digits'] or null; "
                                     "did you mean 'cifar10'?"),
    ({"data": {"dataset": "zzz"}}, "data.dataset: unknown value 'zzz'; choose one of "
                                   "['cifar10', 'cifar100', 'image_list', 'digits'] or null"),
])
def test_unknown_choice_names_the_choices(cfg, expected):
    assert error_of(cfg, "linear") == expected


def test_a_value_holding_did_you_mean_is_not_taken_for_the_suggestion():
    # only the schema's own suggestion (the end of its message) is kept
    value = "augmented; did you mean 'x'?"
    assert error_of({"probe": {"mode": value}}, "linear") == (
        f"probe.mode: unknown value {value!r}; choose one of ['features', 'augmented']")


@pytest.mark.parametrize("cfg, expected", [
    ({"data": {"crop_size": 0}}, "data.crop_size: expected an int >= 1 or null, got 0 "
                                 "[evaluation crop (null: the pretraining crop, args.json "
                                 "augmentations[0].crop_size)]"),
    ({"optimizer": {"momentum": 1.0}}, "optimizer.momentum: expected a number >= 0 and < 1, got "
                                       "1.0 [SGD momentum (sgd only)]"),
    ({"results": {"plot": "yes"}}, "results.plot: expected true or false, got 'yes' [write "
                                   "per_class.png]"),
])
def test_bad_value_names_what_is_expected_and_the_help(cfg, expected):
    assert error_of(cfg, "linear") == expected


def test_a_node_given_a_value_keeps_the_schema_message():
    assert error_of({"backbone": "x"}, "knn") == (
        "backbone: got 'x'; expected a node with keys ['name']")


def test_an_unresolvable_value_keeps_the_schema_message():
    assert error_of({"seed": "${nope}"}, "knn") == (
        "seed: cannot resolve an interpolation (Interpolation key 'nope' not found)")


@dataclass
class _Item:
    a: int = setting(1, "")


@dataclass
class _Root:
    """Keys the evaluation roots lack: an upper bound only, a list, no help, a list of nodes."""

    x: float = setting(0.5, "", below=1)
    xs: List[int] = setting([1], "some ints")
    items: List[_Item] = setting([], "")
    sub: _Item = section(_Item)


@pytest.mark.parametrize("user, expected", [
    ({"x": 2}, "x: expected a number < 1, got 2"),  # a range, not choices; no help, no [...]
    ({"xs": "a"}, "xs: expected list of int, got 'a' [some ints]"),  # no word for the type
    ({"sub": {"a": "q"}}, "sub.a: expected an int, got 'q'"),
    ({"items": [{"b": 1}]}, "items[0].b: unknown key; the keys here are ['a']"),  # kept as is
])
def test_reworded_on_other_declarations(user, expected):
    with pytest.raises(ConfigError) as info:
        parse(_Root, user)
    assert str(_reworded(info.value, _Root, user, "linear")) == expected


def test_reworded_keeps_messages_it_cannot_place():
    root = schema_for("linear")
    for text in ("no key here", "bogus: got 1; expected something", "seed: got -1; expected x"):
        # undeclared key with another message; a declared key absent from the user's config
        assert str(_reworded(ConfigError(text), root, {}, "linear")) == text


# --------------------------------------------------------------------------- results names
@pytest.mark.parametrize("train_set, label", [("balanced", "balanced"), ("longtail", "longtail"),
                                              (10, "shots10")])
def test_train_set_label(train_set, label):
    assert train_set_label(train_set) == label


@pytest.mark.parametrize("train_set, mode, expected", [
    ("balanced", "features", "linear-balanced"),
    ("longtail", "augmented", "linear-longtail-aug"),
    (10, "features", "linear-shots10"),
    (3, "augmented", "linear-shots3-aug"),
])
def test_default_linear_results_name(train_set, mode, expected):
    cfg = OmegaConf.create({"train_set": train_set, "probe": {"mode": mode}})
    assert default_results_name(cfg, "linear") == expected


@pytest.mark.parametrize("train_set, k, temperature, expected", [
    ("balanced", 200, 0.1, "knn-balanced-k200-t0.1"),
    (5, 20, 0.07, "knn-shots5-k20-t0.07"),
    ("longtail", 1, 1.0, "knn-longtail-k1-t1"),
])
def test_default_knn_results_name(train_set, k, temperature, expected):
    cfg = OmegaConf.create({"train_set": train_set, "knn": {"k": k, "temperature": temperature}})
    assert default_results_name(cfg, "knn") == expected


def test_default_results_names_of_parsed_configs():
    linear = parse_eval_cfg({**CKPT, "train_set": "7", "probe": {"mode": "augmented"}}, "linear")
    assert default_results_name(linear, "linear") == "linear-shots7-aug"
    knn = parse_eval_cfg(dict(CKPT), "knn")
    assert default_results_name(knn, "knn") == "knn-balanced-k200-t0.1"


# --------------------------------------------------------------------------- probe config
def test_probe_config_takes_every_key_sgd():
    cfg = parse_eval_cfg({**CKPT, "max_epochs": 3, "seed": 7,
                          "optimizer": {"name": "sgd", "batch_size": 32, "lr": 0.02,
                                        "momentum": 0.5, "nesterov": True,
                                        "weight_decay": 0.001, "lr_interval": "epoch"},
                          "probe": {"standardize": False, "balanced_loss": True}}, "linear")
    assert probe_config(cfg) == LinearProbeConfig(
        epochs=3, batch_size=32, optimizer="sgd", lr=0.02, momentum=0.5, nesterov=True,
        weight_decay=0.001, standardize=False, balanced_loss=True, seed=7, lr_interval="epoch")


def test_probe_config_takes_every_key_adamw():
    cfg = parse_eval_cfg({**CKPT, "max_epochs": 2, "seed": 0,
                          "optimizer": {"name": "adamw", "batch_size": 8, "lr": 0.5,
                                        "momentum": 0.0, "weight_decay": 0.25},
                          "probe": {"standardize": True, "balanced_loss": False}}, "linear")
    assert probe_config(cfg) == LinearProbeConfig(
        epochs=2, batch_size=8, optimizer="adamw", lr=0.5, momentum=0.0, nesterov=False,
        weight_decay=0.25, standardize=True, balanced_loss=False, seed=0, lr_interval="step")
