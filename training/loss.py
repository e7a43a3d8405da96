"""Baseline StyleGAN2 loss: non-saturating logistic GAN loss, lazy R1 on reals, optional path
length regularisation and style mixing (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN"; StyleGAN2-ADA's loss conventions).

The training loop calls

    loss.accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg)

for each phase of each iteration. The loss runs the networks, calls `.backward()` itself with the
terms scaled by `gain` (the loop passes the lazy-regularisation interval as the gain of 'Greg' /
'Dreg'), and leaves the optimiser step to the loop. Gradients go only into the network the phase
trains: the other network's parameters are frozen for the duration of the call.

Phases: 'Gmain' (G adversarial), 'Greg' (path length), 'Gboth' (both at once), 'Dmain'
(D adversarial on fakes and reals), 'Dreg' (R1), 'Dboth' (both at once).
"""

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from projector_plugin import gaussian_blur
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix

PHASES = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')


@contextlib.contextmanager
def frozen(module):
    """Temporarily set requires_grad=False on all parameters of `module`, restoring each
    parameter's own flag afterwards (parameters that were frozen before stay frozen)."""
    if module is None:
        yield
        return
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def r1_penalty(real_logits, real_img):
    """Per-sample squared gradient norm ||d sum(D(x)) / dx||^2 -> [N], with create_graph so the
    penalty itself can be backpropagated into D's weights."""
    grads, = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img], create_graph=True, only_inputs=True)
    return grads.square().sum(dim=[1, 2, 3])


