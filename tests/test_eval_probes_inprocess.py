"""The probes and evaluation drivers in-process, against hand-written references.

``augmentation_transform`` (pad crop, resized crop, flip, fit-to-size, normalisation),
``train_augmented_probe`` and ``train_linear_probe`` (against a hand-written SGD / AdamW loop
with the documented init, standardisation, class-balanced loss and cosine schedule), and
``run_linear`` / ``evaluate_linear`` / ``run_knn`` on a fake digits pretraining (a random tiny
convnet saved as a checkpoint, no pretraining run needed).
"""

from __future__ import annotations

import importlib
import json
import math
import re
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from solo_multiview.eval.augmented_probe import augmentation_transform, train_augmented_probe
from solo_multiview.eval.linear import LinearProbe, LinearProbeConfig, train_linear_probe
from solo_multiview.eval.prepare import prepare_eval
from solo_multiview.eval.run_knn import run_knn
from solo_multiview.eval.run_linear import evaluate_linear, run_linear
from solo_multiview.hosts.backbones import build_backbone
from tests.test_main_eval import compose_eval

run_knn_module = importlib.import_module("solo_multiview.eval.run_knn")
run_linear_module = importlib.import_module("solo_multiview.eval.run_linear")
MEAN, STD = (0.2, 0.4, 0.6), (0.5, 0.25, 0.125)


# --------------------------------------------------------------------------- augmentation
def rgb(size, seed=0) -> Image.Image:
    w, h = (size, size) if isinstance(size, int) else size
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr)


def normalised(image: Image.Image) -> torch.Tensor:
    """(pixel / 255 - mean) / std, (3, H, W), by hand."""
    arr = torch.from_numpy(np.asarray(image, dtype=np.float64) / 255.0).permute(2, 0, 1)
    return ((arr - torch.tensor(MEAN)[:, None, None]) /
            torch.tensor(STD)[:, None, None]).float()


def zero_padded(image: Image.Image, pad: int) -> torch.Tensor:
    """The normalised image of a zero-padded picture: the border is (0 - mean) / std."""
    x = normalised(image)
    out = (-torch.tensor(MEAN) / torch.tensor(STD))[:, None, None].repeat(
        1, x.shape[1] + 2 * pad, x.shape[2] + 2 * pad).float()
    out[:, pad:pad + x.shape[1], pad:pad + x.shape[2]] = x
    return out


def window_offsets(out: torch.Tensor, padded: torch.Tensor, size: int, flips: bool):
    """The (top, left, flipped) placements of ``out`` inside ``padded``."""
    windows = padded.unfold(1, size, 1).unfold(2, size, 1)  # (3, tops, lefts, size, size)
    found = []
    for flipped in ((False, True) if flips else (False,)):
        ref = windows.flip(-1) if flipped else windows
        close = ((ref - out[:, None, None]).abs() <= 1e-6).flatten(3).all(3).all(0)
        found += [(int(t), int(x), flipped) for t, x in close.nonzero().tolist()]
    return found


def test_pad_crop_is_a_window_of_the_zero_padded_image():
    image = rgb(8)
    transform = augmentation_transform(8, MEAN, STD, crop="pad", padding=2, horizontal_flip=0.0)
    padded = zero_padded(image, 2)
    torch.manual_seed(0)
    offsets = set()
    for _ in range(40):
        out = transform(image)
        assert out.dtype == torch.float32 and out.shape == (3, 8, 8)
        places = window_offsets(out, padded, 8, flips=False)
        assert len(places) == 1, places
        offsets.add(places[0][:2])
    tops, lefts = {t for t, _ in offsets}, {x for _, x in offsets}
    assert tops == set(range(5)) and lefts == set(range(5))  # 2 pixels on every side


def test_pad_defaults_are_padding_4_and_flip_one_half():
    image = rgb(8, seed=1)
    transform = augmentation_transform(8, MEAN, STD)
    padded = zero_padded(image, 4)
    torch.manual_seed(1)
    tops, lefts, flipped = set(), set(), []
    for _ in range(80):
        places = window_offsets(transform(image), padded, 8, flips=True)
        assert len(places) == 1, places
        tops.add(places[0][0])
        lefts.add(places[0][1])
        flipped.append(places[0][2])
    assert tops == set(range(9)) and lefts == set(range(9))
    assert 20 <= sum(flipped) <= 60, sum(flipped)


