"""Unit tests of the training-loop building blocks (fast, no training):
torch_utils.util, torch_utils.training_stats, torch_utils.distributed (single process),
training.snapshot and the sampler / loss-watch / grid helpers of training.training_loop."""

import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch

from torch_utils import distributed as dist
from torch_utils import training_stats, util
from training import snapshot
from training import training_loop as tl

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


# ---------------------------------------------------------------------------------------------
# util


def test_construct_class_by_name_builds_and_passes_kwargs():
    lin = util.construct_class_by_name(class_name="torch.nn.Linear", in_features=3, out_features=5, bias=False)
    assert isinstance(lin, torch.nn.Linear) and lin.weight.shape == (5, 3) and lin.bias is None
    assert util.get_obj_by_name("torch.optim.Adam") is torch.optim.Adam
    assert util.get_obj_by_name("os.path.join") is os.path.join


def test_get_obj_by_name_errors_name_the_object():
    with pytest.raises(ImportError, match="no_such_module_xyz.Thing"):
        util.get_obj_by_name("no_such_module_xyz.Thing")
    with pytest.raises(ImportError, match="torch.nn.NoSuchLayer"):
        util.get_obj_by_name("torch.nn.NoSuchLayer")


def test_easydict_and_parse_range_and_format_time():
    d = util.EasyDict(a=1)
    d.b = 2
    assert d == {"a": 1, "b": 2} and d.a == 1
    with pytest.raises(AttributeError):
        d.missing
    assert util.parse_range("0-3,7, 9-10") == [0, 1, 2, 3, 7, 9, 10]
    for bad in ("3-1", "a", "", "1-"):
        with pytest.raises(ValueError):
            util.parse_range(bad)
    assert util.format_time(5) == "5s"
    assert util.format_time(65) == "1m 05s"
    assert util.format_time(3 * 3600 + 61) == "3h 01m 01s"
    assert util.format_time(2 * 86400 + 3600) == "2d 01h 00m"


# ---------------------------------------------------------------------------------------------
# training_stats


@pytest.fixture
def fresh_stats():
    training_stats.reset()
    yield
    training_stats.reset()


def test_collector_mean_std_num_per_interval(fresh_stats):
    collector = training_stats.Collector(regex="Loss/.*")
    training_stats.report("Loss/a", torch.tensor([1.0, 2.0, 3.0]))
    training_stats.report("Loss/a", 4.0)
    training_stats.report("Other/b", 100.0)  # filtered out by the regex
    collector.update()
    assert collector.num("Loss/a") == 4
    assert collector.mean("Loss/a") == pytest.approx(2.5)
    assert collector.std("Loss/a") == pytest.approx(np.std([1, 2, 3, 4]))
    assert "Other/b" not in collector.as_dict()
    # The next interval only sees new reports; keep_previous keeps stale names visible.
    training_stats.report("Loss/c", torch.tensor([10.0, 20.0]))
    collector.update()
    assert collector.mean("Loss/c") == pytest.approx(15.0)
    assert collector.mean("Loss/a") == pytest.approx(2.5)
    nokeep = training_stats.Collector(regex="Loss/.*", keep_previous=False)
    training_stats.report("Loss/c", 1.0)
    nokeep.update()
    assert nokeep.num("Loss/c") == 1 and math.isnan(nokeep.mean("Loss/a"))


def test_report_returns_value_and_counts_nan(fresh_stats):
    collector = training_stats.Collector()
    x = torch.tensor([1.0, float("nan")], requires_grad=True)
    assert training_stats.report("Loss/x", x) is x
    training_stats.report0("Progress/tick", 7)
    collector.update()
    assert collector.num("Loss/x") == 2 and math.isnan(collector.mean("Loss/x"))
    assert collector["Progress/tick"] == 7


# ---------------------------------------------------------------------------------------------
# distributed helpers (single process)


def test_average_gradients_single_process_scrubs_non_finite_and_fills_missing():
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([1.0, float("nan"), float("inf")])
    dist.average_gradients([a, b])
    assert torch.equal(a.grad, torch.tensor([1.0, 0.0, 1e5]))
    assert torch.equal(b.grad, torch.zeros(2))  # missing gradient -> zeros, same layout on every rank


