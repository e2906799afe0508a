"""MTTV's filtered InfoNCE, both forms, against explicit per-anchor loops."""

import math

import pytest
import torch
import torch.nn.functional as F

from solo_multiview.losses import mttv
from solo_multiview.losses.band_filter import BandFilter
from solo_multiview.losses.mttv import mttv_infonce
from solo_multiview.losses.mv_simclr import mv_nt_xent

T = 0.3



def band_of(low, high, mode):
    """The filter object of (low, high, mode); mode "none" is no filter."""
    return None if mode == "none" else BandFilter(low, high, mode)


def kept(s, low, high, mode):
    v = abs(float(s.detach()))
    if mode == "none":
        return True
    if mode == "low_only":
        return v >= low
    return low <= v <= high


def interleaved_cosines(zo, zt):
    """Layout of the authors' code: rows online_0, target_0, online_1, target_1, ..."""
    e = torch.stack([zo, zt.detach()], dim=1).reshape(-1, zo.shape[1])
    e = F.normalize(e, dim=1)
    return e @ e.T


def principled_loop(zo, zt, t, low, high, mode):
    s = interleaved_cosines(zo, zt)
    n = s.shape[0]
    terms = []
    for i in range(n):
        p = i ^ 1  # partner in the interleaved layout
        if not kept(s[i, p], low, high, mode):
            continue
        denom = sum(
            torch.exp(s[i, a] / t) for a in range(n) if a != i and kept(s[i, a], low, high, mode)
        )
        terms.append(-torch.log(torch.exp(s[i, p] / t) / denom))
    if not terms:
        return None
    return sum(terms) / len(terms)


def official_loop(zo, zt, t, low, high, mode):
    """r_i = [p kept] e^{s_ip/t} / (sum_{a kept, a = i included} e^{s_ia/t} - e^{1/t})."""
    s = interleaved_cosines(zo, zt)
    n = s.shape[0]
    ratios = []
    for i in range(n):
        p = i ^ 1
        numer = torch.exp(s[i, p] / t) if kept(s[i, p], low, high, mode) else s[i, p] * 0
        denom = sum(torch.exp(s[i, a] / t) for a in range(n) if kept(s[i, a], low, high, mode))
        ratios.append(numer / (denom - math.exp(1 / t)))
    return -torch.log(sum(ratios) / n)


def make(m=6, d=5, seed=0, special_rows=True):
    g = torch.Generator().manual_seed(seed)
    zo = torch.randn(m, d, generator=g, dtype=torch.float64)
    zt = torch.randn(m, d, generator=g, dtype=torch.float64)
    if special_rows:
        zt[0] = 3.0 * zo[0]  # positive cosine 1 > high: outside the band
        zo[1] = 0.0
        zt[1] = 0.0
        zo[1, 0] = 1.0
        zt[1, 1] = 1.0  # cosine 0 < low
    return zo, zt


CASES = [(0.1, 0.9, "band"), (0.2, 0.7, "band"), (0.1, 0.9, "low_only"), (0.1, 0.9, "none")]


@pytest.mark.parametrize("low, high, mode", CASES)
def test_principled_equals_loop(low, high, mode):
    zo, zt = make()
    zo_a = zo.clone().requires_grad_(True)
    zo_b = zo.clone().requires_grad_(True)
    loss, _ = mttv_infonce(zo_a, zt, T, band_of(low, high, mode), "principled")
    ref = principled_loop(zo_b, zt, T, low, high, mode)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    assert torch.isfinite(zo_a.grad).all()
    torch.testing.assert_close(zo_a.grad, zo_b.grad)


@pytest.mark.parametrize("low, high, mode", CASES)
def test_official_equals_loop(low, high, mode):
    zo, zt = make(m=16, d=4, seed=2)
    zo_a = zo.clone().requires_grad_(True)
    zo_b = zo.clone().requires_grad_(True)
    loss, _ = mttv_infonce(zo_a, zt, T, band_of(low, high, mode), "official")
    ref = official_loop(zo_b, zt, T, low, high, mode)
    assert torch.isfinite(ref)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    assert torch.isfinite(zo_a.grad).all()
    torch.testing.assert_close(zo_a.grad, zo_b.grad)


def test_positive_outside_band_drops_the_anchor():
    zo, zt = make()
    with_special, _ = mttv_infonce(zo, zt, T, BandFilter(0.1, 0.9, "band"))
    # the same loss computed by hand without anchors 0 and 1 (both directions)
    s = interleaved_cosines(zo, zt)
    keep = (s.abs() >= 0.1) & (s.abs() <= 0.9)
    assert not keep[0, 1] and not keep[2, 3]
    per = []
    for i in range(4, 12):
        p = i ^ 1
        if keep[i, p]:
            others = [a for a in range(12) if a != i and keep[i, a]]
            per.append(torch.logsumexp(s[i, others] / T, 0) - s[i, p] / T)
    torch.testing.assert_close(with_special, torch.stack(per).mean())


