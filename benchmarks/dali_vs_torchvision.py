"""Loader throughput: DALI's CPU pipeline against the torchvision DataLoader, views per second.

    python benchmarks/dali_vs_torchvision.py --out benchmarks/results/dali_vs_torchvision.md

Both loaders read the same JPEG files (``image_list`` over ``<data>/train`` with a split list
built on the fly from the ImageFolder layout, optionally made long-tailed with ``--long-tail``),
apply the same augmentation schema (``scripts/pretrain/augmentations/cifar_symmetric.yaml`` with
``num_crops = K`` and CIFAR-10 statistics), use the same batch size and the same number of worker
threads (torchvision: ``num_workers`` processes; DALI: ``num_threads``), and yield the same batch
contract. For each K the two run one after the other, torchvision first, ``--repeats`` times;
a loader's rate is ``batches * B * K / seconds`` over ``--batches`` batches after ``--warmup``
batches (worker and pipeline start-up excluded), the best of the repeats (on a machine shared
with other jobs the best run is the least disturbed one; the median is printed too). The CPU
cost, CPU milliseconds (user + system, this process and its data loader workers, read from
/proc) per 1,000 views, is robust to such load. Nothing trains: this is the loader alone.

``--ablate``: where DALI's time goes. After the table, the DALI pipeline alone at each K with one
operation of the schema turned off at a time (its probability set to 0, or the random resized
crop replaced by the resize-and-centre-crop path), then all of them off (decode, resize, flip and
normalise only); the difference to the full pipeline's CPU cost is what that operation costs.
One more row runs the full pipeline with the blur as ``fn.gaussian_blur``, the version before
the CPU blur became ``fn.filter``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10"


def write_split_list(train_dir: Path, path: Path) -> int:
    """``class/file label`` per image of an ImageFolder tree (classes sorted, label = rank)."""
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"no class folders under '{train_dir}' (expected train/<class>/)")
    lines = [
        f"{name}/{image.name} {label}"
        for label, name in enumerate(classes)
        for image in sorted((train_dir / name).iterdir())
        if image.suffix.lower() in (".jpg", ".jpeg", ".png")
    ]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


#: --ablate: name -> the schema keys turned off (rrc: resize + centre crop instead)
ABLATIONS = {
    "no colour jitter": ("color_jitter",),
    "no grayscale": ("grayscale",),
    "no blur": ("gaussian_blur",),
    "no flip": ("horizontal_flip",),
    "no random resized crop": ("rrc",),
    "none of these": ("color_jitter", "grayscale", "gaussian_blur", "horizontal_flip", "rrc"),
}
#: --ablate: the full pipeline with the CPU blur as ``fn.gaussian_blur`` (before 2026-12-02)
#: instead of ``fn.filter`` (``data/dali/augment.py``'s ``BLUR_FILTER``)
GAUSSIAN_BLUR_ROW = "blur by fn.gaussian_blur (the earlier version)"


def ablated(cfg: Any, keys: tuple[str, ...]) -> Any:
    """``cfg`` with the augmentation operations ``keys`` turned off."""
    cfg = cfg.copy()
    entry = cfg.augmentations[0]
    for key in keys:
        if key == "rrc":
            entry.rrc.enabled = False
        else:
            entry[key].prob = 0.0
    return cfg


def make_cfg(train_dir: Path, split: Path, k: int, batch: int, workers: int,
             long_tail: bool, dali_pipelines: int | None = None) -> Any:
    from omegaconf import OmegaConf

    from solo_multiview.data.augmentations import MEAN_STD

    aug = OmegaConf.to_container(
        OmegaConf.load(ROOT / "scripts/pretrain/augmentations/cifar_symmetric.yaml"),
        resolve=False,
    )[0]
    mean, std = MEAN_STD["cifar10"]
    aug.update({"num_crops": k, "mean": list(mean), "std": list(std)})
    profile = {"profile": "exp", "imbalance_ratio": 100} if long_tail else {"profile": "none"}
    return OmegaConf.create({
        "method": "mv_simclr",
        "method_kwargs": {"num_views": k},
        "seed": 5,
        "data": {"dataset": "image_list", "train_path": str(train_dir), "num_workers": workers,
                 "long_tail": {**profile, "seed": 0, "split_file": str(split)}},
        "augmentations": [aug],
        "optimizer": {"batch_size": batch},
        "dali": {"device": "cpu", "num_threads": workers, "pipelines": dali_pipelines},
    })


def tree_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (default this one), all its threads and its
    live descendants (data loader workers), from /proc (Linux)."""
    pid = os.getpid() if pid is None else pid
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    family, total, grew = {pid}, 0.0, True
    while grew:
        grew = False
        for child, (parent, _) in stats.items():
            if parent in family and child not in family:
                family.add(child)
                grew = True
    for member in family:
        total += stats.get(member, (0, 0.0))[1]
    return total


