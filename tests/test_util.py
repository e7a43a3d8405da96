"""torch_utils.util: building objects by name, small helpers, atomic writes (including a full disk)."""

import errno
import os
import subprocess
import uuid

import pytest
import torch

from torch_utils import util


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
        _ = d.missing
    assert util.parse_range("0-3,7, 9-10") == [0, 1, 2, 3, 7, 9, 10]
    for bad in ("3-1", "a", "", "1-"):
        with pytest.raises(ValueError):
            util.parse_range(bad)
    assert util.format_time(5) == "5s"
    assert util.format_time(65) == "1m 05s"
    assert util.format_time(3 * 3600 + 61) == "3h 01m 01s"
    assert util.format_time(2 * 86400 + 3600) == "2d 01h 00m"


# ---------------------------------------------------------------------------------------------
# atomic_write


def _write_old(path):
    util.atomic_write(str(path), lambda f: f.write(b"old content"))


def test_atomic_write_replaces_and_cleans_up_on_any_error(tmp_path):
    path = tmp_path / "out.bin"
    _write_old(path)
    assert path.read_bytes() == b"old content"

    def fails(f):
        f.write(b"half")
        raise KeyboardInterrupt  # e.g. raised by a signal handler in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        util.atomic_write(str(path), fails, tag="123.")
    assert path.read_bytes() == b"old content" and os.listdir(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_atomic_write_reports_a_full_disk_naming_the_destination(tmp_path, code):
    path = tmp_path / "network-snapshot-000000.008.pt"
    _write_old(path)

    def full(f):
        f.write(b"partial")
        raise OSError(code, os.strerror(code))

    with pytest.raises(util.DiskFullError) as err:
        util.atomic_write(str(path), full, tag="1.", durable=True)
    assert str(err.value) == f"no space left on device at {path}"
    assert isinstance(err.value, OSError) and err.value.errno == code and err.value.path == str(path)
    assert path.read_bytes() == b"old content" and os.listdir(tmp_path) == [path.name]


def test_atomic_write_translates_torch_save_failure_on_a_full_disk(tmp_path, monkeypatch):
    """torch.save reports a failed write as RuntimeError('... unexpected pos ...'), with the OSError chained."""
    path = tmp_path / "resume-state.pt"
    _write_old(path)

    class FullFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    with pytest.raises(util.DiskFullError, match=f"^no space left on device at {path}$"):
        util.atomic_write(str(path), lambda f: torch.save({"x": torch.zeros(1000)}, FullFile(f)))
    assert path.read_bytes() == b"old content" and os.listdir(tmp_path) == [path.name]

    # Without a chained OSError (torch wrote through its own file handle) the free space decides.
    def torch_error(f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(util.shutil, "disk_usage", lambda d: type("U", (), dict(free=1000))())
    with pytest.raises(util.DiskFullError, match="no space left on device at"):
        util.atomic_write(str(path), torch_error)
    monkeypatch.setattr(util.shutil, "disk_usage", lambda d: type("U", (), dict(free=2**40))())
    with pytest.raises(RuntimeError, match="unexpected pos") as err:
        util.atomic_write(str(path), torch_error)
    assert not isinstance(err.value, util.DiskFullError)
    # Other errors pass through unchanged.
    with pytest.raises(OSError) as err:
        util.atomic_write(str(path), lambda f: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    assert err.value.errno == errno.EIO and not isinstance(err.value, util.DiskFullError)
    assert path.read_bytes() == b"old content" and os.listdir(tmp_path) == [path.name]


def test_atomic_path_renames_a_named_temporary_file_or_removes_it(tmp_path):
    """atomic_path: for writers that need a file name (e.g. a video encoder that goes by the extension)."""
    path = tmp_path / "video.mp4"
    _write_old(path)
    with util.atomic_path(str(path), suffix=".tmp.mp4", tag="7.", durable=True) as tmp:
        name = os.path.basename(tmp)
        assert os.path.dirname(tmp) == str(tmp_path) and os.path.getsize(tmp) == 0
        assert name.startswith(".video.mp4.7.") and name.endswith(".tmp.mp4")
        assert path.read_bytes() == b"old content"  # nothing visible before the block completes
        with open(tmp, "wb") as f:
            f.write(b"new content")
    assert path.read_bytes() == b"new content" and os.listdir(tmp_path) == [path.name]

    for error in (KeyboardInterrupt(), OSError(errno.EIO, "I/O error")):
        with pytest.raises(type(error)) as err:
            with util.atomic_path(str(path)) as tmp:
                with open(tmp, "wb") as f:
                    f.write(b"half")
                raise error
        assert not isinstance(err.value, util.DiskFullError)
        assert path.read_bytes() == b"new content" and os.listdir(tmp_path) == [path.name]

    with pytest.raises(util.DiskFullError, match=f"^no space left on device at {path}$"):
        with util.atomic_path(str(path)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert path.read_bytes() == b"new content" and os.listdir(tmp_path) == [path.name]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs (needs root and mount permission; skipped otherwise)."""
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_real_full_disk_torch_save(small_tmpfs):
    from training import snapshot

    path = small_tmpfs / "network-snapshot-000000.004.pt"
    snapshot.atomic_torch_save({"w": torch.ones(1000)}, str(path))
    before = path.read_bytes()
    with pytest.raises(util.DiskFullError) as err:
        snapshot.atomic_torch_save({"w": torch.ones(1_000_000)}, str(path))  # 4 MB > 2 MiB
    assert str(err.value) == f"no space left on device at {path}"
    assert path.read_bytes() == before and os.listdir(small_tmpfs) == [path.name]


def test_atomic_write_gives_the_file_the_mode_of_a_plain_open(tmp_path):
    """mkstemp's 0600 must not leak into results (snapshots, grids) that others on a cluster need to read."""
    old = os.umask(0o022)
    try:
        util.atomic_write(str(tmp_path / "a.bin"), lambda f: f.write(b"x"))
        with open(tmp_path / "b.bin", "wb") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o644
