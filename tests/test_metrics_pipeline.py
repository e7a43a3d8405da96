"""metrics/metric_utils.py and metric_main.py: FeatureStats, and calc_metric / report_metric / calc_metrics.py end
to end on folders of PNGs.

A cheap stand-in detector (block means of the image, 12 features) replaces the real networks here so that
the plumbing -- datasets, caching, generator sampling, multi-process gathering, CLI -- is tested quickly;
the real detectors are checked in test_metrics_inception.py.
"""

import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from metrics import detectors, metric_main, metric_utils
from metrics.detectors import FeatureDetector
from metrics.metric_utils import FeatureStats, MetricError

RES = 16
NUM_IMAGES = 30

# ----------------------------------------------------------------------------
# Fixtures: images, a toy detector, a toy generator.


def write_folder(path, num, seed, brightness, res=RES, channels=3):
    os.makedirs(path, exist_ok=True)
    rng = np.random.RandomState(seed)
    for i in range(num):
        base = rng.uniform(0, 1, [4, 4, channels]) * 120 + brightness
        img = np.kron(base, np.ones([res // 4, res // 4, 1])) + rng.normal(0, 8, [res, res, channels])
        img = np.clip(img, 0, 255).astype(np.uint8)
        PIL.Image.fromarray(img[:, :, 0] if channels == 1 else img).save(os.path.join(path, f"{i:04d}.png"))
    return str(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("metric-data")
    os.makedirs(root / "empty" / "sub")
    (root / "empty" / "readme.txt").write_text("no images here")
    return dict(
        A=write_folder(root / "A", NUM_IMAGES, seed=0, brightness=20),
        A2=write_folder(root / "A2", NUM_IMAGES, seed=1, brightness=20),  # Same distribution as A.
        B=write_folder(root / "B", NUM_IMAGES, seed=2, brightness=110),   # Brighter.
        gray=write_folder(root / "gray", 8, seed=3, brightness=20, channels=1),
        empty=str(root / "empty"),
    )


class BlockMeans(FeatureDetector):
    """Stand-in detector: 2x2 block means per channel, in [0, 1] -> [N, 12]. Counts its calls and images."""

    feature_dim = 12
    calls = 0
    images = 0
    builds = []

    def __init__(self, name):
        super().__init__()
        self.name = name
        self.register_buffer("scale", torch.tensor(1 / 255))
        BlockMeans.builds.append(name)

    def forward(self, images):
        BlockMeans.calls += 1
        BlockMeans.images += len(images)
        return F.adaptive_avg_pool2d(self.prepare(images), 2).flatten(1) * self.scale

    def logits(self, images):  # A "classifier" for the IS plumbing: 12 classes.
        return self.forward(images) * 20


@pytest.fixture
def toy(monkeypatch):
    """Route every registered detector name to BlockMeans; reset counters and the detector cache."""
    for name in ("inception", "dinov2_vitl14", "clip_vitb32"):
        monkeypatch.setitem(detectors._FACTORIES, name, lambda _n=name, **kw: BlockMeans(_n))
    BlockMeans.calls, BlockMeans.images, BlockMeans.builds = 0, 0, []
    detectors.clear_cache()
    yield BlockMeans
    detectors.clear_cache()


class Recorder(list):
    """A list that survives copy.deepcopy (calc_metric evaluates a deep copy of G)."""

    def __deepcopy__(self, memo):
        return self


class ToyGenerator(torch.nn.Module):
    """Host-interface generator: G(z, c) -> [N, C, R, R] in [-1, 1], a fixed random map of (z, c)."""

    def __init__(self, z_dim=4, c_dim=0, img_resolution=RES, img_channels=3, brightness=0.0):
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution, self.img_channels = z_dim, c_dim, img_resolution, img_channels
        torch.manual_seed(123)
        self.proj = torch.nn.Linear(z_dim + c_dim, img_channels * 16)
        self.brightness = brightness
        self.seen_c = Recorder()

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, noise_mode="random", update_emas=False):
        self.seen_c.append(c.clone())
        x = torch.tanh(self.proj(torch.cat([z, c], dim=1)) + self.brightness).view(-1, self.img_channels, 4, 4)
        return F.interpolate(x, size=(self.img_resolution, self.img_resolution), mode="nearest")


def calc(metric, folders_or_paths, cache_dir, **kwargs):
    a, b = folders_or_paths
    return metric_main.calc_metric(metric, dataset_kwargs=dict(path=a), dataset2_kwargs=dict(path=b) if b else None,
                                   cache_dir=str(cache_dir), batch_size=8, **kwargs)


# ----------------------------------------------------------------------------
# FeatureStats (metric_utils): streaming feature statistics and their on-disk cache files.


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


# ----------------------------------------------------------------------------
# Metric values through the whole pipeline.


def test_fd_folder_vs_itself_is_zero_and_different_sets_large_and_symmetric(toy, folders, tmp_path):
    n = f"fid{NUM_IMAGES}_full"
    same = calc(n, (folders["A"], folders["A"]), tmp_path)
    assert set(same) == {"results", "metric", "total_time", "total_time_str", "num_gpus"}
    assert same["metric"] == n and same["num_gpus"] == 1
    assert abs(same["results"][n]) < 1e-7
    ab = calc(n, (folders["A"], folders["B"]), tmp_path)["results"][n]
    ba = calc(n, (folders["B"], folders["A"]), tmp_path)["results"][n]
    aa2 = calc(n, (folders["A"], folders["A2"]), tmp_path)["results"][n]
    assert ab > 0.5  # Mean brightness differs by ~90/255 in each of 12 features: |dmu|^2 ~ 1.5.
    assert ab == pytest.approx(ba, rel=1e-6)
    assert 0 < aa2 < ab / 10  # Same distribution, different samples: small but positive.
    # The FD families use their own detectors.
    toy.builds.clear()
    detectors.clear_cache()
    calc(f"fd_dinov2_{NUM_IMAGES}_full", (folders["A"], folders["B"]), tmp_path)
    calc(f"fd_clip_{NUM_IMAGES}_full", (folders["A"], folders["B"]), tmp_path)
    assert toy.builds == ["dinov2_vitl14", "clip_vitb32"]


def test_kid_pr_is_end_to_end(toy, folders, tmp_path):
    n = NUM_IMAGES
    kid_same = calc(f"kid{n}_full", (folders["A"], folders["A2"]), tmp_path)["results"][f"kid{n}_full"]
    kid_diff = calc(f"kid{n}_full", (folders["A"], folders["B"]), tmp_path)["results"][f"kid{n}_full"]
    assert abs(kid_same) < 0.05 * kid_diff and kid_diff > 0
    pr = calc(f"pr{n}_full", (folders["A"], folders["A"]), tmp_path)["results"]
    assert pr == {f"pr{n}_full_precision": 1.0, f"pr{n}_full_recall": 1.0}
    pr = calc(f"pr{n}_full", (folders["A"], folders["B"]), tmp_path)["results"]
    assert pr[f"pr{n}_full_precision"] == 0.0 and pr[f"pr{n}_full_recall"] == 0.0
    is_ = calc("is20", (folders["A"], folders["B"]), tmp_path)["results"]
    assert set(is_) == {"is20_mean", "is20_std"} and is_["is20_mean"] >= 1.0


def test_cache_hit_skips_the_detector(toy, folders, tmp_path):
    n = f"fid{NUM_IMAGES}_full"
    first = calc(n, (folders["A"], folders["B"]), tmp_path)["results"][n]
    assert toy.calls > 0
    toy.calls, toy.builds = 0, []
    detectors.clear_cache()
    # Both folders' statistics come from the disk cache: the detector is neither built nor called.
    assert calc(n, (folders["A"], folders["B"]), tmp_path)["results"][n] == first
    assert toy.calls == 0 and toy.builds == []
    # With a generator only the generated images are embedded: 2 batches of 8 for 16 images.
    metric_main.calc_metric("fid16_full", G=ToyGenerator(), dataset_kwargs=dict(path=folders["A"]),
                            cache_dir=str(tmp_path), batch_size=8)
    toy.calls = 0
    metric_main.calc_metric("fid16_full", G=ToyGenerator(), dataset_kwargs=dict(path=folders["A"]),
                            cache_dir=str(tmp_path), batch_size=8)
    assert toy.calls == 2
    # cache=False recomputes the real side too (30 images -> 4 batches).
    toy.calls = 0
    metric_main.calc_metric("fid16_full", G=ToyGenerator(), dataset_kwargs=dict(path=folders["A"]),
                            cache_dir=str(tmp_path), batch_size=8, cache=False)
    assert toy.calls == 2 + 4
    files = os.listdir(os.path.join(tmp_path, "gan-metrics"))
    assert all(f.endswith(".npz") and not f.startswith(".") for f in files)


def test_cache_invalidated_when_the_data_changes(toy, folders, tmp_path):
    data = write_folder(tmp_path / "data", 12, seed=5, brightness=20)
    before = calc("fid12_full", (data, folders["B"]), tmp_path)["results"]["fid12_full"]
    write_folder(tmp_path / "data", 12, seed=6, brightness=200)  # Same file names, new content.
    toy.calls = 0
    after = calc("fid12_full", (data, folders["B"]), tmp_path)["results"]["fid12_full"]
    assert toy.calls == 2  # The changed folder was re-embedded (12 images, batch 8); B came from the cache.
    assert after != before


def test_generator_metrics(toy, folders, tmp_path):
    G = ToyGenerator()
    r1 = metric_main.calc_metric("fid20_full", G=G, dataset_kwargs=dict(path=folders["A"]), cache_dir=str(tmp_path),
                                 batch_size=8, G_kwargs=dict(noise_mode="const"))
    r2 = metric_main.calc_metric("fid20_full", G=G, dataset_kwargs=dict(path=folders["A"]), cache_dir=str(tmp_path),
                                 batch_size=8, G_kwargs=dict(noise_mode="const"))
    assert np.isfinite(r1["results"]["fid20_full"]) and r1["results"]["fid20_full"] > 0
    assert r1["results"] == r2["results"]  # Fixed seeds: reproducible.
    brighter = metric_main.calc_metric("fid20_full", G=ToyGenerator(brightness=2.0), batch_size=8,
                                       dataset_kwargs=dict(path=folders["A"]), cache_dir=str(tmp_path))
    assert brighter["results"]["fid20_full"] != r1["results"]["fid20_full"]
    # Grayscale data + 1-channel generator work (repeated to RGB by the detector).
    gray = metric_main.calc_metric("kid8_full", G=ToyGenerator(img_channels=1), batch_size=8,
                                   dataset_kwargs=dict(path=folders["gray"]), cache_dir=str(tmp_path))
    assert np.isfinite(gray["results"]["kid8_full"])


def test_conditional_generator_gets_dataset_labels(toy, tmp_path):
    data = write_folder(tmp_path / "labelled", 10, seed=7, brightness=50)
    names = sorted(os.listdir(data))
    with open(os.path.join(data, "dataset.json"), "w") as f:
        json.dump({"labels": [[n, 1] for n in names]}, f)  # Every image is class 1 of 2.
    G = ToyGenerator(c_dim=2)
    metric_main.calc_metric("fid10_full", G=G, dataset_kwargs=dict(path=data, use_labels=True),
                            cache_dir=str(tmp_path), batch_size=8)
    c = torch.cat(G.seen_c)
    assert c.shape[1] == 2 and torch.equal(c, torch.tensor([[0.0, 1.0]]).expand_as(c))


def test_bad_inputs_give_clear_errors(toy, folders, tmp_path):
    with pytest.raises(MetricError, match="contains no images"):
        calc("fid10_full", (folders["empty"], folders["A"]), tmp_path)
    with pytest.raises(MetricError, match="not found: .*missing"):
        calc("fid10_full", (str(tmp_path / "missing"), folders["A"]), tmp_path)
    with pytest.raises(MetricError, match=f"has {NUM_IMAGES} images, but the metric needs 100"):
        calc("fid100", (folders["A"], folders["B"]), tmp_path)  # Non-_full: needs 100 real images.
    with pytest.raises(MetricError, match=r"second dataset .* has 30 images, but the metric needs 50"):
        calc("fid50_full", (folders["A"], folders["B"]), tmp_path)
    with pytest.raises(MetricError, match="unknown metric 'fid_best'"):
        calc("fid_best", (folders["A"], folders["B"]), tmp_path)
    with pytest.raises(MetricError, match="resolution mismatch: the network generates 32x32 .* has 16x16"):
        metric_main.calc_metric("fid10_full", G=ToyGenerator(img_resolution=32), dataset_kwargs=dict(path=folders["A"]))
    with pytest.raises(MetricError, match="channel mismatch"):
        metric_main.calc_metric("fid10_full", G=ToyGenerator(img_channels=1), dataset_kwargs=dict(path=folders["A"]))
    with pytest.raises(MetricError, match="give a generator"):
        metric_main.calc_metric("fid10_full", dataset_kwargs=dict(path=folders["A"]))
    with pytest.raises(MetricError, match="must be positive"):
        calc("fid0_full", (folders["A"], folders["B"]), tmp_path)
    assert toy.calls == 0  # Every error is raised before any image is embedded.
    assert not os.path.exists(os.path.join(tmp_path, "gan-metrics"))


def test_report_metric_appends_json_lines(tmp_path):
    run_dir = tmp_path / "00001-run"
    result = dict(results=dict(fid50k_full=12.5), metric="fid50k_full", total_time=3.0, total_time_str="3s",
                  num_gpus=1)
    snap = str(run_dir / "network-snapshot-000100.pt")
    line = metric_main.report_metric(result, run_dir=str(run_dir), snapshot_pkl=snap)
    metric_main.report_metric(dict(result, results=dict(fid50k_full=10.0)), run_dir=str(run_dir))
    lines = (run_dir / "metric-fid50k_full.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["results"] == {"fid50k_full": 12.5} and first["snapshot_pkl"] == "network-snapshot-000100.pt"
    assert first == line and json.loads(lines[1])["results"] == {"fid50k_full": 10.0}
    assert first["kimg"] is None  # unknown unless given
    assert metric_main.report_metric(result)["metric"] == "fid50k_full"  # No run_dir: nothing written.
    assert metric_main.report_metric(result, run_dir=str(run_dir), snapshot_pkl=snap, kimg=1.504)["kimg"] == 1.504
    assert json.loads((run_dir / "metric-fid50k_full.jsonl").read_text().splitlines()[2])["kimg"] == 1.504


def test_metrics_do_not_import_training(folders):
    """The metrics package (every module, and reading a folder dataset) loads nothing of the training package."""
    import subprocess
    import sys

    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    code = ("import pkgutil, importlib, sys, metrics\n"
            "for m in pkgutil.iter_modules(metrics.__path__):\n"
            "    importlib.import_module('metrics.' + m.name)\n"
            "from metrics import metric_utils\n"
            f"print(len(metric_utils.open_dataset(dict(path={folders['A']!r}))))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'training'))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(NUM_IMAGES), "[]"]


# ----------------------------------------------------------------------------
# One evaluation of several metrics: shared generated images and real statistics.

SHARED = ["fid20_full", "kid12_full", "pr16_full", "fid12", "kid20", "is20", "fd_dinov2_16_full"]


def _reference_per_metric(name, opts):
    """The metric computed by its own module on its own embeddings (no sharing): the reference."""
    from metrics import frechet_distance, inception_score, kernel_inception_distance, precision_recall
    spec = metric_main.parse_metric(name)
    n, max_real = spec["num_gen"], (None if spec["full"] else spec["num_gen"])
    if spec["kind"] == "fd":
        return {name: frechet_distance.compute_fd(opts, metric_main.FD_DETECTORS[spec["family"]], max_real, n)}
    if spec["kind"] == "kid":
        return {name: kernel_inception_distance.compute_kid(opts, max_real, n)}
    if spec["kind"] == "pr":
        p, r = precision_recall.compute_pr(opts, max_real, n, nhood_size=spec["nhood_size"])
        return {f"{name}_precision": p, f"{name}_recall": r}
    mean, std = inception_score.compute_is(opts, n)
    return {f"{name}_mean": mean, f"{name}_std": std}


def test_shared_evaluation_equals_per_metric_evaluations(toy, folders, tmp_path):
    kw = dict(dataset_kwargs=dict(path=folders["A"]), cache_dir=str(tmp_path), batch_size=8, cache=False,
              G_kwargs=dict(noise_mode="const"))
    G = ToyGenerator()
    shared = metric_main.calc_metrics(SHARED + ["kid12_full"], G=G, **kw)  # A duplicate is evaluated once.
    assert [r["metric"] for r in shared] == SHARED
    shared_forwards, shared_images = len(G.seen_c), toy.images
    # Generated side: ceil(20 / 8) = 3 batches of G, embedded once by each of the three embeddings (inception
    # features for FID/KID/PR, inception logits for the IS, dinov2 for FD_DINOv2 with 16 images: 2 batches).
    # Real side: every (detector, count) once: inception all 30 (FID/KID/PR _full), 12 (fid12), 20 (kid20),
    # dinov2 all 30.
    assert shared_forwards == 3
    assert shared_images == (3 * 8 + 3 * 8 + 2 * 8) + (30 + 12 + 20 + 30)

    per_metric, G2 = [], ToyGenerator()
    toy.images = 0
    for name in SHARED:
        per_metric.append(metric_main.calc_metric(name, G=G2, **kw))
    # Separately, each metric generates its own images and embeds the real data again.
    batches = [-(-metric_main.parse_metric(m)["num_gen"] // 8) for m in SHARED]
    assert len(G2.seen_c) == sum(batches) == 17
    assert toy.images == sum(8 * b for b in batches) + (30 + 30 + 30 + 12 + 20 + 30)

    opts = metric_utils.MetricOptions(G=ToyGenerator(), device=torch.device("cpu"), **kw)
    for name, s, p in zip(SHARED, shared, per_metric):
        assert s["results"] == p["results"], name  # Exactly equal: the same images, batches and sums.
        assert s["results"] == _reference_per_metric(name, opts), name
        assert all(np.isfinite(v) for v in s["results"].values())
    # The prefix rule matters: a smaller count of the same metric differs from the larger one.
    assert shared[0]["results"]["fid20_full"] != metric_main.calc_metric("fid12_full", G=G2, **kw)["results"][
        "fid12_full"]


def test_per_metric_evaluation_reuses_the_real_statistics_a_shared_one_cached(toy, folders, tmp_path):
    names = ["fid16_full", "kid16_full", "pr16_full"]
    kw = dict(dataset_kwargs=dict(path=folders["A"]), cache_dir=str(tmp_path), batch_size=8,
              G_kwargs=dict(noise_mode="const"))
    shared = metric_main.calc_metrics(names, G=ToyGenerator(), **kw)
    # The shared pass cached the 30 real images' features and mean/cov in one file; FID alone needs only
    # mean/cov and KID/PR only the features, and each loads its part: only the 16 generated images are embedded.
    for name, s in zip(names, shared):
        toy.images = 0
        alone = metric_main.calc_metric(name, G=ToyGenerator(), **kw)
        assert toy.images == 16, name
        assert alone["results"] == s["results"], name


def test_shared_evaluation_reuses_the_real_features_per_metric_ones_cached(toy, folders, tmp_path):
    names = ["fid16_full", "kid16_full", "pr16_full"]
    kw = dict(dataset_kwargs=dict(path=folders["A"]), cache_dir=str(tmp_path), batch_size=8,
              G_kwargs=dict(noise_mode="const"))
    fresh = metric_main.calc_metrics(names, G=ToyGenerator(), **dict(kw, cache=False))
    for name in names[1:]:  # KID and PR cache the real features alone (no mean/cov in the file).
        metric_main.calc_metric(name, G=ToyGenerator(), **kw)
    # The shared pass needs features and mean/cov; it sums mean/cov from the cached features in the batches a
    # fresh pass uses, so nothing real is embedded and FID is bit-identical.
    toy.images = 0
    shared = metric_main.calc_metrics(names, G=ToyGenerator(), **kw)
    assert toy.images == 16
    assert [r["results"] for r in shared] == [r["results"] for r in fresh]


def test_shared_evaluation_of_a_second_dataset_equals_per_metric(toy, folders, tmp_path):
    kw = dict(dataset_kwargs=dict(path=folders["A"]), dataset2_kwargs=dict(path=folders["B"]),
              cache_dir=str(tmp_path), batch_size=8, cache=False)
    names = ["fid13", "kid13", "pr13", "fid20_full", "kid20_full"]
    shared = metric_main.calc_metrics(names, **kw)
    # Subsets of the second dataset depend on the count, so (detector, count) is the unit of sharing:
    # inception on 13 of A + 13 of B, then all 30 of A + 20 of B.
    assert toy.images == 13 + 13 + 30 + 20
    for name, s in zip(names, shared):
        assert s["results"] == metric_main.calc_metric(name, **kw)["results"], name


def test_metric_minimum_counts():
    for name, minimum in (("fid1_full", 2), ("fd_dinov2_1_full", 2), ("kid1", 2), ("pr3_full", 4),
                          ("pr2", 4), ("is9", 10)):
        spec = metric_main.parse_metric(name)
        assert metric_main.min_count(spec)[0] == minimum
        with pytest.raises(MetricError, match=f"metric '{name}': .* needs at least {minimum} images"):
            metric_main.validate_metric(name)
        assert not metric_main.is_valid_metric(name)
    with pytest.raises(MetricError, match=r"FID needs at least 2 images, got 1 \(a covariance needs at least 2 "
                                          r"samples; with fewer images than the feature dimension"):
        metric_main.validate_metric("fid1_full")
    with pytest.raises(MetricError, match="k must be at least 1"):
        metric_main.validate_metric("pr50k0_full")
    for name in ("fid2_full", "kid2", "pr4_full", "pr5k5", "is10", "fid50k_full"):
        assert metric_main.min_count(metric_main.parse_metric(name))[0] <= metric_main.parse_metric(name)["num_gen"]
        assert metric_main.is_valid_metric(name) and metric_main.validate_metric(name)["num_gen"] > 0


def test_too_few_images_are_refused_before_any_work(toy, tmp_path):
    one = write_folder(tmp_path / "one", 1, seed=10, brightness=30)
    three = write_folder(tmp_path / "three", 3, seed=11, brightness=30)
    kw = dict(cache_dir=str(tmp_path), batch_size=8)
    with pytest.raises(MetricError, match="must be positive"):
        metric_main.calc_metric("fid0_full", G=ToyGenerator(), dataset_kwargs=dict(path=three), **kw)
    with pytest.raises(MetricError, match="FID needs at least 2 images, got 1"):
        metric_main.calc_metric("fid1_full", G=ToyGenerator(), dataset_kwargs=dict(path=three), **kw)
    # The real side too: a '_full' metric over a dataset smaller than the minimum.
    with pytest.raises(MetricError, match=r"metric 'fid2_full': dataset .*one has 1 images, but FID needs at least 2"):
        metric_main.calc_metric("fid2_full", G=ToyGenerator(), dataset_kwargs=dict(path=one), **kw)
    with pytest.raises(MetricError, match=r"'pr4_full': dataset .*three has 3 images, but precision/recall needs at "
                                          r"least 4"):
        metric_main.calc_metrics(["fid2_full", "pr4_full"], G=ToyGenerator(), dataset_kwargs=dict(path=three), **kw)
    assert toy.calls == 0


def test_report_metric_disk_full_keeps_earlier_lines(tmp_path, monkeypatch):
    import errno

    from torch_utils.util import DiskFullError

    run_dir = tmp_path / "run"
    result = dict(results=dict(fid50k_full=12.5), metric="fid50k_full", total_time=3.0, total_time_str="3s",
                  num_gpus=1)
    metric_main.report_metric(result, run_dir=str(run_dir))
    path = run_dir / "metric-fid50k_full.jsonl"
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):  # The disk fills up in the middle of the line.
        real_write(fd, data[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(metric_main, "_write_all", half_then_full)
    with pytest.raises(DiskFullError) as info:
        metric_main.report_metric(dict(result, results=dict(fid50k_full=9.0)), run_dir=str(run_dir))
    assert str(info.value) == f"no space left on device at {path}"
    assert path.read_bytes() == before  # Truncated back: the earlier line intact, no half line.
    # A new file that could not be written is removed, not left empty.
    with pytest.raises(DiskFullError):
        metric_main.report_metric(dict(result, metric="kid50k_full"), run_dir=str(run_dir))
    assert not (run_dir / "metric-kid50k_full.jsonl").exists()
    # Other write errors: one line naming the file.
    monkeypatch.setattr(metric_main, "_write_all", lambda fd, data: (_ for _ in ()).throw(
        OSError(errno.EIO, "Input/output error")))
    with pytest.raises(metric_main.MetricWriteError, match=f"^cannot write {path}: Input/output error$"):
        metric_main.report_metric(result, run_dir=str(run_dir))
    assert path.read_bytes() == before


# ----------------------------------------------------------------------------
# Multi-process: features split across ranks and all_gather'ed (gloo on CPU).


def _worker(rank, world, init_file, out_dir, paths):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        detectors.register_detector("inception", lambda **kw: BlockMeans("inception"))
        results = {}
        for name in ("fid13", "kid13", "pr13"):  # 13 of 30 images: uneven split, padded slots masked out.
            results.update(metric_main.calc_metric(name, dataset_kwargs=dict(path=paths[0]),
                                                   dataset2_kwargs=dict(path=paths[1]), num_gpus=world, rank=rank,
                                                   device=torch.device("cpu"), batch_size=4, cache=False)["results"])
        G = ToyGenerator()
        results.update(metric_main.calc_metric("fid7_full", G=G, dataset_kwargs=dict(path=paths[0]), num_gpus=world,
                                               rank=rank, device=torch.device("cpu"), batch_size=2,
                                               cache=False)["results"])
        results["generated_batches"] = len(G.seen_c)
        kw = dict(G=ToyGenerator(), dataset_kwargs=dict(path=paths[0]), num_gpus=world, rank=rank,
                  device=torch.device("cpu"), batch_size=2, cache=False)
        for r in metric_main.calc_metrics(["fid7_full", "kid5_full", "pr6_full"], **kw):
            results.update({f"shared_{k}": v for k, v in r["results"].items()})
        for name in ("kid5_full", "pr6_full"):
            results.update(metric_main.calc_metric(name, **kw)["results"])
        opts = metric_utils.MetricOptions(dataset_kwargs=dict(path=paths[0]), num_gpus=world, rank=rank,
                                          device=torch.device("cpu"), batch_size=4, cache=False)
        results["features"] = metric_utils.compute_feature_stats_for_dataset(
            opts, "inception", max_items=13, capture_all=True).get_all().tolist()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(results, f)
    finally:
        torch.distributed.destroy_process_group()


def test_multi_process_matches_single_process(toy, folders, tmp_path):
    paths = (folders["A"], folders["B"])
    torch.multiprocessing.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), paths), nprocs=2)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    single = {}
    for name in ("fid13", "kid13", "pr13"):
        single.update(calc(name, paths, tmp_path, cache=False)["results"])
    for key, value in single.items():
        assert r0[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key  # Same images, same order.
        assert np.isnan(r1[key])  # Results live on rank 0.
    # The gathered features are the single-process ones, in the same order, on every rank.
    opts = metric_utils.MetricOptions(dataset_kwargs=dict(path=paths[0]), device=torch.device("cpu"), cache=False)
    expected = metric_utils.compute_feature_stats_for_dataset(opts, "inception", max_items=13, capture_all=True)
    np.testing.assert_array_equal(np.array(r0["features"], dtype=np.float32), expected.get_all())
    np.testing.assert_array_equal(np.array(r1["features"], dtype=np.float32), expected.get_all())
    assert np.isfinite(r0["fid7_full"])
    # On 2 ranks too, the shared evaluation gives exactly the per-metric results.
    for key in ("fid7_full", "kid5_full", "pr6_full_precision", "pr6_full_recall"):
        assert np.isfinite(r0[key]) and r0[f"shared_{key}"] == r0[key], key
        assert np.isnan(r1[f"shared_{key}"])
    assert r0["generated_batches"] == r1["generated_batches"] == 2  # 7 images from 2 ranks x 2 per batch.


# ----------------------------------------------------------------------------
# calc_metrics.py


@pytest.fixture
def cli():
    import calc_metrics
    runner = CliRunner()
    return lambda *args: runner.invoke(calc_metrics.main, ["--device=cpu", "--quiet", *args])


def test_cli_folder_vs_folder(toy, cli, folders, tmp_path):
    run_dir = tmp_path / "out"
    res = cli(f"--metrics=fid{NUM_IMAGES}_full,kid{NUM_IMAGES}_full", f"--data={folders['A']}",
              f"--data2={folders['B']}", f"--run-dir={run_dir}", f"--cache-dir={tmp_path}", "--batch=8")
    assert res.exit_code == 0, res.output
    assert f"fid{NUM_IMAGES}_full" in res.output and f"kid{NUM_IMAGES}_full" in res.output
    for name in (f"fid{NUM_IMAGES}_full", f"kid{NUM_IMAGES}_full"):
        lines = (run_dir / f"metric-{name}.jsonl").read_text().splitlines()
        assert len(lines) == 1 and name in json.loads(lines[0])["results"]


def test_cli_errors(toy, cli, folders, tmp_path):
    res = cli("--metrics=fid10k_full,fidd", f"--data={folders['A']}", f"--data2={folders['B']}")
    assert res.exit_code == 2 and "unknown metric 'fidd'" in res.output
    res = cli("--metrics=fid10_full", f"--data={tmp_path / 'nope'}", f"--data2={folders['B']}")
    assert res.exit_code == 2 and "nope" in res.output
    res = cli("--metrics=fid10_full", f"--data={folders['A']}")
    assert res.exit_code == 2 and "--network" in res.output
    res = cli("--metrics=fid10_full", f"--network={tmp_path / 'snap.pt'}")
    assert res.exit_code == 2 and "file not found" in res.output
    res = cli("--metrics=fid10_full", f"--data={folders['empty']}", f"--data2={folders['B']}",
              f"--cache-dir={tmp_path}")
    assert res.exit_code == 1 and "contains no images" in res.output
    res = cli("--metrics=fid100", f"--data={folders['A']}", f"--data2={folders['B']}", f"--run-dir={tmp_path / 'r'}",
              f"--cache-dir={tmp_path}")
    assert res.exit_code == 1 and "has 30 images, but the metric needs 100" in res.output
    assert not (tmp_path / "r").exists()  # Nothing written on failure.
    assert toy.calls == 0


def save_toy_snapshot(tmp_path, name, **save_kwargs):
    """A 32x32 FastGAN-lite snapshot in a fresh run dir, its training set a 6-image folder -> snapshot path."""
    from training import snapshot
    from training.networks_fastgan import Generator
    data32 = write_folder(tmp_path / "data32", 6, seed=8, brightness=40, res=32)
    cfg = dict(class_name="training.networks_fastgan.Generator", z_dim=8, c_dim=0, w_dim=8, img_resolution=32,
               img_channels=3, ngf=4, lite=True)
    G = Generator(**{k: v for k, v in cfg.items() if k != "class_name"})
    run_dir = tmp_path / "00000-run"
    run_dir.mkdir()
    snap = run_dir / name
    snapshot.save_snapshot(str(snap), networks=dict(G=cfg), G=G, G_ema=G, **save_kwargs,
                           config=dict(training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset",
                                                                path=data32, use_labels=False, xflip=True)))
    return snap


def test_cli_network_snapshot(toy, cli, tmp_path):
    snap = save_toy_snapshot(tmp_path, "network-snapshot-000004.pt")
    run_dir = snap.parent
    res = cli("--metrics=fid6_full", f"--network={snap}", f"--cache-dir={tmp_path}", "--batch=4")
    assert res.exit_code == 0, res.output
    line = json.loads((run_dir / "metric-fid6_full.jsonl").read_text())
    assert line["snapshot_pkl"] == "network-snapshot-000004.pt" and np.isfinite(line["results"]["fid6_full"])
    # A dataset of another resolution than the network's.
    res = cli("--metrics=fid6_full", f"--network={snap}", f"--data={write_folder(tmp_path / 'd16', 6, 9, 40)}",
              f"--cache-dir={tmp_path}")
    assert res.exit_code == 1 and "resolution mismatch" in res.output
    # A file that is not a snapshot: a clear error naming it before any work, also when --data is given.
    bad = run_dir / "network-snapshot-000005.pt"
    bad.write_bytes(b"not a zip")
    res = cli("--metrics=fid6_full", f"--network={bad}", f"--data={tmp_path / 'data32'}", f"--cache-dir={tmp_path}")
    assert res.exit_code == 1 and str(bad) in res.output and "Traceback" not in res.output
    assert len((run_dir / "metric-fid6_full.jsonl").read_text().splitlines()) == 1


def test_cli_best_pointer_and_kimg_from_the_snapshot(toy, cli, tmp_path):
    snap = save_toy_snapshot(tmp_path, "network-snapshot-000004.504.pt", progress=dict(cur_nimg=4504))
    run_dir = snap.parent
    res = cli("--metrics=fid6_full", f"--network={snap}", f"--cache-dir={tmp_path}", "--batch=4")
    assert res.exit_code == 0, res.output
    line = json.loads((run_dir / "metric-fid6_full.jsonl").read_text())
    assert line["kimg"] == 4.504 and line["snapshot_pkl"] == snap.name
    pointer = run_dir / "best-fid6_full.json"  # refreshed by calc_metrics.py too
    assert json.loads(pointer.read_text()) == dict(metric="fid6_full", result="fid6_full", kimg=4.504,
                                                   value=line["results"]["fid6_full"], snapshot_pkl=snap.name,
                                                   direction="lower")
    assert (run_dir / "metrics.png").is_file()
    # The pointer as --network: evaluates the snapshot it names, and the new line names the snapshot.
    res = cli("--metrics=fid6_full", f"--network={pointer}", f"--cache-dir={tmp_path}", "--batch=4")
    assert res.exit_code == 0, res.output
    lines = [json.loads(t) for t in (run_dir / "metric-fid6_full.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["snapshot_pkl"] == snap.name and lines[1]["kimg"] == 4.504
    assert lines[1]["results"] == lines[0]["results"]
    os.remove(snap)
    res = cli("--metrics=fid6_full", f"--network={pointer}", f"--cache-dir={tmp_path}")
    assert res.exit_code == 2 and "does not exist" in res.output and snap.name in res.output


def test_cli_refuses_too_small_counts(toy, cli, folders, tmp_path):
    res = cli("--metrics=fid10_full,fid1_full", f"--data={folders['A']}", f"--data2={folders['B']}",
              f"--run-dir={tmp_path / 'r'}")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "metric 'fid1_full': FID needs at least 2 images, got 1" in res.output
    res = cli("--metrics=pr3_full", f"--data={folders['A']}", f"--data2={folders['B']}")
    assert res.exit_code == 2 and "precision/recall needs at least 4 images, got 3" in res.output
    assert toy.calls == 0 and not (tmp_path / "r").exists()


def test_cli_disk_full_prints_the_result_and_keeps_earlier_lines(toy, cli, folders, tmp_path, monkeypatch):
    import errno

    run_dir = tmp_path / "out"
    args = (f"--metrics=fid{NUM_IMAGES}_full,kid{NUM_IMAGES}_full", f"--data={folders['A']}", f"--data2={folders['B']}",
            f"--run-dir={run_dir}", f"--cache-dir={tmp_path}", "--batch=8")
    assert cli(*args).exit_code == 0
    path = run_dir / f"metric-fid{NUM_IMAGES}_full.jsonl"
    before = path.read_bytes()
    value = json.loads(before)["results"][f"fid{NUM_IMAGES}_full"]
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(metric_main, "_write_all", half_then_full)
    res = cli(*args)
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"{value:.4f}" in res.output  # The value is printed before the write fails ...
    assert res.output.rstrip().endswith(f"Error: no space left on device at {path}")  # ... and the error is one line.
    assert path.read_bytes() == before  # Earlier lines intact, no half line.


def test_cli_allow_class(toy, cli, tmp_path):
    """A snapshot whose generator class is not one of the toolkit's is refused unless --allow-class names it."""
    from training import snapshot
    data16 = write_folder(tmp_path / "data16", 6, seed=12, brightness=40)
    cfg = dict(class_name=f"{ToyGenerator.__module__}.ToyGenerator", z_dim=4, c_dim=0, img_resolution=RES,
               img_channels=3)
    G = ToyGenerator()
    run_dir = tmp_path / "00000-run"
    run_dir.mkdir()
    snap = str(run_dir / "network-snapshot-000000.100.pt")
    snapshot.save_snapshot(snap, networks=dict(G=cfg), G=G, G_ema=G, progress=dict(cur_nimg=100),
                           config=dict(training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset",
                                                                path=data16)))
    res = cli("--metrics=fid6_full", f"--network={snap}", f"--cache-dir={tmp_path}", "--batch=4")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert cfg["class_name"] in res.output and "--allow-class" in res.output
    assert len(res.output.strip().splitlines()) == 1  # One line.
    assert not (run_dir / "metric-fid6_full.jsonl").exists()
    res = cli("--metrics=fid6_full", f"--network={snap}", f"--cache-dir={tmp_path}", "--batch=4",
              f"--allow-class={cfg['class_name']}")
    assert res.exit_code == 0, res.output
    line = json.loads((run_dir / "metric-fid6_full.jsonl").read_text())
    assert line["kimg"] == 0.1 and np.isfinite(line["results"]["fid6_full"])
    res = cli("--metrics=fid6_full", f"--network={snap}", "--allow-class=nodots")
    assert res.exit_code == 2 and "--allow-class" in res.output
