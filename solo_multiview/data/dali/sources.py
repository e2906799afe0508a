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
  be known in Python before reading, i.e. the MTTV partners of an image list): each file read
  once, in parallel threads, and kept in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Union

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
    """Positions -> the files' bytes (1-D uint8 arrays) for DALI's image decoder.

    Each file is read once, on its first use, and its bytes are kept in memory (after the first
    epoch that is the encoded size of the long-tailed set, per process; DALI's external source
    copies what it is given, so the kept arrays are never written). The files of one call that
    are not in memory yet are read by up to ``max_workers`` threads at once (file reads release
    the GIL). :meth:`read_many` serves several position lists (the anchors and the K partner
    columns of an MTTV batch) in one pass."""

    decoded = False

    def __init__(self, source: ImageListSource, source_indexes: np.ndarray,
                 max_workers: int = 8) -> None:
        self.paths = [source.paths[int(j)] for j in source_indexes]
        self.max_workers = max(1, int(max_workers))
        self._bytes: list[Optional[np.ndarray]] = [None] * len(self.paths)
        self.files_read = 0  # how many file reads so far (each file at most once)

    def _read_file(self, position: int) -> np.ndarray:
        return np.fromfile(self.paths[position], dtype=np.uint8)

    def read_many(self, groups: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        """The bytes of every position of every group, in order; missing files read in
        parallel first."""
        groups = [[int(p) for p in group] for group in groups]
        missing = sorted({p for group in groups for p in group if self._bytes[p] is None})
        if missing:
            workers = min(self.max_workers, len(missing))
            if workers == 1:
                arrays = [self._read_file(p) for p in missing]
            else:
                with ThreadPoolExecutor(max_workers=workers,
                                        thread_name_prefix="dali-encoded") as pool:
                    arrays = list(pool.map(self._read_file, missing))
            for p, array in zip(missing, arrays):
                self._bytes[p] = array
            self.files_read += len(missing)
        return [[self._bytes[p] for p in group] for group in groups]

    def __call__(self, positions: np.ndarray) -> list[np.ndarray]:
        return self.read_many([positions])[0]


def image_feed(source: ImageSource, source_indexes: np.ndarray) -> Any:
    """The external-source image feed for ``source``: arrays, encoded files, or loaded images.
    A feed may have ``read_many(groups)`` (several position lists in one pass)."""
    if isinstance(source, ArraySource):
        return ArrayImages(source, source_indexes)
    if isinstance(source, ImageListSource):
        return EncodedFiles(source, source_indexes)
    return LoadedImages(source, source_indexes)
