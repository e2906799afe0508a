"""Small data-side checks with exact values: blur kernel sizes, op orders, the authors' CIFAR-LT
counts and selection, probe train sets, the multi-crop transform's description."""

from __future__ import annotations

import re

import pytest

from solo_multiview.data.augmentations import MultiCropTransform, blur_kernel_of, op_order
from solo_multiview.data.longtail_authors import (
    authors_cifar_lt_counts,
    authors_cifar_lt_indexes,
)

WHERE = "augmentations[0]"


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


# ------------------------------------------------------------ gaussian_blur.kernel_size


@pytest.mark.parametrize("size", [1, 3, 23])
def test_odd_kernel_sizes_from_one_are_taken_as_given(size):
    assert blur_kernel_of({"crop_size": 32, "gaussian_blur": {"kernel_size": size}}, WHERE) == size


@pytest.mark.parametrize("size", [0, 2, 4, -1, True, 3.0, "3"])
def test_other_kernel_sizes_are_refused_by_name(size):
    with pytest.raises(ValueError, match=exact(
            f"{WHERE}.gaussian_blur.kernel_size: got {size!r}; expected an odd int >= 1")):
        blur_kernel_of({"crop_size": 32, "gaussian_blur": {"kernel_size": size}}, WHERE)


def test_without_a_kernel_size_the_crop_size_gives_it_and_its_errors_name_the_entry():
    assert blur_kernel_of({"crop_size": 224, "gaussian_blur": {"prob": 0.5}}, WHERE) == 23
    with pytest.raises(ValueError, match=exact(f"{WHERE}.crop_size must be an int >= 1, got 0")):
        blur_kernel_of({"crop_size": 0}, WHERE)


# ------------------------------------------------------------ order


def test_an_order_must_list_rrc_even_when_the_crop_is_disabled():
    order = ["color_jitter", "horizontal_flip"]
    with pytest.raises(ValueError, match=exact(
            f"{WHERE}.order: {order} leaves out ['rrc'], which are on in this entry; list every "
            "op that is on (rrc always)")):
        op_order({"order": order, "rrc": {"enabled": False}, "color_jitter": {"prob": 0.8},
                  "horizontal_flip": {"prob": 0.5}}, WHERE)


def test_an_op_without_a_probability_is_off_and_may_be_left_out():
    order = ["rrc", "color_jitter"]
    aug = {"order": order, "color_jitter": {"prob": 0.8}, "gaussian_blur": {"kernel_size": 3},
           "solarization": {"prob": 0.0}}
    assert op_order(aug, WHERE) == ("rrc", "color_jitter")


# ------------------------------------------------------------ the authors' CIFAR-LT


def test_authors_counts_at_the_smallest_accepted_settings():
    assert authors_cifar_lt_counts(10, 2, 1.0) == [5, 5]
    assert authors_cifar_lt_counts(100, 2, 1.5) == [50, 33]


@pytest.mark.parametrize("num_classes,ratio,message", [
    (1, 10.0, "num_classes must be >= 2, got 1"),
    (10, 0.5, "imbalance_ratio must be >= 1, got 0.5"),
])
def test_authors_counts_refusals(num_classes, ratio, message):
    with pytest.raises(ValueError, match=exact(message)):
        authors_cifar_lt_counts(100, num_classes, ratio)


@pytest.mark.parametrize("targets,num_classes,message", [
    ([0, 1, 2], 2, "targets must lie in [0, 2), got [0, 2]"),
    ([-1, 0, 1], 2, "targets must lie in [0, 2), got [-1, 1]"),
    ([0, 0, 2, 2], 3, "every class in [0, 3) needs images; present: 2"),
    ([0, 1, 1, 1], 2, "class 0 has 1 images, 2 are needed"),
    ([[0, 1]], 2, "targets: expected a 1-D sequence of integer labels, got (1, 2)"),
])
def test_authors_selection_refusals(targets, num_classes, message):
    with pytest.raises(ValueError, match=exact(message)):
        authors_cifar_lt_indexes(targets, num_classes, 1.0)


# ------------------------------------------------------------ the multi-crop transform


def test_multicrop_description_lists_each_transform_with_its_count():
    transform = MultiCropTransform(["large", "small"], [2, 4])
    assert repr(transform) == "2 x large\n4 x small"