def views_per_second(make_loader: Callable[[], Any], k: int, batch: int, batches: int,
                     warmup: int) -> tuple[float, float]:
    """(views/s, CPU ms per 1,000 views) of one fresh loader: warm-up batches, then
    ``batches`` timed batches."""
    loader = make_loader()
    if len(loader) < warmup + batches:
        raise ValueError(f"the training set gives {len(loader)} batches per epoch; need "
                         f"{warmup + batches} (lower --batches/--warmup or --batch-size)")
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    cpu = tree_cpu_seconds()
    start = time.perf_counter()
    for _ in range(batches):
        _, crops, _ = next(iterator)
        assert len(crops) == k and crops[0].shape[0] == batch
    elapsed = time.perf_counter() - start
    cpu = tree_cpu_seconds() - cpu
    del iterator, loader
    views = batches * batch * k
    return views / elapsed, 1e6 * cpu / views


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with train/<class>/*.jpg (default: %(default)s)")
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2,
                        help="torchvision worker processes = DALI threads (default 2)")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--long-tail", action="store_true",
                        help="exp profile, imbalance ratio 100 (CIFAR-10-LT's 12,406 images)")
    parser.add_argument("--dali-pipelines", type=int, default=None,
                        help="DALI pipelines sharing the threads (default: one per thread)")
    parser.add_argument("--ablate", action="store_true",
                        help="then DALI alone with one operation off at a time")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)

    from solo_multiview.data.dali import augment, build_dali_pretrain_loader
    from solo_multiview.data.loaders import build_pretrain_loader

    train_dir = args.data / "train"
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "train_split.txt"
        n_listed = write_split_list(train_dir, split)
        for k in args.ks:
            cfg = make_cfg(train_dir, split, k, args.batch_size, args.workers, args.long_tail,
                           args.dali_pipelines)
            runs: dict[str, list[tuple[float, float]]] = {"torchvision": [], "dali": []}
            for _ in range(args.repeats):
                runs["torchvision"].append(views_per_second(
                    lambda cfg=cfg: build_pretrain_loader(cfg), k, args.batch_size,
                    args.batches, args.warmup))
                runs["dali"].append(views_per_second(
                    lambda cfg=cfg: build_dali_pretrain_loader(cfg), k, args.batch_size,
                    args.batches, args.warmup))
            row = [k]
            for name in ("torchvision", "dali"):
                rates = [rate for rate, _ in runs[name]]
                row += [max(rates), statistics.median(rates),
                        statistics.median(cpu for _, cpu in runs[name])]
            rows.append(tuple(row))
            print(f"K={k}: torchvision {row[1]:,.0f} views/s (median {row[2]:,.0f}), DALI CPU "
                  f"{row[4]:,.0f} views/s (median {row[5]:,.0f}): {row[4] / row[1]:.1f}x; CPU "
                  f"ms per 1,000 views {row[3]:.0f} vs {row[6]:.0f}", flush=True)
        ablation_rows = []
        for k in args.ks if args.ablate else []:
            cfg = make_cfg(train_dir, split, k, args.batch_size, args.workers, args.long_tail,
                           args.dali_pipelines)
            for name, keys in {"full pipeline": (), GAUSSIAN_BLUR_ROW: (),
                               **ABLATIONS}.items():
                variant = ablated(cfg, keys)
                augment.BLUR_FILTER = name != GAUSSIAN_BLUR_ROW
                costs = [views_per_second(
                    lambda c=variant: build_dali_pretrain_loader(c), k,
                    args.batch_size, args.batches, args.warmup)[1] for _ in range(args.repeats)]
                augment.BLUR_FILTER = True
                ablation_rows.append((k, name, statistics.median(costs)))
                print(f"K={k} DALI {name}: {ablation_rows[-1][2]:.0f} CPU ms per 1,000 views",
                      flush=True)
    load_after = os.getloadavg()

    lines = [
        f"Loader throughput, {platform.node()} ({os.cpu_count()} CPU cores), "
        f"{'CIFAR-10-LT (exp, ratio 100)' if args.long_tail else 'CIFAR-10'} JPEGs "
        f"({n_listed} listed), batch {args.batch_size}, {args.workers} torchvision workers / "
        f"DALI threads (DALI: {args.dali_pipelines or args.workers} pipeline(s)), "
        f"{args.batches} timed batches after {args.warmup}, best (median) of {args.repeats} "
        f"runs each; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after.",
        "",
        "| K | torchvision views/s | DALI CPU views/s | DALI / torchvision | "
        "CPU ms / 1k views, torchvision | CPU ms / 1k views, DALI | CPU cost ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {k} | {tv:,.0f} ({tv_med:,.0f}) | {dali:,.0f} ({dali_med:,.0f}) | {dali / tv:.1f}x "
        f"| {tv_cpu:.0f} | {dali_cpu:.0f} | {tv_cpu / dali_cpu:.1f}x |"
        for k, tv, tv_med, tv_cpu, dali, dali_med, dali_cpu in rows
    ]
    if ablation_rows:
        lines += ["", "DALI alone, one operation off at a time (CPU ms per 1,000 views, median of "
                  f"{args.repeats}; saved = full pipeline minus this row):", "",
                  "| K | pipeline | CPU ms / 1k views | saved |", "|---|---|---:|---:|"]
        full = {k: cost for k, name, cost in ablation_rows if name == "full pipeline"}
        lines += [f"| {k} | {name} | {cost:.0f} | {full[k] - cost:+.0f} |"
                  for k, name, cost in ablation_rows]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
