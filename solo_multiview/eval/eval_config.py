"""Defaults and validation of an evaluation config (``main_linear.py``, ``main_knn.py``), run
before any checkpoint or data is read.

Keys shared by both evaluations (solo-learn's names where solo-learn has one)::

    pretrained_feature_extractor   required: a .ckpt file or a pretraining run folder
    pretrained_args                args.json of the checkpoint (default: beside the checkpoint)
    pretrain_method                accepted for solo-learn configs, informational only
    name                           free text, stored in results.json
    backbone.name                  checked against args.json when set
    data.dataset                   checked against args.json when set (else args.json's)
    data.train_path, data.val_path, data.val_split_file     where the data lives here
    data.balanced_split_file       image_list: a balanced train list for train_set=balanced
    data.long_tail                 overrides args.json's data.long_tail key by key
    data.crop_size, data.resize    evaluation crop (default: the pretraining crop) and the
                                   short side it is centre-cropped from (default: crop_size)
    data.batch_size, data.num_workers                      feature extraction loader
    train_set                      balanced | longtail | N (images per class)
    seed, device                   device: auto | cpu | cuda | cuda:<i> | mps
    results.dir, results.name, results.plot, results.cache_features

Linear only: ``probe.mode`` (features | augmented), ``probe.standardize``,
``probe.balanced_loss``, ``probe.augmentation.{crop, padding, min_scale, horizontal_flip}``,
``optimizer.{name, batch_size, lr, weight_decay, momentum, nesterov}``, ``max_epochs``.
kNN only: ``knn.k``, ``knn.temperature``.

Any other key is an error naming it and the keys allowed where it stands.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Union

import omegaconf
import torch
from omegaconf import OmegaConf

from solo_multiview.config.common import check_choice, select
from solo_multiview.data.datasets import SUPPORTED_DATASETS

from .linear import OPTIMIZERS

KINDS = ("linear", "knn")
TRAIN_SETS = ("balanced", "longtail")
PROBE_MODES = ("features", "augmented")
CROP_MODES = ("pad", "resized")
#: below this kNN temperature exp(1 / T) overflows float32 for a cosine similarity of 1
MIN_KNN_TEMPERATURE = 1.0 / 88.0

_FREE = object()  # a node whose content is validated elsewhere (data.long_tail)

_COMMON: Dict[str, Any] = {
    "name": None,
    "pretrained_feature_extractor": None,
    "pretrained_args": None,
    "pretrain_method": None,
    "backbone": {"name": None},
    "data": {
        "dataset": None, "train_path": None, "val_path": None, "val_split_file": None,
        "balanced_split_file": None, "long_tail": _FREE, "crop_size": None, "resize": None,
        "batch_size": None, "num_workers": None,
    },
    "train_set": None,
    "seed": None,
    "device": None,
    "results": {"dir": None, "name": None, "plot": None, "cache_features": None},
}
_LINEAR: Dict[str, Any] = {
    "probe": {
        "mode": None, "standardize": None, "balanced_loss": None,
        "augmentation": {"crop": None, "padding": None, "min_scale": None,
                         "horizontal_flip": None},
    },
    "optimizer": {"name": None, "batch_size": None, "lr": None, "weight_decay": None,
                  "momentum": None, "nesterov": None},
    "max_epochs": None,
}
_KNN: Dict[str, Any] = {"knn": {"k": None, "temperature": None}}

DEFAULTS: Dict[str, Dict[str, Any]] = {
    "common": {
        "name": None, "pretrained_args": None, "pretrain_method": None, "backbone.name": None,
        "data.dataset": None, "data.train_path": None, "data.val_path": None,
        "data.val_split_file": None, "data.balanced_split_file": None, "data.long_tail": None,
        "data.crop_size": None, "data.resize": None, "data.batch_size": 256,
        "data.num_workers": 4, "train_set": "balanced", "seed": 5, "device": "auto",
        "results.dir": None, "results.name": None, "results.plot": True,
        "results.cache_features": True,
    },
    "linear": {
        "probe.mode": "features", "probe.standardize": True, "probe.balanced_loss": False,
        "probe.augmentation.crop": "pad", "probe.augmentation.padding": 4,
        "probe.augmentation.min_scale": 0.08, "probe.augmentation.horizontal_flip": 0.5,
        "optimizer.name": "sgd", "optimizer.batch_size": 256, "optimizer.lr": 0.1,
        "optimizer.weight_decay": 0.0, "optimizer.momentum": 0.9, "optimizer.nesterov": False,
        "max_epochs": 100,
    },
    "knn": {"knn.k": 200, "knn.temperature": 0.1},
}


def schema(kind: str) -> Dict[str, Any]:
    """Allowed keys of a ``kind`` (``linear`` | ``knn``) config as a nested dict."""
    if kind not in KINDS:
        raise ValueError(f"evaluation kind: unknown {kind!r}; choose one of {list(KINDS)}")
    return {**_COMMON, **(_LINEAR if kind == "linear" else _KNN)}


def check_unknown_keys(cfg: Mapping[str, Any], allowed: Mapping[str, Any], kind: str,
                       prefix: str = "") -> None:
    """ValueError naming the first key of ``cfg`` that ``allowed`` does not list."""
    for key in cfg:
        path = f"{prefix}{key}"
        if key not in allowed:
            where = f"under {prefix[:-1]}" if prefix else "at the top level"
            raise ValueError(f"{path}: unknown key for main_{kind}.py; allowed {where}: "
                             f"{sorted(allowed)}")
        sub = allowed[key]
        if isinstance(sub, dict):
            value = cfg[key]
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ValueError(f"{path}: expected a mapping with keys {sorted(sub)}, got "
                                 f"{value!r}")
            check_unknown_keys(value, sub, kind, prefix=f"{path}.")
        elif sub is _FREE and cfg[key] is not None and not isinstance(cfg[key], Mapping):
            raise ValueError(f"{path}: expected a mapping or null, got {cfg[key]!r}")


def parse_train_set(value: Any, key: str = "train_set") -> Union[str, int]:
    """``"balanced"``, ``"longtail"`` or a positive int (images per class; ``"10"`` is read as
    10)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"{key}: {value} images per class; must be >= 1")
        return value
    if value in TRAIN_SETS:
        return str(value)
    raise ValueError(f"{key}: unknown value {value!r}; choose one of {list(TRAIN_SETS)} or a "
                     f"number of images per class (int >= 1)")


