"""DALI loader on DALI's CPU path: batch contract, parity with the torchvision path (true indexes,
normalisation, long-tail selection), shards, epochs, MTTV pairing, split-list errors, training."""

from __future__ import annotations

import builtins
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from solo_multiview.data.dali.backend import dali_available

if not dali_available():
    pytest.skip('nvidia.dali is not importable (pip install -e ".[dali]")',
                allow_module_level=True)

from solo_multiview.data.augmentations import EvalTransform, build_transform  # noqa: E402
from solo_multiview.data.dali import (  # noqa: E402
    DaliPretrainLoader,
    PairingSpec,
    build_dali_pretrain_loader,
    parse_augmentations,
)
from solo_multiview.data.dali.backend import require_dali  # noqa: E402
from solo_multiview.data.datasets import IndexedSubset, build_pretrain_dataset  # noqa: E402
from solo_multiview.data.pairing import MTTVPairDataset  # noqa: E402
from solo_multiview.data.sources import ArraySource  # noqa: E402
from solo_multiview.training.pretrain import fit, prepare_pretrain  # noqa: E402
from tests.helpers import ops_off_entry, tiny_cfg  # noqa: E402

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


aug = ops_off_entry  # an entry with every random op off unless given


def array_loader(images, labels, entries, batch, dataset="cifar10", indexes=None, **kwargs):
    source = ArraySource(np.ascontiguousarray(images), np.asarray(labels))
    indexes = np.arange(len(source)) if indexes is None else indexes
    kwargs.setdefault("device", "cpu")
    return DaliPretrainLoader(source, indexes, parse_augmentations(entries, dataset), batch,
                              **kwargs)


def write_image_list(folder: Path, images: np.ndarray, labels, suffix=".png") -> Path:
    """Images as files under folder/c<label>/, and the split list folder/train.txt."""
    lines = []
    for i, (image, label) in enumerate(zip(images, labels)):
        rel = Path(f"c{label}") / f"img {i:03d}{suffix}"  # a space: the label is the last field
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / rel, quality=95)
        lines.append(f"{rel.as_posix()} {label}")
    split = folder / "train.txt"
    split.write_text("\n".join(lines) + "\n")
    return split


def image_list_cfg(tmp_path: Path, root: Path, split: Path, overrides=(), **long_tail) -> Any:
    """The tiny digits config turned into an image list under ``root`` (profile none unless
    ``long_tail`` says otherwise), augmentation off."""
    cfg = tiny_cfg(tmp_path, overrides=list(overrides))
    cfg.data.dataset = "image_list"
    cfg.data.train_path = str(root)
    cfg.data.long_tail.update({"profile": "none", "split_file": str(split), **long_tail})
    cfg.augmentations = [aug(16)]
    return cfg


