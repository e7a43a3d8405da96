"""Generators from network pickles of the official Projected GAN code and of NVIDIA's StyleGAN2-ADA / StyleGAN3,
imported into this toolkit's classes without running any code from the pickle.

Those files are Python pickles of the training objects, `{'G': ..., 'D': ..., 'G_ema': ..., ...}`. Loading one with
`pickle.load` imports the modules it names and calls whatever it says, and NVIDIA's files even carry the source code
of their network modules, which their `torch_utils.persistence` executes on load. Here a restricted unpickler
resolves every global the file names through a fixed allow-list:

* data constructors we implement or vet: tensors and parameters rebuilt from their bytes (read with
  `torch.load(weights_only=True)`; views must lie inside their storage), `OrderedDict`, `set`, `torch.Size`, torch
  dtypes, numpy scalars and arrays (no object dtype), and `EasyDict`;
* inert stand-ins (`StandIn`) for the known classes of the network code: they only keep the state pickle hands
  them and have no behaviour. The known classes are the modules of torch.nn (checked against torch itself), the
  classes of Projected GAN's `pg_modules` and of NVIDIA's persistent network classes (by name, from a fixed list;
  their embedded source is kept as text, never executed), the classes of `projector_plugin` (a host's snapshot
  with this plugin's D), and any name in the `timm` package, which only the discriminator's feature network uses
  and whose class names change between timm versions;
* anything else (`os.system`, `builtins.eval`, `subprocess.Popen`, an unknown class) stops loading with a
  one-line PickleImportError naming it, before any object is built from it.

A file of this kind is therefore read without importing anything it names, and its memory is bounded by its size
(no allocation is driven by a count the file states). The stand-in tree is read as state dicts, checked against
the architecture they map to, and loaded into `training.networks_fastgan.Generator` (official FastGAN and
FastGAN-lite, with `official_fastgan_kwargs`) or `training.networks_stylegan2.Generator` (the StyleGAN2 generators
of Projected GAN, StyleGAN2-ADA and StyleGAN3). `training.snapshot.load_snapshot` calls `load_as_snapshot` for any
pickle, so every CLI that takes a `--network` or `--resume` file takes these too.

Not imported (refused with a message that says so): conditional official FastGANs (their class-conditional
BatchNorm has no counterpart here), StyleGAN3's alias-free (config t/r) generators, and discriminators (a run
resumed from such a file starts with a fresh D).
"""

import _compat_pickle
import collections
import io
import pickle
import re
import zlib
from typing import Any, Dict, Tuple

import numpy as np
import torch

from training.snapshot import FORMAT, VERSION, SnapshotError

PICKLE_PROTOCOLS = (2, 3, 4, 5)


class PickleImportError(SnapshotError):
    """A network pickle is unreadable, names something outside the allow-list, or holds an unsupported network."""


def is_network_pickle(path: str) -> bool:
    """True when `path` starts like a pickle of protocol 2..5 (StyleGAN-style `.pkl`), not a torch.save zip."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and head[1] in PICKLE_PROTOCOLS


# ---------------------------------------------------------------------------------------------
# Stand-ins.


class StandIn:
    """An inert placeholder for one object of a class the pickle names (`_path`): it keeps the arguments and
    state that pickle hands it (constructor args, `__setstate__`, dict and list items) and does nothing else."""

    _path = "?"

    def __init__(self, *args, **kwargs):
        self._args, self._kwargs = args, kwargs

    def __setstate__(self, state):
        self._state = state

    def __setitem__(self, key, value):
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value):
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values):
        for value in values:
            self.append(value)

    @property
    def state(self) -> dict:
        """The object's __dict__ as pickled (for (dict, slots) states, the dict part); {} when it had none."""
        state = self.__dict__.get("_state")
        if isinstance(state, tuple) and len(state) == 2:
            state = state[0]
        return state if isinstance(state, dict) else {}

    def __repr__(self):
        return f"<StandIn {self._path}>"


