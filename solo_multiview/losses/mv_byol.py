r"""K-view BYOL loss.

``p_v`` are the online predictions of views ``v = 0..V-1`` (the K large crops first, then S small
crops), ``z_j`` the momentum (target) projections of the K large crops only, and

.. math:: l(p, z) = 2 - 2\, \operatorname{mean}_b \cos(p_b, \operatorname{sg}(z_b)).

Without small crops (V = K) the loss is the mean over unordered view pairs of the symmetrised
two-view loss:

.. math::

    L = \binom{K}{2}^{-1} \sum_{i<j} \big[l(p_i, z_j) + l(p_j, z_i)\big]
      = \frac{2}{K(K-1)} \sum_{i \ne j} l(p_i, z_j).

At K = 2 this is ``l(p_1, z_2) + l(p_2, z_1)``, solo-learn's BYOL loss (it sums over the two
ordered pairs). With small crops every small crop is compared with every large-crop target, and
the same normalisation is kept: twice the mean over all ``K(K-1) + S K`` (prediction, target)
pairs,

.. math::

    L = \frac{2}{K(K-1) + S K} \sum_{j < K} \sum_{v \ne j} l(p_v, z_j).

So the loss stays in ``[0, 8]`` whatever K and S are (solo-learn instead sums the same pairs, which
grows with the number of crops; at K = 2 with S > 0 solo's sum equals ``(1 + S) L``).
"""

from __future__ import annotations

import torch

from ._common import Views, paired_prediction_cosines


def mv_byol_loss(p: Views, z: Views) -> torch.Tensor:
    """K-view BYOL loss (formula in the module docstring).

    Args:
        p: predictions of all V crops, ``(V, B, d)`` or a list (large crops first).
        z: momentum projections of the K large crops, ``(K, B, d)`` or a list; K <= V, K >= 2.
            Detached here (stop-gradient).

    Returns:
        Scalar loss.
    """
    return 2.0 * (2.0 - 2.0 * paired_prediction_cosines(p, z, "mv_byol_loss")).mean()
