r"""MV-InfoNCE: one InfoNCE term per image over every interaction of its K views.

Koromilas, Georgiou, Bouritsas, Giannakopoulos, Nicolaou and Panagakis, "A Principled Framework
for Multi-View Contrastive Learning" (arXiv 2507.06979); authors' code:
github.com/pakoromilas/Multi-View-CL (``models/losses.py``, class ``MVINFONCE``).

With ``z_{a,b}`` the L2-normalised view a of image b (K views, B local and N global images),
``s`` the cosine and ``t`` the temperature, every image contributes a *single* term: all of its
K (K - 1) ordered positive pairs in the numerator, and the energy of all of its views against the
candidates in the denominator:

.. math::

    \ell_b = -\log \frac{\sum_{a} \sum_{c \ne a} e^{s(z_{a,b}, z_{c,b})/t}}
        {\sum_{a} \sum_{(c, n) \in \mathcal{C}(a, b)} e^{s(z_{a,b}, z_{c,n})/t}}, \qquad
    L = \frac{1}{B} \sum_b \ell_b,

with the candidate set ``C(a, b)`` chosen by ``negatives``:

- ``"cross_view"`` (default; the paper's formula as the authors' README gives it):
  ``C(a, b) = {(c, n) : c != a}``, every *other* view of every image (the positives included),
  as in two-view InfoNCE where view a is contrasted with the other view only;
- ``"all"`` (the authors' code, which sums the whole similarity matrix less its diagonal):
  ``C(a, b) = {(c, n) != (a, b)}``, which adds the same-view embeddings of the other images, as
  NT-Xent does.

**Scale.** ``l_b`` is minus the log of the positives' share of the energy, ``0 <= l_b``; at
uniform similarities it is ``log N`` (cross_view) or ``log((K N - 1)/(K - 1))`` (all), so it does
not grow with K (the numerator and denominator both count K (K - 1) view pairs). No further
normalisation is applied.

**K = 2** does *not* give the two-view loss exactly. With ``l_{b,a}`` the per-anchor two-view
loss of view a (InfoNCE against the other view for ``cross_view``; NT-Xent's anchor term for
``all``), the two anchors share one log:

.. math::

    \ell_b = \log \tfrac{1}{2}\big(e^{\ell_{b,1}} + e^{\ell_{b,2}}\big)
        \;\ge\; \tfrac{1}{2}(\ell_{b,1} + \ell_{b,2}),

a log-mean-exp instead of the mean of symmetric InfoNCE (``cross_view``) / NT-Xent (``all``;
solo-learn's ``simclr_loss_func``, this repository's ``mv_nt_xent``), with equality exactly when
the two anchors' denominators agree (e.g. identical views). tests/test_losses_mv_infonce.py checks
the identity and the equality case.

**Band filter** (``band``, :class:`.band_filter.BandFilter`) on the cosines of the
anchor-candidate matrix: removed entries leave both sums (a removed positive loses its numerator
term); an image left with no kept positive pair is dropped from the mean.

**Distributed:** each rank scores its local images' views against the candidates of all ranks
(gathered with gradient) and divides by the global number of contributing images
(:func:`.distributed.global_weighted_mean`); the mean of the per-rank losses is the
single-process loss on the global batch.

**Cost:** one ``(K B) x (K N)`` similarity matrix, O(K^2 B N d) time and O(K^2 B N) memory, the
same as K-view SimCLR or Poly-View.

Default temperature 0.5: the authors' training configs for CIFAR-10, CIFAR-100 and ImageNet-100
(``configs/*_bs256_05.yaml``, ``temperature: 0.5``); their ImageNet-1k config uses 0.1.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from ._common import Views, check_temperature, masked_logsumexp
from .band_filter import BandFilter
from .distributed import global_weighted_mean
from .polyview import all_pairs_cosines, check_band, device_type_of, gather_views, no_self_mask

MV_INFONCE_NEGATIVES = ("cross_view", "all")


def mv_infonce_loss(
    views: Views,
    temperature: float = 0.5,
    band: Optional[BandFilter] = None,
    negatives: str = "cross_view",
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """MV-InfoNCE (formula, K = 2 relation and cost in the module docstring).

    Args:
        views: the K >= 2 views, ``(K, B, d)`` or a list of K ``(B, d)`` tensors;
            ``views[k][b]`` is view k of image b.
        temperature: softmax temperature ``t`` > 0 (default 0.5, module docstring).
        band: optional extreme-feature filter; ``None`` disables it.
        negatives: the denominator's candidates, one of :data:`MV_INFONCE_NEGATIVES`.

    Returns:
        ``(loss, stats)``; ``stats`` holds detached scalars over the local images:
        ``filtered_fraction`` (removed / all entries of the anchor x candidate similarities,
        self-entries excluded), ``num_positives`` (kept ordered positive pairs) and
        ``num_samples`` (images that contribute). Under DDP ``loss`` is this rank's share: the
        rank average is the global loss.
    """
    if negatives not in MV_INFONCE_NEGATIVES:
        raise ValueError(
            f"mv_infonce_loss: negatives must be one of {', '.join(MV_INFONCE_NEGATIVES)}; "
            f"got {negatives!r}"
        )
    t = check_temperature(temperature)
    check_band(band, "mv_infonce_loss")
    with torch.autocast(device_type=device_type_of(views), enabled=False):
        g = gather_views(views, "mv_infonce_loss")
        k, b, _ = g.local.shape
        cos = all_pairs_cosines(g)  # (B, K, K, N): [image b, anchor view a, view c, image n]
        keep = torch.ones_like(cos, dtype=torch.bool) if band is None else band.keep(cos)
        off_self = no_self_mask(k, g)
        other_view = ~torch.eye(k, dtype=torch.bool, device=cos.device).view(1, k, k, 1)
        candidates = other_view if negatives == "cross_view" else off_self
        positive = other_view & g.own.view(b, 1, 1, -1)

        logits = (cos / t).reshape(b, -1)
        den = (keep & candidates).reshape(b, -1)
        pos = (keep & positive).reshape(b, -1)
        per_image = masked_logsumexp(logits, den) - masked_logsumexp(logits, pos)
        n_pos = pos.sum(dim=-1)
        loss = global_weighted_mean(per_image, n_pos > 0)

    with torch.no_grad():
        stats = {
            "filtered_fraction": (~keep & off_self).sum().float() / off_self.sum().clamp(min=1),
            "num_positives": n_pos.sum().float(),
            "num_samples": (n_pos > 0).sum().float(),
        }
    return loss, stats
