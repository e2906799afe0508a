"""K-view VICReg against an independent reference and solo-learn."""

import itertools

import pytest
import torch

from solo_multiview.losses.mv_vicreg import mv_vicreg_loss


def var_term(z):
    n = z.shape[0]
    var = ((z - z.mean(0)) ** 2).sum(0) / (n - 1)
    return torch.clamp(1 - torch.sqrt(var + 1e-4), min=0).mean()


def cov_term(z):
    n, d = z.shape
    zc = z - z.mean(0)
    total = 0.0
    for i in range(d):
        for j in range(d):
            if i != j:
                total = total + ((zc[:, i] * zc[:, j]).sum() / (n - 1)) ** 2
    return total / d


def mse(a, b):
    return ((a - b) ** 2).mean()


def views(k, b=8, d=4, seed=0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(k, b, d, generator=g, dtype=torch.float64)


def test_k2_equals_reference():
    z = views(2)
    ref = (
        25 * mse(z[0], z[1])
        + 25 * (var_term(z[0]) + var_term(z[1]))
        + 1 * (cov_term(z[0]) + cov_term(z[1]))
    )
    torch.testing.assert_close(mv_vicreg_loss(z), ref)
    assert var_term(z[0]) > 0  # the variance hinge is active in this test


def test_k2_equals_solo_learn():
    solo_vicreg = pytest.importorskip("solo.losses.vicreg")
    z = views(2, b=10, d=6, seed=1)
    ref = solo_vicreg.vicreg_loss_func(z[0], z[1], 10.0, 20.0, 3.0)
    torch.testing.assert_close(mv_vicreg_loss(list(z), 10.0, 20.0, 3.0), ref)


@pytest.mark.parametrize("k", [3, 4])
def test_k_views_brute_force(k):
    z = views(k, seed=k)
    pairs = list(itertools.combinations(range(k), 2))
    inv = sum(mse(z[i], z[j]) for i, j in pairs) / len(pairs)
    var = 2 / k * sum(var_term(z[v]) for v in range(k))
    cov = 2 / k * sum(cov_term(z[v]) for v in range(k))
    torch.testing.assert_close(mv_vicreg_loss(z, 2.0, 3.0, 4.0), 2 * inv + 3 * var + 4 * cov)


def test_scale_does_not_grow_with_k():
    z1 = views(1, seed=5)[0]
    l2 = mv_vicreg_loss(z1.expand(2, -1, -1))
    l6 = mv_vicreg_loss(z1.expand(6, -1, -1))
    torch.testing.assert_close(l2, l6)
    assert l2.item() > 0


def test_gradients_finite():
    z = views(4).float().requires_grad_(True)
    mv_vicreg_loss(z).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
