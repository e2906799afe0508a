"""Batched device augmentation (``data/batched/augment.py``) against torchvision: every op with
fixed per-sample parameters against ``torchvision.transforms.v2.functional`` (tight tolerances),
the parameter draws against torchvision's samplers (distribution distances), the rates at which
random ops are applied against torchvision's pipeline (detected per sample), and the pipeline's
batch shape, seeding and internal shortcuts (flip folded into the crop, chunking)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop, v2
from torchvision.transforms.v2 import functional as TF

from solo_multiview.data.augmentations import EvalTransform, build_transform
from solo_multiview.data.batched import augment as A
from solo_multiview.data.batched.augment import BatchedAugment
from tests.helpers import ops_off_entry

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
N = 48  # samples per op-level check
DRAWS = 4000  # samples per distribution check


entry = ops_off_entry  # an entry with every random op off unless given


SYMMETRIC = entry(
    32, 4, rrc={"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
    color_jitter={"prob": 0.8, "brightness": 0.8, "contrast": 0.8, "saturation": 0.8, "hue": 0.2},
    grayscale={"prob": 0.2}, gaussian_blur={"prob": 0.5}, solarization={"prob": 0.2},
    horizontal_flip={"prob": 0.5},
)


def generator(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def images_u8(n: int = N, h: int = 12, w: int = 14, seed: int = 0) -> torch.Tensor:
    """Random colours plus a few flat (grey, saturated, black, white) pixels: the edge cases of
    the HSV conversion and of clamping."""
    x = torch.randint(0, 256, (n, 3, h, w), generator=generator(seed), dtype=torch.uint8)
    x[:, :, 0, 0] = 0
    x[:, :, 0, 1] = 255
    x[:, :, 0, 2] = 128
    x[:, 0, 1, :] = 255
    return x


def per_sample(fn, images: torch.Tensor, factors) -> torch.Tensor:
    return torch.stack([fn(images[i], float(factors[i])) for i in range(len(images))])


def assert_matches(mine: torch.Tensor, ref: torch.Tensor, float_atol: float = 1e-6) -> None:
    """float: within float_atol; uint8: off by at most one level, on at most 0.1% of values (the
    truncation to uint8 of a float that differs in its last bit)."""
    assert mine.dtype == ref.dtype and mine.shape == ref.shape
    diff = (mine.double() - ref.double()).abs()
    if ref.is_floating_point():
        assert diff.max() <= float_atol, diff.max()
    else:
        assert diff.max() <= 1 and (diff > 0).double().mean() <= 1e-3, (diff.max(), diff.mean())


def max_cdf_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    grid = np.union1d(a, b)
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


# ---------------------------------------------------------------------------------- op exactness
DTYPES = [torch.uint8, torch.float32]


def as_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x if dtype == torch.uint8 else A.to_float(x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("mine", "theirs"), [
    (A.adjust_brightness, TF.adjust_brightness),
    (A.adjust_contrast, TF.adjust_contrast),
    (A.adjust_saturation, TF.adjust_saturation),
])
def test_blend_ops_equal_torchvision(mine, theirs, dtype):
    x = as_dtype(images_u8(), dtype)
    factors = torch.linspace(0.0, 2.5, N, dtype=torch.float64)
    assert_matches(mine(x, factors), per_sample(theirs, x, factors))


@pytest.mark.parametrize("dtype", DTYPES)
def test_hue_equals_torchvision(dtype):
    x = as_dtype(images_u8(), dtype)
    shifts = torch.linspace(-0.5, 0.5, N, dtype=torch.float64)
    assert_matches(A.adjust_hue(x, shifts), per_sample(TF.adjust_hue, x, shifts), 1e-5)


def test_hsv_round_trip():
    x = A.to_float(images_u8())
    assert torch.allclose(A.hsv_to_rgb(A.rgb_to_hsv(x)), x, atol=1e-6)
    # torchvision keeps its HSV conversion private; its hue of pure red/green/blue is 0, 1/3, 2/3.
    primaries = torch.eye(3).view(3, 3, 1, 1)
    assert torch.allclose(A.rgb_to_hsv(primaries)[:, 0, 0, 0], torch.tensor([0, 1 / 3, 2 / 3]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_grayscale_solarize_flip_equalize_equal_torchvision(dtype):
    x = as_dtype(images_u8(), dtype)
    threshold = 128 if dtype == torch.uint8 else 128 / 255
    assert torch.equal(A.rgb_to_grayscale(x), TF.rgb_to_grayscale(x, num_output_channels=3))
    assert torch.equal(A.solarize(x), TF.solarize(x, threshold))
    assert torch.equal(A.horizontal_flip(x), TF.horizontal_flip(x))
    assert torch.equal(A.equalize(x), TF.equalize(x))


def test_equalize_edge_cases_equal_torchvision():
    flat = torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)  # one level: left unchanged
    two = flat.clone()
    two[:, :, :4] = 200  # two levels, half each
    skewed = images_u8(4, 8, 8) // 64  # four low levels
    for x in (flat, two, skewed):
        assert torch.equal(A.equalize(x), TF.equalize(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_blur_equals_torchvision(dtype, kernel_size):
    x = as_dtype(images_u8(), dtype)
    sigma = torch.linspace(0.1, 2.0, N)
    ref = torch.stack([TF.gaussian_blur(x[i], [kernel_size] * 2, [float(sigma[i])] * 2)
                       for i in range(N)])
    mine = A.gaussian_blur(x, kernel_size, sigma)
    if dtype == torch.uint8:  # rounding of values within float error of .5
        assert (mine.int() - ref.int()).abs().max() <= 1
        assert (mine != ref).double().mean() < 1e-2
    else:
        assert torch.allclose(mine, ref, atol=1e-5)


@pytest.mark.parametrize("size", [8, 16, 40])  # down, about equal, up
def test_resized_crop_equals_torchvision_bilinear(size):
    x = A.to_float(images_u8(N, 20, 26))
    boxes = A.sample_crop_boxes(N, 20, 26, (0.08, 1.0), generator(1))
    ref = torch.stack([
        TF.resized_crop(x[i], *boxes[i].tolist(), [size, size],
                        interpolation=InterpolationMode.BILINEAR, antialias=False)
        for i in range(N)
    ])
    assert torch.allclose(A.resized_crop(x, boxes, size), ref, atol=1e-5)
    # uint8 input: the same crops in [0, 1]; c * N boxes crop the images c times (copy-major).
    two = A.resized_crop(images_u8(N, 20, 26), torch.cat([boxes, boxes.flip(0)]), size)
    assert torch.allclose(two[:N], ref, atol=1e-5)
    flipped = A.resized_crop(x, boxes, size, flip=torch.ones(N, dtype=torch.bool))
    assert torch.allclose(flipped, ref.flip(-1), atol=1e-5)


def test_color_jitter_per_sample_order_equals_torchvision_sequence():
    x = A.to_float(images_u8())
    g = generator(2)
    order = torch.rand(N, 4, generator=g).argsort(dim=1)
    factors = [torch.rand(N, generator=g, dtype=torch.float64) * 1.6 + 0.2 for _ in range(3)]
    hue = torch.rand(N, generator=g, dtype=torch.float64) * 0.4 - 0.2
    mine = A.color_jitter(x, order, *factors, hue)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    values = [*factors, hue]
    for i in range(N):
        ref = x[i]
        for op in order[i].tolist():
            ref = ops[op](ref, float(values[op][i]))
        assert torch.allclose(mine[i], ref, atol=1e-5), i
    # A -1 order entry does nothing; a None factor skips that op.
    assert torch.equal(A.color_jitter(x, torch.full((N, 4), -1), *factors, hue), x)
    only_hue = A.color_jitter(x, order, None, None, None, hue)
    assert torch.allclose(only_hue, A.adjust_hue(x, hue), atol=1e-6)


def test_normalize_equals_the_torchvision_path():
    x = images_u8(4, 16, 16)
    mine = A.normalized_view(x, 16, CIFAR10_MEAN, CIFAR10_STD)
    eval_transform = EvalTransform(16, "cifar10")
    for i in range(4):
        pil = Image.fromarray(x[i].permute(1, 2, 0).numpy())
        assert torch.equal(mine[i], eval_transform(pil))
    resized = A.normalized_view(images_u8(2, 20, 30), 16, CIFAR10_MEAN, CIFAR10_STD)
    assert resized.shape == (2, 3, 16, 16)


# ---------------------------------------------------------------------------------- draws
def torchvision_boxes(n: int, h: int, w: int, scale: tuple[float, float]) -> np.ndarray:
    torch.manual_seed(0)
    image = torch.zeros(3, h, w)
    return np.array([RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3])
                     for _ in range(n)], dtype=np.float64)


@pytest.mark.parametrize(("h", "w", "scale"), [(32, 32, (0.08, 1.0)), (24, 40, (0.2, 1.0))])
def test_crop_box_distributions_match_torchvision(h, w, scale):
    """Area fraction, aspect ratio and the box's position: max CDF gap < 0.05 at 4,000 draws each
    (the 0.1% critical value of the two-sample KS test is 0.044)."""
    mine = A.sample_crop_boxes(DRAWS, h, w, scale, generator(3)).double().numpy()
    ref = torchvision_boxes(DRAWS, h, w, scale)
    for boxes in (mine, ref):
        top, left, bh, bw = boxes.T
        assert (bh >= 1).all() and (bw >= 1).all()
        assert (top >= 0).all() and (left >= 0).all()
        assert (top + bh <= h).all() and (left + bw <= w).all()

    def stats(b: np.ndarray) -> dict:
        top, left, bh, bw = b.T
        return {"area": bh * bw / (h * w), "ratio": bw / bh,
                "top": (top + bh / 2) / h, "left": (left + bw / 2) / w}

    s_mine, s_ref = stats(mine), stats(ref)
    for key in s_mine:
        assert max_cdf_distance(s_mine[key], s_ref[key]) < 0.05, key
    assert abs(s_mine["area"].mean() - s_ref["area"].mean()) < 0.02


def test_crop_box_fallback_equals_torchvision():
    """No try can fit a 0.95-area crop of aspect ratio <= 4/3 into a 10 x 40 image: both fall back
    to the central crop of the short side at the widest allowed ratio."""
    mine = A.sample_crop_boxes(50, 10, 40, (0.95, 1.0), generator(4))
    ref = RandomResizedCrop.get_params(torch.zeros(3, 10, 40), [0.95, 1.0], [3 / 4, 4 / 3])
    assert ref == (0, 13, 10, 13)
    assert (mine == torch.tensor(ref)).all()
    tall = A.sample_crop_boxes(5, 40, 10, (0.95, 1.0), generator(4))
    ref_tall = RandomResizedCrop.get_params(torch.zeros(3, 40, 10), [0.95, 1.0], [3 / 4, 4 / 3])
    assert (tall == torch.tensor(ref_tall)).all()


def test_jitter_and_blur_draws_match_torchvision():
    augment = BatchedAugment(SYMMETRIC, "cifar10")
    params = augment.sample_params(DRAWS, 32, 32, generator(5))
    torch.manual_seed(0)
    jitter = v2.ColorJitter(0.8, 0.8, 0.8, 0.2)
    ref = [jitter.make_params([]) for _ in range(DRAWS)]
    for mine, key, (low, high) in [
        (params.brightness, "brightness_factor", (0.2, 1.8)),
        (params.contrast, "contrast_factor", (0.2, 1.8)),
        (params.saturation, "saturation_factor", (0.2, 1.8)),
        (params.hue, "hue_factor", (-0.2, 0.2)),
    ]:
        values = mine.numpy()
        assert values.min() >= low and values.max() <= high
        assert values.min() < low + 0.01 and values.max() > high - 0.01
        theirs = np.array([r[key] for r in ref])
        assert max_cdf_distance(values, theirs) < 0.05, key
    # The op order: a uniform permutation (24 equally likely), like torch.randperm(4).
    codes = (params.order * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = torch.bincount(codes, minlength=256)[torch.unique(codes)]
    assert len(counts) == 24 and (counts - DRAWS / 24).abs().max() < 0.3 * DRAWS / 24
    blur = v2.GaussianBlur(3, (0.1, 2.0))
    sigmas = np.array([blur.make_params([])["sigma"][0] for _ in range(DRAWS)])
    assert max_cdf_distance(params.sigma.numpy(), sigmas) < 0.05
    assert params.sigma.min() >= 0.1 and params.sigma.max() <= 2.0


def test_application_rates_match_the_probabilities():
    params = BatchedAugment(SYMMETRIC, "cifar10").sample_params(DRAWS, 32, 32, generator(6))
    for mask, p in [(params.jitter, 0.8), (params.grayscale, 0.2), (params.blur, 0.5),
                    (params.solarize, 0.2), (params.flip, 0.5), (params.equalize, 0.0)]:
        assert abs(mask.double().mean().item() - p) < 0.03  # 4 standard errors at p = 0.5


def gradient_u8(size: int = 16) -> torch.Tensor:
    """Columns get distinct colours, every channel different, values below and above 128."""
    col = torch.arange(size, dtype=torch.float64) * (255 / (size - 1))
    x = torch.stack([col, 255 - col, (col * 0.5 + 60)], dim=0)[:, None, :].expand(3, size, size)
    return x.round().to(torch.uint8).contiguous()


DETECT = 1500


def stripes_u8(size: int = 16) -> torch.Tensor:
    """Columns alternating dark and bright (a blur visibly smooths every pixel)."""
    col = torch.where(torch.arange(size) % 2 == 0, 60, 200)
    x = torch.stack([col, col // 2 + 20, 255 - col], dim=0)[:, None, :].expand(3, size, size)
    return x.to(torch.uint8).contiguous()


def detected(op: str, crops: torch.Tensor, plain: torch.Tensor) -> torch.Tensor:
    """Per crop (values in [0, 1], (n, 3, s, s)): did ``op`` change it the way only ``op`` does?"""
    if op == "horizontal_flip":
        return (crops - plain.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-3
    if op == "grayscale":
        return (crops[:, 0] - crops[:, 1]).abs().amax(dim=(1, 2)) < 1e-3
    if op == "solarization":  # every pixel of the image is >= 128: solarized means 1 - x
        return (crops - (1 - plain)).abs().amax(dim=(1, 2, 3)) < 1e-3
    # gaussian_blur: some pixel moved by half a level or more (sigma >~ 0.28 on stripes)
    return (crops - plain).abs().amax(dim=(1, 2, 3)) > 0.5 / 255


@pytest.mark.parametrize(("op", "p"), [("horizontal_flip", 0.5), ("grayscale", 0.2),
                                       ("solarization", 0.3), ("gaussian_blur", 0.5)])
def test_applied_rates_match_torchvision(op, p):
    """With only ``op`` on (p), the fraction of crops it visibly changed, ours and torchvision's
    path's, 1,500 crops each: within 0.05 of each other (3 standard errors of the difference)
    and of p (a blur with sigma below ~0.28 moves no pixel by half a level: about 10% of blurs
    are invisible on both paths, so there the rate is about 0.9 p)."""
    cfg = entry(16, 1, **{op: {"prob": p}}, mean=[0, 0, 0], std=[1, 1, 1])
    image = {"horizontal_flip": gradient_u8(), "grayscale": gradient_u8(),
             "solarization": (gradient_u8() // 2 + 128).to(torch.uint8),
             "gaussian_blur": stripes_u8()}[op]
    plain = A.to_float(image)[None]
    ours = BatchedAugment(cfg, "x")(image[None].expand(DETECT, -1, -1, -1), generator(7))
    transform = build_transform(cfg, "x")
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    torch.manual_seed(7)
    theirs = torch.stack([transform(pil) for _ in range(DETECT)])
    rate_ours = detected(op, ours, plain).double().mean().item()
    rate_theirs = detected(op, theirs, plain).double().mean().item()
    expected = 0.9 * p if op == "gaussian_blur" else p
    assert abs(rate_ours - expected) < 0.05 and abs(rate_theirs - expected) < 0.05
    assert abs(rate_ours - rate_theirs) < 0.05


def test_rates_detected_per_sample_equal_the_drawn_flags():
    cfg = entry(16, 1, horizontal_flip={"prob": 0.5}, grayscale={"prob": 0.3},
                mean=[0, 0, 0], std=[1, 1, 1])
    augment = BatchedAugment(cfg, "x")
    image = gradient_u8(16)[None].expand(400, -1, -1, -1)
    params = augment.sample_params(400, 16, 16, generator(8))
    out = augment.apply(image, params)
    grey = A.rgb_to_grayscale(A.to_float(image[:1]))
    plain = torch.where(params.grayscale.view(-1, 1, 1, 1), grey, A.to_float(image[:1]))
    assert torch.equal(detected("horizontal_flip", out, plain), params.flip)
    assert torch.equal(detected("grayscale", out, plain), params.grayscale)


# ---------------------------------------------------------------------------------- pipeline
def test_pipeline_shape_dtype_copies_and_seeding():
    augment = BatchedAugment(SYMMETRIC, "cifar10")
    x = images_u8(8, 32, 32)
    a = augment(x, generator(9), copies=3)
    assert a.shape == (24, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, augment(x, generator(9), copies=3))
    assert not torch.equal(a, augment(x, generator(10), copies=3))
    assert not torch.equal(a[:8], a[8:16])  # copies of an image are different crops
    assert torch.isfinite(a).all()
    small = BatchedAugment(entry(8, 2, rrc={"enabled": True}), "cifar10")
    assert small(x, generator(0)).shape == (8, 3, 8, 8)


def test_pipeline_equals_its_ops_in_torchvision_order():
    """apply() with drawn params equals the public ops run one after the other in torchvision's
    order (crop, jitter, grayscale, blur, solarize, equalize, flip, normalise): the flip folded
    into the crop grid and the subset bookkeeping change nothing but float rounding."""
    cfg = dict(SYMMETRIC, equalization={"prob": 0.3})
    augment = BatchedAugment(cfg, "cifar10")
    x = images_u8(32, 32, 32)
    params = augment.sample_params(64, 32, 32, generator(11))
    out = augment.apply(x, params)
    ref = A.resized_crop(x, params.boxes, 32)
    order = torch.where(params.jitter[:, None], params.order, -1)
    ref = A.color_jitter(ref, order, params.brightness, params.contrast, params.saturation,
                         params.hue)
    mask = lambda m: m.view(-1, 1, 1, 1)  # noqa: E731
    ref = torch.where(mask(params.grayscale), A.rgb_to_grayscale(ref), ref)
    ref = torch.where(mask(params.blur), A.gaussian_blur(ref, 3, params.sigma), ref)
    ref = torch.where(mask(params.solarize), A.solarize(ref), ref)
    ref = torch.where(mask(params.equalize), A.equalize(ref), ref)
    ref = torch.where(mask(params.flip), A.horizontal_flip(ref), ref)
    ref = A.normalize(ref, CIFAR10_MEAN, CIFAR10_STD)
    close = (out - ref).abs().amax(dim=(1, 2, 3)) < 1e-4
    # Equalization bins floats to 256 levels: a value within rounding of a bin edge may land in
    # the neighbouring bin on one side. Allow that on a sample or two, nowhere else.
    assert close[~params.equalize].all()
    assert close.sum() >= len(close) - 2


def test_chunked_apply_equals_whole_batch():
    x = images_u8(20, 32, 32)
    whole = BatchedAugment(SYMMETRIC, "cifar10")
    chunked = BatchedAugment(SYMMETRIC, "cifar10", chunk_size=7)
    params = whole.sample_params(60, 32, 32, generator(12))
    assert torch.allclose(whole.apply(x, params), chunked.apply(x, params), atol=1e-6)


def test_dense_apply_equals_sparse():
    """The accelerator path (every op on every sample, kept by torch.where: no host sync) gives
    the CPU path's crops (equalization on too, so every masked op takes part)."""
    x = images_u8(20, 32, 32)
    spec = dict(SYMMETRIC, equalization={"prob": 0.3})
    params = BatchedAugment(spec, "cifar10").sample_params(60, 32, 32, generator(13))
    sparse = BatchedAugment(spec, "cifar10", dense=False).apply(x, params)
    dense = BatchedAugment(spec, "cifar10", dense=True).apply(x, params)
    assert torch.allclose(sparse, dense, atol=1e-5)


