"""The authors' CIFAR-LT and ImageNet-LT subset selections (data/longtail_authors.py)."""

from __future__ import annotations

import numpy as np
import pytest

from solo_multiview.data.longtail_authors import (
    authors_cifar_lt_counts,
    authors_cifar_lt_indexes,
    stratified_fraction,
)

CIFAR10_LT_COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
# First labels of CIFAR-10's data_batch_1 (frog, truck, truck, deer, ...), the start of its order.
CIFAR10_FILE_PREFIX = [6, 9, 9, 4, 1, 1, 2, 7, 8, 3, 4, 7, 7, 2, 9, 9, 9, 3, 2, 6,
                       4, 3, 6, 6, 2, 6, 3, 5, 4, 0]


def cifar_like_targets(num_classes: int, per_class: int, order_seed: int) -> np.ndarray:
    """A balanced label array in a random, file-like order (seeded)."""
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(order_seed).permutation(labels)


def cifar10_file_like_targets() -> np.ndarray:
    """5000 labels per class whose first 30 are CIFAR-10's real first 30, the rest shuffled."""
    prefix = np.asarray(CIFAR10_FILE_PREFIX)
    rest = np.repeat(np.arange(10), 5000 - np.bincount(prefix, minlength=10))
    return np.concatenate([prefix, np.random.default_rng(1).permutation(rest)])


def reenact_authors(targets: np.ndarray, num_classes: int, imb_factor: float,
                    rand_number: int = 0) -> np.ndarray:
    """Step by step as MTTVModel_lt_Data.py does it, on NumPy's *global* legacy RNG (its state
    is saved and restored around the call), tracking file positions instead of pixels."""
    saved = np.random.get_state()
    try:
        np.random.seed(rand_number)
        img_max = len(targets) / num_classes
        img_num_per_cls = []
        for cls_idx in range(num_classes):
            img_num_per_cls.append(int(img_max * (imb_factor ** (cls_idx / (num_classes - 1.0)))))
        targets_np = np.array(targets, dtype=np.int64)
        kept = []
        for the_class, the_img_num in zip(np.unique(targets_np), img_num_per_cls):
            idx = np.where(targets_np == the_class)[0]
            np.random.shuffle(idx)
            kept.append(idx[:the_img_num])
        return np.concatenate(kept)
    finally:
        np.random.set_state(saved)


@pytest.mark.parametrize("make", [lambda: cifar_like_targets(10, 5000, 3),
                                  cifar10_file_like_targets,
                                  lambda: np.repeat(np.arange(10), 5000)])
def test_cifar10_lt_counts_are_the_published_ones(make):
    targets = make()
    kept = authors_cifar_lt_indexes(targets, 10, 100)
    assert kept.size == 12406 == sum(CIFAR10_LT_COUNTS)
    assert np.bincount(targets[kept], minlength=10).tolist() == CIFAR10_LT_COUNTS
    assert np.unique(kept).size == kept.size
    assert authors_cifar_lt_counts(50000, 10, 100) == CIFAR10_LT_COUNTS


def test_cifar100_lt_counts_are_the_published_ones():
    targets = cifar_like_targets(100, 500, 4)
    kept = authors_cifar_lt_indexes(targets, 100, 100)
    counts = np.bincount(targets[kept], minlength=100)
    assert kept.size == 10847
    assert counts[0] == 500 and counts[-1] == 5
    assert np.all(np.diff(counts) <= 0)
    assert counts.tolist() == authors_cifar_lt_counts(50000, 100, 100)


@pytest.mark.parametrize("num_classes,per_class,ratio,order_seed,seed", [
    (10, 5000, 100, 0, 0), (10, 5000, 50, 7, 0), (100, 500, 100, 2, 0), (10, 5000, 100, 5, 3),
])
def test_matches_a_literal_reenactment(num_classes, per_class, ratio, order_seed, seed):
    targets = cifar_like_targets(num_classes, per_class, order_seed)
    expected = reenact_authors(targets, num_classes, 1.0 / ratio, seed)
    got = authors_cifar_lt_indexes(targets, num_classes, ratio, seed=seed)
    np.testing.assert_array_equal(got, expected)


def test_matches_reenactment_with_their_literal_imb_factor():
    targets = cifar10_file_like_targets()
    np.testing.assert_array_equal(authors_cifar_lt_indexes(targets, 10, 100),
                                  reenact_authors(targets, 10, 0.01))


