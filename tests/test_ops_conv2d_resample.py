"""conv2d_resample against a straightforward composition."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import upfirdn2d as U
from torch_utils.ops.conv2d_resample import conv2d_resample


def _zero_insert(x, up):
    if up == 1:
        return x
    N, C, H, W = x.shape
    u = torch.zeros(N, C, H * up, W * up, dtype=x.dtype)
    u[:, :, ::up, ::up] = x
    return u


def _pad(x, p):
    """Zero-pad by [x0, x1, y0, y1] (negative crops), via an explicit canvas."""
    x0, x1, y0, y1 = p
    N, C, H, W = x.shape
    m = max(map(abs, p))
    big = torch.zeros(N, C, H + 2 * m, W + 2 * m, dtype=x.dtype)
    big[:, :, m:m + H, m:m + W] = x
    return big[:, :, m - y0:m + H + y1, m - x0:m + W + x1]


def _depthwise(x, k2d):
    """'valid' true convolution of every channel with k2d [kh, kw]."""
    C = x.shape[1]
    return F.conv2d(x, k2d.flip([0, 1]).to(x.dtype)[None, None].repeat(C, 1, 1, 1), groups=C)


def _naive_conv2d_resample(x, w, f2d, up, down, padding, groups, flip_weight):
    """The definition in the module docstring, step by step, with nothing fused."""
    kf = f2d.shape[0]
    px0, px1, py0, py1 = padding
    if up > 1:
        px0, px1 = px0 + (kf + up - 1) // 2, px1 + (kf - up) // 2
        py0, py1 = py0 + (kf + up - 1) // 2, py1 + (kf - up) // 2
    if down > 1:
        px0, px1 = px0 + (kf - down + 1) // 2, px1 + (kf - down) // 2
        py0, py1 = py0 + (kf - down + 1) // 2, py1 + (kf - down) // 2
    t = _pad(_zero_insert(x, up), [px0, px1, py0, py1])
    if up > 1:
        t = _depthwise(t, f2d) * up ** 2
    t = F.conv2d(t, w if flip_weight else w.flip([2, 3]), groups=groups)
    if down > 1:
        t = _depthwise(t, f2d)[:, :, ::down, ::down]
    return t


CASES = list(itertools.product([(1, 1), (2, 1), (1, 2), (2, 2)], [1, 3], [1, 2], [True, False]))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"updown{c[0]}-k{c[1]}-g{c[2]}-flip{c[3]}")
def test_matches_straightforward_composition(case):
    (up, down), k, groups, flip_weight = case
    torch.manual_seed(hash(case) % 1000)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    w = torch.randn(6, 4 // groups, k, k, dtype=torch.float64)
    taps = [1, 3, 3, 1]
    f = U.setup_filter(taps).double()
    for padding in ([k // 2] * 4, [1, 0, 2, 1]):
        y = conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight)
        expect = _naive_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight)
        assert y.shape == expect.shape
        torch.testing.assert_close(y, expect, rtol=1e-9, atol=1e-9)
        if padding[0] == k // 2 and padding == [k // 2] * 4 and k == 3:
            assert y.shape[2:] == (8 * up // down, 8 * up // down)  # 'same' conv scales H by up/down.


def test_flip_filter_and_asymmetric_filter():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    f = torch.rand(4, 4, dtype=torch.float64)
    for up, down in [(2, 1), (1, 2)]:
        y = conv2d_resample(x, w, f=f, up=up, down=down, padding=1, flip_filter=True)
        expect = _naive_conv2d_resample(x, w, f.flip([0, 1]), up, down, [1, 1, 1, 1], 1, True)
        torch.testing.assert_close(y, expect)


def test_plain_conv_equals_torch_conv2d():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 9, 9)
    w = torch.randn(5, 3, 3, 3)
    torch.testing.assert_close(conv2d_resample(x, w, padding=1), F.conv2d(x, w, padding=1))
    torch.testing.assert_close(conv2d_resample(x, w, padding=1, flip_weight=False),
                               F.conv2d(x, w.flip([2, 3]), padding=1))
    torch.testing.assert_close(conv2d_resample(x, w, padding=[2, 0, 1, 1]), F.conv2d(F.pad(x, [2, 0, 1, 1]), w))


def test_gradients():
    torch.manual_seed(2)
    f = U.setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    for up, down in [(2, 1), (1, 2)]:
        fn = lambda x_, w_, up=up, down=down: conv2d_resample(x_, w_, f=f, up=up, down=down, padding=1)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, w), fast_mode=True)
        assert torch.autograd.gradgradcheck(fn, (x, w), fast_mode=True)


def test_bad_arguments():
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match="do not match"):
        conv2d_resample(x, torch.randn(3, 3, 3, 3))
    with pytest.raises(ValueError, match="up and down"):
        conv2d_resample(x, torch.randn(3, 4, 3, 3), up=0)
    with pytest.raises(ValueError, match="dtype"):
        conv2d_resample(x, torch.randn(3, 4, 3, 3, dtype=torch.float64))
