"""NVIDIA DALI pretraining loader: solo-learn's augmentation schema, K crops per image, the batch
contract ``[indexes, crops, targets]`` with true long-tailed-set indexes, per-rank shards, MTTV
pairing; GPU (nvJPEG + GPU augmentation) or CPU (``device_id=None``) execution.

Modules, one job each:

    backend.py    import guard (install hint) and ``dali.device`` (auto | cpu | gpu)
    spec.py       an augmentation entry -> plain numbers (no DALI import)
    augment.py    DALI operators of one augmentation pipeline (differences from torchvision)
    sampling.py   epochs, shuffling, shard bounds, batches per epoch (numpy)
    sources.py    the long-tailed set as file lists or image feeds; split-list checks
    pairing.py    MTTV partner draws and crop order
    pipeline.py   the graph: read, decode once, crops
    loader.py     the iterable and ``build_dali_pretrain_loader(cfg)``

Importing this package does not import DALI; building a loader does (ImportError with the
install command when it is missing).
"""

from solo_multiview.data.dali.backend import INSTALL_HINT, dali_available, resolve_device
from solo_multiview.data.dali.loader import DaliPretrainLoader, build_dali_pretrain_loader
from solo_multiview.data.dali.pairing import PairingSpec, draw_partners
from solo_multiview.data.dali.spec import CropSpec, parse_augmentations

__all__ = [
    "INSTALL_HINT",
    "CropSpec",
    "DaliPretrainLoader",
    "PairingSpec",
    "build_dali_pretrain_loader",
    "dali_available",
    "draw_partners",
    "parse_augmentations",
    "resolve_device",
]
