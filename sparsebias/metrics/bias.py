"""Bias amplification and label interdependence (shared DESIGN.md has the definitions).

BA(A, I) asks whether the model predicts attribute A even more often for the identity
group that the training labels already associate with A. It is undefined, and
returned as nan with one of the REASON_* strings, where the question has no answer.
"""

from __future__ import annotations

import numpy as np

from .classification import as_2d

MIN_POSITIVES = 10          # eval positives needed on each side of the identity
MIN_RELATIVE_GAP = 0.1      # |r1 - r0| / min(r1, r0) below this: the identity barely moves the attribute

REASON_IS_IDENTITY = "the attribute is the identity"
REASON_NO_ASSOCIATION = "the identity barely changes the attribute's training rate (|r1 - r0| / min(r1, r0) < 0.1)"
REASON_FEW_POSITIVES = "fewer than 10 eval samples with the attribute on one side of the identity"
REASON_NONE_PREDICTED = "nothing is predicted positive"


def training_rates(train_labels, train_identity) -> tuple[np.ndarray, np.ndarray]:
    """r1 = P(A=1 | I=1) and r0 = P(A=1 | I=0) on the training split, per attribute (nan for an empty side)."""
    y, ident = as_2d(train_labels) > 0, np.asarray(train_identity) > 0
    with np.errstate(invalid="ignore"):
        return y[ident].mean(axis=0) if ident.any() else np.full(y.shape[1], np.nan), \
            y[~ident].mean(axis=0) if (~ident).any() else np.full(y.shape[1], np.nan)


def bias_amplification(y_true, y_pred, identity, *, r1, r0, is_identity=None) -> tuple[np.ndarray, list]:
    """BA per attribute, and the reason (or None) it is undefined.

    g = 1 if r1 > r0 else 0;  BA = N(yhat=1, I=g) / N(yhat=1) - N(y=1, I=g) / N(y=1).

    >>> y    = [[1], [1], [0], [0]] * 10
    >>> yhat = [[1], [0], [1], [0]] * 10
    >>> ident = [1, 0, 1, 0] * 10
    >>> bias_amplification(y, yhat, ident, r1=[0.8], r0=[0.2])[0].tolist()
    [0.5]
    """
    y, yhat, ident = as_2d(y_true) > 0, as_2d(y_pred) > 0, np.asarray(identity) > 0
    r1, r0 = np.asarray(r1, float), np.asarray(r0, float)
    g = r1 > r0
    in_g = ident[:, None] == g[None, :]                       # (n, k): sample is in the associated group
    pred_pos, true_pos = yhat.sum(axis=0), y.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (yhat & in_g).sum(axis=0) / pred_pos - (y & in_g).sum(axis=0) / true_pos
        relative_gap = np.abs(r1 - r0) / np.minimum(r1, r0)
    pos_in, pos_out = (y & ident[:, None]).sum(axis=0), (y & ~ident[:, None]).sum(axis=0)
    is_identity = np.zeros(len(g), bool) if is_identity is None else np.asarray(is_identity, bool)
    reasons = []
    for j in range(len(g)):
        reasons.append(REASON_IS_IDENTITY if is_identity[j]
                       else REASON_NO_ASSOCIATION if not relative_gap[j] >= MIN_RELATIVE_GAP
                       else REASON_FEW_POSITIVES if min(pos_in[j], pos_out[j]) < MIN_POSITIVES
                       else REASON_NONE_PREDICTED if pred_pos[j] == 0 else None)
    value = np.where([r is None for r in reasons], value, np.nan)
    return value, reasons


def label_interdependence(y_pred) -> np.ndarray:
    """R^2 of an OLS regression (with intercept) of each predicted label on all the others.

    Computed from the covariance matrix, one small solve per attribute; nan for a label
    predicted constant (nothing to explain).

    >>> a = np.array([0, 1, 0, 1, 1, 0]); b = np.array([0, 0, 1, 1, 0, 1])
    >>> label_interdependence(np.c_[a, 1 - a, b]).round(3).tolist()
    [1.0, 1.0, 0.111]
    """
    x = as_2d(y_pred).astype(np.float64)
    cov = np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])
    out = np.full(x.shape[1], np.nan)
    for j in range(x.shape[1]):
        if cov[j, j] <= 0:
            continue
        others = [i for i in range(x.shape[1]) if i != j and cov[i, i] > 0]
        if not others:
            out[j] = 0.0
            continue
        coef = np.linalg.lstsq(cov[np.ix_(others, others)], cov[others, j], rcond=None)[0]
        out[j] = min(1.0, max(0.0, float(cov[j, others] @ coef) / cov[j, j]))
    return out
