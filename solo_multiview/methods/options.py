"""``method_kwargs`` pieces several methods share, declared once: the band filter.

A method's ``Kwargs`` dataclass subclasses ``data.views.ViewKwargs`` (every method has K =
``method_kwargs.num_views``) and, for contrastive methods, holds a ``filter`` section
(:class:`FilterKwargs`, off by default; :class:`EnabledFilterKwargs` for methods that filter by
default, as mttv does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from solo_multiview.config.schema import setting
from solo_multiview.losses.band_filter import BAND_MODES, DEFAULT_HIGH, DEFAULT_LOW, BandFilter


@dataclass
class FilterKwargs:
    """``method_kwargs.filter``: the extreme-feature band filter of arXiv 2509.08469
    (``losses/band_filter.py``)."""

    enabled: bool = setting(False, "remove similarities outside the band from the softmax sums")
    low: float = setting(DEFAULT_LOW, "lower bound on |cosine| (0 <= low < high <= 1)")
    high: float = setting(DEFAULT_HIGH, "upper bound on |cosine| (band mode)")
    mode: str = setting("band", "band keeps low <= |s| <= high; low_only keeps |s| >= low "
                        "(the paper's ImageNet variant)", choices=BAND_MODES)

    @staticmethod
    def check_node(node: Any, path: str) -> None:
        """The band is validated whether or not it is enabled (config/schema.py calls this)."""
        BandFilter(node.low, node.high, node.mode)


@dataclass
class EnabledFilterKwargs(FilterKwargs):
    enabled: bool = setting(True, "remove similarities outside the band from the softmax sums")


def band_filter(node: Any) -> Optional[BandFilter]:
    """The filter of a ``method_kwargs.filter`` node: a validated :class:`BandFilter`, or None
    when it is disabled (the one way "off" is spelled)."""
    if not node.enabled:
        return None
    return BandFilter(node.low, node.high, node.mode)
