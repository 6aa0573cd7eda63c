"""Convolutions on small maps as products over patches: the same values and gradients as
torch's convolution, only where the map is small, only inside the context."""

import pytest
import torch
from torch import nn

from sparsebias.training.small_maps import (
    MAX_POSITIONS,
    convolve_as_product,
    output_size,
    resolve_small_maps,
    small_maps_as_products,
)

SHAPES = [  # in, out, kernel, stride, padding, dilation, map, bias
    (512, 512, 3, 1, 1, 1, 2, False),     # resnet18's last stage at 64 px
    (256, 512, 3, 2, 1, 1, 4, False),     # its strided first convolution
    (256, 512, 1, 2, 0, 1, 4, False),     # its downsample
    (256, 256, 3, 1, 1, 1, 4, False),     # the stage before it: 4x4 maps
    (128, 256, 3, 2, 1, 1, 8, False),     # whose strided first convolution reads an 8x8 map
    (64, 64, 3, 1, 1, 1, 1, False),       # the last stage at 32 px: a 1x1 map, 8 offsets read padding
    (32, 64, 3, 2, 1, 1, 2, False),       # its strided first convolution: 4 of 9 offsets read the map
    (6, 4, 5, 1, 2, 1, 1, True),          # 24 of 25 offsets read padding only
    (4, 5, (3, 1), 1, (1, 0), 1, 1, True),  # rows of offsets skipped, not columns
    (4, 5, 3, 1, 2, 2, 2, True),          # dilated: only the centre offset reads the map
    (8, 6, (3, 1), (2, 1), (1, 0), 1, 3, True),
    (5, 7, 2, 1, 1, 2, 3, True),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_values_and_gradients_match_torchs_convolution(shape, channels_last):
    c_in, c_out, kernel, stride, padding, dilation, size, bias = shape
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, bias=bias).double()
    x = torch.randn(3, c_in, size, size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    expected = conv(x)
    grads_expected = torch.autograd.grad((expected * torch.cos(expected)).sum(), [x, *conv.parameters()])
    got = convolve_as_product(conv, x, conv.weight, conv.bias)
    grads = torch.autograd.grad((got * torch.cos(got)).sum(), [x, *conv.parameters()])
    assert got.shape == expected.shape == (3, c_out, *output_size(conv, size, size))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    for g, e in zip(grads, grads_expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_bf16_autocast_matches_to_bf16_rounding():
    torch.manual_seed(0)
    conv = nn.Conv2d(512, 512, 3, padding=1, bias=False)
    x = torch.randn(8, 512, 2, 2).contiguous(memory_format=torch.channels_last).requires_grad_()
    results = []
    for path in (convolve_as_product, nn.Conv2d._conv_forward):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = path(conv, x, conv.weight, None)
        results.append((out, *torch.autograd.grad((out.float() ** 2).sum(), [x, conv.weight])))
    for got, expected in zip(*results):
        assert got.dtype == expected.dtype
        scale = expected.float().abs().max()
        assert (got.float() - expected.float()).abs().max() <= 0.02 * scale
    assert results[0][0].dtype == torch.bfloat16 and results[0][1].dtype == results[0][2].dtype == torch.float32
    assert results[0][0].is_contiguous(memory_format=torch.channels_last)


def test_only_small_maps_take_the_product_and_only_inside_the_context(monkeypatch):
    from sparsebias.training import small_maps

    calls = []
    monkeypatch.setattr(small_maps, "convolve_as_product",
                        lambda conv, *a: calls.append(conv) or nn.Conv2d._conv_forward(conv, *a))
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                          nn.Conv2d(4, 4, 3, padding="same"), nn.Conv2d(4, 4, 3, padding=1, groups=2))
    x = torch.randn(1, 3, 16, 16)   # maps of 64, 16, 16 and 16 positions
    with small_maps_as_products(model):
        inside = model(x)
    assert calls == [model[1]] and MAX_POSITIONS == 16   # 'same' padding and groups keep torch's path
    assert all("_conv_forward" not in m.__dict__ for m in model)
    torch.testing.assert_close(model(x), inside)
    assert calls == [model[1]]
    with small_maps_as_products(model, resolve_small_maps("product", torch.device("meta")) == "product"):
        assert all("_conv_forward" not in m.__dict__ for m in model)   # not a CPU: nothing changes
