"""Training snapshots: plain tensors + a JSON-like config, never pickled code, never arbitrary classes.

Two kinds of file live in a run directory, both dicts that `torch.load(path, weights_only=True)` can read:

* history snapshots `network-snapshot-KKKKKK.III.pt` (name = images seen, see torch_utils.snapshot_naming),
  one per snapshot interval, lean: the networks, no optimizer state;
* one rolling resume file `resume-state.pt`, atomically replaced at every snapshot (and when training is
  interrupted by SIGTERM/SIGINT): everything an exact continuation needs, optimizer states included.

Layout (keys):

    format, version         'projected-gan-toolkit/snapshot', 2
    kind                    'snapshot' (lean history snapshot), 'resume' (full resume state), or 'generator' (a
                            generator-only file for sharing a trained model: networks {'G'}, G_ema, progress,
                            config; see `save_generator_only`)
    weights_dtype           'float32' or 'float16' (generator files only): the dtype G_ema is stored in; loading
                            casts it to the network's own dtype
    networks                {'G': {'class_name': ..., **kwargs}, 'D': {...}}  fully resolved
                            constructor arguments (c_dim, img_resolution, img_channels included)
    G, G_ema, D             state_dicts (CPU tensors); D without the parts that its config rebuilds
    D_rebuilt               {'keys': [...], 'sha256': hex}: the state-dict entries of D left out because building
                            D from `networks['D']` recreates them (the projected D's pretrained feature network and
                            fixed random projection), and a digest that the rebuilt values must match
    G_opt, D_opt            optimizer state_dicts (only in the resume file)
    progress                {'cur_nimg', 'cur_tick', 'batch_idx'}
    rng                     {'torch', 'cuda', 'numpy', 'python'} generator states
    loss_state              {name: tensor} of the loss object (e.g. StyleGAN2Loss.pl_mean)
    config                  the run's training options (the class_name + kwargs dicts etc.)
    checksum                'sha256:<hex>' over a canonical serialisation of every other key (tensors: dtype,
                            shape, bytes); a file whose content does not match is refused as damaged

Security: `weights_only=True` keeps pickled code out, and networks are rebuilt by class name only for classes of
an allow-list (this toolkit's networks and losses, `ALLOWED_CLASSES` / `ALLOWED_MODULES`) plus the ones the user
names (`extra_classes`, the CLIs' `--allow-class=module.Class`); the names are checked before anything is
imported, and constructor arguments must be plain data. Writes are atomic (temporary file, fsync, rename), so a
crash, even SIGKILL, leaves the previous file or the new one, never a truncated one.
"""

import copy
import glob
import hashlib
import inspect
import json
import os
import random
import re
import sys
import zipfile
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch

from torch_utils import snapshot_naming, util
from torch_utils.snapshot_naming import SNAPSHOT_RE, parse_snapshot_name, snapshot_sort_key  # noqa: F401  (API)

FORMAT = "projected-gan-toolkit/snapshot"
VERSION = 2
RESUME_STATE_NAME = "resume-state.pt"
RUN_DIR_RE = re.compile(r"(\d+)-.*")

# Classes a snapshot may name: every class defined in these modules ...
ALLOWED_MODULES = ("training.networks_fastgan", "training.networks_stylegan2")
# ... and these.
ALLOWED_CLASSES = frozenset([
    "projector_plugin.ProjectedDiscriminator",
    "projector_plugin.discriminator.ProjectedDiscriminator",
    "projector_plugin.ProjectedGANLoss",
    "projector_plugin.loss.ProjectedGANLoss",
    "training.loss.StyleGAN2Loss",
    "training.dataset.ImageFolderDataset",
    "torch_utils.image_dataset.ImageFolderDataset",
])
ALLOW_OPTION = "--allow-class"

# State-dict prefixes of discriminators whose construction recreates those entries exactly (pretrained, frozen
# feature network; fixed-seed random projection). A D module may instead define `rebuilt_state_prefixes()`.
_REBUILT_PREFIXES = {
    "projector_plugin.ProjectedDiscriminator": ("feature_network.", "projection."),
    "projector_plugin.discriminator.ProjectedDiscriminator": ("feature_network.", "projection."),
}


class SnapshotError(RuntimeError):
    """A file is missing, unreadable, damaged, not a snapshot of this toolkit, or names a class not allowed."""


