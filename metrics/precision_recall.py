"""Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019).

Each set of features defines a manifold: the union of balls around its points whose radius is the distance
to the point's k-th nearest neighbour within the set. Precision = fraction of generated samples inside the
real manifold; recall = fraction of real samples inside the generated manifold. Distances are computed in
tiles (torch.cdist) so that an N x M distance matrix never materialises.

Note: the paper and StyleGAN's pr50k3 use VGG-16 features; ours uses the detector given (Inception pool3 by
default), so the numbers are not interchangeable with StyleGAN's.
"""

import torch

from . import metric_utils


@torch.no_grad()
def kth_nn_radii(features, k=3, block=4096):
    """[N, D] -> [N]: distance from each point to its k-th nearest *other* point in the set.

    Distances are computed in [block, block] tiles; each row keeps a running list of its k+1 smallest
    distances (k+1: the point itself is among them at distance 0).
    """
    n = features.shape[0]
    if n <= k:
        raise ValueError(f"a k-NN manifold with k={k} needs more than {k} samples, got {n}")
    radii = []
    for r in range(0, n, block):
        rows = features[r:r + block]
        best = torch.full([rows.shape[0], 0], float("inf"), device=features.device)
        for c in range(0, n, block):
            d = torch.cdist(rows, features[c:c + block])
            best = torch.cat([best, d], dim=1).topk(min(k + 1, best.shape[1] + d.shape[1]), dim=1,
                                                    largest=False).values
        radii.append(best[:, k])
    return torch.cat(radii)


@torch.no_grad()
def coverage(manifold, radii, probes, block=4096):
    """Fraction of `probes` [M, D] within radii[j] of some manifold point j ([N, D]), in [block, block] tiles."""
    inside = []
    for r in range(0, probes.shape[0], block):
        rows = probes[r:r + block]
        hit = torch.zeros(rows.shape[0], dtype=torch.bool, device=probes.device)
        for c in range(0, manifold.shape[0], block):
            d = torch.cdist(rows, manifold[c:c + block])
            hit |= (d <= radii[c:c + block].unsqueeze(0)).any(dim=1)
        inside.append(hit)
    return torch.cat(inside).float().mean().item()


def precision_recall(real_features, gen_features, k=3, block=4096, device="cpu"):
    """-> (precision, recall) for feature sets [N, D] and [M, D]."""
    real = torch.as_tensor(real_features, dtype=torch.float32, device=device)
    gen = torch.as_tensor(gen_features, dtype=torch.float32, device=device)
    precision = coverage(real, kth_nn_radii(real, k, block), gen, block)
    recall = coverage(gen, kth_nn_radii(gen, k, block), real, block)
    return precision, recall


def compute_pr(opts, max_real, num_gen, nhood_size=3, block=4096, detector_name="inception"):
    """(precision, recall) with features embedded for this metric alone (reference of metric_main's shared path)."""
    real = metric_utils.compute_feature_stats_for_dataset(opts, detector_name, max_items=max_real, capture_all=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, detector_name, num_gen=num_gen, capture_all=True)
    if opts.rank != 0:
        return float("nan"), float("nan")
    return precision_recall(real.get_all(), gen.get_all(), k=nhood_size, block=block, device=opts.device)
