"""One full training iteration (G phase + D phase + G EMA) of train.py's configuration, variants interleaved.

    python benchmarks/bench_iteration.py --cfg fastgan --res 256 --batch 8 --threads 1 --clock cpu
    python benchmarks/bench_iteration.py --device cuda --batch 64 --clock wall
    python benchmarks/bench_iteration.py --official /path/to/projected_gan --variants twice_auto,reuse --feat-res 256 \
        --threads 1 --clock cpu --profile official,twice_auto   # their code needs: pip install dill

An iteration is what training.training_loop does per step for a projected run: the Gmain phase (G forward with
grad, D on the fakes, backward into G, Adam step), the Dmain phase (fakes, D on fakes and reals, backward, Adam
step) and the G EMA update, with the loop's per-phase `requires_grad` toggling. G, D, the loss and the optimisers
are built from the config train.py resolves (`train.build_config`), so the numbers are what a user gets.

Variants (each its own G/D/optimisers, same seed, built once; timed round-robin in one process, so machine noise
hits all alike and the ratios come from the same run):

    twice_naive   the generator runs twice per iteration, as in StyleGAN3's and the official projected_gan
                  loop (once with grad for the G phase, once without for the D phase: reuse_fakes=False), and
                  its up-blocks upsample, then convolve, as FastGAN's own code does
    twice_phase   twice, with the up-block fusion of earlier builds of this repo (four 2x2 phase convolutions,
                  interleaved by stack/reshape)
    twice         twice, with the fusion of 2026-12-03 (one stride-2 transposed convolution in every block)
    twice_auto    twice, with the generator's own per-layer choice (as `reuse` below): `train.py --reuse-fakes=0`,
                  i.e. today's code at the official loop's work per image
    reuse_fused   the D phase reuses the G phase's fakes, detached (reuse_fakes=True), up-blocks as `twice`:
                  the default of 2026-12-03
    reuse         the current default: reuse_fakes + sn_conv3x3's per-layer choice (unfused 4 -> 8 block; 1/sigma
                  on the output of the low-resolution layers instead of on their weight)
    reuse_cl      reuse + the generator's weights and activations in channels_last

    official      (with --official DIR) the official Projected GAN code from that checkout, in this process: its
                  G, D and loss exactly as its train.py configures them for --cfg (captured from its own config code
                  on a one-image dataset), driven per step as its training loop drives them (Gboth and Dmain
                  phases with its requires_grad toggles, its flattened nan_to_num of the gradients, Adam, its G EMA
                  copy loop). Its lazily-run D regularisation phase (an empty Adam step every 16th iteration) is
                  left out. Their D feeds images of 224 and more to EfficientNet unresized (interp224 only below
                  224), so at --res 256 it sees 256x256 where ours resizes to --feat-res. The run's speedups are
                  then relative to it (it is timed first). No official code is in this file: it is imported from
                  the checkout (runtime shims: benchmarks/official_harness.py).

The fixed up-block variants (naive, phase, fused) normalise the weight (W / sigma) in every layer, as earlier
builds and torch's spectral-norm parametrisation do.

img/s = batch / iteration time. `--clock cpu` = this process's CPU time (use with --threads 1 on a shared
machine); `--clock wall` = elapsed time (CUDA: synchronised).
"""

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import official_harness  # noqa: E402
from bench_discriminator import timed  # noqa: E402

import train  # noqa: E402
from torch_utils import util  # noqa: E402
from training import networks_fastgan  # noqa: E402

VARIANTS = {
    "twice_naive": dict(reuse_fakes=False, g_channels_last=False, up_conv="naive"),
    "twice_phase": dict(reuse_fakes=False, g_channels_last=False, up_conv="phase"),
    "twice": dict(reuse_fakes=False, g_channels_last=False, up_conv="fused"),
    "twice_auto": dict(reuse_fakes=False, g_channels_last=False, up_conv="auto"),
    "reuse_fused": dict(reuse_fakes=True, g_channels_last=False, up_conv="fused"),
    "reuse": dict(reuse_fakes=True, g_channels_last=False, up_conv="auto"),
    "reuse_cl": dict(reuse_fakes=True, g_channels_last=True, up_conv="auto"),
}


def naive_up_conv(x, weight):
    """Nearest x2 upsampling, then the 3x3 conv (FastGAN's own up-block)."""
    return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)


