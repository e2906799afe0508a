"""MTTV pairing for the DALI path: partner draws and crop order of ``data/pairing.py``.

For the anchor at position ``i`` of the long-tailed set, the ``K`` partners are drawn uniformly,
with replacement, from the whole set by ``np.random.default_rng([seed, epoch, rank, 0, i])``:
the torchvision pairing's rule with data loader worker 0 (DALI has no loader workers), so both
paths pair an anchor with the same partners for the same seed, epoch and rank. Crop order::

    [x_n^1..x_n^K, y_a^1..y_a^K, x_a^1..x_a^K, y_n^1..y_n^K]

``partner="none"`` uses ``y = x``; ``views="augmented_augmented"`` augments ``x_n``, ``y_n`` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from solo_multiview.data.pairing import PARTNERS, VIEWS
from solo_multiview.data.views import ViewSpec

T = TypeVar("T")


@dataclass(frozen=True)
class PairingSpec:
    """``num_pairs`` = K partners per anchor; ``partner`` in PARTNERS; ``views`` in VIEWS."""

    num_pairs: int
    partner: str = "image"
    views: str = "normalized_augmented"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.num_pairs, bool) or not isinstance(self.num_pairs, int) \
                or self.num_pairs < 1:
            raise ValueError(f"MTTV pairing: num_pairs (K) must be an int >= 1, "
                             f"got {self.num_pairs!r}")
        if self.partner not in PARTNERS:
            raise ValueError(f"method_kwargs.partner: unknown value {self.partner!r}; "
                             f"choose one of {list(PARTNERS)}")
        if self.views not in VIEWS:
            raise ValueError(f"method_kwargs.views: unknown value {self.views!r}; "
                             f"choose one of {list(VIEWS)}")

    @property
    def reads_partners(self) -> bool:
        """True when partner images other than the anchor are read."""
        return self.partner == "image"


def draw_partners(spec: PairingSpec, index: int, epoch: int, rank: int, size: int) -> np.ndarray:
    """The K partner positions of anchor ``index`` (see the module docstring)."""
    if spec.partner == "none":
        return np.full(spec.num_pairs, index, dtype=np.int64)
    rng = np.random.default_rng([spec.seed, int(epoch), int(rank), 0, int(index)])
    return rng.integers(0, size, size=spec.num_pairs, dtype=np.int64)


def draw_partner_batch(
    spec: PairingSpec, indexes: np.ndarray, epoch: int, rank: int, size: int
) -> np.ndarray:
    """``B x K`` partner positions of a batch of anchors."""
    return np.stack([draw_partners(spec, int(i), epoch, rank, size) for i in indexes])


def mttv_order(x_n: Sequence[T], y_a: Sequence[T], x_a: Sequence[T], y_n: Sequence[T]) -> list[T]:
    """The crop order of an MTTV item: ``x_n + y_a + x_a + y_n`` (each of length K)."""
    lengths = {len(x_n), len(y_a), len(x_a), len(y_n)}
    if len(lengths) != 1:
        raise ValueError(f"MTTV crop order: the four view lists need K each, got {lengths}")
    return [*x_n, *y_a, *x_a, *y_n]


def pairing_from_views(views: ViewSpec, seed: int) -> PairingSpec:
    """The pairing of a ``pairs`` view spec, as the torchvision path builds it
    (``data/loaders.py``)."""
    return PairingSpec(num_pairs=views.num_views, partner=views.partner, views=views.roles,
                       seed=int(seed))
