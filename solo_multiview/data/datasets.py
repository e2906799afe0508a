"""Datasets built from the config: a source, the selected positions in it, and a transform.

``IndexedSubset[i]`` is ``(i, transform(image), target)``: ``i`` is the position in the subset
(the long-tailed training set), so the default collate yields solo-learn's batch
``[indexes, crops, targets]`` when the transform returns a list of crops.

Reproducible augmentation: with a ``seed`` (the pretraining set gets ``cfg.seed``), the
transform of item ``i`` runs on torch's CPU generator seeded by :func:`item_seed` of
``(seed, epoch, i)`` and restored afterwards, so an item's crops depend only on the seed, the
epoch (``set_epoch``; shared memory, so running data loader workers see it) and the index: not on
the data loader worker, the rank, the number of workers or what ran before. Without a seed the
transform draws from the global generator as usual (probe and test sets).

Unreadable images (``bad_images``, config key ``data.bad_images``): ``error`` (default) lets the
source's :class:`~solo_multiview.data.sources.BadImageError` (naming the file) propagate;
``skip`` replaces the broken item ``i`` by the next readable position ``j = i+1, i+2, ...``
(cyclically) and returns ``(j, crops of image j, target of j)`` with the crops drawn from item
``i``'s seed. The replacement is deterministic (the same in every worker, rank and epoch), batch
sizes stay equal on every rank, and ``bad_image_count`` counts the distinct broken files met so
far in all workers (a shared-memory mask).

Long-tail defaults per ``data.dataset`` (for keys missing from ``data.long_tail``):

==============  ====================================  ===================================
dataset         ``data.long_tail`` absent             node present, key missing
==============  ====================================  ===================================
cifar10/100     balanced (profile none, solo-learn)   profile exp, imbalance_ratio 100
digits          profile exp, imbalance_ratio 10       profile exp, imbalance_ratio 10
image_list      the split list as is (profile none)   profile none (the list is the tail)
==============  ====================================  ===================================
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch.utils.data import Dataset

from solo_multiview.config.schema import setting
from solo_multiview.data.longtail import DEFAULTS as LT_DEFAULTS
from solo_multiview.data.longtail import LongTailConfig, long_tail_indexes, select_per_class
from solo_multiview.data.sources import (
    BadImageError,
    ImageListSource,
    ImageSource,
    cifar_source,
    digits_source,
)

SUPPORTED_DATASETS = ("cifar10", "cifar100", "image_list", "digits")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10}
LONG_TAIL_KEYS = tuple(f.name for f in fields(LongTailConfig))
PROBE_TRAIN_SETS = ("balanced", "longtail")
DATA_FORMATS = ("image_folder", "dali", "batched")
BAD_IMAGE_POLICIES = ("error", "skip")


@dataclass
class DataConfig:
    """``data.*`` of a pretraining config (solo-learn's keys plus ``long_tail``,
    ``bad_images``). ``num_classes``, ``num_large_crops`` and ``num_small_crops`` are derived at
    parse time (from the dataset and the method's views); giving them is refused."""

    dataset: str = setting(help="the training data", choices=SUPPORTED_DATASETS)
    train_path: Optional[str] = setting(None, "CIFAR download folder, or the image root of an "
                                        "image_list")
    val_path: Optional[str] = setting(None, "folder of the test data (null: train_path)")
    val_split_file: Optional[str] = setting(None, "image_list: the test list (null: no "
                                            "validation)")
    format: str = setting("image_folder", "the loader: torchvision (image_folder), NVIDIA DALI "
                          "(dali) or the whole set resident on the device, K crops made by "
                          "batched ops (batched: the batched.* keys)", choices=DATA_FORMATS)
    num_workers: int = setting(4, "data loader worker processes", minimum=0)
    bad_images: str = setting("error", "an unreadable image stops the run (error) or is "
                              "replaced by the next readable one (skip)",
                              choices=BAD_IMAGE_POLICIES)
    long_tail: Optional[LongTailConfig] = setting(None, "the long-tail overlay (absent: "
                                                  "CIFAR stays balanced, as in solo-learn)")
    num_classes: Optional[int] = setting(None, "image_list: classes in the split list (null: "
                                         "counted); other datasets: derived", minimum=1)
    num_large_crops: Optional[int] = setting(None, "derived: large crops per image (set by "
                                             "the parser from the method's views)")
    num_small_crops: Optional[int] = setting(None, "derived: small crops per image")
    no_labels: bool = setting(False, "solo-learn: image folder without labels", unused=True)
    fraction: float = setting(-1.0, "solo-learn: fraction of the train set", unused=True)

_LT_WHEN_ABSENT: dict[str, dict[str, Any]] = {
    "cifar10": {"profile": "none", "imbalance_ratio": 1.0},
    "cifar100": {"profile": "none", "imbalance_ratio": 1.0},
    "digits": {"profile": "exp", "imbalance_ratio": 10.0},
    "image_list": {"profile": "none", "imbalance_ratio": 1.0},
}
_LT_WHEN_PRESENT: dict[str, dict[str, Any]] = {
    "cifar10": {"profile": "exp", "imbalance_ratio": 100.0},
    "cifar100": {"profile": "exp", "imbalance_ratio": 100.0},
    "digits": {"profile": "exp", "imbalance_ratio": 10.0},
    "image_list": {"profile": "none", "imbalance_ratio": 1.0},
}


def item_seed(*keys: int) -> int:
    """A 63-bit seed from integer ``keys`` (e.g. ``(seed, epoch, index)``) through numpy's
    SeedSequence, so nearby keys give unrelated streams."""
    entropy = [int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]
    high, low = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32).tolist()
    return ((high << 32) | low) & 0x7FFFFFFFFFFFFFFF


