"""Vocabulary and split rules shared by the group-labelled data sets (FairFace, UTKFace).

Both label age, gender and race as classes. Neither ships a train/val/test split that
fits ours, so held-out images are chosen by a hash of the file name: the same image
always lands in the same split, whatever order the files are listed in.
"""

from __future__ import annotations

import hashlib

import numpy as np

AGE_GROUPS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
GENDERS = ("Female", "Male")  # class 1 is Male, as CelebA's Male attribute
FAIRFACE_RACES = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern")
UTKFACE_RACES = ("White", "Black", "Asian", "Indian", "Others")
GROUP_COLUMNS = ("age", "gender", "race")
SENSITIVE_COLUMNS = ("gender", "race")  # the groups FairGRAPE audits and prunes for


def stable_bucket(name: str, buckets: int = 10) -> int:
    """A bucket in [0, buckets) from the file name alone."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "big") % buckets


def age_group(years: int) -> int:
    """Index into AGE_GROUPS of an age in years (FairFace's bins).

    >>> [AGE_GROUPS[age_group(a)] for a in (1, 25, 70)]
    ['0-2', '20-29', 'more than 70']
    """
    edges = np.array([3, 10, 20, 30, 40, 50, 60, 70])
    return int(np.searchsorted(edges, years, side="right"))
