"""Exact values of the evaluation's preparation: args.json checks, the feature cache (key, file
name, what it refuses), the data settings (merge of the evaluation config with args.json, crop
and normalisation, source identities, probe sets) and what ``prepare_eval`` / ``split_features``
/ ``base_settings`` / ``finish`` record and log. In-process, tiny data: the embedded digits set
with a random tiny convnet, and a handful of 8x8 PNG files for ``image_list``."""

from __future__ import annotations

import hashlib
import json
import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

import solo_multiview.eval.feature_cache as feature_cache
import solo_multiview.eval.prepare as prepare
import solo_multiview.eval.probe_data as probe_data
from solo_multiview.data.augmentations import EvalTransform
from solo_multiview.data.datasets import IndexedSubset
from solo_multiview.data.sources import ArraySource
from solo_multiview.eval.checkpoint import (
    _get,
    backbone_state_dict,
    check_backbone_config,
    load_args,
    load_pretrained_backbone,
)
from solo_multiview.eval.eval_config import parse_eval_cfg
from solo_multiview.eval.feature_cache import (
    Features,
    _sha1,
    cache_path,
    cached_features,
    checkpoint_id,
    feature_key,
    load_cached,
    save_cached,
)
from solo_multiview.eval.metrics import long_tail_report
from solo_multiview.eval.probe_data import (
    ImageSettings,
    _balanced_list_source,
    build_eval_data,
    data_config,
    image_settings,
    merge_long_tail,
    source_id,
)
from solo_multiview.eval.report import summary_table
from solo_multiview.hosts.backbones import build_backbone
from tests.test_main_eval import compose_eval

KWARGS = {"width": 4, "depth": 2}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
LT_DEFAULTS = {"seed": 0, "class_order": "natural", "index_file": None, "n_max": None,
               "selection": "per_class", "fraction": None, "fraction_seed": 42}
SUPPORTED = ["cifar10", "cifar100", "image_list", "digits"]


def sha1_int64(values) -> str:
    return hashlib.sha1(np.asarray(values, dtype=np.int64).tobytes()).hexdigest()


def file_id(path: Path) -> dict:
    p = path.resolve()
    return {"path": str(p), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}


def write_args(path: Path, args: dict) -> Path:
    path.write_text(json.dumps(args))
    return path


# --------------------------------------------------------------------------- checkpoint.py
CKPT_ARGS = {"method": "simclr", "backbone": {"name": "convnet", "kwargs": KWARGS},
             "data": {"dataset": "digits"}}


def digits_state(extra: int = 0) -> dict:
    net = build_backbone("convnet", "digits", KWARGS)
    state = {f"backbone.{k}": v for k, v in net.state_dict().items()}
    state.update({f"backbone.extra{i:02d}": torch.zeros(1) for i in range(extra)})
    return state


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON: Expecting property name enclosed in double quotes: "
                  "line 1 column 2 (char 1)"),
    ("[1, 2]", "must hold a JSON object"),
    (json.dumps({**CKPT_ARGS, "backbone": {"name": "convnet", "kwargs": [4, 2]}}),
     "backbone.kwargs must be an object or null, got list"),
    (json.dumps({**CKPT_ARGS, "backbone": {"name": "convnet", "stem": "tiny"}}),
     "backbone.stem must be one of ['auto', 'cifar', 'imagenet'] or absent, got 'tiny'"),
    (json.dumps({**CKPT_ARGS, "backbone": {"name": "convnet", "cifar_stem_padding": -1}}),
     "backbone.cifar_stem_padding must be an int >= 0 or absent, got -1"),
    (json.dumps({**CKPT_ARGS, "backbone": {"name": "convnet", "cifar_stem_padding": True}}),
     "backbone.cifar_stem_padding must be an int >= 0 or absent, got True"),
    (json.dumps({**CKPT_ARGS, "backbone": {"name": "convnet", "cifar_stem_padding": "2"}}),
     "backbone.cifar_stem_padding must be an int >= 0 or absent, got '2'"),
])
def test_load_args_errors_name_the_file_and_the_key(tmp_path, content, message):
    args = tmp_path / "args.json"
    args.write_text(content)
    with pytest.raises(ValueError) as err:
        load_args(tmp_path / "last.ckpt")
    assert str(err.value) == f"pretrained checkpoint: {args} {message}"


def test_load_args_accepts_padding_zero_and_a_stem(tmp_path):
    args = {**CKPT_ARGS, "backbone": {"name": "convnet", "stem": "cifar",
                                      "cifar_stem_padding": 0, "kwargs": None}}
    write_args(tmp_path / "args.json", args)
    assert load_args(tmp_path / "last.ckpt") == args


