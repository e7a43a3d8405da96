"""benchmarks/gpu_check.py: the one-command GPU check, exercised on CPU through its --dry-run mode."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCRIPT = os.path.join(REPO, "benchmarks", "gpu_check.py")
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import gpu_check  # noqa: E402


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_full_sizes_are_the_issue_setting():
    s = gpu_check.sizes(dry_run=False)
    assert (s["cfg"], s["res"], s["batch"], s["metric"], s["device"]) == ("fastgan", 256, 64, "fid50k_full", "cuda")
    expected = dict(fast=dict(channels_last=True, bf16=True), plain=dict(channels_last=False, bf16=False))
    assert expected == gpu_check.VARIANTS
    assert dict(expected, fast_tf32=dict(expected["fast"], tf32=True)) == gpu_check.TIMED_VARIANTS


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    proc = run("--dry-run", f"--out={out}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "gpu_check.json", encoding="utf-8") as f:
        return out, json.load(f), proc.stdout


def test_dry_run_records_every_step(dry_run):
    out, data, stdout = dry_run
    assert data["schema"] == gpu_check.SCHEMA and data["dry_run"] is True
    with open(out / "worker-train.log", encoding="utf-8") as f:  # The workers' full output, kept for diagnosis.
        assert f.read().count("RESULT ") == len(gpu_check.TIMED_VARIANTS)
    steps = data["steps"]
    assert list(steps) == list(gpu_check.STEPS)
    for name in ("build_ops", "cuda_tests"):
        assert steps[name]["status"] == "skipped" and "no CUDA" in steps[name]["reason"]
    train = steps["train"]
    assert train["status"] == "ok"
    for variant in gpu_check.TIMED_VARIANTS:
        assert train[variant]["sec_per_kimg"] > 0
        assert train[variant]["img_per_sec"] == pytest.approx(1000 / train[variant]["sec_per_kimg"])
        assert os.path.isfile(train[variant]["snapshot"])
    assert train["speedup_fast_vs_plain"] == pytest.approx(train["plain"]["sec_per_kimg"] /
                                                           train["fast"]["sec_per_kimg"])
    d_step = steps["d_step"]
    assert d_step["status"] == "ok"
    assert d_step["fast"]["channels_last"] is True and d_step["fast"]["bf16"] is False  # bf16 is CUDA-only
    assert d_step["plain"]["channels_last"] is False
    assert d_step["fast_tf32"]["tf32"] is True and d_step["fast"]["tf32"] is False
    for variant in gpu_check.TIMED_VARIANTS:
        assert d_step[variant]["sec_per_step"] > 0
    fid = steps["fid"]
    assert fid["status"] == "ok" and fid["metric"] == "fid8_full"
    assert 0 < fid["value"] < 1e4
    assert fid["snapshot_source"] == "train" and fid["snapshot"] == train["fast"]["snapshot"]
    assert "Wrote " in stdout
    assert not [n for n in os.listdir(dry_run[0]) if n.endswith(".tmp")]  # atomic writes leave no temp file


def test_rerun_is_idempotent_and_skips_recorded_steps(dry_run):
    out, before, _ = dry_run
    proc = run("--dry-run", f"--out={out}", "--steps=train,d_step,fid")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("recorded; --force to redo") == 3
    with open(out / "gpu_check.json", encoding="utf-8") as f:
        after = json.load(f)
    assert after["steps"] == before["steps"]


def test_fid_step_alone_measures_a_fresh_generator(tmp_path):
    """On a fresh machine the train step's snapshot is not there (the first H200 rerun skipped the FID for that):
    the FID step builds an untrained generator of the same architecture and times the metric on it."""
    proc = run("--dry-run", f"--out={tmp_path}", "--steps=fid")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(tmp_path / "gpu_check.json", encoding="utf-8") as f:
        steps = json.load(f)["steps"]
    assert list(steps) == ["fid"]
    fid = steps["fid"]
    assert fid["status"] == "ok" and fid["snapshot_source"] == "fresh" and 0 < fid["value"] < 1e4
    from training.generation import load_network

    G = load_network(fid["snapshot"])
    assert (G.img_resolution, G.img_channels, G.c_dim) == (32, 3, 0)


@pytest.mark.parametrize("args, message", [
    (["--dry-run", "--steps=train,warp"], "--steps: unknown step(s) warp"),
    (["--dry-run", "--deadline=0"], "--deadline must be positive"),
])
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    proc = run(*args, f"--out={tmp_path}")
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "gpu_check.json").exists()


def test_out_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "gpu_check.json"
    target.write_text("keep me")
    proc = run("--dry-run", f"--out={target}")
    assert proc.returncode == 2 and "--out:" in proc.stderr and "is a file" in proc.stderr
    assert target.read_text() == "keep me"


def test_each_step_leaves_the_later_steps_their_minimum_budget(tmp_path, monkeypatch):
    check = gpu_check.Check(str(tmp_path), deadline=480, dry_run=False, force=False)
    check.pending = list(gpu_check.STEPS)
    mb = gpu_check.MIN_BUDGET
    assert check.reserve("train") == mb["d_step"] + mb["fid"] and check.reserve("fid") == 0
    check.data["steps"]["d_step"] = dict(status="ok")  # Recorded by an earlier run: it will not run again.
    assert check.reserve("train") == mb["fid"]
    monkeypatch.setattr(check, "remaining", lambda: mb["fid"] + mb["train"] - 1)
    assert check.budget("train") is None  # One second short once the FID's minute is kept back.
    assert check.data["steps"]["train"]["status"] == "skipped"
    assert check.budget("fid") == mb["fid"] + mb["train"] - 1
