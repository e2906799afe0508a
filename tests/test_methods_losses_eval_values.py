"""Exact values of small helpers of ``methods/``, ``losses/`` and ``eval/``.

Pins down: the eval config's device resolution (every branch and message, with
``torch.cuda`` monkeypatched), the checks of ``results.name`` and ``data.resize``, the missing
checkpoint message, the MLP heads' layout, the method registry and ``build_method``'s host
handling, MTTV's views, config checks and small-batch warning, the loss helpers' messages and
values (``_mttv_infonce`` against a float64 loop), and the per-class plot's content read back
from its Axes.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from solo_multiview.eval import eval_config
from solo_multiview.eval.eval_config import EvalConfigError, parse_eval_cfg, resolve_device

CKPT = {"pretrained_feature_extractor": "/some/run"}


def eval_error(cfg, kind="linear"):
    with pytest.raises(EvalConfigError) as info:
        parse_eval_cfg(cfg, kind)
    return str(info.value)


# ------------------------------------------------------------------------------------------
# resolve_device
def fake_cuda(monkeypatch, available, count=0, mps=False):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


def test_auto_device_follows_cuda_availability(monkeypatch):
    fake_cuda(monkeypatch, True, 1)
    assert resolve_device("auto") == torch.device("cuda")
    fake_cuda(monkeypatch, False)
    assert resolve_device("auto") == torch.device("cpu")


def test_bad_device_string_names_the_default_key():
    with pytest.raises(EvalConfigError) as info:
        resolve_device("gpu0")
    assert str(info.value) == ("device: 'gpu0' is not a device; use auto, cpu, cuda, "
                               "cuda:<index> or mps")


def test_cuda_without_cuda_is_refused(monkeypatch):
    fake_cuda(monkeypatch, False)
    with pytest.raises(EvalConfigError) as info:
        resolve_device("cuda")
    assert str(info.value) == ("device: 'cuda' requested but CUDA is not available here; "
                               "use device=cpu or device=auto")
    with pytest.raises(EvalConfigError) as info:
        resolve_device("cuda:0", key="x.dev")
    assert str(info.value) == ("x.dev: 'cuda:0' requested but CUDA is not available here; "
                               "use device=cpu or device=auto")


def test_cuda_index_must_exist(monkeypatch):
    fake_cuda(monkeypatch, True, 2)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(EvalConfigError) as info:
        resolve_device("cuda:2")
    assert str(info.value) == "device: 'cuda:2' but only 2 CUDA device(s) exist"
    with pytest.raises(EvalConfigError) as info:
        resolve_device("cuda:3")
    assert str(info.value) == "device: 'cuda:3' but only 2 CUDA device(s) exist"


def test_mps_needs_mps(monkeypatch):
    fake_cuda(monkeypatch, False, 0, mps=False)
    with pytest.raises(EvalConfigError) as info:
        resolve_device("mps")
    assert str(info.value) == "device: 'mps' requested but it is not available here"
    fake_cuda(monkeypatch, False, 0, mps=True)
    assert resolve_device("mps") == torch.device("mps")


def test_cpu_and_unsupported_types(monkeypatch):
    fake_cuda(monkeypatch, False)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(EvalConfigError) as info:
        resolve_device("meta")
    assert str(info.value) == ("device: unsupported device type 'meta'; use auto, cpu, "
                               "cuda or mps")


# ------------------------------------------------------------------------------------------
# _check_values, _missing_checkpoint, parse_eval_cfg, schema_for
NAME_MESSAGE = ("results.name: {!r} must be a plain folder name (no path separators); the "
                "results go to results.dir/results.name")


@pytest.mark.parametrize("name", ["", "a/b", "a\\b", ".", ".."])
def test_results_name_must_be_plain(name):
    assert eval_error({**CKPT, "results": {"name": name}}) == NAME_MESSAGE.format(name)


@pytest.mark.parametrize("name", ["run1", "XX", "a.b", "..."])
def test_plain_results_names_pass(name):
    assert parse_eval_cfg({**CKPT, "results": {"name": name}}, "linear").results.name == name


def test_resize_below_crop_is_refused():
    message = eval_error({**CKPT, "data": {"crop_size": 32, "resize": 31}})
    assert message == ("data.resize: 31 is smaller than data.crop_size 32; the centre crop is "
                       "taken from an image whose short side is data.resize")
    cfg = parse_eval_cfg({**CKPT, "data": {"crop_size": 32, "resize": 32}}, "linear")
    assert (cfg.data.crop_size, cfg.data.resize) == (32, 32)
    cfg = parse_eval_cfg({**CKPT, "data": {"resize": 8}}, "linear")
    assert (cfg.data.crop_size, cfg.data.resize) == (None, 8)
    cfg = parse_eval_cfg({**CKPT, "data": {"crop_size": 8}}, "linear")
    assert (cfg.data.crop_size, cfg.data.resize) == (8, None)


MISSING_MESSAGE = ("pretrained_feature_extractor: missing; give the pretrained checkpoint (a "
                   ".ckpt file or the pretraining run folder holding it and args.json), e.g. "
                   "pretrained_feature_extractor=trained_models/mv_simclr/<version>")


@pytest.mark.parametrize("cfg", [{}, {"pretrained_feature_extractor": None},
                                 {"pretrained_feature_extractor": ""},
                                 {"pretrained_feature_extractor": "???"}])
def test_missing_checkpoint_message(cfg):
    assert eval_error(cfg) == MISSING_MESSAGE
    assert eval_error(cfg, "knn") == MISSING_MESSAGE


def test_missing_checkpoint_is_only_none_empty_or_missing():
    def missing(value):
        return eval_config._missing_checkpoint(
            OmegaConf.create({"pretrained_feature_extractor": value}))

    assert missing("XXXX") is False
    assert missing("???") is True
    assert missing("") is True


def test_schema_for_unknown_kind():
    with pytest.raises(EvalConfigError) as info:
        eval_config.schema_for("svm")
    assert str(info.value) == "evaluation kind: unknown 'svm'; choose one of ['linear', 'knn']"


# ------------------------------------------------------------------------------------------
# heads.mlp and the authors' projector
def test_mlp_defaults_layout():
    from solo_multiview.methods.heads import mlp

    head = mlp(3, 5, 2)
    assert repr(head) == repr(torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5), torch.nn.ReLU(inplace=True),
        torch.nn.Linear(5, 2)))
    assert head[2].inplace is True


def test_mlp_layer_counts():
    from solo_multiview.methods.heads import mlp

    one = mlp(3, 5, 2, num_layers=1, last_batch_norm=True)
    assert [type(m).__name__ for m in one] == ["Linear", "BatchNorm1d"]
    assert one[1].num_features == 2
    three = mlp(3, 5, 2, num_layers=3, batch_norm=False)
    assert [type(m).__name__ for m in three] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert [(m.in_features, m.out_features) for m in three if isinstance(m, torch.nn.Linear)] \
        == [(3, 5), (5, 5), (5, 2)]
    with pytest.raises(ValueError) as info:
        mlp(3, 5, 2, num_layers=0)
    assert str(info.value) == "an MLP head needs at least one layer, got num_layers=0"


def test_authors_projector_layout():
    from solo_multiview.methods.mv_infonce import authors_projector

    head = authors_projector(3, 5, 2)
    assert [type(m).__name__ for m in head] == ["Linear", "BatchNorm1d", "ReLU", "Linear",
                                               "BatchNorm1d"]
    assert [(m.in_features, m.out_features) for m in head if isinstance(m, torch.nn.Linear)] \
        == [(3, 5), (5, 2)]
    assert head[4].bias.requires_grad is False
    assert torch.equal(head[4].bias, torch.zeros(2))
    assert head[4].weight.requires_grad is True
    assert head[1].bias.requires_grad is True
    assert [p.requires_grad for p in head[3].parameters()] == [True, True]


# ------------------------------------------------------------------------------------------
# the registry
def test_method_class_default_host_and_unknown_name():
    from solo_multiview import methods

    cls = methods.method_class("mv_simclr")
    assert cls.__name__ == "MVSimCLR__builtin"
    with pytest.raises(ValueError) as info:
        methods.method_class("simclr")
    assert str(info.value) == ("method: unknown method 'simclr'; choose one of "
                               f"{sorted(methods.METHODS)}")


def test_method_class_registers_with_solo(monkeypatch):
    from solo_multiview import methods

    registered = []
    monkeypatch.setattr(methods, "resolve_host_name", lambda name: "solo")
    monkeypatch.setattr(methods, "register_with_solo", lambda: registered.append(True))
    monkeypatch.setattr(methods, "compose", lambda method, host: (method, host))
    assert methods.method_class("mttv", "solo") == (methods.METHODS["mttv"], "solo")
    assert registered == [True]


def record_build(monkeypatch, resolved):
    from solo_multiview import methods

    calls = {"resolve": [], "class": [], "cfg": []}

    def resolve(name):
        calls["resolve"].append(name)
        return resolved

    def method_class(name, host="default"):
        calls["class"].append((name, host))
        return lambda cfg: calls["cfg"].append(cfg) or "built"

    monkeypatch.setattr(methods, "resolve_host_name", resolve)
    monkeypatch.setattr(methods, "method_class", method_class)
    return calls


def test_build_method_builtin_gets_the_config_itself(monkeypatch):
    from solo_multiview import methods

    calls = record_build(monkeypatch, "builtin")
    cfg = OmegaConf.create({"method": "mv_simclr", "host": "builtin", "a": 1, "b": "${a}"})
    assert methods.build_method(cfg) == "built"
    assert calls["resolve"] == ["builtin"]
    assert calls["class"] == [("mv_simclr", "builtin")]
    assert calls["cfg"][0] is cfg


def test_build_method_host_defaults_to_auto(monkeypatch):
    from solo_multiview import methods

    calls = record_build(monkeypatch, "builtin")
    cfg = OmegaConf.create({"method": "mttv"})
    methods.build_method(cfg)
    assert calls["resolve"] == ["auto"]
    assert calls["class"] == [("mttv", "builtin")]


def test_build_method_solo_gets_a_resolved_writable_copy(monkeypatch):
    from solo_multiview import methods

    calls = record_build(monkeypatch, "solo")
    cfg = OmegaConf.create({"method": "mv_simclr", "host": "solo", "a": 1, "b": "${a}"})
    OmegaConf.set_readonly(cfg, True)
    methods.build_method(cfg)
    assert calls["resolve"] == ["solo"]
    assert calls["class"] == [("mv_simclr", "solo")]
    copy = calls["cfg"][0]
    assert copy is not cfg
    assert OmegaConf.to_container(copy) == {"method": "mv_simclr", "host": "solo", "a": 1, "b": 1}
    assert OmegaConf.is_interpolation(copy, "b") is False
    assert not OmegaConf.is_readonly(copy)
    copy.a = 2  # writable


# ------------------------------------------------------------------------------------------
# MTTV's class methods
def mttv_kwargs(**kw):
    base = {"num_views": 2, "partner": "none", "views": "augmented_augmented",
            "fusion": "concat", "form": "official", "temperature": 0.3,
            "filter": {"enabled": True}}
    base.update(kw)
    return base


def test_mttv_views_take_every_key():
    from solo_multiview.data.views import ViewSpec
    from solo_multiview.methods.mttv import MTTV

    spec = MTTV.views(OmegaConf.create({"method_kwargs": mttv_kwargs()}))
    assert spec == ViewSpec(num_views=2, num_small=0, scheme="pairs", partner="none",
                            roles="augmented_augmented", fusion="concat")
    assert type(spec.num_views) is int
    kwargs = mttv_kwargs(num_views="3")
    del kwargs["fusion"]
    spec = MTTV.views(OmegaConf.create({"method_kwargs": kwargs}))
    assert spec == ViewSpec(num_views=3, num_small=0, scheme="pairs", partner="none",
                            roles="augmented_augmented", fusion="sum")
    assert type(spec.num_views) is int


def batch_cfg(batch=8, num_nodes=3, devices=1, accelerator="cpu", **kw):
    cfg = {"method_kwargs": mttv_kwargs(**kw), "optimizer": {"batch_size": batch},
           "devices": devices, "accelerator": accelerator}
    if num_nodes != "absent":
        cfg["num_nodes"] = num_nodes
    return OmegaConf.create(cfg)


def small_batch_text(rows, batch, views, world, limit):
    return (f"method_kwargs.form=official with {rows} embeddings per step (2 x "
            f"optimizer.batch_size={batch} x num_views={views} x {world} device(s)), fewer than "
            f"4 exp(1/t) = {limit}: the official loss subtracts exp(1/t) from each row's sum "
            "after the band already removed the self-similarity, so rows with a denominator "
            "<= 0 are likely and the run would stop there; use method_kwargs.form=principled "
            "or a larger batch")


def test_small_batch_warning_counts_nodes_and_views():
    from solo_multiview.methods.mttv import MTTV

    # 2 x 8 x 2 x 3 = 96 < 4 exp(1/0.3) = 112.1
    assert MTTV.small_batch_warning(batch_cfg()) == small_batch_text(96, 8, 2, 3, 112)
    # 2 x 8 x 2 x 1 (no num_nodes key)
    assert MTTV.small_batch_warning(batch_cfg(num_nodes="absent")) == \
        small_batch_text(32, 8, 2, 1, 112)
    assert MTTV.small_batch_warning(batch_cfg(num_nodes=None)) == \
        small_batch_text(32, 8, 2, 1, 112)
    assert MTTV.small_batch_warning(batch_cfg(num_nodes=0)) == \
        small_batch_text(32, 8, 2, 1, 112)
    # t = 0.5: 4 e^2 = 29.6
    assert MTTV.small_batch_warning(batch_cfg(num_nodes=1, batch=7, num_views=1,
                                              temperature=0.5)) == \
        small_batch_text(14, 7, 1, 1, 30)
    assert MTTV.small_batch_warning(batch_cfg(num_nodes=1, batch=8, num_views=2,
                                              temperature=0.5)) is None


def test_small_batch_warning_counts_gpus(monkeypatch):
    from solo_multiview.methods.mttv import MTTV

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert MTTV.small_batch_warning(batch_cfg(num_nodes=1, devices="auto",
                                              accelerator="gpu")) == \
        small_batch_text(96, 8, 2, 3, 112)


def test_small_batch_warning_at_the_limit():
    import math

    from solo_multiview.methods.mttv import MTTV

    rows = 16
    t = 1 / math.log(rows / 4)
    assert 4 * math.exp(1 / float(t)) == rows  # exactly at the limit: no warning
    assert MTTV.small_batch_warning(batch_cfg(num_nodes=1, batch=4, temperature=t)) is None
    below = batch_cfg(num_nodes=1, batch=4, temperature=t * 0.9999)
    assert MTTV.small_batch_warning(below) == small_batch_text(16, 4, 2, 1, 16)


@pytest.mark.parametrize("kw", [{"form": "principled"}, {"filter": {"enabled": False}},
                                {"form": "principled", "filter": {"enabled": False}}])
def test_small_batch_warning_only_for_the_filtered_official_form(kw):
    from solo_multiview.methods.mttv import MTTV

    assert MTTV.small_batch_warning(batch_cfg(batch=1, **kw)) is None


def test_mttv_check_cfg_entries_and_warning(monkeypatch):
    import warnings

    from solo_multiview.methods import mttv

    base = mttv.MTTV.__mro__[1]
    monkeypatch.setattr(base, "check_cfg", classmethod(lambda cls, cfg: None))
    cfg = batch_cfg()
    cfg.augmentations = [{}, {}]
    with pytest.raises(eval_config.ConfigError) as info:
        mttv.MTTV.check_cfg(cfg)
    assert str(info.value) == (
        "augmentations: mttv takes exactly one augmentation entry (its strong augmentation), "
        "got 2; it makes 4 * method_kwargs.num_views views per image itself (x_n, y_a, x_a, "
        "y_n per pair)")
    cfg.augmentations = [{}]
    calls = []
    monkeypatch.setattr(warnings, "warn", lambda *a, **k: calls.append((a, k)))
    mttv.MTTV.check_cfg(cfg)
    assert calls == [((small_batch_text(96, 8, 2, 3, 112),), {"stacklevel": 2})]
    calls.clear()
    cfg.optimizer.batch_size = 64
    mttv.MTTV.check_cfg(cfg)
    assert calls == []


def test_mocov2plus_queue_must_hold_a_batch(monkeypatch):
    from solo_multiview.methods.mv_mocov2plus import MVMoCoV2Plus

    base = MVMoCoV2Plus.__mro__[1]
    monkeypatch.setattr(base, "check_cfg", classmethod(lambda cls, cfg: None))
    cfg = OmegaConf.create({"method_kwargs": {"queue_size": 16}, "optimizer": {"batch_size": 16}})
    MVMoCoV2Plus.check_cfg(cfg)
    cfg.method_kwargs.queue_size = 15
    with pytest.raises(eval_config.ConfigError) as info:
        MVMoCoV2Plus.check_cfg(cfg)
    assert str(info.value) == ("method_kwargs.queue_size: got 15; expected an int >= "
                               "optimizer.batch_size (16): each step enqueues a batch")


def test_filter_kwargs_check_node_passes_the_mode():
    from solo_multiview.methods.options import FilterKwargs

    FilterKwargs.check_node(OmegaConf.create({"low": 0.1, "high": 0.9, "mode": "low_only"}), "f")
    with pytest.raises(ValueError) as info:
        FilterKwargs.check_node(OmegaConf.create({"low": 0.1, "high": 0.9, "mode": "bogus"}), "f")
    assert str(info.value) == ("method_kwargs.filter.mode must be one of band, low_only; got "
                               "'bogus' (method_kwargs.filter.enabled: false turns the filter "
                               "off)")


def test_band_filter_stores_floats():
    from solo_multiview.losses.band_filter import BandFilter

    band = BandFilter(0, 1)
    assert type(band.low) is float and type(band.high) is float
    assert repr(band) == "BandFilter(low=0.0, high=1.0, mode='band')"
    assert not hasattr(band, "LOW") and not hasattr(band, "XXhighXX")


# ------------------------------------------------------------------------------------------
# losses: the official MTTV form under a (simulated) second rank
def official_reference(z_online, z_target, other_o, other_t, t, other_sum):
    """float64 loops: rank 0 of 2, the other rank's embeddings and ratio sum given."""
    import math

    def unit(v):
        return v / torch.sqrt(sum(x * x for x in v))

    M = z_online.shape[0]
    zo = [unit(z_online[m]) for m in range(M)]
    zt = [unit(z_target[m].detach()) for m in range(M)]
    all_o = zo + [unit(v) for v in other_o]
    all_t = zt + [unit(v) for v in other_t]
    anchors, cands = zo + zt, all_o + all_t
    MW = len(all_o)
    ratios, bad = [], 0
    for i, a in enumerate(anchors):
        m = i % M
        pos = m + MW if i < M else m
        denom = sum(torch.exp((torch.dot(a, c) - 1.0) / t) for c in cands) - 1.0
        numer = torch.exp((torch.dot(a, cands[pos]) - 1.0) / t)
        bad += int(denom.item() <= 0)
        ratios.append(numer / denom)
    local = sum(ratios)
    total = local.item() + other_sum
    loss_value = -math.log(total / (2 * M * 2))
    grad_part = -2 * local / total  # the gradient of the loss is that of this term
    return loss_value, grad_part, bad


