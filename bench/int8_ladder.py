"""The sparsity ladder with INT8 rungs: FP32 and INT8 bundles on DeepSparse and onnxruntime, in one run.

    python bench/int8_ladder.py --dense exported/resnet18_dense \\
        exported/resnet18_90 exported/resnet18_95 exported/resnet18_99   # -> bench/results/int8_ladder.{json,md}

Each pruned bundle is quantized (`sparsebias quantize`, reused when NAME-int8 exists);
then every bundle, FP32 and INT8, is measured on every engine at one batch size, all
against the dense FP32 bundle on onnxruntime in the same process. Beside the speed: the
share of the graph DeepSparse ran itself, and what INT8 changed (mean accuracy, mean AUC
and decisions on test, against the FP32 parent).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import sparsebias
from sparsebias.bundle import load_bundle
from sparsebias.core import write_atomic, write_json
from sparsebias.core.files import markdown_table
from sparsebias.engines import available_engines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundles", nargs="+", help="pruned FP32 bundles")
    parser.add_argument("--dense", required=True, help="the dense FP32 bundle every speedup is read against")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--calibration", type=int, default=512)
    parser.add_argument("--out", default="bench/results/int8_ladder")
    args = parser.parse_args()

    fp32 = [load_bundle(p) for p in args.bundles]
    int8 = []
    for bundle in fp32:
        target = bundle.path.with_name(f"{bundle.path.name}-int8")
        int8.append(load_bundle(target) if (target / "manifest.json").is_file()
                    else sparsebias.quantize(bundle, calibration=args.calibration))
    engines = [e for e in ("deepsparse", "onnxruntime") if e in available_engines()]
    report = sparsebias.bench([*fp32, *int8], reference=args.dense, engines=engines, batch_sizes=[args.batch_size],
                              warmup_s=2.0, duration_s=args.duration)
    frame = report.to_frame().reset_index()
    rows = []
    for bundle in [load_bundle(args.dense), *fp32, *int8]:
        q = bundle.manifest.get("quantization")
        cells = [bundle.path.name, "int8" if q else "fp32", f"{bundle.manifest.sparsity:.3f}",
                 f"{bundle.manifest['metrics']['test']['accuracy']:.4f}", f"{bundle.manifest['metrics']['test']['auc']:.4f}",
                 f"{q['change']['test']['accuracy']:+.4f} / {q['change']['test']['auc']:+.4f} / "
                 f"{q['decisions_changed']['test']:.2%}" if q else "-"]
        for engine in engines:
            row = frame[(frame["model"] == bundle.path.name) & (frame["engine"] == engine)].iloc[0]
            share = row.get("supported_share")
            cells.append(f"{row['speedup_vs_onnxruntime']:.2f}x" + (f" ({share:.0%} of graph)" if share == share
                                                                      and share is not None and share < 1 else ""))
        rows.append(cells)
    table = markdown_table(["bundle", "precision", "sparsity", "test accuracy", "test AUC",
                            "INT8 change: accuracy / AUC / decisions", *(f"{e} vs dense FP32 onnxruntime"
                                                                       for e in engines)], rows)
    m = report.to_dict()["machine"]
    text = (f"# The ladder with INT8 rungs\n\nMeasured {m['measured']} on {m['cpu']} ({m['physical_cores']} "
            f"physical cores), batch {args.batch_size}, input {fp32[0].manifest['input']['shape'][1:]}, "
            f"{args.duration:g} s per model and engine, one run; versions: "
            + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".\n\n" + table + "\n")
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {"bench": report.to_dict(), "table": rows})
    write_atomic(out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
