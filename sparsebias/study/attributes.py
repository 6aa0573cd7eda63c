"""The study over a finished sweep: every run audited against the dense run of its seed,
then aggregated by sparsity as the CVPR 2023 paper reports it (Tables 1 and J.1,
Figures 2, 5 and 6), with CIEs across seeds and the effect of overrides.

Per-run audit reports are kept in OUT/audits/ so every number of the study can be
traced back to them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..auditing.attributes import audit
from ..auditing.inputs import inputs_from_bundles
from ..core.errors import SparsebiasError
from ..core.files import write_json
from ..engines import EngineUnavailable, load_engine, open_model
from ..engines.benchmark import measure
from ..metrics.bias import bias_amplification
from ..metrics.calibration import UNCERTAIN_BAND, sigmoid
from ..metrics.classification import decisions
from ..metrics.exemplars import compression_identified_exemplars
from ..mitigate.overrides import build_override_table
from .findings import findings
from .runs import DENSE_SPARSITY, INT8, Run, backdoored, gmp_pt

OVERRIDE_BUDGETS = (0.05, 0.10)
SYSTEMATIC = ("accuracy", "ece", "interdependence", "tcb", "uncertainty")  # per-attribute metrics of a run


def run_attribute_study(out, runs: list[Run], identities=None, speed: bool = True, echo=print) -> dict:
    """Audit every run, aggregate by task and sparsity, and return the study (plain data)."""
    out = Path(out)
    dense = {(r.task, r.job.seed): r for r in runs if r.bundle.manifest.sparsity < DENSE_SPARSITY}
    per_run = []
    for r in runs:
        ref = dense.get((r.task, r.job.seed))
        if ref is None:
            echo(f"skipped {r.name}: no dense run of task {r.task} with seed {r.job.seed}")
            continue
        ids = list(identities or r.bundle.manifest.identities)
        if backdoored(r.task) and "backdoor" not in ids:  # Section 3.4: the flag is an identity
            ids.append("backdoor")
        inputs = inputs_from_bundles(r.bundle, ref.bundle, identities=ids)   # verified once, by collect_runs
        report = audit(inputs)
        write_json(out / "audits" / f"{r.name}.json", report)
        per_run.append({"name": r.name, "task": r.task, "level": r.level, "seed": r.job.seed,
                        "sparsity": r.bundle.manifest.sparsity, "flops": r.bundle.manifest.flops,
                        **_run_summary(report, inputs)})
    if not per_run:
        raise SparsebiasError(f"nothing to study in {out}: no run has a dense run of the same task and seed")
    tasks = sorted({p["task"] for p in per_run}, key=lambda t: (t != "joint", t))
    ba_attributes = {t: _ba_means(per_run, t) for t in tasks}
    systematic_attributes = {t: _systematic_means(per_run, t) for t in tasks}
    clean = [p["identities"] for p in per_run if "backdoor" not in p["identities"]]
    study = {"out": str(out), "runs": per_run, "tasks": tasks,
             "identities": (clean or [per_run[0]["identities"]])[0], "ba_attributes": ba_attributes,
             "systematic_attributes": systematic_attributes,
             "levels": {t: _levels(per_run, t) for t in tasks},
             "cie": {t: _cies(runs, dense, t) for t in tasks},
             "throughput": _throughput(runs, echo) if speed else []}
    return {**study, "findings": findings(study)}


def _throughput(runs, echo, batch_size: int = 64, seconds: float = 3.0) -> list[dict]:
    """items/s per level (first seed, joint task) on DeepSparse and onnxruntime, measured in one run."""
    out = []
    for r in sorted((r for r in runs if r.task == runs[0].task and r.job.seed == min(x.job.seed for x in runs)),
                    key=lambda r: r.bundle.manifest.sparsity):
        entry = {"level": r.level}
        for engine in ("deepsparse", "onnxruntime"):
            try:
                timing = measure(load_engine(engine, open_model(r.bundle), batch_size), 1.0, seconds)
                entry[engine] = timing["items_per_second"]
            except EngineUnavailable as e:
                echo(f"no {engine} timing: {e}")
        out.append(entry)
    return out


def _run_summary(report: dict, inputs) -> dict:
    """Per-attribute values of every metric and, per identity and variant, of BA; the AUC mean.

    The other means are taken later, over the attributes where a metric is defined in every run
    (and variant) of the task (`_systematic_means`, `_ba_means`), so that sparsity levels are
    compared on the same attributes. AUC is undefined only where the data lack a class: the same
    attributes in every run.
    """
    comp = report["metrics"]["compressed"]
    views = comp["views"]
    variants = {i: {"default": _ba_values(views["default"]["ba"][i]),
                    "calibrated": _ba_values(views["calibrated"]["ba"][i])} for i in inputs.identities}
    for identity, per_variant in _override_effect(inputs).items():
        variants[identity].update(per_variant)
    return {"identities": list(inputs.identities), "auc": mean_defined(comp["auc"]),
            "per_attribute": {m: views["default"][m] if m in views["default"] else comp[m] for m in SYSTEMATIC},
            "ba_variants": variants}


def _systematic_means(per_run: list[dict], task: str) -> dict:
    """Set each run's mean of every per-attribute metric over the attributes where it is defined in
    every run of the task; return those attributes per metric.

    A model that predicts a label constant leaves its interdependence undefined; averaging over
    whatever each model defines would compare the levels on different attributes.
    """
    rows = [p for p in per_run if p["task"] == task]
    common = {m: _defined_in_all([p["per_attribute"][m] for p in rows]) for m in SYSTEMATIC}
    for p in rows:
        p.update({m: _mean_over(p["per_attribute"][m], common[m]) for m in SYSTEMATIC})
    return common


def _ba_values(per_attribute: dict) -> dict:
    return {a: v["value"] for a, v in per_attribute.items()}


def _ba_means(per_run: list[dict], task: str) -> dict:
    """Set each run's mean BA per identity and variant over the task's common attributes; return them."""
    rows = [p for p in per_run if p["task"] == task]
    common = {i: _defined_in_all([values for p in rows for values in p["ba_variants"][i].values()])
              for i in rows[0]["ba_variants"]}
    for p in rows:
        p["ba"], p["ba_calibrated"], p["ba_overrides"] = {}, {}, {}
        for identity, per_variant in p["ba_variants"].items():
            means = {k: _mean_over(values, common[identity]) for k, values in per_variant.items()}
            p["ba"][identity], p["ba_calibrated"][identity] = means.pop("default"), means.pop("calibrated")
            p["ba_overrides"][identity] = means
    return common


def _defined_in_all(dicts: list[dict]) -> list[str]:
    """The names, sorted, whose value is defined (not None) in every {name: value} dict."""
    return sorted(set.intersection(*({a for a, v in d.items() if v is not None} for d in dicts)))


def _mean_over(values: dict, names: list[str]):
    return float(np.mean([values[a] for a in names])) if names else None


def _override_effect(inputs) -> dict:
    """Per-attribute BA per identity after overriding the top 5% / 10% dense-uncertain samples.

    As the paper's Appendix B: overrides for an attribute and identity only where the dense
    model's BA is positive for that pair.
    """
    yhat, dense_yhat = decisions(inputs.model.logits), decisions(inputs.reference.logits)
    out = {}
    for identity, column in inputs.identities.items():
        r1, r0 = inputs.train_rates[identity]
        same = [a == identity for a in inputs.attributes]
        dense_ba, _ = bias_amplification(inputs.labels, dense_yhat, column, r1=r1, r0=r0, is_identity=same)
        eligible = np.nan_to_num(dense_ba) > 0
        for budget in OVERRIDE_BUDGETS:
            for label in ("true", "dense"):
                table = build_override_table(inputs.ids, inputs.ids, inputs.labels, inputs.reference.logits,
                                             eligible, inputs.attributes, budget, label)
                fixed = table.apply(yhat, inputs.ids, inputs.attributes)
                ba, _ = bias_amplification(inputs.labels, fixed, column, r1=r1, r0=r0, is_identity=same)
                out.setdefault(identity, {})[f"{int(budget * 100)}% {label}"] = {
                    a: None if np.isnan(v) else float(v) for a, v in zip(inputs.attributes, ba)}
    return out


def _levels(per_run, task) -> list[dict]:
    """Mean and standard deviation over seeds of each run summary, per level: dense, then by sparsity."""
    rows = [p for p in per_run if p["task"] == task]
    levels = sorted({p["level"] for p in rows}, key=lambda lv: (  # GMP-PT after GMP-RI; INT8 after its FP32 level
        gmp_pt(lv), np.mean([p["sparsity"] for p in rows if p["level"] == lv]), lv.startswith(f"{INT8}_")))
    out = []
    for level in levels:
        group = [p for p in rows if p["level"] == level]
        entry = {"level": level, "seeds": len(group), "sparsity": float(np.mean([p["sparsity"] for p in group])),
                 "flops": group[0]["flops"]["sparse_flops"], "dense_flops": group[0]["flops"]["dense_flops"]}
        for metric in ("accuracy", "auc", "ece", "interdependence", "tcb", "uncertainty"):
            entry[metric] = _mean_std([p[metric] for p in group])
        for key in ("ba", "ba_calibrated"):
            entry[key] = {i: _mean_std([p[key][i] for p in group]) for i in group[0][key]}
        entry["ba_overrides"] = {i: {k: _mean_std([p["ba_overrides"][i][k] for p in group])
                                     for k in group[0]["ba_overrides"][i]} for i in group[0]["ba_overrides"]}
        entry["per_attribute"] = {m: _attribute_means([p["per_attribute"][m] for p in group])
                                  for m in group[0]["per_attribute"]}
        entry["ba_per_attribute"] = {i: _attribute_means([p["ba_variants"][i]["default"] for p in group])
                                     for i in group[0]["ba_variants"]}
        out.append(entry)
    return out


def _cies(runs, dense, task) -> list[dict]:
    """CIEs across seeds per level: share of sample-attributes, and how many the dense model was unsure of."""
    dense_runs = [r for (t, _), r in sorted(dense.items()) if t == task]
    if not dense_runs:
        return []
    dense_logits = np.stack([r.bundle.split("test")["logits"] for r in dense_runs])
    dense_p = sigmoid(dense_logits).mean(axis=0)
    unsure = (dense_p > UNCERTAIN_BAND[0]) & (dense_p < UNCERTAIN_BAND[1])
    out = []
    for level in sorted({r.level for r in runs if r.task == task}):
        comp = [r for r in runs if r.task == task and r.level == level]
        if any(r.bundle.manifest.sparsity < DENSE_SPARSITY for r in comp):
            continue
        comp_logits = np.stack([r.bundle.split("test")["logits"] for r in comp])
        cie = compression_identified_exemplars(decisions_3d(dense_logits), decisions_3d(comp_logits))
        out.append({"level": level, "dense_runs": len(dense_runs), "compressed_runs": len(comp),
                    "cie_share": float(cie.mean()), "cie_count": int(cie.sum()),
                    "dense_uncertain_among_cies": float(unsure[cie].mean()) if cie.any() else None,
                    "dense_uncertain_overall": float(unsure.mean())})
    return out


def decisions_3d(logits: np.ndarray) -> np.ndarray:
    return np.stack([decisions(z) for z in logits])


def mean_defined(values: dict):
    """The mean of a {name: value} dict's values that are not None; None when none is."""
    defined = [v for v in values.values() if v is not None]
    return float(np.mean(defined)) if defined else None


def _mean_std(values):
    defined = [v for v in values if v is not None]
    if not defined:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(defined)), "std": float(np.std(defined, ddof=1)) if len(defined) > 1 else 0.0}


def _attribute_means(dicts) -> dict:
    out = {}
    for a in dicts[0]:
        defined = [d[a] for d in dicts if d[a] is not None]
        out[a] = float(np.mean(defined)) if defined else None
    return out
