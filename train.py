"""Train a Projected GAN (or a StyleGAN2 baseline) on an image dataset.

Examples:

    # CPU demo: the bundled emoji, small networks, 1.5 kimg (the README's demo command; timing there).
    python train.py --outdir=runs --cfg=fastgan_lite --data=data/fluent-emoji-64.zip --gpus=1 --batch=16 \\
        --ngf=32 --feat-res=64 --kimg=1.5 --tick=0.5 --snap=10 --img-snap=1 --mirror=1 --ema-kimg=0.25 \\
        --metrics=none --workers=1

    # One machine, 8 GPUs, the paper's FastGAN configuration at 256x256.
    python train.py --outdir=runs --cfg=fastgan --data=ffhq256.zip --gpus=8 --batch=64 --mirror=1

    # Several machines: torchrun starts the processes, this script reads RANK/WORLD_SIZE/LOCAL_RANK.
    torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 \\
        train.py --outdir=runs --cfg=fastgan --data=ffhq256.zip --batch=128

    # Continue the newest snapshot under --outdir (in a new run directory).
    python train.py --outdir=runs --cfg=fastgan --data=ffhq256.zip --gpus=8 --batch=64 --resume=latest

Every option that does not apply to the chosen --cfg/--loss is rejected rather than ignored, and so is
every value that cannot be meant (nan/inf, a negative duration, a --desc that would leave --outdir).
A run that fails before its first snapshot leaves no run directory behind. SIGTERM/SIGINT (also sent to the
launcher of --gpus=N processes, which forwards them) stop training at the next step: the resume state is saved,
one 'Stopped' line says where, and the exit status is 128+signal.
"""

import copy
import errno
import glob
import inspect
import json
import math
import os
import pickle
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import zipfile

import click
import torch

from torch_utils import distributed as dist
from torch_utils import image_io, util
from training import cli_common

CFGS = ("fastgan", "fastgan_lite", "stylegan2")
# Durations in kimg up to 10^9 (a trillion images): beyond that an image count overflows, and nothing is meant.
MAX_KIMG = 1e9
POSITIVE = cli_common.FiniteFloat(min=0, min_open=True, max=MAX_KIMG)
NON_NEGATIVE = cli_common.FiniteFloat(min=0, max=MAX_KIMG)
LOSSES = ("projected", "stylegan2")


# ---------------------------------------------------------------------------------------------
# Run directories.


def next_run_dir(outdir: str, desc: str) -> str:
    """outdir/NNNNN-desc with NNNNN one above the highest existing run number."""
    ids = []
    if os.path.isdir(outdir):
        for name in os.listdir(outdir):
            m = re.fullmatch(r"(\d+)-.*", name)
            if m and os.path.isdir(os.path.join(outdir, name)):
                ids.append(int(m.group(1)))
    return os.path.join(outdir, f"{max(ids, default=-1) + 1:05d}-{desc}")


OWNER_FILE = ".run-owner"  # {"host", "pid"} of the process that created a run directory


def create_run_dir(outdir: str, desc: str) -> str:
    """Create the next free run directory (retrying if another process grabbed the number first), with a note of
    which process owns it (see `remove_dead_empty_runs`)."""
    os.makedirs(outdir, exist_ok=True)
    for _ in range(100):
        run_dir = next_run_dir(outdir, desc)
        try:
            os.makedirs(run_dir)
        except FileExistsError:
            continue
        owner = json.dumps(dict(host=socket.gethostname(), pid=os.getpid())).encode()
        try:
            util.atomic_write(os.path.join(run_dir, OWNER_FILE), lambda f, data=owner: f.write(data))
        except BaseException:  # a signal or a full disk here must not leave an ownerless run directory
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return run_dir
    raise RuntimeError(f"could not create a run directory under '{outdir}'")


