"""Non-finite loss policy (``nonfinite_loss: stop | skip``); non-finite weights at a checkpoint."""

from __future__ import annotations

import csv
import importlib
import math
from typing import Dict, List

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from solo_multiview.hosts.guard import NonFiniteLossError
from solo_multiview.training.checkpointing import NonFiniteWeightsError
from solo_multiview.training.pretrain import fit, prepare_pretrain
from tests.helpers import HOSTS, tiny_cfg

RUN = ["max_steps=-1", "max_epochs=2", "+limit_train_batches=3", "checkpoint.enabled=true"]
LOSSES = {"mv_simclr": ("solo_multiview.methods.mv_simclr", "mv_nt_xent"),
          "mttv": ("solo_multiview.methods.mttv", "mttv_infonce")}


def nan_on_calls(monkeypatch, method: str, calls: set) -> List[int]:
    """Makes the method's loss NaN on the given (1-based) calls; returns the call counter."""
    module_name, attr = LOSSES[method]
    module = importlib.import_module(module_name)
    original = getattr(module, attr)
    counter = [0]

    def wrapped(*args, **kwargs):
        loss, stats = original(*args, **kwargs)
        counter[0] += 1
        return (loss * math.nan if counter[0] in calls else loss), stats

    monkeypatch.setattr(module, attr, wrapped)
    return counter


class Snapshots(Callback):
    """State dict and optimizer state at the start of every training batch."""

    def __init__(self):
        self.weights: List[Dict[str, torch.Tensor]] = []
        self.optimizer: List[Dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.weights.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})
        state = trainer.optimizers[0].state_dict()["state"]
        self.optimizer.append({k: {n: t.clone() for n, t in v.items()} for k, v in state.items()})


def same(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], prefix: str = "") -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))


def read_metrics(folder) -> List[Dict[str, str]]:
    with open(folder / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_stop_names_step_terms_and_lr_and_keeps_the_good_checkpoint(tmp_path, monkeypatch,
                                                                    capsys):
    nan_on_calls(monkeypatch, "mv_simclr", {4})  # epoch 1, batch 0 = global step 3
    run = prepare_pretrain(tiny_cfg(tmp_path, overrides=RUN))
    with pytest.raises(NonFiniteLossError) as error:
        fit(run)
    message = str(error.value)
    assert "non-finite loss at global step 3 (epoch 1, batch 0)" in message
    assert "train_nce_loss=nan" in message and "train_class_loss=" in message
    assert "learning rate: backbone=" in message and "projector=" in message
    assert "nonfinite_loss=stop" in message

    ckpts = sorted(run.folder.glob("*.ckpt"))
    assert [p.name.split("-ep=")[1] for p in ckpts] == ["0.ckpt"]  # the last good one, only
    state = torch.load(ckpts[0], map_location="cpu", weights_only=False)
    assert state["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values()
               if v.is_floating_point())
    assert not list(run.folder.glob("*.partial"))
    assert f"last good checkpoint: {ckpts[0]}" in capsys.readouterr().out
    # the weights in memory were not touched by the NaN either
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


@pytest.mark.parametrize("host", HOSTS)
def test_skip_leaves_weights_optimizer_and_buffers_as_they_were(tmp_path, monkeypatch, host):
    nan_on_calls(monkeypatch, "mv_simclr", {2})  # second batch (global step 1)
    run = prepare_pretrain(tiny_cfg(tmp_path, host=host, overrides=[
        *RUN, "+nonfinite_loss=skip", "optimizer.weight_decay=0.01"]))
    snaps = Snapshots()
    run.trainer.callbacks.append(snaps)
    fit(run)

    assert run.model.nonfinite_skipped == 1
    assert run.trainer.global_step == 6  # the skipped batch still counts as a step
    before, after = snaps.weights[1], snaps.weights[2]
    assert same(before, after)  # parameters and BN running statistics
    assert not same(snaps.weights[0], before)  # other steps do train
    opt_before, opt_after = snaps.optimizer[1], snaps.optimizer[2]
    assert opt_before.keys() == opt_after.keys()
    assert all(torch.equal(opt_before[k][n], opt_after[k][n])
               for k in opt_before for n in opt_before[k])  # SGD momentum untouched
    assert all(torch.isfinite(v).all() for v in run.model.state_dict().values()
               if v.is_floating_point())

    rows = read_metrics(run.folder)
    skipped = [float(r["train_skipped_batches"]) for r in rows if r["train_skipped_batches"]]
    assert skipped == [0.0] + [1.0] * 5  # one row per step, the skipped one included
    epoch_losses = [float(r["train_nce_loss_epoch"]) for r in rows if r["train_nce_loss_epoch"]]
    assert len(epoch_losses) == 2 and all(math.isfinite(v) for v in epoch_losses)
    # the checkpoint carries the count, so a resumed run goes on counting
    ckpt = torch.load(run.checkpointer.last_ckpt, map_location="cpu", weights_only=False)
    assert ckpt["nonfinite_skipped"] == 1
    ckpt["nonfinite_skipped"] = 4  # and loading it restores the count (0 for older files)
    run.model.on_load_checkpoint(ckpt)
    assert run.model.nonfinite_skipped == 4
    del ckpt["nonfinite_skipped"]
    run.model.on_load_checkpoint(ckpt)
    assert run.model.nonfinite_skipped == 0


def test_skip_also_skips_the_ema_update(tmp_path, monkeypatch):
    nan_on_calls(monkeypatch, "mttv", {2})
    run = prepare_pretrain(tiny_cfg(tmp_path, method="mttv", num_views=None,
                                    config_name="quickstart_mttv_digits",
                                    overrides=[*RUN, "+nonfinite_loss=skip"]))
    snaps = Snapshots()
    run.trainer.callbacks.append(snaps)
    fit(run)
    assert run.model.nonfinite_skipped == 1
    before, after = snaps.weights[1], snaps.weights[2]
    assert same(before, after, "momentum_")  # the EMA target did not move
    assert not same(snaps.weights[2], snaps.weights[3], "momentum_")  # it does otherwise


class PoisonWeights(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            with torch.no_grad():
                next(pl_module.backbone.parameters()).fill_(math.inf)


def test_nonfinite_weights_never_overwrite_a_good_checkpoint(tmp_path):
    run = prepare_pretrain(tiny_cfg(tmp_path, overrides=RUN))
    run.trainer.callbacks.insert(0, PoisonWeights())  # before the Checkpointer's epoch end
    with pytest.raises(NonFiniteWeightsError, match="not writing a checkpoint"):
        fit(run)
    names = [p.name for p in run.folder.iterdir()]
    assert [n for n in names if n.endswith(".ckpt")] == [run.checkpointer.checkpoint_path(0).name]
    assert not [n for n in names if "partial" in n or n.endswith(".tmp")]


@pytest.mark.parametrize("override,message", [
    ("+nonfinite_loss=ignore", "nonfinite_loss: unknown value 'ignore'; choose one of "
                               "['stop', 'skip']"),
    ("+data.bad_images=drop", "data.bad_images: unknown value 'drop'; choose one of "
                              "['error', 'skip']"),
    ("+auto_resume.max_hours=0", "auto_resume.max_hours: got 0; expected a number of hours > 0"),
])
def test_reliability_keys_are_validated(tmp_path, override, message):
    with pytest.raises(ValueError) as error:
        prepare_pretrain(tiny_cfg(tmp_path, overrides=[override]))
    assert message in str(error.value)
