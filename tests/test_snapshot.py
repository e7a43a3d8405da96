"""training.snapshot and torch_utils.snapshot_naming: file layout, allow-listed classes, checksums, lean
discriminators, names, finding/resolving/pruning snapshots, stale temp files."""

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from torch_utils import snapshot_naming
from training import snapshot

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LINEAR = ["torch.nn.Linear"]  # the toy network of these tests is not a toolkit class: allowed explicitly


def _tiny_net():
    return {"class_name": "torch.nn.Linear", "in_features": 3, "out_features": 2}


def _save_tiny(path, seed=0, nimg=1000, optimizers=True):
    torch.manual_seed(seed)
    G = snapshot.build_network(_tiny_net(), LINEAR)
    G_ema = snapshot.build_network(_tiny_net(), LINEAR)
    opt = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99))
    G(torch.randn(4, 3)).square().sum().backward()
    opt.step()

    class FakeLoss:
        def __init__(self):
            self.pl_mean = torch.tensor(1.25)
            self.name = "not a tensor"

    opts = dict(G_opt=opt, D_opt=opt) if optimizers else {}
    snapshot.save_snapshot(path, networks={"G": _tiny_net(), "D": _tiny_net()}, G=G, G_ema=G_ema, D=G,
                           progress=dict(cur_nimg=nimg, cur_tick=1, batch_idx=3), **opts,
                           loss=FakeLoss(), config={"batch_size": 4, "G_kwargs": _tiny_net()})
    return G, G_ema, opt


def _fastgan_spec():
    return dict(class_name="training.networks_fastgan.Generator", z_dim=8, c_dim=0, w_dim=8, img_resolution=32,
                img_channels=3, ngf=4, lite=True)


def _save_fastgan(path, networks=None, **kwargs):
    G = snapshot.build_network(_fastgan_spec())
    snapshot.save_snapshot(str(path), networks=networks or dict(G=_fastgan_spec()), G=G, G_ema=G,
                           progress=dict(cur_nimg=4), **kwargs)
    return G


# ---------------------------------------------------------------------------------------------
# Layout and round trips.


def test_snapshot_roundtrip_weights_only(tmp_path):
    path = str(tmp_path / "network-snapshot-000001.pt")
    G, G_ema, opt = _save_tiny(path)
    data = torch.load(path, weights_only=True)  # no pickled code inside
    assert data["format"] == snapshot.FORMAT and data["version"] == 2 and data["kind"] == "resume"
    assert data["checksum"].startswith("sha256:") and data["checksum"] == snapshot.content_digest(data)
    assert data["progress"] == dict(cur_nimg=1000, cur_tick=1, batch_idx=3)
    assert set(data["loss_state"]) == {"pl_mean"} and float(data["loss_state"]["pl_mean"]) == 1.25
    assert data["config"]["batch_size"] == 4
    restored = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99))
    restored.load_state_dict(data["G_opt"])
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    G2 = snapshot.load_generator(path, which="G", extra_classes=LINEAR)
    G2_ema = snapshot.load_generator(path, extra_classes=LINEAR)  # G_ema by default
    assert torch.equal(G2.weight, G.weight) and torch.equal(G2_ema.weight, G_ema.weight)
    assert not G2_ema.training and not any(p.requires_grad for p in G2_ema.parameters())
    # Without optimizers: a lean history snapshot.
    lean = str(tmp_path / "network-snapshot-000002.pt")
    _save_tiny(lean, optimizers=False)
    data = snapshot.load_snapshot(lean, extra_classes=LINEAR)
    assert data["kind"] == "snapshot" and "G_opt" not in data and "D_opt" not in data


