"""EMP-SSL loss against a per-sample float64 reference, and the sign of the coding rate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from solo_multiview.losses.emp_ssl import emp_ssl_loss, total_coding_rate


def views(k: int, b: int = 5, d: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, b, d, generator=g, dtype=torch.float64)


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / sum(x[i] * x[i] for i in range(x.shape[0])) ** 0.5


def cosine(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return sum(a[i] * c[i] for i in range(a.shape[0])) / (
        sum(a[i] * a[i] for i in range(a.shape[0])) ** 0.5
        * sum(c[i] * c[i] for i in range(c.shape[0])) ** 0.5
    )


def coding_rate(rows, eps: float) -> torch.Tensor:
    """1/2 sum_i log(1 + d / (N eps) lambda_i), lambda_i the eigenvalues of the d x d Z^T Z."""
    n, d = len(rows), rows[0].shape[0]
    gram = sum(torch.outer(r, r) for r in rows)
    return 0.5 * torch.log1p(d / (n * eps) * torch.linalg.eigvalsh(gram)).sum()


def reference(z: torch.Tensor, eps: float, weight: float) -> torch.Tensor:
    k, batch, _ = z.shape
    unit_views = [[unit(z[v, b]) for b in range(batch)] for v in range(k)]
    rate = sum(coding_rate(unit_views[v], eps) for v in range(k)) / k
    sim = torch.zeros((), dtype=torch.float64)
    for b in range(batch):
        mean_view = sum(unit_views[v][b] for v in range(k)) / k
        for v in range(k):
            sim = sim + cosine(unit_views[v][b], mean_view)
    return -rate - weight * sim / (k * batch)


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("batch", [3, 6, 10])
@pytest.mark.parametrize(("eps", "weight"), [(0.2, 200.0), (0.5, 0.0), (0.05, 3.0)])
def test_matches_reference_values_and_gradients(k, batch, eps, weight):
    # d = 6: batch 3 uses the N x N Gram (Sylvester), 6 and 10 the d x d one
    z = views(k, batch, d=6, seed=k + 10 * batch).requires_grad_(True)
    loss, stats = emp_ssl_loss(z, eps=eps, invariance_weight=weight)
    (grad,) = torch.autograd.grad(loss, z)

    z_ref = z.detach().clone().requires_grad_(True)
    ref = reference(z_ref, eps, weight)
    (grad_ref,) = torch.autograd.grad(ref, z_ref)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grad, grad_ref)
    torch.testing.assert_close(-stats["coding_rate"] - weight * stats["invariance"], ref.detach())


def test_defaults_are_the_authors():
    z = views(3, b=8, d=5, seed=1)
    torch.testing.assert_close(emp_ssl_loss(z)[0], reference(z, 0.2, 200.0))


def test_orthonormal_beats_collapsed_by_the_coding_rate():
    # equal views (invariance 1 in both): the loss must prefer spread-out embeddings
    d, k, eps = 4, 3, 0.2
    spread = torch.eye(d, dtype=torch.float64).expand(k, -1, -1)
    collapsed = torch.ones(k, d, d, dtype=torch.float64)
    loss_spread, stats_spread = emp_ssl_loss(spread, eps=eps, invariance_weight=1.0)
    loss_collapsed, stats_collapsed = emp_ssl_loss(collapsed, eps=eps, invariance_weight=1.0)
    # Z^T Z = I: R = d/2 log(1 + 1/eps); Z^T Z = d 1 1^T / d: R = 1/2 log(1 + d/eps)
    assert stats_spread["coding_rate"].item() == pytest.approx(d / 2 * math.log(1 + 1 / eps))
    assert stats_collapsed["coding_rate"].item() == pytest.approx(0.5 * math.log(1 + d / eps))
    assert loss_spread.item() == pytest.approx(-d / 2 * math.log(1 + 1 / eps) - 1.0)
    assert loss_collapsed.item() == pytest.approx(-0.5 * math.log(1 + d / eps) - 1.0)
    assert loss_spread.item() < loss_collapsed.item()


def effective_rank(x: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values (Roy and Vetterli)."""
    s = torch.linalg.svdvals(x)
    p = s / s.sum()
    return math.exp(-(p * p.clamp_min(1e-300).log()).sum().item())


