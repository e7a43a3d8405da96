"""torch_utils.image_dataset: ImageFolderDataset (folders and zips, labels, errors) and the dataset.json parser."""

import json
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from torch_utils.image_dataset import DatasetError, ImageFolderDataset, parse_labels_json


def random_images(n, res=8, channels=3, seed=0):
    """uint8 [n, H, W, C] with distinct content per image."""
    rnd = np.random.RandomState(seed)
    return rnd.randint(0, 256, size=(n, res, res, channels), dtype=np.uint8)


def to_pil(array):
    return PIL.Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def make_folder(root, images, labels=None, nested=True):
    """Write PNGs like dataset_tool.py does; return the relative names in order."""
    os.makedirs(root, exist_ok=True)
    names = []
    for i, image in enumerate(images):
        name = f'{i // 3:05d}/img{i:08d}.png' if nested else f'img{i:08d}.png'
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        to_pil(image).save(os.path.join(root, name))
        names.append(name)
    if labels is not None:
        with open(os.path.join(root, 'dataset.json'), 'w') as f:
            json.dump({'labels': [[n, lab] for n, lab in zip(names, labels)]}, f)
    return names


def make_zip(path, folder):
    with zipfile.ZipFile(path, 'w') as z:
        for dirpath, _, files in os.walk(folder):
            for f in files:
                full = os.path.join(dirpath, f)
                z.write(full, os.path.relpath(full, folder).replace(os.sep, '/'))
    return str(path)


def write_json(folder, obj_or_text):
    with open(os.path.join(folder, 'dataset.json'), 'w') as f:
        f.write(obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text))


# ----------------------------------------------------------------------------
# Reading.


@pytest.mark.parametrize('container', ['folder', 'zip'])
def test_reads_images_in_name_order_with_properties(tmp_path, container):
    images = random_images(7, res=8)
    folder = str(tmp_path / 'mydata')
    make_folder(folder, images)
    path = make_zip(tmp_path / 'mydata.zip', folder) if container == 'zip' else folder

    ds = ImageFolderDataset(path)
    assert len(ds) == 7
    assert ds.name == 'mydata'
    assert ds.image_shape == [3, 8, 8] and ds.num_channels == 3 and ds.resolution == 8
    assert ds.label_shape == [0] and ds.label_dim == 0 and not ds.has_labels
    for i in range(7):
        image, label = ds[i]
        assert image.dtype == np.uint8 and image.shape == (3, 8, 8)
        np.testing.assert_array_equal(image, images[i].transpose(2, 0, 1))
        assert label.dtype == np.float32 and label.shape == (0,)


def test_grayscale_rgba_and_other_extensions(tmp_path):
    gray = random_images(2, channels=1, seed=1)
    make_folder(str(tmp_path / 'gray'), gray)
    ds = ImageFolderDataset(str(tmp_path / 'gray'))
    assert ds.image_shape == [1, 8, 8]
    np.testing.assert_array_equal(ds[1][0][0], gray[1, :, :, 0])

    rgba = random_images(2, channels=4, seed=2)
    make_folder(str(tmp_path / 'rgba'), rgba)
    ds = ImageFolderDataset(str(tmp_path / 'rgba'))
    assert ds.num_channels == 4
    np.testing.assert_array_equal(ds[0][0], rgba[0].transpose(2, 0, 1))

    # bmp/webp (lossless) are found too, in sorted order; non-image files are ignored.
    mixed = random_images(2, seed=3)
    folder = tmp_path / 'mixed'
    folder.mkdir()
    to_pil(mixed[0]).save(folder / 'a.bmp')
    to_pil(mixed[1]).save(folder / 'b.webp', lossless=True)
    (folder / 'notes.txt').write_text('not an image')
    ds = ImageFolderDataset(str(folder))
    assert len(ds) == 2
    np.testing.assert_array_equal(ds[0][0], mixed[0].transpose(2, 0, 1))
    np.testing.assert_array_equal(ds[1][0], mixed[1].transpose(2, 0, 1))


def test_int_labels_become_onehot_and_round_trip_through_zip(tmp_path):
    images = random_images(5)
    labels = [3, 0, 1, 3, 2]
    folder = str(tmp_path / 'labelled')
    make_folder(folder, images, labels)
    path = make_zip(tmp_path / 'labelled.zip', folder)

    ds = ImageFolderDataset(path, use_labels=True)
    assert ds.has_labels and ds.has_onehot_labels
    assert ds.label_shape == [4] and ds.label_dim == 4
    for i, c in enumerate(labels):
        expected = np.zeros(4, dtype=np.float32)
        expected[c] = 1
        np.testing.assert_array_equal(ds[i][1], expected)
        np.testing.assert_array_equal(ds.get_label(i), expected)
        assert ds.get_details(i).raw_label == c

    unlabelled = ImageFolderDataset(path, use_labels=False)
    assert unlabelled.label_shape == [0] and unlabelled[0][1].shape == (0,)


