"""Per-attribute decision thresholds set on the validation split (shared DESIGN.md).

The threshold makes the number of predicted positives on validation equal the number
of true positives there. DESIGN.md names the k-th largest validation logit (k = the
number of positives); since decisions are [z > t], we take the midpoint between the
k-th and (k+1)-th largest logits, so that exactly k validation samples (barring ties)
are predicted positive.
"""

from __future__ import annotations

import json

import numpy as np

from ..core.errors import SparsebiasError
from ..core.files import JSON_READ_ERRORS
from ..metrics.classification import as_2d

FILE = "thresholds.json"


def calibrate_thresholds(y_val, logits_val) -> np.ndarray:
    """One logit threshold per attribute.

    >>> calibrate_thresholds([[1], [0], [1], [0]], [[3.0], [2.0], [1.0], [-1.0]]).tolist()
    [1.5]
    """
    y, z = as_2d(y_val) > 0, as_2d(logits_val).astype(np.float64)
    ordered = -np.sort(-z, axis=0)                       # descending, per attribute
    out = np.empty(z.shape[1])
    for j, k in enumerate(y.sum(axis=0)):
        if k == 0:
            out[j] = ordered[0, j]                       # nothing above the largest logit
        elif k == len(z):
            out[j] = np.nextafter(ordered[-1, j], -np.inf)  # everything above the smallest
        else:
            out[j] = (ordered[k - 1, j] + ordered[k, j]) / 2
    return out


def thresholds_json(attributes: list[str], thresholds: np.ndarray, split: str) -> bytes:
    record = {"method": "validation positive count", "split": split,
              "thresholds": dict(zip(attributes, map(float, thresholds)))}
    return (json.dumps(record, indent=2) + "\n").encode()


def read_thresholds(bundle) -> np.ndarray | None:
    """The bundle's calibrated logit thresholds in attribute order, or None when it has none."""
    if not bundle.has(FILE):
        return None
    path = bundle.file(FILE)
    try:
        table = json.loads(path.read_text())["thresholds"]
    except (*JSON_READ_ERRORS, KeyError, TypeError) as e:
        raise SparsebiasError(f"{path}: unreadable thresholds ({e})") from None
    if not isinstance(table, dict):
        raise SparsebiasError(f"{path}: 'thresholds' must map each attribute to a number")
    if set(table) != set(bundle.attributes):
        missing = sorted(set(bundle.attributes) - set(table)) or sorted(set(table) - set(bundle.attributes))
        raise SparsebiasError(f"{path}: thresholds do not match the bundle's attributes (e.g. {missing[0]!r})")
    values = [table[a] for a in bundle.attributes]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values):
        raise SparsebiasError(f"{path}: thresholds must be finite numbers")
    return np.array(values, dtype=np.float64)
