"""Online weighted kNN monitor of the built-in host (solo-learn's ``knn_eval``).

Training features of the epoch form the memory bank (rows with target -1 are dropped at
``compute``), validation features are classified against it; states are torchmetrics list
states, so they are gathered across ranks at ``compute``."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from solo_multiview.eval.knn import knn_scores
from solo_multiview.eval.metrics import topk_accuracy


def labelled_rows(features: torch.Tensor,
                  targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The bank rows whose target is not -1 (unlabelled rows enter the bank unfiltered, so the
    training step does not wait for the device; they are dropped here, once per ``compute``)."""
    keep = targets != -1
    return features[keep], targets[keep]


class OnlineKNN(Metric):
    full_state_update = False

    def __init__(self, k: int = 20, temperature: float = 0.07):
        super().__init__()
        self.k = k
        self.temperature = temperature
        for name in ("train_features", "train_targets", "test_features", "test_targets"):
            self.add_state(name, default=[], dist_reduce_fx="cat", persistent=False)

    def update(
        self,
        train_features: Optional[torch.Tensor] = None,
        train_targets: Optional[torch.Tensor] = None,
        test_features: Optional[torch.Tensor] = None,
        test_targets: Optional[torch.Tensor] = None,
    ) -> None:
        if train_features is not None:
            self.train_features.append(train_features.detach().float())
            self.train_targets.append(train_targets.detach())
        if test_features is not None:
            self.test_features.append(test_features.detach().float())
            self.test_targets.append(test_targets.detach())

    def compute(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Top-1 and top-5 kNN accuracy (percent); -1 when a bank is empty."""
        if not self.train_features or not self.test_features:
            return torch.tensor(-1.0), torch.tensor(-1.0)
        train_features, train_targets = labelled_rows(dim_zero_cat(self.train_features),
                                                      dim_zero_cat(self.train_targets))
        if train_targets.numel() == 0:
            return torch.tensor(-1.0), torch.tensor(-1.0)
        test_targets = dim_zero_cat(self.test_targets)
        num_classes = int(max(train_targets.max(), test_targets.max())) + 1
        scores = knn_scores(
            train_features, train_targets, dim_zero_cat(self.test_features),
            num_classes=num_classes, k=self.k, temperature=self.temperature,
        )
        return (torch.tensor(topk_accuracy(scores, test_targets, 1)),
                torch.tensor(topk_accuracy(scores, test_targets, min(5, num_classes))))