def test_official_mttv_loss_under_two_ranks(monkeypatch):
    from solo_multiview.losses import mttv as losses_mttv

    gen = torch.Generator().manual_seed(3)
    z_online = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    z_target = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    other_o = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    other_t = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    other_o = other_o / other_o.norm(dim=1, keepdim=True)
    other_t = other_t / other_t.norm(dim=1, keepdim=True)
    reduced = []
    other = iter([5.0, 0.75])  # the other rank's bad-row count, then its ratio sum

    def all_reduce(x):
        reduced.append(x.detach().clone())
        return x.detach() + next(other)

    monkeypatch.setattr(losses_mttv, "rank_and_world", lambda: (0, 2))
    monkeypatch.setattr(losses_mttv, "gather_with_grad", lambda x: torch.cat([x, other_o]))
    monkeypatch.setattr(losses_mttv, "gather_no_grad",
                        lambda x: torch.cat([x.detach(), other_t]))
    monkeypatch.setattr(losses_mttv, "all_reduce_no_grad", all_reduce)
    zo = z_online.clone().requires_grad_(True)
    loss, stats = losses_mttv.mttv_infonce(zo, z_target, 0.5, band=None, form="official")
    loss.backward()

    ref_z = z_online.clone().requires_grad_(True)
    value, grad_part, bad = official_reference(ref_z, z_target, other_o, other_t, 0.5, 0.75)
    grad_part.backward()
    assert loss.item() == pytest.approx(value, rel=1e-12)
    assert torch.allclose(zo.grad, ref_z.grad, rtol=1e-10, atol=1e-12)
    assert len(reduced) == 2
    assert reduced[0].item() == bad == 0
    assert stats["nonpositive_denominators"].item() == bad + 5.0


