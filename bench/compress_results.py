"""Record what `compress` achieved: accuracy, AUC, sparsity and wall time of bundles.

    python bench/compress_results.py exported/resnet18_dense exported/resnet18_99 \
        --out bench/results/compress_synthfaces

Writes OUT.json and OUT.md with the machine, cores and versions the bundles were
trained with. Wall times on shared machines are noisy: compare them within one record.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sparsebias.bundle import load_bundle
from sparsebias.engines.benchmark import machine
from sparsebias.metrics import accuracy_score, decisions, roc_auc_score


def describe(path: Path) -> dict:
    bundle = load_bundle(path)
    m = bundle.manifest
    test = bundle.split("test")
    y = bundle.attribute_labels(test)
    auc = roc_auc_score(y, test["logits"])
    majority = np.maximum(y.mean(axis=0), 1 - y.mean(axis=0))
    return {
        "bundle": str(path), "recipe": m["recipe"]["source"], "architecture": m["architecture"],
        "sparsity": m["sparsity"]["overall"], "val": m["metrics"]["val"], "test": m["metrics"]["test"],
        "test_majority_accuracy": float(majority.mean()),
        "test_attributes_auc_below_0.75": [a for a, v in zip(m["attributes"], auc) if v < 0.75],
        "test_auc_per_attribute": dict(zip(m["attributes"], map(float, auc))),
        "test_accuracy_per_attribute": dict(zip(m["attributes"], map(float, accuracy_score(y, decisions(test["logits"]))))),
        "best_epoch": m["training"]["best_epoch"], "epochs": m["training"]["epochs"],
        "seconds": m["training"]["seconds"], "threads": m["training"]["threads"],
        "versions": m["training"]["versions"], "data": m["data"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/results/compress_synthfaces"))
    args = parser.parse_args()
    rows = [describe(p) for p in args.bundles]
    record = {"machine": machine(), "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# compress on {rows[0]['data']['spec']}", "",
             f"Machine: {record['machine']['cpu']}, {record['machine']['physical_cores']} cores; "
             f"torch {rows[0]['versions']['torch']}, sparseml {rows[0]['versions']['sparseml']}, "
             f"{rows[0]['threads']} threads.", "",
             "| recipe | sparsity | val acc | val AUC | test acc | test AUC | majority acc | best epoch | minutes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {Path(r['recipe']).name} | {r['sparsity']:.4f} | {r['val']['accuracy']:.4f} | "
                     f"{r['val']['auc']:.4f} | {r['test']['accuracy']:.4f} | {r['test']['auc']:.4f} | "
                     f"{r['test_majority_accuracy']:.4f} | {r['best_epoch']}/{r['epochs']} | {r['seconds'] / 60:.1f} |")
    lines += ["", "Attributes with test AUC below 0.75:", ""]
    lines += [f"- {Path(r['recipe']).name}: {', '.join(r['test_attributes_auc_below_0.75']) or 'none'}" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
