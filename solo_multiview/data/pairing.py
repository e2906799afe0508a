"""MTTV pairing: every anchor image is paired with K partner images drawn from the training set.

For the anchor ``x`` at position ``i`` of the (long-tailed) training set, ``K`` partners
``y^1..y^K`` are drawn uniformly, with replacement, from the whole training set (so a partner's
class follows the long-tailed class frequencies, and may be ``x`` itself), as in the official
code. Per pair ``k`` four views are made: ``x_n^k``, ``y_n^k`` normalised only (to tensor and
mean/std, no crop: the "invertible" views) and ``x_a^k``, ``y_a^k`` strongly augmented.

Crop order of an item (4K tensors)::

    [x_n^1..x_n^K, y_a^1..y_a^K, x_a^1..x_a^K, y_n^1..y_n^K]

so the online branch takes ``crops[:2K]`` (``z^k = f(x_n^k) + f(y_a^k)``, i.e. ``crops[k]`` and
``crops[K + k]``) and the momentum branch ``crops[2K:]`` (``z'^k = f'(x_a^k) + f'(y_n^k)``, i.e.
``crops[2K + k]`` and ``crops[3K + k]``). ``__getitem__`` returns ``(i, crops, target)`` with the
anchor's target, so the batch contract ``[indexes, crops, targets]`` holds.

Options: ``partner="none"`` uses ``y = x`` (one image, i.e. SimCLR with an EMA target);
``views="augmented_augmented"`` augments ``x_n``, ``y_n`` strongly too.

Randomness: the partners of item ``i`` come from ``np.random.default_rng([seed, epoch, rank,
worker_id, i])``, reproducible under a seed and different across epochs, ranks and data loader
workers. The epoch and rank live in a shared-memory tensor, so ``set_epoch`` reaches workers that
already exist (``persistent_workers=True``). The crops of item ``i`` are drawn on torch's CPU
generator seeded by ``(seed, epoch, i)`` (``datasets.item_seed``; the generator's state is restored
afterwards), so an item is a function of (seed, epoch, rank, worker id, index) and a resumed run
replays the data of an uninterrupted one. Unreadable images follow the base set's
``data.bad_images`` policy (``IndexedSubset.resolve``): under ``skip`` a broken anchor is replaced
by the next readable position, which the item then reports as its index, and a broken partner by
its next readable position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

from solo_multiview.data.augmentations import EvalTransform, build_transform
from solo_multiview.data.datasets import IndexedSubset, item_seed, seeded_torch_rng

PARTNERS = ("image", "none")
VIEWS = ("normalized_augmented", "augmented_augmented")

Transform = Callable[[Image.Image], torch.Tensor]


def _dist_rank() -> Optional[int]:
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return None


class MTTVPairDataset(Dataset):
    """K (anchor, partner) pairs per item of ``base``; see the module docstring for the views,
    their order and the seeding."""

    def __init__(
        self,
        base: IndexedSubset,
        strong: Transform,
        normal: Transform,
        num_pairs: int,
        partner: str = "image",
        views: str = "normalized_augmented",
        seed: int = 0,
    ) -> None:
        if isinstance(num_pairs, bool) or not isinstance(num_pairs, int) or num_pairs < 1:
            raise ValueError(f"MTTV pairing: num_pairs (K) must be an int >= 1, got {num_pairs!r}")
        if partner not in PARTNERS:
            raise ValueError(
                f"MTTV pairing: partner {partner!r} unknown; allowed: {list(PARTNERS)}"
            )
        if views not in VIEWS:
            raise ValueError(f"MTTV pairing: views {views!r} unknown; allowed: {list(VIEWS)}")
        if len(base) == 0:
            raise ValueError("MTTV pairing: the training set is empty")
        self.base = base
        self.strong = strong
        # With augmented_augmented the "normalised" slots get the strong pipeline as well.
        self.normal = strong if views == "augmented_augmented" else normal
        self.num_pairs = num_pairs
        self.partner = partner
        self.views = views
        self.seed = int(seed)
        # [epoch, rank] in shared memory: written by the main process, read inside workers.
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_()
        self._state[1] = _dist_rank() or 0

    # ------------------------------------------------------------------ passthroughs
    @property
    def targets(self) -> np.ndarray:
        return self.base.targets

    @property
    def class_counts(self) -> np.ndarray:
        return self.base.class_counts

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def epoch(self) -> int:
        return int(self._state[0])

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        """New partner draws for ``epoch``; also refreshes the rank from torch.distributed."""
        self._state[0] = int(epoch)
        rank = _dist_rank()
        if rank is not None:
            self._state[1] = rank

    # ------------------------------------------------------------------ partners
    def partner_indexes(
        self,
        index: int,
        epoch: Optional[int] = None,
        rank: Optional[int] = None,
        worker_id: Optional[int] = None,
    ) -> np.ndarray:
        """The K partner positions drawn for item ``index``; arguments left as None take the
        current epoch, rank (torch.distributed, else the stored one) and data loader worker."""
        if self.partner == "none":
            return np.full(self.num_pairs, index, dtype=np.int64)
        if epoch is None:
            epoch = self.epoch
        if rank is None:
            rank = _dist_rank()
            rank = int(self._state[1]) if rank is None else rank
        if worker_id is None:
            info = get_worker_info()
            worker_id = 0 if info is None else info.id
        rng = np.random.default_rng([self.seed, int(epoch), int(rank), int(worker_id), int(index)])
        return rng.integers(0, len(self.base), size=self.num_pairs, dtype=np.int64)

    # ------------------------------------------------------------------ items
    def __getitem__(self, index: int) -> tuple[int, list[torch.Tensor], int]:
        index = int(index)
        used, x = self.base.resolve(index)
        partners = [
            x if j == index else self.base.resolve(int(j))[1]
            for j in self.partner_indexes(index).tolist()
        ]
        with seeded_torch_rng(item_seed(self.seed, self.epoch, index)):
            x_n = [self.normal(x) for _ in partners]
            y_a = [self.strong(y) for y in partners]
            x_a = [self.strong(x) for _ in partners]
            y_n = [self.normal(y) for y in partners]
        return used, x_n + y_a + x_a + y_n, int(self.base.targets[used])


def build_pair_transforms(
    aug: Mapping[str, Any],
    dataset: str,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> tuple[Transform, Transform]:
    """(strong, normal) transforms for MTTV from one augmentation entry: the entry's pipeline,
    and the eval transform at its ``crop_size`` with the same normalisation (and the entry's
    ``squash``)."""
    strong = build_transform(aug, dataset)
    mean = aug.get("mean", None) if mean is None else mean
    std = aug.get("std", None) if std is None else std
    return strong, EvalTransform(int(aug["crop_size"]), dataset, mean, std,
                                 squash=bool(aug.get("squash", False)))
