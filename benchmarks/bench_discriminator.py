"""Speed and memory of the projected discriminator's training steps, the plugin vs the plain reference.

    python benchmarks/bench_discriminator.py --batch 8 --res 256            # CPU or CUDA (auto)
    python benchmarks/bench_discriminator.py --device cuda --batch 64 --res 256 --out results/d_h100.json

Steps measured (the generator is a free parameter tensor, so only the discriminator's cost is timed):
    D step: hinge loss on a real and a fake batch, backward, Adam step on the mini-discriminators.
    G step: hinge loss on a fake batch, backward to the image (what the generator would receive).
img/s = batch / step time. Variants run interleaved, round-robin, in one process, so machine noise hits all
alike; the ratios against `plain` come from the same run. The `plain*` variants run
reference_discriminator.ReferenceDiscriminator (the paper's D written the obvious way, same function).
Peak memory: CUDA max_memory_allocated per variant; on CPU the peak RSS growth during the steps, in a separate
process that runs the variant alone.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_discriminator import ReferenceDiscriminator  # noqa: E402

from projector_plugin import ProjectedDiscriminator, ProjectedGANLoss  # noqa: E402

VARIANTS = {
    # name: ProjectedDiscriminator kwargs (plain*: ReferenceDiscriminator)
    "plain": dict(),
    "plain_toggled": dict(),
    "plain_nograd": dict(),
    "fast": dict(),
    "fast_nchw": dict(channels_last=False),
    "fast_cl": dict(channels_last=True),
    "fast_bf16": dict(bf16=True),
    "fast_fp32": dict(bf16=False),
    "fast_compact": dict(layout="compact"),  # the CSM design this repo had before 2026-12-06 (smaller, cheaper)
}


class FreeImages(torch.nn.Module):
    """A 'generator' whose output is a parameter: the G step's gradient stops right at the image."""

    def __init__(self, batch, res):
        super().__init__()
        self.img = torch.nn.Parameter(torch.rand(batch, 3, res, res) * 2 - 1)

    def forward(self, z, c):
        return self.img


def build_D(variant, args, device):
    """The variant's discriminator, in train mode, from seed 0 (--layout unless the variant names one)."""
    torch.manual_seed(0)
    cls = ReferenceDiscriminator if variant.startswith("plain") else ProjectedDiscriminator
    kwargs = dict(dict(layout=args.layout), **VARIANTS[variant])
    return cls(pretrained=False, feat_res=args.feat_res, **kwargs).to(device).train()


def make(variant, args, device):
    """(d_step, g_step) closures for one variant.

    Fast variants use ProjectedGANLoss as a host would, without toggling requires_grad between phases (the loss
    itself sends G's step gradients to G only). The plain reference is the paper's discriminator written the
    obvious way: the backbone is an ordinary module excluded from the optimizer only, and the step is
    `loss.backward()`; `plain_toggled` adds StyleGAN3's per-phase `requires_grad_` toggling of the whole D, and
    `plain_nograd` is the careful version: the frozen parts get `requires_grad_(False)` and the host never toggles.
    """
    D = build_D(variant, args, device)
    G = FreeImages(args.batch, args.res).to(device)
    opt = torch.optim.Adam(D.discs.parameters(), lr=2e-4, betas=(0.0, 0.99))  # the backbone is never optimised
    real = torch.rand(args.batch, 3, args.res, args.res, device=device) * 2 - 1
    z = torch.randn(args.batch, 1, device=device)

    if not variant.startswith("plain"):
        loss = ProjectedGANLoss(device, G, D, blur_init_sigma=0, report=lambda *a: None)

        def d_step():
            opt.zero_grad(set_to_none=True)
            loss.accumulate_gradients("Dmain", real, None, z, None, 1.0, 10**9)
            opt.step()

        def g_step():
            G.zero_grad(set_to_none=True)
            loss.accumulate_gradients("Gmain", real, None, z, None, 1.0, 10**9)

        return d_step, g_step

    toggle = variant == "plain_toggled"
    if variant == "plain_nograd":
        D.feature_network.requires_grad_(False)
        D.projection.requires_grad_(False)

    def d_step():
        opt.zero_grad(set_to_none=True)
        if toggle:
            D.requires_grad_(True)
        fake = G(z, None).detach()
        loss_D = torch.relu(1 - D(real)).mean() + torch.relu(1 + D(fake)).mean()
        loss_D.backward()
        opt.step()

    def g_step():
        G.zero_grad(set_to_none=True)
        if toggle:
            D.requires_grad_(False)
        loss_G = -D(G(z, None)).mean()
        loss_G.backward()
        if toggle:
            D.requires_grad_(True)

    return d_step, g_step


def timed(fn, device, clock=time.perf_counter):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = clock()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return clock() - t


