"""The solo-learn adapters, value by value: what ``hosts/solo_host.py`` and
``hosts/solo_compat.py`` pass on to solo-learn and torchmetrics, or set on their classes.

Pinned down here: the solo host's ``BaseMethod`` / ``BaseMomentumMethod`` apply
``backbone.stem`` / ``backbone.cifar_stem_padding`` to the backbone(s) solo-learn built (online
and momentum stems, the momentum copy of the online weights, frozen); ``apply_backbone_stem``'s
return value for a non-ResNet backbone and for a module without a momentum backbone; the
``compute_on_step`` shim forwards every other positional and keyword argument; the kNN fix wraps
solo-learn's own ``WeightedKNNClassifier.compute`` so that unlabelled bank rows are dropped.

solo-learn's ResNet builder is replaced by a tiny stand-in with the same stem layers (the stem
code only looks at ``conv1`` / ``maxpool`` / ``fc`` / ``inplanes``), so each test stays fast.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from solo_multiview.hosts import solo_available

pytestmark = [
    pytest.mark.solo,
    pytest.mark.skipif(not solo_available(),
                       reason="solo-learn is not installed (see README: add solo-learn)"),
]


@pytest.fixture(autouse=True)
def solo_fixes_applied():
    """Importing the solo host applies the compatibility fixes (once per process)."""
    from solo_multiview.hosts import solo_host

    return solo_host


class TinyResNet(nn.Module):
    """The layers of a torchvision ResNet that the stem code reads, with torchvision's
    (imagenet) stem; 64 output features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.fc = nn.Linear(64, 10)
        self.inplanes = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.maxpool(self.conv1(x)).mean(dim=(2, 3)))


@pytest.fixture
def tiny_resnet18(monkeypatch):
    """solo-learn's ``resnet18`` builder replaced by :class:`TinyResNet`; records every
    backbone it builds."""
    from solo.methods.base import BaseMethod as SoloBase

    built = []

    def builder(method, **kwargs):
        built.append((method, kwargs, TinyResNet()))
        return built[-1][2]

    monkeypatch.setitem(SoloBase._BACKBONES, "resnet18", builder)
    return built


def solo_method(tmp_path, method, overrides):
    from solo_multiview.config.pretrain import parse_pretrain_cfg
    from solo_multiview.methods import build_method
    from tests.helpers import tiny_cfg

    cfg = tiny_cfg(tmp_path, method=method, host="solo",
                   overrides=["backbone.name=resnet18", "~backbone.kwargs", *overrides])
    return build_method(parse_pretrain_cfg(cfg))


def assert_cifar_stem(net: nn.Module, padding: int) -> None:
    conv = net.conv1
    assert type(conv) is nn.Conv2d
    assert (conv.in_channels, conv.out_channels) == (3, 64)
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1)
    assert conv.padding == (padding, padding) and conv.bias is None
    assert type(net.maxpool) is nn.Identity
    assert type(net.fc) is nn.Identity


STEM = ["+backbone.stem=cifar", "+backbone.cifar_stem_padding=1"]


def test_solo_base_method_applies_the_configured_stem(tmp_path, tiny_resnet18):
    from solo_multiview.hosts import solo_host

    model = solo_method(tmp_path, "mv_simclr", STEM)
    assert isinstance(model, solo_host.BaseMethod)
    assert not isinstance(model, solo_host.BaseMomentumMethod)
    assert len(tiny_resnet18) == 1
    method, kwargs, built = tiny_resnet18[0]
    assert (method, kwargs) == ("mv_simclr", {})
    assert model.backbone is built
    assert_cifar_stem(model.backbone, 1)  # solo-learn left the imagenet stem for "digits"
    assert model.backbone.conv1.weight.requires_grad
    assert not hasattr(model, "momentum_backbone")


def test_solo_base_method_keeps_solo_learns_stem_by_default(tmp_path, tiny_resnet18):
    model = solo_method(tmp_path, "mv_simclr", [])
    built = tiny_resnet18[0][2]
    assert model.backbone is built
    conv = model.backbone.conv1
    assert (conv.kernel_size, conv.stride, conv.padding) == ((7, 7), (2, 2), (3, 3))
    assert type(model.backbone.maxpool) is nn.MaxPool2d


def test_solo_momentum_method_applies_the_stem_to_both_backbones(tmp_path, tiny_resnet18):
    from solo_multiview.hosts import solo_host

    model = solo_method(tmp_path, "mv_byol", [*STEM, "+method_kwargs.pred_hidden_dim=16"])
    assert isinstance(model, solo_host.BaseMomentumMethod)
    assert [(m, k) for m, k, _ in tiny_resnet18] == [("mv_byol", {}), ("mv_byol", {})]
    assert model.backbone is tiny_resnet18[0][2]
    assert model.momentum_backbone is tiny_resnet18[1][2]
    assert_cifar_stem(model.backbone, 1)
    assert_cifar_stem(model.momentum_backbone, 1)
    assert model.momentum_backbone.conv1 is not model.backbone.conv1
    assert torch.equal(model.momentum_backbone.conv1.weight, model.backbone.conv1.weight)
    assert model.backbone.conv1.weight.requires_grad
    assert not model.momentum_backbone.conv1.weight.requires_grad


