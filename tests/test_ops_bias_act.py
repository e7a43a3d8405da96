"""bias_act against elementwise numpy formulas, gradient checks, and CUDA-vs-ref (on GPU machines)."""

import logging
import math

import numpy as np
import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act as B

SELU_L, SELU_A = 1.0507009873554805, 1.6732632423543772


def _np_act(s, act, alpha):
    """Elementwise activation formulas, written out independently of torch."""
    if act == "linear":
        return s
    if act == "relu":
        return np.maximum(s, 0)
    if act == "lrelu":
        return np.where(s > 0, s, alpha * s)
    if act == "tanh":
        return np.tanh(s)
    if act == "sigmoid":
        return 1 / (1 + np.exp(-s))
    if act == "elu":
        return np.where(s > 0, s, alpha * (np.exp(s) - 1))
    if act == "selu":
        return SELU_L * np.where(s > 0, s, SELU_A * (np.exp(s) - 1))
    if act == "softplus":
        return np.log1p(np.exp(s))
    if act == "swish":
        return s / (1 + np.exp(-s))
    raise AssertionError(act)


DEFAULTS = {  # act: (alpha, gain) as in StyleGAN2-ADA / StyleGAN3.
    "linear": (0, 1), "relu": (0, math.sqrt(2)), "lrelu": (0.2, math.sqrt(2)), "tanh": (0, 1), "sigmoid": (0, 1),
    "elu": (1, 1), "selu": (0, 1), "softplus": (0, 1), "swish": (0, math.sqrt(2)),
}


def _np_bias_act(x, b, dim, act, alpha, gain, clamp):
    x = x.numpy().astype(np.float64)
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.numpy().astype(np.float64).reshape(shape)
    y = _np_act(x, act, alpha) * gain
    if clamp is not None:
        y = np.clip(y, -clamp, clamp)
    return y


@pytest.mark.parametrize("act", B.activation_names)
@pytest.mark.parametrize("variant", ["defaults", "custom", "clamp", "dim"])
def test_ref_matches_formulas(act, variant):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, 2, dtype=torch.float64) * 3
    b = torch.randn(5, dtype=torch.float64)
    dim, alpha, gain, clamp = 1, None, None, None
    if variant == "custom":
        alpha, gain = 0.3, 0.7
    elif variant == "clamp":
        gain, clamp = 2.0, 0.5
    elif variant == "dim":
        dim, b = 3, torch.randn(2, dtype=torch.float64)
    exp_alpha = DEFAULTS[act][0] if alpha is None else alpha
    exp_gain = DEFAULTS[act][1] if gain is None else gain
    expect = _np_bias_act(x, b, dim, act, exp_alpha, exp_gain, clamp)
    for impl in ("ref", "cuda"):  # 'cuda' falls back to 'ref' on CPU tensors.
        y = B.bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl=impl)
        assert y.shape == x.shape and y.dtype == x.dtype
        np.testing.assert_allclose(y.numpy(), expect, rtol=1e-10, atol=1e-12)
    if clamp is not None:
        assert y.abs().max() <= clamp and (y.abs() == clamp).any()  # Clamped after the gain.


