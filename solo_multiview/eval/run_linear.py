"""The linear-probe evaluation behind ``main_linear.py``.

1. ``prepare_eval`` (config, checkpoint, frozen backbone, data; nothing written).
2. Unaugmented features of the probe's training images and of the balanced test set, extracted
   once (``EvalTransform``) and cached in ``<results.dir>/feature_cache``.
3. ``probe.mode=features``: ``linear.train_linear_probe`` on the cached features.
   ``probe.mode=augmented``: ``augmented_probe.train_augmented_probe``, the same probe trained on
   features of freshly augmented images (random crop + flip) every epoch, frozen backbone in eval
   mode.
4. Test scores = the probe's logits on the cached test features; ``metrics.long_tail_report``
   with the pretraining set's class counts (both grouping rules); ``report.write_results``.
"""

from __future__ import annotations

from typing import Callable

import omegaconf
import torch

from solo_multiview.data.datasets import IndexedSubset

from .augmented_probe import augmentation_transform, train_augmented_probe
from .linear import LinearProbeConfig, train_linear_probe
from .metrics import long_tail_report, topk_accuracy
from .prepare import EvalResult, PreparedEval, base_settings, finish, prepare_eval, split_features


def probe_config(cfg: omegaconf.DictConfig) -> LinearProbeConfig:
    """``LinearProbeConfig`` from the validated evaluation config."""
    return LinearProbeConfig(
        epochs=int(cfg.max_epochs), batch_size=int(cfg.optimizer.batch_size),
        optimizer=str(cfg.optimizer.name), lr=float(cfg.optimizer.lr),
        momentum=float(cfg.optimizer.momentum), nesterov=bool(cfg.optimizer.nesterov),
        weight_decay=float(cfg.optimizer.weight_decay), standardize=bool(cfg.probe.standardize),
        balanced_loss=bool(cfg.probe.balanced_loss), seed=int(cfg.seed),
        lr_interval=str(cfg.optimizer.lr_interval))


def evaluate_linear(prep: PreparedEval) -> EvalResult:
    """Steps 2-4 of the module docstring on a prepared evaluation."""
    cfg = prep.cfg
    torch.manual_seed(int(cfg.seed))  # augmentations draw from the global generator
    train = split_features(prep, "train")
    test = split_features(prep, "test")
    config = probe_config(cfg)
    num_classes = prep.data.num_classes
    if cfg.probe.mode == "features":
        probe = train_linear_probe(train.features, train.labels, num_classes, config,
                                   device=prep.device)
    else:
        images, aug = prep.data.images, cfg.probe.augmentation
        transform = augmentation_transform(
            images.crop_size, images.mean, images.std, crop=str(aug.crop),
            padding=int(aug.padding), min_scale=float(aug.min_scale),
            horizontal_flip=float(aug.horizontal_flip), resize=images.resize)
        source = prep.data.train
        augmented = IndexedSubset(source.source, source.source_indexes, transform)
        probe = train_augmented_probe(prep.backbone, augmented, train.features, train.labels,
                                      num_classes, config, prep.device,
                                      num_workers=int(cfg.data.num_workers), log=prep.log)
    scores = probe.predict(test.features.to(prep.device)).cpu()
    train_top1 = topk_accuracy(probe.predict(train.features.to(prep.device)).cpu(),
                               train.labels, 1)
    report = long_tail_report(scores, test.labels, prep.data.pretrain_counts)
    settings = base_settings(prep, {"train": train, "test": test})
    settings["probe"] = {"mode": str(cfg.probe.mode), **config.to_dict(),
                         "train_top1": train_top1}
    if cfg.probe.mode == "augmented":
        settings["probe"]["augmentation"] = omegaconf.OmegaConf.to_container(
            cfg.probe.augmentation)
    title = (f"linear probe ({cfg.probe.mode}, train set {settings['train_set']}, "
             f"{len(prep.data.train)} images) on {prep.checkpoint.name}")
    return finish(prep, report, settings, title)


def run_linear(cfg: omegaconf.DictConfig, log: Callable[[str], None] = print) -> EvalResult:
    """``prepare_eval(cfg, "linear")`` then ``evaluate_linear``."""
    return evaluate_linear(prepare_eval(cfg, "linear", log))
