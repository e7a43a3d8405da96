"""Hinge loss for a projected discriminator, as a drop-in `loss` object for StyleGAN-style training loops.

Both host conventions are accepted, for construction and for the step:
    ProjectedGANLoss(device=, G=, D=, augment_pipe=, **loss_kwargs)                           # StyleGAN3, this repo
    ProjectedGANLoss(device=, G_mapping=, G_synthesis=, D=, augment_pipe=, **loss_kwargs)     # StyleGAN2-ADA
    loss.accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg)           # StyleGAN3
    loss.accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, sync, gain)               # StyleGAN2-ADA
Modules may be DistributedDataParallel wrappers: they are called as given, so DDP all-reduces their gradients.
Projected GANs need no R1 or path-length regularisation, so the 'Greg' and 'Dreg' phases do nothing.
"""

import contextlib
import difflib
import importlib
import inspect
import logging
import warnings

import torch
import torch.nn.functional as F

from .blur import gaussian_blur

__all__ = ["ProjectedGANLoss", "gaussian_blur"]

logger = logging.getLogger("projector_plugin")

_PHASES = ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth")

# Keyword arguments of the StyleGAN2Loss classes of StyleGAN3, StyleGAN2-ADA and this repo (and Projected GAN's
# G_ema) that mean nothing for an unregularised hinge loss. They are accepted, so that a host config written for
# those losses keeps working, and ignored. Mapped to the value that leaves them inactive (None: inert whatever
# the value, they only tune a regulariser that is off).
_IGNORED_HOST_KWARGS = {
    "r1_gamma": 0, "style_mixing_prob": 0, "pl_weight": 0,
    "pl_batch_shrink": None, "pl_decay": None, "pl_no_weight_grad": None, "G_ema": None,
}


def _unwrap(module):
    """The module inside a DistributedDataParallel / DataParallel wrapper; anything else as is."""
    while isinstance(module, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        module = module.module
    return module


def _parameters(fn):
    """Signature parameters of a callable; of `forward` for a module (Module.__call__ takes *args, **kwargs)."""
    target = _unwrap(fn)
    if isinstance(target, torch.nn.Module):
        target = target.forward
    try:
        return inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}


def _accepts(fn, name, var_keyword=False):
    """Whether `fn` (a function or module) takes keyword `name`: by name, or via **kwargs when `var_keyword`.

    **kwargs alone is weak evidence: StyleGAN2-ADA's synthesis network takes **block_kwargs and passes them on to
    layers that reject `update_emas`, so callers only count it where the host's convention is known.
    """
    params = _parameters(fn)
    if name in params and params[name].kind != inspect.Parameter.VAR_POSITIONAL:
        return True
    return var_keyword and any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())


def _resolve_report(report):
    """A dotted name such as 'torch_utils.training_stats.report' -> the callable it names."""
    module_name, _, attr = report.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"ProjectedGANLoss(report='{report}'): expected a callable or a dotted name "
                         f"'package.module.function', e.g. 'torch_utils.training_stats.report'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ImportError(f"ProjectedGANLoss(report='{report}'): cannot import it from the training process "
                          f"({type(err).__name__}: {err}); pass a callable, an importable dotted name, "
                          f"or None for no statistics") from err
    if not callable(fn):
        raise TypeError(f"ProjectedGANLoss(report='{report}'): names a {type(fn).__name__}, not a function")
    logger.info("ProjectedGANLoss: reporting statistics through %s", report)
    return fn


AUTO_REPORT = "auto"


def _host_report():
    """report='auto': the host's `torch_utils.training_stats.report` if the training process has that module (the
    StyleGAN-style hosts all do), else None (statistics are dropped)."""
    try:
        module = importlib.import_module("torch_utils.training_stats")
    except ImportError:
        return None
    fn = getattr(module, "report", None)
    if not callable(fn):
        return None
    logger.info("ProjectedGANLoss: reporting statistics through torch_utils.training_stats.report (report='auto')")
    return fn


