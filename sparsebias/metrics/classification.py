"""Per-attribute decisions, accuracy, ROC-AUC and average precision on (n_samples, n_attributes) arrays."""

from __future__ import annotations

import numpy as np


def as_2d(a) -> np.ndarray:
    """A 1-d array is one attribute: (n,) -> (n, 1)."""
    a = np.asarray(a)
    return a.reshape(-1, 1) if a.ndim == 1 else a


def decisions(logits, thresholds=0.0) -> np.ndarray:
    """yhat = [z > t], per attribute; t = 0 is probability 0.5.

    >>> decisions([[2.0, -1.0], [0.5, 0.5]], thresholds=[1.0, 0.0]).tolist()
    [[1, 0], [0, 1]]
    """
    return (as_2d(logits) > np.asarray(thresholds)).astype(np.int8)


def accuracy_score(y_true, y_pred) -> np.ndarray:
    """Share of samples whose decision equals the label, per attribute.

    >>> accuracy_score([[1, 0], [0, 0]], [[1, 0], [1, 0]]).tolist()
    [0.5, 1.0]
    """
    return ((as_2d(y_true) > 0) == (as_2d(y_pred) > 0)).mean(axis=0)


def roc_auc_score(y_true, scores) -> np.ndarray:
    """Area under the ROC curve per attribute (ties count one half); nan where one class is absent.

    Computed as the Mann-Whitney U statistic from average ranks.

    >>> roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]).tolist()
    [0.75]
    """
    y, s = as_2d(y_true) > 0, as_2d(scores).astype(float)
    out = np.full(y.shape[1], np.nan)
    for j in range(y.shape[1]):
        n_pos = int(y[:, j].sum())
        n_neg = len(y) - n_pos
        if n_pos and n_neg:
            out[j] = (_average_ranks(s[:, j])[y[:, j]].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out


def average_precision_score(y_true, scores) -> np.ndarray:
    """AP = sum over score thresholds of (R_n - R_(n-1)) * P_n, per attribute; nan without positives.

    Tied scores form one threshold, as in scikit-learn.

    >>> average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]).round(4).tolist()
    [0.8333]
    """
    y, s = as_2d(y_true) > 0, as_2d(scores).astype(float)
    out = np.full(y.shape[1], np.nan)
    for j in range(y.shape[1]):
        n_pos = int(y[:, j].sum())
        if not n_pos:
            continue
        order = np.argsort(-s[:, j])  # ties are grouped below, so no stable sort is needed
        hits = np.cumsum(y[order, j])
        last_of_tie = np.r_[s[order, j][1:] != s[order, j][:-1], True]
        tp, seen = hits[last_of_tie], np.flatnonzero(last_of_tie) + 1
        recall_step = np.diff(np.r_[0, tp]) / n_pos
        out[j] = float(np.sum(recall_step * tp / seen))
    return out


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x)
    sorted_x = x[order]
    first = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = ((starts + ends + 1) / 2.0)[group]
    return ranks
