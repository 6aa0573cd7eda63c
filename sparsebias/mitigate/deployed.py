"""Decisions as deployed: a bundle's logits through its thresholds, then its override table.

The one place that does this; `predict`, the audit's `mitigated` view and the viewer
all ask it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metrics.classification import decisions
from .overrides import OverrideTable, read_overrides
from .thresholds import read_thresholds


@dataclass(frozen=True)
class Deployment:
    """What a bundle ships besides its model: calibrated thresholds and an override table, either optional."""

    thresholds: np.ndarray | None = None
    overrides: OverrideTable | None = None

    @classmethod
    def of(cls, bundle) -> Deployment:
        """The bundle's own mitigations, read and checked against its attributes."""
        return cls(read_thresholds(bundle), read_overrides(bundle))

    @property
    def mitigated(self) -> bool:
        return self.thresholds is not None or self.overrides is not None

    def decide(self, logits, keys=(), attributes=(), by: str = "id") -> np.ndarray:
        """0/1 decisions: [z > threshold] (0 without thresholds), then the table's labels for the
        (key, attribute) pairs it lists; keys are sample ids (by="id") or image sha256s."""
        out = decisions(logits, 0.0 if self.thresholds is None else self.thresholds)
        if self.overrides is not None:
            out = self.overrides.apply(out, keys, list(attributes), by=by)
        return out

    def describe(self) -> str:
        """How decisions are made, for outputs a person reads."""
        return (("calibrated thresholds" if self.thresholds is not None else "threshold 0.5")
                + (f" and {len(self.overrides)} override(s)" if self.overrides is not None else ""))
