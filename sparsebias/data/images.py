"""Images of one split as a torch Dataset: decoded once, kept in memory when they fit."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import SparsebiasError
from .celeba import FaceAttributes

# ImageNet statistics, as torchvision's models expect; recorded in every bundle.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
MEMORY_BUDGET = 4 << 30  # bytes of decoded uint8 images kept in memory


def load_image(path, size: int) -> np.ndarray:
    """RGB, shorter side resized to `size`, centre-cropped: (3, size, size) uint8."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise SparsebiasError(f"cannot read image {path}: {e}") from None
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.array(img, dtype=np.uint8).transpose(2, 0, 1)


def normalize(batch: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float, scaled to [0, 1] and standardised per channel."""
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    return (batch.float() / 255.0 - mean) / std


class FaceImages(torch.utils.data.Dataset):
    """(uint8 image, label vector) pairs for one split and a subset of label columns.

    Labels are float 0/1 for binary attributes and class indices (long) for class-valued
    columns, as the loss of each expects. `columns` keeps every label column of the split,
    for pruning methods that look at sensitive groups.
    """

    def __init__(self, table: FaceAttributes, split: str, attributes, image_size: int):
        self.rows = table.split(split)
        self.ids = table.ids[self.rows]
        self.paths = [table.image_dir / name for name in self.ids]
        self.column_names = table.names
        self.columns = torch.from_numpy(table.labels[self.rows].astype(np.int64))
        labels = self.columns[:, table.columns(attributes)]
        self.labels = labels.float() if table.binary else labels
        self.image_size = image_size
        n_bytes = len(self.rows) * 3 * image_size * image_size
        self._cache = torch.empty((len(self.rows), 3, image_size, image_size), dtype=torch.uint8) \
            if n_bytes <= MEMORY_BUDGET else None
        self._cached = np.zeros(len(self.rows), dtype=bool)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        if self._cache is not None and self._cached[i]:
            return self._cache[i], self.labels[i]
        img = torch.from_numpy(load_image(self.paths[i], self.image_size))
        if self._cache is not None:
            self._cache[i] = img
            self._cached[i] = True
        return img, self.labels[i]
