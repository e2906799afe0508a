"""One augmentation entry of ``cfg.augmentations`` read into plain numbers for the DALI graph.

The schema and its validation are the torchvision path's (``data/augmentations.py``): the same keys,
the same defaults (a missing op or prob 0 is off; a missing ``rrc`` is enabled with scale
(0.08, 1.0)), the same normalisation statistics and blur kernel size, and the same errors for bad
values. This module imports nothing from DALI, so a config is checked before DALI is needed.

The keys only the torchvision path implements (``order``, ``squash``, ``rrc.interpolation``,
``gaussian_blur.kernel_size``; ``augmentations.TORCHVISION_ONLY_DEFAULTS``) are refused here
with one line naming the key when they differ from their defaults: the DALI and batched
pipelines run solo-learn's order with bicubic crops and the default blur kernel, and would
otherwise ignore them silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from solo_multiview.data.augmentations import (
    AUG_KEYS,
    BLUR_SIGMA,
    TORCHVISION_ONLY_DEFAULTS,
    blur_kernel_size,
    check_augmentation_list,
    normalization_stats,
    positive_int_entry,
    probability,
    section,
)

#: torchvision's RandomResizedCrop aspect-ratio range (width / height), also used by DALI.
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
#: Solarization inverts pixels >= this value (PIL's and torchvision's default threshold).
SOLARIZE_THRESHOLD = 128


@dataclass(frozen=True)
class CropSpec:
    """One pipeline of the schema: ``num_crops`` crops of ``crop_size`` x ``crop_size``.

    Jitter ranges follow torchvision's ColorJitter: a factor ``f`` in
    ``[max(0, 1 - v), 1 + v]`` for brightness/contrast/saturation ``v``, a hue shift in
    ``[-hue, hue]`` (fraction of the colour circle, ``0 <= hue <= 0.5``).
    """

    crop_size: int
    num_crops: int
    rrc_enabled: bool
    rrc_scale: tuple[float, float]
    jitter_prob: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    grayscale_prob: float
    blur_prob: float
    solarization_prob: float
    equalization_prob: float
    flip_prob: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def blur_window(self) -> int:
        """Odd kernel size nearest ``crop_size / 10`` (at least 3), as torchvision's path."""
        return blur_kernel_size(self.crop_size)

    @property
    def blur_sigma(self) -> tuple[float, float]:
        return BLUR_SIGMA

    @staticmethod
    def factor_range(strength: float) -> tuple[float, float]:
        """torchvision's jitter range for a brightness/contrast/saturation strength."""
        return max(0.0, 1.0 - strength), 1.0 + strength


def _plain(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _jitter_strength(node: Mapping[str, Any], key: str, where: str, upper: float) -> float:
    value = float(node.get(key, 0.0) or 0.0)
    if not 0.0 <= value <= upper:
        raise ValueError(
            f"{where}.color_jitter.{key} must lie in [0, {upper:g}], got {value} "
            "(torchvision's ColorJitter range)"
        )
    return value


def refuse_torchvision_only(entry: Mapping[str, Any], where: str) -> None:
    """ValueError naming the first key of ``TORCHVISION_ONLY_DEFAULTS`` whose value differs
    from its default (module docstring)."""
    for key, default in TORCHVISION_ONLY_DEFAULTS.items():
        node: Any = entry
        for part in key.split("."):
            node = node.get(part, None) if isinstance(node, Mapping) else None
        if node is not None and node != default:
            raise ValueError(
                f"{where}.{key}: {node!r} is implemented by the torchvision loader only "
                f"(data.format=image_folder); this pipeline supports only {default!r}"
            )


def parse_crop_spec(entry: Mapping[str, Any], dataset: str, where: str) -> CropSpec:
    """A validated :class:`CropSpec` from one schema entry (a dict or DictConfig)."""
    entry = _plain(entry)
    unknown = sorted(set(entry) - set(AUG_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {list(AUG_KEYS)}")
    refuse_torchvision_only(entry, where)
    size = positive_int_entry(entry, "crop_size", where)
    count = positive_int_entry(entry, "num_crops", where)
    mean, std = normalization_stats(dataset, entry)

    rrc = section(entry, "rrc")
    enabled = bool(rrc.get("enabled", True))
    scale = (float(rrc.get("crop_min_scale", 0.08)), float(rrc.get("crop_max_scale", 1.0)))
    if enabled and not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(
            f"{where}.rrc: need 0 < crop_min_scale <= crop_max_scale <= 1, got {scale}"
        )
    jitter_prob = probability(entry, "color_jitter", where)
    cj = section(entry, "color_jitter")
    inf = float("inf")
    return CropSpec(
        crop_size=size,
        num_crops=count,
        rrc_enabled=enabled,
        rrc_scale=scale,
        jitter_prob=jitter_prob,
        brightness=_jitter_strength(cj, "brightness", where, inf) if jitter_prob else 0.0,
        contrast=_jitter_strength(cj, "contrast", where, inf) if jitter_prob else 0.0,
        saturation=_jitter_strength(cj, "saturation", where, inf) if jitter_prob else 0.0,
        hue=_jitter_strength(cj, "hue", where, 0.5) if jitter_prob else 0.0,
        grayscale_prob=probability(entry, "grayscale", where),
        blur_prob=probability(entry, "gaussian_blur", where),
        solarization_prob=probability(entry, "solarization", where),
        equalization_prob=probability(entry, "equalization", where),
        flip_prob=probability(entry, "horizontal_flip", where),
        mean=tuple(mean),  # type: ignore[arg-type]
        std=tuple(std),  # type: ignore[arg-type]
    )


def parse_augmentations(augmentations: Sequence[Mapping[str, Any]], dataset: str) -> list[CropSpec]:
    """Every entry of ``cfg.augmentations`` (validated as the torchvision path does: non-empty,
    large crops, i.e. the first entry's crop size, first)."""
    augmentations = _plain(augmentations)
    if not isinstance(augmentations, Sequence) or isinstance(augmentations, (str, bytes)):
        raise ValueError(f"augmentations: expected a list of dicts, got {augmentations!r}")
    check_augmentation_list(augmentations)
    return [
        parse_crop_spec(entry, dataset, f"augmentations[{i}]")
        for i, entry in enumerate(augmentations)
    ]


def eval_spec(crop_size: int, mean: Sequence[float], std: Sequence[float]) -> CropSpec:
    """The "normalised only" view (torchvision's EvalTransform): resize the short side to
    ``crop_size`` (bicubic), centre-crop a square, normalise; no random op."""
    return CropSpec(
        crop_size=int(crop_size), num_crops=1, rrc_enabled=False, rrc_scale=(1.0, 1.0),
        jitter_prob=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0,
        grayscale_prob=0.0, blur_prob=0.0, solarization_prob=0.0, equalization_prob=0.0,
        flip_prob=0.0, mean=tuple(mean), std=tuple(std),  # type: ignore[arg-type]
    )