def test_global_rng_untouched():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    authors_cifar_lt_indexes(cifar_like_targets(10, 50, 0), 10, 10)
    assert np.array_equal(np.random.get_state()[1], before)


def test_selection_depends_only_on_within_class_order():
    """Interleaving the classes differently keeps the same within-class ranks, so an ImageFolder
    copy (classes contiguous, files in batch order) gets the authors' images."""
    shuffled = cifar_like_targets(10, 5000, 9)
    contiguous = np.repeat(np.arange(10), 5000)

    def ranks(targets: np.ndarray) -> list[np.ndarray]:
        kept = authors_cifar_lt_indexes(targets, 10, 100)
        rank_in_class = np.empty(targets.size, dtype=np.int64)
        for c in range(10):
            members = np.flatnonzero(targets == c)
            rank_in_class[members] = np.arange(members.size)
        cls = targets[kept]
        return [rank_in_class[kept[cls == c]] for c in range(10)]

    for a, b in zip(ranks(shuffled), ranks(contiguous)):
        np.testing.assert_array_equal(a, b)


def test_order_is_class_by_class():
    targets = cifar_like_targets(10, 5000, 3)
    kept = authors_cifar_lt_indexes(targets, 10, 100)
    assert np.all(np.diff(targets[kept]) >= 0)


def test_cifar_errors():
    with pytest.raises(ValueError):
        authors_cifar_lt_indexes([0, 1, 2], 2, 10)
    with pytest.raises(ValueError):
        authors_cifar_lt_indexes(np.repeat([0, 2], 5), 3, 10)


def long_tailed_labels(seed: int = 0) -> np.ndarray:
    """A small ImageNet-LT-like list: 40 classes with 5..400 images, listed class by class."""
    counts = np.maximum(5, (400 * np.exp(-np.arange(40) / 8.0)).astype(int))
    return np.repeat(np.arange(40), counts)


@pytest.mark.parametrize("fraction,seed", [(0.25, 42), (0.25, 0), (0.4, 7)])
def test_stratified_fraction_counts(fraction, seed):
    labels = long_tailed_labels()
    kept = stratified_fraction(labels, fraction=fraction, seed=seed)
    n_train = int(fraction * labels.size)
    assert kept.size == n_train and np.unique(kept).size == n_train
    full = np.bincount(labels)
    got = np.bincount(labels[kept], minlength=full.size)
    share = full * n_train / labels.size
    assert np.all((got == np.floor(share)) | (got == np.floor(share) + 1))
    assert got.sum() == n_train


def test_stratified_fraction_with_config_total():
    labels = long_tailed_labels()
    kept = stratified_fraction(labels, fraction=0.25, n_total=2000)
    assert kept.size == 500


def test_stratified_fraction_equals_scikit_learn():
    sklearn_split = pytest.importorskip("sklearn.model_selection")
    labels = np.random.default_rng(5).permutation(long_tailed_labels())
    n_train = int(0.25 * labels.size)
    splitter = sklearn_split.StratifiedShuffleSplit(n_splits=1, train_size=n_train,
                                                    random_state=42)
    (train, _), = list(splitter.split(np.zeros(labels.size), labels))
    np.testing.assert_array_equal(stratified_fraction(labels, 0.25, seed=42), train)


def test_stratified_fraction_errors():
    with pytest.raises(ValueError):
        stratified_fraction([0, 0, 1], 0.5)  # class 1 has one image
    with pytest.raises(ValueError):
        stratified_fraction([0, 0, 1, 1], 1.5)


def test_stratified_fraction_at_imagenet_lt_scale():
    """1000 classes (a power law, 1468..64 images), 115,846 labels as ImageNet-LT; 28,961 kept."""
    sklearn_split = pytest.importorskip("sklearn.model_selection")
    counts = np.maximum(5, (1450 * np.arange(1, 1001) ** -0.45).astype(int))
    counts[:50] += (115846 - counts.sum()) // 50
    counts[0] += 115846 - counts.sum()
    labels = np.repeat(np.arange(1000), counts)
    n_train = int(0.25 * 115846)
    splitter = sklearn_split.StratifiedShuffleSplit(n_splits=1, train_size=n_train,
                                                    random_state=42)
    (train, _), = list(splitter.split(np.zeros(labels.size), labels))
    kept = stratified_fraction(labels, 0.25, seed=42, n_total=115846)
    assert kept.size == 28961
    np.testing.assert_array_equal(kept, train)
