"""Class grouping rules, checked against hand-built assignments."""

import numpy as np
import pytest
import torch

from solo_multiview.eval.groups import (
    frequency_order,
    group_classes,
    thirds_groups,
    threshold_groups,
)


def test_thirds_ties_straddling_a_boundary_split_by_class_id():
    counts = [5, 50, 50, 7, 100, 5, 20, 20, 20, 1]
    # ranking: 4(100) 1(50) 2(50) 6(20) | 7(20) 8(20) 3(7) | 0(5) 5(5) 9(1); sizes 4/3/3
    assert frequency_order(counts).tolist() == [4, 1, 2, 6, 7, 8, 3, 0, 5, 9]
    g = thirds_groups(counts)
    assert g.group_of_class.tolist() == [2, 0, 0, 1, 0, 2, 0, 1, 1, 2]
    assert g.sizes.tolist() == [4, 3, 3]
    assert g.members(1).tolist() == [3, 7, 8]


@pytest.mark.parametrize("C, sizes", [(1, [1, 0, 0]), (2, [1, 1, 0]), (3, [1, 1, 1]),
                                      (10, [4, 3, 3]), (11, [4, 4, 3]), (100, [34, 33, 33])])
def test_thirds_sizes_extra_classes_go_to_the_first_groups(C, sizes):
    counts = np.arange(C, 0, -1) * 3  # strictly decreasing: class c has rank c
    g = thirds_groups(counts)
    assert g.sizes.tolist() == sizes
    expected = np.repeat([0, 1, 2], sizes)
    assert g.group_of_class.tolist() == expected.tolist()


def test_thirds_all_equal_counts_ranked_by_class_id():
    g = thirds_groups([7] * 7)
    assert g.group_of_class.tolist() == [0, 0, 0, 1, 1, 2, 2]


def test_thirds_order_independent_of_class_ids():
    # increasing counts: the tail is class 0
    g = thirds_groups(torch.tensor([1, 2, 3, 4, 5, 6]))
    assert g.group_of_class.tolist() == [2, 2, 1, 1, 0, 0]


def test_thresholds_default_bounds_are_inclusive_for_medium():
    counts = [101, 100, 20, 19, 0, 500, 21]
    g = threshold_groups(counts)
    assert g.group_of_class.tolist() == [0, 1, 1, 2, 2, 0, 1]
    assert g.sizes.tolist() == [2, 3, 2]
    assert g.params == {"many_above": 100, "few_below": 20}


def test_thresholds_configurable_and_empty_groups():
    g = group_classes([60, 50, 10, 9], "thresholds", many_above=50, few_below=10)
    assert g.group_of_class.tolist() == [0, 1, 1, 2]
    g = threshold_groups([30, 40, 50])
    assert g.sizes.tolist() == [0, 3, 0]


@pytest.mark.parametrize("counts", [[3, -1, 2], [[1, 2], [3, 4]], [1.5, 2.0], [], ["a", "b"]])
def test_bad_counts_raise(counts):
    with pytest.raises(ValueError, match="train_counts"):
        thirds_groups(counts)


def test_integral_float_counts_accepted():
    assert thirds_groups(np.array([3.0, 2.0, 1.0])).group_of_class.tolist() == [0, 1, 2]


def test_bad_rules_raise():
    with pytest.raises(ValueError, match="unknown rule"):
        group_classes([1, 2, 3], "quartiles")
    with pytest.raises(ValueError, match="no parameters"):
        group_classes([1, 2, 3], "thirds", many_above=3)
    with pytest.raises(ValueError, match="few_below"):
        threshold_groups([1, 2, 3], many_above=10, few_below=20)
