"""Cost of K views: training-step time and peak memory of every registered objective at
K = 2, 4, 8 on CPU, side by side in one run, as ratios to K = 2; and the batched single forward
against solo-learn-style per-crop forwards.

    python benchmarks/cost_of_k.py --out benchmarks/results/cost_of_k.md

Each (method, K) runs in its own subprocess so its peak memory is its own (peak RSS on CPU,
which includes the ~1 GB every process pays for torch and Lightning; peak allocated CUDA memory
with ``--device cuda``); steps use synthetic crops (no data loading: the loader is measured in
benchmarks/dali_vs_torchvision.py). Each method is its shipped ``<method>_k<K>_cifar10lt`` preset
(``mimv_<method>`` with ``--mimv``) with the backbone shrunk to a convnet and the heads to
256/128. Time per step = forward + backward + optimizer step (+ EMA for momentum methods),
median of the timed steps after warm-up. Images through the backbone are counted by forward
hooks on the first step: with gradient (the online backbone) and without (a momentum backbone);
mttv's K is its number of partners, each giving 4 crops (x_n, y_a, x_a, y_n).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OBJECTIVES = ["mv_simclr", "mv_byol", "mv_simsiam", "mv_barlow_twins", "mv_vicreg",
              "mv_mocov2plus", "fastsiam", "polyview", "mv_infonce", "mv_dhel", "mmcr",
              "emp_ssl", "mttv"]
CONTROL = "backbone"  # --methods backbone: the backbone's forward and backward alone
HEAD_WIDTHS = {"proj_hidden_dim": 256, "pred_hidden_dim": 256, "proj_output_dim": 128}


def preset_name(method: str) -> str:
    """``mimv_<method>``: the method with the paper's multi-image views (K partners)."""
    return f"{method}_cifar10lt" if method.startswith("mimv_") else f"{method}_k2_cifar10lt"


