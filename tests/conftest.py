import os
import sys

# Tests import the repo's packages from the checkout, whether or not `pip install -e .` ran.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def small_D():
    """Pretrained lite0 at a reduced input size: real features, fast enough for many steps on a CPU."""
    import torch

    from projector_plugin import ProjectedDiscriminator

    torch.manual_seed(0)
    return ProjectedDiscriminator(feat_res=64)