def test_rng_state_roundtrip(tmp_path):
    import random

    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = snapshot.capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.save(state, tmp_path / "rng.pt")
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    snapshot.restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_load_snapshot_rejects_bad_files(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(snapshot.SnapshotError, match="does not exist"):
        snapshot.load_snapshot(str(missing))
    truncated = tmp_path / "network-snapshot-000002.pt"
    _save_tiny(str(truncated))
    blob = truncated.read_bytes()
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(snapshot.SnapshotError, match="network-snapshot-000002.pt"):
        snapshot.load_snapshot(str(truncated))
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(snapshot.SnapshotError, match="not a training snapshot"):
        snapshot.load_snapshot(str(other))


def test_loss_state_cannot_set_arbitrary_attributes():
    class Loss:
        def __init__(self):
            self.pl_mean = torch.zeros([])
            self.name = "x"

    loss = Loss()
    snapshot.load_loss_state_dict(loss, {"pl_mean": torch.tensor(2.0, dtype=torch.float64), "name": torch.ones(1),
                                         "__class__": torch.ones(1), "new_attr": torch.ones(1)})
    assert loss.pl_mean.dtype == torch.float32 and float(loss.pl_mean) == 2.0
    assert loss.name == "x" and not hasattr(loss, "new_attr") and type(loss) is Loss


# ---------------------------------------------------------------------------------------------
# Security: a file must never make us build (or import) something outside the allow-list.


MALICIOUS = [
    ("os.system", dict(command="touch {marker}")),
    ("builtins.eval", dict(source="open({marker!r}, 'w').close()")),
    ("subprocess.Popen", dict(args=["touch", "{marker}"])),
    ("posix.system", dict(command="touch {marker}")),
    ("training.networks_fastgan.os.system", dict(command="touch {marker}")),  # a module's import, not its class
    ("system", dict(command="touch {marker}")),  # no dot
    ("torch.nn.Linear", dict(in_features=3, out_features=2)),  # harmless, but not allowed unless the user says so
]


def _fill(value, marker):
    if isinstance(value, str):
        return value.format(marker=marker)
    if isinstance(value, list):
        return [_fill(v, marker) for v in value]
    return value


@pytest.mark.parametrize("class_name,kwargs", MALICIOUS, ids=[m[0] for m in MALICIOUS])
def test_snapshot_naming_a_foreign_class_is_refused_before_it_runs(tmp_path, class_name, kwargs):
    marker = str(tmp_path / "MARKER")
    spec = dict(class_name=class_name, **{k: _fill(v, marker) for k, v in kwargs.items()})
    path = tmp_path / "network-snapshot-000000.004.pt"
    G = snapshot.build_network(_fastgan_spec())
    snapshot.save_snapshot(str(path), networks=dict(G=spec, D=spec), G=G, G_ema=G, progress=dict(cur_nimg=4))
    for load in (lambda: snapshot.load_generator(str(path)), lambda: snapshot.load_discriminator(str(path)),
                 lambda: snapshot.load_snapshot(str(path)), lambda: snapshot.build_network(spec, path=str(path))):
        with pytest.raises(snapshot.SnapshotError) as err:
            load()
        msg = str(err.value)
        assert str(path) in msg or "snapshot" in msg
        assert class_name in msg and "--allow-class" in msg, msg
        assert not os.path.exists(marker)
    assert "\n" not in msg


def test_allow_class_builds_what_the_user_names_only(tmp_path):
    path = tmp_path / "network-snapshot-000001.000.pt"
    _save_tiny(str(path))
    with pytest.raises(snapshot.SnapshotError, match="torch.nn.Linear.*--allow-class=torch.nn.Linear"):
        snapshot.load_generator(str(path))
    assert isinstance(snapshot.load_generator(str(path), extra_classes=["torch.nn.Linear"]), torch.nn.Linear)
    assert isinstance(snapshot.load_generator(str(path), extra_classes="torch.nn.Linear"), torch.nn.Linear)
    with pytest.raises(snapshot.SnapshotError):
        snapshot.load_generator(str(path), extra_classes=["torch.nn.Conv2d"])
    # Allowing a function by name still does not make it callable from a file: only classes are built.
    marker = tmp_path / "MARKER"
    with pytest.raises(snapshot.SnapshotError, match="not a class"):
        snapshot.build_network(dict(class_name="os.system", command=f"touch {marker}"), extra_classes=["os.system"])
    assert not marker.exists()


def test_constructor_kwargs_must_be_plain_data(tmp_path):
    spec = _fastgan_spec()
    snapshot.check_spec(spec)  # fine
    for bad in (dict(spec, ngf=torch.ones(1)), dict(spec, extra={1: 2}), dict(spec, f=print)):
        with pytest.raises(snapshot.SnapshotError, match="plain data|non-string key"):
            snapshot.check_spec(bad, "x.pt")
    with pytest.raises(snapshot.SnapshotError, match="training.networks_fastgan._private"):
        snapshot.check_class_allowed("training.networks_fastgan._private", "x.pt")


def test_dataset_kwargs_from_a_snapshot_are_allow_listed(tmp_path):
    ok = dict(config=dict(training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="d")))
    assert snapshot.dataset_kwargs_from_snapshot(ok, "x.pt")["path"] == "d"
    bad = dict(config=dict(training_set_kwargs=dict(class_name="os.system", command="touch x")))
    with pytest.raises(snapshot.SnapshotError, match="os.system"):
        snapshot.dataset_kwargs_from_snapshot(bad, "x.pt")
    # Naming it with --allow-class does not make a function a dataset class.
    with pytest.raises(snapshot.SnapshotError, match="'x.pt' names a dataset 'os.system', which is not a class"):
        snapshot.dataset_kwargs_from_snapshot(bad, "x.pt", extra_classes=["os.system"])


