"""Transforms from solo-learn's augmentation schema: sizes, order, normalisation, op semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from solo_multiview.data.augmentations import (
    EvalTransform,
    blur_kernel_size,
    build_multicrop_transform,
    build_transform,
    count_crops,
    normalization_stats,
)
from tests.helpers import ops_off_entry

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def aug(crop_size: int = 32, num_crops: int = 2, **ops) -> dict:
    """A solo-learn entry with every op off unless given (the crop on, the jitter's factors
    set for when a test turns it on)."""
    return ops_off_entry(crop_size, num_crops, **{
        "rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
        "color_jitter": {"prob": 0.0, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2,
                         "hue": 0.1},
        **ops})


def constant_image(value=(200, 100, 50), size=(40, 40)) -> Image.Image:
    return Image.new("RGB", size, color=value)


def gradient_image(size=16) -> Image.Image:
    """Columns 0..size-1 get distinct colours: a flip is visible."""
    x = np.tile(np.arange(size, dtype=np.uint8)[None, :, None] * 15, (size, 1, 3))
    x[..., 1] = 255 - x[..., 1]
    return Image.fromarray(x)


@pytest.mark.parametrize(("crop", "k"), [(8, 3), (16, 3), (32, 3), (40, 5), (60, 7), (64, 7),
                                         (96, 9), (224, 23)])
def test_blur_kernel_nearest_odd_to_tenth(crop, k):
    assert blur_kernel_size(crop) == k
    # Independent check by search: the odd k >= 3 minimising |k - crop/10|, ties to the larger.
    odd = np.arange(3, 101, 2)
    dist = np.abs(odd - crop / 10)
    assert k == odd[np.flatnonzero(dist == dist.min())].max()


def test_multicrop_sizes_order_and_counts():
    augs = [aug(32, 2), aug(32, 1, horizontal_flip={"prob": 0.5}), aug(16, 3)]
    transform = build_multicrop_transform(augs, "cifar10")
    crops = transform(gradient_image(40))
    assert len(crops) == 6
    assert [c.shape[-1] for c in crops] == [32, 32, 32, 16, 16, 16]
    assert all(c.shape == (3, c.shape[-1], c.shape[-1]) and c.dtype == torch.float32
               for c in crops)
    assert count_crops(augs) == (3, 3)


def test_omegaconf_entries_accepted():
    augs = OmegaConf.create([aug(16, 2, gaussian_blur={"prob": 1.0}), aug(8, 1)])
    crops = build_multicrop_transform(augs, "digits")(gradient_image(16))
    assert [tuple(c.shape) for c in crops] == [(3, 16, 16)] * 2 + [(3, 8, 8)]
    assert count_crops(augs) == (2, 1)


@pytest.mark.parametrize(
    ("dataset", "mean", "std"),
    [("cifar10", CIFAR10_MEAN, CIFAR10_STD), ("digits", IMAGENET_MEAN, IMAGENET_STD),
     ("image_list", IMAGENET_MEAN, IMAGENET_STD)],
)
def test_normalisation_on_a_constant_image(dataset, mean, std):
    value = (200, 100, 50)
    crop = build_transform(aug(24, 1), dataset)(constant_image(value))
    expected = (torch.tensor(value) / 255 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(crop.mean(dim=(1, 2)), expected, atol=1e-5)
    assert crop.std(dim=(1, 2)).max() < 1e-5


def test_mean_std_override_and_cifar100_stats():
    crop = build_transform(aug(8, 1, mean=[0.5, 0.5, 0.5], std=[0.25, 0.5, 1.0]), "cifar10")(
        constant_image((255, 255, 0))
    )
    assert torch.allclose(crop[:, 0, 0], torch.tensor([2.0, 1.0, -0.5]), atol=1e-6)
    assert normalization_stats("cifar100")[0] == pytest.approx((0.5071, 0.4865, 0.4409))


def test_ops_do_what_their_keys_say():
    no_crop = {"enabled": False}
    img = gradient_image(16)
    plain = build_transform(aug(16, 1, rrc=no_crop, mean=[0, 0, 0], std=[1, 1, 1]), "x")(img)
    assert torch.allclose(plain * 255, torch.from_numpy(np.array(img)).permute(2, 0, 1).float(),
                          atol=1e-4)
    flip = build_transform(aug(16, 1, rrc=no_crop, horizontal_flip={"prob": 1.0}, mean=[0] * 3,
                               std=[1] * 3), "x")(img)
    assert torch.equal(flip, plain.flip(-1))
    grey = build_transform(aug(16, 1, rrc=no_crop, grayscale={"prob": 1.0}), "x")(img)
    raw = build_transform(aug(16, 1, rrc=no_crop, grayscale={"prob": 1.0}, mean=[0] * 3,
                              std=[1] * 3), "x")(img)
    assert torch.allclose(raw[0], raw[1]) and torch.allclose(raw[1], raw[2])
    assert grey.shape == (3, 16, 16)
    solar = build_transform(aug(16, 1, rrc=no_crop, solarization={"prob": 1.0}, mean=[0] * 3,
                                std=[1] * 3), "x")(img)
    pixels = plain * 255
    expected = torch.where(pixels >= 128, 255 - pixels, pixels)
    assert torch.allclose(solar * 255, expected, atol=1e-3)


def test_rrc_disabled_resizes_non_square_to_crop():
    crop = build_transform(aug(12, 1, rrc={"enabled": False}), "x")(constant_image(size=(30, 20)))
    assert crop.shape == (3, 12, 12)


def test_large_crops_must_come_first():
    with pytest.raises(ValueError, match=r"augmentations\[2\].*large crop.*follows"):
        build_multicrop_transform([aug(32, 2), aug(16, 2), aug(32, 1)], "cifar10")
    with pytest.raises(ValueError, match="first entry must have the largest crop_size"):
        build_multicrop_transform([aug(16, 2), aug(32, 2)], "cifar10")


@pytest.mark.parametrize("num_crops", [0, -1, 1.5, None])
def test_num_crops_validated(num_crops):
    with pytest.raises(ValueError, match=r"augmentations\[0\]\.num_crops must be an int >= 1"):
        build_multicrop_transform([aug(32, num_crops)], "cifar10")


def test_unknown_key_and_bad_prob_rejected():
    with pytest.raises(ValueError, match=r"unknown key.*horizonal_flip"):
        build_transform(aug(32, 1, horizonal_flip={"prob": 0.5}), "cifar10")
    with pytest.raises(ValueError, match=r"grayscale\.prob must lie in \[0, 1\]"):
        build_transform(aug(32, 1, grayscale={"prob": 2}), "cifar10")
    with pytest.raises(ValueError, match="empty"):
        build_multicrop_transform([], "cifar10")


def test_eval_transform_no_augmentation():
    t = EvalTransform(16, "cifar10")
    img = gradient_image(16)
    out = t(img)
    pixels = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    expected = (pixels - torch.tensor(CIFAR10_MEAN)[:, None, None]) / torch.tensor(
        CIFAR10_STD)[:, None, None]
    assert out.dtype == torch.float32 and torch.allclose(out, expected, atol=1e-5)
    assert torch.equal(out, t(img))  # deterministic
    assert t(constant_image(size=(40, 24))).shape == (3, 16, 16)
