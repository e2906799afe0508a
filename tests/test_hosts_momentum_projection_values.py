"""Exact values of small host pieces: ``MomentumUpdater``'s default and accepted taus and its
message, ``topk_accuracy``'s count of labelled targets and class dimension, the ``-1`` targets
ignored by the online and momentum classifiers' losses, the batch-size weighted epoch means
that ``on_validation_epoch_end`` logs (momentum keys included, kNN left alone when disabled),
``KViewMethod._project`` against the projector applied by hand, ``fused_dim`` for each scheme
and fusion, ``apply_stem`` on a ResNet that already has the CIFAR stem, the resolved
interpolations of ``data/dali/spec.py``'s ``_plain`` and the data loader arguments of
``train_augmented_probe``."""

from __future__ import annotations

import types

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from solo_multiview.data.dali import spec as dali_spec
from solo_multiview.data.views import ViewSpec
from solo_multiview.eval import augmented_probe
from solo_multiview.eval.linear import LinearProbeConfig
from solo_multiview.hosts import backbones as bb
from solo_multiview.hosts.builtin import (
    BaseMethod,
    BaseMomentumMethod,
    MomentumUpdater,
    topk_accuracy,
)
from solo_multiview.hosts.contract import KViewMethod
from tests.test_hosts_optim_builtin_values import method_cfg


# ------------------------------------------------------------------ MomentumUpdater
def test_momentum_updater_defaults():
    updater = MomentumUpdater()
    assert (updater.base_tau, updater.final_tau, updater.cur_tau) == (0.996, 1.0, 0.996)


@pytest.mark.parametrize("base, final", [(0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.25, 0.5)])
def test_momentum_updater_accepts_the_closed_range(base, final):
    updater = MomentumUpdater(base, final)
    assert (updater.base_tau, updater.final_tau, updater.cur_tau) == (base, final, base)


@pytest.mark.parametrize("base, final", [(2.0, 3.0), (0.5, 0.2), (0.5, 1.5), (-0.5, 0.5),
                                         (1.0, 0.5)])
def test_momentum_updater_refuses_with_the_whole_message(base, final):
    with pytest.raises(ValueError) as excinfo:
        MomentumUpdater(base, final)
    assert str(excinfo.value) == ("momentum.base_tau / momentum.final_tau: need "
                                  f"0 <= base_tau <= final_tau <= 1, got {base}, {final}")


# ------------------------------------------------------------------ topk_accuracy
def test_topk_accuracy_with_one_labelled_target_divides_by_one():
    logits = torch.tensor([[0.0, 2.0, 1.0], [2.0, 1.0, 0.0]])
    acc1, acc2 = topk_accuracy(logits, torch.tensor([1, -1]), (1, 2))
    assert (acc1.item(), acc2.item()) == (100.0, 100.0)
    acc1, acc2 = topk_accuracy(logits, torch.tensor([-1, 1]), (1, 2))
    assert (acc1.item(), acc2.item()) == (0.0, 100.0)


def test_topk_accuracy_reads_classes_along_dim_one():
    # (batch, classes, positions), the layout cross_entropy takes: classes are dim 1
    logits = torch.tensor([[[0.0, 5.0], [3.0, 1.0], [1.0, 0.0]]])  # (1, 3, 2)
    # position 0: classes ranked 1, 2, 0; position 1: classes ranked 0, 1, 2
    acc1, acc2 = topk_accuracy(logits, torch.tensor([[0, 1]]), (1, 2))
    assert (acc1.item(), acc2.item()) == (0.0, 50.0)
    acc1, acc2 = topk_accuracy(logits, torch.tensor([[2, 0]]), (1, 2))
    assert (acc1.item(), acc2.item()) == (50.0, 100.0)


# ------------------------------------------------------------------ the models
# test_hosts_optim_builtin_values' BaseMethod config, made small: 3 classes, no small crops, a
# constant learning rate, no kNN, taus 0.99 -> 1
SMALL = {
    "data__num_classes": 3, "data__num_small_crops": 0, "max_epochs": 2,
    "accumulate_grad_batches": 1,
    "optimizer": {"name": "sgd", "batch_size": 4, "lr": 0.1, "weight_decay": 0.0,
                  "classifier_lr": 0.1, "kwargs": {}, "exclude_bias_n_norm_wd": False},
    "scheduler": {"name": "none", "lr_decay_steps": None, "min_lr": 0.0, "warmup_start_lr": 0.0,
                  "warmup_epochs": 0, "interval": "step"},
    "knn_eval": {"enabled": False, "k": 3, "temperature": 0.1},
    "momentum": {"classifier": True, "base_tau": 0.99, "final_tau": 1.0},
}


