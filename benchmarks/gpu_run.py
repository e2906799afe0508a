"""The GPU reproduction in one call on the lent machine (one H200): K-view pretraining on
CIFAR-10-LT with the GPU-resident pipeline, then the linear probe and kNN, one table.

    python benchmarks/gpu_prepare.py                     # here: wheels + the data pack
    python benchmarks/gpu_run.py --pack .gpu_pack        # there (carry .gpu_pack)
    python benchmarks/gpu_run.py --pack .gpu_pack --smoke    # anywhere: the same stages on the
                                                             # CPU, tiny (tests/test_gpu_package.py)

Stages:

1. the pack's wheels (hydra-core, omegaconf, antlr4; the machine has none of them) are installed
   with ``pip install --no-index --no-deps --target <tmp>`` and put first on ``sys.path``;
2. the pack's JPEG bytes are written back as files under a temporary folder, with three split
   lists: the long-tailed training set (CIFAR-10-LT, ratio 100, 12,406 images), the balanced
   probe set (1,000 per class by default) and the balanced test set (10,000);
3. per run, pretraining with the shipped preset (``mv_simclr_k2_cifar10lt``,
   ``mv_simclr_k4_cifar10lt``, ``mttv_cifar10lt`` (K = 1 partner: 4 views per anchor),
   ``polyview_k4_cifar10lt``, optionally ``mv_dhel_k4_cifar10lt``), changed only where a short
   run needs it: the data as an ``image_list`` (profile none: the list is the long tail),
   ``data.format: batched`` on CUDA (the list decoded once by nvJPEG, all crops made on the GPU),
   ResNet-18 with ``backbone.stem: cifar``, ``precision: bf16-mixed``, channels_last (the
   default), batch ``--batch`` anchors (512; mttv's lr 3.0 for 1,024 scaled to the batch),
   ``--epochs`` epochs (15) with a warm-up of a tenth of them, per-step lr, no validation, one
   checkpoint at the end, and a wall-clock cap per run (Lightning's ``max_time``) from the
   ``--budget-s`` left (a run that would get under 30 s is skipped and listed as such);
4. per run, kNN and the linear probe (``solo_multiview.eval``: features of the frozen backbone,
   cached once; probe and kNN bank the balanced probe set; Many/Medium/Few from the long-tailed
   training counts, thirds rule) on the balanced test set;
5. one markdown table: the card (``torch.cuda.get_device_name``), per run images/s (anchor
   images per second over the timed steps: all but the first ``--warm-steps``), views/s, data
   time (the GPU time between CUDA events recorded before and after each batch is made, over the
   same window's wall time: the share of the GPU timeline the pipeline takes), top-1 and
   Many/Medium/Few of kNN and of the linear probe. Written to ``$OUT`` (or ``--out``) as
   gpu_run.md and gpu_run.json when set.

Sizes on the GPU (the defaults): 15 epochs of 12,406 images at batch 512 are 24 steps per epoch,
360 steps per run; planned for at least 15,000 views/s (K = 4: about 3.3 s per epoch), which puts
the four runs, their evaluations and the start well inside 8 minutes; the per-run cap keeps the
whole call inside ``--budget-s`` (450 s) even if the card is slower than planned.

``--smoke``: the same stages on the CPU: a convnet (width 8, depth 2), 2 steps per run, batch 8,
float32, linear probe 2 epochs, kNN k = 3; numbers without meaning, every stage exercised.
``--cpu``: a dry run of the GPU configuration itself (ResNet-18, CIFAR stem, bf16-mixed) on the
CPU for ``--steps`` steps per run (minutes even on a tiny pack; it checks the configs and stages
that only the GPU run uses, without a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: name: (config name, method, views per anchor image)
RUNS: Dict[str, tuple] = {
    "simclr_k2": ("mv_simclr_k2_cifar10lt", "mv_simclr", 2),
    "simclr_k4": ("mv_simclr_k4_cifar10lt", "mv_simclr", 4),
    "mttv": ("mttv_cifar10lt", "mttv", 4),
    "polyview_k4": ("polyview_k4_cifar10lt", "polyview", 4),
    "mv_dhel_k4": ("mv_dhel_k4_cifar10lt", "mv_dhel", 4),
}
DEFAULT_RUNS = ["simclr_k2", "simclr_k4", "mttv", "polyview_k4"]
GROUPS = ("many", "medium", "few")
MTTV_BATCH = 1024  # the batch mttv's official lr (3.0) is for
MIN_RUN_S = 30.0


# ---------------------------------------------------------------------------- 1. wheels
def install_wheels(pack: Path, target: Path) -> List[str]:
    """``pip install --no-index --no-deps --target target`` of the pack's wheels, ``target``
    first on sys.path; the wheels' names (none: nothing to do)."""
    wheels = sorted((pack / "wheels").glob("*.whl"))
    if not wheels:
        return []
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--disable-pip-version-check", "--target", str(target),
                    *map(str, wheels)], check=True)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(target), *filter(None, [os.environ.get("PYTHONPATH")])])  # eval worker processes
    return [w.name for w in wheels]


