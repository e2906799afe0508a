"""mv_barlow_twins: Barlow Twins with K >= 2 large views."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import omegaconf
import torch

from solo_multiview.config.schema import setting
from solo_multiview.data.views import ViewKwargs
from solo_multiview.hosts.contract import KViewMethod
from solo_multiview.losses.mv_barlow_twins import mv_barlow_twins_loss
from solo_multiview.methods.heads import mlp


@dataclass
class MVBarlowTwinsKwargs(ViewKwargs):
    proj_hidden_dim: int = setting(help="hidden width of the projector", minimum=1)
    proj_output_dim: int = setting(help="output width of the projector", minimum=1)
    lamb: float = setting(0.0051, "weight of the off-diagonal (redundancy) term", minimum=0)
    scale_loss: float = setting(0.024, "overall scale of the loss", above=0)


def barlow_two_view(method: Any, out: Dict[str, Any], batch: Sequence[Any]) -> torch.Tensor:
    """solo-learn's two-view Barlow Twins (BatchNorm-standardised views, cross-correlation C):
    s * (sum_d (1 - C_dd)^2 + lamb * sum_{d != e} C_de^2), the declared K = 2 reference."""
    z1, z2 = out["z"][:2]
    n, d = z1.shape
    bn = torch.nn.functional.batch_norm
    c = bn(z1, None, None, training=True).T @ bn(z2, None, None, training=True) / n
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = (c - torch.diag(torch.diagonal(c))).pow(2).sum()
    return method.scale_loss * (on_diag + method.lamb * off_diag)


class MVBarlowTwins(KViewMethod):
    """K-view Barlow Twins (https://arxiv.org/abs/2103.03230 generalised to K views).

    Each view's projection z_k is standardised per feature over the (global) batch; for two views
    ``C^{ij} = z_i^T z_j / N`` and ``L_BT(i, j) = s * [sum_d (1 - C_dd)^2 + lambda *
    sum_{d != e} C_de^2]``. The K-view loss (``losses/mv_barlow_twins.py``) is the mean over the
    K(K-1)/2 unordered view pairs,

        L = 2 / (K(K-1)) * sum_{i < j} L_BT(i, j),

    exactly solo-learn's loss at K = 2, and its scale does not grow with K. All K large crops go
    through the backbone in one call. Large crops only: the cross-correlation of a small crop
    with a large one is not part of the method, so small crops are refused at config time.

    Keys: :class:`MVBarlowTwinsKwargs` (``method_kwargs``).
    """

    loss_name = "barlow"
    two_view_reference = barlow_two_view
    Kwargs = MVBarlowTwinsKwargs
    accepts_small_crops = False

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.lamb: float = kwargs.lamb
        self.scale_loss: float = kwargs.scale_loss
        # (Linear-BN-ReLU) x 2, Linear
        self.projector = mlp(self.features_dim, kwargs.proj_hidden_dim, kwargs.proj_output_dim,
                             num_layers=3, batch_norm=True)

    def kview_loss(self, out: Dict[str, Any], batch: Sequence[Any]
                   ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return mv_barlow_twins_loss(out["z"], lamb=self.lamb, scale_loss=self.scale_loss), {}
