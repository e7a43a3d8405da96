"""Projected GAN discriminator plugin (Sauer et al., "Projected GANs Converge Faster", NeurIPS 2021).

Stand-alone: depends on torch, timm and numpy only, never on this repository's host packages, so it can be
pip-installed or copied into any StyleGAN-style codebase:

    from projector_plugin import ProjectedDiscriminator, ProjectedGANLoss, DiffAugment
    D = ProjectedDiscriminator(c_dim=0)            # frozen EfficientNet-Lite0 + CCM/CSM + 4 mini-Ds
    loss = ProjectedGANLoss(device, G, D)          # hinge loss, drop-in accumulate_gradients()

Installed on its own with `pip install .` from this repository (distribution `projector-plugin`); the version
below is the single source of the package version (setup.py reads it as text).
"""

from .blur import gaussian_blur
from .diffaug import DiffAugment
from .discriminator import MiniDiscriminator, ProjectedDiscriminator
from .feature_networks import FrozenFeatureNetwork, create_classifier, load_pretrained_state_dict
from .loss import ProjectedGANLoss
from .projection import RandomProjection

__all__ = [
    "ProjectedDiscriminator", "ProjectedGANLoss", "DiffAugment", "FrozenFeatureNetwork", "RandomProjection",
    "MiniDiscriminator", "create_classifier", "load_pretrained_state_dict", "gaussian_blur",
]
__version__ = "0.1.0"
