"""The release gate: a YAML policy of rules over audit metrics, checked on a fresh audit of
what the models do. `gate()` passes or fails a bundle; the CLI turns that into exit 0 or 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from ..auditing import REPLAY_ENGINE, AuditReport, inputs_from_bundles, judged
from ..auditing.attributes import audit as attribute_audit
from ..bundle import as_bundle, verify_bundle
from ..core.errors import SparsebiasError
from .rules import Outcome, Policy, Rule, evaluate, load_policy, parse_policy


@dataclass(frozen=True)
class GateResult:
    """Every rule's outcome (per identity where the metric has one) and the audit they were read from."""

    outcomes: list[Outcome]
    report: AuditReport
    policy: Policy
    replayed: bool = True

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_frame(self) -> pd.DataFrame:
        """One row per checked rule and identity."""
        return pd.DataFrame.from_records([
            {"rule": o.rule.describe(), "metric": o.rule.metric, "identity": o.identity, "value": o.value,
             "reference": o.reference, "passed": o.passed, "breaking": list(o.breaking)} for o in self.outcomes])

    def to_dict(self) -> dict:
        return {"passed": self.passed, "judged": self.judged_on(),
                "outcomes": self.to_frame().to_dict(orient="records"),
                "models": self.report.models}

    def judged_on(self) -> str:
        views = "as deployed (bundle mitigations applied)" if self.policy.mitigations else "at p > 0.5"
        source = "what their models compute on the data" if self.replayed else \
            "the logits the bundles store (--stored-logits: not re-run)"
        return f"models judged {views}, on {source}"


def gate(bundle, policy, *, reference=None, trusted_keys=(), replay: bool = True, data: str | None = None,
         engine: str = REPLAY_ENGINE, progress=None, echo=print) -> GateResult:
    """Check `bundle` against a policy (a YAML path, the mapping such a file holds, or a `Policy`)
    and its reference (the policy's unless given). With `trusted_keys`, both must carry a
    signature one verifies.

    >>> result = gate("exported/resnet18_99", "policies/release.yaml")  # doctest: +SKIP
    >>> result.passed, result.to_frame()                                # doctest: +SKIP
    """
    rules = policy if isinstance(policy, Policy) else \
        parse_policy(policy) if isinstance(policy, Mapping) else load_policy(policy)
    reference = reference or rules.reference
    if not reference:
        raise SparsebiasError(f"no reference: give --reference or set 'reference:' in "
                              f"{'the policy' if isinstance(policy, (Policy, Mapping)) else policy}")
    loaded = [verify_bundle(b, trusted_keys) if trusted_keys else as_bundle(b) for b in (bundle, reference)]
    # the gate judges one split at p > 0.5 or as deployed; validation logits are not used
    pair = judged(loaded, replay=replay, splits=(rules.split,), data=data, engine=engine, progress=progress, echo=echo)
    report = AuditReport(attribute_audit(inputs_from_bundles(*pair, split=rules.split, identities=rules.identities)))
    return GateResult(evaluate(report.to_dict(), rules), report, rules, replayed=replay)


__all__ = ["GateResult", "Outcome", "Policy", "Rule", "evaluate", "gate", "load_policy", "parse_policy"]