def resolve_device(value: Any, key: str = "device") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; otherwise the named device, which must
    exist here."""
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(value))
    except RuntimeError as err:
        raise ValueError(f"{key}: {value!r} is not a device; use auto, cpu, cuda, cuda:<index> "
                         f"or mps") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{key}: {value!r} requested but CUDA is not available here; use "
                             f"device=cpu or device=auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{key}: {value!r} but only {torch.cuda.device_count()} CUDA "
                             f"device(s) exist")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{key}: 'mps' requested but it is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{key}: unsupported device type {device.type!r}; use auto, cpu, cuda "
                         f"or mps")
    return device


def _int(cfg: omegaconf.DictConfig, key: str, low: int, optional: bool = False) -> None:
    value = select(cfg, key)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{key}: expected an int >= {low}" + (" or null" if optional else "")
                         + f", got {value!r}")


def _float(cfg: omegaconf.DictConfig, key: str, low: float, high: float = math.inf,
           low_open: bool = False, high_open: bool = False) -> None:
    value = select(cfg, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and \
             (value < high if high_open else value <= high)
    if not ok:
        if math.isinf(high):
            wanted = f"{'>' if low_open else '>='} {low:g}"
        else:
            lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
            wanted = f"in {lo}{low:g}, {high:g}{hi}"
        raise ValueError(f"{key}: expected a number {wanted}, got {value!r}")


def _bool(cfg: omegaconf.DictConfig, key: str) -> None:
    value = select(cfg, key)
    if not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false, got {value!r}")


def _optional_str(cfg: omegaconf.DictConfig, key: str) -> None:
    value = select(cfg, key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key}: expected a string (a path or name) or null, got {value!r}")


def add_defaults(cfg: omegaconf.DictConfig, kind: str) -> omegaconf.DictConfig:
    """Fills every missing (or null) optional key of a ``kind`` config with its default."""
    OmegaConf.set_struct(cfg, False)
    for table in ("common", kind):
        for key, default in DEFAULTS[table].items():
            if select(cfg, key) is None:
                OmegaConf.update(cfg, key, default, force_add=True)
    if select(cfg, "name") is None:
        cfg.name = kind
    return cfg


def parse_eval_cfg(cfg: omegaconf.DictConfig, kind: str) -> omegaconf.DictConfig:
    """The validated config of a ``kind`` (``linear`` | ``knn``) evaluation, defaults filled.

    Raises ValueError naming the key (and what is allowed) for an unknown key, a missing
    ``pretrained_feature_extractor`` or an invalid value. ``train_set`` is normalised to
    ``"balanced"``, ``"longtail"`` or an int; nothing is read from disk."""
    allowed = schema(kind)
    if OmegaConf.is_missing(cfg, "pretrained_feature_extractor") or \
            select(cfg, "pretrained_feature_extractor") in (None, ""):
        raise ValueError("pretrained_feature_extractor: missing; give the pretrained checkpoint "
                         "(a .ckpt file or the pretraining run folder holding it and args.json), "
                         "e.g. pretrained_feature_extractor=trained_models/mv_simclr/<version>")
    container = OmegaConf.to_container(cfg, resolve=True)
    check_unknown_keys(container, allowed, kind)
    cfg = add_defaults(cfg, kind)
    _optional_str(cfg, "pretrained_feature_extractor")
    for key in ("pretrained_args", "backbone.name", "data.train_path", "data.val_path",
                "data.val_split_file", "data.balanced_split_file", "results.dir",
                "results.name"):
        _optional_str(cfg, key)
    if select(cfg, "data.dataset") is not None:
        check_choice(cfg, "data.dataset", SUPPORTED_DATASETS)
    name = select(cfg, "results.name")
    if name is not None and (not name or "/" in name or "\\" in name or name in (".", "..")):
        raise ValueError(f"results.name: {name!r} must be a plain folder name (no path "
                         f"separators); the results go to results.dir/results.name")
    cfg.train_set = parse_train_set(select(cfg, "train_set"))
    resolve_device(select(cfg, "device"))
    _int(cfg, "seed", 0)
    _int(cfg, "data.batch_size", 1)
    _int(cfg, "data.num_workers", 0)
    _int(cfg, "data.crop_size", 1, optional=True)
    _int(cfg, "data.resize", 1, optional=True)
    crop, resize = select(cfg, "data.crop_size"), select(cfg, "data.resize")
    if crop is not None and resize is not None and resize < crop:
        raise ValueError(f"data.resize: {resize} is smaller than data.crop_size {crop}; the "
                         f"centre crop is taken from an image whose short side is data.resize")
    _bool(cfg, "results.plot")
    _bool(cfg, "results.cache_features")
    if kind == "linear":
        _check_linear(cfg)
    else:
        _int(cfg, "knn.k", 1)
        _float(cfg, "knn.temperature", MIN_KNN_TEMPERATURE)
    return cfg


def _check_linear(cfg: omegaconf.DictConfig) -> None:
    check_choice(cfg, "probe.mode", PROBE_MODES)
    _bool(cfg, "probe.standardize")
    _bool(cfg, "probe.balanced_loss")
    check_choice(cfg, "probe.augmentation.crop", CROP_MODES)
    _int(cfg, "probe.augmentation.padding", 0)
    _float(cfg, "probe.augmentation.min_scale", 0.0, 1.0, low_open=True)
    _float(cfg, "probe.augmentation.horizontal_flip", 0.0, 1.0)
    check_choice(cfg, "optimizer.name", OPTIMIZERS)
    _int(cfg, "optimizer.batch_size", 1)
    _float(cfg, "optimizer.lr", 0.0, low_open=True)
    _float(cfg, "optimizer.weight_decay", 0.0)
    _float(cfg, "optimizer.momentum", 0.0, 1.0, high_open=True)
    _bool(cfg, "optimizer.nesterov")
    _int(cfg, "max_epochs", 1)


def train_set_label(train_set: Union[str, int]) -> str:
    """``balanced``, ``longtail`` or ``shots<N>`` (used in folder names)."""
    return f"shots{train_set}" if isinstance(train_set, int) else str(train_set)


def default_results_name(cfg: omegaconf.DictConfig, kind: str) -> str:
    """``linear-<train set>[-aug]`` or ``knn-<train set>-k<k>-t<T>``."""
    label = train_set_label(cfg.train_set)
    if kind == "linear":
        return f"linear-{label}" + ("-aug" if cfg.probe.mode == "augmented" else "")
    return f"knn-{label}-k{cfg.knn.k}-t{cfg.knn.temperature:g}"