kimg_label = snapshot_naming.kimg_label
snapshot_name = snapshot_naming.snapshot_name


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
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise SnapshotError(f"cannot read best pointer '{path}': {err}") from err
    snap = data.get("snapshot_pkl") if isinstance(data, dict) else None
    if not isinstance(snap, str) or not snap:
        raise SnapshotError(f"'{path}' is not a best-snapshot pointer (no 'snapshot_pkl' entry)")
    full = snap if os.path.isabs(snap) else os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)),
                                                                          snap))
    if not os.path.isfile(full):
        raise SnapshotError(f"best pointer '{path}' names snapshot '{full}', which does not exist (deleted?)")
    return full


# ---------------------------------------------------------------------------------------------
# Allow-list: which classes a file may make us construct.


def _normalize_extra(extra_classes: Iterable[str]) -> frozenset:
    if isinstance(extra_classes, str):
        extra_classes = [extra_classes]
    return frozenset(str(name).strip() for name in (extra_classes or ()))


def check_class_allowed(class_name: Any, path: str = None, extra_classes: Iterable[str] = (), what: str = "a network"):
    """Raise SnapshotError unless `class_name` is on the allow-list or in `extra_classes` (exact dotted names).

    Only the name is checked, nothing is imported: importing a module can itself run code.
    """
    where = f"'{path}'" if path else "the snapshot"
    if not isinstance(class_name, str) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", class_name):
        raise SnapshotError(f"{where} names {what} class {class_name!r}, which is not a dotted 'module.Class' name "
                            f"(nor one that {ALLOW_OPTION} can allow); refusing to load it")
    if class_name in ALLOWED_CLASSES or class_name in _normalize_extra(extra_classes):
        return
    module, _, attr = class_name.rpartition(".")
    if module in ALLOWED_MODULES and not attr.startswith("_"):
        return
    raise SnapshotError(f"{where} names {what} class '{class_name}', which is not one of this toolkit's network or "
                        f"loss classes; refusing to build it (pass {ALLOW_OPTION}={class_name} if you trust the file)")


def _resolve_allowed_class(class_name: str, path: str, extra_classes, what: str):
    """The class object of an allowed name; it must be a class (defined in its module, for wildcard modules)."""
    check_class_allowed(class_name, path, extra_classes, what)
    try:
        obj = util.get_obj_by_name(class_name)
    except ImportError as err:
        raise SnapshotError(f"'{path}' names {what} class '{class_name}', which cannot be imported: {err}") from err
    module = class_name.rpartition(".")[0]
    explicit = class_name in ALLOWED_CLASSES or class_name in _normalize_extra(extra_classes)
    if not isinstance(obj, type) or (not explicit and getattr(obj, "__module__", None) != module):
        raise SnapshotError(f"'{path}' names {what} '{class_name}', which is not a class of this toolkit; refusing to "
                            f"call it (pass {ALLOW_OPTION}=module.Class for a class you trust)")
    return obj


