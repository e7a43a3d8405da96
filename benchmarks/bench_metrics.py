#!/usr/bin/env python
"""Metric benchmarks: detector throughput (default), or shared vs per-metric evaluation (--evaluation).

Detectors: throughput of the metric feature detectors (images/s), and whether faster variants keep the features.

For every detector and device, the fp32 NCHW detector is the reference. Variants (channels_last, bf16
autocast, both) are timed and their features compared with the reference on the same batch; a variant is
usable for metrics only if max|f_variant - f_ref| / max|f_ref| <= --tol (default 1e-4: float32-level
agreement -- FID is a difference of large numbers, so feature errors are amplified).

    python benchmarks/bench_metrics.py                                  # inception on CPU (+ CUDA if present)
    python benchmarks/bench_metrics.py --detectors=inception,dinov2_vitb14,clip_vitb32 --batch=32 --device=cuda

timm detectors use randomly initialised weights unless --pretrained (speed does not depend on the weights;
the tolerance check is then only indicative). Prints a table and writes JSON (--out).

Evaluation (--evaluation): one evaluation of several metrics that shares the generated images and real
statistics (metric_main.calc_metrics) vs. the same metrics evaluated one by one (calc_metric each), interleaved
(shared, per-metric, per-metric, shared, ...) so that a drifting machine load hits both alike. Every run is
instrumented: generator forward passes, generated images, and images embedded by the detectors (generated and
real side separately). Real statistics are embedded (and cached) once before the timed runs unless --cold.

    python benchmarks/bench_metrics.py --evaluation --metrics=fid10k_full,kid10k_full,pr10k3_full \
        --network=runs/00000-x/network-snapshot-000100.000.pt --repeats=3 --device=cuda --batch=64
    python benchmarks/bench_metrics.py --evaluation --data=data/fluent-emoji-64.zip   # random FastGAN-lite G
    python benchmarks/bench_metrics.py --evaluation --counts-only                      # work counts, no timing

--counts-only replaces the detectors by a block-mean stand-in, the generator by a tiny random one and the data
by --real-images synthetic 16x16 images, and skips the metric math: the counts depend only on the metric
names, the batch size and the dataset size, so they are exact and cheap; no time is measured.
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


# ----------------------------------------------------------------------------
# Shared vs per-metric evaluation.


class _Counter(dict):
    """Work counts; survives copy.deepcopy (the metrics evaluate a deep copy of G), so the copy counts here."""

    def __deepcopy__(self, memo):
        return self


class CountingG(torch.nn.Module):
    """Wraps a generator G(z, c, **kw) and counts forward passes and images."""

    def __init__(self, G, counter):
        super().__init__()
        self.G, self.counter = G, counter
        self.z_dim, self.c_dim = G.z_dim, G.c_dim
        self.img_resolution, self.img_channels = G.img_resolution, G.img_channels

    def forward(self, z, c, **kwargs):
        self.counter["generator_forwards"] += 1
        self.counter["generated_images"] += len(z)
        return self.G(z, c, **kwargs)


class CountingDetector:
    """Forwards to a detector and counts the images it embeds (features or classifier logits)."""

    def __init__(self, det, counter):
        self.det, self.counter = det, counter

    def __call__(self, images):
        self.counter[self.counter["side"]] += len(images)
        return self.det(images)

    def logits(self, images):
        self.counter[self.counter["side"]] += len(images)
        return self.det.logits(images)


class BlockMeans(detectors.FeatureDetector):
    """--counts-only stand-in detector: 2x2 block means per channel -> [N, 12]."""

    feature_dim = 12

    def __init__(self, name, **_kwargs):
        super().__init__()
        self.name = name

    def forward(self, images):
        return torch.nn.functional.adaptive_avg_pool2d(self.prepare(images), 2).flatten(1) / 255

    def logits(self, images):
        return self.forward(images)


class TinyG(torch.nn.Module):
    """--counts-only stand-in generator: a fixed random linear map of z to 16x16 RGB images in [-1, 1]."""

    def __init__(self, res=16):
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution, self.img_channels = 8, 0, res, 3
        self.proj = torch.nn.Linear(8, 3 * res * res)

    def forward(self, z, c, **_kwargs):
        return torch.tanh(self.proj(z)).view(-1, 3, self.img_resolution, self.img_resolution)


def _synthetic_folder(path, num, res=16):
    import numpy as np
    import PIL.Image
    os.makedirs(path, exist_ok=True)
    rng = np.random.RandomState(0)
    for i in range(num):
        PIL.Image.fromarray(rng.randint(0, 256, [res, res, 3], dtype=np.uint8)).save(os.path.join(path, f"{i:05d}.png"))
    return path


def _instrument(counter):
    """Route metric_utils' detector construction through CountingDetector; returns an undo function."""
    from metrics import metric_utils
    original = metric_utils._detector

    def counted(opts, name, kwargs):
        return CountingDetector(original(opts, name, kwargs), counter)

    metric_utils._detector = counted
    original_dataset = metric_utils.compute_feature_stats_for_dataset

    def dataset_side(opts, *args, which="dataset", **kwargs):  # Real-side (and --data2) embeddings count apart.
        side, counter["side"] = counter["side"], "embedded_real" if which == "dataset" else "embedded_generated"
        try:
            return original_dataset(opts, *args, which=which, **kwargs)
        finally:
            counter["side"] = side

    metric_utils.compute_feature_stats_for_dataset = dataset_side

    def undo():
        metric_utils._detector = original
        metric_utils.compute_feature_stats_for_dataset = original_dataset

    return undo


