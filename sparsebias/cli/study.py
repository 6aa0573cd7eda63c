"""sweep: recipes x seeds through compress, every run audited, and the study written."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import names, progress_bar


@click.command()
@click.option("--recipes", "recipes", multiple=True, required=True,
              help="Recipe files or glob patterns (quote them); repeatable.")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1),
              help="Seeds per recipe: FIRST..FIRST+N-1.")
@click.option("--first-seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="The first seed, to train a sweep's seeds into one folder a few at a time (or on other machines).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="The sweep's folder.")
@click.option("--quick", is_flag=True,
              help="14 epochs at 32 px instead of 16 at 64 (the recipes' schedules scale with them): "
                   "the resnet18 ladder with 2 seeds took 38 min on 2 cores (docs/study_quick).")
@click.option("--data", default=None, help="Data set for every run (as compress --data).")
@click.option("--set", "overrides", multiple=True, metavar="[RECIPE:]KEY=VALUE",
              help="Override a setting for every run, or with RECIPE (a file name pattern such as "
                   "'resnet18_pt_*') for that recipe's runs.")
@click.option("--attributes", default=None,
              help="Labels of the joint runs (comma-separated; default every label), e.g. gender,race.")
@click.option("--single", default=None, help="Also train each of these attributes alone (comma-separated).")
@click.option("--no-joint", is_flag=True, help="Skip joint training (with --single: single-attribute runs only).")
@click.option("--from-dense", is_flag=True, help="Start pruning recipes from the dense run of their seed (GMP-PT).")
@click.option("--identity", "identities", default=None,
              help="Identities to audit (comma-separated; 'backdoor' for a backdoored data set).")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="Runs in parallel here; with GPUs, each run gets one (round robin).")
@click.option("--ray", "ray_address", default=None, help="Run each job as a task on this Ray cluster ('auto', host:port).")
@click.option("--gpus-per-run", default=None, type=click.FloatRange(min=0),
              help="GPUs each Ray task reserves and trains on (default: 1 if the cluster has GPUs, else 0).")
@click.option("--int8", is_flag=True, help="Also quantize every pruned run to INT8 and study it beside its FP32 run.")
@click.option("--no-speed", is_flag=True, help="Skip the items/s measurements of the study.")
def sweep(recipes, seeds, first_seed, out_dir, quick, data, overrides, attributes, single, no_joint, from_dense,
          identities, jobs, ray_address, gpus_per_run, int8, no_speed):
    """Run recipes x seeds through compress (restartable), audit every run, and write the study.

    Finished runs are skipped and interrupted ones resumed, so the same command continues
    a sweep. The study (OUT/study/study.md, PNG figures) is rebuilt from all finished runs;
    per-run audit reports are in OUT/audits/. Exit status 1 when a run failed.

    \b
    Example:
      sparsebias sweep --recipes 'recipes/resnet18_[0-9d]*.yaml' --seeds 2 --quick --out runs/ladder
      sparsebias sweep --recipes recipes/resnet18_dense.yaml --recipes recipes/resnet18_99.yaml \\
          --single Smiling,Big_Nose --no-joint --seeds 2 --out runs/single
      sparsebias sweep --recipes 'recipes/groups/*.yaml' --attributes gender,race --seeds 1 --out runs/groups
      sparsebias sweep --recipes 'recipes/resnet18_[0-9d]*.yaml' --seeds 2 --quick --int8 --out runs/ladder
    """
    from tqdm import tqdm

    from ..recipes import parse_overrides
    from ..report import write_study
    from ..study import sweep as run

    bar, progress = progress_bar(unit="run")
    with bar:
        study = run(recipes, out_dir, seeds=seeds, first_seed=first_seed, quick=quick, data=data,
                    overrides=parse_overrides(overrides),
                    attributes=names(attributes), single=names(single), joint=not no_joint, from_dense=from_dense,
                    identities=names(identities), jobs=jobs, ray_address=ray_address, gpus_per_run=gpus_per_run,
                    int8=int8, speed=not no_speed, echo=tqdm.write, progress=progress)
    written = write_study(study, Path(out_dir) / "study")
    click.echo(f"study of {len(study.document['runs'])} run(s): {written[-1]}")
    if study.failed:
        click.echo(f"error: {len(study.failed)} run(s) failed: {', '.join(study.failed)} (logs in {out_dir}/logs)",
                   err=True)
        sys.exit(1)