def remove_dead_empty_runs(outdir: str) -> list:
    """Delete run directories under `outdir` that hold no training state (no .pt file) and whose owning process, on
    this machine, no longer exists: what a run killed before its first snapshot (kill -9, power loss) leaves
    behind; a run that fails normally removes its own. Directories of live processes, of other machines, or without
    an owner note (older versions) are kept. Returns the removed paths."""
    from training import snapshot as snapshot_lib

    removed = []
    if not os.path.isdir(outdir):
        return removed
    for name in sorted(os.listdir(outdir)):
        run_dir = os.path.join(outdir, name)
        if not re.fullmatch(r"\d+-.*", name) or not os.path.isdir(run_dir) or _has_training_state(run_dir):
            continue
        try:
            with open(os.path.join(run_dir, OWNER_FILE), encoding="utf-8") as f:
                owner = json.load(f)
            host, pid = owner["host"], int(owner["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if host != socket.gethostname() or snapshot_lib._pid_alive(pid):
            continue
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(run_dir)
    return removed


# ---------------------------------------------------------------------------------------------
# Building the config from the options.


def _fail(param: str, message: str):
    raise click.BadParameter(message, param_hint=f"'--{param}'")


def _separable(value: str, stylegan2_G: bool):
    """--separable -> the D's `separable` argument. Projected GAN pairs separable mini-Ds with StyleGAN2 only."""
    return {"auto": stylegan2_G, "1": True, "0": False, "strided": "strided"}[value]


def _given(ctx: click.Context, name: str) -> bool:
    """True when the user set the option on the command line (not just its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source != click.core.ParameterSource.DEFAULT


def parse_grid(value):
    """--grid 'COLSxROWS' -> [cols, rows] (None stays None)."""
    try:
        grid = image_io.parse_grid(value)
    except ValueError as err:
        _fail("grid", str(err))
    return None if grid is None else list(grid)


def check_outdir_and_desc(outdir: str, desc) -> None:
    """--outdir must be (or be creatable as) a writable directory; --desc must stay inside it."""
    problem = cli_common.output_dir_problem(outdir)
    if problem:
        _fail("outdir", problem)
    if desc is not None:
        seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
        if any(sep in desc for sep in seps) or ".." in desc or "\0" in desc:
            _fail("desc", f"{desc!r} contains a path separator or '..'; the run directory must stay inside --outdir")


def build_config(opts: util.EasyDict, given, world_size: int) -> util.EasyDict:
    """Turn validated options into the training_loop config (plain dicts with class_name).

    `given(name)` tells whether an option was set explicitly; per-config defaults (learning rates,
    mapping depth, ...) apply only to options that were not.
    """
    cfg, loss_kind = opts.cfg, opts.loss
    is_sg2_G = cfg == "stylegan2"
    is_projected = loss_kind == "projected"
    uses_sg2_net = is_sg2_G or not is_projected

    # Options that only make sense for some configurations: reject instead of silently ignoring.
    def only_for(name, applies, what):
        if given(name.replace("-", "_")) and not applies:
            _fail(name, f"only applies to {what}; it would have no effect with --cfg={cfg} --loss={loss_kind}")

    only_for("cbase", uses_sg2_net, "StyleGAN2 networks (--cfg=stylegan2 or --loss=stylegan2)")
    only_for("cmax", uses_sg2_net, "StyleGAN2 networks (--cfg=stylegan2 or --loss=stylegan2)")
    only_for("map-depth", is_sg2_G, "the StyleGAN2 generator (--cfg=stylegan2); FastGAN has no mapping layers")
    only_for("ngf", not is_sg2_G, "the FastGAN generators (--cfg=fastgan or fastgan_lite)")
    only_for("backbone", is_projected, "the projected discriminator (--loss=projected)")
    only_for("backbone-weights", is_projected, "the projected discriminator (--loss=projected)")
    only_for("feat-res", is_projected, "the projected discriminator (--loss=projected)")
    only_for("reuse-fakes", is_projected, "the projected loss (--loss=projected)")
    only_for("proj-type", is_projected, "the projected discriminator (--loss=projected)")
    only_for("num-discs", is_projected, "the projected discriminator (--loss=projected)")
    only_for("r1-gamma", not is_projected, "the StyleGAN2 loss (--loss=stylegan2); Projected GANs use no R1")
    only_for("blur-sigma", is_projected, "the projected loss (--loss=projected)")
    if opts.g_arch not in ("default", "official"):
        _fail("g-arch", f"must be 'default' or 'official', got {opts.g_arch!r}")
    official_G = opts.g_arch == "official"

    # Batch split.
    if opts.batch < 1:
        _fail("batch", f"must be positive, got {opts.batch}")
    batch_gpu = opts.batch_gpu if opts.batch_gpu is not None else opts.batch // world_size
    if batch_gpu < 1:
        _fail("batch", f"--batch={opts.batch} is smaller than the number of processes ({world_size})")
    if opts.batch % (batch_gpu * world_size) != 0:
        _fail("batch", f"--batch={opts.batch} must be a multiple of --batch-gpu x processes = "
                       f"{batch_gpu} x {world_size} = {batch_gpu * world_size}")
    for name in ("kimg", "tick"):
        if not opts[name] > 0:
            _fail(name, f"must be positive, got {opts[name]}")
    if round(opts.kimg * 1000) < opts.batch:
        _fail("kimg", f"--kimg={opts.kimg:g} is less than one step of --batch={opts.batch} images "
                      f"({opts.batch / 1000:g} kimg): no snapshot would be written")
    if opts.snap < 1:
        _fail("snap", f"must be >= 1 tick, got {opts.snap}")
    if opts.img_snap is not None and opts.img_snap < 1:
        _fail("img-snap", f"must be >= 1 tick, got {opts.img_snap}")
    if opts.workers < 0:
        _fail("workers", f"must be >= 0, got {opts.workers}")
    for name in ("glr", "dlr"):
        if opts[name] is not None and not opts[name] > 0:
            _fail(name, f"must be positive, got {opts[name]}")

    c = util.EasyDict()
    c.training_set_kwargs = dict(class_name="training.dataset.ImageFolderDataset", path=opts.data,
                                 use_labels=bool(opts.cond), max_size=None, xflip=bool(opts.mirror),
                                 random_seed=opts.seed)
    c.data_loader_kwargs = dict(pin_memory=True, num_workers=opts.workers, prefetch_factor=2)

    # Generator.
    if is_sg2_G:
        map_depth = opts.map_depth if opts.map_depth is not None else (2 if is_projected else 8)
        if map_depth < 1:
            _fail("map-depth", f"must be >= 1, got {map_depth}")
        # Projected GAN's official StyleGAN2 config uses a smaller latent (z 64, w 128) than StyleGAN2's 512.
        c.G_kwargs = dict(class_name="training.networks_stylegan2.Generator", z_dim=64 if official_G else 512,
                          w_dim=128 if official_G else 512,
                          mapping_kwargs=dict(num_layers=map_depth), channel_base=opts.cbase,
                          channel_max=opts.cmax, num_fp16_res=0 if opts.fp32 else 4,
                          conv_clamp=None if opts.fp32 else 256, fused_modconv_default="inference_only")
        default_lr = 0.002
    else:
        if opts.ngf < 1:
            _fail("ngf", f"must be positive, got {opts.ngf}")
        c.G_kwargs = dict(class_name="training.networks_fastgan.Generator", z_dim=256, w_dim=256,
                          ngf=opts.ngf, lite=(cfg == "fastgan_lite"))
        if official_G:
            from training.networks_fastgan import official_fastgan_kwargs

            c.G_kwargs.update(official_fastgan_kwargs(cfg == "fastgan_lite"))
        default_lr = 0.0002
    if opts.g_precision != "fp32":  # recorded only when set: configs of fp32 runs stay as they were
        c.G_kwargs["precision"] = opts.g_precision
    for name in ("cbase", "cmax"):
        if opts[name] < 1:
            _fail(name, f"must be positive, got {opts[name]}")

    # Discriminator and loss.
    if is_projected:
        c.D_kwargs = dict(class_name="projector_plugin.ProjectedDiscriminator", backbone=opts.backbone,
                          proj_type=opts.proj_type, num_discs=opts.num_discs, cond=bool(opts.cond), diffaug=True,
                          separable=_separable(opts.separable, is_sg2_G), layout=opts.csm_layout,
                          bf16=False if opts.fp32 else None)
        if opts.backbone_weights is not None:
            c.D_kwargs["weights"] = opts.backbone_weights
        if opts.feat_res is not None:
            c.D_kwargs["feat_res"] = opts.feat_res
        c.loss_kwargs = dict(class_name="projector_plugin.ProjectedGANLoss", blur_init_sigma=opts.blur_sigma,
                             blur_fade_kimg=opts.batch * 200 / 32, reuse_fakes=bool(opts.reuse_fakes))
        c.G_reg_interval = None
        c.D_reg_interval = None
    else:
        c.D_kwargs = dict(class_name="training.networks_stylegan2.Discriminator", channel_base=opts.cbase,
                          channel_max=opts.cmax, num_fp16_res=0 if opts.fp32 else 4,
                          conv_clamp=None if opts.fp32 else 256, mbstd_group_size=math.gcd(4, batch_gpu))
        c.loss_kwargs = dict(class_name="training.loss.StyleGAN2Loss", r1_gamma=opts.r1_gamma,
                             style_mixing_prob=0.9 if is_sg2_G else 0, pl_weight=2 if is_sg2_G else 0,
                             pl_no_weight_grad=True)
        c.G_reg_interval = 4 if is_sg2_G else None
        c.D_reg_interval = 16

    glr = opts.glr if opts.glr is not None else default_lr
    dlr = opts.dlr if opts.dlr is not None else default_lr
    c.G_opt_kwargs = dict(class_name="torch.optim.Adam", lr=glr, betas=[0.0, 0.99], eps=1e-8)
    c.D_opt_kwargs = dict(class_name="torch.optim.Adam", lr=dlr, betas=[0.0, 0.99], eps=1e-8)

    c.metrics = list(opts.metrics)
    c.random_seed = opts.seed
    c.num_gpus = world_size
    c.batch_size = opts.batch
    c.batch_gpu = batch_gpu
    c.ema_kimg = opts.ema_kimg if opts.ema_kimg is not None else opts.batch * 10 / 32
    if c.ema_kimg < 0:
        _fail("ema-kimg", f"must be >= 0, got {c.ema_kimg}")
    c.ema_rampup = opts.ema_rampup if opts.ema_rampup is not None else (0.05 if is_sg2_G else None)
    c.total_kimg = opts.kimg
    c.kimg_per_tick = opts.tick
    c.network_snapshot_ticks = opts.snap
    if _loop_accepts("snapshot_keep"):
        c.snapshot_keep = opts.keep
    elif opts.keep:
        _fail("keep", "this version of training.training_loop cannot prune snapshots")
    c.image_snapshot_ticks = opts.img_snap if opts.img_snap is not None else opts.snap
    c.grid_size = parse_grid(opts.grid)
    c.cudnn_benchmark = True
    if _loop_accepts("allow_tf32"):
        c.allow_tf32 = bool(opts.tf32)
    elif opts.tf32:
        _fail("tf32", "this version of training.training_loop has no TF32 switch")
    c.resume = None
    c.cli = dict(cfg=cfg, loss=loss_kind, desc=opts.desc, command=" ".join(sys.argv))
    return c


def _loop_accepts(name: str) -> bool:
    """True when training_loop() has a parameter `name` (its **extra_options would swallow unknown ones)."""
    from training import training_loop

    return name in inspect.signature(training_loop.training_loop).parameters


def _validate_metrics(metrics):
    if not metrics:
        return
    try:
        from metrics import metric_main
    except ImportError as err:
        _fail("metrics", f"the metrics package cannot be imported ({err}); use --metrics=none")
    for metric in metrics:
        try:
            metric_main.validate_metric(metric)
        except metric_main.MetricError as err:
            _fail("metrics", f"{err} (or 'none' for no metrics)")


def _probe_network(kwargs: dict, what: str, option: str):
    """Construct a network on the meta device: catches impossible resolutions/options before any work. Returns the
    meta-device network (no memory: shapes only), or None when some op does not support the meta device."""
    kwargs = copy.deepcopy(kwargs)
    try:
        with torch.device("meta"):
            return util.construct_class_by_name(**kwargs)
    except (ValueError, TypeError, AssertionError) as err:
        _fail(option, f"the {what} cannot be built with these options: {err}")
    except (NotImplementedError, RuntimeError):
        return None  # some op does not support the meta device; the real build will report problems


def _activation_bytes(module, *inputs) -> int:
    """Bytes of every leaf module's outputs for one forward of `module` on meta-device `inputs`: what a training
    step keeps for the backward pass, about (views and in-place ops make it an over- rather than under-estimate)."""
    total = 0

    def hook(_module, _inputs, output):
        nonlocal total
        for t in output if isinstance(output, (list, tuple)) else [output]:
            if torch.is_tensor(t):
                total += t.numel() * t.element_size()

    hooks = [m.register_forward_hook(hook) for m in module.modules() if not any(True for _ in m.children())]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return total


def check_memory_estimate(c, common: dict, G_meta, D_meta, use_cuda: bool, given) -> dict:
    """Estimate the memory one training process needs and fail, naming the option that drives it, when it cannot
    fit: the machine's available memory (CPU) or the GPU's. Everything is measured on the meta device (shapes
    only): G's parameters x 5 (G, G_ema, gradient, Adam's two moments), D's trainable ones x 4 and frozen ones, and
    batch_gpu x the activations of one image through G and D. On an H200 this estimated 31 GB for FastGAN-256 at
    batch 64, where 26.6 GB was measured. Returns the parts (bytes)."""
    res, channels = common["img_resolution"], common["img_channels"]
    parts = dict(weights=0, activations=0)
    act_G = act_D = 0
    try:
        with torch.device("meta"):
            # Two images per forward (BatchNorm in training mode needs more than one value per channel), halved.
            if G_meta is not None:
                n = sum(p.numel() for p in G_meta.parameters())
                parts["weights"] += 4 * 5 * n
                c_in = torch.zeros([2, common["c_dim"]])
                act_G = _activation_bytes(G_meta, torch.zeros([2, G_meta.z_dim]), c_in) // 2
            if D_meta is not None:
                parts["weights"] += 4 * 4 * sum(p.numel() for p in D_meta.parameters())
                img = torch.zeros([2, channels, res, res])
                act_D = _activation_bytes(D_meta, img, torch.zeros([2, common["c_dim"]])) // 2
            elif c.D_kwargs["class_name"].startswith("projector_plugin"):
                import timm

                feat_res = c.D_kwargs.get("feat_res") or 224
                net = timm.create_model(c.D_kwargs["backbone"], pretrained=False, features_only=True).eval()
                parts["weights"] += 4 * (sum(p.numel() for p in net.parameters()) + 4 * 10_000_000)  # + mini-Ds
                act_D = 2 * _activation_bytes(net, torch.zeros([1, 3, feat_res, feat_res]))  # + projection, mini-Ds
    except (NotImplementedError, RuntimeError, TypeError, ValueError):
        return parts  # an op without a meta kernel: no estimate, the real run reports what it must
    parts["activations"] = c.batch_gpu * (act_G + act_D)
    total = parts["weights"] + parts["activations"]
    if use_cuda:
        limit, where = torch.cuda.get_device_properties(0).total_memory, "the GPU has"
    else:
        limit, where = cli_common.available_memory_bytes(), "the machine has"
    if total <= limit:
        return parts
    if parts["weights"] >= parts["activations"]:
        option = "ngf" if c.G_kwargs["class_name"].endswith("networks_fastgan.Generator") else "cbase"
        cause = f"the networks' weights and optimizer states ({cli_common.format_bytes(parts['weights'])})"
    else:
        option = "batch-gpu" if given("batch_gpu") else "batch"
        per_image = (f"{cli_common.format_bytes(act_G)} through G and {cli_common.format_bytes(act_D)} through D "
                     f"per image" + (", D's at --feat-res" if given("feat_res") and act_D > act_G else ""))
        cause = (f"the activations of {c.batch_gpu} images per process ({cli_common.format_bytes(parts['activations'])}"
                 f": {per_image}; --batch-gpu processes fewer at a time)")
    _fail(option, f"training would need about {cli_common.format_bytes(total)} of memory per process, mostly "
                  f"{cause}; {where} {cli_common.format_bytes(limit)}")


def validate_and_describe(c: util.EasyDict, opts: util.EasyDict):
    """Open the dataset and check everything that depends on it. Returns the run description."""
    from training import dataset as dataset_lib

    try:
        training_set = util.construct_class_by_name(**c.training_set_kwargs)
    except (dataset_lib.DatasetError, OSError, ValueError) as err:
        _fail("data", str(err))
    if opts.cond and not training_set.has_labels:
        _fail("cond", f"--cond=1 needs labels, but '{opts.data}' has no dataset.json labels "
                      f"(create them with dataset_tool.py, or use --cond=0)")
    res, channels = training_set.resolution, training_set.num_channels
    if channels not in (1, 3):
        _fail("data", f"'{opts.data}' has {channels}-channel images (grayscale or colour with an alpha channel); "
                      f"training takes 1 or 3 channels: convert it with dataset_tool.py, which composites "
                      f"transparency onto --background (white by default)")
    c.training_set_kwargs["resolution"] = res
    common = dict(c_dim=training_set.label_dim if opts.cond else 0, img_resolution=res, img_channels=channels)
    G_meta = _probe_network({**c.G_kwargs, **common}, f"generator for {res}x{res}x{channels} images", "cfg")
    D_meta = None
    if c.D_kwargs["class_name"].startswith("training.networks_stylegan2"):
        D_meta = _probe_network({**c.D_kwargs, **common}, f"discriminator for {res}x{res}x{channels} images", "loss")
    else:
        _check_projected_D(c.D_kwargs, res)
    c._probes = (G_meta, D_meta)
    _validate_metrics(c.metrics)
    if c.metrics:  # a dataset too small for a metric is refused now, not at the first snapshot
        from metrics import metric_main

        for metric in c.metrics:
            try:
                warning = metric_main.check_real_count(metric, len(training_set), opts.data)
            except metric_main.MetricError as err:
                _fail("metrics", str(err))
            if warning:
                print(f"Warning: --metrics: {warning}", file=sys.stderr)
    desc = f"{opts.cfg}-{opts.loss}-{training_set.name}-gpus{c.num_gpus}-batch{c.batch_size}"
    if opts.desc:
        desc += f"-{opts.desc}"
    return desc, common


def _check_projected_D(D_kwargs, res):
    """Cheap checks of the projected D options (building it would load the backbone weights)."""
    try:
        import timm
    except ImportError as err:
        _fail("loss", f"--loss=projected needs timm ({err})")
    backbone = D_kwargs["backbone"]
    if not timm.is_model(backbone.split(".")[0]):
        _fail("backbone", f"'{backbone}' is not a timm model name")
    feat_res = D_kwargs.get("feat_res")
    if feat_res is not None and (feat_res < 32 or feat_res % 32 or feat_res > 2048):
        _fail("feat-res", f"must be a multiple of 32 from 32 to 2048, got {feat_res}")
    if not 16 <= res <= 1024:
        _fail("data", f"the projected discriminator takes 16..1024 pixel images, the dataset has {res}x{res}")
    weights = D_kwargs.get("weights")
    if weights is not None:
        check_backbone_weights(weights, backbone)
    elif D_kwargs.get("pretrained", True):
        # Resolve the ImageNet weights now (package, cache, or a download with a deadline), before a run directory
        # exists; the discriminator built later reuses them (cached per process).
        from projector_plugin import feature_networks

        try:
            feature_networks.load_pretrained_state_dict(backbone, log=False)  # noted in the run's log later
        except (RuntimeError, OSError, ValueError) as err:
            _fail("backbone", f"no ImageNet weights for '{backbone}': {cli_common.one_line(err)[:300]}; give them "
                              f"with --backbone-weights=PATH (a torch.save'd state dict) to train offline")


def check_backbone_weights(path: str, backbone: str) -> None:
    """--backbone-weights must be a torch.save'd state dict of tensors that fits `backbone`.

    It is read with torch.load(weights_only=True), which refuses pickled objects other than tensors and plain
    containers, so a file that would run code when unpickled is rejected without running it.
    """
    if os.path.isdir(path):
        _fail("backbone-weights", f"'{path}' is a directory, not a weights file")
    if not os.path.isfile(path):
        _fail("backbone-weights", f"'{path}' does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        names = f" such as {found.group(1)}" if found else ""
        _fail("backbone-weights", f"'{path}' holds pickled objects other than tensors{names}; refusing to load it "
                                  f"(unpickling them could run code). Save a state dict with "
                                  f"torch.save(model.state_dict(), PATH)")
    except Exception as err:  # torch raises a zoo of types for files it cannot parse
        _fail("backbone-weights", f"'{path}' is not a weights file written by torch.save "
                                  f"({cli_common.one_line(err)[:160]})")
    for key in ("state_dict", "model", "params"):  # the checkpoint wrappers the plugin unwraps too
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not data or not all(torch.is_tensor(v) for v in data.values()):
        _fail("backbone-weights", f"'{path}' does not contain a state dict of tensors")
    try:
        from projector_plugin import feature_networks
    except ImportError:
        return
    load = getattr(feature_networks, "load_pretrained_state_dict", None)
    if load is None:
        return
    try:
        load(backbone, path, log=False)  # cached per process: the discriminator built later reuses it
    except (ValueError, RuntimeError, KeyError, OSError) as err:
        _fail("backbone-weights", f"'{path}' does not fit backbone '{backbone}': {cli_common.one_line(err)[:300]}")


def resolve_resume(opts) -> str:
    """The file --resume designates ('latest', a run directory, a resume file or snapshot), as the loop resolves it."""
    if opts.resume is None:
        return None
    from training import snapshot as snapshot_lib

    try:
        return snapshot_lib.resolve_resume(opts.resume, outdir=opts.outdir)
    except snapshot_lib.SnapshotError as err:
        _fail("resume", cli_common.one_line(err))


def remove_stale_writes(outdir: str, resume_path: str = None) -> list:
    """Delete the temporary files of snapshot writers that were killed (SIGKILL, power loss) in every run directory
    under `outdir` and in the folder of the file being resumed; files of live writers stay. Returns the paths."""
    from training import snapshot as snapshot_lib

    removed = snapshot_lib.clean_stale_temp_files(outdir)
    if resume_path is not None:
        removed += snapshot_lib.remove_stale_temp_files(os.path.dirname(os.path.abspath(resume_path)))
    return removed


def check_resume_compatible(path: str, c: util.EasyDict, common: dict) -> None:
    """The snapshot's networks must be the ones the current options build (else state dicts don't fit)."""
    from training import snapshot as snapshot_lib

    try:
        data = snapshot_lib.load_snapshot(path, mmap=True)
    except snapshot_lib.SnapshotError as err:
        _fail("resume", cli_common.one_line(err))
    imported = data.get("kind") == "imported"  # a network pickle of the official code or StyleGAN2-ADA/StyleGAN3
    for key in ("G", "G_ema", "progress") + (() if imported else ("D",)):
        if key not in data:
            _fail("resume", f"'{path}' has no '{key}': it is not a training snapshot")
    done_nimg = 0 if imported else int(data["progress"]["cur_nimg"])
    if done_nimg >= round(c.total_kimg * 1000):
        _fail("kimg", f"'{path}' has already trained for {done_nimg / 1000:g} kimg; --kimg is the total "
                      f"duration of training, so pass more than that to continue")
    for name, current in (("G", {**c.G_kwargs, **common}), ("D", {**c.D_kwargs, **common})):
        if name not in data["networks"]:  # an imported pickle's D: built new from the options
            continue
        saved = dict(data["networks"].get(name, {}))
        cur = dict(current)
        # Where the backbone was loaded from does not change its shape; for an imported generator, neither do the
        # options that only choose how it computes (its own code's defaults for them need not be ours).
        # The generator's training precision only chooses how it computes: a run may continue in another one.
        ignored = ("weights", "precision") + (("fused_modconv_default", "num_fp16_res", "conv_clamp", "init")
                                              if imported else ())
        for ignore in ignored:
            saved.pop(ignore, None)
            cur.pop(ignore, None)
        diff = sorted(k for k in set(saved) | set(cur) if json.dumps(saved.get(k), sort_keys=True)
                      != json.dumps(cur.get(k), sort_keys=True))
        if diff:
            details = "; ".join(f"{k}: snapshot {saved.get(k)!r} vs now {cur.get(k)!r}" for k in diff)
            hint = _import_hint(saved) if imported else "the same --cfg/--loss/--cbase/--ngf/... as the original run"
            _fail("resume", f"'{path}' was trained with a different {name} ({details}); pass {hint}")


def _import_hint(spec: dict) -> str:
    """The train.py options that build the generator of an imported pickle."""
    if spec.get("class_name", "").endswith("networks_fastgan.Generator"):
        cfg = "fastgan_lite" if spec.get("lite") else "fastgan"
        return f"--cfg={cfg} --g-arch=official --ngf={spec.get('ngf')}"
    mapping = spec.get("mapping_kwargs") or {}
    arch = "--g-arch=official" if (spec.get("z_dim"), spec.get("w_dim")) == (64, 128) else "--g-arch=default"
    return (f"--cfg=stylegan2 {arch} --cbase={spec.get('channel_base', 32768)} --cmax={spec.get('channel_max', 512)} "
            f"--map-depth={mapping.get('num_layers', 8)} (z_dim {spec.get('z_dim')}, w_dim {spec.get('w_dim')})")


# ---------------------------------------------------------------------------------------------
# Processes.


def _pick_device(kind: str, local_rank: int) -> torch.device:
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def _has_training_state(run_dir: str) -> bool:
    """True once the run directory holds a snapshot (or any other .pt file a resume could start from)."""
    return bool(glob.glob(os.path.join(glob.escape(run_dir), "*.pt")))


def _remove_empty_run(run_dir: str, outdir: str, outdir_existed: bool) -> None:
    """Delete a run directory that holds no training state (a run that failed before its first snapshot), and
    --outdir too when this run created it and it is empty now."""
    if run_dir is not None and os.path.isdir(run_dir) and not _has_training_state(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
    if not outdir_existed:
        cli_common.remove_if_empty(outdir)


def _dataset_error_line(err: BaseException) -> str:
    """The message of a DatasetError, also when a DataLoader worker re-raised it with its traceback attached."""
    text = str(err)
    if "Original Traceback" in text:  # DataLoader: "Caught DatasetError in DataLoader worker ... Traceback ..."
        last = [line for line in text.splitlines() if line.strip()][-1].strip()
        text = last.split("DatasetError: ", 1)[-1]
    return cli_common.one_line(text)


def run_training(training_loop, c, rank: int, device) -> int:
    """Call the training loop; map the failures a user can act on to (one message line, exit status).

    Returns 0 on success. Bugs still raise with a traceback.
    """
    from training import dataset as dataset_lib
    from training import snapshot as snapshot_lib

    try:
        training_loop.training_loop(**c, rank=rank, device=device)
        # Leave together: a rank that tears down its process group while another is still in a collective
        # (or still shutting down gloo's threads) can abort the whole job at exit.
        dist.barrier()
        return 0
    except training_loop.TrainingInterrupted as err:  # SIGTERM/SIGINT; the loop saved the resume state first
        return _report(rank, cli_common.one_line(err), 128 + int(err.signum), prefix="Stopped")
    except training_loop.NonFiniteLossError as err:
        return _report(rank, str(err), 3, leading_newline=True)
    except training_loop.DiskFullError as err:  # str(): "no space left on device at PATH"
        return _report(rank, cli_common.one_line(err), 1)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            return _report(rank, cli_common.write_error(err, err.filename or c.get("run_dir")), 1)
        raise
    except dataset_lib.DatasetError as err:
        return _report(rank, f"--data: {_dataset_error_line(err)}", 1, every_rank=True)
    except snapshot_lib.SnapshotError as err:
        return _report(rank, f"--resume: {cli_common.one_line(err)}", 1)
    except (MemoryError, RuntimeError) as err:
        if not _is_out_of_memory(err):
            raise
        saved = os.path.join(c.get("run_dir") or "", snapshot_lib.RESUME_STATE_NAME)
        where = (f"; the last resume state, {saved}, is intact" if os.path.isfile(saved)
                 else "; no snapshot had been written yet")
        return _report(rank, f"out of memory ({cli_common.one_line(err)[:160]}): use a smaller --batch-gpu (same "
                             f"--batch, more rounds per step) or a smaller network{where}", 1)


def _is_out_of_memory(err: BaseException) -> bool:
    """A CUDA or CPU allocation failure (torch raises them as RuntimeError subclasses or with these messages)."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    text = str(err)
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text