def test_backbone_state_dict_error_lists_the_first_five_keys():
    state = {f"head.{c}": torch.zeros(1) for c in "gfedcba"}
    with pytest.raises(ValueError) as err:
        backbone_state_dict(state)
    assert str(err.value) == ("pretrained checkpoint: ? holds no 'backbone.' weights (first "
                              "keys: ['head.a', 'head.b', 'head.c', 'head.d', 'head.e'])")


def test_misshaped_weights_name_the_default_args_file(tmp_path):
    torch.save({"state_dict": digits_state()}, tmp_path / "last.ckpt")
    write_args(tmp_path / "args.json",
               {**CKPT_ARGS, "backbone": {"name": "convnet", "kwargs": {"width": 8, "depth": 2}}})
    with pytest.raises(ValueError) as err:
        load_pretrained_backbone(tmp_path / "last.ckpt")
    assert str(err.value).startswith(
        f"pretrained checkpoint: {tmp_path / 'last.ckpt'} does not fit backbone 'convnet' built "
        f"from {tmp_path / 'args.json'}: Error(s) in loading state_dict")


def test_key_mismatch_message_names_stem_and_first_ten_keys(tmp_path):
    """A checkpoint holding none of the ResNet's weights, 12 foreign ones: the message shows
    the stem of args.json and the first 10 keys of each list."""
    state = {f"backbone.extra{i:02d}": torch.zeros(1) for i in range(12)}
    torch.save({"state_dict": state}, tmp_path / "last.ckpt")
    args = {**CKPT_ARGS, "backbone": {"name": "resnet18", "stem": "cifar",
                                      "cifar_stem_padding": 1}}
    write_args(tmp_path / "args.json", args)
    with pytest.raises(ValueError) as err:
        load_pretrained_backbone(tmp_path / "last.ckpt")
    # BatchNorm fills a missing num_batches_tracked itself: not listed
    missing = ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
               "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
               "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var"]
    unexpected = [f"extra{i:02d}" for i in range(10)]
    assert str(err.value) == (
        f"pretrained checkpoint: {tmp_path / 'last.ckpt'} does not match backbone 'resnet18' "
        f"(dataset 'digits', stem 'cifar', CIFAR stem padding 1): missing keys {missing}, "
        f"unexpected keys {unexpected}")


def test_get_reads_only_mappings():
    assert _get(None, "backbone", "name") is None
    assert _get({"backbone": "convnet"}, "backbone", "name") is None
    assert _get({"backbone": {"name": "convnet"}}, "backbone", "name") == "convnet"


def test_check_backbone_config_message_without_a_path():
    with pytest.raises(ValueError) as err:
        check_backbone_config({"backbone": {"name": "resnet18"}}, CKPT_ARGS)
    assert str(err.value) == ("backbone.name: the evaluation config asks for 'resnet18' but the "
                              "checkpoint was pretrained with 'convnet'")


# --------------------------------------------------------------------------- feature_cache.py
def test_features_describe():
    feats = Features(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long), Path("/c/x.pt"), True)
    assert feats.describe() == {"path": "/c/x.pt", "reused": True, "num_images": 3, "dim": 5}
    off = Features(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), None, False)
    assert off.describe() == {"path": None, "reused": False, "num_images": 2, "dim": 4}


def test_sha1_hashes_int64_values():
    assert _sha1(np.array([3, 1, 2], dtype=np.int32)) == sha1_int64([3, 1, 2])


def test_feature_key_and_checkpoint_id(tmp_path):
    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(b"12345")
    source = ArraySource(np.zeros((6, 4, 4, 3), dtype=np.uint8), [0, 1, 2, 0, 1, 2])
    data = IndexedSubset(source, np.array([5, 0, 4]), None)
    expected_ckpt = {"path": str(ckpt.resolve()), "size": 5, "mtime_ns": ckpt.stat().st_mtime_ns}
    assert checkpoint_id(ckpt) == expected_ckpt
    key = feature_key(ckpt, data, {"split": "train"}, {"crop_size": 4})
    assert key == {"version": 1, "checkpoint": expected_ckpt, "source": {"split": "train"},
                   "num_images": 3, "indexes_sha1": sha1_int64([5, 0, 4]),
                   "labels_sha1": sha1_int64([2, 0, 1]), "images": {"crop_size": 4}}


def test_cache_path_hashes_sorted_json_with_str_fallback(tmp_path):
    key = {"b": 1, "a": Path("/x")}
    digest = hashlib.sha256(b'{"a": "/x", "b": 1}').hexdigest()[:16]
    assert cache_path(tmp_path, "test", key) == tmp_path / f"test-{digest}.pt"


