"""Datasets for the training loop: the image-folder / zip loader and the endless sampler over it.

The loader lives in the neutral module torch_utils.image_dataset (the metrics read datasets too, and must not
import training); it is re-exported here under the names that training configs and snapshots use,
`training.dataset.ImageFolderDataset` among them. `InfiniteSampler` is the training loop's own.
"""

import numpy as np
import torch

from torch_utils.image_dataset import (  # noqa: F401  (re-exported: train.py, dataset_tool.py, configs, snapshots)
    LABELS_FILENAME,
    DatasetError,
    ImageFolderDataset,
    list_folder_files,
    parse_labels_json,
)

# ----------------------------------------------------------------------------

class InfiniteSampler(torch.utils.data.Sampler):
    """Endless stream of dataset indices for the training loop.

    Deterministic given `seed`. With several ranks, item k of the global stream goes to rank
    k % num_replicas, so ranks see disjoint interleaved slices of one shared order. After each
    pass over a position the order is locally perturbed: the current item is swapped with one
    of the `window_size * len(dataset)` items before it, so successive epochs differ without
    a full reshuffle (and with no epoch boundary to synchronise).
    """

    def __init__(self, dataset, rank: int = 0, num_replicas: int = 1, shuffle: bool = True,
                 seed: int = 0, window_size: float = 0.5):
        super().__init__()
        if len(dataset) <= 0:
            raise ValueError('InfiniteSampler: the dataset is empty')
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f'InfiniteSampler: need 0 <= rank < num_replicas, got rank={rank}, '
                             f'num_replicas={num_replicas}')
        if not 0 <= window_size <= 1:
            raise ValueError(f'InfiniteSampler: window_size must be in [0, 1], got {window_size}')
        self.dataset = dataset
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size

    def __iter__(self):
        n = len(self.dataset)
        order = np.arange(n)
        rnd = None
        window = 0
        if self.shuffle:
            rnd = np.random.RandomState(self.seed)
            rnd.shuffle(order)
            window = int(np.rint(n * self.window_size))
        step = 0
        while True:
            pos = step % n
            if step % self.num_replicas == self.rank:
                yield int(order[pos])
            if window >= 2:
                other = (pos - rnd.randint(window)) % n
                order[pos], order[other] = order[other], order[pos]
            step += 1

# ----------------------------------------------------------------------------
