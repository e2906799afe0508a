"""The training guard that :func:`solo_multiview.hosts.compose` puts in front of every method.

Written once, for every method on every host:

* **Non-finite loss** (config key ``nonfinite_loss: stop | skip``, default ``stop``). After the
  method's ``training_step`` the returned loss is checked; under DDP the verdict is any-rank (one
  all-reduce of a flag), so every rank takes the same branch. On a non-finite loss the message
  names the global step, epoch and batch, every value the method logged in this step
  (``train_nce_loss``, ``train_class_loss``, ...) and the current learning rate of each
  parameter group.

  - ``stop``: raises :class:`NonFiniteLossError` before the backward pass, so no NaN reaches the
    weights and no checkpoint is written after it; the last good checkpoint stays in place (the
    Checkpointer prints its path).
  - ``skip``: the parameter update of this batch is skipped. ``training_step`` returns a zero
    loss connected to every trainable parameter (Lightning refuses a None return under DDP, so
    one mechanism serves every strategy) and the guard drops all gradients in
    ``on_before_optimizer_step``, so the optimizer skips every parameter: weights and optimizer
    state (momentum, Adam moments) stay as they were. Buffers (BatchNorm running statistics,
    MoCo queues) are restored to their values before the batch, the momentum (EMA) update of
    this step is skipped, and the values the method logged in the step are dropped so the epoch
    means stay finite. The batch still counts as a step for ``global_step`` and the
    learning-rate schedule; with gradient accumulation the whole accumulated update is skipped.
    ``train_skipped_batches`` (cumulative, saved in checkpoints) is logged every step.

  Only the loss is checked: a finite loss whose gradient overflows is not caught here (under
  ``16-mixed`` precision the GradScaler skips such steps), but the Checkpointer refuses to write
  non-finite weights. Cost: one device-to-host read of the loss per step, plus one all-reduce of
  a flag under DDP.

* **Momentum schedule after a resume**: the EMA coefficient ``tau`` (solo-learn's
  ``MomentumUpdater.cur_tau``) is not part of a checkpoint; on a resumed start it is recomputed
  from the restored global step, so the first step after a resume uses the same ``tau`` as an
  uninterrupted run.

The guard is the first base of every composed class: its hooks run first and reach the method's
(and the host's) with ``super()``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from lightning.pytorch.utilities import rank_zero_warn

from solo_multiview.config.schema import setting

NONFINITE_POLICIES = ("stop", "skip")
#: the guard's config key, a top-level key of the pretraining schema
NONFINITE_KEY = ("nonfinite_loss", str, setting(
    "stop", "a non-finite loss stops the run before the update (stop) or skips the batch",
    choices=NONFINITE_POLICIES))


class NonFiniteLossError(RuntimeError):
    """A training step produced a non-finite loss under ``nonfinite_loss: stop``."""


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean()) if value.numel() else math.nan
    return float(value)


def _format(values: Sequence[Tuple[str, Any]]) -> str:
    parts = []
    for name, value in values:
        try:
            parts.append(f"{name}={_as_float(value):.6g}")
        except (TypeError, ValueError):
            parts.append(f"{name}={value!r}")
    return ", ".join(parts) if parts else "nothing"


class TrainingGuard:
    """First base of every composed class (see the module docstring)."""

    # ------------------------------------------------------------------ helpers
    def _guard_trainer(self) -> Optional[Any]:
        return getattr(self, "_trainer", None)

    def _guard_policy(self) -> str:
        cfg = getattr(self, "cfg", None)
        policy = cfg.get("nonfinite_loss", None) if cfg is not None else None
        return "stop" if policy in (None, "None") else str(policy)

    def _guard_any_rank(self, flag: bool) -> bool:
        trainer = self._guard_trainer()
        if trainer is None:
            return flag
        return bool(trainer.strategy.reduce_boolean_decision(flag, all=False))

    def _guard_learning_rates(self) -> List[Tuple[str, Any]]:
        trainer = self._guard_trainer()
        if trainer is None:
            return []
        rates = []
        for i, optimizer in enumerate(trainer.optimizers):
            for j, group in enumerate(optimizer.param_groups):
                name = group.get("name") or f"optimizer{i}.group{j}"
                rates.append((str(name), group["lr"]))
        return rates

    def _guard_describe(self, loss: torch.Tensor, batch_idx: int,
                        logged: Sequence[Tuple[str, Any]]) -> str:
        trainer = self._guard_trainer()
        where = (f"global step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
                 f"{batch_idx})" if trainer is not None else f"batch {batch_idx}")
        return (f"non-finite loss at {where}: loss={_as_float(loss):.6g}; logged in this step: "
                f"{_format(logged)}; learning rate: {_format(self._guard_learning_rates())}")

    # ------------------------------------------------------------------ LightningModule hooks
    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """Inside the guarded ``training_step`` the call is held back until the loss is known
        to be finite (then replayed in order) or the batch is skipped (then dropped)."""
        pending = self.__dict__.get("_guard_pending")
        if pending is not None:
            pending.append((name, value, args, kwargs))
            return
        super().log(name, value, *args, **kwargs)

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> Any:
        policy = self._guard_policy()
        snapshot = ([buffer.detach().clone() for buffer in self.buffers()]
                    if policy == "skip" else None)
        self.__dict__["_guard_pending"] = []
        try:
            out = super().training_step(batch, batch_idx)
        finally:
            pending: List[Tuple[str, Any, tuple, dict]] = self.__dict__.pop("_guard_pending")
        loss = out.get("loss") if isinstance(out, Mapping) else out
        bad = isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all())
        if self._guard_any_rank(bad):
            logged = [(name, value) for name, value, _, _ in pending]
            message = self._guard_describe(loss if loss is not None else torch.tensor(math.nan),
                                           batch_idx, logged)
            if policy == "stop":
                raise NonFiniteLossError(
                    f"{message}. nonfinite_loss=stop: training stopped before this update; the "
                    "last good checkpoint is kept (nonfinite_loss=skip skips such batches)"
                )
            for buffer, saved in zip(self.buffers(), snapshot or []):
                buffer.copy_(saved)
            self.__dict__["_guard_skipped_step"] = True
            self.nonfinite_skipped = getattr(self, "nonfinite_skipped", 0) + 1
            rank_zero_warn(f"{message}. nonfinite_loss=skip: batch skipped "
                           f"({self.nonfinite_skipped} skipped so far)")
            self._guard_log_skipped()
            # zero gradients for every parameter (DDP expects them all); dropped before the step
            params = [p for p in self.parameters() if p.requires_grad]
            zero = sum((p.reshape(-1)[:1] * 0).sum() for p in params) if params else None
            return zero
        for name, value, args, kwargs in pending:
            super().log(name, value, *args, **kwargs)
        self._guard_log_skipped()
        return out

    def _guard_log_skipped(self) -> None:
        if self._guard_trainer() is not None:
            super().log("train_skipped_batches",
                                   float(getattr(self, "nonfinite_skipped", 0)))

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        if self.__dict__.get("_guard_skipped_step", False):
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None  # the optimizer skips parameters without a gradient
            return
        super().on_before_optimizer_step(optimizer)

    def on_train_batch_end(self, outputs: Any, batch: Sequence[Any], batch_idx: int) -> None:
        if not self.__dict__.pop("_guard_skipped_step", False):
            super().on_train_batch_end(outputs, batch, batch_idx)
            return
        # skipped batch: no EMA update; keep the momentum schedule on the global step
        trainer = self._guard_trainer()
        if hasattr(self, "last_step") and trainer is not None:
            self.last_step = trainer.global_step
        self._guard_sync_tau()

    def _guard_sync_tau(self) -> None:
        updater = getattr(self, "momentum_updater", None)
        trainer = self._guard_trainer()
        if updater is not None and trainer is not None:
            updater.update_tau(cur_step=trainer.global_step,
                               max_steps=trainer.estimated_stepping_batches)

    def on_train_start(self) -> None:
        super().on_train_start()
        trainer = self._guard_trainer()
        if trainer is not None and trainer.global_step > 0:  # resumed: tau is not checkpointed
            self._guard_sync_tau()

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["nonfinite_skipped"] = int(getattr(self, "nonfinite_skipped", 0))

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.nonfinite_skipped = int(checkpoint.get("nonfinite_skipped", 0))
