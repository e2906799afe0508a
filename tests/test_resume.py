"""Resuming: an interrupted run continues exactly like an uninterrupted one, in its own folder,
and only a checkpoint of the same configuration is resumed."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from solo_multiview.config.pretrain import parse_pretrain_cfg
from solo_multiview.hosts import solo_available
from solo_multiview.training.pretrain import fit, prepare_pretrain
from solo_multiview.training.resume import key_differences, resume_key
from tests.helpers import tiny_cfg

EPOCHS = ["max_steps=-1", "max_epochs=3", "+limit_train_batches=3", "+deterministic=true",
          "checkpoint.enabled=true", "auto_resume.enabled=true"]


class Crash(Callback):
    """Dies in the middle of epoch 2, after the end-of-epoch-1 checkpoint was written."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 2 and batch_idx == 1:
            raise RuntimeError("simulated crash")


def read_rows(folder: Path) -> List[Dict[str, str]]:
    with open(folder / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


CASES = [
    pytest.param("mv_simclr", 0, ["host=builtin"], id="mv_simclr-workers0"),
    pytest.param("mv_simclr", 2, ["host=builtin"], id="mv_simclr-workers2"),
    pytest.param("mv_simclr", 0, ["host=solo"], id="mv_simclr-workers0-solo",
                 marks=pytest.mark.skipif(not solo_available(), reason="solo-learn missing")),
    # cosine EMA schedule: tau is not in the checkpoint and must be recomputed on resume
    pytest.param("mttv", 2, ["momentum.base_tau=0.9", "momentum.final_tau=1.0"],
                 id="mttv-workers2-cosine-tau"),
]


@pytest.mark.slow
@pytest.mark.parametrize("method,workers,extra", CASES)
def test_interrupted_run_resumes_exactly(tmp_path, capsys, method, workers, extra):
    def cfg(root: Path):
        mttv = method == "mttv"
        return tiny_cfg(root, method=method, num_views=None if mttv else 2,
                        config_name="quickstart_mttv_digits" if mttv else "quickstart_digits",
                        overrides=[*EPOCHS, f"data.num_workers={workers}", *extra])

    uninterrupted = prepare_pretrain(cfg(tmp_path / "a"))
    fit(uninterrupted)

    crashed = prepare_pretrain(cfg(tmp_path / "b"))
    crashed.trainer.callbacks.append(Crash())
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(crashed)
    assert [p.name for p in crashed.folder.glob("*.ckpt")] == [
        crashed.checkpointer.checkpoint_path(1).name]
    capsys.readouterr()

    resumed = prepare_pretrain(cfg(tmp_path / "b"))
    assert resumed.folder == crashed.folder  # same version
    assert resumed.ckpt_path == str(crashed.checkpointer.checkpoint_path(1))
    fit(resumed)
    out = capsys.readouterr().out
    assert f"auto_resume: resuming {resumed.ckpt_path} into its run folder" in out
    assert f"resumed {resumed.ckpt_path} at epoch 2, global step 6" in out

    expected, got = uninterrupted.model.state_dict(), resumed.model.state_dict()
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, different
    # the metrics log continues: the same rows as the uninterrupted run's, value for value
    assert read_rows(resumed.folder) == read_rows(uninterrupted.folder)
    # the resumed checkpoint was replaced by the new one; args.json is still there
    assert [p.name for p in resumed.folder.glob("*.ckpt")] == [
        resumed.checkpointer.checkpoint_path(2).name]
    assert json.loads((resumed.folder / "args.json").read_text())["method"] == method


@pytest.fixture(scope="module")
def finished_k2_run(tmp_path_factory) -> Path:
    """A short K = 2 run with a checkpoint: the candidate for the tests below."""
    root = tmp_path_factory.mktemp("previous")
    run = prepare_pretrain(tiny_cfg(root, overrides=[
        "max_steps=1", "max_epochs=1", "checkpoint.enabled=true"]))
    fit(run)
    return root


def resume_cfg(root: Path, overrides=(), views: int = 2):
    return tiny_cfg(root, num_views=views, overrides=[
        "max_steps=1", "max_epochs=1", "checkpoint.enabled=true", "auto_resume.enabled=true",
        *overrides])


def test_same_configuration_is_resumed(finished_k2_run, capsys):
    run = prepare_pretrain(resume_cfg(finished_k2_run))
    assert run.resume is not None and run.resume.how == "auto_resume"
    assert run.folder == run.resume.checkpoint.parent
    assert "auto_resume: resuming" in capsys.readouterr().out


@pytest.mark.parametrize("overrides,views,changed", [
    ([], 4, "method_kwargs.num_views"),
    (["data.long_tail.imbalance_ratio=5"], 2, "data.long_tail.imbalance_ratio"),
    (["augmentations.0.rrc.crop_min_scale=0.5"], 2, "augmentations"),
    (["backbone.kwargs.width=8"], 2, "backbone.kwargs.width"),
    (["optimizer.weight_decay=0.001"], 2, "optimizer.weight_decay"),
    (["scheduler.warmup_epochs=0"], 2, "scheduler.warmup_epochs"),
    (["seed=6"], 2, "seed"),
    (["method_kwargs.temperature=0.5"], 2, "method_kwargs.temperature"),
])
def test_a_different_configuration_is_never_resumed(finished_k2_run, capsys, overrides, views,
                                                   changed):
    run = prepare_pretrain(resume_cfg(finished_k2_run, overrides, views))
    assert run.resume is None
    assert run.folder.parent == Path(run.cfg.checkpoint.dir) / "mv_simclr"
    out = capsys.readouterr().out
    assert "auto_resume: not resuming" in out and changed in out

    explicit = resume_cfg(finished_k2_run, [*overrides, "auto_resume.enabled=false"], views)
    ckpt = next((finished_k2_run / "trained_models").rglob("*.ckpt"))
    explicit.resume_from_checkpoint = str(ckpt)
    with pytest.raises(ValueError, match=f"resume_from_checkpoint: .*{changed}"):
        prepare_pretrain(explicit)


def test_small_crops_and_world_size_are_in_the_key(tmp_path):
    base = resume_key(parse_pretrain_cfg(tiny_cfg(tmp_path)))
    small = resume_key(parse_pretrain_cfg(tiny_cfg(tmp_path, small_crops=2)))
    assert any(d.startswith("data.num_small_crops") for d in key_differences(small, base))
    ddp = resume_key(parse_pretrain_cfg(tiny_cfg(tmp_path, overrides=[
        "devices=2", "accelerator=cpu", "+optimizer.lr_scaling=none"])))
    unscaled = resume_key(parse_pretrain_cfg(tiny_cfg(tmp_path, overrides=[
        "+optimizer.lr_scaling=none"])))
    assert [d.split(":")[0] for d in key_differences(ddp, unscaled)] == ["world_size"]
    # what may change between the runs: paths, logging, the failure policies
    moved = resume_key(parse_pretrain_cfg(tiny_cfg(tmp_path / "elsewhere", overrides=[
        "+nonfinite_loss=skip", "+data.bad_images=skip", "data.num_workers=3"])))
    assert key_differences(moved, base) == []


def test_nodes_count_in_the_world_size():
    def world(**tree) -> int:
        return resume_key({"method": "mv_simclr", **tree})["world_size"]

    assert world(devices=2, accelerator="cpu", num_nodes=3) == 6
    assert world(devices=2, accelerator="cpu") == 2
    assert world(devices=1, accelerator="cpu", num_nodes=2) == 2


def test_workers_are_in_the_key_where_the_data_depends_on_them(tmp_path):
    """mttv's partners are drawn per data-loader worker, so its key has data.num_workers; a
    method whose items do not depend on the worker may change it."""
    def key(method: str, workers: int):
        mttv = method == "mttv"
        return resume_key(parse_pretrain_cfg(tiny_cfg(
            tmp_path, method=method, num_views=None if mttv else 2,
            config_name="quickstart_mttv_digits" if mttv else "quickstart_digits",
            overrides=[f"data.num_workers={workers}"])))

    assert key("mttv", 2)["data.num_workers"] == 2
    assert [d.split(":")[0] for d in key_differences(key("mttv", 3), key("mttv", 2))] == [
        "data.num_workers"]
    assert "data.num_workers" not in key("mv_simclr", 2)
    assert key_differences(key("mv_simclr", 3), key("mv_simclr", 2)) == []


def test_old_checkpoints_are_not_auto_resumed(finished_k2_run, capsys):
    for ckpt in (finished_k2_run / "trained_models").rglob("*.ckpt"):
        old = time.time() - 3 * 3600
        os.utime(ckpt, (old, old))
    run = prepare_pretrain(resume_cfg(finished_k2_run, ["+auto_resume.max_hours=2"]))
    assert run.resume is None
    run = prepare_pretrain(resume_cfg(finished_k2_run, ["+auto_resume.max_hours=4"]))
    assert run.resume is not None


def test_explicit_resume_needs_the_file_and_checks_args(tmp_path, finished_k2_run, capsys):
    def explicit(path: Path):
        cfg = resume_cfg(tmp_path, ["auto_resume.enabled=false"])
        cfg.resume_from_checkpoint = str(path)
        return cfg

    with pytest.raises(FileNotFoundError, match="resume_from_checkpoint: no such file"):
        prepare_pretrain(explicit(tmp_path / "nope.ckpt"))

    ckpt = next((finished_k2_run / "trained_models").rglob("*.ckpt"))
    run = prepare_pretrain(explicit(ckpt))  # same configuration: resumed into its own folder
    assert run.folder == ckpt.parent and run.ckpt_path == str(ckpt)

    bare = tmp_path / "bare" / "model.ckpt"  # no args.json beside it: cannot be checked
    bare.parent.mkdir()
    bare.write_bytes(ckpt.read_bytes())
    capsys.readouterr()
    run = prepare_pretrain(explicit(bare))
    assert run.ckpt_path == str(bare) and run.folder.parent != bare.parent
    assert "configuration was not checked" in capsys.readouterr().out