def phase_up_conv(x, weight):
    """The previous fusion: four 2x2 phase convolutions of the padded input, interleaved by stack + reshape."""
    n, _, h, w = x.shape
    o = weight.shape[0]
    k0, k1, k2 = weight.unbind(2)
    rows = torch.stack([torch.stack([k0, k1 + k2], 2), torch.stack([k0 + k1, k2], 2)])  # [a, O, I, 2, 3]
    k0, k1, k2 = rows.unbind(4)
    taps = torch.stack([torch.stack([k0, k1 + k2], 4), torch.stack([k0 + k1, k2], 4)], 1)  # [a, b, O, I, 2, 2]
    y = F.conv2d(F.pad(x, [1, 1, 1, 1]), taps.reshape(4 * o, -1, 2, 2)).reshape(n, 2, 2, o, h + 1, w + 1)
    phases = [[y[:, a, b, :, a:a + h, b:b + w] for b in (0, 1)] for a in (0, 1)]
    return torch.stack([torch.stack(row, -1) for row in phases], 3).reshape(n, o, 2 * h, 2 * w)


UP_CONVS = dict(naive=naive_up_conv, phase=phase_up_conv, fused=networks_fastgan.upsample2x_conv3x3)


def fixed_sn_conv3x3(kind):
    """networks_fastgan.sn_conv3x3 with one up-block implementation for every layer and W / sigma (same function)."""
    def sn_conv3x3(conv, x, up=False):
        weight = conv.weight / conv.sigma()
        return UP_CONVS[kind](x, weight) if up else F.conv2d(x, weight, padding=1)
    return sn_conv3x3


@contextlib.contextmanager
def up_conv(kind):
    """Run the FastGAN up-blocks with the given implementation ('auto': the network's own choice)."""
    saved = networks_fastgan.sn_conv3x3
    if kind != "auto":
        networks_fastgan.sn_conv3x3 = fixed_sn_conv3x3(kind)
    try:
        yield
    finally:
        networks_fastgan.sn_conv3x3 = saved


def resolved_config(args):
    """train.py's configuration for --cfg at --res/--batch (projected loss), as plain dicts."""
    opts, given = train.script_options(cfg=args.cfg, batch=args.batch, ngf=args.ngf, feat_res=args.feat_res,
                                       csm_layout=args.layout, metrics=[], workers=0)
    return train.build_config(opts, given, world_size=1)


def make(variant, c, args, device):
    """An `iteration()` closure for one variant: Gmain, Dmain, G EMA, as training_loop runs them."""
    v = VARIANTS[variant]
    torch.manual_seed(0)
    G_kwargs = dict(c.G_kwargs, img_resolution=args.res, img_channels=3, c_dim=0)
    D_kwargs = dict(c.D_kwargs, img_resolution=args.res, img_channels=3, c_dim=0, pretrained=False)
    G = util.construct_class_by_name(**G_kwargs).to(device).train().requires_grad_(False)
    D = util.construct_class_by_name(**D_kwargs).to(device).train().requires_grad_(False)
    if v["g_channels_last"]:
        G = G.to(memory_format=torch.channels_last)
    G_ema = copy.deepcopy(G).eval()
    loss_kwargs = {k: val for k, val in c.loss_kwargs.items() if k != "class_name"}
    loss_kwargs.update(reuse_fakes=v["reuse_fakes"], report=None)
    loss = util.construct_class_by_name(class_name=c.loss_kwargs["class_name"], device=device, G=G, D=D,
                                        **loss_kwargs)
    phases = []
    for name, module, opt_kwargs in (("Gmain", G, c.G_opt_kwargs), ("Dmain", D, c.D_opt_kwargs)):
        params = list(module.parameters())
        opt = util.construct_class_by_name(params=params, **opt_kwargs)
        phases.append((name, params, opt))
    z_dim = G.z_dim
    real = torch.rand(args.batch, 3, args.res, args.res, device=device) * 2 - 1
    c0 = torch.zeros(args.batch, 0, device=device)

    def iteration():
        with up_conv(v["up_conv"]):
            _iteration()

    def _iteration():
        for name, params, opt in phases:
            opt.zero_grad(set_to_none=True)
            for p in params:
                p.requires_grad_(True)
            gen_z = torch.randn(args.batch, z_dim, device=device)
            loss.accumulate_gradients(phase=name, real_img=real, real_c=c0, gen_z=gen_z, gen_c=c0, gain=1.0,
                                      cur_nimg=10**9)
            for p in params:
                p.requires_grad_(False)
            opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(G_ema.parameters()), [p.detach() for p in G.parameters()], 1 - 0.999)

    return iteration


OFFICIAL = dict(reuse_fakes=False, g_channels_last=False, up_conv="official code")


class _Captured(Exception):
    def __init__(self, config):
        self.config = config


