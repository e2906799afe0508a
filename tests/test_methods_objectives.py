"""polyview, mv_infonce, mv_dhel, mmcr and emp_ssl as methods (their losses are tested in
tests/test_losses_<name>.py, the generic checks in tests/test_registry.py):

- wiring: ``kview_loss`` is the loss function on the host step's per-crop ``z`` with the
  configured (non-default) arguments, so a dropped argument or mixed-up views are caught;
- a few real training steps on the embedded digits, on the torchvision and the DALI CPU loader;
- bad settings are refused when the config is parsed, naming the key.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Dict, List

import pytest
import torch
from omegaconf import OmegaConf

from solo_multiview.config.pretrain import parse_pretrain_cfg
from solo_multiview.data.dali.backend import dali_available
from solo_multiview.hosts.multiview_step import MultiViewStepMixin
from solo_multiview.losses.band_filter import BandFilter
from solo_multiview.losses.emp_ssl import emp_ssl_loss
from solo_multiview.losses.mmcr import mmcr_loss
from solo_multiview.losses.mv_dhel import mv_dhel_loss
from solo_multiview.losses.mv_infonce import mv_infonce_loss
from solo_multiview.losses.mv_simclr import mv_nt_xent
from solo_multiview.losses.polyview import polyview_loss
from solo_multiview.methods import build_method, view_spec
from solo_multiview.training.pretrain import fit, prepare_pretrain
from tests.helpers import compose_cfg

NEW_METHODS = ["polyview", "mv_infonce", "mv_dhel", "mmcr", "emp_ssl"]
CONTRASTIVE = ["polyview", "mv_infonce", "mv_dhel"]


def band(low: float, high: float, mode: str) -> List[str]:
    """The overrides that turn the filter on with these settings."""
    return ["method_kwargs.filter.enabled=true", f"method_kwargs.filter.low={low}",
            f"method_kwargs.filter.high={high}", f"method_kwargs.filter.mode={mode}"]


# bands that remove part of the similarities of the untrained tiny model (polyview's head
# without BN starts with cosines of 0.99 and more)
BAND, BAND_FILTER = band(0.05, 0.95, "band"), BandFilter(0.05, 0.95, "band")
TIGHT, TIGHT_FILTER = band(0.995, 1.0, "low_only"), BandFilter(0.995, 1.0, "low_only")


def simclr_direct(temperature: float = 0.1, band_filter: BandFilter | None = None):
    """mv_simclr's loss on crop-major ``z``: row r of crop k is image r (written with loops)."""
    def call(z):
        labels = torch.tensor([row for _ in z for row in range(len(z[0]))])
        loss, stats = mv_nt_xent(torch.cat(z), labels, temperature, band=band_filter)
        return loss, ({"filtered_fraction": stats["filtered_fraction"]} if band_filter else {})
    return call


#: (method, config overrides, the loss function called directly with those settings)
WIRING: List[Any] = [
    ("mv_simclr", ["method_kwargs.temperature=0.3"], simclr_direct(0.3)),
    ("mv_simclr", ["method_kwargs.temperature=0.3", *TIGHT], simclr_direct(0.3, TIGHT_FILTER)),
    ("polyview", ["method_kwargs.temperature=0.3", "method_kwargs.form=arithmetic", *TIGHT],
     lambda z: polyview_loss(z, temperature=0.3, form="arithmetic", band=TIGHT_FILTER)),
    ("polyview", ["method_kwargs.temperature=0.3", "method_kwargs.form=sufficient_statistics"],
     lambda z: polyview_loss(z, temperature=0.3, form="sufficient_statistics")),
    ("mv_infonce", ["method_kwargs.temperature=0.3", "method_kwargs.negatives=all", *BAND],
     lambda z: mv_infonce_loss(z, temperature=0.3, band=BAND_FILTER, negatives="all")),
    ("mv_dhel", ["method_kwargs.temperature=0.3", *BAND],
     lambda z: mv_dhel_loss(z, temperature=0.3, band=BAND_FILTER)),
    ("mmcr", ["method_kwargs.lmbda=0.05"], lambda z: mmcr_loss(z, lmbda=0.05)),
    ("emp_ssl", ["method_kwargs.eps=0.5", "method_kwargs.invariance_weight=50"],
     lambda z: emp_ssl_loss(z, eps=0.5, invariance_weight=50.0)),
]
DEFAULT_CALL: Dict[str, Callable[..., Any]] = {
    "mv_simclr": simclr_direct(),
    "polyview": polyview_loss, "mv_infonce": mv_infonce_loss, "mv_dhel": mv_dhel_loss,
    "mmcr": mmcr_loss, "emp_ssl": emp_ssl_loss,
}

TINY_MODEL = ["host=builtin", "backbone.name=convnet", "+backbone.kwargs.width=4",
              "+backbone.kwargs.depth=2", "method_kwargs.proj_hidden_dim=16",
              "method_kwargs.proj_output_dim=8", "optimizer.batch_size=8", "data.num_workers=0",
              "devices=1", "accelerator=cpu"]


def preset_cfg(name: str, overrides=()) -> Any:
    """The method's K = 2 CIFAR-10-LT preset with ``overrides`` (composed, not parsed)."""
    return compose_cfg(f"{name}_k2_cifar10lt", list(overrides))


# ---------------------------------------------------------------------------- wiring
@pytest.mark.parametrize("name,overrides,direct", WIRING,
                         ids=[f"{w[0]}-{i}" for i, w in enumerate(WIRING)])
