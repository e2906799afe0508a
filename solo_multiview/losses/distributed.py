"""Cross-rank gathering for the losses.

Every contrastive loss in this package uses *local anchors against global candidates*: each rank
scores its own rows against the embeddings of all ranks. Two gathers are needed for that:

- :func:`gather_with_grad` for embeddings that carry a gradient. Its backward pass sums, for the
  slice a rank contributed, the gradients that every rank's loss sends to that slice (an
  ``all_reduce`` with SUM of the gathered gradient, then the rank's own slice). Lightning's DDP
  then averages parameter gradients over the W ranks, so the update equals the gradient of the mean
  of the per-rank losses, exactly as a single process would compute it on the global batch.
  (``torch.distributed.nn.functional.all_gather`` would do the same, but it is deprecated in
  recent torch releases and, on gloo, scatters into non-contiguous gradient buffers incorrectly,
  so a small autograd function is used instead.)
- :func:`gather_no_grad` for labels / identities / stop-gradient targets.

A loss that averages over a *data-dependent* subset of its anchors (the band filter drops anchors
whose positive leaves the band) must divide by the global number of kept anchors, not the local
one: DDP averages the per-rank gradients, and the mean of per-rank means is the global mean only
when every rank keeps the same number. :func:`global_weighted_mean` does that: with ``n_r`` kept
anchors on rank ``r`` and ``S_r`` the sum of their terms,

    loss_r = W * S_r / max(sum_q n_q, 1),     mean_r loss_r = sum_r S_r / max(sum_q n_q, 1),

so both the rank-averaged value (what ``sync_dist=True`` logs) and the DDP-averaged gradient are
those of the single-process mean over the global batch. The count is all-reduced without gradient
(it is a count of a detached mask).

Both concatenate along dim 0 in rank order (rank 0's rows first) and need the same shape on every
rank (``all_gather`` requirement; the data loaders drop the last incomplete batch). Without an
initialised process group, or with world size 1, both are the identity (``gather_no_grad`` returns
a detached tensor either way, so the two cases behave the same for autograd).
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.distributed as dist


def rank_and_world() -> Tuple[int, int]:
    """Return ``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0; backward: sum the gradients of all ranks, keep the local slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rank, world = rank_and_world()
        ctx.rank, ctx.rows = rank, x.shape[0]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` along dim 0 with a gradient that flows back to every rank.

    Returns a tensor of shape ``(world_size * x.shape[0], *x.shape[1:])``, rank-major. Identity when
    not distributed.
    """
    _, world = rank_and_world()
    if world == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def all_reduce_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over all ranks (a detached copy); ``x.detach()`` when not distributed."""
    _, world = rank_and_world()
    x = x.detach()
    if world == 1:
        return x
    x = x.clone().contiguous()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def global_weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-rank share of the mean of ``values`` over the selected entries of **all** ranks.

    ``W * sum_local(values * weights) / max(sum_all_ranks(weights), 1)``: averaging this over the
    W ranks (DDP's gradient average, ``sync_dist`` logging) gives the single-process mean over
    the global batch (module docstring). Without a process group it is
    ``sum(values * weights) / max(sum(weights), 1)``. ``values`` must be finite where selected.
    """
    _, world = rank_and_world()
    w = weights.to(values.dtype)
    local = (values * w).sum()
    if world == 1:
        return local / w.sum().clamp(min=1.0)
    return local * world / all_reduce_no_grad(w.sum()).clamp(min=1.0)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` along dim 0 without gradient (rank-major); ``x.detach()`` when not
    distributed."""
    _, world = rank_and_world()
    if world == 1:
        return x.detach()
    x = x.detach().contiguous()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)
