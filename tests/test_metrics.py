"""Metric math: Fréchet distance, KID, precision/recall, Inception Score, feature statistics."""

import numpy as np
import pytest
import scipy.stats
import torch

from metrics import frechet_distance as fd_lib
from metrics.frechet_distance import frechet_distance, trace_sqrt_product_eigh
from metrics.inception_score import inception_score
from metrics.kernel_inception_distance import kernel_distance, mmd2_unbiased, polynomial_kernel
from metrics.metric_utils import FeatureStats
from metrics.precision_recall import kth_nn_radii, precision_recall

METHODS = ["sqrtm", "eigh"]


def random_rotation(d, rng):
    return scipy.stats.special_ortho_group.rvs(d, random_state=rng)


def random_spd(d, rng, rank=None):
    a = rng.standard_normal([d, rank or 2 * d])
    return a @ a.T / a.shape[1]


# ----------------------------------------------------------------------------
# Fréchet distance.


@pytest.mark.parametrize("method", METHODS)
def test_fd_diagonal_closed_form(method):
    # Diagonal covariances: FD = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    rng = np.random.RandomState(0)
    d = 64
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method)
    assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_fd_commuting_covariances_closed_form(method):
    # Covariances sharing an eigenbasis Q (so they commute): same formula on the eigenvalues.
    rng = np.random.RandomState(1)
    d = 48
    q = random_rotation(d, rng)
    a, b = rng.uniform(0.01, 5, d), rng.uniform(0.01, 5, d)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_fd_of_sample_statistics_of_gaussians(method):
    # Statistics estimated from Gaussian samples converge to the closed form of the true distributions
    # (here with scaled identity covariances: FD = |dmu|^2 + d (s1 - s2)^2).
    rng = np.random.RandomState(2)
    d, n = 8, 200_000
    x = rng.standard_normal([n, d]) * 1.0 + 0.5
    y = rng.standard_normal([n, d]) * 2.0 - 0.5
    expected = d * 1.0 ** 2 + d * (1.0 - 2.0) ** 2
    sx, sy = FeatureStats(capture_mean_cov=True), FeatureStats(capture_mean_cov=True)
    for chunk in np.array_split(np.arange(n), 7):  # Streaming accumulation over uneven batches.
        sx.append(x[chunk])
        sy.append(y[chunk])
    got = frechet_distance(*sx.get_mean_cov(), *sy.get_mean_cov(), method=method)
    assert got == pytest.approx(expected, rel=0.01)


def test_fd_general_methods_agree_and_are_symmetric():
    rng = np.random.RandomState(3)
    d = 32
    s1, s2 = random_spd(d, rng), random_spd(d, rng)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a = frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    b = frechet_distance(mu1, s1, mu2, s2, method="eigh")
    c = frechet_distance(mu2, s2, mu1, s1, method="sqrtm")
    assert a > 1
    assert a == pytest.approx(b, rel=1e-9)
    assert a == pytest.approx(c, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_fd_rank_deficient_matches_exact_low_rank_value(method):
    # Few samples in many dimensions (FID with a small N): covariances of rank n-1 << d. With S = X^T X / n
    # (X centred), tr((S1 S2)^(1/2)) equals the nuclear norm of X1 X2^T / n -- an exact small-matrix value.
    rng = np.random.RandomState(4)
    n, d = 20, 128
    x = rng.standard_normal([n, d]) @ rng.standard_normal([d, d]) / np.sqrt(d)
    y = rng.standard_normal([n, d]) + 0.3
    xc, yc = x - x.mean(0), y - y.mean(0)
    s1, s2 = xc.T @ xc / n, yc.T @ yc / n
    tr_sqrt = np.linalg.svd(xc @ yc.T / n, compute_uv=False).sum()
    expected = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    got = frechet_distance(x.mean(0), s1, y.mean(0), s2, method=method)
    assert got == pytest.approx(expected, rel=1e-6)
    # Identical rank-deficient sets: ~0 although sqrtm of a singular matrix is ill-conditioned.
    assert abs(frechet_distance(x.mean(0), s1, x.mean(0), s1, method=method)) < 1e-6 * np.trace(s1)


def test_fd_retries_with_eps_when_sqrtm_fails(monkeypatch):
    rng = np.random.RandomState(5)
    d = 16
    s1, s2 = random_spd(d, rng), random_spd(d, rng)
    mu = np.zeros(d)
    expected = frechet_distance(mu, s1, mu, s2)
    real_sqrtm, calls = fd_lib.sqrtm, []

    def flaky(a):
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(fd_lib, "sqrtm", flaky)
    got = frechet_distance(mu, s1, mu, s2, eps=1e-6)
    assert len(calls) == 2
    assert np.allclose(calls[1], (s1 + 1e-6 * np.eye(d)) @ (s2 + 1e-6 * np.eye(d)))
    assert got == pytest.approx(expected, abs=1e-4)


def test_fd_drops_small_imaginary_part(monkeypatch):
    rng = np.random.RandomState(6)
    d = 8
    s1, s2 = random_spd(d, rng), random_spd(d, rng)
    expected = frechet_distance(np.zeros(d), s1, np.zeros(d), s2)
    real_sqrtm = fd_lib.sqrtm
    monkeypatch.setattr(fd_lib, "sqrtm", lambda a: real_sqrtm(a) + 1e-9j)
    got = frechet_distance(np.zeros(d), s1, np.zeros(d), s2)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-9)


