"""Small host utilities: attribute dicts, building objects from `class_name` config dicts, formatting.

Configs throughout the toolkit are plain dicts such as
`{'class_name': 'training.networks_fastgan.Generator', 'z_dim': 256, ...}`; `construct_class_by_name`
turns one into an object, so any network, loss or optimizer can be swapped by editing a JSON file.
"""

import contextlib
import errno
import importlib
import os
import re
import shutil
import tempfile
import types
from typing import Any, Callable, Iterator, List, Optional, Tuple


class EasyDict(dict):
    """A dict whose keys are also attributes (`d.lr` is `d['lr']`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]


def get_module_from_obj_name(obj_name: str) -> Tuple[types.ModuleType, str]:
    """Split 'pkg.module.Attr.sub' into the longest importable module and the remaining attribute path."""
    parts = obj_name.split(".")
    errors = []
    # Try the longest module path first so that 'torch.optim.Adam' resolves to module torch.optim.
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # Only swallow "this very module does not exist"; a missing dependency *inside* an existing
            # module is a real error that the user must see.
            if err.name is not None and (module_name == err.name or module_name.startswith(err.name + ".")):
                errors.append(err)
                continue
            raise
        rest = ".".join(parts[i:])
        try:
            get_obj_from_module(module, rest)
        except AttributeError:
            continue
        return module, rest
    raise ImportError(f"Cannot find an object named '{obj_name}'")


def get_obj_from_module(module: types.ModuleType, obj_name: str) -> Any:
    """Walk a dotted attribute path inside a module ('' returns the module itself)."""
    if obj_name == "":
        return module
    obj = module
    for part in obj_name.split("."):
        obj = getattr(obj, part)
    return obj


def get_obj_by_name(name: str) -> Any:
    """Find a Python object by its fully qualified name, e.g. 'torch.optim.Adam'."""
    module, obj_name = get_module_from_obj_name(name)
    return get_obj_from_module(module, obj_name)


def call_func_by_name(*args, func_name: str = None, **kwargs) -> Any:
    """Call a function given by its fully qualified name."""
    assert func_name is not None
    func_obj = get_obj_by_name(func_name)
    if not callable(func_obj):
        raise TypeError(f"'{func_name}' is not callable")
    return func_obj(*args, **kwargs)


def construct_class_by_name(*args, class_name: str = None, **kwargs) -> Any:
    """Instantiate a class given by its fully qualified name: `construct_class_by_name(class_name='a.B', x=1)`."""
    if class_name is None:
        raise ValueError("construct_class_by_name() needs class_name=")
    return call_func_by_name(*args, func_name=class_name, **kwargs)


def format_time(seconds: float) -> str:
    """Human-readable duration: '42s', '3m 05s', '2h 01m 10s', '1d 04h 33m'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 60 * 60:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 24 * 60 * 60:
        return f"{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m"


def parse_range(s: str, limit: Optional[int] = None) -> List[int]:
    """Parse '1,2,5-10' into [1, 2, 5, 6, 7, 8, 9, 10]. Raises ValueError with a readable message, also when the
    list would hold more than `limit` numbers (checked before it is built: '0-4294967295' would take ~150 GB)."""
    if isinstance(s, (list, tuple)):
        return [int(x) for x in s]
    out = []
    for part in str(s).split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d{1,20})\s*-\s*(\d{1,20})", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f"bad range '{part}': end is smaller than start")
            if limit is not None and len(out) + hi - lo + 1 > limit:
                raise ValueError(f"'{s}' has {len(out) + hi - lo + 1:,} or more numbers; at most {limit:,} per call")
            out.extend(range(lo, hi + 1))
        elif re.fullmatch(r"\d{1,20}", part):
            if limit is not None and len(out) >= limit:
                raise ValueError(f"'{s}' has more than {limit:,} numbers; at most {limit:,} per call")
            out.append(int(part))
        else:
            raise ValueError(f"cannot parse '{part}' as a number or a range like 0-15")
    if not out:
        raise ValueError(f"empty range '{s}'")
    return out


