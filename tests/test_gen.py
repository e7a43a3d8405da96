"""gen_images.py and gen_video.py on snapshots of freshly initialized tiny generators (no training needed)."""

import errno
import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import gen_images
import gen_video
from torch_utils import util
from training import snapshot


def _make_snapshot(path, c_dim):
    net = dict(class_name="training.networks_fastgan.Generator", z_dim=32, w_dim=32, ngf=4, lite=True,
               c_dim=c_dim, img_resolution=32, img_channels=3)
    torch.manual_seed(c_dim)
    G = snapshot.build_network(net)
    with torch.no_grad():  # give w_avg (the truncation centre) a non-trivial value
        G.mapping.w_avg.copy_(torch.randn(32) * 0.1)
    snapshot.save_snapshot(str(path), networks={"G": net}, G=G, G_ema=G)
    return str(path)


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    root = tmp_path_factory.mktemp("snaps")
    return dict(uncond=_make_snapshot(root / "uncond.pt", 0), cond=_make_snapshot(root / "cond.pt", 3))


def _run(main, args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _png(path):
    return np.array(PIL.Image.open(path))


def test_gen_images_per_seed_deterministic_and_grid(tmp_path, snaps):
    out1, out2 = tmp_path / "a", tmp_path / "b"
    r = _run(gen_images.main, [f"--network={snaps['uncond']}", "--seeds=0-3", f"--outdir={out1}", "--grid=2x2"])
    assert r.exit_code == 0, r.output
    r = _run(gen_images.main, [f"--network={snaps['uncond']}", "--seeds=2,3", f"--outdir={out2}"])
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(out1)) == ["grid.png", "seed0000.png", "seed0001.png", "seed0002.png", "seed0003.png"]
    imgs = [_png(out1 / f"seed{s:04d}.png") for s in range(4)]
    assert imgs[0].shape == (32, 32, 3) and imgs[0].dtype == np.uint8
    assert not np.array_equal(imgs[0], imgs[1])  # different seeds, different images
    assert np.array_equal(imgs[2], _png(out2 / "seed0002.png"))  # a seed gives the same image every time
    grid = _png(out1 / "grid.png")
    assert grid.shape == (64, 64, 3)
    assert np.array_equal(grid[:32, 32:], imgs[1]) and np.array_equal(grid[32:, :32], imgs[2])


def test_gen_images_truncation_zero_gives_the_mean_image(tmp_path, snaps):
    r = _run(gen_images.main, [f"--network={snaps['uncond']}", "--seeds=0-2", f"--outdir={tmp_path}", "--trunc=0"])
    assert r.exit_code == 0, r.output
    imgs = [_png(tmp_path / f"seed{s:04d}.png") for s in range(3)]
    assert np.array_equal(imgs[0], imgs[1]) and np.array_equal(imgs[0], imgs[2])


def test_gen_images_class_labels(tmp_path, snaps):
    r = _run(gen_images.main, [f"--network={snaps['cond']}", "--seeds=0", f"--outdir={tmp_path / 'c0'}", "--class=0"])
    assert r.exit_code == 0, r.output
    r = _run(gen_images.main, [f"--network={snaps['cond']}", "--seeds=0", f"--outdir={tmp_path / 'c2'}", "--class=2"])
    assert r.exit_code == 0, r.output
    assert not np.array_equal(_png(tmp_path / "c0" / "seed0000.png"), _png(tmp_path / "c2" / "seed0000.png"))


@pytest.mark.parametrize("which,args,fragment", [
    ("uncond", ["--class=1"], "unconditional"),
    ("cond", [], "conditional with 3 classes; pass --class=0..2"),
    ("cond", ["--class=3"], "out of range 0..2"),
    ("uncond", ["--seeds=5-2"], "end is smaller than start"),
    ("uncond", ["--grid=1x1"], "1 cells for 2 seeds"),
    ("missing", [], "does not exist"),
])
def test_gen_images_bad_options(tmp_path, snaps, which, args, fragment):
    network = snaps.get(which, str(tmp_path / "missing.pt"))
    seeds = [] if any(a.startswith("--seeds") for a in args) else ["--seeds=0,1"]
    r = CliRunner().invoke(gen_images.main, [f"--network={network}", f"--outdir={tmp_path / 'o'}"] + seeds + args)
    assert r.exit_code == 2 and fragment in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_interpolate_passes_through_keys_and_loops():
    keys = torch.tensor([[0.0], [1.0], [3.0]])
    for kind in ("linear", "cubic"):
        path = gen_video.interpolate(keys, 4, kind)
        assert path.shape == (12, 1)
        assert torch.allclose(path[::4], keys)  # every 4th frame is a keyframe
    lin = gen_video.interpolate(keys, 4, "linear")
    assert torch.allclose(lin[1:4, 0], torch.tensor([0.25, 0.5, 0.75]))
    assert torch.allclose(lin[9:, 0], torch.tensor([2.25, 1.5, 0.75]))  # back towards the first key


