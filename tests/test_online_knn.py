"""The built-in host's online kNN monitor (hosts/online_knn.py) against a kNN written out here."""

from __future__ import annotations

import pytest
import torch

from solo_multiview.hosts.online_knn import OnlineKNN
from tests.helpers import reference_topk


def banks(classes: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(classes, 6, generator=g)
    train_targets = torch.arange(60) % classes
    test_targets = torch.randint(0, classes, (25,), generator=g)
    train = centres[train_targets] + 4.0 * torch.randn(60, 6, generator=g)
    test = centres[test_targets] + 4.0 * torch.randn(25, 6, generator=g)
    return train, train_targets, test, test_targets


def test_defaults_are_solo_learns():
    knn = OnlineKNN()
    assert (knn.k, knn.temperature) == (20, 0.07)


@pytest.mark.parametrize("k,temperature", [(20, 0.07), (10, 0.5)])
def test_accuracies_equal_the_written_out_knn(k, temperature):
    train, train_targets, test, test_targets = banks()
    knn = OnlineKNN(k=k, temperature=temperature)
    knn.update(train_features=train[:30], train_targets=train_targets[:30])
    knn.update(train_features=train[30:], train_targets=train_targets[30:],
               test_features=test[:10], test_targets=test_targets[:10])
    knn.update(test_features=test[10:], test_targets=test_targets[10:])
    top1, top5 = knn.compute()
    expected1 = reference_topk(train, train_targets, test, test_targets, k, temperature, 1)
    expected5 = reference_topk(train, train_targets, test, test_targets, k, temperature, 5)
    assert float(top1) == pytest.approx(expected1) and float(top5) == pytest.approx(expected5)
    assert expected1 < expected5 < 100  # top-1 and top-5 differ on these banks


def test_top5_with_fewer_than_five_classes_is_top_all():
    train, train_targets, test, test_targets = banks(classes=3)
    knn = OnlineKNN(k=5, temperature=0.1)
    knn.update(train_features=train, train_targets=train_targets, test_features=test,
               test_targets=test_targets)
    top1, top5 = knn.compute()
    assert float(top5) == 100.0
    assert float(top1) == pytest.approx(
        reference_topk(train, train_targets, test, test_targets, 5, 0.1, 1))


def test_unlabelled_rows_leave_the_bank_and_empty_banks_give_minus_one():
    train, train_targets, test, test_targets = banks()
    masked = train_targets.clone()
    masked[::2] = -1
    knn = OnlineKNN(k=5, temperature=0.1)
    knn.update(train_features=train, train_targets=masked, test_features=test,
               test_targets=test_targets)
    top1, _ = knn.compute()
    keep = masked != -1
    assert float(top1) == pytest.approx(
        reference_topk(train[keep], masked[keep], test, test_targets, 5, 0.1, 1))

    nothing = OnlineKNN()
    assert [float(v) for v in nothing.compute()] == [-1.0, -1.0]
    no_test = OnlineKNN()
    no_test.update(train_features=train, train_targets=train_targets)
    assert [float(v) for v in no_test.compute()] == [-1.0, -1.0]
    no_train = OnlineKNN()
    no_train.update(test_features=test, test_targets=test_targets)
    assert [float(v) for v in no_train.compute()] == [-1.0, -1.0]
    unlabelled = OnlineKNN()
    unlabelled.update(train_features=train[:1], train_targets=torch.tensor([-1]),
                      test_features=test, test_targets=test_targets)
    assert [float(v) for v in unlabelled.compute()] == [-1.0, -1.0]
    one = OnlineKNN(k=1)
    one.update(train_features=train[:1], train_targets=train_targets[:1],
               test_features=test[:1], test_targets=train_targets[:1])
    assert float(one.compute()[0]) == 100.0  # a one-row bank is a bank


def test_banks_stay_out_of_checkpoints_and_are_gathered_by_concatenation():
    knn = OnlineKNN()
    train, train_targets, _, _ = banks()
    knn.update(train_features=train, train_targets=train_targets)
    assert knn.state_dict() == {}
    assert all(knn._reductions[name] is not None for name in
               ("train_features", "train_targets", "test_features", "test_targets"))
    merged = knn._reductions["train_features"]([train[:2], train[2:5]])
    assert torch.equal(merged, train[:5])
    knn.reset()
    assert knn.train_features == []
