"""A finished sweep's runs, as both studies (attribute and group tasks) read them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..bundle import load_bundle
from ..core.errors import SparsebiasError
from .jobs import Job, read_plan

DENSE_SPARSITY = 0.01   # a run below this overall sparsity is the dense reference of its seed
LEVEL_LABELS = {"dense": "Dense", "99_5": "99.5", "nm_2_4": "2:4", "nm_1_4": "1:4", "nm_1_8": "1:8"}


@dataclass
class Run:
    job: Job
    bundle: object
    level: str        # "dense", "80", "99_5", "nm_2_4", ...
    task: str         # "joint" or the single attribute


def level_of(recipe: str) -> str:
    """resnet18_99_5 -> '99_5'; resnet18_dense -> 'dense'; resnet18_pt_95 -> 'pt_95'."""
    stem = Path(recipe).stem
    match = re.match(r"^[a-z]+\d*(?:_v\d)?_(.+)$", stem)
    return match.group(1) if match else stem


def level_label(level: str) -> str:
    """How tables and findings name a level: '99_5' -> '99.5', 'nm_2_4' -> '2:4'."""
    return LEVEL_LABELS.get(level, level.replace("_", "."))


def task_of(job: Job, bundle) -> str:
    """'joint', the single attribute trained, and ' (backdoor)' after either on backdoored data."""
    task = job.attributes[0] if job.attributes else "joint"
    return task + (" (backdoor)" if "backdoor" in bundle.split("test") else "")


def collect_runs(out) -> list[Run]:
    out = Path(out)
    runs = []
    for job in read_plan(out):
        path = out / "bundles" / job.name
        if not (path / "manifest.json").is_file():
            continue
        bundle = load_bundle(path)
        runs.append(Run(job, bundle, level_of(job.recipe), task_of(job, bundle)))
    if not runs:
        raise SparsebiasError(f"no finished runs in {out}/bundles")
    return runs
