"""FastGAN generator (Liu et al. 2021, "Towards Faster and Stabilized GAN Training for
High-fidelity Few-shot Image Synthesis"), as used by Projected GANs (Sauer et al. 2021).

The network exposes the same `Generator` interface as `training.networks_stylegan2` so the
host (loss, training loop, metrics, snapshots) can treat both alike:

    G = Generator(z_dim=256, c_dim=0, w_dim=256, img_resolution=256, img_channels=3, ngf=128)
    ws  = G.mapping(z, c)             # [N, 1, w_dim]: z on the hypersphere (+ class embedding)
    img = G.synthesis(ws)             # [N, img_channels, R, R] in [-1, 1] (tanh)

Architecture, from 4x4 up to the output resolution R:

    w [N, w_dim] -> ConvTranspose 4x4 -> BN -> GLU                         (InitLayer, 4x4)
    for r = 8, 16, ..., R:  nearest x2 -> conv3x3 -> noise -> BN -> GLU      (UpBlock; the non-lite
                            [-> conv3x3 -> noise -> BN -> GLU]               "comp" block repeats it)
    skip-layer excitation:  feat_t *= SLE(feat_{t/16})   for t in 64, 128, 256, 512 (t <= R)
    conv3x3 -> tanh                                                           (ToRGB)

Every conv / transposed conv / linear layer is spectrally normalised, as in FastGAN (the
generator too, not only the discriminator). The convolutions use projector_plugin's SNConv2d,
which keeps W unnormalised, so each layer divides whichever is smaller by sigma(W): the weight
of the high-resolution layers, the output of the low-resolution, wide ones (a 2048 x 1024 x 3 x 3
weight at 8x8 has 18x more elements than its output at batch 8).
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from projector_plugin.spectral_norm import SNConv2d
from training.layers import check_precision, no_autocast, normalize_2nd_moment, training_autocast

# Channel multipliers of ngf per resolution: FastGAN's table (nfc_multi).
_CHANNEL_MULTIPLIER = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}

# SLE targets and their sources: FastGAN wires 8->128, 16->256, 32->512; Projected GAN's
# FastGAN adds 4->64 so that low-resolution models get one excitation as well.
_SLE_RATIO = 16
_SLE_TARGETS = (64, 128, 256, 512)


def channels_at(res, ngf):
    """Feature channels of the generator at resolution `res` for width `ngf`."""
    return max(int(ngf * _CHANNEL_MULTIPLIER[res]), 1)


def sle_pairs(img_resolution):
    """[(source_res, target_res)] of the skip-layer excitations for a given output resolution.

    Targets are those of FastGAN/Projected GAN (64, 128, 256, 512) up to `img_resolution`; a
    32x32 model, which has none of them, gets a single excitation 4 -> 32 so that every
    resolution keeps the FastGAN gating path.
    """
    targets = [t for t in _SLE_TARGETS if t <= img_resolution]
    if not targets:
        targets = [img_resolution]
    return [(max(t // _SLE_RATIO, 4), t) for t in targets]


def _sn(module, init='fastgan'):
    """DCGAN-style init (init='fastgan'; 'torch' keeps PyTorch's default), then spectral normalisation (one
    power iteration per training forward).

    The weight is initialised *before* the parametrisation is attached because attaching it
    runs the power iteration that estimates sigma; re-initialising afterwards would leave a
    stale estimate in eval-mode copies (G_ema) until the first training step.
    """
    if init == 'fastgan':
        with torch.no_grad():
            module.weight.normal_(0.0, 0.02)
    return parametrizations.spectral_norm(module)


class SNConv(SNConv2d):
    """Bias-free spectrally normalised conv with FastGAN's init, W ~ N(0, 0.02).

    The weight is drawn in reset_parameters, before SNConv2d draws its power-iteration vectors, which is
    the order of `_sn` + torch's parametrisation: a seed gives the same initial weights and u, v as the
    generator had with that parametrisation, whose state dicts (snapshots) it also loads.
    forward(x [N, I, H, W]) -> conv(x, W) / sigma(W): [N, O, H', W'].
    """

    torch_init = False  # True (SNConvTorchInit): keep nn.Conv2d's default init, as Projected GAN's FastGAN does

    def __init__(self, in_channels, out_channels, kernel_size, padding=0, bias=False):
        super().__init__(in_channels, out_channels, kernel_size, 1, padding, bias=bias)

    def reset_parameters(self):
        super().reset_parameters()  # nn.Conv2d's draw first, as before (it keeps the RNG stream unchanged)
        if not self.torch_init:
            with torch.no_grad():
                self.weight.normal_(0.0, 0.02)
                if self.bias is not None:
                    self.bias.zero_()


class SNConvTorchInit(SNConv):
    """SNConv with nn.Conv2d's default (Kaiming-uniform) init, the init of Projected GAN's FastGAN."""

    torch_init = True


def _conv_class(init):
    if init not in ('fastgan', 'torch'):
        raise ValueError(f"FastGAN: init must be 'fastgan' or 'torch', got {init!r}")
    return SNConv if init == 'fastgan' else SNConvTorchInit


def conv3x3(in_channels, out_channels, init='fastgan'):
    return _conv_class(init)(in_channels, out_channels, 3, padding=1)


# Below this many input positions (N * H * W) an up-block upsamples, then convolves, instead of running the
# fused transposed convolution: the fused 4x4 kernel is built from the weight on every call and its backward is
# slow when the image is tiny, which costs more than the FLOPs it saves (1 CPU thread, batch 8: the 4 -> 8 block
# of FastGAN-256 takes 1.5 s forward + backward unfused, 3.5 s fused; from 16x16 on the fused one is faster).
FUSED_UP_MIN_POSITIONS = 256


def sn_conv3x3(conv, x, up=False):
    """conv (a 3x3 SNConv) of x, after nearest x2 upsampling when `up`: [N, I, H, W] -> [N, O, H', W'].

    The same function, computed the cheapest way for the shapes: 1/sigma scales the output when it has fewer
    elements than the weight, else the weight; the upsampling is fused into the conv (upsample2x_conv3x3) unless
    the input has fewer than FUSED_UP_MIN_POSITIONS positions.
    """
    n, _, h, w = x.shape
    with no_autocast(x.device):  # the power iteration and sigma in float32, also under bf16 autocast
        sigma = conv.sigma()  # once per call: in training mode this runs the power iteration
    scale_output = n * conv.out_channels * h * w * (4 if up else 1) < conv.weight.numel()
    weight = conv.weight if scale_output else conv.weight / sigma
    if not up:
        y = F.conv2d(x, weight, padding=1)
    elif n * h * w < FUSED_UP_MIN_POSITIONS:
        y = F.conv2d(F.interpolate(x, scale_factor=2, mode='nearest'), weight, padding=1)
    else:
        y = upsample2x_conv3x3(x, weight)
    return y * (1 / sigma) if scale_output else y


def upsample2x_conv3x3(x, weight):
    """conv2d(nearest_upsample_2x(x), weight, padding=1) without building the upsampled image.

    x [N, I, H, W], weight [O, I, 3, 3] -> [N, O, 2H, 2W]. Nearest upsampling is zero insertion followed by a
    2-tap box filter per axis, so upsample-then-conv3x3 is one stride-2 transposed convolution whose 4-tap kernel
    per axis is the 3x3 kernel convolved with the box: along an axis with taps (k0, k1, k2) it is
    (k2, k1 + k2, k0 + k1, k0) (padding 1). That is 16 instead of 36 multiply-adds per input pixel and channel
    pair, in a single convolution: no upsampled image, no phase interleaving, and a cheaper backward.
    """
    k0, k1, k2 = weight.unbind(2)
    rows = torch.stack([k2, k1 + k2, k0 + k1, k0], 2)  # [O, I, 4, 3]
    k0, k1, k2 = rows.unbind(3)
    kernel = torch.stack([k2, k1 + k2, k0 + k1, k0], 3)  # [O, I, 4, 4]
    return F.conv_transpose2d(x, kernel.transpose(0, 1), stride=2, padding=1)


# ----------------------------------------------------------------------------------------------
# Building blocks.


class GLU(nn.Module):
    """Gated linear unit over channels: [N, 2C, H, W] -> [N, C, H, W]."""

    def forward(self, x):
        assert x.shape[1] % 2 == 0, 'GLU needs an even number of channels'
        return F.glu(x, dim=1)  # first half * sigmoid(second half), in one kernel


class NoiseInjection(nn.Module):
    """x + strength * noise, with a single learned strength (initialised at 0, as in FastGAN).

    noise_mode: 'random' draws fresh N(0, 1) noise [N, 1, H, W]; 'const' uses a fixed buffer
    drawn at construction (so outputs are deterministic and survive snapshots); 'none' skips.
    """

    def __init__(self, resolution):
        super().__init__()
        self.resolution = resolution
        self.strength = nn.Parameter(torch.zeros([]))
        self.register_buffer('noise_const', torch.randn([resolution, resolution]))

    def forward(self, x, noise_mode='random'):
        if noise_mode == 'none':
            return x
        if noise_mode == 'random':
            noise = torch.randn([x.shape[0], 1, x.shape[2], x.shape[3]], device=x.device, dtype=x.dtype)
        elif noise_mode == 'const':
            noise = self.noise_const.to(x.dtype)
        else:
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        return x + noise * self.strength

    def extra_repr(self):
        return f'resolution={self.resolution}'


class InitLayer(nn.Module):
    """w [N, w_dim] -> features [N, C, 4, 4]: transposed 4x4 conv from a 1x1 "image", BN, GLU."""

    def __init__(self, w_dim, channels, init='fastgan'):
        super().__init__()
        self.conv = _sn(nn.ConvTranspose2d(w_dim, channels * 2, 4, 1, 0, bias=False), init)
        self.norm = nn.BatchNorm2d(channels * 2)
        self.act = GLU()

    def forward(self, w):
        x = w.reshape(w.shape[0], -1, 1, 1)
        return self.act(self.norm(self.conv(x).float()))  # BatchNorm in float32 (under bf16 autocast too)


class UpBlock(nn.Module):
    """[N, Cin, r/2, r/2] -> [N, Cout, r, r]: nearest x2, then `num_convs` x (conv, noise, BN, GLU).

    num_convs=2 is FastGAN's "comp" block; num_convs=1 the single-conv block of the lite model.
    Nearest upsampling (not a transposed conv) avoids checkerboard artefacts; from 16x16 on it is fused
    with the first conv (upsample2x_conv3x3), which computes the same function with fewer operations
    (sn_conv3x3 chooses).
    """

    def __init__(self, in_channels, out_channels, resolution, num_convs=2, use_noise=True, init='fastgan'):
        super().__init__()
        self.convs = nn.ModuleList()
        self.noises = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(num_convs):
            self.convs.append(conv3x3(in_channels if i == 0 else out_channels, out_channels * 2, init))
            self.noises.append(NoiseInjection(resolution) if use_noise else nn.Identity())
            self.norms.append(nn.BatchNorm2d(out_channels * 2))
        self.act = GLU()
        self.use_noise = use_noise

    def forward(self, x, noise_mode='random'):
        for i, (conv, noise, norm) in enumerate(zip(self.convs, self.noises, self.norms)):
            x = sn_conv3x3(conv, x, up=i == 0).float()  # noise, BatchNorm and GLU in float32 (under bf16 too)
            if self.use_noise:
                x = noise(x, noise_mode=noise_mode)
            x = self.act(norm(x))
        return x


class SkipLayerExcitation(nn.Module):
    """Channel gating of a high-resolution feature map by a low-resolution one (FastGAN's SLE).

    feat_small [N, Cs, s, s] -> avgpool 4x4 -> conv4x4 (valid) -> Swish -> conv1x1 -> sigmoid
    gives per-channel gates [N, Cb, 1, 1] that multiply feat_big [N, Cb, b, b]. The gate is a
    cheap long-range skip path: gradients reach the early layers directly, and the
    low-resolution content (layout) modulates the high-resolution style.
    """

    def __init__(self, small_channels, big_channels, init='fastgan'):
        super().__init__()
        conv = _conv_class(init)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            conv(small_channels, big_channels, 4),
            nn.SiLU(),
            conv(big_channels, big_channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, feat_small, feat_big):
        return feat_big * self.gate(feat_small).float()


# ----------------------------------------------------------------------------------------------
# Mapping and synthesis.


class FastganMapping(nn.Module):
    """z [N, z_dim] (+ c [N, c_dim]) -> ws [N, 1, w_dim].

    Unconditional: w = z normalised onto the hypersphere (FastGAN samples z ~ N(0, I) and feeds
    it directly; normalising only fixes its scale, which makes truncation well defined).

    Conditional (c_dim > 0): the one-hot / soft label is embedded by a linear layer, both parts
    are normalised, concatenated and projected back to w_dim, and the result is normalised
    again. We chose this *concatenated embedding* over conditional BN because the shared
    interface routes everything through `ws` (`synthesis(ws)` has no label argument), so the
    class must live in w; it also keeps BN's batch statistics class-agnostic (per-class BN
    statistics are noisy at the small per-class batch sizes of few-shot data), and lets
    truncation towards w_avg, snapshots and metrics work unchanged.
    """

    def __init__(self, z_dim, c_dim, w_dim, w_avg_beta=0.998):
        super().__init__()
        if c_dim == 0 and z_dim != w_dim:
            raise ValueError(f'FastGAN: w_dim ({w_dim}) must equal z_dim ({z_dim}) for an unconditional model')
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.num_ws = 1
        self.w_avg_beta = w_avg_beta
        if c_dim > 0:
            self.embed = _sn(nn.Linear(c_dim, w_dim, bias=False))
            self.project = _sn(nn.Linear(z_dim + w_dim, w_dim, bias=True))
        self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f'FastGAN mapping: expected z of shape [N, {self.z_dim}], got {list(z.shape)}')
        x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim or c.shape[0] != z.shape[0]:
                got = None if c is None else list(c.shape)
                raise ValueError(f'FastGAN mapping: expected c of shape [{z.shape[0]}, {self.c_dim}], got {got}')
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = normalize_2nd_moment(self.project(torch.cat([x, y], dim=1)))

        if update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        x = x.unsqueeze(1)  # [N, num_ws=1, w_dim]
        # truncation_cutoff counts ws; with a single w any cutoff >= 1 truncates it, 0 does not.
        if truncation_psi != 1 and (truncation_cutoff is None or truncation_cutoff > 0):
            x = self.w_avg.lerp(x, truncation_psi)
        return x

    def extra_repr(self):
        return f'z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}'


class FastganSynthesis(nn.Module):
    """ws [N, 1, w_dim] -> img [N, img_channels, R, R]: in [-1, 1] (tanh), or unbounded with tanh=False."""

    def __init__(self, w_dim, img_resolution, img_channels, ngf=128, lite=False, noise=True, tanh=True,
                 rgb_bias=False, init='fastgan', precision='fp32'):
        super().__init__()
        self.precision = check_precision(precision)
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.ngf, self.lite = ngf, lite
        self.noise, self.tanh, self.rgb_bias, self.init_scheme = bool(noise), bool(tanh), bool(rgb_bias), init
        self.num_ws = 1
        self.resolutions = [2 ** i for i in range(3, int(np.log2(img_resolution)) + 1)]

        self.init = InitLayer(w_dim, channels_at(4, ngf), init)
        self.blocks = nn.ModuleDict()
        for res in self.resolutions:
            self.blocks[str(res)] = UpBlock(channels_at(res // 2, ngf), channels_at(res, ngf), res,
                                            num_convs=1 if lite else 2, use_noise=self.noise, init=init)
        self.sle_pairs = sle_pairs(img_resolution)
        self.sle = nn.ModuleDict({str(t): SkipLayerExcitation(channels_at(s, ngf), channels_at(t, ngf), init)
                                  for s, t in self.sle_pairs})
        self.to_rgb = _conv_class(init)(channels_at(img_resolution, ngf), img_channels, 3, padding=1,
                                        bias=self.rgb_bias)

    def forward(self, ws, noise_mode='random', update_emas=False, force_fp32=False, fused_modconv=None):
        """ws: [N, num_ws, w_dim]; only the first w is used (FastGAN has one latent input).

        update_emas, force_fp32 and fused_modconv are accepted so that host code written for the
        StyleGAN2 generator runs unchanged; they have no effect here (BN running statistics follow
        the module's train/eval mode, as in FastGAN, and the network always runs in fp32).
        """
        del update_emas, force_fp32, fused_modconv
        if ws.ndim != 3 or ws.shape[2] != self.w_dim:
            raise ValueError(f'FastGAN synthesis: expected ws of shape [N, num_ws, {self.w_dim}], got {list(ws.shape)}')
        with training_autocast(self, ws.device, self.precision):
            feats = {4: self.init(ws[:, 0].to(torch.float32))}
            sle_sources = {t: s for s, t in self.sle_pairs}
            x = feats[4]
            for res in self.resolutions:
                x = self.blocks[str(res)](x, noise_mode=noise_mode)
                if res in sle_sources:
                    x = self.sle[str(res)](feats[sle_sources[res]], x)
                feats[res] = x
            img = self.to_rgb(x).float()
        return torch.tanh(img) if self.tanh else img

    def extra_repr(self):
        return (f'w_dim={self.w_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}, '
                f'ngf={self.ngf}, lite={self.lite}, noise={self.noise}, tanh={self.tanh}, rgb_bias={self.rgb_bias}, '
                f'init={self.init_scheme!r}')


class Generator(nn.Module):
    """FastGAN generator with the host's Generator interface.

    Args:
        z_dim:          latent size (FastGAN/Projected GAN default 256).
        c_dim:          label size, 0 for unconditional.
        w_dim:          size of w; must equal z_dim when unconditional (w is the normalised z).
        img_resolution: output resolution, a power of two in 32..1024.
        img_channels:   1 (grayscale) or 3 (RGB).
        mapping_kwargs: passed to FastganMapping (e.g. w_avg_beta).
        ngf:            width; channels at resolution r are ngf * {4:16, 8:8, 16:4, 32:2, 64:2,
                        128:1, 256:1/2, 512:1/4, 1024:1/8}[r].
        lite:           single-conv up-blocks (Projected GAN's 'fastgan_lite' config) instead of
                        the two-conv "comp" blocks.
        precision:      'fp32', or 'bf16': the synthesis of the training copy (train mode) runs under
                        bfloat16 autocast, with BatchNorm, noise, gates and spectral-norm estimates
                        in float32 and float32 weights; G_ema and evaluation stay float32.
        noise, tanh, rgb_bias, init: noise injection in the up-blocks, tanh on the output, a bias in
                        the last conv, and 'fastgan' (N(0, 0.02) weights, BN gammas N(1, 0.02)) or
                        'torch' (PyTorch's default) init. The defaults are FastGAN's; Projected GAN's
                        official generator is `official_fastgan_kwargs(lite)`: no noise in the lite
                        blocks, a linear output with bias, PyTorch's init (its pickles import into it,
                        see training/pickle_import.py).
    """

    def __init__(self, z_dim=256, c_dim=0, w_dim=256, img_resolution=256, img_channels=3, mapping_kwargs={},
                 ngf=128, lite=False, noise=True, tanh=True, rgb_bias=False, init='fastgan', precision='fp32',
                 **synthesis_kwargs):
        super().__init__()
        if img_resolution not in (32, 64, 128, 256, 512, 1024):
            raise ValueError(f'FastGAN: img_resolution must be a power of two in 32..1024, got {img_resolution}')
        if img_channels not in (1, 3):
            raise ValueError(f'FastGAN: img_channels must be 1 or 3, got {img_channels}')
        if ngf < 1:
            raise ValueError(f'FastGAN: ngf must be positive, got {ngf}')
        if synthesis_kwargs:
            raise TypeError(f'FastGAN Generator: unknown synthesis arguments {sorted(synthesis_kwargs)}')
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        _conv_class(init)  # validates `init`
        self.synthesis = FastganSynthesis(w_dim, img_resolution, img_channels, ngf=ngf, lite=lite, noise=noise,
                                          tanh=tanh, rgb_bias=rgb_bias, init=init, precision=precision)
        self.num_ws = self.synthesis.num_ws
        self.mapping = FastganMapping(z_dim, c_dim, w_dim, **mapping_kwargs)
        if init == 'fastgan':
            self.apply(_init_batchnorm)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, noise_mode='random', update_emas=False,
                **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, update_emas=update_emas, **synthesis_kwargs)


def official_fastgan_kwargs(lite):
    """Generator kwargs that make it Projected GAN's official FastGAN (`pg_modules/networks_fastgan.py`) for
    `--cfg=fastgan` (lite=False) or `fastgan_lite` (lite=True): the same layers, init and output, so the two
    train alike and its pickles load into it."""
    return dict(lite=bool(lite), noise=not lite, tanh=False, rgb_bias=True, init='torch')


def _init_batchnorm(m):
    # FastGAN's BN init: gamma ~ N(1, 0.02), beta = 0 (small random gammas break the symmetry
    # between the two GLU halves).
    if isinstance(m, nn.BatchNorm2d):
        with torch.no_grad():
            m.weight.normal_(1.0, 0.02)
            m.bias.zero_()
