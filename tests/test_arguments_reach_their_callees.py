"""Configured values reach the code that uses them: the K-view methods' loss weights, forms, band
filters and heads (against float64 loops of the papers' formulas), the checkpoint's skip count,
the Checkpointer's cleanup on a failed save, the backbone builders' stem / dataset / weights,
the batched loader's shard and image size, and the probe's train-set error message.

Tiny inputs only: 3 views of 3-4 images, the quickstart's tiny convnet, no Trainer runs.
"""

from __future__ import annotations

import itertools
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from solo_multiview.config.pretrain import parse_pretrain_cfg
from solo_multiview.data.batched.build import BatchedPretrainLoader, build_batched_pretrain_loader
from solo_multiview.data.sources import ArraySource, ImageListSource
from solo_multiview.data.views import ViewSpec
from solo_multiview.eval.probe_data import build_eval_data
from solo_multiview.hosts import backbones
from solo_multiview.hosts.contract import KViewMethod
from solo_multiview.losses.band_filter import BandFilter
from solo_multiview.methods import build_method
from solo_multiview.training.checkpointing import Checkpointer
from tests.helpers import ops_off_entry, tiny_cfg
from tests.test_eval_prepare_values import IMAGE_LIST_ARGS, image_list_cfg, make_image_list
from tests.test_methods_objectives import TINY_MODEL, preset_cfg

K, B, D = 3, 4, 5  # views, images, embedding width of the hand-built projections


def method(name: str, overrides=()):
    cfg = parse_pretrain_cfg(
        preset_cfg(name, [*TINY_MODEL, f"method_kwargs.num_views={K}", *overrides])
    )
    return build_method(cfg)


def projections(seed: int, scale: float = 1.0):
    gen = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(B, D, generator=gen) for _ in range(K)]


def rows(view: torch.Tensor):
    return view.double().tolist()


# --------------------------------------------------------------------------- mv_vicreg


def vicreg_reference(z, w_sim, w_var, w_cov) -> float:
    """The K-view VICReg of losses/mv_vicreg.py, in float64 loops."""
    views = [rows(v) for v in z]
    n, d = len(views[0]), len(views[0][0])

    def mse(x, y):
        return sum((a - b) ** 2 for rx, ry in zip(x, y) for a, b in zip(rx, ry)) / (n * d)

    def column(v, j):
        return [r[j] for r in v]

    def var(col):
        m = sum(col) / n
        return sum((x - m) ** 2 for x in col) / (n - 1)

    def cov(v, i, j):
        ci, cj = column(v, i), column(v, j)
        mi, mj = sum(ci) / n, sum(cj) / n
        return sum((a - mi) * (b - mj) for a, b in zip(ci, cj)) / (n - 1)

    def variance(v):
        return sum(max(0.0, 1 - math.sqrt(var(column(v, j)) + 1e-4)) for j in range(d)) / d

    def covariance(v):
        return sum(cov(v, i, j) ** 2 for i in range(d) for j in range(d) if i != j) / d

    pairs = list(itertools.combinations(range(len(views)), 2))
    invariance = sum(mse(views[i], views[j]) for i, j in pairs) / len(pairs)
    k = len(views)
    return (
        w_sim * invariance
        + w_var * 2 / k * sum(variance(v) for v in views)
        + w_cov * 2 / k * sum(covariance(v) for v in views)
    )


def test_vicreg_uses_all_three_configured_weights():
    # weights far from the defaults (25, 25, 1): dropping any one of them changes the loss;
    # scale 0.5 keeps every std below 1, so the variance hinge is active
    model = method(
        "mv_vicreg",
        [
            "method_kwargs.sim_loss_weight=2",
            "method_kwargs.var_loss_weight=3",
            "method_kwargs.cov_loss_weight=5",
        ],
    )
    z = projections(0, scale=0.5)
    loss, stats = model.kview_loss({"z": z}, None)
    assert stats == {}
    assert float(loss) == pytest.approx(vicreg_reference(z, 2.0, 3.0, 5.0), rel=1e-5)


# --------------------------------------------------------------------------- polyview


def unit(row):
    norm = math.sqrt(sum(x * x for x in row))
    return [x / norm for x in row]