def test_mttv_infonce_messages():
    from solo_multiview.losses.mttv import mttv_infonce

    z = torch.zeros(2, 3)
    with pytest.raises(ValueError) as info:
        mttv_infonce(z, z, form="paper")
    assert str(info.value) == ("mttv_infonce: form must be one of principled, official; got "
                               "'paper'")
    with pytest.raises(ValueError) as info:
        mttv_infonce(z, torch.zeros(2, 4))
    assert str(info.value) == ("mttv_infonce: z_online and z_target must both be (M, d) with "
                               "the same shape; got (2, 3) and (2, 4)")


# ------------------------------------------------------------------------------------------
# losses: shared helpers
def test_device_type_of_reads_the_first_view():
    from solo_multiview.losses.polyview import device_type_of

    meta = torch.empty(2, 3, device="meta")
    assert device_type_of(meta) == "meta"
    assert device_type_of(torch.empty(0, 3, device="meta")) == "meta"
    assert device_type_of([meta, meta]) == "meta"
    assert device_type_of(v for v in [meta]) == "meta"
    assert device_type_of([]) == "cpu"
    assert device_type_of([torch.zeros(1)]) == "cpu"


def test_gather_views_promotes_half_precision():
    from solo_multiview.losses.polyview import gather_views

    views = [torch.tensor([[3.0, 4.0]], dtype=torch.float16),
             torch.tensor([[0.0, 2.0]], dtype=torch.float16)]
    g = gather_views(views, "x")
    assert g.local.dtype == torch.float32
    assert torch.equal(g.local, torch.tensor([[[0.6, 0.8]], [[0.0, 1.0]]]))
    assert torch.equal(g.own, torch.tensor([[True]]))


