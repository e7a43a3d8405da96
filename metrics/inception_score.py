"""Inception Score (Salimans et al., "Improved Techniques for Training GANs", 2016).

IS = exp(E_x KL(p(y|x) || p(y))), reported as mean and std over 10 splits. p(y|x) is the softmax of the 2015
Inception graph's 1008-way logits computed without the output bias, as in the original TF code.
"""

import numpy as np
import torch

from . import metric_utils


def inception_score(logits, num_splits=10):
    """logits [N, K] -> (mean, std) over `num_splits` consecutive splits."""
    logits = torch.as_tensor(logits, dtype=torch.float64)
    if logits.shape[0] < num_splits:
        raise ValueError(f"IS with {num_splits} splits needs at least {num_splits} samples, got {logits.shape[0]}")
    log_p = torch.log_softmax(logits, dim=1)
    scores = []
    for part in torch.tensor_split(log_p, num_splits):
        log_marginal = torch.logsumexp(part, dim=0) - np.log(part.shape[0])  # log mean_x p(y|x)
        kl = (part.exp() * (part - log_marginal)).sum(dim=1)
        scores.append(kl.mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def classifier_logits(detector, images):
    """feature_fn of the IS: uint8 images [N, C, H, W] -> 1008-way logits [N, 1008] (no output bias)."""
    return detector.logits(images)


def compute_is(opts, num_gen, num_splits=10):
    """IS of `num_gen` generated images embedded for this metric alone (reference of metric_main's shared path)."""
    kwargs = dict(require_classifier=True)
    stats = metric_utils.compute_feature_stats_for_generator(opts, "inception", detector_kwargs=kwargs,
                                                             num_gen=num_gen, capture_all=True,
                                                             feature_fn=classifier_logits, feature_kind="logits")
    if opts.rank != 0:
        return float("nan"), float("nan")
    return inception_score(stats.get_all(), num_splits)