def build_model(method: str, k: int, width: int, crop: int, batch: int):
    """The method's shipped preset at K views on the built-in host, backbone and heads
    shrunk."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from solo_multiview.config.pretrain import parse_pretrain_cfg
    from solo_multiview.methods import build_method
    from solo_multiview.training.presets import register_presets

    register_presets()
    with initialize_config_dir(config_dir=str(ROOT / "scripts/pretrain"), version_base="1.2"):
        cfg = compose(config_name=preset_name(method))
    OmegaConf.set_struct(cfg, False)
    cfg.method_kwargs.num_views = k
    cfg.host = "builtin"
    cfg.backbone = {"name": "convnet", "kwargs": {"width": width, "depth": 4}}
    cfg.optimizer.batch_size = batch
    for key, value in HEAD_WIDTHS.items():
        if key in cfg.method_kwargs:
            cfg.method_kwargs[key] = value
    for entry in cfg.augmentations:
        entry.crop_size = crop
    cfg = parse_pretrain_cfg(cfg)
    cfg.data.num_classes = 10
    return build_method(cfg)


def measure(method: str, k: int, width: int, crop: int, batch: int, warmup: int, steps: int,
            per_crop: bool, device: str) -> Dict[str, float]:
    """Runs in the child process: median step time and peak memory (RSS on CPU, allocated
    memory on CUDA)."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(2)
    # as main_pretrain.py runs it: channels_last weights (inputs are converted in forward)
    control = method == CONTROL
    model = build_model("mv_simclr" if control else method, k, width, crop, batch).to(device,
                                                           memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    from solo_multiview.methods import view_spec

    num_crops = view_spec(model.cfg).num_crops
    crops = [torch.randn(batch, 3, crop, crop, device=device) for _ in range(num_crops)]
    batch_data = [torch.arange(batch, device=device), crops,
                  torch.randint(0, 10, (batch,), device=device)]
    model.log = lambda *a, **kw: None  # no trainer attached: logging is a no-op here
    model.log_dict = lambda *a, **kw: None
    if per_crop:
        # solo-learn's BaseMethod: one backbone call per crop
        def per_crop_step(batch, batch_idx):
            from solo_multiview.losses.mv_simclr import mv_nt_xent

            idx, views, targets = batch
            outs = [model.base_training_step(v, targets) for v in views]
            z = torch.cat([o["z"] for o in outs])
            loss, _ = mv_nt_xent(z, idx.repeat(len(views)), model.temperature)
            return loss + sum(o["loss"] for o in outs) / len(outs)

        step_fn = per_crop_step
    elif control:
        # the backbone alone on the same B x K images: what any objective's step must pay
        def backbone_step(batch, batch_idx):
            return model.backbone(torch.cat(batch[1])).square().mean()

        step_fn = backbone_step
    else:
        step_fn = model.training_step
    # images through the backbones on the first step, with and without gradient
    counted = {"images_grad": 0, "images_no_grad": 0}

    def count(module, inputs, output):
        if not counting_done[0]:
            key = "images_grad" if torch.is_grad_enabled() else "images_no_grad"
            counted[key] += inputs[0].shape[0]

    counting_done = [False]
    for name in ("backbone", "momentum_backbone"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            getattr(model, name).register_forward_hook(count)
    pairs = getattr(model, "momentum_pairs", [])
    cuda = device.startswith("cuda")
    times: List[float] = []
    for i in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = step_fn(batch_data, i)
        loss.backward()
        optimizer.step()
        for online, target in pairs:
            model.momentum_updater.update(online, target)
        if cuda:
            torch.cuda.synchronize()
        counting_done[0] = True
        if i >= warmup:
            times.append(time.perf_counter() - start)
    if cuda:
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step_s": statistics.median(times), "peak_rss_mib": peak_mib, **counted}


def run_child(args: argparse.Namespace, method: str, k: int, per_crop: bool) -> Dict[str, float]:
    cmd = [sys.executable, __file__, "--child", method, str(k), "--width", str(args.width),
           "--crop", str(args.crop), "--batch", str(args.batch), "--warmup", str(args.warmup),
           "--steps", str(args.steps), "--device", args.device] + (
               ["--per-crop"] if per_crop else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+",
                        default=[CONTROL, *OBJECTIVES, "mimv_mv_byol",
                                 "mimv_mv_barlow_twins"])
    parser.add_argument("--ks", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--per-crop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        method, k = args.child[0], int(args.child[1])
        print(json.dumps(measure(method, k, args.width, args.crop, args.batch, args.warmup,
                                 args.steps, args.per_crop, args.device)))
        return

    lines = [
        f"Device: {args.device} ({platform.machine()}, torch threads 2); convnet "
        f"width {args.width} depth 4, {args.crop}x{args.crop} crops, batch {args.batch}, "
        f"median of {args.steps} steps after {args.warmup} warm-up.",
        "",
        "| method | K | backbone images/step (grad + no grad) | step (s) | time / time(K=2) | "
        "target 1.1 K/2 | met | peak memory (MiB) | memory / memory(K=2) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in args.methods:
        base = None
        for k in args.ks:
            result = run_child(args, method, k, per_crop=False)
            base = base or result
            ratio = result["step_s"] / base["step_s"]
            target = 1.1 * k / args.ks[0]
            lines.append(
                f"| {method} | {k} | {result['images_grad']} + {result['images_no_grad']} | "
                f"{result['step_s']:.3f} | {ratio:.2f} | {target:.2f} | "
                f"{'yes' if ratio <= target else 'no'} | {result['peak_rss_mib']:.0f} | "
                f"{result['peak_rss_mib'] / base['peak_rss_mib']:.2f} |"
            )
            print(lines[-1], flush=True)
    lines += ["", "| mv_simclr K | batched: one call (s) | per-crop calls (s) | "
              "per-crop / batched |", "|---|---|---|---|"]
    for k in args.ks:
        batched = run_child(args, "mv_simclr", k, per_crop=False)
        looped = run_child(args, "mv_simclr", k, per_crop=True)
        lines.append(f"| {k} | {batched['step_s']:.3f} | {looped['step_s']:.3f} | "
                     f"{looped['step_s'] / batched['step_s']:.2f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
