"""Convolutions on small feature maps computed as matrix products while training on a CPU.

oneDNN's CPU convolution kernels split their work over the output's positions. On a map
of a few positions (resnet18's last two stages at 64 px are 4x4 and 2x2, with 256 and 512
channels) that leaves the matrix units idle, most of all in the weight gradient: on the
2-core Xeon VM, bf16, batch 64, one 512-channel convolution on a 2x2 map took 90 ms forward
and backward, nine times one with the same arithmetic on a 16x16 map, and a 256-channel
one on a 4x4 map spent 27 ms on its weight gradient against 7 ms on its forward pass.

Here such a convolution is three matrix products over the input's patches, gathered
channel-fastest from the channels_last map (one copy of nine strided views for a 3x3
kernel, fewer where a kernel offset reads only padding, as on a 1x1 map): patches x
weights forward; output gradient x patches for the weight gradient;
output gradient x weights, scattered back onto the map, for the input gradient. `F.unfold`
is not used: on channels_last bf16 maps it costs as much as the product it feeds.

Which path a convolution takes depends on its input's shape alone, so the same seed still
trains the same model; the two agree to rounding (`tests/test_small_maps.py`). Only the
training step's forward pass takes it (and so its backward pass): validation, the logits a
bundle stores, the ONNX export and every engine see plain convolutions.
"""

from __future__ import annotations

import contextlib
import types

import torch
import torch.nn.functional as F
from torch import nn

MAX_POSITIONS = 16   # output positions (height x width) up to which the products are used
_REDUCED = (torch.bfloat16, torch.float16)


def output_size(conv: nn.Conv2d, height: int, width: int) -> tuple[int, int]:
    """The (height, width) a convolution makes of an input map."""
    return tuple((size + 2 * pad - dil * (kernel - 1) - 1) // stride + 1
                 for size, pad, dil, kernel, stride in zip((height, width), conv.padding, conv.dilation,
                                                           conv.kernel_size, conv.stride))


def _taps(conv: nn.Conv2d, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple[slice, slice]:
    """The kernel rows and columns that read any of the map. The others meet only padding (on a
    1x1 map, 8 of a 3x3 kernel's 9 offsets), add zeros to the output and get a zero weight
    gradient, so they are skipped."""
    def reading(kernel, dilation, stride, pad, size, out):
        hits = [k for k in range(kernel) if any(pad <= k * dilation + stride * t < pad + size for t in range(out))]
        return slice(hits[0], hits[-1] + 1)   # consecutive: each reads a window shifted by its dilation
    return tuple(reading(*axis) for axis in zip(conv.kernel_size, conv.dilation, conv.stride, conv.padding,
                                                 in_hw, out_hw))


def _windows(conv: nn.Conv2d, taps: tuple[slice, slice], out_hw: tuple[int, int]):
    """For each kernel offset read, row-major, the (rows, columns) slices of the padded map it reads."""
    (sh, sw), (dh, dw), (oh, ow) = conv.stride, conv.dilation, out_hw
    return [(slice(i * dh, i * dh + sh * (oh - 1) + 1, sh), slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))
            for i in range(taps[0].start, taps[0].stop) for j in range(taps[1].start, taps[1].stop)]


def _patches(conv: nn.Conv2d, x: torch.Tensor, windows) -> torch.Tensor:
    """(n oh ow, offsets c): every output position's receptive field, channel-fastest."""
    ph, pw = conv.padding
    padded = F.pad(x, (pw, pw, ph, ph)).permute(0, 2, 3, 1)   # a view of the channels_last layout
    parts = [padded[:, rows, cols, :] for rows, cols in windows]
    return (torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]).reshape(-1, len(parts) * x.shape[1])


def _kernel(weight: torch.Tensor, taps: tuple[slice, slice]) -> torch.Tensor:
    """(out, offsets c): the weights of the offsets read, ordered as the patches (a view of a
    channels_last weight when every offset is read)."""
    return weight.permute(0, 2, 3, 1)[:, taps[0], taps[1], :].reshape(weight.shape[0], -1)