_stand_in_classes: Dict[str, type] = {}


def stand_in_class(path: str) -> type:
    """The (cached) StandIn subclass for class path `path` ('module.Class')."""
    cls = _stand_in_classes.get(path)
    if cls is None:
        cls = type(path.rpartition(".")[2] or "StandIn", (StandIn,), {"_path": path})
        _stand_in_classes[path] = cls
    return cls


class PersistentStandIn(StandIn):
    """A `torch_utils.persistence` object of NVIDIA's code: class name, format version and the module source as
    text (`_source`, never executed), with the object's state."""


_PERSISTENT_CLASS_NAMES = frozenset([
    # StyleGAN2 (StyleGAN2-ADA training/networks.py, StyleGAN3 and Projected GAN networks_stylegan2.py).
    "Generator", "MappingNetwork", "SynthesisNetwork", "SynthesisBlock", "SynthesisLayer", "ToRGBLayer",
    "FullyConnectedLayer", "Conv2dLayer", "Discriminator", "DiscriminatorBlock", "DiscriminatorEpilogue",
    "MinibatchStdLayer",
    # StyleGAN3 alias-free networks (recognised so that the message can say they are not supported).
    "SynthesisInput",
    # ADA's augmentation pipeline (pickled as 'augment_pipe').
    "AugmentPipe",
])


