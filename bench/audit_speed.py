"""How long the audit takes on CelebA-sized saved logits: 20,000 samples x 40 attributes x 4 identities.

    python bench/audit_speed.py            # writes bench/results/audit_speed.{json,md}

Times `audit()` on arrays (every metric, both models, all views, the pairwise and group
metrics), and the same audit read from CSV files through `inputs_from_files`, which is
what `sparsebias audit --labels ...` does before writing its report. Median of repeats.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sparsebias.auditing import AuditInputs, ModelOutputs, audit, inputs_from_files
from sparsebias.core import write_atomic, write_json
from sparsebias.core.files import markdown_table
from sparsebias.data import CELEBA_ATTRIBUTES
from sparsebias.engines.benchmark import machine
from sparsebias.metrics import training_rates

IDENTITIES = ["Male", "Young", "Chubby", "Pale_Skin"]


def synthetic(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    k = len(CELEBA_ATTRIBUTES)
    y = (rng.random((n, k)) < rng.uniform(0.05, 0.6, k)).astype(np.int8)
    return y, rng.normal(size=(n, k)) + 2 * y - 1, rng.normal(size=(n, k)) + 2.5 * y - 1.2


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/audit_speed")
    args = parser.parse_args()
    names = list(CELEBA_ATTRIBUTES)
    y, z, z_ref = synthetic(args.samples)
    ids = np.array([f"{i:06d}.jpg" for i in range(args.samples)])
    cols = {i: y[:, names.index(i)] for i in IDENTITIES}
    inputs = AuditInputs(attributes=names, ids=ids, labels=y, identities=cols, train_positive_rate=y.mean(axis=0),
                         train_rates={i: training_rates(y, c) for i, c in cols.items()},
                         model=ModelOutputs("pruned", z, calibrated=np.zeros(len(names))),
                         reference=ModelOutputs("dense", z_ref, calibrated=np.zeros(len(names))),
                         intersect=("Male", "Young"))
    arrays = timed(lambda: audit(inputs), args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pd.DataFrame(y, columns=names).assign(id=ids).to_csv(tmp / "labels.csv", index=False)
        for name, logits in (("model", z), ("dense", z_ref)):
            pd.DataFrame(logits, columns=names).assign(id=ids).to_csv(tmp / f"{name}.csv", index=False)
        files = timed(lambda: audit(inputs_from_files(
            labels=tmp / "labels.csv", logits=tmp / "model.csv", reference_logits=tmp / "dense.csv",
            train_labels=tmp / "labels.csv", identities=IDENTITIES)), args.repeats)
    record = {"machine": machine(), "samples": args.samples, "attributes": len(names), "identities": IDENTITIES,
              "repeats": args.repeats, "audit_from_arrays_s": arrays, "audit_from_csv_files_s": files,
              "median_arrays_s": float(np.median(arrays)), "median_files_s": float(np.median(files)),
              "target_s": 2.0}
    write_json(args.out.with_suffix(".json"), record)
    m = record["machine"]
    text = "\n".join([
        "# Audit speed", "",
        f"{args.samples:,} samples x {len(names)} attributes x {len(IDENTITIES)} identities (CelebA's test size), "
        f"measured {m['measured']} on {m['cpu']} ({m['physical_cores']} cores); numpy {m['versions']['numpy']}. "
        f"Median of {args.repeats}.", "",
        markdown_table(["what", "median s", "all runs (s)", "target"],
                       [["audit() on arrays: every metric, both models, all views", f"{np.median(arrays):.2f}",
                         ", ".join(f"{t:.2f}" for t in arrays), "< 2 s"],
                        ["the same, reading labels and logits from CSV first", f"{np.median(files):.2f}",
                         ", ".join(f"{t:.2f}" for t in files), ""]]), ""])
    write_atomic(args.out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
