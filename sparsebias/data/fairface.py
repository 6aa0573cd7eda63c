"""Reader for FairFace's on-disk format.

    ROOT/fairface_label_train.csv   file,age,gender,race[,service_test]   file = "train/1.jpg"
    ROOT/fairface_label_val.csv     the same for "val/..."
    ROOT/train/*.jpg  ROOT/val/*.jpg

FairFace has no test split: its validation CSV is our test split (as the FairGRAPE
paper evaluates on it), and one tenth of its training images, chosen by file-name
hash, is our validation split.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..core.errors import SparsebiasError
from .celeba import FaceAttributes
from .groups import AGE_GROUPS, FAIRFACE_RACES, GENDERS, GROUP_COLUMNS, stable_bucket

LABEL_FILES = {"fairface_label_train.csv": "train", "fairface_label_val.csv": "test"}
VOCABULARY = {"age": AGE_GROUPS, "gender": GENDERS, "race": FAIRFACE_RACES}


def read_fairface(root) -> FaceAttributes:
    root = Path(root)
    if not root.is_dir():
        raise SparsebiasError(f"data folder not found: {root}")
    ids, labels, partition = [], [], []
    for file_name, split in LABEL_FILES.items():
        for path, row in _rows(root / file_name):
            ids.append(path)
            labels.append(row)
            partition.append(2 if split == "test" else 1 if stable_bucket(path) == 0 else 0)
    seen = set()
    for name in ids:
        if name in seen:
            raise SparsebiasError(f"{root}: image {name} is listed twice")
        seen.add(name)
    missing = [name for name in ids[:50] if not (root / name).is_file()]
    if missing:
        raise SparsebiasError(f"{root}: image {missing[0]} is listed but not on disk")
    return FaceAttributes(root, root, np.array(ids), GROUP_COLUMNS, np.array(labels, dtype=np.int8),
                          np.array(partition, dtype=np.int8),
                          classes=tuple(VOCABULARY[c] for c in GROUP_COLUMNS), source="fairface_label_*.csv")


def _rows(path: Path):
    if not path.is_file():
        raise SparsebiasError(f"file not found: {path} (a FairFace folder has fairface_label_train.csv and "
                              "fairface_label_val.csv)")
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            absent = [c for c in ("file", *GROUP_COLUMNS) if c not in header]
            if absent:
                raise SparsebiasError(f"{path}:1: no {absent[0]!r} column (expected file,age,gender,race)")
            for line, row in enumerate(reader, start=2):
                yield row["file"], [_index(row[c], c, path, line) for c in GROUP_COLUMNS]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SparsebiasError(f"cannot read {path}: {e}") from None


def _index(value, column: str, path: Path, line: int) -> int:
    known = VOCABULARY[column]
    if value not in known:
        raise SparsebiasError(f"{path}:{line}: {column} {value!r} is not one of {', '.join(known)}")
    return known.index(value)
