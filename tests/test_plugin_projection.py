"""projector_plugin.projection: the fixed random CCM / CSM projections."""

import pytest
import torch
import torch.nn.functional as F

from projector_plugin.projection import RandomProjection

CHANNELS = [24, 40, 112, 320]
RES = [16, 8, 4, 2]


def _feats(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, r, r, generator=g) for c, r in zip(CHANNELS, RES)]


def test_weights_are_seeded_buffers_not_parameters_and_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = RandomProjection(CHANNELS, seed=0), RandomProjection(CHANNELS, seed=0)
    other = RandomProjection(CHANNELS, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert list(a.parameters()) == []
    sd = a.state_dict()
    assert len(sd) == 2 * (4 + 4)  # weight + bias of 4 CCM and 4 CSM convs (official layout).
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in sd.items())
    assert not torch.equal(sd["ccm.0.weight"], other.state_dict()["ccm.0.weight"])
    assert sd["ccm.3.weight"].shape == (512, 320, 1, 1) and sd["csm.3.weight"].shape == (256, 512, 1, 1)
    assert sd["csm.0.weight"].shape == (64, 64, 1, 1)
    compact = RandomProjection(CHANNELS, seed=0, layout="compact").state_dict()
    assert len(compact) == 2 * (4 + 3) and compact["csm.0.weight"].shape == (64, 128, 3, 3)


@pytest.mark.parametrize("proj_type, expand, layout, expected, scale", [
    (0, True, "official", CHANNELS, 1), (1, True, "official", [64, 128, 256, 512], 1),
    (2, True, "official", [64, 64, 128, 256], 2), (2, False, "official", [64] * 4, 2),
    (2, True, "compact", [64, 128, 256, 512], 1), (2, False, "compact", [64] * 4, 1)])
def test_output_channels_and_shapes(proj_type, expand, layout, expected, scale):
    proj = RandomProjection(CHANNELS, proj_type=proj_type, expand=expand, layout=layout)
    assert proj.out_channels == expected and proj.scale == scale
    out = proj(_feats())
    assert [tuple(o.shape) for o in out] == [(2, c, r * scale, r * scale) for c, r in zip(expected, RES)]


def test_raw_features_pass_through_unchanged():
    feats = _feats()
    out = RandomProjection(CHANNELS, proj_type=0)(feats)
    assert all(o is f for o, f in zip(out, feats))


def test_official_csm_follows_its_formula():
    """From the deepest level up: x = conv1x1(bilinear x2, align_corners=True, of (x + CCM_i)); level i's output
    is that x, at twice level i's resolution, halving the width (the finest level keeps it)."""
    feats = _feats()
    full = RandomProjection(CHANNELS, proj_type=2, seed=4)
    ccm = [F.conv2d(f, full.ccm[i].weight, full.ccm[i].bias) for i, f in enumerate(feats)]
    expected, x = [None] * 4, None
    for i in (3, 2, 1, 0):
        x = ccm[i] if x is None else x + ccm[i]
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        x = expected[i] = F.conv2d(up, full.csm[i].weight, full.csm[i].bias)
    for a, b in zip(full(feats), expected):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_compact_ccm_and_csm_follow_their_formulas():
    """CCM: a 1x1 conv per level. CSM: top-down, level i += conv3x3(bilinear x2 of the final level i+1)."""
    feats = _feats()
    ccm_only = RandomProjection(CHANNELS, proj_type=1, seed=4)
    full = RandomProjection(CHANNELS, proj_type=2, seed=4, layout="compact")
    ccm = [F.conv2d(f, full.ccm[i].weight, full.ccm[i].bias) for i, f in enumerate(feats)]
    for a, b in zip(ccm_only(feats), ccm):  # Same seed: CCM weights are drawn first, identically.
        assert torch.allclose(a, b, atol=1e-5)
    expected = list(ccm)
    for i in (2, 1, 0):
        up = F.interpolate(expected[i + 1], scale_factor=2, mode="bilinear", align_corners=False)
        expected[i] = expected[i] + F.conv2d(up, full.csm[i].weight, full.csm[i].bias, padding=1)
    for a, b in zip(full(feats), expected):
        assert torch.allclose(a, b, atol=1e-5)


def test_kaiming_init_keeps_the_feature_scale():
    proj = RandomProjection(CHANNELS, proj_type=1)
    x = torch.randn(64, 320, 2, 2)
    y = F.conv2d(x, proj.ccm[3].weight)
    assert 0.8 < y.std().item() < 1.2


def test_bad_proj_type_or_layout_is_rejected():
    with pytest.raises(ValueError, match="proj_type=3"):
        RandomProjection(CHANNELS, proj_type=3)
    with pytest.raises(ValueError, match="layout='unet': must be one of 'official', 'compact'"):
        RandomProjection(CHANNELS, layout="unet")
