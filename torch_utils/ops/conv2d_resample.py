"""2D convolution with optional up/downsampling, as used by StyleGAN2's (modulated) conv layers.

Definition (what every code path below computes, up to floating-point rounding):
    p = padding, extended by the filter support needed for resampling:
        up > 1:   x0 += (f_w + up - 1) // 2,    x1 += (f_w - up) // 2
        down > 1: x0 += (f_w - down + 1) // 2,  x1 += (f_w - down) // 2     (same for y)
    t = upfirdn2d(x, f if up > 1 else None, up=up, padding=p, gain=up**2)   # upsample + pad
    t = conv2d(t, w, groups=groups)                                        # 'valid' convolution
    y = upfirdn2d(t, f, down=down) if down > 1 else t                      # low-pass + decimate
For a k x k kernel with padding k // 2 this maps H to H * up // down, like an ordinary 'same' conv.

The paths avoid computing anything that is thrown away: a transposed convolution does the zero
insertion for up > 1, a strided convolution does the decimation for down > 1, and 1x1 kernels are
applied after downsampling.
"""

from typing import Optional

import torch
import torch.nn.functional as F

from . import conv2d_gradfix
from . import upfirdn2d as _upfirdn2d
from .upfirdn2d import _get_filter_size, _parse_padding


def _conv2d(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True, weight_grad_optional=True):
    """conv2d / conv_transpose2d where flip_weight=False means true convolution (kernel flipped).

    Args:
        x: [N, C_in, H, W].  w: [C_out, C_in // groups, k_h, k_w] (conv2d layout, also when transposing).
    Runs through conv2d_gradfix, so conv2d_gradfix.no_weight_gradients() applies unless
    weight_grad_optional is False.
    """
    opt = dict(groups=groups, weight_grad_optional=weight_grad_optional)
    if not flip_weight:
        w = w.flip([2, 3])
    if not transpose:
        return conv2d_gradfix.conv2d(x, w, stride=stride, padding=padding, **opt)
    # conv_transpose2d wants [C_in, C_out // groups, k_h, k_w]. Transposing convolves rather than
    # correlates, so flip the kernel to keep conv2d's (correlation) semantics.
    c_out, c_in_g, kh, kw = w.shape
    w = w.reshape(groups, c_out // groups, c_in_g, kh, kw).transpose(1, 2)
    w = w.reshape(groups * c_in_g, c_out // groups, kh, kw)
    return conv2d_gradfix.conv_transpose2d(x, w.flip([2, 3]), stride=stride, padding=padding, **opt)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: Optional[torch.Tensor] = None,
    up: int = 1,
    down: int = 1,
    padding=0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
    impl: str = "cuda",
    weight_grad_optional: bool = True,
) -> torch.Tensor:
    """Convolve x with w, upsampling before / downsampling after with filter f (see module docstring).

    Args:
        x:           [N, C_in, H, W].
        w:           [C_out, C_in // groups, k_h, k_w], same dtype as x.
        f:           Resampling filter from upfirdn2d.setup_filter, or None (box of size 1, i.e. plain
                     zero insertion / decimation; normally pass e.g. setup_filter([1, 3, 3, 1])).
        up, down:    Integer factors >= 1.
        padding:     int, [x, y] or [x0, x1, y0, y1], with respect to the upsampled image.
        groups:      As in torch.nn.functional.conv2d.
        flip_weight: True = correlation (torch's conv2d semantics), False = true convolution.
        flip_filter: Passed to upfirdn2d (False = convolve with f).
        impl:        upfirdn2d implementation ('cuda' falls back to 'ref' off-GPU).
        weight_grad_optional: False when w is computed from what a no_weight_gradients() backward
                     differentiates for (fused modulation); see conv2d_gradfix.
    Returns:
        [N, C_out, H_out, W_out]; for padding = k // 2 and odd k: H_out = H * up // down.
    """
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError(f"conv2d_resample: x must be [N, C, H, W], got {getattr(x, 'shape', type(x))}")
    if not (isinstance(w, torch.Tensor) and w.ndim == 4 and w.dtype == x.dtype):
        raise ValueError("conv2d_resample: w must be a [C_out, C_in // groups, k_h, k_w] tensor of x's dtype")
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups != 0:
        raise ValueError(f"conv2d_resample: x {list(x.shape)} and w {list(w.shape)} do not match for groups={groups}")
    if not (isinstance(up, int) and isinstance(down, int) and up >= 1 and down >= 1):
        raise ValueError(f"conv2d_resample: up and down must be ints >= 1, got up={up!r}, down={down!r}")
    _, _, kh, kw = w.shape
    fw, fh = _get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    # 1x1 kernel, downsampling only: the conv mixes channels pixel-wise, so it commutes with the
    # (per-channel) resampling; run it on the smaller image.
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = _upfirdn2d.upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter, impl=impl)
        return _conv2d(x, w, groups=groups, flip_weight=flip_weight, weight_grad_optional=weight_grad_optional)

    # Upsampling: conv_transpose2d with stride `up` is zero insertion followed by a full
    # convolution with w; the filter then takes the remaining padding (negative values crop the
    # full-convolution border), so nothing between the inserted zeros is computed by the conv.
    if up > 1:
        x = _conv2d(x, w, stride=up, groups=groups, transpose=True, flip_weight=flip_weight,
                    weight_grad_optional=weight_grad_optional)
        pad = [px0 - (kw - 1), px1 - (kw - up), py0 - (kh - 1), py1 - (kh - up)]
        x = _upfirdn2d.upfirdn2d(x, f, padding=pad, gain=up ** 2, flip_filter=flip_filter, impl=impl)
        if down > 1:
            x = _upfirdn2d.upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl=impl)
        return x

    # Downsampling: filtering and convolution commute, so filter first and let a strided conv do
    # the decimation (a quarter of the conv work for down=2).
    if down > 1:
        x = _upfirdn2d.upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter, impl=impl)
        return _conv2d(x, w, stride=down, groups=groups, flip_weight=flip_weight,
                       weight_grad_optional=weight_grad_optional)

    # Plain convolution.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv2d(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight,
                       weight_grad_optional=weight_grad_optional)
    x = F.pad(x, [px0, px1, py0, py1])
    return _conv2d(x, w, groups=groups, flip_weight=flip_weight, weight_grad_optional=weight_grad_optional)
