"""Training batches out of a decoded split, for one process or each of several.

Every epoch's order and horizontal flips come from one generator seeded by (seed, epoch),
so a run is the same however it is fed. With several processes (torchrun), each global
batch of the recipe's `batch_size` is dealt out row by row, rank r taking rows r, r +
world, ...: the schedule (steps per epoch, learning rate, pruning updates) is the
recipe's whatever the number of processes. The loader slices uint8 batches out of the
memory-mapped split (in worker processes, into pinned memory, when feeding a GPU);
flipping and normalising happen on the device, on a quarter of the bytes of floats.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .celeba import FaceAttributes
from .images import MEAN, STD, split_images

FLIP = 0.5


def normalize(batch: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float, scaled to [0, 1] and standardised per channel."""
    mean = torch.tensor(mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=batch.device).view(1, 3, 1, 1)
    return (batch.float() / 255.0 - mean) / std


class FaceImages(torch.utils.data.Dataset):
    """(uint8 image, label vector) pairs for one split and a subset of label columns.

    `images` holds the whole split, decoded (see the module docstring); `batch(rows)`
    slices a batch out of it. Labels are float 0/1 for binary attributes and class
    indices (long) for class-valued columns, as the loss of each expects. `columns`
    keeps every label column of the split, for pruning methods that look at sensitive
    groups.
    """

    def __init__(self, table: FaceAttributes, split: str, attributes, image_size: int, *,
                 cache: Path | None = None, progress=None):
        self.rows = table.split(split)
        self.ids = table.ids[self.rows]
        self.paths = [table.image_dir / name for name in self.ids]
        self.column_names = table.names
        self.columns = torch.from_numpy(table.labels[self.rows].astype(np.int64))
        labels = self.columns[:, table.columns(attributes)]
        self.labels = labels.float() if table.binary else labels
        self.image_size = image_size
        self.images = torch.from_numpy(split_images(table, split, image_size, cache=cache, progress=progress))

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


class EpochBatches(torch.utils.data.Sampler):
    """Yields, per step, this rank's (rows, flip) of the epoch set by `set_epoch`."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        """Steps per epoch; a last batch too small to give every rank a row is left out."""
        full, rest = divmod(self.size, self.batch_size)
        return full + (rest >= self.world)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        for step in range(len(self)):
            rows = order[step * self.batch_size:(step + 1) * self.batch_size]
            flip = torch.rand(len(rows), generator=generator) < FLIP
            yield rows[self.rank::self.world], flip[self.rank::self.world]


class _Slices(torch.utils.data.Dataset):
    def __init__(self, dataset: FaceImages):
        self.images, self.labels = dataset.images, dataset.labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, batch):
        rows, flip = batch
        return self.images[rows], self.labels[rows], flip


def train_loader(dataset: FaceImages, batch_size: int, seed: int, device: torch.device, rank: int = 0,
                 world: int = 1, workers: int | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader of (uint8 images, labels, flip) batches; call `.sampler.set_epoch(e)` each epoch.

    On the CPU the batches are sliced in the training process (a worker would only add a
    copy); a GPU gets worker processes and pinned memory, so the next batches are ready
    while it computes."""
    sampler = EpochBatches(len(dataset), batch_size, seed, rank, world)
    if workers is None:
        workers = 0 if device.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) // max(world, 1) - 1))
    return torch.utils.data.DataLoader(_Slices(dataset), batch_size=None, sampler=sampler, num_workers=workers,
                                       pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                                       prefetch_factor=4 if workers else None)


def augment(images: torch.Tensor, flip: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 batch -> flipped where `flip` says, normalised, channels_last floats on `device`."""
    x = images.to(device, non_blocking=True)
    flip = flip.to(device, non_blocking=True)
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return normalize(x).contiguous(memory_format=torch.channels_last)
