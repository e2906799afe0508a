r"""The MTTV / MIMV loss (arXiv 2509.08469): InfoNCE with the extreme-feature filter.

The method fuses an online embedding ``z_online[m] = f(x_n) + f(y_a)`` and a momentum embedding
``z_target[m] = f'(x_a) + f'(y_n)`` per pair ``m``. The loss sees the 2M embeddings
``u = {z_online[m]} + {z_target[m]}`` (L2-normalised, ``s_ia`` = cosine); the positive ``p(i)`` of
``z_online[m]`` is ``z_target[m]`` and vice versa, every other embedding is a negative. Anchors are
the local 2M rows; candidates are the embeddings of all ranks (``z_online`` gathered with gradient,
``z_target`` gathered without: it is treated as a stop-gradient target and detached here).
``keep_ia`` is the band filter (:mod:`.band_filter`) on ``s_ia`` (``band=None``: keep all).

``form="principled"`` (default):

.. math::

    \ell_i = -\log \frac{\exp(s_{ip}/t)}{\sum_{a \ne i,\ keep_{ia}} \exp(s_{ia}/t)}, \qquad
    L = \operatorname{mean}_{i:\ keep_{ip}} \ell_i

The self-similarity is excluded exactly once (by index, independent of the band); an anchor whose
positive lies outside the band is dropped (mean over the remaining anchors; a zero that keeps the
graph if none remain). With ``band=None`` this is NT-Xent on the 2M embeddings.

``form="official"`` reproduces the authors' ``Our_xent_loss`` (``Loss/loss.py`` of
anonymouspersoncscv/MTTV):

.. math::

    r_i = \frac{[keep_{ip}] \exp(s_{ip}/t)}
               {\sum_{a:\ keep_{ia}} \exp(s_{ia}/t) - e^{1/t}}, \qquad
    L = -\log\Big(\frac{1}{2M} \sum_i r_i\Big)

where the sum over ``a`` *includes* ``a = i`` when the filter keeps it. Two departures from a
standard InfoNCE are reproduced on purpose, only so that the published numbers can be reproduced:
(1) it is the log of a mean of ratios, not a mean of logs; (2) ``exp(1/t)`` (the self-similarity
term for ``s_ii = 1``) is subtracted even when the mask already removed the self-similarity, which
is always the case for ``high < 1`` (``|s_ii| = 1 > high``). The self term is then taken out
twice, so each denominator is short by ``exp(1/t)`` and can become small, zero or negative
(garbage ratios, a NaN loss) when few entries survive the filter, e.g. with small batches. With
``band=None`` the subtraction stands in for removing ``a = i`` and is exact only if ``s_ii`` is
exactly 1, so at small ``t`` in low precision it is a catastrophic cancellation. The ratio is
computed in the equivalent scaled form ``exp((s - 1)/t) / (sum exp((s - 1)/t) - 1)`` to avoid
overflow at small ``t``.

Distributed (both forms exact): anchors are the local rows, candidates those of all ranks. In the
principled form the mean runs over the kept anchors of *all* ranks (the count is all-reduced
without gradient, :func:`.distributed.global_weighted_mean`). In the official form the sum inside
the log is all-reduced too: with ``R`` the global sum of the ratios over ``N`` anchors and ``R_r``
this rank's part, rank ``r`` returns ``-log(R / N) - W (R_r - sg(R_r)) / sg(R)``, whose value is the
global loss on every rank and whose rank-averaged gradient is ``-grad(R) / R``, the gradient of
the single-process ``-log(R / N)``. So the rank-averaged loss and DDP's averaged gradient equal the
single-process ones on the global batch (the authors' code trained on one GPU).

Stats (detached): ``filtered_fraction`` (removed off-diagonal entries / all off-diagonal entries,
local anchors x global candidates), ``pos_cos`` (mean ``s_ip``), ``neg_cos`` (mean ``s_ia`` over
``a not in {i, p(i)}``; the authors' monitor also averages in the self-similarity), ``alignment``
(Wang & Isola, alpha = 2: mean ``||u_i - u_p||^2`` over positive pairs of the normalised
embeddings, i.e. ``2 - 2 pos_cos``), ``uniformity`` (``log mean exp(-2 ||u_i - u_a||^2)`` over
distinct pairs, t = 2). The authors compute the last two on unnormalised embeddings; here they use
the normalised ones, as Wang & Isola define them. The official form adds
``nonpositive_denominators``: the number of rows (over all ranks) whose denominator is <= 0; a
caller that wants to stop on them (``methods/mttv.py`` does) reads it, one host sync per step.
The stats are masked sums and counts known on the host, so computing them does not synchronise.

Precision: half-precision inputs are promoted to float32 and the similarities, exponentials and
sums run with autocast off (float64 inputs stay float64), so the loss is float32 under
``bf16-mixed`` / ``16-mixed`` too: ``exp(1/t)`` minus a sum of up to 4MW terms is a cancellation
that half precision cannot carry.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ._common import check_temperature, masked_logsumexp
from .band_filter import BandFilter
from .distributed import (
    all_reduce_no_grad,
    gather_no_grad,
    gather_with_grad,
    global_weighted_mean,
    rank_and_world,
)

MTTV_FORMS = ("principled", "official")
#: the authors' CIFAR band, [0.1, 0.9]
OFFICIAL_BAND = BandFilter(0.1, 0.9)


class OfficialFormError(RuntimeError):
    """The official form of the loss is undefined at this step (a denominator <= 0); the message
    is one line that says why and what to do. The pretraining entry point prints it as
    ``error: ...`` and exits with code 2 (no traceback)."""


def mttv_infonce(
    z_online: torch.Tensor,
    z_target: torch.Tensor,
    temperature: float = 0.3,
    band: Optional[BandFilter] = OFFICIAL_BAND,
    form: str = "principled",
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Filtered InfoNCE of MTTV (formulas in the module docstring).

    Args:
        z_online: ``(M, d)`` fused online embeddings (carry the gradient).
        z_target: ``(M, d)`` fused momentum embeddings; positive of the same row (detached).
        temperature: ``t`` (official: 0.3).
        band: the extreme-feature filter (official: ``BandFilter(0.1, 0.9)``); None keeps
            every similarity.
        form: ``principled`` (default) or ``official`` (faithful reproduction).

    Returns:
        ``(loss, stats)`` with stats ``filtered_fraction, pos_cos, neg_cos, alignment,
        uniformity`` (and ``nonpositive_denominators`` in the official form).
    """
    t = check_temperature(temperature)
    if form not in MTTV_FORMS:
        raise ValueError(f"mttv_infonce: form must be one of {', '.join(MTTV_FORMS)}; got {form!r}")
    if z_online.dim() != 2 or z_online.shape != z_target.shape:
        raise ValueError(
            "mttv_infonce: z_online and z_target must both be (M, d) with the same shape; got "
            f"{tuple(z_online.shape)} and {tuple(z_target.shape)}"
        )
    M = z_online.shape[0]
    with torch.autocast(device_type=z_online.device.type, enabled=False):
        loss, stats = _mttv_infonce(z_online, z_target, t, band, form, M)
    return loss, stats


