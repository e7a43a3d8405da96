"""projector_plugin driven through the training-loop contracts of NVIDIA's StyleGAN3 and StyleGAN2-ADA.

The loops below are small stand-ins written for these tests, not the hosts' code; they follow what those hosts
do with a D and a loss object: construction by class name with the hosts' keyword arguments, phases with gain
and (StyleGAN2-ADA) sync, requires_grad toggled per phase, lazy regularisation intervals that scale the Adam
lr/betas, a module summary on rank 0 that feeds D the output of G on garbage (here NaN) latents before the
networks are distributed, hand-made gradient all-reduce (StyleGAN3) or DDP-wrapped modules (StyleGAN2-ADA), an
ADA-style augment_pipe whose p follows 'Loss/signs/real', snapshots by deepcopy + pickle (reloaded in eval mode,
whose logits must be finite), and the hosts' check that every parameter and buffer is identical on all ranks.
Multi-rank runs use 2 gloo processes on the CPU.
"""

import copy
import importlib
import os
import pickle
import re
import textwrap
import time
import traceback
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

RES = 32                 # image resolution
FEAT_RES = 32            # backbone input size, small for speed
THIS = __name__          # class names below are constructed from strings, as the hosts do

# What the hosts' train.py put into D_kwargs besides class_name (c_dim, img_resolution, img_channels are added by
# their training loops), plus the plugin's own options of a fast test configuration.
PLUGIN_D = dict(class_name="projector_plugin.ProjectedDiscriminator", pretrained=False, feat_res=FEAT_RES)
SG3_D_KWARGS = dict(PLUGIN_D, channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256,
                    block_kwargs={"freeze_layers": 0}, mapping_kwargs={}, epilogue_kwargs={"mbstd_group_size": 4})
ADA_D_KWARGS = dict(PLUGIN_D, architecture="orig", channel_base=16384, channel_max=512, num_fp16_res=4,
                    conv_clamp=256, block_kwargs={}, mapping_kwargs={}, epilogue_kwargs={"mbstd_group_size": 4})
# The hosts' loss_kwargs (their StyleGAN2Loss options, inactive values) plus the plugin's; `report` by name.
SG3_LOSS_KWARGS = dict(class_name="projector_plugin.ProjectedGANLoss", r1_gamma=0, style_mixing_prob=0,
                       pl_weight=0, pl_no_weight_grad=True, blur_init_sigma=2, blur_fade_kimg=0.02,
                       report=f"{THIS}.host_report")
ADA_LOSS_KWARGS = dict(class_name="projector_plugin.ProjectedGANLoss", r1_gamma=0, style_mixing_prob=0,
                       pl_weight=0, pl_batch_shrink=2, pl_decay=0.01, report=f"{THIS}.host_report")
LR, BETAS = 0.002, (0.0, 0.99)
IGNORE_CONSISTENCY = re.compile(r".*\.[^.]+_(avg|ema)")  # generator EMAs, which the hosts exclude too

STATS = {}


def host_report(name, value):
    """The host's training_stats.report stand-in: collects every value, returns it."""
    if torch.is_tensor(value):
        STATS.setdefault(name, []).append(value.detach().float().flatten().cpu())
    return value


def construct(class_name, **kwargs):
    module_name, _, attr = class_name.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)(**kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Tiny generators with each host's signatures.


class _Mapping(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws):
        super().__init__()
        self.c_dim, self.num_ws = c_dim, num_ws
        self.embed = torch.nn.Linear(c_dim, 4) if c_dim else None
        self.fc = torch.nn.Linear(z_dim + (4 if c_dim else 0), w_dim)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def map(self, z, c, track):
        x = torch.cat([z, self.embed(c)], dim=1) if self.c_dim else z
        w = torch.nn.functional.leaky_relu(self.fc(x), 0.2)
        if track:
            self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, 0.995))
        return w[:, None, :].repeat(1, self.num_ws, 1)


class SG3Mapping(_Mapping):
    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        return self.map(z, c, update_emas)


class ADAMapping(_Mapping):
    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        return self.map(z, c, self.training and not skip_w_avg_update)


