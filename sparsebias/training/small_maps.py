"""Convolutions on tiny feature maps computed as one matrix product while training on a CPU.

oneDNN's CPU convolution kernels split their work over the output's positions. On a map
of a few positions (resnet18's last stage at 64 px is 2x2, with 512 channels in and out)
that leaves its matrix units idle: on the 2-core Xeon VM one such convolution's forward
and backward passes took 90 ms in bf16, nine times the time of one with the same
arithmetic on a 16x16 map, and the last stage was half of the training step's convolution
time. The same arithmetic as an unfold and one matrix product, whose backward pass
autograd derives (two products and a fold), runs at matrix-product speed.

Which path a convolution takes depends on its input's shape alone, so the same seed
still trains the same model; the two agree to rounding (`tests/test_small_maps.py`).
Only the training step's forward pass takes it (and so its backward pass): validation,
the logits a bundle stores, the ONNX export and every engine see plain convolutions.
"""

from __future__ import annotations

import contextlib
import types

import torch
import torch.nn.functional as F
from torch import nn

MAX_POSITIONS = 4   # output positions (height x width) up to which the product is used


def output_size(conv: nn.Conv2d, height: int, width: int) -> tuple[int, int]:
    """The (height, width) a convolution makes of an input map."""
    return tuple((size + 2 * pad - dil * (kernel - 1) - 1) // stride + 1
                 for size, pad, dil, kernel, stride in zip((height, width), conv.padding, conv.dilation,
                                                           conv.kernel_size, conv.stride))


def convolve_as_product(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor | None) -> torch.Tensor:
    """What `conv._conv_forward` computes, as unfold and one matrix product; the result is
    laid out channels_last, as the model's convolutions are."""
    n = x.shape[0]
    oh, ow = output_size(conv, *x.shape[-2:])
    columns = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)   # (n, c k k, oh ow)
    out = columns.transpose(1, 2).reshape(n * oh * ow, -1) @ weight.reshape(weight.shape[0], -1).t()
    out = out.view(n, oh, ow, -1).permute(0, 3, 1, 2)
    return out if bias is None else out + bias.view(1, -1, 1, 1).to(out.dtype)


def _conv_forward(self: nn.Conv2d, x, weight, bias):
    oh, ow = output_size(self, *x.shape[-2:])
    if oh * ow <= MAX_POSITIONS:
        return convolve_as_product(self, x, weight, bias)
    return nn.Conv2d._conv_forward(self, x, weight, bias)


def resolve_small_maps(setting: str, device: torch.device) -> str:
    """The path tiny maps take: the setting on a CPU, where the gap was measured; torch's
    convolutions elsewhere (cuDNN's kernels were not measured)."""
    return setting if device.type == "cpu" else "torch"


def _eligible(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros" \
        and not isinstance(module.padding, str)


@contextlib.contextmanager
def small_maps_as_products(model: nn.Module, enabled: bool = True):
    """Within the block, the model's convolutions on maps of at most MAX_POSITIONS outputs
    run as matrix products (`resolve_small_maps` says where)."""
    convs = [m for m in model.modules() if _eligible(m)] if enabled else []
    for conv in convs:
        conv._conv_forward = types.MethodType(_conv_forward, conv)
    try:
        yield
    finally:
        for conv in convs:
            conv.__dict__.pop("_conv_forward", None)
