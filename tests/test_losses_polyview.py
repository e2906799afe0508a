"""Poly-View losses against a float64 reference written with Python loops from the paper's
formulas; K = 2 against textbook NT-Xent and mv_nt_xent; float32 at K = 8, B = 256, t = 0.1."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from solo_multiview.losses.band_filter import BandFilter
from solo_multiview.losses.mv_simclr import mv_nt_xent
from solo_multiview.losses.polyview import POLYVIEW_FORMS, polyview_loss

T = 0.2
BANDS = [None, BandFilter(0.2, 0.8, "band"), BandFilter(0.35, 1.0, "low_only")]
SIZES = [(2, 5), (3, 4), (4, 3)]  # (K, B)


# ----------------------------------------------------------------- scalar float64 helpers
def views_of(k: int, b: int, d: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 17 * k + b)
    return torch.randn(k, b, d, generator=g, dtype=torch.float64)


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / sum(x[i] * x[i] for i in range(x.shape[0])) ** 0.5


def dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return sum(x[i] * y[i] for i in range(x.shape[0]))


def in_band(band, s: torch.Tensor) -> bool:
    """The filter's rule, restated: keep |s| in [low, high] (band) or |s| >= low (low_only)."""
    if band is None:
        return True
    v = abs(float(s.detach()))
    return v >= band.low if band.mode == "low_only" else band.low <= v <= band.high


def unit_views(views: torch.Tensor):
    return [[unit(views[a, b]) for b in range(views.shape[1])] for a in range(views.shape[0])]


# ----------------------------------------------------------------- the reference
def reference(views: torch.Tensor, t: float, form: str, band=None):
    """(loss, contributing anchors): loops over images b, anchor views a, positives c."""
    k, n_img, _ = views.shape
    z = unit_views(views)
    terms = []
    for b in range(n_img):
        for a in range(k):
            if form == "sufficient_statistics":
                summary = [unit(sum(z[c][n] for c in range(k) if c != a)) for n in range(n_img)]
                pos = dot(z[a][b], summary[b])
                if not in_band(band, pos):
                    continue
                cands = [dot(z[a][b], summary[n]) for n in range(n_img)]
                cands += [dot(z[a][b], z[a][n]) for n in range(n_img) if n != b]
                den = sum(torch.exp(s / t) for s in cands if in_band(band, s))
                terms.append(-torch.log(torch.exp(pos / t) / den))
                continue
            negs = [dot(z[a][b], z[g][n]) for n in range(n_img) if n != b for g in range(k)]
            neg_sum = sum(torch.exp(s / t) for s in negs if in_band(band, s))
            probs = []
            for c in range(k):
                s = dot(z[a][b], z[c][b])
                if c != a and in_band(band, s):
                    probs.append(torch.exp(s / t) / (torch.exp(s / t) + neg_sum))
            if not probs:
                continue
            if form == "geometric":
                terms.append(-sum(torch.log(p) for p in probs) / len(probs))
            else:
                terms.append(-torch.log(sum(probs) / len(probs)))
    return sum(terms) / len(terms), len(terms)


def textbook_nt_xent(v1: torch.Tensor, v2: torch.Tensor, t: float, band=None) -> torch.Tensor:
    """NT-Xent over the 2B - 1 other embeddings (entries outside the band removed; anchors whose
    twin is removed dropped)."""
    b = v1.shape[0]
    u = F.normalize(torch.cat([v1, v2]), dim=1)
    cos = u @ u.T
    keep = ~torch.eye(2 * b, dtype=torch.bool)
    if band is not None:
        keep &= band.keep(cos)
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    rows = keep[torch.arange(2 * b), target]
    logits = (cos / t).masked_fill(~keep, float("-inf"))
    return F.cross_entropy(logits[rows], target[rows])


def assert_value_and_gradient_match(loss, ref, views: torch.Tensor) -> None:
    """The vectorised loss equals the reference, and so do their gradients w.r.t. ``views``."""
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(loss, views)
    (ref_grad,) = torch.autograd.grad(ref, views)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------- tests
@pytest.mark.parametrize("band", BANDS, ids=["none", "band", "low_only"])
@pytest.mark.parametrize("form", POLYVIEW_FORMS)
@pytest.mark.parametrize("k,b", SIZES)
def test_matches_reference_value_and_gradient(k, b, form, band):
    views = views_of(k, b).requires_grad_(True)
    loss, stats = polyview_loss(views, T, form, band)
    ref, n_anchors = reference(views, T, form, band)
    assert stats["num_anchors"] == n_anchors
    assert_value_and_gradient_match(loss, ref, views)


