"""Spectral normalisation (Miyato et al. 2018) as ordinary layers: x -> layer(x, W) / sigma(W) + b.

`SNConv2d` and `SNLinear` keep the weight W unnormalised as their parameter and the power-iteration vectors
u [C_out] and v [C_in*k*k] (or [C_in]) as buffers. Unlike `torch.nn.utils.parametrizations.spectral_norm`, they
pickle, deepcopy and `torch.save` whole, which hosts that snapshot the discriminator object need.

The estimate matches torch's parametrisation: the same initial draws from the global RNG and 16 warm-up
iterations (its 15, plus the one of its registration call), so with the same seed the weights and u, v are
equal and eval-mode outputs agree. A training forward runs one power iteration and takes sigma's gradient
with u and v held fixed. 1/sigma scales the layer's *output* rather than the weight, and sigma = |W v| reuses the
power iteration's matrix-vector product, so a step reads W twice instead of materialising W / sigma. The power
iteration is deterministic in W, so replicas with identical weights keep identical u and v.

The layers also load state dicts written with torch's parametrisation (keys `parametrizations.weight.original`,
`parametrizations.weight.0._u`, `parametrizations.weight.0._v`).
"""

import torch
import torch.nn.functional as F

_TORCH_KEYS = {"parametrizations.weight.original": "weight", "parametrizations.weight.0._u": "u",
               "parametrizations.weight.0._v": "v"}


class _SpectralNormMixin:
    """Shared estimator. Subclasses provide `self.weight` (2-D or 4-D) and call `_init_spectral_norm`."""

    def _init_spectral_norm(self, eps):
        self.eps = eps
        with torch.no_grad():
            w = self.weight.flatten(1)
            u = F.normalize(w.new_empty(w.shape[0]).normal_(0, 1), dim=0, eps=eps)
            v = F.normalize(w.new_empty(w.shape[1]).normal_(0, 1), dim=0, eps=eps)
            for _ in range(16):
                u = F.normalize(torch.mv(w, v), dim=0, eps=eps)
                v = F.normalize(torch.mv(w.t(), u), dim=0, eps=eps)
        self.register_buffer("u", u)
        self.register_buffer("v", v)

    def _matrix(self):
        """(W as a matrix view, whether its columns are in channels_last order) without copying W.

        A channels_last conv weight (what the conv wants when its input is channels_last) is viewed as
        [C_out, k*k*C_in]: a column permutation, which leaves the singular values unchanged. v is kept in the
        canonical [C_in*k*k] order whatever the memory format, and permuted (a small vector) when needed.
        """
        w = self.weight
        if w.ndim == 4 and not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last):
            return w.permute(0, 2, 3, 1).flatten(1), True
        return w.flatten(1), False

    def _v_as(self, channels_last):
        if not channels_last:
            return self.v
        _, i, kh, kw = self.weight.shape
        return self.v.view(i, kh, kw).permute(1, 2, 0).flatten()

    def sigma(self):
        """Largest singular value of W viewed as [C_out, C_in*k*k]: a 0-d tensor, differentiable in W (u, v
        held fixed). In training mode it first runs one power iteration, updating u and v in place."""
        w, cl = self._matrix()
        if not self.training:
            return torch.dot(self.u, torch.mv(w, self._v_as(cl)))
        with torch.no_grad():
            v = F.normalize(torch.mv(w.t(), self.u), dim=0, eps=self.eps)
            if cl:
                _, i, kh, kw = self.weight.shape
                self.v.copy_(v.view(kh, kw, i).permute(2, 0, 1).flatten())
            else:
                self.v.copy_(v)
        wv = torch.mv(w, v)
        sigma = wv.norm()  # = u^T W v with u = Wv / |Wv|: the gradient is the same u v^T outer product.
        with torch.no_grad():
            self.u.copy_(wv / sigma.clamp_min(self.eps))
        return sigma

    def _scale_output(self, out, bias_shape):
        scale = (1 / self.sigma()).to(out.dtype)
        if self.bias is None:
            return out * scale
        return torch.addcmul(self.bias.to(out.dtype).view(bias_shape), out, scale)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # State dicts saved from torch's parametrised spectral_norm: same tensors under other names.
        for old, new in _TORCH_KEYS.items():
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class SNConv2d(_SpectralNormMixin, torch.nn.Conv2d):
    """Conv2d with spectral normalisation: conv(x, W) / sigma(W) + b, W viewed as [C_out, C_in/groups*k*k].

    Takes torch.nn.Conv2d's arguments plus `eps`.
    forward(x [N, C_in, H, W]) -> [N, C_out, H', W'], like torch.nn.Conv2d.
    """

    def __init__(self, *args, eps=1e-12, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_spectral_norm(eps)

    def forward(self, x):
        return self._scale_output(self._conv_forward(x, self.weight, None), (1, -1, 1, 1))


class SNLinear(_SpectralNormMixin, torch.nn.Linear):
    """Linear layer with spectral normalisation: x W^T / sigma(W) + b, W [out_features, in_features].

    Takes torch.nn.Linear's arguments plus `eps`.
    forward(x [..., in_features]) -> [..., out_features], like torch.nn.Linear.
    """

    def __init__(self, *args, eps=1e-12, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_spectral_norm(eps)

    def forward(self, x):
        return self._scale_output(F.linear(x, self.weight), (-1,))