def test_gen_video_gif_grid(tmp_path, snaps):
    out = tmp_path / "v.gif"
    r = _run(gen_video.main, [f"--network={snaps['uncond']}", "--seeds=0-5", "--grid=3x1", "--frames=3",
                              f"--output={out}", "--kind=linear"])
    assert r.exit_code == 0, r.output
    gif = PIL.Image.open(out)
    assert gif.n_frames == 2 * 3 and gif.size == (96, 32)  # 2 keyframes per cell x 3 frames, 3 cells wide
    frames = []
    for i in range(gif.n_frames):
        gif.seek(i)
        frames.append(np.array(gif.convert("RGB")))
    assert not np.array_equal(frames[0], frames[1])  # it moves


def test_gen_video_errors(tmp_path, snaps):
    r = CliRunner().invoke(gen_video.main, [f"--network={snaps['uncond']}", "--seeds=0-4", "--grid=2x1",
                                            f"--output={tmp_path / 'v.gif'}"])
    assert r.exit_code == 2 and "cannot be split evenly over 2 grid cells" in r.output
    r = CliRunner().invoke(gen_video.main, [f"--network={snaps['uncond']}", "--seeds=0-1",
                                            f"--output={tmp_path / 'v.avi'}"])
    assert r.exit_code == 2 and ".mp4 or .gif" in r.output
    if not gen_video.mp4_available():
        r = CliRunner().invoke(gen_video.main, [f"--network={snaps['uncond']}", "--seeds=0-1",
                                                f"--output={tmp_path / 'v.mp4'}"])
        assert r.exit_code == 2 and "imageio-ffmpeg" in r.output
    assert not (tmp_path / "v.gif").exists() and not (tmp_path / "v.mp4").exists()


def test_best_pointer_as_network(tmp_path, snaps):
    """A run dir's best-<result>.json stands for the snapshot it names (relative to the pointer)."""
    import json
    import shutil

    run = tmp_path / "00001-run"
    run.mkdir()
    shutil.copy(snaps["uncond"], run / "network-snapshot-000002.500.pt")
    pointer = run / "best-fid50k_full.json"
    pointer.write_text(json.dumps(dict(metric="fid50k_full", result="fid50k_full", value=12.0, kimg=2.5,
                                       snapshot_pkl="network-snapshot-000002.500.pt", direction="lower")))
    r = _run(gen_images.main, [f"--network={pointer}", "--seeds=3,4", f"--outdir={tmp_path / 'via_pointer'}"])
    assert r.exit_code == 0, r.output
    r = _run(gen_images.main, [f"--network={snaps['uncond']}", "--seeds=3,4", f"--outdir={tmp_path / 'direct'}"])
    assert r.exit_code == 0, r.output
    for seed in (3, 4):
        assert np.array_equal(_png(tmp_path / "via_pointer" / f"seed{seed:04d}.png"),
                              _png(tmp_path / "direct" / f"seed{seed:04d}.png"))
    r = _run(gen_video.main, [f"--network={pointer}", "--seeds=0-1", "--frames=2", f"--output={tmp_path / 'v.gif'}"])
    assert r.exit_code == 0, r.output
    assert PIL.Image.open(tmp_path / "v.gif").n_frames == 4
    os.remove(run / "network-snapshot-000002.500.pt")  # the snapshot is gone: a clear error, nothing written
    for main, extra in ((gen_images.main, [f"--outdir={tmp_path / 'gone'}"]),
                        (gen_video.main, [f"--output={tmp_path / 'gone.gif'}"])):
        r = CliRunner().invoke(main, [f"--network={pointer}", "--seeds=0-1", *extra])
        assert r.exit_code == 2, r.output
        assert "network-snapshot-000002.500.pt" in r.output and "does not exist" in r.output
    assert not (tmp_path / "gone").exists() and not (tmp_path / "gone.gif").exists()