@pytest.mark.parametrize("act", B.activation_names)
def test_defaults_are_stylegans(act):
    """gain=None / alpha=None give StyleGAN2-ADA's and StyleGAN3's defaults, on every code path."""
    alpha, gain = DEFAULTS[act]
    assert B.default_gain(act) == gain
    x = torch.linspace(-4, 4, 41, dtype=torch.float64).reshape(1, 41)
    expect = _np_act(x.numpy(), act, alpha) * gain
    np.testing.assert_allclose(B.bias_act(x, act=act, impl="ref").numpy(), expect, rtol=1e-12, atol=1e-12)
    B._function_cache.clear()
    saved = B._plugin
    B._plugin = _EmulatedBiasActPlugin  # the impl='cuda' autograd Functions, with the kernel emulated on CPU
    try:
        np.testing.assert_allclose(B._bias_act_cuda(x, None, 1, act, *B._resolve(act, None, None, None)[1:]).numpy(),
                                   expect, rtol=1e-12, atol=1e-12)
    finally:
        B._plugin = saved
        B._function_cache.clear()
    if torch.cuda.is_available() and B._get_plugin() is not None:
        y = B.bias_act(x.cuda().float(), act=act, impl="cuda")
        np.testing.assert_allclose(y.cpu().double().numpy(), expect, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown act"):
        B.default_gain("gelu")


def test_no_bias_negative_dim_and_float32():
    x = torch.randn(4, 6)
    b = torch.randn(6)
    torch.testing.assert_close(B.bias_act(x, b, dim=-1, act="lrelu"), B.bias_act(x, b, dim=1, act="lrelu"))
    y = B.bias_act(x, act="relu")
    torch.testing.assert_close(y, torch.relu(x) * math.sqrt(2))
    assert B.bias_act(x.half(), b.half(), act="lrelu", impl="ref").dtype == torch.float16


def _safe_inputs(act, gain, clamp, shape=(2, 3, 3), seed=0):
    """x, b in float64 with x + b away from activation kinks and |y| away from the clamp level,
    so that finite differences are valid."""
    rng = np.random.RandomState(seed)
    b = rng.randn(shape[1])
    s = rng.uniform(0.15, 1.5, size=shape) * rng.choice([-1, 1], size=shape)
    spec_alpha = DEFAULTS[act][0]
    for _ in range(100):
        y = np.abs(_np_act(s, act, spec_alpha) * gain)
        bad = np.abs(y - clamp) < 0.05 if clamp is not None else np.zeros_like(s, bool)
        if not bad.any():
            break
        s[bad] = rng.uniform(0.15, 1.5, size=bad.sum()) * rng.choice([-1, 1], size=bad.sum())
    x = s - b.reshape(1, -1, 1)
    return (torch.tensor(x, requires_grad=True), torch.tensor(b, requires_grad=True))


@pytest.mark.parametrize("act", B.activation_names)
@pytest.mark.parametrize("clamp", [None, 0.8])
def test_ref_gradcheck_and_gradgradcheck(act, clamp):
    gain = DEFAULTS[act][1]
    x, b = _safe_inputs(act, gain, clamp)
    fn = lambda x_, b_: B.bias_act(x_, b_, act=act, clamp=clamp, impl="ref")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, b), fast_mode=True)


def test_bad_arguments_raise_clear_errors():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="unknown act"):
        B.bias_act(x, act="gelu")
    with pytest.raises(ValueError, match=r"b must have shape \[3\]"):
        B.bias_act(x, torch.randn(4))
    with pytest.raises(ValueError, match="impl"):
        B.bias_act(x, impl="triton")
    with pytest.raises(ValueError, match="dim"):
        B.bias_act(x, dim=2)
    with pytest.raises(ValueError, match="alpha >= 0"):
        B.bias_act(x, act="lrelu", alpha=-0.1)


def test_cpu_fallback_notes_once(caplog):
    custom_ops._noted.discard("cpu-fallback")
    x, b = torch.randn(2, 4, 3), torch.randn(4)
    with caplog.at_level(logging.INFO, logger="torch_utils.ops"):
        outs = [B.bias_act(x, b, act="lrelu", impl="cuda") for _ in range(3)]
    assert len([r for r in caplog.records if "reference" in r.getMessage()]) == 1
    torch.testing.assert_close(outs[0], B.bias_act(x, b, act="lrelu", impl="ref"))


# ----------------------------------------------------------------------------------------------
# CUDA kernel against the reference (GPU machines only).

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to run the bias_act kernel")


