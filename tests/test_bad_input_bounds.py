"""A fresh bad-input sweep, class by class: crafted files cannot raise memory (streamed zip members, pixel limits,
config-vs-weights shapes checked on the meta device, memory estimates before training), values that cannot be
meant fail in one line naming the option, refusals come before any work, damaged caches are recomputed, and
leftovers of killed runs are cleaned up. Each test fails on the code before these fixes."""

import json
import os
import resource
import struct
import subprocess
import sys
import time
import zipfile
import zlib

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import train
from metrics import metric_main
from training import snapshot

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _run(args, env=None, timeout=300):
    return subprocess.run([sys.executable] + args, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def _one_error_line(text, *fragments):
    errors = [line for line in text.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in text, text[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def _images(folder, num=6, res=32, mode="RGB", seed=0):
    os.makedirs(folder, exist_ok=True)
    rnd = np.random.RandomState(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    for i in range(num):
        PIL.Image.fromarray((rnd.rand(res, res, channels) * 255).astype(np.uint8), mode).save(
            os.path.join(folder, f"img{i:02d}.png"))
    return str(folder)


def _train(args):
    return CliRunner().invoke(train.main, args)


def _train_args(outdir, data, extra=()):
    return [f"--outdir={outdir}", "--cfg=fastgan_lite", "--loss=stylegan2", f"--data={data}", "--ngf=4",
            "--cbase=256", "--cmax=16", "--metrics=none", "--workers=0", "--grid=2x2", "--device=cpu", "--batch=4",
            "--kimg=0.004", "--tick=0.004", "--snap=1"] + list(extra)


# ---------------------------------------------------------------------------------------------
# Memory and time bounds on crafted input.


def test_a_huge_zip_member_is_never_read_whole(tmp_path):
    """1 GiB of zeros compressed into ~1 MB: the tool reads the member's header from a stream and stops."""
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z, z.open("x.png", "w", force_zip64=True) as f:
        chunk = bytes(1 << 24)
        for _ in range(64):
            f.write(chunk)
    code = ("import resource, subprocess, sys; p = subprocess.run([sys.executable, 'dataset_tool.py', "
            f"'--source={bomb}', '--dest={tmp_path / 'out.zip'}'], capture_output=True, text=True); "
            "print(p.returncode); print(p.stderr); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = _run(["-c", code]).stdout.splitlines()
    assert out[0] == "1" and "not a readable image" in "\n".join(out)
    assert int(out[-1]) * 1024 < 1.0e9  # torch's import alone is ~0.6 GB; reading the member would add 1 GiB
    assert not (tmp_path / "out.zip").exists()


def _png_header_claiming(width, height):
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND",
                                                                                                           b"")


def test_an_image_declaring_gigapixels_is_refused_from_its_header(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    # 10^8 pixels: above PIL's limit (89.5M), below the 2x at which PIL itself refuses (it only warns, then decodes)
    (folder / "bomb.png").write_bytes(_png_header_claiming(10_000, 10_000))
    proc = _run(["dataset_tool.py", f"--source={folder}", f"--dest={tmp_path / 'out.zip'}"])
    assert proc.returncode == 1 and "decompression-bomb limit" in proc.stderr, proc.stderr


def test_a_snapshot_whose_config_does_not_fit_its_weights_is_refused_before_building(tmp_path):
    spec = dict(class_name="training.networks_fastgan.Generator", z_dim=8, c_dim=0, w_dim=8, img_resolution=32,
                img_channels=3, ngf=4, lite=True)
    G = snapshot.build_network(spec)
    path = str(tmp_path / "crafted.pt")
    # A valid checksum, the allowed class, and ngf=400: the old loader built a 1.5 GB network before failing.
    snapshot.save_snapshot(path, networks=dict(G=dict(spec, ngf=400)), G=G, G_ema=G, progress=dict(cur_nimg=4))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(snapshot.SnapshotError, match="do not fit the network its config describes"):
        snapshot.load_generator(path)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < 200e6


@pytest.mark.parametrize("extra,option", [(["--batch=100000"], "--batch"), (["--ngf=100000"], "--ngf")])
def test_training_that_cannot_fit_in_memory_fails_before_it_starts(tmp_path, extra, option):
    data = _images(tmp_path / "data")
    args = _train_args(tmp_path / "runs", data, ["--loss=projected", "--feat-res=32", "--kimg=1000"]) + extra
    args = [a for a in args if not a.startswith(("--cbase", "--cmax"))]
    result = _train(args)
    assert result.exit_code == 2
    _one_error_line(result.output, f"'{option}'", "would need about")
    assert not (tmp_path / "runs").exists()


def test_feat_res_far_beyond_the_images_is_refused(tmp_path):
    data = _images(tmp_path / "data")
    args = [a for a in _train_args(tmp_path / "runs", data, ["--loss=projected", "--feat-res=32000"])
            if not a.startswith(("--cbase", "--cmax"))]
    result = _train(args)
    _one_error_line(result.output, "'--feat-res'", "from 32 to 2048")


def test_generation_counts_that_cannot_be_meant(tmp_path):
    net = _fastgan_snapshot(tmp_path)
    proc = _run(["gen_images.py", f"--network={net}", "--seeds=0-4294967295", f"--outdir={tmp_path / 'o'}"])
    _one_error_line(proc.stderr, "'--seeds'", "at most 1,000,000")
    proc = _run(["gen_video.py", f"--network={net}", "--seeds=0-1", "--frames=100000000",
                 f"--output={tmp_path / 'v.gif'}"])
    _one_error_line(proc.stderr, "'--frames'", "would need about")
    assert not (tmp_path / "o").exists() and not (tmp_path / "v.gif").exists()


def test_a_huge_class_index_is_refused_when_the_labels_are_read(tmp_path):
    data = _images(tmp_path / "data")
    labels = [[f"img{i:02d}.png", i] for i in range(5)] + [["img05.png", 10 ** 9]]
    (tmp_path / "data" / "dataset.json").write_text(json.dumps({"labels": labels}))
    result = _train(_train_args(tmp_path / "runs", data, ["--cond=1"]))
    _one_error_line(result.output, "class index 1000000000 is too large")


def test_downloads_have_a_deadline():
    from projector_plugin.feature_networks import DownloadTimeout, call_with_deadline

    start = time.time()
    with pytest.raises(DownloadTimeout, match="no answer within 0.5 s"):
        call_with_deadline(lambda: time.sleep(30), "a hung download", seconds=0.5)
    assert time.time() - start < 5
    assert call_with_deadline(lambda: 42, "a quick one", seconds=5) == 42
    with pytest.raises(KeyError):  # the call's own errors come through
        call_with_deadline(lambda: {}["x"], "a failing one", seconds=5)


def test_a_backbone_without_offline_weights_fails_before_the_run_directory(tmp_path):
    data = _images(tmp_path / "data")
    args = [a for a in _train_args(tmp_path / "runs", data, ["--loss=projected", "--backbone=resnet18"])
            if not a.startswith(("--cbase", "--cmax"))]
    proc = _run(["train.py"] + args,
                env=dict(PGAN_DOWNLOAD_TIMEOUT="20", HF_HUB_OFFLINE="1"))
    _one_error_line(proc.stderr, "'--backbone'", "--backbone-weights")
    assert not (tmp_path / "runs").exists()


def test_a_fifo_in_a_source_folder_is_skipped_not_opened(tmp_path):
    folder = _images(tmp_path / "src", num=3)
    os.mkfifo(os.path.join(folder, "zz.png"))  # opening it would block for ever
    proc = _run(["dataset_tool.py", f"--source={folder}", f"--dest={tmp_path / 'out.zip'}"], timeout=120)
    assert proc.returncode == 0 and "not a regular file" in proc.stderr, proc.stderr
    from training.dataset import ImageFolderDataset

    assert len(ImageFolderDataset(folder)) == 3


# ---------------------------------------------------------------------------------------------
# Refuse before the work, not after.


def test_metrics_the_dataset_cannot_serve_are_refused_at_start(tmp_path):
    data = _images(tmp_path / "data", num=16)
    result = _train(_train_args(tmp_path / "runs", data, ["--metrics=fid50k"]))
    _one_error_line(result.output, "'--metrics'", "has 16 images, but the metric needs 50000")
    assert not (tmp_path / "runs").exists()
    result = _train(_train_args(tmp_path / "runs", data, ["--metrics=fid50k_full", "--dry-run"]))
    assert result.exit_code == 0 and "generates 50,000 images but dataset" in result.output
    assert metric_main.check_real_count("fid2k_full", 1000, "x") is None


def test_empty_or_wrong_kind_of_output_paths(tmp_path):
    src = _images(tmp_path / "src", num=2)
    proc = _run(["dataset_tool.py", f"--source={src}", "--dest="])
    _one_error_line(proc.stderr, "--dest is empty")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    net = _fastgan_snapshot(tmp_path)
    for opt in ("--run-dir", "--cache-dir"):
        for value, fragment in (("", "is empty"), (str(a_file), "is a file")):
            proc = _run(["calc_metrics.py", f"--network={net}", "--metrics=fid2k_full", f"--data={src}",
                         f"{opt}={value}"])
            _one_error_line(proc.stderr, opt, fragment)
    proc = _run(["gen_images.py", f"--network={net}", "--seeds=0", "--outdir="])
    _one_error_line(proc.stderr, "'--outdir'", "is empty")


def test_kimg_below_one_batch_is_refused(tmp_path):
    data = _images(tmp_path / "data")
    result = _train(_train_args(tmp_path / "runs", data, ["--kimg=0.001"]))
    _one_error_line(result.output, "'--kimg'", "less than one step")
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------
# Clear errors instead of tracebacks.


def test_alpha_channel_data_is_refused_and_4_channel_generators_write_rgba(tmp_path):
    data = _images(tmp_path / "rgba", mode="RGBA")
    args = [a for a in _train_args(tmp_path / "runs", data, ["--cfg=stylegan2", "--fp32=1"]) if a != "--ngf=4"]
    result = _train(args)
    _one_error_line(result.output, "'--data'", "4-channel images", "dataset_tool.py")
    spec = dict(class_name="training.networks_stylegan2.Generator", z_dim=8, c_dim=0, w_dim=8, img_resolution=16,
                img_channels=4, mapping_kwargs=dict(num_layers=1), channel_base=64, channel_max=8, num_fp16_res=0)
    G = snapshot.build_network(spec)
    net = str(tmp_path / "rgba.pt")
    snapshot.save_snapshot(net, networks=dict(G=spec), G=G, G_ema=G, progress=dict(cur_nimg=4))
    proc = _run(["gen_images.py", f"--network={net}", "--seeds=0", f"--outdir={tmp_path / 'o'}"])
    assert proc.returncode == 0, proc.stderr
    assert PIL.Image.open(tmp_path / "o" / "seed0000.png").mode == "RGBA"
    proc = _run(["gen_video.py", f"--network={net}", "--seeds=0-1", "--frames=2", f"--output={tmp_path / 'v.gif'}"])
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("tool,args,option,fragment", [
    ("train", ["--kimg=1e306"], "--kimg", "at most 1e+09"),
    ("gen_images", ["--trunc=1e308"], "--trunc", "at most 100"),
    ("calc_metrics", ["--metrics=fid" + "9" * 5000 + "k_full"], "--metrics", "counts at most 9 digits"),
    ("dataset_tool", ["--max-images=2", "--subset-seed=-1"], "--subset-seed", "not in the range"),
    ("dataset_tool", ["--max-images=2", f"--subset-seed={2 ** 40}"], "--subset-seed", "not in the range"),
])
def test_values_that_overflow_are_one_line(tmp_path, tool, args, option, fragment):
    src = _images(tmp_path / "src", num=3)
    net = _fastgan_snapshot(tmp_path)
    base = {"train": ["train.py"] + _train_args(tmp_path / "runs", src),
            "gen_images": ["gen_images.py", f"--network={net}", "--seeds=0", f"--outdir={tmp_path / 'o'}"],
            "calc_metrics": ["calc_metrics.py", f"--network={net}", f"--data={src}"],
            "dataset_tool": ["dataset_tool.py", f"--source={src}", f"--dest={tmp_path / 'd.zip'}"]}[tool]
    proc = _run(base + args)
    assert proc.returncode != 0
    line = _one_error_line(proc.stderr, option, fragment)
    assert len(line) < 600


def _fastgan_snapshot(tmp_path, **save_kwargs):
    path = tmp_path / "fastgan.pt"
    if not path.exists():
        spec = dict(class_name="training.networks_fastgan.Generator", z_dim=8, c_dim=0, w_dim=8, img_resolution=32,
                    img_channels=3, ngf=4, lite=True)
        G = snapshot.build_network(spec)
        snapshot.save_snapshot(str(path), networks=dict(G=spec), G=G, G_ema=G, progress=dict(cur_nimg=4),
                               **save_kwargs)
    return str(path)


def test_a_damaged_statistics_cache_is_recomputed_and_replaced(tmp_path):
    from metrics import metric_utils

    src = _images(tmp_path / "src", num=8)
    cache = tmp_path / "cache"
    kwargs = dict(dataset_kwargs=dict(path=src), cache_dir=str(cache), batch_size=8, device=torch.device("cpu"))
    opts = metric_utils.MetricOptions(**kwargs)
    first = metric_utils.compute_feature_stats_for_dataset(opts, "inception", capture_mean_cov=True).get_mean_cov()
    (cached,) = list(cache.rglob("*.npz"))
    for damage in (lambda p: p.write_bytes(p.read_bytes()[:100]),  # truncated
                   lambda p: np.savez(p, num_items=np.int64(8), num_features=np.int64(2048),
                                      raw_mean=np.array([1, "a"], dtype=object), raw_cov=np.zeros(1))):  # foreign
        damage(cached)
        again = metric_utils.compute_feature_stats_for_dataset(metric_utils.MetricOptions(**kwargs), "inception",
                                                               capture_mean_cov=True).get_mean_cov()
        np.testing.assert_allclose(again[0], first[0], rtol=1e-5)
        with np.load(cached, allow_pickle=False) as data:  # replaced by a good file
            assert data["raw_mean"].shape == (2048,)


def test_a_foreign_file_in_the_inception_cache_is_moved_aside(tmp_path):
    from metrics import detectors, inception

    cache = tmp_path / "cache"
    cache.mkdir()
    foreign = cache / inception.INCEPTION_FILENAME
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(foreign))  # TorchScript, but not Inception
    det = detectors.InceptionDetector(cache_dir=str(cache), allow_download=False)
    assert det.weights_path != str(foreign) and (cache / (inception.INCEPTION_FILENAME + ".damaged")).is_file()


@pytest.mark.parametrize("field,value,fragment", [
    ("progress", dict(cur_nimg="12"), "progress.cur_nimg"),
    ("progress", dict(cur_nimg=-5), "progress.cur_nimg"),
    ("rng", "broken", "field rng is"),
])
def test_snapshot_fields_of_the_wrong_type_are_named(tmp_path, field, value, fragment):
    spec = dict(class_name="training.networks_fastgan.Generator", z_dim=8, c_dim=0, w_dim=8, img_resolution=32,
                img_channels=3, ngf=4, lite=True)
    G = snapshot.build_network(spec)
    path = str(tmp_path / "s.pt")
    kwargs = dict(progress=dict(cur_nimg=4))
    if field == "progress":
        kwargs["progress"] = value
    else:
        kwargs["rng"] = value
    snapshot.save_snapshot(path, networks=dict(G=spec), G=G, G_ema=G, **kwargs)  # a valid checksum
    with pytest.raises(snapshot.SnapshotError, match=fragment):
        snapshot.load_snapshot(path)
    rng = snapshot.capture_rng_state()
    rng["numpy"]["key"] = rng["numpy"]["key"][:10]
    snapshot.save_snapshot(path, networks=dict(G=spec), G=G, G_ema=G, progress=dict(cur_nimg=4), rng=rng)
    with pytest.raises(snapshot.SnapshotError, match="rng.numpy.key"):
        snapshot.load_snapshot(path)


def test_dataset_options_of_a_newer_version_are_dropped_and_a_bad_path_named(tmp_path, capsys):
    spec = dict(class_name="training.networks_fastgan.Generator", z_dim=8, c_dim=0, w_dim=8, img_resolution=32,
                img_channels=3, ngf=4, lite=True)
    G = snapshot.build_network(spec)
    path = str(tmp_path / "s.pt")
    for kwargs, fragment in ((dict(path="data.zip", future_option=3), None), (dict(path=["a", "b"]), "path is")):
        config = dict(training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", **kwargs))
        snapshot.save_snapshot(path, networks=dict(G=spec), G=G, G_ema=G, progress=dict(cur_nimg=4), config=config)
        data = snapshot.load_snapshot(path)
        if fragment is None:
            assert snapshot.dataset_kwargs_from_snapshot(data, path) == dict(
                class_name="training.dataset.ImageFolderDataset", path="data.zip")
            assert "future_option" in capsys.readouterr().err
        else:
            with pytest.raises(snapshot.SnapshotError, match=fragment):
                snapshot.dataset_kwargs_from_snapshot(data, path)


def test_float_tiffs_in_0_1_are_scaled_and_other_ranges_refused(tmp_path):
    from training.dataset import ImageFolderDataset

    src = tmp_path / "src"
    src.mkdir()
    values = np.random.RandomState(0).rand(16, 16).astype(np.float32)
    PIL.Image.fromarray(values, mode="F").save(src / "a.tif")
    proc = _run(["dataset_tool.py", f"--source={src}", f"--dest={tmp_path / 'ok.zip'}"])
    assert proc.returncode == 0, proc.stderr
    pixels = ImageFolderDataset(str(tmp_path / "ok.zip"))[0][0]
    np.testing.assert_array_equal(pixels[0], np.round(values * 255).astype(np.uint8))
    assert ImageFolderDataset(str(src))[0][0].max() > 200  # the loader reads raw float TIFFs alike
    PIL.Image.fromarray(values * 8 - 5, mode="F").save(src / "a.tif")
    proc = _run(["dataset_tool.py", f"--source={src}", f"--dest={tmp_path / 'bad.zip'}"])
    assert proc.returncode == 1 and "neither [0, 1] nor [0, 255]" in proc.stderr


def test_outputs_inside_the_source_folder_are_refused(tmp_path):
    src = _images(tmp_path / "src", num=3)
    proc = _run(["dataset_tool.py", f"--source={src}", f"--dest={tmp_path / 'src' / 'out'}"])
    _one_error_line(proc.stderr, "is inside --source")
    result = _train(_train_args(tmp_path / "src" / "runs", src))
    _one_error_line(result.output, "'--outdir'", "is inside --data")


def test_a_symlinked_metric_file_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.symlink(target, run_dir / "metric-fid2k_full.jsonl")
    result = dict(metric="fid2k_full", results=dict(fid2k_full=1.0), total_time=1, total_time_str="1s", num_gpus=1)
    with pytest.raises(metric_main.MetricWriteError, match="symbolic link"):
        metric_main.report_metric(result, run_dir=str(run_dir), snapshot_pkl="x.pt")
    assert target.read_text() == "precious\n"


def test_a_run_killed_before_its_first_snapshot_is_cleaned_up_by_the_next(tmp_path):
    data = _images(tmp_path / "data")
    outdir = tmp_path / "runs"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = outdir / "00000-killed"
    run.mkdir(parents=True)
    (run / "log.txt").write_text("started\n")
    (run / train.OWNER_FILE).write_text(json.dumps(dict(host=__import__("socket").gethostname(), pid=dead.pid)))
    temp = run / f".resume-state.pt.{dead.pid}.abc.tmp"
    temp.write_bytes(b"half")
    alive = outdir / "00001-alive"
    alive.mkdir()
    (alive / train.OWNER_FILE).write_text(json.dumps(dict(host=__import__("socket").gethostname(), pid=os.getpid())))
    result = _train(_train_args(outdir, data))
    assert result.exit_code == 0, result.output
    assert not run.exists() and alive.exists()
    assert "killed before its first snapshot" in result.output


def test_out_of_memory_during_training_is_one_line(tmp_path, capsys):
    class Loop:
        TrainingInterrupted = NonFiniteLossError = DiskFullError = type("Never", (Exception,), {})

        @staticmethod
        def training_loop(**kwargs):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    status = train.run_training(Loop, dict(run_dir=str(tmp_path)), 0, torch.device("cpu"))
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "out of memory" in err and "--batch-gpu" in err


@pytest.mark.parametrize("cfg,loss", [("fastgan_lite", "projected"), ("fastgan", "stylegan2"),
                                      ("stylegan2", "projected"), ("stylegan2", "stylegan2")])
def test_the_memory_estimate_is_computed_for_every_configuration(tmp_path, cfg, loss):
    """The estimate runs on the meta device; an op without a meta kernel would silently skip it, so check that it
    yields numbers for each generator and discriminator, and that they scale with the batch."""
    data = _images(tmp_path / "data", num=4)
    parts = {}
    for batch in (4, 8):
        sg2_nets = cfg == "stylegan2" or loss == "stylegan2"
        opts, given = train.script_options(cfg=cfg, loss=loss, data=data, batch=batch, kimg=1,
                                           ngf=8 if cfg != "stylegan2" else None, cbase=512 if sg2_nets else None,
                                           cmax=32 if sg2_nets else None,
                                           feat_res=32 if loss == "projected" else None)
        c = train.build_config(opts, given, world_size=1)
        _, common = train.validate_and_describe(c, opts)
        parts[batch] = train.check_memory_estimate(c, common, *c.pop("_probes"), use_cuda=False, given=given)
    assert parts[4]["weights"] > 0 and parts[4]["activations"] > 0
    assert parts[8]["activations"] == 2 * parts[4]["activations"] and parts[8]["weights"] == parts[4]["weights"]


def test_a_snapshot_whose_D_config_does_not_fit_its_weights_is_refused_before_building(tmp_path):
    """The projected D is built on the meta device to compare shapes first, like the generator (its BatchNorm
    folding skips its numerical check there)."""
    spec = dict(class_name="projector_plugin.ProjectedDiscriminator", feat_res=32, c_dim=0, img_resolution=32,
                img_channels=3, pretrained=False, layout="official")
    D = snapshot.build_network(spec)
    G = snapshot.build_network(dict(class_name="training.networks_fastgan.Generator", z_dim=8, c_dim=0, w_dim=8,
                                    img_resolution=32, img_channels=3, ngf=4, lite=True))
    path = str(tmp_path / "crafted.pt")
    # proj_width 64 -> 8192: the CSM/mini-D widths follow it (a network of several GB).
    snapshot.save_snapshot(path, networks=dict(G=dict(class_name="training.networks_fastgan.Generator", z_dim=8,
                                                      c_dim=0, w_dim=8, img_resolution=32, img_channels=3, ngf=4,
                                                      lite=True), D=dict(spec, proj_width=8192)),
                           G=G, G_ema=G, D=D, progress=dict(cur_nimg=4))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(snapshot.SnapshotError, match="D weights do not fit the network its config describes"):
        snapshot.load_discriminator(path)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < 200e6
