"""conv2d_gradfix against torch.nn.functional: values, gradients of first and second order, the
no_weight_gradients() switch, and which gradients the backward actually computes."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import upfirdn2d as U
from torch_utils.ops.conv2d_resample import conv2d_resample

# (stride, padding, dilation, groups, with bias): each value of each option at least twice.
CONFIGS = [(1, 0, 1, 1, False), (1, 1, 1, 1, True), (2, 1, 1, 1, True), (2, 0, 1, 2, False), (1, (2, 0), 2, 1, True),
           (2, 1, 2, 2, True), (1, 1, 1, 2, False), (2, (2, 0), 1, 1, False), (1, 0, 2, 2, True)]


def _inputs(transpose, stride, dilation, groups, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, generator=g)
    shape = [4, 6 // groups, 3, 3] if transpose else [6, 4 // groups, 3, 3]
    w = torch.randn(shape, dtype=torch.float64, generator=g)
    b = torch.randn(6, dtype=torch.float64, generator=g) if bias else None
    return x, w, b


def _ops(transpose, stride, padding, dilation, groups):
    if transpose:
        opad = 1 if stride > 1 else 0  # output_padding must be < stride (or < dilation)
        kw = dict(stride=stride, padding=padding, output_padding=opad, groups=groups, dilation=dilation)
        return (lambda x, w, b: conv2d_gradfix.conv_transpose2d(x, w, b, **kw),
                lambda x, w, b: F.conv_transpose2d(x, w, b, **kw))
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return lambda x, w, b: conv2d_gradfix.conv2d(x, w, b, **kw), lambda x, w, b: F.conv2d(x, w, b, **kw)


def _first_and_second_order(fn, x, w, b, seed=1):
    """y, (dx, dw, db) for a random dy, and d<dx, dw, db>·v / d(x, w, b, dy) for a random v."""
    leaves = [t.detach().requires_grad_() if t is not None else None for t in (x, w, b)]
    params = [t for t in leaves if t is not None]
    y = fn(*leaves)
    g = torch.Generator().manual_seed(seed)
    dy = torch.randn(y.shape, dtype=y.dtype, generator=g).requires_grad_()
    first = torch.autograd.grad(y, params, dy, create_graph=True)
    vs = [torch.randn(t.shape, dtype=t.dtype, generator=g) for t in first]
    second = torch.autograd.grad(first, params + [dy], vs, allow_unused=True)
    second = [torch.zeros_like(p) if s is None else s for s, p in zip(second, params + [dy])]
    return [y, *first, *second]


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "s{}-p{}-d{}-g{}-b{}".format(*c))
def test_matches_torch_values_and_gradients(transpose, config):
    stride, padding, dilation, groups, bias = config
    x, w, b = _inputs(transpose, stride, dilation, groups, bias)
    ours, torchs = _ops(transpose, stride, padding, dilation, groups)
    got = _first_and_second_order(ours, x, w, b)
    expect = _first_and_second_order(torchs, x, w, b)
    assert len(got) == len(expect) == (8 if bias else 6)  # y, first-order grads, second-order ones (+ dy)
    for a, e in zip(got, expect):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


def test_gradcheck_and_gradgradcheck():
    x, w, b = _inputs(False, 2, 1, 2, True)
    args = [t.requires_grad_() for t in (x, w, b)]
    fn = lambda x_, w_, b_: conv2d_gradfix.conv2d(x_, w_, b_, stride=2, padding=1, groups=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, args, fast_mode=True)
    x, w, b = _inputs(True, 2, 1, 1, True)
    args = [t.requires_grad_() for t in (x, w, b)]
    fn = lambda x_, w_, b_: conv2d_gradfix.conv_transpose2d(x_, w_, b_, stride=2, padding=1, output_padding=1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, args, fast_mode=True)


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv_transpose2d"])
def test_no_weight_gradients_skips_only_the_weight(transpose):
    x, w, b = _inputs(transpose, 2, 1, 1, True)
    ours, torchs = _ops(transpose, 2, 1, 1, 1)
    x_ref, w_ref, b_ref = (t.clone().requires_grad_() for t in (x, w, b))
    torchs(x_ref, w_ref, b_ref).square().sum().backward()

    x, w, b = (t.clone().requires_grad_() for t in (x, w, b))
    assert not conv2d_gradfix.weight_gradients_disabled()
    with conv2d_gradfix.no_weight_gradients():
        assert conv2d_gradfix.weight_gradients_disabled()
        ours(x, w, b).square().sum().backward()
    assert not conv2d_gradfix.weight_gradients_disabled()
    assert w.grad is None
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.grad, b_ref.grad, rtol=1e-12, atol=1e-12)

    # The switch is read at backward time: a graph built inside the block gets weight
    # gradients when its backward runs outside it.
    x.grad = b.grad = None
    with conv2d_gradfix.no_weight_gradients():
        y = ours(x, w, b)
    y.square().sum().backward()
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-12, atol=1e-12)


def test_no_weight_gradients_disable_flag_nesting_and_exemption():
    x, w, _ = _inputs(False, 1, 1, 1, False)
    w.requires_grad_()
    with conv2d_gradfix.no_weight_gradients(disable=False):
        conv2d_gradfix.conv2d(x, w).sum().backward()
    assert w.grad is not None  # disable=False: a no-op, as in StyleGAN's loss with pl_no_weight_grad=False
    expect = w.grad.clone()
    w.grad = None
    with conv2d_gradfix.no_weight_gradients():
        with conv2d_gradfix.no_weight_gradients(disable=False):  # does not re-enable inside an active block
            conv2d_gradfix.conv2d(x, w).sum().backward()
        assert conv2d_gradfix.weight_gradients_disabled()
        assert w.grad is None
        conv2d_gradfix.conv2d(x, w, weight_grad_optional=False).sum().backward()  # exempt call
    torch.testing.assert_close(w.grad, expect)
    with pytest.raises(RuntimeError, match="boom"):
        with conv2d_gradfix.no_weight_gradients():
            raise RuntimeError("boom")
    assert not conv2d_gradfix.weight_gradients_disabled()  # restored after an exception


def test_backward_computes_only_what_the_engine_uses(monkeypatch):
    """autograd.grad(inputs=[x]) must not pay for weight gradients (torch's own conv skips them too)."""
    masks = []
    real = conv2d_gradfix._convolution_backward

    def spy(*args):
        masks.append(list(args[-1]))
        return real(*args)

    monkeypatch.setattr(conv2d_gradfix, "_convolution_backward", spy)
    x, w, b = _inputs(False, 1, 1, 1, True)
    x, w, b = (t.requires_grad_() for t in (x, w, b))
    y = conv2d_gradfix.conv2d(x * 2, w, b, padding=1)
    (gx,) = torch.autograd.grad(y.square().sum(), [x], create_graph=True)
    assert masks == [[True, False, False]]
    gx.square().sum().backward()  # R1-style outer backward: now every gradient is used
    assert masks[1:] == [[True, True, True]]
    masks.clear()
    (gw,) = torch.autograd.grad(conv2d_gradfix.conv2d(x, w).sum(), [w])
    assert masks == [[False, True, False]]
    frozen = w.detach()
    conv2d_gradfix.conv2d(x, frozen, b).sum().backward()
    assert masks[-1] == [True, False, True]


def test_conv2d_resample_runs_through_gradfix():
    f = U.setup_filter([1, 3, 3, 1]).double()
    x, w, _ = _inputs(False, 1, 1, 1, False)
    w = w[:, :, :3, :3].contiguous()
    for up, down in [(1, 1), (2, 1), (1, 2)]:
        xa, wa = x.clone().requires_grad_(), w.clone().requires_grad_()
        conv2d_resample(xa, wa, f=f, up=up, down=down, padding=1).square().sum().backward()
        xb, wb = x.clone().requires_grad_(), w.clone().requires_grad_()
        with conv2d_gradfix.no_weight_gradients():
            conv2d_resample(xb, wb, f=f, up=up, down=down, padding=1).square().sum().backward()
        assert wb.grad is None and wa.grad is not None
        torch.testing.assert_close(xb.grad, xa.grad)
        xc, wc = x.clone().requires_grad_(), w.clone().requires_grad_()
        with conv2d_gradfix.no_weight_gradients():
            conv2d_resample(xc, wc, f=f, up=up, down=down, padding=1,
                            weight_grad_optional=False).square().sum().backward()
        torch.testing.assert_close(wc.grad, wa.grad)


def test_bad_arguments():
    x, w, _ = _inputs(False, 1, 1, 1, False)
    with pytest.raises(ValueError, match="stride"):
        conv2d_gradfix.conv2d(x, w, stride=(1, 2, 3))
