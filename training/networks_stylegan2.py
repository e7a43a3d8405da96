"""StyleGAN2 generator and discriminator (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN"), in the configuration of StyleGAN2-ADA: equalised learning rate everywhere,
modulated/demodulated convolutions, skip generator, residual discriminator, optional mixed
precision for the highest resolutions.

Shapes:
    Generator:      z [N, z_dim], c [N, c_dim] -> ws [N, num_ws, w_dim] -> img [N, C, R, R] (~[-1, 1])
    Discriminator:  img [N, C, R, R], c [N, c_dim] -> logits [N, 1]

Resampling, bias + activation and the resampled convolutions go through torch_utils.ops
(bias_act, upfirdn2d, conv2d_resample), which pick their CUDA kernels on GPU and the reference
PyTorch implementation elsewhere.
"""

import numpy as np
import torch
from torch import nn

from torch_utils.ops import bias_act, conv2d_resample, upfirdn2d
from training.layers import autocast_enabled, check_precision, normalize_2nd_moment, training_autocast


def activation_gain(activation):
    """Gain that keeps the activation's output at about unit scale: bias_act's default for it."""
    try:
        return bias_act.default_gain(activation)
    except ValueError:
        names = sorted(bias_act.activation_names)
        raise ValueError(f'unknown activation {activation!r}; expected one of {names}') from None


def check_shape(x, ref_shape, what):
    """Raise a ValueError naming `what` if x's shape does not match ref_shape (None = any)."""
    if x.ndim != len(ref_shape) or any(r is not None and s != r for s, r in zip(x.shape, ref_shape)):
        ref = ['*' if r is None else r for r in ref_shape]
        raise ValueError(f'{what}: expected shape {ref}, got {list(x.shape)}')


# ----------------------------------------------------------------------------------------------
# Modulated convolution.


def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                     demodulate=True, flip_weight=True, fused_modconv=True):
    """Style-modulated convolution with optional weight demodulation.

    Args:
        x:       [N, I, H, W] input features.
        weight:  [O, I, k, k] shared weight.
        styles:  [N, I] per-sample input-channel scales.
        noise:   optional tensor broadcastable to the output, added after demodulation.
        fused_modconv: True folds the batch into the channel axis and runs one grouped conv with
                 per-sample weights (fast for small batches / inference); False scales the
                 activations instead and keeps a single shared weight (cheaper for large batches
                 and friendlier to mixed precision). Both compute the same function.
    Returns:
        [N, O, H', W'].
    """
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    check_shape(weight, [out_channels, in_channels, kh, kw], 'modulated_conv2d weight')
    check_shape(x, [batch_size, in_channels, None, None], 'modulated_conv2d input')
    check_shape(styles, [batch_size, in_channels], 'modulated_conv2d styles')

    # In fp16, w * s can overflow before demodulation divides it back down; pre-scaling by the max
    # norms does not change the demodulated result (demodulation is scale invariant).
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / np.sqrt(in_channels * kh * kw) / weight.norm(float('inf'), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float('inf'), dim=1, keepdim=True)

    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample.conv2d_resample(x=x, w=weight.to(x.dtype), f=resample_filter, up=up, down=down,
                                            padding=padding, flip_weight=flip_weight)
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    if demodulate:
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    # The per-sample weights are functions of the styles, hence of ws: their gradient must survive
    # conv2d_gradfix.no_weight_gradients() (path-length regularisation differentiates w.r.t. ws).
    x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                                        groups=batch_size, flip_weight=flip_weight, weight_grad_optional=False)
    x = x.reshape(batch_size, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


# ----------------------------------------------------------------------------------------------
# Equalised-learning-rate layers.


class FullyConnectedLayer(nn.Module):
    """y = act(x @ (W * gain).T + b * lr_multiplier), x [N, in] -> [N, out].

    Weights are stored at N(0, 1/lr_multiplier^2) and scaled at runtime (equalised learning rate):
    the optimiser then sees all weights at the same scale and lr_multiplier slows this layer down
    (the mapping network uses 0.01).
    """

    def __init__(self, in_features, out_features, bias=True, activation='linear', lr_multiplier=1, bias_init=0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act.bias_act(x, b, act=self.activation)

    def extra_repr(self):
        return f'in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}'


class Conv2dLayer(nn.Module):
    """Equalised-lr conv with optional FIR up/downsampling, bias, activation and clamping.

    x [N, I, H, W] -> [N, O, H * up / down, W * up / down].
    """

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation='linear', up=1, down=1,
                 resample_filter=[1, 3, 3, 1], conv_clamp=None, channels_last=False, trainable=True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.activation = activation
        self.up, self.down = up, down
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = activation_gain(activation)

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias) if bias is not None else None
        else:
            self.register_buffer('weight', weight)
            self.register_buffer('bias', bias)

    def forward(self, x, gain=1):
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        flip_weight = (self.up == 1)  # the transposed conv used for up=2 expects unflipped weights
        x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                                            padding=self.padding, flip_weight=flip_weight)
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self):
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, '
                f'up={self.up}, down={self.down}')


