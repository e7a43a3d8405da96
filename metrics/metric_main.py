"""Metric registry and the API used by the training loop and calc_metrics.py.

    results = calc_metrics(['fid50k_full', 'kid50k_full'], G=G_ema, dataset_kwargs=dict(path='data/x.zip'),
                           device=device)          # one evaluation: each image generated and embedded once
    for result in results:
        report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot_path, kimg=kimg)  # metric-<name>.jsonl
    summary.update_run_summaries(run_dir)       # -> best-fid50k_full.json, metrics.png (metrics/summary.py)
    calc_metric('fid50k_full', ...)             # one metric alone (calc_metrics of a one-element list)

Names (N is a count such as 50k, 10k, 2k or a plain number such as 500):
    fidN[_full]             Fréchet Inception Distance            results: {name: fid}
    fd_dinov2_N[_full]      Fréchet distance in DINOv2 ViT-L/14 space (Stein et al. 2023)
    fd_clip_N[_full]        Fréchet distance in CLIP ViT-B/32 space
    kidN[_full]             Kernel Inception Distance             results: {name: kid}
    prNkK[_full], prN[_full] precision/recall, K-NN manifolds (K defaults to 3): {name_precision, name_recall}
    isN                     Inception Score, 10 splits            results: {name_mean, name_std}
"_full": statistics of *all* real images; without it, a fixed random subset of N real images (an error if
the dataset is smaller). N is always the number of generated images.

Smallest counts (validate_metric refuses less, on both the generated and the real side): FID/FD 2 (a covariance
needs two samples), KID 2 (its unbiased estimate averages over pairs within subsets of min(N, 1000) images),
precision/recall K + 1 (every point needs K other points for its K-th nearest neighbour), IS 10 (one image per
split at least).

Sharing: in calc_metrics, all metrics that use one detector (FID, KID and PR all use the Inception pool3
features) embed one stream of generated images: max(N) images are generated once, each detector embeds them
once, and a metric with a smaller N uses the first N of them, which are exactly the images an evaluation of that
metric alone generates (same seed, same batches), so each result equals the one calc_metric gives alone. Real
statistics are computed once per (detector, count). The IS uses its own detector instance (it needs the weights
with the classifier, which may be another file than the FID weights), so it embeds the shared images again.
"""

import errno
import json
import logging
import os
import re
import time

import torch

from torch_utils import util

from . import frechet_distance, inception_score, kernel_inception_distance, metric_utils, precision_recall
from .metric_utils import FeatureRequest, MetricError

logger = logging.getLogger(__name__)

# Detector behind each Fréchet-distance family.
FD_DETECTORS = {"fid": "inception", "fd_dinov2_": "dinov2_vitl14", "fd_clip_": "clip_vitb32"}
FD_LABELS = {"fid": "FID", "fd_dinov2_": "FD_DINOv2", "fd_clip_": "CLIP-FD"}
IS_SPLITS = 10


class MetricWriteError(OSError):
    """A metric result could not be written (a full disk raises torch_utils.util.DiskFullError instead); the file
    is as it was before."""

    def __str__(self):
        return str(self.strerror)  # One line naming the file, without the '[Errno N]' prefix.


def _count(text):
    return int(text[:-1]) * 1000 if text.endswith("k") else int(text)


def parse_metric(name):
    """'pr50k3_full' -> dict(kind='pr', num_gen=50000, full=True, nhood_size=3). Raises MetricError if unknown."""
    if not isinstance(name, str) or len(name) > 64 or re.search(r"\d{10}", name):
        # Counts beyond 9 digits mean nothing (and Python refuses int() of 4300+ digits with a traceback).
        shown = name if isinstance(name, str) and len(name) <= 40 else f"{str(name)[:24]}... ({len(str(name))} chars)"
        raise MetricError(f"unknown metric {shown!r}: names are at most 64 characters and counts at most 9 digits "
                          f"(e.g. fid50k_full)")
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


