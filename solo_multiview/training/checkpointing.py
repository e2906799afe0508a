"""Run folders and checkpoints in solo-learn's layout.

Each run writes ``<checkpoint.dir>/<method>/<version>/``: ``args.json`` (the resolved config,
solo-learn's name for it), ``<name>-<version>-ep=<epoch>.ckpt`` (a Lightning checkpoint whose
``state_dict`` keeps the encoder under ``backbone.``) and, with the default CSV logger,
``metrics.csv``. Files are written under a temporary name and renamed, so an interrupted run
never leaves a truncated file where a good one was.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Optional

import lightning.pytorch as pl
import omegaconf
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from solo_multiview.atomic import atomic_write


def new_version() -> str:
    """Sortable, unique run version: ``<YYYYmmdd-HHMMSS>-<4 hex>``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def run_dir(cfg: omegaconf.DictConfig, version: str) -> Path:
    return Path(cfg.checkpoint.dir) / cfg.method / version


def write_args(cfg: omegaconf.DictConfig, folder: Path) -> Path:
    """args.json: the resolved config (what solo-learn's main_knn.py and our evaluators read)."""
    args = OmegaConf.to_container(cfg, resolve=True)
    return atomic_write(folder / "args.json",
                        lambda f: json.dump(args, f, indent=2, default=str))


class Checkpointer(Callback):
    """Writes args.json when training starts and a checkpoint every ``frequency`` epochs and at
    the end of training; keeps only the newest unless ``keep_prev``."""

    def __init__(self, cfg: omegaconf.DictConfig, folder: Path, frequency: int = 1,
                 keep_prev: bool = False):
        super().__init__()
        self.cfg = cfg
        self.folder = Path(folder)
        self.frequency = max(1, int(frequency))
        self.keep_prev = keep_prev
        self.last_ckpt: Optional[Path] = None
        self.last_saved_step = -1

    def checkpoint_path(self, epoch: int) -> Path:
        return self.folder / f"{self.cfg.name}-{self.folder.name}-ep={epoch}.ckpt"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_args(self.cfg, self.folder)

    def save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking:
            return
        if trainer.global_step == self.last_saved_step:
            return  # nothing trained since the last checkpoint
        path = self.checkpoint_path(trainer.current_epoch)
        partial = path.with_name(path.name + ".partial")
        trainer.save_checkpoint(partial)  # collective: every rank calls it, rank 0 writes
        if trainer.is_global_zero:
            os.replace(partial, path)
            if self.last_ckpt is not None and not self.keep_prev and self.last_ckpt.exists():
                self.last_ckpt.unlink()
        self.last_ckpt = path
        self.last_saved_step = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.frequency == 0:
            self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a run stopped mid-epoch (max_steps, limit) still leaves its final weights
        self.save(trainer)
