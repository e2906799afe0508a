"""K-view SimCLR (multi-positive NT-Xent) against independent references."""

import math

import pytest
import torch
import torch.nn.functional as F

from solo_multiview.losses import mv_simclr
from solo_multiview.losses.band_filter import BandFilter
from solo_multiview.losses.mv_simclr import mv_nt_xent

T = 0.2


def two_view_nt_xent(z1, z2, t):
    """Textbook NT-Xent: cross-entropy over the 2B - 1 other embeddings, target = the twin."""
    b = z1.shape[0]
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (u @ u.T) / t
    logits = logits.masked_fill(torch.eye(2 * b, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return F.cross_entropy(logits, target)


def brute_force(z, idx, t, band=None):
    """Loop over anchors / positives / candidates with plain python sums."""
    u = F.normalize(z, dim=1)
    n = u.shape[0]
    s = [[(u[i] * u[a]).sum() for a in range(n)] for i in range(n)]

    def kept(i, a):
        if band is None:
            return True
        low, high, mode = band
        v = abs(float(s[i][a].detach()))
        return v >= low if mode == "low_only" else low <= v <= high

    terms = []
    for i in range(n):
        denom = sum(torch.exp(s[i][a] / t) for a in range(n) if a != i and kept(i, a))
        positives = [p for p in range(n) if p != i and idx[p] == idx[i] and kept(i, p)]
        if not positives:
            continue
        terms.append(-sum(torch.log(torch.exp(s[i][p] / t) / denom) for p in positives)
                     / len(positives))
    return sum(terms) / len(terms)


def make(k, b=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(k * b, d, generator=g, dtype=torch.float64)
    idx = torch.arange(b).repeat(k)  # crop-major
    return z, idx


def test_k2_equals_textbook_nt_xent():
    z, idx = make(2)
    loss, stats = mv_nt_xent(z, idx, T)
    torch.testing.assert_close(loss, two_view_nt_xent(z[:5], z[5:], T))
    assert stats["filtered_fraction"] == 0
    assert stats["num_positives"] == 10


def test_k2_equals_solo_learn():
    solo_simclr = pytest.importorskip("solo.losses.simclr")
    z, idx = make(2, b=6, seed=3)
    loss, _ = mv_nt_xent(z, idx, T)
    torch.testing.assert_close(loss, solo_simclr.simclr_loss_func(z, idx, temperature=T))


@pytest.mark.parametrize("k", [3, 4])
def test_k_views_equals_brute_force(k):
    z, idx = make(k, b=4, d=6, seed=k)
    loss, stats = mv_nt_xent(z, idx, T)
    torch.testing.assert_close(loss, brute_force(z, idx, T))
    assert stats["num_positives"] == k * 4 * (k - 1)


@pytest.mark.parametrize("band", [(0.1, 0.9, "band"), (0.3, 0.8, "band"), (0.25, 1.0, "low_only")])
def test_band_equals_brute_force_and_gradient_matches(band):
    z, idx = make(4, b=4, d=4, seed=11)
    z[4] = z[0] * 2.0  # image 0: crops 0 and 1 identical -> positive with s = 1, out of band
    z_a = z.clone().requires_grad_(True)
    z_b = z.clone().requires_grad_(True)
    loss, stats = mv_nt_xent(z_a, idx, T, band=None if band is None else BandFilter(*band))
    ref = brute_force(z_b, idx, T, band=band)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    assert torch.isfinite(z_a.grad).all()
    torch.testing.assert_close(z_a.grad, z_b.grad)

    u = F.normalize(z, dim=1)
    s = (u @ u.T).abs()
    off = ~torch.eye(16, dtype=torch.bool)
    low, high, mode = band
    inside = (s >= low) if mode == "low_only" else (s >= low) & (s <= high)
    removed = (~inside & off).sum().item()
    assert stats["filtered_fraction"].item() == pytest.approx(removed / (16 * 15))
    same = (idx.view(-1, 1) == idx.view(1, -1)) & off
    assert stats["num_positives"].item() == (same & inside).sum().item()


def test_out_of_band_positive_is_removed_from_numerator_and_denominator():
    # hand-built: 2 images x 2 crops in 3-d; image 0's crops coincide (s = 1 > high)
    z = torch.tensor(
        [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [1.0, 0.0, 0.0], [0.0, 0.6, 0.8]], dtype=torch.float64
    )
    idx = torch.tensor([0, 1, 0, 1])
    loss, stats = mv_nt_xent(z, idx, T, band=BandFilter(0.1, 0.9, "band"))
    # cosines: s01 = .6, s02 = 1, s03 = 0, s12 = .6, s13 = .48, s23 = 0
    # anchors 0 and 2 lose their positive (s = 1); anchor 1: candidates 0 (.6), 2 (.6), 3 (.48);
    # anchor 3: candidates 1 (.48) only (0 and 2 have s = 0 < low)
    e = math.exp
    l1 = -math.log(e(0.48 / T) / (e(0.6 / T) + e(0.6 / T) + e(0.48 / T)))
    l3 = -math.log(e(0.48 / T) / e(0.48 / T))
    assert loss.item() == pytest.approx((l1 + l3) / 2)
    # removed off-diagonal entries: (0,2),(2,0),(0,3),(3,0),(2,3),(3,2) = 6 of 12
    assert stats["filtered_fraction"].item() == pytest.approx(0.5)
    assert stats["num_anchors"].item() == 2


def test_no_anchor_left_gives_zero_with_graph():
    z, idx = make(2, b=3, d=5, seed=1)
    z[3:] = z[:3]  # every positive has s = 1 -> all removed by the band
    z.requires_grad_(True)
    loss, stats = mv_nt_xent(z, idx, T, band=BandFilter(0.1, 0.9, "band"))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    assert stats["num_anchors"] == 0


def test_scale_does_not_grow_with_k_closed_form():
    # crops of image b are all e_b (cos 1); different images are orthogonal (cos 0):
    # loss = -1/t + log((K - 1) e^{1/t} + (n - K)) for every anchor
    b = 6
    for k in (2, 4, 8):
        z = torch.eye(b, dtype=torch.float64).repeat(k, 1)
        idx = torch.arange(b).repeat(k)
        loss, _ = mv_nt_xent(z, idx, T)
        n = k * b
        expected = -1 / T + math.log((k - 1) * math.exp(1 / T) + (n - k))
        assert loss.item() == pytest.approx(expected)
        assert 0 < loss.item() < math.log(n)


def test_gradients_finite_float32():
    z = torch.randn(4 * 8, 16, requires_grad=True)
    loss, _ = mv_nt_xent(z, torch.arange(8).repeat(4), 0.1, band=BandFilter(0.1, 0.9, "band"))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_simulated_two_ranks_match_single_process(monkeypatch):
    """Local anchors x gathered candidates on each of 2 ranks == one process on the global batch."""
    k, b, w = 3, 4, 2
    z_global = torch.randn(w * k * b, 6, dtype=torch.float64, requires_grad=True)
    idx_global = torch.cat([torch.arange(b).repeat(k) + r * b for r in range(w)])
    ref = mv_nt_xent(z_global, idx_global, T)[0]
    (g_ref,) = torch.autograd.grad(ref, z_global)

    n = k * b
    losses = []
    for r in range(w):
        others = {rr: F.normalize(z_global[rr * n:(rr + 1) * n], dim=1) for rr in range(w)}

        def fake_gather(x, r=r, others=others):
            return torch.cat([x if rr == r else others[rr] for rr in range(w)])

        monkeypatch.setattr(mv_simclr, "rank_and_world", lambda r=r: (r, w))
        monkeypatch.setattr(mv_simclr, "gather_with_grad", fake_gather)
        monkeypatch.setattr(mv_simclr, "gather_no_grad", lambda x: idx_global)
        losses.append(mv_nt_xent(z_global[r * n:(r + 1) * n], idx_global[r * n:(r + 1) * n], T)[0])
    mean = sum(losses) / w
    torch.testing.assert_close(mean, ref)
    (g,) = torch.autograd.grad(mean, z_global)
    torch.testing.assert_close(g, g_ref)


def test_bad_inputs():
    with pytest.raises(ValueError, match="indexes"):
        mv_nt_xent(torch.randn(4, 3), torch.arange(3))
    with pytest.raises(ValueError, match="temperature"):
        mv_nt_xent(torch.randn(4, 3), torch.arange(4), 0.0)
    with pytest.raises(ValueError, match="method_kwargs.filter.mode"):
        mv_nt_xent(torch.randn(4, 3), torch.arange(4), 0.1, band=BandFilter(0.1, 0.9, "nope"))


def test_default_temperature_is_simclrs_imagenet_value():
    g = torch.Generator().manual_seed(11)
    z = torch.randn(8, 5, generator=g, dtype=torch.float64)
    indexes = torch.arange(4).repeat(2)
    assert mv_nt_xent(z, indexes)[0].item() == mv_nt_xent(z, indexes, 0.1)[0].item()
