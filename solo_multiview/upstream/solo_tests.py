"""solo-learn tests written with the contribution, in the style of its tests/ (the helpers of
tests/methods/utils.py: gen_base_cfg, gen_batch, gen_trainer, prepare_dummy_dataloaders)."""

from string import Template

MTTV_LOSS_TEST = Template(
    """$header

import math

import pytest
import torch
import torch.nn.functional as F
from solo.losses import mttv_loss_func, simclr_loss_func
from solo.losses.multiview_utils import BandFilter


def test_mttv_loss():
    b, f = 32, 128
    z_online = torch.randn(b, f).requires_grad_()
    z_target = 0.5 * z_online.detach() + torch.randn(b, f)

    loss, stats = mttv_loss_func(z_online, z_target, temperature=0.3, band=None)
    initial_loss = loss.item()
    assert loss != 0
    assert set(stats) >= {"filtered_fraction", "pos_cos", "neg_cos", "alignment", "uniformity"}

    for _ in range(20):
        loss, _ = mttv_loss_func(z_online, z_target, temperature=0.3, band=None)
        loss.backward()
        z_online.data.add_(-0.5 * z_online.grad)
        z_online.grad = None

    assert loss < initial_loss


def test_mttv_loss_without_filter_is_simclr():
    # principled form without the band filter: NT-Xent on the 2M fused embeddings
    b, f = 16, 32
    z_online, z_target = torch.randn(b, f), torch.randn(b, f)
    loss, _ = mttv_loss_func(z_online, z_target, temperature=0.3, band=None)
    reference = simclr_loss_func(
        torch.cat([z_online, z_target]), torch.arange(b).repeat(2), temperature=0.3
    )
    assert torch.allclose(loss, reference, atol=1e-5)


def _reference(z_online, z_target, t, band, form):
    # the formulas of solo.losses.mttv, one anchor at a time, in float64
    u = F.normalize(torch.cat([z_online, z_target]).double(), dim=-1)
    n, m = u.size(0), z_online.size(0)
    sim = u @ u.T
    terms = []
    for i in range(n):
        p = (i + m) % n
        keep = [band is None or band[0] <= abs(sim[i, a].item()) <= band[1] for a in range(n)]
        if form == "principled":
            if not keep[p]:
                continue
            denom = sum(math.exp(sim[i, a].item() / t) for a in range(n) if a != i and keep[a])
            terms.append(-(sim[i, p].item() / t - math.log(denom)))
        else:
            denom = sum(math.exp(sim[i, a].item() / t) for a in range(n) if keep[a])
            numer = math.exp(sim[i, p].item() / t) if keep[p] else 0.0
            terms.append(numer / (denom - math.exp(1 / t)))
    if form == "principled":
        return sum(terms) / max(len(terms), 1)
    return -math.log(sum(terms) / n)


@pytest.mark.parametrize("form", ["principled", "official"])
def test_mttv_loss_matches_its_formula(form):
    torch.manual_seed(0)
    b, f = 8, 16
    z_online = torch.randn(b, f)
    z_target = z_online + 0.8 * torch.randn(b, f)
    # the official form without the filter (with it, small batches leave too few entries)
    band = (0.05, 0.95) if form == "principled" else None
    loss, stats = mttv_loss_func(
        z_online, z_target, temperature=0.5, band=band and BandFilter(*band), form=form
    )
    assert abs(loss.item() - _reference(z_online, z_target, 0.5, band, form)) < 1e-4
    assert 0 <= stats["filtered_fraction"] <= 1


def test_band_filter():
    band = BandFilter(0.1, 0.9)
    sim = torch.tensor([0.05, 0.5, -0.5, 0.95, -0.99])
    assert band.keep(sim).tolist() == [False, True, True, False, False]
    assert BandFilter(0.1, 0.9, "low_only").keep(sim).tolist() == [False, True, True, True, True]
    with pytest.raises(ValueError):
        BandFilter(0.9, 0.1)
    with pytest.raises(ValueError):
        BandFilter(0.1, 0.9, "unknown")
"""
)


