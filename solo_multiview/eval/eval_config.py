"""The declared config of the two evaluation entry points (``main_linear.py``, ``main_knn.py``),
checked before any checkpoint or data is read.

Every key is declared once, as a :func:`~solo_multiview.config.schema.setting` of a dataclass
beside the code that reads it: the probe's optimizer in ``linear.py``, its augmentation in
``augmented_probe.py``, the kNN's ``k`` and temperature in ``knn.py``, the keys both evaluations
share (checkpoint, data, probe set, device, results) here. :func:`schema_for` assembles the root
of an entry point; ``python main_linear.py --config-name X --keys`` lists it (type, default,
allowed values, help), as do the README's tables (``config/keys.py``).

:func:`parse_eval_cfg` checks a composed config against that root (unknown keys with "did you
mean", types, ranges, choices), then what a single key cannot say (``train_set``, ``device``,
``results.name``, ``data.resize`` against ``data.crop_size``, Nesterov without momentum), and
returns a read-only, typed DictConfig with every default filled.

``data.long_tail`` overrides the checkpoint's args.json ``data.long_tail`` key by key, so its
keys are the pretraining ones (each null by default: "take args.json's value"). A few keys of
solo-learn's own linear configs (``devices``, ``precision``, ``wandb`` ...) are accepted
without effect, so that such a config is not refused for its infrastructure keys;
``prepare_eval`` notes the ones that are set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import omegaconf
import torch
from omegaconf import OmegaConf

from solo_multiview.config.common import select
from solo_multiview.config.schema import (
    ConfigError,
    all_keys,
    assemble,
    describe,
    overrides_of,
    parse,
    section,
    setting,
)
from solo_multiview.data.datasets import SUPPORTED_DATASETS
from solo_multiview.data.longtail import LongTailConfig

from .augmented_probe import CROP_MODES, ProbeAugmentationConfig
from .knn import MIN_TEMPERATURE, KnnConfig
from .linear import LinearProbeConfig, ProbeOptimizerConfig

__all__ = ["CROP_MODES", "EVAL_PATH_KEYS", "EvalConfigError", "KINDS", "MIN_KNN_TEMPERATURE",
           "PROBE_MODES", "TRAIN_SETS", "default_results_name", "parse_eval_cfg",
           "parse_train_set", "resolve_device", "schema_for", "train_set_label"]

KINDS = ("linear", "knn")
TRAIN_SETS = ("balanced", "longtail")
PROBE_MODES = ("features", "augmented")
MIN_KNN_TEMPERATURE = MIN_TEMPERATURE
#: Keys whose values are file or folder paths: ``cli.quote_path_overrides`` quotes them on the
#: command line so that a path holding ``=`` (``...-ep=14.ckpt``) survives Hydra's grammar.
EVAL_PATH_KEYS = ("pretrained_feature_extractor", "pretrained_args", "data.train_path",
                  "data.val_path", "data.val_split_file", "data.balanced_split_file",
                  "data.long_tail.index_file", "data.long_tail.split_file", "results.dir")


class EvalConfigError(ConfigError):
    """A bad evaluation config: the message names the key, the value and what is valid."""


# ------------------------------------------------------------------------------------------
#: ``data.long_tail`` of an evaluation: the pretraining keys (declared by ``LongTailConfig``), each
#: null by default, a set key overriding args.json's value
LongTailOverrides = overrides_of(LongTailConfig, "LongTailOverrides")
# ------------------------------------------------------------------------------------------


@dataclass
class BackboneKeys:
    """``backbone``: only a consistency check; the architecture comes from args.json."""

    name: Optional[str] = setting(None, "when set, must equal args.json's backbone.name")


@dataclass
class EvalDataConfig:
    """``data``: where the evaluation images live here, how they are cropped and loaded; null
    paths take args.json's."""

    dataset: Optional[str] = setting(None, "when set, must equal args.json's data.dataset "
                                     "(null: args.json's)", choices=SUPPORTED_DATASETS)
    train_path: Optional[str] = setting(None, "train images root / CIFAR download folder "
                                        "(null: args.json's)")
    val_path: Optional[str] = setting(None, "test images root (null: args.json's)")
    val_split_file: Optional[str] = setting(None, "image_list: the test list (null: "
                                            "args.json's)")
    balanced_split_file: Optional[str] = setting(None, "image_list: a balanced train list "
                                                 "(same root), for train_set=balanced")
    long_tail: LongTailOverrides = section(  # type: ignore[valid-type]
        LongTailOverrides, "the long-tailed pretraining set (its class counts give "
        "Many/Medium/Few and the longtail probe set): each key set overrides args.json's")
    crop_size: Optional[int] = setting(None, "evaluation crop (null: the pretraining crop, "
                                       "args.json augmentations[0].crop_size)", minimum=1)
    resize: Optional[int] = setting(None, "short side before the centre crop (null: "
                                    "crop_size)", minimum=1)
    batch_size: int = setting(256, "feature-extraction batch size", minimum=1)
    num_workers: int = setting(4, "data-loader worker processes", minimum=0)
    format: Optional[str] = setting(None, "solo-learn's loader format", unused=True)


