"""Exact values of the pretraining preparation and its data builders.

Pins down what ``training.pretrain.prepare_pretrain`` returns (config, model layout, loaders,
run folder, callbacks, logger, checkpointer, resume) and what it hands to its callees on a fresh
run and on a resumed one; the arguments ``data.loaders`` (``build_pretrain_set``,
``build_pretrain_loader``, ``build_train_data``, ``build_val_loader``, ``EpochSampler``) and
``data.datasets`` (``build_train_source``, ``build_test_source``, ``build_pretrain_dataset``,
``build_test_dataset``, ``IndexedSubset``, ``item_seed``) pass on and the whole messages of their
errors. Sources are fakes or the embedded digits set; nothing is trained.
"""

from __future__ import annotations

import csv
import os
import re
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError
from PIL import Image
from torch.utils.data import DataLoader, SequentialSampler

import solo_multiview.methods as methods_module
from solo_multiview.data import datasets, loaders
from solo_multiview.data.sources import BadImageError
from solo_multiview.data.views import ViewSpec
from solo_multiview.training import pretrain, resume
from solo_multiview.training.checkpointing import Checkpointer, ContinuingCSVLogger
from tests.helpers import tiny_cfg

DIGITS_LINE = ("training set: 544 images of digits, 10 classes, 134..13 per class (profile exp, "
               "imbalance ratio 10.0, class order natural, seed 0)")
VERSION = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")


class Recorder:
    """A callee stand-in: records its calls, returns ``result`` (or what ``wraps``, the real
    callee, returns)."""

    def __init__(self, result=None, wraps=None):
        self.calls = []
        self.result = result
        self.wraps = wraps

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.wraps(*args, **kwargs) if self.wraps else self.result


class FakeSource:
    def __init__(self, targets, num_classes, unreadable=()):
        self.targets = targets
        self.num_classes = num_classes
        self.unreadable = set(unreadable)

    def __len__(self):
        return len(self.targets)

    def load(self, index):
        if index in self.unreadable:
            raise BadImageError(f"cannot read {index}")
        return Image.new("RGB", (2, 2), (index, 0, 0))


def _fresh_seed_env(monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)


def _callback_types(trainer):
    return [type(c) for c in trainer.callbacks]


# ------------------------------------------------------------------ prepare_pretrain
def test_fresh_run_returns_every_part(tmp_path, monkeypatch, capsys):
    _fresh_seed_env(monkeypatch)
    logger = Recorder(wraps=pretrain.build_logger)
    monkeypatch.setattr(pretrain, "build_logger", logger)
    data = Recorder(wraps=pretrain.build_train_data)
    monkeypatch.setattr(pretrain, "build_train_data", data)
    cfg = tiny_cfg(tmp_path, overrides=["seed=7", "checkpoint.enabled=true",
                                        "++checkpoint.frequency=3", "++checkpoint.keep_prev=true"])
    run = pretrain.prepare_pretrain(cfg)

    # seeding
    assert torch.initial_seed() == 7
    assert os.environ["PL_GLOBAL_SEED"] == "7"
    assert os.environ["PL_SEED_WORKERS"] == "1"
    # the config: parsed, completed, read-only
    assert OmegaConf.is_readonly(run.cfg) is True
    assert run.cfg.data.num_classes == 10
    with pytest.raises(ReadonlyConfigError):
        run.cfg.seed = 1
    assert capsys.readouterr().out.splitlines() == [DIGITS_LINE]
    # data
    assert len(data.calls) == 1
    (data_cfg, views), data_kwargs = data.calls[0]
    assert data_cfg is run.cfg and data_kwargs == {}
    assert views == methods_module.view_spec(run.cfg)
    assert views == ViewSpec(num_views=2)
    train = run.train_loader
    assert isinstance(train, DataLoader) and isinstance(train.dataset, datasets.IndexedSubset)
    assert isinstance(train.sampler, loaders.EpochSampler)
    assert (train.sampler.seed, train.sampler.epoch, train.dataset.seed) == (7, 0, 7)
    assert (len(train.dataset), train.batch_size, train.drop_last) == (544, 16, True)
    val = run.val_loader
    assert isinstance(val, DataLoader) and isinstance(val.dataset, loaders.WithoutIndexes)
    assert (len(val.dataset), val.batch_size, val.drop_last) == (400, 16, False)
    assert isinstance(val.sampler, SequentialSampler)
    # the model, channels-last
    assert isinstance(run.model, torch.nn.Module)
    weight = next(p for p in run.model.parameters() if p.dim() == 4 and p.shape[1] > 1)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    # the run folder, callbacks, checkpointer, logger, trainer
    assert run.folder.parent == tmp_path / "trained_models" / "mv_simclr"
    assert VERSION.fullmatch(run.folder.name)
    assert not run.folder.exists()
    assert run.resume is None and run.ckpt_path is None
    assert _callback_types(run.trainer) == [pretrain.EpochToDataset, pretrain.BadImageReport,
                                            Checkpointer]
    ckpt = run.checkpointer
    assert run.trainer.callbacks[2] is ckpt
    assert (ckpt.cfg, ckpt.folder, ckpt.frequency, ckpt.keep_prev, ckpt.resumed_from) == (
        run.cfg, run.folder, 3, True, None)
    assert logger.calls == [((run.cfg, run.folder), {"resuming": False})]
    logger = run.trainer.logger
    assert isinstance(logger, ContinuingCSVLogger)
    assert (logger.save_dir, logger.name, logger.version) == (
        str(run.folder.parent), "", run.folder.name)
    assert Path(logger.log_dir) == run.folder
    assert run.trainer.checkpoint_callback is None
    assert run.trainer.max_steps == 2