def test_a_config_the_class_rejects_is_a_snapshot_error_naming_the_file():
    for bad, fragment in ((dict(_fastgan_spec(), bogus=1), "unknown synthesis arguments"),
                          (dict(_fastgan_spec(), img_resolution=33), "power of two")):
        with pytest.raises(snapshot.SnapshotError) as err:
            snapshot.build_network(bad, path="x.pt")
        msg = str(err.value)
        assert msg.startswith("'x.pt': cannot build training.networks_fastgan.Generator from the stored config: ")
        assert fragment in msg and "\n" not in msg
    assert snapshot.dataset_kwargs_from_snapshot(dict(config={}), "x.pt") is None


# ---------------------------------------------------------------------------------------------
# Integrity: damaged files are refused, whatever got damaged.


def _record_offsets(path):
    """{member name: (data offset, size)} of the zip records torch.save wrote."""
    import zipfile

    out = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            f.seek(info.header_offset + 26)
            name_len, extra_len = np.frombuffer(f.read(4), np.uint16)
            out[info.filename] = (info.header_offset + 30 + int(name_len) + int(extra_len), info.file_size)
    return out


def test_flipped_bytes_are_detected_everywhere(tmp_path):
    path = tmp_path / "network-snapshot-000000.004.pt"
    _save_fastgan(path)
    blob = path.read_bytes()
    records = _record_offsets(str(path))
    tensor_records = [(off, size) for name, (off, size) in records.items() if "/data/" in name and size >= 128]
    pkl = next(v for k, v in records.items() if k.endswith("data.pkl"))
    offsets = [off + size // 2 - 32 for off, size in tensor_records[:: max(1, len(tensor_records) // 6)]]
    offsets += [pkl[0] + pkl[1] // 2, pkl[0] + 2, 0, len(blob) // 3, len(blob) - 64, len(blob) - 200]
    assert len(offsets) >= 10
    for off in offsets:
        damaged = bytearray(blob)
        damaged[off:off + 64] = bytes(b ^ 0xFF for b in damaged[off:off + 64])
        bad = tmp_path / "network-snapshot-000000.008.pt"
        bad.write_bytes(bytes(damaged))
        with pytest.raises(snapshot.SnapshotError, match="network-snapshot-000000.008.pt") as err:
            snapshot.load_generator(str(bad))
        assert "\n" not in str(err.value)
        if any(o <= off < o + s - 64 for o, s in tensor_records):
            assert "is damaged (checksum mismatch)" in str(err.value)
    assert isinstance(snapshot.load_generator(str(path)), torch.nn.Module)  # the intact file loads


def test_old_snapshots_without_checksum_load_with_one_warning(tmp_path, capsys):
    path = tmp_path / "network-snapshot-000001.pt"
    G = _save_fastgan(path)
    data = torch.load(path, weights_only=True)
    del data["checksum"], data["kind"]
    data["version"] = 1
    torch.save(data, path)
    for _ in range(2):
        G2 = snapshot.load_generator(str(path))
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G2.state_dict().values()))
    err = capsys.readouterr().err
    assert err.count("has no checksum") == 1 and str(path) in err
    data["version"] = 2  # a current file must have one
    torch.save(data, path)
    with pytest.raises(snapshot.SnapshotError, match="checksum missing"):
        snapshot.load_snapshot(str(path))


