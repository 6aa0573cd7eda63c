"""The study over a sweep of pruning methods on a group task: each run audited in group
mode against the dense run of its seed, then tabulated per method as FairGRAPE's
supplement does (Table 1: accuracy, FNR, FPR, Std(dAcc); Table 2: AP, Std(AP), Std(dAP);
Figure 4: the PIE gap between a reference group and the rest).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..auditing.groups import group_audit, group_inputs_from_bundles, intersection, mean_ap, table2_grouping
from ..core.errors import SparsebiasError
from ..core.files import write_json
from .runs import DENSE_SPARSITY

DENSE_METHOD = "No-Pruning"


def run_group_study(out, runs, sensitive=None, reference_group=None, echo=print) -> dict:
    out = Path(out)
    dense = {r.job.seed: r for r in runs if r.bundle.manifest.sparsity < DENSE_SPARSITY}
    rows = []
    for r in runs:
        ref = dense.get(r.job.seed)
        if ref is None:
            echo(f"skipped {r.name}: no dense run with seed {r.job.seed}")
            continue
        report = group_audit(group_inputs_from_bundles(r.bundle, ref.bundle, sensitive=sensitive,
                                                       reference_group=reference_group))
        write_json(out / "audits" / f"{r.name}.json", report)
        side = "reference" if r is ref else "compressed"
        rows.append({"name": r.name, "method": DENSE_METHOD if r is ref else r.level, "seed": r.job.seed,
                     "architecture": r.bundle.manifest.architecture,
                     "sparsity": r.bundle.manifest.sparsity, "tasks": _task_rows(report, side)})
    if not rows:
        raise SparsebiasError(f"nothing to study in {out}: no run has a dense run of the same seed")
    methods = [DENSE_METHOD] + sorted({r["method"] for r in rows} - {DENSE_METHOD})
    tasks = list(rows[0]["tasks"])
    table = {m: {t: _mean_over_seeds([r["tasks"][t] for r in rows if r["method"] == m]) for t in tasks}
             for m in methods if any(r["method"] == m for r in rows)}
    return {"kind": "groups", "out": str(out), "runs": rows, "methods": list(table), "tasks": tasks,
            "architecture": rows[0]["architecture"], "table": table,
            "sparsity": {m: float(np.mean([r["sparsity"] for r in rows if r["method"] == m])) for m in table},
            "findings": _findings(table, tasks)}


def _task_rows(report: dict, side: str) -> dict:
    """The figures of one run per task; the dense run reports its own (no Std(d...) terms)."""
    out = {}
    grouping = intersection(report)
    for task, t in report["tasks"].items():
        m = t[side]["by"][grouping]
        row = {"accuracy": m["accuracy"], "fnr": m["fnr"], "fpr": m["fpr"], "std_dacc": m.get("std_dacc"),
               "pie_gap": t["pie"]["gap"] if side == "compressed" else None, "ap_groups": table2_grouping(report, task)}
        if row["ap_groups"]:
            a = t[side]["by"][row["ap_groups"]]
            row.update(ap=mean_ap(a), std_ap=a["std_ap"], std_dap=a.get("std_dap"))
        out[task] = row
    return out


def _mean_over_seeds(rows: list[dict]) -> dict:
    out = {"seeds": len(rows), "ap_groups": rows[0]["ap_groups"]}
    for key, value in rows[0].items():
        if key != "ap_groups":
            values = [r[key] for r in rows if r.get(key) is not None]
            out[key] = float(np.mean(values)) if values else None
            out[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return out


def _findings(table: dict, tasks: list[str]) -> list[dict]:
    """Per task: does FairGRAPE have the lowest Std(dAcc) and the highest accuracy among the pruned models?"""
    pruned = [m for m in table if m != DENSE_METHOD]
    found = []
    if "fairgrape" not in pruned or len(pruned) < 2:
        return found
    for task in tasks:
        std = {m: table[m][task]["std_dacc"] for m in pruned}
        acc = {m: table[m][task]["accuracy"] for m in pruned}
        found.append({"task": task, "lowest_std_dacc": min(std, key=std.get), "highest_accuracy": max(acc, key=acc.get),
                      "fairgrape_lowest_std_dacc": min(std, key=std.get) == "fairgrape",
                      "fairgrape_highest_accuracy": max(acc, key=acc.get) == "fairgrape",
                      "std_dacc": std, "accuracy": acc})
    return found
