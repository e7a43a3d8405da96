#!/usr/bin/env python
"""One-command GPU check: build the CUDA ops, run the CUDA-only tests, time training and the D step, run a FID.

    python benchmarks/gpu_check.py                  # on a CUDA machine; JSON to $OUT/gpu_check.json (or --out)
    python benchmarks/gpu_check.py --dry-run        # the same steps on CPU at tiny sizes (CI: proves the wiring)

Steps, in order, each in its own subprocess with a time limit (training and metrics start from a clean CUDA
memory state, and a hang cannot eat the whole budget):

    build_ops      JIT-compile the bias_act / upfirdn2d CUDA kernels (torch_utils.custom_ops)
    cuda_tests     python -m pytest -q -m cuda tests/
    train          FastGAN 256x256, batch 64, projected D: sec/kimg and peak CUDA memory, once with the backbone in
                   bf16 + channels_last, once with both off, and once fast + TF32 for the float32 layers (--tf32=1;
                   the training loop itself, config from train.py)
    d_step         the projected D's training step alone (real + fake hinge loss, backward, Adam), same settings
    fid            fid50k_full of the snapshot the train step wrote (of an untrained generator of the same
                   architecture when that snapshot is not there, e.g. on a fresh machine: timing only)

An overall deadline (--deadline, 8 minutes by default) bounds the run: each step may use the time left minus the
minimum budgets of the steps after it, and a step whose own minimum no longer fits is recorded as skipped with the
reason (the optional fast_tf32 training variant is skipped first). The JSON is rewritten atomically after every
step; rerunning skips the steps already recorded as 'ok' (--force redoes them). Dry run: the GPU-only steps are
recorded as skipped ("no CUDA"), the others run on CPU with tiny sizes, and the JSON says "dry_run": true.
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
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from torch_utils import util  # noqa: E402  (stdlib-only module: the driver stays fast to start)

SCHEMA = 1
STEPS = ("build_ops", "cuda_tests", "train", "d_step", "fid")
# Minimum seconds each step needs to be worth starting (full run; dry runs need far less).
MIN_BUDGET = dict(build_ops=30, cuda_tests=30, train=60, d_step=20, fid=60)
VARIANTS = dict(fast=dict(channels_last=True, bf16=True), plain=dict(channels_last=False, bf16=False))
# Also timed: the fast variant with TF32 tensor cores for the float32 layers (train.py --tf32=1; off by default).
TIMED_VARIANTS = dict(VARIANTS, fast_tf32=dict(VARIANTS["fast"], tf32=True))


def sizes(dry_run: bool) -> dict:
    """Problem sizes: the issue's (FastGAN 256, batch 64, fid50k_full) or tiny CPU ones for --dry-run."""
    if dry_run:
        return dict(cfg="fastgan_lite", res=32, batch=2, ngf=8, feat_res=32, steps=1, num_images=8, d_steps=2,
                    metric="fid8_full", device="cpu")
    return dict(cfg="fastgan", res=256, batch=64, ngf=128, feat_res=None, steps=5, num_images=256, d_steps=10,
                metric="fid50k_full", device="cuda")


# ---------------------------------------------------------------------------------------------
# Workers (run in a subprocess: `gpu_check.py --worker STEP --args JSON`; print one "RESULT {json}" line).


def _result(data: dict) -> None:
    print("RESULT " + json.dumps(data), flush=True)


def worker_build_ops(a):
    import torch

    from torch_utils.ops import bias_act, upfirdn2d

    if not torch.cuda.is_available():
        return dict(status="skipped", reason="no CUDA")
    out = {}
    for name, module in (("bias_act", bias_act), ("upfirdn2d", upfirdn2d)):
        t0 = time.time()
        plugin = module._get_plugin()
        out[name] = dict(built=plugin is not None, seconds=round(time.time() - t0, 2))
    ok = all(v["built"] for v in out.values())
    return dict(status="ok" if ok else "failed", ops=out, **({} if ok else dict(reason="a plugin did not build")))


