"""training/layers.py: the helpers both generators share."""

import torch

from training import layers, networks_fastgan, networks_stylegan2


def test_normalize_2nd_moment_gives_unit_mean_square_along_dim():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, 3, generator=g) * torch.tensor([0.1, 1.0, 30.0, 2.0]).view(4, 1, 1)
    for dim in (1, 2, -1):
        y = layers.normalize_2nd_moment(x, dim=dim)
        assert y.shape == x.shape
        torch.testing.assert_close(y.square().mean(dim=dim), torch.ones(4, 3 if dim == 1 else 7))
    z = torch.randn(5, 16, generator=g)
    expect = z / z.square().mean(dim=1, keepdim=True).add(1e-8).sqrt()
    torch.testing.assert_close(layers.normalize_2nd_moment(z), expect)
    torch.testing.assert_close(layers.normalize_2nd_moment(3 * z), layers.normalize_2nd_moment(z))  # scale-free
    assert torch.equal(layers.normalize_2nd_moment(torch.zeros(2, 3)), torch.zeros(2, 3))  # eps: no 0/0


def test_both_generators_use_the_one_definition():
    assert networks_fastgan.normalize_2nd_moment is layers.normalize_2nd_moment
    assert networks_stylegan2.normalize_2nd_moment is layers.normalize_2nd_moment
