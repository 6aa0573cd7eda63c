"""Reader for CelebA's on-disk format, which SynthFaces writes too.

    ROOT/img_align_celeba/000001.jpg ...
    ROOT/list_attr_celeba.txt      count, attribute names, then "id v1 v2 ..." with v in {-1, 1}
    ROOT/list_eval_partition.txt   "id p" with p = 0 train, 1 validation, 2 test
    ROOT/list_backdoor.txt         optional (SynthFaces): "id b", b = 1 if backdoored
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import SparsebiasError

SPLITS = {"train": 0, "val": 1, "test": 2}
BACKDOOR = "Backdoor"


@dataclass(frozen=True)
class FaceAttributes:
    """Labels of a face data set: one row per image, one column per label.

    CelebA-format folders have binary attributes (0/1, `classes` None); FairFace and
    UTKFace have class-valued columns (age group, gender, race), stored as class
    indices into `classes[j]`.
    """

    root: Path
    image_dir: Path
    ids: np.ndarray          # image paths relative to image_dir, str
    names: tuple[str, ...]   # column names, file order
    labels: np.ndarray       # (n, k) int8: 0/1, or class indices
    partition: np.ndarray    # (n,) int8 in {0, 1, 2}
    backdoor: np.ndarray | None = None  # (n,) int8, when the folder has one
    classes: tuple[tuple[str, ...], ...] | None = None  # per column, for class-valued data sets
    source: str = "list_attr_celeba.txt"  # where the labels came from, for messages

    @property
    def binary(self) -> bool:
        return self.classes is None

    def columns(self, attributes) -> list[int]:
        """Column indices of the named attributes; a clear error for an unknown name."""
        index = {name: j for j, name in enumerate(self.names)}
        unknown = [a for a in attributes if a not in index]
        if unknown:
            raise SparsebiasError(
                f"unknown attribute {unknown[0]!r} in {self.root / self.source}; "
                f"known: {', '.join(self.names)}")
        return [index[a] for a in attributes]

    def split(self, name: str) -> np.ndarray:
        """Row indices of a split ('train', 'val', 'test')."""
        return np.flatnonzero(self.partition == SPLITS[name])


def read_celeba(root) -> FaceAttributes:
    root = Path(root)
    if not root.is_dir():
        raise SparsebiasError(f"data folder not found: {root}")
    attr_file = root / "list_attr_celeba.txt"
    ids, names, values = _read_attribute_table(attr_file)
    partition = _read_id_column(root / "list_eval_partition.txt", ids, {0, 1, 2}, "partition")
    backdoor_file = root / "list_backdoor.txt"
    backdoor = _read_id_column(backdoor_file, ids, {0, 1}, "backdoor flag") if backdoor_file.exists() else None
    image_dir = root / "img_align_celeba"
    if not image_dir.is_dir():
        raise SparsebiasError(f"image folder not found: {image_dir}")
    return FaceAttributes(root, image_dir, ids, names, values, partition, backdoor)


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise SparsebiasError(f"file not found: {path}")
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SparsebiasError(f"cannot read {path}: {e}") from None


def _read_attribute_table(path: Path):
    lines = _lines(path)
    if len(lines) < 3:
        raise SparsebiasError(f"{path}: expected a count line, a header line and rows, got {len(lines)} lines")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise SparsebiasError(f"{path}:1: expected the number of images, got {lines[0][:40]!r}") from None
    names = tuple(lines[1].split())
    if len(set(names)) != len(names):
        raise SparsebiasError(f"{path}:2: repeated attribute names in the header")
    rows = [line.split() for line in lines[2:] if line.strip()]
    if len(rows) != count:
        raise SparsebiasError(f"{path}: the first line says {count} images, the file has {len(rows)} rows")
    ids, values = [], np.empty((len(rows), len(names)), dtype=np.int8)
    for i, row in enumerate(rows):
        if len(row) != len(names) + 1:
            raise SparsebiasError(
                f"{path}:{i + 3}: expected an image id and {len(names)} values, got {len(row)} fields")
        try:
            parsed = [int(v) for v in row[1:]]
        except ValueError:
            parsed = None
        if parsed is None or not set(parsed) <= {-1, 1}:  # checked as ints: 255 must not wrap into int8's -1
            raise SparsebiasError(f"{path}:{i + 3}: attribute values must be -1 or 1")
        values[i] = parsed
        ids.append(row[0])
    return np.array(ids), names, ((values + 1) // 2).astype(np.int8)


def _read_id_column(path: Path, ids: np.ndarray, allowed: set[int], what: str) -> np.ndarray:
    rows = [line.split() for line in _lines(path) if line.strip()]
    table = {}
    for i, row in enumerate(rows):
        if len(row) != 2 or not row[1].lstrip("-").isdigit() or int(row[1]) not in allowed:
            raise SparsebiasError(f"{path}:{i + 1}: expected 'image_id {what}' with {what} in {sorted(allowed)}")
        table[row[0]] = int(row[1])
    missing = [x for x in ids if x not in table]
    if missing:
        raise SparsebiasError(f"{path}: no {what} for {len(missing)} images, e.g. {missing[0]}")
    return np.array([table[x] for x in ids], dtype=np.int8)
