"""Projection and prediction heads (MLPs) used by the methods."""

from __future__ import annotations

from typing import List

from torch import nn


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int = 2,
    batch_norm: bool = True,
    last_batch_norm: bool = False,
) -> nn.Sequential:
    """``num_layers`` linear layers; every hidden layer is Linear [-> BN] -> ReLU.

    ``batch_norm=False, num_layers=2`` is SimCLR's head, ``batch_norm=True`` BYOL's and
    SimSiam's predictor; ``last_batch_norm`` adds a BN (with affine) after the output layer,
    as in the MTTV projector (d -> d -> d/4, BN after each layer)."""
    if num_layers < 1:
        raise ValueError(f"an MLP head needs at least one layer, got num_layers={num_layers}")
    layers: List[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(out_dim))
    return nn.Sequential(*layers)
