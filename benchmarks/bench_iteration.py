"""One full training iteration (G phase + D phase + G EMA) of train.py's configuration, variants interleaved.

    python benchmarks/bench_iteration.py --cfg fastgan --res 256 --batch 8 --threads 1 --clock cpu
    python benchmarks/bench_iteration.py --device cuda --batch 64 --clock wall

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
    reuse_fused   the D phase reuses the G phase's fakes, detached (reuse_fakes=True), up-blocks as `twice`:
                  the default of 2026-12-03
    reuse         the current default: reuse_fakes + sn_conv3x3's per-layer choice (unfused 4 -> 8 block; 1/sigma
                  on the output of the low-resolution layers instead of on their weight)
    reuse_cl      reuse + the generator's weights and activations in channels_last

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
from bench_discriminator import timed  # noqa: E402

import train  # noqa: E402
from torch_utils import util  # noqa: E402
from training import networks_fastgan  # noqa: E402

VARIANTS = {
    "twice_naive": dict(reuse_fakes=False, g_channels_last=False, up_conv="naive"),
    "twice_phase": dict(reuse_fakes=False, g_channels_last=False, up_conv="phase"),
    "twice": dict(reuse_fakes=False, g_channels_last=False, up_conv="fused"),
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
                                       metrics=[], workers=0)
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="fastgan", choices=["fastgan", "fastgan_lite"])
    p.add_argument("--res", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--ngf", type=int, default=None, help="FastGAN width (default: train.py's)")
    p.add_argument("--feat-res", type=int, default=None, help="backbone input size (default: train.py's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per variant (after one warm-up round)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/iteration_<device>.json)")
    args = p.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        p.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.clock == "cpu" and device.type == "cuda":
        p.error("--clock=cpu measures CPU work only: use --clock=wall on CUDA")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    c = resolved_config(args)
    steps = {v: make(v, c, args, device) for v in variants}
    times = {v: [] for v in variants}
    for rnd in range(args.rounds + 1):
        for v in variants:
            t = timed(steps[v], device, clock)
            if rnd > 0:  # round 0 warms up caches and allocator pools
                times[v].append(t)

    base = statistics.median(times[variants[0]])
    rows = []
    for v in variants:
        t = statistics.median(times[v])
        rows.append(dict(variant=v, **VARIANTS[v], iter_ms=t * 1e3, img_s=args.batch / t, speedup_vs_first=base / t,
                         all_ms=[x * 1e3 for x in times[v]]))
    name = torch.cuda.get_device_name() if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"\nFull iteration, {args.cfg} {args.res}x{args.res}, batch {args.batch}, device {device.type} ({name}), "
          f"threads {torch.get_num_threads()}, {args.clock} clock, median of {args.rounds} rounds")
    print(f"{'variant':<10} {'iter ms':>10} {'img/s':>8} {'vs ' + variants[0]:>10}")
    for r in rows:
        print(f"{r['variant']:<10} {r['iter_ms']:10.0f} {r['img_s']:8.2f} {r['speedup_vs_first']:9.2f}x")
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"iteration_{device.type}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(dict(cfg=args.cfg, res=args.res, batch=args.batch, device=device.type, device_name=name,
                       torch=torch.__version__, threads=torch.get_num_threads(), clock=args.clock,
                       rounds=args.rounds, date=time.strftime("%Y-%m-%d"), rows=rows), f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
