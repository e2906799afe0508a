"""Loading a pretrained backbone from a Lightning checkpoint plus its ``args.json``.

Contract (see notes/CONTRACTS.md): the checkpoint's ``state_dict`` holds the online encoder under
``backbone.`` (the momentum encoder, ``momentum_backbone.``, and every other head are ignored);
``args.json`` beside the checkpoint holds the resolved pretraining config, from which
``hosts.backbones.build_backbone_from_cfg(cfg)`` rebuilds the architecture: ``backbone.name``,
``backbone.kwargs``, ``data.dataset`` and the stem (``backbone.stem``,
``backbone.cifar_stem_padding``; an older ``args.json`` without them means ``auto`` and padding 2,
what pretraining built then). Loading is strict: any missing, unexpected or mis-shaped key is an
error, and a checkpoint without ``backbone.`` weights is never accepted. (A stem padding differs
in no weight's shape, so only reading the keys makes evaluation use the pretrained one.)
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..hosts.backbones import STEMS, build_backbone_from_cfg, stem_settings

PathLike = Union[str, os.PathLike]
BACKBONE_PREFIX = "backbone."
ARGS_FILE = "args.json"


def find_checkpoint(path: PathLike) -> Path:
    """``path`` itself when it is a file; for a directory its newest ``*.ckpt`` (by modification
    time, ties broken by the larger file name)."""
    path = Path(path)
    if path.is_dir():
        ckpts = [p for p in path.glob("*.ckpt") if p.is_file()]
        if not ckpts:
            raise FileNotFoundError(f"pretrained checkpoint: no *.ckpt file in directory {path}")
        return max(ckpts, key=lambda p: (p.stat().st_mtime_ns, p.name))
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint: {path} does not exist (give a .ckpt "
                                f"file or a directory holding one)")
    return path


def load_args(ckpt_path: PathLike, args_path: Optional[PathLike] = None) -> Dict[str, Any]:
    """The pretraining config from ``args_path`` or, by default, ``args.json`` beside
    ``ckpt_path``; checks that ``backbone.name`` and ``data.dataset`` are present."""
    args_path = Path(args_path) if args_path is not None else Path(ckpt_path).parent / ARGS_FILE
    if not args_path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint: config file {args_path} not found; "
                                f"{ARGS_FILE} must lie beside the checkpoint or be given "
                                f"explicitly")
    try:
        with open(args_path) as f:
            cfg = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"pretrained checkpoint: {args_path} is not valid JSON: {err}") from err
    if not isinstance(cfg, dict):
        raise ValueError(f"pretrained checkpoint: {args_path} must hold a JSON object")
    for section, key in (("backbone", "name"), ("data", "dataset")):
        if not isinstance(cfg.get(section), dict) or not cfg[section].get(key):
            raise ValueError(f"pretrained checkpoint: {args_path} lacks {section}.{key}")
    kwargs = cfg["backbone"].get("kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ValueError(f"pretrained checkpoint: {args_path} backbone.kwargs must be an object "
                         f"or null, got {type(kwargs).__name__}")
    stem, padding = cfg["backbone"].get("stem"), cfg["backbone"].get("cifar_stem_padding")
    if stem is not None and stem not in STEMS:
        raise ValueError(f"pretrained checkpoint: {args_path} backbone.stem must be one of "
                         f"{list(STEMS)} or absent, got {stem!r}")
    if padding is not None and (isinstance(padding, bool) or not isinstance(padding, int)
                                or padding < 0):
        raise ValueError(f"pretrained checkpoint: {args_path} backbone.cifar_stem_padding must "
                         f"be an int >= 0 or absent, got {padding!r}")
    return cfg


def backbone_state_dict(
    state_dict: Mapping[str, torch.Tensor], prefix: str = BACKBONE_PREFIX, source: str = "?"
) -> Dict[str, torch.Tensor]:
    """The entries whose key starts with ``prefix``, prefix removed (``momentum_backbone.`` does
    not start with ``backbone.`` and is therefore dropped). Raises when there are none."""
    out = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not out:
        sample = sorted(state_dict)[:5]
        raise ValueError(f"pretrained checkpoint: {source} holds no {prefix!r} weights "
                         f"(first keys: {sample})")
    return out


def _read_state_dict(ckpt: Path, weights_only: bool) -> Mapping[str, torch.Tensor]:
    try:
        obj = torch.load(ckpt, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as err:
        raise ValueError(f"pretrained checkpoint: {ckpt} could not be read with "
                         f"weights_only={weights_only} ({err}); for a checkpoint you trust, "
                         f"pass weights_only=False") from err
    if not isinstance(obj, Mapping) or not isinstance(obj.get("state_dict"), Mapping):
        raise ValueError(f"pretrained checkpoint: {ckpt} has no 'state_dict' entry; expected a "
                         f"Lightning checkpoint")
    return obj["state_dict"]


def load_pretrained_backbone(
    ckpt_path: PathLike,
    args_path: Optional[PathLike] = None,
    weights_only: bool = True,
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuilds and loads the pretrained backbone (on the CPU, in eval mode).

    Args:
        ckpt_path: a ``.ckpt`` file, or a directory (its newest ``.ckpt`` is used).
        args_path: the pretraining ``args.json``; defaults to the one beside the checkpoint.
        weights_only: passed to ``torch.load``; only tensors and plain containers are unpickled.

    Returns:
        ``(backbone, cfg)``, ``cfg`` being the parsed ``args.json`` unchanged
        (``find_checkpoint(ckpt_path)`` names the file a directory resolves to).
    """
    ckpt = find_checkpoint(ckpt_path)
    cfg = load_args(ckpt, args_path)
    state = backbone_state_dict(_read_state_dict(ckpt, weights_only), source=str(ckpt))
    name, dataset = cfg["backbone"]["name"], cfg["data"]["dataset"]
    backbone = build_backbone_from_cfg(cfg)
    try:
        result = backbone.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches raise even with strict=False
        raise ValueError(f"pretrained checkpoint: {ckpt} does not fit backbone {name!r} built "
                         f"from {args_path or ckpt.parent / ARGS_FILE}: {err}") from err
    if result.missing_keys or result.unexpected_keys:
        stem, padding = stem_settings(cfg["backbone"])
        raise ValueError(f"pretrained checkpoint: {ckpt} does not match backbone {name!r} "
                         f"(dataset {dataset!r}, stem {stem!r}, CIFAR stem padding {padding}): "
                         f"missing keys {result.missing_keys[:10]}, "
                         f"unexpected keys {result.unexpected_keys[:10]}")
    return backbone.eval(), cfg


def _get(cfg: Any, section: str, key: str) -> Any:
    sub = cfg.get(section) if hasattr(cfg, "get") else None
    return sub.get(key) if sub is not None and hasattr(sub, "get") else None


def check_backbone_config(
    eval_cfg: Mapping[str, Any], ckpt_cfg: Mapping[str, Any], ckpt_path: Optional[PathLike] = None
) -> None:
    """Raises ``ValueError`` naming both values when the evaluation config's ``backbone.name`` or
    ``data.dataset`` differs from the checkpoint's ``args.json``. A key the evaluation config
    does not set is not compared (the checkpoint's value is then the one in force)."""
    where = f" ({ckpt_path})" if ckpt_path is not None else ""
    for section, key in (("backbone", "name"), ("data", "dataset")):
        wanted, trained = _get(eval_cfg, section, key), _get(ckpt_cfg, section, key)
        if wanted is not None and wanted != trained:
            raise ValueError(f"{section}.{key}: the evaluation config asks for {wanted!r} but "
                             f"the checkpoint was pretrained with {trained!r}{where}")
