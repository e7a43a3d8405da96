"""training/dataset.py: InfiniteSampler, and the loader names it re-exports from torch_utils.image_dataset."""

import itertools

import numpy as np
import pytest

import torch_utils.image_dataset
from training import dataset
from training.dataset import InfiniteSampler


def test_loader_names_are_the_neutral_modules_own():
    """Configs and snapshots name training.dataset.ImageFolderDataset; it is the one class of torch_utils."""
    for name in ('ImageFolderDataset', 'DatasetError', 'LABELS_FILENAME', 'list_folder_files', 'parse_labels_json'):
        assert getattr(dataset, name) is getattr(torch_utils.image_dataset, name), name


# ----------------------------------------------------------------------------
# InfiniteSampler.


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_sampler_without_shuffle_walks_in_order():
    data = list(range(5))
    assert take(InfiniteSampler(data, shuffle=False), 12) == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]


def test_sampler_shuffled_is_deterministic_permutation_per_pass():
    data = list(range(50))
    stream = take(InfiniteSampler(data, seed=3), 200)
    assert stream == take(InfiniteSampler(data, seed=3), 200)
    assert stream != take(InfiniteSampler(data, seed=4), 200)
    assert stream[:50] != data
    assert stream[50:100] != stream[:50]  # the window swaps perturb later passes
    # Near-uniform coverage: over 100 passes every item shows up about 100 times.
    counts = np.bincount(take(InfiniteSampler(data, seed=3), 5000), minlength=50)
    assert counts.sum() == 5000 and counts.min() >= 60 and counts.max() <= 140


def test_sampler_shards_interleave_to_the_single_stream():
    data = list(range(11))
    full = take(InfiniteSampler(data, seed=7), 60)
    shards = [take(InfiniteSampler(data, rank=r, num_replicas=3, seed=7), 20) for r in range(3)]
    for r in range(3):
        assert shards[r] == full[r::3]


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match='rank'):
        InfiniteSampler([1, 2], rank=2, num_replicas=2)
    with pytest.raises(ValueError, match='window_size'):
        InfiniteSampler([1, 2], window_size=1.5)
    with pytest.raises(ValueError, match='empty'):
        InfiniteSampler([])
