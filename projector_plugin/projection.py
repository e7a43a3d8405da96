"""Random, fixed projections of the pretrained features (Sauer et al. 2021, Sec. 3.2).

CCM (cross-channel mixing): a random 1x1 conv per feature level.
CSM (cross-scale mixing): a random top-down (U-Net decoder-like) fusion. Two layouts:

  "official" (default), as the official Projected GAN code builds it: from the deepest level up, the running sum
      (deeper fused map + this level's CCM output) is upsampled x2 bilinearly and passed through a random 1x1 conv
      that halves its width (with `expand`; the finest level keeps it). Every fused level thus lands at twice its
      backbone resolution, with widths [w, w, 2w, 4w] (lite0 at 224: 112, 56, 28, 14 pixels). This is the layout
      under which the official StyleGAN2-generator recipe trains without collapsing (docs/parity_official.md).
  "compact" (this repository's design before 2026-12-06): the deeper map is upsampled x2 to the shallower level's
      size, passed through a random 3x3 conv to that level's width and added to it; levels stay at the backbone's
      resolution with widths [w, 2w, 4w, 8w]. Older snapshots load with it.

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


LAYOUTS = ("official", "compact")


class RandomProjection(torch.nn.Module):
    """Maps the four backbone levels to the features the mini-discriminators see.

    Args:
        in_channels: channels of the backbone levels, finest first (lite0: [24, 40, 112, 320]).
        proj_type:   0 = raw features, 1 = CCM, 2 = CCM + CSM (paper default).
        width:       CCM output width of the finest level.
        expand:      True doubles the width per level (width * [1, 2, 4, 8]) as in the paper; False keeps it.
        seed:        seed of the random weights (drawn from a local generator: the global RNG is untouched).
        layout:      CSM layout, "official" or "compact" (module docstring); only proj_type 2 depends on it.

    forward(feats): list of 4 tensors [N, in_channels[i], R_i, R_i] -> list of 4 [N, out_channels[i], S*R_i, S*R_i]
    with S = `self.scale` (2 for the official CSM, else 1).
    """

    def __init__(self, in_channels, proj_type=PROJ_CCM_CSM, width=64, expand=True, seed=0, layout="official"):
        super().__init__()
        if proj_type not in (PROJ_RAW, PROJ_CCM, PROJ_CCM_CSM):
            raise ValueError(f"proj_type={proj_type}: must be 0 (raw features), 1 (CCM) or 2 (CCM+CSM)")
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r}: must be one of {', '.join(map(repr, LAYOUTS))}")
        self.proj_type = proj_type
        self.layout = layout
        self.scale = 2 if (proj_type == PROJ_CCM_CSM and layout == "official") else 1
        if proj_type == PROJ_RAW:
            self.out_channels = list(in_channels)
            return
        g = torch.Generator().manual_seed(seed)
        ccm_channels = [width * (2 ** i if expand else 1) for i in range(len(in_channels))]
        self.ccm = torch.nn.ModuleList(RandomConv(c_in, c_out, 1, g) for c_in, c_out in zip(in_channels, ccm_channels))
        self.out_channels = list(ccm_channels)
        if proj_type == PROJ_CCM_CSM and layout == "official":
            # csm[i] fuses level i (and everything deeper) into level i's output, at twice level i's resolution.
            self.out_channels = [c // 2 if (expand and i > 0) else c for i, c in enumerate(ccm_channels)]
            self.csm = torch.nn.ModuleList(RandomConv(c_in, c_out, 1, g)
                                           for c_in, c_out in zip(ccm_channels, self.out_channels))
        elif proj_type == PROJ_CCM_CSM:
            # csm[i] carries level i+1 (deeper) up to level i's width.
            self.csm = torch.nn.ModuleList(
                RandomConv(ccm_channels[i + 1], ccm_channels[i], 3, g) for i in range(len(in_channels) - 1))

    def forward(self, feats):
        if self.proj_type == PROJ_RAW:
            return list(feats)
        out = [ccm(f) for ccm, f in zip(self.ccm, feats)]
        if self.proj_type != PROJ_CCM_CSM:
            return out
        if getattr(self, "layout", "compact") == "official":  # (objects pickled before layouts existed: compact)
            fused, x = [None] * len(out), None
            for i in reversed(range(len(out))):
                x = out[i] if x is None else x + out[i]
                x = self.csm[i](F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))
                fused[i] = x
            return fused
        for i in reversed(range(len(out) - 1)):  # Top-down: the deepest level is already final.
            up = F.interpolate(out[i + 1], size=out[i].shape[-2:], mode="bilinear", align_corners=False)
            out[i] = out[i] + self.csm[i](up)
        return out
