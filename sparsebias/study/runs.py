"""A finished sweep's runs, as both studies (attribute and group tasks) read them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..bundle import load_bundle
from ..core.errors import SparsebiasError
from ..quantization import quantize
from .jobs import Job, read_plan

DENSE_SPARSITY = 0.01   # a run below this overall sparsity is the dense reference of its seed
LEVEL_LABELS = {"dense": "Dense", "99_5": "99.5", "nm_2_4": "2:4", "nm_1_4": "1:4", "nm_1_8": "1:8"}
INT8 = "int8"           # the level prefix and bundle suffix of a run's INT8 version (sweep --int8)
GMP_PT = "pt"           # the level prefix of recipes that prune a trained dense model (resnet18_pt_95: 'pt_95')


@dataclass
class Run:
    job: Job
    bundle: object
    level: str        # "dense", "80", "99_5", "nm_2_4", ..., "int8_95" for an INT8 version
    task: str         # "joint" or the single attribute

    @property
    def name(self) -> str:
        """The job's name, with '-int8' for its INT8 version (as the bundle folders are named)."""
        return f"{self.job.name}-{INT8}" if self.level.startswith(f"{INT8}_") else self.job.name


def int8_path(out: Path, job: Job) -> Path:
    return out / "bundles" / f"{job.name}-{INT8}"


def level_of(recipe: str) -> str:
    """resnet18_99_5 -> '99_5'; resnet18_dense -> 'dense'; resnet18_pt_95 -> 'pt_95'."""
    stem = Path(recipe).stem
    match = re.match(r"^[a-z]+\d*(?:_v\d)?_(.+)$", stem)
    return match.group(1) if match else stem


def level_label(level: str) -> str:
    """How tables and findings name a level: '99_5' -> '99.5', 'nm_2_4' -> '2:4', 'int8_95' -> '95 INT8',
    'pt_99_5' -> 'PT 99.5'."""
    if level.startswith(f"{INT8}_"):
        return f"{level_label(level[len(INT8) + 1:])} INT8"
    if level.startswith(f"{GMP_PT}_"):
        return f"PT {level_label(level[len(GMP_PT) + 1:])}"
    return LEVEL_LABELS.get(level, level.replace("_", "."))


def family_of(level: str) -> str:
    """How a level was made: 'dense', 'ri' (GMP-RI: '95'), or its prefix ('pt', 'nm', 'int8')."""
    head = level.split("_")[0]
    return "dense" if level == "dense" else "ri" if head.isdigit() else head


def gmp_pt(level: str) -> bool:
    """A GMP-PT level or its INT8 version: its sparsities are GMP-RI's, so the two ladders are drawn apart."""
    return family_of(level.removeprefix(f"{INT8}_")) == GMP_PT


BACKDOORED = " (backdoor)"


def task_of(job: Job, bundle) -> str:
    """'joint', the single attribute trained, and ' (backdoor)' after either on backdoored data."""
    task = job.attributes[0] if job.attributes else "joint"
    return task + (BACKDOORED if "backdoor" in bundle.split("test") else "")


def backdoored(task: str) -> bool:
    """A task trained on backdoored data: audited against the backdoor flag, compared with nothing clean."""
    return task.endswith(BACKDOORED)


def trained_task(task: str) -> str:
    """What was trained, without the backdoor mark: 'Smiling (backdoor)' -> 'Smiling'."""
    return task.removesuffix(BACKDOORED)


def collect_runs(out) -> list[Run]:
    out = Path(out)
    runs = []
    for job in read_plan(out):
        path = out / "bundles" / job.name
        if not (path / "manifest.json").is_file():
            continue
        bundle = load_bundle(path)
        runs.append(Run(job, bundle, level_of(job.recipe), task_of(job, bundle)))
        if (int8_path(out, job) / "manifest.json").is_file():
            int8 = load_bundle(int8_path(out, job))
            runs.append(Run(job, int8, f"{INT8}_{level_of(job.recipe)}", task_of(job, int8)))
    if not runs:
        raise SparsebiasError(f"no finished runs in {out}/bundles")
    return runs


def quantize_runs(jobs: list[Job], out, echo=print) -> list[Path]:
    """The INT8 version of every finished pruned run (OUT/bundles/NAME-int8), made where it is
    missing or does not load; dense runs stay FP32, the reference of both."""
    out = Path(out)
    made = []
    for job in jobs:
        path = out / "bundles" / job.name
        if not (path / "manifest.json").is_file():
            continue
        bundle = load_bundle(path)
        if bundle.manifest.sparsity < DENSE_SPARSITY or _loads(int8_path(out, job)):
            continue
        echo(f"quantizing {job.name}")
        made.append(quantize(bundle, name=int8_path(out, job).name, echo=lambda *a, **k: None).path)
    return made


def _loads(path: Path) -> bool:
    try:
        load_bundle(path)
        return True
    except SparsebiasError:
        return False
