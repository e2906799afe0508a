"""The view spec: what a method trains on, as a value every layer reads.

A method declares its views (``methods/base.py``: ``views(cfg)``); the data pipelines (torchvision,
DALI), the batched K-view step, the config checks and the resume key read the spec, so no code
outside ``methods/`` needs to know a method's name. Two schemes:

- ``crops``: K large crops per image (+ S small crops), from the ``augmentations`` list, crop-major
  in the batch (``[indexes, crops, targets]``, ``crops[k]`` is crop k of every image).
- ``pairs``: the MIMV scheme of arXiv 2509.08469: K partner images per anchor, each pair giving
  four views (``x_n, y_a, x_a, y_n``; ``data/pairing.py``), so the batch has 4K crops. mttv
  always uses it; any other method with ``method_kwargs.mimv.enabled`` (:class:`MIMVKwargs`).

K has one name from the config to the loss: ``method_kwargs.num_views``.
"""

from __future__ import annotations

from dataclasses import dataclass

from solo_multiview.config.schema import section, setting

SCHEMES = ("crops", "pairs")
PARTNERS = ("image", "none")
ROLES = ("normalized_augmented", "augmented_augmented")
FUSIONS = ("sum", "concat")


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
    fusion: str = "sum"

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
    def loss_views(self) -> int:
        """Views the method's loss sees per sample: K crops, or the two fused views of a pair
        (a sample is then an (anchor, partner) pair)."""
        return 2 if self.scheme == "pairs" else self.num_views

    @property
    def data_depends_on_workers(self) -> bool:
        """The partner draws are seeded per data loader worker, so resuming needs the same
        ``data.num_workers`` (``training/resume.py``)."""
        return self.scheme == "pairs"


@dataclass
class MIMVKwargs:
    """``method_kwargs.mimv``: the paper's multi-image views for any method (``hosts/
    multiview_step.py`` builds them): K = ``num_views`` partner images per anchor, each pair
    giving the fused views (x_n (+) y_a) and (x_a (+) y_n) of one sample."""

    enabled: bool = setting(False, "train on MIMV pairs instead of K crops of one image")
    fusion: str = setting("sum", "how the two images of a view are fused", choices=FUSIONS)
    partner: str = setting("image", "a random partner image, or none (y = x)",
                           choices=PARTNERS)
    roles: str = setting("normalized_augmented", "x_n, y_n normalised only, or augmented too "
                         "(augmented_augmented)", choices=ROLES)


@dataclass
class NumViewsKwargs:
    """K, the one name it has from the config to the loss."""

    num_views: int = setting(2, "K: views per image (large crops), or partner images per "
                             "anchor with mimv; at least the method's min_views", minimum=1)


@dataclass
class ViewKwargs(NumViewsKwargs):
    """The ``method_kwargs`` every method has: K and the view scheme. Methods' ``Kwargs``
    subclass it (mttv, whose views are always MIMV pairs with keys of its own, subclasses
    :class:`NumViewsKwargs`)."""

    mimv: MIMVKwargs = section(MIMVKwargs, "the paper's multi-image views (off)")
