"""DataLoaders of the torchvision path: the K-crop pretraining loader and the validation loader.

Pretraining batches follow the contract ``[indexes, crops, targets]``; validation batches are
``[images, targets]`` as solo-learn's ``validation_step`` expects.

Data order (reproducible, so a resumed run sees what an uninterrupted one saw):
:class:`EpochSampler` yields ``torch.randperm(N)`` from a generator seeded with
``cfg.seed + epoch``. Under DDP Lightning wraps it in its ``DistributedSamplerWrapper``, which pads
that permutation to a multiple of W with its first indexes (so when N % W != 0 up to W - 1 images
appear twice in the epoch) and gives rank r the positions r, r + W, r + 2W, ... of it: the order of
Lightning's own ``DistributedSampler(shuffle=True, seed=cfg.seed)``. The ranks' shards are disjoint
and together cover the epoch; each rank drops its last incomplete batch (``drop_last=True``; every
rank has the same number of full batches), so an epoch trains on ``W * B * floor(ceil(N / W) / B)``
items.

The sampler's epoch (``set_epoch``; Lightning calls it every epoch) is handed to the dataset's
``set_epoch`` when iteration starts, before any index is handed out, so the order and the
augmentations of an epoch always agree. A resumed run must set the epoch before ``fit``
(``training/pretrain.py`` does, from the checkpoint): Lightning creates the first iterator while
it configures the optimizers (to count the steps), before it restores the epoch counter and calls
``set_epoch``, and with workers the first batches are requested right then.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Tuple

import omegaconf
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from solo_multiview.data.augmentations import EvalTransform, build_multicrop_transform
from solo_multiview.data.datasets import build_pretrain_dataset, build_test_dataset
from solo_multiview.data.pairing import MTTVPairDataset, build_pair_transforms
from solo_multiview.data.views import ViewSpec


class WithoutIndexes(Dataset):
    """(index, image, target) items as (image, target)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        _, image, target = self.dataset[index]
        return image, target


class EpochSampler(Sampler[int]):
    """All positions of ``data_source`` in the order ``torch.randperm(N)`` gives on a generator
    seeded with ``seed + epoch`` (the order of a one-replica ``DistributedSampler(seed=seed)``),
    independent of the global RNG state; the epoch (``set_epoch``) is passed on to
    ``data_source.set_epoch`` when iteration starts (module docstring)."""

    def __init__(self, data_source: Dataset, seed: int) -> None:
        self.data_source = data_source
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        set_dataset_epoch = getattr(self.data_source, "set_epoch", None)
        if callable(set_dataset_epoch):
            set_dataset_epoch(self.epoch)
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(len(self.data_source), generator=generator).tolist())

    def __len__(self) -> int:
        return len(self.data_source)


def loader_kwargs(cfg: omegaconf.DictConfig) -> dict:
    workers = int(cfg.data.num_workers)
    return {
        "batch_size": int(cfg.optimizer.batch_size),
        "num_workers": workers,
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": workers > 0,
    }


def build_pretrain_set(cfg: omegaconf.DictConfig, views: Optional[ViewSpec] = None) -> Dataset:
    """The long-tailed training set with the views of the spec (``data/views.py``; None: the
    spec of ``cfg.method``): the ``crops`` scheme gives the K-crop transform of
    ``cfg.augmentations``, the ``pairs`` scheme the MIMV pairing (``data/pairing.py``)."""
    seed = int(cfg.get("seed", 0) or 0)
    if views is None:
        from solo_multiview.methods import view_spec

        views = view_spec(cfg)
    if views.scheme == "pairs":
        strong, normal = build_pair_transforms(cfg.augmentations[0], cfg.data.dataset)
        return MTTVPairDataset(build_pretrain_dataset(cfg, None), strong, normal,
                               num_pairs=views.num_views, partner=views.partner,
                               views=views.roles, seed=seed)
    transform = build_multicrop_transform(cfg.augmentations, cfg.data.dataset)
    return build_pretrain_dataset(cfg, transform, seed=seed)


def build_pretrain_loader(
    cfg: omegaconf.DictConfig, dataset: Optional[Dataset] = None
) -> DataLoader:
    """Shuffled by :class:`EpochSampler` (seed ``cfg.seed``), last partial batch dropped
    (contrastive losses want full batches). Under DDP Lightning shards the sampler's order
    (``DistributedSamplerWrapper``), so each rank reads a disjoint shard (module docstring)."""
    dataset = build_pretrain_set(cfg) if dataset is None else dataset
    if len(dataset) < cfg.optimizer.batch_size:
        raise ValueError(
            f"optimizer.batch_size: {cfg.optimizer.batch_size} is larger than the training set "
            f"({len(dataset)} images after the long-tail selection)"
        )
    sampler = EpochSampler(dataset, int(cfg.get("seed", 0) or 0))
    return DataLoader(dataset, sampler=sampler, drop_last=True, **loader_kwargs(cfg))


def build_val_loader(cfg: omegaconf.DictConfig) -> Optional[DataLoader]:
    """The balanced test set without augmentation, or None when the dataset has none
    (image_list without ``data.val_split_file``)."""
    if cfg.data.dataset == "image_list" and not cfg.data.val_split_file:
        return None
    aug = cfg.augmentations[0]
    transform = EvalTransform(aug.crop_size, cfg.data.dataset, aug.get("mean"), aug.get("std"))
    dataset = build_test_dataset(cfg, transform, num_classes=cfg.data.num_classes)
    return DataLoader(WithoutIndexes(dataset), shuffle=False, drop_last=False,
                      **loader_kwargs(cfg))


def build_train_data(cfg: omegaconf.DictConfig, views: Optional[ViewSpec] = None
                     ) -> Tuple[Any, Optional[Dataset]]:
    """(training loader, its dataset): the torchvision DataLoader, with ``data.format: dali``
    the DALI loader (``data/dali/``), with ``data.format: batched`` the device-resident loader
    (``data/batched/build.py``); both with the same batch contract and no map-style dataset
    (they carry ``num_classes`` and ``class_counts`` themselves, and take their epoch through
    ``loader.sampler.set_epoch``, which Lightning calls every epoch)."""
    if cfg.data.format == "dali":
        from solo_multiview.data.dali import build_dali_pretrain_loader

        return build_dali_pretrain_loader(cfg, views=views), None
    if cfg.data.format == "batched":
        from solo_multiview.data.batched import build_batched_pretrain_loader

        return build_batched_pretrain_loader(cfg, views=views), None
    dataset = build_pretrain_set(cfg, views)
    return build_pretrain_loader(cfg, dataset), dataset

