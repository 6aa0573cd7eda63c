"""Throughput and latency of models on engines, measured in one run so ratios are fair.

Absolute times on shared machines drift from run to run; what carries over is the
ratio of two figures measured side by side. So every run measures the reference
(a dense bundle given with `reference`, else the model itself on onnxruntime, which
does not exploit sparsity) in the same process, and reports speedups against it.
The load of a shared machine also drifts within a run, so the measuring time is cut
into rounds that visit every model, engine and batch size in turn (engines stay
compiled), and a speedup is the median of its per-round ratios, reported with their
range.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..bundle.flops import count_flops
from ..core.errors import SparsebiasError
from ..core.tolerance import logit_tolerance
from .base import Engine, EngineUnavailable, ModelSource, open_model, physical_cores
from .registry import AVAILABLE, load_engine, parse_engines, require_engine

BASELINE_ENGINE = "onnxruntime"
MAX_SECONDS = 86_400   # a day per measurement: more is a typo (1e308, inf), and would never return
MAX_ROUNDS = 1_000     # each round times every job at least a few times


@dataclass
class Settings:
    engines: list[str]
    batch_sizes: list[int]
    cores: int = field(default_factory=physical_cores)
    warmup_s: float = 2.0
    duration_s: float = 10.0
    seed: int = 0
    profile: bool = False   # also record DeepSparse's per-layer timings at the largest batch
    rounds: int = 3         # duration_s is shared among this many interleaved rounds
    skip_unfit: bool = False  # 'available': leave out an engine that cannot run a model, not fail


def measure(engine: Engine, warmup_s: float, duration_s: float, seed: int = 0, min_iterations: int = 5) -> dict:
    """Time `run_batch` on one fixed random batch, after warming up, as DeepSparse's benchmark does."""
    return summarize(time_batches(engine, warmup_s, duration_s, seed, min_iterations), engine.batch_size)


def time_batches(engine: Engine, warmup_s: float, duration_s: float, seed: int = 0,
                 min_iterations: int = 5) -> np.ndarray:
    """Seconds per `run_batch` call, after at least one untimed call and `warmup_s` of them."""
    shape = (engine.batch_size, *engine.model.input_shape)
    batch = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    deadline = time.perf_counter() + warmup_s
    engine.run_batch(batch)
    while time.perf_counter() < deadline:
        engine.run_batch(batch)
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < duration_s or len(times) < min_iterations:
        t0 = time.perf_counter()
        engine.run_batch(batch)
        times.append(time.perf_counter() - t0)
    return np.array(times)


def summarize(times: np.ndarray, batch_size: int) -> dict:
    """items/s (batch over mean latency) and latency percentiles of timed batches."""
    ms = np.asarray(times) * 1e3
    return {"items_per_second": batch_size * len(ms) / (float(np.sum(ms)) / 1e3), "iterations": len(ms),
            "latency_ms": {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)),
                           "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99))}}


def agreement_inputs(model: ModelSource, seed: int = 0) -> np.ndarray:
    """The bundle's check batch (real images, as exported), or seeded noise for a bare ONNX file."""
    if model.bundle is not None and model.bundle.has("check.npz"):
        with np.load(model.bundle.file("check.npz"), allow_pickle=False) as z:
            return z["inputs"]
    return np.random.default_rng(seed).standard_normal((8, *model.input_shape), dtype=np.float32)


@dataclass(frozen=True)
class BenchReport:
    """Items/s and latency per model, engine and batch size, with speedups read in the same run."""

    document: dict

    @property
    def disagreements(self) -> list[dict]:
        """Engines whose outputs differ from onnxruntime's beyond their tolerance, per model."""
        return [a for a in self.document["agreement"] if not a["agrees"]]

    @property
    def skipped_engines(self) -> dict[str, str]:
        """Engines `available` left out, each with the reason it cannot run a model given."""
        return self.document.get("skipped_engines", {})

    @property
    def fallbacks(self) -> list[dict]:
        """DeepSparse measurements of graphs it ran only in part (the rest on its bundled onnxruntime)."""
        return [r for r in self.document["results"] if r.get("supported_share", 1.0) < 1.0]

    def to_dict(self) -> dict:
        return self.document

    def to_frame(self) -> pd.DataFrame:
        """One row per model, engine and batch size."""
        rows = [{"model": r["model"], "engine": r["engine"], "batch_size": r["batch_size"],
                 "reference": r["reference"], "items_per_second": r["items_per_second"],
                 **{f"latency_ms_{k}": v for k, v in r["latency_ms"].items()},
                 "speedup_vs_onnxruntime": r["speedup_vs_onnxruntime"],
                 "speedup_vs_onnxruntime_range": r["speedup_vs_onnxruntime_range"],
                 "speedup_same_engine": r["speedup_same_engine"],
                 "supported_share": r.get("supported_share")} for r in self.document["results"]]
        return pd.DataFrame.from_records(rows).set_index(["model", "engine", "batch_size"])


