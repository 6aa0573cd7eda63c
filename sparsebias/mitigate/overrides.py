"""The override table: fixed labels for the samples the dense model is least sure of.

Chosen with the dense (reference) model only, as the CVPR 2023 paper (Section 4.2,
Appendix B) does: for each attribute whose dense bias amplification is positive (for
any audited identity), rank the eval samples by dense uncertainty |p_dense - 0.5|,
smallest first, and fix the top `budget` share to the true label (a human override)
or to the dense model's label. At inference the fixed label replaces the model's for
that sample: keyed by sample id in the data set, and by the sha256 of the image file
for images handed to `predict`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from ..core.errors import SparsebiasError
from ..metrics.bias import bias_amplification
from ..metrics.calibration import sigmoid
from ..metrics.classification import as_2d, decisions

FILE = "overrides.csv"
COLUMNS = ("id", "sha256", "attribute", "label", "dense_probability")
LABEL_SOURCES = ("true", "dense")


@dataclass(frozen=True)
class OverrideTable:
    ids: np.ndarray              # (m,) sample ids
    sha256: np.ndarray           # (m,) content hashes of the images
    attributes: np.ndarray       # (m,) attribute names
    labels: np.ndarray           # (m,) fixed 0/1 labels
    dense_probability: np.ndarray

    def __len__(self):
        return len(self.ids)

    def apply(self, y_pred, keys, attributes: list[str], by: str = "id") -> np.ndarray:
        """Decisions with the table's labels in place for every (key, attribute) it lists."""
        out = as_2d(y_pred).copy()
        row = {k: i for i, k in enumerate(np.asarray(keys).tolist())}
        column = {a: j for j, a in enumerate(attributes)}
        table_keys = self.ids if by == "id" else self.sha256
        for key, attribute, label in zip(table_keys.tolist(), self.attributes.tolist(), self.labels.tolist()):
            if key in row and attribute in column:
                out[row[key], column[attribute]] = label
        return out

    def to_csv(self) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in zip(self.ids, self.sha256, self.attributes, self.labels, self.dense_probability):
            writer.writerow([row[0], row[1], row[2], int(row[3]), f"{row[4]:.6f}"])
        return buffer.getvalue().encode()


def build_override_table(ids, sha256, y_true, dense_logits, eligible, attributes: list[str], budget: float,
                         label: str = "true") -> OverrideTable:
    """Rank by dense uncertainty per eligible attribute and fix the top `budget` share of samples."""
    if not 0 < budget <= 1:
        raise SparsebiasError(f"budget must be a share in (0, 1], got {budget}")
    if label not in LABEL_SOURCES:
        raise SparsebiasError(f"override label must be one of {', '.join(LABEL_SOURCES)}, got {label!r}")
    y, p = as_2d(y_true) > 0, sigmoid(as_2d(dense_logits))
    count = int(round(budget * len(p)))
    rows = {name: [] for name in COLUMNS}
    for j in np.flatnonzero(eligible):
        chosen = np.argsort(np.abs(p[:, j] - 0.5), kind="stable")[:count]
        fixed = y[chosen, j] if label == "true" else p[chosen, j] > 0.5
        rows["id"] += list(np.asarray(ids)[chosen])
        rows["sha256"] += list(np.asarray(sha256)[chosen])
        rows["attribute"] += [attributes[j]] * len(chosen)
        rows["label"] += list(fixed.astype(np.int8))
        rows["dense_probability"] += list(p[chosen, j])
    return OverrideTable(np.array(rows["id"], dtype=str), np.array(rows["sha256"], dtype=str),
                         np.array(rows["attribute"], dtype=str), np.array(rows["label"], dtype=np.int8),
                         np.array(rows["dense_probability"], dtype=np.float64))


def read_overrides(bundle) -> OverrideTable | None:
    """The bundle's override table, checked against its attributes; None when it has none."""
    if not bundle.has(FILE):
        return None
    path = bundle.file(FILE)
    try:
        rows = list(csv.reader(io.StringIO(path.read_text())))
    except (UnicodeDecodeError, csv.Error) as e:
        raise SparsebiasError(f"{path}: unreadable override table ({e})") from None
    if not rows or tuple(rows[0]) != COLUMNS:
        raise SparsebiasError(f"{path}: expected the columns {', '.join(COLUMNS)}")
    body = rows[1:]
    short = [i for i, r in enumerate(body, 2) if len(r) != len(COLUMNS)]
    if short:
        raise SparsebiasError(f"{path}:{short[0]}: expected {len(COLUMNS)} fields")
    unknown = sorted({r[2] for r in body} - set(bundle.attributes))
    if unknown:
        raise SparsebiasError(f"{path}: override for {unknown[0]!r}, which is not one of the bundle's attributes")
    try:
        labels = [int(r[3]) for r in body]
        probability = np.array([float(r[4]) for r in body], dtype=np.float64)
    except ValueError as e:
        raise SparsebiasError(f"{path}: malformed row ({e})") from None
    if not set(labels) <= {0, 1} or not np.isfinite(probability).all():
        raise SparsebiasError(f"{path}: override labels must be 0 or 1, probabilities finite")
    return OverrideTable(np.array([r[0] for r in body], dtype=str), np.array([r[1] for r in body], dtype=str),
                         np.array([r[2] for r in body], dtype=str), np.array(labels, dtype=np.int8), probability)


def eligible_attributes(labels, dense_logits, identities: dict, train_rates: dict,
                        attributes: list[str]) -> dict[str, list[str]]:
    """The attributes whose dense bias amplification is positive, each with the identities
    for which it is: the attributes an override table covers."""
    dense_pred = decisions(dense_logits)
    triggered: dict[str, list[str]] = {}
    for identity, column in identities.items():
        r1, r0 = train_rates[identity]
        ba, _ = bias_amplification(labels, dense_pred, column, r1=r1, r0=r0,
                                   is_identity=[a == identity for a in attributes])
        for j in np.flatnonzero(np.nan_to_num(ba) > 0):
            triggered.setdefault(attributes[j], []).append(identity)
    return {a: triggered[a] for a in attributes if a in triggered}
