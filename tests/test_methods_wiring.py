"""Exact wiring of the K-view methods: their heads against the architectures of the papers and
the authors' code, mttv's fusion, loss arguments and official-form stop, the stats the methods
log, MoCo's queue bound and registration into solo-learn's METHODS.

Models are the tiny quickstart builds of tests/helpers.py (convnet width 4, heads 16 -> 8); no
Trainer runs.
"""

from __future__ import annotations

import math
import re
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import solo_multiview.methods as methods
from solo_multiview.config.pretrain import parse_pretrain_cfg
from solo_multiview.losses.band_filter import BandFilter
from solo_multiview.losses.mttv import OfficialFormError, mttv_infonce
from solo_multiview.losses.mv_mocov2plus import mv_mocov2plus_loss
from solo_multiview.methods import METHODS, build_method
from solo_multiview.methods.mv_simsiam import simsiam_predictor, simsiam_projector
from tests.test_methods_kview import build_model, method_cfg
from tests.test_methods_objectives import TINY_MODEL, preset_cfg
from tests.test_mttv_method import mttv_cfg

HIDDEN, OUT = 16, 8  # proj_hidden_dim, proj_output_dim of the tiny configs (tests/helpers.py)


def relu() -> nn.ReLU:
    return nn.ReLU(inplace=True)


# ---------------------------------------------------------------- heads


def test_simsiam_heads_are_the_authors_modules():
    # facebookresearch/simsiam, simsiam/builder.py: bias-free Linear before each BN, ReLU in
    # place, a BN without affine parameters after the output layer; the predictor's output
    # Linear keeps its bias
    authors_projector = nn.Sequential(
        nn.Linear(5, 7, bias=False),
        nn.BatchNorm1d(7),
        nn.ReLU(inplace=True),
        nn.Linear(7, 7, bias=False),
        nn.BatchNorm1d(7),
        nn.ReLU(inplace=True),
        nn.Linear(7, 3, bias=False),
        nn.BatchNorm1d(3, affine=False),
    )
    authors_predictor = nn.Sequential(
        nn.Linear(3, 6, bias=False), nn.BatchNorm1d(6), nn.ReLU(inplace=True), nn.Linear(6, 3)
    )
    projector, predictor = simsiam_projector(5, 7, 3), simsiam_predictor(3, 6)
    assert str(projector) == str(authors_projector)
    assert str(predictor) == str(authors_predictor)
    # the same parameters (names and shapes): no bias before a BN, no affine in the last BN
    assert {k: v.shape for k, v in projector.state_dict().items()} == {
        k: v.shape for k, v in authors_projector.state_dict().items()
    }
    assert {k: v.shape for k, v in predictor.state_dict().items()} == {
        k: v.shape for k, v in authors_predictor.state_dict().items()
    }


