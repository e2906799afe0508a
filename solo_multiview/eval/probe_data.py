"""The images of an evaluation: the probe's (or kNN bank's) training set, the balanced test set
and the class counts of the long-tailed pretraining set, all from the evaluation config plus the
checkpoint's ``args.json``.

Which settings come from where:

- ``data.dataset``: the evaluation config's, else args.json's (``check_backbone_config`` has
  already made sure they agree).
- paths (``train_path``, ``val_path``, ``val_split_file``): the evaluation config's, else
  args.json's: they name where the data lives on *this* machine.
- ``data.long_tail``: args.json's node, overridden key by key by the evaluation config's non-null
  values. It defines the pretraining set, whose per-class counts (``pretrain_counts``) are the
  ``train_counts`` of every long-tail metric, and the ``longtail`` probe set.
- crop: ``data.crop_size``, else the pretraining large-crop size (args.json's
  ``augmentations[0].crop_size``), else 32 (CIFAR), 16 (digits), 224 (image lists); the image's
  short side is resized to ``data.resize`` (default: the crop size) and centre-cropped;
  normalisation as in pretraining (the augmentation entry's mean/std, else the dataset's).

Probe training sets (``train_set``):

- ``balanced``: the full training source (CIFAR's 50,000 images, the 1,397 digits training
  images); for ``image_list`` the list in ``data.balanced_split_file`` (required then, since the
  image list itself is the long-tailed set);
- ``longtail``: the pretraining subset;
- ``N``: ``N`` images of every class, drawn from the balanced source (for ``image_list`` without
  a balanced list, from the long-tailed list) with the evaluation ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import omegaconf
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from solo_multiview.config.common import select
from solo_multiview.data.augmentations import EvalTransform, normalization_stats
from solo_multiview.data.datasets import (
    SUPPORTED_DATASETS,
    IndexedSubset,
    build_probe_dataset,
    build_test_source,
    build_train_source,
    long_tail_config,
    pretrain_indexes,
)
from solo_multiview.data.sources import ImageListSource, ImageSource

DEFAULT_CROP = {"cifar10": 32, "cifar100": 32, "digits": 16, "image_list": 224}
Transform = Callable[[Image.Image], torch.Tensor]


@dataclass(frozen=True)
class ImageSettings:
    """How images become tensors: centre crop ``crop_size`` from a short side of ``resize``,
    normalised with ``mean``/``std`` (per channel)."""

    dataset: str
    crop_size: int
    resize: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    def eval_transform(self) -> Transform:
        """No augmentation (``EvalTransform``, preceded by resize + centre crop when ``resize``
        differs from ``crop_size``)."""
        final = EvalTransform(self.crop_size, self.dataset, self.mean, self.std)
        if self.resize == self.crop_size:
            return final
        return v2.Compose([v2.Resize(self.resize, interpolation=InterpolationMode.BICUBIC),
                           v2.CenterCrop(self.crop_size), final])

    def to_dict(self) -> Dict[str, Any]:
        return {"crop_size": self.crop_size, "resize": self.resize, "mean": list(self.mean),
                "std": list(self.std)}


@dataclass
class EvalData:
    """Everything an evaluation reads, built and checked; image files are read lazily."""

    data_cfg: omegaconf.DictConfig
    train_set: Union[str, int]
    train: IndexedSubset
    test: IndexedSubset
    pretrain_counts: np.ndarray
    num_classes: int
    images: ImageSettings
    source_ids: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def settings(self) -> Dict[str, Any]:
        """What results.json records about the data."""
        data = OmegaConf.to_container(self.data_cfg.data, resolve=True)
        return {
            "dataset": data["dataset"],
            "train_path": data.get("train_path"),
            "val_path": data.get("val_path"),
            "val_split_file": data.get("val_split_file"),
            "long_tail": long_tail_config(self.data_cfg),
            "num_classes": self.num_classes,
            "pretrain_images": int(self.pretrain_counts.sum()),
            "train_set": self.train_set,
            "train_images": len(self.train),
            "train_class_counts": self.train.class_counts.tolist(),
            "test_images": len(self.test),
            "images": self.images.to_dict(),
        }


def _ckpt_data(ckpt_args: Mapping[str, Any]) -> Dict[str, Any]:
    data = ckpt_args.get("data")
    return dict(data) if isinstance(data, Mapping) else {}


def merge_long_tail(ckpt_lt: Any, eval_lt: Any) -> Optional[Dict[str, Any]]:
    """args.json's ``data.long_tail`` overridden by the evaluation config's non-null values;
    None when neither sets one (the data layer's per-dataset defaults then apply)."""
    if isinstance(eval_lt, omegaconf.DictConfig):
        eval_lt = OmegaConf.to_container(eval_lt, resolve=True)
    overrides = {k: v for k, v in (eval_lt or {}).items() if v is not None}
    if not ckpt_lt and not overrides:
        return None
    merged = dict(ckpt_lt or {})
    merged.update(overrides)
    return merged


def data_config(cfg: omegaconf.DictConfig, ckpt_args: Mapping[str, Any]) -> omegaconf.DictConfig:
    """``{"data": {...}}`` for the data layer (``data/datasets.py``), merged as the module
    docstring says."""
    ckpt = _ckpt_data(ckpt_args)
    dataset = select(cfg, "data.dataset") or ckpt.get("dataset")
    if dataset not in SUPPORTED_DATASETS:
        raise ValueError(f"data.dataset: the checkpoint was pretrained on {dataset!r}, which this "
                         f"evaluation cannot load; supported: {list(SUPPORTED_DATASETS)}")
    data: Dict[str, Any] = {"dataset": dataset}
    for key in ("train_path", "val_path", "val_split_file"):
        data[key] = select(cfg, f"data.{key}") or ckpt.get(key)
    if ckpt.get("num_classes") is not None:
        data["num_classes"] = int(ckpt["num_classes"])
    data["long_tail"] = merge_long_tail(ckpt.get("long_tail"), select(cfg, "data.long_tail"))
    return OmegaConf.create({"data": data})


def image_settings(cfg: omegaconf.DictConfig, ckpt_args: Mapping[str, Any],
                   dataset: str) -> ImageSettings:
    """Crop, resize and normalisation of the evaluation (see the module docstring)."""
    augs = ckpt_args.get("augmentations")
    first: Mapping[str, Any] = augs[0] if isinstance(augs, Sequence) and augs and \
        isinstance(augs[0], Mapping) else {}
    crop = select(cfg, "data.crop_size") or first.get("crop_size") or DEFAULT_CROP[dataset]
    if isinstance(crop, bool) or not isinstance(crop, int) or crop < 1:
        raise ValueError(f"data.crop_size: args.json's augmentations[0].crop_size is {crop!r}; "
                         f"set data.crop_size to an int >= 1")
    resize = select(cfg, "data.resize") or crop
    if resize < crop:
        raise ValueError(f"data.resize: {resize} is smaller than the crop size {crop}")
    mean, std = normalization_stats(dataset, first)
    return ImageSettings(dataset, int(crop), int(resize), tuple(mean), tuple(std))


def _file_id(path: Optional[Union[str, Path]]) -> Optional[Dict[str, Any]]:
    if not path:
        return None
    p = Path(path).expanduser().resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def source_id(data_cfg: omegaconf.DictConfig, split: str,
              split_file: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    """Identity of a source for feature caching: dataset, split, root and list file."""
    data = data_cfg.data
    if data.dataset == "digits":
        root = None
    elif split == "test":
        root = data.get("val_path") or data.get("train_path")
    else:
        root = data.get("train_path")
    return {"dataset": data.dataset, "split": split,
            "root": str(Path(root).expanduser().resolve()) if root else None,
            "list": _file_id(split_file)}


def _balanced_list_source(cfg: omegaconf.DictConfig, data_cfg: omegaconf.DictConfig,
                          num_classes: int) -> Optional[ImageSource]:
    split_file = select(cfg, "data.balanced_split_file")
    if not split_file:
        return None
    root = data_cfg.data.get("train_path")
    if not root:
        raise ValueError("data.train_path: missing; data.balanced_split_file lists paths "
                         "relative to it")
    return ImageListSource(root, split_file, num_classes)


def build_eval_data(cfg: omegaconf.DictConfig, ckpt_args: Mapping[str, Any]) -> EvalData:
    """Builds (and checks) the sources, the probe training set, the test set and the pretraining
    class counts. Image lists are checked file by file; CIFAR is downloaded when absent."""
    data_cfg = data_config(cfg, ckpt_args)
    dataset = str(data_cfg.data.dataset)
    images = image_settings(cfg, ckpt_args, dataset)
    transform = images.eval_transform()

    train_source = build_train_source(data_cfg)
    num_classes = int(train_source.num_classes)
    pretrain_idx = pretrain_indexes(data_cfg, train_source)
    pretrain_counts = np.bincount(train_source.targets[pretrain_idx], minlength=num_classes)

    lt_list = long_tail_config(data_cfg).get("split_file") if dataset == "image_list" else None
    train_set = cfg.train_set
    source, split, split_file = train_source, "train", lt_list
    if dataset == "image_list" and train_set != "longtail":
        balanced_list = _balanced_list_source(cfg, data_cfg, num_classes)
        if balanced_list is not None:
            source, split = balanced_list, "train-balanced"
            split_file = select(cfg, "data.balanced_split_file")
        elif train_set == "balanced":
            raise ValueError("train_set: 'balanced' with data.dataset=image_list needs "
                             "data.balanced_split_file (a train list with the same number of "
                             "images per class, paths relative to data.train_path); or use "
                             "train_set=longtail or a number of images per class")
    seed = int(cfg.seed)
    try:
        train = build_probe_dataset(data_cfg, transform, train_set, source=source, seed=seed)
    except ValueError as err:
        raise ValueError(f"train_set={train_set}: {err}") from err

    test_source = build_test_source(data_cfg, num_classes=num_classes)
    if test_source.num_classes != num_classes or (
            len(test_source) and int(test_source.targets.max()) >= num_classes):
        raise ValueError(f"data.val_split_file: the test set has labels up to "
                         f"{int(test_source.targets.max())} but the training set has "
                         f"{num_classes} classes")
    test = IndexedSubset(test_source, None, transform)
    test_list = select(data_cfg, "data.val_split_file") if dataset == "image_list" else None
    return EvalData(
        data_cfg=data_cfg, train_set=train_set, train=train, test=test,
        pretrain_counts=pretrain_counts.astype(np.int64), num_classes=num_classes,
        images=images,
        source_ids={"train": source_id(data_cfg, split, split_file),
                    "test": source_id(data_cfg, "test", test_list)},
    )
