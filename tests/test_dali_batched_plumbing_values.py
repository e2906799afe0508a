"""Exact values of the DALI loader's plumbing and of the batched augmentation's draws.

- ``data/dali/loader.py``: what ``DaliPretrainLoader._build`` hands ``build_pipeline`` (inputs,
  seeds, shard split, threads), the copy stream of the GPU mode, the pipelines' positioning
  between epochs, the counters of an epoch, and what ``build_dali_pretrain_loader`` reads from the
  config; ``build_pipeline`` / ``reader_batches_per_epoch`` are stand-ins, so no DALI pipeline is
  built or run.
- ``data/dali/sampling.py``, ``pairing.py``, ``backend.py``: plain Python, exact values and whole
  error messages.
- ``data/dali/augment.py`` and ``pipeline._read``: the graph is traced with a recording stand-in
  for DALI's ``fn`` namespace, so every operator and argument of a view is asserted exactly.
- ``data/batched/augment.py``: ``sample_crop_boxes`` against the ``RandomResizedCrop`` formula
  recomputed from the same generator stream, and the pipeline's ops against per-image references
  on tiny 8x8 batches.
"""

from __future__ import annotations

import math
import re
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from solo_multiview.data.dali import backend as dali_backend
from solo_multiview.data.dali import loader as dali_loader
from solo_multiview.data.dali.backend import DaliDevice, device_kind, require_dali, resolve_device
from solo_multiview.data.dali.pairing import PairingSpec, draw_partners
from solo_multiview.data.dali.sampling import EpochSampler
from solo_multiview.data.sources import ArraySource, ImageListSource
from tests.helpers import ops_off_entry

dali = pytest.importorskip("nvidia.dali")

from solo_multiview.data.dali import augment as dali_augment  # noqa: E402
from solo_multiview.data.dali import pipeline as dali_pipeline  # noqa: E402
from solo_multiview.data.dali.spec import parse_augmentations  # noqa: E402


def raises(exc: type, message: str):
    """``pytest.raises`` matching the whole message."""
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


