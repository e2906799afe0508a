"""K-view SimSiam loss against independent references and solo-learn."""

import pytest
import torch

from solo_multiview.losses.mv_simsiam import mv_simsiam_loss


def neg_cos(p, z):
    return -((p * z).sum(1) / (p.norm(dim=1) * z.norm(dim=1))).mean()


def views(k, b=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, b, d, generator=g, dtype=torch.float64)


def test_k2_equals_two_view_reference():
    p, z = views(2), views(2, seed=1)
    ref = (neg_cos(p[0], z[1]) + neg_cos(p[1], z[0])) / 2
    torch.testing.assert_close(mv_simsiam_loss(p, z), ref)


def test_k2_equals_solo_learn():
    solo_simsiam = pytest.importorskip("solo.losses.simsiam")
    p, z = views(2), views(2, seed=1)
    ref = (
        solo_simsiam.simsiam_loss_func(p[0], z[1]) / 2
        + solo_simsiam.simsiam_loss_func(p[1], z[0]) / 2
    )
    torch.testing.assert_close(mv_simsiam_loss(list(p), list(z)), ref)


@pytest.mark.parametrize("k", [3, 4])
def test_k_views_mean_over_ordered_pairs(k):
    p, z = views(k, seed=k), views(k, seed=10 + k)
    terms = [neg_cos(p[i], z[j]) for i in range(k) for j in range(k) if i != j]
    torch.testing.assert_close(mv_simsiam_loss(p, z), sum(terms) / len(terms))


def test_small_crops():
    p, z = views(5, seed=2), views(3, seed=3)
    terms = [neg_cos(p[v], z[j]) for j in range(3) for v in range(5) if v != j]
    torch.testing.assert_close(mv_simsiam_loss(p, z), sum(terms) / len(terms))


def test_scale_does_not_grow_with_k():
    p1, z1 = views(1, seed=7)[0], views(1, seed=8)[0]
    l2 = mv_simsiam_loss(p1.expand(2, -1, -1), z1.expand(2, -1, -1))
    l4 = mv_simsiam_loss(p1.expand(4, -1, -1), z1.expand(4, -1, -1))
    torch.testing.assert_close(l2, l4)
    x = views(1, seed=9).expand(4, -1, -1)  # identical views, prediction = projection
    assert mv_simsiam_loss(x, x).item() == pytest.approx(-1.0)


def test_stop_gradient_and_finite_gradients():
    p = views(3).requires_grad_(True)
    z = views(3, seed=1).requires_grad_(True)
    mv_simsiam_loss(p, z).backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert z.grad is None
