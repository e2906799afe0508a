"""Class groups for long-tail reporting: Many / Medium / Few.

Both rules take the per-class counts of the *pretraining* (long-tailed) training set, never the
probe's training set or the test set.

``"thirds"`` (CIFAR-LT papers)
    Classes are ranked head to tail by a stable sort on (count descending, class id ascending),
    so tied counts keep class-id order. The ranking is cut with ``np.array_split`` into three
    contiguous parts: when ``C`` is not divisible by 3 the *first* groups take the extra classes
    (C = 10 gives 4 / 3 / 3, C = 11 gives 4 / 4 / 3, C = 2 gives 1 / 1 / 0). Ties that straddle a
    boundary are therefore split by class id, never moved as a block, so group sizes are always
    the ``array_split`` sizes.

``"thresholds"`` (ImageNet-LT papers)
    Many: count > ``many_above`` (100); Few: count < ``few_below`` (20); Medium: everything in
    between, i.e. ``few_below <= count <= many_above`` (20..100 inclusive). Sizes follow from the
    counts and may be zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np
import torch

GROUP_NAMES: Tuple[str, str, str] = ("many", "medium", "few")
RULES: Tuple[str, str] = ("thirds", "thresholds")
DEFAULT_MANY_ABOVE = 100
DEFAULT_FEW_BELOW = 20

CountsLike = Union[Sequence[int], np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class Grouping:
    """Result of a grouping rule.

    Attributes:
        rule: ``"thirds"`` or ``"thresholds"``.
        group_of_class: ``(C,)`` int64, ``0`` = many, ``1`` = medium, ``2`` = few
            (indices into ``GROUP_NAMES``).
        sizes: ``(3,)`` int64, number of classes in each group.
        params: the rule's parameters (thresholds; empty for ``"thirds"``).
    """

    rule: str
    group_of_class: np.ndarray
    sizes: np.ndarray
    params: Dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> Tuple[str, str, str]:
        return GROUP_NAMES

    def members(self, group: int) -> np.ndarray:
        """Class ids in group ``group`` (0 many, 1 medium, 2 few), ascending."""
        return np.flatnonzero(self.group_of_class == group)


def as_counts(train_counts: CountsLike, name: str = "train_counts") -> np.ndarray:
    """``train_counts`` as a 1-D int64 array of non-negative integers (ValueError otherwise)."""
    if isinstance(train_counts, torch.Tensor):
        train_counts = train_counts.detach().cpu().numpy()
    arr = np.asarray(train_counts)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D sequence of per-class counts, "
                         f"got shape {arr.shape}")
    integral = arr.dtype.kind in "iu" or (
        arr.dtype.kind == "f" and bool(np.all(np.isfinite(arr) & (arr == np.round(arr))))
    )
    if not integral:
        raise ValueError(f"{name}: per-class counts must be integers, got {arr.tolist()[:10]}")
    arr = arr.astype(np.int64)
    if (arr < 0).any():
        raise ValueError(f"{name}: per-class counts must be >= 0, got min {arr.min()}")
    return arr


def frequency_order(train_counts: CountsLike) -> np.ndarray:
    """Class ids ranked head to tail: count descending, ties by class id ascending (stable)."""
    counts = as_counts(train_counts)
    return np.lexsort((np.arange(counts.size), -counts))


def thirds_groups(train_counts: CountsLike) -> Grouping:
    """Head / middle / tail third of the frequency ranking (see module docstring)."""
    counts = as_counts(train_counts)
    order = frequency_order(counts)
    group_of_class = np.empty(counts.size, dtype=np.int64)
    parts = np.array_split(order, 3)
    for g, members in enumerate(parts):
        group_of_class[members] = g
    sizes = np.array([len(p) for p in parts], dtype=np.int64)
    return Grouping("thirds", group_of_class, sizes, {})


def threshold_groups(
    train_counts: CountsLike,
    many_above: int = DEFAULT_MANY_ABOVE,
    few_below: int = DEFAULT_FEW_BELOW,
) -> Grouping:
    """Many: ``n > many_above``; Medium: ``few_below <= n <= many_above``; Few:
    ``n < few_below``."""
    if few_below > many_above + 1:
        raise ValueError(f"thresholds: need few_below <= many_above + 1 so that the groups do not "
                         f"overlap, got few_below={few_below}, many_above={many_above}")
    counts = as_counts(train_counts)
    group_of_class = np.full(counts.size, 1, dtype=np.int64)
    group_of_class[counts > many_above] = 0
    group_of_class[counts < few_below] = 2
    sizes = np.bincount(group_of_class, minlength=3).astype(np.int64)
    return Grouping("thresholds", group_of_class, sizes,
                    {"many_above": int(many_above), "few_below": int(few_below)})


def group_classes(train_counts: CountsLike, rule: str = "thirds", **params: Any) -> Grouping:
    """Dispatch on ``rule`` (``"thirds"`` or ``"thresholds"``); ``params`` go to the rule."""
    if rule == "thirds":
        if params:
            raise ValueError(f"rule 'thirds' takes no parameters, got {sorted(params)}")
        return thirds_groups(train_counts)
    if rule == "thresholds":
        return threshold_groups(train_counts, **params)
    raise ValueError(f"grouping rule: unknown rule {rule!r}; choose one of {list(RULES)}")
