"""K-view Barlow Twins against an independent reference and solo-learn."""

import itertools

import pytest
import torch

from solo_multiview.losses.mv_barlow_twins import mv_barlow_twins_loss


def standardise(z, eps=1e-5):
    mean = z.mean(0)
    var = ((z - mean) ** 2).mean(0)  # biased, as BatchNorm normalises
    return (z - mean) / torch.sqrt(var + eps)


def barlow_reference(z1, z2, lamb, scale):
    a, b = standardise(z1), standardise(z2)
    n, d = a.shape
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = (a[:, i] * b[:, j]).sum() / n
            total = total + ((1 - c) ** 2 if i == j else lamb * c**2)
    return scale * total


def views(k, b=8, d=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, b, d, generator=g, dtype=dtype)


def test_k2_equals_reference():
    z = views(2)
    torch.testing.assert_close(
        mv_barlow_twins_loss(z, lamb=0.01, scale_loss=0.1), barlow_reference(z[0], z[1], 0.01, 0.1)
    )


def test_k2_equals_solo_learn():
    solo_barlow = pytest.importorskip("solo.losses.barlow")
    z = views(2, b=16, d=6, dtype=torch.float32)  # solo's BatchNorm1d buffers are float32
    ref = solo_barlow.barlow_loss_func(z[0], z[1], lamb=5e-3, scale_loss=0.025)
    torch.testing.assert_close(mv_barlow_twins_loss(list(z)), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [3, 4])
def test_k_views_mean_over_unordered_pairs(k):
    z = views(k, seed=k)
    pairs = list(itertools.combinations(range(k), 2))
    ref = sum(barlow_reference(z[i], z[j], 5e-3, 0.025) for i, j in pairs) / len(pairs)
    torch.testing.assert_close(mv_barlow_twins_loss(z), ref)


def test_scale_does_not_grow_with_k():
    z1 = views(1, seed=3)[0]
    l2 = mv_barlow_twins_loss(z1.expand(2, -1, -1))
    l5 = mv_barlow_twins_loss(z1.expand(5, -1, -1))
    torch.testing.assert_close(l2, l5)
    assert l2.item() > 0


def test_gradients_finite():
    z = views(3, dtype=torch.float32).requires_grad_(True)
    mv_barlow_twins_loss(z).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