def evaluation_main(args):
    import tempfile

    from metrics import metric_main
    from torch_utils import util

    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    for name in names:
        try:
            metric_main.validate_metric(name)
        except metric_main.MetricError as e:
            sys.exit(f"error: --metrics: {e}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tmp = tempfile.TemporaryDirectory()
    cache_dir = os.path.join(tmp.name, "cache")
    if args.counts_only:
        for name in ("inception", "dinov2_vitl14", "clip_vitb32"):
            detectors.register_detector(name, lambda _n=name, **kw: BlockMeans(_n))
        metric_main._results = lambda name, spec, real, gen, opts: dict.fromkeys(
            metric_main._result_names(name, spec), float("nan"))
        data = _synthetic_folder(os.path.join(tmp.name, "real"), args.real_images)
        G = TinyG()
    else:
        if args.data is None and args.network is None:
            sys.exit("error: --evaluation needs --data and/or --network (or --counts-only)")
        from training import snapshot
        if args.network is not None:
            G = snapshot.load_generator(args.network, device=device)
            data = args.data
            if data is None:
                recorded = snapshot.dataset_kwargs_from_snapshot(snapshot.load_snapshot(args.network, mmap=True))
                data = (recorded or {}).get("path")
            if data is None:
                sys.exit("error: the snapshot does not record its dataset; pass --data")
        else:
            from metrics import metric_utils
            from training.networks_fastgan import Generator
            shape = metric_utils.dataset_image_shape(metric_utils.open_dataset(dict(path=args.data)))
            torch.manual_seed(0)
            G = Generator(z_dim=256, w_dim=256, img_resolution=shape[1], img_channels=shape[0], ngf=32, lite=True)
            data = args.data
        G = G.eval().requires_grad_(False)
    counter = _Counter(side="embedded_generated")
    undo = _instrument(counter)
    G = CountingG(G, counter)
    kw = dict(G=G, dataset_kwargs=dict(path=data), device=device, batch_size=args.batch, cache_dir=cache_dir,
              cache=not (args.cold or args.counts_only), G_kwargs=dict(noise_mode="const"), fd_method=args.fd_method)

    def shared():
        return metric_main.calc_metrics(names, **kw)

    def per_metric():
        return [metric_main.calc_metric(name, **kw) for name in names]

    def run(fn):
        for key in ("generator_forwards", "generated_images", "embedded_generated", "embedded_real"):
            counter[key] = 0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        results = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        work = {k: counter[k] for k in ("generator_forwards", "generated_images", "embedded_generated",
                                        "embedded_real")}
        return seconds, work, {k: v for r in results for k, v in r["results"].items()}

    if not args.cold and not args.counts_only:
        run(shared)  # Real statistics into the cache, detectors loaded: not timed.
    rows = []
    modes = {"shared": shared, "per_metric": per_metric}
    for rep in range(1 if args.counts_only else args.repeats):
        for mode in (("shared", "per_metric") if rep % 2 == 0 else ("per_metric", "shared")):
            seconds, work, results = run(modes[mode])
            rows.append(dict(mode=mode, repeat=rep, seconds=None if args.counts_only else seconds, **work,
                             results=results))
    undo()
    tmp.cleanup()

    print(f"metrics: {','.join(names)}   batch {args.batch}   device {device}   "
          f"{'counts only (stand-in detector and generator)' if args.counts_only else ''}")
    header = f"{'mode':<11} {'rep':>3} {'G forwards':>10} {'G images':>9} {'det. imgs gen':>13} {'det. imgs real':>14}"
    print(header + ("" if args.counts_only else f" {'seconds':>9}"))
    print("-" * (len(header) + (0 if args.counts_only else 10)))
    for r in rows:
        line = (f"{r['mode']:<11} {r['repeat']:>3} {r['generator_forwards']:>10} {r['generated_images']:>9} "
                f"{r['embedded_generated']:>13} {r['embedded_real']:>14}")
        print(line + ("" if args.counts_only else f" {r['seconds']:>9.2f}"))
    if not args.counts_only:
        for mode in modes:
            times = [r["seconds"] for r in rows if r["mode"] == mode]
            print(f"{mode}: {util.format_time(min(times))} best of {len(times)} ({min(times):.2f} s)")
        mismatch = [k for k in rows[0]["results"] if any(r["results"][k] != rows[0]["results"][k] for r in rows)]
        print("results identical in every run" if not mismatch else f"results differ: {mismatch}")
    meta = dict(metrics=names, batch=args.batch, device=str(device), counts_only=args.counts_only,
                cold=args.cold, network=args.network, data=None if args.counts_only else data,
                real_images=args.real_images if args.counts_only else None, torch=torch.__version__,
                threads=torch.get_num_threads(), cpu=platform.processor() or platform.machine(),
                cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    with open(args.out, "w") as f:
        json.dump(dict(meta=meta, runs=rows), f, indent=2, default=float)
    print(f"wrote {args.out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detectors", default="inception", help="comma-separated detector names")
    ap.add_argument("--device", default=None, help="cpu, cuda or cpu,cuda (default: cpu, plus cuda if available)")
    ap.add_argument("--batch", type=int, default=None, help="images per forward pass (default 16; --evaluation: 64)")
    ap.add_argument("--res", type=int, default=256, help="input image resolution (detectors resize internally)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    ap.add_argument("--tol", type=float, default=1e-4, help="max relative feature error for a usable variant")
    ap.add_argument("--pretrained", action="store_true", help="timm detectors: download pretrained weights")
    ap.add_argument("--out", default="bench_metrics.json", help="JSON output path")
    ev = ap.add_argument_group("--evaluation: shared vs per-metric evaluation")
    ev.add_argument("--evaluation", action="store_true", help="benchmark an evaluation instead of the detectors")
    ev.add_argument("--metrics", default="fid50k_full,kid50k_full,pr50k3_full", help="comma-separated metric names")
    ev.add_argument("--network", default=None, help="generator snapshot (default: a random FastGAN-lite)")
    ev.add_argument("--data", default=None, help="real data (default: the snapshot's dataset)")
    ev.add_argument("--repeats", type=int, default=2, help="timed runs of each mode, interleaved")
    ev.add_argument("--cold", action="store_true", help="embed the real data in every run (no statistics cache)")
    ev.add_argument("--counts-only", action="store_true", help="work counts with stand-ins; no timing")
    ev.add_argument("--real-images", type=int, default=1000, help="--counts-only: size of the synthetic dataset")
    ev.add_argument("--fd-method", default="sqrtm", choices=["sqrtm", "eigh"])
    args = ap.parse_args()
    if args.evaluation:
        args.batch = args.batch or 64  # calc_metrics.py's default
        return evaluation_main(args)
    args.batch = args.batch or 16

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
