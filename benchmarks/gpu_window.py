#!/usr/bin/env python
"""One GPU window (a 10-minute slot), spent in order of value; rerunning in another slot does what is left.

    python benchmarks/gpu_window.py --official=.official/projected_gan     # JSON to $OUT/gpu_window.json
    python benchmarks/gpu_window.py --dry-run                              # the same steps on CPU, tiny (CI)

Steps (each in a subprocess with a time limit; gpu_check.py's machinery: the JSON is rewritten after every step,
steps recorded 'ok' are skipped on a rerun, --force redoes them, every step keeps the minimum budgets of the
later ones back):

    convergence     the convergence study at GPU scale: 64x64 emoji, FastGAN-lite, projected D vs the StyleGAN2
                    D + R1, same G / batch / seed (benchmarks/convergence.py), evaluated with fid10k_full at
                    geometric points, for as many kimg as the step's time allows (the study is recorded after
                    every point, so a cut-off run still reports its points)
    speed           FastGAN-256 batch 64 training, sec/kimg and peak memory: the fast D (bf16 backbone,
                    channels_last) with a float32 G, with --g-precision=bf16, with --tf32=1, and with both
    official_speed  the official Projected GAN code at the same setting from the checkout given by --official
                    (benchmarks/official_harness.py --cuda: its own loop and CUDA kernels; skipped without it)
    fid             fid50k_full of the speed step's snapshot (gpu_check.py's fid step)

To bring the official checkout to the GPU machine: copy it into an ignored folder of this repository (e.g.
`.official/projected_gan`, listed in .git/info/exclude) and name that folder in the device tool's `carry`.
"""

import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gpu_check  # noqa: E402
from gpu_check import REPO  # noqa: E402

STEPS = ("convergence", "speed", "official_speed", "fid")
MIN_BUDGET = dict(convergence=150, speed=120, official_speed=60, fid=60)
FAST = gpu_check.VARIANTS["fast"]
SPEED_VARIANTS = dict(fast=FAST, fast_bf16g=dict(FAST, g_precision="bf16"), fast_tf32=dict(FAST, tf32=True),
                      fast_bf16g_tf32=dict(FAST, g_precision="bf16", tf32=True))


def convergence_args(dry_run: bool) -> list:
    """convergence.py options: the GPU-scale study, or a tiny CPU one for --dry-run."""
    if dry_run:  # one point per arm: the wiring, at the least CPU time
        return ["--cfg=fastgan_lite", "--batch=4", "--kimg=0.004", "--first-kimg=0.004", "--per-octave=1", "--ngf=4",
                "--cbase=256", "--cmax=16", "--feat-res=32", "--metrics=fid8_full", "--grid=2x2", "--ema-kimg=0.01",
                "--device=cpu", "--workers=0", "--eval-batch=8"]
    return ["--cfg=fastgan_lite", "--batch=64", "--kimg=400", "--first-kimg=5", "--per-octave=2", "--ngf=64",
            "--feat-res=0", "--metrics=fid10k_full", "--ema-kimg=5", "--device=cuda", "--workers=4"]


