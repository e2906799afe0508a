"""Exact values of the built-in host's optimizer plumbing and base classes: ``split_bias_and_norm``
(every group, every parameter by identity), ``build_optimizer`` (class, per-group lr / weight
decay / momentum / betas / LARS trust settings), ``optimizer_kwargs``' betas rule and messages,
``schedule_lengths`` at its edges, ``build_scheduler``'s messages and warm-up start,
``BaseMethod`` / ``BaseMomentumMethod`` built from a small hand-written config (attributes, lr
scaling, ``configure_optimizers`` with a stand-in trainer, validation bookkeeping, EMA step), and
the backbone helpers (``ConvNet`` layers, ``adapt_backbone`` / ``build_backbone`` on a stub ResNet,
``check_backbone_kwargs`` / stem messages)."""

from __future__ import annotations

import math
import re
import types

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from solo_multiview.config.schema import ConfigError
from solo_multiview.hosts import backbones as bb
from solo_multiview.hosts import builtin
from solo_multiview.hosts.builtin import BaseMethod, BaseMomentumMethod
from solo_multiview.hosts.optim import (
    build_optimizer,
    build_scheduler,
    cosine_tau,
    optimizer_kwargs,
    schedule_lengths,
    split_bias_and_norm,
)


def ids(params):
    return [id(p) for p in params]


def described(groups):
    """Each group as (its keys but params, params by identity)."""
    return [({k: v for k, v in g.items() if k != "params"}, ids(g["params"])) for g in groups]


# ------------------------------------------------------------------ split_bias_and_norm
def test_split_bias_and_norm_moves_one_d_params_into_twin_groups():
    w, b, s = nn.Parameter(torch.ones(2, 3)), nn.Parameter(torch.ones(3)), nn.Parameter(
        torch.tensor(1.0))
    w4 = nn.Parameter(torch.ones(2, 1, 3, 3))
    cw, cb = nn.Parameter(torch.ones(4, 2)), nn.Parameter(torch.ones(4))
    uw, ub = nn.Parameter(torch.ones(5, 2)), nn.Parameter(torch.ones(5))
    only_1d = nn.Parameter(torch.ones(6))
    only_2d = nn.Parameter(torch.ones(6, 6))
    groups = [
        {"name": "cls", "params": iter([cw, cb]), "weight_decay": 0, "lr": 0.5},
        {"name": "backbone", "params": [w, b, s, w4], "weight_decay": 0.3},
        {"params": [uw, ub]},                                   # no name, no weight_decay
        {"name": "bn", "params": [only_1d], "weight_decay": 1},  # 1-d only: no empty twin
        {"name": "fc", "params": [only_2d], "weight_decay": 1.0},
    ]
    result = split_bias_and_norm(groups)
    assert described(result) == [
        ({"name": "cls", "weight_decay": 0, "lr": 0.5}, ids([cw, cb])),
        ({"name": "backbone", "weight_decay": 0.3}, ids([w, w4])),
        ({"name": "backbone_no_wd", "weight_decay": 0.0}, ids([b, s])),
        ({}, ids([uw])),
        ({"name": "_no_wd", "weight_decay": 0.0}, ids([ub])),
        ({"name": "bn_no_wd", "weight_decay": 0.0}, ids([only_1d])),
        ({"name": "fc", "weight_decay": 1.0}, ids([only_2d])),
    ]
    assert all(isinstance(g["params"], list) for g in result)
    assert [type(g["weight_decay"]) for g in result if "weight_decay" in g] == [
        int, float, float, float, float, float]


# ------------------------------------------------------------------ build_optimizer
def two_groups():
    w, b = nn.Parameter(torch.ones(3, 2)), nn.Parameter(torch.ones(3))
    cw, cb = nn.Parameter(torch.ones(2, 3)), nn.Parameter(torch.ones(2))
    groups = [{"name": "backbone", "params": [w, b]},
              {"name": "classifier", "params": [cw, cb], "lr": 0.07, "weight_decay": 0}]
    return groups, (w, b, cw, cb)


