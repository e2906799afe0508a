"""DataLoaders of the torchvision path: the K-crop pretraining loader and the validation loader.

Pretraining batches follow the contract ``[indexes, crops, targets]``; validation batches are
``[images, targets]`` as solo-learn's ``validation_step`` expects.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import omegaconf
import torch
from torch.utils.data import DataLoader, Dataset

from solo_multiview.data.augmentations import EvalTransform, build_multicrop_transform
from solo_multiview.data.datasets import build_pretrain_dataset, build_test_dataset
from solo_multiview.data.pairing import MTTVPairDataset, build_pair_transforms


class WithoutIndexes(Dataset):
    """(index, image, target) items as (image, target)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        _, image, target = self.dataset[index]
        return image, target


def loader_kwargs(cfg: omegaconf.DictConfig) -> dict:
    workers = int(cfg.data.num_workers)
    return {
        "batch_size": int(cfg.optimizer.batch_size),
        "num_workers": workers,
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": workers > 0,
    }


def build_pretrain_set(cfg: omegaconf.DictConfig, pipeline: str = "multicrop") -> Dataset:
    """The long-tailed training set with the views ``pipeline`` asks for: ``multicrop`` (the
    K-crop transform of ``cfg.augmentations``) or ``mttv_pairs`` (``data/pairing.py``)."""
    if pipeline == "mttv_pairs":
        kwargs = cfg.method_kwargs
        strong, normal = build_pair_transforms(cfg.augmentations[0], cfg.data.dataset)
        return MTTVPairDataset(build_pretrain_dataset(cfg, None), strong, normal,
                               num_pairs=int(kwargs.num_pairs), partner=kwargs.partner,
                               views=kwargs.views, seed=int(cfg.seed))
    transform = build_multicrop_transform(cfg.augmentations, cfg.data.dataset)
    return build_pretrain_dataset(cfg, transform)


def build_pretrain_loader(
    cfg: omegaconf.DictConfig, dataset: Optional[Dataset] = None
) -> DataLoader:
    """Shuffled, last partial batch dropped (contrastive losses want full batches). Under DDP
    Lightning swaps in a DistributedSampler, so each rank reads a disjoint shard."""
    dataset = build_pretrain_set(cfg) if dataset is None else dataset
    if len(dataset) < cfg.optimizer.batch_size:
        raise ValueError(
            f"optimizer.batch_size: {cfg.optimizer.batch_size} is larger than the training set "
            f"({len(dataset)} images after the long-tail selection)"
        )
    return DataLoader(dataset, shuffle=True, drop_last=True, **loader_kwargs(cfg))


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
