"""The official MTTV presets (arXiv 2509.08469) against the authors' code.

Every expected value below is read from anonymouspersoncscv/MTTV at its only commit ``247efd5``
(the ``path:line`` in each comment; see /work/notes/mttv_official.md). The presets are parsed
exactly as main_pretrain.py / main_linear.py parse them; the subsets are drawn through the real
data path (``data/datasets.py``) on synthetic sources and compared with literal re-enactments
of the authors' code and with scikit-learn.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from solo_multiview.config.pretrain import parse_pretrain_cfg
from solo_multiview.data.augmentations import ORDERS, build_transform
from solo_multiview.data.datasets import build_pretrain_dataset, pretrain_indexes
from solo_multiview.data.pairing import build_pair_transforms
from solo_multiview.data.sources import ArraySource, ImageListSource
from solo_multiview.eval.eval_config import parse_eval_cfg
from solo_multiview.eval.linear import probe_scheduler
from solo_multiview.eval.run_linear import probe_config
from solo_multiview.methods import build_method
from tests.helpers import ROOT, compose_cfg

CIFAR = ("mttv_official_cifar10lt", "mttv_official_cifar100lt")
PRESETS = (*CIFAR, "mttv_official_imagenetlt")
PROBES = {"cifar10lt_official": "resnet18", "cifar100lt_official": "resnet18",
          "imagenetlt_official": "resnet50"}

# ---------------------------------------------------------------- the authors' values
# config/training/pretraining.yaml: max_epochs 2000 (:1), lr 3.0 (:6), warmup_epochs 200 (:7),
# warmup_lr 1e-4 (:8), weight_decay 1e-4 (:9), batch_size 1024 (:11), temperature 0.3 (:15)
EPOCHS, LR, WARMUP, WARMUP_LR, WD, BATCH, TEMPERATURE = 2000, 3.0, 200, 1e-4, 1e-4, 1024, 0.3
# config/model/MTTV.yaml: K 1 (:2), m 0.9 (:3), upper_bound 0.9 (:6), lower_bound 0.1 (:7)
K, EMA, HIGH, LOW = 1, 0.9, 0.9, 0.1
SEED = 42  # main.py:15-20
# Preprocess/MTTVDataAugmentation.py:21-33: the op order of their kornia pipeline
AUTHORS_ORDER = ("color_jitter", "grayscale", "rrc", "horizontal_flip", "gaussian_blur")
JITTER = {"prob": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}  # :23
GRAYSCALE = 0.2  # :24
RRC_SCALE = (0.08, 1.0)  # :26-27 with crop_max 1 (Cifar10.yaml:4, Cifar100.yaml:6, Imagenet.yaml:6)
FLIP = 0.5  # :28, kornia's default p
BLUR_PROB, BLUR_SIGMA = 0.5, (0.1, 2.0)  # :30
# blur kernel: int(0.1 * 32) = 3 (cifar10_lt_dataset.py:42-46, cifar100_lt_dataset.py:48-52),
# int(0.1 * 224) = 22 -> 21 (imagenet_lt_dataset.py:45-49)
KERNEL = {"mttv_official_cifar10lt": 3, "mttv_official_cifar100lt": 3,
          "mttv_official_imagenetlt": 21}
CROP = {"mttv_official_cifar10lt": 32, "mttv_official_cifar100lt": 32,  # Cifar*.yaml image_size
        "mttv_official_imagenetlt": 224}  # Imagenet.yaml:7
MEAN_STD = {  # Cifar10.yaml:13-14, Cifar100.yaml:15-16, Imagenet.yaml:16-17
    "mttv_official_cifar10lt": ([0.491, 0.482, 0.447], [0.247, 0.243, 0.262]),
    "mttv_official_cifar100lt": ([0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761]),
    "mttv_official_imagenetlt": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
}
# the LDAM counts (data/MTTVModel_lt_Data.py:48-54), imbalance_factor 0.01 (Cifar10.yaml:8)
CIFAR10_LT_COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
CIFAR100_LT_COUNTS = [
    500, 477, 455, 434, 415, 396, 378, 361, 344, 328, 314, 299, 286, 273, 260, 248, 237, 226,
    216, 206, 197, 188, 179, 171, 163, 156, 149, 142, 135, 129, 123, 118, 112, 107, 102, 98,
    93, 89, 85, 81, 77, 74, 70, 67, 64, 61, 58, 56, 53, 51, 48, 46, 44, 42, 40, 38, 36, 35, 33,
    32, 30, 29, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 15, 14, 13, 13, 12, 12, 11,
    11, 10, 10, 9, 9, 8, 8, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5]
# fingerprints of their subsets on class-contiguous targets (sha256 of the sorted int64 LE
# indexes), /work/notes/mttv_official.md section 3
FINGERPRINT = {10: "b582b3a43431cddf", 100: "ba66b1fd8f540fe3"}


def authors_lr(epoch: int) -> float:
    """Their LambdaLR multiplier x lr (models/MTTVModel.py:227-236), stepped per epoch (:220)."""
    if epoch < WARMUP:
        return LR * (WARMUP_LR + (LR - WARMUP_LR) * (epoch / WARMUP) / LR)
    return LR * 0.5 * (1 + math.cos(math.pi * (epoch - WARMUP) / (EPOCHS - WARMUP)))


def parsed(name: str, overrides=()):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no small-batch warning, no unused solo-learn key
        return parse_pretrain_cfg(compose_cfg(name, list(overrides)))


# ---------------------------------------------------------------- the presets resolve
@pytest.mark.parametrize("name", PRESETS)
def test_presets_resolve_and_parse(name):
    cfg = parsed(name)
    assert cfg.method == "mttv" and cfg.name == name.replace("_", "-")


@pytest.mark.parametrize("name", PRESETS)
def test_augmentation_is_theirs(name):
    aug = parsed(name).augmentations
    assert len(aug) == 1
    aug = aug[0]
    assert ORDERS[aug.order][:5] == AUTHORS_ORDER
    assert {k: aug.color_jitter[k] for k in JITTER} == JITTER
    assert aug.grayscale.prob == GRAYSCALE
    assert aug.rrc.enabled and (aug.rrc.crop_min_scale, aug.rrc.crop_max_scale) == RRC_SCALE
    assert aug.rrc.interpolation == "bilinear"  # kornia's default resample
    assert aug.horizontal_flip.prob == FLIP
    assert aug.gaussian_blur.prob == BLUR_PROB and aug.gaussian_blur.kernel_size == KERNEL[name]
    assert aug.solarization.prob == 0 and aug.equalization.prob == 0
    assert aug.crop_size == CROP[name] and aug.num_crops == K
    assert [list(aug.mean), list(aug.std)] == list(MEAN_STD[name])
    # every image squashed to 224 x 224 for ImageNet (imagenet_lt_dataset.py:60, 87), not CIFAR
    assert aug.squash == (name == "mttv_official_imagenetlt")


@pytest.mark.parametrize("name", PRESETS)
def test_built_pipeline_runs_their_ops_in_their_order(name):
    cfg = parsed(name)
    aug, size = cfg.augmentations[0], CROP[name]
    ops = build_transform(aug, cfg.data.dataset).transforms
    if name == "mttv_official_imagenetlt":
        squash, *ops = ops
        assert isinstance(squash, v2.Resize) and tuple(squash.size) == (size, size)
        assert squash.interpolation == InterpolationMode.BILINEAR
    jitter, gray, crop, flip, blur, *tail = ops
    assert isinstance(jitter.transforms[0], v2.ColorJitter) and jitter.p == JITTER["prob"]
    assert isinstance(gray, v2.RandomGrayscale) and gray.p == GRAYSCALE
    assert isinstance(crop, v2.RandomResizedCrop) and tuple(crop.scale) == RRC_SCALE
    assert crop.interpolation == InterpolationMode.BILINEAR and tuple(crop.size) == (size, size)
    assert isinstance(flip, v2.RandomHorizontalFlip) and flip.p == FLIP
    (gauss,) = blur.transforms
    assert isinstance(gauss, v2.GaussianBlur) and blur.p == BLUR_PROB
    assert list(gauss.kernel_size) == [KERNEL[name]] * 2 and list(gauss.sigma) == list(BLUR_SIGMA)
    assert [type(t) for t in tail] == [v2.ToImage, v2.ToDtype, v2.Normalize]
    # the normalised views: ToTensor + Normalize, squashed for ImageNet (MTTVModel_lt_Data.py
    # 89-117, 245-278)
    _, normal = build_pair_transforms(aug, cfg.data.dataset)
    image = v2.ToPILImage()(torch.randint(0, 255, (3, 40, 30), dtype=torch.uint8))
    assert normal(image).shape == (3, size, size)


@pytest.mark.parametrize("name", PRESETS)
def test_stem_is_theirs(name):
    cfg = parsed(name)
    backbone = build_method(cfg).backbone
    if name in CIFAR:  # utils.py:62-72: Conv2d(3, 64, 3, 1, 1, bias=False), maxpool Identity
        assert cfg.backbone.name == "resnet18"
        assert (cfg.backbone.stem, cfg.backbone.cifar_stem_padding) == ("cifar", 1)
        conv = backbone.conv1
        assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))
        assert conv.bias is None and isinstance(backbone.maxpool, nn.Identity)
    else:  # utils.py:68-70, 80-82: torchvision resnet50, standard stem
        assert cfg.backbone.name == "resnet50" and cfg.backbone.stem == "imagenet"
        conv = backbone.conv1
        assert (conv.kernel_size, conv.stride, conv.padding) == ((7, 7), (2, 2), (3, 3))
        assert isinstance(backbone.maxpool, nn.MaxPool2d)


@pytest.mark.parametrize("name", PRESETS)
def test_method_loss_and_ema_are_theirs(name):
    cfg = parsed(name)
    kw = cfg.method_kwargs
    assert kw.form == "official"  # Loss/loss.py:22-53
    assert kw.num_views == K and kw.fusion == "sum"  # MTTVModel.py:105-117
    assert (kw.partner, kw.views) == ("image", "normalized_augmented")  # MTTVModel_lt_Data.py
    assert kw.temperature == TEMPERATURE
    # the band for every dataset (Loss/loss.py:29-32: the ImageNet low-only mask is a comment)
    assert kw.filter.enabled and (kw.filter.low, kw.filter.high) == (LOW, HIGH)
    assert kw.filter.mode == "band"
    assert cfg.momentum.base_tau == cfg.momentum.final_tau == EMA  # constant (MTTVModel.py:60)
    feats = 512 if name in CIFAR else 2048  # projector F -> F -> F/4 (MTTVModel.py:22-34)
    model = build_method(cfg)
    dims = [m.out_features for m in model.projector.modules() if isinstance(m, nn.Linear)]
    assert dims == [feats, feats, feats // 4]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.projector.modules()) == 3
    assert cfg.seed == SEED and cfg.host == "builtin"


@pytest.mark.parametrize("name", PRESETS)
def test_optimiser_and_schedule_are_theirs(name):
    cfg = parsed(name)
    opt = cfg.optimizer
    # SGD(lr=3.0, momentum=0.9, weight_decay=1e-4), no Nesterov, every parameter decayed, lr not
    # scaled by the batch size (MTTVModel.py:212-213)
    assert opt.name == "sgd" and opt.lr == LR and opt.lr_scaling == "none"
    assert opt.kwargs.momentum == 0.9 and not opt.kwargs.nesterov
    assert opt.weight_decay == WD and not opt.exclude_bias_n_norm_wd
    assert opt.batch_size == BATCH and cfg.max_epochs == EPOCHS
    sched = cfg.scheduler
    assert (sched.name, sched.interval, sched.warmup_epochs) == ("warmup_cosine", "epoch", WARMUP)
    assert sched.min_lr == 0.0
    # the lr of every epoch from our host's own scheduler (hosts/builtin.py)
    model = build_method(cfg)
    model._trainer = types.SimpleNamespace(estimated_stepping_batches=EPOCHS * 12,
                                           num_training_batches=12, accumulate_grad_batches=1)
    (optimizer,), (scheduler,) = model.configure_optimizers()
    assert scheduler["interval"] == "epoch" and isinstance(optimizer, torch.optim.SGD)
    groups = {g["name"]: g for g in optimizer.param_groups}
    for group in ("backbone", "projector"):
        assert groups[group]["weight_decay"] == WD and groups[group]["momentum"] == 0.9
    lrs = []
    for _ in range(EPOCHS):
        lrs.append(groups["backbone"]["lr"])
        optimizer.step()  # no gradients: a no-op, keeps the step order torch expects
        scheduler["scheduler"].step()
    assert lrs[0] == pytest.approx(3e-4, abs=1e-15)  # their epoch-0 lr: 3.0 x 1e-4
    assert lrs[0] == pytest.approx(authors_lr(0), abs=1e-15)
    assert lrs[199] == pytest.approx(authors_lr(199), abs=2e-4)  # 2.98500 vs 2.98520
    assert lrs[200] == pytest.approx(authors_lr(200)) == LR
    assert lrs[-1] == pytest.approx(authors_lr(EPOCHS - 1), rel=1e-12)
    assert max(abs(a - authors_lr(e)) for e, a in enumerate(lrs)) < 2e-4
    assert all(a == pytest.approx(authors_lr(e), rel=1e-12) for e, a in enumerate(lrs)
               if e >= WARMUP)


# ---------------------------------------------------------------- the subsets
def reenact_authors_cifar(targets: np.ndarray, cls_num: int) -> np.ndarray:
    """data/MTTVModel_lt_Data.py:38-85 (CIFAR-10; 134-181 CIFAR-100) transcribed line by line on
    NumPy's global RNG, with ``self.data`` the file positions (state restored afterwards)."""
    saved = np.random.get_state()
    try:
        data, imb_factor = np.arange(len(targets)), 0.01
        np.random.seed(0)  # :44, rand_number=0
        img_max = len(data) / cls_num  # :49
        img_num_per_cls = [int(img_max * (imb_factor ** (c / (cls_num - 1.0))))
                           for c in range(cls_num)]  # :51-54
        new_data = []
        targets_np = np.array(targets, dtype=np.int64)  # :67
        classes = np.unique(targets_np)  # :68
        for the_class, the_img_num in zip(classes, img_num_per_cls):  # :71
            idx = np.where(targets_np == the_class)[0]  # :73
            np.random.shuffle(idx)  # :74
            new_data.append(data[idx[:the_img_num], ...])  # :75-79
        return np.hstack(new_data)  # :82 (vstack of images; positions here)
    finally:
        np.random.set_state(saved)


