"""The bias audit: a compressed model against its dense reference, on the same samples.

`audit(inputs)` is pure numpy and returns the report as plain data; `inputs_from_bundles`
and `inputs_from_files` gather its inputs from sparsebias bundles or from a user's own
label and logit files (CSV or Parquet). Metric definitions: shared DESIGN.md.

Decisions are looked at in up to four views: `default` (p > 0.5), `calibrated` (the
bundle's thresholds, else thresholds set on the validation split here), `overridden`
(default decisions with the bundle's override table applied) and `mitigated` (what
`predict` does: the bundle's thresholds and overrides, where it has them).
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from .._version import __version__
from ..metrics.bias import MIN_POSITIVES, MIN_RELATIVE_GAP, bias_amplification, label_interdependence
from ..metrics.calibration import (
    UNCERTAIN_BAND,
    expected_calibration_error,
    reliability_curve,
    sigmoid,
    threshold_calibration_bias,
    uncertainty_rate,
)
from ..metrics.classification import accuracy_score, decisions, roc_auc_score
from ..metrics.exemplars import pie_rates
from ..metrics.groups import group_metrics, intersectional_groups
from ..mitigate.deployed import Deployment
from .inputs import AuditInputs, ModelOutputs

ECE_BINS = 10
CHOICES = [
    "Calibrated thresholds are midpoints between the k-th and (k+1)-th largest validation logits "
    "(k = validation positives), so that [z > t] predicts exactly k positives; DESIGN.md names the k-th logit.",
    "Label interdependence regresses each predicted label on all other predicted labels of the model's "
    "attributes; labels predicted constant have no R^2 (null).",
    "With one dense and one compressed run, a CIE is a sample-attribute whose two decisions differ "
    "(default thresholds); 'dense-uncertain' means 0.1 < p_dense < 0.9.",
    "PIE rates are given per side of each identity (I=1, I=0); the gap is rate(I=1) - rate(I=0).",
    "Group metrics use the intersection of two identities as the sensitive groups and each attribute's two "
    "classes; Std(dAcc) and Std(dAP) are sample standard deviations over groups.",
]


def model_views(m: ModelOutputs, ids, attributes) -> dict[str, np.ndarray]:
    """The decisions of each view that applies to this model."""
    out = {"default": decisions(m.logits)}
    if m.calibrated is not None:
        out["calibrated"] = decisions(m.logits, m.calibrated)
    if m.overrides is not None:
        out["overridden"] = Deployment(overrides=m.overrides).decide(m.logits, ids, attributes)
    if m.mitigated:
        out["mitigated"] = Deployment(m.bundled_thresholds, m.overrides).decide(m.logits, ids, attributes)
    return out


def audit(inputs: AuditInputs) -> dict:
    """Every metric for both models, the pairwise ones, and a summary of where bias grew."""
    a = inputs
    names = a.attributes
    is_identity = {i: np.array([attr == i for attr in names]) for i in a.identities}
    metrics, views = {}, {}
    for role, m in (("compressed", a.model), ("reference", a.reference)):
        views[role] = model_views(m, a.ids, names)
        mean_p, mean_y, count = reliability_curve(a.labels.ravel(), m.logits.ravel(), ECE_BINS)
        metrics[role] = {
            "auc": _by_name(names, roc_auc_score(a.labels, m.logits)),
            "uncertainty": _by_name(names, uncertainty_rate(m.logits)),
            "ece": _by_name(names, expected_calibration_error(a.labels, m.logits, ECE_BINS)),
            "reliability": {"mean_p": _list(mean_p[:, 0]), "mean_y": _list(mean_y[:, 0]),
                            "count": count[:, 0].tolist()},
            "views": {view: _view_metrics(a, yhat, is_identity) for view, yhat in views[role].items()},
        }
    return {
        "sparsebias_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {"split": a.split, "identities": list(a.identities), "intersect": list(a.intersect),
                     "uncertainty_band": list(UNCERTAIN_BAND), "ece_bins": ECE_BINS,
                     "ba_min_positives": MIN_POSITIVES, "ba_min_relative_gap": MIN_RELATIVE_GAP,
                     "thresholds": {"compressed": a.model.calibrated_source, "reference": a.reference.calibrated_source},
                     "definitions": "shared DESIGN.md, 'Metric definitions'", "choices": CHOICES},
        "models": {"compressed": {"name": a.model.name, **a.model.info},
                   "reference": {"name": a.reference.name, **a.reference.info}},
        "samples": int(len(a.ids)),
        "attributes": names,
        "metrics": metrics,
        "pairwise": _pairwise(a, views["compressed"]["default"], views["reference"]["default"]),
        "groups": _groups(a, views["compressed"]["default"], views["reference"]["default"]),
        "summary": _summary(metrics, a),
    }


def _view_metrics(a: AuditInputs, yhat: np.ndarray, is_identity: dict) -> dict:
    ba = {}
    for identity, column in a.identities.items():
        r1, r0 = a.train_rates[identity]
        values, reasons = bias_amplification(a.labels, yhat, column, r1=r1, r0=r0, is_identity=is_identity[identity])
        ba[identity] = {name: {"value": _num(v), "reason": r} for name, v, r in zip(a.attributes, values, reasons)}
    return {"accuracy": _by_name(a.attributes, accuracy_score(a.labels, yhat)),
            "tcb": _by_name(a.attributes, threshold_calibration_bias(a.labels, yhat, a.train_positive_rate)),
            "interdependence": _by_name(a.attributes, label_interdependence(yhat)),
            "ba": ba}


def _pairwise(a: AuditInputs, compressed: np.ndarray, reference: np.ndarray) -> dict:
    p_dense = sigmoid(a.reference.logits)
    dense_uncertain = (p_dense > UNCERTAIN_BAND[0]) & (p_dense < UNCERTAIN_BAND[1])
    cie = compressed != reference
    with np.errstate(invalid="ignore"):
        cie_uncertain = (cie & dense_uncertain).sum(axis=0) / cie.sum(axis=0)
    pie = {}
    for identity, column in a.identities.items():
        r = pie_rates(a.labels, reference, compressed, column)
        pie[identity] = {name: {"rate_1": _num(r["rates"].get(1, np.full(len(a.attributes), np.nan))[j]),
                                "rate_0": _num(r["rates"].get(0, np.full(len(a.attributes), np.nan))[j])}
                         for j, name in enumerate(a.attributes)}
        for entry in pie[identity].values():
            both = entry["rate_1"] is not None and entry["rate_0"] is not None
            entry["gap"] = entry["rate_1"] - entry["rate_0"] if both else None
    return {"cie_rate": _by_name(a.attributes, cie.mean(axis=0)),
            "cie_dense_uncertain": _by_name(a.attributes, cie_uncertain),
            "dense_uncertain": _by_name(a.attributes, dense_uncertain.mean(axis=0)),
            "pie": pie}


def _groups(a: AuditInputs, compressed: np.ndarray, reference: np.ndarray) -> dict | None:
    if len(a.intersect) < 2:
        return None
    names, codes = np.unique(intersectional_groups(**{i: a.identities[i] for i in a.intersect}),
                             return_inverse=True)  # integer codes: comparing strings per attribute is slow
    out = {}
    for j, name in enumerate(a.attributes):
        m = group_metrics(a.labels[:, j], compressed[:, j], codes, scores=a.model.logits[:, j],
                          reference_pred=reference[:, j], reference_scores=a.reference.logits[:, j])
        for key in ("group_accuracy", "group_ap"):
            m[key] = {str(names[code]): v for code, v in m[key].items()}
        out[name] = _plain(m)
    return {"by": list(a.intersect), "groups": names.tolist(), "attributes": out}


def _summary(metrics: dict, a: AuditInputs) -> dict:
    """Where the compressed model amplifies bias more than the reference (default view), and means per view."""
    amplified = []
    for identity in a.identities:
        ours = metrics["compressed"]["views"]["default"]["ba"][identity]
        theirs = metrics["reference"]["views"]["default"]["ba"][identity]
        for name in a.attributes:
            c, r = ours[name]["value"], theirs[name]["value"]
            if c is not None and r is not None and c > r:
                amplified.append({"attribute": name, "identity": identity, "compressed": c, "reference": r,
                                  "increase": c - r})
    amplified.sort(key=lambda e: -e["increase"])
    mean_ba = {}
    ref_views = metrics["reference"]["views"]
    for view, values in metrics["compressed"]["views"].items():
        theirs_view = ref_views.get(view, ref_views["default"])  # views only the compressed model has: vs p > 0.5
        for identity, ours in values["ba"].items():
            theirs = theirs_view["ba"][identity]
            both = [n for n in a.attributes if ours[n]["value"] is not None and theirs[n]["value"] is not None]
            mean_ba.setdefault(view, {})[identity] = {
                "compressed": _num(np.mean([ours[n]["value"] for n in both])) if both else None,
                "reference": _num(np.mean([theirs[n]["value"] for n in both])) if both else None,
                "attributes": len(both)}
    return {"amplified": amplified, "mean_ba": mean_ba,
            "mean_ba_note": "means over the attributes where BA is defined for both models; views the reference "
                            "lacks compare with its p > 0.5 decisions"}


# ---------------------------------------------------------------- plain values for JSON

def _num(x):
    x = float(x)
    return None if np.isnan(x) else x


def _list(values):
    return [_num(v) for v in values]


def _by_name(names, values) -> dict:
    return {n: _num(v) for n, v in zip(names, values)}


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (float, np.floating)):
        return _num(value)
    return value
