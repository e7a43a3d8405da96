"""StyleGAN2 generator / discriminator: shapes, truncation, determinism, modulated conv paths,
mapping network, minibatch std, baseline D gradients. Small widths keep everything on CPU fast."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metrics.detectors import tf32_disabled
from training import networks_stylegan2 as sg2
from training.networks_stylegan2 import Discriminator, Generator

Z = W = 16
# channels(r) = min(1024 // r, 8): 8 up to 128x128, 4 at 256, 2 at 512.
TINY = dict(channel_base=1024, channel_max=8)


def make_G(res=32, c_dim=0, img_channels=3, seed=0, **kwargs):
    torch.manual_seed(seed)
    args = dict(TINY, mapping_kwargs=dict(num_layers=2))
    args.update(kwargs)
    return Generator(z_dim=Z, c_dim=c_dim, w_dim=W, img_resolution=res, img_channels=img_channels, **args)


def make_D(res=32, c_dim=0, img_channels=3, seed=0, **kwargs):
    torch.manual_seed(seed)
    args = dict(TINY)
    args.update(kwargs)
    return Discriminator(c_dim=c_dim, img_resolution=res, img_channels=img_channels, **args)


def one_hot(labels, c_dim):
    return F.one_hot(torch.as_tensor(labels), c_dim).float()


def set_noise_strength(G, value):
    for m in G.modules():
        if isinstance(m, sg2.SynthesisLayer) and m.use_noise:
            m.noise_strength.data.fill_(value)


# ----------------------------------------------------------------------------------------------
# Generator.


@pytest.mark.parametrize('res', [32, 64, 128, 256, 512])
@pytest.mark.parametrize('c_dim,img_channels', [(0, 3), (4, 1)])
def test_generator_output_shape_and_range(res, c_dim, img_channels):
    G = make_G(res, c_dim=c_dim, img_channels=img_channels)
    assert G.num_ws == 2 * int(np.log2(res)) - 2
    z = torch.randn([2, Z])
    c = one_hot([0, 3], c_dim) if c_dim else None
    ws = G.mapping(z, c)
    assert ws.shape == (2, G.num_ws, W)
    img = G.synthesis(ws)
    assert img.shape == (2, img_channels, res, res) and img.dtype == torch.float32
    assert torch.isfinite(img).all()
    # unbounded, but at initialisation the skip generator's output sits at roughly unit scale
    assert 0.05 < img.std() < 3
    assert img.abs().max() < 20


def test_channel_widths_follow_channel_base_and_max():
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=64, img_channels=3, channel_base=512, channel_max=16)
    assert [getattr(G.synthesis, f'b{r}').out_channels for r in [4, 8, 16, 32, 64]] == [16, 16, 16, 16, 8]
    D = Discriminator(c_dim=0, img_resolution=64, img_channels=3, channel_base=512, channel_max=16)
    assert [getattr(D, f'b{r}').out_channels for r in [64, 32, 16, 8]] == [16, 16, 16, 16]
    assert D.b64.tmp_channels == 8 and D.b4.in_channels == 16


def test_every_generator_parameter_receives_gradient():
    G = make_G(32, c_dim=3)
    img = G(torch.randn([2, Z]), one_hot([0, 2], 3))
    img.square().sum().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_truncation():
    G = make_G(16)
    with torch.no_grad():
        for _ in range(10):
            G.mapping(torch.randn([16, Z]), None, update_emas=True)
    w_avg = G.mapping.w_avg.clone()
    assert w_avg.abs().sum() > 0
    z = torch.randn([4, Z])
    with torch.no_grad():
        img0 = G(z, None, truncation_psi=0, noise_mode='const')
        torch.testing.assert_close(img0, img0[:1].expand_as(img0), rtol=0, atol=1e-6)
        ws = G.mapping(z, None)
        ws_half = G.mapping(z, None, truncation_psi=0.5)
        torch.testing.assert_close(ws_half, w_avg + 0.5 * (ws - w_avg))
        ws_cut = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=3)
        torch.testing.assert_close(ws_cut[:, :3], ws_half[:, :3])
        torch.testing.assert_close(ws_cut[:, 3:], ws[:, 3:])
        avg_img = G.synthesis(w_avg.reshape(1, 1, -1).repeat(1, G.num_ws, 1), noise_mode='const')
        d1 = (G.synthesis(ws, noise_mode='const') - avg_img).square().mean()
        d_half = (G.synthesis(ws_half, noise_mode='const') - avg_img).square().mean()
        assert d_half < d1


def test_w_avg_ema():
    G = make_G(32)
    z = torch.randn([8, Z])
    ws = G.mapping(z, None)
    assert G.mapping.w_avg.abs().sum() == 0
    G.mapping(z, None, update_emas=True)
    torch.testing.assert_close(G.mapping.w_avg, ws[:, 0].mean(0) * (1 - 0.998))


def test_determinism_and_noise_modes():
    Ga, Gb = make_G(16, seed=7), make_G(16, seed=7)
    set_noise_strength(Ga, 0.3)
    set_noise_strength(Gb, 0.3)
    z = torch.randn([2, Z])
    with torch.no_grad():
        a = Ga(z, None, noise_mode='const')
        torch.testing.assert_close(Gb(z, None, noise_mode='const'), a, rtol=0, atol=0)
        torch.testing.assert_close(Ga(z, None, noise_mode='const'), a, rtol=0, atol=0)
        assert not torch.allclose(Ga(z, None, noise_mode='random'), Ga(z, None, noise_mode='random'))
        none = Ga(z, None, noise_mode='none')
        assert not torch.allclose(none, a)
        set_noise_strength(Ga, 0.0)  # zero strength == no noise
        torch.testing.assert_close(Ga(z, None, noise_mode='random'), none)
        assert not torch.allclose(make_G(16, seed=8)(z, None, noise_mode='const'), a)
    with pytest.raises(ValueError, match='noise_mode'):
        Ga(z, None, noise_mode='fixed')


def test_snapshot_roundtrip():
    G = make_G(32, c_dim=2)
    G2 = make_G(32, c_dim=2, seed=1)
    G2.load_state_dict(copy.deepcopy(G).state_dict())
    z, c = torch.randn([2, Z]), one_hot([0, 1], 2)
    with torch.no_grad():
        torch.testing.assert_close(G2(z, c, noise_mode='const'), G(z, c, noise_mode='const'), rtol=0, atol=0)


@pytest.mark.parametrize('architecture', ['skip', 'orig', 'resnet'])
def test_fused_and_non_fused_modconv_agree(architecture):
    G = make_G(32, architecture=architecture)
    set_noise_strength(G, 0.2)
    z = torch.randn([3, Z])
    with torch.no_grad():
        fused = G(z, None, noise_mode='const', fused_modconv=True)
        split = G(z, None, noise_mode='const', fused_modconv=False)
    assert fused.shape == (3, 3, 32, 32)
    torch.testing.assert_close(fused, split, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('demodulate', [True, False])
@pytest.mark.parametrize('fused', [True, False])
def test_modulated_conv2d_matches_per_sample_reference(demodulate, fused):
    torch.manual_seed(0)
    x = torch.randn([3, 5, 8, 8])
    weight = torch.randn([4, 5, 3, 3])
    styles = torch.randn([3, 5])
    noise = torch.randn([3, 1, 8, 8])
    out = sg2.modulated_conv2d(x, weight, styles, noise=noise, padding=1, demodulate=demodulate, fused_modconv=fused)
    for n in range(3):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / w.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
        ref = F.conv2d(x[n:n + 1], w, padding=1) + noise[n:n + 1]
        torch.testing.assert_close(out[n:n + 1], ref, rtol=1e-4, atol=1e-4)
    if demodulate:  # demodulated outputs keep unit variance for unit-variance inputs
        clean = sg2.modulated_conv2d(torch.randn([3, 5, 32, 32]), weight, styles, padding=1, fused_modconv=fused)
        assert 0.7 < clean.std() < 1.3


def test_modulated_conv2d_upsampling_paths_agree():
    torch.manual_seed(0)
    from torch_utils.ops import upfirdn2d
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x, weight, styles = torch.randn([2, 4, 8, 8]), torch.randn([6, 4, 3, 3]), torch.randn([2, 4])
    a = sg2.modulated_conv2d(x, weight, styles, up=2, padding=1, resample_filter=f, flip_weight=False,
                             fused_modconv=True)
    b = sg2.modulated_conv2d(x, weight, styles, up=2, padding=1, resample_filter=f, flip_weight=False,
                             fused_modconv=False)
    assert a.shape == (2, 6, 16, 16)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_fully_connected_layer_equalised_lr():
    torch.manual_seed(0)
    fc = sg2.FullyConnectedLayer(64, 32, lr_multiplier=0.01, bias_init=0.5)
    assert 80 < fc.weight.std() < 120  # stored at 1/lr_multiplier scale
    x = torch.randn([5, 64])
    ref = x @ (fc.weight * 0.01 / 8).t() + fc.bias * 0.01
    torch.testing.assert_close(fc(x), ref)
    torch.testing.assert_close(fc.bias * 0.01, torch.full([32], 0.005))
    act = sg2.FullyConnectedLayer(64, 32, activation='lrelu')
    y = x @ (act.weight / 8).t()
    torch.testing.assert_close(act(x), F.leaky_relu(y, 0.2) * np.sqrt(2), rtol=1e-5, atol=1e-5)


def test_mapping_network_normalises_inputs_and_embeds_labels():
    torch.manual_seed(0)
    m = sg2.MappingNetwork(z_dim=Z, c_dim=3, w_dim=W, num_ws=5, num_layers=2)
    z, c = torch.randn([4, Z]), one_hot([0, 1, 2, 0], 3)
    ws = m(z, c)
    assert ws.shape == (4, 5, W)
    torch.testing.assert_close(ws, ws[:, :1].expand_as(ws))  # num_ws broadcast
    torch.testing.assert_close(m(10 * z, 3 * c), ws)  # second-moment normalisation of z and embed(c)
    assert not torch.allclose(m(z, one_hot([1, 2, 0, 1], 3)), ws)
    with pytest.raises(ValueError, match='c is None'):
        m(z, None)
    with pytest.raises(ValueError, match='z'):
        m(torch.randn([4, Z + 1]), c)


def test_mixed_precision_is_cuda_only():
    G = make_G(32, num_fp16_res=2)
    assert [getattr(G.synthesis, f'b{r}').use_fp16 for r in [4, 8, 16, 32]] == [False, False, True, True]
    assert G(torch.randn([2, Z]), None).dtype == torch.float32  # CPU: everything fp32
    D = make_D(32, num_fp16_res=2)
    assert [getattr(D, f'b{r}').use_fp16 for r in [32, 16, 8]] == [True, True, False]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='fp16 synthesis/discriminator blocks need CUDA')
def test_fp16_on_cuda_matches_fp32():
    G = make_G(64, num_fp16_res=2, conv_clamp=256).cuda()
    D = make_D(64, num_fp16_res=2, conv_clamp=256).cuda()
    z = torch.randn([4, Z], device='cuda')
    with torch.no_grad():
        ws = G.mapping(z, None)
        a = G.synthesis(ws, noise_mode='const')
        b = G.synthesis(ws, noise_mode='const', force_fp32=True)
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0, atol=0.05)
        la, lb = D(a, None), D(a, None, force_fp32=True)
        torch.testing.assert_close(la, lb, rtol=0.05, atol=0.05)


def test_conv_clamp_bounds_layer_outputs():
    torch.manual_seed(0)
    layer = sg2.Conv2dLayer(3, 4, kernel_size=3, activation='lrelu', conv_clamp=0.5)
    y = layer(torch.randn([2, 3, 8, 8]) * 100)
    assert y.abs().max() <= 0.5 + 1e-6 and (y.abs() > 0.49).any()


# ----------------------------------------------------------------------------------------------
# Discriminator.


@pytest.mark.parametrize('res,c_dim', [(32, 0), (64, 5), (128, 0), (256, 5), (512, 0)])
def test_discriminator_output_shape_and_image_gradient(res, c_dim):
    D = make_D(res, c_dim=c_dim)
    img = torch.randn([2, 3, res, res], requires_grad=True)
    c = one_hot([0, 4], c_dim) if c_dim else None
    logits = D(img, c)
    assert logits.shape == (2, 1) and torch.isfinite(logits).all()
    grad, = torch.autograd.grad(logits.sum(), img)
    assert grad.shape == img.shape and torch.isfinite(grad).all()
    assert grad.abs().sum(dim=[1, 2, 3]).min() > 0  # every sample's pixels influence its score


@pytest.mark.parametrize('architecture', ['resnet', 'skip', 'orig'])
def test_discriminator_architectures(architecture):
    D = make_D(32, img_channels=1, architecture=architecture)
    img = torch.randn([2, 1, 32, 32])
    out = D(img, None)
    assert out.shape == (2, 1)
    out.sum().backward()
    assert all(p.grad is not None for p in D.parameters())


def test_discriminator_projection_conditioning():
    D = make_D(32, c_dim=3, cmap_dim=6)
    img = torch.randn([1, 3, 32, 32]).repeat(3, 1, 1, 1)
    out = D(img, torch.eye(3))
    assert out.shape == (3, 1)
    assert out.std() > 0  # same image, different labels -> different scores
    # the label enters linearly through the projection: D(x, c1 + c2) relates to the embedding, so
    # at least check the logit equals <features, cmap> / sqrt(cmap_dim)
    with torch.no_grad():
        x = None
        im = img
        for res in D.block_resolutions:
            x, im = getattr(D, f'b{res}')(x, im)
        e = D.b4
        h = e.out(e.fc(e.conv(e.mbstd(x)).flatten(1)))
        cmap = D.mapping(None, torch.eye(3))
        torch.testing.assert_close(out.detach(), (h * cmap).sum(1, keepdim=True) / np.sqrt(6))
    with pytest.raises(ValueError, match='c is None'):
        D(img, None)


def test_minibatch_std_layer():
    torch.manual_seed(0)
    layer = sg2.MinibatchStdLayer(group_size=2, num_channels=1)
    x = torch.randn([4, 3, 2, 2])
    y = layer(x)
    assert y.shape == (4, 4, 2, 2)
    torch.testing.assert_close(y[:, :3], x)
    # groups are samples {0, 2} and {1, 3} (sample i in group i % (N / G))
    for group in [(0, 2), (1, 3)]:
        std = x[list(group)].std(dim=0, unbiased=False).mean()
        for i in group:
            torch.testing.assert_close(y[i, 3], torch.full([2, 2], float(std)), rtol=1e-4, atol=1e-4)
    # batch sizes that the group size does not divide fall back to the largest divisor
    layer4 = sg2.MinibatchStdLayer(group_size=4)
    assert layer4.group_size_for(6) == 3 and layer4.group_size_for(2) == 2 and layer4.group_size_for(7) == 1
    assert layer4(torch.randn([6, 2, 4, 4])).shape == (6, 3, 4, 4)
    D = make_D(32)
    assert D(torch.randn([3, 3, 32, 32]), None).shape == (3, 1)


def test_bad_shapes_raise_clear_errors():
    G, D = make_G(32), make_D(32)
    with pytest.raises(ValueError, match='synthesis ws'):
        G.synthesis(torch.randn([2, G.num_ws + 1, W]))
    with pytest.raises(ValueError, match='discriminator input'):
        D(torch.randn([2, 3, 64, 64]), None)
    with pytest.raises(ValueError, match='img_resolution'):
        Generator(Z, 0, W, 48, 3)
    with pytest.raises(ValueError, match='architecture'):
        make_D(32, architecture='dense')


def test_baseline_loss_trains_stylegan2_networks():
    """Integration: every phase of the baseline loss runs on the real networks and moves only
    the right one; a few D steps widen the real/fake score gap."""
    from training.loss import StyleGAN2Loss
    G, D = make_G(16), make_D(16)
    loss = StyleGAN2Loss('cpu', G, D, r1_gamma=1, pl_weight=2, style_mixing_prob=0.9, report=lambda n, v: v)
    real = torch.rand([4, 3, 16, 16]) * 2 - 1
    c = torch.zeros([4, 0])
    for phase, net, other in [('Gboth', G, D), ('Dboth', D, G)]:
        loss.accumulate_gradients(phase, real, c, torch.randn([4, Z]), c, gain=1, cur_nimg=0)
        assert all(p.grad is None for p in other.parameters())
        assert sum(p.grad.abs().sum() for p in net.parameters() if p.grad is not None) > 0
        net.zero_grad(set_to_none=True)
    assert loss.pl_mean > 0

    opt = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.0, 0.99))
    z = torch.randn([4, Z])
    with torch.no_grad():
        gap0 = (D(real, c) - D(G(z, c), c)).mean()
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        loss.accumulate_gradients('Dmain', real, c, z, c, gain=1, cur_nimg=0)
        opt.step()
    with torch.no_grad():
        gap = (D(real, c) - D(G(z, c), c)).mean()
    assert gap > gap0  # D separates reals from fakes better after a few steps


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU (the fused bias_act/upfirdn2d kernels)')
def test_cuda_kernels_inside_the_networks_match_the_cpu_reference_to_second_order():
    """G and D on the GPU (fused CUDA ops, fp32, no TF32) against the same networks on the CPU (PyTorch reference
    ops): images, logits, and the gradient of an R1 penalty w.r.t. D's weights, which differentiates through the
    kernels twice."""
    G, D = make_G(32, num_fp16_res=0), make_D(32, num_fp16_res=0)  # fp32 throughout (default: fp16 on CUDA)
    z = torch.randn([4, Z])

    def run(G, D, z):
        img = G(z, None, noise_mode='const')
        x = img.detach().requires_grad_()
        (g,) = torch.autograd.grad(D(x, None).sum(), x, create_graph=True)
        params = list(D.parameters())
        grads = torch.autograd.grad(g.square().sum(), params, allow_unused=True)  # The output bias: unused.
        grads = [torch.zeros_like(p) if d is None else d for p, d in zip(params, grads)]
        return img.detach(), D(img.detach(), None).detach(), grads

    ref = run(G, D, z)
    with tf32_disabled():
        got = run(copy.deepcopy(G).cuda(), copy.deepcopy(D).cuda(), z.cuda())
    torch.testing.assert_close(got[0].cpu(), ref[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[1].cpu(), ref[1], rtol=1e-4, atol=1e-4)
    for a, b in zip(got[2], ref[2]):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-3, atol=1e-4 * max(1.0, b.abs().max().item()))
