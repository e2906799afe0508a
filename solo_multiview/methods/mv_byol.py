"""mv_byol: BYOL with K >= 2 large views (and optional small crops)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import omegaconf
import torch
import torch.nn.functional as F

from solo_multiview.config.schema import setting
from solo_multiview.data.views import ViewKwargs
from solo_multiview.hosts.contract import KViewMomentumMethod
from solo_multiview.losses.mv_byol import mv_byol_loss
from solo_multiview.methods.heads import mlp


@dataclass
class MVBYOLKwargs(ViewKwargs):
    proj_hidden_dim: int = setting(help="hidden width of the projector", minimum=1)
    proj_output_dim: int = setting(help="output width of the projector (and the predictor)",
                                   minimum=1)
    pred_hidden_dim: int = setting(help="hidden width of the predictor", minimum=1)


def byol_two_view(method: Any, out: Dict[str, Any], batch: Sequence[Any]) -> torch.Tensor:
    """solo-learn's two-view BYOL, l(p_1, z'_2) + l(p_2, z'_1) with l = 2 - 2 cos: the declared
    K = 2 reference."""
    p1, p2 = out["p"][:2]
    m1, m2 = (z.detach() for z in out["momentum_z"][:2])
    return (2 - 2 * F.cosine_similarity(p1, m2).mean()
            + 2 - 2 * F.cosine_similarity(p2, m1).mean())


class MVBYOL(KViewMomentumMethod):
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

    Keys: :class:`MVBYOLKwargs` (``method_kwargs``).
    """

    loss_name = "byol"
    two_view_reference = byol_two_view
    Kwargs = MVBYOLKwargs

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
        fused = self.fused_dim(proj_output_dim)  # the predictor reads the (fused) projection
        self.predictor = mlp(fused, pred_hidden_dim, fused,
                             num_layers=2, batch_norm=True)

    def kview_loss(self, out: Dict[str, Any], batch: Sequence[Any]
                   ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        # predictions of all K + S crops, momentum targets of the K large crops
        byol_loss = mv_byol_loss(out["p"], out["momentum_z"])
        with torch.no_grad():  # collapse monitor: per-dimension std of the unit projections
            z = torch.stack(out["z"][: self.loss_views])
            z_std = F.normalize(z, dim=-1).std(dim=1).mean()
        # train_neg_cos_sim is solo-learn's name for the same value
        return byol_loss, {"neg_cos_sim": byol_loss, "z_std": z_std}

