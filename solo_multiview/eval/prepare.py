"""What both evaluation entry points do around their classifier: validate the config, load the
frozen backbone, build the data (``prepare_eval``, which reads but never writes); get cached
features (``split_features``); write the results folder and the summary (``finish``).

Results folder: ``<results.dir>/<results.name>`` with ``results.dir`` defaulting to
``<checkpoint folder>/eval`` and ``results.name`` to ``linear-<train set>[-aug]`` or
``knn-<train set>-k<k>-t<T>``; the feature cache lives in ``<results.dir>/feature_cache``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import omegaconf
import torch
from omegaconf import OmegaConf
from torch import nn

from solo_multiview.config.common import select
from solo_multiview.config.schema import unused_settings

from .checkpoint import check_backbone_config, find_checkpoint, load_args, load_pretrained_backbone
from .eval_config import (
    default_results_name,
    parse_eval_cfg,
    resolve_device,
    schema_for,
    train_set_label,
)
from .feature_cache import Features, cached_features, feature_key
from .probe_data import EvalData, build_eval_data
from .report import summary_table, write_results

CACHE_FOLDER = "feature_cache"


@dataclass
class PreparedEval:
    """A validated evaluation, ready to run; nothing has been written yet."""

    kind: str
    cfg: omegaconf.DictConfig
    checkpoint: Path
    ckpt_args: Dict[str, Any]
    backbone: nn.Module
    data: EvalData
    device: torch.device
    results_dir: Path
    out_dir: Path
    log: Callable[[str], None] = print
    started: float = field(default_factory=time.time)

    @property
    def cache_dir(self) -> Optional[Path]:
        return self.results_dir / CACHE_FOLDER if self.cfg.results.cache_features else None


@dataclass
class EvalResult:
    out_dir: Path
    paths: Dict[str, Path]
    report: Dict[str, Any]
    settings: Dict[str, Any]


def prepare_eval(cfg: omegaconf.DictConfig, kind: str,
                 log: Callable[[str], None] = print) -> PreparedEval:
    """Checks everything that can be checked before work, in this order: the config's keys and
    values, the checkpoint file and its args.json, backbone name and dataset against args.json,
    the checkpoint's ``backbone.`` weights (strict load), the data (paths, lists, probe set).
    Raises ValueError / FileNotFoundError naming the key or file; writes nothing."""
    cfg = parse_eval_cfg(cfg, kind)
    unused = unused_settings(schema_for(kind), cfg)
    if unused:
        log(f"note: accepted for solo-learn configs, without effect here: {', '.join(unused)}")
    device = resolve_device(cfg.device)
    checkpoint = find_checkpoint(str(cfg.pretrained_feature_extractor))
    args_path = select(cfg, "pretrained_args")
    ckpt_args = load_args(checkpoint, args_path)
    check_backbone_config(cfg, ckpt_args, checkpoint)
    backbone, _ = load_pretrained_backbone(checkpoint, args_path)
    backbone = backbone.to(device).eval().requires_grad_(False)
    data = build_eval_data(cfg, ckpt_args)
    results_dir = Path(select(cfg, "results.dir") or checkpoint.parent / "eval").expanduser()
    out_dir = results_dir / (select(cfg, "results.name") or default_results_name(cfg, kind))
    log(f"checkpoint: {checkpoint} ({ckpt_args.get('method')}, backbone "
        f"{ckpt_args['backbone']['name']}, pretrained on {ckpt_args['data']['dataset']}); "
        f"device {device}")
    return PreparedEval(kind, cfg, checkpoint, ckpt_args, backbone, data, device, results_dir,
                        out_dir, log)


def split_features(prep: PreparedEval, split: str) -> Features:
    """Unaugmented features of the ``"train"`` (probe / kNN bank) or ``"test"`` images, from the
    cache when present."""
    dataset = prep.data.train if split == "train" else prep.data.test
    key = feature_key(prep.checkpoint, dataset, prep.data.source_ids[split],
                      prep.data.images.to_dict())
    t0 = time.time()
    feats = cached_features(prep.backbone, dataset, key, split, prep.cache_dir, prep.device,
                            batch_size=int(prep.cfg.data.batch_size),
                            num_workers=int(prep.cfg.data.num_workers))
    how = "reused" if feats.reused else f"extracted in {time.time() - t0:.1f} s"
    where = f" ({feats.path})" if feats.path is not None else ""
    prep.log(f"features ({split}): {len(dataset)} images, dim {feats.features.shape[1]}, "
             f"{how}{where}")
    return feats


def base_settings(prep: PreparedEval, features: Mapping[str, Features]) -> Dict[str, Any]:
    """The settings every results.json records: checkpoint, pretraining, data, caches, config."""
    args = prep.ckpt_args
    return {
        "evaluation": prep.kind,
        "name": prep.cfg.name,
        "checkpoint": str(prep.checkpoint),
        "pretraining": {
            "method": args.get("method"), "name": args.get("name"),
            "backbone": args.get("backbone"), "host": args.get("host"),
            "num_large_crops": (args.get("data") or {}).get("num_large_crops"),
        },
        "data": prep.data.settings(),
        "train_set": train_set_label(prep.data.train_set),
        "device": str(prep.device),
        "seed": int(prep.cfg.seed),
        "feature_cache": {split: f.describe() for split, f in features.items()},
        "config": OmegaConf.to_container(prep.cfg, resolve=True),
    }


def finish(prep: PreparedEval, report: Dict[str, Any], settings: Dict[str, Any],
           title: str) -> EvalResult:
    """Writes results.json / per_class.csv / per_class.png into ``prep.out_dir`` and logs the
    summary table and the paths."""
    settings = {**settings, "seconds": round(time.time() - prep.started, 2)}
    paths = write_results(prep.out_dir, report, settings, plot=bool(prep.cfg.results.plot))
    prep.log(summary_table(report, title=title))
    pretrain = report["train_counts"]
    prep.log(f"groups from the pretraining set's class counts ({sum(pretrain)} images, "
             f"{max(pretrain)}..{min(pretrain)} per class)")
    for kind, path in paths.items():
        prep.log(f"{kind}: {path}")
    return EvalResult(prep.out_dir, paths, report, settings)
