"""Mitigations bundled with a model: calibrated thresholds and an override table."""
