"""Generate images from a training snapshot.

Examples:

    # 16 images, one PNG per seed.
    python gen_images.py --network=runs/00000-fastgan-.../network-snapshot-000100.pt --seeds=0-15 --outdir=out

    # The run's best snapshot by FID (a pointer written after each metric evaluation).
    python gen_images.py --network=runs/00000-fastgan-.../best-fid50k_full.json --seeds=0-15 --outdir=out

    # A 4x4 grid with truncation, class 3 of a conditional model.
    python gen_images.py --network=snap.pt --seeds=0-15 --trunc=0.7 --class=3 --grid=4x4 --outdir=out

Each seed gives the same image on every run and machine (latents are drawn on the CPU from
numpy's RandomState(seed), as in StyleGAN).
"""

import os
import re

import click
import numpy as np
import PIL.Image
import torch

from torch_utils import util


def parse_grid(value):
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise click.BadParameter(f"'{value}' is not COLSxROWS, e.g. 4x4", param_hint="'--grid'")
    return int(m.group(1)), int(m.group(2))


def seed_latent(seed: int, z_dim: int) -> torch.Tensor:
    """z [1, z_dim] for a seed; identical on every platform."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).to(torch.float32)


def make_label(G, class_idx, option="--class"):
    """One-hot label [1, c_dim] (or [1, 0] for unconditional models); clear errors for misuse."""
    if G.c_dim == 0:
        if class_idx is not None:
            raise click.BadParameter("the network is unconditional (c_dim=0); omit --class", param_hint=f"'{option}'")
        return torch.zeros([1, 0])
    if class_idx is None:
        raise click.BadParameter(f"the network is conditional with {G.c_dim} classes; pass --class=0..{G.c_dim - 1}",
                                 param_hint=f"'{option}'")
    if not 0 <= class_idx < G.c_dim:
        raise click.BadParameter(f"{class_idx} is out of range 0..{G.c_dim - 1}", param_hint=f"'{option}'")
    c = torch.zeros([1, G.c_dim])
    c[0, class_idx] = 1
    return c


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C]."""
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


def save_png(array: np.ndarray, path: str) -> None:
    """uint8 [H, W, C] with C in (1, 3) -> PNG."""
    if array.shape[2] == 1:
        PIL.Image.fromarray(array[:, :, 0], "L").save(path)
    else:
        PIL.Image.fromarray(array, "RGB").save(path)


def load_network(path: str, device: torch.device, which: str = "G_ema"):
    from training import snapshot

    try:
        return snapshot.load_generator(path, which=which, device=device)
    except snapshot.SnapshotError as err:
        raise click.BadParameter(str(err), param_hint="'--network'")


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.option("--network", "network_path", metavar="PATH", required=True,
              help="Snapshot file (network-snapshot-*.pt) or a run dir's best-<result>.json pointer")
@click.option("--seeds", help="Seeds, e.g. 0-15 or 1,5,9", metavar="LIST", required=True)
@click.option("--outdir", help="Where to save the images", metavar="DIR", required=True)
@click.option("--trunc", "truncation_psi", help="Truncation psi (1 = none)", type=float, default=1, show_default=True)
@click.option("--class", "class_idx", help="Class index (conditional networks)", type=click.IntRange(min=0))
@click.option("--noise-mode", help="Noise inputs", type=click.Choice(["const", "random", "none"]), default="const",
              show_default=True)
@click.option("--grid", help="Also write grid.png with the seeds tiled COLSxROWS", metavar="COLSxROWS")
@click.option("--which", help="Weights to use", type=click.Choice(["G_ema", "G"]), default="G_ema", show_default=True)
@click.option("--device", help="Where to run", type=click.Choice(["auto", "cuda", "cpu"]), default="auto",
              show_default=True)
def main(network_path, seeds, outdir, truncation_psi, class_idx, noise_mode, grid, which, device):
    """Generate images from a snapshot: one PNG per seed (seedNNNN.png) and optionally a grid."""
    try:
        seeds = util.parse_range(seeds)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--seeds'")
    grid_size = parse_grid(grid)
    if grid_size is not None and grid_size[0] * grid_size[1] < len(seeds):
        raise click.BadParameter(f"{grid} has {grid_size[0] * grid_size[1]} cells for {len(seeds)} seeds",
                                 param_hint="'--grid'")
    if device == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available", param_hint="'--device'")
    device = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    G = load_network(network_path, device, which)
    c = make_label(G, class_idx).to(device)

    os.makedirs(outdir, exist_ok=True)
    images = []
    with torch.no_grad():
        for seed in seeds:
            z = seed_latent(seed, G.z_dim).to(device)
            img = G(z, c, truncation_psi=truncation_psi, noise_mode=noise_mode)
            array = to_uint8(img)[0]
            images.append(array)
            save_png(array, os.path.join(outdir, f"seed{seed:04d}.png"))
    print(f"Wrote {len(seeds)} images to {outdir}")
    if grid_size is not None:
        from training.training_loop import save_image_grid

        batch = np.stack(images).transpose(0, 3, 1, 2)
        save_image_grid(batch, os.path.join(outdir, "grid.png"), drange=(0, 255), grid_size=list(grid_size))
        print(f"Wrote {os.path.join(outdir, 'grid.png')}")


if __name__ == "__main__":
    main()