class _Layer(torch.nn.Module):
    def __init__(self, w_dim, channels, res):
        super().__init__()
        self.shape = (channels, res, res)
        self.fc = torch.nn.Linear(w_dim, channels * res * res)
        self.register_buffer("magnitude_ema", torch.ones([]))

    def image(self, w, update_emas):
        x = self.fc(w)
        if update_emas:
            self.magnitude_ema.copy_(x.detach().square().mean().lerp(self.magnitude_ema, 0.999))
        return torch.tanh(x).view(-1, *self.shape)


class SG3Layer(_Layer):
    def forward(self, w, noise_mode="random", update_emas=False):
        return self.image(w, update_emas)


class ADALayer(_Layer):
    def forward(self, w, noise_mode="random", fused_modconv=True, gain=1):  # no update_emas: a TypeError
        return self.image(w, False)


class _Synthesis(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, ws, **kwargs):  # Both hosts pass **kwargs on to their layers.
        return self.layer(ws[:, 0], **kwargs)


class SG3Generator(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, **synthesis_kwargs):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.mapping = SG3Mapping(z_dim, c_dim, w_dim, num_ws=2)
        self.synthesis = _Synthesis(SG3Layer(w_dim, img_channels, img_resolution))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)


class ADAGenerator(SG3Generator):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, **synthesis_kwargs):
        torch.nn.Module.__init__(self)
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.mapping = ADAMapping(z_dim, c_dim, w_dim, num_ws=2)
        self.synthesis = _Synthesis(ADALayer(w_dim, img_channels, img_resolution))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff), **synthesis_kwargs)


class AugmentPipe(torch.nn.Module):
    """ADA stand-in: mirrors each image with probability p (a buffer the host adjusts)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("p", torch.zeros([]))

    def forward(self, images):
        flip = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < self.p
        return torch.where(flip, images.flip(3), images)


G_KWARGS = dict(z_dim=8, w_dim=8, mapping_kwargs={}, channel_base=32768, channel_max=512)


# ---------------------------------------------------------------------------------------------------------------------
# The host loops.


def _phases(G, D, G_reg_interval, D_reg_interval):
    """Per network: one 'both' phase, or 'main' every step + 'reg' every interval with lr/betas scaled."""
    phases = []
    for name, module, interval in (("G", G, G_reg_interval), ("D", D, D_reg_interval)):
        if interval is None:
            opt = torch.optim.Adam(module.parameters(), lr=LR, betas=BETAS, eps=1e-8)
            phases.append((name + "both", module, opt, 1))
        else:
            ratio = interval / (interval + 1)
            opt = torch.optim.Adam(module.parameters(), lr=LR * ratio, betas=[b**ratio for b in BETAS], eps=1e-8)
            phases += [(name + "main", module, opt, 1), (name + "reg", module, opt, interval)]
    return phases


def _data(step, rank, world, batch, c_dim, rounds=2):
    """Per round (real_img, real_c, gen_z, gen_c) of this rank's share of the global batch."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    batch_gpu = batch // world // rounds
    out = []
    for _ in range(rounds):
        real = torch.rand(batch_gpu, 3, RES, RES, generator=g) * 2 - 1
        labels = torch.nn.functional.one_hot(torch.randint(max(c_dim, 1), [2, batch_gpu], generator=g),
                                             max(c_dim, 1)).float()[..., :c_dim]
        out.append((real, labels[0], torch.randn(batch_gpu, 8, generator=g), labels[1]))
    return out


def _broadcast_from_rank0(*modules):
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def _inconsistent(world, **modules):
    """Names of parameters/buffers that differ from rank 0's (the hosts' DDP consistency check)."""
    bad = []
    if world == 1:
        return bad
    for mname, module in modules.items():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if IGNORE_CONSISTENCY.fullmatch(f"{mname}.{name}"):
                continue
            ref = t.detach().clone()
            dist.broadcast(ref, src=0)
            if not torch.equal(torch.nan_to_num(t.detach()), torch.nan_to_num(ref)):
                bad.append(f"{mname}.{name}")
    return bad


def _module_summary(G, D, c_dim, rank, batch_gpu):
    """The hosts' print_module_summary, run on rank 0 before the networks are distributed: G on latents (and
    labels) from torch.empty, D on its output. NaN here, the worst such garbage. Returns the number of the
    plugin's non-finite-input warnings."""
    if rank != 0:
        return 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        z, c = torch.full([batch_gpu, G.z_dim], float("nan")), torch.full([batch_gpu, c_dim], float("nan"))
        D(G(z, c), c)
    return sum("non-finite input to ProjectedDiscriminator" in str(w.message) for w in caught)


