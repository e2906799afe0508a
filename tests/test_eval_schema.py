"""The declared config of main_linear.py / main_knn.py (``eval_config.schema_for``): unknown keys
with "did you mean", wrong types and ranges naming the key, every default filled, ``--keys``,
and checkpoint paths pasted as the pretraining prints them (``...-ep=14.ckpt``).

In-process where possible; one subprocess for the command line Hydra itself parses.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List

import omegaconf
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from solo_multiview.cli import hydra_quote, quote_path_overrides
from solo_multiview.config.keys import text_table
from solo_multiview.config.schema import ConfigError, describe, unused_settings
from solo_multiview.eval.eval_config import EVAL_PATH_KEYS, parse_eval_cfg, schema_for
from tests.helpers import ROOT

LINEAR_CONFIGS = ROOT / "scripts" / "linear"
CKPT = ["pretrained_feature_extractor=/some/run"]
CONFIG = {"linear": "quickstart_digits", "knn": "knn_quickstart_digits"}


def compose_eval(kind: str, overrides: Iterable[str] = ()) -> omegaconf.DictConfig:
    with initialize_config_dir(config_dir=str(LINEAR_CONFIGS), version_base="1.2"):
        cfg = compose(config_name=CONFIG[kind], overrides=[*CKPT, *overrides])
    OmegaConf.set_struct(cfg, False)
    return cfg


def error_of(kind: str, overrides: List[str]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_eval_cfg(compose_eval(kind, overrides), kind)
    assert isinstance(info.value, ValueError)  # prepare_or_exit prints it as one line
    return str(info.value)


# --------------------------------------------------------------------------- refused values
@pytest.mark.parametrize("kind, overrides, expected", [
    ("linear", ["+probe.standardise=false"],
     "probe.standardise: unknown key for main_linear.py; did you mean 'standardize'?"),
    ("knn", ["+knn.temprature=0.2"],
     "knn.temprature: unknown key for main_knn.py; did you mean 'temperature'?"),
    ("knn", ["+k=20"], "k: unknown key for main_knn.py; it is declared as 'knn.k'"),
    ("linear", ["+data.long_tail.ratio=3"], "data.long_tail.ratio: unknown key"),
])
def test_unknown_keys_suggest_the_declared_one(kind, overrides, expected):
    message = error_of(kind, overrides)
    assert message.startswith(expected), message
    assert "allowed " in message  # and the keys allowed where it stands


@pytest.mark.parametrize("kind, overrides, expected", [
    ("linear", ["optimizer.lr=abc"], "optimizer.lr: expected a number > 0, got 'abc'"),
    ("linear", ["results.plot=yes"], "results.plot: expected true or false, got 'yes'"),
    ("knn", ["seed=1.5"], "seed: expected an int >= 0, got 1.5"),
    ("knn", ["knn.k=0"], "knn.k: expected an int >= 1, got 0"),
    ("linear", ["max_epochs=0"], "max_epochs: expected an int >= 1, got 0"),  # trains nothing
    ("linear", ["probe.augmentation.min_scale=0"],
     "probe.augmentation.min_scale: expected a number > 0 and <= 1, got 0"),
    ("linear", ["probe.mode=augmentd"],
     "probe.mode: unknown value 'augmentd'; choose one of ['features', 'augmented']; did you "
     "mean 'augmented'?"),
    ("linear", ["data.long_tail.profile=expo"], "data.long_tail.profile: unknown value 'expo'"),
    ("linear", ["data.long_tail.imbalance_ratio=0.5"], "data.long_tail.imbalance_ratio: "
                                                       "expected a number >= 1 or null"),
    ("knn", ["train_set=0"], "train_set: 0 images per class; must be >= 1"),
    ("linear", ["optimizer.nesterov=true", "optimizer.momentum=0"],
     "optimizer.nesterov: true needs optimizer.momentum > 0"),
    ("linear", ["optimizer.nesterov=true", "optimizer.name=adamw"],
     "optimizer.nesterov: true has no effect with optimizer.name=adamw"),
])
def test_bad_values_name_the_key_value_and_what_is_valid(kind, overrides, expected):
    message = error_of(kind, overrides)
    assert message.startswith(expected), message


# --------------------------------------------------------------------------- parsed config
def test_defaults_are_the_declared_ones_and_the_result_is_read_only():
    cfg = parse_eval_cfg({"pretrained_feature_extractor": "run", "train_set": "10"}, "linear")
    for info in describe(schema_for("linear")):
        if info.key == "pretrained_feature_extractor":
            continue
        expected = 10 if info.key == "train_set" else info.default
        expected = "linear" if info.key == "name" else expected
        assert OmegaConf.select(cfg, info.key) == expected, info.key
    with pytest.raises(omegaconf.errors.ReadonlyConfigError):
        cfg.max_epochs = 3


@pytest.mark.parametrize("kind", ["linear", "knn"])
def test_the_base_yamls_repeat_the_declared_defaults(kind):
    """scripts/linear/base/*.yaml list the keys so that plain ``key=value`` overrides work in
    Hydra; their values must not drift from the declarations."""
    merged = OmegaConf.merge(*(OmegaConf.load(LINEAR_CONFIGS / "base" / f"{name}.yaml")
                               for name in ("eval", kind)))
    merged.pop("hydra")
    declared = {i.key: i.default for i in describe(schema_for(kind))}
    flat: Dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(OmegaConf.to_container(merged), "")
    assert set(flat) <= set(declared)
    assert flat.pop("pretrained_feature_extractor") == "???"  # required: no default either way
    assert declared["pretrained_feature_extractor"] == "(required)"
    for key, value in flat.items():
        assert value == declared[key], key


def test_solo_learn_keys_are_accepted_and_reported_unused():
    cfg = parse_eval_cfg(compose_eval("linear", ["+devices=[0]", "+precision=16",
                                                 "+wandb.enabled=false"]), "linear")
    assert unused_settings(schema_for("linear"), cfg) == ["devices", "precision",
                                                         "wandb.enabled"]


# --------------------------------------------------------------------------- --keys
@pytest.mark.parametrize("kind, config", [("linear", "cifar10lt"), ("knn", "knn_cifar10lt")])
def test_keys_flag_lists_every_declared_key(kind, config, monkeypatch, capsys):
    script = ROOT / f"main_{kind}.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--config-name", config, "--keys"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    infos = list(describe(schema_for(kind)))
    assert out.rstrip("\n") == text_table(infos)
    listed = [line.split()[0] for line in out.splitlines()]
    assert listed == [i.key for i in infos]
    assert ("knn.k" in listed) == (kind == "knn") and ("probe.mode" in listed) == (kind == "linear")


# --------------------------------------------------------------------------- pasted paths
PATHS = [
    "trained_models/mv_simclr/v1/mv_simclr-k4-digits-v1-ep=14.ckpt",
    "/runs/it's here/a,b [1] {x}.ckpt",
    "C:\\runs\\model\\",
    "a\\'b\"c",
    "${oc.env:HOME}/run",
]


@pytest.mark.parametrize("path", PATHS)
def test_quoted_paths_read_back_exactly(path):
    [arg] = quote_path_overrides([f"+pretrained_feature_extractor={path}"], EVAL_PATH_KEYS)
    assert arg == f"+pretrained_feature_extractor={hydra_quote(path)}"
    override = OverridesParser.create().parse_override(arg)
    assert override.key_or_group == "pretrained_feature_extractor"
    assert override.value() == path


def test_only_path_keys_are_quoted():
    argv = ["--config-name", "x", "knn.k=20", "results.dir=/a=b", "pretrained_args=null",
            "data.train_path='/q=1'", "results.dir=", "++data.val_path=/v=2"]
    assert quote_path_overrides(argv, EVAL_PATH_KEYS) == [
        "--config-name", "x", "knn.k=20", "results.dir='/a=b'", "pretrained_args=null",
        "data.train_path='/q=1'", "results.dir=", "++data.val_path='/v=2'"]


def test_a_quoted_path_reaches_the_parsed_config():
    path = PATHS[0]
    overrides = quote_path_overrides([f"pretrained_feature_extractor={path}"], EVAL_PATH_KEYS)
    cfg = parse_eval_cfg(compose_eval("knn", overrides), "knn")
    assert cfg.pretrained_feature_extractor == path


@pytest.mark.slow
def test_pasted_checkpoint_path_on_the_command_line(tmp_path):
    """As a user pastes it: Hydra's grammar error is gone; the missing file is our one line."""
    ckpt = tmp_path / "trained_models" / "mv_simclr" / "v1" / "mv_simclr-k4-digits-v1-ep=1.ckpt"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main_linear.py"), "--config-name", "quickstart_digits",
         f"pretrained_feature_extractor={ckpt}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.fullmatch(r"error: pretrained checkpoint: .*\n", proc.stderr), proc.stderr
    assert str(ckpt) in proc.stderr and "mismatched input" not in proc.stderr
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == []
