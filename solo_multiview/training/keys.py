"""The pretraining schema: the runner's own keys, Lightning's trainer keys, and the assembly of
every owner's declarations into one root per method.

Owners (each key declared once, next to the code that reads it):

=====================  ==========================================================
``data.*``             ``data/datasets.py`` (``long_tail``: ``data/longtail.py``)
``augmentations[*]``   ``data/augmentations.py``
``dali.*``             ``data/dali/backend.py``
``batched.*``          ``data/batched/build.py``
``backbone.*``         ``hosts/backbones.py``
``optimizer.*``        ``hosts/optim.py`` (and ``scheduler.*``)
``host``, ``momentum``, ``knn_eval``, ``performance``: ``hosts/keys.py``
``nonfinite_loss``     ``hosts/guard.py``
``checkpoint.*``       ``training/checkpointing.py``; ``auto_resume.*``: ``training/resume.py``
``method_kwargs.*``    the method's ``Kwargs`` (``methods/<name>.py``)
run and trainer keys   here
=====================  ==========================================================
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import lightning

from solo_multiview.config.schema import assemble, section, setting
from solo_multiview.data.augmentations import AugmentationConfig
from solo_multiview.data.batched.build import BatchedConfig
from solo_multiview.data.dali.backend import DaliConfig
from solo_multiview.data.datasets import DataConfig
from solo_multiview.hosts.backbones import BackboneConfig
from solo_multiview.hosts.guard import NONFINITE_KEY
from solo_multiview.hosts.keys import HOST_KEY, KnnEvalConfig, PerformanceConfig
from solo_multiview.hosts.optim import OptimizerConfig, SchedulerConfig
from solo_multiview.training.checkpointing import CheckpointConfig
from solo_multiview.training.resume import AutoResumeConfig


@dataclass
class WandbConfig:
    """``wandb.*`` (solo-learn's keys); CSV logging when disabled."""

    enabled: bool = setting(False, "log to Weights & Biases (pip install '.[wandb]')")
    entity: Optional[str] = setting(None, "wandb entity")
    project: str = setting("solo-multiview", "wandb project")
    offline: bool = setting(False, "log offline")


def _run_keys() -> List[Tuple[str, Any, Any]]:
    return [
        ("name", Optional[str], setting(None, "run name (null: the method's name)")),
        ("method", str, setting(help="the method (methods/)")),
        HOST_KEY,
        ("seed", int, setting(5, "seed of the data order, augmentations and weights",
                              minimum=0)),
        ("resume_from_checkpoint", Optional[str], setting(
            None, "a .ckpt to resume (checked against the args.json beside it)")),
        NONFINITE_KEY,
        ("debug_augmentations", bool, setting(False, "solo-learn: save augmented images",
                                              unused=True)),
    ]


#: Trainer arguments declared with a type and range; the rest of ``lightning.Trainer``'s
#: arguments are accepted as they are and passed on (:func:`trainer_keys`).
_TYPED_TRAINER_KEYS: List[Tuple[str, Any, Any]] = [
    ("max_epochs", int, setting(help="training epochs", minimum=1)),
    ("max_steps", int, setting(-1, "stop after this many optimizer steps (-1: max_epochs "
                               "decides)", minimum=-1)),
    ("accelerator", str, setting("auto", "cpu | gpu | auto ...")),
    ("devices", Any, setting(1, "devices per node (int, list or auto)")),
    ("num_nodes", int, setting(1, "nodes", minimum=1)),
    ("strategy", Any, setting("auto", "auto | ddp | ...")),
    ("precision", Any, setting("32-true", "32-true | bf16-mixed | 16-mixed ...")),
    ("sync_batchnorm", bool, setting(False, "synchronise BatchNorm statistics across devices")),
    ("accumulate_grad_batches", int, setting(1, "batches per optimizer step", minimum=1)),
    ("log_every_n_steps", Optional[int], setting(None, "logging interval (null: Lightning's "
                                                 "50)", minimum=1)),
    ("gradient_clip_val", Optional[float], setting(None, "gradient clipping threshold",
                                                   minimum=0)),
    ("gradient_clip_algorithm", Optional[str], setting(None, "norm | value",
                                                       choices=("norm", "value"))),
    ("check_val_every_n_epoch", Optional[int], setting(1, "validation interval in epochs",
                                                       minimum=1)),
]
#: Trainer arguments the runner sets itself: refused in a config.
_RUNNER_OWNED = {"self", "logger", "callbacks", "enable_checkpointing", "plugins",
                 "default_root_dir", "model_registry"}


@functools.lru_cache(maxsize=1)
def trainer_keys() -> Tuple[Tuple[str, Any, Any], ...]:
    """The typed keys above plus every other ``lightning.Trainer`` argument (type any,
    default null = Lightning's default)."""
    typed = {name for name, _, _ in _TYPED_TRAINER_KEYS}
    rest = [(name, Any, setting(None, "lightning.Trainer argument (null: Lightning's "
                                "default)"))
            for name in inspect.signature(lightning.Trainer.__init__).parameters
            if name not in typed and name not in _RUNNER_OWNED]
    return tuple(_TYPED_TRAINER_KEYS + rest)


def _parts(kwargs_cls: Any, momentum_cls: Optional[type]) -> List[Tuple[str, Any, Any]]:
    parts = _run_keys() + [
        ("backbone", BackboneConfig, section(BackboneConfig)),
        ("method_kwargs", kwargs_cls, section(kwargs_cls) if kwargs_cls is not Any
         else setting({}, "the method's own keys")),
        ("data", DataConfig, section(DataConfig)),
        ("augmentations", List[AugmentationConfig], setting(
            help="augmentation pipelines, large crops first (scripts/pretrain/augmentations)")),
        ("optimizer", OptimizerConfig, section(OptimizerConfig)),
        ("scheduler", SchedulerConfig, section(SchedulerConfig)),
        ("checkpoint", CheckpointConfig, section(CheckpointConfig)),
        ("auto_resume", AutoResumeConfig, section(AutoResumeConfig)),
        ("wandb", WandbConfig, section(WandbConfig)),
        ("dali", DaliConfig, section(DaliConfig)),
        ("batched", BatchedConfig, section(BatchedConfig)),
        ("knn_eval", KnnEvalConfig, section(KnnEvalConfig)),
        ("performance", PerformanceConfig, section(PerformanceConfig)),
    ]
    if momentum_cls is not None:
        parts.append(("momentum", momentum_cls, section(momentum_cls)))
    return parts + list(trainer_keys())


def common_pretrain_schema() -> type:
    """The keys every method shares (``method_kwargs`` and ``momentum`` are the method's)."""
    return assemble("PretrainConfig", _parts(Any, None))


@functools.cache
def pretrain_schema(method: type) -> type:
    """The root schema of ``method`` (a class of ``methods.METHODS``)."""
    return assemble(f"{method.__name__}Config", _parts(method.Kwargs, method.Momentum))