# ---------------------------------------------------------------------------------------------
# Bad input: one clear error naming the option, non-zero exit, nothing written.


def _error_lines(output):
    return [line for line in output.splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_truncation_is_rejected(tmp_path, snaps, value):
    out = tmp_path / "o"
    r = CliRunner().invoke(gen_images.main, [f"--network={snaps['uncond']}", "--seeds=0", f"--outdir={out}",
                                             f"--trunc={value}"])
    assert r.exit_code == 2 and "'--trunc'" in r.output and "not a finite number" in r.output, r.output
    assert not out.exists()
    r = CliRunner().invoke(gen_video.main, [f"--network={snaps['uncond']}", "--seeds=0-1",
                                            f"--output={tmp_path / 'v.gif'}", f"--trunc={value}"])
    assert r.exit_code == 2 and "'--trunc'" in r.output, r.output
    assert not (tmp_path / "v.gif").exists()


def test_seeds_beyond_numpy_range_are_rejected_and_the_last_valid_seed_works(tmp_path, snaps):
    for main, extra in ((gen_images.main, [f"--outdir={tmp_path / 'o'}"]),
                        (gen_video.main, [f"--output={tmp_path / 'v.gif'}"])):
        r = CliRunner().invoke(main, [f"--network={snaps['uncond']}", "--seeds=1,4294967296", *extra])
        assert r.exit_code == 2 and "'--seeds'" in r.output, r.output
        assert "seed 4294967296 is out of range" in r.output and "4294967295" in r.output
        assert "Traceback" not in r.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "v.gif").exists()
    r = _run(gen_images.main, [f"--network={snaps['uncond']}", "--seeds=4294967295", f"--outdir={tmp_path / 'o'}"])
    assert r.exit_code == 0, r.output
    assert _png(tmp_path / "o" / "seed4294967295.png").shape == (32, 32, 3)


def test_output_paths_of_the_wrong_kind(tmp_path, snaps):
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    r = CliRunner().invoke(gen_images.main, [f"--network={snaps['uncond']}", "--seeds=0", f"--outdir={a_file}"])
    assert r.exit_code == 2 and "'--outdir'" in r.output and "is a file, not a directory" in r.output, r.output
    r = CliRunner().invoke(gen_images.main, [f"--network={snaps['uncond']}", "--seeds=0",
                                             f"--outdir={a_file / 'sub'}"])
    assert r.exit_code == 2 and "'--outdir'" in r.output and "is a file" in r.output, r.output
    assert a_file.read_text() == "keep me"
    folder = tmp_path / "video.gif"
    folder.mkdir()
    r = CliRunner().invoke(gen_video.main, [f"--network={snaps['uncond']}", "--seeds=0-1", f"--output={folder}"])
    assert r.exit_code == 2 and "'--output'" in r.output and "is a directory" in r.output, r.output
    assert os.listdir(folder) == []


def test_snapshot_missing_a_tensor_is_one_clear_line(tmp_path, snaps):
    data = torch.load(snaps["uncond"], weights_only=True)
    dropped = sorted(data["G_ema"])[0]
    del data["G_ema"][dropped]
    if "checksum" in data:  # a consistent file that lacks a tensor, not a damaged one
        data["checksum"] = snapshot.content_digest(data)
    broken = tmp_path / "broken.pt"
    torch.save(data, broken)
    for main, extra in ((gen_images.main, [f"--outdir={tmp_path / 'o'}"]),
                        (gen_video.main, [f"--output={tmp_path / 'v.gif'}"])):
        r = CliRunner().invoke(main, [f"--network={broken}", "--seeds=0-1", *extra])
        assert r.exit_code == 2 and "'--network'" in r.output, r.output
        (line,) = _error_lines(r.output)
        assert str(broken) in line and dropped in line, line
        assert "Traceback" not in r.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "v.gif").exists()


