"""FairGRAPE's group metrics for a classification task with a sensitive group variable.

For classes c and groups g: overall accuracy; FNR and FPR one-vs-rest, macro-averaged
over classes; accuracy per group and Std(dAcc), the sample standard deviation over
groups of (compressed - reference) accuracy; average precision per group (one-vs-rest,
macro over classes), Std(AP) and Std(dAP). Binary attributes are the two-class case.
"""

from __future__ import annotations

import numpy as np

from .classification import average_precision_score


def intersectional_groups(**columns) -> np.ndarray:
    """One group label per sample from several group variables, e.g. "Male=1,Young=0".

    >>> intersectional_groups(Male=[1, 0], Young=[0, 0]).tolist()
    ['Male=1,Young=0', 'Male=0,Young=0']
    """
    names = list(columns)
    values = [np.asarray(columns[n]) for n in names]
    return np.array([",".join(f"{n}={v}" for n, v in zip(names, row)) for row in zip(*values)])


def macro_error_rates(y_true, y_pred, classes=None) -> tuple[float, float]:
    """(FNR, FPR), each one-vs-rest per class and averaged over classes.

    >>> macro_error_rates([0, 0, 1, 1], [0, 1, 1, 1])
    (0.25, 0.25)
    """
    y, yhat = np.asarray(y_true), np.asarray(y_pred)
    classes = np.unique(y) if classes is None else classes
    fnr = [np.mean(yhat[y == c] != c) for c in classes if (y == c).any()]
    fpr = [np.mean(yhat[y != c] == c) for c in classes if (y != c).any()]
    return float(np.mean(fnr)), float(np.mean(fpr))


def macro_average_precision(y_true, scores, classes) -> float:
    """One-vs-rest AP per class, averaged over the classes present.

    Classes are integers indexing the columns of scores (n, C); (n,) scores are the
    two-class case, a higher score meaning class 1.
    """
    y, s = np.asarray(y_true), np.asarray(scores, dtype=float)
    if s.ndim == 1:
        s = np.c_[-s, s]
    ap = [average_precision_score(y == c, s[:, int(c)])[0] for c in classes if (y == c).any()]
    return float(np.mean(ap)) if ap else float("nan")


def group_metrics(y_true, y_pred, groups, *, scores=None, reference_pred=None, reference_scores=None) -> dict:
    """Every FairGRAPE metric for one model, with the Std(d...) terms when a reference is given."""
    y, yhat = np.asarray(y_true), np.asarray(y_pred)
    classes = np.unique(np.r_[y, yhat])
    names, codes = np.unique(np.asarray(groups), return_inverse=True)
    members = {g.item() if hasattr(g, "item") else g: codes == i for i, g in enumerate(names)}
    fnr, fpr = macro_error_rates(y, yhat, classes)
    acc = {g: float(np.mean(yhat[m] == y[m])) for g, m in members.items()}
    out = {"accuracy": float(np.mean(yhat == y)), "fnr": fnr, "fpr": fpr, "group_accuracy": acc,
           "std_acc": _sample_std(acc.values())}
    if reference_pred is not None:
        ref = np.asarray(reference_pred)
        out["std_dacc"] = _sample_std(acc[g] - np.mean(ref[m] == y[m]) for g, m in members.items())
    if scores is not None:
        s = np.asarray(scores)
        ap = {g: macro_average_precision(y[m], s[m], classes) for g, m in members.items()}
        out["group_ap"], out["std_ap"] = ap, _sample_std(ap.values())
        if reference_scores is not None:
            r = np.asarray(reference_scores)
            out["std_dap"] = _sample_std(ap[g] - macro_average_precision(y[m], r[m], classes)
                                         for g, m in members.items())
    return out


def _sample_std(values) -> float:
    v = np.array(list(values), dtype=float)
    return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
