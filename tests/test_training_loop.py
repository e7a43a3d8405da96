"""End-to-end behaviour of training.training_loop on CPU with tiny networks and a tiny dataset:
exact resume (with lazy regularization, loss state and a frozen feature network), non-finite losses."""

import glob
import os

import numpy as np
import PIL.Image
import pytest
import torch

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

    The baseline resumes at step 2, where the lazy R1 / path-length phases (interval 2) run again.
    """
    make = projected_config if kind == "projected" else baseline_config
    total = make("", data_dir)["total_kimg"]
    full = tl.training_loop(**make(tmp_path / "full", data_dir))
    first = tl.training_loop(**make(tmp_path / "first", data_dir, total_kimg=first_kimg))
    resumed = tl.training_loop(**make(tmp_path / "resumed", data_dir, resume=first["last_snapshot"]))
    assert resumed["cur_nimg"] == full["cur_nimg"] == round(total * 1000)
    a = snapshot.load_snapshot(full["last_snapshot"], mmap=True)
    b = snapshot.load_snapshot(resumed["last_snapshot"], mmap=True)
    half = snapshot.load_snapshot(first["last_snapshot"], mmap=True)
    assert half["progress"]["cur_nimg"] == round(first_kimg * 1000)
    assert_snapshots_equal(a, b)
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


def _fake_metric(values):
    """calc_metric stand-in returning the next of `values` (no detector, no images)."""
    values = list(values)

    def calc_metric(metric, **kwargs):
        return dict(results={metric: values.pop(0)}, metric=metric, total_time=0.0, total_time_str="0s", num_gpus=1)

    return calc_metric


def test_sub_kimg_snapshots_get_distinct_names_and_metric_summaries(tmp_path, data_dir, monkeypatch):
    import json

    from metrics import metric_main

    monkeypatch.setattr(metric_main, "calc_metric", _fake_metric([30.0, 10.0]))
    run = tmp_path / "run"
    # Snapshots every 0.004 kimg (like --tick=0.5 --snap=1: less than 1 kimg apart).
    c = baseline_config(run, data_dir, G_reg_interval=None, D_reg_interval=None, total_kimg=0.008,
                        kimg_per_tick=0.004, network_snapshot_ticks=1, metrics=["fid50k_full"])
    out = tl.training_loop(**c)
    names = ["network-snapshot-000000.004.pt", "network-snapshot-000000.008.pt"]
    assert sorted(os.path.basename(p) for p in glob.glob(str(run / "network-snapshot-*.pt"))) == names
    for name, nimg in zip(names, (4, 8)):
        assert snapshot.load_snapshot(str(run / name), mmap=True)["progress"]["cur_nimg"] == nimg
    assert out["last_snapshot"] == str(run / names[-1]) == snapshot.find_latest(str(run))
    lines = [json.loads(t) for t in (run / "metric-fid50k_full.jsonl").read_text().splitlines()]
    assert [(l["kimg"], l["snapshot_pkl"], l["results"]["fid50k_full"]) for l in lines] == \
        [(0.004, names[0], 30.0), (0.008, names[1], 10.0)]
    best = json.loads((run / "best-fid50k_full.json").read_text())
    assert best == dict(metric="fid50k_full", result="fid50k_full", value=10.0, kimg=0.008, snapshot_pkl=names[1],
                        direction="lower")
    assert snapshot.resolve_network_path(str(run / "best-fid50k_full.json")) == str(run / names[1])
    assert PIL.Image.open(run / "metrics.png").size == (480, 300)


def test_final_snapshot_in_the_same_kimg_keeps_the_previous_one(tmp_path, data_dir, monkeypatch, capsys):
    from metrics import metric_main, summary

    def broken(run_dir):
        raise OSError("disk full")

    # The summaries can never stop training: a failure there is logged and the run goes on.
    monkeypatch.setattr(summary, "update_run_summaries", broken)
    monkeypatch.setattr(metric_main, "calc_metric", _fake_metric([5.0, 6.0]))
    # Ticks of 1 kimg: tick 0 ends after the first step (4 images), the run ends at 8 images, in the same kimg.
    run = tmp_path / "run"
    c = baseline_config(run, data_dir, G_reg_interval=None, D_reg_interval=None, total_kimg=0.008,
                        kimg_per_tick=1, network_snapshot_ticks=1, image_snapshot_ticks=1, metrics=["fid50k_full"])
    assert tl.training_loop(**c)["cur_nimg"] == 8
    found = sorted(os.path.basename(p) for p in glob.glob(str(run / "network-snapshot-*.pt")))
    assert found == ["network-snapshot-000000.008.pt", "network-snapshot-000000.pt"]
    # The fakes grids follow the same rule: the final grid does not overwrite the tick-0 one.
    assert sorted(os.path.basename(p) for p in glob.glob(str(run / "fakes0*.png"))) == \
        ["fakes000000.008.png", "fakes000000.png"]
    assert snapshot.load_snapshot(str(run / found[1]), mmap=True)["progress"]["cur_nimg"] == 4
    assert snapshot.find_latest(str(run)) == str(run / found[0])
    logged = capsys.readouterr().out
    assert logged.count("could not update the metric summaries") == 2 and "OSError: disk full" in logged
    assert len((run / "metric-fid50k_full.jsonl").read_text().splitlines()) == 2
    assert not (run / "metrics.png").exists()
