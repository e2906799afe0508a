"""main_linear.py and main_knn.py on a checkpoint of main_pretrain.py (quickstart digits).

One short pretraining (subprocess, shared by the session and by test_solo_interop.py), then the
entry points as a user runs them (subprocesses) and their preparation / error paths in-process.
Successful runs write under explicit results folders, so the checkpoint folder's default
``eval/`` must never appear: the error tests check that.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from solo_multiview.eval.eval_config import parse_eval_cfg, parse_train_set
from solo_multiview.eval.feature_cache import cached_features, feature_key
from solo_multiview.eval.prepare import prepare_eval
from solo_multiview.eval.run_knn import evaluate_knn
from solo_multiview.eval.run_linear import evaluate_linear
from solo_multiview.hosts.backbones import build_backbone
from tests.helpers import ROOT

LINEAR_CONFIGS = ROOT / "scripts" / "linear"
# 2 shared cores: one intra-op thread keeps tiny matrix products from stalling on contention
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
DIGITS_TRAIN, DIGITS_TEST, DIGITS_CLASSES = 1397, 400, 10
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def digits_lt_counts() -> List[int]:
    """exp profile, ratio 10, n_max = the smallest digits class (134), computed here from the
    formula n_c = floor(n_max * rho^(-c/(C-1))) rather than by the data layer."""
    return [math.floor(134 * 10 ** (-c / 9) + 1e-9) for c in range(10)]


def pretrain_quickstart(base: Path) -> Path:
    """The run folder of a 3-step quickstart pretraining under ``base`` (made once; later calls,
    from either test file, reuse it)."""
    folder = base / "quickstart_pretrain"
    marker = folder / "run_dir.txt"
    if marker.is_file():
        return Path(marker.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main_pretrain.py"), "--config-name", "quickstart_digits",
         "max_epochs=1", "+limit_train_batches=3", "+limit_val_batches=1", "host=builtin",
         "+enable_progress_bar=false", "+enable_model_summary=false",
         f"checkpoint.dir={folder / 'models'}"],
        capture_output=True, text=True, cwd=folder, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = Path(re.search(r"^run folder: (.+)$", proc.stdout, re.M).group(1))
    run_dir = run_dir if run_dir.is_absolute() else folder / run_dir
    assert list(run_dir.glob("*.ckpt")) and (run_dir / "args.json").is_file()
    marker.write_text(str(run_dir))
    return run_dir


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory) -> Path:
    return pretrain_quickstart(tmp_path_factory.getbasetemp())


def run_entry(script: str, config: str, overrides: Iterable[str], cwd: Path):
    return subprocess.run(
        [sys.executable, str(ROOT / script), "--config-name", config, *overrides],
        capture_output=True, text=True, cwd=cwd, timeout=600, env=ENV)


def compose_eval(config: str, overrides: Iterable[str] = ()):
    with initialize_config_dir(config_dir=str(LINEAR_CONFIGS), version_base="1.2"):
        cfg = compose(config_name=config, overrides=list(overrides))
    OmegaConf.set_struct(cfg, False)
    return cfg


def check_results_folder(folder: Path, train_images: int) -> Dict:
    results = json.loads((folder / "results.json").read_text())
    assert 0.0 <= results["top1"] <= 100.0
    assert results["top5"] is not None and results["top1"] <= results["top5"] <= 100.0
    assert results["num_classes"] == DIGITS_CLASSES and results["num_samples"] == DIGITS_TEST
    assert results["train_counts"] == digits_lt_counts()  # the pretraining set's counts
    assert set(results["groups"]) == {"thirds", "thresholds"}
    assert results["groups"]["thirds"]["sizes"] == {"many": 4, "medium": 3, "few": 3}
    # thresholds >100 / 20..100 / <20 on 134, 103, 80, ..., 22, 17, 13
    assert results["groups"]["thresholds"]["sizes"] == {"many": 2, "medium": 6, "few": 2}
    # a group's accuracy is the mean of its classes' accuracies
    per_class = np.asarray(results["per_class_acc"])
    for info in results["groups"].values():
        members = np.asarray(info["group_of_class"])
        assert info["acc"] == pytest.approx(
            {name: per_class[members == g].mean() for g, name in
             enumerate(("many", "medium", "few"))})
    # top-1 on a balanced test set = the mean of the per-class accuracies
    assert results["top1"] == pytest.approx(np.mean(results["per_class_acc"]))
    assert results["settings"]["data"]["train_images"] == train_images
    with open(folder / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["class_id"]) for r in rows] == list(range(DIGITS_CLASSES))
    assert [int(r["train_count"]) for r in rows] == digits_lt_counts()
    png = (folder / "per_class.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    return results


@pytest.fixture(scope="module")
def linear_first(quickstart_run, tmp_path_factory):
    """main_linear.py once (fresh feature cache)."""
    work = tmp_path_factory.mktemp("linear")
    proc = run_entry("main_linear.py", "quickstart_digits",
                     [f"pretrained_feature_extractor={quickstart_run}", "max_epochs=30",
                      f"results.dir={work / 'results'}"], work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, proc


@pytest.mark.slow
def test_main_linear_writes_results(linear_first):
    work, proc = linear_first
    folder = work / "results" / "linear-balanced"
    results = check_results_folder(folder, DIGITS_TRAIN)
    assert results["settings"]["feature_cache"]["train"]["reused"] is False
    assert results["settings"]["probe"]["mode"] == "features"
    assert results["settings"]["probe"]["epochs"] == 30
    # the summary table with both rules and the group sizes
    assert re.search(r"^thirds .* 4/3/3$", proc.stdout, re.M), proc.stdout
    assert re.search(r"^thresholds .* 2/6/2 ", proc.stdout, re.M), proc.stdout
    assert str(folder / "results.json") in proc.stdout


@pytest.mark.slow
def test_main_linear_reuses_the_feature_cache(linear_first, quickstart_run):
    work, _ = linear_first
    first = json.loads((work / "results" / "linear-balanced" / "results.json").read_text())
    proc = run_entry("main_linear.py", "quickstart_digits",
                     [f"pretrained_feature_extractor={quickstart_run}", "max_epochs=30",
                      f"results.dir={work / 'results'}", "results.name=again"], work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((work / "results" / "again" / "results.json").read_text())
    cache = again["settings"]["feature_cache"]
    assert cache["train"]["reused"] and cache["test"]["reused"]
    assert cache == {**first["settings"]["feature_cache"],
                     "train": {**first["settings"]["feature_cache"]["train"], "reused": True},
                     "test": {**first["settings"]["feature_cache"]["test"], "reused": True}}
    assert re.search(r"^features \(train\): .* reused", proc.stdout, re.M)
    # same features, same seed: the same probe and numbers
    assert again["per_class_acc"] == first["per_class_acc"]


@pytest.mark.slow
def test_main_knn_on_the_long_tailed_bank(linear_first, quickstart_run):
    work, _ = linear_first
    proc = run_entry("main_knn.py", "knn_quickstart_digits",
                     [f"pretrained_feature_extractor={quickstart_run}", "train_set=longtail",
                      "knn.k=20", f"results.dir={work / 'results'}"], work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = work / "results" / "knn-longtail-k20-t0.1"
    results = check_results_folder(folder, sum(digits_lt_counts()))
    assert results["settings"]["knn"] == {"k": 20, "k_used": 20, "temperature": 0.1,
                                          "distance": "cosine"}
    assert results["settings"]["data"]["train_class_counts"] == digits_lt_counts()
    # the test features were cached by main_linear.py and are shared
    assert results["settings"]["feature_cache"]["test"]["reused"] is True
    assert results["settings"]["feature_cache"]["train"]["reused"] is False


@pytest.mark.slow
def test_missing_checkpoint_exits_before_writing(tmp_path):
    missing = tmp_path / "no_such_run"
    proc = run_entry("main_linear.py", "quickstart_digits",
                     [f"pretrained_feature_extractor={missing}",
                      f"results.dir={tmp_path / 'results'}"], tmp_path)
    assert proc.returncode == 2
    assert "pretrained checkpoint" in proc.stderr and str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- in-process
def call_main(module_name: str, config: str, overrides: List[str], monkeypatch, capsys):
    """``python main_linear.py ...`` / ``main_knn.py`` run as ``__main__`` in this process (as
    Hydra needs, to find its config folder beside the script); returns (exit code, stderr)."""
    script = ROOT / f"{module_name}.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--config-name", config, *overrides])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    return exit_info.value.code, capsys.readouterr().err


def copy_run(run_dir: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in run_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, dest / f.name)
    return dest


@pytest.fixture
def run_without_backbone(quickstart_run, tmp_path) -> Path:
    """A copy of the run whose checkpoint keeps the weights under ``encoder.`` instead."""
    run = copy_run(quickstart_run, tmp_path / "renamed")
    ckpt = next(run.glob("*.ckpt"))
    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    obj["state_dict"] = {k.replace("backbone.", "encoder."): v
                         for k, v in obj["state_dict"].items()}
    torch.save(obj, ckpt)
    return run


@pytest.mark.slow
@pytest.mark.parametrize("module, config", [("main_linear", "quickstart_digits"),
                                            ("main_knn", "knn_quickstart_digits")])
@pytest.mark.parametrize("case", ["no_backbone_keys", "backbone", "dataset", "probe_set",
                                  "unknown_key", "missing_key"])
def test_bad_input_exits_before_writing(case, module, config, quickstart_run,
                                        run_without_backbone, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    ckpt = run_without_backbone if case == "no_backbone_keys" else quickstart_run
    overrides = {
        "no_backbone_keys": [],
        "backbone": ["backbone.name=resnet18"],
        "dataset": ["data.dataset=cifar10"],
        "probe_set": ["train_set=sometimes"],
        "unknown_key": ["+data.crop=3"],
        "missing_key": [],
    }[case]
    if case != "missing_key":
        overrides.append(f"pretrained_feature_extractor={ckpt}")
    code, err = call_main(module, config, [*overrides, f"results.dir={results}"],
                          monkeypatch, capsys)
    expected = {
        "no_backbone_keys": "holds no 'backbone.' weights",
        "backbone": "backbone.name: the evaluation config asks for 'resnet18' but the "
                    "checkpoint was pretrained with 'convnet'",
        "dataset": "data.dataset: the evaluation config asks for 'cifar10' but the checkpoint "
                   "was pretrained with 'digits'",
        "probe_set": "train_set: unknown value 'sometimes'",
        "unknown_key": "data.crop: unknown key",
        "missing_key": "pretrained_feature_extractor: missing",
    }[case]
    assert code == 2, err
    assert err.startswith("error: ") and expected in err, err
    assert not results.exists()
    assert not (quickstart_run / "eval").exists()
    assert not (run_without_backbone / "eval").exists()



@pytest.mark.slow
def test_checkpoint_path_pasted_as_printed(quickstart_run, tmp_path, monkeypatch, capsys):
    """The checkpoint file as the pretraining prints it (``...-ep=<N>.ckpt``, an ``=`` Hydra's
    grammar refuses unquoted) works on main_knn.py's command line as it is."""
    ckpt = next(quickstart_run.glob("*-ep=*.ckpt"))
    script = ROOT / "main_knn.py"
    monkeypatch.setattr(sys, "argv", [
        str(script), "--config-name", "knn_quickstart_digits",
        f"pretrained_feature_extractor={ckpt}", "train_set=3", "knn.k=5",
        f"results.dir={tmp_path}", "results.plot=false", "results.cache_features=false"])
    runpy.run_path(str(script), run_name="__main__")
    saved = json.loads((tmp_path / "knn-shots3-k5-t0.1" / "results.json").read_text())
    assert saved["settings"]["checkpoint"] == str(ckpt)
    assert f"checkpoint: {ckpt}" in capsys.readouterr().out