@contextmanager
def seeded_torch_rng(seed: int) -> Iterator[None]:
    """Runs the block on torch's default CPU generator seeded with ``seed``, then restores the
    generator's previous state (CUDA generators are not touched)."""
    generator = torch.random.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(state)


class IndexedSubset(Dataset):
    """Positions ``source_indexes`` of ``source``, transformed by ``transform``.

    ``__getitem__(i)`` returns ``(i, transform(image), target)`` (the PIL image itself when
    ``transform`` is None). ``class_counts[c]`` is the number of class-``c`` images here.
    ``seed`` makes the transform a function of ``(seed, epoch, i)``; ``bad_images`` is the
    policy for unreadable files (module docstring).
    """

    def __init__(
        self,
        source: ImageSource,
        indexes: Optional[np.ndarray] = None,
        transform: Optional[Callable[[Image.Image], Any]] = None,
        seed: Optional[int] = None,
        bad_images: str = "error",
    ) -> None:
        self.source = source
        if indexes is None:
            indexes = np.arange(len(source))
        self.source_indexes = np.asarray(indexes, dtype=np.int64).reshape(-1)
        if self.source_indexes.size and (
            self.source_indexes.min() < 0 or self.source_indexes.max() >= len(source)
        ):
            raise ValueError(
                f"IndexedSubset: indexes must lie in [0, {len(source)}), got range "
                f"[{self.source_indexes.min()}, {self.source_indexes.max()}]"
            )
        if bad_images not in BAD_IMAGE_POLICIES:
            raise ValueError(f"data.bad_images: unknown value {bad_images!r}; choose one of "
                             f"{list(BAD_IMAGE_POLICIES)}")
        self.transform = transform
        self.seed = None if seed is None else int(seed)
        self.bad_images = bad_images
        self.num_classes = int(source.num_classes)
        self.targets = np.asarray(source.targets, dtype=np.int64)[self.source_indexes]
        self.class_counts = np.bincount(self.targets, minlength=self.num_classes)
        # shared memory: written by the main process / any worker, read by all of them
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._bad = (torch.zeros(len(self.source_indexes), dtype=torch.uint8).share_memory_()
                     if bad_images == "skip" else None)

    def __len__(self) -> int:
        return len(self.source_indexes)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """The epoch that seeds the augmentations (called by the training loop each epoch)."""
        self._epoch[0] = int(epoch)

    def load_image(self, index: int) -> Image.Image:
        """The raw (untransformed) image at subset position ``index``."""
        return self.source.load(int(self.source_indexes[index]))

    def resolve(self, index: int) -> tuple[int, Image.Image]:
        """``(j, image j)``: ``j = index`` unless its file is unreadable under
        ``bad_images=skip``, then the next readable position (module docstring)."""
        if self._bad is None:
            return index, self.load_image(index)
        n = len(self)
        for step in range(n):
            j = (index + step) % n
            if self._bad[j]:
                continue
            try:
                return j, self.load_image(j)
            except BadImageError:
                self._bad[j] = 1
        raise BadImageError(f"data.bad_images=skip: none of the {n} images can be read")

    @property
    def bad_image_count(self) -> int:
        """Distinct unreadable files met so far (``bad_images=skip``; 0 otherwise)."""
        return 0 if self._bad is None else int(self._bad.sum())

    def bad_image_positions(self) -> np.ndarray:
        """Positions of the unreadable files met so far."""
        return (np.zeros(0, dtype=np.int64) if self._bad is None
                else np.flatnonzero(self._bad.numpy()))

    def describe(self, index: int) -> str:
        """The file (and split-list line) behind position ``index``, for messages."""
        describe = getattr(self.source, "describe", None)
        j = int(self.source_indexes[index])
        return describe(j) if describe is not None else f"source image {j}"

    def apply_transform(self, image: Image.Image, index: int) -> Any:
        """``transform(image)``, seeded by ``(seed, epoch, index)`` when the set has a seed."""
        if self.transform is None:
            return image
        if self.seed is None:
            return self.transform(image)
        with seeded_torch_rng(item_seed(self.seed, self.epoch, index)):
            return self.transform(image)

    def __getitem__(self, index: int) -> tuple[int, Any, int]:
        used, image = self.resolve(int(index))
        return used, self.apply_transform(image, int(index)), int(self.targets[used])


