"""The extreme-feature filter of MTTV/MIMV (arXiv 2509.08469), as one object.

In an InfoNCE-type loss every similarity entry ``s`` (a cosine) whose magnitude is *extreme* is
removed from the softmax sums. With a band ``[low, high]``:

- ``mode="band"``:     keep ``s``  iff  ``low <= |s| <= high``   (official setting for CIFAR,
  ``low=0.1, high=0.9``): near-duplicates (|s| > high) and near-orthogonal pairs (|s| < low) go.
- ``mode="low_only"``: keep ``s``  iff  ``|s| >= low``            (official ImageNet variant).

"No filter" is spelled one way: ``None`` where a loss takes ``band`` (from a config,
``method_kwargs.filter.enabled: false``). A :class:`BandFilter` is validated when it is built
(``0 <= low < high <= 1``; ``high`` is checked in ``low_only`` mode too), so a loss never
re-validates it per step. How a loss treats removed *positives* is documented by each loss (the
contrastive losses here drop an anchor whose positive is removed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BAND_MODES = ("band", "low_only")
DEFAULT_LOW = 0.1
DEFAULT_HIGH = 0.9


@dataclass(frozen=True)
class BandFilter:
    """Keep the similarity entries whose magnitude lies in the band (module docstring).

    Raises ``ValueError`` naming ``method_kwargs.filter.*`` on invalid settings."""

    low: float = DEFAULT_LOW
    high: float = DEFAULT_HIGH
    mode: str = "band"

    def __post_init__(self) -> None:
        if self.mode not in BAND_MODES:
            raise ValueError(f"method_kwargs.filter.mode must be one of "
                             f"{', '.join(BAND_MODES)}; got {self.mode!r} "
                             "(method_kwargs.filter.enabled: false turns the filter off)")
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                      for v in (self.low, self.high))
        if not numbers or not (math.isfinite(self.low) and math.isfinite(self.high)
                               and 0.0 <= self.low < self.high <= 1.0):
            raise ValueError(
                "method_kwargs.filter.low and method_kwargs.filter.high must satisfy "
                f"0 <= low < high <= 1; got low={self.low!r}, high={self.high!r}"
            )
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))

    def keep(self, sim: torch.Tensor) -> torch.Tensor:
        """Boolean mask (shape of ``sim``) of the entries kept; carries no gradient."""
        s = sim.detach().abs()
        if self.mode == "low_only":
            return s >= self.low
        return (s >= self.low) & (s <= self.high)
