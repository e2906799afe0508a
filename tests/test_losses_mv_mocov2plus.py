"""K-view MoCo v2+ with per-view queues against independent references and solo-learn."""

import pytest
import torch
import torch.nn.functional as F

from solo_multiview.losses.band_filter import BandFilter
from solo_multiview.losses.mv_mocov2plus import mv_mocov2plus_loss

T = 0.2


def make(k, b=5, d=4, qsize=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(k, b, d, generator=g, dtype=torch.float64), dim=-1)
    key = F.normalize(torch.randn(k, b, d, generator=g, dtype=torch.float64), dim=-1)
    queue = F.normalize(torch.randn(k, d, qsize, generator=g, dtype=torch.float64), dim=1)
    return q, key, queue


def nce_loop(q, k, queue, t, band=None):
    """List of (per-sample loss) for one (query view, key view) pair, None where dropped."""
    out = []
    for b in range(q.shape[0]):
        sims = [(q[b] * k[b]).sum()] + [(q[b] * queue[:, m]).sum() for m in range(queue.shape[1])]

        def kept(s):
            if band is None:
                return True
            low, high, mode = band
            v = abs(float(s.detach()))
            return v >= low if mode == "low_only" else low <= v <= high

        if not kept(sims[0]):
            out.append(None)
            continue
        log_denom = torch.logsumexp(torch.stack([s / t for s in sims if kept(s)]), dim=0)
        out.append(log_denom - sims[0] / t)
    return out


def test_k2_equals_two_view_reference():
    q, k, queue = make(2)
    l12 = torch.stack(nce_loop(q[0], k[1], queue[1], T)).mean()
    l21 = torch.stack(nce_loop(q[1], k[0], queue[0], T)).mean()
    loss, stats = mv_mocov2plus_loss(q, k, queue, T)
    torch.testing.assert_close(loss, (l12 + l21) / 2)
    assert stats["filtered_fraction"] == 0


def test_k2_equals_solo_learn():
    solo_moco = pytest.importorskip("solo.losses.mocov2plus")
    q, k, queue = make(2, b=6, d=5, qsize=11, seed=1)
    ref = (
        solo_moco.mocov2plus_loss_func(q[0], k[1], queue[1], T)
        + solo_moco.mocov2plus_loss_func(q[1], k[0], queue[0], T)
    ) / 2
    loss, _ = mv_mocov2plus_loss(list(q), list(k), queue, T)
    torch.testing.assert_close(loss, ref)


def test_inputs_are_normalised():
    q, k, queue = make(3, seed=2)
    a, _ = mv_mocov2plus_loss(q, k, queue, T)
    b, _ = mv_mocov2plus_loss(3 * q, 0.5 * k, 2 * queue, T)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kv", [3, 4])
def test_k_views_brute_force(kv):
    q, k, queue = make(kv, seed=kv)
    terms = [
        torch.stack(nce_loop(q[i], k[j], queue[j], T)).mean()
        for i in range(kv)
        for j in range(kv)
        if i != j
    ]
    loss, stats = mv_mocov2plus_loss(q, k, queue, T)
    torch.testing.assert_close(loss, sum(terms) / len(terms))
    assert stats["num_positives"] == kv * (kv - 1) * 5


@pytest.mark.parametrize("band", [(0.1, 0.9, "band"), (0.3, 0.8, "band"), (0.3, 1.0, "low_only")])
def test_band_brute_force(band):
    kv = 3
    q, k, queue = make(kv, b=6, d=3, qsize=9, seed=7)
    k[1, 0] = q[0, 0]  # positive (q_0, k_1) of sample 0: cosine 1, outside [.., 0.9]
    q_a = q.clone().requires_grad_(True)
    q_b = q.clone().requires_grad_(True)
    q_b_unit = F.normalize(q_b, dim=-1)  # same function of q_b as inside the loss
    band_filter = None if band is None else BandFilter(*band)
    loss, stats = mv_mocov2plus_loss(q_a, k, queue, T, band=band_filter)
    terms = [
        x
        for i in range(kv)
        for j in range(kv)
        if i != j
        for x in nce_loop(q_b_unit[i], k[j], queue[j], T, band)
        if x is not None
    ]
    ref = torch.stack(terms).mean()
    torch.testing.assert_close(loss, ref)
    assert stats["num_positives"].item() == len(terms) < kv * (kv - 1) * 6
    loss.backward()
    ref.backward()
    assert torch.isfinite(q_a.grad).all()
    torch.testing.assert_close(q_a.grad, q_b.grad)

    low, high, mode = band
    removed, total = 0, 0
    for i in range(kv):
        for j in range(kv):
            if i != j:
                sims = torch.cat([(q[i] * k[j]).sum(1, keepdim=True), q[i] @ queue[j]], dim=1).abs()
                inside = sims >= low if mode == "low_only" else (sims >= low) & (sims <= high)
                removed += (~inside).sum().item()
                total += sims.numel()
    assert stats["filtered_fraction"].item() == pytest.approx(removed / total)


def test_all_positives_removed_gives_zero_with_graph():
    q, k, queue = make(2)
    q.requires_grad_(True)
    band = BandFilter(0.1, 0.9, "band")
    loss, stats = mv_mocov2plus_loss(q, q.detach().flip(0), queue, T, band=band)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(q.grad, torch.zeros_like(q))
    assert stats["num_positives"] == 0


def test_scale_does_not_grow_with_k():
    q, k, queue = make(1, seed=3)
    l2, _ = mv_mocov2plus_loss(q.expand(2, -1, -1), k.expand(2, -1, -1), queue.expand(2, -1, -1))
    l5, _ = mv_mocov2plus_loss(q.expand(5, -1, -1), k.expand(5, -1, -1), queue.expand(5, -1, -1))
    torch.testing.assert_close(l2, l5)


def test_gradients_only_through_queries():
    q, k, queue = make(3)
    q.requires_grad_(True)
    k.requires_grad_(True)
    loss, _ = mv_mocov2plus_loss(q, k, queue, 0.07)
    loss.backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    assert k.grad is None


def test_bad_shapes():
    q, k, queue = make(3)
    with pytest.raises(ValueError, match="queue must have shape"):
        mv_mocov2plus_loss(q, k, queue[:2])
    with pytest.raises(ValueError, match="same shape"):
        mv_mocov2plus_loss(q, k[:2], queue)


def test_default_temperature_is_mocos():
    q, k, queue = make(3)
    assert mv_mocov2plus_loss(q, k, queue)[0].item() == mv_mocov2plus_loss(q, k, queue, 0.1)[
        0].item()


def test_half_inputs_are_computed_in_float32():
    """bfloat16 queries, keys and queue (what a bf16-mixed encoder gives) give the float32 loss
    of the same numbers, not a bfloat16 computation."""
    q, k, queue = (x.float().bfloat16() for x in make(3))
    loss, stats = mv_mocov2plus_loss(q, k, queue, T)
    expected, expected_stats = mv_mocov2plus_loss(q.float(), k.float(), queue.float(), T)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    assert stats["num_positives"] == expected_stats["num_positives"]