# ----------------------------------------------------------------------------------------------
# Mapping network.


class MappingNetwork(nn.Module):
    """z [N, z_dim], c [N, c_dim] -> w [N, num_ws, w_dim] (or [N, w_dim] when num_ws is None).

    z and the embedded c are each normalised to unit second moment and concatenated, then pass
    through `num_layers` fully-connected lrelu layers at a reduced learning rate. The running
    mean of w (w_avg, EMA with beta w_avg_beta) is the centre of the truncation trick.
    """

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
                 activation='lrelu', lr_multiplier=0.01, w_avg_beta=0.998):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f'MappingNetwork: num_layers must be >= 1, got {num_layers}')
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            self.add_module(f'fc{idx}', FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                                            lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        x = y = None
        if self.z_dim > 0:
            check_shape(z, [None, self.z_dim], 'mapping network z')
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f'mapping network: the model is conditional (c_dim={self.c_dim}) but c is None')
            check_shape(c, [None, self.c_dim], 'mapping network c')
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y

        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)

        if update_emas and self.num_ws is not None and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            if self.num_ws is None or self.w_avg_beta is None:
                raise ValueError('mapping network: truncation needs num_ws and w_avg tracking')
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                # Truncate only the first `cutoff` ws (coarse layers), keep the fine ones.
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x

    def extra_repr(self):
        return f'z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}'


# ----------------------------------------------------------------------------------------------
# Synthesis network.


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling x2) + noise + bias + lrelu.

    x [N, I, r/up, r/up], w [N, w_dim] -> [N, O, r, r].
    """

    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation='lrelu', resample_filter=[1, 3, 3, 1], conv_clamp=None, channels_last=False):
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = activation_gain(activation)

        # bias_init=1: styles start at 1 so the modulated conv begins as a plain conv.
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size])
                                   .to(memory_format=memory_format))
        if use_noise:
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1):
        if noise_mode not in ('random', 'const', 'none'):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        in_resolution = self.resolution // self.up
        check_shape(x, [None, self.in_channels, in_resolution, in_resolution], 'synthesis layer input')
        styles = self.affine(w)

        noise = None
        if self.use_noise and noise_mode == 'random':
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            noise = noise * self.noise_strength
        if self.use_noise and noise_mode == 'const':
            noise = self.noise_const * self.noise_strength

        flip_weight = (self.up == 1)
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=flip_weight, fused_modconv=fused_modconv)
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self):
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, '
                f'resolution={self.resolution}, up={self.up}, activation={self.activation}')


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation (the output scale must stay free), + bias."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size])
                                   .to(memory_format=memory_format))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        # Equalised lr applied to the styles rather than the weight: same result, one fewer multiply.
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

    def extra_repr(self):
        return f'in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}'


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (const | upsampling conv) + conv + [toRGB].

    x [N, I, r/2, r/2] (None for the first block), img [N, C, r/2, r/2] (or None),
    ws [N, num_conv + num_torgb, w_dim] -> x [N, O, r, r], img [N, C, r, r].
    """

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture='skip',
                 resample_filter=[1, 3, 3, 1], conv_clamp=256, use_fp16=False, fp16_channels_last=False,
                 fused_modconv_default=True, **layer_kwargs):
        super().__init__()
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"synthesis architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.resolution, self.img_channels = resolution, img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.fused_modconv_default = fused_modconv_default
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, update_emas=False, **layer_kwargs):
        del update_emas
        check_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim], 'synthesis block ws')
        w_iter = iter(ws.unbind(dim=1))
        # Mixed precision only where it pays off and is supported: CUDA. Under the synthesis network's bf16
        # autocast (precision='bf16') autocast picks each op's dtype: the block's own fp16 casts step aside.
        autocast = autocast_enabled(ws.device)
        if ws.device.type != 'cuda' or autocast:
            force_fp32 = True
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
        if fused_modconv == 'inference_only':
            fused_modconv = not self.training

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format)
            x = x.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            half = self.resolution // 2
            check_shape(x, [None, self.in_channels, half, half], 'synthesis block input')
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        elif self.architecture == 'resnet':
            # sqrt(1/2) on both branches keeps the sum at unit variance.
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=np.sqrt(0.5), **layer_kwargs)
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)

        if autocast:
            x = x.to(dtype)  # activations between blocks in float32 (what the block's dtype contract says)
        if img is not None:
            half = self.resolution // 2
            check_shape(img, [None, self.img_channels, half, half], 'synthesis block img')
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == 'skip':
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img + y if img is not None else y

        assert x.dtype == dtype
        assert img is None or img.dtype == torch.float32
        return x, img

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}'