def cpu_peak_rss(variant, args):
    """Peak RSS growth (MiB) of a fresh process running `variant` for two steps of each kind."""
    cmd = [sys.executable, __file__, "--child-memory", variant, "--batch", str(args.batch), "--res", str(args.res),
           "--device", "cpu", "--threads", str(args.threads or 0), "--layout", args.layout]
    if args.feat_res:
        cmd += ["--feat-res", str(args.feat_res)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def child_memory(args):
    """Print the peak RSS growth (MiB) over the set-up process while running the steps, sampled every 2 ms.

    ru_maxrss would also count one-off set-up peaks (model construction), which are the same for all variants.
    """
    import threading

    import psutil
    proc = psutil.Process()
    d_step, g_step = make(args.child_memory, args, torch.device("cpu"))
    base = proc.memory_info().rss
    peak, done = [base], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    for _ in range(2):
        d_step()
        g_step()
    done.set()
    t.join()
    print((peak[0] - base) / 2**20)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--res", type=int, default=256, help="generator resolution (images are resized for the backbone)")
    p.add_argument("--feat-res", type=int, default=None, help="backbone input size (default: the model's, 224)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--layout", default="official", choices=["official", "compact"],
                   help="CSM layout of every variant but fast_compact (ProjectedDiscriminator's layout=)")
    p.add_argument("--variants", default=None, help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per variant (after one warm-up round)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall: elapsed time; cpu: this process's CPU time, robust on a shared machine (use with "
                        "--threads 1, where it equals the compute time)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/discriminator_<device>.json)")
    p.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_memory:
        return child_memory(args)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    # "fast" is the default configuration; the others flip one of its auto choices to show why it is the default.
    default = (["plain", "plain_toggled", "plain_nograd", "fast", "fast_nchw", "fast_fp32"] if device.type == "cuda"
               else ["plain", "plain_toggled", "plain_nograd", "fast", "fast_nchw"])
    variants = args.variants.split(",") if args.variants else default
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")

    if args.clock == "cpu" and device.type == "cuda":
        p.error("--clock=cpu measures CPU work only: use --clock=wall on CUDA")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    steps = {v: make(v, args, device) for v in variants}
    times = {v: {"D": [], "G": []} for v in variants}
    for rnd in range(args.rounds + 1):
        for v in variants:
            d_step, g_step = steps[v]
            td, tg = timed(d_step, device, clock), timed(g_step, device, clock)
            if rnd > 0:  # Round 0 warms up caches, cuDNN autotuning and allocator pools.
                times[v]["D"].append(td)
                times[v]["G"].append(tg)

    peak = {}
    for v in variants:
        if device.type == "cuda":
            steps.pop(v, None)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            d_step, g_step = make(v, args, device)
            d_step()
            g_step()
            torch.cuda.synchronize()
            peak[v] = torch.cuda.max_memory_allocated() / 2**20
            del d_step, g_step
        else:
            peak[v] = cpu_peak_rss(v, args)

    base = variants[0]
    rows = []
    for v in variants:
        td, tg = statistics.median(times[v]["D"]), statistics.median(times[v]["G"])
        bd, bg = statistics.median(times[base]["D"]), statistics.median(times[base]["G"])
        rows.append(dict(variant=v, d_step_ms=td * 1e3, g_step_ms=tg * 1e3, d_img_s=args.batch / td,
                         g_img_s=args.batch / tg, total_img_s=args.batch / (td + tg),
                         speedup_vs_first=(bd + bg) / (td + tg), peak_mem_mib=peak[v]))

    name = torch.cuda.get_device_name() if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"\nProjected D training steps — device {device.type} ({name}), threads {torch.get_num_threads()}, "
          f"batch {args.batch}, res {args.res}, feat_res {args.feat_res or 224}, layout {args.layout}, "
          f"{args.clock} clock, median of {args.rounds} rounds")
    print(f"{'variant':<12} {'D ms':>9} {'G ms':>9} {'D img/s':>9} {'G img/s':>9} {'D+G img/s':>10} "
          f"{'vs ' + base:>9} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['variant']:<12} {r['d_step_ms']:9.1f} {r['g_step_ms']:9.1f} {r['d_img_s']:9.1f} {r['g_img_s']:9.1f} "
              f"{r['total_img_s']:10.1f} {r['speedup_vs_first']:8.2f}x {r['peak_mem_mib']:9.0f}")
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"discriminator_{device.type}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(dict(device=device.type, device_name=name, torch=torch.__version__, threads=torch.get_num_threads(),
                       clock=args.clock,
                       batch=args.batch, res=args.res, feat_res=args.feat_res or 224, layout=args.layout,
                       rounds=args.rounds,
                       date=time.strftime("%Y-%m-%d"), rows=rows), f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
