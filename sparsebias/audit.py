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

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__
from .errors import SparsebiasError, first_line
from .metrics import (accuracy_score, bias_amplification, decisions, expected_calibration_error, group_metrics,
                      intersectional_groups, label_interdependence, pie_rates, reliability_curve, roc_auc_score,
                      sigmoid, threshold_calibration_bias, training_rates, uncertainty_rate)
from .metrics.bias import MIN_POSITIVES, MIN_RELATIVE_GAP
from .metrics.calibration import UNCERTAIN_BAND
from .mitigate.overrides import OverrideTable, read_overrides
from .mitigate.thresholds import calibrate_thresholds, read_thresholds
from .replay import logits_source

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


@dataclass
class ModelOutputs:
    """One model's logits on the eval split, and the mitigations it carries."""

    name: str
    logits: np.ndarray                          # (n, k)
    calibrated: np.ndarray | None = None        # thresholds for the `calibrated` view
    calibrated_source: str | None = None        # "bundle" or "validation split"
    bundled_thresholds: np.ndarray | None = None
    overrides: OverrideTable | None = None
    info: dict = field(default_factory=dict)

    @property
    def mitigated(self) -> bool:
        return self.bundled_thresholds is not None or self.overrides is not None


@dataclass
class AuditInputs:
    attributes: list[str]
    ids: np.ndarray                             # (n,) eval sample ids
    labels: np.ndarray                          # (n, k) eval labels, 0/1
    identities: dict[str, np.ndarray]           # eval identity labels, 0/1
    train_positive_rate: np.ndarray             # (k,)
    train_rates: dict[str, tuple[np.ndarray, np.ndarray]]  # identity -> (r1, r0) per attribute
    model: ModelOutputs
    reference: ModelOutputs
    split: str = "test"
    intersect: tuple[str, ...] = ()


def model_views(m: ModelOutputs, ids, attributes) -> dict[str, np.ndarray]:
    """The decisions of each view that applies to this model."""
    out = {"default": decisions(m.logits)}
    if m.calibrated is not None:
        out["calibrated"] = decisions(m.logits, m.calibrated)
    if m.overrides is not None:
        out["overridden"] = m.overrides.apply(out["default"], ids, attributes)
    if m.mitigated:
        thresholds = m.bundled_thresholds if m.bundled_thresholds is not None else 0.0
        mitigated = decisions(m.logits, thresholds)
        out["mitigated"] = m.overrides.apply(mitigated, ids, attributes) if m.overrides is not None else mitigated
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


# ---------------------------------------------------------------- inputs from bundles

def inputs_from_bundles(bundle, reference, split: str = "test", identities=None, intersect=None) -> AuditInputs:
    """Audit inputs from two bundles (paths, or bundles already loaded or replayed: `replay.replay_bundle`)."""
    from .bundle import as_bundle

    bundle, reference = as_bundle(bundle), as_bundle(reference)
    bundle.require_binary("the attribute audit (gate, overrides)")
    attributes = bundle.attributes
    missing = [x for x in attributes if x not in reference.attributes]
    if missing:
        raise SparsebiasError(f"reference {reference.path} does not predict {missing[0]!r}")
    ev, ev_ref = _split_with_logits(bundle, split), _split_with_logits(reference, split)
    train = bundle.split("train")
    same_data(bundle, reference, {split: (ev, ev_ref), "train": (train, reference.split("train"))})
    label_names = list(bundle.manifest["label_names"])
    identities = list(identities or bundle.manifest["identities"])
    _check_identities(identities, label_names + (["backdoor"] if "backdoor" in ev else []), f"{bundle.path}")
    ref_cols = [reference.attributes.index(x) for x in attributes]

    def identity(split, name):  # a label column, or the backdoor flag of a backdoored data set (Section 3.4)
        return split["backdoor"].astype(np.int8) if name == "backdoor" else split["labels"][:, label_names.index(name)]

    return AuditInputs(
        attributes=attributes, ids=ev["ids"], labels=bundle.attribute_labels(ev),
        identities={i: identity(ev, i) for i in identities},
        train_positive_rate=bundle.attribute_labels(train).mean(axis=0),
        train_rates={i: training_rates(bundle.attribute_labels(train), identity(train, i)) for i in identities},
        model=_bundle_outputs(bundle, ev["logits"], list(range(len(attributes))), with_overrides=True),
        reference=_bundle_outputs(reference, ev_ref["logits"], ref_cols, with_overrides=False),
        split=split, intersect=_intersect(intersect, identities))


