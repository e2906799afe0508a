"""The K-view methods mv_byol, mv_simsiam, mv_barlow_twins, mv_vicreg, mv_mocov2plus on both hosts.

Training runs use the quickstart config shrunk by tests/helpers.py (tiny convnet, batch 16, two
steps on the embedded digits). Wiring tests feed a fixed batch to ``training_step`` in eval mode
(BatchNorm then treats every sample on its own) and recompute the loss from per-crop forwards
with the pure-torch loss of ``solo_multiview/losses``.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
import sys
from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from solo_multiview.config.pretrain import parse_pretrain_cfg
from solo_multiview.hosts import solo_available
from solo_multiview.losses import (
    mv_barlow_twins_loss,
    mv_byol_loss,
    mv_mocov2plus_loss,
    mv_simsiam_loss,
    mv_vicreg_loss,
)
from solo_multiview.methods import METHODS, method_class
from solo_multiview.training.pretrain import fit, prepare_pretrain
from tests.helpers import HOSTS, tiny_cfg

NEW_METHODS = ["mv_byol", "mv_simsiam", "mv_barlow_twins", "mv_vicreg", "mv_mocov2plus"]
MOMENTUM_METHODS = {"mv_byol", "mv_mocov2plus"}
MULTICROP_METHODS = {"mv_byol", "mv_simsiam"}
QUEUE_SIZE = 64

# the method-specific keys the quickstart (an mv_simclr config) lacks, at tiny sizes
OVERRIDES: Dict[str, List[str]] = {
    "mv_byol": ["+method_kwargs.pred_hidden_dim=16", "+momentum.base_tau=0.9",
                "+momentum.final_tau=0.95"],
    "mv_simsiam": ["+method_kwargs.pred_hidden_dim=16"],
    "mv_barlow_twins": ["+method_kwargs.scale_loss=0.1"],
    "mv_vicreg": [],
    "mv_mocov2plus": [f"+method_kwargs.queue_size={QUEUE_SIZE}", "+momentum.base_tau=0.9",
                      "+momentum.final_tau=0.95"],
}
LOSS_KEYS = {
    "mv_byol": "train_byol_loss",
    "mv_simsiam": "train_simsiam_loss",
    "mv_barlow_twins": "train_barlow_loss",
    "mv_vicreg": "train_vicreg_loss",
    "mv_mocov2plus": "train_nce_loss",
}


def method_cfg(tmp_path, method, host="builtin", num_views=2, small_crops=0, extra=()):
    return tiny_cfg(tmp_path, method=method, host=host, num_views=num_views,
                    small_crops=small_crops, overrides=[*OVERRIDES[method], *extra])


def record_train_calls(module: torch.nn.Module) -> List[int]:
    """Batch sizes of the calls ``module`` gets in training mode (validation runs in eval)."""
    calls: List[int] = []
    module.register_forward_hook(
        lambda mod, inputs, output: calls.append(inputs[0].shape[0]) if mod.training else None)
    return calls


def momentum_params(model) -> List[torch.Tensor]:
    return [p for _, target in model.momentum_pairs for p in target.parameters()]


def online_params(model) -> List[torch.Tensor]:
    return [p for online, _ in model.momentum_pairs for p in online.parameters()]


def clone(params) -> List[torch.Tensor]:
    return [p.detach().clone() for p in params]


class EMARecorder(Callback):
    """Per step: tau and the target parameters before it, the online parameters after the
    optimizer step (callbacks' on_train_batch_end runs before the module's EMA update) and the
    target's gradients; after training, the final target parameters."""

    def __init__(self):
        self.steps: List[dict] = []
        self.final: List[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.steps:  # the EMA of the previous step has been applied by now
            self.steps[-1]["target_after"] = clone(momentum_params(pl_module))
        self.steps.append({"tau": pl_module.momentum_updater.cur_tau,
                           "target_before": clone(momentum_params(pl_module))})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps[-1]["online_after"] = clone(online_params(pl_module))
        self.steps[-1]["target_grads"] = [p.grad for p in momentum_params(pl_module)]
        self.steps[-1]["target_requires_grad"] = [p.requires_grad
                                                  for p in momentum_params(pl_module)]
        self.steps[-1]["online_grads"] = [p.grad is not None
                                          for p in pl_module.backbone.parameters()]

    def on_train_end(self, trainer, pl_module):
        self.steps[-1]["target_after"] = clone(momentum_params(pl_module))


TRAIN_CASES = [(m, k, 0) for m in NEW_METHODS for k in (2, 4)] + [
    ("mv_byol", 2, 2), ("mv_simsiam", 3, 2)]


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("method,num_views,small_crops", TRAIN_CASES)
def test_method_trains(tmp_path, host, method, num_views, small_crops):
    run = prepare_pretrain(method_cfg(tmp_path, method, host, num_views, small_crops))
    model = run.model
    assert type(model).__name__.endswith(f"__{host}")
    assert (run.cfg.data.num_large_crops, run.cfg.data.num_small_crops) == (num_views,
                                                                            small_crops)
    before = clone(model.backbone.parameters())
    calls = record_train_calls(model.backbone)
    momentum = method in MOMENTUM_METHODS
    if momentum:
        assert (model.projector, model.momentum_projector) in model.momentum_pairs
        momentum_calls = record_train_calls(model.momentum_backbone)
        recorder = EMARecorder()
        run.trainer.callbacks.append(recorder)

    result = fit(run)

    loss = result.metrics[LOSS_KEYS[method]]
    assert math.isfinite(loss)
    after = list(model.backbone.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after)), "backbone did not train"
    # one backbone call per crop size and step: B*K large images, then B*S small ones
    batch = run.cfg.optimizer.batch_size
    per_step = [batch * num_views] + ([batch * small_crops] if small_crops else [])
    assert calls == per_step * 2, calls
    if not momentum:
        return
    assert momentum_calls == [batch * num_views] * 2, momentum_calls  # large crops only
    assert len(recorder.steps) == 2
    for step in recorder.steps:
        tau = step["tau"]
        assert 0 < tau < 1
        assert all(g is None for g in step["target_grads"]), "the EMA target got a gradient"
        assert not any(step["target_requires_grad"])
        assert all(step["online_grads"])
        moved = False
        for t0, o1, t1 in zip(step["target_before"], step["online_after"], step["target_after"]):
            torch.testing.assert_close(t1, tau * t0 + (1 - tau) * o1, rtol=1e-6, atol=1e-7)
            moved = moved or not torch.equal(t0, t1)
        assert moved, "the EMA target did not move"
    # the tau schedule advanced (cosine from base_tau 0.9 towards final_tau 0.95)
    assert recorder.steps[0]["tau"] == pytest.approx(0.9)
    assert 0.9 < recorder.steps[1]["tau"] < 0.95


