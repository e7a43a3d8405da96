"""upfirdn2d / setup_filter / filter2d / upsample2d / downsample2d against independent references."""

import itertools
import logging

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from torch_utils import custom_ops
from torch_utils.ops import upfirdn2d as U


def _naive_upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Straightforward reference: explicit zero insertion, explicit zero-padded copy, a full 2D
    F.conv2d per channel, then slicing every `down`-th sample. f: None, [T] (outer product) or 2D."""
    upx, upy = (up, up) if isinstance(up, int) else up
    downx, downy = (down, down) if isinstance(down, int) else down
    if isinstance(padding, int):
        padding = [padding] * 4
    px0, px1, py0, py1 = padding
    f = torch.ones([1, 1]) if f is None else torch.as_tensor(f, dtype=torch.float64)
    if f.ndim == 1:
        f = torch.outer(f, f)
    N, C, H, W = x.shape
    u = torch.zeros([N, C, H * upy, W * upx], dtype=x.dtype)
    u[:, :, ::upy, ::upx] = x
    # Pad into a big canvas, then crop for negative padding.
    big_h = H * upy + 2 * abs(py0) + 2 * abs(py1)
    big_w = W * upx + 2 * abs(px0) + 2 * abs(px1)
    big = torch.zeros([N, C, big_h, big_w], dtype=x.dtype)
    oy, ox = abs(py0) + abs(py1), abs(px0) + abs(px1)
    big[:, :, oy:oy + H * upy, ox:ox + W * upx] = u
    v = big[:, :, oy - py0:oy + H * upy + py1, ox - px0:ox + W * upx + px1]
    k = f.to(x.dtype)
    if not flip_filter:
        k = torch.flip(k, [0, 1])
    out = F.conv2d(v.reshape(N * C, 1, *v.shape[2:]), k[None, None])
    out = out[:, :, ::downy, ::downx] * gain
    return out.reshape(N, C, *out.shape[2:])


def _filters():
    rng = np.random.RandomState(7)
    return {
        "none": (None, None),
        "box1d": ([1, 3, 3, 1], U.setup_filter([1, 3, 3, 1], normalize=False)),  # Expanded to 2D.
        "sep8": (list(rng.rand(8) + 0.1), None),
        "asym2d": (rng.randn(3, 2), None),
    }


CASES = list(itertools.product([1, 2, 3, (2, 1)], [1, 2, (1, 3)], [0, 2, [1, -1, 2, 0], [-1, 3, 0, 2]]))


@pytest.mark.parametrize("case_idx", range(len(CASES)))
def test_ref_matches_naive(case_idx):
    up, down, padding = CASES[case_idx]
    names = list(_filters())
    name = names[case_idx % len(names)]
    taps, _ = _filters()[name]
    flip = bool(case_idx % 3 == 0)
    gain = [1, 2.5][case_idx % 2]
    torch.manual_seed(case_idx)
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    if taps is None:
        f = None
    elif name == "sep8":
        f = U.setup_filter(taps, normalize=False, separable=True)
        assert f.ndim == 1
    else:
        f = U.setup_filter(taps, normalize=False)
        assert f.ndim == 2
    expect = _naive_upfirdn2d(x, f, up, down, padding, flip, gain)
    for impl in ("ref", "cuda"):  # 'cuda' falls back to 'ref' on CPU tensors.
        y = U.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl=impl)
        assert y.shape == expect.shape
        torch.testing.assert_close(y, expect, rtol=1e-10, atol=1e-10)


def test_flip_convention_matches_scipy_convolve2d():
    """flip_filter=False is a true convolution (scipy convolve2d), True is a correlation."""
    rng = np.random.RandomState(0)
    img = rng.randn(6, 5)
    k = rng.randn(3, 2)
    x = torch.as_tensor(img)[None, None]
    f = torch.as_tensor(k, dtype=torch.float32)
    y_conv = U.upfirdn2d(x, f, impl="ref")[0, 0].numpy()
    y_corr = U.upfirdn2d(x, f, flip_filter=True, impl="ref")[0, 0].numpy()
    np.testing.assert_allclose(y_conv, scipy.signal.convolve2d(img, k, mode="valid"), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y_corr, scipy.signal.correlate2d(img, k, mode="valid"), rtol=1e-6, atol=1e-6)
    # 'full' convolution = padding by f - 1 on each side.
    y_full = U.upfirdn2d(x, f, padding=[1, 1, 2, 2], impl="ref")[0, 0].numpy()
    np.testing.assert_allclose(y_full, scipy.signal.convolve2d(img, k, mode="full"), rtol=1e-6, atol=1e-6)


def test_setup_filter():
    f = U.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f.sum(), torch.tensor(1.0))
    torch.testing.assert_close(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    sep = U.setup_filter([1, 2, 3, 4, 4, 3, 2, 1])  # >= 8 taps: separable by default.
    assert sep.ndim == 1
    torch.testing.assert_close(sep.sum(), torch.tensor(1.0))
    assert U.setup_filter([1, 2, 1], separable=True).ndim == 1
    g = U.setup_filter([1, 2], gain=4)  # 2D: the whole gain.
    torch.testing.assert_close(g.sum(), torch.tensor(4.0))
    g1 = U.setup_filter([1, 2], gain=4, separable=True)  # 1D: sqrt(gain) per pass.
    torch.testing.assert_close(g1.sum(), torch.tensor(2.0))
    flipped = U.setup_filter([[1, 2], [3, 4]], normalize=False, flip_filter=True)
    torch.testing.assert_close(flipped, torch.tensor([[4., 3], [2, 1]]))
    torch.testing.assert_close(U.setup_filter(None), torch.ones(1, 1))
    with pytest.raises(ValueError, match="sum to zero"):
        U.setup_filter([1, -1])
    with pytest.raises(ValueError, match="separable"):
        U.setup_filter([[1, 2], [3, 4]], separable=True)


def test_separable_equals_outer_product():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 9, 8)
    taps = [1, 4, 6, 4, 1]
    for kwargs in [dict(up=2, padding=2), dict(down=2, padding=[2, 1, 0, 3]), dict(up=(1, 2), down=(3, 1), gain=3)]:
        y_sep = U.upfirdn2d(x, U.setup_filter(taps, separable=True), **kwargs)
        y_2d = U.upfirdn2d(x, U.setup_filter(taps, separable=False), **kwargs)
        torch.testing.assert_close(y_sep, y_2d, rtol=1e-5, atol=1e-6)


def test_resampling_wrappers_shapes_and_values():
    f = U.setup_filter([1, 3, 3, 1])
    x = torch.ones(2, 3, 8, 10)
    up = U.upsample2d(x, f)
    down = U.downsample2d(x, f)
    same = U.filter2d(x, f)
    assert up.shape == (2, 3, 16, 20) and down.shape == (2, 3, 4, 5) and same.shape == x.shape
    # A normalized filter preserves constants away from the zero-padded border; upsample2d's
    # gain (up^2) makes up for the inserted zeros.
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.ones_like(up[..., 2:-2, 2:-2]))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.ones_like(down[..., 1:-1, 1:-1]))
    torch.testing.assert_close(same[..., 2:-2, 2:-2], torch.ones_like(same[..., 2:-2, 2:-2]))
    assert up[..., 0, 0].max() < 1  # The border does see the zero padding.
    # Extra padding enlarges the output; an anisotropic factor only scales its own axis.
    assert U.upsample2d(x, f, up=(2, 1), padding=[1, 0, 0, 2]).shape == (2, 3, 10, 21)
    assert U.downsample2d(x, f, down=(1, 2)).shape == (2, 3, 4, 10)
    # Downsampling with f=None is plain decimation.
    xr = torch.randn(1, 1, 6, 6)
    torch.testing.assert_close(U.downsample2d(xr, None), xr[:, :, ::2, ::2])
    # Upsampling with f=None is zero insertion (times the gain 4); the 'same' padding for a 1-tap
    # filter puts the samples on the odd pixels.
    z = U.upsample2d(xr, None)
    torch.testing.assert_close(z[:, :, 1::2, 1::2], 4 * xr)
    assert z[:, :, ::2].abs().sum() == 0 and z[:, :, :, ::2].abs().sum() == 0


GRAD_CASES = [
    dict(up=2, padding=[2, 1, 2, 1]),
    dict(down=2, padding=1),
    dict(up=(2, 3), down=(3, 1), padding=[1, -1, 2, 0], flip_filter=True, gain=1.7),
    dict(padding=[-1, 2, 0, -1]),
]


@pytest.mark.parametrize("kwargs", GRAD_CASES)
@pytest.mark.parametrize("separable", [False, True])
def test_gradcheck_and_gradgradcheck(kwargs, separable):
    torch.manual_seed(1)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    f = U.setup_filter(np.random.RandomState(3).rand(4) + 0.1, separable=separable).double()
    fn = lambda t: U.upfirdn2d(t, f, impl="ref", **kwargs)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


def test_gradient_equals_explicit_adjoint():
    """<upfirdn2d(x), y> == <x, grad>: the backward is the exact adjoint (checked without autograd's help)."""
    torch.manual_seed(2)
    f = U.setup_filter(torch.rand(3, 4).tolist()).double()
    x = torch.randn(2, 1, 6, 7, dtype=torch.float64, requires_grad=True)
    kwargs = dict(up=(3, 2), down=(2, 3), padding=[2, -1, 1, 3])
    out = U.upfirdn2d(x, f, **kwargs)
    y = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, x, y)
    naive_out = _naive_upfirdn2d(x.detach(), f, **kwargs)
    torch.testing.assert_close((naive_out * y).sum(), (x.detach() * g).sum())


