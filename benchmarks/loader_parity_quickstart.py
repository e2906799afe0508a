"""Do DALI-trained and torchvision-trained checkpoints score the same? The quickstart, per seed.

    python benchmarks/loader_parity_quickstart.py --seeds 0 1 2 3 4 5 \
        --out benchmarks/results/loader_parity_quickstart.md

For each seed and each loader (``data.format=image_folder``, the torchvision path, and
``data.format=dali``, DALI's CPU path), the quickstart runs as a user runs it: ``main_pretrain.py
--config-name quickstart_digits seed=<s> data.format=<f>`` (K = 4 mv_simclr on digits-LT), then
``main_linear.py --config-name quickstart_digits`` on the checkpoint it printed; the probe's
top-1 is read from the ``results.json`` the linear probe writes. The two loaders run the same
augmentation schema; their draws differ (different random generators), so a seed's two
accuracies are two samples, and the question is whether the loaders' means differ by more than
the seed spread. Printed and written: every run, then per loader the mean, std (sample) and
range, and the difference of the means with its standard error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("image_folder", "dali")


def run(args: list[str], cwd: Path) -> str:
    """Runs ``python <args>`` in ``cwd``; its output, or an error with the output's tail."""
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} exited {done.returncode}:\n"
                           f"{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def one_run(seed: int, fmt: str, workdir: Path) -> float:
    """Linear-probe top-1 (%) of the quickstart pretrained with ``seed`` on loader ``fmt``."""
    out = run([str(ROOT / "main_pretrain.py"), "--config-name", "quickstart_digits",
               f"seed={seed}", f"data.format={fmt}",
               f"checkpoint.dir={workdir / f'{fmt}-{seed}'}"], workdir)
    match = re.search(r"^checkpoint: (.+)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no 'checkpoint:' line in main_pretrain.py's output:\n{out[-2000:]}")
    checkpoint = (workdir / match.group(1).strip()).resolve()
    run([str(ROOT / "main_linear.py"), "--config-name", "quickstart_digits",
         f"pretrained_feature_extractor={checkpoint}"], workdir)
    results = sorted(checkpoint.parent.glob("eval/linear-*/results.json"))
    if not results:
        raise RuntimeError(f"no eval/linear-*/results.json beside {checkpoint}")
    return float(json.loads(results[-1].read_text())["top1"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    load_before, start = os.getloadavg(), time.time()
    scores: dict[str, list[float]] = {fmt: [] for fmt in FORMATS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for fmt in FORMATS:  # the two loaders side by side, seed by seed
                scores[fmt].append(one_run(seed, fmt, Path(tmp)))
                print(f"seed {seed} {fmt}: {scores[fmt][-1]:.2f}", flush=True)
    load_after = os.getloadavg()

    lines = [f"Quickstart (K = 4 mv_simclr, digits-LT) linear-probe top-1 per loader, seeds "
             f"{', '.join(map(str, args.seeds))}; {(time.time() - start) / 60:.1f} min, load "
             f"average {load_before[0]:.2f} before, {load_after[0]:.2f} after.", "",
             "| seed | " + " | ".join(FORMATS) + " |", "|---|" + "---:|" * len(FORMATS)]
    lines += [f"| {seed} | " + " | ".join(f"{scores[f][i]:.2f}" for f in FORMATS) + " |"
              for i, seed in enumerate(args.seeds)]
    lines += ["", "| loader | mean | std | min | max |", "|---|---:|---:|---:|---:|"]
    for fmt in FORMATS:
        values = scores[fmt]
        lines.append(f"| {fmt} | {statistics.mean(values):.2f} | "
                     f"{statistics.stdev(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    a, b = scores["dali"], scores["image_folder"]
    error = (statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) ** 0.5
    lines += ["", f"dali minus image_folder: {statistics.mean(a) - statistics.mean(b):+.2f} "
              f"(standard error of the difference {error:.2f})"]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