def test_stack_views_messages_and_default_minimum():
    from solo_multiview.losses._common import stack_views

    one = torch.ones(2, 3)
    assert torch.equal(stack_views([one], "n"), one.unsqueeze(0))
    with pytest.raises(ValueError) as info:
        stack_views([], "n")
    assert str(info.value) == "n: expected at least 1 views, got none"


def test_cosine_helper_messages():
    from solo_multiview.losses._common import cross_view_cosines, paired_prediction_cosines

    with pytest.raises(ValueError) as info:
        cross_view_cosines(torch.zeros(2, 3, 4), torch.zeros(2, 2, 4))
    assert str(info.value) == ("predictions and targets must share (B, d); got (2, 3, 4) and "
                               "(2, 2, 4)")
    with pytest.raises(ValueError) as info:
        paired_prediction_cosines([torch.ones(2, 3)] * 2, [torch.ones(2, 3)], "x")
    assert str(info.value) == "x: z: expected at least 2 views, got 1"


def test_check_temperature_default_key():
    from solo_multiview.losses._common import check_temperature

    with pytest.raises(ValueError) as info:
        check_temperature(0)
    assert str(info.value) == "method_kwargs.temperature must be a positive number; got 0"


def test_global_weighted_mean_divides_by_at_least_one(monkeypatch):
    from solo_multiview.losses import distributed

    values = torch.tensor([3.0, 5.0], dtype=torch.float16)
    weights = torch.tensor([1.0, 0.0])
    out = distributed.global_weighted_mean(values, weights)
    assert out.dtype == torch.float16 and out.item() == 3.0
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (0, 2))
    monkeypatch.setattr(distributed, "all_reduce_no_grad", lambda x: x.detach())
    assert distributed.global_weighted_mean(values.double(), weights.double()).item() == 6.0