# ---------------------------------------------------------------------------------------------
# Lean discriminator: the projected D's frozen parts are rebuilt from its config.


def test_projected_D_snapshot_leaves_out_frozen_parts_and_rebuilds_identical_logits(tmp_path):
    from projector_plugin import ProjectedDiscriminator

    spec = dict(class_name="projector_plugin.ProjectedDiscriminator", feat_res=32, c_dim=0, img_resolution=32,
                img_channels=3)
    torch.manual_seed(0)
    D = ProjectedDiscriminator(**{k: v for k, v in spec.items() if k != "class_name"})
    with torch.no_grad():  # trained-looking weights, unlike a fresh D
        for p in D.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    G = snapshot.build_network(_fastgan_spec())
    path = tmp_path / "network-snapshot-000000.004.pt"
    snapshot.save_snapshot(str(path), networks=dict(G=_fastgan_spec(), D=spec), G=G, G_ema=G, D=D)
    data = snapshot.load_snapshot(str(path))
    stored = set(data["D"])
    assert stored and not any(k.startswith(("feature_network.", "projection.")) for k in stored)
    assert set(data["D_rebuilt"]["keys"]) == {k for k in D.state_dict() if k.startswith(("feature_network.",
                                                                                          "projection."))}
    trainable = {k for k, p in D.named_parameters() if p.requires_grad}
    assert trainable <= stored
    full = tmp_path / "full.pt"
    torch.save(D.state_dict(), full)
    assert os.path.getsize(path) < os.path.getsize(full)

    D2 = snapshot.load_discriminator(str(path))
    D.eval()
    img = torch.randn(2, 3, 32, 32)
    torch.manual_seed(5)
    a = D(img)
    torch.manual_seed(5)
    b = D2(img)
    assert torch.equal(a, b)

    # Frozen parts that the config does not rebuild identically (other backbone weights) are refused.
    data["D_rebuilt"]["sha256"] = "0" * 64
    with pytest.raises(snapshot.SnapshotError, match="frozen parts of D"):
        snapshot.load_state(ProjectedDiscriminator(**{k: v for k, v in spec.items() if k != "class_name"}), data,
                            "D", str(path))


# ---------------------------------------------------------------------------------------------
# Atomic writes and temp files.


def test_atomic_save_keeps_old_file_when_writer_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "network-snapshot-000001.pt")
    _save_tiny(path, seed=0)
    with open(path, "rb") as f:
        before = f.read()

    def exploding_save(obj, f):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        _save_tiny(path, seed=1)
    with open(path, "rb") as f:
        assert f.read() == before
    assert os.listdir(tmp_path) == ["network-snapshot-000001.pt"]  # no temp file left behind