def same_data(bundle, reference, splits: dict) -> None:
    """Both models must have been audited on one data set: the same ids and labels, split by split.
    (The reference is the user's; a bundle that brings labels of its own is refused here.)"""
    if list(bundle.manifest["label_names"]) != list(reference.manifest["label_names"]):
        raise SparsebiasError(f"{bundle.path} and {reference.path} have different label names: audit models "
                              "trained on the same data set")
    for name, (ours, theirs) in splits.items():
        if not np.array_equal(ours["ids"], theirs["ids"]):
            raise SparsebiasError(f"the {name} sample ids of {bundle.path} and {reference.path} differ: "
                                  "audit models on the same data set and split")
        if not np.array_equal(ours["labels"], theirs["labels"]):
            raise SparsebiasError(f"the {name} labels of {bundle.path} and {reference.path} differ: "
                                  "audit models on the same data set and split")


def _split_with_logits(bundle, split):
    data = bundle.split(split)
    if "logits" not in data:
        raise SparsebiasError(f"bundle {bundle.path} has no logits for the {split!r} split (val and test have them)")
    _check_logits(data["logits"], f"{bundle.path}/splits/{split}.npz")
    return data


def _bundle_outputs(bundle, logits, columns: list[int], with_overrides: bool) -> ModelOutputs:
    """A bundle's outputs for the audited attributes (its output `columns`); the reference's overrides are not used."""
    bundled = read_thresholds(bundle)
    if bundled is not None:
        calibrated, source = bundled, "bundle"
    else:
        val = bundle.split("val")
        calibrated, source = calibrate_thresholds(bundle.attribute_labels(val), val["logits"]), "validation split"
    m = bundle.manifest
    return ModelOutputs(name=bundle.path.name, logits=logits[:, columns], calibrated=calibrated[columns],
                        calibrated_source=source, bundled_thresholds=None if bundled is None else bundled[columns],
                        overrides=read_overrides(bundle) if with_overrides else None,
                        info={"path": str(bundle.path), "architecture": m["architecture"],
                              "sparsity": m["sparsity"]["overall"], "logits": logits_source(bundle)})


# ---------------------------------------------------------------- inputs from files

