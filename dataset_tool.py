"""Convert image collections into training datasets for `training.dataset.ImageFolderDataset`.

    python dataset_tool.py --source=SRC --dest=DEST [options]

Sources: a folder of images (searched recursively), a zip of images, a folder of MNIST-format
idx .gz files, or the CIFAR-10 python tarball. Destination: a .zip or a folder holding
`00000/img00000000.png`, ... plus `dataset.json` with the labels (or `{"labels": null}`).

Every output image has one square resolution and one channel count (1 = grayscale, 3 = RGB).
Alpha is composited onto a background colour. The output is written under a temporary name
next to DEST and renamed only when everything succeeded, so a failure (bad input, Ctrl-C)
never leaves a half-written dataset behind.
"""

import gzip
import importlib
import importlib.util
import io
import json
import os
import pickle
import re
import shutil
import signal
import stat
import struct
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from typing import Callable, List, Optional, Tuple

import click
import numpy as np
import PIL.Image
import PIL.ImageColor
import PIL.ImageOps

# The label format and the folder walk are defined once, by the loader, so the tool and the loader cannot disagree.
from torch_utils.image_dataset import MAX_LABELS_BYTES, float_pixels_to_uint8
from torch_utils.image_io import IMAGE_EXTENSIONS, is_image_file
from training import cli_common
from training.dataset import LABELS_FILENAME, DatasetError, list_folder_files, parse_labels_json

# Largest --resolution side: far above any GAN resolution, small enough that one image still fits in memory.
MAX_RESOLUTION = 16384


class DatasetToolError(Exception):
    """A problem with the input or the options; the message names the file/option and the problem."""


# Exceptions that mean "this input file is unreadable", as opposed to bugs in this tool.
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, zipfile.BadZipFile,
                PIL.Image.DecompressionBombError)

_GRAY_MODES = frozenset(['1', 'L', 'LA', 'La', 'I', 'I;16', 'I;16L', 'I;16B', 'I;16N', 'F'])
_SIXTEEN_BIT_MODES = frozenset(['I', 'I;16', 'I;16L', 'I;16B', 'I;16N'])
_EXIF_ORIENTATION = 0x0112
_RESIZE_FILTERS = {'box': PIL.Image.Resampling.BOX, 'lanczos': PIL.Image.Resampling.LANCZOS}

# ----------------------------------------------------------------------------
# Source items: something with a name that can report its size cheaply and decode itself.


class _Item:
    name = ''      # shown in messages: a path, or "file[index]" for array sources
    label = None   # int class index, tuple of floats, or None

    def probe(self) -> Tuple[int, int, bool]:
        """(width, height, is_grayscale) without decoding pixels where the format allows."""
        raise NotImplementedError

    def load(self) -> PIL.Image.Image:
        raise NotImplementedError


class _FileItem(_Item):
    def __init__(self, name: str, opener: Callable, label=None):
        self.name, self._opener, self.label = name, opener, label

    # Phone photos are often stored sideways with an EXIF rotation tag; it is honoured when the
    # EXIF block sits in the header (JPEG, WebP), which keeps probing free of pixel decoding.

    def probe(self):
        with self._opener() as f, PIL.Image.open(f) as image:
            _check_pixels(image)
            width, height = image.size
            if 'exif' in image.info and image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width  # rotated by 90 degrees
            return width, height, image.mode in _GRAY_MODES

    def load(self):
        with self._opener() as f, PIL.Image.open(f) as image:
            _check_pixels(image)
            has_exif = 'exif' in image.info
            image.load()
            return PIL.ImageOps.exif_transpose(image) if has_exif else image.copy()


def _check_pixels(image: PIL.Image.Image) -> None:
    """Refuse, from the header alone, an image larger than PIL's decompression-bomb limit (a small file can
    declare gigapixels and would be decoded into that much memory)."""
    limit = PIL.Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        raise PIL.Image.DecompressionBombError(
            f'{width}x{height} = {width * height:,} pixels is above the limit of {limit:,} pixels (PIL\'s '
            f'decompression-bomb limit, PIL.Image.MAX_IMAGE_PIXELS); refusing to decode it')


