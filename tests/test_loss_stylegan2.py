"""Baseline StyleGAN2 loss: values against direct autograd computations, gradient routing per
phase, path-length EMA, style mixing, blur schedule, reporting."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import projector_plugin
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from training import loss as loss_module
from training.loss import StyleGAN2Loss

RES = 8


class ToyMapping(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws):
        super().__init__()
        self.num_ws, self.w_dim = num_ws, w_dim
        self.fc = torch.nn.Linear(z_dim + c_dim, w_dim)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        x = torch.cat([z, c], dim=1) if c is not None and c.shape[1] else z
        return self.fc(x).unsqueeze(1).repeat(1, self.num_ws, 1)


class ToySynthesis(torch.nn.Module):
    """Each w feeds its own linear map, so ws rows are distinguishable (for style mixing)."""

    def __init__(self, w_dim, num_ws, channels=3):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(w_dim, channels * RES * RES) for _ in range(num_ws)])
        self.channels = channels

    def forward(self, ws, noise_mode='random', update_emas=False):
        x = sum(layer(ws[:, i]) for i, layer in enumerate(self.layers))
        return torch.tanh(x).reshape(ws.shape[0], self.channels, RES, RES)


class ToyG(torch.nn.Module):
    def __init__(self, z_dim=4, c_dim=0, w_dim=5, num_ws=1):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.mapping = ToyMapping(z_dim, c_dim, w_dim, num_ws)
        self.synthesis = ToySynthesis(w_dim, num_ws)

    def forward(self, z, c, **kwargs):
        return self.synthesis(self.mapping(z, c))


class ToyD(torch.nn.Module):
    """Nonlinear in the image, so the R1 gradient depends on the input."""

    def __init__(self, channels=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * RES * RES, 1)

    def forward(self, img, c):
        return self.fc(F.leaky_relu(self.conv(img), 0.2).flatten(1))


class LinearD(torch.nn.Module):
    """D(x) = <a, x>: its R1 penalty is exactly ||a||^2 for every sample."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.randn(3, RES, RES))

    def forward(self, img, c):
        return (img * self.a).sum(dim=[1, 2, 3]).unsqueeze(1)


class Recorder:
    def __init__(self):
        self.values = {}

    def __call__(self, name, value):
        self.values.setdefault(name, []).append(value.detach().clone() if torch.is_tensor(value) else value)
        return value


def make(seed=0, num_ws=1, D_cls=ToyD, **loss_kwargs):
    torch.manual_seed(seed)
    G, D = ToyG(num_ws=num_ws), D_cls()
    rec = Recorder()
    loss = StyleGAN2Loss('cpu', G, D, report=rec, **loss_kwargs)
    return G, D, loss, rec