class Pickled:
    """An arbitrary object: a weights_only load refuses it."""


def cache_entry(tmp_path, n=3, **payload):
    key = {"num_images": n}
    path = tmp_path / "entry.pt"
    torch.save({"key": key, "features": torch.ones(n, 2), "labels": torch.arange(n), **payload},
               path)
    return path, key


def test_load_cached_accepts_an_intact_entry(tmp_path):
    path, key = cache_entry(tmp_path)
    feats, labels = load_cached(path, key)
    assert torch.equal(feats, torch.ones(3, 2)) and torch.equal(labels, torch.arange(3))


@pytest.mark.parametrize("payload", [
    {"extra": Pickled()},                         # refused by weights_only
    {"labels": [0, 1, 2]},                        # not a tensor
    {"labels": torch.arange(4)},                  # one label too many
    {"features": torch.ones(3, 2, 1)},            # not 2-D
])
def test_load_cached_ignores_a_bad_entry(tmp_path, payload):
    path, key = cache_entry(tmp_path, **payload)
    assert load_cached(path, key) is None


def test_load_cached_ignores_a_non_dict(tmp_path):
    torch.save([torch.ones(3, 2)], tmp_path / "entry.pt")
    assert load_cached(tmp_path / "entry.pt", {"num_images": 3}) is None


class Spy:
    """Records the keyword arguments of each call, then calls ``fn``."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.fn(*args, **kwargs)


def tiny_subset(n=5):
    source = ArraySource(np.arange(n * 48, dtype=np.uint8).reshape(n, 4, 4, 3) % 251,
                         np.arange(n) % 2)
    return IndexedSubset(source, None, EvalTransform(4, "digits"))


def test_cached_features_loader_and_device(tmp_path, monkeypatch):
    """The loader keeps the order and every image, pins memory for CUDA only; the extraction
    runs on the given device (here a fake one: the extraction itself is stubbed)."""
    data = tiny_subset()
    loader_spy = Spy(feature_cache.DataLoader)

    def fake_extract(backbone, loader, device):
        labels = torch.as_tensor(loader.dataset.targets)
        return torch.ones(len(labels), 3), labels

    extract_spy = Spy(fake_extract)
    monkeypatch.setattr(feature_cache, "DataLoader", loader_spy)
    monkeypatch.setattr(feature_cache, "extract_features", extract_spy)
    for device, pin in ((torch.device("cpu"), False), (torch.device("cuda"), True)):
        feats = cached_features(torch.nn.Identity(), data, {"num_images": 5}, "train",
                                tmp_path / device.type, device)
        assert feats.reused is False
        assert feats.path == cache_path(tmp_path / device.type, "train", {"num_images": 5})
        assert loader_spy.calls[-1][1] == {"batch_size": 256, "shuffle": False,
                                           "drop_last": False, "num_workers": 0,
                                           "pin_memory": pin}
        assert extract_spy.calls[-1][1] == {"device": device}


def test_cached_features_refuses_labels_out_of_order(monkeypatch):
    data = tiny_subset()
    monkeypatch.setattr(feature_cache, "extract_features",
                        lambda backbone, loader, device: (torch.ones(5, 3), torch.zeros(5)))
    with pytest.raises(RuntimeError) as err:
        cached_features(torch.nn.Identity(), data, {"num_images": 5}, "test", None,
                        torch.device("cpu"))
    assert str(err.value) == ("feature extraction (test): the loader's labels differ from the "
                              "dataset's targets")


def test_save_cached_round_trip(tmp_path):
    key = {"num_images": 2, "images": {"crop_size": 4}}
    path = save_cached(tmp_path / "e.pt", key, torch.ones(2, 3), torch.tensor([1, 0]))
    assert torch.load(path, weights_only=True)["key"] == key
    assert torch.equal(load_cached(path, key)[1], torch.tensor([1, 0]))


# --------------------------------------------------------------------------- probe_data.py
def test_merge_long_tail():
    assert merge_long_tail(None, None) is None
    assert merge_long_tail({}, {"profile": None}) is None  # only nulls: nothing set
    assert merge_long_tail({"profile": "exp"}, None) == {"profile": "exp"}
    assert merge_long_tail(None, {"n_max": 7}) == {"n_max": 7}
    assert merge_long_tail({"profile": "exp", "seed": 1}, {"seed": 3, "n_max": None}) == \
        {"profile": "exp", "seed": 3}
    node = OmegaConf.create({"ratio": 4, "lt": {"imbalance_ratio": "${ratio}", "seed": None}})
    assert merge_long_tail({"profile": "exp"}, node.lt) == {"profile": "exp",
                                                            "imbalance_ratio": 4}


def test_data_config_takes_unset_values_from_args_json():
    cfg = OmegaConf.create({"data": {"dataset": None, "val_path": "/eval/val",
                                     "long_tail": {"n_max": 50, "seed": None}}})
    args = {"data": {"dataset": "digits", "train_path": "/args/train", "val_path": "/args/val",
                     "val_split_file": "/args/val.txt", "num_classes": 10,
                     "long_tail": {"profile": "exp", "seed": 2}}}
    assert OmegaConf.to_container(data_config(cfg, args)) == {"data": {
        "dataset": "digits", "train_path": "/args/train", "val_path": "/eval/val",
        "val_split_file": "/args/val.txt", "num_classes": 10,
        "long_tail": {"profile": "exp", "seed": 2, "n_max": 50}}}


def test_data_config_dataset_from_the_evaluation_config():
    """An all-null ``data.long_tail`` sets nothing: with none in args.json either, the data
    layer's "absent" defaults apply (for CIFAR the full set, not CIFAR-LT)."""
    cfg = OmegaConf.create({"data": {"dataset": "digits",
                                     "long_tail": {"profile": None, "n_max": None}}})
    assert OmegaConf.to_container(data_config(cfg, {"method": "x"})) == {"data": {
        "dataset": "digits", "train_path": None, "val_path": None, "val_split_file": None,
        "long_tail": None}}