def test_kview_loss_is_the_loss_with_the_configured_arguments(name, overrides, direct):
    cfg = parse_pretrain_cfg(preset_cfg(name, [*TINY_MODEL, "method_kwargs.num_views=3",
                                               *overrides]))
    torch.manual_seed(0)
    model = build_method(cfg)
    model.train()
    generator = torch.Generator().manual_seed(1)
    crops = [torch.randn(8, 3, 16, 16, generator=generator)
             for _ in range(view_spec(cfg).num_crops)]
    batch = [torch.arange(8), crops, torch.zeros(8, dtype=torch.long)]
    out = MultiViewStepMixin.training_step(model, batch, 0)  # the host's batched step alone
    assert len(out["z"]) == 3

    loss, stats = model.kview_loss(out, batch)
    expected, expected_stats = direct(out["z"])
    torch.testing.assert_close(loss, expected)
    assert stats.keys() == expected_stats.keys()
    if cfg.method_kwargs.get("filter", {}).get("enabled"):
        assert 0 < stats["filtered_fraction"] < 1 and loss > 0, "the band is not exercised"
    # the comparison is sensitive: the defaults, or the views of other images, give another loss
    default, _ = DEFAULT_CALL[name](out["z"])
    mixed, _ = direct([out["z"][0].roll(1, dims=0), *out["z"][1:]])
    for other in (default, mixed):
        assert not torch.allclose(loss, other), "the check would not catch a wiring error"


# ---------------------------------------------------------------------------- training
def digits_cfg(tmp_path, name: str, overrides=()) -> Any:
    """The method's preset on the embedded digits: tiny convnet, K = 3, 2 steps."""
    return preset_cfg(name, [
        "data=digits_lt", "augmentations=digits", "host=builtin", "method_kwargs.num_views=3",
        "backbone.name=convnet", "+backbone.kwargs.width=4", "+backbone.kwargs.depth=2",
        "method_kwargs.proj_hidden_dim=16", "method_kwargs.proj_output_dim=8",
        "optimizer.batch_size=16", "data.num_workers=0", "+max_steps=2",
        "+limit_val_batches=1", "+enable_progress_bar=false", "+enable_model_summary=false",
        "++log_every_n_steps=1", "checkpoint.enabled=false",
        f"checkpoint.dir={tmp_path / 'trained_models'}", *overrides,
    ])


LOADERS = [
    pytest.param("torchvision", [], id="torchvision"),
    pytest.param("dali", ["data.format=dali", "++dali.device=cpu"], id="dali_cpu",
                 marks=pytest.mark.skipif(not dali_available(),
                                          reason='nvidia.dali is not importable '
                                                 '(pip install -e ".[dali]")')),
]


@pytest.mark.parametrize("loader,loader_overrides", LOADERS)
@pytest.mark.parametrize("name", NEW_METHODS)
def test_trains_on_digits(tmp_path, name, loader, loader_overrides):
    run = prepare_pretrain(digits_cfg(tmp_path, name, loader_overrides))
    assert run.cfg.method == name and run.cfg.data.num_large_crops == 3
    if loader == "dali":
        assert type(run.train_loader).__name__ == "DaliPretrainLoader"
    before = [p.detach().clone() for p in run.model.backbone.parameters()]
    fit(run)
    assert run.trainer.global_step == 2
    loss = float(run.trainer.callback_metrics[f"train_{run.model.loss_name}_loss"])
    assert math.isfinite(loss)
    after = list(run.model.backbone.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after)), "backbone did not train"


# ---------------------------------------------------------------------------- bad settings
def refused(name: str, overrides=(), cfg=None) -> str:
    cfg = preset_cfg(name, overrides) if cfg is None else cfg
    with pytest.raises(ValueError) as error:
        parse_pretrain_cfg(cfg)
    return str(error.value)


@pytest.mark.parametrize("name", NEW_METHODS)
def test_too_few_views_are_refused(name):
    assert "method_kwargs.num_views" in refused(name, ["method_kwargs.num_views=1"])


@pytest.mark.parametrize("name", ["mmcr", "emp_ssl"])
def test_non_contrastive_methods_have_no_filter(name):
    message = refused(name, ["+method_kwargs.filter.enabled=true"])
    assert "method_kwargs.filter" in message


@pytest.mark.parametrize("name", CONTRASTIVE)
def test_contrastive_methods_take_the_filter(name):
    cfg = parse_pretrain_cfg(preset_cfg(name, ["method_kwargs.filter.enabled=true"]))
    assert cfg.method_kwargs.filter.enabled is True


@pytest.mark.parametrize("name,override,key", [
    ("polyview", "method_kwargs.form=harmonic", "method_kwargs.form"),
    ("mv_infonce", "method_kwargs.negatives=same_view", "method_kwargs.negatives"),
])
def test_unknown_choices_are_refused(name, override, key):
    message = refused(name, [override])
    assert key in message and ("harmonic" in message or "same_view" in message)


@pytest.mark.parametrize("name", NEW_METHODS)
def test_small_crops_are_refused(name):
    cfg = preset_cfg(name)
    small = copy.deepcopy(OmegaConf.to_container(cfg.augmentations[0], resolve=True))
    small.update({"crop_size": 16, "num_crops": 2})
    cfg.augmentations = [*OmegaConf.to_container(cfg.augmentations, resolve=True), small]
    message = refused(name, cfg=cfg)
    assert message.startswith("augmentations") and "small crops" in message
