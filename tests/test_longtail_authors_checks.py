"""The authors' stratified subset (data/longtail_authors.stratified_fraction): the smallest
inputs it accepts, and the whole message of each input it refuses."""

from __future__ import annotations

import re

import numpy as np
import pytest

from solo_multiview.data.longtail_authors import stratified_fraction


@pytest.mark.parametrize("labels,fraction,kept", [
    ([0, 0], 0.5, 1),         # one class of 2 images: 1 kept, 1 left out
    ([0, 0, 0], 0.4, 1),      # train part of one image
    ([0, 0, 1, 1], 0.5, 2),   # each part exactly one image per class
])
def test_the_smallest_splits_are_accepted(labels, fraction, kept):
    out = stratified_fraction(labels, fraction, seed=3)
    assert out.dtype == np.int64
    assert len(out) == kept == len(set(out.tolist()))
    # stratified: every class keeps int(share) or one more
    got = np.bincount(np.asarray(labels)[out], minlength=max(labels) + 1)
    share = np.bincount(labels) * kept / len(labels)
    assert np.all((got == np.floor(share)) | (got == np.floor(share) + 1))


def test_the_fraction_defaults_to_the_authors_quarter():
    labels = np.repeat(np.arange(4), [8, 6, 4, 2])
    np.testing.assert_array_equal(stratified_fraction(labels, seed=1),
                                  stratified_fraction(labels, 0.25, seed=1))


@pytest.mark.parametrize("labels,fraction,n_total,message", [
    ([0, 0, 1, 1], 0.0, None, "fraction must lie in (0, 1), got 0.0"),
    ([0, 0, 1, 1], 1.0, None, "fraction must lie in (0, 1), got 1.0"),
    ([0, 0, 1, 1], 1.5, None, "fraction must lie in (0, 1), got 1.5"),
    ([0, 0, 1], 0.1, None, "train size 0 leaves no test part of 3 labels"),
    ([0, 0, 1, 1], 0.5, 8, "train size 4 leaves no test part of 4 labels"),
    ([0, 0, 1], 0.5, None, "every class needs at least 2 images; classes with 1: [1]"),
    ([0, 0, *range(1, 12)], 0.5, None,
     "every class needs at least 2 images; classes with 1: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"),
    ([0, 0, 1, 1, 2, 2], 0.34, None,
     "both parts need >= 3 images (one per class), got train 2, test 4"),
    ([0, 0, 1, 1, 2, 2], 0.67, None,
     "both parts need >= 3 images (one per class), got train 4, test 2"),
    ([[0, 1]], 0.5, None, "labels: expected a 1-D sequence of integer labels, got (1, 2)"),
])
def test_refused_inputs_name_what_is_wrong(labels, fraction, n_total, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        stratified_fraction(labels, fraction, n_total=n_total)
