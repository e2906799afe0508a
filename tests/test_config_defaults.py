"""Defaults filled by the pretraining config parser."""

from __future__ import annotations

import pytest

from solo_multiview.config.pretrain import parse_pretrain_cfg
from tests.helpers import compose_cfg

CIFAR = ["data.dataset=cifar10", "+data.train_path=/tmp/cifar", "host=builtin"]


def test_no_long_tail_node_keeps_cifar_balanced():
    cfg = compose_cfg("quickstart_digits", CIFAR)
    del cfg.data["long_tail"]
    cfg = parse_pretrain_cfg(cfg)
    assert cfg.data.long_tail.profile == "none"


def test_a_partial_long_tail_node_is_cifar_lt():
    cfg = compose_cfg("quickstart_digits", CIFAR)
    cfg.data.long_tail = {"imbalance_ratio": 50}
    cfg = parse_pretrain_cfg(cfg)
    assert cfg.data.long_tail.profile == "exp" and cfg.data.long_tail.imbalance_ratio == 50
    cfg = compose_cfg("quickstart_digits", CIFAR)
    cfg.data.long_tail = {"seed": 3}
    lt = parse_pretrain_cfg(cfg).data.long_tail
    assert (lt.profile, lt.imbalance_ratio, lt.seed) == ("exp", 100, 3)


def test_digits_is_long_tailed_by_default():
    cfg = compose_cfg("quickstart_digits", ["host=builtin"])
    del cfg.data["long_tail"]
    lt = parse_pretrain_cfg(cfg).data.long_tail
    assert (lt.profile, lt.imbalance_ratio) == ("exp", 10)


def test_parsing_twice_scales_the_learning_rate_once():
    cfg = compose_cfg("quickstart_digits", ["host=builtin", "optimizer.batch_size=128"])
    lr = cfg.optimizer.lr
    cfg = parse_pretrain_cfg(cfg)
    assert cfg.optimizer.lr == pytest.approx(lr * 128 / 256)
    assert parse_pretrain_cfg(cfg).optimizer.lr == pytest.approx(lr * 128 / 256)
