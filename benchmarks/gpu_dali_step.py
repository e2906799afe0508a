"""One-GPU check of the DALI GPU path and of a training step it feeds, in one short call.

    python benchmarks/gpu_dali_step.py [--data ../shared/data/cifar10] [--out gpu_dali_step.md]

On one CUDA GPU, in well under 3 minutes, prints a markdown table of:

1. parity: the first batch of the GPU pipeline (``mixed`` nvJPEG decoding, GPU operators) with
   augmentation off against the CPU pipeline's (same seed, hence the same reader order) and
   against torchvision's EvalTransform of the same indexes: mean and max absolute difference
   in pixel levels (nvJPEG and libjpeg-turbo may differ by a few levels);
2. DALI GPU loader throughput, views/s: the cifar symmetric schema (``cifar_symmetric.yaml``),
   K = 4, batch 256, ``--threads`` DALI CPU threads, after warm-up, GPU synchronised;
3. one mv_simclr training step, ResNet-18 (CIFAR stem), K = 4, batch 256, ``bf16-mixed``,
   channels_last, fed by the DALI GPU loader through Lightning: median step time (forward,
   backward, LARS step; the loader's next batch is fetched outside the timed window), images/s,
   end-to-end steps/s including loading, and peak GPU memory.

Data: ``<data>/train/<class>/*.jpg`` with a split list written on the fly; when that folder is
missing (a GPU machine without the shared data), ``--synthetic`` 32x32 JPEGs are written to a
temporary folder instead. Without CUDA or DALI it stops at once with a message (exit code 2).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10"


def fail_fast() -> None:
    """Exit with a clear message when there is no CUDA device or no DALI."""
    import torch

    if not torch.cuda.is_available():
        sys.stderr.write(
            "gpu_dali_step.py needs a CUDA GPU: torch.cuda.is_available() is False on this "
            "machine. It measures DALI's GPU path (nvJPEG decoding, GPU augmentation) and a "
            "bf16 training step; for the CPU comparison run benchmarks/dali_vs_torchvision.py.\n")
        raise SystemExit(2)
    from solo_multiview.data.dali import INSTALL_HINT, dali_available

    if not dali_available():
        sys.stderr.write(f"gpu_dali_step.py needs NVIDIA DALI: {INSTALL_HINT}\n")
        raise SystemExit(2)


def synthetic_jpegs(folder: Path, count: int) -> Path:
    """``count`` 32x32 JPEGs in 10 class folders: smooth random colour gradients plus noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:32, 0:32] / 31.0
    for i in range(count):
        label = i % 10
        a, b, c = rng.uniform(0, 255, (3, 3))
        image = a * xs[..., None] + b * ys[..., None] + c * (1 - xs[..., None])
        image = np.clip(image / 2 + rng.normal(0, 12, (32, 32, 3)), 0, 255).astype(np.uint8)
        path = folder / "train" / f"class{label}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=90)
    return folder