def _lazy_reg_warnings(caught):
    """The networks named by the plugin's lazy-regularisation warnings among `caught`, sorted."""
    found = (re.search(r"lazy regularisation for (\w+) ", str(w.message)) for w in caught)
    return sorted(m.group(1) for m in found if m)


def _snapshot_roundtrip(G, D, G_ema, c_dim):
    """deepcopy + pickle as the hosts' snapshots do; the reloaded networks must compute the same outputs."""
    snap = {name: copy.deepcopy(m).eval().requires_grad_(False).cpu() for name, m in
            (("G", G), ("D", D), ("G_ema", G_ema))}
    loaded = pickle.loads(pickle.dumps(snap))
    z, img = torch.randn(2, 8), torch.rand(2, 3, RES, RES) * 2 - 1
    c = torch.nn.functional.one_hot(torch.arange(2) % max(c_dim, 1), max(c_dim, 1)).float()[:, :c_dim]
    same = {}
    with torch.no_grad():
        same["G"] = torch.equal(snap["G"](z, c), loaded["G"](z, c))
        outs = []
        for d in (snap["D"], loaded["D"]):
            torch.manual_seed(0)  # D's DiffAugment draws from the global RNG
            outs.append(d(img, c))
        same["D"] = torch.equal(*outs)
        same["D_finite"] = bool(torch.isfinite(outs[0]).all())  # Eval mode: not poisoned by the summary's NaNs.
    same["D_state"] = all(torch.equal(a, b) for a, b in zip(snap["D"].state_dict().values(),
                                                              loaded["D"].state_dict().values()))
    return all(same.values()), same


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def run_stylegan3(rank=0, world=1, cond=False, steps=3, batch=8, D_reg_interval=16):
    """StyleGAN3's contract: loss(device=, G=, D=, augment_pipe=, **loss_kwargs), (gain, cur_nimg), manual
    gradient all-reduce of the phase module's parameters."""
    STATS.clear()
    c_dim = 3 if cond else 0
    common = dict(c_dim=c_dim, img_resolution=RES, img_channels=3)
    torch.manual_seed(rank)  # Ranks initialise differently and then take rank 0's weights.
    G = construct(class_name=f"{THIS}.SG3Generator", **G_KWARGS, **common).train().requires_grad_(False)
    D = construct(**dict(SG3_D_KWARGS, cond=cond), **common).train().requires_grad_(False)
    G_ema = copy.deepcopy(G).eval()
    nonfinite_warnings = _module_summary(G, D, c_dim, rank, batch // world)
    if world > 1:
        _broadcast_from_rank0(G, D, G_ema)
    loss = construct(device=torch.device("cpu"), G=G, D=D, augment_pipe=None, **SG3_LOSS_KWARGS)
    phases = _phases(G, D, G_reg_interval=None, D_reg_interval=D_reg_interval)
    G0, D0 = _params(G), _params(D)
    reg_changed = []
    cur_nimg = 0
    with warnings.catch_warnings(record=True) as caught:  # The plugin's notes to the user, kept.
        warnings.simplefilter("always")
        for step in range(steps):
            for name, module, opt, interval in phases:
                if step % interval != 0:
                    continue
                before = _params(module)
                opt.zero_grad(set_to_none=True)
                module.requires_grad_(True)
                for real_img, real_c, gen_z, gen_c in _data(step, rank, world, batch, c_dim):
                    loss.accumulate_gradients(phase=name, real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=gen_c,
                                              gain=interval, cur_nimg=cur_nimg)
                module.requires_grad_(False)
                params = [p for p in module.parameters() if p.grad is not None]
                if params:
                    flat = torch.cat([p.grad.flatten() for p in params])
                    if world > 1:
                        dist.all_reduce(flat)
                        flat /= world
                    torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
                    for p, g in zip(params, flat.split([p.numel() for p in params])):
                        p.grad = g.reshape(p.shape)
                opt.step()
                if name.endswith("reg"):
                    reg_changed.append(_changed(before, module))
            with torch.no_grad():
                for pe, p in zip(G_ema.parameters(), G.parameters()):
                    pe.copy_(p.lerp(pe, 0.9))
                for be, b in zip(G_ema.buffers(), G.buffers()):
                    be.copy_(b)
            cur_nimg += batch
    lazy_reg_warnings = _lazy_reg_warnings(caught)
    snapshot_ok, snapshot_detail = _snapshot_roundtrip(G, D, G_ema, c_dim) if rank == 0 else (True, {})
    loss_copy = pickle.loads(pickle.dumps(copy.deepcopy(loss)))  # The loss object and the modules it holds.
    D_opt = next(opt for name, _, opt, _ in phases if name.startswith("D"))
    return dict(
        rank=rank, nonfinite_warnings=nonfinite_warnings, lazy_reg_warnings=lazy_reg_warnings,
        G_trained=_changed(G0, G), D_trained=_changed(D0, D), reg_changed=reg_changed,
        D_lr=D_opt.param_groups[0]["lr"], D_betas=list(D_opt.param_groups[0]["betas"]),
        snapshot_ok=snapshot_ok, snapshot_detail=str(snapshot_detail),
        loss_copy_D_keys=sorted(loss_copy.D.state_dict()) == sorted(D.state_dict()),
        reported=sorted(STATS), inconsistent=_inconsistent(world, G=G, D=D, G_ema=G_ema),
    )


def run_stylegan2_ada(rank=0, world=1, cond=False, steps=4, batch=8):
    """StyleGAN2-ADA's contract: loss(device=, G_mapping=, G_synthesis=, D=, augment_pipe=, **loss_kwargs) with
    DDP-wrapped modules (broadcast_buffers=False), (sync, gain), lazy regularisation for G (4) and D (16), and
    ADA adjusting augment_pipe.p from the reported 'Loss/signs/real'."""
    STATS.clear()
    c_dim = 3 if cond else 0
    common = dict(c_dim=c_dim, img_resolution=RES, img_channels=3)
    torch.manual_seed(rank)
    G = construct(class_name=f"{THIS}.ADAGenerator", **G_KWARGS, **common).train().requires_grad_(False)
    D = construct(**dict(ADA_D_KWARGS, cond=cond), **common).train().requires_grad_(False)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = AugmentPipe().train().requires_grad_(False)
    augment_pipe.p.fill_(0.5)
    nonfinite_warnings = _module_summary(G, D, c_dim, rank, batch // world)  # Tracks a NaN w_avg, as the host would.
    if world > 1:
        _broadcast_from_rank0(G, D, G_ema)
    ddp_modules = {}
    for name, module in (("G_mapping", G.mapping), ("G_synthesis", G.synthesis), ("D", D), (None, G_ema),
                         ("augment_pipe", augment_pipe)):
        if world > 1 and module is not None and len(list(module.parameters())) != 0:
            module.requires_grad_(True)
            module = torch.nn.parallel.DistributedDataParallel(module, broadcast_buffers=False)
            module.requires_grad_(False)
        if name is not None:
            ddp_modules[name] = module
    loss = construct(device=torch.device("cpu"), **ddp_modules, **ADA_LOSS_KWARGS)
    phases = _phases(G, D, G_reg_interval=4, D_reg_interval=16)
    G0, D0 = _params(G), _params(D)
    reg_changed = []
    seen_signs = 0
    with warnings.catch_warnings(record=True) as caught:  # The plugin's notes to the user, kept.
        warnings.simplefilter("always")
        for step in range(steps):
            for name, module, opt, interval in phases:
                if step % interval != 0:
                    continue
                before = _params(module)
                module.requires_grad_(True)
                opt.zero_grad(set_to_none=True)
                rounds = _data(step, rank, world, batch, c_dim)
                for round_idx, (real_img, real_c, gen_z, gen_c) in enumerate(rounds):
                    sync = round_idx == len(rounds) - 1
                    loss.accumulate_gradients(phase=name, real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=gen_c,
                                              sync=sync, gain=interval)
                module.requires_grad_(False)
                for p in module.parameters():
                    if p.grad is not None:
                        torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
                opt.step()
                if name.endswith("reg"):
                    reg_changed.append(_changed(before, module))
            with torch.no_grad():
                for pe, p in zip(G_ema.parameters(), G.parameters()):
                    pe.copy_(p.lerp(pe, 0.9))
            if step % 2 == 1:  # ADA: move p towards E[sign(D(real))] = 0.6, from every rank's statistics.
                signs = torch.cat(STATS.get("Loss/signs/real", [])[seen_signs:] or [torch.zeros(0)])
                seen_signs = len(STATS.get("Loss/signs/real", []))
                total = torch.tensor([signs.sum().item(), float(signs.numel())], dtype=torch.float64)
                if world > 1:
                    dist.all_reduce(total)
                if total[1] > 0:
                    adjust = float(torch.sign(total[0] / total[1] - 0.6)) * 0.05
                    augment_pipe.p.copy_((augment_pipe.p + adjust).clamp(0, 1))
    lazy_reg_warnings = _lazy_reg_warnings(caught)
    snapshot_ok, snapshot_detail = _snapshot_roundtrip(G, D, G_ema, c_dim) if rank == 0 else (True, {})
    D_opt = next(opt for name, _, opt, _ in phases if name.startswith("D"))
    return dict(
        rank=rank, nonfinite_warnings=nonfinite_warnings, lazy_reg_warnings=lazy_reg_warnings,
        G_trained=_changed(G0, G), D_trained=_changed(D0, D), reg_changed=reg_changed,
        D_lr=D_opt.param_groups[0]["lr"], D_betas=list(D_opt.param_groups[0]["betas"]),
        snapshot_ok=snapshot_ok, snapshot_detail=str(snapshot_detail), p=float(augment_pipe.p),
        reported=sorted(STATS),
        inconsistent=_inconsistent(world, G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Two gloo ranks.


def _worker(rank, world, tmp, fn_name, kwargs):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world)
    try:
        try:
            result = globals()[fn_name](rank=rank, world=world, **kwargs)
        except Exception:
            result = dict(error=traceback.format_exc())
        torch.save(result, os.path.join(tmp, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(fn_name, tmp_path, world=2, timeout=600, **kwargs):
    ctx = mp.start_processes(_worker, args=(world, str(tmp_path), fn_name, kwargs), nprocs=world, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            pytest.fail(f"{fn_name}: the {world} ranks did not finish within {timeout} s")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    for r, res in enumerate(results):
        assert "error" not in res, f"rank {r}:\n{res['error']}"
    return results


def _check_run(res, lazy_reg, D_reg_interval=16):
    assert res["nonfinite_warnings"] == (1 if res["rank"] == 0 else 0)  # Said once, where the summary ran.
    # Once per network with a lazy-regularisation interval (whose Adam the host slowed for an empty phase).
    assert res["lazy_reg_warnings"] == lazy_reg
    assert res["G_trained"] and res["D_trained"]
    assert res["reg_changed"] and not any(res["reg_changed"]), "a 'reg' phase changed weights"
    # Lazy regularisation scales D's Adam even though Dreg does nothing (what the README warns about).
    ratio = D_reg_interval / (D_reg_interval + 1)
    assert res["D_lr"] == pytest.approx(LR * ratio)
    assert res["D_betas"] == pytest.approx([BETAS[0] ** ratio, BETAS[1] ** ratio])
    assert res["snapshot_ok"], res["snapshot_detail"]
    assert {"Loss/signs/real", "Loss/scores/fake", "Loss/G/loss", "Loss/D/loss"} <= set(res["reported"])


# ---------------------------------------------------------------------------------------------------------------------
# Tests.


@pytest.mark.parametrize("cond", [False, True])
def test_stylegan3_contract_single_process(cond):
    res = run_stylegan3(cond=cond, steps=2)
    _check_run(res, lazy_reg=["D"])
    assert res["loss_copy_D_keys"]


def test_stylegan2_ada_contract_single_process():
    res = run_stylegan2_ada(cond=True, steps=2)
    _check_run(res, lazy_reg=["D", "G"])
    assert res["p"] != 0.5  # ADA reads the plugin's 'Loss/signs/real' through the report= name.


def test_stylegan3_contract_two_ranks_stay_consistent(tmp_path):
    results = _spawn("run_stylegan3", tmp_path, cond=True)
    for res in results:
        _check_run(res, lazy_reg=["D"])
        assert res["inconsistent"] == [], f"differ across ranks: {res['inconsistent']}"


def test_stylegan2_ada_contract_two_ranks_stay_consistent(tmp_path):
    results = _spawn("run_stylegan2_ada", tmp_path, cond=False)
    for res in results:
        _check_run(res, lazy_reg=["D", "G"])
        assert res["inconsistent"] == [], f"differ across ranks: {res['inconsistent']}"
    assert results[0]["p"] == results[1]["p"]


# ---------------------------------------------------------------------------------------------------------------------
# DDP-wrapped generators: the loss calls the wrappers, so DDP all-reduces G's gradients.


class _ConvD(torch.nn.Module):
    """A small D without batch statistics: D(img [N, 3, H, W], c) -> [N, 1]."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, img, c=None):
        return self.conv(img).mean(dim=[2, 3]).sum(1, keepdim=True)


def ddp_grads(rank=0, world=1):
    """Gradients after one phase on different data per rank, with DDP-wrapped modules, for StyleGAN2-ADA's
    G_mapping / G_synthesis (with a mapping that rejects update_emas) and for a wrapped whole generator: G's after
    Gmain and D's after Dmain, each with sync=True (the last round: all-reduced) and sync=False (an earlier round:
    kept local, reduced with a later synced round)."""
    from projector_plugin import ProjectedGANLoss
    out = {}
    for convention in ("stylegan2-ada", "wrapped-G"):
        torch.manual_seed(0)
        G = ADAGenerator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3)
        D = _ConvD()
        if convention == "stylegan2-ada":
            wrapped = {k: torch.nn.parallel.DistributedDataParallel(m, broadcast_buffers=False)
                       for k, m in (("G_mapping", G.mapping), ("G_synthesis", G.synthesis))}
            loss = ProjectedGANLoss(device="cpu", D=torch.nn.parallel.DistributedDataParallel(D), **wrapped,
                                    blur_init_sigma=0)
        else:
            loss = ProjectedGANLoss(device="cpu", G=torch.nn.parallel.DistributedDataParallel(G),
                                    D=torch.nn.parallel.DistributedDataParallel(D), blur_init_sigma=0)
        for sync in (True, False):
            for phase, module, other in (("Gmain", G, D), ("Dmain", D, G)):
                module.requires_grad_(True).zero_grad(set_to_none=True)
                other.requires_grad_(False)
                g = torch.Generator().manual_seed(rank)
                loss.accumulate_gradients(phase=phase, real_img=torch.rand(2, 3, 16, 16, generator=g) * 2 - 1,
                                          real_c=torch.zeros(2, 0), gen_z=torch.randn(2, 8, generator=g),
                                          gen_c=torch.zeros(2, 0), sync=sync, gain=1)
                out[convention, phase, sync] = torch.cat([p.grad.flatten() for p in module.parameters()])
        # A last synced round after the unsynced one: DDP is left in a usable state.
        D.requires_grad_(True)
        loss.accumulate_gradients(phase="Dmain", real_img=torch.zeros(2, 3, 16, 16), real_c=torch.zeros(2, 0),
                                  gen_z=torch.zeros(2, 8), gen_c=torch.zeros(2, 0), sync=True, gain=1)
    return out


def test_ddp_wrapped_generators_get_all_reduced_gradients(tmp_path):
    """The loss calls the DDP wrappers the host passes (never `.module`), so DDP all-reduces G's and D's gradients
    when sync is True and leaves them local when the host says sync=False."""
    r0, r1 = _spawn("ddp_grads", tmp_path)
    for convention in ("stylegan2-ada", "wrapped-G"):
        for phase in ("Gmain", "Dmain"):
            key = convention, phase
            assert r0[key + (True,)].abs().sum() > 0
            torch.testing.assert_close(r0[key + (True,)], r1[key + (True,)], rtol=1e-6, atol=1e-7, msg=str(key))
            assert not torch.allclose(r0[key + (False,)], r1[key + (False,)]), f"{key}: reduced despite sync=False"
            # The synced gradient is the mean of the ranks' local ones.
            torch.testing.assert_close(r0[key + (True,)], (r0[key + (False,)] + r1[key + (False,)]) / 2,
                                       rtol=1e-5, atol=1e-6, msg=str(key))


# ---------------------------------------------------------------------------------------------------------------------
# The README's host lines, executed on the hosts' exact option values.

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


class _HostDict(dict):
    """dnnlib.EasyDict's behaviour: attribute access to the items."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


def readme_host_lines(host):
    """The code block of the README under `<!-- host-lines:HOST -->`, dedented from main()'s body."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    m = re.search(rf"<!-- host-lines:{re.escape(host)} -->\n```python\n(.*?)```", text, re.S)
    assert m, f"README has no host-lines block for {host}"
    return textwrap.dedent(m.group(1))


def _host_namespace(host, resume):
    """The variables the lines see at their anchor, with the values StyleGAN3's / StyleGAN2-ADA's train.py give them
    by then (their optimizer dicts, D/loss kwargs, resume setting)."""
    E = _HostDict
    opt = lambda: E(class_name="torch.optim.Adam", lr=0.002, betas=[0, 0.99], eps=1e-8)  # noqa: E731
    dnnlib = type("dnnlib", (), {"EasyDict": _HostDict})
    if host == "stylegan3":
        c = E(G_opt_kwargs=opt(), D_opt_kwargs=opt(), batch_size=32, G_reg_interval=4,
              D_kwargs=E(class_name="training.networks_stylegan2.Discriminator", block_kwargs=E(), mapping_kwargs=E(),
                         epilogue_kwargs=E(mbstd_group_size=4), channel_base=32768, channel_max=512),
              loss_kwargs=E(class_name="training.loss.StyleGAN2Loss", r1_gamma=10, style_mixing_prob=0.9,
                            pl_weight=2, pl_no_weight_grad=True, blur_init_sigma=0 if resume else 10))
        return dict(c=c, opts=E(cond=False, resume=resume), dnnlib=dnnlib), c
    args = E(G_opt_kwargs=opt(), D_opt_kwargs=opt(), batch_size=32, G_reg_interval=4, D_reg_interval=16,
             D_kwargs=E(class_name="training.networks.Discriminator", block_kwargs=E(), mapping_kwargs=E(),
                        epilogue_kwargs=E(mbstd_group_size=4)),
             loss_kwargs=E(class_name="training.loss.StyleGAN2Loss", r1_gamma=10),
             training_set_kwargs=E(use_labels=False))
    if resume:
        args.resume_pkl = resume
    return dict(args=args, dnnlib=dnnlib), args


@pytest.mark.parametrize("host", ["stylegan3", "stylegan2-ada"])
@pytest.mark.parametrize("resume", [None, "runs/00000-x/network-snapshot-000100.pkl"])
def test_readme_host_lines_work_with_the_hosts_exact_values(host, resume):
    """The README's lines, run where they go, leave a config the host can build: D, loss and both Adams as the host
    constructs them (no lazy regularisation: Adam(params, **opt_kwargs) with the host's own betas list), and the
    host's resume rule (no blur when resuming) kept."""
    namespace, cfg = _host_namespace(host, resume)
    exec(compile(readme_host_lines(host), f"README host lines ({host})", "exec"), namespace)
    assert cfg.D_kwargs.class_name == "projector_plugin.ProjectedDiscriminator"
    assert cfg.G_reg_interval is None and cfg.D_reg_interval is None
    assert cfg.loss_kwargs.class_name == "projector_plugin.ProjectedGANLoss"
    assert cfg.loss_kwargs.blur_init_sigma == (0 if resume else 2)
    if host == "stylegan3":  # what its train.py reads after the lines: the run name has the R1 weight in it
        assert f"gamma{cfg.loss_kwargs.r1_gamma:g}" == "gamma0"
    params = [torch.nn.Parameter(torch.zeros(2))]
    for key in ("G_opt_kwargs", "D_opt_kwargs"):  # the hosts: construct_class_by_name(params=..., **opt_kwargs)
        kwargs = {k: v for k, v in cfg[key].items() if k != "class_name"}
        opt = construct(cfg[key].class_name, params=params, **kwargs)
        assert opt.param_groups[0]["betas"] == (0.0, 0.99)
    # D and loss build from those kwargs (plus what the host loops add).
    D = construct(**dict(cfg.D_kwargs, pretrained=False, feat_res=32), c_dim=0, img_resolution=32, img_channels=3)
    construct(**cfg.loss_kwargs, device="cpu", G=None, D=D)


def test_the_hosts_own_betas_fail_on_this_torch_without_the_readme_line():
    """Why the README sets the betas: the hosts' [0, 0.99] without lazy regularisation (an int and a float)."""
    params = [torch.nn.Parameter(torch.zeros(2))]
    try:
        torch.optim.Adam(params, lr=0.002, betas=[0, 0.99], eps=1e-8)
    except ValueError as err:
        assert "betas" in str(err)
    else:
        pytest.skip("this torch accepts betas=[0, 0.99]; the README line is then harmless but not needed")
