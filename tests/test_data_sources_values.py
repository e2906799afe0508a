"""Exact values of the data sources and the DALI loader's plumbing: error texts, defaults, which
DALI operator runs where, the pickled loader state, the encoded-file thread pool, CIFAR through
a stand-in download, and the stratified fraction against scikit-learn.

DALI graphs are only traced here (no pipeline runs) except in the pickling test; a GPU node can
be traced without a GPU, which shows the device dispatch of ``augment.py`` on a CPU machine.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from omegaconf import OmegaConf
from PIL import Image, UnidentifiedImageError

from solo_multiview.data.dali import sources as dali_sources
from solo_multiview.data.dali.backend import dali_available
from solo_multiview.data.dali.loader import copy_on_stream
from solo_multiview.data.dali.sources import EncodedFiles, check_listed_files, image_feed
from solo_multiview.data.datasets import IndexedSubset, build_probe_dataset
from solo_multiview.data.longtail import long_tail_indexes
from solo_multiview.data.longtail_authors import stratified_fraction
from solo_multiview.data.sources import (
    ArraySource,
    BadImageError,
    ImageListSource,
    cifar_source,
)
from tests.helpers import ops_off_entry


def raises(exc: type, message: str):
    """``pytest.raises`` matching the whole message."""
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


def write_list(folder: Path, n: int, size: int = 8, blank_after: int | None = None) -> Path:
    """``n`` random PNGs ``img<i>.png`` (label ``i % 2``) under ``folder`` and the split list
    ``folder/train.txt``; a blank line after entry ``blank_after`` (so later entries sit one line
    further down)."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            folder / f"img{i}.png"
        )
        lines.append(f"img{i}.png {i % 2}")
        if blank_after == i:
            lines.append("")
    split = folder / "train.txt"
    split.write_text("\n".join(lines) + "\n")
    return split


# ---------------------------------------------------------------------------- backend
def test_dali_available_says_whether_nvidia_dali_imports():
    try:
        import nvidia.dali  # noqa: F401

        importable = True
    except ImportError:
        importable = False
    assert dali_available() is importable


def test_dali_available_is_false_without_nvidia_or_without_a_spec(monkeypatch):
    # a module in sys.modules without a spec: find_spec raises ValueError
    monkeypatch.setitem(sys.modules, "nvidia.dali", types.ModuleType("nvidia.dali"))
    sys.modules["nvidia.dali"].__spec__ = None
    assert dali_available() is False
    # no "nvidia" package at all: importing the parent raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "nvidia.dali")
    monkeypatch.setitem(sys.modules, "nvidia", None)
    assert dali_available() is False


# ---------------------------------------------------------------------------- augment (traced)
@contextlib.contextmanager
def traced_graph():
    """A CPU pipeline's graph context with a uint8 HWC input node (nothing is built or run)."""
    pytest.importorskip("nvidia.dali")
    from nvidia.dali import Pipeline, fn

    pipe = Pipeline(batch_size=1, num_threads=1, device_id=None)
    with pipe:
        yield fn.external_source(
            source=lambda: [np.zeros((8, 8, 3), np.uint8)], batch=True, layout="HWC"
        )


def operator(node) -> str:
    """The DALI operator (schema name) that produced ``node``."""
    return node.source._op.schema_name


def test_like_moves_a_scalar_to_the_gpu_only_for_gpu_images():
    pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn

    from solo_multiview.data.dali import augment

    with traced_graph() as image:
        value = fn.random.uniform(range=[0.0, 1.0])
        assert augment._like(value, image) is value
        moved = augment._like(value, image.gpu())
        assert moved.device == "gpu" and value.device == "cpu"


@pytest.mark.parametrize("blur_filter", [True, False])
def test_blur_operator_is_filter_on_the_cpu_and_gaussian_blur_on_the_gpu(monkeypatch, blur_filter):
    """The module docstring: the CPU blurs with ``fn.filter`` (``BLUR_FILTER``; False: the
    GPU's ``fn.gaussian_blur`` there too), the GPU always with ``fn.gaussian_blur``."""
    pytest.importorskip("nvidia.dali")
    from solo_multiview.data.dali import augment
    from solo_multiview.data.dali.spec import parse_augmentations

    monkeypatch.setattr(augment, "BLUR_FILTER", blur_filter)
    spec = parse_augmentations([ops_off_entry(16, gaussian_blur={"prob": 1.0})], "cifar10")[0]
    with traced_graph() as image:
        on_cpu = augment.gaussian_blur(image, spec)
        on_gpu = augment.gaussian_blur(image.gpu(), spec)
    assert operator(on_cpu) == ("Filter" if blur_filter else "GaussianBlur")
    assert operator(on_gpu) == "GaussianBlur"
    assert (on_cpu.device, on_gpu.device) == ("cpu", "gpu")