def _grads_up_to_second(impl, x, b, dy, ddx, ddb, _fn=None, **kw):
    """Forward output, first-order grads (dx, db), and the second-order vector-Jacobian products of
    (dx, db) with (ddx, ddb) w.r.t. x, b and dy. `_fn` calls the CUDA-path internals directly."""
    x = x.detach().requires_grad_()
    b = b.detach().requires_grad_()
    dy = dy.detach().requires_grad_()
    if _fn is None:
        y = B.bias_act(x, b, impl=impl, **kw)
    else:
        _, alpha, gain, clamp = B._resolve(kw["act"], None, None, kw.get("clamp"))
        y = _fn(x, b, 1, kw["act"], alpha, gain, clamp)
    dx, db = torch.autograd.grad(y, [x, b], dy, create_graph=True)
    second = torch.autograd.grad([dx, db], [x, b, dy], [ddx, ddb], allow_unused=True)
    second = [torch.zeros_like(t) if g is None else g for g, t in zip(second, [x, b, dy])]
    return [y, dx, db, *second]


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("act", B.activation_names)
@pytest.mark.parametrize("clamp", [None, 0.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_matches_ref(act, clamp, dtype):
    assert B._get_plugin() is not None, "bias_act CUDA extension failed to build"
    gain = DEFAULTS[act][1]
    x, b = _safe_inputs(act, gain, clamp, shape=(4, 8, 37), seed=1)
    x, b = x.detach().cuda().to(dtype), b.detach().cuda().to(dtype)
    g = torch.Generator(device="cuda").manual_seed(0)
    dy = torch.randn(x.shape, device="cuda", dtype=dtype, generator=g)
    ddx = torch.randn(x.shape, device="cuda", dtype=dtype, generator=g)
    ddb = torch.randn(b.shape, device="cuda", dtype=dtype, generator=g)
    got = _grads_up_to_second("cuda", x, b, dy, ddx, ddb, act=act, clamp=clamp)
    ref = _grads_up_to_second("ref", x.float(), b.float(), dy.float(), ddx.float(), ddb.float(), act=act, clamp=clamp)
    names = ["y", "dx", "db", "d2_x", "d2_b", "d2_dy"]
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=5e-2)
    for name, a, r in zip(names, got, ref):
        assert a.dtype == dtype, name
        scale = max(1.0, r.abs().max().item()) if name in ("db", "d2_b") else 1.0  # Sums over many fp16 terms.
        torch.testing.assert_close(a.float() / scale, r / scale, **tol, msg=lambda m, name=name: f"{name}: {m}")


@needs_cuda
@pytest.mark.cuda
def test_cuda_gradcheck_float64_and_third_order_error():
    assert B._get_plugin() is not None
    for act in ("swish", "lrelu", "tanh"):
        x, b = _safe_inputs(act, DEFAULTS[act][1], 0.9)
        x = x.detach().cuda().requires_grad_()
        b = b.detach().cuda().requires_grad_()
        fn = lambda x_, b_, act=act: B.bias_act(x_, b_, act=act, clamp=0.9, impl="cuda")  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))
    y = B.bias_act(x, b, act="tanh", impl="cuda")
    (dx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    (ddx,) = torch.autograd.grad(dx.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="order > 2"):
        ddx.sum().backward()


# ----------------------------------------------------------------------------------------------
# CPU emulation of the kernel: runs the real impl='cuda' autograd Functions (saved tensors, double
# backward wiring, bias reduction) with a stand-in for the compiled module that mirrors
# bias_act.cu line by line, so the CUDA code path is exercised even on machines without a GPU.

_CODE_TO_ACT = {spec["cuda_idx"]: name for name, spec in B._ACTIVATIONS.items()}


def _kernel_act_eval(s, act, alpha):
    """(f, f', f'') exactly as act_eval<A> in bias_act.cu."""
    if act == "tanh":
        t = torch.tanh(s)
        d1 = 1 - t * t
        return t, d1, -2 * t * d1
    if act == "sigmoid":
        g = 1 / (1 + torch.exp(-s))
        d1 = g * (1 - g)
        return g, d1, d1 * (1 - 2 * g)
    if act == "elu":
        e = alpha * torch.exp(s)
        return torch.where(s > 0, s, alpha * torch.expm1(s)), torch.where(s > 0, 1.0, e), torch.where(s > 0, 0.0, e)
    if act == "selu":
        e = SELU_L * SELU_A * torch.exp(s)
        return (torch.where(s > 0, SELU_L * s, SELU_L * SELU_A * torch.expm1(s)), torch.where(s > 0, SELU_L, e),
                torch.where(s > 0, 0.0, e))
    if act == "softplus":
        g = 1 / (1 + torch.exp(-s))
        return torch.where(s > 20, s, torch.log1p(torch.exp(s))), g, g * (1 - g)
    if act == "swish":
        g = 1 / (1 + torch.exp(-s))
        return s * g, g * (1 + s * (1 - g)), g * (1 - g) * (2 + s * (1 - 2 * g))
    f = s if act == "linear" else torch.where(s > 0, s, s * alpha if act == "lrelu" else 0 * s)
    return f, torch.ones_like(s), torch.zeros_like(s)


class _EmulatedBiasActPlugin:
    calls = 0

    @staticmethod
    def bias_act(x, b, xref, yref, dim, act, grad, alpha, gain, clamp):
        assert x.is_contiguous() and grad in (0, 1, 2)
        for ref in (xref, yref):
            assert ref.numel() == 0 or (ref.shape == x.shape and ref.is_contiguous())
        _EmulatedBiasActPlugin.calls += 1
        name = _CODE_TO_ACT[act]
        shape = [1] * x.ndim
        shape[dim] = -1
        v = x.double()
        bias = b.double().reshape(shape) if b.numel() else 0.0
        if grad == 0:
            f, _, _ = _kernel_act_eval(v + bias, name, alpha)
            out = f * gain
            if clamp >= 0:
                out = out.clamp(-clamp, clamp)
        elif name in ("linear", "relu", "lrelu"):
            yv = yref.double() if yref.numel() else torch.zeros_like(v)
            pos = yv * gain > 0
            slope = v.new_tensor(alpha if name == "lrelu" else 0.0)
            d1 = torch.ones_like(v) if name == "linear" else torch.where(pos, v.new_tensor(1.0), slope)
            if clamp >= 0:
                d1 = torch.where(yv.abs() < clamp, d1, 0.0)
            out = v * gain * d1 if grad == 1 else torch.zeros_like(v)
        else:
            assert xref.numel(), "smooth activations must save x"
            f, d1, d2 = _kernel_act_eval(xref.double() + bias, name, alpha)
            d = d1 if grad == 1 else d2
            if clamp >= 0:
                d = torch.where((f * gain).abs() < clamp, d, 0.0)
            out = v * gain * d
        return out.to(x.dtype)


@pytest.mark.parametrize("act", B.activation_names)
@pytest.mark.parametrize("clamp", [None, 0.7])
def test_cuda_path_with_emulated_kernel(act, clamp, monkeypatch):
    monkeypatch.setattr(B, "_plugin", _EmulatedBiasActPlugin)
    B._function_cache.clear()
    gain = DEFAULTS[act][1]
    x, b = _safe_inputs(act, gain, clamp, shape=(3, 4, 5), seed=3)
    g = torch.Generator().manual_seed(0)
    dy = torch.randn(x.shape, generator=g, dtype=torch.float64)
    ddx = torch.randn(x.shape, generator=g, dtype=torch.float64)
    ddb = torch.randn(b.shape, generator=g, dtype=torch.float64)
    calls = _EmulatedBiasActPlugin.calls
    got = _grads_up_to_second(None, x, b, dy, ddx, ddb, act=act, clamp=clamp, _fn=B._bias_act_cuda)
    assert _EmulatedBiasActPlugin.calls > calls  # The kernel path really ran.
    ref = _grads_up_to_second("ref", x, b, dy, ddx, ddb, act=act, clamp=clamp)
    for name, a, r in zip(["y", "dx", "db", "d2_x", "d2_b", "d2_dy"], got, ref):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}")
    B._function_cache.clear()
