"""solo_multiview/training/ piece by piece, on tiny inputs and stand-in trainers: the data epoch
read back from a checkpoint, the metrics.csv rows a resumed run drops, the Checkpointer's
decisions (when to write, what to delete, what to say), the generated presets, the assembled
schema and the end-of-run summary."""

from __future__ import annotations

import builtins
import csv
import dataclasses
import json
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.serialization
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import OmegaConf

from solo_multiview.data.batched.build import BatchedConfig
from solo_multiview.data.dali.backend import DaliConfig
from solo_multiview.data.datasets import DataConfig
from solo_multiview.hosts.backbones import BackboneConfig
from solo_multiview.hosts.guard import NonFiniteLossError
from solo_multiview.hosts.keys import KnnEvalConfig, PerformanceConfig
from solo_multiview.hosts.optim import OptimizerConfig, SchedulerConfig
from solo_multiview.methods import METHODS
from solo_multiview.training import keys, presets, pretrain
from solo_multiview.training.checkpointing import (
    CheckpointConfig,
    Checkpointer,
    ContinuingCSVLogger,
    NonFiniteWeightsError,
    _ContinuingWriter,
    _row_after,
    new_version,
    run_dir,
    write_args,
)
from solo_multiview.training.devices import count_devices
from solo_multiview.training.pretrain import (
    BadImageReport,
    EpochToDataset,
    PreparedRun,
    PretrainResult,
    build_logger,
    describe_training_set,
    fit,
    run_pretrain,
    summary,
    trainer_kwargs,
)
from solo_multiview.training.resume import (
    RESUME_KEYS,
    AutoResumeConfig,
    Resume,
    checkpoint_data_epoch,
    checkpoint_epoch,
    explicit_resume,
    find_auto_resume,
    find_resume,
    key_differences,
    newest_checkpoint,
    resume_key,
)

# --------------------------------------------------------------------------- checkpoint epochs


def gpu_tagged(monkeypatch):
    """Makes torch.save record every storage as living on cuda:0 (a checkpoint written on a
    GPU machine), whatever the machine."""
    registry = [(0, lambda storage: "cuda:0", None), *torch.serialization._package_registry]
    monkeypatch.setattr(torch.serialization, "_package_registry", registry)


def write_ckpt(path: Path, content: dict, legacy: bool = False, gpu: bool = False) -> Path:
    """A checkpoint holding ``content`` plus what Lightning checkpoints also hold: a tensor and
    a DictConfig (not loadable with ``weights_only=True``)."""
    full = {**content, "state_dict": {"w": torch.ones(3)},
            "hyper_parameters": OmegaConf.create({"cfg": {"seed": 5}})}
    with pytest.MonkeyPatch.context() as patch:
        if gpu:
            gpu_tagged(patch)
        torch.save(full, path, _use_new_zipfile_serialization=not legacy)
    return path


LOOPS = {"fit_loop": {"epoch_progress": {"current": {"processed": 4, "completed": 4}}}}
CONTENTS = [
    ({"data_epoch": 3, "epoch": 9, "loops": LOOPS}, 3),  # the Checkpointer's own key wins
    ({"epoch": 9, "loops": LOOPS}, 4),  # else Lightning's processed-epoch count
    ({"epoch": 7}, 7),  # else the epoch
    ({"epoch": 7, "loops": {"fit_loop": {}}}, 7),  # a loop state without the count
    ({}, 0),
]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("content,expected", CONTENTS)
def test_checkpoint_data_epoch_reads_the_stored_epoch(tmp_path, content, expected, legacy):
    assert checkpoint_data_epoch(write_ckpt(tmp_path / "a.ckpt", content, legacy)) == expected


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_gpu_checkpoint_is_read_on_the_cpu(tmp_path, legacy):
    path = write_ckpt(tmp_path / "gpu.ckpt", {"data_epoch": 2}, legacy, gpu=True)
    if not torch.cuda.is_available():  # the file really names a GPU
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=False)
    assert checkpoint_data_epoch(path) == 2


def test_a_zip_checkpoint_is_memory_mapped_on_the_cpu_in_one_read(tmp_path, monkeypatch):
    """A checkpoint of several GB is mapped, not copied into memory, and never loaded onto a
    GPU; the legacy (non-zip) format, which cannot be mapped, is read into CPU memory."""
    calls = []
    load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return load(*args, **kwargs)

    zipped = write_ckpt(tmp_path / "zip.ckpt", {"data_epoch": 2}, gpu=True)
    legacy = write_ckpt(tmp_path / "legacy.ckpt", {"data_epoch": 2}, legacy=True, gpu=True)
    monkeypatch.setattr(torch, "load", spy)
    assert checkpoint_data_epoch(zipped) == 2
    assert calls == [{"map_location": "cpu", "weights_only": False, "mmap": True}]
    calls.clear()
    assert checkpoint_data_epoch(legacy) == 2
    assert calls == [{"map_location": "cpu", "weights_only": False, "mmap": True},
                     {"map_location": "cpu", "weights_only": False}]


def test_explicit_resume_of_a_bare_checkpoint_cannot_check_it(tmp_path):
    path = write_ckpt(tmp_path / "model.ckpt", {"epoch": 1})
    cfg = OmegaConf.create({"resume_from_checkpoint": str(path), "method": "m"})
    assert explicit_resume(cfg) == Resume(path, None, "resume_from_checkpoint")