@dataclass
class ResultsConfig:
    """``results``: where the results folder goes and what it holds."""

    dir: Optional[str] = setting(None, "results root (null: <checkpoint folder>/eval); the "
                                 "feature cache is <dir>/feature_cache")
    name: Optional[str] = setting(None, "results folder under dir, a plain name (null: "
                                  "linear-<train set>[-aug] or knn-<train set>-k<k>-t<T>)")
    plot: bool = setting(True, "write per_class.png")
    cache_features: bool = setting(True, "cache features in <dir>/feature_cache, reused when "
                                   "checkpoint and images match")


@dataclass
class ProbeConfig:
    """``probe`` of main_linear.py: which probe is trained on what (``run_linear.py``)."""

    mode: str = setting("features", "features: cached unaugmented features (fast) | augmented: "
                        "frozen backbone on augmented images every epoch", choices=PROBE_MODES)
    standardize: bool = setting(LinearProbeConfig.standardize, "per-dimension mean/std of the "
                                "unaugmented training features")
    balanced_loss: bool = setting(LinearProbeConfig.balanced_loss, "class-balanced "
                                  "cross-entropy (weights N / (C n_c))")
    augmentation: ProbeAugmentationConfig = section(ProbeAugmentationConfig,
                                                    "probe.mode=augmented only")


@dataclass
class SoloCheckpointKeys:
    """solo-learn's ``checkpoint`` node (the probe saves no checkpoint here)."""

    enabled: Optional[bool] = setting(None, "solo-learn: save probe checkpoints", unused=True)
    dir: Optional[str] = setting(None, "solo-learn: checkpoint folder", unused=True)
    frequency: Optional[int] = setting(None, "solo-learn: epochs between checkpoints",
                                       unused=True)


@dataclass
class SoloAutoResumeKeys:
    """solo-learn's ``auto_resume`` node (an evaluation here is not resumed)."""

    enabled: Optional[bool] = setting(None, "solo-learn: resume an interrupted probe",
                                      unused=True)


@dataclass
class SoloWandbKeys:
    """solo-learn's ``wandb`` node (results go to results.json here)."""

    enabled: Optional[bool] = setting(None, "solo-learn: log to Weights & Biases", unused=True)
    entity: Optional[str] = setting(None, "solo-learn: W&B entity", unused=True)
    project: Optional[str] = setting(None, "solo-learn: W&B project", unused=True)
    offline: Optional[bool] = setting(None, "solo-learn: W&B offline mode", unused=True)


Part = Tuple[str, Any, Any]


def _head_parts() -> List[Part]:
    """The keys both evaluations start with (fresh fields on each call: a dataclass takes
    ownership of its Field objects)."""
    return [
        ("pretrained_feature_extractor", str, setting(
            help="the pretrained checkpoint: a .ckpt file or a pretraining run folder (its "
                 "newest .ckpt), with args.json beside it")),
        ("pretrained_args", Optional[str], setting(
            None, "args.json elsewhere (null: beside the checkpoint)")),
        ("name", Optional[str], setting(None, "free text stored in results.json (null: the "
                                              "evaluation kind, linear or knn)")),
        ("backbone", BackboneKeys, section(BackboneKeys)),
        ("train_set", Any, setting(
            "balanced", "probe training set / kNN bank: balanced | longtail | N (images per "
                        "class, an int >= 1, drawn with seed)")),
        ("seed", int, setting(5, "seed of the N-per-class draw, the probe's init and shuffling "
                                 "and the augmentations", minimum=0)),
        ("device", str, setting("auto", "auto (cuda when available) | cpu | cuda | cuda:<i> | "
                                        "mps")),
        ("data", EvalDataConfig, section(EvalDataConfig)),
        ("results", ResultsConfig, section(ResultsConfig)),
    ]