# ---------------------------------------------------------------------------- 2. the images
def unpack(pack: Path, root: Path) -> Dict[str, Any]:
    """The pack's JPEGs as ``root/<split>/<class>/<entry>.jpg`` and the split lists
    ``root/{train_lt,probe,test}.txt``; pack.json's content plus the lists' paths."""
    import numpy as np

    meta = json.loads((pack / "pack.json").read_text())
    index = np.load(pack / "index.npz")
    offsets, labels, split = index["offsets"], index["labels"], index["split"]
    classes, suffix = meta["classes"], meta.get("suffix", ".jpg")
    data = (pack / "images.bin").read_bytes()
    names = []
    for i in range(len(labels)):
        rel = f"{('train', 'test')[int(split[i])]}/{classes[int(labels[i])]}/{i:06d}{suffix}"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[offsets[i]:offsets[i + 1]])
        names.append(rel)
    lists = {}
    for name in ("train_lt", "probe", "test"):
        rows = index[name]
        lists[name] = root / f"{name}.txt"
        lists[name].write_text("".join(f"{names[r]} {int(labels[r])}\n" for r in rows))
    meta["lists"] = lists
    return meta


# ---------------------------------------------------------------------------- config
def compose(config_dir: Path, name: str, overrides: List[str]) -> Any:
    """The shipped config ``name`` with ``key=value`` overrides (added when absent)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from solo_multiview.training.presets import register_presets

    register_presets()
    kept = ("augmentations=", "~")
    overrides = [o if o.startswith(kept) else "++" + o.lstrip("+") for o in overrides]
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.2"):
        cfg = hydra_compose(config_name=name, overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    return cfg


def pretrain_cfg(run: str, args: argparse.Namespace, root: Path, lists: Dict[str, Path],
                 max_seconds: Optional[float]) -> Any:
    config, method, _ = RUNS[run]
    epochs = args.epochs
    overrides = [
        "host=builtin", f"seed={args.seed}", f"name={run}",
        "data.dataset=image_list", f"data.train_path={root}", "data.long_tail.profile=none",
        f"data.long_tail.split_file={lists['train_lt']}", "data.format=batched",
        f"batched.device={args.device}", "batched.num_workers=0",
        f"data.num_workers={args.workers}",
        f"optimizer.batch_size={args.batch}", "scheduler.interval=step",
        f"scheduler.warmup_epochs={max(1, round(epochs / 10)) if epochs > 1 else 0}",
        f"max_epochs={epochs}", "limit_val_batches=0", "enable_progress_bar=false",
        "enable_model_summary=false", "log_every_n_steps=10", "checkpoint.enabled=true",
        f"checkpoint.frequency={max(1, epochs)}", f"checkpoint.dir={root / 'runs'}",
        "knn_eval.enabled=false", "devices=1",
    ]
    if method == "mttv":
        overrides.append(f"optimizer.lr={3.0 * args.batch / MTTV_BATCH:g}")
    if args.smoke:
        overrides += ["backbone.name=convnet", "backbone.kwargs.width=8",
                      "backbone.kwargs.depth=2", "accelerator=cpu", "precision=32-true",
                      f"max_steps={args.steps}", "method_kwargs.proj_hidden_dim=16",
                      "method_kwargs.proj_output_dim=8"]
    else:
        overrides += ["backbone.name=resnet18", "backbone.stem=cifar", "precision=bf16-mixed",
                      f"accelerator={'gpu' if args.device == 'cuda' else 'cpu'}"]
        overrides += ["benchmark=true"] if args.device == "cuda" else [f"max_steps={args.steps}"]
    cfg = compose(ROOT / "scripts/pretrain", config, overrides)
    if max_seconds is not None:
        cfg.max_time = {"seconds": int(max_seconds)}
    return cfg


def eval_cfg(kind: str, run_dir: Path, args: argparse.Namespace, root: Path,
             lists: Dict[str, Path]) -> Any:
    overrides = [
        f"pretrained_feature_extractor={run_dir}", "data.dataset=image_list",
        f"backbone.name={'convnet' if args.smoke else 'resnet18'}",
        f"data.train_path={root}", f"data.val_path={root}",
        f"data.val_split_file={lists['test']}", f"data.balanced_split_file={lists['probe']}",
        "train_set=balanced", f"device={args.device}",
        f"data.num_workers={args.workers}", f"data.batch_size={64 if args.smoke else 1024}",
        f"seed={args.seed}", f"results.dir={run_dir / 'eval'}", "results.plot=false",
    ]
    if kind == "linear":
        overrides.append(f"max_epochs={2 if args.smoke else args.probe_epochs}")
        return compose(ROOT / "scripts/linear", "cifar10lt", overrides)
    overrides.append(f"knn.k={args.knn_k}")
    return compose(ROOT / "scripts/linear", "knn_cifar10lt", overrides)


# ---------------------------------------------------------------------------- timing
class BatchTimer:
    """Wraps a DeviceBatchLoader's ``make_batch``: per batch the host seconds, and on CUDA a
    pair of events recorded on the current stream around the batch's kernels."""

    def __init__(self, loader: Any) -> None:
        import torch

        self.cuda = loader.device.type == "cuda"
        self.records: List[tuple] = []
        original = loader.make_batch

        def timed(*a: Any, **k: Any) -> Any:
            start = end = None
            if self.cuda:
                start = torch.cuda.Event(enable_timing=True)
                start.record()
            began = time.perf_counter()
            out = original(*a, **k)
            host = time.perf_counter() - began
            if self.cuda:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
            self.records.append((start, end, host))
            return out

        loader.make_batch = timed

    def seconds(self, first: int = 0) -> tuple[float, float]:
        """(device seconds, host seconds) of the batches from ``first`` on (device: host on
        the CPU)."""
        records = self.records[first:]
        host = sum(r[2] for r in records)
        if not self.cuda:
            return host, host
        import torch

        torch.cuda.synchronize()
        return sum(s.elapsed_time(e) for s, e, _ in records) / 1000.0, host


