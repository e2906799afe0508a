"""Backbones shared by both hosts.

The ResNets are torchvision's, with solo-learn's CIFAR stem (3x3 stride-1 first convolution,
no max-pool) when ``data.dataset`` is ``cifar10`` or ``cifar100``, so a checkpoint's ``backbone.``
weights load into solo-learn's own backbone and back. ``convnet`` is a small plain CNN for tests
and CPU experiments; it is registered into solo-learn too (see ``hosts/solo_compat.py``).

Every builder has solo-learn's signature ``builder(method, **kwargs)`` and returns a module whose
output is the flat feature vector (``fc`` removed) and which exposes ``num_features``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict

import torch
from torch import nn
from torchvision import models

from solo_multiview.config.schema import ConfigError, setting

CIFAR_DATASETS = ("cifar10", "cifar100")


def _resnet(arch: Callable[..., nn.Module], **kwargs: Any) -> nn.Module:
    net = arch(weights=None, **kwargs)
    net.num_features = net.fc.in_features
    return net


def resnet18(method: str | None = None, **kwargs: Any) -> nn.Module:
    """torchvision ResNet-18 (fc still attached; ``build_backbone`` removes it)."""
    return _resnet(models.resnet18, **kwargs)


def resnet50(method: str | None = None, **kwargs: Any) -> nn.Module:
    """torchvision ResNet-50 (fc still attached; ``build_backbone`` removes it)."""
    return _resnet(models.resnet50, **kwargs)


class ConvNet(nn.Module):
    """``depth`` conv-BN-ReLU blocks; every block after the first halves the resolution and
    doubles the width; global average pooling gives ``num_features = width * 2**(depth-1)``."""

    def __init__(self, width: int = 32, depth: int = 4, in_channels: int = 3):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"backbone.kwargs: convnet needs depth >= 1 and width >= 1, "
                             f"got depth={depth}, width={width}")
        layers = []
        channels = in_channels
        for block in range(depth):
            out = width * 2**block
            stride = 1 if block == 0 else 2
            layers += [
                nn.Conv2d(channels, out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


def convnet(method: str | None = None, **kwargs: Any) -> nn.Module:
    return ConvNet(**kwargs)


BACKBONES: Dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "convnet": convnet,
}


@dataclass
class BackboneConfig:
    """``backbone.*`` (solo-learn's keys)."""

    name: str = setting(help="the encoder", choices=tuple(BACKBONES))
    kwargs: Dict[str, Any] = setting({}, "arguments of the backbone's builder (convnet: width, "
                                     "depth; resnet*: torchvision's, e.g. zero_init_residual)")


def check_backbone_kwargs(name: str, kwargs: Dict[str, Any]) -> None:
    """ConfigError naming ``backbone.kwargs.<key>`` when the builder does not take it."""
    builder = {"convnet": ConvNet.__init__, "resnet18": models.resnet18,
               "resnet50": models.resnet50}[name]
    params = inspect.signature(builder).parameters
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values()) and name != "convnet"
    allowed = [p for p in params if p not in ("self", "weights", "progress", "kwargs",
                                              "in_channels")]
    if name.startswith("resnet"):
        allowed = sorted(set(allowed) | {"zero_init_residual", "groups", "width_per_group",
                                         "replace_stride_with_dilation", "norm_layer"})
        open_ended = False
    for key in kwargs:
        if key not in allowed and not open_ended:
            raise ConfigError(f"backbone.kwargs.{key}: unknown argument of {name}; accepted: "
                              f"{allowed}")


def adapt_backbone(backbone: nn.Module, name: str, dataset: str) -> nn.Module:
    """Removes a ResNet's classifier and gives it solo-learn's CIFAR stem for CIFAR datasets.

    Kept separate from construction because solo-learn's base builds the backbone itself and
    then applies exactly these changes."""
    if name.startswith("resnet"):
        backbone.fc = nn.Identity()
        if dataset in CIFAR_DATASETS:
            # solo-learn's stem, byte for byte in shape: kernel 3, stride 1, padding 2.
            backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
            backbone.maxpool = nn.Identity()
    return backbone


def build_backbone(
    name: str, dataset: str, kwargs: Dict[str, Any] | None = None, method: str | None = None
) -> nn.Module:
    """The feature extractor named ``name`` (a key of ``BACKBONES``), ready for ``dataset``."""
    if name not in BACKBONES:
        raise ValueError(f"backbone.name: unknown backbone {name!r}; choose one of "
                         f"{sorted(BACKBONES)}")
    backbone = BACKBONES[name](method, **dict(kwargs or {}))
    return adapt_backbone(backbone, name, dataset)
