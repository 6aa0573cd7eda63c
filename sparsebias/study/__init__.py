"""Sweeps and studies: recipes x seeds through compress (restartable, locally, in a process
pool or on Ray), then every run audited against the dense run of its seed and aggregated
as the papers report it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..core.errors import SparsebiasError
from .attributes import run_attribute_study
from .findings import findings
from .groups import run_group_study
from .jobs import Job, plan, read_plan, run_sweep
from .runs import DENSE_SPARSITY, Run, collect_runs, level_of, quantize_runs


def run_study(out, identities=None, speed: bool = True, echo=print) -> dict:
    """The study of the finished runs in a sweep folder (plain data): per sparsity for
    attribute tasks, per pruning method for group tasks (class heads).

    >>> study = run_study("runs/ladder", speed=False)  # doctest: +SKIP
    """
    runs = collect_runs(out)
    if not runs[0].bundle.manifest.binary:
        return run_group_study(Path(out), runs, sensitive=identities, echo=echo)
    return run_attribute_study(out, runs, identities=identities, speed=speed, echo=echo)


@dataclass(frozen=True)
class Study:
    """A sweep's study (study.json as data) and the runs that failed to train."""

    document: dict
    failed: list[str] = field(default_factory=list)

    @property
    def findings(self) -> list[dict]:
        """The papers' claims, each with ours and whether it reproduces."""
        return list(self.document["findings"])

    def to_dict(self) -> dict:
        return self.document

    def to_frame(self) -> pd.DataFrame:
        """One row per audited run (attribute tasks: its task, level, seed and the mean of every
        metric), or per run and class head (group tasks: method, seed and FairGRAPE's figures)."""
        runs = self.document["runs"]
        if self.document.get("kind") == "groups":
            rows = [{**_scalars(run), "head": head, **_scalars(figures)}
                    for run in runs for head, figures in run["tasks"].items()]
            return pd.DataFrame.from_records(rows).set_index(["name", "head"])
        return pd.DataFrame.from_records([_scalars(run) for run in runs]).set_index("name")


def _scalars(record: dict) -> dict:
    return {k: v for k, v in record.items() if not isinstance(v, (dict, list))}


def sweep(recipes, out, *, seeds: int = 3, first_seed: int = 0, quick: bool = False, data: str | None = None,
          overrides=None, attributes=None, single=(), joint: bool = True, from_dense: bool = False, identities=None,
          jobs: int = 1, ray_address: str | None = None, gpus_per_run: float | None = None, int8: bool = False,
          speed: bool = True, echo=print, progress=None) -> Study:
    """Run recipes x seeds through compress (finished runs are skipped, interrupted ones
    resumed), then study every finished run against the dense run of its seed. With `int8`,
    every pruned run is also quantized (`quantize`), and its INT8 version studied beside it.

    >>> study = sweep(["recipes/resnet18_dense.yaml", "recipes/resnet18_99.yaml"], "runs/mine", seeds=2)  # doctest: +SKIP
    >>> study.to_frame()                                                                                     # doctest: +SKIP
    """
    if gpus_per_run is not None and not ray_address:
        raise SparsebiasError("--gpus-per-run is for --ray; a local sweep gives each of its --jobs a GPU")
    if gpus_per_run is not None and not 0 <= gpus_per_run < math.inf:   # nan too
        raise SparsebiasError(f"--gpus-per-run must be a finite number of at least 0, got {gpus_per_run}")
    planned = plan([recipes] if isinstance(recipes, (str, Path)) else list(recipes), seeds, single=single or (),
                   joint=joint, quick=quick, data=data, overrides=overrides or {}, from_dense=from_dense,
                   attributes=attributes, first_seed=first_seed)
    failed = run_sweep(planned, out, workers=jobs, ray_address=ray_address, gpus_per_run=gpus_per_run,
                       identities=identities, echo=echo, progress=progress)
    if int8:
        quantize_runs(planned, out, echo=echo)
    return Study(run_study(out, identities=identities, speed=speed, echo=echo), failed)


__all__ = ["DENSE_SPARSITY", "Job", "Run", "Study", "collect_runs", "findings", "level_of", "quantize_runs", "plan", "read_plan", "run_study",
           "run_sweep", "sweep"]