def stem_cfg(name="resnet18", dataset="image_list", **backbone):
    from omegaconf import OmegaConf

    return OmegaConf.create({"backbone": {"name": name, **backbone}, "data": {"dataset": dataset}})


def test_apply_backbone_stem_on_a_non_resnet_changes_nothing():
    from solo_multiview.hosts.solo_compat import apply_backbone_stem

    net = nn.Linear(2, 2)
    module = SimpleNamespace(backbone=net)
    assert apply_backbone_stem(module, stem_cfg(name="convnet")) is False
    assert apply_backbone_stem(module, stem_cfg(name="convnet", stem="auto",
                                                cifar_stem_padding=2)) is False
    assert module.backbone is net and vars(module) == {"backbone": net}


def test_apply_backbone_stem_without_a_momentum_backbone():
    from solo_multiview.hosts.solo_compat import apply_backbone_stem

    module = SimpleNamespace(backbone=TinyResNet())
    assert apply_backbone_stem(module, stem_cfg(stem="cifar", cifar_stem_padding=0)) is True
    assert module.backbone.conv1.padding == (0, 0) and module.backbone.conv1.kernel_size == (3, 3)
    assert type(module.backbone.maxpool) is nn.Identity
    assert list(vars(module)) == ["backbone"]
    assert apply_backbone_stem(module, stem_cfg(stem="cifar", cifar_stem_padding=0)) is False


# ---------------------------------------------------------------- the compute_on_step shim

class Scaled:
    """A cooperative base between the shim and ``Metric`` that takes a positional argument."""

    def __init__(self, scale, *, offset=0, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset = scale, offset


def probe_class():
    from torchmetrics import Metric

    from solo_multiview.hosts.solo_compat import _MetricWithoutComputeOnStep

    class Probe(_MetricWithoutComputeOnStep, Scaled, Metric):
        def update(self) -> None:
            pass

        def compute(self) -> int:
            return 0

    return Probe


def test_shim_forwards_positional_and_keyword_arguments():
    probe = probe_class()(3, compute_on_step=True, offset=5, dist_sync_on_step=True,
                          sync_on_compute=False, compute_with_cache=False)
    assert (probe.scale, probe.offset) == (3, 5)
    assert probe.dist_sync_on_step is True
    assert probe.sync_on_compute is False
    assert probe.compute_with_cache is False
    assert not hasattr(probe, "compute_on_step")


def test_shim_forwards_solo_learns_knn_arguments():
    from solo.utils.knn import WeightedKNNClassifier

    from solo_multiview.hosts.solo_compat import _MetricWithoutComputeOnStep

    assert WeightedKNNClassifier.__bases__ == (_MetricWithoutComputeOnStep,)
    assert WeightedKNNClassifier(k=3, dist_sync_on_step=True).dist_sync_on_step is True
    assert WeightedKNNClassifier(k=3).dist_sync_on_step is False


# ---------------------------------------------------------------- kNN unlabelled rows

def test_knn_fix_wraps_solo_learns_compute(monkeypatch):
    from solo.utils.knn import WeightedKNNClassifier

    from solo_multiview.hosts import solo_compat

    current = WeightedKNNClassifier.compute
    raw = getattr(current, "__wrapped__", current)
    assert raw.__qualname__ == "WeightedKNNClassifier.compute"
    monkeypatch.setattr(WeightedKNNClassifier, "compute", raw)
    solo_compat._fix_knn_unlabelled_rows()
    fixed = WeightedKNNClassifier.compute
    assert fixed is not raw and fixed.__wrapped__ is raw
    assert fixed._drops_unlabelled is True
    assert fixed.__name__ == "compute"

    knn = WeightedKNNClassifier(k=2, T=0.07)
    knn.update(train_features=torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]),
               train_targets=torch.tensor([0, -1, 1]))
    knn.update(train_features=torch.tensor([[0.8, 0.6], [0.6, 0.8]]),
               train_targets=torch.tensor([-1, 1]))
    knn.update(test_features=torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]),
               test_targets=torch.tensor([1, 1, 0]))
    # labelled bank: [1,0]:0, [0,1]:1, [.6,.8]:1 (the unlabelled rows would be nearer). Test
    # [1,0] (class 1): neighbours 0 (sim 1), 1 (sim .6): wrong at 1, right at 2. Test [.8,.6]
    # (class 1): neighbours 1 (sim .96), 0 (sim .8): right. Test [0,1] (class 0): neighbours
    # 1 (sim 1), 1 (sim .8): wrong at 1; at 2 every class (two, counted on the test set) is in.
    assert knn.compute() == (100.0 / 3, 100.0)
