"""Training snapshots: plain tensors + a JSON-like config, never pickled code.

A snapshot `network-snapshot-{kimg:06d}.pt` (or `network-snapshot-{kimg:06d}.{rest:03d}.pt`, the exact
number of images seen, when snapshots are less than 1 kimg apart: see `snapshot_name`) is a dict that
`torch.load(path, weights_only=True)` can read:

    format, version         'projected-gan-toolkit/snapshot', 1
    networks                {'G': {'class_name': ..., **kwargs}, 'D': {...}}  fully resolved
                            constructor arguments (c_dim, img_resolution, img_channels included)
    G, G_ema, D             state_dicts (CPU tensors)
    G_opt, D_opt            optimizer state_dicts (absent in generator-only exports)
    progress                {'cur_nimg', 'cur_tick', 'batch_idx'}
    rng                     {'torch', 'cuda', 'numpy', 'python'} generator states
    loss_state              {name: tensor} of the loss object (e.g. StyleGAN2Loss.pl_mean)
    config                  the run's training options (the class_name + kwargs dicts etc.)

Networks are rebuilt from `networks[...]` with `construct_class_by_name`, so a snapshot stays
loadable as long as the class of that name accepts those arguments. Writes are atomic: the file
is written to a temporary name in the same directory, fsync'ed and renamed, so a crash (even
SIGKILL) leaves either the previous snapshot or the new one, never a truncated file.
"""

import copy
import glob
import json
import os
import random
import re
import zipfile
from typing import Any, Dict, Optional

import numpy as np
import torch

from torch_utils import util

FORMAT = "projected-gan-toolkit/snapshot"
VERSION = 1
SNAPSHOT_RE = re.compile(r"network-snapshot-(\d+)(?:\.(\d{3}))?\.pt")
RUN_DIR_RE = re.compile(r"(\d+)-.*")


class SnapshotError(RuntimeError):
    """A file is missing, unreadable, or not a snapshot of this toolkit."""


def kimg_label(cur_nimg: int, fine: bool = False) -> str:
    """`{kimg:06d}` (kimg = cur_nimg // 1000), or with `fine=True` the exact count: 1504 -> '000001.504'.

    The training loop asks for fine labels when its outputs (snapshots, image grids) are less than 1 kimg
    apart, where integer kimg labels would collide.
    """
    cur_nimg = int(cur_nimg)
    return f"{cur_nimg // 1000:06d}.{cur_nimg % 1000:03d}" if fine else f"{cur_nimg // 1000:06d}"


def snapshot_name(cur_nimg: int, fine: bool = False) -> str:
    """File name of the snapshot taken after `cur_nimg` images: `network-snapshot-{kimg_label}.pt`, e.g.
    `network-snapshot-000001.pt`, or `network-snapshot-000001.504.pt` with `fine=True`."""
    return f"network-snapshot-{kimg_label(cur_nimg, fine)}.pt"


def parse_snapshot_name(name: str) -> Optional[tuple]:
    """(kimg, images or None) of a snapshot file name, None if `name` is not one.

    `images` is the exact image count of a fine name (`network-snapshot-000001.504.pt` -> (1, 1504)); an
    integer name only says that the count lies in [kimg * 1000, kimg * 1000 + 999] (-> (kimg, None)).
    """
    m = SNAPSHOT_RE.fullmatch(os.path.basename(name))
    if not m:
        return None
    kimg = int(m.group(1))
    return kimg, (kimg * 1000 + int(m.group(2)) if m.group(2) is not None else None)


def resolve_network_path(path: str) -> str:
    """The snapshot that `path` designates: `path` itself, or for a `best-<result>.json` pointer (any `.json`
    file written by metrics.summary) the snapshot it names, relative to the pointer's directory.

    Raises SnapshotError when the pointer is unreadable or its snapshot no longer exists.
    """
    if not str(path).lower().endswith(".json"):
        return path
    if not os.path.isfile(path):
        raise SnapshotError(f"best pointer '{path}' does not exist")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise SnapshotError(f"cannot read best pointer '{path}': {err}") from err
    snap = data.get("snapshot_pkl") if isinstance(data, dict) else None
    if not isinstance(snap, str) or not snap:
        raise SnapshotError(f"'{path}' is not a best-snapshot pointer (no 'snapshot_pkl' entry)")
    full = snap if os.path.isabs(snap) else os.path.join(os.path.dirname(os.path.abspath(path)), snap)
    if not os.path.isfile(full):
        raise SnapshotError(f"best pointer '{path}' names snapshot '{full}', which does not exist (deleted?)")
    return full


# ---------------------------------------------------------------------------------------------
# RNG state <-> tensors (numpy and Python states are tuples of arrays/ints; weights_only loading
# accepts tensors, lists, dicts and numbers, so we convert).


