"""tests/_optional.py: a missing optional dependency skips a test locally and fails it when CI is set."""

import os
import subprocess
import sys
import textwrap

import _optional
import pytest

TEST = textwrap.dedent("""
    from _optional import require, require_or_skip

    def test_missing_module():
        require_or_skip("no_such_module_for_the_test", "pip install nothing")

    def test_missing_file():
        require(False, "the weights file")

    def test_present():
        assert require_or_skip("json").dumps(1) == "1"
""")


@pytest.mark.parametrize("ci, expected", [("", "1 passed, 2 skipped"), ("true", "2 failed, 1 passed")])
def test_skip_locally_fail_in_ci(tmp_path, ci, expected):
    (tmp_path / "test_probe.py").write_text(TEST)
    env = {"CI": ci, "PYTHONPATH": os.path.dirname(os.path.abspath(_optional.__file__)), "PATH": ""}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                          str(tmp_path / "test_probe.py")], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert expected in out.stdout, out.stdout + out.stderr
    if ci:
        assert "needs the Python module 'no_such_module_for_the_test'" in out.stdout
        assert "CI is set" in out.stdout


def test_in_ci(monkeypatch):
    for value, expected in (("", False), ("0", False), ("false", False), ("1", True), ("true", True)):
        monkeypatch.setenv("CI", value)
        assert _optional.in_ci() is expected
    monkeypatch.delenv("CI")
    assert not _optional.in_ci()
