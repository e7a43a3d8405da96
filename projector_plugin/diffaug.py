"""DiffAugment (Zhao et al., NeurIPS 2020): differentiable augmentations applied to real *and* fake images.

`DiffAugment(x, policy='color,translation,cutout')` maps x [N, C, H, W] (any float range; the projected
discriminator feeds [-1, 1]) to an augmented tensor of the same shape. Every op is a differentiable function
of x, with independent randomness per sample, so gradients flow back to the generator through it.
Pass `generator=` (a torch.Generator on x's device) for reproducible draws.
"""

import torch
import torch.nn.functional as F


def _rand(x, *shape, generator=None):
    return torch.rand(x.shape[0], *shape, device=x.device, dtype=x.dtype, generator=generator)


def rand_brightness(x, generator=None):
    """Add a per-sample offset in [-0.5, 0.5)."""
    return x + (_rand(x, 1, 1, 1, generator=generator) - 0.5)


def rand_saturation(x, generator=None):
    """Scale each pixel's deviation from its channel mean by a per-sample factor in [0, 2)."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x, 1, 1, 1, generator=generator) * 2) + mean


def rand_contrast(x, generator=None):
    """Scale the deviation from the image mean by a per-sample factor in [0.5, 1.5)."""
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x, 1, 1, 1, generator=generator) + 0.5) + mean


def rand_translation(x, ratio=0.125, generator=None):
    """Shift each image by a random integer offset of up to `ratio` of its size, filling with zeros."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device, generator=generator)
    tx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device, generator=generator)
    # Index into a copy padded by one zero pixel: every out-of-range source coordinate is clamped onto it.
    gy = (torch.arange(h, device=x.device).view(1, h, 1) - ty + 1).clamp(0, h + 1)
    gx = (torch.arange(w, device=x.device).view(1, 1, w) - tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, gy, gx].permute(0, 3, 1, 2)


def rand_cutout(x, ratio=0.5, generator=None):
    """Zero a random square of `ratio` times the image size (it may extend past the border)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device, generator=generator)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device, generator=generator)
    top, left = oy - ch // 2, ox - cw // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


AUGMENT_FNS = {
    "color": [rand_brightness, rand_saturation, rand_contrast],
    "brightness": [rand_brightness],
    "saturation": [rand_saturation],
    "contrast": [rand_contrast],
    "translation": [rand_translation],
    "cutout": [rand_cutout],
}


def parse_policy(policy):
    """'color,translation,cutout' -> ['color', 'translation', 'cutout'], validating every name."""
    names = [p.strip() for p in (policy or "").split(",") if p.strip()]
    unknown = [p for p in names if p not in AUGMENT_FNS]
    if unknown:
        raise ValueError(f"DiffAugment policy '{policy}': unknown augmentation(s) {unknown}; "
                         f"choose from {sorted(AUGMENT_FNS)}")
    return names


def DiffAugment(x, policy="color,translation,cutout", generator=None):
    """Apply the augmentations named in `policy` (comma-separated, in order) to x [N, C, H, W]."""
    for name in parse_policy(policy):
        for fn in AUGMENT_FNS[name]:
            x = fn(x, generator=generator)
    return x.contiguous()
