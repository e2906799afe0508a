"""The subsets drawn by the authors' code of MTTV (anonymouspersoncscv/MTTV, single commit
``247efd5``), reproduced index for index with plain arguments (no config).

Two procedures are reproduced; file/line references are to that commit.

CIFAR-10-LT / CIFAR-100-LT (``data/MTTVModel_lt_Data.py``: CIFAR-10 lines 38-85, CIFAR-100 lines
134-181; the same code as Cao et al.'s LDAM ``IMBALANCECIFAR``):

1. The dataset is built with the default ``rand_number=0`` and ``np.random.seed(0)`` resets
   NumPy's *legacy global* generator (MT19937 ``RandomState``) right before the selection
   (line 44 / 140), so the seeds set in ``main.py`` (lines 15-18) do not matter for it.
2. Per-class counts (``get_img_num_per_cls``, lines 48-62 / 144-158, ``imb_type='exp'``):
   ``n_c = int(img_max * imb_factor ** (c / (C - 1)))`` with ``img_max = len(train set) / C``
   (a float, 5000.0 or 500.0) and ``imb_factor = 0.01`` (``config/dataset/Cifar10.yaml`` line
   8), i.e. the inverse of the imbalance ratio 100. ``int`` truncates. Class 0 is the head.
3. Selection (``gen_imbalanced_data``, lines 64-85 / 160-181): for the classes in ascending id
   order (``np.unique``; the class shuffle on line 69 is commented out), take the positions of
   the class in the file (``np.where``, ascending), shuffle that array in place with the global
   ``np.random.shuffle`` -- one RNG stream consumed class after class, including class 0 whose
   images are all kept -- and keep its first ``n_c`` entries. The kept images are stacked
   class by class in that shuffled order (``np.vstack``), which is the order of the subset's
   indexes (``self.data``); the data loader shuffles anyway (``cifar10_lt_dataset.py`` line 123).

A Fisher-Yates shuffle draws the same permutation for any array of the same length, so what is
kept of class ``c`` depends only on the class sizes, not on how the classes interleave in the
file: the kept images are the members of rank ``perm_c[:n_c]`` in the class's file order. Hence
the function below gives the authors' images on any copy of CIFAR whose per-class order is the
original one (e.g. an ImageFolder copy whose ``NNNN.jpg`` numbering follows the data batches).

ImageNet-LT 25 % pretraining subset (``data/Imagenet/imagenet_lt_dataset.py`` lines 59-80):
labels are read from the second column of ``ImageNet_LT_train.txt`` (lines 63-68) and
``sklearn.model_selection.StratifiedShuffleSplit(n_splits=1, train_size=int(0.25 * 115846),
random_state=42)`` (line 69; ``sample_size`` and ``dataset_size`` from
``config/dataset/Imagenet.yaml`` lines 11-12) gives ``subset_idx``, which indexes the list
(``data/MTTVModel_lt_Data.py`` lines 245-250). :func:`stratified_fraction` re-implements that
split: per-class train counts are the floor of ``n_c * n_train / N`` plus one for the classes
with the largest remainders (ties broken at random), the same allocation is made for the
complementary test part, then each class's positions are permuted and cut, and the train indexes
are permuted once more -- all drawing from one ``RandomState(seed)`` in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

#: ``rand_number`` default of the authors' LT datasets (``MTTVModel_lt_Data.py`` line 38).
AUTHORS_CIFAR_SEED = 0
#: ``random_state`` of their ImageNet-LT split (``imagenet_lt_dataset.py`` line 69).
AUTHORS_IMAGENET_SEED = 42
#: ``dataset_size`` in ``config/dataset/Imagenet.yaml`` line 11 (lines of ImageNet_LT_train.txt).
AUTHORS_IMAGENET_LT_SIZE = 115846


def _as_labels(labels: Sequence[int], name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of integer labels, got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: labels must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def authors_cifar_lt_counts(
    num_images: int, num_classes: int, imbalance_ratio: float
) -> list[int]:
    """Images kept per class id (class 0 first), as the authors' ``get_img_num_per_cls`` with
    ``imb_type='exp'``: ``int(num_images / C * (1 / ratio) ** (c / (C - 1)))``.

    ``num_images`` is the size of the whole training set (50,000 for CIFAR).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if imbalance_ratio < 1:
        raise ValueError(f"imbalance_ratio must be >= 1, got {imbalance_ratio}")
    per_class = num_images / num_classes
    factor = 1.0 / float(imbalance_ratio)
    return [int(per_class * factor ** (c / (num_classes - 1.0))) for c in range(num_classes)]


