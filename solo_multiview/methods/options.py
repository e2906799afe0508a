"""Config options shared by several methods, declared and checked in one place."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import omegaconf
from omegaconf import OmegaConf

from solo_multiview.config.common import select
from solo_multiview.losses.band_filter import Band, validate_band


def positive_int(value: Any) -> bool:
    """An int > 0 (bools and floats such as 16.7 are not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def number_above(minimum: float, strict: bool = True) -> Callable[[Any], bool]:
    """Predicate: a finite number > ``minimum`` (>= when ``strict`` is False)."""

    def check(value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value):
            return False
        return value > minimum if strict else value >= minimum

    return check


def require(cfg: omegaconf.DictConfig, key: str, check: Callable[[Any], bool],
            what: str) -> None:
    """Raises ValueError naming ``key`` when it is missing or ``check(value)`` is false."""
    value = select(cfg, key)
    if value is None or OmegaConf.is_missing(cfg, key):
        raise ValueError(f"{key}: missing; expected {what}")
    try:
        ok = check(value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{key}: got {value!r}; expected {what}")


def require_positive_ints(cfg: omegaconf.DictConfig, *keys: str) -> None:
    """``require`` of a positive int for every ``method_kwargs.<key>``."""
    for key in keys:
        require(cfg, f"method_kwargs.{key}", positive_int, "a positive int")


def refuse_small_crops(cfg: omegaconf.DictConfig, method: str) -> None:
    """For methods whose loss has no place for small crops: a config error if there are any."""
    num_small = select(cfg, "data.num_small_crops", 0) or 0
    if num_small:
        raise ValueError(
            f"augmentations: {method} uses the K large crops only, got {num_small} small crops "
            "(entries whose crop_size differs from the first entry's); remove them or use "
            "mv_byol / mv_simsiam for multi-crop"
        )


def check_num_large_crops(cfg: omegaconf.DictConfig, method: str, minimum: int = 2) -> None:
    """A K-view method needs K >= ``minimum`` large crops."""
    num_large = cfg.data.num_large_crops
    declared = select(cfg, "method_kwargs.num_views")
    if declared is not None and int(declared) != num_large:
        raise ValueError(
            f"method_kwargs.num_views: {declared} but the augmentations give {num_large} large "
            "crops; make augmentations[*].num_crops add up to num_views"
        )
    if num_large < minimum:
        raise ValueError(
            f"augmentations[*].num_crops: {method} needs at least {minimum} large crops (K >= "
            f"{minimum}), got K = {num_large}"
        )


def add_filter_defaults(
    cfg: omegaconf.DictConfig, enabled: bool = False, low: float = 0.1, high: float = 0.9,
    mode: str = "band",
) -> omegaconf.DictConfig:
    """``method_kwargs.filter``: the paper's extreme-feature filter (DESIGN section 5).

    enabled (bool), low / high (band on |cosine|, 0 <= low < high <= 1), mode (``band`` keeps
    low <= |s| <= high; ``low_only`` keeps |s| >= low, the paper's ImageNet variant)."""
    cfg.method_kwargs.filter = select(cfg, "method_kwargs.filter", {})
    node = cfg.method_kwargs.filter
    node.enabled = select(cfg, "method_kwargs.filter.enabled", enabled)
    node.low = select(cfg, "method_kwargs.filter.low", low)
    node.high = select(cfg, "method_kwargs.filter.high", high)
    node.mode = select(cfg, "method_kwargs.filter.mode", mode)
    validate_band(node.low, node.high, node.mode)
    return cfg


def filter_band(cfg: omegaconf.DictConfig) -> Optional[Band]:
    """The filter's (low, high, mode) when it is enabled, else None."""
    node = cfg.method_kwargs.filter
    return validate_band(node.low, node.high, node.mode) if node.enabled else None