# ---------------------------------------------------------------------------- copy_on_stream
class RecordingStream:
    """Stands for a CUDA stream: records waits; ``device`` is ``meta``, which is not torch's
    default device, so an output allocated elsewhere shows."""

    def __init__(self, name: str, events: list) -> None:
        self.name, self.events = name, events
        self.device = torch.device("meta")

    def wait_stream(self, other) -> None:
        self.events.append(("wait_stream", self.name, other.name))


class ShapedTensor:
    """DALI's TensorGPU as ``copy_on_stream`` sees it (``shape()``)."""

    def shape(self) -> list:
        return [2, 3, 4, 4]


def test_copy_on_stream_allocates_float32_on_the_copy_streams_device(monkeypatch):
    events: list = []
    copy_stream = RecordingStream("copy", events)
    consumer = RecordingStream("consumer", events)
    asked = []

    def current_stream(device=None):
        asked.append(device)
        return consumer

    @contextlib.contextmanager
    def stream(s):
        events.append(("enter", s.name))
        yield
        events.append(("exit", s.name))

    def feed(tensor, out, cuda_stream=None):
        events.append(("feed", tuple(out.shape), out.dtype, out.device.type, cuda_stream.name))

    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    monkeypatch.setattr(torch.cuda, "stream", stream)
    monkeypatch.setattr(
        torch.Tensor,
        "record_stream",
        lambda self, s: events.append(("record_stream", s.name)),
        raising=False,
    )
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # an allocation without dtype= would be float64
    try:
        out = copy_on_stream(ShapedTensor(), copy_stream, feed)
    finally:
        torch.set_default_dtype(default_dtype)
    assert asked == [torch.device("meta")]  # the consumer is the copy stream's device's stream
    assert (out.dtype, out.device, tuple(out.shape)) == (
        torch.float32,
        torch.device("meta"),
        (2, 3, 4, 4),
    )
    assert events == [
        ("enter", "copy"),
        ("feed", (2, 3, 4, 4), torch.float32, "meta", "copy"),
        ("exit", "copy"),
        ("wait_stream", "consumer", "copy"),
        ("record_stream", "consumer"),
    ]


# ---------------------------------------------------------------------------- the DALI loader
def array_loader(n: int = 12, batch: int = 4, entries=None, **kwargs):
    from solo_multiview.data.dali import DaliPretrainLoader, parse_augmentations

    images = np.random.default_rng(1).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    source = ArraySource(images, np.arange(n) % 3)
    entries = entries or [ops_off_entry(8)]
    return DaliPretrainLoader(
        source, np.arange(n), parse_augmentations(entries, "cifar10"), batch, device="cpu", **kwargs
    )


RESET_STATE = [
    "_pipes",
    "_key",
    "_pipe_epoch",
    "_runs",
    "_runs_per_epoch",
    "_finished",
    "_device",
    "_copy_stream",
    "_images",
]


def test_pickled_state_of_a_used_loader_is_the_fresh_state():
    pytest.importorskip("nvidia.dali")
    loader = array_loader(num_threads=1)
    fresh = array_loader(num_threads=1)
    fresh_state = {key: fresh.__dict__.get(key) for key in RESET_STATE}
    assert fresh_state == {
        "_pipes": [],
        "_key": None,
        "_pipe_epoch": -1,
        "_runs": [],
        "_runs_per_epoch": [],
        "_finished": False,
        "_device": None,
        "_copy_stream": None,
        "_images": None,
    }
    assert len(list(loader)) == 3  # one whole epoch: pipelines, feed and counters are set
    assert loader._runs == [3] and loader._finished is True and loader._images is not None
    loader._copy_stream = lambda: None  # a GPU loader's torch.cuda.Stream: not picklable
    state = loader.__getstate__()
    for key in RESET_STATE:
        assert type(state[key]) is type(fresh_state[key]), key
        assert state[key] == fresh_state[key], key
    # the rest is the loader's own, and the state pickles (DALI pipelines do not)
    assert {k: v for k, v in state.items() if k not in RESET_STATE} == {
        k: v for k, v in loader.__dict__.items() if k not in RESET_STATE
    }
    restored = pickle.loads(pickle.dumps(loader))
    assert restored._pipes == [] and restored.sampler.epoch == 1


