"""Exact values of the host step, the contract's bookkeeping and the training guard.

* ``hosts/multiview_step.py``: ``fusion``, ``split_per_crop``, ``group_by_shape`` and the two
  batched steps of ``MultiViewStepMixin`` (K crops and MIMV pairs), run on a stand-in host whose
  forwards are simple closed-form functions, so every output, every call the step makes (the
  forwards, the kNN bank, the momentum step) and every value it records is checked exactly.
* ``hosts/contract.py``: ``KViewMethod.views``, ``check_cfg`` (whole messages),
  ``training_step``'s loss and records, ``record``/``on_train_batch_end`` logging,
  ``configure_callbacks`` and ``_predict``.
* ``hosts/guard.py``: every callback of ``NonFiniteGuard`` with stand-in trainer, strategy and
  module objects (messages, skipped gradients, restored buffers, the tau schedule).
* ``hosts/__init__.py``: ``resolve_host_name``.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from solo_multiview.data.views import ViewSpec
from solo_multiview.hosts.multiview_step import (
    MultiViewStepMixin,
    fusion,
    group_by_shape,
    split_per_crop,
)

# --------------------------------------------------------------------------- a stand-in host


def feats_of(x):
    """The stand-in backbone: one feature per row, the row's sum."""
    return x.sum(dim=1, keepdim=True)


def z_of(f):
    return 2 * f + 1


class StandInHost(MultiViewStepMixin):
    """What ``MultiViewStepMixin`` needs of a host, with every call recorded."""

    def __init__(self, spec, momentum=False, momentum_loss=True, predictor=False,
                 knn_eval=True):
        self.view_spec = spec
        self.num_large_crops = spec.num_views
        self.num_small_crops = spec.num_small
        self.num_crops = spec.num_crops
        self.calls = []
        self.records = []
        self.knn_calls = []
        if knn_eval is not None:
            self.knn_eval = knn_eval
        self.small_extra = False
        self.momentum_loss = momentum_loss
        if momentum:
            self.momentum_backbone = torch.nn.Identity()
        if predictor:
            self.predictor = lambda z: 10 * z - 3

    def record(self, values):
        self.records.append(dict(values))

    def knn(self, train_features, train_targets):
        self.knn_calls.append((train_features, train_targets))

    def base_training_step(self, x, targets):
        self.calls.append(("base", x, targets))
        f = feats_of(x)
        return {"loss": x.sum() + 0.5 * targets.sum(), "acc1": targets.float().mean(),
                "acc5": x.mean(), "feats": f, "z": z_of(f), "logits": torch.cat([f, -f], 1),
                "scalar": torch.tensor(7.0)}

    def multicrop_forward(self, x):
        self.calls.append(("multicrop", x))
        f = feats_of(x)
        out = {"feats": f, "z": z_of(f)}
        if self.small_extra:
            out["small_only"] = -f
        return out

    def _shared_step_momentum(self, x, targets):
        self.calls.append(("momentum_step", x, targets))
        f = 3 * feats_of(x)
        out = {"feats": f, "z": f - 1}
        if self.momentum_loss:
            out.update({"loss": 100 + x.sum() - targets.sum(), "acc1": x.max(),
                        "acc5": x.min()})
        return out

    def momentum_forward(self, x):
        self.calls.append(("momentum_forward", x))
        f = 3 * feats_of(x)
        return {"feats": f, "z": f - 1}


def crops_of(batch, shapes, start=1.0):
    """Crop k: rows ``start + 10 k + (row index) / 10 + column / 100``."""
    crops = []
    for k, width in enumerate(shapes):
        rows = torch.arange(batch, dtype=torch.float64).unsqueeze(1) / 10
        cols = torch.arange(width, dtype=torch.float64).unsqueeze(0) / 100
        crops.append(start + 10 * k + rows + cols)
    return crops


def same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), (a, b)


def same_list(a, b):
    assert isinstance(a, list) and len(a) == len(b)
    for x, y in zip(a, b):
        same(x, y)


