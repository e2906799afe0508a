"""Epochs, shuffling and per-rank shards of the DALI loader (pure numpy, no DALI).

For a training set of ``N`` images (positions ``0..N-1`` of the long-tailed set), ``S`` ranks and
batch size ``B``:

- shard bounds are DALI's reader's: rank ``r`` owns ``[floor(r N / S), floor((r + 1) N / S))`` of
  the epoch's order, so the shards are disjoint and together cover the epoch;
- every rank runs ``floor(floor(N / S) / B)`` full batches per epoch (the smallest shard's count;
  equal counts keep DDP ranks in step; the remainder is dropped, as ``drop_last`` does);
- the epoch's order, for the external-source path, is ``default_rng([seed, epoch])
  .permutation(N)``: the same on every rank, new every epoch. (The file reader shuffles inside
  DALI instead, with the same shard bounds; see ``pipeline.py``.)

With P DALI pipelines per rank (the loader's parallel "workers"), batch ``q`` of an epoch comes
from pipeline ``q mod P`` (:func:`pipeline_batches`); file readers then split the rank's shard
into P parts, so up to P - 1 more partial batches per epoch are dropped.

``set_epoch`` follows Lightning's convention (it calls ``loader.sampler.set_epoch(epoch)`` before
every epoch, also after a resume); without it the loader moves to the next epoch by itself.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch.distributed as dist


def distributed_shard() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when initialised, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return 0, 1


def shard_bounds(size: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """DALI's shard ``[floor(shard_id * size / num_shards), floor((shard_id + 1) * size /
    num_shards))``."""
    return (shard_id * size) // num_shards, ((shard_id + 1) * size) // num_shards


def pipeline_batches(batches: int, pipeline: int, pipelines: int) -> int:
    """How many of an epoch's ``batches`` pipeline ``pipeline`` of ``pipelines`` produces
    (batches ``pipeline``, ``pipeline + P``, ...)."""
    return len(range(pipeline, batches, pipelines))


class EpochSampler:
    """Which positions a rank reads in each batch of each epoch (see the module docstring).

    ``shard_id`` / ``num_shards`` fix the shard (e.g. to simulate ranks); left as None they come
    from torch.distributed whenever they are asked for, so a loader built before DDP starts
    still shards correctly once it does.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int = 0,
        shard_id: Optional[int] = None,
        num_shards: Optional[int] = None,
    ) -> None:
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise ValueError(f"optimizer.batch_size must be an int >= 1, got {batch_size!r}")
        if (shard_id is None) != (num_shards is None):
            raise ValueError("give both shard_id and num_shards, or neither")
        if num_shards is not None and not 0 <= int(shard_id) < int(num_shards):
            raise ValueError(f"shard_id must lie in [0, num_shards), got {shard_id}/{num_shards}")
        self.size = int(size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self._fixed = None if num_shards is None else (int(shard_id), int(num_shards))
        self._epoch = 0
        self._cache: tuple[tuple[int, int, int], np.ndarray] = ((-1, -1, -1), np.empty(0))

    # ------------------------------------------------------------------ epochs
    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """The epoch that the loader's next ``iter()`` produces."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch = int(epoch)

    # ------------------------------------------------------------------ shards
    def shard(self) -> tuple[int, int]:
        """(shard_id, num_shards): the fixed ones, else torch.distributed's rank and world."""
        return self._fixed if self._fixed is not None else distributed_shard()

    def batches_per_epoch(self, num_shards: Optional[int] = None, readers: int = 1) -> int:
        """``floor(floor(N / S) / B)`` batches per rank and epoch; with ``readers`` = P file
        readers per rank, each reading its own part of the rank's shard (DALI shard ``r P + j``
        of ``S P``), ``P floor(floor(N / (S P)) / B)``. ValueError when that is 0."""
        num_shards = self.shard()[1] if num_shards is None else int(num_shards)
        per_part = self.size // (num_shards * readers)
        if per_part < self.batch_size:
            raise ValueError(
                f"optimizer.batch_size: {self.batch_size} is larger than a rank's share of the "
                f"training set ({self.size} images after the long-tail selection over "
                f"{num_shards} rank(s)" + (f" and {readers} DALI pipelines" if readers > 1
                                           else "") + f": {per_part} each)"
            )
        return readers * (per_part // self.batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch()

    def epoch_order(self, epoch: int, shard_id: int, num_shards: int) -> np.ndarray:
        """The positions this shard reads in ``epoch``, in order (``batches * B`` of them)."""
        key = (int(epoch), int(shard_id), int(num_shards))
        if self._cache[0] != key:
            permutation = np.random.default_rng([self.seed, int(epoch)]).permutation(self.size)
            start, stop = shard_bounds(self.size, shard_id, num_shards)
            used = self.batches_per_epoch(num_shards) * self.batch_size
            self._cache = (key, permutation[start:stop][:used].astype(np.int64))
        return self._cache[1]

    def batch_positions(self, epoch: int, batch: int, shard_id: int, num_shards: int) -> np.ndarray:
        """Positions of batch ``batch`` (0-based) of ``epoch`` on this shard."""
        order = self.epoch_order(epoch, shard_id, num_shards)
        return order[batch * self.batch_size:(batch + 1) * self.batch_size]