def _report(rank: int, message: str, status: int, leading_newline: bool = False, every_rank: bool = False,
            prefix: str = "Error") -> int:
    if rank == 0 or every_rank:
        print(f"{chr(10) if leading_newline else ''}{prefix}: {message}", file=sys.stderr, flush=True)
    return status


class _SignalsRaise:
    """While active (main thread only), the first SIGTERM or SIGINT raises `make(signum)` where the process happens
    to be, and later ones are ignored: the process is shutting down already. The training loop installs its own
    handlers while it runs (stop at a step boundary, save the resume state) and restores these afterwards."""

    def __init__(self, make):
        self.make, self.fired, self.old = make, False, {}

    def _handler(self, signum, frame):
        if not self.fired:
            self.fired = True
            raise self.make(signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
        return False


def subprocess_fn(rank, c, world_size, init_method, device_kind, outdir, desc, local_rank=None, local_world_size=None):
    """Body of every training process (spawned, torchrun-started, or the single in-process run).

    Exits with SystemExit(status) on the failures `run_training` maps; rank 0 then removes a run directory that
    got no snapshot. SIGTERM/SIGINT outside the training loop (while the run is set up or shut down) stop the
    process with one 'Stopped' line and status 128+signal, after the same clean-up.
    """
    from training import training_loop

    def interrupted(signum):
        return training_loop.TrainingInterrupted(
            signum, f"interrupted by {signal.Signals(signum).name} outside the training loop (while setting up or "
                    f"shutting down the run); nothing was saved by the interruption")

    with _SignalsRaise(interrupted):
        try:
            _process_body(training_loop, rank, c, world_size, init_method, device_kind, outdir, desc, local_rank,
                          local_world_size)
        except training_loop.TrainingInterrupted as err:
            _report(rank, cli_common.one_line(err), 0, prefix="Stopped")
            raise SystemExit(128 + int(err.signum)) from None


def _process_body(training_loop, rank, c, world_size, init_method, device_kind, outdir, desc, local_rank,
                  local_world_size):
    cli_common.setup_logging()
    local_rank = rank if local_rank is None else local_rank
    local_world_size = world_size if local_world_size is None else local_world_size
    device = _pick_device(device_kind, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif world_size > 1 and local_world_size > 1:
        # CPU processes on one machine share its cores; without this each would use all of them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world_size))
    dist.init_process_group(rank, world_size, device, init_method)
    logger = None
    run_dir = None
    succeeded = False
    outdir_existed = os.path.isdir(outdir)
    try:
        # Rank 0 picks the run directory; everyone learns its name.
        if rank == 0:
            try:
                created = create_run_dir(outdir, desc)
            except OSError as err:
                created = err
            run_dir = [created]
        else:
            run_dir = [None]
        if world_size > 1:
            torch.distributed.broadcast_object_list(run_dir, src=0)
        run_dir = run_dir[0]
        if isinstance(run_dir, OSError):
            err, run_dir = run_dir, None
            if rank == 0:
                print(f"Error: --outdir: cannot create a run directory under '{outdir}': "
                      f"{cli_common.write_error(err, err.filename or outdir)}", file=sys.stderr)
            raise SystemExit(1)
        c = util.EasyDict(copy.deepcopy(c))
        c.run_dir = run_dir
        if rank == 0:
            options_path = os.path.join(run_dir, "training_options.json")
            try:
                util.atomic_write(options_path, lambda f: f.write(json.dumps(c, indent=2).encode("utf-8")))
            except OSError as err:
                print(f"Error: {cli_common.write_error(err, options_path)}", file=sys.stderr)
                raise SystemExit(1) from None
            logger = util.Logger(file_name=os.path.join(run_dir, "log.txt"), file_mode="a", should_flush=True)
            print(f"Run directory: {run_dir}")
            print(f"Training options written to {options_path}")
            print()
        status = run_training(training_loop, c, rank, device)
        if status:
            raise SystemExit(status)
        succeeded = True
    finally:
        if logger is not None:
            logger.close()
        if rank == 0 and not succeeded:
            _remove_empty_run(run_dir, outdir, outdir_existed)
        dist.destroy_process_group()


def _spawn_target(rank, c, world_size, init_method, device_kind, outdir, desc):
    subprocess_fn(rank, c, world_size, init_method, device_kind, outdir, desc)


class _Forwarded(Exception):
    pass


def spawn_and_wait(world_size: int, args: tuple) -> None:
    """Run `_spawn_target` in `world_size` processes and wait for them.

    SIGTERM/SIGINT sent to this launcher are forwarded to the training processes, which stop together at a step
    boundary and save the resume state; the launcher then waits for all of them (it never terminates one that is
    still writing) and exits with their status (128+signal). Raises ProcessExitedException/ProcessRaisedException
    like torch.multiprocessing.spawn when a process fails on its own.
    """
    context = torch.multiprocessing.spawn(fn=_spawn_target, args=args, nprocs=world_size, join=False)
    received = []

    def forward(signum, frame):
        received.append(signum)
        for process in context.processes:
            if process.is_alive():
                try:
                    os.kill(process.pid, signum)
                except (ProcessLookupError, PermissionError):
                    pass
        if len(received) == 1:
            raise _Forwarded

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            while not context.join():
                pass
            return
        except _Forwarded:
            pass
        name = signal.Signals(received[0]).name
        print(f"{name}: asked the {world_size} training processes to stop (they save the resume state first); "
              f"waiting for them", file=sys.stderr, flush=True)
        for process in context.processes:
            process.join()  # a second signal is forwarded too: the processes then stop at once
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    codes = [process.exitcode for process in context.processes]
    status = next((code if code > 0 else 128 - code for code in codes if code), 0)
    if status:
        raise SystemExit(status)


# ---------------------------------------------------------------------------------------------
# CLI.


class _MetricList(click.ParamType):
    name = "list"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        if value is None or value.lower() in ("none", ""):
            return []
        return [v.strip() for v in value.split(",") if v.strip()]


@click.command(context_settings=dict(max_content_width=120, help_option_names=["-h", "--help"]))
# Required.
@click.option("--outdir", help="Where to put the run directories NNNNN-desc/", metavar="DIR", required=True)
@click.option("--cfg", help="Generator: FastGAN, its lite variant, or StyleGAN2", type=click.Choice(CFGS),
              required=True)
@click.option("--data", help="Training data: a folder or zip of images (see dataset_tool.py)", metavar="PATH",
              required=True)
@click.option("--batch", help="Total batch size over all processes and rounds", metavar="INT", type=int, required=True)
# Setup.
@click.option("--loss", help="Discriminator + loss: Projected GAN, or the StyleGAN2 baseline (R1)",
              type=click.Choice(LOSSES), default="projected", show_default=True)
@click.option("--gpus", help="Processes on this machine (CPU: gloo, GPU: NCCL)  [default: 1; under torchrun "
              "its nproc-per-node]", metavar="INT", type=click.IntRange(min=1))
@click.option("--batch-gpu", help="Images per process per accumulation round  [default: batch/processes]",
              metavar="INT", type=click.IntRange(min=1))
@click.option("--device", help="Where to train", type=click.Choice(["auto", "cuda", "cpu"]), default="auto",
              show_default=True)
@click.option("--mirror", help="Enable dataset x-flips", metavar="BOOL", type=bool, default=False, show_default=True)
@click.option("--cond", help="Train a class-conditional model (needs dataset labels)", metavar="BOOL", type=bool,
              default=False, show_default=True)
@click.option("--resume", help="Continue from a snapshot, or 'latest' (newest under --outdir); runs in a new run "
              "dir and trains until --kimg in total", metavar="PATH|latest")
# Hyperparameters.
@click.option("--glr", help="G learning rate  [default: 0.0002 for FastGAN, 0.002 for StyleGAN2]", metavar="FLOAT",
              type=POSITIVE)
@click.option("--dlr", help="D learning rate  [default: 0.0002 for FastGAN, 0.002 for StyleGAN2]", metavar="FLOAT",
              type=POSITIVE)
@click.option("--ema-kimg", help="Half-life of the G exponential moving average in kimg  [default: batch*10/32]",
              metavar="FLOAT", type=NON_NEGATIVE)
@click.option("--ema-rampup", help="EMA ramp-up: half-life <= this fraction of the images seen  [default: 0.05 "
              "for --cfg=stylegan2, none otherwise]", metavar="FLOAT", type=NON_NEGATIVE)
@click.option("--r1-gamma", help="R1 weight (--loss=stylegan2 only)  [default: 0.0002*resolution^2/batch]",
              metavar="FLOAT", type=NON_NEGATIVE)
@click.option("--cbase", help="StyleGAN2 networks: channel base", metavar="INT", type=int, default=32768,
              show_default=True)
@click.option("--cmax", help="StyleGAN2 networks: max channels", metavar="INT", type=int, default=512,
              show_default=True)
@click.option("--map-depth", help="StyleGAN2 generator: mapping layers  [default: 2 with --loss=projected, 8 with "
              "--loss=stylegan2]", metavar="INT", type=int)
@click.option("--ngf", help="FastGAN generator width (channels at 128x128)", metavar="INT", type=int, default=128,
              show_default=True)
@click.option("--backbone", help="Projected D: timm feature network", metavar="NAME", default="tf_efficientnet_lite0",
              show_default=True)
@click.option("--backbone-weights", help="Projected D: path of the backbone's ImageNet weights  [default: the "
              "installed weights package or timm's cache]", metavar="PATH")
@click.option("--feat-res", help="Projected D: input size of the feature network  [default: the backbone's, 224 "
              "for EfficientNet-Lite0]", metavar="INT", type=int)
@click.option("--proj-type", help="Projected D: 0 = raw backbone features, 1 = + random 1x1 channel mixing (CCM), "
              "2 = + random top-down fusion (CCM+CSM), the paper's ablation", metavar="INT",
              type=click.IntRange(0, 2), default=2, show_default=True)
@click.option("--num-discs", help="Projected D: mini-discriminators, one per feature level from the finest",
              metavar="INT", type=click.IntRange(1, 4), default=4, show_default=True)
@click.option("--csm-layout", help="Projected D: layout of the random cross-scale mixing (CSM): 'official' = the "
              "official code's (fused levels at twice the backbone resolution), 'compact' = this repository's "
              "earlier one (levels at the backbone resolution; cheaper, but its deepest mini-D is a single linear "
              "conv)", type=click.Choice(["official", "compact"]), default="official", show_default=True)
@click.option("--separable", help="Projected D: depthwise-separable mini-discriminator blocks (depthwise 3x3 + "
              "pointwise + average pooling); 'auto' = on for StyleGAN2, off for FastGAN, as in Projected GAN; "
              "'strided' = the earlier strided-depthwise design", type=click.Choice(["auto", "1", "0", "strided"]),
              default="auto", show_default=True)
@click.option("--reuse-fakes", help="Projected loss: the D phase trains on the G phase's fakes of the same step "
              "(one generator forward per step instead of two; 0 = draw new fakes, as StyleGAN3's loop does)",
              metavar="BOOL", type=bool, default=True, show_default=True)
@click.option("--blur-sigma", help="Projected loss: blur of every image D sees at the start (StyleGAN3's sigma), "
              "fading out over batch*200/32 kimg; 0 = none, as in the official Projected GAN code", metavar="FLOAT",
              type=cli_common.FiniteFloat(min=0, max=100), default=2, show_default=True)
@click.option("--g-arch", help="Generator variant: 'default' (FastGAN as published: noise, tanh output; StyleGAN2 "
              "z/w 512) or 'official' (Projected GAN's code: FastGAN-lite without noise, linear output with bias, "
              "PyTorch init; StyleGAN2 z 64, w 128): train and import its models like-for-like",
              type=click.Choice(["default", "official"]), default="default", show_default=True)
@click.option("--g-precision", help="Generator arithmetic while training: fp32, or bf16 (bfloat16 autocast of the "
              "training copy's synthesis; float32 weights, BatchNorm, spectral norm, G_ema and evaluation). Measured "
              "within 6%% of fp32's updates on CPU; its GPU speed is measured by benchmarks/gpu_window.py",
              type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--fp32", help="Disable mixed precision (StyleGAN2 fp16 layers, bf16 feature network on CUDA)",
              metavar="BOOL", type=bool, default=False, show_default=True)
@click.option("--tf32", help="Allow TF32 tensor cores for float32 convolutions and matmuls on CUDA (faster on "
              "Ampere and newer, ~1e-3 relative error; off, as in StyleGAN2-ADA/StyleGAN3)", metavar="BOOL", type=bool,
              default=False, show_default=True)
# Misc.
@click.option("--kimg", help="Total training duration in thousands of images", metavar="FLOAT", type=POSITIVE,
              default=10000, show_default=True)
@click.option("--tick", help="How often to print progress, in kimg", metavar="FLOAT", type=POSITIVE, default=4,
              show_default=True)
@click.option("--snap", help="How often to save snapshots (+ metrics), in ticks", metavar="INT", type=int,
              default=50, show_default=True)
@click.option("--keep", help="Keep only the newest N snapshots of this run (0 = keep all)", metavar="INT",
              type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--img-snap", help="How often to save fakes grids, in ticks  [default: --snap]", metavar="INT",
              type=int)
@click.option("--grid", help="Columns x rows of the reals/fakes grids  [default: from the resolution, 4..16 each]",
              metavar="COLSxROWS")
@click.option("--metrics", help="Quality metrics at every snapshot, comma-separated, or 'none'",
              metavar="[NAME|A,B,C|none]",
              type=_MetricList(), default="fid50k_full", show_default=True)
@click.option("--seed", help="Random seed", metavar="INT", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--workers", help="DataLoader worker processes per training process", metavar="INT", type=int,
              default=3, show_default=True)
@click.option("--desc", help="String appended to the run directory name (no path separators)", metavar="STR")
@click.option("--dry-run", help="Print the training options and exit without writing anything", is_flag=True)
def main(**kwargs):
    """Train a Projected GAN (Sauer et al., NeurIPS 2021) or a StyleGAN2 baseline.

    Outputs go to OUTDIR/NNNNN-DESC/: training_options.json, log.txt, stats.jsonl, reals.png,
    fakes*.png, network-snapshot-*.pt (load them with training.snapshot.load_generator or
    gen_images.py); with --metrics also metric-*.jsonl, best-<result>.json (the best snapshot per
    result, usable as gen_images.py --network) and metrics.png. Multi-node training: start this
    script with torchrun.
    """
    cli_common.setup_logging()
    ctx = click.get_current_context()
    opts = util.EasyDict(kwargs)
    given = lambda name: _given(ctx, name)
    check_outdir_and_desc(opts.outdir, opts.desc)

    # Topology: torchrun (any number of nodes) or N processes spawned here.
    if dist.launched_by_torchrun():
        rank, world_size, local_rank, local_world_size = dist.torchrun_topology()
        if opts.gpus is not None and opts.gpus != local_world_size:
            _fail("gpus", f"--gpus={opts.gpus} but torchrun started {local_world_size} processes per node "
                          f"(omit --gpus under torchrun)")
    else:
        rank, world_size, local_rank = 0, opts.gpus or 1, 0
        local_world_size = world_size
    if opts.device == "cuda" and not torch.cuda.is_available():
        _fail("device", "--device=cuda but CUDA is not available")
    use_cuda = opts.device == "cuda" or (opts.device == "auto" and torch.cuda.is_available())
    if use_cuda and not dist.launched_by_torchrun() and world_size > torch.cuda.device_count():
        _fail("gpus", f"--gpus={world_size} but only {torch.cuda.device_count()} CUDA device(s) are visible "
                      f"(use --device=cpu for CPU processes)")

    if not os.path.exists(opts.data):
        _fail("data", f"'{opts.data}' does not exist")
    if os.path.isdir(opts.data) and cli_common.is_inside(opts.outdir, opts.data):
        _fail("outdir", f"'{opts.outdir}' is inside --data '{opts.data}': the sample grids written there would be "
                        f"read as training images by the next run; put the runs elsewhere")
    c = build_config(opts, given, world_size)
    desc, common = validate_and_describe(c, opts)
    check_memory_estimate(c, common, *c.pop("_probes"), use_cuda=use_cuda, given=given)
    if c.loss_kwargs["class_name"] == "training.loss.StyleGAN2Loss" and c.loss_kwargs["r1_gamma"] is None:
        c.loss_kwargs["r1_gamma"] = 0.0002 * common["img_resolution"] ** 2 / c.batch_size
    c.resume = resolve_resume(opts)
    if c.resume is not None:
        check_resume_compatible(c.resume, c, common)

    if opts.dry_run:
        if rank == 0:
            print("Training options:")
            print(json.dumps(c, indent=2))
            print()
            print(f"Output directory:    {next_run_dir(opts.outdir, desc)}")
            print(f"Number of processes: {world_size}{' (torchrun)' if dist.launched_by_torchrun() else ''}")
            print(f"Device:              {'cuda' if use_cuda else 'cpu'}")
            print(f"Dataset:             {opts.data} ({common['img_resolution']}x{common['img_resolution']}, "
                  f"{common['img_channels']} channels, {common['c_dim']} label dims)")
            print()
            print("Dry run; exiting.")
        return

    if rank == 0:
        # Leftovers of killed runs: half-written snapshot files, and run directories that never got a snapshot.
        for path in remove_stale_writes(opts.outdir, c.resume):
            print(f"Removed a half-written snapshot left by a killed run: {path}")
        for path in remove_dead_empty_runs(opts.outdir):
            print(f"Removed the run directory of a run killed before its first snapshot: {path}")

    if dist.launched_by_torchrun():
        subprocess_fn(rank, c, world_size, "env://", opts.device, opts.outdir, desc, local_rank=local_rank,
                      local_world_size=local_world_size)
    elif world_size == 1:
        subprocess_fn(0, c, 1, None, opts.device, opts.outdir, desc)
    else:
        print(f"Launching {world_size} processes...")
        with tempfile.TemporaryDirectory() as temp_dir:
            init_file = os.path.abspath(os.path.join(temp_dir, ".torch_distributed_init"))
            init_method = f"file://{init_file}" if os.name != "nt" else f"file:///{init_file.replace(os.sep, '/')}"
            try:
                spawn_and_wait(world_size, (c, world_size, init_method, opts.device, opts.outdir, desc))
            except torch.multiprocessing.ProcessExitedException as err:
                if err.exit_code is not None and err.exit_code > 128:  # stopped by a signal: keep its exit status
                    raise SystemExit(err.exit_code) from None
                raise click.ClickException(f"training stopped: a process exited with code {err.exit_code} "
                                           f"(see the messages above)") from None


def script_options(**overrides):
    """(opts, given) as `main` would see them for a command line that sets exactly `overrides`, for scripts that
    build the training config without one (`build_config(opts, given, world_size)`, e.g. the benchmarks).

    The defaults come from the click options themselves, so such scripts stay in step when an option is added.
    The required options get placeholders unless overridden; an override of None counts as not set (the option keeps
    its default). An unknown name raises TypeError.
    """
    names = {p.name for p in main.params}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"script_options: train.py has no option(s) {', '.join(unknown)}")
    placeholders = ["--outdir=.", "--cfg=fastgan", "--data=.", "--batch=1"]
    with main.make_context("train.py", placeholders) as ctx:
        opts = util.EasyDict(ctx.params)
    opts.update({k: v for k, v in overrides.items() if v is not None})
    return opts, lambda name: overrides.get(name) is not None


if __name__ == "__main__":
    main()
