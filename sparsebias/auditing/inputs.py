"""The audit's inputs, checked once at the door: two models' logits on the same samples,
labels and identities, from sparsebias bundles (replayed or as stored) or from a user's
own label and logit files (CSV or Parquet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..bundle import as_bundle
from ..core.errors import SparsebiasError, check_file, first_line
from ..data.attributes import DEFAULT_IDENTITIES
from ..metrics.bias import training_rates
from ..mitigate.deployed import Deployment
from ..mitigate.overrides import OverrideTable, read_overrides
from ..mitigate.thresholds import calibrate_thresholds, read_thresholds
from .replay import logits_source


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
        return Deployment(self.bundled_thresholds, self.overrides).mitigated


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


# ---------------------------------------------------------------- from bundles

def inputs_from_bundles(bundle, reference, split: str = "test", identities=None, intersect=None) -> AuditInputs:
    """Audit inputs from two bundles (paths, or bundles already loaded or replayed: `replay.replay_bundle`)."""
    bundle, reference = as_bundle(bundle), as_bundle(reference)
    bundle.require_binary("the attribute audit (gate, overrides)")
    attributes = bundle.attributes
    missing = [x for x in attributes if x not in reference.attributes]
    if missing:
        raise SparsebiasError(f"reference {reference.path} does not predict {missing[0]!r}")
    ev, ev_ref = _split_with_logits(bundle, split), _split_with_logits(reference, split)
    train = bundle.split("train")
    same_data(bundle, reference, {split: (ev, ev_ref), "train": (train, reference.split("train"))})
    label_names = bundle.manifest.label_names
    identities = list(identities or bundle.manifest.identities)
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
    if bundle.manifest.label_names != list(reference.manifest.label_names):
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
                        info={"path": str(bundle.path), "architecture": m.architecture,
                              "precision": m.get("quantization", {}).get("precision", "fp32"),
                              "sparsity": m.sparsity, "logits": logits_source(bundle)})


# ---------------------------------------------------------------- from files

def read_table(path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(ids, columns) from a pandas frame, or a CSV or Parquet file, whose first column (or
    'id' / 'image_id') holds sample ids."""
    frame = path.frame if isinstance(path, _Frame) else _read_frame(Path(path))
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


def _read_frame(path: Path) -> pd.DataFrame:
    check_file(path, "file")
    try:
        return pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as e:  # pandas raises many kinds for a malformed file
        raise SparsebiasError(f"{path}: cannot read as {'Parquet' if path.suffix == '.parquet' else 'CSV'} "
                              f"({first_line(e, 160)})") from None


@dataclass(frozen=True)
class _Frame:
    """A pandas frame handed in place of a file, named by its role in messages and the report."""

    frame: pd.DataFrame
    role: str

    def __str__(self):
        return f"the {self.role} frame"


def _stem(table) -> str:
    return table.role if isinstance(table, _Frame) else Path(table).stem


def inputs_from_files(*, labels, logits, reference_logits, train_labels, val_labels=None, val_logits=None,
                      val_reference_logits=None, identities=None, intersect=None, split="test") -> AuditInputs:
    """Audit inputs from files or pandas frames: labels with ids, logits of the model and its
    reference, training labels."""
    labels, logits, reference_logits, train_labels, val_labels, val_logits, val_reference_logits = (
        _Frame(v, role.replace("_", " ")) if isinstance(v, pd.DataFrame) else v for role, v in (
            ("labels", labels), ("logits", logits), ("reference_logits", reference_logits),
            ("train_labels", train_labels), ("val_labels", val_labels), ("val_logits", val_logits),
            ("val_reference_logits", val_reference_logits)))
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
        model=ModelOutputs(_stem(logits), model_z, *calibrated["model"], info={"path": str(logits)}),
        reference=ModelOutputs(_stem(reference_logits), ref_z, *calibrated["reference"],
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
