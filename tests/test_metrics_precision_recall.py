"""metrics/precision_recall.py: improved precision / recall (k-NN manifolds) against brute force."""

import numpy as np
import pytest
import torch

from metrics.precision_recall import kth_nn_radii, precision_recall


def test_pr_identical_sets_is_one_one():
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x.clone(), k=3) == (1.0, 1.0)


def test_pr_disjoint_sets_is_zero_zero():
    x = torch.randn(40, 8, generator=torch.Generator().manual_seed(1))
    assert precision_recall(x, x + 100, k=3) == (0.0, 0.0)


def test_pr_partial_coverage_matches_brute_force():
    g = torch.Generator().manual_seed(2)
    real = torch.randn(60, 4, generator=g)
    fake = torch.cat([torch.randn(30, 4, generator=g) * 0.5, torch.randn(30, 4, generator=g) + 6])  # Half off-manifold.

    def brute(manifold, probes, k):
        d = torch.cdist(manifold, manifold)
        radii = d.sort(dim=1).values[:, k]
        return float(np.mean([(torch.norm(manifold - p, dim=1) <= radii).any().item() for p in probes]))

    p, r = precision_recall(real, fake, k=3)
    assert p == pytest.approx(brute(real, fake, 3))
    assert r == pytest.approx(brute(fake, real, 3))
    assert 0.3 < p < 0.6  # The far half of `fake` is outside the real manifold.
    # Block size must not matter.
    assert precision_recall(real, fake, k=3, block=7) == (p, r)


def test_kth_nn_radii_excludes_self():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    assert kth_nn_radii(x, k=1).tolist() == [1.0, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="more than 3"):
        kth_nn_radii(x[:3], k=3)
