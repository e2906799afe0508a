"""Defaults and validation of a pretraining config, run before any data is read or model built.

The keys are solo-learn's (``solo/args/pretrain.py``) plus the additive ones of DESIGN section 4
(``host``, ``data.long_tail``, ``method_kwargs.filter``, ...). Every check raises ValueError
naming the key and what would be valid.
"""

from __future__ import annotations

import math
from typing import Any

import omegaconf
import torch
from omegaconf import OmegaConf

from solo_multiview.config.common import check_choice, select
from solo_multiview.data.augmentations import check_augmentation_list
from solo_multiview.data.augmentations import count_crops as count_augmentation_crops
from solo_multiview.hosts import HOSTS, resolve_host_name

DATASETS = ("cifar10", "cifar100", "image_list", "digits")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10}
DATA_FORMATS = ("image_folder", "dali")
DALI_DEVICES = ("auto", "cpu", "gpu")
LONG_TAIL_PROFILES = ("exp", "step", "pareto", "none")
LR_SCALING = ("linear", "none")
NONFINITE_POLICIES = ("stop", "skip")
BAD_IMAGE_POLICIES = ("error", "skip")


def add_defaults(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
    """Fills every optional key with solo-learn's default (or ours for the new keys)."""
    OmegaConf.set_struct(cfg, False)
    cfg.name = select(cfg, "name", cfg.get("method", "run"))
    cfg.host = select(cfg, "host", "auto")
    cfg.seed = select(cfg, "seed", 5)
    cfg.resume_from_checkpoint = select(cfg, "resume_from_checkpoint", None)
    cfg.nonfinite_loss = select(cfg, "nonfinite_loss", "stop")

    cfg.checkpoint = select(cfg, "checkpoint", {})
    cfg.checkpoint.enabled = select(cfg, "checkpoint.enabled", True)
    cfg.checkpoint.dir = select(cfg, "checkpoint.dir", "trained_models")
    cfg.checkpoint.frequency = select(cfg, "checkpoint.frequency", 1)
    cfg.checkpoint.keep_prev = select(cfg, "checkpoint.keep_prev", False)
    cfg.auto_resume = select(cfg, "auto_resume", {})
    cfg.auto_resume.enabled = select(cfg, "auto_resume.enabled", False)
    cfg.auto_resume.max_hours = select(cfg, "auto_resume.max_hours", 36)
    cfg.wandb = select(cfg, "wandb", {})
    cfg.wandb.enabled = select(cfg, "wandb.enabled", False)
    cfg.wandb.entity = select(cfg, "wandb.entity", None)
    cfg.wandb.project = select(cfg, "wandb.project", "solo-multiview")
    cfg.wandb.offline = select(cfg, "wandb.offline", False)
    cfg.dali = select(cfg, "dali", {})
    cfg.dali.device = select(cfg, "dali.device", "auto")
    cfg.dali.num_threads = select(cfg, "dali.num_threads", None)  # None: data.num_workers
    cfg.dali.pipelines = select(cfg, "dali.pipelines", None)  # None: one per thread on CPU
    cfg.dali.prefetch_queue_depth = select(cfg, "dali.prefetch_queue_depth", 2)

    cfg.data.train_path = select(cfg, "data.train_path", None)
    cfg.data.val_path = select(cfg, "data.val_path", None)
    cfg.data.val_split_file = select(cfg, "data.val_split_file", None)
    cfg.data.format = select(cfg, "data.format", "image_folder")
    cfg.data.num_workers = select(cfg, "data.num_workers", 4)
    cfg.data.no_labels = select(cfg, "data.no_labels", False)
    cfg.data.fraction = select(cfg, "data.fraction", -1)
    cfg.data.bad_images = select(cfg, "data.bad_images", "error")
    # A config without data.long_tail keeps the dataset as it is (CIFAR balanced, as in
    # solo-learn; digits is shipped long-tailed); a node that names only some keys gets the
    # CIFAR-LT convention (exp, ratio 100) for the rest.
    dataset = cfg.data.get("dataset")
    absent = select(cfg, "data.long_tail") is None
    if dataset == "digits":
        profile, ratio = "exp", 10
    elif absent or dataset == "image_list":
        profile, ratio = "none", 1
    else:
        profile, ratio = "exp", 100
    cfg.data.long_tail = select(cfg, "data.long_tail", {})
    lt = cfg.data.long_tail
    lt.profile = select(cfg, "data.long_tail.profile", profile)
    lt.imbalance_ratio = select(cfg, "data.long_tail.imbalance_ratio", ratio)
    lt.seed = select(cfg, "data.long_tail.seed", 0)
    lt.class_order = select(cfg, "data.long_tail.class_order", "natural")
    lt.index_file = select(cfg, "data.long_tail.index_file", None)
    lt.split_file = select(cfg, "data.long_tail.split_file", None)
    lt.n_max = select(cfg, "data.long_tail.n_max", None)

    cfg.optimizer.kwargs = select(cfg, "optimizer.kwargs", {})
    cfg.optimizer.lr_scaling = select(cfg, "optimizer.lr_scaling", "linear")
    cfg.optimizer.classifier_lr = select(cfg, "optimizer.classifier_lr", 0.1)
    cfg.scheduler = select(cfg, "scheduler", {"name": "warmup_cosine"})

    # Lightning trainer keys (solo-learn passes every key Trainer accepts)
    cfg.accelerator = select(cfg, "accelerator", "auto")
    cfg.devices = select(cfg, "devices", 1)
    cfg.num_nodes = select(cfg, "num_nodes", 1)
    cfg.strategy = select(cfg, "strategy", "auto")
    cfg.precision = select(cfg, "precision", "32-true")
    cfg.sync_batchnorm = select(cfg, "sync_batchnorm", False)
    return cfg


def count_devices(devices: Any, accelerator: str) -> int:
    """How many devices Lightning will use for ``devices`` (list, int, -1 or "auto")."""
    if isinstance(devices, (list, tuple, omegaconf.ListConfig)):
        return len(devices)
    gpus = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 0
    if devices in ("auto", -1, "-1"):
        return max(1, gpus)
    return int(devices)


def count_crops(cfg: omegaconf.DictConfig) -> None:
    """Sets data.num_large_crops / num_small_crops: large crops share the first augmentation
    entry's crop size (solo-learn's rule) and come first."""
    augmentations = select(cfg, "augmentations")
    if not augmentations:
        raise ValueError("augmentations: missing; expected a list of augmentation dicts, large "
                         "crops first (see scripts/pretrain/augmentations/)")
    check_augmentation_list(augmentations)
    cfg.data.num_large_crops, cfg.data.num_small_crops = count_augmentation_crops(augmentations)


def check_data(cfg: omegaconf.DictConfig) -> None:
    data = cfg.data
    check_choice(cfg, "data.dataset", DATASETS)
    check_choice(cfg, "data.format", DATA_FORMATS)
    if data.dataset in ("cifar10", "cifar100", "image_list") and not data.train_path:
        raise ValueError(
            f"data.train_path: missing; {data.dataset} needs a folder "
            + ("(CIFAR is downloaded there when absent)" if data.dataset != "image_list"
               else "(the image root that the split list's paths are relative to)")
        )
    lt = data.long_tail
    check_choice(cfg, "data.long_tail.profile", LONG_TAIL_PROFILES)
    ratio = lt.imbalance_ratio
    if not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio < 1:
        raise ValueError(f"data.long_tail.imbalance_ratio: got {ratio!r}; expected a number >= 1 "
                         "(n_max / n_min, e.g. 100)")
    if data.dataset == "image_list" and not lt.split_file:
        raise ValueError("data.long_tail.split_file: missing; image_list needs a split list "
                         "('relative/path label' per line, the ImageNet-LT format)")
    if data.dataset in NUM_CLASSES:
        data.num_classes = NUM_CLASSES[data.dataset]


def check_dali(cfg: omegaconf.DictConfig) -> None:
    """``dali.*`` (used with ``data.format: dali``)."""
    check_choice(cfg, "dali.device", DALI_DEVICES)
    for key in ("num_threads", "pipelines", "prefetch_queue_depth"):
        value = cfg.dali[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"dali.{key}: got {value!r}; expected an int >= 1 or null")


def check_reliability(cfg: omegaconf.DictConfig) -> None:
    """``nonfinite_loss``, ``data.bad_images`` and ``auto_resume`` (README: reliability)."""
    check_choice(cfg, "nonfinite_loss", NONFINITE_POLICIES)
    check_choice(cfg, "data.bad_images", BAD_IMAGE_POLICIES)
    enabled = cfg.auto_resume.enabled
    if not isinstance(enabled, bool):
        raise ValueError(f"auto_resume.enabled: got {enabled!r}; expected true or false")
    hours = cfg.auto_resume.max_hours
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not hours > 0:
        raise ValueError(f"auto_resume.max_hours: got {hours!r}; expected a number of hours > 0 "
                         "(checkpoints older than this are not resumed)")
    resume = cfg.resume_from_checkpoint
    if resume is not None and not isinstance(resume, str):
        raise ValueError(f"resume_from_checkpoint: got {resume!r}; expected the path of a .ckpt "
                         "file or null")


def scale_learning_rates(cfg: omegaconf.DictConfig) -> None:
    """solo-learn's linear scaling: lr * (batch_size * devices * nodes) / 256."""
    check_choice(cfg, "optimizer.lr_scaling", LR_SCALING)
    if cfg.optimizer.lr_scaling == "none" or "lr_scale_factor" in cfg.optimizer:
        return  # not scaled, or already scaled by an earlier parse of this config
    total = cfg.optimizer.batch_size * count_devices(cfg.devices, cfg.accelerator) * cfg.num_nodes
    cfg.optimizer.lr_scale_factor = total / 256
    cfg.optimizer.lr = cfg.optimizer.lr * total / 256
    cfg.optimizer.classifier_lr = cfg.optimizer.classifier_lr * total / 256


def add_optimizer_kwargs(cfg: omegaconf.DictConfig) -> None:
    kwargs = cfg.optimizer.kwargs
    if cfg.optimizer.name in ("sgd", "lars"):
        kwargs.momentum = select(cfg, "optimizer.kwargs.momentum", 0.9)
    if cfg.optimizer.name == "lars":
        kwargs.eta = select(cfg, "optimizer.kwargs.eta", 1e-3)
        kwargs.clip_lr = select(cfg, "optimizer.kwargs.clip_lr", False)
        kwargs.exclude_bias_n_norm = select(cfg, "optimizer.kwargs.exclude_bias_n_norm", False)
    if cfg.optimizer.name == "adamw":
        kwargs.betas = select(cfg, "optimizer.kwargs.betas", [0.9, 0.999])


def parse_pretrain_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
    """Resolved, validated config. Raises ValueError before any work when a key is invalid."""
    from solo_multiview.hosts.optim import OPTIMIZERS, SCHEDULERS
    from solo_multiview.methods import METHODS, method_class

    cfg = add_defaults(cfg)
    check_choice(cfg, "method", tuple(sorted(METHODS)))
    check_choice(cfg, "host", HOSTS)
    cfg.host = resolve_host_name(cfg.host)
    for key in ("backbone.name", "optimizer.name", "optimizer.batch_size", "optimizer.lr",
                "optimizer.weight_decay", "max_epochs"):
        if select(cfg, key) is None:
            raise ValueError(f"{key}: missing")
    check_choice(cfg, "optimizer.name", OPTIMIZERS)
    check_choice(cfg, "scheduler.name", SCHEDULERS)
    from solo_multiview.hosts.backbones import BACKBONES

    check_choice(cfg, "backbone.name", tuple(BACKBONES))
    count_crops(cfg)
    check_data(cfg)
    check_reliability(cfg)
    check_dali(cfg)
    add_optimizer_kwargs(cfg)
    scale_learning_rates(cfg)
    # the method's own defaults and checks, on a copy, so they fail now rather than at build
    probe = OmegaConf.create(OmegaConf.to_container(cfg))
    OmegaConf.set_struct(probe, False)
    probe.data.num_classes = select(cfg, "data.num_classes", 1)
    method_class(cfg.method, cfg.host).add_and_assert_specific_cfg(probe)
    return cfg
