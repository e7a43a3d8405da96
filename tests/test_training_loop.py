"""End-to-end behaviour of training.training_loop on CPU with tiny networks and a tiny dataset:
exact resume (with lazy regularization, loss state and a frozen feature network) from the rolling resume file,
lean history snapshots and --keep, non-finite losses, SIGTERM/SIGINT, a full disk, files that name foreign classes."""

import errno
import glob
import json
import os
import signal

import numpy as np
import PIL.Image
import pytest
import torch

from torch_utils import image_io, training_stats
from training import snapshot
from training import training_loop as tl
from training.loss import StyleGAN2Loss

RES = 32


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """16 random 32x32 RGB images with a coloured square (so mirroring changes them)."""
    root = tmp_path_factory.mktemp("tiny_data")
    rnd = np.random.RandomState(0)
    for i in range(16):
        img = (rnd.rand(RES, RES, 3) * 255).astype(np.uint8)
        img[4:20, 2:14] = rnd.randint(0, 256, 3)
        PIL.Image.fromarray(img).save(root / f"img{i:02d}.png")
    return str(root)


@pytest.fixture(scope="module", autouse=True)
def warm_backbone_cache():
    # The plugin reads (and caches) the backbone weights on the first construction in a process,
    # drawing random numbers only that first time; build one D up front so every run in this
    # module constructs its D from the same RNG stream.
    from projector_plugin import ProjectedDiscriminator

    ProjectedDiscriminator(feat_res=32)


def projected_config(run_dir, data_dir, **overrides):
    c = dict(
        run_dir=str(run_dir),
        training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path=data_dir, xflip=True),
        data_loader_kwargs=dict(num_workers=0),
        G_kwargs=dict(class_name="training.networks_fastgan.Generator", z_dim=256, w_dim=256, ngf=4, lite=True),
        D_kwargs=dict(class_name="projector_plugin.ProjectedDiscriminator", feat_res=32),
        loss_kwargs=dict(class_name="projector_plugin.ProjectedGANLoss", blur_init_sigma=2, blur_fade_kimg=0.02),
        G_opt_kwargs=dict(class_name="torch.optim.Adam", lr=2e-4, betas=[0.0, 0.99], eps=1e-8),
        D_opt_kwargs=dict(class_name="torch.optim.Adam", lr=2e-4, betas=[0.0, 0.99], eps=1e-8),
        batch_size=4, batch_gpu=4, ema_kimg=0.01, total_kimg=0.008, kimg_per_tick=0.004,
        image_snapshot_ticks=None, network_snapshot_ticks=100, grid_size=[2, 2], random_seed=3,
    )
    c.update(overrides)
    return c


def baseline_config(run_dir, data_dir, **overrides):
    """StyleGAN2 G + StyleGAN2 D + StyleGAN2Loss with R1 and path length reg every 2 steps."""
    c = projected_config(run_dir, data_dir)
    c.update(
        G_kwargs=dict(class_name="training.networks_stylegan2.Generator", z_dim=16, w_dim=16,
                      mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=16, num_fp16_res=0,
                      conv_clamp=None),
        D_kwargs=dict(class_name="training.networks_stylegan2.Discriminator", channel_base=256, channel_max=16,
                      num_fp16_res=0, conv_clamp=None, mbstd_group_size=2),
        loss_kwargs=dict(class_name="training.loss.StyleGAN2Loss", r1_gamma=1.0, style_mixing_prob=0.9,
                         pl_weight=2.0),
        G_opt_kwargs=dict(class_name="torch.optim.Adam", lr=2e-3, betas=[0.0, 0.99], eps=1e-8),
        D_opt_kwargs=dict(class_name="torch.optim.Adam", lr=2e-3, betas=[0.0, 0.99], eps=1e-8),
        G_reg_interval=2, D_reg_interval=2, ema_rampup=0.05, total_kimg=0.012,
    )
    c.update(overrides)
    return c