def test_no_padding_no_flip_is_plain_normalisation_without_random_draws():
    image = rgb(8, seed=2)
    transform = augmentation_transform(8, MEAN, STD, padding=0, horizontal_flip=0.0)
    state = torch.get_rng_state()
    out = transform(image)
    assert torch.equal(torch.get_rng_state(), state)  # no crop offset, no flip coin to draw
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, normalised(image), rtol=0, atol=1e-6)


def test_padding_one_pads_one_pixel():
    image = rgb(8, seed=3)
    transform = augmentation_transform(8, MEAN, STD, padding=1, horizontal_flip=0.0)
    padded = zero_padded(image, 1)
    torch.manual_seed(3)
    offsets = {window_offsets(transform(image), padded, 8, flips=False)[0][:2]
               for _ in range(30)}
    assert {t for t, _ in offsets} == {0, 1, 2} and {x for _, x in offsets} == {0, 1, 2}


def test_flip_probability_one_mirrors_every_image():
    image = rgb(8, seed=4)
    transform = augmentation_transform(8, MEAN, STD, padding=0, horizontal_flip=1.0)
    for _ in range(3):
        torch.testing.assert_close(transform(image), normalised(image).flip(-1), rtol=0,
                                   atol=1e-6)


def fit(image: Image.Image, resize: int, size: int) -> Image.Image:
    """Bicubic resize of a square image to ``resize`` then the centre ``size`` crop, in PIL."""
    big = image.resize((resize, resize), Image.BICUBIC)
    a = (resize - size) // 2
    return big.crop((a, a, a + size, a + size))


def test_other_sizes_are_resized_and_centre_cropped_first():
    image = rgb(12, seed=5)
    transform = augmentation_transform(8, MEAN, STD, padding=0, horizontal_flip=0.0, resize=10)
    torch.testing.assert_close(transform(image), normalised(fit(image, 10, 8)), rtol=0,
                               atol=1e-5)
    # without resize: straight to the crop size
    transform = augmentation_transform(8, MEAN, STD, padding=0, horizontal_flip=0.0)
    torch.testing.assert_close(transform(image), normalised(image.resize((8, 8),
                                                                         Image.BICUBIC)),
                               rtol=0, atol=1e-5)
    # an image of the crop size is left as it is, whatever resize says
    small = rgb(8, seed=6)
    transform = augmentation_transform(8, MEAN, STD, padding=0, horizontal_flip=0.0, resize=10)
    torch.testing.assert_close(transform(small), normalised(small), rtol=0, atol=1e-6)


@pytest.mark.parametrize("min_scale", [None, 0.5])
def test_resized_crop_is_torchvisions_random_resized_crop(min_scale):
    """crop=resized draws exactly as ``RandomResizedCrop(crop, scale=(min_scale, 1), bicubic)``
    (min_scale 0.08 by default), then flips and normalises."""
    image = rgb(12, seed=7)
    kwargs = {} if min_scale is None else {"min_scale": min_scale}
    transform = augmentation_transform(8, MEAN, STD, crop="resized", horizontal_flip=0.0,
                                       **kwargs)
    reference = v2.RandomResizedCrop(8, scale=(min_scale or 0.08, 1.0),
                                     interpolation=InterpolationMode.BICUBIC)
    torch.manual_seed(7)
    outs = [transform(image) for _ in range(6)]
    torch.manual_seed(7)
    refs = [normalised(reference(image)) for _ in range(6)]
    for out, ref in zip(outs, refs):
        assert out.shape == (3, 8, 8)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    assert not torch.allclose(outs[0], outs[1])  # random crops indeed


def test_unknown_crop_mode_is_refused():
    with pytest.raises(ValueError) as info:
        augmentation_transform(8, MEAN, STD, crop="centre")
    assert str(info.value) == ("probe.augmentation.crop: unknown 'centre'; choose 'pad' or "
                               "'resized'")


# --------------------------------------------------------------------------- reference loop
def cosine_lr(lr: float, step: int, total: int) -> float:
    return lr * (1 + math.cos(math.pi * step / total)) / 2


