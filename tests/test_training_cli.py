"""train.py end to end on CPU: every --cfg x --loss, --dry-run, option validation, multi-process
(gloo) equivalence, and SIGKILL + --resume=latest."""

import glob
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import train
from training import snapshot
from training import training_loop as tl

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _write_images(root, num, res, labels=None):
    os.makedirs(root, exist_ok=True)
    rnd = np.random.RandomState(num + res)
    for i in range(num):
        img = (rnd.rand(res, res, 3) * 255).astype(np.uint8)
        img[res // 8: res // 2, res // 8: res // 3] = rnd.randint(0, 256, 3)
        PIL.Image.fromarray(img).save(os.path.join(root, f"img{i:02d}.png"))
    if labels is not None:
        with open(os.path.join(root, "dataset.json"), "w") as f:
            json.dump({"labels": [[f"img{i:02d}.png", int(labels[i])] for i in range(num)]}, f)
    return str(root)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return dict(
        plain=_write_images(root / "plain", 12, 32),
        labeled=_write_images(root / "labeled", 12, 32, labels=[i % 3 for i in range(12)]),
        small=_write_images(root / "small", 4, 16),
    )


# One step of 4 images: tick 0 of a fresh run ends after its first step and writes every output.
COMMON = ["--batch=4", "--kimg=0.004", "--tick=0.004", "--snap=1", "--metrics=none", "--workers=0", "--grid=2x2",
          "--seed=1"]
NET_OPTS = {
    ("fastgan", "projected"): ["--ngf=4", "--feat-res=32"],
    ("fastgan_lite", "projected"): ["--ngf=4", "--feat-res=32", "--mirror=1"],
    ("stylegan2", "projected"): ["--cbase=256", "--cmax=16", "--feat-res=32", "--fp32=1"],
    ("fastgan", "stylegan2"): ["--ngf=4", "--cbase=256", "--cmax=16"],
    ("fastgan_lite", "stylegan2"): ["--ngf=4", "--cbase=256", "--cmax=16", "--cond=1"],
    ("stylegan2", "stylegan2"): ["--cbase=256", "--cmax=16", "--map-depth=2", "--fp32=1"],
}


def run_cli(args):
    result = CliRunner().invoke(train.main, args, catch_exceptions=False)
    return result


def _read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def _stats(run_dir):
    with open(os.path.join(run_dir, "stats.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("cfg,loss", list(NET_OPTS))
def test_smoke_every_cfg_and_loss(tmp_path, data, cfg, loss):
    extra = NET_OPTS[(cfg, loss)]
    dataset = data["labeled"] if "--cond=1" in extra else data["plain"]
    result = run_cli([f"--outdir={tmp_path}", f"--cfg={cfg}", f"--loss={loss}", f"--data={dataset}"] + COMMON + extra)
    assert result.exit_code == 0, result.output
    (run_dir,) = glob.glob(str(tmp_path / "00000-*"))
    assert os.path.basename(run_dir) == f"00000-{cfg}-{loss}-{os.path.basename(dataset)}-gpus1-batch4"
    # --tick=0.004 --snap=1: snapshots less than 1 kimg apart have exact names (kimg with 3 decimals).
    for name in ("training_options.json", "log.txt", "stats.jsonl", "reals.png", "fakes_init.png",
                 "fakes000000.004.png", "network-snapshot-000000.004.pt"):
        assert os.path.isfile(os.path.join(run_dir, name)), name

    options = json.loads(_read(os.path.join(run_dir, "training_options.json")))
    expect_G = "training.networks_stylegan2.Generator" if cfg == "stylegan2" else "training.networks_fastgan.Generator"
    expect_D = ("projector_plugin.ProjectedDiscriminator" if loss == "projected"
                else "training.networks_stylegan2.Discriminator")
    assert options["G_kwargs"]["class_name"] == expect_G and options["D_kwargs"]["class_name"] == expect_D
    assert options["batch_size"] == 4 and options["total_kimg"] == 0.004

    log = _read(os.path.join(run_dir, "log.txt"))
    assert "tick 0" in log and "sec/kimg" in log and "eta" in log and "Exiting" in log
    stats = _stats(run_dir)
    assert len(stats) == 1 and stats[0]["Progress/kimg"]["mean"] == pytest.approx(0.004)
    for name in ("Loss/G/loss", "Loss/D/loss"):
        assert all(math.isfinite(s[name]["mean"]) for s in stats), name
    assert PIL.Image.open(os.path.join(run_dir, "fakes000000.004.png")).size == (64, 64)

    snap = snapshot.load_snapshot(os.path.join(run_dir, "network-snapshot-000000.004.pt"))
    assert snap["progress"]["cur_nimg"] == 4
    assert snap["networks"]["G"]["c_dim"] == (3 if "--cond=1" in extra else 0)
    # Parameters changed: rebuild G's initialization (the loop seeds it with (seed, 0, 0)) and compare.
    tl._seed_chunk(1, 0, 0)
    G_init = snapshot.build_network(snap["networks"]["G"]).state_dict()
    noise = [k for k in G_init if "noise_const" in k]
    assert noise and all(torch.equal(G_init[k], snap["G"][k]) for k in noise)  # the rebuild is the true init
    weights = [k for k in G_init if k.endswith("weight") or k.endswith("original")]
    changed = [k for k in weights if not torch.equal(G_init[k], snap["G"][k])]
    assert len(changed) > 0.5 * len(weights)
    G = snapshot.load_generator(os.path.join(run_dir, "network-snapshot-000000.004.pt"))
    c = torch.zeros([2, G.c_dim])
    if G.c_dim:
        c[:, 0] = 1
    img = G(torch.randn([2, G.z_dim]), c, noise_mode="const")
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()


def test_dry_run_prints_config_and_writes_nothing(tmp_path, data):
    outdir = tmp_path / "out"
    result = run_cli([f"--outdir={outdir}", "--cfg=fastgan", f"--data={data['plain']}", "--batch=8", "--glr=0.001",
                      "--dry-run"])
    assert result.exit_code == 0, result.output
    assert not outdir.exists()
    text = result.output
    config = json.loads(text[text.index("{"): text.index("\n}\n") + 2])
    assert config["G_opt_kwargs"]["lr"] == 0.001  # explicit --glr wins over the FastGAN default
    assert config["D_opt_kwargs"]["lr"] == 0.0002  # ... while --dlr keeps it
    assert config["G_kwargs"]["class_name"] == "training.networks_fastgan.Generator"
    assert config["D_kwargs"]["class_name"] == "projector_plugin.ProjectedDiscriminator"
    assert config["loss_kwargs"]["class_name"] == "projector_plugin.ProjectedGANLoss"
    assert config["loss_kwargs"]["reuse_fakes"] is True  # one generator forward per step by default
    assert config["ema_kimg"] == 8 * 10 / 32 and config["ema_rampup"] is None
    assert config["metrics"] == ["fid50k_full"]
    assert config["allow_tf32"] is False  # as in NVIDIA's loops; --tf32=1 opts in
    assert "00000-fastgan-projected-plain-gpus1-batch8" in text


def test_reuse_fakes_and_the_paper_ablation_switches(tmp_path, data):
    result = run_cli([f"--outdir={tmp_path}", "--cfg=fastgan", f"--data={data['plain']}", "--batch=8",
                      "--reuse-fakes=0", "--proj-type=0", "--num-discs=2", "--tf32=1", "--dry-run"])
    assert result.exit_code == 0, result.output
    text = result.output
    config = json.loads(text[text.index("{"): text.index("\n}\n") + 2])
    assert config["loss_kwargs"]["reuse_fakes"] is False and config["allow_tf32"] is True
    assert config["D_kwargs"]["proj_type"] == 0 and config["D_kwargs"]["num_discs"] == 2


@pytest.mark.parametrize("cfg, flags, layout, separable", [
    ("fastgan", [], "official", False), ("stylegan2", [], "official", True),
    ("stylegan2", ["--csm-layout=compact", "--separable=strided"], "compact", "strided"),
    ("fastgan", ["--separable=1"], "official", True), ("stylegan2", ["--separable=0"], "official", False)])
def test_discriminator_layout_and_separable_options(tmp_path, data, cfg, flags, layout, separable):
    """--separable=auto follows Projected GAN (separable mini-Ds with StyleGAN2 only); the layout is recorded
    explicitly, so that later defaults never reinterpret a run's snapshots."""
    result = run_cli([f"--outdir={tmp_path}", f"--cfg={cfg}", f"--data={data['plain']}", "--batch=8", *flags,
                      "--dry-run"])
    assert result.exit_code == 0, result.output
    text = result.output
    config = json.loads(text[text.index("{"): text.index("\n}\n") + 2])
    assert config["D_kwargs"]["layout"] == layout and config["D_kwargs"]["separable"] == separable


@pytest.mark.parametrize("cfg, loss, extra", [
    ("fastgan", "projected", dict(feat_res=64, tf32=True)),
    ("stylegan2", "stylegan2", dict(cbase=1024, map_depth=2)),
])
def test_script_options_build_what_the_command_line_builds(tmp_path, data, cfg, loss, extra):
    """train.script_options (how benchmarks/ build configs) follows the click options: a script cannot fall
    behind when an option is added (bench_iteration.py did, when --tf32 came)."""
    flags = [f"--{k.replace('_', '-')}={int(v) if isinstance(v, bool) else v}" for k, v in extra.items()]
    result = run_cli([f"--outdir={tmp_path}", f"--cfg={cfg}", f"--loss={loss}", f"--data={data['plain']}",
                      "--batch=8", *flags, "--dry-run"])
    assert result.exit_code == 0, result.output
    text = result.output
    printed = json.loads(text[text.index("{"): text.index("\n}\n") + 2])
    opts, given = train.script_options(outdir=str(tmp_path), cfg=cfg, loss=loss, data=data["plain"], batch=8, **extra)
    assert given("batch") and not given("glr")
    built = json.loads(json.dumps(train.build_config(opts, given, world_size=1)))
    for c in (printed, built):  # main() fills these in after build_config (and the dataset's resolution etc.)
        c.pop("resume", None)
        c["loss_kwargs"].pop("r1_gamma", None)
    data_built, data_printed = built.pop("training_set_kwargs"), printed.pop("training_set_kwargs")
    assert data_built.items() <= data_printed.items() and data_built["path"] == data["plain"]
    assert built == printed
    with pytest.raises(TypeError, match="no option.*warp"):
        train.script_options(warp=1)


def test_dry_run_baseline_defaults(tmp_path, data):
    result = run_cli([f"--outdir={tmp_path}", "--cfg=stylegan2", "--loss=stylegan2", f"--data={data['plain']}",
                      "--batch=8", "--dry-run", "--metrics=none"])
    assert result.exit_code == 0, result.output
    text = result.output
    config = json.loads(text[text.index("{"): text.index("\n}\n") + 2])
    assert config["G_opt_kwargs"]["lr"] == config["D_opt_kwargs"]["lr"] == 0.002
    assert config["G_kwargs"]["mapping_kwargs"]["num_layers"] == 8
    assert config["loss_kwargs"]["class_name"] == "training.loss.StyleGAN2Loss"
    assert config["loss_kwargs"]["r1_gamma"] == pytest.approx(0.0002 * 32 ** 2 / 8)
    assert config["loss_kwargs"]["pl_weight"] == 2 and config["loss_kwargs"]["style_mixing_prob"] == 0.9
    assert config["G_reg_interval"] == 4 and config["D_reg_interval"] == 16 and config["ema_rampup"] == 0.05
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args,option,fragment", [
    (["--cfg=fastgan", "--batch=6", "--batch-gpu=4"], "--batch", "multiple of --batch-gpu"),
    (["--cfg=fastgan", "--batch=4", "--cond=1"], "--cond", "needs labels"),
    (["--cfg=fastgan", "--batch=4", "DATA=small"], "--cfg", "power of two in 32..1024"),
    (["--cfg=fastgan", "--batch=4", "--metrics=fid50k_full,bogus"], "--metrics", "unknown metric 'bogus'"),
    (["--cfg=fastgan", "--batch=4", "DATA=missing"], "--data", "does not exist"),
    (["--cfg=fastgan", "--batch=4", "--cbase=1024"], "--cbase", "only applies to StyleGAN2 networks"),
    (["--cfg=fastgan", "--batch=4", "--map-depth=4"], "--map-depth", "only applies"),
    (["--cfg=stylegan2", "--batch=4", "--ngf=8"], "--ngf", "only applies"),
    (["--cfg=fastgan", "--batch=4", "--r1-gamma=1"], "--r1-gamma", "Projected GANs use no R1"),
    (["--cfg=fastgan", "--loss=stylegan2", "--batch=4", "--reuse-fakes=1"], "--reuse-fakes", "only applies"),
    (["--cfg=fastgan", "--loss=stylegan2", "--batch=4", "--proj-type=0"], "--proj-type", "only applies"),
    (["--cfg=fastgan", "--batch=4", "--num-discs=5"], "--num-discs", "not in the range"),
    (["--cfg=fastgan", "--loss=stylegan2", "--batch=4", "--backbone=resnet50"], "--backbone", "only applies"),
    (["--cfg=fastgan", "--batch=4", "--backbone=not_a_net"], "--backbone", "not a timm model"),
    (["--cfg=fastgan", "--batch=4", "--glr=-1"], "--glr", "must be positive"),
    (["--cfg=fastgan", "--batch=4", "--resume=latest"], "--resume", "network-snapshot-*.pt under"),
    (["--cfg=fastgan", "--batch=4", "--resume=/no/such.pt"], "--resume", "does not exist"),
    (["--cfg=fastgan", "--batch=4", "--grid=4by4"], "--grid", "COLSxROWS"),
    (["--cfg=fastgan", "--batch=4", "--device=cuda"] if not torch.cuda.is_available() else
     ["--cfg=fastgan", "--batch=4", f"--gpus={torch.cuda.device_count() + 1}"], "--", "CUDA"),
])
def test_bad_options_fail_clearly_before_any_work(tmp_path, data, args, option, fragment):
    outdir = tmp_path / "out"
    dataset = data["plain"]
    if "DATA=small" in args:
        dataset = data["small"]
    if "DATA=missing" in args:
        dataset = str(tmp_path / "missing.zip")
    args = [a for a in args if not a.startswith("DATA=")]
    result = CliRunner().invoke(train.main, [f"--outdir={outdir}", f"--data={dataset}"] + args)
    assert result.exit_code == 2, result.output
    assert f"'{option}" in result.output and fragment in result.output, result.output
    assert not outdir.exists()


def _baseline_args(outdir, dataset, extra=()):
    return [f"--outdir={outdir}", "--cfg=fastgan_lite", "--loss=stylegan2", f"--data={dataset}", "--ngf=4",
            "--cbase=256", "--cmax=16", "--metrics=none", "--workers=0", "--grid=2x2", "--seed=5",
            "--device=cpu"] + list(extra)


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path, data):
    """--gpus=2 (gloo, batch_gpu 2) == 1 process with 2 accumulation rounds of 2: same latents, data, chunks."""
    extra = ["--batch=4", "--kimg=0.008", "--tick=1", "--snap=1"]
    cmd = [sys.executable, os.path.join(REPO, "train.py")] + _baseline_args(tmp_path / "two", data["plain"],
                                                                             extra + ["--gpus=2"])
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es), batch 4 = 2 x 1 round(s) x 2" in proc.stdout
    one = run_cli(_baseline_args(tmp_path / "one", data["plain"], extra + ["--gpus=1", "--batch-gpu=2"]))
    assert one.exit_code == 0, one.output
    assert "1 process(es), batch 4 = 1 x 2 round(s) x 2" in one.output

    a = snapshot.load_snapshot(snapshot.find_latest(str(tmp_path / "two")))
    b = snapshot.load_snapshot(snapshot.find_latest(str(tmp_path / "one")))
    assert a["progress"] == b["progress"] and a["progress"]["cur_nimg"] == 8
    tl._seed_chunk(5, 0, 0)
    G_init = snapshot.build_network(a["networks"]["G"])
    tl._seed_chunk(5, 0, 1)
    D_init = snapshot.build_network(a["networks"]["D"])
    for name, net in (("G", G_init), ("D", D_init)):
        # Parameters only: buffers (BatchNorm running stats, spectral-norm power iterations) are per rank
        # and the snapshot holds rank 0's, as in StyleGAN.
        init = net.state_dict()
        keys = [k for k, _ in net.named_parameters()]
        assert keys and all(k in init for k in keys)
        da = torch.cat([(a[name][k] - init[k]).flatten() for k in keys]).double()
        db = torch.cat([(b[name][k] - init[k]).flatten() for k in keys]).double()
        # Adam's first updates are ~lr * sign(grad), so closeness of the *updates* is what shows that both
        # runs computed the same gradients (other data or latents give a cosine around 0.5). They are not
        # bitwise equal: the all-reduce sums in another order, and per-rank spectral-norm estimates differ.
        cosine = float(da @ db / (da.norm() * db.norm()))
        assert cosine > 0.995, (name, cosine)
        assert float((da - db).norm() / da.norm()) < 0.08, name


