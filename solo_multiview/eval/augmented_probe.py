"""Linear probe trained end to end on augmented images through the frozen backbone.

The model, loss and optimisation are those of ``linear.train_linear_probe`` (``LinearProbe``:
``logits = W ((x - mu) / sigma) + b``; cross-entropy, optionally class-balanced; SGD or AdamW with
a per-step cosine from ``lr`` to 0; ``W ~ N(0, 0.01^2)`` from a generator seeded with ``seed``),
with one difference: every epoch the features ``x = f(aug(image))`` are recomputed from a fresh
random augmentation of every training image. The backbone ``f`` stays frozen and in eval mode
(BatchNorm uses its running statistics; no gradient reaches it). ``mu``/``sigma`` are the
standardisation statistics of the *unaugmented* training features (pass them in), so that the
probe is applied to clean test features on the same scale.

Augmentation (``augmentation_transform``), the usual linear-evaluation recipes:

- ``crop="pad"``: pad by ``padding`` pixels (zeros) and take a random ``crop_size`` crop (the
  CIFAR recipe);
- ``crop="resized"``: ``RandomResizedCrop(crop_size, scale=(min_scale, 1))``, bicubic (the
  ImageNet recipe);

then a horizontal flip with probability ``horizontal_flip``, then ``(pixel / 255 - mean) / std``.
Images of another size are first resized (short side ``resize``) and centre-cropped to
``crop_size`` for ``pad``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode, v2

from solo_multiview.config.schema import setting

from .linear import LinearProbe, LinearProbeConfig, class_weights, probe_scheduler

Transform = Callable[[Image.Image], torch.Tensor]
CROP_MODES = ("pad", "resized")


@dataclass
class ProbeAugmentationConfig:
    """The ``probe.augmentation`` node of main_linear.py (``probe.mode=augmented`` only): the
    arguments of ``augmentation_transform``, declared beside it with its defaults."""

    crop: str = setting("pad", "pad (pad + random crop, CIFAR) | resized (RandomResizedCrop, "
                        "ImageNet)", choices=CROP_MODES)
    padding: int = setting(4, "crop=pad: zero padding in pixels before the random crop",
                           minimum=0)
    min_scale: float = setting(0.08, "crop=resized: smallest area fraction of the crop", above=0,
                               maximum=1)
    horizontal_flip: float = setting(0.5, "probability of a horizontal flip", minimum=0,
                                     maximum=1)


def augmentation_transform(
    crop_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop: str = "pad",
    padding: int = 4,
    min_scale: float = 0.08,
    horizontal_flip: float = 0.5,
    resize: Optional[int] = None,
) -> Transform:
    """PIL image -> augmented, normalised float32 tensor (see the module docstring)."""
    ops: List[Callable] = []
    if crop == "pad":
        ops += [_FitTo(crop_size, resize or crop_size),
                v2.RandomCrop(crop_size, padding=padding if padding > 0 else None)]
    elif crop == "resized":
        ops.append(v2.RandomResizedCrop(crop_size, scale=(min_scale, 1.0),
                                        interpolation=InterpolationMode.BICUBIC))
    else:
        raise ValueError(f"probe.augmentation.crop: unknown {crop!r}; choose 'pad' or 'resized'")
    if horizontal_flip > 0:
        ops.append(v2.RandomHorizontalFlip(p=horizontal_flip))
    ops += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)


class _FitTo:
    """Resize (short side ``resize``) + centre crop ``size`` unless the image is already
    ``size x size``."""

    def __init__(self, size: int, resize: int):
        self.size = size
        self.op = v2.Compose([v2.Resize(resize, interpolation=InterpolationMode.BICUBIC),
                              v2.CenterCrop(size)])

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.size == (self.size, self.size) else self.op(image)


def train_augmented_probe(
    backbone: nn.Module,
    dataset: Dataset,
    clean_features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    config: LinearProbeConfig,
    device: torch.device,
    num_workers: int = 0,
    log: Optional[Callable[[str], None]] = None,
) -> LinearProbe:
    """Trains a ``LinearProbe`` on ``backbone(aug(image))`` features, epoch by epoch.

    Args:
        backbone: the frozen encoder, already on ``device``; left in eval mode without grads.
        dataset: yields ``(index, augmented image tensor, label)`` (an ``IndexedSubset`` with an
            ``augmentation_transform``).
        clean_features: ``(N, D)`` the unaugmented training features: ``D`` and, with
            ``config.standardize``, ``mu`` = their mean and ``sigma`` = their population std
            (``sigma < 1e-6`` -> 1), per dimension.
        labels: ``(N,)`` the dataset's labels (for the class-balanced loss weights).
        config: epochs, batch size, optimiser, lr, ... as for ``train_linear_probe``.
        log: called with a progress line about ten times over the run.

    Returns:
        the trained probe in eval mode, on ``device``.
    """
    config.validate()
    backbone.eval().requires_grad_(False)
    gen = torch.Generator(device="cpu").manual_seed(int(config.seed))
    if clean_features.ndim != 2 or clean_features.shape[0] != len(labels):
        raise ValueError(f"augmented probe: clean_features must be (N, D) with N = "
                         f"{len(labels)} labels, got {tuple(clean_features.shape)}")
    with torch.random.fork_rng(devices=[]):
        probe = LinearProbe(clean_features.shape[1], num_classes)
    with torch.no_grad():
        probe.head.weight.copy_(torch.randn(probe.head.weight.shape, generator=gen) * 0.01)
        probe.head.bias.zero_()
        if config.standardize:
            x = clean_features.float()
            std = x.std(dim=0, unbiased=False)
            probe.mean.copy_(x.mean(dim=0))
            probe.std.copy_(torch.where(std < 1e-6, torch.ones_like(std), std))
    probe.to(device)

    if config.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            probe.head.parameters(), lr=config.lr, momentum=config.momentum,
            nesterov=config.nesterov, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.AdamW(probe.head.parameters(), lr=config.lr,
                                weight_decay=config.weight_decay)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=False,
                        num_workers=num_workers, generator=gen,
                        pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)
    sched = probe_scheduler(opt, config, len(loader))
    weight = class_weights(labels.to(device).long(), num_classes) if config.balanced_loss \
        else None
    every = max(1, config.epochs // 10)
    probe.train()
    for epoch in range(config.epochs):
        total, count = 0.0, 0
        for batch in loader:
            images, targets = batch[-2].to(device, non_blocking=True), batch[-1].to(device)
            with torch.no_grad():
                feats = backbone(images).float()
            loss = F.cross_entropy(probe(feats), targets, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(targets)
            count += len(targets)
        if log is not None and ((epoch + 1) % every == 0 or epoch + 1 == config.epochs):
            log(f"augmented probe: epoch {epoch + 1}/{config.epochs} loss {total / count:.4f}")
    return probe.eval()

