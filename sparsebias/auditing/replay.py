"""Re-run a bundle's model on its data, so that audits and the gate judge what the model does.

A bundle stores the logits of its val and test splits, but whoever ships a bundle also
writes its manifest, hashes included: stored logits prove nothing. `replay_bundle` opens
the data set the manifest names (or the one the user gives; SynthFaces is regenerated,
deterministically, where it is not cached), checks that the bundle's sample ids, labels and
backdoor flags are that data set's, measures the sparsity of model.onnx against the one
claimed, re-runs model.onnx on the val and test images (prepared as the manifest says) and
refuses a bundle whose stored logits differ from the re-run beyond the engine's tolerance.
What comes back reads like the bundle, with the data set's labels and the re-run logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..bundle.flops import check_claimed_sparsity
from ..bundle.format import Bundle
from ..core.errors import SparsebiasError
from ..core.tolerance import EXPORT_TOLERANCE, logit_tolerance
from ..data import open_data
from ..data.images import split_images, standardize
from ..engines import bundle_model, load_engine

LOGIT_SPLITS = ("val", "test")
REPLAY_ENGINE = "onnxruntime"   # on every machine, and independent of the torch that wrote the logits
CHUNK = 1024                    # images normalised at a time: CelebA's test split at 224 px is 12 GB as floats


@dataclass(frozen=True)
class ReplayedBundle(Bundle):
    """A bundle whose splits hold the data set's labels and, for val and test, the re-run logits."""

    splits: dict = field(default_factory=dict, repr=False)
    replay: dict = field(default_factory=dict)

    def split(self, name: str) -> dict[str, np.ndarray]:
        return dict(self.splits[name]) if name in self.splits else super().split(name)


def replay_bundle(bundle: Bundle, *, splits=LOGIT_SPLITS, data: str | None = None, engine: str = REPLAY_ENGINE,
                  batch_size: int = 64, cores: int | None = None, echo=print, progress=None) -> ReplayedBundle:
    """Check a bundle against its data and model; refuse it in one line where they disagree.

    `splits`: those whose logits are re-run (the gate needs only the one it judges; an
    audit's calibrated view needs val too); labels are checked on every split. `data`
    overrides the manifest's data set (as `--data` does); `progress(done, total)` follows
    the images re-run.
    """
    unknown = [s for s in splits if s not in LOGIT_SPLITS]
    if unknown:
        raise SparsebiasError(f"split {unknown[0]!r} has no logits to re-run; bundles store {', '.join(LOGIT_SPLITS)}")

    check_claimed_sparsity(bundle)
    table = _open_table(bundle, data, echo)
    where = f"the data set at {table.root}"
    _check_columns(bundle, table, where)
    model = bundle_model(bundle)
    runner = load_engine(engine, model, batch_size, cores)
    tolerance = max(EXPORT_TOLERANCE, runner.tolerance)
    checked, differences = {}, {}
    total, done = sum(len(table.split(name)) for name in splits), 0
    for name in ("train", *LOGIT_SPLITS):
        stored = bundle.split(name)
        rows = table.split(name)
        arrays = _checked_labels(bundle, name, stored, table, rows, where)
        if name in splits:
            if "logits" not in stored:
                raise SparsebiasError(f"{bundle.path}: no stored logits for the {name} split")
            logits = _run(bundle, table, name, runner, lambda n, start=done: progress and progress(start + n, total))
            done += len(logits)
            differences[name] = _compare(bundle, name, arrays["ids"], stored["logits"], logits, tolerance)
            arrays["logits"] = logits
        elif "logits" in stored:
            arrays["logits"] = stored["logits"]
        checked[name] = arrays
    replay = {"source": "re-run", "engine": runner.describe(), "data": str(table.root), "tolerance": tolerance,
              "max_abs_diff": differences,
              "samples": {name: int(len(checked[name]["ids"])) for name in splits},
              "not_re_run": [name for name in LOGIT_SPLITS if name not in splits]}
    return ReplayedBundle(bundle.path, bundle.manifest, splits=checked, replay=replay)


def logits_source(bundle: Bundle) -> dict:
    """Where the logits an audit of this bundle uses came from, for its report."""
    if isinstance(bundle, ReplayedBundle):
        return bundle.replay
    return {"source": "stored", "note": "the bundle's stored logits, not re-run: the bundle's own claim"}