def test_mv_nt_xent_messages():
    from solo_multiview.losses.mv_simclr import mv_nt_xent

    with pytest.raises(ValueError) as info:
        mv_nt_xent(torch.zeros(4), torch.zeros(4))
    assert str(info.value) == "mv_nt_xent: z must be (n, d); got shape (4,)"
    with pytest.raises(ValueError) as info:
        mv_nt_xent(torch.zeros(4, 2), torch.zeros(3))
    assert str(info.value) == "mv_nt_xent: indexes must have shape (4,); got (3,)"


def test_mv_nt_xent_self_mask_on_a_middle_rank(monkeypatch):
    from solo_multiview.losses import mv_simclr

    n = 4
    z = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    idx = torch.tensor([0, 1, 0, 1])
    others = torch.randn(n, 3, generator=torch.Generator().manual_seed(1))
    other_idx = torch.tensor([7, 8, 9, 10])
    monkeypatch.setattr(mv_simclr, "rank_and_world", lambda: (1, 3))
    monkeypatch.setattr(mv_simclr, "gather_with_grad", lambda x: torch.cat([others, x, others]))
    monkeypatch.setattr(mv_simclr, "gather_no_grad",
                        lambda x: torch.cat([other_idx, x, other_idx + 10]))
    _, stats = mv_simclr.mv_nt_xent(z, idx, 0.5)
    # each crop's one other crop of the same image, its own column masked
    assert stats["num_positives"].item() == 4.0
    assert stats["num_anchors"].item() == 4.0


