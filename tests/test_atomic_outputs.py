"""An interrupted save leaves the previous good file intact and no partial file behind:
checkpoints (training/checkpointing.py), args.json and every file written through
solo_multiview.atomic.atomic_write (results, per-class tables, plots)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from solo_multiview.atomic import atomic_write
from solo_multiview.training.checkpointing import Checkpointer, write_args
from solo_multiview.training.pretrain import fit, prepare_pretrain
from tests.helpers import tiny_cfg

RUN = ["max_steps=-1", "max_epochs=2", "+limit_train_batches=2", "checkpoint.enabled=true"]


def leftovers(folder: Path) -> list:
    return [p.name for p in folder.iterdir()
            if p.name.endswith((".partial", ".tmp")) or p.name.startswith(".")]


class BreakSavingInEpoch1(Callback):
    """From epoch 1 on, ``install()`` breaks checkpoint writing."""

    def __init__(self, install):
        self.install = install
        self.saved = {}

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            # the Checkpointer's run folder (the method attaches its guard callback at fit)
            folder = next(c for c in trainer.callbacks if isinstance(c, Checkpointer)).folder
            self.saved = {p.name: p.read_bytes() for p in folder.glob("*.ckpt")}
            self.install(trainer)


def run_with_broken_save(tmp_path, install):
    run = prepare_pretrain(tiny_cfg(tmp_path, overrides=RUN))
    breaker = BreakSavingInEpoch1(install)
    run.trainer.callbacks.append(breaker)
    assert run.trainer.callbacks[-2] is run.checkpointer
    with pytest.raises(OSError, match="disk full"):
        fit(run)
    return run, breaker.saved


def test_torch_save_failing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    def install(trainer):
        def failing_save(obj, f, *args, **kwargs):
            raise OSError("disk full (simulated)")

        monkeypatch.setattr(torch, "save", failing_save)

    run, saved = run_with_broken_save(tmp_path, install)
    assert list(saved) == [run.checkpointer.checkpoint_path(0).name]
    now = {p.name: p.read_bytes() for p in run.folder.glob("*.ckpt")}
    assert now == saved  # the epoch-0 checkpoint, byte for byte
    assert leftovers(run.folder) == []


def test_write_failing_half_way_removes_the_partial_file(tmp_path):
    def install(trainer):
        def half_write(checkpoint, path, storage_options=None):
            with open(path, "wb") as handle:
                handle.write(b"PK\x03\x04 half of a checkpoint")
            raise OSError("disk full (simulated)")

        trainer.strategy.checkpoint_io.save_checkpoint = half_write

    run, saved = run_with_broken_save(tmp_path, install)
    assert {p.name: p.read_bytes() for p in run.folder.glob("*.ckpt")} == saved
    assert leftovers(run.folder) == []
    state = torch.load(run.checkpointer.checkpoint_path(0), map_location="cpu",
                       weights_only=False)
    assert "state_dict" in state  # still a complete, loadable checkpoint


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
@pytest.mark.parametrize("binary", [False, True])
def test_atomic_write_interrupted_keeps_the_previous_file(tmp_path, error, binary):
    target = tmp_path / "results.json"
    atomic_write(target, lambda f: f.write(b"good" if binary else "good"), binary=binary)

    def interrupted(f):
        f.write(b"half" if binary else "half")
        raise error

    with pytest.raises(type(error)):
        atomic_write(target, interrupted, binary=binary)
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_args_json_interrupted_keeps_the_previous_one(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path)
    write_args(cfg, tmp_path)
    before = (tmp_path / "args.json").read_text()

    def failing_dump(obj, f, **kwargs):
        f.write('{"method": ')
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(json, "dump", failing_dump)
    cfg.method = "changed"
    with pytest.raises(OSError, match="disk full"):
        write_args(cfg, tmp_path)
    assert (tmp_path / "args.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["args.json"]
