"""The Gaussian blur that fades in the discriminator's view of images at the start of training.

One definition for the plugin's loss and for the host's StyleGAN2Loss, with StyleGAN3's kernel: at the same
`sigma` both losses (and StyleGAN3 or Projected GAN configs ported here) blur by the same amount.
"""

import math

import torch
import torch.nn.functional as F


def blur_kernel(sigma, device=None, dtype=torch.float32):
    """1-D taps f(x) = 2^(-(x / sigma)^2) for x = -r..r, r = floor(3 sigma), summing to 1 -> [2r + 1].

    This is a Gaussian of standard deviation sigma / sqrt(2 ln 2) (not sigma): StyleGAN3 parameterises its blur
    this way, and matching it keeps `blur_init_sigma` values interchangeable with StyleGAN3 and Projected GAN
    configs. Returns an empty tensor when r = 0 (sigma < 1/3: no blur).
    """
    radius = int(math.floor(float(sigma) * 3))
    if radius <= 0:
        return torch.zeros(0, device=device, dtype=dtype)
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    f = torch.exp2(-(x / float(sigma)).square())
    return (f / f.sum()).to(dtype)


def gaussian_blur(img, sigma):
    """Separable blur with `blur_kernel(sigma)` and zero padding: img [N, C, H, W] -> [N, C, H, W].

    Returns `img` itself when sigma < 1/3 (the kernel would be a single tap). Any H, W >= 1 works, also smaller
    than the kernel. Differentiable in `img`.
    """
    f = blur_kernel(sigma, device=img.device, dtype=img.dtype)
    if f.numel() == 0:
        return img
    if img.ndim != 4:
        raise ValueError(f"gaussian_blur expects images [N, C, H, W], got shape {list(img.shape)}")
    radius = (f.numel() - 1) // 2
    c = img.shape[1]
    img = F.conv2d(img, f.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return F.conv2d(img, f.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)
