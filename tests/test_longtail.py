"""Long-tail profiles, class orders, seeded selection and index files (synthetic labels only)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from solo_multiview.data.longtail import (
    class_order,
    counts_by_rank,
    load_index_file,
    long_tail_indexes,
    select_per_class,
)


def balanced_targets(num_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    """Shuffled labels with ``per_class`` images of each class, like CIFAR's train split."""
    targets = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(targets)


# ------------------------------------------------------------------------------- profiles
@pytest.mark.parametrize(
    ("num_classes", "per_class", "total", "tail"),
    [(10, 5000, 12406, 50), (100, 500, 10847, 5)],
)
def test_exp_reproduces_published_cifar_lt_sizes(num_classes, per_class, total, tail):
    targets = balanced_targets(num_classes, per_class)
    selected = long_tail_indexes(targets, num_classes, {"profile": "exp", "imbalance_ratio": 100})
    counts = np.bincount(targets[selected], minlength=num_classes)
    assert len(selected) == total
    assert counts[0] == per_class and counts[-1] == tail
    # The official CIFAR-LT code: int(img_max * imb_factor ** (i / (C - 1))), imb_factor = 0.01.
    official = [int(per_class * 0.01 ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    assert counts.tolist() == official
    assert np.all(np.diff(counts) <= 0)


def test_profile_none_keeps_everything():
    targets = balanced_targets(4, 7)
    assert np.array_equal(long_tail_indexes(targets, 4, {"profile": "none"}), np.arange(28))


@pytest.mark.parametrize("num_classes", [2, 5, 10])
def test_step_profile_shape(num_classes):
    counts = counts_by_rank("step", num_classes, 500, 10)
    n_head = (num_classes + 1) // 2  # "first half", the middle class of an odd C in the head
    assert counts.tolist() == [500] * n_head + [50] * (num_classes - n_head)
    assert counts.max() / counts.min() == 10


@pytest.mark.parametrize(("num_classes", "rho", "n_max"), [(10, 100, 5000), (100, 50, 500),
                                                           (7, 10, 134), (1000, 256, 1280)])
def test_pareto_profile_shape(num_classes, rho, n_max):
    counts = counts_by_rank("pareto", num_classes, n_max, rho)
    assert counts[0] == n_max and counts[-1] == n_max // rho
    assert np.all(np.diff(counts) <= 0)
    assert n_max / counts[-1] == pytest.approx(rho, rel=1 / counts[-1])
    # Independent form of the power law: n_r = n_max * (1 + r) ** -(ln rho / ln C).
    alpha = math.log(rho) / math.log(num_classes)
    reference = n_max * np.power(np.arange(1, num_classes + 1), -alpha)
    assert np.all(np.abs(counts - reference) < 1.0 + 1e-6)


def test_exp_non_integer_ratio_matches_direct_formula():
    counts = counts_by_rank("exp", 6, 300, 12.5)
    expected = [math.floor(300 / 12.5 ** (r / 5)) for r in range(6)]
    assert counts.tolist() == expected


def test_ratio_one_is_balanced():
    assert counts_by_rank("exp", 5, 40, 1).tolist() == [40] * 5


# ------------------------------------------------------------------------------- errors
def test_ratio_below_one_rejected():
    with pytest.raises(ValueError, match="imbalance_ratio"):
        long_tail_indexes(balanced_targets(3, 10), 3, {"profile": "exp", "imbalance_ratio": 0.5})


def test_unknown_profile_rejected():
    with pytest.raises(ValueError, match=r"profile.*'zipf'.*exp"):
        long_tail_indexes(balanced_targets(3, 10), 3, {"profile": "zipf"})


def test_class_too_small_names_class_and_counts():
    targets = np.concatenate([np.zeros(50, int), np.ones(20, int), np.full(50, 2)])
    with pytest.raises(ValueError, match="class 1 needs 30 images.*only 20"):
        long_tail_indexes(targets, 3, {"profile": "step", "imbalance_ratio": 1, "n_max": 30})


def test_empty_class_after_selection_rejected():
    targets = balanced_targets(5, 10)
    with pytest.raises(ValueError, match=r"data\.long_tail.*zero images"):
        long_tail_indexes(targets, 5, {"profile": "exp", "imbalance_ratio": 100})


def test_class_absent_from_source_rejected_even_without_profile():
    targets = np.array([0, 0, 2, 2])
    with pytest.raises(ValueError, match=r"data\.long_tail.*zero images.*\[1\]"):
        long_tail_indexes(targets, 3, {"profile": "none"})


# ------------------------------------------------------------------------------- seeding
def test_same_seed_same_subset_different_seed_different_subset():
    targets = balanced_targets(10, 200)
    cfg = {"profile": "exp", "imbalance_ratio": 20, "seed": 3}
    a = long_tail_indexes(targets, 10, cfg)
    b = long_tail_indexes(targets, 10, dict(cfg))
    c = long_tail_indexes(targets, 10, {**cfg, "seed": 4})
    assert np.array_equal(a, b)
    assert len(a) == len(c) and not np.array_equal(a, c)
    assert np.all(np.diff(a) > 0)  # sorted, unique


def test_subsets_are_nested_across_ratios():
    targets = balanced_targets(10, 100)
    mild = long_tail_indexes(targets, 10, {"imbalance_ratio": 10, "seed": 1})
    steep = long_tail_indexes(targets, 10, {"imbalance_ratio": 100, "seed": 1})
    assert set(steep.tolist()) <= set(mild.tolist())


def test_select_per_class_counts():
    targets = balanced_targets(3, 10)
    selected = select_per_class(targets, np.array([10, 0, 4]), seed=0)
    assert np.bincount(targets[selected], minlength=3).tolist() == [10, 0, 4]


# ------------------------------------------------------------------------------- class order
def test_permuted_order_puts_the_drawn_classes_at_the_head():
    targets = balanced_targets(10, 100)
    cfg = {"profile": "exp", "imbalance_ratio": 10, "class_order": "permuted", "seed": 7}
    counts = np.bincount(targets[long_tail_indexes(targets, 10, cfg)], minlength=10)
    order = np.argsort(-counts, kind="stable")  # head -> tail by the actual counts
    assert np.array_equal(order, class_order("permuted", 10, seed=7))
    assert not np.array_equal(order, np.arange(10))
    assert not np.array_equal(class_order("permuted", 10, 7), class_order("permuted", 10, 8))


def test_explicit_order_from_omegaconf_list():
    targets = balanced_targets(4, 50)
    lt = OmegaConf.create({"profile": "step", "imbalance_ratio": 5, "class_order": [3, 1, 0, 2]})
    counts = np.bincount(targets[long_tail_indexes(targets, 4, lt)], minlength=4)
    assert counts.tolist() == [10, 50, 10, 50]


@pytest.mark.parametrize("order", [[0, 1, 1], [0, 1], [0, 1, 3], "shuffled"])
def test_invalid_class_order_rejected(order):
    with pytest.raises(ValueError, match="class_order"):
        class_order(order, 3)


# ------------------------------------------------------------------------------- index files
def test_index_file_defines_the_subset(tmp_path):
    targets = np.tile(np.arange(3), 10)  # label of index i is i % 3
    wanted = np.array([25, 3, 0, 17, 9, 11])  # classes 1, 0, 0, 2, 0, 2: all present
    path = tmp_path / "split.npy"
    np.save(path, wanted)
    got = long_tail_indexes(targets, 3, {"index_file": str(path), "profile": "exp"})
    assert got.tolist() == sorted(wanted.tolist())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.array([0, 1, 30]), "outside"),
        (np.array([0, -1]), "outside"),
        (np.array([0, 1, 1]), "repeats"),
        (np.array([0.5, 1.0]), "integer"),
        (np.zeros((2, 2), dtype=int), "1-D"),
    ],
)
def test_index_file_validation(tmp_path, content, message):
    path = tmp_path / "bad.npy"
    np.save(path, content)
    with pytest.raises(ValueError, match=message):
        load_index_file(path, num_samples=30)


def test_index_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="index_file"):
        load_index_file(tmp_path / "nope.npy", 10)


def test_index_file_missing_a_class_rejected(tmp_path):
    targets = np.tile(np.arange(3), 10)
    path = tmp_path / "split.npy"
    np.save(path, np.array([0, 3, 1]))  # classes 0, 0, 1: class 2 absent
    with pytest.raises(ValueError, match=r"zero images.*index_file"):
        long_tail_indexes(targets, 3, {"index_file": str(path)})
