"""DDP correctness on CPU: 2 processes (gloo) against one process on the same global batch.

The slow test starts this module twice as ``python -m tests.test_distributed --worker OUT``
(LOCAL_RANK 0 and 1, Lightning's ``strategy: ddp`` on ``accelerator: cpu`` with ``devices: 2``:
Lightning sees the rank variables and joins the two processes instead of launching its own).
Each worker writes what it saw to OUT/<case>/rank<r>.pt; the test recomputes everything in one
process and compares:

* losses (filter on, ranks keeping different numbers of anchors): the mean of the per-rank losses
  equals the single-process loss and (1/W) x each rank's gradient equals the single-process
  gradient of its slice (DDP averages parameter gradients over the W ranks);
* a real training step through Lightning (BatchNorm replaced by Identity in both models, since
  BN statistics are per rank without SyncBatchNorm; float64): loss and every parameter gradient
  equal the single-process values on the concatenated batch; one full epoch shows the ranks'
  indexes are disjoint and cover the dataset; MTTV partners differ between ranks;
* the non-finite guard takes the same branch on both ranks (skip: both skip and go on; stop: both
  raise) when only one rank's loss is NaN.
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from solo_multiview.config.pretrain import parse_pretrain_cfg
from solo_multiview.losses.band_filter import BandFilter
from solo_multiview.losses.distributed import rank_and_world
from solo_multiview.losses.mttv import mttv_infonce
from solo_multiview.losses.mv_mocov2plus import mv_mocov2plus_loss
from solo_multiview.losses.mv_simclr import mv_nt_xent
from solo_multiview.methods import METHODS, build_method
from solo_multiview.training.pretrain import fit, prepare_pretrain
from tests.helpers import run_workers, tiny_cfg

WORLD = 2
BAND = BandFilter(0.1, 0.5, "band")
# keeps s_ii = 1, so the official denominators stay positive
OFFICIAL_BAND = BandFilter(0.2, 1.0, "band")

# (case, method, config file, K, extra overrides); the filter is on in every case
# Without BatchNorm the tiny convnet's embeddings start nearly aligned (positive cosines
# 0.996..0.99999), so each band's upper bound cuts through the positives: some anchors are kept,
# some dropped, in different numbers on the two ranks.
LIGHTNING_CASES = [
    ("mv_simclr", "mv_simclr", "quickstart_digits", 2,
     ["++method_kwargs.filter.enabled=true", "++method_kwargs.filter.low=0.0",
      "++method_kwargs.filter.high=0.9995"]),
    ("mttv", "mttv", "quickstart_mttv_digits", None,
     ["+limit_train_batches=1", "++method_kwargs.filter.low=0.0",
      "++method_kwargs.filter.high=0.99985"]),
    ("mv_mocov2plus", "mv_mocov2plus", "quickstart_digits", 2,
     ["++method_kwargs.filter.enabled=true", "++method_kwargs.filter.low=0.0",
      "++method_kwargs.filter.high=0.9995", "+method_kwargs.queue_size=64",
      "+limit_train_batches=1"]),
]
CASE_PARAMS = [
    pytest.param(case, id=case[0], marks=pytest.mark.skipif(
        case[1] not in METHODS, reason=f"{case[1]} is not registered (yet)"))
    for case in LIGHTNING_CASES
]
DDP = ["strategy=ddp", f"devices={WORLD}", "accelerator=cpu", "precision=64-true",
       "max_steps=-1", "max_epochs=1", "++limit_val_batches=0", "+num_sanity_val_steps=0",
       "checkpoint.enabled=false", "sync_batchnorm=true"]


def without_batchnorm(module: nn.Module) -> nn.Module:
    """Replaces every BatchNorm layer by Identity (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            without_batchnorm(child)
    return module


def lightning_cfg(out: Path, case: tuple, extra: List[str]):
    name, method, config, views, overrides = case
    return tiny_cfg(out / name, method=method, num_views=views, config_name=config,
                    overrides=[*overrides, *extra])


# ------------------------------------------------------------------------ synthetic loss inputs
def synthetic_inputs(name: str) -> Dict[str, torch.Tensor]:
    """Global inputs of one loss, identical on every rank (fixed generator), float64."""
    g = torch.Generator().manual_seed(11)
    if name == "mv_simclr":  # 2 crops of 12 images, crop-major: rank r takes its images' rows
        return {"z": torch.randn(2, 12, 6, generator=g, dtype=torch.float64)}
    if name.startswith("mttv"):
        return {"online": torch.randn(12, 6, generator=g, dtype=torch.float64),
                "target": torch.randn(12, 6, generator=g, dtype=torch.float64)}
    return {"q": torch.randn(2, 12, 6, generator=g, dtype=torch.float64),
            "k": torch.randn(2, 12, 6, generator=g, dtype=torch.float64),
            "queue": torch.randn(2, 6, 20, generator=g, dtype=torch.float64)}


def local_slice(name: str, inputs: Dict[str, torch.Tensor], rank: int, world: int):
    """(differentiable leaf, loss, kept count) on ``rank``'s share of the global inputs."""
    if name == "mv_simclr":
        z = inputs["z"]
        n = z.shape[1] // world
        leaf = z[:, rank * n:(rank + 1) * n].clone().requires_grad_(True)
        idx = torch.arange(rank * n, (rank + 1) * n).repeat(2)
        loss, stats = mv_nt_xent(leaf.reshape(-1, z.shape[2]), idx, 0.2, band=BAND)
        return leaf, loss, stats["num_anchors"]
    if name.startswith("mttv"):
        n = inputs["online"].shape[0] // world
        leaf = inputs["online"][rank * n:(rank + 1) * n].clone().requires_grad_(True)
        target = inputs["target"][rank * n:(rank + 1) * n]
        form = "official" if name.endswith("official") else "principled"
        band = OFFICIAL_BAND if form == "official" else BAND
        loss, _ = mttv_infonce(leaf, target, 0.3, band=band, form=form)
        return leaf, loss, mttv_kept(leaf, target, band)
    n = inputs["q"].shape[1] // world
    leaf = inputs["q"][:, rank * n:(rank + 1) * n].clone().requires_grad_(True)
    loss, stats = mv_mocov2plus_loss(leaf, inputs["k"][:, rank * n:(rank + 1) * n],
                                     inputs["queue"], 0.2, band=BAND)
    return leaf, loss, stats["num_positives"]


def mttv_kept(online: torch.Tensor, target: torch.Tensor, band) -> torch.Tensor:
    """Anchors the MTTV loss keeps: both directions of every pair whose positive is in band."""
    cos = nn.functional.cosine_similarity(online.detach(), target.detach(), dim=-1)
    return 2 * band.keep(cos).sum().double()


LOSS_CASES = ["mv_simclr", "mttv_principled", "mttv_official", "mv_mocov2plus"]


# ------------------------------------------------------------------------ worker (per rank)
class Recorder(Callback):
    """Saves what this rank saw: every batch's indexes; for the first step the batch, the
    initial weights, the loss and the (DDP-averaged) gradients; for MTTV the partner draws."""

    def __init__(self, out: Path):
        self.out = out
        self.record: Dict[str, Any] = {"indexes": []}

    def on_train_start(self, trainer, pl_module):
        self.record["initial"] = {k: v.detach().clone() for k, v in
                                  pl_module.state_dict().items()}
        self.record["layer_sync"] = type(trainer.strategy._layer_sync).__name__

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        indexes, crops, targets = batch
        self.record["indexes"].append(indexes.tolist())
        if trainer.global_step == 0:
            self.record["batch"] = (indexes.clone(), [c.clone() for c in crops], targets.clone())
            dataset = trainer.train_dataloader.dataset
            if hasattr(dataset, "partner_indexes"):
                self.record["partners"] = [dataset.partner_indexes(int(i)).tolist()
                                           for i in indexes]
                self.record["pair_rank"] = int(dataset._state[1])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == 0:
            self.record["grads"] = {n: p.grad.detach().clone() for n, p in
                                    pl_module.named_parameters() if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if "loss" not in self.record:
            self.record["loss"] = outputs["loss"].detach().clone()

    def on_train_end(self, trainer, pl_module):
        self.save()

    def save(self):
        rank, _ = rank_and_world()
        self.out.mkdir(parents=True, exist_ok=True)
        torch.save(self.record, self.out / f"rank{rank}.pt")


LOSS_FUNCTIONS = {"mv_simclr": ("solo_multiview.methods.mv_simclr", "mv_nt_xent"),
                  "mttv": ("solo_multiview.methods.mttv", "mttv_infonce"),
                  "mv_mocov2plus": ("solo_multiview.methods.mv_mocov2plus",
                                    "mv_mocov2plus_loss")}


def record_method_loss(method: str, log: List[Any], nan_on: tuple = ()):
    """Wraps the method's loss function: records (loss, kept count) of every call; returns a
    NaN loss on the (rank, call number) pairs in ``nan_on``."""
    import importlib

    module_name, attr = LOSS_FUNCTIONS[method]
    module = importlib.import_module(module_name)
    original = getattr(module, attr)

    def wrapped(*args, **kwargs):
        loss, stats = original(*args, **kwargs)
        if method == "mttv":
            kept = mttv_kept(args[0], args[1], kwargs["band"])
        else:
            kept = stats.get("num_anchors", stats.get("num_positives"))
        log.append((loss.detach().clone(), kept.detach().clone()))
        if (rank_and_world()[0], len(log)) in nan_on:
            loss = loss * float("nan")
        return loss, stats

    setattr(module, attr, wrapped)
    return lambda: setattr(module, attr, original)


def worker(out: Path) -> None:
    import torch.distributed as dist

    # 1. the losses alone, on synthetic inputs
    dist.init_process_group("gloo")
    rank, world = rank_and_world()
    losses = {}
    for name in LOSS_CASES:
        leaf, loss, kept = local_slice(name, synthetic_inputs(name), rank, world)
        loss.backward()
        losses[name] = {"loss": loss.detach(), "grad": leaf.grad, "kept": kept}
    (out / "losses").mkdir(parents=True, exist_ok=True)
    torch.save(losses, out / "losses" / f"rank{rank}.pt")

    # 2. a real step (and one epoch) through Lightning, filter on, BatchNorm -> Identity
    for case in LIGHTNING_CASES:
        name, method, *_ = case
        if method not in METHODS:
            continue
        log: List[Any] = []
        restore = record_method_loss(method, log)
        run = prepare_pretrain(lightning_cfg(out / "runs", case, DDP))
        without_batchnorm(run.model)
        recorder = Recorder(out / name)
        run.trainer.callbacks.append(recorder)
        fit(run)
        recorder.record["method_loss"], recorder.record["kept"] = log[0]
        recorder.save()
        restore()

    # 3. the non-finite guard with a NaN loss on rank 1 only (second step)
    for policy in ("skip", "stop"):
        log = []
        restore = record_method_loss("mv_simclr", log, nan_on={(1, 2)})
        run = prepare_pretrain(lightning_cfg(out / "runs", LIGHTNING_CASES[0], [
            *DDP, f"+nonfinite_loss={policy}", "+limit_train_batches=3"]))
        without_batchnorm(run.model)
        recorder = Recorder(out / f"nonfinite_{policy}")
        weights: List[Dict[str, torch.Tensor]] = []
        run.trainer.callbacks.append(recorder)
        run.trainer.callbacks.append(WeightsAtBatchStart(weights))
        try:
            fit(run)
            recorder.record["error"] = None
        except Exception as error:  # stop: every rank raises
            recorder.record["error"] = f"{type(error).__name__}: {error}"
        recorder.record["weights"] = weights
        recorder.record["skipped"] = getattr(run.model, "nonfinite_skipped", 0)
        recorder.record["global_step"] = run.trainer.global_step
        recorder.save()
        restore()


class WeightsAtBatchStart(Callback):
    def __init__(self, store: List[Dict[str, torch.Tensor]]):
        self.store = store

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.store.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


# ------------------------------------------------------------------------ the tests
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    """Runs the two workers once for every test of this module."""
    out = tmp_path_factory.mktemp("ddp")
    port = free_port()
    envs = []
    for rank in range(WORLD):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": str(WORLD), "NODE_RANK": "0", "LOCAL_RANK": str(rank),
               "RANK": str(rank), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        env.pop("SLURM_NTASKS", None)
        envs.append(env)
    run_workers("tests.test_distributed", out, envs, timeout_s=400)
    return out


def load_ranks(folder: Path) -> List[Dict[str, Any]]:
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.slow
@pytest.mark.parametrize("name", LOSS_CASES)
def test_filtered_losses_are_exact_under_ddp(ddp_run, name):
    ranks = [r[name] for r in load_ranks(ddp_run / "losses")]
    if name == "mttv_official":  # log of the global mean: the same value on every rank
        assert torch.equal(ranks[0]["loss"], ranks[1]["loss"])
    else:  # the ranks keep different numbers of anchors: per-rank means would be wrong
        assert ranks[0]["kept"] != ranks[1]["kept"], [r["kept"] for r in ranks]

    inputs = synthetic_inputs(name)
    leaf, loss, _ = local_slice(name, inputs, rank=0, world=1)
    loss.backward()
    ddp_loss = torch.stack([r["loss"] for r in ranks]).mean()
    assert torch.allclose(ddp_loss, loss.detach(), rtol=1e-12, atol=1e-12)
    axis = 0 if name.startswith("mttv") else 1
    ddp_grad = torch.cat([r["grad"] for r in ranks], dim=axis) / WORLD
    assert torch.allclose(ddp_grad, leaf.grad, rtol=1e-10, atol=1e-12)

    # the old normalisation (each rank by its own count) differs: the test can fail
    if name in ("mv_simclr", "mttv_principled", "mv_mocov2plus"):
        kept = torch.stack([r["kept"] for r in ranks]).double()
        per_rank_means = torch.stack([r["loss"] for r in ranks]) * kept.sum() / (WORLD * kept)
        assert not torch.allclose(per_rank_means.mean(), loss.detach(), rtol=1e-6)


def reference_step(case, out: Path, initial: Dict[str, torch.Tensor], batch):
    """Single process, same cfg on 1 device: (loss, method loss, gradients) on ``batch``; the
    method loss is None for a method without an entry in LOSS_FUNCTIONS."""
    cfg = parse_pretrain_cfg(lightning_cfg(out, case, []))
    model = without_batchnorm(build_method(cfg)).double()
    model.load_state_dict(initial, strict=True)
    name, method, *_ = case
    log: List[Any] = []
    restore = record_method_loss(method, log) if method in LOSS_FUNCTIONS else (lambda: None)
    try:
        loss = model.training_step(batch, 0)
    finally:
        restore()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), (log[0][0] if log else None), grads


def concat_batches(batches) -> tuple:
    indexes = torch.cat([b[0] for b in batches])
    crops = [torch.cat([b[1][k] for b in batches]).double() for k in range(len(batches[0][1]))]
    return indexes, crops, torch.cat([b[2] for b in batches])


@pytest.mark.slow
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_training_step_matches_single_process(ddp_run, case, tmp_path):
    name = case[0]
    ranks = load_ranks(ddp_run / name)
    assert all(r["layer_sync"] == "TorchSyncBatchNorm" for r in ranks)  # sync_batchnorm=true
    kept = [int(r["kept"]) for r in ranks]
    assert min(kept) > 0 and kept[0] != kept[1], f"adjust the band of {name}: kept {kept}"
    batch = concat_batches([r["batch"] for r in ranks])
    loss, method_loss, grads = reference_step(case, tmp_path, ranks[0]["initial"], batch)

    assert torch.allclose(torch.stack([r["loss"] for r in ranks]).mean(), loss, rtol=1e-9)
    assert torch.allclose(torch.stack([r["method_loss"] for r in ranks]).mean(), method_loss,
                          rtol=1e-9)
    assert set(grads) == set(ranks[0]["grads"]) == set(ranks[1]["grads"])
    for key, grad in grads.items():
        for r in ranks:  # DDP's averaged gradient, identical on both ranks
            assert torch.allclose(r["grads"][key], grad, rtol=1e-7, atol=1e-10), key
    if name == "mttv":
        assert [r["pair_rank"] for r in ranks] == [0, 1]
        assert ranks[0]["partners"] != ranks[1]["partners"]


@pytest.mark.slow
def test_ranks_read_disjoint_shards_covering_the_epoch(ddp_run):
    ranks = load_ranks(ddp_run / "mv_simclr")
    seen = [[i for batch in r["indexes"] for i in batch] for r in ranks]
    # 544 images = 2 ranks x 17 batches x 16: nothing padded, nothing dropped
    assert [len(s) for s in seen] == [272, 272]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(544))


