"""ResNet stems (hosts/backbones.py): the layers each stem is made of, layer by layer, and the
check that leaves a backbone alone when it already has the stem."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from solo_multiview.hosts.backbones import (
    apply_stem,
    cifar_stem_conv,
    has_stem,
    imagenet_stem_conv,
)


def conv_shape(conv: nn.Conv2d) -> tuple:
    return (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.bias is None)


def test_imagenet_stem_is_torchvisions_first_layers():
    torch.manual_seed(0)
    backbone = resnet18()
    apply_stem(backbone, "cifar", 2)
    assert apply_stem(backbone, "imagenet", 2) is True
    assert conv_shape(backbone.conv1) == (3, 64, (7, 7), (2, 2), (3, 3), True)
    pool = backbone.maxpool
    assert isinstance(pool, nn.MaxPool2d)
    assert (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
    # a 32x32 image leaves the stem at 8x8 (conv /2, pool /2)
    assert backbone.maxpool(backbone.conv1(torch.zeros(1, 3, 32, 32))).shape == (1, 64, 8, 8)
    # Kaiming normal over fan_out = 64 x 7 x 7 (fan_in would give sqrt(2 / 147) = 0.117)
    std = imagenet_stem_conv().weight.std().item()
    assert std == pytest.approx(math.sqrt(2 / (64 * 49)), rel=0.05)


def test_cifar_stem_and_its_padding():
    backbone = resnet18()
    assert apply_stem(backbone, "cifar", 1) is True
    assert conv_shape(backbone.conv1) == (3, 64, (3, 3), (1, 1), (1, 1), True)
    assert isinstance(backbone.maxpool, nn.Identity)
    assert conv_shape(cifar_stem_conv()) == (3, 64, (3, 3), (1, 1), (2, 2), True)


def with_stem(conv: nn.Conv2d, pool: nn.Module) -> nn.Module:
    module = nn.Module()
    module.conv1, module.maxpool = conv, pool
    return module


@pytest.mark.parametrize("conv,pool,stem,expected", [
    (nn.Conv2d(3, 64, 7, 2, 3), nn.MaxPool2d(3, 2, 1), "imagenet", True),
    (nn.Conv2d(3, 64, 5, 2, 3), nn.MaxPool2d(3, 2, 1), "imagenet", False),   # kernel
    (nn.Conv2d(3, 64, (7, 5), 2, 3), nn.MaxPool2d(3, 2, 1), "imagenet", False),
    (nn.Conv2d(3, 64, 7, 1, 3), nn.MaxPool2d(3, 2, 1), "imagenet", False),   # stride
    (nn.Conv2d(3, 64, 7, (2, 1), 3), nn.MaxPool2d(3, 2, 1), "imagenet", False),
    (nn.Conv2d(3, 64, 7, 2, 2), nn.MaxPool2d(3, 2, 1), "imagenet", False),   # padding
    (nn.Conv2d(3, 64, 7, 2, (3, 2)), nn.MaxPool2d(3, 2, 1), "imagenet", False),
    (nn.Conv2d(3, 64, 7, 2, 3), nn.Identity(), "imagenet", False),           # no pool
    (nn.Conv2d(3, 64, 3, 1, 2), nn.Identity(), "cifar", True),
    (nn.Conv2d(3, 64, 5, 1, 2), nn.Identity(), "cifar", False),
    (nn.Conv2d(3, 64, 3, 2, 2), nn.Identity(), "cifar", False),
    (nn.Conv2d(3, 64, 3, 1, 1), nn.Identity(), "cifar", False),              # padding 1 != 2
    (nn.Conv2d(3, 64, 3, 1, 2), nn.MaxPool2d(3, 2, 1), "cifar", False),
])
def test_has_stem_checks_every_part(conv, pool, stem, expected):
    assert has_stem(with_stem(conv, pool), stem, 2) is expected


def test_a_backbone_with_the_stem_is_left_alone():
    backbone = resnet18()
    conv, pool = backbone.conv1, backbone.maxpool
    assert apply_stem(backbone, "imagenet", 2) is False
    assert backbone.conv1 is conv and backbone.maxpool is pool
