"""An in-memory pretraining loader whose K crops are made on the device, batch by batch.

:class:`DeviceBatchLoader` holds the training set as one uint8 tensor ``(N, 3, H, W)`` resident
on a device (CPU or CUDA), with its targets and the true dataset index of every row, and yields
the repo's batch contract ``[indexes, crops, targets]``:

- ``indexes``: int64 (B,), the true dataset indexes of the batch's anchors (``indexes[row]``);
- ``crops``: list of float32 ``(B, 3, s, s)`` tensors, normalised: for each schema entry its
  ``num_crops`` crops, in the list's order (large crops first, as the schema requires); in
  ``pairs`` mode ``[x_n^1..x_n^K, y_a^1..y_a^K, x_a^1..x_a^K, y_n^1..y_n^K]`` (``data/pairing.py``);
- ``targets``: int64 (B,), the anchors' targets.

All three live on the images' device.

Order: epoch ``e`` shuffles the rows with ``torch.randperm(N)`` on a CPU generator seeded
``seed + e`` (the order of ``DistributedSampler(shuffle=True, seed=seed)``, and of the torchvision
path's ``EpochSampler`` on one rank), cut to ``W * floor(N / W)`` rows; rank ``r`` of ``W`` takes
positions ``r, r + W, ...`` (``DistributedSampler(drop_last=True)``), so shards are disjoint, and
every rank yields ``floor(floor(N / W) / B)`` full batches (a DataLoader's ``drop_last=True``).

Randomness of batch ``b`` of epoch ``e`` on rank ``r``: ``torch.Generator``\\ s on the device,
seeded from ``SeedSequence([seed, e, r, b, stream])``: stream 0 draws the crops, stream 1 the
partners. A run is reproducible, crops change every epoch and differ across ranks and batches,
and the partners of a batch can be recomputed (:meth:`DeviceBatchLoader.partner_rows`) without
making crops. The same seeds give different crops on CPU and CUDA (different generator
algorithms).

Pairs mode (MTTV / MIMV): for every anchor ``x``, ``K`` partner rows ``y`` drawn uniformly with
replacement from the whole stored set (so their classes follow its long-tailed frequencies),
``x_n``/``y_n`` normalised only (no crop: to float, mean/std; resized and centre-cropped only when
the images are not ``crop_size`` square) and ``x_a``/``y_a`` strongly augmented with the schema's
first entry. ``partner="none"``: ``y = x``; ``views="augmented_augmented"``: ``x_n``, ``y_n``
strongly augmented too. The K ``x_n`` crops of a batch are one tensor listed K times (they are
equal by definition); treat crops as read-only.

Epochs: ``iter()`` yields one epoch and then advances the epoch by itself unless
:meth:`set_epoch` (also reachable as ``loader.sampler.set_epoch``, which Lightning calls) chose
another one meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torchvision
from torchvision.io import ImageReadMode
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from solo_multiview.data.augmentations import check_augmentation_list
from solo_multiview.data.batched.augment import BatchedAugment, normalized_view
from solo_multiview.data.dali.pairing import PairingSpec
from solo_multiview.data.dali.sampling import distributed_shard

MODES = ("multicrop", "pairs")
JPEG_SUFFIXES = (".jpg", ".jpeg")
Batch = list  # [indexes (B,), crops (list of B x 3 x s x s), targets (B,)]


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers by numpy's SeedSequence (nearby tuples such as
    (seed, epoch) and (seed, epoch + 1) give unrelated streams, unlike ``seed + epoch``)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _long_tensor(values: Union[torch.Tensor, Sequence[int], np.ndarray],
                 device: torch.device) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.to(device=device, dtype=torch.int64)
    return torch.as_tensor(np.asarray(values), dtype=torch.int64).to(device)


class ShardedEpochOrder:
    """Rows of each epoch for each rank, as ``DistributedSampler(shuffle=True, drop_last=True,
    seed=seed)`` orders them (module docstring); ``set_epoch`` picks the epoch the next pass
    uses (Lightning calls ``loader.sampler.set_epoch``)."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = int(size)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def shard(self, epoch: int, rank: int, world_size: int) -> torch.Tensor:
        """This rank's ``floor(N / W)`` rows of ``epoch``, in order (CPU int64)."""
        generator = torch.Generator()
        generator.manual_seed(self.seed + int(epoch))
        order = torch.randperm(self.size, generator=generator)
        per_rank = self.size // world_size
        return order[: per_rank * world_size][rank::world_size]


