"""Render a latent-interpolation video from a training snapshot.

The seeds are keyframes; the video moves through their w latents (mapping outputs) with linear or
Catmull-Rom (smooth) interpolation and loops back to the first. With --grid=CxR, every cell shows
its own tour: the seeds are split into C*R equal groups.

    python gen_video.py --network=snap.pt --seeds=0-7 --output=lerp.mp4
    python gen_video.py --network=snap.pt --seeds=0-31 --grid=2x2 --kind=linear --output=grid.gif

MP4 needs an ffmpeg encoder (the `imageio-ffmpeg` package: pip install imageio-ffmpeg); without
one, write a GIF (Pillow), which is also the default then. The video is written to a temporary
name next to --output and renamed when complete, so a full disk never leaves a truncated file.
"""

import os

import click
import numpy as np
import PIL.Image
import torch

from torch_utils import image_io, util
from training import cli_common, generation


def mp4_available() -> bool:
    """True when imageio and its ffmpeg binary package are importable."""
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def interpolate(keys: torch.Tensor, num_frames: int, kind: str = "cubic") -> torch.Tensor:
    """Loop through keyframes keys [K, ...] -> [K * num_frames, ...] (frame 0 is keys[0]).

    'linear' moves at constant speed between keyframes; 'cubic' is a Catmull-Rom spline through
    them (C1-continuous, so the motion has no kinks at the keyframes).
    """
    k = keys.shape[0]
    out = []
    for i in range(k):
        p0, p1, p2, p3 = keys[(i - 1) % k], keys[i], keys[(i + 1) % k], keys[(i + 2) % k]
        for f in range(num_frames):
            t = f / num_frames
            if kind == "linear" or k < 2:
                out.append(p1 + (p2 - p1) * t)
            else:
                t2, t3 = t * t, t * t * t
                out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                                  + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    return torch.stack(out)


def tile(frames: np.ndarray, grid_w: int, grid_h: int) -> np.ndarray:
    """[cells, H, W, C] -> [grid_h*H, grid_w*W, C]."""
    n, h, w, c = frames.shape
    return frames.reshape(grid_h, grid_w, h, w, c).transpose(0, 2, 1, 3, 4).reshape(grid_h * h, grid_w * w, c)