def test_data_config_refuses_an_unknown_dataset():
    with pytest.raises(ValueError) as err:
        data_config(OmegaConf.create({"data": {}}), {"data": {"dataset": "imagenet"}})
    assert str(err.value) == (f"data.dataset: the checkpoint was pretrained on 'imagenet', "
                              f"which this evaluation cannot load; supported: {SUPPORTED}")


def eval_data_cfg(**data):
    return OmegaConf.create({"data": data})


@pytest.mark.parametrize("data, args, dataset, expected", [
    # the evaluation's crop and resize win; args.json's mean/std
    ({"crop_size": 20, "resize": 24}, {"augmentations": [{"crop_size": 12, "mean": MEAN,
                                                          "std": STD}]},
     "digits", ImageSettings("digits", 20, 24, tuple(MEAN), tuple(STD))),
    # args.json's crop (1 is allowed), resize = crop
    ({}, {"augmentations": [{"crop_size": 1}]}, "digits",
     ImageSettings("digits", 1, 1, *IMAGENET)),
    # no augmentations: the dataset's crop and normalisation
    ({}, {}, "cifar10", ImageSettings("cifar10", 32, 32, *CIFAR10)),
    ({}, {"augmentations": []}, "digits", ImageSettings("digits", 16, 16, *IMAGENET)),
    ({}, {"augmentations": ["not a mapping"]}, "image_list",
     ImageSettings("image_list", 224, 224, *IMAGENET)),
])
def test_image_settings(data, args, dataset, expected):
    assert image_settings(eval_data_cfg(**data), args, dataset) == expected


@pytest.mark.parametrize("data, crop, message", [
    ({}, -4, "data.crop_size: args.json's augmentations[0].crop_size is -4; set data.crop_size "
             "to an int >= 1"),
    ({}, "16", "data.crop_size: args.json's augmentations[0].crop_size is '16'; set "
               "data.crop_size to an int >= 1"),
    ({"resize": 8}, 12, "data.resize: 8 is smaller than the crop size 12"),
])
def test_image_settings_errors(data, crop, message):
    with pytest.raises(ValueError) as err:
        image_settings(eval_data_cfg(**data), {"augmentations": [{"crop_size": crop}]},
                       "digits")
    assert str(err.value) == message


def test_image_settings_to_dict():
    images = ImageSettings("digits", 16, 18, tuple(MEAN), tuple(STD))
    assert images.to_dict() == {"crop_size": 16, "resize": 18, "mean": MEAN, "std": STD}


def reference_tensor(image, resize, crop, mean, std):
    """Short side to ``resize`` (bicubic), centre crop, then (x / 255 - mean) / std."""
    image = v2.CenterCrop(crop)(v2.Resize(resize, interpolation=InterpolationMode.BICUBIC)(image))
    x = torch.as_tensor(np.array(image), dtype=torch.float32).permute(2, 0, 1) / 255.0
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