def min_count(spec):
    """(smallest number of images the metric's statistic is defined for, why) for a parse_metric spec."""
    if spec["kind"] == "fd":
        return 2, ("a covariance needs at least 2 samples; with fewer images than the feature dimension (2048 for "
                   "Inception) it is singular and the value compares only with values of the same count")
    if spec["kind"] == "kid":
        return 2, "its unbiased MMD estimate averages over pairs of images within subsets of min(count, 1000)"
    if spec["kind"] == "pr":
        k = spec["nhood_size"]
        return k + 1, f"each image's manifold radius is the distance to its k={k}-th nearest other image"
    return IS_SPLITS, f"the score is averaged over {IS_SPLITS} splits of at least one image each"


def _label(spec):
    return {"fd": None, "kid": "KID", "pr": "precision/recall", "is": "IS"}[spec["kind"]] or FD_LABELS[spec["family"]]


def validate_metric(name):
    """parse_metric(name), and refuse counts too small for the statistic -> spec. Raises MetricError (one line)."""
    spec = parse_metric(name)
    if spec["num_gen"] <= 0:
        raise MetricError(f"metric {name!r}: the number of images must be positive")
    if spec["kind"] == "pr" and spec["nhood_size"] < 1:
        raise MetricError(f"metric {name!r}: the neighbourhood size k must be at least 1 (e.g. pr50k3_full)")
    minimum, why = min_count(spec)
    if spec["num_gen"] < minimum:
        raise MetricError(f"metric {name!r}: {_label(spec)} needs at least {minimum} images, got {spec['num_gen']} "
                          f"({why})")
    return spec


def is_valid_metric(name):
    """True for a known metric name with a usable count (validate_metric says why not)."""
    try:
        validate_metric(name)
    except MetricError:
        return False
    return True


def list_valid_metrics():
    return ["fid50k_full", "fid10k_full", "fid2k_full", "fid50k", "kid50k_full", "kid2k_full", "pr50k3_full",
            "is50k", "fd_dinov2_50k_full", "fd_dinov2_10k_full", "fd_clip_50k_full", "fd_clip_10k_full"]


# ----------------------------------------------------------------------------
# What each metric needs, and its value from the features.


def _requests(spec):
    """-> (real FeatureRequest or None, generated FeatureRequest) of one metric."""
    n, max_real = spec["num_gen"], (None if spec["full"] else spec["num_gen"])
    if spec["kind"] == "fd":
        det = FD_DETECTORS[spec["family"]]
        return FeatureRequest(det, max_real, "mean_cov"), FeatureRequest(det, n, "mean_cov")
    if spec["kind"] in ("kid", "pr"):
        return FeatureRequest("inception", max_real, "all"), FeatureRequest("inception", n, "all")
    if spec["kind"] == "is":
        return None, FeatureRequest("inception", n, "all", detector_kwargs=dict(require_classifier=True),
                                    feature_fn=inception_score.classifier_logits, feature_kind="logits")
    raise AssertionError(spec)


def _results(name, spec, real, gen, opts):
    """Metric value(s) from the real / generated FeatureStats -> {result name: value}."""
    if opts.rank != 0:
        nan = float("nan")
        return dict.fromkeys(_result_names(name, spec), nan)
    if spec["kind"] == "fd":
        return {name: frechet_distance.fd_from_stats(real, gen, method=opts.fd_method)}
    if spec["kind"] == "kid":
        return {name: kernel_inception_distance.kernel_distance(real.get_all(), gen.get_all(), seed=opts.seed)}
    if spec["kind"] == "pr":
        p, r = precision_recall.precision_recall(real.get_all(), gen.get_all(), k=spec["nhood_size"],
                                                 device=opts.device)
        return {f"{name}_precision": p, f"{name}_recall": r}
    mean, std = inception_score.inception_score(gen.get_all(), IS_SPLITS)
    return {f"{name}_mean": mean, f"{name}_std": std}


def _result_names(name, spec):
    return {"fd": [name], "kid": [name], "pr": [f"{name}_precision", f"{name}_recall"],
            "is": [f"{name}_mean", f"{name}_std"]}[spec["kind"]]


