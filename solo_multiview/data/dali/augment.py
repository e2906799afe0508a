"""DALI operators for one augmentation pipeline of the schema (a :class:`CropSpec`).

Each function takes and returns a DALI ``DataNode`` of uint8 HWC RGB images, on the CPU or the GPU
(an operator runs where its input lives; random draws are CPU argument inputs). The strong view
runs torchvision's order: crop, colour jitter, grayscale, blur, solarize, equalize, flip, then
``(x / 255 - mean) / std`` as float32 CHW. Random application of an op (``prob``) uses DALI
conditionals (``if coin:`` splits the batch), so a sample skips what it does not draw: the
pipeline must be defined with ``enable_conditionals=True``.

Differences from torchvision (``data/augmentations.py``, ops on PIL images), as close as DALI
allows:

- crop: ``fn.random_resized_crop`` (area fraction uniform in ``[crop_min_scale, crop_max_scale]``,
  aspect ratio in ``[3/4, 4/3]``, 10 attempts, bicubic with antialiasing). DALI draws the ratio
  ``r`` or ``1 / r`` uniformly (torchvision draws ``log r`` uniformly; both are symmetric around
  1) and its fallback after 10 failed attempts is a centred square of the short side (torchvision:
  the whole image with the ratio clamped); for square images both fall back to the whole image.
  Resampling is DALI's cubic filter, not PIL's: pixels differ by a few levels.
- colour jitter: torchvision applies brightness, contrast, saturation and hue in a random order
  per call, rounding and clamping after each. Here brightness and contrast come in a random
  order per sample (either first with probability 1/2, as in torchvision), each rounded and
  clamped, then saturation and hue in one ``hsv`` call; what differs is only where saturation
  and hue fall among the four (the four commute except for the rounding and clamping between
  them, so their order matters only there). Contrast pivots on the mean grey level
  ``0.299 R + 0.587 G + 0.114 B`` of its input as in torchvision (DALI's own ``color_twist``
  pivots on 128; we pass the mean as ``contrast_center``). Saturation blends with the same
  grey image (the same formula; DALI's ``hsv`` goes through a YIQ matrix: +-1 level). Hue:
  torchvision shifts H in HSV by ``h * 360`` degrees; DALI's ``hsv`` rotates the chroma plane of
  YIQ by the same angle (same direction, red -> yellow), a linear approximation that differs
  most on saturated colours.
- grayscale: DALI's RGB -> GRAY conversion copied to 3 channels (PIL's "L", equal up to
  rounding of a rare pixel).
- blur: window = the odd size nearest ``crop_size / 10`` (>= 3), sigma ``~ U[0.1, 2.0]``: the
  same kernel and (reflect-101) borders as torchvision, equal for a given sigma up to a level
  on about one pixel in 10^5 (float summation order). On the CPU it is ``fn.filter`` with the
  2-D kernel built from sigma in the graph: alone, ``fn.gaussian_blur`` with a per-sample sigma
  costs 1.2-3 times as much there at every size measured from 32x32 (window 3) to 224x224
  (window 23); in the whole 32x32 loader the difference is within the noise (BENCHMARKS.md).
  The GPU keeps ``fn.gaussian_blur``.
- solarization: a lookup table inverting pixels >= 128 (identical).
- equalization: DALI's per-channel ``equalize`` scales the cumulative histogram to 0..255;
  PIL's ``ImageOps.equalize`` (torchvision on PIL images) leaves the top bin out of its step, so
  levels differ by a few steps, and by tens of levels on images with many saturated pixels.
- flip and normalisation: ``crop_mirror_normalize`` (identical up to float rounding).
- rrc disabled and the "normalised only" view: resize the short side to ``crop_size`` (DALI
  rounds the long side, torchvision floors it) and centre-crop (for an odd margin DALI rounds
  the offset half up, torchvision to even); an image already ``crop_size`` square is unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from nvidia.dali import fn, types
from nvidia.dali import math as dali_math

from solo_multiview.data.dali.spec import RRC_RATIO, SOLARIZE_THRESHOLD, CropSpec

DataNode = Any

#: ITU-R 601 luma weights: PIL's "L" conversion and torchvision's rgb_to_grayscale.
GREY_WEIGHTS = (0.299, 0.587, 0.114)
#: On the CPU, contrast uses ``brightness_contrast``'s ``contrast_center`` argument (one fast
#: operator); False uses the GPU's arithmetic form there too (tests compare the two).
CONTRAST_CENTER_ARGUMENT = True
#: On the CPU, the blur is ``fn.filter`` with a kernel built in the graph; False uses
#: ``fn.gaussian_blur`` there too (the loader benchmark's ablation compares the two).
BLUR_FILTER = True
_SOLARIZE_TABLE = [v if v < SOLARIZE_THRESHOLD else 255 - v for v in range(256)]


def _coin(prob: float) -> DataNode:
    return fn.random.coin_flip(probability=float(prob), dtype=types.BOOL)


def _uniform(low: float, high: float) -> DataNode:
    return fn.random.uniform(range=[float(low), float(high)])


def _like(value: DataNode, image: DataNode) -> DataNode:
    """A CPU per-sample scalar moved to the image's device (for arithmetic with it)."""
    return value.gpu() if image.device == "gpu" else value


