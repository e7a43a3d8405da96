"""torch_utils.distributed: the gradient all-reduce helpers, in a single process."""

import torch

from torch_utils import distributed as dist


def test_average_gradients_single_process_scrubs_non_finite_and_fills_missing():
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([1.0, float("nan"), float("inf")])
    dist.average_gradients([a, b])
    assert torch.equal(a.grad, torch.tensor([1.0, 0.0, 1e5]))
    assert torch.equal(b.grad, torch.zeros(2))  # missing gradient -> zeros, same layout on every rank
