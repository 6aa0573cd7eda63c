"""What the viewer shows, as plain arrays: one row per sample of the split, one column
per attribute (a binary attribute, or one class of a class head, one-vs-rest)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bundle.format import load_bundle
from ..core.errors import SparsebiasError
from ..core.outputs import Outputs
from ..data import locate_data
from ..metrics.calibration import sigmoid
from ..mitigate.deployed import Deployment
from ..mitigate.overrides import read_overrides
from ..mitigate.thresholds import read_thresholds

CERTAIN = 0.4          # |p - 0.5| >= this is high certainty


@dataclass
class ModelView:
    name: str
    probability: np.ndarray   # (n, attributes)
    decision: np.ndarray      # (n, attributes) 0/1
    decided_by: str


@dataclass
class ViewerData:
    split: str
    ids: np.ndarray                  # (n,) image ids, paths relative to image_dir
    image_dir: Path
    attributes: list[str]
    labels: np.ndarray               # (n, attributes) 0/1
    identities: dict[str, np.ndarray]  # identity -> (n,) group value as text
    models: dict[str, ModelView]     # "model", and "reference" when given
    overridden: np.ndarray           # (n, attributes) bool: cells the bundle's override table fixes

    def image_path(self, image_id: str) -> Path | None:
        """The file of a sample of this split, or None for anything else (no path is trusted)."""
        if image_id not in self._index:
            return None
        path = (self.image_dir / image_id).resolve()
        return path if path.is_relative_to(self.image_dir.resolve()) and path.is_file() else None

    def __post_init__(self):
        self._index = {x: i for i, x in enumerate(self.ids.tolist())}


def load_viewer_data(bundle_path, reference_path=None, data: str | None = None, split: str = "test") -> ViewerData:
    bundle = load_bundle(bundle_path)
    reference = load_bundle(reference_path) if reference_path else None
    m = bundle.manifest
    table = locate_data(data or m["data"]["spec"], None if data else m["data"]["root"])
    if split not in ("val", "test"):
        raise SparsebiasError(f"--split must be val or test, got {split!r}")
    ev = bundle.split(split)
    known = set(table.ids.tolist())
    missing = [x for x in ev["ids"][:100].tolist() if x not in known]
    if missing:
        raise SparsebiasError(f"the data set at {table.root} does not hold this bundle's images (e.g. {missing[0]}); "
                              "point --data at the data set the bundle was trained on")
    outputs = Outputs.from_manifest(m)
    names = list(m["label_names"])
    attributes, labels = _attribute_columns(outputs, ev["labels"], names)
    models = {"model": _model_view(bundle, ev["logits"], outputs)}
    if reference is not None:
        ref = reference.split(split)
        if not np.array_equal(ref["ids"], ev["ids"]) or Outputs.from_manifest(reference.manifest) != outputs:
            raise SparsebiasError(f"reference {reference.path} is not a model of the same data set, split and outputs")
        models["reference"] = _model_view(reference, ref["logits"], outputs)
    classes = m.get("label_classes")
    identities = {}
    for name in m["identities"]:
        values = ev["labels"][:, names.index(name)]
        identities[name] = np.array(classes[name], dtype=object)[values].astype(str) if classes else values.astype(str)
    overridden = np.zeros(labels.shape, dtype=bool)
    table_rows = read_overrides(bundle) if outputs.binary else None
    if table_rows is not None:
        row = {x: i for i, x in enumerate(ev["ids"].tolist())}
        for sample, attribute in zip(table_rows.ids.tolist(), table_rows.attributes.tolist()):
            if sample in row and attribute in attributes:
                overridden[row[sample], attributes.index(attribute)] = True
    return ViewerData(split, ev["ids"], table.image_dir, attributes, labels, identities, models, overridden)


def _attribute_columns(outputs: Outputs, labels: np.ndarray, names: list[str]):
    if outputs.binary:
        return list(outputs.names), labels[:, [names.index(a) for a in outputs.names]].astype(np.int8)
    values = [labels[:, names.index(head)] == k for head, classes in zip(outputs.names, outputs.classes)
              for k in range(len(classes))]
    return outputs.class_columns(), np.stack(values, axis=1).astype(np.int8)


def _model_view(bundle, logits: np.ndarray, outputs: Outputs) -> ModelView:
    if not outputs.binary:
        offsets = [s.start for s in outputs.slices().values()]
        decision = np.zeros((len(logits), outputs.size), dtype=np.int8)
        np.put_along_axis(decision, outputs.predict(logits) + offsets, 1, axis=1)
        return ModelView(bundle.path.name, outputs.class_probabilities(logits), decision, "most likely class")
    thresholds = Deployment(read_thresholds(bundle))   # overridden samples are marked, not decided, here
    return ModelView(bundle.path.name, sigmoid(logits), thresholds.decide(logits).astype(np.int8),
                     "calibrated thresholds" if thresholds.mitigated else "p > 0.5")


# ---------------------------------------------------------------- random draws

def draw(rows: np.ndarray, seed: int, n: int, salt: int = 0) -> np.ndarray:
    """n rows at random (all when fewer), reproducible from the seed; `salt` separates draws on one page."""
    rng = np.random.default_rng([seed, salt])
    return np.sort(rng.choice(rows, size=min(n, len(rows)), replace=False)) if len(rows) else rows


def label_sample(d: ViewerData, j: int, seed: int, n: int) -> dict[str, np.ndarray]:
    y = d.labels[:, j]
    return {"positives": draw(np.flatnonzero(y == 1), seed, n, 1),
            "negatives": draw(np.flatnonzero(y == 0), seed, n, 2)}


def outcome_sample(d: ViewerData, j: int, model: str, seed: int, n: int) -> dict[str, np.ndarray]:
    """TP, FN, FP, TN, each as high and low certainty (|p - 0.5| >= CERTAIN or not)."""
    view = d.models[model]
    y, yhat = d.labels[:, j], view.decision[:, j]
    certain = np.abs(view.probability[:, j] - 0.5) >= CERTAIN
    cells = {"TP": (y == 1) & (yhat == 1), "FN": (y == 1) & (yhat == 0),
             "FP": (y == 0) & (yhat == 1), "TN": (y == 0) & (yhat == 0)}
    out = {}
    for k, (name, cell) in enumerate(cells.items()):
        out[f"{name}, high certainty"] = draw(np.flatnonzero(cell & certain), seed, n, 10 + 2 * k)
        out[f"{name}, low certainty"] = draw(np.flatnonzero(cell & ~certain), seed, n, 11 + 2 * k)
    return out


def exemplar_cells(d: ViewerData, kind: str, identity: str | None, value: str | None) -> np.ndarray:
    """(n, attributes) bool: CIE (decisions of model and reference differ), PIE (right under the
    reference, wrong under the model) or overridden, restricted to one identity group."""
    if kind == "overridden":
        cells = d.overridden.copy()
    else:
        model, ref = d.models["model"].decision, d.models["reference"].decision
        cells = model != ref if kind == "cie" else (ref == d.labels) & (model != d.labels)
    if identity is not None:
        cells &= (d.identities[identity] == value)[:, None]
    return cells


def exemplar_sample(cells: np.ndarray, seed: int, n: int) -> list[tuple[int, int]]:
    """(row, attribute) pairs at random."""
    pairs = np.argwhere(cells)
    if len(pairs) == 0:
        return []
    chosen = draw(np.arange(len(pairs)), seed, n, 30)
    return [tuple(map(int, pairs[i])) for i in chosen]
