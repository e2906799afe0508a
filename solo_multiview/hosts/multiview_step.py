"""The batched K-view training step shared by both hosts.

solo-learn's ``BaseMethod.training_step`` forwards each crop separately (K backbone calls). Here
all crops of one size are concatenated and forwarded once (one call on B*K images), then every
output is split back into per-crop lists, so method code sees exactly solo-learn's output layout.
BatchNorm therefore sees the statistics of all K views together, as in solo-learn's own
multi-crop methods that concatenate crops.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch


def split_per_crop(out: Dict[str, Any], num_crops: int, batch_size: int) -> Dict[str, Any]:
    """Splits every tensor of ``out`` whose first dimension is ``num_crops * batch_size`` into a
    list of ``num_crops`` tensors; other values are kept as they are."""
    split: Dict[str, Any] = {}
    for key, value in out.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.size(0) == (
            num_crops * batch_size
        ):
            split[key] = list(value.split(batch_size))
        else:
            split[key] = value
    return split


def group_by_shape(crops: Sequence[torch.Tensor]) -> List[List[torch.Tensor]]:
    """Consecutive crops of the same shape, grouped (small crops may come in several sizes)."""
    groups: List[List[torch.Tensor]] = []
    for crop in crops:
        if groups and groups[-1][0].shape == crop.shape:
            groups[-1].append(crop)
        else:
            groups.append([crop])
    return groups


class MultiViewStepMixin:
    """Replaces the host's per-crop ``training_step`` with one batched forward per crop size.

    Relies on the host's ``base_training_step`` (online classifier loss and accuracies on the
    detached features), ``multicrop_forward`` and, for momentum hosts,
    ``_shared_step_momentum``; all three exist in solo-learn and in the built-in host.
    """

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> Dict[str, Any]:
        _, crops, targets = batch
        crops = [crops] if isinstance(crops, torch.Tensor) else list(crops)
        if len(crops) != self.num_crops:
            raise ValueError(
                f"the batch has {len(crops)} crops but the config declares "
                f"{self.num_large_crops} large + {self.num_small_crops} small "
                "(augmentations[*].num_crops)"
            )
        num_large = self.num_large_crops
        batch_size = targets.size(0)
        large = torch.cat(crops[:num_large])
        repeated_targets = targets.repeat(num_large)

        outs = split_per_crop(
            self.base_training_step(large, repeated_targets), num_large, batch_size
        )
        for group in group_by_shape(crops[num_large:]):
            small_out = split_per_crop(
                self.multicrop_forward(torch.cat(group)), len(group), batch_size
            )
            for key, value in small_out.items():
                outs[key] = list(outs.get(key, [])) + list(value)

        self.log_classifier_metrics(outs, "train")
        self.update_online_knn(torch.cat(outs["feats"][:num_large]), repeated_targets)

        # Momentum hosts: the EMA network sees the same large crops, again in one call.
        if getattr(self, "momentum_backbone", None) is not None:
            momentum_out = split_per_crop(
                self._shared_step_momentum(large, repeated_targets), num_large, batch_size
            )
            if "loss" in momentum_out:
                self.log_classifier_metrics(momentum_out, "train_momentum")
                outs["loss"] = outs["loss"] + momentum_out["loss"]
            outs.update({f"momentum_{key}": value for key, value in momentum_out.items()})
        return outs

    def log_classifier_metrics(self, out: Dict[str, Any], prefix: str) -> None:
        """Logs an online classifier's ``loss``, ``acc1``, ``acc5`` as ``<prefix>_class_loss``,
        ``<prefix>_acc1``, ``<prefix>_acc5`` (solo-learn's names), epoch means across ranks."""
        self.log_dict(
            {
                f"{prefix}_class_loss": out["loss"],
                f"{prefix}_acc1": out["acc1"],
                f"{prefix}_acc5": out["acc5"],
            },
            on_epoch=True,
            sync_dist=True,
        )

    def update_online_knn(self, feats: torch.Tensor, targets: torch.Tensor) -> None:
        """Adds labelled training features to the online kNN bank (``knn_eval.enabled``);
        targets of -1 (no label) are left out."""
        if getattr(self, "knn_eval", False):
            mask = targets != -1
            self.knn(train_features=feats[mask].detach(), train_targets=targets[mask])