def authors_cifar_lt_indexes(
    targets: Sequence[int],
    num_classes: int,
    imbalance_ratio: float,
    seed: int = AUTHORS_CIFAR_SEED,
) -> np.ndarray:
    """Indexes into the full training set that the authors' CIFAR-LT procedure keeps, in their
    order: class 0's kept images first (in shuffled order), then class 1's, and so on.

    ``targets`` are the labels of the full set in file order; ``imbalance_ratio`` is
    ``1 / imb_factor`` (100 in the paper); ``seed`` is their ``rand_number`` (0). The global
    NumPy RNG is not touched: a private ``RandomState(seed)`` gives the same stream as
    ``np.random.seed(seed)``. See the module docstring for the procedure and its sources.
    """
    labels = _as_labels(targets, "targets")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"targets must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
        )
    wanted = authors_cifar_lt_counts(labels.size, num_classes, imbalance_ratio)
    stream = np.random.RandomState(int(seed))
    present = np.unique(labels)
    if present.size != num_classes:
        # their zip(classes, counts) would silently pair counts with the wrong classes
        raise ValueError(f"every class in [0, {num_classes}) needs images; present: "
                         f"{present.size}")
    picked = []
    for cls, n_keep in zip(present.tolist(), wanted):
        members = np.flatnonzero(labels == cls)  # ascending file positions
        if n_keep > members.size:
            raise ValueError(f"class {cls} has {members.size} images, {n_keep} are needed")
        order = np.arange(members.size)
        stream.shuffle(order)  # consumes the stream exactly as shuffling ``members`` would
        picked.append(members[order[:n_keep]])
    return np.concatenate(picked).astype(np.int64)


def _allocate(counts: np.ndarray, n_draws: int, stream: np.random.RandomState) -> np.ndarray:
    """Per-class draws summing to ``n_draws``: floor of the proportional share, then one more
    for the largest fractional parts, ties drawn at random (scikit-learn's ``_approximate_mode``,
    which their ``StratifiedShuffleSplit`` calls)."""
    share = counts / counts.sum() * n_draws
    alloc = np.floor(share)
    missing = int(n_draws - alloc.sum())
    if missing > 0:
        frac = share - alloc
        for level in np.unique(frac)[::-1]:  # largest fractional part first
            tied = np.flatnonzero(frac == level)
            take = min(tied.size, missing)
            alloc[stream.choice(tied, size=take, replace=False)] += 1
            missing -= take
            if missing == 0:
                break
    return alloc.astype(np.int64)


def stratified_fraction(
    labels: Sequence[int],
    fraction: float = 0.25,
    seed: int = AUTHORS_IMAGENET_SEED,
    n_total: Optional[int] = None,
) -> np.ndarray:
    """Positions in ``labels`` of the authors' stratified subset (their ImageNet-LT 25 %).

    Equals ``StratifiedShuffleSplit(n_splits=1, train_size=int(fraction * n_total),
    random_state=seed).split(labels, labels)``'s train part, in its (shuffled) order.
    ``n_total`` defaults to ``len(labels)``; the authors take it from their config (115,846,
    which is the length of ``ImageNet_LT_train.txt``). Every class needs at least 2 images and
    both parts at least one image per class, as scikit-learn requires.
    """
    y = _as_labels(labels, "labels")
    n = y.size
    total = n if n_total is None else int(n_total)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    n_train = int(fraction * total)
    n_test = n - n_train
    if n_train < 1 or n_test < 1:
        raise ValueError(f"train size {n_train} leaves no test part of {n} labels")
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise ValueError("every class needs at least 2 images; classes with 1: "
                         f"{classes[counts < 2].tolist()[:10]}")
    if n_train < classes.size or n_test < classes.size:
        raise ValueError(f"both parts need >= {classes.size} images (one per class), got "
                         f"train {n_train}, test {n_test}")
    stream = np.random.RandomState(int(seed))
    train_counts = _allocate(counts, n_train, stream)
    _allocate(counts - train_counts, n_test, stream)  # the test allocation draws too
    by_class = np.argsort(inverse, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    kept = []
    for start, size, n_keep in zip(starts.tolist(), counts.tolist(), train_counts.tolist()):
        members = by_class[start:start + size]  # the class's positions, ascending
        kept.extend(members[stream.permutation(size)][:n_keep].tolist())
    return stream.permutation(np.asarray(kept, dtype=np.int64))
