"""Pretraining: config -> method, loaders, Lightning Trainer -> checkpoint (main_pretrain.py).

Reliability: ``prepare_pretrain`` looks for a run to resume (``training/resume.py``) and, when
it finds one, builds the trainer to continue it in its own folder, with the data set to the
checkpoint's epoch; the data order and augmentations are functions of (seed, epoch, index)
(``data/loaders.py``, ``data/datasets.py``), so a resumed run trains on exactly what an
uninterrupted one would. The non-finite loss policy lives in ``hosts/guard.py`` (a callback every
method attaches); :class:`BadImageReport` logs how many unreadable files ``data.bad_images=skip``
replaced.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import omegaconf
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import Logger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from solo_multiview.config.pretrain import parse_pretrain_cfg
from solo_multiview.data.loaders import build_train_data, build_val_loader
from solo_multiview.methods import build_method, view_spec
from solo_multiview.training.checkpointing import (
    Checkpointer,
    ContinuingCSVLogger,
    new_version,
    run_dir,
)
from solo_multiview.training.resume import Resume, checkpoint_data_epoch, find_resume


@dataclass
class PretrainResult:
    run_dir: Path
    checkpoint: Optional[Path]
    metrics: Dict[str, float]
    dataset: str = "digits"


#: the evaluation configs (scripts/linear/) of each dataset: (linear probe, kNN)
EVAL_CONFIGS = {
    "digits": ("quickstart_digits", "knn_quickstart_digits"),
    "cifar10": ("cifar10lt", "knn_cifar10lt"),
    "cifar100": ("cifar100lt", "knn_cifar100lt"),
    "image_list": ("imagenetlt", "knn_imagenetlt"),
}


def eval_commands(checkpoint: Path, dataset: str) -> List[str]:
    """The main_linear.py / main_knn.py commands for a checkpoint, ready to paste."""
    linear, knn = EVAL_CONFIGS[dataset]
    path = f"pretrained_feature_extractor={checkpoint}"
    return [f"python main_linear.py --config-name {linear} {path}",
            f"python main_knn.py --config-name {knn} {path}"]


@rank_zero_only
def say(message: str) -> None:
    """Prints on global rank 0 only (every rank runs ``prepare_pretrain`` under DDP)."""
    print(message, flush=True)


def _train_dataset(trainer: Trainer) -> Any:
    return getattr(trainer.train_dataloader, "dataset", None)


class EpochToDataset(Callback):
    """Calls ``set_epoch`` on the training set at every epoch start and at the start of
    training, with the epoch Lightning gives the sampler (augmentation seeds and the MTTV partner
    draws include the epoch). ``EpochSampler`` passes the same epoch on when it starts an epoch;
    this callback covers loaders without it (e.g. DALI)."""

    @staticmethod
    def _set(trainer: Trainer) -> None:
        dataset = _train_dataset(trainer)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(trainer.fit_loop.epoch_progress.current.processed)

    def on_train_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._set(trainer)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._set(trainer)


class BadImageReport(Callback):
    """With ``data.bad_images=skip``: logs ``train_bad_images`` (distinct unreadable training
    files met so far, over all ranks and workers) every epoch and prints the new ones."""

    def __init__(self) -> None:
        self.reported = 0

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        dataset = _train_dataset(trainer)
        dataset = getattr(dataset, "base", dataset)  # MTTV pairs wrap the image set
        mask = getattr(dataset, "_bad", None)
        if mask is None:
            return
        mask = trainer.strategy.all_gather(mask.to(pl_module.device))
        if mask.dim() == 2:  # (world, N) under DDP
            mask = mask.amax(dim=0)
        positions = torch.nonzero(mask).flatten().tolist()
        pl_module.log("train_bad_images", float(len(positions)))
        if trainer.is_global_zero and len(positions) > self.reported:
            shown = ", ".join(dataset.describe(p) for p in positions[:5])
            print(f"data.bad_images=skip: {len(positions)} unreadable training image(s) "
                  f"replaced by the next readable one so far, e.g. {shown}", flush=True)
        self.reported = len(positions)


def describe_training_set(cfg: omegaconf.DictConfig, counts: Any) -> str:
    """One line: size, classes and the head/tail counts of the (long-tailed) training set."""
    lt = cfg.data.long_tail
    how = ("index file " + str(lt.index_file) if lt.index_file else
           f"profile {lt.profile}, imbalance ratio {lt.imbalance_ratio}, class order "
           f"{lt.class_order}, seed {lt.seed}")
    return (f"training set: {int(sum(counts)):,} images of {cfg.data.dataset}, "
            f"{len(counts)} classes, {int(max(counts))}..{int(min(counts))} per class ({how})")


def trainer_kwargs(cfg: omegaconf.DictConfig) -> Dict[str, Any]:
    """Every config key that ``lightning.Trainer`` accepts (solo-learn's convention); a key left
    null keeps Lightning's default."""
    container = OmegaConf.to_container(cfg, resolve=True)
    valid = inspect.signature(Trainer.__init__).parameters
    kwargs = {name: container[name] for name in valid
              if name in container and container[name] is not None}
    if kwargs.get("strategy") == "ddp":
        kwargs["strategy"] = DDPStrategy(find_unused_parameters=False)
    return kwargs


def build_logger(cfg: omegaconf.DictConfig, folder: Path, resuming: bool = False) -> Logger:
    """CSV by default (``metrics.csv`` in the run folder, continued by a resumed run); wandb
    when ``wandb.enabled`` (the run id is the version, resumed with ``resume="allow"``)."""
    version = folder.name
    if cfg.wandb.enabled:
        from lightning.pytorch.loggers import WandbLogger

        logger = WandbLogger(name=cfg.name, project=cfg.wandb.project, entity=cfg.wandb.entity,
                             offline=cfg.wandb.offline, id=version,
                             resume="allow" if resuming else None)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        return logger
    return ContinuingCSVLogger(save_dir=str(folder.parent), name="", version=version)


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
    resume: Optional[Resume] = None

    @property
    def ckpt_path(self) -> Optional[str]:
        """The checkpoint ``fit`` resumes from (None: a fresh run)."""
        return None if self.resume is None else str(self.resume.checkpoint)


def prepare_pretrain(cfg: omegaconf.DictConfig) -> PreparedRun:
    """Validates ``cfg`` and builds data, model and trainer. Bad input raises ValueError or
    FileNotFoundError here, before anything is trained or written."""
    cfg = parse_pretrain_cfg(cfg)
    seed_everything(cfg.seed, workers=True)

    train_loader, train_set = build_train_data(cfg, view_spec(cfg))
    data = train_set or train_loader
    cfg.data.num_classes = int(data.num_classes)
    OmegaConf.set_readonly(cfg, True)  # parsed and complete: nothing writes into it from here
    say(describe_training_set(cfg, data.class_counts))
    val_loader = build_val_loader(cfg)
    model = build_method(cfg)
    if not cfg.performance.disable_channel_last:
        model = model.to(memory_format=torch.channels_last)

    resume = find_resume(cfg, say)  # after build_method: the key includes the method defaults
    if resume is not None:
        # before fit: Lightning builds the first iterator before it restores the epoch
        epoch = checkpoint_data_epoch(resume.checkpoint)
        for target in (getattr(train_loader, "sampler", None), train_set):
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)
    if resume is not None and resume.folder is not None:
        folder = resume.folder
        say(f"{resume.how}: resuming {resume.checkpoint} into its run folder {folder}")
    else:
        folder = run_dir(cfg, new_version())
        if resume is not None:
            say(f"{resume.how}: resuming {resume.checkpoint} into a new run folder {folder} "
                "(no args.json beside the checkpoint: its configuration was not checked)")
    callbacks: List[Callback] = [EpochToDataset(), BadImageReport()]
    checkpointer = None
    if cfg.checkpoint.enabled:
        checkpointer = Checkpointer(cfg, folder, cfg.checkpoint.frequency,
                                    cfg.checkpoint.keep_prev,
                                    resumed_from=None if resume is None else resume.checkpoint)
        callbacks.append(checkpointer)
    if cfg.wandb.enabled:
        callbacks.append(LearningRateMonitor(logging_interval="step"))

    kwargs = trainer_kwargs(cfg)
    kwargs.update({"logger": build_logger(cfg, folder, resuming=resume is not None),
                   "callbacks": callbacks, "enable_checkpointing": False})
    trainer = Trainer(**kwargs)
    return PreparedRun(cfg, model, trainer, train_loader, val_loader, folder, checkpointer,
                       resume)


def fit(run: PreparedRun) -> PretrainResult:
    run.trainer.fit(run.model, run.train_loader, run.val_loader, ckpt_path=run.ckpt_path)
    metrics = {key: float(value) for key, value in run.trainer.callback_metrics.items()
               if isinstance(value, torch.Tensor) and value.numel() == 1}
    last = run.checkpointer.last_ckpt if run.checkpointer else None
    return PretrainResult(run.folder, last, metrics, str(run.cfg.data.dataset))


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
    if result.checkpoint:
        lines += ["evaluate it with:", *(f"  {c}" for c in eval_commands(result.checkpoint,
                                                                          result.dataset))]
    return "\n".join(lines)
