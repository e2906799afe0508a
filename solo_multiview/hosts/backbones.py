"""Backbones shared by both hosts.

The ResNets are torchvision's. Their first layers (the *stem*) are chosen by ``backbone.stem``:
``cifar`` is solo-learn's CIFAR stem (3x3 stride-1 first convolution with padding
``backbone.cifar_stem_padding``, no max-pool), ``imagenet`` torchvision's (7x7 stride-2
convolution and max-pool), and ``auto`` (the default) solo-learn's rule: the CIFAR stem when
``data.dataset`` is ``cifar10`` or ``cifar100``, so a checkpoint's ``backbone.`` weights load into
solo-learn's own backbone and back. CIFAR read as an ``image_list`` needs ``backbone.stem: cifar``
(``auto`` gives it the ImageNet stem). Both keys are recorded in ``args.json``; evaluation
(``eval/checkpoint.py``) rebuilds the same stem from them (an ``args.json`` without them means
``auto`` with padding 2). ``convnet`` is a small plain CNN for tests
and CPU experiments; it is registered into solo-learn too (see ``hosts/solo_compat.py``).

Every builder has solo-learn's signature ``builder(method, **kwargs)`` and returns a module whose
output is the flat feature vector (``fc`` removed) and which exposes ``num_features``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import nn
from torchvision import models

from solo_multiview.config.schema import ConfigError, setting

CIFAR_DATASETS = ("cifar10", "cifar100")
STEMS = ("auto", "cifar", "imagenet")
#: solo-learn's padding of the CIFAR stem's 3x3 convolution (the MTTV authors' code uses 1)
SOLO_CIFAR_STEM_PADDING = 2


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
    """``backbone.*``: solo-learn's ``name`` and ``kwargs``, and this project's ``stem`` and
    ``cifar_stem_padding`` (module docstring)."""

    name: str = setting(help="the encoder", choices=tuple(BACKBONES))
    kwargs: Dict[str, Any] = setting({}, "arguments of the backbone's builder (convnet: width, "
                                     "depth; resnet*: torchvision's, e.g. zero_init_residual)")
    stem: str = setting("auto", "a ResNet's first layers: cifar (3x3 stride-1 conv, no max-pool), "
                        "imagenet (7x7 stride-2 conv and max-pool), auto (cifar for data.dataset "
                        "cifar10/cifar100, else imagenet); a convnet takes only auto",
                        choices=STEMS)
    cifar_stem_padding: int = setting(SOLO_CIFAR_STEM_PADDING, "padding of the CIFAR stem's 3x3 "
                                      "convolution (solo-learn: 2; the MTTV authors' code: 1)",
                                      minimum=0)


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


def check_backbone_stem(name: str, stem: str, cifar_stem_padding: int) -> None:
    """ConfigError when a non-ResNet backbone is given a stem other than ``auto`` or a CIFAR stem
    padding other than the default (the convnet has no stem to change: never ignored silently)."""
    if stem not in STEMS:
        raise ConfigError(f"backbone.stem: unknown value {stem!r}; choose one of {list(STEMS)}")
    if not name.startswith("resnet") and (stem != "auto"
                                          or cifar_stem_padding != SOLO_CIFAR_STEM_PADDING):
        raise ConfigError(f"backbone.stem / backbone.cifar_stem_padding: {name} has no ResNet "
                          f"stem; leave them at auto / {SOLO_CIFAR_STEM_PADDING} (got "
                          f"{stem!r} / {cifar_stem_padding!r})")


def stem_settings(backbone_cfg: Optional[Mapping[str, Any]]) -> Tuple[str, int]:
    """``(backbone.stem, backbone.cifar_stem_padding)`` of a config's ``backbone`` node (a parsed
    config, or an ``args.json`` read back); missing keys (an older ``args.json``) mean ``auto``
    and solo-learn's padding 2."""
    node = backbone_cfg if backbone_cfg is not None else {}
    stem = node.get("stem", None)
    padding = node.get("cifar_stem_padding", None)
    return (("auto" if stem is None else str(stem)),
            SOLO_CIFAR_STEM_PADDING if padding is None else int(padding))


def resolve_stem(stem: str, dataset: str) -> str:
    """``cifar`` or ``imagenet``: ``auto`` is solo-learn's rule (CIFAR stem for cifar10/100)."""
    if stem not in STEMS:
        raise ValueError(f"backbone.stem: unknown value {stem!r}; choose one of {list(STEMS)}")
    if stem == "auto":
        return "cifar" if dataset in CIFAR_DATASETS else "imagenet"
    return stem