# ---------------------------------------------------------------------------------------------
# snapshot


def _tiny_net():
    return {"class_name": "torch.nn.Linear", "in_features": 3, "out_features": 2}


def _save_tiny(path, seed=0, nimg=1000):
    torch.manual_seed(seed)
    G = snapshot.build_network(_tiny_net())
    G_ema = snapshot.build_network(_tiny_net())
    opt = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99))
    G(torch.randn(4, 3)).square().sum().backward()
    opt.step()

    class FakeLoss:
        def __init__(self):
            self.pl_mean = torch.tensor(1.25)
            self.name = "not a tensor"

    snapshot.save_snapshot(path, networks={"G": _tiny_net(), "D": _tiny_net()}, G=G, G_ema=G_ema, D=G,
                           G_opt=opt, D_opt=opt, progress=dict(cur_nimg=nimg, cur_tick=1, batch_idx=3),
                           loss=FakeLoss(), config={"batch_size": 4, "G_kwargs": _tiny_net()})
    return G, G_ema, opt


def test_snapshot_roundtrip_weights_only(tmp_path):
    path = str(tmp_path / "network-snapshot-000001.pt")
    G, G_ema, opt = _save_tiny(path)
    data = torch.load(path, weights_only=True)  # no pickled code inside
    assert data["format"] == snapshot.FORMAT
    assert data["progress"] == dict(cur_nimg=1000, cur_tick=1, batch_idx=3)
    assert set(data["loss_state"]) == {"pl_mean"} and float(data["loss_state"]["pl_mean"]) == 1.25
    assert data["config"]["batch_size"] == 4
    restored = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99))
    restored.load_state_dict(data["G_opt"])
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    G2 = snapshot.load_generator(path, which="G")
    G2_ema = snapshot.load_generator(path)  # G_ema by default
    assert torch.equal(G2.weight, G.weight) and torch.equal(G2_ema.weight, G_ema.weight)
    assert not G2_ema.training and not any(p.requires_grad for p in G2_ema.parameters())


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


def test_atomic_save_keeps_old_file_when_writer_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "network-snapshot-000001.pt")
    _save_tiny(path, seed=0)
    before = open(path, "rb").read()

    def exploding_save(obj, f):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        _save_tiny(path, seed=1)
    assert open(path, "rb").read() == before
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
    assert snapshot.load_snapshot(str(path))["progress"]["cur_nimg"] == 1000
    assert snapshot.find_latest(str(tmp_path)) == str(path)
    removed = snapshot.remove_stale_temp_files(str(tmp_path))
    assert len(removed) == 1 and os.listdir(tmp_path) == [path.name]


def test_find_latest_prefers_newest_run_then_highest_kimg(tmp_path):
    assert snapshot.find_latest(str(tmp_path)) is None
    assert snapshot.find_latest(str(tmp_path / "missing")) is None
    for run, kimgs in (("00000-a", [0, 8]), ("00002-b", [0, 4]), ("00001-c", [0, 12])):
        os.makedirs(tmp_path / run)
        for k in kimgs:
            (tmp_path / run / snapshot.snapshot_name(k * 1000)).write_bytes(b"x")
    (tmp_path / "00003-empty").mkdir()
    (tmp_path / "00002-b" / ".network-snapshot-000099.pt.1.x.tmp").write_bytes(b"x")
    assert snapshot.find_latest(str(tmp_path)) == str(tmp_path / "00002-b" / "network-snapshot-000004.pt")
    assert snapshot.find_latest(str(tmp_path / "00001-c")) == str(tmp_path / "00001-c" / "network-snapshot-000012.pt")
    assert snapshot.snapshot_name(12345) == "network-snapshot-000012.pt"