def assert_state_equal(a, b, what):
    assert a.keys() == b.keys(), what
    for k in a:
        if torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), f"{what}: {k} differs"
        elif isinstance(a[k], dict):
            assert_state_equal(a[k], b[k], f"{what}.{k}")
        elif isinstance(a[k], list):
            assert len(a[k]) == len(b[k]), what
            for i, (x, y) in enumerate(zip(a[k], b[k])):
                if isinstance(x, dict):
                    assert_state_equal(x, y, f"{what}.{k}[{i}]")
                else:
                    assert x == y, f"{what}.{k}[{i}]"
        else:
            assert a[k] == b[k], f"{what}: {k}"


def assert_snapshots_equal(a, b):
    assert a["progress"] == b["progress"]
    for key in ("G", "G_ema", "D", "G_opt", "D_opt", "loss_state"):
        assert_state_equal(a[key], b[key], key)


@pytest.mark.parametrize("kind,first_kimg", [("projected", 0.004), ("baseline", 0.008)])
def test_resume_continues_bitwise_identically(tmp_path, data_dir, kind, first_kimg):
    """N kimg, snapshot, resume, M kimg == N+M kimg in one go (weights, EMA, optimizers, loss state).

    Resumes from the run's rolling resume file. The baseline resumes at step 2, where the lazy R1 / path-length
    phases (interval 2) run again.
    """
    make = projected_config if kind == "projected" else baseline_config
    total = make("", data_dir)["total_kimg"]
    full = tl.training_loop(**make(tmp_path / "full", data_dir))
    first = tl.training_loop(**make(tmp_path / "first", data_dir, total_kimg=first_kimg))
    assert first["resume_state"] == str(tmp_path / "first" / "resume-state.pt")
    resumed = tl.training_loop(**make(tmp_path / "resumed", data_dir, resume=first["resume_state"]))
    assert resumed["cur_nimg"] == full["cur_nimg"] == round(total * 1000)
    a = snapshot.load_snapshot(full["resume_state"], mmap=True)
    b = snapshot.load_snapshot(resumed["resume_state"], mmap=True)
    half = snapshot.load_snapshot(first["resume_state"], mmap=True)
    assert half["progress"]["cur_nimg"] == round(first_kimg * 1000)
    assert_snapshots_equal(a, b)
    # The lean history snapshot holds the same networks (and no optimizer state).
    lean = snapshot.load_snapshot(full["last_snapshot"], mmap=True)
    assert lean["kind"] == "snapshot" and "G_opt" not in lean and "D_opt" not in lean
    for key in ("G", "G_ema", "D"):
        assert_state_equal(lean[key], a[key], key)
    # ... and training did something: the weights moved on after the first part.
    assert any(not torch.equal(half["G"][k], a["G"][k]) for k in a["G"] if a["G"][k].is_floating_point())
    if kind == "baseline":
        assert float(a["loss_state"]["pl_mean"]) > 0  # the path-length EMA is part of the restored state
    else:
        # The frozen feature network never changed and is in no optimizer.
        from projector_plugin import ProjectedDiscriminator

        D = full["D"]
        fresh = ProjectedDiscriminator(feat_res=32, img_resolution=RES)
        for name, tensor in fresh.feature_network.state_dict().items():
            assert torch.equal(D.feature_network.state_dict()[name], tensor), name
        assert len(a["D_opt"]["param_groups"][0]["params"]) == len(list(D.parameters()))
        assert sum(v["exp_avg"].numel() for v in a["D_opt"]["state"].values()) == \
            sum(p.numel() for p in D.parameters())
        nonzero = [bool(v["exp_avg"].abs().sum() > 0) for v in a["D_opt"]["state"].values()]
        assert sum(nonzero) > 0.5 * len(nonzero)  # (conv biases right before a BatchNorm get exactly zero)


