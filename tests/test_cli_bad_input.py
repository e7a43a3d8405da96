"""train.py on bad input: every failure is one clear line naming the option or file, a non-zero exit status,
and nothing left behind (no run directory without a snapshot). Interruptions and a full disk map to their own
exit statuses. Also: crafted or damaged snapshots fed to every CLI that reads one (gen_images.py, gen_video.py,
calc_metrics.py) never run code and are refused in one line."""

import errno
import glob
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import train
from torch_utils import util
from training import cli_common
from training import training_loop as tl
from training.dataset import DatasetError

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _png_bytes(seed, res=32):
    buf = io.BytesIO()
    PIL.Image.fromarray(np.random.RandomState(seed).randint(0, 256, (res, res, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    good = root / "good.zip"
    with zipfile.ZipFile(good, "w") as z:
        for i in range(4):
            z.writestr(f"00000/img{i:08d}.png", _png_bytes(i))
    bad = root / "truncated.zip"
    with zipfile.ZipFile(bad, "w") as z:
        for i in range(4):
            blob = _png_bytes(i)
            z.writestr(f"00000/img{i:08d}.png", blob[: len(blob) // 2] if i == 2 else blob)  # header intact
    return dict(good=str(good), truncated=str(bad))


def _args(outdir, dataset, extra=()):
    """The cheapest real configuration: FastGAN-lite with the StyleGAN2 baseline D (no pretrained backbone)."""
    return [f"--outdir={outdir}", "--cfg=fastgan_lite", "--loss=stylegan2", f"--data={dataset}", "--ngf=4",
            "--cbase=256", "--cmax=16", "--metrics=none", "--workers=0", "--grid=2x2", "--seed=1", "--device=cpu",
            "--batch=4", "--kimg=0.004", "--tick=0.004", "--snap=1"] + list(extra)


def _invoke(args):
    return CliRunner().invoke(train.main, args)


def _error_lines(output):
    return [line for line in output.splitlines() if line.startswith("Error")]


def _assert_option_error(result, option, fragment):
    assert result.exit_code == 2, result.output
    (line,) = _error_lines(result.output)
    assert f"'{option}'" in line and fragment in line, line
    assert "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# Numbers that cannot be meant.


@pytest.mark.parametrize("arg,option,fragment", [
    ("--kimg=inf", "--kimg", "not a finite number"),
    ("--kimg=nan", "--kimg", "not a finite number"),
    ("--kimg=-2", "--kimg", "must be positive"),
    ("--tick=inf", "--tick", "not a finite number"),
    ("--glr=inf", "--glr", "not a finite number"),
    ("--glr=0", "--glr", "must be positive"),
    ("--dlr=inf", "--dlr", "not a finite number"),
    ("--dlr=nan", "--dlr", "not a finite number"),
    ("--ema-kimg=nan", "--ema-kimg", "not a finite number"),
    ("--ema-kimg=inf", "--ema-kimg", "not a finite number"),
    ("--ema-kimg=-1", "--ema-kimg", "must be >= 0"),
    ("--ema-rampup=nan", "--ema-rampup", "not a finite number"),
    ("--r1-gamma=inf", "--r1-gamma", "not a finite number"),
    ("--r1-gamma=-0.5", "--r1-gamma", "must be >= 0"),
    ("--keep=-1", "--keep", "-1"),
])
def test_non_finite_or_negative_numbers_are_rejected(tmp_path, data, arg, option, fragment):
    outdir = tmp_path / "out"
    _assert_option_error(_invoke(_args(outdir, data["good"], [arg])), option, fragment)
    assert not outdir.exists()


def test_keep_reaches_the_training_loop(tmp_path, data):
    result = _invoke(_args(tmp_path / "out", data["good"], ["--keep=3", "--dry-run"]))
    assert result.exit_code == 0, result.output
    text = result.output
    config = json.loads(text[text.index("{"): text.index("\n}\n") + 2])
    assert config["snapshot_keep"] == 3
    result = _invoke(_args(tmp_path / "out", data["good"], ["--dry-run"]))
    assert '"snapshot_keep": 0' in result.output  # default: keep every snapshot


# ---------------------------------------------------------------------------------------------
# Paths.


def test_empty_outdir(tmp_path, data):
    _assert_option_error(_invoke(_args("", data["good"])), "--outdir", "is empty")


def test_outdir_that_is_a_file_or_under_a_file(tmp_path, data):
    a_file = tmp_path / "runs"
    a_file.write_text("not a folder")
    _assert_option_error(_invoke(_args(a_file, data["good"])), "--outdir", "is a file, not a directory")
    _assert_option_error(_invoke(_args(a_file / "sub", data["good"], ["--dry-run"])), "--outdir", "cannot be created")
    assert a_file.read_text() == "not a folder" and sorted(os.listdir(tmp_path)) == ["runs"]


def test_outdir_without_write_permission(tmp_path, data, monkeypatch):
    # Tests may run as root, for whom every folder is writable: stand in for a read-only folder.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access

    def access(path, mode, **kwargs):
        return False if os.path.abspath(path) == str(locked) else real_access(path, mode, **kwargs)

    monkeypatch.setattr(cli_common.os, "access", access)
    _assert_option_error(_invoke(_args(locked / "runs", data["good"])), "--outdir", "is not writable")
    assert os.listdir(locked) == []


@pytest.mark.parametrize("desc", ["../escape", "a/b", "..", "x\\..\\y"])
def test_desc_cannot_leave_the_outdir(tmp_path, data, desc):
    outdir = tmp_path / "out"
    _assert_option_error(_invoke(_args(outdir, data["good"], [f"--desc={desc}"])), "--desc", "path separator")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# --backbone-weights: checked before training, never unpickled as code.


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # creating the marker file proves that unpickling ran code


def _projected_args(outdir, dataset, weights):
    return [f"--outdir={outdir}", "--cfg=fastgan_lite", f"--data={dataset}", "--batch=4", "--ngf=4", "--feat-res=32",
            "--metrics=none", f"--backbone-weights={weights}", "--dry-run"]


def test_backbone_weights_that_are_not_a_state_dict_are_rejected(tmp_path, data):
    marker = tmp_path / "code-ran"
    cases = []
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    cases.append((text, "is not a weights file written by torch.save"))
    code = tmp_path / "evil.pt"
    torch.save({"conv.weight": torch.zeros(1), "payload": _RunsCode(str(marker))}, code)
    cases.append((code, "holds pickled objects other than tensors such as io.open"))
    plain_pickle = tmp_path / "weights.pkl"
    with open(plain_pickle, "wb") as f:
        pickle.dump({"conv.weight": np.zeros(3)}, f)
    cases.append((plain_pickle, "holds pickled objects other than tensors"))
    not_tensors = tmp_path / "numbers.pt"
    torch.save({"lr": 0.1, "epochs": 3}, not_tensors)
    cases.append((not_tensors, "does not contain a state dict of tensors"))
    wrong_net = tmp_path / "other_net.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong_net)
    cases.append((wrong_net, "does not fit backbone 'tf_efficientnet_lite0'"))
    a_zip = tmp_path / "images.zip"  # a zip, but not one torch.save wrote
    with zipfile.ZipFile(a_zip, "w") as z:
        z.writestr("0.png", _png_bytes(0))
    cases.append((a_zip, "is not a weights file written by torch.save"))
    cases.append((tmp_path, "is a directory, not a weights file"))
    cases.append((tmp_path / "missing.pt", "does not exist"))
    for path, fragment in cases:
        outdir = tmp_path / "out"
        result = _invoke(_projected_args(outdir, data["good"], path))
        _assert_option_error(result, "--backbone-weights", fragment)
        assert str(path) in result.output
        assert not outdir.exists()
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Failures during training.


@pytest.mark.parametrize("workers", [0, 1])
def test_truncated_image_in_the_dataset_zip(tmp_path, data, workers):
    outdir = tmp_path / "runs"
    result = _invoke(_args(outdir, data["truncated"], [f"--workers={workers}"]))
    assert result.exit_code == 1, result.output
    (line,) = _error_lines(result.output)
    assert line.startswith(f"Error: --data: {data['truncated']}:00000/img00000002.png: cannot decode image"), line
    assert "Traceback" not in result.output
    assert not outdir.exists()  # neither the run directory nor the --outdir this run created


def _fake_loop(behaviour):
    """A stand-in for training_loop.training_loop that writes `files` into the run dir, then raises."""

    def fake(run_dir=".", snapshot_keep=0, **kwargs):
        for name in behaviour.get("files", []):
            with open(os.path.join(run_dir, name), "wb") as f:
                f.write(b"x")
        raise behaviour["error"](run_dir)

    return fake


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_setting_up_leaves_nothing_and_exits_128_plus_it(tmp_path, data, monkeypatch, sig):
    """Before the training loop runs its own handlers: one 'Stopped' line, 128+signal, no run dir, no --outdir."""
    outdir = tmp_path / "runs"
    real = util.atomic_write

    def signal_while_writing(path, write, **kwargs):  # the signal arrives while training_options.json is written
        os.kill(os.getpid(), sig)
        return real(path, write, **kwargs)

    monkeypatch.setattr(util, "atomic_write", signal_while_writing)
    monkeypatch.setattr(tl, "training_loop", _fake_loop(dict(error=lambda run_dir: AssertionError("never called"))))
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    result = _invoke(_args(outdir, data["good"]))
    assert result.exit_code == 128 + sig, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith(("Stopped", "Error"))]
    assert line.startswith(f"Stopped: interrupted by {signal.Signals(sig).name} outside the training loop"), line
    assert "Traceback" not in result.output and not outdir.exists()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_signal_between_the_steps_of_a_loop_without_handlers(tmp_path, data, monkeypatch):
    """A training loop that installs no handlers of its own (e.g. a stand-in) is still stopped cleanly."""
    outdir = tmp_path / "runs"

    def fake(run_dir=".", **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted by the handler
        raise AssertionError("not interrupted")

    monkeypatch.setattr(tl, "training_loop", fake)
    result = _invoke(_args(outdir, data["good"]))
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    assert [ln for ln in result.output.splitlines() if ln.startswith("Stopped")] == [
        "Stopped: interrupted by SIGTERM outside the training loop (while setting up or shutting down the run); "
        "nothing was saved by the interruption"]
    assert not outdir.exists()


@pytest.mark.parametrize("files,kept", [([], False), (["network-snapshot-000000.004.pt"], True),
                                        (["resume-state.pt"], True)])
def test_run_dir_is_removed_only_when_no_snapshot_was_written(tmp_path, data, monkeypatch, files, kept):
    outdir = tmp_path / "runs"
    outdir.mkdir()
    (outdir / "keep-me.txt").write_text("user file")
    error = lambda run_dir: DatasetError(f"{data['good']}:00000/img00000001.png: cannot decode image (broken)")
    monkeypatch.setattr(tl, "training_loop", _fake_loop(dict(files=files, error=error)))
    result = _invoke(_args(outdir, data["good"]))
    assert result.exit_code == 1, result.output
    assert _error_lines(result.output) == [f"Error: --data: {data['good']}:00000/img00000001.png: cannot decode "
                                           f"image (broken)"]
    runs = glob.glob(str(outdir / "00000-*"))
    assert len(runs) == (1 if kept else 0)
    if kept:
        assert sorted(os.listdir(runs[0])) == sorted(files + [".run-owner", "log.txt", "training_options.json"])
    assert (outdir / "keep-me.txt").read_text() == "user file"


def test_a_bug_still_shows_its_traceback_but_leaves_no_empty_run(tmp_path, data, monkeypatch):
    outdir = tmp_path / "runs"
    monkeypatch.setattr(tl, "training_loop", _fake_loop(dict(error=lambda run_dir: ZeroDivisionError("bug"))))
    result = CliRunner().invoke(train.main, _args(outdir, data["good"]))
    assert isinstance(result.exception, ZeroDivisionError)
    assert not outdir.exists()


def test_disk_full_is_one_line_and_exit_status_1(tmp_path, data, monkeypatch):
    outdir = tmp_path / "runs"

    def full(run_dir):
        return util.DiskFullError(os.path.join(run_dir, "network-snapshot-000000.004.pt"))

    monkeypatch.setattr(tl, "training_loop", _fake_loop(dict(files=["resume-state.pt"], error=full)))
    result = _invoke(_args(outdir, data["good"]))
    assert result.exit_code == 1, result.output
    (run_dir,) = glob.glob(str(outdir / "00000-*"))
    (line,) = _error_lines(result.output)
    assert line == f"Error: no space left on device at {os.path.join(run_dir, 'network-snapshot-000000.004.pt')}"


@pytest.mark.parametrize("full_at", ["training_options.json", ".run-owner"])
def test_disk_full_writing_the_options_leaves_nothing(tmp_path, data, monkeypatch, full_at):
    outdir = tmp_path / "runs"
    real = util.atomic_write

    def no_space(path, write, **kwargs):
        if os.path.basename(path) == full_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write, **kwargs)

    monkeypatch.setattr(util, "atomic_write", no_space)
    result = _invoke(_args(outdir, data["good"]))
    assert result.exit_code == 1, result.output
    (line,) = _error_lines(result.output)
    if full_at == ".run-owner":
        assert line.startswith(f"Error: --outdir: cannot create a run directory under '{outdir}': no space left"), line
    else:
        assert line.startswith("Error: no space left on device at ") and line.endswith("training_options.json"), line
    assert not outdir.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_training_exits_with_128_plus_the_signal(tmp_path, data, monkeypatch, sig):
    outdir = tmp_path / "runs"

    def interrupted(run_dir):
        return tl.TrainingInterrupted(sig, f"stopped by {signal.Signals(sig).name}: saved the resume state to "
                                           f"'{run_dir}/resume-state.pt'")

    monkeypatch.setattr(tl, "training_loop", _fake_loop(dict(files=["resume-state.pt"], error=interrupted)))
    result = _invoke(_args(outdir, data["good"]))
    assert result.exit_code == 128 + sig, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("Stopped")]
    assert "saved the resume state" in line
    assert len(glob.glob(str(outdir / "00000-*" / "resume-state.pt"))) == 1


def _wait_for_first_snapshot(proc, outdir, timeout=300):
    """Block until the run under `outdir` has written its first history snapshot; the process must still run."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if glob.glob(str(outdir / "00000-*" / "network-snapshot-*.pt")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()


def _sigterm_after_first_snapshot(cmd, outdir, before_signal=lambda proc: None):
    """Start `cmd`, SIGTERM it once its run has a snapshot -> (returncode, stdout + stderr, before_signal(proc))."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_first_snapshot(proc, outdir)
        seen = before_signal(proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out + err, seen


def test_sigterm_on_a_real_run_saves_and_exits_143_with_the_plugin_notes_logged(tmp_path, data):
    """The real script: SIGTERM mid-run -> resume file, one 'Stopped' line, exit 128+15; logging is configured, so
    the projector plugin's note on where its backbone weights came from is visible."""
    outdir = tmp_path / "runs"
    cmd = [sys.executable, os.path.join(REPO, "train.py"), f"--outdir={outdir}", "--cfg=fastgan_lite",
           f"--data={data['good']}", "--batch=4", "--ngf=4", "--feat-res=32", "--metrics=none", "--workers=0",
           "--grid=2x2", "--kimg=10", "--tick=0.004", "--snap=1", "--img-snap=1000", "--device=cpu"]
    returncode, text, _ = _sigterm_after_first_snapshot(cmd, outdir)
    # (while training, the run's log.txt tee carries stderr to stdout too)
    assert returncode == 128 + signal.SIGTERM, text[-4000:]
    assert "projector_plugin:" in text and "weights from" in text, text[-2000:]
    stopped = [ln for ln in text.splitlines() if ln.startswith("Stopped: ")]
    assert len(stopped) == 1 and "Traceback" not in text, text[-2000:]
    (run_dir,) = glob.glob(str(outdir / "00000-*"))
    assert os.path.isfile(os.path.join(run_dir, "resume-state.pt"))
    assert not [n for n in os.listdir(run_dir) if n.endswith(".tmp")]  # no half-written snapshot left behind
    with open(os.path.join(run_dir, "log.txt")) as f:
        log = f.read()
    assert "projector_plugin:" in log and stopped[0] in log  # notes and the stop line are in the run's log too


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_resume_removes_stale_temp_files_in_every_run_dir(tmp_path):
    outdir = tmp_path / "runs"
    dead = _dead_pid()
    elsewhere = tmp_path / "other-outdir" / "00007-old"
    stale = [outdir / "00000-a" / f".resume-state.pt.{dead}.x1.tmp",
             outdir / "00003-b" / f".network-snapshot-000000.004.pt.{dead}.x2.tmp",
             elsewhere / f".resume-state.pt.{dead}.x3.tmp"]
    live = outdir / "00003-b" / f".resume-state.pt.{os.getpid()}.x4.tmp"  # a writer that is still running
    unrelated = outdir / "00003-b" / ".notes.txt.tmp"
    for path in stale + [live, unrelated]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PK")
    removed = train.remove_stale_writes(str(outdir), str(elsewhere / "resume-state.pt"))
    assert sorted(removed) == sorted(str(p) for p in stale)
    assert not any(p.exists() for p in stale) and live.exists() and unrelated.exists()
    assert train.remove_stale_writes(str(tmp_path / "missing")) == []


def test_sigterm_to_the_launcher_of_two_processes_is_forwarded_and_waited_for(tmp_path, data):
    """--gpus=2: SIGTERM sent to the launcher only reaches both training processes; they stop at the same step,
    rank 0 saves the resume state, and the launcher exits 128+15 after them (nothing keeps running)."""
    import psutil

    outdir = tmp_path / "runs"
    cmd = [sys.executable, os.path.join(REPO, "train.py")] + _args(outdir, data["good"], ["--gpus=2", "--kimg=10",
                                                                                          "--img-snap=1000"])
    returncode, text, children = _sigterm_after_first_snapshot(
        cmd, outdir, lambda proc: [c for c in psutil.Process(proc.pid).children() if "python" in c.name().lower()])
    assert returncode == 128 + signal.SIGTERM, text[-4000:]
    assert "SIGTERM: asked the 2 training processes to stop" in text, text[-2000:]
    stopped = [ln for ln in text.splitlines() if ln.startswith("Stopped: ")]
    assert len(stopped) == 1 and "Interrupted by SIGTERM" in stopped[0] and "Traceback" not in text, text[-2000:]
    (run_dir,) = glob.glob(str(outdir / "00000-*"))
    state = os.path.join(run_dir, "resume-state.pt")
    from training import snapshot

    assert snapshot.load_snapshot(state)["progress"]["cur_nimg"] > 0
    assert not [n for n in os.listdir(run_dir) if n.endswith(".tmp")]
    assert len(children) >= 2 and not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


# ---------------------------------------------------------------------------------------------
# Crafted and damaged snapshots, fed to every CLI that reads one.


def _crafted_snapshot(path, marker, where="G"):
    """A file that loads fine with torch.load(weights_only=True), carries a valid checksum (anyone can compute
    one), and names os.system with a command that creates `marker`, as the G config or as the dataset."""
    from training import snapshot

    evil = dict(class_name="os.system", command=f"touch {marker}")
    G = dict(class_name="training.networks_fastgan.Generator", z_dim=8, c_dim=0, w_dim=8, img_resolution=32,
             img_channels=3, ngf=4, lite=True)
    data = dict(format=snapshot.FORMAT, version=snapshot.VERSION, kind="snapshot",
                networks=dict(G=evil if where == "G" else G), G={}, G_ema={}, progress=dict(cur_nimg=4),
                config=dict(training_set_kwargs=evil if where == "dataset" else
                            dict(class_name="training.dataset.ImageFolderDataset", path=str(path))))
    data["checksum"] = snapshot.content_digest(data)
    torch.save(data, path)
    assert torch.load(path, weights_only=True)["networks"]
    return str(path)


def _reading_clis(tmp_path, network, extra=()):
    import calc_metrics
    import gen_images
    import gen_video

    return [("gen_images", gen_images.main, [f"--network={network}", "--seeds=0-1", f"--outdir={tmp_path / 'o'}"]),
            ("gen_video", gen_video.main, [f"--network={network}", "--seeds=0-1", f"--output={tmp_path / 'v.gif'}"]),
            ("calc_metrics", calc_metrics.main, [f"--network={network}", "--metrics=fid2_full", "--device=cpu",
                                                 f"--data={tmp_path}", f"--run-dir={tmp_path / 'r'}"])]


@pytest.mark.parametrize("allow", [[], ["--allow-class=os.system"]], ids=["plain", "allowed-by-name"])
@pytest.mark.parametrize("where", ["G", "dataset"])
def test_a_snapshot_naming_os_system_never_runs_it(tmp_path, where, allow):
    marker = tmp_path / "MARKER"
    path = _crafted_snapshot(tmp_path / "network-snapshot-000000.004.pt", marker, where)
    ran = []
    for name, main, args in _reading_clis(tmp_path, path):
        if where == "dataset" and name != "calc_metrics":
            continue  # only calc_metrics reads the snapshot's dataset
        ran.append(name)
        result = CliRunner().invoke(main, args + allow)
        assert result.exit_code in (1, 2), (name, result.output)
        (line,) = _error_lines(result.output)
        assert path in line and "os.system" in line, (name, line)
        assert ("not a class" in line) if allow else ("--allow-class=os.system" in line), (name, line)
        assert "Traceback" not in result.output and not marker.exists(), name
    assert ran and sorted(os.listdir(tmp_path)) == ["network-snapshot-000000.004.pt"]  # no output of any kind


def test_damaged_or_misconfigured_snapshots_are_one_line_in_every_cli(tmp_path):
    from training import snapshot

    spec = dict(class_name="training.networks_fastgan.Generator", z_dim=8, c_dim=0, w_dim=8, img_resolution=32,
                img_channels=3, ngf=4, lite=True)
    G = snapshot.build_network(spec)
    good = tmp_path / "network-snapshot-000000.004.pt"
    snapshot.save_snapshot(str(good), networks=dict(G=spec), G=G, G_ema=G, progress=dict(cur_nimg=4))
    blob = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:  # flip 64 bytes in the middle of the largest tensor record
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = np.frombuffer(bytes(blob[info.header_offset + 26: info.header_offset + 30]), np.uint16)
    offset = info.header_offset + 30 + int(name_len) + int(extra_len) + info.file_size // 2 - 32
    blob[offset:offset + 64] = bytes(b ^ 0xFF for b in blob[offset:offset + 64])
    damaged = tmp_path / "network-snapshot-000000.008.pt"
    damaged.write_bytes(bytes(blob))
    misconfigured = tmp_path / "network-snapshot-000000.012.pt"  # a config the class rejects
    snapshot.save_snapshot(str(misconfigured), networks=dict(G=dict(spec, bogus=1)), G=G, G_ema=G)
    for path, fragment in ((damaged, "is damaged (checksum mismatch)"),
                           (misconfigured, "cannot build training.networks_fastgan.Generator from the stored config")):
        for name, main, args in _reading_clis(tmp_path, path):
            result = CliRunner().invoke(main, args)
            assert result.exit_code in (1, 2), (name, result.output)
            (line,) = _error_lines(result.output)
            assert str(path) in line and fragment in line, (name, line)
            assert "Traceback" not in result.output
    assert not any((tmp_path / n).exists() for n in ("o", "v.gif", "r"))


def test_calc_metrics_disk_full_prints_the_value_and_leaves_no_empty_run_dir(tmp_path, monkeypatch):
    import calc_metrics
    from metrics import metric_main

    result = dict(metric="fid2_full", results=dict(fid2_full=12.3456), total_time=1.0, total_time_str="1s",
                  num_gpus=1)
    monkeypatch.setattr(metric_main, "calc_metrics", lambda names, **kwargs: [dict(result)])
    monkeypatch.setattr(metric_main, "_write_all", lambda fd, data: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    run_dir = tmp_path / "run"
    res = CliRunner().invoke(calc_metrics.main, ["--metrics=fid2_full", f"--data={tmp_path}", f"--data2={tmp_path}",
                                                 f"--run-dir={run_dir}", "--device=cpu", "--quiet"])
    assert res.exit_code == 1, res.output
    assert "12.3456" in res.output
    assert _error_lines(res.output) == [f"Error: no space left on device at {run_dir / 'metric-fid2_full.jsonl'}"]
    assert not run_dir.exists()