def _solo_learn_parts() -> List[Part]:
    """Keys of solo-learn's linear configs that do not bear on the numbers here: accepted
    without effect (``unused``) rather than refused."""
    return [
        ("pretrain_method", Optional[str], setting(None, "solo-learn: the pretraining method "
                                                         "(informational)", unused=True)),
        ("devices", Any, setting(None, "solo-learn: Lightning devices (here: device)",
                                 unused=True)),
        ("accelerator", Optional[str], setting(None, "solo-learn: Lightning accelerator "
                                                     "(here: device)", unused=True)),
        ("strategy", Optional[str], setting(None, "solo-learn: Lightning strategy",
                                            unused=True)),
        ("precision", Any, setting(None, "solo-learn: Lightning precision (the probe runs in "
                                         "float32)", unused=True)),
        ("sync_batchnorm", Optional[bool], setting(None, "solo-learn: sync BatchNorm (the "
                                                         "backbone is frozen)", unused=True)),
        ("checkpoint", SoloCheckpointKeys, section(SoloCheckpointKeys)),
        ("auto_resume", SoloAutoResumeKeys, section(SoloAutoResumeKeys)),
        ("wandb", SoloWandbKeys, section(SoloWandbKeys)),
    ]


def _linear_parts() -> List[Part]:
    return [
        ("probe", ProbeConfig, section(ProbeConfig)),
        ("optimizer", ProbeOptimizerConfig, section(ProbeOptimizerConfig)),
        ("max_epochs", int, setting(LinearProbeConfig.epochs, "passes of the probe over its "
                                                              "training set", minimum=1)),
    ]


def _knn_parts() -> List[Part]:
    return [("knn", KnnConfig, section(KnnConfig))]


LinearEvalConfig = assemble("LinearEvalConfig",
                            [*_head_parts(), *_linear_parts(), *_solo_learn_parts()])
KnnEvalConfig = assemble("KnnEvalConfig", [*_head_parts(), *_knn_parts(), *_solo_learn_parts()])
_SCHEMAS: Dict[str, type] = {"linear": LinearEvalConfig, "knn": KnnEvalConfig}


def schema_for(kind: str) -> type:
    """The root dataclass of ``main_<kind>.py`` (``kind``: ``linear`` | ``knn``)."""
    if kind not in _SCHEMAS:
        raise EvalConfigError(f"evaluation kind: unknown {kind!r}; choose one of {list(KINDS)}")
    return _SCHEMAS[kind]


# ------------------------------------------------------------------------------------------
# values a single key's declaration cannot check
def parse_train_set(value: Any, key: str = "train_set") -> Union[str, int]:
    """``"balanced"``, ``"longtail"`` or a positive int (images per class; ``"10"`` is read as
    10)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise EvalConfigError(f"{key}: {value} images per class; must be >= 1")
        return value
    if value in TRAIN_SETS:
        return str(value)
    raise EvalConfigError(f"{key}: unknown value {value!r}; choose one of {list(TRAIN_SETS)} "
                          f"or a number of images per class (int >= 1)")


def resolve_device(value: Any, key: str = "device") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; otherwise the named device, which must
    exist here."""
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(value))
    except RuntimeError as err:
        raise EvalConfigError(f"{key}: {value!r} is not a device; use auto, cpu, cuda, "
                              f"cuda:<index> or mps") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EvalConfigError(f"{key}: {value!r} requested but CUDA is not available here; "
                                  f"use device=cpu or device=auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise EvalConfigError(f"{key}: {value!r} but only {torch.cuda.device_count()} CUDA "
                                  f"device(s) exist")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise EvalConfigError(f"{key}: 'mps' requested but it is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise EvalConfigError(f"{key}: unsupported device type {device.type!r}; use auto, cpu, "
                              f"cuda or mps")
    return device


def _check_values(cfg: omegaconf.DictConfig, kind: str) -> None:
    """The checks that involve more than one key's declaration (module docstring)."""
    cfg.train_set = parse_train_set(cfg.train_set)
    resolve_device(cfg.device)
    name = cfg.results.name
    if name is not None and (not name or "/" in name or "\\" in name or name in (".", "..")):
        raise EvalConfigError(f"results.name: {name!r} must be a plain folder name (no path "
                              f"separators); the results go to results.dir/results.name")
    crop, resize = cfg.data.crop_size, cfg.data.resize
    if crop is not None and resize is not None and resize < crop:
        raise EvalConfigError(f"data.resize: {resize} is smaller than data.crop_size {crop}; the "
                              f"centre crop is taken from an image whose short side is "
                              f"data.resize")
    if kind == "linear" and cfg.optimizer.nesterov:
        # torch refuses these only when the optimizer is built, after feature extraction
        if cfg.optimizer.name != "sgd":
            raise EvalConfigError(f"optimizer.nesterov: true has no effect with optimizer.name="
                                  f"{cfg.optimizer.name}; it applies to sgd only")
        if cfg.optimizer.momentum == 0:
            raise EvalConfigError("optimizer.nesterov: true needs optimizer.momentum > 0")


# ------------------------------------------------------------------------------------------
# the messages of main_linear.py / main_knn.py
_TYPE_WORDS = {"int": "an int", "float": "a number", "bool": "true or false", "str": "a string",
               "any": "a value"}