def test_bad_arguments_raise_clear_errors():
    x = torch.randn(1, 1, 4, 4)
    f = U.setup_filter([1, 1])
    with pytest.raises(ValueError, match="padding"):
        U.upfirdn2d(x, f, padding=[1, 2, 3])
    with pytest.raises(ValueError, match="up must be >= 1"):
        U.upfirdn2d(x, f, up=0)
    with pytest.raises(ValueError, match="empty output"):
        U.upfirdn2d(x, f, padding=-3)
    with pytest.raises(ValueError, match="impl"):
        U.upfirdn2d(x, f, impl="triton")
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        U.upfirdn2d(x[0], f)
    with pytest.raises(ValueError, match="filter"):
        U.upfirdn2d(x, f.clone().requires_grad_())


def test_cpu_fallback_notes_once(caplog):
    custom_ops._noted.discard("cpu-fallback")
    x = torch.randn(1, 2, 5, 5)
    f = U.setup_filter([1, 2, 1])
    with caplog.at_level(logging.INFO, logger="torch_utils.ops"):
        outs = [U.upfirdn2d(x, f, up=2, impl="cuda") for _ in range(3)]
    notes = [r for r in caplog.records if "reference" in r.getMessage()]
    assert len(notes) == 1
    torch.testing.assert_close(outs[0], U.upfirdn2d(x, f, up=2, impl="ref"))