def levels(crops: torch.Tensor, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> torch.Tensor:
    """Normalised crops back to 0..255 pixel levels."""
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return (crops * s + m) * 255


def epoch_indexes(loader) -> list[torch.Tensor]:
    return [indexes for indexes, _, _ in loader]


# ---------------------------------------------------------------------------- batch contract
def test_batch_contract_sizes_dtypes_and_targets(tmp_path):
    cfg = tiny_cfg(tmp_path, num_views=3, small_crops=2)
    loader = build_dali_pretrain_loader(cfg)
    reference = build_pretrain_dataset(cfg, None)  # the torchvision path's training set
    assert len(loader) == len(reference) // 16
    indexes, crops, targets = next(iter(loader))
    assert indexes.dtype == torch.int64 and indexes.shape == (16,)
    assert len(indexes.unique()) == 16 and indexes.min() >= 0 and indexes.max() < len(reference)
    assert targets.dtype == torch.int64
    assert torch.equal(targets, torch.from_numpy(reference.targets)[indexes])
    assert [tuple(c.shape) for c in crops] == [(16, 3, 16, 16)] * 3 + [(16, 3, 8, 8)] * 2
    assert all(c.dtype == torch.float32 and c.is_contiguous() for c in crops)
    assert all(torch.isfinite(c).all() for c in crops)
    # K large crops of one image are different random crops
    assert not torch.equal(crops[0], crops[1])


@pytest.mark.parametrize("ops,expected", [
    # crop, blur, flip keep a constant image constant; solarize inverts levels >= 128
    ({"rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
      "gaussian_blur": {"prob": 1.0}, "horizontal_flip": {"prob": 0.5},
      "solarization": {"prob": 1.0}}, (55, 100, 50)),
    # grey level 0.299 * 200 + 0.587 * 100 + 0.114 * 50 = 124.2 in every channel
    ({"rrc": {"enabled": True}, "grayscale": {"prob": 1.0}}, (124, 124, 124)),
])
@pytest.mark.parametrize("stats", ["cifar10", "explicit"])
def test_constant_image_matches_torchvision(ops, expected, stats):
    entry = aug(16, 2, **ops)
    if stats == "explicit":
        entry.update({"mean": [0.5, 0.25, 0.125], "std": [0.2, 0.4, 0.1]})
    image = np.empty((24, 24, 3), dtype=np.uint8)
    image[...] = (200, 100, 50)
    loader = array_loader(np.stack([image] * 8), np.zeros(8, int), [entry], 4)
    _, crops, _ = next(iter(loader))
    reference = build_transform(entry, "cifar10")(Image.fromarray(image))
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if stats == "cifar10" else (entry["mean"],
                                                                          entry["std"])
    independent = (torch.tensor(expected, dtype=torch.float32) / 255 - torch.tensor(mean)) \
        / torch.tensor(std)
    for crop in crops:
        for one in crop:
            torch.testing.assert_close(one, reference, atol=1e-5, rtol=0)
            torch.testing.assert_close(one, independent.view(3, 1, 1).expand(3, 16, 16),
                                       atol=1e-5, rtol=0)


@pytest.mark.parametrize("prob", [0.0, 0.2, 0.7, 1.0])
def test_flip_rate_is_the_configured_probability_in_both_pipelines(prob):
    """A left-to-right ramp shows each flip; over 384 DALI crops (and 384 torchvision ones)
    the flip rate is ``prob`` within 4.5 binomial standard deviations (a rate of 0.5 whatever
    the setting is caught at 0.2 and 0.7)."""
    image = np.broadcast_to((np.arange(16) * 15)[None, :, None], (16, 16, 3)).astype(np.uint8)
    entry = aug(16, 2, horizontal_flip={"prob": prob}, mean=[0, 0, 0], std=[1, 1, 1])

    def flipped(crop: torch.Tensor) -> bool:
        return bool(crop[0, 0, 0] > crop[0, 0, -1])

    loader = array_loader(np.stack([image] * 64), np.zeros(64, int), [entry], 32, seed=3)
    dali = [flipped(one) for _ in range(3) for _, crops, _ in loader
            for crop in crops for one in crop]
    transform = build_transform(entry, "cifar10")
    torch.manual_seed(3)
    plain = [flipped(transform(Image.fromarray(image))) for _ in range(len(dali))]
    tolerance = 4.5 * math.sqrt(max(prob * (1 - prob), 1e-12) / len(dali))
    assert len(dali) == 384
    for flips in (dali, plain):
        assert abs(np.mean(flips) - prob) <= tolerance, (np.mean(flips), prob)


@pytest.mark.parametrize("op,arithmetic", [("brightness", False), ("contrast", False),
                                           ("contrast", True), ("saturation", False)])
@pytest.mark.parametrize("factor", [0.4, 1.6])
def test_jitter_factor_matches_torchvision_functional(monkeypatch, op, arithmetic, factor):
    """With the random factor pinned, DALI's brightness/contrast/saturation equal torchvision's
    adjust_* within rounding; contrast pivots on the image's mean grey (dark and bright
    images: a pivot at 128 would be tens of levels off), also in the arithmetic form that the
    GPU runs."""
    import nvidia.dali.fn as dali_fn

    from solo_multiview.data.dali import augment

    monkeypatch.setattr(augment, "CONTRAST_CENTER_ARGUMENT", not arithmetic)
    monkeypatch.setattr(augment, "_uniform", lambda low, high: dali_fn.random.uniform(
        range=[factor, factor + 1e-7]))
    rng = np.random.default_rng(2)
    ramp = np.arange(16)[None, :, None] * np.array([1, 2, 3])
    images = np.stack([np.clip(base + 3 * ramp + rng.normal(0, 10, (16, 16, 3)), 0, 255)
                       for base in (20, 60, 120, 180)]).astype(np.uint8)
    jitter = {"prob": 1.0, "brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0,
              op: 0.8}
    entry = aug(16, color_jitter=jitter, mean=[0, 0, 0], std=[1, 1, 1])
    indexes, crops, _ = next(iter(array_loader(images, np.zeros(4, int), [entry], 4)))
    adjust = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast,
              "saturation": TF.adjust_saturation}[op]
    for crop, i in zip(crops[0], indexes):
        expected = np.asarray(adjust(Image.fromarray(images[i]), factor)).astype(int)
        got = np.rint(crop.permute(1, 2, 0).numpy() * 255).astype(int)
        assert np.abs(got - expected).max() <= 1


