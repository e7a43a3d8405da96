"""Kernel Inception Distance (Bińkowski et al., "Demystifying MMD GANs", ICLR 2018).

Unbiased estimate of MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random
subsets (so memory stays bounded). Unbiased means it can be slightly negative when the distributions match.
"""

import numpy as np

from . import metric_utils


def polynomial_kernel(x, y):
    """[N, D], [M, D] -> [N, M] with k(x, y) = (x.y / D + 1)^3."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x, y):
    """Unbiased MMD^2 between equally sized samples x, y [m, D] (m >= 2): diagonal terms excluded."""
    m = x.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return within - 2 * kxy.mean()


def kernel_distance(real_features, gen_features, num_subsets=100, max_subset_size=1000, seed=0):
    """KID: mean over `num_subsets` random subsets (size min(n_real, n_gen, max_subset_size)) of MMD^2."""
    real = np.asarray(real_features, np.float64)
    gen = np.asarray(gen_features, np.float64)
    m = min(len(real), len(gen), max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 real and 2 generated features, got {len(real)} and {len(gen)}")
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = gen[rng.choice(len(gen), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        total += mmd2_unbiased(x, y)
    return float(total / num_subsets)


def compute_kid(opts, max_real, num_gen, num_subsets=100, max_subset_size=1000, detector_name="inception"):
    """KID with features embedded for this metric alone (reference of metric_main's shared path)."""
    real = metric_utils.compute_feature_stats_for_dataset(opts, detector_name, max_items=max_real, capture_all=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, detector_name, num_gen=num_gen, capture_all=True)
    if opts.rank != 0:
        return float("nan")
    return kernel_distance(real.get_all(), gen.get_all(), num_subsets, max_subset_size, seed=opts.seed)