def test_describe_names_mode_device_input_and_sizes(tmp_path, monkeypatch):
    pytest.importorskip("nvidia.dali")
    from solo_multiview.data.dali import DaliPretrainLoader, PairingSpec, parse_augmentations

    # with CUDA "available", device auto would be the GPU: describe shows the chosen cpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    multicrop = array_loader(entries=[ops_off_entry(8, 2), ops_off_entry(4, 1)], num_threads=2)
    # 12 images, batch 4: 3 batches; 2 + 1 crops; one pipeline per thread on the CPU
    assert multicrop.describe() == (
        "DALI multicrop loader (cpu, external source, 2 "
        "pipeline(s), 2 thread(s)): 12 images, batch 4, 3 crops, "
        "3 batches/epoch"
    )
    pairs = array_loader(num_threads=1, pairing=PairingSpec(num_pairs=2))
    assert pairs.describe() == (
        "DALI pairs loader (cpu, external source, 1 pipeline(s), 1 "
        "thread(s)): 12 images, batch 4, 8 crops, 3 batches/epoch"
    )
    split = write_list(tmp_path, 12)
    source = ImageListSource(tmp_path, split)
    reader = DaliPretrainLoader(
        source,
        np.arange(12),
        parse_augmentations([ops_off_entry(8)], "image_list"),
        4,
        device="cpu",
        num_threads=2,
    )
    # two file readers of 6 images each: one batch of 4 apiece
    assert reader.describe() == (
        "DALI multicrop loader (cpu, file reader, 2 pipeline(s), 2 "
        "thread(s)): 12 images, batch 4, 1 crops, 2 batches/epoch"
    )