def check_real_count(name, num_real, path):
    """Raise MetricError when a dataset of `num_real` images cannot serve metric `name`; return a warning (str) when
    it can but is far smaller than the metric's image count (a '_full' metric then compares thousands of generated
    images with a handful of real ones), else None. Shared by calc_metrics and train.py (checked before training)."""
    spec = validate_metric(name)
    n = spec["num_gen"]
    if spec["kind"] == "is":
        return None
    if not spec["full"] and num_real < n:
        raise MetricError(f"metric {name!r}: dataset {path} has {num_real} images, but the metric needs {n}; use a "
                          f"metric with a smaller count (e.g. fid2k_full) or a '_full' one")
    minimum, why = min_count(spec)
    if num_real < minimum:
        raise MetricError(f"metric {name!r}: dataset {path} has {num_real} images, but {_label(spec)} needs at least "
                          f"{minimum} ({why})")
    if spec["full"] and num_real * 10 < n:
        return (f"metric {name!r} generates {n:,} images but dataset {path} has only {num_real:,} real ones: the "
                f"value is dominated by the small real set and costs {n:,} generated images; a smaller count "
                f"(e.g. {spec['family'] if spec['kind'] == 'fd' else spec['kind']}{max(num_real, 1)}_full) measures "
                f"the same for less")
    return None


def _validate_inputs(name, spec, opts):
    """Fail before any image is embedded: missing/empty data, too few images, mismatching network."""
    n = spec["num_gen"]
    dataset = metric_utils.open_dataset(opts.dataset_kwargs)
    warning = check_real_count(name, len(dataset), opts.dataset_kwargs.get("path"))
    if warning and opts.rank == 0:
        logger.warning("Warning: %s", warning)
    if opts.G is not None:
        metric_utils.check_generator_vs_dataset(opts.G, dataset, opts.dataset_kwargs)
    else:
        dataset2 = metric_utils.open_dataset(opts.dataset2_kwargs, "second dataset (--data2)")
        if len(dataset2) < n:
            raise MetricError(f"second dataset (--data2) {opts.dataset2_kwargs.get('path')} has {len(dataset2)} "
                              f"images, but the metric needs {n}")


def calc_metrics(metrics, G=None, dataset_kwargs=None, num_gpus=1, rank=0, device=torch.device("cpu"),
                 cache_dir=None, batch_size=64, G_kwargs={}, dataset2_kwargs=None, cache=True, progress=False,
                 detector_kwargs=None, seed=0, fd_method="sqrtm"):
    """Compute several metrics in one evaluation. Every rank of a multi-GPU job must call it; results are valid
    on rank 0.

    Generated images and real statistics are shared between the metrics (see the module docstring): each result
    equals what calc_metric gives for that metric alone with the same arguments.

    metrics         metric names, e.g. ['fid50k_full', 'kid50k_full', 'pr50k3_full'] (duplicates are dropped)
    G               generator module (z_dim, c_dim, img_resolution, img_channels; images in [-1, 1]) or None
    dataset_kwargs  dict(path=...) [+ ImageFolderDataset options, or class_name=...]: the real data
    dataset2_kwargs instead of G: a second dataset whose images play the generated ones (folder vs folder)
    G_kwargs        extra arguments for G(z, c, **G_kwargs), e.g. dict(noise_mode='const', truncation_psi=1)
    cache_dir       where real-data statistics and downloaded weights live (default $PGAN_CACHE or
                    ~/.cache/projected_gan)
    detector_kwargs {detector_name: kwargs} passed to get_detector (e.g. {'inception': {'path': ...}})
    fd_method       'sqrtm' (scipy, the reference computation) or 'eigh' (several times faster on CPU)
    -> [dict(results={...}, metric=name, total_time=seconds, total_time_str=..., num_gpus=num_gpus)], in the
       order of `metrics`; total_time is the time of the whole shared evaluation.
    """
    names = list(dict.fromkeys(metrics))
    if not names:
        raise MetricError("no metric given")
    specs = [validate_metric(name) for name in names]
    if G is None and not dataset2_kwargs:
        raise MetricError(f"metric {names[0]!r}: give a generator (G) or a second dataset (dataset2_kwargs)")
    opts = metric_utils.MetricOptions(G=G, G_kwargs=G_kwargs, dataset_kwargs=dataset_kwargs,
                                      dataset2_kwargs=dataset2_kwargs, num_gpus=num_gpus, rank=rank, device=device,
                                      cache_dir=cache_dir, batch_size=batch_size, cache=cache, progress=progress,
                                      detector_kwargs=detector_kwargs, seed=seed, fd_method=fd_method)
    for name, spec in zip(names, specs):
        _validate_inputs(name, spec, opts)
    start = time.time()
    requests = [_requests(spec) for spec in specs]
    real_reqs = [(i, r) for i, (r, _) in enumerate(requests) if r is not None]
    real = dict(zip([i for i, _ in real_reqs], metric_utils.embed_datasets_shared(opts, [r for _, r in real_reqs])))
    gen = metric_utils.embed_generated_shared(opts, [g for _, g in requests])
    for i, (name, spec) in enumerate(zip(names, specs)):
        if spec["kind"] == "fd" and opts.rank == 0 and gen[i].num_features and spec["num_gen"] < gen[i].num_features:
            logger.info("%s: %d generated images in %d feature dimensions: the covariance is singular; compare "
                        "only with values of the same count", name, spec["num_gen"], gen[i].num_features)
    results = [_results(name, spec, real.get(i), gen[i], opts) for i, (name, spec) in enumerate(zip(names, specs))]
    total_time = time.time() - start
    if num_gpus > 1:
        torch.distributed.barrier()
    return [dict(results=r, metric=name, total_time=total_time, total_time_str=util.format_time(total_time),
                 num_gpus=num_gpus) for name, r in zip(names, results)]