@pytest.mark.parametrize("resize", [8, 11])
def test_eval_transform_resizes_crops_and_normalises(resize):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (13, 17, 3), dtype=np.uint8))
    out = ImageSettings("digits", 8, resize, tuple(MEAN), tuple(STD)).eval_transform()(image)
    expected = reference_tensor(image, resize, 8, MEAN, STD)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_source_id(tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("a.png 0\n")
    digits = eval_data_cfg(dataset="digits", train_path=str(tmp_path))
    assert source_id(digits, "train") == {"dataset": "digits", "split": "train", "root": None,
                                          "list": None}
    both = eval_data_cfg(dataset="image_list", train_path=str(tmp_path / "t" / ".."),
                         val_path=str(tmp_path / "v"))
    assert source_id(both, "test", listed) == {"dataset": "image_list", "split": "test",
                                               "root": str(tmp_path / "v"),
                                               "list": file_id(listed)}
    assert source_id(both, "train-balanced", str(listed)) == {
        "dataset": "image_list", "split": "train-balanced", "root": str(tmp_path),
        "list": file_id(listed)}
    no_val = eval_data_cfg(dataset="image_list", train_path=str(tmp_path))
    assert source_id(no_val, "test")["root"] == str(tmp_path)
    assert source_id(eval_data_cfg(dataset="image_list"), "train")["root"] is None


def test_balanced_list_needs_a_train_path():
    cfg = OmegaConf.create({"data": {"balanced_split_file": "/lists/balanced.txt"}})
    with pytest.raises(ValueError) as err:
        _balanced_list_source(cfg, eval_data_cfg(dataset="image_list"), 3)
    assert str(err.value) == ("data.train_path: missing; data.balanced_split_file lists paths "
                              "relative to it")


def make_image_list(tmp_path, lt=(3, 2, 1), balanced=(2, 2, 2), test=(1, 1, 1), val_root=True):
    """8x8 PNG files of 3 classes under ``images/`` (train) and ``val/`` (test, or under
    ``images/`` with ``val_root=False``) and their lists."""
    rng = np.random.default_rng(0)
    root, val = tmp_path / "images", tmp_path / ("val" if val_root else "images")
    lines = {"lt": [], "balanced": [], "test": []}
    for c in range(3):
        for i in range(4):
            for folder in {root, val}:
                (folder / f"c{c}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    folder / f"c{c}" / f"{i}.png")
        lines["lt"] += [f"c{c}/{i}.png {c}" for i in range(lt[c])]
        lines["balanced"] += [f"c{c}/{i}.png {c}" for i in range(balanced[c])]
        lines["test"] += [f"c{c}/{i + 3}.png {c}" for i in range(test[c])]
    files = {name: tmp_path / f"{name}.txt" for name in lines}
    for name, rows in lines.items():
        files[name].write_text("\n".join(rows) + "\n")
    return {"root": root, "val": val, **files}


def image_list_cfg(f, train_set, balanced=True, val_path=True):
    overrides = [f"data.train_path={f['root']}", f"data.val_split_file={f['test']}",
                 f"data.long_tail.split_file={f['lt']}", "data.crop_size=8", "data.resize=8",
                 "seed=3",
                 f"train_set={train_set}", "pretrained_feature_extractor=/some/run"]
    overrides.append(f"data.val_path={f['val']}" if val_path else "data.val_path=null")
    if balanced:
        overrides.append(f"data.balanced_split_file={f['balanced']}")
    return parse_eval_cfg(compose_eval("knn_imagenetlt", overrides), "knn")


IMAGE_LIST_ARGS = {"backbone": {"name": "resnet50"}, "data": {"dataset": "image_list"}}


def test_image_list_balanced_probe_and_source_ids(tmp_path):
    """The balanced list lacks class 2: it still has the long-tailed list's 3 classes."""
    f = make_image_list(tmp_path, balanced=(2, 2, 0))
    args = {**IMAGE_LIST_ARGS, "data": {"dataset": "image_list", "num_classes": 3}}
    data = build_eval_data(image_list_cfg(f, "balanced"), args)
    assert data.train_set == "balanced" and data.num_classes == 3
    assert data.pretrain_counts.tolist() == [3, 2, 1]
    assert data.pretrain_counts.dtype == np.int64
    assert data.train.class_counts.tolist() == [2, 2, 0]
    assert data.images == ImageSettings("image_list", 8, 8, *IMAGENET)
    assert data.source_ids == {
        "train": {"dataset": "image_list", "split": "train-balanced",
                  "root": str(f["root"].resolve()), "list": file_id(f["balanced"])},
        "test": {"dataset": "image_list", "split": "test", "root": str(f["val"].resolve()),
                 "list": file_id(f["test"])}}
    assert data.settings() == {
        "dataset": "image_list", "train_path": str(f["root"]), "val_path": str(f["val"]),
        "val_split_file": str(f["test"]),
        "long_tail": {**LT_DEFAULTS, "profile": "none", "imbalance_ratio": 1.0,
                      "split_file": str(f["lt"])},
        "num_classes": 3, "pretrain_images": 6, "train_set": "balanced", "train_images": 4,
        "train_class_counts": [2, 2, 0], "test_images": 3,
        "images": {"crop_size": 8, "resize": 8, "mean": list(IMAGENET[0]),
                   "std": list(IMAGENET[1])}}


def test_image_list_longtail_probe_and_a_test_list_missing_a_class(tmp_path):
    """The test list lacks class 2: it still has the training set's 3 classes."""
    f = make_image_list(tmp_path, test=(1, 1, 0), val_root=False)
    data = build_eval_data(image_list_cfg(f, "longtail", val_path=False), IMAGE_LIST_ARGS)
    assert data.train.class_counts.tolist() == [3, 2, 1]
    assert data.test.num_classes == 3 and len(data.test) == 2
    root = str(f["root"].resolve())
    assert data.source_ids == {
        "train": {"dataset": "image_list", "split": "train", "root": root,
                  "list": file_id(f["lt"])},
        "test": {"dataset": "image_list", "split": "test", "root": root,
                 "list": file_id(f["test"])}}


def test_image_list_shots_from_the_long_tailed_list(tmp_path):
    f = make_image_list(tmp_path)
    data = build_eval_data(image_list_cfg(f, 1, balanced=False), IMAGE_LIST_ARGS)
    assert data.train_set == 1 and data.train.class_counts.tolist() == [1, 1, 1]
    assert data.source_ids["train"] == {"dataset": "image_list", "split": "train",
                                        "root": str(f["root"].resolve()),
                                        "list": file_id(f["lt"])}


def test_image_list_balanced_needs_a_balanced_list(tmp_path):
    f = make_image_list(tmp_path)
    with pytest.raises(ValueError) as err:
        build_eval_data(image_list_cfg(f, "balanced", balanced=False), IMAGE_LIST_ARGS)
    assert str(err.value) == (
        "train_set: 'balanced' with data.dataset=image_list needs data.balanced_split_file (a "
        "train list with the same number of images per class, paths relative to "
        "data.train_path); or use train_set=longtail or a number of images per class")


class FakeTestSource:
    def __init__(self, targets, num_classes):
        self.targets, self.num_classes = np.asarray(targets), num_classes

    def __len__(self):
        return len(self.targets)


@pytest.mark.parametrize("targets, num_classes", [([0, 10], 10), ([0, 3], 12)])
def test_test_labels_beyond_the_training_classes(monkeypatch, targets, num_classes):
    monkeypatch.setattr(probe_data, "build_test_source",
                        lambda cfg, num_classes=None, n=num_classes: FakeTestSource(targets, n))
    cfg = parse_eval_cfg(compose_eval("knn_quickstart_digits", [
        "pretrained_feature_extractor=/some/run", "train_set=1"]), "knn")
    with pytest.raises(ValueError) as err:
        build_eval_data(cfg, {"data": {"dataset": "digits"}})
    assert str(err.value) == (f"data.val_split_file: the test set has labels up to "
                              f"{max(targets)} but the training set has 10 classes")


# --------------------------------------------------------------------------- prepare.py
DIGITS_ARGS = {
    "method": "mv_simclr", "name": "tiny-run", "host": "builtin",
    "backbone": {"name": "convnet", "kwargs": KWARGS},
    "augmentations": [{"crop_size": 16, "mean": MEAN, "std": STD}],
    "data": {"dataset": "digits", "num_classes": 10, "num_large_crops": 2,
             "train_path": "/args/train", "long_tail": {"profile": "exp", "imbalance_ratio": 5}},
}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A random tiny convnet saved as a Lightning checkpoint, its args.json elsewhere."""
    base = tmp_path_factory.mktemp("digits_run")
    (base / "run").mkdir()
    torch.save({"state_dict": digits_state()}, base / "run" / "last.ckpt")
    write_args(base / "pretrain_args.json", DIGITS_ARGS)
    return base


class Clock:
    """A stand-in for the ``time`` module: ``time()`` returns the given readings in turn."""

    def __init__(self, *readings):
        self.readings = list(readings)

    def time(self):
        return self.readings.pop(0)


def prepare_digits(digits_run, logs, overrides=(), kind="knn"):
    config = "knn_quickstart_digits" if kind == "knn" else "quickstart_digits"
    cfg = compose_eval(config, [
        f"pretrained_feature_extractor={digits_run / 'run'}",
        f"pretrained_args={digits_run / 'pretrain_args.json'}", "device=cpu", *overrides])
    return prepare.prepare_eval(cfg, kind, log=logs.append)


def digits_counts(n_max=134, ratio=5):
    return [math.floor(n_max * ratio ** (-c / 9) + 1e-9) for c in range(10)]


def test_prepare_split_features_and_base_settings(digits_run, tmp_path, monkeypatch):
    logs = []
    cache_spy = Spy(prepare.cached_features)
    monkeypatch.setattr(prepare, "cached_features", cache_spy)
    prep = prepare_digits(digits_run, logs, [
        "train_set=2", f"results.dir={tmp_path / 'res'}", "results.name=mine", "name=run-a",
        "data.batch_size=7", "+data.val_path=/eval/val", "+devices=[0]", "+precision=16"])
    ckpt = digits_run / "run" / "last.ckpt"
    assert logs == [
        "note: accepted for solo-learn configs, without effect here: devices, precision",
        f"checkpoint: {ckpt} (mv_simclr, backbone convnet, pretrained on digits); device cpu"]
    assert prep.kind == "knn" and prep.checkpoint == ckpt and prep.log == logs.append
    assert prep.results_dir == tmp_path / "res" and prep.out_dir == tmp_path / "res" / "mine"
    assert prep.cache_dir == tmp_path / "res" / "feature_cache"
    assert not any(p.requires_grad for p in prep.backbone.parameters())
    assert not prep.backbone.training
    data = prep.data
    assert data.pretrain_counts.tolist() == digits_counts()
    assert data.source_ids == {split: {"dataset": "digits", "split": split, "root": None,
                                       "list": None} for split in ("train", "test")}

    monkeypatch.setattr(prepare, "time", Clock(100.0, 102.34, 200.0, 200.5))
    train = prepare.split_features(prep, "train")
    test = prepare.split_features(prep, "test")
    images = torch.stack([data.train[i][1] for i in range(len(data.train))])
    with torch.no_grad():
        torch.testing.assert_close(train.features, prep.backbone(images))
    assert torch.equal(train.labels, torch.as_tensor(data.train.targets))
    assert len(test.labels) == 400 and torch.equal(test.labels, torch.as_tensor(data.test.targets))
    assert [c[1] for c in cache_spy.calls] == [{"batch_size": 7, "num_workers": 0}] * 2
    dim = train.features.shape[1]
    expected_images = {"crop_size": 16, "resize": 16, "mean": MEAN, "std": STD}
    key = {"version": 1, "checkpoint": file_id(ckpt),
           "source": {"dataset": "digits", "split": "train", "root": None, "list": None},
           "num_images": 20, "indexes_sha1": sha1_int64(data.train.source_indexes),
           "labels_sha1": sha1_int64(data.train.targets), "images": expected_images}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    assert train.path == tmp_path / "res" / "feature_cache" / f"train-{digest}.pt"
    assert torch.load(train.path, weights_only=True)["key"] == key
    assert test.path.name.startswith("test-")
    assert logs[2:] == [
        f"features (train): 20 images, dim {dim}, extracted in 2.3 s ({train.path})",
        f"features (test): 400 images, dim {dim}, extracted in 0.5 s ({test.path})"]
    monkeypatch.setattr(prepare, "time", Clock(0.0, 1.0))
    again = prepare.split_features(prep, "train")
    assert again.reused and logs[-1] == (f"features (train): 20 images, dim {dim}, reused "
                                         f"({train.path})")

    settings = prepare.base_settings(prep, {"train": train, "test": test})
    assert settings == {
        "evaluation": "knn", "name": "run-a", "checkpoint": str(ckpt),
        "pretraining": {"method": "mv_simclr", "name": "tiny-run",
                        "backbone": {"name": "convnet", "kwargs": KWARGS}, "host": "builtin",
                        "num_large_crops": 2},
        "data": {"dataset": "digits", "train_path": "/args/train", "val_path": "/eval/val",
                 "val_split_file": None,
                 "long_tail": {**LT_DEFAULTS, "profile": "exp", "imbalance_ratio": 5},
                 "num_classes": 10, "pretrain_images": sum(digits_counts()), "train_set": 2,
                 "train_images": 20, "train_class_counts": [2] * 10, "test_images": 400,
                 "images": expected_images},
        "train_set": "shots2", "device": "cpu", "seed": 5,
        "feature_cache": {"train": {"path": str(train.path), "reused": False,
                                    "num_images": 20, "dim": dim},
                          "test": {"path": str(test.path), "reused": False,
                                   "num_images": 400, "dim": dim}},
        "config": OmegaConf.to_container(prep.cfg),
    }


def test_prepare_defaults_and_no_cache(digits_run, monkeypatch):
    """results.dir / results.name unset: <checkpoint folder>/eval/linear-<set>; a long-tail key
    of the evaluation config overrides args.json's; caching off: no path logged."""
    logs = []
    prep = prepare_digits(digits_run, logs, [
        "train_set=longtail", "results.cache_features=false", "data.long_tail.n_max=100",
        "+data.val_split_file=/eval/val.txt"], kind="linear")
    assert prep.results_dir == digits_run / "run" / "eval"
    assert prep.out_dir == digits_run / "run" / "eval" / "linear-longtail"
    assert prep.cache_dir is None and prep.kind == "linear"
    assert prep.data.train.class_counts.tolist() == digits_counts(100)
    assert prep.data.settings()["val_split_file"] == "/eval/val.txt"
    monkeypatch.setattr(prepare, "time", Clock(10.0, 11.0))
    train = prepare.split_features(prep, "train")
    assert train.path is None and not train.reused
    assert logs[-1] == (f"features (train): {sum(digits_counts(100))} images, dim "
                        f"{train.features.shape[1]}, extracted in 1.0 s")
    assert not (digits_run / "run" / "eval").exists()


def test_prepare_checks_the_backbone_name_against_args_json(digits_run):
    with pytest.raises(ValueError) as err:
        prepare_digits(digits_run, [], ["backbone.name=resnet18"])
    assert str(err.value) == (
        f"backbone.name: the evaluation config asks for 'resnet18' but the checkpoint was "
        f"pretrained with 'convnet' ({digits_run / 'run' / 'last.ckpt'})")


def test_prepare_moves_the_backbone_to_the_device(digits_run, monkeypatch):
    monkeypatch.setattr(prepare, "resolve_device", lambda value: torch.device("meta"))
    prep = prepare_digits(digits_run, [], ["train_set=1"])
    assert {p.device.type for p in prep.backbone.parameters()} == {"meta"}


def small_report():
    scores = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    return long_tail_report(scores, torch.tensor([0, 1, 2, 2]), [5, 3, 1])


@pytest.mark.parametrize("plot", [False, True])
def test_finish_writes_logs_and_returns(tmp_path, monkeypatch, plot):
    logs = []
    out = tmp_path / "out"
    prep = types.SimpleNamespace(out_dir=out, log=logs.append, started=100.0,
                                 cfg=OmegaConf.create({"results": {"plot": plot}}))
    monkeypatch.setattr(prepare, "time", Clock(103.14159))
    report = small_report()
    result = prepare.finish(prep, report, {"seed": 5}, "my title")
    files = {"json": out / "results.json", "csv": out / "per_class.csv"}
    if plot:
        files["png"] = out / "per_class.png"
    assert result.out_dir == out and result.paths == files and result.report is report
    assert result.settings == {"seed": 5, "seconds": 3.14}
    assert json.loads(files["json"].read_text())["settings"] == {"seed": 5, "seconds": 3.14}
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in files.values())
    assert logs == [summary_table(report, title="my title"),
                    "groups from the pretraining set's class counts (9 images, 5..1 per class)",
                    *(f"{kind}: {path}" for kind, path in files.items())]
    assert logs[0].startswith("my title\n")


def test_shots_are_drawn_with_the_evaluation_seed():
    from solo_multiview.data.datasets import build_train_source, few_shot_indexes

    cfg = parse_eval_cfg(compose_eval("knn_quickstart_digits", [
        "pretrained_feature_extractor=/some/run", "train_set=2", "seed=5"]), "knn")
    data = build_eval_data(cfg, {"data": {"dataset": "digits"}})
    targets = build_train_source(data.data_cfg).targets
    expected = few_shot_indexes(targets, 10, 2, 5)
    assert data.train.source_indexes.tolist() == expected.tolist()
    assert sorted(expected.tolist()) != sorted(few_shot_indexes(targets, 10, 2, 0).tolist())
    assert data.images == ImageSettings("digits", 16, 16, *IMAGENET)


def test_a_long_tail_list_enters_the_cache_identity_of_an_image_list_only(tmp_path):
    # data.long_tail.split_file is read for data.dataset=image_list; on other datasets the
    # training source is the dataset's own, and the feature cache must not key on the file
    listed = tmp_path / "train.txt"
    listed.write_text("a.png 0\n")
    cfg = parse_eval_cfg(compose_eval("knn_quickstart_digits", [
        "pretrained_feature_extractor=/some/run"]), "knn")
    data = build_eval_data(cfg, {"data": {"dataset": "digits",
                                          "long_tail": {"split_file": str(listed)}}})
    assert data.source_ids == {
        "train": {"dataset": "digits", "split": "train", "root": None, "list": None},
        "test": {"dataset": "digits", "split": "test", "root": None, "list": None}}
