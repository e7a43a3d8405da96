"""torch_utils.ops.fma against a * b + c: values and broadcast-reduced gradients."""

import torch

from torch_utils.ops.fma import fma


def test_fma_broadcasts_values_and_gradients():
    torch.manual_seed(5)
    a = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 1, 1, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    out = fma(a, b, c)
    torch.testing.assert_close(out, a * b + c)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [a, b, c], g)
    expect = torch.autograd.grad(a * b + c, [a, b, c], g)
    for x, y in zip(got, expect):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y)
