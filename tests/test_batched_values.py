"""Exact values, devices, dtypes and messages of the batched pipeline (``data/batched/``): ops
against torchvision or a float64 computation on tiny images, device propagation on PyTorch's
``meta`` device (no GPU needed), ``batched.device`` resolution with CUDA faked, the loader's
arguments, seeds and refusals (messages asserted whole), and JPEG/PNG decoding."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from solo_multiview.data.batched import augment as A
from solo_multiview.data.batched import build as B
from solo_multiview.data.batched.augment import BatchedAugment
from solo_multiview.data.batched.build import (
    BatchedPretrainLoader,
    build_batched_pretrain_loader,
    device_kind,
    image_list_shape,
    resolve_device,
)
from solo_multiview.data.batched.loader import (
    DeviceBatchLoader,
    ShardedEpochOrder,
    _long_tensor,
    decode_jpeg_files,
    derived_seed,
    list_image_folder,
)
from solo_multiview.data.dali.spec import AUG_KEYS
from solo_multiview.data.sources import ArraySource
from solo_multiview.data.views import ViewSpec
from tests.helpers import ops_off_entry

META = torch.device("meta")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
GIB = 1024 ** 3


def gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def u8(n: int, h: int, w: int, low: int = 0, high: int = 256, seed: int = 0) -> torch.Tensor:
    return torch.randint(low, high, (n, 3, h, w), generator=gen(seed), dtype=torch.uint8)


def raises(message: str):
    """pytest.raises for exactly this whole message."""
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


# ================================================================================== augment
def test_ops_keep_the_meta_device():
    """Every tensor an op creates lives on the input's device (meta: no GPU needed)."""
    boxes = torch.tensor([[0, 0, 4, 4], [1, 1, 3, 5]], device=META)
    assert A._crop_grid(boxes, 4, 8, 8).device == META
    x = torch.rand(2, 3, 5, 5).to(META)
    assert A.normalize(x, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)).device == META
    assert A.hsv_to_rgb(x).device == META
    sigma = torch.tensor([0.5, 1.0], dtype=torch.float64, device=META)
    assert A.gaussian_kernels(sigma, 3).device == META
    assert A.equalize(u8(2, 5, 5).to(META)).device == META


def test_crop_grid_is_the_half_pixel_rule_clamped_into_the_box():
    boxes = torch.tensor([[1, 2, 3, 4]])  # top 1, left 2, height 3, width 4
    grid = A._crop_grid(boxes, 2, 6, 8)
    assert grid.dtype == torch.float32 and grid.shape == (1, 2, 2, 2)
    # x: 2 + (q + 0.5) * 4 / 2 - 0.5 = 2.5, 4.5 (inside [2, 5]); normalised (2 x + 1) / 8 - 1
    # y: 1 + (q + 0.5) * 3 / 2 - 0.5 = 1.25, 2.75 (inside [1, 3]); normalised (2 y + 1) / 6 - 1
    xs = [(2 * v + 1) / 8 - 1 for v in (2.5, 4.5)]
    ys = [(2 * v + 1) / 6 - 1 for v in (1.25, 2.75)]
    expected = torch.tensor([[[[x, y] for x in xs] for y in ys]], dtype=torch.float32)
    assert torch.equal(grid, expected)


def test_resized_crop_of_one_image_with_three_boxes():
    x = u8(1, 6, 6)
    boxes = torch.tensor([[0, 0, 6, 6], [1, 1, 4, 4], [2, 0, 3, 5]])
    out = A.resized_crop(x, boxes, 4)
    for i, (t, left, h, w) in enumerate(boxes.tolist()):
        ref = TF.resized_crop(x[0].float() / 255, t, left, h, w, [4, 4],
                              interpolation=InterpolationMode.BILINEAR, antialias=False)
        assert torch.allclose(out[i], ref, atol=1e-6)


def test_resized_crop_refuses_boxes_not_a_multiple_of_the_images():
    with raises("resized_crop: 5 boxes for 2 images (need c * N)"):
        A.resized_crop(u8(2, 6, 6), torch.tensor([[0, 0, 2, 2]] * 5), 2)


