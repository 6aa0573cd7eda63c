"""`sweep`: many `compress` runs (recipes x seeds x training tasks), restartable, in parallel.

    OUT/bundles/NAME-sSEED[-ATTRIBUTE]/   one bundle per finished run
    OUT/bundles/.work/...                 an interrupted run (resumed on the next sweep)
    OUT/logs/NAME.log                     each run's own output
    OUT/sweep.json                        every job ever planned into OUT: recipe, seed, task, settings

A finished run (a bundle that loads) is skipped, an interrupted one resumed from its
last completed epoch, so running the same sweep again continues where it stopped.
Runs go to a local process pool (`jobs`) or, with `ray_address`, one Ray task each on
an existing cluster; then the study audits them together. Each run trains on the GPU it
is given: with N local GPUs, each of the pool's workers sees one of them (round robin when
jobs > N); a Ray task sees the GPUs it reserved (`gpus_per_run`), and none with 0.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import json
import os
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.errors import SparsebiasError, check_seed, first_line
from ..core.files import JSON_READ_ERRORS, write_json

# --quick: the resnet18 ladder with 2 seeds in 38 minutes on 2 EPYC cores (docs/study_quick). At 32 px
# an epoch costs 0.45 of a 64 px one, so the budget buys 14 epochs, which pruned models need to recover
# (at 64 px it bought 7); the recipes scale their pruning schedule with num_epochs. --data and --set win.
QUICK = {"num_epochs": 14, "image_size": 32, "data": "synthfaces:size=32"}
MAX_RUNS = 10_000   # the paper's study is 5 seeds x 7 sparsities; more is a typo, not a plan


@dataclass(frozen=True)
class Job:
    recipe: str
    seed: int
    name: str
    overrides: dict = field(default_factory=dict)
    attributes: tuple[str, ...] | None = None    # None: joint training on every label
    start_from: str | None = None                # GMP-PT: the run whose bundle this one starts from


def plan(recipes, seeds: int, *, single=(), joint: bool = True, quick: bool = False, data: str | None = None,
         overrides: dict | None = None, from_dense: bool = False, attributes=None, first_seed: int = 0) -> list[Job]:
    """Jobs for every recipe x seed (`seeds` of them from `first_seed`, so one sweep's seeds
    can be trained a few at a time, on several machines), jointly trained (on `attributes`,
    default every label) and/or once per single attribute.

    With `from_dense`, pruning recipes start from the dense run of the same seed and task
    (GMP-PT); the sweep then needs exactly one dense recipe. An override keyed `PATTERN:KEY`
    applies to the recipes whose file name (without suffix) matches PATTERN, and wins over
    the unscoped ones: one sweep can give GMP-PT recipes another schedule than the dense run.
    """
    from ..recipes.recipe import RUN_DEFAULTS, load_recipe

    paths = _expand(recipes)
    if seeds < 1:
        raise SparsebiasError(f"--seeds must be at least 1, got {seeds}")
    check_seed(first_seed, "--first-seed")
    check_seed(first_seed + seeds - 1, "the last seed (--first-seed + --seeds - 1)")
    if not joint and not single:
        raise SparsebiasError("nothing to run: joint training is off and no single attribute is given")
    recipes = {path: load_recipe(path) for path in paths}
    dense = [path for path, r in recipes.items() if not r.pruning_modifiers]
    if from_dense and len(dense) != 1:
        raise SparsebiasError(f"--from-dense needs exactly one dense recipe among the recipes, found {len(dense)}")
    overrides, scoped = _split_scoped(overrides or {}, recipes, RUN_DEFAULTS)
    unused = [k for k in overrides if k not in RUN_DEFAULTS and not any(k in r.variables for r in recipes.values())]
    if unused:
        raise SparsebiasError(f"--set {unused[0]}: no recipe of the sweep has this variable")
    overrides = {**(QUICK if quick else {}), **overrides, **({"data": data} if data else {})}
    tasks = ([None] if joint else []) + [(a,) for a in single]
    if len(recipes) * seeds * len(tasks) > MAX_RUNS:
        raise SparsebiasError(f"{len(recipes)} recipe(s) x {seeds} seed(s) x {len(tasks)} task(s) is more than "
                              f"{MAX_RUNS:,} runs; split the sweep (--first-seed)")
    jobs = []
    for path, recipe in recipes.items():
        # a setting applies where the recipe has it: a dense recipe has no pruning schedule
        settings = {k: v for k, v in overrides.items() if k in RUN_DEFAULTS or k in recipe.variables}
        settings.update(scoped.get(path, {}))
        for seed in range(first_seed, first_seed + seeds):
            for task in tasks:
                start = _name(dense[0], seed, task) if from_dense and path not in dense else None
                trained = task or (tuple(attributes) if attributes else None)
                jobs.append(Job(str(path.resolve()), seed, _name(path, seed, task), settings, trained, start))
    return sorted(jobs, key=lambda j: j.start_from is not None)  # the runs others start from go first


def _split_scoped(overrides: dict, recipes: dict, run_settings) -> tuple[dict, dict]:
    """The overrides for every recipe, and {recipe path: its settings} from those keyed
    PATTERN:KEY; each pattern must name a recipe of the sweep, and each key be a variable (or
    run setting) of every recipe it names."""
    everywhere, scoped = {}, {}
    for scoped_key, value in overrides.items():
        if ":" not in scoped_key:
            everywhere[scoped_key] = value
            continue
        pattern, _, key = (part.strip() for part in scoped_key.partition(":"))
        named = [path for path in recipes if fnmatch.fnmatchcase(path.stem, pattern)]
        if not named:
            raise SparsebiasError(f"--set {scoped_key}: no recipe of the sweep is named {pattern!r} "
                                  f"(the sweep's: {', '.join(sorted({p.stem for p in recipes}))})")
        lacking = [path for path in named if key not in run_settings and key not in recipes[path].variables]
        if lacking:
            raise SparsebiasError(f"--set {scoped_key}: {lacking[0].name} has no variable {key!r}")
        for path in named:
            scoped.setdefault(path, {})[key] = value
    return everywhere, scoped


def _name(path: Path, seed: int, task) -> str:
    return f"{path.stem}-s{seed}" + (f"-{task[0]}" if task else "")


def _expand(recipes) -> list[Path]:
    paths = []
    for pattern in recipes:
        matches = sorted(glob.glob(str(pattern)))
        if not matches:
            raise SparsebiasError(f"no recipe matches {pattern!r}")
        paths += [Path(m) for m in matches if Path(m).suffix in (".yaml", ".yml", ".md")]
    return list(dict.fromkeys(paths))


def state(job: Job, out: Path) -> str:
    """'done' (a bundle that loads), 'interrupted' (work left to resume) or 'new'."""
    from ..bundle.format import load_bundle

    bundle = out / "bundles" / job.name
    if (bundle / "manifest.json").is_file():
        try:
            load_bundle(bundle)
            return "done"
        except SparsebiasError:
            pass
    return "interrupted" if (out / "bundles" / ".work" / job.name / "run.json").is_file() else "new"


def run_job(job: Job, out: str, threads: int | None = None) -> str:
    """One compress run on this process's GPU if it sees one, its output in OUT/logs/NAME.log;
    returns the bundle's path."""
    import torch

    from ..training.pipeline import compress

    out = Path(out)
    if threads:
        torch.set_num_threads(threads)
    log_path = out / "logs" / f"{job.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    resume = state(job, out) == "interrupted"
    with open(log_path, "a") as log:
        def echo(*parts, **_):
            print(*parts, file=log, flush=True)
        start = out / "bundles" / job.start_from if job.start_from else None
        bundle = compress(job.recipe, overrides=dict(job.overrides), attributes=list(job.attributes or []) or None,
                          name=job.name, out_dir=out / "bundles", seed=job.seed, resume=resume, echo=echo,
                          from_path=start)
    return str(bundle.path)


