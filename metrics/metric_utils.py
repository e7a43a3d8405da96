"""Feature extraction for the metrics: real data (cached on disk), generated images, multi-GPU gathering.

All ranks run the same code. Each rank embeds its share of the images, and after every batch the features
of all ranks are gathered (`torch.distributed.all_gather`), so every rank ends with the same statistics.
Statistics of real data are cached on disk per (dataset path + a fingerprint of its files' sizes and
mtimes, dataset options, detector, number of images, kind of statistics), so evaluating snapshot after
snapshot embeds only the generated images. embed_generated_shared / embed_datasets_shared serve several metrics
of one evaluation from one pass per detector (see metric_main.calc_metrics). Diagnostics (progress) go to the
logger of this module.
"""

import copy
import hashlib
import json
import logging
import os
import time
import zipfile

import numpy as np
import torch

from torch_utils import util
from torch_utils.image_dataset import ImageFolderDataset
from torch_utils.image_io import IMAGE_EXTENSIONS, is_image_file, to_uint8

from . import detectors
from .inception import default_cache_dir

CACHE_VERSION = 1
logger = logging.getLogger(__name__)


class MetricError(ValueError):
    """Bad input to a metric (empty folder, too few images, resolution mismatch, ...)."""


# ----------------------------------------------------------------------------


class MetricOptions:
    """Everything a metric needs to know about where images come from and how to run.

    G               generator (torch.nn.Module, images in [-1, 1]) or None for dataset-vs-dataset.
    dataset_kwargs  real data: dict(path=...) plus ImageFolderDataset options, or dict(class_name=..., ...).
    dataset2_kwargs a second dataset that plays the role of the generator (folder-vs-folder mode).
    detector_kwargs {detector_name: kwargs for get_detector}, e.g. {'inception': dict(path=...)}.
    """

    def __init__(self, G=None, G_kwargs=None, dataset_kwargs=None, dataset2_kwargs=None, num_gpus=1, rank=0,
                 device=None, cache_dir=None, batch_size=64, cache=True, progress=False, seed=0,
                 detector_kwargs=None, num_workers=None, fd_method="sqrtm"):
        if dataset_kwargs is None or not dataset_kwargs:
            raise MetricError("dataset_kwargs must name the real data, e.g. dict(path='data/ffhq.zip')")
        assert 0 <= rank < num_gpus
        self.G = G
        self.G_kwargs = dict(G_kwargs or {})
        self.dataset_kwargs = dict(dataset_kwargs)
        self.dataset2_kwargs = dict(dataset2_kwargs) if dataset2_kwargs else None
        self.num_gpus = num_gpus
        self.rank = rank
        self.device = torch.device(device) if device is not None else torch.device("cuda", rank)
        self.cache_dir = cache_dir or default_cache_dir()
        self.batch_size = batch_size
        self.cache = cache
        self.progress = progress and rank == 0
        self.seed = seed
        self.detector_kwargs = dict(detector_kwargs or {})  # Per-detector overrides: {name: kwargs}.
        if num_workers is None:
            num_workers = min(3, max((os.cpu_count() or 1) - 1, 0)) if self.device.type == "cuda" else 0
        self.num_workers = num_workers
        self.fd_method = fd_method  # 'sqrtm' (reference) or 'eigh' (fast); see frechet_distance.py.


# ----------------------------------------------------------------------------
# Datasets.


def _check_path(path, what="dataset"):
    if path is None:
        raise MetricError(f"{what}: no path given")
    if not os.path.exists(path):
        raise MetricError(f"{what} not found: {path}")
    if os.path.isdir(path):
        for _root, _dirs, files in os.walk(path):
            if any(is_image_file(f) for f in files):
                return
        raise MetricError(f"{what} {path} contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")


_open_datasets = {}  # (kwargs, fingerprint) -> dataset: opening reads every image header, so reuse it.


