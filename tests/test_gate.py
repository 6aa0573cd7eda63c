"""The gate's exit codes on passing and failing policies, and on malformed ones."""

import pytest
from click.testing import CliRunner

from sparsebias.cli import main
from sparsebias.policy import Rule, load_policy
from sparsebias.policy.rules import _check


def gate(bundle, reference, policy_text, tmp_path):
    policy = tmp_path / "gate.yaml"
    policy.write_text(policy_text)
    return CliRunner().invoke(main, ["gate", str(bundle.path), "--policy", str(policy),
                                     "--reference", str(reference.path)])


def test_passing_policy_exits_0(sparse_bundle, dense_bundle, tmp_path):
    result = gate(sparse_bundle, dense_bundle, "rules:\n  - {metric: ba, aggregate: mean, max_increase: 10}\n"
                  "  - {metric: accuracy, aggregate: mean, min: 0}\n", tmp_path)
    assert result.exit_code == 0, result.output
    assert "5 of 5 checks pass" in result.output  # ba per identity (4) and accuracy


def test_failing_policy_exits_1_and_names_the_attributes(sparse_bundle, dense_bundle, tmp_path):
    result = gate(sparse_bundle, dense_bundle, "mitigations: false\nrules:\n"
                  "  - {metric: uncertainty, aggregate: max, max: 0.0}\n", tmp_path)
    assert result.exit_code == 1, result.output
    assert "| max uncertainty max 0 | - |" in result.output and "FAIL" in result.output
    assert "0 of 1 checks pass" in result.output


def test_the_repository_policies_load(repo):
    for path in (repo / "policies").glob("*.yaml"):
        assert load_policy(path).rules


@pytest.mark.parametrize("text, message", [
    ("rules:\n  - {metric: bias, aggregate: mean, max: 1}\n", "unknown metric 'bias'"),
    ("rules:\n  - {metric: ba, aggregate: median, max: 1}\n", "unknown aggregation 'median'"),
    ("rules:\n  - {metric: ba, aggregate: mean}\n", "exactly one limit"),
    ("rules:\n  - {metric: cie_rate, max_increase: 0.1}\n", "use max or min"),
    ("rules: []\n", "non-empty list of rules"),
    ("rules:\n  - {metric: ba, max: [1}\n", "gate.yaml:2: YAML error"),
    ("rules:\n  - {metric: ba, max: 1, identities: [Bearded]}\n", "identity 'Bearded' was not audited"),
    ("split: train\nrules:\n  - {metric: ba, max: 1}\n", "split must be val or test"),
    # a nan limit compares false with everything: the rule would pass every model
    ("rules:\n  - {metric: ba, max: .nan}\n", "rule 1: max must be a finite number, got nan"),
    ("rules:\n  - {metric: accuracy, max_decrease: .inf}\n", "rule 1: max_decrease must be a finite number, got inf"),
])
def test_malformed_policy_exits_2(sparse_bundle, dense_bundle, tmp_path, text, message):
    result = gate(sparse_bundle, dense_bundle, text, tmp_path)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_relative_limits_compare_attributes_defined_for_both():
    rule = Rule("ba", "mean", "max_increase", 0.01)
    ours = {"a": 0.30, "b": 0.10, "c": None}
    theirs = {"a": 0.25, "b": 0.10, "c": 0.5}
    outcome = _check(rule, "Male", ours, theirs)
    assert outcome.value == pytest.approx(0.2) and outcome.reference == pytest.approx(0.175)
    assert not outcome.passed and outcome.breaking == ["a"]
    assert _check(Rule("ba", "max", "max", 0.2), "Male", ours, theirs).breaking == ["a"]
