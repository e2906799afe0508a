"""mv_barlow_twins: Barlow Twins with K >= 2 large views."""

from __future__ import annotations

from typing import Any, Sequence

import omegaconf
import torch

from solo_multiview.config.common import select
from solo_multiview.hosts.contract import BaseMethod
from solo_multiview.losses.mv_barlow_twins import mv_barlow_twins_loss
from solo_multiview.methods.heads import mlp
from solo_multiview.methods.options import (
    check_num_large_crops,
    number_above,
    refuse_small_crops,
    require,
    require_positive_ints,
)
from solo_multiview.methods.projection import ProjectorOutputs


class MVBarlowTwins(ProjectorOutputs, BaseMethod):
    """K-view Barlow Twins (https://arxiv.org/abs/2103.03230 generalised to K views).

    Each view's projection z_k is standardised per feature over the (global) batch; for two views
    ``C^{ij} = z_i^T z_j / N`` and ``L_BT(i, j) = s * [sum_d (1 - C_dd)^2 + lambda *
    sum_{d != e} C_de^2]``. The K-view loss (``losses/mv_barlow_twins.py``) is the mean over the
    K(K-1)/2 unordered view pairs,

        L = 2 / (K(K-1)) * sum_{i < j} L_BT(i, j),

    exactly solo-learn's loss at K = 2, and its scale does not grow with K. All K large crops go
    through the backbone in one call. Large crops only: the cross-correlation of a small crop
    with a large one is not part of the method, so small crops are refused at config time.

    Extra cfg settings:
        method_kwargs:
            proj_hidden_dim (int): hidden width of the 3-layer projector.
            proj_output_dim (int): output width D of the projector.
            lamb (float): weight of the off-diagonal terms, >= 0 (default 0.0051).
            scale_loss (float): overall scale s > 0 (default 0.024).
    """

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.lamb: float = kwargs.lamb
        self.scale_loss: float = kwargs.scale_loss
        # (Linear-BN-ReLU) x 2, Linear
        self.projector = mlp(self.features_dim, kwargs.proj_hidden_dim, kwargs.proj_output_dim,
                             num_layers=3, batch_norm=True)

    @classmethod
    def add_and_assert_specific_cfg(cls, cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        cfg = super().add_and_assert_specific_cfg(cfg)
        require_positive_ints(cfg, "proj_hidden_dim", "proj_output_dim")
        cfg.method_kwargs.lamb = select(cfg, "method_kwargs.lamb", 0.0051)
        cfg.method_kwargs.scale_loss = select(cfg, "method_kwargs.scale_loss", 0.024)
        require(cfg, "method_kwargs.lamb", number_above(0.0, strict=False),
                "a number >= 0")
        require(cfg, "method_kwargs.scale_loss", number_above(0.0),
                "a number > 0")
        check_num_large_crops(cfg, "mv_barlow_twins")
        refuse_small_crops(cfg, "mv_barlow_twins")
        return cfg

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        out = super().training_step(batch, batch_idx)
        barlow_loss = mv_barlow_twins_loss(out["z"], lamb=self.lamb, scale_loss=self.scale_loss)
        self.log("train_barlow_loss", barlow_loss, on_epoch=True, sync_dist=True)
        return barlow_loss + out["loss"]
