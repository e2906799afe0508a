"""Frozen features cached on disk, so that a second probe or kNN on the same checkpoint and images
skips the backbone.

A cache entry is ``<cache_dir>/<split>-<h>.pt`` holding ``{"key", "features", "labels"}``, where
``h`` is the first 16 hex digits of the SHA-256 of the key serialised as sorted JSON. The key
names everything the features depend on: the checkpoint file (resolved path, size, modification
time), the image source (dataset, split, root, list file), the selected images (count and SHA-1
of their source positions and labels) and the image settings (crop, resize, mean, std). A
different setting therefore gives a different file; a file whose stored key or tensor shapes do
not match is ignored and rewritten. Entries are written atomically (``atomic.atomic_write``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from solo_multiview.atomic import atomic_write
from solo_multiview.data.datasets import IndexedSubset

from .features import extract_features

CACHE_VERSION = 1
PathLike = Union[str, os.PathLike]


@dataclass
class Features:
    """Features ``(N, D)`` float32 and labels ``(N,)`` int64 on the CPU, and where they are
    cached (``path`` None when caching is off)."""

    features: torch.Tensor
    labels: torch.Tensor
    path: Optional[Path]
    reused: bool

    def describe(self) -> Dict[str, Any]:
        return {"path": None if self.path is None else str(self.path), "reused": self.reused,
                "num_images": int(self.labels.numel()), "dim": int(self.features.shape[1])}


def _sha1(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array, dtype=np.int64).tobytes()).hexdigest()


def checkpoint_id(checkpoint: PathLike) -> Dict[str, Any]:
    """Resolved path, size and modification time of a checkpoint file."""
    p = Path(checkpoint).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def feature_key(
    checkpoint: PathLike,
    dataset: IndexedSubset,
    source: Mapping[str, Any],
    images: Mapping[str, Any],
) -> Dict[str, Any]:
    """The cache key of ``dataset``'s features under ``checkpoint`` (see the module
    docstring)."""
    return {
        "version": CACHE_VERSION,
        "checkpoint": checkpoint_id(checkpoint),
        "source": dict(source),
        "num_images": len(dataset),
        "indexes_sha1": _sha1(dataset.source_indexes),
        "labels_sha1": _sha1(dataset.targets),
        "images": dict(images),
    }


def _canonical(key: Mapping[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, default=str)


def cache_path(cache_dir: PathLike, split: str, key: Mapping[str, Any]) -> Path:
    digest = hashlib.sha256(_canonical(key).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{split}-{digest}.pt"


def load_cached(path: Path, key: Mapping[str, Any]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """The cached ``(features, labels)`` when ``path`` holds an intact entry for ``key``."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError):
        return None
    if not isinstance(obj, dict) or _canonical(obj.get("key", {})) != _canonical(key):
        return None
    feats, labels = obj.get("features"), obj.get("labels")
    if not isinstance(feats, torch.Tensor) or not isinstance(labels, torch.Tensor):
        return None
    n = int(key["num_images"])
    if feats.ndim != 2 or feats.shape[0] != n or labels.shape != (n,):
        return None
    return feats.float(), labels.long()


def save_cached(path: Path, key: Mapping[str, Any], features: torch.Tensor,
                labels: torch.Tensor) -> Path:
    payload = {"key": dict(key), "features": features.cpu().contiguous(),
               "labels": labels.cpu().contiguous()}
    return atomic_write(path, lambda f: torch.save(payload, f), binary=True)


def cached_features(
    backbone: nn.Module,
    dataset: IndexedSubset,
    key: Mapping[str, Any],
    split: str,
    cache_dir: Optional[PathLike],
    device: torch.device,
    batch_size: int = 256,
    num_workers: int = 0,
) -> Features:
    """The features of ``dataset`` from the cache when present, else extracted with
    ``extract_features`` (no augmentation: ``dataset``'s transform) and, when ``cache_dir`` is
    given, saved there. The labels are checked against ``dataset.targets``."""
    path = cache_path(cache_dir, split, key) if cache_dir is not None else None
    if path is not None:
        hit = load_cached(path, key)
        if hit is not None and torch.equal(hit[1], torch.as_tensor(dataset.targets)):
            return Features(hit[0], hit[1], path, reused=True)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    feats, labels = extract_features(backbone, loader, device=device)
    if not torch.equal(labels, torch.as_tensor(dataset.targets)):
        raise RuntimeError(f"feature extraction ({split}): the loader's labels differ from the "
                           f"dataset's targets")
    if path is not None:
        save_cached(path, key, feats, labels)
    return Features(feats, labels, path, reused=False)
