"""2:4 weights on sparse tensor cores: the torch-cuda-sparse engine's layers.

torch's semi-structured sparse tensors (`torch.sparse.to_sparse_semi_structured`, on
cuSPARSELt or CUTLASS) multiply a 2:4 sparse matrix by a dense one, where every group of
4 consecutive weights along a row holds at most 2 non-zeros. A Linear layer's weight is
such a matrix as it stands. A convolution becomes one: its input is unfolded into
columns (im2col) and its weight laid out as (out, kh * kw * in), in-channels fastest, the
order along which N:M masks group a convolution's weights (sparsebias.recipes.nm_masks),
so each group of 4 is 4 consecutive in-channels at one kernel position.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def is_2_4(matrix: torch.Tensor) -> bool:
    """At most 2 non-zeros in every 4 consecutive weights of each row."""
    rows, cols = matrix.shape
    return cols % 4 == 0 and bool(((matrix.reshape(rows, cols // 4, 4) != 0).sum(-1) <= 2).all())


def conv_matrix(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, kh, kw) -> (out, kh * kw * in), in-channels fastest."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1).contiguous()


class Conv2dAsMatmul(nn.Module):
    """A Conv2d computed as weight-matrix @ unfolded input, so the matrix may be semi-structured."""

    def __init__(self, conv: nn.Conv2d, matrix: torch.Tensor):
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("only ungrouped convolutions with numeric zero padding")
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.out_channels = conv.out_channels
        self.matrix = nn.Parameter(matrix, requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        kh, kw = self.kernel_size
        out_h = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        out_w = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        columns = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)   # (n, c*kh*kw, L)
        columns = columns.view(n, c, kh * kw, -1).transpose(1, 2).reshape(n, kh * kw * c, -1)
        columns = columns.permute(1, 0, 2).reshape(kh * kw * c, -1)                        # (K, n*L)
        out = torch.mm(self.matrix, columns).view(self.out_channels, n, out_h, out_w).transpose(0, 1)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


def sparsify_2_4(model: nn.Module, convert=None) -> tuple[int, int]:
    """Replace each Conv2d and Linear whose weight is 2:4 sparse by one computing with
    `convert(matrix)` (default: `to_sparse_semi_structured`, CUDA only); returns (replaced,
    weights in replaced layers). Layers that are not 2:4, or whose shape the sparse kernels
    refuse, stay dense."""
    if convert is None:
        from torch.sparse import to_sparse_semi_structured as convert
    replaced = weights = 0
    for parent in list(model.modules()):
        for name, layer in list(parent.named_children()):
            if isinstance(layer, nn.Conv2d):
                matrix = conv_matrix(layer.weight.detach())
            elif isinstance(layer, nn.Linear):
                matrix = layer.weight.detach()
            else:
                continue
            if not is_2_4(matrix):
                continue
            try:
                sparse = convert(matrix)
            except (RuntimeError, ValueError):   # a shape or dtype the kernels do not take
                continue
            if isinstance(layer, nn.Conv2d):
                setattr(parent, name, Conv2dAsMatmul(layer, sparse))
            else:
                layer.weight = nn.Parameter(sparse, requires_grad=False)
            replaced += 1
            weights += matrix.numel()
    return replaced, weights
