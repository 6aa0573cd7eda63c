"""Reader for UTKFace: labels live in the file names, [age]_[gender]_[race]_[date&time].jpg.

gender 0 = male, 1 = female; race 0-4 = White, Black, Asian, Indian, Others. The
aligned-and-cropped release names files "...jpg.chip.jpg"; both forms are read, from
ROOT/UTKFace (the full aligned release), else ROOT/crop_part1 (its first part, as the
download and Kaggle's copy name it), else ROOT itself. A few files of the public release
lack a field (e.g. "39_1_20170116174525125.jpg.chip.jpg"); they are skipped and counted,
as every user of the data set does. A field that is present but out of range is an
error. Splits by file-name hash: 70% train, 10% val, 20% test.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..core.errors import SparsebiasError
from .celeba import FaceAttributes
from .groups import AGE_GROUPS, GENDERS, GROUP_COLUMNS, UTKFACE_RACES, age_group, stable_bucket

NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_[\d\w-]*\.jpg(\.chip\.jpg)?$", re.IGNORECASE)
UTK_GENDER = {0: GENDERS.index("Male"), 1: GENDERS.index("Female")}
FOLDERS = ("UTKFace", "crop_part1")   # where the releases unpack, looked for in this order


def read_utkface(root, echo=print) -> FaceAttributes:
    root = Path(root)
    if not root.is_dir():
        raise SparsebiasError(f"data folder not found: {root}")
    folder = next((root / sub for sub in FOLDERS if (root / sub).is_dir()), root)
    ids, labels, skipped = [], [], []
    for path in sorted(folder.iterdir()):
        if not path.name.lower().endswith(".jpg"):
            continue
        match = NAME.match(path.name)
        if not match:
            skipped.append(path.name)
            continue
        age, gender, race = (int(g) for g in match.groups()[:3])
        if gender not in UTK_GENDER:
            raise SparsebiasError(f"{path}: gender {gender} is not 0 (male) or 1 (female)")
        if race >= len(UTKFACE_RACES):
            raise SparsebiasError(f"{path}: race {race} is not one of 0-4 ({', '.join(UTKFACE_RACES)})")
        ids.append(path.name)
        labels.append([age_group(age), UTK_GENDER[gender], race])
    if not ids:
        raise SparsebiasError(f"{folder}: no UTKFace images (named age_gender_race_date.jpg)")
    if skipped:
        echo(f"Skipped {len(skipped)} file(s) not named age_gender_race_date.jpg, e.g. {skipped[0]}")
    bucket = np.array([stable_bucket(name) for name in ids])
    partition = np.where(bucket < 7, 0, np.where(bucket == 7, 1, 2)).astype(np.int8)
    return FaceAttributes(root, folder, np.array(ids), GROUP_COLUMNS, np.array(labels, dtype=np.int8), partition,
                          classes=(AGE_GROUPS, GENDERS, UTKFACE_RACES), source="file names")
