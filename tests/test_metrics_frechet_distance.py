"""metrics/frechet_distance.py: closed forms, sample statistics, rank-deficient covariances, both methods."""

import numpy as np
import pytest
import scipy.stats

from metrics import frechet_distance as fd_lib
from metrics.frechet_distance import frechet_distance, trace_sqrt_product_eigh
from metrics.metric_utils import FeatureStats

METHODS = ["sqrtm", "eigh"]


def random_rotation(d, rng):
    return scipy.stats.special_ortho_group.rvs(d, random_state=rng)


def random_spd(d, rng, rank=None):
    a = rng.standard_normal([d, rank or 2 * d])
    return a @ a.T / a.shape[1]


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
