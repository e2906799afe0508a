"""Raw image sources: labelled images by position, no augmentation, no subsetting.

Every source exposes ``targets`` (int64 array), ``num_classes``, ``__len__`` and ``load(i)``
returning a PIL RGB image. Datasets (``datasets.py``) select positions from a source and apply
transforms; keeping the two apart lets the same source feed the long-tailed pretraining set,
the balanced probe set and the DALI pipeline.

Sources:

- ``ArraySource``: in-memory ``N x H x W x 3`` uint8 images (CIFAR, digits, tests).
- ``cifar_source``: CIFAR-10/100 through torchvision, downloaded into the root when missing.
- ``ImageListSource``: an image root plus a split list, one ``relative/path label`` per line
  (the ImageNet-LT / BCL file format).
- ``digits_source``: scikit-learn's bundled 8x8 digits (1,797 images, no download) turned into
  16x16 RGB images, with a fixed, seeded, balanced held-out test part.

Bad files (``ImageListSource``): a listed file that does not exist is an error at construction
(FileNotFoundError naming the split list, its lines and the paths); a label outside
``[0, data.num_classes)`` is an error at construction (ValueError naming file and line); a file
that exists but cannot be decoded (truncated JPEG, a text file named ``.png``) is detected when it
is loaded and raises :class:`BadImageError` naming the file and its line in the split list
(``IndexedSubset`` applies the ``data.bad_images`` policy to it).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional, Protocol, Union, runtime_checkable

import numpy as np
from PIL import Image

PathLike = Union[str, Path]


class BadImageError(OSError):
    """A listed image file exists but cannot be read or decoded (the message names the file)."""

#: Images per class held out as the balanced digits test set (1,797 images, 174..183 per class).
DIGITS_TEST_PER_CLASS = 40
#: Seed of the digits train/test split; fixed so the test set never depends on a run's seed.
DIGITS_SPLIT_SEED = 0


@runtime_checkable
class ImageSource(Protocol):
    """What datasets need from a source."""

    targets: np.ndarray
    num_classes: int

    def __len__(self) -> int: ...

    def load(self, index: int) -> Image.Image: ...


def _check_num_classes(targets: np.ndarray, num_classes: Optional[int], what: str) -> int:
    """``num_classes`` if given (validated against the labels), else ``max label + 1``."""
    inferred = int(targets.max()) + 1 if targets.size else 0
    if num_classes is None:
        return inferred
    if int(num_classes) < inferred:
        raise ValueError(
            f"data.num_classes={num_classes} but {what} has label {inferred - 1}; "
            f"data.num_classes must be at least {inferred}"
        )
    return int(num_classes)


class ArraySource:
    """Images held as an ``N x H x W x 3`` uint8 array with integer labels."""

    def __init__(
        self, images: np.ndarray, targets: np.ndarray, num_classes: Optional[int] = None
    ) -> None:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"ArraySource needs N x H x W x 3 uint8 images, got shape {images.shape} "
                f"and dtype {images.dtype}"
            )
        targets = np.asarray(targets, dtype=np.int64).reshape(-1)
        if len(targets) != len(images):
            raise ValueError(
                f"ArraySource: {len(images)} images but {len(targets)} labels"
            )
        if targets.size and targets.min() < 0:
            raise ValueError(f"ArraySource: labels must be >= 0, got {targets.min()}")
        self.images = images
        self.targets = targets
        self.num_classes = _check_num_classes(targets, num_classes, "the image array")

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


def cifar_source(name: str, root: PathLike, train: bool = True) -> ArraySource:
    """CIFAR-10 or CIFAR-100 (``name`` = ``cifar10`` | ``cifar100``) as an ``ArraySource``.

    torchvision downloads and extracts the archive into ``root`` when it is not there; offline,
    put the archive (``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``) into ``root``.
    """
    from torchvision import datasets as tv_datasets

    classes = {"cifar10": tv_datasets.CIFAR10, "cifar100": tv_datasets.CIFAR100}
    if name not in classes:
        raise ValueError(f"data.dataset: {name!r} is not a CIFAR set; use one of {list(classes)}")
    cls = classes[name]
    root = Path(root).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        data = cls(str(root), train=train, download=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; bad archives RuntimeError
        raise FileNotFoundError(
            f"{name}: could not find or download the data in data.train_path='{root}' ({err}). "
            f"Without network access, place '{cls.filename}' (from {cls.url}) in '{root}', or "
            f"its extracted folder '{cls.base_folder}', and run again."
        ) from err
    return ArraySource(
        np.asarray(data.data), np.asarray(data.targets), num_classes=len(data.classes)
    )


def parse_split_file(path: PathLike) -> tuple[list[str], np.ndarray]:
    """Parse a split list: one ``relative/path label`` per line, blank lines ignored.

    The label is the last whitespace-separated field, so paths may contain spaces. Labels must be
    non-negative integers. Returns the relative paths and an int64 label array.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: '{path}'")
    paths: list[str] = []
    labels: list[int] = []
    with path.open() as handle:
        for line_no, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue
            fields = line.rsplit(maxsplit=1)
            if len(fields) != 2:
                raise ValueError(
                    f"{path}:{line_no}: malformed line {line!r}; expected 'relative/path label'"
                )
            rel, label_text = fields
            try:
                label = int(label_text)
            except ValueError:
                raise ValueError(
                    f"{path}:{line_no}: label {label_text!r} is not an integer "
                    f"(line {line!r}; expected 'relative/path label')"
                ) from None
            if label < 0:
                raise ValueError(f"{path}:{line_no}: label {label} is negative; labels are >= 0")
            paths.append(rel)
            labels.append(label)
    if not paths:
        raise ValueError(f"split file '{path}' lists no images")
    return paths, np.asarray(labels, dtype=np.int64)