class _ArrayItem(_Item):
    def __init__(self, name: str, array: np.ndarray, label=None):
        self.name, self._array, self.label = name, array, label  # array: uint8 [H, W] or [H, W, 3]

    def probe(self):
        return self._array.shape[1], self._array.shape[0], self._array.ndim == 2

    def load(self):
        return PIL.Image.fromarray(self._array)


class _Source:
    def __init__(self, kind: str, items: List[_Item], has_labels: bool, notes: List[str] = (), close=None):
        self.kind, self.items, self.has_labels, self.notes = kind, items, has_labels, list(notes)
        self._close = close

    def close(self):
        if self._close is not None:
            self._close()
            self._close = None


# ----------------------------------------------------------------------------
# Source readers.


def _explain(e: BaseException) -> str:
    if isinstance(e, PIL.UnidentifiedImageError):
        return 'not a recognised image format, or a corrupt header'
    return str(e) or type(e).__name__


def _labels_for(names: List[str], labels: Optional[dict], where: str) -> List:
    if labels is None:
        return [None] * len(names)
    missing = [n for n in names if n not in labels]
    if missing:
        more = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
        raise DatasetToolError(f'{where}: no label for image "{missing[0]}"{more}')
    return [labels[n] for n in names]


def _parse_labels(data: bytes, where: str) -> Optional[dict]:
    try:
        return parse_labels_json(data, where)
    except DatasetError as e:
        raise DatasetToolError(str(e)) from None


def _ignored_note(others: List[str], where: str) -> List[str]:
    if not others:
        return []
    return [f'note: ignored {len(others)} non-image file{"s" if len(others) > 1 else ""} in {where} '
            f'(e.g. "{others[0]}")']


def open_image_folder(path: str) -> _Source:
    warnings = []
    fnames = list_folder_files(path, warn=lambda message: warnings.append(f'warning: {message}'))
    images = [f for f in fnames if is_image_file(f)]
    others = [f for f in fnames if not is_image_file(f) and f != LABELS_FILENAME]
    labels = None
    if LABELS_FILENAME in fnames:
        where = os.path.join(path, LABELS_FILENAME)
        try:
            if os.path.getsize(where) > MAX_LABELS_BYTES:
                raise DatasetToolError(f'{where}: {os.path.getsize(where):,} bytes; a labels file is at most '
                                       f'{MAX_LABELS_BYTES:,}')
            with open(where, 'rb') as f:
                labels = _parse_labels(f.read(), where)
        except OSError as e:
            raise DatasetToolError(f'{where}: cannot read ({e})') from None
    label_list = _labels_for(images, labels, os.path.join(path, LABELS_FILENAME))
    items = [_FileItem(os.path.join(path, f), (lambda p=os.path.join(path, f): open(p, 'rb')), label)  # noqa: SIM115
             for f, label in zip(images, label_list)]
    return _Source('image folder', items, labels is not None, warnings + _ignored_note(others, path))


def open_image_zip(path: str) -> _Source:
    try:
        archive = zipfile.ZipFile(path)
        fnames = sorted(n for n in archive.namelist() if not n.endswith('/'))
    except _READ_ERRORS as e:
        raise DatasetToolError(f'{path}: cannot read zip archive ({e})') from None
    try:
        # Member names that climb out of the archive ('../x.png') or are absolute ('/x.png', 'C:/x.png') are not
        # part of an image collection: an extractor would write them outside its target folder.
        unsafe = [f for f in fnames if _unsafe_member(f)]
        fnames = [f for f in fnames if not _unsafe_member(f)]
        warnings = [f'warning: {path}: skipped member "{f}" (absolute path or ".." component)' for f in unsafe]
        visible = [f for f in fnames if not any(part.startswith('.') or part == '__MACOSX' for part in f.split('/'))]
        images = [f for f in visible if is_image_file(f)]
        others = [f for f in visible if not is_image_file(f) and f != LABELS_FILENAME]
        labels = None
        if LABELS_FILENAME in fnames:
            where = f'{path}:{LABELS_FILENAME}'
            if archive.getinfo(LABELS_FILENAME).file_size > MAX_LABELS_BYTES:
                raise DatasetToolError(f'{where}: {archive.getinfo(LABELS_FILENAME).file_size:,} bytes; a labels file '
                                       f'is at most {MAX_LABELS_BYTES:,}')
            try:
                data = archive.read(LABELS_FILENAME)
            except _READ_ERRORS as e:
                raise DatasetToolError(f'{where}: cannot read ({e})') from None
            labels = _parse_labels(data, where)
        label_list = _labels_for(images, labels, f'{path}:{LABELS_FILENAME}')
    except BaseException:
        archive.close()
        raise
    # Each member is decoded from a stream: its header is checked (format, pixel count) before anything large is
    # read, so a small zip holding a huge member costs no memory.
    items = [_FileItem(f'{path}:{f}', (lambda f=f: archive.open(f)), label) for f, label in zip(images, label_list)]
    return _Source('zip of images', items, labels is not None, warnings + _ignored_note(others, path),
                   close=archive.close)