def test_build_optimizer_sgd_groups_and_settings():
    groups, (w, b, cw, cb) = two_groups()
    opt = build_optimizer("sgd", groups, 0.3, 0.02, {"momentum": 0.8, "nesterov": True})
    assert type(opt) is torch.optim.SGD
    g0, g1 = opt.param_groups
    assert ids(g0["params"]) == ids([w, b]) and ids(g1["params"]) == ids([cw, cb])
    assert (g0["name"], g0["lr"], g0["weight_decay"], g0["momentum"], g0["nesterov"]) == (
        "backbone", 0.3, 0.02, 0.8, True)
    assert (g1["name"], g1["lr"], g1["weight_decay"], g1["momentum"], g1["nesterov"]) == (
        "classifier", 0.07, 0, 0.8, True)
    assert opt.defaults["lr"] == 0.3 and opt.defaults["weight_decay"] == 0.02


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_build_optimizer_adam_groups_and_settings(name, cls):
    groups, (w, b, cw, cb) = two_groups()
    opt = build_optimizer(name, groups, 0.3, 0.05, {"betas": (0.8, 0.9), "eps": 1e-6})
    assert type(opt) is cls
    g0, g1 = opt.param_groups
    assert ids(g0["params"]) == ids([w, b]) and ids(g1["params"]) == ids([cw, cb])
    assert (g0["lr"], g0["weight_decay"], tuple(g0["betas"]), g0["eps"]) == (
        0.3, 0.05, (0.8, 0.9), 1e-6)
    assert (g1["lr"], g1["weight_decay"], tuple(g1["betas"]), g1["eps"]) == (
        0.07, 0, (0.8, 0.9), 1e-6)


def test_build_optimizer_lars_passes_eta_clip_and_momentum():
    from timm.optim import Lars

    groups, (w, b, cw, cb) = two_groups()
    opt = build_optimizer("lars", groups, 0.3, 0.02,
                          {"momentum": 0.8, "eta": 0.02, "clip_lr": True,
                           "exclude_bias_n_norm": False})
    assert type(opt) is Lars
    g0, g1 = opt.param_groups
    assert ids(g0["params"]) == ids([w, b]) and ids(g1["params"]) == ids([cw, cb])
    assert (g0["name"], g0["lr"], g0["weight_decay"], g0["momentum"]) == (
        "backbone", 0.3, 0.02, 0.8)
    assert g0["trust_coeff"] == 0.02 and g0["trust_clip"] is True
    assert g0["always_adapt"] is True
    assert (g1["lr"], g1["weight_decay"]) == (0.07, 0)


def test_build_optimizer_lars_defaults_when_kwargs_are_absent():
    groups, (w, b, cw, cb) = two_groups()
    opt = build_optimizer("lars", groups, 0.3, 0.02, {})
    assert [ids(g["params"]) for g in opt.param_groups] == [ids([w, b]), ids([cw, cb])]
    g0 = opt.param_groups[0]
    assert g0["trust_coeff"] == 1e-3 and g0["trust_clip"] is False
    assert g0["always_adapt"] is True and g0["momentum"] == 0


def test_build_optimizer_lars_exclude_splits_groups_and_stops_adapting():
    groups, (w, b, cw, cb) = two_groups()
    given = {"exclude_bias_n_norm": True, "eta": 0.02, "clip_lr": False}
    opt = build_optimizer("lars", groups, 0.3, 0.02, given)
    assert given == {"exclude_bias_n_norm": True, "eta": 0.02, "clip_lr": False}
    assert [(g["name"], ids(g["params"]), g["weight_decay"]) for g in opt.param_groups] == [
        ("backbone", ids([w]), 0.02), ("backbone_no_wd", ids([b]), 0.0),
        ("classifier", ids([cw, cb]), 0)]
    assert [g["always_adapt"] for g in opt.param_groups] == [False] * 3
    assert opt.param_groups[0]["trust_clip"] is False
    assert opt.param_groups[0]["lr"] == 0.3


def test_build_optimizer_unknown_name_message():
    groups, _ = two_groups()
    with pytest.raises(ValueError) as excinfo:
        build_optimizer("rmsprop", groups, 0.1, 0.0, {})
    assert str(excinfo.value) == ("optimizer.name: unknown optimizer 'rmsprop'; choose one of "
                                  "('sgd', 'lars', 'adam', 'adamw')")


# ------------------------------------------------------------------ optimizer_kwargs
def test_optimizer_kwargs_messages_name_the_key():
    with pytest.raises(ConfigError) as excinfo:
        optimizer_kwargs("sgd", {"foo": 1})
    assert str(excinfo.value) == ("optimizer.kwargs.foo: unknown key; the keys here are "
                                  "['momentum', 'nesterov']")


