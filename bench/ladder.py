"""The sparsity ladder: items/s of resnet18 and mobilenet_v2 from dense to 99.5% and 2:4, on every engine.

    python bench/ladder.py                      # full ladder, both input sizes (about 25 minutes on 2 cores)
    python bench/ladder.py --arch resnet18 --size 64 --duration 2

For each architecture and input size (the paper's 224 and SynthFaces' 64) it measures
dense, 80, 90, 95, 98, 99, 99.5% and 2:4 models on every engine available here, in one
run, against the dense model as reference. A trained bundle in exported/ is used when
one exists for that rung (e.g. exported/resnet18_99 at 64 px); otherwise the rung is a
random-init model pruned layer by layer by magnitude (first conv and classifier kept
dense, as the recipes do), its BatchNorm statistics then re-estimated on random images
so activations keep unit scale: globally pruned random weights can shrink activations
to denormals and slow every engine (see shared ENVIRONMENT.md). Speed does not depend
on what was learned.

Writes bench/results/ladder.{json,md,png}: the paper's Table 1 layout per architecture
and size, the issue's targets with what was measured, DeepSparse's per-layer profile
of resnet18 at 90%, and a cross-check of our items/s against `deepsparse.benchmark`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sparsebias.bundle import BundleWriter, load_bundle
from sparsebias.bundle.export import export_onnx
from sparsebias.bundle.flops import count_flops
from sparsebias.core import write_atomic, write_json
from sparsebias.core.files import markdown_table, save_figure
from sparsebias.data.images import MEAN, STD
from sparsebias.engines import available_engines, open_model, physical_cores
from sparsebias.engines.benchmark import Settings, machine, profile_deepsparse, run_bench
from sparsebias.training.checkpoint import save_checkpoint
from sparsebias.training.models import build_model, sparsity_report

RUNGS = ["dense", "80", "90", "95", "98", "99", "99_5", "nm_2_4"]
LABEL = {"dense": "Dense", "99_5": "99.5", "nm_2_4": "2:4"}
BATCH = {224: 16, 64: 64}
ATTRIBUTES = 40
ROOT = Path(__file__).resolve().parents[1]


def sparsity_of(rung: str) -> float:
    return {"dense": 0.0, "nm_2_4": 0.5}[rung] if rung in ("dense", "nm_2_4") else float(rung.replace("_", ".")) / 100


def prune_layerwise(model: torch.nn.Module, rung: str) -> None:
    """Zero the smallest weights of every conv and linear layer but the first conv and the classifier."""
    from sparsebias.pruning import nm_masks

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))][1:-1]
    with torch.no_grad():
        for layer in layers:
            w = layer.weight
            if rung == "nm_2_4":
                if isinstance(layer, torch.nn.Conv2d) and layer.groups > 1:
                    continue  # depthwise: one input channel per group, nothing to group by 4
                mask = nm_masks(w, 2, 4)
            else:
                k = int(round(sparsity_of(rung) * w.numel()))
                if k == 0:
                    continue
                threshold = w.abs().flatten().kthvalue(k).values
                mask = (w.abs() > threshold).float()
            w.mul_(mask)


def calibrate_batchnorm(model: torch.nn.Module, size: int) -> None:
    """Re-estimate BatchNorm statistics on random images so activations keep unit scale after pruning."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(16, 3, size, size))
    model.eval()


def synthetic_bundle(arch: str, size: int, rung: str, folder: Path) -> Path:
    """A minimal bundle (model.onnx, model.pt, manifest) of a layer-wise pruned random model; cached."""
    path = folder / f"{arch}_{size}_{rung}"
    if path.is_dir():
        return path
    torch.manual_seed(0)
    model = build_model(arch, ATTRIBUTES).eval()
    prune_layerwise(model, rung)
    calibrate_batchnorm(model, size)
    overall, per_layer = sparsity_report(model)
    with BundleWriter(path) as bundle:
        check = torch.randn(8, 3, size, size)
        export = export_onnx(model, bundle.file("model.onnx"), check)
        save_checkpoint(bundle.file("model.pt"), {"state_dict": model.state_dict()})
        np.savez_compressed(bundle.file("check.npz"), inputs=check.numpy(), logits=model(check).detach().numpy())
        names = [f"a{i}" for i in range(ATTRIBUTES)]
        bundle.commit({"name": path.name, "architecture": arch, "attributes": names, "label_names": names,
                       "identities": [], "export": export, "metrics": {},
                       "input": {"name": export["input"], "shape": [None, 3, size, size], "layout": "NCHW",
                                 "dtype": "float32", "mean": list(MEAN), "std": list(STD)},
                       "output": {"name": export["output"], "activation": "sigmoid", "threshold": 0.5},
                       "synthetic": "random init, layer-wise magnitude pruning, BatchNorm re-estimated",
                       "data": {"spec": "none (never trained)"}, "recipe": {"source": "none (synthetic)"},
                       "training": {"seed": 0, "epochs": 0, "best_epoch": 0, "seconds": 0},
                       "sparsity": {"overall": overall, "per_layer": per_layer},
                       "flops": count_flops(bundle.file("model.onnx")).to_dict(per_layer=False)})
    return path