class ProjectedGANLoss:
    """Hinge loss: D minimises relu(1 - D(real)) + relu(1 + D(fake)), G minimises -D(fake).

    Args:
        device:          torch device of the inputs.
        G:               generator; `G.mapping(z, c)` + `G.synthesis(ws)` when it has them (and is not wrapped),
                         else `G(z, c)`. `update_emas` is passed to each where its `forward` names it.
        D:               discriminator, `D(img [N, C, H, W], c [N, c_dim]) -> logits [N, K]` (a
                         ProjectedDiscriminator normally).
        augment_pipe:    optional `augment_pipe(img) -> img` (the hosts' ADA) applied to every image D sees,
                         real or fake, after the blur and before D's own DiffAugment.
        G_mapping, G_synthesis: StyleGAN2-ADA's way of passing the generator, instead of `G`.
        blur_init_sigma: blur of every D input at the start of training, StyleGAN3's parameterisation (taps
                         2^(-(x/sigma)^2), i.e. a Gaussian of std sigma/sqrt(2 ln 2) pixels) ...
        blur_fade_kimg:  ... fading linearly to zero over this many thousand images (0 = no blur).
        report:          where training statistics go: a callable `report(name, tensor)`, a dotted name of one
                         (e.g. 'torch_utils.training_stats.report', imported at the first report), None, or
                         'auto' (default): the training process's `torch_utils.training_stats.report` when it has
                         one (StyleGAN2-ADA, StyleGAN3, Projected GAN and this repo do), else nothing.
        reuse_fakes:     the D phase trains on the fakes of the same iteration's G phase (detached, with their
                         labels) instead of running G again: one generator forward per iteration instead of two,
                         as in FastGAN's own loop. D then sees fakes of G before its optimiser step (one step
                         older than with False, where the D phase draws new ones). The D phase's `gen_z`/`gen_c`
                         are ignored while G-phase fakes of matching batch size are left; without them (no G
                         phase this iteration) it generates as usual. False (the hosts' behaviour) by default.
        r1_gamma, style_mixing_prob, pl_weight, pl_batch_shrink, pl_decay, pl_no_weight_grad, G_ema:
                         accepted for host configs written for StyleGAN2Loss, and ignored (with a warning where
                         the value asks for a regulariser). Any other keyword is a TypeError.
    """

    def __init__(self, device, G=None, D=None, augment_pipe=None, blur_init_sigma=2, blur_fade_kimg=300,
                 report="auto", G_mapping=None, G_synthesis=None, reuse_fakes=False, **host_kwargs):
        unknown = sorted(k for k in host_kwargs if k not in _IGNORED_HOST_KWARGS)
        if unknown:
            own = [p for p in inspect.signature(ProjectedGANLoss.__init__).parameters if p not in ("self",
                                                                                                      "host_kwargs")]
            hints = {k: difflib.get_close_matches(k, own + list(_IGNORED_HOST_KWARGS), n=1) for k in unknown}
            listed = ", ".join(f"'{k}'" + (f" (did you mean '{hints[k][0]}'?)" if hints[k] else "") for k in unknown)
            raise TypeError(f"ProjectedGANLoss got unexpected keyword argument(s) {listed}; it accepts "
                            f"{', '.join(own)}, and ignores {', '.join(_IGNORED_HOST_KWARGS)} (StyleGAN2Loss "
                            f"options that a Projected GAN does not use)")
        if G is not None and (G_mapping is not None or G_synthesis is not None):
            raise TypeError("ProjectedGANLoss: pass either G (StyleGAN3 hosts) or G_mapping and G_synthesis "
                            "(StyleGAN2-ADA hosts), not both")
        if (G_mapping is None) != (G_synthesis is None):
            raise TypeError("ProjectedGANLoss: G_mapping and G_synthesis must be passed together")
        if report is not None and not callable(report) and not isinstance(report, str):
            raise TypeError(f"ProjectedGANLoss: report must be a callable, a dotted name string or None, "
                            f"got {type(report).__name__}")
        if float(blur_init_sigma) < 0 or float(blur_fade_kimg) < 0:
            raise ValueError(f"ProjectedGANLoss: blur_init_sigma ({blur_init_sigma}) and blur_fade_kimg "
                             f"({blur_fade_kimg}) must be >= 0")

        self.device = torch.device(device)
        self.G = G
        self.G_mapping = G_mapping
        self.G_synthesis = G_synthesis
        self.D = D
        self.augment_pipe = augment_pipe
        self.blur_init_sigma = float(blur_init_sigma)
        self.blur_fade_kimg = float(blur_fade_kimg)
        self._report = report
        self._nimg = 0  # Images seen, for hosts (StyleGAN2-ADA) that do not pass cur_nimg.
        self._warned_reg_phases = set()
        self.reuse_fakes = bool(reuse_fakes)
        self._fakes = []  # reuse_fakes: (img, c) of this iteration's G phase, in round order, for its D phase
        self._last_phase = None

        # How to run G, decided once. A wrapped G is called whole: reaching into `.module.mapping` would bypass
        # DDP and leave its gradients un-reduced.
        if G_mapping is not None:
            self._mapping, self._synthesis = G_mapping, G_synthesis
        elif G is not None and G is _unwrap(G) and hasattr(G, "mapping") and hasattr(G, "synthesis"):
            self._mapping, self._synthesis = G.mapping, G.synthesis
        else:
            self._mapping = self._synthesis = None
        if self._mapping is not None:
            # Projected GAN's FastGAN synthesis takes the label too: synthesis(ws, c). Only an explicitly named `c`
            # counts (StyleGAN3's synthesis passes **kwargs on to layers that would reject it).
            self._synthesis_c = "c" in _parameters(self._synthesis) and _parameters(self._synthesis)["c"].kind in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            self._mapping_emas = _accepts(self._mapping, "update_emas")
            # StyleGAN3-style synthesis networks take update_emas through **layer_kwargs; StyleGAN2-ADA's take
            # **block_kwargs too but reject it further down. Its mapping network tells the two apart.
            self._synthesis_emas = _accepts(self._synthesis, "update_emas", var_keyword=self._mapping_emas)
        else:
            self._G_emas = G is not None and _accepts(G, "update_emas")

        self._notes(host_kwargs)

    def _notes(self, host_kwargs):
        """One-time notes: warnings for what changes training against the user's expectation, info otherwise."""
        if host_kwargs:
            active = {k: v for k, v in host_kwargs.items()
                      if _IGNORED_HOST_KWARGS[k] is not None and v not in (None, _IGNORED_HOST_KWARGS[k])}
            listed = ", ".join(f"{k}={v!r}" for k, v in sorted(host_kwargs.items()) if k != "G_ema")
            if active:
                warnings.warn(f"ProjectedGANLoss ignores {', '.join(f'{k}={v!r}' for k, v in sorted(active.items()))}"
                              f": Projected GANs train without R1, path-length regularisation or style mixing "
                              f"(set them to 0 in the loss kwargs to silence this)", UserWarning, stacklevel=3)
            elif listed:
                logger.info("ProjectedGANLoss: ignoring StyleGAN2Loss options %s", listed)
        if self.augment_pipe is not None:
            logger.info("ProjectedGANLoss: applying augment_pipe (%s) to every image D sees, before D's own "
                        "DiffAugment", type(_unwrap(self.augment_pipe)).__name__)
            if self._report is None:
                warnings.warn("ProjectedGANLoss got an augment_pipe but report=None: an ADA heuristic that reads "
                              "'Loss/signs/real' from the host's statistics sees no data; pass "
                              "report='torch_utils.training_stats.report'", UserWarning, stacklevel=3)
        D = _unwrap(self.D)
        c_dim, cond = getattr(D, "c_dim", 0), getattr(D, "cond", None)
        if c_dim and cond is False:
            warnings.warn(f"ProjectedGANLoss: the discriminator has c_dim={c_dim} but was built with cond=False, "
                          f"so it ignores the labels and training is unconditional; pass cond=True in the D "
                          f"kwargs for a class-conditional discriminator", UserWarning, stacklevel=3)

    def _note_lazy_regularisation(self, phase, interval):
        """Warn once per network: a host that runs a 'reg' phase every k steps built that network's Adam with
        lr * k/(k+1) and betas ** (k/(k+1)); with an empty phase only that slower optimiser remains."""
        if phase in self._warned_reg_phases:
            return
        self._warned_reg_phases.add(phase)
        net = phase[0]
        ratio = f"{interval:g}/{interval + 1:g}" if interval >= 1 else "k/(k+1)"
        warnings.warn(f"ProjectedGANLoss: the host runs lazy regularisation for {net} (phase '{phase}', interval "
                      f"{interval:g}), which does nothing here, but the host has built {net}'s Adam with lr x {ratio} "
                      f"and betas ** ({ratio}) for it; set {net}_reg_interval = None in the host's train.py to train "
                      f"{net} at the lr and betas given (warned once per network)", UserWarning, stacklevel=3)

    # -- reporting ----------------------------------------------------------------------------------------------
    def report(self, name, value):
        """Send a statistic [N] or [N, K] to the `report` target (resolving a dotted name on first use)."""
        if isinstance(self._report, str):
            self._report = _host_report() if self._report == AUTO_REPORT else _resolve_report(self._report)
        if self._report is not None:
            self._report(name, value)

    # -- building blocks ----------------------------------------------------------------------------------------
    def blur_sigma(self, cur_nimg):
        if self.blur_fade_kimg <= 0:
            return 0.0
        return max(1 - cur_nimg / (self.blur_fade_kimg * 1e3), 0.0) * self.blur_init_sigma

    def _G_modules(self):
        return [m for m in (self.G, self.G_mapping, self.G_synthesis) if m is not None]

    def run_G(self, z, c, update_emas=False):
        """z [N, z_dim], c [N, c_dim] -> images [N, C, H, W]."""
        if self._mapping is not None:
            ws = self._mapping(z, c, **({"update_emas": update_emas} if self._mapping_emas else {}))
            kwargs = {"update_emas": update_emas} if self._synthesis_emas else {}
            if self._synthesis_c:
                kwargs["c"] = c
            return self._synthesis(ws, **kwargs)
        if self.G is None:
            raise TypeError("ProjectedGANLoss was built without a generator (G, or G_mapping and G_synthesis)")
        return self.G(z, c, **({"update_emas": update_emas} if self._G_emas else {}))

    def run_D(self, img, c, blur_sigma=0.0):
        """img [N, C, H, W], c [N, c_dim] -> logits [N, K], after the blur and the host's augment_pipe."""
        if self.D is None:
            raise TypeError("ProjectedGANLoss was built without a discriminator (D)")
        img = gaussian_blur(img, blur_sigma)
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    # -- the step -----------------------------------------------------------------------------------------------
    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, *args, gain=None, cur_nimg=None,
                             sync=None):
        """Compute the phase's loss and call backward on it (scaled by `gain`). See the module docstring.

        real_img [N, C, H, W] in [-1, 1], real_c [N, c_dim], gen_z [N, z_dim], gen_c [N, c_dim].
        """
        if phase not in _PHASES:
            raise ValueError(f"phase='{phase}': expected one of {_PHASES}")
        if len(args) >= 1 and isinstance(args[0], bool):  # StyleGAN2-ADA: (sync, gain)
            sync = args[0]
            gain = args[1] if len(args) > 1 else gain
        elif args:  # StyleGAN3: (gain, cur_nimg)
            gain = args[0]
            cur_nimg = args[1] if len(args) > 1 else cur_nimg
        gain = 1.0 if gain is None else float(gain)
        if phase in ("Gmain", "Gboth") and self._last_phase not in ("Gmain", "Gboth"):
            self._fakes.clear()  # a new iteration: fakes of an earlier one are never trained on
        self._last_phase = phase
        if phase in ("Dmain", "Dboth"):
            world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
            self._nimg += real_img.shape[0] * world
        if cur_nimg is None:
            cur_nimg = self._nimg
        if phase in ("Greg", "Dreg"):
            self._note_lazy_regularisation(phase, gain)
            return  # No regularisation in Projected GANs.
        blur_sigma = self.blur_sigma(cur_nimg)
        G_modules = self._G_modules()

        if phase in ("Gmain", "Gboth"):
            with _ddp_sync(G_modules, sync), _ddp_sync([self.D], False):
                # With reuse_fakes this is G's only forward of the iteration, so it also updates G's EMAs.
                gen_img = self.run_G(gen_z, gen_c, update_emas=self.reuse_fakes)
                if self.reuse_fakes:
                    self._fakes.append((gen_img.detach(), gen_c.detach()))
                gen_logits = self.run_D(gen_img, gen_c, blur_sigma)
                loss_G = (-gen_logits).mean()
                self.report("Loss/scores/fake", gen_logits)
                self.report("Loss/signs/fake", gen_logits.sign())
                self.report("Loss/G/loss", loss_G)
                # Gradients for G only: D's weights (trainable or not) never get .grad from this phase, even in
                # hosts that do not toggle requires_grad per phase, and no time is spent computing them.
                g_params = [p for m in G_modules for p in m.parameters() if p.requires_grad]
                if g_params:
                    loss_G.mul(gain).backward(inputs=g_params)

        if phase in ("Dmain", "Dboth"):
            if self._fakes and self._fakes[0][0].shape[0] == gen_z.shape[0]:
                gen_img, gen_c = self._fakes.pop(0)
            else:
                with torch.no_grad(), _ddp_sync(G_modules, False):  # D's step never needs gradients through G.
                    # detach(): no_grad does not strip requires_grad from a generator that returns a leaf tensor.
                    gen_img = self.run_G(gen_z, gen_c, update_emas=True).detach()
            # Two forward/backward pairs, fakes first without DDP's all-reduce: a DDP module must not run two
            # synchronised forwards before one backward, and the accumulated gradient is reduced with the reals.
            with _ddp_sync([self.D], False):
                gen_logits = self.run_D(gen_img, gen_c, blur_sigma)
                loss_fake = F.relu(1 + gen_logits).mean()
                self.report("Loss/scores/fake", gen_logits)
                self.report("Loss/signs/fake", gen_logits.sign())
                loss_fake.mul(gain).backward()
            with _ddp_sync([self.D], sync):
                real_logits = self.run_D(real_img.detach(), real_c, blur_sigma)
                loss_real = F.relu(1 - real_logits).mean()
                self.report("Loss/scores/real", real_logits)
                self.report("Loss/signs/real", real_logits.sign())
                self.report("Loss/D/loss", loss_fake.detach() + loss_real.detach())
                loss_real.mul(gain).backward()


@contextlib.contextmanager
def _ddp_sync(modules, sync):
    """Skip DDP's gradient all-reduce in the given modules when `sync` is False (also StyleGAN2-ADA's
    `sync=False` rounds); None or True leaves DDP as it is."""
    with contextlib.ExitStack() as stack:
        if sync is False:
            for m in modules:
                if isinstance(m, torch.nn.parallel.DistributedDataParallel):
                    stack.enter_context(m.no_sync())
        yield
