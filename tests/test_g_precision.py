"""Generator mixed precision (precision='bf16', train.py --g-precision=bf16): bfloat16 autocast of the training
copy's synthesis on float32 weights. A few optimizer steps track the float32 run within a stated tolerance, nothing
turns non-finite, and G_ema, evaluation and snapshots stay float32. bf16 autocast runs on the CPU, so this is
checked here; its speed is a GPU question (benchmarks/gpu_window.py)."""

import copy
import glob
import os

import pytest
import torch
from click.testing import CliRunner

import train
from torch_utils import util
from training import snapshot

SPECS = {
    "fastgan_lite": dict(class_name="training.networks_fastgan.Generator", z_dim=32, w_dim=32, c_dim=0,
                         img_resolution=64, img_channels=3, ngf=16, lite=True),
    "fastgan": dict(class_name="training.networks_fastgan.Generator", z_dim=32, w_dim=32, c_dim=0, img_resolution=32,
                    img_channels=3, ngf=8, lite=False),
    "stylegan2": dict(class_name="training.networks_stylegan2.Generator", z_dim=32, w_dim=32, c_dim=0,
                      img_resolution=32, img_channels=3, channel_base=1024, channel_max=64,
                      mapping_kwargs=dict(num_layers=2)),
}


def _train_steps(spec, precision, steps=4):
    torch.manual_seed(0)
    G = util.construct_class_by_name(**spec, precision=precision).train()
    init = copy.deepcopy(G)
    opt = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.0, 0.99))
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        z = torch.randn(8, G.z_dim, generator=gen)
        torch.manual_seed(100 + step)  # the same noise in both precisions
        img = G(z, torch.zeros(8, 0))
        assert img.dtype == torch.float32 and torch.isfinite(img).all()
        loss = (img - 0.3).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return G, init


@pytest.mark.parametrize("name", sorted(SPECS))
def test_bf16_training_steps_stay_close_to_fp32(name):
    G32, init = _train_steps(SPECS[name], "fp32")
    G16, _ = _train_steps(SPECS[name], "bf16")
    d32 = torch.cat([(a - b).flatten() for a, b in zip(G32.parameters(), init.parameters())])
    d16 = torch.cat([(a - b).flatten() for a, b in zip(G16.parameters(), init.parameters())])
    # Measured: 5.6% (FastGAN-lite) and 6.2% (StyleGAN2) relative difference of the 4-step update, cosine 0.998.
    assert ((d16 - d32).norm() / d32.norm()).item() < 0.15
    assert torch.nn.functional.cosine_similarity(d16, d32, dim=0).item() > 0.99
    assert all(p.dtype == torch.float32 for p in G16.parameters())  # float32 master weights
    z = torch.randn(4, G16.z_dim)
    with torch.no_grad():  # eval mode (what G_ema and the metrics use) runs in float32
        a = G32.eval()(z, torch.zeros(4, 0), noise_mode="const")
        b = G16.eval()(z, torch.zeros(4, 0), noise_mode="const")
    assert b.dtype == torch.float32 and ((a - b).abs().max() / a.std()).item() < 0.05


def test_bf16_autocast_applies_to_the_training_copy_only():
    G = util.construct_class_by_name(**SPECS["fastgan_lite"], precision="bf16")
    seen = []
    hook = G.synthesis.to_rgb.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    z = torch.randn(2, 32)
    G.train()(z, None)
    with torch.no_grad():
        G.eval()(z, None)
    hook.remove()
    assert seen == [torch.bfloat16, torch.float32]
    with pytest.raises(ValueError, match="precision must be one of"):
        util.construct_class_by_name(**SPECS["fastgan_lite"], precision="fp16")


def test_train_g_precision_bf16_writes_float32_snapshots(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    import numpy as np
    import PIL.Image

    for i in range(4):
        PIL.Image.fromarray((np.random.RandomState(i).rand(32, 32, 3) * 255).astype(np.uint8)).save(data / f"{i}.png")
    args = [f"--outdir={tmp_path / 'runs'}", "--cfg=fastgan_lite", "--loss=projected", f"--data={data}", "--ngf=4",
            "--feat-res=32", "--metrics=none", "--workers=0", "--grid=2x2", "--device=cpu", "--batch=4",
            "--kimg=0.008", "--tick=0.004", "--snap=1", "--g-precision=bf16"]
    result = CliRunner().invoke(train.main, args)
    assert result.exit_code == 0, result.output
    (snap,) = glob.glob(os.path.join(tmp_path, "runs", "*", "network-snapshot-000000.008.pt"))
    data = snapshot.load_snapshot(snap)
    assert data["networks"]["G"]["precision"] == "bf16"
    assert all(v.dtype in (torch.float32, torch.int64) for k in ("G", "G_ema") for v in data[k].values())
    G = snapshot.load_generator(snap)
    assert not G.training and G(torch.randn(2, 256), None).dtype == torch.float32
