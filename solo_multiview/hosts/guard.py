"""The training guard: a Lightning callback every method attaches to its trainer
(``configure_callbacks`` in ``hosts/contract.py``), so it runs under our ``main_pretrain.py``
and under solo-learn's own entry point alike.

* **Non-finite loss** (config key ``nonfinite_loss: stop | skip``, default ``stop``). Before the
  backward pass the step's loss is checked; under DDP the verdict is any-rank (one all-reduce of
  a flag), so every rank takes the same branch. On a non-finite loss the message names the
  global step, epoch and batch, every value the step recorded for logging (``train_nce_loss``,
  ``train_class_loss``, ...) and the current learning rate of each parameter group.

  - ``stop``: raises :class:`NonFiniteLossError` before the backward pass, so no NaN reaches the
    weights and no checkpoint is written after it; the last good checkpoint stays in place (the
    Checkpointer prints its path).
  - ``skip``: the parameter update of this batch is skipped: every gradient is dropped before the
    optimizer step (an optimizer skips parameters without a gradient), so weights and optimizer
    state (momentum, Adam moments) stay as they were. Buffers (BatchNorm running statistics,
    MoCo queues) are restored to their values before the batch, the momentum (EMA) update of
    this step is skipped, and the values the step recorded are not logged, so the epoch means
    stay finite. The batch still counts as a step for ``global_step`` and the learning-rate
    schedule; with gradient accumulation the whole accumulated update is skipped.
    ``train_skipped_batches`` (cumulative, saved in checkpoints) is logged every step.

  Only the loss is checked: a finite loss whose gradient overflows is not caught here (under
  ``16-mixed`` precision the GradScaler skips such steps), but the Checkpointer refuses to write
  non-finite weights. Cost: one device-to-host read of the verdict per step (the decision to
  raise needs it), plus one all-reduce of a flag under DDP.

* **Momentum schedule**: the EMA coefficient ``tau`` (solo-learn's ``MomentumUpdater.cur_tau``)
  is not part of a checkpoint and is not advanced by a skipped step; it is recomputed from the
  global step at the start of training and of every batch (idempotent for an uninterrupted run),
  so a resumed run, and the step after a skipped one, use the same ``tau`` as an uninterrupted
  run.

The values a step logs are recorded (``record`` in ``hosts/contract.py``) and logged by the method
after this callback's ``on_train_batch_end``, which drops them for a skipped batch: nothing
overrides ``LightningModule.log``.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

import torch
from lightning.pytorch.callbacks import Callback
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


def learning_rates(trainer: Any) -> List[Tuple[str, Any]]:
    """(group name, lr) of every optimizer parameter group."""
    rates = []
    for i, optimizer in enumerate(trainer.optimizers):
        for j, group in enumerate(optimizer.param_groups):
            rates.append((str(group.get("name") or f"optimizer{i}.group{j}"), group["lr"]))
    return rates


class NonFiniteGuard(Callback):
    """The callback of the module docstring; ``policy`` is ``stop`` or ``skip``."""

    def __init__(self, policy: str = "stop") -> None:
        if policy not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite_loss: unknown value {policy!r}; choose one of "
                             f"{list(NONFINITE_POLICIES)}")
        self.policy = policy
        self.skipping = False
        self._buffers: Optional[List[torch.Tensor]] = None

    @property
    def state_key(self) -> str:
        return "NonFiniteGuard"

    # ------------------------------------------------------------------ the momentum schedule
    @staticmethod
    def sync_tau(trainer: Any, pl_module: Any) -> None:
        updater = getattr(pl_module, "momentum_updater", None)
        if updater is not None:
            updater.update_tau(cur_step=trainer.global_step,
                               max_steps=trainer.estimated_stepping_batches)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_step > 0:  # resumed: tau is not checkpointed
            self.sync_tau(trainer, pl_module)

    # ------------------------------------------------------------------ a batch
    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any,
                             batch_idx: int) -> None:
        self.skipping = False
        pl_module.__dict__["_step_logs"] = {}
        if self.policy == "skip":
            self._buffers = [b.detach().clone() for b in pl_module.buffers()]
        if trainer.global_step > 0:
            self.sync_tau(trainer, pl_module)

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        logged = list(pl_module.__dict__.get("_step_logs", {}).items())
        message = (f"non-finite loss at global step {trainer.global_step} (epoch "
                   f"{trainer.current_epoch}, batch {trainer.fit_loop.batch_idx}): "
                   f"loss={_as_float(loss):.6g}; logged in this step: {_format(logged)}; "
                   f"learning rate: {_format(learning_rates(trainer))}")
        if self.policy == "stop":
            raise NonFiniteLossError(
                f"{message}. nonfinite_loss=stop: training stopped before this update; the last "
                "good checkpoint is kept (nonfinite_loss=skip skips such batches)"
            )
        self.skipping = True
        pl_module.nonfinite_skipped = getattr(pl_module, "nonfinite_skipped", 0) + 1
        rank_zero_warn(f"{message}. nonfinite_loss=skip: batch skipped "
                       f"({pl_module.nonfinite_skipped} skipped so far)")

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self.skipping:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None  # the optimizer skips parameters without a gradient

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # runs before the module's own on_train_batch_end (the EMA update, the logging)
        if self.skipping:
            for buffer, saved in zip(pl_module.buffers(), self._buffers or []):
                buffer.copy_(saved)
            pl_module.__dict__["_step_logs"] = {}  # nothing of this batch is logged
            if hasattr(pl_module, "last_step"):
                pl_module.last_step = trainer.global_step  # the host's EMA update is skipped
        self._buffers = None
        # a CPU tensor stays on the CPU in Lightning's results (a float is copied to the device
        # every step, a copy that waits for the queued kernels)
        pl_module.log("train_skipped_batches",
                      torch.tensor(float(getattr(pl_module, "nonfinite_skipped", 0))))