# ---------------------------------------------------------------- wiring: loss == losses/ function


def build_model(tmp_path, method, host, num_views, small_crops=0, extra=()):
    cfg = parse_pretrain_cfg(method_cfg(tmp_path, method, host, num_views, small_crops, extra))
    return method_class(method, host)(cfg)


def fixed_batch(num_views: int, small_crops: int, batch: int = 8, seed: int = 0):
    """Independent random images per crop, with per-image colour offsets and coarse structure
    so that every crop gives clearly different outputs."""
    gen = torch.Generator().manual_seed(seed)

    def crop(size: int) -> torch.Tensor:
        coarse = torch.randn(batch, 3, 4, 4, generator=gen)
        coarse = coarse.repeat_interleave(size // 4, 2).repeat_interleave(size // 4, 3)
        return (2 * torch.randn(batch, 3, 1, 1, generator=gen) + coarse
                + 0.3 * torch.randn(batch, 3, size, size, generator=gen))

    crops = [crop(16) for _ in range(num_views)] + [crop(8) for _ in range(small_crops)]
    targets = torch.randint(0, 10, (batch,), generator=gen)
    return [torch.arange(batch), crops, targets]


LOSS_FUNCTIONS = {
    "mv_byol": mv_byol_loss,
    "mv_simsiam": mv_simsiam_loss,
    "mv_barlow_twins": mv_barlow_twins_loss,
    "mv_vicreg": mv_vicreg_loss,
    "mv_mocov2plus": mv_mocov2plus_loss,
}


def expected_arguments(method: str, model, crops, num_views: int, queue) -> Dict[str, object]:
    """What the method must pass to its loss: per-crop outputs of separate forwards (eval mode),
    large crops first, and its hyper-parameters."""
    kwargs = model.cfg.method_kwargs
    large, small = crops[:num_views], crops[num_views:]
    z = [model(c)["z"] for c in large]
    p = [model(c)["p"] for c in large] + [model.multicrop_forward(c)["p"] for c in small] \
        if method in MULTICROP_METHODS else None
    z_momentum = [model.momentum_forward(c)["z"] for c in large] \
        if method in MOMENTUM_METHODS else None
    return {
        "mv_byol": lambda: {"p": p, "z": z_momentum},
        "mv_simsiam": lambda: {"p": p, "z": z},
        "mv_barlow_twins": lambda: {"z": z, "lamb": kwargs.lamb, "scale_loss": kwargs.scale_loss},
        "mv_vicreg": lambda: {"z": z, "sim_loss_weight": kwargs.sim_loss_weight,
                              "var_loss_weight": kwargs.var_loss_weight,
                              "cov_loss_weight": kwargs.cov_loss_weight},
        "mv_mocov2plus": lambda: {"q": z, "k": z_momentum, "queue": queue,
                                  "temperature": kwargs.temperature, "band": model.band},
    }[method]()


FILTER_ON = ("+method_kwargs.filter.enabled=true", "+method_kwargs.filter.low=0.05")
# distinct, non-default settings, so that a mixed-up hyper-parameter shows
SETTINGS = {
    "mv_barlow_twins": ("+method_kwargs.lamb=0.02",),
    "mv_vicreg": ("+method_kwargs.sim_loss_weight=20.0", "+method_kwargs.var_loss_weight=30.0",
                  "+method_kwargs.cov_loss_weight=2.0"),
    "mv_mocov2plus": ("method_kwargs.temperature=0.3",),
}
WIRING_CASES = [(m, 3, 0, SETTINGS.get(m, ())) for m in NEW_METHODS] + [
    ("mv_byol", 3, 2, ()), ("mv_simsiam", 3, 2, ()), ("mv_mocov2plus", 3, 0, FILTER_ON)]


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("method,num_views,small_crops,extra", WIRING_CASES)
def test_training_step_loss_is_the_kview_loss(tmp_path, monkeypatch, host, method, num_views,
                                              small_crops, extra):
    torch.manual_seed(0)
    model = build_model(tmp_path, method, host, num_views, small_crops, extra).eval()
    if method in MOMENTUM_METHODS:  # so that online and momentum outputs differ
        with torch.no_grad():
            for param in momentum_params(model):
                param.add_(0.1 * torch.randn_like(param))
    if method == "mv_mocov2plus":
        assert (model.band is not None) == (extra == FILTER_ON)
    batch = fixed_batch(num_views, small_crops)
    crops, targets = batch[1], batch[2]
    queue = model.queue.clone() if method == "mv_mocov2plus" else None

    loss_fn = LOSS_FUNCTIONS[method]
    calls = []

    def spy(*args, **kwargs):
        # a snapshot: the method may update its inputs (the queue) after the loss
        calls.append(inspect.signature(loss_fn).bind(*args, **kwargs).arguments.copy())
        calls[-1] = {name: value.clone() if isinstance(value, torch.Tensor) else value
                     for name, value in calls[-1].items()}
        return loss_fn(*args, **kwargs)

    monkeypatch.setattr(sys.modules[METHODS[method].__module__], loss_fn.__name__, spy)
    with torch.no_grad():
        expected = expected_arguments(method, model, crops, num_views, queue)
        feats = torch.cat([model(c)["feats"] for c in crops[:num_views]])
        class_loss = F.cross_entropy(model.classifier(feats), targets.repeat(num_views))
        total = model.training_step(batch, 0)

    # the loss got the right per-crop outputs, in crop order, and the configured settings
    assert len(calls) == 1
    got = calls[0]
    assert set(got) == set(expected)
    for name, value in expected.items():
        if isinstance(value, list):
            assert len(got[name]) == len(value), name
            for got_view, view in zip(got[name], value):
                torch.testing.assert_close(got_view, view, rtol=1e-4, atol=1e-5)
            # views differ by far more than the tolerance, so a swapped view would fail above
            for a, b in itertools.combinations(value, 2):
                assert (a - b).abs().max() > 1e-3
        elif isinstance(value, torch.Tensor):
            assert torch.equal(got[name], value), name
        else:
            assert got[name] == value, name
    # and the step returns that loss plus the online classifier's
    reference = loss_fn(**expected)
    reference = reference[0] if isinstance(reference, tuple) else reference
    assert torch.isfinite(reference)
    torch.testing.assert_close(total, reference + class_loss, rtol=1e-4, atol=1e-5)
    if method in MOMENTUM_METHODS:  # online and target outputs really differ here
        online_z = model(crops[0])["z"].detach()
        target_z = model.momentum_forward(crops[0])["z"]
        assert (online_z - target_z).abs().max() > 1e-2



# ---------------------------------------------------------------- mocov2plus queues


@pytest.mark.parametrize("host", HOSTS)
def test_mocov2plus_enqueues_each_views_keys(tmp_path, host):
    num_views, batch_size = 3, 8
    torch.manual_seed(0)
    model = build_model(tmp_path, "mv_mocov2plus", host, num_views)
    assert model.queue.shape == (num_views, 8, QUEUE_SIZE)  # (K, proj_output_dim, queue_size)
    torch.testing.assert_close(model.queue.norm(dim=1), torch.ones(num_views, QUEUE_SIZE))
    assert model.queue_ptr.tolist() == [0]
    assert {"queue", "queue_ptr"} <= set(model.state_dict())

    for step, start in enumerate([0, QUEUE_SIZE - batch_size // 2]):  # second one wraps around
        model.queue_ptr.fill_(start)
        batch = fixed_batch(num_views, 0, batch=batch_size, seed=step)
        with torch.no_grad():  # train mode: batch statistics, so the same keys as in the step
            keys = model.momentum_forward(torch.cat(batch[1]))["z"].split(batch_size)
        queue_before = model.queue.clone()
        model.training_step(batch, step)

        columns = [(start + i) % QUEUE_SIZE for i in range(batch_size)]
        untouched = [c for c in range(QUEUE_SIZE) if c not in columns]
        for j in range(num_views):
            expected = F.normalize(keys[j], dim=-1).T
            torch.testing.assert_close(model.queue[j][:, columns], expected)
        torch.testing.assert_close(model.queue[:, :, untouched], queue_before[:, :, untouched])
        assert model.queue_ptr.tolist() == [(start + batch_size) % QUEUE_SIZE]


def test_mocov2plus_refuses_a_batch_larger_than_the_queue(tmp_path):
    model = build_model(tmp_path, "mv_mocov2plus", "builtin", 2)
    with pytest.raises(ValueError, match="method_kwargs.queue_size: 64 is smaller than the 128"):
        model.enqueue(torch.randn(2, 128, 8))


# ---------------------------------------------------------------- composition and registration


@pytest.mark.parametrize("method", NEW_METHODS)
def test_builtin_composition(method):
    from solo_multiview.hosts import builtin

    cls = method_class(method, "builtin")
    base = builtin.BaseMomentumMethod if method in MOMENTUM_METHODS else builtin.BaseMethod
    assert issubclass(cls, base)
    assert issubclass(cls, builtin.BaseMomentumMethod) == (method in MOMENTUM_METHODS)
    assert cls.__mro__[1] is METHODS[method]  # the guard is a callback, not a base
    # the host-neutral class declares its hyper-parameters as a dataclass (its method_kwargs)
    assert dataclasses.is_dataclass(METHODS[method].__dict__["Kwargs"])


@pytest.mark.skipif(not solo_available(),
                    reason="solo-learn is not installed (see README: add solo-learn)")
@pytest.mark.parametrize("method", NEW_METHODS)
def test_solo_registration(method):
    from solo.methods import METHODS as SOLO_METHODS
    from solo.methods.base import BaseMethod as SoloBase
    from solo.methods.base import BaseMomentumMethod as SoloMomentum

    cls = method_class(method, "solo")
    assert SOLO_METHODS[method] is cls
    assert issubclass(cls, SoloBase)
    assert issubclass(cls, SoloMomentum) == (method in MOMENTUM_METHODS)
    assert cls.training_step is not SoloBase.training_step  # the batched step is in front


# ---------------------------------------------------------------- invalid configs

BAD_CONFIGS = [
    ("mv_byol", ["~method_kwargs.proj_hidden_dim"], 0, "method_kwargs.proj_hidden_dim: missing"),
    ("mv_byol", ["method_kwargs.proj_output_dim=0"], 0,
     "method_kwargs.proj_output_dim: got 0; expected a positive int"),
    ("mv_simsiam", ["method_kwargs.pred_hidden_dim=1.5"], 0,
     "method_kwargs.pred_hidden_dim: got 1.5; expected a positive int"),
    ("mv_barlow_twins", ["+method_kwargs.lamb=-1"], 0,
     "method_kwargs.lamb: got -1; expected a number >= 0"),
    ("mv_barlow_twins", ["method_kwargs.scale_loss=0"], 0,
     "method_kwargs.scale_loss: got 0; expected a number > 0"),
    ("mv_vicreg", ["+method_kwargs.var_loss_weight=-25"], 0,
     "method_kwargs.var_loss_weight: got -25; expected a number >= 0"),
    ("mv_mocov2plus", ["method_kwargs.queue_size=8"], 0,
     "method_kwargs.queue_size: got 8; expected an int >= optimizer.batch_size (16)"),
    ("mv_mocov2plus", ["method_kwargs.temperature=0"], 0,
     "method_kwargs.temperature: got 0; expected a number > 0"),
    ("mv_mocov2plus", ["+method_kwargs.filter.high=1.5"], 0,
     "method_kwargs.filter.high must satisfy 0 <= low < high <= 1"),
    ("mv_barlow_twins", [], 2, "augmentations: mv_barlow_twins uses the K large crops only, got 2"),
    ("mv_vicreg", [], 1, "augmentations: mv_vicreg uses the K large crops only, got 1 small"),
    ("mv_mocov2plus", [], 2, "augmentations: mv_mocov2plus uses the K large crops only, got 2"),
]
# each method without its own required key, and with K = 1
MISSING = {"mv_byol": "pred_hidden_dim", "mv_simsiam": "pred_hidden_dim",
           "mv_barlow_twins": "proj_output_dim", "mv_vicreg": "proj_hidden_dim",
           "mv_mocov2plus": "temperature"}
for _method, _key in MISSING.items():
    BAD_CONFIGS.append((_method, [f"~method_kwargs.{_key}"], 0, f"method_kwargs.{_key}: missing"))
    BAD_CONFIGS.append((_method, ["method_kwargs.num_views=1"], 0,
                        f"augmentations[*].num_crops: {_method} needs at least 2 large crops "
                        "(K >= 2), got K = 1"))


@pytest.mark.parametrize("method,overrides,small_crops,message", BAD_CONFIGS)
def test_bad_config_fails_before_training(tmp_path, method, overrides, small_crops, message):
    cfg = method_cfg(tmp_path, method, small_crops=small_crops, extra=overrides)
    with pytest.raises(ValueError) as error:
        prepare_pretrain(cfg)
    assert message in str(error.value)
    assert not (tmp_path / "trained_models").exists(), "nothing may be written on bad input"