def step_timer(sync: Callable[[], None], warm_steps: int, batches: BatchTimer) -> Any:
    from lightning.pytorch.callbacks import Callback

    class StepTimer(Callback):
        """Wall time from the start of step ``warm_steps`` (0 when the run is shorter) to the
        end of training, and where the batch records stood then."""

        def __init__(self) -> None:
            self.start: Optional[float] = None
            self.start_step = 0
            self.first_batch = 0
            self.end: Optional[float] = None
            self.steps = 0
            self.warm = warm_steps
            self.total = 0

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.total = int(trainer.estimated_stepping_batches)
            self.warm = warm_steps if warm_steps < self.total else 0

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any,
                                 batch_idx: int) -> None:
            if self.start is None and trainer.global_step >= self.warm:
                sync()
                self.start, self.start_step = time.perf_counter(), trainer.global_step
                self.first_batch = max(0, len(batches.records) - 1)  # this step's batch

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            sync()
            self.end, self.steps = time.perf_counter(), trainer.global_step

    return StepTimer()


# ---------------------------------------------------------------------------- one run
def one_run(run: str, args: argparse.Namespace, root: Path, lists: Dict[str, Path],
            max_seconds: Optional[float]) -> Dict[str, Any]:
    import torch

    from solo_multiview.eval.run_knn import run_knn
    from solo_multiview.eval.run_linear import run_linear
    from solo_multiview.training.pretrain import fit, prepare_pretrain

    _, method, views = RUNS[run]
    began = time.time()
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    prepared = prepare_pretrain(pretrain_cfg(run, args, root, lists, max_seconds))
    decode_began = time.perf_counter()
    inner = prepared.train_loader.loader  # decodes the list on the device (nvJPEG on CUDA)
    sync()
    decode_s = time.perf_counter() - decode_began
    batches = BatchTimer(inner)
    timer = step_timer(sync, args.warm_steps, batches)
    prepared.trainer.callbacks.insert(0, timer)  # its on_train_end before the checkpoint
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = fit(prepared)
    trained = time.time()
    wall = (timer.end or 0.0) - (timer.start or 0.0)
    steps = timer.steps - timer.start_step
    data_s, host_s = batches.seconds(timer.first_batch)
    images = steps * args.batch
    stem = getattr(getattr(prepared.model.backbone, "conv1", None), "kernel_size", None)
    entry: Dict[str, Any] = {
        "run": run, "method": method, "config": RUNS[run][0], "views": views,
        "epochs_planned": args.epochs,
        "epochs_done": round(timer.steps / len(prepared.train_loader), 2),
        "steps": int(timer.steps), "timed_steps": int(steps),
        "time_capped": bool(max_seconds is not None and timer.steps < timer.total),
        "images_per_s": images / wall if wall > 0 else None,
        "views_per_s": images * views / wall if wall > 0 else None,
        "data_fraction": data_s / wall if wall > 0 else None,
        "data_host_ms_per_batch": 1000 * host_s / max(1, len(batches.records[timer.first_batch:])),
        "decode_s": decode_s, "train_wall_s": wall,
        "first_conv": list(stem) if stem is not None else None,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "train_metrics": {k: v for k, v in result.metrics.items() if k.endswith("_loss")},
    }
    for kind, evaluate in (("knn", run_knn), ("linear", run_linear)):
        report = evaluate(eval_cfg(kind, result.run_dir, args, root, lists)).report
        entry[kind] = {"top1": report["top1"],
                       **{g: report["groups"]["thirds"]["acc"][g] for g in GROUPS}}
    entry["minutes"] = {"pretrain": (trained - began) / 60, "eval": (time.time() - trained) / 60}
    return entry