def _reconstruct_persistent(meta):
    """Stand-in for `torch_utils.persistence._reconstruct_persistent_obj(meta)`."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise PickleImportError("a torch_utils.persistence record is malformed (expected type 'class' and a "
                                "class name)")
    name = meta["class_name"]
    if name not in _PERSISTENT_CLASS_NAMES:
        raise PickleImportError(f"names the persistent class '{name}', which is not one of the StyleGAN network "
                                f"classes this importer knows")
    obj = PersistentStandIn()
    obj._path = f"persistent.{name}"
    obj._source = meta.get("module_src") if isinstance(meta.get("module_src"), str) else None
    obj._state = meta.get("state") if isinstance(meta.get("state"), dict) else {}
    return obj


# Projected GAN's own (non-persistent) classes, by module.
_OFFICIAL_CLASSES = {
    "pg_modules.networks_fastgan": {"Generator", "DummyMapping", "FastganSynthesis", "FastganSynthesisCond"},
    "pg_modules.blocks": {"GLU", "Swish", "InitLayer", "UpBlockSmallCond", "UpBlockBigCond", "SEBlock",
                          "SeparableConv2d", "DownBlock", "DownBlockPatch", "ResidualConvUnit", "FeatureFusionBlock",
                          "NoiseInjection", "CCBN", "Interpolate"},
    "pg_modules.discriminator": {"SingleDisc", "SingleDiscCond", "MultiScaleD", "ProjectedDiscriminator"},
    "pg_modules.projector": {"F_RandomProj"},
}

# torch classes that are not nn.Modules but sit inside pickled modules (spectral-norm hooks, hook wrappers).
_TORCH_OBJECTS = frozenset([
    "torch.nn.utils.spectral_norm.SpectralNorm",
    "torch.nn.utils.spectral_norm.SpectralNormStateDictHook",
    "torch.nn.utils.spectral_norm.SpectralNormLoadStateDictPreHook",
    "torch.nn.modules.module._WrappedHook",
    "torch.nn.utils.weight_norm.WeightNorm",
])


def _is_plugin_class(module: str, name: str) -> bool:
    """True for a class defined in projector_plugin (a host's snapshot holds our D, e.g. StyleGAN3 with the plugin)."""
    if module != "projector_plugin" and not module.startswith("projector_plugin."):
        return False
    import importlib

    try:
        obj = getattr(importlib.import_module(module), name, None)  # this toolkit's own package
    except ImportError:
        return False
    return isinstance(obj, type) and obj.__module__ == module


def _is_torch_module_class(module: str, name: str) -> bool:
    """True for 'torch.nn.modules.x' / 'torch.ao.nn.*' / 'torch.nn.quantized.*' paths of real nn.Module classes."""
    if not (module.startswith(("torch.nn.modules.", "torch.ao.nn.", "torch.nn.quantized."))):
        return False
    import importlib
    import sys

    mod = sys.modules.get(module)
    if mod is None and module.startswith(("torch.ao.nn.", "torch.nn.quantized.")):
        try:  # torch's own submodules only (the prefix checked above); old paths of moved classes may not exist
            mod = importlib.import_module(module)
        except ImportError:
            return False
    obj = getattr(mod, name, None) if mod is not None else None
    return isinstance(obj, type) and issubclass(obj, torch.nn.Module)


# ---------------------------------------------------------------------------------------------
# Vetted data constructors.


def _load_storage_from_bytes(data):
    """Stand-in for torch.storage._load_from_bytes: a storage from the legacy torch.save bytes, weights_only."""
    if not isinstance(data, (bytes, bytearray)):
        raise PickleImportError("a tensor storage record does not hold bytes")
    try:
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises a zoo of types for bad data
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PickleImportError(f"a tensor storage cannot be read: {msg}") from None
    if not isinstance(storage, (torch.UntypedStorage, torch.TypedStorage)):
        raise PickleImportError(f"a tensor storage record holds a {type(storage).__name__}, not a storage")
    return storage


def _storage_numel(storage) -> int:
    if isinstance(storage, torch.TypedStorage):
        return storage._untyped_storage.nbytes() // torch._utils._element_size(storage.dtype)
    return storage.nbytes()


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, (torch.UntypedStorage, torch.TypedStorage)):
        raise PickleImportError("a tensor record does not point to a storage")
    if backward_hooks:
        raise PickleImportError("a tensor carries backward hooks (code); refusing it")
    size, stride = tuple(size), tuple(stride)
    if (len(size) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in size + stride)
            or not isinstance(storage_offset, int) or storage_offset < 0):
        raise PickleImportError("a tensor record has an invalid shape, stride or offset")
    numel = int(np.prod(size, dtype=np.int64)) if size else 1
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) if numel else storage_offset
    # Inside the storage, and no more elements than it holds: a zero-stride view of a huge shape would cost
    # no memory here but gigabytes as soon as anything copies it.
    if numel and (last >= _storage_numel(storage) or numel > _storage_numel(storage)):
        raise PickleImportError(f"a tensor of shape {list(size)} does not fit its storage")
    tensor = torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, bool(requires_grad),
                                             collections.OrderedDict())
    return tensor


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    if not torch.is_tensor(data):
        raise PickleImportError("a parameter record does not hold a tensor")
    if backward_hooks:
        raise PickleImportError("a parameter carries backward hooks (code); refusing it")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return _rebuild_parameter(data, requires_grad, backward_hooks)


_NUMPY_KINDS = re.compile(r"[<>|=]?[biufc?]\d{0,2}|float\d+|int\d+|uint\d+|bool")


def _numpy_dtype(spec, align=False, copy=True):
    if not isinstance(spec, str) or not _NUMPY_KINDS.fullmatch(spec):
        raise PickleImportError(f"a numpy dtype {spec!r} is not a plain number type; refusing it")
    return np.dtype(spec)


def _numpy_scalar(dtype, data=None):
    if (not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, bytes)
            or len(data) != dtype.itemsize):
        raise PickleImportError("a numpy scalar record is not a plain number")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_reconstruct(subtype, shape, dtype):
    # numpy pickles arrays as _reconstruct(ndarray, (0,), b'b') + __setstate__(raw bytes): the data then comes
    # from the file. Any other shape here would allocate memory the file does not pay for.
    if subtype is not np.ndarray or tuple(shape) != (0,):
        raise PickleImportError("a numpy array record is malformed")
    return np.ndarray.__new__(np.ndarray, (0,), "b")


