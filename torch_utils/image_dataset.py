"""Image datasets (folders or zip archives of images) for training and evaluation, StyleGAN-style.

A dataset is a folder or a zip archive of equally sized, square images plus an optional
`dataset.json` at its root that assigns labels:

    {"labels": [["00000/img00000000.png", 6], ["00000/img00000001.png", 9], ...]}

Integer labels become one-hot vectors of length `max(label) + 1`; lists of floats are
passed through as given; `{"labels": null}` means unlabelled. `dataset_tool.py` writes
datasets in exactly this layout.

Items are `(image, label)` with `image` a uint8 numpy array [C, H, W] (C = 1 for grayscale,
3 for RGB, 4 for RGBA) and `label` a float32 numpy array [label_dim] (an empty [0] array
when labels are off or absent).

A neutral module (it imports only torch_utils): the training loop (through training.dataset), the metrics and
dataset_tool.py all read datasets with it.
"""

import json
import logging
import math
import os
import stat
import zipfile
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import PIL.Image
import torch

from torch_utils.image_io import IMAGE_EXTENSIONS, is_image_file
from torch_utils.util import EasyDict

LABELS_FILENAME = 'dataset.json'

# Pillow modes -> how to turn them into an array. Anything not listed is converted to RGB.
_GRAY_MODES = frozenset(['1', 'L', 'I', 'I;16', 'I;16L', 'I;16B', 'I;16N', 'F'])
_SIXTEEN_BIT_MODES = frozenset(['I', 'I;16', 'I;16L', 'I;16B', 'I;16N'])


class DatasetError(ValueError):
    """Raised for unusable dataset files; the message names the file and the problem."""


def _explain(e: BaseException) -> str:
    if isinstance(e, PIL.UnidentifiedImageError):
        return 'not a recognised image format, or a corrupt header'
    return str(e) or type(e).__name__


