"""K crops made on the device with batched torch ops (no DALI, no kornia): an in-memory uint8
training set resident on the CPU or a GPU, one call per batch augmenting all its crops, each with
its own random parameters.

    augment.py   batched ops and :class:`BatchedAugment` (one schema entry -> a batch callable)
    loader.py    :class:`DeviceBatchLoader` (the batch contract, shards, seeds, MTTV pairs) and
                 :func:`decode_jpeg_files` (image files -> one uint8 tensor)
    build.py     ``data.format: batched``: the ``batched.*`` keys and the loader built from a
                 config (long-tail selection, view spec, device placement, epochs)

Why hand-written ops and not kornia (the paper authors' GPU augmentation library): kornia is not
a dependency of the project, and on the same pipeline (cifar symmetric schema, 1,024 32x32 crops,
one CPU thread, measured side by side) kornia 0.9's AugmentationSequential took about 370 CPU ms
per 1,000 views against about 100 here; these ops are also checked against torchvision's op by op
(``tests/test_batched_augment.py``), so the two paths of the repo agree. Throughput against the
torchvision and DALI loaders: ``benchmarks/batched_vs_loaders.py``.
"""

from solo_multiview.data.batched.augment import AugmentParams, BatchedAugment, normalized_view
from solo_multiview.data.batched.build import (
    BatchedConfig,
    BatchedPretrainLoader,
    build_batched_pretrain_loader,
)
from solo_multiview.data.batched.loader import (
    DeviceBatchLoader,
    ShardedEpochOrder,
    decode_jpeg_files,
    list_image_folder,
)

__all__ = [
    "AugmentParams",
    "BatchedAugment",
    "BatchedConfig",
    "BatchedPretrainLoader",
    "DeviceBatchLoader",
    "ShardedEpochOrder",
    "build_batched_pretrain_loader",
    "decode_jpeg_files",
    "list_image_folder",
    "normalized_view",
]