def test_rrc_disabled_resizes_and_flips():
    augment = BatchedAugment(entry(12, 1, horizontal_flip={"prob": 1.0}, mean=[0] * 3,
                                   std=[1] * 3), "x")
    out = augment(images_u8(3, 20, 30), generator(0), copies=2)
    assert out.shape == (6, 3, 12, 12)
    assert torch.equal(out[:3], out[3:])
    square = images_u8(2, 12, 12)
    assert torch.equal(augment(square, generator(0)), A.to_float(square).flip(-1))


def test_schema_errors_are_the_torchvision_paths():
    with pytest.raises(ValueError, match="unknown key"):
        BatchedAugment(entry(16, 1, blurr={"prob": 1}), "x")
    with pytest.raises(ValueError, match=r"grayscale\.prob must lie in \[0, 1\]"):
        BatchedAugment(entry(16, 1, grayscale={"prob": 2}), "x")
    with pytest.raises(ValueError, match="expected one factor per sample"):
        A.adjust_brightness(images_u8(4), torch.ones(3))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        A.gaussian_blur(images_u8(4), 4, 1.0)


def test_blur_kernel_size_is_the_schema_rule():
    assert BatchedAugment(entry(32), "x").kernel_size == 3
    assert BatchedAugment(entry(224), "x").kernel_size == 23
    taps = A.gaussian_kernels(torch.tensor([1.0]), 5)[0].double()
    t = torch.arange(5, dtype=torch.float64) - 2
    expected = torch.exp(-t ** 2 / 2)
    assert torch.allclose(taps, expected / expected.sum(), atol=1e-7)
    assert math.isclose(float(taps.sum()), 1.0, rel_tol=1e-6)
