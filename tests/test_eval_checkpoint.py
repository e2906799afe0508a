"""Pretrained-backbone loading: round trip with the tiny convnet, and every error case."""

import json
import os

import pytest
import torch

from solo_multiview.eval.checkpoint import (
    check_backbone_config,
    find_checkpoint,
    load_pretrained_backbone,
)
from solo_multiview.hosts.backbones import build_backbone

KWARGS = {"width": 4, "depth": 2}
ARGS = {"method": "simclr", "backbone": {"name": "convnet", "kwargs": KWARGS},
        "data": {"dataset": "digits", "num_classes": 10}}


def trained_backbone():
    torch.manual_seed(0)
    net = build_backbone("convnet", "digits", KWARGS)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
        for name, b in net.named_buffers():
            if "running" in name:
                b.uniform_(0.5, 1.5)
    return net


def save(folder, state, args=ARGS, name="last.ckpt"):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "epoch": 3, "global_step": 30}, folder / name)
    if args is not None:
        (folder / "args.json").write_text(json.dumps(args))
    return folder / name


def lightning_state(net):
    state = {"backbone." + k: v for k, v in net.state_dict().items()}
    state.update({"momentum_backbone." + k: v + 1 for k, v in net.state_dict().items()})
    state["projector.w"] = torch.ones(3, 3)
    return state


def test_round_trip(tmp_path):
    net = trained_backbone()
    ckpt = save(tmp_path / "run", lightning_state(net))
    loaded, cfg = load_pretrained_backbone(ckpt)
    assert cfg == ARGS
    assert not loaded.training
    ref, got = net.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(loaded(x), net.eval()(x))
    # a directory resolves to its checkpoint
    assert load_pretrained_backbone(tmp_path / "run")[1] == ARGS


def test_directory_picks_newest(tmp_path):
    net = trained_backbone()
    old = save(tmp_path, lightning_state(net), name="ep=9.ckpt")
    new = save(tmp_path, lightning_state(net), name="ep=1.ckpt")
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(new, (2_000_000, 2_000_000))
    assert find_checkpoint(tmp_path) == new
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.ckpt file in directory .*empty"):
        find_checkpoint(tmp_path / "empty")


class Trusted:
    """Stands for an arbitrary pickled object (e.g. hyper-parameters) in a checkpoint."""


def test_weights_only_refuses_arbitrary_objects(tmp_path):
    net = trained_backbone()
    ckpt = save(tmp_path, lightning_state(net))
    obj = torch.load(ckpt, weights_only=True)
    obj["hyper_parameters"] = Trusted()
    torch.save(obj, ckpt)
    with pytest.raises(ValueError, match="weights_only=False"):
        load_pretrained_backbone(ckpt)
    loaded, _ = load_pretrained_backbone(ckpt, weights_only=False)
    key = "features.0.weight"
    assert torch.equal(loaded.state_dict()[key], net.state_dict()[key])


def test_explicit_args_path(tmp_path):
    net = trained_backbone()
    ckpt = save(tmp_path / "ckpt", lightning_state(net), args=None)
    args = tmp_path / "elsewhere.json"
    args.write_text(json.dumps(ARGS))
    _, cfg = load_pretrained_backbone(ckpt, args_path=args)
    assert cfg["backbone"]["name"] == "convnet"


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_pretrained_backbone(tmp_path / "nope.ckpt")
    ckpt = save(tmp_path, lightning_state(trained_backbone()), args=None)
    with pytest.raises(FileNotFoundError, match="args.json"):
        load_pretrained_backbone(ckpt)


def test_no_backbone_weights(tmp_path):
    state = {k.replace("backbone.", "encoder.", 1): v
             for k, v in lightning_state(trained_backbone()).items() if k.startswith("backbone.")}
    state["momentum_backbone.features.0.weight"] = torch.zeros(1)
    ckpt = save(tmp_path, state)
    with pytest.raises(ValueError, match="no 'backbone.' weights") as err:
        load_pretrained_backbone(ckpt)
    assert str(ckpt) in str(err.value)


def test_missing_unexpected_and_misshaped_keys(tmp_path):
    state = lightning_state(trained_backbone())
    missing = dict(state)
    del missing["backbone.features.1.running_var"]
    with pytest.raises(ValueError, match="missing keys.*running_var"):
        load_pretrained_backbone(save(tmp_path / "a", missing))
    extra = dict(state, **{"backbone.head.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match="unexpected keys.*head.weight"):
        load_pretrained_backbone(save(tmp_path / "b", extra))
    wider = dict(ARGS, backbone={"name": "convnet", "kwargs": {"width": 8, "depth": 2}})
    with pytest.raises(ValueError, match="does not fit"):
        load_pretrained_backbone(save(tmp_path / "c", state, args=wider))


def test_bad_checkpoint_and_args_content(tmp_path):
    torch.save({"model": {}}, tmp_path / "x.ckpt")
    (tmp_path / "args.json").write_text(json.dumps(ARGS))
    with pytest.raises(ValueError, match="state_dict"):
        load_pretrained_backbone(tmp_path / "x.ckpt")
    (tmp_path / "args.json").write_text(json.dumps({"backbone": {"name": "convnet"}}))
    with pytest.raises(ValueError, match="data.dataset"):
        load_pretrained_backbone(tmp_path / "x.ckpt")


def test_check_backbone_config():
    check_backbone_config({"backbone": {"name": "convnet"}, "data": {"dataset": "digits"}}, ARGS)
    check_backbone_config({"data": {"dataset": "digits"}}, ARGS)  # unset name: not compared
    with pytest.raises(ValueError, match="'resnet18'.*'convnet'"):
        check_backbone_config({"backbone": {"name": "resnet18"}}, ARGS)
    with pytest.raises(ValueError, match="data.dataset.*'cifar10'.*'digits'.*run/last.ckpt"):
        check_backbone_config({"data": {"dataset": "cifar10"}}, ARGS, "run/last.ckpt")


def test_check_backbone_config_accepts_omegaconf():
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"backbone": {"name": "convnet"},
                                      "data": {"dataset": "cifar100"}})
    with pytest.raises(ValueError, match="cifar100"):
        check_backbone_config(cfg, ARGS)
