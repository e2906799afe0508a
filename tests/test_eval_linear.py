"""Linear probe on synthetic features."""

import pytest
import torch

from solo_multiview.eval.linear import (
    LinearProbeConfig,
    class_weights,
    train_linear_probe,
)


def separable(n, D=8, C=4, seed=0, margin=1.0):
    """Labels = argmax of a fixed random linear map; points closer than `margin` to a decision
    boundary are dropped, so a linear classifier with 100% accuracy exists."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, C, generator=torch.Generator().manual_seed(123))
    x = torch.randn(4 * n, D, generator=g) * 3 + 2  # not centred, not unit scale
    logits = (x - 2) @ W
    top2 = logits.topk(2, dim=1).values
    keep = (top2[:, 0] - top2[:, 1]) > margin
    return x[keep][:n], logits[keep].argmax(1)[:n]


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.5), ("adamw", 0.1)])
@pytest.mark.parametrize("standardize", [True, False])
def test_separable_features_near_perfect(optimizer, lr, standardize):
    x, y = separable(600)
    xt, yt = separable(400, seed=1)
    probe = train_linear_probe(x, y, num_classes=4, epochs=40, batch_size=64,
                               optimizer=optimizer, lr=lr, standardize=standardize)
    assert not probe.training
    for feats, labels in ((x, y), (xt, yt)):
        logits = probe.predict(feats, batch_size=97)
        assert logits.shape == (len(labels), 4)
        acc = (logits.argmax(1) == labels).float().mean().item()
        assert acc >= 0.98, acc


def test_seeded_and_global_rng_untouched():
    x, y = separable(200)
    cfg = LinearProbeConfig(epochs=3, batch_size=32, seed=7)
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = train_linear_probe(x, y, config=cfg)
    after = torch.rand(1)
    b = train_linear_probe(x, y, config=cfg)
    c = train_linear_probe(x, y, config=cfg, seed=8)
    assert torch.equal(before, after)
    assert torch.equal(a.head.weight, b.head.weight)
    assert not torch.equal(a.head.weight, c.head.weight)


def test_standardisation_fitted_on_train():
    x, y = separable(200)
    x = torch.cat([x, torch.full((len(x), 1), 5.0)], dim=1)  # a constant dimension
    probe = train_linear_probe(x, y, epochs=1)
    torch.testing.assert_close(probe.mean, x.mean(0))
    torch.testing.assert_close(probe.std[:-1], x[:, :-1].std(0, unbiased=False))
    assert probe.std[-1] == 1.0
    raw = train_linear_probe(x, y, epochs=1, standardize=False)
    assert (raw.mean == 0).all() and (raw.std == 1).all()


def test_class_weights_inverse_frequency():
    w = class_weights(torch.tensor([0, 0, 0, 1]), 3)
    torch.testing.assert_close(w, torch.tensor([4 / 6, 2.0, 0.0]))


def test_balanced_loss_raises_minority_recall():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(900, 2, generator=g), torch.randn(100, 2, generator=g) + 1.0])
    y = torch.cat([torch.zeros(900, dtype=torch.long), torch.ones(100, dtype=torch.long)])
    recall = {}
    for balanced in (False, True):
        probe = train_linear_probe(x, y, epochs=20, batch_size=100, lr=0.1,
                                   balanced_loss=balanced)
        recall[balanced] = (probe.predict(x[900:]).argmax(1) == 1).float().mean().item()
    assert recall[True] > recall[False] + 0.2, recall


def test_bad_inputs_raise():
    x, y = separable(50)
    with pytest.raises(ValueError, match="optimizer"):
        train_linear_probe(x, y, optimizer="lbfgs")
    with pytest.raises(ValueError, match="labels"):
        train_linear_probe(x, y[:-1])
    with pytest.raises(ValueError, match="labels"):
        train_linear_probe(x, y, num_classes=2)
    with pytest.raises(ValueError, match="epochs"):
        train_linear_probe(x, y, epochs=0)
    with pytest.raises(TypeError):
        train_linear_probe(x, y, not_an_option=1)
    probe = train_linear_probe(x, y, epochs=1)
    with pytest.raises(ValueError, match="features"):
        probe.predict(x[:, :3])
