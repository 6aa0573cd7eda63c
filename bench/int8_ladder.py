"""The sparsity ladder with INT8 rungs: FP32 and INT8 bundles on DeepSparse and onnxruntime, in one run.

    python bench/int8_ladder.py --dense exported/resnet18_dense exported/resnet18_90 exported/resnet18_95 \\
        exported/resnet18_layerwise_95 exported/resnet18_layerwise_95_block4 exported/resnet18_99 \\
        --rounds 10 --duration 20                        # -> bench/results/int8_ladder.{json,md,png}

    python bench/int8_ladder.py --dense exported/resnet18_dense exported/resnet18_95 \\
        exported/resnet18_layerwise_95 exported/resnet18_layerwise_95_block4 exported/resnet18_99 \\
        --size 224 --batch-size 16 --rounds 8 --duration 16 --out bench/results/int8_ladder_224px

The bundles were trained with `--set num_epochs=8`; the block4 one with
`recipes/resnet18_layerwise_95.yaml --set mask_type=block4 --name resnet18_layerwise_95_block4`.

Each pruned bundle is quantized (`sparsebias quantize`, reused when NAME-int8 exists);
then every bundle, FP32 and INT8, is measured on every engine at one batch size, all
against the dense FP32 bundle on onnxruntime in the same process. Beside the speed: the
share of the graph DeepSparse ran itself, and what INT8 changed (mean accuracy, mean AUC
and decisions on test, against the FP32 parent).

`--size` other than the bundles' own: speed only. Each bundle's trained weights are
exported at that input size (the networks are convolutional, with global pooling) and
quantized the way `quantize` does, calibrated on training images resized to it; the
accuracy columns are then the bundles' own, at their own size.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import sparsebias
from sparsebias.bundle import load_bundle
from sparsebias.core import write_atomic, write_json
from sparsebias.core.files import markdown_table, save_figure
from sparsebias.engines import available_engines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundles", nargs="+", help="pruned FP32 bundles")
    parser.add_argument("--dense", required=True, help="the dense FP32 bundle every speedup is read against")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per model and engine, all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (speedup: median of their ratios)")
    parser.add_argument("--calibration", type=int, default=512)
    parser.add_argument("--size", type=int, default=None, help="input size to measure at (default: the bundles')")
    parser.add_argument("--out", default="bench/results/int8_ladder")
    args = parser.parse_args()

    fp32 = [load_bundle(p) for p in args.bundles]
    int8 = []
    for bundle in fp32:
        target = bundle.path.with_name(f"{bundle.path.name}-int8")
        int8.append(load_bundle(target) if (target / "manifest.json").is_file()
                    else sparsebias.quantize(bundle, calibration=args.calibration))
    engines = [e for e in ("deepsparse", "onnxruntime") if e in available_engines()]
    dense = load_bundle(args.dense)
    models, reference = [*fp32, *int8], args.dense
    with tempfile.TemporaryDirectory(prefix="int8_ladder_") as work:   # resized copies, 200+ MB
        if args.size and args.size != dense.manifest["input"]["shape"][-1]:
            models = [resized(b, args.size, Path(work), args.calibration) for b in [*fp32, *int8]]
            reference = resized(dense, args.size, Path(work), args.calibration)
        report = sparsebias.bench(models, reference=reference, engines=engines, batch_sizes=[args.batch_size],
                                  warmup_s=2.0, duration_s=args.duration, rounds=args.rounds)
    frame = report.to_frame().reset_index()
    rows = []
    for bundle in [dense, *fp32, *int8]:
        q = bundle.manifest.get("quantization")
        cells = [bundle.path.name, "int8" if q else "fp32", f"{bundle.manifest.sparsity:.3f}",
                 f"{bundle.manifest['metrics']['test']['accuracy']:.4f}", f"{bundle.manifest['metrics']['test']['auc']:.4f}",
                 f"{q['change']['test']['accuracy']:+.4f} / {q['change']['test']['auc']:+.4f} / "
                 f"{q['decisions_changed']['test']:.2%}" if q else "-", _ba_change(bundle) if q else "-"]
        for engine in engines:
            row = frame[(frame["model"] == bundle.path.name) & (frame["engine"] == engine)].iloc[0]
            share = row.get("supported_share")
            low, high = row["speedup_vs_onnxruntime_range"]
            cells.append(f"{row['speedup_vs_onnxruntime']:.2f}x ({low:.2f}-{high:.2f})"
                         + (f", {share:.0%} of graph" if share == share and share is not None and share < 1 else ""))
        rows.append(cells)
    table = markdown_table(["bundle", "precision", "sparsity", "test accuracy", "test AUC",
                            "INT8 change: accuracy / AUC / decisions", "INT8 change: mean BA per identity",
                            *(f"{e} vs dense FP32 onnxruntime"
                                                                       for e in engines)], rows)
    m = report.to_dict()["machine"]
    text = (f"# The ladder with INT8 rungs\n\nMeasured {m['measured']} on {m['cpu']} ({m['physical_cores']} "
            f"physical cores), batch {args.batch_size}, input "
            f"{[3, args.size, args.size] if args.size else fp32[0].manifest['input']['shape'][1:]}, "
            f"{args.duration:g} s per model and engine in {args.rounds} interleaved rounds of one run (speedup: "
            f"median of the rounds' ratios; in brackets the lowest and highest); versions: "
            + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".\n\n" + table + "\n")
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {"bench": report.to_dict(), "table": rows})
    write_atomic(out.with_suffix(".md"), text + f"\n![speedups]({out.name}.png)\n")
    save_figure(speedup_figure(frame, [dense, *fp32, *int8], engines, args), out.with_suffix(".png"))
    print(text)


def speedup_figure(frame, bundles, engines, args):
    """Bars: items/s over the dense FP32 model on onnxruntime, per bundle and engine."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = [b.path.name for b in bundles]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(names), 3.6))
    width = 0.8 / len(engines)
    for k, engine in enumerate(engines):
        values = [frame[(frame["model"] == n) & (frame["engine"] == engine)]["speedup_vs_onnxruntime"].iloc[0]
                  for n in names]
        ax.bar(np.arange(len(names)) + (k - (len(engines) - 1) / 2) * width, values, width, label=engine)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("items/s over dense FP32 onnxruntime")
    ax.set_title(f"batch {args.batch_size}" + (f", {args.size} px" if args.size else ""), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _ba_change(int8) -> str:
    """Mean BA (p > 0.5, test) of the INT8 bundle minus its FP32 parent's, per identity: the audit of
    the two, on the logits quantize computed and verified."""
    report = sparsebias.audit(int8, int8.manifest["quantization"]["parent"]["path"], replay=False)
    mean_ba = report["summary"]["mean_ba"]["default"]
    return ", ".join(f"{i} {v['compressed'] - v['reference']:+.3f}" for i, v in mean_ba.items()
                     if v["compressed"] is not None)


def resized(bundle, size: int, work: Path, calibration: int) -> Path:
    """work/NAME.onnx: the bundle's model at `size` px, FP32 from its torch weights, or, for an
    INT8 bundle, its FP32 parent's weights quantized as `quantize` does."""
    import numpy as np
    import onnx
    import torch
    from PIL import Image

    from sparsebias.bundle.export import export_onnx
    from sparsebias.data import open_data
    from sparsebias.data.images import split_images
    from sparsebias.quantization.calibrate import calibrated_params
    from sparsebias.quantization.graph import quantize_graph
    from sparsebias.training.checkpoint import state_dict_from
    from sparsebias.training.models import build_model

    q = bundle.manifest.get("quantization")
    source = load_bundle(q["parent"]["path"]) if q else bundle
    fp32_path = work / f"{source.path.name}.onnx"   # bench names a bare ONNX file by its stem
    if not fp32_path.is_file():
        model = build_model(source.manifest.architecture, len(source.attributes))
        model.load_state_dict(state_dict_from(source.file("model.pt")))
        export_onnx(model, fp32_path, torch.zeros(2, 3, size, size))
    if not q:
        return fp32_path
    path = work / f"{bundle.path.name}.onnx"
    spec = source.manifest["input"]
    train = split_images(open_data(source.manifest.data_spec, echo=lambda *a: None), "train",
                         spec["shape"][-1])[:calibration]
    big = np.stack([np.asarray(Image.fromarray(x.transpose(1, 2, 0)).resize((size, size), Image.BILINEAR))
                    .transpose(2, 0, 1) for x in train])
    fp32 = onnx.load(str(fp32_path))
    onnx.save(quantize_graph(fp32, calibrated_params(fp32, big, spec)), str(path))
    return path


if __name__ == "__main__":
    main()