@contextlib.contextmanager
def official_modules(checkout):
    """Within the block, `training`, `torch_utils`, `dnnlib`, ... are the checkout's; ours come back after it.

    Objects built inside keep working outside: their functions hold their own module globals."""
    shadowed = {n: m for n, m in sys.modules.items() if n.split(".")[0] in official_harness.SHARED_TOP_LEVEL}
    for name in shadowed:
        del sys.modules[name]
    create_model = __import__("timm").create_model
    saved_path = list(sys.path)
    # Their `training/` has no __init__.py: a regular package of ours anywhere on the path would win over it.
    ours = {REPO, os.path.dirname(os.path.abspath(__file__)), os.getcwd()}
    sys.path[:] = [checkout] + [p for p in sys.path if os.path.abspath(p or ".") not in ours]
    try:
        official_harness._shim_timm()
        yield
    finally:
        sys.path[:] = saved_path
        __import__("timm").create_model = create_model
        for name in [n for n in sys.modules if n.split(".")[0] in official_harness.SHARED_TOP_LEVEL]:
            del sys.modules[name]
        sys.modules.update(shadowed)


def official_config(args, tmpdir):
    """The official train.py's config dict for --cfg at --res/--batch, from its own option handling."""
    import zipfile

    import numpy as np
    from PIL import Image

    import train as their_train  # the checkout's

    data = os.path.join(tmpdir, "one-image.zip")
    with zipfile.ZipFile(data, "w") as zf:  # their config code reads the resolution from the data
        path = os.path.join(tmpdir, "0.png")
        Image.fromarray(np.zeros((args.res, args.res, 3), np.uint8)).save(path)
        zf.write(path, "0.png")

    def launch_training(c, **_):
        raise _Captured(c)

    their_train.launch_training = launch_training
    try:
        their_train.main.main(args=[f"--outdir={tmpdir}", f"--cfg={args.cfg}", f"--data={data}", "--gpus=1",
                                    f"--batch={args.batch}", "--metrics=none", "--workers=1"],
                              prog_name="train.py", standalone_mode=False)
    except _Captured as captured:
        return captured.config
    raise SystemExit("--official: its train.py returned without launching training")


def make_official(checkout, args, device):
    """An `iteration()` closure for the official code: G, D, loss and optimisers as its training loop builds them."""
    import tempfile

    checkout = os.path.abspath(checkout)
    if not os.path.isfile(os.path.join(checkout, "pg_modules", "discriminator.py")):
        raise SystemExit(f"--official: '{checkout}' is not a projected_gan checkout (no pg_modules/discriminator.py)")
    with official_modules(checkout), tempfile.TemporaryDirectory() as tmp:
        import dnnlib  # the checkout's

        try:
            c = official_config(args, tmp)
        except ImportError as e:  # e.g. their training loop imports dill, which this repository does not need
            raise SystemExit(f"--official: importing its train.py failed: {e} (install what it needs, e.g. "
                             f"'pip install dill')") from None
        if args.ngf is not None:
            c.G_kwargs.ngf = args.ngf
        torch.manual_seed(0)
        common = dict(c_dim=0, img_resolution=args.res, img_channels=3)
        G = dnnlib.util.construct_class_by_name(**c.G_kwargs, **common).train().requires_grad_(False).to(device)
        D = dnnlib.util.construct_class_by_name(**c.D_kwargs, **common).train().requires_grad_(False).to(device)
        G_ema = copy.deepcopy(G).eval()
        loss = dnnlib.util.construct_class_by_name(device=device, G=G, G_ema=G_ema, D=D, **c.loss_kwargs)
        phases = []
        for name, module, opt_kwargs in (("Gboth", G, c.G_opt_kwargs), ("Dmain", D, c.D_opt_kwargs)):
            opt_kwargs = dict(opt_kwargs, betas=tuple(float(b) for b in opt_kwargs["betas"]))  # harness shim 3
            phases.append((name, module, dnnlib.util.construct_class_by_name(module.parameters(), **opt_kwargs)))
    z_dim = G.z_dim
    real = torch.rand(args.batch, 3, args.res, args.res, device=device) * 2 - 1
    c0 = torch.zeros(args.batch, 0, device=device)

    def iteration():
        for name, module, opt in phases:
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            if name == "Dmain":
                module.feature_network.requires_grad_(False)
            gen_z = torch.randn(args.batch, z_dim, device=device)
            loss.accumulate_gradients(phase=name, real_img=real, real_c=c0, gen_z=gen_z, gen_c=c0, gain=1,
                                      cur_nimg=10**9)
            module.requires_grad_(False)
            params = [p for p in module.parameters() if p.grad is not None]
            flat = torch.cat([p.grad.flatten() for p in params])
            torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)  # their loop's gradient clean-up
            for p, g in zip(params, flat.split([p.numel() for p in params])):
                p.grad = g.reshape(p.shape)
            opt.step()
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.copy_(p.lerp(p_ema, 0.999))
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)

    return iteration


