"""The view spec: what a method trains on, as a value every layer reads.

A method declares its views (``methods/base.py``: ``views(cfg)``); the data pipelines (torchvision,
DALI), the batched K-view step, the config checks and the resume key read the spec, so no code
outside ``methods/`` needs to know a method's name. Two schemes:

- ``crops``: K large crops per image (+ S small crops), from the ``augmentations`` list, crop-major
  in the batch (``[indexes, crops, targets]``, ``crops[k]`` is crop k of every image).
- ``pairs``: the MIMV scheme of arXiv 2509.08469: K partner images per anchor, each pair giving
  four views (``x_n, y_a, x_a, y_n``; ``data/pairing.py``), so the batch has 4K crops.

K has one name from the config to the loss: ``method_kwargs.num_views``.
"""

from __future__ import annotations

from dataclasses import dataclass

from solo_multiview.config.schema import setting

SCHEMES = ("crops", "pairs")
PARTNERS = ("image", "none")
ROLES = ("normalized_augmented", "augmented_augmented")


@dataclass(frozen=True)
class ViewSpec:
    """``num_views`` = K; ``num_small`` small crops (``crops`` only); ``partner`` and ``roles``
    of the ``pairs`` scheme (``partner: none`` pairs an image with itself; ``roles:
    augmented_augmented`` augments the normalised views too)."""

    num_views: int
    num_small: int = 0
    scheme: str = "crops"
    partner: str = "image"
    roles: str = "normalized_augmented"

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"views: unknown scheme {self.scheme!r}; choose one of {SCHEMES}")
        if self.scheme == "pairs" and self.num_small:
            raise ValueError(f"augmentations: the pairs view scheme takes no small crops, got "
                             f"{self.num_small}")

    @property
    def num_crops(self) -> int:
        """Tensors per image in a batch."""
        return 4 * self.num_views if self.scheme == "pairs" else self.num_views + self.num_small

    @property
    def data_depends_on_workers(self) -> bool:
        """The partner draws are seeded per data loader worker, so resuming needs the same
        ``data.num_workers`` (``training/resume.py``)."""
        return self.scheme == "pairs"


@dataclass
class ViewKwargs:
    """The ``method_kwargs`` every method has: K. Methods' ``Kwargs`` subclass it."""

    num_views: int = setting(2, "K: views per image (large crops, or partner pairs for the "
                             "pairs scheme); at least the method's min_views", minimum=1)