def list_folder_files(root: str, warn: Optional[Callable[[str], None]] = None) -> List[str]:
    """Relative '/'-separated paths of the files under `root` (recursively, sorted; hidden entries skipped).

    Symlinked folders are followed, but each real folder is read once: a link back to a folder already read (a
    link loop, or a second link to the same folder) is skipped and reported through `warn(message)`, so images
    are never listed twice.
    """
    fnames = []
    seen = {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            if d.startswith('.'):
                continue
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in seen:
                if warn is not None:
                    warn(f'{os.path.join(dirpath, d)} links to folder {real}, which is already read; skipped')
                continue
            seen.add(real)
            keep.append(d)
        dirnames[:] = keep
        for f in filenames:
            if f.startswith('.'):
                continue
            full = os.path.join(dirpath, f)
            # Only regular files (or links to them): opening a FIFO, socket or device would block or never end.
            try:
                regular = stat.S_ISREG(os.stat(full).st_mode)
            except OSError:
                regular = False  # a dangling link: nothing to read
            if not regular:
                if warn is not None:
                    warn(f'{full} is not a regular file (a pipe, socket, device or broken link); skipped')
                continue
            fnames.append(os.path.relpath(full, root).replace(os.sep, '/'))
    return sorted(fnames)


# ----------------------------------------------------------------------------
# dataset.json parsing, shared with dataset_tool.py.

Label = Union[int, Tuple[float, ...]]
# Class indices go up to MAX_CLASSES - 1: labels become one-hot vectors of (largest index + 1) numbers, so one
# stray huge index would make every label gigabytes.
MAX_CLASSES = 100_000
# dataset.json is read whole: 512 MiB is far above what the labels of any dataset take.
MAX_LABELS_BYTES = 512 << 20


def parse_labels_json(data: Union[str, bytes], where: str) -> Optional[Dict[str, Label]]:
    """Parse the text of a `dataset.json` into {relative_path: label}, or None when unlabelled.

    All labels must be of one kind: non-negative ints (class indices) or equally long lists
    of finite numbers. Paths use '/' separators (backslashes are normalised). `where` names
    the file in error messages.
    """
    def fail(problem):
        raise DatasetError(f'{where}: {problem}')

    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        fail(f'not valid JSON ({e})')
    if not isinstance(obj, dict) or 'labels' not in obj:
        fail('expected a JSON object with a "labels" key, e.g. {"labels": [["img.png", 0], ...]} or {"labels": null}')
    entries = obj['labels']
    if entries is None:
        return None
    if not isinstance(entries, list):
        fail(f'"labels" must be a list of [path, label] pairs or null, got {type(entries).__name__}')

    labels: Dict[str, Label] = {}
    kind = None  # 'int' or the vector length
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            fail(f'labels[{i}] must be a [path, label] pair, got {json.dumps(entry)[:80]}')
        name, value = entry[0].replace('\\', '/'), entry[1]
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                fail(f'labels[{i}] ("{name}"): class index must be >= 0, got {value}')
            if value >= MAX_CLASSES:
                fail(f'labels[{i}] ("{name}"): class index {value} is too large: classes are numbered 0..C-1 with C '
                     f'at most {MAX_CLASSES:,} (each label becomes a one-hot vector of C numbers)')
            this_kind = 'int'
        elif isinstance(value, list) and len(value) > 0 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
            value = tuple(float(v) for v in value)
            this_kind = len(value)
        else:
            fail(f'labels[{i}] ("{name}"): label must be a non-negative int or a non-empty list of finite '
                 f'numbers, got {json.dumps(value)[:80]}')
        if kind is None:
            kind = this_kind
        elif this_kind != kind:
            describe = lambda k: 'an int class index' if k == 'int' else f'a vector of length {k}'
            fail(f'labels[{i}] ("{name}") is {describe(this_kind)}, but earlier labels are {describe(kind)}; '
                 f'all labels must have the same form')
        if name in labels:
            fail(f'"{name}" is labelled twice')
        labels[name] = value
    return labels


def labels_to_array(labels: Dict[str, Label], names: List[str], where: str) -> np.ndarray:
    """Look up the label of each name: int64 [N] for class indices, float32 [N, D] for vectors."""
    missing = [name for name in names if name not in labels]
    if missing:
        more = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
        raise DatasetError(f'{where}: no label for image "{missing[0]}"{more}')
    values = [labels[name] for name in names]
    if len(values) > 0 and isinstance(values[0], tuple):
        return np.asarray(values, dtype=np.float32).reshape(len(values), -1)
    return np.asarray(values, dtype=np.int64).reshape(len(values))


# ----------------------------------------------------------------------------
# Decoding.

def float_pixels_to_uint8(image: PIL.Image.Image) -> np.ndarray:
    """A 32-bit float image (mode 'F', e.g. a float TIFF) -> uint8 [H, W]. Float images hold either [0, 1] (what
    scientific and HDR tools write) or [0, 255]: values within [0, 1] are scaled by 255. Any other range, NaN or
    infinity raises ValueError (a silent guess would give an all-black or saturated dataset)."""
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError('floating-point pixels include NaN or infinity')
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if lo < 0 or hi > 255:
        raise ValueError(f'floating-point pixels range over [{lo:g}, {hi:g}], neither [0, 1] nor [0, 255]; '
                         f'convert the image to 8 bits')
    return (values * (255 if hi <= 1 else 1)).round().clip(0, 255).astype(np.uint8)


def image_to_array(image: PIL.Image.Image) -> np.ndarray:
    """Decoded PIL image -> uint8 [C, H, W]. Grayscale stays 1 channel, alpha is kept as a channel."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        # Pillow's convert('L') clips 16-bit values instead of scaling them.
        array = (np.asarray(image, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8)
    elif mode == 'F':
        array = float_pixels_to_uint8(image)
    elif mode in ('1', 'L', 'RGB', 'RGBA', 'LA'):
        array = np.asarray(image.convert('L') if mode == '1' else image, dtype=np.uint8)
    elif mode in ('P', 'PA'):
        has_alpha = mode == 'PA' or 'transparency' in image.info
        array = np.asarray(image.convert('RGBA' if has_alpha else 'RGB'), dtype=np.uint8)
    else:  # CMYK, YCbCr, LAB, HSV, ...
        array = np.asarray(image.convert('RGB'), dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def channels_of_mode(image: PIL.Image.Image) -> int:
    """Channel count that image_to_array() will produce, from the header alone."""
    mode = image.mode
    if mode in _GRAY_MODES:
        return 1
    if mode == 'LA':
        return 2
    if mode == 'RGBA' or mode == 'PA' or (mode == 'P' and 'transparency' in image.info):
        return 4
    return 3


# ----------------------------------------------------------------------------

class ImageFolderDataset(torch.utils.data.Dataset):
    """Images from a folder (searched recursively) or a zip archive, with optional labels.

    Args:
        path:        folder or .zip file.
        resolution:  expected image resolution; a mismatch is an error (None: accept what is there).
        use_labels:  read labels from dataset.json (otherwise every label is an empty [0] array).
        max_size:    keep a random subset of at most this many images (chosen with `random_seed`).
        xflip:       double the dataset; the second half is mirrored left-right.
        random_seed: seed for the `max_size` subset.

    All images must share one square resolution and one channel count; this is checked from
    the image headers when the dataset is opened, so problems surface before training starts.
    """

    def __init__(self, path: str, resolution: Optional[int] = None, use_labels: bool = False,
                 max_size: Optional[int] = None, xflip: bool = False, random_seed: int = 0):
        self._path = os.fspath(path)
        self._use_labels = bool(use_labels)
        self._zipfile = None
        self._zipfile_pid = None

        if os.path.isdir(self._path):
            self._type = 'dir'
            self._all_fnames = self._list_folder(self._path)
        elif os.path.isfile(self._path):
            if not zipfile.is_zipfile(self._path):
                raise DatasetError(f'{self._path}: not a folder or a zip archive')
            self._type = 'zip'
            self._all_fnames = sorted(n for n in self._get_zipfile().namelist() if not n.endswith('/') and not any(
                part.startswith('.') or part == '__MACOSX' for part in n.split('/')))
        else:
            raise DatasetError(f'{self._path}: dataset path does not exist')

        self._image_fnames = sorted(f for f in self._all_fnames if is_image_file(f))
        if len(self._image_fnames) == 0:
            exts = '/'.join(sorted(e[1:] for e in IMAGE_EXTENSIONS))
            raise DatasetError(f'{self._path}: no image files ({exts}) found')
        self._raw_shape = [len(self._image_fnames)] + self._check_image_shapes()
        if resolution is not None and self._raw_shape[2] != resolution:
            raise DatasetError(f'{self._path}: images are {self._raw_shape[3]}x{self._raw_shape[2]}, '
                               f'but resolution={resolution} was requested')

        self._raw_labels = self._load_raw_labels() if self._use_labels else None
        if self._raw_labels is None:
            self._raw_labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
        self._label_shape = ([int(self._raw_labels.max()) + 1] if self._raw_labels.dtype == np.int64
                             else list(self._raw_labels.shape[1:]))

        # Index map: item -> (raw image index, mirrored?).
        raw_idx = np.arange(self._raw_shape[0], dtype=np.int64)
        if max_size is not None:
            if max_size < 1:
                raise DatasetError(f'max_size must be >= 1, got {max_size}')
            if max_size < len(raw_idx):
                chosen = np.random.RandomState(random_seed).choice(len(raw_idx), size=max_size, replace=False)
                raw_idx = np.sort(chosen)
        self._xflip = np.zeros(len(raw_idx), dtype=np.uint8)
        if xflip:
            raw_idx = np.concatenate([raw_idx, raw_idx])
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])
        self._raw_idx = raw_idx

        self._name = os.path.splitext(os.path.basename(self._path.rstrip('/\\')))[0]
        self.close()  # Workers (and the main process) reopen the zip on first use.

    # ---- file access --------------------------------------------------------

    @staticmethod
    def _list_folder(root: str) -> List[str]:
        return list_folder_files(root, warn=logging.getLogger(__name__).warning)

    def _get_zipfile(self) -> zipfile.ZipFile:
        # A ZipFile inherited through fork() shares its OS file offset with the parent, so
        # concurrent reads from several workers would interleave. Reopen per process.
        if self._zipfile is None or self._zipfile_pid != os.getpid():
            self._zipfile = zipfile.ZipFile(self._path)
            self._zipfile_pid = os.getpid()
        return self._zipfile

    def _open_file(self, fname: str):
        if self._type == 'dir':
            return open(os.path.join(self._path, fname), 'rb')
        return self._get_zipfile().open(fname, 'r')

    def _describe(self, fname: str) -> str:
        return os.path.join(self._path, fname) if self._type == 'dir' else f'{self._path}:{fname}'

    def close(self):
        try:
            if self._zipfile is not None and self._zipfile_pid == os.getpid():
                self._zipfile.close()
        finally:
            self._zipfile = None
            self._zipfile_pid = None

    def __getstate__(self):
        # Never pickle an open archive: each DataLoader worker opens its own.
        self.close()
        return dict(self.__dict__)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---- validation ---------------------------------------------------------

    def _check_image_shapes(self) -> List[int]:
        """Read every header (no decoding); return [C, H, W] or raise naming two disagreeing files."""
        first = None
        for fname in self._image_fnames:
            try:
                with self._open_file(fname) as f, PIL.Image.open(f) as image:
                    shape = (channels_of_mode(image), image.size[1], image.size[0])
            except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as e:
                raise DatasetError(f'{self._describe(fname)}: cannot read image ({_explain(e)})') from e
            if first is None:
                first = (fname, shape)
                if shape[1] != shape[2]:
                    raise DatasetError(f'{self._describe(fname)}: image is {shape[2]}x{shape[1]}, but images '
                                       f'must be square (use dataset_tool.py --resolution/--transform)')
            elif shape != first[1]:
                fmt = lambda s: f'{s[2]}x{s[1]} with {s[0]} channel{"s" if s[0] != 1 else ""}'
                raise DatasetError(f'{self._path}: images differ in size or channels: "{first[0]}" is {fmt(first[1])}, '
                                   f'"{fname}" is {fmt(shape)} (use dataset_tool.py to make them uniform)')
        return list(first[1])

    def _load_raw_labels(self) -> Optional[np.ndarray]:
        if LABELS_FILENAME not in self._all_fnames:
            return None
        where = self._describe(LABELS_FILENAME)
        with self._open_file(LABELS_FILENAME) as f:
            data = f.read(MAX_LABELS_BYTES + 1)  # never more than the limit into memory
        if len(data) > MAX_LABELS_BYTES:
            raise DatasetError(f'{where}: larger than {MAX_LABELS_BYTES:,} bytes; a labels file of this size is not '
                               f'one (labels take ~50 bytes per image)')
        labels = parse_labels_json(data, where)
        if labels is None:
            return None
        return labels_to_array(labels, self._image_fnames, where)

    # ---- items --------------------------------------------------------------

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        fname = self._image_fnames[raw_idx]
        try:
            with self._open_file(fname) as f, PIL.Image.open(f) as image:
                image.load()
                array = image_to_array(image)
        except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as e:
            raise DatasetError(f'{self._describe(fname)}: cannot decode image ({_explain(e)})') from e
        if list(array.shape) != self._raw_shape[1:]:
            raise DatasetError(f'{self._describe(fname)}: decoded shape {list(array.shape)} differs from the '
                               f'dataset shape {self._raw_shape[1:]}')
        return array

    def __len__(self) -> int:
        return len(self._raw_idx)

    def __getitem__(self, idx: int) -> Tuple[np.ndarray, np.ndarray]:
        image = self._load_raw_image(int(self._raw_idx[idx]))
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return np.ascontiguousarray(image), self.get_label(idx)

    def get_label(self, idx: int) -> np.ndarray:
        """float32 [label_dim]: one-hot for class-index labels, the stored vector otherwise."""
        raw = self._raw_labels[self._raw_idx[idx]]
        if self._raw_labels.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[raw] = 1
            return onehot
        return raw.astype(np.float32, copy=True)

    def get_details(self, idx: int) -> EasyDict:
        return EasyDict(raw_idx=int(self._raw_idx[idx]), xflip=bool(self._xflip[idx]),
                        raw_label=self._raw_labels[self._raw_idx[idx]].copy(),
                        fname=self._image_fnames[self._raw_idx[idx]])

    # ---- properties ---------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def path(self) -> str:
        return self._path

    @property
    def image_shape(self) -> List[int]:
        return list(self._raw_shape[1:])

    @property
    def num_channels(self) -> int:
        return self._raw_shape[1]

    @property
    def resolution(self) -> int:
        return self._raw_shape[2]

    @property
    def label_shape(self) -> List[int]:
        return list(self._label_shape)

    @property
    def label_dim(self) -> int:
        return self._label_shape[0] if len(self._label_shape) == 1 else int(np.prod(self._label_shape))

    @property
    def has_labels(self) -> bool:
        return self.label_dim > 0

    @property
    def has_onehot_labels(self) -> bool:
        return self._raw_labels.dtype == np.int64
