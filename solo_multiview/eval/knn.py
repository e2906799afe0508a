"""Weighted k-nearest-neighbour classifier on frozen features (Wu et al., 2018; solo-learn's
``WeightedKNNClassifier`` with cosine distance).

For a test feature ``q`` and the bank ``{(b_j, y_j)}``, with unit vectors ``q' = q / |q|`` and
``b'_j = b_j / |b_j|``, similarities ``s_j = q' . b'_j``, ``N_k(q)`` the ``k`` most similar bank
entries (``k`` capped at the bank size) and temperature ``T``::

    score_c(q) = sum_{j in N_k(q), y_j = c} exp(s_j / T)

The prediction is ``argmax_c score_c``. Computation is chunked over test features so that at most
``chunk_size x bank_size`` similarities exist at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from solo_multiview.config.schema import setting

DEFAULT_K = 200
DEFAULT_TEMPERATURE = 0.1
#: below this temperature exp(1 / T) overflows float32 for a cosine similarity of 1
MIN_TEMPERATURE = 1.0 / 88.0


@dataclass
class KnnConfig:
    """The ``knn`` node of main_knn.py: the arguments of ``knn_scores``, declared beside it."""

    k: int = setting(DEFAULT_K, "neighbours that vote (capped at the bank size)", minimum=1)
    temperature: float = setting(DEFAULT_TEMPERATURE, "T of the vote weights exp(s / T); below "
                                 "1/88 exp(1/T) overflows float32", minimum=MIN_TEMPERATURE)


@torch.no_grad()
def knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: Optional[int] = None,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Weighted kNN class scores, ``(N_test, C)`` float32 on ``test_features``' device.

    Args:
        train_features: ``(M, D)`` bank features.
        train_labels: ``(M,)`` integer bank labels.
        test_features: ``(N, D)`` query features.
        num_classes: ``C``; defaults to ``max(train_labels) + 1`` (pass it explicitly when the
            bank may lack the last classes).
        k: neighbours per query, capped at ``M``.
        temperature: ``T > 0`` in ``exp(s / T)``. float32 overflows for ``T`` below ~0.0113
            (``exp(1/T) > 3.4e38``); a non-finite result raises ``ValueError``.
        chunk_size: queries per similarity block.
    """
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise ValueError(f"knn features: expected 2-D (num, dim) tensors, got train "
                         f"{tuple(train_features.shape)} and test {tuple(test_features.shape)}")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"knn features: train dim {train_features.shape[1]} != test dim "
                         f"{test_features.shape[1]}")
    if train_features.shape[0] == 0:
        raise ValueError("knn train_features: the feature bank is empty")
    train_labels = torch.as_tensor(train_labels)
    if train_labels.shape != (train_features.shape[0],) or train_labels.dtype.is_floating_point:
        raise ValueError(f"knn train_labels: expected ({train_features.shape[0]},) integer "
                         f"labels, got {tuple(train_labels.shape)} {train_labels.dtype}")
    if k < 1:
        raise ValueError(f"knn k: must be >= 1, got {k}")
    if not temperature > 0:
        raise ValueError(f"knn temperature: must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"knn chunk_size: must be >= 1, got {chunk_size}")
    device = test_features.device
    train_labels = train_labels.to(device).long()
    if train_labels.min() < 0:
        raise ValueError(f"knn train_labels: must be >= 0, got {int(train_labels.min())}")
    if num_classes is None:
        num_classes = int(train_labels.max()) + 1
    elif int(train_labels.max()) >= num_classes:
        raise ValueError(f"knn num_classes: {num_classes} but train_labels reach "
                         f"{int(train_labels.max())}")

    bank = F.normalize(train_features.to(device, torch.float32), dim=1)
    k = min(k, bank.shape[0])
    out = torch.empty(test_features.shape[0], num_classes, dtype=torch.float32, device=device)
    for start in range(0, test_features.shape[0], chunk_size):
        query = F.normalize(test_features[start:start + chunk_size].to(torch.float32), dim=1)
        sim, idx = (query @ bank.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        scores = torch.zeros(query.shape[0], num_classes, dtype=torch.float32, device=device)
        scores.scatter_add_(1, train_labels[idx], weights)
        out[start:start + query.shape[0]] = scores
    if not torch.isfinite(out).all():
        raise ValueError(f"knn temperature: exp(s / {temperature}) overflowed float32; use a "
                         f"larger temperature")
    return out
