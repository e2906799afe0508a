"""Batched augmentation on a device: one call augments a whole ``(N, 3, H, W)`` batch, each sample
with its own random parameters, drawn from a ``torch.Generator`` on the images' device.

The schema, its defaults and its checks are the torchvision path's (``data/augmentations.py``,
read through ``data/dali/spec.parse_crop_spec``); the op order is its order: crop, colour jitter,
grayscale, blur, solarize, equalize, flip, normalise. Everything is plain torch (no DALI, no
kornia), so the same code runs on the CPU and on CUDA; on CUDA a batch costs a few dozen kernel
launches whatever N is, instead of N Python-level transform calls.

Ops work on float images in [0, 1] (a uint8 input is scaled by 1/255 first, as torchvision's
``ToDtype(scale=True)``). The public op functions also take uint8 batches and then follow
torchvision's tensor semantics for uint8 (float arithmetic, clamp, truncation back to uint8), so
they can be checked against ``torchvision.transforms.v2.functional`` op by op.

Differences from the torchvision path (PIL images, uint8 after every op), all deliberate:

- crop: the box is drawn exactly as ``RandomResizedCrop.get_params`` (10 tries of uniform area
  fraction and log-uniform aspect ratio in [3/4, 4/3], integer box by Python rounding, then the
  central-crop fallback); only the random stream differs (one generator for the batch instead of
  torch's global one). Resampling is **bilinear without antialiasing** (``grid_sample`` on
  sample coordinates clamped to the box, which reproduces torchvision's tensor
  ``resized_crop(..., BILINEAR, antialias=False)``), not PIL's antialiased bicubic: bilinear is
  a convex combination (no overshoot, no clamp needed), it is one native kernel on every device,
  it is what kornia's RandomResizedCrop (the paper's GPU pipeline) uses, and antialiasing does
  nothing when the crop is upsampled, which for RandomResizedCrop is the common case (always on
  CIFAR: a crop of a 32x32 image resized to 32x32). Bilinear upsampling is slightly softer than
  bicubic: on CIFAR-10 crops pixels differ from PIL's bicubic by 2 levels on average (median
  1.2, 99th percentile 10), far less than the colour jitter moves them.
- flip: folded into the crop's sampling grid (the mirrored crop is read right to left), which is
  exact because every op between crop and flip commutes with a mirror (pointwise ops, a global
  mean, a symmetric blur kernel with symmetric borders, per-channel histograms).
- values stay float between ops (no rounding to 256 levels after each op; torchvision rounds or
  truncates once per op on uint8): at most about one level of difference per op.
- grayscale uses torchvision's tensor weights (0.2989, 0.587, 0.114); PIL's "L" uses
  (0.299, 0.587, 0.114) with integer rounding.
- equalization quantises the float crop to uint8 as torchvision's ``to_dtype`` does
  (``x * 255.999`` truncated), then applies PIL's lookup table (the cumulative histogram without
  the top bin, ``step = (pixels - top bin count) // 255``), per sample and channel.
- blur: torchvision's kernel (``exp(-t^2 / 2 sigma^2)``, normalised, reflect-101 borders), applied
  separably (two 1-D passes; torchvision convolves once with the outer-product kernel: equal up
  to float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from solo_multiview.data.augmentations import blur_kernel_size
from solo_multiview.data.dali.spec import RRC_RATIO, SOLARIZE_THRESHOLD, CropSpec, parse_crop_spec

Factor = Union[float, Sequence[float], torch.Tensor]

#: torchvision's tensor grayscale weights (rgb_to_grayscale on tensors).
GREY_WEIGHTS = (0.2989, 0.587, 0.114)
#: Colour jitter op ids, as torchvision's ColorJitter numbers them in its random order.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


# ---------------------------------------------------------------------------------- helpers
def to_float(images: torch.Tensor) -> torch.Tensor:
    """float32 in [0, 1]: uint8 times 1/255 (torchvision's ``to_dtype(scale=True)``, bit for
    bit), float passed through as float32."""
    if images.is_floating_point():
        return images.float()
    return images.float().mul_(1.0 / 255.0)


def _bound(images: torch.Tensor) -> float:
    return 1.0 if images.is_floating_point() else 255.0


def _like(output: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Back to the input's dtype: float stays, uint8 truncates (torchvision's ``.to(uint8)``)."""
    return output if images.is_floating_point() else output.to(images.dtype)