def test_resized_crop_emits_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A.resized_crop(u8(2, 6, 6), torch.tensor([[0, 0, 4, 4], [1, 1, 5, 5]]), 3)


def test_resize_center_crop_is_bicubic_antialiased_and_clamped():
    x = torch.zeros(2, 3, 12, 9)
    x[..., :, 4:] = 1.0
    x[..., 6:, :] = 1.0 - x[..., 6:, :]  # a checkerboard of 4 blocks: bicubic overshoots
    size = 5
    raw = TF.center_crop(TF.resize(x, [size], interpolation=InterpolationMode.BICUBIC,
                                   antialias=True), [size, size])
    assert raw.min() < 0 and raw.max() > 1  # the clamp matters
    assert torch.equal(A.resize_center_crop(x, size), raw.clamp(0.0, 1.0))


def test_resize_center_crop_leaves_images_of_the_size_unchanged():
    x = torch.full((2, 3, 4, 4), 1.5)  # out of range: a resize path would clamp it
    assert torch.equal(A.resize_center_crop(x.clone(), 4), x)
    single = torch.full((3, 4, 4), -0.5)
    assert torch.equal(A.resize_center_crop(single.clone(), 4), single)


def test_brightness_clamps_at_zero():
    x = torch.rand(2, 3, 3, 3)
    assert torch.equal(A.adjust_brightness(x, -1.0), torch.zeros_like(x))


