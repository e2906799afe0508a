"""The DALI pretraining loader: an iterable of ``[indexes, crops, targets]`` batches.

``build_dali_pretrain_loader(cfg)`` reads the config; :class:`DaliPretrainLoader` does the work:

- ``indexes``: LongTensor (B,) of true positions in the long-tailed training set (what
  ``dataset[indexes[i]]`` of the torchvision path addresses), on every rank;
- ``crops``: list of float32 ``B x 3 x H x W`` tensors, normalised, K large crops first then the
  small ones (MTTV: ``[x_n, y_a, x_a, y_n]``, K each), on the GPU in GPU mode, else the CPU;
- ``targets``: LongTensor (B,), looked up from the positions.

Sharding: rank ``r`` of ``S`` (torch.distributed when initialised, read when an epoch starts)
reads its own part of each epoch, every rank the same number of full batches (``sampling.py``).
Parallelism: P independent DALI pipelines per rank, used in turn like data loader workers (on the
CPU one single-threaded pipeline per thread: for 32x32 images that uses 2 cores far better than
one pipeline with 2 threads, whose operators synchronise on every tiny op). The pipelines are
built on the first ``iter()``, i.e. inside ``Trainer.fit`` where DDP and the CUDA device are set
up; ``len()`` can be asked at any time.

Epochs: every ``iter()`` yields one epoch of ``len(self)`` batches and then stops, so Lightning
can iterate again each epoch; the order is reshuffled every epoch. ``self.sampler.set_epoch`` (which
Lightning calls before every epoch, also after a resume) picks the epoch; without it the loader
moves on by itself. An epoch left unfinished (e.g. ``max_steps``) is not resumed: the next
``iter()`` rebuilds the pipelines at the start of the requested epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from solo_multiview.data.dali.backend import (
    DaliDevice,
    device_kind,
    require_dali,
    resolve_device,
)
from solo_multiview.data.dali.pairing import PairingSpec, draw_partner_batch, pairing_from_views
from solo_multiview.data.dali.sampling import EpochSampler, pipeline_batches
from solo_multiview.data.dali.sources import image_feed, load_train_source, reader_lists
from solo_multiview.data.dali.spec import CropSpec, parse_augmentations
from solo_multiview.data.datasets import pretrain_indexes
from solo_multiview.data.sources import ImageListSource, ImageSource
from solo_multiview.data.views import ViewSpec

Batch = list  # [indexes (B,), crops (list of B x 3 x H x W), targets (B,)]


def _derived_seed(*parts: int) -> int:
    """A 31-bit seed from integers (numpy's SeedSequence), for DALI's seed arguments."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] >> 1)


def copy_on_stream(tensor: Any, copy_stream: Any, feed: Any) -> torch.Tensor:
    """A float32 torch copy of the DALI GPU tensor ``tensor`` (``feed`` is DALI's
    ``feed_ndarray``), made on ``copy_stream`` and safe to read and free on the current stream:

    - the output is allocated while ``copy_stream`` is current, so the caching allocator gives
      a block whose earlier users on ``copy_stream`` are ordered before this copy (a block of
      the current stream could still be read by kernels queued there while the copy writes it);
    - the current stream waits for the copy (on the device: the host does not wait);
    - ``record_stream``: once freed, the block is not handed out again before the current
      stream's work queued until then (its readers) is done.
    """
    consumer = torch.cuda.current_stream(copy_stream.device)
    with torch.cuda.stream(copy_stream):
        out = torch.empty(tuple(tensor.shape()), dtype=torch.float32, device=copy_stream.device)
        feed(tensor, out, cuda_stream=copy_stream)
    consumer.wait_stream(copy_stream)
    out.record_stream(consumer)
    return out


class ScheduledFeed:
    """External-source callback of pipeline ``pipeline`` of ``pipelines``: it produces batches
    ``pipeline, pipeline + P, ...`` of every epoch from ``start_epoch`` on (DALI's iteration
    ``i`` is its ``i``-th), each the anchors' images, the K partners' images (MTTV with partner
    images) and the anchors' positions."""

    def __init__(self, sampler: EpochSampler, images: Any, pairing: Optional[PairingSpec],
                 start_epoch: int, shard_id: int, num_shards: int, pipeline: int = 0,
                 pipelines: int = 1) -> None:
        self.sampler = sampler
        self.images = images
        self.pairing = pairing if pairing is not None and pairing.reads_partners else None
        self.start_epoch = int(start_epoch)
        self.shard_id = int(shard_id)
        self.num_shards = int(num_shards)
        self.pipeline, self.pipelines = int(pipeline), int(pipelines)
        self.per_epoch = pipeline_batches(sampler.batches_per_epoch(num_shards), self.pipeline,
                                          self.pipelines)

    @property
    def num_images(self) -> int:
        return 1 + (self.pairing.num_pairs if self.pairing is not None else 0)

    def __call__(self, iteration: int) -> tuple:
        epoch, i = divmod(int(iteration), self.per_epoch)
        epoch += self.start_epoch
        batch = self.pipeline + i * self.pipelines
        positions = self.sampler.batch_positions(epoch, batch, self.shard_id, self.num_shards)
        groups = [positions]
        if self.pairing is not None:
            partners = draw_partner_batch(self.pairing, positions, epoch, self.shard_id,
                                          self.sampler.size)
            groups += [partners[:, k] for k in range(self.pairing.num_pairs)]
        # anchors and partners in one pass (encoded files: read once, in parallel, kept)
        read_many = getattr(self.images, "read_many", None)
        outputs = (list(read_many(groups)) if read_many is not None
                   else [self.images(group) for group in groups])
        outputs.append(positions.copy())
        return tuple(outputs)


class DaliPretrainLoader:
    """Iterable of K-crop batches from DALI pipelines; see the module docstring.

    Args:
        source: the full training source (``build_train_source``).
        source_indexes: positions in ``source`` of the long-tailed set (``pretrain_indexes``).
        specs: the augmentation entries (``parse_augmentations``), large crops first.
        batch_size: per-rank batch size.
        pairing: MTTV pairing (uses ``specs[0]`` only), or None for plain K crops.
        device: ``dali.device``: auto | cpu | gpu.
        num_threads: DALI worker threads in all.
        pipelines: independent DALI pipelines sharing the threads, used in turn like data loader
            workers (batch ``q`` of an epoch from pipeline ``q mod P``); default one
            single-threaded pipeline per thread on the CPU (tiny images scale badly across the
            threads of one pipeline), one pipeline on the GPU.
        prefetch_queue_depth: batches each pipeline computes ahead.
        seed: shuffling, augmentation and (MTTV) partner seed.
        shard_id, num_shards: fix the shard (else torch.distributed's rank/world).
    """

    def __init__(
        self,
        source: ImageSource,
        source_indexes: np.ndarray,
        specs: Sequence[CropSpec],
        batch_size: int,
        *,
        pairing: Optional[PairingSpec] = None,
        device: str = "auto",
        num_threads: int = 2,
        pipelines: Optional[int] = None,
        prefetch_queue_depth: int = 2,
        seed: int = 0,
        shard_id: Optional[int] = None,
        num_shards: Optional[int] = None,
    ) -> None:
        require_dali()
        self.specs = list(specs)
        if not self.specs:
            raise ValueError("augmentations: the list is empty; give at least one pipeline")
        if pairing is not None and len(self.specs) != 1:
            raise ValueError(
                f"augmentations: the pairs view scheme takes exactly one augmentation entry (its "
                f"strong augmentation; K is method_kwargs.num_views), got {len(self.specs)} "
                "entries"
            )
        for key, value in (("num_threads", num_threads), ("pipelines", pipelines),
                           ("prefetch_queue_depth", prefetch_queue_depth)):
            if value is not None and int(value) < 1:
                raise ValueError(f"dali.{key} must be an int >= 1, got {value!r}")
        self.device_choice = device
        device_kind(device)  # validate now: a wrong dali.device fails before training
        self.source = source
        self.source_indexes = np.asarray(source_indexes, dtype=np.int64)
        self.pairing = pairing
        self.num_threads = int(num_threads)
        self.requested_pipelines = None if pipelines is None else int(pipelines)
        self.prefetch_queue_depth = int(prefetch_queue_depth)
        self.seed = int(seed)
        self.num_classes = int(source.num_classes)
        self.targets = np.asarray(source.targets, dtype=np.int64)[self.source_indexes]
        self.class_counts = np.bincount(self.targets, minlength=self.num_classes)
        self._targets = torch.from_numpy(self.targets)
        self.sampler = EpochSampler(len(self.source_indexes), batch_size, self.seed,
                                    shard_id, num_shards)
        self.uses_reader = isinstance(source, ImageListSource) and (
            pairing is None or not pairing.reads_partners)
        len(self)  # batch size vs. shard size, checked now
        self._images: Any = None  # the external-source feed, shared by pipelines and rebuilds
        self._reset_state()

    def _reset_state(self) -> None:
        self._pipes: list[Any] = []
        self._key: Optional[tuple[int, int]] = None
        self._pipe_epoch = -1
        self._runs: list[int] = []  # runs of each pipeline in the current epoch
        self._runs_per_epoch: list[int] = []  # the reader's, padding batches included
        self._finished = False  # all batches of the current epoch were yielded
        self._device: Optional[DaliDevice] = None
        self._copy_stream: Optional[torch.cuda.Stream] = None

    def __getstate__(self) -> dict:
        """Picklable before and after use (e.g. ddp_spawn): the pipelines are rebuilt there."""
        state = self.__dict__.copy()
        state.update(_pipes=[], _key=None, _pipe_epoch=-1, _runs=[], _runs_per_epoch=[],
                     _finished=False, _device=None, _copy_stream=None, _images=None)
        return state

    def _image_feed(self) -> Any:
        """One external-source feed for all pipelines and rebuilds (encoded files are then
        read once and kept, not once per pipeline)."""
        if self._images is None:
            self._images = image_feed(self.source, self.source_indexes)
        return self._images

    # ------------------------------------------------------------------ sizes
    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size

    @property
    def dataset_size(self) -> int:
        """Images in the long-tailed training set (all ranks)."""
        return self.sampler.size

    @property
    def num_crops(self) -> int:
        if self.pairing is not None:
            return 4 * self.pairing.num_pairs
        return sum(spec.num_crops for spec in self.specs)

    @property
    def num_pipelines(self) -> int:
        """P: ``pipelines`` if given, else ``num_threads`` on the CPU and 1 on the GPU."""
        if self.requested_pipelines is not None:
            return self.requested_pipelines
        return self.num_threads if device_kind(self.device_choice) == "cpu" else 1

    def _batches(self, num_shards: int) -> int:
        readers = self.num_pipelines if self.uses_reader else 1
        return self.sampler.batches_per_epoch(num_shards, readers)

    def __len__(self) -> int:
        return self._batches(self.sampler.shard()[1])

    def set_epoch(self, epoch: int) -> None:
        """Same as ``self.sampler.set_epoch`` (the epoch the next ``iter()`` produces)."""
        self.sampler.set_epoch(epoch)

    # ------------------------------------------------------------------ pipelines
    def _build(self, start_epoch: int, shard_id: int, num_shards: int) -> None:
        """P pipelines positioned at the first batch of ``start_epoch``."""
        from solo_multiview.data.dali.pipeline import (
            GraphInputs,
            build_pipeline,
            reader_batches_per_epoch,
        )

        self._reset_state()  # release the previous pipelines (and their threads) first
        self._device = resolve_device(self.device_choice)
        if self._device.kind == "gpu":
            self._copy_stream = torch.cuda.Stream(torch.device("cuda", self._device.device_id))
        batches = self._batches(num_shards)
        # a feed pipeline without a batch in the epoch would have nothing to produce
        count = self.num_pipelines if self.uses_reader else min(self.num_pipelines, batches)
        threads = max(1, self.num_threads // count)
        for j in range(count):
            if self.uses_reader:
                files, labels = reader_lists(self.source, self.source_indexes)
                inputs = GraphInputs(files=files, labels=labels)
            else:
                feed_images = self._image_feed()
                feed = ScheduledFeed(self.sampler, feed_images, self.pairing, start_epoch,
                                     shard_id, num_shards, j, count)
                inputs = GraphInputs(feed=feed, decoded=feed_images.decoded,
                                     num_images=feed.num_images)
            built = build_pipeline(
                inputs, self.specs, self.pairing, self._device,
                batch_size=self.batch_size, num_threads=threads,
                seed=_derived_seed(self.seed, shard_id, start_epoch, j),
                prefetch_queue_depth=self.prefetch_queue_depth,
                # the reader of pipeline j reads part j of the rank's shard
                shard_id=shard_id * count + j, num_shards=num_shards * count,
                reader_seed=_derived_seed(self.seed, start_epoch),
            )
            self._pipes.append(built)
            self._runs_per_epoch.append(
                reader_batches_per_epoch(built.pipe, self.batch_size) if self.uses_reader
                else pipeline_batches(batches, j, count))
        self._key = (shard_id, num_shards)
        self._pipe_epoch = start_epoch
        self._runs = [0] * count

    def _position_at(self, epoch: int, shard_id: int, num_shards: int) -> None:
        """Leaves the pipelines at the first batch of ``epoch``: continues after a finished
        epoch (running the readers' padding batches), else rebuilds."""
        if self._pipes and self._key == (shard_id, num_shards):
            if self._pipe_epoch == epoch and not any(self._runs):
                return
            if self._pipe_epoch == epoch - 1 and self._finished:
                for built, runs, total in zip(self._pipes, self._runs, self._runs_per_epoch):
                    for _ in range(total - runs):
                        built.pipe.run()
                self._pipe_epoch, self._runs, self._finished = epoch, [0] * len(self._pipes), \
                    False
                return
        self._build(epoch, shard_id, num_shards)

    # ------------------------------------------------------------------ batches
    def _to_torch(self, output: Any) -> torch.Tensor:
        """A copy of one DALI output (DALI reuses its buffers for later batches)."""
        tensor = output.as_tensor()
        if self._copy_stream is None:
            return torch.from_numpy(np.array(tensor))
        from nvidia.dali.plugin.pytorch import feed_ndarray

        return copy_on_stream(tensor, self._copy_stream, feed_ndarray)

    def _to_batch(self, outputs: Sequence[Any], slots: Sequence[int]) -> Batch:
        *crop_outputs, positions = outputs
        indexes = torch.from_numpy(
            np.array(positions.as_tensor()).reshape(-1).astype(np.int64, copy=False))
        converted = [self._to_torch(output) for output in crop_outputs]
        if self._copy_stream is not None:
            # the copies are done before DALI may reuse its buffers (the next run()); this host
            # wait covers the copy stream only, which never waits for the training kernels.
            # Readers of the crops are ordered by the stream wait of copy_on_stream.
            self._copy_stream.synchronize()
        used: set[int] = set()
        crops = []
        for slot in slots:
            crops.append(converted[slot].clone() if slot in used else converted[slot])
            used.add(slot)
        return [indexes, crops, self._targets[indexes]]

    def __iter__(self) -> Iterator[Batch]:
        shard_id, num_shards = self.sampler.shard()
        batches = self._batches(num_shards)
        epoch = self.sampler.epoch
        self._position_at(epoch, shard_id, num_shards)
        return self._epoch(epoch, batches)

    def _epoch(self, epoch: int, batches: int) -> Iterator[Batch]:
        count = len(self._pipes)
        for q in range(batches):
            built = self._pipes[q % count]
            outputs = built.pipe.run()
            self._runs[q % count] += 1
            yield self._to_batch(outputs, built.slots)
        self._finished = True
        if self.sampler.epoch == epoch:
            self.sampler.set_epoch(epoch + 1)

    def describe(self) -> str:
        """One line: device, input path, sizes."""
        path = "file reader" if self.uses_reader else "external source"
        mode = "pairs" if self.pairing is not None else "multicrop"
        return (f"DALI {mode} loader ({device_kind(self.device_choice)}, {path}, "
                f"{self.num_pipelines} pipeline(s), {self.num_threads} thread(s)): "
                f"{self.dataset_size} images, batch {self.batch_size}, {self.num_crops} crops, "
                f"{len(self)} batches/epoch")


def _cfg_int(node: Optional[Mapping[str, Any]], key: str, default: Optional[int]) -> Optional[int]:
    value = None if node is None else node.get(key, None)
    return default if value is None else int(value)


def build_dali_pretrain_loader(
    cfg: DictConfig,
    source: Optional[ImageSource] = None,
    *,
    views: Optional[ViewSpec] = None,
    shard_id: Optional[int] = None,
    num_shards: Optional[int] = None,
) -> DaliPretrainLoader:
    """The DALI counterpart of ``data.loaders.build_pretrain_loader`` (same training set, same
    schema, same batch contract), for ``data.format: dali``.

    ``views`` is the method's view spec (``data/views.py``; None: the spec of ``cfg.method``):
    the ``crops`` scheme makes the crops of ``cfg.augmentations``, the ``pairs`` scheme the MIMV
    pairing (one augmentation entry).

    Reads ``data.*`` (dataset, train_path, long_tail, num_workers), ``augmentations``,
    ``optimizer.batch_size``, ``seed`` and the ``dali`` node: ``device`` (auto | cpu | gpu),
    ``num_threads`` (default ``data.num_workers``, at least 1), ``pipelines`` (default one
    single-threaded pipeline per thread on the CPU, 1 on the GPU), ``prefetch_queue_depth``
    (default 2). ``source`` skips building the train source again; ``shard_id``/``num_shards``
    fix the shard (tests; default torch.distributed).
    """
    require_dali()
    if views is None:
        from solo_multiview.methods import view_spec

        views = view_spec(cfg)
    if str(cfg.data.get("bad_images", None) or "error") == "skip":
        raise ValueError(
            "data.bad_images=skip is not supported with data.format=dali (DALI's decoder stops "
            "at an unreadable file); use data.bad_images=error with DALI, or data.format="
            "image_folder to skip unreadable images"
        )
    specs = parse_augmentations(cfg.augmentations, cfg.data.dataset)
    seed = int(cfg.get("seed", None) or 0)
    pairing = pairing_from_views(views, seed) if views.scheme == "pairs" else None
    dali_cfg = cfg.get("dali", None)
    device = "auto" if dali_cfg is None else (dali_cfg.get("device", None) or "auto")
    device_kind(device)
    source = load_train_source(cfg) if source is None else source
    indexes = pretrain_indexes(cfg, source)
    workers = max(1, int(cfg.data.get("num_workers", 1) or 1))
    return DaliPretrainLoader(
        source, indexes, specs, int(cfg.optimizer.batch_size),
        pairing=pairing, device=device,
        num_threads=_cfg_int(dali_cfg, "num_threads", workers),
        pipelines=_cfg_int(dali_cfg, "pipelines", None),
        prefetch_queue_depth=_cfg_int(dali_cfg, "prefetch_queue_depth", 2),
        seed=seed,
        shard_id=shard_id, num_shards=num_shards,
    )