def test_sigkill_then_resume_latest(tmp_path, data):
    outdir = tmp_path / "runs"
    cmd = [sys.executable, os.path.join(REPO, "train.py")] + _baseline_args(
        outdir, data["plain"], ["--batch=4", "--kimg=10", "--tick=0.004", "--snap=1", "--img-snap=1000"])
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        first = None
        while time.time() < deadline and proc.poll() is None:
            first = glob.glob(str(outdir / "00000-*" / "network-snapshot-000000.004.pt"))
            if first:
                break
            time.sleep(0.2)
        assert first, f"no snapshot appeared; rc={proc.poll()} stderr={proc.stderr.read() if proc.poll() else ''}"
        time.sleep(1.5)  # somewhere in the following steps / snapshot writes
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    (old_dir,) = glob.glob(str(outdir / "00000-*"))
    latest = snapshot.find_resume(str(outdir))  # what --resume=latest continues: the run's rolling resume file
    assert os.path.dirname(latest) == old_dir
    old = snapshot.load_snapshot(latest)  # whatever the kill interrupted, the resume file is whole
    old_bytes = _read(latest, "rb")
    cur = old["progress"]["cur_nimg"]
    assert cur >= 4 and cur % 4 == 0

    result = run_cli(_baseline_args(outdir, data["plain"], ["--batch=4", f"--kimg={(cur + 8) / 1000}",
                                                            "--tick=1", "--snap=1", "--resume=latest"]))
    assert result.exit_code == 0, result.output
    assert f"Resuming from '{latest}'" in result.output
    new_dirs = sorted(glob.glob(str(outdir / "00001-*")))
    assert len(new_dirs) == 1  # continued in a new run dir ...
    assert _read(latest, "rb") == old_bytes  # ... without touching the old snapshots
    assert not [n for n in os.listdir(old_dir) if n.endswith(".tmp")]  # stale temp files cleaned up
    new = snapshot.load_snapshot(snapshot.find_latest(str(outdir)))
    assert os.path.dirname(snapshot.find_latest(str(outdir))) == new_dirs[0]
    assert new["progress"]["cur_nimg"] == cur + 8
    assert new["progress"]["batch_idx"] == old["progress"]["batch_idx"] + 2
    options = json.loads(_read(os.path.join(new_dirs[0], "training_options.json")))
    assert options["resume"] == latest
    for path in glob.glob(str(outdir / "*" / "network-snapshot-*.pt")):
        snapshot.load_snapshot(path)

    # Resuming needs more --kimg than already trained, and the same networks; both fail before any work.
    again = CliRunner().invoke(train.main, _baseline_args(outdir, data["plain"], [
        "--batch=4", f"--kimg={(cur + 8) / 1000}", "--resume=latest"]))
    assert again.exit_code == 2 and "'--kimg'" in again.output and "already trained" in again.output
    other = CliRunner().invoke(train.main, _baseline_args(outdir, data["plain"], [
        "--batch=4", "--kimg=1", "--resume=latest", "--ngf=8"]))
    assert other.exit_code == 2 and "different G (ngf: snapshot 4 vs now 8)" in other.output, other.output
    assert len(glob.glob(str(outdir / "*"))) == 2


def test_sigterm_to_the_whole_process_group_with_data_workers_saves_and_stops_cleanly(tmp_path, data):
    """A scheduler's SIGTERM reaches every process of the job, DataLoader workers included: they must leave it to
    the training process, which saves its resume state and stops with one 'Stopped' line (not die of 'DataLoader
    worker ... is killed by signal')."""
    outdir = tmp_path / "runs"
    args = [a for a in _baseline_args(outdir, data["plain"], ["--batch=4", "--kimg=10", "--tick=0.004", "--snap=1",
                                                              "--img-snap=1000"]) if a != "--workers=0"]
    cmd = [sys.executable, os.path.join(REPO, "train.py")] + args + ["--workers=1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if glob.glob(str(outdir / "00000-*" / "network-snapshot-000000.004.pt")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Stopped:" in out + err and "killed by signal" not in err and "Traceback" not in err
    state = snapshot.load_snapshot(snapshot.find_resume(str(outdir)))
    assert state["progress"]["cur_nimg"] >= 4
