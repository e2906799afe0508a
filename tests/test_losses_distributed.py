"""Gather helpers outside a process group (the 2-process case is tested by the lead)."""

import torch

from solo_multiview.losses.distributed import gather_no_grad, gather_with_grad, rank_and_world


def test_rank_and_world_without_process_group():
    assert rank_and_world() == (0, 1)


def test_gather_with_grad_is_identity_and_passes_gradients():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = gather_with_grad(x)
    assert torch.equal(y, x)
    (y * torch.arange(3.0, dtype=torch.float64)).sum().backward()
    assert torch.equal(x.grad, torch.arange(3.0, dtype=torch.float64).expand(4, 3))


def test_gather_no_grad_is_detached_copy_of_values():
    x = torch.randn(4, 3, requires_grad=True)
    y = gather_no_grad(x)
    assert torch.equal(y, x.detach())
    assert not y.requires_grad
    idx = torch.arange(5)
    assert torch.equal(gather_no_grad(idx), idx)