def three_layer_bn(d: int) -> nn.Sequential:
    """(Linear-BN-ReLU) x 2, Linear: the Barlow Twins / VICReg projector of solo-learn."""
    return nn.Sequential(
        nn.Linear(d, HIDDEN),
        nn.BatchNorm1d(HIDDEN),
        relu(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.BatchNorm1d(HIDDEN),
        relu(),
        nn.Linear(HIDDEN, OUT),
    )


def two_layer_bn(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """Linear-BN-ReLU-Linear: BYOL's projector and predictor."""
    return nn.Sequential(
        nn.Linear(d_in, d_hidden), nn.BatchNorm1d(d_hidden), relu(), nn.Linear(d_hidden, d_out)
    )


def two_layer(d: int) -> nn.Sequential:
    """Linear-ReLU-Linear: SimCLR's head, which MoCo v2+ and Poly-View use too."""
    return nn.Sequential(nn.Linear(d, HIDDEN), relu(), nn.Linear(HIDDEN, OUT))


@pytest.mark.parametrize("method", ["mv_barlow_twins", "mv_vicreg", "mv_byol", "mv_mocov2plus"])
def test_kview_heads_are_the_papers_heads(tmp_path, method):
    model = build_model(tmp_path, method, "builtin", 2)
    d = model.features_dim
    expected = {
        "mv_barlow_twins": three_layer_bn(d),
        "mv_vicreg": three_layer_bn(d),
        "mv_byol": two_layer_bn(d, HIDDEN, OUT),
        "mv_mocov2plus": two_layer(d),
    }[method]
    assert str(model.projector) == str(expected)
    if method == "mv_byol":
        assert str(model.predictor) == str(two_layer_bn(OUT, HIDDEN, OUT))


def test_polyview_head_is_simclrs(tmp_path):
    cfg = parse_pretrain_cfg(preset_cfg("polyview", [*TINY_MODEL, "method_kwargs.num_views=2"]))
    model = build_method(cfg)
    assert str(model.projector) == str(two_layer(model.features_dim))


def test_emp_ssl_head_is_the_authors_three_layer_projector(tmp_path):
    # EMP-SSL's model/model.py: (Linear-BN-ReLU) x 2, then Linear, at the configured widths
    cfg = parse_pretrain_cfg(preset_cfg("emp_ssl", [*TINY_MODEL, "method_kwargs.num_views=2"]))
    model = build_method(cfg)
    d, hidden = model.features_dim, cfg.method_kwargs.proj_hidden_dim
    out = cfg.method_kwargs.proj_output_dim
    expected = nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), relu(),
                             nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), relu(),
                             nn.Linear(hidden, out))
    assert str(model.projector) == str(expected)


@pytest.mark.parametrize("method", ["mv_byol", "mv_mocov2plus"])
def test_momentum_projector_is_a_frozen_copy(tmp_path, method):
    model = build_model(tmp_path, method, "builtin", 2)
    assert str(model.momentum_projector) == str(model.projector)
    online = dict(model.projector.named_parameters())
    for name, param in model.momentum_projector.named_parameters():
        assert torch.equal(param, online[name]), name
        assert param.requires_grad is False, name  # the EMA target never gets a gradient
        assert online[name].requires_grad is True, name


# ---------------------------------------------------------------- logged stats


def unit_rows(view: torch.Tensor):
    return [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in view.double().tolist()]


def cosine(a, b) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def test_simsiam_loss_and_collapse_monitor(tmp_path):
    model = build_model(tmp_path, "mv_simsiam", "builtin", 2)
    gen = torch.Generator().manual_seed(0)
    # 2 large crops + 1 small one, with different scales per view
    z = [torch.randn(6, 5, generator=gen) * (1 + v) + v for v in range(3)]
    p = [torch.randn(6, 5, generator=gen) for _ in range(3)]
    loss, stats = model.kview_loss({"z": z, "p": p}, None)
    assert set(stats) == {"neg_cos_sim", "z_std"}  # logged as train_neg_cos_sim (solo's name)
    assert torch.equal(stats["neg_cos_sim"], loss)
    # L = -mean over (prediction v, large target j != v) of mean_b cos(p_vb, z_jb)
    pairs = [(v, j) for j in range(2) for v in range(3) if v != j]
    terms = [
        sum(cosine(p[v][b].tolist(), z[j][b].tolist()) for b in range(6)) / 6 for v, j in pairs
    ]
    assert float(loss) == pytest.approx(-sum(terms) / len(terms), rel=1e-5)
    # z_std: per-dimension std over the batch of the unit projections, large crops only
    stds = []
    for view in z[:2]:
        rows = unit_rows(view)
        for d in range(5):
            col = [row[d] for row in rows]
            mean = sum(col) / len(col)
            stds.append(math.sqrt(sum((x - mean) ** 2 for x in col) / (len(col) - 1)))
    assert float(stats["z_std"]) == pytest.approx(sum(stds) / len(stds), rel=1e-5)


FILTER_ON = [
    "+method_kwargs.filter.enabled=true",
    "+method_kwargs.filter.low=0.05",
    "method_kwargs.temperature=0.3",
]