class ImageListSource:
    """Images under ``root`` listed by a split file (``relative/path label`` per line).

    Every listed file is checked at construction, so a wrong root fails at start rather than in
    a data loader worker hours later; so is every label against ``num_classes`` when given.
    ``line_numbers[i]`` is the split list's (1-based) line of entry ``i``.
    """

    def __init__(
        self, root: PathLike, split_file: PathLike, num_classes: Optional[int] = None
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"image root not found: '{self.root}'")
        self.split_file = Path(split_file)
        relative, self.targets = parse_split_file(self.split_file)
        with self.split_file.open() as handle:
            self.line_numbers = [n for n, line in enumerate(handle, start=1) if line.strip()]
        self.paths = [self.root / rel for rel in relative]
        missing = [i for i, p in enumerate(self.paths) if not p.is_file()]
        if missing:
            shown = [f"{relative[i]} (line {self.line_numbers[i]})" for i in missing[:3]]
            raise FileNotFoundError(
                f"{len(missing)} image(s) listed in '{self.split_file}' are missing under "
                f"'{self.root}', e.g. {shown}"
            )
        if num_classes is not None:
            out = np.flatnonzero(self.targets >= int(num_classes))
            if out.size:
                first = int(out[0])
                raise ValueError(
                    f"{self.split_file}:{self.line_numbers[first]}: label "
                    f"{int(self.targets[first])} is out of range for data.num_classes="
                    f"{num_classes} (labels must lie in [0, {num_classes}); {out.size} line(s) "
                    "affected); fix the list or raise data.num_classes"
                )
        self.num_classes = _check_num_classes(
            self.targets, num_classes, f"split file '{self.split_file}'"
        )

    def __len__(self) -> int:
        return len(self.targets)

    def describe(self, index: int) -> str:
        """``'<path>' (<split file>:<line>)``, for messages."""
        return f"'{self.paths[index]}' ({self.split_file}:{self.line_numbers[index]})"

    def load(self, index: int) -> Image.Image:
        """The image as RGB; BadImageError naming the file when it cannot be decoded."""
        try:
            with Image.open(self.paths[index]) as img:
                return img.convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise BadImageError(
                f"cannot read image {self.describe(index)}: {type(err).__name__}: {err}. Replace "
                "or remove the file, or set data.bad_images=skip to train without it"
            ) from err


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits as 16x16x3 uint8 images: value ``round(v * 255 / 16)`` for the 0..16
    intensities, each pixel repeated 2x2 (nearest upsampling), grey copied to R, G and B."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    grey = grey.repeat(2, axis=1).repeat(2, axis=2)
    images = np.repeat(grey[..., None], 3, axis=-1)
    images.setflags(write=False)
    return images, np.asarray(digits.target, dtype=np.int64)


def digits_split(
    targets: np.ndarray, test_per_class: int = DIGITS_TEST_PER_CLASS, seed: int = DIGITS_SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indexes: ``test_per_class`` images of each class, drawn by a shuffle seeded
    by ``(seed, class)``, form the test part; the rest is the train part. Both sorted."""
    test = []
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        if test_per_class >= len(members):
            raise ValueError(
                f"digits: class {c} has {len(members)} images, cannot hold out {test_per_class}"
            )
        rng = np.random.default_rng([seed, int(c)])
        test.append(members[rng.permutation(len(members))[:test_per_class]])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(targets)), test_idx)
    return train_idx, test_idx


def digits_source(train: bool = True) -> ArraySource:
    """The embedded digits set (10 classes, 16x16 RGB): 1,397 train images (134..143 per class)
    or the balanced test part (40 per class, 400 images)."""
    images, targets = _digits_arrays()
    train_idx, test_idx = digits_split(targets)
    idx = train_idx if train else test_idx
    return ArraySource(images[idx], targets[idx], num_classes=10)