# ------------------------------------------------------------------------------------------
# eval.report.plot_per_class: the figure's content (neither laid out nor rendered)
def drawn(monkeypatch, tmp_path, counts, acc, class_names=None):
    from matplotlib.figure import Figure

    from solo_multiview.eval.report import plot_per_class

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    monkeypatch.setattr(Figure, "tight_layout", lambda fig, *a, **k: None)
    report = {"num_classes": len(counts), "train_counts": list(counts),
              "per_class_acc": list(acc), "groups": {"thirds": {"acc": {"many": 50.0}}}}
    plot_per_class(tmp_path / "p.png", report, class_names)
    (fig,) = saved
    ax, ax2 = fig.axes
    return ax, ax2


def test_plot_styles_of_a_small_report(monkeypatch, tmp_path):
    counts = [9, 1, 0, 5, 3, 2]
    ax, ax2 = drawn(monkeypatch, tmp_path, counts, [50.0, None, 20.0, 30.0, 40.0, 10.0])
    assert [r.get_width() for r in ax.containers[0]] == [0.85] * 6
    (scatter,) = ax.collections
    assert scatter.get_zorder() == 3
    assert [t.get_fontsize() for t in ax.get_legend().get_texts()] == [8.0]
    assert [t.get_fontsize() for t in ax.get_xticklabels()] == [7.0] * 6
    assert [t.get_rotation() for t in ax.get_xticklabels()] == [0.0] * 6
    (line,) = ax2.get_lines()
    # head to tail: 9, 5, 3, 2, 1, 0; the class without training images has no point
    assert list(line.get_xdata()) == [0, 1, 2, 3, 4]
    assert list(line.get_ydata()) == [9, 5, 3, 2, 1]
    assert (line.get_linewidth(), line.get_markersize(), line.get_marker()) == (1.2, 3.0, ".")
    vlines = [ln for ln in ax.get_lines()]
    assert [ln.get_xdata()[0] for ln in vlines] == [1.5, 3.5]
    assert [ln.get_linewidth() for ln in vlines] == [1.0, 1.0]
    assert [(t.get_text(), t.get_fontsize()) for t in ax.texts] == \
        [("Many 50.0", 8.0), ("Medium", 8.0), ("Few", 8.0)]


