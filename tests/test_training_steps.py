"""A few real training steps of mv_simclr on both hosts (tiny convnet, embedded digits)."""

from __future__ import annotations

import math

import pytest
import torch

from solo_multiview.training.pretrain import fit, prepare_pretrain
from tests.helpers import HOSTS, reference_topk, tiny_cfg


def count_backbone_calls(model) -> list:
    """Records the batch size of every backbone call."""
    calls = []
    model.backbone.register_forward_hook(lambda module, inputs, output: calls.append(
        inputs[0].shape[0]))
    return calls


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("num_views,small_crops", [(2, 0), (4, 0), (3, 2)])
def test_mv_simclr_trains(tmp_path, host, num_views, small_crops):
    cfg = tiny_cfg(tmp_path, host=host, num_views=num_views, small_crops=small_crops)
    run = prepare_pretrain(cfg)
    assert run.cfg.host == host
    assert run.cfg.data.num_large_crops == num_views
    assert run.cfg.data.num_small_crops == small_crops
    before = [p.detach().clone() for p in run.model.backbone.parameters()]
    calls = count_backbone_calls(run.model)

    result = fit(run)

    loss = result.metrics["train_nce_loss"]
    assert math.isfinite(loss) and loss > 0
    after = list(run.model.backbone.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after)), "backbone did not train"
    # one backbone call per crop size and step: B*K large images, then B*S small ones
    batch = cfg.optimizer.batch_size
    train_calls = [c for c in calls if c in (batch * num_views, batch * small_crops)]
    expected = [batch * num_views] + ([batch * small_crops] if small_crops else [])
    assert train_calls == expected * 2, calls


@pytest.mark.parametrize("host", HOSTS)
def test_online_knn_monitor(tmp_path, host):
    cfg = tiny_cfg(tmp_path, host=host, overrides=[
        "+knn_eval.enabled=true", "+knn_eval.k=5", "+limit_train_batches=2", "max_epochs=1"])
    run = prepare_pretrain(cfg)
    banks = {"train": [], "test": []}
    if host == "builtin":  # record what the monitor is given, to recompute its accuracy
        update = run.model.knn.update

        def recording_update(train_features=None, train_targets=None, test_features=None,
                             test_targets=None):
            for kind, feats, targets in (("train", train_features, train_targets),
                                         ("test", test_features, test_targets)):
                if feats is not None:
                    banks[kind].append((feats.detach().clone(), targets.clone()))
            update(train_features, train_targets, test_features, test_targets)

        run.model.knn.update = recording_update
    result = fit(run)
    acc = result.metrics["val_knn_acc1"]
    assert 0 <= acc <= 100
    if host != "builtin":
        return
    # weighted cosine kNN (k = 5, the configured temperature), written out
    train = torch.cat([f for f, _ in banks["train"]])
    train_targets = torch.cat([t for _, t in banks["train"]])
    test = torch.cat([f for f, _ in banks["test"]])
    test_targets = torch.cat([t for _, t in banks["test"]])
    assert len(train) == 2 * 16 * 2 and len(test) > 0  # 2 steps of 16 images x 2 crops
    expected = reference_topk(train, train_targets, test, test_targets, 5,
                              run.cfg.knn_eval.temperature, 1)
    assert acc == pytest.approx(expected, abs=1e-4)
