"""Shared helpers of the projector_plugin tests: the benchmarks' reference module, test images, a toy generator."""

import importlib.util
import os

import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def load_reference():
    """benchmarks/reference_discriminator.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "reference_discriminator", os.path.join(REPO, "benchmarks", "reference_discriminator.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def imgs(n=2, res=32, seed=0):
    """[n, 3, res, res] uniform in [-1, 1], reproducible."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, res, res, generator=g) * 2 - 1


class ToyG(torch.nn.Module):
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