def small_cfg(**over):
    return method_cfg(**{**SMALL, **over})


class FixedLogits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits


LOGITS = torch.tensor([[0.5, 2.0, -1.0], [1.0, 0.0, 3.0], [0.0, 1.0, 0.25]])


def ce_by_hand(rows, targets):
    """Mean cross-entropy in float64 over the given rows of LOGITS."""
    total = 0.0
    for row, t in zip(rows, targets):
        x = LOGITS[row].double()
        total += float(torch.logsumexp(x, 0) - x[t])
    return total / len(rows)


def test_base_shared_step_ignores_minus_one_targets():
    model = BaseMethod(small_cfg())
    model.classifier = FixedLogits(LOGITS)
    targets = torch.tensor([1, -1, 2])
    out = model._base_shared_step(torch.zeros(3, 3, 4, 4), targets)
    assert out["loss"].item() == pytest.approx(ce_by_hand([0, 2], [1, 2]), rel=1e-6)
    assert out["acc1"].item() == 50.0
    assert out["acc5"].item() == 100.0
    assert out["logits"] is LOGITS


def test_momentum_shared_step_ignores_minus_one_targets():
    model = BaseMomentumMethod(small_cfg())
    model.momentum_classifier = FixedLogits(LOGITS)
    targets = torch.tensor([-1, 2, 1])
    out = model._shared_step_momentum(torch.zeros(3, 3, 4, 4), targets)
    assert set(out) == {"feats", "logits", "loss", "acc1", "acc5"}
    assert out["logits"] is LOGITS
    assert out["loss"].item() == pytest.approx(ce_by_hand([1, 2], [2, 1]), rel=1e-6)
    assert (out["acc1"].item(), out["acc5"].item()) == (100.0, 100.0)


def test_momentum_shared_step_without_classifier_gives_features_only():
    model = BaseMomentumMethod(small_cfg(momentum__classifier=False))
    out = model._shared_step_momentum(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]))
    assert set(out) == {"feats"}


# ------------------------------------------------------------------ epoch-end means
def step_outputs(momentum):
    outputs = []
    for size, (loss, acc1, acc5) in ((1, (2.0, 10.0, 40.0)), (3, (6.0, 30.0, 80.0))):
        out = {"batch_size": size, "val_loss": torch.tensor(loss),
               "val_acc1": torch.tensor(acc1), "val_acc5": torch.tensor(acc5)}
        if momentum:
            out.update({"momentum_val_loss": torch.tensor(loss + 1.0),
                        "momentum_val_acc1": torch.tensor(acc1 + 2.0),
                        "momentum_val_acc5": torch.tensor(acc5 + 4.0)})
        outputs.append(out)
    return outputs


def logged_epoch_end(model, monkeypatch, outputs):
    calls = []
    monkeypatch.setattr(model, "log_dict", lambda log, **kw: calls.append((log, kw)))
    model._trainer = types.SimpleNamespace(sanity_checking=False)
    model.validation_step_outputs = outputs
    model.on_validation_epoch_end()
    ((log, kw),) = calls
    assert kw == {"sync_dist": True}
    assert model.validation_step_outputs == []
    return {key: value.item() for key, value in log.items()}


def test_epoch_end_weighted_means_without_knn(monkeypatch):
    model = BaseMethod(small_cfg())
    log = logged_epoch_end(model, monkeypatch, step_outputs(momentum=False))
    # (1 * 2 + 3 * 6) / 4 = 5, (10 + 90) / 4 = 25, (40 + 240) / 4 = 70
    assert log == {"val_loss": 5.0, "val_acc1": 25.0, "val_acc5": 70.0}