@pytest.mark.slow
def test_probe_sets_pick_the_right_images(quickstart_run):
    base = [f"pretrained_feature_extractor={quickstart_run}"]
    sizes = {}
    for train_set in ("balanced", "longtail", "7"):
        prep = prepare_eval(compose_eval("quickstart_digits", [*base, f"train_set={train_set}"]),
                            "linear", log=lambda _: None)
        counts = prep.data.train.class_counts
        sizes[train_set] = (len(prep.data.train), counts.tolist())
        # whatever the probe set, the groups come from the pretraining set
        assert prep.data.pretrain_counts.tolist() == digits_lt_counts()
        assert len(prep.data.test) == DIGITS_TEST
    assert sizes["balanced"][0] == DIGITS_TRAIN
    assert sizes["longtail"] == (sum(digits_lt_counts()), digits_lt_counts())
    assert sizes["7"] == (70, [7] * 10)
    # the long-tailed set follows an override of args.json's data.long_tail
    prep = prepare_eval(compose_eval("quickstart_digits", [
        *base, "train_set=longtail", "data.long_tail.imbalance_ratio=2"]), "linear", log=print)
    expected = [math.floor(134 * 2 ** (-c / 9) + 1e-9) for c in range(10)]
    assert prep.data.train.class_counts.tolist() == expected
    assert prep.data.pretrain_counts.tolist() == expected
    # too many shots for the smallest class: a clear error naming the key
    with pytest.raises(ValueError, match=r"train_set=500: .*134"):
        prepare_eval(compose_eval("quickstart_digits", [*base, "train_set=500"]), "linear")