def reference_fit(batches: List[List[int]], feats: torch.Tensor, labels: torch.Tensor,
                  num_classes: int, mean: torch.Tensor, std: torch.Tensor, seed: int,
                  optimizer: str, lr: float, momentum: float, nesterov: bool,
                  weight_decay: float, balanced: bool, lrs: List[float]):
    """The probe trained by hand: W0 ~ N(0, 0.01^2) (first draw of a generator seeded with
    ``seed``), b0 = 0, weighted cross-entropy written out, SGD / AdamW updates written out,
    ``lrs[t]`` the learning rate of step t. Returns W, b and the per-step (loss, batch size)."""
    gen = torch.Generator().manual_seed(seed)
    W = (torch.randn((num_classes, feats.shape[1]), generator=gen) * 0.01).double()
    b = torch.zeros(num_classes, dtype=torch.float64)
    z = (feats.double() - mean.double()) / std.double()
    y = labels.long()
    counts = torch.bincount(y, minlength=num_classes).double()
    present = int((counts > 0).sum())
    w_class = torch.where(counts > 0, len(y) / (present * counts.clamp(min=1)),
                          torch.zeros_like(counts))
    state = {"buf": None, "m": None, "v": None}
    losses = []
    for t, idx in enumerate(batches):
        Wv = W.clone().requires_grad_(True)
        bv = b.clone().requires_grad_(True)
        logits = z[idx] @ Wv.T + bv
        nll = -(logits - logits.logsumexp(dim=1, keepdim=True))[torch.arange(len(idx)), y[idx]]
        wi = w_class[y[idx]] if balanced else torch.ones(len(idx), dtype=torch.float64)
        loss = (wi * nll).sum() / wi.sum()
        loss.backward()
        losses.append((float(loss.detach()), len(idx)))
        params, grads = [W, b], [Wv.grad, bv.grad]
        step_lr = lrs[t]
        if optimizer == "sgd":
            grads = [g + weight_decay * p for p, g in zip(params, grads)]
            if momentum:
                bufs = grads if state["buf"] is None else [
                    momentum * q + g for q, g in zip(state["buf"], grads)]
                state["buf"] = [q.clone() for q in bufs]
                grads = [g + momentum * q for g, q in zip(grads, bufs)] if nesterov else bufs
            W, b = [p - step_lr * g for p, g in zip(params, grads)]
        else:  # AdamW, betas (0.9, 0.999), eps 1e-8, decoupled decay
            b1, b2, eps = 0.9, 0.999, 1e-8
            params = [p * (1 - step_lr * weight_decay) for p in params]
            ms = [(1 - b1) * g if state["m"] is None else b1 * m + (1 - b1) * g
                  for g, m in zip(grads, state["m"] or grads)]
            vs = [(1 - b2) * g * g if state["v"] is None else b2 * v + (1 - b2) * g * g
                  for g, v in zip(grads, state["v"] or grads)]
            state["m"], state["v"] = ms, vs
            k = t + 1
            W, b = [p - step_lr * (m / (1 - b1 ** k)) / ((v / (1 - b2 ** k)).sqrt() + eps)
                    for p, m, v in zip(params, ms, vs)]
    return W.float(), b.float(), losses