def test_mode_none_principled_is_nt_xent():
    zo, zt = make(special_rows=False)
    loss, stats = mttv_infonce(zo, zt, T, band=None)
    ref, _ = mv_nt_xent(torch.cat([zo, zt]), torch.arange(6).repeat(2), T)
    torch.testing.assert_close(loss, ref)
    assert stats["filtered_fraction"] == 0


def test_official_can_have_negative_denominators():
    # 2 pairs, band removes the self-similarity and most entries: sum of kept terms < e^{1/t}
    zo, zt = make(m=2, d=5, seed=5, special_rows=False)
    loss, _ = mttv_infonce(zo, zt, T, BandFilter(0.1, 0.9, "band"), "official")
    ref = official_loop(zo, zt, T, 0.1, 0.9, "band")
    assert torch.isnan(ref)  # the official formula itself gives garbage here
    assert torch.isnan(loss)
    principled, _ = mttv_infonce(zo, zt, T, BandFilter(0.1, 0.9, "band"), "principled")
    assert torch.isfinite(principled)


def test_stats():
    zo, zt = make(m=7, seed=4)
    _, stats = mttv_infonce(zo, zt, T, BandFilter(0.1, 0.9, "band"))
    u_o, u_t = F.normalize(zo, dim=1), F.normalize(zt, dim=1)
    u = torch.cat([u_o, u_t])
    s = u @ u.T
    n = 14
    off = ~torch.eye(n, dtype=torch.bool)
    outside = (s.abs() < 0.1) | (s.abs() > 0.9)
    removed = (outside & off).sum().item()
    assert stats["filtered_fraction"].item() == pytest.approx(removed / (n * (n - 1)))
    assert stats["pos_cos"].item() == pytest.approx((u_o * u_t).sum(1).mean().item())
    negs = [s[i, a].item() for i in range(n) for a in range(n) if a != i and a != (i + 7) % n]
    assert stats["neg_cos"].item() == pytest.approx(sum(negs) / len(negs))
    assert stats["alignment"].item() == pytest.approx((u_o - u_t).pow(2).sum(1).mean().item())
    unif = torch.log(torch.exp(-2 * torch.pdist(u).pow(2)).mean())
    assert stats["uniformity"].item() == pytest.approx(unif.item())


def test_target_gets_no_gradient_and_no_anchor_gives_zero_with_graph():
    zo = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    zt = (2 * zo).detach().requires_grad_(True)  # every positive has cosine 1 -> all dropped
    loss, _ = mttv_infonce(zo, zt, T, BandFilter(0.1, 0.9, "band"))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert zt.grad is None
    assert torch.equal(zo.grad, torch.zeros_like(zo))


def test_gradients_finite_float32():
    zo = torch.randn(32, 16, requires_grad=True)
    zt = torch.randn(32, 16)
    for form in ("principled", "official"):
        loss, _ = mttv_infonce(zo, zt, 0.3, form=form)
        (g,) = torch.autograd.grad(loss, zo)
        assert torch.isfinite(loss) and torch.isfinite(g).all()


def test_small_temperature_is_stable():
    # e^{1/t} overflows float32 for t = 0.005; the principled form uses log-sum-exp and stays
    # finite (the official form subtracts e^{1/t}, so at small t it is a cancellation by design)
    zo, zt = make(m=16, special_rows=False)
    loss, _ = mttv_infonce(zo.float(), zt.float(), 0.005, band=None)
    assert torch.isfinite(loss)


def test_simulated_two_ranks_match_single_process(monkeypatch):
    m, w = 4, 2
    zo = torch.randn(w * m, 5, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(w * m, 5, dtype=torch.float64)
    ref = mttv_infonce(zo, zt, T, band=None)[0]
    (g_ref,) = torch.autograd.grad(ref, zo)
    norm_o, norm_t = F.normalize(zo, dim=1), F.normalize(zt, dim=1)
    losses = []
    for r in range(w):
        sl = slice(r * m, (r + 1) * m)

        def gather_o(x, r=r):
            return torch.cat([x if rr == r else norm_o[rr * m:(rr + 1) * m] for rr in range(w)])

        monkeypatch.setattr(mttv, "rank_and_world", lambda r=r: (r, w))
        monkeypatch.setattr(mttv, "gather_with_grad", gather_o)
        monkeypatch.setattr(mttv, "gather_no_grad", lambda x: norm_t.detach())
        losses.append(mttv_infonce(zo[sl], zt[sl], T, band=None)[0])
    mean = sum(losses) / w
    torch.testing.assert_close(mean, ref)
    (g,) = torch.autograd.grad(mean, zo)
    torch.testing.assert_close(g, g_ref)


def test_bad_inputs():
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match="form"):
        mttv_infonce(z, z, form="paper")
    with pytest.raises(ValueError, match=r"method_kwargs\.filter\.low"):
        mttv_infonce(z, z, band=BandFilter(low=0.9, high=0.1))
    with pytest.raises(ValueError, match="same shape"):
        mttv_infonce(z, torch.randn(2, 4))


