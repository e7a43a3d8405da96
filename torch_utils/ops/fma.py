"""Fused multiply-add `a * b + c` with broadcasting, as used by StyleGAN2's fused modulated conv
(demodulation coefficients times activations plus noise).

torch.addcmul does it in one kernel and its autograd reduces each gradient over the broadcast
dimensions, so no custom Function is needed.
"""

import torch


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Return a * b + c; a, b, c broadcast against each other (e.g. x [N, C, H, W], dcoefs [N, C, 1, 1],
    noise [N, 1, H, W]) and the result has the broadcast shape."""
    return torch.addcmul(c, a, b)