@pytest.mark.parametrize("filter_on", [False, True])
def test_mocov2plus_logs_the_filtered_fraction_only_with_the_filter(tmp_path, filter_on):
    extra = FILTER_ON if filter_on else ["method_kwargs.temperature=0.3"]
    model = build_model(tmp_path, "mv_mocov2plus", "builtin", 2, extra=extra)
    band = BandFilter(0.05, 0.9, "band") if filter_on else None
    assert model.band == band
    gen = torch.Generator().manual_seed(0)
    q = [F.normalize(torch.randn(8, OUT, generator=gen), dim=-1) for _ in range(2)]
    k = [F.normalize(torch.randn(8, OUT, generator=gen), dim=-1) for _ in range(2)]
    queue = model.queue.clone()
    expected, expected_stats = mv_mocov2plus_loss(q, k, queue, 0.3, band=band)
    loss, stats = model.kview_loss({"z": q, "momentum_z": k}, None)
    torch.testing.assert_close(loss, expected)
    if filter_on:
        assert set(stats) == {"filtered_fraction"}
        fraction = float(expected_stats["filtered_fraction"])
        assert 0 < fraction < 1, "the band removes part of the logits here"
        assert float(stats["filtered_fraction"]) == fraction
    else:
        assert stats == {}


def test_mocov2plus_queue_may_hold_exactly_one_batch(tmp_path):
    # batch_size 16: a queue of 16 keys is enough, 15 are not
    model = build_model(
        tmp_path, "mv_mocov2plus", "builtin", 2, extra=["method_kwargs.queue_size=16"]
    )
    assert model.queue.shape == (2, OUT, 16)
    cfg = method_cfg(tmp_path, "mv_mocov2plus", extra=["method_kwargs.queue_size=15"])
    message = (
        "method_kwargs.queue_size: got 15; expected an int >= optimizer.batch_size (16): "
        "each step enqueues a batch"
    )
    with pytest.raises(ValueError, match=re.escape(message) + "$"):
        parse_pretrain_cfg(cfg)


# ---------------------------------------------------------------- mttv


def mttv_model(tmp_path, overrides=()):
    return build_method(parse_pretrain_cfg(mttv_cfg(tmp_path, overrides=overrides)))


@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_mttv_fusion(tmp_path, fusion):
    model = mttv_model(tmp_path, [f"method_kwargs.fusion={fusion}"])
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    expected = {
        "sum": [[11.0, 22.0], [33.0, 44.0]],
        "concat": [[1.0, 2.0, 10.0, 20.0], [3.0, 4.0, 30.0, 40.0]],
    }[fusion]
    assert model.fuse(a, b).tolist() == expected


def test_mttv_refuses_a_wrong_number_of_crops(tmp_path):
    model = mttv_model(tmp_path, ["method_kwargs.num_views=2", "augmentations.0.num_crops=2"])
    crops = [torch.randn(4, 3, 16, 16) for _ in range(3)]
    message = "mttv expects 4 * num_views = 8 crops per image (x_n, y_a, x_a, y_n per pair), got 3"
    with pytest.raises(ValueError, match=re.escape(message) + "$"):
        model.training_step([torch.arange(4), crops, torch.arange(4)], 0)


MTTV_LOSS_CASES = {
    # non-default temperature and band (mttv_infonce's defaults: 0.3, BandFilter(0.1, 0.9))
    "principled": (
        [
            "method_kwargs.temperature=0.5",
            "method_kwargs.filter.mode=low_only",
            "method_kwargs.filter.low=0.2",
        ],
        BandFilter(0.2, 0.9, "low_only"),
        "principled",
    ),
    "official": (
        [
            "method_kwargs.temperature=0.5",
            "method_kwargs.form=official",
            "method_kwargs.filter.enabled=false",
        ],
        None,
        "official",
    ),
}


