"""The fidelity report: its numbers recomputed independently from the bundle's arrays."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from sparsebias.cli import main
from sparsebias.study.fidelity import CELEBA_PER_ATTRIBUTE, TARGETS, _check, fidelity


@pytest.fixture(scope="module")
def result(dense_bundle):
    return fidelity(dense_bundle.path)


def test_means_match_an_independent_computation(result, dense_bundle):
    test, train = dense_bundle.split("test"), dense_bundle.split("train")
    y, z = test["labels"].astype(int), test["logits"]
    yhat = (z > 0).astype(int)
    train_rate = train["labels"].mean(axis=0)
    assert result["means"]["accuracy"] == pytest.approx((yhat == y).mean())
    majority = np.where(train_rate >= 0.5, y, 1 - y).mean()
    assert result["means"]["majority"] == pytest.approx(majority)
    assert result["means"]["accuracy_over_majority"] == pytest.approx((yhat == y).mean() - majority)
    aucs = [roc_auc_score(y[:, j], z[:, j]) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    assert result["means"]["auc"] == pytest.approx(np.mean(aucs))
    p = 1 / (1 + np.exp(-z))
    assert result["means"]["uncertainty"] == pytest.approx(((p > 0.1) & (p < 0.9)).mean())
    assert result["samples"] == len(y) and result["attributes"] == 40


def test_auc_distribution_and_top_ba(result):
    aucs = [v["auc"] for v in result["per_attribute"].values() if v["auc"] is not None]
    d = result["auc_distribution"]
    assert d["min"] == pytest.approx(min(aucs)) and d["max"] == pytest.approx(max(aucs))
    assert d["median"] == pytest.approx(np.median(aucs))
    assert d["below_0.70"] == sorted((a for a, v in result["per_attribute"].items()
                                      if v["auc"] is not None and v["auc"] < 0.70),
                                     key=lambda a: result["per_attribute"][a]["auc"])
    for identity, ba in result["ba"].items():
        values = [v[f"ba_{identity}"] for v in result["per_attribute"].values() if v[f"ba_{identity}"] is not None]
        assert [t["value"] for t in ba["top"]] == sorted(values, reverse=True)[:6]
        assert ba["attributes"] == len(values)


def test_celeba_reference_is_the_papers_table():
    assert len(CELEBA_PER_ATTRIBUTE) == 40
    assert np.mean([v[0] for v in CELEBA_PER_ATTRIBUTE.values()]) == pytest.approx(0.903, abs=0.002)  # J.1 TCB
    assert np.mean([v[1] for v in CELEBA_PER_ATTRIBUTE.values()]) == pytest.approx(0.139, abs=0.002)  # J.1 unc.


def test_checks_apply_their_bands(result):
    assert _check("x", 0.8, 0.75, 1.0)["passed"] and not _check("x", 0.7, 0.75, 1.0)["passed"]
    assert _check("x", 0.25, None, 0.25)["passed"] and not _check("x", None, 0, None)["passed"]
    by_name = {c["check"]: c for c in result["checks"]}
    for name, (low, high) in TARGETS.items():
        value = result["means"].get(name, len(result["auc_distribution"]["below_0.70"]))
        inside = (low is None or value >= low) and (high is None or value <= high)
        assert by_name[name]["passed"] == inside, name
    assert result["passed"] == sum(c["passed"] for c in result["checks"])


def test_cli_writes_the_report(dense_bundle, tmp_path):
    out = tmp_path / "fid"
    run = CliRunner().invoke(main, ["fidelity", str(dense_bundle.path), "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "| mean accuracy |" in run.output and "checks pass" in run.output
    assert json.loads((out / "fidelity.json").read_text())["means"]["accuracy"] == pytest.approx(
        fidelity(dense_bundle.path)["means"]["accuracy"])
    assert (out / "fidelity.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_refuses_a_missing_bundle(tmp_path):
    run = CliRunner().invoke(main, ["fidelity", str(tmp_path / "nope")])
    assert run.exit_code == 2 and run.output.count("\n") == 1


def test_auc_spread_of_no_defined_auc_is_empty():
    from sparsebias.study.fidelity import _quartiles
    assert _quartiles(np.array([])) == dict.fromkeys(("min", "q25", "median", "q75", "max"))
    assert _quartiles(np.array([0.6, 0.8, 0.7, 0.9, 1.0])) == pytest.approx(
        {"min": 0.6, "q25": 0.7, "median": 0.8, "q75": 0.9, "max": 1.0})
