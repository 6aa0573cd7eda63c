"""What a model's outputs mean: binary attributes, or class heads.

CelebA-style models have one logit per binary attribute (sigmoid, binary cross-entropy).
Group-labelled data sets (FairFace, UTKFace) are classified: one head per label column,
one logit per class, a softmax over each head, cross-entropy summed over heads. The
training loop, the export and every consumer of a bundle read this layout from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metrics.classification import accuracy_score, decisions, roc_auc_score


@dataclass(frozen=True)
class Outputs:
    names: tuple[str, ...]
    classes: tuple[tuple[str, ...], ...] | None = None  # per head; None for binary attributes

    @classmethod
    def from_table(cls, table, attributes) -> "Outputs":
        """The outputs a model trained on these columns of a data set needs."""
        if table.binary:
            return cls(tuple(attributes))
        return cls(tuple(attributes), tuple(table.classes[j] for j in table.columns(attributes)))

    @classmethod
    def from_manifest(cls, manifest: dict) -> "Outputs":
        heads = manifest["output"].get("heads")
        if heads is None:
            return cls(tuple(manifest["attributes"]))
        return cls(tuple(h["name"] for h in heads), tuple(tuple(h["classes"]) for h in heads))

    @property
    def binary(self) -> bool:
        return self.classes is None

    @property
    def size(self) -> int:
        return len(self.names) if self.binary else sum(map(len, self.classes))

    def slices(self) -> dict[str, slice]:
        """Each head's columns in the logit vector."""
        out, start = {}, 0
        for name, classes in zip(self.names, self.classes or ()):
            out[name] = slice(start, start + len(classes))
            start += len(classes)
        return out

    def manifest(self, output_name: str) -> dict:
        if self.binary:
            return {"name": output_name, "activation": "sigmoid", "threshold": 0.5}
        return {"name": output_name, "activation": "softmax per head",
                "heads": [{"name": n, "classes": list(c)} for n, c in zip(self.names, self.classes)]}

    def loss(self):
        """The training loss: binary cross-entropy, or cross-entropy summed over heads."""
        import torch.nn.functional as F

        if self.binary:
            return F.binary_cross_entropy_with_logits
        slices = list(self.slices().values())
        return lambda logits, targets: sum(F.cross_entropy(logits[:, s], targets[:, j]) for j, s in enumerate(slices))

    def predict(self, logits: np.ndarray) -> np.ndarray:
        """Decisions (binary, z > 0) or the class index of each head: (n, heads)."""
        if self.binary:
            return decisions(logits)
        return np.stack([logits[:, s].argmax(axis=1) for s in self.slices().values()], axis=1)

    def class_columns(self) -> list[str]:
        """'head=class' for every logit column of class heads."""
        return [f"{h}={c}" for h, classes in zip(self.names, self.classes) for c in classes]

    def class_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Every head's softmax side by side, in class_columns() order."""
        return np.concatenate([self.probabilities(logits, h) for h in self.names], axis=1)

    def probabilities(self, logits: np.ndarray, head: str) -> np.ndarray:
        """Softmax over one head's classes, (n, classes)."""
        z = logits[:, self.slices()[head]].astype(np.float64)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def score(self, labels: np.ndarray, logits: np.ndarray) -> dict:
        """Mean accuracy and mean AUC over attributes or heads (one-vs-rest, macro over classes)."""
        if self.binary:
            auc = roc_auc_score(labels, logits)
            accuracy = float(accuracy_score(labels, decisions(logits)).mean())
        else:
            accuracy = float(np.mean(self.predict(logits) == labels))
            auc = np.array([np.nanmean(roc_auc_score(np.eye(len(c), dtype=np.int8)[labels[:, j]],
                                                     logits[:, s]))
                            for j, (c, s) in enumerate(zip(self.classes, self.slices().values()))])
        return {"accuracy": accuracy, "auc": float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")}
