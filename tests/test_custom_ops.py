"""torch_utils.custom_ops: tool-chain diagnostics, content-hash cache, concurrency, and (slow,
opt-in) real builds of the bias_act / upfirdn2d extensions.

Run the compile checks with `python -m pytest -m slow tests/test_custom_ops.py`; without a GPU
they target TORCH_CUDA_ARCH_LIST (default 9.0, H100) and only import the built modules.
"""

import logging
import os
import shutil
import threading
import time

import pytest
import torch

from torch_utils import custom_ops

OPS_DIR = os.path.join(os.path.dirname(__file__), "..", "torch_utils", "ops")
has_nvcc = custom_ops.find_cuda_home() is not None and torch.version.cuda is not None
has_cxx = shutil.which("ninja") is not None and custom_ops._find_cxx() is not None


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_UTILS_EXT_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(custom_ops, "_cached_plugins", {})
    return tmp_path / "cache"


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_missing_ninja_is_named(tmp_path, private_cache, monkeypatch):
    src = _write(tmp_path / "a.cpp", "int f() { return 1; }\n")
    real_which = shutil.which
    monkeypatch.setattr(custom_ops.shutil, "which", lambda name: None if name == "ninja" else real_which(name))
    with pytest.raises(custom_ops.PluginBuildError, match="ninja"):
        custom_ops.get_plugin("a_plugin", sources=[src], verbose="none")


def test_missing_cxx_is_named(tmp_path, private_cache, monkeypatch):
    src = _write(tmp_path / "a.cpp", "int f() { return 1; }\n")
    monkeypatch.setattr(custom_ops, "_find_cxx", lambda: None)
    with pytest.raises(custom_ops.PluginBuildError, match="C\\+\\+ compiler"):
        custom_ops.get_plugin("a_plugin", sources=[src], verbose="none")


def test_missing_cuda_toolkit_is_named(tmp_path, private_cache, monkeypatch):
    src = _write(tmp_path / "a.cu", "__global__ void k() {}\n")
    monkeypatch.setattr(custom_ops, "find_cuda_home", lambda: None)
    with pytest.raises(custom_ops.PluginBuildError, match="CUDA"):
        custom_ops.get_plugin("a_plugin", sources=[src], verbose="none")


def test_missing_source_and_bad_verbosity(tmp_path, private_cache):
    with pytest.raises(custom_ops.PluginBuildError, match="not found"):
        custom_ops.get_plugin("a_plugin", sources=["nope.cpp"], source_dir=str(tmp_path), verbose="none")
    with pytest.raises(ValueError, match="verbose"):
        custom_ops.get_plugin("a_plugin", sources=["nope.cpp"], source_dir=str(tmp_path), verbose="loud")


@pytest.mark.skipif(not has_nvcc, reason="no CUDA toolkit (nvcc + headers) on this machine")
def test_find_cuda_home_has_headers_and_nvcc():
    home = custom_ops.find_cuda_home()
    assert os.path.isfile(os.path.join(home, "include", "cuda_runtime.h"))
    assert os.path.isfile(os.path.join(home, "bin", "nvcc"))


def test_digest_follows_content(tmp_path):
    a = _write(tmp_path / "a.cpp", "int f() { return 1; }\n")
    d1 = custom_ops._digest([a], ["x"])
    assert custom_ops._digest([a], ["x"]) == d1
    assert custom_ops._digest([a], ["y"]) != d1  # Build flags are part of the key.
    _write(tmp_path / "a.cpp", "int f() { return 2; }\n")
    assert custom_ops._digest([a], ["x"]) != d1


def test_concurrent_populate_is_atomic(tmp_path):
    files = [_write(tmp_path / f"s{i}.cpp", f"// file {i}\n" * 1000) for i in range(3)]
    target = str(tmp_path / "cache" / "plugin-abc")
    errors = []

    def worker():
        try:
            custom_ops._populate_source_dir(target, files)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(os.listdir(target)) == ["s0.cpp", "s1.cpp", "s2.cpp"]
    for f in files:
        with open(os.path.join(target, os.path.basename(f))) as copied, open(f) as original:
            assert copied.read() == original.read()
    assert os.listdir(tmp_path / "cache") == ["plugin-abc"]  # No temp dirs left behind.


