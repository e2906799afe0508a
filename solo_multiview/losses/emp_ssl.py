r"""EMP-SSL loss: total coding rate of every view plus invariance to the mean view.

Tong, Chen, Ma and LeCun, "EMP-SSL: Towards Self-Supervised Learning in One Training Epoch"
(arXiv 2304.03977, 2023); authors' code: github.com/tsb0601/EMP-SSL (``loss.py``, ``main.py``).

The K views ``z_{k,b}`` are L2-normalised (the authors' projector ends in ``F.normalize``, so this
is the identity on their embeddings); ``Z_k`` is the ``(N, d)`` matrix of view k over the (global)
batch and ``\bar z_b = \frac{1}{K} \sum_k z_{k,b}`` the mean view of sample b (gradient flows
through it, as in the authors' code):

.. math::

    R(Z) = \frac{1}{2} \log\det\Big(I_d + \frac{d}{N \epsilon} Z^\top Z\Big), \qquad
    L = -\frac{1}{K} \sum_{k<K} R(Z_k)
        - \frac{\lambda}{K} \sum_{k<K} \operatorname{mean}_b \cos(z_{k,b}, \bar z_b).

Sign: EMP-SSL *maximises* the total coding rate of every view together with the views'
similarity to the mean view, so the loss *subtracts* the coding rate. The authors'
``TotalCodingRate.forward`` returns ``- compute_discrimn_loss(X.T)`` (``loss.py``, line 90: minus
``logdet / 2``) and ``main.py`` adds it with coefficient ``+1`` (``loss = patch_sim *
loss_contract + tcr * loss_TCR``, line 164); the repository owner (tsb0601) confirms the negative
values in tsb0601/EMP-SSL issue #6 ("As we try to optimize the absolute value of loss to be
larger, we set the loss value to be negative"). lightly's ``EMPSSLLoss`` returns
``+0.5 * logdet`` from ``tcr_loss`` and adds it to the invariance term, so it *minimises* the
coding rate, which drives every view to rank 1 (collapse). This module uses the authors' minus
sign (``tests/test_losses_emp_ssl.py``: minimising this loss keeps free embeddings full rank, the
opposite sign collapses them).

``epsilon``: the paper writes the coding rate with ``d / (m eps^2)`` (lightly's docstring notes
the same); the authors' code uses ``d / (m * eps)`` (``loss.py`` line 85, ``scalar = p / (m *
self.eps)``) with ``eps = 0.2`` (``main.py``, ``--eps`` default), and the published results come
from that code. ``eps`` here follows the code, i.e. it is the paper's ``eps^2``: a paper-style
``eps = e`` is ``eps = e ** 2`` here.

Scale: both terms are means over the K views, so the loss does not grow with K; the invariance
term lies in ``[-lambda, lambda]`` and ``0 <= R(Z) <= (m/2) log(1 + d / (m eps))`` with
``m = min(N, d)`` (unit rows; equality for m equal eigenvalues), which does not depend on K.

Distributed (``global_batch=True``, default): the authors train with ``nn.DataParallel``, so their
coding rate is over the whole batch. Here the normalised views are gathered with gradient and every
rank computes ``R`` of the global ``(N, d)`` matrices; the invariance term is the local mean (equal
batch sizes on every rank). The mean of the per-rank losses (DDP's gradient average,
``sync_dist`` logging) is then the single-process loss on the global batch, gradient included.
``global_batch=False`` computes the coding rate of the local batch only (``N = B``; one loss per
rank, a different objective).

Cost: per view a Gram matrix of size ``m = min(N, d)`` (``Z^T Z`` or, by Sylvester's identity
``det(I_d + a Z^T Z) = det(I_N + a Z Z^T)``, ``Z Z^T``), O(K N d m), and one batched Cholesky
factorisation of the K ``m x m`` matrices, O(K m^3); the invariance term is O(K B d). The linear
algebra runs in float32 or float64 with autocast off; the loss has that dtype.
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from ._common import Views, stack_views
from .distributed import gather_with_grad


def _check_nonneg(value: float, name: str, positive: bool = False) -> float:
    v = float(value)
    ok = math.isfinite(v) and (v > 0 if positive else v >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"emp_ssl_loss: {name} must be a finite number {bound}; got {value!r}")
    return v


def total_coding_rate(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``R(Z_k) = 1/2 logdet(I + d / (N eps) Z_k^T Z_k)`` of each view of ``z`` (K, N, d).

    Returns the ``(K,)`` coding rates. Uses the smaller of the two Gram matrices and a batched
    Cholesky factorisation (``I + a G`` is symmetric positive definite).
    """
    _, n, d = z.shape
    scale = d / (n * eps)
    gram = z.transpose(1, 2) @ z if n >= d else z @ z.transpose(1, 2)  # (K, m, m)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    chol = torch.linalg.cholesky(eye + scale * gram)
    return torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(dim=-1)  # 1/2 * 2 sum log


def emp_ssl_loss(
    views: Views,
    eps: float = 0.2,
    invariance_weight: float = 200.0,
    global_batch: bool = True,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """EMP-SSL loss (formula and sign in the module docstring).

    Args:
        views: embeddings of the K >= 2 views, ``(K, B, d)`` or a list of K ``(B, d)`` tensors.
        eps: coding-rate distortion > 0 in the authors' code convention (``d / (N eps)``, the
            paper's ``eps^2``); default 0.2, ``--eps`` of the authors' ``main.py``.
        invariance_weight: ``lambda`` >= 0; default 200, ``--patch_sim`` of the authors'
            ``main.py``. The coding-rate weight is 1 (``--tcr`` default).
        global_batch: coding rate over the batch of all ranks (default, as the authors' single
            DataParallel batch) or over the local batch only.

    Returns:
        ``(loss, stats)``; ``stats`` holds detached scalars: ``coding_rate`` (mean ``R(Z_k)``
        over the views, the quantity that is maximised) and ``invariance`` (mean cosine of the
        views to the mean view, local samples).
    """
    eps = _check_nonneg(eps, "eps", positive=True)
    invariance_weight = _check_nonneg(invariance_weight, "invariance_weight")
    z = stack_views(views, "emp_ssl_loss: views", min_views=2)
    with torch.autocast(device_type=z.device.type, enabled=False):
        if z.dtype in (torch.float16, torch.bfloat16):
            z = z.float()
        z = F.normalize(z, dim=-1)
        all_z = gather_with_grad(z.transpose(0, 1)).transpose(0, 1) if global_batch else z
        coding_rate = total_coding_rate(all_z, eps).mean()
        mean_view = z.mean(dim=0, keepdim=True)
        invariance = (z * F.normalize(mean_view, dim=-1)).sum(dim=-1).mean()
        loss = -coding_rate - invariance_weight * invariance
    stats = {"coding_rate": coding_rate.detach(), "invariance": invariance.detach()}
    return loss, stats
