"""Weighted kNN against a per-sample pure-Python reference."""

import math

import pytest
import torch

from solo_multiview.eval.knn import knn_scores


def reference_scores(bank, labels, queries, C, k, T):
    """Per query: cosine similarity to every bank entry, sort, keep k, sum exp(s / T) per class."""
    bank, queries = bank.double().tolist(), queries.double().tolist()
    labels = labels.tolist()

    def unit(v):
        n = math.sqrt(sum(a * a for a in v))
        return [a / n for a in v]

    bank = [unit(b) for b in bank]
    out = []
    for q in queries:
        q = unit(q)
        sims = sorted(((sum(a * b for a, b in zip(q, v)), j) for j, v in enumerate(bank)),
                      reverse=True)
        row = [0.0] * C
        for s, j in sims[:k]:
            row[labels[j]] += math.exp(s / T)
        out.append(row)
    return torch.tensor(out)


def data(M=23, N=11, D=6, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    bank = torch.randn(M, D, generator=g) * torch.rand(M, 1, generator=g) * 5
    labels = torch.randint(0, C, (M,), generator=g)
    queries = torch.randn(N, D, generator=g)
    return bank, labels, queries


@pytest.mark.parametrize("k", [1, 5, 23, 200])
@pytest.mark.parametrize("chunk_size", [1, 4, 11, 64])
def test_matches_reference(k, chunk_size):
    bank, labels, queries = data()
    T = 0.1
    got = knn_scores(bank, labels, queries, num_classes=4, k=k, temperature=T,
                     chunk_size=chunk_size)
    ref = reference_scores(bank, labels, queries, 4, min(k, 23), T).float()
    assert got.shape == (11, 4)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_k_larger_than_bank_uses_the_whole_bank():
    bank, labels, queries = data(M=7)
    got = knn_scores(bank, labels, queries, num_classes=4, k=1000, temperature=0.5)
    ref = reference_scores(bank, labels, queries, 4, 7, 0.5).float()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_extra_classes_get_zero_and_defaults_infer_classes():
    bank, labels, queries = data(C=3)
    got = knn_scores(bank, labels, queries, num_classes=6, k=5)
    assert got.shape == (11, 6) and (got[:, 3:] == 0).all()
    assert knn_scores(bank, labels, queries, k=5).shape == (11, int(labels.max()) + 1)


def test_bad_inputs_raise():
    bank, labels, queries = data()
    with pytest.raises(ValueError, match="temperature"):
        knn_scores(bank, labels, queries, temperature=0.0)
    with pytest.raises(ValueError, match="overflow"):
        knn_scores(bank, labels, queries, temperature=1e-3)
    with pytest.raises(ValueError, match="dim"):
        knn_scores(bank, labels, queries[:, :3])
    with pytest.raises(ValueError, match="num_classes"):
        knn_scores(bank, labels, queries, num_classes=2)
    with pytest.raises(ValueError, match="k"):
        knn_scores(bank, labels, queries, k=0)
    with pytest.raises(ValueError, match="train_labels"):
        knn_scores(bank, labels[:-1], queries)