@pytest.mark.slow
def test_augmented_probe_keeps_the_backbone_frozen(quickstart_run, tmp_path):
    cfg = compose_eval("quickstart_digits", [
        f"pretrained_feature_extractor={quickstart_run}", "probe.mode=augmented", "train_set=3",
        "max_epochs=2", "optimizer.batch_size=8", f"results.dir={tmp_path}",
        "results.plot=false"])
    prep = prepare_eval(cfg, "linear", log=lambda _: None)
    before = {k: v.clone() for k, v in prep.backbone.state_dict().items()}
    result = evaluate_linear(prep)
    after = prep.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    assert not prep.backbone.training
    assert result.out_dir == tmp_path / "linear-shots3-aug"
    saved = json.loads((result.out_dir / "results.json").read_text())
    assert saved["settings"]["probe"]["mode"] == "augmented"
    assert saved["settings"]["probe"]["augmentation"]["horizontal_flip"] == 0.0
    assert saved["settings"]["data"]["train_images"] == 30
    assert sorted(p.name for p in result.out_dir.iterdir()) == ["per_class.csv", "results.json"]


# --------------------------------------------------------------------------- units
def test_train_set_values():
    assert parse_train_set("balanced") == "balanced"
    assert parse_train_set("longtail") == "longtail"
    assert parse_train_set(5) == 5 and parse_train_set("12") == 12
    for bad in (0, -3, "few", True, 2.5):
        with pytest.raises(ValueError, match="train_set"):
            parse_train_set(bad)


