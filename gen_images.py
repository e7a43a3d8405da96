"""Generate images from a training snapshot.

Examples:

    # 16 images, one PNG per seed.
    python gen_images.py --network=runs/00000-fastgan-.../network-snapshot-000100.pt --seeds=0-15 --outdir=out

    # The run's best snapshot by FID (a pointer written after each metric evaluation).
    python gen_images.py --network=runs/00000-fastgan-.../best-fid50k_full.json --seeds=0-15 --outdir=out

    # A 4x4 grid with truncation, class 3 of a conditional model.
    python gen_images.py --network=snap.pt --seeds=0-15 --trunc=0.7 --class=3 --grid=4x4 --outdir=out

Each seed gives the same image on every run and machine (latents are drawn on the CPU from
numpy's RandomState(seed), as in StyleGAN). Every PNG is written to a temporary name and renamed,
so a full disk or a crash never leaves a truncated image; images written before it stay intact.
"""

import os

import click
import numpy as np
import torch

from torch_utils import image_io
from training import cli_common, generation


def _bad(option: str, message: str):
    raise click.BadParameter(message, param_hint=f"'{option}'")


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        _bad("--device", "CUDA is not available")
    return torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")


def load_generator(network_path: str, device: torch.device, which: str = "G_ema", extra_classes=()):
    """generation.load_network with its errors as a one-line '--network' error."""
    from training import snapshot

    try:
        return generation.load_network(network_path, device, which, extra_classes=extra_classes)
    except snapshot.SnapshotError as err:
        _bad("--network", str(err))


def label_or_fail(G, class_idx):
    try:
        return generation.make_label(G, class_idx)
    except ValueError as err:
        _bad("--class", str(err))


def parse_seeds_or_fail(text: str):
    try:
        return generation.parse_seeds(text)
    except ValueError as err:
        _bad("--seeds", str(err))


def parse_grid_or_fail(text):
    try:
        return image_io.parse_grid(text)
    except ValueError as err:
        _bad("--grid", str(err))


allow_class_option = click.option(
    "--allow-class", "allow_classes", metavar="MODULE.CLASS", multiple=True,
    help="Let the snapshot build this network class too (repeatable). Snapshots only build the toolkit's "
         "own classes unless named here; name only code you trust.")


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.option("--network", "network_path", metavar="PATH", required=True,
              help="Snapshot file (network-snapshot-*.pt) or a run dir's best-<result>.json pointer")
@click.option("--seeds", help="Seeds, e.g. 0-15 or 1,5,9 (each 0..2**32-1)", metavar="LIST", required=True)
@click.option("--outdir", help="Where to save the images", metavar="DIR", required=True)
@click.option("--trunc", "truncation_psi", help="Truncation psi (1 = none)", type=generation.TRUNCATION_PSI, default=1,
              show_default=True)
@click.option("--class", "class_idx", help="Class index (conditional networks)", type=click.IntRange(min=0))
@click.option("--noise-mode", help="Noise inputs", type=click.Choice(["const", "random", "none"]), default="const",
              show_default=True)
@click.option("--grid", help="Also write grid.png with the seeds tiled COLSxROWS", metavar="COLSxROWS")
@click.option("--which", help="Weights to use", type=click.Choice(["G_ema", "G"]), default="G_ema", show_default=True)
@click.option("--device", help="Where to run", type=click.Choice(["auto", "cuda", "cpu"]), default="auto",
              show_default=True)
@allow_class_option
def main(network_path, seeds, outdir, truncation_psi, class_idx, noise_mode, grid, which, device, allow_classes):
    """Generate images from a snapshot: one PNG per seed (seedNNNN.png) and optionally a grid."""
    cli_common.setup_logging()
    seeds = parse_seeds_or_fail(seeds)
    grid_size = parse_grid_or_fail(grid)
    if grid_size is not None and grid_size[0] * grid_size[1] < len(seeds):
        _bad("--grid", f"{grid} has {grid_size[0] * grid_size[1]} cells for {len(seeds)} seeds")
    problem = cli_common.output_dir_problem(outdir)
    if problem:
        _bad("--outdir", problem)
    device = resolve_device(device)
    G = load_generator(network_path, device, which, allow_classes)
    c = label_or_fail(G, class_idx).to(device)

    images = []
    path = outdir
    created = not os.path.isdir(outdir)
    try:
        os.makedirs(outdir, exist_ok=True)
        with torch.no_grad():
            for seed in seeds:
                z = generation.seed_latent(seed, G.z_dim).to(device)
                img = G(z, c, truncation_psi=truncation_psi, noise_mode=noise_mode)
                array = generation.to_uint8_hwc(img)[0]
                images.append(array)
                path = os.path.join(outdir, f"seed{seed:04d}.png")
                image_io.save_png(array, path)
        print(f"Wrote {len(seeds)} images to {outdir}")
        if grid_size is not None:
            path = os.path.join(outdir, "grid.png")
            batch = np.stack(images).transpose(0, 3, 1, 2)
            image_io.save_image_grid(batch, path, drange=(0, 255), grid_size=list(grid_size))
            print(f"Wrote {path}")
    except OSError as err:
        if created:
            cli_common.remove_if_empty(outdir)
        raise click.ClickException(cli_common.write_error(err, path)) from None


if __name__ == "__main__":
    main()