class Logger:
    """Tee everything written to stdout/stderr into a file as well (the run's log.txt)."""

    def __init__(self, file_name: str = None, file_mode: str = "a", should_flush: bool = True):
        import sys

        # Open for the Logger's lifetime (closed by close()/__exit__), not one block.
        self.file = open(file_name, file_mode, encoding="utf-8") if file_name is not None else None  # noqa: SIM115
        self.should_flush = should_flush
        self.stdout = sys.stdout
        self.stderr = sys.stderr
        sys.stdout = self
        sys.stderr = self

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, text) -> None:
        if isinstance(text, bytes):
            text = text.decode()
        if len(text) == 0:
            return
        if self.file is not None:
            self.file.write(text)
        self.stdout.write(text)
        if self.should_flush:
            self.flush()

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()
        self.stdout.flush()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        import sys

        self.flush()
        if sys.stdout is self:
            sys.stdout = self.stdout
        if sys.stderr is self:
            sys.stderr = self.stderr
        if self.file is not None:
            self.file.close()
            self.file = None


class DiskFullError(OSError):
    """A write failed because the device (or the user's quota) is full.

    str() is 'no space left on device at PATH' (PATH = the file that could not be written), '; detail' appended
    when given. An OSError with errno ENOSPC (or EDQUOT), so callers that handle OSError still do.
    """

    def __init__(self, path: str, err_no: int = errno.ENOSPC, detail: str = ""):
        super().__init__(err_no, f"no space left on device at {path}" + (f"; {detail}" if detail else ""), path)
        self.path = path

    def __str__(self) -> str:
        return self.strerror


_FULL_ERRNOS = tuple(e for e in (getattr(errno, "ENOSPC", None), getattr(errno, "EDQUOT", None)) if e is not None)
# torch.save reports a failed write of its zip writer as a RuntimeError with one of these texts; the OSError that
# caused it (when the target is a Python file) is chained as its __context__.
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "No space left on device")


def disk_full_errno(err: BaseException, directory: str = None) -> int:
    """errno (ENOSPC/EDQUOT) when `err` (or an exception chained to it) is a write failure of a full disk, else 0.

    torch's RuntimeError of a failed write without a chained OSError counts as full when `directory`'s file system
    has less than 1 MiB free (the only cause of a failed write there that we can confirm).
    """
    seen = set()
    todo = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return e.errno
        todo.extend([e.__cause__, e.__context__])
    if isinstance(err, RuntimeError) and any(t in str(err) for t in _TORCH_WRITE_FAILED) and directory is not None:
        if "No space left on device" in str(err):
            return errno.ENOSPC
        try:
            if shutil.disk_usage(directory).free < 2**20:
                return errno.ENOSPC
        except OSError:
            pass
    return 0


def atomic_write(path: str, write: Callable[[Any], None], tag: str = "", durable: bool = False) -> None:
    """Call write(binary file) on a temporary file next to `path`, then rename it over `path`.

    Readers see the old file or the new one, never a partial one; on error (or KeyboardInterrupt, or any exception
    a signal handler raises) the temporary file is removed and `path` is left as it was.
    The temporary name is `.{basename}.{tag}XXXX.tmp` (a tag such as the writer's PID lets a cleaner tell a
    dead writer's leftovers from a live one's). `durable` fsyncs the data and the directory entry as well.
    A write that fails because the disk or the quota is full raises DiskFullError naming `path`.
    """
    with atomic_path(path, tag=tag, durable=durable) as tmp:
        with open(tmp, "wb") as f:
            write(f)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ".tmp", tag: str = "", durable: bool = False) -> Iterator[str]:
    """`atomic_write` for writers that need a file name rather than a file object.

        with util.atomic_path("out.mp4", suffix=".tmp.mp4") as tmp:   # encoders that go by the extension
            write_video(tmp)

    Yields the name of a new, empty temporary file `.{basename}.{tag}XXXX{suffix}` next to `path`; when the block
    completes it is renamed over `path`, and when the block raises (anything, KeyboardInterrupt included) it is
    removed and `path` keeps its old content. `durable` and full-disk errors (DiskFullError naming `path`) as in
    `atomic_write`.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{tag}", suffix=suffix, dir=directory)
    except OSError as err:
        if err.errno in _FULL_ERRNOS:
            raise DiskFullError(path, err.errno) from err
        raise
    try:
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; the result gets the mode a plain open() gives
        yield tmp
        if durable:
            _fsync(tmp, os.O_RDWR)
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        full = disk_full_errno(err, directory) if isinstance(err, (OSError, RuntimeError)) else 0
        if full and not isinstance(err, DiskFullError):
            raise DiskFullError(path, full) from err
        raise
    if durable:  # Make the rename itself durable (a crash right after could otherwise lose the directory entry).
        try:
            _fsync(directory, os.O_RDONLY)
        except OSError:
            pass


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(name: str, flags: int) -> None:
    """fsync the file or directory `name` (fsync works per file, whichever descriptor it is called on)."""
    fd = os.open(name, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