def test_channels_last_off_and_no_checkpointer(tmp_path, monkeypatch):
    _fresh_seed_env(monkeypatch)
    run = pretrain.prepare_pretrain(tiny_cfg(tmp_path, overrides=[
        "+performance.disable_channel_last=true"]))
    weight = next(p for p in run.model.parameters() if p.dim() == 4 and p.shape[1] > 1)
    assert weight.is_contiguous()
    assert not weight.is_contiguous(memory_format=torch.channels_last)
    assert run.checkpointer is None
    assert _callback_types(run.trainer) == [pretrain.EpochToDataset, pretrain.BadImageReport]


def test_resume_into_its_folder_sets_the_epoch_everywhere(tmp_path, monkeypatch, capsys):
    _fresh_seed_env(monkeypatch)
    ckpt = tmp_path / "old" / "run.ckpt"
    folder = tmp_path / "old"
    found = resume.Resume(ckpt, folder, "auto_resume")
    find = Recorder(found)
    epochs = Recorder(4)
    logger = Recorder(wraps=pretrain.build_logger)
    monkeypatch.setattr(pretrain, "find_resume", find)
    monkeypatch.setattr(pretrain, "checkpoint_data_epoch", epochs)
    monkeypatch.setattr(pretrain, "build_logger", logger)
    run = pretrain.prepare_pretrain(tiny_cfg(tmp_path, overrides=["checkpoint.enabled=true"]))
    assert len(find.calls) == 1
    (got_cfg, log), kwargs = find.calls[0]
    assert got_cfg is run.cfg and log is pretrain.say and kwargs == {}
    assert epochs.calls == [((ckpt,), {})]
    assert run.train_loader.sampler.epoch == 4
    assert run.train_loader.dataset.epoch == 4
    assert run.folder == folder
    assert run.resume is found and run.ckpt_path == str(ckpt)
    assert run.checkpointer.resumed_from == ckpt
    assert run.checkpointer.folder == folder
    assert logger.calls == [((run.cfg, folder), {"resuming": True})]
    assert capsys.readouterr().out.splitlines() == [
        DIGITS_LINE, f"auto_resume: resuming {ckpt} into its run folder {folder}"]


class _LoaderWithoutSampler:
    num_classes = 10
    class_counts = [5, 4, 3, 3, 2, 2, 2, 2, 2, 2]


