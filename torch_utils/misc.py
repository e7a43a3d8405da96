"""Small helpers shared by the networks and the training loop (StyleGAN3 conventions).

constant/const      -- cached constant tensors (avoid re-uploading the same value every step).
assert_shape        -- shape checks that also work under torch.jit tracing.
profiled_function   -- label a function in torch.profiler traces.
params_and_buffers, named_params_and_buffers, copy_params_and_buffers -- state transfer between
                       networks of the same architecture (e.g. G -> G_ema, resume).
ddp_sync            -- skip DDP gradient all-reduce for all but the last accumulation round.
check_ddp_consistency, print_module_summary, InfiniteSampler -- training-loop utilities.
"""

import contextlib
import re
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

# ----------------------------------------------------------------------------------------------
# Cached constants.

_constant_cache: Dict[tuple, torch.Tensor] = {}


def constant(value, shape: Optional[Sequence[int]] = None, dtype=None, device=None, memory_format=None) -> torch.Tensor:
    """Return a (cached) tensor holding `value`, broadcast to `shape` if given.

    The cache key includes the value's bytes, shape, dtype, device and memory format, so callers
    must not modify the result in place.
    """
    value = np.asarray(value)
    if shape is not None:
        shape = tuple(shape)
    if dtype is None:
        dtype = torch.get_default_dtype()
    if device is None:
        device = torch.device("cpu")
    if memory_format is None:
        memory_format = torch.contiguous_format
    key = (value.shape, value.dtype, value.tobytes(), shape, dtype, str(device), memory_format)
    tensor = _constant_cache.get(key)
    if tensor is None:
        tensor = torch.as_tensor(value.copy(), dtype=dtype, device=device)
        if shape is not None:
            tensor, _ = torch.broadcast_tensors(tensor, torch.empty(shape))
        tensor = tensor.contiguous(memory_format=memory_format)
        _constant_cache[key] = tensor
    return tensor


const = constant  # Short alias used by the interfaces document.


# ----------------------------------------------------------------------------------------------
# Shape checks.


