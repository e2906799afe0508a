"""Long-tail report against hand-computed numbers and torchmetrics."""

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy

from solo_multiview.eval.metrics import flatten_report, long_tail_report, topk_accuracy

# classes 0..5; thirds: {0,1} {2,3} {4,5}; thresholds: {0,1} {2,3,4} {5}
COUNTS = [300, 150, 100, 50, 25, 3]
# (target, prediction) pairs; class 3 has no test image
PAIRS = ([(0, 0)] * 3 + [(0, 1)] + [(1, 1)] * 2 + [(2, 2)] + [(2, 0)] * 3
         + [(4, 4)] * 2 + [(4, 5)] * 3 + [(5, 0)])


def one_hot_scores(pairs, C=6):
    targets = torch.tensor([t for t, _ in pairs])
    scores = torch.zeros(len(pairs), C)
    scores[torch.arange(len(pairs)), torch.tensor([p for _, p in pairs])] = 1.0
    return scores, targets


def pstd(values):
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def test_hand_computed_report():
    scores, targets = one_hot_scores(PAIRS)
    r = long_tail_report(scores, targets, COUNTS)
    # per class: 3/4, 2/2, 1/4, none, 2/5, 0/1
    assert r["top1"] == pytest.approx(100 * 8 / 16)
    assert r["test_counts"] == [4, 2, 4, 0, 5, 1]
    acc = r["per_class_acc"]
    assert acc[:3] == pytest.approx([75.0, 100.0, 25.0]) and math.isnan(acc[3])
    assert acc[4:] == pytest.approx([40.0, 0.0])
    assert r["balanced_acc"] == pytest.approx((75 + 100 + 25 + 40 + 0) / 5)

    thirds = r["groups"]["thirds"]
    assert thirds["sizes"] == {"many": 2, "medium": 2, "few": 2}
    assert thirds["test_images"] == {"many": 6, "medium": 4, "few": 6}
    expected = {"many": 87.5, "medium": 25.0, "few": 20.0}  # class 3 left out of medium
    assert thirds["acc"] == pytest.approx(expected)
    assert thirds["std"] == pytest.approx(pstd(list(expected.values())))
    assert thirds["std"] == pytest.approx(30.7093, abs=1e-3)

    thr = r["groups"]["thresholds"]
    assert thr["group_of_class"] == [0, 0, 1, 1, 1, 2]
    assert thr["sizes"] == {"many": 2, "medium": 3, "few": 1}
    expected = {"many": 87.5, "medium": 32.5, "few": 0.0}
    assert thr["acc"] == pytest.approx(expected)
    assert thr["std"] == pytest.approx(pstd(list(expected.values())))
    assert r["top5"] is not None


def test_group_without_test_images_is_skipped_in_std():
    pairs = [p for p in PAIRS if p[0] != 5]  # the only thresholds-Few class loses its image
    r = long_tail_report(*one_hot_scores(pairs), COUNTS)
    thr = r["groups"]["thresholds"]
    assert math.isnan(thr["acc"]["few"]) and thr["sizes"]["few"] == 1
    assert thr["std"] == pytest.approx(27.5)  # pstd(87.5, 32.5)
    assert r["groups"]["thirds"]["acc"]["few"] == pytest.approx(40.0)


def test_group_without_classes_is_skipped_and_single_group_std_is_zero():
    scores, targets = one_hot_scores([(0, 0), (1, 0), (2, 2)], C=3)
    r = long_tail_report(scores, targets, [50, 40, 30])  # every class is thresholds-Medium
    thr = r["groups"]["thresholds"]
    assert thr["sizes"] == {"many": 0, "medium": 3, "few": 0}
    assert math.isnan(thr["acc"]["many"]) and math.isnan(thr["acc"]["few"])
    assert thr["acc"]["medium"] == pytest.approx(200 / 3)
    assert thr["std"] == 0.0


def test_top5_skipped_below_five_classes():
    scores, targets = one_hot_scores([(0, 0), (1, 2), (3, 3)], C=4)
    r = long_tail_report(scores, targets, [4, 3, 2, 1])
    assert r["top5"] is None
    assert "top5" not in flatten_report(r)
    scores5, targets5 = one_hot_scores([(0, 0), (1, 2), (3, 3)], C=5)
    assert long_tail_report(scores5, targets5, [5, 4, 3, 2, 1])["top5"] == 100.0


def test_against_torchmetrics_on_random_scores():
    g = torch.Generator().manual_seed(0)
    C, N = 12, 300
    scores = torch.randn(N, C, generator=g)
    targets = torch.randint(0, C, (N,), generator=g)
    scores[torch.arange(N), targets] += 1.0
    r = long_tail_report(scores, targets, list(range(C, 0, -1)))
    ref = {k: MulticlassAccuracy(num_classes=C, top_k=k, average="micro")(scores, targets)
           for k in (1, 5)}
    assert r["top1"] == pytest.approx(100 * float(ref[1]), abs=1e-4)
    assert r["top5"] == pytest.approx(100 * float(ref[5]), abs=1e-4)
    per_class = MulticlassAccuracy(num_classes=C, average="none")(scores, targets)
    assert np.allclose(r["per_class_acc"], 100 * per_class.numpy(), atol=1e-4)
    macro = MulticlassAccuracy(num_classes=C, average="macro")(scores, targets)
    assert r["balanced_acc"] == pytest.approx(100 * float(macro), abs=1e-4)
    assert topk_accuracy(scores, targets, 1) == r["top1"]


def test_flatten_report_keys():
    flat = flatten_report(long_tail_report(*one_hot_scores(PAIRS), COUNTS), prefix="lin/")
    assert flat["lin/top1"] == pytest.approx(50.0)
    assert flat["lin/thirds/many"] == pytest.approx(87.5)
    assert flat["lin/thresholds/medium"] == pytest.approx(32.5)
    assert set(flat) >= {"lin/top5", "lin/balanced_acc", "lin/thirds/std", "lin/thresholds/std"}


def test_bad_inputs_raise():
    scores, targets = one_hot_scores(PAIRS)
    with pytest.raises(ValueError, match="train_counts"):
        long_tail_report(scores, targets, COUNTS[:5])
    with pytest.raises(ValueError, match="targets"):
        long_tail_report(scores, targets[:-1], COUNTS)
    with pytest.raises(ValueError, match="targets"):
        long_tail_report(scores, torch.full_like(targets, 6), COUNTS)
    with pytest.raises(ValueError, match="targets"):
        long_tail_report(scores, targets.float(), COUNTS)
    with pytest.raises(ValueError, match="scores"):
        long_tail_report(scores[:, 0], targets, COUNTS)
    with pytest.raises(ValueError, match="k must"):
        topk_accuracy(scores, targets, 7)
