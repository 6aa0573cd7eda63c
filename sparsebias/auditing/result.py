"""The audit's result: the report document (report.json) with accessors, frames and files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

ROLES = ("compressed", "reference")
PER_ATTRIBUTE = ("auc", "uncertainty", "ece")          # per model, whatever the view
PER_VIEW = ("accuracy", "tcb", "interdependence")      # per model and view
PAIRWISE = ("cie_rate", "cie_dense_uncertain", "dense_uncertain")


@dataclass(frozen=True)
class AuditReport(Mapping):
    """A compressed model audited against its reference: per attribute (binary heads) or per
    sensitive group (class heads, FairGRAPE's metrics). `to_dict()` is report.json, which the
    report also reads as: `report["metrics"]["compressed"]["auc"]`."""

    document: dict

    def __getitem__(self, key):
        return self.document[key]

    def __iter__(self):
        return iter(self.document)

    def __len__(self):
        return len(self.document)

    @property
    def mode(self) -> str:
        """'attributes' or 'groups'."""
        return "groups" if self.document.get("kind") == "groups" else "attributes"

    @property
    def models(self) -> dict:
        return self.document["models"]

    @property
    def attributes(self) -> list[str]:
        """The audited attributes (attribute mode) or class heads (group mode)."""
        return list(self.document["attributes"] if self.mode == "attributes" else self.document["tasks"])

    @property
    def identities(self) -> list[str]:
        """The identities (attribute mode) or groupings (group mode) bias is measured over."""
        if self.mode == "groups":
            return list(self.document["groupings"])
        return list(self.document["settings"]["identities"])

    @property
    def views(self) -> list[str]:
        """Decision views of the compressed model: default (p > 0.5), calibrated, overridden, mitigated."""
        return list(self.document["metrics"]["compressed"]["views"]) if self.mode == "attributes" else ["default"]

    @property
    def amplified(self) -> list[dict]:
        """Attribute-identity pairs where the compressed model's BA exceeds the reference's, largest first."""
        return list(self.document["summary"]["amplified"]) if self.mode == "attributes" else []

    def to_dict(self) -> dict:
        return self.document

    def to_frame(self, view: str = "default") -> pd.DataFrame:
        """One row per attribute (columns `compressed_<metric>`, `reference_<metric>`, `ba_<identity>`
        pairs and the pairwise CIE rates), or in group mode one row per (head, grouping, group)."""
        if self.mode == "groups":
            return self._group_frame()
        if view not in self.views:
            raise KeyError(f"view {view!r} is not in this audit; it has {', '.join(self.views)}")
        metrics, rows = self.document["metrics"], {}
        for role in ROLES:
            m = metrics[role]
            chosen = m["views"].get(view, m["views"]["default"])
            for key in PER_ATTRIBUTE:
                rows[f"{role}_{key}"] = m[key]
            for key in PER_VIEW:
                rows[f"{role}_{key}"] = chosen[key]
            for identity, values in chosen["ba"].items():
                rows[f"{role}_ba_{identity}"] = {a: v["value"] for a, v in values.items()}
        pairwise = self.document["pairwise"]
        for key in PAIRWISE:
            rows[key] = pairwise[key]
        for identity, values in pairwise["pie"].items():
            rows[f"pie_gap_{identity}"] = {a: v["gap"] for a, v in values.items()}
        frame = pd.DataFrame(rows, index=self.attributes, dtype=float)
        frame.index.name = "attribute"
        return frame

    def _group_frame(self) -> pd.DataFrame:
        records = []
        for head, entry in self.document["tasks"].items():
            pie = entry["pie"]
            for grouping in self.identities:
                ours, theirs = entry["compressed"]["by"][grouping], entry["reference"]["by"][grouping]
                for group, accuracy in ours["group_accuracy"].items():
                    records.append({
                        "head": head, "grouping": grouping, "group": str(group),
                        "compressed_accuracy": accuracy, "reference_accuracy": theirs["group_accuracy"][group],
                        "compressed_ap": ours.get("group_ap", {}).get(group),
                        "reference_ap": theirs.get("group_ap", {}).get(group),
                        "pie_rate": pie["rates"].get(group) if grouping == self.document["pie_grouping"] else None})
        return pd.DataFrame.from_records(records).set_index(["head", "grouping", "group"]).astype(float)