MV_SIMCLR_LOSS_TEST = Template(
    """$header

import math

import torch
import torch.nn.functional as F
from solo.losses import mv_simclr_loss_func, simclr_loss_func
from solo.losses.multiview_utils import BandFilter


def test_mv_simclr_loss():
    b, f, k = 32, 128, 4
    z = torch.randn(k * b, f).requires_grad_()
    indexes = torch.arange(b).repeat(k)

    loss, _ = mv_simclr_loss_func(z, indexes, temperature=0.1)
    initial_loss = loss.item()
    assert loss != 0

    for _ in range(20):
        loss, _ = mv_simclr_loss_func(z, indexes, temperature=0.1)
        loss.backward()
        z.data.add_(-0.5 * z.grad)
        z.grad = None

    assert loss < initial_loss


def test_mv_simclr_loss_two_views_is_simclr():
    b, f = 16, 32
    z = torch.randn(2 * b, f)
    indexes = torch.arange(b).repeat(2)
    loss, _ = mv_simclr_loss_func(z, indexes, temperature=0.2)
    assert torch.allclose(loss, simclr_loss_func(z, indexes, temperature=0.2), atol=1e-5)


def test_mv_simclr_loss_k_views():
    # the multi-positive NT-Xent, one anchor and one positive at a time, in float64
    torch.manual_seed(0)
    b, f, k, t = 6, 8, 4, 0.5
    z = torch.randn(k * b, f)
    indexes = torch.arange(b).repeat(k)
    loss, stats = mv_simclr_loss_func(z, indexes, temperature=t)

    u = F.normalize(z.double(), dim=-1)
    n = u.size(0)
    total = 0.0
    for i in range(n):
        denom = sum(math.exp(u[i] @ u[a] / t) for a in range(n) if a != i)
        positives = [p for p in range(n) if p != i and indexes[p] == indexes[i]]
        total += -sum(u[i] @ u[p] / t - math.log(denom) for p in positives) / len(positives)
    assert abs(loss.item() - total / n) < 1e-4
    assert stats["num_positives"] == n * (k - 1)


def test_mv_simclr_loss_band_filter():
    b, f, k = 16, 8, 3
    z = torch.randn(k * b, f)
    indexes = torch.arange(b).repeat(k)
    loss, stats = mv_simclr_loss_func(z, indexes, temperature=0.2, band=BandFilter(0.1, 0.9))
    assert torch.isfinite(loss)
    assert 0 < stats["filtered_fraction"] < 1
"""
)


MTTV_METHOD_TEST = Template(
    """$header

import torch
from omegaconf import OmegaConf
from solo.data.pretrain_dataloader import (
    PartnerPairDataset,
    build_normalization_pipeline,
    build_transform_pipeline,
    dataset_with_index,
    prepare_dataloader,
)
from solo.methods import MTTV
from torchvision.datasets import FakeData

from .utils import gen_base_cfg, gen_batch, gen_trainer, prepare_dummy_dataloaders


def prepare_pair_dataloaders(dataset, num_pairs, num_classes, batch_size=2, **pair_kwargs):
    is_cifar = "cifar" in dataset
    aug_cfg = OmegaConf.create(
        {
            "rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
            "color_jitter": {
                "brightness": 0.4,
                "contrast": 0.4,
                "saturation": 0.4,
                "hue": 0.1,
                "prob": 0.8,
            },
            "grayscale": {"prob": 0.2},
            "gaussian_blur": {"prob": 0.5},
            "solarization": {"prob": 0.0},
            "equalization": {"prob": 0.0},
            "horizontal_flip": {"prob": 0.5},
            "crop_size": 224 if not is_cifar else 32,
            "num_crops": num_pairs,
        }
    )
    train_dataset = PartnerPairDataset(
        dataset_with_index(FakeData)(image_size=(3, 224, 224), num_classes=num_classes, size=64),
        augmentation=build_transform_pipeline(dataset, aug_cfg),
        normalization=build_normalization_pipeline(dataset, aug_cfg),
        num_pairs=num_pairs,
        **pair_kwargs,
    )
    train_dl = prepare_dataloader(train_dataset, batch_size=batch_size, num_workers=0)
    _, val_dl = prepare_dummy_dataloaders(
        dataset, num_large_crops=2, num_classes=num_classes, batch_size=batch_size
    )
    return train_dl, val_dl


def test_partner_pairs():
    num_pairs = 3
    train_dl, _ = prepare_pair_dataloaders("cifar10", num_pairs=num_pairs, num_classes=10)
    indexes, crops, targets = next(iter(train_dl))
    assert len(crops) == 4 * num_pairs
    assert all(crop.shape == (2, 3, 32, 32) for crop in crops)
    # x_n is the anchor, normalised only: the same tensor for every pair
    assert torch.equal(crops[0], crops[1])
    # partner "none" pairs an image with itself: y_n is x_n
    train_dl, _ = prepare_pair_dataloaders(
        "cifar10", num_pairs=num_pairs, num_classes=10, partner="none"
    )
    _, crops, _ = next(iter(train_dl))
    assert torch.equal(crops[0], crops[3 * num_pairs])


def test_mttv():
    method_kwargs = {
        "num_views": 2,
        "proj_hidden_dim": 64,
        "proj_output_dim": 32,
        "temperature": 0.3,
    }

    cfg = gen_base_cfg("mttv", batch_size=2, num_classes=100, num_large_crops=2, momentum=True)
    cfg.method_kwargs = method_kwargs
    model = MTTV(cfg)

    # test arguments
    model.add_and_assert_specific_cfg(cfg)
    assert cfg.method_kwargs.filter.enabled
    assert cfg.method_kwargs.form == "principled"

    # test parameters
    assert model.learnable_params is not None

    # test forward
    batch, _ = gen_batch(cfg.optimizer.batch_size, cfg.data.num_classes, "imagenet100")
    out = model(batch[1][0])
    assert (
        "logits" in out
        and isinstance(out["logits"], torch.Tensor)
        and out["logits"].size() == (cfg.optimizer.batch_size, cfg.data.num_classes)
    )
    assert (
        "feats" in out
        and isinstance(out["feats"], torch.Tensor)
        and out["feats"].size() == (cfg.optimizer.batch_size, model.features_dim)
    )
    assert (
        "z" in out
        and isinstance(out["z"], torch.Tensor)
        and out["z"].size() == (cfg.optimizer.batch_size, method_kwargs["proj_output_dim"])
    )

    momentum_out = model.momentum_forward(batch[1][0])
    assert (
        "z" in momentum_out
        and isinstance(momentum_out["z"], torch.Tensor)
        and momentum_out["z"].size()
        == (cfg.optimizer.batch_size, method_kwargs["proj_output_dim"])
    )

    # imagenet
    model = MTTV(cfg)

    trainer = gen_trainer(cfg)
    train_dl, val_dl = prepare_pair_dataloaders(
        "imagenet100",
        num_pairs=cfg.method_kwargs.num_views,
        num_classes=cfg.data.num_classes,
        batch_size=cfg.optimizer.batch_size,
    )
    trainer.fit(model, train_dl, val_dl)

    # cifar, one partner, concatenated fusion and the authors' loss
    cfg = gen_base_cfg("mttv", batch_size=2, num_classes=10, num_large_crops=1, momentum=True)
    cfg.data.dataset = "cifar10"
    cfg.method_kwargs = dict(method_kwargs, num_views=1, fusion="concat", form="official")
    model = MTTV(cfg)

    trainer = gen_trainer(cfg)
    train_dl, val_dl = prepare_pair_dataloaders(
        "cifar10",
        num_pairs=cfg.method_kwargs.num_views,
        num_classes=cfg.data.num_classes,
        batch_size=cfg.optimizer.batch_size,
    )
    trainer.fit(model, train_dl, val_dl)
"""
)