def _latin1_bytes(text, encoding="latin1"):
    """Stand-in for _codecs.encode, which protocol 2 uses to write bytes: str -> bytes, latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise PickleImportError("a bytes record of protocol 2 is malformed")
    return text.encode("latin1")


class _EasyDict(dict):
    """dnnlib.util.EasyDict as data: a dict (attribute access is not needed here)."""


_DATA_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_bytes,
    ("torch", "Size"): torch.Size,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose globals come from the allow-list described in the module docstring, never from imports."""

    def find_class(self, module, name):
        # Protocol 2 writes Python 2's names (__builtin__.set); map them as pickle's own find_class does.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        data = _DATA_GLOBALS.get((module, name))
        if data is not None:
            return data
        path = f"{module}.{name}"
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if path in _TORCH_OBJECTS or _is_torch_module_class(module, name):
            return stand_in_class(path)
        if name in _OFFICIAL_CLASSES.get(module, ()) or _is_plugin_class(module, name):
            return stand_in_class(path)
        if (module == "timm" or module.startswith("timm.")) and re.fullmatch(r"[A-Za-z_]\w*", name):
            return stand_in_class(path)
        raise PickleImportError(f"names '{path}', which is not on the importer's allow-list of network classes "
                                f"and data types; refusing to load it (nothing from the file was run)")

    def persistent_load(self, pid):
        raise PickleImportError("uses persistent ids (a torch.save file of the legacy format?), which network "
                                "pickles do not")


def read_pickle(path: str) -> Any:
    """The content of network pickle `path`, with StandIn objects in place of every class instance.

    Raises PickleImportError (one line, naming the file) for a name off the allow-list, a malformed record or a
    damaged file.
    """
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f).load()
    except PickleImportError as err:
        raise PickleImportError(f"'{path}' {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, RecursionError, OverflowError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PickleImportError(f"'{path}' is not a readable network pickle (damaged or truncated?): {msg}") from None


# ---------------------------------------------------------------------------------------------
# Reading modules.


def module_state_dict(node: StandIn, prefix: str = "", out=None) -> Dict[str, torch.Tensor]:
    """The state dict a pickled nn.Module had: its parameters and persistent buffers, recursively."""
    out = {} if out is None else out
    state = node.state
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for key, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and key in skip):
                continue
            if not torch.is_tensor(value):
                raise PickleImportError(f"{prefix}{key} is a {type(value).__name__}, not a tensor")
            out[prefix + key] = value
    for key, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, StandIn):
            raise PickleImportError(f"{prefix}{key} is a {type(child).__name__}, not a module")
        module_state_dict(child, f"{prefix}{key}.", out)
    return out


def submodule(node: StandIn, dotted: str):
    """The child module `dotted` ('synthesis.feat_8') of a stand-in module, or None."""
    for part in dotted.split("."):
        node = (node.state.get("_modules") or {}).get(part) if isinstance(node, StandIn) else None
    return node


def class_path(node) -> str:
    return getattr(node, "_path", type(node).__name__)


