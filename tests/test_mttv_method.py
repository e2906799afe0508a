"""mttv: training steps with every ablation switch, crop wiring, and the EMA target."""

from __future__ import annotations

import math

import pytest
import torch

from solo_multiview.training.pretrain import fit, prepare_pretrain
from tests.helpers import HOSTS, tiny_cfg

MTTV_TINY = [
    "method_kwargs.num_views=1", "method_kwargs.proj_hidden_dim=16",
    "method_kwargs.proj_output_dim=8", "optimizer.lr=0.05",
]


def mttv_cfg(tmp_path, host="builtin", overrides=()):
    return tiny_cfg(tmp_path, method="mttv", host=host, config_name="quickstart_mttv_digits",
                    overrides=[*MTTV_TINY, *overrides], num_views=None)


ABLATIONS = {
    "num_pairs": ["method_kwargs.num_views=2"],
    "fusion": ["method_kwargs.fusion=concat"],
    "band": ["method_kwargs.filter.low=0.05", "method_kwargs.filter.high=0.95"],
    "low_only": ["method_kwargs.filter.mode=low_only"],
    "no_filter": ["method_kwargs.filter.enabled=false"],
    "views": ["method_kwargs.views=augmented_augmented"],
    "partner": ["method_kwargs.partner=none"],
    "temperature": ["method_kwargs.temperature=0.5"],
    "momentum": ["momentum.base_tau=0.8", "momentum.final_tau=0.95"],
    "official_form": ["method_kwargs.form=official", "method_kwargs.filter.enabled=false"],
}


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("switch", sorted(ABLATIONS))
def test_mttv_trains_with_each_ablation(tmp_path, host, switch):
    run = prepare_pretrain(mttv_cfg(tmp_path, host, ABLATIONS[switch]))
    before = [p.detach().clone() for p in run.model.backbone.parameters()]
    result = fit(run)
    loss = result.metrics["train_mttv_loss"]
    assert math.isfinite(loss)
    assert any(not torch.equal(b, a) for b, a in zip(before, run.model.backbone.parameters()))
    for key in ("train_filtered_fraction", "train_pos_cos", "train_neg_cos", "train_alignment",
                "train_uniformity"):
        assert math.isfinite(result.metrics[key]), key


def test_crop_groups_reach_the_right_encoder(tmp_path):
    """[x_n, y_a] go through the online backbone, [x_a, y_n] through the momentum one, each
    group of K crops in one call, in the documented order."""
    K, B = 2, 4
    run = prepare_pretrain(mttv_cfg(tmp_path, overrides=[f"method_kwargs.num_views={K}"]))
    model = run.model
    seen = {"online": [], "target": []}
    model.backbone.register_forward_hook(lambda m, i, o: seen["online"].append(i[0]))
    model.momentum_backbone.register_forward_hook(lambda m, i, o: seen["target"].append(i[0]))
    crops = [torch.full((B, 3, 16, 16), float(c)) for c in range(4 * K)]
    batch = [torch.arange(B), crops, torch.arange(B) % 10]
    model.training_step(batch, 0)

    def group(g):
        return torch.cat(crops[g * K:(g + 1) * K])

    assert [x.shape[0] for x in seen["online"]] == [B * K, B * K]
    assert torch.equal(seen["online"][0], group(0)) and torch.equal(seen["online"][1], group(1))
    assert torch.equal(seen["target"][0], group(2)) and torch.equal(seen["target"][1], group(3))


