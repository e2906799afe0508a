"""Multi-node DDP on one machine: 2 nodes x 1 process over the loopback address (gloo), against
one process on the same global batch.

The test starts this module twice as ``python -m tests.test_multinode --worker OUT`` with the
variables a multi-node launch sets (``NODE_RANK`` 0 and 1, ``LOCAL_RANK`` 0, ``MASTER_ADDR``
127.0.0.1) and ``num_nodes=2 devices=1``: each process is one node's only device, the global rank
is the node rank, exactly as Lightning runs under torchrun or SLURM on two machines. Each worker
trains one step (and the rest of one epoch) and writes what it saw; the test recomputes the step
in one process (tests/test_distributed.py's tools: BatchNorm replaced by Identity, float64) and
compares the loss and every parameter gradient. The workers are bounded by a timeout and killed
if they outlive it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch

from solo_multiview.training.pretrain import fit, prepare_pretrain
from tests.helpers import run_workers
from tests.test_distributed import (
    Recorder,
    concat_batches,
    free_port,
    lightning_cfg,
    reference_step,
    without_batchnorm,
)

NODES = 2
# (case, method, config file, K, overrides): mv_simclr and a many-view objective, filter on
CASES = [
    ("mv_simclr", "mv_simclr", "quickstart_digits", 2,
     ["++method_kwargs.filter.enabled=true", "++method_kwargs.filter.low=0.0",
      "++method_kwargs.filter.high=0.9995"]),
    ("polyview", "polyview", "quickstart_digits", 3,
     ["++method_kwargs.form=arithmetic", "+limit_train_batches=2"]),
]
MULTI_NODE = ["strategy=ddp", "devices=1", f"++num_nodes={NODES}", "accelerator=cpu",
              "precision=64-true", "max_steps=-1", "max_epochs=1", "++limit_val_batches=0",
              "+num_sanity_val_steps=0", "checkpoint.enabled=false"]
TIMEOUT_S = 400


def worker(out: Path) -> None:
    for case in CASES:
        name = case[0]
        run = prepare_pretrain(lightning_cfg(out / "runs", case, MULTI_NODE))
        without_batchnorm(run.model)
        recorder = Recorder(out / name)
        run.trainer.callbacks.append(recorder)
        fit(run)
        recorder.record["world"] = (run.trainer.world_size, run.trainer.node_rank,
                                    run.trainer.global_rank, run.trainer.num_nodes)
        recorder.save()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("multinode")
    port = free_port()
    envs = []
    for node in range(NODES):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "NODE_RANK": str(node), "LOCAL_RANK": "0", "WORLD_SIZE": str(NODES),
               "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        for name in ("RANK", "SLURM_NTASKS", "SLURM_JOB_ID", "GROUP_RANK"):
            env.pop(name, None)
        envs.append(env)
    run_workers("tests.test_multinode", out, envs, TIMEOUT_S)
    return out


def load_nodes(folder: Path) -> List[Dict[str, Any]]:
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(NODES)]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_two_nodes_equal_one_process_on_the_global_batch(nodes, case, tmp_path):
    name = case[0]
    ranks = load_nodes(nodes / name)
    # each process is node r's only device: world 2, node rank = global rank
    assert [r["world"] for r in ranks] == [(2, 0, 0, 2), (2, 1, 1, 2)]
    # the nodes read disjoint halves of the epoch
    seen = [{i for batch in r["indexes"] for i in batch} for r in ranks]
    assert seen[0] and not seen[0] & seen[1]
    assert not torch.equal(ranks[0]["batch"][0], ranks[1]["batch"][0])

    batch = concat_batches([r["batch"] for r in ranks])
    loss, _, grads = reference_step(case, tmp_path, ranks[0]["initial"], batch)
    assert torch.allclose(torch.stack([r["loss"] for r in ranks]).mean(), loss, rtol=1e-9)
    assert set(grads) == set(ranks[0]["grads"]) == set(ranks[1]["grads"])
    for key, grad in grads.items():
        for r in ranks:  # DDP's averaged gradient, identical on both nodes
            assert torch.allclose(r["grads"][key], grad, rtol=1e-7, atol=1e-10), key
    # the comparison can fail: one node's batch alone gives another loss
    alone, _, _ = reference_step(case, tmp_path / "alone", ranks[0]["initial"],
                                 concat_batches([ranks[0]["batch"]]))
    assert not torch.allclose(alone, loss, rtol=1e-6)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", type=Path, required=True)
    worker(parser.parse_args().worker)