@pytest.mark.parametrize("betas", [[0.0, 0.5], [0.9, 0.999], [0.5, 0.99999]])
def test_optimizer_kwargs_accepts_betas_in_unit_interval(betas):
    assert optimizer_kwargs("adam", {"betas": betas}) == {"betas": betas, "eps": 1e-8}


@pytest.mark.parametrize("betas", [[0.9, 1.0], [0.9, 1.5], [0.9, 0.99, 0.5], [0.9], [-0.1, 0.9]])
def test_optimizer_kwargs_refuses_other_betas(betas):
    with pytest.raises(ConfigError) as excinfo:
        optimizer_kwargs("adamw", {"betas": betas})
    assert str(excinfo.value) == (f"optimizer.kwargs.betas: got {betas}; expected two numbers "
                                  "in [0, 1)")


# ------------------------------------------------------------------ schedule_lengths
@pytest.mark.parametrize("args,expected", [
    ((1, "step", float("inf"), 1, 50, 1), (50, 50)),      # one epoch: all the steps
    ((1, "step", float("inf"), 1, 50, 0), (50, 50)),
    ((1, "step", 1, 1, 10, 10), (1, 10)),                 # one batch an epoch: one step
    ((2, "step", 0, 1, 50, 5), (20, 50)),                 # no batches known: total / epochs
    ((2, "step", 1, 1, 50, 5), (2, 50)),
    ((1, "epoch", 10, 1, 100, 5), (1, 5)),                # max_epochs bounds the schedule
    ((1, "epoch", 10, 1, 30, -1), (1, 3)),                # unbounded epochs: the steps decide
    ((1, "epoch", 10, 1, 30, 0), (1, 3)),
    ((1, "epoch", 10, 1, 30, 1), (1, 1)),
])
def test_schedule_lengths_edges(args, expected):
    assert schedule_lengths(*args) == expected


# ------------------------------------------------------------------ build_scheduler
def one_group_sgd(lr=0.4):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def test_build_scheduler_messages():
    with pytest.raises(ValueError) as excinfo:
        build_scheduler(one_group_sgd(), [False], name="cyclic", warmup_steps=0, total_steps=4,
                        warmup_start_lr=0.0, min_lr=0.0)
    assert str(excinfo.value) == ("scheduler.name: unknown scheduler 'cyclic'; choose one of "
                                  "('warmup_cosine', 'step', 'none')")
    with pytest.raises(ValueError) as excinfo:
        build_scheduler(one_group_sgd(), [False], name="step", warmup_steps=0, total_steps=4,
                        warmup_start_lr=0.0, min_lr=0.0, milestones=None)
    assert str(excinfo.value) == ("scheduler.lr_decay_steps: the step scheduler needs a list of "
                                  "epochs")


@pytest.mark.parametrize("warmup", [1, 2])
def test_build_scheduler_warmup_starts_at_warmup_start_lr(warmup):
    opt = one_group_sgd(0.4)
    sched = build_scheduler(opt, [False], name="warmup_cosine", warmup_steps=warmup,
                            total_steps=5, warmup_start_lr=0.01, min_lr=0.0)
    lrs = []
    for _ in range(warmup + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01, rel=1e-12)
    assert lrs[warmup] == pytest.approx(0.4, rel=1e-12)


# ------------------------------------------------------------------ BaseMethod
def method_cfg(**over):
    cfg = {
        "method": "mv_simclr",
        "backbone": {"name": "convnet", "kwargs": {"width": 4, "depth": 2}, "stem": "auto",
                     "cifar_stem_padding": 2},
        "data": {"dataset": "cifar10", "num_classes": 7, "num_large_crops": 2,
                 "num_small_crops": 1},
        "max_epochs": 6,
        "accumulate_grad_batches": 3,
        "optimizer": {"name": "sgd", "batch_size": 16, "lr": 0.5, "weight_decay": 0.01,
                      "classifier_lr": 0.2, "kwargs": {"momentum": 0.7, "nesterov": False},
                      "exclude_bias_n_norm_wd": False},
        "scheduler": {"name": "warmup_cosine", "lr_decay_steps": None, "min_lr": 0.004,
                      "warmup_start_lr": 0.02, "warmup_epochs": 1, "interval": "step"},
        "knn_eval": {"enabled": True, "k": 3, "temperature": 0.25},
        "performance": {"disable_channel_last": True},
        "momentum": {"classifier": True, "base_tau": 0.9, "final_tau": 0.99},
    }
    conf = OmegaConf.create(cfg)
    for key, value in over.items():  # "optimizer__lr" sets optimizer.lr
        OmegaConf.update(conf, key.replace("__", "."), value, merge=False)
    return conf


