"""Prepares the GPU run (benchmarks/gpu_run.py) here, for one call on the lent GPU machine.

    python benchmarks/gpu_prepare.py [--source ../shared/data/cifar10] [--pack .gpu_pack]

The machine has torch, torchvision, lightning, torchmetrics, timm, scikit-learn, PyYAML and
packaging, but not hydra-core, omegaconf or antlr4 (omegaconf's parser runtime), and no registry;
it receives the working tree plus at most 8 ignored paths, 64 MiB in all, and not ../shared.
This writes, into ``--pack`` (ignored by git; carry it as one path):

- ``wheels/``: pure-python wheels of hydra-core and omegaconf (``pip download --no-deps
  --only-binary=:all: --python-version 3.12``, the versions installed here) and of
  antlr4-python3-runtime 4.9.3 (omegaconf pins 4.9.*, which PyPI has only as a source archive:
  downloaded and built into a py3-none-any wheel with ``pip wheel --no-deps``);
- ``images.bin``: the JPEG files' bytes, undecoded (the run decodes them on the GPU with nvJPEG),
  of CIFAR-10-LT (``--imbalance-ratio``, default 100: the project's own selection,
  ``data/longtail.py`` through ``data.datasets.long_tail_config`` with CIFAR-10's defaults, on
  the labels of ``<source>/train/<class>/*.jpg``, classes in sorted order, files sorted), of a
  balanced probe set (``--probe-per-class`` images of every class of the train folder, seeded;
  the linear probe's training set and the kNN bank) and of the whole balanced test set
  (``<source>/test``); an image in both train sets is stored once;
- ``index.npz``: per stored image its byte offset, length, label, split and position in its
  folder's sorted listing, and the entries of each set (``train_lt``, ``probe``, ``test``);
- ``pack.json``: what was packed (classes, counts per set and class, the long-tail settings,
  sizes, the wheels).

Then it checks that the pack and the working tree that travels (tracked and untracked files git
does not ignore) stay under 64 MiB, and prints the device command.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 1024 * 1024
LIMIT_MIB = 64
SPLITS = ("train", "test")
#: what the machine lacks, and the version when it cannot be read from this environment
WHEELS = {"hydra-core": None, "omegaconf": None, "antlr4-python3-runtime": "4.9.3"}
RUN_COMMAND = ("PYTHONUNBUFFERED=1 python benchmarks/gpu_run.py --pack {pack} 2>&1 "
               "| tee $OUT/gpu_run.log")


# ---------------------------------------------------------------------------- selection
def list_split(source: Path, split: str) -> tuple[List[Path], np.ndarray, List[str]]:
    """(files, labels, classes) of ``source/split/<class>/*`` (ImageFolder order)."""
    from solo_multiview.data.batched.loader import list_image_folder

    folder = source / split
    if not folder.is_dir():
        raise FileNotFoundError(f"gpu_prepare: no '{split}' folder under '{source}' (expected "
                                f"{source}/{split}/<class>/*.jpg)")
    files, labels = list_image_folder(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    return files, np.asarray(labels, dtype=np.int64), classes


def long_tail_selection(labels: np.ndarray, num_classes: int, ratio: float
                        ) -> tuple[np.ndarray, Dict[str, Any]]:
    """Sorted positions of the long-tailed subset: the project's CIFAR-10 defaults (profile
    exp, class order natural, seed 0, n_max the smallest class) at imbalance ``ratio``."""
    from omegaconf import OmegaConf

    from solo_multiview.data.datasets import long_tail_config
    from solo_multiview.data.longtail import long_tail_indexes

    cfg = OmegaConf.create({"data": {"dataset": "cifar10",
                                     "long_tail": {"imbalance_ratio": float(ratio)}}})
    config = long_tail_config(cfg)
    return long_tail_indexes(labels, num_classes, config), config


def probe_selection(labels: np.ndarray, num_classes: int, per_class: int) -> np.ndarray:
    """Sorted positions of ``per_class`` images of every class (seed 0); none for 0."""
    from solo_multiview.data.datasets import few_shot_indexes

    if per_class <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(few_shot_indexes(labels, num_classes, per_class, seed=0))


# ---------------------------------------------------------------------------- writing
def write_images(pack: Path, entries: List[tuple[Path, int, int, int]]) -> Dict[str, np.ndarray]:
    """``images.bin`` of the entries' bytes (path, label, split, position); their index."""
    offsets = np.zeros(len(entries) + 1, dtype=np.int64)
    with (pack / "images.bin").open("wb") as out:
        for i, (path, _, _, _) in enumerate(entries):
            data = path.read_bytes()
            out.write(data)
            offsets[i + 1] = offsets[i] + len(data)
    return {
        "offsets": offsets,
        "labels": np.asarray([e[1] for e in entries], dtype=np.int64),
        "split": np.asarray([e[2] for e in entries], dtype=np.uint8),
        "position": np.asarray([e[3] for e in entries], dtype=np.int64),
    }


def build_pack(source: Path, pack: Path, ratio: float, probe_per_class: int) -> Dict[str, Any]:
    """Writes images.bin, index.npz and pack.json (module docstring); returns pack.json's
    content."""
    pack.mkdir(parents=True, exist_ok=True)
    train_files, train_labels, classes = list_split(source, "train")
    test_files, test_labels, test_classes = list_split(source, "test")
    if test_classes != classes:
        raise ValueError(f"gpu_prepare: train and test class folders differ: {classes} vs "
                         f"{test_classes}")
    num_classes = len(classes)
    lt, lt_config = long_tail_selection(train_labels, num_classes, ratio)
    probe = probe_selection(train_labels, num_classes, probe_per_class)
    stored = np.union1d(lt, probe)  # train positions stored, each once
    entry_of = {int(p): i for i, p in enumerate(stored)}
    entries = [(train_files[p], int(train_labels[p]), 0, int(p)) for p in stored]
    entries += [(f, int(label), 1, i) for i, (f, label) in enumerate(zip(test_files,
                                                                            test_labels))]
    index = write_images(pack, entries)
    index["train_lt"] = np.asarray([entry_of[int(p)] for p in lt], dtype=np.int64)
    index["probe"] = np.asarray([entry_of[int(p)] for p in probe], dtype=np.int64)
    index["test"] = np.arange(len(stored), len(entries), dtype=np.int64)
    np.savez(pack / "index.npz", **index)

    def counts(rows: np.ndarray) -> List[int]:
        return np.bincount(index["labels"][rows], minlength=num_classes).tolist()

    meta = {
        "source": str(source),
        "classes": classes,
        "suffix": train_files[0].suffix.lower() if train_files else ".jpg",
        "long_tail": {k: v for k, v in lt_config.items() if not isinstance(v, Path)},
        "sets": {name: {"images": int(len(index[name])), "per_class": counts(index[name])}
                 for name in ("train_lt", "probe", "test")},
        "stored_images": len(entries),
        "images_bytes": int(index["offsets"][-1]),
    }
    meta["long_tail"] = json.loads(json.dumps(meta["long_tail"], default=str))
    return meta


# ---------------------------------------------------------------------------- wheels
def wanted_version(name: str) -> str:
    """The version installed here (the tests' version), else WHEELS' pin."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        pinned = WHEELS[name]
        if pinned is None:
            raise SystemExit(f"gpu_prepare: {name} is not installed here; install the project "
                             "(pip install -e .) first") from None
        return pinned


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def download_wheels(folder: Path) -> List[str]:
    """Pure-python wheels of WHEELS into ``folder`` (module docstring); their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.whl"):
        old.unlink()
    for name in WHEELS:
        spec = f"{name}=={wanted_version(name)}"
        try:
            pip("download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                "-q", "-d", str(folder), spec)
        except subprocess.CalledProcessError:
            # no wheel on the index (antlr4-python3-runtime 4.9.3): build one from the sdist
            with tempfile.TemporaryDirectory() as tmp:
                pip("download", "--no-deps", "--no-binary=:all:", "-q", "-d", tmp, spec)
                archives = list(Path(tmp).iterdir())
                pip("wheel", "--no-deps", "-q", "-w", str(folder), str(archives[0]))
    names = sorted(p.name for p in folder.glob("*.whl"))
    impure = [n for n in names if not n.endswith("-none-any.whl")]
    if impure:
        raise SystemExit(f"gpu_prepare: expected pure-python wheels, got {impure}")
    return names


# ---------------------------------------------------------------------------- sizes
def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def travelling_tree_bytes(repo: Path) -> Optional[int]:
    """Bytes of the files a device call sends besides carried paths: tracked files and
    untracked ones git does not ignore (None outside a git checkout)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=repo, check=True,
                                capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    total = 0
    for name in listed.split(b"\0"):
        path = repo / name.decode()
        if name and path.is_file():
            total += path.stat().st_size
    return total


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared/data/cifar10",
                        help="ImageFolder CIFAR-10 JPEGs: <source>/{train,test}/<class>/*.jpg")
    parser.add_argument("--pack", type=Path, default=ROOT / ".gpu_pack",
                        help="output folder (.gpu_pack is ignored by git)")
    parser.add_argument("--imbalance-ratio", type=float, default=100.0)
    parser.add_argument("--probe-per-class", type=int, default=1000,
                        help="balanced probe / kNN-bank images per class (0: probe on the "
                             "long-tailed set)")
    parser.add_argument("--no-wheels", action="store_true",
                        help="skip the wheels (tests, or a machine that has hydra already)")
    parser.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    args = parser.parse_args(argv)
    source, pack = args.source.resolve(), args.pack.resolve()

    meta = build_pack(source, pack, args.imbalance_ratio, args.probe_per_class)
    meta["wheels"] = [] if args.no_wheels else download_wheels(pack / "wheels")
    pack_bytes = folder_bytes(pack)
    tree = travelling_tree_bytes(ROOT)
    meta["pack_bytes"] = pack_bytes
    meta["tree_bytes"] = tree
    (pack / "pack.json").write_text(json.dumps(meta, indent=1) + "\n")
    pack_bytes = folder_bytes(pack)
    total = pack_bytes + (tree or 0)
    sets = ", ".join(f"{name} {info['images']:,}" for name, info in meta["sets"].items())
    print(f"pack {pack}: {pack_bytes / MIB:.1f} MiB ({meta['stored_images']:,} JPEGs, "
          f"{meta['images_bytes'] / MIB:.1f} MiB; sets: {sets}; wheels: "
          f"{', '.join(meta['wheels']) or 'none'})")
    if tree is not None:
        print(f"working tree that travels: {tree / MIB:.1f} MiB; with the pack "
              f"{total / MIB:.1f} MiB of {args.limit_mib:g} MiB")
    if total > args.limit_mib * MIB:
        print(f"gpu_prepare: {total / MIB:.1f} MiB exceed the {args.limit_mib:g} MiB a device "
              "call carries; lower --probe-per-class", file=sys.stderr)
        return 1
    try:
        shown = pack.relative_to(ROOT)
    except ValueError:
        shown = pack
    print(f"device run: command {RUN_COMMAND.format(pack=shown)!r}, carry ['{shown}']")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