def rung_model(arch: str, size: int, rung: str, folder: Path) -> tuple[Path, str]:
    """A trained bundle from exported/ when one exists at this size, else a synthetic one."""
    trained = ROOT / "exported" / f"{arch}_{rung}"
    if (trained / "manifest.json").is_file():
        bundle = load_bundle(trained)
        if bundle.manifest["input"]["shape"][-1] == size:
            return trained, "trained"
    return synthetic_bundle(arch, size, rung, folder), "synthetic"


def deepsparse_benchmark(onnx_path: Path, batch: int, cores: int, seconds: int) -> float:
    """items/s from DeepSparse's own CLI, synchronous scenario (one stream, as our engine runs)."""
    exe = Path(sys.executable).with_name("deepsparse.benchmark")
    out = subprocess.run([str(exe), str(onnx_path), "-b", str(batch), "-ncores", str(cores), "-s", "sync",
                          "-t", str(seconds), "-w", "2"], capture_output=True, text=True, check=True,
                         env={"NM_DISABLE_ANALYTICS": "1", "PATH": "/usr/bin:/bin"})
    return float(re.search(r"Throughput \(items/sec\):\s*([\d.]+)", out.stdout + out.stderr).group(1))


def run_group(arch, size, batch, engines, cores, warmup, duration, folder, echo) -> dict:
    models = {rung: rung_model(arch, size, rung, folder) for rung in RUNGS}
    echo(f"{arch} at {size}px, batch {batch}: " +
         ", ".join(f"{r} ({kind})" for r, (_, kind) in models.items()))
    settings = Settings(engines=engines, batch_sizes=[batch], cores=cores, warmup_s=warmup, duration_s=duration)
    started = time.time()
    report = run_bench([models[r][0] for r in RUNGS[1:]], settings, reference=models["dense"][0],
                       progress=lambda i, n, what: echo(f"  [{i}/{n}] {what}") if i < n else None)
    echo(f"  done in {time.time() - started:.0f} s")
    names = {open_model(models[r][0]).name: r for r in RUNGS}
    for entry in (*report["models"], *report["results"], *report["agreement"]):
        key = "name" if "name" in entry else "model"
        entry["rung"] = names[entry[key]]
    report["kinds"] = {r: kind for r, (_, kind) in models.items()}
    report["paths"] = {r: str(p) for r, (p, _) in models.items()}
    return report


def table1(group: dict) -> str:
    """Columns: dense then each sparsity; rows: sparsity, FLOPs, items/s per engine, speedups."""
    models = {m["rung"]: m for m in group["models"]}
    ips = {(r["rung"], r["engine"]): r["items_per_second"] for r in group["results"]}
    engines = list(dict.fromkeys(r["engine"] for r in group["results"]))
    header = ["", *(LABEL.get(r, r) for r in RUNGS)]
    rows = [["weights", *(group["kinds"][r] for r in RUNGS)],
            ["Weight sparsity (%)", *(f"{100 * models[r]['weight_sparsity']:.1f}" for r in RUNGS)],
            ["Inf. FLOPs (B)", *(f"{models[r]['flops']['sparse_flops'] / 1e9:.3f}" for r in RUNGS)],
            ["FLOP reduction", *(f"{models[r]['flops']['reduction']:.2f}x" for r in RUNGS)]]
    rows += [[f"items/s {e}", *(f"{ips[(r, e)]:.0f}" for r in RUNGS)] for e in engines]
    if {"deepsparse", "onnxruntime"} <= set(engines):
        rows.append(["deepsparse / dense onnxruntime",
                     *(f"{ips[(r, 'deepsparse')] / ips[('dense', 'onnxruntime')]:.2f}x" for r in RUNGS)])
    rows += [[f"{e} / its dense", *(f"{ips[(r, e)] / ips[('dense', e)]:.2f}x" for r in RUNGS)] for e in engines]
    return markdown_table(header, rows)


