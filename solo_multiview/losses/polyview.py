r"""Poly-View contrastive losses: geometric, arithmetic and sufficient-statistics forms.

Shidani, Hjelm, Ramapuram, Webb, Dhekane and Busbridge, "Poly-View Contrastive Learning"
(ICLR 2024, arXiv 2403.05490). The authors published no code; the forms below follow the paper's
text: the *Geometric PVC* and *Arithmetic PVC* objectives of its generalised (one-vs-rest)
information-maximisation section, which aggregate the M - 1 pairwise probabilities of an anchor
view by a geometric or an arithmetic mean, and the *sufficient-statistics* objective of its
sufficient-statistics section, which contrasts a view with a summary of the other views. The
paper states them as lower bounds to maximise; the losses here are their negatives, without the
additive ``log`` batch-size constants of the bounds. Equation numbers are not quoted: the
forms were written from the paper's Section 2 definitions without its text at hand to check the
numbering, and the sufficient-statistics candidate set is this module's reading (see below).

Notation: K views (the paper's M), B local images, N = W B images over the W ranks, ``z_{a,b}``
the L2-normalised embedding of view a of image b, ``s(x, y) = <x, y>`` (a cosine) and temperature
``t``. An anchor is a pair (view a, local image b); candidates come from all ranks (gathered with
gradient).

**Geometric / arithmetic.** For every other view ``c != a`` of the same image, the SimCLR
probability of picking ``z_{c,b}`` among itself and *every view of every other image*:

.. math::

    p_{b,a,c} = \frac{e^{s(z_{a,b}, z_{c,b})/t}}
        {e^{s(z_{a,b}, z_{c,b})/t} + \sum_{n \ne b} \sum_{g=1}^{K} e^{s(z_{a,b}, z_{g,n})/t}},

    \ell^{\mathrm{geo}}_{a,b} = -\frac{1}{K-1} \sum_{c \ne a} \log p_{b,a,c}, \qquad
    \ell^{\mathrm{ari}}_{a,b} = -\log\Big(\frac{1}{K-1} \sum_{c \ne a} p_{b,a,c}\Big), \qquad
    L = \frac{1}{K B} \sum_{a, b} \ell_{a,b}.

The other positives ``z_{g,b}``, ``g != a, c``, are in neither sum of ``p_{b,a,c}``. By Jensen's
inequality ``l_ari <= l_geo``, equal at K = 2. (pakoromilas/Multi-View-CL's ``PVCLoss`` builds the
same ``p`` for its geometric branch; its arithmetic branch computes
``log sum_c 1/p_{b,a,c} - log B``, i.e. minus the log of a *harmonic* mean of the ``p`` shifted by
``log((K - 1)/B)``, instead of minus the log of their arithmetic mean: NT-Xent minus ``log B`` at
K = 2.)

**Sufficient statistics.** The summary of the views other than a, ``T_{a,n} = normalise(sum_{c !=
a} z_{c,n})`` (the sufficient statistic of conditionally independent views is a sum; the
normalisation keeps every logit a cosine over ``t``), replaces the single positive; the
candidates are the summaries of all images and the same-view embeddings of the other images:

.. math::

    \ell^{\mathrm{ss}}_{a,b} = -\log \frac{e^{s(z_{a,b}, T_{a,b})/t}}
        {\sum_{n} e^{s(z_{a,b}, T_{a,n})/t} + \sum_{n \ne b} e^{s(z_{a,b}, z_{a,n})/t}}, \qquad
    L = \frac{1}{K B} \sum_{a, b} \ell^{\mathrm{ss}}_{a,b}.

The candidate set (summaries of all images plus same-view embeddings of the others) is chosen so
that the objective is SimCLR at K = 2, as the paper says its objectives are; the paper's text
would settle it.

**K = 2.** ``T_{a,n}`` is the other view and ``p_{b,a,c}`` has one term, so all three forms are
NT-Xent over the 2N - 1 other embeddings, exactly solo-learn's ``simclr_loss_func`` and this
repository's ``mv_nt_xent`` (tests/test_losses_polyview.py).

**Scale.** Every form is a mean over the K B anchors of minus a log-probability (or the log of a
mean probability), not a sum over views: non-negative, and at equal similarities
``log(1 + K (N - 1))`` (geometric / arithmetic, whose negatives are the K views of the other
images) or ``log(2N - 1)`` (sufficient statistics).

**Band filter** (``band``, :class:`.band_filter.BandFilter`): on the cosines of the
anchor-candidate matrix. Removed entries leave every softmax sum; a removed positive loses its
term (geometric / arithmetic: the mean runs over the kept ``c``; sufficient statistics: the
anchor has no positive); an anchor left with no kept positive is dropped from the mean.

**Distributed:** local anchors against the candidates of all ranks, divided by the global number
of contributing anchors (:func:`.distributed.global_weighted_mean`): the mean of the per-rank
losses is the single-process loss on the global batch, gradients included.

**Cost** (B local and N global images, dimension d): geometric / arithmetic compute one
``(K B) x (K N)`` similarity matrix, O(K^2 B N d) time and O(K^2 B N) memory (as K-view SimCLR);
sufficient statistics computes two ``K x (B x N)`` blocks (anchor vs summaries, anchor vs the same
view), O(K B N d) time and O(K B N) memory, plus O(K^2 N d) for the summaries.

Default temperature 0.1: SimCLR's ImageNet temperature (Chen et al., 2020); the paper's
ImageNet1k poly-view runs are SimCLR-based, the value is to be checked against its
hyper-parameter appendix.
"""

