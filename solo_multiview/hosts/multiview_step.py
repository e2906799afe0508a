"""The batched K-view training step shared by both hosts.

solo-learn's ``BaseMethod.training_step`` forwards each crop separately (K backbone calls). Here
all crops of one size are concatenated and forwarded once (one call on B*K images), then every
output is split back into per-crop lists, so method code sees exactly solo-learn's output layout.
BatchNorm therefore sees the statistics of all K views together, as in solo-learn's own
multi-crop methods that concatenate crops.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence

import torch


def fusion(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The MIMV fusion of two projections: ``sum`` or ``concat`` (feature axis)."""
    if name == "sum":
        return torch.add
    return lambda a, b: torch.cat([a, b], dim=1)


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
        indexes, crops, targets = batch
        crops = [crops] if isinstance(crops, torch.Tensor) else list(crops)
        if self.view_spec.scheme == "pairs":
            return self.mimv_training_step(indexes, crops, targets)
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
        outs["indexes"] = indexes  # identity of the loss's samples: the images
        return outs

    def mimv_training_step(self, indexes: torch.Tensor, crops: List[torch.Tensor],
                           targets: torch.Tensor) -> Dict[str, Any]:
        """The MIMV views (arXiv 2509.08469) for any method: the batch holds, per anchor, K
        pairs of views ``[x_n^1..K, y_a^1..K, x_a^1..K, y_n^1..K]`` (``data/pairing.py``).
        Each (anchor, partner) pair is one sample of the loss, with two fused views

            view 0 = g(f(x_n)) (+) g(f(y_a)),    view 1 = g(f(x_a)) (+) g(f(y_n))

        ((+) = ``method_kwargs.mimv.fusion``), so ``out["z"]`` has two entries of B*K rows
        (pair-major) and ``out["indexes"]`` the pair identities. The predictor, where the method
        has one, reads the fused projection (``out["p"]``); a momentum network gives the same two
        fused views as ``out["momentum_z"]``. Each view type goes through the backbone in its
        own call, as in the authors' code (BatchNorm normalises each with its own statistics).
        The online classifier and the kNN bank see the anchors' normalised views x_n."""
        K = self.view_spec.num_views
        if len(crops) != 4 * K:
            raise ValueError(f"MIMV pairs: the batch has {len(crops)} crops per image, expected "
                             f"4 * method_kwargs.num_views = {4 * K} (x_n, y_a, x_a, y_n)")
        x_n, y_a, x_a, y_n = (torch.cat(crops[i * K:(i + 1) * K]) for i in range(4))
        pair_targets = targets.repeat(K)
        fuse = fusion(self.view_spec.fusion)

        anchor = self.base_training_step(x_n, pair_targets)
        parts = [anchor, self.multicrop_forward(y_a), self.multicrop_forward(x_a),
                 self.multicrop_forward(y_n)]
        outs: Dict[str, Any] = {"loss": anchor["loss"], "acc1": anchor["acc1"],
                                "acc5": anchor["acc5"], "feats": [p["feats"] for p in parts]}
        outs["z"] = [fuse(parts[0]["z"], parts[1]["z"]), fuse(parts[2]["z"], parts[3]["z"])]
        if getattr(self, "predictor", None) is not None:
            outs["p"] = [self.predictor(z) for z in outs["z"]]
        self.log_classifier_metrics(outs, "train")
        self.update_online_knn(anchor["feats"], pair_targets)

        if getattr(self, "momentum_backbone", None) is not None:
            target = self._shared_step_momentum(x_n, pair_targets)
            if "loss" in target:
                self.log_classifier_metrics(target, "train_momentum")
                outs["loss"] = outs["loss"] + target["loss"]
            m = [target, self.momentum_forward(y_a), self.momentum_forward(x_a),
                 self.momentum_forward(y_n)]
            outs["momentum_z"] = [fuse(m[0]["z"], m[1]["z"]), fuse(m[2]["z"], m[3]["z"])]
        batch_size = targets.size(0)
        outs["indexes"] = (indexes.repeat(K) * K
                           + torch.arange(K, device=indexes.device).repeat_interleave(batch_size))
        return outs

    def log_classifier_metrics(self, out: Dict[str, Any], prefix: str) -> None:
        """Records an online classifier's ``loss``, ``acc1``, ``acc5`` as ``<prefix>_class_loss``,
        ``<prefix>_acc1``, ``<prefix>_acc5`` (solo-learn's names), logged at the end of the
        batch (``record`` in ``hosts/contract.py``) as epoch means across ranks."""
        self.record({
            f"{prefix}_class_loss": out["loss"],
            f"{prefix}_acc1": out["acc1"],
            f"{prefix}_acc5": out["acc5"],
        })

    def update_online_knn(self, feats: torch.Tensor, targets: torch.Tensor) -> None:
        """Adds the training features to the online kNN bank (``knn_eval.enabled``). Rows with
        target -1 (no label) are dropped when the bank is read (``compute``, once per validation
        epoch; ``hosts/online_knn.py``, solo-learn's through ``solo_compat``), not here: boolean
        indexing has a data-dependent size, so it would wait for the device every step."""
        if getattr(self, "knn_eval", False):
            self.knn(train_features=feats.detach(), train_targets=targets.detach())
