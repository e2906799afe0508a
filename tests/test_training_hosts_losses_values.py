"""Exact values of the resume key, auto/explicit resume, the Checkpointer's messages, the K-view
contract's checkpoint hooks, the online kNN's class count, the backbone builders, and the
polyview / MoCo losses on hand-built inputs, in one process (fake peers stand in for the other
ranks of torch.distributed)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import solo_multiview.losses.distributed as distributed
from solo_multiview.hosts import backbones
from solo_multiview.hosts.contract import KViewMethod
from solo_multiview.hosts.guard import NonFiniteLossError
from solo_multiview.hosts.online_knn import OnlineKNN
from solo_multiview.losses.band_filter import BandFilter
from solo_multiview.losses.mv_mocov2plus import mv_mocov2plus_loss
from solo_multiview.losses.polyview import polyview_loss
from solo_multiview.training import resume
from solo_multiview.training.checkpointing import Checkpointer, write_args
from solo_multiview.training.resume import (
    RESUME_KEYS,
    Resume,
    explicit_resume,
    find_auto_resume,
    key_differences,
    resume_key,
)

# --------------------------------------------------------------------------- resume key

MTTV_KWARGS = {"num_views": 2, "partner": "image", "views": "normalized_augmented"}
MIMV = {"enabled": True, "partner": "image", "roles": "normalized_augmented", "fusion": "sum"}


@pytest.mark.parametrize(
    "tree",
    [
        {"method": "mttv", "method_kwargs": MTTV_KWARGS, "data": {"num_workers": 3}},
        {
            "method": "mv_simclr",
            "method_kwargs": {"num_views": 2, "mimv": MIMV},
            "data": {"num_workers": 3},
        },
    ],
    ids=["mttv", "mimv"],
)
def test_a_pairs_run_has_its_worker_count_in_the_key(tree):
    # the pairs scheme draws partners per worker: data.num_workers joins the key, by that name
    key = resume_key(tree)
    assert list(key) == [*RESUME_KEYS, "data.num_workers", "world_size"]
    assert key["data.num_workers"] == 3
    assert key["method"] == tree["method"] and key["method_kwargs"] == tree["method_kwargs"]
    assert key["world_size"] == 1
    changed = resume_key({**tree, "data": {"num_workers": 4}})
    assert key_differences(changed, key) == ["data.num_workers: 3 (checkpoint) vs 4 (this run)"]


def test_a_crops_run_has_no_worker_count_in_the_key():
    tree = {
        "method": "mv_simclr",
        "method_kwargs": {"num_views": 2},
        "augmentations": [{"num_crops": 2}],
        "data": {"num_workers": 3},
    }
    assert list(resume_key(tree)) == [*RESUME_KEYS, "world_size"]


@pytest.mark.parametrize(
    "tree,world",
    [
        ({}, 1),  # devices defaults to 1
        ({"devices": "auto"}, 4),  # accelerator defaults to auto: every GPU
        ({"devices": "auto", "accelerator": "auto"}, 4),
        ({"devices": "auto", "accelerator": "cpu"}, 1),  # the accelerator is read from the tree
        ({"devices": -1, "accelerator": "gpu", "num_nodes": 2}, 8),
    ],
)
def test_world_size_defaults(monkeypatch, tree, world):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)  # a 4-GPU machine
    assert resume_key(tree)["world_size"] == world


def test_key_differences_of_a_node_against_a_leaf():
    ours = {"backbone": {"name": "convnet"}, "seed": 5}
    theirs = {"backbone": "resnet18", "seed": 5}
    assert key_differences(ours, theirs) == [
        "backbone: 'resnet18' (checkpoint) vs {'name': 'convnet'} (this run)"
    ]
    assert key_differences(theirs, ours) == [
        "backbone: {'name': 'convnet'} (checkpoint) vs 'resnet18' (this run)"
    ]


# --------------------------------------------------------------------------- auto / explicit

NOW = 1_700_000_000.0


def auto_cfg(root: Path, max_hours: float = 1.0):
    return OmegaConf.create(
        {
            "checkpoint": {"dir": str(root)},
            "method": "m",
            "seed": 5,
            "auto_resume": {"max_hours": max_hours, "enabled": True},
            "resume_from_checkpoint": None,
        }
    )


def run_folder(root: Path, version: str, args: dict, mtime: float) -> Path:
    folder = root / "m" / version
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps(args))
    ckpt = folder / f"run-{version}-ep=1.ckpt"
    ckpt.write_bytes(b"x")
    ns = int(mtime) * 10**9
    os.utime(ckpt, ns=(ns, ns))
    return ckpt


@pytest.fixture
def frozen_clock(monkeypatch):
    # the age test needs an exact "now": resume.py's own time module is replaced
    monkeypatch.setattr(resume, "time", SimpleNamespace(time=lambda: NOW))


def test_a_checkpoint_exactly_max_hours_old_is_not_resumed(tmp_path, frozen_clock):
    run_folder(tmp_path, "v1", {"method": "m", "seed": 5}, NOW - 3600)
    assert find_auto_resume(auto_cfg(tmp_path), pytest.fail) is None
    younger = run_folder(tmp_path, "v2", {"method": "m", "seed": 5}, NOW - 3599)
    assert find_auto_resume(auto_cfg(tmp_path), pytest.fail) == Resume(
        younger, younger.parent, "auto_resume"
    )


def test_max_hours_are_hours_of_3600_seconds(tmp_path, frozen_clock):
    # 10 h = 36000 s: a checkpoint 36005 s old is too old
    run_folder(tmp_path, "v1", {"method": "m", "seed": 5}, NOW - 36005)
    assert find_auto_resume(auto_cfg(tmp_path, max_hours=10), pytest.fail) is None


def test_the_newest_matching_checkpoint_wins_over_a_later_name(tmp_path, frozen_clock):
    newest = run_folder(tmp_path, "v1", {"method": "m", "seed": 5}, NOW - 10)
    run_folder(tmp_path, "v2", {"method": "m", "seed": 5}, NOW - 20)
    assert find_auto_resume(auto_cfg(tmp_path), pytest.fail) == Resume(
        newest, newest.parent, "auto_resume"
    )


def test_auto_resume_shows_all_of_exactly_six_differences(tmp_path, frozen_clock):
    args = {
        "method": "m",
        "seed": 6,
        "max_epochs": 1,
        "max_steps": 2,
        "precision": "16",
        "name": "x",
        "host": "solo",
    }
    ckpt = run_folder(tmp_path, "v1", args, NOW - 10)
    logged = []
    assert find_auto_resume(auto_cfg(tmp_path), logged.append) is None
    assert logged == [
        f"auto_resume: not resuming {ckpt}: different configuration (host: 'solo' "
        "(checkpoint) vs None (this run); max_epochs: 1 (checkpoint) vs None (this run); "
        "max_steps: 2 (checkpoint) vs None (this run); name: 'x' (checkpoint) vs None (this "
        "run); precision: '16' (checkpoint) vs None (this run); seed: 6 (checkpoint) vs 5 "
        "(this run))"
    ]


def test_explicit_resume_names_eight_differences_at_most(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    theirs = {
        "method": "m",
        "name": "a",
        "host": "solo",
        "momentum": 1,
        "seed": 1,
        "max_epochs": 1,
        "max_steps": 1,
        "precision": "16",
        "sync_batchnorm": True,
        "accumulate_grad_batches": 2,
    }
    (tmp_path / "args.json").write_text(json.dumps(theirs))
    cfg = OmegaConf.create({"resume_from_checkpoint": str(ckpt), "method": "m"})
    with pytest.raises(ValueError) as info:
        explicit_resume(cfg)
    # nine keys differ; the first eight (sorted) are named
    assert str(info.value) == (
        f"resume_from_checkpoint: '{ckpt}' belongs to a run with a different configuration "
        "(accumulate_grad_batches: 2 (checkpoint) vs None (this run); host: 'solo' "
        "(checkpoint) vs None (this run); max_epochs: 1 (checkpoint) vs None (this run); "
        "max_steps: 1 (checkpoint) vs None (this run); momentum: 1 (checkpoint) vs None (this "
        "run); name: 'a' (checkpoint) vs None (this run); precision: '16' (checkpoint) vs None "
        "(this run); seed: 1 (checkpoint) vs None (this run)); resuming it would silently "
        "change the result. Use the checkpoint's settings, or start a new run without "
        "resume_from_checkpoint"
    )


# --------------------------------------------------------------------------- checkpointing


class Stream:
    """stdout that records what had been written each time it was flushed."""

    def __init__(self):
        self.text, self.flushed = "", []

    def write(self, s):
        self.text += s
        return len(s)

    def flush(self):
        self.flushed.append(self.text)


def test_write_args_writes_paths_as_text(tmp_path):
    cfg = OmegaConf.create({"data": {"train_path": Path("data/train")}, "seed": 5})
    write_args(cfg, tmp_path)
    assert (tmp_path / "args.json").read_text() == (
        '{\n  "data": {\n    "train_path": "data/train"\n  },\n  "seed": 5\n}'
    )


def test_the_last_good_checkpoint_is_flushed_at_once(tmp_path, monkeypatch):
    # a dying run's message must not wait in a buffer
    stream = Stream()
    monkeypatch.setattr(sys, "stdout", stream)
    ckpt = Checkpointer(OmegaConf.create({"name": "run"}), tmp_path)
    ckpt.on_exception(SimpleNamespace(is_global_zero=True), None, NonFiniteLossError("nan"))
    assert stream.flushed == ["last good checkpoint: none written yet\n"]


def test_the_resume_message_is_flushed_at_once(tmp_path, monkeypatch):
    folder = tmp_path / "m" / "v1"
    resumed_from = folder / "run-v1-ep=1.ckpt"
    stream = Stream()
    monkeypatch.setattr(sys, "stdout", stream)
    ckpt = Checkpointer(OmegaConf.create({"name": "run"}), folder, resumed_from=resumed_from)
    trainer = SimpleNamespace(is_global_zero=True, global_step=6, current_epoch=3, logger=None)
    ckpt.on_train_start(trainer, None)
    assert stream.flushed == [f"resumed {resumed_from} at epoch 3, global step 6, into {folder}\n"]


# --------------------------------------------------------------------------- contract hooks


class RecordingHost:
    """A host base behind KViewMethod whose checkpoint hooks record what they are given."""

    def on_save_checkpoint(self, checkpoint):
        self.saved = checkpoint
        checkpoint["host"] = "saved"

    def on_load_checkpoint(self, checkpoint):
        self.loaded = checkpoint


class Method(KViewMethod, RecordingHost):
    pass


def test_checkpoint_hooks_pass_the_checkpoint_to_the_host():
    method = Method()
    checkpoint = {"epoch": 1}
    method.on_save_checkpoint(checkpoint)
    # a run that skipped nothing stores 0
    assert checkpoint == {"epoch": 1, "host": "saved", "nonfinite_skipped": 0}
    assert method.saved is checkpoint
    loaded = {"nonfinite_skipped": 3}
    method.on_load_checkpoint(loaded)
    assert method.loaded is loaded and method.nonfinite_skipped == 3


# --------------------------------------------------------------------------- online kNN


def test_top5_of_five_classes_is_every_class_even_unscored_ones():
    # k = 1: only the nearest bank row's class gets a score, the other four score 0; with 5
    # classes top-5 is every class, so every row is a top-5 hit
    knn = OnlineKNN(k=1, temperature=0.1)
    knn.update(
        train_features=torch.eye(5),
        train_targets=torch.arange(5),
        test_features=torch.eye(5)[[0] * 5],
        test_targets=torch.arange(5),
    )
    top1, top5 = knn.compute()
    assert float(top1) == 20.0 and float(top5) == 100.0


def test_a_test_class_missing_from_the_bank_counts_as_a_class():
    # bank classes 0..4, a test row of class 5: six classes, that row a miss
    knn = OnlineKNN(k=5, temperature=0.1)
    knn.update(
        train_features=torch.eye(5),
        train_targets=torch.arange(5),
        test_features=torch.eye(5)[[0, 1]],
        test_targets=torch.tensor([0, 5]),
    )
    top1, top5 = knn.compute()
    assert float(top1) == 50.0 and float(top5) == 50.0


# --------------------------------------------------------------------------- backbones


def test_the_method_reaches_the_backbone_builder(monkeypatch):
    seen = []

    def builder(method, **kwargs):
        seen.append((method, kwargs))
        return backbones.ConvNet(**kwargs)

    monkeypatch.setitem(backbones.BACKBONES, "convnet", builder)
    cfg = {
        "backbone": {"name": "convnet", "kwargs": {"width": 2, "depth": 1}},
        "data": {"dataset": "cifar10"},
    }
    net = backbones.build_backbone_from_cfg(cfg, "mv_simclr")
    assert seen == [("mv_simclr", {"width": 2, "depth": 1})]
    assert net.num_features == 2


@pytest.mark.parametrize(
    "builder,features", [(backbones.resnet18, 512), (backbones.resnet50, 2048)]
)
def test_resnet_builders_pass_their_kwargs_to_torchvision(builder, features):
    net = builder("mv_simclr", num_classes=3)
    assert (net.fc.in_features, net.fc.out_features, net.num_features) == (features, 3, features)


# --------------------------------------------------------------------------- fake ranks


def install_ranks(
    monkeypatch,
    rank: int,
    world: int,
    gathered: torch.Tensor | None = None,
    peer_grad: torch.Tensor | None = None,
    peer_count: float = 0.0,
):
    """This process is ``rank`` of ``world``: all_gather returns ``gathered`` (rank-major, this
    rank's slice replaced by its own rows); all_reduce adds ``peer_grad`` to a tensor of its
    shape, and to a scalar count ``peer_count`` (the other ranks' counts)."""
    dist = distributed.dist
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: rank)
    monkeypatch.setattr(dist, "get_world_size", lambda: world)

    def all_gather(parts, x):
        rows = x.shape[0]
        for q, part in enumerate(parts):
            part.copy_(x if q == rank else gathered[q * rows : (q + 1) * rows])

    def all_reduce(x, op=None):
        assert op == dist.ReduceOp.SUM
        x.add_(
            peer_grad
            if peer_grad is not None and x.shape == peer_grad.shape
            else torch.full_like(x, peer_count)
        )

    monkeypatch.setattr(dist, "all_gather", all_gather)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)


