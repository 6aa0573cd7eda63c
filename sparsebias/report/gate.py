"""What `sparsebias gate` prints: one row per rule (and identity), then where the logits came from."""

from __future__ import annotations

from ..core.files import markdown_table
from .audit import logits_lines

SHOWN_BREAKING = 6


def gate_lines(result) -> list[str]:
    """The table and closing lines of a policy.GateResult."""
    rows = [[o.rule.describe(), o.identity or "-", _num(o.value),
             _num(o.reference) if o.reference is not None and o.value is not None else "-",
             "pass" if o.passed else "FAIL",
             ", ".join(o.breaking[:SHOWN_BREAKING]) + (" ..." if len(o.breaking) > SHOWN_BREAKING else "")]
            for o in result.outcomes]
    passed = len(result.outcomes) - len(result.failed)
    return [markdown_table(["rule", "identity", "value", "reference", "result", "attributes over the limit"], rows),
            *logits_lines(result.report.models),
            f"{passed} of {len(result.outcomes)} checks pass; {result.judged_on()}"]


def _num(x):
    return "undefined" if x is None else f"{x:.4f}"