def test_fd_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="method"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3), method="magic")


def test_trace_sqrt_product_eigh_matches_sqrtm():
    rng = np.random.RandomState(7)
    s1, s2 = random_spd(24, rng), random_spd(24, rng)
    assert trace_sqrt_product_eigh(s1, s2) == pytest.approx(np.trace(fd_lib.sqrtm(s1 @ s2)).real, rel=1e-10)


# ----------------------------------------------------------------------------
# KID.


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


# ----------------------------------------------------------------------------
# Precision / recall.


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


# ----------------------------------------------------------------------------
# Inception Score.


def test_is_uniform_predictions_is_one():
    mean, std = inception_score(torch.zeros(100, 1008))
    assert mean == pytest.approx(1.0)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_is_confident_and_diverse_equals_number_of_classes():
    # Each split holds 10 images, one per class, each classified with certainty -> IS = 10 exactly.
    logits = torch.full([100, 1008], -1e4)
    logits[torch.arange(100), torch.arange(100) % 10] = 0
    mean, std = inception_score(logits, num_splits=10)
    assert mean == pytest.approx(10.0, rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_is_matches_direct_formula():
    logits = torch.randn(40, 12, generator=torch.Generator().manual_seed(0)) * 3
    p = torch.softmax(logits.double(), 1).numpy()
    scores = []
    for part in np.array_split(p, 4):
        py = part.mean(0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(py)), axis=1))))
    mean, std = inception_score(logits, num_splits=4)
    assert mean == pytest.approx(np.mean(scores), rel=1e-10)
    assert std == pytest.approx(np.std(scores), rel=1e-8)
    with pytest.raises(ValueError, match="at least 10"):
        inception_score(logits[:5])


# ----------------------------------------------------------------------------
# FeatureStats.


def test_feature_stats_mean_cov_all_and_truncation(tmp_path):
    rng = np.random.RandomState(0)
    x = rng.standard_normal([103, 5]).astype(np.float32)
    stats = FeatureStats(capture_all=True, capture_mean_cov=True, max_items=100)
    for chunk in np.array_split(x, 9):
        stats.append(torch.from_numpy(chunk))
    assert stats.is_full() and stats.num_items == 100
    np.testing.assert_array_equal(stats.get_all(), x[:100])
    mean, cov = stats.get_mean_cov()
    np.testing.assert_allclose(mean, x[:100].astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x[:100].astype(np.float64), rowvar=False, bias=True), atol=1e-12)
    path = str(tmp_path / "s.npz")
    stats.save(path)
    loaded = FeatureStats.load(path, capture_all=True, capture_mean_cov=True, max_items=100)
    np.testing.assert_array_equal(loaded.get_all(), stats.get_all())
    np.testing.assert_array_equal(loaded.get_mean_cov()[1], cov)
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # No temp files left behind.
