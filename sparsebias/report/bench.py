"""The benchmark report: bench.json, bench.md and bench.png (items/s against sparsity)."""

from __future__ import annotations

from pathlib import Path

from ..core.files import markdown_table, save_figure, write_atomic, write_json, written_together


def results_table(report: dict) -> str:
    sparsity = {m["name"]: m["weight_sparsity"] for m in report["models"]}
    rows = []
    for r in report["results"]:
        same = f"{r['speedup_same_engine']:.2f}x" if r["speedup_same_engine"] is not None else "-"
        lat = r["latency_ms"]
        engine = r["engine"]
        if r.get("supported_share", 1.0) < 1.0:   # DeepSparse ran part of the graph, its onnxruntime the rest
            engine += f" ({r['supported_share']:.0%} of the graph; the rest on its onnxruntime)"
        if "sparse_weight_share" in r:   # what ran on 2:4 sparse kernels
            engine += f" (2:4 kernels: {r['sparse_weight_share']:.0%} of weights)"
        low, high = r["speedup_vs_onnxruntime_range"]
        spread = f" ({low:.2f}-{high:.2f})" if len(r["rounds_items_per_second"]) > 1 else ""
        rows.append([r["model"] + (" (ref)" if r["reference"] else ""), engine, r["batch_size"],
                     f"{sparsity[r['model']]:.4f}", f"{r['items_per_second']:.1f}", f"{lat['mean']:.2f}",
                     f"{lat['p50']:.2f}", f"{lat['p90']:.2f}", f"{lat['p99']:.2f}",
                     f"{r['speedup_vs_onnxruntime']:.2f}x{spread}", same])
    return markdown_table(["model", "engine", "batch", "sparsity", "items/s", "mean ms", "p50 ms", "p90 ms",
                           "p99 ms", "speedup vs ORT", "speedup same engine"], rows)


def bench_markdown(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    lines = ["# Benchmark", "",
             f"Measured {m['measured']} on {m['cpu']} ({m['physical_cores']} physical cores, "
             f"{m['logical_cpus']} logical CPUs)" + (f" and {m['gpu']}" if m.get("gpu") else "")
             + f", using {s['cores']} core(s); warm-up {s['warmup_s']} s, "
             f"{s['duration_s']} s per measurement in {s['rounds']} interleaved round(s), random inputs "
             f"(seed {s['seed']}).", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".", "",
             "Speedups, measured in this run (in brackets: the lowest and highest round):", ""]
    lines += [f"- {name}: {text}" for name, text in report["speedup_definition"].items()]
    if report.get("skipped_engines"):
        lines += ["", "Left out (`--engine available`): " + "; ".join(
            f"{name}, {reason}" for name, reason in report["skipped_engines"].items()) + "."]
    lines += ["", "## Models", "", markdown_table(
        ["model", "input", "weight sparsity", "dense GMACs", "sparse GMACs", "dense GFLOPs", "sparse GFLOPs",
         "FLOP reduction"],
        [[d["name"] + (" (ref)" if d["reference"] else ""), "x".join(map(str, d["input_shape"])),
          f"{d['weight_sparsity']:.4f}", f"{d['flops']['dense_macs'] / 1e9:.3f}",
          f"{d['flops']['sparse_macs'] / 1e9:.3f}", f"{d['flops']['dense_flops'] / 1e9:.3f}",
          f"{d['flops']['sparse_flops'] / 1e9:.3f}", f"{d['flops']['reduction']:.2f}x"] for d in report["models"]]),
        "", "## Throughput and latency (latency per batch)", "", results_table(report), "",
        "## Engine agreement", "",
        "Largest |logit difference| against onnxruntime on CPU, on the bundle's check batch (real images "
        "as exported) or seeded noise for a bare ONNX file.", "",
        markdown_table(["model", "engine", "inputs", "max abs diff", "agrees"],
                       [[a["model"], a["engine"], a["inputs"], f"{a['max_abs_diff']:.2e}",
                         "yes" if a["agrees"] else "**NO**"] for a in report["agreement"]])]
    if report.get("profile"):
        lines += ["", "## DeepSparse per-layer profile", ""]
        for name, layers in report["profile"].items():
            lines += [f"### {name}", "", markdown_table(
                ["layer", "outputs", "ms", "share", "kernel sparsity", "GFLOPs per batch"],
                [[p["layer"], p["outputs"][:60], f"{p['ms']:.3f}", f"{p['share']:.1%}", f"{p['kernel_sparsity']:.3f}",
                  f"{p['gflops_per_batch']:.3f}"] for p in layers]), ""]
    return "\n".join(lines) + "\n"


def plot_throughput(report: dict):
    """items/s against weight sparsity, a line per engine and batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sparsity = {m["name"]: m["weight_sparsity"] for m in report["models"]}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = sorted({(r["engine"], r["batch_size"]) for r in report["results"]})
    for engine, batch in series:
        points = sorted((sparsity[r["model"]], r["items_per_second"]) for r in report["results"]
                        if r["engine"] == engine and r["batch_size"] == batch)
        ax.plot([100 * p[0] for p in points], [p[1] for p in points], marker="o", label=f"{engine}, batch {batch}")
    ax.set_xlabel("weight sparsity (%)")
    ax.set_ylabel("items/s")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Throughput on {report['settings']['cores']} core(s)")
    return fig


@written_together
def write_bench_report(report: dict, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    return [write_json(out_dir / "bench.json", report),
            write_atomic(out_dir / "bench.md", bench_markdown(report)),
            save_figure(plot_throughput(report), out_dir / "bench.png")]
