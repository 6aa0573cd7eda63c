import numpy as np
import pytest
from sklearn.metrics import accuracy_score as sk_accuracy
from sklearn.metrics import roc_auc_score as sk_auc

from sparsebias.metrics import accuracy_score, decisions, roc_auc_score


def test_against_scikit_learn():
    rng = np.random.default_rng(0)
    y = (rng.random((500, 5)) < [0.1, 0.3, 0.5, 0.7, 0.9]).astype(int)
    z = rng.normal(size=(500, 5)) + y * [0.5, 1, 2, 0, -1]
    z[:, 2] = np.round(z[:, 2])  # ties
    for j in range(5):
        assert roc_auc_score(y, z)[j] == pytest.approx(sk_auc(y[:, j], z[:, j]), abs=1e-12)
        assert accuracy_score(y, decisions(z))[j] == pytest.approx(sk_accuracy(y[:, j], z[:, j] > 0))


def test_hand_computed_and_degenerate():
    assert roc_auc_score([0, 1], [0.5, 0.5]).tolist() == [0.5]
    assert np.isnan(roc_auc_score([1, 1, 1], [0.1, 0.2, 0.3])[0])
    assert accuracy_score([[1], [0]], decisions([[0.5], [0.7]], 0.6)).tolist() == [0.0]


def test_invariant_to_sample_order():
    rng = np.random.default_rng(1)
    y, z = rng.integers(0, 2, (200, 3)), rng.normal(size=(200, 3))
    perm = rng.permutation(200)
    np.testing.assert_allclose(roc_auc_score(y, z), roc_auc_score(y[perm], z[perm]))
