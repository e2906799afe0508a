r"""FastSiam loss: SimSiam with a multi-view target.

Pototzky, Sultan and Schmidt-Thieme, "FastSiam: Resource-Efficient Self-supervised Learning on a
Single GPU" (GCPR 2022). Every view's prediction is matched to the *average* of the stop-gradient
projections of the other views, which gives a more stable target than SimSiam's single view.

``p_v`` are the predictions of the crops ``v = 0..V-1`` (K large crops first, then S = V - K
optional small crops), ``z_j`` the projections of the K large crops, ``sg`` stop-gradient:

.. math::

    t_v = \begin{cases}
        \frac{1}{K-1} \sum_{j < K,\, j \ne v} \operatorname{sg}(z_j) & v < K \\
        \frac{1}{K} \sum_{j < K} \operatorname{sg}(z_j) & v \ge K \text{ (small crop)}
    \end{cases}, \qquad
    L = -\frac{1}{V} \sum_{v < V} \operatorname{mean}_b \cos(p_{v,b}, t_{v,b}).

The target is the mean of the raw projections (not of their unit vectors), as in the paper's
description and lightly's reference example; the cosine normalises it afterwards. A small crop has
no projection of its own among the targets, so it is matched to the mean of all K large crops.

At K = 2 (no small crops) ``t_0 = sg(z_1)``, ``t_1 = sg(z_0)`` and
``L = (D(p_0, z_1) + D(p_1, z_0)) / 2`` with ``D = -cos``: solo-learn's ``simsiam_loss_func``
symmetrised, i.e. exactly :func:`.mv_simsiam.mv_simsiam_loss` at K = 2. For K > 2 the two differ:
mv_simsiam averages the cosines to every other view, FastSiam takes the cosine to their average.

Scale: a mean of cosines, so ``L`` lies in ``[-1, 1]`` for every K and V. The paper uses K = 4.

Cost: O(V B d) (one sum over the K targets, a leave-one-out subtraction and V B cosines); no
cross-sample term, so nothing is gathered across ranks (the mean of the per-rank losses is the
global loss when every rank has the same batch size).
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from ._common import Views, stack_views


def fastsiam_targets(z: torch.Tensor) -> torch.Tensor:
    """Leave-one-out means ``(sum_j z_j - z_v) / (K - 1)`` of the ``(K, B, d)`` targets."""
    k = z.shape[0]
    return (z.sum(dim=0, keepdim=True) - z) / (k - 1)


def fastsiam_loss(p: Views, z: Views) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """FastSiam loss (formula in the module docstring).

    Args:
        p: predictions of all V crops, ``(V, B, d)`` or a list of V ``(B, d)`` tensors (large
            crops first).
        z: projections of the K large crops (2 <= K <= V), same ``(B, d)``; detached here.

    Returns:
        ``(loss, stats)``; ``stats`` holds the detached scalar ``target_cosine`` (``-loss``, the
        mean cosine of the predictions to their targets). (:func:`.mv_simsiam.mv_simsiam_loss`
        returns the bare loss; this function follows the ``(loss, stats)`` convention of
        :func:`.mv_simclr.mv_nt_xent`.)
    """
    p = stack_views(p, "fastsiam_loss: p", min_views=2)
    z = stack_views(z, "fastsiam_loss: z", min_views=2)
    if z.shape[0] > p.shape[0]:
        raise ValueError(
            f"fastsiam_loss: got {z.shape[0]} target views z but only {p.shape[0]} prediction "
            "views p; targets exist for the large crops, predictions for every crop"
        )
    if p.shape[1:] != z.shape[1:]:
        raise ValueError(
            "fastsiam_loss: p and z must share (B, d); got "
            f"{tuple(p.shape)} and {tuple(z.shape)}"
        )
    k, v = z.shape[0], p.shape[0]
    z = z.detach()
    targets = fastsiam_targets(z)
    if v > k:
        small = z.mean(dim=0, keepdim=True).expand(v - k, -1, -1)
        targets = torch.cat([targets, small], dim=0)
    cos = (F.normalize(p, dim=-1) * F.normalize(targets, dim=-1)).sum(dim=-1)  # (V, B)
    loss = -cos.mean()
    return loss, {"target_cosine": -loss.detach()}
