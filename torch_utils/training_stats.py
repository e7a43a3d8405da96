"""Cheap, rank-aware statistics for training loops (StyleGAN-style).

Anywhere in the code, `report(name, value)` adds the elements of `value` to a running
[count, sum, sum of squares] triple kept on the value's device, so reporting never forces a GPU
sync. A `Collector` periodically (once per tick) takes the increments since its last `update()`,
sums them across all ranks with a single all_reduce, and exposes mean/std/num per name.

    training_stats.report('Loss/G/loss', loss)        # any rank, any time, any shape
    collector = Collector(regex='Loss/.*')
    collector.update()                                # all ranks must call this together
    collector.mean('Loss/G/loss')

Call `init_multiprocessing(rank, sync_device)` once per process when running distributed
(`sync_device` must be a CUDA device for NCCL; None/CPU for gloo).
"""

import re
from typing import Dict, List, Optional

import numpy as np
import torch

_num_moments = 3  # [count, sum, sum of squares]
_reduce_dtype = torch.float32  # what values are cast to before squaring and summing on their own device
_counter_dtype = torch.float64  # what the running counters accumulate in
_rank = 0
_sync_device = None
_sync_called = False
_counters: Dict[str, Dict[torch.device, torch.Tensor]] = dict()  # name -> device -> running moments
_cumulative: Dict[str, torch.Tensor] = dict()  # name -> moments already moved off the devices (CPU, float64)


def init_multiprocessing(rank: int, sync_device: Optional[torch.device]) -> None:
    """Tell the module which rank this is and where cross-rank reductions happen.

    Must be called before the first `Collector.update()`. `sync_device=None` means CPU (gloo or a
    single process).
    """
    global _rank, _sync_device
    assert not _sync_called, "init_multiprocessing() must be called before the first Collector.update()"
    _rank = rank
    _sync_device = sync_device


def reset() -> None:
    """Forget every counter (tests and back-to-back runs in one process use this)."""
    global _sync_called
    _counters.clear()
    _cumulative.clear()
    _sync_called = False


def report(name: str, value):
    """Accumulate the elements of `value` (tensor, number or array) under `name`; returns `value` unchanged.

    Non-finite elements are counted like any other, so a NaN loss shows up as a NaN mean instead of
    silently vanishing.
    """
    if name not in _counters:
        _counters[name] = dict()
    elems = torch.as_tensor(value)
    if elems.numel() == 0:
        return value
    elems = elems.detach().flatten().to(_reduce_dtype)
    moments = torch.stack([torch.ones_like(elems).sum(), elems.sum(), elems.square().sum()])
    assert moments.ndim == 1 and moments.shape[0] == _num_moments
    moments = moments.to(_counter_dtype)
    device = moments.device
    if device not in _counters[name]:
        _counters[name][device] = torch.zeros_like(moments)
    _counters[name][device].add_(moments)
    return value


def report0(name: str, value):
    """Like `report()`, but only rank 0 contributes (for values that are identical on every rank)."""
    report(name, value if _rank == 0 else [])
    return value


def _world():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _sync(names: List[str]) -> List[torch.Tensor]:
    """Move the per-device counters of `names` into `_cumulative` and reduce across ranks.

    Returns the cumulative moments (CPU float64) for each name, summed over all ranks. Every rank
    must call this collectively; the set of names is unified first so ranks that never reported a
    name still take part with zeros (otherwise the all_reduce shapes would disagree and hang).
    """
    global _sync_called
    _sync_called = True
    world = _world()
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, sorted(names))
        names = sorted({n for ns in gathered for n in ns})

    deltas = []
    device = _sync_device if _sync_device is not None else torch.device("cpu")
    for name in names:
        delta = torch.zeros([_num_moments], dtype=_counter_dtype, device=device)
        for counter in _counters.get(name, {}).values():
            delta.add_(counter.to(device))
            counter.zero_()
        deltas.append(delta)
    if not deltas:
        return names, []
    deltas = torch.stack(deltas)
    if world > 1:
        torch.distributed.all_reduce(deltas)
    deltas = deltas.cpu()
    result = []
    for idx, name in enumerate(names):
        if name not in _cumulative:
            _cumulative[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        _cumulative[name].add_(deltas[idx])
        result.append(_cumulative[name].clone())
    return names, result


class Collector:
    """Turns the running counters into per-interval statistics.

    Args:
        regex:          Only names matching this regular expression are collected.
        keep_previous:  If a name got no new reports since the last `update()`, keep its previous
                        statistics instead of reporting it as empty.
    """

    def __init__(self, regex: str = ".*", keep_previous: bool = True):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous
        self._cumulative: Dict[str, torch.Tensor] = dict()
        self._moments: Dict[str, torch.Tensor] = dict()
        self.update()
        self._moments.clear()

    def names(self) -> List[str]:
        """Names matching the regex that have been reported so far (on this rank)."""
        return [name for name in _counters if self._regex.fullmatch(name)]

    def update(self) -> None:
        """Gather new reports from all ranks; every rank must call this at the same point."""
        if not self._keep_previous:
            self._moments.clear()
        names, cumulative = _sync(self.names())
        for name, cum in zip(names, cumulative):
            if not self._regex.fullmatch(name):
                continue
            if name not in self._cumulative:
                self._cumulative[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
            delta = cum - self._cumulative[name]
            self._cumulative[name].copy_(cum)
            if float(delta[0]) != 0:
                self._moments[name] = delta

    def _get_delta(self, name: str) -> torch.Tensor:
        if not self._regex.fullmatch(name):
            raise KeyError(f"'{name}' does not match this collector's regex")
        if name not in self._moments:
            self._moments[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        return self._moments[name]

    def num(self, name: str) -> int:
        """Number of scalars reported for `name` during the last interval (all ranks)."""
        return int(self._get_delta(name)[0])

    def mean(self, name: str) -> float:
        """Mean of the scalars reported during the last interval (NaN when there were none)."""
        delta = self._get_delta(name)
        if int(delta[0]) == 0:
            return float("nan")
        return float(delta[1] / delta[0])

    def std(self, name: str) -> float:
        """Standard deviation of the scalars reported during the last interval (NaN when none)."""
        delta = self._get_delta(name)
        if int(delta[0]) == 0 or not np.isfinite(float(delta[1])):
            return float("nan")
        if int(delta[0]) == 1:
            return float(0)
        mean = float(delta[1] / delta[0])
        raw_var = float(delta[2] / delta[0])
        return float(np.sqrt(max(raw_var - np.square(mean), 0)))

    def as_dict(self) -> Dict[str, Dict[str, float]]:
        """{name: {'num': ..., 'mean': ..., 'std': ...}} for every name seen in the last interval."""
        out = dict()
        for name in sorted(self._moments):
            if int(self._moments[name][0]) != 0:
                out[name] = dict(num=self.num(name), mean=self.mean(name), std=self.std(name))
        return out

    def __getitem__(self, name: str) -> float:
        """`collector[name]` is shorthand for `collector.mean(name)`."""
        return self.mean(name)

