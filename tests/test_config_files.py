"""Every shipped pretraining config composes and passes validation (no data is read)."""

from __future__ import annotations

import pytest

from solo_multiview.config.pretrain import parse_pretrain_cfg
from solo_multiview.training.presets import config_names
from tests.helpers import compose_cfg

CONFIGS = config_names()


def test_the_documented_configs_exist():
    for name in ("mv_simclr_k2_cifar10lt", "mv_simclr_k4_cifar10lt", "mv_simclr_k2_cifar100lt",
                 "mv_simclr_k4_cifar100lt", "quickstart_digits", "mttv_cifar10lt",
                 "mttv_cifar100lt", "mttv_k2_cifar10lt", "mttv_k4_cifar10lt"):
        assert name in CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_valid(name):
    cfg = parse_pretrain_cfg(compose_cfg(name, ["host=builtin"]))
    assert cfg.method and cfg.data.dataset
    if cfg.method != "mttv":
        assert cfg.data.num_large_crops == cfg.method_kwargs.num_views
    if "cifar100" in name:
        assert cfg.data.dataset == "cifar100" and cfg.data.num_classes == 100
    elif "cifar10" in name:
        assert cfg.data.dataset == "cifar10" and cfg.data.num_classes == 10
    if "lt" in name.split("_")[-1] and cfg.data.dataset != "image_list":
        assert cfg.data.long_tail.imbalance_ratio == 100  # ImageNet-LT: the list is the tail
    k = next((int(p[1:]) for p in name.split("_") if p[0] == "k" and p[1:].isdigit()), None)
    if k is not None:
        views = cfg.method_kwargs.num_views
        assert views == k