def test_vector_labels_and_null_labels(tmp_path):
    folder = str(tmp_path / 'vec')
    names = make_folder(folder, random_images(3))
    vectors = [[0.5, -1.0], [2, 3], [0.0, 0.25]]
    write_json(folder, {'labels': [[n, v] for n, v in zip(names, vectors)]})
    ds = ImageFolderDataset(folder, use_labels=True)
    assert ds.has_labels and not ds.has_onehot_labels and ds.label_shape == [2]
    np.testing.assert_array_equal(ds[1][1], np.float32([2, 3]))

    write_json(folder, {'labels': None})
    ds = ImageFolderDataset(folder, use_labels=True)
    assert not ds.has_labels and ds.label_shape == [0] and ds[0][1].shape == (0,)


def test_xflip_doubles_with_mirrored_second_half(tmp_path):
    images = random_images(3)
    folder = str(tmp_path / 'flip')
    make_folder(folder, images, labels=[0, 1, 2])
    ds = ImageFolderDataset(folder, xflip=True, use_labels=True)
    assert len(ds) == 6
    for i in range(3):
        np.testing.assert_array_equal(ds[i][0], images[i].transpose(2, 0, 1))
        mirrored, label = ds[i + 3]
        np.testing.assert_array_equal(mirrored, images[i].transpose(2, 0, 1)[:, :, ::-1])
        assert mirrored.flags['C_CONTIGUOUS']
        np.testing.assert_array_equal(label, ds[i][1])
        assert ds.get_details(i + 3).xflip and not ds.get_details(i).xflip
        assert ds.get_details(i + 3).raw_idx == i


def test_max_size_is_a_deterministic_random_subset(tmp_path):
    images = random_images(20, res=4)
    folder = str(tmp_path / 'many')
    make_folder(folder, images)

    def chosen(**kwargs):
        ds = ImageFolderDataset(folder, **kwargs)
        return [ds.get_details(i).raw_idx for i in range(len(ds))], ds

    a, ds = chosen(max_size=6, random_seed=1)
    assert len(a) == 6 and a == sorted(a) and len(set(a)) == 6
    np.testing.assert_array_equal(ds[2][0], images[a[2]].transpose(2, 0, 1))
    assert chosen(max_size=6, random_seed=1)[0] == a
    assert chosen(max_size=6, random_seed=2)[0] != a
    assert chosen(max_size=6, random_seed=1, xflip=True)[0] == a + a
    assert chosen(max_size=50)[0] == list(range(20))


def test_pickling_closes_zip_and_copy_still_reads(tmp_path):
    images = random_images(4)
    folder = str(tmp_path / 'p')
    make_folder(folder, images)
    ds = ImageFolderDataset(make_zip(tmp_path / 'p.zip', folder))
    ds[0]  # opens the archive
    assert ds._zipfile is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert ds._zipfile is None and clone._zipfile is None
    np.testing.assert_array_equal(clone[3][0], images[3].transpose(2, 0, 1))
    np.testing.assert_array_equal(ds[3][0], images[3].transpose(2, 0, 1))


def test_dataloader_workers_match_single_process(tmp_path):
    images = random_images(40, res=8, seed=5)
    folder = str(tmp_path / 'dl')
    make_folder(folder, images, labels=[i % 5 for i in range(40)])
    ds = ImageFolderDataset(make_zip(tmp_path / 'dl.zip', folder), use_labels=True, xflip=True)
    ds[0]  # open the zip in the parent first: forked workers must not share its file offset

    def collect(num_workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=3, shuffle=False, num_workers=num_workers)
        imgs, labels = zip(*loader)
        return torch.cat(imgs), torch.cat(labels)

    img0, lab0 = collect(0)
    img2, lab2 = collect(2)
    assert img0.shape == (80, 3, 8, 8) and img0.dtype == torch.uint8
    assert torch.equal(img0, img2) and torch.equal(lab0, lab2)
    assert torch.equal(img0[:40], torch.from_numpy(images.transpose(0, 3, 1, 2)))


# ----------------------------------------------------------------------------
# Errors.


def test_error_missing_path_and_no_images(tmp_path):
    with pytest.raises(DatasetError, match='does not exist'):
        ImageFolderDataset(str(tmp_path / 'nope'))
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'readme.txt').write_text('x')
    with pytest.raises(DatasetError, match='no image files'):
        ImageFolderDataset(str(tmp_path / 'empty'))
    (tmp_path / 'file.txt').write_text('x')
    with pytest.raises(DatasetError, match='not a folder or a zip'):
        ImageFolderDataset(str(tmp_path / 'file.txt'))