def _randomly(prob: float, image: DataNode, op: Callable[[DataNode], DataNode]) -> DataNode:
    """``op(image)`` for the samples that draw heads with probability ``prob`` (a DALI
    conditional: only those samples run ``op``); ``image`` itself when ``prob`` is 0."""
    if prob <= 0:
        return image
    if _coin(prob):
        image = op(image)
    return image


def crop(image: DataNode, spec: CropSpec) -> DataNode:
    """RandomResizedCrop to ``crop_size`` square, or (rrc disabled) the short side resized to
    ``crop_size``; the centre crop of the latter happens in :func:`normalize`."""
    size = spec.crop_size
    if spec.rrc_enabled:
        return fn.random_resized_crop(
            image, size=[size, size], random_area=list(spec.rrc_scale),
            random_aspect_ratio=list(RRC_RATIO), num_attempts=10,
            interp_type=types.INTERP_CUBIC, antialias=True,
        )
    return fn.resize(image, resize_shorter=size, interp_type=types.INTERP_CUBIC, antialias=True)


def mean_grey(image: DataNode) -> DataNode:
    """Per-sample scalar ``mean(0.299 R + 0.587 G + 0.114 B)`` on the image's device."""
    m = fn.reductions.mean(image, axes=[0, 1])
    return m[0] * GREY_WEIGHTS[0] + m[1] * GREY_WEIGHTS[1] + m[2] * GREY_WEIGHTS[2]


def contrast(image: DataNode, c: DataNode) -> DataNode:
    """torchvision's ``adjust_contrast``: ``c x + (1 - c) m`` with ``m = mean_grey(x)``, rounded
    and saturated to uint8. On the CPU this is DALI's ``brightness_contrast`` with a per-sample
    ``contrast_center``; on the GPU (where argument inputs cannot come from GPU data) the same
    formula as arithmetic."""
    grey = mean_grey(image)
    if image.device != "gpu" and CONTRAST_CENTER_ARGUMENT:
        return fn.brightness_contrast(image, contrast=c, contrast_center=grey)
    out = image * _like(c, image) + grey * _like(1.0 - c, image)
    return fn.cast(out, dtype=types.UINT8)  # rounds to nearest and saturates to [0, 255]


def brightness_contrast(image: DataNode, spec: CropSpec) -> DataNode:
    """Brightness ``b`` and contrast ``c`` from torchvision's ranges, each rounded and
    saturated to uint8 before the next, in an order drawn per sample (either first with
    probability 1/2, as torchvision's random order of its jitter operations gives): on images
    with saturated pixels (white strokes) brightening first clips them before the contrast,
    and a single ``b (m + c (x - m))`` would not."""
    b = _uniform(*spec.factor_range(spec.brightness)) if spec.brightness else None
    c = _uniform(*spec.factor_range(spec.contrast)) if spec.contrast else None
    if c is None:
        return image if b is None else fn.brightness_contrast(image, brightness=b)
    if b is None:
        return contrast(image, c)
    if _coin(0.5):
        image = contrast(fn.brightness_contrast(image, brightness=b), c)
    else:
        image = fn.brightness_contrast(contrast(image, c), brightness=b)
    return image


