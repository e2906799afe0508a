"""Long-tailed subsets and few-shot probe sets (data/longtail.py, data/datasets.py): the authors'
selection honours its keys, and each refused input gets its whole message."""

from __future__ import annotations

import re

import numpy as np
import pytest

from solo_multiview.data.datasets import few_shot_indexes
from solo_multiview.data.longtail import load_index_file, long_tail_indexes
from solo_multiview.data.longtail_authors import authors_cifar_lt_indexes


def balanced_targets(num_classes: int = 10, per_class: int = 60) -> np.ndarray:
    return np.random.default_rng(0).permutation(np.repeat(np.arange(num_classes), per_class))


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


# ------------------------------------------------------------ selection=authors


def test_authors_selection_uses_the_configured_ratio_and_seed():
    targets = balanced_targets()
    lt = {"selection": "authors", "imbalance_ratio": 10.0, "seed": 5}
    expected = np.sort(authors_cifar_lt_indexes(targets, 10, 10.0, 5))
    np.testing.assert_array_equal(long_tail_indexes(targets, 10, lt), expected)
    # the seed and the ratio change the selection (so the comparison above can fail)
    assert not np.array_equal(expected, np.sort(authors_cifar_lt_indexes(targets, 10, 10.0, 0)))
    assert not np.array_equal(expected, np.sort(authors_cifar_lt_indexes(targets, 10, 100.0, 5)))


@pytest.mark.parametrize("lt,message", [
    ({"selection": "authors", "profile": "step"},
     "data.long_tail.selection=authors: the authors' procedure has the exp profile only, got "
     "profile=step; set data.long_tail.profile=exp or selection=per_class"),
    ({"selection": "authors", "class_order": "random"},
     "data.long_tail.selection=authors: class 0 is the head in the authors' procedure, got "
     "class_order='random'; set class_order=natural or selection=per_class"),
    ({"selection": "authors", "n_max": 30},
     "data.long_tail.selection=authors: the head count is theirs (training set size / "
     "classes); leave data.long_tail.n_max null or use selection=per_class"),
])
def test_authors_selection_refuses_keys_it_cannot_honour(lt, message):
    with pytest.raises(ValueError, match=exact(message)):
        long_tail_indexes(balanced_targets(), 10, lt)


# ------------------------------------------------------------ index_file


def test_index_file_messages(tmp_path):
    path = tmp_path / "idx.npy"
    np.save(path, np.array([3, -1, 12, 20, 10, 11, 30, 1]))
    with pytest.raises(ValueError, match=exact(
            f"data.long_tail.index_file: '{path}' has 6 index(es) outside [0, 10) for a "
            "training set of 10 images, e.g. [-1, 12, 20, 10, 11]")):
        load_index_file(path, 10)
    np.save(path, np.array([4, 4, 1, 2, 2, 3, 0, 0, 5, 5, 6, 6, 7, 7]))  # six repeated
    with pytest.raises(ValueError, match=exact(
            f"data.long_tail.index_file: '{path}' repeats indexes, e.g. [0, 2, 4, 5, 6]; "
            "each image may appear once")):
        load_index_file(path, 10)
    np.save(path, np.array([1, 1, 2, 2, 2]))
    with pytest.raises(ValueError, match=exact(
            f"data.long_tail.index_file: '{path}' repeats indexes, e.g. [1, 2]; "
            "each image may appear once")):
        load_index_file(path, 10)


def test_an_index_file_of_objects_is_not_unpickled(tmp_path):
    path = tmp_path / "idx.npy"
    np.save(path, np.array([1, 2, 3], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=(
            f"^data.long_tail.index_file: '{re.escape(str(path))}' is not a readable .npy "
            r"array \(.*allow_pickle=False.*\)$")):
        load_index_file(path, 10)


# ------------------------------------------------------------ few-shot probe sets


def test_one_shot_per_class_is_accepted():
    targets = balanced_targets(3, 2)
    kept = few_shot_indexes(targets, 3, 1)
    assert sorted(targets[kept].tolist()) == [0, 1, 2]


def test_the_seed_defaults_to_zero():
    targets = balanced_targets(4, 20)
    np.testing.assert_array_equal(few_shot_indexes(targets, 4, 5),
                                  few_shot_indexes(targets, 4, 5, seed=0))
    assert not np.array_equal(few_shot_indexes(targets, 4, 5),
                              few_shot_indexes(targets, 4, 5, seed=1))


def test_a_class_with_exactly_the_shots_is_accepted():
    targets = np.repeat(np.arange(3), [4, 3, 5])
    kept = few_shot_indexes(targets, 3, 3)
    assert np.bincount(targets[kept]).tolist() == [3, 3, 3]


@pytest.mark.parametrize("targets,num_classes,shots,message", [
    ([0, 1], 2, 0, "probe train set: shots per class must be >= 1, got 0"),
    ([0, 0, 1], 3, 1,  # class 2 has no image: counted with minlength
     "probe train set: 1 shots per class, but class(es) [2] have only [0] training images"),
    (list(np.repeat(np.arange(12), 2)) + [12, 12, 12], 13, 3,
     "probe train set: 3 shots per class, but class(es) [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] have "
     "only [2, 2, 2, 2, 2, 2, 2, 2, 2, 2] training images"),
])
def test_few_shot_refusals(targets, num_classes, shots, message):
    with pytest.raises(ValueError, match=exact(message)):
        few_shot_indexes(np.asarray(targets), num_classes, shots)