class NaNAfterLoss(StyleGAN2Loss):
    """StyleGAN2Loss whose real images turn into NaN from `nan_from_nimg` on (a real divergence)."""

    def __init__(self, *args, nan_from_nimg=8, **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_from_nimg = nan_from_nimg

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        if cur_nimg >= self.nan_from_nimg:
            real_img = real_img * float("nan")
        return super().accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg)


def test_non_finite_loss_stops_and_keeps_last_good_snapshot(tmp_path, data_dir):
    c = baseline_config(tmp_path / "run", data_dir, total_kimg=0.04, network_snapshot_ticks=1, batch_gpu=4,
                        G_reg_interval=None, D_reg_interval=None)
    c["loss_kwargs"] = dict(c["loss_kwargs"], class_name=f"{__name__}.NaNAfterLoss", nan_from_nimg=8)
    with pytest.raises(tl.NonFiniteLossError) as err:
        tl.training_loop(**c)
    msg = str(err.value)
    assert "step 2 (kimg 0.008)" in msg and "phase Dboth" in msg and "Loss/D/loss" in msg
    # Snapshots 0.004 kimg apart get exact names (with integer-kimg names the second overwrote the first).
    snaps = sorted(glob.glob(str(tmp_path / "run" / "network-snapshot-*.pt")))
    assert [os.path.basename(p) for p in snaps] == ["network-snapshot-000000.004.pt", "network-snapshot-000000.008.pt"]
    assert snapshot.find_latest(str(tmp_path / "run")) == snaps[-1]
    for path, nimg in zip(snaps, (4, 8)):
        data = snapshot.load_snapshot(path)
        assert data["progress"]["cur_nimg"] == nimg  # the last written after step 1; nothing from the NaN step
        assert all(torch.isfinite(v).all() for v in data["D"].values() if v.is_floating_point())


def _fake_metric(values, calls=None):
    """calc_metrics stand-in returning the next of `values` for each metric (no detector, no images); appends each
    call's metric list to `calls`."""
    values = list(values)

    def calc_metrics(metrics, **kwargs):
        if calls is not None:
            calls.append(list(metrics))
        return [dict(results={m: values.pop(0)}, metric=m, total_time=0.0, total_time_str="0s", num_gpus=1)
                for m in metrics]

    return calc_metrics


def test_sub_kimg_snapshots_get_distinct_names_and_metric_summaries(tmp_path, data_dir, monkeypatch):
    import json

    from metrics import metric_main

    calls = []
    monkeypatch.setattr(metric_main, "calc_metrics", _fake_metric([30.0, 0.5, 10.0, 0.25], calls))
    run = tmp_path / "run"
    # Snapshots every 0.004 kimg (like --tick=0.5 --snap=1: less than 1 kimg apart).
    c = baseline_config(run, data_dir, G_reg_interval=None, D_reg_interval=None, total_kimg=0.008,
                        kimg_per_tick=0.004, network_snapshot_ticks=1, metrics=["fid50k_full", "kid50k_full"])
    out = tl.training_loop(**c)
    # One shared evaluation per snapshot (the metrics embed the same generated images once), not one per metric.
    assert calls == [["fid50k_full", "kid50k_full"]] * 2
    names = ["network-snapshot-000000.004.pt", "network-snapshot-000000.008.pt"]
    assert sorted(os.path.basename(p) for p in glob.glob(str(run / "network-snapshot-*.pt"))) == names
    for name, nimg in zip(names, (4, 8)):
        assert snapshot.load_snapshot(str(run / name), mmap=True)["progress"]["cur_nimg"] == nimg
    assert out["last_snapshot"] == str(run / names[-1]) == snapshot.find_latest(str(run))
    lines = [json.loads(t) for t in (run / "metric-fid50k_full.jsonl").read_text().splitlines()]
    assert [(line["kimg"], line["snapshot_pkl"], line["results"]["fid50k_full"]) for line in lines] == \
        [(0.004, names[0], 30.0), (0.008, names[1], 10.0)]
    kid = [json.loads(t)["results"]["kid50k_full"] for t in (run / "metric-kid50k_full.jsonl").read_text().splitlines()]
    assert kid == [0.5, 0.25]
    best = json.loads((run / "best-fid50k_full.json").read_text())
    assert best == dict(metric="fid50k_full", result="fid50k_full", value=10.0, kimg=0.008, snapshot_pkl=names[1],
                        direction="lower")
    assert snapshot.resolve_network_path(str(run / "best-fid50k_full.json")) == str(run / names[1])
    assert PIL.Image.open(run / "metrics.png").size == (480, 600)  # one panel per metric