def worker_train(a):
    """Training-loop speed of one variant; the config is the one `train.py --dry-run` prints."""
    import torch

    from torch_utils import util
    from training.training_loop import training_loop

    s, variant = a["sizes"], a["variant"]
    with open(a["config"], encoding="utf-8") as f:
        c = util.EasyDict(json.load(f))
    d_kwargs = dict(a.get("variant_kwargs") or TIMED_VARIANTS[variant])
    c.allow_tf32 = d_kwargs.pop("tf32", False)
    g_precision = d_kwargs.pop("g_precision", "fp32")
    if g_precision != "fp32":
        c.G_kwargs["precision"] = g_precision
    c.D_kwargs.update(d_kwargs)
    step_kimg = s["batch"] / 1000
    c.update(total_kimg=(1 + 2 * s["steps"]) * step_kimg, kimg_per_tick=s["steps"] * step_kimg,
             image_snapshot_ticks=None, network_snapshot_ticks=1000, metrics=[], grid_size=[1, 1])
    for key in ("cli", "run_dir"):
        c.pop(key, None)
    device = torch.device(s["device"])
    t0 = time.time()
    res = training_loop(run_dir=a["run_dir"], device=device, **c)
    peak = res["peak_gpu_mem"] if device.type == "cuda" else None
    return dict(status="ok", sec_per_kimg=res["sec_per_kimg"], img_per_sec=1000 / res["sec_per_kimg"],
                peak_mem_gb=None if peak is None else peak / 2**30, total_seconds=round(time.time() - t0, 2),
                snapshot=res.get("last_snapshot"))


def worker_d_step(a):
    """Mean seconds of the projected D's training step (hinge loss on real and fake, backward, Adam step)."""
    import torch

    from projector_plugin import ProjectedDiscriminator

    s, device = a["sizes"], torch.device(a["sizes"]["device"])
    out = {}
    for variant, kwargs in TIMED_VARIANTS.items():
        kwargs = dict(kwargs)
        tf32 = kwargs.pop("tf32", False)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32  # As the training loop sets.
        if device.type != "cuda" and kwargs["bf16"]:
            kwargs = dict(kwargs, bf16=False)  # bf16 autocast on a CPU without native support only measures that
        D = ProjectedDiscriminator(feat_res=s["feat_res"], **kwargs).to(device).train()
        opt = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.0, 0.99))
        real = torch.rand(s["batch"], 3, s["res"], s["res"], device=device) * 2 - 1
        fake = torch.rand(s["batch"], 3, s["res"], s["res"], device=device) * 2 - 1
        c = torch.zeros(s["batch"], 0, device=device)

        def step(D=D, opt=opt, real=real, fake=fake, c=c):
            opt.zero_grad(set_to_none=True)
            loss = torch.relu(1 - D(real, c)).mean() + torch.relu(1 + D(fake, c)).mean()
            loss.backward()
            opt.step()

        step()  # warm-up: cudnn autotuning, lazy weight conversion
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in range(s["d_steps"]):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        sec = (time.perf_counter() - t0) / s["d_steps"]
        out[variant] = dict(sec_per_step=sec, img_per_sec=2 * s["batch"] / sec,
                            peak_mem_gb=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
                            else None, tf32=tf32, **kwargs)
        del D, opt
    return dict(status="ok", **out)


def worker_fresh_snapshot(a):
    """A lean snapshot of an untrained generator of the train step's architecture (for the FID step's timing)."""
    import torch

    import train
    from torch_utils import util
    from training.snapshot import save_snapshot

    s = a["sizes"]
    opts, given = train.script_options(cfg=s["cfg"], batch=s["batch"], ngf=s["ngf"], feat_res=s["feat_res"])
    c = train.build_config(opts, given, world_size=1)
    network = dict(c.G_kwargs, c_dim=0, img_resolution=s["res"], img_channels=3)  # make_dataset's images
    torch.manual_seed(c.random_seed)
    G = util.construct_class_by_name(**network).eval()
    save_snapshot(a["path"], networks=dict(G=network), G=G, G_ema=G)
    return dict(status="ok", snapshot=a["path"])


WORKERS = dict(build_ops=worker_build_ops, train=worker_train, d_step=worker_d_step,
               fresh_snapshot=worker_fresh_snapshot)


# ---------------------------------------------------------------------------------------------
# Driver.