@pytest.mark.parametrize("overrides, message", [
    (["knn.k=0"], "knn.k: expected an int >= 1"),
    (["knn.temperature=0.001"], "knn.temperature: expected a number >= "),
    (["device=tpu"], "device: "),
    (["results.name=a/b"], "results.name: 'a/b' must be a plain folder name"),
    (["data.crop_size=32", "data.resize=16"], "data.resize: 16 is smaller"),
    (["+probe.mode=features"], "probe: unknown key for main_knn.py"),
])
def test_knn_config_errors_name_the_key(overrides, message):
    cfg = compose_eval("knn_quickstart_digits",
                       ["pretrained_feature_extractor=/some/run", *overrides])
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_eval_cfg(cfg, "knn")


@pytest.mark.parametrize("overrides, message", [
    (["probe.mode=finetune"], "probe.mode: unknown value 'finetune'"),
    (["optimizer.name=lars"], "optimizer.name: unknown value 'lars'"),
    (["optimizer.lr=0"], "optimizer.lr: expected a number > 0"),
    (["max_epochs=0"], "max_epochs: expected an int >= 1"),
    (["probe.augmentation.horizontal_flip=2"], "probe.augmentation.horizontal_flip"),
    (["+knn.k=3"], "knn: unknown key for main_linear.py"),
])
def test_linear_config_errors_name_the_key(overrides, message):
    cfg = compose_eval("quickstart_digits", ["pretrained_feature_extractor=/some/run", *overrides])
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_eval_cfg(cfg, "linear")


@pytest.mark.parametrize("config", sorted(p.stem for p in LINEAR_CONFIGS.glob("*.yaml")))
def test_every_shipped_config_validates(config):
    kind = "knn" if config.startswith("knn_") else "linear"
    cfg = parse_eval_cfg(compose_eval(config, ["pretrained_feature_extractor=/some/run"]), kind)
    assert cfg.backbone.name in ("resnet18", "resnet50", "convnet")
    assert cfg.data.dataset in ("cifar10", "cifar100", "image_list", "digits")
    if cfg.data.dataset == "image_list":
        assert cfg.data.val_split_file and cfg.data.long_tail.split_file


class _TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        self.calls += 1
        return self.conv(x).mean(dim=(2, 3))


