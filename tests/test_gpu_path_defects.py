"""Defects found by reading the GPU path (issue 17, item 3), each tested as far as a CPU can.

What the CPU cannot show, and is therefore not tested here: real CUDA stream ordering and the
allocator race of the DALI output copy (its code path is checked with recording stand-ins for
torch.cuda and DALI's ``feed_ndarray``); that the removed host synchronisations actually stop
stalling a GPU queue (here: the functions run on ``meta`` tensors, where any data-dependent
shape, ``.item()``, ``float()`` or ``bool()`` of a tensor raises, and logged values are checked
to be tensors that Lightning keeps on the CPU); the speed of the fused EMA update.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from torch import nn
from torchvision import models

from solo_multiview.config.schema import ConfigError
from solo_multiview.data.dali.pairing import PairingSpec, draw_partner_batch
from solo_multiview.data.dali.sampling import EpochSampler
from solo_multiview.data.dali.sources import EncodedFiles
from solo_multiview.eval.checkpoint import load_pretrained_backbone
from solo_multiview.hosts import builtin
from solo_multiview.hosts.backbones import build_backbone, build_backbone_from_cfg
from solo_multiview.hosts.online_knn import OnlineKNN
from solo_multiview.hosts.optim import ema_update
from solo_multiview.hosts.solo_compat import apply_backbone_stem, drop_unlabelled_before
from solo_multiview.losses.band_filter import BandFilter
from solo_multiview.losses.mv_dhel import mv_dhel_loss
from solo_multiview.losses.mv_infonce import mv_infonce_loss
from solo_multiview.losses.mv_mocov2plus import mv_mocov2plus_loss
from solo_multiview.losses.mv_simclr import mv_nt_xent
from solo_multiview.losses.polyview import polyview_loss
from tests.helpers import tiny_cfg


# ============================================================ 1. DALI output copy on a stream
class FakeStream:
    """Records what is asked of a CUDA stream."""

    def __init__(self, name: str, events: list) -> None:
        self.name, self.events = name, events
        self.device = torch.device("cpu")

    def wait_stream(self, other: FakeStream) -> None:
        self.events.append(("wait_stream", self.name, other.name))

    def synchronize(self) -> None:
        self.events.append(("synchronize", self.name))


class FakeDaliTensor:
    """DALI's TensorGPU as ``feed_ndarray`` sees it: ``shape()`` and data to copy."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def shape(self) -> list:
        return list(self.array.shape)


class FakeOutput:
    def __init__(self, value) -> None:
        self.value = value

    def as_tensor(self):
        return self.value


@pytest.fixture
def recorded_streams(monkeypatch):
    """torch.cuda's stream calls, allocation and ``record_stream`` replaced by recorders."""
    events: list = []
    copy_stream, consumer = FakeStream("copy", events), FakeStream("consumer", events)
    current = [consumer]

    @contextlib.contextmanager
    def stream(s):
        events.append(("enter", s.name))
        current.append(s)
        try:
            yield
        finally:
            current.pop()
            events.append(("exit", s.name))

    real_empty = torch.empty

    def empty(*args, **kwargs):
        events.append(("alloc", current[-1].name))
        return real_empty(*args, **kwargs)

    def feed(tensor, out, cuda_stream=None):
        events.append(("feed", cuda_stream.name if cuda_stream is not None else None))
        out.copy_(torch.from_numpy(tensor.array))
        return out

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current[-1])
    monkeypatch.setattr(torch.cuda, "stream", stream)
    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch.Tensor, "record_stream",
                        lambda self, s: events.append(("record_stream", s.name)), raising=False)
    return SimpleNamespace(events=events, copy=copy_stream, consumer=consumer, feed=feed)


COPY_EVENTS = [("enter", "copy"), ("alloc", "copy"), ("feed", "copy"), ("exit", "copy"),
               ("wait_stream", "consumer", "copy"), ("record_stream", "consumer")]


def test_dali_output_is_allocated_and_filled_on_the_copy_stream_and_awaited(recorded_streams):
    """The output block comes from the copy stream's pool, the copy runs there, the consuming
    stream waits for it on the device and the block is recorded as used by the consumer."""
    from solo_multiview.data.dali.loader import copy_on_stream

    array = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    out = copy_on_stream(FakeDaliTensor(array), recorded_streams.copy, recorded_streams.feed)
    assert recorded_streams.events == COPY_EVENTS
    assert torch.equal(out, torch.from_numpy(array))