# ----------------------------------------------------------------------------------------------
# CUDA kernel against the reference (GPU machines only).

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to run the upfirdn2d kernel")

CUDA_CASES = [
    dict(up=2, padding=[2, 1, 2, 1]),
    dict(down=2, padding=[1, 1, 1, 1]),
    dict(padding=[1, 2, 2, 1]),
    dict(up=(2, 3), down=(3, 2), padding=[1, -1, 2, 0], flip_filter=True, gain=1.7),
    dict(up=4, down=2, padding=[-2, 3, 0, 1]),
]


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("kwargs", CUDA_CASES)
@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 3, 4, 4, 3, 2, 1], "random2d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_matches_ref(kwargs, taps, dtype):
    assert U._get_plugin() is not None, "upfirdn2d CUDA extension failed to build"
    torch.manual_seed(0)
    if taps == "random2d":
        taps = torch.rand(3, 4).tolist()
    f = U.setup_filter(taps, device="cuda")
    x = torch.randn(3, 5, 17, 12, device="cuda", dtype=dtype, requires_grad=True)
    y_cuda = U.upfirdn2d(x, f, impl="cuda", **kwargs)
    x_ref = x.detach().float().requires_grad_()
    y_ref = U.upfirdn2d(x_ref, f, impl="ref", **kwargs)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    assert y_cuda.dtype == dtype
    torch.testing.assert_close(y_cuda.float(), y_ref, **tol)
    dy = torch.randn_like(y_ref)
    (g_cuda,) = torch.autograd.grad(y_cuda, x, dy.to(dtype))
    (g_ref,) = torch.autograd.grad(y_ref, x_ref, dy)
    torch.testing.assert_close(g_cuda.float(), g_ref, **tol)
    ddx = torch.randn_like(g_ref)
    # Second order: differentiate <grad, ddx> w.r.t. dy -- i.e. apply the forward op again.
    dy_c = dy.to(dtype).requires_grad_()
    (g_c,) = torch.autograd.grad(U.upfirdn2d(x, f, impl="cuda", **kwargs), x, dy_c, create_graph=True)
    (gg_c,) = torch.autograd.grad(g_c, dy_c, ddx.to(dtype))
    dy_r = dy.clone().requires_grad_()
    (g_r,) = torch.autograd.grad(U.upfirdn2d(x_ref, f, impl="ref", **kwargs), x_ref, dy_r, create_graph=True)
    (gg_r,) = torch.autograd.grad(g_r, dy_r, ddx)
    torch.testing.assert_close(gg_c.float(), gg_r, **tol)


@needs_cuda
@pytest.mark.cuda
def test_cuda_gradcheck_float64():
    assert U._get_plugin() is not None
    f = U.setup_filter([1, 3, 3, 1], device="cuda").double()
    x = torch.randn(1, 2, 5, 6, device="cuda", dtype=torch.float64, requires_grad=True)
    fn = lambda t: U.upfirdn2d(t, f, up=2, down=(1, 2), padding=[2, 1, 0, 3], impl="cuda")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