from __future__ import annotations

import math
from typing import Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from ._common import Views, check_temperature, masked_logsumexp, stack_views
from .band_filter import BandFilter
from .distributed import gather_with_grad, global_weighted_mean, rank_and_world

POLYVIEW_FORMS = ("geometric", "arithmetic", "sufficient_statistics")


class GatheredViews(NamedTuple):
    """Normalised K views of the local batch and of the global batch (shared by the K-view
    contrastive losses of :mod:`.polyview`, :mod:`.mv_infonce` and :mod:`.mv_dhel`)."""

    local: torch.Tensor  # (K, B, d), unit rows
    cand: torch.Tensor  # (K, N, d), unit rows, rank-major images, gradient flows to every rank
    own: torch.Tensor  # (B, N) bool: candidate image n is local image b
    offset: int  # global index of local image 0


def check_band(band: Optional[BandFilter], name: str) -> None:
    """``band`` must be ``None`` (no filter) or a :class:`BandFilter`."""
    if band is not None and not isinstance(band, BandFilter):
        raise ValueError(
            f"{name}: band must be a BandFilter or None (no filter); got {type(band).__name__}"
        )


def gather_views(views: Views, name: str) -> GatheredViews:
    """Stack, L2-normalise and all-gather (with gradient) the K views of the local batch.

    Half-precision inputs are promoted to float32 (softmax sums over thousands of entries);
    call under ``torch.autocast(enabled=False)`` so that the similarity matmuls stay in that dtype.
    """
    z = stack_views(views, f"{name}: views", min_views=2)
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    z = F.normalize(z, dim=-1)
    k, b, _ = z.shape
    cand = gather_with_grad(z.transpose(0, 1).contiguous()).transpose(0, 1)  # (K, N, d)
    rank, _ = rank_and_world()
    offset = rank * b
    own = torch.zeros(b, cand.shape[1], dtype=torch.bool, device=z.device)
    rows = torch.arange(b, device=z.device)
    own[rows, rows + offset] = True
    return GatheredViews(z, cand, own, offset)


def all_pairs_cosines(g: GatheredViews) -> torch.Tensor:
    """``cos[b, a, c, n] = <z_{a,b}, z_{c,n}>``: every local anchor against every candidate, as
    one ``(B K, d) x (d, K N)`` matmul (rows image-major, so per-image and per-anchor reductions
    are views of the same storage)."""
    k, b, d = g.local.shape
    n = g.cand.shape[1]
    anchors = g.local.transpose(0, 1).reshape(b * k, d)
    return (anchors @ g.cand.reshape(k * n, d).T).view(b, k, k, n)


def own_entries(x: torch.Tensor, g: GatheredViews) -> torch.Tensor:
    """``x[b, a, c, n]`` at ``n = offset + b``: the ``(B, K, K)`` same-image block."""
    rows = torch.arange(x.shape[0], device=x.device)
    return x[rows, :, :, rows + g.offset]


def no_self_mask(k: int, g: GatheredViews) -> torch.Tensor:
    """``(B, K, K, N)`` bool: True except at each anchor's own entry (``c = a``, same image)."""
    same_view = torch.eye(k, dtype=torch.bool, device=g.own.device).view(1, k, k, 1)
    return ~(same_view & g.own.view(g.own.shape[0], 1, 1, -1))