@pytest.mark.parametrize("arithmetic", [False, True])
def test_brightness_and_contrast_clamp_in_either_order_as_torchvision(monkeypatch, arithmetic):
    """On white strokes on black, brightening by 1.4 clips the strokes at 255 before a contrast
    of 0.75, the other order does not: every DALI crop equals torchvision's brightness-then-
    contrast or contrast-then-brightness (within a level), and both orders occur."""
    import nvidia.dali.fn as dali_fn

    from solo_multiview.data.dali import augment

    pinned = {0.5: 1.4, 0.7: 0.75}  # brightness range (0.5, 1.5), contrast range (0.7, 1.3)
    monkeypatch.setattr(augment, "CONTRAST_CENTER_ARGUMENT", not arithmetic)
    monkeypatch.setattr(augment, "_uniform", lambda low, high: dali_fn.random.uniform(
        range=[pinned[round(low, 3)], pinned[round(low, 3)] + 1e-5]))
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[:, ::4] = 200
    image[:, 1::4] = 255
    jitter = {"prob": 1.0, "brightness": 0.5, "contrast": 0.3, "saturation": 0.0, "hue": 0.0}
    entry = aug(16, 2, color_jitter=jitter, mean=[0, 0, 0], std=[1, 1, 1])
    loader = array_loader(np.stack([image] * 32), np.zeros(32, int), [entry], 16, seed=1)
    pil = Image.fromarray(image)
    orders = [np.asarray(TF.adjust_contrast(TF.adjust_brightness(pil, 1.4), 0.75)).astype(int),
              np.asarray(TF.adjust_brightness(TF.adjust_contrast(pil, 0.75), 1.4)).astype(int)]
    assert np.abs(orders[0] - orders[1]).max() > 10  # the clip shows
    seen = []
    for _, crops, _ in loader:
        for crop in torch.cat(crops):
            got = np.rint(crop.permute(1, 2, 0).numpy() * 255).astype(int)
            errors = [np.abs(got - expected).max() for expected in orders]
            assert min(errors) <= 1, errors
            seen.append(int(np.argmin(errors)))
    assert len(seen) == 64 and 0 < sum(seen) < 64


@pytest.mark.parametrize("size", [16, 48])  # blur windows 3 and 5
@pytest.mark.parametrize("sigma", [0.6, 1.7])
@pytest.mark.parametrize("blur_filter", [True, False])
def test_blur_matches_torchvision_functional(monkeypatch, size, sigma, blur_filter):
    """With sigma pinned, DALI's blur (the CPU's fn.filter with the kernel built in the graph,
    and fn.gaussian_blur, which the GPU runs) equals torchvision's gaussian_blur of the same
    window and sigma within one level, borders included; a wrong sigma, window or border is
    tens of levels off on a noisy image."""
    import nvidia.dali.fn as dali_fn

    from solo_multiview.data.augmentations import blur_kernel_size
    from solo_multiview.data.dali import augment

    monkeypatch.setattr(augment, "BLUR_FILTER", blur_filter)
    monkeypatch.setattr(augment, "_uniform", lambda low, high: dali_fn.random.uniform(
        range=[sigma, sigma + 1e-5]))
    images = np.random.default_rng(4).integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    entry = aug(size, gaussian_blur={"prob": 1.0}, mean=[0, 0, 0], std=[1, 1, 1])
    indexes, crops, _ = next(iter(array_loader(images, np.zeros(4, int), [entry], 4)))
    window = blur_kernel_size(size)
    for crop, i in zip(crops[0], indexes):
        expected = np.asarray(TF.gaussian_blur(Image.fromarray(images[i]), [window] * 2,
                                               [sigma] * 2)).astype(int)
        got = np.rint(crop.permute(1, 2, 0).numpy() * 255).astype(int)
        assert np.abs(got - expected).max() <= 1
        assert np.abs(got - images[i]).mean() > 5  # it blurred