def cifar_stem_conv(padding: int = SOLO_CIFAR_STEM_PADDING) -> nn.Conv2d:
    """solo-learn's CIFAR first convolution: 3 -> 64 channels, kernel 3, stride 1 (PyTorch's
    default initialisation, as solo-learn's)."""
    return nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=int(padding), bias=False)


def imagenet_stem_conv() -> nn.Conv2d:
    """torchvision's ResNet first convolution (kernel 7, stride 2, padding 3), initialised as
    torchvision initialises it."""
    conv = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def has_stem(backbone: nn.Module, stem: str, cifar_stem_padding: int) -> bool:
    """Whether a ResNet's ``conv1`` and ``maxpool`` already are ``stem`` (cifar or imagenet)."""
    conv, pool = backbone.conv1, backbone.maxpool
    if stem == "cifar":
        return (conv.kernel_size == (3, 3) and conv.stride == (1, 1)
                and conv.padding == (int(cifar_stem_padding),) * 2
                and isinstance(pool, nn.Identity))
    return (conv.kernel_size == (7, 7) and conv.stride == (2, 2) and conv.padding == (3, 3)
            and isinstance(pool, nn.MaxPool2d))


def apply_stem(backbone: nn.Module, stem: str, cifar_stem_padding: int) -> bool:
    """Gives a ResNet the resolved ``stem`` (``cifar`` or ``imagenet``) unless it already has it
    (then nothing changes, so the default path builds exactly what solo-learn builds). Returns
    whether a layer was replaced (its weights are then freshly initialised)."""
    if has_stem(backbone, stem, cifar_stem_padding):
        return False
    if stem == "cifar":
        backbone.conv1 = cifar_stem_conv(cifar_stem_padding)
        backbone.maxpool = nn.Identity()
    else:
        backbone.conv1 = imagenet_stem_conv()
        backbone.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    return True


def adapt_backbone(backbone: nn.Module, name: str, dataset: str, stem: str = "auto",
                   cifar_stem_padding: int = SOLO_CIFAR_STEM_PADDING) -> nn.Module:
    """Removes a ResNet's classifier and gives it the stem of ``stem`` for ``dataset`` (``auto``:
    solo-learn's CIFAR stem for CIFAR datasets, see the module docstring).

    Kept separate from construction because solo-learn's base builds the backbone itself and
    applies the ``auto`` changes (the solo host applies the others, ``hosts/solo_host.py``)."""
    if name.startswith("resnet"):
        backbone.fc = nn.Identity()
        if resolve_stem(stem, dataset) == "cifar":
            # solo-learn's stem, byte for byte in shape: kernel 3, stride 1, padding 2 (default).
            backbone.conv1 = cifar_stem_conv(cifar_stem_padding)
            backbone.maxpool = nn.Identity()
    else:
        check_backbone_stem(name, stem, cifar_stem_padding)
    return backbone


def build_backbone(
    name: str, dataset: str, kwargs: Dict[str, Any] | None = None, method: str | None = None,
    stem: str = "auto", cifar_stem_padding: int = SOLO_CIFAR_STEM_PADDING,
) -> nn.Module:
    """The feature extractor named ``name`` (a key of ``BACKBONES``), ready for ``dataset``, with
    the stem ``stem`` (``backbone.stem``; ``auto`` decides by ``dataset``)."""
    if name not in BACKBONES:
        raise ValueError(f"backbone.name: unknown backbone {name!r}; choose one of "
                         f"{sorted(BACKBONES)}")
    backbone = BACKBONES[name](method, **dict(kwargs or {}))
    return adapt_backbone(backbone, name, dataset, stem, cifar_stem_padding)


def build_backbone_from_cfg(cfg: Mapping[str, Any], method: str | None = None) -> nn.Module:
    """``build_backbone`` from a config's ``backbone`` and ``data.dataset`` (a parsed config or
    an ``args.json`` read back; missing stem keys mean ``auto``)."""
    stem, padding = stem_settings(cfg["backbone"])
    return build_backbone(cfg["backbone"]["name"], cfg["data"]["dataset"],
                          cfg["backbone"].get("kwargs"), method, stem, padding)
