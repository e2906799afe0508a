"""Exact values of the augmentation schema's readers: the torchvision pipelines that
``build_transform`` composes (every transform's class and parameters, in order), the DALI
``CropSpec`` fields of ``parse_crop_spec`` / ``eval_spec``, the op order and blur-kernel checks,
the multi-crop and MTTV pair transforms, the long-tail counts and indexes (against the profile
formulas written here), the array / image-list / digits sources and the view spec, with their
whole error messages.
"""

from __future__ import annotations

import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.model_selection import StratifiedShuffleSplit
from torchvision.transforms import InterpolationMode, v2

import solo_multiview.data.pairing as pairing
from solo_multiview.config.schema import ConfigError
from solo_multiview.data.augmentations import (
    AUG_KEYS,
    AugmentationConfig,
    EvalTransform,
    MultiCropTransform,
    build_multicrop_transform,
    build_transform,
    check_augmentation_list,
    count_crops,
    normalization_stats,
    op_order,
    probability,
)
from solo_multiview.data.dali.spec import (
    CropSpec,
    eval_spec,
    parse_augmentations,
    parse_crop_spec,
    refuse_torchvision_only,
)
from solo_multiview.data.datasets import IndexedSubset
from solo_multiview.data.longtail import (
    class_order,
    counts_by_rank,
    long_tail_indexes,
    select_per_class,
)
from solo_multiview.data.pairing import MTTVPairDataset, build_pair_transforms
from solo_multiview.data.sources import (
    ArraySource,
    ImageListSource,
    digits_source,
    digits_split,
)
from solo_multiview.data.views import ViewSpec

CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
BICUBIC = InterpolationMode.BICUBIC
BILINEAR = InterpolationMode.BILINEAR
RATIO = (3.0 / 4.0, 4.0 / 3.0)


# --------------------------------------------------------------------------- helpers
def describe(t):
    """(class name, public parameters) of a transform, nested ones described too."""
    name = type(t).__name__
    if isinstance(t, (v2.Compose, v2.RandomApply)):
        params = {"transforms": [describe(x) for x in t.transforms]}
        if isinstance(t, v2.RandomApply):
            params["p"] = t.p
        return name, params
    return name, {k: v for k, v in vars(t).items() if not k.startswith("_") and k != "training"}


def tail(mean, std):
    return [
        ("ToImage", {}),
        ("ToDtype", {"dtype": torch.float32, "scale": True}),
        ("Normalize", {"mean": list(mean), "std": list(std), "inplace": False}),
    ]


def rrc(size, scale=(0.08, 1.0), interpolation=BICUBIC):
    return ("RandomResizedCrop", {"size": (size, size), "scale": scale, "ratio": RATIO,
                                  "interpolation": interpolation, "antialias": True})


def resize(size, interpolation=BICUBIC):
    return ("Resize", {"size": [size], "interpolation": interpolation, "max_size": None,
                       "antialias": True})


def center(size):
    return ("CenterCrop", {"size": (size, size)})


def squash(size):
    return ("Resize", {"size": [size, size], "interpolation": BILINEAR, "max_size": None,
                       "antialias": True})


def jitter(p, b=None, c=None, s=None, h=None):
    def rng(v):
        return None if v is None else (1 - v, 1 + v)
    return ("RandomApply", {"transforms": [("ColorJitter", {
        "brightness": rng(b), "contrast": rng(c), "saturation": rng(s),
        "hue": None if h is None else (-h, h)})], "p": p})


def blur(p, k):
    return ("RandomApply", {"transforms": [("GaussianBlur", {
        "kernel_size": (k, k), "sigma": [0.1, 2.0]})], "p": p})


def pipeline(t):
    assert type(t).__name__ == "Compose"
    return [describe(x) for x in t.transforms]


def approx_pipeline(got, want):
    """Equal, floats compared to 1e-12 (jitter ranges are 1 - v, 1 + v in float)."""
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want):
        assert g[0] == w[0], (g, w)
        assert g[1].keys() == w[1].keys(), (g, w)
        for k in w[1]:
            gv, wv = g[1][k], w[1][k]
            if k == "transforms":
                approx_pipeline(gv, wv)
            elif isinstance(wv, tuple) and wv and isinstance(wv[0], float):
                assert gv == pytest.approx(wv, abs=1e-12), (k, g, w)
            else:
                assert gv == wv, (k, g, w)


ALL_ON = {
    "color_jitter": {"prob": 0.8, "brightness": 0.4, "contrast": 0.3, "saturation": 0.2,
                     "hue": 0.1},
    "grayscale": {"prob": 0.2},
    "gaussian_blur": {"prob": 1.0},
    "solarization": {"prob": 0.25},
    "equalization": {"prob": 1.0},
    "horizontal_flip": {"prob": 0.5},
    "crop_size": 16,
    "num_crops": 2,
}


# --------------------------------------------------------------------------- build_transform
def test_every_op_on_in_solo_order_with_cifar_statistics():
    got = pipeline(build_transform(dict(ALL_ON), "cifar10"))
    approx_pipeline(got, [
        rrc(16),
        jitter(0.8, 0.4, 0.3, 0.2, 0.1),
        ("RandomGrayscale", {"p": 0.2}),
        blur(1.0, 3),
        ("RandomSolarize", {"p": 0.25, "threshold": 128}),
        ("RandomEqualize", {"p": 1.0}),
        ("RandomHorizontalFlip", {"p": 0.5}),
        *tail(*CIFAR10),
    ])


