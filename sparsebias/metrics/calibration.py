"""How well probabilities and thresholds fit the labels: uncertainty, ECE, TCB.

Probabilities are p = sigmoid(logit). Definitions follow shared DESIGN.md.
"""

from __future__ import annotations

import numpy as np

from .classification import as_2d

UNCERTAIN_BAND = (0.1, 0.9)


def sigmoid(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free form of 1 / (1 + exp(-z))


def uncertainty_rate(logits, band=UNCERTAIN_BAND) -> np.ndarray:
    """Share of samples with band[0] < p < band[1], per attribute.

    >>> uncertainty_rate([[-5.0], [0.0], [1.0], [5.0]]).tolist()
    [0.5]
    """
    p = sigmoid(as_2d(logits))
    return ((p > band[0]) & (p < band[1])).mean(axis=0)


def reliability_curve(y_true, logits, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per attribute and equal-width bin of p: (mean p, mean y, count), each (n_bins, n_attributes).

    Bin b holds b/n_bins <= p < (b+1)/n_bins, the last bin also p = 1. Empty bins have nan means.
    """
    y, p = as_2d(y_true) > 0, sigmoid(as_2d(logits))
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    k = p.shape[1]
    flat = (bins + n_bins * np.arange(k)).ravel()          # one bincount for every attribute at once
    count = np.bincount(flat, minlength=n_bins * k).reshape(k, n_bins).T
    sum_p = np.bincount(flat, weights=p.ravel(), minlength=n_bins * k).reshape(k, n_bins).T
    sum_y = np.bincount(flat, weights=y.ravel(), minlength=n_bins * k).reshape(k, n_bins).T
    with np.errstate(invalid="ignore", divide="ignore"):
        return sum_p / count, sum_y / count, count


def expected_calibration_error(y_true, logits, n_bins: int = 10) -> np.ndarray:
    """ECE = sum over bins of |B|/N * |mean p in B - mean y in B|, per attribute; in [0, 1].

    >>> expected_calibration_error([1, 0, 1, 1], [3.0, -3.0, 0.0, 0.0]).round(4).tolist()
    [0.2737]
    """
    mean_p, mean_y, count = reliability_curve(y_true, logits, n_bins)
    gaps = np.where(count > 0, np.abs(np.nan_to_num(mean_p) - np.nan_to_num(mean_y)), 0.0)
    return (count * gaps).sum(axis=0) / count.sum(axis=0)


def threshold_calibration_bias(y_true, y_pred, train_positive_rate) -> np.ndarray:
    """TCB: N(yhat=1)/N(y=1) for attributes rarer than 1/2 in training, else N(yhat=0)/N(y=0).

    1 means the threshold neither over- nor under-predicts the minority class; nan
    where the eval split has none of that class.

    >>> threshold_calibration_bias([[1, 0], [0, 0], [0, 1]], [[1, 0], [1, 0], [0, 1]], [0.2, 0.7]).tolist()
    [2.0, 1.0]
    """
    y, yhat = as_2d(y_true) > 0, as_2d(y_pred) > 0
    rare = np.asarray(train_positive_rate) < 0.5
    predicted = np.where(rare, yhat.sum(axis=0), (~yhat).sum(axis=0)).astype(float)
    actual = np.where(rare, y.sum(axis=0), (~y).sum(axis=0)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(actual > 0, predicted / actual, np.nan)