def test_dali_batch_conversion_uses_the_stream_ordered_copy(recorded_streams, monkeypatch):
    """``DaliPretrainLoader._to_batch`` in GPU mode: every crop output goes through the
    stream-ordered copy, the host waits for the copy stream only (DALI reuses its buffers at the
    next run), never for the training stream; repeated slots are cloned."""
    pytorch_plugin = pytest.importorskip("nvidia.dali.plugin.pytorch")
    from solo_multiview.data.dali.loader import DaliPretrainLoader

    monkeypatch.setattr(pytorch_plugin, "feed_ndarray", recorded_streams.feed)
    loader = object.__new__(DaliPretrainLoader)
    loader._copy_stream = recorded_streams.copy
    loader._targets = torch.arange(10) * 10
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal((3, 3, 4, 4)).astype(np.float32) for _ in range(2)]
    outputs = [FakeOutput(FakeDaliTensor(a)) for a in arrays]
    outputs.append(FakeOutput(np.array([[4], [7], [2]], dtype=np.int64)))
    indexes, crops, targets = loader._to_batch(outputs, [0, 1, 1])
    events = recorded_streams.events
    assert events == COPY_EVENTS + COPY_EVENTS + [("synchronize", "copy")]
    assert ("synchronize", "consumer") not in events
    assert indexes.tolist() == [4, 7, 2] and targets.tolist() == [40, 70, 20]
    assert [torch.equal(c, torch.from_numpy(arrays[s])) for c, s in zip(crops, [0, 1, 1])] \
        == [True] * 3
    assert crops[1].data_ptr() != crops[2].data_ptr()


# ============================================================ 2. the stem: backbone.stem keys
def write_image_list(folder: Path, n: int = 20, size: int = 32, classes: int = 4) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        rel = Path(f"c{i % classes}") / f"{i:03d}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / rel)
        lines.append(f"{rel.as_posix()} {i % classes}")
    split = folder / "train.txt"
    split.write_text("\n".join(lines) + "\n")
    return split


def cifar_image_list_cfg(tmp_path: Path, **backbone):
    """CIFAR-like 32x32 images read as an ``image_list`` with a ResNet-18."""
    root = tmp_path / "images"
    split = write_image_list(root)
    cfg = tiny_cfg(tmp_path, overrides=["backbone.name=resnet18"])
    cfg.backbone.kwargs = {}
    cfg.backbone.update(backbone)
    cfg.data.dataset = "image_list"
    cfg.data.train_path = str(root)
    cfg.data.long_tail.update({"profile": "none", "split_file": str(split)})
    for entry in cfg.augmentations:
        entry.crop_size = 32
    return cfg


def is_cifar_stem(backbone: nn.Module, padding: int) -> bool:
    conv = backbone.conv1
    return (conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (padding, padding) and isinstance(backbone.maxpool, nn.Identity))


def is_imagenet_stem(backbone: nn.Module) -> bool:
    conv = backbone.conv1
    return (conv.kernel_size == (7, 7) and conv.stride == (2, 2)
            and isinstance(backbone.maxpool, nn.MaxPool2d))


@pytest.mark.parametrize("padding", [1, 2])
def test_image_list_with_stem_cifar_trains_the_cifar_stem_and_evaluates_with_it(tmp_path,
                                                                             padding):
    """An image_list CIFAR config with ``backbone.stem: cifar`` gets the 3x3 stride-1 stem (the
    padding from ``backbone.cifar_stem_padding``) and no max-pool; args.json records both keys
    and evaluation rebuilds the same stem, loading with strict keys."""
    from solo_multiview.training.checkpointing import write_args
    from solo_multiview.training.pretrain import prepare_pretrain

    cfg = cifar_image_list_cfg(tmp_path, stem="cifar", cifar_stem_padding=padding)
    run = prepare_pretrain(cfg)
    backbone = run.model.backbone
    assert is_cifar_stem(backbone, padding)

    folder = tmp_path / "run"
    folder.mkdir()
    write_args(run.cfg, folder)
    args = json.loads((folder / "args.json").read_text())
    assert args["backbone"]["stem"] == "cifar"
    assert args["backbone"]["cifar_stem_padding"] == padding
    torch.save({"state_dict": run.model.state_dict()}, folder / "last.ckpt")

    loaded, _ = load_pretrained_backbone(folder / "last.ckpt")  # strict: raises on any mismatch
    assert is_cifar_stem(loaded, padding)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), backbone.eval()(x))