def test_resume_without_args_json_with_wandb(tmp_path, monkeypatch, capsys):
    _fresh_seed_env(monkeypatch)
    ckpt = tmp_path / "loose.ckpt"
    found = resume.Resume(ckpt, None, "resume_from_checkpoint")
    loader = _LoaderWithoutSampler()
    data = Recorder((loader, None))
    epochs = Recorder(2)
    made = ContinuingCSVLogger(save_dir=str(tmp_path), name="", version="v")
    build_logger = Recorder(made)
    monkeypatch.setattr(pretrain, "build_train_data", data)
    monkeypatch.setattr(pretrain, "find_resume", Recorder(found))
    monkeypatch.setattr(pretrain, "checkpoint_data_epoch", epochs)
    monkeypatch.setattr(pretrain, "build_logger", build_logger)
    run = pretrain.prepare_pretrain(tiny_cfg(tmp_path, overrides=["wandb.enabled=true"]))
    assert data.calls == [((run.cfg, methods_module.view_spec(run.cfg)), {})]
    assert run.cfg.data.num_classes == 10
    assert run.train_loader is loader
    assert epochs.calls == [((ckpt,), {})]
    assert run.folder.parent == tmp_path / "trained_models" / "mv_simclr"
    assert VERSION.fullmatch(run.folder.name)
    assert build_logger.calls == [((run.cfg, run.folder), {"resuming": True})]
    assert run.trainer.logger is made
    assert run.checkpointer is None
    types_ = _callback_types(run.trainer)
    assert types_ == [pretrain.EpochToDataset, pretrain.BadImageReport,
                      pretrain.LearningRateMonitor]
    assert run.trainer.callbacks[2].logging_interval == "step"
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "training set: 27 images of digits, 10 classes, 5..2 per class (profile exp, imbalance "
        "ratio 10.0, class order natural, seed 0)",
        f"resume_from_checkpoint: resuming {ckpt} into a new run folder {run.folder} "
        "(no args.json beside the checkpoint: its configuration was not checked)"]


# ------------------------------------------------------------------ build_logger
def test_build_logger_csv_and_wandb_defaults(tmp_path, monkeypatch):
    cfg = OmegaConf.create({"wandb": {"enabled": False}})
    logger = pretrain.build_logger(cfg, tmp_path / "runs" / "v1")
    assert (logger.save_dir, logger.name, logger.version) == (str(tmp_path / "runs"), "", "v1")
    assert Path(logger.log_dir) == tmp_path / "runs" / "v1"

    class FakeWandb:
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            self.hparams = None

        def log_hyperparams(self, params):
            self.hparams = params

    import lightning.pytorch.loggers as pl_loggers

    monkeypatch.setattr(pl_loggers, "WandbLogger", FakeWandb)
    cfg = OmegaConf.create({"name": "n", "wandb": {"enabled": True, "project": "p",
                                                   "entity": "e", "offline": True}})
    made = pretrain.build_logger(cfg, tmp_path / "v2")
    assert made.kwargs == {"name": "n", "project": "p", "entity": "e", "offline": True,
                           "id": "v2", "resume": None}
    assert made.hparams == OmegaConf.to_container(cfg)