# --------------------------------------------------------------------------- augmented probe
class RecordingImages(torch.utils.data.Dataset):
    """(index, image, label) over fixed images; remembers which indexes were read, in order."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels
        self.reads: List[int] = []

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.reads.append(int(i))
        return i, self.images[i], self.labels[i]


def tiny_backbone() -> nn.Module:
    torch.manual_seed(11)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():  # running statistics unlike a fresh batch's
        net[1].running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        net[1].running_var.copy_(torch.tensor([0.5, 2.0, 1.5, 0.8]))
    return net


def augmented_setup(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 5, 5, generator=g)
    labels = torch.tensor([0, 0, 0, 0, 1, 2][:n])
    # clean features: a plain dimension, a constant one (sigma -> 1), sigma = 0.5, another
    clean = torch.stack([torch.randn(n, generator=g) * 3 + 1, torch.full((n,), 2.0),
                         torch.tensor([0.0, 1.0] * (n // 2)),
                         torch.randn(n, generator=g) - 1], dim=1)
    return images, labels, clean


def split_reads(reads: List[int], n: int, batch: int, epochs: int) -> List[List[int]]:
    assert len(reads) == n * epochs, reads  # every image every epoch, the last batch kept
    out = []
    for e in range(epochs):
        order = reads[e * n:(e + 1) * n]
        assert sorted(order) == list(range(n))
        out += [order[s:s + batch] for s in range(0, n, batch)]
    return out


def test_augmented_probe_equals_the_hand_written_sgd_loop():
    images, labels, clean = augmented_setup()
    data = RecordingImages(images, labels)
    net = tiny_backbone().train()
    config = LinearProbeConfig(epochs=3, batch_size=4, optimizer="sgd", lr=0.3, momentum=0.9,
                               nesterov=True, weight_decay=0.05, balanced_loss=True, seed=4)
    lines: List[str] = []
    torch.manual_seed(0)
    rng_before = torch.get_rng_state()
    probe = train_augmented_probe(net, data, clean, labels, 3, config, torch.device("cpu"),
                                  log=lines.append)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global generator untouched
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert not probe.training
    # standardisation from the clean features (population std, sigma < 1e-6 -> 1)
    torch.testing.assert_close(probe.mean, clean.mean(0))
    sigma = clean.std(0, unbiased=False)
    torch.testing.assert_close(probe.std, torch.stack([sigma[0], torch.tensor(1.0),
                                                       torch.tensor(0.5), sigma[3]]))
    batches = split_reads(data.reads, 6, 4, 3)
    with torch.no_grad():
        feats = tiny_backbone().eval()(images)
    lrs = [cosine_lr(0.3, t, 6) for t in range(6)]
    W, b, losses = reference_fit(batches, feats, labels, 3, probe.mean, probe.std, 4, "sgd",
                                 0.3, 0.9, True, 0.05, True, lrs)
    torch.testing.assert_close(probe.head.weight, W, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probe.head.bias, b, rtol=1e-4, atol=1e-5)
    # one line per epoch (3 epochs: every epoch), the mean loss per image of the epoch
    assert len(lines) == 3
    for e, line in enumerate(lines):
        m = re.fullmatch(r"augmented probe: epoch (\d+)/3 loss (\d+\.\d{4})", line)
        assert m and int(m.group(1)) == e + 1, line
        ep = losses[2 * e:2 * e + 2]
        expected = sum(loss * k for loss, k in ep) / sum(k for _, k in ep)
        assert float(m.group(2)) == pytest.approx(expected, abs=2e-4)


def test_augmented_probe_keeps_a_sigma_of_exactly_1e6():
    images, labels, clean = augmented_setup()
    clean[:, 3] = torch.tensor([0.0, 2e-6] * 3)  # sigma = 1e-6: not below 1e-6, kept
    probe = train_augmented_probe(tiny_backbone(), RecordingImages(images, labels), clean,
                                  labels, 3, LinearProbeConfig(epochs=1), torch.device("cpu"))
    assert float(probe.std[3]) == pytest.approx(1e-6)
    assert float(probe.std[1]) == 1.0


def test_augmented_probe_adamw_and_shuffling_from_the_seed():
    images, labels, clean = augmented_setup(seed=1)
    config = LinearProbeConfig(epochs=2, batch_size=4, optimizer="adamw", lr=0.05,
                               weight_decay=0.2, standardize=False, seed=9)
    runs = []
    for global_seed in (0, 1):
        data = RecordingImages(images, labels)
        torch.manual_seed(global_seed)  # shuffling and init come from config.seed only
        probe = train_augmented_probe(tiny_backbone(), data, clean, labels, 3, config,
                                      torch.device("cpu"))
        runs.append((data.reads, probe))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1].head.weight, runs[1][1].head.weight)
    reads, probe = runs[0]
    assert reads[:6] != reads[6:] or reads[:6] != list(range(6))  # shuffled
    assert (probe.mean == 0).all() and (probe.std == 1).all()
    batches = split_reads(reads, 6, 4, 2)
    with torch.no_grad():
        feats = tiny_backbone().eval()(images)
    lrs = [cosine_lr(0.05, t, 4) for t in range(4)]
    W, b, _ = reference_fit(batches, feats, labels, 3, torch.zeros(4), torch.ones(4), 9,
                            "adamw", 0.05, 0.0, False, 0.2, False, lrs)
    torch.testing.assert_close(probe.head.weight, W, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probe.head.bias, b, rtol=1e-4, atol=1e-5)
    other = RecordingImages(images, labels)
    train_augmented_probe(tiny_backbone(), other, clean, labels, 3,
                          LinearProbeConfig(**{**config.to_dict(), "seed": 10}),
                          torch.device("cpu"))
    assert other.reads != reads


def test_augmented_probe_logs_about_ten_times():
    images, labels, clean = augmented_setup(n=2)
    data = RecordingImages(images, labels)
    config = LinearProbeConfig(epochs=31, batch_size=2, lr=0.01)
    lines: List[str] = []
    train_augmented_probe(tiny_backbone(), data, clean, labels, 3, config,
                          torch.device("cpu"), log=lines.append)
    epochs = [int(re.match(r"augmented probe: epoch (\d+)/31 loss ", s).group(1))
              for s in lines]
    assert epochs == [*range(3, 31, 3), 31]  # every 31 // 10 = 3 epochs, and the last
    assert data.reads  # read in this process: no loader workers by default


def test_augmented_probe_refuses_mismatched_features():
    images, labels, clean = augmented_setup()
    data = RecordingImages(images, labels)
    cases = [(clean[:5], "(5, 4)"), (clean[:, 0], "(6,)"), (clean[None], "(1, 6, 4)")]
    for bad, shape in cases:
        with pytest.raises(ValueError) as info:
            train_augmented_probe(tiny_backbone(), data, bad, labels, 3, LinearProbeConfig(),
                                  torch.device("cpu"))
        assert str(info.value) == ("augmented probe: clean_features must be (N, D) with N = 6 "
                                   f"labels, got {shape}")
    # N = D is no excuse for a transposed (D, N) array: only (N, D) with N labels passes
    square = torch.randn(6, 6)
    probe = train_augmented_probe(nn.Sequential(nn.Flatten(), nn.Linear(75, 6)), data, square,
                                  labels, 3, LinearProbeConfig(epochs=1), torch.device("cpu"))
    assert probe.head.weight.shape == (3, 6)


# --------------------------------------------------------------------------- linear probe
def linear_data(n=10, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * 2 + 1
    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2, 2][:n])
    return x, y


def linear_batches(n: int, batch: int, epochs: int, seed: int, shape) -> List[List[int]]:
    """The documented draws of the seeded generator: the init, then one permutation per
    epoch."""
    gen = torch.Generator().manual_seed(seed)
    torch.randn(shape, generator=gen)
    out = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).tolist()
        out += [perm[s:s + batch] for s in range(0, n, batch)]
    return out


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_linear_probe_equals_the_hand_written_sgd_loop(interval):
    x, y = linear_data()
    config = LinearProbeConfig(epochs=3, batch_size=4, lr=0.2, momentum=0.8, nesterov=True,
                               weight_decay=0.1, balanced_loss=True, seed=3,
                               lr_interval=interval)
    probe = train_linear_probe(x, y, 3, config=config)
    std = x.std(0, unbiased=False)
    torch.testing.assert_close(probe.mean, x.mean(0))
    torch.testing.assert_close(probe.std, std)
    batches = linear_batches(10, 4, 3, 3, (3, 3))
    if interval == "step":
        lrs = [cosine_lr(0.2, t, 9) for t in range(9)]  # 3 steps an epoch
    else:
        lrs = [cosine_lr(0.2, t // 3, 3) for t in range(9)]
    W, b, _ = reference_fit(batches, x, y, 3, x.mean(0), std, 3, "sgd", 0.2, 0.8, True, 0.1,
                            True, lrs)
    torch.testing.assert_close(probe.head.weight, W, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probe.head.bias, b, rtol=1e-4, atol=1e-5)


def test_linear_probe_adamw_one_step_an_epoch_per_epoch_cosine():
    x, y = linear_data()
    probe = train_linear_probe(x, y, optimizer="adamw", lr=0.05, weight_decay=0.3, epochs=3,
                               batch_size=16, lr_interval="epoch", standardize=False, seed=2)
    assert probe.head.out_features == 3  # max label + 1
    batches = linear_batches(10, 16, 3, 2, (3, 3))
    lrs = [cosine_lr(0.05, e, 3) for e in range(3)]
    W, b, _ = reference_fit(batches, x, y, 3, torch.zeros(3), torch.ones(3), 2, "adamw", 0.05,
                            0.0, False, 0.3, False, lrs)
    torch.testing.assert_close(probe.head.weight, W, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probe.head.bias, b, rtol=1e-4, atol=1e-5)


def test_linear_probe_standardisation_thresholds_and_integer_features():
    x = torch.tensor([[0, 5, 0], [1, 5, 0], [0, 5, 0], [1, 5, 0]], dtype=torch.int64)
    y = torch.tensor([0, 1, 0, 1])
    probe = train_linear_probe(x, y, epochs=1)  # integer features are trained as float32
    torch.testing.assert_close(probe.mean, torch.tensor([0.5, 5.0, 0.0]))
    torch.testing.assert_close(probe.std, torch.tensor([0.5, 1.0, 1.0]))
    tiny = torch.tensor([[0.0], [2e-6]])
    probe = train_linear_probe(tiny, torch.tensor([0, 1]), epochs=1)
    assert float(probe.std[0]) == pytest.approx(1e-6)  # sigma = 1e-6 is not below 1e-6
    one = train_linear_probe(torch.tensor([[1.0, 2.0]]), torch.tensor([0]), num_classes=2,
                             epochs=1)
    assert one.head.weight.shape == (2, 2)  # a single training image is enough


def test_linear_probe_forward_standardises_then_applies_the_head():
    probe = LinearProbe(2, 3)
    with torch.no_grad():
        probe.mean.copy_(torch.tensor([1.0, -2.0]))
        probe.std.copy_(torch.tensor([2.0, 0.5]))
        probe.head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        probe.head.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    feats = torch.tensor([[3.0, -1.0], [1.0, -2.0]], dtype=torch.float64)
    # z = ((3 - 1) / 2, (-1 + 2) / 0.5) = (1, 2); z = (0, 0)
    expected = torch.tensor([[1.0, 3.0, -2.0], [0.0, 1.0, -1.0]])
    torch.testing.assert_close(probe.predict(feats), expected)


def message(call) -> str:
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value)


def test_linear_probe_error_messages():
    x, y = linear_data()
    assert message(lambda: train_linear_probe(x[:0], y[:0])) == (
        "linear probe features: expected a non-empty (N, D) tensor, got (0, 3)")
    assert message(lambda: train_linear_probe(x[:, 0], y)) == (
        "linear probe features: expected a non-empty (N, D) tensor, got (10,)")
    assert message(lambda: train_linear_probe(x, y[:-1])) == (
        "linear probe labels: expected (10,) integer labels, got (9,) torch.int64")
    assert message(lambda: train_linear_probe(x, y, num_classes=2)) == (
        "linear probe labels: must lie in [0, 2), got range [0, 2]")
    assert message(lambda: train_linear_probe(x, y, lr=0.0)) == (
        "linear probe lr: must be > 0, got 0.0")
    assert message(lambda: train_linear_probe(x, y, weight_decay=-0.5)) == (
        "linear probe weight_decay: must be >= 0, got -0.5")
    assert message(lambda: train_linear_probe(x, y, batch_size=0)) == (
        "linear probe batch_size: must be >= 1, got 0")
    assert message(lambda: train_linear_probe(x, y, lr_interval="batch")) == (
        "linear probe lr_interval: unknown 'batch'; choose one of ['step', 'epoch']")
    assert message(lambda: train_linear_probe(x, y, optimizer="lbfgs")) == (
        "linear probe optimizer: unknown 'lbfgs'; choose one of ['sgd', 'adamw']")


# --------------------------------------------------------------------------- drivers
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A fake digits pretraining run: a random tiny convnet under ``backbone.``, args.json."""
    run = tmp_path_factory.mktemp("fake_digits_run")
    kwargs = {"width": 4, "depth": 2}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_backbone("convnet", "digits", kwargs)
    state = {f"backbone.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state}, run / "fake-ep=0.ckpt")
    (run / "args.json").write_text(json.dumps({
        "method": "mv_simclr", "backbone": {"name": "convnet", "kwargs": kwargs},
        "augmentations": [{"crop_size": 16}], "data": {"dataset": "digits"}}))
    return run


@pytest.fixture(scope="module")
def digits_test_features(digits_run, tmp_path_factory) -> torch.Tensor:
    """The fake backbone's features of the 400 digits test images, by hand (one batch)."""
    prep = prepare_eval(eval_cfg("knn_quickstart_digits", digits_run,
                                 tmp_path_factory.mktemp("unused")), "knn", log=lambda _: None)
    return hand_features(prep.backbone, prep.data.test)


def eval_cfg(config: str, run: Path, out: Path, extra=()):
    return compose_eval(config, [
        f"pretrained_feature_extractor={run}", "train_set=3", f"results.dir={out}",
        "results.plot=false", "results.cache_features=false", "device=cpu",
        "data.num_workers=0", *extra])


def hand_features(net: nn.Module, dataset) -> torch.Tensor:
    with torch.no_grad():
        return net(torch.stack([dataset[i][1] for i in range(len(dataset))]))


def per_class(scores: torch.Tensor, labels: torch.Tensor, classes: int) -> List[float]:
    hit = scores.argmax(1) == labels
    return [100.0 * float(hit[labels == c].double().mean()) for c in range(classes)]


def logged(lines: List[str]) -> List[str]:
    """The logged lines, multi-line messages split."""
    return "\n".join(lines).splitlines()


class Recorder:
    """Wraps a function, remembers its arguments and result."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        result = self.fn(*args, **kwargs)
        self.calls.append((args, kwargs, result))
        return result


LINEAR_OPTIONS = ["max_epochs=2", "optimizer.batch_size=8", "optimizer.lr=0.05",
                  "optimizer.momentum=0.8", "optimizer.nesterov=true",
                  "optimizer.weight_decay=0.01", "+optimizer.lr_interval=epoch",
                  "probe.standardize=false", "probe.balanced_loss=true", "seed=3"]
LINEAR_CONFIG = LinearProbeConfig(epochs=2, batch_size=8, optimizer="sgd", lr=0.05,
                                  momentum=0.8, nesterov=True, weight_decay=0.01,
                                  standardize=False, balanced_loss=True, seed=3,
                                  lr_interval="epoch")


def check_scores(result, probe, train_feats, train_labels, test_feats, test_labels):
    train_top1 = 100.0 * float((probe.predict(train_feats).argmax(1) == train_labels)
                               .double().mean())
    assert result.settings["probe"]["train_top1"] == pytest.approx(train_top1)
    saved = json.loads((result.out_dir / "results.json").read_text())
    expected = per_class(probe.predict(test_feats), test_labels, 10)
    assert saved["per_class_acc"] == pytest.approx(expected)
    assert saved["top1"] == pytest.approx(float(np.mean(expected)))
    assert saved["settings"]["probe"] == result.settings["probe"]
    return saved


def test_run_linear_trains_the_probe_on_the_train_features(digits_run, digits_test_features,
                                                           tmp_path, monkeypatch):
    recorder = Recorder(train_linear_probe)
    monkeypatch.setattr(run_linear_module, "train_linear_probe", recorder)
    preparer = Recorder(prepare_eval)
    monkeypatch.setattr(run_linear_module, "prepare_eval", preparer)
    lines: List[str] = []
    cfg = eval_cfg("quickstart_digits", digits_run, tmp_path, LINEAR_OPTIONS)
    result = run_linear(cfg, log=lines.append)
    (p_args, p_kwargs, prep), = preparer.calls
    assert p_args == (cfg, "linear", lines.append) and p_kwargs == {}
    train_feats = hand_features(prep.backbone, prep.data.train)
    test_feats = digits_test_features
    train_labels = torch.as_tensor(prep.data.train.targets)
    test_labels = torch.as_tensor(prep.data.test.targets)
    (args, kwargs, probe), = recorder.calls
    torch.testing.assert_close(args[0], train_feats)
    assert torch.equal(args[1], train_labels) and args[2] == 10
    assert args[3] == LINEAR_CONFIG and kwargs == {"device": torch.device("cpu")}
    assert result.out_dir == tmp_path / "linear-shots3"
    assert result.settings["probe"] == {"mode": "features", **LINEAR_CONFIG.to_dict(),
                                        "train_top1": result.settings["probe"]["train_top1"]}
    saved = check_scores(result, probe, train_feats, train_labels, test_feats, test_labels)
    assert saved["settings"]["feature_cache"] == {
        split: {"path": None, "reused": False, "num_images": n, "dim": train_feats.shape[1]}
        for split, n in (("train", 30), ("test", 400))}
    assert "linear probe (features, train set shots3, 30 images) on fake-ep=0.ckpt" in logged(lines)
    assert f"json: {tmp_path / 'linear-shots3' / 'results.json'}" in lines
    assert any(s.startswith("checkpoint: ") for s in lines)


def test_evaluate_linear_augmented_passes_the_settings_on(digits_run, digits_test_features,
                                                          tmp_path, monkeypatch):
    transforms = Recorder(augmentation_transform)
    trainer = Recorder(train_augmented_probe)
    monkeypatch.setattr(run_linear_module, "augmentation_transform", transforms)
    monkeypatch.setattr(run_linear_module, "train_augmented_probe", trainer)
    options = [*LINEAR_OPTIONS, "max_epochs=1", "probe.mode=augmented", "data.resize=18",
               "probe.augmentation.crop=resized", "probe.augmentation.padding=3",
               "probe.augmentation.min_scale=0.5", "probe.augmentation.horizontal_flip=0.25"]
    lines: List[str] = []
    prep = prepare_eval(eval_cfg("quickstart_digits", digits_run, tmp_path, options), "linear",
                        log=lines.append)
    result = evaluate_linear(prep)
    (t_args, t_kwargs, transform), = transforms.calls
    images = prep.data.images
    assert t_args == (16, images.mean, images.std) and images.resize == 18
    assert t_kwargs == {"crop": "resized", "padding": 3, "min_scale": 0.5,
                        "horizontal_flip": 0.25, "resize": 18}
    (args, kwargs, probe), = trainer.calls
    train_feats = hand_features(prep.backbone, prep.data.train)
    test_feats = digits_test_features
    train_labels = torch.as_tensor(prep.data.train.targets)
    test_labels = torch.as_tensor(prep.data.test.targets)
    backbone, dataset, clean, labels, classes, config, device = args
    assert backbone is prep.backbone and classes == 10 and device == torch.device("cpu")
    assert dataset.source is prep.data.train.source and dataset.transform is transform
    assert np.array_equal(dataset.source_indexes, prep.data.train.source_indexes)
    torch.testing.assert_close(clean, train_feats)
    assert torch.equal(labels, train_labels)
    assert config == LinearProbeConfig(**{**LINEAR_CONFIG.to_dict(), "epochs": 1})
    assert kwargs == {"num_workers": 0, "log": prep.log}
    assert result.out_dir == tmp_path / "linear-shots3-aug"
    assert result.settings["probe"]["mode"] == "augmented"
    assert result.settings["probe"]["augmentation"] == {
        "crop": "resized", "padding": 3, "min_scale": 0.5, "horizontal_flip": 0.25}
    check_scores(result, probe, train_feats, train_labels, test_feats, test_labels)
    title = "linear probe (augmented, train set shots3, 30 images) on fake-ep=0.ckpt"
    assert title in logged(lines)
    assert "augmented probe: epoch 1/1 loss " in "\n".join(lines)


def test_run_knn_votes_over_the_bank_features(digits_run, digits_test_features, tmp_path,
                                              monkeypatch):
    recorder = Recorder(run_knn_module.knn_scores)
    monkeypatch.setattr(run_knn_module, "knn_scores", recorder)
    preparer = Recorder(prepare_eval)
    monkeypatch.setattr(run_knn_module, "prepare_eval", preparer)
    lines: List[str] = []
    cfg = eval_cfg("knn_quickstart_digits", digits_run, tmp_path, ["knn.k=40",
                                                                   "knn.temperature=0.2"])
    result = run_knn(cfg, log=lines.append)
    (p_args, p_kwargs, prep), = preparer.calls
    assert p_args == (cfg, "knn", lines.append) and p_kwargs == {}
    bank = hand_features(prep.backbone, prep.data.train)
    test = digits_test_features
    bank_labels = torch.as_tensor(prep.data.train.targets)
    test_labels = torch.as_tensor(prep.data.test.targets)
    (args, kwargs, _), = recorder.calls
    torch.testing.assert_close(args[0], bank)
    torch.testing.assert_close(args[2], test)
    assert torch.equal(args[1], bank_labels)
    assert kwargs == {"num_classes": 10, "k": 40, "temperature": 0.2}
    saved = json.loads((result.out_dir / "results.json").read_text())
    assert result.out_dir == tmp_path / "knn-shots3-k40-t0.2"
    # k = 40 > 30 bank images: every bank image votes, with weight exp(cosine / T)
    sims = F.normalize(test.double(), dim=1) @ F.normalize(bank.double(), dim=1).T
    votes = torch.exp(sims / 0.2) @ F.one_hot(bank_labels, 10).double()
    expected = per_class(votes, test_labels, 10)
    assert saved["per_class_acc"] == pytest.approx(expected)
    assert saved["top1"] == pytest.approx(float(np.mean(expected)))
    top5 = (votes.topk(5, dim=1).indices == test_labels[:, None]).any(1)
    assert saved["top5"] == pytest.approx(100.0 * float(top5.double().mean()))
    assert saved["settings"]["knn"] == {"k": 40, "k_used": 30, "temperature": 0.2,
                                        "distance": "cosine"}
    assert saved["settings"]["feature_cache"] == {
        split: {"path": None, "reused": False, "num_images": n, "dim": bank.shape[1]}
        for split, n in (("train", 30), ("test", 400))}
    assert "weighted kNN (k=40, T=0.2, bank shots3, 30 images) on fake-ep=0.ckpt" in logged(lines)
    assert any(s.startswith("checkpoint: ") for s in lines)
