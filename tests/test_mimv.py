"""The paper's multi-image views (MIMV) for every method: ``method_kwargs.mimv.enabled``.

Each (anchor, partner) pair is one sample with two fused views, view 0 = g(f(x_n)) (+) g(f(y_a))
and view 1 = g(f(x_a)) (+) g(f(y_n)); the method's own loss is applied to them
(``hosts/multiview_step.py``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from solo_multiview.config.pretrain import parse_pretrain_cfg
from solo_multiview.hosts.multiview_step import MultiViewStepMixin
from solo_multiview.methods import METHODS, build_method, view_spec
from solo_multiview.training.pretrain import fit, prepare_pretrain
from tests.helpers import HOSTS, compose_cfg, tiny_cfg

MIMV_METHODS = sorted(name for name, method in METHODS.items()
                      if "mimv" in {f.name for f in dataclasses.fields(method.Kwargs)})


def mimv_model(name: str, pairs: int = 2, host: str = "builtin", fusion: str = "sum"):
    dims = [f"method_kwargs.{f.name}=8" for f in dataclasses.fields(METHODS[name].Kwargs)
            if f.name.endswith("_dim")]
    cfg = parse_pretrain_cfg(compose_cfg(f"mimv_{name}_cifar10lt", [
        f"host={host}", f"method_kwargs.num_views={pairs}", f"++method_kwargs.mimv.fusion={fusion}",
        "backbone.name=convnet", "+backbone.kwargs.width=4", "+backbone.kwargs.depth=2",
        "optimizer.batch_size=4", "data.num_workers=0", "devices=1", "accelerator=cpu", *dims]))
    torch.manual_seed(0)
    return cfg, build_method(cfg)


def pair_batch(cfg, batch: int = 5, seed: int = 3):
    generator = torch.Generator().manual_seed(seed)
    spec = view_spec(cfg)
    crops = [torch.randn(batch, 3, 16, 16, generator=generator) for _ in range(spec.num_crops)]
    return [torch.arange(batch) + 10, crops, torch.randint(0, 10, (batch,), generator=generator)]


def test_every_method_but_mttv_has_the_switch():
    assert set(MIMV_METHODS) == set(METHODS) - {"mttv"}


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("name", MIMV_METHODS)
def test_mimv_step_trains(name, host):
    cfg, model = mimv_model(name, host=host)
    spec = view_spec(cfg)
    assert (spec.scheme, spec.num_crops, spec.loss_views) == ("pairs", 8, 2)
    model.train()
    loss = model.training_step(pair_batch(cfg), 0)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_fused_views_are_the_papers():
    cfg, model = mimv_model("mv_simclr", pairs=2)
    batch = pair_batch(cfg)
    model.train()
    out = MultiViewStepMixin.training_step(model, batch, 0)
    x_n, y_a, x_a, y_n = (torch.cat(batch[1][i * 2:(i + 1) * 2]) for i in range(4))

    def z(x):  # the same network on one view type, as the step forwards it
        return model.projector(model.backbone(x))

    assert len(out["z"]) == 2 and out["z"][0].shape[0] == 2 * 5
    torch.testing.assert_close(out["z"][0], z(x_n) + z(y_a))
    torch.testing.assert_close(out["z"][1], z(x_a) + z(y_n))
    # a sample is an (anchor, partner) pair: pair k of anchor i is i * K + k, pair-major rows
    assert out["indexes"].tolist() == [i * 2 + k for k in range(2) for i in range(10, 15)]


def test_concat_fusion_widens_the_predictor_and_the_queue():
    _, byol = mimv_model("mv_byol", fusion="concat")
    assert byol.predictor[0].in_features == 16 and byol.predictor[-1].out_features == 16
    _, moco = mimv_model("mv_mocov2plus", fusion="concat")
    assert tuple(moco.queue.shape[:2]) == (2, 16)
    cfg, model = mimv_model("mv_byol", fusion="concat")
    model.train()
    assert torch.isfinite(model.training_step(pair_batch(cfg), 0))


def test_simclr_loss_on_the_fused_views_is_nt_xent_over_pairs():
    cfg, model = mimv_model("mv_simclr")
    batch = pair_batch(cfg)
    model.train()
    out = MultiViewStepMixin.training_step(model, batch, 0)
    loss, _ = model.kview_loss(out, batch)
    torch.testing.assert_close(loss, model.two_view_reference(out, batch))


@pytest.mark.parametrize("overrides,message", [
    (["++method_kwargs.mimv.fusion=mean"], "method_kwargs.mimv.fusion: unknown value 'mean'"),
    (["++method_kwargs.mimv.roles=normal"], "method_kwargs.mimv.roles: unknown value 'normal'"),
    (["method_kwargs.num_views=0"], "method_kwargs.num_views: got 0"),
])
def test_bad_mimv_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        parse_pretrain_cfg(compose_cfg("mimv_mv_byol_cifar10lt", overrides))


def test_mimv_with_small_crops_is_refused(tmp_path):
    cfg = tiny_cfg(tmp_path, method="mv_byol", small_crops=2, num_views=1,
                   overrides=["+method_kwargs.pred_hidden_dim=8",
                              "+method_kwargs.mimv.enabled=true"])
    with pytest.raises(ValueError, match="takes exactly one augmentation entry for MIMV pairs"):
        prepare_pretrain(cfg)
    assert not (tmp_path / "trained_models").exists()


def mimv_digits_cfg(tmp_path, name: str, overrides=()):
    """The method's MIMV preset on the embedded digits: tiny convnet, 2 pairs, 2 steps."""
    dims = [f"method_kwargs.{f.name}=8" for f in dataclasses.fields(METHODS[name].Kwargs)
            if f.name.endswith("_dim")]
    return compose_cfg(f"mimv_{name}_cifar10lt", [
        "data=digits_lt", "augmentations=digits", "host=builtin", "method_kwargs.num_views=2",
        "backbone.name=convnet", "+backbone.kwargs.width=4", "+backbone.kwargs.depth=2", *dims,
        "optimizer.batch_size=8", "data.num_workers=0", "+max_steps=2", "+limit_val_batches=1",
        "+enable_progress_bar=false", "+enable_model_summary=false", "++log_every_n_steps=1",
        "checkpoint.enabled=false", f"checkpoint.dir={tmp_path / 'trained_models'}", *overrides])


@pytest.mark.parametrize("data_format", ["image_folder", "dali"])
@pytest.mark.parametrize("name", MIMV_METHODS)
def test_every_mimv_combination_trains_on_the_digits(tmp_path, name, data_format):
    if data_format == "dali":
        pytest.importorskip("nvidia.dali")
    run = prepare_pretrain(mimv_digits_cfg(tmp_path, name, [f"data.format={data_format}",
                                                            "++dali.device=cpu"]))
    assert view_spec(run.cfg).scheme == "pairs"
    fit(run)
    assert run.trainer.global_step == 2
    loss = run.trainer.callback_metrics[f"train_{run.model.loss_name}_loss"]
    assert torch.isfinite(loss)
