"""Sources (arrays, CIFAR, image lists, digits) and the datasets built from the config."""

from __future__ import annotations

import pickle
import urllib.error

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from solo_multiview.data.datasets import (
    IndexedSubset,
    build_pretrain_dataset,
    build_probe_dataset,
    build_test_dataset,
    build_test_source,
    build_train_source,
    long_tail_config,
    pretrain_indexes,
)
from solo_multiview.data.sources import (
    ArraySource,
    ImageListSource,
    cifar_source,
    digits_source,
    parse_split_file,
)


def random_source(n: int = 24, num_classes: int = 3, size: int = 8, seed: int = 0) -> ArraySource:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return ArraySource(images, np.arange(n) % num_classes)


def to_array(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy())


# ------------------------------------------------------------------------------- array source
def test_array_source_loads_rgb_images():
    source = random_source()
    img = source.load(5)
    assert img.mode == "RGB" and img.size == (8, 8)
    assert np.array_equal(np.asarray(img), source.images[5])
    assert source.num_classes == 3 and len(source) == 24 and source.targets.dtype == np.int64


def test_array_source_rejects_bad_arrays():
    with pytest.raises(ValueError, match="uint8"):
        ArraySource(np.zeros((2, 4, 4, 3), dtype=np.float32), [0, 1])
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        ArraySource(np.zeros((2, 4, 4, 3), dtype=np.uint8), [0, 1, 1])


# ------------------------------------------------------------------------------- dataset
def test_subset_yields_true_indexes_and_images():
    source = random_source()
    chosen = np.array([1, 4, 7, 10, 13, 20, 22])
    ds = IndexedSubset(source, chosen, transform=to_array)
    for i in range(len(ds)):
        index, image, target = ds[i]
        assert index == i
        assert np.array_equal(image.numpy(), source.images[chosen[i]])
        assert target == source.targets[chosen[i]]
    assert ds.class_counts.tolist() == np.bincount(source.targets[chosen], minlength=3).tolist()
    assert np.array_equal(ds.source_indexes, chosen)

    # Through the default collate, batch indexes still address the dataset.
    loader = DataLoader(ds, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(0))
    for indexes, images, targets in loader:
        for j, idx in enumerate(indexes.tolist()):
            assert np.array_equal(images[j].numpy(), source.images[chosen[idx]])
            assert targets[j] == ds.targets[idx]


def test_subset_list_transform_gives_batch_contract():
    ds = IndexedSubset(random_source(), None, transform=lambda im: [to_array(im), to_array(im)])
    indexes, crops, targets = next(iter(DataLoader(ds, batch_size=4)))
    assert indexes.tolist() == [0, 1, 2, 3] and len(crops) == 2
    assert crops[0].shape == (4, 8, 8, 3) and targets.dtype == torch.int64


def test_subset_rejects_out_of_range_indexes():
    with pytest.raises(ValueError, match="indexes"):
        IndexedSubset(random_source(n=5), np.array([0, 5]))


# ------------------------------------------------------------------------------- split lists
def write_images(root, names, size=(6, 5)):
    for k, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, color=(k * 20, 0, 0)).save(path)


def test_image_list_source(tmp_path):
    names = ["train/a/0.png", "train/b/1.png", "train/dir with space/2.png"]
    write_images(tmp_path, names)
    split = tmp_path / "train.txt"
    split.write_text(f"{names[0]} 0\n\n{names[1]} 3\n{names[2]} 1\n")
    source = ImageListSource(tmp_path, split)
    assert len(source) == 3 and source.num_classes == 4
    assert source.targets.tolist() == [0, 3, 1] and source.targets.dtype == np.int64
    img = source.load(2)
    assert img.mode == "RGB" and img.size == (6, 5) and img.getpixel((0, 0)) == (40, 0, 0)
    assert ImageListSource(tmp_path, split, num_classes=10).num_classes == 10
    with pytest.raises(ValueError, match="num_classes"):
        ImageListSource(tmp_path, split, num_classes=2)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("a.png 0\nlonely_path\n", r"train\.txt:2: malformed line"),
        ("a.png 0\nb.png zero\n", r"train\.txt:2: label 'zero' is not an integer"),
        ("a.png -1\n", r"train\.txt:1: label -1 is negative"),
        ("\n\n", "lists no images"),
    ],
)
def test_split_file_errors_name_file_and_line(tmp_path, content, pattern):
    split = tmp_path / "train.txt"
    split.write_text(content)
    with pytest.raises(ValueError, match=pattern):
        parse_split_file(split)