@pytest.mark.parametrize("case", sorted(MTTV_LOSS_CASES))
def test_mttv_step_is_the_configured_loss_of_the_fused_embeddings(tmp_path, case):
    overrides, band, form = MTTV_LOSS_CASES[case]
    K, B = 2, 6
    torch.manual_seed(0)
    model = mttv_model(
        tmp_path, ["method_kwargs.num_views=2", "augmentations.0.num_crops=2", *overrides]
    )
    with torch.no_grad():  # so that the target branch differs from the online one
        for param in model.momentum_backbone.parameters():
            param.add_(0.1 * torch.randn_like(param))
    gen = torch.Generator().manual_seed(1)
    crops = [torch.randn(B, 3, 16, 16, generator=gen) for _ in range(4 * K)]
    targets = torch.arange(B) % 3
    # train mode: BatchNorm uses the statistics of each call, so the same groups as the step
    x_n, y_a, x_a, y_n = (torch.cat(crops[g * K : (g + 1) * K]) for g in range(4))
    with torch.no_grad():
        feats = model.backbone(x_n)
        z_online = model.projector(feats) + model.projector(model.backbone(y_a))
        z_target = model.momentum_projector(
            model.momentum_backbone(x_a)
        ) + model.momentum_projector(model.momentum_backbone(y_n))
        class_loss = F.cross_entropy(model.classifier(feats), targets.repeat(K))
        expected, _ = mttv_infonce(z_online, z_target, 0.5, band=band, form=form)
        total = model.training_step([torch.arange(B), crops, targets], 0)
    torch.testing.assert_close(total, expected + class_loss, rtol=1e-5, atol=1e-6)
    # the check is sensitive: mttv_infonce's defaults (t = 0.3, the official band), no band,
    # or the other form give other losses
    other_form = {"principled": "official", "official": "principled"}[form]
    others = [
        mttv_infonce(z_online, z_target, 0.3, band=band, form=form)[0],
        mttv_infonce(z_online, z_target, 0.5, band=band, form=other_form)[0],
    ]
    if band is not None:
        others += [
            mttv_infonce(z_online, z_target, 0.5, form=form)[0],
            mttv_infonce(z_online, z_target, 0.5, band=None, form=form)[0],
        ]
    for other in others:
        assert abs(float(other) - float(expected)) > 1e-3


@pytest.mark.filterwarnings("ignore:method_kwargs.form=official with 8 embeddings")
def test_mttv_official_form_stops_on_nonpositive_denominators(tmp_path):
    # 8 embeddings (4 anchors x 1 pair x 2 branches), band (0.1, 0.9), t = 0.05: a row's kept
    # sum is at most 7 exp((0.9 - 1)/t) = 7 e^-2 < 1 in the scaled form, so all 8 rows fail
    model = mttv_model(
        tmp_path,
        ["method_kwargs.form=official", "method_kwargs.temperature=0.05", "optimizer.batch_size=4"],
    )
    gen = torch.Generator().manual_seed(0)
    crops = [torch.randn(4, 3, 16, 16, generator=gen) for _ in range(4)]
    message = (
        "method_kwargs.form=official: 8 of 8 rows have a denominator <= 0 "
        "(optimizer.batch_size=4 anchors x 1 pair(s) x 1 device(s) -> 8 embeddings). The "
        "official loss subtracts exp(1/t) = 4.852e+08 from each row's sum of kept exp(s/t), and "
        "the band filter already removed the self-similarity (cos 1 > 0.9), so a row whose kept "
        "similarities add up to less than exp(1/t) has no valid ratio (a NaN or negative term); "
        "use method_kwargs.form=principled, or a larger optimizer.batch_size (the authors "
        "train with 1024)"
    )
    with pytest.raises(OfficialFormError, match=re.escape(message) + "$"):
        model.training_step([torch.arange(4), crops, torch.arange(4)], 0)


# ---------------------------------------------------------------- solo-learn registration


def test_register_with_solo_puts_every_method_built_on_solo_into_its_registry(monkeypatch):
    # a stand-in solo.methods (solo-learn need not be installed) and a compose that records
    solo_registry: dict = {}
    solo = types.ModuleType("solo")
    solo_methods = types.ModuleType("solo.methods")
    solo_methods.METHODS = solo_registry
    solo.methods = solo_methods
    monkeypatch.setitem(sys.modules, "solo", solo)
    monkeypatch.setitem(sys.modules, "solo.methods", solo_methods)
    monkeypatch.setattr(methods, "compose", lambda method, host: ("composed", method, host))
    methods.register_with_solo()
    assert solo_registry == {name: ("composed", cls, "solo") for name, cls in METHODS.items()}
    assert len(solo_registry) == 13