def _user_value(container: Any, path: str) -> Tuple[bool, Any]:
    node = container
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _siblings(root: type, path: str) -> List[str]:
    parent = path.rpartition(".")[0]
    prefix = f"{parent}." if parent else ""
    return sorted(k[len(prefix):] for k in all_keys(root)
                  if k.startswith(prefix) and "." not in k[len(prefix):] and "[" not in k)


def _reworded(error: ConfigError, root: type, container: Any, kind: str) -> EvalConfigError:
    """The schema's error in the words main_linear.py / main_knn.py have always used (scripts
    and tests match them): ``key: unknown key for main_<kind>.py`` (with the schema's
    suggestion and the keys allowed there), ``key: unknown value v; choose one of [...]`` or
    ``key: expected an int >= 1, got v [help]``. The wording comes from the declaration
    (``describe``), so only the schema's leading ``key: `` and its ``did you mean`` tail are
    relied upon; anything else keeps the schema's message."""
    text = str(error)
    path, sep, _ = text.partition(": ")
    if not sep or "[" in path:
        return EvalConfigError(text)
    declared = set(all_keys(root))
    unknown = f"{path}: unknown key"
    if path not in declared and text.startswith(unknown):
        parent = path.rpartition(".")[0]
        where = f"under {parent}" if parent else "at the top level"
        return EvalConfigError(f"{unknown} for main_{kind}.py{text[len(unknown):]} (allowed "
                               f"{where}: {_siblings(root, path)})")
    info = next((i for i in describe(root) if i.key == path), None)
    found, value = _user_value(container, path)
    if info is None or not found:
        return EvalConfigError(text)
    nullable = info.type.endswith(" or null")
    base = info.type[:-len(" or null")] if nullable else info.type
    if info.allowed and not info.allowed.startswith((">", "<")):  # choices, not a range
        choices = info.allowed.split(" | ")
        # the schema's suggestion ends its message (the value itself may hold the same words)
        hint = next((h for h in (f"; did you mean {c!r}?" for c in choices) if text.endswith(h)),
                    "")
        return EvalConfigError(f"{path}: unknown value {value!r}; choose one of "
                               f"{choices}{' or null' if nullable else ''}{hint}")
    tail = f" [{info.help}]" if info.help else ""
    wanted = _TYPE_WORDS.get(base, base)
    if info.allowed:
        wanted += " " + info.allowed.replace(", ", " and ")
    return EvalConfigError(f"{path}: expected {wanted}{' or null' if nullable else ''}, got "
                           f"{value!r}{tail}")


def _missing_checkpoint(cfg: omegaconf.DictConfig) -> bool:
    return OmegaConf.is_missing(cfg, "pretrained_feature_extractor") or \
        select(cfg, "pretrained_feature_extractor") in (None, "")


def parse_eval_cfg(cfg: Union[omegaconf.DictConfig, Mapping[str, Any]],
                   kind: str) -> omegaconf.DictConfig:
    """The checked config of a ``kind`` (``linear`` | ``knn``) evaluation: typed by
    ``schema_for(kind)``, every default filled, ``train_set`` normalised to ``"balanced"``,
    ``"longtail"`` or an int, ``name`` defaulting to ``kind``; read-only.

    Raises :class:`EvalConfigError` (a ``ValueError``) naming the key, the value and what is
    allowed; nothing is read from disk."""
    root = schema_for(kind)
    if not isinstance(cfg, omegaconf.DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    if _missing_checkpoint(cfg):
        raise EvalConfigError(
            "pretrained_feature_extractor: missing; give the pretrained checkpoint (a .ckpt file "
            "or the pretraining run folder holding it and args.json), e.g. "
            "pretrained_feature_extractor=trained_models/mv_simclr/<version>")
    try:
        parsed = parse(root, cfg)
    except ConfigError as error:
        try:
            container = OmegaConf.to_container(cfg, resolve=True)
        except omegaconf.errors.OmegaConfBaseException:
            container = {}
        raise _reworded(error, root, container, kind) from None
    _check_values(parsed, kind)
    if parsed.name is None:
        parsed.name = kind
    OmegaConf.set_readonly(parsed, True)
    return parsed


def train_set_label(train_set: Union[str, int]) -> str:
    """``balanced``, ``longtail`` or ``shots<N>`` (used in folder names)."""
    return f"shots{train_set}" if isinstance(train_set, int) else str(train_set)


def default_results_name(cfg: omegaconf.DictConfig, kind: str) -> str:
    """``linear-<train set>[-aug]`` or ``knn-<train set>-k<k>-t<T>``."""
    label = train_set_label(cfg.train_set)
    if kind == "linear":
        return f"linear-{label}" + ("-aug" if cfg.probe.mode == "augmented" else "")
    return f"knn-{label}-k{cfg.knn.k}-t{cfg.knn.temperature:g}"