def test_final_snapshot_in_the_same_kimg_keeps_the_previous_one(tmp_path, data_dir, monkeypatch, capsys):
    from metrics import metric_main, summary

    def broken(run_dir):
        raise OSError("disk full")

    # The summaries can never stop training: a failure there is logged and the run goes on.
    monkeypatch.setattr(summary, "update_run_summaries", broken)
    monkeypatch.setattr(metric_main, "calc_metrics", _fake_metric([5.0, 6.0]))
    # Ticks of 1 kimg: tick 0 ends after the first step (4 images), the run ends at 8 images, in the same kimg.
    run = tmp_path / "run"
    c = baseline_config(run, data_dir, G_reg_interval=None, D_reg_interval=None, total_kimg=0.008,
                        kimg_per_tick=1, network_snapshot_ticks=1, image_snapshot_ticks=1, metrics=["fid50k_full"])
    assert tl.training_loop(**c)["cur_nimg"] == 8
    found = sorted(os.path.basename(p) for p in glob.glob(str(run / "network-snapshot-*.pt")))
    assert found == ["network-snapshot-000000.004.pt", "network-snapshot-000000.008.pt"]
    # The fakes grids follow the same rule: the final grid does not overwrite the tick-0 one.
    assert sorted(os.path.basename(p) for p in glob.glob(str(run / "fakes0*.png"))) == \
        ["fakes000000.004.png", "fakes000000.008.png"]
    assert snapshot.load_snapshot(str(run / found[0]), mmap=True)["progress"]["cur_nimg"] == 4
    assert snapshot.find_latest(str(run)) == str(run / found[1])
    logged = capsys.readouterr().out
    assert logged.count("could not update the metric summaries") == 2 and "OSError: disk full" in logged
    assert len((run / "metric-fid50k_full.jsonl").read_text().splitlines()) == 2
    assert not (run / "metrics.png").exists()


# ---------------------------------------------------------------------------------------------
# Resume file, lean history snapshots, --keep.


def _no_temp_files(root):
    return glob.glob(os.path.join(str(root), "**", ".*.tmp"), recursive=True)


def test_lean_history_snapshots_rebuild_the_projected_D(tmp_path, data_dir):
    run = tmp_path / "run"
    out = tl.training_loop(**projected_config(run, data_dir, network_snapshot_ticks=1, total_kimg=0.004))
    hist = snapshot.load_snapshot(out["last_snapshot"])
    state = snapshot.load_snapshot(out["resume_state"])
    assert hist["kind"] == "snapshot" and "G_opt" not in hist and "D_opt" not in hist
    assert state["kind"] == "resume" and "G_opt" in state and "D_opt" in state
    for data in (hist, state):  # the frozen backbone and projection are rebuilt from D's config, not stored
        assert not any(k.startswith(("feature_network.", "projection.")) for k in data["D"])
        assert data["D_rebuilt"]["keys"]
    assert os.path.getsize(out["last_snapshot"]) < os.path.getsize(out["resume_state"])
    D = snapshot.load_discriminator(out["last_snapshot"])
    img = torch.randn(2, 3, RES, RES)
    torch.manual_seed(1)
    a = out["D"].eval()(img)
    torch.manual_seed(1)
    assert torch.equal(D(img), a)


