"""Per-attribute accuracy and ROC-AUC on (n_samples, n_attributes) arrays."""

from __future__ import annotations

import numpy as np


def _as_2d(a) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape(-1, 1) if a.ndim == 1 else a


def accuracy_score(y_true, logits, threshold=0.0) -> np.ndarray:
    """Share of samples with [logit > threshold] == label, per attribute.

    >>> accuracy_score([[1, 0], [0, 0]], [[2.0, -1.0], [1.0, -3.0]]).tolist()
    [0.5, 1.0]
    """
    y, z = _as_2d(y_true), _as_2d(logits)
    return ((z > np.asarray(threshold)) == (y > 0)).mean(axis=0)


def roc_auc_score(y_true, scores) -> np.ndarray:
    """Area under the ROC curve per attribute (ties count one half); nan where one class is absent.

    Computed as the Mann-Whitney U statistic from average ranks.

    >>> roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]).tolist()
    [0.75]
    """
    y, s = _as_2d(y_true) > 0, _as_2d(scores).astype(float)
    out = np.full(y.shape[1], np.nan)
    for j in range(y.shape[1]):
        n_pos = int(y[:, j].sum())
        n_neg = len(y) - n_pos
        if n_pos and n_neg:
            out[j] = (_average_ranks(s[:, j])[y[:, j]].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    first = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = ((starts + ends + 1) / 2.0)[group]
    return ranks
