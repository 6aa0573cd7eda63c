"""Mitigations stored in a bundle: thresholds calibrated on its validation split, and the
override table ranked by its dense reference. Each writes a new, verified version of the
bundle; the policies themselves (sparsebias.mitigate) take arrays.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..bundle import Bundle, as_bundle, update_bundle
from ..core.errors import SparsebiasError
from ..data import open_data
from ..mitigate.overrides import FILE as OVERRIDES_FILE
from ..mitigate.overrides import build_override_table, eligible_attributes
from ..mitigate.thresholds import FILE as THRESHOLDS_FILE
from ..mitigate.thresholds import calibrate_thresholds, thresholds_json
from .inputs import inputs_from_bundles


def calibrate(bundle, split: str = "val") -> tuple[Bundle, np.ndarray]:
    """Set per-attribute thresholds on the bundle's `split` and store them in the bundle.

    >>> updated, thresholds = calibrate("exported/resnet18_99")  # doctest: +SKIP
    """
    bundle = as_bundle(bundle)
    bundle.require_binary("calibrate")
    data = bundle.split(split)
    if "logits" not in data:
        raise SparsebiasError(f"bundle {bundle.path} has no logits for the {split!r} split")
    thresholds = calibrate_thresholds(bundle.attribute_labels(data), data["logits"])
    mitigations = {**bundle.manifest.mitigations,
                   "thresholds": {"file": THRESHOLDS_FILE, "split": split, "method": "validation positive count"}}
    return update_bundle(bundle, {THRESHOLDS_FILE: thresholds_json(bundle.attributes, thresholds, split)},
                         {"mitigations": mitigations}), thresholds


def overrides(bundle, reference, *, budget: float = 0.05, label: str = "true", split: str = "test",
              identities=None, data: str | None = None, echo=print):
    """Build the override table from the reference (dense) bundle and store it in `bundle`.

    >>> updated, table = overrides("exported/resnet18_99", "exported/resnet18_dense")  # doctest: +SKIP
    """
    bundle, reference = as_bundle(bundle), as_bundle(reference)
    inputs = inputs_from_bundles(bundle, reference, split=split, identities=identities)
    triggered = eligible_attributes(inputs.labels, inputs.reference.logits, inputs.identities, inputs.train_rates,
                                    inputs.attributes)
    table_data = open_data(data or bundle.manifest.data_spec, echo=echo)
    hashes = []
    for image_id in inputs.ids:
        image = table_data.image_dir / str(image_id)
        if not image.is_file():
            raise SparsebiasError(f"image {image} not found: the override table keys images by content; "
                                  "point --data at the data set the bundle was evaluated on")
        hashes.append(hashlib.sha256(image.read_bytes()).hexdigest())
    eligible = np.array([a in triggered for a in inputs.attributes])
    table = build_override_table(inputs.ids, np.array(hashes), inputs.labels, inputs.reference.logits, eligible,
                                 inputs.attributes, budget, label)
    mitigations = {**bundle.manifest.mitigations,
                   "overrides": {"file": OVERRIDES_FILE, "budget": budget, "label": label, "split": split,
                                 "reference": str(reference.path), "rows": len(table), "attributes": triggered}}
    return update_bundle(bundle, {OVERRIDES_FILE: table.to_csv()}, {"mitigations": mitigations}), table
