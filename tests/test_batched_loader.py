"""The device batch loader (``data/batched/loader.py``): batch contract, true indexes, per-rank
shards (DistributedSampler(drop_last=True) order), seeding across epochs and ranks, CPU worker
processes, MTTV pairs (crop order, normalised views, partner draws), JPEG decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from solo_multiview.data.augmentations import EvalTransform
from solo_multiview.data.batched import (
    DeviceBatchLoader,
    decode_jpeg_files,
    list_image_folder,
    normalized_view,
)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
SIZE = 103  # not a multiple of the batch or of the world size: remainders get dropped
COUNTS = (60, 30, 13)  # long-tailed classes


def entry(crop_size: int = 16, num_crops: int = 2, **ops) -> dict:
    base = {
        "rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
        "color_jitter": {"prob": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2,
                         "hue": 0.1},
        "grayscale": {"prob": 0.2},
        "gaussian_blur": {"prob": 0.5},
        "solarization": {"prob": 0.1},
        "equalization": {"prob": 0.0},
        "horizontal_flip": {"prob": 0.5},
        "crop_size": crop_size,
        "num_crops": num_crops,
    }
    base.update(ops)
    return base


def data(size: int = SIZE, side: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, targets, true indexes): random uint8 images, long-tailed targets, and true
    indexes that are not the row numbers (as after a long-tail selection)."""
    g = torch.Generator()
    g.manual_seed(0)
    images = torch.randint(0, 256, (size, 3, side, side), generator=g, dtype=torch.uint8)
    targets = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])[:size]
    return images, targets, 1000 + 3 * torch.arange(size)


def loader(batch_size: int = 10, augs=None, **kwargs) -> DeviceBatchLoader:
    images, targets, indexes = data()
    augs = [entry(16, 2), entry(8, 3)] if augs is None else augs
    return DeviceBatchLoader(images, targets, augs, "cifar10", batch_size, indexes=indexes,
                             seed=kwargs.pop("seed", 3), **kwargs)


def rows_of(indexes: torch.Tensor) -> torch.Tensor:
    return (indexes - 1000) // 3


def test_batch_contract_large_crops_first_true_indexes():
    ld = loader()
    images, targets, _ = data()
    batches = list(ld)
    assert len(batches) == len(ld) == SIZE // 10
    for indexes, crops, batch_targets in batches:
        assert indexes.dtype == torch.int64 and batch_targets.dtype == torch.int64
        assert [tuple(c.shape) for c in crops] == [(10, 3, 16, 16)] * 2 + [(10, 3, 8, 8)] * 3
        assert all(c.dtype == torch.float32 and torch.isfinite(c).all() for c in crops)
        assert torch.equal(batch_targets, targets[rows_of(indexes)])
    seen = torch.cat([b[0] for b in batches])
    assert len(set(seen.tolist())) == len(seen)  # each image at most once per epoch


def test_one_rank_order_is_the_torchvision_paths():
    """Epoch e's order is torch.randperm(N) seeded seed + e: the torchvision path's EpochSampler
    (one rank), cut to full batches."""
    ld = loader()
    ld.set_epoch(4)
    g = torch.Generator()
    g.manual_seed(3 + 4)
    expected = torch.randperm(SIZE, generator=g)[:100]
    assert torch.equal(torch.cat([rows_of(b[0]) for b in ld]), expected)


