"""Metric registry and the API used by the training loop and calc_metrics.py.

    result = calc_metric('fid50k_full', G=G_ema, dataset_kwargs=dict(path='data/ffhq256.zip'), device=device)
    report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot_path, kimg=kimg)  # -> metric-fid50k_full.jsonl
    summary.update_run_summaries(run_dir)       # -> best-fid50k_full.json, metrics.png (metrics/summary.py)

Names (N is a count such as 50k, 10k, 2k or a plain number such as 500):
    fidN[_full]             Fréchet Inception Distance            results: {name: fid}
    fd_dinov2_N[_full]      Fréchet distance in DINOv2 ViT-L/14 space (Stein et al. 2023)
    fd_clip_N[_full]        Fréchet distance in CLIP ViT-B/32 space
    kidN[_full]             Kernel Inception Distance             results: {name: kid}
    prNkK[_full], prN[_full] precision/recall, K-NN manifolds (K defaults to 3): {name_precision, name_recall}
    isN                     Inception Score, 10 splits            results: {name_mean, name_std}
"_full": statistics of *all* real images; without it, a fixed random subset of N real images (an error if
the dataset is smaller). N is always the number of generated images.
"""

import json
import os
import re
import time

import torch

from . import frechet_distance, inception_score, kernel_inception_distance, metric_utils, precision_recall
from .metric_utils import MetricError

# Detector behind each Fréchet-distance family.
FD_DETECTORS = {"fid": "inception", "fd_dinov2_": "dinov2_vitl14", "fd_clip_": "clip_vitb32"}


def _count(text):
    return int(text[:-1]) * 1000 if text.endswith("k") else int(text)


def parse_metric(name):
    """'pr50k3_full' -> dict(kind='pr', num_gen=50000, full=True, nhood_size=3). Raises MetricError if unknown."""
    m = re.fullmatch(r"(fid|fd_dinov2_|fd_clip_|kid)(\d+k?)(_full)?", name)
    if m:
        return dict(kind="kid" if m.group(1) == "kid" else "fd", family=m.group(1), num_gen=_count(m.group(2)),
                    full=bool(m.group(3)))
    m = re.fullmatch(r"pr(\d+)(k(\d+)?)?(_full)?", name)  # pr50k3_full, pr50k_full, pr500_full
    if m:
        return dict(kind="pr", num_gen=int(m.group(1)) * (1000 if m.group(2) else 1), full=bool(m.group(4)),
                    nhood_size=int(m.group(3) or 3))
    m = re.fullmatch(r"is(\d+k?)", name)
    if m:
        return dict(kind="is", num_gen=_count(m.group(1)), full=False)
    raise MetricError(f"unknown metric {name!r}; examples: fid50k_full, kid50k_full, pr50k3_full, is50k, "
                      f"fd_dinov2_50k_full, fd_clip_50k_full, fid10k_full, fid2k_full, kid2k_full")


def is_valid_metric(name):
    try:
        spec = parse_metric(name)
    except MetricError:
        return False
    return spec["num_gen"] > 0


def list_valid_metrics():
    return ["fid50k_full", "fid10k_full", "fid2k_full", "fid50k", "kid50k_full", "kid2k_full", "pr50k3_full",
            "is50k", "fd_dinov2_50k_full", "fd_dinov2_10k_full", "fd_clip_50k_full", "fd_clip_10k_full"]


def _compute(name, spec, opts):
    max_real = None if spec["full"] else spec["num_gen"]
    n = spec["num_gen"]
    if spec["kind"] == "fd":
        return {name: frechet_distance.compute_fd(opts, FD_DETECTORS[spec["family"]], max_real=max_real, num_gen=n)}
    if spec["kind"] == "kid":
        return {name: kernel_inception_distance.compute_kid(opts, max_real=max_real, num_gen=n)}
    if spec["kind"] == "pr":
        p, r = precision_recall.compute_pr(opts, max_real=max_real, num_gen=n, nhood_size=spec["nhood_size"])
        return {f"{name}_precision": p, f"{name}_recall": r}
    if spec["kind"] == "is":
        mean, std = inception_score.compute_is(opts, num_gen=n)
        return {f"{name}_mean": mean, f"{name}_std": std}
    raise AssertionError(spec)


