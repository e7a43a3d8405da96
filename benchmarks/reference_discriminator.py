"""The paper's projected discriminator written the obvious way: the benchmarks' reference, not for training.

`ReferenceDiscriminator(**kwargs)` takes `ProjectedDiscriminator`'s options and computes the same function,
assembled from the plugin's own blocks, but without the plugin's speed measures:
  - the frozen backbone keeps its BatchNorms unfolded and, like CCM/CSM, holds its weights as ordinary
    `nn.Parameter`s (requires_grad=True) that only the optimizer leaves alone, so autograd computes and discards
    their gradients;
  - spectral norm is torch's `parametrizations.spectral_norm`, which rescales the weight on every call;
  - fp32 throughout, NCHW memory format.
Built from the same seed as a `ProjectedDiscriminator`, it has the same weights and spectral-norm estimates
(eval-mode logits agree to float rounding), under other state-dict keys.

    from reference_discriminator import ReferenceDiscriminator     # benchmarks/ on sys.path
    D = ReferenceDiscriminator(feat_res=64, pretrained=False)
    logits = D(img, c)                                             # img [N, 3, H, W] in [-1, 1] -> [N, K]
"""

import os
import sys

import torch
from torch.nn.utils.parametrizations import spectral_norm

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
from projector_plugin.discriminator import ProjectedDiscriminator  # noqa: E402
from projector_plugin.feature_networks import FrozenFeatureNetwork  # noqa: E402
from projector_plugin.spectral_norm import SNConv2d, SNLinear  # noqa: E402


class UnfoldedFeatureNetwork(FrozenFeatureNetwork):
    """The timm backbone as created: BatchNorms unfolded, weights as `nn.Parameter`s (requires_grad=True).

    forward(x [N, 3, H, W] in [-1, 1]) -> list of 4 [N, C_i, feat_res/s_i, feat_res/s_i], as FrozenFeatureNetwork.
    """

    def _freeze(self, net):
        return net


def buffers_to_parameters(module):
    """Re-register every persistent floating-point buffer of `module` as an `nn.Parameter` of the same name."""
    for sub in module.modules():
        for name, b in list(sub._buffers.items()):
            if b is None or not b.is_floating_point() or name in sub._non_persistent_buffers_set:
                continue
            del sub._buffers[name]
            sub.register_parameter(name, torch.nn.Parameter(b.detach().clone()))


def _torch_spectral_norm(layer):
    """A torch layer under torch's spectral_norm, with `layer`'s (SNConv2d / SNLinear) weight, bias, u and v."""
    if isinstance(layer, SNConv2d):
        plain = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                layer.padding, layer.dilation, layer.groups, layer.bias is not None,
                                layer.padding_mode)
    else:
        plain = torch.nn.Linear(layer.in_features, layer.out_features, layer.bias is not None)
    with torch.no_grad():
        plain.weight.copy_(layer.weight)
        if layer.bias is not None:
            plain.bias.copy_(layer.bias)
    with torch.random.fork_rng(devices=[]):  # Its own u, v draws are replaced below: keep the caller's RNG.
        plain = spectral_norm(plain, eps=layer.eps)
    with torch.no_grad():
        plain.parametrizations.weight[0]._u.copy_(layer.u)
        plain.parametrizations.weight[0]._v.copy_(layer.v)
    return plain


def use_torch_spectral_norm(module):
    """Replace every SNConv2d / SNLinear inside `module` by the torch equivalent, in place."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (SNConv2d, SNLinear)):
                setattr(parent, name, _torch_spectral_norm(child))
    return module


class ReferenceDiscriminator(ProjectedDiscriminator):
    """ProjectedDiscriminator written the obvious way (see the module docstring). Same arguments, except that
    `channels_last` and `bf16` are fixed off.

    forward(img [N, C, H, W] in [-1, 1], c [N, c_dim]) -> logits [N, K], as ProjectedDiscriminator.
    """

    def __init__(self, **kwargs):
        for fixed in ("channels_last", "bf16"):
            if kwargs.get(fixed):
                raise ValueError(f"ReferenceDiscriminator: {fixed} is always off in the reference")
        super().__init__(channels_last=False, bf16=False, **kwargs)
        fn = self.feature_network
        with torch.random.fork_rng(devices=[]):  # Same global RNG state afterwards as the plugin's D.
            self.feature_network = UnfoldedFeatureNetwork(
                fn.backbone, weights=kwargs.get("weights"), pretrained=kwargs.get("pretrained", True),
                feat_res=fn.feat_res)
        buffers_to_parameters(self.projection)
        use_torch_spectral_norm(self.discs)
