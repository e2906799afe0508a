"""solo-learn's own entry points on our checkpoints, through ``solo_multiview.solo_run``.

solo-learn's main_linear.py loads every state_dict key containing "backbone" (prefix removed)
into its backbone with ``strict=False``, so a silent mismatch would leave random weights: these
tests check the key sets explicitly. main_knn.py rebuilds the pretraining method with
``METHODS[args.json's method].load_from_checkpoint(..., strict=False)``; its feature loop needs
CUDA, so its loading path is checked in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from solo_multiview import solo_run
from solo_multiview.hosts import solo_available
from solo_multiview.hosts.backbones import build_backbone
from tests.helpers import ROOT
from tests.test_main_eval import ENV, pretrain_quickstart

pytestmark = [
    pytest.mark.solo,
    pytest.mark.skipif(not solo_available(),
                       reason="solo-learn is not installed (see README: add solo-learn)"),
]


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory) -> Path:
    return pretrain_quickstart(tmp_path_factory.getbasetemp())


def solo_script(name: str) -> Path:
    """A script of the solo-learn checkout the ``solo`` package is installed from."""
    import solo

    script = Path(solo.__file__).resolve().parents[1] / name
    if not script.is_file():
        pytest.skip(f"solo-learn's {name} is not beside its package (not an editable install)")
    return script


def solo_linear_backbone(name: str, dataset: str, kwargs: dict, method: str) -> nn.Module:
    """The backbone exactly as solo-learn's main_linear.py builds it."""
    from solo.methods.base import BaseMethod

    backbone = BaseMethod._BACKBONES[name](method=method, **kwargs)
    if name.startswith("resnet"):
        backbone.fc = nn.Identity()
        if dataset in ("cifar10", "cifar100"):
            backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
            backbone.maxpool = nn.Identity()
    return backbone


def solo_linear_state(state: dict) -> dict:
    """main_linear.py's key handling: keys containing "backbone" lose "backbone.", all other
    keys are dropped (older "encoder" checkpoints aside)."""
    return {k.replace("backbone.", ""): v for k, v in state.items() if "backbone" in k}


def test_solo_run_registers_the_plugin_and_forwards_argv(tmp_path, capsys):
    out = tmp_path / "seen.json"
    script = tmp_path / "probe_script.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        from solo.methods import METHODS
        from solo.methods.base import BaseMethod
        json.dump({{"argv": sys.argv, "name": __name__, "mv_simclr": "mv_simclr" in METHODS,
                   "convnet": "convnet" in BaseMethod._BACKBONES}}, open({str(out)!r}, "w"))
    """))
    saved = sys.argv[:]
    assert solo_run.main([str(script), "--config-name", "x", "a=b"]) == 0
    seen = json.loads(out.read_text())
    assert seen == {"argv": [str(script), "--config-name", "x", "a=b"], "name": "__main__",
                    "mv_simclr": True, "convnet": True}
    assert sys.argv == saved
    assert solo_run.main([str(tmp_path / "missing.py")]) == 2
    assert "not found" in capsys.readouterr().err


def test_main_linear_loading_matches_every_key_of_our_checkpoint(quickstart_run):
    """Our quickstart checkpoint (convnet) through main_linear.py's loading code."""
    solo_run.register_plugin()
    args = json.loads((quickstart_run / "args.json").read_text())
    ckpt = next(quickstart_run.glob("*.ckpt"))
    state = torch.load(ckpt, map_location="cpu")["state_dict"]  # main_linear's call
    backbone = solo_linear_backbone(args["backbone"]["name"], args["data"]["dataset"],
                                    args["backbone"]["kwargs"], args["method"])
    weights = solo_linear_state(state)
    result = backbone.load_state_dict(weights, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert set(weights) == set(backbone.state_dict()) and len(weights) > 0
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state[f"backbone.{key}"])


@pytest.mark.parametrize("name, dataset", [("resnet18", "cifar10"), ("resnet18", "image_list"),
                                           ("resnet50", "cifar100")])