# ---------------------------------------------------------------------------- true indexes
def test_arrays_without_augmentation_equal_eval_transform_at_the_indexes(tmp_path):
    """digits-LT (positions != source indexes): crop i is EvalTransform(dataset[indexes[i]])."""
    cfg = tiny_cfg(tmp_path)
    cfg.augmentations = [aug(16, 2)]
    loader = build_dali_pretrain_loader(cfg)
    dataset = build_pretrain_dataset(cfg, EvalTransform(16, "digits"))
    assert not np.array_equal(dataset.source_indexes, np.arange(len(dataset)))
    for indexes, crops, targets in list(loader)[:3]:
        expected = torch.stack([dataset[int(i)][1] for i in indexes])
        for crop in crops:
            torch.testing.assert_close(crop, expected, atol=1e-5, rtol=0)
        assert torch.equal(targets, torch.tensor([dataset[int(i)][2] for i in indexes]))


def test_resized_arrays_match_eval_transform_up_to_resampling():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 20, 20, 3), dtype=np.uint8)
    kept = np.arange(0, 30, 3)  # a subset: position p is source image 3p
    loader = array_loader(images, np.arange(30) % 3, [aug(16)], 5, indexes=kept)
    dataset = IndexedSubset(ArraySource(images, np.arange(30) % 3), kept,
                            EvalTransform(16, "cifar10"))
    indexes, crops, _ = next(iter(loader))
    expected = torch.stack([dataset[int(i)][1] for i in indexes])
    diff = (levels(crops[0]) - levels(expected)).abs()
    assert diff.mean() < 2.0 and diff.max() < 25  # cubic resampling: DALI's vs PIL's
    # the wrong image would be far off (random images differ by ~85 levels on average)
    wrong = torch.stack([dataset[(int(i) + 1) % len(kept)][1] for i in indexes])
    assert (levels(crops[0]) - levels(wrong)).abs().mean() > 40


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_file_reader_without_augmentation_equals_eval_transform(tmp_path, suffix):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(3), [12, 8, 4])
    root = tmp_path / "images"
    split = write_image_list(root, images, labels, suffix)
    cfg = image_list_cfg(tmp_path, root, split, ["optimizer.batch_size=4"], profile="exp",
                         imbalance_ratio=4)
    loader = build_dali_pretrain_loader(cfg)
    assert loader.uses_reader
    dataset = build_pretrain_dataset(cfg, EvalTransform(16, "image_list"))
    assert np.array_equal(loader.source_indexes, dataset.source_indexes)
    assert len(dataset) < 24  # the long-tail selection dropped images
    seen = []
    for indexes, crops, targets in loader:
        expected = torch.stack([dataset[int(i)][1] for i in indexes])
        imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        diff = (levels(crops[0], *imagenet) - levels(expected, *imagenet)).abs()
        # PNG is lossless; DALI and PIL both decode JPEG with libjpeg(-turbo)
        assert diff.max() < (1e-3 if suffix == ".png" else 3.0)
        assert torch.equal(targets, torch.tensor([dataset[int(i)][2] for i in indexes]))
        seen.append(indexes)
    assert len(torch.cat(seen).unique()) == len(loader) * 4