def test_image_list_with_stem_auto_keeps_solo_learns_rule(tmp_path):
    """``auto`` is today's rule: an image_list gets the ImageNet stem."""
    from solo_multiview.training.pretrain import prepare_pretrain

    run = prepare_pretrain(cifar_image_list_cfg(tmp_path))
    assert is_imagenet_stem(run.model.backbone)
    assert run.cfg.backbone.stem == "auto" and run.cfg.backbone.cifar_stem_padding == 2


def test_stem_padding_changes_conv1_and_the_stem_can_be_forced_either_way():
    assert build_backbone("resnet18", "image_list", stem="cifar",
                          cifar_stem_padding=1).conv1.padding == (1, 1)
    assert build_backbone("resnet18", "image_list", stem="cifar").conv1.padding == (2, 2)
    assert is_cifar_stem(build_backbone("resnet18", "cifar10"), 2)
    assert is_imagenet_stem(build_backbone("resnet18", "cifar10", stem="imagenet"))
    assert is_imagenet_stem(build_backbone("resnet18", "image_list"))


def test_an_old_args_json_without_stem_keys_means_auto():
    old = {"backbone": {"name": "resnet18", "kwargs": {}}, "data": {"dataset": "cifar10"}}
    assert is_cifar_stem(build_backbone_from_cfg(old), 2)
    old["data"]["dataset"] = "image_list"
    assert is_imagenet_stem(build_backbone_from_cfg(old))


def test_a_stem_for_the_convnet_is_refused_not_ignored(tmp_path):
    with pytest.raises(ConfigError, match="backbone.stem"):
        build_backbone("convnet", "digits", {"width": 4, "depth": 2}, stem="cifar")
    with pytest.raises(ConfigError, match="cifar_stem_padding"):
        build_backbone("convnet", "digits", {"width": 4, "depth": 2}, cifar_stem_padding=1)


def test_eval_rejects_a_bad_stem_in_args_json(tmp_path):
    net = build_backbone("resnet18", "cifar10")
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()}},
               tmp_path / "last.ckpt")
    args = {"backbone": {"name": "resnet18", "stem": "tiny"}, "data": {"dataset": "cifar10"}}
    (tmp_path / "args.json").write_text(json.dumps(args))
    with pytest.raises(ValueError, match="backbone.stem"):
        load_pretrained_backbone(tmp_path / "last.ckpt")


def solo_built(dataset: str) -> nn.Module:
    """The backbone as solo-learn's BaseMethod builds it (solo/methods/base.py)."""
    net = models.resnet18(weights=None)
    net.fc = nn.Identity()
    if dataset in ["cifar10", "cifar100"]:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
        net.maxpool = nn.Identity()
    return net


def solo_module(dataset: str) -> SimpleNamespace:
    online = solo_built(dataset)
    momentum = copy.deepcopy(online)
    for p in momentum.parameters():
        p.requires_grad = False
    return SimpleNamespace(backbone=online, momentum_backbone=momentum)


def stem_cfg(name="resnet18", dataset="image_list", **backbone):
    return OmegaConf.create({"backbone": {"name": name, **backbone}, "data": {"dataset": dataset}})


def test_solo_host_stem_is_applied_after_solo_learn_builds_the_backbone():
    """The solo host's fix (solo-learn itself is not installed here: its construction is
    re-enacted from solo/methods/base.py)."""
    module = solo_module("image_list")
    assert apply_backbone_stem(module, stem_cfg(stem="cifar", cifar_stem_padding=1))
    for net in (module.backbone, module.momentum_backbone):
        assert is_cifar_stem(net, 1)
    assert torch.equal(module.momentum_backbone.conv1.weight, module.backbone.conv1.weight)
    assert not module.momentum_backbone.conv1.weight.requires_grad
    assert module.backbone.conv1.weight.requires_grad

    module = solo_module("cifar10")
    assert apply_backbone_stem(module, stem_cfg(dataset="cifar10", stem="imagenet"))
    assert is_imagenet_stem(module.backbone) and is_imagenet_stem(module.momentum_backbone)

    module = solo_module("cifar10")
    conv = module.backbone.conv1
    assert not apply_backbone_stem(module, stem_cfg(dataset="cifar10"))  # auto, 2: untouched
    assert module.backbone.conv1 is conv
    with pytest.raises(ConfigError, match="backbone.stem"):
        apply_backbone_stem(SimpleNamespace(backbone=nn.Linear(2, 2)),
                            stem_cfg(name="convnet", stem="cifar"))


