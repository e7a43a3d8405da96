"""conv2d / conv_transpose2d whose backward pass can be told to skip the weight gradient.

    with conv2d_gradfix.no_weight_gradients():
        grads, = torch.autograd.grad(img_dot_noise, [ws], create_graph=True)

`conv2d` and `conv_transpose2d` compute exactly what torch.nn.functional's functions of the same
names compute; only their autograd node differs. Its backward:

* computes the input, weight and bias gradients with `aten.convolution_backward`, the op torch's
  own convolution node calls, so the results are the same and the backward is itself
  differentiable to any order (R1 and path-length regularisation differentiate through it);
* computes only what the running backward pass will use: a gradient is skipped when its input
  does not require grad, when the autograd engine will not execute that input's branch (e.g.
  `torch.autograd.grad(..., inputs=[x])` never needs the weight gradient), and, for the weight,
  while `no_weight_gradients()` is active.

`no_weight_gradients()` is the caller's promise that no weight gradient of the convolutions it
runs the backward of is wanted, including gradients that would flow *through* the weight to
something else. That holds for StyleGAN2's path-length term when the weights are parameters
(non-fused modulated convs), but not for fused modulated convs, whose weights are computed from
the styles and hence from ws: those calls pass `weight_grad_optional=False`, and the flag leaves
them alone. For `torch.autograd.grad(..., inputs=[ws])` the engine check above already skips the
parameter weights' gradients; the flag makes the skip hold however the backward is invoked
(`.backward()`, or inputs that include the weights). It is read when the backward runs (which may
be on an autograd worker thread), so it is a process-wide setting, not a thread-local one.
"""

import contextlib
from typing import Iterator, Optional, Sequence, Tuple, Union

import torch

_IntPair = Union[int, Sequence[int]]

_weight_gradients_disabled = False
_convolution_backward = torch.ops.aten.convolution_backward  # module-level so tests can observe its calls


@contextlib.contextmanager
def no_weight_gradients(disable: bool = True) -> Iterator[None]:
    """While active (and `disable` is true), backward passes through this module's convolutions
    return no gradient for their weights; input and bias gradients are unaffected."""
    global _weight_gradients_disabled
    previous = _weight_gradients_disabled
    _weight_gradients_disabled = previous or bool(disable)
    try:
        yield
    finally:
        _weight_gradients_disabled = previous


def weight_gradients_disabled() -> bool:
    """Whether a `no_weight_gradients()` block is active."""
    return _weight_gradients_disabled


def _pair(value: _IntPair, name: str) -> Tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"conv2d_gradfix: {name} must be an int or a pair, got {value}")
    return value


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride: _IntPair = 1,
           padding: _IntPair = 0, dilation: _IntPair = 1, groups: int = 1,
           weight_grad_optional: bool = True) -> torch.Tensor:
    """torch.nn.functional.conv2d with a skippable weight gradient.

    Args:
        x:      [N, C_in, H, W].
        weight: [C_out, C_in // groups, k_h, k_w].
        bias:   [C_out] or None.
        stride, padding, dilation, groups: as in F.conv2d (ints or pairs; no string padding).
        weight_grad_optional: False exempts this call from `no_weight_gradients()` (for weights
                that are functions of the inputs being differentiated, e.g. fused modulation).
    Returns:
        [N, C_out, H_out, W_out], as F.conv2d.
    """
    return _Convolution.apply(x, weight, bias, _pair(stride, "stride"), _pair(padding, "padding"),
                              _pair(dilation, "dilation"), False, (0, 0), int(groups), weight_grad_optional)


def conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                     stride: _IntPair = 1, padding: _IntPair = 0, output_padding: _IntPair = 0, groups: int = 1,
                     dilation: _IntPair = 1, weight_grad_optional: bool = True) -> torch.Tensor:
    """torch.nn.functional.conv_transpose2d with a skippable weight gradient.

    Args:
        x:      [N, C_in, H, W].
        weight: [C_in, C_out // groups, k_h, k_w] (conv_transpose2d's layout).
        bias:   [C_out] or None.
        stride, padding, output_padding, groups, dilation: as in F.conv_transpose2d.
        weight_grad_optional: as in `conv2d`.
    Returns:
        [N, C_out, H_out, W_out], as F.conv_transpose2d.
    """
    return _Convolution.apply(x, weight, bias, _pair(stride, "stride"), _pair(padding, "padding"),
                              _pair(dilation, "dilation"), True, _pair(output_padding, "output_padding"),
                              int(groups), weight_grad_optional)


def _engine_will_need(ctx, index: int) -> bool:
    """Whether the running backward pass will use the gradient of forward input `index`."""
    node = ctx.next_functions[index][0]
    if node is None:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError):  # API absent in this torch: assume it is needed
        return True


class _Convolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups,
                weight_grad_optional):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, transposed, output_padding, groups)
        ctx.bias_sizes = None if bias is None else [bias.shape[0]]
        ctx.weight_grad_optional = weight_grad_optional
        return torch.ops.aten.convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding,
                                          groups)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        need = [ctx.needs_input_grad[i] and _engine_will_need(ctx, i) for i in range(3)]
        if _weight_gradients_disabled and ctx.weight_grad_optional:
            need[1] = False
        need[2] = need[2] and ctx.bias_sizes is not None
        grads = (None, None, None)
        if any(need):
            grads = _convolution_backward(grad_out, x, weight, ctx.bias_sizes, *ctx.conf, need)
        return (*grads, None, None, None, None, None, None, None)