def test_missing_image_detected_at_construction(tmp_path):
    write_images(tmp_path, ["x/1.png"])
    split = tmp_path / "list.txt"
    split.write_text("x/1.png 0\nx/2.png 1\n")
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\).*list\.txt.*x/2\.png"):
        ImageListSource(tmp_path, split)


def test_missing_split_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        parse_split_file(tmp_path / "nope.txt")


# ------------------------------------------------------------------------------- digits
def test_digits_source_shapes_split_and_pixels():
    from sklearn.datasets import load_digits

    digits = load_digits()
    train, test = digits_source(train=True), digits_source(train=False)
    assert train.images.shape == (1397, 16, 16, 3) and train.images.dtype == np.uint8
    assert test.images.shape == (400, 16, 16, 3)
    assert np.bincount(test.targets).tolist() == [40] * 10
    full = np.bincount(digits.target, minlength=10)
    assert np.bincount(train.targets, minlength=10).tolist() == (full - 40).tolist()
    # Every digits image appears exactly once across the two parts (match by pixels + label).
    scaled = np.rint(digits.images * 255 / 16).astype(np.uint8)
    both = np.concatenate([train.images, test.images])[:, ::2, ::2, 0]
    labels = np.concatenate([train.targets, test.targets])
    key = {(lab, img.tobytes()) for lab, img in zip(digits.target, scaled)}
    got = [(lab, img.tobytes()) for lab, img in zip(labels, both)]
    assert len(got) == 1797 and set(got) == key
    assert np.array_equal(train.images[..., 0], train.images[..., 2])  # grey RGB
    assert np.array_equal(train.images[:, ::2, ::2], train.images[:, 1::2, 1::2])  # 2x2 blocks
    # The split is fixed: a second call yields the same test set.
    assert np.array_equal(digits_source(train=False).images, test.images)


def digits_cfg(**data):
    return OmegaConf.create({"data": {"dataset": "digits", **data}})


def test_digits_default_long_tail_is_exp_ratio_10():
    ds = build_pretrain_dataset(digits_cfg(), transform=None)
    counts = ds.class_counts
    n_max = np.bincount(digits_source(True).targets).min()
    assert counts[0] == n_max and counts[-1] == int(n_max / 10)
    assert np.all(np.diff(counts) <= 0) and len(ds) == counts.sum()
    test = build_test_dataset(digits_cfg(), transform=None)
    assert test.class_counts.tolist() == [40] * 10


def test_long_tail_node_overrides_defaults():
    cfg = digits_cfg(long_tail={"profile": "step", "imbalance_ratio": 4, "n_max": 100})
    ds = build_pretrain_dataset(cfg, transform=None)
    assert ds.class_counts.tolist() == [100] * 5 + [25] * 5
    assert long_tail_config(cfg)["seed"] == 0


def test_probe_train_sets():
    cfg = digits_cfg(long_tail={"profile": "exp", "imbalance_ratio": 10, "seed": 2})
    source = build_train_source(cfg)
    balanced = build_probe_dataset(cfg, None, "balanced", source=source)
    assert len(balanced) == len(source)
    longtail = build_probe_dataset(cfg, None, "longtail", source=source)
    assert np.array_equal(longtail.source_indexes, pretrain_indexes(cfg, source))
    shots = build_probe_dataset(cfg, None, 5, source=source)
    assert shots.class_counts.tolist() == [5] * 10
    assert np.array_equal(shots.source_indexes, build_probe_dataset(cfg, None, "5").source_indexes)
    other = build_probe_dataset(cfg, None, 5, source=source, seed=3)
    assert not np.array_equal(shots.source_indexes, other.source_indexes)
    with pytest.raises(ValueError, match="only"):
        build_probe_dataset(cfg, None, 1000, source=source)
    with pytest.raises(ValueError, match="balanced"):
        build_probe_dataset(cfg, None, "tail", source=source)