def make_dataset(root: str, res: int, num: int) -> str:
    import numpy as np
    import PIL.Image

    os.makedirs(root, exist_ok=True)
    rnd = np.random.RandomState(0)
    for i in range(num):
        path = os.path.join(root, f"{i:04d}.png")
        if not os.path.exists(path):
            PIL.Image.fromarray((rnd.rand(res, res, 3) * 255).astype(np.uint8)).save(path)
    return root


class Check:
    # Training variants the train step times (the optional ones, beyond `required_variants`, are skipped first when
    # time runs short), and the file the results go to. Subclasses (gpu_window.py) change them.
    variants = TIMED_VARIANTS
    baseline_variant = "plain"
    required_variants = tuple(VARIANTS)
    filename = "gpu_check.json"

    def __init__(self, out_dir, deadline, dry_run, force):
        self.out_dir, self.dry_run, self.force = out_dir, dry_run, force
        self.path = os.path.join(out_dir, self.filename)
        self.t0 = time.time()
        self.deadline = deadline
        self.sizes = sizes(dry_run)
        self.data = self._load()
        self.pending = list(STEPS)  # The steps of this invocation, in order (main() sets them).
        self.current_step = None

    def _load(self):
        fresh = dict(schema=SCHEMA, dry_run=self.dry_run, sizes=self.sizes, steps={})
        if not os.path.isfile(self.path):
            return fresh
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return fresh  # unreadable (e.g. written by hand): start over rather than fail
        if data.get("schema") != SCHEMA or data.get("dry_run") != self.dry_run or data.get("sizes") != self.sizes:
            return fresh  # another mode or other sizes: earlier results do not apply
        return data

    def save(self):
        os.makedirs(self.out_dir, exist_ok=True)
        self.data.update(updated=time.strftime("%Y-%m-%d %H:%M:%S"), deadline_s=self.deadline)
        util.atomic_write(self.path, lambda f: f.write(json.dumps(self.data, indent=2).encode("utf-8")))

    def remaining(self):
        return self.deadline - (time.time() - self.t0)

    def record(self, name, entry):
        self.data["steps"][name] = entry
        self.save()
        detail = entry.get("reason") or ""
        print(f"{name:>11s}: {entry['status']} {detail}".rstrip(), flush=True)

    def run_worker(self, name, args, budget):
        """Run worker `name` in a subprocess for at most `budget` seconds -> its result dict."""
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, dir=self.out_dir) as f:
            json.dump(args, f)
        try:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--args", f.name]
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=budget)
        except subprocess.TimeoutExpired:
            return dict(status="failed", reason=f"timed out after {budget:.0f} s")
        finally:
            os.unlink(f.name)
        self._keep_log(f"worker-{name}.log", proc.stdout + proc.stderr)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            return dict(status="failed", reason=last[-300:])
        return json.loads(lines[-1][len("RESULT "):])

    def _keep_log(self, filename, text):
        """The full output of a subprocess beside the JSON (appended: a step may run a worker twice)."""
        with open(os.path.join(self.out_dir, filename), "a", encoding="utf-8") as f:
            f.write(text)

    def min_budget(self, name):
        return MIN_BUDGET[name] / (10 if self.dry_run else 1)

    def reserve(self, name):
        """Seconds kept back for the steps after `name` that still have to run (their minimum budgets), so that
        one slow step cannot starve the rest (on the first H200 run, training left the FID 36 s)."""
        later = self.pending[self.pending.index(name) + 1:] if name in self.pending else []
        return sum(self.min_budget(n) for n in later
                   if self.force or self.data["steps"].get(n, {}).get("status") != "ok")

    def budget(self, name):
        """Seconds this step may use, or None (with the step recorded as skipped) when too little is left."""
        need = self.min_budget(name)
        left = self.remaining() - self.reserve(name)
        if left < need:
            self.record(name, dict(status="skipped", reason=f"deadline: {left:.0f} s left, the step needs "
                                                            f"at least {need:.0f} s"))
            return None
        return left

    def step(self, name, fn):
        prev = self.data["steps"].get(name)
        if prev is not None and prev.get("status") == "ok" and not self.force:
            print(f"{name:>11s}: ok (recorded; --force to redo)")
            return
        if self.dry_run and name in ("build_ops", "cuda_tests"):
            self.record(name, dict(status="skipped", reason="no CUDA (dry run)", seconds=0.0))
            return
        budget = self.budget(name)
        if budget is None:
            return
        t0 = time.time()
        self.current_step = name
        entry = fn(budget)
        entry["seconds"] = round(time.time() - t0, 2)
        self.record(name, entry)

    def run_all(self, steps, parser) -> int:
        """Record the environment, run `steps` in order (each saved as it ends), and return the exit status: 0 when
        every step is ok or skipped. Without CUDA (and not a dry run), `parser.error`."""
        self.pending = list(steps)
        if not self.dry_run:
            import torch

            if not torch.cuda.is_available():
                parser.error("CUDA is not available; use --dry-run to check the wiring on CPU")
            self.data["env"] = dict(torch=torch.__version__, cuda=torch.version.cuda,
                                    gpu=torch.cuda.get_device_name(0), python=platform.python_version())
        else:
            self.data["env"] = dict(python=platform.python_version(), machine=platform.machine())
        for name in steps:
            self.step(name, getattr(self, name) if hasattr(self, name) else
                      (lambda budget, name=name: self.run_worker(name, dict(sizes=self.sizes), budget)))
        self.data["total_seconds"] = round(time.time() - self.t0, 2)
        self.save()
        print(f"Wrote {self.path}")
        return 0 if all(self.data["steps"].get(s, {}).get("status") in ("ok", "skipped") for s in steps) else 1

    # Steps.

    def cuda_tests(self, budget):
        cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-m", "cuda", "-p", "no:cacheprovider", "tests"]
        try:
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=budget)
        except subprocess.TimeoutExpired:
            return dict(status="failed", reason=f"timed out after {budget:.0f} s")
        self._keep_log("cuda_tests.log", proc.stdout + proc.stderr)
        summary = (proc.stdout.strip().splitlines() or [""])[-1]
        failed = [ln.split(" ", 1)[1].split(" - ")[0] for ln in proc.stdout.splitlines() if ln.startswith("FAILED ")]
        return dict(status="ok" if proc.returncode == 0 else "failed", summary=summary, returncode=proc.returncode,
                    failed=failed, **({} if proc.returncode == 0 else dict(reason=summary)))

    def dataset(self):
        s = self.sizes
        return make_dataset(os.path.join(self.out_dir, "work", f"data{s['res']}"), s["res"], s["num_images"])

    def write_config(self, budget):
        """The training options `train.py --dry-run` prints for these sizes, as JSON -> (path, None) or
        (None, failure reason)."""
        s = self.sizes
        config = os.path.join(self.out_dir, "work", "train_config.json")
        cmd = [sys.executable, os.path.join(REPO, "train.py"), f"--outdir={os.path.join(self.out_dir, 'work')}",
               f"--cfg={s['cfg']}", f"--data={self.dataset()}", f"--batch={s['batch']}", f"--ngf={s['ngf']}",
               "--metrics=none", "--workers=2", f"--device={s['device']}", "--dry-run"]
        if s["feat_res"]:
            cmd.append(f"--feat-res={s['feat_res']}")
        try:
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(budget, 1))
        except subprocess.TimeoutExpired:
            return None, f"train.py --dry-run timed out after {budget:.0f} s"
        text = proc.stdout
        if proc.returncode != 0 or "Training options:" not in text:
            return None, "train.py --dry-run: " + (proc.stderr.strip().splitlines() or ["no options printed"])[-1]
        # The JSON object follows "Training options:" up to the first line that is not part of it.
        body = text.split("Training options:", 1)[1]
        config_obj, _ = json.JSONDecoder().raw_decode(body.strip())
        util.atomic_write(config, lambda f: f.write(json.dumps(config_obj).encode("utf-8")))
        return config, None

    def train(self, budget):
        s = self.sizes
        config, reason = self.write_config(budget)
        if config is None:
            return dict(status="failed", reason=reason)
        out = dict(status="ok", cfg=s["cfg"], res=s["res"], batch=s["batch"])
        step = self.current_step or "train"
        for variant, kwargs in self.variants.items():
            left = self.remaining() - self.reserve(step)
            if variant not in self.required_variants and left < self.min_budget(step):  # optional: skip, not fail
                out[variant] = dict(status="skipped", reason=f"deadline: {left:.0f} s left for it")
                continue
            run_dir = os.path.join(self.out_dir, "work", f"train-{variant}")
            r = self.run_worker("train", dict(sizes=s, variant=variant, variant_kwargs=kwargs, config=config,
                                              run_dir=run_dir), max(left - 5, 1))
            out[variant] = r
            if r.get("status") != "ok":
                out.update(status="failed", reason=f"{variant}: {r.get('reason')}")
                break
        base = self.baseline_variant  # speedups relative to it, measured in the same run
        if out["status"] == "ok" and out[base].get("status") == "ok":
            for variant in self.variants:
                if variant != base and out[variant].get("status") == "ok":
                    out[f"speedup_{variant}_vs_{base}"] = out[base]["sec_per_kimg"] / out[variant]["sec_per_kimg"]
        return out

    def d_step(self, budget):
        return self.run_worker("d_step", dict(sizes=self.sizes), budget)

    def fid(self, budget):
        t0 = time.time()
        data = self.dataset()  # (creates the work folder too)
        train = self.data["steps"].get("train") or self.data["steps"].get("speed") or {}
        snap, source = (train.get("fast") or {}).get("snapshot"), "train"
        if not snap or not os.path.isfile(snap):
            # The train step did not run here or its files are gone (a fresh machine): time the metric on an
            # untrained generator of the same architecture instead, so the step never depends on an earlier one.
            snap, source = os.path.join(self.out_dir, "work", "fresh-generator.pt"), "fresh"
            r = self.run_worker("fresh_snapshot", dict(sizes=self.sizes, path=snap), budget)
            if r.get("status") != "ok":
                return dict(status="failed", reason=f"fresh generator snapshot: {r.get('reason')}")
        s = self.sizes
        budget = max(budget - (time.time() - t0), 1)
        cmd = [sys.executable, os.path.join(REPO, "calc_metrics.py"), f"--metrics={s['metric']}",
               f"--network={snap}", f"--data={data}", "--quiet", f"--device={s['device']}",
               f"--run-dir={os.path.join(self.out_dir, 'work')}"]
        try:
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=budget)
        except subprocess.TimeoutExpired:
            return dict(status="failed", reason=f"timed out after {budget:.0f} s")
        if proc.returncode != 0:
            return dict(status="failed", reason=(proc.stderr.strip().splitlines() or ["?"])[-1][-300:])
        path = os.path.join(self.out_dir, "work", f"metric-{s['metric']}.jsonl")
        with open(path, encoding="utf-8") as f:
            line = json.loads(f.read().strip().splitlines()[-1])
        return dict(status="ok", metric=s["metric"], value=line["results"][s["metric"]], snapshot=snap,
                    snapshot_source=source, metric_seconds=line.get("total_time"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="output folder (default: $OUT, else ./gpu_check_out)")
    p.add_argument("--deadline", type=float, default=480, help="overall time limit in seconds (default 480)")
    p.add_argument("--dry-run", action="store_true", help="every step on CPU at tiny sizes (GPU-only steps skipped)")
    p.add_argument("--force", action="store_true", help="redo steps already recorded as ok")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma list of steps (default: {','.join(STEPS)})")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--args", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    sys.path.insert(0, REPO)
    if a.worker:
        with open(a.args, encoding="utf-8") as f:
            _result(WORKERS[a.worker](json.load(f)))
        return 0
    steps, out_dir = checked_common_args(p, a, STEPS, "gpu_check_out")
    return Check(out_dir, a.deadline, a.dry_run, a.force).run_all(steps, p)


def checked_common_args(p, a, known_steps, default_out):
    """(steps, out_dir) from the --steps/--deadline/--out options shared by the GPU scripts; p.error on bad ones."""
    steps = [s.strip() for s in a.steps.split(",") if s.strip()]
    bad = [s for s in steps if s not in known_steps]
    if bad:
        p.error(f"--steps: unknown step(s) {', '.join(bad)}; choose from {', '.join(known_steps)}")
    if a.deadline <= 0:
        p.error("--deadline must be positive")
    out_dir = os.path.abspath(a.out or os.environ.get("OUT") or default_out)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        p.error(f"--out: '{out_dir}' is a file; give a folder (the results JSON is written into it)")
    return steps, out_dir


if __name__ == "__main__":
    sys.exit(main())