def test_explicit_resume_names_every_differing_key(tmp_path):
    path = write_ckpt(tmp_path / "model.ckpt", {"epoch": 1})
    (tmp_path / "args.json").write_text('{"method": "m", "seed": 6, "max_epochs": 20}')
    cfg = OmegaConf.create({"resume_from_checkpoint": str(path), "method": "m", "seed": 5,
                            "max_epochs": 10})
    with pytest.raises(ValueError) as info:
        explicit_resume(cfg)
    assert str(info.value) == (
        f"resume_from_checkpoint: '{path}' belongs to a run with a different configuration "
        "(max_epochs: 20 (checkpoint) vs 10 (this run); seed: 6 (checkpoint) vs 5 (this run)); "
        "resuming it would silently change the result. Use the checkpoint's settings, or start "
        "a new run without resume_from_checkpoint")


# --------------------------------------------------------------------------- metrics.csv rows


def write_csv(path: Path, fields, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


FIELDS = ["epoch", "step", "train_loss", "note"]
ROWS = [{"epoch": str(s // 2), "step": str(s), "train_loss": f"{1 / (s + 1):.3f}",
         "note": "two\r\nlines" if s == 1 else ""} for s in range(6)]


def test_drop_rows_removes_exactly_the_rows_asked_for(tmp_path):
    write_csv(tmp_path / "metrics.csv", FIELDS, ROWS)
    writer = _ContinuingWriter(log_dir=str(tmp_path))
    assert writer.metrics_keys == FIELDS  # the existing columns are continued
    assert writer.drop_rows(lambda row: int(row["step"]) >= 4) == 2
    # the kept rows come back value for value (a quoted line break included)
    assert read_csv(tmp_path / "metrics.csv") == (FIELDS, [r for r in ROWS if int(r["step"]) < 4])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_drop_rows_leaves_the_file_alone_when_nothing_matches(tmp_path, monkeypatch):
    write_csv(tmp_path / "metrics.csv", FIELDS, ROWS)
    writer = _ContinuingWriter(log_dir=str(tmp_path))
    monkeypatch.setattr("solo_multiview.training.checkpointing.atomic_write",
                        lambda *a, **k: pytest.fail("rewrote an unchanged metrics.csv"))
    assert writer.drop_rows(lambda row: False) == 0
    assert read_csv(tmp_path / "metrics.csv") == (FIELDS, ROWS)


def test_drop_rows_without_a_metrics_file_drops_nothing(tmp_path):
    writer = _ContinuingWriter(log_dir=str(tmp_path / "new"))
    assert writer.drop_rows(lambda row: True) == 0
    assert not (tmp_path / "new" / "metrics.csv").exists()


def test_row_after_compares_the_step_column():
    drop = _row_after(3)
    assert [drop({"step": s}) for s in ("2", "3", "4", "3.0", "2.0")] == [
        False, True, True, True, False]
    assert drop({"epoch": "0"}) is False  # no step column: step -1
    assert drop({"step": ""}) is False
    assert drop({"step": "n/a"}) is False  # unreadable: kept
    assert _row_after(0)({"step": ""}) is False
    assert _row_after(-1)({"step": ""}) is True  # a missing step is -1 exactly
    assert _row_after(1)({"step": ""}) is False


# --------------------------------------------------------------------------- Checkpointer


class TwoRanks:
    """A strategy of two ranks, as Lightning reduces a boolean over them: ``all=True`` needs
    every rank, ``all=False`` any rank."""

    def __init__(self, other_rank: bool):
        self.other_rank = other_rank

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        decisions = [bool(decision), self.other_rank]
        return builtins.all(decisions) if all else any(decisions)


def fake_trainer(module=None, *, epoch=0, step=1, batches_stepped=None, zero=True, logger=None,
                 other_rank_bad=False, processed=None):
    saved = []

    def save_checkpoint(path):
        saved.append(Path(path))
        Path(path).write_bytes(b"checkpoint")

    epoch_loop = SimpleNamespace()
    if batches_stepped is not None:
        epoch_loop._batches_that_stepped = batches_stepped
    progress = SimpleNamespace(current=SimpleNamespace(processed=processed))
    return SimpleNamespace(
        sanity_checking=False, global_step=step, current_epoch=epoch, is_global_zero=zero,
        lightning_module=module if module is not None else torch.nn.Linear(2, 2),
        strategy=TwoRanks(other_rank_bad), save_checkpoint=save_checkpoint, saved=saved,
        logger=logger, fit_loop=SimpleNamespace(epoch_loop=epoch_loop, epoch_progress=progress))


def checkpointer(folder: Path, **kwargs) -> Checkpointer:
    return Checkpointer(OmegaConf.create({"name": "run", "method": "m"}), folder, **kwargs)


def test_logged_step_is_the_count_of_batches_that_stepped():
    assert Checkpointer._logged_step(fake_trainer(step=9, batches_stepped=7)) == 7
    assert Checkpointer._logged_step(fake_trainer(step=9)) == 9  # older Lightning: global step


def test_save_writes_a_partial_file_then_renames_it(tmp_path):
    ckpt = checkpointer(tmp_path)
    trainer = fake_trainer(epoch=2, step=5)
    ckpt.save(trainer)
    path = tmp_path / f"run-{tmp_path.name}-ep=2.ckpt"
    assert trainer.saved == [tmp_path / f"run-{tmp_path.name}-ep=2.ckpt.partial"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert ckpt.last_ckpt == path and ckpt.last_saved_step == 5


def test_save_twice_at_the_same_step_writes_once(tmp_path):
    ckpt = checkpointer(tmp_path)
    trainer = fake_trainer(epoch=0, step=3)
    ckpt.save(trainer)
    trainer.current_epoch = 1  # e.g. on_train_end right after the last epoch's checkpoint
    ckpt.save(trainer)
    assert [p.name for p in trainer.saved] == [f"run-{tmp_path.name}-ep=0.ckpt.partial"]


@pytest.mark.parametrize("keep_prev", [False, True])
def test_the_previous_checkpoint_is_deleted_unless_keep_prev(tmp_path, keep_prev):
    ckpt = checkpointer(tmp_path, keep_prev=keep_prev)
    trainer = fake_trainer(epoch=0, step=2)
    ckpt.save(trainer)
    trainer.current_epoch, trainer.global_step = 1, 4
    ckpt.save(trainer)
    names = [f"run-{tmp_path.name}-ep={e}.ckpt" for e in ((0, 1) if keep_prev else (1,))]
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_every_frequency_epochs_a_checkpoint(tmp_path):
    ckpt = checkpointer(tmp_path, frequency=3, keep_prev=True)
    trainer = fake_trainer()
    for epoch in range(7):
        trainer.current_epoch, trainer.global_step = epoch, epoch + 1
        ckpt.on_train_epoch_end(trainer, None)
    assert [p.name for p in trainer.saved] == [
        f"run-{tmp_path.name}-ep={e}.ckpt.partial" for e in (2, 5)]


class Buffers(torch.nn.Module):
    def __init__(self, bad: int):
        super().__init__()
        for i in range(7):
            self.register_buffer(f"b{i}", torch.full((2,), float("nan") if i < bad else 1.0))


def test_non_finite_weights_on_this_rank_are_not_written(tmp_path):
    ckpt = checkpointer(tmp_path)
    trainer = fake_trainer(Buffers(bad=6), step=4)
    with pytest.raises(NonFiniteWeightsError) as info:
        ckpt.save(trainer)
    assert str(info.value) == (
        "non-finite weights at global step 4 (e.g. ['b0', 'b1', 'b2', 'b3', 'b4']); not "
        "writing a checkpoint, the last good one is kept: none written yet")
    assert trainer.saved == [] and list(tmp_path.iterdir()) == []


def test_non_finite_weights_on_another_rank_stop_every_rank(tmp_path):
    ckpt = checkpointer(tmp_path)
    good = fake_trainer(epoch=0, step=1)
    ckpt.save(good)
    trainer = fake_trainer(Buffers(bad=0), epoch=1, step=2, other_rank_bad=True)
    with pytest.raises(NonFiniteWeightsError) as info:
        ckpt.save(trainer)
    assert str(info.value) == (
        "non-finite weights at global step 2 (e.g. on another rank); not writing a checkpoint, "
        f"the last good one is kept: {tmp_path / f'run-{tmp_path.name}-ep=0.ckpt'}")
    assert trainer.saved == []


def test_the_data_epoch_is_stored_in_the_checkpoint(tmp_path):
    checkpoint = {}
    checkpointer(tmp_path).on_save_checkpoint(fake_trainer(processed=3), None, checkpoint)
    assert checkpoint == {"data_epoch": 3}


@pytest.mark.parametrize("error,printed", [
    (NonFiniteLossError("nan"), "last good checkpoint: none written yet\n"),
    (NonFiniteWeightsError("nan"), "last good checkpoint: none written yet\n"),
    (ValueError("other"), ""),
])
def test_on_exception_names_the_last_good_checkpoint(tmp_path, capsys, error, printed):
    checkpointer(tmp_path).on_exception(fake_trainer(), None, error)
    assert capsys.readouterr().out == printed


def test_on_exception_prints_on_rank_zero_only(tmp_path, capsys):
    checkpointer(tmp_path).on_exception(fake_trainer(zero=False), None,
                                        NonFiniteLossError("nan"))
    assert capsys.readouterr().out == ""


def test_train_start_writes_args_json_into_a_new_nested_folder(tmp_path):
    folder = tmp_path / "runs" / "m" / "v1"
    checkpointer(folder).on_train_start(fake_trainer(), None)
    assert OmegaConf.load(folder / "args.json") == {"name": "run", "method": "m"}


def resumed_run(tmp_path: Path):
    folder = tmp_path / "m" / "v1"
    write_csv(folder / "metrics.csv", FIELDS, ROWS)
    resumed_from = folder / "run-v1-ep=1.ckpt"
    resumed_from.write_bytes(b"checkpoint")
    return folder, resumed_from


def test_a_resumed_run_drops_the_rows_logged_after_its_checkpoint(tmp_path, capsys):
    folder, resumed_from = resumed_run(tmp_path)
    logger = SimpleNamespace(experiment=_ContinuingWriter(log_dir=str(folder)))
    ckpt = checkpointer(folder, resumed_from=resumed_from)
    trainer = fake_trainer(epoch=2, step=8, batches_stepped=3, logger=logger)
    ckpt.on_train_start(trainer, None)
    assert read_csv(folder / "metrics.csv") == (FIELDS, ROWS[:3])
    assert ckpt.last_ckpt == resumed_from  # replaced (deleted) by the next checkpoint
    assert ckpt.last_saved_step == 8
    assert capsys.readouterr().out == (
        f"resumed {resumed_from} at epoch 2, global step 8, into {folder} (3 metrics.csv rows "
        "of the interrupted part dropped)\n")


def test_a_resumed_run_without_rows_to_drop_says_so_briefly(tmp_path, capsys):
    folder, resumed_from = resumed_run(tmp_path)
    logger = SimpleNamespace(experiment=_ContinuingWriter(log_dir=str(folder)))
    ckpt = checkpointer(folder, resumed_from=resumed_from)
    ckpt.on_train_start(fake_trainer(epoch=3, step=6, batches_stepped=6, logger=logger), None)
    assert read_csv(folder / "metrics.csv") == (FIELDS, ROWS)
    assert capsys.readouterr().out == (
        f"resumed {resumed_from} at epoch 3, global step 6, into {folder}\n")


def test_a_resumed_run_without_a_csv_logger_keeps_going(tmp_path, capsys):
    folder, resumed_from = resumed_run(tmp_path)
    ckpt = checkpointer(folder, resumed_from=resumed_from)
    ckpt.on_train_start(fake_trainer(epoch=2, step=8, batches_stepped=3, logger=None), None)
    assert read_csv(folder / "metrics.csv") == (FIELDS, ROWS)
    assert capsys.readouterr().out == (
        f"resumed {resumed_from} at epoch 2, global step 8, into {folder}\n")


def test_only_rank_zero_rewrites_metrics_csv(tmp_path, capsys):
    folder, resumed_from = resumed_run(tmp_path)
    logger = SimpleNamespace(experiment=_ContinuingWriter(log_dir=str(folder)))
    ckpt = checkpointer(folder, resumed_from=resumed_from)
    ckpt.on_train_start(fake_trainer(step=8, batches_stepped=3, zero=False, logger=logger), None)
    assert read_csv(folder / "metrics.csv") == (FIELDS, ROWS)
    assert capsys.readouterr().out == ""
    assert ckpt.last_saved_step == 8


def test_a_checkpoint_resumed_into_a_new_folder_is_not_deleted(tmp_path):
    _, resumed_from = resumed_run(tmp_path)
    ckpt = checkpointer(tmp_path / "m" / "v2", resumed_from=resumed_from)
    ckpt.on_train_start(fake_trainer(step=8), None)
    assert ckpt.last_ckpt is None and ckpt.last_saved_step == 8


# --------------------------------------------------------------------------- presets


def expected_node(method: str, dataset: str, run_name: str, method_kwargs: dict) -> dict:
    return {"defaults": ["base/trainer@_here_", f"base/{method}_cifar@_here_", {"data": dataset},
                         "_self_", {"override hydra/hydra_logging": "disabled"},
                         {"override hydra/job_logging": "disabled"}],
            "name": run_name, "method_kwargs": method_kwargs}


def test_preset_nodes_spelled_out():
    nodes = presets.preset_nodes()
    assert nodes["mv_simclr_k4_cifar100lt"] == {
        "defaults": ["base/trainer@_here_", "base/mv_simclr_cifar@_here_",
                     {"data": "cifar100lt"}, "_self_",
                     {"override hydra/hydra_logging": "disabled"},
                     {"override hydra/job_logging": "disabled"}],
        "name": "mv_simclr-k4-cifar100lt", "method_kwargs": {"num_views": 4}}
    assert nodes["mimv_mv_byol_cifar10lt"] == {
        "defaults": ["base/trainer@_here_", "base/mv_byol_cifar@_here_",
                     {"data": "cifar10lt"}, "_self_",
                     {"override hydra/hydra_logging": "disabled"},
                     {"override hydra/job_logging": "disabled"}],
        "name": "mimv-mv_byol-cifar10lt",
        "method_kwargs": {"num_views": 1, "mimv": {"enabled": True}}}


def test_every_method_with_a_base_config_gets_its_presets(monkeypatch):
    # a method without scripts/pretrain/base/<name>_cifar.yaml gets none, and stops nothing
    monkeypatch.setitem(METHODS, "a_method_without_base_config", METHODS["mv_simclr"])
    base = Path(__file__).resolve().parents[1] / "scripts" / "pretrain" / "base"
    expected = {}
    for path in sorted(base.glob("*_cifar.yaml")):
        name = path.name[:-len("_cifar.yaml")]
        method = METHODS[name]
        has_mimv = "mimv" in {f.name for f in dataclasses.fields(method.Kwargs)}
        for dataset in ("cifar10lt", "cifar100lt"):
            for k in method.preset_views:
                expected[f"{name}_k{k}_{dataset}"] = expected_node(
                    name, dataset, f"{name}-k{k}-{dataset}", {"num_views": k})
            if has_mimv:
                expected[f"mimv_{name}_{dataset}"] = expected_node(
                    name, dataset, f"mimv-{name}-{dataset}",
                    {"num_views": 1, "mimv": {"enabled": True}})
    nodes = presets.preset_nodes()
    assert nodes == expected
    # 12 K-view methods x 2 data sets x (K = 2, 4, 8 and mimv); mttv has hand-written configs
    assert len(nodes) == 12 * 2 * 4
    assert not any(name.startswith(("mttv", "a_method")) for name in nodes)


# --------------------------------------------------------------------------- schema


SECTIONS = {"backbone": BackboneConfig, "data": DataConfig, "optimizer": OptimizerConfig,
            "scheduler": SchedulerConfig, "checkpoint": CheckpointConfig,
            "auto_resume": AutoResumeConfig, "dali": DaliConfig, "batched": BatchedConfig,
            "knn_eval": KnnEvalConfig, "performance": PerformanceConfig}


def help_of(schema: type, key: str) -> str:
    field = {f.name: f for f in dataclasses.fields(schema)}[key]
    return field.metadata["solo_multiview"]["help"]


def test_common_schema_defaults_are_the_owners_defaults():
    schema = keys.common_pretrain_schema()
    assert schema.__name__ == "PretrainConfig"
    root = schema()
    for key, owner in SECTIONS.items():
        assert getattr(root, key) == owner(), key
    assert root.wandb == keys.WandbConfig()
    assert root.method_kwargs == {}
    assert "momentum" not in {f.name for f in dataclasses.fields(schema)}
    assert help_of(schema, "method_kwargs") == "the method's own keys"
    assert help_of(schema, "augmentations") == (
        "augmentation pipelines, large crops first (scripts/pretrain/augmentations)")


@pytest.mark.parametrize("name", ["mv_simclr", "mv_byol"])
def test_a_methods_schema_holds_its_kwargs_and_momentum(name):
    method = METHODS[name]
    schema = keys.pretrain_schema.__wrapped__(method)  # not the cached one: built here
    assert schema.__name__ == f"{method.__name__}Config"
    root = schema()
    assert root.method_kwargs == method.Kwargs()
    assert root.backbone == BackboneConfig()
    names = {f.name for f in dataclasses.fields(schema)}
    if method.Momentum is None:
        assert "momentum" not in names
    else:
        assert root.momentum == method.Momentum()


# --------------------------------------------------------------------------- summary


METRICS = {"val_acc1": 0.5, "val_knn_acc1": 0.25, "train_nce_loss": 1.23456,
           "train_class_loss": 2.0, "train_acc1": 0.9, "val_loss": 3.0, "lr": 0.1}


def test_summary_with_a_checkpoint():
    result = PretrainResult(Path("runs/v1"), Path("runs/v1/a.ckpt"), METRICS, "cifar10")
    assert summary(result) == "\n".join([
        "run folder: runs/v1",
        "checkpoint: runs/v1/a.ckpt",
        "train_nce_loss: 1.2346",
        "val_acc1: 0.5000",
        "val_knn_acc1: 0.2500",
        "evaluate it with:",
        "  python main_linear.py --config-name cifar10lt "
        "pretrained_feature_extractor=runs/v1/a.ckpt",
        "  python main_knn.py --config-name knn_cifar10lt "
        "pretrained_feature_extractor=runs/v1/a.ckpt",
    ])


def test_summary_without_a_checkpoint():
    result = PretrainResult(Path("runs/v2"), None, {"val_acc1": 0.125}, "digits")
    assert summary(result) == ("run folder: runs/v2\n"
                               "checkpoint: none (checkpoint.enabled is false)\n"
                               "val_acc1: 0.1250")


def test_run_pretrain_fits_the_prepared_run(monkeypatch):
    cfg = OmegaConf.create({"method": "m"})
    monkeypatch.setattr(pretrain, "prepare_pretrain", lambda c: ("prepared", c))
    monkeypatch.setattr(pretrain, "fit", lambda run: ("fitted", run))
    assert run_pretrain(cfg) == ("fitted", ("prepared", cfg))


# --------------------------------------------------------------------------- run folders


def test_new_version_is_a_sortable_timestamp_and_a_random_suffix():
    before = time.strftime("%Y%m%d-%H%M%S")
    version = new_version()
    after = time.strftime("%Y%m%d-%H%M%S")
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", version), version
    assert before <= version[:15] <= after


def test_run_dir_is_dir_method_version():
    cfg = OmegaConf.create({"checkpoint": {"dir": "runs"}, "method": "mv_simclr"})
    assert run_dir(cfg, "v1") == Path("runs") / "mv_simclr" / "v1"


def test_args_json_is_the_resolved_config(tmp_path):
    cfg = OmegaConf.create({"seed": 5, "data": {"seed": "${seed}"}, "name": None})
    assert write_args(cfg, tmp_path / "run") == tmp_path / "run" / "args.json"
    assert (tmp_path / "run" / "args.json").read_text() == (
        '{\n  "seed": 5,\n  "data": {\n    "seed": 5\n  },\n  "name": null\n}')


def test_checkpointer_settings():
    ckpt = Checkpointer(OmegaConf.create({"name": "run"}), "runs/v1", frequency=0,
                        keep_prev=True, resumed_from="runs/v1/a.ckpt")
    assert (ckpt.folder, ckpt.frequency, ckpt.keep_prev) == (Path("runs/v1"), 1, True)
    assert ckpt.resumed_from == Path("runs/v1/a.ckpt")
    assert (ckpt.last_ckpt, ckpt.last_saved_step) == (None, -1)
    assert ckpt.checkpoint_path(3) == Path("runs/v1/run-v1-ep=3.ckpt")
    fresh = Checkpointer(OmegaConf.create({"name": "run"}), Path("runs/v2"), frequency="4")
    assert (fresh.frequency, fresh.keep_prev, fresh.resumed_from) == (4, False, None)


def test_an_existing_empty_metrics_file_has_no_columns(tmp_path):
    (tmp_path / "metrics.csv").write_text("")
    assert _ContinuingWriter(log_dir=str(tmp_path)).metrics_keys == []
    assert (tmp_path / "metrics.csv").exists()  # continued, not deleted


def test_checkpoint_epoch_reads_the_ep_suffix():
    assert checkpoint_epoch(Path("runs/run-v1-ep=12.ckpt")) == 12
    assert checkpoint_epoch(Path("run-v1-ep=12.ckpt.partial")) == -1
    assert checkpoint_epoch(Path("model.ckpt")) == -1


def test_newest_checkpoint_has_the_highest_epoch_then_the_newest_time(tmp_path):
    assert newest_checkpoint(tmp_path) is None
    for name in ("run-ep=3.ckpt", "run-ep=12.ckpt", "model.ckpt", ".run-ep=99.ckpt",
                 "run-ep=20.ckpt.partial", "other-ep=12.ckpt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir-ep=50.ckpt").mkdir()
    now = time.time()
    os.utime(tmp_path / "run-ep=12.ckpt", (now - 100, now - 100))
    os.utime(tmp_path / "other-ep=12.ckpt", (now - 50, now - 50))
    assert newest_checkpoint(tmp_path) == tmp_path / "other-ep=12.ckpt"
    os.utime(tmp_path / "run-ep=12.ckpt", (now, now))
    assert newest_checkpoint(tmp_path) == tmp_path / "run-ep=12.ckpt"


@pytest.mark.parametrize("devices,accelerator,gpus,expected", [
    ([0, 1], "gpu", 4, 2), ((3,), "gpu", 4, 1), ("auto", "gpu", 4, 4), ("auto", "cuda", 4, 4),
    ("auto", "auto", 4, 4), (-1, "gpu", 3, 3), ("-1", "gpu", 3, 3), ("auto", "cpu", 4, 1),
    ("auto", "gpu", 0, 1), (-1, "cpu", 4, 1), (3, "gpu", 8, 3), ("2", "cpu", 0, 2),
])
def test_count_devices(monkeypatch, devices, accelerator, gpus, expected):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert count_devices(devices, accelerator) == expected
    if isinstance(devices, list):
        assert count_devices(OmegaConf.create(devices), accelerator) == expected


# --------------------------------------------------------------------------- resume key


def test_key_differences_walks_nested_values():
    ours = {"a": 1, "b": {"c": 2, "d": [1]}, "e": None}
    theirs = {"a": 1, "b": {"c": 3}, "f": "x"}
    assert key_differences(ours, theirs) == [
        "b.c: 3 (checkpoint) vs 2 (this run)",
        "b.d: None (checkpoint) vs [1] (this run)",
        "f: 'x' (checkpoint) vs None (this run)",
    ]
    assert key_differences(ours, ours) == []


def test_resume_key_of_a_plain_tree():
    cfg = OmegaConf.create({"method": "not_a_method", "seed": "${s}", "s": 5,
                            "data": {"dataset": "cifar10"}, "optimizer": {"lr": 0.5},
                            "devices": 2, "accelerator": "cpu", "num_nodes": None})
    expected = {**{name: None for name in RESUME_KEYS}, "method": "not_a_method", "seed": 5,
                "data.dataset": "cifar10", "optimizer": {"lr": 0.5}, "world_size": 2}
    assert resume_key(cfg) == expected
    # an args.json dict: JSON values (a path as its text)
    assert resume_key({**OmegaConf.to_container(cfg, resolve=True), "host": Path("a/b")}) == {
        **expected, "host": "a/b"}
    assert resume_key({"devices": "many", "accelerator": "cpu"})["world_size"] is None
    assert resume_key({"devices": 2, "accelerator": "cpu", "num_nodes": 3})["world_size"] == 6
    # a known method whose args this version cannot read: no worker count in its key
    assert "data.num_workers" not in resume_key({"method": "mttv", "data": 3})
    assert resume_key({"data": 3})["data.dataset"] is None


def auto_cfg(root: Path, seed: int = 5, max_hours: float = 1.0):
    return OmegaConf.create({"checkpoint": {"dir": str(root)}, "method": "m", "seed": seed,
                             "auto_resume": {"max_hours": max_hours, "enabled": True},
                             "resume_from_checkpoint": None})


def run_folder(root: Path, version: str, args, epochs=(1,), age_s: float = 0.0) -> Path:
    folder = root / "m" / version
    folder.mkdir(parents=True)
    if args is not None:
        (folder / "args.json").write_text(args if isinstance(args, str) else json.dumps(args))
    when = time.time() - age_s
    for epoch in epochs:
        (folder / f"run-{version}-ep={epoch}.ckpt").write_bytes(b"x")
        os.utime(folder / f"run-{version}-ep={epoch}.ckpt", (when, when))
    return folder


def test_auto_resume_takes_the_newest_matching_run(tmp_path):
    same = run_folder(tmp_path, "v1", {"method": "m", "seed": 5}, epochs=(0, 2), age_s=30)
    run_folder(tmp_path, "v2", {"method": "m", "seed": 6}, age_s=20)
    run_folder(tmp_path, "v3", "{not json", age_s=10)
    run_folder(tmp_path, "v4", None)  # no args.json: not a run folder
    run_folder(tmp_path, "v5", {"method": "m", "seed": 5}, epochs=(), age_s=0)  # no checkpoint
    run_folder(tmp_path, "v6", {"method": "m", "seed": 5}, age_s=7200)  # too old
    logged = []
    found = find_auto_resume(auto_cfg(tmp_path), logged.append)
    assert found == Resume(same / "run-v1-ep=2.ckpt", same, "auto_resume")
    assert logged == [
        f"auto_resume: skipped {tmp_path / 'm' / 'v3'}: unreadable args.json",
        f"auto_resume: not resuming {tmp_path / 'm' / 'v2' / 'run-v2-ep=1.ckpt'}: different "
        "configuration (seed: 6 (checkpoint) vs 5 (this run))",
    ]
    assert find_resume(auto_cfg(tmp_path), logged.append) == found


def test_auto_resume_shows_six_differences_at_most(tmp_path):
    args = {"method": "m", "seed": 6, "max_epochs": 1, "max_steps": 2, "precision": "16",
            "name": "x", "host": "solo", "momentum": 1}
    run_folder(tmp_path, "v1", args)
    logged = []
    assert find_auto_resume(auto_cfg(tmp_path), logged.append) is None
    assert logged == [
        f"auto_resume: not resuming {tmp_path / 'm' / 'v1' / 'run-v1-ep=1.ckpt'}: different "
        "configuration (host: 'solo' (checkpoint) vs None (this run); max_epochs: 1 "
        "(checkpoint) vs None (this run); max_steps: 2 (checkpoint) vs None (this run); "
        "momentum: 1 (checkpoint) vs None (this run); name: 'x' (checkpoint) vs None (this "
        "run); precision: '16' (checkpoint) vs None (this run); ... (7 keys))"]


def test_auto_resume_without_runs_or_when_disabled(tmp_path):
    assert find_auto_resume(auto_cfg(tmp_path / "none"), pytest.fail) is None
    run_folder(tmp_path, "v1", {"method": "m", "seed": 5})
    disabled = auto_cfg(tmp_path)
    disabled.auto_resume.enabled = False
    assert find_resume(disabled, pytest.fail) is None
    disabled.resume_from_checkpoint = "None"  # the string Hydra leaves for null
    assert find_resume(disabled, pytest.fail) is None


def test_an_explicit_checkpoint_wins_over_auto_resume(tmp_path):
    folder = run_folder(tmp_path, "v1", {"method": "m", "seed": 5}, epochs=(0, 1))
    cfg = auto_cfg(tmp_path)
    cfg.resume_from_checkpoint = str(folder / "run-v1-ep=0.ckpt")
    assert find_resume(cfg, pytest.fail) == Resume(
        folder / "run-v1-ep=0.ckpt", folder, "resume_from_checkpoint")
    cfg.resume_from_checkpoint = str(folder / "missing.ckpt")
    with pytest.raises(FileNotFoundError) as info:
        find_resume(cfg, pytest.fail)
    assert str(info.value) == f"resume_from_checkpoint: no such file '{folder / 'missing.ckpt'}'"


# --------------------------------------------------------------------------- pretraining run


def test_describe_training_set():
    data = {"dataset": "cifar10", "long_tail": {
        "index_file": None, "profile": "exp", "imbalance_ratio": 100, "class_order": "fixed",
        "seed": 0}}
    cfg = OmegaConf.create({"data": data})
    assert describe_training_set(cfg, [1000, 200, 34]) == (
        "training set: 1,234 images of cifar10, 3 classes, 1000..34 per class (profile exp, "
        "imbalance ratio 100, class order fixed, seed 0)")
    cfg.data.long_tail.index_file = "lt.txt"
    assert describe_training_set(cfg, torch.tensor([5, 7])) == (
        "training set: 12 images of cifar10, 2 classes, 7..5 per class (index file lt.txt)")


def test_trainer_kwargs_are_the_trainer_arguments_set():
    cfg = OmegaConf.create({"method": "m", "max_epochs": "${epochs}", "epochs": 3,
                            "precision": None, "devices": [0], "strategy": "auto"})
    assert trainer_kwargs(cfg) == {"max_epochs": 3, "devices": [0], "strategy": "auto"}
    cfg.strategy = "ddp"
    strategy = trainer_kwargs(cfg)["strategy"]
    assert isinstance(strategy, DDPStrategy)
    assert strategy._ddp_kwargs == {"find_unused_parameters": False}


class FakeWandb:
    made = []

    def __init__(self, **kwargs):
        self.kwargs, self.hparams = kwargs, None
        FakeWandb.made.append(self)

    def log_hyperparams(self, params):
        self.hparams = params


@pytest.mark.parametrize("resuming,resume", [(True, "allow"), (False, None)])
def test_build_logger_wandb(monkeypatch, resuming, resume):
    import lightning.pytorch.loggers

    monkeypatch.setattr(lightning.pytorch.loggers, "WandbLogger", FakeWandb)
    cfg = OmegaConf.create({"name": "run", "seed": "${n}", "n": 1, "wandb": {
        "enabled": True, "project": "p", "entity": "e", "offline": True}})
    logger = build_logger(cfg, Path("runs/m/v7"), resuming=resuming)
    assert logger.kwargs == {"name": "run", "project": "p", "entity": "e", "offline": True,
                             "id": "v7", "resume": resume}
    assert logger.hparams == {"name": "run", "seed": 1, "n": 1, "wandb": {
        "enabled": True, "project": "p", "entity": "e", "offline": True}}


def test_build_logger_csv_writes_into_the_run_folder(tmp_path):
    cfg = OmegaConf.create({"wandb": {"enabled": False}})
    logger = build_logger(cfg, tmp_path / "m" / "v7")
    assert isinstance(logger, ContinuingCSVLogger)
    assert Path(logger.log_dir) == tmp_path / "m" / "v7"
    assert isinstance(logger.experiment, _ContinuingWriter)


class EpochRecorder:
    def __init__(self):
        self.epochs = []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


def test_epoch_to_dataset_passes_the_processed_epoch():
    dataset = EpochRecorder()
    trainer = fake_trainer(processed=4)
    trainer.train_dataloader = SimpleNamespace(dataset=dataset)
    callback = EpochToDataset()
    callback.on_train_start(trainer, None)
    trainer.fit_loop.epoch_progress.current.processed = 5
    callback.on_train_epoch_start(trainer, None)
    assert dataset.epochs == [4, 5]
    trainer.train_dataloader = SimpleNamespace(dataset=object())  # no set_epoch: left alone
    callback.on_train_epoch_start(trainer, None)
    trainer.train_dataloader = None
    callback.on_train_start(trainer, None)


class BadImages:
    def __init__(self, mask):
        self._bad = torch.tensor(mask)

    def describe(self, position):
        return f"img{position}.png"


class Logging:
    device = torch.device("cpu")

    def __init__(self):
        self.logged = []

    def log(self, name, value):
        self.logged.append((name, value))


def report_epoch(report, dataset, other_rank=None, zero=True):
    gather = ((lambda t: torch.stack([t, torch.tensor(other_rank)])) if other_rank is not None
              else (lambda t: t))
    trainer = SimpleNamespace(train_dataloader=SimpleNamespace(dataset=dataset),
                              strategy=SimpleNamespace(all_gather=gather), is_global_zero=zero)
    module = Logging()
    report.on_train_epoch_end(trainer, module)
    return module.logged


def test_bad_image_report_counts_over_ranks_and_prints_the_new_ones(capsys):
    report = BadImageReport()
    assert report.reported == 0
    mine, other = [0, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1, 1]
    pairs = SimpleNamespace(base=BadImages(mine))  # MTTV pairs wrap the image set
    assert report_epoch(report, pairs, other) == [("train_bad_images", 6.0)]
    assert capsys.readouterr().out == (
        "data.bad_images=skip: 6 unreadable training image(s) replaced by the next readable one "
        "so far, e.g. img1.png, img3.png, img4.png, img5.png, img6.png\n")
    assert report.reported == 6
    assert report_epoch(report, pairs, other) == [("train_bad_images", 6.0)]
    assert capsys.readouterr().out == ""  # nothing new
    assert report_epoch(BadImageReport(), BadImages([1, 0, 1]), zero=False) == [
        ("train_bad_images", 2.0)]
    assert capsys.readouterr().out == ""  # rank 0 prints
    single = BadImageReport()
    assert report_epoch(single, BadImages([0, 0, 1])) == [("train_bad_images", 1.0)]
    assert capsys.readouterr().out == (
        "data.bad_images=skip: 1 unreadable training image(s) replaced by the next readable one "
        "so far, e.g. img2.png\n")
    assert report_epoch(single, SimpleNamespace()) == []  # no bad-image mask: nothing logged


def test_fit_returns_the_run_folder_checkpoint_and_scalar_metrics(tmp_path):
    calls = []
    trainer = SimpleNamespace(
        fit=lambda *args, **kwargs: calls.append((args, kwargs)),
        callback_metrics={"val_acc1": torch.tensor(0.5), "hist": torch.tensor([1.0, 2.0]),
                          "plain": 3.0})
    ckpt = Checkpointer(OmegaConf.create({"name": "run"}), tmp_path)
    ckpt.last_ckpt = tmp_path / "a.ckpt"
    cfg = OmegaConf.create({"data": {"dataset": "cifar100"}})
    resume = Resume(tmp_path / "old.ckpt", tmp_path, "auto_resume")
    run = PreparedRun(cfg, "model", trainer, "train", "val", tmp_path, ckpt, resume)
    assert run.ckpt_path == str(tmp_path / "old.ckpt")
    assert fit(run) == PretrainResult(tmp_path, tmp_path / "a.ckpt", {"val_acc1": 0.5},
                                      "cifar100")
    assert calls == [(("model", "train", "val"), {"ckpt_path": str(tmp_path / "old.ckpt")})]
    fresh = PreparedRun(cfg, "model", trainer, "train", "val", tmp_path, None)
    assert fresh.ckpt_path is None
    assert fit(fresh) == PretrainResult(tmp_path, None, {"val_acc1": 0.5}, "cifar100")
    assert calls[-1] == (("model", "train", "val"), {"ckpt_path": None})


def test_config_names_are_the_files_and_the_presets():
    files = {p.stem for p in presets.PRETRAIN_CONFIGS.glob("*.yaml")}
    names = presets.config_names()
    assert names == sorted(files | set(presets.preset_nodes()))
    assert "quickstart_digits" in names and "mv_simclr_k8_cifar10lt" in names
