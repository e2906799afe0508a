"""MMCR and EMP-SSL under 2 gloo processes against one process on the same global batch.

Both objectives couple the samples of the batch (nuclear norm of the centroid matrix, coding rate
of every view), so under DDP they gather the normalised embeddings with gradient. The test starts
this module twice as ``python -m tests.test_distributed_noncontrastive_objectives --worker OUT``
(ranks 0 and 1 on 127.0.0.1, a free port); each rank takes its slice of the same global inputs,
computes every case's loss and the gradient of its slice and writes them to OUT/rank<r>.pt. The
test then checks, in one process on the global batch:

* ``global_batch=True``: the mean of the per-rank losses equals the single-process loss, and
  (1/W) x each rank's gradient equals the single-process gradient of its slice (DDP averages
  parameter gradients over the W ranks);
* ``global_batch=False``: each rank's loss and gradient are the single-process ones on its slice.

The worker only imports torch and the loss modules (no Lightning), so the run takes seconds.
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path
from typing import Callable, Dict, List

import pytest
import torch

from solo_multiview.losses.emp_ssl import emp_ssl_loss
from solo_multiview.losses.mmcr import mmcr_loss
from tests.helpers import run_workers

WORLD = 2
MODULE = "tests.test_distributed_noncontrastive_objectives"

# name -> (loss on (K, B, d) views returning (loss, stats), K, global batch, d)
CASES: Dict[str, tuple] = {
    "mmcr": (lambda z, g: mmcr_loss(z, lmbda=0.0, global_batch=g), 3, 8, 5),
    "mmcr_lmbda": (lambda z, g: mmcr_loss(z, lmbda=0.3, global_batch=g), 4, 6, 7),
    # N = 8 >= d = 5: the d x d Gram; N = 6 < d = 9: the N x N Gram (Sylvester)
    "emp_ssl": (lambda z, g: emp_ssl_loss(z, eps=0.2, invariance_weight=2.0, global_batch=g),
                3, 8, 5),
    "emp_ssl_wide": (lambda z, g: emp_ssl_loss(z, eps=0.5, invariance_weight=200.0,
                                               global_batch=g), 2, 6, 9),
}


def global_views(name: str) -> torch.Tensor:
    """The global (K, N, d) inputs of one case, identical on every rank (fixed generator)."""
    _, k, n, d = CASES[name]
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    return torch.randn(k, n, d, generator=g, dtype=torch.float64)


def loss_and_grad(fn: Callable, z: torch.Tensor, global_batch: bool):
    leaf = z.clone().requires_grad_(True)
    loss, _ = fn(leaf, global_batch)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def rank_slice(z: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    n = z.shape[1] // world
    return z[:, rank * n:(rank + 1) * n]


# ------------------------------------------------------------------------ worker (per rank)
def worker(out: Path) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="env://")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        record = {}
        for name, (fn, *_rest) in CASES.items():
            local = rank_slice(global_views(name), rank, world)
            for global_batch in (True, False):
                record[(name, global_batch)] = loss_and_grad(fn, local, global_batch)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(record, out / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------ the tests
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> List[dict]:
    """Runs the two workers once for every test of this module; returns their records."""
    out = tmp_path_factory.mktemp("ddp_noncontrastive")
    port = free_port()
    envs = [{**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
             "WORLD_SIZE": str(WORLD), "RANK": str(rank), "LOCAL_RANK": str(rank),
             "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"} for rank in range(WORLD)]
    run_workers(MODULE, out, envs, timeout_s=180)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_global_batch_matches_single_process(ranks, name):
    fn = CASES[name][0]
    z = global_views(name)
    loss, grad = loss_and_grad(fn, z, True)
    rank_losses = [ranks[r][(name, True)][0] for r in range(WORLD)]
    torch.testing.assert_close(sum(rank_losses) / WORLD, loss)
    for r in range(WORLD):
        torch.testing.assert_close(ranks[r][(name, True)][1] / WORLD, rank_slice(grad, r, WORLD))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_local_batch_is_each_ranks_own_loss(ranks, name):
    fn = CASES[name][0]
    z = global_views(name)
    for r in range(WORLD):
        loss, grad = loss_and_grad(fn, rank_slice(z, r, WORLD), False)
        torch.testing.assert_close(ranks[r][(name, False)][0], loss)
        torch.testing.assert_close(ranks[r][(name, False)][1], grad)
    # the two forms differ: the global loss is not the mean of the local ones
    global_loss, _ = loss_and_grad(fn, z, True)
    local_mean = sum(ranks[r][(name, False)][0] for r in range(WORLD)) / WORLD
    assert abs(global_loss.item() - local_mean.item()) > 1e-3


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", type=Path, required=True)
    worker(parser.parse_args().worker)
