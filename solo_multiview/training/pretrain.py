"""Pretraining: config -> method, loaders, Lightning Trainer -> checkpoint (main_pretrain.py)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import omegaconf
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import OmegaConf

from solo_multiview.config.pretrain import parse_pretrain_cfg
from solo_multiview.data.loaders import build_pretrain_loader, build_pretrain_set, build_val_loader
from solo_multiview.methods import METHODS, build_method
from solo_multiview.training.checkpointing import Checkpointer, new_version, run_dir


@dataclass
class PretrainResult:
    run_dir: Path
    checkpoint: Optional[Path]
    metrics: Dict[str, float]


class EpochToDataset(Callback):
    """Calls ``set_epoch(epoch)`` on the training set when it has one (the MTTV pairing draws
    new partners each epoch from seeds that include the epoch)."""

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(trainer.current_epoch)


def trainer_kwargs(cfg: omegaconf.DictConfig) -> Dict[str, Any]:
    """Every config key that ``lightning.Trainer`` accepts (solo-learn's convention)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    valid = inspect.signature(Trainer.__init__).parameters
    kwargs = {name: container[name] for name in valid if name in container}
    if kwargs.get("strategy") == "ddp":
        kwargs["strategy"] = DDPStrategy(find_unused_parameters=False)
    return kwargs


def build_logger(cfg: omegaconf.DictConfig, version: str) -> Logger:
    """CSV by default (beside the checkpoints); wandb when ``wandb.enabled``."""
    if cfg.wandb.enabled:
        from lightning.pytorch.loggers import WandbLogger

        logger = WandbLogger(name=cfg.name, project=cfg.wandb.project, entity=cfg.wandb.entity,
                             offline=cfg.wandb.offline, id=version)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        return logger
    return CSVLogger(save_dir=cfg.checkpoint.dir, name=cfg.method, version=version)


@dataclass
class PreparedRun:
    """Everything built and validated; nothing written yet."""

    cfg: omegaconf.DictConfig
    model: Any
    trainer: Trainer
    train_loader: Any
    val_loader: Any
    folder: Path
    checkpointer: Optional[Checkpointer]


def prepare_pretrain(cfg: omegaconf.DictConfig) -> PreparedRun:
    """Validates ``cfg`` and builds data, model and trainer. Bad input raises ValueError or
    FileNotFoundError here, before anything is trained or written."""
    cfg = parse_pretrain_cfg(cfg)
    seed_everything(cfg.seed, workers=True)

    method = METHODS[cfg.method]
    train_set = build_pretrain_set(cfg, method.data_pipeline)
    cfg.data.num_classes = int(train_set.num_classes)
    train_loader = build_pretrain_loader(cfg, train_set)
    val_loader = build_val_loader(cfg)
    model = build_method(cfg)
    if not cfg.performance.disable_channel_last:
        model = model.to(memory_format=torch.channels_last)

    version = new_version()
    folder = run_dir(cfg, version)
    callbacks: List[Callback] = [EpochToDataset()]
    checkpointer = None
    if cfg.checkpoint.enabled:
        checkpointer = Checkpointer(cfg, folder, cfg.checkpoint.frequency,
                                    cfg.checkpoint.keep_prev)
        callbacks.append(checkpointer)
    if cfg.wandb.enabled:
        callbacks.append(LearningRateMonitor(logging_interval="step"))

    kwargs = trainer_kwargs(cfg)
    kwargs.update({"logger": build_logger(cfg, version), "callbacks": callbacks,
                   "enable_checkpointing": False})
    trainer = Trainer(**kwargs)
    return PreparedRun(cfg, model, trainer, train_loader, val_loader, folder, checkpointer)


def fit(run: PreparedRun) -> PretrainResult:
    run.trainer.fit(run.model, run.train_loader, run.val_loader,
                    ckpt_path=run.cfg.resume_from_checkpoint)
    metrics = {key: float(value) for key, value in run.trainer.callback_metrics.items()
               if isinstance(value, torch.Tensor) and value.numel() == 1}
    last = run.checkpointer.last_ckpt if run.checkpointer else None
    return PretrainResult(run.folder, last, metrics)


def run_pretrain(cfg: omegaconf.DictConfig) -> PretrainResult:
    """prepare_pretrain + fit."""
    return fit(prepare_pretrain(cfg))


def summary(result: PretrainResult) -> str:
    """What a user needs after a run: where the checkpoint is and the online accuracies."""
    lines = [f"run folder: {result.run_dir}"]
    lines.append(f"checkpoint: {result.checkpoint}" if result.checkpoint
                 else "checkpoint: none (checkpoint.enabled is false)")
    shown = [key for key in sorted(result.metrics)
             if key.startswith("val_acc") or key.startswith("val_knn")
             or (key.startswith("train_") and key.endswith("_loss") and "class" not in key)]
    lines += [f"{key}: {result.metrics[key]:.4f}" for key in shown]
    return "\n".join(lines)
