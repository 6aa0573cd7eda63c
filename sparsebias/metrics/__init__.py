"""Metrics: pure functions on numpy arrays, no torch, no files."""

from .classification import accuracy_score, roc_auc_score

__all__ = ["accuracy_score", "roc_auc_score"]