@pytest.mark.slow
def test_nonfinite_guard_agrees_across_ranks(ddp_run):
    skip = load_ranks(ddp_run / "nonfinite_skip")
    for r in skip:
        assert r["error"] is None and r["skipped"] == 1 and r["global_step"] == 3
        # the skipped batch (the second) left the weights as they were
        before, after = r["weights"][1], r["weights"][2]
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert not all(torch.equal(r["weights"][0][k], before[k]) for k in before)
    stop = load_ranks(ddp_run / "nonfinite_stop")
    for r in stop:
        assert r["error"] is not None and r["error"].startswith("NonFiniteLossError")
        assert "global step 1" in r["error"]
        assert r["global_step"] == 1


def test_sync_batchnorm_converts_batchnorm(tmp_path):
    """Lightning converts BN to SyncBatchNorm when sync_batchnorm=True (SyncBatchNorm does
    not run on CPU tensors, so only the conversion is checked)."""
    cfg = tiny_cfg(tmp_path, overrides=["strategy=ddp", "devices=2", "accelerator=cpu",
                                        "sync_batchnorm=true"])
    run = prepare_pretrain(cfg)
    converted = run.trainer.strategy._layer_sync.apply(run.model)
    kinds = {type(m).__name__ for m in converted.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert kinds == {"SyncBatchNorm"}
    off = prepare_pretrain(tiny_cfg(tmp_path, overrides=[
        "strategy=ddp", "devices=2", "accelerator=cpu", "sync_batchnorm=false"]))
    assert off.trainer.strategy._layer_sync is None


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", type=Path, required=True)
    worker(parser.parse_args().worker)
