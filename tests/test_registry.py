"""Every registered method, picked up from the registry: a method added the way
docs/adding_a_method.md says is tested here without editing this file.

- K = 2: the method's loss equals its declared two-view reference (``two_view_reference``);
- K = 2 and 4, both hosts: a full training step gives a finite loss and finite gradients that
  reach the backbone and the heads;
- the parsed config survives a round trip through args.json form and parses to the same values;
- a checkpoint's state dict loads into a fresh model, the encoder under ``backbone.``.
"""

from __future__ import annotations

import dataclasses
from typing import List

import pytest
import torch
from omegaconf import OmegaConf

from solo_multiview.config.pretrain import parse_pretrain_cfg
from solo_multiview.hosts.multiview_step import MultiViewStepMixin
from solo_multiview.methods import METHODS, build_method, view_spec
from solo_multiview.training.presets import config_names
from tests.helpers import HOSTS, compose_cfg

NAMES = sorted(METHODS)


def base_config(name: str) -> str:
    """The method's K = 2 CIFAR-10-LT preset, or its hand-written CIFAR-10-LT config."""
    names = config_names()
    for candidate in (f"{name}_k2_cifar10lt", f"{name}_cifar10lt"):
        if candidate in names:
            return candidate
    raise AssertionError(f"{name} has no CIFAR-10-LT config: add scripts/pretrain/base/"
                         f"{name}_cifar.yaml (docs/adding_a_method.md)")


def tiny_overrides(name: str, num_views: int, host: str) -> List[str]:
    dims = [f"method_kwargs.{f.name}=8" for f in dataclasses.fields(METHODS[name].Kwargs)
            if f.name.endswith("_dim")]
    return [f"host={host}", f"method_kwargs.num_views={num_views}", "backbone.name=convnet",
            "+backbone.kwargs.width=4", "+backbone.kwargs.depth=2", "optimizer.batch_size=4",
            "data.num_workers=0", "devices=1", "accelerator=cpu", *dims]


def tiny_model(name: str, num_views: int = 2, host: str = "builtin"):
    cfg = parse_pretrain_cfg(compose_cfg(base_config(name), tiny_overrides(name, num_views, host)))
    torch.manual_seed(0)
    return cfg, build_method(cfg)


def fake_batch(cfg, batch: int = 6, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    crops = [torch.randn(batch, 3, 16, 16, generator=generator)
             for _ in range(view_spec(cfg).num_crops)]
    return [torch.arange(batch), crops, torch.randint(0, 10, (batch,), generator=generator)]


def test_every_method_has_a_cifar_config():
    for name in NAMES:
        base_config(name)


@pytest.mark.parametrize("name", NAMES)
def test_two_view_reduction(name):
    method = METHODS[name]
    if method.two_view_reference is None:
        pytest.skip(f"{name} declares no two-view form (see its docstring)")
    cfg, model = tiny_model(name, num_views=2)
    batch = fake_batch(cfg)
    model.train()
    out = MultiViewStepMixin.training_step(model, batch, 0)  # the host's batched step alone
    reference = method.two_view_reference(model, out, batch)  # before the loss (MoCo enqueues)
    loss, _ = model.kview_loss(out, batch)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("num_views", [2, 4])
@pytest.mark.parametrize("name", NAMES)
def test_step_gives_finite_loss_and_gradients(name, num_views, host):
    cfg, model = tiny_model(name, num_views=num_views, host=host)
    model.train()
    loss = model.training_step(fake_batch(cfg), 0)
    loss = loss["loss"] if isinstance(loss, dict) else loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    reached = {n.split(".")[0] for n, g in grads.items() if g is not None and g.abs().sum() > 0}
    assert {"backbone", "projector"} <= reached, f"{name}: gradients reached only {reached}"


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
    cfg, _ = tiny_model(name)
    saved = OmegaConf.create(OmegaConf.to_yaml(cfg))  # what args.json holds
    again = parse_pretrain_cfg(saved)
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_loads_into_a_fresh_model(name):
    cfg, model = tiny_model(name)
    state = model.state_dict()
    assert any(key.startswith("backbone.") for key in state)
    torch.manual_seed(123)
    fresh = build_method(cfg)
    fresh.load_state_dict(state, strict=True)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key
