"""Poly-View, MV-InfoNCE and MV-DHEL under DDP: 2 CPU processes (gloo), each holding half of the
global batch, against one process on the whole batch.

Each worker computes every loss on its half (band filter on, so the ranks keep different numbers
of anchors) and the gradient of its local inputs; the mean of the two losses must equal the
single-process loss and each rank's gradient, divided by the world size (DDP averages gradients
over ranks), the single-process gradient of that rank's slice. The workers are started with
``torch.multiprocessing`` (spawn) on a free port of 127.0.0.1; the process group and the joins
have timeouts, so a stuck worker stops by itself and the test fails instead of hanging.
(``free_port`` is the same three lines as in tests/test_distributed.py, written out here because
importing that module pulls in Lightning and the whole method stack.)
"""

from __future__ import annotations

import datetime
import socket
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from solo_multiview.losses.band_filter import BandFilter
from solo_multiview.losses.mv_dhel import mv_dhel_loss
from solo_multiview.losses.mv_infonce import mv_infonce_loss
from solo_multiview.losses.polyview import polyview_loss

WORLD = 2
K, N, D = 3, 8, 4  # views, global images, dimension
T = 0.2
BAND = BandFilter(0.3, 0.8, "band")
CASES = {
    "polyview_geometric": (polyview_loss, {"form": "geometric"}, "num_anchors"),
    "polyview_arithmetic": (polyview_loss, {"form": "arithmetic"}, "num_anchors"),
    "polyview_sufficient_statistics": (
        polyview_loss, {"form": "sufficient_statistics"}, "num_anchors"),
    "mv_infonce_cross_view": (mv_infonce_loss, {"negatives": "cross_view"}, "num_samples"),
    "mv_infonce_all": (mv_infonce_loss, {"negatives": "all"}, "num_samples"),
    "mv_dhel": (mv_dhel_loss, {}, "num_samples"),
}


def global_views() -> torch.Tensor:
    """(K, N, D) float64, the same on every process (fixed generator)."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(1, N, D, generator=g, dtype=torch.float64)
    return base + 0.8 * torch.randn(K, N, D, generator=g, dtype=torch.float64)


def run_case(name: str, views: torch.Tensor):
    fn, kwargs, count = CASES[name]
    loss, stats = fn(views, temperature=T, band=BAND, **kwargs)
    return loss, stats[count]


def worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        views, b = global_views(), N // WORLD
        results: Dict[str, Dict[str, Any]] = {}
        for name in CASES:  # same order on both ranks: the backward all-reduces pair up
            local = views[:, rank * b:(rank + 1) * b].clone().requires_grad_(True)
            loss, kept = run_case(name, local)
            (grad,) = torch.autograd.grad(loss, local)
            results[name] = {"loss": loss.detach(), "grad": grad, "kept": kept}
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> List[Dict[str, Dict[str, Any]]]:
    out = tmp_path_factory.mktemp("ddp_contrastive")
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, port, str(out)), daemon=True)
             for r in range(WORLD)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join(timeout=120)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    assert [proc.exitcode for proc in procs] == [0] * WORLD
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("name", list(CASES))
def test_ddp_equals_single_process_on_the_global_batch(ranks, name):
    per_rank = [r[name] for r in ranks]
    # the filter keeps different numbers of anchors on the two ranks: per-rank means would be
    # wrong, the global normalisation is what makes the two sides agree
    assert per_rank[0]["kept"] != per_rank[1]["kept"], [r["kept"] for r in per_rank]

    views = global_views().requires_grad_(True)
    loss, kept = run_case(name, views)
    (grad,) = torch.autograd.grad(loss, views)
    assert kept == per_rank[0]["kept"] + per_rank[1]["kept"]
    ddp_loss = torch.stack([r["loss"] for r in per_rank]).mean()
    torch.testing.assert_close(ddp_loss, loss.detach(), rtol=1e-12, atol=1e-12)
    ddp_grad = torch.cat([r["grad"] for r in per_rank], dim=1) / WORLD
    torch.testing.assert_close(ddp_grad, grad, rtol=1e-10, atol=1e-12)