def test_rank_zero_gets_its_own_slice_of_the_summed_gradient(monkeypatch):
    g = torch.Generator().manual_seed(0)
    mine = torch.randn(4, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    peer_rows = torch.randn(4, 3, generator=g, dtype=torch.float64)
    peer_grad = torch.randn(8, 3, generator=g, dtype=torch.float64)
    install_ranks(monkeypatch, 0, 2, torch.cat([torch.zeros(4, 3), peer_rows]), peer_grad)
    gathered = distributed.gather_with_grad(mine)
    assert torch.equal(gathered, torch.cat([mine.detach(), peer_rows]))
    weights = torch.randn(8, 3, generator=g, dtype=torch.float64)
    (gathered * weights).sum().backward()
    torch.testing.assert_close(mine.grad, weights[:4] + peer_grad[:4])


def geometric_terms(z: torch.Tensor, t: float, images) -> list:
    """Geometric poly-view terms of the anchors of ``images``, by loops over unit views
    ``z`` (K, N, d) of the global batch (tests/test_losses_polyview.py's formula)."""
    k, n_img, _ = z.shape
    terms = []
    for b in images:
        for a in range(k):
            neg = sum(
                math.exp(float(z[a, b] @ z[g, n]) / t)
                for n in range(n_img)
                if n != b
                for g in range(k)
            )
            logs = []
            for c in range(k):
                if c != a:
                    pos = math.exp(float(z[a, b] @ z[c, b]) / t)
                    logs.append(math.log(pos / (pos + neg)))
            terms.append(-sum(logs) / len(logs))
    return terms


def test_polyview_as_the_middle_of_three_ranks_uses_its_own_images(monkeypatch):
    # rank 1 of 3 holds images 2 and 3 of six; its share is the mean of their anchors' terms
    # (no filter: every rank keeps its 3 x 2 anchors)
    g = torch.Generator().manual_seed(1)
    views = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)  # (K, N, d)
    unit = F.normalize(views, dim=-1)
    install_ranks(monkeypatch, 1, 3, unit.transpose(0, 1).contiguous(), peer_count=12.0)
    loss, stats = polyview_loss(views[:, 2:4], 0.5, "geometric")
    terms = geometric_terms(unit, 0.5, [2, 3])
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-12)
    assert stats["num_anchors"].item() == 6.0