def bench(models, *, engines=("auto", BASELINE_ENGINE), batch_sizes=(1, 16), cores: int | None = None,
          reference=None, warmup_s: float = 2.0, duration_s: float = 10.0, rounds: int = 3, profile: bool = False,
          progress=None) -> BenchReport:
    """Measure bundles (or ONNX files) on engines ('auto': DeepSparse where installed, else
    onnxruntime; 'available': every engine that runs here), against `reference` if given.

    >>> bench(["exported/resnet18_99"], reference="exported/resnet18_dense").to_frame()  # doctest: +SKIP
    """
    text = ",".join(engines) if not isinstance(engines, str) else engines
    settings = Settings(engines=parse_engines(text),
                        batch_sizes=[batch_sizes] if isinstance(batch_sizes, int) else list(batch_sizes),
                        cores=cores or physical_cores(), warmup_s=warmup_s, duration_s=duration_s, profile=profile,
                        rounds=rounds, skip_unfit=text.strip() == AVAILABLE)
    paths = [models] if isinstance(models, (str, Path)) or hasattr(models, "manifest") else list(models)
    return BenchReport(run_bench(paths, settings, reference=reference, progress=progress))


def run_bench(paths, settings: Settings, reference=None, progress=None) -> dict:
    """Measure every model (and the reference) on every engine and batch size; see module docstring."""
    engines = list(settings.engines)
    if BASELINE_ENGINE not in engines:
        engines.append(BASELINE_ENGINE)  # the dense-equivalent baseline every speedup is read against
    if not settings.batch_sizes or min(settings.batch_sizes) < 1:
        raise SparsebiasError(f"batch sizes must be at least 1, got {settings.batch_sizes}")
    if not 1 <= settings.rounds <= MAX_ROUNDS:
        raise SparsebiasError(f"rounds must be 1 to {MAX_ROUNDS}, got {settings.rounds}")
    for what, seconds, least in (("warm-up", settings.warmup_s, 0.0), ("duration", settings.duration_s, 0.1)):
        if not least <= seconds <= MAX_SECONDS:   # nan too
            raise SparsebiasError(f"{what} must be {least:g} to {MAX_SECONDS:,} seconds, got {seconds!r}")
    models = [open_model(p) for p in paths]
    ref_model = open_model(reference) if reference else None
    every = models + ([ref_model] if ref_model else [])
    names = [m.name for m in every]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SparsebiasError(f"two models are named {twice[0]!r}: give each model (and the reference) once")
    skipped = {}
    for model in every:  # refuse now, not after minutes of measuring
        for batch_size in settings.batch_sizes:
            model.check_batch(batch_size)
        for name in engines:
            reason = require_engine(name).cannot_load(model)
            if reason and settings.skip_unfit and name != BASELINE_ENGINE:
                skipped.setdefault(name, reason)
            elif reason:
                raise EngineUnavailable(f"{name}: {reason}")
    engines = [name for name in engines if name not in skipped]

    jobs = [(m, e, b) for m in every for e in engines for b in settings.batch_sizes]
    loaded, agreement, baseline_logits = [], [], {}
    steps, step = len(jobs) * (settings.rounds + 1), 0
    for model, engine_name, batch_size in jobs:
        if progress:
            progress(step, steps, f"compiling {model.name} on {engine_name}, batch {batch_size}")
        step += 1
        engine = load_engine(engine_name, model, batch_size, settings.cores)
        if not any(a["model"] == model.name and a["engine"] == engine_name for a in agreement):
            inputs = agreement_inputs(model, settings.seed)
            if model.onnx_path not in baseline_logits:
                baseline_logits[model.onnx_path] = load_engine(BASELINE_ENGINE, model, len(inputs),
                                                               settings.cores).predict(inputs)
            baseline = baseline_logits[model.onnx_path]
            diff = float(np.abs(engine.predict(inputs) - baseline).max())
            agreement.append({"model": model.name, "engine": engine_name, "vs": BASELINE_ENGINE,
                              "inputs": len(inputs), "max_abs_diff": diff,
                              "agrees": diff <= logit_tolerance(engine.tolerance, baseline)})
        loaded.append(engine)
    times = [[] for _ in jobs]
    for round_ in range(settings.rounds):
        for i, (model, engine_name, batch_size) in enumerate(jobs):
            if progress:
                progress(step, steps, f"round {round_ + 1}/{settings.rounds}: {model.name} {engine_name} "
                                      f"batch {batch_size}")
            step += 1
            times[i].append(time_batches(loaded[i], settings.warmup_s if round_ == 0 else 0.0,
                                         settings.duration_s / settings.rounds, settings.seed))
    results = []
    for (model, engine_name, batch_size), engine, timed in zip(jobs, loaded, times):
        results.append({"model": model.name, "engine": engine_name, "batch_size": batch_size,
                        "reference": model is ref_model, **summarize(np.concatenate(timed), batch_size),
                        "rounds_items_per_second": [summarize(t, batch_size)["items_per_second"] for t in timed],
                        **engine.describe()})
    del loaded
    if progress:
        progress(steps, steps, "done")
    _add_speedups(results, ref_model.name if ref_model else None)
    profile = {m.name: profile_deepsparse(m, max(settings.batch_sizes), settings.cores)
               for m in every} if settings.profile and "deepsparse" in engines else {}
    return {"machine": machine(), "settings": {**vars(settings), "engines": engines}, "skipped_engines": skipped,
            "reference": ref_model.name if ref_model else None,
            "speedup_definition": _speedup_definition(ref_model is not None),
            "models": [describe_model(m, reference=m is ref_model) for m in every],
            "agreement": agreement, "results": results, "profile": profile}