# ------------------------------------------------------------------------------- cfg checks
def test_unknown_dataset_lists_allowed():
    cfg = OmegaConf.create({"data": {"dataset": "imagenet"}})
    with pytest.raises(ValueError, match=r"data\.dataset.*'imagenet'.*cifar10.*digits"):
        build_train_source(cfg)


def test_cifar_needs_train_path():
    with pytest.raises(ValueError, match=r"data\.train_path is required"):
        build_train_source(OmegaConf.create({"data": {"dataset": "cifar10"}}))


def test_image_list_needs_split_files(tmp_path):
    cfg = OmegaConf.create({"data": {"dataset": "image_list", "train_path": str(tmp_path)}})
    with pytest.raises(ValueError, match=r"data\.long_tail\.split_file is required"):
        build_train_source(cfg)
    with pytest.raises(ValueError, match=r"data\.val_split_file is required"):
        build_test_source(cfg)
    cfg.data.long_tail = {"split_file": str(tmp_path / "missing.txt")}
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        build_train_source(cfg)


def test_unknown_long_tail_key_rejected():
    with pytest.raises(ValueError, match=r"unknown key.*imbalance_factor"):
        build_pretrain_dataset(digits_cfg(long_tail={"imbalance_factor": 10}), None)


def test_num_classes_mismatch_rejected():
    with pytest.raises(ValueError, match=r"data\.num_classes=100"):
        build_train_source(digits_cfg(num_classes=100))


def test_image_list_from_cfg_with_overlay(tmp_path):
    train_names = [f"train/{c}/{k}.png" for c in range(3) for k in range(6)]
    val_names = [f"val/{c}/{k}.png" for c in range(3) for k in range(2)]
    write_images(tmp_path, train_names + val_names, size=(4, 4))
    (tmp_path / "train.txt").write_text("".join(f"{n} {n.split('/')[1]}\n" for n in train_names))
    (tmp_path / "val.txt").write_text("".join(f"{n} {n.split('/')[1]}\n" for n in val_names))
    data = {
        "dataset": "image_list",
        "train_path": str(tmp_path),
        "val_split_file": str(tmp_path / "val.txt"),
        "long_tail": {"split_file": str(tmp_path / "train.txt")},
    }
    cfg = OmegaConf.create({"data": data})
    assert len(build_pretrain_dataset(cfg, None)) == 18  # the list itself, no overlay
    test = build_test_dataset(cfg, None)
    assert test.class_counts.tolist() == [2, 2, 2]
    cfg.data.long_tail.profile = "exp"
    cfg.data.long_tail.imbalance_ratio = 6
    assert build_pretrain_dataset(cfg, None).class_counts.tolist() == [6, 2, 1]


# ------------------------------------------------------------------------------- CIFAR
def test_cifar_offline_error_names_folder_and_archive(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    root = tmp_path / "cifar"
    with pytest.raises(FileNotFoundError, match=r"cifar-10-python\.tar\.gz.*cifar"):
        cifar_source("cifar10", root)
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python\.tar\.gz"):
        build_train_source(OmegaConf.create({"data": {"dataset": "cifar100",
                                                      "train_path": str(root)}}))


def test_cifar_source_reads_extracted_batches(tmp_path, monkeypatch):
    """A fake extracted CIFAR-10 folder (checksums bypassed): HWC images and labels survive."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=2).tolist()
        batches[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{k}" for k in range(10)]}, f)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)

    train = cifar_source("cifar10", tmp_path, train=True)
    assert train.images.shape == (10, 32, 32, 3) and train.num_classes == 10
    first, labels = batches["data_batch_1"]
    assert np.array_equal(np.asarray(train.load(0)), first[0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert train.targets[:2].tolist() == labels
    test = cifar_source("cifar10", tmp_path, train=False)
    assert len(test) == 2 and test.targets.tolist() == batches["test_batch"][1]