def pretrain_cfg(train_dir: Path, split: Path, workdir: Path, batch: int, threads: int,
                 steps: int) -> Any:
    """mv_simclr_k4_cifar10lt on the JPEG list: ResNet-18, K = 4, bf16-mixed, one GPU, DALI."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from solo_multiview.data.augmentations import MEAN_STD

    overrides = [
        "host=builtin", "accelerator=gpu", "devices=1", "precision=bf16-mixed",
        "strategy=auto", "sync_batchnorm=false", f"optimizer.batch_size={batch}",
        f"+max_steps={steps}", "max_epochs=1000", "checkpoint.enabled=false",
        f"checkpoint.dir={workdir / 'trained_models'}", "+enable_progress_bar=false",
        "+enable_model_summary=false", "++log_every_n_steps=1000", f"data.num_workers={threads}",
        "data.format=dali",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "scripts" / "pretrain"), version_base="1.2"):
        cfg = compose(config_name="mv_simclr_k4_cifar10lt", overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    cfg.data.dataset = "image_list"
    cfg.data.train_path = str(train_dir)
    cfg.data.val_path = None
    cfg.data.long_tail = {"profile": "none", "seed": 0, "split_file": str(split)}
    mean, std = MEAN_STD["cifar10"]
    augs = OmegaConf.to_container(cfg.augmentations, resolve=True)
    augs[0].update({"mean": list(mean), "std": list(std)})
    cfg.augmentations = augs
    cfg.dali = {"device": "gpu", "num_threads": threads, "prefetch_queue_depth": 2}
    return cfg


def parity(cfg: Any, batch: int) -> tuple[float, float, float, float]:
    """(mean, max) level difference GPU vs CPU pipeline and GPU vs torchvision EvalTransform,
    augmentation off, first batch (same reader seed, so the same indexes)."""
    import torch
    from omegaconf import OmegaConf

    from solo_multiview.data.augmentations import EvalTransform
    from solo_multiview.data.dali import build_dali_pretrain_loader
    from solo_multiview.data.datasets import build_pretrain_dataset

    off = OmegaConf.to_container(cfg, resolve=True)
    entry = off["augmentations"][0]
    entry.update({"rrc": {"enabled": False}, "num_crops": 1})
    for key in ("color_jitter", "grayscale", "gaussian_blur", "solarization", "equalization",
                "horizontal_flip"):
        entry[key] = {"prob": 0.0}
    off["dali"]["pipelines"] = 1  # one reader each: the same shuffle, so the same indexes
    off = OmegaConf.create(off)
    crops = {}
    for device in ("gpu", "cpu"):
        off.dali.device = device
        indexes, views, _ = next(iter(build_dali_pretrain_loader(off)))
        order = torch.argsort(indexes)
        crops[device] = (indexes[order], views[0][order].float().cpu())
    assert torch.equal(crops["gpu"][0], crops["cpu"][0]), "GPU and CPU readers disagree"
    std = torch.tensor(entry["std"]).view(1, 3, 1, 1)
    dataset = build_pretrain_dataset(off, EvalTransform(entry["crop_size"], "image_list",
                                                        entry["mean"], entry["std"]))
    reference = torch.stack([dataset[int(i)][1] for i in crops["gpu"][0]])

    def diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a - b) * std * 255).abs()

    d_cpu = diff(crops["gpu"][1], crops["cpu"][1])
    d_tv = diff(crops["gpu"][1], reference)
    return d_cpu.mean().item(), d_cpu.max().item(), d_tv.mean().item(), d_tv.max().item()


def loader_views_per_second(cfg: Any, warmup: int, batches: int) -> float:
    import torch

    from solo_multiview.data.dali import build_dali_pretrain_loader

    loader = build_dali_pretrain_loader(cfg)
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        _, crops, _ = next(iterator)
        assert crops[0].is_cuda
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    views = batches * loader.batch_size * loader.num_crops
    del iterator, loader
    return views / elapsed


def training_step(cfg: Any, warmup: int) -> dict[str, float]:
    """Times Lightning training steps of mv_simclr fed by the DALI GPU loader."""
    import torch
    from lightning.pytorch.callbacks import Callback

    from solo_multiview.data.dali import DaliPretrainLoader, build_dali_pretrain_loader
    from solo_multiview.training.pretrain import prepare_pretrain

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.steps: list[float] = []
            self.ends: list[float] = []
            self._start = 0.0

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, idx: int) -> None:
            torch.cuda.synchronize()
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, module: Any, out: Any, batch: Any,
                               idx: int) -> None:
            torch.cuda.synchronize()
            now = time.perf_counter()
            self.steps.append(now - self._start)
            self.ends.append(now)

    run = prepare_pretrain(cfg)
    loader = run.train_loader  # the DALI loader once data.format=dali is wired in pretrain.py
    if not isinstance(loader, DaliPretrainLoader):
        loader = build_dali_pretrain_loader(run.cfg)
    weights = [p for p in run.model.backbone.parameters() if p.dim() == 4]
    timer = StepTimer()
    run.trainer.callbacks.append(timer)
    torch.cuda.reset_peak_memory_stats()
    run.trainer.fit(run.model, train_dataloaders=loader)
    timed = timer.steps[warmup:]
    step = statistics.median(timed)
    ends = timer.ends[warmup - 1:]
    end_to_end = (len(ends) - 1) / (ends[-1] - ends[0])
    batch = loader.batch_size
    return {
        "step_ms": step * 1000,
        "images_per_s": batch * loader.num_crops / step,
        "steps_per_s_end_to_end": end_to_end,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "timed_steps": len(timed),
        "channels_last": all(w.is_contiguous(memory_format=torch.channels_last)
                             for w in weights),
    }


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--synthetic", type=int, default=20000,
                        help="JPEGs to write when <data>/train is missing (default 20000)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=8, help="DALI CPU threads")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    fail_fast()

    import torch

    from benchmarks.dali_vs_torchvision import write_split_list

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = args.data
        if not (data / "train").is_dir():
            print(f"{data / 'train'} not found: writing {args.synthetic} synthetic JPEGs",
                  flush=True)
            data = synthetic_jpegs(workdir / "data", args.synthetic)
        split = workdir / "train_split.txt"
        listed = write_split_list(data / "train", split)
        steps = args.warmup + args.batches
        cfg = pretrain_cfg(data / "train", split, workdir, args.batch_size, args.threads, steps)

        cpu_mean, cpu_max, tv_mean, tv_max = parity(cfg, args.batch_size)
        print(f"parity done ({time.perf_counter() - started:.0f} s)", flush=True)
        rate = loader_views_per_second(cfg, args.warmup, args.batches)
        print(f"loader done ({time.perf_counter() - started:.0f} s)", flush=True)
        step = training_step(cfg, args.warmup)
        print(f"training done ({time.perf_counter() - started:.0f} s)", flush=True)

    name = torch.cuda.get_device_name(0)
    lines = [
        f"DALI GPU path and mv_simclr step on {name}: {listed} JPEGs, batch "
        f"{args.batch_size}, K = 4, {args.threads} DALI threads, {args.batches} timed after "
        f"{args.warmup}; total {time.perf_counter() - started:.0f} s.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| GPU vs CPU pipeline, aug off: mean / max level diff | {cpu_mean:.2f} / {cpu_max:.1f} |",
        f"| GPU pipeline vs torchvision EvalTransform: mean / max level diff | "
        f"{tv_mean:.2f} / {tv_max:.1f} |",
        f"| DALI GPU loader (cifar symmetric, K = 4) | {rate:,.0f} views/s |",
        f"| mv_simclr ResNet-18 step, bf16, channels_last (median) | {step['step_ms']:.1f} ms |",
        f"| training throughput (step only) | {step['images_per_s']:,.0f} images/s |",
        f"| end to end with the DALI loader | {step['steps_per_s_end_to_end']:.1f} steps/s |",
        f"| peak GPU memory | {step['peak_gib']:.2f} GiB |",
        f"| conv weights channels_last | {'yes' if step['channels_last'] else 'NO'} |",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