def test_band_cases_drop_anchors_and_report_the_removed_fraction():
    """The filtered cases above really remove entries, drop some anchors and keep others with
    only part of their positives (else they would test little)."""
    views, band = views_of(3, 4), BANDS[2]
    _, none = polyview_loss(views, T, "geometric")
    _, geo = polyview_loss(views, T, "geometric", band)
    _, ss = polyview_loss(views, T, "sufficient_statistics", band)
    assert none["filtered_fraction"] == 0 and none["num_anchors"] == 12
    assert none["num_positives"] == 24
    assert geo["num_anchors"] == reference(views, T, "geometric", band)[1] == 11
    assert geo["num_positives"] < 2 * geo["num_anchors"]  # some kept anchors lost a positive
    assert ss["num_anchors"] == reference(views, T, "sufficient_statistics", band)[1] == 5
    # removed / non-self entries of the (K B) x (K N) matrix, counted here directly
    u = F.normalize(views, dim=-1).reshape(12, -1)
    cos = u @ u.T
    off = ~torch.eye(12, dtype=torch.bool)
    expected = (~band.keep(cos) & off).sum() / off.sum()
    torch.testing.assert_close(geo["filtered_fraction"], expected.float())
    # sufficient statistics: anchor (k, i) against the B summaries of the other views and the
    # B other images of its own view (its own image there is not a candidate), by loops
    v = F.normalize(views.double(), dim=-1)
    removed = candidates = 0
    for k in range(3):
        summaries = F.normalize(sum(v[c] for c in range(3) if c != k), dim=-1)
        for i in range(4):
            row = [v[k, i] @ summaries[j] for j in range(4)] + [
                v[k, i] @ v[k, j] for j in range(4) if j != i]
            kept = band.keep(torch.stack(row))
            removed += int((~kept).sum())
            candidates += len(row)
    assert 0 < removed < candidates
    assert ss["filtered_fraction"].item() == pytest.approx(removed / candidates)


