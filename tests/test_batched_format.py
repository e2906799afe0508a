"""``data.format: batched`` built from a config (``data/batched/build.py``): two training steps of
both quickstarts, the batch contract against the torchvision loader, true indexes per rank, epoch
seeding (also through Lightning's loop), image lists, and the refusals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from solo_multiview.config.pretrain import parse_pretrain_cfg
from solo_multiview.data.batched import BatchedPretrainLoader, build_batched_pretrain_loader
from solo_multiview.data.loaders import build_pretrain_loader, build_pretrain_set, build_train_data
from solo_multiview.methods import view_spec
from solo_multiview.training.pretrain import fit, prepare_pretrain
from tests.helpers import tiny_cfg

BATCHED = ["data.format=batched", "++batched.device=cpu"]


def mttv_cfg(tmp_path: Path, overrides=()):
    return tiny_cfg(tmp_path, method="mttv", config_name="quickstart_mttv_digits",
                    num_views=None, overrides=[
                        "method_kwargs.num_views=2", "method_kwargs.proj_hidden_dim=16",
                        "method_kwargs.proj_output_dim=8", *overrides])


def parsed(cfg):
    cfg = parse_pretrain_cfg(cfg)
    return cfg, view_spec(cfg)


# ---------------------------------------------------------------------------- training
@pytest.mark.parametrize("method", ["mv_simclr", "mttv"])
def test_two_training_steps_of_the_quickstarts(tmp_path, method):
    cfg = (mttv_cfg(tmp_path, BATCHED) if method == "mttv"
           else tiny_cfg(tmp_path, num_views=3, overrides=BATCHED))
    run = prepare_pretrain(cfg)
    assert isinstance(run.train_loader, BatchedPretrainLoader)
    assert run.cfg.data.format == "batched"
    before = [p.detach().clone() for p in run.model.backbone.parameters()]
    fit(run)
    assert run.trainer.global_step == 2
    losses = {k: float(v) for k, v in run.trainer.callback_metrics.items()
              if k.startswith("train_") and k.endswith("_loss") and "class" not in k}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    after = list(run.model.backbone.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after)), "backbone did not train"


def test_the_training_loop_sets_the_epoch(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path, overrides=[*BATCHED, "max_epochs=3", "+limit_train_batches=1"])
    cfg.max_steps = -1
    run = prepare_pretrain(cfg)
    loader = run.train_loader
    started = []
    original = loader._start_epoch

    def record(epoch, rank, world_size):
        started.append(epoch)
        return original(epoch, rank, world_size)

    monkeypatch.setattr(loader, "_start_epoch", record)
    fit(run)
    # one batch per epoch, so no epoch ends by itself: each epoch came from set_epoch (the
    # first iterator is made, not read, while Lightning counts the steps)
    assert started[-3:] == [0, 1, 2] and set(started) == {0, 1, 2}


# ---------------------------------------------------------------------------- batch contract
@pytest.mark.parametrize("kind", ["crops", "small_crops", "pairs"])
def test_batch_contract_is_the_torchvision_loaders(tmp_path, kind):
    if kind == "pairs":
        cfg, views = parsed(mttv_cfg(tmp_path, BATCHED))
    else:
        cfg, views = parsed(tiny_cfg(tmp_path, num_views=3, overrides=BATCHED,
                                     small_crops=2 if kind == "small_crops" else 0))
    loader, dataset = build_train_data(cfg, views)
    assert dataset is None and isinstance(loader, BatchedPretrainLoader)
    reference_set = build_pretrain_set(cfg, views)
    reference = build_pretrain_loader(cfg, reference_set)
    assert len(loader) == len(reference)
    assert loader.num_classes == reference_set.num_classes
    np.testing.assert_array_equal(loader.class_counts, reference_set.class_counts)

    indexes, crops, targets = next(iter(loader))
    ref_indexes, ref_crops, ref_targets = next(iter(reference))
    # one rank: the same order, batch for batch, and the same true positions
    assert indexes.dtype == ref_indexes.dtype == torch.int64
    assert torch.equal(indexes, ref_indexes)
    assert targets.dtype == torch.int64 and torch.equal(targets, ref_targets)
    assert torch.equal(targets, torch.as_tensor(reference_set.targets)[indexes])
    assert len(crops) == len(ref_crops) == views.num_crops
    for crop, ref in zip(crops, ref_crops):
        assert crop.dtype == ref.dtype == torch.float32
        assert crop.shape == ref.shape
    if kind == "pairs":  # x_n: the anchors normalised, equal to the torchvision path's
        for k in range(views.num_views):
            assert torch.allclose(crops[k], ref_crops[k], atol=1e-5)


def test_indexes_per_rank_are_disjoint_true_positions(tmp_path):
    cfg, views = parsed(tiny_cfg(tmp_path, overrides=BATCHED))
    reference_set = build_pretrain_set(cfg, views)
    seen = []
    for rank in (0, 1):
        loader = build_batched_pretrain_loader(cfg, views, shard=(rank, 2))
        batches = list(loader)
        assert len(batches) == len(loader) == (len(reference_set) // 2) // 16
        indexes = torch.cat([b[0] for b in batches])
        targets = torch.cat([b[2] for b in batches])
        assert torch.equal(targets, torch.as_tensor(reference_set.targets)[indexes])
        seen.append(set(indexes.tolist()))
    assert not seen[0] & seen[1]
    assert all(0 <= i < len(reference_set) for s in seen for i in s)


def test_epoch_seeding(tmp_path):
    cfg, views = parsed(tiny_cfg(tmp_path, overrides=BATCHED))

    def first_batch(epoch):
        loader = build_batched_pretrain_loader(cfg, views)
        loader.sampler.set_epoch(epoch)  # what Lightning calls
        return next(iter(loader))

    again, same, other = first_batch(3), first_batch(3), first_batch(4)
    assert torch.equal(again[0], same[0])
    assert all(torch.equal(a, b) for a, b in zip(again[1], same[1]))
    assert not torch.equal(again[0], other[0])
    # the order of epoch e is torchvision's EpochSampler's: randperm seeded seed + e
    order = torch.randperm(len(build_pretrain_set(cfg, views)),
                           generator=torch.Generator().manual_seed(cfg.seed + 4))
    assert torch.equal(other[0], order[:16])
    # an epoch iterated to its end moves on by itself
    loader = build_batched_pretrain_loader(cfg, views)
    for _ in loader:
        pass
    assert loader.epoch == 1


# ---------------------------------------------------------------------------- image lists
def write_image_list(root: Path, sizes, labels) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for i, (size, label) in enumerate(zip(sizes, labels)):
        rel = Path(f"c{label}") / f"{i:03d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / rel, quality=95)
        lines.append(f"{rel.as_posix()} {label}")
    split = root / "train.txt"
    split.write_text("\n".join(lines) + "\n")
    return split


def image_list_cfg(tmp_path, split: Path, overrides=()):
    cfg = tiny_cfg(tmp_path, overrides=[*BATCHED, "optimizer.batch_size=4", *overrides])
    cfg.data.dataset = "image_list"
    cfg.data.train_path = str(split.parent)
    cfg.data.long_tail.update({"profile": "none", "split_file": str(split)})
    return cfg


def test_an_image_list_is_decoded_once(tmp_path):
    labels = [0] * 6 + [1] * 4 + [2] * 2
    split = write_image_list(tmp_path / "images", [16] * 12, labels)
    cfg, views = parsed(image_list_cfg(tmp_path, split))
    loader, _ = build_train_data(cfg, views)
    assert loader.files is not None and loader.resident_bytes() == 12 * 3 * 16 * 16
    np.testing.assert_array_equal(loader.class_counts, [6, 4, 2])
    indexes, crops, targets = next(iter(loader))
    assert torch.equal(targets, torch.as_tensor(labels)[indexes])
    assert loader.loader.images.shape == (12, 3, 16, 16)


def test_image_lists_of_mixed_sizes_need_an_image_size(tmp_path):
    split = write_image_list(tmp_path / "images", [16] * 6 + [20] * 6, [0, 1] * 6)
    with pytest.raises(ValueError, match=r"different sizes.*batched\.image_size"):
        build_train_data(*parsed(image_list_cfg(tmp_path, split)))
    cfg, views = parsed(image_list_cfg(tmp_path, split, ["++batched.image_size=16"]))
    loader, _ = build_train_data(cfg, views)
    assert next(iter(loader))[1][0].shape == (4, 3, 16, 16)


# ---------------------------------------------------------------------------- refusals
def test_too_large_an_image_list_is_refused(tmp_path):
    split = write_image_list(tmp_path / "images", [16] * 8, [0, 1] * 4)
    cfg, views = parsed(image_list_cfg(tmp_path, split, ["++batched.max_gib=1e-6"]))
    with pytest.raises(ValueError, match=r"GiB decoded .* more than batched\.max_gib=1e-06;"):
        build_train_data(cfg, views)


def test_skipping_bad_images_is_refused(tmp_path):
    cfg, views = parsed(tiny_cfg(tmp_path, overrides=[*BATCHED, "++data.bad_images=skip"]))
    with pytest.raises(ValueError, match=r"data\.bad_images=skip is not supported with "
                                         r"data\.format=batched"):
        build_train_data(cfg, views)


def test_bad_batched_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"batched\.device"):
        parse_pretrain_cfg(tiny_cfg(tmp_path, overrides=["data.format=batched",
                                                         "++batched.device=tpu"]))
    cfg, views = parsed(tiny_cfg(tmp_path, overrides=[*BATCHED, "optimizer.batch_size=300"]))
    with pytest.raises(ValueError, match=r"optimizer\.batch_size: 300 is larger than a rank's"):
        build_batched_pretrain_loader(cfg, views, shard=(0, 2))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_is_refused(tmp_path):
    cfg, views = parsed(tiny_cfg(tmp_path, overrides=["data.format=batched",
                                                      "++batched.device=cuda"]))
    with pytest.raises(ValueError, match=r"batched\.device: 'cuda' but torch\.cuda"):
        build_train_data(cfg, views)
