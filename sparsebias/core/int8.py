"""INT8 arithmetic shared by quantization-aware training and the INT8 graph: how a weight
tensor and an activation range become int8 / uint8 grids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UINT8_MAX = 255
INT8_MAX = 127


@dataclass(frozen=True)
class QParams:
    """8-bit quantization of one tensor: real = scale * (q - zero_point), q uint8, or int8
    when `signed` (then symmetric, zero point 0)."""

    scale: float
    zero_point: int
    signed: bool = False

    @classmethod
    def from_range(cls, low: float, high: float) -> QParams:
        low, high = min(float(low), 0.0), max(float(high), 0.0)   # 0 exactly representable: padding, ReLU
        scale = (high - low) / UINT8_MAX or 1.0
        return cls(float(np.float32(scale)), int(np.clip(round(-low / scale), 0, UINT8_MAX)))

    @classmethod
    def symmetric(cls, low: float, high: float) -> QParams:
        """int8, zero point 0, the range +-max(|low|, |high|): TensorRT's activations."""
        bound = max(abs(float(low)), abs(float(high)))
        return cls(float(np.float32(bound / INT8_MAX)) or 1.0, 0, signed=True)


def weight_scale(weight: np.ndarray) -> float:
    """The symmetric per-tensor int8 scale of a weight tensor (zero point 0, range +-127)."""
    return float(np.float32(np.abs(weight).max() / INT8_MAX)) or 1.0