# --------------------------------------------------------------------------- precision, syncs
def boolean_mask_stats(zo, zt):
    """The stats as boolean-mask indexing computes them (the form before the masked sums)."""
    u = torch.cat([F.normalize(zo, dim=1), F.normalize(zt, dim=1)])
    s = u @ u.T
    n, m = s.shape[0], zo.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    neg = off.clone()
    neg[torch.arange(n), (torch.arange(n) + m) % n] = False
    sq = (2 - 2 * s).clamp(min=0)
    return {"neg_cos": s[neg].mean(),
            "uniformity": torch.logsumexp(-2 * sq[off], 0) - math.log(n * (n - 1))}


@pytest.mark.parametrize("form", ["principled", "official"])
def test_masked_sum_stats_equal_boolean_mask_stats(form):
    zo, zt = make(m=9, d=6, seed=7)
    _, stats = mttv_infonce(zo, zt, T, BandFilter(0.1, 0.9, "band"), form)
    for key, value in boolean_mask_stats(zo, zt).items():
        torch.testing.assert_close(stats[key], value, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", ["principled", "official"])
def test_similarities_in_fp32_under_autocast(form):
    g = torch.Generator().manual_seed(3)
    zo = torch.randn(64, 32, generator=g).bfloat16().requires_grad_(True)
    zt = torch.randn(64, 32, generator=g).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, stats = mttv_infonce(zo, zt, T, band=None, form=form)
    assert loss.dtype == torch.float32 and stats["pos_cos"].dtype == torch.float32
    ref, _ = mttv_infonce(zo.detach().float(), zt.float(), T, band=None, form=form)
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-6, atol=1e-6)
    loss.backward()
    assert zo.grad.dtype == torch.bfloat16 and torch.isfinite(zo.grad.float()).all()


def test_official_counts_nonpositive_denominators():
    zo, zt = make(m=2, d=5, seed=5, special_rows=False)  # the NaN case above
    _, stats = mttv_infonce(zo, zt, T, BandFilter(0.1, 0.9, "band"), "official")
    s = interleaved_cosines(zo, zt)
    bad = sum(
        float(sum(math.exp(float(s[i, a]) / T) for a in range(4) if kept(s[i, a], 0.1, 0.9, "band"))
              - math.exp(1 / T)) <= 0 for i in range(4))
    assert bad > 0 and stats["nonpositive_denominators"].item() == bad
    _, stats = mttv_infonce(zo, zt, T, BandFilter(0.1, 0.9, "band"), "principled")
    assert "nonpositive_denominators" not in stats


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs are measured on CUDA")
@pytest.mark.parametrize("form", ["principled", "official"])
def test_no_host_sync_on_cuda(form):
    zo = torch.randn(256, 128, device="cuda", requires_grad=True)
    zt = torch.randn(256, 128, device="cuda")
    mttv_infonce(zo, zt, T, BandFilter(0.1, 0.9, "band"), form)  # warm-up (lazy init)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, stats = mttv_infonce(zo, zt, T, BandFilter(0.1, 0.9, "band"), form)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss) and loss.dtype == torch.float32


def test_default_temperature_is_the_authors():
    zo, zt = make(m=4, d=6, seed=9, special_rows=False)
    assert mttv_infonce(zo, zt)[0].item() == mttv_infonce(zo, zt, 0.3)[0].item()


def test_official_counts_only_denominators_at_or_below_zero():
    """Without a filter every row keeps its 2M - 1 other entries, so no denominator is <= 0,
    though some are below 1 here (a sum of terms exp((s - 1) / t) < 1). With
    low_only at 0.9 and orthogonal embeddings only the self-similarity (s = 1, exp(0) = 1)
    survives: every denominator is 1 - 1 = 0 exactly, and counted."""
    zo, zt = make(m=4, d=6, seed=9, special_rows=False)
    s = interleaved_cosines(zo, zt)
    denominators = [sum(math.exp((float(s[i, a]) - 1) / T) for a in range(8) if a != i)
                    for i in range(8)]
    assert all(d > 0 for d in denominators) and any(d < 1 for d in denominators)
    _, stats = mttv_infonce(zo, zt, T, None, "official")
    assert stats["nonpositive_denominators"].item() == 0
    eye = torch.eye(2, dtype=torch.float64)
    _, stats = mttv_infonce(eye[:1], eye[1:], T, BandFilter(0.9, 1.0, "low_only"), "official")
    assert stats["nonpositive_denominators"].item() == 2
