"""Small helpers shared by the generators (networks_fastgan, networks_stylegan2)."""

import torch


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale x (e.g. z [N, z_dim]) to unit mean square along `dim`, i.e. onto the hypersphere of
    radius sqrt(x.shape[dim]); same shape as x."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
