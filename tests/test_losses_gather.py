"""losses/distributed.py in one process, as rank 1 of 2: torch.distributed's collectives are
replaced by a fake peer (rank 0) with known tensors, so the gathers' slicing, order and
gradient routing are checked exactly (the real collectives run in tests/test_distributed*.py,
in subprocesses)."""

from __future__ import annotations

import pytest
import torch

import solo_multiview.losses.distributed as distributed


class FakePeer:
    """Rank 0's contributions; this process is rank 1 of 2."""

    def __init__(self, rows: torch.Tensor, grad: torch.Tensor | None = None,
                 count: float = 0.0):
        self.rows, self.grad, self.count = rows, grad, count
        self.reduced = []

    def all_gather(self, parts, x):
        assert len(parts) == 2 and all(p.shape == x.shape for p in parts)
        parts[0].copy_(self.rows)
        parts[1].copy_(x)

    def all_reduce(self, x, op=None):
        assert op == torch.distributed.ReduceOp.SUM
        self.reduced.append(x.clone())
        peer = self.grad if x.shape == self.grad.shape else torch.full_like(x, self.count)
        x.add_(peer)


@pytest.fixture
def as_rank_one(monkeypatch):
    def install(peer: FakePeer) -> FakePeer:
        dist = distributed.dist
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_rank", lambda: 1)
        monkeypatch.setattr(dist, "get_world_size", lambda: 2)
        monkeypatch.setattr(dist, "all_gather", peer.all_gather)
        monkeypatch.setattr(dist, "all_reduce", peer.all_reduce)
        return peer
    return install


def test_rank_and_world_outside_a_process_group():
    assert distributed.rank_and_world() == (0, 1)


def test_gather_with_grad_is_rank_major_and_routes_summed_gradients(as_rank_one):
    g = torch.Generator().manual_seed(0)
    mine = torch.randn(3, 4, generator=g).T.requires_grad_(True)  # non-contiguous (4, 3)
    peer_rows = torch.randn(4, 3, generator=g)
    peer_grad = torch.randn(8, 3, generator=g)  # what rank 0's loss sends to the gathered rows
    peer = as_rank_one(FakePeer(peer_rows, grad=peer_grad))

    gathered = distributed.gather_with_grad(mine)
    assert gathered.shape == (8, 3)
    assert torch.equal(gathered[:4], peer_rows) and torch.equal(gathered[4:], mine.detach())
    weights = torch.randn(8, 3, generator=g)
    (gathered * weights).sum().backward()
    # my rows get my loss's gradient plus rank 0's, and nothing of rank 0's rows
    torch.testing.assert_close(mine.grad, weights[4:] + peer_grad[4:])
    assert len(peer.reduced) == 1 and torch.equal(peer.reduced[0], weights)


def test_gather_no_grad_and_the_global_mean(as_rank_one):
    peer_rows = torch.arange(6.0).view(2, 3)
    as_rank_one(FakePeer(peer_rows, grad=torch.zeros(1), count=5.0))
    mine = torch.ones(2, 3, requires_grad=True)
    gathered = distributed.gather_no_grad(mine)
    assert not gathered.requires_grad
    assert torch.equal(gathered, torch.cat([peer_rows, torch.ones(2, 3)]))

    values = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    weights = torch.tensor([1, 0, 1])
    # rank 0 kept 5 anchors, this rank 2: W * (1 + 4) / (5 + 2)
    mean = distributed.global_weighted_mean(values, weights)
    assert mean.item() == pytest.approx(2 * 5 / 7)
    mean.backward()
    torch.testing.assert_close(values.grad, torch.tensor([2 / 7, 0.0, 2 / 7]))
    total = distributed.all_reduce_no_grad(torch.tensor(3.0))
    assert total.item() == 8.0


def test_one_process_is_the_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather_with_grad(x) is x
    assert torch.equal(distributed.gather_no_grad(x), x) and not distributed.gather_no_grad(
        x).requires_grad
    assert distributed.global_weighted_mean(torch.tensor([2.0, 6.0]),
                                            torch.tensor([1, 1])).item() == 4.0
    assert distributed.global_weighted_mean(torch.tensor([2.0]), torch.tensor([0])).item() == 0.0
    assert distributed.all_reduce_no_grad(x).requires_grad is False


def test_emp_ssl_coding_rate_spans_both_ranks_unless_global_batch_is_off(as_rank_one):
    """The coding rate is taken over rank 0's rows and this rank's (global_batch, the default);
    the invariance term over this rank's rows only. With global_batch=False nothing is
    gathered."""
    import torch.nn.functional as F

    from solo_multiview.losses.emp_ssl import emp_ssl_loss, total_coding_rate

    g = torch.Generator().manual_seed(3)
    z = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)  # (K, B, d)
    peer_rows = F.normalize(torch.randn(5, 3, 4, generator=g, dtype=torch.float64), dim=-1)
    as_rank_one(FakePeer(peer_rows, grad=torch.zeros(1)))
    unit = F.normalize(z, dim=-1)
    invariance = (unit * F.normalize(unit.mean(dim=0), dim=-1)).sum(dim=-1).mean()
    both = torch.cat([peer_rows.transpose(0, 1), unit], dim=1)  # (K, 2B, d), rank 0 first
    loss, stats = emp_ssl_loss(z, eps=0.2, invariance_weight=3.0)
    torch.testing.assert_close(stats["coding_rate"], total_coding_rate(both, 0.2).mean())
    torch.testing.assert_close(loss, -total_coding_rate(both, 0.2).mean() - 3.0 * invariance)
    local, _ = emp_ssl_loss(z, eps=0.2, invariance_weight=3.0, global_batch=False)
    torch.testing.assert_close(local, -total_coding_rate(unit, 0.2).mean() - 3.0 * invariance)


def test_mmcr_centroid_norm_spans_both_ranks_unless_global_batch_is_off(as_rank_one):
    import torch.nn.functional as F

    from solo_multiview.losses.mmcr import mmcr_loss

    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    peer_centroids = torch.randn(5, 4, generator=g, dtype=torch.float64)
    as_rank_one(FakePeer(peer_centroids, grad=torch.zeros(1)))
    centroids = F.normalize(z, dim=-1).mean(dim=0)
    loss, _ = mmcr_loss(z)
    expected = -torch.linalg.svdvals(torch.cat([peer_centroids, centroids])).sum()
    torch.testing.assert_close(loss, expected)
    local, _ = mmcr_loss(z, global_batch=False)
    torch.testing.assert_close(local, -torch.linalg.svdvals(centroids).sum())


def test_mocov2plus_mean_runs_over_the_kept_terms_of_every_rank(as_rank_one):
    """As rank 1 of 2, the loss is this rank's sum of terms times W over the global count of
    kept terms (rank 0 kept 5): DDP's gradient average then equals the single-process mean."""
    from solo_multiview.losses.mv_mocov2plus import mv_mocov2plus_loss

    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64)
    queue = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    single, stats = mv_mocov2plus_loss(q, k, queue, 0.2)
    count = stats["num_positives"].item()
    as_rank_one(FakePeer(torch.zeros(1), grad=torch.zeros(1), count=5.0))
    loss, _ = mv_mocov2plus_loss(q, k, queue, 0.2)
    torch.testing.assert_close(loss, single * count * 2 / (count + 5))
