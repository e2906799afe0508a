"""``select``: solo-learn's reading of a config key, for evaluation code that reads args.json
(saved configs of any age) rather than a parsed config."""

from __future__ import annotations

from typing import Any

import omegaconf
from omegaconf import OmegaConf


def select(cfg: omegaconf.DictConfig, key: str, default: Any = None) -> Any:
    """``OmegaConf.select`` that reads the string "None" as None (solo-learn's convention)."""
    value = OmegaConf.select(cfg, key, default=default)
    return None if value == "None" else value