def _per_sample(factor: Factor, images: torch.Tensor) -> torch.Tensor:
    """(N, 1, 1, 1) float64 on the images' device from a scalar or N values."""
    value = torch.as_tensor(factor, dtype=torch.float64, device=images.device)
    if value.ndim == 0:
        value = value.expand(images.shape[0])
    if value.shape != (images.shape[0],):
        raise ValueError(f"expected one factor per sample ({images.shape[0]}), got shape "
                         f"{tuple(value.shape)}")
    return value.view(-1, 1, 1, 1)


def _blend(images: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """``ratio * images + (1 - ratio) * other`` clamped to the value range; ``1 - ratio`` is taken
    in float64 before rounding to float32, as torchvision does with its Python-float ratio."""
    keep = ratio.float()
    mix = (1.0 - ratio).float()
    out = images.mul(keep).add_(other * mix).clamp_(0.0, _bound(images))
    return _like(out, images)


def _grey(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) float luma; floored for uint8 inputs (torchvision's contrast/saturation)."""
    r, g, b = images.unbind(dim=1)
    grey = r.mul(GREY_WEIGHTS[0]).add_(g, alpha=GREY_WEIGHTS[1]).add_(b, alpha=GREY_WEIGHTS[2])
    if not images.is_floating_point():
        grey = grey.floor_()
    return grey.unsqueeze(1)


# ---------------------------------------------------------------------------------- crop
def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = RRC_RATIO,
    attempts: int = 10,
) -> torch.Tensor:
    """(n, 4) int64 boxes (top, left, height, width), each drawn as torchvision's
    ``RandomResizedCrop.get_params`` draws one: ``attempts`` tries of area fraction
    ``U[scale]`` and aspect ratio ``exp(U[log ratio])``, rounded (half to even, as Python's
    ``round``); the first try that fits is placed uniformly; when none fits, the central crop
    with the aspect ratio clamped into ``ratio``. Vectorised: all tries of all samples at once."""
    device = generator.device
    area = float(height * width)
    low, high = math.log(ratio[0]), math.log(ratio[1])
    fraction = torch.rand(n, attempts, generator=generator, device=device, dtype=torch.float64)
    fraction = fraction * (scale[1] - scale[0]) + scale[0]
    log_ratio = torch.rand(n, attempts, generator=generator, device=device, dtype=torch.float64)
    aspect = torch.exp(log_ratio * (high - low) + low)
    target = area * fraction
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first try that fits
    found = fits.any(dim=1)

    # Fallback: torchvision's central crop, the whole image unless its ratio is out of range.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    w = torch.where(found, w.gather(1, first).squeeze(1), torch.full_like(w[:, 0], fw))
    h = torch.where(found, h.gather(1, first).squeeze(1), torch.full_like(h[:, 0], fh))

    offset = torch.rand(n, 2, generator=generator, device=device, dtype=torch.float64)
    top = torch.minimum(torch.floor(offset[:, 0] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(offset[:, 1] * (width - w + 1)), width - w)
    top = torch.where(found, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(found, left, torch.full_like(left, (width - fw) // 2))
    return torch.stack((top, left, h, w), dim=1).long()


def _crop_grid(boxes: torch.Tensor, size: int, height: int, width: int,
               flip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """grid_sample coordinates of each box's ``size`` x ``size`` output: the source position of
    output pixel ``q`` is ``left + (q + 0.5) * w / size - 0.5`` (interpolate's half-pixel rule),
    clamped into the box so that edge pixels replicate as when the crop is resized alone;
    ``flip`` rows read their columns right to left (a mirrored crop, for free)."""
    box = boxes.to(torch.float64)
    top, left, h, w = box.unbind(dim=1)
    q = torch.arange(size, device=boxes.device, dtype=torch.float64) + 0.5

    def axis(start: torch.Tensor, length: torch.Tensor, extent: int) -> torch.Tensor:
        pos = start[:, None] + q[None, :] * (length / size)[:, None] - 0.5
        pos = torch.minimum(torch.maximum(pos, start[:, None]), (start + length - 1)[:, None])
        return (2.0 * pos + 1.0) / extent - 1.0  # align_corners=False normalisation

    gx = axis(left, w, width)
    if flip is not None:
        gx = torch.where(flip[:, None], gx.flip(1), gx)
    gy = axis(top, h, height)
    grid = torch.empty(boxes.shape[0], size, size, 2, device=boxes.device)
    grid[..., 0] = gx[:, None, :]
    grid[..., 1] = gy[:, :, None]
    return grid


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int,
                 flip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Crop ``boxes`` (top, left, height, width) and resize each to ``size`` x ``size``, bilinear,
    no antialiasing: float32 in [0, 1]. ``boxes`` may hold ``c * N`` rows for ``N`` images: rows
    ``[k N, (k + 1) N)`` crop image ``0..N-1`` again (copy ``k``), without materialising copies.
    ``flip`` (one bool per box): mirror those crops left-right in the same pass."""
    n = images.shape[0]
    if boxes.shape[0] % max(n, 1):
        raise ValueError(f"resized_crop: {boxes.shape[0]} boxes for {n} images (need c * N)")
    source = to_float(images)
    grid = _crop_grid(boxes, int(size), images.shape[-2], images.shape[-1], flip)
    chunks = [
        F.grid_sample(source, part, mode="bilinear", padding_mode="border", align_corners=False)
        for part in grid.split(n)
    ]
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """float32 [0, 1] batch of ``size`` x ``size``: unchanged when already that size, else the
    short side resized to ``size`` (bicubic, antialiased, clamped) and centre-cropped, as the
    torchvision path's EvalTransform and its rrc-disabled pipeline (same params for all)."""
    images = to_float(images)
    if images.shape[-2:] == (size, size):
        return images
    images = TF.resize(images, [size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(images, [size, size]).clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------------- colour
def adjust_brightness(images: torch.Tensor, factor: Factor) -> torch.Tensor:
    """``images * factor`` per sample, clamped (torchvision's adjust_brightness)."""
    f = _per_sample(factor, images).float()
    return _like(images.mul(f).clamp_(0.0, _bound(images)), images)


def adjust_contrast(images: torch.Tensor, factor: Factor) -> torch.Tensor:
    """Blend with each sample's mean luma (torchvision's adjust_contrast)."""
    mean = _grey(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, _per_sample(factor, images))


def adjust_saturation(images: torch.Tensor, factor: Factor) -> torch.Tensor:
    """Blend with each sample's luma image (torchvision's adjust_saturation)."""
    return _blend(images, _grey(images), _per_sample(factor, images))


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float RGB in [0, 1] -> HSV with hue in [0, 1) (the hexcone model, as
    torchvision's and PIL's conversions; grey pixels get hue 0 and saturation 0)."""
    top = images.amax(dim=1)
    spread = top - images.amin(dim=1)
    saturation = spread / torch.where(spread == 0, torch.ones_like(top), top)
    return torch.stack((_hue_sextant(images, top, spread).div_(6.0), saturation, top), dim=1)


def _hue_sextant(images: torch.Tensor, top: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """Hue times 6, in [0, 6): which sextant of the colour hexagon and where in it (0 for grey
    pixels). At ties of the largest channel the formulas agree, so the first one wins."""
    r, g, b = images.unbind(dim=1)
    safe = torch.where(spread == 0, torch.ones_like(spread), spread)
    h6 = torch.where(
        top == r, (g - b).div_(safe),
        torch.where(top == g, (b - r).div_(safe).add_(2.0), (r - g).div_(safe).add_(4.0)),
    )
    return h6.add_(6.0).remainder_(6.0)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`: channel ``c`` (R, G, B <-> n = 5, 3, 1) is
    ``v - v s clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``, the hexcone model in
    closed form (no per-pixel table lookup, so it vectorises)."""
    h, s, v = hsv.unbind(dim=1)
    return _from_sextant(h * 6.0, v, v * s)


_CHANNEL_OFFSETS = (5.0, 3.0, 1.0)


def _from_sextant(h6: torch.Tensor, top: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """RGB from hue times 6 (any real; taken mod 6), max channel and spread (max - min)."""
    offsets = torch.tensor(_CHANNEL_OFFSETS, dtype=h6.dtype, device=h6.device).view(1, 3, 1, 1)
    k = (h6.unsqueeze(1) + offsets).remainder_(6.0)
    ramp = k.sub_(2.0).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)  # min(k, 4 - k) in [0, 1]
    return torch.addcmul(top.unsqueeze(1), spread.unsqueeze(1), ramp, value=-1.0)


def adjust_hue(images: torch.Tensor, factor: Factor) -> torch.Tensor:
    """Rotate the HSV hue by ``factor`` (a fraction of the circle, in [-0.5, 0.5]) per sample
    (torchvision's adjust_hue; uint8 goes through float and back by ``to_dtype``). Value and
    saturation are kept, so the max and min channels are too: only the hue is computed and
    turned back into RGB, without the full HSV round trip."""
    shift = _per_sample(factor, images).float().squeeze(1)
    x = to_float(images)
    top = x.amax(dim=1)
    spread = top - x.amin(dim=1)
    rgb = _from_sextant(_hue_sextant(x, top, spread).add_(shift * 6.0), top, spread)
    if images.is_floating_point():
        return rgb
    return rgb.mul_(255.0 + 1.0 - 1e-3).to(images.dtype)


def rgb_to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma copied to 3 channels (torchvision's rgb_to_grayscale(num_output_channels=3))."""
    r, g, b = images.unbind(dim=1)
    grey = r.mul(GREY_WEIGHTS[0]).add_(g, alpha=GREY_WEIGHTS[1]).add_(b, alpha=GREY_WEIGHTS[2])
    return _like(grey, images).unsqueeze(1).expand_as(images)


def solarize(images: torch.Tensor, threshold: Optional[float] = None) -> torch.Tensor:
    """Invert values >= threshold (default 128 of 255, i.e. 128/255 for float images)."""
    if threshold is None:
        threshold = SOLARIZE_THRESHOLD / (255.0 if images.is_floating_point() else 1.0)
    return torch.where(images >= threshold, _bound(images) - images, images)


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per sample and channel with PIL's lookup table (what torchvision's
    equalize reproduces): float inputs are binned to uint8 by ``to_dtype`` and come back as
    ``level / 255``. One scatter for all histograms of the batch."""
    levels = images if not images.is_floating_point() else \
        images.mul(255.0 + 1.0 - 1e-3).to(torch.uint8)
    n, c = levels.shape[:2]
    flat = levels.reshape(n * c, -1).long()
    hist = torch.zeros(n * c, 256, dtype=torch.int64, device=images.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    top_count = hist.gather(1, flat.amax(dim=1, keepdim=True))
    step = (flat.shape[1] - top_count).div_(255, rounding_mode="floor")
    below = hist.cumsum(dim=1)[:, :-1]  # pixels below level v, for v = 1..255
    lut = (below + step // 2).div_(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
    lut = torch.cat((torch.zeros_like(lut[:, :1]), lut), dim=1)
    out = torch.where(step > 0, lut.gather(1, flat), flat).view(levels.shape)
    if images.is_floating_point():
        return out.float().mul_(1.0 / 255.0)
    return out.to(images.dtype)


def horizontal_flip(images: torch.Tensor) -> torch.Tensor:
    """Mirror left-right."""
    return images.flip(-1)


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(N, kernel_size) normalised 1-D Gaussian taps, one row per sigma (torchvision's kernel:
    ``exp(-t^2 / (2 sigma^2))`` at integer offsets ``t`` around the centre)."""
    t = torch.arange(kernel_size, device=sigma.device, dtype=torch.float64) - (kernel_size - 1) / 2
    taps = torch.exp(-(t[None, :] ** 2) / (2.0 * sigma.to(torch.float64)[:, None] ** 2))
    return (taps / taps.sum(dim=1, keepdim=True)).float()


def gaussian_blur(images: torch.Tensor, kernel_size: int, sigma: Factor) -> torch.Tensor:
    """Gaussian blur with one sigma per sample: reflect-101 padding, then two 1-D passes, each a
    sum of ``kernel_size`` shifted slices weighted by per-sample taps (a depthwise convolution
    with a kernel per sample, written as broadcast multiply-adds: on the CPU that is several
    times faster than a grouped ``conv2d`` with one group per sample and channel, and on CUDA it
    is 2 k small kernels whatever N is); uint8 inputs are rounded back (torchvision's
    gaussian_blur)."""
    if kernel_size % 2 != 1 or kernel_size < 1:
        raise ValueError(f"gaussian_blur: kernel_size must be odd and positive, got {kernel_size}")
    h, w = images.shape[-2:]
    taps = gaussian_kernels(_per_sample(sigma, images).view(-1), kernel_size)
    taps = taps.view(-1, 1, 1, 1, kernel_size)
    pad = kernel_size // 2
    x = images if images.is_floating_point() else images.float()
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = x[..., 0:w] * taps[..., 0]
    for t in range(1, kernel_size):
        rows.addcmul_(x[..., t:t + w], taps[..., t])
    out = rows[..., 0:h, :] * taps[..., 0]
    for t in range(1, kernel_size):
        out.addcmul_(rows[..., t:t + h, :], taps[..., t])
    return out if images.is_floating_point() else out.round_().to(images.dtype)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel on float32 [0, 1] images (torchvision's Normalize)."""
    x = to_float(images)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub(m).div_(s)


def color_jitter(
    images: torch.Tensor,
    order: torch.Tensor,
    brightness: Optional[torch.Tensor] = None,
    contrast: Optional[torch.Tensor] = None,
    saturation: Optional[torch.Tensor] = None,
    hue: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """torchvision's ColorJitter per sample: sample ``i`` gets the ops in the order of
    ``order[i]`` (a permutation of BRIGHTNESS, CONTRAST, SATURATION, HUE; -1 entries do
    nothing), each with its own factor; an op given as None is skipped (torchvision's None for a
    zero strength). At each of the 4 positions each op runs once, on the samples that have it
    there."""
    return _color_jitter_(images.clone(), order, brightness, contrast, saturation, hue)


def _color_jitter_(
    images: torch.Tensor,
    order: torch.Tensor,
    brightness: Optional[torch.Tensor],
    contrast: Optional[torch.Tensor],
    saturation: Optional[torch.Tensor],
    hue: Optional[torch.Tensor],
    dense: Optional[bool] = None,
) -> torch.Tensor:
    ops = [
        (op_id, fn, factor)
        for op_id, fn, factor in (
            (BRIGHTNESS, adjust_brightness, brightness), (CONTRAST, adjust_contrast, contrast),
            (SATURATION, adjust_saturation, saturation), (HUE, adjust_hue, hue),
        )
        if factor is not None
    ]
    for position in range(order.shape[1]):
        for op_id, fn, factor in ops:
            images = _apply_where(images, order[:, position] == op_id, fn, factor, dense=dense)
    return images


def _apply_where(
    images: torch.Tensor,
    mask: torch.Tensor,
    fn: Callable[..., torch.Tensor],
    *per_sample: torch.Tensor,
    dense: Optional[bool] = None,
) -> torch.Tensor:
    """``fn`` on the samples where ``mask`` holds (their per-sample parameters selected too),
    written back into ``images`` in place.

    Sparse (the CPU default): the other samples are not computed at all, but finding the rows
    (``nonzero``) reads the mask on the host. Dense (the default on other devices, ``dense=True``
    anywhere): ``fn`` runs on every sample and ``torch.where`` keeps the masked ones, so nothing
    waits for the device (no host synchronisation per op: on a GPU the ops stay queued behind
    the training step); every op here is per sample, so the kept rows are the same values."""
    if dense is None:
        dense = images.device.type != "cpu"
    if dense:
        out = fn(images, *per_sample)
        return images.copy_(torch.where(mask.view(-1, 1, 1, 1), out, images))
    rows = mask.nonzero().squeeze(1)
    if rows.numel() == 0:
        return images
    if rows.numel() == images.shape[0]:
        return images.copy_(fn(images, *per_sample))
    chosen = fn(images.index_select(0, rows), *(p.index_select(0, rows) for p in per_sample))
    return images.index_copy_(0, rows, chosen)


# ---------------------------------------------------------------------------------- pipeline
@dataclass
class AugmentParams:
    """Every random draw of a batch (one row per sample), on the generator's device.

    ``boxes``: (N, 4) top, left, height, width; ``jitter``/``grayscale``/``blur``/``solarize``/
    ``equalize``/``flip``: (N,) bool, whether the op applies; ``brightness``/``contrast``/
    ``saturation``: factors, ``hue``: shift, ``order``: (N, 4) jitter op order, ``sigma``: blur
    sigma (drawn for every sample; used where the op applies)."""

    boxes: torch.Tensor
    jitter: torch.Tensor
    order: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    grayscale: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor
    equalize: torch.Tensor
    flip: torch.Tensor

    def rows(self, start: int, stop: int) -> AugmentParams:
        """The parameters of samples ``start..stop-1``."""
        return AugmentParams(**{f.name: getattr(self, f.name)[start:stop] for f in fields(self)})


class BatchedAugment:
    """One pipeline of the schema (one ``cfg.augmentations`` entry) for whole batches.

    ``augment(images, generator)`` -> float32 ``(N, 3, crop_size, crop_size)``, normalised;
    ``copies=c`` makes ``c`` crops of every image (``c N`` rows, copy-major: rows
    ``[k N, (k + 1) N)`` are copy ``k``) while converting the source to float once. The draws
    come from ``generator`` in a fixed order (:meth:`sample_params`), so a seeded generator gives
    the same crops on every run of the same device; CPU and CUDA generators give different
    streams."""

    def __init__(self, entry: Mapping[str, Any], dataset: str,
                 where: str = "augmentations[0]", chunk_size: Optional[int] = None,
                 dense: Optional[bool] = None) -> None:
        self.spec: CropSpec = parse_crop_spec(entry, dataset, where)
        self.chunk_size = chunk_size
        self.dense = dense  # None: sparse on the CPU, dense elsewhere (see _apply_where)
        self.crop_size = self.spec.crop_size
        self.kernel_size = blur_kernel_size(self.crop_size)
        self.mean = self.spec.mean
        self.std = self.spec.std

    def __repr__(self) -> str:
        return f"BatchedAugment({self.spec})"

    # ------------------------------------------------------------------ draws
    def sample_params(self, n: int, height: int, width: int,
                      generator: torch.Generator) -> AugmentParams:
        """All random parameters of ``n`` samples of ``height`` x ``width`` images. Every
        parameter is drawn whether or not its op is on, so the stream layout is the same for
        every config (a prob of 0 gives all-False masks)."""
        spec, device = self.spec, generator.device

        def uniform(low: float, high: float) -> torch.Tensor:
            u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
            return u * (high - low) + low

        def coin(p: float) -> torch.Tensor:
            return torch.rand(n, generator=generator, device=device) < p

        if spec.rrc_enabled:
            boxes = sample_crop_boxes(n, height, width, spec.rrc_scale, generator)
        else:
            boxes = torch.tensor([[0, 0, height, width]], device=device).expand(n, 4)
        jitter = coin(spec.jitter_prob)
        brightness = uniform(*CropSpec.factor_range(spec.brightness))
        contrast = uniform(*CropSpec.factor_range(spec.contrast))
        saturation = uniform(*CropSpec.factor_range(spec.saturation))
        hue = uniform(-spec.hue, spec.hue)
        order = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1)
        grayscale = coin(spec.grayscale_prob)
        blur = coin(spec.blur_prob)
        sigma = uniform(*spec.blur_sigma)
        solar = coin(spec.solarization_prob)
        equal = coin(spec.equalization_prob)
        flip = coin(spec.flip_prob)
        return AugmentParams(boxes=boxes, jitter=jitter, order=order, brightness=brightness,
                             contrast=contrast, saturation=saturation, hue=hue,
                             grayscale=grayscale, blur=blur, sigma=sigma, solarize=solar,
                             equalize=equal, flip=flip)

    # ------------------------------------------------------------------ ops
    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """The pipeline on ``images`` (uint8 or float [0, 1], ``(N, 3, H, W)``) with ``params``
        of ``c N`` samples (``c`` copies, copy-major): float32 ``(c N, 3, s, s)``, normalised.

        With ``chunk_size`` set, the samples go through the pipeline ``chunk_size`` at a time
        (each chunk's working set stays in the CPU's cache between ops); None: all at once."""
        n, total = images.shape[0], params.boxes.shape[0]
        if n == 0 or total % n:
            raise ValueError(f"BatchedAugment: {total} parameter rows for {n} images (need c * N)")
        size = self.crop_size
        out = torch.empty(total, 3, size, size, dtype=torch.float32, device=images.device)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        if self.chunk_size is None:
            spans = [(0, n, 0, total)]  # every copy at once
        else:
            step = max(1, int(self.chunk_size))
            spans = [(start, stop, copy * n + start, copy * n + stop)
                     for copy in range(total // n) for start in range(0, n, step)
                     for stop in (min(n, start + step),)]
        for src_start, src_stop, start, stop in spans:
            x = self._augment(images[src_start:src_stop], params.rows(start, stop))
            torch.div(x.sub_(mean), std, out=out[start:stop])
        return out

    def _augment(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Crop (with the flip folded in), jitter, grayscale, blur, solarize, equalize: float32
        [0, 1]. The flip is applied by the crop's sampling grid: it commutes with every op in
        between (pointwise ops, a global mean, a symmetric kernel with symmetric borders,
        per-channel histograms), so the result is torchvision's order up to float rounding."""
        spec = self.spec
        if spec.rrc_enabled:
            x = resized_crop(images, params.boxes, self.crop_size,
                             params.flip if spec.flip_prob > 0 else None)
        else:
            x = resize_center_crop(images, self.crop_size)
            copies = params.boxes.shape[0] // images.shape[0]
            x = x.repeat(copies, 1, 1, 1) if copies > 1 else x.clone()
        if spec.jitter_prob > 0:
            x = self._jitter(x, params)
        if spec.grayscale_prob > 0:
            x = _apply_where(x, params.grayscale, rgb_to_grayscale, dense=self.dense)
        if spec.blur_prob > 0:
            x = _apply_where(x, params.blur,
                             lambda imgs, s: gaussian_blur(imgs, self.kernel_size, s),
                             params.sigma, dense=self.dense)
        if spec.solarization_prob > 0:
            x = _apply_where(x, params.solarize, solarize, dense=self.dense)
        if spec.equalization_prob > 0:
            x = _apply_where(x, params.equalize, equalize, dense=self.dense)
        if spec.flip_prob > 0 and not spec.rrc_enabled:
            x = _apply_where(x, params.flip, horizontal_flip, dense=self.dense)
        return x

    def _jitter(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        spec = self.spec
        # Only the jittered samples take part; a zero strength skips the op (torchvision: None).
        order = torch.where(params.jitter[:, None], params.order, torch.full_like(params.order, -1))
        return _color_jitter_(
            x, order,
            params.brightness if spec.brightness > 0 else None,
            params.contrast if spec.contrast > 0 else None,
            params.saturation if spec.saturation > 0 else None,
            params.hue if spec.hue > 0 else None,
            dense=self.dense,
        )

    def __call__(self, images: torch.Tensor, generator: torch.Generator,
                 copies: int = 1) -> torch.Tensor:
        """``copies`` augmented crops of each image (copy-major), float32, normalised."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"BatchedAugment: expected (N, 3, H, W) images, got "
                             f"{tuple(images.shape)}")
        params = self.sample_params(copies * images.shape[0], images.shape[-2],
                                    images.shape[-1], generator)
        return self.apply(images, params)


def normalized_view(images: torch.Tensor, crop_size: int, mean: Sequence[float],
                    std: Sequence[float]) -> torch.Tensor:
    """The "normalised only" view (torchvision's EvalTransform): to float, resized and
    centre-cropped only when the images are not ``crop_size`` square, then mean/std."""
    return normalize(resize_center_crop(images, crop_size), mean, std)
