"""torch_utils.image_io: the image helpers shared by the loader, the loop, the metrics and the CLIs."""

import io

import numpy as np
import PIL.Image
import pytest
import torch

from torch_utils import image_io


def test_image_extensions_are_one_set_for_every_reader():
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"} == set(image_io.IMAGE_EXTENSIONS)
    assert image_io.is_image_file("a/B.TIFF") and image_io.is_image_file("x.Png")
    assert not image_io.is_image_file("dataset.json") and not image_io.is_image_file("png")


@pytest.mark.parametrize("text, expected", [("4x4", (4, 4)), (" 8X2 ", (8, 2)), (None, None), ("1x1", (1, 1))])
def test_parse_grid_accepts_cols_x_rows(text, expected):
    assert image_io.parse_grid(text) == expected


@pytest.mark.parametrize("text", ["4", "0x4", "4x0", "-1x2", "axb", "4x4x4", "300x300"])
def test_parse_grid_rejects_bad_values_naming_them(text):
    with pytest.raises(ValueError, match="COLSxROWS"):
        image_io.parse_grid(text)


def test_to_uint8_rounds_half_up_and_clamps():
    img = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0, -0.996]).view(1, 1, 1, 6)
    out = image_io.to_uint8(img)
    assert out.dtype == torch.uint8 and out.shape == img.shape
    assert out.flatten().tolist() == [0, 0, 128, 255, 255, 1]


def test_tile_grid_layout_and_padding():
    # 3 images of 1 channel, 2x2 pixels, values 0/1/2 in drange (0, 255), on a 2x2 grid: the 4th tile is black.
    imgs = np.stack([np.full([1, 2, 2], v, np.float32) for v in (10, 20, 30)])
    grid = image_io.tile_grid(imgs, drange=(0, 255), grid_size=[2, 2])
    assert grid.shape == (4, 4, 1) and grid.dtype == np.uint8
    assert grid[0, 0, 0] == 10 and grid[0, 2, 0] == 20 and grid[2, 0, 0] == 30 and grid[2, 2, 0] == 0


def test_save_image_grid_writes_a_png_with_the_pixels(tmp_path):
    imgs = torch.linspace(-1, 1, 2 * 3 * 4 * 4).view(2, 3, 4, 4)
    path = tmp_path / "g.png"
    image_io.save_image_grid(imgs, str(path), grid_size=[2, 1])
    read = np.asarray(PIL.Image.open(path))
    assert read.shape == (4, 8, 3)
    np.testing.assert_array_equal(read, image_io.tile_grid(imgs, (-1, 1), [2, 1]))
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]  # No temporary file left behind.


def test_to_png_bytes_rejects_unsupported_channel_counts():
    with pytest.raises(ValueError, match="shape"):
        image_io.to_png_bytes(np.zeros([4, 4, 5], np.uint8))
    with pytest.raises(ValueError, match="shape"):
        image_io.to_png_bytes(np.zeros([4, 4], np.uint8))
    la = PIL.Image.open(io.BytesIO(image_io.to_png_bytes(np.full([2, 2, 2], 9, np.uint8))))
    assert la.mode == "LA" and np.asarray(la).tolist() == [[[9, 9]] * 2] * 2
    gray = PIL.Image.open(io.BytesIO(image_io.to_png_bytes(np.full([3, 5, 1], 7, np.uint8))))
    assert gray.mode == "L" and gray.size == (5, 3) and np.asarray(gray).max() == 7