def stand_in_trainer(**over):
    values = {"estimated_stepping_batches": 12, "num_training_batches": 4,
              "accumulate_grad_batches": 1, "max_epochs": 6, "sanity_checking": False,
              "global_step": 0}
    values.update(over)
    return types.SimpleNamespace(**values)


def test_base_method_reads_every_setting():
    model = BaseMethod(method_cfg())
    assert model.backbone_name == "convnet"
    assert dict(model.backbone_args) == {"width": 4, "depth": 2}
    assert model.features_dim == 8 and model.backbone.num_features == 8
    assert (model.classifier.in_features, model.classifier.out_features) == (8, 7)
    assert (model.max_epochs, model.accumulate_grad_batches) == (6, 3)
    assert (model.optimizer, model.batch_size, model.weight_decay) == ("sgd", 16, 0.01)
    assert dict(model.extra_optimizer_args) == {"momentum": 0.7, "nesterov": False}
    assert model.exclude_bias_n_norm_wd is False
    assert (model.scheduler, model.lr_decay_steps, model.warmup_epochs,
            model.scheduler_interval) == ("warmup_cosine", None, 1, "step")
    # every lr scaled by the accumulated batches
    assert model.lr == pytest.approx(1.5, rel=1e-12)
    assert model.classifier_lr == pytest.approx(0.6, rel=1e-12)
    assert model.min_lr == pytest.approx(0.012, rel=1e-12)
    assert model.warmup_start_lr == pytest.approx(0.06, rel=1e-12)
    assert (model.num_large_crops, model.num_small_crops, model.num_crops) == (2, 1, 3)
    assert model.multicrop is True
    assert model.knn_eval is True and model.knn_k == 3
    assert (model.knn.k, model.knn.temperature) == (3, 0.25)
    assert model.no_channel_last is True
    assert model.validation_step_outputs == []


def test_base_method_without_small_crops_or_knn():
    model = BaseMethod(method_cfg(data__num_small_crops=0, knn_eval__enabled=False,
                                  performance__disable_channel_last=False,
                                  optimizer__exclude_bias_n_norm_wd=True))
    assert model.multicrop is False and model.num_crops == 2
    assert model.knn_eval is False and not hasattr(model, "knn")
    assert model.no_channel_last is False and model.exclude_bias_n_norm_wd is True


def test_base_method_hands_the_backbone_settings_to_build_backbone(monkeypatch):
    calls = []

    def recorder(*args, **kwargs):
        calls.append((args, kwargs))
        return bb.ConvNet(width=2, depth=1)

    monkeypatch.setattr(builtin, "build_backbone", recorder)
    model = BaseMethod(method_cfg(backbone__name="resnet18", backbone__kwargs={"groups": 1},
                                  backbone__stem="cifar", backbone__cifar_stem_padding=1,
                                  data__dataset="stl10", method="mv_byol"))
    assert len(calls) == 1
    args, kwargs = calls[0]
    assert kwargs == {}
    assert args[:2] == ("resnet18", "stl10") and dict(args[2]) == {"groups": 1}
    assert args[3:] == ("mv_byol", "cifar", 1)
    assert model.features_dim == 2


class StaticHead(BaseMethod):
    """A method with an extra group whose lr the schedule must not touch."""

    def __init__(self, cfg, head_name="head"):
        super().__init__(cfg)
        self.head = nn.Linear(3, 2)
        self.head_name = head_name

    @property
    def learnable_params(self):
        return super().learnable_params + [
            {"name": self.head_name, "params": self.head.parameters(), "lr": 0.05,
             "static_lr": True}]


def lrs_over(optimizer, scheduler, steps):
    lrs = []
    for _ in range(steps):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs


def reference_lr(step, base, warmup, total, start, floor):
    if step < warmup:
        return start + (base - start) * step / warmup
    done = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (base - floor) * (1 + math.cos(math.pi * done)) / 2