def batch(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand([n, 3, RES, RES], generator=g) * 2 - 1
    z = torch.randn([n, 4], generator=g)
    c = torch.zeros([n, 0])
    return real, c, z, c


def grads(module):
    return [None if p.grad is None else p.grad.clone() for p in module.parameters()]


def zero(*modules):
    for m in modules:
        for p in m.parameters():
            p.grad = None


# ----------------------------------------------------------------------------------------------


def test_r1_penalty_of_linear_D_is_squared_weight_norm():
    G, D, loss, rec = make(D_cls=LinearD, r1_gamma=3.0)
    real, c, z, _ = batch()
    loss.accumulate_gradients('Dreg', real, c, z, c, gain=1, cur_nimg=0)
    expected = D.a.detach().square().sum()
    torch.testing.assert_close(rec.values['Loss/r1_penalty'][0], expected.repeat(4))
    torch.testing.assert_close(rec.values['Loss/D/reg'][0], (1.5 * expected).repeat(4))
    # d/da (gamma/2 ||a||^2) = gamma * a
    torch.testing.assert_close(D.a.grad, 3.0 * D.a.detach())


@pytest.mark.parametrize('gain', [1.0, 16.0])
def test_r1_matches_direct_autograd(gain):
    G, D, loss, rec = make(r1_gamma=0.7)
    real, c, z, _ = batch()
    loss.accumulate_gradients('Dreg', real, c, z, c, gain=gain, cur_nimg=0)
    got = grads(D)

    zero(D)
    x = real.clone().requires_grad_(True)
    g, = torch.autograd.grad(D(x, c).sum(), x, create_graph=True)
    penalty = g.square().sum(dim=[1, 2, 3])
    (penalty.mean() * 0.7 / 2 * gain).backward()
    torch.testing.assert_close(rec.values['Loss/r1_penalty'][0], penalty.detach())
    for a, b in zip(got, grads(D)):
        torch.testing.assert_close(a, b)
    assert all(p.grad is None for p in G.parameters())


def test_dmain_matches_logistic_loss_and_dboth_adds_r1():
    G, D, loss, rec = make(r1_gamma=2.0)
    real, c, z, _ = batch()
    loss.accumulate_gradients('Dmain', real, c, z, c, gain=1, cur_nimg=0)
    got_main = grads(D)

    zero(D)
    with torch.no_grad():
        fake = G(z, c)
    direct = F.softplus(D(fake, c)).mean() + F.softplus(-D(real, c)).mean()
    direct.backward()
    for a, b in zip(got_main, grads(D)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(rec.values['Loss/D/loss'][0],
                               (F.softplus(D(fake, c)) + F.softplus(-D(real, c))).detach())

    # Dboth == Dmain + Dreg
    zero(D)
    loss.accumulate_gradients('Dboth', real, c, z, c, gain=1, cur_nimg=0)
    got_both = grads(D)
    zero(D)
    loss.accumulate_gradients('Dmain', real, c, z, c, gain=1, cur_nimg=0)
    loss.accumulate_gradients('Dreg', real, c, z, c, gain=1, cur_nimg=0)
    for a, b in zip(got_both, grads(D)):
        torch.testing.assert_close(a, b)


def test_gmain_matches_non_saturating_loss():
    G, D, loss, rec = make()
    real, c, z, _ = batch()
    loss.accumulate_gradients('Gmain', real, c, z, c, gain=2.0, cur_nimg=0)
    got = grads(G)
    zero(G, D)
    (F.softplus(-D(G(z, c), c)).mean() * 2.0).backward()
    for a, b in zip(got, grads(G)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(rec.values['Loss/G/loss'][0], F.softplus(-D(G(z, c), c)).detach())
    torch.testing.assert_close(rec.values['Loss/signs/fake'][0], D(G(z, c), c).detach().sign())


@pytest.mark.parametrize('phase,trained', [
    ('Gmain', 'G'), ('Greg', 'G'), ('Gboth', 'G'), ('Dmain', 'D'), ('Dreg', 'D'), ('Dboth', 'D'),
])
def test_phase_accumulates_only_into_its_network(phase, trained):
    G, D, loss, rec = make(num_ws=3, pl_weight=2.0, r1_gamma=1.0, style_mixing_prob=0.5)
    D.conv.bias.requires_grad_(False)  # a deliberately frozen parameter must stay frozen
    real, c, z, _ = batch()
    loss.accumulate_gradients(phase, real, c, z, c, gain=1, cur_nimg=0)
    net, other = (G, D) if trained == 'G' else (D, G)
    assert all(p.grad is None for p in other.parameters()), f'{phase} leaked gradients into the other network'
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert D.conv.bias.grad is None and not D.conv.bias.requires_grad
    assert all(p.requires_grad for p in G.parameters())
    assert all(p.requires_grad for n, p in D.named_parameters() if n != 'conv.bias')


def test_disabled_regularisers_do_nothing():
    G, D, loss, rec = make(pl_weight=0, r1_gamma=0)
    real, c, z, _ = batch()
    loss.accumulate_gradients('Greg', real, c, z, c, gain=1, cur_nimg=0)
    loss.accumulate_gradients('Dreg', real, c, z, c, gain=1, cur_nimg=0)
    assert all(p.grad is None for p in list(G.parameters()) + list(D.parameters()))
    assert rec.values == {}
    # and the 'both' phases degrade to the main ones
    loss.accumulate_gradients('Gboth', real, c, z, c, gain=1, cur_nimg=0)
    loss.accumulate_gradients('Dboth', real, c, z, c, gain=1, cur_nimg=0)
    assert 'Loss/G/loss' in rec.values and 'Loss/D/loss' in rec.values
    assert 'Loss/pl_penalty' not in rec.values and 'Loss/r1_penalty' not in rec.values


def test_path_length_penalty_and_ema():
    G, D, loss, rec = make(num_ws=2, pl_weight=3.0, pl_decay=0.25, pl_batch_shrink=2)
    real, c, z, _ = batch(n=6)
    torch.manual_seed(123)
    loss.accumulate_gradients('Greg', real, c, z, c, gain=1, cur_nimg=0)
    got = grads(G)

    # Direct computation with the same random direction.
    zero(G)
    torch.manual_seed(123)
    ws = G.mapping(z[:3], c[:3])
    img = G.synthesis(ws)
    noise = torch.randn_like(img) / np.sqrt(RES * RES)
    g, = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
    lengths = g.square().sum(2).mean(1).sqrt()
    pl_mean = 0.25 * lengths.mean().detach()  # EMA from 0
    penalty = (lengths - pl_mean).square()
    (penalty.mean() * 3.0).backward()
    torch.testing.assert_close(loss.pl_mean, pl_mean)
    torch.testing.assert_close(rec.values['Loss/pl_penalty'][0], penalty.detach())
    torch.testing.assert_close(rec.values['Loss/G/reg'][0], 3.0 * penalty.detach())
    assert rec.values['Loss/pl_penalty'][0].shape == (3,)  # batch shrunk by 2
    for a, b in zip(got, grads(G)):
        torch.testing.assert_close(a, b)

    # the EMA keeps moving towards the observed lengths
    before = loss.pl_mean.clone()
    loss.accumulate_gradients('Greg', real, c, z, c, gain=1, cur_nimg=0)
    assert loss.pl_mean != before


@pytest.mark.parametrize('fused', [False, True], ids=['modconv', 'fused-modconv'])
def test_path_length_runs_under_no_weight_gradients_with_the_same_result(fused, monkeypatch):
    """pl_no_weight_grad really switches conv2d_gradfix (no swallowed import) and changes no gradient,
    also for fused modulated convs, whose weights depend on ws."""
    from training.networks_stylegan2 import Generator
    entered = []
    real_context = conv2d_gradfix.no_weight_gradients

    def recording_context(disable=True):
        entered.append(disable)
        return real_context(disable)

    monkeypatch.setattr(conv2d_gradfix, 'no_weight_gradients', recording_context)
    results = []
    for flag in (False, True):
        torch.manual_seed(0)
        G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=RES, img_channels=3, channel_base=32, channel_max=8,
                      num_fp16_res=0, conv_clamp=None, mapping_kwargs=dict(num_layers=1),
                      fused_modconv_default=fused)
        loss = StyleGAN2Loss('cpu', G, ToyD(), pl_weight=2.0, pl_no_weight_grad=flag, report=Recorder())
        torch.manual_seed(1)
        z = torch.randn([4, 8])
        c = torch.zeros([4, 0])
        loss.accumulate_gradients('Greg', None, c, z, c, gain=1, cur_nimg=0)
        results.append(dict(G.named_parameters()))
        results[-1] = {name: p.grad.clone() for name, p in results[-1].items() if p.grad is not None}
    assert entered == [False, True]
    assert results[0].keys() == results[1].keys()
    assert any('conv' in name and 'weight' in name for name in results[1])  # conv weights get PL gradients
    for name in results[0]:
        torch.testing.assert_close(results[1][name], results[0][name], msg=lambda m, name=name: f'{name}: {m}')


def test_style_mixing_takes_a_suffix_of_ws_from_a_second_latent():
    G, D, loss, rec = make(num_ws=6, style_mixing_prob=1.0)
    _, c, z, _ = batch()
    torch.manual_seed(5)
    seen_cutoffs = set()
    for _ in range(30):
        _, ws = loss.run_G(z, c)
        own = G.mapping(z, c)
        same = torch.isclose(ws, own).all(dim=2).all(dim=0)  # per layer
        cutoff = int(same.long().sum())
        assert same[:cutoff].all() and not same[cutoff:].any()  # a prefix of own ws, then others
        assert 1 <= cutoff < 6
        seen_cutoffs.add(cutoff)
    assert len(seen_cutoffs) > 2
    # prob 0: never mixed
    loss.style_mixing_prob = 0
    torch.testing.assert_close(loss.run_G(z, c)[1], G.mapping(z, c))


def test_style_mixing_is_skipped_for_single_w_generators():
    from training.networks_fastgan import Generator
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=32, img_channels=3, ngf=2)
    loss = StyleGAN2Loss('cpu', G, ToyD(), style_mixing_prob=1.0, report=Recorder())
    z = torch.randn([3, 8])
    _, ws = loss.run_G(z, None)
    torch.testing.assert_close(ws, G.mapping(z, None))


def test_blur_schedule_and_gaussian_blur():
    _, _, loss, _ = make(blur_init_sigma=4, blur_fade_kimg=10)
    assert loss.blur_sigma(0) == 4
    assert loss.blur_sigma(5000) == pytest.approx(2)
    assert loss.blur_sigma(10000) == 0 and loss.blur_sigma(20000) == 0
    _, _, loss0, _ = make(blur_init_sigma=4, blur_fade_kimg=0)
    assert loss0.blur_sigma(0) == 0

    # One blur for both losses: the host uses the plugin's (StyleGAN3's kernel), not a copy.
    assert loss_module.gaussian_blur is projector_plugin.gaussian_blur
    const = torch.full([1, 3, 16, 16], 0.3)
    blurred = loss_module.gaussian_blur(const, 2.0)
    torch.testing.assert_close(blurred[:, :, 6:10, 6:10], const[:, :, 6:10, 6:10])  # normalised kernel
    x = torch.randn([2, 3, 16, 16])
    y = loss_module.gaussian_blur(x, 1.0)
    assert y.shape == x.shape and y.std() < 0.6 * x.std()
    torch.testing.assert_close(y.mean(dim=[2, 3]), x.mean(dim=[2, 3]), atol=0.05, rtol=0)
    assert loss_module.gaussian_blur(x, 0.2) is x  # support < 1 pixel: identity
    assert loss_module.gaussian_blur(torch.randn(1, 1, 4, 4), 5.0).shape == (1, 1, 4, 4)

    # D sees exactly the shared blur of its input at the scheduled sigma.
    seen = []
    _, _, loss, _ = make(blur_init_sigma=2, blur_fade_kimg=10, D_cls=lambda: RecordingD(seen))
    real, c, _, _ = batch()
    loss.accumulate_gradients('Dreg', real, c, None, c, gain=1, cur_nimg=5000)
    torch.testing.assert_close(seen[0], projector_plugin.gaussian_blur(real, 1.0))
    assert not torch.allclose(seen[0], real)


class RecordingD(ToyD):
    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def forward(self, img, c):
        self.seen.append(img.detach().clone())
        return super().forward(img, c)


def test_reports_every_documented_statistic():
    G, D, loss, rec = make(num_ws=2, pl_weight=1.0, r1_gamma=1.0)
    real, c, z, _ = batch()
    for phase in ['Gboth', 'Dboth']:
        loss.accumulate_gradients(phase, real, c, z, c, gain=1, cur_nimg=0)
    expected = {'Loss/scores/fake', 'Loss/scores/real', 'Loss/signs/fake', 'Loss/signs/real', 'Loss/G/loss',
                'Loss/D/loss', 'Loss/r1_penalty', 'Loss/D/reg', 'Loss/pl_penalty', 'Loss/G/reg'}
    assert set(rec.values) == expected
    assert all(torch.isfinite(v).all() for vs in rec.values.values() for v in vs)


def test_default_report_is_training_stats():
    loss = StyleGAN2Loss('cpu', ToyG(), ToyD())
    assert loss.report is training_stats.report


def test_bad_arguments():
    G, D = ToyG(), ToyD()
    real, c, z, _ = batch()
    with pytest.raises(ValueError, match='phase'):
        StyleGAN2Loss('cpu', G, D).accumulate_gradients('Gall', real, c, z, c, gain=1, cur_nimg=0)
    with pytest.raises(ValueError, match='r1_gamma'):
        StyleGAN2Loss('cpu', G, D, r1_gamma=-1)
    with pytest.raises(ValueError, match='style_mixing_prob'):
        StyleGAN2Loss('cpu', G, D, style_mixing_prob=2)