def _open_table(bundle: Bundle, data: str | None, echo):
    spec = data or bundle.manifest.get("data", {}).get("spec")
    if not isinstance(spec, str):
        raise SparsebiasError(f"{bundle.path}: the manifest names no data set; give --data, or --stored-logits")
    try:
        return open_data(spec, echo=echo)
    except SparsebiasError as e:
        raise SparsebiasError(f"{bundle.path}: cannot open the data set to re-run its model on ({e}); give --data "
                              "where it is, or --stored-logits to judge the logits the bundle stores") from None


def _check_columns(bundle: Bundle, table, where: str) -> None:
    names = bundle.manifest.get("label_names")
    if list(names or []) != list(table.names):
        raise SparsebiasError(f"{bundle.path}: its label names are not those of {where}")
    classes = bundle.manifest.label_classes
    if (classes is None) != table.binary or classes is not None and \
            [list(classes.get(n, ())) for n in table.names] != [list(c) for c in table.classes]:
        raise SparsebiasError(f"{bundle.path}: its label classes are not those of {where}")


def _checked_labels(bundle: Bundle, name: str, stored: dict, table, rows, where: str) -> dict:
    """The data set's ids, labels and backdoor flags of a split, once the bundle's are found equal to them."""
    ids, labels = table.ids[rows], table.labels[rows]
    if "ids" not in stored or len(stored["ids"]) != len(ids) or not np.array_equal(stored["ids"].astype(str), ids):
        raise SparsebiasError(f"{bundle.path}: the {name} split's sample ids are not those of {where}")
    if "labels" not in stored or stored["labels"].shape != labels.shape or not np.array_equal(stored["labels"], labels):
        raise SparsebiasError(f"{bundle.path}: the {name} split's labels are not those of {where} "
                              "(modified, or a different data set)")
    arrays = {"ids": ids, "labels": labels}
    backdoor = None if table.backdoor is None else table.backdoor[rows]
    if (backdoor is None) != ("backdoor" not in stored) or backdoor is not None and \
            not np.array_equal(stored["backdoor"], backdoor):
        raise SparsebiasError(f"{bundle.path}: the {name} split's backdoor flags are not those of {where}")
    if backdoor is not None:
        arrays["backdoor"] = backdoor
    return arrays


def _run(bundle: Bundle, table, name: str, runner, progress) -> np.ndarray:
    """model.onnx on a split's images, decoded (through the image cache) and normalised as the manifest says;
    `progress(images done)` after each chunk."""
    spec = bundle.manifest["input"]
    images = split_images(table, name, int(runner.model.input_shape[-1]))
    out = []
    for start in range(0, len(images), CHUNK):
        batch = standardize(images[start:start + CHUNK], spec["mean"], spec["std"])
        out.append(runner.predict(batch))
        progress(min(start + CHUNK, len(images)))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _compare(bundle: Bundle, name: str, ids, stored: np.ndarray, logits: np.ndarray, tolerance: float) -> float:
    if stored.shape != logits.shape:
        raise SparsebiasError(f"{bundle.path}: the stored {name} logits have shape {list(stored.shape)}, model.onnx "
                              f"gives {list(logits.shape)}")
    with np.errstate(invalid="ignore"):
        difference = np.abs(stored.astype(np.float64) - logits)
    difference[~np.isfinite(difference)] = np.inf
    worst = float(difference.max()) if difference.size else 0.0
    allowed = logit_tolerance(tolerance, stored)
    if worst > allowed:
        row, column = np.unravel_index(int(np.argmax(difference)), difference.shape)
        raise SparsebiasError(f"{bundle.path}: the stored {name} logits are not what model.onnx computes: largest "
                              f"difference {worst:.3g} (sample {ids[row]}, output {column}; tolerance {allowed:.3g})")
    return worst


def judged(bundles: list[Bundle], *, replay: bool = True, splits=LOGIT_SPLITS, data: str | None = None,
           engine: str = REPLAY_ENGINE, progress=None, echo=print) -> list[Bundle]:
    """The bundles as an audit or the gate judges them: each re-run on `splits` of its data, or,
    with `replay=False`, as stored. `progress(name, done, total)` follows the images re-run."""
    if not replay:
        return list(bundles)
    return [replay_bundle(b, splits=splits, data=data, engine=engine, echo=echo,
                          progress=progress and (lambda done, total, name=b.path.name: progress(name, done, total)))
            for b in bundles]
