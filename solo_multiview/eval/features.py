"""Frozen-feature extraction for the kNN and linear-probe evaluations."""

from __future__ import annotations

from typing import Any, Iterable, Optional, Tuple

import torch
from torch import nn


def _split_batch(batch: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` from a ``(images, labels)`` or ``(indexes, images, labels)`` batch."""
    if not isinstance(batch, (list, tuple)) or len(batch) not in (2, 3):
        raise ValueError("feature loader: batches must be (images, labels) or "
                         f"(indexes, images, labels), got {type(batch).__name__} of length "
                         f"{len(batch) if hasattr(batch, '__len__') else '?'}")
    images, labels = batch[-2], batch[-1]
    if not isinstance(images, torch.Tensor):
        raise ValueError("feature loader: images must be one tensor per batch (an evaluation "
                         f"transform, not a list of augmented crops), got {type(images).__name__}")
    return images, torch.as_tensor(labels)


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    loader: Iterable[Any],
    device: Optional[torch.device | str] = None,
    to_cpu: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Runs ``backbone`` in eval mode without gradients over ``loader``.

    Args:
        backbone: maps images ``(B, 3, H, W)`` to features ``(B, D)``.
        loader: yields ``(images, labels)`` or ``(indexes, images, labels)``.
        device: where to run; defaults to the backbone's parameter device (the backbone is not
            moved: put it on ``device`` first).
        to_cpu: gather the results on the CPU (else on ``device``).

    Returns:
        ``(features (N, D) float32, labels (N,) int64)`` in loader order. Every submodule's
        ``training`` flag is restored afterwards, also when an exception is raised.
    """
    device = torch.device(device) if device is not None else _module_device(backbone)
    modes = [(m, m.training) for m in backbone.modules()]
    feats, labels = [], []
    try:
        backbone.eval()
        for batch in loader:
            images, targets = _split_batch(batch)
            out = backbone(images.to(device, non_blocking=True))
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(images):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"feature extraction: the backbone must return (B, D) features "
                                 f"for a batch of {len(images)}, got {shape}")
            out = out.float()
            feats.append(out.cpu() if to_cpu else out)
            targets = targets.long()
            labels.append(targets.cpu() if to_cpu else targets.to(device))
    finally:
        for module, training in modes:
            module.training = training
    if not feats:
        raise ValueError("feature extraction: the loader yielded no batches")
    return torch.cat(feats), torch.cat(labels)
