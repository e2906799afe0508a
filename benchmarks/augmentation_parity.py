"""Each augmentation's statistics in the torchvision and the DALI (CPU) pipeline, on the same
synthetic images, side by side: crop area and aspect ratio, flip, grayscale, solarization and
blur rates, colour-jitter application rate and factor ranges.

    python benchmarks/augmentation_parity.py --samples 2000 \
        --out benchmarks/results/augmentation_parity.md

Every measurement turns on one operation of solo-learn's symmetric CIFAR entry
(scripts/pretrain/augmentations/cifar_symmetric.yaml) and switches the others off, with mean 0
and std 1 so the crops come back as levels / 255. Images are made so the operation's draw can be
read back from the crop:

- crop: R = x and G = y coordinates of a 64x64 image; the crop's first and last columns (rows)
  give the box, hence its area fraction and aspect ratio w / h;
- flip: a left-to-right ramp; grayscale: a coloured constant image (R != G after);
  solarization: a constant level 200 (55 after); blur: a checkerboard (its contrast drops);
- brightness: a constant grey (factor = out / in); contrast: two halves of levels 60 and 160
  (factor = the halves' gap / 100); saturation: a constant colour (factor = its distance from
  its grey / the original distance); hue: a saturated colour (shift in degrees of HSV hue);
  brightness and contrast together: white strokes on black (the quickstart's digits are such
  images), where clamping between the two operations shows.

Each row gives mean, 10th, 50th and 90th percentile of both pipelines and the two-sample
Kolmogorov-Smirnov statistic (0: same distribution; for N samples each, values above about
1.36 * sqrt(2 / N) are unlikely under the same distribution at the 5% level).
"""

from __future__ import annotations

import argparse
import colorsys
import copy
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = {
    "rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
    "color_jitter": {"prob": 0.8, "brightness": 0.8, "contrast": 0.8, "saturation": 0.8,
                     "hue": 0.2},
    "grayscale": {"prob": 0.2}, "gaussian_blur": {"prob": 0.5},
    "solarization": {"prob": 0.2}, "equalization": {"prob": 0.0},
    "horizontal_flip": {"prob": 0.5}, "crop_size": 32, "num_crops": 1,
}
OFF = {"rrc": {"enabled": False}, "color_jitter": {"prob": 0.0}, "grayscale": {"prob": 0.0},
       "gaussian_blur": {"prob": 0.0}, "solarization": {"prob": 0.0},
       "equalization": {"prob": 0.0}, "horizontal_flip": {"prob": 0.0}}