# --------------------------------------------------------------------------- helpers


def test_fusion_sum_and_concat():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    assert fusion("sum") is torch.add
    same(fusion("concat")(a, b), torch.tensor([[1.0, 2.0, 10.0, 20.0], [3.0, 4.0, 30.0, 40.0]]))
    same(fusion("anything else")(a, b), torch.cat([a, b], 1))


def test_split_per_crop_splits_rows_of_every_size_matching_tensor():
    out = {"v": torch.arange(6), "m": torch.arange(12).view(6, 2), "s": torch.tensor(2.0),
           "short": torch.arange(5), "n": 3}
    split = split_per_crop(out, 2, 3)
    assert list(split) == ["v", "m", "s", "short", "n"]
    same_list(split["v"], [torch.arange(3), torch.arange(3, 6)])
    same_list(split["m"], [torch.arange(6).view(3, 2), torch.arange(6, 12).view(3, 2)])
    assert split["s"] is out["s"] and split["short"] is out["short"] and split["n"] == 3


def test_group_by_shape_groups_consecutive_equal_shapes():
    a1, a2, b1, b2, a3 = (torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 4),
                          torch.ones(2, 4), torch.full((2, 3), 2.0))
    groups = group_by_shape([a1, a2, b1, b2, a3])
    assert [[id(t) for t in g] for g in groups] == [[id(a1), id(a2)], [id(b1), id(b2)],
                                                   [id(a3)]]
    three = group_by_shape([a1, b1, b2])
    assert [[id(t) for t in g] for g in three] == [[id(a1)], [id(b1), id(b2)]]
    assert group_by_shape([]) == []


# --------------------------------------------------------------------------- the K-crop step


def expected_records(loss, acc1, acc5, prefix="train"):
    return {f"{prefix}_class_loss": loss, f"{prefix}_acc1": acc1, f"{prefix}_acc5": acc5}