# ---------------------------------------------------------------------------- long tail
@pytest.mark.parametrize("overrides", [
    [], ["data.long_tail.seed=3", "data.long_tail.class_order=permuted"],
    ["data.long_tail.profile=step", "data.long_tail.imbalance_ratio=5"],
])
def test_long_tail_selection_is_the_torchvision_one(tmp_path, overrides):
    cfg = tiny_cfg(tmp_path, overrides=overrides)
    loader = build_dali_pretrain_loader(cfg)
    dataset = build_pretrain_dataset(cfg, None)
    assert np.array_equal(loader.source_indexes, dataset.source_indexes)
    assert np.array_equal(loader.targets, dataset.targets)
    assert np.array_equal(loader.class_counts, dataset.class_counts)
    assert loader.dataset_size == len(dataset) < 1397  # the long tail dropped images


# ---------------------------------------------------------------------------- shards, epochs
@pytest.mark.parametrize("pipelines", [1, 2])
def test_two_array_shards_are_disjoint_and_cover_each_epoch(tmp_path, pipelines):
    cfg = tiny_cfg(tmp_path, overrides=["++dali.num_threads=2", f"++dali.pipelines={pipelines}"])
    # digits-LT: 544 images = 2 ranks x 17 batches x 16
    ranks = [build_dali_pretrain_loader(cfg, shard_id=r, num_shards=2) for r in (0, 1)]
    assert ranks[0].dataset_size == 544 and [len(r) for r in ranks] == [17, 17]
    assert ranks[0].num_pipelines == pipelines
    orders = []
    for _ in range(2):
        seen = [torch.cat(epoch_indexes(rank)) for rank in ranks]
        assert len(set(seen[0].tolist()) & set(seen[1].tolist())) == 0
        assert sorted(torch.cat(seen).tolist()) == list(range(544))
        orders.append(seen[0])
    assert not torch.equal(orders[0], orders[1])  # reshuffled
    # the order is the sampler's: the same whatever the number of pipelines
    ranks[0].set_epoch(0)
    assert torch.equal(torch.cat(epoch_indexes(ranks[0])), orders[0])
    expected = ranks[0].sampler.epoch_order(0, 0, 2)
    assert torch.equal(orders[0], torch.from_numpy(expected))


@pytest.mark.parametrize("pipelines", [1, 2])
def test_two_reader_shards_are_disjoint_every_epoch(tmp_path, pipelines):
    """26 files, batch 3, 2 ranks (and P readers per rank, each on its part of the rank's
    shard): 4 batches per rank and epoch, disjoint across ranks; the readers' padding batches
    are skipped so every epoch starts on a fresh shuffle."""
    n = 26
    images = np.ascontiguousarray(np.broadcast_to(
        np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 4, 4, 3)))
    root = tmp_path / "images"
    split = write_image_list(root, images, np.arange(n) % 2)
    cfg = image_list_cfg(tmp_path, root, split, [
        "optimizer.batch_size=3", "++dali.num_threads=2", f"++dali.pipelines={pipelines}"])
    cfg.augmentations = [aug(4, mean=[0, 0, 0], std=[1, 1, 1])]
    ranks = [build_dali_pretrain_loader(cfg, shard_id=r, num_shards=2) for r in (0, 1)]
    assert [len(r) for r in ranks] == [4, 4] and all(r.uses_reader for r in ranks)
    epochs = []
    for _ in range(3):
        seen = []
        for rank in ranks:
            indexes = []
            for batch_indexes, crops, _ in rank:
                # the pixels show which file was read: file i is the constant i
                assert torch.equal(torch.round(crops[0][:, 0, 0, 0] * 255),
                                   batch_indexes.float())
                indexes += batch_indexes.tolist()
            seen.append(indexes)
        assert [len(s) for s in seen] == [12, 12] and all(len(set(s)) == 12 for s in seen)
        assert not set(seen[0]) & set(seen[1])
        epochs.append(seen)
    assert epochs[0] != epochs[1] != epochs[2]
    assert sorted(epochs[0][0]) != list(range(12))  # epoch 0 is shuffled, not in list order


