#!/usr/bin/env python
"""Throughput of the metric feature detectors (images/s), and whether faster variants keep the features.

For every detector and device, the fp32 NCHW detector is the reference. Variants (channels_last, bf16
autocast, both) are timed and their features compared with the reference on the same batch; a variant is
usable for metrics only if max|f_variant - f_ref| / max|f_ref| <= --tol (default 1e-4: float32-level
agreement -- FID is a difference of large numbers, so feature errors are amplified).

    python benchmarks/bench_metrics.py                                  # inception on CPU (+ CUDA if present)
    python benchmarks/bench_metrics.py --detectors=inception,dinov2_vitb14,clip_vitb32 --batch=32 --device=cuda

timm detectors use randomly initialised weights unless --pretrained (speed does not depend on the weights;
the tolerance check is then only indicative). Prints a table and writes JSON (--out).
"""

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from metrics import detectors  # noqa: E402

VARIANTS = {  # Explicit memory format: a detector's default may be channels_last (Inception's is).
    "fp32": dict(channels_last=False),
    "channels_last": dict(channels_last=True),
    "bf16": dict(channels_last=False, precision="bf16"),
    "channels_last+bf16": dict(channels_last=True, precision="bf16"),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_detector(det, images, iters, warmup):
    device = det.device
    for _ in range(warmup):
        det(images)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        out = det(images)
    _sync(device)
    return images.shape[0] * iters / (time.perf_counter() - t0), out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detectors", default="inception", help="comma-separated detector names")
    ap.add_argument("--device", default=None, help="cpu, cuda or cpu,cuda (default: cpu, plus cuda if available)")
    ap.add_argument("--batch", type=int, default=16, help="images per forward pass")
    ap.add_argument("--res", type=int, default=256, help="input image resolution (detectors resize internally)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    ap.add_argument("--tol", type=float, default=1e-4, help="max relative feature error for a usable variant")
    ap.add_argument("--pretrained", action="store_true", help="timm detectors: download pretrained weights")
    ap.add_argument("--out", default="bench_metrics.json", help="JSON output path")
    args = ap.parse_args()

    devices = args.device.split(",") if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for d in devices:
        if d == "cuda" and not torch.cuda.is_available():
            sys.exit("error: --device=cuda but CUDA is not available")
        if d not in ("cpu", "cuda"):
            sys.exit(f"error: unknown device {d!r} (cpu or cuda)")
    variants = args.variants.split(",")
    for v in variants:
        if v not in VARIANTS:
            sys.exit(f"error: unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    names = args.detectors.split(",")
    for n in names:
        if n not in detectors.detector_names():
            sys.exit(f"error: unknown detector {n!r}; choose from {', '.join(detectors.detector_names())}")

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, [args.batch, 3, args.res, args.res], dtype=torch.uint8, generator=gen)
    rows = []
    print(f"{'detector':<15} {'device':<6} {'variant':<19} {'img/s':>9} {'rel.err':>10} {'usable':>7}")
    print("-" * 71)
    for name in names:
        for dev in devices:
            ref_feats = None
            for variant in ["fp32"] + [v for v in variants if v != "fp32"]:
                kwargs = dict(VARIANTS[variant])
                if name != "inception":
                    kwargs["pretrained"] = args.pretrained
                try:
                    torch.manual_seed(0)  # Random-init timm weights must be identical across variants.
                    det = detectors.get_detector(name, device=dev, cache=False, **kwargs)
                    ips, feats = time_detector(det, images, args.iters, args.warmup)
                except Exception as e:  # e.g. bf16 unsupported on this CPU: report, keep going.
                    rows.append(dict(detector=name, device=dev, variant=variant, error=str(e)))
                    print(f"{name:<15} {dev:<6} {variant:<19} {'error':>9}  {e}")
                    continue
                feats = feats.float().cpu()
                if ref_feats is None:
                    ref_feats = feats
                rel = ((feats - ref_feats).abs().max() / ref_feats.abs().max().clamp(min=1e-12)).item()
                usable = rel <= args.tol
                if variant == "fp32" or variant in variants:
                    rows.append(dict(detector=name, device=dev, variant=variant, images_per_s=ips,
                                     max_rel_feature_err=rel, usable=usable, feature_dim=feats.shape[1]))
                    print(f"{name:<15} {dev:<6} {variant:<19} {ips:>9.2f} {rel:>10.2e} {str(usable):>7}")
                del det
                if dev == "cuda":
                    torch.cuda.empty_cache()

    meta = dict(batch=args.batch, res=args.res, iters=args.iters, tol=args.tol, torch=torch.__version__,
                threads=torch.get_num_threads(), cpu=platform.processor() or platform.machine(),
                cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                pretrained=args.pretrained)
    with open(args.out, "w") as f:
        json.dump(dict(meta=meta, results=rows), f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
