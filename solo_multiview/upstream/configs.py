"""solo-learn pretraining configs (scripts/pretrain/cifar/) made from the plugin's config files.

The method's settings (method_kwargs, momentum, optimizer, scheduler, epochs) are read from the
plugin's base file (``scripts/pretrain/base/<method>_cifar.yaml``), the augmentation from its
augmentation file and the long-tail settings from ``scripts/pretrain/data/cifar10lt.yaml``; the
run boilerplate is solo-learn's (its cifar/simclr.yaml layout). Keys that solo-learn does not have
are translated: ``optimizer.lr_scaling: none`` becomes a learning rate that solo-learn's linear
scaling (``batch_size * devices / 256``) brings back to the configured value.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Mapping

from omegaconf import OmegaConf

from solo_multiview.config.schema import describe

from .methods import SoloMethod

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "pretrain"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    plain = text and all(c.isalnum() or c in "_-./" for c in text) and not text[0].isdigit()
    if plain and text.lower() not in ("true", "false", "null", "none", "yes", "no", "on", "off"):
        return text
    return '"' + text.replace('"', '\\"') + '"'


def emit(node: Any, comments: Mapping[str, str], indent: int = 0, path: str = "") -> List[str]:
    """YAML lines for nested dicts / lists / scalars, with ``# comment`` on keys named in
    ``comments`` (dotted paths)."""
    pad = " " * indent
    lines: List[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            key_path = f"{path}.{key}" if path else str(key)
            comment = comments.get(key_path)
            tail = f"  # {comment}" if comment else ""
            if (
                isinstance(value, dict)
                and value
                or isinstance(value, list)
                and any(isinstance(v, (dict, list)) for v in value)
            ):
                lines.append(f"{pad}{key}:{tail}")
                lines += emit(value, comments, indent + 2, key_path)
            elif isinstance(value, list):
                lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]{tail}")
            elif isinstance(value, dict):
                lines.append(f"{pad}{key}: {{}}{tail}")
            else:
                lines.append(f"{pad}{key}: {_scalar(value)}{tail}")
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict):
                sub = emit(item, comments, indent + 2, path)
                sub[0] = pad + "- " + sub[0].lstrip()
                lines += sub
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return lines


def _load(path: Path) -> Dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _header(path: Path) -> List[str]:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def _help_comments(method: SoloMethod) -> Dict[str, str]:
    cls = method.plugin_class
    out = {f"method_kwargs.{i.key}": i.help for i in describe(cls.Kwargs) if i.help}
    if method.momentum:
        out.update({f"momentum.{i.key}": i.help for i in describe(cls.Momentum) if i.help})
    return out


def augmentation_file(method: SoloMethod) -> str:
    """The solo-learn augmentation file of a method (normalisation statistics dropped: solo-learn
    uses its own for CIFAR)."""
    entries = OmegaConf.to_container(
        OmegaConf.load(SCRIPTS / "augmentations" / method.augmentation), resolve=False
    )
    for entry in entries:
        entry.pop("mean", None)
        entry.pop("std", None)
    header = [
        f"# From solo-multiview's scripts/pretrain/augmentations/{method.augmentation}; the number "
        "of crops is",
        "# method_kwargs.num_views (K)"
        + (
            ", and mttv makes 4 * K views per image from this entry (x_n, y_a, x_a, y_n per pair)."
            if method.name == "mttv"
            else "."
        ),
    ]
    return "\n".join(header + emit(entries, {})) + "\n"


def pretrain_config(method: SoloMethod, long_tail: bool = False, dataset: str = "cifar10") -> str:
    """scripts/pretrain/cifar/<method>.yaml (or ``<method>_lt.yaml`` with ``data.long_tail``)."""
    base = _load(SCRIPTS / "base" / method.base_config)
    base.pop("defaults", None)
    optimizer = dict(base.get("optimizer", {}))
    comments = _help_comments(method)
    if optimizer.pop("lr_scaling", "linear") == "none":
        factor = 256 / optimizer["batch_size"]
        official = optimizer["lr"]
        optimizer["lr"] = official * factor
        comments["optimizer.lr"] = (
            f"{official!r} at batch {optimizer['batch_size']} after solo-learn's linear scaling "
            "(batch_size * devices / 256)"
        )
        if "classifier_lr" in optimizer:
            optimizer["classifier_lr"] = optimizer["classifier_lr"] * factor
    comments["data.dataset"] = "change here for cifar100"
    suffix = "lt" if long_tail else ""
    data: Dict[str, Any] = {
        "dataset": dataset,
        "train_path": "./datasets",
        "val_path": "./datasets",
        "format": "image_folder",
        "num_workers": 4,
    }
    if long_tail:
        lt = _load(SCRIPTS / "data" / "cifar10lt.yaml")["long_tail"]
        data["long_tail"] = lt
        comments["data.long_tail"] = "CIFAR-10-LT / CIFAR-100-LT (Cao et al., 2019)"
        comments["data.long_tail.profile"] = "exp | step | pareto | none"
        comments["data.long_tail.class_order"] = "natural | permuted | a list of class ids"
    name = f"{method.name.replace('_', '-')}-{dataset}{suffix}"
    config: Dict[str, Any] = {
        "defaults": [
            "_self_",
            {"augmentations": method.solo_augmentation},
            {"wandb": "private.yaml"},
            {"override hydra/hydra_logging": "disabled"},
            {"override hydra/job_logging": "disabled"},
        ],
        "hydra": {"output_subdir": None, "run": {"dir": "."}},
        "name": name,
        "method": method.name,
        "backbone": base.get("backbone", {"name": "resnet18"}),
        "method_kwargs": base["method_kwargs"],
    }
    if method.momentum and "momentum" in base:
        config["momentum"] = base["momentum"]
    config["data"] = data
    config["optimizer"] = optimizer
    config["scheduler"] = base.get("scheduler", {"name": "warmup_cosine"})
    config.update(
        {
            "checkpoint": {"enabled": True, "dir": "trained_models", "frequency": 1},
            "auto_resume": {"enabled": True},
            "max_epochs": base.get("max_epochs", 1000),
            "devices": [0],
            "sync_batchnorm": True,
            "accelerator": "gpu",
            "strategy": "ddp",
            "precision": "16-mixed",
        }
    )
    comments["name"] = "change here for cifar100"
    lines = _header(SCRIPTS / "base" / method.base_config)
    lines.append(
        f"# Generated from solo-multiview's scripts/pretrain/base/{method.base_config}"
        + (" and data/cifar10lt.yaml." if long_tail else ".")
    )
    body = emit(config, comments)
    # solo-learn's configs separate the hydra block with a comment
    out: List[str] = []
    for line in body:
        if line.startswith("hydra:"):
            out += ["", "# disable hydra outputs"]
        if line.startswith("name:") or line.startswith("checkpoint:"):
            out.append("")
        if line.startswith("max_epochs:"):
            out += ["", "# overwrite PL stuff"]
        out.append(line)
    return "\n".join(lines + out) + "\n"


def config_files(method: SoloMethod) -> Dict[str, str]:
    root = "scripts/pretrain/cifar"
    return {
        f"{root}/{method.name}.yaml": pretrain_config(method),
        f"{root}/{method.name}_lt.yaml": pretrain_config(method, long_tail=True),
        f"{root}/augmentations/{method.solo_augmentation}": augmentation_file(method),
    }


def long_tail_settings() -> List[str]:
    """``solo/args/pretrain.py`` lines for the ``data.long_tail`` keys, from the plugin's
    LongTailConfig (its defaults and help)."""
    from solo_multiview.data.longtail import DEFAULTS, LongTailConfig

    lines = []
    for info in describe(LongTailConfig):
        if info.key not in DEFAULTS:
            continue  # split_file: the plugin's image_list source only
        default = DEFAULTS[info.key]
        value = f'"{default}"' if isinstance(default, str) else repr(default)
        # a null profile / ratio means "the dataset's" in the plugin; here the defaults are used
        text = re.sub(r"\s*\(null: the dataset's\)", "", info.help)
        lines += ["# " + line for line in textwrap.wrap(text, width=100 - 8 - 2)]
        lines.append(
            f'cfg.data.long_tail.{info.key} = omegaconf_select(cfg, "data.long_tail.{info.key}", '
            f"{value})"
        )
    return lines
