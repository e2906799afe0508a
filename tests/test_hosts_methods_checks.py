"""Host and method details with exact values: solo-learn detection, the composed-class lookup's
error, BYOL's collapse monitor, the EMP-SSL and MMCR projectors, the non-finite guard's text."""

from __future__ import annotations

import importlib.machinery
import math
import re
import sys
import types

import pytest
import torch
import torch.nn as nn

import solo_multiview.methods as methods
from solo_multiview.config.pretrain import parse_pretrain_cfg
from solo_multiview.hosts import solo_available
from solo_multiview.hosts.guard import _as_float, _format
from solo_multiview.methods import build_method
from tests.test_methods_kview import build_model
from tests.test_methods_objectives import TINY_MODEL, preset_cfg


def test_solo_learn_is_detected_by_its_package_name(monkeypatch):
    monkeypatch.delitem(sys.modules, "solo", raising=False)
    monkeypatch.setattr(sys, "meta_path", [])  # nothing on disk can be found
    assert solo_available() is False
    fake = types.ModuleType("solo")
    fake.__spec__ = importlib.machinery.ModuleSpec("solo", None)
    monkeypatch.setitem(sys.modules, "solo", fake)
    assert solo_available() is True


def test_unknown_attributes_of_the_methods_module_name_themselves():
    with pytest.raises(AttributeError, match=re.escape(
            "module 'solo_multiview.methods' has no attribute 'NoSuchMethod__builtin'")):
        methods.NoSuchMethod__builtin  # noqa: B018


def test_byol_collapse_monitor_is_the_mean_per_dimension_std_of_unit_projections(tmp_path):
    model = build_model(tmp_path, "mv_byol", "builtin", 2)
    gen = torch.Generator().manual_seed(0)
    z = [torch.randn(6, 5, generator=gen) * (1 + v) for v in range(3)]  # 2 large + 1 small
    out = {"p": [torch.randn(6, 5, generator=gen) for _ in range(3)],
           "momentum_z": [torch.randn(6, 5, generator=gen) for _ in range(2)], "z": z}
    loss, stats = model.kview_loss(out, None)
    assert set(stats) == {"neg_cos_sim", "z_std"}  # logged as train_neg_cos_sim (solo's name)
    assert torch.equal(stats["neg_cos_sim"], loss)
    stds = []
    for view in z[:2]:  # the large crops only
        rows = [[x / math.sqrt(sum(y * y for y in row)) for x in row]
                for row in view.double().tolist()]
        for d in range(5):
            col = [row[d] for row in rows]
            mean = sum(col) / len(col)
            stds.append(math.sqrt(sum((x - mean) ** 2 for x in col) / (len(col) - 1)))
    assert float(stats["z_std"]) == pytest.approx(sum(stds) / len(stds), rel=1e-5)


def _layers(module: nn.Module):
    return [type(layer).__name__ for layer in module]


def _projector(name: str):
    cfg = parse_pretrain_cfg(preset_cfg(name, [*TINY_MODEL, "method_kwargs.num_views=2"]))
    return build_method(cfg).projector


def test_emp_ssl_projector_is_three_linear_layers_with_batch_norm():
    assert _layers(_projector("emp_ssl")) == [
        "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]


def test_mmcr_projector_is_two_linear_layers_with_a_frozen_zero_output_bias():
    projector = _projector("mmcr")
    assert _layers(projector) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert torch.count_nonzero(projector[-1].bias) == 0
    assert projector[-1].bias.requires_grad is False
    assert projector[0].bias.requires_grad is True


def test_guard_text_of_values():
    assert math.isnan(_as_float(torch.empty(0)))
    assert _as_float(torch.tensor([1.0, 2.0])) == 1.5
    assert _as_float(3) == 3.0
    assert _format([]) == "nothing"
    assert _format([("loss", torch.tensor(0.5)), ("lr", 0.1), ("name", "x")]) == \
        "loss=0.5, lr=0.1, name='x'"