def capture_rng_state() -> Dict[str, Any]:
    """Snapshot every global random generator the training code may draw from."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = dict(
        torch=torch.get_rng_state(),
        cuda=[s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        numpy=dict(
            kind=str(np_state[0]),
            key=torch.from_numpy(np_state[1].astype(np.int64)),
            pos=int(np_state[2]),
            has_gauss=int(np_state[3]),
            cached_gaussian=float(np_state[4]),
        ),
        python=dict(version=int(py_state[0]), internal=list(py_state[1]), gauss_next=py_state[2]),
    )
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of `capture_rng_state` (CUDA states are restored for as many devices as both have)."""
    torch.set_rng_state(state["torch"].cpu())
    if torch.cuda.is_available() and state.get("cuda"):
        n = min(len(state["cuda"]), torch.cuda.device_count())
        for idx in range(n):
            torch.cuda.set_rng_state(state["cuda"][idx].cpu(), idx)
    npst = state["numpy"]
    np.random.set_state(
        (npst["kind"], npst["key"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
    )
    pyst = state["python"]
    random.setstate((pyst["version"], tuple(pyst["internal"]), pyst["gauss_next"]))


# ---------------------------------------------------------------------------------------------
# Loss state: tensors that live on the loss object (not in G or D) and evolve during training.


def loss_state_dict(loss: Any) -> Dict[str, torch.Tensor]:
    """The loss object's evolving state: its own `state_dict()` if it has one, else its tensor attributes."""
    if loss is None:
        return {}
    if hasattr(loss, "state_dict") and callable(loss.state_dict) and not isinstance(loss, torch.nn.Module):
        return {k: v.detach().cpu().clone() if torch.is_tensor(v) else v for k, v in loss.state_dict().items()}
    state = {}
    for name, value in vars(loss).items():
        if torch.is_tensor(value) and not isinstance(value, torch.nn.Parameter):
            state[name] = value.detach().cpu().clone()
    return state


def load_loss_state_dict(loss: Any, state: Dict[str, Any]) -> None:
    """Inverse of `loss_state_dict`; tensors are moved to the device of the attribute they replace."""
    if loss is None or not state:
        return
    if hasattr(loss, "load_state_dict") and callable(loss.load_state_dict) and not isinstance(loss, torch.nn.Module):
        loss.load_state_dict(state)
        return
    for name, value in state.items():
        old = getattr(loss, name, None)
        if torch.is_tensor(old) and torch.is_tensor(value):
            setattr(loss, name, value.to(device=old.device, dtype=old.dtype))
        else:
            setattr(loss, name, value.clone() if torch.is_tensor(value) else value)


# ---------------------------------------------------------------------------------------------
# Saving and loading.


def cpu_state_dict(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """state_dict with every tensor detached and copied to the CPU (so loading needs no GPU)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _to_cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_cpu(v) for v in obj)
    return obj


def atomic_torch_save(obj: Any, path: str) -> None:
    """torch.save to a temporary file in the destination directory, fsync, then rename over `path`."""
    # The writer's PID is part of the temporary name so that leftovers of a killed writer can be told apart
    # from a file that a live process is still writing (see remove_stale_temp_files).
    util.atomic_write(path, lambda f: torch.save(obj, f), tag=f"{os.getpid()}.", durable=True)


def save_snapshot(
    path: str,
    *,
    networks: Dict[str, Dict[str, Any]],
    G: torch.nn.Module,
    G_ema: torch.nn.Module,
    D: Optional[torch.nn.Module] = None,
    G_opt: Optional[torch.optim.Optimizer] = None,
    D_opt: Optional[torch.optim.Optimizer] = None,
    progress: Optional[Dict[str, int]] = None,
    rng: Optional[Dict[str, Any]] = None,
    loss: Any = None,
    config: Optional[Dict[str, Any]] = None,
) -> str:
    """Write a snapshot atomically and return its path. See the module docstring for the layout.

    `networks` maps 'G' (and 'D') to the fully resolved constructor config ({'class_name': ...,
    **kwargs}); it must be JSON-like (dicts, lists, str, numbers, bool, None).
    """
    data = dict(
        format=FORMAT,
        version=VERSION,
        networks=copy.deepcopy(networks),
        G=cpu_state_dict(G),
        G_ema=cpu_state_dict(G_ema),
        progress=dict(progress or {}),
        rng=_to_cpu(rng if rng is not None else capture_rng_state()),
        loss_state=loss_state_dict(loss),
        config=copy.deepcopy(config) if config is not None else {},
    )
    if D is not None:
        data["D"] = cpu_state_dict(D)
    if G_opt is not None:
        data["G_opt"] = _to_cpu(G_opt.state_dict())
    if D_opt is not None:
        data["D_opt"] = _to_cpu(D_opt.state_dict())
    atomic_torch_save(data, path)
    return path


def load_snapshot(path: str, map_location: Any = "cpu", mmap: bool = False) -> Dict[str, Any]:
    """Load a snapshot with `torch.load(weights_only=True)` and check that it is one of ours.

    `path` may also be a best-*.json pointer (see `resolve_network_path`). Raises SnapshotError (naming the
    file) when it is missing, truncated or of another format.
    """
    path = resolve_network_path(path)
    if not os.path.isfile(path):
        raise SnapshotError(f"snapshot '{path}' does not exist")
    if not zipfile.is_zipfile(path):
        raise SnapshotError(f"'{path}' is not a snapshot written by torch.save (truncated or another format)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises a zoo of types for bad files
        raise SnapshotError(f"cannot load snapshot '{path}': {err}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SnapshotError(f"'{path}' is not a training snapshot of this toolkit (no '{FORMAT}' marker)")
    if int(data.get("version", 0)) > VERSION:
        raise SnapshotError(f"'{path}' has snapshot version {data['version']}; this code reads up to {VERSION}")
    return data


def build_network(net_config: Dict[str, Any], device: Any = "cpu") -> torch.nn.Module:
    """Construct a network from a resolved {'class_name': ..., **kwargs} config."""
    kwargs = copy.deepcopy(net_config)
    return util.construct_class_by_name(**kwargs).to(device)


def load_generator(path: str, which: str = "G_ema", device: Any = "cpu") -> torch.nn.Module:
    """Rebuild the generator stored in snapshot `path` and load weights `which` ('G_ema' or 'G').

    Returns the network in eval mode, with requires_grad=False, on `device`.
    """
    if which not in ("G_ema", "G"):
        raise ValueError(f"which must be 'G_ema' or 'G', got {which!r}")
    data = load_snapshot(path)
    if which not in data:
        raise SnapshotError(f"snapshot '{path}' has no '{which}' weights")
    net = build_network(data["networks"]["G"], device="cpu")
    net.load_state_dict(data[which], strict=True)
    return net.eval().requires_grad_(False).to(device)


def load_discriminator(path: str, device: Any = "cpu") -> torch.nn.Module:
    """Rebuild the discriminator stored in snapshot `path` (eval mode, on `device`)."""
    data = load_snapshot(path)
    if "D" not in data:
        raise SnapshotError(f"snapshot '{path}' has no discriminator weights")
    net = build_network(data["networks"]["D"], device="cpu")
    net.load_state_dict(data["D"], strict=True)
    return net.eval().requires_grad_(False).to(device)


def _order_snapshots(entries):
    """Sort [(group, name_info, mtime, path)] by images seen within each group (e.g. a run dir).

    Fine names give the exact count; an integer name only its kimg, so two snapshots of the same kimg of which
    one has an integer name are ordered by modification time (they come from runs with different settings).
    """
    ambiguous = {}
    for group, (kimg, nimg), _, _ in entries:
        key = (group, kimg)
        ambiguous[key] = ambiguous.get(key, False) or nimg is None

    def key(entry):
        group, (kimg, nimg), mtime, path = entry
        exact = nimg if nimg is not None else kimg * 1000
        tie = (mtime, exact) if ambiguous[(group, kimg)] else (exact, mtime)
        return (group, kimg, tie, path)

    return sorted(entries, key=key)


def list_snapshots(directory: str) -> list:
    """Snapshot files directly in `directory`, oldest first by images seen (see `_order_snapshots`)."""
    entries = []
    for path in glob.glob(os.path.join(glob.escape(directory), "network-snapshot-*.pt")):
        info = parse_snapshot_name(path)
        if info is None:
            continue
        try:
            entries.append((0, info, os.path.getmtime(path), path))
        except OSError:
            continue
    return [e[-1] for e in _order_snapshots(entries)]


def find_latest(outdir: str) -> Optional[str]:
    """Newest snapshot under `outdir`: in the highest-numbered run dir `NNNNN-*` that has one, the most images seen.

    Looks in `outdir` itself too (a run dir passed directly). Returns None when there is none.
    Temporary files of interrupted writes never match, so a crashed save is never picked.
    """
    if not os.path.isdir(outdir):
        return None
    entries = []
    for path in glob.glob(os.path.join(glob.escape(outdir), "network-snapshot-*.pt")) + glob.glob(
        os.path.join(glob.escape(outdir), "*", "network-snapshot-*.pt")
    ):
        info = parse_snapshot_name(path)
        if info is None:
            continue
        parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
        run = RUN_DIR_RE.fullmatch(parent)
        run_id = int(run.group(1)) if run and os.path.abspath(os.path.dirname(path)) != os.path.abspath(outdir) else -1
        try:
            mtime = os.path.getmtime(path)
        except OSError:
            continue
        entries.append((run_id, info, mtime, path))
    if not entries:
        return None
    return _order_snapshots(entries)[-1][-1]


_TEMP_RE = re.compile(r"\.network-snapshot-\d+(?:\.\d{3})?\.pt\.(\d+)\..*\.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else (or cannot tell): leave its file alone
    return True


def remove_stale_temp_files(directory: str) -> list:
    """Delete half-written snapshot temp files whose writer process no longer exists (e.g. SIGKILLed).

    Returns the removed paths. Files of live processes on this machine are kept.
    """
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        m = _TEMP_RE.fullmatch(name)
        if m and not _pid_alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(os.path.join(directory, name))
            except OSError:
                pass
    return removed