def write_video(frames, path: str, fps: int) -> None:
    """frames: list of uint8 [H, W, C]; .mp4 via imageio-ffmpeg, .gif via Pillow. Atomic: `path` appears only
    when the whole video is written (an OSError such as a full disk leaves no file behind)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".gif":
        mode = "L" if frames[0].shape[2] == 1 else "RGB"
        images = [PIL.Image.fromarray(f[:, :, 0] if mode == "L" else f, mode) for f in frames]
        duration = max(int(round(1000 / fps)), 1)
        util.atomic_write(path, lambda f: images[0].save(f, format="GIF", save_all=True, append_images=images[1:],
                                                         duration=duration, loop=0))
    elif ext == ".mp4":
        import imageio

        # ffmpeg needs a file name with the right extension, not a file object.
        with util.atomic_path(path, suffix=".tmp.mp4") as tmp:
            with imageio.get_writer(tmp, mode="I", fps=fps, codec="libx264", bitrate="16M") as writer:
                for f in frames:
                    writer.append_data(np.repeat(f, 3, axis=2) if f.shape[2] == 1 else f)
    else:
        raise ValueError(f"unsupported video format '{ext}'")


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.option("--network", "network_path", metavar="PATH", required=True,
              help="Snapshot file (network-snapshot-*.pt) or a run dir's best-<result>.json pointer")
@click.option("--seeds", help="Keyframe seeds, e.g. 0-7 (split evenly over the grid cells)", metavar="LIST",
              required=True)
@click.option("--output", help="Video file, .mp4 or .gif  [default: lerp.mp4 if an MP4 encoder is installed, "
              "else lerp.gif]", metavar="FILE")
@click.option("--frames", "frames_per_key", help="Frames per keyframe transition", type=click.IntRange(min=1),
              default=30, show_default=True)
@click.option("--fps", help="Frames per second", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--kind", help="Interpolation", type=click.Choice(["cubic", "linear"]), default="cubic",
              show_default=True)
@click.option("--grid", help="Tile several tours: COLSxROWS", metavar="COLSxROWS", default="1x1", show_default=True)
@click.option("--trunc", "truncation_psi", help="Truncation psi (1 = none)", type=generation.TRUNCATION_PSI, default=1,
              show_default=True)
@click.option("--class", "class_idx", help="Class index (conditional networks)", type=click.IntRange(min=0))
@click.option("--device", help="Where to run", type=click.Choice(["auto", "cuda", "cpu"]), default="auto",
              show_default=True)
@click.option("--allow-class", "allow_classes", metavar="MODULE.CLASS", multiple=True,
              help="Let the snapshot build this network class too (repeatable). Snapshots only build the toolkit's "
                   "own classes unless named here; name only code you trust.")
def main(network_path, seeds, output, frames_per_key, fps, kind, grid, truncation_psi, class_idx, device,
         allow_classes):
    """Render a looping latent interpolation video from a snapshot."""
    cli_common.setup_logging()
    try:
        seeds = generation.parse_seeds(seeds)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--seeds'") from None
    try:
        grid_w, grid_h = image_io.parse_grid(grid)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--grid'") from None
    cells = grid_w * grid_h
    if len(seeds) % cells != 0 or len(seeds) < cells:
        raise click.BadParameter(f"{len(seeds)} seeds cannot be split evenly over {cells} grid cells",
                                 param_hint="'--seeds'") from None
    if output is None:
        output = "lerp.mp4" if mp4_available() else "lerp.gif"
    ext = os.path.splitext(output)[1].lower()
    if ext not in (".mp4", ".gif"):
        raise click.BadParameter(f"'{output}': use a .mp4 or .gif file name", param_hint="'--output'")
    if ext == ".mp4" and not mp4_available():
        raise click.BadParameter("writing MP4 needs an ffmpeg encoder: pip install imageio-ffmpeg (or use a .gif "
                                 "file name)", param_hint="'--output'")
    if os.path.isdir(output):
        raise click.BadParameter(f"'{output}' is a directory; give a video file name", param_hint="'--output'")
    out_dir = os.path.dirname(os.path.abspath(output))
    problem = cli_common.output_dir_problem(out_dir)
    if problem:
        raise click.BadParameter(problem, param_hint="'--output'")
    if device == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available", param_hint="'--device'")
    device = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    from training import snapshot

    try:
        G = generation.load_network(network_path, device, extra_classes=allow_classes)
    except snapshot.SnapshotError as err:
        raise click.BadParameter(str(err), param_hint="'--network'") from None
    try:
        c = generation.make_label(G, class_idx).to(device)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--class'") from None

    keys_per_cell = len(seeds) // cells
    # Every frame is kept until the video is written, with its w path: check that they fit before rendering any.
    num_frames = keys_per_cell * frames_per_key
    frame_bytes = cells * G.img_resolution ** 2 * 3 + cells * G.num_ws * G.w_dim * 4
    cli_common.check_fits_in_memory("--frames", num_frames * frame_bytes,
                                    f"{num_frames:,} frames of {grid_w * G.img_resolution}x{grid_h * G.img_resolution}")
    with torch.no_grad():
        z = torch.cat([generation.seed_latent(s, G.z_dim) for s in seeds]).to(device)
        ws = G.mapping(z, c.expand(len(seeds), -1), truncation_psi=truncation_psi)  # [S, num_ws, w_dim]
        ws = ws.reshape(cells, keys_per_cell, *ws.shape[1:])
        paths = [interpolate(ws[i], frames_per_key, kind) for i in range(cells)]  # cells x [F, num_ws, w_dim]
        num_frames = paths[0].shape[0]
        frames = []
        for f in range(num_frames):
            img = G.synthesis(torch.stack([p[f] for p in paths]), noise_mode="const")
            # Videos have no alpha: a 2- or 4-channel generator's frames are composited onto white.
            frames.append(tile(image_io.composite_alpha(generation.to_uint8_hwc(img)), grid_w, grid_h))
    created = not os.path.isdir(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
        write_video(frames, output, fps)
    except OSError as err:
        if created:
            cli_common.remove_if_empty(out_dir)
        raise click.ClickException(cli_common.write_error(err, output)) from None
    print(f"Wrote {num_frames} frames to {output}")


if __name__ == "__main__":
    main()