def _channels_dict(resolutions, channel_base, channel_max):
    return {res: min(channel_base // res, channel_max) for res in resolutions}


def _fp16_resolution(img_resolution, num_fp16_res):
    # Mixed precision for the `num_fp16_res` highest resolutions, never below 8x8 (tiny maps gain
    # nothing and are where overflow would hurt most).
    return max(2 ** (int(np.log2(img_resolution)) + 1 - num_fp16_res), 8)


def _check_resolution(img_resolution, who):
    if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
        raise ValueError(f'{who}: img_resolution must be a power of two >= 4, got {img_resolution}')


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> img [N, img_channels, R, R].

    Channels at resolution r: min(channel_base // r, channel_max).
    """

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=4,
                 precision='fp32', **block_kwargs):
        super().__init__()
        _check_resolution(img_resolution, 'SynthesisNetwork')
        self.precision = check_precision(precision)
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.num_fp16_res = num_fp16_res
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = _channels_dict(self.block_resolutions, channel_base, channel_max)
        fp16_resolution = _fp16_resolution(img_resolution, num_fp16_res)

        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            is_last = (res == self.img_resolution)
            block = SynthesisBlock(in_channels, channels[res], w_dim=w_dim, resolution=res, img_channels=img_channels,
                                   is_last=is_last, use_fp16=(res >= fp16_resolution and num_fp16_res > 0),
                                   **block_kwargs)
            # Consecutive blocks share a w at the boundary: a block's toRGB uses the same w as the
            # next block's first conv, so only convs (plus the last toRGB) add ws.
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f'b{res}', block)

    def forward(self, ws, noise_mode='random', update_emas=False, **block_kwargs):
        check_shape(ws, [None, self.num_ws, self.w_dim], 'synthesis ws')
        ws = ws.to(torch.float32)
        block_ws = []
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            block_ws.append(ws.narrow(1, w_idx, block.num_conv + block.num_torgb))
            w_idx += block.num_conv

        x = img = None
        with training_autocast(self, ws.device, self.precision):  # precision='bf16': the training copy only
            for res, cur_ws in zip(self.block_resolutions, block_ws):
                block = getattr(self, f'b{res}')
                x, img = block(x, img, cur_ws, noise_mode=noise_mode, update_emas=update_emas, **block_kwargs)
        return img

    def extra_repr(self):
        return (f'w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, '
                f'img_channels={self.img_channels}, num_fp16_res={self.num_fp16_res}')


class Generator(nn.Module):
    """StyleGAN2 generator.

    Args:
        z_dim, c_dim, w_dim:   latent, label and intermediate latent sizes.
        img_resolution:        output resolution (power of two).
        img_channels:          output channels.
        mapping_kwargs:        MappingNetwork options (num_layers=8, lr_multiplier=0.01, ...).
        **synthesis_kwargs:    SynthesisNetwork / SynthesisBlock options: channel_base=32768,
                               channel_max=512, num_fp16_res=4, conv_clamp=256, architecture='skip',
                               fused_modconv_default=True, precision='fp32' (or 'bf16': the training copy's
                               synthesis under bfloat16 autocast; G_ema and evaluation stay float32), ...
    """

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, **synthesis_kwargs):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, noise_mode='random', update_emas=False,
                **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, update_emas=update_emas, **synthesis_kwargs)


# ----------------------------------------------------------------------------------------------
# Discriminator.


class DiscriminatorBlock(nn.Module):
    """One resolution of the discriminator: [fromRGB] + conv + downsampling conv (+ residual skip).

    x [N, I, r, r] (None for the first block), img [N, C, r, r] -> x [N, O, r/2, r/2],
    img (downsampled for 'skip', else None).
    """

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels, architecture='resnet',
                 activation='lrelu', resample_filter=[1, 3, 3, 1], conv_clamp=None, use_fp16=False,
                 fp16_channels_last=False):
        super().__init__()
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"discriminator architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        self.in_channels, self.tmp_channels, self.out_channels = in_channels, tmp_channels, out_channels
        self.resolution, self.img_channels = resolution, img_channels
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))

        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       conv_clamp=conv_clamp, channels_last=self.channels_last)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 conv_clamp=conv_clamp, channels_last=self.channels_last)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp,
                                 channels_last=self.channels_last)
        if architecture == 'resnet':
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, force_fp32=False):
        ref = x if x is not None else img
        if ref.device.type != 'cuda':
            force_fp32 = True
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format

        if x is not None:
            check_shape(x, [None, self.in_channels, self.resolution, self.resolution], 'discriminator block input')
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0 or self.architecture == 'skip':
            check_shape(img, [None, self.img_channels, self.resolution, self.resolution], 'discriminator input image')
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None

        if self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y + x
        else:
            x = self.conv0(x)
            x = self.conv1(x)

        assert x.dtype == dtype
        return x, img

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}'


class MinibatchStdLayer(nn.Module):
    """Appends the mean (over features and pixels) of the per-group standard deviation.

    x [N, C, H, W] -> [N, C + num_channels, H, W]. Samples are split into groups of `group_size`
    (the largest divisor of N not above it, so any batch size works); within a group the std over
    samples measures variety, which lets D detect mode collapse.
    """

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def group_size_for(self, batch_size):
        if self.group_size is None:
            return batch_size
        g = min(self.group_size, batch_size)
        while batch_size % g != 0:
            g -= 1
        return g

    def forward(self, x):
        N, C, H, W = x.shape
        G = self.group_size_for(N)
        F = self.num_channels
        if C % F != 0:
            raise ValueError(f'MinibatchStdLayer: channels ({C}) must be divisible by num_channels ({F})')
        c = C // F
        y = x.reshape(G, -1, F, c, H, W)  # [G, n, F, c, H, W]: sample i is in group i % n
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])  # [n, F]
        y = y.reshape(-1, F, 1, 1)
        y = y.repeat(G, 1, H, W)  # [N, F, H, W]
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self):
        return f'group_size={self.group_size}, num_channels={self.num_channels:d}'


class DiscriminatorEpilogue(nn.Module):
    """x [N, C, 4, 4] -> logits [N, 1]: mbstd, conv, fc, out; projection onto cmap when conditional."""

    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture='resnet', mbstd_group_size=4,
                 mbstd_num_channels=1, activation='lrelu', conv_clamp=None):
        super().__init__()
        self.in_channels, self.cmap_dim = in_channels, cmap_dim
        self.resolution, self.img_channels = resolution, img_channels
        self.architecture = architecture

        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap, force_fp32=False):
        del force_fp32  # the epilogue always runs in fp32
        check_shape(x, [None, self.in_channels, self.resolution, self.resolution], 'discriminator epilogue input')
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == 'skip':
            x = x + self.fromrgb(img.to(torch.float32))

        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)

        if self.cmap_dim > 0:
            check_shape(cmap, [x.shape[0], self.cmap_dim], 'discriminator cmap')
            # Projection discriminator (Miyato & Koyama 2018): logit = <features, embed(c)>.
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}'


class Discriminator(nn.Module):
    """StyleGAN2 discriminator (residual by default), img [N, C, R, R], c [N, c_dim] -> [N, 1].

    Args:
        c_dim:              label size (0: unconditional); labels enter by projection onto a
                            learned embedding (MappingNetwork without z) of size cmap_dim.
        architecture:       'resnet' (default), 'skip' or 'orig'.
        channel_base/max:   channels at resolution r = min(channel_base // r, channel_max).
        num_fp16_res:       blocks at the highest resolutions that run in fp16 (CUDA only).
        conv_clamp:         clamp conv outputs to +-conv_clamp (keeps fp16 in range).
        cmap_dim:           projection size (default: channels at 4x4).
        mbstd_group_size, mbstd_num_channels: minibatch standard-deviation layer.
    """

    def __init__(self, c_dim, img_resolution, img_channels, architecture='resnet', channel_base=32768,
                 channel_max=512, num_fp16_res=4, conv_clamp=256, cmap_dim=None, mbstd_group_size=4,
                 mbstd_num_channels=1, block_kwargs={}, mapping_kwargs={}, epilogue_kwargs={}):
        super().__init__()
        _check_resolution(img_resolution, 'Discriminator')
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels = _channels_dict(self.block_resolutions + [4], channel_base, channel_max)
        fp16_resolution = _fp16_resolution(img_resolution, num_fp16_res)

        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        self.cmap_dim = cmap_dim

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        for res in self.block_resolutions:
            in_channels = channels[res] if res < img_resolution else 0
            block = DiscriminatorBlock(in_channels, channels[res], channels[res // 2], resolution=res,
                                       use_fp16=(res >= fp16_resolution and num_fp16_res > 0),
                                       **block_kwargs, **common)
            setattr(self, f'b{res}', block)
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **mapping_kwargs)
        epilogue = dict(mbstd_group_size=mbstd_group_size, mbstd_num_channels=mbstd_num_channels)
        epilogue.update(epilogue_kwargs)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue, **common)

    def forward(self, img, c, update_emas=False, **block_kwargs):
        del update_emas
        check_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution], 'discriminator input')
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f'b{res}')(x, img, **block_kwargs)

        cmap = None
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f'discriminator: the model is conditional (c_dim={self.c_dim}) but c is None')
            cmap = self.mapping(None, c)
        return self.b4(x, img, cmap)

    def extra_repr(self):
        return f'c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}'
