"""The built-in host's validation metrics against the same quantities computed by hand: the
online and momentum classifiers' cross-entropy (unlabelled rows left out), their top-1 / top-5
accuracies, and the epoch's batch-size-weighted means."""

from __future__ import annotations

import math

import pytest
import torch

from tests.test_methods_kview import build_model

NUM_CLASSES = 10  # the quickstart's digits


def labelled_batch(batch: int = 12, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, 16, 16, generator=gen)
    targets = torch.randint(0, NUM_CLASSES, (batch,), generator=gen)
    targets[1] = -1  # an unlabelled row: out of the loss and the accuracies
    return images, targets


def by_hand(logits: torch.Tensor, targets: torch.Tensor):
    """Mean cross-entropy and top-1 / top-5 accuracy (percent) over the labelled rows, in
    float64 loops."""
    losses, top1, top5 = [], 0, 0
    for row, target in zip(logits.double().tolist(), targets.tolist()):
        if target == -1:
            continue
        log_norm = math.log(sum(math.exp(v) for v in row))
        losses.append(log_norm - row[target])
        ranked = sorted(range(len(row)), key=lambda c: -row[c])
        top1 += target == ranked[0]
        top5 += target in ranked[:5]
    n = len(losses)
    return sum(losses) / n, 100.0 * top1 / n, 100.0 * top5 / n


def momentum_model(tmp_path, classifier: bool = True):
    model = build_model(tmp_path, "mv_byol", "builtin", 2,
                        extra=[f"+momentum.classifier={str(classifier).lower()}"]).eval()
    # a target different from the online backbone, so that mixing the two is visible
    with torch.no_grad():
        for param in model.momentum_backbone.parameters():
            param.add_(0.5 * torch.randn_like(param))
    return model


def assert_close(value: torch.Tensor, expected: float) -> None:
    assert float(value) == pytest.approx(expected, rel=1e-5, abs=1e-4)


def test_online_and_momentum_metrics_are_their_classifiers_loss_and_accuracies(tmp_path):
    model = momentum_model(tmp_path)
    images, targets = labelled_batch()
    with torch.no_grad():
        metrics = model.validation_step((images, targets), 0)
        online = model.classifier(model.backbone(images))
        target = model.momentum_classifier(model.momentum_backbone(images))
    for prefix, logits in (("val", online), ("momentum_val", target)):
        loss, acc1, acc5 = by_hand(logits, targets)
        assert_close(metrics[f"{prefix}_loss"], loss)
        assert_close(metrics[f"{prefix}_acc1"], acc1)
        assert_close(metrics[f"{prefix}_acc5"], acc5)
    assert metrics["batch_size"] == len(targets)
    assert model.validation_step_outputs == [metrics]


def test_a_step_can_leave_the_epochs_outputs_alone(tmp_path):
    model = momentum_model(tmp_path)
    with torch.no_grad():
        model.validation_step(labelled_batch(), 0, update_validation_step_outputs=False)
    assert model.validation_step_outputs == []


def test_without_a_momentum_classifier_only_the_online_metrics_are_reported(tmp_path):
    model = momentum_model(tmp_path, classifier=False)
    images, targets = labelled_batch()
    with torch.no_grad():
        metrics = model.validation_step((images, targets), 0)
        out = model._shared_step_momentum(images, targets)
    assert set(metrics) == {"batch_size", "val_loss", "val_acc1", "val_acc5"}
    assert not {"logits", "loss", "acc1", "acc5"} & set(out)
    assert torch.allclose(out["feats"], model.momentum_backbone(images))


def test_the_momentum_step_gives_the_targets_features_and_logits(tmp_path):
    model = momentum_model(tmp_path)
    images, targets = labelled_batch()
    with torch.no_grad():
        out = model._shared_step_momentum(images, targets)
        feats = model.momentum_backbone(images)
        logits = model.momentum_classifier(feats)
    # an absolute tolerance: the weights and images are unseeded, and a logit near 0 differs
    # from its recomputation by float32 rounding, past allclose's default atol of 1e-8
    assert torch.allclose(out["feats"], feats, atol=1e-6)
    assert torch.allclose(out["logits"], logits, atol=1e-6)


def test_epoch_end_logs_the_batch_size_weighted_means(tmp_path, monkeypatch):
    model = momentum_model(tmp_path)
    logged = {}
    monkeypatch.setattr(model, "log_dict", lambda values, **kwargs: logged.update(values))
    first, second = labelled_batch(12, seed=0), labelled_batch(4, seed=1)
    with torch.no_grad():
        a = model.validation_step(first, 0)
        b = model.validation_step(second, 1)
    model.on_validation_epoch_end()
    for key in ("val_loss", "val_acc1", "val_acc5",
                "momentum_val_loss", "momentum_val_acc1", "momentum_val_acc5"):
        assert_close(logged[key], (12 * float(a[key]) + 4 * float(b[key])) / 16)
    assert model.validation_step_outputs == []
