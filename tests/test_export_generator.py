"""Generator-only snapshots (kind 'generator'): written by export_generator.py, loaded by the same loader as
training snapshots (allow-list, checksum, field checks), float16 weights cast back on loading."""

import os

import pytest
import torch
from click.testing import CliRunner

import export_generator
from training import generation, snapshot


def _spec():
    return dict(class_name="training.networks_fastgan.Generator", z_dim=8, c_dim=0, w_dim=8, img_resolution=32,
                img_channels=3, ngf=4, lite=True)


@pytest.fixture
def trained(tmp_path):
    """A history snapshot whose G and G_ema differ (as after training), with a D."""
    torch.manual_seed(0)
    G = snapshot.build_network(_spec())
    G_ema = snapshot.build_network(_spec())
    with torch.no_grad():
        for p in G_ema.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    D = torch.nn.Linear(2, 2)
    path = tmp_path / "network-snapshot-000012.000.pt"
    snapshot.save_snapshot(str(path), networks=dict(G=_spec(), D=dict(class_name="torch.nn.Linear", in_features=2,
                                                                      out_features=2)),
                           G=G, G_ema=G_ema, D=D, progress=dict(cur_nimg=12000), config=dict(batch_size=16))
    return path, G_ema


def _images(G, seeds=range(4)):
    z = torch.cat([generation.seed_latent(s, G.z_dim) for s in seeds])
    with torch.no_grad():
        return G(z, torch.zeros([len(seeds), 0]), noise_mode="const")


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_export_keeps_G_ema_only_and_loads_like_a_snapshot(tmp_path, trained, dtype):
    src, G_ema = trained
    dest = tmp_path / "model.pt"
    snapshot.save_generator_only(str(src), str(dest), dtype, extra_classes=["torch.nn.Linear"])
    data = snapshot.load_snapshot(str(dest))
    assert data["kind"] == "generator" and data["weights_dtype"] == dtype
    assert set(data["networks"]) == {"G"} and "G" not in data and "D" not in data and "G_opt" not in data
    assert data["progress"]["cur_nimg"] == 12000 and data["config"] == dict(batch_size=16)
    assert {v.dtype for v in data["G_ema"].values() if v.is_floating_point()} == {getattr(torch, dtype)}
    G = snapshot.load_generator(str(dest))
    assert all(p.dtype == torch.float32 for p in G.parameters())  # cast back to the network's dtype
    ref, got = _images(G_ema.eval()), _images(G)
    if dtype == "float32":
        assert torch.equal(ref, got)
    else:
        assert not torch.equal(ref, got) and (ref - got).abs().max() < 2e-2  # ~2.5 of 255 levels
    with pytest.raises(snapshot.SnapshotError, match="has no 'G' weights"):
        snapshot.load_generator(str(dest), which="G")


def test_float16_file_is_about_half_the_float32_one(tmp_path, trained):
    src, _ = trained
    sizes = {}
    for dtype in ("float16", "float32"):
        snapshot.save_generator_only(str(src), str(tmp_path / f"{dtype}.pt"), dtype,
                                     extra_classes=["torch.nn.Linear"])
        sizes[dtype] = os.path.getsize(tmp_path / f"{dtype}.pt")
    assert sizes["float16"] < 0.6 * sizes["float32"]


def test_generator_file_is_checked_like_any_snapshot(tmp_path, trained):
    src, _ = trained
    dest = tmp_path / "model.pt"
    snapshot.save_generator_only(str(src), str(dest), "float16", extra_classes=["torch.nn.Linear"])
    data = torch.load(dest, weights_only=True)
    data["G_ema"][next(iter(data["G_ema"]))] += 1  # changed after writing
    torch.save(data, tmp_path / "tampered.pt")
    with pytest.raises(snapshot.SnapshotError, match="checksum mismatch"):
        snapshot.load_generator(str(tmp_path / "tampered.pt"))
    data = torch.load(dest, weights_only=True)
    data["weights_dtype"] = "int8"
    data["checksum"] = snapshot.content_digest(data)
    torch.save(data, tmp_path / "bad_dtype.pt")
    with pytest.raises(snapshot.SnapshotError, match="field weights_dtype is 'int8', expected one of float32"):
        snapshot.load_snapshot(str(tmp_path / "bad_dtype.pt"))
    data = torch.load(dest, weights_only=True)
    data["networks"]["G"]["class_name"] = "os.system"
    data["checksum"] = snapshot.content_digest(data)
    torch.save(data, tmp_path / "foreign.pt")
    with pytest.raises(snapshot.SnapshotError, match="os.system"):
        snapshot.load_generator(str(tmp_path / "foreign.pt"))
    with pytest.raises(ValueError, match="weights_dtype='bfloat16'"):
        snapshot.save_generator_only(str(src), str(tmp_path / "x.pt"), "bfloat16", extra_classes=["torch.nn.Linear"])


def test_cli_writes_the_file_and_reports_the_pixel_difference(tmp_path, trained):
    src, G_ema = trained
    dest = tmp_path / "out.pt"
    r = CliRunner().invoke(export_generator.main, [f"--network={src}", f"--dest={dest}",
                                                   "--allow-class=torch.nn.Linear"])
    assert r.exit_code == 0, r.output
    assert "float16 weights" in r.output
    diff = int(r.output.split("seeds 0-15: ")[1].split(" / 255")[0])
    ref = generation.to_uint8_hwc(_images(G_ema.eval(), range(16))).astype(int)
    got = generation.to_uint8_hwc(_images(snapshot.load_generator(str(dest)), range(16))).astype(int)
    assert diff == abs(ref - got).max() and diff <= 3


@pytest.mark.parametrize("args,message", [
    (["--dest={tmp}/out.txt"], "must end in .pt"),
    (["--dest={tmp}"], "must end in .pt"),
    (["--network={tmp}/missing.pt", "--dest={tmp}/out.pt"], "does not exist"),
    (["--dest={src}"], "is the snapshot being exported"),
])
def test_cli_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, trained, args, message):
    src, _ = trained
    args = [a.format(tmp=tmp_path, src=src) for a in args]
    if not any(a.startswith("--network") for a in args):
        args.append(f"--network={src}")
    before = sorted(os.listdir(tmp_path))
    r = CliRunner().invoke(export_generator.main, args + ["--allow-class=torch.nn.Linear"])
    assert r.exit_code == 2 and message in r.output
    assert sorted(os.listdir(tmp_path)) == before