def _plain(value):
    """Kwargs records (EasyDicts, tuples) as plain JSON-like data."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise PickleImportError(f"a constructor argument is a {type(value).__name__}, not plain data")


# ---------------------------------------------------------------------------------------------
# Official Projected GAN FastGAN -> training.networks_fastgan.Generator.

_SN_KEYS = {"weight_orig": "weight", "weight_u": "u", "weight_v": "v", "bias": "bias"}
_INIT_SN_KEYS = {"weight_orig": "parametrizations.weight.original", "weight_u": "parametrizations.weight.0._u",
                 "weight_v": "parametrizations.weight.0._v"}
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _fastgan_key_map(res: int, lite: bool) -> Dict[str, str]:
    """{official key: our key} of the official FastGAN at resolution `res` (layers it builds but never uses at
    this resolution, e.g. feat_256 of a 128x128 model, are left out)."""
    m = {}
    for k, v in _INIT_SN_KEYS.items():
        m[f"synthesis.init.init.0.{k}"] = f"synthesis.init.conv.{v}"
    for k in _BN_KEYS:
        m[f"synthesis.init.init.1.{k}"] = f"synthesis.init.norm.{k}"
    r = 8
    while r <= res:
        src, dst = f"synthesis.feat_{r}", f"synthesis.blocks.{r}"
        # lite: Upsample, conv, BN, GLU; full: Upsample, conv, noise, BN, GLU, conv, noise, BN, GLU.
        layers = [(1, None, 2)] if lite else [(1, 2, 3), (5, 6, 7)]
        for i, (conv, noise, norm) in enumerate(layers):
            for k in ("weight_orig", "weight_u", "weight_v"):
                m[f"{src}.{conv}.{k}"] = f"{dst}.convs.{i}.{_SN_KEYS[k]}"
            if noise is not None:
                m[f"{src}.{noise}.weight"] = f"{dst}.noises.{i}.strength"
            for k in _BN_KEYS:
                m[f"{src}.{norm}.{k}"] = f"{dst}.norms.{i}.{k}"
        r *= 2
    for t in (64, 128, 256, 512):
        if t <= res:
            for conv in (1, 3):
                for k in ("weight_orig", "weight_u", "weight_v"):
                    m[f"synthesis.se_{t}.main.{conv}.{k}"] = f"synthesis.sle.{t}.gate.{conv}.{_SN_KEYS[k]}"
    for k in ("weight_orig", "weight_u", "weight_v", "bias"):
        m[f"synthesis.to_big.{k}"] = f"synthesis.to_rgb.{_SN_KEYS[k]}"
    return m


def _import_official_fastgan(G: StandIn, path: str, which: str) -> Tuple[dict, dict]:
    from training.networks_fastgan import official_fastgan_kwargs

    synthesis = submodule(G, "synthesis")
    if synthesis is None:
        raise PickleImportError(f"'{path}': {which} has no synthesis network")
    if class_path(synthesis).endswith("FastganSynthesisCond"):
        raise PickleImportError(f"'{path}': {which} is a class-conditional official FastGAN; its conditional "
                                f"BatchNorm has no counterpart in this toolkit, so only unconditional ones import")
    attrs = G.state
    res, channels = attrs.get("img_resolution"), attrs.get("img_channels", 3)
    if res not in (128, 256, 512, 1024) or channels not in (1, 3):
        raise PickleImportError(f"'{path}': {which} has img_resolution={res!r}, img_channels={channels!r} (the "
                                f"official FastGAN runs at 128..1024 with 1 or 3 channels)")
    feat_8 = submodule(synthesis, "feat_8")
    n_layers = len((feat_8.state.get("_modules") if feat_8 is not None else None) or {})
    if n_layers not in (4, 9):
        raise PickleImportError(f"'{path}': {which}'s first up-block has {n_layers} layers; expected 4 (fastgan_lite) "
                                f"or 9 (fastgan)")
    lite = n_layers == 4
    sd = module_state_dict(G)
    init_w = sd.get("synthesis.init.init.0.weight_orig")
    if init_w is None or init_w.ndim != 4:
        raise PickleImportError(f"'{path}': {which} has no spectrally normalised input layer "
                                f"(synthesis.init.init.0.weight_orig)")
    z_dim, ngf = int(init_w.shape[0]), int(init_w.shape[1]) // 32
    spec = dict(class_name="training.networks_fastgan.Generator", z_dim=z_dim, c_dim=0, w_dim=z_dim,
                img_resolution=int(res), img_channels=int(channels), ngf=ngf, **official_fastgan_kwargs(lite))
    key_map = _fastgan_key_map(int(res), lite)
    unused = re.compile(r"synthesis\.(feat|se)_(\d+)\.")
    state = {}
    for key, value in sd.items():
        if key in key_map:
            if key.endswith(("2.weight", "6.weight")) and key_map[key].endswith("strength"):
                value = value.reshape([])
            state[key_map[key]] = value
        else:
            m = unused.match(key)
            if not (m and int(m.group(2)) > res):  # layers built but unused at this resolution are dropped
                raise PickleImportError(f"'{path}': {which} has a tensor '{key}' that the official FastGAN "
                                        f"architecture does not have; refusing to guess")
    return spec, state


# ---------------------------------------------------------------------------------------------
# StyleGAN2 generators (Projected GAN, StyleGAN2-ADA, StyleGAN3) -> training.networks_stylegan2.Generator.

_SG2_MAPPING_KWARGS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier",
                       "w_avg_beta"}
_SG2_SYNTHESIS_KWARGS = {"channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture",
                         "resample_filter", "use_noise", "activation", "fp16_channels_last", "fused_modconv_default",
                         "kernel_size"}


def _import_stylegan2(G: StandIn, path: str, which: str) -> Tuple[dict, dict]:
    synthesis = submodule(G, "synthesis")
    if synthesis is not None and submodule(synthesis, "input") is not None:
        raise PickleImportError(f"'{path}': {which} is a StyleGAN3 (alias-free, config t/r) generator, which has "
                                f"no counterpart in this toolkit; StyleGAN2 generators import")
    init_args, kwargs = G.state.get("_init_args") or (), G.state.get("_init_kwargs")
    if init_args or not isinstance(kwargs, dict):
        raise PickleImportError(f"'{path}': {which} does not record its constructor keywords (_init_kwargs)")
    kwargs = _plain(kwargs)
    synthesis_kwargs = kwargs.pop("synthesis_kwargs", {}) or {}  # StyleGAN2-ADA nests them, StyleGAN3 does not
    mapping_kwargs = kwargs.pop("mapping_kwargs", {}) or {}
    spec = dict(class_name="training.networks_stylegan2.Generator")
    for name in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"):
        if name not in kwargs:
            raise PickleImportError(f"'{path}': {which} does not record '{name}'")
        spec[name] = kwargs.pop(name)
    synthesis_kwargs.update(kwargs)
    unknown = sorted(set(synthesis_kwargs) - _SG2_SYNTHESIS_KWARGS) + sorted(set(mapping_kwargs) -
                                                                             _SG2_MAPPING_KWARGS)
    if unknown:
        raise PickleImportError(f"'{path}': {which} was built with option(s) {', '.join(unknown)} that this "
                                f"toolkit's StyleGAN2 generator does not have")
    spec["mapping_kwargs"] = mapping_kwargs
    spec.update(synthesis_kwargs)
    return spec, module_state_dict(G)


# ---------------------------------------------------------------------------------------------
# The entry point.


def _kind(G) -> str:
    path = class_path(G)
    if path == "pg_modules.networks_fastgan.Generator":
        return "fastgan"
    if path == "persistent.Generator":
        return "stylegan2"
    return ""


def _check_against(spec: dict, state: dict, path: str, which: str) -> None:
    """Build the network on the meta device (no memory) and compare every tensor's name and shape with `state`
    before anything is allocated; raises PickleImportError naming the first differences.

    Tensors only this toolkit's class has are added to `state`: `mapping.w_avg` as zeros (the official FastGAN
    tracks no average w, so truncation pulls towards 0, the centre of its normalised z) and `noise_const` as fixed
    seeded noise (the official FastGAN draws fresh noise at every call; this makes noise_mode='const' defined)."""
    from training.snapshot import build_network

    with torch.device("meta"):
        net = build_network(spec, path=path, device="meta")
    own = net.state_dict()
    optional = {k for k in own if k.endswith(("noise_const", "mapping.w_avg"))}  # ours only: kept as built
    missing = sorted(set(own) - set(state) - optional)
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        details = "; ".join(part for part in (
            f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
            f"shapes differ for {[(k, list(state[k].shape), list(own[k].shape)) for k in wrong[:2]]}" if wrong
            else "") if part)
        raise PickleImportError(f"'{path}': {which} does not fit {spec['class_name']} ({details})")
    for key in sorted(optional - set(state)):
        if key.endswith("w_avg"):
            state[key] = torch.zeros(own[key].shape)
        else:
            gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
            state[key] = torch.randn(own[key].shape, generator=gen)


def import_generators(path: str) -> dict:
    """Read network pickle `path` -> dict(spec, G, G_ema, source, training_set_kwargs, progress).

    spec: the toolkit generator config ({'class_name': ..., **kwargs}); G, G_ema: state dicts for it (absent if
    the pickle has none); source: a short description ('Projected GAN fastgan_lite', 'StyleGAN2'). Raises
    PickleImportError (one line naming the file) for anything it cannot import safely.
    """
    data = read_pickle(path)
    if not isinstance(data, dict) or not any(isinstance(data.get(k), StandIn) for k in ("G_ema", "G")):
        raise PickleImportError(f"'{path}' is a pickle but not a network pickle of StyleGAN2-ADA, StyleGAN3 or "
                                f"Projected GAN (no 'G_ema' or 'G' network in it)")
    out, spec = {}, None
    for which in ("G", "G_ema"):
        G = data.get(which)
        if not isinstance(G, StandIn):
            continue
        kind = _kind(G)
        if kind == "fastgan":
            this_spec, state = _import_official_fastgan(G, path, which)
            source = f"Projected GAN {'fastgan_lite' if this_spec['lite'] else 'fastgan'}"
        elif kind == "stylegan2":
            this_spec, state = _import_stylegan2(G, path, which)
            source = "StyleGAN2"
        else:
            raise PickleImportError(f"'{path}': {which} is a {class_path(G)}, not a generator this toolkit can "
                                    f"import (official FastGAN or StyleGAN2)")
        if spec is not None and this_spec != spec:
            raise PickleImportError(f"'{path}': G and G_ema have different architectures")
        spec = this_spec
        _check_against(spec, state, path, which)
        out[which] = state
        out["source"] = source
    out["spec"] = spec
    kwargs = data.get("training_set_kwargs")
    out["training_set_kwargs"] = _dataset_kwargs(kwargs) if isinstance(kwargs, dict) else None
    progress = data.get("progress")
    nimg = progress.get("cur_nimg") if isinstance(progress, dict) else None
    out["progress"] = {"cur_nimg": int(nimg.reshape(-1)[0]) if torch.is_tensor(nimg) and nimg.numel() else 0}
    return out


def _dataset_kwargs(kwargs: dict):
    """Their training_set_kwargs as this toolkit's dataset config (their class has the same name and options)."""
    try:
        kwargs = _plain(kwargs)
    except PickleImportError:
        return None
    if not isinstance(kwargs.get("path"), str):
        return None
    keep = ("path", "use_labels", "max_size", "xflip", "random_seed", "resolution")
    return dict(class_name="training.dataset.ImageFolderDataset", **{k: kwargs[k] for k in keep if k in kwargs})


def load_as_snapshot(path: str) -> dict:
    """The network pickle `path` as a dict in the layout of training.snapshot's files (kind 'imported'): networks
    {'G': spec}, G and/or G_ema state dicts, progress, config.training_set_kwargs, and `source`. No D: a run
    resumed from it builds a fresh discriminator."""
    imported = import_generators(path)
    data = dict(format=FORMAT, version=VERSION, kind="imported", source=imported["source"],
                networks={"G": imported["spec"]}, progress=imported["progress"], loss_state={},
                config={"training_set_kwargs": imported["training_set_kwargs"]} if imported["training_set_kwargs"]
                else {})
    for which in ("G", "G_ema"):
        if which in imported:
            data[which] = imported[which]
    if "G_ema" not in data:
        data["G_ema"] = data["G"]
    if "G" not in data:
        data["G"] = data["G_ema"]
    return data
