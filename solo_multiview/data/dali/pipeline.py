"""The DALI graph: read (file reader or external source), decode once, produce every crop.

Inputs:

- file reader (``fn.readers.file``, image lists): files and labels = positions in the
  long-tailed set (a read sample carries its true index); ``shard_id``/``num_shards`` shard it
  (the loader passes rank ``r``'s pipeline ``j`` of P as shard ``r P + j`` of ``S P``, whose union
  over ``j`` is DALI's shard ``r`` of ``S``); ``shuffle_after_epoch`` with a seeded
  ``shuffle_after_epoch_seed`` reshuffles the whole list every epoch (epoch 0 included, the same
  order in every pipeline of every rank); ``pad_last_batch`` ends every epoch on a batch
  boundary. Decoded with ``fn.decoders.image`` on ``mixed`` (nvJPEG) or ``cpu``.
- external source (arrays, or files whose positions Python must choose): a batch callback
  giving the anchor images, the K partner images (MTTV) and the positions.

Each image is decoded once and cropped K times (plus small crops); MTTV builds the views of
``pairing.py``'s order. Outputs: the distinct crop nodes, then the positions; ``slots[j]`` is the
output holding crop ``j`` (a deterministic view shared by several crop slots is computed once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline

from solo_multiview.data.dali.augment import normal_view, strong_view
from solo_multiview.data.dali.backend import DaliDevice
from solo_multiview.data.dali.pairing import PairingSpec, mttv_order
from solo_multiview.data.dali.spec import CropSpec, eval_spec

READER_NAME = "reader"
DataNode = Any


@dataclass(frozen=True)
class GraphInputs:
    """Either ``files``/``labels`` (file reader) or ``feed`` (external-source batch callback
    ``iteration -> (images_0, ..., images_{m-1}, positions)``, ``decoded`` telling whether the
    images are HWC uint8 arrays or encoded file bytes, ``num_images`` = m)."""

    files: Optional[list[str]] = None
    labels: Optional[list[int]] = None
    feed: Optional[Callable[[int], tuple]] = None
    decoded: bool = True
    num_images: int = 1

    @property
    def uses_reader(self) -> bool:
        return self.files is not None


@dataclass
class BuiltPipeline:
    pipe: Pipeline
    slots: list[int] = field(default_factory=list)
    num_outputs: int = 0


def _read(inputs: GraphInputs, device: DaliDevice, shard_id: int, num_shards: int,
          reader_seed: int) -> tuple[list[DataNode], DataNode]:
    """(decoded images on the working device, positions on the CPU)."""
    if inputs.uses_reader:
        encoded, positions = fn.readers.file(
            files=inputs.files, labels=inputs.labels, shard_id=shard_id, num_shards=num_shards,
            shuffle_after_epoch=True, shuffle_after_epoch_seed=reader_seed,
            pad_last_batch=True, name=READER_NAME,
        )
        raw = [encoded]
        decoded = False
    else:
        n = inputs.num_images
        layout = "HWC" if inputs.decoded else ""
        outputs = fn.external_source(
            source=inputs.feed, num_outputs=n + 1, batch=True,
            layout=[layout] * n + [""], dtype=[types.UINT8] * n + [types.INT64],
        )
        raw, positions = list(outputs[:n]), outputs[n]
        decoded = inputs.decoded
    if decoded:
        images = [node.gpu() if device.kind == "gpu" else node for node in raw]
    else:
        images = [fn.decoders.image(node, device=device.decoder, output_type=types.RGB)
                  for node in raw]
    return images, positions


def multicrop_views(image: DataNode, specs: Sequence[CropSpec]) -> list[DataNode]:
    """``spec.num_crops`` strong views per entry, entries in order (large crops first)."""
    return [strong_view(image, spec) for spec in specs for _ in range(spec.num_crops)]


def mttv_views(image: DataNode, partners: Sequence[DataNode], strong: CropSpec,
               pairing: PairingSpec) -> list[DataNode]:
    """``[x_n^1..x_n^K, y_a^1..y_a^K, x_a^1..x_a^K, y_n^1..y_n^K]``; ``partners`` are the K
    partner images (ignored for ``partner="none"``, where ``y = x``)."""
    k = pairing.num_pairs
    ys = list(partners) if pairing.reads_partners else [image] * k
    if pairing.views == "augmented_augmented":
        x_n = [strong_view(image, strong) for _ in range(k)]
        y_n = [strong_view(y, strong) for y in ys]
    else:
        normal = eval_spec(strong.crop_size, strong.mean, strong.std)
        x_norm = normal_view(image, normal)  # deterministic: computed once, used K times
        x_n = [x_norm] * k
        y_n = [x_norm if y is image else normal_view(y, normal) for y in ys]
    y_a = [strong_view(y, strong) for y in ys]
    x_a = [strong_view(image, strong) for _ in range(k)]
    return mttv_order(x_n, y_a, x_a, y_n)


def build_pipeline(
    inputs: GraphInputs,
    specs: Sequence[CropSpec],
    pairing: Optional[PairingSpec],
    device: DaliDevice,
    *,
    batch_size: int,
    num_threads: int,
    seed: int,
    prefetch_queue_depth: int,
    shard_id: int,
    num_shards: int,
    reader_seed: int,
) -> BuiltPipeline:
    """Builds the pipeline; returns it with the crop-slot map (see the module docstring)."""
    if pairing is not None and pairing.reads_partners and not inputs.uses_reader \
            and inputs.num_images != 1 + pairing.num_pairs:
        raise ValueError("MTTV: the feed must give the anchor and K partner images")
    layout: dict[str, Any] = {}

    @pipeline_def(enable_conditionals=True)
    def graph() -> tuple:
        images, positions = _read(inputs, device, shard_id, num_shards, reader_seed)
        if pairing is None:
            crops = multicrop_views(images[0], specs)
        else:
            crops = mttv_views(images[0], images[1:], specs[0], pairing)
        unique: list[DataNode] = []
        slots = []
        for node in crops:
            match = next((j for j, seen in enumerate(unique) if seen is node), None)
            if match is None:
                unique.append(node)
                match = len(unique) - 1
            slots.append(match)
        layout["slots"] = slots
        layout["num_outputs"] = len(unique)
        return (*unique, positions)

    pipe = graph(
        batch_size=int(batch_size), num_threads=int(num_threads), device_id=device.device_id,
        seed=int(seed), prefetch_queue_depth=int(prefetch_queue_depth),
    )
    pipe.build()
    return BuiltPipeline(pipe, layout["slots"], layout["num_outputs"])


def reader_batches_per_epoch(pipe: Pipeline, batch_size: int) -> int:
    """Batches the file reader produces per epoch on this shard: its padded shard size
    (``pad_last_batch``: every shard padded to ``ceil(N / S)``) over the batch size, rounded up."""
    meta = pipe.reader_meta(READER_NAME)
    shards = int(meta["number_of_shards"])
    padded_shard = -(-int(meta["epoch_size_padded"]) // shards)
    return -(-padded_shard // int(batch_size))
