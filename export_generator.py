"""Export a trained generator for sharing: a snapshot's G_ema alone, optionally in float16 (half the size).

Example:

    python export_generator.py --network=runs/00000-.../network-snapshot-000200.000.pt \\
        --dest=fluent-emoji-64.pt --dtype=float16

The file is a snapshot of kind 'generator' (training/snapshot.py): gen_images.py, gen_video.py and calc_metrics.py
load it like any snapshot, through the same allow-list and checksum, and `train.py --resume` starts from it as a
pretrained G (fresh D). With float16 the export also generates the same seeds from both weight sets and prints
the largest difference in 8-bit pixel values, so that you can see whether it matters.
"""

import os

import click
import torch

from training import cli_common, generation


def max_pixel_difference(src: str, dest: str, seeds=range(16), extra_classes=()) -> int:
    """Largest |difference| in uint8 pixel values between the images of `src`'s and `dest`'s G_ema for `seeds`
    (noise_mode 'const', truncation 1)."""
    images = []
    for path in (src, dest):
        G = generation.load_network(path, "cpu", extra_classes=extra_classes)
        c = torch.zeros([len(seeds), G.c_dim])
        z = torch.cat([generation.seed_latent(s, G.z_dim) for s in seeds])
        with torch.no_grad():
            images.append(torch.from_numpy(generation.to_uint8_hwc(G(z, c, noise_mode="const"))).int())
    return int((images[0] - images[1]).abs().max())


@click.command(context_settings=dict(max_content_width=120))
@click.option("--network", "network_path", help="Snapshot (or best-*.json pointer) to export the G_ema of",
              metavar="PATH", required=True)
@click.option("--dest", help="Output file (.pt)", metavar="PATH", required=True)
@click.option("--dtype", help="Stored weight type", type=click.Choice(["float16", "float32"]), default="float16",
              show_default=True)
@click.option("--allow-class", "allow_classes", metavar="MODULE.CLASS", multiple=True,
              help="Let the snapshot build this network class too (repeatable); name only code you trust.")
def main(network_path, dest, dtype, allow_classes):
    """Write a snapshot's G_ema as a small generator-only snapshot."""
    from training import snapshot

    cli_common.setup_logging()
    if not dest.endswith(".pt"):
        raise click.BadParameter(f"'{dest}' must end in .pt", param_hint="'--dest'")
    if os.path.isdir(dest):
        raise click.BadParameter(f"'{dest}' is a directory", param_hint="'--dest'")
    try:
        src = snapshot.resolve_network_path(network_path)
        if os.path.exists(dest) and os.path.samefile(src, dest):
            raise click.BadParameter(f"'{dest}' is the snapshot being exported", param_hint="'--dest'")
        snapshot.save_generator_only(src, dest, dtype, extra_classes=allow_classes)
        diff = max_pixel_difference(src, dest, extra_classes=allow_classes) if dtype != "float32" else 0
    except snapshot.SnapshotError as err:
        raise click.BadParameter(cli_common.one_line(err), param_hint="'--network'") from None
    except OSError as err:
        raise click.ClickException(cli_common.write_error(err, dest)) from None
    size = os.path.getsize(dest) / 2**20
    print(f"Wrote {dest} ({size:.1f} MiB, {dtype} weights)")
    if dtype != "float32":
        print(f"Largest pixel difference to the float32 weights over seeds 0-15: {diff} / 255")


if __name__ == "__main__":
    main()