def _unsafe_member(name: str) -> bool:
    parts = name.replace('\\', '/').split('/')
    return name.startswith(('/', '\\')) or re.match(r'[A-Za-z]:', name) is not None or '..' in parts


_MNIST_SPLITS = [('train', 'train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
                 ('t10k', 't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')]


def _read_idx_gz(path: str, ndim: int) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes with `ndim` dimensions."""
    try:
        with gzip.open(path, 'rb') as f:
            data = f.read()
    except _READ_ERRORS as e:
        raise DatasetToolError(f'{path}: cannot read gzip data ({e})') from None
    # Header: two zero bytes, type code 0x08 (unsigned byte), number of dims, then big-endian uint32 sizes.
    if len(data) < 4 or data[0:2] != b'\0\0' or data[2] != 0x08:
        raise DatasetToolError(f'{path}: not an IDX file of unsigned bytes (bad magic number {data[:4].hex()})')
    if data[3] != ndim:
        raise DatasetToolError(f'{path}: expected {ndim} dimension(s), the header says {data[3]}')
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DatasetToolError(f'{path}: truncated IDX header')
    shape = struct.unpack(f'>{ndim}I', data[4:header_len])
    payload = len(data) - header_len
    if payload != int(np.prod(shape)):
        raise DatasetToolError(f'{path}: header says shape {list(shape)} ({int(np.prod(shape))} bytes) '
                               f'but the file holds {payload} bytes of data')
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape)


def open_mnist(path: str, include_test: bool) -> _Source:
    items = []
    for split, images_name, labels_name in _MNIST_SPLITS:
        images_path, labels_path = os.path.join(path, images_name), os.path.join(path, labels_name)
        if split != 'train' and not include_test:
            continue
        if split != 'train' and not os.path.exists(images_path) and not os.path.exists(labels_path):
            continue
        for needed in (images_path, labels_path):
            if not os.path.isfile(needed):
                raise DatasetToolError(f'{path}: MNIST-format folder is missing {os.path.basename(needed)}')
        images = _read_idx_gz(images_path, 3)
        labels = _read_idx_gz(labels_path, 1)
        if len(images) != len(labels):
            raise DatasetToolError(f'{images_path} holds {len(images)} images but {labels_path} holds '
                                   f'{len(labels)} labels')
        items += [_ArrayItem(f'{images_path}[{i}]', images[i], int(labels[i])) for i in range(len(images))]
    return _Source('MNIST-format idx files', items, True)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a pickle can otherwise run arbitrary code."""

    _ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
                ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
                ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
                ('numpy', 'ndarray'), ('numpy', 'dtype'),
                ('_codecs', 'encode')}  # Python 3 protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1')

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name} (only numpy arrays are allowed)')
        if module.startswith('numpy.core.') and importlib.util.find_spec('numpy._core') is not None:
            module = 'numpy._core.' + module[len('numpy.core.'):]  # numpy 2 renamed the package
        return getattr(importlib.import_module(module), name)


