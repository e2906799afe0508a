"""MV-InfoNCE against a float64 reference written with Python loops from the paper's formula; the
K = 2 relation to two-view InfoNCE / NT-Xent; float32 at K = 8, B = 256, t = 0.1."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import tests.test_losses_polyview as pv
from solo_multiview.losses.band_filter import BandFilter
from solo_multiview.losses.mv_infonce import MV_INFONCE_NEGATIVES, mv_infonce_loss
from solo_multiview.losses.mv_simclr import mv_nt_xent
from tests.test_losses_polyview import dot, in_band, unit_views, views_of

T = 0.2
BANDS = [None, BandFilter(0.2, 0.8, "band"), BandFilter(0.45, 1.0, "low_only")]
SIZES = [(2, 5), (3, 4), (4, 3)]  # (K, B)


def reference(views: torch.Tensor, t: float, negatives: str, band=None):
    """(loss, contributing images): for each image, every ordered positive pair over the energy
    of every anchor view against its candidates (other views only, or every other embedding)."""
    k, n_img, _ = views.shape
    z = unit_views(views)
    terms = []
    for b in range(n_img):
        num, den = 0.0, 0.0
        for a in range(k):
            for c in range(k):
                for n in range(n_img):
                    if (c, n) == (a, b) or (negatives == "cross_view" and c == a):
                        continue
                    s = dot(z[a][b], z[c][n])
                    if not in_band(band, s):
                        continue
                    den = den + torch.exp(s / t)
                    if n == b:
                        num = num + torch.exp(s / t)
        if isinstance(num, torch.Tensor):
            terms.append(-torch.log(num / den))
    return sum(terms) / len(terms), len(terms)


def per_anchor_two_view(v1: torch.Tensor, v2: torch.Tensor, t: float, negatives: str):
    """(B, 2) per-anchor two-view losses: InfoNCE of each view against the other view
    (cross_view) or NT-Xent's anchor terms over the 2B - 1 others (all)."""
    b = v1.shape[0]
    u1, u2 = F.normalize(v1, dim=1), F.normalize(v2, dim=1)
    if negatives == "cross_view":
        target = torch.arange(b)
        return torch.stack([F.cross_entropy(u1 @ u2.T / t, target, reduction="none"),
                            F.cross_entropy(u2 @ u1.T / t, target, reduction="none")], dim=1)
    u = torch.cat([u1, u2])
    logits = (u @ u.T / t).masked_fill(torch.eye(2 * b, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return F.cross_entropy(logits, target, reduction="none").view(2, b).T


@pytest.mark.parametrize("band", BANDS, ids=["none", "band", "low_only"])
@pytest.mark.parametrize("negatives", MV_INFONCE_NEGATIVES)
@pytest.mark.parametrize("k,b", SIZES)
def test_matches_reference_value_and_gradient(k, b, negatives, band):
    views = views_of(k, b, seed=1).requires_grad_(True)
    loss, stats = mv_infonce_loss(views, T, band, negatives)
    ref, n_images = reference(views, T, negatives, band)
    assert stats["num_samples"] == n_images
    pv.assert_value_and_gradient_match(loss, ref, views)


def test_band_drops_images_without_a_kept_positive():
    views = views_of(2, 5, seed=1)
    _, stats = mv_infonce_loss(views, T, BANDS[2])
    assert stats["num_samples"] == reference(views, T, "cross_view", BANDS[2])[1] == 3
    assert stats["num_positives"] == 6  # the two directions of 3 kept pairs
    assert 0 < stats["filtered_fraction"] < 1


@pytest.mark.parametrize("negatives", MV_INFONCE_NEGATIVES)
def test_k2_is_the_log_mean_exp_of_the_two_anchor_losses(negatives):
    """One log per image: l_b = log((e^{l_b1} + e^{l_b2}) / 2) >= the mean of the two-view
    anchor losses, i.e. MV-InfoNCE >= symmetric InfoNCE / NT-Xent, strictly for generic views."""
    views = views_of(2, 6, d=5, seed=3)
    loss, _ = mv_infonce_loss(views, T, negatives=negatives)
    anchors = per_anchor_two_view(views[0], views[1], T, negatives)
    expected = (torch.logsumexp(anchors, dim=1) - math.log(2.0)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    assert loss > anchors.mean() + 1e-3


@pytest.mark.parametrize("negatives", MV_INFONCE_NEGATIVES)
def test_k2_equals_the_two_view_loss_when_the_anchors_denominators_agree(negatives):
    """Identical views give both anchors of an image the same denominator: MV-InfoNCE is then
    exactly symmetric InfoNCE (cross_view) / NT-Xent (all)."""
    v = views_of(1, 6, d=5, seed=4)[0]
    views = torch.stack([v, v.clone()])
    loss, _ = mv_infonce_loss(views, T, negatives=negatives)
    anchors = per_anchor_two_view(views[0], views[1], T, negatives)
    torch.testing.assert_close(loss, anchors.mean(), rtol=1e-12, atol=1e-12)
    if negatives == "all":
        ref, _ = mv_nt_xent(views.reshape(12, 5), torch.arange(6).repeat(2), T)
        torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_scale_does_not_grow_with_k(k):
    """Views equal to one vector per image, B mutually orthogonal images: the positives' share
    of the energy is K(K-1) e^{1/t} / (K(K-1) e^{1/t} + K(K-1)(B-1)) (cross_view), independent
    of K."""
    b, t = 4, 0.5
    views = torch.eye(b, dtype=torch.float64).expand(k, b, b)
    e = torch.tensor(1 / t, dtype=torch.float64).exp()
    loss, _ = mv_infonce_loss(views, t)
    torch.testing.assert_close(loss, -torch.log(e / (e + b - 1)), rtol=1e-12, atol=0)
    loss_all, _ = mv_infonce_loss(views, t, negatives="all")
    share = (k - 1) * e / ((k - 1) * e + k * (b - 1))  # + B - 1 same-view negatives
    torch.testing.assert_close(loss_all, -torch.log(share), rtol=1e-12, atol=0)


@pytest.mark.parametrize("negatives", MV_INFONCE_NEGATIVES)
def test_float32_k8_b256_is_finite_and_matches_float64(negatives):
    pv.assert_float32_matches_float64(
        lambda v: mv_infonce_loss(v, 0.1, negatives=negatives)[0], pv.near_views())


def test_bad_arguments_raise_value_errors_naming_them():
    views = views_of(3, 4)
    with pytest.raises(ValueError, match="negatives"):
        mv_infonce_loss(views, T, negatives="same_view")
    for t in (0.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            mv_infonce_loss(views, t)
    with pytest.raises(ValueError, match="band"):
        mv_infonce_loss(views, T, band=(0.1, 0.9, "band"))
    with pytest.raises(ValueError, match="views"):
        mv_infonce_loss(views[:1], T)


def test_default_temperature_is_the_papers():
    views = views_of(3, 4, seed=1)
    assert mv_infonce_loss(views)[0].item() == mv_infonce_loss(views, 0.5)[0].item()


@pytest.mark.parametrize("band", BANDS[1:], ids=["band", "low_only"])
def test_stats_equal_their_loop_counts(band):
    """filtered_fraction (a float32): the share of (anchor, candidate) entries, self excluded,
    outside the band; num_positives: the kept ordered (anchor view, other view) pairs of the
    same image."""
    k, b = 3, 4
    views = views_of(k, b, seed=1)
    z = unit_views(views)
    removed = entries = positives = 0
    for img in range(b):
        for a in range(k):
            for c in range(k):
                for n in range(b):
                    if (c, n) == (a, img):
                        continue
                    kept = in_band(band, dot(z[a][img], z[c][n]))
                    entries += 1
                    removed += not kept
                    positives += kept and n == img
    _, stats = mv_infonce_loss(views, T, band)
    assert stats["filtered_fraction"].item() == pytest.approx(removed / entries, abs=1e-6)
    assert stats["num_positives"].item() == positives
    assert 0 < removed < entries