def test_mttv_order_puts_jitter_and_grayscale_before_the_crop():
    aug = dict(ALL_ON, order="mttv", crop_size=40)
    got = pipeline(build_transform(aug, "imagenet"))
    approx_pipeline(got, [
        jitter(0.8, 0.4, 0.3, 0.2, 0.1),
        ("RandomGrayscale", {"p": 0.2}),
        rrc(40),
        ("RandomHorizontalFlip", {"p": 0.5}),
        blur(1.0, 5),
        ("RandomSolarize", {"p": 0.25, "threshold": 128}),
        ("RandomEqualize", {"p": 1.0}),
        *tail(*IMAGENET),
    ])


def test_jitter_without_strengths_is_a_jitter_with_no_range():
    aug = {"color_jitter": {"prob": 0.5}, "crop_size": 8, "num_crops": 1}
    got = pipeline(build_transform(aug, "cifar100"))
    assert got == [rrc(8), jitter(0.5),
                   *tail((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))]


def test_zero_probabilities_add_no_op_and_a_missing_rrc_is_the_default_crop():
    aug = {"color_jitter": {"prob": 0.0, "brightness": 0.4}, "grayscale": {"prob": 0.0},
           "gaussian_blur": {"prob": 0.0}, "solarization": {"prob": 0.0},
           "equalization": {"prob": 0.0}, "horizontal_flip": {"prob": 0.0},
           "crop_size": 12, "num_crops": 1}
    assert pipeline(build_transform(aug, "stl10")) == [rrc(12), *tail(*IMAGENET)]