def test_resume_keeps_the_earlier_strided_separable_D(tmp_path, data_dir, capsys):
    """A run whose D had separable=True when that meant strided depthwise blocks resumes with that design (and its
    trained D weights), though today's config asks for separable=True."""
    D_kwargs = dict(class_name="projector_plugin.ProjectedDiscriminator", feat_res=32)
    first = tl.training_loop(**projected_config(tmp_path / "a", data_dir, total_kimg=0.004,
                                                D_kwargs={**D_kwargs, "separable": "strided"}))
    state = snapshot.load_snapshot(first["resume_state"])
    state["networks"]["D"]["separable"] = True  # as such runs recorded it
    state["checksum"] = snapshot.content_digest(state)
    old = tmp_path / "old-resume-state.pt"
    torch.save(state, old)
    resumed = tl.training_loop(**projected_config(tmp_path / "b", data_dir, total_kimg=0.008, resume=str(old),
                                                  D_kwargs={**D_kwargs, "separable": True}))
    assert "has a discriminator of an earlier design; it keeps that design for this run (separable='strided')" \
        in capsys.readouterr().out
    assert resumed["D"].discs[0].main[0][0][0].stride == (2, 2)
    assert resumed["cur_nimg"] == 8
    assert snapshot.load_snapshot(resumed["resume_state"])["networks"]["D"]["separable"] == "strided"


def test_resume_from_a_generator_only_file_starts_G_from_its_weights_with_a_fresh_D(tmp_path, data_dir, capsys):
    first = tl.training_loop(**projected_config(tmp_path / "a", data_dir, total_kimg=0.004))
    shared = tmp_path / "model.pt"
    snapshot.save_generator_only(first["resume_state"], str(shared), "float32")
    out = tl.training_loop(**projected_config(tmp_path / "b", data_dir, total_kimg=0.004, resume=str(shared),
                                              G_opt_kwargs=dict(class_name="torch.optim.Adam", lr=0.0,
                                                                betas=[0.0, 0.99], eps=1e-8)))
    assert "is a generator-only snapshot: G and G_ema come from it, D is new" in capsys.readouterr().out
    ema = snapshot.load_snapshot(str(shared))["G_ema"]
    after = snapshot.load_snapshot(out["resume_state"])
    assert after["progress"]["cur_nimg"] == 4  # counted from 0
    params = {k for k, _ in out["G"].named_parameters()}
    assert params and params <= set(ema)
    for k in params:  # lr 0: G's weights are still exactly the shared G_ema's (spectral-norm vectors move)
        assert torch.equal(after["G"][k], ema[k]), k


def _dead_pid():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_keep_and_resume_from_run_dir_latest_or_history_snapshot(tmp_path, data_dir, capsys):
    outdir = tmp_path / "runs"
    first = outdir / "00000-a"
    c = baseline_config(first, data_dir, G_reg_interval=None, D_reg_interval=None, total_kimg=0.012,
                        network_snapshot_ticks=1, snapshot_keep=2)
    out = tl.training_loop(**c)
    names = sorted(os.path.basename(p) for p in glob.glob(str(first / "network-snapshot-*.pt")))
    assert names == ["network-snapshot-000000.008.pt", "network-snapshot-000000.012.pt"]  # --keep=2
    assert snapshot.load_snapshot(out["resume_state"])["progress"]["cur_nimg"] == 12

    # 'latest' continues the newest run's resume file, after removing dead writers' temp files everywhere.
    dead = _dead_pid()
    other = outdir / "00001-crashed"
    other.mkdir()
    stale = [first / f".resume-state.pt.{dead}.a.tmp", other / f".network-snapshot-000000.004.pt.{dead}.b.tmp"]
    for path in stale:
        path.write_bytes(b"PK")
    # Metric results of the first run (as the loop writes them); the one past the resumed point is not carried.
    with open(first / "metric-fid5k_full.jsonl", "w") as f:
        for kimg, value in ((0.008, 300.0), (0.012, 250.0), (0.5, 1.0)):
            f.write(json.dumps(dict(results=dict(fid5k_full=value), metric="fid5k_full", kimg=kimg,
                                    snapshot_pkl=snapshot.snapshot_name(int(kimg * 1000)))) + "\n")
    capsys.readouterr()
    second = tl.training_loop(**dict(c, run_dir=str(outdir / "00002-b"), total_kimg=0.016, resume="latest"))
    log = capsys.readouterr().out
    assert f"Resuming from '{first / 'resume-state.pt'}'" in log and "without optimizer state" not in log
    assert second["cur_nimg"] == 16 and not any(p.exists() for p in stale)
    assert all(str(p) in log for p in stale)
    # The resumed run's metrics.png and best pointer cover the first run's results.
    assert "Carried 2 metric result line(s) over" in log and (outdir / "00002-b" / "metrics.png").exists()
    best = outdir / "00002-b" / "best-fid5k_full.json"
    assert snapshot.resolve_network_path(str(best)) == os.path.normpath(str(first / "network-snapshot-000000.012.pt"))

    # A run dir means its resume file; a history snapshot works too, with fresh optimizers (warned about).
    third = tl.training_loop(**dict(c, run_dir=str(outdir / "00003-c"), total_kimg=0.020, resume=str(outdir /
                                                                                                  "00002-b")))
    assert third["cur_nimg"] == 20
    capsys.readouterr()
    hist = str(first / "network-snapshot-000000.008.pt")
    fourth = tl.training_loop(**dict(c, run_dir=str(outdir / "00004-d"), total_kimg=0.012, resume=hist))
    log = capsys.readouterr().out
    assert f"Resuming from '{hist}'" in log and log.count("without optimizer state") == 1
    assert fourth["cur_nimg"] == 12


