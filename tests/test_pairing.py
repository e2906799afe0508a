"""MTTV pairing: partner distribution, seeding across epochs/ranks/workers, crop order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch.utils.data import DataLoader

import solo_multiview.data.pairing as pairing
from solo_multiview.data.augmentations import EvalTransform
from solo_multiview.data.datasets import IndexedSubset
from solo_multiview.data.pairing import MTTVPairDataset, build_pair_transforms
from solo_multiview.data.sources import ArraySource

CLASS_COUNTS = [80, 40, 20, 10, 5]  # a long tail, 155 images
K = 3


def marked_base(seed: int = 0) -> IndexedSubset:
    """Image i is the constant i (so a crop tells which image it came from); long-tailed labels
    in shuffled order."""
    n = sum(CLASS_COUNTS)
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(5), CLASS_COUNTS))
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 4, 4, 3))
    return IndexedSubset(ArraySource(np.ascontiguousarray(images), labels), None, None)


def normal_marker(img) -> torch.Tensor:
    return torch.tensor([float(np.asarray(img)[0, 0, 0])])


def strong_marker(img) -> torch.Tensor:
    return normal_marker(img) + 1000


def marked(**kwargs) -> MTTVPairDataset:
    kwargs.setdefault("num_pairs", K)
    return MTTVPairDataset(marked_base(), strong_marker, normal_marker, **kwargs)


def test_crop_order_is_xn_ya_xa_yn():
    ds = marked(seed=1)
    index, crops, target = ds[17]
    partners = ds.partner_indexes(17).astype(float)
    values = torch.cat(crops).numpy()
    assert index == 17 and target == ds.targets[17] and len(crops) == 4 * K
    assert np.array_equal(values[:K], [17.0] * K)  # x_n
    assert np.array_equal(values[K:2 * K], partners + 1000)  # y_a
    assert np.array_equal(values[2 * K:3 * K], [1017.0] * K)  # x_a
    assert np.array_equal(values[3 * K:], partners)  # y_n


def test_partner_classes_follow_the_long_tail():
    ds = marked(seed=5)
    n = len(ds)
    draws = np.concatenate([ds.partner_indexes(i, epoch=e) for i in range(n) for e in range(40)])
    observed = np.bincount(ds.targets[draws], minlength=5)
    proportions = np.asarray(CLASS_COUNTS) / n
    assert chisquare(observed, proportions * len(draws)).pvalue > 1e-3
    # Power check: the same draws are far from class-balanced sampling.
    assert chisquare(observed, np.full(5, len(draws) / 5)).pvalue < 1e-12
    # Partners are drawn over the whole set, not only the anchor's class.
    assert len(np.unique(draws)) == n


def fraction_equal(ds: MTTVPairDataset, **override) -> float:
    """Share of items whose default draw equals the draw under ``override``."""
    same = [
        np.array_equal(ds.partner_indexes(i), ds.partner_indexes(i, **override))
        for i in range(len(ds))
    ]
    return float(np.mean(same))


def test_draws_differ_across_workers_ranks_epochs_and_seeds():
    ds = marked(seed=0)
    assert fraction_equal(ds, worker_id=1) < 0.05
    assert fraction_equal(ds, rank=1) < 0.05
    assert fraction_equal(ds, epoch=1) < 0.05
    assert fraction_equal(ds, worker_id=0, rank=0, epoch=0) == 1.0
    other = marked(seed=1)
    same = [np.array_equal(ds.partner_indexes(i), other.partner_indexes(i)) for i in range(len(ds))]
    assert np.mean(same) < 0.05


def test_same_seed_reproducible():
    a, b = marked(seed=9), marked(seed=9)
    a.set_epoch(4)
    b.set_epoch(4)
    for i in range(len(a)):
        assert np.array_equal(a.partner_indexes(i), b.partner_indexes(i))
        assert torch.equal(torch.cat(a[i][1]), torch.cat(b[i][1]))


def test_augmentations_are_seeded_by_seed_epoch_and_index():
    """Random transforms give the same crops for the same (seed, epoch, index), other crops in
    another epoch, with another seed or for another index, even where the partners are fixed."""
    def noisy(img) -> torch.Tensor:  # a random transform: the image's marker plus torch noise
        return normal_marker(img) + torch.rand(1)

    def crops(seed: int, epoch: int, index: int) -> torch.Tensor:
        ds = MTTVPairDataset(marked_base(), noisy, noisy, num_pairs=K, seed=seed,
                             partner="none")
        ds.set_epoch(epoch)
        return torch.cat(ds[index][1])

    first = crops(seed=4, epoch=0, index=11)
    torch.manual_seed(123)  # the global generator does not matter
    assert torch.equal(first, crops(seed=4, epoch=0, index=11))
    for other in (crops(4, 1, 11), crops(4, 2, 11), crops(5, 0, 11)):
        assert not torch.isclose(first, other).any()
    assert not torch.isclose(first - 11, crops(4, 0, 12) - 12).any()


def test_rank_comes_from_torch_distributed(monkeypatch):
    ds = marked(seed=0)
    monkeypatch.setattr(pairing, "_dist_rank", lambda: 3)
    assert np.array_equal(ds.partner_indexes(10), ds.partner_indexes(10, rank=3))
    assert not np.array_equal(ds.partner_indexes(10), ds.partner_indexes(10, rank=0))


def test_dataloader_workers_get_distinct_draws_and_see_set_epoch():
    ds = marked(seed=2)
    loader = DataLoader(ds, batch_size=5, num_workers=2, persistent_workers=True)
    for epoch in (0, 1):
        ds.set_epoch(epoch)  # after the workers exist (persistent): must still reach them
        for batch_no, (indexes, crops, _) in enumerate(loader):
            worker = batch_no % 2  # the loader hands batches to workers round-robin
            y_n = torch.stack(crops[3 * K:], dim=1).squeeze(-1).long().numpy()
            for row, i in enumerate(indexes.tolist()):
                expected = ds.partner_indexes(i, epoch=epoch, rank=0, worker_id=worker)
                assert np.array_equal(y_n[row], expected)


def test_partner_none_pairs_the_image_with_itself():
    ds = marked(partner="none")
    _, crops, _ = ds[7]
    values = torch.cat(crops).numpy()
    assert np.array_equal(ds.partner_indexes(7), [7] * K)
    assert np.array_equal(values[3 * K:], values[:K])  # y_n == x_n
    assert np.array_equal(values[K:2 * K], [1007.0] * K)  # y_a from x


def test_augmented_augmented_uses_the_strong_pipeline_everywhere():
    ds = marked(views="augmented_augmented", seed=3)
    values = torch.cat(ds[4][1]).numpy()
    partners = ds.partner_indexes(4)
    assert np.array_equal(values[:K], [1004.0] * K)
    assert np.array_equal(values[3 * K:], partners + 1000)


def test_real_transforms_shapes_and_normalised_views():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
    base = IndexedSubset(ArraySource(images, np.arange(20) % 4), np.arange(2, 20), None)
    entry = {"rrc": {"enabled": True, "crop_min_scale": 0.2, "crop_max_scale": 1.0},
             "color_jitter": {"prob": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4,
                              "hue": 0.1},
             "grayscale": {"prob": 0.2}, "gaussian_blur": {"prob": 0.5},
             "horizontal_flip": {"prob": 0.5}, "crop_size": 32, "num_crops": 1}
    strong, normal = build_pair_transforms(entry, "cifar10")
    ds = MTTVPairDataset(base, strong, normal, num_pairs=2, seed=0)
    index, crops, target = ds[3]
    assert len(crops) == 8
    assert all(c.shape == (3, 32, 32) and c.dtype == torch.float32 for c in crops)
    reference = EvalTransform(32, "cifar10")
    x = reference(base.load_image(3))
    assert torch.equal(crops[0], x) and torch.equal(crops[1], x)
    for k, j in enumerate(ds.partner_indexes(3).tolist()):
        assert torch.equal(crops[6 + k], reference(base.load_image(j)))
    indexes, batch, _ = next(iter(DataLoader(ds, batch_size=4)))
    assert indexes.tolist() == [0, 1, 2, 3] and batch[0].shape == (4, 3, 32, 32)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [({"num_pairs": 0}, "num_pairs"), ({"partner": "class"}, "partner"),
     ({"views": "normal"}, "views")],
)
def test_invalid_options_rejected(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        marked(**kwargs)