def test_error_mixed_sizes_channels_nonsquare_and_resolution(tmp_path):
    mixed = tmp_path / 'mixed'
    mixed.mkdir()
    to_pil(random_images(1, res=8)[0]).save(mixed / 'a.png')
    to_pil(random_images(1, res=16)[0]).save(mixed / 'b.png')
    with pytest.raises(DatasetError, match=r'"a.png" is 8x8 .* "b.png" is 16x16'):
        ImageFolderDataset(str(mixed))

    chans = tmp_path / 'chans'
    chans.mkdir()
    to_pil(random_images(1)[0]).save(chans / 'a.png')
    to_pil(random_images(1, channels=1)[0]).save(chans / 'b.png')
    with pytest.raises(DatasetError, match='3 channels.*1 channel'):
        ImageFolderDataset(str(chans))

    wide = tmp_path / 'wide'
    wide.mkdir()
    PIL.Image.new('RGB', (12, 8)).save(wide / 'a.png')
    with pytest.raises(DatasetError, match='a.png: image is 12x8, but images must be square'):
        ImageFolderDataset(str(wide))

    make_folder(str(tmp_path / 'ok'), random_images(2))
    with pytest.raises(DatasetError, match='images are 8x8, but resolution=16'):
        ImageFolderDataset(str(tmp_path / 'ok'), resolution=16)
    assert ImageFolderDataset(str(tmp_path / 'ok'), resolution=8).resolution == 8


def test_error_unreadable_image_names_file(tmp_path):
    folder = tmp_path / 'bad'
    make_folder(str(folder), random_images(2), nested=False)
    (folder / 'img99999999.png').write_bytes(b'definitely not a png')
    with pytest.raises(DatasetError, match=r'img99999999.png: cannot read image'):
        ImageFolderDataset(str(folder))


@pytest.mark.parametrize('content, problem', [
    ('{"labels": [["a.png", 0]', 'not valid JSON'),
    ('[1, 2]', 'expected a JSON object with a "labels" key'),
    ('{"labels": 3}', 'must be a list'),
    ('{"labels": [["00000/img00000000.png"]]}', r'labels\[0\] must be a \[path, label\] pair'),
    ('{"labels": [["00000/img00000000.png", -1]]}', 'must be >= 0'),
    ('{"labels": [["00000/img00000000.png", "cat"]]}', 'label must be a non-negative int'),
    ('{"labels": [["00000/img00000000.png", 1], ["00000/img00000001.png", [0.5]]]}', 'same form'),
    ('{"labels": [["00000/img00000000.png", 1], ["00000/img00000000.png", 1]]}', 'labelled twice'),
    ('{"labels": [["00000/img00000000.png", 1]]}', 'no label for image "00000/img00000001.png"'),
])
def test_error_malformed_dataset_json(tmp_path, content, problem):
    folder = str(tmp_path / 'j')
    make_folder(folder, random_images(2))
    write_json(folder, content)
    with pytest.raises(DatasetError, match=problem) as info:
        ImageFolderDataset(folder, use_labels=True)
    assert 'dataset.json' in str(info.value)
    ImageFolderDataset(folder, use_labels=False)  # labels are not read when not asked for


def test_parse_labels_json_normalises_backslashes():
    assert parse_labels_json('{"labels": [["a\\\\b.png", 2]]}', 'x') == {'a/b.png': 2}
    assert parse_labels_json(b'{"labels": null}', 'x') is None


def test_tiff_images_are_read(tmp_path):
    images = random_images(2, res=8)
    root = tmp_path / 'tif'
    root.mkdir()
    to_pil(images[0]).save(root / 'a.tif')
    to_pil(images[1]).save(root / 'b.tiff')
    ds = ImageFolderDataset(str(root))
    assert len(ds) == 2 and ds.image_shape == [3, 8, 8]
    np.testing.assert_array_equal(ds[0][0], images[0].transpose(2, 0, 1))
    np.testing.assert_array_equal(ds[1][0], images[1].transpose(2, 0, 1))


def test_symlinked_folders_are_read_once(tmp_path, caplog):
    images = random_images(2, res=8)
    root = tmp_path / 'data'
    (root / 'sub').mkdir(parents=True)
    to_pil(images[0]).save(root / 'a.png')
    to_pil(images[1]).save(root / 'sub' / 'b.png')
    os.symlink('..', root / 'sub' / 'loop')
    with caplog.at_level('WARNING', logger='torch_utils.image_dataset'):
        ds = ImageFolderDataset(str(root))
    assert len(ds) == 2
    assert any('already read; skipped' in r.getMessage() for r in caplog.records)