def test_exclusive_lock_serializes(tmp_path):
    lock = str(tmp_path / "x.lock")
    inside, overlaps = [0], []

    def worker():
        with custom_ops._exclusive_lock(lock):
            inside[0] += 1
            overlaps.append(inside[0])
            time.sleep(0.05)
            inside[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [1, 1, 1, 1]


def test_note_once(caplog):
    custom_ops._noted.discard("test-note")
    with caplog.at_level(logging.INFO, logger="torch_utils.ops"):
        for _ in range(3):
            custom_ops.note_once("test-note", "hello once")
    assert [r.getMessage() for r in caplog.records].count("hello once") == 1


def test_failed_build_degrades_to_reference_once(monkeypatch, caplog):
    """A build failure gives None (the op runs its reference), one warning, and no second build attempt."""
    calls = []

    def failing_get_plugin(module_name, **kwargs):
        calls.append(module_name)
        raise custom_ops.PluginBuildError("no nvcc here")

    monkeypatch.setattr(custom_ops, "get_plugin", failing_get_plugin)
    monkeypatch.setattr(custom_ops, "_failed_plugins", set())
    custom_ops._noted.discard("fake_op-build")
    with caplog.at_level(logging.INFO, logger="torch_utils.ops"):
        for _ in range(3):
            assert custom_ops.get_plugin_or_none("fake_op_plugin", ["a.cu"], [], "/nowhere") is None
    assert calls == ["fake_op_plugin"]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith("fake_op: CUDA extension unavailable")
    assert "no nvcc" in messages[0]
    # CPU tensors never ask for the kernel.
    assert not custom_ops.cuda_kernel_usable(torch.zeros(1), lambda: pytest.fail("must not build for CPU tensors"))


@pytest.mark.parametrize("verbose", ["none", "brief"])
def test_build_messages_go_to_the_logger_not_stdout(tmp_path, private_cache, monkeypatch, caplog, capsys, verbose):
    import torch.utils.cpp_extension as cpp_ext
    src = _write(tmp_path / "a.cpp", "int f() { return 1; }\n")
    sentinel = object()
    monkeypatch.setattr(custom_ops, "missing_toolchain", lambda with_cuda: [])
    monkeypatch.setattr(cpp_ext, "load", lambda **kwargs: sentinel)
    with caplog.at_level(logging.INFO, logger="torch_utils.ops"):
        assert custom_ops.get_plugin("logged_plugin", sources=[src], verbose=verbose) is sentinel
    messages = [r.getMessage() for r in caplog.records if r.name == "torch_utils.ops"]
    if verbose == "none":
        assert messages == []
    else:
        assert len(messages) == 2 and all("'logged_plugin'" in m for m in messages)
        assert "ready" in messages[1]
    out, err = capsys.readouterr()  # (torch itself may write to stderr; we do not)
    assert out == "" and "logged_plugin" not in err


@pytest.mark.skipif(not has_cxx, reason="needs ninja and a C++ compiler")
def test_compiler_error_is_reported(tmp_path, private_cache):
    src = _write(tmp_path / "broken.cpp", "int f( { return 1; }\n")
    with pytest.raises(custom_ops.PluginBuildError, match="building plugin 'broken_plugin'.*verbose='full'"):
        custom_ops.get_plugin("broken_plugin", sources=[src], verbose="none")


# ----------------------------------------------------------------------------------------------
# Real builds (slow; opt in with -m slow).


@pytest.mark.slow
@pytest.mark.skipif(not has_cxx, reason="needs ninja and a C++ compiler")
def test_build_and_call_cpu_extension(tmp_path, private_cache):
    src = _write(tmp_path / "twice.cpp", """
#include <torch/extension.h>
torch::Tensor twice(torch::Tensor x) { return x * 2; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("twice", &twice); }
""")
    mod = custom_ops.get_plugin("twice_plugin", sources=[src], verbose="none")
    torch.testing.assert_close(mod.twice(torch.arange(3.0)), torch.tensor([0.0, 2.0, 4.0]))
    assert custom_ops.get_plugin("twice_plugin", sources=[src], verbose="none") is mod  # Process cache.
    # The build directory is named by the content hash and holds a copy of the source.
    (build_dir,) = [d for d in os.listdir(private_cache) if d.startswith("twice_plugin-") and not d.endswith(".lock")]
    assert os.path.isfile(private_cache / build_dir / "twice.cpp")


@pytest.mark.slow
@pytest.mark.skipif(not has_nvcc or not has_cxx, reason="needs nvcc + CUDA headers, ninja and a C++ compiler")
@pytest.mark.parametrize("name", ["bias_act", "upfirdn2d"])
def test_build_cuda_extension(name, private_cache, monkeypatch):
    if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")  # H100; compile only.
    mod = custom_ops.get_plugin(f"{name}_plugin", sources=[f"{name}.cpp", f"{name}.cu"], headers=[f"{name}.h"],
                                source_dir=OPS_DIR, verbose="brief")
    fn = getattr(mod, name)
    # Calling the binding on CPU tensors must hit its argument checks, not crash.
    with pytest.raises(RuntimeError, match="must be a CUDA tensor"):
        if name == "bias_act":
            e = torch.empty(0)
            fn(torch.ones(2, 3), e, e, e, 1, 1, 0, 0.0, 1.0, -1.0)
        else:
            fn(torch.ones(1, 1, 4, 4), torch.ones(2, 2), 1, 1, 1, 1, 0, 0, 0, 0)
