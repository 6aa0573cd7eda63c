"""Reader for CelebA's on-disk format, which SynthFaces writes too.

    ROOT/img_align_celeba/000001.jpg ...
    ROOT/list_attr_celeba.txt      count, attribute names, then "id v1 v2 ..." with v in {-1, 1}
    ROOT/list_eval_partition.txt   "id p" with p = 0 train, 1 validation, 2 test
    ROOT/list_backdoor.txt         optional (SynthFaces): "id b", b = 1 if backdoored

The two other layouts users download are read too: Kaggle's copy (`list_attr_celeba.csv`
and `list_eval_partition.csv` with header rows, the images one folder deeper in
`img_align_celeba/img_align_celeba/`) and torchvision's (everything under ROOT/celeba/).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import SparsebiasError

SPLITS = {"train": 0, "val": 1, "test": 2}


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

    def __post_init__(self):
        # an id is read as image_dir / id: one that climbs out (or is absolute) would read any file
        ids = self.ids.astype(str)
        for row in np.flatnonzero(np.char.startswith(ids, "/") | (np.char.find(ids, "..") >= 0)):
            image_id = str(ids[row])   # numpy 2 would write np.str_('...')
            if Path(image_id).is_absolute() or ".." in Path(image_id).parts:
                raise SparsebiasError(f"{self.root / self.source}: image id {image_id!r} (row {row + 1}) "
                                      f"is not a path inside {self.image_dir}")

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
    if _label_file(root, "list_attr_celeba") is None and (root / "celeba").is_dir():
        root = root / "celeba"   # torchvision's download: ROOT/celeba/...
    attr_file = _needed_label_file(root, "list_attr_celeba")
    ids, names, values = _read_attribute_table(attr_file)
    partition = _read_id_column(_needed_label_file(root, "list_eval_partition"), ids, {0, 1, 2}, "partition")
    backdoor_file = root / "list_backdoor.txt"
    backdoor = _read_id_column(backdoor_file, ids, {0, 1}, "backdoor flag") if backdoor_file.exists() else None
    image_dir = root / "img_align_celeba"
    if not image_dir.is_dir():
        raise SparsebiasError(f"image folder not found: {image_dir}")
    if (image_dir / "img_align_celeba").is_dir() and not (image_dir / ids[0]).exists():
        image_dir = image_dir / "img_align_celeba"   # Kaggle's archive unpacks one folder deeper
    return FaceAttributes(root, image_dir, ids, names, values, partition, backdoor, source=attr_file.name)


def _label_file(root: Path, stem: str) -> Path | None:
    """CelebA's text file, or the CSV copy Kaggle's release ships instead."""
    return next((p for p in (root / f"{stem}.txt", root / f"{stem}.csv") if p.is_file()), None)


def _needed_label_file(root: Path, stem: str) -> Path:
    path = _label_file(root, stem)
    if path is None:
        raise SparsebiasError(f"file not found: {root / stem}.txt (or .csv, as in Kaggle's copy of CelebA)")
    return path


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line: comma-separated in a .csv, else by whitespace."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise SparsebiasError(f"cannot read {path}: {e}") from None
    lines = text.splitlines()
    if path.suffix == ".csv":
        try:
            fields = [[f.strip() for f in row] for row in csv.reader(lines)]
        except csv.Error as e:
            raise SparsebiasError(f"cannot read {path}: {e}") from None
    else:
        fields = [line.split() for line in lines]
    return [(n, row) for n, row in enumerate(fields, start=1) if any(row)]


def _read_attribute_table(path: Path):
    """Image ids, attribute names and 0/1 values. The text file starts with a count line
    and a line of names; the CSV with a header row "image_id,name,...", and no count."""
    rows = _rows(path)
    if path.suffix == ".csv":
        if not rows:
            raise SparsebiasError(f"{path}: empty; expected a header row 'image_id,attribute,...' and rows")
        (header_line, header), body = rows[0], rows[1:]
        names = tuple(header[1:])
    else:
        if len(rows) < 2:
            raise SparsebiasError(f"{path}: expected a count line, a header line and rows, got {len(rows)} lines")
        (count_line, first), (header_line, header), body = rows[0], rows[1], rows[2:]
        if len(first) != 1 or not first[0].isdigit():
            raise SparsebiasError(f"{path}:{count_line}: expected the number of images, got {' '.join(first)[:40]!r}")
        if int(first[0]) != len(body):
            raise SparsebiasError(f"{path}: the first line says {int(first[0])} images, the file has {len(body)} rows")
        names = tuple(header)
    if not names or any(name.lstrip("-").isdigit() or not name for name in names):
        raise SparsebiasError(f"{path}:{header_line}: expected a header of attribute names")
    if len(set(names)) != len(names):
        raise SparsebiasError(f"{path}:{header_line}: repeated attribute names in the header")
    if not body:
        raise SparsebiasError(f"{path}: no images listed")
    ids, values = [], np.empty((len(body), len(names)), dtype=np.int8)
    for i, (line, row) in enumerate(body):
        if len(row) != len(names) + 1:
            raise SparsebiasError(
                f"{path}:{line}: expected an image id and {len(names)} values, got {len(row)} fields")
        try:
            parsed = [int(v) for v in row[1:]]
        except ValueError:
            parsed = None
        if parsed is None or not set(parsed) <= {-1, 1}:  # checked as ints: 255 must not wrap into int8's -1
            raise SparsebiasError(f"{path}:{line}: attribute values must be -1 or 1")
        values[i] = parsed
        ids.append(row[0])
    return np.array(ids), names, ((values + 1) // 2).astype(np.int8)


def _read_id_column(path: Path, ids: np.ndarray, allowed: set[int], what: str) -> np.ndarray:
    rows = _rows(path)
    if path.suffix == ".csv" and rows and not rows[0][1][-1].lstrip("-").isdigit():
        rows = rows[1:]   # the header row, "image_id,partition" in Kaggle's copy
    table = {}
    for line, row in rows:
        if len(row) != 2 or not row[1].lstrip("-").isdigit() or int(row[1]) not in allowed:
            raise SparsebiasError(f"{path}:{line}: expected 'image_id {what}' with {what} in {sorted(allowed)}")
        table[row[0]] = int(row[1])
    missing = [x for x in ids if x not in table]
    if missing:
        raise SparsebiasError(f"{path}: no {what} for {len(missing)} images, e.g. {missing[0]}")
    return np.array([table[x] for x in ids], dtype=np.int8)
