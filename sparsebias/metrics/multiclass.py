"""Multi-class views of rare-class harm (the CVPR paper's Appendix L, iWildCam).

Macro precision, recall and F1 give every class the same weight; split by class size
they show whether compression sacrifices small classes. Softmax entropy, averaged with
each true class weighted equally, measures uncertainty the same way.
"""

from __future__ import annotations

import numpy as np

SIZE_BUCKETS = ((1, 5), (6, 20), (21, 50), (51, 200), (201, None))


def per_class_scores(y_true, y_pred, classes) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of each class (0 where undefined, as scikit-learn's zero_division=0)."""
    y, yhat = np.asarray(y_true), np.asarray(y_pred)
    tp = np.array([np.sum((yhat == c) & (y == c)) for c in classes], dtype=float)
    predicted = np.array([np.sum(yhat == c) for c in classes], dtype=float)
    actual = np.array([np.sum(y == c) for c in classes], dtype=float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def macro_scores(y_true, y_pred, classes) -> dict[str, float]:
    """Macro precision, recall and F1 over `classes`.

    >>> macro_scores([0, 0, 1, 2], [0, 1, 1, 2], [0, 1, 2])
    {'precision': 0.8333333333333334, 'recall': 0.8333333333333334, 'f1': 0.7777777777777777}
    """
    scores = per_class_scores(y_true, y_pred, classes)
    return {k: float(np.mean(scores[k])) for k in ("precision", "recall", "f1")}


def scores_by_class_size(y_true, y_pred, classes, buckets=SIZE_BUCKETS) -> dict[str, dict]:
    """Macro precision, recall and F1 over the classes whose eval support falls in each bucket."""
    scores = per_class_scores(y_true, y_pred, classes)
    out = {}
    for low, high in buckets:
        inside = (scores["support"] >= low) & ((scores["support"] <= high) if high else True)
        if inside.any():
            out[f"{low}-{high}" if high else f"{low}+"] = {
                "classes": int(inside.sum()), **{k: float(scores[k][inside].mean()) for k in ("precision", "recall", "f1")}}
    return out


def class_balanced_entropy(y_true, probabilities) -> float:
    """Mean softmax entropy (nats), each true class weighted equally.

    >>> round(class_balanced_entropy([0, 0, 1], [[1.0, 0.0], [1.0, 0.0], [0.5, 0.5]]), 4)
    0.3466
    """
    y, p = np.asarray(y_true), np.asarray(probabilities, dtype=float)
    entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
    return float(np.mean([entropy[y == c].mean() for c in np.unique(y)]))
