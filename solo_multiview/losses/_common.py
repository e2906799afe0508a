"""Small shared pieces of the K-view losses (input checks, masked log-sum-exp)."""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch

Views = Union[torch.Tensor, Sequence[torch.Tensor]]
"""K views of a batch: a ``(K, B, d)`` tensor or a sequence of K ``(B, d)`` tensors."""


def stack_views(views: Views, name: str, min_views: int = 1) -> torch.Tensor:
    """Return the views as one ``(K, B, d)`` tensor, checking shapes."""
    if isinstance(views, torch.Tensor):
        out = views
    else:
        views = list(views)
        if not views:
            raise ValueError(f"{name}: expected at least {min_views} views, got none")
        shapes = {tuple(v.shape) for v in views}
        if len(shapes) != 1:
            raise ValueError(f"{name}: all views must have the same (B, d) shape; got {shapes}")
        out = torch.stack(views, dim=0)
    if out.dim() != 3:
        raise ValueError(
            f"{name}: expected (K, B, d) or K tensors of shape (B, d); got {tuple(out.shape)}"
        )
    if out.shape[0] < min_views:
        raise ValueError(f"{name}: expected at least {min_views} views, got {out.shape[0]}")
    return out


def check_temperature(temperature: float, key: str = "method_kwargs.temperature") -> float:
    """Validate a softmax temperature (> 0, finite)."""
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"{key} must be a positive number; got {temperature!r}")
    return t


def masked_logsumexp(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log sum_{a: mask[i, a]} exp(logits[i, a])`` per row (last dim).

    Rows whose mask is empty return a finite placeholder (``log`` of the row length) instead of
    ``-inf``, so that callers which drop those rows get no NaN in the backward pass.
    """
    filled = logits.masked_fill(~mask, float("-inf"))
    has_any = mask.any(dim=-1, keepdim=True)
    filled = torch.where(has_any, filled, torch.zeros_like(filled))
    return torch.logsumexp(filled, dim=-1)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(values * weights) / max(sum(weights), 1)``: mean over the selected entries.

    ``weights`` is a bool/0-1 mask. With nothing selected the result is a zero that keeps the
    graph of ``values`` (no host synchronisation, no branch). ``values`` must be finite.
    """
    w = weights.to(values.dtype)
    return (values * w).sum() / w.sum().clamp(min=1.0)


def cross_view_cosines(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``C[v, j] = mean_b cos(p[v, b], z[j, b])`` for ``p`` of shape (V, B, d), ``z`` (K, B, d)."""
    if p.shape[1:] != z.shape[1:]:
        raise ValueError(
            f"predictions and targets must share (B, d); got {tuple(p.shape)} and {tuple(z.shape)}"
        )
    p = torch.nn.functional.normalize(p, dim=-1)
    z = torch.nn.functional.normalize(z, dim=-1)
    return torch.einsum("vbd,kbd->vk", p, z) / p.shape[1]


def prediction_target_pairs(num_pred: int, num_target: int, device: torch.device) -> torch.Tensor:
    """Bool (V, K) mask of the (prediction view v, target view j) pairs with ``v != j``.

    Views ``0..K-1`` are the large crops (they have targets), views ``K..V-1`` small crops (only
    predictions), so a small crop is paired with every large crop.
    """
    v = torch.arange(num_pred, device=device).view(-1, 1)
    j = torch.arange(num_target, device=device).view(1, -1)
    return v != j


def paired_prediction_cosines(p: Views, z: Views, name: str) -> torch.Tensor:
    """Mean cosines ``C[v, j]`` of every (prediction view v, stop-gradient target view j != v)
    pair, flattened; ``p`` holds all V crops (large first), ``z`` the K <= V large crops."""
    p = stack_views(p, f"{name}: p", min_views=2)
    z = stack_views(z, f"{name}: z", min_views=2)
    if z.shape[0] > p.shape[0]:
        raise ValueError(
            f"{name}: got {z.shape[0]} target views but only {p.shape[0]} prediction views; "
            "targets exist for the large crops, predictions for every crop"
        )
    cos = cross_view_cosines(p, z.detach())
    return cos[prediction_target_pairs(p.shape[0], z.shape[0], cos.device)]