def test_configure_optimizers_groups_schedule_and_static_head():
    model = StaticHead(method_cfg())
    model._trainer = stand_in_trainer()
    optimizers, schedulers = model.configure_optimizers()
    (optimizer,) = optimizers
    (entry,) = schedulers
    assert set(entry) == {"scheduler", "interval", "frequency"}
    assert (entry["interval"], entry["frequency"]) == ("step", 1)
    assert isinstance(entry["scheduler"], torch.optim.lr_scheduler.LambdaLR)
    assert type(optimizer) is torch.optim.SGD
    groups = optimizer.param_groups
    assert [g["name"] for g in groups] == ["backbone", "classifier", "head"]
    assert "static_lr" not in groups[2]
    assert ids(groups[0]["params"]) == ids(model.backbone.parameters())
    assert ids(groups[1]["params"]) == ids(model.classifier.parameters())
    assert ids(groups[2]["params"]) == ids(model.head.parameters())
    assert [g["weight_decay"] for g in groups] == [0.01, 0, 0.01]
    assert [g["momentum"] for g in groups] == [0.7] * 3
    lrs = lrs_over(optimizer, entry["scheduler"], 14)
    # 4 batches an epoch, 1 warm-up epoch, 12 steps; lrs scaled by 3 accumulated batches
    for t, row in enumerate(lrs):
        assert row[0] == pytest.approx(reference_lr(t, 1.5, 4, 12, 0.06, 0.012), rel=1e-9), t
        assert row[1] == pytest.approx(reference_lr(t, 0.6, 4, 12, 0.06, 0.012), rel=1e-9), t
        assert row[2] == 0.05


def test_configure_optimizers_static_flag_follows_a_split_group():
    model = StaticHead(method_cfg(optimizer__exclude_bias_n_norm_wd=True))
    model._trainer = stand_in_trainer()
    (optimizer,), (entry,) = model.configure_optimizers()
    groups = optimizer.param_groups
    assert [g["name"] for g in groups] == ["backbone", "backbone_no_wd", "classifier", "head",
                                           "head_no_wd"]
    assert ids(groups[3]["params"]) == [id(model.head.weight)]
    assert ids(groups[4]["params"]) == [id(model.head.bias)]
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0, 0, 0.01, 0.0]
    lrs = lrs_over(optimizer, entry["scheduler"], 6)
    assert [row[3] for row in lrs] == [0.05] * 6 and [row[4] for row in lrs] == [0.05] * 6
    assert lrs[0][1] == pytest.approx(0.06, rel=1e-12)
    assert lrs[4][1] == pytest.approx(1.5, rel=1e-12)


class UnnamedExtra(StaticHead):
    @property
    def learnable_params(self):
        return super().learnable_params + [{"params": [self.extra]}]


@pytest.mark.parametrize("head_name", ["None", "XXXX"])
def test_configure_optimizers_schedules_an_unnamed_group(head_name):
    model = UnnamedExtra(method_cfg(), head_name=head_name)
    model.extra = nn.Parameter(torch.zeros(2))
    model._trainer = stand_in_trainer()
    (optimizer,), (entry,) = model.configure_optimizers()
    lrs = lrs_over(optimizer, entry["scheduler"], 5)
    assert [row[2] for row in lrs] == [0.05] * 5
    assert [row[3] for row in lrs] == pytest.approx(
        [reference_lr(t, 1.5, 4, 12, 0.06, 0.012) for t in range(5)], rel=1e-9)


def test_configure_optimizers_epoch_interval_and_bounded_epochs():
    model = BaseMethod(method_cfg(scheduler__interval="epoch", max_epochs=3,
                                  accumulate_grad_batches=1))
    model._trainer = stand_in_trainer(estimated_stepping_batches=40, num_training_batches=4)
    (optimizer,), (entry,) = model.configure_optimizers()
    assert entry["interval"] == "epoch"
    lrs = lrs_over(optimizer, entry["scheduler"], 4)
    # schedule of min(3 epochs, 10 epochs run) = 3 epochs, 1 warm-up
    assert [row[0] for row in lrs] == pytest.approx(
        [reference_lr(t, 0.5, 1, 3, 0.02, 0.004) for t in range(4)], rel=1e-9)