def test_reader_index_is_the_file_it_read(tmp_path):
    images = np.repeat(np.arange(0, 240, 20, dtype=np.uint8)[:, None, None, None], 4, axis=1)
    images = np.ascontiguousarray(np.broadcast_to(images, (12, 4, 4, 3)))
    root = tmp_path / "images"
    split = write_image_list(root, images, np.arange(12) % 3)
    cfg = image_list_cfg(tmp_path, root, split, ["optimizer.batch_size=4"])
    cfg.augmentations = [aug(4, mean=[0, 0, 0], std=[1, 1, 1])]
    for indexes, crops, targets in build_dali_pretrain_loader(cfg):
        assert torch.equal(torch.round(crops[0][:, 0, 0, 0] * 255), indexes.float() * 20)
        assert torch.equal(targets, indexes % 3)


def test_epochs_reshuffle_replay_and_recover_from_an_abandoned_epoch():
    images = np.zeros((40, 4, 4, 3), dtype=np.uint8)
    loader = array_loader(images, np.zeros(40, int), [aug(4)], 8)
    first, second = torch.cat(epoch_indexes(loader)), torch.cat(epoch_indexes(loader))
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(40))
    assert not torch.equal(first, second)
    loader.sampler.set_epoch(0)  # what Lightning does before each epoch (and after a resume)
    assert torch.equal(torch.cat(epoch_indexes(loader)), first)
    next(iter(loader))  # leave epoch 1 after one batch (e.g. max_steps)
    assert len(epoch_indexes(loader)) == len(loader) == 5


# ---------------------------------------------------------------------------- MTTV
def marked_images(n: int) -> np.ndarray:
    """Image i is the constant 128 + i: the normalised-only view shows 128 + i, the strong view
    (solarization with p = 1) 255 - (128 + i) = 127 - i."""
    values = (128 + np.arange(n)).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(values[:, None, None, None], (n, 8, 8, 3)))


def marker_values(crop: torch.Tensor) -> np.ndarray:
    return np.rint(crop[:, 0, 0, 0].numpy() * 255).astype(int)


@pytest.mark.parametrize("kind", ["arrays", "arrays-2-pipelines", "files"])
@pytest.mark.parametrize("partner,views", [
    ("image", "normalized_augmented"), ("none", "normalized_augmented"),
    ("image", "augmented_augmented")])
def test_mttv_crop_order_and_partner_draws(tmp_path, kind, partner, views):
    n, k, batch = 40, 3, 8
    images = marked_images(n)
    labels = np.repeat(np.arange(4), [20, 10, 6, 4])
    entry = aug(8, solarization={"prob": 1.0}, mean=[0, 0, 0], std=[1, 1, 1])
    spec = PairingSpec(num_pairs=k, partner=partner, views=views, seed=7)
    if kind.startswith("arrays"):
        loader = array_loader(images, labels, [entry], batch, pairing=spec, seed=7,
                              num_threads=2, pipelines=2 if kind.endswith("pipelines") else 1)
    else:
        split = write_image_list(tmp_path, images, labels)
        cfg = image_list_cfg(tmp_path, tmp_path, split, [
            "method=mttv", f"++method_kwargs.num_views={k}", f"++method_kwargs.partner={partner}",
            f"++method_kwargs.views={views}", "seed=7", f"optimizer.batch_size={batch}"])
        cfg.augmentations = [entry]
        loader = build_dali_pretrain_loader(cfg)
        assert loader.pairing == spec
    reference = MTTVPairDataset(IndexedSubset(ArraySource(images, labels)), build_transform(
        entry, "cifar10"), EvalTransform(8, "cifar10"), num_pairs=k, partner=partner,
        views=views, seed=7)
    batches = list(loader)
    assert len(batches) == n // batch
    batches.append(next(iter(loader)))  # first batch of epoch 1: new partners
    for epoch, (indexes, crops, targets) in zip([0] * 5 + [1], batches):
        assert len(crops) == 4 * k and all(c.shape == (batch, 3, 8, 8) for c in crops)
        assert torch.equal(targets, torch.from_numpy(labels)[indexes])
        anchors = 128 + indexes.numpy()
        partners = 128 + np.stack([reference.partner_indexes(int(i), epoch=epoch, rank=0,
                                                             worker_id=0) for i in indexes])
        strong_n = views == "augmented_augmented"
        for j in range(k):
            x_n, y_a, x_a, y_n = (marker_values(crops[g * k + j]) for g in range(4))
            assert np.array_equal(x_n, 255 - anchors if strong_n else anchors)
            assert np.array_equal(y_a, 255 - partners[:, j])
            assert np.array_equal(x_a, 255 - anchors)
            assert np.array_equal(y_n, 255 - partners[:, j] if strong_n else partners[:, j])
        if partner == "image":
            assert (partners != anchors[:, None]).any()


