"""Datasets built from the config: a source, the selected positions in it, and a transform.

``IndexedSubset[i]`` is ``(i, transform(image), target)``: ``i`` is the position in the subset
(the long-tailed training set), so the default collate yields solo-learn's batch
``[indexes, crops, targets]`` when the transform returns a list of crops.

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

from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch.utils.data import Dataset

from solo_multiview.data.longtail import DEFAULTS as LT_DEFAULTS
from solo_multiview.data.longtail import long_tail_indexes, select_per_class
from solo_multiview.data.sources import (
    ImageListSource,
    ImageSource,
    cifar_source,
    digits_source,
)

SUPPORTED_DATASETS = ("cifar10", "cifar100", "image_list", "digits")
_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10}
LONG_TAIL_KEYS = (*LT_DEFAULTS, "split_file")
PROBE_TRAIN_SETS = ("balanced", "longtail")

_LT_WHEN_ABSENT: dict[str, dict[str, Any]] = {
    "cifar10": {"profile": "none"},
    "cifar100": {"profile": "none"},
    "digits": {"profile": "exp", "imbalance_ratio": 10.0},
    "image_list": {"profile": "none"},
}
_LT_WHEN_PRESENT: dict[str, dict[str, Any]] = {
    "cifar10": {"profile": "exp", "imbalance_ratio": 100.0},
    "cifar100": {"profile": "exp", "imbalance_ratio": 100.0},
    "digits": {"profile": "exp", "imbalance_ratio": 10.0},
    "image_list": {"profile": "none"},
}


class IndexedSubset(Dataset):
    """Positions ``source_indexes`` of ``source``, transformed by ``transform``.

    ``__getitem__(i)`` returns ``(i, transform(image), target)`` (the PIL image itself when
    ``transform`` is None). ``class_counts[c]`` is the number of class-``c`` images here.
    """

    def __init__(
        self,
        source: ImageSource,
        indexes: Optional[np.ndarray] = None,
        transform: Optional[Callable[[Image.Image], Any]] = None,
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
        self.transform = transform
        self.num_classes = int(source.num_classes)
        self.targets = np.asarray(source.targets, dtype=np.int64)[self.source_indexes]
        self.class_counts = np.bincount(self.targets, minlength=self.num_classes)

    def __len__(self) -> int:
        return len(self.source_indexes)

    def load_image(self, index: int) -> Image.Image:
        """The raw (untransformed) image at subset position ``index``."""
        return self.source.load(int(self.source_indexes[index]))

    def __getitem__(self, index: int) -> tuple[int, Any, int]:
        image = self.load_image(index)
        out = image if self.transform is None else self.transform(image)
        return index, out, int(self.targets[index])


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


def build_pretrain_dataset(
    cfg: DictConfig,
    transform: Optional[Callable[[Image.Image], Any]],
    source: Optional[ImageSource] = None,
) -> IndexedSubset:
    """The long-tailed pretraining set: the train source under the ``data.long_tail`` overlay."""
    source = build_train_source(cfg) if source is None else source
    return IndexedSubset(source, pretrain_indexes(cfg, source), transform)


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
    """The whole balanced test source under ``transform``."""
    return IndexedSubset(build_test_source(cfg, num_classes), None, transform)
