"""Fréchet distance between Gaussians fitted to features: FID (Inception), FD_DINOv2, CLIP-FD.

    FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", 2017.
"""

import inspect
import warnings

import numpy as np
import scipy.linalg

from . import metric_utils


def sqrtm(a):
    """Principal square root of a square matrix via scipy's Schur method, without scipy's console output.

    Older scipy needs disp=False to stay quiet and return an error estimate; scipy >= 1.16 deprecates the
    argument (removed in 1.18). We pass it only where it exists and judge accuracy ourselves instead.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LinAlgWarning (singular) / DeprecationWarning: handled by the caller.
        if "disp" in inspect.signature(scipy.linalg.sqrtm).parameters:
            out = scipy.linalg.sqrtm(a, disp=False)
        else:
            out = scipy.linalg.sqrtm(a)
    return out[0] if isinstance(out, tuple) else out


def _sqrtm_error(root, a):
    """Relative residual ||X X - A||_F / ||A||_F (inf for non-finite X)."""
    if not np.all(np.isfinite(root)):
        return np.inf
    return float(np.linalg.norm(root @ root - a) / max(np.linalg.norm(a), 1e-30))


def trace_sqrt_product_eigh(sigma1, sigma2):
    """tr((S1 S2)^(1/2)) for symmetric PSD S1, S2 via two symmetric eigen-decompositions.

    S1 S2 is similar to S1^(1/2) S2 S1^(1/2), which is symmetric PSD, so the trace of the root is the sum of
    the square roots of that matrix's eigenvalues. Symmetric eigen-decompositions cost less than the Schur
    decomposition of a general matrix and are at least as accurate for PSD inputs (compare the two with
    `benchmarks/bench_metrics.py --evaluation --fd-method`); the default remains scipy's sqrtm, the computation
    behind published FIDs.
    """
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ sigma2 @ root1
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6, tol=1e-3, method="sqrtm"):
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); inputs [D] and [D, D], any float dtype.

    method='sqrtm' (reference): scipy's Schur square root of S1 S2. For rank-deficient covariances (fewer
    samples than dimensions) that root is ill-conditioned: when it is not finite or its residual
    ||X X - S1 S2|| / ||S1 S2|| exceeds `tol`, retry with eps*I added to both covariances. The root of a
    product of PSD matrices has real, non-negative eigenvalues, so an imaginary part is rounding noise and
    is dropped (with a warning when it is not small).
    method='eigh': trace_sqrt_product_eigh (fast; see there).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    if method == "eigh":
        tr_covmean = trace_sqrt_product_eigh(sigma1, sigma2)
    elif method == "sqrtm":
        product = sigma1 @ sigma2
        covmean = sqrtm(product)
        if _sqrtm_error(covmean, product) > tol:
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if np.iscomplexobj(covmean):
            imag = np.max(np.abs(np.diagonal(covmean).imag))
            if imag > 1e-3 * max(np.max(np.abs(np.diagonal(covmean).real)), 1e-12):
                warnings.warn(f"frechet_distance: discarding an imaginary component of {imag:.3g} in sqrtm(S1 S2)",
                              stacklevel=2)
            covmean = covmean.real
        tr_covmean = float(np.trace(covmean))
    else:
        raise ValueError(f"method must be 'sqrtm' or 'eigh', got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fd_from_stats(real, gen, method="sqrtm"):
    """FD between two FeatureStats with mean/covariance (generated first, as StyleGAN orders the arguments)."""
    mu_real, sigma_real = real.get_mean_cov()
    mu_gen, sigma_gen = gen.get_mean_cov()
    return frechet_distance(mu_gen, sigma_gen, mu_real, sigma_real, method=method)


def compute_fd(opts, detector_name, max_real, num_gen):
    """FD between the real data (all if max_real is None) and `num_gen` generated images, embedded for this
    metric alone (metric_main.calc_metrics shares the embedding between metrics; this is its reference)."""
    real = metric_utils.compute_feature_stats_for_dataset(opts, detector_name, max_items=max_real,
                                                          capture_mean_cov=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, detector_name, num_gen=num_gen,
                                                           capture_mean_cov=True)
    if opts.rank != 0:
        return float("nan")
    return fd_from_stats(real, gen, method=opts.fd_method)