def only(op: str, **settings) -> dict:
    """The entry with every operation off except ``op`` (with BASE's settings + ``settings``)."""
    entry = copy.deepcopy(BASE)
    entry.update(copy.deepcopy(OFF))
    entry[op] = {**copy.deepcopy(BASE[op]), **settings}
    entry.update({"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]})
    return entry


def torchvision_crops(entry: dict, image: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` crops of ``image`` (HWC uint8) as (n, 32, 32, 3) levels, torchvision pipeline."""
    import torch
    from PIL import Image

    from solo_multiview.data.augmentations import build_transform

    transform = build_transform(entry, "cifar10")
    torch.manual_seed(seed)
    pil = Image.fromarray(image)
    return np.stack([transform(pil).permute(1, 2, 0).numpy() * 255 for _ in range(n)])


def dali_crops(entry: dict, image: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The same from the DALI CPU loader (one epoch of n copies of ``image``)."""
    from solo_multiview.data.dali import DaliPretrainLoader, parse_augmentations
    from solo_multiview.data.sources import ArraySource

    batch = 100
    n = (n + batch - 1) // batch * batch
    images = np.ascontiguousarray(np.broadcast_to(image, (n, *image.shape)))
    loader = DaliPretrainLoader(ArraySource(images, np.zeros(n, dtype=np.int64)),
                                np.arange(n), parse_augmentations([entry], "cifar10"), batch,
                                device="cpu", seed=seed)
    out = [crops[0].permute(0, 2, 3, 1).numpy() * 255 for _, crops, _ in loader]
    return np.concatenate(out)


# ---------------------------------------------------------------------------- images and readers
def coordinates(size: int = 64) -> np.ndarray:
    ramp = np.linspace(0, 255, size)
    image = np.zeros((size, size, 3))
    image[..., 0] = ramp[None, :]
    image[..., 1] = ramp[:, None]
    image[..., 2] = 128
    return image.round().astype(np.uint8)


def crop_boxes(crops: np.ndarray, size: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """(area fraction, aspect ratio w / h) of each crop of :func:`coordinates`."""
    n = crops.shape[1]
    x = crops[..., 0] * (size - 1) / 255
    y = crops[..., 1] * (size - 1) / 255
    # the centres of the first and last output pixels are half an output pixel inside the box
    w = np.abs(x[:, :, -1].mean(1) - x[:, :, 0].mean(1)) * n / (n - 1)
    h = np.abs(y[:, -1, :].mean(1) - y[:, 0, :].mean(1)) * n / (n - 1)
    return w * h / size ** 2, w / np.maximum(h, 1e-6)


def constant(rgb) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, dtype=np.uint8), (32, 32, 3)).copy()


def halves() -> np.ndarray:
    image = constant((60, 60, 60))
    image[:, 16:] = 160
    return image


def checkerboard() -> np.ndarray:
    board = (np.indices((32, 32)).sum(0) % 2) * 200 + 28
    return np.repeat(board[..., None], 3, axis=2).astype(np.uint8)


def strokes() -> np.ndarray:
    """A digit-like image: white (255) strokes, a quarter of the pixels, on black."""
    image = constant((0, 0, 0))
    image[:, ::4] = 255
    return image


def hue_of(rgb: np.ndarray) -> np.ndarray:
    return np.array([colorsys.rgb_to_hsv(*(p / 255))[0] for p in rgb])


#: name -> (entry, image, reader of a crop batch -> per-crop values)
def measurements() -> Dict[str, Tuple[dict, np.ndarray, Callable[[np.ndarray], np.ndarray]]]:
    grey, colour = 100.0, np.array([180.0, 90.0, 60.0])
    colour_grey = colour @ np.array([0.299, 0.587, 0.114])
    saturated = np.array([200.0, 40.0, 40.0])
    base_hue = hue_of(saturated[None])[0]

    def area(c):
        return crop_boxes(c)[0]

    def log_ratio(c):
        return np.log(crop_boxes(c)[1])

    def brightness(c):
        return c.mean(axis=(1, 2, 3)) / grey

    def contrast(c):
        return (c[:, :, 16:].mean(axis=(1, 2, 3)) - c[:, :, :16].mean(axis=(1, 2, 3))) / 100

    def saturation(c):
        pixel = c.mean(axis=(1, 2))
        g = pixel @ np.array([0.299, 0.587, 0.114])
        return np.linalg.norm(pixel - g[:, None], axis=1) / np.linalg.norm(colour - colour_grey)

    def hue(c):
        shift = (hue_of(c.mean(axis=(1, 2))) - base_hue + 0.5) % 1.0 - 0.5
        return shift * 360

    brightness_contrast = only("color_jitter", prob=1.0, brightness=0.4, contrast=0.4,
                               saturation=0.0, hue=0.0)
    return {
        "crop area fraction": (only("rrc"), coordinates(), area),
        "crop log(w / h)": (only("rrc"), coordinates(), log_ratio),
        "flip rate": (only("horizontal_flip"), coordinates()[16:48, 16:48].copy(),
                      lambda c: (c[:, 0, 0, 0] > c[:, 0, -1, 0]).astype(float)),
        "grayscale rate": (only("grayscale"), constant(colour),
                           lambda c: (np.abs(c[..., 0] - c[..., 1]).max((1, 2)) < 2).astype(float)),
        "solarization rate": (only("solarization"), constant((200, 200, 200)),
                              lambda c: (c.mean((1, 2, 3)) < 128).astype(float)),
        "blur rate": (only("gaussian_blur"), checkerboard(),
                      lambda c: (c[:, 8:24, 8:24].std((1, 2, 3)) < 95).astype(float)),
        "jitter applied (brightness only)": (
            only("color_jitter", contrast=0.0, saturation=0.0, hue=0.0), constant((100,) * 3),
            lambda c: (np.abs(brightness(c) - 1) > 0.01).astype(float)),
        "brightness factor": (
            only("color_jitter", prob=1.0, contrast=0.0, saturation=0.0, hue=0.0),
            constant((100,) * 3), brightness),
        "contrast factor": (
            only("color_jitter", prob=1.0, brightness=0.0, saturation=0.0, hue=0.0), halves(),
            contrast),
        "saturation factor": (
            only("color_jitter", prob=1.0, brightness=0.0, contrast=0.0, hue=0.0),
            constant(colour), saturation),
        "stroke level (white strokes on black, brightness 0.4 and contrast 0.4)": (
            brightness_contrast, strokes(), lambda c: c[:, :, ::4].mean(axis=(1, 2, 3))),
        "background level (the same)": (
            brightness_contrast, strokes(), lambda c: c[:, :, 1::4].mean(axis=(1, 2, 3))),
        "hue shift (degrees)": (
            only("color_jitter", prob=1.0, brightness=0.0, contrast=0.0, saturation=0.0),
            constant(saturated), hue),
    }


def summary(values: np.ndarray) -> str:
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return f"{values.mean():.3f} ({p10:.3f} / {p50:.3f} / {p90:.3f})"


def main() -> None:
    from scipy.stats import ks_2samp

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = time.time()
    lines = [f"{args.samples} crops per pipeline and row; mean (p10 / p50 / p90).", "",
             "| statistic | torchvision | DALI CPU | KS statistic |", "|---|---|---|---|"]
    for name, (entry, image, read) in measurements().items():
        plain = read(torchvision_crops(entry, image, args.samples, args.seed))
        dali = read(dali_crops(entry, image, args.samples, args.seed))[: args.samples]
        ks = ks_2samp(plain, dali).statistic
        lines.append(f"| {name} | {summary(plain)} | {summary(dali)} | {ks:.3f} |")
        print(lines[-1], flush=True)
    lines += ["", f"Threshold for N = {args.samples}: 1.36 * sqrt(2 / N) = "
              f"{1.36 * np.sqrt(2 / args.samples):.3f}; {time.time() - started:.0f} s."]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
