"""Image helpers shared by the dataset loader, the training loop, the metrics and the CLIs.

A neutral home so that none of those has to import another (metrics must not import training, the CLIs must not
import the training loop just to write a PNG).
"""

import os
import re
from typing import Optional, Sequence, Tuple

import numpy as np
import PIL.Image
import torch

from torch_utils import util

# Every reader (dataset loader, dataset_tool, folder metrics) accepts exactly these.
IMAGE_EXTENSIONS = frozenset([".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"])


def is_image_file(name: str) -> bool:
    """True for a file name with one of IMAGE_EXTENSIONS (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def parse_grid(value: Optional[str]) -> Optional[Tuple[int, int]]:
    """'COLSxROWS' -> (cols, rows); None -> None. Raises ValueError naming the bad value."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(value))
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1 or int(m.group(1)) * int(m.group(2)) > 65536:
        raise ValueError(f"'{value}' is not COLSxROWS with 1..65536 images, e.g. 4x4")
    return int(m.group(1)), int(m.group(2))


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """Generator output float [N, C, H, W] in [-1, 1] -> uint8 [N, C, H, W] (round half up, as StyleGAN)."""
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)


PNG_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # channels -> PIL mode (alpha last, as datasets store it)


def to_png_bytes(array: np.ndarray) -> bytes:
    """uint8 [H, W, C] with C in 1..4 (gray, gray + alpha, RGB, RGBA) -> PNG file contents."""
    import io

    if array.ndim != 3 or array.shape[2] not in PNG_MODES:
        raise ValueError(f"cannot save an image of shape {list(array.shape)} as PNG (expected [H, W, 1..4])")
    buf = io.BytesIO()
    mode = PNG_MODES[array.shape[2]]
    PIL.Image.fromarray(array[:, :, 0] if mode == "L" else array, mode).save(buf, format="PNG")
    return buf.getvalue()


def composite_alpha(array: np.ndarray, background: int = 255) -> np.ndarray:
    """uint8 [..., C]: with an alpha channel (C = 2 or 4), the colour composited onto a plain background (white)
    -> [..., C - 1]; other arrays unchanged. For outputs without alpha, such as videos."""
    if array.shape[-1] not in (2, 4):
        return array
    color, alpha = array[..., :-1].astype(np.float32), array[..., -1:].astype(np.float32) / 255
    return np.rint(color * alpha + background * (1 - alpha)).clip(0, 255).astype(np.uint8)


def save_png(array: np.ndarray, path: str) -> None:
    """uint8 [H, W, C] with C in 1..4 -> PNG at `path`, written atomically (never a truncated file)."""
    data = to_png_bytes(array)
    util.atomic_write(path, lambda f: f.write(data))


def tile_grid(images, drange=(-1, 1), grid_size: Optional[Sequence[int]] = None) -> np.ndarray:
    """Images [N, C, H, W] (tensor or array, values in `drange`) -> uint8 [rows*H, cols*W, C].

    `grid_size` = [cols, rows] (default: about square); missing tiles are black, extra images are dropped.
    """
    if torch.is_tensor(images):
        images = images.detach().cpu().to(torch.float32).numpy()
    images = np.asarray(images, dtype=np.float32)
    lo, hi = drange
    images = np.rint((images - lo) * (255 / (hi - lo))).clip(0, 255).astype(np.uint8)
    n, c, h, w = images.shape
    if grid_size is None:
        cols = int(np.ceil(np.sqrt(n)))
        grid_size = [cols, int(np.ceil(n / cols))]
    gw, gh = grid_size
    if n < gw * gh:
        images = np.concatenate([images, np.zeros([gw * gh - n, c, h, w], np.uint8)])
    return images[: gw * gh].reshape(gh, gw, c, h, w).transpose(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c)


def save_image_grid(images, fname: str, drange=(-1, 1), grid_size: Optional[Sequence[int]] = None) -> None:
    """Tile images [N, C, H, W] into a PNG (see `tile_grid`), written atomically."""
    save_png(tile_grid(images, drange, grid_size), fname)
