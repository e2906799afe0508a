"""The extreme-feature filter: hand-built similarities, validation, config parsing."""

import math

import pytest
import torch

from solo_multiview.losses.band_filter import Band, band_from_cfg, keep_mask, validate_band

# |s|:       0.05   0.05   0.1   0.1   0.5   0.5   0.9   0.9   0.95  0.95   1.0  1.0
SIMS = torch.tensor(
    [[0.05, -0.05, 0.1, -0.1, 0.5, -0.5, 0.9, -0.9, 0.95, -0.95, 1.0, -1.0]], dtype=torch.float64
)


def test_band_keeps_exactly_low_le_abs_le_high():
    expected = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(keep_mask(SIMS, 0.1, 0.9, "band"), expected)


def test_low_only_keeps_abs_ge_low():
    expected = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(keep_mask(SIMS, 0.1, 0.9, "low_only"), expected)


def test_none_keeps_everything():
    assert keep_mask(SIMS, 0.1, 0.9, "none").all()


def test_other_band_and_shape():
    sims = SIMS.reshape(3, 4)
    mask = keep_mask(sims, 0.5, 0.95, "band")
    assert mask.shape == (3, 4) and mask.dtype == torch.bool
    brute = [[0.5 <= abs(v) <= 0.95 for v in row] for row in sims.tolist()]
    assert mask.tolist() == brute


def test_mask_has_no_grad():
    s = SIMS.clone().requires_grad_(True)
    assert not keep_mask(s).requires_grad


@pytest.mark.parametrize(
    "low, high",
    [(0.9, 0.1), (0.5, 0.5), (-0.1, 0.9), (0.1, 1.5), (math.nan, 0.9), (0.1, "a"), (True, 0.9)],
)
def test_invalid_bounds_name_the_config_keys(low, high):
    keys = r"method_kwargs\.filter\.low.*method_kwargs\.filter\.high"
    with pytest.raises(ValueError, match=keys):
        validate_band(low, high, "band")
    with pytest.raises(ValueError):
        keep_mask(SIMS, low, high, "band")


def test_invalid_mode_names_the_config_key():
    with pytest.raises(ValueError, match=r"method_kwargs\.filter\.mode.*band, low_only, none"):
        validate_band(0.1, 0.9, "upper")


def test_boundaries_allowed():
    assert validate_band(0, 1, "band") == Band(0.0, 1.0, "band")
    assert keep_mask(SIMS, 0.0, 1.0, "band").all()


def test_band_from_cfg():
    assert band_from_cfg(None) is None
    assert band_from_cfg({}) is None
    assert band_from_cfg({"mode": "none"}) is None
    assert band_from_cfg({"low": 0.2}) == Band(0.2, 0.9, "band")
    assert band_from_cfg({"low": 0.3, "high": 1.0, "mode": "low_only"}) == (0.3, 1.0, "low_only")
    with pytest.raises(ValueError, match=r"method_kwargs\.filter.*unknown.*'lo'"):
        band_from_cfg({"lo": 0.2})
    with pytest.raises(ValueError, match=r"method_kwargs\.filter\.low"):
        band_from_cfg({"low": 0.95})


def test_band_from_omegaconf():
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"low": 0.15, "high": 0.85, "mode": "band"})
    assert band_from_cfg(cfg) == Band(0.15, 0.85, "band")