@pytest.mark.parametrize("band", BANDS, ids=["none", "band", "low_only"])
@pytest.mark.parametrize("form", POLYVIEW_FORMS)
def test_k2_is_nt_xent_exactly(form, band):
    views = views_of(2, 6, d=5, seed=3)
    loss, _ = polyview_loss(views, T, form, band)
    torch.testing.assert_close(loss, textbook_nt_xent(views[0], views[1], T, band),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("band", BANDS, ids=["none", "band", "low_only"])
@pytest.mark.parametrize("form", POLYVIEW_FORMS)
def test_k2_equals_mv_nt_xent(form, band):
    views = views_of(2, 6, d=5, seed=4)
    # mv_nt_xent takes crop-major rows and image identities
    ref, ref_stats = mv_nt_xent(views.reshape(12, 5), torch.arange(6).repeat(2), T, band)
    loss, stats = polyview_loss(views, T, form, band)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    assert stats["num_anchors"] == ref_stats["num_anchors"]


def test_k2_equals_solo_learn():
    solo_simclr = pytest.importorskip("solo.losses.simclr")
    views = views_of(2, 6, d=5, seed=5)
    ref = solo_simclr.simclr_loss_func(views.reshape(12, 5), torch.arange(6).repeat(2),
                                       temperature=T)
    for form in POLYVIEW_FORMS:
        torch.testing.assert_close(polyview_loss(views, T, form)[0], ref)


def test_arithmetic_is_below_geometric_beyond_two_views():
    """Jensen: -log(mean p) <= mean(-log p), strictly for K > 2 (unequal p)."""
    for k in (3, 4):
        views = views_of(k, 4, seed=9)
        geo, _ = polyview_loss(views, T, "geometric")
        ari, _ = polyview_loss(views, T, "arithmetic")
        assert ari < geo - 1e-3


@pytest.mark.parametrize("k", [2, 4, 8])
def test_scale_is_a_per_anchor_mean(k):
    """Aligned views of B mutually orthogonal images: every p = e^{1/t} / (e^{1/t} + (B-1) K)
    and every summary is the image itself, so the loss is one closed-form term, not K of them."""
    b, t = 4, 0.5
    views = torch.eye(b, dtype=torch.float64).expand(k, b, b)
    e = math.exp(1 / t)
    pvc = -math.log(e / (e + (b - 1) * k))
    ss = -math.log(e / (e + (b - 1) * 2))  # b summaries (b - 1 negatives) + b - 1 same-view
    for form, value in [("geometric", pvc), ("arithmetic", pvc), ("sufficient_statistics", ss)]:
        loss, _ = polyview_loss(views, t, form)
        assert loss.item() == pytest.approx(value, rel=1e-12)


def test_list_of_views_equals_stacked_tensor():
    views = views_of(3, 4)
    for form in POLYVIEW_FORMS:
        torch.testing.assert_close(polyview_loss(list(views), T, form)[0],
                                   polyview_loss(views, T, form)[0], rtol=0, atol=0)


def assert_float32_matches_float64(loss_fn, views64: torch.Tensor, atol: float = 1e-6) -> None:
    """``loss_fn(views)`` in float32 is finite, has a finite gradient, and both equal float64."""
    views64 = views64.detach().requires_grad_(True)
    views32 = views64.detach().float().requires_grad_(True)
    loss64, loss32 = loss_fn(views64), loss_fn(views32)
    assert loss32.dtype == torch.float32 and torch.isfinite(loss32)
    torch.testing.assert_close(loss32.double(), loss64, rtol=1e-5, atol=atol)
    (g32,) = torch.autograd.grad(loss32, views32)
    (g64,) = torch.autograd.grad(loss64, views64)
    assert torch.isfinite(g32).all()
    torch.testing.assert_close(g32.double(), g64, rtol=1e-3, atol=atol / 10)


def near_views(k: int = 8, b: int = 256, d: int = 16, noise: float = 0.3) -> torch.Tensor:
    """K views of B images: image directions plus view noise (positives cos ~ 0.9)."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(b, d, generator=g, dtype=torch.float64)
    return base + noise * torch.randn(k, b, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("form", POLYVIEW_FORMS)
def test_float32_k8_b256_is_finite_and_matches_float64(form):
    assert_float32_matches_float64(lambda v: polyview_loss(v, 0.1, form)[0], near_views())


def test_bad_arguments_raise_value_errors_naming_them():
    views = views_of(3, 4)
    with pytest.raises(ValueError, match="form"):
        polyview_loss(views, T, "harmonic")
    for t in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            polyview_loss(views, t)
    with pytest.raises(ValueError, match="band"):
        polyview_loss(views, T, band=(0.1, 0.9, "band"))
    with pytest.raises(ValueError, match="views"):
        polyview_loss(views[:1], T)
    with pytest.raises(ValueError, match="views"):
        polyview_loss(views[0], T)
    with pytest.raises(ValueError, match="views"):
        polyview_loss([views[0], views[1, :3]], T)


def test_default_temperature_is_simclrs_imagenet_value():
    views = views_of(3, 4)
    for form in POLYVIEW_FORMS:
        torch.testing.assert_close(polyview_loss(views, form=form)[0],
                                   polyview_loss(views, 0.1, form)[0], rtol=0, atol=0)


@pytest.mark.parametrize("form", POLYVIEW_FORMS)
def test_num_positives_counts_the_kept_pairs(form):
    """Without a filter: K (K - 1) B ordered (anchor, positive) pairs, or K B (anchor, summary
    of the other views) pairs in the sufficient-statistics form. With a band keeping
    |cosine| >= 0.5: the pairs that pass it, counted here with loops."""
    k, b = 3, 4
    views = views_of(k, b)
    unit_views = F.normalize(views, dim=-1)
    if form == "sufficient_statistics":
        positives = [(unit_views[i, n], F.normalize(sum(unit_views[c, n] for c in range(k)
                                                        if c != i), dim=0))
                     for n in range(b) for i in range(k)]
    else:
        positives = [(unit_views[i, n], unit_views[j, n])
                     for n in range(b) for i in range(k) for j in range(k) if i != j]
    _, stats = polyview_loss(views, T, form)
    assert stats["num_positives"].item() == len(positives)
    _, stats = polyview_loss(views, T, form, BandFilter(0.5, 1.0, "band"))
    kept = sum(int(abs(torch.dot(a, p).item()) >= 0.5) for a, p in positives)
    assert 0 < kept < len(positives)
    assert stats["num_positives"].item() == kept
