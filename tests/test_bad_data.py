"""Broken data: missing and unreadable files, labels out of range, classes emptied by the
long-tail selection, and the ``data.bad_images: error | skip`` policy."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from solo_multiview.data.datasets import IndexedSubset
from solo_multiview.data.sources import BadImageError, ImageListSource
from solo_multiview.training.pretrain import fit, prepare_pretrain
from tests.helpers import tiny_cfg

COUNTS = (8, 6, 6)  # images per class in the fixture list


def write_list(path: Path, entries: Sequence[Tuple[str, int]]) -> Path:
    path.write_text("".join(f"{name} {label}\n" for name, label in entries))
    return path


def make_images(root: Path, counts: Sequence[int] = COUNTS) -> List[Tuple[str, int]]:
    rng = np.random.default_rng(0)
    entries = []
    for label, count in enumerate(counts):
        for i in range(count):
            name = f"train/c{label}/{i}.png"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name)
            entries.append((name, label))
    return entries


def add_broken(root: Path) -> List[Tuple[str, int]]:
    """A truncated JPEG and a text file named .png."""
    jpeg = root / "train" / "c0" / "truncated.jpg"
    Image.fromarray(np.full((64, 64, 3), 90, dtype=np.uint8)).save(jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[:400])
    text = root / "train" / "c1" / "notes.png"
    text.write_text("this is not an image\n")
    return [("train/c0/truncated.jpg", 0), ("train/c1/notes.png", 1)]


@pytest.fixture
def image_root(tmp_path) -> Path:
    root = tmp_path / "images"
    entries = make_images(root)
    write_list(root / "train.txt", entries)
    write_list(root / "val.txt", [e for e in entries if int(e[0].split("/")[-1][0]) < 2])
    return root


def list_cfg(tmp_path: Path, root: Path, train: str = "train.txt", overrides=(), **kwargs):
    return tiny_cfg(tmp_path, overrides=[
        "data.dataset=image_list", f"+data.train_path={root}",
        f"+data.long_tail.split_file={root / train}", f"+data.val_split_file={root / 'val.txt'}",
        "data.long_tail.profile=none", "data.long_tail.imbalance_ratio=1",
        "optimizer.batch_size=4", *overrides], **kwargs)


def nothing_written(tmp_path: Path) -> bool:
    return not (tmp_path / "trained_models").exists()


# ------------------------------------------------------------------------ at construction
def test_listed_file_missing_fails_before_training(tmp_path, image_root):
    entries = [("train/c0/0.png", 0), ("train/c0/gone.png", 0), ("train/c1/0.png", 1)]
    write_list(image_root / "bad.txt", entries)
    with pytest.raises(FileNotFoundError, match=r"bad\.txt.*train/c0/gone\.png \(line 2\)"):
        prepare_pretrain(list_cfg(tmp_path, image_root, "bad.txt"))
    assert nothing_written(tmp_path)


def test_label_out_of_range_fails_before_training(tmp_path, image_root):
    entries = make_images(image_root)
    write_list(image_root / "bad.txt", entries[:3] + [("train/c1/0.png", 7)])
    with pytest.raises(ValueError, match=r"bad\.txt:4: label 7 is out of range for "
                                         r"data\.num_classes=3"):
        prepare_pretrain(list_cfg(tmp_path, image_root, "bad.txt", ["+data.num_classes=3"]))
    # a test list whose labels the training list does not have
    write_list(image_root / "val.txt", [("train/c0/0.png", 0), ("train/c2/0.png", 5)])
    with pytest.raises(ValueError, match=r"val\.txt:2: label 5 is out of range for "
                                         r"data\.num_classes=3"):
        prepare_pretrain(list_cfg(tmp_path, image_root))
    assert nothing_written(tmp_path)


# ------------------------------------------------------------------------ at load
@pytest.mark.parametrize("broken", [0, 1], ids=["truncated_jpeg", "text_named_png"])
def test_unreadable_image_is_named_at_load(image_root, broken):
    bad = add_broken(image_root)
    write_list(image_root / "list.txt", [("train/c0/0.png", 0), *bad])
    source = ImageListSource(image_root, image_root / "list.txt")  # exists: accepted here
    assert source.load(0).size == (16, 16)
    with pytest.raises(BadImageError) as error:
        source.load(1 + broken)
    assert bad[broken][0] in str(error.value)
    assert f"list.txt:{2 + broken}" in str(error.value)
    assert "data.bad_images=skip" in str(error.value)


def test_error_policy_stops_training_naming_the_file(tmp_path, image_root):
    entries = make_images(image_root)
    write_list(image_root / "broken.txt", entries + add_broken(image_root))
    run = prepare_pretrain(list_cfg(tmp_path, image_root, "broken.txt", [
        "data.num_workers=2", "max_steps=-1", "max_epochs=1"]))
    with pytest.raises(Exception, match=r"cannot read image .*(truncated\.jpg|notes\.png)"):
        fit(run)


def test_skip_replaces_by_the_next_readable_item_deterministically(image_root):
    entries = make_images(image_root)
    bad = add_broken(image_root)
    # broken files at positions 2 and 3 (two in a row), readable position 4 after them
    write_list(image_root / "list.txt", entries[:2] + bad + entries[2:])
    source = ImageListSource(image_root, image_root / "list.txt")
    dataset = IndexedSubset(source, None, lambda img: torch.from_numpy(np.asarray(img)).float(),
                            seed=3, bad_images="skip")
    index, image, target = dataset[2]
    assert (index, target) == (4, int(source.targets[4]))
    assert torch.equal(image, torch.from_numpy(np.asarray(source.load(4))).float())
    assert dataset[3][0] == 4 and dataset.bad_image_count == 2
    assert dataset[2][0] == 4  # the same replacement every time
    assert dataset.bad_image_positions().tolist() == [2, 3]
    assert "notes.png" in dataset.describe(3)

    strict = IndexedSubset(source, None, None, bad_images="error")
    with pytest.raises(BadImageError, match="truncated.jpg"):
        strict[2]
    # workers share the mask: after one pass through a 2-worker loader both files are counted
    fresh = IndexedSubset(source, None, lambda img: torch.zeros(1), seed=3, bad_images="skip")
    indexes = torch.cat([b[0] for b in DataLoader(fresh, batch_size=4, num_workers=2)])
    assert fresh.bad_image_count == 2
    assert 2 not in indexes.tolist() and 3 not in indexes.tolist()


def test_skip_policy_trains_and_reports_the_count(tmp_path, image_root, capsys):
    entries = make_images(image_root)
    write_list(image_root / "broken.txt", entries + add_broken(image_root))
    run = prepare_pretrain(list_cfg(tmp_path, image_root, "broken.txt", [
        "+data.bad_images=skip", "max_steps=-1", "max_epochs=1", "checkpoint.enabled=true",
        "optimizer.batch_size=2"]))
    fit(run)
    with open(run.folder / "metrics.csv", newline="") as handle:
        counts = [float(r["train_bad_images"]) for r in csv.DictReader(handle)
                  if r.get("train_bad_images")]
    assert counts == [2.0]  # 22 listed images in 11 batches of 2: every file is loaded
    out = capsys.readouterr().out
    assert "data.bad_images=skip: 2 unreadable training image(s)" in out
    assert "broken.txt:" in out


# ------------------------------------------------------------------------ empty classes
DIGITS_EMPTY = [
    ["data.long_tail.profile=exp", "data.long_tail.imbalance_ratio=1000"],
    ["data.long_tail.profile=step", "data.long_tail.imbalance_ratio=1000"],
    ["data.long_tail.profile=pareto", "data.long_tail.imbalance_ratio=1000"],
]


@pytest.mark.parametrize("method", ["mv_simclr", "mttv"])
@pytest.mark.parametrize("path", ["exp", "step", "pareto", "index_file", "image_list_gap"])
def test_empty_class_after_long_tail_selection_fails_on_every_path(tmp_path, image_root, method,
                                                                   path):
    mttv = dict(method="mttv", num_views=None, config_name="quickstart_mttv_digits") \
        if method == "mttv" else {}
    if path in ("exp", "step", "pareto"):
        cfg = tiny_cfg(tmp_path, overrides=DIGITS_EMPTY[["exp", "step", "pareto"].index(path)],
                       **mttv)
    elif path == "index_file":
        from solo_multiview.data.sources import digits_source

        targets = digits_source(train=True).targets
        np.save(tmp_path / "idx.npy", np.flatnonzero(targets != 9))  # class 9 left out
        cfg = tiny_cfg(tmp_path, overrides=[f"+data.long_tail.index_file={tmp_path / 'idx.npy'}"],
                       **mttv)
    else:  # labels 0 and 2 only: class 1 has no image at all
        entries = [e for e in make_images(image_root) if e[1] != 1]
        write_list(image_root / "gap.txt", entries)
        cfg = list_cfg(tmp_path, image_root, "gap.txt", **mttv)
    with pytest.raises(ValueError, match=r"data\.long_tail: \d+ class\(es\) have zero images"):
        prepare_pretrain(cfg)
    assert nothing_written(tmp_path)