def test_main_linear_loading_matches_our_resnets(name, dataset):
    """Our ResNets (with the CIFAR stem for CIFAR) against solo-learn's builders."""
    solo_run.register_plugin()
    ours = build_backbone(name, dataset)
    state = {f"backbone.{k}": v for k, v in ours.state_dict().items()}
    state["projector.0.weight"] = torch.zeros(2, 2)  # heads are ignored
    solo_side = solo_linear_backbone(name, dataset, {}, "mv_simclr")
    result = solo_side.load_state_dict(solo_linear_state(state), strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for key, value in solo_side.state_dict().items():
        assert torch.equal(value, state[f"backbone.{key}"])


def test_main_knn_loading_rebuilds_our_method(quickstart_run):
    """main_knn.py's ``METHODS[method].load_from_checkpoint(ckpt, strict=False, cfg=cfg)``."""
    solo_run.register_plugin()
    from solo.methods import METHODS

    args = json.loads((quickstart_run / "args.json").read_text())
    ckpt = next(quickstart_run.glob("*.ckpt"))
    model = METHODS[args["method"]].load_from_checkpoint(ckpt, strict=False,
                                                         cfg=OmegaConf.create(args))
    state = torch.load(ckpt, map_location="cpu")["state_dict"]
    mine = model.state_dict()
    assert set(mine) == set(state)
    assert all(torch.equal(mine[k], state[k]) for k in state)
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 16, 16))
    assert out["feats"].shape == (2, model.backbone.num_features) and "z" in out


DRIVER = """
import json, sys
import torch.nn as nn
from solo_multiview import solo_run

calls = []
original = nn.Module.load_state_dict

def spy(self, state_dict, *args, **kwargs):
    result = original(self, state_dict, *args, **kwargs)
    calls.append({"module": type(self).__name__, "given": sorted(state_dict),
                  "own": sorted(self.state_dict()), "missing": list(result.missing_keys),
                  "unexpected": list(result.unexpected_keys)})
    return result

nn.Module.load_state_dict = spy
try:
    code = solo_run.main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as f:
        json.dump(calls, f)
sys.exit(code)
"""

SOLO_LINEAR_CONFIG = """
defaults:
  - _self_
  - override hydra/hydra_logging: disabled
  - override hydra/job_logging: disabled
hydra:
  output_subdir: null
  run:
    dir: .
name: digits-linear
pretrained_feature_extractor: {ckpt}
pretrain_method: mv_simclr
backbone:
  name: convnet
  kwargs: {kwargs}
data:
  dataset: custom
  train_path: {root}/train
  val_path: {root}/val
  format: image_folder
  num_workers: 0
optimizer:
  name: sgd
  batch_size: 8
  lr: 0.1
  weight_decay: 0
scheduler:
  name: step
  lr_decay_steps: [60, 80]
checkpoint:
  enabled: False
auto_resume:
  enabled: False
max_epochs: 1
devices: "1"          # solo-learn takes len(devices); Lightning's CPU accelerator parses "1"
accelerator: cpu
strategy: auto
precision: 32
"""


def write_digits_folders(root: Path, per_class: int) -> None:
    """ImageFolder layout (what solo-learn's ``custom`` dataset reads) from the digits set."""
    from solo_multiview.data.sources import digits_source

    for split, train in (("train", True), ("val", False)):
        source = digits_source(train)
        for c in range(source.num_classes):
            folder = root / split / f"digit{c}"
            folder.mkdir(parents=True)
            for i in [int(j) for j in (source.targets == c).nonzero()[0][:per_class]]:
                source.load(i).save(folder / f"{i}.png")


@pytest.mark.slow
def test_solo_learn_main_linear_runs_on_our_checkpoint(quickstart_run, tmp_path):
    """solo-learn's main_linear.py, unmodified, trains one step on our checkpoint; its backbone
    load (strict=False) is spied on and must match every key."""
    script = solo_script("main_linear.py")
    args = json.loads((quickstart_run / "args.json").read_text())
    ckpt = next(quickstart_run.glob("*.ckpt"))
    write_digits_folders(tmp_path / "digits", per_class=2)
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "digits_linear.yaml").write_text(SOLO_LINEAR_CONFIG.format(
        ckpt=json.dumps(str(ckpt)), kwargs=json.dumps(args["backbone"]["kwargs"]),
        root=tmp_path / "digits"))
    (tmp_path / "driver.py").write_text(DRIVER)
    calls_file = tmp_path / "calls.json"
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(calls_file), str(script),
         "--config-path", str(configs), "--config-name", "digits_linear",
         "+limit_train_batches=1", "+limit_val_batches=1", "+enable_progress_bar=false",
         "+enable_model_summary=false"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**ENV, "PYTHONPATH": os.pathsep.join([str(ROOT), ENV.get("PYTHONPATH", "")])})
    assert proc.returncode == 0, proc.stderr[-4000:]
    calls = [c for c in json.loads(calls_file.read_text()) if c["module"] == "ConvNet"]
    assert len(calls) == 1, calls
    call = calls[0]
    assert call["missing"] == [] and call["unexpected"] == []
    assert call["given"] == call["own"] and call["given"]