def test_resume_file_naming_a_foreign_class_is_refused(tmp_path, data_dir):
    marker = tmp_path / "MARKER"
    evil = dict(class_name="os.system", command=f"touch {marker}")
    G = snapshot.build_network(dict(class_name="training.networks_fastgan.Generator", z_dim=8, w_dim=8,
                                    img_resolution=32, ngf=4, lite=True))
    path = tmp_path / "resume-state.pt"
    snapshot.save_snapshot(str(path), networks=dict(G=evil, D=evil), G=G, G_ema=G, D=G,
                           progress=dict(cur_nimg=4, cur_tick=0, batch_idx=1),
                           config=dict(G_kwargs=evil, loss_kwargs=evil))
    with pytest.raises(snapshot.SnapshotError, match="os.system.*--allow-class"):
        tl.training_loop(**baseline_config(tmp_path / "run", data_dir, resume=str(path)))
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# SIGTERM / SIGINT.


class SignalLoss(StyleGAN2Loss):
    """StyleGAN2Loss that sends this process `signals` (one per call) once training reaches `at_nimg`."""

    def __init__(self, *args, at_nimg=8, signals=(int(signal.SIGTERM),), **kwargs):
        super().__init__(*args, **kwargs)
        self.at_nimg, self.signals = at_nimg, list(signals)

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        if cur_nimg >= self.at_nimg and self.signals:
            os.kill(os.getpid(), self.signals.pop(0))
        return super().accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg)


def test_sigterm_saves_the_resume_state_and_continues_exactly(tmp_path, data_dir, capsys):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    c = baseline_config(tmp_path / "run", data_dir, total_kimg=0.024, network_snapshot_ticks=100)
    c["loss_kwargs"] = dict(c["loss_kwargs"], class_name=f"{__name__}.SignalLoss", at_nimg=8)
    with pytest.raises(tl.TrainingInterrupted) as err:
        tl.training_loop(**c)
    assert err.value.signum == signal.SIGTERM
    path = tmp_path / "run" / "resume-state.pt"
    # Asked during the step from 8 to 12 images; the ranks agree on it at that step's tick end (ticks are one step
    # here) and stop at the next step boundary, before any more training.
    msg = f"Interrupted by SIGTERM at kimg 0.012: saved the resume state to '{path}'"
    assert str(err.value).startswith(msg) and "\n" not in str(err.value)
    assert capsys.readouterr().out.count(msg) == 1
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # handlers restored
    assert not _no_temp_files(tmp_path)
    assert snapshot.load_snapshot(str(path))["progress"]["cur_nimg"] == 12

    # Interrupted + resumed == uninterrupted.
    full = tl.training_loop(**baseline_config(tmp_path / "full", data_dir, total_kimg=0.024,
                                              network_snapshot_ticks=100))
    resumed = tl.training_loop(**baseline_config(tmp_path / "resumed", data_dir, total_kimg=0.024,
                                                 network_snapshot_ticks=100, resume=str(tmp_path / "run")))
    assert_snapshots_equal(snapshot.load_snapshot(full["resume_state"]),
                           snapshot.load_snapshot(resumed["resume_state"]))


