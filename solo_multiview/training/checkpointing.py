"""Run folders, checkpoints and the metrics log in solo-learn's layout.

Each run writes ``<checkpoint.dir>/<method>/<version>/``: ``args.json`` (the resolved config,
solo-learn's name for it), ``<name>-<version>-ep=<epoch>.ckpt`` (a Lightning checkpoint whose
``state_dict`` keeps the encoder under ``backbone.``) and, with the default CSV logger,
``metrics.csv``.

Safety of what is written:

* Checkpoints are written to ``<file>.partial`` and renamed; a save that fails part-way removes
  the partial file and leaves the previous checkpoint untouched (it is deleted, unless
  ``checkpoint.keep_prev``, only after the new one is in place). ``args.json`` is written
  atomically (``solo_multiview/atomic.py``).
* A checkpoint is never written with non-finite weights or buffers: :class:`NonFiniteWeightsError`
  is raised instead and the last good checkpoint stays.
* A resumed run (``training/resume.py``) continues in its own folder: the Checkpointer treats the
  resumed checkpoint as the previous one, and :class:`ContinuingCSVLogger` appends to the
  existing ``metrics.csv`` after dropping the rows logged after the resumed checkpoint (the part of
  the interrupted epoch that is trained again).
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import lightning.pytorch as pl
import omegaconf
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import OmegaConf

from solo_multiview.atomic import atomic_write
from solo_multiview.config.schema import setting
from solo_multiview.hosts.guard import NonFiniteLossError


@dataclass
class CheckpointConfig:
    """``checkpoint.*`` (solo-learn's keys)."""

    enabled: bool = setting(True, "write checkpoints")
    dir: str = setting("trained_models", "runs go to <dir>/<method>/<version>/")
    frequency: int = setting(1, "a checkpoint every this many epochs", minimum=1)
    keep_prev: bool = setting(False, "keep earlier checkpoints of the run")


class NonFiniteWeightsError(RuntimeError):
    """The model holds NaN/inf values at a checkpoint; the checkpoint is not written."""


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


def nonfinite_tensors(module: torch.nn.Module) -> list:
    """Names of the floating-point parameters and buffers holding NaN or inf."""
    return [name for name, value in module.state_dict().items()
            if torch.is_tensor(value) and value.is_floating_point()
            and not bool(torch.isfinite(value).all())]


class _ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is continued (its columns
    are read back) instead of deleted."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = list(next(csv.reader(handle), []))

    def drop_rows(self, drop: Callable[[Dict[str, str]], bool]) -> int:
        """Removes the rows of metrics.csv for which ``drop(row)`` is true (atomic rewrite);
        returns how many were removed."""
        if not self._fs.isfile(self.metrics_file_path):
            return 0
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            reader = csv.DictReader(handle)
            fields = list(reader.fieldnames or [])
            rows = list(reader)
        kept = [row for row in rows if not drop(row)]
        if len(kept) != len(rows):
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)
            atomic_write(self.metrics_file_path, lambda f: f.write(buffer.getvalue()))
        return len(rows) - len(kept)


class ContinuingCSVLogger(CSVLogger):
    """CSVLogger writing ``<save_dir>/<name>/<version>/metrics.csv`` that continues an existing
    file (a resumed run) instead of deleting it."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _ContinuingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


def _row_after(step: int) -> Callable[[Dict[str, str]], bool]:
    def drop(row: Dict[str, str]) -> bool:
        try:
            return int(float(row.get("step") or -1)) >= step
        except ValueError:
            return False

    return drop


class Checkpointer(Callback):
    """Writes args.json when training starts and a checkpoint every ``frequency`` epochs and at
    the end of training; keeps only the newest unless ``keep_prev``. ``resumed_from``: the
    checkpoint this run continues (module docstring)."""

    def __init__(self, cfg: omegaconf.DictConfig, folder: Path, frequency: int = 1,
                 keep_prev: bool = False, resumed_from: Optional[Path] = None):
        super().__init__()
        self.cfg = cfg
        self.folder = Path(folder)
        self.frequency = max(1, int(frequency))
        self.keep_prev = keep_prev
        self.resumed_from = None if resumed_from is None else Path(resumed_from)
        self.last_ckpt: Optional[Path] = None
        self.last_saved_step = -1

    def checkpoint_path(self, epoch: int) -> Path:
        return self.folder / f"{self.cfg.name}-{self.folder.name}-ep={epoch}.ckpt"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_args(self.cfg, self.folder)
        if self.resumed_from is not None:
            if self.resumed_from.parent.resolve() == self.folder.resolve():
                self.last_ckpt = self.resumed_from  # replaced by the next checkpoint
            self.last_saved_step = trainer.global_step
            dropped = 0
            writer = getattr(trainer.logger, "experiment", None)
            if trainer.is_global_zero and isinstance(writer, _ContinuingWriter):
                dropped = writer.drop_rows(_row_after(self._logged_step(trainer)))
            if trainer.is_global_zero:
                print(f"resumed {self.resumed_from} at epoch {trainer.current_epoch}, global "
                      f"step {trainer.global_step}, into {self.folder}"
                      + (f" ({dropped} metrics.csv rows of the interrupted part dropped)"
                         if dropped else ""), flush=True)

    @staticmethod
    def _logged_step(trainer: pl.Trainer) -> int:
        """The ``step`` value the next logged training row will carry (Lightning logs with the
        number of batches that stepped, which the checkpoint restores)."""
        return int(getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped",
                           trainer.global_step))

    def save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking:
            return
        if trainer.global_step == self.last_saved_step:
            return  # nothing trained since the last checkpoint
        bad = nonfinite_tensors(trainer.lightning_module)
        if trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            raise NonFiniteWeightsError(
                f"non-finite weights at global step {trainer.global_step} (e.g. "
                f"{bad[:5] or 'on another rank'}); not writing a checkpoint, the last good one "
                f"is kept: {self.last_ckpt or 'none written yet'}"
            )
        path = self.checkpoint_path(trainer.current_epoch)
        partial = path.with_name(path.name + ".partial")
        try:
            trainer.save_checkpoint(partial)  # collective: every rank calls it, rank 0 writes
        except BaseException:
            if trainer.is_global_zero and partial.exists():
                partial.unlink()
            raise
        if trainer.is_global_zero:
            os.replace(partial, path)
            if (self.last_ckpt is not None and self.last_ckpt != path and not self.keep_prev
                    and self.last_ckpt.exists()):
                self.last_ckpt.unlink()
        self.last_ckpt = path
        self.last_saved_step = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.frequency == 0:
            self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a run stopped mid-epoch (max_steps, limit) still leaves its final weights
        self.save(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: Dict[str, Any]) -> None:
        # the epoch whose data comes next (resume.checkpoint_data_epoch)
        checkpoint["data_epoch"] = int(trainer.fit_loop.epoch_progress.current.processed)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if trainer.is_global_zero and isinstance(exception, (NonFiniteLossError,
                                                             NonFiniteWeightsError)):
            print(f"last good checkpoint: {self.last_ckpt or 'none written yet'}", flush=True)
