"""Resuming pretraining runs: solo-learn's ``auto_resume`` / ``resume_from_checkpoint`` with a
resume key that covers everything that shapes the result.

solo-learn's ``AutoResumer`` resumes the newest checkpoint (younger than
``auto_resume.max_hours``) whose ``args.json`` matches the run on name, backbone, method, dataset,
max_epochs and the optimizer's name, batch size, lr and weight decay. So a K = 2 run resumes a
K = 4 one, a different long-tail profile or augmentation is resumed silently. Here the key
(:data:`RESUME_KEYS`) also holds ``method_kwargs``, the numbers of large and small crops, the
augmentations, the loader (``data.format``: each draws its crops its own way), every
``data.long_tail`` setting, the whole ``backbone``, ``optimizer`` and
``scheduler`` nodes, the seed, the host, the EMA settings, the trainer keys that change the
optimisation (precision, gradient clipping, accumulation, limits, max_steps, sync_batchnorm) and the
world size (devices x nodes: it changes the data order and, with linear scaling, the lr). For a
method whose view spec says its data depends on the worker id (the ``pairs`` scheme: its partner
draws are seeded per worker, ``data/pairing.py``) the number of data loader workers is in the
key too.

Deliberately *not* in the key: paths (``data.train_path``, ``checkpoint.dir``: data and runs may
move), logging and performance settings, and the two failure policies ``nonfinite_loss`` and
``data.bad_images`` (a run stopped by a NaN or a broken file may be resumed with ``skip``).

* ``auto_resume.enabled``: every run folder ``<checkpoint.dir>/<method>/<version>/`` with an
  ``args.json`` is a candidate; its newest checkpoint (highest ``ep=``) must be younger than
  ``auto_resume.max_hours``. Candidates are tried newest first; the first whose key matches is
  resumed, into its own folder (same version: args.json is rewritten, metrics.csv continues).
  Every rejected candidate is printed with the keys that differ.
* ``resume_from_checkpoint: <path>`` (wins over ``auto_resume``): the file must exist; when an
  ``args.json`` lies beside it, its key must match (ValueError naming the differing keys
  otherwise) and the run continues in that folder; without one the run starts a new folder and
  says that the configuration could not be checked.

What a resumed run gets back, so that its weights after N steps equal an uninterrupted run's
(tests/test_resume.py, deterministic mode on CPU, 0 and 2 data loader workers):

* from the checkpoint (Lightning): weights and buffers (BatchNorm statistics, MoCo queues),
  optimizer and learning-rate scheduler state, global step and epoch; the count of batches
  skipped by ``nonfinite_loss=skip``; the epoch whose data comes next (``data_epoch``);
* recomputed: the data order and the augmentations (functions of seed, epoch and index, see
  ``data/loaders.py`` and ``data/datasets.py``), the EMA coefficient ``tau`` (from the global
  step, ``hosts/guard.py``);
* continued: ``metrics.csv`` (the rows logged after the checkpoint are dropped first, so the log
  equals an uninterrupted run's), ``args.json`` (rewritten with this run's config, which matches
  on every key above).

Not restored: the position inside an epoch. Checkpoints are written at epoch ends (every
``checkpoint.frequency`` epochs), so a run killed mid-epoch restarts that epoch from its last
checkpoint and redoes the steps since, identically. A checkpoint written mid-epoch (only at the
end of a run stopped by ``max_steps``) would resume mid-epoch with the epoch's data restarted from
its beginning, which is not exact. Nor the global RNG states: nothing in the torchvision training
path draws from them after start, but a method that draws random numbers in ``training_step``
would differ after a resume. The online kNN bank is rebuilt every epoch anyway; a wandb run is
continued (``resume="allow"``) but its history after the checkpoint is not rewound. The DALI
pipeline's randomness is not covered.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import omegaconf
import torch
from omegaconf import OmegaConf

from solo_multiview.config.schema import setting
from solo_multiview.training.devices import count_devices


@dataclass
class AutoResumeConfig:
    """``auto_resume.*`` (solo-learn's keys)."""

    enabled: bool = setting(False, "resume the newest matching run (module docstring)")
    max_hours: float = setting(36, "checkpoints older than this are not resumed", above=0,
                               expected="a number of hours > 0")


RESUME_KEYS: Tuple[str, ...] = (
    "name",
    "method",
    "host",
    "backbone",
    "method_kwargs",
    "momentum",
    "data.dataset",
    "data.format",
    "data.long_tail",
    "data.fraction",
    "data.num_large_crops",
    "data.num_small_crops",
    "augmentations",
    "optimizer",
    "scheduler",
    "seed",
    "max_epochs",
    "max_steps",
    "accumulate_grad_batches",
    "precision",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "limit_train_batches",
    "sync_batchnorm",
    "wandb.project",
    "wandb.entity",
)

_EPOCH = re.compile(r"-ep=(\d+)\.ckpt$")


@dataclass(frozen=True)
class Resume:
    """A checkpoint to resume and the run folder the resumed run writes into."""

    checkpoint: Path
    folder: Optional[Path]  # None: a checkpoint without args.json, the run gets a new folder
    how: str  # "auto_resume" | "resume_from_checkpoint"


def _plain(value: Any) -> Any:
    """JSON-normal form (lists, dicts, floats as JSON reads them) of a config value."""
    if isinstance(value, (omegaconf.DictConfig, omegaconf.ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    return json.loads(json.dumps(value, default=str))


def _get(tree: Any, dotted: str) -> Any:
    node = tree
    for part in dotted.split("."):
        if isinstance(node, (Mapping, omegaconf.DictConfig)) and part in node:
            node = node[part]
        else:
            return None
    return node


def _data_depends_on_workers(tree: Dict[str, Any]) -> bool:
    """Whether the run's training data depends on the worker id (the view spec says)."""
    from solo_multiview.methods import METHODS

    method = METHODS.get(str(tree.get("method")))
    if method is None:
        return False
    try:
        return method.views(OmegaConf.create(tree)).data_depends_on_workers
    except (AttributeError, KeyError, TypeError, ValueError,
            omegaconf.errors.OmegaConfBaseException):
        return False  # an args.json this version cannot read: its key will not match anyway


def resume_key(cfg: Any) -> Dict[str, Any]:
    """The values that must match for a checkpoint to be resumed (module docstring); ``cfg`` is
    a resolved config (DictConfig) or an ``args.json`` dict."""
    tree = _plain(cfg)
    keys = RESUME_KEYS + (("data.num_workers",) if _data_depends_on_workers(tree) else ())
    key = {name: _get(tree, name) for name in keys}
    try:
        world = count_devices(tree.get("devices", 1), str(tree.get("accelerator", "auto")))
        world *= int(tree.get("num_nodes", 1) or 1)
    except (TypeError, ValueError):
        world = None
    key["world_size"] = world
    return key


def key_differences(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> List[str]:
    """``"<dotted key>: <theirs> -> <ours>"`` for every leaf that differs."""
    out: List[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for name in sorted(set(a) | set(b)):
                walk(a.get(name), b.get(name), f"{prefix}.{name}" if prefix else name)
        elif a != b:
            out.append(f"{prefix}: {b!r} (checkpoint) vs {a!r} (this run)")

    walk(dict(ours), dict(theirs), "")
    return out


def checkpoint_epoch(path: Path) -> int:
    match = _EPOCH.search(path.name)
    return int(match.group(1)) if match else -1


def newest_checkpoint(folder: Path) -> Optional[Path]:
    """The run folder's checkpoint with the highest ``ep=`` (then the newest); temporary and
    partial files are ignored."""
    ckpts = [p for p in folder.glob("*.ckpt") if p.is_file() and not p.name.startswith(".")]
    if not ckpts:
        return None
    return max(ckpts, key=lambda p: (checkpoint_epoch(p), p.stat().st_mtime))


def checkpoint_data_epoch(path: Path) -> int:
    """The epoch whose data a run resumed from ``path`` trains on next: the ``data_epoch`` the
    Checkpointer stores (Lightning's processed-epoch count), else read from Lightning's loop
    state, else 0."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:  # not a zip-format checkpoint: mmap is not possible
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if "data_epoch" in ckpt:
        return int(ckpt["data_epoch"])
    progress = _get(ckpt.get("loops", {}), "fit_loop.epoch_progress.current.processed")
    return int(progress) if isinstance(progress, int) else int(ckpt.get("epoch", 0))


def _read_args(folder: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads((folder / "args.json").read_text())
    except (OSError, ValueError):
        return None


def find_auto_resume(cfg: omegaconf.DictConfig, log=print) -> Optional[Resume]:
    """The newest matching checkpoint under ``<checkpoint.dir>/<method>/`` (module docstring)."""
    root = Path(cfg.checkpoint.dir) / cfg.method
    if not root.is_dir():
        return None
    max_age = float(cfg.auto_resume.max_hours) * 3600
    now = time.time()
    candidates = []
    for folder in root.iterdir():
        if not (folder / "args.json").is_file():
            continue
        ckpt = newest_checkpoint(folder)
        if ckpt is not None and now - ckpt.stat().st_mtime < max_age:
            candidates.append((ckpt.stat().st_mtime, ckpt, folder))
    ours = resume_key(cfg)
    for _, ckpt, folder in sorted(candidates, key=lambda c: c[0], reverse=True):
        args = _read_args(folder)
        if args is None:
            log(f"auto_resume: skipped {folder}: unreadable args.json")
            continue
        diff = key_differences(ours, resume_key(args))
        if not diff:
            return Resume(ckpt, folder, "auto_resume")
        shown = "; ".join(diff[:6]) + (f"; ... ({len(diff)} keys)" if len(diff) > 6 else "")
        log(f"auto_resume: not resuming {ckpt}: different configuration ({shown})")
    return None


def explicit_resume(cfg: omegaconf.DictConfig) -> Resume:
    """``resume_from_checkpoint``: checked against the args.json beside it (module docstring)."""
    path = Path(str(cfg.resume_from_checkpoint)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"resume_from_checkpoint: no such file '{path}'")
    args = _read_args(path.parent)
    if args is None:
        return Resume(path, None, "resume_from_checkpoint")
    diff = key_differences(resume_key(cfg), resume_key(args))
    if diff:
        raise ValueError(
            f"resume_from_checkpoint: '{path}' belongs to a run with a different configuration "
            f"({'; '.join(diff[:8])}); resuming it would silently change the result. Use the "
            "checkpoint's settings, or start a new run without resume_from_checkpoint"
        )
    return Resume(path, path.parent, "resume_from_checkpoint")


def find_resume(cfg: omegaconf.DictConfig, log=print) -> Optional[Resume]:
    """What to resume, if anything: ``resume_from_checkpoint`` first, then ``auto_resume``."""
    if cfg.get("resume_from_checkpoint", None) not in (None, "None"):
        return explicit_resume(cfg)
    if cfg.auto_resume.enabled:
        return find_auto_resume(cfg, log)
    return None
