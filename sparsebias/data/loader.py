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

import torch

from .images import FaceImages, normalize

FLIP = 0.5


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
