"""FairGRAPE group metrics against scikit-learn and fairlearn."""

import numpy as np
import pytest
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score, average_precision_score, balanced_accuracy_score, confusion_matrix

from sparsebias.metrics import average_precision_score as ap
from sparsebias.metrics import group_metrics, intersectional_groups, macro_error_rates


def task(seed=0, n=1200, classes=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    groups = intersectional_groups(gender=rng.integers(0, 2, n), race=rng.integers(0, 3, n))
    scores = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[y]
    ref_scores = scores + rng.normal(0, 0.8, scores.shape)
    return y, scores, ref_scores, groups


def test_average_precision_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    s = np.round(rng.normal(size=400) + y, 1)  # many ties
    assert ap(y, s)[0] == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_error_rates_match_scikit_learn():
    y, scores, _, _ = task()
    pred = scores.argmax(axis=1)
    fnr, fpr = macro_error_rates(y, pred)
    assert fnr == pytest.approx(1 - balanced_accuracy_score(y, pred))
    cm = confusion_matrix(y, pred)
    fp = cm.sum(axis=0) - np.diag(cm)
    tn = cm.sum() - cm.sum(axis=0) - cm.sum(axis=1) + np.diag(cm)
    assert fpr == pytest.approx(np.mean(fp / (fp + tn)))


def test_group_metrics_match_fairlearn_and_scikit_learn():
    y, scores, ref_scores, groups = task()
    pred, ref_pred = scores.argmax(axis=1), ref_scores.argmax(axis=1)
    ours = group_metrics(y, pred, groups, scores=scores, reference_pred=ref_pred, reference_scores=ref_scores)
    by_group = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=pred, sensitive_features=groups).by_group
    ref_by_group = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=ref_pred, sensitive_features=groups).by_group
    assert ours["group_accuracy"] == pytest.approx(by_group.to_dict())
    assert ours["std_dacc"] == pytest.approx(np.std((by_group - ref_by_group).to_numpy(), ddof=1))
    assert ours["accuracy"] == pytest.approx(accuracy_score(y, pred))

    def macro_ap(mask, s):
        return np.mean([average_precision_score(y[mask] == c, s[mask, c]) for c in range(4)])

    for g in np.unique(groups):
        assert ours["group_ap"][g] == pytest.approx(macro_ap(groups == g, scores), abs=1e-12)
    ap_values = [macro_ap(groups == g, scores) for g in np.unique(groups)]
    dap = [macro_ap(groups == g, scores) - macro_ap(groups == g, ref_scores) for g in np.unique(groups)]
    assert ours["std_ap"] == pytest.approx(np.std(ap_values, ddof=1))
    assert ours["std_dap"] == pytest.approx(np.std(dap, ddof=1))


def test_binary_attribute_as_two_classes():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 500)
    z = rng.normal(size=500) + 2 * y - 1
    groups = rng.integers(0, 2, 500)
    m = group_metrics(y, (z > 0).astype(int), groups, scores=z)
    for g in (0, 1):
        mask = groups == g
        expected = (average_precision_score(y[mask], z[mask]) + average_precision_score(1 - y[mask], -z[mask])) / 2
        assert m["group_ap"][g] == pytest.approx(expected)


def test_identical_models_have_no_spread_of_differences():
    y, scores, _, groups = task()
    pred = scores.argmax(axis=1)
    m = group_metrics(y, pred, groups, scores=scores, reference_pred=pred, reference_scores=scores)
    assert m["std_dacc"] == 0 and m["std_dap"] == 0