def read_table(path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(ids, columns) from a CSV or Parquet file whose first column (or 'id' / 'image_id') holds sample ids."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise SparsebiasError(f"file not found: {path}")
    try:
        frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as e:  # pandas raises many kinds for a malformed file
        raise SparsebiasError(f"{path}: cannot read as {'Parquet' if path.suffix == '.parquet' else 'CSV'} "
                              f"({first_line(e, 160)})") from None
    if not len(frame.columns):
        raise SparsebiasError(f"{path}: no columns")
    id_column = next((c for c in ("id", "image_id") if c in frame.columns), frame.columns[0])
    missing = frame[id_column].isna().to_numpy()
    if missing.any():
        raise SparsebiasError(f"{path}: row {int(np.flatnonzero(missing)[0]) + 1} has no sample id")
    ids = np.array(frame[id_column].astype(str).tolist(), dtype=str)
    duplicated = pd.Series(ids).duplicated()
    if duplicated.any():
        raise SparsebiasError(f"{path}: sample id {ids[duplicated.to_numpy()][0]!r} appears more than once")
    columns = {}
    for c in frame.columns:
        if c == id_column:
            continue
        values = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isnan(values) & frame[c].notna().to_numpy()
        if bad.any():
            raise SparsebiasError(f"{path}: column {c!r} holds a non-number ({frame[c][bad].iloc[0]!r})")
        columns[str(c)] = values
    return ids, columns


def inputs_from_files(*, labels, logits, reference_logits, train_labels, val_labels=None, val_logits=None,
                      val_reference_logits=None, identities=None, intersect=None, split="test") -> AuditInputs:
    """Audit inputs from files: labels with ids, logits of the model and its reference, training labels."""
    from .data.attributes import DEFAULT_IDENTITIES

    ids, label_cols = read_table(labels)
    _, z = _aligned(logits, ids, labels)
    _, z_ref = _aligned(reference_logits, ids, labels)
    attributes = list(z)
    if list(z_ref) != attributes and set(z_ref) >= set(attributes):
        z_ref = {k: z_ref[k] for k in attributes}
    if list(z_ref) != attributes:
        raise SparsebiasError(f"{reference_logits}: its columns must be the model's attributes, {attributes}")
    identities = list(identities or [i for i in DEFAULT_IDENTITIES if i in label_cols])
    _check_identities(identities, list(label_cols), str(labels))
    _check_columns(attributes, label_cols, labels)
    y = np.stack([_binary(label_cols[x], labels, x) for x in attributes], axis=1)
    ident = {i: _binary(label_cols[i], labels, i) for i in identities}
    _, train_cols = read_table(train_labels)
    _check_columns(attributes + identities, train_cols, train_labels)
    train = np.stack([_binary(train_cols[x], train_labels, x) for x in attributes], axis=1)
    model_z = np.stack([z[x] for x in attributes], axis=1)
    ref_z = np.stack([z_ref[x] for x in attributes], axis=1)
    _check_logits(model_z, logits)
    _check_logits(ref_z, reference_logits)
    calibrated = {"model": (None, None), "reference": (None, None)}
    if val_labels is not None:
        val_ids, val_cols = read_table(val_labels)
        _check_columns(attributes, val_cols, val_labels)
        y_val = np.stack([_binary(val_cols[x], val_labels, x) for x in attributes], axis=1)
        for role, path in (("model", val_logits), ("reference", val_reference_logits)):
            if path is not None:
                _, cols = _aligned(path, val_ids, val_labels)
                _check_columns(attributes, cols, path)
                val_z = np.stack([cols[x] for x in attributes], axis=1)
                _check_logits(val_z, path)
                calibrated[role] = (calibrate_thresholds(y_val, val_z), "validation split")
    return AuditInputs(
        attributes=attributes, ids=ids, labels=y, identities=ident, train_positive_rate=train.mean(axis=0),
        train_rates={i: training_rates(train, _binary(train_cols[i], train_labels, i)) for i in identities},
        model=ModelOutputs(Path(logits).stem, model_z, *calibrated["model"], info={"path": str(logits)}),
        reference=ModelOutputs(Path(reference_logits).stem, ref_z, *calibrated["reference"],
                               info={"path": str(reference_logits)}),
        split=split, intersect=_intersect(intersect, identities))


def _aligned(path, ids, labels_path):
    """A logits table reordered to the labels' ids; every id must be in both."""
    own_ids, cols = read_table(path)
    if set(own_ids) != set(ids):
        extra = sorted(set(own_ids) - set(ids))
        missing = sorted(set(ids) - set(own_ids))
        example = f"{extra[0]!r} is not in {labels_path}" if extra else f"{missing[0]!r} is missing"
        raise SparsebiasError(f"{path}: sample ids do not match {labels_path} ({len(extra)} extra, "
                              f"{len(missing)} missing; e.g. {example})")
    order = np.argsort(own_ids)[np.searchsorted(own_ids[np.argsort(own_ids)], ids)]
    return ids, {k: v[order] for k, v in cols.items()}


def _binary(values, path, column) -> np.ndarray:
    """Labels in {0, 1} or CelebA's {-1, 1}, as 0/1."""
    if np.isnan(values).any():
        raise SparsebiasError(f"{path}: column {column!r} has an empty cell (row {int(np.isnan(values).argmax()) + 1})")
    uniques = set(np.unique(values).tolist())
    if uniques <= {0.0, 1.0}:
        return values.astype(np.int8)
    if uniques <= {-1.0, 1.0}:
        return (values > 0).astype(np.int8)
    others = sorted(uniques - {0.0, 1.0, -1.0})
    raise SparsebiasError(f"{path}: column {column!r} holds labels other than 0/1 or -1/1 "
                          + (f"(e.g. {others[0]:g})" if others else "(0, 1 and -1 mixed)"))


def _check_columns(needed, columns, path):
    missing = [c for c in needed if c not in columns]
    if missing:
        raise SparsebiasError(f"{path}: no column {missing[0]!r}")


def _check_identities(identities, label_names, where):
    unknown = [i for i in identities if i not in label_names]
    if unknown:
        raise SparsebiasError(f"identity {unknown[0]!r} is not an attribute of {where}; known: {', '.join(label_names)}")


def _check_logits(z, where):
    if not np.isfinite(z).all():
        raise SparsebiasError(f"{where}: logits must be finite (found NaN or infinity)")


def _intersect(intersect, identities) -> tuple:
    chosen = tuple(intersect) if intersect else tuple(identities[:2])
    unknown = [i for i in chosen if i not in identities]
    if unknown:
        raise SparsebiasError(f"--intersect {unknown[0]!r} is not one of the audited identities {identities}")
    return chosen


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
