"""The extreme-feature filter of MTTV/MIMV (arXiv 2509.08469).

In an InfoNCE-type loss every similarity entry ``s`` (a cosine) whose magnitude is *extreme* is
removed from the softmax sums. With a band ``[low, high]``:

- ``mode="band"``:     keep ``s``  iff  ``low <= |s| <= high``   (official setting for CIFAR,
  ``low=0.1, high=0.9``): near-duplicates (|s| > high) and near-orthogonal pairs (|s| < low) go.
- ``mode="low_only"``: keep ``s``  iff  ``|s| >= low``            (official ImageNet variant).
- ``mode="none"``:     keep everything.

The config lives under ``method_kwargs.filter`` with keys ``low``, ``high`` and ``mode``; the
bounds must satisfy ``0 <= low < high <= 1`` (``high`` is still validated in ``low_only`` mode).
How a loss treats removed *positives* is documented by each loss (the contrastive losses here drop
an anchor whose positive is removed).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Optional

import torch

BAND_MODES = ("band", "low_only", "none")
DEFAULT_LOW = 0.1
DEFAULT_HIGH = 0.9


class Band(NamedTuple):
    """Filter settings; a plain ``(low, high, mode)`` tuple works wherever a Band is accepted."""

    low: float = DEFAULT_LOW
    high: float = DEFAULT_HIGH
    mode: str = "band"


def validate_band(low: float, high: float, mode: str = "band") -> Band:
    """Check the filter settings and return them as a :class:`Band`.

    Raises:
        ValueError: naming ``method_kwargs.filter.mode`` / ``.low`` / ``.high`` and the valid range.
    """
    if mode not in BAND_MODES:
        raise ValueError(
            f"method_kwargs.filter.mode must be one of {', '.join(BAND_MODES)}; got {mode!r}"
        )
    try:
        low_f, high_f = float(low), float(high)
    except (TypeError, ValueError):
        raise ValueError(
            "method_kwargs.filter.low and method_kwargs.filter.high must be numbers with "
            f"0 <= low < high <= 1; got low={low!r}, high={high!r}"
        ) from None
    ok = (
        not isinstance(low, bool)
        and not isinstance(high, bool)
        and math.isfinite(low_f)
        and math.isfinite(high_f)
        and 0.0 <= low_f < high_f <= 1.0
    )
    if not ok:
        raise ValueError(
            "method_kwargs.filter.low and method_kwargs.filter.high must satisfy "
            f"0 <= low < high <= 1; got low={low!r}, high={high!r}"
        )
    return Band(low_f, high_f, mode)


def band_from_cfg(filter_cfg: Optional[Mapping[str, Any]]) -> Optional[Band]:
    """Build the filter from ``method_kwargs.filter`` (a dict or omegaconf node).

    ``None``, an empty mapping, or ``mode: none`` give ``None`` (no filtering). Missing keys take
    the official CIFAR defaults ``low=0.1, high=0.9, mode=band``.
    """
    if not filter_cfg:
        return None
    unknown = set(filter_cfg.keys()) - {"low", "high", "mode"}
    if unknown:
        raise ValueError(
            f"method_kwargs.filter has unknown keys {sorted(unknown)}; valid keys: low, high, mode"
        )
    band = validate_band(
        filter_cfg.get("low", DEFAULT_LOW),
        filter_cfg.get("high", DEFAULT_HIGH),
        filter_cfg.get("mode", "band"),
    )
    return None if band.mode == "none" else band


def keep_mask(
    sim: torch.Tensor, low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH, mode: str = "band"
) -> torch.Tensor:
    """Boolean mask of the similarity entries the filter keeps (same shape as ``sim``).

    ``band``: ``low <= |s| <= high``; ``low_only``: ``|s| >= low``; ``none``: all True.
    The mask carries no gradient.
    """
    band = validate_band(low, high, mode)
    s = sim.detach().abs()
    if band.mode == "none":
        return torch.ones_like(s, dtype=torch.bool)
    if band.mode == "low_only":
        return s >= band.low
    return (s >= band.low) & (s <= band.high)
