"""Generation helpers shared by gen_images.py and gen_video.py (neither CLI imports the other).

Errors are ValueError / SnapshotError with a one-line message that names the value; each CLI turns them into
its own option errors.
"""

from typing import Any, List, Optional, Sequence

import numpy as np
import torch

from torch_utils import image_io, util
from training.cli_common import FiniteFloat, one_line

# numpy's RandomState takes seeds in 0..2**32-1; a larger seed would fail deep inside numpy.
MAX_SEED = 2**32 - 1
# Truncation psi beyond +-100 only saturates the images, and from ~1e30 on w overflows float32.
TRUNCATION_PSI = FiniteFloat(min=-100, max=100)


# One call writes at most this many images or keyframes: more is a typo (and its seed list alone would not fit).
MAX_SEEDS = 1_000_000


def parse_seeds(text: str) -> List[int]:
    """'0-15' or '1,5,9' -> seeds; ValueError naming the problem (bad syntax, a seed above MAX_SEED, more than
    MAX_SEEDS seeds)."""
    seeds = util.parse_range(text, limit=MAX_SEEDS)
    too_big = [s for s in seeds if s > MAX_SEED]
    if too_big:
        raise ValueError(f"seed {too_big[0]} is out of range: seeds go from 0 to {MAX_SEED} (2**32-1)")
    return seeds


def seed_latent(seed: int, z_dim: int) -> torch.Tensor:
    """z [1, z_dim] (float32) for a seed; identical on every platform (numpy's RandomState, as StyleGAN)."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).to(torch.float32)


def make_label(G: torch.nn.Module, class_idx: Optional[int], option: str = "--class") -> torch.Tensor:
    """One-hot label [1, c_dim] (an empty [1, 0] for unconditional models).

    Raises ValueError when `class_idx` is given to an unconditional model, missing for a conditional one, or
    out of range; `option` is the option name quoted in the message.
    """
    if G.c_dim == 0:
        if class_idx is not None:
            raise ValueError(f"the network is unconditional (c_dim=0); omit {option}")
        return torch.zeros([1, 0])
    if class_idx is None:
        raise ValueError(f"the network is conditional with {G.c_dim} classes; pass {option}=0..{G.c_dim - 1}")
    if not 0 <= class_idx < G.c_dim:
        raise ValueError(f"{class_idx} is out of range 0..{G.c_dim - 1}")
    c = torch.zeros([1, G.c_dim])
    c[0, class_idx] = 1
    return c


def to_uint8_hwc(img: torch.Tensor) -> np.ndarray:
    """Generator output float [N, C, H, W] in [-1, 1] -> uint8 numpy [N, H, W, C]."""
    return image_io.to_uint8(img).permute(0, 2, 3, 1).cpu().numpy()


def load_network(path: str, device: Any = "cpu", which: str = "G_ema", extra_classes: Sequence[str] = ()):
    """The generator of snapshot (or best-*.json pointer) `path`, in eval mode on `device`.

    `extra_classes` names network classes ('module.Class') the snapshot may build beyond the toolkit's own.
    Raises training.snapshot.SnapshotError with a one-line message naming the file for every way loading can
    fail (missing, corrupt, a missing or misshapen tensor, a class that is not allowed).
    """
    import inspect

    from training import snapshot

    kwargs = {}
    if extra_classes:
        if "extra_classes" not in inspect.signature(snapshot.load_generator).parameters:
            raise snapshot.SnapshotError("this version of training.snapshot cannot allow extra network classes")
        kwargs["extra_classes"] = tuple(extra_classes)
    try:
        return snapshot.load_generator(path, which=which, device=device, **kwargs)
    except snapshot.SnapshotError as err:
        raise snapshot.SnapshotError(one_line(err)) from err
    except (RuntimeError, KeyError, TypeError, ValueError, ImportError, AttributeError) as err:
        # load_state_dict reports missing/unexpected tensors as a multi-line RuntimeError.
        raise snapshot.SnapshotError(f"cannot rebuild the generator of '{path}': {one_line(err)}") from err