class DeviceBatchLoader:
    """Iterable of ``[indexes, crops, targets]`` batches made on the images' device.

    ``images``: uint8 ``(N, 3, H, W)`` (moved to ``device`` when given); ``targets``: N labels;
    ``indexes``: the true dataset index of each row (default ``0..N-1``, e.g. the long-tailed
    selection's positions); ``augmentations``: the schema list (``cfg.augmentations``; pairs
    mode uses its first entry); ``dataset``: picks the default mean/std. ``rank`` /
    ``world_size`` left as None come from torch.distributed whenever an epoch starts.
    ``num_workers`` (CPU only): batches are made by that many single-threaded worker processes,
    each a whole batch at a time (as DALI's CPU path runs one single-threaded pipeline per
    thread); 0 makes them in this process with torch's intra-op threads. On CUDA the batch ops
    are asynchronous kernels and need no workers."""

    def __init__(
        self,
        images: torch.Tensor,
        targets: Union[torch.Tensor, Sequence[int], np.ndarray],
        augmentations: Sequence[Mapping[str, Any]],
        dataset: str,
        batch_size: int,
        *,
        indexes: Optional[Union[torch.Tensor, Sequence[int], np.ndarray]] = None,
        seed: int = 0,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        mode: str = "multicrop",
        num_pairs: int = 1,
        partner: str = "image",
        views: str = "normalized_augmented",
        device: Optional[Union[str, torch.device]] = None,
        num_workers: int = 0,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"DeviceBatchLoader: images must be uint8 (N, 3, H, W), got "
                             f"{images.dtype} {tuple(images.shape)}")
        if mode not in MODES:
            raise ValueError(f"DeviceBatchLoader: mode {mode!r} unknown; allowed: {list(MODES)}")
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise ValueError(f"optimizer.batch_size must be an int >= 1, got {batch_size!r}")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if world_size is not None and not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank must lie in [0, world_size), got {rank}/{world_size}")
        device = images.device if device is None else torch.device(device)
        if int(num_workers) < 0 or (int(num_workers) > 0 and device.type != "cpu"):
            raise ValueError(f"DeviceBatchLoader: num_workers must be >= 0, and 0 unless the "
                             f"images live on the CPU, got {num_workers} on {device}")
        self.num_workers = int(num_workers)
        self.images = images.to(device)
        size = self.images.shape[0]
        self.targets = _long_tensor(targets, device)
        self.indexes = _long_tensor(torch.arange(size) if indexes is None else indexes, device)
        if self.targets.shape != (size,) or self.indexes.shape != (size,):
            raise ValueError(f"DeviceBatchLoader: {size} images need {size} targets and indexes, "
                             f"got {tuple(self.targets.shape)} and {tuple(self.indexes.shape)}")
        check_augmentation_list(augmentations)
        self.mode = mode
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self._fixed_shard = None if rank is None else (int(rank), int(world_size))
        self.sampler = ShardedEpochOrder(size, self.seed)
        if mode == "pairs":
            self.pairing: Optional[PairingSpec] = PairingSpec(num_pairs, partner, views, seed)
            self.augments = [BatchedAugment(augmentations[0], dataset)]
        else:
            self.pairing = None
            self.augments = [BatchedAugment(entry, dataset, f"augmentations[{i}]")
                             for i, entry in enumerate(augmentations)]
        self.num_crops = ([a.spec.num_crops for a in self.augments] if self.pairing is None
                          else [4 * self.pairing.num_pairs])

    # ------------------------------------------------------------------ epochs and shards
    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next ``iter()`` yields."""
        self.sampler.set_epoch(epoch)

    def shard(self) -> tuple[int, int]:
        """(rank, world size): the fixed ones, else torch.distributed's (or (0, 1))."""
        return self._fixed_shard if self._fixed_shard is not None else distributed_shard()

    def batches_per_epoch(self, world_size: Optional[int] = None) -> int:
        world_size = self.shard()[1] if world_size is None else int(world_size)
        per_rank = self.sampler.size // world_size
        if per_rank < self.batch_size:
            raise ValueError(
                f"optimizer.batch_size: {self.batch_size} is larger than a rank's share of the "
                f"training set ({self.sampler.size} images over {world_size} rank(s): "
                f"{per_rank} each)")
        return per_rank // self.batch_size

    def __len__(self) -> int:
        return self.batches_per_epoch()

    def epoch_rows(self, epoch: int, rank: int, world_size: int) -> torch.Tensor:
        """The stored rows this rank reads in ``epoch``, batch after batch (on the device)."""
        used = self.batches_per_epoch(world_size) * self.batch_size
        return self.sampler.shard(epoch, rank, world_size)[:used].to(self.device)

    # ------------------------------------------------------------------ randomness
    def generator(self, epoch: int, rank: int, batch: int, stream: int = 0) -> torch.Generator:
        """The device generator of (epoch, rank, batch); stream 0: crops, 1: partners."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derived_seed(self.seed, epoch, rank, batch, stream))
        return generator

    def partner_rows(self, anchor_rows: torch.Tensor, epoch: int, rank: int,
                     batch: int) -> torch.Tensor:
        """(B, K) partner rows of a batch's anchors: uniform with replacement over all stored
        rows (``partner="none"``: the anchors themselves)."""
        if self.pairing is None:
            raise ValueError("partner_rows: the loader is not in pairs mode")
        k = self.pairing.num_pairs
        if not self.pairing.reads_partners:
            return anchor_rows[:, None].expand(-1, k)
        generator = self.generator(epoch, rank, batch, stream=1)
        return torch.randint(0, self.sampler.size, (anchor_rows.shape[0], k),
                             generator=generator, device=self.device)

    # ------------------------------------------------------------------ batches
    def make_batch(self, rows: torch.Tensor, epoch: int, rank: int, batch: int) -> Batch:
        """The batch of stored ``rows`` as batch number ``batch`` of ``epoch`` on ``rank``."""
        rows = rows.to(self.device)
        anchors = self.images.index_select(0, rows)
        generator = self.generator(epoch, rank, batch)
        if self.pairing is None:
            crops: list[torch.Tensor] = []
            for augment in self.augments:
                crops += augment(anchors, generator, copies=augment.spec.num_crops).split(
                    rows.shape[0])
        else:
            crops = self._pair_crops(rows, anchors, generator, epoch, rank, batch)
        return [self.indexes[rows], crops, self.targets[rows]]

    def _pair_crops(self, rows: torch.Tensor, anchors: torch.Tensor,
                    generator: torch.Generator, epoch: int, rank: int,
                    batch: int) -> list[torch.Tensor]:
        assert self.pairing is not None
        k, b = self.pairing.num_pairs, rows.shape[0]
        strong = self.augments[0]
        partners = self.partner_rows(rows, epoch, rank, batch)
        # Pair-major: rows [j B, (j + 1) B) of the partner batch are the j-th partners.
        partner_images = self.images.index_select(0, partners.t().reshape(-1))
        if self.pairing.views == "augmented_augmented":
            x_n = strong(anchors, generator, copies=k).split(b)
        else:
            x_n = [normalized_view(anchors, strong.crop_size, strong.mean, strong.std)] * k
        y_a = strong(partner_images, generator).split(b)
        x_a = strong(anchors, generator, copies=k).split(b)
        if self.pairing.views == "augmented_augmented":
            y_n = strong(partner_images, generator).split(b)
        else:
            y_n = normalized_view(partner_images, strong.crop_size, strong.mean,
                                  strong.std).split(b)
        return [*x_n, *y_a, *x_a, *y_n]

    def __iter__(self) -> Iterator[Batch]:
        rank, world_size = self.shard()
        return self._epoch(self.sampler.epoch, rank, world_size)

    def _epoch(self, epoch: int, rank: int, world_size: int) -> Iterator[Batch]:
        batches = _EpochBatches(self, epoch, rank, world_size)
        if self.num_workers == 0:
            yield from (batches[b] for b in range(len(batches)))
        else:
            # One whole batch per worker process, each single-threaded (the DataLoader sets
            # torch's threads to 1 in workers): on a CPU shared with other jobs this scales far
            # better than torch's intra-op threads, whose workers spin at every op's barrier.
            yield from torch.utils.data.DataLoader(batches, batch_size=None,
                                                   num_workers=self.num_workers)
        if self.sampler.epoch == epoch:
            self.sampler.set_epoch(epoch + 1)

    def describe(self) -> str:
        """One line: device, mode, sizes."""
        return (f"device batch loader ({self.device}, {self.mode}): {self.sampler.size} images "
                f"{tuple(self.images.shape[1:])}, batch {self.batch_size}, "
                f"{sum(self.num_crops)} crops, {len(self)} batches/epoch")


class _EpochBatches(torch.utils.data.Dataset):
    """Batch ``b`` of one epoch on one rank as item ``b`` (what CPU worker processes compute;
    the batch is a function of (seed, epoch, rank, b) only, so workers need no coordination)."""

    def __init__(self, loader: DeviceBatchLoader, epoch: int, rank: int,
                 world_size: int) -> None:
        self.loader = loader
        self.epoch, self.rank = int(epoch), int(rank)
        self.rows = loader.epoch_rows(epoch, rank, world_size)

    def __len__(self) -> int:
        return self.rows.shape[0] // self.loader.batch_size

    def __getitem__(self, batch: int) -> Batch:
        size = self.loader.batch_size
        return self.loader.make_batch(self.rows[batch * size:(batch + 1) * size], self.epoch,
                                      self.rank, batch)


# ---------------------------------------------------------------------------------- decoding
def list_image_folder(root: Union[str, Path]) -> tuple[list[Path], list[int]]:
    """(files, labels) of an ImageFolder tree ``root/<class>/<image>``: classes sorted, label =
    rank of the class, files sorted within a class (the torchvision ImageFolder order)."""
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"no class folders under '{root}' (expected <root>/<class>/)")
    files, labels = [], []
    for label, name in enumerate(classes):
        for image in sorted((root / name).iterdir()):
            if image.suffix.lower() in (*JPEG_SUFFIXES, ".png"):
                files.append(image)
                labels.append(label)
    return files, labels


def _fit(image: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    if size is None or image.shape[-2:] == (size, size):
        return image
    image = TF.resize(image, [size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(image, [size, size])


def decode_jpeg_files(
    paths: Sequence[Union[str, Path]],
    size: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
    chunk_size: int = 512,
) -> torch.Tensor:
    """One uint8 ``(N, 3, H, W)`` tensor on ``device`` from image files, for data sets that fit
    in memory: the bytes of ``chunk_size`` files at a time are decoded by one batched
    ``torchvision.io.decode_jpeg`` call (nvJPEG on CUDA; other formats by ``decode_image`` on the
    CPU). ``size``: images not ``size`` square get their short side resized to ``size``
    (bilinear, antialiased) and are centre-cropped; None requires all images to share a shape."""
    device = torch.device(device)
    out: list[torch.Tensor] = []
    for start in range(0, len(paths), chunk_size):
        chunk = [Path(p) for p in paths[start:start + chunk_size]]
        data = [torchvision.io.read_file(str(p)) for p in chunk]
        jpeg = [i for i, p in enumerate(chunk) if p.suffix.lower() in JPEG_SUFFIXES]
        decoded: list[Optional[torch.Tensor]] = [None] * len(chunk)
        if jpeg:
            for i, image in zip(jpeg, torchvision.io.decode_jpeg(
                    [data[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)):
                decoded[i] = image
        for i in range(len(chunk)):
            if decoded[i] is None:
                decoded[i] = torchvision.io.decode_image(data[i], mode=ImageReadMode.RGB).to(
                    device)
        fitted = [_fit(image, size) for image in decoded]  # type: ignore[arg-type]
        shapes = {tuple(image.shape) for image in fitted}
        if len(shapes) > 1 or (out and tuple(out[0].shape[1:]) not in shapes):
            raise ValueError(f"decode_jpeg_files: images of different shapes ({sorted(shapes)}"
                             f"{'' if not out else ', ' + str(tuple(out[0].shape[1:]))}); "
                             "pass size= to resize them to one")
        out.append(torch.stack(fitted))
    if not out:
        raise ValueError("decode_jpeg_files: no files given")
    return torch.cat(out)
