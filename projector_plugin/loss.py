"""Hinge loss for a projected discriminator, as a drop-in `loss` object for StyleGAN-style training loops.

Both host conventions are accepted:
    loss.accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg)   # StyleGAN3
    loss.accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, sync, gain)       # StyleGAN2-ADA
Projected GANs need no R1 or path-length regularisation, so the 'Greg' and 'Dreg' phases do nothing.
"""

import contextlib
import importlib
import inspect

import numpy as np
import torch
import torch.nn.functional as F

_PHASES = ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth")


def gaussian_blur(img, sigma):
    """Separable Gaussian blur with zero padding: img [N, C, H, W] -> same shape. No-op for sigma <= 0."""
    radius = int(np.floor(sigma * 3))
    if radius <= 0:
        return img
    taps = torch.arange(-radius, radius + 1, device=img.device, dtype=img.dtype)
    f = torch.exp(-0.5 * (taps / sigma) ** 2)
    f = f / f.sum()
    c = img.shape[1]
    img = F.conv2d(img, f.view(1, 1, 1, -1).repeat(c, 1, 1, 1), padding=(0, radius), groups=c)
    return F.conv2d(img, f.view(1, 1, -1, 1).repeat(c, 1, 1, 1), padding=(radius, 0), groups=c)


def _accepts(fn, name):
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


class ProjectedGANLoss:
    """Hinge loss: D minimises relu(1 - D(real)) + relu(1 + D(fake)), G minimises -D(fake).

    Args:
        device:          torch device of the inputs.
        G:               generator; `G.mapping(z, c)` + `G.synthesis(ws)` when it has them, else `G(z, c)`.
        D:               discriminator, `D(img, c) -> logits` (normally a ProjectedDiscriminator).
        blur_init_sigma: sigma (pixels) of a Gaussian blur of every D input at the start of training ...
        blur_fade_kimg:  ... fading linearly to zero over this many thousand images (0 = no blur).
        report:          `report(name, tensor)` for training statistics; None = the host's
                         `torch_utils.training_stats.report` if it has one, else silent.
    Unknown keyword arguments (a host's style_mixing_prob, pl_weight, r1_gamma, ...) are ignored so configs
    written for StyleGAN2Loss keep working.
    """

    def __init__(self, device, G, D, blur_init_sigma=2, blur_fade_kimg=300, report=None, G_ema=None, **_ignored):
        self.device = torch.device(device)
        self.G = G
        self.D = D
        self.blur_init_sigma = float(blur_init_sigma)
        self.blur_fade_kimg = float(blur_fade_kimg)
        self._report = report
        self._report_resolved = report is not None
        self._nimg = 0  # Images seen, for hosts (StyleGAN2-ADA) that do not pass cur_nimg.

    # -- reporting ----------------------------------------------------------------------------------------------
    def report(self, name, value):
        if not self._report_resolved:
            self._report_resolved = True
            try:  # The host's stats module, if this runs inside a StyleGAN-style codebase.
                self._report = importlib.import_module("torch_utils.training_stats").report
            except Exception:
                self._report = None
        if self._report is not None:
            self._report(name, value)

    # -- building blocks ----------------------------------------------------------------------------------------
    def blur_sigma(self, cur_nimg):
        if self.blur_fade_kimg <= 0:
            return 0.0
        return max(1 - cur_nimg / (self.blur_fade_kimg * 1e3), 0.0) * self.blur_init_sigma

    def run_G(self, z, c, update_emas=False):
        G = self.G
        kw = {"update_emas": update_emas}
        if hasattr(G, "mapping") and hasattr(G, "synthesis"):
            ws = G.mapping(z, c, **({k: v for k, v in kw.items() if _accepts(G.mapping, k)}))
            return G.synthesis(ws, **({k: v for k, v in kw.items() if _accepts(G.synthesis, k)}))
        return G(z, c)

    def run_D(self, img, c, blur_sigma=0.0):
        return self.D(gaussian_blur(img, blur_sigma), c)

    # -- the step -----------------------------------------------------------------------------------------------
    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, *args, gain=None, cur_nimg=None,
                             sync=None):
        """Compute the phase's loss and call backward on it (scaled by `gain`). See the module docstring."""
        if phase not in _PHASES:
            raise ValueError(f"phase='{phase}': expected one of {_PHASES}")
        if len(args) >= 1 and isinstance(args[0], bool):  # StyleGAN2-ADA: (sync, gain)
            sync = args[0]
            gain = args[1] if len(args) > 1 else gain
        elif args:  # StyleGAN3: (gain, cur_nimg)
            gain = args[0]
            cur_nimg = args[1] if len(args) > 1 else cur_nimg
        gain = 1.0 if gain is None else float(gain)
        if phase in ("Dmain", "Dboth"):
            world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
            self._nimg += real_img.shape[0] * world
        if cur_nimg is None:
            cur_nimg = self._nimg
        if phase in ("Greg", "Dreg"):
            return  # No regularisation in Projected GANs.
        blur_sigma = self.blur_sigma(cur_nimg)

        if phase in ("Gmain", "Gboth"):
            with _ddp_sync(self.G, sync), _ddp_sync(self.D, False):
                gen_img = self.run_G(gen_z, gen_c)
                gen_logits = self.run_D(gen_img, gen_c, blur_sigma)
                loss_G = (-gen_logits).mean()
                self.report("Loss/scores/fake", gen_logits)
                self.report("Loss/signs/fake", gen_logits.sign())
                self.report("Loss/G/loss", loss_G)
                # Gradients for G only: D's weights (trainable or not) never get .grad from this phase, even in
                # hosts that do not toggle requires_grad per phase, and no time is spent computing them.
                g_params = [p for p in self.G.parameters() if p.requires_grad]
                if g_params:
                    loss_G.mul(gain).backward(inputs=g_params)

        if phase in ("Dmain", "Dboth"):
            with _ddp_sync(self.D, sync):
                with torch.no_grad():  # D's step never needs gradients through G.
                    # detach(): no_grad does not strip requires_grad from a generator that returns a leaf tensor.
                    gen_img = self.run_G(gen_z, gen_c, update_emas=True).detach()
                gen_logits = self.run_D(gen_img, gen_c, blur_sigma)
                loss_fake = F.relu(1 + gen_logits).mean()
                real_logits = self.run_D(real_img.detach(), real_c, blur_sigma)
                loss_real = F.relu(1 - real_logits).mean()
                self.report("Loss/scores/fake", gen_logits)
                self.report("Loss/signs/fake", gen_logits.sign())
                self.report("Loss/scores/real", real_logits)
                self.report("Loss/signs/real", real_logits.sign())
                self.report("Loss/D/loss", loss_fake + loss_real)
                (loss_fake + loss_real).mul(gain).backward()


def _ddp_sync(module, sync):
    """Skip DDP's gradient all-reduce when the host says so (StyleGAN2-ADA's `sync=False` rounds)."""
    if sync is False and isinstance(module, torch.nn.parallel.DistributedDataParallel):
        return module.no_sync()
    return contextlib.nullcontext()
