"""End-to-end: training on the embedded demo dataset lowers fid2k_full between the first and later snapshots.

Slow (about 25 minutes on a 2-core CPU: each fid2k_full embeds 2,000 generated images with the Inception network),
so it is opt-in:

    python -m pytest -m slow tests/test_metrics_e2e.py -s

It runs the README's demo configuration for 3 kimg with a snapshot and fid2k_full after every 1-kimg tick, prints
the FID curve, and checks that the curve went down by a wide margin. A generator that does not learn (broken loss,
frozen D, metrics computed on the wrong images) keeps FID at its initial value of several hundred.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "data", "fluent-emoji-64.zip")


@pytest.mark.slow
def test_demo_training_lowers_fid2k(tmp_path):
    env = dict(os.environ, PGAN_CACHE=str(tmp_path / "cache"))  # Real-data statistics computed afresh.
    cmd = [sys.executable, "train.py", f"--outdir={tmp_path / 'runs'}", "--cfg=fastgan_lite", "--loss=projected",
           f"--data={DEMO}", "--gpus=1", "--batch=16", "--ngf=32", "--feat-res=64", "--mirror=1", "--ema-kimg=0.25",
           "--workers=1", "--kimg=3", "--tick=1", "--snap=1", "--img-snap=1", "--metrics=fid2k_full"]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=3 * 3600)
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    with open(run_dir / "metric-fid2k_full.jsonl") as f:
        lines = [json.loads(line) for line in f]
    fids = [line["results"]["fid2k_full"] for line in lines]
    print("\nfid2k_full per snapshot:")
    for line, fid in zip(lines, fids):
        print(f"  {line['snapshot_pkl']}: {fid:.2f}")
    assert len(fids) >= 3, f"expected a metric line per snapshot, got {len(fids)}"
    assert fids[-1] < 0.75 * fids[0], f"FID did not drop: {fids}"
    assert min(fids[1:]) < fids[0]