# ------------------------------------------------------------------ loaders
class _Items(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n
        self.epochs = []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


def _loader_cfg(batch_size, workers=0, **top):
    return OmegaConf.create({"optimizer": {"batch_size": batch_size},
                             "data": {"num_workers": workers}, **top})


def test_pretrain_loader_of_a_given_set():
    items = _Items(6)
    loader = loaders.build_pretrain_loader(_loader_cfg(6, seed=5), items)
    assert loader.dataset is items and loader.sampler.data_source is items
    assert (loader.batch_size, loader.drop_last, loader.num_workers) == (6, True, 0)
    assert loader.sampler.seed == 5
    assert loaders.build_pretrain_loader(_loader_cfg(2), items).sampler.seed == 0
    assert loaders.build_pretrain_loader(_loader_cfg(2, seed=0), items).sampler.seed == 0
    assert len(list(loaders.build_pretrain_loader(_loader_cfg(4), items))) == 1
    with pytest.raises(ValueError) as error:
        loaders.build_pretrain_loader(_loader_cfg(7), items)
    assert str(error.value) == ("optimizer.batch_size: 7 is larger than the training set "
                                "(6 images after the long-tail selection)")


def test_pretrain_loader_builds_the_set_from_the_config(monkeypatch):
    items = _Items(3)
    build = Recorder(items)
    monkeypatch.setattr(loaders, "build_pretrain_set", build)
    cfg = _loader_cfg(3)
    assert loaders.build_pretrain_loader(cfg).dataset is items
    assert build.calls == [((cfg,), {})]


def test_loader_kwargs_persistent_with_one_worker():
    assert loaders.loader_kwargs(_loader_cfg(3, workers=1)) == {
        "batch_size": 3, "num_workers": 1, "pin_memory": torch.cuda.is_available(),
        "persistent_workers": True}


def test_epoch_sampler_order_and_dataset_epoch():
    items = _Items(9)
    sampler = loaders.EpochSampler(items, 10)
    sampler.set_epoch(3)
    order = list(iter(sampler))
    assert items.epochs == [3]
    assert order == torch.randperm(9, generator=torch.Generator().manual_seed(13)).tolist()
    assert list(loaders.EpochSampler(list(range(4)), 1)) == torch.randperm(
        4, generator=torch.Generator().manual_seed(1)).tolist()


def _set_cfg(seed="absent"):
    top = {"augmentations": [{"crop_size": 8}], "data": {"dataset": "digits"}}
    if seed != "absent":
        top["seed"] = seed
    return OmegaConf.create(top)


@pytest.mark.parametrize("seed,expected", [("absent", 0), (0, 0), (5, 5), (None, 0)])
def test_pretrain_set_crops_scheme(monkeypatch, seed, expected):
    transform = object()
    made = object()
    multicrop = Recorder(transform)
    dataset = Recorder(made)
    monkeypatch.setattr(loaders, "build_multicrop_transform", multicrop)
    monkeypatch.setattr(loaders, "build_pretrain_dataset", dataset)
    cfg = _set_cfg(seed)
    assert loaders.build_pretrain_set(cfg, ViewSpec(num_views=3)) is made
    assert multicrop.calls == [((cfg.augmentations, "digits"), {})]
    assert dataset.calls == [((cfg, transform), {"seed": expected})]


def test_pretrain_set_pairs_scheme_from_the_method(monkeypatch):
    strong, normal, base = object(), object(), object()
    pairs = Recorder((strong, normal))
    dataset = Recorder(base)
    pair_set = Recorder("pairs")
    spec = ViewSpec(num_views=3, scheme="pairs", partner="class", roles="augmented_augmented")
    specs = Recorder(spec)
    monkeypatch.setattr(loaders, "build_pair_transforms", pairs)
    monkeypatch.setattr(loaders, "build_pretrain_dataset", dataset)
    monkeypatch.setattr(loaders, "MTTVPairDataset", pair_set)
    monkeypatch.setattr(methods_module, "view_spec", specs)
    cfg = _set_cfg(9)
    assert loaders.build_pretrain_set(cfg) == "pairs"
    assert specs.calls == [((cfg,), {})]
    assert pairs.calls == [((cfg.augmentations[0], "digits"), {})]
    assert dataset.calls == [((cfg, None), {})]
    assert pair_set.calls == [((base, strong, normal), {
        "num_pairs": 3, "partner": "class", "views": "augmented_augmented", "seed": 9})]


def test_pretrain_set_given_views_win_over_the_method(monkeypatch):
    monkeypatch.setattr(methods_module, "view_spec", Recorder(ViewSpec(num_views=2)))
    monkeypatch.setattr(loaders, "build_pair_transforms", Recorder((1, 2)))
    monkeypatch.setattr(loaders, "build_pretrain_dataset", Recorder(0))
    monkeypatch.setattr(loaders, "MTTVPairDataset", Recorder("pairs"))
    assert loaders.build_pretrain_set(_set_cfg(), ViewSpec(num_views=2, scheme="pairs")) \
        == "pairs"


@pytest.mark.parametrize("fmt,module,name", [
    ("dali", "solo_multiview.data.dali", "build_dali_pretrain_loader"),
    ("batched", "solo_multiview.data.batched", "build_batched_pretrain_loader")])
def test_train_data_of_the_other_formats(monkeypatch, fmt, module, name):
    build = Recorder("loader")
    fake = types.ModuleType(module)
    setattr(fake, name, build)
    monkeypatch.setitem(sys.modules, module, fake)
    cfg = OmegaConf.create({"data": {"format": fmt}})
    spec = ViewSpec(num_views=4)
    assert loaders.build_train_data(cfg, spec) == ("loader", None)
    assert build.calls == [((cfg,), {"views": spec})]


def test_train_data_of_the_torchvision_format(monkeypatch):
    items = _Items(3)
    sets = Recorder(items)
    loader = Recorder("loader")
    monkeypatch.setattr(loaders, "build_pretrain_set", sets)
    monkeypatch.setattr(loaders, "build_pretrain_loader", loader)
    cfg = OmegaConf.create({"data": {"format": "image_folder"}})
    spec = ViewSpec(num_views=4)
    assert loaders.build_train_data(cfg, spec) == ("loader", items)
    assert sets.calls == [((cfg, spec), {})]
    assert loader.calls == [((cfg, items), {})]


def test_val_loader_arguments(monkeypatch):
    transform = object()
    evals = Recorder(transform)
    test_set = Recorder([(9, 10 * i, i % 2) for i in range(5)])
    monkeypatch.setattr(loaders, "EvalTransform", evals)
    monkeypatch.setattr(loaders, "build_test_dataset", test_set)
    cfg = OmegaConf.create({
        "augmentations": [{"crop_size": 12, "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}],
        "data": {"dataset": "digits", "val_split_file": None, "num_workers": 0,
                 "num_classes": 10},
        "optimizer": {"batch_size": 2}})
    loader = loaders.build_val_loader(cfg)
    assert evals.calls == [((12, "digits", [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]), {})]
    assert test_set.calls == [((cfg, transform), {"num_classes": 10})]
    assert isinstance(loader.dataset, loaders.WithoutIndexes)
    assert loader.dataset.dataset is test_set.result
    assert isinstance(loader.sampler, SequentialSampler)
    assert (loader.batch_size, loader.drop_last, loader.num_workers) == (2, False, 0)
    assert [[part.tolist() for part in batch] for batch in loader] == [
        [[0, 10], [0, 1]], [[20, 30], [0, 1]], [[40], [0]]]


def test_val_loader_of_an_image_list_without_test_list():
    cfg = OmegaConf.create({"data": {"dataset": "image_list", "val_split_file": None}})
    assert loaders.build_val_loader(cfg) is None


# ------------------------------------------------------------------ sources
def _data_cfg(**data):
    return OmegaConf.create({"data": data})


def _fake_sources(monkeypatch, classes=10):
    cifar, digits, lists = Recorder(), Recorder(), Recorder()

    def cifar_source(name, root, train):
        cifar.calls.append((name, root, train))
        return FakeSource([0], 100 if name == "cifar100" else 10)

    def digits_source(train):
        digits.calls.append(train)
        return FakeSource([0], 10)

    def image_list(root, split_file, num_classes):
        lists.calls.append((root, split_file, num_classes))
        return FakeSource([0], classes)

    monkeypatch.setattr(datasets, "cifar_source", cifar_source)
    monkeypatch.setattr(datasets, "digits_source", digits_source)
    monkeypatch.setattr(datasets, "ImageListSource", image_list)
    return cifar, digits, lists


def _message(call, *args):
    with pytest.raises(ValueError) as error:
        call(*args)
    return str(error.value)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_sources(monkeypatch, name):
    cifar, _, _ = _fake_sources(monkeypatch)
    datasets.build_train_source(_data_cfg(dataset=name, train_path="/tr"))
    datasets.build_test_source(_data_cfg(dataset=name, train_path="/tr"))
    datasets.build_test_source(_data_cfg(dataset=name, train_path="/tr", val_path="/va"))
    datasets.build_test_source(_data_cfg(dataset=name, val_path="/va"))
    assert cifar.calls == [(name, "/tr", True), (name, "/tr", False), (name, "/va", False),
                           (name, "/va", False)]
    why = f"data.train_path is required for data.dataset={name} (CIFAR download folder)"
    assert _message(datasets.build_train_source, _data_cfg(dataset=name)) == why
    assert _message(datasets.build_test_source, _data_cfg(dataset=name, train_path="")) == why


def test_digits_sources_and_class_check(monkeypatch):
    _, digits, _ = _fake_sources(monkeypatch)
    datasets.build_train_source(_data_cfg(dataset="digits"))
    datasets.build_test_source(_data_cfg(dataset="digits"))
    assert digits.calls == [True, False]
    bad = _data_cfg(dataset="digits", num_classes=3)
    expected = "data.num_classes=3 but data.dataset=digits has 10 classes"
    assert _message(datasets.build_train_source, bad) == expected
    assert _message(datasets.build_test_source, bad) == expected


def test_image_list_train_source(monkeypatch):
    _, _, lists = _fake_sources(monkeypatch, classes=4)
    lt = {"split_file": "/s/train.txt"}
    datasets.build_train_source(_data_cfg(dataset="image_list", train_path="/r", long_tail=lt,
                                          num_classes=4))
    datasets.build_train_source(_data_cfg(dataset="image_list", train_path="/r", long_tail=lt))
    assert lists.calls == [("/r", "/s/train.txt", 4), ("/r", "/s/train.txt", None)]
    assert _message(datasets.build_train_source, _data_cfg(dataset="image_list", long_tail=lt)) \
        == "data.train_path is required for data.dataset=image_list (image root)"
    assert _message(datasets.build_train_source, _data_cfg(dataset="image_list",
                                                           train_path="/r")) == (
        "data.long_tail.split_file is required for data.dataset=image_list (the train list, "
        "one 'relative/path label' per line)")


def test_image_list_test_source(monkeypatch):
    _, _, lists = _fake_sources(monkeypatch, classes=7)
    base = {"dataset": "image_list", "val_split_file": "/s/val.txt", "num_classes": 5}
    datasets.build_test_source(_data_cfg(**base, train_path="/r", val_path="/v"))
    datasets.build_test_source(_data_cfg(**base, train_path="/r"))
    datasets.build_test_source(_data_cfg(**base, train_path="/r"), 9)
    assert lists.calls == [("/v", "/s/val.txt", 5), ("/r", "/s/val.txt", 5),
                           ("/r", "/s/val.txt", 9)]
    assert _message(datasets.build_test_source, _data_cfg(dataset="image_list",
                                                          train_path="/r")) == (
        "data.val_split_file is required for data.dataset=image_list (the test list)")
    assert _message(datasets.build_test_source, _data_cfg(dataset="image_list",
                                                          val_split_file="/s/val.txt")) == (
        "data.train_path is required for data.dataset=image_list (image root)")


def test_config_access_errors_and_defaults():
    assert _message(datasets.build_train_source, OmegaConf.create({})) == (
        "config has no 'data' node (data.dataset, data.train_path, ...)")
    keys = ["profile", "imbalance_ratio", "seed", "class_order", "index_file", "split_file",
            "n_max", "selection", "fraction", "fraction_seed"]
    assert _message(datasets.long_tail_config, _data_cfg(dataset="digits", long_tail=5)) == (
        f"data.long_tail must be a mapping with keys {keys}, got 5")
    common = {"seed": 0, "class_order": "natural", "index_file": None, "n_max": None,
              "selection": "per_class", "fraction": None, "fraction_seed": 42}
    assert datasets.long_tail_config(_data_cfg(dataset="cifar10")) == {
        **common, "profile": "none", "imbalance_ratio": 1.0}
    cfg = OmegaConf.create({"ratio": 7.0, "data": {"dataset": "cifar10",
                                                   "long_tail": {"imbalance_ratio": "${ratio}"}}})
    assert datasets.long_tail_config(cfg) == {**common, "profile": "exp", "imbalance_ratio": 7.0}
    assert datasets.bad_image_policy(_data_cfg(bad_images="None")) == "error"
    assert datasets.bad_image_policy(_data_cfg(bad_images="skip")) == "skip"


def test_item_seed_value():
    state = np.random.SeedSequence([3, 1, 4]).generate_state(2, dtype=np.uint32).tolist()
    assert datasets.item_seed(3, 1, 4) == (state[0] * 2 ** 32 + state[1]) % 2 ** 63


# ------------------------------------------------------------------ datasets
def test_pretrain_dataset_arguments(monkeypatch):
    source = FakeSource([0, 1, 1, 0], 2)
    monkeypatch.setattr(datasets, "build_train_source", Recorder(FakeSource([0], 1)))
    monkeypatch.setattr(datasets, "pretrain_indexes", Recorder(np.array([1, 3])))
    cfg = _data_cfg(dataset="digits", bad_images="skip")
    made = datasets.build_pretrain_dataset(cfg, None, source, seed=6)
    assert made.source is source
    assert made.source_indexes.tolist() == [1, 3]
    assert (made.seed, made.bad_images, made.bad_image_count) == (6, "skip", 0)


def test_test_dataset_arguments(monkeypatch):
    source = FakeSource([0, 1], 2)
    build = Recorder(source)
    monkeypatch.setattr(datasets, "build_test_source", build)
    cfg = _data_cfg(dataset="digits", bad_images="skip")
    made = datasets.build_test_dataset(cfg, None, num_classes=2)
    assert build.calls == [((cfg, 2), {})]
    assert (made.source, made.bad_images, made.seed, len(made)) == (source, "skip", None, 2)


def test_indexed_subset_fields():
    source = FakeSource(np.array([0, 2, 1, 2, 0], dtype=np.int32), 4)
    subset = datasets.IndexedSubset(source, [[4.0, 1.0], [3.0, 3.0]], None, seed="3",
                                    bad_images="skip")
    assert subset.source_indexes.dtype == np.int64
    assert subset.source_indexes.tolist() == [4, 1, 3, 3]
    assert subset.targets.dtype == np.int64
    assert subset.targets.tolist() == [0, 2, 2, 2]
    assert subset.class_counts.tolist() == [1, 0, 3, 0]
    assert (subset.seed, subset.bad_images) == (3, "skip")
    subset.set_epoch(2 ** 24 + 1)
    assert subset.epoch == 2 ** 24 + 1
    with pytest.raises(ValueError) as error:
        datasets.IndexedSubset(source, None, None, bad_images="bogus")
    assert str(error.value) == ("data.bad_images: unknown value 'bogus'; choose one of "
                                "['error', 'skip']")


def test_indexed_subset_seeds_the_transform():
    subset = datasets.IndexedSubset(FakeSource([0, 1, 0], 2), None, lambda img: torch.rand(3),
                                    seed=7)
    subset.set_epoch(2)
    _, crops, _ = subset[1]
    expected = torch.rand(3, generator=torch.Generator().manual_seed(datasets.item_seed(7, 2, 1)))
    assert torch.equal(crops, expected)


def test_indexed_subset_all_unreadable():
    subset = datasets.IndexedSubset(FakeSource([0, 1, 0], 2, unreadable={0, 1, 2}), None, None,
                                    bad_images="skip")
    with pytest.raises(BadImageError) as error:
        subset[0]
    assert str(error.value) == "data.bad_images=skip: none of the 3 images can be read"


# ------------------------------------------------------------------ checkpointing, resume
def test_checkpointer_default_frequency(tmp_path):
    assert Checkpointer(OmegaConf.create({}), tmp_path).frequency == 1


def test_find_resume_passes_the_log_on(monkeypatch):
    auto = Recorder("found")
    monkeypatch.setattr(resume, "find_auto_resume", auto)
    cfg = OmegaConf.create({"auto_resume": {"enabled": True}})
    log = Recorder()
    assert resume.find_resume(cfg, log) == "found"
    assert auto.calls == [((cfg, log), {})]


def test_continuing_writer_reads_quoted_header_exactly(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    with open(folder / "metrics.csv", "w", newline="") as handle:
        csv.writer(handle).writerow(["a\r\nb", "step"])
    logger = ContinuingCSVLogger(save_dir=str(tmp_path), name="", version="v")
    assert logger.experiment.metrics_keys == ["a\r\nb", "step"]


def test_auto_resume_ties_keep_the_folder_order(tmp_path, monkeypatch):
    root = tmp_path / "m"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        (root / name / "args.json").write_text("{}")
        (root / name / "x.ckpt").write_bytes(b"")
        os.utime(root / name / "x.ckpt", (1_000_000_000, time.time() - 60))
    os.utime(root / "b" / "x.ckpt", (1_000_000_000, (root / "a" / "x.ckpt").stat().st_mtime))
    listing = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(listing(self))))
    monkeypatch.setattr(resume, "resume_key", lambda cfg: {})
    cfg = OmegaConf.create({"checkpoint": {"dir": str(tmp_path)}, "method": "m",
                            "auto_resume": {"max_hours": 1}})
    assert resume.find_auto_resume(cfg, Recorder()) == resume.Resume(
        root / "a" / "x.ckpt", root / "a", "auto_resume")