def test_fine_snapshot_names_parse_and_temp_files(tmp_path):
    assert snapshot.snapshot_name(1504) == "network-snapshot-000001.pt"
    assert snapshot.snapshot_name(1504, fine=True) == "network-snapshot-000001.504.pt"
    assert snapshot.snapshot_name(1008, fine=True) == "network-snapshot-000001.008.pt"
    assert snapshot.snapshot_name(1000, fine=True) != snapshot.snapshot_name(1000)
    assert snapshot.parse_snapshot_name("network-snapshot-000001.504.pt") == (1, 1504)
    assert snapshot.parse_snapshot_name(str(tmp_path / "network-snapshot-000012.pt")) == (12, None)
    for bad in ("network-snapshot-000001.5.pt", "network-snapshot-x.pt", "best-fid50k_full.json",
                ".network-snapshot-000001.504.pt.123.abc.tmp"):
        assert snapshot.parse_snapshot_name(bad) is None, bad
    # A half-written fine-named snapshot of a dead writer is cleaned up like an integer-named one.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name in (f".network-snapshot-000001.504.pt.{dead.pid}.x.tmp", f".network-snapshot-000002.pt.{dead.pid}.y.tmp"):
        (tmp_path / name).write_bytes(b"PK")
    (tmp_path / "network-snapshot-000001.504.pt").write_bytes(b"x")
    assert snapshot.find_latest(str(tmp_path)) == str(tmp_path / "network-snapshot-000001.504.pt")
    assert len(snapshot.remove_stale_temp_files(str(tmp_path))) == 2
    assert os.listdir(tmp_path) == ["network-snapshot-000001.504.pt"]


def test_mixed_snapshot_names_are_ordered_by_images_seen(tmp_path):
    run = tmp_path / "00007-run"
    run.mkdir()
    # (name, mtime): mtimes deliberately not in training order; only the kimg-1 pair (an integer name and a
    # fine one: ambiguous by name) is ordered by time, the integer-named one being older.
    files = [("network-snapshot-000010.pt", 100), ("network-snapshot-000009.999.pt", 200),
             ("network-snapshot-000002.008.pt", 300), ("network-snapshot-000001.504.pt", 500),
             ("network-snapshot-000001.pt", 400), ("network-snapshot-000000.500.pt", 600)]
    for name, mtime in files:
        (run / name).write_bytes(b"x")
        os.utime(run / name, (mtime, mtime))
    expected = ["network-snapshot-000000.500.pt", "network-snapshot-000001.pt", "network-snapshot-000001.504.pt",
                "network-snapshot-000002.008.pt", "network-snapshot-000009.999.pt", "network-snapshot-000010.pt"]
    assert [os.path.basename(p) for p in snapshot.list_snapshots(str(run))] == expected
    assert snapshot.find_latest(str(tmp_path)) == str(run / "network-snapshot-000010.pt")
    (run / "network-snapshot-000010.250.pt").write_bytes(b"x")  # newer and more images than 000010
    assert snapshot.find_latest(str(tmp_path)) == str(run / "network-snapshot-000010.250.pt")
    os.remove(run / "network-snapshot-000010.pt")
    (run / "network-snapshot-000011.pt").write_bytes(b"x")
    (run / "network-snapshot-000010.999.pt").write_bytes(b"x")  # newest file, fewer images
    assert snapshot.find_latest(str(tmp_path)) == str(run / "network-snapshot-000011.pt")


# ---------------------------------------------------------------------------------------------
# training_loop helpers


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
    watch.check()  # finite: no error
    training_stats.reset()


def test_save_image_grid_layout(tmp_path):
    imgs = np.zeros([6, 3, 2, 2], np.float32) - 1
    for i in range(6):
        imgs[i, 0] = i / 5 * 2 - 1  # red channel encodes the index
    fname = str(tmp_path / "g.png")
    tl.save_image_grid(imgs, fname, drange=(-1, 1), grid_size=[3, 2])
    out = np.array(PIL.Image.open(fname))
    assert out.shape == (4, 6, 3)
    for i in range(6):
        row, col = divmod(i, 3)
        assert out[row * 2, col * 2, 0] == round(i / 5 * 255) and out[row * 2, col * 2, 1] == 0
    assert tl.default_grid_size(64) == [16, 16] and tl.default_grid_size(256) == [7, 4]