@contextlib.contextmanager
def suppress_tracer_warnings():
    """Silence torch.jit.TracerWarning inside the block (shape asserts are intentional there)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        yield


def assert_shape(tensor: torch.Tensor, ref_shape: Sequence[Any]) -> None:
    """Raise AssertionError unless tensor.shape matches ref_shape.

    ref_shape entries: an int (must match), None (any size), or a tensor (compared under tracing).
    """
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f"Wrong number of dimensions: got {tensor.ndim}, expected {len(ref_shape)} "
                             f"(shape {list(tensor.shape)} vs {list(ref_shape)})")
    for idx, (size, ref_size) in enumerate(zip(tensor.shape, ref_shape)):
        if ref_size is None:
            continue
        if isinstance(ref_size, torch.Tensor):
            with suppress_tracer_warnings():
                torch._assert(torch.equal(torch.as_tensor(size), ref_size), f"Wrong size for dimension {idx}")
        elif isinstance(size, torch.Tensor):
            with suppress_tracer_warnings():
                torch._assert(torch.equal(size, torch.as_tensor(ref_size)),
                              f"Wrong size for dimension {idx}: expected {ref_size}")
        elif size != ref_size:
            raise AssertionError(f"Wrong size for dimension {idx}: got {size}, expected {ref_size} "
                                 f"(shape {list(tensor.shape)} vs {list(ref_shape)})")


# ----------------------------------------------------------------------------------------------
# Profiling.


def profiled_function(fn):
    """Decorator: run `fn` inside torch.autograd.profiler.record_function(fn.__name__)."""

    def decorator(*args, **kwargs):
        with torch.autograd.profiler.record_function(fn.__name__):
            return fn(*args, **kwargs)

    decorator.__name__ = fn.__name__
    decorator.__doc__ = fn.__doc__
    decorator.__wrapped__ = fn
    return decorator


# ----------------------------------------------------------------------------------------------
# Parameters and buffers.


def params_and_buffers(module: torch.nn.Module) -> List[torch.Tensor]:
    assert isinstance(module, torch.nn.Module)
    return list(module.parameters()) + list(module.buffers())


def named_params_and_buffers(module: torch.nn.Module) -> List[Tuple[str, torch.Tensor]]:
    assert isinstance(module, torch.nn.Module)
    return list(module.named_parameters()) + list(module.named_buffers())


@torch.no_grad()
def copy_params_and_buffers(src_module: torch.nn.Module, dst_module: torch.nn.Module, require_all: bool = False) -> None:
    """Copy every parameter/buffer of dst_module that src_module has under the same name.

    Values are copied in place (keeping dst's device, dtype and requires_grad). With
    require_all=True a name missing from src raises KeyError; shape mismatches always raise.
    """
    src_tensors = dict(named_params_and_buffers(src_module))
    for name, tensor in named_params_and_buffers(dst_module):
        if name not in src_tensors:
            if require_all:
                raise KeyError(f"copy_params_and_buffers: source module has no '{name}'")
            continue
        src = src_tensors[name]
        if src.shape != tensor.shape:
            raise ValueError(f"copy_params_and_buffers: '{name}' has shape {list(src.shape)} in the source "
                             f"but {list(tensor.shape)} in the destination")
        tensor.copy_(src.detach())


# ----------------------------------------------------------------------------------------------
# Distributed training.


@contextlib.contextmanager
def ddp_sync(module: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Inside the block, DDP gradient synchronisation happens only if `sync` (no-op for plain modules)."""
    assert isinstance(module, torch.nn.Module)
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield


def check_ddp_consistency(module: torch.nn.Module, ignore_regex: Optional[str] = None) -> None:
    """Assert that every parameter/buffer is identical on all ranks (NaNs compare equal)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    for name, tensor in named_params_and_buffers(module):
        fullname = type(module).__name__ + "." + name
        if ignore_regex is not None and re.fullmatch(ignore_regex, fullname):
            continue
        tensor = tensor.detach()
        if tensor.is_floating_point():
            tensor = torch.nan_to_num(tensor)
        other = tensor.clone()
        torch.distributed.broadcast(tensor=other, src=0)
        if not (tensor == other).all():
            raise AssertionError(f"check_ddp_consistency: {fullname} differs between ranks")


# ----------------------------------------------------------------------------------------------
# Module summary.


def print_module_summary(module: torch.nn.Module, inputs: Sequence[Any], max_nesting: int = 3,
                         skip_redundant: bool = True) -> Any:
    """Run module(*inputs) once and print a table of submodules: parameters, buffers, output shapes.

    Returns the module's outputs.
    """
    assert isinstance(module, torch.nn.Module) and not isinstance(module, torch.jit.ScriptModule)
    entries = []
    nesting = [0]

    def pre_hook(_mod, _inputs):
        nesting[0] += 1

    def post_hook(mod, _inputs, outputs):
        nesting[0] -= 1
        if nesting[0] <= max_nesting:
            outs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
            entries.append((mod, [t for t in outs if isinstance(t, torch.Tensor)]))

    hooks = [m.register_forward_pre_hook(pre_hook) for m in module.modules()]
    hooks += [m.register_forward_hook(post_hook) for m in module.modules()]
    try:
        outputs = module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()

    seen = set()
    names = {mod: name for name, mod in module.named_modules()}
    rows = [("Module", "Parameters", "Buffers", "Output shape", "Datatype"), ("---",) * 5]
    total_params = total_buffers = 0
    for mod, outs in entries:
        params = [t for t in mod.parameters() if id(t) not in seen]
        buffers = [t for t in mod.buffers() if id(t) not in seen]
        seen.update(id(t) for t in params + buffers)
        if skip_redundant and not params and not buffers and mod is not module and len(outs) <= 1:
            continue
        n_params = sum(t.numel() for t in params)
        n_buffers = sum(t.numel() for t in buffers)
        total_params += n_params
        total_buffers += n_buffers
        name = "<top-level>" if mod is module else names.get(mod, type(mod).__name__)
        shapes = [str(list(t.shape)) for t in outs] or ["-"]
        dtypes = [str(t.dtype).split(".")[-1] for t in outs] or ["-"]
        for i, (shape, dtype) in enumerate(zip(shapes, dtypes)):
            rows.append((name if i == 0 else "", str(n_params) if i == 0 and n_params else "-" if i == 0 else "",
                         str(n_buffers) if i == 0 and n_buffers else "-" if i == 0 else "", shape, dtype))
    rows += [("---",) * 5, ("Total", str(total_params), str(total_buffers), "", "")]
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    print()
    for row in rows:
        print("  ".join(cell + " " * (w - len(cell)) for cell, w in zip(row, widths)).rstrip())
    print()
    return outputs


# ----------------------------------------------------------------------------------------------
# Data loading.


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless stream of dataset indices for one rank: a fresh seeded permutation every pass.

    Each rank yields every `num_replicas`-th index of the shared permutation, so ranks see disjoint
    samples within a pass and the stream is reproducible given `seed`.
    """

    def __init__(self, dataset, rank: int = 0, num_replicas: int = 1, shuffle: bool = True, seed: int = 0):
        if len(dataset) == 0:
            raise ValueError("InfiniteSampler: dataset is empty")
        if not (num_replicas >= 1 and 0 <= rank < num_replicas):
            raise ValueError(f"InfiniteSampler: need 0 <= rank < num_replicas, got rank={rank}, "
                             f"num_replicas={num_replicas}")
        super().__init__()
        self.dataset_size = len(dataset)
        self.rank, self.num_replicas, self.shuffle, self.seed = rank, num_replicas, shuffle, seed

    def __iter__(self):
        rnd = np.random.RandomState(self.seed)
        pos = 0  # Global position in the (conceptually concatenated) permutations.
        while True:
            order = rnd.permutation(self.dataset_size) if self.shuffle else np.arange(self.dataset_size)
            for idx in order:
                if pos % self.num_replicas == self.rank:
                    yield int(idx)
                pos += 1