def test_rrc_scale_interpolation_mean_std_and_squash_are_read():
    aug = {"rrc": {"enabled": True, "crop_min_scale": 0.3, "crop_max_scale": 0.7,
                   "interpolation": "bilinear"},
           "crop_size": 10, "num_crops": 1, "squash": True,
           "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.25, 2]}
    got = pipeline(build_transform(aug, "cifar10"))
    assert got == [squash(10), rrc(10, (0.3, 0.7), BILINEAR),
                   *tail((0.1, 0.2, 0.3), (0.5, 0.25, 2.0))]


def test_rrc_with_equal_scales_is_valid():
    aug = {"rrc": {"crop_min_scale": 0.5, "crop_max_scale": 0.5}, "crop_size": 8,
           "num_crops": 1}
    assert pipeline(build_transform(aug, "x"))[0] == rrc(8, (0.5, 0.5))


def test_disabled_rrc_is_bicubic_resize_and_centre_crop():
    aug = {"rrc": {"enabled": False}, "crop_size": 8, "num_crops": 1, "squash": False}
    assert pipeline(build_transform(aug, "x")) == [resize(8), center(8), *tail(*IMAGENET)]
    aug = {"rrc": {"enabled": False, "interpolation": "bilinear"}, "crop_size": 8,
           "num_crops": 1}
    assert pipeline(build_transform(aug, "x"))[:2] == [resize(8, BILINEAR), center(8)]


def test_explicit_op_list_order_and_kernel_size():
    aug = {"gaussian_blur": {"prob": 0.5, "kernel_size": 7}, "horizontal_flip": {"prob": 1.0},
           "crop_size": 8, "num_crops": 1,
           "order": ["horizontal_flip", "gaussian_blur", "rrc", "grayscale"]}
    got = pipeline(build_transform(aug, "x"))
    assert got == [("RandomHorizontalFlip", {"p": 1.0}), blur(0.5, 7), rrc(8),
                   *tail(*IMAGENET)]


def test_build_transform_output_is_normalised_float32():
    img = Image.new("RGB", (8, 8), (255, 0, 51))
    aug = {"rrc": {"enabled": False}, "crop_size": 8, "num_crops": 1,
           "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    out = build_transform(aug, "x")(img)
    assert out.dtype == torch.float32
    want = torch.tensor([1.0, -1.0, 0.2 * 2 - 1]).view(3, 1, 1).expand(3, 8, 8)
    assert torch.allclose(out, want, atol=1e-6)


@pytest.mark.parametrize("key", ["color_jitter", "grayscale", "gaussian_blur", "solarization",
                                 "equalization", "horizontal_flip"])
def test_probability_errors_name_the_entry_and_op(key):
    aug = {key: {"prob": 1.5}, "crop_size": 8, "num_crops": 1}
    with pytest.raises(ValueError) as err:
        build_transform(aug, "x")
    assert str(err.value) == f"augmentations[0].{key}.prob must lie in [0, 1], got 1.5"
    with pytest.raises(ValueError) as err:
        build_transform(aug, "x", "augmentations[3]")
    assert str(err.value) == f"augmentations[3].{key}.prob must lie in [0, 1], got 1.5"


def test_build_transform_errors_name_the_entry():
    def msg(aug, where="augmentations[2]"):
        with pytest.raises(ValueError) as err:
            build_transform(aug, "x", where)
        return str(err.value)

    base = {"crop_size": 8, "num_crops": 1}
    assert msg({"num_crops": 1}) == "augmentations[2].crop_size must be an int >= 1, got None"
    assert msg(dict(base, rrc={"interpolation": "nearest"})) == (
        "augmentations[2].rrc.interpolation: unknown value 'nearest'; choose one of "
        "['bicubic', 'bilinear']")
    assert msg(dict(base, gaussian_blur={"prob": 0.5, "kernel_size": 4})) == (
        "augmentations[2].gaussian_blur.kernel_size: got 4; expected an odd int >= 1")
    assert msg(dict(base, order="bogus")) == (
        "augmentations[2].order: unknown value 'bogus'; choose one of ['solo', 'mttv'] or a "
        "list of op names from ['rrc', 'color_jitter', 'grayscale', 'gaussian_blur', "
        "'solarization', 'equalization', 'horizontal_flip']")
    assert msg(dict(base, bogus=1)) == (
        f"augmentations[2]: unknown key(s) ['bogus']; allowed: {list(AUG_KEYS)}")
    for scale in [(0.0, 0.5), (0.6, 0.5), (0.5, 1.5)]:
        aug = dict(base, rrc={"crop_min_scale": scale[0], "crop_max_scale": scale[1]})
        assert msg(aug) == ("augmentations[2].rrc: need 0 < crop_min_scale <= crop_max_scale "
                            f"<= 1, got {scale}")


def test_probability_of_an_op_without_prob_is_zero():
    assert probability({"grayscale": {}}, "grayscale", "w") == 0.0
    assert probability({}, "grayscale", "w") == 0.0
    assert probability({"grayscale": {"prob": None}}, "grayscale", "w") == 0.0


# --------------------------------------------------------------------------- multi-crop
def test_multicrop_builds_each_entry_with_the_dataset_statistics():
    augs = [dict(ALL_ON, num_crops=2), {"crop_size": 8, "num_crops": 3}]
    mc = build_multicrop_transform(augs, "cifar10")
    assert isinstance(mc, MultiCropTransform)
    assert mc.num_crops == [2, 3]
    assert [pipeline(t)[-1] for t in mc.transforms] == [tail(*CIFAR10)[-1]] * 2
    assert pipeline(mc.transforms[1]) == [rrc(8), *tail(*CIFAR10)]
    crops = mc(Image.new("RGB", (20, 20), (10, 20, 30)))
    assert [tuple(c.shape) for c in crops] == [(3, 16, 16)] * 2 + [(3, 8, 8)] * 3


def test_multicrop_errors_name_the_entry():
    augs = [{"crop_size": 8, "num_crops": 1},
            {"crop_size": 8, "num_crops": 1, "grayscale": {"prob": 2.0}}]
    with pytest.raises(ValueError) as err:
        build_multicrop_transform(augs, "x")
    assert str(err.value) == "augmentations[1].grayscale.prob must lie in [0, 1], got 2.0"


def test_multicrop_transform_needs_one_count_per_transform():
    with pytest.raises(ValueError) as err:
        MultiCropTransform([lambda x: x], [1, 2])
    assert str(err.value) == "MultiCropTransform: one num_crops per transform"


def test_count_crops_sums_large_and_small_entries():
    augs = [{"crop_size": 8, "num_crops": 2}, {"crop_size": 4, "num_crops": 1},
            {"crop_size": 4, "num_crops": 3}, {"crop_size": 8, "num_crops": 5}]
    assert count_crops(augs) == (7, 4)
    assert count_crops([{"crop_size": 8}]) == (0, 0)
    assert count_crops([{"num_crops": 2}, {"num_crops": 1}]) == (3, 0)
    with pytest.raises(ValueError) as err:
        count_crops([])
    assert str(err.value) == "augmentations: the list is empty; give at least one pipeline"


def test_check_augmentation_list_messages():
    def msg(augs):
        with pytest.raises(ValueError) as err:
            check_augmentation_list(augs)
        return str(err.value)

    assert msg([]) == "augmentations: the list is empty; give at least one pipeline"
    assert msg([{"crop_size": 8, "num_crops": 1}, {"crop_size": 0, "num_crops": 1}]) == (
        "augmentations[1].crop_size must be an int >= 1, got 0")
    assert msg([{"crop_size": 8, "num_crops": 1}, {"crop_size": 4, "num_crops": 1},
                {"crop_size": 8, "num_crops": 1}]) == (
        "augmentations[2]: a large crop (crop_size 8) follows a small one; put every entry "
        "with crop_size 8 first, got crop sizes [8, 4, 8]")
    check_augmentation_list([{"crop_size": 8, "num_crops": 1}, {"crop_size": 4, "num_crops": 1}])


def test_normalization_stats_checks_three_values_and_positive_std():
    assert normalization_stats("cifar10") == CIFAR10
    assert normalization_stats("cifar10", {"mean": None}) == CIFAR10
    assert normalization_stats("svhn", {"mean": [0, 1, 2]}) == ((0.0, 1.0, 2.0), IMAGENET[1])

    def msg(aug):
        with pytest.raises(ValueError) as err:
            normalization_stats("x", aug)
        return str(err.value)

    assert msg({"std": [1, 1]}) == (
        "augmentations: mean/std need 3 values (std > 0), got (0.485, 0.456, 0.406), "
        "(1.0, 1.0)")
    assert msg({"mean": [0.1, 0.2]}) == (
        "augmentations: mean/std need 3 values (std > 0), got (0.1, 0.2), "
        "(0.229, 0.224, 0.225)")
    assert msg({"std": [1, 0, 1]}) == (
        "augmentations: mean/std need 3 values (std > 0), got (0.485, 0.456, 0.406), "
        "(1.0, 0.0, 1.0)")


def test_eval_transform_squash_and_resize():
    ev = EvalTransform(8, "cifar10", squash=True)
    assert describe(ev.resize) == squash(8)
    ev = EvalTransform(8, "cifar10")
    assert describe(ev.resize) == ("Compose", {"transforms": [resize(8), center(8)]})
    assert [describe(x) for x in ev.to_tensor.transforms] == tail(*CIFAR10)


# --------------------------------------------------------------------------- op order / check_node
OPS_LIST = ("['rrc', 'color_jitter', 'grayscale', 'gaussian_blur', 'solarization', "
            "'equalization', 'horizontal_flip']")


def test_op_order_defaults_and_names():
    solo = ("rrc", "color_jitter", "grayscale", "gaussian_blur", "solarization",
            "equalization", "horizontal_flip")
    assert op_order({}, "w") == solo
    assert op_order({"order": None}, "w") == solo
    assert op_order({"order": "solo"}, "w") == solo
    assert op_order({"order": ("rrc",)}, "w") == ("rrc",)


def test_op_order_messages():
    def msg(order, aug=None):
        with pytest.raises(ConfigError) as err:
            op_order(dict(aug or {}, order=order), "e")
        return str(err.value)

    assert msg("bogus") == ("e.order: unknown value 'bogus'; choose one of ['solo', 'mttv'] or "
                            f"a list of op names from {OPS_LIST}")
    assert msg(5) == ("e.order: got 5; expected one of ['solo', 'mttv'] or a list of op names "
                      f"from {OPS_LIST}")
    assert msg(["rrc", "blur"]) == f"e.order: unknown op(s) ['blur']; the ops are {OPS_LIST}"
    assert msg(["rrc", "rrc"]) == "e.order: ['rrc', 'rrc'] names an op twice; give each op once"
    assert msg(["grayscale"], {"grayscale": {"prob": 0.5}}) == (
        "e.order: ['grayscale'] leaves out ['rrc'], which are on in this entry; list every op "
        "that is on (rrc always)")


def test_check_node_names_the_path_or_a_generic_one():
    with pytest.raises(ConfigError) as err:
        AugmentationConfig.check_node({"order": "bogus"}, "")
    assert str(err.value).startswith("augmentations[*].order: unknown value 'bogus'; ")
    with pytest.raises(ConfigError) as err:
        AugmentationConfig.check_node({"order": "bogus"}, "augmentations[2]")
    assert str(err.value).startswith("augmentations[2].order: unknown value 'bogus'; ")


def test_check_node_refuses_even_blur_kernels_only():
    with pytest.raises(ConfigError) as err:
        AugmentationConfig.check_node({"gaussian_blur": {"kernel_size": 4}}, "augmentations[1]")
    assert str(err.value) == ("augmentations[1].gaussian_blur.kernel_size: got 4; expected an "
                              "odd int (the blur kernel has a centre pixel)")
    for node in [{"gaussian_blur": {"kernel_size": 3}}, {"gaussian_blur": {"kernel_size": 9}},
                 {"gaussian_blur": {"kernel_size": None}}, {"gaussian_blur": None}, {}]:
        AugmentationConfig.check_node(node, "augmentations[1]")


# --------------------------------------------------------------------------- DALI spec
def spec(**kw):
    base = dict(crop_size=8, num_crops=1, rrc_enabled=True, rrc_scale=(0.08, 1.0),
                jitter_prob=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0,
                grayscale_prob=0.0, blur_prob=0.0, solarization_prob=0.0,
                equalization_prob=0.0, flip_prob=0.0, mean=IMAGENET[0], std=IMAGENET[1])
    base.update(kw)
    return CropSpec(**base)


def test_parse_crop_spec_reads_every_field():
    entry = dict(ALL_ON, rrc={"crop_min_scale": 0.2, "crop_max_scale": 0.9}, hue=None)
    entry.pop("hue")
    entry["color_jitter"] = dict(ALL_ON["color_jitter"], hue=0.5)
    got = parse_crop_spec(entry, "cifar10", "augmentations[0]")
    assert got == spec(crop_size=16, num_crops=2, rrc_scale=(0.2, 0.9), jitter_prob=0.8,
                       brightness=0.4, contrast=0.3, saturation=0.2, hue=0.5,
                       grayscale_prob=0.2, blur_prob=1.0, solarization_prob=0.25,
                       equalization_prob=1.0, flip_prob=0.5, mean=CIFAR10[0], std=CIFAR10[1])
    assert got.blur_window == 3 and got.blur_sigma == (0.1, 2.0)


def test_parse_crop_spec_defaults_and_jitter_off():
    got = parse_crop_spec({"crop_size": 8, "num_crops": 1}, "x", "w")
    assert got == spec()
    entry = {"crop_size": 8, "num_crops": 3, "rrc": {"enabled": False, "crop_min_scale": 0.0},
             "color_jitter": {"prob": 0.0, "brightness": 0.4, "contrast": 0.3,
                              "saturation": 0.2, "hue": 0.1},
             "mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}
    assert parse_crop_spec(entry, "x", "w") == spec(
        num_crops=3, rrc_enabled=False, rrc_scale=(0.0, 1.0), mean=(0.1, 0.2, 0.3),
        std=(1.0, 2.0, 3.0))
    entry = {"crop_size": 8, "num_crops": 1, "color_jitter": {"prob": 0.5}}
    assert parse_crop_spec(entry, "x", "w") == spec(jitter_prob=0.5)
    entry = {"crop_size": 8, "num_crops": 1, "rrc": {}}
    assert parse_crop_spec(entry, "x", "w").rrc_enabled is True


def test_parse_crop_spec_messages_name_the_entry():
    def msg(entry):
        with pytest.raises(ValueError) as err:
            parse_crop_spec(entry, "x", "augmentations[4]")
        return str(err.value)

    base = {"crop_size": 8, "num_crops": 1}
    assert msg({"num_crops": 1}) == "augmentations[4].crop_size must be an int >= 1, got None"
    assert msg({"crop_size": 8}) == "augmentations[4].num_crops must be an int >= 1, got None"
    for key in ["color_jitter", "grayscale", "gaussian_blur", "solarization", "equalization",
                "horizontal_flip"]:
        assert msg(dict(base, **{key: {"prob": -0.5}})) == (
            f"augmentations[4].{key}.prob must lie in [0, 1], got -0.5")
    for scale in [(0.0, 0.5), (0.6, 0.5), (0.5, 1.5)]:
        aug = dict(base, rrc={"crop_min_scale": scale[0], "crop_max_scale": scale[1]})
        assert msg(aug) == ("augmentations[4].rrc: need 0 < crop_min_scale <= crop_max_scale "
                            f"<= 1, got {scale}")
    for key in ["brightness", "contrast", "saturation"]:
        aug = dict(base, color_jitter={"prob": 0.5, key: -0.25})
        assert msg(aug) == (f"augmentations[4].color_jitter.{key} must lie in [0, inf], got "
                            "-0.25 (torchvision's ColorJitter range)")
    assert msg(dict(base, color_jitter={"prob": 0.5, "hue": 0.75})) == (
        "augmentations[4].color_jitter.hue must lie in [0, 0.5], got 0.75 (torchvision's "
        "ColorJitter range)")
    assert msg(dict(base, order="mttv")) == (
        "augmentations[4].order: 'mttv' is implemented by the torchvision loader only "
        "(data.format=image_folder); this pipeline supports only 'solo'")
    assert parse_crop_spec(dict(base, rrc={"crop_min_scale": 0.5, "crop_max_scale": 0.5}),
                           "x", "w").rrc_scale == (0.5, 0.5)


def test_refuse_torchvision_only_reads_nested_keys():
    def msg(entry):
        with pytest.raises(ValueError) as err:
            refuse_torchvision_only(entry, "e")
        return str(err.value)

    tail_ = "is implemented by the torchvision loader only (data.format=image_folder); "
    assert msg({"squash": True}) == f"e.squash: True {tail_}this pipeline supports only False"
    assert msg({"rrc": {"interpolation": "bilinear"}}) == (
        f"e.rrc.interpolation: 'bilinear' {tail_}this pipeline supports only 'bicubic'")
    assert msg({"gaussian_blur": {"kernel_size": 5}}) == (
        f"e.gaussian_blur.kernel_size: 5 {tail_}this pipeline supports only None")
    refuse_torchvision_only({"order": "solo", "squash": False, "rrc": {"interpolation":
                             "bicubic"}, "gaussian_blur": {"kernel_size": None}}, "e")
    refuse_torchvision_only({"rrc": None, "gaussian_blur": 3}, "e")


def test_parse_augmentations_names_each_entry_and_refuses_non_lists():
    augs = [{"crop_size": 8, "num_crops": 1}, {"crop_size": 4, "num_crops": 2,
                                               "grayscale": {"prob": 3.0}}]
    with pytest.raises(ValueError) as err:
        parse_augmentations(augs, "x")
    assert str(err.value) == "augmentations[1].grayscale.prob must lie in [0, 1], got 3.0"
    for bad in [{"crop_size": 8}, "abc"]:
        with pytest.raises(ValueError) as err:
            parse_augmentations(bad, "x")
        assert str(err.value) == f"augmentations: expected a list of dicts, got {bad!r}"
    assert parse_augmentations(augs[:1], "x") == [spec()]


def test_eval_spec_is_the_normalised_only_view():
    got = eval_spec(12.0, [0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    assert got == CropSpec(
        crop_size=12, num_crops=1, rrc_enabled=False, rrc_scale=(1.0, 1.0), jitter_prob=0.0,
        brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, grayscale_prob=0.0,
        blur_prob=0.0, solarization_prob=0.0, equalization_prob=0.0, flip_prob=0.0,
        mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    assert type(got.crop_size) is int and got.rrc_enabled is False


# --------------------------------------------------------------------------- pairing
def test_pair_transforms_take_the_entrys_statistics_and_squash():
    aug = {"crop_size": 8, "num_crops": 1, "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5],
           "squash": True}
    strong, normal = build_pair_transforms(aug, "cifar10")
    assert pipeline(strong) == [squash(8), rrc(8), *tail((0.1, 0.2, 0.3), (0.5, 0.5, 0.5))]
    assert isinstance(normal, EvalTransform) and normal.crop_size == 8
    assert describe(normal.resize) == squash(8)
    assert [describe(x) for x in normal.to_tensor.transforms] == tail((0.1, 0.2, 0.3),
                                                                      (0.5, 0.5, 0.5))


def test_pair_transforms_explicit_statistics_win_and_no_squash_by_default():
    aug = {"crop_size": 8, "num_crops": 1, "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5]}
    strong, normal = build_pair_transforms(aug, "cifar10", [0.7, 0.7, 0.7], [2, 2, 2])
    assert describe(normal.resize) == ("Compose", {"transforms": [resize(8), center(8)]})
    assert [describe(x) for x in normal.to_tensor.transforms] == tail((0.7, 0.7, 0.7),
                                                                      (2.0, 2.0, 2.0))
    _, normal = build_pair_transforms({"crop_size": 8, "num_crops": 1}, "cifar10")
    assert [describe(x) for x in normal.to_tensor.transforms] == tail(*CIFAR10)
    strong, _ = build_pair_transforms({"crop_size": 8, "num_crops": 1}, "cifar10")
    assert pipeline(strong)[-1] == tail(*CIFAR10)[-1]


def tiny_base(n=3, bad_images="error"):
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 2, 2, 3))
    return IndexedSubset(ArraySource(np.ascontiguousarray(images), np.arange(n) % 2), None,
                         None, bad_images=bad_images)


def ident(img):
    return torch.from_numpy(np.asarray(img).copy())


def test_pair_dataset_accepts_one_pair_and_one_image_and_keeps_its_options():
    ds = MTTVPairDataset(tiny_base(1), ident, ident, 1, views="augmented_augmented")
    assert (ds.num_pairs, ds.partner, ds.views, ds.seed) == (1, "image", "augmented_augmented", 0)
    assert ds.normal is ident
    assert ds.partner_indexes(0).tolist() == [0]


def test_pair_dataset_messages():
    def msg(**kw):
        args = dict(base=tiny_base(), strong=ident, normal=ident, num_pairs=2)
        args.update(kw)
        with pytest.raises(ValueError) as err:
            MTTVPairDataset(**args)
        return str(err.value)

    assert msg(num_pairs=True) == "MTTV pairing: num_pairs (K) must be an int >= 1, got True"
    assert msg(num_pairs=0) == "MTTV pairing: num_pairs (K) must be an int >= 1, got 0"
    empty = IndexedSubset(ArraySource(np.zeros((0, 2, 2, 3), np.uint8), []), None, None)
    assert msg(base=empty) == "MTTV pairing: the training set is empty"


def test_partner_draws_use_seed_epoch_rank_and_worker(monkeypatch):
    ds = MTTVPairDataset(tiny_base(5), ident, ident, 4)

    def want(epoch, rank, worker, index, seed=0):
        return np.random.default_rng([seed, epoch, rank, worker, index]).integers(
            0, 5, size=4).tolist()

    assert ds.partner_indexes(2).tolist() == want(0, 0, 0, 2)
    ds.set_epoch(16777217)  # not a float32 integer
    assert ds.epoch == 16777217
    assert ds.partner_indexes(2).tolist() == want(16777217, 0, 0, 2)
    monkeypatch.setattr(pairing, "get_worker_info", lambda: types.SimpleNamespace(id=3))
    assert ds.partner_indexes(1).tolist() == want(16777217, 0, 3, 1)
    monkeypatch.setattr(pairing, "_dist_rank", lambda: 6)
    ds.set_epoch(2)
    monkeypatch.setattr(pairing, "_dist_rank", lambda: None)
    assert ds.partner_indexes(1).tolist() == want(2, 6, 3, 1)
    none = MTTVPairDataset(tiny_base(5), ident, ident, 3, partner="none")
    got = none.partner_indexes(4)
    assert got.tolist() == [4, 4, 4] and got.dtype == np.int64


def test_dist_rank_reads_torch_distributed(monkeypatch):
    fake = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True,
                                 get_rank=lambda: 3)
    monkeypatch.setattr(pairing, "dist", fake)
    assert pairing._dist_rank() == 3
    ds = MTTVPairDataset(tiny_base(5), ident, ident, 2)
    assert int(ds._state[1]) == 3


def test_a_partner_equal_to_the_anchor_reuses_the_anchor_image():
    base = tiny_base(3)
    loads = []
    original = base.source.load
    base.source.load = lambda i: (loads.append(i), original(i))[1]
    ds = MTTVPairDataset(base, ident, ident, 3, partner="none")
    used, crops, target = ds[2]
    assert (used, target, len(crops)) == (2, 0, 12)
    assert loads == [2]
    assert all(torch.equal(c, torch.full((2, 2, 3), 2, dtype=torch.uint8)) for c in crops)


# --------------------------------------------------------------------------- long tail
def test_counts_by_rank_follow_the_profile_formulas():
    C, n_max, rho = 5, 200, 10.0
    exp = [math.floor(n_max * rho ** (-r / (C - 1)) * (1 + 1e-9)) for r in range(C)]
    got = counts_by_rank("exp", C, n_max, rho)
    assert got.tolist() == exp == [200, 112, 63, 35, 20] and got.dtype == np.int64
    assert counts_by_rank("step", C, n_max, rho).tolist() == [200, 200, 200, 20, 20]
    pareto = [math.floor(n_max * (1 + r) ** (-math.log(rho) / math.log(C)) * (1 + 1e-9))
              for r in range(C)]
    assert counts_by_rank("pareto", C, n_max, rho).tolist() == pareto
    one = counts_by_rank("exp", 1, 7, rho)
    assert one.tolist() == [7] and one.dtype == np.int64
    assert counts_by_rank("exp", 2, 1, 1.0).tolist() == [1, 1]


def test_counts_by_rank_messages():
    def msg(*args):
        with pytest.raises(ValueError) as err:
            counts_by_rank(*args)
        return str(err.value)

    for profile in ["none", "bogus"]:
        assert msg(profile, 3, 10, 2.0) == (
            f"data.long_tail.profile: {profile!r} has no per-rank counts; use one of "
            "['exp', 'step', 'pareto'] (or 'none' for all images)")
    assert msg("exp", 0, 10, 2.0) == "data.num_classes must be >= 1, got 0"
    assert msg("exp", 3, 0, 2.0) == "data.long_tail.n_max must be >= 1, got 0"


def test_class_order_default_seed_and_float_lists():
    assert class_order("permuted", 6).tolist() == np.random.default_rng(0).permutation(6).tolist()
    assert class_order("natural", 3).dtype == np.int64
    with pytest.raises(ValueError) as err:
        class_order([0.0, 1.0], 2)
    assert str(err.value) == ("data.long_tail.class_order: a list must hold integer class ids, "
                              "got [0.0, 1.0]")


def test_select_per_class_default_seed_and_empty_counts():
    targets = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    want = sorted(np.flatnonzero(targets == 0)[np.random.default_rng([0, 0]).permutation(4)[:2]]
                  .tolist() + np.flatnonzero(targets == 1)[
                      np.random.default_rng([0, 1]).permutation(4)[:1]].tolist())
    assert select_per_class(targets, np.array([2, 1])).tolist() == want
    empty = select_per_class(targets, np.array([], dtype=np.int64))
    assert empty.dtype == np.int64 and empty.shape == (0,)


def test_long_tail_exp_counts_per_class_match_the_formula():
    targets = np.repeat(np.arange(3), 4)[::-1].copy()
    lt = {"profile": "exp", "imbalance_ratio": 4.0, "n_max": 4}
    got = long_tail_indexes(targets, 3, lt)
    want = [math.floor(4 * 4.0 ** (-r / 2)) for r in range(3)]
    assert want == [4, 2, 1]
    assert np.bincount(targets[got], minlength=3).tolist() == want
    assert got.tolist() == sorted(got.tolist()) and got.dtype == np.int64
    assert set(np.flatnonzero(targets == 0)) <= set(got.tolist())


def test_long_tail_defaults_with_no_node_and_float_labels():
    targets = np.array([0.0, 1.0, 1.0, 0.0])
    got = long_tail_indexes(targets, 2, {"profile": "none"})
    assert got.tolist() == [0, 1, 2, 3] and got.dtype == np.int64
    # no node: exp / 100 with n_max = the smallest class (2): counts [2, 0] -> class 1 empty
    with pytest.raises(ValueError) as err:
        long_tail_indexes(np.array([0, 1, 1, 0]), 2, None)
    assert str(err.value) == (
        "data.long_tail: 1 class(es) have zero images in data.long_tail (profile=exp, "
        "imbalance_ratio=100, n_max=2), e.g. classes [1] (full-set counts [2]); raise "
        "data.long_tail.n_max or lower data.long_tail.imbalance_ratio")


def test_long_tail_label_range_messages():
    for targets, shown in [([0, 1, 2], "[0, 2]"), ([-1, 0], "[-1, 0]")]:
        with pytest.raises(ValueError) as err:
            long_tail_indexes(np.array(targets), 2, {"profile": "none"})
        assert str(err.value) == f"labels must lie in [0, data.num_classes=2), got range {shown}"


def test_long_tail_empty_class_message_lists_ten_classes():
    with pytest.raises(ValueError) as err:
        long_tail_indexes(np.arange(12), 12, {"profile": "exp", "imbalance_ratio": 100.0})
    assert str(err.value) == (
        "data.long_tail: 11 class(es) have zero images in data.long_tail (profile=exp, "
        "imbalance_ratio=100, n_max=1), e.g. classes [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] (full-set "
        "counts [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]); raise data.long_tail.n_max or lower "
        "data.long_tail.imbalance_ratio")


def test_long_tail_absent_class_under_profile_none():
    with pytest.raises(ValueError) as err:
        long_tail_indexes(np.array([0, 1, 0, 1]), 3, {"profile": "none"})
    assert str(err.value) == (
        "data.long_tail: 1 class(es) have zero images in the full training set "
        "(data.long_tail.profile=none), e.g. classes [2] (full-set counts [0]); raise "
        "data.long_tail.n_max or lower data.long_tail.imbalance_ratio")


def test_long_tail_fraction_is_scikit_learns_stratified_split():
    targets = np.array([0, 1] * 10)
    got = long_tail_indexes(targets, 2, {"profile": "none", "fraction": 0.5,
                                         "fraction_seed": 7})
    split = StratifiedShuffleSplit(n_splits=1, train_size=10, random_state=7)
    train, _ = next(split.split(targets, targets))
    assert got.tolist() == sorted(train.tolist())
    default = long_tail_indexes(targets, 2, {"profile": "none", "fraction": 0.5})
    split = StratifiedShuffleSplit(n_splits=1, train_size=10, random_state=42)
    train, _ = next(split.split(targets, targets))
    assert default.tolist() == sorted(train.tolist())
    assert got.tolist() != default.tolist()


def test_long_tail_fraction_subset_of_the_profile_selection():
    targets = np.repeat(np.arange(2), 8)
    lt = {"profile": "step", "imbalance_ratio": 2.0, "n_max": 8, "fraction": 0.5,
          "fraction_seed": 3}
    got = long_tail_indexes(targets, 2, lt)
    first = long_tail_indexes(targets, 2, dict(lt, fraction=None))
    assert np.bincount(targets[first]).tolist() == [8, 4]
    split = StratifiedShuffleSplit(n_splits=1, train_size=6, random_state=3)
    train, _ = next(split.split(targets[first], targets[first]))
    assert got.tolist() == sorted(first[train].tolist())


def test_long_tail_fraction_names_itself_when_a_class_is_empty():
    with pytest.raises(ValueError) as err:
        long_tail_indexes(np.array([0, 1] * 4), 3, {"profile": "none", "fraction": 0.5})
    assert str(err.value) == (
        "data.long_tail: 1 class(es) have zero images in the full training set "
        "(data.long_tail.profile=none) and data.long_tail.fraction=0.5, e.g. classes [2] "
        "(full-set counts [0]); raise data.long_tail.n_max or lower "
        "data.long_tail.imbalance_ratio")


# --------------------------------------------------------------------------- sources
def test_array_source_checks_and_flattens_labels():
    imgs = np.zeros((2, 2, 2, 3), np.uint8)
    src = ArraySource(imgs, np.array([[0.0], [1.0]]))
    assert src.targets.tolist() == [0, 1] and src.targets.dtype == np.int64
    assert src.targets.shape == (2,)
    assert ArraySource(imgs, [0, 1], num_classes=5).num_classes == 5
    assert ArraySource(np.zeros((0, 2, 2, 3), np.uint8), []).num_classes == 0

    def msg(images, targets, num_classes=None):
        with pytest.raises(ValueError) as err:
            ArraySource(images, targets, num_classes)
        return str(err.value)

    assert msg(np.zeros((2, 4, 3), np.uint8), [0, 1]) == (
        "ArraySource needs N x H x W x 3 uint8 images, got shape (2, 4, 3) and dtype uint8")
    assert msg(imgs, [-1, 0]) == "ArraySource: labels must be >= 0, got -1"
    assert msg(imgs, [0, 1], 1) == ("data.num_classes=1 but the image array has label 1; "
                                    "data.num_classes must be at least 2")


def test_digits_split_and_source():
    with pytest.raises(ValueError) as err:
        digits_split(np.array([0, 0, 1, 1, 1]), test_per_class=2)
    assert str(err.value) == "digits: class 0 has 2 images, cannot hold out 2"
    train, test = digits_split(np.array([0, 0, 0, 1, 1, 1]), test_per_class=2)
    assert len(train) == 2 and len(test) == 4
    src = digits_source()
    assert (len(src), src.num_classes) == (1397, 10)


def write_list(tmp_path: Path, lines, files=()):
    root = tmp_path / "root"
    root.mkdir()
    for name in files:
        Image.new("RGB", (2, 2)).save(root / name)
    split = tmp_path / "split.txt"
    split.write_text("\n".join(lines) + "\n")
    return root, split


def test_image_list_source_messages(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        ImageListSource(tmp_path / "nowhere", tmp_path / "split.txt")
    assert str(err.value) == f"image root not found: '{tmp_path / 'nowhere'}'"
    root, split = write_list(tmp_path, ["a.png 0", "b.png 1", "c.png 0", "d.png 1"])
    with pytest.raises(FileNotFoundError) as err:
        ImageListSource(root, split)
    assert str(err.value) == (
        f"4 image(s) listed in '{split}' are missing under '{root}', e.g. ['a.png (line 1)', "
        "'b.png (line 2)', 'c.png (line 3)']")


def test_image_list_source_label_equal_to_num_classes(tmp_path):
    root, split = write_list(tmp_path, ["a.png 0", "", "b.png 2"], ["a.png", "b.png"])
    with pytest.raises(ValueError) as err:
        ImageListSource(root, split, num_classes=2)
    assert str(err.value) == (
        f"{split}:3: label 2 is out of range for data.num_classes=2 (labels must lie in "
        "[0, 2); 1 line(s) affected); fix the list or raise data.num_classes")
    src = ImageListSource(root, split, num_classes=3)
    assert (src.num_classes, src.line_numbers, src.targets.tolist()) == (3, [1, 3], [0, 2])


# --------------------------------------------------------------------------- view spec
def test_view_spec_messages():
    with pytest.raises(ValueError) as err:
        ViewSpec(2, scheme="bogus")
    assert str(err.value) == "views: unknown scheme 'bogus'; choose one of ('crops', 'pairs')"
    with pytest.raises(ValueError) as err:
        ViewSpec(2, num_small=1, scheme="pairs")
    assert str(err.value) == "augmentations: the pairs view scheme takes no small crops, got 1"
    assert ViewSpec(2, num_small=1).num_crops == 3