def test_feature_cache_hits_misses_and_repairs(tmp_path):
    from solo_multiview.data.augmentations import EvalTransform
    from solo_multiview.data.datasets import IndexedSubset
    from solo_multiview.data.sources import ArraySource

    rng = np.random.default_rng(0)
    source = ArraySource(rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8),
                         np.arange(12) % 3)
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"weights")
    net = _TinyNet().eval()
    images = {"crop_size": 8, "resize": 8}

    def features(indexes, cache=tmp_path / "cache", img=images):
        data = IndexedSubset(source, np.asarray(indexes), EvalTransform(8, "digits"))
        key = feature_key(ckpt, data, {"dataset": "t", "split": "train"}, img)
        return cached_features(net, data, key, "train", cache, torch.device("cpu"), batch_size=5)

    first = features(range(10))
    assert not first.reused and first.path.is_file() and net.calls == 2
    again = features(range(10))
    assert again.reused and again.path == first.path and net.calls == 2
    assert torch.equal(again.features, first.features)
    assert torch.equal(again.labels, torch.as_tensor(source.targets[:10]))
    # other images or other settings: another entry
    other = features(range(2, 12))
    assert not other.reused and other.path != first.path
    assert not features(range(10), img={**images, "resize": 9}).reused
    # a damaged entry is recomputed and rewritten
    first.path.write_bytes(b"not a torch file")
    repaired = features(range(10))
    assert not repaired.reused and torch.allclose(repaired.features, first.features)
    assert features(range(10)).reused
    # caching off: nothing written
    off = features(range(10), cache=None)
    assert off.path is None and not off.reused


@pytest.fixture
def image_list_run(tmp_path) -> Dict[str, Path]:
    """A fake image_list pretraining (random convnet weights) with ImageNet-LT-style lists:
    long-tailed train list 6/3/1, balanced train list 3/3/3, test list 2/2/2 (20x20 images)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    lists = {"lt": [], "balanced": [], "test": []}
    for c, n_lt in enumerate((6, 3, 1)):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(8):
            rel = f"c{c}/{i}.png"
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / rel)
            if i < n_lt:
                lists["lt"].append(f"{rel} {c}")
            if i < 3:
                lists["balanced"].append(f"{rel} {c}")
            if i >= 6:
                lists["test"].append(f"{rel} {c}")
    files = {name: tmp_path / f"{name}.txt" for name in lists}
    for name, lines in lists.items():
        files[name].write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    run.mkdir()
    kwargs = {"width": 4, "depth": 2}
    state = {f"backbone.{k}": v for k, v in build_backbone("convnet", "image_list",
                                                           kwargs).state_dict().items()}
    torch.save({"state_dict": state}, run / "fake-ep=0.ckpt")
    (run / "args.json").write_text(json.dumps({
        "method": "mv_simclr", "backbone": {"name": "convnet", "kwargs": kwargs},
        "augmentations": [{"crop_size": 16}],
        "data": {"dataset": "image_list", "train_path": str(root), "num_classes": 3,
                 "long_tail": {"profile": "none", "split_file": str(files["lt"])}}}))
    return {"run": run, "root": root, **files}


def test_image_list_probe_sets_and_knn(image_list_run, tmp_path):
    f = image_list_run
    base = [f"pretrained_feature_extractor={f['run']}", "backbone.name=convnet",
            f"data.train_path={f['root']}", f"data.val_path={f['root']}",
            f"data.val_split_file={f['test']}", f"data.long_tail.split_file={f['lt']}",
            "data.crop_size=16", "data.resize=18", "data.num_workers=0", "device=cpu",
            f"results.dir={tmp_path / 'results'}", "knn.k=4"]
    with pytest.raises(ValueError, match="data.balanced_split_file"):
        prepare_eval(compose_eval("knn_imagenetlt", [*base, "train_set=balanced"]), "knn")
    with_balanced = [*base, f"data.balanced_split_file={f['balanced']}"]
    sizes = {}
    for train_set in ("balanced", "longtail", "2"):
        prep = prepare_eval(compose_eval("knn_imagenetlt", [*with_balanced,
                                                            f"train_set={train_set}"]),
                            "knn", log=lambda _: None)
        assert prep.data.pretrain_counts.tolist() == [6, 3, 1]
        sizes[train_set] = prep.data.train.class_counts.tolist()
    assert sizes == {"balanced": [3, 3, 3], "longtail": [6, 3, 1], "2": [2, 2, 2]}
    # shots come from the balanced list: 4 per class exceed it
    with pytest.raises(ValueError, match="train_set=4"):
        prepare_eval(compose_eval("knn_imagenetlt", [*with_balanced, "train_set=4"]), "knn")
    assert not (tmp_path / "results").exists()

    result = evaluate_knn(prep)  # bank: 2 images per class from the balanced list
    saved = json.loads((result.out_dir / "results.json").read_text())
    assert saved["num_samples"] == 6 and saved["top5"] is None  # 3 classes: no top-5
    assert saved["groups"]["thresholds"]["sizes"] == {"many": 0, "medium": 0, "few": 3}
    assert saved["groups"]["thirds"]["sizes"] == {"many": 1, "medium": 1, "few": 1}
    assert saved["settings"]["data"]["images"]["resize"] == 18
    assert prep.data.test[0][1].shape == (3, 16, 16)
