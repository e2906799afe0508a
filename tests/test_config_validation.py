"""Every bad config fails before training, with a message naming the key and what is allowed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from solo_multiview.training.pretrain import prepare_pretrain
from tests.helpers import ROOT, tiny_cfg

BAD_CONFIGS = [
    (["method=simclr_v9"], "method: unknown value 'simclr_v9'; choose one of"),
    (["host=cloud"], "host: unknown value 'cloud'; choose one of ['auto', 'solo', 'builtin']"),
    (["data.dataset=mnist"], "data.dataset: unknown value 'mnist'; choose one of"),
    (["method_kwargs.num_views=1"], "needs at least 2 large crops (K >= 2), got K = 1"),
    (["data.long_tail.imbalance_ratio=0.5"], "data.long_tail.imbalance_ratio: got 0.5; expected"),
    (["data.long_tail.profile=zipf"], "data.long_tail.profile: unknown value 'zipf'"),
    (["data.dataset=cifar10"], "data.train_path: missing"),
    (["data.dataset=image_list", "+data.train_path=/tmp"], "data.long_tail.split_file: missing"),
    (["+method_kwargs.filter.low=0.5", "+method_kwargs.filter.high=0.2"],
     "method_kwargs.filter.low and method_kwargs.filter.high must satisfy 0 <= low < high <= 1"),
    (["+method_kwargs.filter.high=1.5"], "must satisfy 0 <= low < high <= 1; got low=0.1"),
    (["+method_kwargs.filter.mode=wide"],
     # off is spelled one way (filter.enabled: false): "none" is no longer a mode
     "method_kwargs.filter.mode: unknown value 'wide'; choose one of ['band', 'low_only']"),
    (["method_kwargs.temperature=0"], "method_kwargs.temperature: got 0"),
    (["method_kwargs.temperature=abc"], "method_kwargs.temperature: got 'abc'; expected a number"),
    (["method_kwargs.proj_output_dim=16.5"], "method_kwargs.proj_output_dim: got 16.5"),
    (["optimizer.name=rmsprop"], "optimizer.name: unknown value 'rmsprop'"),
    (["backbone.name=vgg"], "backbone.name: unknown value 'vgg'"),
    (["optimizer.batch_size=4096"], "optimizer.batch_size: 4096 is larger than the training set"),
]


@pytest.mark.parametrize("overrides,message", BAD_CONFIGS)
def test_bad_config_fails_before_training(tmp_path, overrides, message):
    cfg = tiny_cfg(tmp_path, overrides=overrides)
    with pytest.raises(ValueError) as error:
        prepare_pretrain(cfg)
    assert message in str(error.value)
    assert not (tmp_path / "trained_models").exists(), "nothing may be written on bad input"


def test_solo_host_without_solo_is_a_clear_error(tmp_path, monkeypatch):
    import solo_multiview.hosts as hosts

    monkeypatch.setattr(hosts, "solo_available", lambda: False)
    with pytest.raises(ValueError, match="host: 'solo' needs solo-learn"):
        prepare_pretrain(tiny_cfg(tmp_path, overrides=["host=solo"]))


@pytest.mark.slow
def test_main_pretrain_reports_bad_config_and_exits(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main_pretrain.py"), "--config-name", "quickstart_digits",
         "method_kwargs.num_views=1", f"checkpoint.dir={tmp_path / 'out'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 2
    assert "error: augmentations[*].num_crops: mv_simclr needs at least 2 large crops" \
        in proc.stderr
    assert not (tmp_path / "out").exists()