MV_SIMCLR_METHOD_TEST = Template(
    """$header

import torch
from solo.methods import MVSimCLR

from .utils import gen_base_cfg, gen_batch, gen_trainer, prepare_dummy_dataloaders


def test_mv_simclr():
    method_kwargs = {
        "proj_output_dim": 256,
        "proj_hidden_dim": 2048,
        "temperature": 0.2,
    }

    cfg = gen_base_cfg("mv_simclr", batch_size=2, num_classes=100, num_large_crops=4)
    cfg.method_kwargs = method_kwargs
    model = MVSimCLR(cfg)

    # test arguments
    model.add_and_assert_specific_cfg(cfg)
    assert cfg.method_kwargs.num_views == 4
    assert not cfg.method_kwargs.filter.enabled

    # test parameters
    assert model.learnable_params is not None

    # test forward
    batch, _ = gen_batch(cfg.optimizer.batch_size, cfg.data.num_classes, "imagenet100")
    out = model(batch[1][0])
    assert (
        "logits" in out
        and isinstance(out["logits"], torch.Tensor)
        and out["logits"].size() == (cfg.optimizer.batch_size, cfg.data.num_classes)
    )
    assert (
        "feats" in out
        and isinstance(out["feats"], torch.Tensor)
        and out["feats"].size() == (cfg.optimizer.batch_size, model.features_dim)
    )
    assert (
        "z" in out
        and isinstance(out["z"], torch.Tensor)
        and out["z"].size() == (cfg.optimizer.batch_size, method_kwargs["proj_output_dim"])
    )

    multicrop_out = model.multicrop_forward(batch[1][0])
    assert (
        "z" in multicrop_out
        and isinstance(multicrop_out["z"], torch.Tensor)
        and multicrop_out["z"].size()
        == (cfg.optimizer.batch_size, method_kwargs["proj_output_dim"])
    )

    # imagenet, K = 4
    model = MVSimCLR(cfg)

    trainer = gen_trainer(cfg)
    train_dl, val_dl = prepare_dummy_dataloaders(
        "imagenet100",
        num_large_crops=cfg.data.num_large_crops,
        num_small_crops=0,
        num_classes=cfg.data.num_classes,
        batch_size=cfg.optimizer.batch_size,
    )
    trainer.fit(model, train_dl, val_dl)

    # cifar, K = 3, with the band filter
    cfg = gen_base_cfg("mv_simclr", batch_size=2, num_classes=10, num_large_crops=3)
    cfg.data.dataset = "cifar10"
    cfg.method_kwargs = dict(method_kwargs, filter={"enabled": True, "low": 0.1, "high": 0.9})
    model = MVSimCLR(cfg)

    trainer = gen_trainer(cfg)
    train_dl, val_dl = prepare_dummy_dataloaders(
        "cifar10",
        num_large_crops=cfg.data.num_large_crops,
        num_small_crops=0,
        num_classes=cfg.data.num_classes,
        batch_size=cfg.optimizer.batch_size,
    )
    trainer.fit(model, train_dl, val_dl)

    # multicrop
    cfg = gen_base_cfg("mv_simclr", batch_size=2, num_classes=100, num_large_crops=4)
    cfg.method_kwargs = method_kwargs
    cfg.data.num_small_crops = 2
    model = MVSimCLR(cfg)

    trainer = gen_trainer(cfg)
    train_dl, val_dl = prepare_dummy_dataloaders(
        "imagenet100",
        num_large_crops=cfg.data.num_large_crops,
        num_small_crops=cfg.data.num_small_crops,
        num_classes=cfg.data.num_classes,
        batch_size=cfg.optimizer.batch_size,
    )
    trainer.fit(model, train_dl, val_dl)
"""
)