CONV_OP = "conv"  # aten::mkldnn_convolution, aten::_convolution, aten::convolution_backward, aten::_slow_conv2d_*


def op_profile(iteration, variant):
    """Self CPU time of one iteration by aten op, and the part spent in convolutions (forward and backward).

    The generator's and the mini-discriminators' convolutions are the same arithmetic in every implementation of
    the architecture; what is left over is what an implementation can still cut."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        iteration()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    conv = sum(e.self_cpu_time_total for e in events if CONV_OP in e.key) / 1e6
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    print(f"\nProfile of one '{variant}' iteration: {total:.1f} s of aten ops, convolutions {conv:.1f} s "
          f"({100 * conv / max(total, 1e-9):.0f}%)")
    for e in top:
        print(f"  {e.key:<40} {e.self_cpu_time_total / 1e6:8.2f} s  x{e.count}")
    return dict(variant=variant, aten_s=total, conv_s=conv,
                top=[dict(op=e.key, self_s=e.self_cpu_time_total / 1e6, calls=e.count) for e in top])


def official_commit(checkout):
    """'projected_gan@<commit>' of the checkout (None without --official), for the JSON record."""
    if not checkout:
        return None
    import subprocess
    head = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return f"{os.path.basename(os.path.abspath(checkout))}@{head.stdout.strip() or 'unknown'}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="fastgan", choices=["fastgan", "fastgan_lite"])
    p.add_argument("--res", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--ngf", type=int, default=None, help="FastGAN width (default: train.py's)")
    p.add_argument("--feat-res", type=int, default=None, help="backbone input size (default: train.py's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--layout", default=None, choices=["official", "compact"],
                   help="the projected D's CSM layout (train.py --csm-layout; default: train.py's)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per variant (after one warm-up round)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/iteration_<device>.json)")
    p.add_argument("--profile", default="", metavar="VARIANTS",
                   help="after timing, profile one iteration of each (comma-separated) by aten op: convolutions vs "
                        "the rest")
    p.add_argument("--official", default=None, metavar="DIR",
                   help="an autonomousvision/projected_gan checkout: time its iteration too, first (the baseline)")
    args = p.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        p.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    profile = [v for v in args.profile.split(",") if v]
    if set(profile) - set(variants + (["official"] if args.official else [])):
        p.error(f"--profile: {sorted(set(profile) - set(variants))} are not among the variants timed")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.clock == "cpu" and device.type == "cuda":
        p.error("--clock=cpu measures CPU work only: use --clock=wall on CUDA")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    c = resolved_config(args)
    steps = {v: make(v, c, args, device) for v in variants}
    if args.official:
        steps = dict(official=make_official(args.official, args, device), **steps)
        variants = ["official"] + variants
    times = {v: [] for v in variants}
    for rnd in range(args.rounds + 1):
        for v in variants:
            t = timed(steps[v], device, clock)
            if rnd > 0:  # round 0 warms up caches and allocator pools
                times[v].append(t)

    profiled = [op_profile(steps[v], v) for v in profile]
    base = statistics.median(times[variants[0]])
    rows = []
    for v in variants:
        t = statistics.median(times[v])
        kind = OFFICIAL if v == "official" else VARIANTS[v]
        rows.append(dict(variant=v, **kind, iter_ms=t * 1e3, img_s=args.batch / t, speedup_vs_first=base / t,
                         all_ms=[x * 1e3 for x in times[v]]))
    name = torch.cuda.get_device_name() if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"\nFull iteration, {args.cfg} {args.res}x{args.res}, batch {args.batch}, "
          f"D layout {c.D_kwargs.get('layout')}, device {device.type} ({name}), "
          f"threads {torch.get_num_threads()}, {args.clock} clock, median of {args.rounds} rounds")
    print(f"{'variant':<12} {'iter ms':>10} {'img/s':>8} {'vs ' + variants[0]:>12}")
    for r in rows:
        print(f"{r['variant']:<12} {r['iter_ms']:10.0f} {r['img_s']:8.2f} {r['speedup_vs_first']:11.2f}x")
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"iteration_{device.type}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(dict(cfg=args.cfg, res=args.res, batch=args.batch, layout=c.D_kwargs.get("layout"),
                       device=device.type, device_name=name,
                       torch=torch.__version__, threads=torch.get_num_threads(), clock=args.clock,
                       rounds=args.rounds, date=time.strftime("%Y-%m-%d"), official=official_commit(args.official),
                       rows=rows, profile=profiled), f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