def open_dataset(dataset_kwargs, what="dataset"):
    """Construct the dataset (torch_utils.image_dataset.ImageFolderDataset unless `class_name` says otherwise).

    Instances are reused while the files are unchanged (same fingerprint), because ImageFolderDataset
    validates every image header when opened and metrics are evaluated again at every snapshot.
    """
    kwargs = dict(dataset_kwargs)
    class_name = kwargs.pop("class_name", None)
    kwargs["xflip"] = False  # Metrics compare against the data as it is, not its mirrored augmentation.
    path = kwargs.get("path")
    if class_name is None or class_name.endswith("ImageFolderDataset"):
        _check_path(path, what)
    key = (class_name, repr(sorted(kwargs.items())),
           dataset_fingerprint(path) if isinstance(path, str) and os.path.exists(path) else None)
    if key in _open_datasets:
        return _open_datasets[key]
    try:
        if class_name is None:
            dataset = ImageFolderDataset(**kwargs)
        else:
            dataset = util.construct_class_by_name(class_name=class_name, **kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        raise MetricError(f"cannot open {what} {path}: {e}") from e
    if len(dataset) == 0:
        raise MetricError(f"{what} {path} is empty")
    if len(_open_datasets) >= 4:
        _open_datasets.pop(next(iter(_open_datasets)))
    _open_datasets[key] = dataset
    return dataset


def dataset_image_shape(dataset):
    """[C, H, W] of the dataset's images."""
    shape = getattr(dataset, "image_shape", None)
    if shape is not None:
        return list(shape)
    return list(np.asarray(dataset[0][0]).shape)


def dataset_fingerprint(path):
    """A hash that changes when the data changes: (name, size, mtime) of every file (or of the zip)."""
    path = os.path.abspath(path)
    h = hashlib.md5(path.encode())
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for f in sorted(files):
                st = os.stat(os.path.join(root, f))
                h.update(f"{os.path.relpath(os.path.join(root, f), path)}:{st.st_size}:{st.st_mtime_ns};".encode())
    else:
        st = os.stat(path)
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def subset_indices(num_items, max_items, seed=0):
    """Indices of the images to use: all, or a fixed random subset (dataset order may be sorted by class)."""
    if max_items is None or max_items >= num_items:
        return np.arange(num_items)
    return np.sort(np.random.RandomState(seed).choice(num_items, size=max_items, replace=False))


# ----------------------------------------------------------------------------
# Feature statistics.


class FeatureStats:
    """Accumulates features [N, D]: all of them (capture_all) and/or running mean/cov in float64."""

    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features = None
        self.all_features = []
        self.raw_mean = None
        self.raw_cov = None

    def is_full(self):
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x):
        """x: float [N, D] (numpy or torch); items beyond max_items are dropped."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x, dtype=np.float32)
        assert x.ndim == 2
        if self.num_features is None:
            self.num_features = x.shape[1]
            if self.capture_mean_cov:
                self.raw_mean = np.zeros([self.num_features], dtype=np.float64)
                self.raw_cov = np.zeros([self.num_features, self.num_features], dtype=np.float64)
        assert x.shape[1] == self.num_features
        if self.max_items is not None:
            x = x[:max(self.max_items - self.num_items, 0)]
        if x.shape[0] == 0:
            return
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self.raw_mean += x64.sum(axis=0)
            self.raw_cov += x64.T @ x64

    def get_all(self):
        assert self.capture_all
        if not self.all_features:
            return np.zeros([0, self.num_features or 0], dtype=np.float32)
        return np.concatenate(self.all_features, axis=0)

    def get_mean_cov(self):
        """Mean [D] and covariance [D, D] (normalised by N, as StyleGAN's FID) in float64."""
        assert self.capture_mean_cov and self.num_items > 0
        mean = self.raw_mean / self.num_items
        cov = self.raw_cov / self.num_items - np.outer(mean, mean)
        return mean, cov

    def state(self):
        state = dict(num_items=np.int64(self.num_items), num_features=np.int64(self.num_features or 0))
        if self.capture_all:
            state["all_features"] = self.get_all()
        if self.capture_mean_cov:
            state["raw_mean"], state["raw_cov"] = self.raw_mean, self.raw_cov
        return state

    def prefix(self, n):
        """A capture_all-only FeatureStats holding the first `n` rows (a view, no copy once compacted)."""
        assert self.capture_all and n <= self.num_items
        if len(self.all_features) != 1:
            self.all_features = [self.get_all()]  # Compact once, so that every prefix is a slice of one array.
        out = FeatureStats(capture_all=True, max_items=n)
        out.num_items, out.num_features, out.all_features = n, self.num_features, [self.all_features[0][:n]]
        return out

    def save(self, path):
        """Atomic: the file appears complete or not at all."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        state = self.state()
        util.atomic_write(path, lambda f: np.savez(f, **state))

    @classmethod
    def load(cls, path, capture_all, capture_mean_cov, max_items, chunk=None):
        """Read a saved FeatureStats. A file of features alone can serve mean/cov too: they are summed from the
        features `chunk` rows at a time, the order in which `append` would have summed them batch by batch."""
        stats = cls(capture_all=capture_all, capture_mean_cov=capture_mean_cov, max_items=max_items)
        with np.load(path, allow_pickle=False) as data:  # no pickled objects: object arrays raise ValueError
            stats.num_items = int(data["num_items"])
            stats.num_features = int(data["num_features"])
            _check_cached_arrays(data, stats.num_items, stats.num_features)
            if capture_all:
                stats.all_features = [data["all_features"]]
            if capture_mean_cov and "raw_mean" in data:
                stats.raw_mean, stats.raw_cov = data["raw_mean"], data["raw_cov"]
            elif capture_mean_cov:
                features, summed = data["all_features"], cls(capture_mean_cov=True)
                step = chunk or max(len(features), 1)
                for start in range(0, max(len(features), 1), step):  # (an empty file still sets the shapes)
                    summed.append(features[start:start + step])
                stats.raw_mean, stats.raw_cov = summed.raw_mean, summed.raw_cov
        return stats


def _check_cached_arrays(data, num_items, num_features):
    """ValueError unless the arrays of a cache file have the shapes and (float) types its counts say."""
    expected = dict(all_features=(num_items, num_features), raw_mean=(num_features,),
                    raw_cov=(num_features, num_features))
    for key, shape in expected.items():
        if key in data.files:
            array = data[key]
            if array.dtype.kind != "f" or array.shape != shape:
                raise ValueError(f"'{key}' is {array.dtype} {list(array.shape)}, expected float {list(shape)}")
    if "all_features" not in data.files and "raw_mean" not in data.files:
        raise ValueError("it holds neither features nor mean/covariance")


# What a damaged or foreign statistics cache raises when read (a truncated zip, missing keys, wrong arrays).
_CACHE_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile)


def _gather(x, valid, opts):
    """All ranks' [B, D] features (+ validity mask [B]) -> valid rows, identical on every rank.

    Rows are interleaved (rank 0 row 0, rank 1 row 0, ...), which for the dataset's round-robin split
    (slot k of rank r holds item k * num_gpus + r) restores the single-process order exactly, so results
    do not depend on the number of GPUs.
    """
    if opts.num_gpus > 1:
        x, valid = x.contiguous(), valid.to(torch.uint8)  # uint8: not every backend gathers bool.
        xs = [torch.empty_like(x) for _ in range(opts.num_gpus)]
        vs = [torch.empty_like(valid) for _ in range(opts.num_gpus)]
        torch.distributed.all_gather(xs, x)
        torch.distributed.all_gather(vs, valid)
        x, valid = torch.stack(xs, dim=1).flatten(0, 1), torch.stack(vs, dim=1).flatten(0, 1)
    return x[valid.bool()]


class _Progress:
    def __init__(self, opts, what, total):
        self.enabled, self.what, self.total, self.t0, self.last = opts.progress, what, total, time.time(), 0
        self.shown = None

    def update(self, done, force=False):
        if self.enabled and (force or time.time() - self.last > 5) and done != self.shown:
            self.last, self.shown = time.time(), done
            rate = done / max(self.last - self.t0, 1e-9)
            logger.info("  %s: %d/%d images (%.1f img/s)", self.what, done, self.total, rate)


# ----------------------------------------------------------------------------
# Real data.


def _stats_cache_paths(opts, dataset_kwargs, detector_name, detector_kwargs, max_items, feature_kind, captures):
    """Cache file of the real-data statistics for each (capture_all, capture_mean_cov) in `captures`; the data
    is fingerprinted once (a folder dataset is a directory walk)."""
    fingerprint = dataset_fingerprint(dataset_kwargs["path"])
    name = os.path.splitext(os.path.basename(os.path.normpath(dataset_kwargs["path"])))[0]
    count = "full" if max_items is None else max_items
    paths = []
    for capture_all, capture_mean_cov in captures:
        desc = dict(version=CACHE_VERSION, fingerprint=fingerprint,
                    dataset_kwargs={k: repr(v) for k, v in sorted(dataset_kwargs.items()) if k != "xflip"},
                    detector=detector_name,
                    detector_kwargs={k: repr(v) for k, v in sorted(detector_kwargs.items()) if k != "cache_dir"},
                    feature_kind=feature_kind, max_items=max_items, capture_all=capture_all,
                    capture_mean_cov=capture_mean_cov, seed=opts.seed)
        key = hashlib.md5(json.dumps(desc, sort_keys=True).encode()).hexdigest()
        kind = "-".join(k for k, on in (("all", capture_all), ("meancov", capture_mean_cov)) if on)
        paths.append(os.path.join(opts.cache_dir, "gan-metrics",
                                  f"{name}-{detector_name}-{feature_kind}-{kind}-{count}-{key}.npz"))
    return paths


def _broadcast_flag(flag, opts):
    if opts.num_gpus > 1:
        t = torch.tensor([int(flag)], dtype=torch.int64, device=opts.device)
        torch.distributed.broadcast(t, src=0)
        flag = bool(t.item())
    return flag


def _detector(opts, detector_name, detector_kwargs):
    kwargs = dict(opts.detector_kwargs.get(detector_name, {}))
    kwargs.update(detector_kwargs)
    if detector_name == "inception":
        kwargs.setdefault("cache_dir", opts.cache_dir)  # Downloaded weights live beside the statistics.
    return detectors.get_detector(detector_name, device=opts.device, **kwargs)


def _collate_images(batch):
    """[(uint8 [C, H, W], label), ...] -> uint8 [B, C, H, W]; np.stack copies, so read-only arrays are fine."""
    return torch.from_numpy(np.stack([np.asarray(item[0]) for item in batch]))


def compute_feature_stats_for_dataset(opts, detector_name, detector_kwargs=None, max_items=None,
                                      capture_all=False, capture_mean_cov=False, which="dataset",
                                      use_cache=True, feature_fn=None, feature_kind="features"):
    """Embed the real images (all, or a fixed random subset of `max_items`) -> FeatureStats.

    A non-None `max_items` is a requirement: fewer images than that is an error (a "_full" metric passes
    None). The result is cached on disk; a cache hit neither builds nor calls the detector.
    feature_fn(detector, images) -> [B, D] replaces `detector(images)`; `feature_kind` names it in the cache key.
    """
    dataset_kwargs = opts.dataset_kwargs if which == "dataset" else opts.dataset2_kwargs
    what = "dataset" if which == "dataset" else "second dataset (--data2)"
    dataset = open_dataset(dataset_kwargs, what)
    if max_items is not None and len(dataset) < max_items:
        raise MetricError(f"{what} {dataset_kwargs.get('path')} has {len(dataset)} images, but the metric needs "
                          f"{max_items}; use a metric with a smaller count (e.g. fid2k_full) or a '_full' one")
    merged_kwargs = dict(opts.detector_kwargs.get(detector_name, {}))
    merged_kwargs.update(detector_kwargs or {})

    cache_file = None
    if opts.cache and use_cache and dataset_kwargs.get("path") is not None:
        # A shared evaluation caches features and mean/cov together; a metric that needs only one of them
        # loads that part of the same file instead of embedding the data again. Features alone (KID/PR cached
        # first) also serve mean/cov, summed in the batches a fresh pass would use.
        captures = [(capture_all, capture_mean_cov), (True, True)] + [(True, False)] * capture_mean_cov
        cache_file, *fallbacks = _stats_cache_paths(opts, dataset_kwargs, detector_name, merged_kwargs, max_items,
                                                    feature_kind, dict.fromkeys(captures))
        for path in [cache_file] + fallbacks:
            if _broadcast_flag(opts.rank == 0 and os.path.isfile(path), opts):
                try:
                    return FeatureStats.load(path, capture_all, capture_mean_cov, max_items,
                                             chunk=opts.batch_size * opts.num_gpus)
                except _CACHE_READ_ERRORS as err:  # never let a bad file block every later evaluation
                    logger.warning("Warning: the statistics cache %s is damaged or not one of this toolkit's (%s: "
                                   "%s); ignoring it: the statistics are computed again and %s is written anew",
                                   path, type(err).__name__, str(err).splitlines()[0] if str(err) else "",
                                   cache_file)

    detector = _detector(opts, detector_name, detector_kwargs or {})
    feature_fn = feature_fn or (lambda det, images: det(images))
    indices = subset_indices(len(dataset), max_items, seed=opts.seed)
    # Every rank gets the same number of batches (the gather needs equal shapes); slots past the end
    # repeat the last image and are masked out after the gather.
    per_rank = -(-len(indices) // opts.num_gpus)
    own = np.arange(per_rank) * opts.num_gpus + opts.rank
    valid = own < len(indices)
    own_indices = indices[np.minimum(own, len(indices) - 1)]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, own_indices.tolist()),
                                         batch_size=opts.batch_size, shuffle=False, num_workers=opts.num_workers,
                                         pin_memory=opts.device.type == "cuda", collate_fn=_collate_images)
    stats = FeatureStats(capture_all=capture_all, capture_mean_cov=capture_mean_cov, max_items=len(indices))
    progress = _Progress(opts, f"{detector_name} {feature_kind} of {dataset_kwargs.get('path')}", len(indices))
    offset = 0
    for images in loader:
        features = feature_fn(detector, images)
        batch_valid = torch.from_numpy(valid[offset:offset + len(images)]).to(features.device)
        offset += len(images)
        stats.append(_gather(features, batch_valid, opts))
        progress.update(stats.num_items)
    progress.update(stats.num_items, force=True)

    if cache_file is not None and opts.rank == 0:
        stats.save(cache_file)
    return stats


# ----------------------------------------------------------------------------
# Generated images.


def check_generator_vs_dataset(G, dataset, dataset_kwargs):
    shape = dataset_image_shape(dataset)
    res, ch = getattr(G, "img_resolution", None), getattr(G, "img_channels", None)
    if res is not None and (shape[1] != res or shape[2] != res):
        raise MetricError(f"resolution mismatch: the network generates {res}x{res} images but the dataset "
                          f"{dataset_kwargs.get('path')} has {shape[2]}x{shape[1]}")
    if ch is not None and shape[0] != ch:
        raise MetricError(f"channel mismatch: the network generates {ch}-channel images but the dataset "
                          f"{dataset_kwargs.get('path')} has {shape[0]} channels")


def _label_sampler(opts, G):
    """-> fn(batch_size, rng) giving labels [B, c_dim] drawn from the dataset's label distribution."""
    c_dim = getattr(G, "c_dim", 0)
    if not c_dim:
        return lambda n, rng: torch.zeros([n, 0])
    kwargs = dict(opts.dataset_kwargs, use_labels=True)
    dataset = open_dataset(kwargs)
    get_label = getattr(dataset, "get_label", None) or (lambda i: dataset[i][1])
    labels = np.stack([np.asarray(get_label(i), dtype=np.float32) for i in range(len(dataset))])
    if labels.ndim != 2 or labels.shape[1] != c_dim:
        raise MetricError(f"the network is conditional (c_dim={c_dim}) but the dataset's labels have shape "
                          f"{list(labels.shape[1:])}; is dataset.json present?")
    labels = torch.from_numpy(labels)
    return lambda n, rng: labels[torch.randint(len(labels), [n], generator=rng)]


def iterate_generated_images(opts, batch_size=None):
    """Endless iterator of uint8 [B, C, H, W] generated images on this rank (rank-specific seeds)."""
    batch_size = batch_size or opts.batch_size
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    sample_c = _label_sampler(opts, G)
    rng = torch.Generator().manual_seed(opts.seed * 1000003 + opts.rank)  # CPU RNG: same z on any device.
    while True:
        z = torch.randn([batch_size, G.z_dim], generator=rng).to(opts.device)
        c = sample_c(batch_size, rng).to(opts.device)
        with torch.no_grad():
            img = G(z, c, **opts.G_kwargs)
        yield to_uint8(img)


def compute_feature_stats_for_generator(opts, detector_name, detector_kwargs=None, num_gen=50000,
                                        capture_all=False, capture_mean_cov=False, feature_fn=None,
                                        feature_kind="features"):
    """Embed `num_gen` generated images (or images of the second dataset) -> FeatureStats.

    feature_fn(detector, images) -> [B, D] overrides the embedding (the IS uses the classifier logits);
    `feature_kind` names it for the cache key when the second dataset stands in for the generator.
    """
    if opts.G is None:
        if opts.dataset2_kwargs is None:
            raise MetricError("nothing to evaluate: give a network (G) or a second dataset")
        return compute_feature_stats_for_dataset(opts, detector_name, detector_kwargs, max_items=num_gen,
                                                 capture_all=capture_all, capture_mean_cov=capture_mean_cov,
                                                 which="dataset2", feature_fn=feature_fn, feature_kind=feature_kind)
    detector = _detector(opts, detector_name, detector_kwargs or {})
    feature_fn = feature_fn or (lambda det, images: det(images))
    stats = FeatureStats(capture_all=capture_all, capture_mean_cov=capture_mean_cov, max_items=num_gen)
    progress = _Progress(opts, f"{detector_name} features of generated images", num_gen)
    images_iter = iterate_generated_images(opts)
    while not stats.is_full():
        features = feature_fn(detector, next(images_iter))
        stats.append(_gather(features, torch.ones(len(features), dtype=torch.bool, device=features.device), opts))
        progress.update(stats.num_items)
    progress.update(stats.num_items, force=True)
    return stats


# ----------------------------------------------------------------------------
# Shared embedding: several metrics of one evaluation, each image generated and embedded once per detector.


class FeatureRequest:
    """What one metric needs from one side (real or generated): `num` images embedded by one detector.

    num             images wanted (None on the real side: all of the dataset)
    capture         'all' (every feature row, for KID / PR / IS) or 'mean_cov' (running statistics, for FD)
    detector_name, detector_kwargs, feature_fn, feature_kind: as in compute_feature_stats_for_dataset
    """

    def __init__(self, detector_name, num, capture, detector_kwargs=None, feature_fn=None, feature_kind="features"):
        assert capture in ("all", "mean_cov")
        self.detector_name = detector_name
        self.num = num
        self.capture = capture
        self.detector_kwargs = dict(detector_kwargs or {})
        self.feature_fn = feature_fn
        self.feature_kind = feature_kind

    def embedding_key(self):
        """Requests with the same key are served by one pass of one detector over the same images."""
        return (self.detector_name, repr(sorted(self.detector_kwargs.items())), self.feature_kind)


def _group_by_embedding(requests):
    groups = {}
    for i, req in enumerate(requests):
        groups.setdefault(req.embedding_key(), []).append(i)
    return groups


def embed_datasets_shared(opts, requests, which="dataset"):
    """[FeatureRequest] -> [FeatureStats], one per request, embedding each (detector, count) subset once.

    A dataset subset of N images is a seeded random choice that depends on N (subset_indices), so only requests
    with the same count share a pass; their capture kinds are merged into one FeatureStats (same accumulation,
    so each metric's statistics equal those of its own pass). This serves the real data and, in folder-vs-folder
    mode (which='dataset2'), the second dataset.
    """
    out = [None] * len(requests)
    for indices in _group_by_embedding(requests).values():
        by_count = {}
        for i in indices:
            by_count.setdefault(requests[i].num, []).append(i)
        for num, same in by_count.items():
            req = requests[same[0]]
            captures = {requests[i].capture for i in same}
            stats = compute_feature_stats_for_dataset(opts, req.detector_name, req.detector_kwargs, max_items=num,
                                                      capture_all="all" in captures,
                                                      capture_mean_cov="mean_cov" in captures, which=which,
                                                      feature_fn=req.feature_fn, feature_kind=req.feature_kind)
            for i in same:
                out[i] = stats
    return out


def embed_generated_shared(opts, requests):
    """[FeatureRequest] -> [FeatureStats], one per request, generating max(num) images once.

    All requests see the same image stream: batches of opts.batch_size from iterate_generated_images, which
    depends only on the seed and the batch size. A request for N images gets the first N of them, i.e. exactly
    the images (in the same batches, so with bitwise the same features and running sums) that an evaluation of
    that metric alone would generate. Each detector embeds a batch only while one of its requests still needs
    it; 'all' requests of one detector share one feature array (prefix views), 'mean_cov' requests get one
    running mean/covariance per count. With a second dataset instead of a generator, see embed_datasets_shared.
    """
    if opts.G is None:
        if opts.dataset2_kwargs is None:
            raise MetricError("nothing to evaluate: give a network (G) or a second dataset")
        return embed_datasets_shared(opts, requests, which="dataset2")
    groups = []
    for indices in _group_by_embedding(requests).values():
        req = requests[indices[0]]
        nums_all = [requests[i].num for i in indices if requests[i].capture == "all"]
        all_stats = FeatureStats(capture_all=True, max_items=max(nums_all)) if nums_all else None
        mean_cov = {requests[i].num: None for i in indices if requests[i].capture == "mean_cov"}
        for num in mean_cov:
            mean_cov[num] = FeatureStats(capture_mean_cov=True, max_items=num)
        stats = ([all_stats] if all_stats is not None else []) + list(mean_cov.values())
        groups.append(dict(indices=indices, req=req, all=all_stats, mean_cov=mean_cov, stats=stats,
                           detector=_detector(opts, req.detector_name, req.detector_kwargs),
                           feature_fn=req.feature_fn or (lambda det, images: det(images))))
    total = max(requests[i].num for g in groups for i in g["indices"])
    progress = _Progress(opts, "generated images", total)
    images_iter = iterate_generated_images(opts)
    done = 0
    while any(not s.is_full() for g in groups for s in g["stats"]):
        images = next(images_iter)
        for g in groups:
            if all(s.is_full() for s in g["stats"]):
                continue
            features = g["feature_fn"](g["detector"], images)
            valid = torch.ones(len(features), dtype=torch.bool, device=features.device)
            features = _gather(features, valid, opts).detach().cpu().numpy()
            for s in g["stats"]:
                s.append(features)
        done += len(images) * opts.num_gpus
        progress.update(min(done, total))
    progress.update(min(done, total), force=True)

    out = [None] * len(requests)
    for g in groups:
        for i in g["indices"]:
            req = requests[i]
            out[i] = g["all"].prefix(req.num) if req.capture == "all" else g["mean_cov"][req.num]
    return out