def _scatter(conv: nn.Conv2d, grads: torch.Tensor, shape: torch.Size, windows, out_hw) -> torch.Tensor:
    """The input gradient from the patches' gradient (n oh ow, offsets c): each offset's
    share added back where `_patches` read it, in float32 for a reduced precision."""
    n, c, h, w = shape
    ph, pw = conv.padding
    per_offset = grads.view(n, *out_hw, len(windows), c)
    total = grads.new_zeros((n, h + 2 * ph, w + 2 * pw, c),
                            dtype=torch.float32 if grads.dtype in _REDUCED else grads.dtype)
    for k, (rows, cols) in enumerate(windows):
        total[:, rows, cols, :] += per_offset[:, :, :, k]
    return total[:, ph:ph + h, pw:pw + w, :].to(grads.dtype).permute(0, 3, 1, 2)


class _PatchProduct(torch.autograd.Function):
    """A convolution without bias as products over patches, forward and backward."""

    @staticmethod
    def forward(ctx, x, weight, conv):
        out_hw = output_size(conv, *x.shape[-2:])
        taps = _taps(conv, x.shape[-2:], out_hw)
        windows = _windows(conv, taps, out_hw)
        patches = _patches(conv, x, windows)
        ctx.save_for_backward(patches, weight)
        ctx.conv, ctx.taps, ctx.windows, ctx.out_hw, ctx.shape = conv, taps, windows, out_hw, x.shape
        return (patches @ _kernel(weight, taps).t()).view(x.shape[0], *out_hw, -1).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_out):
        patches, weight = ctx.saved_tensors
        rows, cols = ctx.taps
        grad_rows = grad_out.permute(0, 2, 3, 1).reshape(patches.shape[0], -1)   # (n oh ow, out)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = _scatter(ctx.conv, grad_rows @ _kernel(weight, ctx.taps), ctx.shape, ctx.windows, ctx.out_hw)
        if ctx.needs_input_grad[1]:
            read = (grad_rows.t() @ patches).view(weight.shape[0], rows.stop - rows.start, cols.stop - cols.start, -1)
            if read.shape[1:3] != weight.shape[2:]:   # zeros where the offsets skipped would be
                every_tap = read.new_zeros(weight.shape[0], *weight.shape[2:], weight.shape[1])
                every_tap[:, rows, cols, :] = read
                read = every_tap
            grad_weight = read.permute(0, 3, 1, 2)
        return grad_x, grad_weight, None


def convolve_as_product(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor | None) -> torch.Tensor:
    """What `conv._conv_forward` computes, as products over patches (autocast's precision
    where it is on, as for a convolution); the result is laid out channels_last."""
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        out = _PatchProduct.apply(x, weight, conv)
    return out if bias is None else out + bias.view(1, -1, 1, 1).to(out.dtype)


def _conv_forward(self: nn.Conv2d, x, weight, bias):
    oh, ow = output_size(self, *x.shape[-2:])
    if oh * ow <= MAX_POSITIONS:
        return convolve_as_product(self, x, weight, bias)
    return nn.Conv2d._conv_forward(self, x, weight, bias)


def resolve_small_maps(setting: str, device: torch.device) -> str:
    """The path small maps take: the setting on a CPU, where the gap was measured; torch's
    convolutions elsewhere (cuDNN's kernels were not measured)."""
    return setting if device.type == "cpu" else "torch"


def _eligible(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros" \
        and not isinstance(module.padding, str)


@contextlib.contextmanager
def small_maps_as_products(model: nn.Module, enabled: bool = True):
    """Within the block, the model's convolutions on maps of at most MAX_POSITIONS outputs
    run as products over patches (`resolve_small_maps` says where)."""
    convs = [m for m in model.modules() if _eligible(m)] if enabled else []
    for conv in convs:
        conv._conv_forward = types.MethodType(_conv_forward, conv)
    try:
        yield
    finally:
        for conv in convs:
            conv.__dict__.pop("_conv_forward", None)
