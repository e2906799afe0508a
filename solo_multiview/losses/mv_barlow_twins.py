r"""K-view Barlow Twins loss.

Each view ``z_k`` (N x D, the global batch: gathered across ranks with gradient) is standardised
per feature with batch statistics, like ``BatchNorm1d(D, affine=False)`` in training mode
(biased variance, eps = 1e-5): ``\hat z_k = (z_k - mean) / sqrt(var + eps)``. For a pair of views

.. math::

    C^{ij} = \frac{1}{N} \hat z_i^\top \hat z_j, \qquad
    \mathcal{L}_{BT}(i, j) = s \Big[\sum_d (1 - C^{ij}_{dd})^2
        + \lambda \sum_{d \ne e} (C^{ij}_{de})^2\Big]

with ``s = scale_loss`` (0.025) and ``lambda = lamb`` (5e-3) as in solo-learn's
``barlow_loss_func``. The K-view loss is the mean over the ``K(K-1)/2`` unordered pairs
(``C^{ji} = (C^{ij})^T`` gives the same value), so it equals the two-view loss at K = 2 and does
not grow with K.

Distributed: solo-learn normalises each rank's slice with that rank's statistics and averages the
per-rank cross-correlations with an ``all_reduce`` (which carries no gradient). Here the views are
gathered with gradient first, so the normalisation and ``C`` use the statistics of the whole global
batch and the distributed loss equals the single-process loss on the same global batch. On one
process both are identical.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from ._common import Views, stack_views
from .distributed import gather_with_grad

BN_EPS = 1e-5


def barlow_pair_loss(
    z1_hat: torch.Tensor, z2_hat: torch.Tensor, lamb: float, scale_loss: float
) -> torch.Tensor:
    """Barlow Twins loss of two already batch-standardised (N, D) views."""
    n, d = z1_hat.shape
    corr = z1_hat.T @ z2_hat / n
    on_diag = (torch.diagonal(corr) - 1.0).pow(2).sum()
    off_diag = corr.pow(2).sum() - torch.diagonal(corr).pow(2).sum()
    return scale_loss * (on_diag + lamb * off_diag)


def mv_barlow_twins_loss(z: Views, lamb: float = 5e-3, scale_loss: float = 0.025) -> torch.Tensor:
    """Mean over unordered view pairs of the Barlow Twins loss (module docstring).

    Args:
        z: projections of the K views, ``(K, B, d)`` or a list of K ``(B, d)`` tensors (K >= 2).
        lamb: weight of the off-diagonal terms.
        scale_loss: overall scale.

    Returns:
        Scalar loss.
    """
    z = stack_views(z, "mv_barlow_twins_loss: z", min_views=2)
    K = z.shape[0]
    # gather (B, K, d) along the batch dim so all views of a sample stay aligned across ranks
    z = gather_with_grad(z.transpose(0, 1).contiguous()).transpose(0, 1)
    z_hat = [F.batch_norm(z[k], None, None, training=True, eps=BN_EPS) for k in range(K)]
    losses = [
        barlow_pair_loss(z_hat[i], z_hat[j], lamb, scale_loss)
        for i, j in itertools.combinations(range(K), 2)
    ]
    return torch.stack(losses).mean()