def _add_speedups(results: list[dict], reference: str | None) -> None:
    """Median over rounds of each round's ratio, with the rounds' range."""
    rounds = {(r["model"], r["engine"], r["batch_size"]): np.array(r["rounds_items_per_second"]) for r in results}
    for r in results:
        own = rounds[(r["model"], r["engine"], r["batch_size"])]
        base = own / rounds[(reference or r["model"], BASELINE_ENGINE, r["batch_size"])]
        r["speedup_vs_onnxruntime"] = float(np.median(base))
        r["speedup_vs_onnxruntime_range"] = [float(base.min()), float(base.max())]
        same = own / rounds[(reference, r["engine"], r["batch_size"])] if reference else None
        r["speedup_same_engine"] = float(np.median(same)) if reference else None


def _speedup_definition(with_reference: bool) -> dict:
    if with_reference:
        return {"speedup_vs_onnxruntime": "items/s over the reference on onnxruntime (CPU, dense), same batch; "
                                          "median of the rounds' ratios",
                "speedup_same_engine": "items/s over the reference on the same engine, same batch; median of the "
                                       "rounds' ratios"}
    return {"speedup_vs_onnxruntime": "items/s over the same model on onnxruntime (CPU, which runs it dense), "
                                      "same batch; median of the rounds' ratios"}


def describe_model(model: ModelSource, reference: bool = False) -> dict:
    flops = count_flops(model.onnx_path).to_dict(per_layer=False)
    out = {"name": model.name, "path": str(model.bundle.path if model.bundle else model.onnx_path),
           "reference": reference, "input_shape": list(model.input_shape),
           "weight_sparsity": flops["weight_sparsity"], "flops": flops}
    if model.bundle is not None:
        out["architecture"] = model.bundle.manifest.architecture
    return out


def machine() -> dict:
    """What the numbers were measured on."""
    import onnxruntime

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": onnxruntime.__version__}
    for module in ("deepsparse", "torch"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # a back end that is absent or broken is simply not listed
            pass
    import os
    out = {"cpu": cpu, "logical_cpus": os.cpu_count(), "physical_cores": physical_cores(),
           "platform": platform.platform(), "versions": versions,
           "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if "torch" in versions:
        import torch

        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name()
    return out


def profile_deepsparse(model: ModelSource, batch_size: int, cores: int, iterations: int = 20) -> list[dict]:
    """DeepSparse's own per-layer timings: where the time goes, and which layers ran sparse."""
    require_engine("deepsparse")
    from deepsparse import model_debug_analysis

    batch = np.random.default_rng(0).standard_normal((batch_size, *model.input_shape), dtype=np.float32)
    analysis = model_debug_analysis(str(model.onnx_path), [batch], batch_size=batch_size, num_cores=cores,
                                    num_iterations=iterations, num_warmup_iterations=5)
    total = sum(layer["average_run_time_in_ms"] for layer in analysis["layer_info"]) or 1.0
    return [{"layer": layer["name"], "outputs": layer["canonical_name"],
             "ms": layer["average_run_time_in_ms"], "share": layer["average_run_time_in_ms"] / total,
             "kernel_sparsity": layer["kernel_sparsity"], "gflops_per_batch": layer["required_flops"] / 1e9}
            for layer in analysis["layer_info"]]