@pytest.mark.parametrize("C,ticks", [(40, True), (41, False)])
def test_plot_tick_labels_up_to_40_classes(monkeypatch, tmp_path, C, ticks):
    from matplotlib.ticker import FixedLocator

    ax, _ = drawn(monkeypatch, tmp_path, [C - i for i in range(C)], [1.0] * C)
    assert isinstance(ax.xaxis.get_major_locator(), FixedLocator) is ticks
    if ticks:
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(c) for c in range(C)]


@pytest.mark.parametrize("C,width,ms", [(200, 1.0, 3.0), (201, 1.0, 0.0)])
def test_plot_bar_width_and_markers_by_class_count(monkeypatch, tmp_path, C, width, ms):
    ax, ax2 = drawn(monkeypatch, tmp_path, [1000 - i for i in range(C)], [1.0] * C)
    assert {r.get_width() for r in ax.containers[0]} == {width}
    (line,) = ax2.get_lines()
    assert line.get_markersize() == ms


# ------------------------------------------------------------------------------------------
# built models: MTTV's heads and step bookkeeping, MV-SimCLR's head and band
def built(tmp_path, method, config_name, overrides):
    from solo_multiview.config.pretrain import parse_pretrain_cfg
    from solo_multiview.methods import build_method
    from tests.helpers import tiny_cfg

    cfg = tiny_cfg(tmp_path, method=method, config_name=config_name, num_views=None,
                   overrides=overrides)
    return build_method(parse_pretrain_cfg(cfg))


def linear_shapes(head):
    return [(m.in_features, m.out_features) for m in head if isinstance(m, torch.nn.Linear)]


