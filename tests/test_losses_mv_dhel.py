"""MV-DHEL against the paper's ratio evaluated with Python loops in float64; K = 2 against
two-view DHEL; float32 at K = 8, B = 256, t = 0.1 where the ratio form overflows."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import tests.test_losses_polyview as pv
from solo_multiview.losses.band_filter import BandFilter
from solo_multiview.losses.mv_dhel import mv_dhel_loss
from tests.test_losses_polyview import dot, in_band, unit_views, views_of

T = 0.2
BANDS = [None, BandFilter(0.2, 0.8, "band"), BandFilter(0.25, 1.0, "low_only")]
SIZES = [(2, 5), (3, 4), (4, 3)]  # (K, B)


def reference(views: torch.Tensor, t: float, band=None):
    """(loss, contributing images): the ratio sum_{a != c} e^{pos} / prod_a sum_{n != b} e^{neg}
    per image, then the module's normalisation (2/K) (-log ratio + log(K (K - 1)))."""
    k, n_img, _ = views.shape
    z = unit_views(views)
    terms = []
    for b in range(n_img):
        pos = [dot(z[a][b], z[c][b]) for a in range(k) for c in range(k) if c != a]
        pos = [torch.exp(s / t) for s in pos if in_band(band, s)]
        energies = []
        for a in range(k):
            negs = [dot(z[a][b], z[a][n]) for n in range(n_img) if n != b]
            energies.append([torch.exp(s / t) for s in negs if in_band(band, s)])
        if not pos or not all(energies):
            continue
        ratio = sum(pos) / math.prod(sum(e) for e in energies)
        terms.append(2 / k * (-torch.log(ratio) + math.log(len(pos))))
    return sum(terms) / len(terms), len(terms)


def two_view_dhel(v1: torch.Tensor, v2: torch.Tensor, t: float) -> torch.Tensor:
    """DHEL with the augmentations' energy (arXiv 2405.18045): -log(e^{s(u_i, v_i)/t} /
    (sum_{j != i} e^{s(u_i, u_j)/t} * sum_{j != i} e^{s(v_i, v_j)/t}))."""
    u, v = F.normalize(v1, dim=1), F.normalize(v2, dim=1)
    off = ~torch.eye(u.shape[0], dtype=torch.bool)
    energy_u = torch.logsumexp((u @ u.T / t).masked_fill(~off, float("-inf")), dim=1)
    energy_v = torch.logsumexp((v @ v.T / t).masked_fill(~off, float("-inf")), dim=1)
    return (-(u * v).sum(dim=1) / t + energy_u + energy_v).mean()


def ratio_form_float32(views: torch.Tensor, t: float) -> torch.Tensor:
    """The authors' MVDHEL arithmetic (products of exponentials), in float32."""
    k, n_img, _ = views.shape
    z = F.normalize(views.float(), dim=-1)
    off = ~torch.eye(n_img, dtype=torch.bool)
    neg = torch.exp(torch.bmm(z, z.transpose(1, 2)) / t).masked_fill(~off, 0).sum(dim=-1)
    pairs = torch.triu(torch.ones(k, k, dtype=torch.bool), diagonal=1)
    pos = torch.exp(torch.einsum("abd,cbd->acb", z, z)[pairs] / t).sum(dim=0)
    return -torch.log(pos / torch.prod(neg, dim=0)).mean()


@pytest.mark.parametrize("band", BANDS, ids=["none", "band", "low_only"])
@pytest.mark.parametrize("k,b", SIZES)
def test_matches_reference_value_and_gradient(k, b, band):
    views = views_of(k, b, seed=2).requires_grad_(True)
    loss, stats = mv_dhel_loss(views, T, band)
    ref, n_images = reference(views, T, band)
    assert stats["num_samples"] == n_images
    torch.testing.assert_close(stats["alignment"] + stats["uniformity"], loss.detach())
    pv.assert_value_and_gradient_match(loss, ref, views)


def test_band_cases_drop_images():
    views = views_of(3, 4, seed=2)
    _, stats = mv_dhel_loss(views, T, BANDS[1])
    assert stats["num_samples"] == reference(views, T, BANDS[1])[1] == 3
    assert 0 < stats["filtered_fraction"] < 1


