"""projector_plugin.spectral_norm: SNConv2d and SNLinear against torch's spectral_norm and the explicit formula."""

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from projector_plugin.spectral_norm import SNConv2d, SNLinear


def test_sn_conv_is_still_importable_from_the_discriminator_module():
    from projector_plugin import discriminator
    assert discriminator.SNConv2d is SNConv2d and discriminator.SNLinear is SNLinear


def test_spectral_norm_conv_matches_torch_spectral_norm():
    """Same seed -> same weights and u/v estimates as torch's parametrization; eval outputs agree."""
    torch.manual_seed(0)
    ours = SNConv2d(16, 32, 4, 2, 1)
    torch.manual_seed(0)
    ref = spectral_norm(torch.nn.Conv2d(16, 32, 4, 2, 1))
    assert torch.equal(ours.weight, ref.parametrizations.weight.original)
    assert torch.allclose(ours.u, ref.parametrizations.weight[0]._u, atol=1e-6)
    assert torch.allclose(ours.v, ref.parametrizations.weight[0]._v, atol=1e-6)
    x = torch.randn(4, 16, 8, 8)
    ours.eval(), ref.eval()
    assert torch.allclose(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_spectral_norm_linear_matches_torch_spectral_norm():
    """SNLinear: same seed -> same weight, bias, u, v as torch's parametrization; eval outputs agree."""
    torch.manual_seed(0)
    ours = SNLinear(10, 64)
    torch.manual_seed(0)
    ref = spectral_norm(torch.nn.Linear(10, 64))
    assert torch.equal(ours.weight, ref.parametrizations.weight.original) and torch.equal(ours.bias, ref.bias)
    assert ours.u.shape == (64,) and ours.v.shape == (10,)
    assert torch.allclose(ours.u, ref.parametrizations.weight[0]._u, atol=1e-6)
    assert torch.allclose(ours.v, ref.parametrizations.weight[0]._v, atol=1e-6)
    x = torch.randn(5, 10)
    ours.eval(), ref.eval()
    assert torch.allclose(ours(x), ref(x), rtol=1e-5, atol=1e-6)
    assert torch.allclose(ours.sigma(), torch.dot(ref.parametrizations.weight[0]._u,
                                                  ref.parametrizations.weight.original @ ours.v), rtol=1e-6)


def test_spectral_norm_conv_training_step_equals_weight_normalisation():
    """Training forward: one power iteration, then conv(x, W / sigma) + b with sigma = u^T W v (u, v constant):
    outputs and the gradients for x, W and b equal that explicit formula."""
    torch.manual_seed(0)
    conv = SNConv2d(8, 16, 3, 1, 1).train()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    g = torch.randn(2, 16, 6, 6)
    u0 = conv.u.clone()
    w = conv.weight.detach().clone().requires_grad_(True)
    b = conv.bias.detach().clone().requires_grad_(True)
    v = F.normalize(w.detach().flatten(1).t() @ u0, dim=0)
    u = F.normalize(w.detach().flatten(1) @ v, dim=0)
    sigma = u @ w.flatten(1) @ v
    expected = F.conv2d(x, w / sigma, b, padding=1)
    ex_grads = torch.autograd.grad(expected, (x, w, b), g)
    got = conv(x)
    grads = torch.autograd.grad(got, (x, conv.weight, conv.bias), g)
    assert torch.allclose(got, expected, atol=1e-5)
    for a, e in zip(grads, ex_grads):
        assert torch.allclose(a, e, rtol=1e-4, atol=1e-5)
    assert torch.allclose(conv.u, u, atol=1e-6) and torch.allclose(conv.v, v, atol=1e-6)


def test_spectral_norm_linear_training_step_equals_weight_normalisation():
    """The same estimator for SNLinear: x (W / sigma)^T + b, sigma = u^T W v after one power iteration."""
    torch.manual_seed(0)
    lin = SNLinear(6, 12).train()
    x = torch.randn(3, 6, requires_grad=True)
    g = torch.randn(3, 12)
    u0 = lin.u.clone()
    w = lin.weight.detach().clone().requires_grad_(True)
    b = lin.bias.detach().clone().requires_grad_(True)
    v = F.normalize(w.detach().t() @ u0, dim=0)
    u = F.normalize(w.detach() @ v, dim=0)
    expected = F.linear(x, w / (u @ w @ v), b)
    ex_grads = torch.autograd.grad(expected, (x, w, b), g)
    got = lin(x)
    grads = torch.autograd.grad(got, (x, lin.weight, lin.bias), g)
    assert torch.allclose(got, expected, atol=1e-6)
    for a, e in zip(grads, ex_grads):
        assert torch.allclose(a, e, rtol=1e-4, atol=1e-6)
    assert torch.allclose(lin.u, u, atol=1e-6) and torch.allclose(lin.v, v, atol=1e-6)


def test_spectral_norm_conv_converges_to_the_largest_singular_value():
    torch.manual_seed(0)
    conv = SNConv2d(8, 16, 3).train()
    with torch.no_grad():  # A clear spectral gap, so a few iterations suffice.
        conv.weight.mul_(0.1).add_(3 * torch.outer(torch.randn(16), torch.randn(72)).view(16, 8, 3, 3))
    for _ in range(20):
        sigma = conv.sigma()
    true = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), 2)
    assert abs(sigma.item() - true.item()) <= 1e-4 * true.item()
    with torch.no_grad():
        assert conv(torch.randn(1, 8, 5, 5)).shape == (1, 16, 3, 3)


