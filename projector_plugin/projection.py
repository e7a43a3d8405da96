"""Random, fixed projections of the pretrained features (Sauer et al. 2021, Sec. 3.2).

CCM (cross-channel mixing): a random 1x1 conv per feature level.
CSM (cross-scale mixing): a random top-down (U-Net decoder-like) fusion: the deeper map is upsampled x2
bilinearly, passed through a random 3x3 conv to the shallower level's width, and added to that level.

Neither is ever trained: the weights are drawn once (Kaiming init, from a local seeded generator so every
process of a multi-GPU run draws the same ones) and stored as buffers, so they appear in `state_dict()` and a
saved discriminator is reproduced exactly, but never in `parameters()`.
"""

import math

import torch
import torch.nn.functional as F

PROJ_RAW, PROJ_CCM, PROJ_CCM_CSM = 0, 1, 2


def _kaiming(shape, generator):
    fan_in = shape[1] * shape[2] * shape[3]
    # Gain 1 ("linear"): no activation follows, so this keeps the features' variance.
    return torch.randn(shape, generator=generator) / math.sqrt(fan_in)


class RandomConv(torch.nn.Module):
    """A conv2d with fixed random weights held as buffers. x [N, C_in, H, W] -> [N, C_out, H, W]."""

    def __init__(self, in_channels, out_channels, kernel_size, generator):
        super().__init__()
        self.padding = kernel_size // 2
        self.register_buffer("weight", _kaiming((out_channels, in_channels, kernel_size, kernel_size), generator))
        self.register_buffer("bias", torch.zeros(out_channels))

    def forward(self, x):
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), padding=self.padding)


class RandomProjection(torch.nn.Module):
    """Maps the four backbone levels to the features the mini-discriminators see.

    Args:
        in_channels: channels of the backbone levels, finest first (lite0: [24, 40, 112, 320]).
        proj_type:   0 = raw features, 1 = CCM, 2 = CCM + CSM (paper default).
        width:       CCM output width of the finest level.
        expand:      True doubles the width per level (width * [1, 2, 4, 8]) as in the paper; False keeps it.
        seed:        seed of the random weights (drawn from a local generator: the global RNG is untouched).

    forward(feats): list of 4 tensors [N, in_channels[i], R_i, R_i] -> list of 4 [N, out_channels[i], R_i, R_i].
    """

    def __init__(self, in_channels, proj_type=PROJ_CCM_CSM, width=64, expand=True, seed=0):
        super().__init__()
        if proj_type not in (PROJ_RAW, PROJ_CCM, PROJ_CCM_CSM):
            raise ValueError(f"proj_type={proj_type}: must be 0 (raw features), 1 (CCM) or 2 (CCM+CSM)")
        self.proj_type = proj_type
        if proj_type == PROJ_RAW:
            self.out_channels = list(in_channels)
            return
        g = torch.Generator().manual_seed(seed)
        self.out_channels = [width * (2 ** i if expand else 1) for i in range(len(in_channels))]
        self.ccm = torch.nn.ModuleList(
            RandomConv(c_in, c_out, 1, g) for c_in, c_out in zip(in_channels, self.out_channels))
        if proj_type == PROJ_CCM_CSM:
            # csm[i] carries level i+1 (deeper) up to level i's width.
            self.csm = torch.nn.ModuleList(
                RandomConv(self.out_channels[i + 1], self.out_channels[i], 3, g)
                for i in range(len(in_channels) - 1))

    def forward(self, feats):
        if self.proj_type == PROJ_RAW:
            return list(feats)
        out = [ccm(f) for ccm, f in zip(self.ccm, feats)]
        if self.proj_type == PROJ_CCM_CSM:
            for i in reversed(range(len(out) - 1)):  # Top-down: the deepest level is already final.
                up = F.interpolate(out[i + 1], size=out[i].shape[-2:], mode="bilinear", align_corners=False)
                out[i] = out[i] + self.csm[i](up)
        return out
