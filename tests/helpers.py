"""Shared fixtures: configs composed from the real scripts/pretrain files, shrunk for CPU."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import pytest
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from solo_multiview.hosts import solo_available
from solo_multiview.training.presets import register_presets

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN_CONFIGS = ROOT / "scripts" / "pretrain"

HOSTS = [
    "builtin",
    pytest.param("solo", marks=pytest.mark.skipif(
        not solo_available(), reason="solo-learn is not installed (see README: add solo-learn)")),
]

TINY = [
    "backbone.kwargs.width=4",
    "backbone.kwargs.depth=2",
    "method_kwargs.proj_hidden_dim=16",
    "method_kwargs.proj_output_dim=8",
    "optimizer.batch_size=16",
    "data.num_workers=0",
    "+max_steps=2",
    "+limit_val_batches=1",
    "+enable_progress_bar=false",
    "+enable_model_summary=false",
    "++log_every_n_steps=1",
    "checkpoint.enabled=false",
]


def compose_cfg(config_name: str, overrides: Iterable[str] = ()) -> DictConfig:
    """A pretraining config exactly as main_pretrain.py would see it."""
    register_presets()
    with initialize_config_dir(config_dir=str(PRETRAIN_CONFIGS), version_base="1.2"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    OmegaConf.set_struct(cfg, False)
    return cfg


def keep_declared_method_keys(cfg: DictConfig) -> None:
    """A config composed from another method's file (the quickstart is mv_simclr's) keeps only
    the ``method_kwargs`` (and ``momentum``) keys its method declares: the schema refuses the
    others, as it should for a user's config."""
    import dataclasses

    from solo_multiview.methods import METHODS

    method = METHODS.get(cfg.get("method"))
    if method is None:
        return
    declared = {f.name for f in dataclasses.fields(method.Kwargs)}
    for key in [k for k in cfg.get("method_kwargs", {}) if k not in declared]:
        del cfg.method_kwargs[key]
    if method.Momentum is None and "momentum" in cfg:
        del cfg["momentum"]


def tiny_cfg(
    tmp_path: Path,
    method: str = "mv_simclr",
    host: str = "builtin",
    num_views: Optional[int] = 2,
    small_crops: int = 0,
    config_name: str = "quickstart_digits",
    overrides: Optional[Iterable[str]] = None,
) -> DictConfig:
    """The quickstart config, shrunk: tiny convnet, batch 16, two steps, files under tmp_path."""
    views = [] if num_views is None else [f"method_kwargs.num_views={num_views}"]
    cfg = compose_cfg(config_name, [
        *TINY, f"method={method}", f"host={host}", *views,
        f"checkpoint.dir={tmp_path / 'trained_models'}", *(overrides or []),
    ])
    keep_declared_method_keys(cfg)
    if small_crops:
        small = copy.deepcopy(OmegaConf.to_container(cfg.augmentations[0], resolve=True))
        small.update({"crop_size": 8, "num_crops": small_crops})
        cfg.augmentations = [*OmegaConf.to_container(cfg.augmentations, resolve=True), small]
    return cfg


def ops_off_entry(crop_size: int = 16, num_crops: int = 1, **ops) -> dict:
    """An augmentation schema entry with every random op off (rrc disabled) unless given."""
    base = {
        "rrc": {"enabled": False},
        "color_jitter": {"prob": 0.0},
        "grayscale": {"prob": 0.0},
        "gaussian_blur": {"prob": 0.0},
        "solarization": {"prob": 0.0},
        "equalization": {"prob": 0.0},
        "horizontal_flip": {"prob": 0.0},
        "crop_size": crop_size,
        "num_crops": num_crops,
    }
    base.update(ops)
    return base


def run_workers(module: str, out: Path, envs: List[Dict[str, str]], timeout_s: float) -> None:
    """Runs ``python -m <module> --worker <out>`` once per environment in ``envs`` (the ranks of
    a distributed test), waits at most ``timeout_s`` for each, kills any that outlive it, and
    fails with the log of a worker that did not exit 0."""
    procs = [subprocess.Popen([sys.executable, "-m", module, "--worker", str(out)], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for env in envs]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=timeout_s)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-4000:]


def reference_topk(train, train_targets, test, test_targets, k, temperature, top):
    """Percent of test rows whose class is among the ``top`` best of a weighted cosine vote of
    their k nearest bank rows (weight exp(s / T)); classes run over 0..max label."""
    classes = int(max(train_targets.max(), test_targets.max())) + 1
    sims = F.normalize(test.double(), dim=1) @ F.normalize(train.double(), dim=1).T
    hits = 0
    for row, target in zip(sims, test_targets.tolist()):
        votes = [0.0] * classes
        values, indexes = row.topk(min(k, len(train)))
        for sim, j in zip(values.tolist(), indexes.tolist()):
            votes[int(train_targets[j])] += math.exp(sim / temperature)
        ranked = sorted(range(classes), key=lambda c: -votes[c])
        hits += target in ranked[:min(top, classes)]
    return 100.0 * hits / len(test_targets)
