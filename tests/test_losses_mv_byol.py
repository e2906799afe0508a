"""K-view BYOL loss against independent references and solo-learn."""

import itertools

import pytest
import torch

from solo_multiview.losses.mv_byol import mv_byol_loss


def byol_l(p, z):
    """2 - 2 cos, mean over the batch, cosine written out by hand."""
    cos = (p * z).sum(1) / (p.norm(dim=1) * z.norm(dim=1))
    return 2 - 2 * cos.mean()


def views(k, b=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, b, d, generator=g, dtype=torch.float64)


def test_k2_equals_symmetrised_two_view_loss():
    p, z = views(2), views(2, seed=1)
    torch.testing.assert_close(mv_byol_loss(p, z), byol_l(p[0], z[1]) + byol_l(p[1], z[0]))


def test_k2_equals_solo_learn():
    solo_byol = pytest.importorskip("solo.losses.byol")
    p, z = views(2), views(2, seed=1)
    ref = solo_byol.byol_loss_func(p[0], z[1]) + solo_byol.byol_loss_func(p[1], z[0])
    torch.testing.assert_close(mv_byol_loss(list(p), list(z)), ref)


@pytest.mark.parametrize("k", [3, 4])
def test_k_views_mean_over_unordered_pairs(k):
    p, z = views(k, seed=k), views(k, seed=10 + k)
    pairs = list(itertools.combinations(range(k), 2))
    ref = sum(byol_l(p[i], z[j]) + byol_l(p[j], z[i]) for i, j in pairs) / len(pairs)
    torch.testing.assert_close(mv_byol_loss(p, z), ref)


def test_small_crops_compared_to_every_large_target():
    k, s = 2, 3
    p, z = views(k + s, seed=3), views(k, seed=4)
    terms = [byol_l(p[v], z[j]) for j in range(k) for v in range(k + s) if v != j]
    assert len(terms) == k * (k - 1) + s * k
    torch.testing.assert_close(mv_byol_loss(p, z), 2 * sum(terms) / len(terms))


def test_small_crops_relation_to_solo_sum():
    solo_byol = pytest.importorskip("solo.losses.byol")
    k, s = 2, 2
    p, z = views(k + s, seed=5), views(k, seed=6)
    solo_sum = sum(
        solo_byol.byol_loss_func(p[v2], z[v1]) for v1 in range(k) for v2 in range(k + s) if v2 != v1
    )
    torch.testing.assert_close(mv_byol_loss(p, z) * (1 + s), solo_sum)


def test_scale_does_not_grow_with_k():
    p1, z1 = views(1, seed=7)[0], views(1, seed=8)[0]
    losses = [mv_byol_loss(p1.expand(k, -1, -1), z1.expand(k, -1, -1)) for k in (2, 4, 6)]
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(losses[0], losses[2])
    assert 0 <= mv_byol_loss(views(5), views(5, seed=2)).item() <= 8


def test_gradients_only_through_predictions():
    p = views(4).requires_grad_(True)
    z = views(4, seed=1).requires_grad_(True)
    mv_byol_loss(p, z).backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert z.grad is None


def test_bad_inputs():
    with pytest.raises(ValueError, match="target views"):
        mv_byol_loss(views(2), views(3))
    with pytest.raises(ValueError, match="at least 2"):
        mv_byol_loss(views(1), views(1))
    with pytest.raises(ValueError, match="same"):
        mv_byol_loss([torch.randn(4, 3), torch.randn(5, 3)], views(2, b=4, d=3))
