"""What the command-line tools (train.py, gen_images.py, gen_video.py, dataset_tool.py) share: one logging
setup, finite-number options, output-path checks and one wording for failed writes."""

import errno
import logging
import math
import os
import sys
from typing import Optional

import click


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record, so that train.py's log.txt tee (which
    replaces sys.stderr) and click's test runner both see the messages."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging() -> None:
    """INFO and above on stderr as plain lines, e.g. the projector plugin's note on where its weights came from.

    A no-op when the process has configured logging already (logging.basicConfig semantics).
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[_CurrentStderrHandler()])


class FiniteFloat(click.ParamType):
    """A float option that must be finite (no nan/inf), optionally >= or > a lower bound, and at most `max`.

    The upper bound keeps values that are finite but absurd (--kimg=1e306 overflows an image count; --trunc=1e308
    overflows float32) from failing deep inside the work with a traceback.
    """

    name = "float"

    def __init__(self, min: Optional[float] = None, min_open: bool = False, max: Optional[float] = None):
        self.min, self.min_open, self.max = min, min_open, max

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
            if not math.isfinite(number):
                self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.min is not None:
            if self.min_open and not number > self.min:
                self.fail(f"must be positive, got {value}" if self.min == 0 else f"must be > {self.min:g}, got {value}",
                          param, ctx)
            if not self.min_open and number < self.min:
                self.fail(f"must be >= {self.min:g}, got {value}", param, ctx)
        if self.max is not None and number > self.max:
            self.fail(f"must be at most {self.max:g}, got {value}", param, ctx)
        return number


def write_error(err: OSError, path: str) -> str:
    """One line for a failed write of `path`: 'no space left on device at PATH' for a full disk."""
    if getattr(err, "errno", None) == errno.ENOSPC:
        return f"no space left on device at {path}"
    if getattr(err, "errno", None) == errno.EDQUOT:
        return f"disk quota exceeded at {path}"
    return f"cannot write {path}: {err.strerror or err}"


def output_dir_problem(path: str) -> Optional[str]:
    """Why `path` cannot be (or become) a writable output directory, or None when it can."""
    if not str(path).strip():
        return "is empty; give a folder name"
    if os.path.exists(path) and not os.path.isdir(path):
        return f"'{path}' is a file, not a directory"
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"'{path}' cannot be created: '{probe}' is a file, not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"'{path}' is not writable (no write permission on '{probe}')"
    return None


def remove_if_empty(path: str) -> None:
    """Remove directory `path` if it holds nothing (an output folder a failed command created)."""
    try:
        os.rmdir(path)
    except OSError:
        pass


def one_line(err: BaseException) -> str:
    """The message of `err` on one line (of a multi-line message, the first two lines, then '...')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return " ".join(lines[:2]) + (" ..." if len(lines) > 2 else "")


def is_inside(path: str, folder: str) -> bool:
    """True when `path` is `folder` or lies inside it (symlinks resolved), e.g. an output inside a source folder."""
    try:
        path, folder = os.path.realpath(path), os.path.realpath(folder)
    except (OSError, ValueError):
        return False
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def available_memory_bytes() -> int:
    """Memory this process can still use on the machine (psutil's 'available'; 8 GiB if psutil is missing)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unsupported: a conservative guess
        return 8 << 30


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1e3:.0f} kB"


def check_fits_in_memory(option: str, nbytes: float, what: str, available: Optional[int] = None) -> None:
    """Fail with one line naming `option` when `nbytes` (an estimate of what it makes the command allocate) exceeds
    the memory available, before any of that work starts."""
    available = available_memory_bytes() if available is None else available
    if nbytes > available:
        raise click.BadParameter(f"{what} would need about {format_bytes(nbytes)} of memory; the machine has "
                                 f"{format_bytes(available)} available", param_hint=f"'{option}'")
