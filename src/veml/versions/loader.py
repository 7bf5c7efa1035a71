"""A torch ``Dataset`` and ``DataLoader`` over a data version's decoded pixels (needs the [torch] extra).

``repo.data.loader(version, batch_size=64)`` yields ``(images, labels)``: images (B, 3, H, W)
uint8 (or float32 in [0, 1]), labels (B,) int64 class indices in the version's category order
(-1 where a sample has no label).  Batches are cut by a batch sampler and read in one call
(:class:`VersionImages` takes a list of positions), so a run of consecutive samples is a view of
the memory-mapped pixel cache, not a copy (:class:`veml.versions.pixels.CachedPixels`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from veml.errors import InvalidInput
from veml.versions.pixels import PixelSource

DTYPES = ("uint8", "float32")


class VersionImages(Dataset):
    """``ds[i]`` is (image (3, H, W), label int); ``ds[[i, j, …]]`` is one batch (images (B, 3, H, W),
    labels (B,)).  ``class_names`` names the label indices, ``data_ids`` the samples by position."""

    def __init__(self, source: PixelSource, labels: np.ndarray, class_names: Sequence[str], data_ids: np.ndarray,
                 dtype: str = "uint8") -> None:
        if dtype not in DTYPES:
            raise InvalidInput(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        self.source = source
        self.labels = np.asarray(labels, np.int64)
        self.class_names = tuple(class_names)
        self.data_ids = data_ids
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | Sequence[int] | np.ndarray):
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -len(self) <= i < len(self):
                raise IndexError(i)
            x, y = self.batch(np.array([i % len(self)]))
            return x[0], int(y[0])
        return self.batch(np.asarray(index, np.int64))

    def batch(self, positions: np.ndarray):
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"positions must be within 0..{len(self) - 1}")
        x = torch.from_numpy(self.source.batch(positions)).permute(0, 3, 1, 2)
        if self.dtype == "float32":
            x = x.float().div_(255.0)
        return x, torch.from_numpy(self.labels[positions])


def make_loader(ds: VersionImages, batch_size: int, shuffle: bool, num_workers: int, drop_last: bool,
                seed: int | None) -> DataLoader:
    if batch_size < 1 or num_workers < 0:
        raise InvalidInput("batch_size must be at least 1 and num_workers at least 0")
    gen = torch.Generator()
    if seed is not None:
        gen.manual_seed(int(seed))
    else:
        gen.seed()
    order = RandomSampler(ds, generator=gen) if shuffle else SequentialSampler(ds)
    # batch_size=None: the dataset is indexed with each batch's positions and returns the batch itself.
    # Workers start by forkserver: this process has Lance open, which is not fork-safe (and reading cached
    # pixels needs no workers: num_workers=0 is the fastest there).
    return DataLoader(ds, sampler=BatchSampler(order, batch_size, drop_last), batch_size=None,
                      num_workers=num_workers, persistent_workers=num_workers > 0,
                      multiprocessing_context="forkserver" if num_workers > 0 else None)
