"""The extreme-feature filter: hand-built similarities, validation, config parsing."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from solo_multiview.losses.band_filter import BandFilter
from solo_multiview.methods.options import FilterKwargs, band_filter

# |s|:       0.05   0.05   0.1   0.1   0.5   0.5   0.9   0.9   0.95  0.95   1.0  1.0
SIMS = torch.tensor(
    [[0.05, -0.05, 0.1, -0.1, 0.5, -0.5, 0.9, -0.9, 0.95, -0.95, 1.0, -1.0]], dtype=torch.float64
)


def test_band_keeps_exactly_low_le_abs_le_high():
    expected = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(BandFilter(0.1, 0.9, "band").keep(SIMS), expected)


def test_low_only_keeps_abs_ge_low():
    expected = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(BandFilter(0.1, 0.9, "low_only").keep(SIMS), expected)


def test_other_band_and_shape():
    sims = SIMS.reshape(3, 4)
    mask = BandFilter(0.5, 0.95, "band").keep(sims)
    assert mask.shape == (3, 4) and mask.dtype == torch.bool
    brute = [[0.5 <= abs(v) <= 0.95 for v in row] for row in sims.tolist()]
    assert mask.tolist() == brute


def test_mask_has_no_grad():
    s = SIMS.clone().requires_grad_(True)
    assert not BandFilter().keep(s).requires_grad


@pytest.mark.parametrize(
    "low, high",
    [(0.9, 0.1), (0.5, 0.5), (-0.1, 0.9), (0.1, 1.5), (math.nan, 0.9), (0.1, "a"), (True, 0.9)],
)
def test_invalid_bounds_name_the_config_keys(low, high):
    keys = r"method_kwargs\.filter\.low.*method_kwargs\.filter\.high"
    with pytest.raises(ValueError, match=keys):
        BandFilter(low, high, "band")


def test_invalid_mode_names_the_config_key():
    with pytest.raises(ValueError, match=r"method_kwargs\.filter\.mode.*band, low_only"):
        BandFilter(0.1, 0.9, "upper")


def test_off_is_spelled_one_way():
    """"none" is no mode: a disabled filter is ``enabled: false``, i.e. ``None``."""
    with pytest.raises(ValueError, match="enabled: false"):
        BandFilter(0.1, 0.9, "none")
    node = OmegaConf.structured(FilterKwargs)
    assert band_filter(node) is None
    node.enabled = True
    assert band_filter(node) == BandFilter(0.1, 0.9, "band")


def test_boundaries_allowed():
    assert BandFilter(0, 1, "band") == BandFilter(0.0, 1.0, "band")
    assert BandFilter(0.0, 1.0, "band").keep(SIMS).all()


def test_filter_from_config_node():
    node = OmegaConf.create({"enabled": True, "low": 0.15, "high": 0.85, "mode": "low_only"})
    assert band_filter(node) == BandFilter(0.15, 0.85, "low_only")
    with pytest.raises(ValueError, match=r"method_kwargs\.filter\.low"):
        band_filter(OmegaConf.create({"enabled": True, "low": 0.95, "high": 0.9, "mode": "band"}))


def test_weighted_mean_of_one_selected_entry_is_that_entry():
    """The count is clamped at 1 only to avoid 0 / 0: one selected value is its own mean."""
    from solo_multiview.losses._common import weighted_mean

    values = torch.tensor([3.0, 5.0, 9.0])
    assert weighted_mean(values, torch.tensor([False, True, False])).item() == 5.0
    assert weighted_mean(values, torch.tensor([True, False, True])).item() == 6.0
    assert weighted_mean(values, torch.zeros(3, dtype=torch.bool)).item() == 0.0