def test_two_ranks_shards_are_disjoint_and_cover_all_but_the_remainder():
    per_rank = {}
    for rank in (0, 1):
        ld = loader(batch_size=10, rank=rank, world_size=2)
        ld.set_epoch(2)
        per_rank[rank] = torch.cat([rows_of(b[0]) for b in ld])
        assert len(ld) == (SIZE // 2) // 10  # 5 full batches each; every rank the same count
        sampler = DistributedSampler(range(SIZE), num_replicas=2, rank=rank, shuffle=True,
                                     seed=3, drop_last=True)
        sampler.set_epoch(2)
        assert per_rank[rank].tolist() == list(sampler)[:50]
    both = set(per_rank[0].tolist()) | set(per_rank[1].tolist())
    assert not set(per_rank[0].tolist()) & set(per_rank[1].tolist())
    remainder = SIZE - 2 * 10 * 5
    assert len(both) == SIZE - remainder


def test_same_seed_and_epoch_reproduce_other_epochs_and_ranks_differ():
    a, b = loader(), loader()
    first_a, first_b = next(iter(a)), next(iter(b))
    assert torch.equal(first_a[0], first_b[0])
    assert all(torch.equal(x, y) for x, y in zip(first_a[1], first_b[1]))
    b.set_epoch(1)
    other = next(iter(b))
    assert not torch.equal(first_a[0], other[0])  # new order
    rows = rows_of(first_a[0])
    again = b.make_batch(rows, epoch=1, rank=0, batch=0)  # the same images in epoch 1
    assert not torch.equal(first_a[1][0], again[1][0])  # new crops
    same = b.make_batch(rows, epoch=0, rank=0, batch=0)
    assert torch.equal(first_a[1][0], same[1][0])
    assert not torch.equal(b.make_batch(rows, 0, 1, 0)[1][0], same[1][0])  # rank matters
    assert not torch.equal(b.make_batch(rows, 0, 0, 1)[1][0], same[1][0])  # batch matters
    seeded = loader(seed=4)
    assert not torch.equal(next(iter(seeded))[0], first_a[0])


def test_epoch_advances_by_itself_unless_set():
    ld = loader()
    assert ld.epoch == 0
    list(ld)
    assert ld.epoch == 1
    ld.sampler.set_epoch(7)  # what Lightning calls
    iterator = iter(ld)
    next(iterator)
    assert ld.epoch == 7


def test_worker_processes_give_the_same_batches():
    plain = list(loader(batch_size=25))
    workers = list(loader(batch_size=25, num_workers=2))
    assert len(plain) == len(workers) == 4
    for (i, c, t), (wi, wc, wt) in zip(plain, workers):
        assert torch.equal(i, wi) and torch.equal(t, wt)
        assert all(torch.equal(x, y) for x, y in zip(c, wc))


# ---------------------------------------------------------------------------------- pairs
def pairs(k: int = 3, **kwargs) -> DeviceBatchLoader:
    return loader(batch_size=kwargs.pop("batch_size", 10), augs=[entry(16, 1)], mode="pairs",
                  num_pairs=k, **kwargs)


def test_pairs_order_normalised_views_and_partners():
    k = 3
    ld = pairs(k)
    images, _, _ = data()
    indexes, crops, targets = next(iter(ld))
    assert len(crops) == 4 * k and all(c.shape == (10, 3, 16, 16) for c in crops)
    rows = rows_of(indexes)
    x_n = normalized_view(images[rows], 16, CIFAR10_MEAN, CIFAR10_STD)
    eval_transform = EvalTransform(16, "cifar10")
    pil = Image.fromarray(images[rows[0]].permute(1, 2, 0).numpy())
    assert torch.equal(x_n[0], eval_transform(pil))  # the torchvision path's normalised view
    partners = ld.partner_rows(rows, epoch=0, rank=0, batch=0)
    assert partners.shape == (10, k)
    for j in range(k):
        assert torch.equal(crops[j], x_n)  # x_n^j: the anchor, normalised only
        y_n = normalized_view(images[partners[:, j]], 16, CIFAR10_MEAN, CIFAR10_STD)
        assert torch.equal(crops[3 * k + j], y_n)  # y_n^j: partner j, normalised only
        assert not torch.equal(crops[k + j], y_n)  # y_a^j: partner j augmented
        assert not torch.equal(crops[2 * k + j], x_n)  # x_a^j: the anchor augmented
    assert not torch.equal(crops[2 * k], crops[2 * k + 1])  # different augmentations


def test_partner_none_pairs_an_anchor_with_itself():
    ld = pairs(2, partner="none")
    indexes, crops, _ = next(iter(ld))
    rows = rows_of(indexes)
    assert torch.equal(ld.partner_rows(rows, 0, 0, 0), rows[:, None].expand(-1, 2))
    for j in range(2):
        assert torch.equal(crops[6 + j], crops[j])  # y_n = x_n


def test_augmented_augmented_views():
    images, _, _ = data()
    ld = pairs(2, views="augmented_augmented")
    indexes, crops, _ = next(iter(ld))
    x_n = normalized_view(images[rows_of(indexes)], 16, CIFAR10_MEAN, CIFAR10_STD)
    assert len(crops) == 8 and not torch.equal(crops[0], x_n)
    assert not torch.equal(crops[0], crops[1])


def test_partners_uniform_over_the_whole_long_tailed_set():
    """Partners come from every row (both ranks' shards), at the set's class frequencies."""
    _, targets, _ = data()
    drawn = []
    for rank in (0, 1):
        ld = pairs(4, batch_size=25, rank=rank, world_size=2)
        for epoch in range(6):
            rows = ld.epoch_rows(epoch, rank, 2)
            for b, batch_rows in enumerate(rows.split(25)):
                partners = ld.partner_rows(batch_rows, epoch, rank, b)
                assert torch.equal(partners, ld.partner_rows(batch_rows, epoch, rank, b))
                drawn.append(partners.reshape(-1))
    drawn = torch.cat(drawn)  # 2 ranks x 6 epochs x 2 batches x 25 x 4 = 2,400 draws
    assert len(set(drawn.tolist())) > 0.95 * SIZE
    freq = torch.bincount(targets[drawn], minlength=3).double() / len(drawn)
    assert torch.allclose(freq, torch.tensor(COUNTS, dtype=torch.float64) / SIZE, atol=0.04)


# ---------------------------------------------------------------------------------- errors
def test_bad_arguments():
    images, targets, _ = data()
    with pytest.raises(ValueError, match="larger than a rank's share"):
        len(loader(batch_size=60, rank=0, world_size=2))
    with pytest.raises(ValueError, match="uint8"):
        DeviceBatchLoader(images.float(), targets, [entry()], "x", 4)
    with pytest.raises(ValueError, match="mode"):
        DeviceBatchLoader(images, targets, [entry()], "x", 4, mode="triplets")
    with pytest.raises(ValueError, match="targets and indexes"):
        DeviceBatchLoader(images, targets[:5], [entry()], "x", 4)
    with pytest.raises(ValueError, match="partner"):
        DeviceBatchLoader(images, targets, [entry()], "x", 4, mode="pairs", partner="class")
    with pytest.raises(ValueError, match="num_workers"):
        DeviceBatchLoader(images, targets, [entry()], "x", 4, num_workers=-1)
    with pytest.raises(ValueError, match="large crop"):
        DeviceBatchLoader(images, targets, [entry(8), entry(16)], "x", 4)


# ---------------------------------------------------------------------------------- decoding
def write_jpegs(root: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate(sizes):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def test_decode_jpeg_files(tmp_path):
    import torchvision

    same = write_jpegs(tmp_path / "same", [(12, 12)] * 5)
    decoded = decode_jpeg_files(same, chunk_size=2)
    assert decoded.shape == (5, 3, 12, 12) and decoded.dtype == torch.uint8
    for i, path in enumerate(same):
        assert torch.equal(decoded[i], torchvision.io.decode_jpeg(torchvision.io.read_file(
            str(path)), mode=torchvision.io.ImageReadMode.RGB))
    mixed = write_jpegs(tmp_path / "mixed", [(12, 12), (20, 14), (14, 30)])
    with pytest.raises(ValueError, match="different shapes"):
        decode_jpeg_files(mixed)
    fitted = decode_jpeg_files(mixed, size=10)
    assert fitted.shape == (3, 3, 10, 10)
    files, labels = list_image_folder(tmp_path / "same")
    assert [f.name for f in files] == ["000.jpg", "002.jpg", "004.jpg", "001.jpg", "003.jpg"]
    assert labels == [0, 0, 0, 1, 1]
    ld = DeviceBatchLoader(decode_jpeg_files(files), labels, [entry(12, 1)], "x", 2)
    assert [c.shape for c in next(iter(ld))[1]] == [(2, 3, 12, 12)]
