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


def _windows(conv: nn.Conv2d, in_hw: tuple[int, int], out_hw: tuple[int, int]):
    """(kernel offset's index, rows, columns) of the padded map each offset reads, for the
    offsets that read any of the map: the others meet only padding (on a 1x1 map, 8 of a 3x3
    kernel's 9), add zeros to the output and get a zero weight gradient, so they are skipped."""
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = conv.kernel_size, conv.stride, conv.dilation, conv.padding
    (h, w), (oh, ow) = in_hw, out_hw

    def reads_map(first, step, count, pad, size):
        return any(pad <= first + step * t < pad + size for t in range(count))
    return [(i * kw + j, slice(i * dh, i * dh + sh * (oh - 1) + 1, sh), slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))
            for i in range(kh) if reads_map(i * dh, sh, oh, ph, h)
            for j in range(kw) if reads_map(j * dw, sw, ow, pw, w)]


def _patches(conv: nn.Conv2d, x: torch.Tensor, windows) -> torch.Tensor:
    """(n oh ow, offsets c): every output position's receptive field, channel-fastest."""
    ph, pw = conv.padding
    padded = F.pad(x, (pw, pw, ph, ph)).permute(0, 2, 3, 1)   # a view of the channels_last layout
    parts = [padded[:, rows, cols, :] for _, rows, cols in windows]
    return (torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]).reshape(-1, len(parts) * x.shape[1])


def _kernel(weight: torch.Tensor, windows) -> torch.Tensor:
    """(out, offsets c): the weights of the offsets read, ordered as the patches."""
    per_offset = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1, weight.shape[1])
    if len(windows) < per_offset.shape[1]:
        per_offset = per_offset[:, [k for k, _, _ in windows]]
    return per_offset.reshape(weight.shape[0], -1)


def _scatter(conv: nn.Conv2d, grads: torch.Tensor, shape: torch.Size, windows, out_hw) -> torch.Tensor:
    """The input gradient from the patches' gradient (n oh ow, offsets c): each offset's
    share added back where `_patches` read it, in float32 for a reduced precision."""
    n, c, h, w = shape
    ph, pw = conv.padding
    per_offset = grads.view(n, *out_hw, len(windows), c)
    total = grads.new_zeros((n, h + 2 * ph, w + 2 * pw, c),
                            dtype=torch.float32 if grads.dtype in _REDUCED else grads.dtype)
    for k, (_, rows, cols) in enumerate(windows):
        total[:, rows, cols, :] += per_offset[:, :, :, k]
    return total[:, ph:ph + h, pw:pw + w, :].to(grads.dtype).permute(0, 3, 1, 2)


class _PatchProduct(torch.autograd.Function):
    """A convolution without bias as products over patches, forward and backward."""

    @staticmethod
    def forward(ctx, x, weight, conv):
        out_hw = output_size(conv, *x.shape[-2:])
        windows = _windows(conv, x.shape[-2:], out_hw)
        patches = _patches(conv, x, windows)
        ctx.save_for_backward(patches, weight)
        ctx.conv, ctx.windows, ctx.out_hw, ctx.shape = conv, windows, out_hw, x.shape
        return (patches @ _kernel(weight, windows).t()).view(x.shape[0], *out_hw, -1).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_out):
        patches, weight = ctx.saved_tensors
        windows = ctx.windows
        grad_rows = grad_out.permute(0, 2, 3, 1).reshape(patches.shape[0], -1)   # (n oh ow, out)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = _scatter(ctx.conv, grad_rows @ _kernel(weight, windows), ctx.shape, windows, ctx.out_hw)
        if ctx.needs_input_grad[1]:
            read = (grad_rows.t() @ patches).view(weight.shape[0], len(windows), weight.shape[1])
            offsets = weight.shape[2] * weight.shape[3]
            if len(windows) < offsets:
                full = read.new_zeros(weight.shape[0], offsets, weight.shape[1])
                full[:, [k for k, _, _ in windows]] = read
                read = full
            grad_weight = read.view(weight.shape[0], *weight.shape[2:], -1).permute(0, 3, 1, 2)
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
