"""FastSiam loss against a per-sample float64 reference, SimSiam at K = 2 and mv_simsiam."""

from __future__ import annotations

import math

import pytest
import torch

from solo_multiview.losses.fastsiam import fastsiam_loss
from solo_multiview.losses.mv_simsiam import mv_simsiam_loss


def views(k: int, b: int = 5, d: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, b, d, generator=g, dtype=torch.float64)


def cosine(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Cosine of two vectors, coordinate by coordinate."""
    dot = sum(a[i] * c[i] for i in range(a.shape[0]))
    norm_a = sum(a[i] * a[i] for i in range(a.shape[0])) ** 0.5
    norm_c = sum(c[i] * c[i] for i in range(c.shape[0])) ** 0.5
    return dot / (norm_a * norm_c)


def reference(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Explicit loops: every view v and sample b, the target is the mean of the other views."""
    num_pred, batch, _ = p.shape
    k = z.shape[0]
    z = z.detach()
    total = torch.zeros((), dtype=torch.float64)
    for v in range(num_pred):
        others = [j for j in range(k) if j != v]
        for b in range(batch):
            target = sum(z[j, b] for j in others) / len(others)
            total = total - cosine(p[v, b], target)
    return total / (num_pred * batch)


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("batch", [1, 3, 7])
def test_matches_reference_values_and_gradients(k, batch):
    p = views(k, batch, seed=k + 10 * batch).requires_grad_(True)
    z = views(k, batch, seed=100 + k + 10 * batch)
    loss, stats = fastsiam_loss(p, z)
    (grad,) = torch.autograd.grad(loss, p)

    p_ref = p.detach().clone().requires_grad_(True)
    ref = reference(p_ref, z)
    (grad_ref,) = torch.autograd.grad(ref, p_ref)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grad, grad_ref)
    torch.testing.assert_close(stats["target_cosine"], -ref.detach())


@pytest.mark.parametrize("k", [2, 3])
def test_small_crops_use_mean_of_all_large_crops(k):
    p = views(k + 2, seed=3).requires_grad_(True)  # two small crops after the K large ones
    z = views(k, seed=4)
    loss, _ = fastsiam_loss(p, z)
    (grad,) = torch.autograd.grad(loss, p)
    p_ref = p.detach().clone().requires_grad_(True)
    ref = reference(p_ref, z)  # small crop v >= K: every j < K is "another view"
    (grad_ref,) = torch.autograd.grad(ref, p_ref)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grad, grad_ref)


def neg_cos(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """solo-learn's simsiam_loss_func (negative cosine, stop-gradient target), written out."""
    return -torch.nn.functional.cosine_similarity(p, z.detach(), dim=-1).mean()


def test_k2_equals_simsiam_and_mv_simsiam():
    p = views(2, b=6, d=5, seed=1).requires_grad_(True)
    z = views(2, b=6, d=5, seed=2)
    loss, _ = fastsiam_loss(list(p), list(z))
    (grad,) = torch.autograd.grad(loss, p)

    simsiam = (neg_cos(p[0], z[1]) + neg_cos(p[1], z[0])) / 2
    (grad_simsiam,) = torch.autograd.grad(simsiam, p)
    torch.testing.assert_close(loss, simsiam)
    torch.testing.assert_close(grad, grad_simsiam)

    repo = mv_simsiam_loss(p, z)
    (grad_repo,) = torch.autograd.grad(repo, p)
    torch.testing.assert_close(loss, repo)
    torch.testing.assert_close(grad, grad_repo)


def test_k2_equals_solo_learn():
    solo_simsiam = pytest.importorskip("solo.losses.simsiam")
    p, z = views(2, seed=5), views(2, seed=6)
    ref = (
        solo_simsiam.simsiam_loss_func(p[0], z[1]) / 2
        + solo_simsiam.simsiam_loss_func(p[1], z[0]) / 2
    )
    torch.testing.assert_close(fastsiam_loss(p, z)[0], ref)


def test_k3_differs_from_mv_simsiam():
    # cosine to the mean of the other views is not the mean of the cosines
    p, z = views(3, seed=7), views(3, seed=8)
    assert fastsiam_loss(p, z)[0].item() != pytest.approx(mv_simsiam_loss(p, z).item())


def test_target_is_mean_of_raw_projections():
    # view 0's target at K = 3 is (z_1 + z_2) / 2 of the raw (unnormalised) projections
    z = torch.tensor([[[1.0, 0.0]], [[4.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)
    p = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[1.0, 0.0]]], dtype=torch.float64)
    loss, _ = fastsiam_loss(p, z)
    # targets: v0 -> (2, 0.5), v1 -> (0.5, 0.5), v2 -> (2.5, 0); cosines with (1, 0)
    expected = -(2 / math.sqrt(4.25) + 1 / math.sqrt(2) + 1.0) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_stop_gradient_on_targets():
    p = views(3, seed=9).requires_grad_(True)
    z = views(3, seed=10).requires_grad_(True)
    loss, stats = fastsiam_loss(p, z)
    loss.backward()
    assert z.grad is None
    assert p.grad is not None and torch.isfinite(p.grad).all()
    assert not stats["target_cosine"].requires_grad


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_scale_does_not_grow_with_k(k):
    x = views(1, seed=11)[0]
    loss, _ = fastsiam_loss(x.expand(k, -1, -1), x.expand(k, -1, -1))
    assert loss.item() == pytest.approx(-1.0, abs=1e-12)
    y = views(1, seed=12)[0]  # predictions all y, targets all x: the same cosine for every K
    loss_xy, _ = fastsiam_loss(y.expand(k, -1, -1), x.expand(k, -1, -1))
    torch.testing.assert_close(loss_xy, neg_cos(y, x))


def test_bad_inputs_raise():
    p, z = views(3), views(3)
    with pytest.raises(ValueError, match="fastsiam_loss: z"):
        fastsiam_loss(p, z[:1])
    with pytest.raises(ValueError, match="fastsiam_loss: p"):
        fastsiam_loss(p[:1], z[:1])
    with pytest.raises(ValueError, match="target views z"):
        fastsiam_loss(p[:2], z)
    with pytest.raises(ValueError, match="share"):
        fastsiam_loss(p, views(3, d=6))
    with pytest.raises(ValueError, match="fastsiam_loss: p"):
        fastsiam_loss(p[0], z)
