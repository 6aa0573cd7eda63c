"""Group-mode audit: classification tasks judged per sensitive group, as FairGRAPE does.

For bundles whose outputs are class heads (FairFace, UTKFace, SynthFaces groups=1).
Tasks are each head (e.g. gender, race) and, with two or more heads, their joint
classification (gender x race: the pair of the heads' decisions, scored by the product
of their probabilities). Each task is scored for both models under each grouping (each
sensitive column, and their intersection): accuracy, macro FNR/FPR, per-group accuracy,
Std(dAcc), per-group macro AP, Std(AP), Std(dAP) (the supplement's Tables 1 and 2); the
PIE rate of a reference group against the rest (its Figure 4); and macro precision,
recall and F1 overall and by class size, with class-balanced softmax entropy (the CVPR
paper's Appendix L).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import SparsebiasError
from ..core.outputs import Outputs
from ..metrics.groups import group_metrics
from ..metrics.multiclass import class_balanced_entropy, macro_scores, scores_by_class_size
from .inputs import same_data
from .replay import logits_source


@dataclass
class Task:
    name: str
    classes: list[str]
    labels: np.ndarray          # (n,) class index
    compressed: np.ndarray      # (n, classes) probabilities
    reference: np.ndarray


@dataclass
class GroupAuditInputs:
    tasks: list[Task]
    groupings: dict[str, np.ndarray]   # grouping name -> (n,) group name per sample
    pie_grouping: str
    reference_group: str
    split: str
    models: dict                       # "compressed" / "reference" -> name, path, architecture, sparsity


def group_audit(a: GroupAuditInputs) -> dict:
    tasks = {}
    for task in a.tasks:
        classes = np.arange(len(task.classes))
        pred = {side: getattr(task, side).argmax(axis=1) for side in ("compressed", "reference")}
        entry = {"classes": task.classes, "support": np.bincount(task.labels, minlength=len(classes)).tolist()}
        for side, other in (("compressed", "reference"), ("reference", None)):
            probs = getattr(task, side)
            by = {}
            for grouping, groups in a.groupings.items():
                metrics = group_metrics(task.labels, pred[side], groups, scores=probs,
                                        reference_pred=pred[other] if other else None,
                                        reference_scores=getattr(task, other) if other else None)
                by[grouping] = metrics
            entry[side] = {"by": by, **macro_scores(task.labels, pred[side], classes),
                           "by_class_size": scores_by_class_size(task.labels, pred[side], classes),
                           "entropy": class_balanced_entropy(task.labels, probs)}
        entry["pie"] = _pie(task.labels, pred["reference"], pred["compressed"], a.groupings[a.pie_grouping],
                            a.reference_group)
        tasks[task.name] = entry
    return {"kind": "groups", "split": a.split, "models": a.models, "groupings": list(a.groupings),
            "group_sizes": {g: dict(zip(*map(np.ndarray.tolist, np.unique(v, return_counts=True))))
                            for g, v in a.groupings.items()},
            "pie_grouping": a.pie_grouping, "reference_group": a.reference_group, "tasks": tasks}


def _pie(y, reference_pred, model_pred, groups, reference_group: str) -> dict:
    """PIE: right under the reference, wrong under the compressed model; rate inside and outside a group."""
    pie = (reference_pred == y) & (model_pred != y)
    inside = groups == reference_group
    rates = {g: float(pie[groups == g].mean()) for g in np.unique(groups).tolist()}
    return {"rate": float(pie.mean()), "reference_group": reference_group,
            "rate_reference_group": float(pie[inside].mean()), "rate_rest": float(pie[~inside].mean()),
            "gap": float(pie[~inside].mean() - pie[inside].mean()), "rates": rates}


# ---------------------------------------------------------------- reading a group report

def intersection(report: dict) -> str:
    """The grouping Table 1 uses: the intersection of all sensitive columns, else the only one."""
    return report["groupings"][-1]


def table2_grouping(report: dict, task: str) -> str | None:
    """Table 2 groups each single-column task by the other sensitive column (gender by race)."""
    others = [g for g in report["groupings"][:-1] if g != task and " x " not in g]
    return others[0] if others and " x " not in task else None


def mean_ap(metrics: dict) -> float:
    return float(np.mean(list(metrics["group_ap"].values())))



# ---------------------------------------------------------------- inputs from bundles

def group_inputs_from_bundles(bundle, reference, split: str = "test", sensitive=None,
                              reference_group: str | None = None) -> GroupAuditInputs:
    outputs, ref_outputs = Outputs.from_manifest(bundle.manifest), Outputs.from_manifest(reference.manifest)
    if ref_outputs != outputs:
        raise SparsebiasError(f"reference {reference.path} has different outputs from {bundle.path} "
                              f"({', '.join(ref_outputs.names)} vs {', '.join(outputs.names)})")
    ev, ev_ref = bundle.split(split), reference.split(split)
    if "logits" not in ev or "logits" not in ev_ref:
        raise SparsebiasError(f"no logits for the {split!r} split (val and test have them)")
    same_data(bundle, reference, {split: (ev, ev_ref)})
    names = bundle.manifest.label_names
    label_classes = bundle.manifest["label_classes"]
    sensitive = list(sensitive or bundle.manifest.identities)
    for column in sensitive:
        if column not in names:
            raise SparsebiasError(f"unknown group column {column!r} for {bundle.path}; labels: {', '.join(names)}")
    group_names = {}
    for column in sensitive:
        values = ev["labels"][:, names.index(column)]
        present = np.unique(values)
        if len(present) < 2:
            raise SparsebiasError(f"group column {column!r} has a single value in the {split} split of {bundle.path}; "
                                  "group metrics need two or more groups")
        absent = [c for i, c in enumerate(label_classes[column]) if i not in present]
        if absent:
            raise SparsebiasError(f"group {column}={absent[0]} has no samples in the {split} split of {bundle.path}")
        group_names[column] = np.array(label_classes[column], dtype=object)[values]
    groupings = dict(group_names)
    if len(sensitive) > 1:
        groupings[" x ".join(sensitive)] = np.array([" ".join(row) for row in zip(*group_names.values())],
                                                    dtype=object)
    pie_grouping, pie_group = _reference_group(reference_group, groupings, sensitive)
    tasks = _tasks(outputs, ev, ev_ref, names)
    info = {side: {"name": b.path.name, "path": str(b.path), "architecture": b.manifest.architecture,
                   "sparsity": b.manifest.sparsity, "recipe": b.manifest["recipe"]["source"],
                   "logits": logits_source(b)}
            for side, b in (("compressed", bundle), ("reference", reference))}
    return GroupAuditInputs(tasks, {k: v.astype(str) for k, v in groupings.items()}, pie_grouping, pie_group,
                            split, info)


def _reference_group(spec: str | None, groupings: dict, sensitive: list[str]) -> tuple[str, str]:
    """'race=White' -> ('race', 'White'); by default White if race is a group column, else the largest group."""
    if spec:
        column, sep, value = spec.partition("=")
        if not sep or column not in groupings:
            raise SparsebiasError(f"--reference-group expects COLUMN=GROUP with COLUMN one of {', '.join(sensitive)}, "
                                  f"got {spec!r}")
        if value not in set(groupings[column]):
            raise SparsebiasError(f"--reference-group: no {column} group {value!r}; groups: "
                                  f"{', '.join(sorted(set(groupings[column])))}")
        return column, value
    if "race" in sensitive and "White" in set(groupings["race"]):
        return "race", "White"
    values, counts = np.unique(groupings[sensitive[-1]], return_counts=True)
    return sensitive[-1], str(values[counts.argmax()])


def _tasks(outputs: Outputs, ev, ev_ref, names) -> list[Task]:
    tasks = [Task(head, list(classes), ev["labels"][:, names.index(head)].astype(int),
                  outputs.probabilities(ev["logits"], head), outputs.probabilities(ev_ref["logits"], head))
             for head, classes in zip(outputs.names, outputs.classes)]
    if len(tasks) > 1:
        joint = tasks[0]
        for t in tasks[1:]:
            joint = Task(f"{joint.name} x {t.name}", [f"{a} {b}" for a in joint.classes for b in t.classes],
                         joint.labels * len(t.classes) + t.labels, _outer(joint.compressed, t.compressed),
                         _outer(joint.reference, t.reference))
        tasks.append(joint)
    return tasks


def _outer(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p[:, :, None] * q[:, None, :]).reshape(len(p), -1)