def polyview_arithmetic_reference(z, t, low, high):
    """(loss, filtered fraction) of Poly-View's arithmetic form with the band [low, high] on
    |cos|, in float64 loops (losses/polyview.py's module docstring)."""
    u = [[unit(r) for r in rows(v)] for v in z]
    k, n = len(u), len(u[0])

    def cos(a, b, c, m):
        return sum(x * y for x, y in zip(u[a][b], u[c][m]))

    def kept(s):
        return low <= abs(s) <= high

    losses, removed, entries = [], 0, 0
    for b in range(n):
        for a in range(k):
            for c in range(k):
                for m in range(n):
                    if (c, m) != (a, b):
                        entries += 1
                        removed += not kept(cos(a, b, c, m))
            # negatives: every kept view of every other image
            negs = [cos(a, b, c, m) for c in range(k) for m in range(n) if m != b]
            neg = sum(math.exp(s / t) for s in negs if kept(s))
            positives = [cos(a, b, c, b) for c in range(k) if c != a]
            probs = [math.exp(s / t) / (math.exp(s / t) + neg) for s in positives if kept(s)]
            if probs:  # an anchor without a kept positive is left out of the mean
                losses.append(-math.log(sum(probs) / len(probs)))
    return sum(losses) / len(losses), removed / entries


def test_polyview_uses_the_configured_form_and_band():
    model = method(
        "polyview",
        [
            "method_kwargs.temperature=0.3",
            "method_kwargs.form=arithmetic",
            "method_kwargs.filter.enabled=true",
            "method_kwargs.filter.low=0.1",
            "method_kwargs.filter.high=0.9",
        ],
    )
    assert model.band == BandFilter(0.1, 0.9, "band")
    z = projections(1)
    loss, stats = model.kview_loss({"z": z}, None)
    expected, fraction = polyview_arithmetic_reference(z, 0.3, 0.1, 0.9)
    assert 0 < fraction < 1  # the band removes part of the entries here, not all
    assert float(stats["filtered_fraction"]) == pytest.approx(fraction, rel=1e-6)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_mv_infonce_keeps_the_configured_band():
    model = method(
        "mv_infonce",
        [
            "method_kwargs.filter.enabled=true",
            "method_kwargs.filter.low=0.2",
            "method_kwargs.filter.mode=low_only",
        ],
    )
    assert model.band == BandFilter(0.2, 0.9, "low_only")


# --------------------------------------------------------------------------- mmcr


def test_mmcr_head_is_the_authors_projector_with_a_frozen_zero_output_bias():
    model = method("mmcr")
    d = model.features_dim
    # mmcr/cifar_stl/models.py, projector_dims=[512, 128]: Linear-BN-ReLU-Linear
    expected = nn.Sequential(
        nn.Linear(d, 16), nn.BatchNorm1d(16), nn.ReLU(inplace=True), nn.Linear(16, 8)
    )
    assert str(model.projector) == str(expected)
    out = model.projector[-1]
    assert out.bias.tolist() == [0.0] * 8 and out.bias.requires_grad is False
    # every other parameter trains (the BN's shift included)
    trainable = {name: p.requires_grad for name, p in model.projector.named_parameters()}
    assert trainable == {
        "0.weight": True,
        "0.bias": True,
        "1.weight": True,
        "1.bias": True,
        "3.weight": True,
        "3.bias": False,
    }


# --------------------------------------------------------------------------- checkpoints


class RecordingHost:
    def on_save_checkpoint(self, checkpoint):
        checkpoint["host"] = "saved"


class Method(KViewMethod, RecordingHost):
    pass


def test_the_checkpoint_stores_the_number_of_skipped_steps():
    model = Method()
    model.nonfinite_skipped = 4
    checkpoint = {"epoch": 2}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint == {"epoch": 2, "host": "saved", "nonfinite_skipped": 4}


@pytest.mark.parametrize("rank_zero", [True, False])
def test_a_failed_save_removes_the_partial_file_on_rank_zero_only(tmp_path, rank_zero):
    # on a shared file system the partial file is rank 0's: another rank must leave it alone
    ckpt = Checkpointer(OmegaConf.create({"name": "run"}), tmp_path)
    partial = tmp_path / f"run-{tmp_path.name}-ep=1.ckpt.partial"

    def save_checkpoint(path):
        assert path == partial
        path.write_bytes(b"half")
        raise OSError("disk full")

    trainer = SimpleNamespace(
        sanity_checking=False,
        global_step=5,
        current_epoch=1,
        is_global_zero=rank_zero,
        lightning_module=nn.Linear(2, 2),
        strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision),
        save_checkpoint=save_checkpoint,
    )
    with pytest.raises(OSError, match="^disk full$"):
        ckpt.save(trainer)
    assert partial.exists() is not rank_zero
    assert ckpt.last_ckpt is None and ckpt.last_saved_step == -1


# --------------------------------------------------------------------------- backbones


