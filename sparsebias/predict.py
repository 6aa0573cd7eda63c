"""`predict`: images on disk -> per-attribute probabilities and decisions, through an engine.

Images are prepared as the bundle's manifest says (shorter side resized, centre crop,
scaled and standardised). Decisions use the bundle's calibrated thresholds when it has
them (else p > 0.5), then its override table, matched by the image file's sha256. An
image that cannot be read is reported and skipped; the rest are still predicted.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .engines import load_engine, open_model
from .errors import SparsebiasError
from .metrics import decisions, sigmoid
from .mitigate.overrides import read_overrides
from .mitigate.thresholds import read_thresholds

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class Predictions:
    attributes: list[str]
    paths: list[Path] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)       # content keys, as override tables use
    probabilities: np.ndarray = None                      # (n, attributes)
    decisions: np.ndarray = None                          # (n, attributes) of 0/1
    decided_by: str = "threshold 0.5"
    overridden: list[list[str]] = field(default_factory=list)   # per image, attributes set by the override table
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def find_images(paths) -> list[Path]:
    """Files as given; folders searched recursively for image files, in sorted order."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise SparsebiasError(f"no such file or folder: {path}")
    return found


def predict(bundle_path, paths, *, engine: str = "deepsparse", batch_size: int = 16, cores: int | None = None,
            progress=None) -> Predictions:
    import torch

    from .data.images import load_image, normalize

    model = open_model(bundle_path)
    if model.bundle is None:
        raise SparsebiasError(f"{bundle_path}: predict needs a bundle folder (for attribute names and preprocessing)")
    spec = model.bundle.manifest["input"]
    size = model.input_shape[-1]
    runner = load_engine(engine, model, batch_size, cores)
    files = find_images(paths)
    result = Predictions(attributes=list(model.bundle.attributes))
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
            batch = normalize(torch.from_numpy(np.stack(images)), spec["mean"], spec["std"]).numpy()
            logits.append(runner.predict(batch))
        if progress:
            progress(min(start + batch_size, len(files)), len(files))
    logits = np.concatenate(logits) if logits else np.zeros((0, len(result.attributes)), np.float32)
    result.probabilities = sigmoid(logits)
    thresholds, overrides = read_thresholds(model.bundle), read_overrides(model.bundle)
    result.decisions = decisions(logits, 0.0 if thresholds is None else thresholds)
    if overrides is not None:
        overridden = overrides.apply(result.decisions, result.sha256, result.attributes, by="sha256")
        result.overridden = [[a for a, changed in zip(result.attributes, row) if changed]
                             for row in overridden != result.decisions]
        result.decisions = overridden
    result.decided_by = (("calibrated thresholds" if thresholds is not None else "threshold 0.5")
                         + (f" and {len(overrides)} override(s)" if overrides is not None else ""))
    return result


def predictions_csv(result: Predictions) -> str:
    """One row per image: path, sha256, p_<attribute> and <attribute> (0/1) for each attribute, overridden."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "sha256", *(f"p_{a}" for a in result.attributes), *result.attributes, "overridden"])
    for i, path in enumerate(result.paths):
        writer.writerow([str(path), result.sha256[i], *(f"{p:.6f}" for p in result.probabilities[i]),
                         *(int(d) for d in result.decisions[i]),
                         ";".join(result.overridden[i]) if result.overridden else ""])
    return out.getvalue()
