"""Just-in-time building of the fused C++/CUDA ops (bias_act, upfirdn2d) with ninja.

`get_plugin(name, sources=[...], headers=[...], source_dir=...)` compiles the sources through
`torch.utils.cpp_extension.load` and returns the imported extension module. Design points:

* Cache keyed by content. The sources and headers are copied into
  `<cache_root>/<name>-<digest>/`, where the digest covers the file contents, the torch/CUDA
  versions and the build flags. Editing a kernel therefore gives a fresh directory instead of a
  stale binary, and unchanged sources are never rebuilt (ninja finds everything up to date).
* Safe under concurrency. Several processes (DDP ranks, parallel test workers) may call
  `get_plugin` at once: the source directory is populated in a private temp dir and moved into
  place with an atomic rename, and the compile itself runs under an exclusive `fcntl` lock that
  the OS releases when a process dies. (Older torch versions lock with a plain marker file that
  survives a killed build and then blocks forever; holding our lock proves it stale, so it is removed.)
* Clear failures. Before compiling we check for ninja, a C++ compiler and, for `.cu` sources,
  nvcc/CUDA_HOME, and raise `PluginBuildError` naming the missing piece; compiler errors are
  re-raised with the same hint.

Messages go to the 'torch_utils.ops' logger (configure logging to see the INFO ones).
Verbosity: 'none' (no build messages), 'brief' (an INFO record when a plugin build starts and one
when it is ready, default), 'full' (also the ninja/compiler output, which torch prints).
Cache root: $TORCH_UTILS_EXT_DIR, else $TORCH_EXTENSIONS_DIR, else ~/.cache/torch_utils_extensions.
"""

import contextlib
import glob
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import uuid
from typing import Dict, List, Optional, Sequence

import torch

verbosity = "brief"  # Module-wide default: 'none' | 'brief' | 'full'.

# One logger for the build messages and the ops' once-only notes (reference fallback).
_logger = logging.getLogger("torch_utils.ops")

_VERBOSITY_LEVELS = ("none", "brief", "full")
_cached_plugins: Dict[str, object] = {}


class PluginBuildError(RuntimeError):
    """Raised when a C++/CUDA plugin cannot be built or imported; the message names the cause."""


# ----------------------------------------------------------------------------------------------
# Tool-chain discovery.


def _is_cuda_home(path: Optional[str]) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, "include", "cuda_runtime.h")) and (
        os.path.isfile(os.path.join(path, "bin", "nvcc")) or os.path.isfile(os.path.join(path, "bin", "nvcc.exe"))
    )