def test_resnet_builders_never_take_pretrained_weights():
    # weights=None is pinned: a weights argument is refused before torchvision resolves it
    with pytest.raises(TypeError, match="got multiple values for keyword argument 'weights'"):
        backbones.resnet18(None, weights="bogus")


def stem(net):
    return (net.conv1.kernel_size, net.conv1.stride, net.conv1.padding, type(net.maxpool))


def test_the_config_stem_and_padding_reach_the_backbone():
    # an explicit CIFAR stem with padding 1 on a non-CIFAR dataset (auto would be ImageNet's)
    cfg = {
        "backbone": {"name": "resnet18", "stem": "cifar", "cifar_stem_padding": 1},
        "data": {"dataset": "image_list"},
    }
    net = backbones.build_backbone_from_cfg(cfg)
    assert stem(net) == ((3, 3), (1, 1), (1, 1), nn.Identity)
    assert isinstance(net.fc, nn.Identity)


def test_the_config_dataset_decides_the_auto_stem():
    cfg = {"backbone": {"name": "resnet18"}, "data": {"dataset": "cifar10"}}
    assert stem(backbones.build_backbone_from_cfg(cfg)) == ((3, 3), (1, 1), (2, 2), nn.Identity)


# --------------------------------------------------------------------------- batched loader


def u8(n: int, size: int = 8) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)


def loader(n, batch_size, views=None, **kwargs):
    return BatchedPretrainLoader(
        np.arange(n) % 3,
        3,
        [ops_off_entry(8, 2)],
        "cifar10",
        batch_size,
        ViewSpec(2) if views is None else views,
        images=u8(n),
        device="cpu",
        **kwargs,
    )


def test_a_fixed_shard_sets_the_share_of_a_rank():
    # 12 images over 3 ranks: 4 each, 2 batches of 2 (one rank would have 6)
    sharded = loader(12, 2, shard=(1, 3))
    assert sharded.rank_and_world() == (1, 3)
    assert len(sharded) == 2
    # the epoch's rows: every 3rd position of randperm(12) seeded 0 (seed 0, epoch 0), from 1
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0)).tolist()
    assert torch.cat([batch[0] for batch in sharded]).tolist() == order[1::3]


def test_a_batch_larger_than_a_rank_share_is_refused_by_name():
    message = (
        "optimizer.batch_size: 4 is larger than a rank's share of the training set (6 "
        "images after the long-tail selection over 2 rank(s): 3 each)"
    )
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        loader(6, 4, shard=(0, 2))


def test_a_pairs_loader_checks_its_single_entry():
    pairs = loader(8, 2, views=ViewSpec(2, scheme="pairs"))
    assert pairs.mode == "pairs" and len(pairs) == 4


@pytest.fixture
def batched_cfg(tmp_path):
    cfg = parse_pretrain_cfg(
        tiny_cfg(
            tmp_path,
            overrides=[
                "data.format=batched",
                "++batched.device=cpu",
                "++batched.image_size=6",
                "optimizer.batch_size=2",
            ],
        )
    )
    cfg.data.long_tail.profile = "none"
    return cfg


def test_build_passes_the_shard(batched_cfg):
    source = ArraySource(u8(8).permute(0, 2, 3, 1).numpy(), np.arange(8) % 4)
    built = build_batched_pretrain_loader(batched_cfg, source=source, shard=(1, 2))
    assert built.shard == (1, 2)
    assert len(built) == 2  # 8 images over 2 ranks, batches of 2


def test_build_passes_the_image_size_of_an_image_list(tmp_path, batched_cfg):
    # 8x8 files decoded to batched.image_size=6: the stored shape is 6x6, not the files' size
    root = tmp_path / "images"
    root.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 10 * i, dtype=np.uint8)).save(root / f"{i}.png")
    split = tmp_path / "train.txt"
    split.write_text("".join(f"{i}.png {i % 2}\n" for i in range(4)))
    built = build_batched_pretrain_loader(batched_cfg, source=ImageListSource(root, split))
    assert built.image_size == 6
    assert built.image_shape() == (3, 6, 6)
    assert built.files == [root / f"{i}.png" for i in range(4)]


# --------------------------------------------------------------------------- probe data


def test_a_probe_train_set_error_names_the_train_set(tmp_path):
    # 2 shots per class from the long-tailed list (3, 2, 1 images): class 2 has only one
    f = make_image_list(tmp_path)
    with pytest.raises(ValueError) as err:
        build_eval_data(image_list_cfg(f, 2, balanced=False), IMAGE_LIST_ARGS)
    assert str(err.value) == (
        "train_set=2: probe train set: 2 shots per class, but class(es) "
        "[2] have only [1] training images"
    )