class Window(gpu_check.Check):
    variants = SPEED_VARIANTS
    baseline_variant = "fast"  # bf16 G and TF32 are timed against the default fast path
    required_variants = ("fast",)
    filename = "gpu_window.json"

    def __init__(self, out_dir, deadline, dry_run, force, official=None):
        super().__init__(out_dir, deadline, dry_run, force)
        self.official = official
        self.pending = list(STEPS)
        if dry_run:  # TF32 means nothing on a CPU: the dry run times the two generator precisions only
            self.variants = {k: v for k, v in SPEED_VARIANTS.items() if not v.get("tf32")}

    def min_budget(self, name):
        return MIN_BUDGET[name] / (10 if self.dry_run else 1)

    def convergence(self, budget):
        study_dir = os.path.join(self.out_dir, "work", "convergence")
        docs_dir = os.path.join(self.out_dir, "convergence_docs")
        cmd = [sys.executable, os.path.join(HERE, "convergence.py"), "--name=gpu_fastgan_lite",
               f"--study-dir={study_dir}", f"--docs-dir={docs_dir}", "--quiet"] + convergence_args(self.dry_run)
        try:
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=budget)
            output, timed_out = proc.stdout + proc.stderr, False
        except subprocess.TimeoutExpired as err:  # the study is recorded point by point: report what it has
            output = (err.stdout or b"").decode(errors="replace") + (err.stderr or b"").decode(errors="replace")
            timed_out = True
        self._keep_log("convergence.log", output)
        try:
            with open(os.path.join(study_dir, "study.json"), encoding="utf-8") as f:
                study = json.load(f)
        except (OSError, ValueError):
            return dict(status="failed", reason="no study.json: " + (output.strip().splitlines() or ["?"])[-1][-300:])
        points = {arm: {p["kimg"]: p["results"] for p in study["arms"][arm]["points"].values() if p.get("results")}
                  for arm in study["arm_order"]}
        chunks = {arm: study["arms"][arm]["chunks"] for arm in study["arm_order"]}
        if not any(points.values()):
            return dict(status="failed", reason="no point evaluated within the step's time", chunks=chunks)
        return dict(status="ok", complete=not timed_out, points=points, chunks=chunks,
                    args=convergence_args(self.dry_run))

    def speed(self, budget):
        return self.train(budget)

    def official_speed(self, budget):
        if not self.official:
            return dict(status="skipped", reason="no --official checkout given")
        s = self.sizes
        res = max(s["res"], 128)  # their FastGAN needs 128x128 at least
        data = gpu_check.make_dataset(os.path.join(self.out_dir, "work", f"data{res}"), res, s["num_images"])
        outdir = os.path.join(self.out_dir, "work", "official")
        ticks = 3
        cmd = [sys.executable, os.path.join(HERE, "official_harness.py"), "train", f"--official={self.official}",
               f"--ngf={s['ngf']}", "--no-image-snapshots"] + ([] if self.dry_run else ["--cuda"]) + [
            "--", f"--outdir={outdir}", f"--cfg={s['cfg']}", f"--data={data}", "--gpus=1", f"--batch={s['batch']}",
            f"--kimg={ticks}", "--tick=1", "--snap=1000", "--metrics=none", "--workers=2", "--seed=0"]
        try:
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=budget)
            output = proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as err:
            output = (err.stdout or b"").decode(errors="replace") + (err.stderr or b"").decode(errors="replace")
        self._keep_log("official_speed.log", output)
        ticks = [dict(sec_per_kimg=float(m.group(1)), gpumem_gb=float(m.group(2))) for m in
                 re.finditer(r"^tick [1-9]\d*\s.*?sec/kimg\s+([\d.]+).*?gpumem\s+([\d.]+)", output, re.M)]
        if not ticks:
            return dict(status="failed", reason=(output.strip().splitlines() or ["no tick"])[-1][-300:])
        best = min(t["sec_per_kimg"] for t in ticks)
        return dict(status="ok", cfg=s["cfg"], res=res, batch=s["batch"], ngf=s["ngf"], ticks=ticks,
                    sec_per_kimg=best, img_per_sec=1000 / best, peak_mem_gb=max(t["gpumem_gb"] for t in ticks))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="output folder (default: $OUT, else ./gpu_window_out)")
    p.add_argument("--deadline", type=float, default=540, help="overall time limit in seconds (default 540)")
    p.add_argument("--official", default=None, help="root of an autonomousvision/projected_gan checkout")
    p.add_argument("--dry-run", action="store_true", help="every step on CPU at tiny sizes")
    p.add_argument("--force", action="store_true", help="redo steps already recorded as ok")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma list of steps (default: {','.join(STEPS)})")
    a = p.parse_args(argv)
    steps, out_dir = gpu_check.checked_common_args(p, a, STEPS, "gpu_window_out")
    if a.official and not os.path.isfile(os.path.join(a.official, "train.py")):
        p.error(f"--official: '{a.official}' has no train.py; give the root of a projected_gan checkout")
    official = os.path.abspath(a.official) if a.official else None
    return Window(out_dir, a.deadline, a.dry_run, a.force, official).run_all(steps, p)


if __name__ == "__main__":
    sys.exit(main())
