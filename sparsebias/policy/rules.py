"""The release gate: rules over audit metrics, from a YAML policy, checked on a fresh audit.

    reference: exported/resnet18_dense   # the dense bundle to compare against
    split: test                          # default test
    identities: [Male, Young]            # default: the bundle's identities
    mitigations: true                    # judge the model as deployed (its thresholds, overrides)
    rules:
      - metric: ba                       # per identity, aggregated over attributes
        aggregate: mean                  # max | mean | min
        max_increase: 0.02               # compressed - reference <= 0.02
      - metric: accuracy
        aggregate: mean
        max_decrease: 0.01               # reference - compressed <= 0.01
      - metric: uncertainty
        aggregate: max
        max: 0.6                         # an absolute limit

A rule with an absolute limit (max, min) aggregates the compressed model's values over
the attributes where the metric is defined; a relative one (max_increase, max_decrease)
aggregates both models over the attributes defined for both. The attributes whose own
value is over the limit are listed with each rule. A rule with nothing defined passes,
and says so ("undefined").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import yaml

from ..core.errors import SparsebiasError, check_file, first_line, yaml_error
from ..core.yaml_limits import LimitedSafeLoader

# metric -> (where it lives in the audit report, whether it is given per identity, compared with a reference)
METRICS = {
    "accuracy": ("view", False, True),
    "tcb_error": ("view", False, True),        # |1 - TCB|: 0 is no threshold bias
    "interdependence": ("view", False, True),
    "ba": ("view", True, True),
    "auc": ("model", False, True),
    "uncertainty": ("model", False, True),
    "ece": ("model", False, True),
    "pie_gap": ("pairwise", True, False),      # |PIE rate among I=1 - among I=0|
    "cie_rate": ("pairwise", False, False),
}
AGGREGATES = {"max": np.max, "mean": np.mean, "min": np.min}
LIMITS = ("max", "min", "max_increase", "max_decrease")
POLICY_KEYS = {"reference", "split", "identities", "mitigations", "rules"}
RULE_KEYS = {"metric", "aggregate", "identities", "attributes", *LIMITS}


@dataclass(frozen=True)
class Rule:
    metric: str
    aggregate: str
    limit: str
    bound: float
    identities: tuple[str, ...] | None = None
    attributes: tuple[str, ...] | None = None

    def describe(self) -> str:
        return f"{self.aggregate} {self.metric} {self.limit.replace('_', ' ')} {self.bound:g}"


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    reference: str | None = None
    split: str = "test"
    identities: tuple[str, ...] | None = None
    mitigations: bool = True


@dataclass
class Outcome:
    rule: Rule
    identity: str | None
    value: float | None
    reference: float | None
    passed: bool
    breaking: list[str]


def load_policy(path) -> Policy:
    """A policy from its YAML file."""
    path = check_file(path, "policy")
    try:
        data = yaml.load(path.read_text(), Loader=LimitedSafeLoader)
    except yaml.YAMLError as e:
        raise yaml_error(path, e) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SparsebiasError(f"cannot read {path}: {first_line(e)}") from None
    return parse_policy(data, str(path))


def parse_policy(data, where: str = "policy") -> Policy:
    """A policy from the mapping its YAML holds (`where` names it in errors)."""
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list) or not data["rules"]:
        raise SparsebiasError(f"{where}: a policy is a mapping with a non-empty list of rules")
    unknown = sorted(set(data) - POLICY_KEYS)
    if unknown:
        raise SparsebiasError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(POLICY_KEYS))}")
    rules = tuple(_rule(r, f"{where}: rule {i}") for i, r in enumerate(data["rules"], 1))
    split = data.get("split", "test")
    if split not in ("val", "test"):
        raise SparsebiasError(f"{where}: split must be val or test (the splits a bundle has logits for), got {split!r}")
    mitigations = data.get("mitigations", True)
    if not isinstance(mitigations, bool):
        raise SparsebiasError(f"{where}: mitigations must be true or false")
    return Policy(rules=rules, reference=data.get("reference"), split=split,
                  identities=_names(data.get("identities"), f"{where}: identities"), mitigations=mitigations)


def _rule(r, where) -> Rule:
    if not isinstance(r, dict):
        raise SparsebiasError(f"{where}: a rule is a mapping (metric, aggregate, a limit)")
    unknown = sorted(set(r) - RULE_KEYS)
    if unknown:
        raise SparsebiasError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(RULE_KEYS))}")
    metric, aggregate = r.get("metric"), r.get("aggregate", "mean")
    if metric not in METRICS:
        raise SparsebiasError(f"{where}: unknown metric {metric!r}; known: {', '.join(METRICS)}")
    if aggregate not in AGGREGATES:
        raise SparsebiasError(f"{where}: unknown aggregation {aggregate!r}; known: {', '.join(AGGREGATES)}")
    limits = [k for k in LIMITS if k in r]
    if len(limits) != 1:
        raise SparsebiasError(f"{where}: give exactly one limit of {', '.join(LIMITS)}")
    limit = limits[0]
    if limit.endswith(("increase", "decrease")) and not METRICS[metric][2]:
        raise SparsebiasError(f"{where}: {metric} compares the two models already; use max or min")
    bound = r[limit]
    if isinstance(bound, bool) or not isinstance(bound, (int, float)):
        raise SparsebiasError(f"{where}: {limit} must be a number, got {bound!r}")
    if not math.isfinite(bound):   # every comparison with nan is false: `max: .nan` would always pass
        raise SparsebiasError(f"{where}: {limit} must be a finite number, got {bound!r}")
    if r.get("identities") is not None and not METRICS[metric][1]:
        raise SparsebiasError(f"{where}: {metric} is not given per identity")
    return Rule(metric, aggregate, limit, float(bound), _names(r.get("identities"), f"{where}: identities"),
                _names(r.get("attributes"), f"{where}: attributes"))


def _names(value, where):
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SparsebiasError(f"{where} must be a list of names")
    return tuple(value)


def _values(report: dict, role: str, view: str, metric: str, identity: str | None) -> dict:
    """Per-attribute values (None where undefined) for one model."""
    m = report["metrics"][role]
    if metric == "ba":
        return {a: v["value"] for a, v in m["views"][view]["ba"][identity].items()}
    if metric == "tcb_error":
        return {a: None if v is None else abs(1 - v) for a, v in m["views"][view]["tcb"].items()}
    if metric in ("accuracy", "interdependence"):
        return m["views"][view][metric]
    if metric == "pie_gap":
        return {a: None if v["gap"] is None else abs(v["gap"]) for a, v in report["pairwise"]["pie"][identity].items()}
    if metric == "cie_rate":
        return report["pairwise"]["cie_rate"]
    return m[metric]


def evaluate(report: dict, policy: Policy) -> list[Outcome]:
    """Check every rule (per identity where the metric has one) on an audit report."""
    views = {role: "mitigated" if policy.mitigations and "mitigated" in report["metrics"][role]["views"]
             else "default" for role in ("compressed", "reference")}
    outcomes = []
    for rule in policy.rules:
        identities = [None]
        if METRICS[rule.metric][1]:
            identities = list(rule.identities or report["settings"]["identities"])
            unknown = [i for i in identities if i not in report["settings"]["identities"]]
            if unknown:
                raise SparsebiasError(f"rule '{rule.describe()}': identity {unknown[0]!r} was not audited")
        attributes = list(rule.attributes or report["attributes"])
        unknown = [a for a in attributes if a not in report["attributes"]]
        if unknown:
            raise SparsebiasError(f"rule '{rule.describe()}': {unknown[0]!r} is not an audited attribute")
        for identity in identities:
            ours = _values(report, "compressed", views["compressed"], rule.metric, identity)
            theirs = _values(report, "reference", views["reference"], rule.metric, identity)
            outcomes.append(_check(rule, identity, {a: ours[a] for a in attributes}, {a: theirs[a] for a in attributes}))
    return outcomes


def _check(rule: Rule, identity, ours: dict, theirs: dict) -> Outcome:
    """Absolute limits aggregate the model's defined values; relative ones the attributes defined for both."""
    agg = AGGREGATES[rule.aggregate]
    if rule.limit in ("max", "min"):
        defined = [v for v in ours.values() if v is not None]
        value = float(agg(defined)) if defined else None
        over = (lambda v: v > rule.bound) if rule.limit == "max" else (lambda v: v < rule.bound)
        breaking = [a for a, v in ours.items() if v is not None and over(v)]
        return Outcome(rule, identity, value, None, value is None or not over(value), breaking)
    both = [a for a in ours if ours[a] is not None and theirs[a] is not None]
    value = float(agg([ours[a] for a in both])) if both else None
    ref_value = float(agg([theirs[a] for a in both])) if both else None
    sign = 1 if rule.limit == "max_increase" else -1
    passed = value is None or sign * (value - ref_value) <= rule.bound
    breaking = [a for a in both if sign * (ours[a] - theirs[a]) > rule.bound]
    return Outcome(rule, identity, value, ref_value, passed, breaking)
