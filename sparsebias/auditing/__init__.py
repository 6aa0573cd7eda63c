"""The bias audit: a compressed model against its dense reference, on the same samples.

`audit()` takes two bundles (re-run on their data first, so the audit judges what the
models do) or a user's own labels and logits (files or pandas frames), chooses the
attribute audit (binary heads: BA, TCB, ECE, uncertainty, CIEs, PIEs, group metrics) or
the group audit (class heads: FairGRAPE's per-group metrics) itself, and returns an
`AuditReport`. `calibrate()` and `overrides()` store mitigations in a bundle.
"""

from __future__ import annotations

from ..bundle import as_bundle
from ..core.errors import SparsebiasError
from .attributes import audit as attribute_audit
from .groups import group_audit, group_inputs_from_bundles
from .inputs import AuditInputs, ModelOutputs, inputs_from_bundles, inputs_from_files
from .mitigations import calibrate, overrides
from .replay import LOGIT_SPLITS, REPLAY_ENGINE, ReplayedBundle, judged, replay_bundle
from .result import AuditReport

FILE_INPUTS = ("labels", "logits", "reference_logits", "train_labels")


def audit(bundle=None, reference=None, *, split: str = "test", identities=None, intersect=None,
          reference_group: str | None = None, replay: bool = True, data: str | None = None,
          engine: str = REPLAY_ENGINE, labels=None, logits=None, reference_logits=None, train_labels=None,
          val_labels=None, val_logits=None, val_reference_logits=None, progress=None, echo=print) -> AuditReport:
    """Audit `bundle` against `reference` (paths or loaded bundles), or, with no bundle,
    the model whose `logits` and `reference_logits` are given for `labels` (each a CSV or
    Parquet path or a pandas frame: an id column, then one column per attribute), or
    `AuditInputs` already gathered.

    Bundles are re-run on their val and test images (`replay=False` judges the logits
    they store); `data` and `engine` say where and how. `identities` are the attributes
    (or, in group mode, the group columns) bias is measured over.

    >>> report = audit("exported/resnet18_99", "exported/resnet18_dense")  # doctest: +SKIP
    >>> report.to_frame()[["compressed_accuracy", "reference_accuracy"]]   # doctest: +SKIP
    """
    if isinstance(bundle, AuditInputs):
        return AuditReport(attribute_audit(bundle))
    files = dict(labels=labels, logits=logits, reference_logits=reference_logits, train_labels=train_labels)
    given = {k for k, v in files.items() if v is not None}
    if bundle is not None:
        if reference is None:
            raise SparsebiasError("reference: the dense bundle to audit against is required")
        if given:
            raise SparsebiasError("give either a bundle or --labels/--logits files, not both")
        pair = judged([as_bundle(bundle), as_bundle(reference)], replay=replay, data=data, engine=engine,
                      progress=progress, echo=echo)
        if not pair[0].manifest.binary:
            return AuditReport(group_audit(group_inputs_from_bundles(*pair, split=split, sensitive=identities,
                                                                     reference_group=reference_group)))
        inputs = inputs_from_bundles(*pair, split=split, identities=identities, intersect=intersect)
    else:
        missing = [f"--{k.replace('_', '-')}" for k in FILE_INPUTS if k not in given]
        if missing:
            raise SparsebiasError(f"give a bundle, or files: missing {', '.join(missing)}")
        inputs = inputs_from_files(**files, val_labels=val_labels, val_logits=val_logits,
                                   val_reference_logits=val_reference_logits, identities=identities,
                                   intersect=intersect, split=split)
    return AuditReport(attribute_audit(inputs))


__all__ = ["LOGIT_SPLITS", "REPLAY_ENGINE", "AuditInputs", "AuditReport", "ModelOutputs", "ReplayedBundle", "audit",
           "calibrate", "inputs_from_bundles", "inputs_from_files", "judged", "overrides", "replay_bundle"]
