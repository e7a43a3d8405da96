"""Thin helpers around torch.distributed for the training loop.

Two ways to get several processes:
  * `torchrun` (single or multi node): every process finds RANK, WORLD_SIZE, LOCAL_RANK (and
    LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) in its environment; `launched_by_torchrun()` is True.
  * `train.py --gpus=N` on one machine: the CLI spawns N processes and passes a file:// rendezvous.
Either way `init_process_group()` picks NCCL for CUDA devices and gloo for CPU.
"""

import os
from typing import Iterable, List, Optional

import torch


def launched_by_torchrun() -> bool:
    """True when this process was started by torchrun / torch.distributed.launch."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def env_int(name: str, default: Optional[int] = None) -> Optional[int]:
    """Read an integer environment variable with an error message that names it."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def torchrun_topology():
    """(rank, world_size, local_rank, local_world_size) as set by torchrun."""
    rank = env_int("RANK")
    world_size = env_int("WORLD_SIZE")
    local_rank = env_int("LOCAL_RANK", 0)
    local_world_size = env_int("LOCAL_WORLD_SIZE", world_size)
    return rank, world_size, local_rank, local_world_size


def init_process_group(rank: int, world_size: int, device: torch.device, init_method: Optional[str] = None) -> None:
    """Join the process group (no-op for a single process). NCCL for CUDA devices, gloo otherwise."""
    if world_size <= 1:
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if init_method is None:
        init_method = "env://"  # torchrun sets MASTER_ADDR / MASTER_PORT
    torch.distributed.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size)


def is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def get_world_size() -> int:
    return torch.distributed.get_world_size() if is_initialized() else 1


def get_rank() -> int:
    return torch.distributed.get_rank() if is_initialized() else 0


def barrier() -> None:
    if is_initialized():
        torch.distributed.barrier()


def destroy_process_group() -> None:
    if is_initialized():
        torch.distributed.destroy_process_group()


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of `module` from rank `src` to all ranks (in place)."""
    if not is_initialized():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.numel() > 0:
            torch.distributed.broadcast(tensor.data, src=src)


@torch.no_grad()
def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of `params` over all ranks with ONE all_reduce and scrub non-finite values.

    Every rank must pass the same parameter list in the same order. Missing gradients count as
    zeros so that ranks whose batch happened not to touch a parameter still agree on the layout.
    Non-finite entries are replaced (NaN -> 0, +-inf -> +-1e5) so a single bad sample cannot poison
    the weights; the training loop detects non-finite *losses* separately and stops the run.
    """
    params: List[torch.nn.Parameter] = [p for p in params if p.numel() > 0]
    if not params:
        return
    world = get_world_size()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    if world > 1:
        torch.distributed.all_reduce(flat)
        flat /= world
    torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p)
        offset += n


def all_reduce_max(value: torch.Tensor) -> torch.Tensor:
    """Elementwise max over ranks (in place); identity for a single process."""
    if is_initialized():
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return value
