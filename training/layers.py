"""Small helpers shared by the generators (networks_fastgan, networks_stylegan2)."""

import contextlib

import torch

PRECISIONS = ("fp32", "bf16")


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale x (e.g. z [N, z_dim]) to unit mean square along `dim`, i.e. onto the hypersphere of
    radius sqrt(x.shape[dim]); same shape as x."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def training_autocast(module: torch.nn.Module, device: torch.device, precision: str):
    """The context a generator's synthesis runs in: bfloat16 autocast when `precision` is 'bf16' and the module is
    in training mode, else nothing. Weights stay float32 (the optimizer's master copy); G_ema, in eval mode, and
    every evaluation run in float32, so metrics and snapshots do not depend on the setting."""
    if precision == "bf16" and module.training and device.type in _AUTOCAST_DEVICES:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def no_autocast(device: torch.device):
    """Float32 inside an autocast region: for normalisations and spectral-norm estimates, which need its range.
    (A no-op on devices without autocast, e.g. 'meta', where shapes are probed.)"""
    if device.type not in _AUTOCAST_DEVICES:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def autocast_enabled(device: torch.device) -> bool:
    """Whether an autocast region is active for `device` (False for devices without autocast, e.g. 'meta')."""
    return device.type in _AUTOCAST_DEVICES and torch.is_autocast_enabled(device.type)


_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")