def _fp32(z: torch.Tensor) -> torch.Tensor:
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def _mttv_infonce(
    z_online: torch.Tensor, z_target: torch.Tensor, t: float, band: Optional[BandFilter],
    form: str, M: int,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """:func:`mttv_infonce` after its checks, under ``autocast(enabled=False)``."""
    zo = F.normalize(_fp32(z_online), dim=-1)
    zt = F.normalize(_fp32(z_target.detach()), dim=-1)
    rank, world = rank_and_world()
    all_o = gather_with_grad(zo)
    all_t = gather_no_grad(zt)
    MW = all_o.shape[0]

    anchors = torch.cat([zo, zt], dim=0)  # (2M, d)
    cands = torch.cat([all_o, all_t], dim=0)  # (2MW, d)
    sim = anchors @ cands.T

    local = torch.arange(M, device=sim.device) + rank * M
    self_col = torch.cat([local, local + MW])
    pos_col = torch.cat([local + MW, local])
    rows = torch.arange(2 * M, device=sim.device)
    self_mask = torch.zeros_like(sim, dtype=torch.bool)
    self_mask[rows, self_col] = True

    keep = torch.ones_like(sim, dtype=torch.bool) if band is None else band.keep(sim)
    pos_kept = keep[rows, pos_col]
    pos_sim = sim[rows, pos_col]

    extra: Dict[str, torch.Tensor] = {}
    if form == "principled":
        logits = sim / t
        per_anchor = masked_logsumexp(logits, keep & ~self_mask) - pos_sim / t
        loss = global_weighted_mean(per_anchor, pos_kept)
    else:
        scaled = torch.exp((sim - 1.0) / t)
        denom = torch.where(keep, scaled, torch.zeros_like(scaled)).sum(dim=1) - 1.0
        numer = torch.where(pos_kept, torch.exp((pos_sim - 1.0) / t), torch.zeros_like(pos_sim))
        ratios = numer / denom
        bad = (denom.detach() <= 0).sum().to(sim.dtype)
        extra["nonpositive_denominators"] = bad if world == 1 else all_reduce_no_grad(bad)
        if world == 1:
            loss = -torch.log(ratios.mean())
        else:  # exact under DDP (module docstring)
            local_sum = ratios.sum()
            total = all_reduce_no_grad(local_sum)
            loss = -torch.log(total / (ratios.numel() * world)) - world * (
                local_sum - local_sum.detach()
            ) / total

    with torch.no_grad():
        off_diag = ~self_mask
        neg_mask = off_diag.clone()
        neg_mask[rows, pos_col] = False
        sq_dist = (2.0 - 2.0 * sim).clamp(min=0.0)
        n_off = max(sim.numel() - 2 * M, 1)
        n_neg = max(sim.numel() - 4 * M, 1)  # neither self nor positive (p(i) != i always)
        zero = torch.zeros((), dtype=sim.dtype, device=sim.device)
        stats = {
            "filtered_fraction": (~keep & off_diag).sum().float() / n_off,
            "pos_cos": pos_sim.mean(),
            "neg_cos": torch.where(neg_mask, sim, zero).sum() / n_neg,
            "alignment": (2.0 - 2.0 * pos_sim).clamp(min=0.0).mean(),
            "uniformity": torch.logsumexp(
                torch.where(off_diag, -2.0 * sq_dist, zero - math.inf).flatten(), dim=0
            ) - math.log(n_off),
            **extra,
        }
    return loss, stats
