"""Long-tail classification metrics from class scores.

All accuracies are percentages in [0, 100].

* ``top1 = 100 * mean_i [argmax_c s_ic == y_i]`` (``torch.argmax``: the first maximal index wins
  a tie). ``top5 = 100 * mean_i [y_i in top-5 scores of i]``, reported only when ``C >= 5``; for
  fewer classes the key is present with value ``None`` (top-5 would be trivially 100).
* per-class accuracy ``a_c = 100 * #{i: y_i = c, pred_i = c} / #{i: y_i = c}``; ``NaN`` for a
  class with no test image.
* balanced accuracy: the mean of ``a_c`` over classes with test images.
* for each grouping rule (``groups.py``) and group ``g``: ``acc_g`` = mean of ``a_c`` over the
  classes of ``g`` that have test images (class-balanced, not image-weighted); ``NaN`` when the
  group has no class or none of its classes has a test image.
* ``std`` = population standard deviation (``ddof = 0``) of the ``acc_g`` that are not ``NaN``:
  ``sqrt(mean_g (acc_g - mean_g' acc_g')^2)``; a single valid group gives 0, none gives ``NaN``.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Tuple

import numpy as np
import torch

from .groups import (
    DEFAULT_FEW_BELOW,
    DEFAULT_MANY_ABOVE,
    GROUP_NAMES,
    RULES,
    CountsLike,
    Grouping,
    as_counts,
    group_classes,
)


def _check_inputs(scores: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    scores = torch.as_tensor(scores)
    targets = torch.as_tensor(targets)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores: expected a non-empty (N, C) tensor, got shape "
                         f"{tuple(scores.shape)}")
    if targets.ndim != 1 or targets.shape[0] != scores.shape[0]:
        raise ValueError(f"targets: expected shape ({scores.shape[0]},) to match scores, got "
                         f"{tuple(targets.shape)}")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"targets: expected integer class ids, got dtype {targets.dtype}")
    targets = targets.long()
    num_classes = scores.shape[1]
    if targets.min() < 0 or targets.max() >= num_classes:
        raise ValueError(f"targets: class ids must lie in [0, {num_classes}), got range "
                         f"[{int(targets.min())}, {int(targets.max())}]")
    return scores, targets.to(scores.device)


def topk_accuracy(scores: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """Percentage of rows whose target is among the ``k`` highest scores (``k = 1`` uses argmax)."""
    scores, targets = _check_inputs(scores, targets)
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"top-k: k must lie in [1, {scores.shape[1]}], got {k}")
    if k == 1:
        hit = scores.argmax(dim=1) == targets
    else:
        hit = (scores.topk(k, dim=1).indices == targets[:, None]).any(dim=1)
    return float(hit.double().mean() * 100.0)


def per_class_accuracy(
    scores: torch.Tensor, targets: torch.Tensor
) -> Tuple[np.ndarray, np.ndarray]:
    """``(acc (C,) float64 percent with NaN for classes without test images, test counts (C,))``."""
    scores, targets = _check_inputs(scores, targets)
    num_classes = scores.shape[1]
    correct = (scores.argmax(dim=1) == targets).long()
    total = torch.bincount(targets, minlength=num_classes).cpu().numpy()
    hits = torch.bincount(targets, weights=correct.double(), minlength=num_classes).cpu().numpy()
    acc = np.full(num_classes, np.nan)
    present = total > 0
    acc[present] = 100.0 * hits[present] / total[present]
    return acc, total.astype(np.int64)


def group_accuracies(per_class_acc: np.ndarray, grouping: Grouping) -> Tuple[np.ndarray, float]:
    """``(acc_g (3,) with NaN for empty groups, population std over the non-NaN acc_g)``."""
    per_class_acc = np.asarray(per_class_acc, dtype=np.float64)
    if per_class_acc.shape != grouping.group_of_class.shape:
        raise ValueError(f"per_class_acc: expected shape {grouping.group_of_class.shape} to match "
                         f"the grouping, got {per_class_acc.shape}")
    accs = np.full(len(GROUP_NAMES), np.nan)
    for g in range(len(GROUP_NAMES)):
        vals = per_class_acc[grouping.group_of_class == g]
        vals = vals[~np.isnan(vals)]
        if vals.size:
            accs[g] = vals.mean()
    valid = accs[~np.isnan(accs)]
    std = float(np.std(valid, ddof=0)) if valid.size else float("nan")
    return accs, std


def long_tail_report(
    scores: torch.Tensor,
    targets: torch.Tensor,
    train_counts: CountsLike,
    rules: Iterable[str] = RULES,
    many_above: int = DEFAULT_MANY_ABOVE,
    few_below: int = DEFAULT_FEW_BELOW,
) -> Dict[str, Any]:
    """Every long-tail number for one set of class scores (logits, probabilities or kNN scores).

    Args:
        scores: ``(N, C)`` class scores; the prediction is the argmax.
        targets: ``(N,)`` integer class ids in ``[0, C)``.
        train_counts: ``(C,)`` per-class image counts of the long-tailed pretraining set.
        rules: grouping rules to report (``"thirds"``, ``"thresholds"``).
        many_above, few_below: the ``"thresholds"`` rule's bounds.

    Returns:
        ``{"num_classes", "num_samples", "top1", "top5" (None when C < 5), "balanced_acc",
        "per_class_acc" (list, NaN for classes without test images), "train_counts",
        "test_counts", "groups": {rule: {"group_of_class", "sizes", "test_images", "acc", "std",
        "params"}}}`` with plain Python numbers; ``sizes``, ``test_images`` and ``acc`` are
        dicts keyed by ``"many"``, ``"medium"``, ``"few"``.
    """
    scores, targets = _check_inputs(scores, targets)
    num_classes = scores.shape[1]
    counts = as_counts(train_counts)
    if counts.size != num_classes:
        raise ValueError(f"train_counts: expected {num_classes} per-class counts (one per score "
                         f"column), got {counts.size}")
    acc, test_counts = per_class_accuracy(scores, targets)
    report: Dict[str, Any] = {
        "num_classes": int(num_classes),
        "num_samples": int(targets.shape[0]),
        "top1": topk_accuracy(scores, targets, 1),
        "top5": topk_accuracy(scores, targets, 5) if num_classes >= 5 else None,
        "balanced_acc": float(np.nanmean(acc)),
        "per_class_acc": [float(a) for a in acc],
        "train_counts": [int(n) for n in counts],
        "test_counts": [int(n) for n in test_counts],
        "groups": {},
    }
    for rule in rules:
        params = {"many_above": many_above, "few_below": few_below} if rule == "thresholds" else {}
        grouping = group_classes(counts, rule, **params)
        g_acc, std = group_accuracies(acc, grouping)
        report["groups"][rule] = {
            "group_of_class": [int(g) for g in grouping.group_of_class],
            "sizes": {n: int(s) for n, s in zip(GROUP_NAMES, grouping.sizes)},
            "test_images": {
                n: int(test_counts[grouping.group_of_class == g].sum())
                for g, n in enumerate(GROUP_NAMES)
            },
            "acc": {n: float(a) for n, a in zip(GROUP_NAMES, g_acc)},
            "std": std,
            "params": dict(grouping.params),
        }
    return report


def flatten_report(report: Dict[str, Any], prefix: str = "") -> Dict[str, float]:
    """Scalar metrics of a ``long_tail_report`` as a flat dict for loggers, e.g. ``"top1"``,
    ``"thirds/many"``, ``"thirds/std"``; ``None`` values (top5 for C < 5) are left out."""
    flat: Dict[str, float] = {}
    for key in ("top1", "top5", "balanced_acc"):
        if report.get(key) is not None:
            flat[prefix + key] = float(report[key])
    for rule, info in report["groups"].items():
        for name in GROUP_NAMES:
            flat[f"{prefix}{rule}/{name}"] = float(info["acc"][name])
        flat[f"{prefix}{rule}/std"] = float(info["std"])
    return flat