# ============================================================ 3. no per-step host synchronisation
def reference_topk(logits, targets, ks):
    """The previous implementation (boolean indexing)."""
    valid = targets != -1
    logits, targets = logits[valid], targets[valid]
    if targets.numel() == 0:
        return [torch.zeros(()) for _ in ks]
    top = logits.topk(max(ks), dim=1).indices
    hits = top == targets[:, None]
    return [hits[:, :k].any(dim=1).float().mean() * 100 for k in ks]


@pytest.mark.parametrize("unlabelled", [0, 5, 12])
def test_classifier_accuracy_ignoring_minus_one_is_unchanged(unlabelled):
    g = torch.Generator().manual_seed(unlabelled)
    logits = torch.randn(12, 7, generator=g)
    targets = torch.randint(0, 7, (12,), generator=g)
    targets[torch.randperm(12, generator=g)[:unlabelled]] = -1
    got = builtin.topk_accuracy(logits, targets, (1, 5))
    for a, b in zip(got, reference_topk(logits, targets, (1, 5))):
        torch.testing.assert_close(a, b)


def test_classifier_accuracy_has_no_data_dependent_shape():
    """On meta tensors any boolean indexing, .item() or float() raises."""
    logits = torch.empty(12, 7, device="meta")
    targets = torch.empty(12, dtype=torch.long, device="meta")
    acc1, acc5 = builtin.topk_accuracy(logits, targets, (1, 5))
    assert acc1.shape == acc5.shape == () and acc1.device.type == "meta"


def test_online_knn_bank_takes_all_rows_and_drops_unlabelled_ones_when_read():
    from solo_multiview.hosts.multiview_step import MultiViewStepMixin

    calls = []
    host = SimpleNamespace(knn_eval=True, knn=lambda **kw: calls.append(kw))
    feats = torch.empty(8, 4, device="meta")
    targets = torch.empty(8, dtype=torch.long, device="meta")
    MultiViewStepMixin.update_online_knn(host, feats, targets)  # meta: nothing data-dependent
    assert calls[0]["train_features"].shape == (8, 4)

    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(40, 6, generator=g), torch.randn(10, 6, generator=g)
    train_y, test_y = torch.randint(0, 3, (40,), generator=g), torch.randint(0, 3, (10,),
                                                                            generator=g)
    unlabelled = train_y.clone()
    unlabelled[::3] = -1
    with_minus_one, filtered = OnlineKNN(k=5), OnlineKNN(k=5)
    with_minus_one.update(train_features=train, train_targets=unlabelled)
    keep = unlabelled != -1
    filtered.update(train_features=train[keep], train_targets=unlabelled[keep])
    for knn in (with_minus_one, filtered):
        knn.update(test_features=test, test_targets=test_y)
    assert [float(v) for v in with_minus_one.compute()] == [float(v) for v in filtered.compute()]


def test_solo_knn_compute_drops_unlabelled_rows_first():
    """The compat wrapper of solo-learn's WeightedKNNClassifier.compute, on a stand-in."""
    seen = {}

    class Bank:
        def __init__(self):
            self.train_features = [torch.ones(3, 2), torch.zeros(2, 2)]
            self.train_targets = [torch.tensor([0, -1, 1]), torch.tensor([-1, -1])]

        @drop_unlabelled_before
        def compute(self):
            seen["features"] = [f.clone() for f in self.train_features]
            seen["targets"] = [t.clone() for t in self.train_targets]
            return 1.0

    assert Bank().compute() == 1.0
    assert [t.tolist() for t in seen["targets"]] == [[0, 1]]
    assert seen["features"][0].shape == (2, 2)
    assert drop_unlabelled_before(Bank.compute) is Bank.compute  # idempotent

    bank = Bank()
    bank.train_targets = [torch.tensor([-1, -1, -1]), torch.tensor([-1, -1])]
    bank.compute()
    assert seen["targets"] == [] and seen["features"] == []