def _validate_inputs(spec, opts):
    """Fail before any image is embedded: missing/empty data, too few images, mismatching network."""
    n = spec["num_gen"]
    dataset = metric_utils.open_dataset(opts.dataset_kwargs)
    if not spec["full"] and spec["kind"] != "is" and len(dataset) < n:
        raise MetricError(f"dataset {opts.dataset_kwargs.get('path')} has {len(dataset)} images, but the metric "
                          f"needs {n}; use a metric with a smaller count (e.g. fid2k_full) or a '_full' one")
    if opts.G is not None:
        metric_utils.check_generator_vs_dataset(opts.G, dataset, opts.dataset_kwargs)
    else:
        dataset2 = metric_utils.open_dataset(opts.dataset2_kwargs, "second dataset (--data2)")
        if len(dataset2) < n:
            raise MetricError(f"second dataset (--data2) {opts.dataset2_kwargs.get('path')} has {len(dataset2)} "
                              f"images, but the metric needs {n}")


def calc_metric(metric, G=None, dataset_kwargs=None, num_gpus=1, rank=0, device=torch.device("cpu"),
                cache_dir=None, batch_size=64, G_kwargs={}, dataset2_kwargs=None, cache=True, progress=False,
                detector_kwargs=None, seed=0, fd_method="sqrtm"):
    """Compute one metric. Every rank of a multi-GPU job must call it; results are valid on rank 0.

    G               generator module (z_dim, c_dim, img_resolution, img_channels; images in [-1, 1]) or None
    dataset_kwargs  dict(path=...) [+ ImageFolderDataset options, or class_name=...]: the real data
    dataset2_kwargs instead of G: a second dataset whose images play the generated ones (folder vs folder)
    G_kwargs        extra arguments for G(z, c, **G_kwargs), e.g. dict(noise_mode='const', truncation_psi=1)
    cache_dir       where real-data statistics and downloaded weights live (default $PGAN_CACHE or
                    ~/.cache/projected_gan)
    detector_kwargs {detector_name: kwargs} passed to get_detector (e.g. {'inception': {'path': ...}})
    fd_method       'sqrtm' (scipy, the reference computation) or 'eigh' (several times faster on CPU)
    -> dict(results={...}, metric=metric, total_time=seconds, total_time_str=..., num_gpus=num_gpus)
    """
    spec = parse_metric(metric)
    if spec["num_gen"] <= 0:
        raise MetricError(f"metric {metric!r}: the number of images must be positive")
    if G is None and not dataset2_kwargs:
        raise MetricError(f"metric {metric!r}: give a generator (G) or a second dataset (dataset2_kwargs)")
    opts = metric_utils.MetricOptions(G=G, G_kwargs=G_kwargs, dataset_kwargs=dataset_kwargs,
                                      dataset2_kwargs=dataset2_kwargs, num_gpus=num_gpus, rank=rank, device=device,
                                      cache_dir=cache_dir, batch_size=batch_size, cache=cache, progress=progress,
                                      detector_kwargs=detector_kwargs, seed=seed, fd_method=fd_method)
    _validate_inputs(spec, opts)
    start = time.time()
    results = _compute(metric, spec, opts)
    total_time = time.time() - start
    if num_gpus > 1:
        torch.distributed.barrier()
    return dict(results=results, metric=metric, total_time=total_time, total_time_str=_format_time(total_time),
                num_gpus=num_gpus)


def _format_time(seconds):
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s // 60) % 60:02d}m"


def report_metric(result_dict, run_dir=None, snapshot_pkl=None, kimg=None):
    """Append the result as one JSON line to run_dir/metric-{name}.jsonl (if run_dir) and return the line.

    `kimg`: thousands of training images the evaluated snapshot had seen (None when unknown).
    """
    metric = result_dict["metric"]
    if snapshot_pkl is not None and run_dir is not None and os.path.dirname(os.path.abspath(snapshot_pkl)) == \
            os.path.abspath(run_dir):
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    line = dict(result_dict, snapshot_pkl=snapshot_pkl, kimg=None if kimg is None else float(kimg),
                timestamp=time.time())
    text = json.dumps(line)
    if run_dir is not None:
        os.makedirs(run_dir, exist_ok=True)
        # One write() of a complete line: concurrent appenders never interleave half lines.
        with open(os.path.join(run_dir, f"metric-{metric}.jsonl"), "at") as f:
            f.write(text + "\n")
    return line