def saturation_hue(image: DataNode, spec: CropSpec) -> DataNode:
    """Saturation factor in torchvision's range and a hue shift of ``U[-hue, hue] * 360``
    degrees (DALI's ``hsv``)."""
    kwargs = {}
    if spec.saturation:
        kwargs["saturation"] = _uniform(*spec.factor_range(spec.saturation))
    if spec.hue:
        kwargs["hue"] = _uniform(-360.0 * spec.hue, 360.0 * spec.hue)
    return fn.hsv(image, **kwargs) if kwargs else image


def grayscale(image: DataNode) -> DataNode:
    """PIL's "L" grey level (``0.299 R + 0.587 G + 0.114 B``) copied to 3 channels."""
    grey = fn.color_space_conversion(image, image_type=types.RGB, output_type=types.GRAY)
    return fn.color_space_conversion(grey, image_type=types.GRAY, output_type=types.RGB)


def gaussian_kernel(window: int, sigma: DataNode) -> DataNode:
    """Per-sample ``window x window`` Gaussian kernel of standard deviation ``sigma``: the outer
    product of the normalised taps ``exp(-d^2 / (2 sigma^2))``, ``d = -(window // 2)..``."""
    offsets = np.arange(window, dtype=np.float32) - window // 2
    taps = dali_math.exp(types.Constant(offsets ** 2) * (-0.5 / (sigma * sigma)))
    taps = taps / fn.reductions.sum(taps)
    return fn.reshape(taps, shape=[window, 1]) * fn.reshape(taps, shape=[1, window])


def gaussian_blur(image: DataNode, spec: CropSpec) -> DataNode:
    """torchvision's GaussianBlur of ``spec``'s window with ``sigma ~ U[blur_sigma]``."""
    sigma = _uniform(*spec.blur_sigma)
    if image.device == "gpu" or not BLUR_FILTER:
        return fn.gaussian_blur(image, window_size=spec.blur_window, sigma=sigma)
    return fn.filter(image, gaussian_kernel(spec.blur_window, sigma), border="reflect_101")


def normalize(image: DataNode, spec: CropSpec) -> DataNode:
    """Horizontal flip with ``flip_prob``, centre crop to ``crop_size`` (a no-op after a
    random resized crop), ``(x - 255 mean) / (255 std)`` as float32 CHW."""
    mirror = fn.random.coin_flip(probability=spec.flip_prob) if spec.flip_prob else 0
    return fn.crop_mirror_normalize(
        image, crop=[spec.crop_size, spec.crop_size], mirror=mirror,
        mean=[255.0 * m for m in spec.mean], std=[255.0 * s for s in spec.std],
        dtype=types.FLOAT, output_layout="CHW",
    )


def strong_view(image: DataNode, spec: CropSpec) -> DataNode:
    """One augmented crop of ``image`` (uint8 HWC) as float32 CHW; see the module docstring."""
    image = crop(image, spec)
    image = _randomly(spec.jitter_prob, image,
                      lambda x: saturation_hue(brightness_contrast(x, spec), spec))
    image = _randomly(spec.grayscale_prob, image, grayscale)
    image = _randomly(spec.blur_prob, image, lambda x: gaussian_blur(x, spec))
    image = _randomly(spec.solarization_prob, image, lambda x: fn.lookup_table(
        x, keys=list(range(256)), values=_SOLARIZE_TABLE, dtype=types.UINT8))
    image = _randomly(spec.equalization_prob, image, fn.equalize)
    return normalize(image, spec)


def normal_view(image: DataNode, spec: CropSpec) -> DataNode:
    """The "normalised only" view (torchvision's EvalTransform) of ``spec``'s size and stats."""
    return normalize(fn.resize(image, resize_shorter=spec.crop_size,
                               interp_type=types.INTERP_CUBIC, antialias=True), spec)