def test_spectral_norm_linear_converges_to_the_largest_singular_value():
    torch.manual_seed(0)
    lin = SNLinear(20, 30).train()
    with torch.no_grad():
        lin.weight.mul_(0.1).add_(3 * torch.outer(torch.randn(30), torch.randn(20)))
    for _ in range(20):
        sigma = lin.sigma()
    true = torch.linalg.matrix_norm(lin.weight.detach(), 2)
    assert abs(sigma.item() - true.item()) <= 1e-4 * true.item()


def test_spectral_norm_conv_channels_last_weight_gives_the_same_estimates():
    """A channels_last weight is read through a column-permuted view: same sigma, same u and v (kept in the
    canonical order), same outputs."""
    torch.manual_seed(0)
    a = SNConv2d(16, 32, 4, 2, 1).train()
    b = copy.deepcopy(a).to(memory_format=torch.channels_last)
    assert not b.weight.is_contiguous()
    x = torch.randn(4, 16, 8, 8)
    for _ in range(3):
        ya, yb = a(x), b(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ya, yb, atol=1e-5)
    assert torch.allclose(a.u, b.u, atol=1e-6) and torch.allclose(a.v, b.v, atol=1e-6)


def test_power_iteration_is_deterministic_in_the_weights():
    """Replicas with identical weights (DDP ranks) keep bit-identical u and v whatever data they see."""
    torch.manual_seed(0)
    a = SNConv2d(8, 16, 4, 2, 1).train()
    b = copy.deepcopy(a)
    for step in range(3):
        a(torch.randn(2, 8, 8, 8))
        b(torch.randn(5, 8, 8, 8) * 10)
        assert torch.equal(a.u, b.u) and torch.equal(a.v, b.v), step


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_loads_state_dicts_of_torch_spectral_norm(kind):
    """State dicts written with torch's parametrisation (older snapshots) load into the SN layers exactly."""
    torch.manual_seed(3)
    if kind == "conv":
        ref, ours, x = spectral_norm(torch.nn.Conv2d(4, 8, 3)), SNConv2d(4, 8, 3), torch.randn(2, 4, 5, 5)
    else:
        ref, ours, x = spectral_norm(torch.nn.Linear(4, 8)), SNLinear(4, 8), torch.randn(2, 4)
    ref.train()(x)  # Move u, v on from their init.
    ours.load_state_dict(ref.state_dict())
    assert torch.equal(ours.weight, ref.parametrizations.weight.original)
    assert torch.equal(ours.u, ref.parametrizations.weight[0]._u)
    assert torch.equal(ours.v, ref.parametrizations.weight[0]._v)
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), ref.eval()(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", [lambda: SNConv2d(4, 8, 3), lambda: SNLinear(4, 8)])
def test_sn_layers_pickle_deepcopy_and_torch_save(layer):
    torch.manual_seed(0)
    m = layer().eval()
    x = torch.randn(2, 4, 5, 5) if isinstance(m, SNConv2d) else torch.randn(2, 4)
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    copies = [copy.deepcopy(m), pickle.loads(pickle.dumps(m)), torch.load(buf, weights_only=False)]
    with torch.no_grad():
        for other in copies:
            assert torch.equal(other.u, m.u) and torch.equal(other.v, m.v)
            assert torch.equal(other(x), m(x))
