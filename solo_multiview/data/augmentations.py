"""torchvision (v2) transforms from solo-learn's augmentation schema.

One entry of ``cfg.augmentations`` describes one pipeline applied ``num_crops`` times::

    rrc: {enabled, crop_min_scale, crop_max_scale, interpolation}   # RandomResizedCrop
    color_jitter: {prob, brightness, contrast, saturation, hue}
    grayscale: {prob}   gaussian_blur: {prob, kernel_size}   solarization: {prob}
    equalization: {prob}   horizontal_flip: {prob}   crop_size: int   num_crops: int
    [mean: 3 floats, std: 3 floats]   order: solo | mttv | [op names]   squash: bool

The ops run on the PIL image in ``order``, by default solo-learn's (``solo``): crop, jitter,
grayscale, blur, solarize, equalize, flip; ``mttv`` is the order of the MTTV authors' kornia
pipeline (``Preprocess/MTTVDataAugmentation.py:21-33`` of anonymouspersoncscv/MTTV): jitter,
grayscale, crop, flip, blur (then solarize, equalize, which they do not use); a list names the
ops (``rrc, color_jitter, grayscale, gaussian_blur, solarization, equalization,
horizontal_flip``), each at most once, and must include every op that is on (``rrc`` always:
disabled it is the resize + centre crop). Then ``x = (pixel / 255 - mean) / std`` as float32.
An op whose key is missing or whose prob is 0 is skipped; a missing ``rrc`` means ``enabled``
with scale (0.08, 1.0).

- Random resized crop: aspect ratio in (3/4, 4/3), resampled ``bicubic`` (default, solo-learn)
  or ``bilinear`` (``rrc.interpolation``, the MTTV authors' kornia default; here PIL's bilinear
  resize, which, unlike kornia's ``align_corners=True`` interpolation, samples pixel centres
  and antialiases when shrinking).
- ``squash``: first resize every image to ``crop_size x crop_size`` without keeping its aspect
  ratio (PIL bilinear, torchvision's ``Resize((S, S))``), before every op; mttv's normalised
  views (``EvalTransform(squash=True)``) too. This is how the MTTV authors load ImageNet-LT
  (``data/Imagenet/imagenet_lt_dataset.py:60, 87``).
- Gaussian blur: ``sigma ~ U[0.1, 2.0]``, kernel size ``gaussian_blur.kernel_size`` (odd), by
  default the odd number nearest ``crop_size / 10`` (ties upward, at least 3), as in SimCLR
  (23 at 224; the MTTV authors round ``int(0.1 * 224) = 22`` down to 21).
- Solarization: invert pixels >= 128 (PIL's default threshold).
- rrc disabled: resize the short side to ``crop_size`` and centre-crop a square, so every crop
  has the configured size.
- Normalisation: CIFAR-10/100 statistics for ``cifar10``/``cifar100``, ImageNet statistics
  otherwise; an entry's ``mean``/``std`` override them.

Crops of a multi-crop transform come out in list order, so the entries with the largest
``crop_size`` (the "large" crops, the first entry's size) must come first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Callable, List, Optional

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from solo_multiview.config.schema import ConfigError, section, setting

MEAN_STD: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

#: the ops of an entry, by their keys
OPS = ("rrc", "color_jitter", "grayscale", "gaussian_blur", "solarization", "equalization",
       "horizontal_flip")
#: named op orders (``augmentations[*].order``)
ORDERS: dict[str, tuple[str, ...]] = {
    "solo": ("rrc", "color_jitter", "grayscale", "gaussian_blur", "solarization",
             "equalization", "horizontal_flip"),
    # anonymouspersoncscv/MTTV Preprocess/MTTVDataAugmentation.py:21-33 (kornia): jitter,
    # grayscale, random resized crop, flip, blur; solarize/equalize (unused there) last
    "mttv": ("color_jitter", "grayscale", "rrc", "horizontal_flip", "gaussian_blur",
             "solarization", "equalization"),
}
INTERPOLATIONS = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}
#: the values of the keys that only the torchvision path implements (DALI/batched refuse others)
TORCHVISION_ONLY_DEFAULTS = {"order": "solo", "squash": False, "rrc.interpolation": "bicubic",
                             "gaussian_blur.kernel_size": None}


@dataclass
class RandomResizedCropConfig:
    enabled: bool = setting(True, "random resized crop (false: resize + centre crop)")
    crop_min_scale: float = setting(0.08, "smallest crop area fraction", above=0, maximum=1)
    crop_max_scale: float = setting(1.0, "largest crop area fraction", above=0, maximum=1)
    interpolation: str = setting("bicubic", "resampling of the crop (and of the resize when "
                                 "disabled): bicubic (solo-learn) | bilinear (the MTTV "
                                 "authors'); torchvision path only",
                                 choices=tuple(INTERPOLATIONS))


@dataclass
class ColorJitterConfig:
    prob: float = setting(0.0, "probability of jittering", minimum=0, maximum=1)
    brightness: float = setting(0.0, "brightness factor range [1 - b, 1 + b]", minimum=0)
    contrast: float = setting(0.0, "contrast factor range [1 - c, 1 + c]", minimum=0)
    saturation: float = setting(0.0, "saturation factor range [1 - s, 1 + s]", minimum=0)
    hue: float = setting(0.0, "hue shift range [-h, h]", minimum=0, maximum=0.5)


@dataclass
class ProbabilityConfig:
    prob: float = setting(0.0, "probability of applying the op", minimum=0, maximum=1)


@dataclass
class GaussianBlurConfig:
    prob: float = setting(0.0, "probability of applying the op", minimum=0, maximum=1)
    kernel_size: Optional[int] = setting(None, "odd kernel size (null: the odd number nearest "
                                         "crop_size / 10, at least 3); torchvision path only",
                                         minimum=1)


@dataclass
class AugmentationConfig:
    """One entry of ``augmentations``: one pipeline applied ``num_crops`` times."""

    rrc: RandomResizedCropConfig = section(RandomResizedCropConfig)
    color_jitter: ColorJitterConfig = section(ColorJitterConfig)
    grayscale: ProbabilityConfig = section(ProbabilityConfig)
    gaussian_blur: GaussianBlurConfig = section(GaussianBlurConfig)
    solarization: ProbabilityConfig = section(ProbabilityConfig)
    equalization: ProbabilityConfig = section(ProbabilityConfig)
    horizontal_flip: ProbabilityConfig = section(ProbabilityConfig)
    crop_size: int = setting(help="output size (pixels); large crops share the first entry's",
                             minimum=1)
    num_crops: int = setting(help="crops of this pipeline per image (the large entries add "
                             "up to method_kwargs.num_views)", minimum=1)
    mean: Optional[List[float]] = setting(None, "normalisation mean (null: the dataset's)")
    std: Optional[List[float]] = setting(None, "normalisation std (null: the dataset's)")
    order: Any = setting("solo", "op order: solo (crop, jitter, grayscale, blur, solarize, "
                         "equalize, flip) | mttv (jitter, grayscale, crop, flip, blur: the MTTV "
                         "authors') | a list of op names; torchvision path only")
    squash: bool = setting(False, "first resize every image to crop_size x crop_size, aspect "
                           "ratio not kept (bilinear), mttv's normalised views too (the MTTV "
                           "authors' ImageNet-LT); torchvision path only")

    @staticmethod
    def check_node(node: Any, path: str) -> None:
        """``order`` is a known name or a valid list; ``gaussian_blur.kernel_size`` is odd
        (config/schema.py calls this)."""
        op_order(node, path or "augmentations[*]")
        blur = node.get("gaussian_blur") if hasattr(node, "get") else None
        size = blur.get("kernel_size") if blur is not None else None
        if size is not None and size % 2 == 0:
            raise ConfigError(f"{path}.gaussian_blur.kernel_size: got {size}; expected an odd "
                              "int (the blur kernel has a centre pixel)")


AUG_KEYS = tuple(f.name for f in fields(AugmentationConfig))
BLUR_SIGMA = (0.1, 2.0)

Transform = Callable[[Image.Image], torch.Tensor]


def section(aug: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """The sub-dict ``aug[key]`` ({} when absent)."""
    node = aug.get(key, None)
    return {} if node is None else node


def probability(aug: Mapping[str, Any], key: str, where: str) -> float:
    """``aug[key].prob`` (0 when absent), checked to lie in [0, 1]."""
    p = float(section(aug, key).get("prob", 0.0) or 0.0)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{where}.{key}.prob must lie in [0, 1], got {p}")
    return p


def positive_int_entry(aug: Mapping[str, Any], key: str, where: str) -> int:
    """``aug[key]``, checked to be an int >= 1 (the error names ``where.key``)."""
    value = aug.get(key, None)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}.{key} must be an int >= 1, got {value!r}")
    return value


def normalization_stats(
    dataset: str, aug: Optional[Mapping[str, Any]] = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel: the aug entry's ``mean``/``std`` when given, else CIFAR's for
    cifar10/cifar100 and ImageNet's for every other dataset."""
    mean, std = MEAN_STD.get(dataset, IMAGENET_MEAN_STD)
    if aug is not None:
        mean = tuple(float(m) for m in aug.get("mean", None) or mean)
        std = tuple(float(s) for s in aug.get("std", None) or std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"augmentations: mean/std need 3 values (std > 0), got {mean}, {std}")
    return mean, std