# ---------------------------------------------------------------------------- split lists
def test_check_listed_files_messages(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    split = write_list(root, 8, blank_after=1)  # entries 0, 1 on lines 1, 2; entry i >= 2: i + 2
    missing_root = tmp_path / "nowhere"
    with raises(FileNotFoundError, f"image root not found: '{missing_root}' (data.train_path)"):
        check_listed_files(missing_root, split)
    check_listed_files(root, split)  # all there: no error
    for i in (2, 3, 4, 5, 7):
        (root / f"img{i}.png").unlink()
    # five missing: all five lines, no ellipsis
    with raises(
        FileNotFoundError,
        f"{split}:4: listed image 'img2.png' not found under '{root}' "
        f"(5 of 8 listed images missing; lines [4, 5, 6, 7, 9])",
    ):
        check_listed_files(root, split)
    (root / "img0.png").unlink()
    # six missing: the first five lines and an ellipsis
    with raises(
        FileNotFoundError,
        f"{split}:1: listed image 'img0.png' not found under '{root}' "
        f"(6 of 8 listed images missing; lines [1, 4, 5, 6, 7] ...)",
    ):
        check_listed_files(root, split)


# ---------------------------------------------------------------------------- feeds
def byte_files(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(3)
    paths = []
    for i in range(n):
        path = folder / f"f{i:02d}.bin"
        path.write_bytes(rng.integers(0, 256, 5 + 3 * i, dtype=np.uint8).tobytes())
        paths.append(path)
    return paths


@pytest.fixture
def reads(monkeypatch):
    """The thread name of every file read and the size of every thread pool made."""
    record = types.SimpleNamespace(threads=[], pools=[])
    read = EncodedFiles._read_file

    def recording_read(self, position):
        record.threads.append(threading.current_thread().name)
        return read(self, position)

    class RecordingPool(dali_sources.ThreadPoolExecutor):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            record.pools.append(self._max_workers)  # the pool's limit, defaults resolved

    monkeypatch.setattr(EncodedFiles, "_read_file", recording_read)
    monkeypatch.setattr(dali_sources, "ThreadPoolExecutor", RecordingPool)
    return record


def test_encoded_files_call_gives_the_bytes_of_the_positions(tmp_path, reads):
    paths = byte_files(tmp_path, 12)
    order = np.arange(12)[::-1].copy()  # position p is file 11 - p
    files = EncodedFiles(types.SimpleNamespace(paths=paths), order)
    got = files(np.array([3, 0, 7]))
    assert [a.tobytes() for a in got] == [paths[k].read_bytes() for k in (8, 11, 4)]
    assert all(a.dtype == np.uint8 for a in got)
    # the default limit is 8 threads: 3 files need 3, the other 9 get 8
    assert files(np.arange(12))[5].tobytes() == paths[6].read_bytes()
    assert reads.pools == [3, 8]
    assert all(name.startswith("dali-encoded_") for name in reads.threads)


@pytest.mark.parametrize("max_workers", [0, 1])
def test_encoded_files_one_worker_reads_in_the_calling_thread(tmp_path, reads, max_workers):
    paths = byte_files(tmp_path, 6)
    files = EncodedFiles(types.SimpleNamespace(paths=paths), np.arange(6), max_workers)
    assert [a.tobytes() for a in files(np.arange(6))] == [p.read_bytes() for p in paths]
    assert reads.threads == [threading.current_thread().name] * 6 and reads.pools == []


def test_encoded_files_pool_is_capped_by_max_workers_and_a_single_file_needs_none(tmp_path, reads):
    paths = byte_files(tmp_path, 12)
    files = EncodedFiles(types.SimpleNamespace(paths=paths), np.arange(12), max_workers=3)
    here = threading.current_thread().name
    assert files(np.array([5]))[0].tobytes() == paths[5].read_bytes()
    assert reads.threads == [here] and reads.pools == []  # one missing file: no pool
    groups = files.read_many([np.arange(6), np.arange(4, 12)])
    assert [[a.tobytes() for a in g] for g in groups] == [
        [p.read_bytes() for p in paths[:6]],
        [p.read_bytes() for p in paths[4:]],
    ]
    assert reads.pools == [3]  # 11 missing files, at most 3 threads
    assert len(reads.threads) == 12 and files.files_read == 12
    assert all(name.startswith("dali-encoded_") for name in reads.threads[1:])


class PlainSource:
    """An ImageSource that is neither an array nor an image list (``load`` only)."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self.targets = np.zeros(len(images), dtype=np.int64)
        self.num_classes = 1

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


def test_loaded_images_feed_gives_the_source_images_at_the_indexes():
    images = np.random.default_rng(2).integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
    feed = image_feed(PlainSource(images), [4, 2, 0])
    assert feed.decoded is True
    got = feed(np.array([1, 2, 0, 1]))
    assert len(got) == 4
    for array, k in zip(got, [2, 0, 4, 2]):
        assert array.flags.c_contiguous
        np.testing.assert_array_equal(array, images[k])


# ---------------------------------------------------------------------------- datasets
def small_source(n: int = 9) -> ArraySource:
    images = np.random.default_rng(4).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    return ArraySource(images, np.arange(n) % 3)


def test_probe_dataset_defaults_to_the_balanced_set_and_refuses_bools():
    cfg = OmegaConf.create({"data": {"dataset": "cifar10"}})
    source = small_source()
    probe = build_probe_dataset(cfg, None, source=source)
    assert probe.source_indexes.tolist() == list(range(9))
    assert probe.class_counts.tolist() == [3, 3, 3]
    with raises(
        ValueError,
        "probe train set must be one of ['balanced', 'longtail'] or an int "
        "(shots per class), got True",
    ):
        build_probe_dataset(cfg, None, True, source=source)


def test_no_bad_images_is_an_empty_index_array_and_describe_names_the_source_image():
    subset = IndexedSubset(small_source(), [3, 1, 7])
    positions = subset.bad_image_positions()
    assert positions.tolist() == []
    assert subset.targets[positions].tolist() == []  # usable as an index (integer dtype)
    assert [subset.describe(i) for i in range(3)] == [
        "source image 3",
        "source image 1",
        "source image 7",
    ]


# ---------------------------------------------------------------------------- long tail
def test_fraction_uses_fraction_seed_as_scikit_learn():
    sklearn_split = pytest.importorskip("sklearn.model_selection")
    targets = np.random.default_rng(6).permutation(np.repeat(np.arange(3), [12, 8, 6]))
    for seed in (7, 42):
        kept = long_tail_indexes(
            targets, 3, {"profile": "none", "fraction": 0.5, "fraction_seed": seed}
        )
        splitter = sklearn_split.StratifiedShuffleSplit(
            n_splits=1, train_size=13, random_state=seed
        )
        ((train, _),) = list(splitter.split(np.zeros(targets.size), targets))
        assert kept.tolist() == sorted(train.tolist())
    assert (
        long_tail_indexes(
            targets, 3, {"profile": "none", "fraction": 0.5, "fraction_seed": 7}
        ).tolist()
        != kept.tolist()
    )


def test_fraction_error_names_the_fraction():
    targets = np.array([0, 0, 1, 1, 2, 0, 1])
    with raises(
        ValueError,
        "data.long_tail.fraction=0.5: every class needs at least 2 images; classes with 1: [2]",
    ):
        long_tail_indexes(targets, 3, {"profile": "none", "fraction": 0.5})


@pytest.mark.parametrize("counts", [[4, 4], [3, 3], [6, 4, 2]])
@pytest.mark.parametrize("seed", [0, 1, 42])
def test_stratified_fraction_equals_scikit_learn_on_exact_and_odd_shares(counts, seed):
    """[4, 4] halves exactly (no remainder to draw), [3, 3] leaves one image to draw."""
    sklearn_split = pytest.importorskip("sklearn.model_selection")
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))
    splitter = sklearn_split.StratifiedShuffleSplit(
        n_splits=1, train_size=labels.size // 2, random_state=seed
    )
    ((train, _),) = list(splitter.split(np.zeros(labels.size), labels))
    assert stratified_fraction(labels, 0.5, seed=seed).tolist() == train.tolist()


def test_stratified_fraction_refuses_float_labels():
    with raises(ValueError, "labels: labels must be integers, got dtype float64"):
        stratified_fraction([0.0, 1.0, 0.0, 1.0], 0.5)


# ---------------------------------------------------------------------------- CIFAR
def fake_cifar10_download(monkeypatch, train_labels: list, test_labels: list) -> list:
    """torchvision's CIFAR-10 as offline as can be: "downloading" writes an extracted folder
    of one train batch per ``data_batch_k`` and one test batch, the integrity check is that the
    files exist. Returns the download calls."""
    calls = []
    rng = np.random.default_rng(8)
    batches = {f"data_batch_{k}": train_labels for k in range(1, 6)}
    batches["test_batch"] = test_labels

    def download(url, root, filename=None, md5=None):
        calls.append((url, str(root), filename))
        folder = Path(root) / "cifar-10-batches-py"
        folder.mkdir()
        for name, labels in batches.items():
            data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
            with open(folder / name, "wb") as f:
                pickle.dump({"data": data, "labels": labels}, f)
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({"label_names": [f"c{k}" for k in range(10)]}, f)

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", download)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    return calls


def test_cifar_source_downloads_into_a_new_nested_folder_and_keeps_ten_classes(
    tmp_path, monkeypatch
):
    calls = fake_cifar10_download(monkeypatch, [0, 1, 2], [1, 0])
    root = tmp_path / "new" / "cifar"  # neither folder exists yet
    train = cifar_source("cifar10", root)  # the train split by default
    assert calls == [(tv_cifar.CIFAR10.url, str(root), "cifar-10-python.tar.gz")]
    folder = root / "cifar-10-batches-py"
    expected = []
    for k in range(1, 6):
        with open(folder / f"data_batch_{k}", "rb") as f:
            expected.append(pickle.load(f)["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(train.images, np.concatenate(expected))
    assert train.targets.tolist() == [0, 1, 2] * 5
    assert train.num_classes == 10  # the class names, not the largest label + 1
    test = cifar_source("cifar10", root, train=False)  # already there: no second download
    assert len(calls) == 1 and test.targets.tolist() == [1, 0] and test.num_classes == 10


def test_cifar_source_refuses_other_names(tmp_path):
    with raises(
        ValueError,
        "data.dataset: 'cifar1000' is not a CIFAR set; use one of ['cifar10', 'cifar100']",
    ):
        cifar_source("cifar1000", tmp_path)


# ---------------------------------------------------------------------------- image lists
def test_image_list_loads_greyscale_files_as_rgb(tmp_path):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    (tmp_path / "list.txt").write_text("g.png 0\n")
    image = ImageListSource(tmp_path, tmp_path / "list.txt").load(0)
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), np.repeat(grey[..., None], 3, axis=-1))


def test_image_list_unreadable_file_message(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    split = tmp_path / "list.txt"
    split.write_text("\nbroken.png 0\n")
    with pytest.raises(UnidentifiedImageError) as pil:  # PIL's own error for this file
        Image.open(bad)
    pil_error = f"UnidentifiedImageError: {pil.value}"
    with raises(
        BadImageError,
        f"cannot read image '{bad}' ({split}:2): {pil_error}. Replace or "
        "remove the file, or set data.bad_images=skip to train without it",
    ):
        ImageListSource(tmp_path, split).load(0)