def open_cifar10(path: str, include_test: bool) -> _Source:
    def batch_key(member_name):
        base = member_name.rsplit('/', 1)[-1]
        m = re.fullmatch(r'data_batch_(\d+)', base)
        if m:
            return (0, int(m.group(1)))
        if include_test and base == 'test_batch':
            return (1, 0)
        return None

    items = []
    try:
        with tarfile.open(path, 'r:*') as tar:
            members = sorted((m for m in tar.getmembers() if m.isfile() and batch_key(m.name) is not None),
                             key=lambda m: batch_key(m.name))
            if not members:
                raise DatasetToolError(f'{path}: no data_batch_* files inside; expected the CIFAR-10 python '
                                       f'tarball (cifar-10-python.tar.gz)')
            for member in members:
                where = f'{path}:{member.name}'
                try:
                    batch = _ArrayOnlyUnpickler(io.BytesIO(tar.extractfile(member).read()), encoding='bytes').load()
                except (pickle.UnpicklingError, *_READ_ERRORS) as e:
                    raise DatasetToolError(f'{where}: cannot unpickle CIFAR batch ({e})') from None
                data = batch.get(b'data') if isinstance(batch, dict) else None
                labels = batch.get(b'labels') if isinstance(batch, dict) else None
                if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                        and data.shape[1] == 3 * 32 * 32):
                    raise DatasetToolError(f'{where}: expected b"data" to be a uint8 array [N, 3072]')
                if not (isinstance(labels, list) and len(labels) == len(data)
                        and all(isinstance(v, int) and v >= 0 for v in labels)):
                    raise DatasetToolError(f'{where}: expected b"labels" to be a list of {len(data)} class indices')
                images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # stored planar: RRR..GGG..BBB
                items += [_ArrayItem(f'{where}[{i}]', np.ascontiguousarray(images[i]), labels[i])
                          for i in range(len(images))]
    except (tarfile.TarError, *_READ_ERRORS) as e:
        # A truncated .tar.gz fails inside gzip/zlib (EOFError, BadGzipFile) rather than in tarfile.
        raise DatasetToolError(f'{path}: cannot read tar archive, truncated or damaged? ({_explain(e)})') from None
    return _Source('CIFAR-10 python tarball', items, True)


def open_source(path: str, include_test: bool = False) -> _Source:
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, _MNIST_SPLITS[0][1])):
            return open_mnist(path, include_test)
        return open_image_folder(path)
    if os.path.isfile(path):
        if zipfile.is_zipfile(path):
            return open_image_zip(path)
        if tarfile.is_tarfile(path):
            return open_cifar10(path, include_test)
        raise DatasetToolError(f'--source {path}: not a folder, a zip of images, or a CIFAR-10 python tarball')
    raise DatasetToolError(f'--source {path}: does not exist')


# ----------------------------------------------------------------------------
# Pixel conversion.


def parse_background(text: str) -> Tuple[int, int, int]:
    try:
        rgb = PIL.ImageColor.getrgb(text)
    except ValueError:
        raise DatasetToolError(f'--background {text!r}: not a colour; use "white" or "#RRGGBB"') from None
    return tuple(int(v) for v in rgb[:3])


