r"""K-view VICReg loss.

For K views ``z_k`` (B x D local, ``Z_k`` the same view gathered across ranks with gradient):

.. math::

    I = \binom{K}{2}^{-1} \sum_{i<j} \operatorname{mse}(z_i, z_j), \qquad
    V = \frac{2}{K} \sum_k v(Z_k), \qquad
    C = \frac{2}{K} \sum_k c(Z_k),

    L = w_{sim} I + w_{var} V + w_{cov} C,

with the per-view terms of solo-learn's ``vicreg_loss_func``:
``v(Z) = mean_d relu(1 - sqrt(Var_b(Z_d) + 1e-4))`` (unbiased variance) and
``c(Z) = (1/D) sum_{d != e} Cov(Z)_{de}^2`` (covariance with ``1/(N-1)``). The weights default to
25, 25, 1. At K = 2 the invariance term is ``mse(z_1, z_2)`` and ``V``, ``C`` are the sums over the
two views, so ``L`` equals solo-learn's loss; for larger K every term is a mean (times 2), so the
scale does not grow with K. As in solo-learn (and the official VICReg code) the invariance term
uses the local batch and the two regularisers the gathered batch.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from ._common import Views, stack_views
from .distributed import gather_with_grad

VAR_EPS = 1e-4


def variance_term(z: torch.Tensor) -> torch.Tensor:
    """``mean_d relu(1 - sqrt(var_d + 1e-4))`` of one (N, D) view."""
    std = torch.sqrt(z.var(dim=0) + VAR_EPS)
    return F.relu(1.0 - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances over D for one (N, D) view."""
    n, d = z.shape
    zc = z - z.mean(dim=0)
    cov = zc.T @ zc / (n - 1)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


def mv_vicreg_loss(
    z: Views,
    sim_loss_weight: float = 25.0,
    var_loss_weight: float = 25.0,
    cov_loss_weight: float = 1.0,
) -> torch.Tensor:
    """K-view VICReg loss (formula in the module docstring).

    Args:
        z: projections of the K views, ``(K, B, d)`` or a list of K ``(B, d)`` tensors (K >= 2).
        sim_loss_weight, var_loss_weight, cov_loss_weight: the weights ``w_sim, w_var, w_cov``.

    Returns:
        Scalar loss.
    """
    z = stack_views(z, "mv_vicreg_loss: z", min_views=2)
    K = z.shape[0]
    invariance = torch.stack(
        [F.mse_loss(z[i], z[j]) for i, j in itertools.combinations(range(K), 2)]
    ).mean()
    Z = gather_with_grad(z.transpose(0, 1).contiguous()).transpose(0, 1)
    variance = (2.0 / K) * sum(variance_term(Z[k]) for k in range(K))
    covariance = (2.0 / K) * sum(covariance_term(Z[k]) for k in range(K))
    return (
        sim_loss_weight * invariance
        + var_loss_weight * variance
        + cov_loss_weight * covariance
    )
