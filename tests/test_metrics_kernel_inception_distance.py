"""metrics/kernel_inception_distance.py: the unbiased MMD^2 and KID."""

import numpy as np
import pytest

from metrics.kernel_inception_distance import kernel_distance, mmd2_unbiased, polynomial_kernel


def test_mmd2_unbiased_matches_definition():
    rng = np.random.RandomState(0)
    x, y = rng.standard_normal([6, 5]), rng.standard_normal([6, 5]) + 1
    k = lambda a, b: (a @ b / 5 + 1) ** 3
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    assert polynomial_kernel(x, y).shape == (6, 6)


def test_kid_near_zero_for_equal_distributions_and_positive_otherwise():
    rng = np.random.RandomState(1)
    d = 32
    a, b = rng.standard_normal([600, d]), rng.standard_normal([600, d])
    c = rng.standard_normal([600, d]) * 1.5 + 0.5
    same = kernel_distance(a, b, num_subsets=20, max_subset_size=300)
    diff = kernel_distance(a, c, num_subsets=20, max_subset_size=300)
    assert abs(same) < 0.01  # Unbiased: fluctuates around 0, may be negative.
    assert diff > 0.5
    assert diff > 50 * abs(same)
    # Deterministic given the seed; subset size capped by the smaller set.
    assert kernel_distance(a, c, num_subsets=20, max_subset_size=300) == diff
    assert kernel_distance(a[:10], c, num_subsets=3) == pytest.approx(
        kernel_distance(a[:10], c, num_subsets=3, max_subset_size=10))


def test_kid_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        kernel_distance(np.zeros([1, 4]), np.zeros([5, 4]))
