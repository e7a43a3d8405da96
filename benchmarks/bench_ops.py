"""Benchmark the fused ops: bias_act and upfirdn2d (upsample2d / downsample2d / filter2d), reference
PyTorch vs our CUDA kernels, forward and forward+backward, on typical StyleGAN2 activation shapes.

    python benchmarks/bench_ops.py                     # GPU if present, else CPU (ref rows only)
    python benchmarks/bench_ops.py --quick --device cpu --out /tmp/ops.json

Prints a Markdown table and writes JSON (default benchmarks/results/ops_<device>.json). CUDA rows
(and fp16 rows) appear only on a GPU; each CUDA row also reports its max abs error vs 'ref'.
"""

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
from torch_utils import util  # noqa: E402
from torch_utils.ops import bias_act, upfirdn2d  # noqa: E402


def _time(fn, device, warmup, repeats):
    """Median wall time of fn() in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _cases(shapes, device):
    """Yield (op name, shape, callable(x, impl) -> y, extra tensors)."""
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    for shape in shapes:
        C = shape[1]
        b = torch.randn(C, device=device)
        yield "bias_act lrelu+clamp", shape, lambda x, impl, b=b: bias_act.bias_act(
            x, b.to(x.dtype), act="lrelu", clamp=256, impl=impl)
        yield "upsample2d x2", shape, lambda x, impl: upfirdn2d.upsample2d(x, f, impl=impl)
        yield "downsample2d x2", shape, lambda x, impl: upfirdn2d.downsample2d(x, f, impl=impl)
        yield "filter2d 4x4", shape, lambda x, impl: upfirdn2d.filter2d(x, f, impl=impl)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu' or 'cuda'")
    parser.add_argument("--out", default=None, help="JSON output path (default benchmarks/results/ops_<device>.json)")
    parser.add_argument("--quick", action="store_true", help="small shapes and few repeats (CPU smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions per row (median reported)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed repetitions per row")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.quick:
        shapes = [(4, 64, 32, 32), (4, 32, 64, 64)]
        repeats, warmup = 5, 2
    else:
        # StyleGAN2 at 256^2 with batch 32: a mid 512-channel layer and a high-resolution layer.
        shapes = [(32, 512, 32, 32), (32, 128, 128, 128)]
        repeats, warmup = (20, 5) if device.type == "cuda" else (5, 2)
    repeats = args.repeats or repeats
    warmup = args.warmup or warmup
    if repeats < 1 or warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")

    impls = ["ref", "cuda"] if device.type == "cuda" else ["ref"]
    dtypes = [torch.float32, torch.float16] if device.type == "cuda" else [torch.float32]
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

    rows = []
    torch.manual_seed(0)
    for op, shape, fn in _cases(shapes, device):
        for dtype in dtypes:
            x0 = torch.randn(shape, device=device, dtype=dtype)
            ref_out = None
            for impl in impls:
                x = x0.clone().requires_grad_()
                out = fn(x, impl)
                err = None
                if impl == "ref":
                    ref_out = out.detach().float()
                else:
                    err = (out.detach().float() - ref_out).abs().max().item()
                dy = torch.randn_like(out)

                def fwd(fn=fn, x=x, impl=impl):
                    with torch.no_grad():
                        fn(x, impl)

                def fwd_bwd(fn=fn, x=x, impl=impl, dy=dy):
                    y = fn(x, impl)
                    y.backward(dy)

                for mode, call in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
                    ms = _time(call, device, warmup, repeats)
                    rows.append(dict(op=op, impl=impl, shape=list(shape), dtype=str(dtype).replace("torch.", ""),
                                     mode=mode, ms=round(ms, 4), max_err_vs_ref=err))
                    print(f"  {op:22s} {impl:4s} {str(list(shape)):20s} {rows[-1]['dtype']:8s} {mode:8s} {ms:9.3f} ms",
                          file=sys.stderr, flush=True)

    # Markdown table, with the CUDA speed-up over ref where both exist.
    by_key = {(r["op"], str(r["shape"]), r["dtype"], r["mode"], r["impl"]): r for r in rows}
    print(f"\nDevice: {device_name}; torch {torch.__version__}; median of {repeats} runs\n")
    print("| op | shape | dtype | mode | impl | ms | speed-up vs ref | max err vs ref |")
    print("| --- | --- | --- | --- | --- | ---: | ---: | ---: |")
    for r in rows:
        ref = by_key[(r["op"], str(r["shape"]), r["dtype"], r["mode"], "ref")]
        speedup = f"{ref['ms'] / r['ms']:.2f}x" if r["impl"] != "ref" and r["ms"] > 0 else ""
        err = "" if r["max_err_vs_ref"] is None else f"{r['max_err_vs_ref']:.2e}"
        cells = [r["op"], r["shape"], r["dtype"], r["mode"], r["impl"], f"{r['ms']:.3f}", speedup, err]
        print("| " + " | ".join(str(c) for c in cells) + " |")

    tag = "cpu" if device.type == "cpu" else re.sub(r"[^a-z0-9]+", "_", device_name.lower()).strip("_")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"ops_{tag}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    text = json.dumps(dict(device=device_name, torch=torch.__version__, repeats=repeats, warmup=warmup,
                           quick=args.quick, rows=rows), indent=1)
    util.atomic_write(out, lambda f: f.write(text.encode("utf-8")))  # No half-written JSON if interrupted.
    print(f"\nWrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