def check_records(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert list(g) == list(w)
        for key in w:
            same(g[key], w[key])


def test_crops_step_outputs_calls_and_records():
    spec = ViewSpec(num_views=2, num_small=3)
    host = StandInHost(spec)
    crops = crops_of(3, [4, 4, 2, 2, 3])
    indexes = torch.tensor([5, 6, 7])
    targets = torch.tensor([1, 0, 2])
    out = host.training_step([indexes, tuple(crops), targets], 0)

    large = torch.cat(crops[:2])
    repeated = torch.tensor([1, 0, 2, 1, 0, 2])
    assert [c[0] for c in host.calls] == ["base", "multicrop", "multicrop"]
    same(host.calls[0][1], large)
    same(host.calls[0][2], repeated)
    same(host.calls[1][1], torch.cat(crops[2:4]))
    same(host.calls[2][1], crops[4])

    assert list(out) == ["loss", "acc1", "acc5", "feats", "z", "logits", "scalar", "indexes"]
    loss = large.sum() + 0.5 * repeated.sum()
    same(out["loss"], loss)
    same(out["acc1"], repeated.float().mean())
    same(out["acc5"], large.mean())
    same_list(out["feats"], [feats_of(c) for c in crops])
    same_list(out["z"], [z_of(feats_of(c)) for c in crops])
    same_list(out["logits"], [torch.cat([feats_of(c), -feats_of(c)], 1) for c in crops[:2]])
    same(out["scalar"], torch.tensor(7.0))
    assert out["indexes"] is indexes

    check_records(host.records, [expected_records(loss, repeated.float().mean(), large.mean())])
    assert len(host.knn_calls) == 1
    same(host.knn_calls[0][0], feats_of(large))
    same(host.knn_calls[0][1], repeated)


def test_crops_step_with_one_tensor_and_no_knn():
    host = StandInHost(ViewSpec(num_views=1), knn_eval=False)
    crop = crops_of(2, [3])[0]
    out = host.training_step([torch.tensor([0, 1]), crop, torch.tensor([3, 4])], 0)
    same_list(out["feats"], [feats_of(crop)])
    same(out["loss"], crop.sum() + 3.5)
    assert host.knn_calls == []


def test_crops_step_small_crop_keys_and_no_knn_setting():
    host = StandInHost(ViewSpec(num_views=1, num_small=2), knn_eval=None)
    host.small_extra = True
    crops = crops_of(2, [3, 2, 2])
    out = host.training_step([torch.tensor([0, 1]), crops, torch.tensor([3, 4])], 0)
    same_list(out["small_only"], [-feats_of(crops[1]), -feats_of(crops[2])])
    same_list(out["feats"], [feats_of(c) for c in crops])
    assert host.knn_calls == []


def test_crops_step_refuses_a_wrong_crop_count():
    host = StandInHost(ViewSpec(num_views=2, num_small=1))
    with pytest.raises(ValueError) as excinfo:
        host.training_step([torch.tensor([0]), crops_of(1, [2, 2]), torch.tensor([0])], 0)
    assert str(excinfo.value) == ("the batch has 2 crops but the config declares 2 large + 1 "
                                  "small (augmentations[*].num_crops)")


def test_crops_step_momentum_host():
    host = StandInHost(ViewSpec(num_views=2), momentum=True)
    crops = crops_of(2, [3, 3])
    targets = torch.tensor([2, 5])
    out = host.training_step([torch.tensor([8, 9]), crops, targets], 0)
    large = torch.cat(crops)
    repeated = torch.tensor([2, 5, 2, 5])
    assert [c[0] for c in host.calls] == ["base", "momentum_step"]
    same(host.calls[1][1], large)
    same(host.calls[1][2], repeated)
    online_loss = large.sum() + 0.5 * repeated.sum()
    momentum_loss = 100 + large.sum() - repeated.sum()
    assert list(out) == ["loss", "acc1", "acc5", "feats", "z", "logits", "scalar",
                         "momentum_feats", "momentum_z", "momentum_loss", "momentum_acc1",
                         "momentum_acc5", "indexes"]
    same(out["loss"], online_loss + momentum_loss)
    same_list(out["momentum_feats"], [3 * feats_of(c) for c in crops])
    same_list(out["momentum_z"], [3 * feats_of(c) - 1 for c in crops])
    same(out["momentum_loss"], momentum_loss)
    same(out["momentum_acc1"], large.max())
    same(out["momentum_acc5"], large.min())
    check_records(host.records, [
        expected_records(online_loss, repeated.float().mean(), large.mean()),
        expected_records(momentum_loss, large.max(), large.min(), "train_momentum"),
    ])


def test_crops_step_momentum_without_a_classifier():
    host = StandInHost(ViewSpec(num_views=2), momentum=True, momentum_loss=False)
    crops = crops_of(2, [3, 3])
    out = host.training_step([torch.tensor([8, 9]), crops, torch.tensor([2, 5])], 0)
    large = torch.cat(crops)
    same(out["loss"], large.sum() + 0.5 * 14)
    assert "momentum_loss" not in out
    same_list(out["momentum_z"], [3 * feats_of(c) - 1 for c in crops])
    assert len(host.records) == 1


# --------------------------------------------------------------------------- the MIMV step


@pytest.mark.parametrize("fuse", ["sum", "concat"])
def test_mimv_step_outputs_calls_and_records(fuse):
    K, B = 2, 3
    spec = ViewSpec(num_views=K, scheme="pairs", fusion=fuse)
    host = StandInHost(spec, predictor=True)
    crops = crops_of(B, [2] * (4 * K))
    indexes = torch.tensor([4, 0, 9])
    targets = torch.tensor([1, 2, 0])
    out = host.training_step([indexes, crops, targets], 0)

    x_n, y_a, x_a, y_n = (torch.cat(crops[i * K:(i + 1) * K]) for i in range(4))
    pair_targets = torch.tensor([1, 2, 0, 1, 2, 0])
    assert [c[0] for c in host.calls] == ["base", "multicrop", "multicrop", "multicrop"]
    same(host.calls[0][1], x_n)
    same(host.calls[0][2], pair_targets)
    for call, x in zip(host.calls[1:], [y_a, x_a, y_n]):
        same(call[1], x)

    def f(a, b):
        return a + b if fuse == "sum" else torch.cat([a, b], 1)

    z = [f(z_of(feats_of(x_n)), z_of(feats_of(y_a))), f(z_of(feats_of(x_a)), z_of(feats_of(y_n)))]
    assert list(out) == ["loss", "acc1", "acc5", "feats", "z", "p", "indexes"]
    loss = x_n.sum() + 0.5 * pair_targets.sum()
    same(out["loss"], loss)
    same(out["acc1"], pair_targets.float().mean())
    same(out["acc5"], x_n.mean())
    same_list(out["feats"], [feats_of(x) for x in (x_n, y_a, x_a, y_n)])
    same_list(out["z"], z)
    same_list(out["p"], [10 * v - 3 for v in z])
    same(out["indexes"], torch.tensor([8, 0, 18, 9, 1, 19]))
    check_records(host.records, [expected_records(loss, pair_targets.float().mean(), x_n.mean())])
    assert len(host.knn_calls) == 1
    same(host.knn_calls[0][0], feats_of(x_n))
    same(host.knn_calls[0][1], pair_targets)


def test_mimv_step_with_momentum():
    K, B = 3, 2
    host = StandInHost(ViewSpec(num_views=K, scheme="pairs", fusion="concat"), momentum=True,
                       knn_eval=False)
    crops = crops_of(B, [2] * (4 * K))
    targets = torch.tensor([3, 1])
    out = host.training_step([torch.tensor([1, 0]), crops, targets], 0)
    x_n, y_a, x_a, y_n = (torch.cat(crops[i * K:(i + 1) * K]) for i in range(4))
    pair_targets = torch.tensor([3, 1, 3, 1, 3, 1])
    assert [c[0] for c in host.calls] == ["base", "multicrop", "multicrop", "multicrop",
                                          "momentum_step", "momentum_forward",
                                          "momentum_forward", "momentum_forward"]
    same(host.calls[4][1], x_n)
    same(host.calls[4][2], pair_targets)
    for call, x in zip(host.calls[5:], [y_a, x_a, y_n]):
        same(call[1], x)
    online = x_n.sum() + 0.5 * pair_targets.sum()
    momentum = 100 + x_n.sum() - pair_targets.sum()
    assert list(out) == ["loss", "acc1", "acc5", "feats", "z", "momentum_z", "indexes"]
    same(out["loss"], online + momentum)

    def mz(x):
        return 3 * feats_of(x) - 1

    same_list(out["momentum_z"], [torch.cat([mz(x_n), mz(y_a)], 1),
                                  torch.cat([mz(x_a), mz(y_n)], 1)])
    same(out["indexes"], torch.tensor([3, 0, 4, 1, 5, 2]))
    check_records(host.records, [
        expected_records(online, pair_targets.float().mean(), x_n.mean()),
        expected_records(momentum, x_n.max(), x_n.min(), "train_momentum"),
    ])
    assert host.knn_calls == []


def test_mimv_step_momentum_without_a_classifier():
    host = StandInHost(ViewSpec(num_views=1, scheme="pairs"), momentum=True,
                       momentum_loss=False)
    crops = crops_of(2, [2] * 4)
    out = host.training_step([torch.tensor([1, 0]), crops, torch.tensor([3, 1])], 0)
    same(out["loss"], crops[0].sum() + 2.0)
    same_list(out["momentum_z"], [3 * feats_of(crops[0]) - 1 + 3 * feats_of(crops[1]) - 1,
                                  3 * feats_of(crops[2]) - 1 + 3 * feats_of(crops[3]) - 1])
    assert len(host.records) == 1


def test_mimv_step_refuses_a_wrong_crop_count():
    host = StandInHost(ViewSpec(num_views=2, scheme="pairs"))
    with pytest.raises(ValueError) as excinfo:
        host.training_step([torch.tensor([0]), crops_of(1, [2] * 7), torch.tensor([0])], 0)
    assert str(excinfo.value) == ("MIMV pairs: the batch has 7 crops per image, expected "
                                  "4 * method_kwargs.num_views = 8 (x_n, y_a, x_a, y_n)")


# --------------------------------------------------------------------------- the contract


def method_cfg(num_views=2, augmentations=((32, 2),), mimv=None, method="mv_x", **extra):
    kwargs = {"num_views": num_views}
    if mimv is not None:
        kwargs["mimv"] = mimv
    return OmegaConf.create({
        "method": method, "method_kwargs": kwargs,
        "augmentations": [{"crop_size": size, "num_crops": n} for size, n in augmentations],
        **extra})


def test_views_of_crops_and_of_mimv_pairs():
    from solo_multiview.hosts.contract import KViewMethod

    spec = KViewMethod.views(method_cfg(3, [(32, 2), (32, 1), (16, 4)]))
    assert spec == ViewSpec(num_views=3, num_small=4)
    off = KViewMethod.views(method_cfg(2, mimv={"enabled": False, "fusion": "concat"}))
    assert off == ViewSpec(num_views=2)
    on = KViewMethod.views(method_cfg(
        3, [(32, 3)], mimv={"enabled": True, "partner": "none", "roles": "augmented_augmented",
                            "fusion": "concat"}))
    assert on == ViewSpec(num_views=3, scheme="pairs", partner="none",
                          roles="augmented_augmented", fusion="concat")
    assert type(on.num_views) is int


def test_check_cfg_messages():
    from solo_multiview.config.schema import ConfigError
    from solo_multiview.hosts.contract import KViewMethod

    class LargeOnly(KViewMethod):
        accepts_small_crops = False

    KViewMethod.check_cfg(method_cfg(2, [(32, 2), (16, 3)]))
    with pytest.raises(ConfigError) as excinfo:
        LargeOnly.check_cfg(method_cfg(2, [(32, 2), (16, 3)]))
    assert str(excinfo.value) == (
        "augmentations: mv_x uses the K large crops only, got 3 small crops (entries whose "
        "crop_size differs from the first entry's); remove them or use a multi-crop method "
        "(mv_byol, mv_simsiam, mv_simclr)")
    with pytest.raises(ConfigError) as excinfo:
        KViewMethod.check_cfg(method_cfg(3, [(32, 2)]))
    assert str(excinfo.value) == (
        "method_kwargs.num_views: 3 but the augmentations give 2 large crops; make "
        "augmentations[*].num_crops of the large entries add up to K (the shipped augmentation "
        "files use ${method_kwargs.num_views})")
    with pytest.raises(ConfigError) as excinfo:
        KViewMethod.check_cfg(method_cfg(1, [(32, 1)]))
    assert str(excinfo.value) == (
        "augmentations[*].num_crops: mv_x needs at least 2 large crops (K >= 2), got K = 1 "
        "(method_kwargs.num_views)")
    # MIMV pairs: K = 1 is fine, one augmentation entry only
    pairs = {"enabled": True, "partner": "image", "roles": "normalized_augmented",
             "fusion": "sum"}
    KViewMethod.check_cfg(method_cfg(1, [(32, 1)], mimv=pairs))
    with pytest.raises(ConfigError) as excinfo:
        KViewMethod.check_cfg(method_cfg(1, [(32, 1), (32, 0)], mimv=pairs))
    assert str(excinfo.value) == (
        "augmentations: mv_x takes exactly one augmentation entry for MIMV pairs (its strong "
        "augmentation), got 2; it makes 4 * method_kwargs.num_views views per image itself "
        "(x_n, y_a, x_a, y_n per pair)")


class HostBase:
    """The host half of a composed method: records what reaches it."""

    def __init__(self):
        self.host_calls = []

    def training_step(self, batch, batch_idx):
        self.host_calls.append(("training_step", batch, batch_idx))
        return {"loss": torch.tensor(0.25), "z": [torch.ones(1)]}

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.host_calls.append(("on_train_batch_end", outputs, batch, batch_idx))

    def log_dict(self, values, **kwargs):
        self.host_calls.append(("log_dict", dict(values), kwargs))

    def configure_callbacks(self):
        return ["host callback"]


def contract_method(**attrs):
    from solo_multiview.hosts.contract import KViewMethod

    class Method(KViewMethod, HostBase):
        loss_name = "nce"

        def kview_loss(self, out, batch):
            self.host_calls.append(("kview_loss", out, batch))
            return torch.tensor(2.0), {"pos": torch.tensor(0.5)}

    method = Method()
    for key, value in attrs.items():
        setattr(method, key, value)
    return method


def test_training_step_adds_the_host_loss_and_records():
    method = contract_method()
    batch = ["indexes", "crops", "targets"]
    loss = method.training_step(batch, 4)
    same(loss, torch.tensor(2.25))
    step, kview = method.host_calls
    assert step == ("training_step", batch, 4)
    assert kview[0] == "kview_loss" and kview[2] is batch and list(kview[1]) == ["loss", "z"]
    assert list(method._step_logs) == ["train_nce_loss", "train_pos"]
    same(method._step_logs["train_nce_loss"], torch.tensor(2.0))
    same(method._step_logs["train_pos"], torch.tensor(0.5))


def test_recorded_values_are_logged_once_at_the_batch_end():
    method = contract_method()
    method.record({"a": 1.0})
    method.record({"b": 2.0, "a": 3.0})
    method.on_train_batch_end("outs", "batch", 6)
    assert method.host_calls == [
        ("log_dict", {"a": 3.0, "b": 2.0}, {"on_epoch": True, "sync_dist": True}),
        ("on_train_batch_end", "outs", "batch", 6),
    ]
    method.on_train_batch_end("outs2", "batch2", 7)  # nothing recorded: nothing logged
    assert method.host_calls[2:] == [("on_train_batch_end", "outs2", "batch2", 7)]


@pytest.mark.parametrize("cfg,policy", [({"nonfinite_loss": "skip"}, "skip"),
                                        ({"nonfinite_loss": None}, "stop"), ({}, "stop")])
def test_configure_callbacks_adds_the_guard(cfg, policy):
    from solo_multiview.hosts.guard import NonFiniteGuard

    method = contract_method(cfg=OmegaConf.create(cfg))
    callbacks = method.configure_callbacks()
    assert callbacks[0] == "host callback" and len(callbacks) == 2
    assert isinstance(callbacks[1], NonFiniteGuard) and callbacks[1].policy == policy


def test_predict_skips_the_predictor_under_pairs():
    for scheme, want in [("crops", ["z", "p"]), ("pairs", ["z"])]:
        method = contract_method(predictor=lambda z: z + 1)
        method.__dict__["view_spec"] = ViewSpec(num_views=1, scheme=scheme)
        out = method._predict({"z": torch.tensor([1.0])})
        assert list(out) == want
    same(out["z"], torch.tensor([1.0]))


# --------------------------------------------------------------------------- the guard


class Strategy:
    def __init__(self):
        self.calls = []

    def reduce_boolean_decision(self, decision, all=True):
        self.calls.append((decision, all))
        return decision


class Updater:
    def __init__(self):
        self.calls = []

    def update_tau(self, cur_step, max_steps):
        self.calls.append((cur_step, max_steps))


class Module(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        self.register_buffer("running", torch.tensor([3.0]))
        self.logged = []

    def log(self, name, value, **kwargs):
        self.logged.append((name, value, kwargs))


def trainer_for(module, global_step=7, lr_groups=True):
    params = list(module.parameters())
    optimizer = torch.optim.SGD([{"params": params, "lr": 0.1, "name": "backbone"},
                                 {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.01}])
    return SimpleNamespace(global_step=global_step, current_epoch=1,
                           fit_loop=SimpleNamespace(batch_idx=3), strategy=Strategy(),
                           optimizers=[optimizer], estimated_stepping_batches=50)


def test_guard_policy_default_and_bad_value():
    from solo_multiview.hosts.guard import NonFiniteGuard

    guard = NonFiniteGuard()
    assert guard.policy == "stop" and guard.skipping is False and guard._buffers is None
    assert NonFiniteGuard("skip").policy == "skip"
    with pytest.raises(ValueError) as excinfo:
        NonFiniteGuard("halt")
    assert str(excinfo.value) == ("nonfinite_loss: unknown value 'halt'; choose one of "
                                  "['stop', 'skip']")


MESSAGE = ("non-finite loss at global step 7 (epoch 1, batch 3): loss=nan; logged in this "
           "step: train_nce_loss=2.5, train_class_loss=inf; learning rate: backbone=0.1, "
           "optimizer0.group1=0.01")


def test_guard_stop_raises_with_the_whole_message():
    from solo_multiview.hosts.guard import NonFiniteGuard, NonFiniteLossError

    module = Module()
    trainer = trainer_for(module)
    guard = NonFiniteGuard("stop")
    module.__dict__["_step_logs"] = {"train_nce_loss": torch.tensor(2.5),
                                     "train_class_loss": torch.tensor(float("inf"))}
    with pytest.raises(NonFiniteLossError) as excinfo:
        guard.on_before_backward(trainer, module, torch.tensor(float("nan")))
    assert str(excinfo.value) == (
        MESSAGE + ". nonfinite_loss=stop: training stopped before this update; the last good "
        "checkpoint is kept (nonfinite_loss=skip skips such batches)")
    assert trainer.strategy.calls == [(True, False)]


def test_guard_finite_loss_passes_and_nothing_logged_reads_nothing():
    from solo_multiview.hosts.guard import NonFiniteGuard, NonFiniteLossError

    module = Module()
    trainer = trainer_for(module)
    guard = NonFiniteGuard("stop")
    guard.on_before_backward(trainer, module, torch.tensor([1.0, 2.0]))
    assert trainer.strategy.calls == [(False, False)] and guard.skipping is False
    with pytest.raises(NonFiniteLossError, match=re.escape(
            "loss=inf; logged in this step: nothing; learning rate")):
        guard.on_before_backward(trainer, module, torch.tensor([1.0, float("inf")]))


def test_guard_skip_warns_counts_and_drops_the_update(monkeypatch):
    from solo_multiview.hosts import guard as guard_module

    warnings = []
    monkeypatch.setattr(guard_module, "rank_zero_warn", warnings.append)
    module = Module()
    module.weight.grad = torch.tensor([0.5, 0.5])
    trainer = trainer_for(module, global_step=7)
    updater = Updater()
    module.momentum_updater = updater
    module.last_step = 2
    guard = guard_module.NonFiniteGuard("skip")

    guard.on_train_batch_start(trainer, module, None, 0)
    assert guard.skipping is False and module.__dict__["_step_logs"] == {}
    assert updater.calls == [(7, 50)]
    assert [b.tolist() for b in guard._buffers] == [[3.0]]
    module.running.add_(10)
    module.__dict__["_step_logs"] = {"train_nce_loss": torch.tensor(2.5),
                                     "train_class_loss": torch.tensor(float("inf"))}
    guard.on_before_backward(trainer, module, torch.tensor(float("nan")))
    assert guard.skipping is True and module.nonfinite_skipped == 1
    assert warnings == [MESSAGE + ". nonfinite_loss=skip: batch skipped (1 skipped so far)"]

    optimizer = trainer.optimizers[0]
    optimizer.param_groups[1]["params"][0].grad = torch.ones(1)
    guard.on_before_optimizer_step(trainer, module, optimizer)
    assert module.weight.grad is None and optimizer.param_groups[1]["params"][0].grad is None

    guard.on_train_batch_end(trainer, module, None, None, 0)
    assert module.running.tolist() == [3.0]
    assert module.__dict__["_step_logs"] == {} and module.last_step == 7
    assert guard._buffers is None
    (name, value, kwargs), = module.logged
    assert name == "train_skipped_batches" and kwargs == {}
    same(value, torch.tensor(1.0))

    guard.on_before_backward(trainer, module, torch.tensor(float("nan")))
    assert module.nonfinite_skipped == 2
    assert warnings[1].endswith("batch skipped (2 skipped so far)")


def test_guard_keeps_a_good_batch():
    from solo_multiview.hosts.guard import NonFiniteGuard

    module = Module()
    module.weight.grad = torch.tensor([0.5, 0.5])
    module.last_step = 2
    trainer = trainer_for(module, global_step=0)
    updater = Updater()
    module.momentum_updater = updater
    guard = NonFiniteGuard("stop")
    guard.on_before_optimizer_step(trainer, module, trainer.optimizers[0])  # before any batch
    guard.skipping = True
    guard.on_train_batch_start(trainer, module, None, 0)
    assert guard.skipping is False and guard._buffers is None and updater.calls == []
    assert module.__dict__["_step_logs"] == {}
    guard.on_before_backward(trainer, module, torch.tensor(1.0))
    guard.on_before_optimizer_step(trainer, module, trainer.optimizers[0])
    same(module.weight.grad, torch.tensor([0.5, 0.5]))
    module.running.add_(1)
    module.__dict__["_step_logs"] = {"a": 1}
    guard.on_train_batch_end(trainer, module, None, None, 0)
    assert module.running.tolist() == [4.0] and module.__dict__["_step_logs"] == {"a": 1}
    assert module.last_step == 2
    (name, value, _), = module.logged
    same(value, torch.tensor(0.0))


def test_guard_skip_policy_at_step_one_and_without_momentum():
    from solo_multiview.hosts.guard import NonFiniteGuard

    module = Module()
    trainer = trainer_for(module, global_step=1)
    updater = Updater()
    module.momentum_updater = updater
    guard = NonFiniteGuard("skip")
    guard.on_train_batch_start(trainer, module, None, 0)
    assert updater.calls == [(1, 50)]
    guard.on_train_start(trainer, module)
    assert updater.calls == [(1, 50), (1, 50)]
    trainer.global_step = 0
    guard.on_train_start(trainer, module)
    assert updater.calls == [(1, 50), (1, 50)]
    plain = Module()
    NonFiniteGuard.sync_tau(trainer, plain)  # no momentum updater: nothing to do


def test_guard_sync_tau_reads_the_trainer():
    from solo_multiview.hosts.guard import NonFiniteGuard

    module = Module()
    module.momentum_updater = Updater()
    NonFiniteGuard.sync_tau(SimpleNamespace(global_step=5, estimated_stepping_batches=9),
                            module)
    assert module.momentum_updater.calls == [(5, 9)]


# --------------------------------------------------------------------------- hosts


def test_resolve_host_name(monkeypatch):
    import solo_multiview.hosts as hosts

    monkeypatch.setattr(hosts, "solo_available", lambda: True)
    assert [hosts.resolve_host_name(n) for n in ("auto", "solo", "builtin")] == [
        "solo", "solo", "builtin"]
    monkeypatch.setattr(hosts, "solo_available", lambda: False)
    assert [hosts.resolve_host_name(n) for n in ("auto", "builtin")] == ["builtin", "builtin"]
    with pytest.raises(ValueError) as excinfo:
        hosts.resolve_host_name("solo")
    assert str(excinfo.value) == (
        "host: 'solo' needs solo-learn, which is not installed (see the README: install its "
        "GitHub source with --no-deps), or use host: builtin")
