"""Tests for dataset_tool.py: every source type, pixel conversion, labels, and bad-input handling."""

import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import dataset_tool
from training.dataset import ImageFolderDataset

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))


def run_tool(*args):
    return CliRunner().invoke(dataset_tool.main, [str(a) for a in args], catch_exceptions=False)


def ok(*args):
    result = run_tool(*args)
    assert result.exit_code == 0, result.output
    return result


def failed(dest, *args):
    """Run the tool expecting failure; check that nothing was left at or next to `dest`."""
    before = set(os.listdir(os.path.dirname(dest))) if os.path.isdir(os.path.dirname(dest)) else None
    result = run_tool(*args)
    assert result.exit_code != 0, result.output
    if before is not None:
        assert set(os.listdir(os.path.dirname(dest))) == before  # no dest, no temporary leftovers
    assert not os.path.exists(dest)
    return result.output


def load(path, **kwargs):
    ds = ImageFolderDataset(str(path), **kwargs)
    images = np.stack([ds[i][0] for i in range(len(ds))])
    labels = np.stack([ds[i][1] for i in range(len(ds))])
    return ds, images, labels


def rand_rgb(seed, size=(8, 8)):
    return np.random.RandomState(seed).randint(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


def write_idx_gz(path, array):
    header = struct.pack('>BBBB', 0, 0, 0x08, array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape)
    with gzip.open(path, 'wb') as f:
        f.write(header + array.astype(np.uint8).tobytes())


# ----------------------------------------------------------------------------
# Sources.


def test_image_folder_mixed_formats_to_zip(tmp_path):
    src = tmp_path / 'src'
    (src / 'sub').mkdir(parents=True)
    a, b = rand_rgb(0), rand_rgb(1)
    c = np.broadcast_to(np.uint8([40, 120, 200]), (8, 8, 3)).copy()  # flat colour: JPEG keeps it closely
    PIL.Image.fromarray(a).save(src / 'a.png')
    PIL.Image.fromarray(b).save(src / 'sub' / 'b.webp', lossless=True)
    PIL.Image.fromarray(c).save(src / 'c.jpg', quality=95)
    dest = tmp_path / 'out.zip'
    ok('--source', src, '--dest', dest)

    with zipfile.ZipFile(dest) as z:
        assert sorted(z.namelist()) == ['00000/img00000000.png', '00000/img00000001.png',
                                        '00000/img00000002.png', 'dataset.json']
        assert json.loads(z.read('dataset.json')) == {'labels': None}
    ds, images, _ = load(dest)
    assert ds.image_shape == [3, 8, 8]
    # Name order a.png, c.jpg, sub/b.webp; lossless formats come back exactly.
    np.testing.assert_array_equal(images[0], a.transpose(2, 0, 1))
    np.testing.assert_array_equal(images[2], b.transpose(2, 0, 1))
    assert np.abs(images[1].astype(int) - c.transpose(2, 0, 1)).max() <= 3  # JPEG is lossy


def test_zip_source_with_labels_round_trips_as_onehot(tmp_path):
    src = tmp_path / 'src.zip'
    with zipfile.ZipFile(src, 'w') as z:
        for i in range(4):
            buf = io.BytesIO()
            PIL.Image.fromarray(rand_rgb(i)).save(buf, format='PNG')
            z.writestr(f'imgs/{i}.png', buf.getvalue())
        z.writestr('__MACOSX/imgs/._0.png', b'resource fork junk')
        z.writestr('dataset.json', json.dumps({'labels': [[f'imgs/{i}.png', c] for i, c in enumerate([2, 0, 2, 1])]}))
    dest = tmp_path / 'out'
    ok('--source', src, '--dest', dest)  # a folder destination
    assert (dest / '00000' / 'img00000003.png').is_file()

    ds, images, labels = load(dest, use_labels=True)
    assert ds.has_onehot_labels and ds.label_dim == 3
    np.testing.assert_array_equal(labels, np.eye(3, dtype=np.float32)[[2, 0, 2, 1]])
    np.testing.assert_array_equal(images[3], rand_rgb(3).transpose(2, 0, 1))


def test_folder_source_vector_labels_carried_over(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    for i in range(2):
        PIL.Image.fromarray(rand_rgb(i)).save(src / f'{i}.png')
    (src / 'dataset.json').write_text(json.dumps({'labels': [['0.png', [0.5, 1]], ['1.png', [2, -3.5]]]}))
    ok('--source', src, '--dest', tmp_path / 'out.zip')
    ds, _, labels = load(tmp_path / 'out.zip', use_labels=True)
    assert not ds.has_onehot_labels
    np.testing.assert_array_equal(labels, np.float32([[0.5, 1], [2, -3.5]]))


def test_mnist_idx_gz_source_with_and_without_test_split(tmp_path):
    rnd = np.random.RandomState(0)
    train, test = rnd.randint(0, 256, (5, 6, 6)), rnd.randint(0, 256, (3, 6, 6))
    src = tmp_path / 'mnist'
    src.mkdir()
    write_idx_gz(src / 'train-images-idx3-ubyte.gz', train)
    write_idx_gz(src / 'train-labels-idx1-ubyte.gz', np.array([1, 0, 9, 1, 3]))
    write_idx_gz(src / 't10k-images-idx3-ubyte.gz', test)
    write_idx_gz(src / 't10k-labels-idx1-ubyte.gz', np.array([7, 7, 2]))

    ok('--source', src, '--dest', tmp_path / 'train.zip')
    ds, images, labels = load(tmp_path / 'train.zip', use_labels=True)
    assert ds.image_shape == [1, 6, 6] and len(ds) == 5 and ds.label_dim == 10
    np.testing.assert_array_equal(images[:, 0], train)
    np.testing.assert_array_equal(labels.argmax(1), [1, 0, 9, 1, 3])

    ok('--source', src, '--dest', tmp_path / 'all.zip', '--include-test', '--grayscale=rgb')
    ds, images, labels = load(tmp_path / 'all.zip', use_labels=True)
    assert ds.image_shape == [3, 6, 6] and len(ds) == 8
    np.testing.assert_array_equal(images[5:, 1], test)
    np.testing.assert_array_equal(labels.argmax(1), [1, 0, 9, 1, 3, 7, 7, 2])


def test_cifar10_tarball_source(tmp_path):
    rnd = np.random.RandomState(1)
    batches = {f'data_batch_{k}': rnd.randint(0, 256, (2, 3072), dtype=np.uint8) for k in (1, 2)}
    batches['test_batch'] = rnd.randint(0, 256, (1, 3072), dtype=np.uint8)
    labels = {'data_batch_1': [3, 8], 'data_batch_2': [0, 9], 'test_batch': [5]}
    src = tmp_path / 'cifar-10-python.tar.gz'
    with tarfile.open(src, 'w:gz') as tar:
        for name, data in batches.items():
            blob = pickle.dumps({b'data': data, b'labels': labels[name], b'batch_label': b'x'}, protocol=2)
            info = tarfile.TarInfo(f'cifar-10-batches-py/{name}')
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    ok('--source', src, '--dest', tmp_path / 'c.zip')
    ds, images, onehot = load(tmp_path / 'c.zip', use_labels=True)
    assert ds.image_shape == [3, 32, 32] and len(ds) == 4
    # CIFAR rows are planar (1024 R, 1024 G, 1024 B), row-major.
    np.testing.assert_array_equal(images[2], batches['data_batch_2'][0].reshape(3, 32, 32))
    np.testing.assert_array_equal(onehot.argmax(1), [3, 8, 0, 9])

    ok('--source', src, '--dest', tmp_path / 'c_all.zip', '--include-test')
    assert len(ImageFolderDataset(str(tmp_path / 'c_all.zip'))) == 5


def test_cifar_pickle_with_foreign_objects_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned',))
    blob = pickle.dumps({b'data': Evil(), b'labels': []})
    src = tmp_path / 'cifar.tar'
    with tarfile.open(src, 'w') as tar:
        info = tarfile.TarInfo('cifar-10-batches-py/data_batch_1')
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    dest = tmp_path / 'c.zip'
    assert 'refusing to load' in failed(str(dest), '--source', src, '--dest', dest)


# ----------------------------------------------------------------------------
# Pixels.


def test_rgba_is_composited_onto_white_or_given_background(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[:2] = [255, 0, 0, 128]  # half-transparent red
    rgba[2:] = [0, 0, 255, 0]    # fully transparent blue
    PIL.Image.fromarray(rgba, 'RGBA').save(src / 'x.png')

    ok('--source', src, '--dest', tmp_path / 'white.zip')
    _, images, _ = load(tmp_path / 'white.zip')
    assert images.shape == (1, 3, 4, 4)
    np.testing.assert_array_equal(images[0, :, 0, 0], [255, 127, 127])  # 255*128/255 + 255*127/255, 255*127/255
    np.testing.assert_array_equal(images[0, :, 3, 3], [255, 255, 255])

    ok('--source', src, '--dest', tmp_path / 'navy.zip', '--background=#000080')
    _, images, _ = load(tmp_path / 'navy.zip')
    np.testing.assert_array_equal(images[0, :, 0, 0], [128, 0, 64])
    np.testing.assert_array_equal(images[0, :, 3, 3], [0, 0, 128])


def test_palette_with_transparency_and_la(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    pal = PIL.Image.new('P', (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.save(src / 'p.png', transparency=0)  # palette index 0 is transparent
    ok('--source', src, '--dest', tmp_path / 'p.zip')
    _, images, _ = load(tmp_path / 'p.zip')
    np.testing.assert_array_equal(images[0, :, 0, 0], [255, 255, 255])
    np.testing.assert_array_equal(images[0, :, 1, 1], [10, 200, 30])

    la = tmp_path / 'la'
    la.mkdir()
    la_pixels = np.dstack([np.full((4, 4), 40, np.uint8), np.full((4, 4), 0, np.uint8)])
    PIL.Image.fromarray(la_pixels, 'LA').save(la / 'a.png')
    PIL.Image.fromarray(np.full((4, 4), 40, np.uint8), 'L').save(la / 'b.png')
    ok('--source', la, '--dest', tmp_path / 'la.zip')
    ds, images, _ = load(tmp_path / 'la.zip')
    assert ds.image_shape == [1, 4, 4]
    np.testing.assert_array_equal(images[:, 0, 0, 0], [255, 40])  # transparent -> white; opaque kept


def test_grayscale_keep_rgb_and_mixed(tmp_path):
    src = tmp_path / 'gray'
    src.mkdir()
    gray = np.random.RandomState(0).randint(0, 256, (8, 8), dtype=np.uint8)
    PIL.Image.fromarray(gray, 'L').save(src / 'g.png')
    ok('--source', src, '--dest', tmp_path / 'keep.zip')
    ds, images, _ = load(tmp_path / 'keep.zip')
    assert ds.image_shape == [1, 8, 8]
    np.testing.assert_array_equal(images[0, 0], gray)

    ok('--source', src, '--dest', tmp_path / 'rgb.zip', '--grayscale=rgb')
    ds, images, _ = load(tmp_path / 'rgb.zip')
    assert ds.image_shape == [3, 8, 8]
    for c in range(3):
        np.testing.assert_array_equal(images[0, c], gray)

    PIL.Image.fromarray(rand_rgb(5)).save(src / 'h.png')
    result = ok('--source', src, '--dest', tmp_path / 'mixed.zip')
    assert '1 grayscale image converted to RGB' in result.output
    ds, images, _ = load(tmp_path / 'mixed.zip')
    assert ds.image_shape == [3, 8, 8]
    np.testing.assert_array_equal(images[0, 2], gray)


def test_resolution_and_transforms(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    wide = np.zeros((8, 16, 3), dtype=np.uint8)
    wide[:, :4] = [255, 0, 0]    # left margin red
    wide[:, 4:12] = [0, 0, 255]  # centre square blue
    wide[:, 12:] = [0, 255, 0]   # right margin green
    PIL.Image.fromarray(wide).save(src / 'wide.png')

    ok('--source', src, '--dest', tmp_path / 'crop.zip', '--resolution=4x4', '--transform=center-crop',
       '--resize-filter=box')
    _, images, _ = load(tmp_path / 'crop.zip')
    assert images.shape == (1, 3, 4, 4)
    assert (images[0].reshape(3, -1).T == [0, 0, 255]).all()

    ok('--source', src, '--dest', tmp_path / 'wide.zip', '--resolution=8x8', '--transform=center-crop-wide',
       '--resize-filter=box', '--background=#FF00FF')
    _, images, _ = load(tmp_path / 'wide.zip')
    np.testing.assert_array_equal(images[0, :, 0, 3], [255, 0, 255])  # letterbox band (rows 0-1)
    np.testing.assert_array_equal(images[0, :, 4, 0], [255, 0, 0])    # content rows 2-5: full width kept
    np.testing.assert_array_equal(images[0, :, 4, 7], [0, 255, 0])
    np.testing.assert_array_equal(images[0, :, 7, 3], [255, 0, 255])

    ok('--source', src, '--dest', tmp_path / 'squash.zip', '--resolution=4', '--resize-filter=box')  # plain resize
    _, images, _ = load(tmp_path / 'squash.zip')
    np.testing.assert_array_equal(images[0, :, 2, 0], [255, 0, 0])


def test_max_images_and_seeded_subset_are_deterministic(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    for i in range(10):
        PIL.Image.fromarray(np.full((4, 4, 3), i * 20, np.uint8)).save(src / f'{i:02d}.png')
    ok('--source', src, '--dest', tmp_path / 'first.zip', '--max-images=3')
    _, images, _ = load(tmp_path / 'first.zip')
    assert list(images[:, 0, 0, 0]) == [0, 20, 40]

    ok('--source', src, '--dest', tmp_path / 's1.zip', '--max-images=4', '--subset-seed=1')
    ok('--source', src, '--dest', tmp_path / 's1b.zip', '--max-images=4', '--subset-seed=1')
    digest = lambda p: hashlib.sha256((tmp_path / p).read_bytes()).hexdigest()
    assert digest('s1.zip') == digest('s1b.zip')  # byte-identical archives
    _, images, _ = load(tmp_path / 's1.zip')
    picked = list(images[:, 0, 0, 0] // 20)
    assert len(picked) == 4 and picked == sorted(picked) and picked != [0, 1, 2, 3]


# ----------------------------------------------------------------------------
# Bad input: clear error, non-zero exit, nothing left behind.


def make_good_folder(path, n=3, size=8):
    path.mkdir(parents=True)
    for i in range(n):
        PIL.Image.fromarray(rand_rgb(i, (size, size))).save(path / f'{i}.png')
    return path


def test_truncated_image_aborts_after_partial_write_and_cleans_up(tmp_path):
    src = make_good_folder(tmp_path / 'src', n=4)
    full = (src / '3.png').read_bytes()
    (src / '3.png').write_bytes(full[:len(full) // 2])  # header intact, pixel data cut: fails while decoding
    for dest in (tmp_path / 'out.zip', tmp_path / 'outdir'):
        out = failed(str(dest), '--source', src, '--dest', dest)
        assert '3.png: cannot decode image' in out and '--on-error=skip' in out


def test_non_image_file_with_image_extension(tmp_path):
    src = make_good_folder(tmp_path / 'src')
    (src / 'notes.png').write_text('this is text')
    dest = tmp_path / 'out.zip'
    out = failed(str(dest), '--source', src, '--dest', dest)
    assert 'notes.png: not a readable image (not a recognised image format' in out


def test_skip_mode_warns_per_file_and_counts(tmp_path):
    src = make_good_folder(tmp_path / 'src', n=3)
    (src / 'bad1.png').write_text('text')
    full = (src / '2.png').read_bytes()
    (src / 'bad2.png').write_bytes(full[:len(full) // 2])
    result = ok('--source', src, '--dest', tmp_path / 'out.zip', '--on-error=skip')
    warnings = [line for line in result.output.splitlines() if line.startswith('warning: skipping')]
    assert len(warnings) == 2 and 'bad1.png' in warnings[0] and 'bad2.png' in warnings[1]
    assert 'skipped 2 bad files out of 5' in result.output
    assert len(ImageFolderDataset(str(tmp_path / 'out.zip'))) == 3


def test_mixed_sizes_without_resolution_names_both_files(tmp_path):
    src = make_good_folder(tmp_path / 'src', n=2, size=8)
    PIL.Image.fromarray(rand_rgb(9, (16, 16))).save(src / 'z_big.png')
    dest = tmp_path / 'out.zip'
    out = failed(str(dest), '--source', src, '--dest', dest)
    assert '0.png is 8x8 but' in out and 'z_big.png is 16x16' in out and '--resolution' in out
    ok('--source', src, '--dest', dest, '--resolution=8x8')  # and the fix works


def test_non_square_without_resolution(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    PIL.Image.new('RGB', (12, 8)).save(src / 'a.png')
    dest = tmp_path / 'out.zip'
    assert 'square' in failed(str(dest), '--source', src, '--dest', dest)
    assert 'square' in failed(str(dest), '--source', src, '--dest', dest, '--resolution=8x4')


def test_zero_images(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'readme.txt').write_text('no images here')
    dest = tmp_path / 'out.zip'
    out = failed(str(dest), '--source', src, '--dest', dest)
    assert 'no images found' in out and 'readme.txt' in out  # also tells what was ignored
    skipped_all = make_good_folder(tmp_path / 'src2', n=0)
    (skipped_all / 'x.png').write_text('text')
    assert 'no usable images' in failed(str(dest), '--source', skipped_all, '--dest', dest, '--on-error=skip')


def test_existing_destination_is_refused_and_untouched(tmp_path):
    src = make_good_folder(tmp_path / 'src')
    dest = tmp_path / 'out.zip'
    dest.write_bytes(b'precious')
    result = run_tool('--source', src, '--dest', dest)
    assert result.exit_code != 0 and 'already exists' in result.output
    assert dest.read_bytes() == b'precious'
    (tmp_path / 'outdir').mkdir()
    result = run_tool('--source', src, '--dest', tmp_path / 'outdir')
    assert result.exit_code != 0 and 'already exists' in result.output
    assert os.listdir(tmp_path / 'outdir') == []


@pytest.mark.parametrize('content, problem', [
    ('{"labels": [["0.png", 1]', 'not valid JSON'),
    ('{"labels": [["0.png", 1], ["1.png", 0]]}', 'no label for image "2.png"'),
    ('{"labels": [["0.png", 1.5], ["1.png", 0], ["2.png", 0]]}', 'label must be a non-negative int'),
])
def test_malformed_source_dataset_json(tmp_path, content, problem):
    src = make_good_folder(tmp_path / 'src')
    (src / 'dataset.json').write_text(content)
    dest = tmp_path / 'out.zip'
    out = failed(str(dest), '--source', src, '--dest', dest)
    assert 'dataset.json' in out and problem in out


def test_bad_mnist_files(tmp_path):
    src = tmp_path / 'mnist'
    src.mkdir()
    write_idx_gz(src / 'train-images-idx3-ubyte.gz', np.zeros((3, 4, 4)))
    write_idx_gz(src / 'train-labels-idx1-ubyte.gz', np.zeros(2))
    dest = tmp_path / 'out.zip'
    assert 'holds 3 images but' in failed(str(dest), '--source', src, '--dest', dest)
    with gzip.open(src / 'train-labels-idx1-ubyte.gz', 'wb') as f:
        f.write(struct.pack('>BBBBI', 0, 0, 8, 1, 3) + b'\0')  # header promises 3 labels, holds 1
    assert 'train-labels-idx1-ubyte.gz: header says shape [3]' in failed(str(dest), '--source', src, '--dest', dest)
    (src / 'train-labels-idx1-ubyte.gz').write_bytes(b'not gzip')
    assert 'train-labels-idx1-ubyte.gz: cannot read gzip data' in failed(str(dest), '--source', src, '--dest', dest)


def test_missing_source_and_bad_options(tmp_path):
    dest = tmp_path / 'out.zip'
    assert 'does not exist' in failed(str(dest), '--source', tmp_path / 'nope', '--dest', dest)
    src = make_good_folder(tmp_path / 'src')
    assert 'needs --resolution' in failed(str(dest), '--source', src, '--dest', dest, '--transform=center-crop')
    assert "'--resolution'" in failed(str(dest), '--source', src, '--dest', dest, '--resolution=big')
    assert '--background' in failed(str(dest), '--source', src, '--dest', dest, '--background=nocolour')
    (tmp_path / 'file.bin').write_bytes(b'xyz')
    assert 'not a folder, a zip' in failed(str(dest), '--source', tmp_path / 'file.bin', '--dest', dest)


def test_keyboard_interrupt_leaves_nothing_behind(tmp_path, monkeypatch):
    src = make_good_folder(tmp_path / 'src', n=5)
    calls = []
    real_encode = dataset_tool.encode_png

    def interrupt_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(dataset_tool, 'encode_png', interrupt_on_third)
    dest = tmp_path / 'new_parent' / 'out.zip'
    with pytest.raises(KeyboardInterrupt):
        dataset_tool.convert_dataset(str(src), str(dest), log=io.StringIO())
    assert len(calls) == 3
    assert not (tmp_path / 'new_parent').exists()  # the parent it created is removed too
    assert sorted(os.listdir(tmp_path)) == ['src']


def test_command_line_exit_code(tmp_path):
    """The real script (not CliRunner): non-zero exit status and the message on stderr."""
    src = make_good_folder(tmp_path / 'src', n=2)
    (tmp_path / 'a.zip').write_bytes(b'x')
    bad = subprocess.run([sys.executable, os.path.join(REPO, 'dataset_tool.py'), f'--source={src}',
                          f'--dest={tmp_path / "a.zip"}'], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and 'a.zip: already exists' in bad.stderr


# ----------------------------------------------------------------------------
# Hostile or damaged input: a clear error naming the file/option, or a skip with a warning; never duplicates.


@pytest.mark.parametrize('value', ['99999999999x99999999999', '16385x16385', '9' * 5000])
def test_resolution_above_the_upper_bound_is_an_option_error(tmp_path, value):
    src = make_good_folder(tmp_path / 'src')
    dest = tmp_path / 'out.zip'
    result = run_tool('--source', src, '--dest', dest, f'--resolution={value}')
    assert result.exit_code == 2, result.output
    assert "'--resolution'" in result.output and 'at most 16384x16384' in result.output
    assert 'Traceback' not in result.output and not dest.exists()
    with pytest.raises(dataset_tool.DatasetToolError, match='1..16384'):
        dataset_tool.convert_dataset(str(src), str(dest), resolution=(20000, 20000), log=io.StringIO())


def test_symlink_loop_is_followed_once_with_a_warning(tmp_path):
    src = make_good_folder(tmp_path / 'src', n=2)
    (src / 'sub').mkdir()
    PIL.Image.fromarray(rand_rgb(7)).save(src / 'sub' / 'x.png')
    os.symlink('..', src / 'sub' / 'loop')     # sub/loop -> src: would list src again and again
    os.symlink('sub', src / 'again')           # a second link to a folder that is read anyway
    result = ok('--source', src, '--dest', tmp_path / 'out.zip')
    assert result.output.count('which is already read; skipped') == 2, result.output
    assert 'loop' in result.output and 'again' in result.output
    ds, images, _ = load(tmp_path / 'out.zip')
    assert len(ds) == 3  # 0.png, 1.png, sub/x.png, each once
    assert len({img.tobytes() for img in images}) == 3
    assert len(ImageFolderDataset(str(src))) == 3  # the loader walks folders the same way


def test_truncated_cifar_tarball_names_the_file(tmp_path):
    rnd = np.random.RandomState(2)
    src = tmp_path / 'cifar-10-python.tar.gz'
    with tarfile.open(src, 'w:gz') as tar:
        for k in (1, 2):
            blob = pickle.dumps({b'data': rnd.randint(0, 256, (40, 3072), dtype=np.uint8), b'labels': [1] * 40},
                                protocol=2)
            info = tarfile.TarInfo(f'cifar-10-batches-py/data_batch_{k}')
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    data = src.read_bytes()
    src.write_bytes(data[:len(data) // 2])
    dest = tmp_path / 'c.zip'
    out = failed(str(dest), '--source', src, '--dest', dest)
    assert 'Aborted' not in out and f'{src}: cannot read tar archive, truncated or damaged?' in out, out


def _dead_pid():
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def test_stale_partial_outputs_of_a_killed_run_are_removed(tmp_path):
    src = make_good_folder(tmp_path / 'src', n=2)
    dead = _dead_pid()
    stale_zip = tmp_path / f'.out.zip.{dead}.k1ll3d_x.partial'
    stale_zip.write_bytes(b'PK half a zip')
    live = tmp_path / f'.out.zip.{os.getpid()}.st1ll_wr1t1ng.partial'  # a writer that is still running
    live.write_bytes(b'PK')
    other = tmp_path / f'.other.zip.{dead}.abcdefgh.partial'  # belongs to another --dest
    other.write_bytes(b'PK')
    result = ok('--source', src, '--dest', tmp_path / 'out.zip')
    assert f'removed {stale_zip}' in result.output
    assert not stale_zip.exists() and live.exists() and other.exists()
    assert len(ImageFolderDataset(str(tmp_path / 'out.zip'))) == 2

    stale_dir = tmp_path / f'.outdir.{dead}.abcd_123.partial'
    (stale_dir / '00000').mkdir(parents=True)
    (stale_dir / '00000' / 'img00000000.png').write_bytes(b'half')
    ok('--source', src, '--dest', tmp_path / 'outdir')
    assert not stale_dir.exists() and len(ImageFolderDataset(str(tmp_path / 'outdir'))) == 2


def test_partial_output_name_carries_the_writer_pid(tmp_path, monkeypatch):
    src = make_good_folder(tmp_path / 'src', n=3)
    seen = []
    real_encode = dataset_tool.encode_png

    def look_then_interrupt(*args, **kwargs):
        seen.extend(n for n in os.listdir(tmp_path) if n.endswith('.partial'))
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset_tool, 'encode_png', look_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        dataset_tool.convert_dataset(str(src), str(tmp_path / 'out.zip'), log=io.StringIO())
    monkeypatch.setattr(dataset_tool, 'encode_png', real_encode)
    assert seen and all(n.startswith(f'.out.zip.{os.getpid()}.') for n in seen), seen


def test_zip_members_with_absolute_or_parent_paths_are_skipped_with_a_warning(tmp_path):
    src = tmp_path / 'src.zip'
    with zipfile.ZipFile(src, 'w') as z:
        for i, name in enumerate(['ok/a.png', '/abs.png', '../up.png', 'ok/../../esc.png', 'C:/drive.png']):
            buf = io.BytesIO()
            PIL.Image.fromarray(rand_rgb(i)).save(buf, format='PNG')
            z.writestr(zipfile.ZipInfo(name), buf.getvalue())
    assert '/abs.png' in zipfile.ZipFile(src).namelist()  # the archive really holds an absolute name
    result = ok('--source', src, '--dest', tmp_path / 'out.zip')
    for name in ('/abs.png', '../up.png', 'ok/../../esc.png', 'C:/drive.png'):
        assert f'skipped member "{name}"' in result.output, result.output
    ds, images, _ = load(tmp_path / 'out.zip')
    assert len(ds) == 1
    np.testing.assert_array_equal(images[0], rand_rgb(0).transpose(2, 0, 1))


def test_tiff_sources_are_accepted(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    PIL.Image.fromarray(rand_rgb(0)).save(src / 'a.tif')
    PIL.Image.fromarray(rand_rgb(1)).save(src / 'b.TIFF')
    ok('--source', src, '--dest', tmp_path / 'out.zip')
    ds, images, _ = load(tmp_path / 'out.zip')
    assert len(ds) == 2
    np.testing.assert_array_equal(images[1], rand_rgb(1).transpose(2, 0, 1))