def test_solarize_threshold_is_128_of_255_for_float():
    x = torch.tensor([0.5005, 0.5025], dtype=torch.float32).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    # 128 / 255 = 0.50196: the first stays, the second is inverted
    expected = torch.tensor([0.5005, 1 - 0.5025]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    assert torch.equal(A.solarize(x), expected)


def equalize_reference(images: torch.Tensor) -> torch.Tensor:
    """PIL's equalisation written out per sample and channel (a loop), capped at 255."""
    out = images.clone()
    for i in range(images.shape[0]):
        for c in range(images.shape[1]):
            values = images[i, c].flatten().tolist()
            hist = [0] * 256
            for v in values:
                hist[v] += 1
            nonzero = [h for h in hist if h]
            step = (sum(nonzero) - nonzero[-1]) // 255
            if len(nonzero) <= 1 or step == 0:
                continue
            lut, n = [], step // 2
            for level in range(256):
                lut.append(min(255, n // step))
                n += hist[level]
            out[i, c] = torch.tensor([lut[v] for v in values]).view(images.shape[2:])
    return out


def step_one_image() -> torch.Tensor:
    """20 x 20 per channel: 300 pixels on levels 1..254 and 100 at 255, so the lookup step is
    (400 - 100) // 255 = 1 and the top level's entry (300) is capped at 255."""
    g = gen(1)
    channels = []
    for _ in range(3):
        values = torch.cat([torch.randint(1, 255, (300,), generator=g), torch.full((100,), 255)])
        channels.append(values[torch.randperm(400, generator=g)].view(20, 20))
    return torch.stack(channels).unsqueeze(0).to(torch.uint8)


def test_equalize_equals_the_pil_table():
    for x in (u8(2, 64, 64, low=10, high=250), step_one_image()):
        expected = equalize_reference(x)
        assert not torch.equal(expected, x)
        out = A.equalize(x)
        assert out.dtype == torch.uint8 and torch.equal(out, expected)
        assert torch.equal(out, TF.equalize(x))
        as_float = A.equalize(x.float() / 255)
        assert as_float.dtype == torch.float32
        assert torch.equal(as_float, expected.float() * (1.0 / 255.0))


def test_gaussian_kernels_in_float64():
    sigma = torch.tensor([0.3, 0.7, 1.9], dtype=torch.float32)
    taps = A.gaussian_kernels(sigma, 5)
    assert taps.dtype == torch.float32
    for row, s in zip(taps, sigma.tolist()):
        weights = [math.exp(-(t * t) / (2.0 * s * s)) for t in (-2, -1, 0, 1, 2)]
        total = sum(weights)
        assert torch.equal(row, torch.tensor([w / total for w in weights], dtype=torch.float32))


def test_gaussian_blur_kernel_one_is_the_identity_and_dtypes_are_kept():
    x = u8(2, 5, 6)
    assert torch.equal(A.gaussian_blur(x, 1, 0.7), x)
    out = A.gaussian_blur(x, 3, 0.7)
    assert out.dtype == torch.uint8
    ref = torch.stack([TF.gaussian_blur(x[i], [3, 3], [0.7, 0.7]) for i in range(2)])
    assert (out.int() - ref.int()).abs().max() <= 1
    doubles = x.double() / 255
    blurred = A.gaussian_blur(doubles, 3, 0.7)
    assert blurred.dtype == torch.float64
    with raises("gaussian_blur: kernel_size must be odd and positive, got 4"):
        A.gaussian_blur(x, 4, 0.7)


def test_a_zero_hue_strength_skips_the_hue_op():
    """Jitter with only brightness on: the crop is the brightness product, with no HSV round
    trip (hue 0 means torchvision's None, not a rotation by 0)."""
    aug = BatchedAugment(ops_off_entry(
        6, 1, color_jitter={"prob": 1.0, "brightness": 0.4, "contrast": 0.0, "saturation": 0.0,
                            "hue": 0.0}), "cifar10")
    x = torch.rand(16, 3, 6, 6, generator=gen(2))
    params = aug.sample_params(16, 6, 6, gen(3))
    factors = params.brightness.float().view(-1, 1, 1, 1)
    expected = (x * factors).clamp(0.0, 1.0)
    assert torch.equal(aug._jitter(x.clone(), params), expected)


# ================================================================================== build
@pytest.fixture
def cuda_faked(monkeypatch):
    """torch reports CUDA (device 2) without touching any; mem_get_info records its device."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)

    def mem_get_info(device=None):
        calls.append(device)
        return 3 * GIB, 80 * GIB

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    return calls


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize(("choice", "accelerator", "expected"), [
    (None, None, "cuda"), (None, "cpu", "cpu"), ("auto", "gpu", "cuda"), ("auto", "cpu", "cpu"),
    ("cpu", None, "cpu"), ("cpu", "gpu", "cpu"), ("cuda", None, "cuda"), ("cuda", "cpu", "cuda"),
])
def test_device_kind_with_cuda(cuda_faked, choice, accelerator, expected):
    assert device_kind(choice, accelerator) == expected


@pytest.mark.parametrize(("choice", "accelerator"), [
    (None, None), ("auto", "gpu"), ("auto", "cpu"), ("cpu", "gpu"),
])
def test_device_kind_without_cuda_is_cpu(no_cuda, choice, accelerator):
    assert device_kind(choice, accelerator) == "cpu"


def test_device_kind_refusals(no_cuda):
    with raises("batched.device: unknown value 'tpu'; choose one of ['auto', 'cpu', 'cuda']"):
        device_kind("tpu")
    with raises("batched.device: 'cuda' but torch.cuda.is_available() is False (no CUDA "
                "device or a CPU-only torch); use batched.device=cpu (or auto)"):
        device_kind("cuda")


def test_resolve_device(cuda_faked):
    assert resolve_device("cuda") == torch.device("cuda", 2)
    assert resolve_device("auto", "gpu") == torch.device("cuda", 2)
    assert resolve_device("cpu", "gpu") == torch.device("cpu")
    assert resolve_device("auto", "cpu") == torch.device("cpu")


def test_node_of_a_missing_or_null_key_is_empty():
    assert B._node({}, "batched") == {}
    assert B._node({"batched": None}, "batched") == {}
    assert B._node({"batched": {"device": "cpu"}}, "batched") == {"device": "cpu"}


def test_plain_resolves_interpolations():
    cfg = OmegaConf.create({"size": 8, "augs": [{"crop_size": "${size}"}]})
    assert B._plain(cfg.augs) == [{"crop_size": 8}]
    assert B._plain([1]) == [1]


def test_image_list_shape_messages(tmp_path):
    wide, square = tmp_path / "wide.png", tmp_path / "square.png"
    Image.new("RGB", (6, 4)).save(wide)
    Image.new("RGB", (5, 5)).save(square)
    assert image_list_shape([wide, wide], None) == (4, 6)
    assert image_list_shape([wide, square], 7) == (7, 7)
    with raises(f"data.format=batched: the image_list holds images of different sizes ('{wide}' "
                f"is 6x4, '{square}' is 5x5); set batched.image_size to decode every image to "
                "one square size"):
        image_list_shape([wide, square], None)
    with raises("data.format=batched: the image_list selects no images"):
        image_list_shape([], None)


def multicrop_entry(crop_size: int = 8, num_crops: int = 2, **ops) -> dict:
    return ops_off_entry(crop_size, num_crops, rrc={"enabled": True, "crop_min_scale": 0.5,
                                                    "crop_max_scale": 1.0}, **ops)


def pretrain_loader(n: int = 10, batch_size: int = 4, views=None, augs=None, **kwargs):
    images = kwargs.pop("images", None)
    if images is None and "files" not in kwargs:
        images = u8(n, 8, 8)
    targets = kwargs.pop("targets", np.arange(n) % 3)
    return BatchedPretrainLoader(
        targets, kwargs.pop("num_classes", 3),
        [multicrop_entry()] if augs is None else augs, kwargs.pop("dataset", "cifar10"),
        batch_size, ViewSpec(2) if views is None else views, images=images, **kwargs)


def test_pretrain_loader_defaults(no_cuda):
    loader = pretrain_loader(n=12, targets=np.array([0, 1, 1, 2] * 3, dtype=np.int32),
                             num_classes=5)
    assert loader.seed == 0 and loader.device_choice == "auto" and loader.num_workers == 0
    assert loader.max_gib is None and loader.accelerator is None and loader.dataset == "cifar10"
    assert loader.targets.dtype == np.int64
    assert loader.class_counts.tolist() == [3, 6, 3, 0, 0]
    assert loader.image_shape() == (3, 8, 8) and len(loader) == 3
    order = torch.randperm(12, generator=gen(0))[:12]  # seed 0, epoch 0
    assert torch.equal(torch.cat([b[0] for b in loader]), order)
    loader.set_epoch(3)
    assert loader.epoch == 3 and loader.sampler.epoch == 3
    inner = loader.loader
    assert inner.augments[0].mean == CIFAR10_MEAN and inner.num_workers == 0


def test_pretrain_loader_describe(no_cuda):
    in_memory = pretrain_loader(device="cpu")
    assert in_memory.describe() == ("batched loader (multicrop, batched.device=cpu, in memory): "
                                    "10 images (3, 8, 8), batch 4, 2 crops, 2 batches/epoch")
    files = pretrain_loader(files=[Path("none.jpg")] * 10, image_size=6, device="auto")
    assert files.describe() == ("batched loader (multicrop, batched.device=auto, files, decoded "
                                "on first use): 10 images (3, 6, 6), batch 4, 2 crops, 2 "
                                "batches/epoch")


def test_pretrain_loader_batch_of_a_whole_share():
    assert len(pretrain_loader(n=8, batch_size=8)) == 1


def test_pretrain_loader_getstate_drops_the_device_loader(no_cuda):
    loader = pretrain_loader()
    inner = loader.loader
    state = loader.__getstate__()
    assert state["_loader"] is None and loader._loader is inner
    assert set(state) == set(loader.__dict__)
    assert all(state[k] is v for k, v in loader.__dict__.items() if k != "_loader")


def test_pretrain_loader_argument_refusals(no_cuda):
    with raises("BatchedPretrainLoader: give images or files, not both"):
        BatchedPretrainLoader([0], 1, [multicrop_entry()], "cifar10", 1, ViewSpec(2))
    pairs = ViewSpec(2, scheme="pairs")
    with raises("augmentations: the pairs view scheme takes exactly one augmentation entry (its "
                "strong augmentation; K is method_kwargs.num_views), got 2 entries"):
        pretrain_loader(views=pairs, augs=[multicrop_entry(8, 1), multicrop_entry(8, 1)])
    with raises("augmentations: 3 crops per image, but the method's views need 4 (2 large + 2 "
                "small)"):
        pretrain_loader(views=ViewSpec(2, 2), augs=[multicrop_entry(8, 2), multicrop_entry(4, 1)])
    bad = {**multicrop_entry(4, 1), "bogus": 1}
    with raises(f"augmentations[1]: unknown key(s) ['bogus']; allowed: {list(AUG_KEYS)}"):
        pretrain_loader(views=ViewSpec(2, 1), augs=[multicrop_entry(8, 2), bad])


def test_workers_are_allowed_on_the_cpu(cuda_faked):
    assert pretrain_loader(device="cpu", accelerator="gpu", num_workers=2).num_workers == 2
    assert pretrain_loader(device="auto", accelerator="cpu", num_workers=2).num_workers == 2


def test_workers_are_refused_on_cuda(cuda_faked):
    with raises("batched.num_workers: 2 worker processes, but the crops are made on CUDA, "
                "which needs none; set it to 0 (or null)"):
        pretrain_loader(device="cuda", num_workers=2)


def test_max_gib_bound_and_message(no_cuda):
    size = 10 * 3 * 8 * 8  # 1,920 bytes
    assert pretrain_loader(max_gib=size / GIB).resident_bytes() == size  # exactly at the bound
    with raises("data.format=batched: the training set would take 1.79e-06 GiB decoded (10 "
                "images of (3, 8, 8)), more than batched.max_gib=1e-06; raise batched.max_gib "
                "if the device holds it, decode smaller images (batched.image_size), or use "
                "data.format=image_folder or dali, which read the files batch by batch"):
        pretrain_loader(max_gib=1e-6)


def test_free_memory_check(cuda_faked):
    loader = pretrain_loader()
    cuda = torch.device("cuda", 0)
    loader.resident_bytes = lambda: 3 * GIB // 2  # exactly half of the 3 GiB free: accepted
    loader._check_free_memory(cuda)
    assert cuda_faked == [cuda]
    loader.resident_bytes = lambda: GIB  # a third: accepted
    loader._check_free_memory(cuda)
    loader._check_free_memory(torch.device("cpu"))  # not asked on the CPU
    assert cuda_faked == [cuda, cuda]
    loader.resident_bytes = lambda: 2 * GIB
    with raises("data.format=batched: the decoded training set (2 GiB) would take more than "
                "half of the 3.00 GiB free on cuda:0; decode smaller images "
                "(batched.image_size) or use data.format=image_folder or dali"):
        loader._check_free_memory(cuda)


# ---------------------------------------------------------------------------- from a config
@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory):
    from solo_multiview.config.pretrain import parse_pretrain_cfg
    from tests.helpers import tiny_cfg

    cfg = parse_pretrain_cfg(tiny_cfg(tmp_path_factory.mktemp("cfg"), overrides=[
        "data.format=batched", "++batched.device=cpu"]))
    cfg.data.long_tail.profile = "none"
    return cfg


@pytest.fixture
def cfg(base_cfg):
    return base_cfg.copy()


def small_source() -> ArraySource:
    images = u8(40, 16, 16, seed=5).permute(0, 2, 3, 1).numpy()
    return ArraySource(images, np.arange(40) % 4)


def test_build_from_a_config_uses_the_given_source(cfg):
    cfg.seed = 0
    cfg.accelerator = "cpu"
    source = small_source()
    loader = build_batched_pretrain_loader(cfg, source=source)
    assert loader.views == ViewSpec(2)  # the method's spec when views is None
    assert torch.equal(loader.images, torch.from_numpy(source.images).permute(0, 3, 1, 2))
    assert loader.targets.tolist() == (np.arange(40) % 4).tolist()
    assert loader.dataset == cfg.data.dataset and loader.seed == 0
    assert loader.device_choice == "cpu" and loader.accelerator == "cpu"
    assert loader.max_gib == 8.0 and loader.num_workers == 0


def loose(cfg):
    """The config without its schema (keys can be nulled or deleted)."""
    return OmegaConf.create(OmegaConf.to_container(cfg))


def test_build_defaults_of_a_null_or_missing_batched_node(cfg):
    cfg = loose(cfg)
    cfg.batched.device = None
    cfg.batched.max_gib = None
    loader = build_batched_pretrain_loader(cfg, source=small_source())
    assert loader.device_choice == "auto" and loader.max_gib == 8.0
    del cfg["batched"]
    loader = build_batched_pretrain_loader(cfg, source=small_source())
    assert loader.device_choice == "auto" and loader.max_gib == 8.0


def test_build_takes_batched_num_workers(cfg):
    cfg.batched.num_workers = 1
    assert build_batched_pretrain_loader(cfg, source=small_source()).num_workers == 1


@pytest.mark.parametrize(("device", "accelerator", "expected"), [
    ("cpu", "gpu", 2), ("auto", "cpu", 2), ("auto", "gpu", 0), ("cuda", "cpu", 0),
])
def test_build_workers_follow_the_device(cfg, cuda_faked, device, accelerator, expected):
    """batched.num_workers null: data.num_workers on the CPU, 0 on CUDA."""
    cfg.batched.device = device
    cfg.accelerator = accelerator
    cfg.data.num_workers = 2
    loader = build_batched_pretrain_loader(cfg, source=small_source())
    assert loader.num_workers == expected and loader.accelerator == accelerator


def test_build_without_data_workers_is_zero(cfg):
    cfg.data.num_workers = 0
    assert build_batched_pretrain_loader(cfg, source=small_source()).num_workers == 0
    cfg = loose(cfg)
    del cfg.data["num_workers"]
    assert build_batched_pretrain_loader(cfg, source=small_source()).num_workers == 0


def test_build_refusals(cfg):
    cfg.data.bad_images = "skip"
    with raises("data.bad_images=skip is not supported with data.format=batched (the training "
                "set is decoded once, up front, so an unreadable file stops the run there); use "
                "data.bad_images=error with data.format=batched, or data.format=image_folder to "
                "skip unreadable images"):
        build_batched_pretrain_loader(cfg, source=small_source())
    cfg.data.bad_images = "error"

    class Folder:
        targets = np.arange(8) % 2
        num_classes = 2

        def __len__(self):
            return 8

    with raises(f"data.format=batched: the source Folder of data.dataset={cfg.data.dataset} is "
                "neither in memory nor an image list"):
        build_batched_pretrain_loader(cfg, source=Folder())


# ================================================================================== loader
def test_derived_seed_mixes_two_words():
    words = np.random.SeedSequence([3, 1, 0, 2, 0]).generate_state(2, dtype=np.uint32)
    expected = int(words[0]) * 2 ** 31 ^ int(words[1])
    assert derived_seed(3, 1, 0, 2, 0) == expected and 0 <= expected < 2 ** 63


def test_long_tensor_is_int64_on_the_device():
    for values in (torch.tensor([1, 2], dtype=torch.int32), np.array([1, 2], dtype=np.int32),
                   [1, 2]):
        out = _long_tensor(values, torch.device("cpu"))
        assert out.dtype == torch.int64 and out.tolist() == [1, 2]
        assert _long_tensor(values, META).device == META


def test_set_epoch_refuses_negative():
    with raises("epoch must be >= 0, got -1"):
        ShardedEpochOrder(4).set_epoch(-1)


def device_loader(n: int = 20, batch_size: int = 5, augs=None, **kwargs) -> DeviceBatchLoader:
    return DeviceBatchLoader(u8(n, 8, 8), torch.arange(n) % 3,
                             [multicrop_entry()] if augs is None else augs, "cifar10",
                             batch_size, **kwargs)


def test_device_loader_defaults_and_describe():
    ld = device_loader()
    assert ld.seed == 0 and ld.num_workers == 0 and ld.mode == "multicrop"
    assert ld.num_crops == [2] and ld.augments[0].mean == CIFAR10_MEAN
    assert ld.describe() == ("device batch loader (cpu, multicrop): 20 images (3, 8, 8), batch "
                             "5, 2 crops, 4 batches/epoch")
    g = torch.Generator()
    g.manual_seed(0)
    assert torch.equal(ld.epoch_rows(0, 0, 1), torch.randperm(20, generator=g))
    pairs = device_loader(mode="pairs", augs=[multicrop_entry(8, 1)])
    assert pairs.num_crops == [4] and pairs.pairing.num_pairs == 1
    three = device_loader(mode="pairs", augs=[multicrop_entry(8, 1)], num_pairs=3, seed=7)
    assert three.num_crops == [12] and three.pairing.seed == 7


def test_device_loader_lives_on_the_given_device():
    ld = device_loader(device="meta")
    assert ld.device == META and ld.images.device == META
    assert ld.targets.device == META and ld.indexes.device == META
    assert ld.epoch_rows(0, 0, 1).device == META


def test_device_loader_batch_sizes_and_shares():
    assert len(device_loader(batch_size=1)) == 20 and len(device_loader(batch_size=20)) == 1
    ld = device_loader(n=20, batch_size=10)
    assert ld.batches_per_epoch(2) == 1 and ld.batches_per_epoch() == 2
    rows = ld.epoch_rows(0, 1, 2)
    g = torch.Generator()
    g.manual_seed(0)
    assert torch.equal(rows, torch.randperm(20, generator=g)[1::2])
    assert device_loader(n=23, batch_size=5).epoch_rows(0, 0, 1).shape == (20,)
    assert device_loader(n=23, batch_size=5).epoch_rows(0, 1, 2).shape == (10,)  # 11 cut to 10


def test_device_loader_generators_are_seeded_per_stream():
    ld = device_loader(seed=3)
    assert ld.generator(1, 0, 2).initial_seed() == derived_seed(3, 1, 0, 2, 0)
    assert ld.generator(1, 0, 2, stream=1).initial_seed() == derived_seed(3, 1, 0, 2, 1)


def test_partner_rows_are_stream_one_draws():
    ld = device_loader(seed=3, mode="pairs", augs=[multicrop_entry(8, 1)], num_pairs=4)
    rows = torch.arange(5)
    g = torch.Generator()
    g.manual_seed(derived_seed(3, 2, 0, 1, 1))
    expected = torch.randint(0, 20, (5, 4), generator=g)
    assert torch.equal(ld.partner_rows(rows, 2, 0, 1), expected)
    with raises("partner_rows: the loader is not in pairs mode"):
        device_loader().partner_rows(rows, 0, 0, 0)


def test_augmented_augmented_partners_are_augmented_too():
    from solo_multiview.data.batched.augment import normalized_view

    ld = device_loader(mode="pairs", augs=[multicrop_entry(8, 1)], num_pairs=2,
                       views="augmented_augmented")
    rows = torch.arange(5)
    crops = ld.make_batch(rows, 0, 0, 0)[1]
    partners = ld.partner_rows(rows, 0, 0, 0)
    spec = ld.augments[0]
    for j in range(2):
        plain = normalized_view(ld.images[partners[:, j]], 8, spec.mean, spec.std)
        assert not torch.allclose(crops[6 + j], plain)


def test_device_loader_argument_refusals():
    images, targets = u8(4, 8, 8), torch.arange(4)
    for bad in (images[:, :, 0], images[:, :1]):
        with raises(f"DeviceBatchLoader: images must be uint8 (N, 3, H, W), got torch.uint8 "
                    f"{tuple(bad.shape)}"):
            DeviceBatchLoader(bad, targets, [multicrop_entry()], "x", 2)
    for batch_size in (True, 0):
        with raises(f"optimizer.batch_size must be an int >= 1, got {batch_size!r}"):
            DeviceBatchLoader(images, targets, [multicrop_entry()], "x", batch_size)
    with raises("give both rank and world_size, or neither"):
        DeviceBatchLoader(images, targets, [multicrop_entry()], "x", 2, rank=0)
    with raises("rank must lie in [0, world_size), got 2/2"):
        DeviceBatchLoader(images, targets, [multicrop_entry()], "x", 2, rank=2, world_size=2)
    with raises("DeviceBatchLoader: num_workers must be >= 0, and 0 unless the images live on "
                "the CPU, got 1 on meta"):
        DeviceBatchLoader(images, targets, [multicrop_entry()], "x", 2, device="meta",
                          num_workers=1)
    assert DeviceBatchLoader(images, targets, [multicrop_entry()], "x", 2, device="meta",
                             num_workers=0).num_workers == 0
    bad = {**multicrop_entry(4, 1), "bogus": 1}
    with raises(f"augmentations[1]: unknown key(s) ['bogus']; allowed: {list(AUG_KEYS)}"):
        DeviceBatchLoader(images, targets, [multicrop_entry(8, 1), bad], "x", 2)


# ---------------------------------------------------------------------------------- decoding
def save(path: Path, pixels: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)
    return path


def test_list_image_folder_takes_png_and_refuses_an_empty_root(tmp_path):
    rng = np.random.default_rng(0)
    a = save(tmp_path / "root" / "a" / "1.png", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    b = save(tmp_path / "root" / "b" / "2.jpg", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    (tmp_path / "root" / "b" / "notes.txt").write_text("x")
    assert list_image_folder(tmp_path / "root") == ([a, b], [0, 1])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="^" + re.escape(
            f"no class folders under '{tmp_path / 'empty'}' (expected <root>/<class>/)") + "$"):
        list_image_folder(tmp_path / "empty")


def test_decode_png_and_grey_files_as_rgb(tmp_path):
    import torchvision

    rng = np.random.default_rng(1)
    grey_jpeg = save(tmp_path / "g.jpg", rng.integers(0, 256, (6, 6), dtype=np.uint8))
    png = save(tmp_path / "c.png", rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    grey_png = save(tmp_path / "g.png", rng.integers(0, 256, (6, 6), dtype=np.uint8))
    out = decode_jpeg_files([grey_jpeg, png, grey_png])
    assert out.shape == (3, 3, 6, 6) and out.dtype == torch.uint8
    rgb = torchvision.io.ImageReadMode.RGB
    assert torch.equal(out[0], torchvision.io.decode_jpeg(
        torchvision.io.read_file(str(grey_jpeg)), mode=rgb))
    assert torch.equal(out[1], torch.from_numpy(np.array(Image.open(png))).permute(2, 0, 1))
    grey = torch.from_numpy(np.array(Image.open(grey_png)))
    assert torch.equal(out[2], grey.expand(3, 6, 6))


def test_decode_fits_with_antialiased_bilinear(tmp_path):
    rng = np.random.default_rng(2)
    path = save(tmp_path / "big.png", rng.integers(0, 256, (20, 14, 3), dtype=np.uint8))
    raw = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)
    expected = TF.center_crop(TF.resize(raw, [6], interpolation=InterpolationMode.BILINEAR,
                                        antialias=True), [6, 6])
    assert torch.equal(decode_jpeg_files([path], size=6)[0], expected)


def test_decode_refusals(tmp_path):
    rng = np.random.default_rng(3)
    small = save(tmp_path / "s.png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    wide = save(tmp_path / "w.png", rng.integers(0, 256, (14, 20, 3), dtype=np.uint8))
    with raises("decode_jpeg_files: images of different shapes ([(3, 12, 12), (3, 14, 20)]); "
                "pass size= to resize them to one"):
        decode_jpeg_files([small, wide])
    with raises("decode_jpeg_files: images of different shapes ([(3, 14, 20)], (3, 12, 12)); "
                "pass size= to resize them to one"):
        decode_jpeg_files([small, wide], chunk_size=1)
    with raises("decode_jpeg_files: no files given"):
        decode_jpeg_files([])
