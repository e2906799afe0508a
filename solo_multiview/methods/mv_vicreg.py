"""mv_vicreg: VICReg with K >= 2 large views."""

from __future__ import annotations

from typing import Any, Sequence

import omegaconf
import torch

from solo_multiview.config.common import select
from solo_multiview.hosts.contract import BaseMethod
from solo_multiview.losses.mv_vicreg import mv_vicreg_loss
from solo_multiview.methods.heads import mlp
from solo_multiview.methods.options import (
    check_num_large_crops,
    number_above,
    refuse_small_crops,
    require,
    require_positive_ints,
)
from solo_multiview.methods.projection import ProjectorOutputs

WEIGHT_DEFAULTS = {"sim_loss_weight": 25.0, "var_loss_weight": 25.0, "cov_loss_weight": 1.0}




class MVVICReg(ProjectorOutputs, BaseMethod):
    """K-view VICReg (https://arxiv.org/abs/2105.04906 generalised to K views).

    With projections z_k of the K views (Z_k gathered across ranks), ``v`` the hinge on the
    per-feature std and ``c`` the off-diagonal covariance penalty of solo-learn's
    ``vicreg_loss_func`` (``losses/mv_vicreg.py``):

        L = w_sim * 2/(K(K-1)) * sum_{i<j} mse(z_i, z_j)
          + w_var * 2/K * sum_k v(Z_k) + w_cov * 2/K * sum_k c(Z_k)

    exactly solo-learn's loss at K = 2 (invariance of the pair, variance and covariance summed over
    the two views); every term is a mean (times 2), so the scale does not grow with K. All K
    large crops go through the backbone in one call. Large crops only: small crops are refused at
    config time.

    Extra cfg settings:
        method_kwargs:
            proj_hidden_dim (int): hidden width of the 3-layer projector.
            proj_output_dim (int): output width of the projector.
            sim_loss_weight (float): w_sim >= 0 (default 25).
            var_loss_weight (float): w_var >= 0 (default 25).
            cov_loss_weight (float): w_cov >= 0 (default 1).
    """

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.sim_loss_weight: float = kwargs.sim_loss_weight
        self.var_loss_weight: float = kwargs.var_loss_weight
        self.cov_loss_weight: float = kwargs.cov_loss_weight
        # (Linear-BN-ReLU) x 2, Linear
        self.projector = mlp(self.features_dim, kwargs.proj_hidden_dim, kwargs.proj_output_dim,
                             num_layers=3, batch_norm=True)

    @classmethod
    def add_and_assert_specific_cfg(cls, cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        cfg = super().add_and_assert_specific_cfg(cfg)
        require_positive_ints(cfg, "proj_hidden_dim", "proj_output_dim")
        for key, default in WEIGHT_DEFAULTS.items():
            cfg.method_kwargs[key] = select(cfg, f"method_kwargs.{key}", default)
            require(cfg, f"method_kwargs.{key}", number_above(0.0, strict=False), "a number >= 0")
        check_num_large_crops(cfg, "mv_vicreg")
        refuse_small_crops(cfg, "mv_vicreg")
        return cfg

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        out = super().training_step(batch, batch_idx)
        vicreg_loss = mv_vicreg_loss(
            out["z"],
            sim_loss_weight=self.sim_loss_weight,
            var_loss_weight=self.var_loss_weight,
            cov_loss_weight=self.cov_loss_weight,
        )
        self.log("train_vicreg_loss", vicreg_loss, on_epoch=True, sync_dist=True)
        return vicreg_loss + out["loss"]
