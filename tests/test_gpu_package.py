"""The GPU run's package: benchmarks/gpu_prepare.py on a tiny synthetic ImageFolder (the pack's
contents and size) and benchmarks/gpu_run.py --smoke end to end on that pack (the same stages as
on the GPU, on the CPU, in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_prepare  # noqa: E402

CLASSES = ("ant", "bee", "cat", "dog")
TRAIN_PER_CLASS, TEST_PER_CLASS = 24, 5


def image_folder(root: Path) -> Path:
    """root/{train,test}/<class>/NNNN.jpg: 32x32 JPEGs, a colour per class plus noise."""
    rng = np.random.default_rng(0)
    for split, count in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                base = np.array([60 * c, 255 - 50 * c, 40 + 30 * c])
                pixels = np.clip(base + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("gpu_package")
    source = image_folder(tmp / "cifar")
    pack = tmp / "pack"
    assert gpu_prepare.main(["--source", str(source), "--pack", str(pack), "--no-wheels",
                             "--imbalance-ratio", "10", "--probe-per-class", "6"]) == 0
    return pack


def test_prepare_writes_the_long_tail_probe_and_test_sets(pack):
    meta = json.loads((pack / "pack.json").read_text())
    index = np.load(pack / "index.npz")
    source = Path(meta["source"])
    assert meta["classes"] == list(CLASSES)
    # the project's exp profile at ratio 10 on 24 per class: floor(24 * 10 ** (-r / 3))
    assert meta["sets"]["train_lt"]["per_class"] == [24, 11, 5, 2]
    assert meta["sets"]["probe"]["per_class"] == [6] * 4
    assert meta["sets"]["test"]["per_class"] == [TEST_PER_CLASS] * 4
    # the selection is data/longtail.py's on the folder's labels
    labels = np.repeat(np.arange(4), TRAIN_PER_CLASS)
    expected, _ = gpu_prepare.long_tail_selection(labels, 4, 10.0)
    train_rows = index["train_lt"]
    assert (index["split"][train_rows] == 0).all()
    assert index["position"][train_rows].tolist() == expected.tolist()
    # an image in both train sets is stored once; bytes are the files' own, undecoded
    stored_train = int((index["split"] == 0).sum())
    assert stored_train == len(set(train_rows.tolist()) | set(index["probe"].tolist()))
    data = (pack / "images.bin").read_bytes()
    offsets = index["offsets"]
    for row in (train_rows[0], index["probe"][-1], index["test"][3]):
        split = ("train", "test")[int(index["split"][row])]
        name = CLASSES[int(index["labels"][row])]
        position = int(index["position"][row])
        per_class = TRAIN_PER_CLASS if split == "train" else TEST_PER_CLASS
        path = source / split / name / f"{position % per_class:04d}.jpg"
        assert data[offsets[row]:offsets[row + 1]] == path.read_bytes()
    # sizes: images.bin holds exactly the stored files, and the pack is what pack.json says
    files = [source / "train" / CLASSES[p // TRAIN_PER_CLASS] / f"{p % TRAIN_PER_CLASS:04d}.jpg"
             for p in index["position"][index["split"] == 0]]
    files += sorted((source / "test").rglob("*.jpg"))
    assert len(data) == meta["images_bytes"] == sum(f.stat().st_size for f in files)
    total = sum(p.stat().st_size for p in pack.rglob("*") if p.is_file())
    assert meta["pack_bytes"] <= total < 64 * 1024 * 1024
    assert meta["wheels"] == [] and not (pack / "wheels").exists()


def test_prepare_refuses_a_pack_over_the_limit(tmp_path, pack):
    source = Path(json.loads((pack / "pack.json").read_text())["source"])
    code = gpu_prepare.main(["--source", str(source), "--pack", str(tmp_path / "p"),
                             "--no-wheels", "--imbalance-ratio", "10", "--probe-per-class", "6",
                             "--limit-mib", "0.01"])
    assert code == 1


@pytest.mark.slow
def test_gpu_run_smoke_end_to_end(tmp_path, pack):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OUT", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_run.py"), "--pack", str(pack),
         "--smoke", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (out / "gpu_run.md").read_text()
    results = json.loads((out / "gpu_run.json").read_text())
    assert "CPU (smoke mode)" in table
    runs = [r["run"] for r in results["runs"]]
    assert runs == ["simclr_k2", "simclr_k4", "mttv", "polyview_k4"]
    for entry in results["runs"]:
        assert entry["steps"] == 2
        assert entry["views"] == (2 if entry["run"] == "simclr_k2" else 4)
        for kind in ("knn", "linear"):
            assert 0 <= entry[kind]["top1"] <= 100
            assert all(0 <= entry[kind][g] <= 100 for g in ("many", "medium", "few"))
        assert entry["images_per_s"] > 0 and 0 <= entry["data_fraction"] <= 1
        assert f"| {entry['run']} |" in table