def flatten_image(image: PIL.Image.Image, background: Tuple[int, int, int], channels: int) -> np.ndarray:
    """Any PIL image -> uint8 [H, W, channels] (1 or 3) with alpha composited onto `background`."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        # Pillow's convert('L') clips 16-bit values instead of scaling them.
        array = (np.asarray(image, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8)[..., None]
    elif mode == 'F':
        array = float_pixels_to_uint8(image)[..., None]
    else:
        has_alpha = 'A' in mode or 'a' in mode or 'transparency' in image.info
        if mode in _GRAY_MODES:
            target = 'LA' if has_alpha else 'L'
        else:
            target = 'RGBA' if has_alpha else 'RGB'
        array = np.asarray(image.convert(target) if image.mode != target else image, dtype=np.uint8)
        if array.ndim == 2:
            array = array[..., None]

    if array.shape[2] in (2, 4):
        color, alpha = array[..., :-1].astype(np.float32), array[..., -1:].astype(np.float32) / 255
        bg = np.asarray(background, dtype=np.float32)
        if color.shape[2] == 1:
            bg = bg @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, as Pillow uses
        array = np.rint(color * alpha + bg * (1 - alpha)).clip(0, 255).astype(np.uint8)

    if array.shape[2] == 1 and channels == 3:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 3 and channels == 1:
        array = np.asarray(PIL.Image.fromarray(array, 'RGB').convert('L'))[..., None]
    return array


def transform_image(array: np.ndarray, resolution: Optional[Tuple[int, int]], transform: Optional[str],
                    resize_filter: str, background: Tuple[int, int, int]) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [height, width, C] per --resolution/--transform (unchanged when resolution is None)."""
    if resolution is None:
        return array
    width, height = resolution
    channels = array.shape[2]
    image = PIL.Image.fromarray(array[..., 0] if channels == 1 else array, 'L' if channels == 1 else 'RGB')
    filt = _RESIZE_FILTERS[resize_filter]
    w, h = image.size
    if transform == 'center-crop':
        # Largest centred box with the output aspect ratio, then resize.
        if w * height > h * width:
            cw, ch = int(round(h * width / height)), h
        else:
            cw, ch = w, int(round(w * height / width))
        left, top = (w - cw) // 2, (h - ch) // 2
        image = image.crop((left, top, left + cw, top + ch))
    elif transform == 'center-crop-wide':
        # Fit the width; crop the height if too tall, letterbox onto the background if too short.
        nh = max(1, int(round(h * width / w)))
        image = image.resize((width, nh), filt) if (w, h) != (width, nh) else image
        if nh != height:
            fill = background if channels == 3 else int(round(np.dot(background, [0.299, 0.587, 0.114])))
            canvas = PIL.Image.new(image.mode, (width, height), fill)
            canvas.paste(image, (0, (height - nh) // 2))
            image = canvas
    if image.size != (width, height):
        image = image.resize((width, height), filt)
    out = np.asarray(image)
    return out[..., None] if out.ndim == 2 else out


def encode_png(array: np.ndarray, compress_level: int = 9) -> bytes:
    buf = io.BytesIO()
    image = PIL.Image.fromarray(array[..., 0] if array.shape[2] == 1 else array, 'L' if array.shape[2] == 1 else 'RGB')
    image.save(buf, format='PNG', compress_level=compress_level)
    return buf.getvalue()


# ----------------------------------------------------------------------------
# Output: written under a temporary name next to DEST, renamed into place on success.


class _Writer:
    _FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # reproducible archives: same input -> same bytes

    def __init__(self, dest: str):
        self.dest = dest
        self.is_zip = dest.lower().endswith('.zip')
        parent = os.path.dirname(os.path.abspath(dest))
        self._created_dirs = []
        d = parent
        while not os.path.isdir(d):
            self._created_dirs.append(d)
            d = os.path.dirname(d)
        try:
            for d in reversed(self._created_dirs):
                os.mkdir(d)
            base = os.path.basename(os.path.normpath(dest))
            # The writer's PID in the name lets a later run tell a killed writer's leftovers from a live one's.
            prefix = f'.{base}.{os.getpid()}.'
            if self.is_zip:
                fd, self.tmp = tempfile.mkstemp(prefix=prefix, suffix='.partial', dir=parent)
                os.close(fd)
                self._zip = zipfile.ZipFile(self.tmp, 'w', compression=zipfile.ZIP_STORED)
            else:
                self.tmp = tempfile.mkdtemp(prefix=prefix, suffix='.partial', dir=parent)
        except OSError as e:
            self._remove_created_dirs()
            raise DatasetToolError(f'--dest {dest}: cannot create output ({e})') from None

    def add(self, name: str, data: bytes):
        try:
            if self.is_zip:
                info = zipfile.ZipInfo(name, date_time=self._FIXED_TIME)
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                self._zip.writestr(info, data)
            else:
                path = os.path.join(self.tmp, *name.split('/'))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, 'wb') as f:
                    f.write(data)
        except OSError as e:
            raise DatasetToolError(f'--dest {self.dest}: cannot write {name} ({e})') from None

    def commit(self):
        try:
            if self.is_zip:
                self._zip.close()
            # mkstemp/mkdtemp create private files; give the result the usual permissions.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, (0o666 if self.is_zip else 0o777) & ~umask)
            if os.path.lexists(self.dest):
                raise DatasetToolError(f'--dest {self.dest}: appeared while converting; refusing to overwrite')
            os.replace(self.tmp, self.dest) if self.is_zip else os.rename(self.tmp, self.dest)
        except OSError as e:
            raise DatasetToolError(f'--dest {self.dest}: cannot finish writing ({e})') from None

    def abort(self):
        try:
            if self.is_zip:
                self._zip.close()
        except Exception:
            pass
        if os.path.isdir(self.tmp):
            shutil.rmtree(self.tmp, ignore_errors=True)
        elif os.path.lexists(self.tmp):
            os.remove(self.tmp)
        self._remove_created_dirs()

    def _remove_created_dirs(self):
        for d in self._created_dirs:  # deepest first
            try:
                os.rmdir(d)
            except OSError:
                break


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but is someone else's, or cannot tell: leave its output alone
    return True


def remove_stale_partials(dest: str) -> List[str]:
    """Delete the hidden `.NAME.PID.*.partial` outputs for `dest` whose writer process is gone (killed with
    SIGKILL, or the machine crashed). Returns the removed paths; outputs of live writers are kept."""
    parent = os.path.dirname(os.path.abspath(dest))
    base = os.path.basename(os.path.normpath(dest))
    pattern = re.compile(re.escape(f'.{base}.') + r'(\d+)\.[A-Za-z0-9_]+\.partial')
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in sorted(names):
        m = pattern.fullmatch(name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        path = os.path.join(parent, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            removed.append(path)
        except OSError:
            pass
    return removed


class _Progress:
    """One-line progress bar on stderr (a few plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, label: str, stream=None):
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
        self.done, self._last_time, self._last_decile = 0, 0.0, -1
        self._start = time.time()

    def update(self, n: int = 1):
        self.done += n
        if self.tty:
            now = time.time()
            if now - self._last_time >= 0.1 or self.done == self.total:
                self._last_time = now
                filled = int(30 * self.done / max(self.total, 1))
                self.stream.write(f'\r{self.label} [{"#" * filled}{"." * (30 - filled)}] {self.done}/{self.total}')
                self.stream.flush()
        else:
            decile = 10 * self.done // max(self.total, 1)
            if decile != self._last_decile and (decile % 5 == 0 or self.done == self.total):
                self._last_decile = decile
                self.stream.write(f'{self.label}: {self.done}/{self.total}\n')

    def write(self, message: str):
        if self.tty:
            self.stream.write('\r\033[K')
        self.stream.write(message + '\n')

    def close(self):
        if self.tty:
            self.stream.write(f'  ({time.time() - self._start:.1f} s)\n')


# ----------------------------------------------------------------------------


def convert_dataset(source: str, dest: str, resolution: Optional[Tuple[int, int]] = None,
                    transform: Optional[str] = None, resize_filter: str = 'lanczos',
                    max_images: Optional[int] = None, subset_seed: Optional[int] = None,
                    background: str = 'white', grayscale: str = 'keep', on_error: str = 'abort',
                    include_test: bool = False, compress_level: int = 9, log=None) -> dict:
    """Convert `source` into a dataset at `dest`; see the module docstring and `--help`.

    Returns a summary dict (num_images, resolution, channels, labels, skipped). Raises
    DatasetToolError for bad input or options; `dest` is then left untouched.
    """
    log = log or sys.stderr
    if transform is not None and resolution is None:
        raise DatasetToolError(f'--transform={transform} needs --resolution')
    if resolution is not None and resolution[0] != resolution[1]:
        raise DatasetToolError(f'--resolution {resolution[0]}x{resolution[1]}: training needs square images')
    if resolution is not None and not 1 <= resolution[0] <= MAX_RESOLUTION:
        raise DatasetToolError(f'--resolution {resolution[0]}x{resolution[1]}: must be 1..{MAX_RESOLUTION}')
    if on_error not in ('abort', 'skip'):
        raise DatasetToolError(f'--on-error {on_error!r}: expected abort or skip')
    if grayscale not in ('keep', 'rgb'):
        raise DatasetToolError(f'--grayscale {grayscale!r}: expected keep or rgb')
    if resize_filter not in _RESIZE_FILTERS:
        raise DatasetToolError(f'--resize-filter {resize_filter!r}: expected one of {", ".join(_RESIZE_FILTERS)}')
    bg = parse_background(background)
    if not str(dest).strip():
        raise DatasetToolError('--dest is empty; give a .zip file or a folder name')
    if os.path.isdir(source) and cli_common.is_inside(dest, source):
        raise DatasetToolError(f'--dest {dest} is inside --source {source}: the next conversion of that folder '
                               f'would read the output as images; write it elsewhere')
    if os.path.lexists(dest):
        raise DatasetToolError(f'--dest {dest}: already exists; refusing to overwrite it '
                               f'(remove it or choose another name)')
    for path in remove_stale_partials(dest):
        log.write(f'note: removed {path}, the half-written output of an earlier run that was killed\n')

    src = open_source(source, include_test)
    try:
        for note in src.notes:
            log.write(note + '\n')
        items = src.items
        if not items:
            exts = '/'.join(sorted(e[1:] for e in IMAGE_EXTENSIONS))
            raise DatasetToolError(f'--source {source}: no images found ({exts}, MNIST idx .gz, or CIFAR-10 batches)')
        if max_images is not None and len(items) > max_images:
            if subset_seed is None:
                items = items[:max_images]
            else:
                keep = np.sort(np.random.RandomState(subset_seed).choice(len(items), max_images, replace=False))
                items = [items[i] for i in keep]

        skipped = []

        def bad_file(item, problem, progress):
            if on_error == 'abort':
                raise DatasetToolError(f'{item.name}: {problem} (use --on-error=skip to skip bad files)')
            skipped.append(item.name)
            progress.write(f'warning: skipping {item.name}: {problem}')

        # Pass 1: headers only. Settles the output size and channel count before anything is written.
        progress = _Progress(len(items), 'Checking', log)
        usable, first, num_gray = [], None, 0
        for item in items:
            try:
                width, height, gray = item.probe()
            except _READ_ERRORS as e:
                bad_file(item, f'not a readable image ({_explain(e)})', progress)
            else:
                if resolution is None:
                    if first is None:
                        first = (item, width, height)
                    elif (width, height) != first[1:]:
                        raise DatasetToolError(
                            f'images differ in size: {first[0].name} is {first[1]}x{first[2]} but {item.name} is '
                            f'{width}x{height}; pass --resolution=WxH (and maybe --transform=center-crop)')
                usable.append(item)
                num_gray += bool(gray)
            progress.update()
        progress.close()
        if not usable:
            raise DatasetToolError(f'--source {source}: no usable images ({len(skipped)} bad files skipped)')
        if resolution is None:
            resolution = first[1:]
            if resolution[0] != resolution[1]:
                raise DatasetToolError(f'{first[0].name}: images are {resolution[0]}x{resolution[1]}, but training '
                                       f'needs square images; pass --resolution=NxN --transform=center-crop')
        channels = 1 if (grayscale == 'keep' and num_gray == len(usable)) else 3
        if channels == 3 and num_gray > 0 and grayscale == 'keep':
            log.write(f'note: {num_gray} grayscale image{"s" if num_gray > 1 else ""} converted to RGB to match '
                      f'the colour ones\n')

        # Pass 2: decode, convert, write.
        writer = _Writer(dest)
        try:
            progress = _Progress(len(usable), 'Converting', log)
            out_labels = []
            for item in usable:
                try:
                    array = flatten_image(item.load(), bg, channels)
                    array = transform_image(array, resolution, transform, resize_filter, bg)
                except _READ_ERRORS as e:
                    bad_file(item, f'cannot decode image ({_explain(e)})', progress)
                else:
                    if array.shape[:2] != (resolution[1], resolution[0]):
                        bad_file(item, f'decoded size {array.shape[1]}x{array.shape[0]} differs from its header',
                                 progress)
                    else:
                        idx = len(out_labels)
                        name = f'{idx // 1000:05d}/img{idx:08d}.png'
                        writer.add(name, encode_png(array, compress_level))
                        out_labels.append([name, item.label])
                progress.update()
            progress.close()
            if not out_labels:
                raise DatasetToolError(f'--source {source}: no usable images ({len(skipped)} bad files skipped)')
            labels_json = None
            if src.has_labels:
                labels_json = [[n, list(v) if isinstance(v, tuple) else v] for n, v in out_labels]
            writer.add(LABELS_FILENAME, json.dumps({'labels': labels_json}).encode('utf-8'))
            writer.commit()
        except BaseException:
            writer.abort()
            raise
    finally:
        src.close()

    if skipped:
        log.write(f'warning: skipped {len(skipped)} bad file{"s" if len(skipped) > 1 else ""} '
                  f'out of {len(items)}\n')
    return dict(num_images=len(out_labels), resolution=resolution[0], channels=channels,
                labels=src.has_labels, skipped=len(skipped), source_kind=src.kind)


# ----------------------------------------------------------------------------


def _parse_resolution(ctx, param, value):
    if value is None:
        return None
    m = re.fullmatch(r'\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?', value)
    if not m:
        raise click.BadParameter(f'{value!r}: expected WxH, e.g. 64x64')
    sides = [m.group(1), m.group(2) or m.group(1)]
    if any(len(side.lstrip('0')) > len(str(MAX_RESOLUTION)) for side in sides):  # before int(): no 4300-digit ints
        raise click.BadParameter(f'{value!r}: at most {MAX_RESOLUTION}x{MAX_RESOLUTION}')
    width, height = int(sides[0]), int(sides[1])
    if width < 1 or height < 1:
        raise click.BadParameter(f'{value!r}: width and height must be positive')
    if width > MAX_RESOLUTION or height > MAX_RESOLUTION:
        raise click.BadParameter(f'{value!r}: at most {MAX_RESOLUTION}x{MAX_RESOLUTION}')
    return width, height


@click.command(context_settings=dict(help_option_names=['-h', '--help']))
@click.option('--source', required=True, metavar='PATH',
              help='Image folder (recursive), zip of images, folder with MNIST idx .gz files, or '
                   'cifar-10-python.tar.gz.')
@click.option('--dest', required=True, metavar='PATH', help='Output .zip or folder (must not exist).')
@click.option('--resolution', callback=_parse_resolution, metavar='WxH',
              help='Output resolution, e.g. 64x64 (default: keep; all images must then be the same square size).')
@click.option('--transform', type=click.Choice(['center-crop', 'center-crop-wide']),
              help='center-crop: crop to the output aspect, then resize. center-crop-wide: fit the width, then '
                   'crop or letterbox the height. Default: plain resize.')
@click.option('--resize-filter', type=click.Choice(sorted(_RESIZE_FILTERS)), default='lanczos', show_default=True)
@click.option('--max-images', type=click.IntRange(min=1), help='Convert at most this many images.')
@click.option('--subset-seed', type=click.IntRange(0, 2**32 - 1),
              help='With --max-images: take a seeded random subset instead of the first N (by name).')
@click.option('--background', default='white', show_default=True, metavar='COLOR',
              help='Colour that transparent images are composited onto: white or #RRGGBB.')
@click.option('--grayscale', type=click.Choice(['keep', 'rgb']), default='keep', show_default=True,
              help='keep: an all-grayscale source gives 1-channel images. rgb: always write 3 channels.')
@click.option('--on-error', type=click.Choice(['abort', 'skip']), default='abort', show_default=True,
              help='What to do with unreadable image files: abort without output, or skip them with a warning.')
@click.option('--include-test', is_flag=True, help='MNIST/CIFAR-10: also include the test split.')
def main(source, dest, resolution, transform, resize_filter, max_images, subset_seed, background, grayscale,
         on_error, include_test):
    """Convert images into a dataset for training.dataset.ImageFolderDataset.

    \b
    Examples:
      python dataset_tool.py --source=photos/ --dest=data/photos-256.zip --resolution=256x256 --transform=center-crop
      python dataset_tool.py --source=fashion-mnist/ --dest=data/fmnist.zip --resolution=32x32
      python dataset_tool.py --source=cifar-10-python.tar.gz --dest=data/cifar10.zip
    """
    cli_common.setup_logging()
    t0 = time.time()
    try:
        summary = convert_dataset(source, dest, resolution=resolution, transform=transform,
                                  resize_filter=resize_filter, max_images=max_images, subset_seed=subset_seed,
                                  background=background, grayscale=grayscale, on_error=on_error,
                                  include_test=include_test)
    except DatasetToolError as e:
        raise click.ClickException(str(e)) from None
    r = summary['resolution']
    click.echo(f'Wrote {summary["num_images"]} images ({r}x{r}, {summary["channels"]} channel'
               f'{"s" if summary["channels"] > 1 else ""}, {"with" if summary["labels"] else "no"} labels) '
               f'from {summary["source_kind"]} to {dest} in {time.time() - t0:.1f} s')


if __name__ == '__main__':
    # Treat `kill` like Ctrl-C so the temporary output is cleaned up too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    main()  # pylint: disable=no-value-for-parameter
