"""MMCR loss against a per-sample float64 reference (nuclear norms from Gram eigenvalues)."""

from __future__ import annotations

import math

import pytest
import torch

from solo_multiview.losses.mmcr import mmcr_loss


def views(k: int, b: int = 5, d: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, b, d, generator=g, dtype=torch.float64)


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / sum(x[i] * x[i] for i in range(x.shape[0])) ** 0.5


def nuclear_norm(m: torch.Tensor) -> torch.Tensor:
    """Sum of singular values as square roots of the eigenvalues of the smaller Gram matrix."""
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return torch.linalg.eigvalsh(gram).sqrt().sum()


def reference(z: torch.Tensor, lmbda: float) -> torch.Tensor:
    """Loops over samples and views: normalise, centroid, nuclear norms."""
    k, batch, _ = z.shape
    centroids, view_nuc = [], []
    for b in range(batch):
        rows = [unit(z[v, b]) for v in range(k)]
        centroids.append(sum(rows) / k)
        view_nuc.append(nuclear_norm(torch.stack(rows)))
    loss = -nuclear_norm(torch.stack(centroids))
    if lmbda:
        loss = loss + lmbda * sum(view_nuc) / batch
    return loss


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("batch", [3, 6, 9])
@pytest.mark.parametrize("lmbda", [0.0, 0.7])
def test_matches_reference_values_and_gradients(k, batch, lmbda):
    # d = 6: batch 3 (B < d), 6 and 9 (B >= d) take both Gram shapes in the reference
    z = views(k, batch, d=6, seed=k + 10 * batch).requires_grad_(True)
    loss, stats = mmcr_loss(z, lmbda=lmbda)
    (grad,) = torch.autograd.grad(loss, z)

    z_ref = z.detach().clone().requires_grad_(True)
    ref = reference(z_ref, lmbda)
    (grad_ref,) = torch.autograd.grad(ref, z_ref)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grad, grad_ref)
    if lmbda:
        torch.testing.assert_close(stats["centroid_nuclear_norm"] - lmbda
                                   * stats["view_nuclear_norm"], -ref.detach())
    else:
        torch.testing.assert_close(stats["centroid_nuclear_norm"], -ref.detach())
        assert stats["view_nuclear_norm"].item() == 0.0


def test_list_input_equals_tensor_input():
    z = views(3, seed=1)
    torch.testing.assert_close(mmcr_loss(list(z), 0.3)[0], mmcr_loss(z, 0.3)[0])


def test_scaling_the_embeddings_leaves_the_loss_unchanged():
    # lightly's plain path (no normalisation) would return 5x / per-row-scaled values here
    z = views(3, b=7, d=5, seed=2)
    g = torch.Generator().manual_seed(3)
    factors = torch.rand(3, 7, 1, generator=g, dtype=torch.float64) * 10 + 0.1
    base, _ = mmcr_loss(z, lmbda=0.5)
    torch.testing.assert_close(mmcr_loss(5.0 * z, lmbda=0.5)[0], base)
    torch.testing.assert_close(mmcr_loss(factors * z, lmbda=0.5)[0], base)
    unnormalised = -torch.linalg.svdvals(z.mean(0)).sum()
    torch.testing.assert_close(-torch.linalg.svdvals((5.0 * z).mean(0)).sum(), 5 * unnormalised)


def test_known_values():
    # views agree, centroids orthonormal: |C|_* = d; each Z_b is K copies of e_b: |Z_b|_* = sqrt(K)
    d, k = 4, 3
    z = torch.eye(d, dtype=torch.float64).expand(k, -1, -1) * 2.0
    loss, stats = mmcr_loss(z, lmbda=0.25)
    assert loss.item() == pytest.approx(-d + 0.25 * math.sqrt(k), rel=1e-12)
    assert stats["centroid_norm"].item() == pytest.approx(1.0, rel=1e-12)
    # collapse: every centroid the same unit vector, |C|_* = sqrt(B)
    collapsed = torch.ones(k, 9, d, dtype=torch.float64)
    assert mmcr_loss(collapsed)[0].item() == pytest.approx(-3.0, rel=1e-12)
    # two opposite views per sample: centroids vanish
    e = torch.eye(d, dtype=torch.float64)
    assert mmcr_loss(torch.stack([e, -e]))[0].item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_centroid_term_does_not_grow_with_k(k):
    x = views(1, b=6, d=5, seed=4)[0]
    loss, _ = mmcr_loss(x.expand(k, -1, -1))
    torch.testing.assert_close(loss, -torch.linalg.svdvals(torch.nn.functional.normalize(
        x, dim=-1)).sum())


def test_float32_and_half_inputs():
    z = views(3, seed=5)
    ref = mmcr_loss(z, 0.1)[0]
    torch.testing.assert_close(mmcr_loss(z.float(), 0.1)[0].double(), ref, rtol=1e-5, atol=1e-5)
    half_loss = mmcr_loss(z.bfloat16(), 0.1)[0]
    assert half_loss.dtype == torch.float32
    assert torch.isfinite(half_loss)


def test_global_batch_flag_is_identity_without_process_group():
    z = views(3, seed=6)
    torch.testing.assert_close(mmcr_loss(z, 0.2, global_batch=False)[0], mmcr_loss(z, 0.2)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_algebra_leaves_autocast(dtype):
    """Under a bfloat16 autocast the loss of float32 or bfloat16 embeddings is the float32 loss
    of the same numbers (the singular values are not taken of bfloat16 products)."""
    z = views(3, seed=7).to(dtype)
    # float64 is not autocast: the reference holds whatever the loss does inside
    expected, expected_stats = mmcr_loss(z.double(), 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, stats = mmcr_loss(z, 0.1)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    for key in expected_stats:
        torch.testing.assert_close(stats[key].double(), expected_stats[key], rtol=1e-5,
                                   atol=1e-5)


def test_bad_inputs_raise():
    z = views(3)
    with pytest.raises(ValueError, match="lmbda"):
        mmcr_loss(z, lmbda=-0.1)
    with pytest.raises(ValueError, match="lmbda"):
        mmcr_loss(z, lmbda=float("nan"))
    with pytest.raises(ValueError, match="mmcr_loss: views"):
        mmcr_loss(z[:1])
    with pytest.raises(ValueError, match="mmcr_loss: views"):
        mmcr_loss(z[0])
    with pytest.raises(ValueError, match="mmcr_loss: views"):
        mmcr_loss([z[0], z[1, :, :3]])


def test_finite_gradients_at_rank_deficient_inputs():
    # identical views (each Z_b rank 1) and a fully collapsed batch: zero singular values
    x = views(1, b=6, d=4, seed=7).expand(3, -1, -1).clone().requires_grad_(True)
    collapsed = torch.ones(3, 6, 4, dtype=torch.float64, requires_grad=True)
    for z in (x, collapsed):
        loss, _ = mmcr_loss(z, lmbda=0.5)
        loss.backward()
        assert torch.isfinite(z.grad).all()


def test_centroid_norm_is_the_mean_length_of_the_per_sample_centroids():
    """centroid_norm: the mean over samples b of |c_b|, c_b the mean of b's unit views (a loop
    here); 1 only when the views agree."""
    z = views(3, b=5, d=4, seed=8)
    lengths = []
    for b in range(z.shape[1]):
        centroid = sum(z[v, b] / z[v, b].norm() for v in range(z.shape[0])) / z.shape[0]
        lengths.append(centroid.norm())
    _, stats = mmcr_loss(z)
    torch.testing.assert_close(stats["centroid_norm"], sum(lengths) / len(lengths))