def test_epoch_end_weighted_means_with_momentum_keys(monkeypatch):
    model = BaseMomentumMethod(small_cfg())
    log = logged_epoch_end(model, monkeypatch, step_outputs(momentum=True))
    assert log == {"val_loss": 5.0, "val_acc1": 25.0, "val_acc5": 70.0,
                   "momentum_val_loss": 6.0, "momentum_val_acc1": 27.0,
                   "momentum_val_acc5": 74.0}


def test_weighted_mean_of_one_batch_is_its_value(monkeypatch):
    model = BaseMethod(small_cfg())
    model.validation_step_outputs = [{"batch_size": 4, "val_loss": torch.tensor(3.0)}]
    assert model._weighted_mean("val_loss").item() == 3.0


# ------------------------------------------------------------------ KViewMethod heads
class Plain(KViewMethod):
    pass


class Normalised(KViewMethod):
    normalize_projection = True


def projector():
    torch.manual_seed(0)
    return nn.Linear(3, 4)


@pytest.mark.parametrize("shape", [(2, 3), (2, 5, 3)])
def test_project_without_normalisation_is_the_head(shape):
    head = projector()
    feats = torch.randn(*shape)
    out = {"feats": feats}
    result = Plain()._project(out, head)
    assert result is out
    assert torch.equal(out["z"], head(feats))
    assert out["feats"] is feats


@pytest.mark.parametrize("shape", [(2, 3), (2, 5, 3)])
def test_project_normalises_the_last_dimension(shape):
    head = projector()
    feats = torch.randn(*shape)
    out = Normalised()._project({"feats": feats}, head)
    z = head(feats).double()
    expected = z / z.pow(2).sum(dim=-1, keepdim=True).sqrt()
    assert torch.allclose(out["z"].double(), expected, atol=1e-6, rtol=0)
    assert torch.allclose(out["z"].double().norm(dim=-1), torch.ones(shape[:-1],
                                                                     dtype=torch.float64))


@pytest.mark.parametrize("scheme, fusion, expected", [
    ("pairs", "concat", 14), ("pairs", "sum", 7), ("crops", "concat", 7), ("crops", "sum", 7),
])
def test_fused_dim(scheme, fusion, expected):
    method = Plain()
    method.__dict__["view_spec"] = ViewSpec(num_views=2, scheme=scheme, fusion=fusion)
    assert method.fused_dim(7) == expected
    assert type(method.fused_dim(7)) is int


# ------------------------------------------------------------------ apply_stem
def test_apply_stem_keeps_a_cifar_stem_that_is_already_there():
    conv = bb.cifar_stem_conv(2)
    pool = nn.Identity()
    backbone = types.SimpleNamespace(conv1=conv, maxpool=pool)
    assert bb.apply_stem(backbone, "cifar", 2) is False
    assert backbone.conv1 is conv and backbone.maxpool is pool


# ------------------------------------------------------------------ dali spec
def test_plain_resolves_interpolations():
    node = OmegaConf.create({"size": 8, "crop": {"crop_size": "${size}"}, "xs": ["${size}"]})
    assert dali_spec._plain(node) == {"size": 8, "crop": {"crop_size": 8}, "xs": [8]}
    assert dali_spec._plain(node.xs) == [8]
    entry = {"a": 1}
    assert dali_spec._plain(entry) is entry


# ------------------------------------------------------------------ augmented probe loader
class _StopError(Exception):
    pass


@pytest.mark.parametrize("workers", [0, 3])
def test_augmented_probe_loader_arguments(monkeypatch, workers):
    seen = []

    def recorder(dataset, **kwargs):
        seen.append((dataset, kwargs))
        raise _StopError

    monkeypatch.setattr(augmented_probe, "DataLoader", recorder)
    dataset = [(0, torch.zeros(3), 0), (1, torch.zeros(3), 1)]
    with pytest.raises(_StopError):
        augmented_probe.train_augmented_probe(
            nn.Identity(), dataset, torch.zeros(2, 3), torch.tensor([0, 1]), 2,
            LinearProbeConfig(epochs=1, batch_size=5), torch.device("cpu"),
            num_workers=workers)
    ((got, kwargs),) = seen
    assert got is dataset
    gen = kwargs.pop("generator")
    assert isinstance(gen, torch.Generator)
    assert kwargs == {"batch_size": 5, "shuffle": True, "drop_last": False,
                      "num_workers": workers, "pin_memory": False,
                      "persistent_workers": workers > 0}