def polyview_loss(
    views: Views,
    temperature: float = 0.1,
    form: str = "geometric",
    band: Optional[BandFilter] = None,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Poly-View contrastive loss (formulas, K = 2 reduction and cost in the module docstring).

    Args:
        views: the K >= 2 views, ``(K, B, d)`` or a list of K ``(B, d)`` tensors;
            ``views[k][b]`` is view k of image b.
        temperature: softmax temperature ``t`` > 0 (default 0.1, module docstring).
        form: one of :data:`POLYVIEW_FORMS`.
        band: optional extreme-feature filter; ``None`` disables it.

    Returns:
        ``(loss, stats)``; ``stats`` holds detached scalars over the local anchors:
        ``filtered_fraction`` (removed / all entries of the anchor x candidate similarities,
        anchors' self-entries excluded), ``num_positives`` (kept anchor-positive pairs) and
        ``num_anchors`` (anchors that contribute). Under DDP ``loss`` is this rank's share: the
        rank average is the global loss.
    """
    if form not in POLYVIEW_FORMS:
        raise ValueError(
            f"polyview_loss: form must be one of {', '.join(POLYVIEW_FORMS)}; got {form!r}"
        )
    t = check_temperature(temperature)
    check_band(band, "polyview_loss")
    with torch.autocast(device_type=device_type_of(views), enabled=False):
        g = gather_views(views, "polyview_loss")
        if form == "sufficient_statistics":
            return _sufficient_statistics(g, t, band)
        return _pairwise_means(g, t, band, geometric=form == "geometric")


def device_type_of(views: Views) -> str:
    """Device type of the views (for ``torch.autocast``); ``"cpu"`` for an empty sequence."""
    first = views if isinstance(views, torch.Tensor) else next(iter(views), None)
    return first.device.type if isinstance(first, torch.Tensor) else "cpu"


def _pairwise_means(
    g: GatheredViews, t: float, band: Optional[BandFilter], geometric: bool
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    k, b, _ = g.local.shape
    cos = all_pairs_cosines(g)  # (B, K, K, N)
    keep = torch.ones_like(cos, dtype=torch.bool) if band is None else band.keep(cos)
    logits = cos / t

    # negatives of anchor (b, a): every view of every other image, kept by the filter
    neg = keep & ~g.own.view(b, 1, 1, -1)
    neg_rows = neg.reshape(b, k, -1)
    neg_lse = masked_logsumexp(logits.reshape(b, k, -1), neg_rows)  # (B, K)
    neg_lse = torch.where(neg_rows.any(dim=-1), neg_lse, torch.full_like(neg_lse, -math.inf))

    # positives (b, a, c), c != a
    pos = own_entries(logits, g)  # (B, K, K)
    other_view = ~torch.eye(k, dtype=torch.bool, device=pos.device)
    pos_kept = own_entries(keep, g) & other_view
    log_p = pos - torch.logaddexp(pos, neg_lse.unsqueeze(-1))
    n_pos = pos_kept.sum(dim=-1)  # (B, K)
    n_safe = n_pos.clamp(min=1).to(log_p.dtype)
    if geometric:
        per_anchor = -torch.where(pos_kept, log_p, torch.zeros_like(log_p)).sum(dim=-1) / n_safe
    else:
        per_anchor = torch.log(n_safe) - masked_logsumexp(log_p, pos_kept)
    loss = global_weighted_mean(per_anchor.flatten(), (n_pos > 0).flatten())

    with torch.no_grad():
        off_self = no_self_mask(k, g)
        stats = {
            "filtered_fraction": (~keep & off_self).sum().float() / off_self.sum().clamp(min=1),
            "num_positives": n_pos.sum().float(),
            "num_anchors": (n_pos > 0).sum().float(),
        }
    return loss, stats


def _sufficient_statistics(
    g: GatheredViews, t: float, band: Optional[BandFilter]
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    k, b, _ = g.local.shape
    others = 1.0 - torch.eye(k, dtype=g.cand.dtype, device=g.cand.device)
    summary = F.normalize(torch.einsum("ac,cnd->and", others, g.cand), dim=-1)  # (K, N, d)
    cos_sum = torch.bmm(g.local, summary.transpose(1, 2))  # (K, B, N) anchor vs summaries
    cos_view = torch.bmm(g.local, g.cand.transpose(1, 2))  # (K, B, N) anchor vs same view
    cos = torch.cat([cos_sum, cos_view], dim=-1)  # (K, B, 2N)
    keep = torch.ones_like(cos, dtype=torch.bool) if band is None else band.keep(cos)
    own = g.own.unsqueeze(0).expand(k, -1, -1)
    not_self = torch.cat([torch.ones_like(own), ~own], dim=-1)
    valid = keep & not_self
    logits = cos / t
    rows = torch.arange(b, device=cos.device)
    pos = logits[:, rows, rows + g.offset]  # (K, B)
    pos_kept = keep[:, rows, rows + g.offset]
    per_anchor = masked_logsumexp(logits, valid) - pos
    loss = global_weighted_mean(per_anchor.flatten(), pos_kept.flatten())

    with torch.no_grad():
        stats = {
            "filtered_fraction": (~keep & not_self).sum().float() / not_self.sum().clamp(min=1),
            "num_positives": pos_kept.sum().float(),
            "num_anchors": pos_kept.sum().float(),
        }
    return loss, stats