def minimise(sign: int, steps: int = 100) -> tuple:
    """Projected gradient descent on free unit embeddings (K=2, B=16, d=4) of the coding-rate
    part of the loss (invariance weight 0, so only the sign of R acts); ``sign=-1`` adds 2 R,
    i.e. minimises ``+R`` as lightly's ``EMPSSLLoss`` does. Returns the views' effective ranks and
    the coding rate at the end."""
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(2, 16, 4, generator=g, dtype=torch.float64), dim=-1)
    z.requires_grad_(True)
    opt = torch.optim.SGD([z], lr=1.0)
    for _ in range(steps):
        loss, _ = emp_ssl_loss(z, invariance_weight=0.0)
        if sign < 0:
            loss = loss + 2 * total_coding_rate(F.normalize(z, dim=-1), 0.2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            z.copy_(F.normalize(z, dim=-1))
    z = z.detach()
    return [effective_rank(view) for view in z], emp_ssl_loss(z)[1]["coding_rate"].item()


def test_minimising_the_loss_keeps_full_rank_and_the_wrong_sign_collapses():
    ranks, rate = minimise(+1)
    # the largest coding rate of 16 unit rows in d = 4: (d/2) log(1 + d / (d eps)) = 2 log 6
    assert rate == pytest.approx(2 * math.log(6), abs=1e-6)
    assert ranks == pytest.approx([4.0, 4.0], abs=1e-4)

    ranks_wrong, rate_wrong = minimise(-1)
    # +R (lightly's sign) is minimised by rank 1: R = 1/2 log(1 + d / eps) = 1/2 log 21
    assert rate_wrong == pytest.approx(0.5 * math.log(21), abs=1e-6)
    assert ranks_wrong == pytest.approx([1.0, 1.0], abs=1e-4)


def test_scaling_the_embeddings_leaves_the_loss_unchanged():
    z = views(3, b=7, d=5, seed=2)
    g = torch.Generator().manual_seed(3)
    factors = torch.rand(3, 7, 1, generator=g, dtype=torch.float64) * 10 + 0.1
    base, _ = emp_ssl_loss(z)
    torch.testing.assert_close(emp_ssl_loss(factors * z)[0], base)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_scale_does_not_grow_with_k(k):
    x = views(1, b=6, d=5, seed=4)[0]
    loss, stats = emp_ssl_loss(x.expand(k, -1, -1), invariance_weight=10.0)
    rate = coding_rate([unit(r) for r in x], 0.2)
    torch.testing.assert_close(loss, -rate - 10.0)
    assert stats["invariance"].item() == pytest.approx(1.0, rel=1e-12)


def test_list_and_half_inputs():
    z = views(3, seed=5)
    torch.testing.assert_close(emp_ssl_loss(list(z))[0], emp_ssl_loss(z)[0])
    loss = emp_ssl_loss(z.bfloat16())[0]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_global_batch_flag_is_identity_without_process_group():
    z = views(3, seed=6)
    torch.testing.assert_close(emp_ssl_loss(z, global_batch=False)[0], emp_ssl_loss(z)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_algebra_leaves_autocast(dtype):
    """Under a bfloat16 autocast (bf16-mixed training), the loss of float32 or bfloat16
    embeddings is the float32 loss of the same numbers: the Gram matrix and its Cholesky
    factor are not computed in bfloat16."""
    z = views(3, b=16, d=8, seed=7).to(dtype)
    # float64 is not autocast: the reference holds whatever the loss does inside
    expected, expected_stats = emp_ssl_loss(z.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, stats = emp_ssl_loss(z)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    for key in expected_stats:
        torch.testing.assert_close(stats[key].double(), expected_stats[key], rtol=1e-5,
                                   atol=1e-5)


def test_bad_inputs_raise():
    z = views(3)
    for eps in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps"):
            emp_ssl_loss(z, eps=eps)
    with pytest.raises(ValueError, match="invariance_weight"):
        emp_ssl_loss(z, invariance_weight=-1.0)
    with pytest.raises(ValueError, match="emp_ssl_loss: views"):
        emp_ssl_loss(z[:1])
    with pytest.raises(ValueError, match="emp_ssl_loss: views"):
        emp_ssl_loss(z[0])


def test_finite_gradients_at_collapse():
    z = torch.ones(3, 6, 4, dtype=torch.float64, requires_grad=True)
    loss, stats = emp_ssl_loss(z)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    assert stats["coding_rate"].item() == pytest.approx(0.5 * math.log(1 + 4 / 0.2))
