"""The shipped pretrained generator (pretrained/): the README's sampling line works on it, and fixed seeds give the
images stored next to it when it was exported (tests/data/pretrained_reference/, written once by gen_images.py
from the shipped file; this test never regenerates them)."""

import hashlib
import json
import os

import numpy as np
import PIL.Image
from click.testing import CliRunner

import gen_images
import gen_video
from training import snapshot

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MODEL = os.path.join(REPO, "pretrained", "fluent-emoji-64-fastgan-lite.pt")
MANIFEST = os.path.join(REPO, "pretrained", "fluent-emoji-64-fastgan-lite.json")
REFERENCE = os.path.join(REPO, "tests", "data", "pretrained_reference")
REFERENCE_SEEDS = (0, 1, 2, 3)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load(path):
    return np.asarray(PIL.Image.open(path).convert("RGB"))


def test_shipped_file_is_the_documented_one():
    """The manifest's size and sha256 are what the README quotes; a changed model must come with new references."""
    with open(MANIFEST) as f:
        manifest = json.load(f)
    assert os.path.getsize(MODEL) == manifest["bytes"] <= 20 * 1024 * 1024
    assert _sha256(MODEL) == manifest["sha256"]
    data = snapshot.load_snapshot(MODEL)
    assert data["kind"] == "generator" and data["weights_dtype"] == "float16"
    assert data["progress"]["cur_nimg"] == round(manifest["kimg"] * 1000)


def test_readme_line_reproduces_the_reference_images(tmp_path, monkeypatch):
    """`python gen_images.py --network=pretrained/... --seeds=0-63 --outdir=out`, as the README says, from the
    repository root; seeds 0-3 must match the stored PNGs (float16 weights, float32 compute on the CPU: the same
    arithmetic on every machine up to BLAS summation order, hence a 2/255 tolerance)."""
    with open(os.path.join(REPO, "README.md")) as f:
        assert "python gen_images.py --network=pretrained/fluent-emoji-64-fastgan-lite.pt --seeds=0-63 --outdir=out" \
            in f.read()
    out = tmp_path / "out"
    monkeypatch.chdir(REPO)  # the README's relative path, as a user types it in the repository root
    result = CliRunner().invoke(gen_images.main, ["--network=pretrained/fluent-emoji-64-fastgan-lite.pt",
                                                  "--seeds=0-63", f"--outdir={out}", "--device=cpu"])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("seed*.png"))) == 64
    for seed in REFERENCE_SEEDS:
        got = _load(str(out / f"seed{seed:04d}.png")).astype(np.int16)
        want = _load(os.path.join(REFERENCE, f"seed{seed:04d}.png")).astype(np.int16)
        assert got.shape == want.shape == (64, 64, 3)
        diff = np.abs(got - want)
        assert diff.max() <= 2 and diff.mean() < 0.05, (seed, diff.max(), diff.mean())
    # Different seeds are different objects (a collapsed or constant generator would pass the checks above only
    # if its references were collapsed too).
    refs = [_load(os.path.join(REFERENCE, f"seed{s:04d}.png")).astype(np.float32)
            for s in REFERENCE_SEEDS]
    assert min(np.abs(a - b).mean() for i, a in enumerate(refs) for b in refs[i + 1:]) > 10


def test_gen_video_renders_it(tmp_path):
    """gen_video.py loads it through the same loader; a tour's first frame is its first keyframe seed's image
    (GIF frames are palette-quantised, so compared loosely)."""
    out = tmp_path / "tour.gif"
    result = CliRunner().invoke(gen_video.main, [f"--network={MODEL}", "--seeds=0-1", "--frames=2",
                                                 f"--output={out}", "--device=cpu"])
    assert result.exit_code == 0, result.output
    gif = PIL.Image.open(out)
    assert gif.n_frames == 4 and gif.size == (64, 64)
    first = np.asarray(gif.convert("RGB"), dtype=np.float32)
    want = _load(os.path.join(REFERENCE, "seed0000.png")).astype(np.float32)
    assert np.abs(first - want).mean() < 6
