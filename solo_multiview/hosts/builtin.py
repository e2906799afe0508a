"""The built-in host: solo-learn's BaseMethod / BaseMomentumMethod contract on plain Lightning.

It exists so that the plugin installs from PyPI alone and runs anywhere. Names, config keys and
output layouts follow solo-learn's bases (``solo/methods/base.py``) so a method runs unchanged on
either host; what differs is written here once: torchvision/convnet backbones
(``hosts/backbones.py``), timm's LARS and a LambdaLR warm-up + cosine schedule
(``hosts/optim.py``), and the batched K-view step (``hosts/multiview_step.py``).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Sequence, Tuple

import lightning.pytorch as pl
import omegaconf
import torch
import torch.nn.functional as F
from torch import nn

from solo_multiview.hosts.backbones import build_backbone, stem_settings
from solo_multiview.hosts.multiview_step import MultiViewStepMixin
from solo_multiview.hosts.online_knn import OnlineKNN
from solo_multiview.hosts.optim import (
    NO_WD_SUFFIX,
    build_optimizer,
    build_scheduler,
    cosine_tau,
    ema_update,
    schedule_lengths,
    split_bias_and_norm,
)


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor,
                  ks: Sequence[int]) -> List[torch.Tensor]:
    """Top-k accuracies in percent (0-d tensors on the logits' device), ignoring targets equal
    to -1; 0 when no target is labelled.

    A masked mean, not boolean indexing: the shapes do not depend on the data, so nothing waits
    for the device (a -1 target never equals a predicted class, and its row has weight 0)."""
    valid = (targets != -1).float()
    count = valid.sum().clamp(min=1.0)
    top = logits.topk(max(ks), dim=1).indices
    hits = top == targets[:, None]
    return [(hits[:, :k].any(dim=1).float() * valid).sum() / count * 100 for k in ks]


class BaseMethod(MultiViewStepMixin, pl.LightningModule):
    """Backbone + online linear classifier + optimizer/schedule, configured like solo-learn."""

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__()
        # a parsed config (config/pretrain.py): every key has its value, nothing is filled here
        self.cfg: omegaconf.DictConfig = cfg

        self.backbone_name: str = cfg.backbone.name
        self.backbone_args: Dict[str, Any] = cfg.backbone.kwargs
        self.backbone: nn.Module = build_backbone(
            cfg.backbone.name, cfg.data.dataset, cfg.backbone.kwargs, cfg.method,
            *stem_settings(cfg.backbone),
        )
        self.features_dim: int = self.backbone.num_features

        self.num_classes: int = cfg.data.num_classes
        self.classifier: nn.Module = nn.Linear(self.features_dim, self.num_classes)

        self.max_epochs: int = cfg.max_epochs
        self.accumulate_grad_batches: int = cfg.accumulate_grad_batches

        self.optimizer: str = cfg.optimizer.name
        self.batch_size: int = cfg.optimizer.batch_size
        self.lr: float = cfg.optimizer.lr
        self.weight_decay: float = cfg.optimizer.weight_decay
        self.classifier_lr: float = cfg.optimizer.classifier_lr
        self.extra_optimizer_args: Dict[str, Any] = cfg.optimizer.kwargs
        self.exclude_bias_n_norm_wd: bool = cfg.optimizer.exclude_bias_n_norm_wd

        self.scheduler: str = cfg.scheduler.name
        self.lr_decay_steps = cfg.scheduler.lr_decay_steps
        self.min_lr: float = cfg.scheduler.min_lr
        self.warmup_start_lr: float = cfg.scheduler.warmup_start_lr
        self.warmup_epochs: float = cfg.scheduler.warmup_epochs
        self.scheduler_interval: str = cfg.scheduler.interval

        # solo-learn scales every lr by the number of accumulated batches
        if self.accumulate_grad_batches:
            self.lr *= self.accumulate_grad_batches
            self.classifier_lr *= self.accumulate_grad_batches
            self.min_lr *= self.accumulate_grad_batches
            self.warmup_start_lr *= self.accumulate_grad_batches

        self.num_large_crops: int = cfg.data.num_large_crops
        self.num_small_crops: int = cfg.data.num_small_crops
        self.num_crops: int = self.num_large_crops + self.num_small_crops
        self.multicrop: bool = self.num_small_crops != 0

        self.knn_eval: bool = cfg.knn_eval.enabled
        self.knn_k: int = cfg.knn_eval.k
        if self.knn_eval:
            self.knn = OnlineKNN(k=self.knn_k, temperature=cfg.knn_eval.temperature)

        self.no_channel_last: bool = cfg.performance.disable_channel_last
        self.validation_step_outputs: List[Dict[str, Any]] = []

    @property
    def learnable_params(self) -> List[Dict[str, Any]]:
        return [
            {"name": "backbone", "params": self.backbone.parameters()},
            {"name": "classifier", "params": self.classifier.parameters(),
             "lr": self.classifier_lr, "weight_decay": 0},
        ]

    def configure_optimizers(self) -> Any:
        groups = [dict(group) for group in self.learnable_params]
        static_names = {group.get("name") for group in groups if group.pop("static_lr", False)}
        if self.exclude_bias_n_norm_wd:
            groups = split_bias_and_norm(groups)
        optimizer = build_optimizer(self.optimizer, groups, self.lr, self.weight_decay,
                                    dict(self.extra_optimizer_args))
        # a group split off for its 1-d parameters keeps its parent's static flag
        static = [str(group.get("name", "")).split(NO_WD_SUFFIX)[0] in static_names
                  for group in optimizer.param_groups]

        # estimated_stepping_batches sets up the train loader, so num_training_batches is known
        total_steps = int(self.trainer.estimated_stepping_batches)
        warmup, total = schedule_lengths(
            self.warmup_epochs, self.scheduler_interval, self.trainer.num_training_batches,
            self.trainer.accumulate_grad_batches, total_steps, self.max_epochs,
        )
        scheduler = build_scheduler(
            optimizer, static, name=self.scheduler, warmup_steps=warmup, total_steps=total,
            warmup_start_lr=self.warmup_start_lr, min_lr=self.min_lr,
            milestones=self.lr_decay_steps,
        )
        if scheduler is None:
            return optimizer
        return [optimizer], [{"scheduler": scheduler, "interval": self.scheduler_interval,
                              "frequency": 1}]

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        optimizer.zero_grad(set_to_none=True)

    def forward(self, X: torch.Tensor) -> Dict[str, Any]:
        if not self.no_channel_last:
            X = X.to(memory_format=torch.channels_last)
        feats = self.backbone(X)
        return {"logits": self.classifier(feats.detach()), "feats": feats}

    def multicrop_forward(self, X: torch.Tensor) -> Dict[str, Any]:
        if not self.no_channel_last:
            X = X.to(memory_format=torch.channels_last)
        return {"feats": self.backbone(X)}

    def _base_shared_step(self, X: torch.Tensor, targets: torch.Tensor) -> Dict[str, Any]:
        out = self(X)
        logits = out["logits"]
        loss = F.cross_entropy(logits, targets, ignore_index=-1)
        acc1, acc5 = topk_accuracy(logits, targets, (1, min(5, logits.size(1))))
        out.update({"loss": loss, "acc1": acc1, "acc5": acc5})
        return out

    def base_training_step(self, X: torch.Tensor, targets: torch.Tensor) -> Dict[str, Any]:
        return self._base_shared_step(X, targets)

    def base_validation_step(self, X: torch.Tensor, targets: torch.Tensor) -> Dict[str, Any]:
        return self._base_shared_step(X, targets)

    def validation_step(self, batch: Sequence[Any], batch_idx: int,
                        dataloader_idx: int | None = None,
                        update_validation_step_outputs: bool = True) -> Dict[str, Any]:
        X, targets = batch
        out = self.base_validation_step(X, targets)
        if self.knn_eval and not self.trainer.sanity_checking:
            self.knn(test_features=out.pop("feats").detach(), test_targets=targets.detach())
        metrics = {"batch_size": targets.size(0), "val_loss": out["loss"],
                   "val_acc1": out["acc1"], "val_acc5": out["acc5"]}
        if update_validation_step_outputs:
            self.validation_step_outputs.append(metrics)
        return metrics

    def _weighted_mean(self, key: str) -> torch.Tensor:
        outputs = self.validation_step_outputs
        total = sum(out["batch_size"] for out in outputs)
        return sum(out[key] * out["batch_size"] for out in outputs) / max(1, total)

    def on_validation_epoch_end(self) -> None:
        if not self.validation_step_outputs:
            return
        log = {key: self._weighted_mean(key) for key in ("val_loss", "val_acc1", "val_acc5")}
        if self.knn_eval and not self.trainer.sanity_checking:
            log["val_knn_acc1"], log["val_knn_acc5"] = self.knn.compute()
            self.knn.reset()
        if "momentum_val_loss" in self.validation_step_outputs[0]:
            for key in ("momentum_val_loss", "momentum_val_acc1", "momentum_val_acc5"):
                log[key] = self._weighted_mean(key)
        self.log_dict(log, sync_dist=True)
        self.validation_step_outputs.clear()


class BaseMomentumMethod(BaseMethod):
    """Adds the EMA target backbone, optional momentum classifier and the tau schedule."""

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        self.momentum_backbone: nn.Module = copy.deepcopy(self.backbone)
        for param in self.momentum_backbone.parameters():
            param.requires_grad = False
        self.momentum_classifier: nn.Module | None = (
            nn.Linear(self.features_dim, self.num_classes) if cfg.momentum.classifier else None
        )
        self.momentum_updater = MomentumUpdater(cfg.momentum.base_tau, cfg.momentum.final_tau)
        self.last_step = 0

    @property
    def learnable_params(self) -> List[Dict[str, Any]]:
        extra = []
        if self.momentum_classifier is not None:
            extra.append({"name": "momentum_classifier",
                          "params": self.momentum_classifier.parameters(),
                          "lr": self.classifier_lr, "weight_decay": 0})
        return super().learnable_params + extra

    @property
    def momentum_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.momentum_backbone)]

    def on_train_start(self) -> None:
        self.last_step = self.trainer.global_step

    @torch.no_grad()
    def momentum_forward(self, X: torch.Tensor) -> Dict[str, Any]:
        if not self.no_channel_last:
            X = X.to(memory_format=torch.channels_last)
        return {"feats": self.momentum_backbone(X)}

    def _shared_step_momentum(self, X: torch.Tensor, targets: torch.Tensor) -> Dict[str, Any]:
        out = self.momentum_forward(X)
        if self.momentum_classifier is not None:
            logits = self.momentum_classifier(out["feats"])
            loss = F.cross_entropy(logits, targets, ignore_index=-1)
            acc1, acc5 = topk_accuracy(logits, targets, (1, min(5, logits.size(1))))
            out.update({"logits": logits, "loss": loss, "acc1": acc1, "acc5": acc5})
        return out

    def on_train_batch_end(self, outputs: Any, batch: Sequence[Any], batch_idx: int) -> None:
        # Only after a real optimizer step (gradient accumulation skips the others).
        if self.trainer.global_step > self.last_step:
            for online, target in self.momentum_pairs:
                self.momentum_updater.update(online, target)
            # a CPU tensor: Lightning keeps the logged value where it is (a Python float would
            # be copied to the device every step, and that copy waits for the queued kernels)
            self.log("tau", torch.tensor(self.momentum_updater.cur_tau, dtype=torch.float32))
            self.momentum_updater.update_tau(
                cur_step=self.trainer.global_step,
                max_steps=self.trainer.estimated_stepping_batches,
            )
        self.last_step = self.trainer.global_step

    def validation_step(self, batch: Sequence[Any], batch_idx: int,
                        dataloader_idx: int | None = None,
                        update_validation_step_outputs: bool = True) -> Dict[str, Any]:
        metrics = super().validation_step(batch, batch_idx,
                                          update_validation_step_outputs=False)
        if self.momentum_classifier is not None:
            X, targets = batch
            out = self._shared_step_momentum(X, targets)
            metrics.update({"momentum_val_loss": out["loss"], "momentum_val_acc1": out["acc1"],
                            "momentum_val_acc5": out["acc5"]})
        if update_validation_step_outputs:
            self.validation_step_outputs.append(metrics)
        return metrics


class MomentumUpdater:
    """EMA of online into target parameters with tau following BYOL's cosine schedule
    (solo-learn's MomentumUpdater semantics)."""

    def __init__(self, base_tau: float = 0.996, final_tau: float = 1.0):
        if not (0 <= base_tau <= 1 and 0 <= final_tau <= 1 and base_tau <= final_tau):
            raise ValueError("momentum.base_tau / momentum.final_tau: need "
                             f"0 <= base_tau <= final_tau <= 1, got {base_tau}, {final_tau}")
        self.base_tau = base_tau
        self.final_tau = final_tau
        self.cur_tau = base_tau

    def update(self, online: nn.Module, target: nn.Module) -> None:
        ema_update(online, target, self.cur_tau)

    def update_tau(self, cur_step: int, max_steps: int) -> None:
        self.cur_tau = cosine_tau(self.base_tau, self.final_tau, cur_step, max_steps)
