r"""MV-DHEL: multi-view decoupled hyperspherical energy loss, computed in log space.

Koromilas, Georgiou, Bouritsas, Giannakopoulos, Nicolaou and Panagakis, "A Principled Framework
for Multi-View Contrastive Learning" (arXiv 2507.06979); authors' code:
github.com/pakoromilas/Multi-View-CL (``models/losses.py``, class ``MVDHEL``). It extends DHEL
(Koromilas et al., arXiv 2405.18045; github.com/pakoromilas/DHEL-KCL, class ``DHEL``).

With ``z_{a,b}`` the L2-normalised view a of image b (K views, B local and N global images),
``s`` the cosine and ``t`` the temperature, each image has one term whose numerator aligns all
its views and whose denominator is a product of per-view energies, each over *the same view* of
the other images only, so alignment and uniformity are decoupled:

.. math::

    \ell_b = \frac{2}{K}\Big[
        -\log\Big(\frac{1}{K(K-1)} \sum_{a} \sum_{c \ne a} e^{s(z_{a,b}, z_{c,b})/t}\Big)
        + \sum_{a=1}^{K} \log \sum_{n \ne b} e^{s(z_{a,b}, z_{a,n})/t} \Big], \qquad
    L = \frac{1}{B} \sum_b \ell_b .

This is the paper's ``-log(sum_{a != c} e^{pos} / prod_a sum_n e^{neg})`` times ``2/K``, plus the
constant ``(2/K) log(K (K - 1))`` (the positives are averaged instead of summed). Like the
authors' code and DHEL, the per-view sums leave out the image itself (``n != b``; the README's
formula writes ``j in [M]``, which would add the constant self-similarity ``e^{1/t}`` to every
view's sum).

**Log space.** Written as a ratio the denominator is a product of K sums of up to N - 1 exponentials
of ``s/t``; at K = 8, N = 256, t = 0.1 with aligned embeddings it is about ``(255 e^{10})^8 ~
1e54``, beyond float32's ``3.4e38``: the authors' ``torch.prod`` overflows to ``inf``, the loss
becomes ``inf`` and its gradient NaN. Here every sum is a ``logsumexp`` and the product is a sum of
logs, finite and equal to the float64 value (tests/test_losses_mv_dhel.py).

**Scale.** The factor ``2/K`` turns the sum of the K per-view energies into twice their mean, so
the loss stays O(log N) whatever K; the alignment term keeps the paper's weight relative to it
(the factor is a constant, the minimiser and the gradient direction are the paper's).

**K = 2:** ``l_b = -s(z_{1,b}, z_{2,b})/t + log sum_{n != b} e^{s(z_{1,b}, z_{1,n})/t} + log
sum_{n != b} e^{s(z_{2,b}, z_{2,n})/t}``, exactly two-view DHEL with the augmentations' energy
(``DHEL(include_augs=True)``) and the authors' ``MVDHEL`` at ``multiplier=2``.

**Band filter** (``band``, :class:`.band_filter.BandFilter`) on the cosines: a removed positive
pair leaves the numerator's mean, a removed negative leaves its view's sum. An image is dropped
from the mean when no positive pair is kept, or when a view has no kept negative (its energy sum
is empty and the ratio undefined).

**Distributed:** each rank scores its local images against the same-view embeddings of all
ranks (gathered with gradient); the positives are local. The sum is divided by the global number
of contributing images (:func:`.distributed.global_weighted_mean`): the mean of the per-rank
losses is the single-process loss on the global batch.

**Cost:** K same-view ``B x N`` blocks, O(K B N d) time and O(K B N) memory, plus the
``K x K`` positives of each image, O(K^2 B d): linear in K where MV-InfoNCE and Poly-View are
quadratic.

Default temperature 0.5: the authors' training configs for CIFAR-10, CIFAR-100 and ImageNet-100
(``configs/*_bs256_05.yaml``, ``temperature: 0.5``); their ImageNet-1k config uses 0.1.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from ._common import Views, check_temperature, masked_logsumexp, weighted_mean
from .band_filter import BandFilter
from .distributed import global_weighted_mean
from .polyview import check_band, device_type_of, gather_views


def mv_dhel_loss(
    views: Views,
    temperature: float = 0.5,
    band: Optional[BandFilter] = None,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """MV-DHEL in log space (formula, K = 2 reduction and cost in the module docstring).

    Args:
        views: the K >= 2 views, ``(K, B, d)`` or a list of K ``(B, d)`` tensors;
            ``views[k][b]`` is view k of image b.
        temperature: softmax temperature ``t`` > 0 (default 0.5, module docstring).
        band: optional extreme-feature filter; ``None`` disables it.

    Returns:
        ``(loss, stats)``; ``stats`` holds detached scalars over the local images:
        ``filtered_fraction`` (removed / all entries among the positive pairs and the same-view
        negatives), ``num_positives`` (kept ordered positive pairs), ``num_samples`` (images that
        contribute), and the two parts of the loss, ``alignment`` (the ``2/K``-scaled ``-log``
        mean positive term) and ``uniformity`` (the ``2/K``-scaled sum of view energies), means
        over the contributing local images.
    """
    t = check_temperature(temperature)
    check_band(band, "mv_dhel_loss")
    with torch.autocast(device_type=device_type_of(views), enabled=False):
        g = gather_views(views, "mv_dhel_loss")
        k, b, _ = g.local.shape

        pos_cos = torch.einsum("abd,cbd->bac", g.local, g.local)  # (B, K, K), local positives
        other_view = ~torch.eye(k, dtype=torch.bool, device=pos_cos.device).expand(b, k, k)
        pos_keep = other_view if band is None else band.keep(pos_cos) & other_view
        n_pos = pos_keep.sum(dim=(1, 2))
        mean_pos = masked_logsumexp((pos_cos / t).reshape(b, -1), pos_keep.reshape(b, -1))
        alignment = torch.log(n_pos.clamp(min=1).to(mean_pos.dtype)) - mean_pos  # (B,)

        neg_cos = torch.bmm(g.local, g.cand.transpose(1, 2))  # (K, B, N), same view
        not_self = ~g.own.unsqueeze(0).expand(k, -1, -1)
        neg_keep = not_self if band is None else band.keep(neg_cos) & not_self
        energy = masked_logsumexp(neg_cos / t, neg_keep)  # (K, B)
        has_neg = neg_keep.any(dim=-1).all(dim=0)  # (B,)
        uniformity = energy.sum(dim=0)

        scale = 2.0 / k
        valid = (n_pos > 0) & has_neg
        loss = global_weighted_mean(scale * (alignment + uniformity), valid)

    with torch.no_grad():
        removed = (other_view & ~pos_keep).sum() + (not_self & ~neg_keep).sum()
        entries = other_view.sum() + not_self.sum()
        stats = {
            "filtered_fraction": removed.float() / entries.clamp(min=1).float(),
            "num_positives": n_pos.sum().float(),
            "num_samples": valid.sum().float(),
            "alignment": weighted_mean(scale * alignment, valid),
            "uniformity": weighted_mean(scale * uniformity, valid),
        }
    return loss, stats

