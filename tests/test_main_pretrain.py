"""main_pretrain.py as a user runs it: a subprocess on the quickstart config."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from solo_multiview.hosts.backbones import build_backbone
from tests.helpers import ROOT


@pytest.mark.slow
def test_quickstart_writes_a_loadable_checkpoint(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main_pretrain.py"), "--config-name", "quickstart_digits",
         "max_epochs=1", "+limit_train_batches=3", "+limit_val_batches=2", "host=builtin",
         "+enable_progress_bar=false", f"checkpoint.dir={tmp_path / 'models'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt_line = re.search(r"^checkpoint: (.+\.ckpt)$", proc.stdout, re.M)
    assert ckpt_line, proc.stdout
    assert re.search(r"^val_acc1: \d+\.\d+$", proc.stdout, re.M), proc.stdout
    ckpt = tmp_path / ckpt_line.group(1)
    assert ckpt.is_file()

    args = json.loads((ckpt.parent / "args.json").read_text())
    assert args["method"] == "mv_simclr" and args["data"]["num_large_crops"] == 4
    assert args["data"]["num_classes"] == 10
    assert (ckpt.parent / "metrics.csv").is_file()

    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    weights = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    fresh = build_backbone(args["backbone"]["name"], args["data"]["dataset"],
                           args["backbone"]["kwargs"])
    missing, unexpected = fresh.load_state_dict(weights, strict=True)
    assert not missing and not unexpected
    assert torch.equal(fresh.state_dict()["features.0.weight"], weights["features.0.weight"])
