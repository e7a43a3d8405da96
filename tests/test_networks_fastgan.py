"""FastGAN generator: shapes, ranges, interface, truncation, determinism, conditioning."""

import copy

import pytest
import torch

from projector_plugin.spectral_norm import SNConv2d
from training import networks_fastgan
from training.networks_fastgan import Generator

Z = 16


def make_G(res=32, c_dim=0, img_channels=3, lite=False, ngf=4, seed=0):
    torch.manual_seed(seed)
    return Generator(z_dim=Z, c_dim=c_dim, w_dim=Z, img_resolution=res, img_channels=img_channels, ngf=ngf, lite=lite)


def one_hot(labels, c_dim):
    return torch.nn.functional.one_hot(torch.as_tensor(labels), c_dim).float()


def set_noise_strength(G, value):
    for m in G.modules():
        if isinstance(m, networks_fastgan.NoiseInjection):
            m.strength.data.fill_(value)


@pytest.mark.parametrize('res', [32, 64, 128, 256, 512])
@pytest.mark.parametrize('lite', [False, True])
@pytest.mark.parametrize('c_dim,img_channels', [(0, 3), (5, 1)])
def test_output_shape_and_range(res, lite, c_dim, img_channels):
    G = make_G(res, c_dim=c_dim, img_channels=img_channels, lite=lite, ngf=2 if res >= 256 else 4)
    z = torch.randn([3, Z])
    c = one_hot([0, 1, 4], c_dim) if c_dim else None
    ws = G.mapping(z, c)
    assert ws.shape == (3, 1, Z)
    img = G.synthesis(ws, noise_mode='random')
    assert img.shape == (3, img_channels, res, res)
    assert img.dtype == torch.float32
    assert torch.isfinite(img).all()
    assert img.abs().max() <= 1  # tanh
    assert img.std() > 1e-3  # not a constant image
    assert G.num_ws == 1 and G.img_resolution == res and G.img_channels == img_channels


def test_mapping_normalises_z_onto_hypersphere():
    G = make_G()
    z = torch.randn([4, Z]) * torch.tensor([[0.1], [1.0], [10.0], [100.0]])
    ws = G.mapping(z, None)
    torch.testing.assert_close(ws[:, 0].square().mean(dim=1), torch.ones(4), rtol=1e-4, atol=1e-4)
    # direction preserved: scaling z does not change w
    torch.testing.assert_close(G.mapping(3 * z, None), ws)


def test_channel_table_and_block_structure():
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=256, img_channels=3, ngf=8)
    Gl = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=256, img_channels=3, ngf=8, lite=True)
    expected = {4: 128, 8: 64, 16: 32, 32: 16, 64: 16, 128: 8, 256: 4}
    assert {r: networks_fastgan.channels_at(r, 8) for r in expected} == expected
    for res in [8, 16, 32, 64, 128, 256]:
        assert len(G.synthesis.blocks[str(res)].convs) == 2
        assert len(Gl.synthesis.blocks[str(res)].convs) == 1
        assert G.synthesis.blocks[str(res)].convs[0].out_channels == 2 * expected[res]  # GLU halves it
    assert G.synthesis.to_rgb.in_channels == expected[256]
    n_full = sum(p.numel() for p in G.parameters())
    n_lite = sum(p.numel() for p in Gl.parameters())
    assert n_lite < n_full
    # every conv is spectrally normalised
    for m in G.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            assert isinstance(m, SNConv2d) or torch.nn.utils.parametrize.is_parametrized(m, "weight"), m


def test_sle_pairs_follow_fastgan():
    assert networks_fastgan.sle_pairs(1024) == [(4, 64), (8, 128), (16, 256), (32, 512)]
    assert networks_fastgan.sle_pairs(256) == [(4, 64), (8, 128), (16, 256)]
    assert networks_fastgan.sle_pairs(64) == [(4, 64)]
    assert networks_fastgan.sle_pairs(32) == [(4, 32)]


def test_sle_gates_the_big_feature_map():
    torch.manual_seed(0)
    sle = networks_fastgan.SkipLayerExcitation(6, 5)
    small, big = torch.randn(2, 6, 8, 8), torch.randn(2, 5, 16, 16)
    out = sle(small, big)
    gate = out / big
    # one gate per (sample, channel), in (0, 1)
    assert torch.allclose(gate, gate[:, :, :1, :1].expand_as(gate), atol=1e-5)
    assert (gate > 0).all() and (gate < 1).all()
    # the gate depends on the small map
    assert not torch.allclose(sle(small * 3 + 1, big), out)


def test_every_parameter_receives_gradient():
    G = make_G(64, c_dim=3)
    z = torch.randn([2, Z])
    G(z, one_hot([0, 2], 3)).square().sum().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for n, p in G.named_parameters() if 'noises' not in n)


