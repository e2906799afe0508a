"""mv_byol: BYOL with K >= 2 large views (and optional small crops)."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import omegaconf
import torch
import torch.nn.functional as F

from solo_multiview.hosts.contract import BaseMomentumMethod
from solo_multiview.losses.mv_byol import mv_byol_loss
from solo_multiview.methods.heads import mlp
from solo_multiview.methods.options import (
    check_num_large_crops,
    require_positive_ints,
)
from solo_multiview.methods.projection import MomentumProjectorOutputs


class MVBYOL(MomentumProjectorOutputs, BaseMomentumMethod):
    """K-view BYOL (https://arxiv.org/abs/2006.07733 generalised to K views).

    The online network (backbone, projector, predictor) predicts, from every crop v, the
    momentum projection z'_j of every *other* large crop j of the same image. With
    ``l(p, z) = 2 - 2 * mean_b cos(p_b, sg(z_b))``, K large and S small crops
    (``losses/mv_byol.py``):

        L = 2 / (K(K-1) + S K) * sum_{j < K} sum_{v != j} l(p_v, z'_j)

    i.e. twice the mean over all (prediction, target) pairs. At K = 2, S = 0 this is solo-learn's
    ``l(p_1, z'_2) + l(p_2, z'_1)``; the scale does not grow with K or S. Small crops only
    predict (the momentum network sees the K large crops). All K large crops go through the
    backbone in one call, and through the momentum backbone in one call; the S small crops of one
    size in one more call.

    The momentum backbone and projector follow ``target = tau * target + (1 - tau) * online``
    after every optimizer step, tau on the cosine schedule ``momentum.base_tau`` ->
    ``momentum.final_tau``.

    Extra cfg settings:
        method_kwargs:
            proj_hidden_dim (int): hidden width of the projector.
            proj_output_dim (int): output width of the projector (and of the predictor).
            pred_hidden_dim (int): hidden width of the predictor.
        momentum:
            base_tau, final_tau (float): EMA coefficient schedule (host defaults 0.99 -> 1.0).
    """

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        proj_hidden_dim: int = kwargs.proj_hidden_dim
        proj_output_dim: int = kwargs.proj_output_dim
        pred_hidden_dim: int = kwargs.pred_hidden_dim

        # projector (Linear-BN-ReLU-Linear) and its EMA copy, which never receives gradients
        self.projector = mlp(self.features_dim, proj_hidden_dim, proj_output_dim,
                             num_layers=2, batch_norm=True)
        self.momentum_projector = copy.deepcopy(self.projector)
        for param in self.momentum_projector.parameters():
            param.requires_grad = False

        # predictor (Linear-BN-ReLU-Linear)
        self.predictor = mlp(proj_output_dim, pred_hidden_dim, proj_output_dim,
                             num_layers=2, batch_norm=True)

    @classmethod
    def add_and_assert_specific_cfg(cls, cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        cfg = super().add_and_assert_specific_cfg(cfg)
        require_positive_ints(cfg, "proj_hidden_dim", "proj_output_dim", "pred_hidden_dim")
        check_num_large_crops(cfg, "mv_byol")
        return cfg

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        out = super().training_step(batch, batch_idx)
        # predictions of all K + S crops, momentum targets of the K large crops
        byol_loss = mv_byol_loss(out["p"], out["momentum_z"])

        with torch.no_grad():  # collapse monitor: per-dimension std of the unit projections
            z = torch.stack(out["z"][: self.num_large_crops])
            z_std = F.normalize(z, dim=-1).std(dim=1).mean()

        # train_neg_cos_sim is solo-learn's name for the same value
        self.log_dict(
            {"train_byol_loss": byol_loss, "train_neg_cos_sim": byol_loss, "train_z_std": z_std},
            on_epoch=True, sync_dist=True,
        )
        return byol_loss + out["loss"]
