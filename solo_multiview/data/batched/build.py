"""``data.format: batched``: the config's training set as a :class:`DeviceBatchLoader`.

:func:`build_batched_pretrain_loader` reads what the torchvision path reads (``data.*``,
``augmentations``, ``optimizer.batch_size``, ``seed``, the method's view spec) and the
``batched`` node (:class:`BatchedConfig`), and returns a :class:`BatchedPretrainLoader`:

- the training set is the torchvision path's: the train source of ``data.dataset`` under the
  long-tail selection (``datasets.pretrain_indexes``), and ``indexes`` in a batch are positions
  in that long-tailed set (what ``IndexedSubset`` yields), the same on every rank;
- CIFAR and digits are in memory already (``data/sources.py``) and are copied once, as uint8
  ``(N, 3, H, W)``; an ``image_list`` is decoded once by :func:`decode_jpeg_files` (nvJPEG when
  the device is CUDA), after a check that its decoded size fits ``batched.max_gib`` (a larger
  list is refused before anything is decoded);
- the images move to their device when the first epoch starts (inside ``Trainer.fit``, where the
  training process has its GPU), so a loader built before DDP starts lands on the right device;
- order and randomness are :class:`DeviceBatchLoader`'s: epoch ``e`` shuffles with
  ``randperm(N)`` seeded ``seed + e`` (one rank: the torchvision loader's order, batch for
  batch), rank ``r`` of ``W`` (torch.distributed when initialised, read at every epoch start)
  takes every ``W``-th position, and the crops of a batch are seeded by
  ``(seed, epoch, rank, batch)``;
- the epoch: Lightning calls ``loader.sampler.set_epoch(epoch)`` before every epoch (the DALI
  loader gets its epoch the same way), ``prepare_pretrain`` sets it before a resume, and an
  epoch iterated to its end moves on by itself;
- ``data.bad_images: skip`` is refused: the set is decoded up front, so an unreadable file stops
  the run when it is decoded (use ``data.format: image_folder`` to skip such files).

The batch contract is the torchvision loader's: ``[indexes (B,) int64, crops (list of float32
(B, 3, s, s), the view spec's order), targets (B,) int64]``, all on the images' device.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from solo_multiview.config.schema import setting
from solo_multiview.data.augmentations import check_augmentation_list
from solo_multiview.data.batched.augment import BatchedAugment
from solo_multiview.data.batched.loader import (
    Batch,
    DeviceBatchLoader,
    ShardedEpochOrder,
    decode_jpeg_files,
)
from solo_multiview.data.dali.sampling import distributed_shard
from solo_multiview.data.datasets import bad_image_policy, build_train_source, pretrain_indexes
from solo_multiview.data.sources import ArraySource, ImageListSource, ImageSource
from solo_multiview.data.views import ViewSpec

DEVICES = ("auto", "cpu", "cuda")
GIB = 1024 ** 3


@dataclass
class BatchedConfig:
    """``batched.*``, used with ``data.format: batched``."""

    device: str = setting("auto", "where the training set lives and the crops are made (auto: "
                          "cuda when CUDA is available and accelerator is not cpu)",
                          choices=DEVICES)
    num_workers: Optional[int] = setting(None, "CPU only: worker processes making whole "
                                         "batches (null: data.num_workers on the CPU, 0 on "
                                         "CUDA)", minimum=0)
    image_size: Optional[int] = setting(None, "image_list: decode every image to this square "
                                        "size (short side resized, centre crop; null: all "
                                        "images must share one size)", minimum=1)
    max_gib: float = setting(8.0, "largest decoded training set held resident (GiB); a larger "
                             "image_list is refused", above=0)


def _node(cfg: Any, key: str) -> Mapping[str, Any]:
    node = cfg.get(key, None)
    return {} if node is None else node


def device_kind(choice: Optional[str], accelerator: Optional[str] = None) -> str:
    """``cpu`` or ``cuda`` for ``batched.device``: ``cpu``, ``cuda`` (an error without CUDA) or
    ``auto`` (CUDA when available and the trainer's ``accelerator`` is not ``cpu``). Touches
    CUDA no further than ``torch.cuda.is_available()``."""
    choice = "auto" if choice is None else str(choice)
    if choice not in DEVICES:
        raise ValueError(f"batched.device: unknown value {choice!r}; choose one of "
                         f"{list(DEVICES)}")
    cuda = torch.cuda.is_available()
    if choice == "cuda" and not cuda:
        raise ValueError("batched.device: 'cuda' but torch.cuda.is_available() is False (no "
                         "CUDA device or a CPU-only torch); use batched.device=cpu (or auto)")
    if choice == "cpu" or not cuda or (choice == "auto" and str(accelerator) == "cpu"):
        return "cpu"
    return "cuda"


def resolve_device(choice: Optional[str], accelerator: Optional[str] = None) -> torch.device:
    """The device of ``batched.device`` (:func:`device_kind`); CUDA means the current CUDA
    device, so call this where the training process has picked its GPU (inside ``fit``)."""
    if device_kind(choice, accelerator) == "cpu":
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def array_images(source: ArraySource, positions: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` of an in-memory source's ``positions`` (one copy)."""
    selected = np.ascontiguousarray(source.images[positions])
    return torch.from_numpy(selected).permute(0, 3, 1, 2).contiguous()


def image_list_shape(paths: Sequence[Path], image_size: Optional[int]) -> tuple[int, int]:
    """(H, W) every decoded image will have: ``image_size`` square, or the one size all files
    share (read from their headers); ValueError naming two files of different sizes."""
    if image_size is not None:
        return int(image_size), int(image_size)
    first: Optional[tuple[int, int]] = None
    for path in paths:
        with Image.open(path) as image:
            width, height = image.size
        if first is None:
            first, first_path = (height, width), path
        elif (height, width) != first:
            raise ValueError(
                f"data.format=batched: the image_list holds images of different sizes ('"
                f"{first_path}' is {first[1]}x{first[0]}, '{path}' is {width}x{height}); set "
                "batched.image_size to decode every image to one square size")
    if first is None:
        raise ValueError("data.format=batched: the image_list selects no images")
    return first


class BatchedPretrainLoader:
    """The training loader of ``data.format: batched`` (module docstring).

    ``images`` (uint8 ``(N, 3, H, W)`` on the CPU) or ``files`` (an image list, decoded on the
    device when the first epoch starts) hold the long-tailed set, row ``i`` being position ``i``
    of it; ``targets`` its labels. The other arguments are :class:`DeviceBatchLoader`'s;
    ``device`` is ``batched.device`` (resolved at the first epoch), ``shard`` fixes (rank,
    world size) (tests; default torch.distributed)."""

    def __init__(
        self,
        targets: np.ndarray,
        num_classes: int,
        augmentations: Sequence[Mapping[str, Any]],
        dataset: str,
        batch_size: int,
        views: ViewSpec,
        *,
        images: Optional[torch.Tensor] = None,
        files: Optional[Sequence[Path]] = None,
        image_size: Optional[int] = None,
        seed: int = 0,
        device: str = "auto",
        accelerator: Optional[str] = None,
        num_workers: int = 0,
        max_gib: Optional[float] = None,
        shard: Optional[tuple[int, int]] = None,
    ) -> None:
        if (images is None) == (files is None):
            raise ValueError("BatchedPretrainLoader: give images or files, not both")
        self.targets = np.asarray(targets, dtype=np.int64)
        self.num_classes = int(num_classes)
        self.class_counts = np.bincount(self.targets, minlength=self.num_classes)
        self.views = views
        self.mode = "pairs" if views.scheme == "pairs" else "multicrop"
        self.augmentations = [dict(entry) for entry in augmentations]
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.device_choice = device
        self.accelerator = accelerator
        self.num_workers = int(num_workers)
        self.images = images
        self.files = None if files is None else [Path(p) for p in files]
        self.image_size = image_size
        self.max_gib = None if max_gib is None else float(max_gib)
        self.shard = shard
        self.sampler = ShardedEpochOrder(len(self.targets), self.seed)
        self._loader: Optional[DeviceBatchLoader] = None
        self._shape: Optional[tuple[int, int, int]] = None
        self._check()

    # ------------------------------------------------------------------ checks
    def _check(self) -> None:
        """Everything that can be refused before training: the schema entries, the view count,
        the batch size against a rank's share, the device and the decoded size."""
        check_augmentation_list(self.augmentations)
        if self.mode == "pairs":
            if len(self.augmentations) != 1:
                raise ValueError(
                    f"augmentations: the pairs view scheme takes exactly one augmentation entry "
                    f"(its strong augmentation; K is method_kwargs.num_views), got "
                    f"{len(self.augmentations)} entries")
            BatchedAugment(self.augmentations[0], self.dataset)
        else:
            crops = sum(BatchedAugment(e, self.dataset, f"augmentations[{i}]").spec.num_crops
                        for i, e in enumerate(self.augmentations))
            if crops != self.views.num_crops:
                raise ValueError(
                    f"augmentations: {crops} crops per image, but the method's views need "
                    f"{self.views.num_crops} ({self.views.num_views} large + "
                    f"{self.views.num_small} small)")
        len(self)  # the batch size against a rank's share
        if device_kind(self.device_choice, self.accelerator) != "cpu" and self.num_workers:
            raise ValueError(f"batched.num_workers: {self.num_workers} worker processes, but "
                             "the crops are made on CUDA, which needs none; set it to 0 (or null)")
        if self.max_gib is not None:
            size = self.resident_bytes()
            if size > self.max_gib * GIB:
                raise ValueError(
                    f"data.format=batched: the training set would take {size / GIB:.3g} GiB "
                    f"decoded ({len(self.targets):,} images of {self.image_shape()}), more than "
                    f"batched.max_gib={self.max_gib:g}; raise batched.max_gib if the "
                    "device holds it, decode smaller images (batched.image_size), or use "
                    "data.format=image_folder or dali, which read the files batch by batch")

    def image_shape(self) -> tuple[int, int, int]:
        """(3, H, W) of the stored images (an image list's read from its files' headers)."""
        if self._shape is None:
            if self.images is not None:
                self._shape = tuple(self.images.shape[1:])  # type: ignore[assignment]
            else:
                self._shape = (3, *image_list_shape(self.files or [], self.image_size))
        return self._shape  # type: ignore[return-value]

    def resident_bytes(self) -> int:
        """Bytes of the decoded uint8 training set."""
        return int(np.prod(self.image_shape())) * len(self.targets)

    # ------------------------------------------------------------------ sizes and epochs
    @property
    def dataset_size(self) -> int:
        return self.sampler.size

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next ``iter()`` yields (same as ``self.sampler.set_epoch``)."""
        self.sampler.set_epoch(epoch)

    def rank_and_world(self) -> tuple[int, int]:
        return self.shard if self.shard is not None else distributed_shard()

    def __len__(self) -> int:
        world = self.rank_and_world()[1]
        per_rank = self.sampler.size // world
        if per_rank < self.batch_size:
            raise ValueError(
                f"optimizer.batch_size: {self.batch_size} is larger than a rank's share of the "
                f"training set ({self.sampler.size} images after the long-tail selection over "
                f"{world} rank(s): {per_rank} each)")
        return per_rank // self.batch_size

    # ------------------------------------------------------------------ the device loader
    @property
    def loader(self) -> DeviceBatchLoader:
        """The :class:`DeviceBatchLoader`, built (and the images placed or decoded on the
        device) on first use."""
        if self._loader is None:
            device = resolve_device(self.device_choice, self.accelerator)
            if self.images is not None:
                images = self.images.to(device)
            else:
                self._check_free_memory(device)
                images = decode_jpeg_files(self.files or [], self.image_size, device=device)
            pairs = self.views if self.mode == "pairs" else None
            self._loader = DeviceBatchLoader(
                images, self.targets, self.augmentations, self.dataset, self.batch_size,
                seed=self.seed, mode=self.mode,
                num_pairs=pairs.num_views if pairs else 1,
                partner=pairs.partner if pairs else "image",
                views=pairs.roles if pairs else "normalized_augmented",
                num_workers=self.num_workers if device.type == "cpu" else 0,
                rank=None if self.shard is None else self.shard[0],
                world_size=None if self.shard is None else self.shard[1])
            self._loader.sampler = self.sampler  # one epoch counter for both
        return self._loader

    def _check_free_memory(self, device: torch.device) -> None:
        if device.type != "cuda":
            return
        free, _ = torch.cuda.mem_get_info(device)
        need = self.resident_bytes()
        if need > free // 2:
            raise ValueError(
                f"data.format=batched: the decoded training set ({need / GIB:.3g} GiB) would "
                f"take more than half of the {free / GIB:.2f} GiB free on {device}; decode "
                "smaller images (batched.image_size) or use data.format=image_folder or dali")

    @property
    def device(self) -> torch.device:
        return self.loader.device

    def _start_epoch(self, epoch: int, rank: int, world_size: int) -> Iterator[Batch]:
        return self.loader._epoch(epoch, rank, world_size)

    def __iter__(self) -> Iterator[Batch]:
        loader = self.loader
        rank, world_size = loader.shard()
        return self._start_epoch(self.sampler.epoch, rank, world_size)

    def __getstate__(self) -> dict:
        """Picklable (e.g. ddp_spawn): the device loader is rebuilt where it is used."""
        state = self.__dict__.copy()
        state["_loader"] = None
        return state

    def describe(self) -> str:
        where = "files, decoded on first use" if self.files is not None else "in memory"
        return (f"batched loader ({self.mode}, batched.device={self.device_choice}, {where}): "
                f"{self.sampler.size} images {self.image_shape()}, batch {self.batch_size}, "
                f"{self.views.num_crops} crops, {len(self)} batches/epoch")


def build_batched_pretrain_loader(
    cfg: Any,
    views: Optional[ViewSpec] = None,
    source: Optional[ImageSource] = None,
    shard: Optional[tuple[int, int]] = None,
) -> BatchedPretrainLoader:
    """The loader of ``data.format: batched`` for a parsed pretraining config (module
    docstring); ``views`` None: the spec of ``cfg.method``; ``source`` skips building the train
    source again; ``shard`` fixes (rank, world size)."""
    if views is None:
        from solo_multiview.methods import view_spec

        views = view_spec(cfg)
    if bad_image_policy(cfg) == "skip":
        raise ValueError(
            "data.bad_images=skip is not supported with data.format=batched (the training set "
            "is decoded once, up front, so an unreadable file stops the run there); use "
            "data.bad_images=error with data.format=batched, or data.format=image_folder to "
            "skip unreadable images")
    node = _node(cfg, "batched")
    source = build_train_source(cfg) if source is None else source
    positions = pretrain_indexes(cfg, source)
    targets = np.asarray(source.targets, dtype=np.int64)[positions]
    device = node.get("device", None) or "auto"
    workers = node.get("num_workers", None)
    if workers is None:
        on_cpu = device_kind(device, cfg.get("accelerator", None)) == "cpu"
        workers = int(cfg.data.get("num_workers", 0) or 0) if on_cpu else 0
    image_size = node.get("image_size", None)
    max_gib = float(node.get("max_gib", None) or 8.0)
    common = dict(seed=int(cfg.get("seed", None) or 0), device=device,
                  accelerator=cfg.get("accelerator", None), num_workers=int(workers),
                  max_gib=max_gib, shard=shard)
    augmentations = [dict(entry) for entry in _plain(cfg.augmentations)]
    args = (targets, int(source.num_classes), augmentations, str(cfg.data.dataset),
            int(cfg.optimizer.batch_size), views)
    if isinstance(source, ArraySource):
        return BatchedPretrainLoader(*args, images=array_images(source, positions), **common)
    if isinstance(source, ImageListSource):
        files = [source.paths[int(i)] for i in positions]
        return BatchedPretrainLoader(*args, files=files, image_size=image_size, **common)
    raise ValueError(f"data.format=batched: the source {type(source).__name__} of "
                     f"data.dataset={cfg.data.dataset} is neither in memory nor an image list")


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value
