"""Where compression changes individual decisions: CIEs across runs, PIEs for one pair of models."""

from __future__ import annotations

import numpy as np

from .classification import as_2d


def modal_labels(runs) -> np.ndarray:
    """The majority decision over runs, per sample and attribute: 1, 0, or -1 for a tie.

    >>> modal_labels([[[1, 0]], [[1, 1]], [[0, 1]]]).tolist()
    [[1, 1]]
    """
    stacked = np.asarray(runs) > 0                     # (runs, n, k)
    votes = 2 * stacked.sum(axis=0) - stacked.shape[0]   # positive: majority 1, negative: majority 0
    return np.where(votes > 0, 1, np.where(votes < 0, 0, -1)).astype(np.int8)


def compression_identified_exemplars(dense_runs, compressed_runs) -> np.ndarray:
    """CIE mask (n, k): the modal dense decision differs from the modal compressed one, right or wrong.

    A sample-attribute whose decisions tie across the runs of either model has no modal
    label and is not counted.

    >>> compression_identified_exemplars([[[1, 0]], [[1, 0]]], [[[0, 0]], [[0, 1]]]).tolist()
    [[True, False]]
    """
    dense, compressed = modal_labels(dense_runs), modal_labels(compressed_runs)
    return (dense >= 0) & (compressed >= 0) & (dense != compressed)


def pie_mask(y_true, dense_pred, compressed_pred) -> np.ndarray:
    """PIE (n, k): right under the dense model and wrong under the compressed one."""
    y = as_2d(y_true) > 0
    return ((as_2d(dense_pred) > 0) == y) & ((as_2d(compressed_pred) > 0) != y)


def pie_rates(y_true, dense_pred, compressed_pred, groups) -> dict:
    """PIE rate per group (per attribute), and the largest gap between two groups.

    >>> r = pie_rates([[1]] * 4, [[1]] * 4, [[0], [1], [1], [1]], ["a", "a", "b", "b"])
    >>> r["rates"]["a"].tolist(), r["rates"]["b"].tolist(), r["gap"].tolist()
    ([0.5], [0.0], [0.5])
    """
    pie = pie_mask(y_true, dense_pred, compressed_pred)
    groups = np.asarray(groups)
    rates = {g.item() if hasattr(g, "item") else g: pie[groups == g].mean(axis=0) for g in np.unique(groups)}
    stacked = np.stack(list(rates.values()))
    return {"rates": rates, "gap": stacked.max(axis=0) - stacked.min(axis=0)}