def targets(groups: dict) -> list[dict]:
    out = []
    for key, g in groups.items():
        arch, size = key.split("@")
        if arch != "resnet18":
            continue
        ips = {(r["rung"], r["engine"]): r["items_per_second"] for r in g["results"]}
        flops = {m["rung"]: m["flops"]["reduction"] for m in g["models"]}
        if ("95", "deepsparse") not in ips:
            continue
        ratio = ips[("95", "deepsparse")] / ips[("dense", "onnxruntime")]
        batch = g["settings"]["batch_sizes"][0]
        out.append({"target": f"resnet18 {size}px batch {batch}: DeepSparse at 95% >= 4.5x dense onnxruntime",
                    "measured": ratio, "limit": 4.5, "met": ratio >= 4.5})
        speedup = ips[("90", "deepsparse")] / ips[("dense", "deepsparse")]
        out.append({"target": f"resnet18 {size}px batch {batch}: DeepSparse 90% over its dense >= 60% of "
                              f"the FLOP reduction ({flops['90']:.2f}x)",
                    "measured": speedup / flops["90"], "limit": 0.6, "met": speedup / flops["90"] >= 0.6,
                    "speedup": speedup})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--size", nargs="+", type=int, default=[224, 64], choices=sorted(BATCH))
    parser.add_argument("--engines", default=None, help="comma-separated (default: every engine available here)")
    parser.add_argument("--cores", type=int, default=physical_cores())
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--models", type=Path, default=ROOT / "bench/.models", help="cache of synthetic bundles")
    parser.add_argument("--batch", type=int, help="one batch for every size (default: 16 at 224 px, 64 at 64 px; "
                                                  "a GPU wants hundreds)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/ladder")
    args = parser.parse_args()
    engines = args.engines.split(",") if args.engines else available_engines()
    echo = lambda text: print(text, flush=True)  # noqa: E731

    groups = {}
    record = {"machine": machine(), "cores": args.cores, "engines": engines,
              "warmup_s": args.warmup, "duration_s": args.duration, "groups": groups}
    for arch in args.arch:
        for size in args.size:
            groups[f"{arch}@{size}"] = run_group(arch, size, args.batch or BATCH[size], engines, args.cores,
                                                 args.warmup, args.duration, args.models, echo)
            write_record(record, args.out)   # each finished group is kept should a later one be cut short
    if "deepsparse" in engines:
        record["deepsparse_benchmark_check"] = cross_check(groups, args.cores, echo)
        record["profile"] = profiles(groups, args.cores, echo)
    print(write_record(record, args.out))


def write_record(record: dict, out: Path) -> str:
    """Write the record's JSON, Markdown and figure; returns the Markdown."""
    record["targets"] = targets(record["groups"])
    text = markdown(record)
    write_json(out.with_suffix(".json"), record)
    write_atomic(out.with_suffix(".md"), text)
    save_figure(ladder_figure(record["groups"]), out.with_suffix(".png"))
    return text


def cross_check(groups, cores, echo, repeats: int = 2, seconds: int = 8) -> list[dict]:
    """Our items/s against deepsparse.benchmark for the same model, batch and cores.

    The two are measured back to back, `repeats` times, and compared by their medians:
    on a shared machine, throughput drifts between measurements minutes apart.
    """
    from sparsebias.engines import load_engine
    from sparsebias.engines.benchmark import measure

    rows = []
    for key, g in groups.items():
        batch = g["settings"]["batch_sizes"][0]
        for rung in ("dense", "95"):
            model = open_model(g["paths"][rung])
            echo(f"cross-check {key} {rung}")
            ours, theirs = [], []
            for _ in range(repeats):
                ours.append(measure(load_engine("deepsparse", model, batch, cores), 2.0, seconds)["items_per_second"])
                theirs.append(deepsparse_benchmark(model.onnx_path, batch, cores, seconds))
            rows.append({"model": f"{key} {rung}", "batch": batch, "ours": float(np.median(ours)),
                         "deepsparse_benchmark": float(np.median(theirs)), "ours_runs": ours,
                         "deepsparse_benchmark_runs": theirs, "ratio": float(np.median(ours) / np.median(theirs))})
    return rows