# --------------------------------------------------------------------------- polyview filter


def one_anchor_without_negatives():
    """K = 2, B = 2 unit views whose filter (|cos| >= 0.5) leaves anchor (view 0, image 0) no
    negative, anchor (view 1, image 0) one (cos 0.6), and image 1 no kept positive."""
    z00, z10 = [1.0, 0.0, 0.0], [0.8, 0.6, 0.0]
    z01, z11 = [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    return torch.tensor([[z00, z01], [z10, z11]], dtype=torch.float64)


@pytest.mark.parametrize("form", ["geometric", "arithmetic"])
def test_an_anchor_without_negatives_has_probability_one(form):
    t = 0.25
    loss, stats = polyview_loss(
        one_anchor_without_negatives(), t, form, BandFilter(0.5, 1.0, "low_only")
    )
    # anchor z00: p = 1, term 0; anchor z10: p = e^{0.8/t} / (e^{0.8/t} + e^{0.6/t}); one
    # positive each, so geometric = arithmetic
    expected = (0.0 + math.log1p(math.exp(-0.2 / t))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert stats["num_anchors"].item() == 2.0


def test_polyview_names_itself_when_the_band_is_not_a_filter():
    with pytest.raises(ValueError) as info:
        polyview_loss(one_anchor_without_negatives(), 0.5, band=(0.1, 0.9))
    assert str(info.value) == (
        "polyview_loss: band must be a BandFilter or None (no filter); got tuple"
    )


# --------------------------------------------------------------------------- MoCo


def moco_with_one_kept_term():
    """K = 2, B = 1: the positive <q1, k0> = 0 is filtered out (low 0.1), <q0, k1> = 1 kept,
    the queue columns at cos 0.6 kept: one term, -log(e^{1/t} / (e^{1/t} + e^{0.6/t}))."""
    q = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)
    k = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]], dtype=torch.float64)
    queue = torch.tensor([[0.6, 0.8]], dtype=torch.float64).T.expand(2, 2, 1).contiguous()
    return q, k, queue


def test_moco_mean_over_a_single_kept_term_is_that_term():
    t = 0.5
    loss, stats = mv_mocov2plus_loss(*moco_with_one_kept_term(), t, BandFilter(0.1, 1.0))
    assert stats["num_positives"].item() == 1.0
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.4 / t)), rel=1e-12)


def test_moco_share_of_a_rank_with_the_only_kept_term(monkeypatch):
    # rank 0 of 2 keeps the one term, rank 1 none: share = W * term / 1
    install_ranks(monkeypatch, 0, 2, peer_count=0.0)
    t = 0.5
    loss, _ = mv_mocov2plus_loss(*moco_with_one_kept_term(), t, BandFilter(0.1, 1.0))
    assert loss.item() == pytest.approx(2 * math.log1p(math.exp(-0.4 / t)), rel=1e-12)
