"""Feature extraction: eval mode, no gradients, both batch layouts, mode restored."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from solo_multiview.eval.features import extract_features


def make_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.BatchNorm1d(5), nn.Dropout(0.5))
    net[2].running_mean.uniform_(-1, 1)
    net[2].running_var.uniform_(0.5, 2)
    return net


def data(n=10):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 2, 2, generator=g), torch.randint(0, 3, (n,), generator=g)


def reference(net, images):
    """Eval-mode forward written out by hand: Linear, then BN with running statistics."""
    lin, bn = net[1], net[2]
    z = images.flatten(1) @ lin.weight.T + lin.bias
    return (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


@pytest.mark.parametrize("with_index", [False, True])
def test_features_labels_and_order(with_index):
    net = make_net()
    images, labels = data()
    stats = net[2].running_mean.clone()
    tensors = (torch.arange(10), images, labels) if with_index else (images, labels)
    loader = DataLoader(TensorDataset(*tensors), batch_size=3)  # yields lists, last batch of 1
    feats, labs = extract_features(net, loader)
    assert feats.shape == (10, 5) and feats.dtype == torch.float32
    assert not feats.requires_grad
    torch.testing.assert_close(feats, reference(net, images).detach())
    assert torch.equal(labs, labels) and labs.dtype == torch.int64
    assert torch.equal(net[2].running_mean, stats)  # eval mode: BN statistics untouched
    assert all(p.grad is None for p in net.parameters())


def test_mixed_train_eval_state_restored():
    net = make_net()
    net.train()
    net[2].eval()  # e.g. frozen BN inside a training model
    images, labels = data()
    extract_features(net, [(images, labels)])
    assert net.training and net[1].training and not net[2].training and net[3].training


def test_state_restored_after_an_error():
    net = make_net().train()
    images, labels = data()
    with pytest.raises(ValueError, match="one tensor"):
        extract_features(net, [(images, labels), ([images, images], labels)])
    assert all(m.training for m in net.modules())


def test_bad_loaders_raise():
    net = make_net()
    images, labels = data()
    with pytest.raises(ValueError, match="no batches"):
        extract_features(net, [])
    with pytest.raises(ValueError, match="batches must be"):
        extract_features(net, [images])
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        extract_features(nn.Identity(), [(images, labels)])