def test_configure_optimizers_step_and_none_schedulers():
    model = BaseMethod(method_cfg(scheduler__name="step", scheduler__lr_decay_steps=[2, 3]))
    model._trainer = stand_in_trainer()
    (optimizer,), (entry,) = model.configure_optimizers()
    assert isinstance(entry["scheduler"], torch.optim.lr_scheduler.MultiStepLR)
    assert dict(entry["scheduler"].milestones) == {2: 1, 3: 1}
    model = BaseMethod(method_cfg(scheduler__name="none"))
    model._trainer = stand_in_trainer()
    optimizer = model.configure_optimizers()
    assert type(optimizer) is torch.optim.SGD
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1.5, 0.6])


def test_optimizer_zero_grad_sets_grads_to_none():
    model = BaseMethod(method_cfg())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    model.optimizer_zero_grad(0, 0, opt)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("no_channel_last", [False, True])
@pytest.mark.parametrize("which", ["forward", "multicrop_forward"])
def test_forward_memory_format(no_channel_last, which):
    model = BaseMethod(method_cfg(performance__disable_channel_last=no_channel_last))
    seen = []
    model.backbone.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    x = torch.randn(2, 3, 4, 4)
    out = getattr(model, which)(x)
    (received,) = seen
    assert received.is_contiguous(memory_format=torch.channels_last) is (not no_channel_last)
    assert received.is_contiguous() is no_channel_last
    assert torch.equal(received, x)
    assert out["feats"].shape == (2, 8)


def fixed_logits_model(cls=BaseMethod, **over):
    model = cls(method_cfg(**over))
    model.eval()
    return model


