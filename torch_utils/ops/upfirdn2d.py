"""upfirdn2d: upsample by zero insertion, pad, FIR-filter, downsample -- the resampling primitive of
StyleGAN2-style generators and discriminators -- plus `filter2d`, `upsample2d`, `downsample2d`.

Definition (per channel, independently along x and y):
  1. Upsample: insert `up - 1` zeros after every input sample  (H -> H * up).
  2. Pad with zeros by [x0, x1, y0, y1]; negative values crop.
  3. Convolve with f (true convolution, i.e. f is flipped; `flip_filter=True` gives correlation),
     keeping only fully-overlapping positions ('valid' mode), and multiply by `gain`.
  4. Downsample: keep every `down`-th sample, starting with the first.
  Output size: H_out = (H * up + y0 + y1 - f_h + down) // down (same for W).

The operator is linear in x, and its adjoint is again an upfirdn2d: with the filter flipped, up and
down swapped, and padding [f_w - x0 - 1, W * up - W_out * down + x0 - up + 1, ...] (same for y).
Both implementations compute gradients this way, so double backward works and stays on the kernel.
  impl='ref'  -- PyTorch conv_transpose2d (upsampling) / pad / strided conv2d (downsampling).
  impl='cuda' -- our kernel (upfirdn2d.cu); 1D (separable) filters run as one x pass and one y pass.
impl='cuda' runs 'ref' when x is not on a CUDA device or the extension cannot be built.
"""

import os
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .. import custom_ops

IntOrPair = Union[int, Sequence[int]]

_plugin = None  # The compiled extension once built; tests swap in an emulation.


def _get_plugin():
    """Return the compiled extension, or None (once-only note) if it cannot be built."""
    global _plugin
    if _plugin is None:
        _plugin = custom_ops.get_plugin_or_none(
            "upfirdn2d_plugin", sources=["upfirdn2d.cpp", "upfirdn2d.cu"], headers=["upfirdn2d.h"],
            source_dir=os.path.dirname(os.path.abspath(__file__)))
    return _plugin


# ----------------------------------------------------------------------------------------------
# Argument parsing.


def _parse_scaling(scaling: IntOrPair, name: str) -> Tuple[int, int]:
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    try:
        sx, sy = (int(s) for s in scaling)
    except (TypeError, ValueError):
        raise ValueError(f"upfirdn2d: {name} must be an int or a pair (x, y), got {scaling!r}") from None
    if sx < 1 or sy < 1:
        raise ValueError(f"upfirdn2d: {name} must be >= 1, got {scaling!r}")
    return sx, sy


def _parse_padding(padding: IntOrPair) -> Tuple[int, int, int, int]:
    if isinstance(padding, int):
        padding = [padding, padding]
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    if len(padding) != 4:
        raise ValueError(f"upfirdn2d: padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding!r}")
    return tuple(padding)


def _get_filter_size(f: Optional[torch.Tensor]) -> Tuple[int, int]:
    """Return (f_w, f_h) of a filter from setup_filter (None counts as 1x1)."""
    if f is None:
        return 1, 1
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2):
        raise ValueError("upfirdn2d: f must be None or a 1D [taps] / 2D [f_h, f_w] tensor (see setup_filter)")
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


def setup_filter(
    f,
    device: Union[torch.device, str] = torch.device("cpu"),
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: Optional[bool] = None,
) -> torch.Tensor:
    """Turn filter taps into the float32 tensor that upfirdn2d expects.

    Args:
        f:           None (identity), a scalar, a 1D list/array of taps [T] or a 2D array [f_h, f_w].
        device:      Device of the result.
        normalize:   Scale so that the (2D) filter sums to 1.
        flip_filter: Store the filter flipped (upfirdn2d's flip_filter then un-flips it).
        gain:        Overall gain; for separable filters each 1D factor gets sqrt(gain).
        separable:   Keep a 1D filter 1D (applied along x then y) instead of expanding it to the
                     outer product. Default: separable iff 1D with >= 8 taps (larger ones are
                     cheaper as two passes).
    Returns:
        float32 tensor [T] (separable) or [f_h, f_w].
    """
    if f is None:
        f = 1
    # Computed on the CPU whatever the default device: a network built under `with torch.device('meta')` (shape
    # checks without memory) still gets a real, checked filter.
    f = torch.as_tensor(f, dtype=torch.float32, device="cpu")
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"setup_filter: f must be a scalar, a 1D or a 2D array, got shape {list(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = f[:, None] * f[None, :]  # Outer product (ger).
    if separable and f.ndim != 1:
        raise ValueError("setup_filter: separable=True needs a 1D filter")
    if normalize:
        # For a separable filter this makes each 1D factor, and hence their outer product, sum to 1.
        total = f.sum()
        if total == 0:
            raise ValueError("setup_filter: cannot normalize a filter whose taps sum to zero")
        f = f / total
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