def test_tau_and_skipped_batches_are_logged_as_cpu_tensors(monkeypatch):
    """A Python float logged every step is copied to the device by Lightning (a copy that waits
    for the queue); a CPU tensor stays on the CPU."""
    import lightning.pytorch as pl

    from solo_multiview.hosts.guard import NonFiniteGuard

    logged = {}
    monkeypatch.setattr(pl.LightningModule, "log",
                        lambda self, name, value, *a, **k: logged.__setitem__(name, value))

    class Momentum(builtin.BaseMomentumMethod):
        def __init__(self):  # only what on_train_batch_end reads
            pl.LightningModule.__init__(self)
            self.momentum_updater = builtin.MomentumUpdater(0.99, 1.0)
            self.last_step = 0
            self.online, self.target = nn.Linear(2, 2), nn.Linear(2, 2)

        @property
        def momentum_pairs(self):
            return [(self.online, self.target)]

    model = Momentum()
    model._trainer = SimpleNamespace(global_step=1, estimated_stepping_batches=10)
    model.on_train_batch_end(None, None, 0)
    assert isinstance(logged["tau"], torch.Tensor) and logged["tau"].device.type == "cpu"
    assert float(logged["tau"]) == pytest.approx(0.99)

    module = SimpleNamespace(nonfinite_skipped=3, buffers=lambda: [],
                             log=lambda name, value, *a, **k: logged.__setitem__(name, value))
    trainer = SimpleNamespace(global_step=1, estimated_stepping_batches=10)
    NonFiniteGuard("skip").on_train_batch_end(trainer, module, None, None, 0)
    value = logged["train_skipped_batches"]
    assert isinstance(value, torch.Tensor) and value.device.type == "cpu" and float(value) == 3


# ============================================================ 4. fused EMA update
def ema_loop(online: nn.Module, target: nn.Module, tau: float) -> None:
    """The previous implementation, parameter by parameter."""
    with torch.no_grad():
        for p_online, p_target in zip(online.parameters(), target.parameters()):
            p_target.mul_(tau).add_(p_online.detach(), alpha=1 - tau)


