"""One full training iteration (G phase + D phase + G EMA) of train.py's configuration, variants interleaved.

    python benchmarks/bench_iteration.py --cfg fastgan --res 256 --batch 8 --threads 1 --clock cpu
    python benchmarks/bench_iteration.py --device cuda --batch 64 --clock wall

An iteration is what training.training_loop does per step for a projected run: the Gmain phase (G forward with
grad, D on the fakes, backward into G, Adam step), the Dmain phase (fakes, D on fakes and reals, backward, Adam
step) and the G EMA update, with the loop's per-phase `requires_grad` toggling. G, D, the loss and the optimisers
are built from the config train.py resolves (`train.build_config`), so the numbers are what a user gets.

Variants (each its own G/D/optimisers, same seed, built once; timed round-robin in one process, so machine noise
hits all alike and the ratios come from the same run):

    twice      the generator runs twice per iteration, as in StyleGAN3's and the official projected_gan loop:
               once with grad for the G phase, once without for the D phase (ProjectedGANLoss(reuse_fakes=False))
    reuse      the D phase reuses the G phase's fakes, detached (reuse_fakes=True, train.py's default)
    reuse_cl   reuse + the generator's weights and activations in channels_last

img/s = batch / iteration time. `--clock cpu` = this process's CPU time (use with --threads 1 on a shared
machine); `--clock wall` = elapsed time (CUDA: synchronised).
"""

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO)

import train  # noqa: E402
from torch_utils import util  # noqa: E402

VARIANTS = {
    "twice": dict(reuse_fakes=False, g_channels_last=False),
    "reuse": dict(reuse_fakes=True, g_channels_last=False),
    "reuse_cl": dict(reuse_fakes=True, g_channels_last=True),
}


def resolved_config(args):
    """train.py's configuration for --cfg at --res/--batch (projected loss), as plain dicts."""
    opts = util.EasyDict(
        cfg=args.cfg, loss="projected", data=None, batch=args.batch, batch_gpu=None, kimg=1, tick=1, snap=1,
        img_snap=None, seed=0, mirror=False, cond=False, glr=None, dlr=None, ema_kimg=None, ema_rampup=None,
        r1_gamma=None, cbase=32768, cmax=512, map_depth=None, ngf=args.ngf or 128, backbone="tf_efficientnet_lite0",
        backbone_weights=None, feat_res=args.feat_res, fp32=False, metrics=[], workers=0, grid=None, desc=None,
        keep=0,
    )
    given = lambda name: name == "feat_res" and opts.feat_res is not None
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


def timed(fn, device, clock):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = clock()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return clock() - t


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
