"""Metrics: pure functions on numpy arrays, no torch, no files.

Arrays are (n_samples, n_attributes); a 1-d array is one attribute. Labels are 0/1,
decisions are 0/1, scores are logits. Definitions follow shared DESIGN.md.
"""

from .bias import bias_amplification, label_interdependence, training_rates
from .calibration import (
           expected_calibration_error,
           reliability_curve,
           sigmoid,
           threshold_calibration_bias,
           uncertainty_rate,
)
from .classification import accuracy_score, average_precision_score, decisions, roc_auc_score
from .exemplars import compression_identified_exemplars, modal_labels, pie_mask, pie_rates
from .groups import group_metrics, intersectional_groups, macro_average_precision, macro_error_rates
from .multiclass import class_balanced_entropy, macro_scores, per_class_scores, scores_by_class_size

__all__ = ["accuracy_score", "average_precision_score", "bias_amplification", "class_balanced_entropy",
           "compression_identified_exemplars",
           "decisions", "expected_calibration_error", "group_metrics", "intersectional_groups",
           "label_interdependence", "macro_average_precision", "macro_error_rates", "macro_scores", "modal_labels",
           "per_class_scores", "pie_mask", "pie_rates", "reliability_curve", "roc_auc_score", "scores_by_class_size", "sigmoid", "threshold_calibration_bias",
           "training_rates", "uncertainty_rate"]
