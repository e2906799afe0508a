"""Compatibility fixes for solo-learn (GitHub vturrisi/solo-learn, last release early 2024) on
current libraries. Every fix lives here, is idempotent, and is tested in tests/test_hosts.py.

1. ``solo.utils.knn.WeightedKNNClassifier`` passes ``compute_on_step`` to torchmetrics'
   ``Metric.__init__``; torchmetrics 1.x removed that argument, so ``knn_eval.enabled: true``
   crashes. Fix: a shim base between the classifier and ``Metric`` that drops the argument.
2. solo-learn's backbone table (``BaseMethod._BACKBONES``) lacks our small ``convnet``; it is
   added so the solo host, solo-learn's ``main_linear.py`` and ``main_knn.py`` can build it.
3. solo-learn's ``BaseMethod`` / ``BaseMomentumMethod`` build the backbone themselves, with the
   CIFAR stem (padding 2) exactly for ``data.dataset`` cifar10/cifar100. ``backbone.stem`` and
   ``backbone.cifar_stem_padding`` are applied after that construction
   (:func:`apply_backbone_stem`, called by ``hosts/solo_host.py``): nothing changes for the
   default ``auto`` / 2; otherwise the stem layers are replaced (online and momentum backbone,
   the momentum copy starting from the online weights, as solo-learn initialises it).
   solo-learn's *own* ``main_linear.py`` / ``main_knn.py`` rebuild its rule's stem, not this one:
   evaluate such a checkpoint with this project's ``main_linear.py`` / ``main_knn.py``.
4. The batched step adds every training row to the kNN bank, unlabelled ones (target -1)
   included, so that no step waits for the device on a boolean mask
   (``MultiViewStepMixin.update_online_knn``); ``WeightedKNNClassifier.compute`` is wrapped to
   drop those rows first (``hosts.online_knn.labelled_rows``), once per validation epoch.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torchmetrics import Metric

from solo_multiview.hosts.backbones import (
    BACKBONES,
    apply_stem,
    check_backbone_stem,
    resolve_stem,
    stem_settings,
)


class _MetricWithoutComputeOnStep(Metric):
    """``Metric`` that accepts and ignores the ``compute_on_step`` argument of torchmetrics<0.8."""

    def __init__(self, *args: Any, compute_on_step: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)


def _fix_knn_metric() -> None:
    from solo.utils.knn import WeightedKNNClassifier

    if WeightedKNNClassifier.__bases__ != (_MetricWithoutComputeOnStep,):
        WeightedKNNClassifier.__bases__ = (_MetricWithoutComputeOnStep,)


def drop_unlabelled_before(compute: Callable[..., Any]) -> Callable[..., Any]:
    """``compute`` of a kNN metric with list states ``train_features``/``train_targets`` that
    first drops the bank rows with target -1 (fix 4); an all-unlabelled bank becomes empty."""
    from solo_multiview.hosts.online_knn import labelled_rows

    if getattr(compute, "_drops_unlabelled", False):
        return compute

    @functools.wraps(compute)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.train_targets:
            features, targets = labelled_rows(torch.cat(list(self.train_features)),
                                              torch.cat(list(self.train_targets)))
            self.train_features = [features] if targets.numel() else []
            self.train_targets = [targets] if targets.numel() else []
        return compute(self, *args, **kwargs)

    wrapped._drops_unlabelled = True  # type: ignore[attr-defined]
    return wrapped


def _fix_knn_unlabelled_rows() -> None:
    from solo.utils.knn import WeightedKNNClassifier

    WeightedKNNClassifier.compute = drop_unlabelled_before(WeightedKNNClassifier.compute)


def _register_backbones() -> None:
    from solo.methods.base import BaseMethod

    for name, builder in BACKBONES.items():
        BaseMethod._BACKBONES.setdefault(name, builder)


def apply_backbone_stem(module: Any, cfg: Any) -> bool:
    """Gives ``module.backbone`` (and ``module.momentum_backbone`` when present) the stem of
    ``cfg.backbone.stem`` / ``cfg.backbone.cifar_stem_padding`` after solo-learn built them
    (fix 3). Returns whether a layer was replaced; a non-ResNet backbone with a non-default stem
    is refused (ConfigError), never ignored."""
    name = str(cfg.backbone.name)
    stem, padding = stem_settings(cfg.backbone)
    if not name.startswith("resnet"):
        check_backbone_stem(name, stem, padding)
        return False
    resolved = resolve_stem(stem, str(cfg.data.dataset))
    changed = apply_stem(module.backbone, resolved, padding)
    momentum = getattr(module, "momentum_backbone", None)
    if momentum is not None and apply_stem(momentum, resolved, padding):
        momentum.conv1.load_state_dict(module.backbone.conv1.state_dict())
        for param in momentum.conv1.parameters():
            param.requires_grad = False
        changed = True
    return changed


def apply() -> None:
    """Applies every fix; safe to call any number of times."""
    _fix_knn_metric()
    _fix_knn_unlabelled_rows()
    _register_backbones()