def test_second_signal_stops_at_once_without_temp_files(tmp_path, data_dir, monkeypatch):
    c = baseline_config(tmp_path / "run", data_dir, total_kimg=0.04, network_snapshot_ticks=1,
                        G_reg_interval=None, D_reg_interval=None)
    c["loss_kwargs"] = dict(c["loss_kwargs"], class_name=f"{__name__}.SignalLoss", at_nimg=4,
                            signals=(int(signal.SIGINT), int(signal.SIGTERM)))
    with pytest.raises(tl.TrainingInterrupted, match="interrupted twice") as err:
        tl.training_loop(**c)
    assert err.value.signum == signal.SIGTERM
    assert not _no_temp_files(tmp_path)
    assert snapshot.load_snapshot(str(tmp_path / "run" / "resume-state.pt"))["progress"]["cur_nimg"] == 4


def test_the_same_signal_delivered_twice_is_one_request(monkeypatch):
    """A signal to the process group reaches a training process directly and again through train.py's launcher:
    within the repeat window that is one request; another signal, or the same one later, stops at once."""
    now = [100.0]
    monkeypatch.setattr(tl.time, "monotonic", lambda: now[0])
    stop = tl._StopRequest()
    stop.handler(signal.SIGTERM, None)
    now[0] += 0.5
    stop.handler(signal.SIGTERM, None)  # the same request, forwarded: no exception
    assert stop.signum == signal.SIGTERM
    with pytest.raises(tl.TrainingInterrupted, match="interrupted twice"):
        stop.handler(signal.SIGINT, None)
    now[0] += tl._StopRequest.REPEAT_WINDOW_S
    with pytest.raises(tl.TrainingInterrupted, match=r"interrupted twice \(SIGTERM\)"):
        stop.handler(signal.SIGTERM, None)


# ---------------------------------------------------------------------------------------------
# A full disk.


