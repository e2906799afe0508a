"""What the DALI pipeline reads: the long-tailed training set as files or as arrays.

The training set is the torchvision path's: ``build_train_source(cfg)`` and
``pretrain_indexes(cfg, source)`` (``data/datasets.py``), so the same seed selects the same
images. Position ``p`` of the long-tailed set is source image ``source_indexes[p]``; positions are
the batch's ``indexes``.

- ``ImageListSource`` (image root + split list) -> :func:`reader_lists`: the files and, as their
  labels, their positions, for ``fn.readers.file``; the true targets are looked up from the
  positions after reading.
- ``ArraySource`` (CIFAR, digits) -> :class:`ArrayImages`: uint8 ``B x H x W x 3`` batches for
  ``fn.external_source``.
- any other ``ImageSource`` -> :class:`LoadedImages` (``load(i)`` as HWC arrays).
- :class:`EncodedFiles`: a file's bytes for ``fn.decoders.image`` (used where the positions must
  be known in Python before reading, i.e. the MTTV partners of an image list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np
from omegaconf import DictConfig

from solo_multiview.data.datasets import build_train_source, long_tail_config
from solo_multiview.data.sources import ArraySource, ImageListSource, ImageSource, parse_split_file

PathLike = Union[str, Path]


def split_list_line_numbers(split_file: PathLike) -> list[int]:
    """1-based line number of every entry of a split list (blank lines are not entries, as in
    ``parse_split_file``)."""
    with Path(split_file).open() as handle:
        return [n for n, line in enumerate(handle, start=1) if line.strip()]


def check_listed_files(root: PathLike, split_file: PathLike) -> None:
    """FileNotFoundError naming the split list, the line and the path of the first listed file
    missing under ``root`` (and how many are missing); ValueError with file and line for a
    malformed line (``parse_split_file``)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image root not found: '{root}' (data.train_path)")
    relative, _ = parse_split_file(split_file)
    missing = [i for i, rel in enumerate(relative) if not (root / rel).is_file()]
    if missing:
        lines = split_list_line_numbers(split_file)
        first = missing[0]
        raise FileNotFoundError(
            f"{split_file}:{lines[first]}: listed image '{relative[first]}' not found under "
            f"'{root}' ({len(missing)} of {len(relative)} listed images missing; lines "
            f"{[lines[i] for i in missing[:5]]}{' ...' if len(missing) > 5 else ''})"
        )


def load_train_source(cfg: DictConfig) -> ImageSource:
    """``build_train_source(cfg)``; for an image list a missing file is reported with the split
    list's file name and line."""
    try:
        return build_train_source(cfg)
    except FileNotFoundError:
        if cfg.data.get("dataset", None) == "image_list":
            split_file = long_tail_config(cfg).get("split_file")
            root = cfg.data.get("train_path", None)
            if split_file and root:
                check_listed_files(root, split_file)  # raises the line-aware error
        raise


def reader_lists(
    source: ImageListSource, source_indexes: np.ndarray
) -> tuple[list[str], list[int]]:
    """(files, labels) for ``fn.readers.file``: the long-tailed set's files in position order and
    their positions as labels (so a read sample carries its true index)."""
    files = [str(source.paths[int(j)]) for j in source_indexes]
    return files, list(range(len(files)))


class ArrayImages:
    """Positions -> a contiguous uint8 ``B x H x W x 3`` array of the long-tailed set."""

    decoded = True

    def __init__(self, source: ArraySource, source_indexes: np.ndarray) -> None:
        self.images = source.images
        self.source_indexes = np.asarray(source_indexes, dtype=np.int64)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.images[self.source_indexes[positions]])


class LoadedImages:
    """Positions -> a list of HWC uint8 arrays through ``source.load`` (any ImageSource)."""

    decoded = True

    def __init__(self, source: ImageSource, source_indexes: np.ndarray) -> None:
        self.source = source
        self.source_indexes = np.asarray(source_indexes, dtype=np.int64)

    def __call__(self, positions: np.ndarray) -> list[np.ndarray]:
        return [
            np.ascontiguousarray(np.asarray(self.source.load(int(self.source_indexes[p]))))
            for p in positions
        ]


class EncodedFiles:
    """Positions -> the files' bytes (1-D uint8 arrays) for DALI's image decoder."""

    decoded = False

    def __init__(self, source: ImageListSource, source_indexes: np.ndarray) -> None:
        self.paths = [source.paths[int(j)] for j in source_indexes]

    def __call__(self, positions: np.ndarray) -> list[np.ndarray]:
        return [np.fromfile(self.paths[int(p)], dtype=np.uint8) for p in positions]


def image_feed(source: ImageSource, source_indexes: np.ndarray) -> Any:
    """The external-source image feed for ``source``: arrays, encoded files, or loaded images."""
    if isinstance(source, ArraySource):
        return ArrayImages(source, source_indexes)
    if isinstance(source, ImageListSource):
        return EncodedFiles(source, source_indexes)
    return LoadedImages(source, source_indexes)
