r"""K-view MoCo v2+ loss with one key queue per view index.

Inputs: queries ``q_i`` (online encoder) and keys ``k_j`` (momentum encoder) of the K large views,
each B x d, and a queue tensor of shape ``(K, d, Q)``; column ``queue[j, :, m]`` is a key of view
``j`` from an earlier step. Queries, keys and queue columns are L2-normalised here (idempotent for
inputs that already are), keys and queue carry no gradient. For an ordered pair ``i != j`` and
sample ``b`` the logits are the positive ``s^+ = <q_{i,b}, k_{j,b}>`` and the negatives
``s^-_m = <q_{i,b}, queue[j, :, m]>``, all divided by the temperature ``t``:

.. math::

    \mathrm{nce}(q_i, k_j, Q_j)_b = -\log \frac{\exp(s^+/t)}
        {\exp(s^+/t) + \sum_m \exp(s^-_m/t)}, \qquad
    L = \frac{1}{K(K-1)} \sum_{i \ne j} \operatorname{mean}_b \mathrm{nce}(q_i, k_j, Q_j)_b .

At K = 2 this is solo-learn's ``(nce(q1, k2, queue[1]) + nce(q2, k1, queue[0])) / 2``. Every term
is a mean, so the scale does not grow with K.

Queue design (the method class owns it, this function only reads it): ``queue`` is a buffer of
shape ``(K, d, Q)`` (solo-learn uses ``(2, d, Q)``), initialised with random unit columns. After
each step the method enqueues the keys of view ``j`` (gathered across ranks, normalised, no
gradient) into ``queue[j]`` at a shared pointer, replacing the oldest columns, so that
``queue[j]`` only ever holds keys of view ``j``: the query of view ``i`` is contrasted with the
keys of view ``j`` of the current step (positive) and of earlier steps (negatives).

Band filter (``band``, a :class:`.band_filter.BandFilter`): negatives outside the band are
removed from the denominator; if the positive is outside the band the term ``(i, j, b)`` is
dropped; the loss is the mean over the remaining ``(i, j, b)`` terms (pooled over pairs; equal to
the formula above when nothing is dropped) and a zero that keeps the graph if none remain.

Distributed: queries, keys and queue are local (the queue holds keys gathered from all ranks);
the sum of the kept terms is divided by the number of kept terms of *all* ranks (all-reduced
without gradient, times the world size W), so the rank-averaged loss and DDP's averaged gradient
equal the single-process loss on the global batch, also when the filter keeps different numbers
of terms on different ranks.

Precision: the similarities (and so the filter's mask) are computed in float32 with autocast off,
half-precision queries, keys and queue promoted (a bfloat16 cosine is quantised by about 0.004).

Stats (detached): ``filtered_fraction`` (removed logits / all logits, positives included),
``num_positives`` (terms that contribute, local).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ._common import Views, check_temperature, masked_logsumexp, stack_views
from .band_filter import BandFilter
from .distributed import all_reduce_no_grad, rank_and_world


def mv_mocov2plus_loss(
    q: Views,
    k: Views,
    queue: torch.Tensor,
    temperature: float = 0.1,
    band: Optional[BandFilter] = None,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """K-view MoCo v2+ InfoNCE with per-view queues (module docstring).

    Args:
        q: queries of the K views, ``(K, B, d)`` or a list (K >= 2).
        k: keys of the K views (momentum encoder), same shape as ``q``.
        queue: ``(K, d, Q)`` past keys, ``queue[j]`` from view ``j``.
        temperature: ``t`` (> 0).
        band: optional extreme-feature filter (:class:`.band_filter.BandFilter`).

    Returns:
        ``(loss, stats)``.
    """
    t = check_temperature(temperature)
    q = stack_views(q, "mv_mocov2plus_loss: q", min_views=2)
    k = stack_views(k, "mv_mocov2plus_loss: k", min_views=2)
    K, B, d = q.shape
    if k.shape != q.shape:
        raise ValueError(
            f"mv_mocov2plus_loss: q and k must have the same shape; got {tuple(q.shape)} and "
            f"{tuple(k.shape)}"
        )
    if queue.dim() != 3 or queue.shape[:2] != (K, d):
        raise ValueError(
            f"mv_mocov2plus_loss: queue must have shape (K={K}, d={d}, queue_size); got "
            f"{tuple(queue.shape)}"
        )
    # similarities in float32 even under autocast: a bfloat16 cosine is quantised by ~0.004,
    # which moves entries across the band filter's thresholds
    with torch.autocast(device_type=q.device.type, enabled=False):
        return _mocov2plus(*(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
                             for x in (q, k, queue)), t, band)


def _mocov2plus(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float, band: Optional[BandFilter]
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    K, _, d = q.shape
    q = F.normalize(q, dim=-1)
    k = F.normalize(k.detach(), dim=-1)
    queue = F.normalize(queue.detach(), dim=1)

    total = q.new_zeros(())
    count = q.new_zeros(())
    removed = q.new_zeros(())
    n_logits = 0
    for j in range(K):
        others = [i for i in range(K) if i != j]
        qi = q[others].reshape(-1, d)  # ((K-1) B, d)
        pos = (q[others] * k[j].unsqueeze(0)).sum(dim=-1).reshape(-1, 1)
        neg = qi @ queue[j]  # ((K-1) B, Q)
        sim = torch.cat([pos, neg], dim=1)
        keep = torch.ones_like(sim, dtype=torch.bool) if band is None else band.keep(sim)
        logits = sim / t
        per_term = masked_logsumexp(logits, keep) - logits[:, 0]
        contrib = keep[:, 0].to(per_term.dtype)
        total = total + (per_term * contrib).sum()
        count = count + contrib.sum()
        removed = removed + (~keep).sum().detach().to(removed.dtype)
        n_logits += sim.numel()
    _, world = rank_and_world()
    if world == 1:
        loss = total / count.clamp(min=1.0)
    else:
        loss = total * world / all_reduce_no_grad(count).clamp(min=1.0)
    stats = {
        "filtered_fraction": (removed / max(n_logits, 1)).detach(),
        "num_positives": count.detach(),
    }
    return loss, stats