def _enospc(obj, f):
    f.write(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")


def _torch_write_failed(obj, f):
    f.write(b"partial")
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # noqa: B904


@pytest.mark.parametrize("failure", [_enospc, _torch_write_failed])
def test_full_disk_stops_training_with_one_line_and_keeps_earlier_files(tmp_path, data_dir, monkeypatch, failure):
    run = tmp_path / "run"
    c = baseline_config(run, data_dir, G_reg_interval=None, D_reg_interval=None, total_kimg=0.012,
                        network_snapshot_ticks=1)
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # the first snapshot (resume file + history snapshot) fits, nothing after it
            return failure(obj, f)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(tl.DiskFullError) as err:
        tl.training_loop(**c)
    msg = str(err.value)
    assert msg.startswith(f"no space left on device at {run / 'resume-state.pt'}; training stopped at kimg 0.008")
    assert "\n" not in msg and isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    monkeypatch.setattr(torch, "save", real_save)
    assert not _no_temp_files(tmp_path)
    assert snapshot.load_snapshot(str(run / "resume-state.pt"))["progress"]["cur_nimg"] == 4
    assert [os.path.basename(p) for p in glob.glob(str(run / "network-snapshot-*.pt"))] == \
        ["network-snapshot-000000.004.pt"]
    assert snapshot.load_snapshot(str(run / "network-snapshot-000000.004.pt"))["progress"]["cur_nimg"] == 4


# ---------------------------------------------------------------------------------------------
# Loop helpers: chunk sampler, loss watch, image grid (fast unit tests, no training).


class _Stream(torch.utils.data.Sampler):
    def __init__(self):
        super().__init__()

    def __iter__(self):
        i = 0
        while True:
            yield 100 + i
            i += 1


def _take(it, n):
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("world,batch_gpu,rounds", [(1, 4, 1), (1, 2, 2), (2, 2, 1), (2, 1, 3), (4, 1, 1)])
def test_chunk_sampler_deals_the_same_chunks_for_any_split(world, batch_gpu, rounds):
    """Chunk j of a step always holds global positions [j*bg, (j+1)*bg) and goes to rank j % world."""
    batch = world * batch_gpu * rounds
    steps, start = 3, 2 * batch
    per_rank = {r: _take(iter(tl.ChunkSampler(_Stream(), r, world, batch_gpu, start=start)), steps * rounds * batch_gpu)
                for r in range(world)}
    for step in range(steps):
        for round_idx in range(rounds):
            for rank in range(world):
                chunk = round_idx * world + rank
                got = per_rank[rank][(step * rounds + round_idx) * batch_gpu:][:batch_gpu]
                first = 100 + start + step * batch + chunk * batch_gpu
                assert got == list(range(first, first + batch_gpu))


def test_loss_watch_names_phase_and_step():
    training_stats.reset()
    watch = tl.LossWatch(["Gboth", "Dboth"], torch.device("cpu"))
    watch.phase_idx = 0
    watch.report("Loss/G/loss", torch.tensor(0.5))
    watch.phase_idx = 1
    watch.report("Loss/D/loss", torch.tensor([1.0, float("inf")]))
    watch.report("Timing/whatever", torch.tensor(float("nan")))  # not a loss: ignored
    watch.check()  # nothing closed yet: a no-op
    watch.end_step(batch_idx=7, cur_nimg=28)
    with pytest.raises(tl.NonFiniteLossError, match=r"step 7 \(kimg 0.028\): 'Loss/D/loss' in phase Dboth;"):
        watch.check()
    watch.phase_idx = 0
    watch.report("Loss/G/loss", torch.tensor(0.5))
    watch.end_step(batch_idx=8, cur_nimg=32)
    assert watch.check() is False  # finite: no error, nobody asked to stop
    watch.end_step(batch_idx=9, cur_nimg=36, stop=True)
    assert watch.check() is True  # a stop request travels with the step's flags
    training_stats.reset()


def test_save_image_grid_layout(tmp_path):
    """The training loop's grids (torch_utils.image_io.save_image_grid): row-major tiles, drange scaling."""
    assert tl.save_image_grid is image_io.save_image_grid
    imgs = np.zeros([6, 3, 2, 2], np.float32) - 1
    for i in range(6):
        imgs[i, 0] = i / 5 * 2 - 1  # red channel encodes the index
    fname = str(tmp_path / "g.png")
    image_io.save_image_grid(imgs, fname, drange=(-1, 1), grid_size=[3, 2])
    out = np.array(PIL.Image.open(fname))
    assert out.shape == (4, 6, 3)
    for i in range(6):
        row, col = divmod(i, 3)
        assert out[row * 2, col * 2, 0] == round(i / 5 * 255) and out[row * 2, col * 2, 1] == 0
    assert tl.default_grid_size(64) == [16, 16] and tl.default_grid_size(256) == [7, 4]


def test_a_bare_cuda_device_gets_an_index(monkeypatch):
    """torch.cuda.set_device(torch.device("cuda")) raises (seen on an H200): the loop must add the index itself."""
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert tl.resolve_device("cuda") == torch.device("cuda", 3)
    assert tl.resolve_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert tl.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert tl.resolve_device(None, rank=1) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert tl.resolve_device(None, rank=3) == torch.device("cuda", 1)
