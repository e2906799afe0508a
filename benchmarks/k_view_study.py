"""Which K-view objective beats two views at equal compute, on long-tailed data (issue 16).

    python benchmarks/k_view_study.py --data ../shared/data/cifar10 --out benchmarks/results/study

CIFAR-10-LT (exponential profile, ratio 100: 12,406 images, 5000..50 per class) from the CIFAR-10
JPEG copy as an ``image_list``; per seed its own seeded class order. Every objective is its
shipped preset (``<method>_k2_cifar10lt``, ``mimv_<method>_cifar10lt``, ``mttv_cifar10lt``: its
loss settings, augmentation, optimizer, lr scaling) shrunk to the CPU: a 4-block convnet, heads
256/128, ``--crop`` crops, ``--batch`` anchors, a cosine schedule over S steps with (at most) one
warm-up epoch. The runs of one objective (``RUNS_OF``):

    k2          K = 2, S steps                      equal steps to k4
    k2_2x       K = 2, 2S steps                     equal compute to k4 (K/2 times the steps)
    k4          K = 4, S steps
    k4 rows whose K = 2 is another objective's run (polyview: every form is NT-Xent at K = 2, so
    mv_simclr's k2 rows; mttv: mv_simclr's; mimv_<m>: <m>'s) run only their 4-crop point.
    budget_*    the Poly-View question at one fixed budget (images per step and steps of k4):
                2B anchors x K = 2 and B/2 anchors x K = 8, S steps
    *_bal       the same run pretrained on a balanced subset of equal size (1,240 per class) and
                the same class order: the reference for the per-group cost of imbalance

Compute is counted, not assumed: forward hooks on the backbone (and the momentum backbone, when
there is one) count the images of every training step, with and without gradient. Each run is
evaluated with main_knn's and main_linear's code (``evaluate_knn``, ``evaluate_linear``) on the
balanced test set, bank and probe on ``--probe-per-class`` balanced training images per class,
Many/Medium/Few by the long-tailed counts of the seed (thirds rule; balanced runs are grouped by
the same counts, so their groups are the same classes). The evaluation images go through the
evaluation transform once per study (they are fixed); their features are written into the
evaluation's feature cache, which the entry points then read. Writes ``results.json``
(resumable: finished runs are skipped), ``table.md`` and two plots.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GROUPS = ("many", "medium", "few")
HEAD_WIDTHS = {"proj_hidden_dim": 256, "pred_hidden_dim": 256, "proj_output_dim": 128}


@dataclass(frozen=True)
class Objective:
    """A row family of the study: a shipped preset and the method_kwargs it changes."""

    preset: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    #: the objective whose K = 2 runs are this one's K = 2 (None: its own)
    k2_from: Optional[str] = None
    #: K of the 4-crop point (mttv and MIMV: 1 partner image = 4 crops)
    k4_views: int = 4


OBJECTIVES: Dict[str, Objective] = {
    "mv_simclr": Objective("mv_simclr_k2_cifar10lt"),
    "polyview_geometric": Objective("polyview_k2_cifar10lt", {"form": "geometric"}, "mv_simclr"),
    "polyview_arithmetic": Objective("polyview_k2_cifar10lt", {"form": "arithmetic"},
                                     "mv_simclr"),
    "polyview_sufficient_statistics": Objective(
        "polyview_k2_cifar10lt", {"form": "sufficient_statistics"}, "mv_simclr"),
    "mv_infonce": Objective("mv_infonce_k2_cifar10lt"),
    "mv_dhel": Objective("mv_dhel_k2_cifar10lt"),
    "mttv": Objective("mttv_cifar10lt", {}, "mv_simclr", k4_views=1),
    "fastsiam": Objective("fastsiam_k2_cifar10lt"),
    "mmcr": Objective("mmcr_k2_cifar10lt"),
    "emp_ssl": Objective("emp_ssl_k2_cifar10lt"),
    "mv_byol": Objective("mv_byol_k2_cifar10lt"),
    "mimv_mv_byol": Objective("mimv_mv_byol_cifar10lt", {}, "mv_byol", k4_views=1),
    "mv_barlow_twins": Objective("mv_barlow_twins_k2_cifar10lt"),
    "mimv_mv_barlow_twins": Objective("mimv_mv_barlow_twins_cifar10lt", {}, "mv_barlow_twins",
                                      k4_views=1),
}


@dataclass(frozen=True)
class Run:
    objective: str
    point: str          # k2 | k2_2x | k4 | budget_k2 | budget_k8 | random_init
    views: int          # method_kwargs.num_views
    steps: float        # in units of S
    batch: float        # in units of B
    balanced: bool = False

    @property
    def name(self) -> str:
        return f"{self.objective}/{self.point}{'_bal' if self.balanced else ''}"


#: tiers run in order, each over every seed, so a study stopped early has whole tiers:
#: 1 the K = 2 / K = 4 comparisons of every objective, the Poly-View budget and mv_simclr's
#: balanced twins (the K = 2 imbalance gap); 2 the balanced twin of every other objective's
#: 4-crop point; 3 the other Poly-View forms
TIERS = (1, 2, 3)
EXTRA_FORMS = ("polyview_arithmetic", "polyview_sufficient_statistics")


def runs_of(name: str, tier: int) -> List[Run]:
    """The runs of one objective in ``tier`` (see the module docstring and ``TIERS``)."""
    objective = OBJECTIVES[name]
    k4 = Run(name, "k4", objective.k4_views, 1, 1)
    if name in EXTRA_FORMS:
        return [k4] if tier == 3 else []
    if tier == 2:
        return [] if name == "mv_simclr" else [replace(k4, balanced=True)]
    if tier == 3:
        return []
    runs = []
    if objective.k2_from is None:
        runs += [Run(name, "k2", 2, 1, 1), Run(name, "k2_2x", 2, 2, 1)]
    runs.append(k4)
    if name == "polyview_geometric":
        runs += [Run(name, "budget_k2", 2, 1, 2), Run(name, "budget_k8", 8, 1, 0.5)]
    if name == "mv_simclr":
        runs += [replace(r, balanced=True) for r in runs]
    return runs


def study_runs(objectives: List[str], tier: int) -> List[Run]:
    first = [Run("mv_simclr", "random_init", 2, 0, 1)] if tier == 1 else []
    return first + [r for o in objectives for r in runs_of(o, tier)]


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
    """The config ``name`` with ``key=value`` overrides (added when absent)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from solo_multiview.training.presets import register_presets

    register_presets()
    kept = ("augmentations=", "~")  # group choices and deletions stay as they are
    overrides = [o if o.startswith(kept) else "++" + o.lstrip("+") for o in overrides]
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.2"):
        cfg = hydra_compose(config_name=name, overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    return cfg


def pretrain_cfg(run: Run, seed: int, args: argparse.Namespace, lists: Dict[str, Path]) -> Any:
    """The objective's preset with the study's data, backbone, batch and schedule."""
    objective = OBJECTIVES[run.objective]
    steps = max(1, round(args.steps * run.steps))
    batch = max(1, round(args.batch * run.batch))
    long_tail = (["data.long_tail.imbalance_ratio=1", "data.long_tail.n_max=1240"]
                 if run.balanced else ["data.long_tail.imbalance_ratio=100"])
    overrides = [
        "host=builtin", f"seed={seed}", "data.dataset=image_list",
        f"data.train_path={args.data}", f"data.val_path={args.data}",
        f"data.long_tail.split_file={lists['train']}", f"data.val_split_file={lists['test']}",
        "data.long_tail.profile=exp", f"data.long_tail.seed={seed}",
        "data.long_tail.class_order=permuted", *long_tail,
        f"data.num_workers={args.workers}", f"data.format={args.loader}",
        "backbone.name=convnet", f"backbone.kwargs.width={args.width}", "backbone.kwargs.depth=4",
        "accelerator=cpu", "devices=1", f"optimizer.batch_size={batch}",
        "scheduler.interval=step", "max_epochs=10000", f"max_steps={steps}",
        "limit_val_batches=0", "enable_progress_bar=false", "enable_model_summary=false",
        f"checkpoint.dir={args.out / 'runs' / f'seed{seed}' / run.objective}",
        f"name={run.point}{'_bal' if run.balanced else ''}",
        f"method_kwargs.num_views={run.views}",
        *(f"method_kwargs.{k}={v}" for k, v in objective.kwargs.items()),
    ]
    if args.loader == "dali":
        overrides.append("dali.device=cpu")
    cfg = compose(ROOT / "scripts/pretrain", objective.preset, overrides)
    for key, value in HEAD_WIDTHS.items():
        if key in cfg.method_kwargs:
            cfg.method_kwargs[key] = value
    if cfg.scheduler.name == "warmup_cosine":
        cfg.scheduler.warmup_epochs = min(float(cfg.scheduler.warmup_epochs), 1.0)
    if run.point == "random_init":
        # one step at a negligible lr (the schema refuses 0): BatchNorm statistics have seen
        # one batch, the weights are the initial ones
        cfg.optimizer.lr = 1e-12
    for entry in cfg.augmentations:
        entry.crop_size = args.crop
    return cfg


def count_backbone_images(model: Any) -> Dict[str, int]:
    """Forward hooks that count the images through the online backbone (with gradient) and the
    momentum backbone (without) during training; the dict fills as the run goes."""
    import torch

    counts = {"grad": 0, "no_grad": 0}

    def hook(module: Any, inputs: Tuple[Any, ...], output: Any) -> None:
        counts["grad" if torch.is_grad_enabled() else "no_grad"] += int(inputs[0].shape[0])

    model.backbone.register_forward_hook(hook)
    momentum = getattr(model, "momentum_backbone", None)
    if momentum is not None:
        momentum.register_forward_hook(hook)
    return counts


def pretrain(run: Run, seed: int, args: argparse.Namespace,
             lists: Dict[str, Path]) -> Tuple[Path, Dict[str, int], int]:
    from solo_multiview.training.pretrain import fit, prepare_pretrain

    prepared = prepare_pretrain(pretrain_cfg(run, seed, args, lists))
    counts = count_backbone_images(prepared.model)
    result = fit(prepared)
    return result.run_dir, counts, int(prepared.trainer.global_step)


class EvalImages:
    """The evaluation images after the (deterministic) evaluation transform, made once per
    selection of images and reused by every run of the study."""

    def __init__(self) -> None:
        self._tensors: Dict[Tuple[str, str], Tuple[Any, Any]] = {}

    def seed_cache(self, prep: Any) -> None:
        """Writes the features of both splits into ``prep``'s feature cache."""
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from solo_multiview.eval.feature_cache import cache_path, feature_key, save_cached
        from solo_multiview.eval.features import extract_features

        for split in ("train", "test"):
            dataset = prep.data.train if split == "train" else prep.data.test
            key = feature_key(prep.checkpoint, dataset, prep.data.source_ids[split],
                              prep.data.images.to_dict())
            ident = (split, key["indexes_sha1"])
            if ident not in self._tensors:
                items = [dataset[i] for i in range(len(dataset))]
                self._tensors[ident] = (torch.stack([item[1] for item in items]),
                                        torch.as_tensor([item[2] for item in items]))
            images, labels = self._tensors[ident]
            loader = DataLoader(TensorDataset(images, labels), batch_size=512)
            feats, got = extract_features(prep.backbone, loader, device=prep.device)
            save_cached(cache_path(prep.cache_dir, split, key), key, feats, got)


def evaluate(run_dir: Path, seed: int, args: argparse.Namespace, lists: Dict[str, Path],
             images: EvalImages) -> Dict[str, Any]:
    from solo_multiview.eval.prepare import prepare_eval
    from solo_multiview.eval.run_knn import evaluate_knn
    from solo_multiview.eval.run_linear import evaluate_linear

    overrides = [
        f"pretrained_feature_extractor={run_dir}", "backbone.name=convnet",
        "data.dataset=image_list", f"data.train_path={args.data}", f"data.val_path={args.data}",
        f"data.val_split_file={lists['test']}", f"data.balanced_split_file={lists['train']}",
        "data.num_workers=0", f"train_set={args.probe_per_class}", "device=cpu",
        f"seed={seed}",
        # every run of a seed is grouped by the same long-tailed counts (the balanced ones too)
        "data.long_tail.profile=exp", "data.long_tail.imbalance_ratio=100",
        "data.long_tail.n_max=null", f"results.dir={run_dir / 'eval'}", "results.plot=false",
    ]
    quiet = lambda message: None  # noqa: E731 - the study prints one line per run
    knn = prepare_eval(compose(ROOT / "scripts/linear", "knn_cifar10lt", overrides), "knn", quiet)
    images.seed_cache(knn)
    linear = prepare_eval(compose(ROOT / "scripts/linear", "cifar10lt",
                                  overrides + [f"max_epochs={args.probe_epochs}"]),
                          "linear", quiet)
    return {"knn": evaluate_knn(knn).report, "linear": evaluate_linear(linear).report}


def accuracies(report: Dict[str, Any]) -> Dict[str, float]:
    return {"top1": report["top1"], **report["groups"]["thirds"]["acc"]}


def mean_std(values: List[float]) -> Tuple[float, float]:
    return statistics.mean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def summarise(results: Dict[str, Dict[str, Any]], runs: List[Run]) -> Dict[str, Any]:
    """Per run: mean +- std over seeds of top-1 and Many/Medium/Few (kNN and linear), compute,
    and, per seed then averaged, the long-tailed minus balanced difference (cost of
    imbalance)."""
    summary: Dict[str, Any] = {}
    for run in runs:
        entries = [seeds[run.name] for seeds in results.values() if run.name in seeds]
        if not entries:
            continue
        row: Dict[str, Any] = {"seeds": len(entries), "images_grad": entries[0]["images"]["grad"],
                               "images_no_grad": entries[0]["images"]["no_grad"],
                               "steps": entries[0]["steps"]}
        for kind in ("knn", "linear"):
            values = [accuracies(e[kind]) for e in entries]
            row[kind] = {key: mean_std([v[key] for v in values]) for key in values[0]}
        twin = Run(run.objective, run.point, run.views, run.steps, run.batch, True).name
        pairs = [(s[run.name], s[twin]) for s in results.values()
                 if run.name in s and twin in s and not run.balanced]
        if pairs:
            for kind in ("knn", "linear"):
                diffs = [{k: accuracies(lt[kind])[k] - accuracies(bal[kind])[k]
                          for k in ("top1", *GROUPS)} for lt, bal in pairs]
                row[f"{kind}_minus_bal"] = {k: mean_std([d[k] for d in diffs])
                                            for k in diffs[0]}
        summary[run.name] = row
    return summary


def paired(results: Dict[str, Dict[str, Any]], a: str, b: str, kind: str) -> Optional[Tuple]:
    """mean +- std over seeds of top-1(a) - top-1(b), seeds where both ran."""
    diffs = [s[a][kind]["top1"] - s[b][kind]["top1"] for s in results.values()
             if a in s and b in s]
    return mean_std(diffs) + (len(diffs),) if diffs else None


def k2_baseline(objective: str, point: str) -> str:
    source = OBJECTIVES[objective].k2_from or objective
    return f"{source}/{point}"


def fmt(stats: Tuple[float, float]) -> str:
    return f"{stats[0]:.1f} +- {stats[1]:.1f}"


def markdown(summary: Dict[str, Any], results: Dict[str, Any], runs: List[Run],
             meta: Dict[str, Any]) -> str:
    lines = [
        f"{meta['seeds']} seed(s); S = {meta['steps']} steps, B = {meta['batch']} anchors, "
        f"{meta['crop']}x{meta['crop']} crops, convnet width {meta['width']} depth 4; probe and "
        f"bank {meta['probe_per_class']} balanced images per class, linear probe "
        f"{meta['probe_epochs']} epochs; {meta['minutes']:.0f} min of pretraining and "
        f"evaluation summed over the runs (resumed invocations included) on "
        f"{meta['machine']}. Accuracy in %, mean +- std over seeds (population std). "
        "Many/Medium/Few: thirds of the classes by long-tailed training count.",
        "",
        "### Every run",
        "",
        "| run | steps | backbone images (grad + no grad) | kNN top-1 | kNN many | "
        "kNN medium | kNN few | linear top-1 | linear many | linear medium | linear few |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        row = summary.get(run.name)
        if row is None:
            continue
        cells = [fmt(row[kind][k]) for kind in ("knn", "linear") for k in ("top1", *GROUPS)]
        images = f"{row['images_grad'] / 1e3:,.0f}k + {row['images_no_grad'] / 1e3:,.0f}k"
        lines.append(f"| {run.name} | {row['steps']} | {images} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### K = 4 against K = 2, paired by seed (top-1 difference, mean +- std over seeds)",
        "",
        "| objective | 4-crop run | vs K = 2, equal steps (kNN / linear) | vs K = 2, equal "
        "compute (kNN / linear) |",
        "|---|---|---|---|",
    ]
    for name in OBJECTIVES:
        k4 = f"{name}/k4"
        if k4 not in summary:
            continue
        cells = []
        for point in ("k2", "k2_2x"):
            base = k2_baseline(name, point)
            got = [paired(results, k4, base, kind) for kind in ("knn", "linear")]
            cells.append(" / ".join(f"{g[0]:+.1f} +- {g[1]:.1f}" if g else "-" for g in got))
        lines.append(f"| {name} | {k4} | {cells[0]} | {cells[1]} |")
    budget = [("polyview_geometric/budget_k2", "2B", 2), ("polyview_geometric/k4", "B", 4),
              ("polyview_geometric/budget_k8", "B/2", 8)]
    if all(name in summary for name, _, _ in budget):
        lines += [
            "",
            "### Poly-View at one fixed budget (images per step and steps of K = 4)",
            "",
            "| run | anchors | K | kNN top-1 | linear top-1 | linear few |",
            "|---|---|---|---|---|---|",
        ]
        for name, anchors, k in budget:
            row = summary[name]
            lines.append(f"| {name} | {anchors} | {k} | {fmt(row['knn']['top1'])} | "
                         f"{fmt(row['linear']['top1'])} | {fmt(row['linear']['few'])} |")
    lines += [
        "",
        "### The cost of imbalance: long-tailed minus balanced pretraining, paired by seed",
        "",
        "| run | kNN top-1 | kNN many | kNN medium | kNN few | linear top-1 | linear many | "
        "linear medium | linear few |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        row = summary.get(run.name, {})
        if "knn_minus_bal" not in row:
            continue
        cells = [f"{row[f'{kind}_minus_bal'][k][0]:+.1f} +- {row[f'{kind}_minus_bal'][k][1]:.1f}"
                 for kind in ("knn", "linear") for k in ("top1", *GROUPS)]
        lines.append(f"| {run.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: Dict[str, Any], runs: List[Run], out: Path) -> None:
    """top1_vs_compute.png: one panel per objective, kNN and linear top-1 against the images
    through the backbone (K = 2 at S and 2S, the 4-crop point at S); groups.png: long-tailed
    minus balanced Many/Medium/Few of every run with a balanced twin."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [name for name in OBJECTIVES if f"{name}/k4" in summary]
    columns = 4
    rows = max(1, -(-len(shown) // columns))
    fig = Figure(figsize=(3.2 * columns, 2.6 * rows))
    FigureCanvasAgg(fig)
    floor = summary.get("mv_simclr/random_init")
    for index, name in enumerate(shown):
        ax = fig.add_subplot(rows, columns, index + 1)
        points = [p for p in (k2_baseline(name, "k2"), k2_baseline(name, "k2_2x"))
                  if p in summary] + [f"{name}/k4"]
        xs = [(summary[p]["images_grad"] + summary[p]["images_no_grad"]) / 1e3 for p in points]
        for kind, colour in (("knn", "tab:blue"), ("linear", "tab:orange")):
            ys = [summary[p][kind]["top1"][0] for p in points]
            errs = [summary[p][kind]["top1"][1] for p in points]
            ax.errorbar(xs[:-1], ys[:-1], yerr=errs[:-1], fmt="o--", color=colour, capsize=2,
                        label=f"{kind}, K = 2 (S, 2S)")
            ax.errorbar(xs[-1:], ys[-1:], yerr=errs[-1:], fmt="s", color=colour, capsize=2,
                        label=f"{kind}, 4 crops (S)")
            if floor is not None:
                ax.axhline(floor[kind]["top1"][0], color=colour, lw=0.6, ls=":")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        if index % columns == 0:
            ax.set_ylabel("top-1 (%)", fontsize=7)
        if index >= len(shown) - columns:
            ax.set_xlabel("backbone images (thousands)", fontsize=7)
        if index == 0:
            ax.legend(fontsize=5)
    fig.suptitle("top-1 against compute per objective (dotted: the untrained network)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "top1_vs_compute.png", dpi=110)

    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    names = [r.name for r in runs if "linear_minus_bal" in summary.get(r.name, {})]
    for axis_index, kind in enumerate(("knn", "linear")):
        ax = fig.add_subplot(1, 2, axis_index + 1)
        width = 0.8 / len(GROUPS)
        for g, group in enumerate(GROUPS):
            stats = [summary[n][f"{kind}_minus_bal"][group] for n in names]
            ax.bar([i + g * width for i in range(len(names))], [s[0] for s in stats], width,
                   yerr=[s[1] for s in stats], label=group, capsize=2)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks([i + width for i in range(len(names))], names, rotation=70, fontsize=6)
        ax.set_ylabel("long-tailed minus balanced (points)")
        ax.set_title(f"{kind}: cost of imbalance per group")
        if axis_index == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "groups.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/cifar10")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES),
                        choices=list(OBJECTIVES))
    parser.add_argument("--points", nargs="+", default=None,
                        help="only these points (k2 k2_2x k4 budget_k2 budget_k8 random_init)")
    parser.add_argument("--steps", type=int, default=400, help="S")
    parser.add_argument("--batch", type=int, default=64, help="B (anchors)")
    parser.add_argument("--crop", type=int, default=16)
    parser.add_argument("--width", type=int, default=16, help="convnet width (first block)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--loader", default="batched", choices=["batched", "dali",
                                                                "image_folder"])
    parser.add_argument("--probe-per-class", type=int, default=500)
    parser.add_argument("--probe-epochs", type=int, default=50)
    parser.add_argument("--summary-only", action="store_true",
                        help="rewrite the table and plots from results.json")
    args = parser.parse_args()
    args.data, args.out = args.data.resolve(), args.out.resolve()

    start = time.time()
    lists = write_split_lists(args.data, args.out / "splits")
    results_path = args.out / "results.json"
    results: Dict[str, Dict[str, Any]] = (json.loads(results_path.read_text())
                                          if results_path.exists() else {})
    runs = [r for tier in TIERS for r in study_runs(args.objectives, tier)
            if args.points is None or r.point in args.points]
    images = EvalImages()
    todo = [(seed, run) for tier in TIERS for seed in args.seeds
            for run in study_runs(args.objectives, tier) if run in runs]
    for seed, run in [] if args.summary_only else todo:
        if run.name in results.get(str(seed), {}):
            continue  # resumable
        began = time.time()
        run_dir, counts, steps = pretrain(run, seed, args, lists)
        trained = time.time()
        entry = evaluate(run_dir, seed, args, lists, images)
        entry.update(images=counts, steps=steps, run_dir=str(run_dir),
                     minutes={"pretrain": (trained - began) / 60,
                              "eval": (time.time() - trained) / 60})
        results.setdefault(str(seed), {})[run.name] = entry
        results_path.write_text(json.dumps(results, default=str))
        print(f"seed {seed} {run.name}: knn {entry['knn']['top1']:.1f} linear "
              f"{entry['linear']['top1']:.1f} ({steps} steps, {counts['grad']:,} + "
              f"{counts['no_grad']:,} images; pretrain {entry['minutes']['pretrain']:.2f} "
              f"min, eval {entry['minutes']['eval']:.2f} min; total "
              f"{(time.time() - start) / 60:.1f} min)", flush=True)
    summary = summarise(results, runs)
    meta = {"seeds": len(results), "steps": args.steps, "batch": args.batch, "crop": args.crop,
            "width": args.width, "probe_per_class": args.probe_per_class,
            "probe_epochs": args.probe_epochs,
            "minutes": sum(sum(entry.get("minutes", {}).values())
                           for by_run in results.values() for entry in by_run.values()),
            "machine": f"{os.cpu_count()} CPU cores"}
    (args.out / "table.md").write_text(markdown(summary, results, runs, meta))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(summary, runs, args.out)
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