def test_mttv_heads_default_to_the_backbone_width(tmp_path):
    model = built(tmp_path, "mttv", "quickstart_mttv_digits", [
        "method_kwargs.num_views=1", "method_kwargs.proj_hidden_dim=null",
        "method_kwargs.proj_output_dim=null"])
    d = model.features_dim
    assert d % 4 == 0 and d // 4 != d // 5 and d != 16
    for head in (model.projector, model.momentum_projector):
        assert linear_shapes(head) == [(d, d), (d, d), (d, d // 4)]
        assert [type(m).__name__ for m in head] == [
            "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear",
            "BatchNorm1d"]
    assert [p.requires_grad for p in model.momentum_projector.parameters()] == \
        [False] * len(list(model.momentum_projector.parameters()))
    assert all(p.requires_grad for p in model.projector.parameters())


def test_mttv_step_bookkeeping_gets_the_anchor_views(tmp_path, monkeypatch):
    model = built(tmp_path, "mttv", "quickstart_mttv_digits", [
        "method_kwargs.num_views=1", "method_kwargs.proj_hidden_dim=16",
        "method_kwargs.proj_output_dim=8"])
    d = model.features_dim
    assert linear_shapes(model.projector) == [(d, 16), (16, 16), (16, 8)]
    seen = {}
    real_base = model.base_training_step

    def base(X, targets):
        seen["anchor"] = out = real_base(X, targets)
        return out

    monkeypatch.setattr(model, "base_training_step", base)
    monkeypatch.setattr(model, "log_classifier_metrics",
                        lambda out, prefix: seen.setdefault("log", (out, prefix)))
    monkeypatch.setattr(model, "update_online_knn",
                        lambda feats, targets: seen.setdefault("knn", (feats, targets)))
    B = 4
    crops = [torch.rand(B, 3, 16, 16, generator=torch.Generator().manual_seed(c))
             for c in range(4)]
    targets = torch.tensor([3, 1, 4, 1])
    model.training_step([torch.arange(B), crops, targets], 0)
    assert seen["log"][0] is seen["anchor"] and seen["log"][1] == "train"
    assert seen["knn"][0] is seen["anchor"]["feats"]
    assert torch.equal(seen["knn"][1], targets)


def test_mv_simclr_head_and_band(tmp_path):
    model = built(tmp_path, "mv_simclr", "quickstart_digits", [
        "method_kwargs.num_views=2", "++method_kwargs.filter.enabled=true",
        "++method_kwargs.filter.low=0.0", "++method_kwargs.filter.high=0.5"])
    d = model.features_dim
    assert [type(m).__name__ for m in model.projector] == ["Linear", "ReLU", "Linear"]
    assert linear_shapes(model.projector) == [(d, 16), (16, 8)]
    assert (model.band.low, model.band.high) == (0.0, 0.5)
    z = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.6, 0.8]])]
    out = {"z": z, "indexes": torch.tensor([0, 1])}
    loss, extra = model.kview_loss(out, None)
    from solo_multiview.losses.mv_simclr import mv_nt_xent

    ref_loss, ref_stats = mv_nt_xent(torch.cat(z), torch.tensor([0, 1, 0, 1]),
                                     model.temperature, band=model.band)
    assert loss.item() == ref_loss.item()
    assert list(extra) == ["filtered_fraction"]
    assert extra["filtered_fraction"].item() == ref_stats["filtered_fraction"].item()
    assert extra["filtered_fraction"].item() > 0
    plain_loss, _ = mv_nt_xent(torch.cat(z), torch.tensor([0, 1, 0, 1]), model.temperature)
    assert plain_loss.item() != loss.item()


# ------------------------------------------------------------------------------------------
# eval: the augmented probe's loader, the probe images' transform
def test_augmented_probe_loader_gets_the_workers(monkeypatch):
    from solo_multiview.eval import augmented_probe
    from solo_multiview.eval.linear import LinearProbeConfig

    class StopError(Exception):
        pass

    seen = {}

    def loader(dataset, **kwargs):
        seen.update(kwargs)
        raise StopError

    monkeypatch.setattr(augmented_probe, "DataLoader", loader)
    with pytest.raises(StopError):
        augmented_probe.train_augmented_probe(
            torch.nn.Identity(), [], torch.zeros(2, 3), torch.tensor([0, 1]), 2,
            LinearProbeConfig(epochs=1, batch_size=2), torch.device("cpu"), num_workers=3)
    assert {k: v for k, v in seen.items() if k != "generator"} == {
        "batch_size": 2, "shuffle": True, "drop_last": False, "num_workers": 3,
        "pin_memory": False, "persistent_workers": True}


def test_eval_transform_takes_the_dataset_statistics_when_none_are_given():
    from solo_multiview.eval.probe_data import ImageSettings

    final = ImageSettings("cifar10", 8, 8, (), ()).eval_transform()
    normalize = final.to_tensor.transforms[-1]
    from solo_multiview.data.augmentations import MEAN_STD

    assert (tuple(normalize.mean), tuple(normalize.std)) == MEAN_STD["cifar10"]