def profiles(groups, cores, echo) -> dict:
    """DeepSparse per-layer timings of resnet18 dense and at 90%: where the speedup goes missing."""
    out = {}
    for key, g in groups.items():
        if not key.startswith("resnet18"):
            continue
        for rung in ("dense", "90"):
            echo(f"profiling {key} {rung}")
            out[f"{key} {rung}"] = profile_deepsparse(open_model(g["paths"][rung]), g["settings"]["batch_sizes"][0],
                                                      cores)
    return out


def markdown(record) -> str:
    m = record["machine"]
    lines = ["# Sparsity ladder: throughput by engine", "",
             f"Measured {m['measured']} on {m['cpu']} ({m['physical_cores']} physical cores)"
             + (f" and {m['gpu']}" if m.get("gpu") else "")
             + f", {record['cores']} core(s) used; {record['warmup_s']} s warm-up and "
             f"{record['duration_s']} s per measurement; random inputs. Versions: "
             + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".", "",
             "Rungs marked `synthetic` are random-init models pruned layer-wise by magnitude (first conv and "
             "classifier dense); `trained` are bundles from `sparsebias compress`. FLOPs are per image, 2 x MACs, "
             "as in the paper's Table 1. All figures of one table come from one run; compare them as ratios.", ""]
    for key, g in record["groups"].items():
        arch, size = key.split("@")
        lines += [f"## {arch}, {size}x{size}, batch {g['settings']['batch_sizes'][0]}", "", table1(g), ""]
        bad = [a for a in g["agreement"] if not a["agrees"]]
        worst = max(a["max_abs_diff"] for a in g["agreement"])
        lines += [f"Engine agreement: largest |logit difference| against onnxruntime {worst:.1e}"
                  + (f"; DISAGREEING: {bad}" if bad else "") + ".", ""]
    if record["targets"]:   # they are DeepSparse's
        lines += ["## Targets", "", markdown_table(["target", "measured", "limit", "met"],
                  [[t["target"], f"{t['measured']:.2f}", t["limit"], "yes" if t["met"] else "**no**"]
                   for t in record["targets"]]), ""]
    if record.get("deepsparse_benchmark_check"):
        lines += ["## Cross-check with `deepsparse.benchmark` (sync scenario)", "",
                  "Measured back to back, twice each (8 s, 2 s warm-up), medians compared.", "", markdown_table(
            ["model", "batch", "sparsebias items/s", "deepsparse.benchmark items/s", "ratio"],
            [[c["model"], c["batch"], f"{c['ours']:.0f}", f"{c['deepsparse_benchmark']:.0f}", f"{c['ratio']:.2f}"]
             for c in record["deepsparse_benchmark_check"]]), ""]
    for name, layers in record.get("profile", {}).items():
        lines += [f"## DeepSparse per-layer profile: {name}", "", markdown_table(
            ["layer", "outputs", "ms", "share", "kernel sparsity"],
            [[p["layer"], p["outputs"][:48], f"{p['ms']:.2f}", f"{p['share']:.1%}", f"{p['kernel_sparsity']:.2f}"]
             for p in layers if p["ms"] >= 0.05]), ""]
    return "\n".join(lines) + "\n"


def ladder_figure(groups):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, (key, g) in zip(axes[0], groups.items()):
        x = {m["rung"]: i for i, m in enumerate(sorted(g["models"], key=lambda m: RUNGS.index(m["rung"])))}
        for engine in dict.fromkeys(r["engine"] for r in g["results"]):
            pts = sorted((x[r["rung"]], r["items_per_second"]) for r in g["results"] if r["engine"] == engine)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=engine)
        ax.set_xticks(range(len(RUNGS)), [LABEL.get(r, r) for r in RUNGS])
        ax.set_yscale("log")
        ax.set_title(f"{key.replace('@', ', ')} px, batch {g['settings']['batch_sizes'][0]}")
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("items/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
