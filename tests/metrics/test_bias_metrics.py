"""Bias, calibration and exemplar metrics: hand-computed cases, independent implementations, properties."""

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LinearRegression

from sparsebias.metrics import (
    bias_amplification,
    compression_identified_exemplars,
    decisions,
    expected_calibration_error,
    label_interdependence,
    pie_rates,
    reliability_curve,
    sigmoid,
    threshold_calibration_bias,
    training_rates,
    uncertainty_rate,
)
from sparsebias.metrics.bias import (
    REASON_FEW_POSITIVES,
    REASON_IS_IDENTITY,
    REASON_NO_ASSOCIATION,
    REASON_NONE_PREDICTED,
)


def correlated_data(n=3000, k=6, seed=0):
    """Labels that lean on an identity, and logits that lean on the labels, with some noise."""
    rng = np.random.default_rng(seed)
    identity = rng.random(n) < 0.4
    base = np.array([0.1, 0.2, 0.3, 0.5, 0.7, 0.15])[:k]
    lift = np.array([0.2, -0.1, 0.15, 0.0, 0.1, 0.05])[:k]
    y = (rng.random((n, k)) < base + lift * identity[:, None]).astype(np.int8)
    z = 2.5 * (y - 0.5) + rng.normal(0, 1.5, (n, k)) + 0.6 * identity[:, None]
    return y, z, identity.astype(np.int8)


def ba_by_the_book(y, yhat, ident, r1, r0):
    """DESIGN.md's formula, one attribute, written out with plain counts."""
    g = 1 if r1 > r0 else 0
    pred_pos = [i for i in range(len(y)) if yhat[i] == 1]
    true_pos = [i for i in range(len(y)) if y[i] == 1]
    return (sum(ident[i] == g for i in pred_pos) / len(pred_pos)
            - sum(ident[i] == g for i in true_pos) / len(true_pos))


def test_ba_matches_the_written_out_formula():
    y, z, ident = correlated_data()
    yhat = decisions(z)
    r1, r0 = training_rates(y, ident)
    values, reasons = bias_amplification(y, yhat, ident, r1=r1, r0=r0)
    for j in range(y.shape[1]):
        if reasons[j] is None:
            assert values[j] == pytest.approx(ba_by_the_book(y[:, j], yhat[:, j], ident, r1[j], r0[j]), abs=1e-12)
    assert reasons[3] == REASON_NO_ASSOCIATION  # attribute 3 does not depend on the identity
    assert sum(r is None for r in reasons) >= 4


def test_ba_hand_computed():
    # 20 positives, 10 in the identity group; the model predicts positive only inside it.
    y = np.array([1, 1, 0, 0] * 10)
    ident = np.array([1, 0, 1, 0] * 10)
    yhat = np.array([1, 0, 1, 0] * 10)
    value, reason = bias_amplification(y, yhat, ident, r1=[0.6], r0=[0.3])
    assert value.tolist() == [0.5] and reason == [None]  # 20/20 predicted in group minus 10/20 actual
    value, _ = bias_amplification(y, yhat, ident, r1=[0.3], r0=[0.6])  # the other group is associated
    assert value.tolist() == [-0.5]


def test_perfect_predictor_has_ba_0_and_tcb_1():
    y, _, ident = correlated_data()
    r1, r0 = training_rates(y, ident)
    values, reasons = bias_amplification(y, y, ident, r1=r1, r0=r0)
    defined = [v for v, r in zip(values, reasons) if r is None]
    assert defined and np.allclose(defined, 0.0)
    np.testing.assert_allclose(threshold_calibration_bias(y, y, y.mean(axis=0)), 1.0)


@pytest.mark.parametrize("case, reason", [
    ("identity", REASON_IS_IDENTITY), ("weak", REASON_NO_ASSOCIATION),
    ("few", REASON_FEW_POSITIVES), ("none", REASON_NONE_PREDICTED)])
def test_ba_undefined_with_its_reason(case, reason):
    y = np.array([1, 1, 0, 0] * 10)
    ident = np.array([1, 0, 1, 0] * 10)
    yhat, r1, r0, same = y.copy(), [0.6], [0.3], None
    if case == "identity":
        same = [True]
    elif case == "weak":
        r1, r0 = [0.31], [0.3]
    elif case == "few":
        y = np.array([1, 0, 0, 0] * 10)  # 10 positives inside, 0 outside
    else:
        yhat = np.zeros_like(y)
    value, reasons = bias_amplification(y, yhat, ident, r1=r1, r0=r0, is_identity=same)
    assert np.isnan(value[0]) and reasons == [reason]


