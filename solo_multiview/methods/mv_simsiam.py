"""mv_simsiam: SimSiam with K >= 2 large views (and optional small crops)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import omegaconf
import torch
import torch.nn.functional as F
from torch import nn

from solo_multiview.config.schema import setting
from solo_multiview.data.views import ViewKwargs
from solo_multiview.hosts.contract import KViewMethod
from solo_multiview.losses.mv_simsiam import mv_simsiam_loss


def simsiam_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """SimSiam's 3-layer projector: (Linear-BN-ReLU) x 2, Linear, BN without affine.

    Linear layers followed by a BN carry no bias (the BN would remove it)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim, bias=False),
        nn.BatchNorm1d(out_dim, affine=False),
    )


def simsiam_predictor(dim: int, hidden_dim: int) -> nn.Sequential:
    """SimSiam's bottleneck predictor: Linear (no bias) - BN - ReLU - Linear."""
    return nn.Sequential(
        nn.Linear(dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, dim),
    )


@dataclass
class MVSimSiamKwargs(ViewKwargs):
    proj_hidden_dim: int = setting(help="hidden width of the projector", minimum=1)
    proj_output_dim: int = setting(help="output width of the projector (and the predictor)",
                                   minimum=1)
    pred_hidden_dim: int = setting(help="hidden width of the predictor", minimum=1)


def simsiam_two_view(method: Any, out: Dict[str, Any], batch: Sequence[Any]) -> torch.Tensor:
    """solo-learn's two-view SimSiam, -(cos(p_1, sg z_2) + cos(p_2, sg z_1)) / 2: the declared
    K = 2 reference."""
    p1, p2 = out["p"][:2]
    z1, z2 = (z.detach() for z in out["z"][:2])
    return -(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()) / 2


class MVSimSiam(KViewMethod):
    """K-view SimSiam (https://arxiv.org/abs/2011.10566 generalised to K views).

    The prediction p_v of every crop v is pulled towards the stop-gradient projection z_j of
    every *other* large crop j of the same image. K large and S small crops
    (``losses/mv_simsiam.py``):

        L = -1 / (K(K-1) + S K) * sum_{j < K} sum_{v != j} mean_b cos(p_{v,b}, sg(z_{j,b}))

    the mean over all (prediction, target) pairs; at K = 2, S = 0 this is solo-learn's
    ``(D(p_1, z_2) + D(p_2, z_1)) / 2`` and it stays in [-1, 1] for every K and S. Small crops
    only predict. All K large crops go through the backbone in one call, the S small crops of one
    size in one more. As in solo-learn, the predictor keeps a constant learning rate
    (``static_lr``) under the schedule.

    Keys: :class:`MVSimSiamKwargs` (``method_kwargs``).
    """

    loss_name = "simsiam"
    two_view_reference = simsiam_two_view
    Kwargs = MVSimSiamKwargs

    predictor_static_lr = True

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.projector = simsiam_projector(self.features_dim, kwargs.proj_hidden_dim,
                                           kwargs.proj_output_dim)
        # the predictor reads the (fused) projection
        self.predictor = simsiam_predictor(self.fused_dim(kwargs.proj_output_dim),
                                           kwargs.pred_hidden_dim)

    def kview_loss(self, out: Dict[str, Any], batch: Sequence[Any]
                   ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        # predictions of all K + S crops, stop-gradient targets of the K large crops
        large_z = out["z"][: self.loss_views]
        simsiam_loss = mv_simsiam_loss(out["p"], large_z)
        with torch.no_grad():  # collapse monitor: per-dimension std of the unit projections
            z_std = F.normalize(torch.stack(large_z), dim=-1).std(dim=1).mean()
        # train_neg_cos_sim is solo-learn's name for the same value
        return simsiam_loss, {"neg_cos_sim": simsiam_loss, "z_std": z_std}