def cifar_source(num_classes: int, order_seed: int) -> ArraySource:
    """50,000 one-pixel images, balanced, labels in a file-like random order."""
    labels = np.random.default_rng(order_seed).permutation(
        np.repeat(np.arange(num_classes), 50000 // num_classes))
    return ArraySource(np.zeros((len(labels), 1, 1, 3), np.uint8), labels, num_classes)


@pytest.mark.parametrize("name, classes, counts", [
    ("mttv_official_cifar10lt", 10, CIFAR10_LT_COUNTS),
    ("mttv_official_cifar100lt", 100, CIFAR100_LT_COUNTS),
])
def test_selection_gives_their_images_through_the_data_path(name, classes, counts):
    cfg = parsed(name, ["data.train_path=/nonexistent"])
    assert cfg.data.long_tail.selection == "authors" and cfg.data.long_tail.seed == 0
    assert (cfg.data.long_tail.profile, cfg.data.long_tail.imbalance_ratio) == ("exp", 100)
    source = cifar_source(classes, order_seed=3)
    dataset = build_pretrain_dataset(cfg, None, source=source)
    assert dataset.class_counts.tolist() == counts
    assert len(dataset) == sum(counts) == {10: 12406, 100: 10847}[classes]
    expected = reenact_authors_cifar(source.targets, classes)
    assert np.array_equal(dataset.source_indexes, np.sort(expected))
    # class-contiguous targets: the published fingerprint of their subset
    contiguous = ArraySource(np.zeros((50000, 1, 1, 3), np.uint8),
                             np.repeat(np.arange(classes), 50000 // classes), classes)
    picked = pretrain_indexes(cfg, contiguous).astype("<i8")
    assert hashlib.sha256(picked.tobytes()).hexdigest().startswith(FINGERPRINT[classes])


def test_default_selection_keeps_the_counts_but_not_the_images():
    cfg = parsed("mttv_cifar10lt", ["data.train_path=/nonexistent"])
    assert cfg.data.long_tail.selection == "per_class"
    source = cifar_source(10, order_seed=3)
    ours = pretrain_indexes(cfg, source)
    assert np.bincount(source.targets[ours]).tolist() == CIFAR10_LT_COUNTS
    assert not np.array_equal(ours, np.sort(reenact_authors_cifar(source.targets, 10)))


def test_imagenet_fraction_is_their_stratified_split(tmp_path):
    """The 25 % of imagenet_lt_dataset.py:59-80 (StratifiedShuffleSplit, random_state 42) through
    the image_list data path, on a small long-tailed list, against scikit-learn itself."""
    from sklearn.model_selection import StratifiedShuffleSplit

    cfg = parsed("mttv_official_imagenetlt")
    lt = cfg.data.long_tail
    assert (lt.profile, lt.fraction, lt.fraction_seed) == ("none", 0.25, 42)  # Imagenet.yaml:11-12
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(40), np.linspace(60, 4, 40).astype(int)))
    root = tmp_path / "images"
    root.mkdir()
    lines = []
    for i, label in enumerate(labels.tolist()):
        (root / f"{i}.jpg").touch()
        lines.append(f"{i}.jpg {label}")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    cfg = parsed("mttv_official_imagenetlt", [f"data.train_path={root}",
                                              f"data.long_tail.split_file={tmp_path / 'train.txt'}",
                                              "data.num_classes=40"])
    source = ImageListSource(root, tmp_path / "train.txt", 40)
    got = pretrain_indexes(cfg, source)
    split = StratifiedShuffleSplit(n_splits=1, train_size=int(0.25 * len(labels)), random_state=42)
    (train, _), = split.split(np.arange(len(labels)), labels)
    assert np.array_equal(got, np.sort(train))
    assert len(got) == int(0.25 * len(labels))


# ---------------------------------------------------------------- the probe
def compose_probe(name: str):
    with initialize_config_dir(config_dir=str(ROOT / "scripts" / "linear"), version_base="1.2"):
        cfg = compose(config_name=name, overrides=["pretrained_feature_extractor=/some/run"])
    OmegaConf.set_struct(cfg, False)
    return parse_eval_cfg(cfg, "linear")


@pytest.mark.parametrize("name", sorted(PROBES))
def test_probe_is_theirs(name):
    cfg = compose_probe(name)
    assert cfg.backbone.name == PROBES[name]
    # AdamW(lr=0.005, weight_decay=0) (Linear_Evaluation/Model_LE.py:264-266,
    # post_training/linear_evaluation.yaml:5-6), batch 1024 (training.batch_size), 100 epochs
    # (linear_evaluation.yaml:1), cosine per epoch (utils.py:39-46 with current_epoch,
    # Model_LE.py:79), plain cross-entropy (Model_LE.py:47), no standardisation (Model_LE.py:60-62)
    opt = cfg.optimizer
    assert (opt.name, opt.lr, opt.weight_decay, opt.batch_size) == ("adamw", 0.005, 0.0, 1024)
    assert opt.lr_interval == "epoch" and cfg.max_epochs == 100
    assert cfg.probe.mode == "features" and not cfg.probe.standardize
    assert not cfg.probe.balanced_loss
    # unaugmented features of the balanced train set (cifar10_dataset_le.py:28-41,
    # imagenet_dataset_le.py:45-65)
    assert cfg.train_set == "balanced" and cfg.seed == SEED
    config = probe_config(cfg)
    steps = 49  # ceil(50,000 / 1024), their `steps: 49`
    head = nn.Linear(2, 2)
    optim = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = probe_scheduler(optim, config, steps)
    lrs = []
    for _ in range(config.epochs * steps):
        lrs.append(optim.param_groups[0]["lr"])
        optim.step()
        sched.step()
    for epoch in range(config.epochs):  # lr = 0.005 * 0.5 * (1 + cos(pi e / 100)) all epoch
        theirs = 0.005 * 0.5 * (1 + math.cos(math.pi * epoch / 100))
        assert lrs[epoch * steps:(epoch + 1) * steps] == pytest.approx([theirs] * steps)


# ---------------------------------------------------------------- the official form's stop
def test_small_batch_official_run_stops_with_one_line(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main_pretrain.py"), "--config-name",
         "quickstart_mttv_digits", "optimizer.batch_size=8", "method_kwargs.form=official",
         "max_epochs=1", f"checkpoint.dir={tmp_path}", "data.num_workers=0",
         "+enable_progress_bar=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    line = errors[0]
    for part in ("method_kwargs.form=official", "of 32 rows", "global step 0",
                 "optimizer.batch_size=8", "exp(1/t) = 28.03", "self-similarity",
                 "method_kwargs.form=principled", "larger optimizer.batch_size"):
        assert part in line, (part, line)
    # warned at start, before any step
    assert "fewer than 4 exp(1/t)" in proc.stderr.split("error:")[0]
    assert not list(Path(tmp_path).rglob("*.ckpt"))


def test_no_warning_at_the_authors_batch():
    cfg = compose_cfg("quickstart_mttv_digits", ["method_kwargs.form=official"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parse_pretrain_cfg(cfg)  # batch 64 x 2 pairs: 256 rows
    assert not [w for w in caught if "official" in str(w.message)]
    cfg = compose_cfg("quickstart_mttv_digits", ["method_kwargs.form=official",
                                                 "optimizer.batch_size=16"])
    with pytest.warns(UserWarning, match="64 embeddings per step"):
        parse_pretrain_cfg(cfg)


# ---------------------------------------------------------------- the keys, for any method
@pytest.mark.parametrize("key, value", [
    ("order", "mttv"), ("squash", True), ("rrc.interpolation", "bilinear"),
    ("gaussian_blur.kernel_size", 21),
])
def test_dali_and_batched_refuse_the_torchvision_only_keys(key, value):
    from solo_multiview.data.dali.spec import parse_crop_spec

    entry = OmegaConf.to_container(parsed("mttv_cifar10lt").augmentations[0])
    parse_crop_spec(entry, "cifar10", "augmentations[0]")  # the defaults pass
    node = entry
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ValueError) as info:
        parse_crop_spec(entry, "cifar10", "augmentations[0]")
    message = str(info.value)
    assert message.startswith(f"augmentations[0].{key}: ") and "\n" not in message
    assert "torchvision loader only" in message


@pytest.mark.parametrize("override, expected", [
    ("augmentations.0.order=kornia", "augmentations[0].order: unknown value 'kornia'"),
    ("augmentations.0.order=[rrc,rrc]", "names an op twice"),
    ("augmentations.0.order=[rrc,color_jitter]", "leaves out ['grayscale', 'gaussian_blur', "
                                                 "'horizontal_flip']"),
    ("augmentations.0.gaussian_blur.kernel_size=4", "kernel_size: got 4; expected an odd int"),
    ("augmentations.0.rrc.interpolation=nearest", "rrc.interpolation: unknown value"),
    ("+data.long_tail.fraction=1.5", "data.long_tail.fraction"),
])
def test_bad_values_are_refused_at_parse(override, expected):
    from solo_multiview.config.schema import ConfigError

    with pytest.raises(ConfigError, match=None) as info:
        parse_pretrain_cfg(compose_cfg("mttv_official_cifar10lt", [override]))
    assert expected in str(info.value), str(info.value)


def test_an_explicit_order_list_is_applied():
    aug = OmegaConf.to_container(parsed("mttv_cifar10lt").augmentations[0])
    aug["order"] = ["horizontal_flip", "gaussian_blur", "rrc", "color_jitter", "grayscale"]
    ops = build_transform(aug, "cifar10").transforms
    assert [type(t).__name__ for t in ops[:5]] == [
        "RandomHorizontalFlip", "RandomApply", "RandomResizedCrop", "RandomApply",
        "RandomGrayscale"]
    assert isinstance(ops[1].transforms[0], v2.GaussianBlur)


def test_authors_selection_refuses_what_it_cannot_honour():
    from solo_multiview.data.longtail import long_tail_indexes

    labels = np.repeat(np.arange(10), 50)
    for node, key in ([{"selection": "authors", "profile": "step"}, "profile=step"],
                      [{"selection": "authors", "class_order": "permuted"}, "class_order"],
                      [{"selection": "authors", "n_max": 20}, "n_max"]):
        with pytest.raises(ValueError, match="selection=authors") as info:
            long_tail_indexes(labels, 10, node)
        assert key in str(info.value)
