"""Small config helpers shared by the pretraining and evaluation configs."""

from __future__ import annotations

from typing import Any, Sequence

import omegaconf
from omegaconf import OmegaConf


def select(cfg: omegaconf.DictConfig, key: str, default: Any = None) -> Any:
    """``OmegaConf.select`` that reads the string "None" as None (solo-learn's convention)."""
    value = OmegaConf.select(cfg, key, default=default)
    return None if value == "None" else value


def check_choice(cfg: omegaconf.DictConfig, key: str, allowed: Sequence[Any]) -> Any:
    """The value at ``key``; ValueError naming the key and ``allowed`` when it is not one."""
    value = select(cfg, key)
    if value not in allowed:
        shown = "missing" if value is None else f"unknown value {value!r}"
        raise ValueError(f"{key}: {shown}; choose one of {list(allowed)}")
    return value
