"""Loader throughput on the CPU: the batched device loader (``data/batched``) against the
torchvision DataLoader and DALI's CPU pipeline, views per second and CPU cost.

    python benchmarks/batched_vs_loaders.py --repeats 3 --out benchmarks/results/batched.md

All three apply the same schema (``scripts/pretrain/augmentations/cifar_symmetric.yaml`` with
``num_crops = K``, CIFAR-10 statistics; ``make_cfg`` of ``dali_vs_torchvision.py``), batch size
and worker count, and yield the same batch contract. torchvision and DALI read the JPEG files of
``<data>/train`` (50,000 for CIFAR-10) as in ``dali_vs_torchvision.py``; the batched loader
holds ``--images`` of them (every n-th file, all classes), decoded once to one uint8 tensor
(timed separately: that is its start-up cost, not part of the rate), and makes the crops of each
batch with batched torch ops, in ``--workers`` single-threaded worker processes (``--in-process``
adds the variant without workers, torch's intra-op threads set to ``--workers``).

For each K the loaders run one after the other, ``--repeats`` times; a rate is
``batches * B * K / seconds`` over ``--batches`` batches after ``--warmup`` (start-up excluded),
and the table shows the median of the repeats (best in brackets). CPU cost: CPU milliseconds
(user + system, this process and its worker processes, from /proc) per 1,000 views. The load
average (``os.getloadavg``) is printed before and after: other jobs on a shared machine slow
every loader, and the rates move with them far more than the CPU costs.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from dali_vs_torchvision import (  # noqa: E402
    DEFAULT_DATA,
    make_cfg,
    views_per_second,
    write_split_list,
)


def decode_subset(train_dir: Path, count: int) -> tuple[Any, list[int], float]:
    """(uint8 images, labels, seconds): every n-th file of the ImageFolder tree, ``count`` of
    them, decoded by :func:`decode_jpeg_files` on the CPU."""
    from solo_multiview.data.batched import decode_jpeg_files, list_image_folder

    files, labels = list_image_folder(train_dir)
    step = max(1, len(files) // count)
    files, labels = files[::step][:count], labels[::step][:count]
    start = time.perf_counter()
    images = decode_jpeg_files(files)
    return images, labels, time.perf_counter() - start


def batched_loader(cfg: Any, images: Any, labels: list[int], workers: int) -> Callable[[], Any]:
    from solo_multiview.data.batched import DeviceBatchLoader

    def make() -> Any:
        return DeviceBatchLoader(images, labels, cfg.augmentations, cfg.data.dataset,
                                 int(cfg.optimizer.batch_size), seed=int(cfg.seed),
                                 num_workers=workers)

    return make


def in_process_loader(cfg: Any, images: Any, labels: list[int], threads: int
                      ) -> Callable[[], Any]:
    import torch

    make = batched_loader(cfg, images, labels, 0)

    def wrapped() -> Any:
        torch.set_num_threads(threads)
        return make()

    return wrapped


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with train/<class>/*.jpg (default: %(default)s)")
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2,
                        help="torchvision worker processes = DALI threads = batched workers")
    parser.add_argument("--images", type=int, default=4096,
                        help="images the batched loader decodes and holds (default 4096)")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=4,
                        help="untimed batches; a multiple of --workers, else batches the "
                             "workers made during the warm-up are counted as instant")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["torchvision", "dali"],
                        help="leave these loaders out")
    parser.add_argument("--in-process", action="store_true",
                        help="also run the batched loader without workers (intra-op threads)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)

    import torch

    from solo_multiview.data.dali.backend import dali_available
    from solo_multiview.data.loaders import build_pretrain_loader

    loaders: dict[str, Callable[[Any], Callable[[], Any]]] = {}
    if "torchvision" not in args.skip:
        loaders["torchvision"] = lambda cfg: (lambda: build_pretrain_loader(cfg))
    if "dali" not in args.skip and dali_available():
        from solo_multiview.data.dali import build_dali_pretrain_loader

        loaders["DALI CPU"] = lambda cfg: (lambda: build_dali_pretrain_loader(cfg))

    train_dir = args.data / "train"
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
          flush=True)
    images, labels, decode_s = decode_subset(train_dir, args.images)
    print(f"decoded {len(images)} JPEGs to {tuple(images.shape)} uint8 in {decode_s:.1f} s "
          f"({len(images) / decode_s:,.0f} images/s)", flush=True)
    loaders["batched"] = lambda cfg: batched_loader(cfg, images, labels, args.workers)
    if args.in_process:
        threads = torch.get_num_threads()
        loaders["batched, in-process"] = lambda cfg: in_process_loader(cfg, images, labels,
                                                                       args.workers)

    results: dict[int, dict[str, list[tuple[float, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "train_split.txt"
        n_listed = write_split_list(train_dir, split)
        for k in args.ks:
            cfg = make_cfg(train_dir, split, k, args.batch_size, args.workers, False)
            if "method_kwargs" not in cfg:  # the K the methods' view specs read
                cfg.method_kwargs = {"num_views": k}
            results[k] = {name: [] for name in loaders}
            for _ in range(args.repeats):
                for name, factory in loaders.items():
                    results[k][name].append(views_per_second(
                        factory(cfg), k, args.batch_size, args.batches, args.warmup))
            if args.in_process:
                torch.set_num_threads(threads)
            print(f"K={k}: " + "; ".join(
                f"{name} {statistics.median(r for r, _ in runs):,.0f} views/s, "
                f"{statistics.median(c for _, c in runs):.0f} CPU ms/1k views"
                for name, runs in results[k].items()), flush=True)
    load_after = os.getloadavg()

    names = list(loaders)
    lines = [
        f"Loader throughput, {platform.node()} ({os.cpu_count()} CPU cores), CIFAR-10 JPEGs "
        f"({n_listed} listed; the batched loader holds {len(images)} decoded in {decode_s:.1f} s), "
        f"batch {args.batch_size}, {args.workers} workers each, {args.batches} timed batches "
        f"after {args.warmup}, median (best) of {args.repeats} runs; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after.",
        "",
        "| K | " + " | ".join(f"{n} views/s" for n in names) + " | "
        + " | ".join(f"CPU ms / 1k views, {n}" for n in names) + " |",
        "|---|" + "---:|" * (2 * len(names)),
    ]
    for k, runs in results.items():
        rates = [f"{statistics.median(r for r, _ in runs[n]):,.0f} "
                 f"({max(r for r, _ in runs[n]):,.0f})" for n in names]
        costs = [f"{statistics.median(c for _, c in runs[n]):.0f}" for n in names]
        lines.append(f"| {k} | " + " | ".join(rates + costs) + " |")
    if 4 in results and "DALI CPU" in names:
        ours = statistics.median(r for r, _ in results[4]["batched"])
        dali = statistics.median(r for r, _ in results[4]["DALI CPU"])
        lines += ["", f"Target at K = 4 (batched >= DALI CPU views/s, medians): "
                      f"{'met' if ours >= dali else 'not met'} ({ours:,.0f} vs {dali:,.0f})."]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