class StyleGAN2Loss:
    """Args:
        device:             torch device the networks live on.
        G, D:               generator (`.mapping` / `.synthesis`) and discriminator (`D(img, c)`).
        augment_pipe:       optional callable applied to every image D sees (e.g. ADA).
        r1_gamma:           R1 weight; the penalty is r1_gamma / 2 * E||grad_x D(x)||^2 on reals.
        style_mixing_prob:  probability of mixing two latents at a random crossover layer; ignored
                            for generators with a single w (FastGAN).
        pl_weight:          path-length regularisation weight (0 disables 'Greg').
        pl_batch_shrink:    the PL term runs on batch // pl_batch_shrink samples.
        pl_decay:           EMA rate of the running mean path length.
        pl_no_weight_grad:  run the PL inner backward under conv2d_gradfix.no_weight_gradients():
                            no conv weight gradients (they would be discarded); same result.
        blur_init_sigma:    initial blur (pixels; projector_plugin.gaussian_blur, StyleGAN3's
                            kernel) of D's inputs, faded out linearly ...
        blur_fade_kimg:     ... over this many thousand images (0 disables blurring).
        report:             callable(name, tensor) receiving the statistics; default
                            torch_utils.training_stats.report.
    """

    def __init__(self, device, G, D, augment_pipe=None, r1_gamma=10, style_mixing_prob=0, pl_weight=0,
                 pl_batch_shrink=2, pl_decay=0.01, pl_no_weight_grad=False, blur_init_sigma=0, blur_fade_kimg=0,
                 report=None):
        super().__init__()
        if r1_gamma < 0 or pl_weight < 0:
            raise ValueError(f'StyleGAN2Loss: r1_gamma ({r1_gamma}) and pl_weight ({pl_weight}) must be >= 0')
        if not 0 <= style_mixing_prob <= 1:
            raise ValueError(f'StyleGAN2Loss: style_mixing_prob must be in [0, 1], got {style_mixing_prob}')
        if pl_batch_shrink < 1:
            raise ValueError(f'StyleGAN2Loss: pl_batch_shrink must be >= 1, got {pl_batch_shrink}')
        self.device = torch.device(device)
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = r1_gamma
        self.style_mixing_prob = style_mixing_prob
        self.pl_weight = pl_weight
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.pl_no_weight_grad = pl_no_weight_grad
        self.pl_mean = torch.zeros([], device=self.device)
        self.blur_init_sigma = blur_init_sigma
        self.blur_fade_kimg = blur_fade_kimg
        self.report = report if report is not None else training_stats.report

    # ------------------------------------------------------------------------------------------

    def blur_sigma(self, cur_nimg):
        if self.blur_fade_kimg > 0:
            return max(1 - cur_nimg / (self.blur_fade_kimg * 1e3), 0) * self.blur_init_sigma
        return 0

    def run_G(self, z, c, update_emas=False):
        """-> (img [N, C, H, W], ws [N, num_ws, w_dim])."""
        ws = self.G.mapping(z, c, update_emas=update_emas)
        num_ws = ws.shape[1]
        if self.style_mixing_prob > 0 and num_ws > 1:
            # One crossover index per batch (not per sample): cheap, and what StyleGAN2 does.
            cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, num_ws)
            cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob, cutoff,
                                 torch.full_like(cutoff, num_ws))
            mixed = self.G.mapping(torch.randn_like(z), c, update_emas=False)
            layer = torch.arange(num_ws, device=ws.device).reshape(1, -1, 1)
            ws = torch.where(layer < cutoff, ws, mixed)
        img = self.G.synthesis(ws, update_emas=update_emas)
        return img, ws

    def run_D(self, img, c, blur_sigma=0):
        """-> logits [N, 1] (or [N, K]; all statistics reduce over every element)."""
        if blur_sigma > 0:
            img = gaussian_blur(img, blur_sigma)
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    # ------------------------------------------------------------------------------------------

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        if phase not in PHASES:
            raise ValueError(f'StyleGAN2Loss: unknown phase {phase!r}, expected one of {PHASES}')
        if self.pl_weight == 0:
            phase = {'Greg': 'none', 'Gboth': 'Gmain'}.get(phase, phase)
        if self.r1_gamma == 0:
            phase = {'Dreg': 'none', 'Dboth': 'Dmain'}.get(phase, phase)
        blur_sigma = self.blur_sigma(cur_nimg)
        report = self.report

        if phase in ('Gmain', 'Gboth'):
            with frozen(self.D):
                gen_img, _ = self.run_G(gen_z, gen_c)
                gen_logits = self.run_D(gen_img, gen_c, blur_sigma=blur_sigma)
                report('Loss/scores/fake', gen_logits)
                report('Loss/signs/fake', gen_logits.sign())
                loss_Gmain = F.softplus(-gen_logits)  # -log(sigmoid(D(G(z))))
                report('Loss/G/loss', loss_Gmain)
                loss_Gmain.mean().mul(gain).backward()

        if phase in ('Greg', 'Gboth'):
            with frozen(self.D):
                batch_size = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
                gen_img, gen_ws = self.run_G(gen_z[:batch_size], gen_c[:batch_size])
                # Random image-space direction scaled so that E||J^T y|| is resolution independent.
                pl_noise = torch.randn_like(gen_img) / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
                # Only d/d(ws) is wanted: weight gradients of this inner backward would be discarded.
                with conv2d_gradfix.no_weight_gradients(self.pl_no_weight_grad):
                    pl_grads, = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws],
                                                    create_graph=True, only_inputs=True)
                pl_lengths = pl_grads.square().sum(dim=2).mean(dim=1).sqrt()
                pl_mean = self.pl_mean.lerp(pl_lengths.mean().detach(), self.pl_decay)
                self.pl_mean.copy_(pl_mean)
                pl_penalty = (pl_lengths - pl_mean).square()
                report('Loss/pl_penalty', pl_penalty)
                loss_Gpl = pl_penalty * self.pl_weight
                report('Loss/G/reg', loss_Gpl)
                loss_Gpl.mean().mul(gain).backward()

        loss_Dgen = 0
        if phase in ('Dmain', 'Dboth'):
            with frozen(self.G), torch.no_grad():
                # update_emas: the D phase sees every generated batch once, so it is where the
                # generator's running statistics (w_avg) are tracked, as in StyleGAN2-ADA.
                gen_img, _ = self.run_G(gen_z, gen_c, update_emas=True)
            gen_logits = self.run_D(gen_img, gen_c, blur_sigma=blur_sigma)
            report('Loss/scores/fake', gen_logits)
            report('Loss/signs/fake', gen_logits.sign())
            loss_Dgen = F.softplus(gen_logits)  # -log(1 - sigmoid(D(G(z))))
            loss_Dgen.mean().mul(gain).backward()

        if phase in ('Dmain', 'Dreg', 'Dboth'):
            real_img_tmp = real_img.detach().requires_grad_(phase in ('Dreg', 'Dboth'))
            real_logits = self.run_D(real_img_tmp, real_c, blur_sigma=blur_sigma)
            report('Loss/scores/real', real_logits)
            report('Loss/signs/real', real_logits.sign())

            loss_Dreal = 0
            if phase in ('Dmain', 'Dboth'):
                loss_Dreal = F.softplus(-real_logits)  # -log(sigmoid(D(x)))
                report('Loss/D/loss', loss_Dgen + loss_Dreal)

            loss_Dr1 = 0
            if phase in ('Dreg', 'Dboth'):
                penalty = r1_penalty(real_logits, real_img_tmp)
                loss_Dr1 = penalty * (self.r1_gamma / 2)
                report('Loss/r1_penalty', penalty)
                report('Loss/D/reg', loss_Dr1)

            # Per-sample sum: [N, K] logits terms are averaged over K, the R1 term is already [N].
            (_per_sample(loss_Dreal) + _per_sample(loss_Dr1)).mean().mul(gain).backward()


def _per_sample(x):
    """[N, ...] -> [N] (mean over the rest); scalars pass through."""
    if isinstance(x, torch.Tensor) and x.ndim > 1:
        return x.flatten(1).mean(dim=1)
    return x