# ----------------------------------------------------------------------------------------------
# CPU emulation of the kernel: runs the real impl='cuda' autograd Function (adjoint wiring,
# separable two-pass split, filter flipping/gain on the host) with a stand-in for the compiled
# module whose loops mirror upfirdn2d.cu (same tap-range arithmetic), so the index logic of the
# kernel is checked even on machines without a GPU.


class _EmulatedUpFirDn2dPlugin:
    calls = 0

    @staticmethod
    def upfirdn2d(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1):
        acc_type = torch.float64 if x.dtype == torch.float64 else torch.float32
        assert f.ndim == 2 and f.dtype == acc_type and f.is_contiguous()
        _EmulatedUpFirDn2dPlugin.calls += 1
        N, C, in_h, in_w = x.shape
        f_h, f_w = f.shape
        span_y = in_h * up_y + pad_y0 + pad_y1 - f_h
        span_x = in_w * up_x + pad_x0 + pad_x1 - f_w
        assert span_x >= 0 and span_y >= 0
        out_h, out_w = span_y // down_y + 1, span_x // down_x + 1
        xm = x.reshape(N * C, in_h, in_w).to(acc_type)
        y = torch.zeros(N * C, out_h, out_w, dtype=acc_type)

        def tap_range(base, up, size, taps):  # Same as tap_range() in upfirdn2d.cu.
            return max((-base) % up, -base), min(taps - 1, (size - 1) * up - base)

        for oy in range(out_h):
            base_y = oy * down_y - pad_y0
            ty0, ty1 = tap_range(base_y, up_y, in_h, f_h)
            for ox in range(out_w):
                base_x = ox * down_x - pad_x0
                tx0, tx1 = tap_range(base_x, up_x, in_w, f_w)
                acc = torch.zeros(N * C, dtype=acc_type)
                for ty in range(ty0, ty1 + 1, up_y):
                    for tx in range(tx0, tx1 + 1, up_x):
                        assert (base_y + ty) % up_y == 0 and (base_x + tx) % up_x == 0
                        acc += xm[:, (base_y + ty) // up_y, (base_x + tx) // up_x] * f[ty, tx]
                y[:, oy, ox] = acc
        return y.to(x.dtype).reshape(N, C, out_h, out_w)


EMU_CASES = [
    dict(up=2, padding=[2, 1, 2, 1]),
    dict(down=2, padding=[1, 1, 2, 0]),
    dict(up=(3, 2), down=(2, 3), padding=[1, -2, 3, 0], flip_filter=True, gain=1.7),
    dict(padding=[-1, 2, 1, -1]),
]


@pytest.mark.parametrize("kwargs", EMU_CASES)
@pytest.mark.parametrize("taps", ["sep", "2d"])
def test_cuda_path_with_emulated_kernel(kwargs, taps, monkeypatch):
    monkeypatch.setattr(U, "_plugin", _EmulatedUpFirDn2dPlugin)
    torch.manual_seed(4)
    f = U.setup_filter([1, 2, 4, 1], separable=True) if taps == "sep" else U.setup_filter(torch.rand(3, 4).tolist())
    f = f.double()
    upx, upy = U._parse_scaling(kwargs.get("up", 1), "up")
    downx, downy = U._parse_scaling(kwargs.get("down", 1), "down")
    cfg = ((upx, upy), (downx, downy), U._parse_padding(kwargs.get("padding", 0)),
           kwargs.get("flip_filter", False), float(kwargs.get("gain", 1)))
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    calls = _EmulatedUpFirDn2dPlugin.calls
    y = U._UpFirDn2dCuda.apply(x, f, cfg)
    y_ref = U.upfirdn2d(x, f, impl="ref", **kwargs)
    torch.testing.assert_close(y, y_ref)
    dy = torch.randn_like(y, requires_grad=True)
    (g,) = torch.autograd.grad(y, x, dy, create_graph=True)
    (g_ref,) = torch.autograd.grad(y_ref, x, dy, create_graph=True)
    torch.testing.assert_close(g, g_ref)
    ddx = torch.randn_like(g)
    (gg,) = torch.autograd.grad(g, dy, ddx)  # Second order: the forward op again.
    (gg_ref,) = torch.autograd.grad(g_ref, dy, ddx)
    torch.testing.assert_close(gg, gg_ref)
    assert _EmulatedUpFirDn2dPlugin.calls >= calls + (3 if taps == "2d" else 6)