# ----------------------------------------------------------------------------------------------
# Public ops.


def upfirdn2d(
    x: torch.Tensor,
    f: Optional[torch.Tensor],
    up: IntOrPair = 1,
    down: IntOrPair = 1,
    padding: IntOrPair = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "cuda",
) -> torch.Tensor:
    """Upsample, pad, filter and downsample a batch of images (see the module docstring).

    Args:
        x:           [N, C, H, W] floating-point images.
        f:           Filter from setup_filter: [f_h, f_w], separable [T], or None (1x1 identity).
        up, down:    Integer factor or (x, y) pair, >= 1.
        padding:     int, [x, y] or [x0, x1, y0, y1] (in upsampled pixels; negative crops).
        flip_filter: False = convolution (default), True = correlation.
        gain:        Scale applied to the output.
        impl:        'cuda' (falls back to 'ref' off-GPU) or 'ref'.
    Returns:
        [N, C, H_out, W_out] with H_out = (H * up_y + y0 + y1 - f_h + down_y) // down_y.
    """
    if impl not in ("cuda", "ref"):
        raise ValueError(f"upfirdn2d: impl must be 'cuda' or 'ref', got {impl!r}")
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"upfirdn2d: x must be a floating-point [N, C, H, W] tensor, got "
                         f"{getattr(x, 'shape', type(x))}")
    fw, fh = _get_filter_size(f)
    upx, upy = _parse_scaling(up, "up")
    downx, downy = _parse_scaling(down, "down")
    px0, px1, py0, py1 = _parse_padding(padding)
    out_w = (x.shape[3] * upx + px0 + px1 - fw + downx) // downx
    out_h = (x.shape[2] * upy + py0 + py1 - fh + downy) // downy
    if out_w < 1 or out_h < 1:
        raise ValueError(
            f"upfirdn2d: empty output ({out_h}x{out_w}) for input {x.shape[2]}x{x.shape[3]}, filter {fh}x{fw}, "
            f"up=({upx},{upy}), padding={[px0, px1, py0, py1]}"
        )
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    elif f.device != x.device:
        f = f.to(x.device)
    if f.requires_grad:
        raise ValueError("upfirdn2d: gradients w.r.t. the filter are not supported; pass f.detach()")
    cfg = ((upx, upy), (downx, downy), (px0, px1, py0, py1), bool(flip_filter), float(gain))
    if impl == "cuda" and custom_ops.cuda_kernel_usable(x, _get_plugin):
        return _UpFirDn2dCuda.apply(x, f, cfg)
    return _UpFirDn2dRef.apply(x, f, cfg)


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl="cuda"):
    """Filter [N, C, H, W] images with f, keeping the size ('same' padding), plus extra `padding`.

    Returns [N, C, H + y0 + y1, W + x0 + x1].
    """
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl="cuda"):
    """Upsample [N, C, H, W] images by `up` with interpolation filter f.

    The gain is multiplied by up_x * up_y to make up for the inserted zeros, so a normalized f
    preserves the mean. Returns [N, C, H * up_y + y0 + y1, W * up_x + x0 + x1].
    """
    upx, upy = _parse_scaling(up, "up")
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl="cuda"):
    """Downsample [N, C, H, W] images by `down` after low-pass filtering with f.

    Returns [N, C, (H + y0 + y1) // down_y, (W + x0 + x1) // down_x].
    """
    downx, downy = _parse_scaling(down, "down")
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


# ----------------------------------------------------------------------------------------------
# Gradient: the adjoint configuration.


