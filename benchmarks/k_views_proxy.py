"""What K views buy on long-tailed data: a CPU proxy experiment (issue 8, item 2).

    python benchmarks/k_views_proxy.py --data ../shared/data/cifar10 --out benchmarks/results/proxy

CIFAR-10-LT (exponential profile, ratio 100: 12,406 images, 5000..50 per class) built from the
CIFAR-10 JPEG copy (ImageFolder layout) as an image_list, a 4-block convnet (width 16) on 16x16
crops, and per seed (its own seeded class order, so head and tail are not always the same easy
or hard classes):

    random_init      the untrained network (one step at lr 0, so BatchNorm statistics have seen
                     one batch): the floor SSL has to beat
    simclr_k2        mv_simclr K=2,  S steps
    simclr_k2_2x     mv_simclr K=2, 2S steps   (equal compute to K=4: K/2 times the steps)
    simclr_k4        mv_simclr K=4,  S steps
    mttv             mttv (1 partner: 4 views per anchor, the compute of K=4), S steps
    simclr_k2_bal    mv_simclr K=2,  S steps on a balanced subset of equal size (1,240/class)

Every run uses the same batch (anchors), optimizer and schedule; each is then evaluated with
main_linear's and main_knn's code on the balanced CIFAR-10 test set (probe and kNN bank: the
full balanced train set), with Many/Medium/Few from the long-tailed pretraining counts (thirds
rule; the balanced run is grouped by the long-tailed counts of the same seed, so its per-class
numbers line up with the LT runs). Writes results.json, a markdown table (mean +- std over
seeds) and a plot of per-group accuracy by run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNS = {
    # name: (method, views, step multiplier, balanced)
    "random_init": ("mv_simclr", 2, 0, False),
    "simclr_k2": ("mv_simclr", 2, 1, False),
    "simclr_k2_2x": ("mv_simclr", 2, 2, False),
    "simclr_k4": ("mv_simclr", 4, 1, False),
    "mttv": ("mttv", 1, 1, False),
    "simclr_k2_bal": ("mv_simclr", 2, 1, True),
}
GROUPS = ("many", "medium", "few")


def write_split_lists(data: Path, out: Path) -> Dict[str, Path]:
    """"class/file.jpg label" lists of train/ and test/ (classes in sorted order)."""
    out.mkdir(parents=True, exist_ok=True)
    classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    lists = {}
    for split in ("train", "test"):
        lines = [f"{split}/{c}/{f.name} {label}" for label, c in enumerate(classes)
                 for f in sorted((data / split / c).iterdir())]
        path = out / f"{split}.txt"
        path.write_text("\n".join(lines) + "\n")
        lists[split] = path
    return lists


def compose(config_dir: Path, name: str, overrides: List[str]) -> Any:
    """The shipped config ``name`` with ``key=value`` overrides (added when absent)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    kept = ("augmentations=", "~")  # group choices and deletions stay as they are
    overrides = [o if o.startswith(kept) else "++" + o.lstrip("+") for o in overrides]
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.2"):
        cfg = hydra_compose(config_name=name, overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    return cfg


def backbone_overrides(args: argparse.Namespace) -> List[str]:
    if args.backbone == "convnet":
        return ["backbone.name=convnet", f"backbone.kwargs.width={args.width}",
                "backbone.kwargs.depth=4"]
    return [f"backbone.name={args.backbone}", "~backbone.kwargs"]


def pretrain(run: str, seed: int, steps: int, args: argparse.Namespace,
             lists: Dict[str, Path]) -> Path:
    from solo_multiview.training.pretrain import fit, prepare_pretrain

    method, views, multiplier, balanced = RUNS[run]
    config = "quickstart_mttv_digits" if method == "mttv" else "quickstart_digits"
    long_tail = (["data.long_tail.profile=exp", "data.long_tail.imbalance_ratio=1",
                  "data.long_tail.n_max=1240"] if balanced else
                 ["data.long_tail.profile=exp", "data.long_tail.imbalance_ratio=100"])
    method_kwargs = (["method_kwargs.proj_hidden_dim=256", "method_kwargs.proj_output_dim=64"]
                     if method == "mttv" else
                     [f"method_kwargs.num_views={views}", "method_kwargs.proj_hidden_dim=256",
                      "method_kwargs.proj_output_dim=128"])
    overrides = [
        f"augmentations={'cifar10_mttv' if method == 'mttv' else 'cifar_symmetric'}",
        "host=builtin", f"seed={seed}", "data.dataset=image_list",
        f"+data.train_path={args.data}", f"+data.val_path={args.data}",
        f"+data.long_tail.split_file={lists['train']}", f"+data.val_split_file={lists['test']}",
        f"data.long_tail.seed={seed}", "data.long_tail.class_order=permuted", *long_tail,
        f"data.num_workers={args.workers}", f"data.format={args.loader}",
        *backbone_overrides(args), f"precision={args.precision}",
        f"accelerator={args.accelerator}", f"dali.device={args.dali_device}",
        *method_kwargs, f"optimizer.batch_size={args.batch}",
        f"optimizer.lr={args.lr if multiplier else 0.0}",
        "+optimizer.lr_scaling=none", "optimizer.weight_decay=1e-4", "scheduler.interval=step",
        "scheduler.warmup_epochs=1", "scheduler.warmup_start_lr=0.003",
        "max_epochs=10000", f"+max_steps={max(1, steps * multiplier)}", "+limit_val_batches=0",
        "+enable_progress_bar=false", "+enable_model_summary=false",
        f"checkpoint.dir={args.out / 'runs' / f'seed{seed}' / run}", f"name={run}",
    ]
    if method == "mttv":
        overrides.append("method_kwargs.num_pairs=1")
    cfg = compose(ROOT / "scripts/pretrain", config, overrides)
    cfg.augmentations[0].crop_size = args.crop
    result = fit(prepare_pretrain(cfg))
    return result.run_dir


def evaluate(run_dir: Path, kind: str, seed: int, args: argparse.Namespace,
             lists: Dict[str, Path]) -> Dict[str, Any]:
    from solo_multiview.eval.run_knn import run_knn
    from solo_multiview.eval.run_linear import run_linear

    overrides = [
        f"pretrained_feature_extractor={run_dir}", f"backbone.name={args.backbone}",
        "data.dataset=image_list", f"data.train_path={args.data}", f"data.val_path={args.data}",
        f"+data.val_split_file={lists['test']}", f"data.balanced_split_file={lists['train']}",
        f"data.num_workers={args.workers}", "train_set=balanced", f"device={args.eval_device}",
        f"seed={seed}",
        # group every run of a seed by the same long-tailed counts (the balanced run too)
        "data.long_tail.profile=exp", "data.long_tail.imbalance_ratio=100",
        "data.long_tail.n_max=null", f"results.dir={run_dir / 'eval'}", "results.plot=false",
    ]
    if kind == "linear":
        cfg = compose(ROOT / "scripts/linear", "cifar10lt", overrides + ["max_epochs=50"])
        return run_linear(cfg).report
    cfg = compose(ROOT / "scripts/linear", "knn_cifar10lt", overrides)
    return run_knn(cfg).report


def summarise(results: Dict[str, Dict[str, Dict[str, Any]]]) -> Dict[str, Dict[str, Any]]:
    """mean and std over seeds of top-1 and Many/Medium/Few, per run and evaluation."""
    summary: Dict[str, Dict[str, Any]] = {}
    for run in RUNS:
        for kind in ("knn", "linear"):
            reports = [seeds[run][kind] for seeds in results.values() if run in seeds]
            if not reports:
                continue
            values = {"top1": [r["top1"] for r in reports]}
            for group in GROUPS:
                values[group] = [r["groups"]["thirds"]["acc"][group] for r in reports]
            summary.setdefault(run, {})[kind] = {
                key: (statistics.mean(v), statistics.pstdev(v) if len(v) > 1 else 0.0)
                for key, v in values.items()
            }
    return summary


def markdown(summary: Dict[str, Dict[str, Any]], seeds: int, meta: Dict[str, Any]) -> str:
    lines = [
        f"{seeds} seed(s); {meta['steps']} steps (S), batch {meta['batch']} anchors, "
        f"{meta['crop']}x{meta['crop']} crops, {meta['backbone']}; wall time "
        f"{meta['minutes']:.1f} min on {meta['machine']}. Accuracy in %, mean +- std "
        "over seeds (population std); Many/Medium/Few: thirds of the classes by long-tailed "
        "training count.",
        "",
        "| run | steps | kNN top-1 | kNN many | kNN medium | kNN few | linear top-1 | "
        "linear many | linear medium | linear few |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run, (_, _, multiplier, _) in RUNS.items():
        if run not in summary:
            continue
        cells = []
        for kind in ("knn", "linear"):
            stats = summary[run][kind]
            cells += [f"{stats[k][0]:.1f} +- {stats[k][1]:.1f}" for k in ("top1", *GROUPS)]
        steps = f"{multiplier}S" if multiplier else "0"
        lines.append(f"| {run} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: Dict[str, Dict[str, Any]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    for axis_index, kind in enumerate(("knn", "linear")):
        ax = fig.add_subplot(1, 2, axis_index + 1)
        runs = [r for r in RUNS if r in summary]
        width = 0.8 / len(runs)
        for i, run in enumerate(runs):
            stats = summary[run][kind]
            xs = [g + i * width for g in range(len(GROUPS))]
            ax.bar(xs, [stats[g][0] for g in GROUPS], width, yerr=[stats[g][1] for g in GROUPS],
                   label=run, capsize=2)
        ax.set_xticks([g + 0.4 - width / 2 for g in range(len(GROUPS))], GROUPS)
        ax.set_title(f"{kind} accuracy by group (CIFAR-10-LT proxy)")
        ax.set_ylabel("accuracy (%)")
        if axis_index == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/cifar10")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/proxy")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--steps", type=int, default=1200, help="S")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.5, help="SGD learning rate (not scaled)")
    parser.add_argument("--crop", type=int, default=16)
    parser.add_argument("--width", type=int, default=16, help="convnet width (first block)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--loader", default="dali", choices=["dali", "image_folder"],
                        help="pretraining loader: DALI or torchvision")
    # larger runs (benchmarks/gpu_run.py is the packaged GPU run) change these
    parser.add_argument("--backbone", default="convnet", choices=["convnet", "resnet18"])
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--dali-device", default="cpu", choices=["cpu", "gpu", "auto"])
    parser.add_argument("--eval-device", default="cpu")
    args = parser.parse_args()
    args.data, args.out = args.data.resolve(), args.out.resolve()

    start = time.time()
    lists = write_split_lists(args.data, args.out / "splits")
    results_path = args.out / "results.json"
    results: Dict[str, Dict[str, Any]] = (json.loads(results_path.read_text())
                                          if results_path.exists() else {})
    for seed in args.seeds:
        for run in args.runs:
            done = results.get(str(seed), {}).get(run)
            if done:
                continue  # resumable: finished runs are kept in results.json
            began = time.time()
            run_dir = pretrain(run, seed, args.steps, args, lists)
            trained = time.time()
            entry = {kind: evaluate(run_dir, kind, seed, args, lists)
                     for kind in ("knn", "linear")}
            entry["minutes"] = {"pretrain": (trained - began) / 60,
                                "eval": (time.time() - trained) / 60}
            results.setdefault(str(seed), {})[run] = entry
            results_path.write_text(json.dumps(results, default=str))
            print(f"seed {seed} {run}: knn {entry['knn']['top1']:.1f} "
                  f"linear {entry['linear']['top1']:.1f} (pretrain "
                  f"{entry['minutes']['pretrain']:.1f} min, eval {entry['minutes']['eval']:.1f} "
                  f"min, total {(time.time() - start) / 60:.1f} min)", flush=True)
    summary = summarise(results)
    machine = (f"{os.cpu_count()} CPU cores" if args.accelerator == "cpu"
               else f"{args.accelerator} ({args.precision})")
    backbone = (f"convnet width {args.width} depth 4" if args.backbone == "convnet"
                else args.backbone)
    meta = {"steps": args.steps, "batch": args.batch, "crop": args.crop, "backbone": backbone,
            "minutes": (time.time() - start) / 60, "machine": machine}
    table = markdown(summary, len(results), meta)
    (args.out / "table.md").write_text(table)
    plot(summary, args.out / "groups.png")
    print(table)


if __name__ == "__main__":
    main()
