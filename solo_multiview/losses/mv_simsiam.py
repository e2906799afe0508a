r"""K-view SimSiam loss.

``p_v`` are the predictions of the crops ``v = 0..V-1`` (K large first, then S optional small
crops), ``z_j`` the projections of the K large crops, ``sg`` stop-gradient:

.. math::

    L = -\frac{1}{K(K-1) + S K} \sum_{j < K} \sum_{v \ne j}
        \operatorname{mean}_b \cos(p_{v,b}, \operatorname{sg}(z_{j,b})).

Without small crops this is the mean over the ``K(K-1)`` ordered pairs ``i != j`` of
``-cos(p_i, sg(z_j))``; at K = 2 it is solo-learn's ``(l(p_1, z_2) + l(p_2, z_1)) / 2``. Small
crops (if any) are compared with every large crop. The value lies in ``[-1, 1]`` for every K.
"""

from __future__ import annotations

import torch

from ._common import Views, paired_prediction_cosines


def mv_simsiam_loss(p: Views, z: Views) -> torch.Tensor:
    """K-view SimSiam loss (formula in the module docstring).

    Args:
        p: predictions of all V crops, ``(V, B, d)`` or a list (large crops first).
        z: projections of the K large crops (K >= 2, K <= V); detached here.

    Returns:
        Scalar loss.
    """
    return -paired_prediction_cosines(p, z, "mv_simsiam_loss").mean()