LONG_TAIL_TEST = Template(
    """$header

import numpy as np
import pytest
from omegaconf import OmegaConf
from solo.args.pretrain import parse_cfg
from solo.data.long_tail import counts_by_rank, long_tail_files, long_tail_indexes
from solo.data.pretrain_dataloader import dataset_with_index, long_tail_subset
from torchvision.datasets import ImageFolder


def test_long_tail_counts():
    # CIFAR-10-LT and CIFAR-100-LT at imbalance ratio 100 (Cao et al., 2019)
    assert counts_by_rank("exp", 10, 5000, 100).sum() == 12406
    assert counts_by_rank("exp", 100, 500, 100).sum() == 10847
    assert counts_by_rank("exp", 10, 5000, 100)[[0, -1]].tolist() == [5000, 50]


def test_long_tail_indexes():
    targets = np.repeat(np.arange(10), 100)
    keep = long_tail_indexes(targets, 10, {"profile": "exp", "imbalance_ratio": 10})
    counts = np.bincount(targets[keep], minlength=10)
    assert counts[0] == 100 and counts[-1] == 10
    assert (np.diff(counts) <= 0).all()
    # same seed, same subset; nested subsets for smaller counts
    assert np.array_equal(
        keep, long_tail_indexes(targets, 10, {"profile": "exp", "imbalance_ratio": 10})
    )
    files, labels = long_tail_files(
        [f"{i}.png" for i in range(len(targets))], targets.tolist(), {"imbalance_ratio": 10}
    )
    assert len(files) == len(keep) and labels == targets[keep].tolist()
    with pytest.raises(ValueError):
        long_tail_indexes(targets, 10, {"profile": "unknown"})


def test_long_tail_subset(tmp_path):
    from PIL import Image

    for c in range(3):
        (tmp_path / f"class{c}").mkdir()
        for i in range(8):
            Image.new("RGB", (8, 8), (c * 80, i, 0)).save(tmp_path / f"class{c}" / f"{i}.png")
    dataset = dataset_with_index(ImageFolder)(tmp_path)
    dataset = long_tail_subset(dataset, {"profile": "exp", "imbalance_ratio": 4})
    assert np.bincount(dataset.targets).tolist() == [8, 4, 2]
    assert len(dataset) == 14 and dataset[13][0] == 13


def test_long_tail_cfg():
    cfg = OmegaConf.create(
        {
            "method": "mv_simclr",
            "data": {"dataset": "cifar10", "train_path": ".", "long_tail": {}},
            "augmentations": [{"crop_size": 32, "num_crops": 4}],
            "optimizer": {"name": "sgd", "batch_size": 256, "lr": 0.1},
            "devices": [0],
        }
    )
    OmegaConf.set_struct(cfg, False)
    cfg = parse_cfg(cfg)
    assert cfg.data.long_tail.profile == "exp"
    assert cfg.data.long_tail.imbalance_ratio == 100
    assert cfg.data.num_large_crops == 4
"""
)
