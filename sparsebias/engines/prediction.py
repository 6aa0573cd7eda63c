"""`predict`: images on disk -> per-attribute probabilities and decisions, through an engine.

Images are prepared as the bundle's manifest says (shorter side resized, centre crop,
scaled and standardised). Decisions use the bundle's calibrated thresholds when it has
them (else p > 0.5), then its override table, matched by the image file's sha256. A
bundle with class heads (gender, race) gives each head's softmax and its most likely
class. An image that cannot be read is reported and skipped; the rest are still predicted.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import SparsebiasError, check_file
from ..core.outputs import Outputs
from ..data.images import load_image, standardize
from ..metrics.calibration import sigmoid
from ..mitigate.deployed import Deployment
from .base import open_model
from .registry import AUTO, load_engine

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class Predictions:
    attributes: list[str]                                 # attributes, or class heads
    probability_names: list[str] = field(default_factory=list)  # one per probability column
    classes: tuple | None = None                          # per head, for class heads
    paths: list[Path] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)       # content keys, as override tables use
    probabilities: np.ndarray = None                      # (n, probability columns)
    decisions: np.ndarray = None                          # (n, attributes): 0/1, or class index per head
    decided_by: str = "threshold 0.5"
    overridden: list[list[str]] = field(default_factory=list)   # per image, attributes set by the override table
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        """One row per image read: sha256, p_<output> per probability column, the decision per
        attribute (0/1) or head (its class), and the attributes the override table set."""
        chosen = {name: (self.decisions[:, j] if self.classes is None
                         else np.asarray(self.classes[j], dtype=object)[self.decisions[:, j]])
                  for j, name in enumerate(self.attributes)} if len(self.paths) else {a: [] for a in self.attributes}
        frame = pd.DataFrame({"sha256": self.sha256,
                              **{f"p_{n}": self.probabilities[:, j] for j, n in enumerate(self.probability_names)},
                              **chosen,
                              "overridden": [";".join(o) for o in self.overridden] or [""] * len(self.paths)},
                             index=pd.Index([str(p) for p in self.paths], name="path"))
        return frame

    def to_dict(self) -> dict:
        return {"attributes": self.attributes, "decided_by": self.decided_by,
                "predictions": self.to_frame().reset_index().to_dict(orient="records"),
                "unreadable": [{"path": str(p), "reason": r} for p, r in self.unreadable]}


def find_images(paths) -> list[Path]:
    """Files as given; folders searched recursively for image files, in sorted order."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            found.append(check_file(path, "image"))
        else:
            raise SparsebiasError(f"no such file or folder: {path}")
    return found


def predict(bundle_path, paths, *, engine: str = AUTO, batch_size: int = 16, cores: int | None = None,
            progress=None) -> Predictions:
    """Run a bundle (or its folder) on image files and folders (one path or several), with the
    decisions it deploys; `progress(done, total)` follows the images.

    >>> predict("exported/resnet18_99", "photos/").to_frame()  # doctest: +SKIP
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    model = open_model(bundle_path)
    if model.bundle is None:
        raise SparsebiasError(f"{bundle_path}: predict needs a bundle folder (for attribute names and preprocessing)")
    spec = model.bundle.manifest["input"]
    size = model.input_shape[-1]
    runner = load_engine(engine, model, batch_size, cores)
    files = find_images(paths)
    outputs = Outputs.from_manifest(model.bundle.manifest)
    result = Predictions(attributes=list(outputs.names), classes=outputs.classes,
                         probability_names=list(outputs.names) if outputs.binary else outputs.class_columns())
    logits = []
    for start in range(0, len(files), batch_size):
        images = []
        for path in files[start:start + batch_size]:
            try:
                images.append(load_image(path, size))
                result.sha256.append(hashlib.sha256(path.read_bytes()).hexdigest())
                result.paths.append(path)
            except (SparsebiasError, OSError) as e:
                result.unreadable.append((path, str(e)))
        if images:
            batch = standardize(np.stack(images), spec["mean"], spec["std"])
            logits.append(runner.predict(batch))
        if progress:
            progress(min(start + batch_size, len(files)), len(files))
    logits = np.concatenate(logits) if logits else np.zeros((0, outputs.size), np.float32)
    if not outputs.binary:
        result.probabilities = outputs.class_probabilities(logits)
        result.decisions = outputs.predict(logits)
        result.decided_by = "most likely class per head"
        return result
    result.probabilities = sigmoid(logits)
    deployment = Deployment.of(model.bundle)
    result.decisions = deployment.decide(logits, result.sha256, result.attributes, by="sha256")
    if deployment.overrides is not None:
        changed = result.decisions != Deployment(deployment.thresholds).decide(logits)
        result.overridden = [[a for a, c in zip(result.attributes, row) if c] for row in changed]
    result.decided_by = deployment.describe()
    return result


def predictions_csv(result: Predictions) -> str:
    """One row per image: path, sha256, p_<attribute> and <attribute> (0/1) for each attribute, overridden.

    For class heads: p_<head>=<class> for every class, and <head> holding the chosen class."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "sha256", *(f"p_{a}" for a in result.probability_names), *result.attributes, "overridden"])
    for i, path in enumerate(result.paths):
        chosen = [int(d) for d in result.decisions[i]] if result.classes is None else \
            [classes[d] for classes, d in zip(result.classes, result.decisions[i])]
        writer.writerow([str(path), result.sha256[i], *(f"{p:.6f}" for p in result.probabilities[i]), *chosen,
                         ";".join(result.overridden[i]) if result.overridden else ""])
    return out.getvalue()