class _FullDiskFile:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._f, name)


def _fill_disk_after(monkeypatch, files_ok):
    """From the (files_ok + 1)-th atomic write on, every write fails with ENOSPC (the real atomic_write runs, with
    a file object whose writes fail, whatever way it opens its temporary file)."""
    real_atomic_write = util.atomic_write
    count = [0]

    def atomic_write(path, write, *args, **kwargs):
        count[0] += 1
        if count[0] > files_ok:
            return real_atomic_write(path, lambda f: write(_FullDiskFile(f)), *args, **kwargs)
        return real_atomic_write(path, write, *args, **kwargs)

    monkeypatch.setattr(util, "atomic_write", atomic_write)


def test_disk_full_leaves_earlier_images_intact_and_no_partial_file(tmp_path, snaps, monkeypatch):
    ref = tmp_path / "ref"
    assert _run(gen_images.main, [f"--network={snaps['uncond']}", "--seeds=0-3", f"--outdir={ref}"]).exit_code == 0
    out = tmp_path / "out"
    _fill_disk_after(monkeypatch, 2)
    r = CliRunner().invoke(gen_images.main, [f"--network={snaps['uncond']}", "--seeds=0-3", f"--outdir={out}"])
    assert r.exit_code == 1, r.output
    (line,) = _error_lines(r.output)
    assert line == f"Error: no space left on device at {os.path.join(str(out), 'seed0002.png')}", line
    assert sorted(os.listdir(out)) == ["seed0000.png", "seed0001.png"]  # no 0-byte or temporary files
    for seed in (0, 1):
        assert np.array_equal(_png(out / f"seed{seed:04d}.png"), _png(ref / f"seed{seed:04d}.png"))


def test_disk_full_while_writing_a_video_leaves_no_file(tmp_path, snaps, monkeypatch):
    out = tmp_path / "v.gif"
    _fill_disk_after(monkeypatch, 0)
    r = CliRunner().invoke(gen_video.main, [f"--network={snaps['uncond']}", "--seeds=0-1", "--frames=2",
                                            f"--output={out}"])
    assert r.exit_code == 1, r.output
    (line,) = _error_lines(r.output)
    assert line == f"Error: no space left on device at {out}", line
    assert os.listdir(tmp_path) == []


def test_generation_clis_do_not_import_each_other_or_the_training_loop():
    import subprocess
    import sys

    code = "import sys, gen_video; print('training.training_loop' in sys.modules, 'gen_images' in sys.modules)"
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"
    for name in ("gen_images.py", "gen_video.py"):
        with open(os.path.join(repo, name)) as f:
            text = f.read()
        assert "training_loop" not in text and "from gen_images" not in text and "import gen_images" not in text


class TinyGenerator(__import__("training.networks_fastgan", fromlist=["Generator"]).Generator):
    """A network class outside the toolkit's allow-list (it lives in a test module)."""


def test_allow_class_lets_a_snapshot_build_a_class_the_user_names(tmp_path):
    name = f"{TinyGenerator.__module__}.TinyGenerator"
    net = dict(class_name=name, z_dim=32, w_dim=32, ngf=4, lite=True, c_dim=0, img_resolution=32, img_channels=3)
    G = snapshot.build_network(net, extra_classes=[name])
    path = str(tmp_path / "custom.pt")
    snapshot.save_snapshot(path, networks={"G": net}, G=G, G_ema=G)
    for main, extra in ((gen_images.main, [f"--outdir={tmp_path / 'o'}"]),
                        (gen_video.main, [f"--output={tmp_path / 'v.gif'}", "--frames=2"])):
        r = CliRunner().invoke(main, [f"--network={path}", "--seeds=0-1", *extra])
        assert r.exit_code == 2 and "'--network'" in r.output, r.output
        (line,) = _error_lines(r.output)
        assert f"--allow-class={name}" in line, line
        r = _run(main, [f"--network={path}", "--seeds=0-1", f"--allow-class={name}", *extra])
        assert r.exit_code == 0, r.output
    assert sorted(os.listdir(tmp_path / "o")) == ["seed0000.png", "seed0001.png"]
    assert PIL.Image.open(tmp_path / "v.gif").n_frames == 4
