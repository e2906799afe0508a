r"""Maximum Manifold Capacity Representations (MMCR) loss.

Yerxa, Kuang, Simoncelli and Chung, "Learning Efficient Coding of Natural Images with Maximum
Manifold Capacity Representations" (NeurIPS 2023); authors' code: github.com/ThomasYerxa/mmcr
(``mmcr/cifar_stl/loss_mmcr.py``, ``mmcr/imagenet/loss_mmcr.py``).

The K views ``z_{k,b}`` of sample ``b`` are L2-normalised, ``\hat z = z / |z|``; ``Z_b`` is the
``(K, d)`` matrix of sample b's normalised views, ``c_b = \frac{1}{K} \sum_k \hat z_{k,b}`` its
centroid and ``C`` the ``(N, d)`` matrix of the N centroids of the (global) batch:

.. math::

    L = -\lVert C \rVert_* + \frac{\lambda}{N} \sum_{b < N} \lVert Z_b \rVert_*,

``\lVert\cdot\rVert_*`` the nuclear norm (sum of singular values). Maximising the nuclear norm of
the centroid matrix spreads the centroids over many directions; the optional per-sample term
(``lmbda`` > 0) compresses each sample's view manifold.

Scale (as the authors): the centroid term is the *unscaled* nuclear norm and the per-sample term
a mean over samples (``lmbda * local_nuc / batch_size - global_nuc`` in the authors' loss). With
unit views ``|c_b| <= 1``, so ``0 <= |C|_* <= sqrt(min(N, d)) |C|_F <= sqrt(N min(N, d))`` and
``0 <= |Z_b|_* <= sqrt(K min(K, d))``: the centroid term grows with the (global) batch size as the
authors' does, but does not grow with K (centroids of unit vectors stay in the unit ball); the
per-sample term grows like sqrt(K) at most, which is why it carries its own weight.

Normalisation: the embeddings are normalised here, as in the authors' code (``F.normalize`` on the
first line of their ``forward``). lightly's ``MMCRLoss`` does not normalise, so there the loss
scales linearly with the embeddings and is unbounded below; here scaling any embedding by a
positive factor leaves the loss unchanged.

Distributed (``global_batch=True``, default, as the authors who all-gather the embeddings): the
normalised views are gathered with gradient and every rank computes ``-|C|_*`` of the *global*
``(N, d)`` centroid matrix (rows in rank order); the per-sample term is the mean over the local
samples (equal batch sizes on every rank, so the rank average is the global mean). The mean of the
per-rank losses (what DDP's gradient average and ``sync_dist`` logging see) is then the
single-process loss on the global batch, and so is the DDP-averaged gradient. (The authors put the
local slice back into the gathered list, so only the local slice carries gradient on each rank and
the DDP-averaged gradient is 1/W of the global one; this module's gradient is exact.)
``global_batch=False`` uses the local batch only (``N = B``, one loss per rank, no communication).

Cost: one SVD of the ``(N, d)`` centroid matrix, O(N d min(N, d)), per rank; with ``lmbda`` > 0
also a batched SVD of the N local ``(K, d)`` view matrices, O(B K d min(K, d)). The linear algebra
runs in float32 or float64 with autocast off (no half-precision SVD); the loss has that dtype.
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from ._common import Views, stack_views
from .distributed import gather_with_grad


def _linalg_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` in a dtype the SVD kernels accept (half precision goes to float32)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def check_lmbda(lmbda: float) -> float:
    """Validate the per-sample weight (finite, >= 0)."""
    value = float(lmbda)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"mmcr_loss: lmbda must be a finite number >= 0; got {lmbda!r}")
    return value


def mmcr_loss(
    views: Views, lmbda: float = 0.0, global_batch: bool = True
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """MMCR loss (formula in the module docstring).

    Args:
        views: embeddings of the K >= 2 views, ``(K, B, d)`` or a list of K ``(B, d)`` tensors.
        lmbda: weight ``lambda`` >= 0 of the mean per-sample nuclear norm. Default 0.0: the
            ``--lmbda`` default of the authors' ``pretrain_cifar_stl.py`` and
            ``pretrain_imagenet.py`` (lightly's ``MMCRLoss`` defaults to 5e-3 instead).
        global_batch: centroid nuclear norm over the batch of all ranks (default, the authors'
            choice) or over the local batch only.

    Returns:
        ``(loss, stats)``; ``stats`` holds detached scalars: ``centroid_nuclear_norm``
        (``|C|_*``), ``view_nuclear_norm`` (mean ``|Z_b|_*`` over the local samples; computed only
        when ``lmbda`` > 0, else 0) and ``centroid_norm`` (mean ``|c_b|`` over the local samples,
        1 when the views agree).
    """
    lmbda = check_lmbda(lmbda)
    z = stack_views(views, "mmcr_loss: views", min_views=2)
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = F.normalize(_linalg_input(z), dim=-1)
        centroids = z.mean(dim=0)  # (B, d)
        all_centroids = gather_with_grad(centroids) if global_batch else centroids
        centroid_nuc = torch.linalg.svdvals(all_centroids).sum()
        if lmbda > 0:
            view_nuc = torch.linalg.svdvals(z.transpose(0, 1)).sum(dim=-1).mean()  # (B, K, d)
            loss = lmbda * view_nuc - centroid_nuc
        else:
            view_nuc = torch.zeros((), dtype=z.dtype, device=z.device)
            loss = -centroid_nuc
    with torch.no_grad():
        stats = {
            "centroid_nuclear_norm": centroid_nuc.detach(),
            "view_nuclear_norm": view_nuc.detach(),
            "centroid_norm": centroids.norm(dim=-1).mean(),
        }
    return loss, stats