def test_truncation_psi0_gives_identical_images_and_psi_interpolates():
    G = make_G(32).eval()
    z = torch.randn([4, Z])
    with torch.no_grad():
        for _ in range(20):  # give w_avg a non-trivial value
            G.mapping(torch.randn([8, Z]) + 1.0, None, update_emas=True)
        w_avg = G.mapping.w_avg.clone()
        assert w_avg.abs().sum() > 0
        img0 = G(z, None, truncation_psi=0, noise_mode='const')
        assert torch.allclose(img0, img0[:1].expand_as(img0), atol=1e-6)
        ws1 = G.mapping(z, None)
        ws_half = G.mapping(z, None, truncation_psi=0.5)
        torch.testing.assert_close(ws_half, w_avg + 0.5 * (ws1 - w_avg))
        torch.testing.assert_close(G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=0), ws1)
        avg_img = G.synthesis(w_avg.reshape(1, 1, -1), noise_mode='const')
        d1 = (G(z, None, noise_mode='const') - avg_img).square().mean()
        d_half = (G(z, None, truncation_psi=0.5, noise_mode='const') - avg_img).square().mean()
        assert d_half < d1


def test_w_avg_tracks_only_with_update_emas():
    G = make_G(32)
    z = torch.randn([8, Z])
    G.mapping(z, None)
    assert G.mapping.w_avg.abs().sum() == 0
    ws = G.mapping(z, None, update_emas=True)
    torch.testing.assert_close(G.mapping.w_avg, ws[:, 0].mean(0) * (1 - 0.998))


def test_determinism_fixed_seed_and_const_noise():
    Ga, Gb = make_G(64, seed=3).eval(), make_G(64, seed=3).eval()
    set_noise_strength(Ga, 0.5)
    set_noise_strength(Gb, 0.5)
    z = torch.randn([2, Z])
    with torch.no_grad():
        a = Ga(z, None, noise_mode='const')
        torch.testing.assert_close(Gb(z, None, noise_mode='const'), a, rtol=0, atol=0)
        torch.testing.assert_close(Ga(z, None, noise_mode='const'), a, rtol=0, atol=0)
        r1, r2 = Ga(z, None, noise_mode='random'), Ga(z, None, noise_mode='random')
        assert not torch.allclose(r1, r2)
        n1, n2 = Ga(z, None, noise_mode='none'), Ga(z, None, noise_mode='none')
        torch.testing.assert_close(n1, n2, rtol=0, atol=0)
        assert not torch.allclose(n1, a)
    with pytest.raises(ValueError, match='noise_mode'):
        Ga(z, None, noise_mode='bogus')
    assert not torch.allclose(make_G(64, seed=4).eval()(z, None, noise_mode='const'), a)


def test_snapshot_roundtrip_and_deepcopy():
    G = make_G(32, c_dim=2)
    z, c = torch.randn([3, Z]), one_hot([0, 1, 1], 2)
    G(z, c)  # one training step of BN statistics and spectral-norm power iteration
    G_ema = copy.deepcopy(G).eval()
    state = G.state_dict()
    G2 = make_G(32, c_dim=2, seed=99)
    G2.load_state_dict(state)
    G2.eval()
    with torch.no_grad():
        torch.testing.assert_close(G2(z, c, noise_mode='const'), G_ema(z, c, noise_mode='const'), rtol=0, atol=0)


def test_conditional_labels_change_output_and_are_validated():
    G = make_G(32, c_dim=4).eval()
    z = torch.randn([1, Z]).repeat(4, 1)
    with torch.no_grad():
        img = G(z, torch.eye(4), noise_mode='const')
    for i in range(4):
        for j in range(i + 1, 4):
            assert (img[i] - img[j]).abs().max() > 1e-4
    with pytest.raises(ValueError, match='c of shape'):
        G(z, None)
    with pytest.raises(ValueError, match='c of shape'):
        G(z, torch.zeros(4, 3))


