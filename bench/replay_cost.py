"""What judging what a model does costs: the gate and the audit with and without re-running the models.

    python bench/replay_cost.py --bundle exported/resnet18_99 --reference exported/resnet18_dense \\
        --label "default data"          # adds a row to bench/results/replay_cost.{json,md}

Times, on the same bundles in the same run: the audit on the logits the bundles store
(`--stored-logits`), the gate's check (both models re-run on the judged split) and the
audit's (val and test re-run), each with the decoded-image cache warm, as it is after
`compress` on the same machine; and decoding the test split into an empty cache, which
a machine that never saw the data pays once. Median of repeats.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from sparsebias.auditing import audit, inputs_from_bundles, replay_bundle
from sparsebias.bundle import load_bundle
from sparsebias.core import write_atomic, write_json
from sparsebias.core.files import markdown_table
from sparsebias.data import open_data
from sparsebias.data.loader import FaceImages
from sparsebias.engines.benchmark import machine


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def judged(paths, splits):
    quiet = lambda *a, **k: None  # noqa: E731
    bundles = [load_bundle(p) for p in paths]
    if splits:
        bundles = [replay_bundle(b, splits=splits, echo=quiet) for b in bundles]
    return audit(inputs_from_bundles(*bundles, split="test"))


def markdown(record: dict) -> str:
    m = record["machine"]
    return "\n".join([
        "# What re-running the models costs (issue 17)", "",
        f"Measured {m['measured']} (last row) on {m['cpu']} ({m['physical_cores']} cores), onnxruntime on CPU; "
        "times are medians of the row's repeats. Two bundles (the compressed model and its reference); every "
        "column but the last has the decoded-image cache warm.", "",
        "The check costs what inference on the judged images costs: it grows with the images and their pixels "
        "(224 px has 12x the pixels of 64 px), and shrinks with cores or a GPU engine (`--engine`). "
        "`--stored-logits` is the free, unchecked alternative.", "",
        markdown_table(
            ["data", "px", "repeats", "val / test images", "audit, stored logits (s)", "gate: test re-run (s)",
             "audit: val + test re-run (s)", "gate / stored", "images/s re-run", "decoding test, cold (s)"],
            [[r["label"], r["image_size"], r["repeats"], f"{r['val']:,} / {r['test']:,}", f"{r['stored_s']:.1f}",
              f"{r['gate_replay_s']:.1f}", f"{r['audit_replay_s']:.1f}", f"{r['gate_ratio']:.1f}x",
              f"{r['images_per_s']:.0f}", f"{r['decode_test_cold_s']:.1f}"] for r in record["rows"]]), ""])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--reference", required=True, type=Path)
    parser.add_argument("--label", required=True, help="What data this row is on, e.g. 'default data'.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/replay_cost")
    args = parser.parse_args()
    paths = [args.bundle, args.reference]
    bundle = load_bundle(args.bundle)
    sizes = bundle.manifest["data"]["sizes"]
    judged(paths, ("val", "test"))  # warms the decoded-image cache and the engines' first-run costs
    row = {"label": args.label, "data": bundle.manifest["data"]["spec"], "image_size": bundle.manifest["input"]["shape"][-1],
           "val": sizes["val"], "test": sizes["test"], "attributes": len(bundle.attributes), "repeats": args.repeats,
           "stored_s": timed(lambda: judged(paths, ()), args.repeats),
           "gate_replay_s": timed(lambda: judged(paths, ("test",)), args.repeats),
           "audit_replay_s": timed(lambda: judged(paths, ("val", "test")), args.repeats)}
    table = open_data(bundle.manifest["data"]["spec"], echo=lambda *a, **k: None)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        FaceImages(table, "test", [table.names[0]], row["image_size"], cache=Path(cache))
        row["decode_test_cold_s"] = time.perf_counter() - start
    row["images_per_s"] = 2 * row["test"] / (row["gate_replay_s"] - row["stored_s"])
    row["gate_ratio"] = row["gate_replay_s"] / row["stored_s"]
    earlier = args.out.with_suffix(".json")
    record = json.loads(earlier.read_text()) if earlier.exists() else {}
    record = {"machine": machine(),
              "rows": [r for r in record.get("rows", []) if r["label"] != args.label] + [row]}
    write_json(args.out.with_suffix(".json"), record)
    text = markdown(record)
    write_atomic(args.out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
