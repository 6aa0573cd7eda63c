"""The manifest of a bundle: manifest.json as written (a dict, so the JSON on disk and every
bundle since 0.1.0 read unchanged), with accessors for what its readers ask for."""

from __future__ import annotations


class Manifest(dict):
    """manifest.json, checked by `load_bundle` against MANIFEST_SCHEMA before it is built."""

    @property
    def architecture(self) -> str:
        return self["architecture"]

    @property
    def attributes(self) -> list[str]:
        """The model's outputs: binary attributes, or the class heads of a group task."""
        return list(self["attributes"])

    @property
    def label_names(self) -> list[str]:
        """Every label column of the data set, in the order of the splits' label arrays."""
        return list(self["label_names"])

    @property
    def label_classes(self) -> dict | None:
        """Class names per class-valued label (group tasks); None for binary attributes."""
        return self.get("label_classes")

    @property
    def identities(self) -> list[str]:
        """The labels the audit measures bias over by default."""
        return list(self["identities"])

    @property
    def binary(self) -> bool:
        return "heads" not in self["output"]

    @property
    def sparsity(self) -> float:
        """Overall sparsity of the prunable weights."""
        return float(self["sparsity"]["overall"])

    @property
    def layer_sparsity(self) -> dict[str, float]:
        return dict(self["sparsity"]["per_layer"])

    @property
    def data_spec(self) -> str:
        """The data set the model was trained and evaluated on, as `--data` names it."""
        return self["data"]["spec"]

    @property
    def mitigations(self) -> dict:
        """Thresholds and override tables stored with the model ({} when none)."""
        return dict(self.get("mitigations", {}))

    @property
    def flops(self) -> dict | None:
        """Dense and sparse MACs per image (bundles of sparsebias 0.1.0 lack them)."""
        return self.get("flops")
