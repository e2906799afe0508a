"""fastsiam: FastSiam (Pototzky et al., GCPR 2022), SimSiam with a K-view target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import omegaconf
import torch

from solo_multiview.config.schema import setting
from solo_multiview.data.views import ViewKwargs
from solo_multiview.hosts.contract import KViewMethod
from solo_multiview.losses.fastsiam import fastsiam_loss
from solo_multiview.methods.mv_simsiam import (
    simsiam_predictor,
    simsiam_projector,
    simsiam_two_view,
)


@dataclass
class FastSiamKwargs(ViewKwargs):
    proj_hidden_dim: int = setting(help="hidden width of the projector", minimum=1)
    proj_output_dim: int = setting(help="output width of the projector (and the predictor)",
                                   minimum=1)
    pred_hidden_dim: int = setting(help="hidden width of the predictor", minimum=1)


class FastSiam(KViewMethod):
    """FastSiam: the prediction of every crop is pulled towards the *mean* of the stop-gradient
    projections of the other large crops of its image (``losses/fastsiam.py``):

        L = -1/V sum_v mean_b cos(p_v, t_v),   t_v = mean_{j < K, j != v} sg(z_j)

    (a small crop's target is the mean of all K). At K = 2 it is SimSiam's symmetric loss
    exactly; for K > 2 it differs from mv_simsiam, which averages the cosines to each other view
    instead of taking the cosine to their mean. SimSiam's heads (3-layer projector, bottleneck
    predictor with a constant learning rate); no target network.

    Keys: :class:`FastSiamKwargs` (``method_kwargs``).
    """

    loss_name = "fastsiam"
    two_view_reference = simsiam_two_view
    Kwargs = FastSiamKwargs
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
        return fastsiam_loss(out["p"], out["z"][: self.loss_views])
