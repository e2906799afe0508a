r"""K-view SimCLR: multi-positive NT-Xent (the ``L_out`` form), with the optional band filter.

Input: ``z`` holds the projections of all crops of the local batch, crop-major (every image's crop
0, then every image's crop 1, ...), ``indexes`` the image identity of each row. With cosine
similarities ``s_ia = <z_i, z_a> / (|z_i| |z_a|)``, temperature ``t``, anchors ``i`` (local rows)
and candidates ``a`` (the rows of all ranks, gathered with gradient):

.. math::

    P(i) = \{p \ne i : \mathrm{id}(p) = \mathrm{id}(i)\}, \qquad
    \ell_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)}
        \log \frac{\exp(s_{ip}/t)}{\sum_{a \ne i} \exp(s_{ia}/t)}, \qquad
    L = \frac{1}{n} \sum_i \ell_i .

With K crops per image every anchor has K - 1 positives, and the positive average keeps the scale
independent of K (each term is a log-probability); at K = 2 it is NT-Xent exactly, i.e. solo-learn's
``simclr_loss_func``. (For K > 2 solo-learn uses the ``L_in`` form, ``-log(sum_p exp / sum)``; the
``L_out`` form chosen here is the one Khosla et al. found better behaved, and the usual definition
of multi-positive InfoNCE.)

Band filter (``band``, a :class:`.band_filter.BandFilter`): let ``keep_ia`` be the filter's
mask on ``s_ia``. Entries with ``keep_ia = 0`` are removed from every softmax sum; a positive that
is removed also loses its numerator term, so ``P(i)`` shrinks to the kept positives and the
denominator runs over ``{a != i : keep_ia}``. An anchor left with no positive does not contribute;
the loss is the mean over the remaining anchors (a zero that keeps the graph if none remain).

Precision: the similarities (and so the filter's mask) are computed in float32 with autocast off,
half-precision inputs promoted (a bfloat16 cosine is quantised by about 0.004).

Distributed: each rank scores its local anchors against the candidates of all ranks and divides
by the *global* number of contributing anchors (all-reduced without gradient, times the world
size W; :func:`.distributed.global_weighted_mean`), so the mean of the per-rank losses (what DDP's
gradient average and ``sync_dist`` logging see) equals the single-process loss on the global
batch, with the filter on as well (where ranks keep different numbers of anchors).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ._common import check_temperature, masked_logsumexp
from .band_filter import BandFilter
from .distributed import (
    gather_no_grad,
    gather_with_grad,
    global_weighted_mean,
    rank_and_world,
)


def mv_nt_xent(
    z: torch.Tensor,
    indexes: torch.Tensor,
    temperature: float = 0.1,
    band: Optional[BandFilter] = None,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Multi-positive NT-Xent over all crops (formula in the module docstring).

    Args:
        z: ``(n, d)`` projections of all crops of the local batch (crop-major).
        indexes: ``(n,)`` image identity of each row (rows with equal identity are positives).
        temperature: softmax temperature ``t`` (> 0).
        band: optional extreme-feature filter (:class:`.band_filter.BandFilter`); ``None``
            disables it.

    Returns:
        ``(loss, stats)``; ``stats`` holds detached scalars: ``filtered_fraction`` (removed
        off-diagonal entries / all off-diagonal entries of the local-anchor x global-candidate
        matrix), ``num_positives`` (kept anchor-positive pairs) and ``num_anchors`` (anchors that
        contribute), both counted over the local anchors. Under DDP ``loss`` is this rank's share
        (module docstring): the rank average is the global loss.
    """
    t = check_temperature(temperature)
    if z.dim() != 2:
        raise ValueError(f"mv_nt_xent: z must be (n, d); got shape {tuple(z.shape)}")
    if indexes.shape != (z.shape[0],):
        raise ValueError(
            f"mv_nt_xent: indexes must have shape ({z.shape[0]},); got {tuple(indexes.shape)}"
        )
    # similarities in float32 even under autocast: a bfloat16 cosine is quantised by ~0.004,
    # which moves entries across the band filter's thresholds
    with torch.autocast(device_type=z.device.type, enabled=False):
        if z.dtype in (torch.float16, torch.bfloat16):
            z = z.float()
        return _mv_nt_xent(z, indexes, t, band)


def _mv_nt_xent(
    z: torch.Tensor, indexes: torch.Tensor, t: float, band: Optional[BandFilter]
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    n = z.shape[0]
    z = F.normalize(z, dim=-1)
    all_z = gather_with_grad(z)
    all_idx = gather_no_grad(indexes)
    rank, _ = rank_and_world()

    sim = z @ all_z.T  # (n, N)
    rows = torch.arange(n, device=z.device)
    self_mask = torch.zeros_like(sim, dtype=torch.bool)
    self_mask[rows, rows + rank * n] = True

    valid = ~self_mask
    if band is not None:
        valid &= band.keep(sim)
    pos = (indexes.view(-1, 1) == all_idx.view(1, -1)) & ~self_mask
    pos_kept = pos & valid

    logits = sim / t
    log_prob = logits - masked_logsumexp(logits, valid).unsqueeze(1)
    n_pos = pos_kept.sum(dim=1)
    pos_sum = torch.where(pos_kept, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    per_anchor = -pos_sum / n_pos.clamp(min=1).to(log_prob.dtype)
    loss = global_weighted_mean(per_anchor, n_pos > 0)

    with torch.no_grad():
        off_diag = max(sim.numel() - n, 1)
        stats = {
            "filtered_fraction": (~valid & ~self_mask).sum().float() / off_diag,
            "num_positives": n_pos.sum().float(),
            "num_anchors": (n_pos > 0).sum().float(),
        }
    return loss, stats
