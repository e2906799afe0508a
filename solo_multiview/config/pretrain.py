"""Parsing a pretraining config: the declared schema (``training/keys.py``), then the checks
that span several keys, then the derived keys. Runs before any data is read or model built.

Every error is a :class:`~solo_multiview.config.schema.ConfigError` naming the key, what it got
and what would be valid. The result has every key with its value; ``training/pretrain.py``
makes it read-only once the data has given ``data.num_classes``.
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any

import omegaconf
from omegaconf import OmegaConf

from solo_multiview.config.schema import ConfigError, parse, resolved, unused_settings
from solo_multiview.data.augmentations import check_augmentation_list, count_crops
from solo_multiview.data.datasets import NUM_CLASSES, long_tail_config
from solo_multiview.data.longtail import LongTailConfig
from solo_multiview.hosts import resolve_host_name
from solo_multiview.hosts.backbones import check_backbone_kwargs, check_backbone_stem, stem_settings
from solo_multiview.hosts.optim import optimizer_kwargs
from solo_multiview.training.devices import count_devices


def method_of(user: Any) -> type:
    """The class of the config's ``method`` (ConfigError with the closest name otherwise)."""
    from solo_multiview.methods import METHODS

    name = user.get("method") if hasattr(user, "get") else None
    if name not in METHODS:
        close = difflib.get_close_matches(str(name), list(METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        shown = "missing" if name is None else f"unknown value {name!r}"
        raise ConfigError(f"method: {shown}; choose one of {sorted(METHODS)}{hint}")
    return METHODS[name]


def check_data(cfg: omegaconf.DictConfig) -> None:
    data = cfg.data
    if data.dataset in ("cifar10", "cifar100", "image_list") and not data.train_path:
        raise ConfigError(
            f"data.train_path: missing; {data.dataset} needs a folder "
            + ("(CIFAR is downloaded there when absent)" if data.dataset != "image_list"
               else "(the image root that the split list's paths are relative to)")
        )
    if data.dataset == "image_list" and not (data.long_tail and data.long_tail.split_file):
        raise ConfigError("data.long_tail.split_file: missing; image_list needs a split list "
                          "('relative/path label' per line, the ImageNet-LT format)")
    if data.dataset in NUM_CLASSES:
        if data.num_classes is not None and data.num_classes != NUM_CLASSES[data.dataset]:
            raise ConfigError(f"data.num_classes: got {data.num_classes}, but {data.dataset} has "
                              f"{NUM_CLASSES[data.dataset]} classes")
        data.num_classes = NUM_CLASSES[data.dataset]
    data.long_tail = LongTailConfig(**long_tail_config(cfg))


def check_trainer(cfg: omegaconf.DictConfig) -> None:
    """Settings that would make the run do nothing."""
    if cfg.max_steps == 0:
        raise ConfigError("max_steps: got 0; expected -1 (max_epochs decides) or a number of "
                          "steps >= 1")
    limit = cfg.get("limit_train_batches")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                              or limit <= 0):
        raise ConfigError(f"limit_train_batches: got {limit!r}; expected a fraction in (0, 1] "
                          "or a number of batches >= 1 (0 trains nothing)")


def scale_learning_rates(cfg: omegaconf.DictConfig) -> None:
    """solo-learn's linear scaling: lr * (batch_size * devices * nodes) / 256."""
    if cfg.optimizer.lr_scaling == "none" or cfg.optimizer.lr_scale_factor is not None:
        return  # not scaled, or already scaled by an earlier parse of this config
    total = cfg.optimizer.batch_size * count_devices(cfg.devices, cfg.accelerator) * cfg.num_nodes
    cfg.optimizer.lr_scale_factor = total / 256
    cfg.optimizer.lr = cfg.optimizer.lr * total / 256
    cfg.optimizer.classifier_lr = cfg.optimizer.classifier_lr * total / 256


def parse_pretrain_cfg(cfg: Any) -> omegaconf.DictConfig:
    """Resolved, validated config (module docstring). Raises ConfigError before any work."""
    from solo_multiview.training.keys import pretrain_schema

    if isinstance(cfg, omegaconf.DictConfig) and OmegaConf.is_missing(cfg, "method"):
        raise ConfigError("method: missing")
    user = resolved(cfg)
    method = method_of(user)
    schema = pretrain_schema(method)
    cfg = parse(schema, user)

    cfg.name = cfg.name or cfg.method
    cfg.host = resolve_host_name(cfg.host)
    check_backbone_kwargs(cfg.backbone.name, cfg.backbone.kwargs)
    check_backbone_stem(cfg.backbone.name, *stem_settings(cfg.backbone))
    check_augmentation_list(cfg.augmentations)
    method.check_cfg(cfg)
    method.views(cfg)  # validates the view spec
    # derived keys; a config that states them (a saved args.json) must agree
    for key, value in zip(("num_large_crops", "num_small_crops"), count_crops(cfg.augmentations)):
        given = cfg.data[key]
        if given is not None and given != value:
            raise ConfigError(f"data.{key}: got {given}, but the augmentations give {value}; it "
                              "is derived from them: remove it")
        cfg.data[key] = value
    check_data(cfg)
    check_trainer(cfg)
    cfg.optimizer.kwargs = optimizer_kwargs(cfg.optimizer.name, cfg.optimizer.kwargs)
    scale_learning_rates(cfg)
    for key in unused_settings(schema, cfg):
        warnings.warn(f"{key}: a solo-learn key that has no effect here", stacklevel=2)
    return cfg