# ---------------------------------------------------------------------------- config access
def _data(cfg: DictConfig) -> Any:
    data = cfg.get("data", None)
    if data is None:
        raise ValueError("config has no 'data' node (data.dataset, data.train_path, ...)")
    return data


def _dataset_name(cfg: DictConfig) -> str:
    name = _data(cfg).get("dataset", None)
    if name not in SUPPORTED_DATASETS:
        raise ValueError(
            f"data.dataset: unknown dataset {name!r}; allowed: {list(SUPPORTED_DATASETS)}"
        )
    return str(name)


def _required(cfg: DictConfig, key: str, why: str) -> Any:
    value = _data(cfg).get(key, None)
    if value is None or value == "":
        raise ValueError(f"data.{key} is required {why}")
    return value


def _long_tail_node(cfg: DictConfig) -> Optional[dict[str, Any]]:
    node = _data(cfg).get("long_tail", None)
    if node is None:
        return None
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, Mapping):
        raise ValueError(
            f"data.long_tail must be a mapping with keys {list(LONG_TAIL_KEYS)}, got {node!r}"
        )
    unknown = sorted(set(node) - set(LONG_TAIL_KEYS))
    if unknown:
        raise ValueError(
            f"data.long_tail: unknown key(s) {unknown}; allowed: {list(LONG_TAIL_KEYS)}"
        )
    return dict(node)


def long_tail_config(cfg: DictConfig) -> dict[str, Any]:
    """The effective ``data.long_tail`` settings: the node's values over the per-dataset
    defaults of the module docstring, over ``longtail.DEFAULTS``."""
    name = _dataset_name(cfg)
    node = _long_tail_node(cfg)
    merged = dict(LT_DEFAULTS)
    merged.update(_LT_WHEN_ABSENT[name] if node is None else _LT_WHEN_PRESENT[name])
    merged.update({k: v for k, v in (node or {}).items() if v is not None})
    return merged


def _check_num_classes(cfg: DictConfig, source: ImageSource) -> None:
    given = _data(cfg).get("num_classes", None)
    if given is not None and int(given) != source.num_classes:
        raise ValueError(
            f"data.num_classes={given} but data.dataset={_dataset_name(cfg)} has "
            f"{source.num_classes} classes"
        )


# ---------------------------------------------------------------------------- sources
def build_train_source(cfg: DictConfig) -> ImageSource:
    """The full training source of ``data.dataset`` (before the long-tail overlay)."""
    name = _dataset_name(cfg)
    if name in ("cifar10", "cifar100"):
        root = _required(cfg, "train_path", f"for data.dataset={name} (CIFAR download folder)")
        source: ImageSource = cifar_source(name, root, train=True)
    elif name == "image_list":
        root = _required(cfg, "train_path", "for data.dataset=image_list (image root)")
        split_file = long_tail_config(cfg).get("split_file")
        if not split_file:
            raise ValueError(
                "data.long_tail.split_file is required for data.dataset=image_list "
                "(the train list, one 'relative/path label' per line)"
            )
        source = ImageListSource(root, split_file, _data(cfg).get("num_classes", None))
    else:
        source = digits_source(train=True)
    _check_num_classes(cfg, source)
    return source