def find_cuda_home() -> Optional[str]:
    """Return a CUDA toolkit root that has both bin/nvcc and include/cuda_runtime.h, or None.

    torch guesses CUDA_HOME as the parent of the `nvcc` found on PATH, which is wrong when that
    nvcc is a wrapper script (e.g. /usr/local/bin/nvcc -> /usr/local has no CUDA headers), so we
    verify candidates instead of trusting the first guess.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    if torch.version.cuda:
        candidates.append(f"/usr/local/cuda-{torch.version.cuda}")
    candidates += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    candidates += sorted(glob.glob("C:/Program Files/NVIDIA GPU Computing Toolkit/CUDA/v*"), reverse=True)
    for path in candidates:
        if _is_cuda_home(path):
            return os.path.abspath(path)
    return None


def _find_cxx() -> Optional[str]:
    if os.name == "nt":
        return shutil.which("cl")
    return shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")


def missing_toolchain(with_cuda: bool) -> List[str]:
    """Return human-readable descriptions of the build tools that are missing (empty if none)."""
    missing = []
    if shutil.which("ninja") is None:
        missing.append("ninja (pip install ninja)")
    if _find_cxx() is None:
        missing.append(f"a C++ compiler ({'cl.exe' if os.name == 'nt' else os.environ.get('CXX', 'c++')} not on PATH)")
    if with_cuda:
        if torch.version.cuda is None:
            missing.append("a CUDA build of PyTorch (torch.version.cuda is None)")
        elif find_cuda_home() is None:
            missing.append("the CUDA toolkit: nvcc + headers (set CUDA_HOME to a directory with bin/nvcc and include/)")
    return missing


# ----------------------------------------------------------------------------------------------
# Cache directory and locking.


def _cache_root() -> str:
    root = os.environ.get("TORCH_UTILS_EXT_DIR") or os.environ.get("TORCH_EXTENSIONS_DIR")
    if not root:
        root = os.path.join(os.path.expanduser("~"), ".cache", "torch_utils_extensions")
    return root


def _digest(paths: Sequence[str], extra: Sequence[str]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as fh:
            h.update(fh.read())
        h.update(b"\0")
    for item in extra:
        h.update(str(item).encode() + b"\0")
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _exclusive_lock(path: str):
    """Inter-process exclusive lock on `path` (released by the OS if the holder dies)."""
    with open(path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # Windows: fall back to msvcrt byte-range locking.
            import msvcrt
            import time

            while True:
                try:
                    msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
                    break
                except OSError:
                    time.sleep(0.2)
            try:
                yield
            finally:
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _populate_source_dir(build_dir: str, files: Sequence[str]) -> None:
    """Copy `files` into `build_dir` atomically: readers see either nothing or every file."""
    if os.path.isdir(build_dir) and all(os.path.isfile(os.path.join(build_dir, os.path.basename(f))) for f in files):
        return
    parent = os.path.dirname(build_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".tmp-{uuid.uuid4().hex}-", dir=parent)
    try:
        for f in files:
            shutil.copyfile(f, os.path.join(tmp_dir, os.path.basename(f)))
        try:
            os.replace(tmp_dir, build_dir)  # Atomic; fails if another process won the race.
        except OSError:
            if not os.path.isdir(build_dir):
                raise
    finally:
        if os.path.isdir(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Public entry point.


def get_plugin(
    module_name: str,
    sources: Sequence[str],
    headers: Sequence[str] = (),
    source_dir: Optional[str] = None,
    verbose: Optional[str] = None,
    extra_cflags: Sequence[str] = (),
    extra_cuda_cflags: Sequence[str] = (),
    **build_kwargs,
):
    """Build (if needed) and import the extension `module_name`; cached per process.

    Args:
        module_name:       Python module name the extension registers (PYBIND11_MODULE uses
                           TORCH_EXTENSION_NAME, so any name works).
        sources, headers:  File names, relative to `source_dir` (or absolute).
        source_dir:        Directory holding the files; defaults to the current directory.
        verbose:           'none' | 'brief' | 'full'; defaults to `custom_ops.verbosity`.
        extra_cflags, extra_cuda_cflags, **build_kwargs: forwarded to
                           `torch.utils.cpp_extension.load`.
    Returns:
        The imported extension module.
    Raises:
        PluginBuildError naming the missing tool or the compiler failure.
    """
    verbose = verbosity if verbose is None else verbose
    if verbose not in _VERBOSITY_LEVELS:
        raise ValueError(f"custom_ops: verbose must be one of {_VERBOSITY_LEVELS}, got {verbose!r}")
    if module_name in _cached_plugins:
        return _cached_plugins[module_name]

    source_dir = source_dir or os.getcwd()
    sources = [os.path.join(source_dir, s) for s in sources]
    headers = [os.path.join(source_dir, h) for h in headers]
    for path in sources + headers:
        if not os.path.isfile(path):
            raise PluginBuildError(f"custom_ops: source file of plugin '{module_name}' not found: {path}")
    with_cuda = any(s.endswith((".cu", ".cuh")) for s in sources)

    missing = missing_toolchain(with_cuda)
    if missing:
        raise PluginBuildError(
            f"custom_ops: cannot build plugin '{module_name}': missing " + "; ".join(missing) + "."
        )

    if with_cuda:
        # torch computes CUDA_HOME once, at import of cpp_extension; point both at a verified root.
        cuda_home = find_cuda_home()
        os.environ["CUDA_HOME"] = cuda_home
    import torch.utils.cpp_extension as cpp_ext

    if with_cuda:
        cpp_ext.CUDA_HOME = cuda_home

    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    if with_cuda and not arch_list and not torch.cuda.is_available():
        raise PluginBuildError(
            f"custom_ops: cannot build plugin '{module_name}' without a GPU unless TORCH_CUDA_ARCH_LIST names "
            "the target architectures (e.g. TORCH_CUDA_ARCH_LIST=9.0 for H100)."
        )
    digest = _digest(
        sources + headers,
        [torch.__version__, torch.version.cuda, arch_list, sys.version_info[:2], *extra_cflags, *extra_cuda_cflags,
         sorted(build_kwargs.items())],
    )
    build_dir = os.path.join(_cache_root(), f"{module_name}-{digest}")

    if verbose != "none":
        _logger.info("custom_ops: setting up plugin '%s' in %s", module_name, build_dir)
    try:
        _populate_source_dir(build_dir, sources + headers)
        with _exclusive_lock(build_dir + ".lock"):
            # Older torch marks "build in progress" by the mere existence of <build_dir>/lock, which
            # a killed build leaves behind forever; holding our lock proves such a file is stale.
            # (Newer torch holds an OS-level lock on that file instead; leave it alone then.)
            stale = os.path.join(build_dir, "lock")
            if not hasattr(cpp_ext, "FileLock") and os.path.exists(stale):
                os.remove(stale)
            module = cpp_ext.load(
                name=module_name,
                sources=[os.path.join(build_dir, os.path.basename(s)) for s in sources],
                extra_cflags=["-O3", *extra_cflags] if os.name != "nt" else list(extra_cflags),
                extra_cuda_cflags=["-O3", *extra_cuda_cflags] if with_cuda else None,
                build_directory=build_dir,
                verbose=(verbose == "full"),
                **build_kwargs,
            )
    except PluginBuildError:
        raise
    except Exception as err:
        hint = "compiler" + (f" (nvcc at CUDA_HOME={os.environ.get('CUDA_HOME')})" if with_cuda else "")
        raise PluginBuildError(
            f"custom_ops: building plugin '{module_name}' in {build_dir} failed with the {hint}; "
            f"rerun with verbose='full' to see the full log. Cause: {err}"
        ) from err
    if verbose != "none":
        _logger.info("custom_ops: plugin '%s' ready", module_name)
    _cached_plugins[module_name] = module
    return module


# ----------------------------------------------------------------------------------------------
# Once-only notes shared by the ops (reference fallback), so that a CPU run logs one line
# instead of one per call.

_noted = set()
_failed_plugins = set()


def get_plugin_or_none(module_name: str, sources: Sequence[str], headers: Sequence[str], source_dir: str):
    """`get_plugin`, or None if the extension cannot be built: the op then runs its reference path.

    A failure is remembered for the process (one warning, no rebuild attempt per call)."""
    if module_name in _failed_plugins:
        return None
    try:
        return get_plugin(module_name, sources=sources, headers=headers, source_dir=source_dir)
    except Exception as err:  # Any build problem degrades to the reference path.
        _failed_plugins.add(module_name)
        op = module_name.removesuffix("_plugin")
        note_once(f"{op}-build", f"{op}: CUDA extension unavailable, using the slower PyTorch reference. {err}",
                  level=logging.WARNING)
        return None


def cuda_kernel_usable(x, get_plugin) -> bool:
    """Whether an op's CUDA kernel can run on tensor x: x is on a CUDA device and `get_plugin()` built the
    extension. Otherwise the op runs its reference path, and why is noted once per process."""
    if not x.is_cuda:
        note_once("cpu-fallback", "torch_utils.ops: tensors are not on a CUDA device; using the PyTorch reference "
                  "implementations of bias_act/upfirdn2d.")
        return False
    return get_plugin() is not None


def note_once(key: str, message: str, level: int = logging.INFO) -> None:
    """Log `message` on the 'torch_utils.ops' logger the first time `key` is seen in this process.

    Without logging configured, Python shows WARNING records on stderr and drops INFO ones."""
    if key in _noted:
        return
    _noted.add(key)
    _logger.log(level, message)