@pytest.mark.parametrize('kwargs,match', [
    (dict(img_resolution=48), 'img_resolution'),
    (dict(img_resolution=16), 'img_resolution'),
    (dict(img_channels=2), 'img_channels'),
    (dict(w_dim=8), 'w_dim'),
    (dict(channel_base=1), 'unknown synthesis'),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    args = dict(z_dim=Z, c_dim=0, w_dim=Z, img_resolution=32, img_channels=3, ngf=4)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        Generator(**args)


def _naive_up_block_conv(x, weight):
    return torch.nn.functional.conv2d(torch.nn.functional.interpolate(x, scale_factor=2, mode='nearest'), weight,
                                      padding=1)


def test_fused_upsample_conv_equals_nearest_upsample_then_conv():
    g = torch.Generator().manual_seed(0)
    for shape in [(2, 3, 4, 5), (1, 6, 7, 7), (3, 2, 1, 1)]:
        x = torch.randn(shape, dtype=torch.float64, generator=g, requires_grad=True)
        w = torch.randn([5, shape[1], 3, 3], dtype=torch.float64, generator=g, requires_grad=True)
        got = networks_fastgan.upsample2x_conv3x3(x, w)
        ref = _naive_up_block_conv(x, w)
        assert got.shape == ref.shape == (shape[0], 5, 2 * shape[2], 2 * shape[3])
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
        dy = torch.randn(ref.shape, dtype=torch.float64, generator=g)
        for a, b in zip(torch.autograd.grad(got, [x, w], dy), torch.autograd.grad(ref, [x, w], dy)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('n, channels, hw, up, fused, scale_output', [
    (1, (40, 2), 3, True, False, True),    # few positions, weight larger than the output: the 4 -> 8 block
    (1, (2, 3), 4, True, False, False),
    (2, (2, 3), 12, True, True, False),    # many positions (288), small weight: the high-resolution blocks
    (1, (120, 2), 16, True, True, True),   # fused, and the output (1 x 2 x 32 x 32) still smaller than W
    (2, (3, 4), 5, False, False, False),   # the second conv of a block
    (1, (40, 40), 3, False, False, True),
])
def test_sn_conv3x3_paths_compute_the_same_function(n, channels, hw, up, fused, scale_output):
    """Each way sn_conv3x3 can take equals upsample-then-conv with W / sigma(W), values and gradients (float64)."""
    torch.manual_seed(0)
    conv = networks_fastgan.conv3x3(*channels).double().eval()  # eval: sigma from the stored u, v (no update)
    x = torch.randn([n, channels[0], hw, hw], dtype=torch.float64, requires_grad=True)
    out_numel = n * conv.out_channels * hw * hw * (4 if up else 1)
    assert (out_numel < conv.weight.numel()) == scale_output
    assert (up and n * hw * hw >= networks_fastgan.FUSED_UP_MIN_POSITIONS) == fused
    got = networks_fastgan.sn_conv3x3(conv, x, up=up)
    w = conv.weight / conv.sigma()
    ref = _naive_up_block_conv(x, w) if up else torch.nn.functional.conv2d(x, w, padding=1)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(got, [x, conv.weight], dy), torch.autograd.grad(ref, [x, conv.weight], dy)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_init_and_state_dicts_match_the_torch_parametrisation():
    """SNConv draws its weight and power-iteration vectors as `_sn` + torch's spectral_norm did, so seeds give the
    networks they gave before; and a state dict written with the parametrisation (older snapshots) loads."""
    torch.manual_seed(7)
    ref = networks_fastgan._sn(torch.nn.Conv2d(6, 10, 3, 1, 1, bias=False))
    torch.manual_seed(7)
    conv = networks_fastgan.conv3x3(6, 10)
    torch.testing.assert_close(conv.weight, ref.parametrizations.weight.original, rtol=0, atol=0)
    torch.testing.assert_close(conv.u, ref.parametrizations.weight[0]._u, rtol=0, atol=1e-7)
    torch.testing.assert_close(conv.v, ref.parametrizations.weight[0]._v, rtol=0, atol=1e-7)
    x = torch.randn(2, 6, 5, 5)
    torch.testing.assert_close(conv.eval()(x), ref.eval()(x), rtol=1e-5, atol=1e-6)
    fresh = networks_fastgan.conv3x3(6, 10)
    fresh.load_state_dict(ref.state_dict())
    assert torch.equal(fresh.weight, conv.weight) and torch.equal(fresh.u, ref.parametrizations.weight[0]._u)


@pytest.mark.parametrize('lite', [False, True])
def test_generator_equals_the_unfused_network(lite, monkeypatch):
    """The fused up-block conv and F.glu change no output or gradient of the generator (fixed seed)."""
    G = make_G(64, lite=lite, seed=4)
    set_noise_strength(G, 0.3)
    z = torch.randn([3, Z], generator=torch.Generator().manual_seed(5))

    def run():
        G.zero_grad(set_to_none=True)
        Gc = copy.deepcopy(G)  # same weights and spectral-norm state for both runs
        img = Gc(z, None, noise_mode='const')
        img.square().sum().backward()
        return img.detach(), {n: p.grad for n, p in Gc.named_parameters()}

    img, grads = run()
    monkeypatch.setattr(networks_fastgan, 'upsample2x_conv3x3', _naive_up_block_conv)
    monkeypatch.setattr(networks_fastgan.GLU, 'forward', lambda self, x: x[:, :x.shape[1] // 2] * torch.sigmoid(
        x[:, x.shape[1] // 2:]))
    ref_img, ref_grads = run()
    torch.testing.assert_close(img, ref_img, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name in grads:  # fp32 (the network casts to it): errors relative to each gradient's largest entry
        scale = ref_grads[name].abs().max().clamp(min=1e-12)
        torch.testing.assert_close(grads[name] / scale, ref_grads[name] / scale, rtol=0, atol=1e-4,
                                   msg=lambda m, name=name: f'{name}: {m}')
