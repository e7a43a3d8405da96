"""projector_plugin.diffaug: DiffAugment's ops, policies and differentiability."""

import pytest
import torch

from projector_plugin import DiffAugment, diffaug


def _imgs(n=2, res=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, res, res, generator=g) * 2 - 1


def test_diffaugment_is_differentiable():
    x = _imgs(4, 16).requires_grad_(True)
    y = DiffAugment(x, "color,translation,cutout", generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_translation_shifts_content():
    n, h = 16, 32
    x = torch.arange(h * h, dtype=torch.float32).view(1, 1, h, h).repeat(n, 3, 1, 1) + 1  # All pixels distinct, > 0.
    y = diffaug.rand_translation(x, ratio=0.125, generator=torch.Generator().manual_seed(0))
    shifts = set()
    for i in range(n):
        nz = y[i, 0].nonzero()
        (y0, x0) = nz[0].tolist()
        src = int(y[i, 0, y0, x0].item()) - 1
        ty, tx = y0 - src // h, x0 - src % h
        assert abs(ty) <= 4 and abs(tx) <= 4
        expected = torch.zeros(h, h)
        ys, xs = slice(max(ty, 0), h + min(ty, 0)), slice(max(tx, 0), h + min(tx, 0))
        expected[ys, xs] = x[i, 0, max(-ty, 0):h - max(ty, 0), max(-tx, 0):h - max(tx, 0)]
        assert torch.equal(y[i, 0], expected)
        shifts.add((ty, tx))
    assert len(shifts) > 3


def test_cutout_zeroes_one_square_region():
    x = torch.rand(8, 3, 32, 32) + 1  # No natural zeros.
    y = diffaug.rand_cutout(x, ratio=0.5, generator=torch.Generator().manual_seed(0))
    for i in range(8):
        zero = (y[i] == 0).all(0)
        assert 0 < zero.sum() <= 16 * 16
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert zero.sum() == len(rows) * len(cols)  # A (possibly clipped) axis-aligned rectangle.
        assert len(rows) <= 16 and len(cols) <= 16
        assert torch.equal(y[i][:, ~zero], x[i][:, ~zero])  # Everything else untouched.


def test_policies_combine_in_order():
    x = _imgs(4, 16)
    combined = DiffAugment(x, "translation,cutout", generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    manual = diffaug.rand_cutout(diffaug.rand_translation(x, generator=g), generator=g)
    assert torch.equal(combined, manual)
    assert torch.equal(DiffAugment(x, ""), x)
    with pytest.raises(ValueError, match="rotation"):
        DiffAugment(x, "color,rotation")


def test_color_ops_follow_their_formulas():
    x = _imgs(2, 8)
    g = torch.Generator().manual_seed(0)
    r = torch.rand(2, 1, 1, 1, generator=torch.Generator().manual_seed(0)) - 0.5
    assert torch.allclose(diffaug.rand_brightness(x, generator=g), x + r)
    y = diffaug.rand_contrast(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(y.mean(dim=[1, 2, 3]), x.mean(dim=[1, 2, 3]), atol=1e-6)  # Contrast keeps the mean.
