"""How far two runtimes' logits may differ and still be the same model's."""

from __future__ import annotations

import numpy as np

LOGIT_SCALE = 100.0     # the tolerances are set for logits up to this size, any calibrated classifier's
EXPORT_TOLERANCE = 1e-3  # max |logit difference| torch vs onnxruntime that export (and a re-run) accepts


def logit_tolerance(tolerance: float, reference: np.ndarray) -> float:
    """`tolerance`, grown in proportion to the largest finite |logit| of `reference` beyond
    LOGIT_SCALE: float rounding grows with the values, and a diverging or over-confident
    model's logits run to the thousands, where two correct runtimes differ by more."""
    magnitudes = np.abs(np.asarray(reference, dtype=np.float64))
    magnitudes = magnitudes[np.isfinite(magnitudes)]
    return tolerance * max(1.0, float(magnitudes.max()) / LOGIT_SCALE if magnitudes.size else 1.0)