def build_test_source(cfg: DictConfig, num_classes: Optional[int] = None) -> ImageSource:
    """The balanced test source: CIFAR's test split, the digits held-out part, or the
    ``data.val_split_file`` list under ``data.val_path`` (``data.train_path`` when unset).

    ``num_classes`` (e.g. the train source's) fixes the class count of an image list.
    """
    name = _dataset_name(cfg)
    data = _data(cfg)
    if name in ("cifar10", "cifar100"):
        root = data.get("val_path", None) or _required(
            cfg, "train_path", f"for data.dataset={name} (CIFAR download folder)"
        )
        source: ImageSource = cifar_source(name, root, train=False)
    elif name == "image_list":
        split_file = _required(
            cfg, "val_split_file", "for data.dataset=image_list (the test list)"
        )
        root = data.get("val_path", None) or _required(
            cfg, "train_path", "for data.dataset=image_list (image root)"
        )
        if num_classes is None:
            num_classes = data.get("num_classes", None)
        source = ImageListSource(root, split_file, num_classes)
    else:
        source = digits_source(train=False)
    if name != "image_list":
        _check_num_classes(cfg, source)
    return source


# ---------------------------------------------------------------------------- datasets
def pretrain_indexes(cfg: DictConfig, source: ImageSource) -> np.ndarray:
    """Sorted positions in ``source`` of the long-tailed pretraining set (``data.long_tail``)."""
    return long_tail_indexes(source.targets, source.num_classes, long_tail_config(cfg))


def bad_image_policy(cfg: DictConfig) -> str:
    """``data.bad_images`` (``error`` when absent)."""
    policy = _data(cfg).get("bad_images", None)
    return "error" if policy in (None, "None") else str(policy)


def build_pretrain_dataset(
    cfg: DictConfig,
    transform: Optional[Callable[[Image.Image], Any]],
    source: Optional[ImageSource] = None,
    seed: Optional[int] = None,
) -> IndexedSubset:
    """The long-tailed pretraining set: the train source under the ``data.long_tail`` overlay,
    with the ``data.bad_images`` policy; ``seed`` seeds the augmentations per item."""
    source = build_train_source(cfg) if source is None else source
    return IndexedSubset(source, pretrain_indexes(cfg, source), transform, seed=seed,
                         bad_images=bad_image_policy(cfg))


def few_shot_indexes(
    targets: np.ndarray, num_classes: int, shots: int, seed: int = 0
) -> np.ndarray:
    """``shots`` images of every class (the first of a shuffle seeded by ``(seed, class)``)."""
    if shots < 1:
        raise ValueError(f"probe train set: shots per class must be >= 1, got {shots}")
    available = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes)
    short = np.flatnonzero(available < shots)
    if short.size:
        raise ValueError(
            f"probe train set: {shots} shots per class, but class(es) {short[:10].tolist()} "
            f"have only {available[short[:10]].tolist()} training images"
        )
    return select_per_class(targets, np.full(num_classes, shots, dtype=np.int64), seed)


def build_probe_dataset(
    cfg: DictConfig,
    transform: Optional[Callable[[Image.Image], Any]],
    train_set: Union[str, int] = "balanced",
    source: Optional[ImageSource] = None,
    seed: Optional[int] = None,
) -> IndexedSubset:
    """Training set of a linear/kNN probe.

    ``train_set``: ``"balanced"`` (the full train source; for image_list this is the split list),
    ``"longtail"`` (the pretraining subset) or an int ``N`` (``N`` images per class of the full
    source, seeded by ``seed``, default ``data.long_tail.seed``).
    """
    source = build_train_source(cfg) if source is None else source
    if isinstance(train_set, str) and train_set.strip().isdigit():
        train_set = int(train_set)
    if isinstance(train_set, bool) or not isinstance(train_set, (str, int)):
        raise ValueError(
            f"probe train set must be one of {list(PROBE_TRAIN_SETS)} or an int (shots per "
            f"class), got {train_set!r}"
        )
    if train_set == "balanced":
        indexes = np.arange(len(source), dtype=np.int64)
    elif train_set == "longtail":
        indexes = pretrain_indexes(cfg, source)
    elif isinstance(train_set, int):
        seed = int(long_tail_config(cfg)["seed"]) if seed is None else int(seed)
        indexes = few_shot_indexes(source.targets, source.num_classes, train_set, seed)
    else:
        raise ValueError(
            f"probe train set must be one of {list(PROBE_TRAIN_SETS)} or an int (shots per "
            f"class), got {train_set!r}"
        )
    return IndexedSubset(source, indexes, transform)


def build_test_dataset(
    cfg: DictConfig,
    transform: Optional[Callable[[Image.Image], Any]],
    num_classes: Optional[int] = None,
) -> IndexedSubset:
    """The whole balanced test source under ``transform`` (``data.bad_images`` policy)."""
    return IndexedSubset(build_test_source(cfg, num_classes), None, transform,
                         bad_images=bad_image_policy(cfg))
