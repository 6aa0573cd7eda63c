"""Images of one split, decoded once into a uint8 array on disk and memory-mapped.

JPEG decoding and resizing cost more than a training step of a small model on a CPU,
so each split is decoded a single time, by every core, into
`cache_dir()/images/<key>.npy` ((N, 3, size, size) uint8), keyed by the image folder,
the split's image ids, the label file's size and time, and the size. Later epochs, runs
and sweeps slice batches straight out of it; real CelebA at 224 px (24 GB) works the
same way, through the page cache instead of memory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from ..core.errors import SparsebiasError, first_line
from . import cache_dir
from .celeba import FaceAttributes
from .parallel import build_lock, run_chunks

# ImageNet statistics, as torchvision's models expect; recorded in every bundle.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DECODE_CHUNK = 256
MAX_PIXELS = 50_000_000   # 40x a CelebA original; a face photograph never needs more
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}   # EXIF orientation -> the transpose that shows the image upright
DECODER = 2   # in the cache key: arrays decoded before EXIF orientation and 16-bit scaling are rebuilt


def read_rgb(path) -> Image.Image:
    """An image file as RGB pixels, upright, or a SparsebiasError naming it.

    The header's size is checked before any pixel is decoded: a small file that claims
    a huge image (a decompression bomb) is refused instead of filling memory. A camera's
    EXIF orientation is applied, so a phone photo is seen the way it is shown; 16-bit
    grey levels are scaled to 8 bits (PIL's own conversion would clip them to white)."""
    try:
        # PIL warns on large images (the check below decides) and on corrupt metadata (the pixels do)
        with warnings.catch_warnings(action="ignore"), Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise SparsebiasError(f"cannot read image {path}: {img.width}x{img.height} pixels is more than "
                                      f"{MAX_PIXELS:,} (a decompression bomb?)")
            if img.mode == "F":
                raise SparsebiasError(f"cannot read image {path}: floating-point pixels have no agreed range; "
                                      "save it with 8 or 16 bits per channel")
            transpose = UPRIGHT.get(_orientation(img))
            upright = img.transpose(transpose) if transpose is not None else img
            if upright.mode.startswith("I"):   # I;16, I;16B, I: 16-bit grey levels
                levels = np.asarray(upright, dtype=np.float64) / 257.0
                upright = Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8))
            return upright.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError) as e:
        raise SparsebiasError(f"cannot read image {path}: {first_line(e)}") from None


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag, 1 (as stored) when absent or unreadable: the tag is
    metadata beside valid pixels, and a corrupt block must not lose the image."""
    try:
        return int(img.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:   # PIL's EXIF parser raises struct, type and value errors of its own
        return 1


def load_image(path, size: int) -> np.ndarray:
    """RGB, shorter side resized to `size`, centre-cropped: (3, size, size) uint8."""
    img = read_rgb(path)
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.array(img, dtype=np.uint8).transpose(2, 0, 1)


def standardize(batch: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    """uint8 (N, 3, H, W) -> float32, scaled to [0, 1] and standardised per channel: the
    numpy twin of `loader.normalize`, bit for bit, for inference without torch."""
    mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return (batch.astype(np.float32) / np.float32(255.0) - mean) / std


def decoded_images(paths: list[Path], size: int, cache_file: Path, workers: int | None = None,
                   progress=None) -> np.ndarray:
    """The images at `paths` as one (N, 3, size, size) uint8 array, decoded into `cache_file`
    on first use (atomically, in parallel) and memory-mapped copy-on-write after that."""
    with build_lock(cache_file):
        if not cache_file.exists():
            _check_room(cache_file.parent, len(paths) * 3 * size * size, f"{len(paths):,} images at {size} px")
            tmp = cache_file.with_name(f".{cache_file.name}.tmp-{os.getpid()}")
            try:
                np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), 3, size, size)).flush()
                jobs = [(tmp, [str(p) for p in paths[s:s + DECODE_CHUNK]], s, size)
                        for s in range(0, len(paths), DECODE_CHUNK)]
                run_chunks(_decode_chunk, jobs, workers or os.cpu_count() or 1, progress)
                tmp.rename(cache_file)
            finally:
                tmp.unlink(missing_ok=True)
    return np.load(cache_file, mmap_mode="c")


def _check_room(folder: Path, needed: int, what: str) -> None:
    """Refuse a cache the disk cannot hold: the array is sparse until written, and writing a
    memory map past a full disk kills the process (SIGBUS) partway through decoding."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise SparsebiasError(f"the decoded cache of {what} needs {needed / 1e9:.1f} GB in {folder}, which has "
                              f"{free / 1e9:.1f} GB free; free space, or set SPARSEBIAS_CACHE to a larger disk")


def _decode_chunk(job) -> int:
    tmp, paths, start, size = job
    out = np.load(tmp, mmap_mode="r+")
    for k, path in enumerate(paths):
        out[start + k] = load_image(path, size)
    out.flush()
    return len(paths)


def cache_key(table: FaceAttributes, ids: np.ndarray, size: int) -> str:
    """Names the decoded array of these images at this size; changes when the data set does."""
    label_file = table.root / table.source
    stat = label_file.stat() if label_file.exists() else None
    h = hashlib.sha256()
    h.update(f"{DECODER}|{table.image_dir.resolve()}|{size}|{stat and (stat.st_size, stat.st_mtime_ns)}|".encode())
    h.update("\n".join(map(str, ids)).encode())
    return h.hexdigest()[:24]


def split_images(table: FaceAttributes, split: str, size: int, *, cache: Path | None = None,
                 progress=None) -> np.ndarray:
    """A split's images as (N, 3, size, size) uint8, through the decoded cache."""
    ids = table.ids[table.split(split)]
    cache_file = (cache or cache_dir() / "images") / f"{cache_key(table, ids, size)}.npy"
    return decoded_images([table.image_dir / name for name in ids], size, cache_file, progress=progress)