def calc_metric(metric, *args, **kwargs):
    """Compute one metric: calc_metrics([metric], ...)[0] (same arguments, one result dict)."""
    return calc_metrics([metric], *args, **kwargs)[0]


# ----------------------------------------------------------------------------
# Results on disk.


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def _append_line(path, data):
    """Append bytes `data` to `path` with O_APPEND; on failure restore the file as it was and raise (_write_error).

    One write() of a complete line, so concurrent appenders never interleave half lines. A failed write (disk
    full) may leave part of the line behind: the file is truncated back to its old size, or removed when this
    call created it, so earlier lines stay intact and no empty file remains.
    """
    existed = os.path.exists(path)
    if os.path.islink(path):  # a planted link would make us append to whatever file it points to
        raise MetricWriteError(errno.ELOOP, f"cannot write {path}: it is a symbolic link (results are only appended "
                                            f"to a regular file in the run directory)")
    try:
        # O_NOFOLLOW: a link created between the check and the open is refused too.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise MetricWriteError(errno.ELOOP, f"cannot write {path}: it is a symbolic link") from err
        raise _write_error(path, err) from err
    try:
        old_size = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
        except OSError as err:
            try:
                if existed:
                    os.ftruncate(fd, old_size)
                else:
                    os.unlink(path)
            except OSError:
                pass
            raise _write_error(path, err) from err
    finally:
        os.close(fd)


def _write_error(path, err):
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return util.DiskFullError(path, err.errno)  # 'no space left on device at PATH'
    return MetricWriteError(err.errno, f"cannot write {path}: {err.strerror or err}")


def report_metric(result_dict, run_dir=None, snapshot_pkl=None, kimg=None):
    """Append the result as one JSON line to run_dir/metric-{name}.jsonl (if run_dir) and return the line.

    `kimg`: thousands of training images the evaluated snapshot had seen (None when unknown). Raises
    util.DiskFullError ('no space left on device at PATH') or MetricWriteError (one line naming the file) when
    the line cannot be written; the file then holds exactly its earlier lines.
    """
    metric = result_dict["metric"]
    if snapshot_pkl is not None and run_dir is not None and os.path.dirname(os.path.abspath(snapshot_pkl)) == \
            os.path.abspath(run_dir):
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    line = dict(result_dict, snapshot_pkl=snapshot_pkl, kimg=None if kimg is None else float(kimg),
                timestamp=time.time())
    text = json.dumps(line)
    if run_dir is not None:
        try:
            os.makedirs(run_dir, exist_ok=True)
        except OSError as err:
            raise _write_error(run_dir, err) from err
        _append_line(os.path.join(run_dir, f"metric-{metric}.jsonl"), (text + "\n").encode("utf-8"))
    return line