def test_image_whose_view_loses_every_negative_is_dropped():
    """B = 2: each view has a single negative. View 0's negative cosine (0.05) is outside the
    band, so both images have an empty energy sum and are dropped: the loss is a zero that keeps
    the graph, its gradient zero and finite."""
    views = torch.tensor([[[1.0, 0.0, 0.0], [0.05, 1.0, 0.0]],
                          [[1.0, 0.5, 0.0], [0.3, 1.0, 0.6]]], dtype=torch.float64)
    views.requires_grad_(True)
    loss, stats = mv_dhel_loss(views, T, BandFilter(0.1, 0.9))
    assert stats["num_samples"] == 0 and loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, views)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_k2_is_two_view_dhel_exactly():
    views = views_of(2, 6, d=5, seed=3)
    loss, _ = mv_dhel_loss(views, T)
    torch.testing.assert_close(loss, two_view_dhel(views[0], views[1], T), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [3, 4])
def test_equals_the_authors_ratio_up_to_the_stated_normalisation(k):
    """(2/K) (official + log(K (K - 1) / 2)), official = -log(sum_{a<c} e^{pos} / prod ...)."""
    views = views_of(k, 5, seed=6)
    loss, _ = mv_dhel_loss(views.float(), T)
    official = ratio_form_float32(views, T)
    torch.testing.assert_close(loss, 2 / k * (official + math.log(k * (k - 1) / 2)))


@pytest.mark.parametrize("k", [2, 4, 8])
def test_scale_does_not_grow_with_k(k):
    """Aligned views of B orthogonal images: alignment -(2/K)/t, uniformity 2 log(B - 1)."""
    b, t = 4, 0.5
    views = torch.eye(b, dtype=torch.float64).expand(k, b, b)
    loss, stats = mv_dhel_loss(views, t)
    assert stats["alignment"].item() == pytest.approx(-2 / k / t, rel=1e-12)
    assert stats["uniformity"].item() == pytest.approx(2 * math.log(b - 1), rel=1e-12)
    assert loss.item() == pytest.approx(2 * math.log(b - 1) - 2 / k / t, rel=1e-12)


def test_float32_k8_b256_t01_is_finite_where_the_ratio_overflows():
    """Nearly aligned embeddings (cosines ~0.99): each view's energy is ~255 e^{9.9}, their
    product over 8 views ~1e53 > float32's max; log space stays finite and equals float64."""
    g = torch.Generator().manual_seed(0)
    one_direction = torch.randn(1, 1, 32, generator=g, dtype=torch.float64)
    views = one_direction + 0.1 * torch.randn(8, 256, 32, generator=g, dtype=torch.float64)
    assert not torch.isfinite(ratio_form_float32(views, 0.1))
    pv.assert_float32_matches_float64(lambda v: mv_dhel_loss(v, 0.1)[0], views, atol=1e-5)


def test_list_of_views_equals_stacked_tensor():
    views = views_of(3, 4)
    torch.testing.assert_close(mv_dhel_loss(list(views), T)[0], mv_dhel_loss(views, T)[0],
                               rtol=0, atol=0)


def test_bad_arguments_raise_value_errors_naming_them():
    views = views_of(3, 4)
    for t in (0.0, -0.5, float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            mv_dhel_loss(views, t)
    with pytest.raises(ValueError, match="band"):
        mv_dhel_loss(views, T, band=(0.1, 0.9, "band"))
    with pytest.raises(ValueError, match="views"):
        mv_dhel_loss(views[:1], T)


def test_default_temperature_is_the_papers():
    views = views_of(3, 4, seed=2)
    assert mv_dhel_loss(views)[0].item() == mv_dhel_loss(views, 0.5)[0].item()


@pytest.mark.parametrize("band", BANDS[1:], ids=["band", "low_only"])
def test_stats_equal_their_loop_counts(band):
    """The entries MV-DHEL looks at are the ordered positive pairs (view a, view c != a of the
    same image) and the same-view negatives (view a of image b against view a of image n !=
    b); filtered_fraction is the share of them outside the band, num_positives the kept
    positive pairs."""
    k, b = 3, 4
    views = views_of(k, b, seed=2)
    z = unit_views(views)
    pairs = [(z[a][img], z[c][img]) for img in range(b) for a in range(k) for c in range(k)
             if c != a]
    negatives = [(z[a][img], z[a][n]) for a in range(k) for img in range(b) for n in range(b)
                 if n != img]
    kept_pairs = sum(in_band(band, dot(x, y)) for x, y in pairs)
    removed = (len(pairs) - kept_pairs) + sum(not in_band(band, dot(x, y)) for x, y in negatives)
    _, stats = mv_dhel_loss(views, T, band)
    assert stats["filtered_fraction"].item() == pytest.approx(
        removed / (len(pairs) + len(negatives)), abs=1e-6)
    assert stats["num_positives"].item() == kept_pairs
    assert removed > 0
