"""Mitigations as policies over arrays: thresholds calibrated on validation logits, the
override table ranked by dense uncertainty, and the decisions a bundle deploys with them.
Storing them in a bundle is sparsebias.auditing's (`calibrate`, `overrides`)."""

from .deployed import Deployment
from .overrides import OverrideTable, build_override_table, eligible_attributes, read_overrides
from .thresholds import calibrate_thresholds, read_thresholds

__all__ = ["Deployment", "OverrideTable", "build_override_table", "calibrate_thresholds", "eligible_attributes",
           "read_overrides", "read_thresholds"]