# ---------------------------------------------------------------------------- errors
def test_split_list_errors_name_the_file_and_line(tmp_path):
    images = np.zeros((4, 4, 4, 3), dtype=np.uint8)
    split = write_image_list(tmp_path, images, [0, 1, 0, 1])
    lines = split.read_text().splitlines()
    (tmp_path / lines[2].rsplit(maxsplit=1)[0]).unlink()
    split.write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n")  # blank line 3
    cfg = image_list_cfg(tmp_path, tmp_path, split)
    with pytest.raises(FileNotFoundError, match=r"train\.txt:4: listed image 'c0/img 002\.png'"):
        build_dali_pretrain_loader(cfg)
    split.write_text(lines[0] + "\nc1/img 001.png one\n")
    with pytest.raises(ValueError, match=r"train\.txt:2: label 'one' is not an integer"):
        build_dali_pretrain_loader(cfg)


def test_device_values(tmp_path):
    cfg = tiny_cfg(tmp_path, overrides=["++dali.device=tpu"])
    with pytest.raises(ValueError, match=r"dali\.device: unknown value 'tpu'"):
        build_dali_pretrain_loader(cfg)
    if not torch.cuda.is_available():
        cfg.dali.device = "gpu"
        with pytest.raises(ValueError, match=r"dali\.device: 'gpu' but torch\.cuda"):
            build_dali_pretrain_loader(cfg)
        cfg.dali.device = "auto"
        assert build_dali_pretrain_loader(cfg).describe().startswith("DALI multicrop loader")


def test_missing_dali_names_the_extra(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_dali(name, *args, **kwargs):
        if name.startswith("nvidia.dali"):
            raise ImportError("No module named 'nvidia.dali'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dali)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[dali\]"'):
        require_dali()
    with pytest.raises(ImportError, match=r'pip install -e "\.\[dali\]"'):
        build_dali_pretrain_loader(tiny_cfg(tmp_path))


def test_skipping_bad_images_is_refused(tmp_path):
    cfg = tiny_cfg(tmp_path, overrides=["++data.bad_images=skip"])
    with pytest.raises(ValueError, match=r"data\.bad_images=skip is not supported"):
        build_dali_pretrain_loader(cfg)


def test_batch_larger_than_a_shard_is_an_error(tmp_path):
    cfg = tiny_cfg(tmp_path, overrides=["optimizer.batch_size=300"])
    with pytest.raises(ValueError, match=r"optimizer\.batch_size: 300 is larger than a rank's"):
        build_dali_pretrain_loader(cfg, shard_id=0, num_shards=2)


# ---------------------------------------------------------------------------- training
@pytest.mark.parametrize("method", ["mv_simclr", "mttv"])
def test_lightning_trains_on_the_dali_loader(tmp_path, method):
    if method == "mttv":
        cfg = tiny_cfg(tmp_path, method="mttv", config_name="quickstart_mttv_digits",
                       num_views=None, overrides=[
                           "method_kwargs.num_views=2", "method_kwargs.proj_hidden_dim=16",
                           "method_kwargs.proj_output_dim=8"])
    else:
        cfg = tiny_cfg(tmp_path, num_views=3)
    cfg.data.format = "dali"  # what `data.format=dali` on the command line does
    run = prepare_pretrain(cfg)
    loader = run.train_loader
    assert type(loader).__name__ == "DaliPretrainLoader"
    assert loader.num_crops == (8 if method == "mttv" else 3)
    before = [p.detach().clone() for p in run.model.backbone.parameters()]
    fit(run)
    assert run.trainer.global_step == 2
    loss = run.trainer.callback_metrics["train_mttv_loss" if method == "mttv"
                                         else "train_nce_loss"]
    assert math.isfinite(float(loss))
    after = list(run.model.backbone.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after))