# ---------------------------------------------------------------------------- the table
def cell(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown(entries: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    lines = [
        f"**{meta['card']}** (torch {meta['torch']}, {meta['precision']}, channels_last): "
        f"{meta['backbone']}, CIFAR-10-LT ratio {meta['ratio']:g} ({meta['train_images']:,} "
        f"images, {meta['per_class']}), data.format batched on {meta['device']}, batch "
        f"{meta['batch']} anchors, {meta['epochs']} epochs planned; probe and kNN bank: "
        f"{meta['probe_images']:,} balanced train images, test: {meta['test_images']:,}; total "
        f"{meta['minutes']:.1f} min. Accuracy in %; Many/Medium/Few: thirds of the classes by "
        "long-tailed training count.",
        "",
        "| run | views/img | epochs | steps | images/s | views/s | data time | kNN top-1 | "
        "kNN many/med/few | linear top-1 | linear many/med/few |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        if e.get("skipped"):
            lines.append(f"| {e['run']} | {RUNS[e['run']][2]} | skipped: {e['skipped']} "
                         "| | | | | | | | |")
            continue
        epochs = f"{e['epochs_done']:g}{' (time cap)' if e['time_capped'] else ''}"
        groups = {k: "/".join(f"{e[k][g]:.1f}" for g in GROUPS) for k in ("knn", "linear")}
        fraction = None if e["data_fraction"] is None else 100 * e["data_fraction"]
        lines.append(
            f"| {e['run']} | {e['views']} | {epochs} | {e['steps']} | "
            f"{cell(e['images_per_s'], ',.0f')} | {cell(e['views_per_s'], ',.0f')} | "
            f"{cell(fraction, '.1f')}% | {e['knn']['top1']:.1f} | {groups['knn']} | "
            f"{e['linear']['top1']:.1f} | {groups['linear']} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, default=ROOT / ".gpu_pack")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=None)
    parser.add_argument("--epochs", type=int, default=None, help="15 (smoke: 1)")
    parser.add_argument("--batch", type=int, default=None, help="512 (smoke: 8)")
    parser.add_argument("--steps", type=int, default=2, help="smoke: steps per run")
    parser.add_argument("--probe-epochs", type=int, default=50)
    parser.add_argument("--warm-steps", type=int, default=10,
                        help="steps left out of images/s and data time")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="wall-clock budget of the whole call (capped runs, skips)")
    parser.add_argument("--eval-reserve-s", type=float, default=40.0,
                        help="seconds kept back per run for its set-up and evaluation")
    parser.add_argument("--workers", type=int, default=None, help="eval loader workers")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="default: $OUT when set")
    parser.add_argument("--smoke", action="store_true", help="the same stages, CPU, tiny")
    parser.add_argument("--cpu", action="store_true",
                        help="dry run: the GPU configuration (ResNet-18, bf16-mixed) on the CPU "
                             "for --steps steps per run (slow; checks configs without a GPU)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (1 if args.smoke else 15)
    args.batch = args.batch or (8 if args.smoke else 512)
    args.workers = (0 if args.smoke else 8) if args.workers is None else args.workers
    args.device = "cpu" if args.smoke or args.cpu else "cuda"
    runs = args.runs or DEFAULT_RUNS
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    started = time.time()

    work = Path(tempfile.mkdtemp(prefix="gpu_run_"))
    try:
        wheels = install_wheels(args.pack, work / "site")
        import torch

        if args.device == "cuda" and not torch.cuda.is_available():
            print("gpu_run.py: no CUDA device (torch.cuda.is_available() is False); run "
                  "--smoke for the CPU stages", file=sys.stderr)
            return 2
        meta = unpack(args.pack, work / "data")
        lists = meta.pop("lists")
        args.knn_k = 3 if args.smoke else min(200, meta["sets"]["probe"]["images"])
        print(f"gpu_run: wheels {wheels or 'none'}; {meta['stored_images']:,} images unpacked "
              f"in {time.time() - started:.1f} s", flush=True)
        entries: List[Dict[str, Any]] = []
        for i, run in enumerate(runs):
            left = args.budget_s - (time.time() - started)
            pending = [RUNS[r][2] for r in runs[i:]]
            share = (left - args.eval_reserve_s * len(pending)) * pending[0] / sum(pending)
            if args.device == "cuda" and share < MIN_RUN_S:
                entries.append({"run": run, "skipped": f"time ({left:.0f} s left)"})
                print(f"gpu_run: {run} skipped, {left:.0f} s left", flush=True)
                continue
            entry = one_run(run, args, work / "data", lists, max(share, MIN_RUN_S))
            entries.append(entry)
            print(f"gpu_run: {run}: {cell(entry['images_per_s'], ',.0f')} images/s, data "
                  f"{cell(entry['data_fraction'], '.1%')}, kNN {entry['knn']['top1']:.1f}, "
                  f"linear {entry['linear']['top1']:.1f} ({time.time() - started:.0f} s)",
                  flush=True)
        card = (torch.cuda.get_device_name() if args.device == "cuda" else
                "CPU (smoke mode)" if args.smoke else "CPU (dry run of the GPU configuration)")
        info = {
            "card": card, "torch": torch.__version__,
            "precision": "32-true" if args.smoke else "bf16-mixed",
            "backbone": "convnet (smoke)" if args.smoke else "ResNet-18, CIFAR stem",
            "ratio": float(meta["long_tail"].get("imbalance_ratio", 0)),
            "train_images": meta["sets"]["train_lt"]["images"],
            "per_class": "{}..{} per class".format(max(meta["sets"]["train_lt"]["per_class"]),
                                                   min(meta["sets"]["train_lt"]["per_class"])),
            "probe_images": meta["sets"]["probe"]["images"],
            "test_images": meta["sets"]["test"]["images"],
            "device": args.device, "batch": args.batch,
            "epochs": args.epochs, "minutes": (time.time() - started) / 60,
        }
        table = markdown(entries, info)
        print(table, flush=True)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "gpu_run.md").write_text(table)
            (out / "gpu_run.json").write_text(json.dumps({"meta": info, "runs": entries},
                                                         indent=1, default=str))
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
