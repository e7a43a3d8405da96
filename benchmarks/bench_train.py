"""Training speed (sec/kimg) and peak memory of the full training loop, per --cfg x --loss and device.

    python benchmarks/bench_train.py --res 64 --batch 16                         # CPU (and CUDA if present)
    python benchmarks/bench_train.py --res 256 --batch 8 --devices cpu --cfgs fastgan --losses projected
    python benchmarks/bench_train.py --res 256 --batch 64 --devices cuda --out benchmarks/results/train_h100.json

Every combination runs `training.training_loop.training_loop` with the configuration `train.py` builds
(same defaults, so the numbers are what a user gets) on a synthetic image folder, in a fresh
subprocess (clean peak memory, no warm caches from other combinations). Ticks: tick 0 = the first
step (one-off costs), tick 1 = `--steps` warm-up steps, tick 2 = `--steps` measured steps; sec/kimg
is tick 2's. Peak memory: CUDA max_memory_allocated during tick 2; on CPU the process's peak RSS.
Snapshots, image grids and metrics are off.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO)

CFGS = ("fastgan", "fastgan_lite", "stylegan2")
LOSSES = ("projected", "stylegan2")


def make_dataset(root, res, num=64):
    import numpy as np
    import PIL.Image

    rnd = np.random.RandomState(0)
    for i in range(num):
        PIL.Image.fromarray((rnd.rand(res, res, 3) * 255).astype(np.uint8)).save(os.path.join(root, f"{i:03d}.png"))
    return root


def worker(args):
    """Run one combination in this process and print one JSON line."""
    import resource

    import torch

    import train
    from training.training_loop import training_loop

    if args.threads:
        torch.set_num_threads(args.threads)
    # Each combination gets only the widths that apply to it (train.py rejects the others).
    sg2_nets = args.cfg == "stylegan2" or args.loss == "stylegan2"
    opts, given = train.script_options(
        cfg=args.cfg, loss=args.loss, data=args.data, batch=args.batch, fp32=args.fp32, metrics=[],
        workers=args.workers, cbase=args.cbase if sg2_nets else None,
        ngf=args.ngf if args.cfg != "stylegan2" else None,
        feat_res=args.feat_res if args.loss == "projected" else None)
    c = train.build_config(opts, given, world_size=1)
    if c.loss_kwargs["class_name"] == "training.loss.StyleGAN2Loss":
        c.loss_kwargs["r1_gamma"] = 0.0002 * args.res ** 2 / args.batch
    c.training_set_kwargs["resolution"] = args.res
    step_kimg = args.batch / 1000
    c.update(total_kimg=(1 + 2 * args.steps) * step_kimg, kimg_per_tick=args.steps * step_kimg,
             image_snapshot_ticks=None, network_snapshot_ticks=None, grid_size=[1, 1])
    c.pop("cli")
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.time()
        result = training_loop(run_dir=run_dir, device=torch.device(args.device), **c)
        total = time.time() - start
    if args.device == "cuda":
        peak = result["peak_gpu_mem"]
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    record = dict(cfg=args.cfg, loss=args.loss, device=args.device, res=args.res, batch=args.batch,
                  sec_per_kimg=result["sec_per_kimg"], sec_per_step=result["sec_per_kimg"] * args.batch / 1000,
                  img_per_sec=1000 / result["sec_per_kimg"], peak_mem_gb=peak / 2**30, total_sec=total,
                  threads=torch.get_num_threads())
    print("RESULT " + json.dumps(record), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--res", type=int, default=64, help="image resolution (default 64)")
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--devices", default=None, help="comma list of cpu,cuda (default: cpu, plus cuda if present)")
    parser.add_argument("--cfgs", default=",".join(CFGS), help="comma list (default: all)")
    parser.add_argument("--losses", default=",".join(LOSSES), help="comma list (default: all)")
    parser.add_argument("--steps", type=int, default=3, help="warm-up steps = measured steps (default 3)")
    parser.add_argument("--feat-res", type=int, default=None, help="projected D feature resolution (default: 224)")
    parser.add_argument("--ngf", type=int, default=128, help="FastGAN width (default 128, as train.py)")
    parser.add_argument("--cbase", type=int, default=32768, help="StyleGAN2 channel base (default 32768)")
    parser.add_argument("--fp32", action="store_true", help="disable mixed precision")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/train_<devices>.json)")
    parser.add_argument("--timeout", type=int, default=3600, help="per-combination timeout in seconds")
    # Internal: run one combination.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cfg", help=argparse.SUPPRESS)
    parser.add_argument("--loss", help=argparse.SUPPRESS)
    parser.add_argument("--device", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--devices includes cuda but CUDA is not available")
    records = []
    with tempfile.TemporaryDirectory() as data_root:
        data = make_dataset(data_root, args.res)
        for device in devices:
            for cfg in args.cfgs.split(","):
                for loss in args.losses.split(","):
                    cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"--cfg={cfg}", f"--loss={loss}",
                           f"--device={device}", f"--data={data}", f"--res={args.res}", f"--batch={args.batch}",
                           f"--steps={args.steps}", f"--workers={args.workers}", f"--threads={args.threads}",
                           f"--ngf={args.ngf}", f"--cbase={args.cbase}"]
                    if args.feat_res:
                        cmd.append(f"--feat-res={args.feat_res}")
                    if args.fp32:
                        cmd.append("--fp32")
                    print(f"{cfg:>12s} {loss:>9s} {device:>4s} ...", end=" ", flush=True)
                    try:
                        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.timeout)
                    except subprocess.TimeoutExpired:
                        print("timeout")
                        records.append(dict(cfg=cfg, loss=loss, device=device, res=args.res, batch=args.batch,
                                            error="timeout"))
                        continue
                    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                    if proc.returncode != 0 or not lines:
                        err = (proc.stderr.strip().splitlines() or ["?"])[-1]
                        print(f"failed: {err}")
                        records.append(dict(cfg=cfg, loss=loss, device=device, res=args.res, batch=args.batch,
                                            error=err))
                        continue
                    rec = json.loads(lines[-1][len("RESULT "):])
                    print(f"{rec['sec_per_kimg']:.1f} sec/kimg")
                    records.append(rec)

    print()
    print(f"Training loop, {args.res}x{args.res}, batch {args.batch}, ngf {args.ngf}, cbase {args.cbase}, "
          f"feat_res {args.feat_res or 'default'} (sec/kimg: lower is better)")
    print(f"{'cfg':>12s} {'loss':>9s} {'device':>6s} {'sec/kimg':>10s} {'img/s':>8s} {'peak GB':>8s}")
    for r in records:
        if "error" in r:
            print(f"{r['cfg']:>12s} {r['loss']:>9s} {r['device']:>6s} {'error: ' + r['error'][:60]}")
        else:
            print(f"{r['cfg']:>12s} {r['loss']:>9s} {r['device']:>6s} {r['sec_per_kimg']:>10.1f} "
                  f"{r['img_per_sec']:>8.2f} {r['peak_mem_gb']:>8.2f}")
    out = args.out or os.path.join(REPO, "benchmarks", "results", f"train_{'_'.join(devices)}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    meta = dict(torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                cpu_count=os.cpu_count(),
                gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                timestamp=time.strftime("%Y-%m-%d %H:%M:%S"))
    with open(out, "w") as f:
        json.dump(dict(meta=meta, args=vars(args), results=records), f, indent=2)
    print(f"\nWrote {out}")


if __name__ == "__main__":
    main()
