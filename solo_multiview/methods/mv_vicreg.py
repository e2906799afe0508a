"""mv_vicreg: VICReg with K >= 2 large views."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import omegaconf
import torch

from solo_multiview.config.schema import setting
from solo_multiview.data.views import ViewKwargs
from solo_multiview.hosts.contract import KViewMethod
from solo_multiview.losses.mv_vicreg import mv_vicreg_loss
from solo_multiview.methods.heads import mlp


@dataclass
class MVVICRegKwargs(ViewKwargs):
    proj_hidden_dim: int = setting(help="hidden width of the projector", minimum=1)
    proj_output_dim: int = setting(help="output width of the projector", minimum=1)
    sim_loss_weight: float = setting(25.0, "weight of the invariance term", minimum=0)
    var_loss_weight: float = setting(25.0, "weight of the variance term", minimum=0)
    cov_loss_weight: float = setting(1.0, "weight of the covariance term", minimum=0)


def vicreg_two_view(method: Any, out: Dict[str, Any], batch: Sequence[Any]) -> torch.Tensor:
    """solo-learn's two-view VICReg (invariance mse, variance hinge on the std, off-diagonal
    covariance), the declared K = 2 reference."""
    z1, z2 = out["z"][:2]
    n, d = z1.shape

    def variance(z: torch.Tensor) -> torch.Tensor:
        return torch.relu(1 - torch.sqrt(z.var(dim=0) + 1e-4)).mean()

    def covariance(z: torch.Tensor) -> torch.Tensor:
        z = z - z.mean(dim=0)
        cov = z.T @ z / (n - 1)
        return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d

    return (method.sim_loss_weight * torch.nn.functional.mse_loss(z1, z2)
            + method.var_loss_weight * (variance(z1) + variance(z2))
            + method.cov_loss_weight * (covariance(z1) + covariance(z2)))


class MVVICReg(KViewMethod):
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

    Keys: :class:`MVVICRegKwargs` (``method_kwargs``).
    """

    loss_name = "vicreg"
    two_view_reference = vicreg_two_view
    Kwargs = MVVICRegKwargs
    accepts_small_crops = False

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.sim_loss_weight: float = kwargs.sim_loss_weight
        self.var_loss_weight: float = kwargs.var_loss_weight
        self.cov_loss_weight: float = kwargs.cov_loss_weight
        # (Linear-BN-ReLU) x 2, Linear
        self.projector = mlp(self.features_dim, kwargs.proj_hidden_dim, kwargs.proj_output_dim,
                             num_layers=3, batch_norm=True)

    def kview_loss(self, out: Dict[str, Any], batch: Sequence[Any]
                   ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        loss = mv_vicreg_loss(out["z"], sim_loss_weight=self.sim_loss_weight,
                              var_loss_weight=self.var_loss_weight,
                              cov_loss_weight=self.cov_loss_weight)
        return loss, {}