def check_plain_data(value: Any, path: str = None, where: str = "kwargs", depth: int = 0) -> None:
    """Raise SnapshotError unless `value` is plain data: dicts with str keys, lists, tuples, str, int, float,
    bool, None (no tensors, callables or other objects), nested at most 32 deep."""
    if depth > 32:
        raise SnapshotError(f"'{path}': {where} is nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise SnapshotError(f"'{path}': {where} has a non-string key {k!r}")
            check_plain_data(v, path, f"{where}.{k}", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_plain_data(v, path, f"{where}[{i}]", depth + 1)
        return
    raise SnapshotError(f"'{path}': {where} is a {type(value).__name__}, not plain data (str, number, bool, None, "
                        f"list, dict); refusing to load it")


def check_spec(spec: Any, path: str = None, extra_classes: Iterable[str] = (), what: str = "a network") -> None:
    """Validate a {'class_name': ..., **kwargs} config read from a file: allowed class, plain-data kwargs."""
    if not isinstance(spec, dict) or "class_name" not in spec:
        raise SnapshotError(f"'{path}': the config of {what} is not a {{'class_name': ..., ...}} dict")
    check_class_allowed(spec["class_name"], path, extra_classes, what)
    check_plain_data({k: v for k, v in spec.items() if k != "class_name"}, path, f"the kwargs of {spec['class_name']}")


def check_state_fits(spec: Dict[str, Any], state: Dict[str, torch.Tensor], path: str = None,
                     extra_classes: Iterable[str] = (), what: str = "G", optional=()) -> None:
    """Build the network of `spec` on the meta device (shapes only, no memory) and compare every tensor's name and
    shape with `state` (a stored state dict), so that a config that does not match its weights (e.g. a crafted
    `ngf` far larger than the file's tensors) is refused before anything is allocated. Keys in `optional` may be
    missing from `state`. Networks whose construction has no meta-device support are not checked here (loading
    their state checks them after the build)."""
    try:
        with torch.device("meta"):
            net = build_network(spec, extra_classes, device="meta", path=path)
    except (NotImplementedError, RuntimeError):
        return
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(own) - set(stored) - set(optional))
    unexpected = sorted(set(stored) - set(own))
    wrong = sorted(k for k in set(own) & set(stored) if own[k] != stored[k])
    if missing or unexpected or wrong:
        details = "; ".join(part for part in (
            f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
            "shapes differ: " + ", ".join(f"{k} stored {list(stored[k])}, config gives {list(own[k])}"
                                          for k in wrong[:2]) if wrong else "") if part)
        raise SnapshotError(f"'{path}': the {what} weights do not fit the network its config describes ({details})")


def build_network(spec: Dict[str, Any], extra_classes: Iterable[str] = (), device: Any = "cpu",
                  path: str = None) -> torch.nn.Module:
    """Construct a network from a resolved {'class_name': ..., **kwargs} config (e.g. a snapshot's `networks['G']`).

    Only allow-listed classes and those named in `extra_classes` ('module.Class' strings) are built; anything else
    raises SnapshotError naming `path`, the class and the --allow-class option, before any import. A config that
    the class rejects (unknown or impossible arguments) raises SnapshotError naming `path` as well.
    """
    check_spec(spec, path, extra_classes)
    kwargs = copy.deepcopy(spec)
    class_name = kwargs.pop("class_name")
    cls = _resolve_allowed_class(class_name, path, extra_classes, "a network")
    try:
        net = cls(**kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as err:  # the config does not fit the class
        msg = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
        raise SnapshotError(f"'{path}': cannot build {class_name} from the stored config: {msg}") from err
    return net.to(device)


def dataset_kwargs_from_snapshot(data: Dict[str, Any], path: str = None,
                                 extra_classes: Iterable[str] = ()) -> Optional[Dict[str, Any]]:
    """The validated `config['training_set_kwargs']` of a loaded snapshot (None when absent): allowed class, plain
    data. Callers that construct the dataset from a snapshot must go through this."""
    kwargs = (data.get("config") or {}).get("training_set_kwargs")
    if not kwargs:
        return None
    check_spec(kwargs, path, extra_classes, what="a dataset")
    # Like networks: a name the user allowed must still be a class (not e.g. a function that runs a command).
    cls = _resolve_allowed_class(kwargs["class_name"], path, extra_classes, "a dataset")
    if not isinstance(kwargs.get("path"), str) or not kwargs["path"]:
        raise SnapshotError(f"'{path}': config.training_set_kwargs.path is {kwargs.get('path')!r}, not a file or "
                            f"folder name")
    # Options a newer version of the dataset class added are dropped (with a note) rather than failing.
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(k for k in kwargs if k != "class_name" and k not in params)
        if unknown:
            print(f"Note: '{path}' records dataset option(s) {', '.join(unknown)} that this version's "
                  f"{kwargs['class_name']} does not have; ignoring them", file=sys.stderr)
            kwargs = {k: v for k, v in kwargs.items() if k not in unknown}
    return dict(kwargs)


# ---------------------------------------------------------------------------------------------
# RNG state <-> tensors (numpy and Python states are tuples of arrays/ints; weights_only loading
# accepts tensors, lists, dicts and numbers, so we convert).


def capture_rng_state() -> Dict[str, Any]:
    """Snapshot every global random generator the training code may draw from."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = dict(
        torch=torch.get_rng_state(),
        cuda=list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
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
    """Inverse of `loss_state_dict`. Without a `load_state_dict` of its own, only tensor attributes that the loss
    already has are replaced (by tensors, moved to their device and dtype): a file cannot set anything else."""
    if loss is None or not state:
        return
    if hasattr(loss, "load_state_dict") and callable(loss.load_state_dict) and not isinstance(loss, torch.nn.Module):
        loss.load_state_dict(state)
        return
    for name, value in state.items():
        old = getattr(loss, name, None) if isinstance(name, str) and not name.startswith("_") else None
        if torch.is_tensor(old) and torch.is_tensor(value):
            setattr(loss, name, value.to(device=old.device, dtype=old.dtype))


# ---------------------------------------------------------------------------------------------
# Checksum: a canonical serialisation of the content (independent of torch's zip layout).


def _feed(h, obj) -> None:
    if torch.is_tensor(obj):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}|".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}|".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, bool) or obj is None:
        h.update(f"{obj!r}|".encode())
    elif isinstance(obj, int):
        h.update(f"I{obj}|".encode())
    elif isinstance(obj, float):
        h.update(f"F{obj.hex()}|".encode())
    elif isinstance(obj, str):
        b = obj.encode("utf-8", "surrogatepass")
        h.update(f"S{len(b)}|".encode())
        h.update(b)
    else:
        raise TypeError(f"cannot store a {type(obj).__name__} in a snapshot (plain data and tensors only)")


def content_digest(data: Dict[str, Any]) -> str:
    """'sha256:<hex>' of every key of `data` except 'checksum'."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in data.items() if k != "checksum"})
    return "sha256:" + h.hexdigest()


def _tensor_digest(tensors: Dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    _feed(h, tensors)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Saving.


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


def rebuilt_state_keys(module: torch.nn.Module, spec: Optional[Dict[str, Any]]) -> list:
    """State-dict keys of `module` that constructing it from `spec` recreates exactly, so snapshots leave them out.

    The module's own `rebuilt_state_prefixes()` decides when it has one; otherwise the projected discriminator's
    `feature_network.` (pretrained backbone) and `projection.` (fixed-seed random projection) entries, unless it
    was built with pretrained=False (a random backbone is not reproducible). Entries that are trainable parameters
    are never left out.
    """
    if hasattr(module, "rebuilt_state_prefixes") and callable(module.rebuilt_state_prefixes):
        prefixes = tuple(module.rebuilt_state_prefixes())
    elif spec and spec.get("class_name") in _REBUILT_PREFIXES and spec.get("pretrained", True) is not False:
        prefixes = _REBUILT_PREFIXES[spec["class_name"]]
    else:
        prefixes = ()
    if not prefixes:
        return []
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    return [k for k in module.state_dict() if k.startswith(prefixes) and k not in trainable]


def atomic_torch_save(obj: Any, path: str) -> None:
    """torch.save to a temporary file in the destination directory, fsync, then rename over `path`.

    Raises util.DiskFullError ("no space left on device at PATH") when the disk or quota is full; `path` keeps
    its previous content and no temporary file stays behind.
    """
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

    With optimizers the file is a full resume state (kind 'resume'), without them a lean history snapshot.
    `networks` maps 'G' (and 'D') to the fully resolved constructor config ({'class_name': ..., **kwargs});
    it must be JSON-like (dicts, lists, str, numbers, bool, None).
    """
    data = dict(
        format=FORMAT,
        version=VERSION,
        kind="resume" if (G_opt is not None or D_opt is not None) else "snapshot",
        networks=copy.deepcopy(networks),
        G=cpu_state_dict(G),
        G_ema=cpu_state_dict(G_ema),
        progress=dict(progress or {}),
        rng=_to_cpu(rng if rng is not None else capture_rng_state()),
        loss_state=loss_state_dict(loss),
        config=copy.deepcopy(config) if config is not None else {},
    )
    if D is not None:
        state = cpu_state_dict(D)
        keys = rebuilt_state_keys(D, networks.get("D"))
        if keys:
            data["D_rebuilt"] = dict(keys=keys, sha256=_tensor_digest({k: state[k] for k in keys}))
            state = {k: v for k, v in state.items() if k not in set(keys)}
        data["D"] = state
    if G_opt is not None:
        data["G_opt"] = _to_cpu(G_opt.state_dict())
    if D_opt is not None:
        data["D_opt"] = _to_cpu(D_opt.state_dict())
    data["checksum"] = content_digest(data)
    atomic_torch_save(data, path)
    return path


WEIGHTS_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def save_generator_only(src: str, dest: str, weights_dtype: str = "float32",
                        extra_classes: Iterable[str] = ()) -> Dict[str, Any]:
    """Write the G_ema of snapshot `src` as a generator-only file `dest` (kind 'generator'): the networks' G config,
    the G_ema weights in `weights_dtype` ('float32' or 'float16': floating tensors only), the images seen and the
    run's options. It loads wherever a snapshot's G_ema does (gen_images, gen_video, calc_metrics, --resume as a
    pretrained G) through the same checks. Returns the written dict."""
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"weights_dtype={weights_dtype!r}: must be one of {', '.join(WEIGHTS_DTYPES)}")
    data = load_snapshot(src, mmap=True, extra_classes=extra_classes)  # mmap: D and optimizer states stay unread
    src = resolve_network_path(src)
    if "G_ema" not in data or "G" not in data["networks"]:
        raise SnapshotError(f"snapshot '{src}' has no 'G_ema' weights")
    dtype = WEIGHTS_DTYPES[weights_dtype]
    out = dict(format=FORMAT, version=VERSION, kind="generator", weights_dtype=weights_dtype,
               networks={"G": copy.deepcopy(data["networks"]["G"])},
               G_ema={k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in data["G_ema"].items()},
               progress=dict(data.get("progress") or {}), config=copy.deepcopy(data.get("config") or {}))
    out["checksum"] = content_digest(out)
    atomic_torch_save(out, dest)
    return out


# ---------------------------------------------------------------------------------------------
# Loading.

_warned_unchecked = set()


def load_snapshot(path: str, map_location: Any = "cpu", mmap: bool = False,
                  extra_classes: Iterable[str] = ()) -> Dict[str, Any]:
    """Load a snapshot or resume file with `torch.load(weights_only=True)` and check it before anyone uses it.

    `path` may also be a best-*.json pointer (see `resolve_network_path`). Raises SnapshotError (naming the file)
    when it is missing, truncated, damaged (checksum mismatch), of another format, or names a network class that
    is neither allow-listed nor in `extra_classes`. Files of format version 1 (no checksum) load with a one-time
    warning on stderr.
    """
    path = resolve_network_path(path)
    if not os.path.isfile(path):
        raise SnapshotError(f"snapshot '{path}' does not exist")
    from training import pickle_import  # imports this module: loaded lazily

    if pickle_import.is_network_pickle(path):
        # A network pickle of the official Projected GAN code or StyleGAN2-ADA/StyleGAN3: imported without running
        # anything it names (a restricted unpickler with inert stand-ins), then checked like our own files.
        data = pickle_import.load_as_snapshot(path)
        for name, spec in data["networks"].items():
            check_spec(spec, path, extra_classes, what=f"the {name} network")
        return data
    if not zipfile.is_zipfile(path):
        raise SnapshotError(f"'{path}' is not a snapshot written by torch.save (truncated, damaged or another format)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises a zoo of types for bad files
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SnapshotError(f"cannot load snapshot '{path}' (damaged or truncated?): {msg}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SnapshotError(f"'{path}' is not a training snapshot of this toolkit (no '{FORMAT}' marker)")
    try:
        version = int(data.get("version", 0))
    except (TypeError, ValueError):
        raise SnapshotError(f"'{path}' is damaged (unreadable version)") from None
    if version > VERSION:
        raise SnapshotError(f"'{path}' has snapshot version {version}; this code reads up to {VERSION}")
    if "checksum" in data:
        try:
            ok = data["checksum"] == content_digest(data)
        except TypeError:
            ok = False
        if not ok:
            raise SnapshotError(f"'{path}' is damaged (checksum mismatch): its content changed after it was written; "
                                f"use another snapshot")
    elif version >= 2:
        raise SnapshotError(f"'{path}' is damaged (checksum missing)")
    elif path not in _warned_unchecked:
        _warned_unchecked.add(path)
        print(f"Warning: '{path}' has no checksum (snapshot format version {version}); it cannot be checked for "
              f"damage", file=sys.stderr)
    networks = data.get("networks")
    if not isinstance(networks, dict):
        raise SnapshotError(f"'{path}' has no 'networks' config")
    for name, spec in networks.items():
        check_spec(spec, path, extra_classes, what=f"the {name} network")
    check_fields(data, path)
    return data


def _field_error(path, field, value, expected):
    shown = repr(value) if not torch.is_tensor(value) else f"a {value.dtype} tensor of shape {list(value.shape)}"
    return SnapshotError(f"'{path}': field {field} is {shown[:80]}, expected {expected}")


def _check_count(value, path, field):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _field_error(path, field, value, "a non-negative integer")


def check_fields(data: Dict[str, Any], path: str) -> None:
    """Type-check what the loaders read from a snapshot beyond the networks (a file can carry a valid checksum and
    still hold the wrong types, e.g. made by hand): progress counts, state dicts, RNG states, loss state. Raises
    SnapshotError naming the first bad field."""
    if "weights_dtype" in data and data["weights_dtype"] not in WEIGHTS_DTYPES:
        raise _field_error(path, "weights_dtype", data["weights_dtype"], f"one of {', '.join(WEIGHTS_DTYPES)}")
    progress = data.get("progress", {})
    if not isinstance(progress, dict):
        raise _field_error(path, "progress", progress, "a dict")
    for key in ("cur_nimg", "cur_tick", "batch_idx"):
        if key in progress:
            _check_count(progress[key], path, f"progress.{key}")
    for name in ("G", "G_ema", "D", "loss_state"):
        state = data.get(name)
        if state is None:
            continue
        if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
            raise _field_error(path, name, type(state).__name__ if not isinstance(state, dict) else "a dict holding "
                               "non-tensors", "a dict of tensors (a state dict)")
    rng = data.get("rng")
    if rng is None:
        return
    if not isinstance(rng, dict):
        raise _field_error(path, "rng", rng, "a dict")
    if "torch" in rng and not (torch.is_tensor(rng["torch"]) and rng["torch"].dtype == torch.uint8):
        raise _field_error(path, "rng.torch", rng["torch"], "a uint8 tensor")
    if "cuda" in rng and not (isinstance(rng["cuda"], list) and all(torch.is_tensor(t) for t in rng["cuda"])):
        raise _field_error(path, "rng.cuda", rng["cuda"], "a list of tensors")
    npst = rng.get("numpy")
    if npst is not None:
        if not isinstance(npst, dict) or not isinstance(npst.get("kind"), str):
            raise _field_error(path, "rng.numpy", npst, "a dict with kind, key, pos, has_gauss, cached_gaussian")
        key = npst.get("key")
        if not (torch.is_tensor(key) and key.shape == (624,) and not key.is_floating_point()):
            raise _field_error(path, "rng.numpy.key", key, "624 integers")
        for k in ("pos", "has_gauss"):
            _check_count(npst.get(k), path, f"rng.numpy.{k}")
        if not isinstance(npst.get("cached_gaussian"), float):
            raise _field_error(path, "rng.numpy.cached_gaussian", npst.get("cached_gaussian"), "a float")
    pyst = rng.get("python")
    if pyst is not None:
        internal = pyst.get("internal") if isinstance(pyst, dict) else None
        if not (isinstance(internal, list) and len(internal) == 625 and all(isinstance(v, int) for v in internal)):
            raise _field_error(path, "rng.python.internal", internal, "625 integers")
        if not isinstance(pyst.get("version"), int):
            raise _field_error(path, "rng.python.version", pyst.get("version"), "an integer")
        if pyst.get("gauss_next") is not None and not isinstance(pyst.get("gauss_next"), float):
            raise _field_error(path, "rng.python.gauss_next", pyst.get("gauss_next"), "a float or None")


def load_state(module: torch.nn.Module, data: Dict[str, Any], name: str, path: str = None) -> None:
    """Load `data[name]` (a state dict, 'G', 'G_ema' or 'D') into `module`, in place.

    Entries listed in `data[name + '_rebuilt']` were left out on saving: `module`, built from the same config, must
    hold exactly those and with the stored digest (else the file was trained with other frozen weights).
    Raises SnapshotError naming the file when anything does not fit.
    """
    rebuilt = data.get(f"{name}_rebuilt")
    try:
        if not rebuilt:
            module.load_state_dict(data[name], strict=True)
            return
        result = module.load_state_dict(data[name], strict=False)
    except (RuntimeError, KeyError) as err:
        raise SnapshotError(f"'{path}': the {name} weights do not fit the network built from the options "
                            f"(resume with the same --cfg/--loss/width options as the original run): {err}") from err
    keys = list(rebuilt.get("keys", []))
    if result.unexpected_keys or set(result.missing_keys) != set(keys):
        raise SnapshotError(f"'{path}': the {name} weights do not fit the network built from its config (missing "
                            f"{sorted(set(result.missing_keys) - set(keys))[:5]}, unexpected "
                            f"{sorted(result.unexpected_keys)[:5]})")
    own = module.state_dict()
    if _tensor_digest({k: own[k].detach().cpu() for k in keys}) != rebuilt.get("sha256"):
        raise SnapshotError(f"'{path}': the frozen parts of {name} rebuilt from its config (e.g. the pretrained "
                            f"feature network) differ from the ones it was trained with; use the same backbone "
                            f"weights as the original run")


def load_generator(path: str, which: str = "G_ema", device: Any = "cpu",
                   extra_classes: Iterable[str] = ()) -> torch.nn.Module:
    """Rebuild the generator stored in snapshot `path` and load weights `which` ('G_ema' or 'G').

    `extra_classes`: 'module.Class' names the user allows besides the built-in allow-list (--allow-class).
    Returns the network in eval mode, with requires_grad=False, on `device`.
    """
    if which not in ("G_ema", "G"):
        raise ValueError(f"which must be 'G_ema' or 'G', got {which!r}")
    data = load_snapshot(path, extra_classes=extra_classes)
    path = resolve_network_path(path)
    if which not in data or "G" not in data["networks"]:
        raise SnapshotError(f"snapshot '{path}' has no '{which}' weights")
    check_state_fits(data["networks"]["G"], data[which], path, extra_classes, which)
    net = build_network(data["networks"]["G"], extra_classes, device="cpu", path=path)
    load_state(net, data, which, path)
    return net.eval().requires_grad_(False).to(device)


PROJECTED_D = "projector_plugin.ProjectedDiscriminator"


def _fits(spec: Dict[str, Any], state: Dict[str, Any]) -> bool:
    """Whether the stored (trainable) D entries of `state` have the names and shapes of the D `spec` builds. The
    D is built on the meta device (shapes only: no memory, no pretrained weights) and on a forked RNG."""
    kwargs = {k: v for k, v in spec.items() if k != "class_name"}
    kwargs["pretrained"] = False
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            net = _resolve_allowed_class(PROJECTED_D, None, (), "a network")(**kwargs)
    except (TypeError, ValueError, RuntimeError, NotImplementedError):
        return False  # not this design (or options the meta device cannot build): loading then names the mismatch
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()
           if not k.startswith(("feature_network.", "projection."))}
    stored = {k: tuple(v.shape) for k, v in state.items() if not k.startswith(("feature_network.", "projection."))}
    return own == stored


def legacy_d_spec(spec: Dict[str, Any], state: Optional[Dict[str, Any]],
                  stored_spec: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The projected-D config that fits the weights `state` of a file written before 2026-12-06, when the D's
    design had other defaults: the CSM layout was "compact" (and not recorded), and `separable=True` meant strided
    depthwise blocks (now `separable="strided"`). `spec` is the config to build (a snapshot's own, or the current
    run's options when resuming; then `stored_spec` is the snapshot's). Returns `spec` itself when it fits, or
    when nothing older fits either (loading then reports the mismatch), else the older design's config."""
    if not isinstance(spec, dict) or spec.get("class_name") != PROJECTED_D or not isinstance(state, dict):
        return spec
    if stored_spec is not None and "layout" in stored_spec:
        return spec  # written since layouts are recorded: the options decide, as for any other D option
    candidates = [{**spec, "layout": "compact"}]
    if spec.get("separable") is True:
        candidates += [{**spec, "layout": "compact", "separable": "strided"}, {**spec, "separable": "strided"}]
    if _fits(spec, state):
        return spec
    return next((c for c in candidates if _fits(c, state)), spec)


def load_discriminator(path: str, device: Any = "cpu", extra_classes: Iterable[str] = ()) -> torch.nn.Module:
    """Rebuild the discriminator stored in snapshot `path` (eval mode, on `device`); its frozen parts are rebuilt
    from its config and checked against the digest stored with it."""
    data = load_snapshot(path, extra_classes=extra_classes)
    path = resolve_network_path(path)
    if "D" not in data or "D" not in data["networks"]:
        raise SnapshotError(f"snapshot '{path}' has no discriminator weights")
    spec = legacy_d_spec(data["networks"]["D"], data["D"], data["networks"]["D"])
    check_state_fits(spec, data["D"], path, extra_classes, "D", optional=(data.get("D_rebuilt") or {}).get("keys", ()))
    net = build_network(spec, extra_classes, device="cpu", path=path)
    load_state(net, data, "D", path)
    return net.eval().requires_grad_(False).to(device)


# ---------------------------------------------------------------------------------------------
# Finding snapshots and resume files.


def list_snapshots(directory: str) -> list:
    """History snapshot files directly in `directory`, oldest first by images seen (see snapshot_sort_key)."""
    paths = [p for p in glob.glob(os.path.join(glob.escape(directory), "network-snapshot-*.pt"))
             if parse_snapshot_name(p) is not None]
    return sorted(paths, key=snapshot_sort_key)


def _run_dirs(outdir: str) -> list:
    """[(run_id, dir)]: `outdir` itself (id -1) and its `NNNNN-*` subdirectories, oldest run first."""
    runs = [(-1, outdir)]
    for name in os.listdir(outdir):
        m = RUN_DIR_RE.fullmatch(name)
        if m and os.path.isdir(os.path.join(outdir, name)):
            runs.append((int(m.group(1)), os.path.join(outdir, name)))
    return sorted(runs)


def find_latest(outdir: str) -> Optional[str]:
    """Newest history snapshot under `outdir`: in the highest-numbered run dir `NNNNN-*` that has one, the most
    images seen. Looks in `outdir` itself too (a run dir passed directly). Returns None when there is none.
    Temporary files of interrupted writes never match, so a crashed save is never picked."""
    if not os.path.isdir(outdir):
        return None
    for _, run in reversed(_run_dirs(outdir)):
        snaps = list_snapshots(run)
        if snaps:
            return snaps[-1]
    return None


def find_resume(outdir: str) -> Optional[str]:
    """What `--resume=latest` continues: in the highest-numbered run dir under `outdir` (or `outdir` itself) that
    has a resume file or a history snapshot, its `resume-state.pt`, else its newest history snapshot."""
    if not os.path.isdir(outdir):
        return None
    for _, run in reversed(_run_dirs(outdir)):
        found = _resume_in_run_dir(run)
        if found:
            return found
    return None


def _resume_in_run_dir(run_dir: str) -> Optional[str]:
    state = os.path.join(run_dir, RESUME_STATE_NAME)
    if os.path.isfile(state):
        return state
    snaps = list_snapshots(run_dir)
    return snaps[-1] if snaps else None


def resolve_resume(resume: str, outdir: Optional[str] = None) -> str:
    """The file that `--resume=VALUE` designates: 'latest' (see `find_resume`, under `outdir`), a run directory
    (its resume-state.pt, else its newest history snapshot), or a file (resume file, history snapshot or
    best-*.json pointer). Raises SnapshotError naming what is missing."""
    if resume == "latest":
        if outdir is None:
            raise SnapshotError("--resume=latest needs the output directory to search")
        found = find_resume(outdir)
        if found is None:
            raise SnapshotError(f"--resume=latest: no {RESUME_STATE_NAME} or network-snapshot-*.pt under '{outdir}'")
        return found
    if os.path.isdir(resume):
        found = _resume_in_run_dir(resume)
        if found is None:
            raise SnapshotError(f"run directory '{resume}' has no {RESUME_STATE_NAME} or network-snapshot-*.pt")
        return found
    if not os.path.isfile(resume):
        raise SnapshotError(f"'{resume}' does not exist (give a resume file, a snapshot, a run directory or "
                            f"'latest')")
    return resolve_network_path(resume)


def _protected_snapshots(run_dir: str) -> set:
    """Absolute paths of the snapshots that best-*.json pointers in `run_dir` refer to (a resumed run's pointers
    may name its predecessor's snapshots, ../<run>/network-snapshot-*.pt)."""
    paths = set()
    for pointer in glob.glob(os.path.join(glob.escape(run_dir), "best-*.json")):
        try:
            with open(pointer, encoding="utf-8") as f:
                snap = json.load(f).get("snapshot_pkl")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(snap, str):
            paths.add(os.path.abspath(os.path.join(run_dir, snap)))
    return paths


def prune_snapshots(run_dir: str, keep: int) -> list:
    """Delete all but the newest `keep` history snapshots in `run_dir` (keep <= 0: delete none). Snapshots that a
    best-*.json pointer names are kept as well. Returns the removed paths."""
    if keep is None or keep <= 0:
        return []
    snaps = list_snapshots(run_dir)
    protected = _protected_snapshots(run_dir)
    removed = []
    for path in snaps[:-keep]:
        if os.path.abspath(path) in protected:
            continue
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


# ---------------------------------------------------------------------------------------------
# Leftovers of killed writers.

_TEMP_RE = re.compile(r"\.(?:network-snapshot-\d+(?:\.\d{3})?\.pt|" + re.escape(RESUME_STATE_NAME)
                      + r")\.(\d+)\..*\.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else (or cannot tell): leave its file alone
    return True


def remove_stale_temp_files(directory: str) -> list:
    """Delete half-written snapshot/resume temp files in `directory` whose writer process no longer exists (e.g.
    SIGKILLed). Returns the removed paths. Files of live processes on this machine are kept."""
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


def clean_stale_temp_files(outdir: str) -> list:
    """`remove_stale_temp_files` in `outdir` and in every run directory under it. Returns the removed paths."""
    if not os.path.isdir(outdir):
        return []
    removed = []
    for _, run in _run_dirs(outdir):
        removed.extend(remove_stale_temp_files(run))
    return removed