def run_sweep(jobs: list[Job], out, *, workers: int = 1, ray_address: str | None = None,
              gpus_per_run: float | None = None, identities=None, echo=print, progress=None) -> list[str]:
    """Run every job that is not done; returns the names of the runs that failed (logged).

    `gpus_per_run`: what each Ray task reserves (default 1 where the cluster has GPUs, else 0);
    `identities`, those the study will audit, are checked against the data with the labels first."""
    out = Path(out)
    states = [state(j, out) for j in jobs]  # each check verifies a bundle's hashes: once per job
    _check_same_settings([j for j, s in zip(jobs, states) if s != "new"], out)
    pending = [j for j, s in zip(jobs, states) if s != "done"]
    _check_names(pending, identities, local=not ray_address)
    out.mkdir(parents=True, exist_ok=True)
    _write_plan(jobs, out)
    echo(f"{len(jobs)} run(s): {len(jobs) - len(pending)} done, {states.count('interrupted')} to resume, "
         f"{states.count('new')} new")
    if not pending:
        return []
    if ray_address:
        return _drive(pending, _on_ray(out, ray_address, gpus_per_run, echo), out, echo, progress)
    if workers == 1:
        return _drive(pending, lambda jobs: ((job, functools.partial(run_job, job, str(out))) for job in jobs),
                      out, echo, progress)
    with _pool(workers) as pool:
        return _drive(pending, _in_pool(pool, out, max(1, (os.cpu_count() or 1) // workers)), out, echo, progress)


def _check_same_settings(started: list[Job], out: Path) -> None:
    """Refuse a sweep that asks for a run OUT already holds, trained or begun, with other
    settings (`--quick` into a full sweep's folder, another `--set`): it would be counted as
    done, or fail to resume, and the study would mix budgets under one name."""
    if not started or not (out / "sweep.json").is_file():
        return
    recorded = {j.name: j for j in read_plan(out)}
    for job in started:
        before = recorded.get(job.name)
        if before is None:
            continue
        for what, old, new, shown in (
                ("settings", before.overrides, job.overrides,
                 lambda v: ", ".join(f"{k}={v[k]}" for k in sorted(v)) or "the recipe's defaults"),
                ("attributes", before.attributes, job.attributes, lambda v: ",".join(v or ["every label"])),
                ("start", before.start_from, job.start_from, lambda v: v or "random initialisation")):
            if old != new:
                raise SparsebiasError(f"{out}: run {job.name} was planned there with {what} {shown(old)}; "
                                      f"this sweep asks for {shown(new)} (sweep into another --out)")


def _check_names(jobs: list[Job], identities=None, local: bool = True) -> None:
    """Refuse, before anything trains, labels and identities the jobs' data do not have: else a
    run fails after the others trained, or the study after all of them. Not `local` (Ray), data
    this machine cannot open are left to the cluster's runs."""
    from ..data import open_data
    from ..recipes.recipe import load_recipe

    by_data: dict[str, list[Job]] = {}
    for job in jobs:
        spec = job.overrides.get("data") or load_recipe(job.recipe, job.overrides).settings["data"]
        by_data.setdefault(spec, []).append(job)
    for spec, mine in by_data.items():
        try:
            table = open_data(spec, echo=lambda *_, **__: None)
        except SparsebiasError:
            if local:
                raise
            continue
        labels = list(table.names) + (["backdoor"] if table.backdoor is not None else [])
        for name, what in [*((a, "attribute") for job in mine for a in job.attributes or ()),
                           *((i, "identity") for i in identities or ())]:
            if name not in labels:
                raise SparsebiasError(f"{what} {name!r} is not a label of the data ({spec}); its labels: "
                                      + ", ".join(labels))


def _drive(pending: list[Job], results, out: Path, echo, progress) -> list[str]:
    """The one loop over runs, wherever they execute: `results(jobs)` yields (job, outcome) as
    runs finish, `outcome()` returning the bundle path or raising what the run raised. GMP-PT
    runs wait, phase by phase, for the dense runs they start from; a failed run is logged
    and the sweep goes on."""
    failed, done = [], 0
    for phase in _phases(pending):
        for job, outcome in results(_runnable(phase, failed, echo)):
            failed += _attempt(outcome, job, out, echo)
            done += 1
            if progress:
                progress(done, len(pending), job.name)
    return failed


def _in_pool(pool: ProcessPoolExecutor, out: Path, threads: int):
    def results(jobs):
        futures = {pool.submit(run_job, job, str(out), threads): job for job in jobs}
        return ((futures[f], f.result) for f in as_completed(futures))
    return results


def _pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes, each seeing one of this machine's GPUs (round robin), or none."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    gpus = _local_gpus()
    slots = context.Queue()
    for worker in range(workers):
        slots.put(str(worker % gpus) if gpus else "")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_take_gpu, initargs=(slots,))


def _local_gpus() -> int:
    """GPUs this machine shows (NVML, no CUDA context is made here), 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _take_gpu(slots) -> None:
    """Pool worker start: see only the GPU of this slot (none on a CPU machine), before torch starts CUDA."""
    gpu = slots.get()
    if gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def _runnable(jobs: list[Job], failed: list[str], echo) -> list[Job]:
    """Jobs whose starting run did not fail; the others are counted as failed."""
    out = []
    for job in jobs:
        if job.start_from in failed:
            failed.append(job.name)
            echo(f"skipped: {job.name}: the run it starts from, {job.start_from}, failed")
        else:
            out.append(job)
    return out


def _phases(jobs: list[Job]) -> list[list[Job]]:
    first = [j for j in jobs if not j.start_from]
    return [first, [j for j in jobs if j.start_from]] if len(first) < len(jobs) else [first]


def _attempt(call, job, out, echo) -> list[str]:
    try:
        call()
        echo(f"done: {job.name}")
        return []
    except SparsebiasError as e:
        echo(f"failed: {job.name}: {e}")
    except Exception as e:  # a crashed run is reported and the sweep goes on; its log has the rest
        echo(f"failed: {job.name}: {type(e).__name__}: {e} (see {out / 'logs' / (job.name + '.log')})")
    return [job.name]


def _on_ray(out: Path, address: str, gpus_per_run: float | None, echo):
    """One Ray task per run on an existing cluster; OUT must be on storage every node sees."""
    try:
        import ray
    except ImportError:
        raise SparsebiasError("--ray needs Ray: pip install 'sparsebias[ray]'") from None
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except Exception as e:
        raise SparsebiasError(f"cannot connect to the Ray cluster at {address}: {e}") from None
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    gpus = (1 if cluster_gpus >= 1 else 0) if gpus_per_run is None else gpus_per_run
    if gpus > cluster_gpus:
        raise SparsebiasError(f"--gpus-per-run {gpus}: the Ray cluster at {address} has {cluster_gpus:g} GPU(s)")
    # Ray sets CUDA_VISIBLE_DEVICES to the GPUs a task reserved (empty for none): compress sees only those
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=1)(run_job)

    def results(jobs):
        refs = {task.remote(job, str(out.resolve())): job for job in jobs}
        echo(f"submitted {len(refs)} run(s) to Ray at {address}" + (f" ({gpus:g} GPU each)" if gpus else ""))
        remaining = list(refs)
        while remaining:
            ready, remaining = ray.wait(remaining, num_returns=1)
            yield refs[ready[0]], functools.partial(ray.get, ready[0])
    return results


def _write_plan(jobs, out: Path) -> None:
    """Add the jobs to OUT/sweep.json: sweeps into one folder add up (e.g. joint, then single-attribute runs)."""
    known = {j.name: j for j in read_plan(out)} if (out / "sweep.json").is_file() else {}
    known.update({j.name: j for j in jobs})
    write_json(out / "sweep.json", {"jobs": [asdict(j) for j in known.values()]})


def read_plan(out) -> list[Job]:
    path = Path(out) / "sweep.json"
    if not path.is_file():
        raise SparsebiasError(f"no sweep in {out} (no sweep.json)")
    try:
        jobs = [Job(str(j["recipe"]), int(j["seed"]), _checked_name(j["name"]), dict(j["overrides"]),
                    tuple(j["attributes"]) if j["attributes"] else None, j.get("start_from"))
                for j in json.loads(path.read_text())["jobs"]]
    except (*JSON_READ_ERRORS, KeyError, TypeError, ValueError) as e:
        raise SparsebiasError(f"{path}: not a sweep plan sparsebias wrote ({first_line(e)})") from None
    return jobs


def _checked_name(name) -> str:
    """A run's name is a folder under OUT/bundles: a plain name, never a path."""
    if not isinstance(name, str) or not name or name.startswith(".") or re.search(r"[/\\\x00]", name):
        raise ValueError(f"run name {name!r}")
    return name