def _active(aug: Mapping[str, Any], op: str) -> bool:
    if op == "rrc":  # enabled: the random crop; disabled: resize + centre crop
        return True
    node = aug.get(op, None)
    return bool(node) and float(node.get("prob", 0.0) or 0.0) > 0


def op_order(aug: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """The ops of ``aug`` in the order of its ``order`` key (module docstring); ValueError
    (a ConfigError) naming ``where.order`` when it is neither a known name nor a valid list."""
    order = aug.get("order", "solo")
    if order is None:
        order = "solo"
    if isinstance(order, str):
        if order not in ORDERS:
            raise ConfigError(f"{where}.order: unknown value {order!r}; choose one of "
                              f"{list(ORDERS)} or a list of op names from {list(OPS)}")
        return ORDERS[order]
    names = [str(name) for name in order] if isinstance(order, Sequence) else None
    if names is None:
        raise ConfigError(f"{where}.order: got {order!r}; expected one of {list(ORDERS)} or a "
                          f"list of op names from {list(OPS)}")
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise ConfigError(f"{where}.order: unknown op(s) {unknown}; the ops are {list(OPS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}.order: {names} names an op twice; give each op once")
    missing = [op for op in OPS if op not in names and _active(aug, op)]
    if missing:
        raise ConfigError(f"{where}.order: {names} leaves out {missing}, which are on in this "
                          "entry; list every op that is on (rrc always)")
    return tuple(names)


def interpolation_of(aug: Mapping[str, Any], where: str) -> InterpolationMode:
    """``rrc.interpolation`` (bicubic when absent) as torchvision's mode."""
    name = section(aug, "rrc").get("interpolation", None) or "bicubic"
    if name not in INTERPOLATIONS:
        raise ValueError(f"{where}.rrc.interpolation: unknown value {name!r}; choose one of "
                         f"{list(INTERPOLATIONS)}")
    return INTERPOLATIONS[name]


def blur_kernel_of(aug: Mapping[str, Any], where: str) -> int:
    """``gaussian_blur.kernel_size``, else :func:`blur_kernel_size` of the crop size."""
    size = section(aug, "gaussian_blur").get("kernel_size", None)
    if size is None:
        return blur_kernel_size(positive_int_entry(aug, "crop_size", where))
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(f"{where}.gaussian_blur.kernel_size: got {size!r}; expected an odd "
                         "int >= 1")
    return size


def blur_kernel_size(crop_size: int) -> int:
    """Odd integer nearest ``crop_size / 10`` (ties upward), at least 3:
    ``k = 2 * floor((crop_size / 10 - 1) / 2 + 1/2) + 1``."""
    k = 2 * math.floor((crop_size / 10 - 1) / 2 + 0.5) + 1
    return max(3, k)


def squash_resize(size: int) -> Callable[[Any], Any]:
    """Resize to ``size x size`` without keeping the aspect ratio (torchvision's
    ``Resize((S, S))``, PIL bilinear)."""
    return v2.Resize((size, size), interpolation=InterpolationMode.BILINEAR)


def _to_normalized_tensor(
    mean: Sequence[float], std: Sequence[float]
) -> list[Callable[[Any], Any]]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def build_transform(
    aug: Mapping[str, Any], dataset: str, where: str = "augmentations[0]"
) -> Transform:
    """One PIL -> float32 tensor (3 x crop_size x crop_size) pipeline from one aug entry."""
    unknown = sorted(set(aug) - set(AUG_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {list(AUG_KEYS)}")
    size = positive_int_entry(aug, "crop_size", where)
    mean, std = normalization_stats(dataset, aug)

    interpolation = interpolation_of(aug, where)
    built: dict[str, list[Callable[[Any], Any]]] = {}
    rrc = section(aug, "rrc")
    if rrc.get("enabled", True):
        scale = (float(rrc.get("crop_min_scale", 0.08)), float(rrc.get("crop_max_scale", 1.0)))
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(
                f"{where}.rrc: need 0 < crop_min_scale <= crop_max_scale <= 1, got {scale}"
            )
        built["rrc"] = [v2.RandomResizedCrop(size, scale=scale, interpolation=interpolation)]
    else:
        built["rrc"] = [v2.Resize(size, interpolation=interpolation), v2.CenterCrop(size)]

    p = probability(aug, "color_jitter", where)
    if p > 0:
        cj = section(aug, "color_jitter")
        jitter = v2.ColorJitter(
            brightness=float(cj.get("brightness", 0.0)),
            contrast=float(cj.get("contrast", 0.0)),
            saturation=float(cj.get("saturation", 0.0)),
            hue=float(cj.get("hue", 0.0)),
        )
        built["color_jitter"] = [v2.RandomApply([jitter], p=p)]
    p = probability(aug, "grayscale", where)
    if p > 0:
        built["grayscale"] = [v2.RandomGrayscale(p=p)]
    p = probability(aug, "gaussian_blur", where)
    if p > 0:
        blur = v2.GaussianBlur(blur_kernel_of(aug, where), sigma=BLUR_SIGMA)
        built["gaussian_blur"] = [v2.RandomApply([blur], p=p)]
    p = probability(aug, "solarization", where)
    if p > 0:
        built["solarization"] = [v2.RandomSolarize(threshold=128, p=p)]
    p = probability(aug, "equalization", where)
    if p > 0:
        built["equalization"] = [v2.RandomEqualize(p=p)]
    p = probability(aug, "horizontal_flip", where)
    if p > 0:
        built["horizontal_flip"] = [v2.RandomHorizontalFlip(p=p)]
    ops: list[Callable[[Any], Any]] = [squash_resize(size)] if aug.get("squash", False) else []
    for op in op_order(aug, where):
        ops += built.get(op, [])
    return v2.Compose(ops + _to_normalized_tensor(mean, std))


def count_crops(augmentations: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(num_large_crops, num_small_crops): an entry is large when its ``crop_size`` equals the
    first entry's, and contributes ``num_crops`` crops (solo-learn's parse step)."""
    if not augmentations:
        raise ValueError("augmentations: the list is empty; give at least one pipeline")
    large_size = augmentations[0].get("crop_size", None)
    large = small = 0
    for entry in augmentations:
        n = int(entry.get("num_crops", 0))
        if entry.get("crop_size", None) == large_size:
            large += n
        else:
            small += n
    return large, small


def check_augmentation_list(augmentations: Sequence[Mapping[str, Any]]) -> None:
    """A non-empty list; every ``num_crops`` >= 1; large entries (the first entry's crop_size,
    which must be the largest) come first."""
    if not augmentations:
        raise ValueError("augmentations: the list is empty; give at least one pipeline")
    for i, entry in enumerate(augmentations):
        positive_int_entry(entry, "num_crops", f"augmentations[{i}]")
    sizes = [positive_int_entry(a, "crop_size", f"augmentations[{i}]")
             for i, a in enumerate(augmentations)]
    if max(sizes) != sizes[0]:
        raise ValueError(
            f"augmentations: the first entry must have the largest crop_size (large crops "
            f"first), got crop sizes {sizes}"
        )
    seen_small = False
    for i, size in enumerate(sizes):
        if size != sizes[0]:
            seen_small = True
        elif seen_small:
            raise ValueError(
                f"augmentations[{i}]: a large crop (crop_size {size}) follows a small one; "
                f"put every entry with crop_size {sizes[0]} first, got crop sizes {sizes}"
            )


class MultiCropTransform:
    """Applies ``transforms[j]`` ``num_crops[j]`` times, in order; returns the list of crops."""

    def __init__(self, transforms: Sequence[Transform], num_crops: Sequence[int]) -> None:
        if len(transforms) != len(num_crops):
            raise ValueError("MultiCropTransform: one num_crops per transform")
        self.transforms = list(transforms)
        self.num_crops = [int(n) for n in num_crops]

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        return [t(image) for t, n in zip(self.transforms, self.num_crops) for _ in range(n)]

    def __repr__(self) -> str:
        return "\n".join(f"{n} x {t}" for t, n in zip(self.transforms, self.num_crops))


def build_multicrop_transform(
    augmentations: Sequence[Mapping[str, Any]], dataset: str
) -> MultiCropTransform:
    """The K-crop transform of ``cfg.augmentations`` (large entries first, validated)."""
    check_augmentation_list(augmentations)
    transforms, counts = [], []
    for i, entry in enumerate(augmentations):
        where = f"augmentations[{i}]"
        counts.append(positive_int_entry(entry, "num_crops", where))
        transforms.append(build_transform(entry, dataset, where))
    return MultiCropTransform(transforms, counts)


class EvalTransform:
    """No augmentation: an image whose size is not ``crop_size x crop_size`` is resized (short
    side to ``crop_size``, bicubic) and centre-cropped, or with ``squash`` resized to
    ``crop_size x crop_size`` (aspect ratio not kept, bilinear); then to float32 and
    normalised."""

    def __init__(
        self,
        crop_size: int,
        dataset: str,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        squash: bool = False,
    ) -> None:
        self.crop_size = int(crop_size)
        mean, std = normalization_stats(dataset, {"mean": mean, "std": std})
        self.resize = squash_resize(self.crop_size) if squash else v2.Compose(
            [
                v2.Resize(self.crop_size, interpolation=InterpolationMode.BICUBIC),
                v2.CenterCrop(self.crop_size),
            ]
        )
        self.to_tensor = v2.Compose(_to_normalized_tensor(mean, std))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.size != (self.crop_size, self.crop_size):
            image = self.resize(image)
        return self.to_tensor(image)