def test_fused_ema_equals_the_parameter_loop_and_leaves_buffers():
    torch.manual_seed(0)
    online = build_backbone("convnet", "digits", {"width": 4, "depth": 3})
    target = copy.deepcopy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
        for b in online.buffers():
            if b.is_floating_point():
                b.add_(1.0)
    fused, looped = copy.deepcopy(target), copy.deepcopy(target)
    for _ in range(3):
        ema_update(online, fused, 0.996)
        ema_loop(online, looped, 0.996)
    for (name, a), b in zip(fused.state_dict().items(), looped.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(fused.buffers(), target.buffers()):  # buffers are not averaged
        assert torch.equal(a, b)
    ema_update(nn.Sequential(), nn.Sequential(), 0.5)  # nothing to update


def test_fused_ema_runs_on_meta_tensors():
    online = nn.Linear(3, 3, device="meta")
    ema_update(online, nn.Linear(3, 3, device="meta"), 0.9)


# ============================================================ 5. MTTV partner feed
def write_files(folder: Path, n: int) -> list:
    rng = np.random.default_rng(3)
    paths = []
    for i in range(n):
        path = folder / f"f{i:02d}.bin"
        path.write_bytes(rng.integers(0, 256, int(rng.integers(5, 40)), dtype=np.uint8).tobytes())
        paths.append(path)
    return paths


def test_partner_feed_bytes_and_order_are_unchanged_read_once_in_parallel(tmp_path,
                                                                         monkeypatch):
    from solo_multiview.data.dali.loader import ScheduledFeed

    paths = write_files(tmp_path, 12)
    files = EncodedFiles(SimpleNamespace(paths=paths), np.arange(12)[::-1].copy())
    threads = set()
    read = EncodedFiles._read_file

    def recording_read(self, position):
        threads.add(threading.get_ident())
        return read(self, position)

    monkeypatch.setattr(EncodedFiles, "_read_file", recording_read)
    sampler = EpochSampler(12, 4, seed=5, shard_id=0, num_shards=1)
    pairing = PairingSpec(num_pairs=3, seed=5)
    feed = ScheduledFeed(sampler, files, pairing, start_epoch=0, shard_id=0, num_shards=1)
    iterations = range(2 * feed.per_epoch)
    outputs = [feed(i) for i in iterations]

    listed = paths[::-1]  # position p is source index 11 - p
    for i, out in zip(iterations, outputs):
        epoch, batch = divmod(i, feed.per_epoch)
        positions = sampler.batch_positions(epoch, batch, 0, 1)
        partners = draw_partner_batch(pairing, positions, epoch, 0, sampler.size)
        expected = [positions] + [partners[:, k] for k in range(3)]
        assert len(out) == 5 and np.array_equal(out[-1], positions)
        for images, wanted in zip(out[:-1], expected):
            assert [a.tobytes() for a in images] == [listed[p].read_bytes() for p in wanted]
    assert files.files_read == 12  # every file once, however often it was fed
    assert threads - {threading.get_ident()}  # the first batch's files: read by worker threads


def test_loader_shares_one_feed_across_pipelines_and_drops_it_when_pickled(tmp_path):
    pytest.importorskip("nvidia.dali")
    from solo_multiview.data.dali import DaliPretrainLoader, parse_augmentations
    from solo_multiview.data.sources import ImageListSource

    root = tmp_path / "images"
    split = write_image_list(root, n=8, size=16)
    source = ImageListSource(root, split)
    entry = {"crop_size": 16, "num_crops": 1, "rrc": {"enabled": False}}
    loader = DaliPretrainLoader(source, np.arange(8), parse_augmentations([entry], "image_list"),
                                4, pairing=PairingSpec(num_pairs=2), device="cpu", num_threads=2)
    feed = loader._image_feed()
    assert isinstance(feed, EncodedFiles) and loader._image_feed() is feed
    assert loader.__getstate__()["_images"] is None


# ============================================================ 6. similarities in float32
class RecordingBand(BandFilter):
    """The band filter, recording every mask it returns."""

    masks: list = []

    def keep(self, sim):
        mask = super().keep(sim)
        RecordingBand.masks.append(mask)
        return mask


def near_threshold_views(k=4, b=32, d=8, seed=0):
    """Views whose cosines are spread over [-1, 1], many near 0.1 and 0.9."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(b, d, generator=g)
    return [base + 0.6 * torch.randn(b, d, generator=g) for _ in range(k)]


def run_twice(fn, *inputs):
    """(loss, stats, masks) in float32 and under bfloat16 autocast, same inputs."""
    out = []
    for autocast in (False, True):
        RecordingBand.masks = []
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, stats = fn(*inputs)
        out.append((loss, stats, list(RecordingBand.masks)))
    return out


def assert_same(fp32, autocast):
    (loss32, stats32, masks32), (loss_ac, stats_ac, masks_ac) = fp32, autocast
    assert loss_ac.dtype == torch.float32
    torch.testing.assert_close(loss_ac, loss32, rtol=1e-6, atol=1e-6)
    assert masks32 and len(masks32) == len(masks_ac)
    assert all(torch.equal(a, b) for a, b in zip(masks32, masks_ac))
    for key in stats32:
        torch.testing.assert_close(stats_ac[key].float(), stats32[key].float(), rtol=1e-6,
                                   atol=1e-6)


BAND = RecordingBand(0.1, 0.9)


def test_mv_simclr_similarities_are_float32_under_autocast():
    views = near_threshold_views()
    z = torch.cat(views)
    indexes = torch.arange(32).repeat(4)
    assert_same(*run_twice(lambda z: mv_nt_xent(z, indexes, 0.2, BAND), z))
    # a bfloat16 input (what an autocast projector gives) is promoted, not computed in bf16
    z16 = z.bfloat16()
    ref = mv_nt_xent(z16.float(), indexes, 0.2, BAND)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = mv_nt_xent(z16, indexes, 0.2, BAND)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-6, atol=1e-6)


def test_mv_mocov2plus_similarities_are_float32_under_autocast():
    views = near_threshold_views(k=3)
    g = torch.Generator().manual_seed(1)
    q = torch.stack(views)
    k = q + 0.3 * torch.randn(q.shape, generator=g)
    queue = F.normalize(q[:, :16].transpose(1, 2) + 0.5 * torch.randn(3, 8, 16, generator=g),
                        dim=1)
    assert_same(*run_twice(lambda q: mv_mocov2plus_loss(q, k, queue, 0.2, BAND), q))


@pytest.mark.parametrize("loss", [
    lambda v: polyview_loss(v, 0.2, "geometric", BAND),
    lambda v: polyview_loss(v, 0.2, "sufficient_statistics", BAND),
    lambda v: mv_infonce_loss(v, 0.2, BAND),
    lambda v: mv_dhel_loss(v, 0.2, BAND),
], ids=["polyview_geometric", "polyview_sufficient_statistics", "mv_infonce", "mv_dhel"])
def test_polyview_setup_similarities_are_float32_under_autocast(loss):
    assert_same(*run_twice(loss, torch.stack(near_threshold_views())))