def _adjoint(cfg, f, in_shape, out_shape):
    """Configuration of the upfirdn2d that computes dx from dy (see the module docstring)."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1), flip_filter, gain = cfg
    fw, fh = _get_filter_size(f)
    in_h, in_w = in_shape[2], in_shape[3]
    out_h, out_w = out_shape[2], out_shape[3]
    pad = (
        fw - px0 - 1,
        in_w * upx - out_w * downx + px0 - upx + 1,
        fh - py0 - 1,
        in_h * upy - out_h * downy + py0 - upy + 1,
    )
    return ((downx, downy), (upx, upy), pad, not flip_filter, gain)


def _upfirdn2d_function(forward_impl, name):
    """An autograd Function around `forward_impl(x, f, cfg)`. upfirdn2d is linear in x, so its backward is the
    same op in the adjoint configuration, re-entering the Function (which makes it differentiable twice)."""

    class UpFirDn2d(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, f, cfg):
            y = forward_impl(x, f, cfg)
            ctx.save_for_backward(f)
            ctx.cfg, ctx.in_shape, ctx.out_shape = cfg, x.shape, y.shape
            return y

        @staticmethod
        def backward(ctx, dy):
            (f,) = ctx.saved_tensors
            dx = None
            if ctx.needs_input_grad[0]:
                dx = UpFirDn2d.apply(dy, f, _adjoint(ctx.cfg, f, ctx.in_shape, ctx.out_shape))
            return dx, None, None

    UpFirDn2d.__name__ = UpFirDn2d.__qualname__ = name
    return UpFirDn2d


def _upfirdn2d_ref_forward(x, f, cfg):
    (upx, upy), (downx, downy), (px0, px1, py0, py1), flip_filter, gain = cfg
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))  # conv2d correlates; flip for a true convolution.
    if f.ndim == 2:
        return _ref_pass(x, f * gain, upx, upy, downx, downy, px0, px1, py0, py1)
    # Separable: x pass (with the gain), then y pass.
    x = _ref_pass(x, (f * gain)[None, :], upx, 1, downx, 1, px0, px1, 0, 0)
    return _ref_pass(x, f[:, None], 1, upy, 1, downy, 0, 0, py0, py1)


def _ref_pass(x, g, upx, upy, downx, downy, px0, px1, py0, py1):
    """One upfirdn2d pass of x [N, C, H, W] with the correlation kernel g [f_h, f_w], every channel
    filtered on its own."""
    fh, fw = g.shape
    C = x.shape[1]
    # A depthwise (groups=C) conv, not N*C single-channel images: oneDNN runs the latter 3-9x
    # slower on CPU, and the sums are the same up to float rounding.
    g = g[None, None].expand(C, 1, fh, fw)
    if upx == 1 and upy == 1:
        x = F.pad(x, [px0, px1, py0, py1])  # Negative values crop.
        return F.conv2d(x, g, stride=(downy, downx), groups=C)  # Strided conv = filter, then decimate.
    # conv_transpose2d is zero insertion + full convolution without multiplying the inserted zeros
    # (about up_x * up_y times fewer MACs than filtering the zero-inserted image); its output
    # starts f - 1 samples before the upsampled image, so shift by the requested padding.
    x = F.conv_transpose2d(x, g.flip([2, 3]), stride=(upy, upx), groups=C)
    x = F.pad(x, [px0 - fw + 1, px1 + upx - fw, py0 - fh + 1, py1 + upy - fh])
    return x[:, :, ::downy, ::downx]


def _upfirdn2d_cuda_forward(x, f, cfg):
    (upx, upy), (downx, downy), (px0, px1, py0, py1), flip_filter, gain = cfg
    f = f.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))  # The kernel correlates.
    if f.ndim == 2:
        return _plugin.upfirdn2d(x, (f * gain).contiguous(), upx, upy, downx, downy, px0, px1, py0, py1)
    # Separable: x pass (with the gain), then y pass.
    x = _plugin.upfirdn2d(x, (f * gain)[None, :].contiguous(), upx, 1, downx, 1, px0, px1, 0, 0)
    return _plugin.upfirdn2d(x, f[:, None].contiguous(), 1, upy, 1, downy, 0, 0, py0, py1)


# Side by side: the same Function over the PyTorch reference and over our CUDA kernel.
_UpFirDn2dRef = _upfirdn2d_function(_upfirdn2d_ref_forward, "_UpFirDn2dRef")
_UpFirDn2dCuda = _upfirdn2d_function(_upfirdn2d_cuda_forward, "_UpFirDn2dCuda")