# ============================================================================ backend
def test_device_kind_auto_none_and_explicit_choices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_kind(None) == "cpu"
    assert device_kind("auto") == "cpu"
    assert device_kind("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_kind(None) == "gpu"
    assert device_kind("auto") == "gpu"
    assert device_kind("gpu") == "gpu"
    assert device_kind("cpu") == "cpu"


def test_device_kind_messages(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with raises(ValueError, "dali.device: unknown value 'tpu'; choose one of "
                            "['auto', 'cpu', 'gpu']"):
        device_kind("tpu")
    with raises(ValueError, "dali.device: 'gpu' but torch.cuda.is_available() is False (no "
                            "CUDA device or a CPU-only torch); use dali.device=cpu (or auto) "
                            "to run DALI's CPU pipeline"):
        device_kind("gpu")


def test_resolve_device_cpu_and_current_cuda_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert resolve_device("cpu") == DaliDevice("cpu", None)
    assert resolve_device("gpu") == DaliDevice("gpu", 3)
    assert resolve_device(None) == DaliDevice("gpu", 3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == DaliDevice("cpu", None)


def test_require_dali_message_without_dali(monkeypatch):
    assert require_dali() is dali
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    with pytest.raises(ImportError) as excinfo:
        require_dali()
    cause = excinfo.value.__cause__
    assert isinstance(cause, ImportError)
    assert str(excinfo.value) == (
        'data.format=dali needs NVIDIA DALI, which is not installed: run pip install -e '
        '".[dali]" (it installs nvidia-dali-cuda130; DALI\'s CPU mode needs no GPU), or use '
        f"data.format=image_folder. ({cause})"
    )
    assert dali_backend.INSTALL_HINT == 'pip install -e ".[dali]"'


# ============================================================================ loader (stand-ins)
class FakeOutput:
    """A DALI TensorList as the loader reads it (``as_tensor()``)."""

    def __init__(self, array) -> None:
        self.array = np.asarray(array)

    def as_tensor(self):
        return self.array


class FakePipe:
    """A built pipeline: ``run()`` logs its pipeline number and gives crops and positions."""

    def __init__(self, j: int, log: list) -> None:
        self.j, self.log = j, log

    def run(self):
        self.log.append(self.j)
        crop = np.full((2, 3, 1, 1), float(self.j), dtype=np.float32)
        return (FakeOutput(crop), FakeOutput(np.array([[self.j], [self.j + 1]])))


class Recorder:
    """Stand-ins for ``build_pipeline``, ``reader_batches_per_epoch``, ``resolve_device``."""

    def __init__(self, reader_runs=(4, 5, 6, 7)) -> None:
        self.builds: list = []
        self.runs: list = []
        self.reader_calls: list = []
        self.devices: list = []
        self.device = DaliDevice("cpu", None)
        self.reader_runs = list(reader_runs)

    def build_pipeline(self, inputs, specs, pairing, device, **kwargs):
        self.builds.append((inputs, specs, pairing, device, kwargs))
        return dali_pipeline.BuiltPipeline(FakePipe(len(self.builds) - 1, self.runs), [0, 0], 1)

    def reader_batches_per_epoch(self, pipe, batch_size):
        self.reader_calls.append((pipe.j, batch_size))
        return self.reader_runs[pipe.j % len(self.reader_runs)]

    def resolve_device(self, choice):
        self.devices.append(choice)
        return self.device


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(dali_pipeline, "build_pipeline", rec.build_pipeline)
    monkeypatch.setattr(dali_pipeline, "reader_batches_per_epoch", rec.reader_batches_per_epoch)
    monkeypatch.setattr(dali_loader, "resolve_device", rec.resolve_device)
    return rec


def array_source(n: int = 12) -> ArraySource:
    images = np.random.default_rng(1).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return ArraySource(images, np.arange(n) % 3)


def list_source(n: int = 16) -> ImageListSource:
    """An ImageListSource without files (the loader only reads paths, targets, classes)."""
    source = object.__new__(ImageListSource)
    source.paths = [f"/data/img{i}.png" for i in range(n)]
    source.targets = np.arange(n) % 2
    source.num_classes = 2
    return source


def specs(*entries):
    return parse_augmentations(list(entries) or [ops_off_entry(8)], "cifar10")


def make_loader(source=None, batch=2, **kwargs):
    source = array_source() if source is None else source
    kwargs.setdefault("device", "cpu")
    entries = kwargs.pop("entries", None) or [ops_off_entry(8)]
    return dali_loader.DaliPretrainLoader(source, np.arange(len(source.targets)),
                                          specs(*entries), batch, **kwargs)


def test_derived_seed_is_seed_sequence_state_shifted_once():
    expected = int(np.random.SeedSequence([3, 1, 4]).generate_state(1)[0]) >> 1
    assert dali_loader._derived_seed(3, 1, 4) == expected
    assert dali_loader._derived_seed(np.int64(3), 1, 4) == expected
    assert 0 <= expected < 2 ** 31


def test_cfg_int_reads_the_key_or_the_default():
    assert dali_loader._cfg_int(None, "k", 5) == 5
    assert dali_loader._cfg_int({"k": None}, "k", 5) == 5
    assert dali_loader._cfg_int({}, "k", None) is None
    assert dali_loader._cfg_int({"k": "7"}, "k", 5) == 7
    assert dali_loader._cfg_int(OmegaConf.create({"k": 3}), "k", 5) == 3


def test_build_feed_pipelines_get_their_batches_seeds_and_shards(recorder):
    loader = make_loader(batch=2, num_threads=7, pipelines=4, seed=9, shard_id=1, num_shards=2,
                         prefetch_queue_depth=3)
    assert loader.uses_reader is False
    # 12 images over 2 ranks: 6 each, 3 batches of 2: 3 pipelines (not 4), 7 // 3 = 2 threads
    loader._build(5, 1, 2)
    assert recorder.devices == ["cpu"]
    assert len(recorder.builds) == 3
    for j, (inputs, got_specs, pairing, device, kwargs) in enumerate(recorder.builds):
        assert got_specs is loader.specs and pairing is None and device == DaliDevice("cpu", None)
        assert kwargs == {
            "batch_size": 2, "num_threads": 2,
            "seed": dali_loader._derived_seed(9, 1, 5, j), "prefetch_queue_depth": 3,
            "shard_id": 1 * 3 + j, "num_shards": 6,
            "reader_seed": dali_loader._derived_seed(9, 5),
        }
        assert type(kwargs["num_threads"]) is int and type(kwargs["num_shards"]) is int
        assert inputs.files is None and inputs.labels is None
        assert inputs.decoded is True and inputs.num_images == 1
        feed = inputs.feed
        assert isinstance(feed, dali_loader.ScheduledFeed)
        assert feed.sampler is loader.sampler and feed.images is loader._images
        assert (feed.pairing, feed.start_epoch, feed.shard_id, feed.num_shards) == (None, 5, 1, 2)
        assert (feed.pipeline, feed.pipelines, feed.per_epoch) == (j, 3, 1)
    assert recorder.reader_calls == []
    assert loader._runs_per_epoch == [1, 1, 1]
    assert loader._key == (1, 2) and loader._pipe_epoch == 5 and loader._runs == [0, 0, 0]
    assert loader._device == DaliDevice("cpu", None) and loader._copy_stream is None
    assert [b.pipe.j for b in loader._pipes] == [0, 1, 2]


def test_build_partner_feed_passes_pairing_and_encoded_images(recorder, monkeypatch):
    class EncodedFeed:
        decoded = False

    feed_images = EncodedFeed()
    monkeypatch.setattr(dali_loader, "image_feed", lambda source, indexes: feed_images)
    pairing = PairingSpec(num_pairs=2)
    loader = make_loader(source=list_source(16), batch=2, num_threads=1, pairing=pairing,
                         shard_id=0, num_shards=1)
    assert loader.uses_reader is False  # partner images: Python picks the positions
    loader._build(0, 0, 1)
    (inputs, _, got_pairing, _, kwargs), = recorder.builds
    assert got_pairing is pairing
    assert inputs.decoded is False and inputs.num_images == 3
    assert inputs.feed.pairing is pairing and inputs.feed.images is feed_images
    assert (kwargs["shard_id"], kwargs["num_shards"]) == (0, 1)


def test_build_reader_pipelines_read_parts_of_the_shard(recorder):
    source = list_source(16)
    loader = make_loader(source=source, batch=2, num_threads=2, seed=4, shard_id=1,
                         num_shards=2)
    assert loader.uses_reader is True
    # one reader per thread on the CPU: 2 pipelines, 16 / (2 * 2) = 4 each, 2 batches each
    assert len(loader) == 4
    loader._build(3, 1, 2)
    assert len(recorder.builds) == 2
    for j, (inputs, _, _, _, kwargs) in enumerate(recorder.builds):
        assert inputs.files == [str(p) for p in source.paths]
        assert inputs.labels == list(range(16)) and inputs.feed is None
        assert (kwargs["shard_id"], kwargs["num_shards"], kwargs["num_threads"]) == (2 + j, 4, 1)
        assert kwargs["seed"] == dali_loader._derived_seed(4, 1, 3, j)
        assert kwargs["reader_seed"] == dali_loader._derived_seed(4, 3)
    assert recorder.reader_calls == [(0, 2), (1, 2)]
    assert loader._runs_per_epoch == [4, 5]
    assert loader._runs == [0, 0]


def test_build_on_the_gpu_makes_a_copy_stream_on_the_pipelines_device(recorder, monkeypatch):
    streams = []
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: streams.append(device) or "stream")
    recorder.device = DaliDevice("gpu", 1)
    loader = make_loader(num_threads=1)
    loader._build(0, 0, 1)
    assert streams == [torch.device("cuda", 1)]
    assert loader._copy_stream == "stream" and loader._device == DaliDevice("gpu", 1)
    assert recorder.builds[0][3] == DaliDevice("gpu", 1)


def test_position_at_reuses_continues_or_rebuilds(recorder):
    loader = make_loader(source=list_source(16), batch=2, num_threads=2, shard_id=0,
                         num_shards=1)
    recorder.reader_runs = [6, 7]  # padded reader batches per epoch of pipelines 0 and 1
    # 16 images, 2 readers of 8: 4 batches each, 8 in all
    assert len(loader) == 8
    loader._position_at(0, 0, 1)
    assert len(recorder.builds) == 2 and loader._pipe_epoch == 0
    loader._position_at(0, 0, 1)  # untouched pipelines at the epoch's start: kept
    assert len(recorder.builds) == 2 and recorder.runs == []
    batches = list(iter(loader))
    assert len(batches) == 8 and recorder.runs == [0, 1] * 4
    assert loader._runs == [4, 4] and loader._finished is True and loader.sampler.epoch == 1
    # the next epoch continues: the padding batches of each reader run first
    del recorder.runs[:]
    loader._position_at(1, 0, 1)
    assert len(recorder.builds) == 2
    assert recorder.runs == [0, 0, 1, 1, 1]
    assert loader._pipe_epoch == 1 and loader._runs == [0, 0] and loader._finished is False
    # a partly used epoch is rebuilt at the requested epoch
    next(iter(loader))
    assert loader._runs == [1, 0]
    loader._position_at(1, 0, 1)
    assert len(recorder.builds) == 4 and loader._pipe_epoch == 1 and loader._runs == [0, 0]
    # another shard: rebuilt even at the epoch's start
    loader._position_at(1, 1, 2)
    assert len(recorder.builds) == 6 and loader._key == (1, 2)
    # two epochs on, or the same epoch again after finishing it: rebuilt
    loader._position_at(3, 1, 2)
    assert len(recorder.builds) == 8 and loader._pipe_epoch == 3


def test_position_at_after_a_finished_epoch_skips_only_one_epoch_ahead(recorder):
    loader = make_loader(source=list_source(16), batch=2, num_threads=2, shard_id=0,
                         num_shards=1)
    recorder.reader_runs = [4, 4]
    loader.sampler.set_epoch(2)
    list(iter(loader))
    assert loader.sampler.epoch == 3 and loader._finished is True
    loader._position_at(2, 0, 1)  # the finished epoch again: rebuilt, not continued
    assert len(recorder.builds) == 4 and loader._pipe_epoch == 2 and loader._finished is False
    list(iter(loader))
    loader._position_at(4, 0, 1)  # epoch 2 finished, 4 asked: rebuilt
    assert len(recorder.builds) == 6 and loader._pipe_epoch == 4


def test_epoch_yields_batches_and_moves_the_sampler_on_only_when_unchanged(recorder):
    loader = make_loader(batch=2, num_threads=2, shard_id=0, num_shards=1)
    assert len(loader) == 6
    it = iter(loader)
    first = next(it)
    indexes, crops, targets = first
    assert indexes.dtype == torch.int64 and indexes.tolist() == [0, 1]
    assert targets.tolist() == [0, 1]
    # slots [0, 0]: the second use of an output is a copy, the first the output itself
    assert len(crops) == 2 and torch.equal(crops[0], crops[1])
    assert crops[0].data_ptr() != crops[1].data_ptr()
    rest = list(it)
    assert len(rest) == 5 and recorder.runs == [0, 1, 0, 1, 0, 1]
    assert loader._runs == [3, 3] and loader._finished is True
    assert loader.sampler.epoch == 1
    # set_epoch during the epoch: the sampler keeps the requested epoch
    it = iter(loader)
    loader.set_epoch(7)
    list(it)
    assert loader.sampler.epoch == 7


def test_to_batch_copies_later_uses_of_an_output(monkeypatch):
    loader = make_loader(num_threads=1)
    a = torch.arange(8, dtype=torch.float32).reshape(2, 1, 2, 2)
    b = a + 10
    oa, ob = FakeOutput(a.numpy()), FakeOutput(b.numpy())
    made = {id(oa): a, id(ob): b}
    monkeypatch.setattr(loader, "_to_torch", lambda output: made[id(output)])
    batch = loader._to_batch([oa, ob, FakeOutput(np.array([[3], [5]]))], [1, 0, 1, 1])
    indexes, crops, targets = batch
    assert indexes.tolist() == [3, 5] and indexes.shape == (2,) and indexes.dtype == torch.int64
    assert targets.tolist() == [0, 2]
    assert [c.tolist() for c in crops] == [b.tolist(), a.tolist(), b.tolist(), b.tolist()]
    # the first use of an output is the converted tensor itself, later ones are copies
    assert crops[0] is b and crops[1] is a
    assert len({c.data_ptr() for c in crops}) == 4


def test_to_torch_is_a_copy_of_the_cpu_output():
    loader = make_loader(num_threads=1)
    array = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    out = loader._to_torch(FakeOutput(array))
    assert out.tolist() == array.tolist() and out.dtype == torch.float32
    array[0, 0, 0] = 99.0
    assert out[0, 0, 0].item() == 0.0


def test_fresh_loader_state_and_defaults(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    source = ArraySource(np.zeros((12, 8, 8, 3), np.uint8), np.array([0, 1] * 6, np.int32))
    source.num_classes = 4  # classes 2 and 3 have no image
    loader = dali_loader.DaliPretrainLoader(source, np.arange(12, dtype=np.int32), specs(), 4)
    assert loader.device_choice == "auto" and loader.num_pipelines == 2
    assert (loader.num_threads, loader.requested_pipelines, loader.prefetch_queue_depth,
            loader.seed, loader.sampler.seed) == (2, None, 2, 0, 0)
    assert loader.source_indexes.dtype == np.int64 and loader.targets.dtype == np.int64
    assert loader.class_counts.tolist() == [6, 6, 0, 0]
    assert loader._targets.dtype == torch.int64
    assert {k: loader.__dict__[k] for k in ("_pipes", "_key", "_pipe_epoch", "_runs",
                                            "_runs_per_epoch", "_finished", "_device",
                                            "_copy_stream", "_images")} == {
        "_pipes": [], "_key": None, "_pipe_epoch": -1, "_runs": [], "_runs_per_epoch": [],
        "_finished": False, "_device": None, "_copy_stream": None, "_images": None}
    assert loader._key is None and loader._device is None and loader._finished is False
    assert make_loader(pipelines=3, num_threads=1).num_pipelines == 3
    listed = list_source(4)
    listed.targets = np.array([1, 0, 1, 1], dtype=np.int32)
    loader = dali_loader.DaliPretrainLoader(listed, np.arange(4), specs(), 2, device="cpu")
    assert loader.targets.dtype == np.int64 and loader.class_counts.tolist() == [1, 3]


def test_loader_argument_messages(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    source = array_source()
    with raises(ValueError, "augmentations: the list is empty; give at least one pipeline"):
        dali_loader.DaliPretrainLoader(source, np.arange(12), [], 4, device="cpu")
    two = specs(ops_off_entry(8), ops_off_entry(8))
    with raises(ValueError, "augmentations: the pairs view scheme takes exactly one "
                            "augmentation entry (its strong augmentation; K is "
                            "method_kwargs.num_views), got 2 entries"):
        dali_loader.DaliPretrainLoader(source, np.arange(12), two, 4, device="cpu",
                                       pairing=PairingSpec(num_pairs=2))
    for key in ("num_threads", "pipelines", "prefetch_queue_depth"):
        with raises(ValueError, f"dali.{key} must be an int >= 1, got 0"):
            dali_loader.DaliPretrainLoader(source, np.arange(12), specs(), 4, device="cpu",
                                           **{key: 0})
    with raises(ValueError, "dali.device: 'gpu' but torch.cuda.is_available() is False (no "
                            "CUDA device or a CPU-only torch); use dali.device=cpu (or auto) "
                            "to run DALI's CPU pipeline"):
        dali_loader.DaliPretrainLoader(source, np.arange(12), specs(), 4, device="gpu")


def test_build_uses_the_given_shard_count(recorder):
    loader = make_loader(batch=2, num_threads=4, shard_id=0, num_shards=2)
    # the rank's own shard count (2: 3 batches) vs. the one passed (1: 6 batches)
    loader._build(0, 0, 1)
    assert len(recorder.builds) == 4 and loader._runs_per_epoch == [2, 2, 1, 1]


def test_scheduled_feed_batches_partners_and_read_many():
    sampler = EpochSampler(12, 2, seed=5)

    class Images:
        decoded = True

        def __init__(self) -> None:
            self.calls: list = []

        def __call__(self, positions):
            self.calls.append(("call", positions.tolist()))
            return positions * 10

    class ManyImages(Images):
        def read_many(self, groups):
            self.calls.append(("many", [g.tolist() for g in groups]))
            return [g * 100 for g in groups]

    pairing = PairingSpec(num_pairs=2, seed=3)
    images = Images()
    feed = dali_loader.ScheduledFeed(sampler, images, pairing, 2, 1, 2, pipeline=1, pipelines=2)
    # 6 images per rank: 3 batches of 2; pipeline 1 of 2 makes batch 1 only
    assert feed.per_epoch == 1 and feed.num_images == 3
    out = feed(1)  # epoch 2 + 1, batch 1
    positions = sampler.batch_positions(3, 1, 1, 2)
    partners = np.stack([draw_partners(pairing, int(i), 3, 1, 12) for i in positions])
    assert [o.tolist() for o in out] == [
        (positions * 10).tolist(), (partners[:, 0] * 10).tolist(),
        (partners[:, 1] * 10).tolist(), positions.tolist()]
    assert images.calls == [("call", positions.tolist()), ("call", partners[:, 0].tolist()),
                            ("call", partners[:, 1].tolist())]
    many = ManyImages()
    out = dali_loader.ScheduledFeed(sampler, many, None, 0, 1, 2)(2)
    positions = sampler.batch_positions(0, 2, 1, 2)
    assert many.calls == [("many", [positions.tolist()])]
    assert [o.tolist() for o in out] == [(positions * 100).tolist(), positions.tolist()]
    # partner="none": no partner images are read
    alone = dali_loader.ScheduledFeed(sampler, Images(), PairingSpec(2, partner="none"), 0, 0, 1)
    assert alone.pairing is None and alone.num_images == 1 and alone.per_epoch == 6
    # the feed counts the batches of its own shard count, not torch.distributed's
    assert dali_loader.ScheduledFeed(EpochSampler(12, 2), Images(), None, 0, 0, 3).per_epoch == 2


class LoaderRecorder:
    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def build_calls(monkeypatch):
    calls: dict = {"loads": 0}
    monkeypatch.setattr(dali_loader, "DaliPretrainLoader", LoaderRecorder)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def load(cfg):
        calls["loads"] += 1
        return "loaded source"

    def indexes(cfg, source):
        calls["indexes"] = source
        return "indexes"

    monkeypatch.setattr(dali_loader, "load_train_source", load)
    monkeypatch.setattr(dali_loader, "pretrain_indexes", indexes)
    return calls


def dali_cfg(**extra):
    cfg = {"data": {"dataset": "cifar100"}, "optimizer": {"batch_size": 6},
           "augmentations": [ops_off_entry(8)]}
    for key, value in extra.items():
        if key.startswith("data_"):
            cfg["data"][key[5:]] = value
        else:
            cfg[key] = value
    return OmegaConf.create(cfg)


def test_build_dali_pretrain_loader_reads_the_dali_node(build_calls):
    from solo_multiview.data.views import ViewSpec

    cfg = dali_cfg(seed=11, data_num_workers=3, data_bad_images="error",
                   dali={"device": "cpu", "num_threads": 5, "pipelines": 2,
                         "prefetch_queue_depth": 4})
    built = dali_loader.build_dali_pretrain_loader(cfg, views=ViewSpec(2), shard_id=1,
                                                   num_shards=3)
    assert build_calls["loads"] == 1 and build_calls["indexes"] == "loaded source"
    source, indexes, got_specs, batch = built.args
    assert (source, indexes, batch) == ("loaded source", "indexes", 6)
    assert got_specs == parse_augmentations([ops_off_entry(8)], "cifar100")
    assert got_specs != parse_augmentations([ops_off_entry(8)], "cifar10")
    assert built.kwargs == {"pairing": None, "device": "cpu", "num_threads": 5, "pipelines": 2,
                            "prefetch_queue_depth": 4, "seed": 11, "shard_id": 1,
                            "num_shards": 3}


def test_build_dali_pretrain_loader_defaults(build_calls):
    from solo_multiview.data.views import ViewSpec

    built = dali_loader.build_dali_pretrain_loader(dali_cfg(), "given source",
                                                   views=ViewSpec(2, scheme="pairs"))
    assert build_calls["loads"] == 0 and build_calls["indexes"] == "given source"
    assert built.args[0] == "given source"
    assert built.kwargs == {"pairing": PairingSpec(num_pairs=2, seed=0), "device": "auto",
                            "num_threads": 1, "pipelines": None, "prefetch_queue_depth": 2,
                            "seed": 0, "shard_id": None, "num_shards": None}
    # data.num_workers is the threads' default; an empty dali node keeps every default
    built = dali_loader.build_dali_pretrain_loader(
        dali_cfg(data_num_workers=3, seed=4, dali={"device": None}), "s", views=ViewSpec(2))
    assert built.kwargs == {"pairing": None, "device": "auto", "num_threads": 3,
                            "pipelines": None, "prefetch_queue_depth": 2, "seed": 4,
                            "shard_id": None, "num_shards": None}
    built = dali_loader.build_dali_pretrain_loader(dali_cfg(data_num_workers=0, dali={}), "s",
                                                   views=ViewSpec(2))
    assert built.kwargs["num_threads"] == 1


def test_build_dali_pretrain_loader_refusals(build_calls):
    from solo_multiview.data.views import ViewSpec

    with raises(ValueError, "data.bad_images=skip is not supported with data.format=dali "
                            "(DALI's decoder stops at an unreadable file); use "
                            "data.bad_images=error with DALI, or data.format=image_folder to "
                            "skip unreadable images"):
        dali_loader.build_dali_pretrain_loader(dali_cfg(data_bad_images="skip"), "s",
                                               views=ViewSpec(2))
    with raises(ValueError, "dali.device: 'gpu' but torch.cuda.is_available() is False (no "
                            "CUDA device or a CPU-only torch); use dali.device=cpu (or auto) "
                            "to run DALI's CPU pipeline"):
        dali_loader.build_dali_pretrain_loader(dali_cfg(dali={"device": "gpu"}), "s",
                                               views=ViewSpec(2))
    assert build_calls["loads"] == 0


# ============================================================================ sampling, pairing
def test_distributed_shard_reads_rank_and_world(monkeypatch):
    from solo_multiview.data.dali import sampling

    assert sampling.distributed_shard() == (0, 1)
    monkeypatch.setattr(sampling.dist, "is_available", lambda: True)
    monkeypatch.setattr(sampling.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(sampling.dist, "get_rank", lambda: 2)
    monkeypatch.setattr(sampling.dist, "get_world_size", lambda: 5)
    assert sampling.distributed_shard() == (2, 5)
    assert EpochSampler(20, 2).shard() == (2, 5)
    assert EpochSampler(20, 2).batches_per_epoch() == 2  # 20 / 5 = 4 each: 2 batches


def test_shard_bounds_are_dalis():
    from solo_multiview.data.dali.sampling import shard_bounds

    assert [shard_bounds(10, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]


def test_epoch_sampler_messages():
    with raises(ValueError, "optimizer.batch_size must be an int >= 1, got 0"):
        EpochSampler(10, 0)
    with raises(ValueError, "optimizer.batch_size must be an int >= 1, got True"):
        EpochSampler(10, True)
    with raises(ValueError, "give both shard_id and num_shards, or neither"):
        EpochSampler(10, 2, shard_id=0)
    with raises(ValueError, "shard_id must lie in [0, num_shards), got 2/2"):
        EpochSampler(10, 2, shard_id=2, num_shards=2)
    with raises(ValueError, "shard_id must lie in [0, num_shards), got -1/2"):
        EpochSampler(10, 2, shard_id=-1, num_shards=2)
    with raises(ValueError, "epoch must be >= 0, got -1"):
        EpochSampler(10, 2).set_epoch(-1)
    with raises(ValueError, "optimizer.batch_size: 4 is larger than a rank's share of the "
                            "training set (10 images after the long-tail selection over 3 "
                            "rank(s): 3 each)"):
        EpochSampler(10, 4).batches_per_epoch(3)
    with raises(ValueError, "optimizer.batch_size: 3 is larger than a rank's share of the "
                            "training set (10 images after the long-tail selection over 2 "
                            "rank(s) and 2 DALI pipelines: 2 each)"):
        EpochSampler(10, 3).batches_per_epoch(2, 2)


def test_epoch_sampler_defaults_and_orders():
    sampler = EpochSampler(10, 1)
    assert (sampler.size, sampler.batch_size, sampler.seed, sampler.epoch) == (10, 1, 0, 0)
    assert sampler.shard() == (0, 1) and len(sampler) == 10
    assert EpochSampler(10, 3, shard_id=1, num_shards=2).batches_per_epoch() == 1
    assert EpochSampler(10, 3, shard_id=1, num_shards=2).batches_per_epoch(1) == 3
    assert EpochSampler(12, 2).batches_per_epoch(1, 3) == 6
    sampler = EpochSampler(10, 2, seed=3, shard_id=1, num_shards=2)
    order = sampler.epoch_order(4, 1, 2)
    expected = np.random.default_rng([3, 4]).permutation(10)[5:10][:4]
    assert order.tolist() == expected.tolist() and order.dtype == np.int64
    assert sampler.batch_positions(4, 1, 1, 2).tolist() == expected[2:4].tolist()
    # the shard count passed, not the fixed one: 3 ranks of 3 or 4 images, 1 batch of 2
    other = sampler.epoch_order(4, 2, 3)
    assert other.tolist() == np.random.default_rng([3, 4]).permutation(10)[6:10][:2].tolist()


def test_draw_partners_values():
    spec = PairingSpec(num_pairs=3, seed=2)
    got = draw_partners(spec, 5, 1, 0, 7)
    assert got.dtype == np.int64
    assert got.tolist() == np.random.default_rng([2, 1, 0, 0, 5]).integers(0, 7, 3).tolist()
    alone = draw_partners(PairingSpec(num_pairs=3, partner="none"), 5, 1, 0, 7)
    assert alone.tolist() == [5, 5, 5] and alone.dtype == np.int64


def test_pairing_spec_and_order_messages():
    from solo_multiview.data.dali.pairing import mttv_order
    from solo_multiview.data.pairing import PARTNERS, VIEWS

    with raises(ValueError, "MTTV pairing: num_pairs (K) must be an int >= 1, got 0"):
        PairingSpec(num_pairs=0)
    with raises(ValueError, "MTTV pairing: num_pairs (K) must be an int >= 1, got 2.0"):
        PairingSpec(num_pairs=2.0)
    with raises(ValueError, "MTTV pairing: num_pairs (K) must be an int >= 1, got True"):
        PairingSpec(num_pairs=True)
    with raises(ValueError, f"method_kwargs.partner: unknown value 'x'; choose one of "
                            f"{list(PARTNERS)}"):
        PairingSpec(num_pairs=1, partner="x")
    with raises(ValueError, f"method_kwargs.views: unknown value 'x'; choose one of "
                            f"{list(VIEWS)}"):
        PairingSpec(num_pairs=1, views="x")
    with pytest.raises(ValueError) as excinfo:
        mttv_order([1], [2], [3], [4, 5])
    assert str(excinfo.value) in (
        "MTTV crop order: the four view lists need K each, got {1, 2}",
        "MTTV crop order: the four view lists need K each, got {2, 1}")


def test_array_images_index_as_int64():
    from solo_multiview.data.dali.sources import ArrayImages

    feed = ArrayImages(array_source(4), np.array([3, 1], dtype=np.int32))
    assert feed.source_indexes.dtype == np.int64 and feed.source_indexes.tolist() == [3, 1]


def test_load_train_source_checks_the_list_only_with_root_and_split(monkeypatch):
    from solo_multiview.data.dali import sources as dali_sources

    checks = []

    def missing(cfg):
        raise FileNotFoundError("missing")

    monkeypatch.setattr(dali_sources, "build_train_source", missing)
    monkeypatch.setattr(dali_sources, "long_tail_config", lambda cfg: {"split_file": "l.txt"})
    monkeypatch.setattr(dali_sources, "check_listed_files", lambda *a: checks.append(a))
    cfg = OmegaConf.create({"data": {"dataset": "image_list"}})
    with raises(FileNotFoundError, "missing"):
        dali_sources.load_train_source(cfg)
    assert checks == []
    cfg = OmegaConf.create({"data": {"dataset": "image_list", "train_path": "/r"}})
    with raises(FileNotFoundError, "missing"):
        dali_sources.load_train_source(cfg)
    assert checks == [("/r", "l.txt")]


# ============================================================================ DALI graph (traced)
class Node:
    """A stand-in DataNode: remembers the operator that made it and its device."""

    def __init__(self, trace, op, args, kwargs, device="cpu") -> None:
        self.trace, self.op, self.args, self.kwargs, self.device = trace, op, args, kwargs, device

    def gpu(self):
        return self.trace.node("gpu", (self,), {}, "gpu")

    def _binary(self, op, other):
        return self.trace.node(op, (self, other), {}, self.device)

    def __mul__(self, other):
        return self._binary("mul", other)

    def __rmul__(self, other):
        return self._binary("rmul", other)

    def __add__(self, other):
        return self._binary("add", other)

    def __radd__(self, other):
        return self._binary("radd", other)

    def __rsub__(self, other):
        return self._binary("rsub", other)

    def __getitem__(self, item):
        return self._binary("getitem", item)

    def __bool__(self) -> bool:  # a traced conditional takes the branch
        return True


class Trace:
    """Records ``fn.<path>(...)`` calls; ``calls`` lists (path, args, kwargs)."""

    def __init__(self) -> None:
        self.calls: list = []

    def node(self, op, args, kwargs, device):
        self.calls.append((op, args, kwargs))
        return Node(self, op, args, kwargs, device)


class FnStandIn:
    def __init__(self, trace: Trace, path: str = "") -> None:
        self._trace, self._path = trace, path

    def __getattr__(self, name):
        return FnStandIn(self._trace, f"{self._path}.{name}".lstrip("."))

    def __call__(self, *args, **kwargs):
        gpu = kwargs.get("device") == "mixed" or any(
            isinstance(a, Node) and a.device == "gpu" for a in args)
        node = self._trace.node(self._path, args, kwargs, "gpu" if gpu else "cpu")
        if self._path == "readers.file":
            return node, Node(self._trace, "labels", (), {})
        if self._path == "external_source":
            return [Node(self._trace, f"out{i}", (), {}) for i in range(kwargs["num_outputs"])]
        return node


@pytest.fixture
def trace(monkeypatch):
    t = Trace()
    monkeypatch.setattr(dali_augment, "fn", FnStandIn(t))
    monkeypatch.setattr(dali_pipeline, "fn", FnStandIn(t))
    return t


def spec_with(**changes):
    import dataclasses

    return dataclasses.replace(specs()[0], **changes)


def ops(trace):
    return [call[0] for call in trace.calls]


def image_node(trace, device="cpu"):
    return Node(trace, "image", (), {}, device)


def test_coin_and_uniform_arguments(trace):
    dali_augment._coin(1)
    dali_augment._uniform(1, 2)
    assert trace.calls == [
        ("random.coin_flip", (), {"probability": 1.0, "dtype": dali.types.BOOL}),
        ("random.uniform", (), {"range": [1.0, 2.0]}),
    ]
    assert type(trace.calls[0][2]["probability"]) is float
    assert [type(v) for v in trace.calls[1][2]["range"]] == [float, float]


def test_randomly_skips_a_zero_probability(trace):
    image = image_node(trace)
    assert dali_augment._randomly(0.0, image, lambda x: "applied") is image
    assert trace.calls == []
    assert dali_augment._randomly(0.5, image, lambda x: ("applied", x)) == ("applied", image)
    assert ops(trace) == ["random.coin_flip"]


def test_crop_arguments(trace):
    image = image_node(trace)
    rrc = spec_with(rrc_enabled=True, rrc_scale=(0.2, 0.9), crop_size=6)
    out = dali_augment.crop(image, rrc)
    assert trace.calls == [("random_resized_crop", (image,), {
        "size": [6, 6], "random_area": [0.2, 0.9], "random_aspect_ratio": [0.75, 4.0 / 3.0],
        "num_attempts": 10, "interp_type": dali.types.INTERP_CUBIC, "antialias": True})]
    assert out.op == "random_resized_crop"
    del trace.calls[:]
    dali_augment.crop(image, spec_with(crop_size=5))
    assert trace.calls == [("resize", (image,), {
        "resize_shorter": 5, "interp_type": dali.types.INTERP_CUBIC, "antialias": True})]


def test_normalize_and_normal_view_arguments(trace):
    image = image_node(trace)
    spec = spec_with(crop_size=6, flip_prob=0.5, mean=(0.5, 0.25, 0.0), std=(0.5, 1.0, 0.25))
    dali_augment.normalize(image, spec)
    (coin_op, _, coin_kwargs), (op, args, kwargs) = trace.calls
    assert (coin_op, coin_kwargs) == ("random.coin_flip", {"probability": 0.5})
    assert op == "crop_mirror_normalize" and args == (image,)
    mirror = kwargs.pop("mirror")
    assert mirror.op == "random.coin_flip"
    assert kwargs == {"crop": [6, 6], "mean": [127.5, 63.75, 0.0], "std": [127.5, 255.0, 63.75],
                      "dtype": dali.types.FLOAT, "output_layout": "CHW"}
    del trace.calls[:]
    dali_augment.normal_view(image, spec_with(crop_size=4))
    (op1, args1, kwargs1), (op2, args2, kwargs2) = trace.calls
    assert (op1, args1, kwargs1) == ("resize", (image,), {
        "resize_shorter": 4, "interp_type": dali.types.INTERP_CUBIC, "antialias": True})
    assert op2 == "crop_mirror_normalize" and args2[0].op == "resize"
    assert kwargs2["mirror"] == 0 and kwargs2["crop"] == [4, 4]


def test_strong_view_solarize_and_equalize_operators(trace):
    image = image_node(trace)
    spec = spec_with(solarization_prob=1.0, equalization_prob=0.5)
    out = dali_augment.strong_view(image, spec)
    assert ops(trace) == ["resize", "random.coin_flip", "lookup_table", "random.coin_flip",
                          "equalize", "crop_mirror_normalize"]
    _, args, kwargs = trace.calls[2]
    assert args[0].op == "resize"
    table = [v if v < 128 else 255 - v for v in range(256)]
    assert kwargs == {"keys": list(range(256)), "values": table, "dtype": dali.types.UINT8}
    assert trace.calls[4][1][0].op == "lookup_table"
    assert trace.calls[5][1][0].op == "equalize" and out.op == "crop_mirror_normalize"


def test_saturation_hue_arguments(trace):
    image = image_node(trace)
    assert dali_augment.saturation_hue(image, spec_with(saturation=0.0, hue=0.0)) is image
    assert trace.calls == []
    dali_augment.saturation_hue(image, spec_with(saturation=0.0, hue=0.25))
    assert [c[:2] for c in trace.calls[:1]] == [("random.uniform", ())]
    assert trace.calls[0][2] == {"range": [-90.0, 90.0]}
    op, args, kwargs = trace.calls[1]
    assert op == "hsv" and args == (image,) and list(kwargs) == ["hue"]
    del trace.calls[:]
    dali_augment.saturation_hue(image, spec_with(saturation=0.5, hue=0.1))
    assert trace.calls[0][2] == {"range": [0.5, 1.5]}
    assert trace.calls[1][2] == {"range": [-36.0, 36.0]}
    assert list(trace.calls[2][2]) == ["saturation", "hue"]


def test_brightness_contrast_without_strengths_is_the_image(trace):
    image = image_node(trace)
    assert dali_augment.brightness_contrast(image, spec_with(brightness=0.0, contrast=0.0)) \
        is image
    assert trace.calls == []


def test_contrast_center_on_the_cpu_arithmetic_on_the_gpu(trace, monkeypatch):
    c = Node(trace, "c", (), {})
    cpu = image_node(trace)
    out = dali_augment.contrast(cpu, c)
    assert out.op == "brightness_contrast" and out.args == (cpu,)
    assert out.kwargs["contrast"] is c and out.kwargs["contrast_center"].op == "add"
    gpu = image_node(trace, "gpu")
    out = dali_augment.contrast(gpu, c)
    assert out.op == "cast" and out.kwargs == {"dtype": dali.types.UINT8}
    monkeypatch.setattr(dali_augment, "CONTRAST_CENTER_ARGUMENT", False)
    assert dali_augment.contrast(cpu, c).op == "cast"


def test_read_from_the_file_reader(trace):
    inputs = dali_pipeline.GraphInputs(files=["a", "b"], labels=[0, 1])
    images, positions = dali_pipeline._read(inputs, DaliDevice("gpu", 0), 2, 5, 77)
    op, args, kwargs = trace.calls[0]
    assert op == "readers.file" and args == ()
    assert kwargs == {"files": ["a", "b"], "labels": [0, 1], "shard_id": 2, "num_shards": 5,
                      "shuffle_after_epoch": True, "shuffle_after_epoch_seed": 77,
                      "pad_last_batch": True, "name": "reader"}
    assert positions.op == "labels"
    (image,) = images
    assert image.op == "decoders.image" and image.device == "gpu"
    assert image.kwargs == {"device": "mixed", "output_type": dali.types.RGB}
    del trace.calls[:]
    images, _ = dali_pipeline._read(inputs, DaliDevice("cpu", None), 0, 1, 1)
    assert images[0].kwargs == {"device": "cpu", "output_type": dali.types.RGB}


def test_read_from_the_external_source(trace):
    def feed(i):
        return ()

    decoded = dali_pipeline.GraphInputs(feed=feed, decoded=True, num_images=2)
    images, positions = dali_pipeline._read(decoded, DaliDevice("cpu", None), 0, 1, 1)
    assert trace.calls == [("external_source", (), {
        "source": feed, "num_outputs": 3, "batch": True, "layout": ["HWC", "HWC", ""],
        "dtype": [dali.types.UINT8, dali.types.UINT8, dali.types.INT64]})]
    assert [i.op for i in images] == ["out0", "out1"] and positions.op == "out2"
    images, _ = dali_pipeline._read(decoded, DaliDevice("gpu", 0), 0, 1, 1)
    assert [(i.op, i.device) for i in images] == [("gpu", "gpu"), ("gpu", "gpu")]
    del trace.calls[:]
    encoded = dali_pipeline.GraphInputs(feed=feed, decoded=False, num_images=1)
    images, positions = dali_pipeline._read(encoded, DaliDevice("cpu", None), 0, 1, 1)
    assert trace.calls[0][2]["layout"] == ["", ""]
    assert [i.op for i in images] == ["decoders.image"] and positions.op == "out1"


class FakeDaliPipeline:
    def __init__(self, graph, kwargs) -> None:
        self.kwargs, self.built = kwargs, False
        self.outputs = graph()

    def build(self) -> None:
        self.built = True


@pytest.fixture
def traced_pipeline(trace, monkeypatch):
    def pipeline_def(**options):
        assert options == {"enable_conditionals": True}
        return lambda graph: (lambda **kwargs: FakeDaliPipeline(graph, kwargs))

    monkeypatch.setattr(dali_pipeline, "pipeline_def", pipeline_def)
    return trace


def test_build_pipeline_arguments_and_slots(traced_pipeline):
    def feed(i):
        return ()

    inputs = dali_pipeline.GraphInputs(feed=feed, num_images=1)
    pairing = PairingSpec(num_pairs=2, partner="none")
    built = dali_pipeline.build_pipeline(
        inputs, specs(), pairing, DaliDevice("cpu", None), batch_size=4.0, num_threads=2.0,
        seed=7.0, prefetch_queue_depth=3.0, shard_id=0, num_shards=1, reader_seed=5)
    assert built.pipe.built is True
    assert built.pipe.kwargs == {"batch_size": 4, "num_threads": 2, "device_id": None,
                                 "seed": 7, "prefetch_queue_depth": 3}
    assert [type(v) for v in built.pipe.kwargs.values()] == [int, int, type(None), int, int]
    # x_n (shared, K times), y_a x K, x_a x K, y_n = x_n (partner none): 5 distinct crops
    assert built.slots == [0, 0, 1, 2, 3, 4, 0, 0] and built.num_outputs == 5
    assert len(built.pipe.outputs) == 6
    gpu = dali_pipeline.build_pipeline(
        inputs, specs(), None, DaliDevice("gpu", 2), batch_size=4, num_threads=1, seed=1,
        prefetch_queue_depth=1, shard_id=0, num_shards=1, reader_seed=5)
    assert gpu.pipe.kwargs["device_id"] == 2 and gpu.slots == [0] and gpu.num_outputs == 1


def test_build_pipeline_refuses_a_feed_without_the_partner_images(traced_pipeline):
    pairing = PairingSpec(num_pairs=2)
    kwargs = {"batch_size": 1, "num_threads": 1, "seed": 0, "prefetch_queue_depth": 1,
              "shard_id": 0, "num_shards": 1, "reader_seed": 0}
    for images in (1, 2, 4):
        with raises(ValueError, "MTTV: the feed must give the anchor and K partner images"):
            dali_pipeline.build_pipeline(
                dali_pipeline.GraphInputs(feed=lambda i: (), num_images=images), specs(),
                pairing, DaliDevice("cpu", None), **kwargs)
    built = dali_pipeline.build_pipeline(dali_pipeline.GraphInputs(feed=lambda i: (),
                                                                   num_images=3),
                                         specs(), pairing, DaliDevice("cpu", None), **kwargs)
    # x_n shared K times, then y_a, x_a and the partners' own normal views
    assert built.slots == [0, 0, 1, 2, 3, 4, 5, 6] and built.num_outputs == 7


# ============================================================================ batched augment
from solo_multiview.data.batched import augment as A  # noqa: E402
from solo_multiview.data.batched.augment import AugmentParams, BatchedAugment  # noqa: E402

META = torch.device("meta")


def gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@pytest.fixture
def factories(monkeypatch):
    """Wraps torch.rand / empty / tensor / as_tensor: records each call's device and dtype
    (as given: ``"-"`` when absent) and delegates. ``zeros`` makes ``rand`` return zeros."""
    calls: list = []
    state = {"zeros": False}
    real = {name: getattr(torch, name) for name in ("rand", "empty", "tensor", "as_tensor")}

    def wrap(name):
        def factory(*args, **kwargs):
            calls.append((name, kwargs.get("device", "-"), kwargs.get("dtype", "-")))
            out = real[name](*args, **kwargs)
            if name == "rand" and state["zeros"]:
                out = out.zero_()
            return out
        return factory

    for name in real:
        monkeypatch.setattr(torch, name, wrap(name))
    return calls, state


def reference_boxes(n, height, width, scale, ratio, attempts, seed):
    """torchvision's RandomResizedCrop.get_params per sample in Python floats, from the same
    three blocks of draws (area fractions, log ratios, offsets) of one generator."""
    g = gen(seed)
    fraction = torch.rand(n, attempts, generator=g, dtype=torch.float64).tolist()
    log_r = torch.rand(n, attempts, generator=g, dtype=torch.float64).tolist()
    offset = torch.rand(n, 2, generator=g, dtype=torch.float64).tolist()
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    boxes = []
    for i in range(n):
        for t in range(attempts):
            target = height * width * (fraction[i][t] * (scale[1] - scale[0]) + scale[0])
            aspect = math.exp(log_r[i][t] * (hi - lo) + lo)
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = min(math.floor(offset[i][0] * (height - h + 1)), height - h)
                left = min(math.floor(offset[i][1] * (width - w + 1)), width - w)
                boxes.append([top, left, h, w])
                break
        else:
            in_ratio = width / height
            if in_ratio < min(ratio):
                w, h = width, int(round(width / min(ratio)))
            elif in_ratio > max(ratio):
                w, h = int(round(height * max(ratio))), height
            else:
                w, h = width, height
            boxes.append([(height - h) // 2, (width - w) // 2, h, w])
    return boxes


@pytest.mark.parametrize("height, width, scale, ratio, attempts", [
    (8, 8, (0.08, 1.0), (3 / 4, 4 / 3), 10),
    (8, 6, (0.0, 0.05), (1 / 40, 40.0), 3),     # tiny areas: sides of 0 and 1
    (6, 9, (0.85, 1.0), (1 / 3, 3.0), 2),       # whole sides
    (20, 8, (1.5, 2.0), (3 / 4, 4 / 3), 4),     # never fits: tall fallback
    (8, 20, (1.5, 2.0), (3 / 4, 4 / 3), 4),     # never fits: wide fallback
])
def test_sample_crop_boxes_equal_the_reference(height, width, scale, ratio, attempts):
    boxes = A.sample_crop_boxes(48, height, width, scale, gen(3), ratio, attempts)
    assert boxes.dtype == torch.int64 and boxes.shape == (48, 4)
    assert boxes.tolist() == reference_boxes(48, height, width, scale, ratio, attempts, 3)


def test_sample_crop_boxes_default_attempts_and_draws(factories):
    calls, _ = factories
    boxes = A.sample_crop_boxes(5, 8, 8, (0.08, 1.0), gen(2))
    cpu = torch.device("cpu")
    assert calls == [("rand", cpu, torch.float64)] * 3
    assert boxes.tolist() == reference_boxes(5, 8, 8, (0.08, 1.0), (3 / 4, 4 / 3), 10, 2)


def test_sample_crop_boxes_fallbacks_are_central():
    assert A.sample_crop_boxes(2, 20, 8, (1.5, 2.0), gen(0)).tolist() == [[4, 0, 11, 8]] * 2
    assert A.sample_crop_boxes(2, 8, 21, (1.5, 2.0), gen(0)).tolist() == [[0, 5, 8, 11]] * 2
    assert A.sample_crop_boxes(2, 8, 8, (1.5, 2.0), gen(0)).tolist() == [[0, 0, 8, 8]] * 2


def test_like_keeps_float_outputs_and_truncates_for_uint8():
    out = torch.tensor([1.7, 2.2], dtype=torch.float32)
    assert A._like(out, torch.zeros(2, dtype=torch.float64)).dtype == torch.float32
    assert A._like(out, torch.zeros(2, dtype=torch.uint8)).tolist() == [1, 2]


def test_per_sample_is_float64_on_the_images_device_and_its_message(factories):
    calls, _ = factories
    images = torch.zeros(2, 3, 1, 1)
    value = A._per_sample(0.5, images)
    assert value.dtype == torch.float64 and value.shape == (2, 1, 1, 1)
    assert calls == [("as_tensor", torch.device("cpu"), torch.float64)]
    assert A._per_sample(0.5, images.to(META)).device == META
    with raises(ValueError, "expected one factor per sample (2), got shape (3,)"):
        A._per_sample([1.0, 2.0, 3.0], torch.zeros(2, 5, 1, 1))


def test_normalize_makes_its_stats_on_the_images_device(factories):
    calls, _ = factories
    out = A.normalize(torch.full((1, 3, 1, 1), 0.5), (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    assert out.flatten().tolist() == [0.0, 1.0, 0.5]
    cpu = torch.device("cpu")
    assert calls == [("as_tensor", cpu, torch.float32), ("as_tensor", cpu, torch.float32)]


def test_apply_where_dense_default_follows_the_device():
    seen = []

    def fn(images):
        seen.append((images.shape[0], images.device.type))
        return images + 1

    mask = torch.tensor([True, False, True])
    images = torch.zeros(3, 1, 1, 1)
    assert A._apply_where(images, mask, fn).flatten().tolist() == [1.0, 0.0, 1.0]
    assert seen == [(2, "cpu")]  # the CPU default is sparse
    A._apply_where(torch.zeros(3, 1, 1, 1), mask, fn, dense=True)
    assert seen[-1] == (3, "cpu")
    A._apply_where(torch.zeros(3, 1, 1, 1), mask, fn, dense=False)
    assert seen[-1] == (2, "cpu")
    A._apply_where(torch.zeros(3, 1, 1, 1).to(META), mask.to(META), fn)  # dense off the CPU
    assert seen[-1] == (3, "meta")


def entry(**ops):
    return ops_off_entry(4, **ops)


def all_params(n, h, w, **masks):
    true = torch.ones(n, dtype=torch.bool)
    values = {"boxes": torch.tensor([[0, 0, h, w]] * n), "jitter": true,
              "order": torch.tensor([[0, 1, 2, 3]] * n), "brightness": torch.full((n,), 0.5,
                                                                                 dtype=torch.float64),
              "contrast": torch.full((n,), 0.5, dtype=torch.float64),
              "saturation": torch.full((n,), 0.5, dtype=torch.float64),
              "hue": torch.full((n,), 0.25, dtype=torch.float64), "grayscale": true,
              "blur": true, "sigma": torch.full((n,), 1.0, dtype=torch.float64),
              "solarize": true, "equalize": true, "flip": true}
    values.update(masks)
    return AugmentParams(**values)


def images4(n=2, h=4, w=4, seed=0):
    return torch.randint(0, 256, (n, 3, h, w), generator=gen(seed), dtype=torch.uint8)


def test_apply_skips_ops_whose_probability_is_zero_whatever_the_params():
    images = images4()
    aug = BatchedAugment(entry(), "cifar10")
    out = aug.apply(images, all_params(2, 4, 4))
    expected = A.normalize(A.to_float(images), aug.mean, aug.std)
    assert torch.allclose(out, expected, atol=1e-6, rtol=0)
    rrc = BatchedAugment(entry(rrc={"enabled": True}), "cifar10")
    out = rrc.apply(images, all_params(2, 4, 4))  # the whole image as the box, flip ignored
    assert torch.allclose(out, expected, atol=1e-6, rtol=0)
    # strengths on, probabilities 0; 16 x 16 images, where equalization changes pixels
    big = images4(2, 16, 16)
    off = BatchedAugment(ops_off_entry(16, color_jitter={"prob": 0.0, "brightness": 0.4,
                                                         "contrast": 0.4}), "cifar10")
    out = off.apply(big, all_params(2, 16, 16))
    expected = A.normalize(A.to_float(big), off.mean, off.std)
    assert not torch.equal(A.equalize(big), big)
    assert torch.allclose(out, expected, atol=1e-6, rtol=0)
    # a spec with jitter strengths but a zero jitter probability (the parser zeroes them)
    import dataclasses

    off.spec = dataclasses.replace(off.spec, brightness=0.4, contrast=0.4)
    out = off.apply(big, all_params(2, 16, 16))
    assert torch.allclose(out, expected, atol=1e-6, rtol=0)


def test_apply_flip_folded_in_the_rrc_crop_and_applied_after_a_plain_resize():
    images = images4()
    flip = torch.tensor([True, False])
    for rrc in (True, False):
        aug = BatchedAugment(entry(rrc={"enabled": rrc}, horizontal_flip={"prob": 0.5}),
                             "cifar10")
        out = aug.apply(images, all_params(2, 4, 4, flip=flip))
        x = A.to_float(images)
        x = torch.stack([x[0].flip(-1), x[1]])
        assert torch.allclose(out, A.normalize(x, aug.mean, aug.std), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dense, sizes", [(True, [2] * 5), (False, [1] * 5), (None, [1] * 5)])
def test_augment_passes_dense_to_every_op(monkeypatch, dense, sizes):
    seen = []
    for name in ("rgb_to_grayscale", "solarize", "equalize", "horizontal_flip"):
        real = getattr(A, name)

        def recording(images, *rest, _real=real):
            seen.append(images.shape[0])
            return _real(images, *rest)

        monkeypatch.setattr(A, name, recording)
    real_blur = A.gaussian_blur
    monkeypatch.setattr(A, "gaussian_blur", lambda images, k, s: seen.append(images.shape[0])
                        or real_blur(images, k, s))
    on = {"prob": 1.0}
    aug = BatchedAugment(entry(grayscale=on, gaussian_blur=on, solarization=on,
                               equalization=on, horizontal_flip={"prob": 0.5}), "cifar10",
                         dense=dense)
    half = torch.tensor([True, False])
    params = all_params(2, 4, 4, grayscale=half, blur=half, solarize=half, equalize=half,
                        flip=half)
    aug.apply(images4(), params)
    assert seen == sizes


def test_augment_copies_of_a_plain_resize():
    images = images4()
    aug = BatchedAugment(entry(), "cifar10")
    out = aug.apply(images, all_params(4, 4, 4))
    single = A.normalize(A.to_float(images), aug.mean, aug.std)
    assert out.shape == (4, 3, 4, 4)
    assert torch.allclose(out, torch.cat([single, single]), atol=1e-6, rtol=0)


def test_apply_chunks_and_messages(monkeypatch):
    aug = BatchedAugment(entry(), "cifar10", chunk_size=1)
    assert aug.chunk_size == 1 and aug.dense is None
    assert BatchedAugment(entry(), "cifar10", dense=True).dense is True
    spans = []
    real = aug._augment
    monkeypatch.setattr(aug, "_augment",
                        lambda x, p: spans.append((x.shape[0], p.boxes.shape[0])) or real(x, p))
    images = images4(3)
    out = aug.apply(images, all_params(3, 4, 4))
    assert spans == [(1, 1)] * 3 and out.dtype == torch.float32
    aug.chunk_size = 2
    del spans[:]
    aug.apply(images, all_params(6, 4, 4))
    assert spans == [(2, 2), (1, 1), (2, 2), (1, 1)]
    one = aug.apply(images4(1), all_params(1, 4, 4))
    assert one.shape == (1, 3, 4, 4)
    with raises(ValueError, "BatchedAugment: 4 parameter rows for 3 images (need c * N)"):
        aug.apply(images, all_params(4, 4, 4))
    with raises(ValueError, "BatchedAugment: 2 parameter rows for 0 images (need c * N)"):
        aug.apply(images4(0), all_params(2, 4, 4))


def test_apply_allocates_on_the_images_device(factories):
    calls, _ = factories
    aug = BatchedAugment(entry(), "cifar10")
    images, params = images4(), all_params(2, 4, 4)
    del calls[:]
    aug.apply(images, params)
    cpu = torch.device("cpu")
    assert [c for c in calls if c[0] in ("empty", "tensor")][:3] == [
        ("empty", cpu, torch.float32), ("tensor", cpu, torch.float32),
        ("tensor", cpu, torch.float32)]


def test_where_names_the_entry_in_messages():
    with raises(ValueError, "augmentations[0].crop_size must be an int >= 1, got 0"):
        BatchedAugment({**entry(), "crop_size": 0}, "cifar10")


def test_call_checks_the_shape_and_passes_height_and_width(monkeypatch):
    aug = BatchedAugment(entry(), "cifar10")
    for shape in ((2, 4, 5, 6), (3, 5, 6), (2, 3, 5, 6, 1)):
        with raises(ValueError, f"BatchedAugment: expected (N, 3, H, W) images, got {shape}"):
            aug(torch.zeros(shape, dtype=torch.uint8), gen(0))
    seen = []
    real = aug.sample_params
    monkeypatch.setattr(aug, "sample_params",
                        lambda n, h, w, g: seen.append((n, h, w)) or real(n, h, w, g))
    out = aug(torch.zeros(2, 3, 5, 7, dtype=torch.uint8), gen(0), copies=3)
    assert seen == [(6, 5, 7)] and out.shape == (6, 3, 4, 4)


def test_sample_params_draws_on_the_generators_device(factories):
    calls, state = factories
    aug = BatchedAugment(entry(), "cifar10")
    params = aug.sample_params(3, 5, 7, gen(0))
    cpu = torch.device("cpu")
    assert params.boxes.tolist() == [[0, 0, 5, 7]] * 3
    assert calls == [("tensor", cpu, "-"), ("rand", cpu, "-")] + \
        [("rand", cpu, torch.float64)] * 4 + [("rand", cpu, "-")] * 3 + \
        [("rand", cpu, torch.float64)] + [("rand", cpu, "-")] * 3
    # every draw exactly 0: a probability of 0 still gives no op
    state["zeros"] = True
    params = aug.sample_params(3, 5, 7, gen(0))
    for mask in (params.jitter, params.grayscale, params.blur, params.solarize,
                 params.equalize, params.flip):
        assert mask.tolist() == [False] * 3


def test_sample_crop_boxes_with_a_single_attempt():
    boxes = A.sample_crop_boxes(16, 8, 6, (0.5, 1.6), gen(4), attempts=1)
    assert boxes.tolist() == reference_boxes(16, 8, 6, (0.5, 1.6), (3 / 4, 4 / 3), 1, 4)


def test_epoch_sampler_cache_answers_only_its_own_key():
    sampler = EpochSampler(10, 2)
    assert sampler.epoch_order(-1, -1, -1).tolist() == []  # the empty cache's sentinel key
    for key in ((1, -1, -1), (-2, -1, -1), (-1, 1, -1), (-1, -2, -1), (-1, -1, 1),
                (-1, -1, -2)):
        with pytest.raises(ValueError):
            EpochSampler(10, 2).epoch_order(*key)


# ============================================================================ batched loader
def device_loader(**kwargs):
    from solo_multiview.data.batched.loader import DeviceBatchLoader

    images = torch.randint(0, 256, (8, 3, 8, 8), generator=gen(0), dtype=torch.uint8)
    entry8 = ops_off_entry(8, 1, rrc={"enabled": True, "crop_min_scale": 0.5})
    return DeviceBatchLoader(images, torch.arange(8) % 2, [entry8], "cifar10", 4, **kwargs)


def test_sharded_epoch_order_default_seed():
    from solo_multiview.data.batched.loader import ShardedEpochOrder

    order = ShardedEpochOrder(6)
    assert order.seed == 0 and order.epoch == 0
    assert order.shard(0, 0, 1).tolist() == torch.randperm(6, generator=gen(0)).tolist()


def test_device_loader_generators_and_partners_on_its_device(monkeypatch):
    from solo_multiview.data.batched import loader as batched_loader

    loader = device_loader(mode="pairs", num_pairs=2)
    made, draws = [], []
    real_generator, real_randint = torch.Generator, torch.randint

    def generator(*args, **kwargs):
        made.append(kwargs)
        return real_generator(*args, **kwargs)

    def randint(*args, **kwargs):
        draws.append({k: v for k, v in kwargs.items() if k != "generator"})
        return real_randint(*args, **kwargs)

    monkeypatch.setattr(batched_loader.torch, "Generator", generator)
    monkeypatch.setattr(batched_loader.torch, "randint", randint)
    rows = loader.partner_rows(torch.tensor([0, 1]), 0, 0, 0)
    assert rows.shape == (2, 2)
    assert made == [{"device": loader.device}] and draws == [{"device": loader.device}]


@pytest.mark.parametrize("workers", [0, 1])
def test_device_loader_epoch_uses_a_data_loader_only_with_workers(monkeypatch, workers):
    seen = []
    real = torch.utils.data.DataLoader

    def data_loader(dataset, **kwargs):
        seen.append(kwargs)
        return real(dataset, batch_size=None, num_workers=0)

    monkeypatch.setattr(torch.utils.data, "DataLoader", data_loader)
    loader = device_loader(num_workers=workers)
    assert len(list(iter(loader))) == 2
    assert seen == ([] if workers == 0 else [{"batch_size": None, "num_workers": 1}])


def test_decode_jpeg_files_sends_jpegs_to_decode_jpeg_on_the_device(tmp_path, monkeypatch):
    import torchvision
    from PIL import Image

    from solo_multiview.data.batched.loader import decode_jpeg_files

    pixels = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.JPG")
    Image.fromarray(pixels).save(tmp_path / "b.png")
    calls = []
    real_jpeg, real_image = torchvision.io.decode_jpeg, torchvision.io.decode_image

    def decode_jpeg(data, **kwargs):
        calls.append(("jpeg", len(data), kwargs))
        return real_jpeg(data, **kwargs)

    def decode_image(data, **kwargs):
        calls.append(("image", kwargs))
        return real_image(data, **kwargs)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", decode_jpeg)
    monkeypatch.setattr(torchvision.io, "decode_image", decode_image)
    out = decode_jpeg_files([tmp_path / "a.JPG", tmp_path / "b.png"])
    rgb = torchvision.io.ImageReadMode.RGB
    assert calls == [("jpeg", 1, {"mode": rgb, "device": torch.device("cpu")}),
                     ("image", {"mode": rgb})]
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.uint8
    assert out[1].permute(1, 2, 0).numpy().tolist() == pixels.tolist()
    jpeg = real_jpeg(torchvision.io.read_file(str(tmp_path / "a.JPG")), mode=rgb)
    assert torch.equal(out[0], jpeg)
