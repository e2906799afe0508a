"""Compatibility fixes for solo-learn (GitHub vturrisi/solo-learn, last release early 2024) on
current libraries. Every fix lives here, is idempotent, and is tested in tests/test_hosts.py.

1. ``solo.utils.knn.WeightedKNNClassifier`` passes ``compute_on_step`` to torchmetrics'
   ``Metric.__init__``; torchmetrics 1.x removed that argument, so ``knn_eval.enabled: true``
   crashes. Fix: a shim base between the classifier and ``Metric`` that drops the argument.
2. solo-learn's backbone table (``BaseMethod._BACKBONES``) lacks our small ``convnet``; it is
   added so the solo host, solo-learn's ``main_linear.py`` and ``main_knn.py`` can build it.
"""

from __future__ import annotations

from typing import Any

from torchmetrics import Metric

from solo_multiview.hosts.backbones import BACKBONES


class _MetricWithoutComputeOnStep(Metric):
    """``Metric`` that accepts and ignores the ``compute_on_step`` argument of torchmetrics<0.8."""

    def __init__(self, *args: Any, compute_on_step: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)


def _fix_knn_metric() -> None:
    from solo.utils.knn import WeightedKNNClassifier

    if WeightedKNNClassifier.__bases__ != (_MetricWithoutComputeOnStep,):
        WeightedKNNClassifier.__bases__ = (_MetricWithoutComputeOnStep,)


def _register_backbones() -> None:
    from solo.methods.base import BaseMethod

    for name, builder in BACKBONES.items():
        BaseMethod._BACKBONES.setdefault(name, builder)


def apply() -> None:
    """Applies every fix; safe to call any number of times."""
    _fix_knn_metric()
    _register_backbones()