@pytest.mark.parametrize("host", HOSTS)
def test_ema_moves_target_by_one_minus_m(tmp_path, host):
    m = 0.9
    run = prepare_pretrain(mttv_cfg(tmp_path, host, ["max_steps=1", f"momentum.base_tau={m}",
                                                      f"momentum.final_tau={m}"]))
    model = run.model
    pairs = [(model.backbone, model.momentum_backbone),
             (model.projector, model.momentum_projector)]
    targets_before = [[p.detach().clone() for p in target.parameters()] for _, target in pairs]
    fit(run)
    assert run.trainer.global_step == 1
    for (online, target), before in zip(pairs, targets_before):
        for p_online, p_target, p_before in zip(online.parameters(), target.parameters(),
                                                before):
            assert not p_target.requires_grad and p_target.grad is None
            expected = m * p_before + (1 - m) * p_online.detach()
            torch.testing.assert_close(p_target.detach(), expected, rtol=1e-6, atol=1e-7)
        assert any(not torch.equal(b, p) for b, p in zip(before, target.parameters())), \
            "the target did not move"


def test_target_branch_gets_no_gradient(tmp_path):
    run = prepare_pretrain(mttv_cfg(tmp_path))
    model = run.model
    B, K = 4, 1
    crops = [torch.randn(B, 3, 16, 16) for _ in range(4 * K)]
    loss = model.training_step([torch.arange(B), crops, torch.arange(B)], 0)
    loss.backward()
    assert all(p.grad is None for p in model.momentum_backbone.parameters())
    assert all(p.grad is None for p in model.momentum_projector.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


@pytest.mark.parametrize("overrides,message", [
    (["method_kwargs.num_views=0"], "method_kwargs.num_views: got 0"),
    (["method_kwargs.fusion=mean"], "method_kwargs.fusion: unknown value 'mean'"),
    (["method_kwargs.partner=self"], "method_kwargs.partner: unknown value 'self'"),
    (["method_kwargs.views=normal"], "method_kwargs.views: unknown value 'normal'"),
    (["method_kwargs.form=paper"], "method_kwargs.form: unknown value 'paper'"),
    # K is method_kwargs.num_views for mttv too; its one augmentation entry makes K augmented views
    (["method_kwargs.num_views=2", "augmentations.0.num_crops=1"],
     "method_kwargs.num_views: 2 but the augmentations give 1 large crops"),
])
def test_bad_mttv_config(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        prepare_pretrain(mttv_cfg(tmp_path, overrides=overrides))


@pytest.mark.parametrize("filter_on", [False, True])
def test_official_form_failure_is_one_exact_line(tmp_path, filter_on):
    """The whole message of a failing official denominator, word for word: every number in it
    is computed (rows = 2 x pairs x devices, exp(1/t)), so each is checked."""
    from types import SimpleNamespace

    from solo_multiview.config.pretrain import parse_pretrain_cfg
    from solo_multiview.methods import build_method

    band = ["method_kwargs.filter.enabled=true", "method_kwargs.filter.high=0.9"] \
        if filter_on else ["method_kwargs.filter.enabled=false"]
    model = build_method(parse_pretrain_cfg(mttv_cfg(tmp_path, overrides=[
        "method_kwargs.form=official", "method_kwargs.num_views=2",
        "method_kwargs.temperature=0.5", "augmentations.0.num_crops=2", *band])))
    band_text = ("the band filter already removed the self-similarity (cos 1 > 0.9)"
                 if filter_on else
                 "with the filter off it stands for the self term, exact only when cos = 1")
    tail = (" (optimizer.batch_size=16 anchors x 2 pair(s) x {world} device(s) -> {rows} "
            "embeddings). The official loss subtracts exp(1/t) = 7.389 from each row's sum of "
            f"kept exp(s/t), and {band_text}, so a row whose kept similarities add up to less "
            "than exp(1/t) has no valid ratio (a NaN or negative term); use "
            "method_kwargs.form=principled, or a larger optimizer.batch_size (the authors "
            "train with 1024)")
    assert model.official_failure(5, 16) == (
        "method_kwargs.form=official: 5 of 32 rows have a denominator <= 0"
        + tail.format(world=1, rows=32))
    model._trainer = SimpleNamespace(world_size=3, global_step=7)
    assert model.official_failure(5, 16) == (
        "method_kwargs.form=official: 5 of 96 rows have a denominator <= 0 at global step 7"
        + tail.format(world=3, rows=96))