def test_sigkill_during_write_leaves_previous_snapshot_and_stale_temp_is_removed(tmp_path):
    """A writer SIGKILLed in the middle of torch.save never leaves a corrupt snapshot."""
    path = tmp_path / "network-snapshot-000001.pt"
    _save_tiny(str(path), seed=0)
    before = path.read_bytes()
    child = textwrap.dedent(f"""
        import sys, time, torch
        sys.path.insert(0, {REPO!r})
        from training import snapshot
        real_save = torch.save
        def slow_save(obj, f):
            f.write(b"PK" + b"x" * 1000); f.flush()
            print("writing", flush=True)
            time.sleep(60)
        torch.save = slow_save
        lin = torch.nn.Linear(3, 2)
        snapshot.save_snapshot({str(path)!r}, networks={{}}, G=lin, G_ema=lin)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        temps = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
        assert len(temps) == 1 and str(proc.pid) in temps[0]
        assert snapshot.remove_stale_temp_files(str(tmp_path)) == []  # writer alive: keep its file
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert path.read_bytes() == before
    assert snapshot.load_snapshot(str(path), extra_classes=LINEAR)["progress"]["cur_nimg"] == 1000
    assert snapshot.find_latest(str(tmp_path)) == str(path)
    removed = snapshot.remove_stale_temp_files(str(tmp_path))
    assert len(removed) == 1 and os.listdir(tmp_path) == [path.name]


def _dead_pid():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


def test_clean_stale_temp_files_in_every_run_dir(tmp_path):
    dead = _dead_pid()
    names = [f".network-snapshot-000001.504.pt.{dead}.x.tmp", f".network-snapshot-000002.pt.{dead}.y.tmp",
             f".resume-state.pt.{dead}.z.tmp"]
    for run in ("00000-a", "00001-b", "."):
        os.makedirs(tmp_path / run, exist_ok=True)
        for name in names:
            (tmp_path / run / name).write_bytes(b"PK")
    live = tmp_path / "00001-b" / f".resume-state.pt.{os.getpid()}.w.tmp"
    live.write_bytes(b"PK")
    keep = tmp_path / "00000-a" / "network-snapshot-000001.504.pt"
    keep.write_bytes(b"x")
    other = tmp_path / "00000-a" / f".other.pt.{dead}.q.tmp"  # not ours
    other.write_bytes(b"x")
    removed = snapshot.clean_stale_temp_files(str(tmp_path))
    assert len(removed) == 9
    assert sorted(os.listdir(tmp_path / "00000-a")) == sorted([keep.name, other.name])
    assert os.listdir(tmp_path / "00001-b") == [live.name]  # a live writer's file stays
    assert snapshot.clean_stale_temp_files(str(tmp_path / "missing")) == []


# ---------------------------------------------------------------------------------------------
# Names (torch_utils.snapshot_naming): one rule, the exact image count.


def test_snapshot_names_carry_the_exact_image_count():
    assert snapshot_naming.kimg_label(1504) == "000001.504"
    assert snapshot_naming.kimg_label(4000) == "000004.000"
    assert snapshot_naming.snapshot_name(8) == "network-snapshot-000000.008.pt"
    assert snapshot_naming.snapshot_name(12345) == "network-snapshot-000012.345.pt"
    assert snapshot.snapshot_name(1504) == "network-snapshot-000001.504.pt"
    assert snapshot.kimg_label(1504) == "000001.504"
    with pytest.raises(ValueError):
        snapshot_naming.kimg_label(-1)
    for nimg in (0, 4, 999, 1000, 1504, 123456789):
        assert snapshot_naming.parse_snapshot_name(snapshot_naming.snapshot_name(nimg)) == (nimg // 1000, nimg)
    names = [snapshot_naming.snapshot_name(n) for n in (8, 1000, 999, 1504, 100000, 4)]
    assert sorted(names) == sorted(names, key=snapshot_naming.snapshot_sort_key)  # text order = training order


def test_parse_snapshot_name_reads_old_integer_names(tmp_path):
    assert snapshot.parse_snapshot_name("network-snapshot-000001.504.pt") == (1, 1504)
    assert snapshot.parse_snapshot_name(str(tmp_path / "network-snapshot-000012.pt")) == (12, None)
    for bad in ("network-snapshot-000001.5.pt", "network-snapshot-x.pt", "best-fid50k_full.json",
                ".network-snapshot-000001.504.pt.123.abc.tmp", "resume-state.pt"):
        assert snapshot.parse_snapshot_name(bad) is None, bad


def test_find_latest_prefers_newest_run_then_most_images(tmp_path):
    assert snapshot.find_latest(str(tmp_path)) is None
    assert snapshot.find_latest(str(tmp_path / "missing")) is None
    for run, kimgs in (("00000-a", [0, 8]), ("00002-b", [0, 4]), ("00001-c", [0, 12])):
        os.makedirs(tmp_path / run)
        for k in kimgs:
            (tmp_path / run / snapshot.snapshot_name(k * 1000)).write_bytes(b"x")
    (tmp_path / "00003-empty").mkdir()
    (tmp_path / "00002-b" / ".network-snapshot-000099.000.pt.1.x.tmp").write_bytes(b"x")
    assert snapshot.find_latest(str(tmp_path)) == str(tmp_path / "00002-b" / "network-snapshot-000004.000.pt")
    assert snapshot.find_latest(str(tmp_path / "00001-c")) == \
        str(tmp_path / "00001-c" / "network-snapshot-000012.000.pt")


def test_mixed_snapshot_names_are_ordered_by_images_seen_not_by_time(tmp_path):
    run = tmp_path / "00007-run"
    run.mkdir()
    # mtimes deliberately not in training order: they play no part. An old integer name counts as kimg * 1000.
    files = [("network-snapshot-000010.pt", 100), ("network-snapshot-000009.999.pt", 200),
             ("network-snapshot-000002.008.pt", 300), ("network-snapshot-000001.504.pt", 500),
             ("network-snapshot-000001.pt", 400), ("network-snapshot-000000.500.pt", 600)]
    for name, mtime in files:
        (run / name).write_bytes(b"x")
        os.utime(run / name, (mtime, mtime))
    expected = ["network-snapshot-000000.500.pt", "network-snapshot-000001.pt", "network-snapshot-000001.504.pt",
                "network-snapshot-000002.008.pt", "network-snapshot-000009.999.pt", "network-snapshot-000010.pt"]
    assert [os.path.basename(p) for p in snapshot.list_snapshots(str(run))] == expected
    os.utime(run / "network-snapshot-000001.pt", (900, 900))  # newer file, same order
    assert [os.path.basename(p) for p in snapshot.list_snapshots(str(run))] == expected
    assert snapshot.find_latest(str(tmp_path)) == str(run / "network-snapshot-000010.pt")
    (run / "network-snapshot-000010.250.pt").write_bytes(b"x")
    assert snapshot.find_latest(str(tmp_path)) == str(run / "network-snapshot-000010.250.pt")
    os.remove(run / "network-snapshot-000010.pt")
    (run / "network-snapshot-000011.pt").write_bytes(b"x")
    (run / "network-snapshot-000010.999.pt").write_bytes(b"x")  # newest file, fewer images
    assert snapshot.find_latest(str(tmp_path)) == str(run / "network-snapshot-000011.pt")


def test_resolve_resume_accepts_file_run_dir_and_latest(tmp_path):
    with pytest.raises(snapshot.SnapshotError, match="no resume-state.pt or network-snapshot"):
        snapshot.resolve_resume("latest", str(tmp_path))
    old, new = tmp_path / "00000-old", tmp_path / "00001-new"
    old.mkdir(), new.mkdir()
    (old / "resume-state.pt").write_bytes(b"x")
    (old / "network-snapshot-000000.004.pt").write_bytes(b"x")
    assert snapshot.resolve_resume("latest", str(tmp_path)) == str(old / "resume-state.pt")
    (new / "network-snapshot-000000.008.pt").write_bytes(b"x")  # newer run without a resume file
    assert snapshot.resolve_resume("latest", str(tmp_path)) == str(new / "network-snapshot-000000.008.pt")
    assert snapshot.resolve_resume(str(old), None) == str(old / "resume-state.pt")
    assert snapshot.resolve_resume(str(old / "network-snapshot-000000.004.pt")) == \
        str(old / "network-snapshot-000000.004.pt")
    with pytest.raises(snapshot.SnapshotError, match="does not exist"):
        snapshot.resolve_resume(str(tmp_path / "nope.pt"))
    (tmp_path / "00002-empty").mkdir()
    with pytest.raises(snapshot.SnapshotError, match="00002-empty"):
        snapshot.resolve_resume(str(tmp_path / "00002-empty"))


def test_prune_keeps_newest_and_best_pointers(tmp_path):
    names = [snapshot.snapshot_name(n) for n in (4, 8, 12, 16, 20)]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "resume-state.pt").write_bytes(b"x")
    (tmp_path / "best-fid50k_full.json").write_text(json.dumps(dict(snapshot_pkl=names[1])))
    assert snapshot.prune_snapshots(str(tmp_path), 0) == []
    removed = snapshot.prune_snapshots(str(tmp_path), 2)
    assert sorted(os.path.basename(p) for p in removed) == [names[0], names[2]]
    assert sorted(glob.glob(str(tmp_path / "network-snapshot-*.pt"))) == [str(tmp_path / n) for n in
                                                                         (names[1], names[3], names[4])]
    assert (tmp_path / "resume-state.pt").exists()


def test_prune_protects_by_path_not_by_name(tmp_path):
    """A resumed run's pointer may name its predecessor's snapshot (../00000-a/x.pt): that does not protect the
    same-named snapshot of this run."""
    run = tmp_path / "00001-b"
    run.mkdir()
    names = [snapshot.snapshot_name(n) for n in (4, 8, 12)]
    for name in names:
        (run / name).write_bytes(b"x")
    (run / "best-fid50k_full.json").write_text(json.dumps(dict(snapshot_pkl="../00000-a/" + names[0])))
    removed = snapshot.prune_snapshots(str(run), 1)
    assert sorted(os.path.basename(p) for p in removed) == names[:2]


def test_projected_D_of_the_earlier_strided_separable_design_still_loads(tmp_path):
    """Snapshots recorded `separable=True` when that meant strided depthwise blocks: they load with that design."""
    from projector_plugin import ProjectedDiscriminator

    spec = dict(class_name="projector_plugin.ProjectedDiscriminator", feat_res=32, c_dim=0, img_resolution=32,
                img_channels=3, separable=True, pretrained=False)
    torch.manual_seed(0)
    old = ProjectedDiscriminator(**{**{k: v for k, v in spec.items() if k != "class_name"}, "separable": "strided"})
    path = tmp_path / "network-snapshot-000000.004.pt"
    G = snapshot.build_network(_fastgan_spec())
    snapshot.save_snapshot(str(path), networks=dict(G=_fastgan_spec(), D=spec), G=G, G_ema=G, D=old)
    data = snapshot.load_snapshot(str(path))
    assert snapshot.legacy_d_spec(spec, data["D"]) == {**spec, "separable": "strided"}
    D = snapshot.load_discriminator(str(path))
    assert D.discs[0].main[0][0][0].stride == (2, 2)  # the strided depthwise conv, weights loaded
    assert torch.equal(D.discs[0].main[0][0][0].weight, old.discs[0].main[0][0][0].weight)
    # A D of today's separable design is left as it is; so is a config whose layout was recorded.
    new = ProjectedDiscriminator(**{k: v for k, v in spec.items() if k != "class_name"})
    assert snapshot.legacy_d_spec(spec, new.state_dict()) is spec
    recorded = {**spec, "layout": "official"}
    assert snapshot.legacy_d_spec(recorded, data["D"], recorded) is recorded


def test_projected_D_of_the_earlier_compact_layout_still_loads(tmp_path):
    """Snapshots from before CSM layouts existed recorded no `layout`: their D (compact CSM: the deepest mini-D a
    single conv on 512 channels) loads with that layout and gives the same logits."""
    from projector_plugin import ProjectedDiscriminator

    spec = dict(class_name="projector_plugin.ProjectedDiscriminator", feat_res=32, c_dim=0, img_resolution=32,
                img_channels=3, pretrained=False)
    torch.manual_seed(0)
    old = ProjectedDiscriminator(**{k: v for k, v in spec.items() if k != "class_name"}, layout="compact").eval()
    path = tmp_path / "network-snapshot-000000.004.pt"
    G = snapshot.build_network(_fastgan_spec())
    snapshot.save_snapshot(str(path), networks=dict(G=_fastgan_spec(), D=spec), G=G, G_ema=G, D=old)
    D = snapshot.load_discriminator(str(path))
    assert D.layout == "compact" and D.discs[3].main[0].in_channels == 512
    img = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    a = old(img)
    torch.manual_seed(1)
    assert torch.equal(D(img), a)
