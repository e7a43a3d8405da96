"""benchmarks/gpu_window.py: the GPU window's steps, exercised on CPU through --dry-run (without the official
checkout, whose step is then recorded as skipped)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCRIPT = os.path.join(REPO, "benchmarks", "gpu_window.py")
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import gpu_window  # noqa: E402


def test_the_speed_variants_are_the_issue_ones():
    fast = dict(channels_last=True, bf16=True)
    expected = dict(fast=fast, fast_bf16g=dict(fast, g_precision="bf16"), fast_tf32=dict(fast, tf32=True),
                    fast_bf16g_tf32=dict(fast, g_precision="bf16", tf32=True))
    assert expected == gpu_window.SPEED_VARIANTS
    args = gpu_window.convergence_args(dry_run=False)
    assert "--cfg=fastgan_lite" in args and "--metrics=fid10k_full" in args and "--device=cuda" in args


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_window")
    proc = subprocess.run([sys.executable, SCRIPT, "--dry-run", f"--out={out}", "--deadline=1500"], cwd=REPO,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "gpu_window.json", encoding="utf-8") as f:
        return out, json.load(f)


def test_dry_run_records_every_step_in_order_of_value(dry_run):
    out, data = dry_run
    assert data["dry_run"] is True and list(data["steps"]) == list(gpu_window.STEPS)
    conv = data["steps"]["convergence"]
    assert conv["status"] == "ok" and set(conv["points"]) == {"projected", "stylegan2"}
    for arm, points in conv["points"].items():
        assert points and all("fid8_full" in results for results in points.values()), arm
    speed = data["steps"]["speed"]
    assert speed["status"] == "ok"
    for variant in ("fast", "fast_bf16g"):  # (the TF32 ones only on a GPU)
        assert speed[variant]["sec_per_kimg"] > 0, variant
    assert "fast_tf32" not in speed
    ratio = speed["fast"]["sec_per_kimg"] / speed["fast_bf16g"]["sec_per_kimg"]
    assert speed["speedup_fast_bf16g_vs_fast"] == pytest.approx(ratio)  # both measured in the same run
    assert data["steps"]["official_speed"] == dict(status="skipped", reason="no --official checkout given",
                                                   seconds=data["steps"]["official_speed"]["seconds"])
    assert data["steps"]["fid"]["status"] == "ok" and data["steps"]["fid"]["value"] > 0


def test_a_rerun_skips_what_is_recorded(dry_run):
    out, data = dry_run
    proc = subprocess.run([sys.executable, SCRIPT, "--dry-run", f"--out={out}", "--steps=convergence,fid"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.count("(recorded; --force to redo)") == 2, proc.stdout


def test_bad_arguments_fail_in_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    for args, fragment in ((["--steps=bogus"], "unknown step"), ([f"--official={tmp_path}"], "has no train.py"),
                           (["--deadline=0"], "--deadline must be positive"),
                           ([f"--out={a_file}"], "is a file; give a folder")):
        proc = subprocess.run([sys.executable, SCRIPT, "--dry-run", f"--out={tmp_path / 'o'}"] + args, cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and fragment in proc.stderr, (args, proc.stderr)
