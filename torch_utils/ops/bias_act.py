"""Fused bias + activation + gain + clamp: `y = clamp(act(x + b) * gain, -clamp, clamp)`.

Two implementations with identical semantics:
  impl='ref'  -- plain PyTorch ops; autograd gives gradients of any order.
  impl='cuda' -- one elementwise kernel (bias_act.cu) for the forward pass and for each of the first
                 and second derivatives; it saves memory by reading the derivative of the
                 piecewise-linear activations (linear/relu/lrelu) from the saved output y, and
                 recomputes act(s) from the saved input for the smooth ones.
impl='cuda' silently (one informational note per process) runs 'ref' when x is not a CUDA tensor or
the extension cannot be built, so CPU-only machines need no special casing.
"""

import math
import os
from typing import Optional

import torch

from .. import custom_ops

# Per activation: the default alpha and gain, the CUDA kernel code (bias_act.h), and which saved
# tensor the CUDA backward reads ('y' = output, 'x' = input). The defaults are StyleGAN2-ADA's and
# StyleGAN3's (sqrt(2) for relu, lrelu and swish), so that layers ported from there keep their
# signal scale.
_ACTIVATIONS = {
    "linear":   dict(def_alpha=0.0, def_gain=1.0,          cuda_idx=1, ref="y"),
    "relu":     dict(def_alpha=0.0, def_gain=math.sqrt(2), cuda_idx=2, ref="y"),
    "lrelu":    dict(def_alpha=0.2, def_gain=math.sqrt(2), cuda_idx=3, ref="y"),
    "tanh":     dict(def_alpha=0.0, def_gain=1.0,          cuda_idx=4, ref="x"),
    "sigmoid":  dict(def_alpha=0.0, def_gain=1.0,          cuda_idx=5, ref="x"),
    "elu":      dict(def_alpha=1.0, def_gain=1.0,          cuda_idx=6, ref="x"),
    "selu":     dict(def_alpha=0.0, def_gain=1.0,          cuda_idx=7, ref="x"),
    "softplus": dict(def_alpha=0.0, def_gain=1.0,          cuda_idx=8, ref="x"),
    "swish":    dict(def_alpha=0.0, def_gain=math.sqrt(2), cuda_idx=9, ref="x"),
}
activation_names = tuple(_ACTIVATIONS)


def _spec(act: str) -> dict:
    if act not in _ACTIVATIONS:
        raise ValueError(f"bias_act: unknown act {act!r}; expected one of {activation_names}")
    return _ACTIVATIONS[act]


def default_gain(act: str) -> float:
    """The gain bias_act applies to `act` when called with gain=None."""
    return float(_spec(act)["def_gain"])


_plugin = None  # The compiled extension once built; tests swap in an emulation.


def _get_plugin():
    """Return the compiled extension, or None (once-only note) if it cannot be built."""
    global _plugin
    if _plugin is None:
        _plugin = custom_ops.get_plugin_or_none(
            "bias_act_plugin", sources=["bias_act.cpp", "bias_act.cu"], headers=["bias_act.h"],
            source_dir=os.path.dirname(os.path.abspath(__file__)))
    return _plugin


def _resolve(act: str, alpha: Optional[float], gain: Optional[float], clamp: Optional[float]):
    spec = _spec(act)
    alpha = float(spec["def_alpha"] if alpha is None else alpha)
    gain = float(spec["def_gain"] if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)  # Negative means "no clamping".
    if act == "lrelu" and alpha < 0:
        raise ValueError(f"bias_act: lrelu needs alpha >= 0, got {alpha}")
    return spec, alpha, gain, clamp


def _check_args(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, impl: str) -> int:
    if impl not in ("cuda", "ref"):
        raise ValueError(f"bias_act: impl must be 'cuda' or 'ref', got {impl!r}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("bias_act: x must be a floating-point tensor")
    if x.ndim == 0:
        raise ValueError("bias_act: x must have at least one dimension")
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"bias_act: dim={dim} out of range for x of shape {list(x.shape)}")
    dim = dim % x.ndim
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[dim]):
        raise ValueError(f"bias_act: b must have shape [{x.shape[dim]}] (x.shape[{dim}]), got {list(b.shape)}")
    return dim


def bias_act(
    x: torch.Tensor,
    b: Optional[torch.Tensor] = None,
    dim: int = 1,
    act: str = "linear",
    alpha: Optional[float] = None,
    gain: Optional[float] = None,
    clamp: Optional[float] = None,
    impl: str = "cuda",
) -> torch.Tensor:
    """Add bias `b` along `dim`, apply `act`, scale by `gain`, clamp to [-clamp, clamp].

    Args:
        x:     Input of any shape, e.g. [N, C, H, W] or [N, C].
        b:     Bias [x.shape[dim]] or None.
        dim:   Dimension of x that b runs along (default 1, the channel axis).
        act:   One of linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish.
        alpha: Shape parameter (lrelu slope, default 0.2; elu scale, default 1); ignored otherwise.
        gain:  Output scale; default sqrt(2) for relu/lrelu/swish, 1 for the rest.
        clamp: Clamp applied *after* the gain, or None for no clamping.
        impl:  'cuda' (falls back to 'ref' off-GPU) or 'ref'.
    Returns:
        Tensor of the shape and dtype of x (contiguous for impl='cuda').
    """
    dim = _check_args(x, b, dim, impl)
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    if impl == "cuda" and custom_ops.cuda_kernel_usable(x, _get_plugin):
        return _bias_act_cuda(x, b, dim, act, alpha, gain, clamp)
    return _bias_act_ref(x, b, dim, act, alpha, gain, clamp)