def test_shared_step_top1_and_top5_with_seven_classes():
    model = fixed_logits_model()
    # logits ranks: the target is 2nd best in row 0 and 6th best in row 1
    logits = torch.tensor([[0.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
                           [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    targets = torch.tensor([2, 5])
    model.classifier = _Const(logits)
    out = model._base_shared_step(torch.zeros(2, 3, 4, 4), targets)
    assert out["acc1"].item() == 0.0
    assert out["acc5"].item() == 50.0
    assert out["loss"].item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-6)


class _Const(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits


def test_momentum_shared_step_top1_and_top5_with_seven_classes():
    model = fixed_logits_model(BaseMomentumMethod)
    logits = torch.tensor([[0.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
                           [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0],
                           [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    targets = torch.tensor([2, 5, 0])
    model.momentum_classifier = _Const(logits)
    out = model._shared_step_momentum(torch.zeros(3, 3, 4, 4), targets)
    assert out["acc1"].item() == pytest.approx(100 / 3)
    assert out["acc5"].item() == pytest.approx(200 / 3)


def test_validation_step_records_metrics_and_feeds_knn():
    model = fixed_logits_model()
    model._trainer = stand_in_trainer(sanity_checking=False)
    x, targets = torch.randn(2, 3, 4, 4), torch.tensor([1, 4])
    feats = model.backbone(x)
    metrics = model.validation_step((x, targets), 0)
    assert model.validation_step_outputs == [metrics]
    assert set(metrics) == {"batch_size", "val_loss", "val_acc1", "val_acc5"}
    assert metrics["batch_size"] == 2
    (test_features,) = model.knn.test_features
    (test_targets,) = model.knn.test_targets
    assert torch.allclose(test_features, feats, atol=1e-6)
    assert torch.equal(test_targets, targets)
    assert model.knn.train_features == []


def test_validation_step_skips_knn_while_sanity_checking():
    model = fixed_logits_model()
    model._trainer = stand_in_trainer(sanity_checking=True)
    model.validation_step((torch.randn(2, 3, 4, 4), torch.tensor([1, 4])), 0)
    assert model.knn.test_features == []
    assert len(model.validation_step_outputs) == 1


def test_validation_epoch_end_logs_weighted_means_and_knn(monkeypatch):
    model = fixed_logits_model()
    model._trainer = stand_in_trainer(sanity_checking=False)
    calls = []
    monkeypatch.setattr(model, "log_dict", lambda log, **kw: calls.append((log, kw)))
    monkeypatch.setattr(model.knn, "compute",
                        lambda: (torch.tensor(40.0), torch.tensor(80.0)))
    model.validation_step_outputs = [
        {"batch_size": 1, "val_loss": torch.tensor(3.0), "val_acc1": torch.tensor(10.0),
         "val_acc5": torch.tensor(20.0)}]
    model.on_validation_epoch_end()
    ((log, kw),) = calls
    assert kw == {"sync_dist": True}
    assert set(log) == {"val_loss", "val_acc1", "val_acc5", "val_knn_acc1", "val_knn_acc5"}
    assert [log[k].item() for k in ("val_loss", "val_acc1", "val_acc5", "val_knn_acc1",
                                    "val_knn_acc5")] == [3.0, 10.0, 20.0, 40.0, 80.0]
    assert model.validation_step_outputs == []


# ------------------------------------------------------------------ BaseMomentumMethod
def test_momentum_method_settings():
    model = BaseMomentumMethod(method_cfg())
    assert all(not p.requires_grad for p in model.momentum_backbone.parameters())
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert isinstance(model.momentum_classifier, nn.Linear)
    updater = model.momentum_updater
    assert (updater.base_tau, updater.final_tau, updater.cur_tau) == (0.9, 0.99, 0.9)
    assert model.last_step == 0 and type(model.last_step) is int
    plain = BaseMomentumMethod(method_cfg(momentum__classifier=False))
    assert plain.momentum_classifier is None


def test_momentum_train_batch_end_updates_only_after_a_step(monkeypatch):
    model = BaseMomentumMethod(method_cfg())
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    online = [p.detach().clone() for p in model.backbone.parameters()]
    target = [p.detach().clone() for p in model.momentum_backbone.parameters()]
    logged = []
    monkeypatch.setattr(model, "log", lambda name, value, **kw: logged.append((name, value)))
    model._trainer = stand_in_trainer(global_step=0)
    model.on_train_batch_end(None, None, 0)
    assert logged == []
    assert all(torch.equal(a, b) for a, b in zip(model.momentum_backbone.parameters(), target))
    model._trainer = stand_in_trainer(global_step=1)
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model.on_train_batch_end(None, None, 1)
    finally:
        torch.set_default_dtype(saved)
    ((name, value),) = logged
    assert name == "tau" and value.dtype == torch.float32 and value.item() == pytest.approx(0.9)
    for p, o, t in zip(model.momentum_backbone.parameters(), online, target):
        assert torch.allclose(p, 0.9 * t + 0.1 * o, atol=1e-6)
    assert model.momentum_updater.cur_tau == pytest.approx(cosine_tau(0.9, 0.99, 1, 12))
    assert model.last_step == 1


def test_momentum_validation_step_adds_momentum_metrics(monkeypatch):
    model = fixed_logits_model(BaseMomentumMethod)
    calls = []
    real = BaseMethod.validation_step

    def recorder(self, batch, batch_idx, *args, **kwargs):
        calls.append((batch_idx, args, kwargs))
        return real(self, batch, batch_idx, *args, **kwargs)

    monkeypatch.setattr(BaseMethod, "validation_step", recorder)
    model._trainer = stand_in_trainer(sanity_checking=True)
    metrics = model.validation_step((torch.randn(2, 3, 4, 4), torch.tensor([1, 4])), 5)
    assert calls == [(5, (), {"update_validation_step_outputs": False})]
    assert calls[0][2]["update_validation_step_outputs"] is False
    assert set(metrics) == {"batch_size", "val_loss", "val_acc1", "val_acc5",
                            "momentum_val_loss", "momentum_val_acc1", "momentum_val_acc5"}
    assert model.validation_step_outputs == [metrics]


# ------------------------------------------------------------------ backbones
def test_convnet_defaults_and_layers():
    net = bb.ConvNet()
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256] and net.num_features == 256
    net = bb.ConvNet(width=3, depth=3, in_channels=2)
    kinds = [type(m) for m in net.features]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 3
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(2, 3), (3, 6), (6, 12)]
    assert [c.stride for c in convs] == [(1, 1), (2, 2), (2, 2)]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.bias is None
               for c in convs)
    assert all(m.inplace is True for m in net.features if isinstance(m, nn.ReLU))
    assert net.num_features == 12
    assert net(torch.zeros(1, 2, 8, 8)).shape == (1, 12)
    tiny = bb.ConvNet(width=1, depth=1)
    assert tiny.num_features == 1


@pytest.mark.parametrize("width,depth", [(5, 0), (0, 2), (0, 0)])
def test_convnet_refuses_empty_sizes(width, depth):
    with pytest.raises(ValueError) as excinfo:
        bb.ConvNet(width=width, depth=depth)
    assert str(excinfo.value) == ("backbone.kwargs: convnet needs depth >= 1 and width >= 1, "
                                  f"got depth={depth}, width={width}")


class StubResNet(nn.Module):
    def __init__(self, method=None, **kwargs):
        super().__init__()
        self.received = (method, kwargs)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.fc = nn.Linear(4, 2)
        self.num_features = 4


def test_adapt_backbone_resnet_stems():
    net = bb.adapt_backbone(StubResNet(), "resnet18", "cifar100")
    assert isinstance(net.fc, nn.Identity) and isinstance(net.maxpool, nn.Identity)
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.padding) == ((3, 3), (1, 1),
                                                                            (2, 2))
    original = StubResNet()
    conv, pool = original.conv1, original.maxpool
    net = bb.adapt_backbone(original, "resnet50", "stl10")
    assert net.conv1 is conv and net.maxpool is pool and isinstance(net.fc, nn.Identity)
    net = bb.adapt_backbone(StubResNet(), "resnet18", "stl10", "cifar", 1)
    assert net.conv1.padding == (1, 1) and isinstance(net.maxpool, nn.Identity)


def test_build_backbone_hands_method_and_kwargs_to_the_builder(monkeypatch):
    monkeypatch.setitem(bb.BACKBONES, "resnet18", StubResNet)
    net = bb.build_backbone("resnet18", "cifar10", {"zero_init_residual": True}, "mv_byol",
                            "auto", 1)
    assert net.received == ("mv_byol", {"zero_init_residual": True})
    assert net.conv1.padding == (1, 1) and net.conv1.kernel_size == (3, 3)
    assert isinstance(net.maxpool, nn.Identity) and isinstance(net.fc, nn.Identity)


def test_build_backbone_unknown_name_message():
    with pytest.raises(ValueError) as excinfo:
        bb.build_backbone("vit", "cifar10")
    assert str(excinfo.value) == ("backbone.name: unknown backbone 'vit'; choose one of "
                                  "['convnet', 'resnet18', 'resnet50']")


RESNET_KEYS = ("['groups', 'norm_layer', 'replace_stride_with_dilation', 'width_per_group', "
               "'zero_init_residual']")


@pytest.mark.parametrize("name,accepted", [
    ("convnet", "['width', 'depth']"), ("resnet18", RESNET_KEYS), ("resnet50", RESNET_KEYS)])
@pytest.mark.parametrize("key", ["foo", "self", "in_channels", "weights", "progress", "kwargs"])
def test_check_backbone_kwargs_messages(name, accepted, key):
    with pytest.raises(ConfigError) as excinfo:
        bb.check_backbone_kwargs(name, {key: 1})
    assert str(excinfo.value) == (f"backbone.kwargs.{key}: unknown argument of {name}; "
                                  f"accepted: {accepted}")


def test_check_backbone_kwargs_accepts_declared_keys():
    bb.check_backbone_kwargs("convnet", {"width": 2, "depth": 1})
    bb.check_backbone_kwargs("resnet18", {"zero_init_residual": True, "groups": 1,
                                          "width_per_group": 64, "norm_layer": None,
                                          "replace_stride_with_dilation": None})
    bb.check_backbone_kwargs("resnet50", {"zero_init_residual": True})


def test_stem_checks_and_settings():
    bb.check_backbone_stem("resnet18", "cifar", 1)
    bb.check_backbone_stem("resnet50", "imagenet", 2)
    with pytest.raises(ConfigError) as excinfo:
        bb.check_backbone_stem("convnet", "tiny", 2)
    assert str(excinfo.value) == ("backbone.stem: unknown value 'tiny'; choose one of "
                                  "['auto', 'cifar', 'imagenet']")
    with pytest.raises(ValueError) as excinfo:
        bb.resolve_stem("tiny", "cifar10")
    assert str(excinfo.value) == ("backbone.stem: unknown value 'tiny'; choose one of "
                                  "['auto', 'cifar', 'imagenet']")
    assert bb.resolve_stem("auto", "stl10") == "imagenet"
    assert bb.resolve_stem("auto", "cifar100") == "cifar"
    assert bb.stem_settings(None) == ("auto", 2)
    assert bb.stem_settings({}) == ("auto", 2)
    assert bb.stem_settings({"stem": "cifar", "cifar_stem_padding": 1}) == ("cifar", 1)
    with pytest.raises(ConfigError, match=re.escape("convnet has no ResNet stem")):
        bb.check_backbone_stem("convnet", "cifar", 2)