def test_ece_against_scikit_learn_calibration_curve():
    y, z, _ = correlated_data()
    for j in range(y.shape[1]):
        p = sigmoid(z[:, j])
        prob_true, prob_pred = calibration_curve(y[:, j], p, n_bins=10, strategy="uniform")
        mean_p, mean_y, count = reliability_curve(y[:, j], z[:, j])
        filled = count[:, 0] > 0
        np.testing.assert_allclose(mean_p[filled, 0], prob_pred, atol=1e-12)
        np.testing.assert_allclose(mean_y[filled, 0], prob_true, atol=1e-12)
        weights = count[filled, 0] / len(p)
        assert expected_calibration_error(y[:, j], z[:, j])[0] == pytest.approx(
            np.sum(weights * np.abs(prob_pred - prob_true)), abs=1e-12)


def test_ece_bounds_and_extremes():
    y, z, _ = correlated_data()
    ece = expected_calibration_error(y, z)
    assert ((ece >= 0) & (ece <= 1)).all()
    assert expected_calibration_error([1, 0], [60.0, -60.0])[0] == pytest.approx(0, abs=1e-12)
    assert expected_calibration_error([0, 1], [60.0, -60.0])[0] == pytest.approx(1, abs=1e-12)


def test_uncertainty_and_tcb_hand_computed():
    assert uncertainty_rate([[np.log(0.1 / 0.9) - 1e-9], [0.0], [np.log(0.9 / 0.1) - 1e-9]]).tolist() == [2 / 3]
    # rare attribute (train rate 0.2): predicted positives / actual positives = 3 / 2
    assert threshold_calibration_bias([1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0.2]).tolist() == [1.5]
    # common attribute (train rate 0.8): predicted negatives / actual negatives = 1 / 2
    assert threshold_calibration_bias([1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [0.8]).tolist() == [0.5]


def test_interdependence_against_scikit_learn():
    y, z, _ = correlated_data(k=6)
    yhat = decisions(z)
    yhat[:, 5] = yhat[:, 0] | yhat[:, 1]  # one label nearly determined by two others
    ours = label_interdependence(yhat)
    for j in range(6):
        others = np.delete(yhat, j, axis=1)
        assert ours[j] == pytest.approx(LinearRegression().fit(others, yhat[:, j]).score(others, yhat[:, j]),
                                        abs=1e-9)
    assert ours[5] > 0.5
    constant = np.c_[yhat, np.ones(len(yhat), int)]
    assert np.isnan(label_interdependence(constant)[-1])


def test_cie_and_pie_hand_computed():
    dense = [[[1, 0, 1]], [[1, 0, 0]], [[1, 1, 1]]]       # modal: 1, 0, 1
    compressed = [[[0, 0, 1]], [[0, 1, 1]], [[1, 0, 1]]]  # modal: 0, 0, 1
    assert compression_identified_exemplars(dense, compressed).tolist() == [[True, False, False]]
    assert compression_identified_exemplars([[[1]], [[0]]], [[[0]], [[0]]]).tolist() == [[False]]  # dense ties
    y = np.array([1, 1, 0, 0, 1, 0])
    dense_pred = np.array([1, 1, 0, 0, 0, 0])
    comp_pred = np.array([0, 1, 1, 0, 0, 0])
    r = pie_rates(y, dense_pred, comp_pred, [1, 1, 1, 0, 0, 0])
    assert r["rates"][1].tolist() == [2 / 3] and r["rates"][0].tolist() == [0.0] and r["gap"].tolist() == [2 / 3]


REGISTRY = {
    "ece": lambda y, z, i: expected_calibration_error(y, z),
    "uncertainty": lambda y, z, i: uncertainty_rate(z),
    "tcb": lambda y, z, i: threshold_calibration_bias(y, decisions(z), [0.2, 0.3, 0.5, 0.6, 0.8, 0.1]),
    "ba": lambda y, z, i: bias_amplification(y, decisions(z), i, r1=training_rates(y, i)[0],
                                             r0=training_rates(y, i)[1])[0],
    "interdependence": lambda y, z, i: label_interdependence(decisions(z)),
    "pie": lambda y, z, i: pie_rates(y, decisions(z), decisions(z - 0.5), i)["gap"],
}


@pytest.mark.parametrize("name", REGISTRY)
def test_invariant_to_sample_order(name):
    y, z, ident = correlated_data(n=1500)
    perm = np.random.default_rng(5).permutation(len(y))
    np.testing.assert_allclose(REGISTRY[name](y, z, ident), REGISTRY[name](y[perm], z[perm], ident[perm]),
                               atol=1e-10)