# ----------------------------------------------------------------------------------------------
# Reference implementation.


def _activation_ref(s: torch.Tensor, act: str, alpha: float) -> torch.Tensor:
    F = torch.nn.functional
    if act == "linear":
        return s
    if act == "relu":
        return F.relu(s)
    if act == "lrelu":
        return F.leaky_relu(s, alpha)
    if act == "tanh":
        return torch.tanh(s)
    if act == "sigmoid":
        return torch.sigmoid(s)
    if act == "elu":
        return F.elu(s, alpha)
    if act == "selu":
        return F.selu(s)
    if act == "softplus":
        return F.softplus(s)
    if act == "swish":
        return s * torch.sigmoid(s)
    raise AssertionError(act)


def _bias_act_ref(x, b, dim, act, alpha, gain, clamp):
    if b is not None:
        x = x + b.to(x.dtype).reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    y = _activation_ref(x, act, alpha)
    if gain != 1:
        y = y * gain
    if clamp >= 0:
        y = y.clamp(-clamp, clamp)
    return y


# ----------------------------------------------------------------------------------------------
# CUDA implementation. Two autograd Functions: the forward op, and its gradient op whose own
# backward uses the kernel's second-derivative mode, so double backward (R1, path length
# regularization) runs on the kernel too. Third-order gradients are not supported.

_null = {}


def _empty(ref: torch.Tensor) -> torch.Tensor:
    key = (ref.device, ref.dtype)
    if key not in _null:
        _null[key] = torch.empty([0], device=ref.device, dtype=ref.dtype)
    return _null[key]


_function_cache = {}


def _bias_act_cuda(x, b, dim, act, alpha, gain, clamp):
    key = (dim, act, alpha, gain, clamp)
    if key not in _function_cache:
        _function_cache[key] = _make_cuda_function(dim, act, alpha, gain, clamp)
    if b is not None and (b.dtype != x.dtype or b.device != x.device):
        b = b.to(device=x.device, dtype=x.dtype)
    # Made contiguous outside the Function so that the copy stays on the autograd graph.
    return _function_cache[key].apply(x.contiguous(), None if b is None else b.contiguous())


def _make_cuda_function(dim, act, alpha, gain, clamp):
    """Build the autograd Function for one configuration (cached: class creation is not free)."""
    spec = _ACTIVATIONS[act]
    code = spec["cuda_idx"]
    # linear without clamp needs no saved tensor at all; relu/lrelu/clamped linear need y; the
    # smooth activations need x (they also have a non-zero second derivative).
    need_x = spec["ref"] == "x"
    need_y = spec["ref"] == "y" and (act != "linear" or clamp >= 0)
    has_2nd = need_x

    def kernel(inp, bias, xref, yref, grad):
        return _plugin.bias_act(inp, bias, xref, yref, dim, code, grad, alpha, gain, clamp)

    class BiasActGrad(torch.autograd.Function):
        """dx = dy * gain * act'(x + b) * mask, as a function of (dy, x, b, y)."""

        @staticmethod
        def forward(ctx, dy, x_, b_, y_):
            dx = kernel(dy.contiguous(), b_, x_, y_, 1)
            ctx.save_for_backward(dy if has_2nd else _empty(dy), x_, b_, y_)
            return dx

        @staticmethod
        def backward(ctx, d_dx):
            dy, x_, b_, y_ = ctx.saved_tensors
            d_dx = d_dx.contiguous()
            d_dy = d_x = d_b = None
            if ctx.needs_input_grad[0]:
                d_dy = BiasActGrad.apply(d_dx, x_, b_, y_)
            if has_2nd and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
                d_x = _SecondOrder.apply(d_dx * dy, x_, b_, y_)
                if ctx.needs_input_grad[2]:
                    d_b = d_x.sum([i for i in range(d_x.ndim) if i != dim])
            return d_dy, d_x, d_b, None

    class _SecondOrder(torch.autograd.Function):
        """d_x = q * gain * act''(x + b) * mask; not differentiable any further."""

        @staticmethod
        def forward(ctx, q, x_, b_, y_):
            return kernel(q.contiguous(), b_, x_, y_, 2)

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, *grads):
            raise RuntimeError("bias_act (impl='cuda'): gradients of order > 2 are not supported; use impl='ref'")

    class BiasAct(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x_, b_):
            b_ = b_ if b_ is not None else _empty(x_)
            y_ = kernel(x_, b_, _empty(x_), _empty(x_), 0)
            ctx.save_for_backward(x_ if need_x else _empty(x_), b_, y_ if need_y else _empty(x_))
            ctx.has_bias = b_.numel() > 0
            return y_

        @staticmethod
        def backward(ctx, dy):
            x_, b_, y_ = ctx.saved_tensors
            dx = db = None
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                dx = BiasActGrad.apply(dy, x_, b_, y_)
            if ctx.needs_input_grad[1] and ctx.has_bias:
                db = dx.sum([i for i in range(dx.ndim) if i != dim])
            return dx, db

    return BiasAct
